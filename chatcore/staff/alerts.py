"""Alerts: a watcher that follows the log and the annotations and posts to webhooks.

``python -m chatcore alerts`` runs it as its own process (``./run.sh`` starts it when
``CHAT_ALERT_WEBHOOKS`` is set), so a slow or dead receiver never slows a chat turn.
It reads with :class:`chatcore.log.follow.LogTail` (the dashboard's reader) and raises:

* ``thumbs_down``: a visitor or staff rating "down" (``annotations/feedback.jsonl``);
* ``person_requested``: visitor text asking for a person (``CHAT_ALERT_PERSON_PHRASES``),
  or a ``handoff_requested`` event line; once per conversation per 10 minutes;
* ``keyword``: visitor text containing a word of ``CHAT_ALERT_KEYWORDS`` (``re:`` for a
  regular expression); the payload names the keyword, never the text;
* ``error_burst``: ``N`` responder errors within ``M`` minutes (``CHAT_ALERT_ERRORS=N/M``),
  once per window;
* ``log_write_failed``: the Space's ``/healthz`` counts more failed log writes;
* ``spend``: the cost of the day's turns (UTC, ``cost_usd`` of each turn) passed
  ``CHAT_ALERT_SPEND_USD``; once per day.

Webhooks (``CHAT_ALERT_WEBHOOKS``, comma-separated): ``slack:URL`` (or a
``hooks.slack.com`` URL) gets ``{"text": ...}``; any other URL gets JSON
``{id, event, conversation_id, turn, time, detail, link}`` where ``link`` opens the
conversation in the dashboard (``CHAT_DASHBOARD_URL``). Each webhook has its own
bounded queue (``CHAT_ALERT_QUEUE``, oldest dropped) and retries with the backoff of
:mod:`chatcore.retry` (1 s doubling to 60 s; a 4xx other than 408/429 is given up after 5 tries).

Restart-safe: where reading stopped, the undelivered alerts and the ids recently sent
are kept in ``<log folder>/.chatcore-alerts/state.json`` (webhooks named by a hash,
never by their URL); ``status.json`` beside it feeds the dashboard's Overview.
Payloads and files hold conversation ids, never visitor text.

Over 500 lines: one watcher with its delivery queue and its saved state; splitting them would spread one state over modules.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx

from chatcore import retry
from chatcore.log.records import BadRecord
from chatcore.config import DEFAULT_DASHBOARD_URL, DEFAULT_SPACE_URL, Settings, log_folder, reveal
from chatcore.config.settings import DEFAULT_ALERT_PERSON_PHRASES

log = logging.getLogger("chatcore.staff.alerts")

STATE_DIR = ".chatcore-alerts"
DEFAULT_PERSON_PHRASES = DEFAULT_ALERT_PERSON_PHRASES
EVENTS = ("thumbs_down", "person_requested", "keyword", "error_burst", "log_write_failed", "spend")
_TITLES = {
    "thumbs_down": "Thumbs down",
    "person_requested": "A visitor asks for a person",
    "keyword": "Keyword in visitor text",
    "error_burst": "Burst of responder errors",
    "log_write_failed": "Log writes failing",
    "spend": "Today's model spend passed the limit",
}
RECENT = 50
SENT_IDS = 5000
PERSON_QUIET_S = 600
#: Tries of an alert that a webhook refuses (a 4xx other than 408/429) before it is dropped.
GIVE_UP_AFTER = 5


def hook_name(url: str) -> str:
    """What may be shown of a webhook: scheme, host and a short hash (Slack URLs carry
    their secret in the path, so the path is never shown)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
    except ValueError:
        return "(invalid URL)"
    return f"{parts.scheme}://{host}/…#{hashlib.sha256(url.encode()).hexdigest()[:8]}"


@dataclass
class Hook:
    url: str
    slack: bool
    key: str = ""

    def __post_init__(self):
        self.key = hashlib.sha256(self.url.encode()).hexdigest()[:16]

    @classmethod
    def parse(cls, entry: str) -> "Hook":
        slack = False
        for prefix, is_slack in (("slack:", True), ("json:", False)):
            if entry.startswith(prefix):
                entry, slack = entry[len(prefix):], is_slack
                break
        else:
            slack = (urlsplit(entry).hostname or "").endswith("hooks.slack.com")
        if urlsplit(entry).scheme not in ("http", "https"):
            raise ValueError(f"a webhook must be an http(s) URL, got {hook_name(entry)}")
        return cls(entry, slack)


@dataclass
class Config:
    log_path: Path
    hooks: list[Hook]
    keywords: list[tuple[str, re.Pattern]] = field(default_factory=list)
    person: list[str] = field(default_factory=lambda: list(DEFAULT_PERSON_PHRASES))
    errors_n: int = 5
    errors_minutes: float = 10.0
    dashboard_url: str = DEFAULT_DASHBOARD_URL
    space_url: str | None = DEFAULT_SPACE_URL
    queue_max: int = 1000
    poll_s: float = 0.5
    health_s: float = 10.0
    timeout_s: float = 10.0
    max_backoff_s: float = 60.0
    #: USD a day's turns may cost before the ``spend`` alert (CHAT_ALERT_SPEND_USD; None: no alert).
    spend_usd: float | None = None

    @classmethod
    def from_env(cls, log_path, **overrides) -> "Config":
        settings = Settings.from_env()
        hooks = [Hook.parse(reveal(e) or "") for e in settings.alert_webhooks]
        errors_n, errors_minutes = settings.alert_errors
        values = dict(
            log_path=Path(log_path), hooks=hooks, keywords=compile_keywords(settings.alert_keywords),
            person=list(settings.alert_person_phrases), errors_n=errors_n, errors_minutes=errors_minutes,
            dashboard_url=settings.dashboard_url.rstrip("/"), space_url=settings.space_url,
            queue_max=settings.alert_queue, spend_usd=settings.alert_spend_usd,
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def compile_keywords(words: list[str]) -> list[tuple[str, re.Pattern]]:
    out = []
    for w in words:
        if w.startswith("re:"):
            try:
                out.append((w, re.compile(w[3:], re.IGNORECASE)))
            except re.error as exc:
                raise ValueError(f"CHAT_ALERT_KEYWORDS: bad pattern {w!r}: {exc}") from None
        else:
            out.append((w, re.compile(r"(?<!\w)" + re.escape(w) + r"(?!\w)", re.IGNORECASE)))
    return out


# ------------------------------------------------------------------------ payloads


def make_alert(event: str, conversation_id: str | None, turn, when: str, detail: str, dashboard_url: str) -> dict:
    ident = hashlib.sha256(json.dumps([event, conversation_id, turn, when, detail]).encode()).hexdigest()[:20]
    link = f"{dashboard_url}/conversations?conversation={quote(conversation_id)}" if conversation_id else dashboard_url
    return {"id": ident, "event": event, "conversation_id": conversation_id, "turn": turn, "time": when,
            "detail": detail, "link": link}


def payload(alert: dict, slack: bool) -> dict:
    if not slack:
        return alert
    title = _TITLES.get(alert["event"], alert["event"])
    where = ""
    if alert.get("conversation_id"):
        turn = f", turn {alert['turn']}" if alert.get("turn") is not None else ""
        where = f" in <{alert['link']}|{alert['conversation_id']}>{turn}"
    detail = f" ({alert['detail']})" if alert.get("detail") else ""
    return {"text": f"{title}{where}{detail} at {alert['time']}"}


# ------------------------------------------------------------------------ the watcher


def _raw(line: bytes) -> dict:
    import orjson

    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise BadRecord("bad_json") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("conversation_id"), str):
        raise BadRecord("not_object")
    return obj


def _when(rec: dict) -> str:
    ts = rec.get("ts") or rec.get("timestamp")
    return ts if isinstance(ts, str) else datetime.now(timezone.utc).isoformat()


def _parse_ts(value: str) -> datetime:
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return datetime.now(timezone.utc)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


class Watcher:
    """Follows the log and the feedback file, raises alerts and delivers them."""

    def __init__(self, config: Config):
        from chatcore.log.annotations import annotations_dir
        from chatcore.log.follow import LogTail

        self.config = config
        self.dir = log_folder(config.log_path) / STATE_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        state = self._load("state.json")
        self._lock = threading.Lock()
        self.queues: dict[str, deque] = {h.key: deque(state.get("outbox", {}).get(h.key, []), maxlen=config.queue_max)
                                         for h in config.hooks}
        self.sent_ids: deque = deque(state.get("sent", []), maxlen=SENT_IDS)
        self._sent_set = set(self.sent_ids)
        self.recent: deque = deque(self._load("status.json").get("recent", []), maxlen=RECENT)
        self.errors: deque = deque()
        self.last_burst: str | None = state.get("last_burst")
        self.person_seen: dict[str, float] = {}
        self.write_errors: int | None = state.get("write_errors")
        self.dropped = int(state.get("dropped", 0))
        #: the cost of the day's turns so far: {"day": "YYYY-MM-DD" (UTC), "usd": float, "alerted": bool}
        spend = state.get("spend")
        self.spend = spend if isinstance(spend, dict) else {"day": None, "usd": 0.0, "alerted": False}
        self.hook_state = {h.key: {"name": hook_name(h.url), "failing": False, "last_error": None,
                                   "last_ok": None, "attempts": 0} for h in config.hooks}
        resumed = "log" in state
        self.log_tail = LogTail(config.log_path, parse=_raw, resume=state.get("log") if resumed else None)
        self.fb_tail = LogTail(annotations_dir(config.log_path) / "feedback.jsonl", parse=_raw,
                               resume=state.get("feedback") if resumed else None)
        self._stop = threading.Event()
        self._wake = {h.key: threading.Event() for h in config.hooks}
        self._threads: list[threading.Thread] = []
        self._dirty = True
        self._forgotten_seen = 0
        #: where reading stopped, taken after the drained records were handled
        self._positions = (state.get("log") or {}, state.get("feedback") or {})

    # -- persistence ---------------------------------------------------------------

    def _load(self, name: str) -> dict:
        try:
            data = json.loads((self.dir / name).read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save_file(self, name: str, data: dict) -> None:
        tmp = self.dir / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.dir / name)

    def save(self) -> None:
        with self._lock:
            state = {"log": self._positions[0], "feedback": self._positions[1],
                     "outbox": {k: list(q) for k, q in self.queues.items()}, "sent": list(self.sent_ids),
                     "last_burst": self.last_burst, "write_errors": self.write_errors, "dropped": self.dropped,
                     "spend": self.spend}
            status = {"updated": datetime.now(timezone.utc).isoformat(), "pid": os.getpid(),
                      "recent": list(self.recent), "dropped": self.dropped,
                      "hooks": [{**self.hook_state[k], "queued": len(q)} for k, q in self.queues.items()]}
            self._save_file("state.json", state)
            self._save_file("status.json", status)
            self._dirty = False

    # -- raising -------------------------------------------------------------------

    def raise_alert(self, event: str, conversation_id, turn, when: str, detail: str = "") -> dict | None:
        alert = make_alert(event, conversation_id, turn, when, detail, self.config.dashboard_url)
        with self._lock:
            if alert["id"] in self._sent_set:
                return None  # raised before (a shard read again after a rewrite)
            if len(self.sent_ids) == self.sent_ids.maxlen:
                self._sent_set.discard(self.sent_ids[0])
            self.sent_ids.append(alert["id"])
            self._sent_set.add(alert["id"])
            self.recent.append({**{k: alert[k] for k in ("id", "event", "conversation_id", "turn", "time", "detail")},
                                "raised": datetime.now(timezone.utc).isoformat()})
            for key, q in self.queues.items():
                if len(q) == q.maxlen:
                    self.dropped += 1  # the oldest goes
                q.append(alert)
                self._wake[key].set()
            self._dirty = True
        log.info("alert: %s", event)
        return alert

    def check_turn(self, rec: dict) -> None:
        cid, when = rec["conversation_id"], _when(rec)
        kind = rec.get("kind")
        if kind == "handoff_requested":
            how = {"button": "asked with the button", "model": "the model asked for a person"}
            self._person(cid, rec.get("at_turn"), when, how.get(rec.get("via"), ""))
            return
        if kind not in (None, "turn"):
            return
        turn = rec.get("turn")
        text = rec.get("user_text")
        if isinstance(text, str) and text:
            low = text.lower()
            if any(p in low for p in self.config.person):
                self._person(cid, turn, when, "")
            for name, pattern in self.config.keywords:
                if pattern.search(text):
                    self.raise_alert("keyword", cid, turn, when, f"keyword: {name}")
        if rec.get("error"):
            self._error(cid, turn, when, rec.get("shard"))
        cost = rec.get("cost_usd")
        if self.config.spend_usd is not None and isinstance(cost, (int, float)) and not isinstance(cost, bool):
            self._spend(float(cost), when, rec.get("shard"))

    def _spend(self, cost: float, when: str, shard=None) -> None:
        if not 0 < cost < float("inf"):
            return
        day = _parse_ts(when).astimezone(timezone.utc).date().isoformat()
        with self._lock:
            spend = self.spend
            if spend.get("day") is None or day > spend["day"]:
                spend.update(day=day, usd=0.0, alerted=False, shards={})
            elif day < spend["day"]:
                return  # a line of an earlier day, read late: that day is over
            spend["usd"] = float(spend.get("usd") or 0.0) + cost
            if isinstance(shard, str):  # taken back if that shard is read again
                shards = spend.setdefault("shards", {})
                shards[shard] = float(shards.get(shard) or 0.0) + cost
            self._dirty = True
            crossed = spend["usd"] > self.config.spend_usd and not spend.get("alerted")
            if crossed:
                spend["alerted"] = True
        if crossed:
            self.raise_alert("spend", None, None, when,
                             f"{spend['usd']:.2f} USD on {day} (UTC), over the {self.config.spend_usd:g} USD limit")

    def _person(self, cid: str, turn, when: str, detail: str) -> None:
        now = time.monotonic()
        if now - self.person_seen.get(cid, -1e9) < PERSON_QUIET_S:
            return
        self.person_seen[cid] = now
        self.raise_alert("person_requested", cid, turn, when, detail)

    def _error(self, cid: str, turn, when: str, shard=None) -> None:
        t = _parse_ts(when)
        window = timedelta(minutes=self.config.errors_minutes)
        self.errors.append((t, shard))
        while self.errors and t - self.errors[0][0] > window:
            self.errors.popleft()
        if len(self.errors) < self.config.errors_n:
            return
        if self.last_burst and t - _parse_ts(self.last_burst) < window:
            return  # one alert per window
        self.last_burst = when
        self.raise_alert("error_burst", cid, turn, when,
                         f"{len(self.errors)} responder errors within {self.config.errors_minutes:g} min")

    def check_feedback(self, rec: dict) -> None:
        if rec.get("rating") == "down":
            self.raise_alert("thumbs_down", rec["conversation_id"], rec.get("turn"), _when(rec),
                             f"by {rec.get('by') or 'visitor'}")

    def check_health(self) -> None:
        from chatcore.remote.client import space_health

        if not self.config.space_url:
            return
        h = space_health(self.config.space_url, timeout=5.0, log_path=self.config.log_path)
        if h.get("status") not in ("ok", "degraded"):
            return  # a Space that is down is not a failing log write
        count = h.get("write_errors")
        if not isinstance(count, int):
            return
        before = self.write_errors
        if (before is not None and count > before) or (before is None and h.get("status") == "degraded"):
            now = datetime.now(timezone.utc).isoformat()
            self.raise_alert("log_write_failed", None, None, now,
                             f"{count} failed log write(s) on the Space")
        if count != before:
            self.write_errors = count
            self._dirty = True

    def poll_once(self) -> int:
        """Read what is new, raise its alerts, save where reading stopped."""
        n = 0
        self.log_tail.poll()
        for rec in self.log_tail.drain(resets=True):
            if isinstance(rec, dict):
                self.check_turn(rec)
                n += 1
            else:
                self.shard_reset(rec.shard)
        self.fb_tail.poll()
        for rec in self.fb_tail.drain():
            self.check_feedback(rec)
            n += 1
        if len(self.log_tail.forgotten) != self._forgotten_seen:
            self._forgotten_seen = len(self.log_tail.forgotten)
            self.drop_conversations(lambda cid: _forgotten(cid, self.log_tail.forgotten))
        positions = (self.log_tail.positions(), self.fb_tail.positions())
        with self._lock:
            if positions != self._positions:
                self._positions = positions
                self._dirty = True
        return n

    def shard_reset(self, shard: str) -> None:
        """The log's ``shard`` is read again from its start (truncated or rewritten in place):
        what it added to the day's spend and to the recent errors is taken back, so its lines
        read again count once. Alerts already raised stay raised (and are not raised again:
        their ids are remembered, the spend alert once a day, an error burst once a window)."""
        with self._lock:
            shards = self.spend.get("shards")
            if isinstance(shards, dict) and shard in shards:
                self.spend["usd"] = max(0.0, float(self.spend.get("usd") or 0.0) - float(shards.pop(shard) or 0.0))
                self._dirty = True
        self.errors = deque(e for e in self.errors if e[1] != shard)

    def drop_conversations(self, gone) -> None:
        """Forget alerts about conversations for which ``gone(id)`` is true (listed and unsent)."""
        with self._lock:
            self.recent = deque((a for a in self.recent if not gone(a.get("conversation_id"))), maxlen=RECENT)
            for key, q in self.queues.items():
                kept = [a for a in q if not gone(a.get("conversation_id"))]
                if len(kept) != len(q):
                    q.clear()
                    q.extend(kept)
            self._dirty = True

    # -- delivering ------------------------------------------------------------------

    def _deliver_loop(self, hook: Hook) -> None:
        q, wake = self.queues[hook.key], self._wake[hook.key]
        with httpx.Client(timeout=httpx.Timeout(self.config.timeout_s, connect=5.0), follow_redirects=False) as http:
            while not self._stop.is_set():
                with self._lock:
                    alert = q[0] if q else None
                if alert is None:
                    wake.wait(1.0)
                    wake.clear()
                    continue
                self._deliver(http, hook, alert)

    def _deliver(self, http: httpx.Client, hook: Hook, alert: dict) -> None:
        """Send ``alert`` until it is received, refused for good (a 4xx other than 408/429,
        :data:`GIVE_UP_AFTER` tries) or the watcher stops (then it stays queued)."""
        st = self.hook_state[hook.key]

        def refused_for_good(state) -> bool:
            exc = state.outcome.exception()
            return isinstance(exc, _NotDelivered) and exc.final and state.attempt_number >= GIVE_UP_AFTER

        def tell(state) -> None:
            log.warning("alerts: delivery to %s failed (%s); retrying in %.0f s", st["name"],
                        state.outcome.exception(), state.next_action.sleep)

        try:
            for attempt in retry.backoff(first=1.0, most=self.config.max_backoff_s, stop=self._stop,
                                         give_up=refused_for_good, before_sleep=tell):
                with attempt:
                    with self._lock:
                        queue = self.queues[hook.key]
                        dropped = not queue or queue[0] is not alert  # e.g. its conversation was forgotten
                    if dropped or self._stop.is_set():
                        return
                    self._post(http, hook, alert)
        except _NotDelivered as exc:
            if exc.final and st["attempts"] >= GIVE_UP_AFTER:
                with self._lock:
                    q = self.queues[hook.key]
                    if q and q[0] is alert:
                        q.popleft()
                    st["attempts"] = 0
                    st["given_up"] = st.get("given_up", 0) + 1
                    self._dirty = True
                self._save_quietly()

    def _post(self, http: httpx.Client, hook: Hook, alert: dict) -> None:
        """One try: on success the alert leaves the queue; else raises :class:`_NotDelivered`."""
        st, q = self.hook_state[hook.key], self.queues[hook.key]
        error, final = None, False
        try:
            resp = http.post(hook.url, json=payload(alert, hook.slack))
            if not 200 <= resp.status_code < 300:
                error = f"HTTP {resp.status_code}"
                final = 400 <= resp.status_code < 500 and resp.status_code not in (408, 429)
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        with self._lock:
            if error is None:
                if q and q[0] is alert:
                    q.popleft()
                st.update(failing=False, last_error=None, last_ok=datetime.now(timezone.utc).isoformat(),
                          attempts=0)
            else:
                st.update(failing=True, last_error=error, attempts=st["attempts"] + 1)
            self._dirty = True
        self._save_quietly()
        if error is not None:
            raise _NotDelivered(error, final)

    def _save_quietly(self) -> None:
        try:
            self.save()
        except OSError as exc:
            log.warning("alerts: could not save state: %s", exc)

    def run(self, stop: threading.Event | None = None) -> None:
        self._stop = stop or self._stop
        for h in self.config.hooks:
            th = threading.Thread(target=self._deliver_loop, args=(h,), name=f"alerts-{h.key[:6]}", daemon=True)
            th.start()
            self._threads.append(th)
        next_health = 0.0
        while not self._stop.is_set():
            try:
                self.poll_once()
                if time.monotonic() >= next_health:
                    next_health = time.monotonic() + self.config.health_s
                    self.check_health()
                if self._dirty:
                    self.save()
            except Exception as exc:  # keep watching
                log.warning("alerts: %s: %s", type(exc).__name__, exc)
            self._stop.wait(self.config.poll_s)
        for th in self._threads:
            th.join(self.config.timeout_s + 2)
        self.save()


class _NotDelivered(Exception):
    """A webhook did not take an alert; ``final`` when trying again will not change that."""

    def __init__(self, error: str, final: bool):
        super().__init__(error)
        self.final = final


def _forgotten(cid, hashes: set[str]) -> bool:
    from chatcore.log.forgotten import forgotten_hash

    return isinstance(cid, str) and forgotten_hash(cid) in hashes


def forget_in_state(log_path, conversation_id: str) -> int:
    """Drop a forgotten conversation from the watcher's files (a running watcher
    drops it from memory itself when it sees the rewritten shard)."""
    d = log_folder(log_path) / STATE_DIR
    removed = 0
    for name, lists in (("status.json", ("recent",)), ("state.json", ())):
        path = d / name
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        for key in lists:
            items = data.get(key) or []
            data[key] = [a for a in items if a.get("conversation_id") != conversation_id]
            removed += len(items) - len(data[key])
        if name == "state.json":
            for hook, items in (data.get("outbox") or {}).items():
                kept = [a for a in items if a.get("conversation_id") != conversation_id]
                removed += len(items) - len(kept)
                data["outbox"][hook] = kept
        tmp = d / f".{name}.forget.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    return removed


def read_status(log_path) -> dict | None:
    """The watcher's ``status.json`` (for the Overview), or None when it never ran."""
    try:
        data = json.loads((log_folder(log_path) / STATE_DIR / "status.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None

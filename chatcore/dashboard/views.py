"""Helpers behind the operator dashboard (the Streamlit pages stay thin).

Nothing here imports streamlit: the pages call these functions and wrap the
long-lived objects (:class:`SharedStore`, :class:`LiveFeed`) in
``st.cache_resource`` at their edge. Everything is testable without a browser.

Text written by visitors and by the model is never trusted: the pages show it
with ``st.text`` or in dataframes (both inert), and where markdown is needed
:func:`escape_markdown` makes it literal.

Over 500 lines: small view helpers shared by every page, each a few lines; grouped by the page they serve.
"""
from __future__ import annotations

import os
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Iterable, Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

from chatcore.config import Settings


#: A conversation with a turn this recent counts as "active now".
ACTIVE_WINDOW = timedelta(minutes=5)


# ------------------------------------------------------------------------ escaping

_MD_SPECIAL = set("\\`*_{}[]()<>#+-.!|~:$&\"'=^")


def escape_markdown(text: str | None) -> str:
    """``text`` escaped so ``st.markdown`` shows it literally.

    Every markdown/HTML metacharacter gets a backslash (CommonMark turns ``\\<``
    back into a literal ``<`` and never starts a tag, link or image from it);
    newlines become hard line breaks so the shape of the text is kept.
    Escaping is per character, so escaping pieces of a stream one by one gives
    the same result as escaping the whole reply.
    """
    if not text:
        return ""
    out = []
    for ch in str(text):
        if ch in _MD_SPECIAL:
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("  \n")
        elif ch == "\r":
            continue
        else:
            out.append(ch)
    return "".join(out)


def escaped_stream(pieces: Iterable[str], sink: list[str] | None = None) -> Iterator[str]:
    """Escape each streamed piece for ``st.write_stream``; the raw text goes to ``sink``."""
    for piece in pieces:
        if sink is not None:
            sink.append(piece)
        yield escape_markdown(piece)


def excerpt(text: str | None, limit: int = 80) -> str:
    """One line, at most ``limit`` characters (``…`` when cut)."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def short_id(conversation_id: str | None, length: int = 8) -> str:
    cid = conversation_id or ""
    return cid if len(cid) <= length + 1 else cid[:length] + "…"


def distinct_id(conversation_id: str | None, length: int = 8) -> str:
    """A short form that keeps ids apart: ``3f2a9c1b…``, and for an id with a word in front
    (``replay-3f2a…``, ``sim-…``) the word and ``length`` characters after it, so a page
    of replays does not read ``replay-a…`` on every line."""
    cid = conversation_id or ""
    word, sep, rest = cid.partition("-")
    if sep and word.isalpha() and len(word) <= 12 and len(rest) > length + 1:
        return f"{word}-{rest[:length]}…"
    return short_id(cid, length)


def staff_display_name(identity: str) -> str:
    """A signed-in identity (a name or an e-mail address) as a staff name the Space accepts
    (letters, digits, spaces and ``. ' @ -``, at most 64 characters)."""
    import re

    return " ".join(re.sub(r"[^\w .'@-]", " ", str(identity)).split())[:64].strip() or "staff"


def format_ago(seconds: float | None) -> str:
    """A span as people read it in an inbox: ``45 s``, ``10 min``, ``2 h 05 min``, ``3 d``."""
    if seconds is None:
        return ""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 86400} d"


# ------------------------------------------------------------------------ settings


def resolve_timezone(browser_tz: str | None = None, fallback: str | None = None) -> tzinfo:
    """The viewer's zone: the browser's if known, else ``fallback``/$CHAT_TIMEZONE, else UTC."""
    for name in (browser_tz, fallback, Settings.from_env().timezone):
        if not name:
            continue
        try:
            return ZoneInfo(str(name))
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return timezone.utc


def tz_name(tz: tzinfo) -> str:
    return getattr(tz, "key", None) or str(tz)


def is_local_url(url: str) -> bool:
    """True for a Space URL on this machine (the dashboard may start it itself)."""
    from urllib.parse import urlparse

    host = (urlparse(url).hostname or "").lower()
    return host in ("127.0.0.1", "localhost", "::1", "0.0.0.0")


@dataclass(frozen=True)
class LogCheck:
    """Whether the Space writes the log this dashboard reads.

    ``status``: ``same``, ``different``, ``unknown`` (the Space could not tell:
    no staff token, an older Space, no answer) or ``remote`` (the Space is on
    another machine; its paths mean nothing here). ``reason`` says why, in plain words.
    """

    status: str
    reason: str
    space_log: str | None = None

    @property
    def differs(self) -> bool:
        return self.status == "different"


def same_log(ours: str | os.PathLike, space_log: str | os.PathLike) -> bool:
    """True when reading ``ours`` (a file, or a folder of shards) includes what the Space writes to ``space_log``."""
    mine, theirs = Path(ours).resolve(), Path(space_log).resolve()
    if mine == theirs:
        return True
    try:
        if mine.exists() and theirs.exists() and os.path.samefile(mine, theirs):
            return True
    except OSError:
        pass
    if mine.is_dir() or not mine.suffix:  # a folder of shards
        try:
            return theirs.parent == mine or (theirs.parent.exists() and os.path.samefile(theirs.parent, mine))
        except OSError:
            return False
    return False


def check_space_log(url: str, log_path: str | os.PathLike, timeout: float = 3.0) -> LogCheck:
    """Ask the Space (``GET /healthz`` with the staff token) which log it writes and compare it with ``log_path``."""
    import httpx

    from chatcore.config import OPERATOR_TOKEN_HEADER, display_url, operator_token

    if not is_local_url(url):
        return LogCheck("remote", f"the Space at {display_url(url)} runs on another machine; "
                                  f"the dashboard reads {log_path}")
    token = operator_token(log_path)
    if not token:
        return LogCheck("unknown", "there is no staff token to ask the Space with (CHAT_OPERATOR_TOKEN is not set "
                                   f"and there is no token file in {Path(log_path).resolve()})")
    try:
        resp = httpx.get(url.rstrip("/") + "/healthz", headers={OPERATOR_TOKEN_HEADER: token}, timeout=timeout)
        body = resp.json() if resp.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return LogCheck("unknown", f"the Space at {display_url(url)} did not answer")
    space_log = body.get("log_path") if isinstance(body, dict) else None
    if not space_log or not isinstance(space_log, str):
        return LogCheck("unknown", f"the Space at {display_url(url)} did not say which log it writes "
                                   "(it did not accept the staff token from this log's folder, or it is an older version)")
    if same_log(log_path, space_log):
        return LogCheck("same", f"the Space writes {space_log}", space_log)
    return LogCheck("different", f"the Space at {display_url(url)} writes {space_log}, "
                                 f"but the dashboard reads {Path(log_path).resolve()}", space_log)


def health_summary(health: dict) -> dict:
    """What the pages show about the Space from its ``/healthz`` answer."""
    ok = health.get("status") in ("ok", "degraded")  # degraded: answering, but log writes fail
    return {
        "ok": ok,
        "label": "reachable" if ok else "unreachable",
        "detail": (f"responder {health.get('responder') or '?'}" if ok
                   else str(health.get("error") or "no answer")),
        "turns_logged": health.get("turns_logged") if ok else None,
        "write_errors": health.get("write_errors") if ok else None,
        "last_write_error": health.get("last_write_error") if ok else None,
    }


# --------------------------------------------------------------------------- store


class SharedStore:
    """One :class:`chatcore.store.LogStore` shared by every browser session, asked through
    :class:`chatcore.store.questions.Questions` (never as one pandas frame of every turn).

    ``questions()`` parses only the bytes appended since the last call (the store does
    that) under a lock, so concurrent page runs never refresh at once. A log that does
    not exist yet gives no questions, not an error.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._store = None
        self._questions = None
        self._lock = threading.Lock()
        self.last_error: str | None = None

    def questions(self, progress=None):
        """The SQL questions (:mod:`chatcore.store.questions`) over the same store, brought up
        to date (only new bytes are parsed); None when there is no log yet or it cannot be read."""
        with self._lock:
            if not self.path.exists():
                return None
            try:
                if self._store is None:
                    from chatcore.store import LogStore

                    self._store = LogStore(self.path)
                if self._questions is None or self._questions.store is not self._store:
                    from chatcore.store.questions import Questions

                    self._questions = Questions(self._store)
                self._questions.sync(progress)
                self.last_error = None
                return self._questions
            except Exception as exc:  # a broken log must not take the dashboard down
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._store = self._questions = None
                return None

    def stats(self) -> dict:
        """The reader's stats as of the last :meth:`questions` (lines read, bad lines by reason);
        ``missing`` when there is no log yet, ``error`` when it could not be read."""
        with self._lock:
            if not self.path.exists():
                return {"lines": 0, "bad": {}, "bad_total": 0, "missing": True}
            if self._store is None:
                return {"lines": 0, "bad": {}, "bad_total": 0,
                        **({"error": self.last_error} if self.last_error else {})}
            return dict(self._store.stats)


# ---------------------------------------------------------------------------- live


class LiveFeed:
    """Fan-out of one :class:`chatcore.log.follow.LogTail` to any number of viewers.

    ``LogTail.drain()`` hands each record out once; several browser sessions
    watch the same log, so the feed keeps the last ``capacity`` records with a
    running sequence number and every viewer keeps its own cursor. A shard truncated or
    rewritten in place is read again from its start: its lines no newer than those already
    handed out are history, not new turns, and are not handed out again.
    """

    def __init__(self, path: str | os.PathLike, capacity: int = 5000, poll_interval: float = 0.2,
                 tail=None):
        if tail is None:
            from chatcore.log.follow import LogTail

            tail = LogTail(str(path), poll_interval=poll_interval, from_start=False)
        self.path = Path(path)
        #: Changes when the feed is rebuilt (a cleared cache): viewers then catch up from the log.
        self.epoch = uuid.uuid4().hex
        self._tail = tail
        self._tail.start()
        self._buffer: deque[tuple[int, dict]] = deque(maxlen=capacity)
        self._seq = 0
        self._lock = threading.Lock()
        #: per shard: the newest time handed out; while a shard is read again, that time then
        self._newest: dict[str, object] = {}
        self._rereading: dict[str, object] = {}

    def _pull(self) -> None:
        from chatcore.log.follow import Reset

        for rec in self._tail.drain(resets=True):
            if isinstance(rec, Reset):
                # the shard is read again from its start: what it held up to the newest time
                # handed out already was shown; only what is newer is a new turn
                self._rereading[rec.shard] = self._newest.get(rec.shard)
                continue
            if not self._is_new(rec):
                continue
            self._seq += 1
            self._buffer.append((self._seq, rec))
        forgotten = getattr(self._tail, "forgotten", None)
        if forgotten and len(forgotten) != getattr(self, "_forgotten_seen", 0):
            from chatcore.log.follow import _is_forgotten

            self._forgotten_seen = len(forgotten)
            kept = [(seq, rec) for seq, rec in self._buffer if not _is_forgotten(rec, set(forgotten))]
            self._buffer = deque(kept, maxlen=self._buffer.maxlen)

    def _is_new(self, rec: dict) -> bool:
        shard, ts = rec.get("shard"), rec.get("ts")
        if not isinstance(shard, str) or ts is None:
            return True
        try:
            mark = self._rereading.get(shard)
            if mark is not None:
                if ts <= mark:
                    return False
                del self._rereading[shard]  # past the history read again
            newest = self._newest.get(shard)
            if newest is None or ts > newest:
                self._newest[shard] = ts
        except TypeError:  # times that do not compare: shown
            pass
        return True

    def drop_forgotten(self, rows: list[dict]) -> list[dict]:
        """``rows`` (a viewer's copy) without conversations forgotten meanwhile."""
        from chatcore.log.follow import drop_forgotten

        return drop_forgotten(rows, self._tail) if hasattr(self._tail, "forgotten") else rows

    @property
    def seq(self) -> int:
        with self._lock:
            self._pull()
            return self._seq

    def poll(self, cursor: int) -> tuple[list[dict], int, int]:
        """Records after ``cursor``: ``(records oldest first, new cursor, dropped)``.

        ``dropped`` counts records that fell out of the buffer before this viewer
        asked (it was paused for a very long time).
        """
        with self._lock:
            self._pull()
            new = [rec for seq, rec in self._buffer if seq > cursor]
            dropped = max(0, self._seq - cursor - len(new))
            return new, self._seq, dropped

    @property
    def stats(self) -> dict:
        try:
            tail_stats = dict(self._tail.stats)
        except Exception:  # pragma: no cover - stats are informative only
            tail_stats = {}
        return {**tail_stats, "seq": self._seq, "buffered": len(self._buffer)}

    def close(self) -> None:
        self._tail.stop()


def record_key(rec: dict) -> tuple:
    ts = rec.get("ts")
    return (rec.get("conversation_id"), rec.get("turn"), str(pd.Timestamp(ts)) if ts is not None else None)


def table_records(table) -> list[dict]:
    """Rows of an Arrow table of turns (a question's answer) as record dicts, in its order."""
    out = []
    for row in table.to_pylist():
        if row.get("ts") is not None:
            row["ts"] = pd.Timestamp(row["ts"])
        for key, value in row.items():
            if isinstance(value, float) and value != value:  # NaN: no value
                row[key] = None
        out.append(row)
    return out


def latest_records(questions, limit: int = 50) -> list[dict]:
    """The log's last ``limit`` turns as record dicts, oldest first (the Live page's first rows)."""
    return [] if questions is None else table_records(questions.latest_turns(limit))


def merge_live(rows: list[dict], new: Iterable[dict], limit: int = 500) -> list[dict]:
    """``rows`` (newest first) with ``new`` (oldest first) added on top, without duplicates."""
    return merge_live_counted(rows, new, limit)[0]


def merge_live_counted(rows: list[dict], new: Iterable[dict], limit: int = 500) -> tuple[list[dict], int]:
    """:func:`merge_live`, and how many of ``new`` were not shown yet (what a viewer's count of
    new turns grows by: a turn a catch-up from the log already showed is not counted again)."""
    seen = {record_key(r) for r in rows}
    added = []
    for rec in new:
        key = record_key(rec)
        if key in seen:
            continue
        seen.add(key)
        added.append(rec)
    return (list(reversed(added)) + rows)[:limit], len(added)


def id_prefix(query: str | None) -> str:
    """What a viewer typed to find a conversation, as an id prefix: trimmed, without the
    ``…`` (or ``...``) that shortened ids carry in tables."""
    text = (query or "").strip()
    for tail in ("…", "..."):
        if text.endswith(tail):
            text = text[: -len(tail)].rstrip()
    return text


def conversation_matches(conversation_id: str | None, query: str | None) -> bool:
    """True when ``conversation_id`` starts with the id (or first characters of it) in ``query``.

    Tables show ids shortened to 8 characters; pasting those finds the conversation.
    Case is ignored (UUIDs are written either way). An empty query matches everything.
    """
    prefix = id_prefix(query)
    if not prefix:
        return True
    return str(conversation_id or "").lower().startswith(prefix.lower())


def catch_up(rows: list[dict], questions, limit: int = 500) -> tuple[list[dict], int]:
    """``rows`` (newest first) with the log's turns from the newest shown on, for a viewer whose
    feed was rebuilt: nothing written meanwhile is lost. ``questions`` is the log's
    :class:`chatcore.store.questions.Questions` (None: no log yet). Returns the rows and how
    many were added."""
    if questions is None:
        return rows, 0
    newest = None
    for r in rows:
        try:
            ts = pd.Timestamp(r.get("ts"))
        except (TypeError, ValueError):
            continue
        if pd.isna(ts):
            continue
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts
        newest = ts if newest is None or ts > newest else newest
    recent = questions.latest_turns(limit, since=None if newest is None else newest.to_pydatetime())
    return merge_live_counted(rows, table_records(recent), limit)


def filter_live(rows: list[dict], conversation_id: str | None = None, source: str | None = None) -> list[dict]:
    """Rows whose conversation id starts with ``conversation_id`` (a full id or its first
    characters) and whose source is ``source``; ``None`` keeps all."""
    return [r for r in rows
            if conversation_matches(r.get("conversation_id"), conversation_id)
            and (not source or r.get("source") == source)]


LIVE_COLUMNS = ["time", "conversation", "source", "user_text", "reply", "latency_ms", "error", "conversation_id"]


def format_time(ts, tz: tzinfo, now: datetime | None = None) -> str:
    """``14:03:07`` for today in ``tz``, ``2026-11-20 14:03:07`` otherwise."""
    if ts is None or (not isinstance(ts, str) and pd.isna(ts)):
        return ""
    local = pd.Timestamp(ts).tz_convert(tz) if pd.Timestamp(ts).tzinfo else pd.Timestamp(ts).tz_localize("UTC").tz_convert(tz)
    today = (now or datetime.now(timezone.utc)).astimezone(tz).date()
    return local.strftime("%H:%M:%S") if local.date() == today else local.strftime("%Y-%m-%d %H:%M:%S")


def live_table(rows: list[dict], tz: tzinfo, now: datetime | None = None) -> pd.DataFrame:
    """The live page's table: one line per turn, newest first, everything as plain text."""
    data = [{
        "time": format_time(r.get("ts"), tz, now),
        "conversation": short_id(r.get("conversation_id")),
        "source": r.get("source") or "",
        "user_text": excerpt(r.get("user_text"), 80),
        "reply": excerpt(r.get("response"), 80),
        "latency_ms": (round(float(r["latency_ms"])) if r.get("latency_ms") is not None else None),
        "error": excerpt(r.get("error"), 40) if r.get("error") else "",
        "conversation_id": r.get("conversation_id") or "",
    } for r in rows]
    return pd.DataFrame(data, columns=LIVE_COLUMNS)


# ------------------------------------------------------------------------ overview


@dataclass
class OverviewFigures:
    conversations_today: int
    turns_today: int
    active_now: int
    latency_p50: float | None
    latency_p95: float | None
    errors_today: int
    turns_total: int
    conversations_total: int


def start_of_day(now: datetime, tz: tzinfo) -> datetime:
    local = now.astimezone(tz)
    return datetime(local.year, local.month, local.day, tzinfo=tz)


def overview_figures(frame: pd.DataFrame, now: datetime | None = None, tz: tzinfo = timezone.utc) -> OverviewFigures:
    """The landing page's numbers. "Today" is the viewer's calendar day in ``tz``."""
    now = now or datetime.now(timezone.utc)
    if frame.empty:
        return OverviewFigures(0, 0, 0, None, None, 0, 0, 0)
    ts = frame["ts"]
    today = frame[ts >= pd.Timestamp(start_of_day(now, tz))]
    recent = frame[ts >= pd.Timestamp(now - ACTIVE_WINDOW)]
    latency = today["latency_ms"].dropna()
    errors = today["error"].map(lambda e: bool(e) if isinstance(e, str) else False)
    return OverviewFigures(
        conversations_today=int(today["conversation_id"].nunique()),
        turns_today=int(len(today)),
        active_now=int(recent["conversation_id"].nunique()),
        latency_p50=float(latency.quantile(0.5)) if len(latency) else None,
        latency_p95=float(latency.quantile(0.95)) if len(latency) else None,
        errors_today=int(errors.sum()),
        turns_total=int(len(frame)),
        conversations_total=int(frame["conversation_id"].nunique()),
    )


def figures_of(questions, now: datetime | None = None, tz: tzinfo = timezone.utc,
               include_test: bool = True) -> OverviewFigures:
    """:func:`overview_figures` answered by the log's questions (no pandas pass over the turns);
    ``questions`` None (no log yet) gives zeros; ``include_test`` False leaves test traffic out."""
    now = now or datetime.now(timezone.utc)
    if questions is None:
        return OverviewFigures(0, 0, 0, None, None, 0, 0, 0)
    f = questions.overview(start_of_day(now, tz), now - ACTIVE_WINDOW, include_test=include_test)
    return OverviewFigures(conversations_today=f["conversations_today"], turns_today=f["turns_today"],
                           active_now=f["active_now"], latency_p50=f["latency_p50"],
                           latency_p95=f["latency_p95"], errors_today=f["errors_today"],
                           turns_total=f["turns_total"], conversations_total=f["conversations_total"])


def hour_starts(now: datetime, tz: tzinfo, hours: int = 24) -> pd.DatetimeIndex:
    """The starts of the last ``hours`` local hours in ``tz``, the current one last."""
    local = pd.Timestamp(now).tz_convert(tz)
    # the local hour's start, taken as a span back from now (a wall-clock floor is
    # ambiguous in the hour a clock is set back)
    end = local - pd.Timedelta(minutes=local.minute, seconds=local.second,
                               microseconds=local.microsecond, nanoseconds=local.nanosecond) + pd.Timedelta(hours=1)
    return pd.date_range(end - pd.Timedelta(hours=hours), periods=hours, freq="h")


def turns_per_hour(questions, now: datetime | None = None, tz: tzinfo = timezone.utc,
                   hours: int = 24, include_test: bool = True) -> pd.DataFrame:
    """Turns in each of the last ``hours`` hours (local hour labels), zero-filled, oldest first:
    columns ``hour`` (``14:00``), ``turns``, ``start``. ``questions`` None gives zeros."""
    now = now or datetime.now(timezone.utc)
    index = hour_starts(now, tz, hours)
    counts = ([0] * hours if questions is None
              else questions.turns_per_hour(index[0].to_pydatetime(), hours, include_test=include_test))
    return pd.DataFrame({"hour": [t.strftime("%H:00") for t in index], "turns": pd.Series(counts, dtype=int).to_numpy(),
                         "start": index})


def error_turns(questions, limit: int = 20, include_test: bool = True) -> list[dict]:
    """The latest turns that carry an error, newest first (record dicts)."""
    return [] if questions is None else table_records(questions.latest_errors(limit, include_test=include_test))


def format_ms(value: float | None) -> str:
    if value is None or pd.isna(value):
        return "—"
    return f"{value:,.0f} ms" if value < 10_000 else f"{value / 1000:,.1f} s"


# ------------------------------------------------------------------------ feedback


def negative_share_by_day(feedback: pd.DataFrame, now: datetime | None = None, tz: tzinfo = timezone.utc,
                          days: int = 14) -> pd.DataFrame:
    """Ratings given on each of the last ``days`` local days, oldest first.

    Columns: ``day`` (``11-21``), ``ratings``, ``negative``, ``negative_share`` (0–100, None
    on a day without ratings), ``start`` (local midnight). ``feedback`` is
    :func:`chatcore.log.annotations.load_feedback` (its ``ts`` is when the rating was given).
    """
    now = now or datetime.now(timezone.utc)
    first = pd.Timestamp(start_of_day(now, tz)) - pd.Timedelta(days=days - 1)
    index = pd.date_range(first, periods=days, freq="D")
    if feedback is None or feedback.empty:
        total = negative = pd.Series(0, index=index)
    else:
        local = pd.to_datetime(feedback["ts"], utc=True).dt.tz_convert(tz)
        keep = local >= first
        day = local[keep].dt.floor("D")
        down = feedback.loc[keep, "rating"].eq("down")
        total = day.value_counts().reindex(index, fill_value=0)
        negative = day[down.to_numpy()].value_counts().reindex(index, fill_value=0)
    share = [round(100.0 * n / t, 1) if t else None for n, t in zip(negative, total)]
    return pd.DataFrame({"day": [d.strftime("%m-%d") for d in index], "ratings": total.astype(int).to_numpy(),
                         "negative": negative.astype(int).to_numpy(), "negative_share": share, "start": index})


def ratings_today(feedback: pd.DataFrame, now: datetime | None = None, tz: tzinfo = timezone.utc) -> tuple[int, int]:
    """``(ratings given today, negative ones)`` in the viewer's calendar day."""
    if feedback is None or feedback.empty:
        return 0, 0
    now = now or datetime.now(timezone.utc)
    ts = pd.to_datetime(feedback["ts"], utc=True)
    today = feedback[ts >= pd.Timestamp(start_of_day(now, tz))]
    return int(len(today)), int(today["rating"].eq("down").sum())

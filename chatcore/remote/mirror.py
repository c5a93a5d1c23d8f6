"""A local mirror of one or more Spaces' logs and annotations, kept up to date over HTTP.

The dashboard and the CLI read a remote log through this mirror: ``--log https://…``
(or ``CHAT_LOG_URL``) makes :meth:`chatcore.config.Settings.from_env` call
:func:`attach`, which copies the Space's shards and annotations into a cache folder
and points ``log_path`` at it. Everything else — the store, the tail, every page —
reads that folder as it would read a local log.

How a copy stays right (the routes are in :mod:`chatcore.space.staff_routes`):

* each file is fetched from the local size on (byte offsets), so only new bytes
  travel and an interrupted download resumes where it stopped;
* every request starts :data:`OVERLAP` bytes before the local end and compares them,
  and each file carries an identity (a replaced file gets another one): a truncated,
  rewritten or replaced file on the Space is fetched again from the start; a rotated
  one (same identity, new name) is renamed locally;
* only complete lines are written, by appending, so a reader never sees half a line;
* one sync at a time per folder (a lock file), so a CLI and a dashboard can share it.

A Space may be hostile or broken, so the copy has bounds (see ``docs/security.md``):
every request ends by a deadline (``CHAT_MIRROR_TIMEOUT``, :mod:`chatcore.remote.bounded_http`),
the folder stops growing at ``CHAT_MIRROR_MAX_BYTES`` (what fits is kept, in whole lines),
a listing or one event larger than :data:`MAX_LISTING_BYTES` is refused, and only names
that match :data:`NAME_PATTERN` whole become files.

:meth:`Mirror.start` follows the Space: a thread listens to the Space's event stream
(new lines are announced as they are written) and a second one syncs on each event,
and every :data:`RESYNC` seconds regardless; a dropped connection is retried with
the backoff of :mod:`chatcore.retry`.

Staff actions (tags, notes, ratings, replay links, canned replies) on a mirrored log are sent to the
Space — :mod:`chatcore.log.annotations` asks :func:`mirror_for_path` — so the Space's
annotations stay the one record every dashboard sees.

Several Spaces (replicas) in one spec, separated by commas, are read as one log:
each one's shards are stored under a prefix of its own and the annotations merged.

About 800 lines: one object owns the copy's state, its lock, the sync and the event stream, bounded in bytes, time and memory; the bounded HTTP calls are in :mod:`chatcore.remote.bounded_http`. Next split: the event-stream listener.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx

from chatcore import retry
from chatcore.config import Settings, reveal
from chatcore.remote.bounded_http import BoundedHttp, Deadline, TooLarge, events

log = logging.getLogger("chatcore.remote.mirror")

PREFIX = "/staff/v1"
HEADER = "X-Chat-Operator-Token"
TOKEN_ENV = "CHAT_OPERATOR_TOKEN"
#: Bytes before the local end asked for again and compared, to notice a rewritten file.
OVERLAP = 64
CHUNK = 8 << 20
#: Seconds between syncs when no event arrives (a fallback: events usually come first).
RESYNC = 10.0
STATE_FILE = ".mirror.json"
LOCK_FILE = ".mirror.lock"
ANNOTATION_FILES = ("feedback.jsonl", "notes.jsonl", "snippets.jsonl")
#: A file name the mirror accepts from a listing (matched whole: no path, no newline).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.jsonl")
TIMEOUT_ENV = "CHAT_MIRROR_TIMEOUT"
MAX_BYTES_ENV = "CHAT_MIRROR_MAX_BYTES"
#: A listing (or one event, which carries a listing) larger than this is refused: about
#: 50,000 files, far more than a Space keeps.
MAX_LISTING_BYTES = 4 << 20
#: Largest answer to a staff action.
MAX_ACTION_ANSWER_BYTES = 1 << 20
#: A first sync this large prints progress on stderr.
PROGRESS_FROM_BYTES = 5_000_000
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class MirrorError(RuntimeError):
    """The remote log cannot be read; ``kind`` is ``config``, ``auth``, ``unreachable``,
    ``protocol``, ``timeout`` (a request passed ``CHAT_MIRROR_TIMEOUT``) or ``limit``
    (the folder reached ``CHAT_MIRROR_MAX_BYTES``)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def is_url(value) -> bool:
    return isinstance(value, str) and value.strip().lower().startswith(("http://", "https://"))


def _display(url: str) -> str:
    from chatcore.urls import display_url

    return display_url(url)


def parse_urls(spec: str) -> list[str]:
    """The Space URLs in ``spec`` (comma or space separated), checked; without a trailing slash."""
    urls = []
    for raw in re.split(r"[,\s]+", spec or ""):
        if not raw:
            continue
        try:
            parts = urlsplit(raw)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise MirrorError("config", "a log URL is not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise MirrorError("config", f"a log URL must be http(s)://host…, got {_display(raw)!r}")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise MirrorError("config", "a log URL takes no user:password@, query or fragment")
        if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
            raise MirrorError("config", f"use https:// for {_display(raw)}: the operator token "
                                        "must not cross the network in clear")
        url = raw.rstrip("/")
        if url not in urls:
            urls.append(url)
    if not urls:
        raise MirrorError("config", "no log URL given")
    return urls


def default_folder(urls: list[str]) -> Path:
    """``$CHAT_MIRROR_DIR/<key>`` (default ``~/.cache/chatcore/mirrors/<key>``), one per set of URLs."""
    base = Settings.from_env().mirror_dir
    if base is None:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = Path(cache) / "chatcore" / "mirrors"
    key = hashlib.sha256("\n".join(urls).encode()).hexdigest()[:16]
    return Path(base).expanduser().resolve() / key


def _tag(url: str) -> str:
    return "s" + hashlib.sha256(url.encode()).hexdigest()[:8]


class _Reset(Exception):
    """The remote file is not the one the local copy continues: start it again."""


class _FolderLock:
    def __init__(self, folder: Path):
        self.path = folder / LOCK_FILE

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


class Mirror:
    """The logs of ``urls`` copied into ``folder`` (see the module docstring)."""

    def __init__(self, urls: list[str], token: str, folder: str | os.PathLike | None = None,
                 timeout: float | None = None, max_bytes: int | None = None):
        self.urls = list(urls)
        self.folder = Path(folder).resolve() if folder else default_folder(self.urls)
        self._token = token
        settings = Settings.from_env()
        self.timeout = settings.mirror_timeout if timeout is None else timeout
        self.max_bytes = settings.mirror_max_bytes if max_bytes is None else max_bytes
        self._http = BoundedHttp(self.timeout)
        self._used = 0  # bytes in the folder, counted while a sync writes
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        #: Body bytes received from the Spaces (file contents, including the compared overlap).
        self.bytes_received = 0
        #: File bytes appended to the local copy.
        self.bytes_written = 0
        self.requests = 0
        self.resets = 0
        self.renames = 0
        self.syncs = 0
        self.last_sync: float | None = None
        self.last_error: str | None = None
        self.events = 0
        self.events_error: str | None = None
        self._seen: dict[str, dict] = {}  # the last listing synced, per Space

    # -- HTTP --------------------------------------------------------------------------

    def _headers(self, url: str) -> dict:
        headers = {HEADER: self._token}
        host = (urlsplit(url).hostname or "").lower()
        settings = Settings.from_env()
        hf = reveal(settings.space_hf_token) or reveal(settings.hf_token)
        if hf and host.endswith(".hf.space") and url.startswith("https://"):
            headers["Authorization"] = f"Bearer {hf}"  # a private Space: the HF token opens its door
        return headers

    def _request(self, method: str, url: str, path: str, *, cap: int, what: str, **kwargs):
        """``(status, headers, body)`` of one request, within the deadline and ``cap``."""
        self.requests += 1
        try:
            status, headers, body = self._http.request(method, url + PREFIX + path, cap=cap,
                                                       headers=self._headers(url), **kwargs)
        except Deadline:
            raise MirrorError("timeout", f"{_display(url)} did not send {what} within {self.timeout:g} s "
                                         f"({TIMEOUT_ENV}); try again later, or raise {TIMEOUT_ENV} "
                                         "for a slow connection") from None
        except TooLarge:
            raise MirrorError("protocol", f"{_display(url)} sent {what} larger than {cap} bytes; refused") from None
        except httpx.HTTPError as exc:
            raise MirrorError("unreachable", f"cannot reach {_display(url)} ({type(exc).__name__})") from None
        self._check(url, path, status)
        return status, headers, body

    def _listing(self, url: str) -> dict:
        _status, _headers, body = self._request("GET", url, "/log", cap=MAX_LISTING_BYTES, what="its listing")
        try:
            listing = json.loads(body)
        except (ValueError, RecursionError):
            listing = None
        if not isinstance(listing, dict):
            raise MirrorError("unreachable", f"{_display(url)} sent an unreadable listing")
        return listing

    def _get_range(self, url: str, path: str, offset: int, limit: int) -> tuple[int, httpx.Headers, bytes]:
        """One byte range; never more than ``limit`` bytes are accepted, whatever the server sends."""
        try:
            status, headers, body = self._request("GET", url, path, cap=limit, what="a part of a file",
                                                  params={"offset": offset, "limit": limit})
        except MirrorError as exc:
            if exc.kind == "protocol":
                raise MirrorError("protocol", f"{_display(url)} sent more than was asked for") from None
            raise
        if status == 200:
            self.bytes_received += len(body)
        return status, headers, body

    @staticmethod
    def _check(url: str, path: str, status: int) -> None:
        if status == 401:
            raise MirrorError("auth", f"{_display(url)} refused the operator token (HTTP 401): "
                                      "check CHAT_OPERATOR_TOKEN")
        if status == 404 and path == "/log":
            raise MirrorError("protocol", f"{_display(url)} does not serve its log (HTTP 404): "
                                          "set the CHAT_OPERATOR_TOKEN secret on the Space")
        if status >= 500:
            raise MirrorError("unreachable", f"{_display(url)} answered HTTP {status}")

    # -- state ------------------------------------------------------------------------

    def _load_state(self) -> dict:
        try:
            state = json.loads((self.folder / STATE_FILE).read_text())
            if state.get("version") == 1 and state.get("urls") == self.urls:
                return state
        except (OSError, ValueError):
            pass
        return {"version": 1, "urls": self.urls, "files": {}}

    def _save_state(self, state: dict) -> None:
        tmp = self.folder / f"{STATE_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.folder / STATE_FILE)

    def _local(self, url: str, kind: str, name: str) -> str:
        """Path of a remote file in the mirror, relative to the folder."""
        if kind == "annotation":
            return f".sources/{_tag(url)}/{name}"
        return name if len(self.urls) == 1 else f"{_tag(url)}.{name}"

    # -- sync -------------------------------------------------------------------------

    def sync(self, progress=None) -> dict:
        """Bring the copy up to date with every Space once. Returns what it did;
        raises :class:`MirrorError` when no Space could be read."""
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            with _FolderLock(self.folder):
                return self._sync(progress)

    def _sync(self, progress) -> dict:
        state = self._load_state()
        files = state["files"]
        listings, errors = {}, []
        for url in self.urls:
            try:
                listing = self._listing(url)
                listings[url] = listing
                self._seen[url] = listing
            except MirrorError as exc:
                if exc.kind != "unreachable":
                    raise
                errors.append(str(exc))
        if not listings:
            self.last_error = "; ".join(errors)
            raise MirrorError("unreachable", self.last_error)

        wanted: list[tuple[str, str, str, int, str]] = []  # url, kind, name, size, id
        for url, listing in listings.items():
            for kind, key in (("shard", "shards"), ("annotation", "annotations")):
                items = listing.get(key)
                for item in items if isinstance(items, list) else []:
                    if not isinstance(item, dict):
                        continue
                    name, size, ident = item.get("name"), item.get("size"), item.get("id")
                    if not (isinstance(name, str) and NAME_PATTERN.fullmatch(name) and isinstance(size, int)
                            and size >= 0 and isinstance(ident, str)):
                        continue
                    if kind == "annotation" and name not in ANNOTATION_FILES:
                        continue
                    wanted.append((url, kind, name, size, ident))

        # Files gone from a Space that answered: a rotation (same id under a new name) is a rename.
        listed = {self._local(u, k, n): i for u, k, n, _s, i in wanted}
        gone = {rel: e for rel, e in files.items()
                if e.get("url") in listings and listed.get(rel) != e.get("id")}
        for url, kind, name, size, ident in wanted:
            rel = self._local(url, kind, name)
            entry = files.get(rel)
            if entry is not None and entry.get("id") == ident:
                continue
            for old_rel, old in list(gone.items()):
                if old.get("url") == url and old.get("kind") == kind and old.get("id") == ident:
                    try:
                        if (self.folder / rel).exists():
                            (self.folder / rel).unlink()
                        os.rename(self.folder / old_rel, self.folder / rel)
                        files[rel] = {**old, "name": name}
                        self.renames += 1
                    except OSError:
                        pass
                    files.pop(old_rel, None)
                    del gone[old_rel]
                    break
        for rel in gone:
            if rel not in listed:
                files.pop(rel, None)
                self._remove(rel)

        todo = 0
        for url, kind, name, size, ident in wanted:
            todo += max(0, size - self._size(self._local(url, kind, name)))
        report = _Progress(progress, todo)
        self._used = _folder_bytes(self.folder)
        changed_annotations = False
        fetched = 0
        for url, kind, name, size, ident in wanted:
            rel = self._local(url, kind, name)
            for _attempt in range(3):
                try:
                    n = self._sync_file(url, kind, name, size, ident, rel, files, report,
                                        lambda: self._save_state(state))
                    break
                except _Reset:
                    self.resets += 1
                    files.pop(rel, None)
                    self._remove(rel)
                    size = None  # learn it again from the answer
                    changed_annotations |= kind == "annotation"
                except MirrorError as exc:
                    if exc.kind in ("auth", "timeout", "limit"):
                        raise  # the state saved so far lets the next sync resume
                    errors.append(str(exc))
                    n = 0
                    break
            else:
                n = 0
            fetched += n
            if kind == "annotation" and n:
                changed_annotations = True
        report.finish()
        if changed_annotations or gone or not (self.folder / "annotations").exists():
            self._merge_annotations()
        self._save_state(state)
        self.syncs += 1
        self.last_sync = time.time()
        self.last_error = "; ".join(errors) or None
        return {"fetched": fetched, "errors": errors, "files": len(wanted)}

    def _size(self, rel: str) -> int:
        try:
            return (self.folder / rel).stat().st_size
        except OSError:
            return 0

    def _remove(self, rel: str) -> None:
        """A local copy the Space replaced, truncated or deleted goes, and so does every cache
        made from it (a forget on the Space must not live on in this dashboard's cache)."""
        from chatcore.log.cache_purge import purge_cache

        path = self.folder / rel
        try:
            path.unlink()
        except OSError:
            pass
        purge_cache(self.folder, [], [path])

    def _sync_file(self, url, kind, name, size, ident, rel, files, report, save) -> int:
        path = self.folder / rel
        entry = files.get(rel)
        have = self._size(rel)
        if entry is None or entry.get("id") != ident or (size is not None and size < have):
            if have or path.exists():
                self.resets += entry is not None
                self._remove(rel)
            have = 0
        new_entry = {"url": url, "kind": kind, "name": name, "id": ident}
        if files.get(rel) != new_entry:
            files[rel] = new_entry
            save()  # an interrupted download resumes from the local size next time
        if size is not None and size <= have:
            return 0
        path.parent.mkdir(parents=True, exist_ok=True)
        route = ("/shards/" if kind == "shard" else "/annotations/") + quote(name, safe="")
        written = 0
        with open(path, "ab") as out:
            offset = have
            while True:
                room = self.max_bytes - self._used
                if room <= 0:
                    raise self._full(url)
                back = min(OVERLAP, offset)
                ask = min(CHUNK, back + room + 1)  # one byte more than fits tells "full" from "done"
                status, headers, body = self._get_range(url, route, offset - back, ask)
                if status in (404, 416):
                    raise _Reset
                if status != 200:
                    raise MirrorError("protocol", f"{_display(url)} answered HTTP {status}")
                if headers.get("X-Chat-Id") != ident:
                    files[rel]["id"] = ident = headers.get("X-Chat-Id") or ""
                    if offset:
                        raise _Reset
                if back:
                    with open(path, "rb") as f:
                        f.seek(offset - back)
                        if f.read(back) != body[:back]:
                            raise _Reset
                data = body[back:]
                cut = data.rfind(b"\n") + 1
                if cut == 0 and len(body) >= CHUNK:
                    cut = len(data)  # one line longer than a chunk
                full = len(data) > room  # the Space has more than fits
                if full:
                    cut = data[:room].rfind(b"\n") + 1  # the whole lines that fit
                if cut:
                    out.write(data[:cut])
                    out.flush()
                    offset += cut
                    written += cut
                    self._used += cut
                    self.bytes_written += cut
                    report.add(cut)
                if full:
                    raise self._full(url)
                try:
                    remote_size = int(headers.get("X-Chat-Size") or 0)
                except ValueError:
                    remote_size = 0
                if not cut or offset >= remote_size or len(body) < ask:
                    break
        return written

    def _full(self, url: str) -> MirrorError:
        return MirrorError("limit", f"the copy of {_display(url)} reached {MAX_BYTES_ENV} ({self.max_bytes:,} bytes) "
                                    f"and stopped; what it has is kept in {self.folder}. If the Space's log "
                                    f"is really this large, raise {MAX_BYTES_ENV}")

    def _merge_annotations(self) -> None:
        """``annotations/<name>``: the Spaces' copies as one file (complete lines, by time)."""
        target_dir = self.folder / "annotations"
        target_dir.mkdir(exist_ok=True)
        for name in ANNOTATION_FILES:
            parts = []
            for url in self.urls:
                try:
                    parts.append((self.folder / self._local(url, "annotation", name)).read_bytes())
                except OSError:
                    continue
            target = target_dir / name
            if not parts:
                target.unlink(missing_ok=True)
                continue
            if len(parts) == 1:
                data = parts[0][: parts[0].rfind(b"\n") + 1]
            else:
                seen, lines = set(), []
                for part in parts:
                    for line in part.splitlines(keepends=True):
                        if line.endswith(b"\n") and line not in seen:
                            seen.add(line)
                            lines.append(line)
                lines.sort(key=_line_ts)
                data = b"".join(lines)
            try:
                current = target.read_bytes()
            except OSError:
                current = None
            if current == data:
                continue
            if current and data.startswith(current):  # only new lines: append, readers keep their place
                with open(target, "ab") as f:
                    f.write(data[len(current):])
                continue
            tmp = target_dir / f".{name}.{os.getpid()}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, target)

    # -- staff actions ----------------------------------------------------------------

    def send_record(self, file_name: str, record: dict) -> dict:
        """Send the staff action an annotation record stands for (``feedback.jsonl``, ``notes.jsonl``
        or ``snippets.jsonl``)."""
        if file_name == "feedback.jsonl":
            keys = ("conversation_id", "turn", "rating", "by", "source")
            action = {"action": "feedback", **{k: record.get(k) for k in keys}}
        elif file_name == "snippets.jsonl":
            keys = ("snippet_id", "title", "value", "author")
            action = {"action": record.get("kind"), **{k: record[k] for k in keys if k in record}}
        else:
            action = {"action": record.get("kind"), **{k: record.get(k) for k in ("conversation_id", "value", "author")}}
        return self.send_action(action)

    def send_action(self, action: dict) -> dict:
        """POST a staff action to the (first) Space, then sync so this process sees it at once."""
        url = self.urls[0]
        try:
            status, _headers, body = self._request("POST", url, "/annotations", cap=MAX_ACTION_ANSWER_BYTES,
                                                   what="its answer", json=action)
        except MirrorError as exc:
            if exc.kind == "auth":
                raise OSError(f"{_display(url)} refused the operator token; not saved") from None
            raise OSError(f"{exc}; not saved") from None
        try:
            answer = json.loads(body)
        except (ValueError, RecursionError):
            answer = None
        answer = answer if isinstance(answer, dict) else {}
        if status == 400:
            raise ValueError(str(answer.get("error") or "rejected")[:200])
        if status != 200:
            raise OSError(f"{_display(url)} answered HTTP {status}; not saved")
        try:
            self.sync()
        except MirrorError as exc:
            log.warning("saved on the Space, but the mirror could not sync: %s", exc)
        record = answer.get("record")
        return record if isinstance(record, dict) else {}

    # -- following --------------------------------------------------------------------

    def start(self) -> "Mirror":
        """Follow the Spaces in the background (idempotent)."""
        if self._threads:
            return self
        threads = [threading.Thread(target=self._sync_loop, name="mirror-sync", daemon=True)]
        threads += [threading.Thread(target=self._listen, args=(url,), name="mirror-events", daemon=True)
                    for url in self.urls]
        self._threads = threads
        for t in threads:
            t.start()
        return self

    def kick(self) -> None:
        self._wake.set()

    def _sync_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(RESYNC)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.sync()
            except Exception as exc:  # the copy stays as it was; try again on the next event
                self.last_error = str(exc)
                log.warning("mirror sync failed: %s", exc)
                self._stop.wait(1.0)

    def _listen(self, url: str) -> None:
        # A stream that opened and then ended is opened again after a short pause; one that
        # cannot be opened (or breaks the protocol) is retried with a growing pause.
        while not self._stop.is_set():
            try:
                for attempt in retry.backoff(first=0.5, most=5.0, stop=self._stop):
                    with attempt:
                        self._follow_events(url)
            except Exception as exc:  # stopped while failing
                log.debug("event stream of %s: %s", _display(url), exc)
            self._stop.wait(0.5)

    def _follow_events(self, url: str) -> None:
        """Wake the sync on each new listing the Space announces, until the stream ends.
        Raises when the stream cannot be opened or an event is larger than :data:`MAX_LISTING_BYTES`."""
        if self._stop.is_set():
            return
        timeout = httpx.Timeout(5.0, read=60.0)  # the Space sends a keep-alive every 15 s
        opened = False
        try:
            with httpx.Client(timeout=timeout, follow_redirects=False) as client, \
                    client.stream("GET", url + PREFIX + "/events",
                                  headers={**self._headers(url), "Accept": "text/event-stream"}) as resp:
                if resp.status_code != 200:
                    raise MirrorError("protocol", f"events: HTTP {resp.status_code}")
                opened = True
                # The first event is the listing as it is now: a sync catches up on anything
                # written while disconnected. Listings already synced wake nobody.
                for event in events(resp, MAX_LISTING_BYTES):
                    if self._stop.is_set():
                        return
                    if not event.data:
                        continue
                    self.events += 1
                    try:
                        listing = json.loads(event.data)
                    except (ValueError, RecursionError):
                        listing = None
                    if listing is None or listing != self._seen.get(url):
                        self._wake.set()
        except TooLarge as exc:
            self.events_error = f"{_display(url)} sent {exc} on its event stream; refused"
            raise MirrorError("protocol", self.events_error) from None
        except httpx.HTTPError as exc:
            if not opened:
                raise
            log.debug("event stream of %s ended: %s", _display(url), exc)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._http.close()

    def stats(self) -> dict:
        return {"urls": [_display(u) for u in self.urls], "folder": str(self.folder),
                "bytes_received": self.bytes_received, "bytes_written": self.bytes_written,
                "requests": self.requests, "resets": self.resets, "renames": self.renames,
                "syncs": self.syncs, "events": self.events, "events_error": self.events_error,
                "last_sync": self.last_sync, "last_error": self.last_error}


def _folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:
            pass
    return total


def _line_ts(line: bytes) -> str:
    m = re.search(rb'"ts":"([^"]{10,40})"', line)
    return m.group(1).decode("ascii", "replace") if m else ""


class _Progress:
    def __init__(self, callback, total: int):
        self.callback, self.total, self.done = callback, total, 0

    def add(self, n: int) -> None:
        self.done += n
        if self.callback and self.total:
            self.callback(min(self.done, self.total), self.total)

    def finish(self) -> None:
        if self.callback and self.total and self.done < self.total:
            self.callback(self.total, self.total)


def stderr_progress(label: str):
    """Progress of a first sync on stderr (only when there is much to fetch)."""
    state = {"last": -1}

    def show(done: int, total: int) -> None:
        if total < PROGRESS_FROM_BYTES:
            return
        pct = int(done * 100 / max(total, 1))
        if pct == state["last"] or (pct % 5 and done < total):
            return
        state["last"] = pct
        end = "\n" if done >= total else ""
        sep = "\r" if sys.stderr.isatty() else ""
        if not sys.stderr.isatty():
            end = "\n"
        print(f"{sep}mirroring {label}: {done / 1e6:,.1f} of {total / 1e6:,.1f} MB ({pct}%)",
              end=end, file=sys.stderr, flush=True)

    return show


# ------------------------------------------------------------------------- per process

_mirrors: dict[Path, Mirror] = {}
_registry_lock = threading.Lock()


def attach(spec: str, token: str | None = None, folder=None, follow: bool = True, progress=None) -> Mirror:
    """The mirror of ``spec`` for this process: synced once (progress on stderr when large)
    and, with ``follow``, kept up to date in the background. Later calls return it at once.

    Raises :class:`MirrorError` when the token is missing or refused, or when the Space
    cannot be reached and there is no earlier copy to read.
    """
    urls = parse_urls(spec)
    token = token if token is not None else (reveal(Settings.from_env().operator_token) or "")
    if not token:
        raise MirrorError("config", f"reading the log at {', '.join(_display(u) for u in urls)} needs the "
                                    f"operator token: set {TOKEN_ENV}")
    folder = Path(folder).resolve() if folder else default_folder(urls)
    with _registry_lock:
        m = _mirrors.get(folder)
        if m is not None and m.urls == urls and m._token == token:
            if follow:
                m.start()
            return m
        if m is not None:
            m.close()
        m = Mirror(urls, token, folder)
        first = not (folder / STATE_FILE).exists()
        if progress is None and first:
            progress = stderr_progress(", ".join(_display(u) for u in urls))
        try:
            m.sync(progress=progress)
        except MirrorError as exc:
            if exc.kind != "unreachable" or first:
                m.close()
                raise
            print(f"warning: {exc}; showing the copy from {m.folder}", file=sys.stderr)
        _mirrors[folder] = m
        if follow:
            m.start()
        return m


def mirror_for_path(path) -> Mirror | None:
    """The attached mirror whose folder holds ``path`` (None for a local log).

    A mirror folder opened as a plain path (no URL) is attached from its state file,
    so a staff action is still sent to the Space instead of into the copy.
    """
    p = Path(path).resolve()
    with _registry_lock:
        for folder, m in _mirrors.items():
            if p == folder or folder in p.parents:
                return m
    for folder in (p, *p.parents)[:3]:  # the folder, annotations/, a file in it
        state = folder / STATE_FILE
        if state.is_file():
            try:
                urls = json.loads(state.read_text())["urls"]
            except (OSError, ValueError, KeyError, TypeError):
                raise OSError(f"{folder} is a mirror of a Space with an unreadable state file") from None
            try:
                return attach(",".join(urls), folder=folder, follow=False)
            except MirrorError as exc:
                raise OSError(f"{folder} mirrors a Space; changes go to the Space: {exc}") from None
    return None


def close_all() -> None:
    """Stop following (every mirror of this process)."""
    with _registry_lock:
        mirrors = list(_mirrors.values())
        _mirrors.clear()
    for m in mirrors:
        m.close()

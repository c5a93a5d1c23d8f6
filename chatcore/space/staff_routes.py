"""The Space serves its log to staff: read-only routes for holders of the operator token.

Mounted only when the environment variable ``CHAT_OPERATOR_TOKEN`` is set (the token
file beside the log does not enable them). Every route needs the header
``X-Chat-Operator-Token`` (an ``Authorization`` header, e.g. the HF token of a
private Space, may come with it and is ignored here):

* ``GET  /staff/v1/log`` — the shards (``*.jsonl`` in the log folder; with a replica
  id only this replica's) and the annotation files, each ``{name, size, id}``;
* ``GET  /staff/v1/shards/{name}?offset=N&limit=M`` — a shard's bytes from ``offset``;
* ``GET  /staff/v1/annotations/{name}?offset=N&limit=M`` — the same for
  ``feedback.jsonl``, ``notes.jsonl`` and ``snippets.jsonl`` (canned replies);
* ``GET  /staff/v1/events`` — server-sent events: the listing again whenever a file
  grows, shrinks or is replaced (writes of this process wake it at once; others
  are seen by a 50 ms scan);
* ``POST /staff/v1/annotations`` — a staff action (tag, untag, note, replay link,
  rating, canned reply saved or deleted), written by the Space with :mod:`chatcore.log.annotations`.

A request without the header gets 401 and an empty body; a wrong token the same
after a short delay. Names are looked up in a fresh listing of the folder: the
caller's string never reaches the filesystem, and symlinks are not served.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import stat
import threading
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from chatcore.config import Settings, reveal
from chatcore.log import annotations

log = logging.getLogger("chatcore.staff")

PREFIX = "/staff/v1"
HEADER = "X-Chat-Operator-Token"
#: Largest answer of one byte-range request; the client asks again for the rest.
MAX_CHUNK = 8 << 20
#: Delay before answering a wrong token (slows guessing down).
WRONG_TOKEN_DELAY = 0.5
#: How often an open event stream looks at the folder (writes of this process wake it at once).
SCAN_INTERVAL = 0.05
#: A comment line on an idle event stream, so clients notice a dead connection.
KEEPALIVE = 15.0
ANNOTATION_FILES = ("feedback.jsonl", "notes.jsonl", annotations.SNIPPETS_FILE)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.jsonl")
MAX_ACTION_BYTES = 32 * 1024
NOTE_ACTIONS = {"tag": annotations.add_tag, "untag": annotations.remove_tag,
                "note": annotations.add_note, "replay": annotations.link_replay}


def _file_id(st: os.stat_result) -> str:
    """Identity of one file (not of its name): a replaced file gets another id."""
    return hashlib.sha1(f"{st.st_dev}:{st.st_ino}".encode()).hexdigest()[:16]


class LogFolder:
    """The files this Space may serve, listed fresh on every call."""

    def __init__(self, log_path: Path, shard_path: Path, replica: str | None):
        log_path = Path(log_path)
        self.folder = (log_path if log_path.is_dir() else log_path.parent).resolve()
        self.annotations = annotations.annotations_dir(log_path).resolve()
        # With a replica id, only this replica's shards: <stem>.<replica>.jsonl and its daily
        # shards <stem>.<YYYY-MM-DD>.<replica>.jsonl.
        self.suffix = f".{replica}.jsonl" if replica else None
        self.own = Path(shard_path).name

    @staticmethod
    def _scan(folder: Path, keep) -> dict[str, tuple[Path, os.stat_result]]:
        out = {}
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return out
        for entry in entries:
            name = entry.name
            if not NAME_PATTERN.fullmatch(name) or not keep(name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                out[name] = (folder / name, st)
        return out

    def shards(self) -> dict[str, tuple[Path, os.stat_result]]:
        if self.suffix is None:
            return self._scan(self.folder, lambda n: True)
        return self._scan(self.folder, lambda n: n == self.own or n.endswith(self.suffix))

    def annotation_files(self) -> dict[str, tuple[Path, os.stat_result]]:
        return self._scan(self.annotations, lambda n: n in ANNOTATION_FILES)

    def listing(self) -> dict:
        def rows(files):
            return [{"name": n, "size": st.st_size, "id": _file_id(st)} for n, (_p, st) in sorted(files.items())]

        return {"shards": rows(self.shards()), "annotations": rows(self.annotation_files())}


class _Wakers:
    """Event streams waiting for a change; ``poke()`` may be called from any thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._waiting: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def add(self, item) -> None:
        with self._lock:
            self._waiting.add(item)

    def discard(self, item) -> None:
        with self._lock:
            self._waiting.discard(item)

    def poke(self) -> None:
        with self._lock:
            waiting = list(self._waiting)
        for loop, event in waiting:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # loop closed
                self.discard((loop, event))


def _read_range(path: Path, offset: int, limit: int) -> tuple[bytes, os.stat_result]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileNotFoundError(path.name)
        n = max(0, min(limit, st.st_size - offset))
        return (os.pread(fd, n, offset) if n else b""), st
    finally:
        os.close(fd)


def _int_param(request: Request, name: str, default: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,18}", raw):  # ASCII digits only ("²".isdigit() is True)
        return None
    return min(int(raw), high)


def register(app: FastAPI, settings, service=None) -> bool:
    """Add the staff routes to ``app`` when ``CHAT_OPERATOR_TOKEN`` is set; returns whether it did."""
    token = reveal(Settings.from_env().operator_token)
    if not token:
        return False
    if getattr(settings, "log_url", None):
        raise ValueError("a Space writes a local log; it cannot serve a mirror of another Space")
    expected = token.encode()
    files = LogFolder(settings.log_path, settings.shard_path, settings.replica)
    wakers = _Wakers()

    writer = getattr(service, "writer", None)
    if writer is not None:  # a turn logged by this process wakes the event streams at once
        plain_append = writer.append_line

        def append_line(line: bytes) -> bool:
            ok = plain_append(line)
            wakers.poke()
            return ok

        writer.append_line = append_line

    def denied() -> Response:
        return Response(status_code=401)

    async def allowed(request: Request) -> bool:
        given = request.headers.get(HEADER)
        if not given:
            return False
        if hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected):
            return True
        await asyncio.sleep(WRONG_TOKEN_DELAY)
        return False

    @app.get(PREFIX + "/log")
    async def staff_log(request: Request):
        if not await allowed(request):
            return denied()
        return JSONResponse(files.listing(), headers={"Cache-Control": "no-store"})

    async def serve_range(request: Request, name: str, listed: dict) -> Response:
        offset = _int_param(request, "offset", 0, 2**62)
        limit = _int_param(request, "limit", MAX_CHUNK, MAX_CHUNK)
        if offset is None or limit is None:
            return JSONResponse({"error": "offset and limit are whole numbers"}, status_code=400)
        entry = listed.get(name)
        if entry is None:
            return JSONResponse({"error": "no such file"}, status_code=404)
        try:
            data, st = _read_range(entry[0], offset, limit)
        except OSError:
            return JSONResponse({"error": "no such file"}, status_code=404)
        headers = {"X-Chat-Size": str(st.st_size), "X-Chat-Id": _file_id(st), "Cache-Control": "no-store"}
        if offset > st.st_size:
            return Response(status_code=416, headers=headers)
        return Response(data, media_type="application/octet-stream", headers=headers)

    @app.get(PREFIX + "/shards/{name}")
    async def staff_shard(name: str, request: Request):
        if not await allowed(request):
            return denied()
        return await serve_range(request, name, files.shards())

    @app.get(PREFIX + "/annotations/{name}")
    async def staff_annotation(name: str, request: Request):
        if not await allowed(request):
            return denied()
        return await serve_range(request, name, files.annotation_files())

    @app.get(PREFIX + "/events")
    async def staff_events(request: Request):
        if not await allowed(request):
            return denied()

        async def stream():
            loop = asyncio.get_running_loop()
            event = asyncio.Event()
            item = (loop, event)
            wakers.add(item)
            last, quiet_since = None, time.monotonic()
            try:
                yield "retry: 1000\n\n"
                while not await request.is_disconnected():
                    listing = files.listing()
                    if listing != last:
                        last = listing
                        quiet_since = time.monotonic()
                        yield f"event: log\ndata: {json.dumps(listing, separators=(',', ':'))}\n\n"
                    elif time.monotonic() - quiet_since > KEEPALIVE:
                        quiet_since = time.monotonic()
                        yield ": keep-alive\n\n"
                    try:
                        await asyncio.wait_for(event.wait(), SCAN_INTERVAL)
                    except asyncio.TimeoutError:
                        pass
                    event.clear()
            finally:
                wakers.discard(item)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.post(PREFIX + "/annotations")
    async def staff_action(request: Request):
        if not await allowed(request):
            return denied()
        body = await request.body()
        if len(body) > MAX_ACTION_BYTES:
            return JSONResponse({"error": "request too large"}, status_code=413)
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("send a JSON object")
            rec = _apply(settings.log_path, data)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except OSError:
            return JSONResponse({"error": "the annotation could not be saved just now"}, status_code=503)
        wakers.poke()
        return JSONResponse({"ok": True, "record": rec})

    log.info("staff routes on %s (operator token set)", PREFIX)
    return True


def _short_word(value, default: str) -> str:
    value = default if value is None else value
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}", value):
        raise ValueError("source must be a short word")
    return value


def _apply(log_path: Path, data: dict) -> dict:
    """One staff action from a dashboard or the CLI, checked by the annotations functions."""
    action = data.get("action")
    author = data.get("author")
    if author is not None and not isinstance(author, str):
        raise ValueError("author must be a string")
    author = author or "staff"
    if action in NOTE_ACTIONS:
        value = data.get("value")
        if not isinstance(value, str):
            raise ValueError("value must be a string")
        return NOTE_ACTIONS[action](log_path, data.get("conversation_id"), value, author=author)
    if action == "feedback":
        return annotations.record_feedback(
            log_path, data.get("conversation_id"), data.get("turn"), data.get("rating"),
            by=data.get("by") or "staff", source=_short_word(data.get("source"), "dashboard"))
    if action == "snippet":
        return annotations.save_snippet(log_path, data.get("title"), data.get("value"),
                                        snippet_id=data.get("snippet_id"), author=author)
    if action == "unsnippet":
        return annotations.delete_snippet(log_path, data.get("snippet_id"), author=author)
    raise ValueError("action must be one of tag, untag, note, replay, feedback, snippet, unsnippet")

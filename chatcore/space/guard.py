"""The Space's front door: an ASGI middleware in front of every route, Gradio's included.

Gradio is mounted with ``gr.mount_gradio_app``; its routes parse whatever arrives.
This layer checks requests *before* Gradio sees them:

* **Bodies are capped while they are received.** An event call (``/gradio_api/queue/join``,
  ``/gradio_api/call/…``, ``/gradio_api/run/…``) may carry at most :func:`event_body_cap`
  bytes; an upload at most ``CHAT_MAX_UPLOAD_BYTES`` (+ multipart framing); anything else
  64 KB. A bigger body is refused with 413 as soon as the cap is passed (or at once, from
  ``Content-Length``); an upload is held in a private spool and reaches Gradio's upload
  folder only when it is whole and under the cap.
* **Files are the caller's own.** Every file object (a dict with a ``path``) in an event
  call must name a file this client address uploaded through ``/gradio_api/upload``; any
  other path (absolute, relative, ``..``, ``file://``, ``http://``, ``/proc``, the log
  folder) is refused with 422 before Gradio copies anything. ``/gradio_api/file=`` serves
  only the caller's own uploads and Gradio's static assets. A list called ``files`` holds at
  most ``CHAT_MAX_FILES`` entries.
* **Routes the Space does not use are closed** (proxy, media streams, component server,
  recordings, run history, monitoring, code editing): 404.
* **One client cannot take every slot.** At most ``CHAT_CLIENT_CONCURRENCY`` events queued or
  running per client address and per session; more are refused with 429 at once.
  The address is the TCP peer, or the last ``X-Forwarded-For`` hop not in
  ``CHAT_TRUSTED_PROXIES`` when the peer is a trusted proxy.
* **Session hashes are short and plain** (``[A-Za-z0-9_-]{1,64}``); anything else is 422.
"""
from __future__ import annotations

import ipaddress
import json
import re
import tempfile
import threading
from collections import OrderedDict
from typing import Any, Awaitable, Callable

from limits import RateLimitItemPerMinute
from limits.strategies import MovingWindowRateLimiter

from chatcore import rate_limits

SESSION_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
SMALL_BODY = 64 * 1024
MULTIPART_SLACK = 64 * 1024
MAX_DEPTH = 64
API = "/gradio_api"

#: Event routes: JSON bodies whose file references and size are checked.
EVENT_PREFIXES = (f"{API}/queue/join", f"{API}/call/", f"{API}/run/", f"{API}/api/")
#: Routes of Gradio that this Space never uses.
CLOSED_PREFIXES = (
    f"{API}/proxy=", f"{API}/stream/", f"{API}/component_server", f"{API}/process_recording",
    f"{API}/run-history", f"{API}/runs", f"{API}/vibe-", f"{API}/undo-vibe-edit", f"{API}/dev/",
    f"{API}/deep_link", f"{API}/custom_component", f"{API}/mcp", "/monitoring",
)
FILE_PREFIXES = (f"{API}/file=", f"{API}/file/")


def event_body_cap(max_message_bytes: int) -> int:
    """Largest event body: room for a full message plus a long page history."""
    return max(256 * 1024, 32 * max_message_bytes)


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ----------------------------------------------------------------------------- clients


class ClientAddress:
    """Who is calling: the TCP peer, or the client a trusted proxy names in X-Forwarded-For."""

    def __init__(self, trusted_proxies: list[str]):
        self.networks = []
        for item in trusted_proxies:
            try:
                self.networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise SystemExit(f"CHAT_TRUSTED_PROXIES: {item!r} is not an address or network") from None

    def _trusted(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def resolve(self, peer: str | None, forwarded: list[str]) -> str:
        """``peer`` the TCP peer; ``forwarded`` the X-Forwarded-For header values in order."""
        peer = peer or "unknown"
        if not self.networks or not self._trusted(peer):
            return peer
        hops = [h.strip() for value in forwarded for h in value.split(",") if h.strip()]
        # Walk back from the nearest hop; the first one not a trusted proxy is the client.
        for hop in reversed(hops):
            if not self._trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer  # garbage from a client behind the proxy: ignore it
        return peer

    def __call__(self, scope: dict) -> str:
        peer = (scope.get("client") or ("unknown", 0))[0]
        forwarded = [value.decode("latin-1") for name, value in scope.get("headers") or ()
                     if name == b"x-forwarded-for"]
        return self.resolve(peer, forwarded)

    def of_request(self, request: Any) -> str:
        """The address of a ``gr.Request`` (queued events keep the headers and the peer)."""
        client = getattr(request, "client", None)
        peer = getattr(client, "host", None) if client is not None else None
        headers = getattr(request, "headers", None) or {}
        try:
            forwarded = [v for k, v in headers.items() if k.lower() == "x-forwarded-for"]
        except AttributeError:
            forwarded = []
        return self.resolve(peer, forwarded)


# ----------------------------------------------------------------------------- uploads


class Uploads:
    """Paths handed out by ``/gradio_api/upload``, each with the address that uploaded it."""

    def __init__(self, limit: int = 100_000):
        self._owner: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._limit = limit

    def add(self, path: str, owner: str) -> None:
        with self._lock:
            self._owner[path] = owner
            self._owner.move_to_end(path)
            while len(self._owner) > self._limit:
                self._owner.popitem(last=False)

    def owned_by(self, path: Any, owner: str | None) -> bool:
        if not isinstance(path, str) or owner is None:
            return False
        with self._lock:
            return self._owner.get(path) == owner


# ------------------------------------------------------------------------ concurrency


class InFlight:
    """Events queued or running, per client address and per session.

    A call holds a slot from the moment it is accepted: first as a reservation (while
    Gradio handles the request), then as its event id until Gradio's queue drops the event.
    """

    def __init__(self, limit: int, is_live: Callable[[str], bool]):
        self.limit = max(1, limit)
        self.is_live = is_live
        self._by_key: dict[str, set[str]] = {}
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._n = 0
        self.refused = 0

    def _alive(self, item: str) -> bool:
        return item in self._pending or self.is_live(item)

    def _live(self, key: str) -> set[str]:
        ids = self._by_key.get(key)
        if not ids:
            return set()
        alive = {i for i in ids if self._alive(i)}
        if alive:
            self._by_key[key] = alive
        else:
            self._by_key.pop(key, None)
        return alive

    def reserve(self, keys: list[str]) -> str:
        with self._lock:
            for key in keys:
                if len(self._live(key)) >= self.limit:
                    self.refused += 1
                    raise Refused(429, f"Too many calls at once from this client (limit {self.limit}). "
                                       "Wait for a reply before sending more.")
            self._n += 1
            token = f"pending:{self._n}"
            self._pending.add(token)
            for key in keys:
                self._by_key.setdefault(key, set()).add(token)
            return token

    def settle(self, keys: list[str], token: str, event_id: str | None) -> None:
        with self._lock:
            self._pending.discard(token)
            for key in keys:
                ids = self._by_key.get(key)
                if ids is not None:
                    ids.discard(token)
                    if event_id:
                        ids.add(event_id)


class RateLimit:
    """At most ``per_minute`` hits per key in any 60 seconds: a moving window of the ``limits``
    library, counted where :func:`chatcore.rate_limits.storage` says (this process, or a store
    shared by several Spaces). ``name`` keeps limits apart in a shared store."""

    def __init__(self, per_minute: int, name: str, storage=None):
        self.per_minute = max(1, per_minute)
        self.name = name
        self._item = RateLimitItemPerMinute(self.per_minute)
        self._limiter = MovingWindowRateLimiter(storage if storage is not None else rate_limits.storage())

    def allow(self, key: str) -> bool:
        return self._limiter.hit(self._item, "chatcore-space", self.name, key)


# ----------------------------------------------------------------------- body checks


def check_event_body(data: Any, owner: str | None, uploads: Uploads, max_files: int) -> str | None:
    """Check a decoded event body; returns its session_hash (or None). Raises Refused."""
    if not isinstance(data, dict):
        raise Refused(422, "The request body must be a JSON object.")
    session = data.get("session_hash")
    if session is not None and not (isinstance(session, str) and SESSION_PATTERN.fullmatch(session)):
        raise Refused(422, "Invalid session_hash: use 1-64 letters, digits, - or _.")

    def walk(value: Any, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise Refused(422, "The request is nested too deeply.")
        if isinstance(value, dict):
            files = value.get("files")
            if isinstance(files, list) and len(files) > max_files:
                raise Refused(422, f"Too many files: a message may carry at most {max_files}.")
            if "path" in value:
                if not uploads.owned_by(value.get("path"), owner):
                    raise Refused(422, "A file in this message was not uploaded by you through this "
                                       "Space: upload it first (/gradio_api/upload) and send the path "
                                       "the upload returned.")
            for v in value.values():
                walk(v, depth + 1)
        elif isinstance(value, list):
            for v in value:
                walk(v, depth + 1)

    walk(data, 0)  # data, event_data (e.g. a chatbot option's value) and anything else
    return session


# ------------------------------------------------------------------------- middleware


async def _send_json(send, status: int, body: dict, extra: list | None = None) -> None:
    raw = json.dumps(body).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
               (b"connection", b"close"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw, "more_body": False})


async def refuse(send, exc: Refused) -> None:
    body: dict = {"error": exc.message}
    if exc.status == 422:
        # Gradio's validation shape, so gradio_client raises a ValidationError carrying the message.
        body["detail"] = [{"__type__": "validate", "is_valid": False, "parameter_name": "message",
                           "message": exc.message}]
    else:
        body["detail"] = exc.message
    extra = [(b"retry-after", b"5")] if exc.status == 429 else None
    await _send_json(send, exc.status, body, extra)


class SpaceGuard:
    def __init__(self, app, *, address: ClientAddress, uploads: Uploads, inflight: InFlight,
                 max_files: int, max_upload_bytes: int, event_cap: int,
                 static_allowed: Callable[[str], bool] = lambda p: False):
        self.app = app
        self.address = address
        self.uploads = uploads
        self.inflight = inflight
        self.max_files = max_files
        self.max_upload_bytes = max_upload_bytes
        self.event_cap = event_cap
        self.static_allowed = static_allowed
        self.refused = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        owner = self.address(scope)
        scope["chatcore.client"] = owner
        path = re.sub(r"/{2,}", "/", scope.get("path") or "/")
        method = scope.get("method", "GET")
        try:
            if path.startswith(CLOSED_PREFIXES):
                raise Refused(404, "Not found.")
            if path.startswith(FILE_PREFIXES):
                return await self._file(scope, receive, send, path, owner)
            if method == "POST" and path.rstrip("/") == f"{API}/upload":
                return await self._upload(scope, receive, send, owner)
            if method == "POST" and path.startswith(EVENT_PREFIXES):
                return await self._event(scope, receive, send, path, owner)
            if method in ("POST", "PUT", "PATCH"):
                return await self._capped(scope, receive, send, SMALL_BODY)
        except Refused as exc:
            self.refused += 1
            return await refuse(send, exc)
        return await self.app(scope, receive, send)

    # -- helpers -----------------------------------------------------------------------

    @staticmethod
    def _content_length(scope) -> int | None:
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    raise Refused(400, "Bad Content-Length.") from None
        return None

    async def _read_body(self, scope, receive, cap: int, sink=None) -> bytes:
        length = self._content_length(scope)
        if length is not None and length > cap:
            raise Refused(413, f"Request too large: the limit is {cap} bytes.")
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refused(400, "The client went away.")
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > cap:
                raise Refused(413, f"Request too large: the limit is {cap} bytes.")
            if sink is not None:
                sink.write(chunk)
            else:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    def _replay(body_parts, receive):
        parts = list(body_parts)

        async def replay():
            if parts:
                chunk = parts.pop(0)
                return {"type": "http.request", "body": chunk, "more_body": bool(parts)}
            return await receive()

        return replay

    async def _capped(self, scope, receive, send, cap: int):
        body = await self._read_body(scope, receive, cap)
        return await self.app(scope, self._replay([body], receive), send)

    # -- routes ------------------------------------------------------------------------

    async def _file(self, scope, receive, send, path: str, owner: str):
        prefix = next(p for p in FILE_PREFIXES if path.startswith(p))
        wanted = path[len(prefix):]  # already percent-decoded, exactly as Gradio's route sees it
        if not (self.uploads.owned_by(wanted, owner) or self.static_allowed(wanted)):
            raise Refused(403, "File not allowed.")
        return await self.app(scope, receive, send)

    async def _upload(self, scope, receive, send, owner: str):
        cap = self.max_upload_bytes + MULTIPART_SLACK
        # Held here (memory up to 1 MB, then a private temporary file) until it is whole and
        # under the cap; only then does Gradio see it and write to its upload folder.
        spool = tempfile.SpooledTemporaryFile(max_size=1024 * 1024)
        try:
            await self._read_body(scope, receive, cap, sink=spool)
            spool.seek(0)
            return await self._upload_to_gradio(scope, receive, send, owner, spool)
        finally:
            spool.close()

    async def _upload_to_gradio(self, scope, receive, send, owner: str, spool):
        finished = {"done": False}

        async def replay():
            if finished["done"]:
                return await receive()
            chunk = spool.read(256 * 1024)
            more = bool(chunk) and spool.tell() < spool_size
            if not more:
                finished["done"] = True
            return {"type": "http.request", "body": chunk, "more_body": more}

        spool.seek(0, 2)
        spool_size = spool.tell()
        spool.seek(0)
        captured = bytearray()
        status = {"code": 0}

        async def capture(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            elif message["type"] == "http.response.body" and status["code"] == 200:
                if len(captured) < 1024 * 1024:
                    captured.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    try:
                        paths = json.loads(bytes(captured))
                    except ValueError:
                        paths = []
                    for p in paths if isinstance(paths, list) else []:
                        if isinstance(p, str):
                            self.uploads.add(p, owner)
            await send(message)

        return await self.app(scope, replay, capture)

    async def _event(self, scope, receive, send, path: str, owner: str):
        body = await self._read_body(scope, receive, self.event_cap)
        try:
            data = json.loads(body) if body else {}
        except (ValueError, RecursionError):
            raise Refused(400, "The request body is not valid JSON.") from None
        session = check_event_body(data, owner, self.uploads, self.max_files)
        queued = path.startswith((f"{API}/queue/join", f"{API}/call/"))
        keys = [f"addr:{owner}"] + ([f"session:{session}"] if session else [])
        token = self.inflight.reserve(keys)
        captured = bytearray()
        state = {"code": 0, "event_id": None}

        async def capture(message):
            if queued:
                if message["type"] == "http.response.start":
                    state["code"] = message["status"]
                elif message["type"] == "http.response.body" and state["code"] == 200:
                    if len(captured) < 4096:
                        captured.extend(message.get("body", b""))
                    if not message.get("more_body", False):
                        try:
                            event_id = json.loads(bytes(captured)).get("event_id")
                        except (ValueError, AttributeError):
                            event_id = None
                        if isinstance(event_id, str):
                            state["event_id"] = event_id
                            self.inflight.settle(keys, token, event_id)
            await send(message)

        try:
            return await self.app(scope, self._replay([body], receive), capture)
        finally:
            self.inflight.settle(keys, token, state["event_id"])


Handler = Callable[[dict, Callable, Callable], Awaitable[None]]

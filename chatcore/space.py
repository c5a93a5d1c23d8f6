"""The Space: a Gradio 6 ChatInterface on FastAPI, logging every turn.

The public contract (never break it)::

    # JS  @gradio/client
    client.predict("/chat", {message: {text, files: []}, conversation_id})
    # Python gradio_client
    Client(url).predict(message={"text": ..., "files": []}, conversation_id=..., api_name="/chat")

``source`` is an optional third input (``widget``, ``operator``, ``api``, …; default ``api``).
The same server also answers ``GET /healthz`` and serves the widget (``/widget.js``).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

import gradio as gr
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.middleware.cors import CORSMiddleware

from . import annotations, records
from .pii import mask_pii
from .responders import Responder, ResponderError, make_responder
from .settings import Settings
from .writer import LogWriter

log = logging.getLogger("chatcore.space")

SOURCE_PATTERN = records.ID_PATTERN  # short, plain: widget, operator, api, replay, …
FAILED_REPLY = "Sorry, the assistant could not answer just now. Please try again in a moment."


# ------------------------------------------------------------------------- history


def _content_text(content: Any) -> str:
    """Text of one message's content, whatever shape arrived through the API.

    Gradio does not normalise history sent by API callers: content may be a
    string, a list of strings, a file dict with a ``path``, typed blocks
    (``{"type": "text", "text": ...}``) or a component payload.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = [_content_text(c) for c in content]
        return "\n".join(p for p in parts if p)
    if isinstance(content, dict):
        if isinstance(content.get("text"), str):
            return content["text"]
        for key in ("content", "value"):
            if key in content:
                return _content_text(content[key])
        name = content.get("orig_name") or content.get("path") or content.get("url")
        if isinstance(name, str):
            return f"[file: {os.path.basename(name)}]"
        if isinstance(content.get("file"), dict):
            return _content_text(content["file"])
    return ""


def normalise_history(history: Any) -> list[dict]:
    """History as ``[{"role", "content": str}]``, consecutive same-role messages merged."""
    out: list[dict] = []
    if not isinstance(history, list):
        return out
    for item in history:
        if isinstance(item, dict):
            role, content = item.get("role"), item.get("content")
        elif isinstance(item, (list, tuple)) and len(item) == 2:  # old tuple pairs
            out.extend(normalise_history([{"role": "user", "content": item[0]},
                                          {"role": "assistant", "content": item[1]}]))
            continue
        else:
            continue
        if role not in ("user", "assistant"):
            continue
        text = _content_text(content)
        if not text:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"] += "\n" + text
        else:
            out.append({"role": role, "content": text})
    return out


# ------------------------------------------------------------------------- turn ids


class Conversations:
    """Per-conversation state the Space keeps in memory: next turn index and recent messages.

    The conversation_id is the identity, not the Gradio session: a widget that
    reloads (new session, same id) continues its count and its context, and an
    operator who switches ids in one session does not leak history across them.
    Bounded: least recently used conversations are forgotten first. Turn numbers
    are seeded from the log at start-up so a restart continues the count.
    """

    def __init__(self, limit: int = 200_000, max_messages: int = 40):
        self._state: OrderedDict[str, list] = OrderedDict()  # cid -> [next_turn, messages|None]
        self._lock = threading.Lock()
        self._limit = limit
        self._max_messages = max_messages

    def seed(self, conversation_id: str, turn: int) -> None:
        with self._lock:
            state = self._state.setdefault(conversation_id, [0, None])
            state[0] = max(state[0], turn + 1)

    def start_turn(self, conversation_id: str) -> tuple[int, list[dict] | None]:
        """Reserve the next turn index; also return the remembered messages (None if unknown)."""
        with self._lock:
            state = self._state.pop(conversation_id, None) or [0, []]
            self._state[conversation_id] = state
            turn = state[0]
            state[0] += 1
            while len(self._state) > self._limit:
                self._state.popitem(last=False)
            return turn, (list(state[1]) if state[1] is not None else None)

    def remember(self, conversation_id: str, user_text: str, reply: str) -> None:
        with self._lock:
            state = self._state.get(conversation_id)
            if state is None:
                return
            messages = state[1] if state[1] is not None else []
            messages += [{"role": "user", "content": user_text},
                         {"role": "assistant", "content": reply}]
            state[1] = messages[-self._max_messages:]


def seed_turns(counter: Conversations, log_path: Path) -> int:
    """Read (conversation_id, turn) from the log(s) this Space can see; returns lines read."""
    try:
        from .store import load_log

        if not log_path.exists():
            return 0
        frame, _stats = load_log(log_path, columns=("conversation_id", "turn"))
    except Exception as exc:  # a broken log must never stop the Space from starting
        log.warning("could not read the existing log to continue turn numbers: %s", exc)
        return 0
    if frame.empty:
        return 0
    grouped = frame.groupby("conversation_id", observed=True)["turn"]
    # Older lines carry no turn: count them instead.
    last = grouped.max().fillna(-1).astype("int64").combine(grouped.size() - 1, max)
    for cid, turn in last.items():
        counter.seed(str(cid), int(turn))
    return len(frame)


# ---------------------------------------------------------------------------- the chat


class ChatService:
    """Validates a turn, streams the responder's reply and logs the turn once."""

    def __init__(self, settings: Settings, responder: Responder, writer: LogWriter):
        self.settings = settings
        self.responder = responder
        self.writer = writer
        self.conversations = Conversations()
        self._session_ids: OrderedDict[str, str] = OrderedDict()
        self.generated_ids = 0
        self.responder_errors = 0
        self._lock = threading.Lock()

    def validate(self, message: Any, conversation_id: Any, source: Any) -> tuple[str, list, str, str]:
        if isinstance(message, dict):
            text, files = message.get("text") or "", message.get("files") or []
        elif isinstance(message, str):
            text, files = message, []
        else:
            raise gr.Error("message must be {text, files} or a string")
        if not isinstance(text, str):
            raise gr.Error("message text must be a string")
        if not isinstance(files, list):
            raise gr.Error("message files must be a list")
        if len(text.encode("utf-8", "surrogatepass")) > self.settings.max_message_bytes:
            raise gr.Error(
                f"Message is too long: the limit is {self.settings.max_message_bytes // 1024} KB. "
                "Please shorten it."
            )
        if not text.strip() and not files:
            raise gr.Error("Message is empty: type something to send.")
        if conversation_id is None or conversation_id == "":
            conversation_id = None  # chosen in chat(): it depends on the session
        else:
            try:
                records.check_conversation_id(conversation_id)
            except ValueError as exc:
                raise gr.Error(f"Invalid conversation_id: {exc}") from None
        source = source or "api"
        if not isinstance(source, str) or len(source) > 32 or not SOURCE_PATTERN.match(source):
            raise gr.Error("Invalid source: use a short word such as widget, operator or api.")
        return text, files, conversation_id, source

    @staticmethod
    def describe_files(files: list) -> list[dict]:
        described = []
        for f in files:
            path = f if isinstance(f, str) else (f.get("path") if isinstance(f, dict) else None)
            if not isinstance(path, str):
                continue
            try:
                size = os.path.getsize(path)
            except OSError:
                size = None
            name = (f.get("orig_name") if isinstance(f, dict) else None) or os.path.basename(path)
            described.append({"name": name, "size": size})
        return described

    def _id_for_session(self, session: str | None, history: Any) -> str:
        """A caller that sends no id (the Space's own page) gets one per Gradio session;
        an empty history (first message, or the chat was cleared) starts a new one."""
        with self._lock:
            cid = self._session_ids.get(session) if session and history else None
            if cid is None:
                cid = records.new_conversation_id()
                self.generated_ids += 1
                log.info("no conversation_id sent: generated %s", cid)
                if session:
                    self._session_ids[session] = cid
                    while len(self._session_ids) > 10_000:
                        self._session_ids.popitem(last=False)
            return cid

    def chat(self, message, history, conversation_id=None, source=None, request: gr.Request = None) -> Iterator[str]:
        text, files, conversation_id, source = self.validate(message, conversation_id, source)
        session = getattr(request, "session_hash", None)
        if conversation_id is None:
            conversation_id = self._id_for_session(session, history)
        turn, remembered = self.conversations.start_turn(conversation_id)
        context = remembered if remembered is not None else normalise_history(history)
        started = time.perf_counter()
        reply, error = "", None
        done = False
        try:
            try:
                for piece in self.responder.stream(text, context):
                    reply += piece
                    yield reply
            except ResponderError as exc:
                error = str(exc)
            except Exception as exc:  # a bug in a backend must not lose the turn
                log.exception("responder failed")
                error = f"responder failed ({type(exc).__name__})"
            if error:
                self.responder_errors += 1
                reply = FAILED_REPLY
                yield reply
            else:
                self.conversations.remember(conversation_id, text, reply)
            done = True
        finally:
            if not done and error is None:
                error = "cancelled before the reply completed"
            logged_text, logged_reply = text, reply
            if self.settings.redact_pii:
                logged_text, logged_reply = mask_pii(text), mask_pii(reply)
            self.writer.append(
                records.make_record(
                    conversation_id=conversation_id,
                    turn=turn,
                    user_text=logged_text,
                    response=logged_reply,
                    latency_ms=(time.perf_counter() - started) * 1000,
                    source=source,
                    backend=self.responder.name,
                    model=self.responder.model,
                    error=error,
                    files=self.describe_files(files),
                    session=session,
                )
            )

    def rate_from_ui(self, session: str | None, history: Any, index: Any, liked: Any) -> bool:
        with self._lock:
            cid = self._session_ids.get(session) if session else None
        if cid is None or not isinstance(history, list):
            return False
        if isinstance(index, (list, tuple)):
            index = index[0]
        if not isinstance(index, int) or not 0 <= index < len(history):
            return False
        turn = sum(1 for m in history[: index + 1] if isinstance(m, dict) and m.get("role") == "user") - 1
        if turn < 0:
            return False
        rating = "up" if liked is True or liked == "like" else "down"
        try:
            annotations.record_feedback(self.settings.log_path, cid, turn, rating, by="visitor", source="space")
        except (OSError, ValueError) as exc:
            log.warning("could not save feedback: %s", exc)
            return False
        return True

    def health(self) -> dict:
        return {
            "status": "ok",
            "responder": self.responder.name,
            "model": self.responder.model,
            **self.writer.health(),
            "responder_errors": self.responder_errors,
            "generated_conversation_ids": self.generated_ids,
            "max_message_bytes": self.settings.max_message_bytes,
            "concurrency": self.settings.concurrency,
            "redact_pii": self.settings.redact_pii,
        }


def build_demo(service: ChatService) -> gr.ChatInterface:
    def chat(message, history, conversation_id, source, request: gr.Request):
        yield from service.chat(message, history, conversation_id, source, request)

    def like(history, data: gr.LikeData, request: gr.Request):
        """Thumbs on a reply in the Space's own page: rate that turn of this session's conversation."""
        service.rate_from_ui(getattr(request, "session_hash", None), history, data.index, data.liked)

    # "api" is the default API callers see; the Space's own page sets its copy to "space" on load.
    source_box = gr.Textbox(value="api", label="source", visible=False)
    demo = gr.ChatInterface(
        chat,
        multimodal=True,
        title=os.environ.get("CHAT_TITLE", "Chat"),
        api_name="chat",
        additional_inputs=[
            gr.Textbox(value="", label="conversation_id", visible=False),
            source_box,
        ],
        # The two inputs are for API callers; nothing to show on the Space's own page.
        additional_inputs_accordion=gr.Accordion(visible=False),
        concurrency_limit=service.settings.concurrency,
        fill_height=True,
    )
    with demo:
        demo.chatbot.like(like, inputs=[demo.chatbot], outputs=None, api_visibility="undocumented")
        demo.load(lambda: "space", None, [source_box], api_visibility="undocumented", queue=False)
    # Gradio's default worker pool is 40 threads; let every slot run at once.
    demo.max_threads = max(40, service.settings.concurrency)
    demo.queue(default_concurrency_limit=service.settings.concurrency,
               max_size=service.settings.concurrency * 20)
    demo._queue.max_thread_count = demo.max_threads
    return demo


def build_app(settings: Settings, responder: Responder | None = None) -> tuple[FastAPI, ChatService]:
    responder = responder or make_responder(settings.responder)
    writer = LogWriter(settings.shard_path)
    service = ChatService(settings, responder, writer)
    seed_turns(service.conversations, settings.shard_path)

    app = FastAPI(title="Chat Operator Space", docs_url=None, redoc_url=None)
    origins = settings.allowed_origins
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[] if "*" in origins else origins,
        allow_origin_regex=".*" if "*" in origins else r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?",
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
        allow_credentials=False,
    )

    @app.get("/healthz")
    def healthz():
        return JSONResponse(service.health())

    @app.post("/feedback")
    async def feedback(request: Request):
        """Thumbs up/down on a reply: ``{conversation_id, turn, rating: "up"|"down"}``."""
        body = await request.body()
        if len(body) > 2048:
            return JSONResponse({"error": "request too large"}, status_code=413)
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("send a JSON object")
            rec = annotations.record_feedback(
                settings.log_path, data.get("conversation_id"), data.get("turn"), data.get("rating"),
                by="visitor", source=str(data.get("source") or "widget")[:32])
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except OSError:
            return JSONResponse({"error": "feedback could not be saved just now"}, status_code=503)
        return JSONResponse({"ok": True, "rating": rec["rating"]})

    try:
        from .widget import routes as widget_routes
    except ImportError:
        widget_routes = None
    if widget_routes is not None:
        widget_routes.register(app, settings)

    demo = build_demo(service)
    app = gr.mount_gradio_app(app, demo, path="/", server_name=settings.host, server_port=settings.port)
    app.state.chat_service = service
    return app, service


def serve(settings: Settings) -> None:
    import uvicorn

    # With RLIMIT_FSIZE a too-large write would kill the process; make it an error instead.
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app, service = build_app(settings)
    log.info(
        "Space on http://%s:%s  responder=%s  log=%s",
        settings.host, settings.port, service.responder.name, settings.shard_path,
    )
    # In-flight replies get a few seconds to finish (and be logged) on shutdown.
    grace = float(os.environ.get("CHAT_SHUTDOWN_GRACE", "5"))
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning",
                timeout_graceful_shutdown=grace)

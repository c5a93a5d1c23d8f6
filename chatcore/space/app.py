"""The Space: a Gradio 6 ChatInterface on FastAPI, logging every turn.

The public contract (never break it)::

    # JS  @gradio/client
    client.predict("/chat", {message: {text, files: []}, conversation_id})
    # Python gradio_client
    Client(url).predict(message={"text": ..., "files": []}, conversation_id=..., api_name="/chat")

``source`` is an optional third input (``widget``, ``operator``, ``api``, …; default ``api``);
the staff sources ``operator`` and ``replay`` need the ``X-Chat-Operator-Token`` header, and so
does a draft system prompt (``X-Chat-Draft-Prompt``, see :mod:`chatcore.llm.prompts`).
Each bot turn is logged with the usage its model server reported, its cost (``CHAT_PRICES``)
and its ``prompt_version``; with ``CHAT_HANDOFF_TOOL=on`` the model may call ``request_human``,
which starts a hand-off as the widget's button does.
The same server also answers ``GET /healthz`` and ``POST /feedback`` and serves the widget
(``/widget.js``). Every request passes :class:`chatcore.space.guard.SpaceGuard` first.
"""
from __future__ import annotations

import json
import logging
import signal

import gradio as gr
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.middleware.cors import CORSMiddleware

from chatcore.log import annotations
from chatcore.log import records
from chatcore.llm.responders import Responder, make_responder
from chatcore.space.chat import ChatService
from chatcore.space.guard import InFlight, RateLimit, SpaceGuard, event_body_cap
from chatcore.space.memory import seed_turns
from chatcore.config import Settings, ensure_operator_token, log_folder
from chatcore.log.writer import LogWriter

log = logging.getLogger("chatcore.space.app")


def build_demo(service: ChatService) -> gr.ChatInterface:
    def chat(message, history, conversation_id, source, request: gr.Request):
        yield from service.chat(message, history, conversation_id, source, request)

    def like(history, data: gr.LikeData, request: gr.Request):
        """Thumbs on a reply in the Space's own page: rate that turn of this session's conversation."""
        service.rate_from_ui(getattr(request, "session_hash", None), history, data.index, data.liked)

    def cleared(request: gr.Request):
        """The page's chat was cleared: the next message starts a new conversation."""
        service.forget_session(getattr(request, "session_hash", None))

    # "api" is the default API callers see; the Space's own page sets its copy to "space" on load.
    source_box = gr.Textbox(value="api", label="source", visible=False)
    demo = gr.ChatInterface(
        chat,
        multimodal=True,
        title=service.settings.title,
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
        demo.chatbot.clear(cleared, None, None, api_visibility="undocumented", queue=False)
        demo.load(lambda: "space", None, [source_box], api_visibility="undocumented", queue=False)
    # Gradio's default worker pool is 40 threads; let every slot run at once.
    demo.max_threads = max(40, service.settings.concurrency)
    demo.queue(default_concurrency_limit=service.settings.concurrency,
               max_size=service.settings.concurrency * 20)
    demo._queue.max_thread_count = demo.max_threads
    return demo


def _static_allowed(path: str) -> bool:
    """Files Gradio itself serves to every page (its static assets), never user data."""
    try:
        from gradio import utils as gr_utils
        from gradio.data_classes import _StaticFiles

        return any(gr_utils.is_in_or_equal(path, p) for p in _StaticFiles.all_paths)
    except Exception:
        return False


def build_app(settings: Settings, responder: Responder | None = None) -> tuple[FastAPI, ChatService]:
    responder = responder or make_responder(settings.responder)
    if settings.rotate not in ("", "daily"):
        raise SystemExit(f"CHAT_ROTATE must be 'daily' or empty, got {settings.rotate!r}")
    writer = LogWriter(settings.current_shard_path(),
                       path_for=settings.current_shard_path if settings.rotate == "daily" else None)
    if settings.retention_days > 0:
        from chatcore.log.retention import start_schedule

        start_schedule(settings.log_path, settings.retention_days)
    try:
        token = ensure_operator_token(settings.log_path)
    except OSError as exc:
        # Visitors are still served; staff sources and /healthz details stay closed.
        log.warning("no staff token (%s): set CHAT_OPERATOR_TOKEN; staff sources are refused meanwhile",
                    type(exc).__name__)
        token = None
    service = ChatService(settings, responder, writer, operator_token=token)
    feedback_limit = RateLimit(settings.feedback_per_minute, name="feedback")

    app = FastAPI(title="Chat Operator Space", docs_url=None, redoc_url=None)
    from chatcore.space import handoff_routes

    handoff_routes.register(app, settings, service)  # before seeding: it reads the log's events too
    seed_turns(service.conversations)

    @app.get("/healthz")
    def healthz(request: Request):
        return JSONResponse(service.health(staff=service.is_staff(request.headers)))

    @app.post("/feedback")
    async def feedback(request: Request):
        """Thumbs up/down on a reply: ``{conversation_id, turn, rating: "up"|"down"}``."""
        addr = service.address.of_request(request)
        if not feedback_limit.allow(addr):
            return JSONResponse({"error": "too many ratings: try again in a minute"}, status_code=429,
                                headers={"Retry-After": "60"})
        body = await request.body()
        if len(body) > 2048:
            return JSONResponse({"error": "request too large"}, status_code=413)
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("send a JSON object")
            cid, turn, source = data.get("conversation_id"), data.get("turn"), data.get("source") or "widget"
            if not isinstance(source, str) or not records.SOURCE_PATTERN.fullmatch(source):
                raise ValueError("source must be a short word such as widget")
            records.check_conversation_id(cid)
            if isinstance(turn, bool) or not isinstance(turn, int) or not 0 <= turn < 2**31:
                raise ValueError("turn must be a whole number from 0")
            if data.get("rating") not in annotations.RATINGS:
                raise ValueError("rating must be 'up' or 'down'")
        except (ValueError, TypeError, RecursionError) as exc:
            message = str(exc) if isinstance(exc, (ValueError, TypeError)) and \
                not isinstance(exc, json.JSONDecodeError) else "the body is not valid JSON"
            return JSONResponse({"error": message}, status_code=400)
        if not service.conversations.knows_turn(cid, turn):
            return JSONResponse({"error": "no such turn: rate a reply this Space has given"}, status_code=404)
        try:
            rec = annotations.record_feedback(settings.log_path, cid, turn, data["rating"],
                                              by="visitor", source=source)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except OSError:
            return JSONResponse({"error": "feedback could not be saved just now"}, status_code=503)
        return JSONResponse({"ok": True, "rating": rec["rating"]})

    try:
        from chatcore.space.widget import routes as widget_routes
    except ImportError:
        widget_routes = None
    if widget_routes is not None:
        widget_routes.register(app, settings)

    from chatcore.space import staff_routes

    staff_routes.register(app, settings, service)

    demo = build_demo(service)
    from gradio.utils import get_upload_folder, is_in_or_equal

    folder = str(log_folder(settings.log_path).resolve())
    blocked = [] if is_in_or_equal(get_upload_folder(), folder) else [folder]
    app = gr.mount_gradio_app(app, demo, path="/", server_name=settings.host, server_port=settings.port,
                              max_file_size=settings.max_upload_bytes, blocked_paths=blocked)
    # Mounted (not launched) Blocks skip Gradio's "was not uploaded by a user" check on inputs;
    # the app is served, so say so. The guard below checks ownership of every file as well.
    demo.has_launched = True
    queue = demo._queue
    inflight = InFlight(settings.client_concurrency, lambda event_id: event_id in queue.event_ids_to_events)
    app.add_middleware(
        SpaceGuard, address=service.address, uploads=service.uploads, inflight=inflight,
        max_files=settings.max_files, max_upload_bytes=settings.max_upload_bytes,
        event_cap=event_body_cap(settings.max_message_bytes), static_allowed=_static_allowed,
    )
    # Outermost, so refusals from the guard carry CORS headers too (the widget can read them).
    origins = settings.allowed_origins
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[] if "*" in origins else origins,
        allow_origin_regex=".*" if "*" in origins else r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?",
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
        allow_credentials=False,
    )
    app.state.chat_service = service
    app.state.inflight = inflight
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
    grace = settings.shutdown_grace
    # proxy_headers=False: uvicorn would otherwise take X-Forwarded-For from any loopback peer as
    # the client; the guard decides who the client is (CHAT_TRUSTED_PROXIES).
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning",
                timeout_graceful_shutdown=grace, proxy_headers=False)

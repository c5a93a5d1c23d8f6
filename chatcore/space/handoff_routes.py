"""The hand-off routes on the Space's FastAPI app (see :mod:`chatcore.space.handoff` for what they do)."""
from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from chatcore.log import records
from chatcore.log.ids import SHOWN_CANDIDATES, AmbiguousConversation
from chatcore.space.handoff import (MAX_STAFF_TEXT, REQUEST_ID, ConversationState, Handoff, HandoffConfig,
                                    check_staff_name)
from chatcore.log.writer import LogWriter


def _state_json(st: ConversationState, config: HandoffConfig) -> dict:
    return {"status": st.status, "staff": st.staff,
            "waiting_since": datetime.utcfromtimestamp(st.requested_at).isoformat() + "Z"
            if st.status == "waiting" and st.requested_at else None}


def register(app, settings, service) -> Handoff:
    from chatcore.space.guard import RateLimit
    from chatcore.config import OPERATOR_TOKEN_HEADER

    config = HandoffConfig.from_env()
    # Its own writer (the Space's counts turns) on the same shard, daily shards included.
    writer = LogWriter(settings.current_shard_path(),
                       path_for=settings.current_shard_path if settings.rotate == "daily" else None)
    handoff = Handoff(config, service, writer)
    service.handoff = handoff
    request_limit = RateLimit(max(10, settings.feedback_per_minute), name="handoff-request")
    channels: dict[str, int] = {}  # open channels per client address
    channel_cap = max(1, settings.client_concurrency)

    def error(message: str, code: int, **extra) -> JSONResponse:
        return JSONResponse({"error": message, **extra}, status_code=code)

    async def body_of(request: Request) -> dict:
        raw = await request.body()
        if len(raw) > 16 * 1024:
            raise ValueError("request too large")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise ValueError("the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ValueError("send a JSON object")
        records.check_conversation_id(data.get("conversation_id"))
        return data

    def staff_refused(request: Request) -> JSONResponse | None:
        if not service.is_staff(request.headers):
            return error(f"staff only: send the {OPERATOR_TOKEN_HEADER} header", 403)
        return None

    def unknown_id(exc: LookupError) -> JSONResponse:
        if isinstance(exc, AmbiguousConversation):
            return error(str(exc), 400, candidates=exc.candidates[:SHOWN_CANDIDATES])
        return error(str(exc), 404)

    def cid_param(request: Request) -> str:
        return records.check_conversation_id(request.query_params.get("conversation_id"))

    @app.post("/handoff/request", include_in_schema=False)
    async def request_person(request: Request):
        if not request_limit.allow(service.address.of_request(request)):
            return error("too many requests: try again in a minute", 429)
        try:
            data = await body_of(request)
        except ValueError as exc:
            return error(str(exc), 400)
        cid = data["conversation_id"]
        # only a conversation that has chatted may ask (else anyone could fill the log and Live)
        if not await asyncio.to_thread(service.conversations.exists, cid):
            return error("no such conversation: send a message first", 404)
        st = await asyncio.to_thread(handoff.requested, cid)
        return JSONResponse({"ok": True, **_state_json(st, config)})

    async def staff_action(request: Request, action: str):
        refused = staff_refused(request)
        if refused:
            return refused
        try:
            data = await body_of(request)
            staff = check_staff_name(data.get("staff"))
            text = request_id = None
            if action == "say":
                request_id = data.get("request_id")
                if request_id is not None and not (isinstance(request_id, str) and REQUEST_ID.fullmatch(request_id)):
                    raise ValueError("request_id must be 8-64 letters, digits, - or _")
                text = data.get("text")
                if not isinstance(text, str) or not text.strip():
                    raise ValueError("text must be a non-empty string")
                text = records.clean_text(text)
                if len(text) > MAX_STAFF_TEXT:
                    raise ValueError(f"text is longer than {MAX_STAFF_TEXT} characters")
        except ValueError as exc:
            return error(str(exc), 400)
        try:
            cid = await asyncio.to_thread(service.conversations.resolve, data["conversation_id"])
        except LookupError as exc:
            return unknown_id(exc)
        if action == "take":
            ok, st = await asyncio.to_thread(handoff.take, cid, staff)
        elif action == "say":
            ok, st = await asyncio.to_thread(handoff.say, cid, staff, text, request_id)
        elif action == "resolve":
            ok, st = await asyncio.to_thread(handoff.resolve, cid, staff)
        else:
            ok, st = await asyncio.to_thread(handoff.handback, cid, staff)
        if not ok:
            if st.status == "staff":
                return error(f"{st.staff} has this conversation", 409, held_by=st.staff,
                             **_state_json(st, config))
            return error("you do not have this conversation: take it over first", 409,
                         **_state_json(st, config))
        return JSONResponse({"ok": True, "conversation_id": cid, **_state_json(st, config)})

    @app.post("/handoff/take", include_in_schema=False)
    async def take(request: Request):
        return await staff_action(request, "take")

    @app.post("/handoff/say", include_in_schema=False)
    async def say(request: Request):
        return await staff_action(request, "say")

    @app.post("/handoff/handback", include_in_schema=False)
    async def handback(request: Request):
        return await staff_action(request, "handback")

    @app.post("/handoff/resolve", include_in_schema=False)
    async def resolve(request: Request):
        return await staff_action(request, "resolve")

    @app.get("/handoff/state", include_in_schema=False)
    def state(request: Request):
        refused = staff_refused(request)
        if refused:
            return refused
        try:
            cid = service.conversations.resolve(cid_param(request))
        except ValueError as exc:
            return error(str(exc), 400)
        except LookupError as exc:
            return unknown_id(exc)
        st = handoff.state(cid)
        return JSONResponse({"conversation_id": cid, **_state_json(st, config), "events": st.events})

    @app.get("/handoff/poll", include_in_schema=False)
    def poll(request: Request):
        try:
            cid = cid_param(request)
        except ValueError as exc:
            return error(str(exc), 400)
        return JSONResponse({"events": handoff.public_events(cid),
                             "status": handoff.state(cid).status},
                            headers={"Cache-Control": "no-store"})

    @app.get("/handoff/events", include_in_schema=False)
    async def events(request: Request):
        try:
            cid = cid_param(request)
        except ValueError as exc:
            return error(str(exc), 400)

        addr = service.address.of_request(request)
        if channels.get(addr, 0) >= channel_cap:
            return error("too many open channels from this address", 429)
        channels[addr] = channels.get(addr, 0) + 1

        released = []

        def release():  # once: from the stream's end, or after the response when it never started
            if released:
                return
            released.append(True)
            left = channels.get(addr, 1) - 1
            if left > 0:
                channels[addr] = left
            else:
                channels.pop(addr, None)

        async def stream():
            try:
                async for chunk in events_of():
                    yield chunk
            finally:
                release()

        async def events_of():
            sent: set[str] = set()
            seen_version = -1
            last_beat = time.monotonic()
            yield "retry: 1000\n\n"
            while True:
                if handoff.version != seen_version:
                    seen_version = handoff.version
                    for e in handoff.public_events(cid):
                        if e["id"] in sent:
                            continue
                        sent.add(e["id"])
                        yield f"event: handoff\nid: {e['id']}\ndata: {json.dumps(e)}\n\n"
                if time.monotonic() - last_beat > 15:
                    last_beat = time.monotonic()
                    yield ": keep-alive\n\n"
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.05)

        from starlette.background import BackgroundTask

        return StreamingResponse(stream(), media_type="text/event-stream", background=BackgroundTask(release),
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    handoff.start()
    return handoff

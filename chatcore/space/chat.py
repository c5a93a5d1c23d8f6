"""The chat service: checks a turn, asks the responder, streams the reply, logs the turn.

See :mod:`chatcore.space.app` for the public contract of ``/chat``.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from typing import Any, Iterator

import gradio as gr

from chatcore.log import annotations
from chatcore.log import records
from chatcore.log.pii import mask_pii
from chatcore.llm import costs, prompts
from chatcore.llm.responders import Responder, ResponderError, TurnReport
from chatcore.space.guard import SESSION_PATTERN, ClientAddress, Uploads
from chatcore.config import OPERATOR_TOKEN_HEADER, Settings, token_matches
from chatcore.log.writer import LogWriter
from chatcore.space.memory import ConversationMemory

log = logging.getLogger("chatcore.space.chat")

FAILED_REPLY = "Sorry, the assistant could not answer just now. Please try again in a moment."


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


class ChatService:
    """Validates a turn, streams the responder's reply and logs the turn once."""

    def __init__(self, settings: Settings, responder: Responder, writer: LogWriter,
                 operator_token: str | None = None):
        self.settings = settings
        self.responder = responder
        self.writer = writer
        self.operator_token = operator_token
        self.conversations = ConversationMemory(max_bytes=settings.context_mb * 1024 * 1024,
                                           log_path=settings.shard_path)
        self.address = ClientAddress(settings.trusted_proxies)
        self.uploads = Uploads()
        self._session_ids: OrderedDict[str, str] = OrderedDict()
        self.generated_ids = 0
        self.responder_errors = 0
        self.refused_staff = 0
        self._lock = threading.Lock()
        #: :class:`chatcore.space.handoff.Handoff` once registered: staff takeover of conversations.
        self.handoff = None
        self.prices = costs.prices_from_env()
        #: The live prompt's version (CHAT_PROMPT_VERSION, else a hash of the responder's system prompt).
        self.prompt_version = prompts.prompt_version(responder.system_prompt,
                                                     Settings.from_env().prompt_version)
        self.refused_drafts = 0
        #: Each bot turn as an OpenTelemetry span (CHAT_OTLP_ENDPOINT), else None.
        self.tracer = None
        if Settings.from_env().otlp_endpoint:
            from chatcore.llm.traces import TurnTracer

            self.tracer = TurnTracer.from_env()

    def is_staff(self, headers: Any) -> bool:
        try:
            given = headers.get(OPERATOR_TOKEN_HEADER.lower()) or headers.get(OPERATOR_TOKEN_HEADER)
        except AttributeError:
            return False
        return token_matches(given, self.operator_token)

    def validate(self, message: Any, conversation_id: Any, source: Any,
                 request: Any = None) -> tuple[str, list, str | None, str]:
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
        if len(files) > self.settings.max_files:
            raise gr.Error(f"Too many files: a message may carry at most {self.settings.max_files}.")
        text = records.clean_text(text)
        if len(text.encode("utf-8")) > self.settings.max_message_bytes:
            raise gr.Error(
                f"Message is too long: the limit is {self.settings.max_message_bytes // 1024} KB. "
                "Please shorten it."
            )
        owner = self.address.of_request(request) if request is not None else None
        for f in files:
            path = f if isinstance(f, str) else (f.get("path") if isinstance(f, dict) else None)
            if not self.uploads.owned_by(path, owner):
                raise gr.Error("A file in this message was not uploaded by you through this Space: "
                               "upload it first and send the path the upload returned.")
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
        if not isinstance(source, str) or not records.SOURCE_PATTERN.fullmatch(source):
            raise gr.Error("Invalid source: use a short word such as widget, operator or api.")
        if source.lower() in records.STAFF_SOURCES and not self.is_staff(getattr(request, "headers", None)):
            self.refused_staff += 1
            raise gr.Error(f"source {source!r} is for staff: send the {OPERATOR_TOKEN_HEADER} header.")
        return text, files, conversation_id, source

    def draft_of(self, request: Any) -> str | None:
        """The draft system prompt a staff request carries (None when there is none).
        Refused (gr.Error) without the staff token: a visitor must never steer the model's
        instructions."""
        headers = getattr(request, "headers", None)
        try:
            value = headers.get(prompts.DRAFT_HEADER.lower()) if headers is not None else None
        except AttributeError:
            value = None
        if not value:
            return None
        if not self.is_staff(headers):
            self.refused_drafts += 1
            raise gr.Error(f"A draft system prompt is for staff: send the {OPERATOR_TOKEN_HEADER} header.")
        if self.responder.reply is None:
            raise gr.Error(f"The {self.responder.name} responder takes no system prompt: "
                           "start the Space with the openai or hf responder to try a draft.")
        try:
            return prompts.decode_draft(value)
        except ValueError as exc:
            raise gr.Error(str(exc)) from None

    @staticmethod
    def describe_files(files: list) -> list[dict]:
        """Name and size of each (already checked) upload, for the log."""
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
            if not isinstance(name, str):
                name = os.path.basename(path)
            name = records.clean_text(os.path.basename(name))[: records.MAX_FILE_NAME]
            described.append({"name": name, "size": size})
        return described

    def _id_for_session(self, session: str | None) -> str:
        """A caller that sends no id (the Space's own page) gets one per Gradio session,
        kept until the chat is cleared (:meth:`forget_session`)."""
        with self._lock:
            cid = self._session_ids.get(session) if session else None
            if cid is None:
                cid = records.new_conversation_id()
                self.generated_ids += 1
                log.info("no conversation_id sent: generated %s", cid)
                if session:
                    self._session_ids[session] = cid
                    while len(self._session_ids) > 10_000:
                        self._session_ids.popitem(last=False)
            return cid

    def forget_session(self, session: str | None) -> None:
        """The page's chat was cleared: its next message starts a new conversation."""
        if session:
            with self._lock:
                self._session_ids.pop(session, None)

    def chat(self, message, history, conversation_id=None, source=None, request: gr.Request = None) -> Iterator[str]:
        text, files, conversation_id, source = self.validate(message, conversation_id, source, request)
        draft = self.draft_of(request)
        session = getattr(request, "session_hash", None)
        if not (isinstance(session, str) and SESSION_PATTERN.fullmatch(session)):
            session = None
        position = None
        if conversation_id is None:
            conversation_id = self._id_for_session(session)
            # The page's history says which turn this is: fewer user messages than turns
            # served means a Retry (or a message sent after Undo) replacing that turn.
            position = sum(1 for m in normalise_history(history) if m["role"] == "user")
        notice = None
        handoff = self.handoff
        if handoff is not None:
            action, notice = handoff.intercept(conversation_id, text, source)
            if action == "held":  # staff hold this conversation: no bot answer
                yield ""
                return
        turn, context, replaces = self.conversations.start_turn(conversation_id, position)
        started = time.perf_counter()
        reply, error = "", None
        done = False
        report = TurnReport()
        # The model asked for a person (request_human): as the widget's button does. Staff
        # trying the bot (operator, replay) are not handed to themselves.
        model_handoff = False
        try:
            try:
                pieces = iter([notice]) if notice is not None else \
                    self.responder.answer(text, context, report, system=draft)
                for piece in pieces:
                    reply += piece
                    yield reply
                if report.wants_human and handoff is not None and \
                        source.lower() not in records.STAFF_SOURCES:
                    model_handoff = True
                    reply += ("\n\n" if reply else "") + handoff.config.notice
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
                self.conversations.remember(conversation_id, turn, text, records.clean_text(reply))
            done = True
        finally:
            if not done and error is None:
                error = "cancelled before the reply completed"
            logged_text, logged_reply = text, records.clean_text(reply)
            if self.settings.redact_pii:
                logged_text, logged_reply = mask_pii(logged_text), mask_pii(logged_reply)
            model = self.responder.model if notice is None else None
            version = None
            if notice is None:
                version = prompts.draft_version(draft) if draft is not None else self.prompt_version
            record = records.make_record(
                conversation_id=conversation_id,
                turn=turn,
                user_text=logged_text,
                response=logged_reply,
                latency_ms=(time.perf_counter() - started) * 1000,
                source=source,
                backend=self.responder.name if notice is None else "handoff",
                model=model,
                error=error,
                files=self.describe_files(files),
                session=session,
                retry_of=turn if replaces else None,
                usage=report.usage.as_log() if report.usage is not None else None,
                cost_usd=costs.cost_usd(self.prices, model, report.usage),
                prompt_version=version,
            )
            self.writer.append(record)
            if self.tracer is not None and notice is None:
                self.tracer.turn(record)
            # a replay that asks for a person hands off as a visitor would, but pages nobody
            if notice is not None and done and source.lower() != "replay":
                handoff.requested(conversation_id, turn + 1, via="chat")
            elif model_handoff and done:
                handoff.requested(conversation_id, turn + 1, via="model")

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
        if turn < 0 or not self.conversations.knows_turn(cid, turn):
            return False
        rating = "up" if liked is True or liked == "like" else "down"
        try:
            annotations.record_feedback(self.settings.log_path, cid, turn, rating, by="visitor", source="space")
        except (OSError, ValueError) as exc:
            log.warning("could not save feedback: %s", exc)
            return False
        return True

    def health(self, staff: bool = False) -> dict:
        w = self.writer
        public = {
            "status": "ok" if w.last_ok else "degraded",
            "turns_logged": w.written,
            "write_errors": w.errors,
            "responder_errors": self.responder_errors,
            "generated_conversation_ids": self.generated_ids,
        }
        if self.tracer is not None:
            public["trace_export_errors"] = self.tracer.health()["failed"]
        if not staff:
            return public
        return {
            **public,
            "log_path": os.path.abspath(w.path),
            "log_dir": os.path.dirname(os.path.abspath(w.path)),
            "responder": self.responder.name,
            "model": self.responder.model,
            "last_write_error": w.last_error,
            "last_error": w.last_error,
            "max_message_bytes": self.settings.max_message_bytes,
            "max_files": self.settings.max_files,
            "max_upload_bytes": self.settings.max_upload_bytes,
            "concurrency": self.settings.concurrency,
            "client_concurrency": self.settings.client_concurrency,
            "redact_pii": self.settings.redact_pii,
            "context_bytes": self.conversations.bytes,
            "refused_staff_sources": self.refused_staff,
            "refused_drafts": self.refused_drafts,
            "prompt_version": self.prompt_version,
            "traces": self.tracer.health() if self.tracer is not None else None,
        }



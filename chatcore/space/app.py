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

from chatcore.log import annotations
from chatcore.log import records
from chatcore.log.follow import LogTail
from chatcore.log.forgotten import ForgottenRegistry, ids_in
from chatcore.log.ids import resolve_conversation_id
from chatcore.log.pii import mask_pii
from chatcore.llm import costs, prompts
from chatcore.llm.responders import Responder, ResponderError, TurnReport, make_responder
from chatcore.space.guard import (SESSION_PATTERN, ClientAddress, InFlight, RateLimit, SpaceGuard, Uploads,
                    event_body_cap)
from chatcore.config import (OPERATOR_TOKEN_HEADER, Settings, ensure_operator_token, log_folder,
                       token_matches)
from chatcore.log.writer import LogWriter

log = logging.getLogger("chatcore.space.app")

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


class _Conversation:
    __slots__ = ("next_turn", "turns", "size")

    def __init__(self) -> None:
        self.next_turn = 0
        #: turn number -> (user_text, reply); None while cold (known only from the log).
        self.turns: dict[int, tuple[str, str]] | None = None
        self.size = 0


def _text_size(user: str, reply: str) -> int:
    return len(user.encode("utf-8", "replace")) + len(reply.encode("utf-8", "replace")) + 64


class Conversations:
    """Per-conversation state the Space keeps in memory: next turn number and recent turns.

    The conversation_id is the identity, not the Gradio session: a widget that
    reloads (new session, same id) continues its count and its context, and an
    operator who switches ids in one session does not leak history across them.

    Context is the id's own turns only: kept in memory while the conversation is hot,
    rebuilt from the log (every ``*.jsonl`` in the log folder, so shards of other replicas
    too) when it is not. New lines other processes append to the folder are followed, so
    replicas sharing a folder agree on turn numbers and context. Bounded: at most
    ``limit`` conversations and ``max_bytes`` of remembered text; the least recently used
    go cold first.
    """

    def __init__(self, limit: int = 200_000, max_messages: int = 40, max_bytes: int = 256 * 1024 * 1024,
                 log_path: Path | None = None):
        self._state: OrderedDict[str, _Conversation] = OrderedDict()
        self._lock = threading.Lock()
        self._limit = limit
        self._max_turns = max(1, max_messages // 2)
        self.max_bytes = max_bytes
        self.bytes = 0
        self._forgot = False  # some conversation was dropped entirely: unknown ids may be in the log
        self.log_path = Path(log_path) if log_path else None
        #: The log folder's follower (from the end of what :meth:`seed_from_log` read).
        self._tail: LogTail | None = None
        self._follow_lock = threading.Lock()
        #: Called with each event line (schema v2) found in the folder, in order.
        self.on_event = None
        #: ``weave(cid, [(turn, user, reply)], turn) -> context``: events placed among the turns.
        self.weave = None
        #: Called with the hashes of conversations just forgotten (after this object dropped them).
        self.on_forget = None
        self._registry: ForgottenRegistry | None = None

    # -- memory --------------------------------------------------------------------------

    def _get(self, cid: str) -> _Conversation:
        state = self._state.pop(cid, None)
        if state is None:
            state = _Conversation()
            while len(self._state) >= self._limit:
                _, old = self._state.popitem(last=False)
                self.bytes -= old.size
                self._forgot = True
        self._state[cid] = state
        return state

    def _put_turn(self, state: _Conversation, turn: int, user: str, reply: str) -> None:
        if state.turns is None:
            return
        old = state.turns.get(turn)
        if old is not None:
            size = _text_size(*old)
            state.size -= size
            self.bytes -= size
        state.turns[turn] = (user, reply)
        size = _text_size(user, reply)
        state.size += size
        self.bytes += size
        while len(state.turns) > self._max_turns:
            first = min(state.turns)
            size = _text_size(*state.turns.pop(first))
            state.size -= size
            self.bytes -= size

    def _shrink(self) -> None:
        """Make least recently used conversations cold until the text fits in ``max_bytes``."""
        if self.bytes <= self.max_bytes:
            return
        for state in self._state.values():
            if self.bytes <= self.max_bytes:
                break
            if state.turns:
                self.bytes -= state.size
                state.size = 0
                state.turns = None

    def seed(self, conversation_id: str, turn: int) -> None:
        with self._lock:
            state = self._get(conversation_id)
            state.next_turn = max(state.next_turn, turn + 1)

    def observe(self, conversation_id: str, turn: int, user: str, reply: str, ok: bool) -> None:
        """A turn found in the log (this process's or another's)."""
        with self._lock:
            state = self._state.get(conversation_id)
            if state is None:
                state = self._get(conversation_id)
            state.next_turn = max(state.next_turn, turn + 1)
            if ok:
                self._put_turn(state, turn, user, reply)
            self._shrink()

    def start_turn(self, conversation_id: str, turn: int | None = None) -> tuple[int, list[dict], bool]:
        """Reserve a turn; return (turn, context messages, replaces an existing turn).

        ``turn`` is given by the Space's own page (the number of user messages its history
        holds): a Retry, or a message sent after Undo, takes the place of that turn.
        """
        self.follow()
        with self._lock:
            known = conversation_id in self._state
            state = self._get(conversation_id)
            # Known but cold (seeded from the log, or squeezed out by CHAT_CONTEXT_MB): rebuild.
            # Unknown: new, since the folder is followed — unless some id was forgotten entirely.
            cold = (state.turns is None and known) or (not known and self._forgot)
            if not cold and state.turns is None:
                state.turns = {}
        if cold:
            self._rebuild(conversation_id)
        with self._lock:
            state = self._get(conversation_id)
            if state.turns is None:
                state.turns = {}
            if turn is None or turn >= state.next_turn:
                turn = state.next_turn
                replaces = False
            else:
                replaces = True
            state.next_turn = max(state.next_turn, turn + 1)
            earlier = sorted(t for t in state.turns if t < turn)[-self._max_turns:]
            pairs = [(t, *state.turns[t]) for t in earlier]
        if self.weave is not None:
            return turn, self.weave(conversation_id, pairs, turn), replaces
        context = []
        for _, user, reply in pairs:
            context += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        return turn, context, replaces

    def remember(self, conversation_id: str, turn: int, user_text: str, reply: str) -> None:
        with self._lock:
            state = self._state.get(conversation_id)
            if state is None or state.turns is None:
                return
            self._put_turn(state, turn, user_text, reply)
            self._shrink()

    def knows_turn(self, conversation_id: str, turn: int) -> bool:
        """Has the Space served (or logged) this turn of this conversation?"""
        self.follow()
        with self._lock:
            state = self._state.get(conversation_id)
            if state is not None:
                return 0 <= turn < state.next_turn
            forgot = self._forgot
        if not forgot:
            return False
        self._rebuild(conversation_id)
        with self._lock:
            state = self._state.get(conversation_id)
            return state is not None and 0 <= turn < state.next_turn

    # -- the log -------------------------------------------------------------------------

    def _shards(self) -> list[Path]:
        if self.log_path is None:
            return []
        folder = self.log_path if self.log_path.is_dir() else self.log_path.parent
        try:
            return sorted(p for p in folder.glob("*.jsonl") if p.is_file())
        except OSError:
            return []

    @staticmethod
    def _lines(raw: bytes, on_event=None):
        """Turn lines of ``raw``; event lines (schema v2) go to ``on_event`` instead."""
        for obj in records.conversation_objects(raw):
            if records.is_event(obj):
                if on_event is not None:
                    on_event(obj)
                continue
            yield obj

    @staticmethod
    def _turn_of(obj: dict, counts: dict[str, int]) -> int | None:
        cid = obj["conversation_id"]
        turn = obj.get("turn")
        if turn is None:  # the older shape: no turn numbers, lines in order
            turn = counts.get(cid, 0)
        if isinstance(turn, bool) or not isinstance(turn, int) or not 0 <= turn < 2**31:
            return None
        counts[cid] = max(counts.get(cid, 0), turn + 1)
        return turn

    @staticmethod
    def _texts(obj: dict) -> tuple[str, str]:
        user, reply = obj.get("user_text"), obj.get("response")
        if isinstance(reply, list):
            reply = "\n".join(x for x in reply if isinstance(x, str))
        return (user if isinstance(user, str) else "", reply if isinstance(reply, str) else "")

    def seed_from_log(self) -> int:
        """Read turn numbers of every conversation in the log folder, then follow it from
        there; returns lines read."""
        counts: dict[str, int] = {}
        lines = 0
        resume: dict[str, list[int]] = {}
        with self._follow_lock:
            for shard in self._shards():
                done = 0
                try:
                    with open(shard, "rb") as f:
                        st = os.fstat(f.fileno())
                        rest = b""
                        while True:
                            block = f.read(8 * 1024 * 1024)
                            if not block:
                                break
                            block = rest + block
                            end = block.rfind(b"\n") + 1
                            rest = block[end:]
                            done += end
                            for obj in self._lines(block[:end], self.on_event):
                                lines += 1
                                self._turn_of(obj, counts)
                    resume[shard.name] = [st.st_dev, st.st_ino, done]
                except OSError as exc:
                    log.warning("could not read %s to continue turn numbers: %s", shard.name, exc)
            self._start_tail(resume)
        with self._lock:
            for cid, n in counts.items():
                state = self._get(cid)
                state.next_turn = max(state.next_turn, n)
        return lines

    def _start_tail(self, resume: dict[str, list[int]]) -> None:
        if self.log_path is None or self._tail is not None:
            return
        folder = self.log_path if self.log_path.is_dir() else self.log_path.parent
        # every line of the folder, any replica's, turns and events alike, as decoded objects;
        # shards the seed read continue where it stopped, new ones are read from their start
        self._tail = LogTail(folder, parse=_conversation_object, resume=resume, from_start=True).start()

    def stop(self) -> None:
        if self._tail is not None:
            self._tail.stop()

    def drop_forgotten(self) -> list[str]:
        """Drop what is held of conversations ``forget`` or ``retention`` removed since the
        last look (context, turn counter; then ``on_forget``): the id starts afresh."""
        if self.log_path is None:
            return []
        if self._registry is None:
            self._registry = ForgottenRegistry(self.log_path)
            self._registry.refresh()  # forgotten before this Space started: nothing held yet
            return []
        gone = self._registry.refresh()
        if not gone:
            return []
        with self._lock:
            dropped = ids_in(list(self._state), gone)
            for cid in dropped:
                self.bytes -= self._state.pop(cid).size
        if self.on_forget is not None:
            self.on_forget(gone)
        return dropped

    def exists(self, conversation_id: str) -> bool:
        """Has this conversation a line in the log (any process's)?"""
        self.follow()
        with self._lock:
            if conversation_id in self._state:
                return True
            forgot = self._forgot
        if not forgot:
            return False
        self._rebuild(conversation_id)
        with self._lock:
            st = self._state.get(conversation_id)
            if st is not None and st.next_turn == 0 and not st.turns:
                del self._state[conversation_id]  # the search found nothing: hold no empty entry
                return False
            return st is not None

    def ids_starting_with(self, prefix: str) -> list[str]:
        """Known ids starting with ``prefix`` (any case), for :func:`chatcore.log.ids.resolve_conversation_id`."""
        self.follow()
        folded = prefix.casefold()
        with self._lock:
            found = [cid for cid in self._state if cid.casefold().startswith(folded)]
        if not found and self.exists(prefix):
            found = [prefix]
        return found

    def resolve(self, text) -> str:
        """The full id a staff member means by ``text`` (see :mod:`chatcore.log.ids`)."""
        return resolve_conversation_id(text, self.ids_starting_with)

    def follow(self) -> None:
        """Apply lines appended to the log folder since the last look (any process's)."""
        if self.log_path is None:
            return
        self.drop_forgotten()
        with self._follow_lock:
            if self._tail is None:
                self._start_tail({})
            self._tail.poll()
            for obj in self._tail.drain():
                if records.is_event(obj):
                    if self.on_event is not None:
                        self.on_event(obj)
                    continue
                turn = obj.get("turn")
                if isinstance(turn, bool) or not isinstance(turn, int) or not 0 <= turn < 2**31:
                    continue
                user, reply = self._texts(obj)
                self.observe(obj["conversation_id"], turn, user, reply, obj.get("error") is None)

    def _rebuild(self, cid: str) -> None:
        """Load ``cid``'s turns from the log folder (the part already followed)."""
        import mmap

        needle = b'"' + cid.encode("ascii") + b'"'
        found: dict[int, tuple[str, str]] = {}
        next_turn = 0
        with self._follow_lock:
            done = self._tail.positions() if self._tail is not None else {}
            shards = [(p, done[p.name][2] if p.name in done else 0) for p in self._shards()]
        for shard, end in shards:
            if end <= 0:
                continue
            counts: dict[str, int] = {}
            try:
                with open(shard, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                    pos = m.find(needle, 0, end)
                    while pos != -1:
                        line_start = m.rfind(b"\n", 0, pos) + 1
                        line_end = m.find(b"\n", pos, end)
                        if line_end == -1:
                            break
                        for obj in self._lines(m[line_start:line_end]):
                            if obj["conversation_id"] != cid:
                                continue
                            turn = self._turn_of(obj, counts)
                            if turn is None:
                                continue
                            next_turn = max(next_turn, turn + 1)
                            if obj.get("error") is None:
                                found[turn] = self._texts(obj)
                        pos = m.find(needle, line_end, end)
            except (OSError, ValueError):
                continue
        with self._lock:
            state = self._get(cid)
            state.next_turn = max(state.next_turn, next_turn)
            if state.turns is None:
                state.turns = {}
            for turn in sorted(found):
                if turn not in state.turns:
                    self._put_turn(state, turn, *found[turn])
            self._shrink()


def _conversation_object(line: bytes) -> dict:
    """One line of the folder as the follower hands it to :class:`Conversations`."""
    for obj in records.conversation_objects(line):
        return obj
    raise records.BadRecord("json", "not a conversation line")


def seed_turns(counter: Conversations, log_path: Path | None = None) -> int:
    """Read (conversation_id, turn) from the log folder; returns lines read."""
    if log_path is not None and counter.log_path is None:
        counter.log_path = Path(log_path)
    try:
        return counter.seed_from_log()
    except Exception as exc:  # a broken log must never stop the Space from starting
        log.warning("could not read the existing log to continue turn numbers: %s", exc)
        return 0


# ---------------------------------------------------------------------------- the chat


class ChatService:
    """Validates a turn, streams the responder's reply and logs the turn once."""

    def __init__(self, settings: Settings, responder: Responder, writer: LogWriter,
                 operator_token: str | None = None):
        self.settings = settings
        self.responder = responder
        self.writer = writer
        self.operator_token = operator_token
        self.conversations = Conversations(max_bytes=settings.context_mb * 1024 * 1024,
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
                                                     os.environ.get("CHAT_PROMPT_VERSION"))
        self.refused_drafts = 0
        #: Each bot turn as an OpenTelemetry span (CHAT_OTLP_ENDPOINT), else None.
        self.tracer = None
        if os.environ.get("CHAT_OTLP_ENDPOINT", "").strip():
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
    from chatcore.space import handoff

    handoff.register(app, settings, service)  # before seeding: it reads the log's events too
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
    grace = float(os.environ.get("CHAT_SHUTDOWN_GRACE", "5"))
    # proxy_headers=False: uvicorn would otherwise take X-Forwarded-For from any loopback peer as
    # the client; the guard decides who the client is (CHAT_TRUSTED_PROXIES).
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning",
                timeout_graceful_shutdown=grace, proxy_headers=False)

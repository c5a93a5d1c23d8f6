"""Staff step in: a person takes a conversation over from the bot, and gives it back.

Everything is a line of the log (schema v2 events, see :mod:`chatcore.log.records`), and the
state of each conversation (``bot``, ``waiting`` for a person, ``staff`` held by someone)
is derived from those lines only. So it survives a restart of the Space and is the same
on every replica that shares the log folder: each Space follows the folder's shards
(:meth:`chatcore.space.memory.ConversationMemory.follow`) and applies the events it finds.

This module is the state machine; its routes are in :mod:`chatcore.space.handoff_routes`, and the
staff's views of the hand-offs in the log in :mod:`chatcore.staff.inbox` and
:mod:`chatcore.staff.handoff_log`.

Routes (on the Space's FastAPI app):

* ``POST /handoff/request``  ``{conversation_id}``: the visitor asks for a person (the
  widget's "Talk to a person" control). Anonymous; the id must be a valid one.
* ``GET  /handoff/events?conversation_id=ID``: the visitor's own channel, Server-Sent
  Events (``event: handoff``, ``data: {id, kind, text, staff, ts, status}``). Every event of
  that conversation is sent on connect, then each new one as it reaches the log; the
  client ignores ids it has seen. One conversation per channel: the id is required and
  checked; there is no wildcard. ``GET /handoff/poll?conversation_id=ID`` returns the
  same events as JSON (the widget's fallback when EventSource is not available).
* Staff only (``X-Chat-Operator-Token``): ``POST /handoff/take`` ``{conversation_id, staff}``,
  ``POST /handoff/say`` ``{conversation_id, staff, text, request_id?}`` (a message sent again
  with the same ``request_id`` is logged once), ``POST /handoff/handback``
  ``{conversation_id, staff}``, ``GET /handoff/state?conversation_id=ID``. A conversation
  held by someone else is refused with 409 naming the holder.

While staff hold a conversation, the Space sends none of the visitor's messages to the
bot: ``/chat`` answers with an empty reply and logs a ``visitor_message`` event. While a
visitor waits for a person the bot answers as usual, unless ``CHAT_HANDOFF_BOT_WHILE_WAITING``
is off: then their messages are held for the person in the same way. After the
hand-back the bot's context holds the whole transcript, staff messages included
(:meth:`Handoff.weave`). A request nobody takes within ``CHAT_HANDOFF_TIMEOUT`` seconds
ends with ``CHAT_HANDOFF_FALLBACK`` shown to the visitor, and the bot carries on.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any


from chatcore.config.settings import (DEFAULT_HANDOFF_FALLBACK, DEFAULT_HANDOFF_NOTICE, DEFAULT_HANDOFF_PHRASES,
                                      Settings)
from chatcore.log import records
from chatcore.log.forgotten import ids_in
from chatcore.log.pii import mask_pii
from chatcore.log.writer import LogWriter

log = logging.getLogger("chatcore.space.handoff")

DEFAULT_PHRASES = DEFAULT_HANDOFF_PHRASES
DEFAULT_NOTICE = DEFAULT_HANDOFF_NOTICE
DEFAULT_FALLBACK = DEFAULT_HANDOFF_FALLBACK
STAFF_NAME = re.compile(r"^[\w .'@-]{1,64}\Z")
MAX_STAFF_TEXT = 8000
MAX_EVENTS = 200  # per conversation, kept in memory for the channel and the bot's context
MAX_CONVERSATIONS = 100_000  # with events in memory; the oldest back with the bot are forgotten first


#: A staff client's id for one message it sends (the same id sent twice is one message).
REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}\Z")


@dataclass(frozen=True)
class HandoffConfig:
    #: Seconds a request for a person may wait before the fallback (CHAT_HANDOFF_TIMEOUT).
    timeout: float = 300.0
    #: Phrases (lower case, matched within the message) that ask for a person (CHAT_HANDOFF_PHRASES).
    phrases: tuple[str, ...] = DEFAULT_PHRASES
    #: What the visitor is told when a person was asked for (CHAT_HANDOFF_NOTICE).
    notice: str = DEFAULT_NOTICE
    #: What the visitor is told when nobody took it in time (CHAT_HANDOFF_FALLBACK).
    fallback: str = DEFAULT_FALLBACK
    #: The name visitors see for any staff member; empty: the staff member's own (CHAT_STAFF_DISPLAY_NAME).
    display_name: str = ""
    #: Does the bot answer while a visitor waits for a person (CHAT_HANDOFF_BOT_WHILE_WAITING)?
    #: ``True`` (the default): the visitor is never left without an answer, and the request stays
    #: open until someone takes it or it times out. ``False``: the visitor's messages wait for the
    #: person (logged as ``visitor_message``), the bot is silent.
    bot_while_waiting: bool = True

    @classmethod
    def from_env(cls) -> "HandoffConfig":
        settings = Settings.from_env()
        return cls(
            timeout=settings.handoff_timeout,
            phrases=settings.handoff_phrases,
            notice=settings.handoff_notice,
            fallback=settings.handoff_fallback,
            display_name=settings.staff_display_name,
            bot_while_waiting=settings.handoff_bot_while_waiting,
        )

    def asks_for_person(self, text: str) -> bool:
        folded = " ".join(text.lower().split())
        return any(p in folded for p in self.phrases)


def _epoch(ts: Any) -> float:
    try:
        return records.parse_ts(ts).timestamp()
    except records.BadRecord:
        return time.time()


@dataclass
class ConversationState:
    status: str = "bot"  # bot | waiting | staff
    staff: str | None = None
    requested_at: float | None = None
    since: float | None = None
    events: list[dict] = field(default_factory=list)


def check_staff_name(value: Any) -> str:
    if not isinstance(value, str) or not STAFF_NAME.fullmatch(value.strip()):
        raise ValueError("staff must be a name of 1-64 letters, digits, spaces or . ' @ -")
    return value.strip()


class Handoff:
    """The derived takeover state of every conversation, and the actions that change it."""

    def __init__(self, config: HandoffConfig, service: Any, writer: LogWriter):
        self.config = config
        self.service = service
        self.conversations = service.conversations
        self.writer = writer
        self._state: dict[str, ConversationState] = {}
        self._lock = threading.RLock()
        self._act = threading.Lock()  # one staff action at a time in this process
        self.version = 0  # bumped on every applied event (channels wait on it)
        self._stop = threading.Event()
        self.conversations.on_event = self.apply
        self.conversations.weave = self.weave
        self.conversations.on_forget = self.drop_forgotten

    # -- derived state ------------------------------------------------------------------

    def apply(self, obj: dict) -> None:
        """One event line from the log (any process's), in log order."""
        kind, cid = obj.get("kind"), obj["conversation_id"]
        if kind not in records.EVENT_KINDS:
            return
        staff = obj.get("staff") if isinstance(obj.get("staff"), str) else None
        text = obj.get("text") if isinstance(obj.get("text"), str) else None
        at_turn = obj.get("at_turn")
        if isinstance(at_turn, bool) or not isinstance(at_turn, int):
            at_turn = 0
        ts = _epoch(obj.get("ts"))
        with self._lock:
            st = self._state.get(cid)
            if st is None:
                st = self._state[cid] = ConversationState()
                if len(self._state) > MAX_CONVERSATIONS:
                    self._forget_some()
            effective = True
            if kind == "staff_message":
                effective = st.status == "staff" and staff == st.staff and bool(text)
            elif kind != "visitor_message":
                before = (st.status, st.staff)
                apply_event(st, obj, ts)
                effective = (st.status, st.staff) != before
            if not effective:
                return
            request_id = obj.get("request_id") if isinstance(obj.get("request_id"), str) else None
            st.events.append({"id": str(obj.get("id") or ""), "kind": kind, "text": text, "staff": staff,
                              "ts": obj.get("ts"), "at_turn": at_turn, "status": st.status,
                              "via": obj.get("via") if obj.get("via") in ("chat", "button", "model") else None,
                              "request_id": request_id})
            if len(st.events) > MAX_EVENTS:
                del st.events[: len(st.events) - MAX_EVENTS]
            self.version += 1

    def drop_forgotten(self, hashes: set[str]) -> None:
        """Conversations just forgotten: their events leave memory (channels serve none)."""
        with self._lock:
            gone = ids_in(list(self._state), hashes)
            for cid in gone:
                del self._state[cid]
            if gone:
                self.version += 1

    def _forget_some(self) -> None:
        """Drop the oldest conversations that are back with the bot (their events stay in the log)."""
        for old in [c for c, s in self._state.items() if s.status == "bot"][: MAX_CONVERSATIONS // 10]:
            del self._state[old]

    def state(self, cid: str) -> ConversationState:
        with self._lock:
            st = self._state.get(cid)
            return ConversationState(st.status, st.staff, st.requested_at, st.since, list(st.events)) \
                if st else ConversationState()

    def public_events(self, cid: str) -> list[dict]:
        """Events of ``cid`` as the visitor's channel shows them (staff names as configured)."""
        out = []
        for e in self.state(cid).events:
            if e["kind"] == "visitor_message":
                continue  # the visitor's own words: the widget shows them already
            text = e["text"]
            if e["kind"] == "handoff_requested":
                text = self.config.notice if e["staff"] is None else text
            shown = self.config.display_name or e["staff"]
            item = {"id": e["id"], "kind": e["kind"], "text": text, "via": e["via"],
                    "staff": shown if e["staff"] else None, "ts": e["ts"], "status": e["status"]}
            if e["kind"] == "handoff_requested":
                item["bot_answers"] = self.config.bot_while_waiting
                if e["via"] == "chat":
                    item["turn"] = e["at_turn"] - 1  # the turn whose reply was the notice (not rated)
            out.append(item)
        return out

    def weave(self, cid: str, pairs: list[tuple[int, str, str]], turn: int) -> list[dict]:
        """The bot's context: earlier turns with staff and visitor messages in their places."""
        events = [e for e in self.state(cid).events if e["kind"] in ("staff_message", "visitor_message")
                  and e["text"] and e["at_turn"] <= turn]
        first = pairs[0][0] if pairs else 0
        items: list[tuple[int, int, int, str, str]] = []
        for t, user, reply in pairs:
            items.append((t, 1, 0, "user", user))
            items.append((t, 1, 1, "assistant", reply))
        for i, e in enumerate(events):
            if e["at_turn"] < first:
                continue
            role = "user" if e["kind"] == "visitor_message" else "assistant"
            items.append((e["at_turn"], 0, i, role, e["text"]))
        items.sort(key=lambda x: x[:3])
        context: list[dict] = []
        for *_, role, content in items:
            if context and context[-1]["role"] == role:
                context[-1]["content"] += "\n" + content
            else:
                context.append({"role": role, "content": content})
        return context

    # -- writing ------------------------------------------------------------------------

    def _next_turn(self, cid: str) -> int:
        with self.conversations._lock:
            st = self.conversations._state.get(cid)
            return st.next_turn if st is not None else 0

    def _write(self, cid: str, kind: str, *, staff: str | None = None, text: str | None = None,
               at_turn: int | None = None, **extra: Any) -> bool:
        if text is not None and self.service.settings.redact_pii:
            text = mask_pii(text)
        record = records.make_event(conversation_id=cid, kind=kind,
                                    at_turn=self._next_turn(cid) if at_turn is None else at_turn,
                                    staff=staff, text=text, **extra)
        ok = self.writer.append(record)
        self.conversations.follow()  # apply it (and anything other replicas wrote first)
        return ok

    def intercept(self, cid: str, text: str, source: str) -> tuple[str | None, str | None]:
        """Before a turn: ``("held", None)`` when staff hold ``cid``, or it waits for a person and
        the bot is not to answer meanwhile (the message is logged as a ``visitor_message``),
        ``("notice", text)`` when the message asks for a person, else ``(None, None)``."""
        self.conversations.follow()
        st = self.state(cid)
        if st.status == "staff" or (st.status == "waiting" and not self.config.bot_while_waiting):
            self._write(cid, "visitor_message", text=text)
            return "held", None
        # Staff trying the bot (operator) are never handed to a person. A replay gets the notice a
        # visitor would get, so a regression suite sees the hand-off, but nobody is asked for
        # (the Space's chat() writes no handoff_requested line for it).
        if st.status == "bot" and source.lower() != "operator" and self.config.asks_for_person(text):
            return "notice", self.config.notice
        return None, None

    def requested(self, cid: str, at_turn: int | None = None, via: str = "button") -> ConversationState:
        """The visitor asked for a person: with the widget's control (``button``) or in a
        message (``chat``: the notice was that turn's reply)."""
        with self._act:
            self.conversations.follow()
            if self.state(cid).status == "bot":
                self._write(cid, "handoff_requested", at_turn=at_turn, via=via)
            return self.state(cid)

    def take(self, cid: str, staff: str) -> tuple[bool, ConversationState]:
        with self._act:
            self.conversations.follow()
            st = self.state(cid)
            if st.status == "staff":
                return st.staff == staff, st
            self._write(cid, "handoff_taken", staff=staff)
            st = self.state(cid)
            return st.status == "staff" and st.staff == staff, st

    def say(self, cid: str, staff: str, text: str, request_id: str | None = None) -> tuple[bool, ConversationState]:
        """A staff message. ``request_id`` (the sender's id for this message) makes a resend
        harmless: a message with an id already logged for ``cid`` is not written again."""
        with self._act:
            self.conversations.follow()
            st = self.state(cid)
            if st.status != "staff" or st.staff != staff:
                return False, st
            if request_id is not None and any(e.get("request_id") == request_id for e in st.events):
                return True, st
            extra = {"request_id": request_id} if request_id is not None else {}
            self._write(cid, "staff_message", staff=staff, text=text, **extra)
            return True, self.state(cid)

    def handback(self, cid: str, staff: str) -> tuple[bool, ConversationState]:
        with self._act:
            self.conversations.follow()
            st = self.state(cid)
            if st.status != "staff" or st.staff != staff:
                return False, st
            self._write(cid, "handoff_returned", staff=staff)
            return True, self.state(cid)

    def resolve(self, cid: str, staff: str) -> tuple[bool, ConversationState]:
        """``staff`` marks ``cid`` resolved (logged): a request for a person is closed, a
        conversation they hold goes back to the bot; one held by someone else is refused."""
        with self._act:
            self.conversations.follow()
            st = self.state(cid)
            if st.status == "staff" and st.staff != staff:
                return False, st
            self._write(cid, "conversation_resolved", staff=staff)
            return True, self.state(cid)

    def expire(self, now: float | None = None) -> int:
        """Requests waiting longer than the timeout get the fallback; returns how many."""
        now = time.time() if now is None else now
        with self._lock:
            due = [cid for cid, st in self._state.items()
                   if st.status == "waiting" and st.requested_at is not None
                   and now - st.requested_at >= self.config.timeout]
        done = 0
        for cid in due:
            with self._act:
                self.conversations.follow()
                if self.state(cid).status == "waiting":
                    self._write(cid, "handoff_timeout", text=self.config.fallback)
                    done += 1
        return done

    # -- the follower ------------------------------------------------------------------

    def run(self, interval: float = 0.2) -> None:
        """Follow the folder (other replicas' events) and expire requests, until stopped."""
        while not self._stop.wait(interval):
            try:
                self.conversations.follow()
                self.expire()
            except Exception:  # never let the follower die
                log.exception("handoff follower")

    def start(self) -> None:
        threading.Thread(target=self.run, name="handoff-follower", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


def apply_event(st: ConversationState, obj: dict, ts: float) -> None:
    """The same state rules as :meth:`Handoff.apply`, without the channel's bookkeeping."""
    kind = obj.get("kind")
    staff = obj.get("staff") if isinstance(obj.get("staff"), str) else None
    if kind == "handoff_requested" and st.status == "bot":
        st.status, st.requested_at, st.since = "waiting", ts, ts
    elif kind == "handoff_taken" and st.status in ("bot", "waiting"):
        st.status, st.staff, st.since = "staff", staff, ts
    elif kind == "handoff_returned" and st.status == "staff" and staff == st.staff:
        st.status, st.staff, st.since, st.requested_at = "bot", None, ts, None
    elif kind == "handoff_timeout" and st.status == "waiting":
        st.status, st.since, st.requested_at = "bot", ts, None
    elif kind == "conversation_resolved" and (st.status != "staff" or staff == st.staff):
        st.status, st.staff, st.since, st.requested_at = "bot", None, ts, None

"""The staff's inbox: conversations active now, followed from the log folder (the Live page).

Follows the folder with the one follower (:class:`chatcore.log.follow.LogTail`, from the last
bytes of each shard), applies the same hand-off rules as the Space
(:func:`chatcore.space.handoff.apply_event`), and keeps the recent messages of each conversation
so an open transcript grows as lines are written. A forgotten conversation leaves it. A shard
truncated or rewritten in place (the follower's :class:`chatcore.log.follow.Reset`) takes back
what came from it; its lines read again are then taken as they are now.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from chatcore.log import records
from chatcore.log.records import TEST_SOURCES, is_test_traffic  # noqa: F401  (the inbox's rule, asked here)
from chatcore.space.handoff import ConversationState, HandoffConfig, _epoch, apply_event


@dataclass
class LiveConversation:
    conversation_id: str
    last_ts: float = 0.0
    last_message: str = ""
    source: str = ""
    turns: int = 0
    resolved_at: float | None = None  # marked resolved: out of the list until something newer happens
    messages: list[dict] = field(default_factory=list)  # {ts, role: visitor|bot|staff|event, who, text, shard}
    #: turn lines counted, per shard they came from; shards whose event lines were applied
    turns_by_shard: dict[str, int] = field(default_factory=dict)
    event_shards: set = field(default_factory=set)


class LiveConversations:
    """Conversations active now, followed from the log folder (for the Live page).

    Follows the folder from the last ``tail_bytes`` of each shard, applies the same handoff
    events as the Space, and keeps the recent messages of each conversation so an open
    transcript grows as lines are written.
    """

    def __init__(self, log_path, tail_bytes: int = 8 * 1024 * 1024, max_messages: int = 200,
                 timeout: float | None = None):
        from chatcore.config import log_folder
        from chatcore.log.annotations import annotations_dir
        from chatcore.log.follow import LogTail

        self.folder = log_folder(log_path)
        self.tail_bytes = tail_bytes
        self.max_messages = max_messages
        self._tail = LogTail(self.folder, parse=_conversation_line, backlog_bytes=tail_bytes)
        self._forgotten_seen = 0
        self._ratings_seen = 0
        self._ratings_rows: list | None = None
        self._convs: dict[str, LiveConversation] = {}
        self._ratings: dict[tuple, str] = {}
        self._lock = threading.Lock()
        config = HandoffConfig.from_env()
        self.timeout = timeout if timeout is not None else config.timeout
        #: Whether the Space's bot answers a visitor who waits for a person (the same setting).
        self.bot_while_waiting = config.bot_while_waiting
        self._states: dict[str, ConversationState] = {}
        self._feedback = annotations_dir(self.folder) / "feedback.jsonl"

    def _add(self, conv: LiveConversation, ts: float, role: str, who: str, text: str, shard=None) -> None:
        conv.messages.append({"ts": ts, "role": role, "who": who, "text": text, "shard": shard})
        if len(conv.messages) > self.max_messages:
            del conv.messages[: len(conv.messages) - self.max_messages]

    def _apply(self, obj: dict) -> None:
        cid = obj["conversation_id"]
        conv = self._convs.get(cid)
        if conv is None:
            conv = self._convs[cid] = LiveConversation(cid)
        ts = _epoch(obj.get("ts", obj.get("timestamp")))
        if obj.get("kind") == "conversation_resolved":
            conv.resolved_at = ts
        else:
            conv.last_ts = max(conv.last_ts, ts)
        shard = obj.get("shard")
        if records.is_event(obj):
            conv.event_shards.add(shard)
            st = self._states.setdefault(cid, ConversationState())
            before = (st.status, st.staff)
            apply_event(st, obj, ts)
            kind, text, staff = obj.get("kind"), obj.get("text"), obj.get("staff")
            text = text if isinstance(text, str) else ""
            if kind == "staff_message" and text:
                self._add(conv, ts, "staff", str(staff or ""), text, shard)
            elif kind == "visitor_message" and text:
                self._add(conv, ts, "visitor", "", text, shard)
                conv.last_message = text
            elif (st.status, st.staff) != before or kind == "conversation_resolved":
                label = {"handoff_requested": "asked for a person",
                         "handoff_taken": f"{staff} took over",
                         "handoff_returned": f"{staff} handed back to the bot",
                         "handoff_timeout": "nobody took it in time: the bot carries on",
                         "conversation_resolved": f"{staff} marked it resolved"}.get(kind, kind)
                self._add(conv, ts, "event", str(staff or ""), label, shard)
            return
        user, reply = obj.get("user_text"), obj.get("response")
        if isinstance(reply, list):
            reply = "\n".join(x for x in reply if isinstance(x, str))
        conv.turns += 1
        conv.turns_by_shard[shard] = conv.turns_by_shard.get(shard, 0) + 1
        conv.source = obj.get("source") if isinstance(obj.get("source"), str) else conv.source
        if isinstance(user, str) and user:
            self._add(conv, ts, "visitor", "", user, shard)
            conv.last_message = user
        if isinstance(reply, str) and reply:
            self._add(conv, ts, "bot", "", reply, shard)

    def _reset(self, shard: str) -> None:
        """``shard`` is read again from its start: drop what came from it (its lines follow).
        A conversation whose hand-off events were in it starts its hand-off state afresh from
        the events read again."""
        for cid, conv in list(self._convs.items()):
            if not (shard in conv.turns_by_shard or shard in conv.event_shards
                    or any(m["shard"] == shard for m in conv.messages)):
                continue
            conv.turns -= conv.turns_by_shard.pop(shard, 0)
            conv.messages = [m for m in conv.messages if m["shard"] != shard]
            if shard in conv.event_shards:
                conv.event_shards.discard(shard)
                self._states.pop(cid, None)
                conv.resolved_at = None
            conv.last_ts = max((m["ts"] for m in conv.messages), default=0.0)
            conv.last_message = next((m["text"] for m in reversed(conv.messages) if m["role"] == "visitor"), "")
            if not conv.messages and not conv.turns_by_shard and not conv.event_shards:
                del self._convs[cid]
                self._states.pop(cid, None)

    def refresh(self) -> None:
        from chatcore.log.annotations import _reader
        from chatcore.log.forgotten import ids_in

        with self._lock:
            self._tail.poll()
            for obj in self._tail.drain(resets=True):
                if isinstance(obj, dict):
                    self._apply(obj)
                else:
                    self._reset(obj.shard)
            forgotten = self._tail.forgotten
            if len(forgotten) != self._forgotten_seen:  # forget or retention: drop what is held
                self._forgotten_seen = len(forgotten)
                for cid in ids_in(list(self._convs), set(forgotten)):
                    self._convs.pop(cid, None)
                    self._states.pop(cid, None)
                self._ratings = {k: v for k, v in self._ratings.items() if not ids_in([k[0]], set(forgotten))}
            rows, _ = _reader(self._feedback).read()
            if rows is not self._ratings_rows:  # read again (rewritten by forget or retention)
                self._ratings, self._ratings_seen, self._ratings_rows = {}, 0, rows
            for obj in rows[self._ratings_seen:]:
                if obj.get("rating") in ("up", "down"):
                    self._ratings[(obj["conversation_id"], obj.get("turn"), obj.get("by"))] = obj["rating"]
            self._ratings_seen = len(rows)

    def active(self, minutes: float = 15.0, now: float | None = None, include_test: bool = False) -> list[dict]:
        """Conversations with activity in the last ``minutes``: waiting ones first (longest
        wait first), then by latest activity. ``last_message`` is what the visitor last said;
        ``holder`` who has it (None: nobody); ``test`` marks replays and simulated visitors
        (:func:`is_test_traffic`), left out unless ``include_test``."""
        self.refresh()
        now = time.time() if now is None else now
        downs: dict[str, int] = {}
        with self._lock:
            for (cid, _turn, _by), rating in self._ratings.items():
                if rating == "down":
                    downs[cid] = downs.get(cid, 0) + 1
            rows = []
            for cid, conv in self._convs.items():
                if now - conv.last_ts > minutes * 60:
                    continue
                if conv.resolved_at is not None and conv.resolved_at >= conv.last_ts:
                    continue
                test = is_test_traffic(cid, conv.source)
                if test and not include_test:
                    continue
                st = self._states.get(cid) or ConversationState()
                status = st.status
                if status == "waiting" and st.requested_at and now - st.requested_at >= self.timeout + 5:
                    status = "bot"  # no Space followed it up (it is down): not waiting any more
                rows.append({
                    "conversation_id": cid,
                    "status": {"bot": "bot", "waiting": "waiting for a person",
                               "staff": f"with {st.staff}"}[status],
                    "waiting_s": round(now - st.requested_at) if status == "waiting" and st.requested_at else None,
                    "last_message": conv.last_message[:200],
                    "source": conv.source,
                    "turns": conv.turns,
                    "thumbs_down": downs.get(cid, 0),
                    "last_activity": conv.last_ts,
                    "holder": st.staff if status == "staff" else None,
                    "requested_at": st.requested_at if status == "waiting" else None,
                    "test": test,
                    "_waiting": status == "waiting",
                })
        rows.sort(key=lambda r: (not r["_waiting"], -(r["waiting_s"] or 0), -r["last_activity"]))
        for r in rows:
            del r["_waiting"]
        return rows

    def transcript(self, cid: str) -> list[dict]:
        self.refresh()
        with self._lock:
            conv = self._convs.get(cid)
            return [{k: v for k, v in m.items() if k != "shard"} for m in conv.messages] if conv else []

    def status(self, cid: str) -> ConversationState:
        with self._lock:
            st = self._states.get(cid)
            return ConversationState(st.status, st.staff, st.requested_at, st.since) if st else ConversationState()


def _conversation_line(line: bytes) -> dict:
    """One line of the folder as the follower hands it to the inbox: turns and events alike."""
    for obj in records.conversation_objects(line):
        return obj
    raise records.BadRecord("json", "not a conversation line")

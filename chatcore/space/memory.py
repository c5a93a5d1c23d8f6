"""What the Space remembers of each conversation: its next turn number and recent turns.

Kept in memory while a conversation is hot, rebuilt from the log when it is not, and kept in
step with every replica sharing the log folder through the one follower
(:class:`chatcore.log.follow.LogTail`); forgotten conversations are dropped as the registry
(:mod:`chatcore.log.forgotten`) names them. When a shard is truncated or rewritten in place
(:class:`chatcore.log.follow.Reset`), the conversations it held are dropped and rebuilt from the
log as it is now.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from collections import OrderedDict
from pathlib import Path

from chatcore.log import annotations
from chatcore.log import records
from chatcore.log.follow import LogTail, Reset
from chatcore.log.forgotten import ForgottenRegistry, ids_in
from chatcore.log.ids import resolve_conversation_id
from chatcore.log.shards import line_blocks, shard_paths

log = logging.getLogger("chatcore.space.memory")


class _Conversation:
    __slots__ = ("next_turn", "turns", "size", "shards")

    def __init__(self) -> None:
        self.next_turn = 0
        #: turn number -> (user_text, reply); None while cold (known only from the log).
        self.turns: dict[int, tuple[str, str]] | None = None
        self.size = 0
        #: names of the shards its lines were read from (what to drop when one is read again)
        self.shards: set[str] = set()


class _LetGo:
    """The ids a :class:`ConversationMemory` let go of while their lines are still in the log
    (squeezed out by its limit, or held from a shard that is read again). An id that is neither
    held nor here is new, and is answered without a search of the log, which reads every shard
    (a second or more for millions of turns, on every new visitor's first message once the log
    holds more conversations than the limit).

    Kept as 8-byte hashes: a sorted array, with new ones merged in batches. Two ids that share a
    hash cost one needless search, never a wrong answer. The hashes are Python's own, stable
    within the process that holds them."""

    BATCH = 1 << 16

    def __init__(self) -> None:
        import numpy as np

        self._np = np
        self._sorted = np.empty(0, dtype=np.uint64)
        self._recent: set[int] = set()

    @staticmethod
    def _key(cid: str) -> int:
        return hash(cid) & 0xFFFF_FFFF_FFFF_FFFF

    def add(self, cid: str) -> None:
        self._recent.add(self._key(cid))
        if len(self._recent) >= self.BATCH:
            np = self._np
            merged = np.concatenate([self._sorted, np.fromiter(self._recent, np.uint64, len(self._recent))])
            self._sorted = np.unique(merged)
            self._recent.clear()

    def __contains__(self, cid: str) -> bool:
        key = self._key(cid)
        if key in self._recent:
            return True
        i = int(self._np.searchsorted(self._sorted, self._np.uint64(key)))
        return i < len(self._sorted) and int(self._sorted[i]) == key

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)


def _text_size(user: str, reply: str) -> int:
    return len(user.encode("utf-8", "replace")) + len(reply.encode("utf-8", "replace")) + 64


class ConversationMemory:
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
        #: Ids dropped entirely while their lines are in the log: only these are searched for there.
        self._let_go = _LetGo()
        #: Searches of the log for one conversation (each reads every shard up to the followed end).
        self.log_searches = 0
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
                old_id, old = self._state.popitem(last=False)
                self.bytes -= old.size
                self._let_go.add(old_id)
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

    def observe(self, conversation_id: str, turn: int, user: str, reply: str, ok: bool,
                shard: str | None = None) -> None:
        """A turn found in the log (this process's or another's; in the shard named ``shard``)."""
        with self._lock:
            state = self._state.get(conversation_id)
            if state is None:
                state = self._get(conversation_id)
            state.next_turn = max(state.next_turn, turn + 1)
            if shard is not None:
                state.shards.add(sys.intern(shard))
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
            # Unknown: new, since the folder is followed, unless it was let go of entirely.
            cold = (state.turns is None and known) or (not known and conversation_id in self._let_go)
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
            let_go = conversation_id in self._let_go
        if not let_go:
            return False
        self._rebuild(conversation_id)
        with self._lock:
            state = self._state.get(conversation_id)
            return state is not None and 0 <= turn < state.next_turn

    # -- the log -------------------------------------------------------------------------

    def _shards(self) -> list[Path]:
        if self.log_path is None:
            return []
        return shard_paths(self.log_path if self.log_path.is_dir() else self.log_path.parent)

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
        seen: dict[str, set[str]] = {}
        lines = 0
        resume: dict[str, list[int]] = {}
        with self._follow_lock:
            for shard in self._shards():
                done = 0
                try:
                    with open(shard, "rb") as f:
                        st = os.fstat(f.fileno())
                        for start, block in line_blocks(f.fileno(), 0, st.st_size):
                            done = start + len(block)
                            name = sys.intern(shard.name)
                            for obj in self._lines(block, self.on_event):
                                lines += 1
                                self._turn_of(obj, counts)
                                seen.setdefault(obj["conversation_id"], set()).add(name)
                    resume[shard.name] = [st.st_dev, st.st_ino, done]
                except OSError as exc:
                    log.warning("could not read %s to continue turn numbers: %s", shard.name, exc)
            self._start_tail(resume)
        with self._lock:
            for cid, n in counts.items():
                state = self._get(cid)
                state.next_turn = max(state.next_turn, n)
                state.shards |= seen.get(cid, set())
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
            let_go = conversation_id in self._let_go
        if not let_go:
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
            rebuilt: set[str] = set()
            for obj in self._tail.drain(resets=True):
                if isinstance(obj, Reset):
                    rebuilt |= self._drop_shard(obj.shard)
                    continue
                if records.is_event(obj):
                    if self.on_event is not None:
                        self.on_event(obj)
                    continue
                turn = obj.get("turn")
                if isinstance(turn, bool) or not isinstance(turn, int) or not 0 <= turn < 2**31:
                    continue
                if obj["conversation_id"] in rebuilt:
                    continue  # rebuilt from the log when next asked, this line included
                user, reply = self._texts(obj)
                self.observe(obj["conversation_id"], turn, user, reply, obj.get("error") is None, obj.get("shard"))

    def _drop_shard(self, shard: str) -> set[str]:
        """``shard`` is read again from its start (truncated or rewritten in place): drop what is
        held of the conversations it had; they are rebuilt from the log as it is now when next
        asked (their lines in other shards too)."""
        with self._lock:
            cids = {cid for cid, state in self._state.items() if shard in state.shards}
            for cid in cids:
                self.bytes -= self._state.pop(cid).size
                self._let_go.add(cid)  # in the log still: look there before calling it new
        return cids

    def _rebuild(self, cid: str) -> None:
        """Load ``cid``'s turns from the log folder (the part already followed)."""
        import mmap

        needle = b'"' + cid.encode("ascii") + b'"'
        self.log_searches += 1
        found: dict[int, tuple[str, str]] = {}
        in_shards: set[str] = set()
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
                            in_shards.add(sys.intern(shard.name))
                            if obj.get("error") is None:
                                found[turn] = self._texts(obj)
                        pos = m.find(needle, line_end, end)
            except (OSError, ValueError):
                continue
        with self._lock:
            state = self._get(cid)
            state.next_turn = max(state.next_turn, next_turn)
            state.shards |= in_shards
            if state.turns is None:
                state.turns = {}
            for turn in sorted(found):
                if turn not in state.turns:
                    self._put_turn(state, turn, *found[turn])
            self._shrink()


def _conversation_object(line: bytes) -> dict:
    """One line of the folder as the follower hands it to :class:`ConversationMemory`."""
    for obj in records.conversation_objects(line):
        return obj
    raise records.BadRecord("json", "not a conversation line")


def seed_turns(counter: ConversationMemory, log_path: Path | None = None) -> int:
    """Read (conversation_id, turn) from the log folder; returns lines read."""
    if log_path is not None and counter.log_path is None:
        counter.log_path = Path(log_path)
    try:
        return counter.seed_from_log()
    except Exception as exc:  # a broken log must never stop the Space from starting
        log.warning("could not read the existing log to continue turn numbers: %s", exc)
        return 0



"""The Space's memory once the log holds more conversations than it keeps: a new visitor is
answered without searching the log, and a conversation it let go of continues where it was."""
from __future__ import annotations

from chatcore.log.records import make_record
from chatcore.log.writer import LogWriter
from chatcore.space.memory import ConversationMemory


def _log(tmp_path, conversations: int, turns: int = 2):
    log = tmp_path / "chat_logs.jsonl"
    writer = LogWriter(log)
    for c in range(conversations):
        for t in range(turns):
            writer.append(make_record(conversation_id=f"c-{c}", turn=t, user_text=f"q{c}.{t}", response=f"a{c}.{t}",
                                      latency_ms=1, source="widget", backend="echo"))
    return log


def test_a_new_id_is_not_searched_for_when_the_log_holds_more_than_the_limit(tmp_path):
    log = _log(tmp_path, conversations=50)
    memory = ConversationMemory(limit=10, log_path=log)
    memory.seed_from_log()
    try:
        # forty conversations were let go of: a new id is still known to be new
        turn, context, replaces = memory.start_turn("brand-new-visitor")
        assert (turn, context, replaces) == (0, [], False)
        assert not memory.exists("another-new-visitor")
        assert not memory.knows_turn("a-third-new-visitor", 0)
        assert memory.log_searches == 0

        # one it let go of is found in the log: its turn count and context continue
        turn, context, _ = memory.start_turn("c-0")
        assert turn == 2
        assert [m["content"] for m in context] == ["q0.0", "a0.0", "q0.1", "a0.1"]
        assert memory.log_searches == 1
        assert memory.exists("c-1") and memory.knows_turn("c-2", 1)
    finally:
        memory.stop()


def test_many_let_go_ids_stay_exact(tmp_path):
    log = _log(tmp_path, conversations=3, turns=1)
    memory = ConversationMemory(limit=2, log_path=log)
    memory._let_go.BATCH = 8  # several merges into the sorted hashes
    memory.seed_from_log()
    try:
        for i in range(100):
            memory.start_turn(f"new-{i}")
        searches = memory.log_searches
        assert len(memory._let_go) >= 99
        assert memory.exists("c-0")  # let go of, and in the log
        assert not memory.exists("new-5")  # let go of before anything was written: looked for, not found
        assert memory.log_searches == searches + 2
        assert not memory.exists("never-seen")
        assert memory.log_searches == searches + 2  # never held: new without a search
    finally:
        memory.stop()

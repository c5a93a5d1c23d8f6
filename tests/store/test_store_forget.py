"""The store holds a log in memory; ``forget`` rewrites shards under it: the follower's
"read again from the start" signal makes the next refresh drop the forgotten conversation."""
from __future__ import annotations

from chatcore.log.records import make_record
from chatcore.log.retention import forget
from chatcore.log.writer import LogWriter
from chatcore.store import LogStore


def _write(path, cid: str, turns: int, text: str = "hello") -> None:
    w = LogWriter(path)
    for t in range(turns):
        assert w.append(make_record(conversation_id=cid, turn=t, user_text=f"{text} {t}", response="ok",
                                    latency_ms=1, source="api", backend="test"))
    w.close()


def test_a_running_store_drops_a_forgotten_conversation(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    a, b = folder / "chat_logs.a.jsonl", folder / "chat_logs.b.jsonl"
    _write(a, "keep-1", 3)
    _write(a, "gone-1", 2, "my card is 4111")
    _write(b, "gone-1", 2, "my card is 4111")
    _write(b, "keep-2", 2)
    store = LogStore(folder)
    assert set(store.frame.conversation_id) == {"keep-1", "keep-2", "gone-1"}
    version = store.version
    forget(folder, "gone-1", by="tester")
    store.refresh()
    frame = store.frame
    assert set(frame.conversation_id) == {"keep-1", "keep-2"}
    assert not frame.user_text.str.contains("4111").any()
    assert store.version > version
    # appends after the forget are read on from the rewritten shards
    _write(b, "keep-2", 1, "later")
    assert list(store.refresh().conversation_id) == ["keep-2"]
    assert len(store.frame) == 3 + 2 + 1

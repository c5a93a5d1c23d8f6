"""The staff inbox when a shard is truncated or rewritten in place (not through forget):
the lines read again are the truth, nothing is counted twice."""
from __future__ import annotations

import orjson

from chatcore.log.records import make_event, make_record
from chatcore.staff.inbox import LiveConversations


def turn(cid: str, n: int, text: str) -> bytes:
    return orjson.dumps(make_record(conversation_id=cid, turn=n, user_text=text, response=f"re: {text}",
                                    latency_ms=3, source="widget", backend="echo")) + b"\n"


def rewrite(path, data: bytes) -> None:
    with open(path, "r+b") as f:  # the same file, changed in place
        f.truncate(0)
        f.write(data)


def visitor(inbox: LiveConversations, cid: str) -> list[str]:
    return [m["text"] for m in inbox.transcript(cid) if m["role"] == "visitor"]


def test_a_shard_rewritten_in_place_is_not_counted_twice(tmp_path):
    log = tmp_path / "logs" / "chat.jsonl"
    other = tmp_path / "logs" / "other.jsonl"  # another replica's shard: untouched
    log.parent.mkdir()
    ask = orjson.dumps(make_event(conversation_id="rw-a", kind="handoff_requested", at_turn=2)) + b"\n"
    log.write_bytes(turn("rw-a", 0, "hello") + turn("rw-b", 0, "hi") + turn("rw-a", 1, "my card 4111") + ask)
    other.write_bytes(turn("rw-b", 1, "from the other replica"))
    inbox = LiveConversations(log)
    rows = {r["conversation_id"]: r for r in inbox.active(15)}
    assert rows["rw-a"]["turns"] == 2 and rows["rw-b"]["turns"] == 2
    assert rows["rw-a"]["status"] == "waiting for a person"

    # an operator redacts a line in place, and the Space writes on
    rewrite(log, turn("rw-a", 0, "hello") + turn("rw-b", 0, "hi") + turn("rw-a", 1, "my card [redacted]") + ask
            + turn("rw-a", 2, "anyone?"))
    rows = {r["conversation_id"]: r for r in inbox.active(15)}
    assert rows["rw-a"]["turns"] == 3 and rows["rw-b"]["turns"] == 2
    assert visitor(inbox, "rw-a") == ["hello", "my card [redacted]", "anyone?"]
    assert "4111" not in str(inbox.transcript("rw-a"))
    assert rows["rw-a"]["status"] == "waiting for a person"
    assert sorted(visitor(inbox, "rw-b")) == ["from the other replica", "hi"]

    # truncated: only what is written next
    rewrite(log, b"")
    inbox.refresh()
    with open(log, "ab") as f:
        f.write(turn("rw-c", 0, "new"))
    rows = {r["conversation_id"]: r for r in inbox.active(15)}
    assert set(rows) == {"rw-b", "rw-c"}
    assert rows["rw-b"]["turns"] == 1 and visitor(inbox, "rw-b") == ["from the other replica"]

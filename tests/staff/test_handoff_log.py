"""The hand-off event scan follows the log with the one follower; ``forget`` rewrites the
shards it holds events of, and the next look no longer reports the forgotten conversation."""
from __future__ import annotations

import json

from chatcore.log.records import make_event, make_record
from chatcore.log.retention import forget
from chatcore.staff.handoff_log import conversation_events, handed_off_ids


def _lines(*recs: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in recs)


def test_forgotten_handoffs_leave_the_running_scan(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    shard = folder / "chat_logs.jsonl"
    recs = []
    for cid in ("keep-1", "gone-1"):
        recs.append(make_record(conversation_id=cid, turn=0, user_text="a person please", response="ok",
                                latency_ms=1, source="api", backend="test"))
        recs.append(make_event(conversation_id=cid, kind="handoff_taken", at_turn=0, staff="Maya"))
        recs.append(make_event(conversation_id=cid, kind="staff_message", at_turn=0, staff="Maya",
                               text=f"write to maya@example.com about {cid}"))
    shard.write_text(_lines(*recs))
    assert handed_off_ids(folder) == {"keep-1", "gone-1"}
    assert [e["kind"] for e in conversation_events(folder, "gone-1")] == ["handoff_taken", "staff_message"]
    forget(folder, "gone-1", by="tester")
    assert handed_off_ids(folder) == {"keep-1"}
    assert conversation_events(folder, "gone-1") == []
    assert [e["kind"] for e in conversation_events(folder, "keep-1")] == ["handoff_taken", "staff_message"]
    # the id chats again after the forget: a new conversation, its own events only
    with open(shard, "a") as f:
        f.write(_lines(make_event(conversation_id="gone-1", kind="handoff_requested", at_turn=0)))
    assert [e["kind"] for e in conversation_events(folder, "gone-1")] == ["handoff_requested"]

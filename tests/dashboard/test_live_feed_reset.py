"""The Live page's stream when a shard is truncated or rewritten in place (not through forget):
the history read again is not pushed to viewers as new turns."""
from __future__ import annotations

import time

import orjson

from chatcore.dashboard.views import LiveFeed, merge_live_counted
from chatcore.log.records import make_record


def turn(cid: str, n: int, text: str) -> bytes:
    return orjson.dumps(make_record(conversation_id=cid, turn=n, user_text=text, response="ok",
                                    latency_ms=3, source="widget", backend="echo")) + b"\n"


def wait_new(feed: LiveFeed, cursor: int, n: int) -> tuple[list[dict], int]:
    got: list[dict] = []
    deadline = time.monotonic() + 20
    while len(got) < n and time.monotonic() < deadline:
        new, cursor, _ = feed.poll(cursor)
        got += new
        time.sleep(0.05)
    time.sleep(0.3)  # anything more would be there by now
    new, cursor, _ = feed.poll(cursor)
    return got + new, cursor


def test_history_read_again_is_not_new_turns(tmp_path):
    log = tmp_path / "logs" / "chat.jsonl"
    log.parent.mkdir()
    history = [turn(f"old-{i}", 0, f"old {i}") for i in range(60)]
    log.write_bytes(b"".join(history))
    feed = LiveFeed(log, poll_interval=0.05)
    try:
        cursor = feed.seq
        first = turn("live-1", 0, "first")
        with open(log, "ab") as f:
            f.write(first)
        new, cursor = wait_new(feed, cursor, 1)
        rows, added = merge_live_counted([], new)
        assert added == 1

        # an operator redacts an old line in place; then the Space writes on
        history[3] = orjson.dumps({**orjson.loads(history[3]), "user_text": "[redacted]"}) + b"\n"
        with open(log, "r+b") as f:
            f.truncate(0)
            f.write(b"".join(history) + first)
        time.sleep(0.5)
        with open(log, "ab") as f:
            f.write(turn("live-2", 0, "second"))
        new, cursor = wait_new(feed, cursor, 1)
        assert [r["conversation_id"] for r in new] == ["live-2"]
        rows, added = merge_live_counted(rows, new)
        assert added == 1
    finally:
        feed.close()

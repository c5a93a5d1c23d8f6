"""LogTail: new lines are delivered across truncation, rotation and new shards."""
from __future__ import annotations

import os
import threading
import time

import orjson
import pytest

from chatcore.log.records import make_record
from chatcore.log.follow import LogTail
from chatcore.log.writer import LogWriter

pytestmark = pytest.mark.timeout(60)


def line(cid: str, turn: int = 0) -> bytes:
    return orjson.dumps(
        make_record(conversation_id=cid, turn=turn, user_text="hi", response="hello", latency_ms=1, source="t", backend="b")
    ) + b"\n"


def append(path, *cids):
    with open(path, "ab") as f:
        f.write(b"".join(line(c) for c in cids))


def wait_for(tail: LogTail, n: int, timeout: float = 10.0) -> list[dict]:
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got.extend(tail.drain())
        time.sleep(0.01)
    time.sleep(0.05)
    got.extend(tail.drain())
    return got


def cids(records):
    return [r["conversation_id"] for r in records]


def test_starts_at_end_and_delivers_appends(tmp_path):
    log = tmp_path / "log.jsonl"
    append(log, "old1", "old2")
    with LogTail(log, poll_interval=0.1) as tail:
        assert tail.drain() == []
        append(log, "a", "b")
        got = wait_for(tail, 2)
        assert cids(got) == ["a", "b"]
        assert got[0]["shard"] == "log.jsonl"
        assert got[0]["turn"] == 0 and got[0]["ts"].tzinfo is not None
        with open(log, "ab") as f:
            f.write(b"not json\n\n" + line("c")[:10])
        time.sleep(0.3)
        assert tail.drain() == []
        assert tail.stats["pending_bytes"] == 10
        with open(log, "ab") as f:
            f.write(line("c")[10:])
        assert cids(wait_for(tail, 1)) == ["c"]
        stats = tail.stats
        assert stats["bad"]["not_json"] == 1 and stats["bad"]["blank"] == 1
        assert stats["lines"] == 3


def test_from_start(tmp_path):
    log = tmp_path / "log.jsonl"
    append(log, "old1", "old2")
    with LogTail(log, poll_interval=0.1, from_start=True) as tail:
        assert cids(wait_for(tail, 2)) == ["old1", "old2"]


def test_truncation(tmp_path):
    log = tmp_path / "log.jsonl"
    append(log, "x1", "x2", "x3")
    with LogTail(log, poll_interval=0.1) as tail:
        with open(log, "r+b") as f:
            f.truncate(0)
        append(log, "after")
        assert cids(wait_for(tail, 1)) == ["after"]
        # truncated and rewritten longer than before, between two looks
        with tail._scan_lock:
            log.write_bytes(b"".join(line(f"r{i}") for i in range(5)))
        assert cids(wait_for(tail, 5)) == [f"r{i}" for i in range(5)]


def test_rotation_rename_and_new_file(tmp_path):
    log = tmp_path / "log.jsonl"
    append(log, "before")
    with LogTail(log, poll_interval=0.1) as tail:
        with tail._scan_lock:  # written right before the rename: still delivered
            append(log, "last-of-old")
            os.rename(log, tmp_path / "log.jsonl.1")
            append(log, "first-of-new")
        assert cids(wait_for(tail, 2)) == ["last-of-old", "first-of-new"]
        append(log, "more")
        assert cids(wait_for(tail, 1)) == ["more"]
        assert tail.stats["rotations"] >= 1


def test_delete_and_recreate(tmp_path):
    log = tmp_path / "log.jsonl"
    append(log, "a")
    with LogTail(log, poll_interval=0.1) as tail:
        log.unlink()
        time.sleep(0.3)
        append(log, "again")
        assert cids(wait_for(tail, 1)) == ["again"]
        append(log, "again2")
        assert cids(wait_for(tail, 1)) == ["again2"]


def test_writer_rotation_with_logwriter(tmp_path):
    log = tmp_path / "log.jsonl"
    w = LogWriter(log)
    rec = lambda c: make_record(conversation_id=c, turn=0, user_text="u", response="r", latency_ms=1, source="s", backend="b")
    w.append(rec("w0"))
    with LogTail(log, poll_interval=0.1) as tail:
        w.append(rec("w1"))
        os.replace(log, tmp_path / "log.old")
        w.append(rec("w2"))  # the writer reopens the new path
        assert cids(wait_for(tail, 2)) == ["w1", "w2"]


def test_folder_new_shard_and_rename_inside_folder(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    a = folder / "chat_logs.a.jsonl"
    append(a, "a0")
    with LogTail(folder, poll_interval=0.1) as tail:
        b = folder / "chat_logs.b.jsonl"
        append(b, "b1", "b2")
        got = wait_for(tail, 2)
        assert cids(got) == ["b1", "b2"] and got[0]["shard"] == "chat_logs.b.jsonl"
        append(a, "a1")
        assert cids(wait_for(tail, 1)) == ["a1"]
        # rotated to a dated name inside the folder: not read again from the start
        os.rename(a, folder / "chat_logs.a.2026-11-20.jsonl")
        append(a, "a-new")
        assert cids(wait_for(tail, 1)) == ["a-new"]
        assert tail.stats["shards"] == 3


def test_burst_no_loss_in_order(tmp_path):
    log = tmp_path / "log.jsonl"
    w = LogWriter(log)
    n = 2000
    with LogTail(log, poll_interval=0.1) as tail:
        got: list[dict] = []
        done = threading.Event()

        def reader():
            while not done.is_set() or len(got) < n:
                got.extend(tail.drain(max_items=500))
                if done.is_set() and len(got) >= n:
                    break
                time.sleep(0.001)

        th = threading.Thread(target=reader)
        th.start()
        for i in range(n):
            w.append(make_record(conversation_id=f"c{i}", turn=i, user_text="u" * 50, response="r" * 200, latency_ms=1, source="s", backend="b"))
        deadline = time.monotonic() + 20
        while len(got) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        done.set()
        th.join(5)
    assert [r["turn"] for r in got] == list(range(n))


def test_polling_fallback_without_observer(tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    append(log, "a")
    monkeypatch.setattr(LogTail, "_start_observer", lambda self: None)
    with LogTail(log, poll_interval=0.05) as tail:
        append(log, "b")
        assert cids(wait_for(tail, 1)) == ["b"]


def test_missing_log_appears_later(tmp_path):
    log = tmp_path / "sub" / "log.jsonl"
    with LogTail(log, poll_interval=0.05) as tail:
        log.parent.mkdir()
        append(log, "first")
        assert cids(wait_for(tail, 1)) == ["first"]


def test_poll_without_thread(tmp_path):
    log = tmp_path / "log.jsonl"
    append(log, "old")
    tail = LogTail(log)
    tail.poll()  # takes the starting position
    assert tail.drain() == []
    append(log, "x", "y")
    tail.poll()
    assert cids(tail.drain(max_items=1)) == ["x"]
    assert cids(tail.drain()) == ["y"]
    tail.stop()


def test_queue_is_bounded(tmp_path):
    log = tmp_path / "log.jsonl"
    log.touch()
    tail = LogTail(log, max_queue=10)
    tail.poll()
    append(log, *[f"c{i}" for i in range(25)])
    tail.poll()
    got = tail.drain()
    assert cids(got) == [f"c{i}" for i in range(15, 25)]
    assert tail.stats["dropped"] == 15 and tail.stats["lines"] == 25


def test_many_shards_with_few_open_files(tmp_path, monkeypatch):
    from chatcore.log import follow as tail_mod

    monkeypatch.setattr(tail_mod, "MAX_OPEN", 2)
    folder = tmp_path / "logs"
    folder.mkdir()
    shards = [folder / f"chat_logs.{i}.jsonl" for i in range(6)]
    for p in shards:
        append(p, f"{p.name}-old")
    tail = LogTail(folder)
    tail.poll()
    assert tail.stats["open_files"] <= 2
    for rnd in range(3):
        for p in shards:
            append(p, f"{p.name}-{rnd}")
            time.sleep(0.002)  # distinct mtimes
        tail.poll()
        got = cids(tail.drain())
        assert sorted(got) == sorted(f"{p.name}-{rnd}" for p in shards)
        assert tail.stats["open_files"] <= 2
    tail.stop()


def test_backlog_starts_at_a_whole_line_within_the_last_bytes(tmp_path):
    log = tmp_path / "chat.jsonl"
    w = LogWriter(log)
    for i in range(50):
        assert w.append(make_record(conversation_id=f"c{i:02d}", turn=0, user_text=f"question {i:02d}",
                                    response="ok", latency_ms=1, source="api", backend="echo"))
    line = log.read_bytes().split(b"\n")[-2] + b"\n"
    tail = LogTail(log, backlog_bytes=len(line) * 3 + 5)  # three whole lines and part of a fourth
    tail.poll()
    assert [r["conversation_id"] for r in tail.drain()] == ["c47", "c48", "c49"]
    assert w.append(make_record(conversation_id="c50", turn=0, user_text="new", response="ok",
                                latency_ms=1, source="api", backend="echo"))
    tail.poll()
    assert [r["conversation_id"] for r in tail.drain()] == ["c50"]
    whole = LogTail(log, backlog_bytes=10**9)
    whole.poll()
    assert len(whole.drain()) == 51


def test_a_shard_read_again_is_announced_once_in_order(tmp_path):
    from chatcore.log.follow import Reset

    log = tmp_path / "log.jsonl"
    tail = LogTail(tmp_path, from_start=True)
    append(log, "a", "b")
    tail.poll()
    assert cids(tail.drain(resets=True)) == ["a", "b"]
    # rewritten in place (same file), not through forget: read again from its start
    with open(log, "r+b") as f:
        f.truncate(0)
        f.write(line("a2") + line("b"))
    tail.poll()
    got = tail.drain(resets=True)
    assert got[0] == Reset("log.jsonl", "rewritten")
    assert cids(got[1:]) == ["a2", "b"]
    # truncated, and stale records still queued are not handed out
    append(log, "c")
    tail.poll()
    with open(log, "r+b") as f:
        f.truncate(0)
    append(log, "d")
    tail.poll()
    got = tail.drain(resets=True)
    assert got[0] == Reset("log.jsonl", "truncated") and cids(got[1:]) == ["d"]
    tail.poll()
    assert tail.drain(resets=True) == []  # once
    # readers that hold nothing per shard see records only
    with open(log, "r+b") as f:
        f.truncate(0)
    append(log, "e")
    tail.poll()
    assert cids(tail.drain()) == ["e"]
    tail.stop()


def test_a_full_queue_drops_records_never_a_reset(tmp_path):
    from chatcore.log.follow import Reset

    log = tmp_path / "log.jsonl"
    tail = LogTail(tmp_path, from_start=True, max_queue=2)
    append(log, "a")
    tail.poll()
    with open(log, "r+b") as f:
        f.truncate(0)
    tail.poll()
    append(log, "b", "c", "d")
    tail.poll()
    got = tail.drain(resets=True)
    assert got[0] == Reset("log.jsonl", "truncated") and cids(got[1:]) == ["c", "d"]
    assert tail.stats["dropped"] == 1  # "b" ("a" was stale: its shard was read again)
    tail.stop()

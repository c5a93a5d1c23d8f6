"""The writer: whole lines only, across threads and processes, and failures counted."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import signal
import threading

import pytest

from chatcore.log.records import make_record
from chatcore.log.writer import LogWriter

PROCS, THREADS, PER_THREAD = 4, 4, 500
BIG = 70 * 1024  # over 64 KB: larger than a pipe buffer, written in more than one go by some kernels


def _payload(p: int, t: int, i: int) -> str:
    size = BIG if i % 50 == 0 else 40 + (i * 37) % 400
    return f"p{p}t{t}i{i}:" + ("x" * size)


def _writer_process(path: str, p: int) -> None:
    writer = LogWriter(path)

    def work(t: int) -> None:
        for i in range(PER_THREAD):
            rec = make_record(conversation_id=f"p{p}-t{t}", turn=i, user_text=_payload(p, t, i),
                              response="ok", latency_ms=1, source="api", backend="test")
            assert writer.append(rec)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert writer.errors == 0


def test_processes_and_threads_never_tear_or_lose_a_line(tmp_path):
    path = tmp_path / "sub" / "log.jsonl"  # folder created by the writer
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer_process, args=(str(path), p)) for p in range(PROCS)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join(120)
        assert pr.exitcode == 0
    data = path.read_bytes()
    assert data.endswith(b"\n")
    lines = data.split(b"\n")[:-1]
    assert len(lines) == PROCS * THREADS * PER_THREAD
    seen = set()
    for line in lines:
        rec = json.loads(line)  # a torn or interleaved line would not parse
        p, t = rec["conversation_id"][1], rec["conversation_id"][4]
        assert rec["user_text"] == _payload(int(p), int(t), rec["turn"])
        seen.add((rec["conversation_id"], rec["turn"]))
    assert len(seen) == PROCS * THREADS * PER_THREAD
    assert sum(1 for line in lines if len(line) > 64 * 1024) == PROCS * THREADS * (PER_THREAD // 50)


def test_partial_write_is_rolled_back_and_writing_resumes(tmp_path):
    """With a file size limit the big line cannot fit: nothing of it stays; small lines go on."""
    path = tmp_path / "log.jsonl"
    writer = LogWriter(path)
    assert writer.append({"conversation_id": "a", "n": 1})
    size_before = path.stat().st_size
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size_before + 1000, hard))
    try:
        assert not writer.append({"conversation_id": "b", "text": "y" * 5000})
        assert writer.errors == 1 and "too large" in writer.last_error
        assert path.stat().st_size == size_before  # the torn part was truncated away
        assert writer.append({"conversation_id": "c", "n": 3})  # a small line still fits
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert writer.append({"conversation_id": "d", "text": "y" * 5000})  # space is back
    ids = [json.loads(l)["conversation_id"] for l in path.read_text().splitlines()]
    assert ids == ["a", "c", "d"]
    assert writer.written == 3


def test_rotation_reopens_the_file(tmp_path):
    path = tmp_path / "log.jsonl"
    writer = LogWriter(path)
    writer.append({"n": 1})
    os.rename(path, tmp_path / "log.jsonl.1")
    writer.append({"n": 2})
    assert [json.loads(l)["n"] for l in path.read_text().splitlines()] == [2]
    assert [json.loads(l)["n"] for l in (tmp_path / "log.jsonl.1").read_text().splitlines()] == [1]


def test_unserialisable_record_is_counted_not_raised(tmp_path):
    writer = LogWriter(tmp_path / "log.jsonl")
    assert not writer.append({"x": object()})
    assert writer.errors == 1 and not (tmp_path / "log.jsonl").exists()


@pytest.mark.parametrize("line", [b"no newline", b"two\nlines\n"])
def test_only_single_whole_lines_are_accepted(tmp_path, line):
    writer = LogWriter(tmp_path / "log.jsonl")
    assert not writer.append_line(line)

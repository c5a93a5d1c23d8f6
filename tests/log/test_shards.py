"""The one follower of the log's shards (chatcore.log.shards) and the one block reader, and the
"read again from the start" signal as the annotations' reader uses it."""
from __future__ import annotations

import json
import os

from chatcore.log import annotations
from chatcore.log.retention import forget
from chatcore.log.shards import REPLACED, REWRITTEN, TRUNCATED, ShardFollower, line_blocks, shard_paths


def _line(cid: str, n: int = 0, pad: int = 0) -> bytes:
    return (json.dumps({"conversation_id": cid, "turn": n, "text": "x" * pad}) + "\n").encode()


def _read(follower: ShardFollower, **kw) -> list[tuple[str, str | None, bool, bytes]]:
    """(shard name, reset, gone, bytes read) per change."""
    out = []
    for ch in follower.changes(**kw):
        data = b"" if ch.gone else b"".join(d for _, d in ch.blocks())
        out.append((ch.name, ch.reset, ch.gone, data))
    return out


def test_line_blocks_hold_back_a_partial_line_and_keep_long_lines_whole(tmp_path):
    p = tmp_path / "a.jsonl"
    lines = [_line("a", i, pad=(300 if i == 3 else 5)) for i in range(8)]
    p.write_bytes(b"".join(lines) + b'{"conversation_id": "half')
    with open(p, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        blocks = list(line_blocks(f.fileno(), 0, size, block_bytes=64))
    assert b"".join(d for _, d in blocks) == b"".join(lines)
    assert all(d.endswith(b"\n") for _, d in blocks)
    assert all(off + len(d) == nxt for (off, d), (nxt, _) in zip(blocks, blocks[1:]))
    assert any(d == lines[3] or lines[3] in d for _, d in blocks)  # a line longer than a block, whole


def test_line_blocks_read_into_the_consumers_buffers_give_the_same_blocks(tmp_path):
    """With ``into`` each block is read into a buffer the consumer hands out (here two, taken in
    turn): the blocks are the same as without, a line longer than a block still comes whole, and
    a block's bytes are those of the buffer it was read into."""
    p = tmp_path / "a.jsonl"
    lines = [_line("a", i, pad=(300 if i in (3, 7) else 5 * i)) for i in range(12)]
    p.write_bytes(b"".join(lines) + b'{"conversation_id": "half')
    buffers = [bytearray(64), bytearray(64)]
    handed: list[bytearray] = []

    def into(n: int) -> bytearray:
        assert n <= 64
        buf = buffers[len(handed) % 2]
        buf[:] = b"\xff" * len(buf)  # whatever the consumer left there
        handed.append(buf)
        return buf

    with open(p, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        plain = list(line_blocks(f.fileno(), 0, size, block_bytes=64))
        seen = []
        for off, data in line_blocks(f.fileno(), 0, size, block_bytes=64, into=into):
            if isinstance(data, memoryview):
                assert data.obj is handed[-1]  # no copy
            seen.append((off, bytes(data)))  # (valid until the next block is read into the buffer)
    assert seen == plain
    assert any(lines[3] in d for _, d in seen) and len(handed) >= len(seen)


def test_shard_paths_are_the_jsonl_files_of_a_folder_in_order(tmp_path):
    for name in ("b.jsonl", "a.jsonl", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "feedback.jsonl").write_bytes(b"")
    assert [p.name for p in shard_paths(tmp_path)] == ["a.jsonl", "b.jsonl"]
    assert shard_paths(tmp_path / "a.jsonl") == [tmp_path / "a.jsonl"]


def test_the_follower_tells_appended_replaced_truncated_rewritten_and_gone(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_bytes(_line("a1"))
    follower = ShardFollower(tmp_path)
    assert _read(follower) == [("a.jsonl", None, False, _line("a1"))]
    assert _read(follower) == []  # nothing changed
    with open(a, "ab") as f:  # appended, with half a line
        f.write(_line("a2") + b'{"conv')
    assert _read(follower) == [("a.jsonl", None, False, _line("a2"))]
    with open(a, "ab") as f:
        f.write(b'ersation_id": "a3"}\n')
    assert _read(follower) == [("a.jsonl", None, False, b'{"conversation_id": "a3"}\n')]
    # replaced by a rename (rotation, forget): read again from the start
    tmp = tmp_path / "x.tmp"
    tmp.write_bytes(_line("r1"))
    os.replace(tmp, a)
    assert _read(follower) == [("a.jsonl", REPLACED, False, _line("r1"))]
    # truncated
    a.write_bytes(b"")
    assert _read(follower) == [("a.jsonl", TRUNCATED, False, b"")]
    a.write_bytes(_line("t1", pad=20) + _line("t2", pad=20))
    _read(follower)
    # rewritten in place, same size, without a new inode
    st = a.stat()
    with open(a, "r+b") as f:
        f.write(_line("zz", pad=20))
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    assert _read(follower) == [("a.jsonl", REWRITTEN, False, _line("zz", pad=20) + _line("t2", pad=20))]
    # a new shard, and a shard gone
    b.write_bytes(_line("b1"))
    a.unlink()
    assert _read(follower) == [("a.jsonl", None, True, b""), ("b.jsonl", None, False, _line("b1"))]


def test_a_held_open_shard_is_read_to_its_end_after_a_rotation(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_bytes(_line("1"))
    follower = ShardFollower(tmp_path, keep_open=8)
    _read(follower)
    with open(a, "ab") as f:
        f.write(_line("2"))  # written just before the rotation
    os.rename(a, tmp_path / "a.jsonl.1")  # not a shard name any more
    a.write_bytes(_line("3"))
    got = _read(follower)
    assert [g[3] for g in got] == [_line("2"), _line("3")]
    assert got[1][1] == REPLACED and follower.rotations == 1
    follower.close()


def test_select_neither_reads_nor_reports_gone(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(_line("a"))
    (tmp_path / "b.jsonl").write_bytes(_line("b"))
    follower = ShardFollower(tmp_path)
    assert [g[0] for g in _read(follower, select=lambda p: p.endswith("a.jsonl"))] == ["a.jsonl"]
    assert [g[0] for g in _read(follower, select=lambda p: p.endswith("b.jsonl"))] == ["b.jsonl"]
    assert _read(follower) == []


def test_an_unread_change_is_offered_again(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_bytes(_line("1") + _line("2"))
    follower = ShardFollower(tmp_path)
    for ch in follower.changes():
        for _ in ch.blocks(block_bytes=len(_line("1"))):
            break  # the consumer stopped before taking the first block
    assert _read(follower) == [("a.jsonl", None, False, _line("1") + _line("2"))]


def test_annotations_reader_drops_a_forgotten_conversation_without_restart(tmp_path):
    log = tmp_path / "chat.jsonl"
    log.write_bytes(b"".join(
        (json.dumps({"ts": "2026-11-01T00:00:00Z", "conversation_id": cid, "turn": 0, "user_text": "hi",
                     "response": "hello"}) + "\n").encode() for cid in ("keep-1", "gone-1")))
    for cid in ("keep-1", "gone-1"):
        annotations.record_feedback(log, cid, 0, "up")
        annotations.add_note(log, cid, f"note about {cid}")
    assert set(annotations.load_feedback(log).conversation_id) == {"keep-1", "gone-1"}
    assert set(annotations.load_annotations(log)) == {"keep-1", "gone-1"}
    forget(log, "gone-1", by="tester")
    # the same process, the same readers: the rewritten files are read again
    assert set(annotations.load_feedback(log).conversation_id) == {"keep-1"}
    assert set(annotations.load_annotations(log)) == {"keep-1"}
    # and the id may be rated afresh (the latest-rating index forgot it too)
    annotations.record_feedback(log, "gone-1", 0, "up")
    assert set(annotations.load_feedback(log).conversation_id) == {"keep-1", "gone-1"}

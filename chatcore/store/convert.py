"""Converting a log written in the seed's shape into the current shape, once
(``python -m chatcore import``).

The seed's Space logged ``timestamp`` (a naive UTC time), the reply as a list of lines and
the whole chat ``history`` before each message, which makes its logs about three times the
size of the same turns in the current shape. The store reads such logs as they are; converting
one keeps every turn as the store reads it and leaves the history out:

* each turn the reader accepts is written as a current-shape line: ``ts`` (the time in UTC, as
  the reference reader reads it: a naive time is UTC), the reply as one text (lines joined by
  ``\\n``), the other fields as read; ``history`` is left out;
* a line already in the current shape (it has a ``ts`` key) and an event line are copied as
  they are;
* a line the reader rejects is left out and counted;
* a last line without its newline (the writer may still be writing it) is not a line yet: left
  out and reported.

The log is read in blocks by the store's parser (the same rows the store would hold), in
parallel, and written in order; the engine writes the JSON text.
"""
from __future__ import annotations

import json
import os
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from chatcore.log.records import BadRecord
from chatcore.log.shards import line_blocks, shard_paths
from chatcore.store.ingest import BLOCK_BYTES, _PARALLEL, _pool
from chatcore.store.parse import parse_block, parse_line

Progress = Callable[[int, int], Any]


@dataclass
class Conversion:
    """What an import wrote: per output file, and the counts over all of them."""

    files: list[Path] = field(default_factory=list)
    turns: int = 0  # turns in the new log
    converted: int = 0  # of which written in the current shape (the others were in it already)
    events: int = 0  # event lines, copied
    bad: Counter = field(default_factory=Counter)  # lines left out, by reason
    unfinished: list[Path] = field(default_factory=list)  # shards whose last line has no newline yet
    bytes_in: int = 0
    bytes_out: int = 0


def shards_of(log: Path) -> list[Path]:
    """The files of a log: the file itself, or every ``*.jsonl`` in a folder (as the store reads them)."""
    return shard_paths(log)


def targets(log: Path, out: Path) -> list[tuple[Path, Path]]:
    """(source, destination) for each shard of ``log`` written into the folder ``out``."""
    return [(p, out / p.name) for p in shards_of(log)]


_ENGINE = threading.local()


def _engine():
    """One DuckDB connection per thread (blocks are converted in parallel)."""
    con = getattr(_ENGINE, "con", None)
    if con is None:
        import duckdb

        con = _ENGINE.con = duckdb.connect(":memory:")
        con.execute("SET threads = 1")
    return con


#: One current-shape line per row, in the order the Space writes the keys (see make_record).
_LINE_SQL = (
    "SELECT to_json(struct_pack(v := v, ts := ts_text, conversation_id := conversation_id, turn := turn, "
    "user_text := user_text, files := list_transform(files, x -> struct_pack(name := x)), response := response, "
    "latency_ms := latency_ms, source := source, backend := backend, model := model, error := error, "
    "session := session)) AS line FROM rows"
)


def current_lines(table: pa.Table) -> pa.Array:
    """Rows of the store (all columns) as current-shape JSON lines (without newlines)."""
    text = pc.strftime(table.column("ts"), format="%Y-%m-%dT%H:%M:%SZ")  # microseconds, 4-digit year
    rows = table.append_column("ts_text", text)
    con = _engine()
    con.register("rows", rows)
    try:
        out = con.execute(_LINE_SQL).to_arrow_table()
    finally:
        con.unregister("rows")
    col = out.column("line")
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _has_ts_key(raw: bytes) -> bool:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        obj = json.loads(raw.decode("utf-8"))  # the reference read it (lenient JSON)
    return isinstance(obj, dict) and "ts" in obj


def convert_block(data: bytes, end: int) -> tuple[bytes, int, int, int, Counter]:
    """The complete lines of ``data[:end]`` converted: (bytes to write, turns, of which
    converted, event lines, lines left out by reason)."""
    bad = Counter()
    table, ids, block = parse_block(data, end, bad)
    n, starts, ends = block.n, block.starts, block.ends
    if n == 0:
        return b"", 0, 0, 0, bad
    row_of = np.full(n, -1, dtype=np.int64)
    row_of[ids] = np.arange(len(ids))
    # lines that may hold a "ts" key (written plainly or with escapes) are in the current
    # shape when they do: copied as they are
    copy = np.zeros(n, dtype=bool)
    for i in block.with_ts():
        if row_of[i] >= 0 and _has_ts_key(data[starts[i]: ends[i]]):
            copy[i] = True
    # a line without a row: an event line is copied, anything else is left out (counted in bad)
    events = bad.pop("event", 0)
    if events:
        for i in np.flatnonzero(row_of < 0):
            try:
                parse_line(data[starts[i]: ends[i]])
            except BadRecord as exc:
                if exc.reason == "event":
                    copy[i] = True
    convert = (row_of >= 0) & ~copy
    converted = int(convert.sum())
    if converted == n:  # the usual block of a seed-shaped log: every line converted
        lines = current_lines(table)
        joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines), "\n")
        return joined[0].as_buffer().to_pybytes() + b"\n", n, n, 0, bad
    texts = current_lines(table.take(pa.array(row_of[convert]))).to_pylist() if converted else []
    out, k = [], 0
    for i in range(n):
        if convert[i]:
            out.append(texts[k].encode())
            k += 1
        elif copy[i]:
            out.append(bytes(data[starts[i]: ends[i]]))
    return (b"\n".join(out) + b"\n") if out else b"", len(ids), converted, events, bad


def convert_log(log: Path, out: Path, progress: Progress | None = None) -> Conversion:
    """Write the current-shape copy of ``log`` (a file or a folder of shards) into the folder
    ``out``, one file per shard with the same name. Never overwrites: FileExistsError when a
    destination exists (checked before anything is written, and again when each file is put
    in place)."""
    pairs = targets(Path(log), Path(out))
    taken = [dst for _, dst in pairs if dst.exists()]
    if taken:
        raise FileExistsError(taken[0])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = Conversion()
    total = sum(src.stat().st_size for src, _ in pairs)
    done = 0
    for src, dst in pairs:
        tmp = dst.with_name(f".{dst.name}.importing.{os.getpid()}")
        try:
            with open(src, "rb") as fin, open(tmp, "xb") as fout:
                done, finished = _convert_file(fin.fileno(), fout, result, progress, done, total)
            _put_in_place(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
        result.files.append(dst)
        if not finished:
            result.unfinished.append(src)
        result.bytes_out += dst.stat().st_size
    result.bytes_in = total
    return result


def _put_in_place(tmp: Path, dst: Path) -> None:
    """``tmp`` becomes ``dst`` unless ``dst`` exists (FileExistsError): a hard link fails rather
    than replace a file written meanwhile; where the file system has no hard links, a rename
    after a last check."""
    try:
        os.link(tmp, dst)
    except FileExistsError:
        raise
    except OSError:
        if dst.exists():
            raise FileExistsError(dst) from None
        os.rename(tmp, dst)


def _convert_file(fd: int, fout, result: Conversion, progress: Progress | None, done: int, total: int
                  ) -> tuple[int, bool]:
    """Convert one shard block by block (in parallel, written in order); returns the bytes done
    so far and whether the shard ended with a complete line."""
    size = os.fstat(fd).st_size
    pos = 0
    inflight: deque = deque()
    pool = _pool()

    def collect() -> None:
        nonlocal done
        length, fut = inflight.popleft()
        text, turns, converted, events, bad = fut.result()
        fout.write(text)
        result.turns += turns
        result.converted += converted
        result.events += events
        result.bad.update(bad)
        done += length
        if progress is not None:
            progress(min(done, total), total)

    try:
        for start, data in line_blocks(fd, 0, size, BLOCK_BYTES):
            n = len(data)
            inflight.append((n, pool.submit(convert_block, data, n)))
            pos = start + n
            while len(inflight) > _PARALLEL or (inflight and inflight[0][1].done()):
                collect()
        while inflight:
            collect()
    finally:
        for _, fut in inflight:
            fut.cancel()
    return done, pos >= size

"""Incremental, cached reader for the JSONL chat log.

:class:`LogStore` keeps a byte offset per shard (one file, or every ``*.jsonl`` in
a folder) and parses only the bytes appended since the last :meth:`LogStore.refresh`.
A last line without its ``\\n`` is *pending*, not bad, until the writer finishes it.
Truncation, replacement (new inode), deletion and new shards are all handled.

Parsing is block-wise. A block of complete lines goes through ``pyarrow.json`` with
an explicit schema; rows that the vectorised checks cannot vouch for, and blocks the
fast parser rejects, are bisected down to small runs of lines that are parsed one by
one with :func:`parse_line` (``orjson`` + :func:`chatcore.records.normalise`), which is
the reference for what a good line is. Either path gives the same rows and the same
bad-line counts.

Parsed rows are persisted per shard as Arrow IPC segments in ``cache_dir`` (default
``<log folder>/.chatcore-cache``). A cached shard is reused only if its device, inode
and size still fit and a fingerprint (hash of the head, the tail and a few samples in
between of the cached byte range) still matches, so a shard rewritten in place with
the same size and mtime is detected and read again. Failing to write the cache never
breaks reading. (A same-size rewrite that only touches bytes between the samples
is not seen; any change to the first or last 64 KB is.)

:attr:`LogStore.frame` columns are :data:`chatcore.records.COLUMNS` (or the
projection asked for), with these dtypes:

* ``ts``: ``datetime64[us, UTC]``
* ``conversation_id``, ``user_text``, ``response``, ``source``, ``backend``,
  ``model``, ``session``: pandas ``str`` (Arrow-backed; missing is NaN)
* ``turn``: ``Int64`` (nullable); ``latency_ms``: ``float64``; ``v``: ``int64``
* ``error``: ``object``, ``None`` when there was no error
* ``files``: ``object``, a ``list`` of file names per row

Rows are in shard order (sorted file names), then file order. Frames handed out
are copy-on-write views: changing one does not change the store.
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import threading
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.json as pajson

from .records import BAD_REASONS, COLUMNS, BadRecord, normalise

__all__ = ["LogStore", "load_log", "parse_line", "parse_bytes", "ARROW_SCHEMA"]

Progress = Callable[[int, int], Any]

CACHE_VERSION = 3
#: Bytes read and parsed at once.
BLOCK_BYTES = 8 << 20
#: pyarrow's block size inside one of our blocks (a longer line takes the slow path).
ARROW_BLOCK = 1 << 20
#: Below this many lines a run is parsed line by line.
MIN_FAST_LINES = 16
#: A shard's cache is (re)written when at least this many parsed bytes are not in it.
CACHE_MIN_BYTES = 1 << 20
#: ... except the first segment of a shard, written from this size on.
CACHE_FIRST_BYTES = 64 << 10
#: Segments per shard before the small ones are merged.
MAX_SEGMENTS = 8
_FP_EDGE = 64 << 10
_FP_SAMPLE = 4 << 10
_FP_SAMPLES = 16
_DAY_RE = re.compile(r"(\d{4}-\d{2}-\d{2})")

UTC_US = pa.timestamp("us", tz="UTC")
#: Text is stored as large_string: what pandas' "str" dtype holds, so no copy later.
STR = pa.large_string()

#: The normalised columns as stored (cache and memory).
ARROW_SCHEMA = pa.schema(
    [
        ("ts", UTC_US),
        ("conversation_id", STR),
        ("turn", pa.int64()),
        ("user_text", STR),
        ("response", STR),
        ("latency_ms", pa.float64()),
        ("source", STR),
        ("backend", STR),
        ("model", STR),
        ("error", STR),
        ("files", pa.list_(pa.string())),
        ("session", STR),
        ("v", pa.int64()),
    ]
)
assert tuple(ARROW_SCHEMA.names) == COLUMNS

#: What the fast parser reads from a v1 line (everything else is ignored): the stored
#: columns, but ``ts`` as text (parsed afterwards) and ``files`` as ``{"name"}`` objects.
_JSON_SCHEMA = ARROW_SCHEMA.set(0, pa.field("ts", STR)).set(
    ARROW_SCHEMA.get_field_index("files"), pa.field("files", pa.list_(pa.struct([("name", pa.string())])))
)
_PARSE_OPTIONS = pajson.ParseOptions(
    explicit_schema=_JSON_SCHEMA, unexpected_field_behavior="ignore", newlines_in_values=False
)
#: Single-threaded inside one call: our blocks are parsed in parallel by our own threads.
_READ_OPTIONS = pajson.ReadOptions(use_threads=False, block_size=ARROW_BLOCK)


# --------------------------------------------------------------------------- one line


def _check_text(rec: dict) -> None:
    for key in ("conversation_id", "user_text", "response", "source", "backend", "model", "error", "session"):
        value = rec[key]
        if value is not None:
            value.encode("utf-8")
    for name in rec["files"]:
        name.encode("utf-8")


def parse_line(raw: bytes) -> dict:
    """Decode and normalise one log line (without its newline), or raise BadRecord.

    This is the reference semantics: JSON is decoded with orjson, and with the
    standard library when orjson refuses it (which also accepts ``NaN`` and
    ``Infinity``); a line that ends in the middle of a JSON value is ``truncated``.
    """
    raw = bytes(raw)
    if not raw.strip(b" \t\r\n"):
        raise BadRecord("blank")
    lenient = False
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRecord("bad_utf8") from None
        if str(exc).startswith("unexpected end of data") and raw.lstrip(b" \t\r\n")[:1] in (b"{", b"["):
            raise BadRecord("truncated") from None
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            raise BadRecord("not_json") from None
        lenient = True
    try:
        rec = normalise(obj)
    except BadRecord:
        raise
    except Exception:  # e.g. float() of a 400-digit integer
        raise BadRecord("wrong_type") from None
    if not -(2**63) <= rec["v"] < 2**63:
        raise BadRecord("wrong_type")  # cannot be stored in the int64 column
    if lenient:
        try:
            _check_text(rec)
        except UnicodeEncodeError:  # a lone surrogate from "\\ud800"
            raise BadRecord("bad_utf8") from None
    return rec


def _records_to_table(recs: list[dict]) -> pa.Table:
    cols = {name: [r[name] for r in recs] for name in COLUMNS}
    arrays = [pa.array(cols[f.name], type=f.type) for f in ARROW_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)


# --------------------------------------------------------------------------- a block


_SCRATCH = threading.local()


def _newlines(arr: np.ndarray) -> np.ndarray:
    """Positions of b"\\n" in arr (a per-thread scratch buffer avoids page faults)."""
    scratch = getattr(_SCRATCH, "buf", None)
    if scratch is None or len(scratch) < len(arr):
        scratch = _SCRATCH.buf = np.empty(max(len(arr), BLOCK_BYTES + (1 << 20)), dtype=bool)
    eq = np.equal(arr, 10, out=scratch[: len(arr)])
    return np.flatnonzero(eq)


class _Block:
    """The complete lines in ``data[:end]``; line i is ``data[starts[i]:ends[i]]``
    (ends exclude the newline)."""

    __slots__ = ("data", "end", "buf", "arr", "n", "starts", "ends")

    def __init__(self, data: bytes, end: int):
        self.data, self.end = data, end
        self.buf = memoryview(data)
        self.arr = np.frombuffer(self.buf[:end], dtype=np.uint8)
        nl = _newlines(self.arr)
        starts = np.empty_like(nl)
        if len(nl):
            starts[0] = 0
            starts[1:] = nl[:-1] + 1
        self.starts, self.ends, self.n = starts, nl, len(nl)

    def span(self, lo: int, hi: int) -> tuple[int, int]:
        """Byte range of lines lo..hi-1 including the last newline."""
        return int(self.starts[lo]), int(self.ends[hi - 1]) + 1

    def simple(self, lo: int, hi: int) -> bool:
        """Every line lo..hi-1 is a bare ``{...}`` (not blank, no spaces around):
        what the writer produces."""
        if hi <= lo:
            return False
        arr, starts, ends = self.arr, self.starts[lo:hi], self.ends[lo:hi]
        if (ends - starts < 2).any():
            return False
        return bool((arr[starts] == 0x7B).all() and (arr[ends - 1] == 0x7D).all())


def _utf8_ok(mv: memoryview) -> bool:
    try:
        data = pa.py_buffer(mv)
        offsets = pa.py_buffer(np.array([0, len(mv)], dtype=np.int32))
        pa.StringArray.from_buffers(1, offsets, data).validate(full=True)
        return True
    except pa.ArrowInvalid:
        return False


def _np_bool(x) -> np.ndarray:
    if isinstance(x, pa.ChunkedArray):
        if x.num_chunks == 0:
            return np.zeros(0, dtype=bool)
        x = pa.concat_arrays(x.chunks) if x.num_chunks > 1 else x.chunk(0)
    return np.asarray(x.to_numpy(zero_copy_only=False), dtype=bool)


_NULL_F64 = pa.scalar(None, pa.float64())
_EMPTY = pa.scalar("", STR)
_UNKNOWN = pa.scalar("unknown", STR)


_ROW_RE = re.compile(r"in row (\d+)\s*$")
#: Times pyarrow's cast reads exactly like datetime.fromisoformat (with a zone).
_TS_RE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)$"
_TS_NAIVE_RE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?$"


def _fast_buf(mv, nlines: int, ascii_ok: bool = False):
    """Parse ``nlines`` bare ``{...}`` lines with pyarrow.

    Returns (table of good rows, bool mask of the lines it vouches for), or an int:
    the row pyarrow complained about (a hint, not a promise), or None."""
    if not ascii_ok and not _utf8_ok(mv):
        return None
    try:
        t = pajson.read_json(pa.BufferReader(pa.py_buffer(mv)), read_options=_READ_OPTIONS, parse_options=_PARSE_OPTIONS)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowException) as exc:
        m = _ROW_RE.search(str(exc))
        return int(m.group(1)) if m else None
    if t.num_rows != nlines:
        return None
    return _vouch(t)


def _fast(block: _Block, lo: int, hi: int):
    """Lines lo..hi-1 of a block through pyarrow (see _fast_buf)."""
    if not block.simple(lo, hi):
        return None
    s, e = block.span(lo, hi)
    return _fast_buf(block.buf[s:e], hi - lo, ascii_ok=block.data.isascii())


def _vouch(t: pa.Table) -> tuple[pa.Table, np.ndarray] | None:
    cid = t.column("conversation_id")
    ok = pc.fill_null(pc.greater(pc.utf8_length(cid), 0), False)
    ok = pc.and_(ok, pc.is_valid(t.column("ts")))
    turn = t.column("turn")
    if turn.null_count < len(turn):
        ok = pc.and_(ok, pc.fill_null(pc.and_(pc.greater_equal(turn, 0), pc.less(turn, 2**31)), True))
    lat = t.column("latency_ms")
    if lat.null_count < len(lat):
        # NaN, Infinity or a number too big for a double: let the reference decide
        ok = pc.and_(ok, pc.fill_null(pc.is_finite(lat), True))
    files = t.column("files")
    mask = _np_bool(ok)
    if pc.sum(pc.list_value_length(files)).as_py():
        # a file entry without a string "name" is a wrong_type line: leave it to the slow path
        for_rows = np.zeros(t.num_rows, dtype=bool)
        base = 0
        for c in files.chunks:
            flat = c.flatten()
            bad_item = _np_bool(pc.is_null(pc.struct_field(flat, [0])))
            if bad_item.any():
                parent = np.asarray(pc.list_parent_indices(c).to_numpy(zero_copy_only=False))
                for_rows[base + parent[bad_item]] = True
            base += len(c)
        mask &= ~for_rows
    zoned = None
    try:
        ts_all = pc.cast(t.column("ts"), UTC_US)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # naive times (taken as UTC, like parse_ts) and times with a zone are read
        # here; other forms take the slow path
        ts_all = None
        zoned = pc.fill_null(pc.match_substring_regex(t.column("ts"), _TS_RE), False)
        naive = pc.fill_null(pc.match_substring_regex(t.column("ts"), _TS_NAIVE_RE), False)
        mask &= _np_bool(pc.or_(zoned, naive))
    if not mask.all():
        keep = pa.array(mask)
        t = t.filter(keep)
        if ts_all is not None:
            ts_all = ts_all.filter(keep)
        if zoned is not None:
            zoned = zoned.filter(keep)
    if ts_all is not None:
        ts = ts_all
    else:
        raw = t.column("ts")
        try:
            with_zone = pc.cast(pc.if_else(zoned, raw, pa.scalar("1970-01-01T00:00:00Z", STR)), UTC_US)
            no_zone = pc.cast(pc.if_else(zoned, pa.scalar("1970-01-01T00:00:00", STR), raw), pa.timestamp("us"))
            ts = pc.if_else(zoned, with_zone, pc.cast(no_zone, UTC_US))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
    lat = t.column("latency_ms")
    if lat.null_count < len(lat):
        lat = pc.if_else(pc.fill_null(pc.less(lat, 0.0), False), _NULL_F64, lat)
    src = t.column("source")
    src = pc.if_else(pc.fill_null(pc.greater(pc.utf8_length(src), 0), False), src, _UNKNOWN)
    def nonull(col, fill):
        return col if col.null_count == 0 else pc.fill_null(col, fill)
    out = pa.Table.from_arrays(
        [
            ts,
            cid if mask.all() else t.column("conversation_id"),
            t.column("turn"),
            nonull(t.column("user_text"), _EMPTY),
            nonull(t.column("response"), _EMPTY),
            lat,
            src,
            t.column("backend"),
            t.column("model"),
            t.column("error"),
            _file_names(t.column("files")),
            t.column("session"),
            nonull(t.column("v"), 0),
        ],
        schema=ARROW_SCHEMA,
    )
    return out, mask


def _file_names(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """list<struct<name>> (nulls allowed) -> list<string> (null -> [])."""
    out = []
    for c in col.chunks:
        lengths = np.asarray(pc.fill_null(pc.list_value_length(c), 0).to_numpy(zero_copy_only=False), dtype=np.int32)
        offsets = np.zeros(len(c) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        names = pc.struct_field(c.flatten(), [0])
        out.append(pa.ListArray.from_arrays(pa.array(offsets), names, type=pa.list_(pa.string())))
    return pa.chunked_array(out, type=pa.list_(pa.string()))


def _slow(block: _Block, idx: Iterable[int], bad: Counter) -> tuple[list[int], pa.Table]:
    keep, recs = [], []
    buf = block.buf
    for i in idx:
        try:
            rec = parse_line(buf[int(block.starts[i]) : int(block.ends[i])])
        except BadRecord as exc:
            bad[exc.reason] += 1
            continue
        keep.append(i)
        recs.append(rec)
    try:
        return keep, _records_to_table(recs)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        # parse_line should only return storable records; never fail a block on one
        k2, r2 = [], []
        for i, r in zip(keep, recs):
            try:
                _records_to_table([r])
            except (pa.ArrowException, OverflowError, TypeError, ValueError):
                bad["wrong_type"] += 1
                continue
            k2.append(i)
            r2.append(r)
        return k2, _records_to_table(r2)


def _parse_ids(block: _Block, ids: np.ndarray, bad: Counter, out: list) -> None:
    """Parse the lines ``ids`` (sorted, each a bare ``{...}``); append (ids, table)."""
    limit = len(ids)  # lines per pyarrow call; shrinks where bad lines are dense
    while len(ids):
        if len(ids) < MIN_FAST_LINES:
            _slow_out(block, ids, bad, out)
            return
        part, rest = ids[:limit], ids[limit:]
        starts, ends = block.starts, block.ends
        if part[-1] - part[0] + 1 == len(part):  # consecutive lines: no copy
            mv = block.buf[int(starts[part[0]]) : int(ends[part[-1]]) + 1]
        else:
            mv = memoryview(b"".join(block.buf[int(starts[i]) : int(ends[i]) + 1] for i in part))
        res = _fast_buf(mv, len(part))
        if isinstance(res, tuple):
            table, mask = res
            out.append((part if mask.all() else part[mask], table))
            if not mask.all():
                _slow_out(block, part[~mask], bad, out)
            ids, limit = rest, min(len(ids), limit * 2)
            continue
        if isinstance(res, int) and 0 <= res < len(part):
            # pyarrow named the row it choked on: the lines before it are parsed on
            # their own, that line takes the slow path, and we carry on after it
            if res:
                _parse_ids(block, part[:res], bad, out)
            _slow_out(block, part[res : res + 1], bad, out)
            ids = ids[res + 1 :]
            limit = max(4 * MIN_FAST_LINES, 2 * (res + 1))
            continue
        if len(part) < 2 * MIN_FAST_LINES:
            _slow_out(block, part, bad, out)
            ids = rest
            continue
        half = len(part) // 2
        _parse_ids(block, part[:half], bad, out)
        ids = ids[half:]
        limit = len(part) - half


def _lines_with(block: _Block, needles: tuple[bytes, ...]) -> np.ndarray:
    """Indices of the lines that contain any of ``needles``."""
    hits = []
    data, end = block.data, block.end
    for needle in needles:
        pos = data.find(needle, 0, end)
        while pos >= 0:
            hits.append(pos)
            pos = data.find(needle, pos + 1, end)
    if not hits:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.searchsorted(block.ends, np.asarray(hits)))


def _slow_out(block: _Block, ids, bad: Counter, out: list) -> None:
    keep, t = _slow(block, ids, bad)
    if keep:
        out.append((np.asarray(keep), t))


def _parse_lines(block: _Block, bad: Counter) -> list:
    """[(line ids or None for all, table)] for every line of the block."""
    n = block.n
    if n == 0:
        return []
    if n >= MIN_FAST_LINES:
        res = _fast(block, 0, n)
        if isinstance(res, tuple):
            table, mask = res
            if mask.all():
                return [(None, table)]
            out = [(np.flatnonzero(mask), table)]
            keep, t = _slow(block, np.flatnonzero(~mask), bad)
            if keep:
                out.append((np.asarray(keep), t))
            return out
    # the general path: lines that are not a bare {...} go to the slow path, the
    # others through pyarrow in pieces of about ARROW_BLOCK bytes
    starts, ends, arr = block.starts, block.ends, block.arr
    nonempty = ends > starts
    simple = nonempty.copy()
    simple[nonempty] = (arr[starts[nonempty]] == 0x7B) & (arr[ends[nonempty] - 1] == 0x7D)
    out: list = []
    other = np.flatnonzero(~simple)
    if len(other):
        keep, t = _slow(block, other, bad)
        if keep:
            out.append((np.asarray(keep), t))
    # lines of the older shape (response as a list of lines, "timestamp") would
    # only make pyarrow fail: send them straight to the slow path
    suspects = _lines_with(block, (b'"response":[', b'"response": [', b'"timestamp":'))
    suspects = suspects[simple[suspects]]
    if len(suspects):
        simple[suspects] = False
        _slow_out(block, suspects, bad, out)
    ids = np.flatnonzero(simple)
    if len(ids):
        sizes = (ends[ids] - starts[ids] + 1).astype(np.int64)
        piece = np.cumsum(sizes) // (ARROW_BLOCK - (64 << 10))
        cuts = np.flatnonzero(np.diff(piece)) + 1
        for part in np.split(ids, cuts):
            _parse_ids(block, part, bad, out)
    return out


def parse_bytes(buf: bytes | memoryview, bad: Counter | None = None) -> tuple[pa.Table, Counter]:
    """Parse complete lines (``buf`` must end with ``\\n`` or hold only complete lines;
    bytes after the last newline are ignored). Returns (rows, bad counts)."""
    bad = Counter() if bad is None else bad
    buf = bytes(buf)
    return _parse_data(buf, buf.rfind(b"\n") + 1, bad)


def _parse_data(buf: bytes, end: int, bad: Counter) -> tuple[pa.Table, Counter]:
    block = _Block(buf, end)
    pieces = [p for p in _parse_lines(block, bad) if p[1].num_rows]
    if not pieces:
        return ARROW_SCHEMA.empty_table(), bad
    if len(pieces) == 1:
        return pieces[0][1], bad
    table = pa.concat_tables([p[1] for p in pieces])
    ids = np.concatenate([p[0] for p in pieces])
    if (np.diff(ids) < 0).any():
        table = table.take(pa.array(np.argsort(ids, kind="stable")))
    return table, bad


# --------------------------------------------------------------------------- pandas


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow rows -> the documented frame dtypes."""
    data = {}
    for name in table.column_names:
        col = table.column(name)
        if name == "files":
            data[name] = _lists(col)
        elif name == "error":
            data[name] = _objects(col)
        elif name == "turn":
            data[name] = col.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
        else:
            data[name] = col.to_pandas()
    df = pd.DataFrame(data, copy=False)
    return df


def _objects(col: pa.ChunkedArray) -> pd.Series:
    n = len(col)
    out = np.full(n, None, dtype=object)
    if col.null_count < n:
        valid = np.asarray(pc.is_valid(col).to_numpy(zero_copy_only=False), dtype=bool)
        idx = np.flatnonzero(valid)
        out[idx] = pc.drop_null(col).to_pylist()
    return pd.Series(out, dtype=object)


def _lists(col: pa.ChunkedArray) -> pd.Series:
    n = len(col)
    lengths = np.asarray(pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False))
    nz = np.flatnonzero(lengths)
    enabled = gc.isenabled()
    gc.disable()  # a million new lists would trigger many useless collections
    try:
        out = np.fromiter(([] for _ in range(n)), dtype=object, count=n)
        if len(nz):
            for i, v in zip(nz.tolist(), col.take(pa.array(nz)).to_pylist()):
                out[i] = v
    finally:
        if enabled:
            gc.enable()
    return pd.Series(out, dtype=object, copy=False)


def _empty_frame(columns: tuple[str, ...]) -> pd.DataFrame:
    return _to_pandas(ARROW_SCHEMA.empty_table().select(list(columns)))


# --------------------------------------------------------------------------- shards


_PARALLEL = max(1, min(4, os.cpu_count() or 1))
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=_PARALLEL, thread_name_prefix="chatcore-parse")
        return _POOL


class _Done:
    """An already computed result with the Future interface used above."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value

    def done(self) -> bool:
        return True

    def cancel(self) -> bool:
        return False


def find_newline(fd: int, start: int, size: int) -> int:
    """Offset of the first newline at or after ``start`` (before ``size``), or -1."""
    pos = start
    while pos < size:
        data = os.pread(fd, min(BLOCK_BYTES, size - pos), pos)
        if not data:
            return -1
        i = data.find(b"\n")
        if i >= 0:
            return pos + i
        pos += len(data)
    return -1


def _fingerprint(fd: int, upto: int) -> str:
    """Hash of the first and last KB before ``upto`` plus evenly spaced samples."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(upto).encode())
    if upto <= 2 * _FP_EDGE + _FP_SAMPLES * _FP_SAMPLE:
        h.update(os.pread(fd, upto, 0))
        return h.hexdigest()
    h.update(os.pread(fd, _FP_EDGE, 0))
    span = upto - 2 * _FP_EDGE - _FP_SAMPLE
    for k in range(_FP_SAMPLES):
        pos = _FP_EDGE + span * k // max(1, _FP_SAMPLES - 1)
        h.update(os.pread(fd, _FP_SAMPLE, pos))
    h.update(os.pread(fd, _FP_EDGE, upto - _FP_EDGE))
    return h.hexdigest()


@dataclass
class _Shard:
    path: str
    dev_ino: tuple[int, int] | None = None
    offset: int = 0  # bytes consumed, always just after a "\n"
    size: int = 0
    mtime_ns: int = 0
    pending: int = 0
    fp: str = ""  # _fingerprint(offset)
    chunks: list = field(default_factory=list)  # [start, end, pa.Table, DataFrame | None]
    bad: Counter = field(default_factory=Counter)
    rows: int = 0
    cached_upto: int = 0
    cached_segments: list = field(default_factory=list)
    ts_min: int | None = None  # microseconds since the epoch
    ts_max: int | None = None
    gen: int = 0  # bumped on reset, so a late cache write for old content is dropped
    writing: bool = False

    def reset(self) -> None:
        self.gen += 1
        self.writing = False
        self.dev_ino = None
        self.offset = self.size = self.pending = self.rows = self.cached_upto = 0
        self.fp = ""
        self.chunks = []
        self.bad = Counter()
        self.cached_segments = []
        self.ts_min = self.ts_max = None

    def add(self, start: int, end: int, table: pa.Table, bad: Counter, df: pd.DataFrame | None = None) -> None:
        self.chunks.append([start, end, table, df])
        self.bad.update(bad)
        self.rows += table.num_rows
        if table.num_rows and "ts" in table.column_names:
            mm = pc.min_max(table.column("ts"))
            lo, hi = mm["min"].value, mm["max"].value
            if lo is not None:
                self.ts_min = lo if self.ts_min is None else min(self.ts_min, lo)
                self.ts_max = hi if self.ts_max is None else max(self.ts_max, hi)

    def table(self, columns: list[str]) -> pa.Table | None:
        tables = [c[2] for c in self.chunks if c[2].num_rows]
        if not tables:
            return None
        return pa.concat_tables(tables).select(columns)


def _shard_day(path: str) -> date | None:
    m = _DAY_RE.search(os.path.basename(path))
    if not m:
        return None
    try:
        return date.fromisoformat(m.group(1))
    except ValueError:
        return None


def _as_utc(value: datetime | pd.Timestamp | str | None) -> pd.Timestamp | None:
    if value is None:
        return None
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.tz_convert("UTC")


# --------------------------------------------------------------------------- the store


class LogStore:
    """All good rows of a JSONL log (file or folder of ``*.jsonl``), kept up to date
    incrementally and cached on disk. Thread-safe: calls are serialised."""

    def __init__(self, path, cache_dir=None, columns=None):
        self.path = Path(path)
        if columns is None:
            self.columns = tuple(COLUMNS)
        else:
            unknown = [c for c in columns if c not in COLUMNS]
            if unknown:
                raise ValueError(f"unknown columns: {unknown}")
            self.columns = tuple(c for c in COLUMNS if c in set(columns))
        if cache_dir is None:
            folder = self.path if self.path.is_dir() else self.path.parent
            cache_dir = folder / ".chatcore-cache"
        self.cache_dir = Path(cache_dir) if cache_dir is not False else None
        self.cache_errors = 0
        self.last_cache_error: str | None = None
        self._shards: dict[str, _Shard] = {}
        self._lock = threading.RLock()
        self._frame: pd.DataFrame | None = None
        self._loaded = False
        self._skipped: set[str] = set()
        self._writers: list[threading.Thread] = []
        self._frame_tail: list[pa.Table] = []
        self._new_dfs: list = []
        #: Convert blocks to pandas while parsing a large load (for .frame).
        self.eager_frame = True

    # -- shards ------------------------------------------------------------------

    def _shard_paths(self) -> list[str]:
        p = self.path
        if p.is_dir():
            try:
                return sorted(str(q) for q in p.glob("*.jsonl") if q.is_file())
            except OSError:
                return []
        return [str(p)]

    def _cache_key(self, path: str) -> str:
        ident = json.dumps([os.path.abspath(path), list(self.columns), CACHE_VERSION])
        return hashlib.sha1(ident.encode()).hexdigest()[:20]

    # -- cache -------------------------------------------------------------------

    def _load_cache(self, sh: _Shard, fd: int, st: os.stat_result) -> None:
        if self.cache_dir is None:
            return
        key = self._cache_key(sh.path)
        manifest = self.cache_dir / f"{key}.json"
        try:
            meta = json.loads(manifest.read_bytes())
        except (OSError, ValueError):
            return
        try:
            if meta.get("version") != CACHE_VERSION or meta.get("columns") != list(self.columns):
                return
            if (meta["dev"], meta["ino"]) != (st.st_dev, st.st_ino):
                return
            upto = int(meta["offset"])
            if upto <= 0 or st.st_size < upto:
                return
            if _fingerprint(fd, upto) != meta["fingerprint"]:
                return
            chunks = []
            expected = ARROW_SCHEMA.empty_table().select(list(self.columns)).schema
            for seg in meta["segments"]:
                with pa.memory_map(str(self.cache_dir / seg["file"]), "r") as src:
                    table = ipc.open_file(src).read_all()
                if table.num_rows != seg["rows"] or not table.schema.equals(expected):
                    return
                chunks.append((seg["start"], seg["end"], table, Counter(seg["bad"])))
        except Exception:  # a broken cache is just a cache miss
            return
        for start, end, table, bad in chunks:
            sh.add(start, end, table, bad)
        sh.offset = sh.cached_upto = upto
        sh.cached_segments = list(meta["segments"])
        sh.fp = meta["fingerprint"]
        sh.dev_ino = (st.st_dev, st.st_ino)

    def _save_cache(self, sh: _Shard, fd: int) -> None:
        """Persist the rows parsed since the last segment as a new segment. The file
        is written in a background thread (see :meth:`wait_cache`); the snapshot and
        the fingerprint are taken here."""
        if self.cache_dir is None or sh.writing:
            return
        new_bytes = sh.offset - sh.cached_upto
        # a shard's first segment comes early, so folders of small shards are cached too
        if new_bytes < CACHE_MIN_BYTES and not (sh.cached_upto == 0 and new_bytes >= CACHE_FIRST_BYTES):
            return
        try:
            key = self._cache_key(sh.path)
            keep = sh.cached_segments
            if len(keep) >= MAX_SEGMENTS:
                # many small segments from appends: merge all but the first into one
                keep = keep[:1]
            start, end = (keep[-1]["end"] if keep else 0), sh.offset
            tables = [c[2] for c in sh.chunks if c[0] >= start]
            bad = Counter(sh.bad)  # bad counts of the new range = total - kept segments
            for seg in keep:
                bad.subtract(seg["bad"])
            segment = {"file": f"{key}.{sh.dev_ino[1]}.{start}-{end}.arrow", "start": start, "end": end,
                       "rows": sum(t.num_rows for t in tables), "bad": {k: v for k, v in bad.items() if v}}
            meta = {
                "version": CACHE_VERSION,
                "path": os.path.abspath(sh.path),
                "columns": list(self.columns),
                "dev": sh.dev_ino[0],
                "ino": sh.dev_ino[1],
                "offset": end,
                "mtime_ns": sh.mtime_ns,
                "fingerprint": _fingerprint(fd, end),
                "segments": keep + [segment],
            }
        except Exception as exc:
            self._cache_failed(exc)
            return
        sh.writing = True
        gen = sh.gen
        th = threading.Thread(target=self._write_segment, args=(sh, gen, key, tables, meta), name="chatcore-cache")
        self._writers = [w for w in self._writers if w.is_alive()] + [th]
        th.start()

    def _write_segment(self, sh: _Shard, gen: int, key: str, tables: list, meta: dict) -> None:
        try:
            try:  # Linux: lower this thread's priority, reading comes first
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
            except (AttributeError, OSError):
                pass
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            seg = meta["segments"][-1]
            schema = ARROW_SCHEMA.empty_table().select(list(self.columns)).schema
            tmp = self.cache_dir / (seg["file"] + f".tmp{os.getpid()}.{threading.get_ident()}")
            with pa.OSFile(str(tmp), "wb") as sink:
                with ipc.new_file(sink, schema) as writer:
                    for t in tables:
                        if t.num_rows:
                            writer.write_table(t, max_chunksize=1 << 20)
            os.replace(tmp, self.cache_dir / seg["file"])
            mtmp = self.cache_dir / f"{key}.json.tmp{os.getpid()}.{threading.get_ident()}"
            mtmp.write_bytes(json.dumps(meta).encode())
            with self._lock:
                if sh.gen != gen:  # the shard was reset meanwhile: this segment is stale
                    mtmp.unlink(missing_ok=True)
                    return
                os.replace(mtmp, self.cache_dir / f"{key}.json")
                sh.cached_upto = seg["end"]
                sh.cached_segments = meta["segments"]
            self._gc_cache(key, {s["file"] for s in meta["segments"]})
        except Exception as exc:  # never let the cache break reading
            self._cache_failed(exc)
        finally:
            with self._lock:
                if sh.gen == gen:
                    sh.writing = False

    def _cache_failed(self, exc: BaseException) -> None:
        self.cache_errors += 1
        self.last_cache_error = f"{type(exc).__name__}: {exc}"

    def wait_cache(self, timeout: float | None = None) -> None:
        """Wait until background cache writes are done (also happens at exit)."""
        for th in list(self._writers):
            th.join(timeout)

    def _gc_cache(self, key: str, keep: set[str]) -> None:
        try:
            for q in self.cache_dir.glob(f"{key}.*.arrow"):
                if q.name not in keep:
                    q.unlink(missing_ok=True)
        except OSError:
            pass

    # -- reading -----------------------------------------------------------------

    def refresh(self, progress: Progress | None = None) -> pd.DataFrame:
        """Parse what was appended since the last call; return the new rows only."""
        with self._lock:
            tables = self._refresh(progress)
            if not tables:
                return _empty_frame(self.columns)
            dfs = self._new_dfs
            if len(dfs) == len(tables) and all(d is not None for d in dfs):
                new = dfs[0] if len(dfs) == 1 else pd.concat(dfs, ignore_index=True, copy=False)
            else:
                new = _to_pandas(pa.concat_tables(tables) if len(tables) > 1 else tables[0])
            self._new_dfs = []
            k = len(tables)
            if len(self._frame_tail) >= k and all(a is b for a, b in zip(self._frame_tail[-k:], tables)):
                self._frame_tail[-k:] = [new]  # .frame reuses the converted rows
            elif self._frame is None and len(new) == sum(sh.rows for sh in self._shards.values()):
                self._frame = new  # a first load: these are all the rows
                self._frame_tail = []
                for sh in self._shards.values():
                    for c in sh.chunks:
                        c[3] = None
            return new.copy(deep=False)  # copy-on-write: the caller may change its copy

    def _refresh(self, progress: Progress | None, select: Callable[[str], bool] | None = None) -> list[pa.Table]:
        self._loaded = True
        paths = self._shard_paths()
        live = set(paths)
        changed = False
        for gone in [p for p in self._shards if p not in live]:
            del self._shards[gone]
            changed = True
        new_tables: list[pa.Table] = []
        new_dfs: list = []
        appended: set[str] = set()
        todo = []
        for p in paths:
            if select is not None and not select(p):
                self._skipped.add(p)
                continue
            self._skipped.discard(p)
            todo.append(p)
        # the total for progress: what is not read yet (an estimate for shards that
        # turn out to be replaced or cached)
        total = 0
        for p in todo:
            try:
                size = os.stat(p).st_size
            except OSError:
                continue
            sh = self._shards.get(p)
            total += max(0, size - (sh.offset if sh is not None and sh.offset <= size else 0))
        done = 0
        for p in todo:  # one shard open at a time: a folder may hold thousands
            try:
                fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                if p in self._shards:
                    del self._shards[p]
                    changed = True
                continue
            except OSError:
                continue  # unreadable for now (permissions, too many open files): keep what we have
            try:
                st = os.fstat(fd)
                sh = self._shards.get(p)
                if sh is None:
                    sh = self._shards[p] = _Shard(p)
                    self._load_cache(sh, fd, st)
                    changed = changed or sh.rows > 0
                elif self._stale(sh, fd, st):
                    sh.reset()
                    changed = True
                if sh.dev_ino is None:
                    sh.dev_ino = (st.st_dev, st.st_ino)
                before = len(sh.chunks)
                done = self._read_new(sh, fd, st, progress, done, max(total, done + st.st_size - sh.offset))
                sh.size, sh.mtime_ns = st.st_size, st.st_mtime_ns
                added = [c for c in sh.chunks[before:] if c[2].num_rows]
                if added:
                    appended.add(sh.path)
                    new_tables.extend(c[2] for c in added)
                    new_dfs.extend(c[3] for c in added)
                self._save_cache(sh, fd)
            finally:
                os.close(fd)
        new_tables = [t.select(list(self.columns)) for t in new_tables]
        self._new_dfs = new_dfs
        if changed or (appended and appended != {max(self._shards)}):
            self._frame = None  # rebuilt on the next .frame
            self._frame_tail = []
        elif new_tables and self._frame is not None:
            # rows appended to the last shard only: .frame just grows at the end
            self._frame_tail.extend(new_tables)
        return new_tables

    def _stale(self, sh: _Shard, fd: int, st: os.stat_result) -> bool:
        if sh.dev_ino != (st.st_dev, st.st_ino):
            return True  # replaced / rotated
        if st.st_size < sh.offset:
            return True  # truncated
        if sh.offset == 0:
            return False
        if st.st_size == sh.size and st.st_mtime_ns == sh.mtime_ns:
            return False  # untouched since the last look
        # truncated and written again past the old offset, or rewritten in place
        return _fingerprint(fd, sh.offset) != sh.fp

    def _read_new(self, sh: _Shard, fd: int, st: os.stat_result, progress, done: int, total: int) -> int:
        size = st.st_size
        pos = start = sh.offset
        cols = list(self.columns)

        def work(data: bytes, end: int, eager: bool = False):
            table, bad = _parse_data(data, end, Counter())
            if table.schema.names != cols:
                table = table.select(cols)
            # converting here overlaps with the parsing of the next blocks
            return table, bad, (_to_pandas(table) if eager and table.num_rows else None)

        # blocks are parsed in parallel (pyarrow releases the GIL) and added in order
        inflight: deque = deque()

        def collect() -> None:
            nonlocal done
            bpos, bend, fut = inflight.popleft()
            table, bad, df = fut.result()
            sh.add(bpos, bend, table, bad, df)
            done += bend - bpos
            if progress is not None:
                try:
                    progress(min(done, total), total)
                except Exception:
                    pass

        big = size - pos > BLOCK_BYTES
        pool = _pool() if big else None
        try:
            while pos < size:
                data = os.pread(fd, min(BLOCK_BYTES, size - pos), pos)
                if not data:
                    break
                cut = data.rfind(b"\n")
                if cut < 0:
                    if pos + len(data) >= size:
                        break  # the pending last line
                    nl = find_newline(fd, pos + len(data), size)  # a line longer than a block
                    if nl < 0:
                        break
                    data = os.pread(fd, nl + 1 - pos, pos)
                    cut = len(data) - 1
                if pool is None:
                    inflight.append((pos, pos + cut + 1, _Done(work(data, cut + 1))))
                else:
                    inflight.append((pos, pos + cut + 1, pool.submit(work, data, cut + 1, self.eager_frame)))
                del data
                pos += cut + 1
                while len(inflight) > _PARALLEL or (inflight and inflight[0][2].done()):
                    collect()
            while inflight:
                collect()
        finally:
            for _, _, fut in inflight:
                fut.cancel()
        sh.offset = pos
        sh.pending = size - pos
        if pos and (pos != start or not sh.fp):
            sh.fp = _fingerprint(fd, pos)
        return done

    # -- views -------------------------------------------------------------------

    def _ensure_loaded(self) -> None:
        if not self._loaded or self._skipped:
            # never loaded, or a time-range query skipped some daily shards
            self._refresh(None)

    @property
    def frame(self) -> pd.DataFrame:
        """All good rows so far, in shard order then file order."""
        with self._lock:
            self._ensure_loaded()
            if self._frame is not None and self._frame_tail:
                parts = [p if isinstance(p, pd.DataFrame) else _to_pandas(p) for p in self._frame_tail]
                self._frame_tail = []
                self._frame = pd.concat([self._frame, *parts], ignore_index=True, copy=False)
            if self._frame is None:
                self._frame_tail = []
                chunks = [c for sh in self._ordered() for c in sh.chunks if c[2].num_rows]
                if chunks and all(c[3] is not None for c in chunks):
                    # converted while parsing: just glue the pieces
                    self._frame = pd.concat([c[3] for c in chunks], ignore_index=True, copy=False)
                    for c in chunks:
                        c[3] = None
                    return self._frame.copy(deep=False)
                for c in chunks:
                    c[3] = None
                tables = [t for t in (sh.table(list(self.columns)) for sh in self._ordered()) if t is not None]
                if not tables:
                    self._frame = _empty_frame(self.columns)
                else:
                    self._frame = _to_pandas(pa.concat_tables(tables) if len(tables) > 1 else tables[0])
            return self._frame.copy(deep=False)  # copy-on-write: cheap, and the cache stays clean

    def arrow(self) -> pa.Table:
        """All good rows as one Arrow table (no copy of the text columns)."""
        with self._lock:
            self._ensure_loaded()
            tables = [t for t in (sh.table(list(self.columns)) for sh in self._ordered()) if t is not None]
            if not tables:
                return ARROW_SCHEMA.empty_table().select(list(self.columns))
            return pa.concat_tables(tables)

    def _ordered(self) -> list[_Shard]:
        return [self._shards[p] for p in sorted(self._shards)]

    def query(self, since=None, until=None) -> pd.DataFrame:
        """Rows with ``since <= ts < until``. Shards that cannot match are skipped: on a
        first load, daily shards (``*.YYYY-MM-DD.jsonl``) far outside the range are not
        even read; loaded shards are skipped by their min/max time."""
        since, until = _as_utc(since), _as_utc(until)
        if (since is not None or until is not None) and "ts" not in self.columns:
            raise ValueError("a time-range query needs the ts column")
        with self._lock:
            if not self._loaded:
                if since is None and until is None:
                    self._refresh(None)
                else:
                    self._refresh(None, select=lambda p: _day_may_match(p, since, until))
            if since is None and until is None:
                return self.frame
            hi = None if until is None else -(-until.value // 1000)
            lo = None if since is None else -(-since.value // 1000)
            tables = []
            for sh in self._ordered():
                if sh.ts_min is None:
                    continue
                if lo is not None and sh.ts_max < lo:
                    continue
                if hi is not None and sh.ts_min >= hi:
                    continue
                t = sh.table(list(self.columns))
                if t is None:
                    continue
                if "ts" in self.columns:
                    ts = t.column("ts")
                    cond = None
                    if lo is not None:
                        cond = pc.greater_equal(ts, pa.scalar(lo, UTC_US))
                    if hi is not None:
                        c2 = pc.less(ts, pa.scalar(hi, UTC_US))
                        cond = c2 if cond is None else pc.and_(cond, c2)
                    t = t.filter(cond)
                tables.append(t)
            if not tables:
                return _empty_frame(self.columns)
            return _to_pandas(pa.concat_tables(tables))

    @property
    def stats(self) -> dict:
        with self._lock:
            bad = Counter()
            for sh in self._shards.values():
                bad.update(sh.bad)
            counts = {r: int(bad.get(r, 0)) for r in BAD_REASONS}
            return {
                "lines": sum(sh.rows for sh in self._shards.values()),
                "bad": counts,
                "bad_total": sum(counts.values()),
                "pending_bytes": sum(sh.pending for sh in self._shards.values()),
                "shards": len(self._shards),
                "bytes": sum(sh.offset for sh in self._shards.values()),
                "cache_errors": self.cache_errors,
            }


def _day_may_match(path: str, since: pd.Timestamp | None, until: pd.Timestamp | None) -> bool:
    day = _shard_day(path)
    if day is None:
        return True
    # a daily shard may hold a few turns of the neighbouring days (time zones, late rotation)
    start = pd.Timestamp(day, tz="UTC") - pd.Timedelta(days=1)
    end = pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=2)
    if since is not None and end <= since:
        return False
    if until is not None and start >= until:
        return False
    return True


def load_log(path, since=None, until=None, progress=None, columns=None, cache_dir=None) -> tuple[pd.DataFrame, dict]:
    """One-shot: the rows of ``path`` in [since, until) and the store's stats."""
    store = LogStore(path, cache_dir=cache_dir, columns=columns)
    store.eager_frame = False
    store._refresh(progress, select=None if since is None and until is None else (lambda p: _day_may_match(p, _as_utc(since), _as_utc(until))))
    return store.query(since, until), store.stats

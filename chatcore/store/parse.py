"""Parsing: one line (the reference, :func:`parse_line`) and blocks of lines.

A block of complete lines goes through ``pyarrow.json`` with an explicit schema; rows
the vectorised checks cannot vouch for, and blocks the fast parser rejects, are
bisected down to small runs of lines parsed one by one with :func:`parse_line`
(``orjson`` + :func:`chatcore.log.records.normalise`). Either path gives the same rows
and the same bad-line counts.

Over 500 lines: the reference parser and the block path must agree line for line, so they live side by side.
"""
from __future__ import annotations

import json
import re
import threading
from collections import Counter
from typing import Iterable

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from chatcore.log.records import COLUMNS, USAGE_COLUMNS, BadRecord, normalise
from chatcore.log.shards import BLOCK_BYTES
from chatcore.store.schema import ARROW_SCHEMA, STR, USAGE_STRUCT, UTC_US

#: pyarrow's block size inside one of our blocks (a longer line takes the slow path).
ARROW_BLOCK = 1 << 20
#: Below this many lines a run is parsed line by line.
MIN_FAST_LINES = 16
#: A shard's cache is (re)written when at least this many parsed bytes are not in it.
#: columns, but ``ts`` as text (parsed afterwards) and ``files`` as ``{"name"}`` objects.
#: ``kind`` is read only to recognise event lines (schema v2): those are never vouched for here,
#: and the reference parser counts them as ``event`` lines, not turns.
_JSON_SCHEMA = pa.schema([f for f in ARROW_SCHEMA if f.name not in USAGE_COLUMNS]).set(0, pa.field("ts", STR)).set(
    ARROW_SCHEMA.get_field_index("files"), pa.field("files", pa.list_(pa.struct([("name", pa.string())])))
).append(pa.field("kind", STR)).append(pa.field("usage", USAGE_STRUCT))
_PARSE_OPTIONS = pajson.ParseOptions(
    explicit_schema=_JSON_SCHEMA, unexpected_field_behavior="ignore", newlines_in_values=False
)
#: The seed's shape (``timestamp``, ``response`` as a list of lines), read in one
#: pyarrow pass too; only lines without a ``"ts"`` key are read this way (see _parse_lines).
_SEED_JSON_SCHEMA = _JSON_SCHEMA.set(0, pa.field("timestamp", STR)).set(
    _JSON_SCHEMA.get_field_index("response"), pa.field("response", pa.list_(STR))
)
_SEED_PARSE_OPTIONS = pajson.ParseOptions(
    explicit_schema=_SEED_JSON_SCHEMA, unexpected_field_behavior="ignore", newlines_in_values=False
)
#: The seed's usual line has these keys and no other. A block of such lines is read with only
#: them declared (pyarrow fills each declared but absent field row by row: about a third of the
#: read), any other key being inferred into a column of its own: a block that comes back with
#: more columns (a "ts" key, even escaped or null, included) is read again with the full schema.
_SEED_KEYS = ("timestamp", "conversation_id", "user_text", "response")
_SEED_NARROW_OPTIONS = pajson.ParseOptions(
    explicit_schema=pa.schema([_SEED_JSON_SCHEMA.field(k) for k in _SEED_KEYS]),
    unexpected_field_behavior="infer", newlines_in_values=False,
)
_RESPONSE = _JSON_SCHEMA.get_field_index("response")
_CID = _JSON_SCHEMA.get_field_index("conversation_id")

#: Single-threaded inside one call: our blocks are parsed in parallel by our own threads.
_READ_OPTIONS = pajson.ReadOptions(use_threads=False, block_size=ARROW_BLOCK)


# --------------------------------------------------------------------------- one line


def _check_text(rec: dict) -> None:
    for key in ("conversation_id", "user_text", "response", "source", "backend", "model", "error", "session",
                "prompt_version"):
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


#: Raw bytes that may spell the key ``ts`` with escapes (``"\u0074s"``, ``"t\u0073"``): such a
#: line is read with the current shape's schema, where pyarrow unescapes the key as the reference does.
_TS_ESCAPES = (b"\\u0074", b"\\u0073")


class _Block:
    """The complete lines in ``data[:end]`` (bytes, or a memoryview of a block read into a reused
    buffer); line i is ``data[starts[i]:ends[i]]`` (ends exclude the newline)."""

    __slots__ = ("data", "end", "buf", "arr", "n", "starts", "ends", "want", "_utf8", "_lines", "_with_ts")

    def __init__(self, data: bytes, end: int, want: frozenset[str] | None = None):
        self._utf8 = self._lines = self._with_ts = None
        self.want = want  # the columns asked for (all if None)
        self.data = data
        self.buf = memoryview(data)
        self.end = end
        self.arr = np.frombuffer(self.buf[:end], dtype=np.uint8)
        nl = _newlines(self.arr)
        starts = np.empty_like(nl)
        if len(nl):
            starts[0] = 0
            starts[1:] = nl[:-1] + 1
        self.starts, self.ends, self.n = starts, nl, len(nl)

    def utf8(self) -> bool:
        """All complete lines are valid UTF-8 (then so is any subset of them: a newline
        never lies inside a character)."""
        if self._utf8 is None:
            ascii_ = isinstance(self.data, (bytes, bytearray)) and self.data.isascii()  # (a memoryview has no isascii)
            self._utf8 = ascii_ or _utf8_ok(self.buf[: self.end])
        return self._utf8

    def with_ts(self) -> np.ndarray:
        """Lines that contain ``"ts"`` (a key the seed's shape does not have)."""
        if self._with_ts is None:
            if not (_contains4(self.data, self.end, b'"ts"') or _contains4(self.data, self.end, b"u007")):
                self._with_ts = np.zeros(0, dtype=np.int64)  # the usual answer for a seed block
            else:
                self._with_ts = _lines_with(self, (b'"ts"',) + _TS_ESCAPES)
        return self._with_ts

    def gather(self, ids: np.ndarray) -> memoryview:
        """Lines ``ids`` (each with its newline) back to back, copied at C speed."""
        if self._lines is None:
            offsets = np.empty(self.n + 1, dtype=np.int64)
            offsets[:-1] = self.starts
            offsets[-1] = self.ends[-1] + 1
            self._lines = pa.LargeBinaryArray.from_buffers(
                pa.large_binary(), self.n, [None, pa.py_buffer(offsets), pa.py_buffer(self.buf[: self.end])])
        taken = self._lines.take(pa.array(ids, type=pa.int64()))
        bounds = np.frombuffer(taken.buffers()[1], dtype=np.int64, count=len(taken) + 1, offset=taken.offset * 8)
        return memoryview(taken.buffers()[2])[int(bounds[0]) : int(bounds[-1])]

    def starts_with(self, i: int, prefix: bytes) -> bool:
        s, e = int(self.starts[i]), int(self.ends[i])
        return e - s >= len(prefix) and self.data[s : s + len(prefix)] == prefix

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


def _contains4(data: bytes, end: int, needle: bytes) -> bool:
    """Whether the 4-byte ``needle`` occurs in ``data[:end]``: one 32-bit comparison per
    alignment (about 3x faster than ``bytes.find`` for a needle made of JSON's most common
    bytes, such as ``"ts"``)."""
    word = np.frombuffer(needle, dtype=np.uint32)[0]
    for k in range(4):
        count = (end - k) // 4
        if count > 0 and (np.frombuffer(data, dtype=np.uint32, count=count, offset=k) == word).any():
            return True
    return False


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
#: Each byte of a naive time _TS_NAIVE_RE accepts, by position: its lowest and highest value.
_NAIVE_LO = np.frombuffer(b"0000-00-00T00:00:00.000000", dtype=np.uint8)
_NAIVE_HI = np.frombuffer(b"9999-99-99T99:99:99.999999", dtype=np.uint8)


def _naive_of_one_width(col: pa.ChunkedArray) -> bool:
    """Whether every value is a naive time that _TS_NAIVE_RE accepts, all of one length (the
    seed's ``isoformat()``): checked byte by byte at once, a tenth of the regex's time. False
    says nothing (times of several lengths, say): the regex decides then."""
    width = None
    for c in col.chunks:
        if not len(c):
            continue
        if c.null_count:
            return False
        size = 8 if pa.types.is_large_string(c.type) else 4
        offsets = np.frombuffer(c.buffers()[1], dtype=f"<i{size}", count=len(c) + 1, offset=c.offset * size)
        w = int(offsets[1] - offsets[0])
        if (w != 19 and not 21 <= w <= 26) or (width is not None and w != width):
            return False
        width = w
        if int(offsets[-1] - offsets[0]) != w * len(c) or (np.diff(offsets) != w).any():
            return False
        rows = np.frombuffer(c.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]].reshape(len(c), w)
        lo, hi = _NAIVE_LO[:w], _NAIVE_HI[:w]
        if not ((rows - lo) <= (hi - lo)).all():  # (uint8: below lo wraps round to above hi - lo)
            return False
    return width is not None


def _from_seed(t: pa.Table, text: bool = True) -> pa.Table:
    """A table read with the seed's schema -> the v1 layout (``ts``, ``response`` as text;
    without ``text`` the response is only checked and left as the lists read).

    A response list holding a null is a wrong_type line: its conversation_id is
    blanked, so _vouch leaves the line to the reference parser."""
    resp = t.column(_RESPONSE)
    cid = t.column(_CID)
    if text or any(c.flatten().null_count for c in resp.chunks):
        joined = pc.binary_join(resp, pa.scalar("\n", STR))
        bad = pc.and_(pc.is_valid(resp), pc.is_null(joined))
        if pc.any(bad).as_py():
            cid = pc.if_else(bad, pa.scalar(None, STR), cid)
        resp = pc.fill_null(joined, _EMPTY).cast(STR)  # no response at all: ""
    t = t.set_column(_RESPONSE, "response", resp).set_column(_CID, "conversation_id", cid)
    return t.rename_columns(_JSON_SCHEMA.names)


def _fast_buf(mv, nlines: int, ascii_ok: bool = False, seed: bool = False, one_block: bool = False,
              narrow: bool = False, want: frozenset[str] | None = None):
    """Parse ``nlines`` bare ``{...}`` lines with pyarrow (``ascii_ok``: the bytes are known
    to be valid UTF-8; ``one_block``: in one pyarrow block, so a row it names is a row of ``mv``;
    ``narrow``: seed lines with only the seed's usual keys, see _SEED_NARROW_OPTIONS; ``want``:
    the columns to return, all if None; every line is vouched for on all of its fields alike).

    Returns (table of good rows, bool mask of the lines it vouches for), or an int:
    the row pyarrow complained about (a hint, not a promise), or None."""
    if not ascii_ok and not _utf8_ok(mv):
        return None
    read = _READ_OPTIONS
    if one_block and len(mv) >= ARROW_BLOCK:
        read = pajson.ReadOptions(use_threads=False, block_size=len(mv) + 1)
    try:
        options = _SEED_NARROW_OPTIONS if narrow else _SEED_PARSE_OPTIONS if seed else _PARSE_OPTIONS
        t = pajson.read_json(pa.BufferReader(pa.py_buffer(mv)), read_options=read, parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowException) as exc:
        m = _ROW_RE.search(str(exc))
        return int(m.group(1)) if m else None
    if t.num_rows != nlines:
        return None
    if narrow:
        if t.column_names != list(_SEED_KEYS):
            return None  # another key in some line: the full schema decides
        t = pa.Table.from_arrays([t.column(f.name) if f.name in _SEED_KEYS else pa.nulls(t.num_rows, f.type)
                                  for f in _SEED_JSON_SCHEMA], schema=_SEED_JSON_SCHEMA)
    if seed or narrow:
        t = _from_seed(t, text=want is None or "response" in want)
    return _vouch(t, want)


def _fast(block: _Block, lo: int, hi: int, seed: bool = False, narrow: bool = False):
    """Lines lo..hi-1 of a block through pyarrow (see _fast_buf)."""
    if not block.simple(lo, hi):
        return None
    s, e = block.span(lo, hi)
    return _fast_buf(block.buf[s:e], hi - lo, ascii_ok=block.utf8(), seed=seed, narrow=narrow, want=block.want)


def _seed_keys_only(block: _Block) -> bool:
    """The block's first line is a seed line with only the seed's usual keys (worth a narrow pass)."""
    if not block.starts_with(0, b'{"timestamp":'):
        return False
    try:
        first = orjson.loads(block.buf[int(block.starts[0]) : int(block.ends[0])])
    except orjson.JSONDecodeError:
        return False
    return isinstance(first, dict) and first.keys() == set(_SEED_KEYS)


def _vouch(t: pa.Table, want: frozenset[str] | None = None) -> tuple[pa.Table, np.ndarray] | None:
    """The rows of ``t`` (read by pyarrow) that read exactly as the reference reads their lines,
    as columns ``want`` (all if None), and the mask of those rows; None if none can be told."""
    cid = t.column("conversation_id")
    ok = pc.fill_null(pc.greater(pc.utf8_length(cid), 0), False)
    ok = pc.and_(ok, pc.is_valid(t.column("ts")))
    kind = t.column("kind")
    if kind.null_count < len(kind):  # an event line, not a turn: the reference parser says so
        ok = pc.and_(ok, pc.fill_null(pc.equal(kind, "turn"), True))
    turn = t.column("turn")
    if turn.null_count < len(turn):
        ok = pc.and_(ok, pc.fill_null(pc.and_(pc.greater_equal(turn, 0), pc.less(turn, 2**31)), True))
    for name in ("latency_ms", "cost_usd"):
        num = t.column(name)
        if num.null_count < len(num):
            # NaN, Infinity or a number too big for a double: let the reference decide
            ok = pc.and_(ok, pc.fill_null(pc.is_finite(num), True))
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
    zoned = ts_all = None
    if _naive_of_one_width(t.column("ts")):  # the seed's datetime.utcnow().isoformat(): one cast
        try:
            ts_all = pc.cast(pc.cast(t.column("ts"), pa.timestamp("us")), UTC_US)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            ts_all = None
    if ts_all is None:
        try:
            ts_all = pc.cast(t.column("ts"), UTC_US)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            # naive times (taken as UTC, like parse_ts) and times with a zone are read
            # here; other forms take the slow path
            ts_all = None
            naive = pc.fill_null(pc.match_substring_regex(t.column("ts"), _TS_NAIVE_RE), False)
            if pc.all(naive).as_py():
                try:
                    ts_all = pc.cast(pc.cast(t.column("ts"), pa.timestamp("us")), UTC_US)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    ts_all = None
            if ts_all is None:
                zoned = pc.fill_null(pc.match_substring_regex(t.column("ts"), _TS_RE), False)
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
    ts, t = _within_calendar(ts, t, mask)

    def unknown_if_negative(num):
        if num.null_count == len(num):
            return num
        return pc.if_else(pc.fill_null(pc.less(num, 0.0), False), _NULL_F64, num)

    def source():
        src = t.column("source")
        return pc.if_else(pc.fill_null(pc.greater(pc.utf8_length(src), 0), False), src, _UNKNOWN)

    def nonull(name, fill):
        col = t.column(name)
        return col if col.null_count == 0 else pc.fill_null(col, fill)
    columns = {
        "ts": lambda: ts,
        "conversation_id": lambda: cid if mask.all() else t.column("conversation_id"),
        "user_text": lambda: nonull("user_text", _EMPTY),
        "response": lambda: nonull("response", _EMPTY),
        "latency_ms": lambda: unknown_if_negative(t.column("latency_ms")),
        "source": source,
        "files": lambda: _file_names(t.column("files")),
        "v": lambda: nonull("v", 0),
        **{name: (lambda i=i: pc.struct_field(t.column("usage"), [i])) for i, name in enumerate(USAGE_COLUMNS)},
        "cost_usd": lambda: unknown_if_negative(t.column("cost_usd")),
    }
    schema = ARROW_SCHEMA if want is None else pa.schema([f for f in ARROW_SCHEMA if f.name in want])
    out = pa.Table.from_arrays([columns[f.name]() if f.name in columns else t.column(f.name) for f in schema],
                               schema=schema)
    return out, mask


#: The first and last microsecond Python's datetime can hold (years 1-9999), since the epoch.
_FIRST_US = -62135596800 * 10**6
_LAST_US = 253402300800 * 10**6 - 1


def _within_calendar(ts, t: pa.Table, mask: np.ndarray):
    """Rows whose time, in UTC, lies outside the years 1-9999 (``0000-01-01T00:00:00Z``,
    ``9999-12-31T23:59:59-05:00``) are taken out and their lines left to the reference parser,
    which rejects them: the engine and the exports cannot represent such a time. ``mask`` (the
    lines vouched for) is updated in place."""
    if not len(ts):
        return ts, t
    mm = pc.min_max(ts)
    lo, hi = mm["min"].value, mm["max"].value
    if lo is None or (lo >= _FIRST_US and hi <= _LAST_US):
        return ts, t
    ok = pc.and_(pc.greater_equal(ts, pa.scalar(_FIRST_US, UTC_US)), pc.less_equal(ts, pa.scalar(_LAST_US, UTC_US)))
    keep = _np_bool(ok)
    vouched = np.flatnonzero(mask)
    mask[vouched[~keep]] = False
    return ts.filter(ok), t.filter(ok)


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


def _parse_ids(block: _Block, ids: np.ndarray, bad: Counter, out: list, seed: bool = False) -> None:
    """Parse the lines ``ids`` (sorted, each a bare ``{...}``); append (ids, table)."""
    limit = len(ids)  # lines per pyarrow call; shrinks where bad lines are dense
    while len(ids):
        if len(ids) < MIN_FAST_LINES:
            _slow_out(block, ids, bad, out)
            return
        part, rest = ids[:limit], ids[limit:]
        if part[-1] - part[0] + 1 == len(part):  # consecutive lines: no copy
            mv = block.buf[int(block.starts[part[0]]) : int(block.ends[part[-1]]) + 1]
        else:
            mv = block.gather(part)
        res = _fast_buf(mv, len(part), ascii_ok=block.utf8(), seed=seed, one_block=True, want=block.want)
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
                _parse_ids(block, part[:res], bad, out, seed)
            _slow_out(block, part[res : res + 1], bad, out)
            ids = ids[res + 1 :]
            limit = max(4 * MIN_FAST_LINES, 2 * (res + 1))
            continue
        if len(part) < 2 * MIN_FAST_LINES:
            _slow_out(block, part, bad, out)
            ids = rest
            continue
        half = len(part) // 2
        _parse_ids(block, part[:half], bad, out, seed)
        ids = ids[half:]
        limit = len(part) - half


def _lines_with(block: _Block, needles: tuple[bytes, ...]) -> np.ndarray:
    """Indices of the lines that contain any of ``needles`` (each at least 4 bytes long).

    Vectorised: the candidates are where the needle's first 4 bytes are, found by comparing
    the block as 32-bit words at each of the 4 alignments; the rest is checked byte by byte."""
    arr, end = block.arr, block.end
    hits = []
    found: dict[bytes, np.ndarray] = {}
    for needle in needles:
        k = len(needle)
        if k < 4:
            raise ValueError("needle too short")
        if end < k:
            continue
        head = needle[:4]
        pos = found.get(head)
        if pos is None:
            key = np.frombuffer(head, dtype="<u4")[0]
            parts = []
            for a in range(4):
                words = (end - a) // 4
                if words > 0:
                    parts.append(np.flatnonzero(arr[a : a + 4 * words].view("<u4") == key) * 4 + a)
            pos = found[head] = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        pos = pos[pos <= end - k]
        for j in range(4, k):
            if not len(pos):
                break
            pos = pos[arr[pos + j] == needle[j]]
        if len(pos):
            hits.append(pos)
    if not hits:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.searchsorted(block.ends, np.concatenate(hits)))


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
        # a whole block of one shape in one pyarrow pass: the current shape, or the seed's
        # (tried first when the block starts with a seed-shaped line); a line with a "ts"
        # key rules the seed's pass out (that key would win over "timestamp")
        res = None
        if not block.starts_with(0, b'{"timestamp":'):
            res = _fast(block, 0, n)
        if not isinstance(res, tuple) and _seed_keys_only(block):
            res = _fast(block, 0, n, narrow=True)
        if not isinstance(res, tuple) and not len(block.with_ts()):
            res = _fast(block, 0, n, seed=True)
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
    # others through pyarrow, one pass per shape (lines gathered into one buffer)
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
    # Lines without a "ts" key can only be good in the seed's shape (``timestamp``, the reply
    # as a list of lines): they are read with that shape's schema; the others with the current
    # shape's (where "ts" wins over "timestamp", as in the reference). Each pass hands the
    # lines it cannot vouch for to the reference parser.
    with_ts = np.zeros(n, dtype=bool)
    with_ts[block.with_ts()] = True
    seed = np.flatnonzero(simple & ~with_ts)
    if len(seed):
        _parse_ids(block, seed, bad, out, seed=True)
    rest = np.flatnonzero(simple & with_ts)
    if len(rest):
        _parse_ids(block, rest, bad, out)
    return out


def parse_bytes(buf: bytes | memoryview, bad: Counter | None = None) -> tuple[pa.Table, Counter]:
    """Parse complete lines (``buf`` must end with ``\\n`` or hold only complete lines;
    bytes after the last newline are ignored). Returns (rows, bad counts)."""
    bad = Counter() if bad is None else bad
    buf = bytes(buf)
    return _parse_data(buf, buf.rfind(b"\n") + 1, bad)


def _parse_data(buf: bytes, end: int, bad: Counter, columns: list[str] | None = None) -> tuple[pa.Table, Counter]:
    """Rows of the complete lines in ``buf[:end]`` (only ``columns``, if given) in line order."""
    table, _, _ = parse_block(buf, end, bad, columns)
    return table, bad


def parse_block(buf: bytes, end: int, bad: Counter, columns: list[str] | None = None
                ) -> tuple[pa.Table, np.ndarray, _Block]:
    """The rows of the complete lines in ``buf[:end]`` (only ``columns``, if given) in line
    order, the line each row comes from (ascending line numbers), and the lines (a
    :class:`_Block`: where each starts and ends). A line without a row is one the reference
    rejects: ``bad`` counts it by reason."""
    want = None if columns is None or list(columns) == ARROW_SCHEMA.names else frozenset(columns)
    block = _Block(buf, end, want)
    pieces = [p for p in _parse_lines(block, bad) if p[1].num_rows]
    if columns is not None and list(columns) != ARROW_SCHEMA.names:
        pieces = [(ids, t.select(columns)) for ids, t in pieces]
    if not pieces:
        empty = ARROW_SCHEMA.empty_table()
        return (empty if columns is None else empty.select(columns)), np.zeros(0, dtype=np.int64), block
    if len(pieces) == 1:
        ids = pieces[0][0]
        return pieces[0][1], (np.arange(block.n) if ids is None else ids), block
    table = pa.concat_tables([p[1] for p in pieces])
    ids = np.concatenate([np.arange(block.n) if p[0] is None else p[0] for p in pieces])
    if (np.diff(ids) < 0).any():
        order = np.argsort(ids, kind="stable")
        table = table.take(pa.array(order))
        ids = ids[order]
    return table, ids, block

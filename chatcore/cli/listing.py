"""The CLI's conversation list, formatted straight from the Arrow answer (no pandas).

``json`` is exact (visitor text as it was logged, JSON-escaped); ``table`` and ``csv``
are for people and spreadsheets: control characters (terminal escapes, bells,
direction overrides) are replaced, as ``tail`` does.
"""
from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime, time, timedelta, timezone, tzinfo

SUMMARY_COLUMNS = ["conversation_id", "turns", "first_ts", "last_ts", "first_user_text"]

#: What a terminal must not receive from visitors (tab and newline are kept).
CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clean(text) -> str:
    """Text safe for a terminal or a spreadsheet cell: control characters become U+FFFD."""
    return CONTROLS.sub("\ufffd", "" if text is None else str(text))


def iso_column(col) -> list:
    """A timestamp[us, UTC] column as ``2026-11-21T05:31:15.123Z`` strings (vectorised)."""
    return list(_iso_array(col).to_pylist())


#: One row of ``_iso_array``'s output: ``2026-11-21`` ``T`` ``05:31:15`` ``.`` ``123`` ``Z``.
_ISO_ROW = [("date", "S10"), ("t", "S1"), ("time", "S8"), ("dot", "S1"), ("ms", "S3"), ("z", "S1")]
_ISO_TABLES: dict = {}
#: The days (since 1970-01-01) of 0000-01-01 and 9999-12-31: the range written as four digits.
_DAY_MIN, _DAY_MAX = -719_528, 2_932_896


def _digits(values, width: int):
    """Non-negative integers as zero-padded ASCII digits (a bytes array of ``width``)."""
    import numpy as np

    out = np.empty((len(values), width), dtype=np.uint8)
    for k in range(width):
        out[:, width - 1 - k] = 48 + (values // 10 ** k) % 10
    return out


def _iso_tables():
    """``HH:MM:SS`` for every second of a day and ``000``..``999``, built once."""
    import numpy as np

    if not _ISO_TABLES:
        s = np.arange(86_400)
        hms = np.empty((86_400, 8), dtype=np.uint8)
        hms[:, 0:2] = _digits(s // 3600, 2)
        hms[:, 3:5] = _digits(s // 60 % 60, 2)
        hms[:, 6:8] = _digits(s % 60, 2)
        hms[:, 2] = hms[:, 5] = ord(":")
        _ISO_TABLES["time"] = hms.view("S8").ravel()
        _ISO_TABLES["ms"] = _digits(np.arange(1000), 3).view("S3").ravel()
    return _ISO_TABLES["time"], _ISO_TABLES["ms"]


def _iso_array(col):
    """A timestamp[us, UTC] column as an Arrow string array of ``2026-11-21T05:31:15.123Z``
    (milliseconds rounded down): each part is looked up in a small table (the distinct days,
    the seconds of a day, the milliseconds) and laid out as one buffer."""
    import numpy as np
    import pyarrow as pa

    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    n = len(col)
    ms = col.cast(pa.int64()).to_numpy(zero_copy_only=False) // 1000  # floor, like the reference
    days, rem = np.divmod(ms, 86_400_000)
    if n and (days.min() < _DAY_MIN or days.max() > _DAY_MAX):
        text = np.char.add(np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms"), "Z")
        return pa.array(text, pa.string())
    sec, frac = np.divmod(rem, 1000)
    lo = int(days.min()) if n else 0
    span = (int(days.max()) - lo + 1) if n else 0
    if span <= 4 * n + 1024:  # a log's days lie close together
        names, index = np.arange(lo, lo + span, dtype=np.int64), days - lo
    else:
        names, index = np.unique(days, return_inverse=True)
    dates = np.datetime_as_string(names.astype("datetime64[D]"), unit="D").astype("S10")
    hms, msec = _iso_tables()
    out = np.empty(n, dtype=_ISO_ROW)
    out["date"] = dates[index]
    out["t"] = b"T"
    out["time"] = hms[sec]
    out["dot"] = b"."
    out["ms"] = msec[frac]
    out["z"] = b"Z"
    offsets = np.arange(0, 24 * n + 1, 24, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(out.view(np.uint8)))


def _times(col) -> list:
    import pyarrow as pa

    return col.to_pylist() if pa.types.is_string(col.type) else iso_column(col)


def _rows(table) -> list[tuple]:
    return list(zip(table.column("conversation_id").to_pylist(), table.column("turns").to_pylist(),
                    _times(table.column("first_ts")), _times(table.column("last_ts")),
                    table.column("first_user_text").to_pylist()))


def _csv_safe(value):
    """Keep spreadsheet programs from running a cell as a formula (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def json_strings(col):
    """A string column as JSON string literals (quotes included), vectorised."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(pa.scalar('"'), _json_escaped(col), pa.scalar('"'), pa.scalar(""))


def _json_escaped(col):
    """A string column's values as the inside of JSON string literals (without the quotes)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = pc.fill_null(col.cast(pa.string()), "")  # (no nulls here: ids and texts are never null)
    quote, backslash, control = _needs_escape(col)
    if backslash:
        col = pc.replace_substring(col, "\\", "\\\\")
    if quote:
        col = pc.replace_substring(col, '"', '\\"')
    if control:
        for code in range(32):
            col = pc.replace_substring(col, chr(code), f"\\u{code:04x}")
    return col


def _needs_escape(col) -> tuple[bool, bool, bool]:
    """Whether a string column holds a quote, a backslash, a control character (one pass
    over its bytes; most lists need no escaping at all)."""
    import numpy as np
    import pyarrow as pa

    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    quote = backslash = control = False
    for c in chunks:
        if len(c) == 0:
            continue
        offsets = np.frombuffer(c.buffers()[1], dtype=np.int32, count=len(c) + 1, offset=c.offset * 4)
        data = c.buffers()[2]
        if data is None:
            continue
        raw = np.frombuffer(data, dtype=np.uint8)[int(offsets[0]):int(offsets[-1])]
        quote = quote or bool((raw == 0x22).any())
        backslash = backslash or bool((raw == 0x5C).any())
        control = control or bool((raw < 0x20).any())
    return quote, backslash, control


#: Rows formatted at once: the JSON is built and written in slices, so memory stays flat.
JSON_SLICE = 1 << 16


def summary_json_parts(table):
    """The list as a JSON array, one object a line, built column-wise (no Python loop per row),
    slice by slice: yields byte strings and buffers to write one after the other."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if table.num_rows == 0:
        yield b"[]\n"
        return

    def times(part, name):
        col = part.column(name)
        return col if pa.types.is_string(col.type) else _iso_array(col)

    yield b"[\n"
    for start in range(0, table.num_rows, JSON_SLICE):
        part = table.slice(start, JSON_SLICE)
        # one join per slice: the quotes are part of the constant pieces
        pieces = [pa.scalar('{"conversation_id":"'), _json_escaped(part.column("conversation_id")),
                  pa.scalar('","turns":'), pc.cast(part.column("turns"), pa.string()),
                  pa.scalar(',"first_ts":"'), times(part, "first_ts"), pa.scalar('","last_ts":"'),
                  times(part, "last_ts"), pa.scalar('","first_user_text":"'),
                  _json_escaped(part.column("first_user_text")), pa.scalar('"},\n')]
        rows = pc.binary_join_element_wise(*pieces, pa.scalar(""))
        if isinstance(rows, pa.ChunkedArray):
            rows = rows.combine_chunks()
        # the rows, each followed by ",\n", lie back to back in the array's data buffer
        bounds = np.frombuffer(rows.buffers()[1], dtype=np.int32, count=len(rows) + 1, offset=rows.offset * 4)
        last = start + JSON_SLICE >= table.num_rows
        yield memoryview(rows.buffers()[2])[int(bounds[0]):int(bounds[-1]) - (2 if last else 0)]
    yield b"\n]\n"


def summary_json(table) -> str:
    return "".join(bytes(p).decode("utf-8") for p in summary_json_parts(table))


def write_summary(table, fmt: str, stream, copy_to=None) -> None:
    """:func:`format_summary` written to a text stream (JSON as bytes to its buffer, no copies);
    ``copy_to``: a binary file that also gets the JSON."""
    binary = getattr(stream, "buffer", None)
    if fmt == "json" and binary is not None:
        stream.flush()
        for part in summary_json_parts(table):
            binary.write(part)
            if copy_to is not None:
                copy_to.write(part)
        binary.flush()
        return
    stream.write(format_summary(table, fmt))


def format_summary(table, fmt: str) -> str:
    """``table``: conversation_id, turns, first_ts, last_ts (times or ISO text), first_user_text."""
    if fmt == "json":
        return summary_json(table)
    rows = _rows(table)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(SUMMARY_COLUMNS)
        writer.writerows((clean(c), t, f, la, _csv_safe(clean(q))) for c, t, f, la, q in rows)
        return buf.getvalue()
    if not rows:
        return "no conversations\n"
    lines = [f"{'conversation_id':<36}  {'turns':>5}  {'first (UTC)':<19}  {'last (UTC)':<19}  first question"]
    for cid, turns, first, last, text in rows:
        question = " ".join(clean(text).split())
        question = question if len(question) <= 60 else question[:59] + "…"
        lines.append(f"{clean(cid):<36}  {turns:>5}  {first[:19].replace('T', ' '):<19}  "
                     f"{last[:19].replace('T', ' '):<19}  {question}")
    lines.append(f"{len(rows)} conversation(s)")
    return "\n".join(lines) + "\n"


_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")  # matched whole


def parse_date(value: str, *, end: bool = False, tz: tzinfo = timezone.utc) -> datetime:
    """``2026-11-21`` or a full ISO time → an aware datetime.

    A bare date means the start of that day in ``tz``; with ``end=True`` the
    start of the next day, so ``--until 2026-11-21`` includes the whole 21st.
    """
    text = (value or "").strip()
    if _DATE_ONLY.fullmatch(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not a valid date: {value!r} (use a real day, e.g. 2026-11-21)") from None
        if end:
            day += timedelta(days=1)
        return datetime.combine(day, time.min, tzinfo=tz)
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"not a date or ISO time: {value!r} (use 2026-11-21 or 2026-11-21T14:30:00Z)"
        ) from None
    return ts if ts.tzinfo else ts.replace(tzinfo=tz)

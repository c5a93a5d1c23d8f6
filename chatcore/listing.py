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


def _iso_array(col):
    """A timestamp[us, UTC] column as an Arrow string array of ``2026-11-21T05:31:15.123Z``:
    the digits are computed with integer arithmetic and laid out as one buffer."""
    import numpy as np
    import pyarrow as pa

    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    n = len(col)
    ms = col.cast(pa.int64()).to_numpy(zero_copy_only=False) // 1000  # floor, like the reference
    days, rem = np.divmod(ms, 86_400_000)
    # the civil date of a day count (H. Hinnant's days_from_civil, inverted)
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    if n and (year.min() < 0 or year.max() > 9999):
        text = np.char.add(np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms"), "Z")
        return pa.array(text, pa.string())
    out = np.empty((n, 24), dtype=np.uint8)
    fields = ((year, 0, 4), (month, 5, 2), (day, 8, 2), (rem // 3_600_000, 11, 2), (rem // 60_000 % 60, 14, 2),
              (rem // 1000 % 60, 17, 2), (rem % 1000, 20, 3))
    for value, at, width in fields:
        for k in range(width):
            out[:, at + width - 1 - k] = 48 + (value // 10 ** k) % 10
    for at, ch in ((4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":"), (19, "."), (23, "Z")):
        out[:, at] = ord(ch)
    offsets = np.arange(0, 24 * n + 1, 24, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(out))


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

    col = pc.fill_null(col.cast(pa.string()), "")  # (no nulls here: ids and texts are never null)
    col = pc.replace_substring(col, "\\", "\\\\")
    col = pc.replace_substring(col, '"', '\\"')
    if pc.any(pc.match_substring_regex(col, "[\\x00-\\x1f]")).as_py():
        for code in range(32):
            col = pc.replace_substring(col, chr(code), f"\\u{code:04x}")
    return pc.binary_join_element_wise(pa.scalar('"'), col, pa.scalar('"'), pa.scalar(""))


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
        if not pa.types.is_string(col.type):
            col = _iso_array(col)
        return pc.binary_join_element_wise(pa.scalar('"'), col, pa.scalar('"'), pa.scalar(""))

    yield b"[\n"
    for start in range(0, table.num_rows, JSON_SLICE):
        part = table.slice(start, JSON_SLICE)
        pieces = [pa.scalar('{"conversation_id":'), json_strings(part.column("conversation_id")),
                  pa.scalar(',"turns":'), pc.cast(part.column("turns"), pa.string()),
                  pa.scalar(',"first_ts":'), times(part, "first_ts"), pa.scalar(',"last_ts":'), times(part, "last_ts"),
                  pa.scalar(',"first_user_text":'), json_strings(part.column("first_user_text")), pa.scalar("}")]
        rows = pc.binary_join_element_wise(*pieces, pa.scalar(",\n"), pa.scalar(""))
        if isinstance(rows, pa.ChunkedArray):
            rows = rows.combine_chunks()
        # the rows, each followed by ",\n", lie back to back in the array's data buffer
        bounds = np.frombuffer(rows.buffers()[1], dtype=np.int32, count=len(rows) + 1, offset=rows.offset * 4)
        last = start + JSON_SLICE >= table.num_rows
        yield memoryview(rows.buffers()[2])[int(bounds[0]):int(bounds[-1]) - (2 if last else 0)]
    yield b"\n]\n"


def summary_json(table) -> str:
    return "".join(bytes(p).decode("utf-8") for p in summary_json_parts(table))


def write_summary(table, fmt: str, stream) -> None:
    """:func:`format_summary` written to a text stream (JSON as bytes to its buffer, no copies)."""
    binary = getattr(stream, "buffer", None)
    if fmt == "json" and binary is not None:
        stream.flush()
        for part in summary_json_parts(table):
            binary.write(part)
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


_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_date(value: str, *, end: bool = False, tz: tzinfo = timezone.utc) -> datetime:
    """``2026-11-21`` or a full ISO time → an aware datetime.

    A bare date means the start of that day in ``tz``; with ``end=True`` the
    start of the next day, so ``--until 2026-11-21`` includes the whole 21st.
    """
    text = (value or "").strip()
    if _DATE_ONLY.match(text):
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

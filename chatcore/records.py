"""The turn record: one JSON object per line of the log.

Schema v1 (written by the Space):

    v, ts, conversation_id, turn, user_text, files, response, latency_ms,
    source, backend, model, error, session[, retry_of]

``retry_of`` is present only on a turn that was answered again (Retry on the
Space's page): it holds the turn number it replaces, which is also the line's own
``turn``. The earlier answer stays in the log; the Space rebuilds a conversation's
context from the latest line per (conversation_id, turn).

Text a caller sends is logged as received, except that characters UTF-8 cannot
encode (lone surrogates) become U+FFFD. ``session`` is at most 64 characters and
each file name at most 255, so no caller-controlled field makes a line much longer
than the message cap.

The reader also accepts the older shape the first Space wrote (``timestamp``,
``response`` as a list of lines, ``history``) and maps it onto the same columns.
Everything that cannot be mapped raises :class:`BadRecord` with a short reason,
so callers count bad lines instead of crashing on them.
"""
from __future__ import annotations

import math
import re
import uuid
from datetime import datetime, timezone
from typing import Any

SCHEMA_VERSION = 1

#: Columns of the normalised record, in display order.
COLUMNS = (
    "ts",
    "conversation_id",
    "turn",
    "user_text",
    "response",
    "latency_ms",
    "source",
    "backend",
    "model",
    "error",
    "files",
    "session",
    "v",
)

#: A plausible conversation id: what a browser UUID, a ticket number or a
#: ``user:42`` style key looks like, and nothing that could be a path or markup.
#: Anchored with ``\Z`` (not ``$``, which also matches before a final newline), so
#: ``"abc\n"`` is not an id whether the pattern is used with ``match`` or ``fullmatch``.
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}\Z")
MAX_ID_LENGTH = 128
#: A source name: ``widget``, ``api``, ``space``, ``operator``, ``replay``, ``simulated``, …
SOURCE_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,32}\Z")
#: Sources only staff may use: the Space requires the staff token header for them
#: (compared without case: ``Operator`` is staff too).
STAFF_SOURCES = frozenset({"operator", "replay"})
MAX_FILE_NAME = 255
MAX_SESSION_LENGTH = 64

_SURROGATES = re.compile("[\ud800-\udfff]")


def clean_text(value: str) -> str:
    """``value`` with every character UTF-8 cannot encode (a lone surrogate) as U+FFFD."""
    return _SURROGATES.sub("\ufffd", value)


def clean_value(value: Any) -> Any:
    """:func:`clean_text` applied to every string inside ``value`` (dicts, lists)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_value(k): clean_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_value(v) for v in value]
    return value

#: Reasons a line is skipped, in the order the reader reports them.
BAD_REASONS = (
    "blank",
    "bad_utf8",
    "not_json",
    "not_object",
    "wrong_type",
    "truncated",
)


class BadRecord(ValueError):
    """A line that parsed as JSON but is not a usable turn record."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail or reason)
        self.reason = reason


def new_conversation_id() -> str:
    return str(uuid.uuid4())


def check_conversation_id(value: Any) -> str:
    """Return ``value`` if it is a plausible conversation id, else raise ValueError.

    The error text is safe to show to the caller: it never echoes the id back
    (it may be 10 KB long or contain control characters).
    """
    if not isinstance(value, str):
        raise ValueError("conversation_id must be a string")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"conversation_id is longer than {MAX_ID_LENGTH} characters")
    if not ID_PATTERN.fullmatch(value):
        raise ValueError(
            "conversation_id may only contain letters, digits and - _ . : "
            "(a UUID is a good choice)"
        )
    return value


def utc_now_iso() -> str:
    """UTC time as ISO-8601 with milliseconds and a ``Z``: ``2026-11-21T05:31:15.123Z``."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def make_record(
    *,
    conversation_id: str,
    turn: int,
    user_text: str,
    response: str,
    latency_ms: float,
    source: str,
    backend: str,
    model: str | None = None,
    error: str | None = None,
    files: list[dict] | None = None,
    session: str | None = None,
    ts: str | None = None,
    retry_of: int | None = None,
) -> dict:
    """Build a v1 record ready for :class:`chatcore.writer.LogWriter`."""
    record = {
        "v": SCHEMA_VERSION,
        "ts": ts or utc_now_iso(),
        "conversation_id": conversation_id,
        "turn": turn,
        "user_text": user_text,
        "files": files or [],
        "response": response,
        "latency_ms": round(float(latency_ms), 3),
        "source": source,
        "backend": backend,
        "model": model,
        "error": error,
        "session": session,
    }
    if retry_of is not None:
        record["retry_of"] = retry_of
    return record


# --------------------------------------------------------------------------- reading


def parse_ts(value: Any) -> datetime:
    """Parse an ISO-8601 time; naive times (the older shape) are taken as UTC."""
    if not isinstance(value, str) or not value:
        raise BadRecord("wrong_type", "timestamp is not a string")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadRecord("wrong_type", f"timestamp is not ISO-8601: {exc}") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc)


def _opt_str(obj: dict, key: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise BadRecord("wrong_type", f"{key} is not a string")


def _text(value: Any, key: str) -> str:
    """A text field: a string, or a list of strings (the older shape's ``response``)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    raise BadRecord("wrong_type", f"{key} is neither text nor a list of lines")


def _files(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRecord("wrong_type", "files is not a list")
    names = []
    for item in value:
        if isinstance(item, str):
            names.append(item)
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            names.append(item["name"])
        else:
            raise BadRecord("wrong_type", "files holds something that is not a file")
    return names


def normalise(obj: Any) -> dict:
    """Map one decoded JSON value onto the normalised columns, or raise BadRecord."""
    if not isinstance(obj, dict):
        raise BadRecord("not_object", "line is not a JSON object")
    cid = obj.get("conversation_id")
    if not isinstance(cid, str) or not cid:
        raise BadRecord("wrong_type", "conversation_id is missing or not a string")
    ts = parse_ts(obj.get("ts", obj.get("timestamp")))
    turn = obj.get("turn")
    if turn is not None and (isinstance(turn, bool) or not isinstance(turn, int)):
        raise BadRecord("wrong_type", "turn is not an integer")
    if turn is not None and not (0 <= turn < 2**31):
        raise BadRecord("wrong_type", "turn is out of range")
    latency = obj.get("latency_ms")
    if latency is not None:
        if isinstance(latency, bool) or not isinstance(latency, (int, float)):
            raise BadRecord("wrong_type", "latency_ms is not a number")
        latency = float(latency)
        if not math.isfinite(latency) or latency < 0:
            latency = None
    v = obj.get("v")
    if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
        raise BadRecord("wrong_type", "v is not an integer")
    return {
        "ts": ts,
        "conversation_id": cid,
        "turn": turn,
        "user_text": _text(obj.get("user_text"), "user_text"),
        "response": _text(obj.get("response"), "response"),
        "latency_ms": latency,
        "source": _opt_str(obj, "source") or "unknown",
        "backend": _opt_str(obj, "backend"),
        "model": _opt_str(obj, "model"),
        "error": _opt_str(obj, "error"),
        "files": _files(obj.get("files")),
        "session": _opt_str(obj, "session"),
        "v": v if v is not None else 0,
    }

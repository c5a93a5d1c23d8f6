"""The turn record: one JSON object per line of the log.

Schema v1 (written by the Space):

    v, ts, conversation_id, turn, user_text, files, response, latency_ms,
    source, backend, model, error, session[, retry_of][, usage][, cost_usd][, prompt_version]

``retry_of`` is present only on a turn that was answered again (Retry on the
Space's page): it holds the turn number it replaces, which is also the line's own
``turn``. The earlier answer stays in the log; the Space rebuilds a conversation's
context from the latest line per (conversation_id, turn).

A bot turn may also carry what its model server reported and what it cost (absent when
there is nothing to say, so older lines are just as valid): ``usage`` —
``{"input_tokens", "output_tokens"[, "cached_tokens"][, "reasoning_tokens"]}`` as the
server reported them; ``cost_usd`` — from ``CHAT_PRICES`` for the model (never estimated);
``prompt_version`` — which system prompt wrote the reply (see :mod:`chatcore.llm.costs`).
They are read into the columns ``input_tokens``, ``output_tokens``, ``cost_usd`` and
``prompt_version``.

Schema v2 adds event lines beside the turns, in the same log and with the same
``conversation_id``: a line with a ``kind`` other than ``"turn"`` is an event, never a
turn (it has no ``turn`` number and is not counted as one)::

    v=2, ts, conversation_id, kind, id, at_turn, staff, text[, via]

``kind`` is one of :data:`EVENT_KINDS`: ``handoff_requested`` (a person was asked for;
``via`` is ``button`` or ``chat`` for the visitor, ``model`` when the model called its
``request_human`` tool), ``handoff_taken`` / ``handoff_returned`` (``staff`` took the
conversation / gave it back to the bot), ``handoff_timeout`` (nobody took it in time; ``text`` is the fallback the
visitor saw), ``staff_message`` (``text`` written by ``staff``) and ``visitor_message`` (the
visitor wrote while staff held the conversation: the bot did not answer),
``conversation_resolved`` (``staff`` marked it done: it leaves the staff inbox and is back
with the bot). ``at_turn`` is
the number of turns the conversation had when the event happened, which places it in the
transcript; ``id`` is unique per event. Turn lines of v2 are v1 lines with ``"v": 2`` (a
``kind`` of ``"turn"`` may be present). :func:`normalise` refuses an event line with the
reason ``event`` (so turn tables and counts never include it); :func:`is_event` tells them
apart, and :mod:`chatcore.space.handoff` reads them.

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
#: The version of event lines (:func:`make_event`).
EVENT_SCHEMA_VERSION = 2
#: Kinds of event lines (schema v2).
EVENT_KINDS = frozenset({"handoff_requested", "handoff_taken", "handoff_returned", "handoff_timeout",
                         "staff_message", "visitor_message", "conversation_resolved"})

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
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "prompt_version",
)
#: Keys of a turn's ``usage`` object that are read into columns.
USAGE_COLUMNS = ("input_tokens", "output_tokens")

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
#: Sources of turns that no visitor wrote: replays of logged conversations, simulated visitors.
TEST_SOURCES = frozenset({"replay", "simulated"})
#: How the id of a replayed conversation starts.
REPLAY_PREFIX = "replay-"
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
    "event",
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
    usage: dict | None = None,
    cost_usd: float | None = None,
    prompt_version: str | None = None,
) -> dict:
    """Build a v1 record ready for :class:`chatcore.log.writer.LogWriter`."""
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
    if usage is not None:
        record["usage"] = usage
    if cost_usd is not None:
        record["cost_usd"] = cost_usd
    if prompt_version is not None:
        record["prompt_version"] = prompt_version
    return record


def is_test_traffic(conversation_id: str, source: str | None) -> bool:
    """Is this conversation test traffic (a replay or a simulated visitor), not a real visitor?

    The store asks the same in SQL (:mod:`chatcore.store.questions`)."""
    return (source or "") in TEST_SOURCES or conversation_id.startswith(REPLAY_PREFIX)


def is_event(obj: Any) -> bool:
    """Is this decoded line an event (schema v2), not a turn?"""
    return isinstance(obj, dict) and obj.get("kind") not in (None, "turn")


def make_event(*, conversation_id: str, kind: str, at_turn: int, staff: str | None = None,
               text: str | None = None, ts: str | None = None, **extra: Any) -> dict:
    """Build a v2 event line (see the module docs)."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    record = {
        "v": EVENT_SCHEMA_VERSION,
        "ts": ts or utc_now_iso(),
        "conversation_id": conversation_id,
        "kind": kind,
        "id": uuid.uuid4().hex[:16],
        "at_turn": int(at_turn),
        "staff": staff,
        "text": text,
    }
    record.update(extra)
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


def _usage(value: Any) -> tuple[int | None, int | None]:
    """(input_tokens, output_tokens) of a turn's ``usage`` object (either may be missing)."""
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise BadRecord("wrong_type", "usage is not an object")
    out = []
    for key in USAGE_COLUMNS:
        n = value.get(key)
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not -(2**63) <= n < 2**63):
            raise BadRecord("wrong_type", f"usage.{key} is not an integer")
        out.append(n)
    return out[0], out[1]


def _number(obj: dict, key: str) -> float | None:
    """A number that is absent, or unknown when not finite or negative (like ``latency_ms``)."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRecord("wrong_type", f"{key} is not a number")
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else None


def normalise(obj: Any) -> dict:
    """Map one decoded JSON value onto the normalised columns, or raise BadRecord."""
    if not isinstance(obj, dict):
        raise BadRecord("not_object", "line is not a JSON object")
    if is_event(obj):
        raise BadRecord("event", "an event line (handoff or staff message), not a turn")
    cid = obj.get("conversation_id")
    if not isinstance(cid, str) or not cid:
        raise BadRecord("wrong_type", "conversation_id is missing or not a string")
    ts = parse_ts(obj.get("ts", obj.get("timestamp")))
    turn = obj.get("turn")
    if turn is not None and (isinstance(turn, bool) or not isinstance(turn, int)):
        raise BadRecord("wrong_type", "turn is not an integer")
    if turn is not None and not (0 <= turn < 2**31):
        raise BadRecord("wrong_type", "turn is out of range")
    latency = _number(obj, "latency_ms")
    input_tokens, output_tokens = _usage(obj.get("usage"))
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
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost_usd": _number(obj, "cost_usd"),
        "prompt_version": _opt_str(obj, "prompt_version"),
    }


def conversation_objects(raw: bytes):
    """The JSON objects with a string ``conversation_id`` among the newline-separated lines of
    ``raw`` (turns and events alike); blank, broken and other lines are skipped."""
    import orjson

    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("conversation_id"), str):
            yield obj

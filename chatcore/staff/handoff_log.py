"""The hand-offs as the log records them: one conversation's events, which conversations were
handed to a person, and the Overview's figures (event lines only, read incrementally)."""
from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path

from chatcore.config import log_folder
from chatcore.log import records
from chatcore.log.shards import ShardFollower
from chatcore.space.handoff import _epoch


class _EventScan:
    """The event lines (schema v2) of a log, kept per process and followed with the log's
    one follower (:class:`chatcore.log.shards.ShardFollower`): each look reads only the bytes
    appended since the last one; a shard the follower says must be read again (replaced by
    ``forget`` or rotation, truncated, rewritten in place) loses what was kept of it first.
    Only lines holding ``"kind"`` are parsed."""

    def __init__(self):
        self._lock = threading.Lock()
        self._logs: dict[str, tuple[ShardFollower, dict[str, list]]] = {}  # log -> follower, shard -> events

    def lines(self, log) -> list[tuple[bytes, dict]]:
        """``(line, event)`` of every event line of ``log`` (a file, or a folder of shards)."""
        key = str(log)
        with self._lock:
            if key not in self._logs:
                self._logs[key] = (ShardFollower(log), {})
            follower, kept = self._logs[key]
            for ch in follower.changes():
                if ch.gone or ch.again:
                    kept.pop(ch.path, None)
                if ch.gone:
                    continue
                events = kept.setdefault(ch.path, [])
                try:
                    for _, data in ch.blocks():
                        _scan_block(data, events)
                except OSError:
                    pass  # unreadable now: what was read is kept, the rest is asked for next time
            return [e for path in sorted(kept) for e in kept[path]]

    def offset(self, log, shard) -> int | None:
        """How far ``shard`` of ``log`` was read (for tests and diagnostics)."""
        with self._lock:
            found = self._logs.get(str(log))
            return None if found is None else found[0].offset(shard)


def _scan_block(data: bytes, events: list) -> None:
    """Append the event lines among the whole lines of ``data`` to ``events``."""
    import orjson

    at = data.find(b'"kind"')
    while at != -1:
        start = data.rfind(b"\n", 0, at) + 1
        end = data.find(b"\n", at)
        line = data[start:end]
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and records.is_event(obj):
            events.append((line, obj))
        at = data.find(b'"kind"', end)


_EVENTS = _EventScan()


def _event_lines(log_path, needle: bytes):
    """Parsed event lines (schema v2) of the log folder whose bytes contain ``needle``.

    The shards' event lines are found once per process with a plain byte search (only
    lines holding ``"kind"`` are parsed) and then followed as the shards grow, so asking
    again costs only the new bytes.
    """
    path = Path(log_path)
    for line, obj in _EVENTS.lines(path if path.is_file() else log_folder(path)):
        if needle in line:
            yield dict(obj)  # the kept events stay as read


def conversation_events(log_path, cid: str) -> list[dict]:
    """Every event line (schema v2) of ``cid`` in the log folder, in time order."""
    found = [e for e in _event_lines(log_path, json.dumps(cid).encode()) if e.get("conversation_id") == cid]
    found.sort(key=lambda e: _epoch(e.get("ts")))
    return found


def handed_off_ids(log_path) -> set[str]:
    """Conversations a staff member took over at some point (a ``handoff_taken`` line)."""
    return {e["conversation_id"] for e in _event_lines(log_path, b'"handoff_taken"')
            if e.get("kind") == "handoff_taken" and isinstance(e.get("conversation_id"), str)}


def handoff_figures(log_path, since: datetime, leave_out: frozenset[str] = frozenset()) -> dict:
    """Handoffs since ``since`` (e.g. the start of today), from the log's event lines, but for
    the conversations in ``leave_out`` (e.g. test traffic).

    ``handoffs``: conversations a staff member took over; ``requests``: conversations whose
    visitor asked for a person; ``first_reply_p50_s`` / ``first_reply_p95_s``: seconds from
    the request (or, without one, the takeover) to the first staff message after it.
    """
    import numpy as np

    start = since.timestamp()
    events = [e for e in _event_lines(log_path, b'"kind"')
              if isinstance(e.get("conversation_id"), str) and _epoch(e.get("ts")) >= start
              and e["conversation_id"] not in leave_out]
    events.sort(key=lambda e: _epoch(e.get("ts")))
    taken, requested, waits = set(), set(), []
    opened: dict[str, float] = {}  # conversation -> when a person was first needed
    for e in events:
        cid, kind, ts = e["conversation_id"], e.get("kind"), _epoch(e.get("ts"))
        if kind == "handoff_requested":
            requested.add(cid)
            opened.setdefault(cid, ts)
        elif kind == "handoff_taken":
            taken.add(cid)
            opened.setdefault(cid, ts)
        elif kind == "staff_message" and cid in opened:
            waits.append(ts - opened.pop(cid))
        elif kind in ("handoff_returned", "handoff_timeout"):
            opened.pop(cid, None)
    p50, p95 = (float(np.percentile(waits, 50)), float(np.percentile(waits, 95))) if waits else (None, None)
    return {"handoffs": len(taken), "requests": len(requested), "first_reply_p50_s": p50,
            "first_reply_p95_s": p95, "first_replies": len(waits)}

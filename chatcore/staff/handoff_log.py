"""The hand-offs as the log records them: one conversation's events, which conversations were
handed to a person, and the Overview's figures (event lines only, read incrementally)."""
from __future__ import annotations

import json
import os
import threading
from datetime import datetime
from pathlib import Path

from chatcore.log import records
from chatcore.space.handoff import _epoch


class _EventScan:
    """The event lines (schema v2) of log shards, kept per process: each look reads only the
    bytes appended since the last one (a shard replaced, truncated or rewritten from its
    start is read again). Reading is by chunks into one buffer, not a memory map, so a
    large log does not count in the process's memory."""

    CHUNK = 8 * 1024 * 1024
    HEAD = 4096

    def __init__(self):
        self._lock = threading.Lock()
        self._shards: dict[str, list] = {}  # path -> [dev, ino, offset, head bytes, [(line, event)]]

    def lines(self, shards) -> list[tuple[bytes, dict]]:
        with self._lock:
            out: list[tuple[bytes, dict]] = []
            for shard in shards:
                path = str(shard)
                try:
                    with open(path, "rb") as f:
                        st = os.fstat(f.fileno())
                        state = self._shards.get(path)
                        head = os.pread(f.fileno(), self.HEAD, 0)
                        if (state is None or state[:2] != [st.st_dev, st.st_ino] or st.st_size < state[2]
                                or head[:len(state[3])] != state[3]):
                            state = self._shards[path] = [st.st_dev, st.st_ino, 0, b"", []]
                        self._read(f.fileno(), st.st_size, state)
                        state[3] = head[:min(len(head), state[2])]
                except (OSError, ValueError):
                    self._shards.pop(path, None)
                    continue
                out.extend(state[4])
            return out

    def _read(self, fd: int, size: int, state: list) -> None:
        import orjson

        pos, want = state[2], self.CHUNK
        while pos < size:
            data = os.pread(fd, min(want, size - pos), pos)
            if not data:
                break
            cut = data.rfind(b"\n")
            if cut < 0:
                if pos + len(data) >= size:
                    break  # a partial last line: not written yet
                want *= 2  # a line longer than a chunk
                continue
            at = data.find(b'"kind"', 0, cut)
            while at != -1:
                start = data.rfind(b"\n", 0, at) + 1
                end = data.find(b"\n", at)
                line = data[start:end]
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    obj = None
                if isinstance(obj, dict) and records.is_event(obj):
                    state[4].append((line, obj))
                at = data.find(b'"kind"', end, cut)
            pos += cut + 1
            want = self.CHUNK
        state[2] = pos


_EVENTS = _EventScan()


def _event_lines(log_path, needle: bytes):
    """Parsed event lines (schema v2) of the log folder whose bytes contain ``needle``.

    The shards' event lines are found once per process with a plain byte search (only
    lines holding ``"kind"`` are parsed) and then followed as the shards grow, so asking
    again costs only the new bytes.
    """
    from chatcore.config import log_folder

    path = Path(log_path)
    shards = [path] if path.is_file() else sorted(p for p in log_folder(path).glob("*.jsonl") if p.is_file())
    for line, obj in _EVENTS.lines(shards):
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

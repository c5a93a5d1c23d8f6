"""Feedback, tags, notes and replay links: append-only JSONL files beside the log.

The turn log itself stays append-only and untouched; everything people add
about a conversation goes to ``<log folder>/annotations/``:

* ``feedback.jsonl`` — ``{ts, conversation_id, turn, rating: "up"|"down", by, source}``;
  the latest rating per (conversation, turn, by) counts, so a changed mind is one more line.
* ``notes.jsonl``    — ``{ts, conversation_id, kind: "tag"|"untag"|"note"|"replay", value, author}``.

The folder is a sibling of the shards, not a shard: a folder of ``*.jsonl`` logs
is read without descending into it.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from .records import check_conversation_id, utc_now_iso
from .writer import LogWriter

RATINGS = ("up", "down")
TAG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9 _-]{0,31}$")
MAX_NOTE = 4000
_writers: dict[Path, LogWriter] = {}


def annotations_dir(log_path: str | Path) -> Path:
    log_path = Path(log_path)
    base = log_path if log_path.is_dir() or not log_path.suffix else log_path.parent
    return base / "annotations"


def _writer(path: Path) -> LogWriter:
    path = path.resolve()
    if path not in _writers:
        _writers[path] = LogWriter(path)
    return _writers[path]


def _append(path: Path, record: dict) -> None:
    w = _writer(path)
    if not w.append(record):
        raise OSError(f"could not save to {path.name}: {w.last_error}")


def _read(path: Path) -> pd.DataFrame:
    import orjson

    rows = []
    try:
        with open(path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break  # still being written
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(obj, dict) and isinstance(obj.get("conversation_id"), str):
                    rows.append(obj)
    except FileNotFoundError:
        pass
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- feedback


def record_feedback(log_path, conversation_id: str, turn: int, rating: str, *, by: str = "visitor",
                    source: str = "widget") -> dict:
    check_conversation_id(conversation_id)
    if rating not in RATINGS:
        raise ValueError("rating must be 'up' or 'down'")
    if isinstance(turn, bool) or not isinstance(turn, int) or not 0 <= turn < 2**31:
        raise ValueError("turn must be a whole number from 0")
    if by not in ("visitor", "staff"):
        raise ValueError("by must be 'visitor' or 'staff'")
    rec = {"v": 1, "ts": utc_now_iso(), "conversation_id": conversation_id, "turn": turn,
           "rating": rating, "by": by, "source": source}
    _append(annotations_dir(log_path) / "feedback.jsonl", rec)
    return rec


def load_feedback(log_path) -> pd.DataFrame:
    """Current ratings: one row per (conversation_id, turn, by), the latest line winning."""
    cols = ["ts", "conversation_id", "turn", "rating", "by", "source"]
    frame = _read(annotations_dir(log_path) / "feedback.jsonl")
    if frame.empty:
        return pd.DataFrame(columns=cols)
    frame = frame[frame["rating"].isin(RATINGS) & frame["turn"].map(lambda t: isinstance(t, int))]
    frame = frame.assign(ts=pd.to_datetime(frame["ts"], utc=True, errors="coerce")).dropna(subset=["ts"])
    frame = frame.drop_duplicates(["conversation_id", "turn", "by"], keep="last")
    return frame.reindex(columns=cols).reset_index(drop=True)


def feedback_by_turn(log_path) -> dict[tuple[str, int], str]:
    """``{(conversation_id, turn): rating}`` — a visitor's rating outranks staff's."""
    fb = load_feedback(log_path)
    out: dict[tuple[str, int], str] = {}
    for row in fb.sort_values("by", ascending=True).itertuples():  # staff first, visitor overwrites
        out[(row.conversation_id, int(row.turn))] = row.rating
    return out


# ------------------------------------------------------------------------ tags and notes


def _note(log_path, conversation_id: str, kind: str, value: str, author: str) -> dict:
    check_conversation_id(conversation_id)
    rec = {"v": 1, "ts": utc_now_iso(), "conversation_id": conversation_id, "kind": kind,
           "value": value, "author": (author or "staff")[:64]}
    _append(annotations_dir(log_path) / "notes.jsonl", rec)
    return rec


def normalise_tag(tag: str) -> str:
    tag = " ".join((tag or "").strip().lower().split())
    if not TAG_PATTERN.match(tag):
        raise ValueError("a tag is 1–32 characters: letters, digits, space, - or _ (e.g. escalated)")
    return tag


def add_tag(log_path, conversation_id: str, tag: str, author: str = "staff") -> dict:
    return _note(log_path, conversation_id, "tag", normalise_tag(tag), author)


def remove_tag(log_path, conversation_id: str, tag: str, author: str = "staff") -> dict:
    return _note(log_path, conversation_id, "untag", normalise_tag(tag), author)


def add_note(log_path, conversation_id: str, text: str, author: str = "staff") -> dict:
    text = (text or "").strip()
    if not text:
        raise ValueError("the note is empty")
    if len(text) > MAX_NOTE:
        raise ValueError(f"a note is at most {MAX_NOTE} characters")
    return _note(log_path, conversation_id, "note", text, author)


def link_replay(log_path, original_id: str, replay_id: str, author: str = "staff") -> dict:
    check_conversation_id(replay_id)
    return _note(log_path, original_id, "replay", replay_id, author)


def load_annotations(log_path) -> dict[str, dict]:
    """``{conversation_id: {"tags": set, "notes": [(ts, author, text)], "replays": [ids]}}``."""
    frame = _read(annotations_dir(log_path) / "notes.jsonl")
    out: dict[str, dict] = {}
    if frame.empty:
        return out
    for row in frame.itertuples():
        value = row.value if isinstance(row.value, str) else None
        if value is None:
            continue
        entry = out.setdefault(row.conversation_id, {"tags": set(), "notes": [], "replays": []})
        if row.kind == "tag":
            entry["tags"].add(value)
        elif row.kind == "untag":
            entry["tags"].discard(value)
        elif row.kind == "note":
            entry["notes"].append((row.ts, getattr(row, "author", "staff"), value))
        elif row.kind == "replay":
            entry["replays"].append(value)
    return out


def conversations_with(annotations: dict[str, dict], *, tag: str | None = None, text: str | None = None) -> set[str]:
    """Ids having ``tag`` and/or a note containing ``text`` (case-insensitive)."""
    hits = set()
    needle = (text or "").lower()
    for cid, entry in annotations.items():
        if tag and tag not in entry["tags"]:
            continue
        if needle and not any(needle in n[2].lower() for n in entry["notes"]) \
                and not any(needle in t for t in entry["tags"]):
            continue
        hits.add(cid)
    return hits

"""Feedback, tags, notes and replay links: append-only JSONL files beside the log.

The turn log itself stays append-only and untouched; everything people add
about a conversation goes to ``<log folder>/annotations/``:

* ``feedback.jsonl`` — ``{ts, conversation_id, turn, rating: "up"|"down", by, source}``;
  the latest rating per (conversation, turn, by) counts, so a changed mind is one more line.
* ``notes.jsonl``    — ``{ts, conversation_id, kind: "tag"|"untag"|"note"|"replay", value, author}``.
* ``snippets.jsonl`` — canned replies staff insert into a message:
  ``{ts, conversation_id: "", kind: "snippet"|"unsnippet", snippet_id, title, value, author}``;
  the latest line per ``snippet_id`` wins (an edit is one more line, a deletion an ``unsnippet``).
  A snippet belongs to no conversation: its ``conversation_id`` is empty, so forgetting or
  retention (which go by conversation) never touch it.

The folder is a sibling of the shards, not a shard: a folder of ``*.jsonl`` logs
is read without descending into it.
"""
from __future__ import annotations

import os
import re
import secrets
import threading
from pathlib import Path

import pandas as pd

from chatcore.log.records import check_conversation_id, utc_now_iso
from chatcore.log.shards import ShardFollower
from chatcore.log.writer import LogWriter

RATINGS = ("up", "down")
TAG_PATTERN = re.compile(r"[a-z0-9][a-z0-9 _-]{0,31}")  # matched whole
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
    from chatcore.remote.mirror import mirror_for_path

    remote = mirror_for_path(path)
    if remote is not None:  # a mirrored log: the Space writes it, every dashboard sees it
        remote.send_record(path.name, record)
        return
    w = _writer(path)
    if not w.append(record):
        raise OSError(f"could not save to {path.name}: {w.last_error}")


class _Incremental:
    """The good lines of one append-only JSONL file, followed with the log's one follower
    (:class:`chatcore.log.shards.ShardFollower`): each call reads only the bytes appended
    since the last one; when the follower says the file must be read again (``forget`` and
    retention rewrite it without some conversations; replaced, truncated or deleted), the
    rows held are dropped first. ``version`` changes whenever the rows do."""

    def __init__(self, path: Path):
        self.path = path
        self._follower = ShardFollower(path)
        self.rows: list[dict] = []
        self.version = 0
        self.lock = threading.Lock()

    def read(self) -> tuple[list[dict], int]:
        import orjson

        with self.lock:
            for ch in self._follower.changes():
                if ch.gone or ch.again:
                    self.rows = []
                    self.version += 1
                if ch.gone:
                    continue
                added = 0
                for _, data in ch.blocks():
                    for line in data.splitlines():
                        try:
                            obj = orjson.loads(line)
                        except orjson.JSONDecodeError:
                            continue
                        if isinstance(obj, dict) and isinstance(obj.get("conversation_id"), str):
                            self.rows.append(obj)
                            added += 1
                if added:
                    self.version += 1
            return self.rows, self.version


_readers: dict[Path, _Incremental] = {}
_derived: dict[tuple[Path, str], tuple[int, object]] = {}
_readers_lock = threading.Lock()


def _reader(path: Path) -> _Incremental:
    key = Path(os.path.abspath(path))
    with _readers_lock:
        reader = _readers.get(key)
        if reader is None:
            reader = _readers[key] = _Incremental(key)
        return reader


def _derive(path: Path, what: str, build):
    """``build(rows)`` of ``path``'s rows, computed again only when new lines arrived."""
    reader = _reader(path)
    rows, version = reader.read()
    key = (reader.path, what)
    hit = _derived.get(key)
    if hit is not None and hit[0] == version:
        return hit[1], version
    value = build(rows)
    _derived[key] = (version, value)
    return value, version


def _read(path: Path) -> pd.DataFrame:
    rows, _ = _reader(path).read()
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
    path = annotations_dir(log_path) / "feedback.jsonl"
    with _feedback_lock:
        # a rating is stored once per turn and rater; only a change adds a line
        current, _ = _derive(path, "latest", _latest_ratings)
        if current.get((conversation_id, turn, by)) == rating:
            return rec
        _append(path, rec)
    return rec


_feedback_lock = threading.Lock()


def _latest_ratings(rows: list[dict]) -> dict[tuple[str, int, str], str]:
    return {(r.get("conversation_id"), r.get("turn"), r.get("by")): r.get("rating") for r in rows}


def load_feedback(log_path) -> pd.DataFrame:
    """Current ratings: one row per (conversation_id, turn, by), the latest line winning."""
    return feedback_state(log_path)[0].copy(deep=False)


def feedback_state(log_path) -> tuple[pd.DataFrame, int]:
    """``(load_feedback(log_path), version)``: the file is read incrementally and the frame
    rebuilt only when ratings were added; ``version`` changes when it is."""
    return _derive(annotations_dir(log_path) / "feedback.jsonl", "feedback", _feedback_frame)


def _feedback_frame(rows: list[dict]) -> pd.DataFrame:
    cols = ["ts", "conversation_id", "turn", "rating", "by", "source"]
    frame = pd.DataFrame(rows)
    if frame.empty or "rating" not in frame or "turn" not in frame:
        return pd.DataFrame(columns=cols)
    frame = frame[frame["rating"].isin(RATINGS) & frame["turn"].map(lambda t: isinstance(t, int))]
    frame = frame.assign(ts=pd.to_datetime(frame.get("ts"), utc=True, errors="coerce")).dropna(subset=["ts"])
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
    if not TAG_PATTERN.fullmatch(tag):
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
    """``{conversation_id: {"tags": set, "notes": [(ts, author, text)], "replays": [ids]}}``.

    The notes file is read incrementally; the answer is rebuilt only when lines were added
    (treat it as read-only)."""
    return _derive(annotations_dir(log_path) / "notes.jsonl", "notes", _annotations)[0]


def _annotations(rows: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for row in rows:
        value = row.get("value")
        if not isinstance(value, str):
            continue
        kind = row.get("kind")
        entry = out.setdefault(row["conversation_id"], {"tags": set(), "notes": [], "replays": []})
        if kind == "tag":
            entry["tags"].add(value)
        elif kind == "untag":
            entry["tags"].discard(value)
        elif kind == "note":
            entry["notes"].append((row.get("ts"), row.get("author", "staff"), value))
        elif kind == "replay":
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


# ------------------------------------------------------------------------- canned replies

SNIPPETS_FILE = "snippets.jsonl"
MAX_SNIPPET = 2000
MAX_SNIPPET_TITLE = 60
SNIPPET_ID = re.compile(r"[a-z0-9]{1,32}")  # matched whole


def _snippet_id(value) -> str:
    if not isinstance(value, str) or not SNIPPET_ID.fullmatch(value):
        raise ValueError("snippet_id is 1–32 lowercase letters or digits (leave it out for a new snippet)")
    return value


def save_snippet(log_path, title: str, text: str, *, snippet_id: str | None = None, author: str = "staff") -> dict:
    """Add a canned reply (``snippet_id`` None: a new one) or change one; returns the line written."""
    title = " ".join((title or "").split()) if isinstance(title, str) else None
    text = (text or "").strip() if isinstance(text, str) else None
    if not title or not text:
        raise ValueError("a canned reply needs a title and a text")
    if len(title) > MAX_SNIPPET_TITLE:
        raise ValueError(f"a canned reply's title is at most {MAX_SNIPPET_TITLE} characters")
    if len(text) > MAX_SNIPPET:
        raise ValueError(f"a canned reply is at most {MAX_SNIPPET} characters")
    snippet_id = secrets.token_hex(6) if snippet_id is None else _snippet_id(snippet_id)
    rec = {"v": 1, "ts": utc_now_iso(), "conversation_id": "", "kind": "snippet", "snippet_id": snippet_id,
           "title": title, "value": text, "author": (author or "staff")[:64]}
    _append(annotations_dir(log_path) / SNIPPETS_FILE, rec)
    return rec


def delete_snippet(log_path, snippet_id: str, author: str = "staff") -> dict:
    rec = {"v": 1, "ts": utc_now_iso(), "conversation_id": "", "kind": "unsnippet",
           "snippet_id": _snippet_id(snippet_id), "author": (author or "staff")[:64]}
    _append(annotations_dir(log_path) / SNIPPETS_FILE, rec)
    return rec


def load_snippets(log_path) -> list[dict]:
    """The canned replies, ``[{snippet_id, title, text, author, ts}]`` by title (read incrementally;
    treat the answer as read-only)."""
    return _derive(annotations_dir(log_path) / SNIPPETS_FILE, "snippets", _snippets)[0]


def _snippets(rows: list[dict]) -> list[dict]:
    current: dict[str, dict] = {}
    for row in rows:
        sid = row.get("snippet_id")
        if not isinstance(sid, str):
            continue
        if row.get("kind") == "unsnippet":
            current.pop(sid, None)
        elif row.get("kind") == "snippet" and isinstance(row.get("title"), str) and isinstance(row.get("value"), str):
            current[sid] = {"snippet_id": sid, "title": row["title"], "text": row["value"],
                            "author": str(row.get("author") or "staff"), "ts": row.get("ts")}
    return sorted(current.values(), key=lambda s: (s["title"].lower(), s["snippet_id"]))

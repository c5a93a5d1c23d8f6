"""What ``forget`` and ``retention`` removed, told to everything that holds the log in memory.

Two append-only files in the log folder's ``.chatcore-cache/`` (never purged with the cache):

* ``forgotten.jsonl``: the registry. One line per forgotten conversation, ``{"ts", "at",
  "hash"}``: the id itself must not stay, so it is named by :func:`forgotten_hash`. Every
  holder — the running Spaces (context, turn numbers, hand-off state, feedback), a follower's
  queue, Live, the alerts watcher — asks :class:`ForgottenRegistry` which of its ids went.
  An entry means "everything of this id up to ``at``": the id may chat again afterwards and
  then starts afresh as a new conversation.
* ``rewrites.jsonl``: how a shard rewritten in place maps to its replacement (file identities
  and removed byte ranges), so a follower continues where it was instead of reading it again.

This module knows only the folder: it imports neither the store nor the Space.
"""
from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Iterable

import orjson

from chatcore.config import log_folder
from chatcore.log.records import utc_now_iso
from chatcore.log.shards import ShardFollower

CACHE_DIR = ".chatcore-cache"
REWRITES_FILE = "rewrites.jsonl"
FORGOTTEN_FILE = "forgotten.jsonl"
#: Files of CACHE_DIR that are notes, not caches: a cache purge keeps them.
NOTE_FILES = (REWRITES_FILE, FORGOTTEN_FILE)


def forgotten_hash(conversation_id: str) -> str:
    """How the notes name a forgotten conversation (the id itself must not stay)."""
    return hashlib.sha256(b"chatcore-forget:" + conversation_id.encode("utf-8")).hexdigest()


def _append(path: Path, records: list[dict]) -> None:
    from chatcore.log.writer import LogWriter

    writer = LogWriter(path)
    try:
        for rec in records:
            if not writer.append(rec):
                raise OSError(f"could not write {path.name}: {writer.last_error}")
    finally:
        writer.close()


def record_forgotten(log_path, conversation_ids: Iterable[str]) -> int:
    """Add ``conversation_ids`` to the registry (after their lines left the log); returns how many."""
    at = time.time()
    recs = [{"ts": utc_now_iso(), "at": at, "hash": forgotten_hash(cid)} for cid in dict.fromkeys(conversation_ids)]
    if recs:
        _append(log_folder(log_path) / CACHE_DIR / FORGOTTEN_FILE, recs)
    return len(recs)


class ForgottenRegistry:
    """The registry of one log folder, read incrementally (a ``stat`` when nothing changed).

    :meth:`refresh` returns the hashes forgotten since the last call, so a holder drops
    exactly those; :meth:`forgotten_after` tells whether an id was forgotten after a moment
    a holder knew it from."""

    def __init__(self, log_path):
        self.path = log_folder(log_path) / CACHE_DIR / FORGOTTEN_FILE
        self._at: dict[str, float] = {}
        self._follower = ShardFollower(self.path)
        self._lock = threading.Lock()

    def refresh(self) -> set[str]:
        """Read new entries; returns the hashes they name. (A file replaced or rewritten is
        read again: entries only add, so what was known stays and nothing is named twice.)"""
        with self._lock:
            new: set[str] = set()
            try:
                for ch in self._follower.changes():
                    if ch.gone:
                        continue
                    for _, data in ch.blocks():
                        for line in data.splitlines():
                            try:
                                rec = orjson.loads(line)
                                h, at = rec["hash"], float(rec["at"])
                            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                                continue
                            if isinstance(h, str) and at > self._at.get(h, 0.0):
                                self._at[h] = at
                                new.add(h)
            except OSError:
                pass  # unreadable now: asked again on the next refresh
            return new

    def hashes(self) -> set[str]:
        return set(self._at)

    def forgotten_at(self, conversation_id: str) -> float | None:
        """When ``conversation_id`` was last forgotten (epoch seconds), or None."""
        return self._at.get(forgotten_hash(conversation_id)) if self._at else None

    def forgotten_after(self, conversation_id: str, since: float) -> bool:
        at = self.forgotten_at(conversation_id)
        return at is not None and at >= since


def ids_in(conversation_ids: Iterable[str], hashes: set[str]) -> list[str]:
    """The ids among ``conversation_ids`` that ``hashes`` name."""
    if not hashes:
        return []
    return [cid for cid in conversation_ids if isinstance(cid, str) and forgotten_hash(cid) in hashes]


# ----------------------------------------------------------------- rewritten shards


def note_rewrite(path: Path, old: tuple, new: tuple, removed: list, conversation_id: str | None) -> None:
    """Tell running followers how the replaced shard maps to the new one, and which
    conversation (by hash) went, so they can drop what they hold of it."""
    rec = {"ts": utc_now_iso(), "name": path.name, "old": list(old), "new": list(new),
           "removed": removed, "forgot": forgotten_hash(conversation_id) if conversation_id else None}
    _append(path.parent / CACHE_DIR / REWRITES_FILE, [rec])


def rewrite_map(log_path) -> dict[tuple, tuple[tuple, list, str | None]]:
    """``{new (dev, ino): (old (dev, ino), removed ranges, forgotten id hash)}`` from the rewrite
    notes of the log's folder (for a file: its own folder)."""
    out = {}
    try:
        with open(log_folder(log_path) / CACHE_DIR / REWRITES_FILE, "rb") as f:
            for line in f:
                try:
                    rec = orjson.loads(line)
                    out[tuple(rec["new"])] = (tuple(rec["old"]), rec["removed"], rec.get("forgot"))
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue
    except OSError:
        pass
    return out

"""Deleting cached copies of the log: a cache is rebuilt from the log, so deleting is always safe.

Used by ``forget`` and ``retention`` (the cache must not keep what the log no longer has) and
by a mirror whose copy of a shard the Space replaced.
"""
from __future__ import annotations

import os
from pathlib import Path

from chatcore.config import log_folder
from chatcore.log.forgotten import CACHE_DIR, NOTE_FILES

_BLOCK = 8 << 20


def purge_cache(log_path, needles: list[bytes], shards: list[Path] = ()) -> int:
    """Delete cache files holding any of ``needles``, and the cache entries of
    ``shards``. A cache is rebuilt from the log, so deleting is always safe."""
    import orjson

    cache = log_folder(log_path) / CACHE_DIR
    if not cache.is_dir():
        return 0
    names = {os.path.abspath(p) for p in shards}
    removed = 0
    for q in sorted(cache.rglob("*")):
        if not q.is_file() or q.name in NOTE_FILES:
            continue
        # a saved whole-log list is made from every shard: never worth keeping after a change
        # (and a printed list may hold an id in an escaped form the needle would not match)
        hit = q.name.startswith("summary-") or _contains(q, needles)
        if not hit and names and q.suffix == ".json":
            try:
                hit = orjson.loads(q.read_bytes()).get("path") in names
            except (OSError, orjson.JSONDecodeError, AttributeError):
                pass
        if hit:
            q.unlink(missing_ok=True)
            removed += 1
            if q.suffix == ".json":  # a shard's manifest: its segments go with it
                for seg in cache.glob(f"{q.stem}.*"):
                    seg.unlink(missing_ok=True)
                    removed += 1
    return removed


def _contains(path: Path, needles: list[bytes]) -> bool:
    """Whether the file's bytes hold any needle (read in blocks)."""
    keep = max((len(n) for n in needles), default=1) - 1
    tail = b""
    try:
        with open(path, "rb") as f:
            while True:
                block = f.read(_BLOCK)
                if not block:
                    return False
                data = tail + block
                if any(n in data for n in needles):
                    return True
                tail = data[-keep:] if keep else b""
    except OSError:
        return False


def drop_cache_of_deleted(log_path) -> int:
    """Cache entries (manifest and segments) of shards that no longer exist, and the
    saved summaries built from all shards."""
    import orjson

    cache = log_folder(log_path) / CACHE_DIR
    removed = 0
    if not cache.is_dir():
        return 0
    for manifest in cache.glob("*.json"):
        try:
            path = orjson.loads(manifest.read_bytes()).get("path")
        except (OSError, orjson.JSONDecodeError, AttributeError):
            continue
        if path and not os.path.exists(path):
            key = manifest.stem
            for seg in cache.glob(f"{key}.*"):
                seg.unlink(missing_ok=True)
                removed += 1
    for summary in cache.glob("summary-*"):
        summary.unlink(missing_ok=True)
        removed += 1
    return removed

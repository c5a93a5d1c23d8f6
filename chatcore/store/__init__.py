"""Incremental, cached reader for the JSONL chat log.

:class:`LogStore` keeps a byte offset per shard (one file, or every ``*.jsonl`` in
a folder) and parses only the bytes appended since the last :meth:`LogStore.refresh`.
A last line without its ``\\n`` is *pending*, not bad, until the writer finishes it.
Truncation, replacement (new inode), deletion and new shards are all handled.

Parsing is block-wise. A block of complete lines goes through ``pyarrow.json`` with
an explicit schema; rows that the vectorised checks cannot vouch for, and blocks the
fast parser rejects, are bisected down to small runs of lines that are parsed one by
one with :func:`parse_line` (``orjson`` + :func:`chatcore.log.records.normalise`), which is
the reference for what a good line is. Either path gives the same rows and the same
bad-line counts.

Parsed rows are persisted per shard as Arrow IPC segments in ``cache_dir`` (default
``<log folder>/.chatcore-cache``). A cached shard is reused only if its device, inode
and size still fit and a fingerprint (hash of the head, the tail and a few samples in
between of the cached byte range) still matches, so a shard rewritten in place with
the same size and mtime is detected and read again. Failing to write the cache never
breaks reading. (A same-size rewrite that only touches bytes between the samples
is not seen; any change to the first or last 64 KB is.)

:attr:`LogStore.frame` columns are :data:`chatcore.log.records.COLUMNS` (or the
projection asked for), with these dtypes:

* ``ts``: ``datetime64[us, UTC]``
* ``conversation_id``, ``user_text``, ``response``, ``source``, ``backend``,
  ``model``, ``session``: pandas ``str`` (Arrow-backed; missing is NaN)
* ``turn``: ``Int64`` (nullable); ``latency_ms``: ``float64``; ``v``: ``int64``
* ``error``: ``object``, ``None`` when there was no error
* ``files``: ``object``, a ``list`` of file names per row

Rows are in shard order (sorted file names), then file order. Frames handed out
are copy-on-write views: changing one does not change the store.

Package layout: :mod:`.parse` (lines and blocks), :mod:`.segments` (the persisted
form), :mod:`.ingest` (shards, offsets, :class:`LogStore`), :mod:`.frames` (pandas),
:mod:`.questions` (the named questions, answered by an embedded SQL engine), :mod:`.summary` (the
whole log's conversation list, grouped without the engine).
"""
from __future__ import annotations

from chatcore.store.ingest import LogStore, load_log
from chatcore.log.shards import find_newline
from chatcore.store.parse import parse_bytes, parse_line
from chatcore.store.schema import ARROW_SCHEMA

__all__ = ["LogStore", "load_log", "parse_line", "parse_bytes", "find_newline", "ARROW_SCHEMA"]


def __getattr__(name):  # pandas is imported only by those who need frames
    if name in ("_to_pandas", "_empty_frame"):
        from chatcore.store import frames

        return getattr(frames, name)
    if name in ("Questions", "Filters", "open_questions"):
        from chatcore.store import questions

        return getattr(questions, name)
    raise AttributeError(name)

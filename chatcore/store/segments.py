"""The persisted form: per shard, Arrow IPC segments of parsed rows and a manifest.

A cached shard is reused only if its device, inode and size still fit and a
fingerprint (hash of the head, the tail and a few samples in between of the cached
byte range) still matches. A manifest written by another store version is ignored
(and its segments rebuilt). Failing to write the cache never breaks reading.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import threading
import weakref
from collections import Counter

import pyarrow as pa
import pyarrow.ipc as ipc

from chatcore.store.schema import ARROW_SCHEMA

CACHE_VERSION = 3
#: A shard's cache is (re)written when at least this many parsed bytes are not in it.
CACHE_MIN_BYTES = 1 << 20
#: ... except the first segment of a shard, written from this size on.
CACHE_FIRST_BYTES = 64 << 10
#: Rows per record batch in a segment file (the parsed blocks are joined up to this).
SEGMENT_BATCH_ROWS = 1 << 18
#: Segments per shard before the small ones are merged.
MAX_SEGMENTS = 8
_FP_EDGE = 64 << 10
_FP_SAMPLE = 4 << 10
_FP_SAMPLES = 16


def _fingerprint(fd: int, upto: int) -> str:
    """Hash of the first and last KB before ``upto`` plus evenly spaced samples."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(upto).encode())
    if upto <= 2 * _FP_EDGE + _FP_SAMPLES * _FP_SAMPLE:
        h.update(os.pread(fd, upto, 0))
        return h.hexdigest()
    h.update(os.pread(fd, _FP_EDGE, 0))
    span = upto - 2 * _FP_EDGE - _FP_SAMPLE
    for k in range(_FP_SAMPLES):
        pos = _FP_EDGE + span * k // max(1, _FP_SAMPLES - 1)
        h.update(os.pread(fd, _FP_SAMPLE, pos))
    h.update(os.pread(fd, _FP_EDGE, upto - _FP_EDGE))
    return h.hexdigest()


class SegmentCache:
    """Mixin of :class:`chatcore.store.LogStore`: loading and writing a shard's segments.
    ``sh`` below is the store's state of one shard (``chatcore.store.ingest._Shard``; not
    imported, so this module stays below the store that uses it)."""

    def _cache_key(self, path: str) -> str:
        ident = json.dumps([os.path.abspath(path), list(self.columns), CACHE_VERSION])
        return hashlib.sha1(ident.encode()).hexdigest()[:20]

    # -- cache -------------------------------------------------------------------

    def _load_cache(self, sh, fd: int, st: os.stat_result) -> None:
        if self.cache_dir is None:
            return
        key = self._cache_key(sh.path)
        manifest = self.cache_dir / f"{key}.json"
        try:
            meta = json.loads(manifest.read_bytes())
        except (OSError, ValueError):
            return
        try:
            if meta.get("version") != CACHE_VERSION or meta.get("columns") != list(self.columns):
                return
            if (meta["dev"], meta["ino"]) != (st.st_dev, st.st_ino):
                return
            upto = int(meta["offset"])
            if upto <= 0 or st.st_size < upto:
                return
            if _fingerprint(fd, upto) != meta["fingerprint"]:
                return
            chunks = []
            expected = ARROW_SCHEMA.empty_table().select(list(self.columns)).schema
            for seg in meta["segments"]:
                table = self._map_segment(self.cache_dir / seg["file"])
                if table.num_rows != seg["rows"] or not table.schema.equals(expected):
                    return
                chunks.append((seg["start"], seg["end"], table, Counter(seg["bad"])))
        except Exception:  # a broken cache is just a cache miss
            return
        for start, end, table, bad in chunks:
            sh.add(start, end, table, bad)
        sh.offset = sh.cached_upto = upto
        sh.cached_segments = list(meta["segments"])
        sh.fp = meta["fingerprint"]
        sh.dev_ino = (st.st_dev, st.st_ino)

    def _map_segment(self, path) -> pa.Table:
        """A segment's rows over a read-only map of its file (no copy). The map is remembered
        (weakly: it goes with the rows) so that :meth:`release_mapped` can drop its pages."""
        with open(path, "rb") as fh:
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        maps = self.__dict__.setdefault("_mapped", weakref.WeakSet())
        maps.add(mapped)
        return ipc.open_file(pa.BufferReader(pa.py_buffer(mapped))).read_all()

    def release_mapped(self) -> None:
        """Drop the pages of the mapped segments from this process. They stay in the page
        cache and are mapped again when read: after a scan of every turn's text (a search),
        the process does not keep the whole log resident."""
        if not hasattr(mmap, "MADV_DONTNEED"):
            return
        for mapped in list(self.__dict__.get("_mapped", ())):
            try:
                mapped.madvise(mmap.MADV_DONTNEED)
            except (OSError, ValueError):  # closed meanwhile
                pass

    def _save_cache(self, sh, fd: int) -> None:
        """Persist the rows parsed since the last segment as a new segment. The file
        is written in a background thread (see :meth:`wait_cache`); the snapshot and
        the fingerprint are taken here."""
        if self.cache_dir is None or sh.writing:
            return
        new_bytes = sh.offset - sh.cached_upto
        # a shard's first segment comes early, so folders of small shards are cached too
        if new_bytes < CACHE_MIN_BYTES and not (sh.cached_upto == 0 and new_bytes >= CACHE_FIRST_BYTES):
            return
        try:
            key = self._cache_key(sh.path)
            keep = sh.cached_segments
            if len(keep) >= MAX_SEGMENTS:
                # many small segments from appends: merge all but the first into one
                keep = keep[:1]
            start, end = (keep[-1]["end"] if keep else 0), sh.offset
            tables = [c[2] for c in sh.chunks if c[0] >= start]
            bad = Counter(sh.bad)  # bad counts of the new range = total - kept segments
            for seg in keep:
                bad.subtract(seg["bad"])
            segment = {"file": f"{key}.{sh.dev_ino[1]}.{start}-{end}.arrow", "start": start, "end": end,
                       "rows": sum(t.num_rows for t in tables), "bad": {k: v for k, v in bad.items() if v}}
            meta = {
                "version": CACHE_VERSION,
                "path": os.path.abspath(sh.path),
                "columns": list(self.columns),
                "dev": sh.dev_ino[0],
                "ino": sh.dev_ino[1],
                "offset": end,
                "mtime_ns": sh.mtime_ns,
                "fingerprint": _fingerprint(fd, end),
                "segments": keep + [segment],
            }
        except Exception as exc:
            self._cache_failed(exc)
            return
        sh.writing = True
        gen = sh.gen
        th = threading.Thread(target=self._write_segment, args=(sh, gen, key, tables, meta), name="chatcore-cache")
        self._writers = [w for w in self._writers if w.is_alive()] + [th]
        th.start()

    def _write_segment(self, sh, gen: int, key: str, tables: list, meta: dict) -> None:
        try:
            try:  # Linux: lower this thread's priority, reading comes first
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
            except (AttributeError, OSError):
                pass
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            seg = meta["segments"][-1]
            schema = ARROW_SCHEMA.empty_table().select(list(self.columns)).schema
            tmp = self.cache_dir / (seg["file"] + f".tmp{os.getpid()}.{threading.get_ident()}")
            with pa.OSFile(str(tmp), "wb") as sink:
                with ipc.new_file(sink, schema) as writer:
                    # the parsed blocks (a few thousand rows each) joined into batches of about
                    # SEGMENT_BATCH_ROWS: a reader maps a few large batches, not thousands
                    group: list = []
                    rows = 0
                    for t in tables + [None]:
                        if t is not None and t.num_rows:
                            group.append(t)
                            rows += t.num_rows
                        if group and (t is None or rows >= SEGMENT_BATCH_ROWS):
                            batch = pa.concat_tables(group).combine_chunks() if len(group) > 1 else group[0]
                            writer.write_table(batch, max_chunksize=1 << 20)
                            group, rows = [], 0
                            del batch
            os.replace(tmp, self.cache_dir / seg["file"])
            mtmp = self.cache_dir / f"{key}.json.tmp{os.getpid()}.{threading.get_ident()}"
            mtmp.write_bytes(json.dumps(meta).encode())
            with self._lock:
                if sh.gen != gen:  # the shard was reset meanwhile: this segment is stale
                    mtmp.unlink(missing_ok=True)
                    return
                os.replace(mtmp, self.cache_dir / f"{key}.json")
                sh.cached_upto = seg["end"]
                sh.cached_segments = meta["segments"]
            self._gc_cache(key, {s["file"] for s in meta["segments"]})
        except Exception as exc:  # never let the cache break reading
            self._cache_failed(exc)
        finally:
            with self._lock:
                if sh.gen == gen:
                    sh.writing = False

    def _cache_failed(self, exc: BaseException) -> None:
        self.cache_errors += 1
        self.last_cache_error = f"{type(exc).__name__}: {exc}"

    def wait_cache(self, timeout: float | None = None) -> None:
        """Wait until background cache writes are done (also happens at exit)."""
        for th in list(self._writers):
            th.join(timeout)

    def _gc_cache(self, key: str, keep: set[str]) -> None:
        try:
            for q in self.cache_dir.glob(f"{key}.*.arrow"):
                if q.name not in keep:
                    q.unlink(missing_ok=True)
        except OSError:
            pass

    # -- reading -----------------------------------------------------------------

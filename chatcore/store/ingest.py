"""Ingestion: shards, byte offsets, incremental refresh; :class:`LogStore` and :func:`load_log`.

Which shards changed, and which must be read again from the start (replaced, truncated,
rewritten), comes from the log's one follower (:class:`chatcore.log.shards.ShardFollower`);
this module parses the new bytes in parallel and keeps the rows per shard.
"""
from __future__ import annotations

import os
import re
import threading
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

from chatcore.log.records import BAD_REASONS, COLUMNS
from chatcore.log.shards import BLOCK_BYTES as SHARD_BLOCK_BYTES
from chatcore.log.shards import Change, ShardFollower
from chatcore.store.parse import _parse_data
from chatcore.store.schema import ARROW_SCHEMA, UTC_US
from chatcore.store.segments import SegmentCache, _fingerprint

if TYPE_CHECKING:
    import pandas as pd

Progress = Callable[[int, int], Any]

#: Bytes read and parsed at once (tests make it small to exercise many blocks).
BLOCK_BYTES = SHARD_BLOCK_BYTES
_DAY_RE = re.compile(r"(\d{4}-\d{2}-\d{2})")


# --------------------------------------------------------------------------- shards


_PARALLEL = max(1, min(4, os.cpu_count() or 1))
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=_PARALLEL, thread_name_prefix="chatcore-parse")
        return _POOL


class _Done:
    """An already computed result with the Future interface used above."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value

    def done(self) -> bool:
        return True

    def cancel(self) -> bool:
        return False


@dataclass
class _Shard:
    path: str
    dev_ino: tuple[int, int] | None = None
    offset: int = 0  # bytes consumed, always just after a "\n"
    size: int = 0
    mtime_ns: int = 0
    pending: int = 0
    fp: str = ""  # _fingerprint(offset)
    chunks: list = field(default_factory=list)  # [start, end, pa.Table, DataFrame | None]
    bad: Counter = field(default_factory=Counter)
    rows: int = 0
    cached_upto: int = 0
    cached_segments: list = field(default_factory=list)
    ts_min: int | None = None  # microseconds since the epoch
    ts_max: int | None = None
    gen: int = 0  # bumped on reset, so a late cache write for old content is dropped
    writing: bool = False

    def reset(self) -> None:
        self.gen += 1
        self.writing = False
        self.dev_ino = None
        self.offset = self.size = self.pending = self.rows = self.cached_upto = 0
        self.fp = ""
        self.chunks = []
        self.bad = Counter()
        self.cached_segments = []
        self.ts_min = self.ts_max = None

    def add(self, start: int, end: int, table: pa.Table, bad: Counter, df: pd.DataFrame | None = None) -> None:
        self.chunks.append([start, end, table, df])
        self.bad.update(bad)
        self.rows += table.num_rows
        if table.num_rows and "ts" in table.column_names:
            mm = pc.min_max(table.column("ts"))
            lo, hi = mm["min"].value, mm["max"].value
            if lo is not None:
                self.ts_min = lo if self.ts_min is None else min(self.ts_min, lo)
                self.ts_max = hi if self.ts_max is None else max(self.ts_max, hi)

    def table(self, columns: list[str]) -> pa.Table | None:
        tables = [c[2] for c in self.chunks if c[2].num_rows]
        if not tables:
            return None
        return pa.concat_tables(tables).select(columns)


def shard_day(path) -> date | None:
    """The day in a daily shard's name (``chat_logs.2026-11-21.jsonl``), else None."""
    m = _DAY_RE.search(os.path.basename(str(path)))
    if not m:
        return None
    try:
        return date.fromisoformat(m.group(1))
    except ValueError:
        return None


def _as_utc(value: datetime | pd.Timestamp | str | None) -> pd.Timestamp | None:
    import pandas as pd
    if value is None:
        return None
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.tz_convert("UTC")


# --------------------------------------------------------------------------- the store


class LogStore(SegmentCache):
    """All good rows of a JSONL log (file or folder of ``*.jsonl``), kept up to date
    incrementally and cached on disk. Thread-safe: calls are serialised."""

    def __init__(self, path, cache_dir=None, columns=None):
        self.path = Path(path)
        if columns is None:
            self.columns = tuple(COLUMNS)
        else:
            unknown = [c for c in columns if c not in COLUMNS]
            if unknown:
                raise ValueError(f"unknown columns: {unknown}")
            self.columns = tuple(c for c in COLUMNS if c in set(columns))
        if cache_dir is None:
            folder = self.path if self.path.is_dir() else self.path.parent
            cache_dir = folder / ".chatcore-cache"
        self.cache_dir = Path(cache_dir) if cache_dir is not False else None
        self.cache_errors = 0
        self.last_cache_error: str | None = None
        self._shards: dict[str, _Shard] = {}
        # what changed in the log (appended, replaced, truncated, rewritten, gone) comes from
        # the one follower; the fingerprint below only vouches for the on-disk cache
        self._follower = ShardFollower(self.path)
        self._lock = threading.RLock()
        self._frame: pd.DataFrame | None = None
        self._loaded = False
        self._skipped: set[str] = set()
        self._writers: list[threading.Thread] = []
        self._frame_tail: list[pa.Table] = []
        self._new_dfs: list = []
        #: Convert blocks to pandas while parsing a large load (for .frame).
        self.eager_frame = True
        #: Bumped whenever the rows change (appended, or a shard reset, removed or added).
        self.version = 0

    # -- shards ------------------------------------------------------------------

    def refresh(self, progress: Progress | None = None) -> pd.DataFrame:
        """Parse what was appended since the last call; return the new rows only."""
        import pandas as pd
        from chatcore.store.frames import _empty_frame, _to_pandas
        with self._lock:
            tables = self._refresh(progress)
            if not tables:
                return _empty_frame(self.columns)
            dfs = self._new_dfs
            if len(dfs) == len(tables) and all(d is not None for d in dfs):
                new = dfs[0] if len(dfs) == 1 else pd.concat(dfs, ignore_index=True, copy=False)
            else:
                new = _to_pandas(pa.concat_tables(tables) if len(tables) > 1 else tables[0])
            self._new_dfs = []
            k = len(tables)
            if len(self._frame_tail) >= k and all(a is b for a, b in zip(self._frame_tail[-k:], tables)):
                self._frame_tail[-k:] = [new]  # .frame reuses the converted rows
            elif self._frame is None and len(new) == sum(sh.rows for sh in self._shards.values()):
                self._frame = new  # a first load: these are all the rows
                self._frame_tail = []
                for sh in self._shards.values():
                    for c in sh.chunks:
                        c[3] = None
            return new.copy(deep=False)  # copy-on-write: the caller may change its copy

    def state(self) -> list[list]:
        """What the rows are made of: ``[path, device, inode, offset, fingerprint, rows]`` per
        shard in row order (a summary of these rows is valid while this holds)."""
        with self._lock:
            return [[sh.path, *(sh.dev_ino or (0, 0)), sh.offset, sh.fp, sh.rows] for sh in self._ordered()]

    def sync(self, progress: Progress | None = None) -> int:
        """Read what was appended without building pandas rows; returns :attr:`version`."""
        with self._lock:
            self._refresh(progress)
            self._new_dfs = []
            return self.version

    def _refresh(self, progress: Progress | None, select: Callable[[str], bool] | None = None) -> list[pa.Table]:
        self._loaded = True
        paths = self._follower.paths()
        self._skipped = {p for p in paths if select is not None and not select(p)}
        # the total for progress: what is not read yet (an estimate for shards that
        # turn out to be replaced or cached)
        total = 0
        for p in paths if progress is not None else ():
            if p in self._skipped:
                continue
            try:
                size = os.stat(p).st_size
            except OSError:
                continue
            sh = self._shards.get(p)
            total += max(0, size - (sh.offset if sh is not None and sh.offset <= size else 0))
        changed = False
        listed = set(paths)
        for gone in [p for p in self._shards if p not in listed]:
            del self._shards[gone]
            changed = True
        new_tables: list[pa.Table] = []
        new_dfs: list = []
        appended: set[str] = set()
        done = 0
        for ch in self._follower.changes(select, listed=paths):  # one shard open at a time: a folder may hold thousands
            if ch.gone:
                changed = self._shards.pop(ch.path, None) is not None or changed
                continue
            sh = self._shards.get(ch.path)
            st = os.fstat(ch.fd)
            if sh is None:
                sh = self._shards[ch.path] = _Shard(ch.path)
                self._load_cache(sh, ch.fd, st)
                changed = changed or sh.rows > 0
            elif ch.again:
                sh.reset()  # replaced, truncated or rewritten: what we hold of it is not in it any more
                changed = True
            if sh.dev_ino is None:
                sh.dev_ino = (st.st_dev, st.st_ino)
            ch.start = sh.offset
            before = len(sh.chunks)
            done = self._read_new(sh, ch, progress, done, max(total, done + ch.size - sh.offset))
            sh.size, sh.mtime_ns = ch.size, ch.mtime_ns
            added = [c for c in sh.chunks[before:] if c[2].num_rows]
            if added:
                appended.add(sh.path)
                new_tables.extend(c[2] for c in added)
                new_dfs.extend(c[3] for c in added)
            self._save_cache(sh, ch.fd)
        new_tables = [t.select(list(self.columns)) for t in new_tables]
        self._new_dfs = new_dfs
        if changed or appended:
            self.version += 1
        if changed or (appended and appended != {max(self._shards)}):
            self._frame = None  # rebuilt on the next .frame
            self._frame_tail = []
        elif new_tables and self._frame is not None:
            # rows appended to the last shard only: .frame just grows at the end
            self._frame_tail.extend(new_tables)
        return new_tables

    def _read_new(self, sh: _Shard, ch: Change, progress, done: int, total: int) -> int:
        start = sh.offset
        cols = list(self.columns)

        def work(data: bytes, end: int, eager: bool = False):
            table, bad = _parse_data(data, end, Counter(), cols)
            # converting here overlaps with the parsing of the next blocks
            if eager and table.num_rows:
                from chatcore.store.frames import _to_pandas

                return table, bad, _to_pandas(table)
            return table, bad, None

        # blocks are parsed in parallel (pyarrow releases the GIL) and added in order
        inflight: deque = deque()
        # the blocks are read into a few buffers, each used again once its block is parsed (the
        # rows never point into it): no fresh memory to fault in for every block
        spare: list[bytearray] = []
        lent: list[bytearray] = []

        def into(n: int) -> bytearray:
            buf = spare.pop() if spare else bytearray(0)
            if len(buf) < n:
                buf = bytearray(n)
            lent.append(buf)
            return buf

        def collect() -> None:
            nonlocal done
            bpos, bend, fut, buf = inflight.popleft()
            table, bad, df = fut.result()
            if buf is not None:
                spare.append(buf)
            sh.add(bpos, bend, table, bad, df)
            done += bend - bpos
            if progress is not None:
                try:
                    progress(min(done, total), total)
                except Exception:
                    pass

        big = ch.size - start > BLOCK_BYTES
        pool = _pool() if big else None
        pos = start
        try:
            for pos, data in ch.blocks(BLOCK_BYTES, into if big else None):
                n = len(data)
                buf = lent.pop() if lent else None
                if pool is None:
                    inflight.append((pos, pos + n, _Done(work(data, n)), buf))
                else:
                    inflight.append((pos, pos + n, pool.submit(work, data, n, self.eager_frame), buf))
                del data
                pos += n
                while len(inflight) > _PARALLEL or (inflight and inflight[0][2].done()):
                    collect()
            while inflight:
                collect()
        finally:
            for _, _, fut, _ in inflight:
                fut.cancel()
        sh.offset = pos
        sh.pending = ch.size - pos
        if pos and (pos != start or not sh.fp):
            sh.fp = _fingerprint(ch.fd, pos)
        return done

    # -- views -------------------------------------------------------------------

    def _ensure_loaded(self) -> None:
        if not self._loaded or self._skipped:
            # never loaded, or a time-range query skipped some daily shards
            self._refresh(None)

    @property
    def frame(self) -> pd.DataFrame:
        """All good rows so far, in shard order then file order."""
        import pandas as pd
        from chatcore.store.frames import _empty_frame, _to_pandas
        with self._lock:
            self._ensure_loaded()
            if self._frame is not None and self._frame_tail:
                parts = [p if isinstance(p, pd.DataFrame) else _to_pandas(p) for p in self._frame_tail]
                self._frame_tail = []
                self._frame = pd.concat([self._frame, *parts], ignore_index=True, copy=False)
            if self._frame is None:
                self._frame_tail = []
                chunks = [c for sh in self._ordered() for c in sh.chunks if c[2].num_rows]
                if chunks and all(c[3] is not None for c in chunks):
                    # converted while parsing: just glue the pieces
                    self._frame = pd.concat([c[3] for c in chunks], ignore_index=True, copy=False)
                    for c in chunks:
                        c[3] = None
                    return self._frame.copy(deep=False)
                for c in chunks:
                    c[3] = None
                tables = [t for t in (sh.table(list(self.columns)) for sh in self._ordered()) if t is not None]
                if not tables:
                    self._frame = _empty_frame(self.columns)
                else:
                    self._frame = _to_pandas(pa.concat_tables(tables) if len(tables) > 1 else tables[0])
            return self._frame.copy(deep=False)  # copy-on-write: cheap, and the cache stays clean

    def arrow(self) -> pa.Table:
        """All good rows as one Arrow table (no copy of the text columns)."""
        with self._lock:
            self._ensure_loaded()
            tables = [t for t in (sh.table(list(self.columns)) for sh in self._ordered()) if t is not None]
            if not tables:
                return ARROW_SCHEMA.empty_table().select(list(self.columns))
            return pa.concat_tables(tables)

    def _ordered(self) -> list[_Shard]:
        return [self._shards[p] for p in sorted(self._shards)]

    def query(self, since=None, until=None) -> pd.DataFrame:
        """Rows with ``since <= ts < until``. Shards that cannot match are skipped: on a
        first load, daily shards (``*.YYYY-MM-DD.jsonl``) far outside the range are not
        even read; loaded shards are skipped by their min/max time."""
        from chatcore.store.frames import _empty_frame, _to_pandas
        since, until = _as_utc(since), _as_utc(until)
        if (since is not None or until is not None) and "ts" not in self.columns:
            raise ValueError("a time-range query needs the ts column")
        with self._lock:
            if not self._loaded:
                if since is None and until is None:
                    self._refresh(None)
                else:
                    self._refresh(None, select=lambda p: _day_may_match(p, since, until))
            if since is None and until is None:
                return self.frame
            hi = None if until is None else -(-until.value // 1000)
            lo = None if since is None else -(-since.value // 1000)
            tables = []
            for sh in self._ordered():
                if sh.ts_min is None:
                    continue
                if lo is not None and sh.ts_max < lo:
                    continue
                if hi is not None and sh.ts_min >= hi:
                    continue
                t = sh.table(list(self.columns))
                if t is None:
                    continue
                if "ts" in self.columns:
                    ts = t.column("ts")
                    cond = None
                    if lo is not None:
                        cond = pc.greater_equal(ts, pa.scalar(lo, UTC_US))
                    if hi is not None:
                        c2 = pc.less(ts, pa.scalar(hi, UTC_US))
                        cond = c2 if cond is None else pc.and_(cond, c2)
                    t = t.filter(cond)
                tables.append(t)
            if not tables:
                return _empty_frame(self.columns)
            return _to_pandas(pa.concat_tables(tables))

    @property
    def stats(self) -> dict:
        with self._lock:
            bad = Counter()
            for sh in self._shards.values():
                bad.update(sh.bad)
            counts = {r: int(bad.get(r, 0)) for r in BAD_REASONS}
            return {
                "lines": sum(sh.rows for sh in self._shards.values()),
                "bad": counts,
                # Event lines (schema v2: staff messages, handoffs) are skipped as turns, not bad.
                "bad_total": sum(v for r, v in counts.items() if r != "event"),
                "events": counts.get("event", 0),
                "pending_bytes": sum(sh.pending for sh in self._shards.values()),
                "shards": len(self._shards),
                "bytes": sum(sh.offset for sh in self._shards.values()),
                "cache_errors": self.cache_errors,
            }


def _day_may_match(path: str, since: pd.Timestamp | None, until: pd.Timestamp | None) -> bool:
    import pandas as pd
    day = shard_day(path)
    if day is None:
        return True
    # a daily shard may hold a few turns of the neighbouring days (time zones, late rotation)
    start = pd.Timestamp(day, tz="UTC") - pd.Timedelta(days=1)
    end = pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=2)
    if since is not None and end <= since:
        return False
    if until is not None and start >= until:
        return False
    return True


def load_log(path, since=None, until=None, progress=None, columns=None, cache_dir=None) -> tuple[pd.DataFrame, dict]:
    """One-shot: the rows of ``path`` in [since, until) and the store's stats."""
    store = LogStore(path, cache_dir=cache_dir, columns=columns)
    store.eager_frame = False
    store._refresh(progress, select=None if since is None and until is None else (lambda p: _day_may_match(p, _as_utc(since), _as_utc(until))))
    return store.query(since, until), store.stats

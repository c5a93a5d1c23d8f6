"""The named questions the CLI and the dashboard ask of the log, answered by SQL.

Every question is one method of :class:`Questions` with plain arguments (a
:class:`Filters`, a sort order and page bounds, one id) and a small answer: one page
of the conversation list with its totals, one transcript, the list of sources. The
SQL lives in this module only, so the same questions can later run on a server
engine (ClickHouse, MotherDuck) over the same columns (see docs/scaling.md).

The engine is an in-memory DuckDB connection per process over the store's Arrow
tables: memory-mapped segments of the persisted form plus the rows parsed since,
scanned without a copy. There is no database file and no lock between processes:
the Space appends to the JSONL log; the dashboard, a second dashboard and the CLI
each ingest only the new bytes and ask their own engine.

About 1,000 lines: every SQL question the pages and the CLI ask, over one connection and one lock. Next split: the cost and prompt-version questions into a module of their own.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from chatcore.log.records import REPLAY_PREFIX, TEST_SOURCES

#: Columns of a conversation-list row (a page of :meth:`ConversationList.page`).
LIST_COLUMNS = ["conversation_id", "turns", "first_ts", "last_ts", "duration_s", "source", "errors",
                "first_user_text", "up", "down"]
#: What the conversation list can be sorted by.
SORT_KEYS = ("last_ts", "first_ts", "turns", "duration_s", "errors", "down", "up", "conversation_id")
#: Conversation lists kept per process (one per filter set, store version and ratings).
LIST_CACHE = 8


@dataclass(frozen=True)
class Filters:
    """Which turns and conversations a list is about (all of them by default).

    ``search`` matches a question or a reply (case-insensitive, plain text) or the
    start of a conversation id; a conversation matches when one of its turns in the
    date range and sources does, and then all its turns there count. ``rating`` is
    ``any``, ``rated negatively`` or ``rated positively``; ``ids`` keeps only those
    conversations (what the tag and note filters found); ``include_test`` False leaves test
    traffic out (:func:`test_traffic_sql`)."""

    since: datetime | None = None
    until: datetime | None = None
    search: str = ""
    sources: tuple[str, ...] = ()
    rating: str = "any"
    ids: frozenset[str] | None = None
    include_test: bool = True


def test_traffic_sql(conversation_id: str = "conversation_id", source: str | None = "source",
                     grouped: bool = False) -> str:
    """SQL true for test traffic, :func:`chatcore.log.records.is_test_traffic` asked of a turn
    (``source`` its source) or, ``grouped``, of a conversation (``source`` its sources joined by
    ``", "``: any of them). ``source`` None: by the id alone (a store read without that column)."""
    rule = f"starts_with({conversation_id}, '{REPLAY_PREFIX}')"
    if source:
        names = ", ".join(f"'{s}'" for s in sorted(TEST_SOURCES))
        rule += (f" OR list_has_any(string_split(coalesce({source}, ''), ', '), [{names}])" if grouped
                 else f" OR coalesce({source} IN ({names}), false)")
    return f"({rule})"


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _arrow(rel) -> pa.Table:
    if hasattr(rel, "to_arrow_table"):
        return rel.to_arrow_table()
    return rel.fetch_arrow_table()  # pragma: no cover - older duckdb


_ROW_MASK = (1 << 40) - 1


def _time_row_key(ts: str, row: str) -> str:
    """SQL for one integer that orders turns by time, then by row number (file order). The time
    counts from the year 1 (the earliest a stored time can be), so the key is never negative."""
    return f"(((epoch_us({ts}) + 62135596800000000)::HUGEINT << 40) + {row})"


_SUMMARY_VERSION = 2


#: Columns of the CLI's saved whole-log list.
SUMMARY_NAMES = ["conversation_id", "turns", "first_ts", "last_ts", "first_row", "first_user_text"]
#: Columns of the dashboard's saved whole-log groups (see Questions._grouped).
GROUP_NAMES = ["conversation_id", "turns", "first_ts", "last_ts", "errors", "first_row", "source", "first_user_text"]


#: The saved distinct values of :meth:`Questions.distinct`: one row per (column, value).
_DISTINCT_SCHEMA = pa.schema([("column", pa.string()), ("value", pa.string())])


def _read_summary(path, names: list[str] = SUMMARY_NAMES) -> tuple[pa.Table, list] | None:
    """A saved whole-log list and the store state it was made from (None if absent or broken)."""
    import json

    import pyarrow.ipc as ipc

    try:
        with pa.memory_map(str(path), "r") as src:
            table = ipc.open_file(src).read_all()
        state = json.loads(table.schema.metadata[b"state"])
        if table.column_names != names:
            return None
        return table.replace_schema_metadata(None), state
    except Exception:  # missing, half-written by an older version, corrupt: recompute
        return None


def _write_summary(path, table: pa.Table, state: str) -> None:
    """Atomically (one file, state in its metadata), so readers in other processes never mix two."""
    import os
    import threading

    import pyarrow.ipc as ipc

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.{threading.get_ident()}")
    table = table.replace_schema_metadata({"state": state})
    with pa.OSFile(str(tmp), "wb") as sink:
        with ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    os.replace(tmp, path)


def _appended_rows(old: list, new: list) -> int | None:
    """If the rows of state ``new`` are those of ``old`` plus rows at the end, the number of
    old rows (where the new ones start); else None."""
    import os

    from chatcore.store.segments import _fingerprint

    if not old or len(new) < len(old):
        return None
    for i, (o, n) in enumerate(zip(old, new)):
        if o[:3] != n[:3]:
            return None  # another shard, or the same name for a new file
        last = i == len(old) - 1
        if o[3:] == n[3:]:
            continue
        if not last or n[3] < o[3]:
            return None  # an earlier shard changed: rows moved
        try:  # the last shard grew: its old bytes must be the same bytes
            fd = os.open(n[0], os.O_RDONLY)
            try:
                if _fingerprint(fd, o[3]) != o[4]:
                    return None
            finally:
                os.close(fd)
        except OSError:
            return None
    return sum(o[5] for o in old)


def _take_sorted(col: pa.ChunkedArray, rows: np.ndarray) -> pa.Array:
    """``col.take(rows)`` for ascending ``rows``, chunk by chunk: a take over a chunked
    column first joins its chunks, i.e. copies the whole column (every question's text)."""
    if col.num_chunks <= 1:
        return col.take(pa.array(rows)).combine_chunks()
    ends = np.cumsum([len(c) for c in col.chunks])
    which = np.searchsorted(ends, rows, side="right")
    parts = []
    for i in np.unique(which):
        lo, hi = np.searchsorted(which, [i, i + 1])
        start = ends[i - 1] if i else 0
        parts.append(col.chunk(int(i)).take(pa.array(rows[lo:hi] - start)))
    if not parts:
        return pa.array([], col.type)
    return pa.concat_arrays(parts)


def _sources_of(masks: pa.ChunkedArray, names: list[str]) -> pa.ChunkedArray:
    """Each conversation's sources from its bits (bit i: ``names[i]``, ``names`` sorted), joined
    as ``"api, widget"``; null without any. Few distinct masks: each is spelled out once."""
    masks = masks.combine_chunks() if isinstance(masks, pa.ChunkedArray) else masks
    distinct = pc.unique(masks)
    spelled = pa.array([None if not m else ", ".join(n for i, n in enumerate(names) if m >> i & 1)
                        for m in distinct.to_pylist()], pa.string())
    return pa.chunked_array([spelled.take(pc.index_in(masks, value_set=distinct))], pa.string())


class ConversationList:
    """One conversation list (all rows as a small Arrow table, one row per conversation),
    its totals, and pages of it in any order."""

    def __init__(self, table: pa.Table, turns: int):
        self.table = table
        self.total = table.num_rows
        self.turns = turns
        self.errors = int(pc.sum(table.column("errors")).as_py() or 0) if self.total else 0
        self._orders: dict[tuple[str, bool], pa.Array] = {}
        self._lock = threading.Lock()

    def _order(self, by: str, descending: bool) -> pa.Array:
        if by not in SORT_KEYS:
            raise ValueError(f"cannot sort by {by!r}")
        key = (by, descending)
        with self._lock:
            idx = self._orders.get(key)
            if idx is None:
                keys = [(by, "descending" if descending else "ascending")]
                if by != "conversation_id":
                    keys.append(("conversation_id", "ascending"))
                idx = self._orders[key] = pc.sort_indices(self.table, sort_keys=keys)
            return idx

    def page(self, offset: int = 0, limit: int = 50, by: str = "last_ts", descending: bool = True) -> pa.Table:
        """Rows ``offset .. offset+limit-1`` in that order (an Arrow table, LIST_COLUMNS)."""
        offset = max(0, int(offset))
        idx = self._order(by, descending).slice(offset, max(0, int(limit)))
        return self.table.take(idx)

    def ids(self) -> list[str]:
        return self.table.column("conversation_id").to_pylist()

    def position(self, conversation_id: str, by: str = "last_ts", descending: bool = True) -> int | None:
        """Where ``conversation_id`` is in that order (for jumping to its page)."""
        hit = pc.index(self.table.column("conversation_id"), conversation_id).as_py()
        if hit is None or hit < 0:
            return None
        order = self._order(by, descending).to_numpy()
        return int(np.flatnonzero(order == hit)[0])


class Questions:
    """The questions, over one :class:`chatcore.store.LogStore` (thread-safe).

    Call :meth:`sync` to take in what was appended to the log (only new bytes are
    parsed); answers are cached per store version."""

    def __init__(self, store, threads: int | None = None, memory_limit: str | None = None):
        self.store = store
        store.eager_frame = False  # nobody here needs the pandas form of every row
        self._threads, self._memory_limit = threads, memory_limit
        self._connection = None
        self._lock = threading.RLock()
        self._version: Any = None
        self._table: pa.Table | None = None
        self._lists: OrderedDict = OrderedDict()
        self._groups: OrderedDict = OrderedDict()
        #: (store state, {column: distinct values}) of :meth:`distinct`
        self._distinct: tuple[list, dict[str, list[str]]] | None = None
        self._distinct_saved_at = float("-inf")
        self._totals: tuple | None = None
        self._test_ids: tuple | None = None
        self._ratings_key: Any = None
        self.columns = tuple(store.columns)
        self._ratings_table = None
        self._groups_saved_at = float("-inf")
        self._answers: dict = {}

    @property
    def _con(self):
        """The engine, started on first use (a list read from the saved summary needs none)."""
        if self._connection is None:
            import duckdb

            con = duckdb.connect(":memory:")
            con.execute("SET TimeZone = 'UTC'")
            if self._threads:
                con.execute(f"SET threads = {int(self._threads)}")
            if self._memory_limit:
                con.execute("SET memory_limit = ?", [self._memory_limit])
            self._connection = con
            if self._table is not None:
                self._register_views(con)
            if self._ratings_table is None:
                self._register_ratings(None, None)
            else:
                con.register("ratings", self._ratings_table)
        return self._connection

    # -- data ------------------------------------------------------------------

    def sync(self, progress=None) -> int:
        """Read what was appended to the log; returns the store's version."""
        with self._lock:
            version = self.store.sync(progress)
            self._register()
            return version

    def _register(self) -> None:
        version = self.store.version
        if version == self._version:
            return
        table = self.store.arrow()
        # the row number breaks ties of equal times in file order (as the reference does)
        table = table.append_column("row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
        self._table = table
        if self._connection is not None:
            self._register_views(self._connection)
        self._version = version
        self._lists.clear()
        self._answers.clear()

    #: The columns of ``turns_narrow`` (those the store has).
    NARROW = ("ts", "conversation_id", "source", "latency_ms", "error", "row")

    def _narrow(self) -> pa.Table:
        """The few short columns most questions read, without a copy. The engine
        reads every column of a registered Arrow table as it scans, so a scan of ``turns``
        touches the text of every turn; ``turns_narrow`` does not."""
        return self._table.select([c for c in self.NARROW if c in self._table.column_names])

    #: The columns of ``turns_usage``: what the questions about tokens, cost and prompt versions read.
    USAGE = ("ts", "conversation_id", "source", "model", "prompt_version", "input_tokens", "output_tokens",
             "cost_usd", "latency_ms", "row")

    def _register_views(self, con) -> None:
        """``turns`` (every column), ``turns_narrow`` and ``turns_usage`` (a few columns each, no
        copy): a question registered over the narrow ones scans only what it reads."""
        con.register("turns", self._table)
        con.register("turns_narrow", self._narrow())
        con.register("turns_usage", self._table.select([c for c in self.USAGE if c in self._table.column_names]))

    #: Answers kept per log version at most.
    ANSWERS_KEPT = 256

    def _answer(self, key: tuple, compute):
        """An answer kept until the log or the ratings change: a page's refresh over an unchanged
        log (every few seconds, by every viewer) asks the engine nothing."""
        hit = self._answers.get(key)
        if hit is None:
            if len(self._answers) >= self.ANSWERS_KEPT:  # (pages of costs add up on a quiet log)
                self._answers.clear()
            hit = self._answers[key] = compute()
        return hit

    def _ensure(self) -> None:
        if self._version is None:
            self.sync()

    def set_ratings(self, counts, key: Any) -> None:
        """Rated turns per conversation (``conversation_id, up, down`` as from
        :func:`chatcore.store.conversation_frames.rating_counts`); ``key`` changes when they do."""
        with self._lock:
            if key == self._ratings_key:
                return
            self._register_ratings(counts, key)
            self._lists.clear()
            self._answers.clear()

    def _register_ratings(self, counts, key) -> None:
        if counts is None or len(counts) == 0:
            table = pa.table({"conversation_id": pa.array([], pa.string()), "up": pa.array([], pa.int64()),
                              "down": pa.array([], pa.int64())})
        else:
            table = pa.table({"conversation_id": pa.array([str(c) for c in counts["conversation_id"]], pa.string()),
                              "up": pa.array(np.asarray(counts["up"], dtype=np.int64)),
                              "down": pa.array(np.asarray(counts["down"], dtype=np.int64))})
        self._ratings_table = table
        self._ratings_key = key
        if self._connection is not None:  # else the engine registers them when it starts
            self._connection.register("ratings", table)

    # -- questions -------------------------------------------------------------

    def _where(self, f: Filters) -> tuple[str, list]:
        cond, params = [], []
        if f.since is not None:
            cond.append("ts >= ?")
            params.append(f.since)
        if f.until is not None:
            cond.append("ts < ?")
            params.append(f.until)
        if f.sources:
            cond.append("source IN (" + ", ".join("?" for _ in f.sources) + ")")
            params.extend(str(s) for s in f.sources)
        return (" WHERE " + " AND ".join(cond)) if cond else "", params

    def _leave_out_test(self, where: str, include_test: bool) -> str:
        """``where`` (a WHERE clause or "") that also leaves test traffic out, unless ``include_test``."""
        if include_test:
            return where
        cond = f"NOT {self._test_sql()}"
        return f"{where} AND {cond}" if where else f" WHERE {cond}"

    def _test_sql(self) -> str:
        return test_traffic_sql(source="source" if "source" in self.columns else None)

    def has_test_traffic(self) -> bool:
        """Whether any turn is test traffic (a replay or a simulated visitor). The rule of
        :func:`test_traffic_sql` on the Arrow columns: the CLI's saved list is then sent
        without starting the engine."""
        with self._lock:
            self._ensure()
            table = self._table
            hit = pc.starts_with(table.column("conversation_id"), REPLAY_PREFIX)
            if "source" in self.columns:
                col = table.column("source")
                hit = pc.or_(hit, pc.is_in(col, value_set=pa.array(sorted(TEST_SOURCES), col.type)))
            return bool(pc.any(pc.fill_null(hit, False)).as_py())

    def test_conversation_ids(self) -> frozenset[str]:
        """The conversations that are test traffic (to leave their ratings and hand-offs out)."""
        with self._lock:
            self._ensure()
            hit = self._test_ids
            if hit is None or hit[0] != self._version:
                rows = self._con.execute(f"SELECT DISTINCT conversation_id FROM turns_narrow WHERE {self._test_sql()}")
                hit = self._test_ids = (self._version, frozenset(r[0] for r in rows.fetchall()))
            return hit[1]

    #: Up to this many distinct sources, a conversation's sources are gathered as bits in the one
    #: grouping pass (a log has a handful: widget, api, replay); more, and they are grouped apart.
    SOURCE_BITS = 62

    def _grouped(self, f: Filters, source: str = "turns_narrow") -> pa.Table:
        """One row per conversation of the turns in the date range and sources (the search is
        applied afterwards): conversation_id, turns, first_ts, last_ts, errors, first_row, source,
        first_user_text."""
        where, params = self._where(f)
        cols = ", ".join(c for c in ("row", "ts", "conversation_id", "source", "error")
                         if c == "row" or c in self.columns)
        ctes = [f"v AS (SELECT {cols} FROM {source}{where})", "m AS (SELECT * FROM v)"]
        has = set(self.columns)
        err = "count(*) FILTER (WHERE error <> '')" if "error" in has else "0"
        names = [s for s in self.sources() if s] if "source" in has else []
        bits = "source" in has and len(names) <= self.SOURCE_BITS
        mask = ""
        if bits:  # one pass: each turn's source as a bit, or-ed per conversation
            mask = (", bit_or(CASE source " + " ".join(f"WHEN ? THEN {1 << i}" for i in range(len(names)))
                    + " END) AS smask") if names else ", CAST(NULL AS BIGINT) AS smask"
            params = [*params, *names]
        # the first question: the turn with the earliest time, ties in file order (one
        # integer key: time, then row number)
        ctes.append(
            "c AS (SELECT conversation_id, count(*) AS turns, min(ts) AS first_ts, max(ts) AS last_ts, "
            f"{err} AS errors, CAST(min({_time_row_key('ts', 'row')}) & {_ROW_MASK} AS BIGINT) "
            f"AS first_row{mask} FROM m GROUP BY conversation_id)")
        if bits:
            sql = ("WITH " + ", ".join(ctes) + " SELECT conversation_id, turns, first_ts, last_ts, "
                   "CAST(errors AS BIGINT) AS errors, first_row, smask FROM c")
            table = _arrow(self._con.execute(sql, params))
            table = table.set_column(table.num_columns - 1, "source",
                                     _sources_of(table.column("smask"), names))
            return self._with_first_text(table, keep_row=True)
        if "source" in has:  # distinct sources: grouped first, far cheaper than string_agg(DISTINCT)
            ctes.append("s AS (SELECT conversation_id, string_agg(source, ', ' ORDER BY source) AS source FROM "
                        "(SELECT conversation_id, source FROM m WHERE source <> '' GROUP BY ALL) GROUP BY 1)")
        else:
            ctes.append("s AS (SELECT conversation_id, CAST(NULL AS VARCHAR) AS source FROM c WHERE false)")
        sql = ("WITH " + ", ".join(ctes) + " SELECT c.conversation_id, c.turns, c.first_ts, c.last_ts, "
               "CAST(c.errors AS BIGINT) AS errors, c.first_row, s.source "
               "FROM c LEFT JOIN s USING (conversation_id)")
        return self._with_first_text(_arrow(self._con.execute(sql, params)), keep_row=True)

    def _grouped_kept(self, f: Filters) -> pa.Table:
        """:meth:`_grouped` without a search, kept per date range and sources: after appends
        only the new rows are grouped and merged in (a live log does not regroup a million
        turns on every refresh)."""
        key = (f.since, f.until, f.sources)
        whole = key == (None, None, ())
        state = self.store.state()
        hit = self._groups.get(key)
        if hit is None and whole:
            hit = self._saved_groups()
        if hit is not None and hit[0] == state:
            self._groups[key] = hit
            self._groups.move_to_end(key)
            return hit[1]
        base = _appended_rows(hit[0], state) if hit is not None else None
        if base is None:
            table = self._grouped(f)
        else:
            # only the conversations the new rows touch are merged; the others are kept as they are
            self._con.register("turns_tail", self._narrow().slice(base))
            self._con.register("kept_old", hit[1])
            self._con.register("kept_new", self._grouped(f, source="turns_tail"))
            key_sql = _time_row_key("first_ts", "first_row")
            table = _arrow(self._con.execute(
                "WITH touched AS (SELECT * FROM kept_old SEMI JOIN kept_new USING (conversation_id)), "
                "merged AS (SELECT conversation_id, CAST(sum(turns) AS BIGINT) AS turns, min(first_ts) AS first_ts, "
                "max(last_ts) AS last_ts, CAST(sum(errors) AS BIGINT) AS errors, "
                f"CAST(min({key_sql}) & {_ROW_MASK} AS BIGINT) AS first_row, "
                "nullif(array_to_string(list_sort(list_distinct(flatten(list(string_split(source, ', ')) "
                "FILTER (WHERE source IS NOT NULL)))), ', '), '') AS source, "
                f"arg_min(first_user_text, {key_sql}) AS first_user_text "
                "FROM (SELECT * FROM touched UNION ALL SELECT * FROM kept_new) GROUP BY conversation_id) "
                "SELECT * FROM kept_old ANTI JOIN kept_new USING (conversation_id) UNION ALL SELECT * FROM merged"))
            for name in ("kept_old", "kept_new", "turns_tail"):
                self._con.unregister(name)
        self._groups[key] = (state, table)
        while len(self._groups) > LIST_CACHE:
            self._groups.popitem(last=False)
        if whole:
            self._save_groups(state, table, merged=base is not None)
        return table

    # The whole log's groups are kept on disk beside the segments with the store state they were
    # made from: a fresh process (a restarted dashboard) reads them instead of grouping every turn,
    # and a log that only grew at its end has just its new rows grouped and merged in.
    #: A live log's groups are saved again at most this often (seconds) when only merged.
    GROUPS_SAVE_EVERY = 300.0

    def _groups_path(self):
        path = self._summary_path()
        return None if path is None else path.with_name(f"{path.stem}.groups.arrow")

    def _saved_groups(self) -> tuple[list, pa.Table] | None:
        path = self._groups_path()
        saved = _read_summary(path, GROUP_NAMES) if path is not None else None
        if saved is None:
            return None
        table, state = saved
        return state, table

    def _save_groups(self, state: list, table: pa.Table, merged: bool) -> None:
        import json
        import time

        path = self._groups_path()
        now = time.monotonic()
        if path is None or (merged and now - self._groups_saved_at < self.GROUPS_SAVE_EVERY):
            return
        try:
            _write_summary(path, table, json.dumps(state))
            self._groups_saved_at = now
        except OSError:
            pass  # a cache that cannot be written is only slower

    def _whole_groups(self) -> pa.Table | None:
        """The whole log's groups when they are at hand for the current rows (kept in memory or
        saved on disk), else None: never computed here."""
        state = self.store.state()
        hit = self._groups.get((None, None, ()))
        if hit is None:  # (groups kept in memory are never older than the saved ones)
            hit = self._saved_groups()
            if hit is None or hit[0] != state:
                return None
            self._groups[(None, None, ())] = hit
        return hit[1] if hit[0] == state else None

    #: Rows per piece of a search: the pieces are searched on the store's threads.
    SEARCH_PIECE = 500_000

    def _search_hits(self, needle: str, f: Filters) -> pa.Table:
        """The ``conversation_id`` of every turn in the date range and sources whose question or
        reply contains ``needle`` (any case), or whose id starts with it: one row per matching
        turn. Plain-text search runs on the Arrow columns (a literal search, several times faster
        than ILIKE on this text), in pieces of rows on the store's threads (Arrow's kernels
        release the GIL). The ids are made distinct by the engine, on its own threads: a
        distinct pass per piece and again over the pieces cost about as much as the scan
        (millions of turns match a common word)."""
        from chatcore.store.ingest import _pool

        table = self._table
        since = until = None
        if f.since is not None or f.until is not None:
            from chatcore.store.schema import UTC_US

            since = None if f.since is None else pa.scalar(f.since, UTC_US)
            until = None if f.until is None else pa.scalar(f.until, UTC_US)
        wanted = None if not f.sources else pa.array(list(f.sources), pa.large_string())

        def piece(start: int) -> pa.ChunkedArray:
            t = table.slice(start, self.SEARCH_PIECE)
            cid = t.column("conversation_id")
            hit = pc.starts_with(cid, needle, ignore_case=True)  # ids are written in either case
            for name in ("user_text", "response"):
                if name in self.columns:
                    hit = pc.or_(hit, pc.match_substring(t.column(name), needle, ignore_case=True))
            hit = pc.fill_null(hit, False)
            if since is not None:
                hit = pc.and_(hit, pc.greater_equal(t.column("ts"), since))
            if until is not None:
                hit = pc.and_(hit, pc.less(t.column("ts"), until))
            if wanted is not None:
                hit = pc.and_(hit, pc.fill_null(pc.is_in(t.column("source"), value_set=wanted), False))
            found = cid.filter(hit).cast(pa.string())
            release()  # the text just read need not stay resident (see LogStore.release_mapped)
            return found

        release = getattr(self.store, "release_mapped", lambda: None)
        found = [c for part in _pool().map(piece, range(0, table.num_rows, self.SEARCH_PIECE)) for c in part.chunks]
        return pa.table({"conversation_id": pa.chunked_array(found, pa.string())})

    def conversations(self, f: Filters = Filters()) -> ConversationList:
        """The conversation list for these filters (cached until the log or ratings change)."""
        with self._lock:
            self._ensure()
            key = (f, self._ratings_key)
            hit = self._lists.get(key)
            if hit is not None:
                self._lists.move_to_end(key)
                return hit
            # a conversation matching the search counts with all its turns in range: the kept
            # groups of the range, cut down to the conversations the search found
            grouped = self._grouped_kept(f)
            # the engine picks the rows (and joins the ratings) by position: the text columns of
            # the groups are taken from the Arrow table afterwards, not carried through a join
            self._con.register("grouped", grouped.select(["conversation_id", "source"]).append_column(
                "pos", pa.array(np.arange(grouped.num_rows, dtype=np.int64))))
            cond = []
            needle = (f.search or "").strip()
            if needle:
                self._con.register("hits", self._search_hits(needle, f))
                cond.append("g.conversation_id IN (SELECT DISTINCT conversation_id FROM hits)")
            if f.rating == "rated negatively":
                cond.append("coalesce(r.down, 0) > 0")
            elif f.rating == "rated positively":
                cond.append("coalesce(r.up, 0) > 0")
            elif f.rating not in (None, "", "any"):
                raise ValueError(f"unknown rating filter {f.rating!r}")
            if not f.include_test:
                cond.append("NOT " + test_traffic_sql("g.conversation_id", "g.source" if "source" in self.columns
                                                      else None, grouped=True))
            if f.ids is not None:
                self._con.register("picked", pa.table({"conversation_id": pa.array(sorted(f.ids), pa.string())}))
                cond.append("g.conversation_id IN (SELECT conversation_id FROM picked)")
            sql = ("SELECT g.pos, CAST(coalesce(r.up, 0) AS BIGINT) AS up, CAST(coalesce(r.down, 0) AS BIGINT) AS down "
                   "FROM grouped g LEFT JOIN ratings r USING (conversation_id)"
                   + (" WHERE " + " AND ".join(cond) if cond else "") + " ORDER BY g.pos")
            picked = _arrow(self._con.execute(sql))
            table = grouped.take(picked.column("pos"))
            span = pc.subtract(table.column("last_ts"), table.column("first_ts")).cast(pa.int64())
            table = pa.table({"conversation_id": table.column("conversation_id"), "turns": table.column("turns"),
                              "first_ts": table.column("first_ts"), "last_ts": table.column("last_ts"),
                              "duration_s": pc.divide(span.cast(pa.float64()), 1e6), "source": table.column("source"),
                              "errors": table.column("errors"), "first_user_text": table.column("first_user_text"),
                              "up": picked.column("up"), "down": picked.column("down")})
            turns = int(pc.sum(table.column("turns")).as_py() or 0) if table.num_rows else 0
            result = ConversationList(table, turns)
            self._lists[key] = result
            while len(self._lists) > LIST_CACHE:
                self._lists.popitem(last=False)
            return result

    def _with_first_text(self, table: pa.Table, keep_row: bool = False) -> pa.Table:
        """``first_row`` -> ``first_user_text`` (taken from the Arrow column: the engine
        never scans the question text for a list)."""
        i = table.schema.get_field_index("first_row")
        rows = table.column(i).to_numpy()
        order = np.argsort(rows, kind="stable")  # a take in row order is far cheaper over many chunks
        text = _take_sorted(self._table.column("user_text"), rows[order])
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        text = text.take(pa.array(back)).cast(pa.string())
        if keep_row:
            return table.append_column("first_user_text", text)
        return table.set_column(i, "first_user_text", text)

    def summary(self, since: datetime | None = None, until: datetime | None = None, iso: bool = False,
                include_test: bool = True) -> pa.Table:
        """conversation_id, turns, first_ts, last_ts, first_user_text; newest first (the CLI list).
        With ``iso`` the times are text, ``2026-11-21T05:31:15.123Z``; ``include_test`` False
        leaves test traffic out.

        The whole log's list is grouped without the engine (:mod:`chatcore.store.summary`) and
        persisted beside the store's segments: it is reused as long as the log is unchanged,
        and after appends only the new rows are grouped and merged."""
        with self._lock:
            self._ensure()
            if since is None and until is None and (include_test or not self.has_test_traffic()):
                table = self._summary_all()
            else:
                where, params = self._where(Filters(since=since, until=until))
                where = self._leave_out_test(where, include_test)
                sql = ("SELECT conversation_id, count(*) AS turns, min(ts) AS first_ts, max(ts) AS last_ts, "
                       f"CAST(min({_time_row_key('ts', 'row')}) & {_ROW_MASK} AS BIGINT) AS first_row "
                       f"FROM turns{where} GROUP BY conversation_id ORDER BY max(ts) DESC, conversation_id")
                table = self._with_first_text(_arrow(self._con.execute(sql, params)))
            if iso:
                from chatcore.cli.listing import _iso_array

                for name in ("first_ts", "last_ts"):
                    i = table.schema.get_field_index(name)
                    table = table.set_column(i, name, _iso_array(table.column(i)))
            return table

    def _summary_path(self):
        if self.store.cache_dir is None:
            return None
        import hashlib
        import json
        import os

        from chatcore.store.segments import CACHE_VERSION

        ident = json.dumps([os.path.abspath(self.store.path), list(self.columns), CACHE_VERSION, _SUMMARY_VERSION])
        return self.store.cache_dir / f"summary-{hashlib.sha1(ident.encode()).hexdigest()[:20]}.arrow"

    # The whole-log list as the CLI prints it (``--format json``), saved after the list is printed
    # and sent as it is while the log has not changed: a warm list of 625,000 conversations is
    # then a file copy, not a formatting of 136 MB of JSON. The first line of the file is the
    # store state the text was made from.
    _JSON_FORMAT = 1

    def _summary_json_path(self):
        path = self._summary_path()
        # (not ".json": that is the suffix of the store's manifests)
        return None if path is None else path.with_name(f"{path.stem}.v{self._JSON_FORMAT}.cli-json")

    def send_saved_summary_json(self, stream) -> bool:
        """Write the saved JSON list to ``stream`` (a binary file object) if it is still the
        answer for the store as synced; False (nothing written) otherwise."""
        import json
        import os
        import shutil

        path = self._summary_json_path()
        if path is None:
            return False
        want = json.dumps(self.store.state()).encode()
        try:
            with open(path, "rb") as src:
                if src.readline().rstrip(b"\n") != want:
                    return False
                stream.flush()
                start = offset = src.tell()
                size = os.fstat(src.fileno()).st_size
                try:  # no copy through Python when the kernel can do it
                    while offset < size:
                        sent = os.sendfile(stream.fileno(), src.fileno(), offset, size - offset)
                        if sent == 0:
                            break
                        offset += sent
                except (AttributeError, OSError, ValueError):  # not a stream sendfile can write to
                    if offset != start:
                        raise
                if offset < size:
                    src.seek(offset)
                    shutil.copyfileobj(src, stream, 1 << 20)
                stream.flush()
                return True
        except FileNotFoundError:
            return False

    def saving_summary_json(self):
        """A context manager giving a binary file to write the JSON list into (or None when there
        is no cache folder, or it cannot be written); saved atomically when the block ends
        without an error."""
        import contextlib
        import json
        import os
        import threading

        @contextlib.contextmanager
        def saving():
            path = self._summary_json_path()
            if path is None:
                yield None
                return
            tmp = path.with_name(path.name + f".tmp{os.getpid()}.{threading.get_ident()}")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                out = open(tmp, "wb")
            except OSError:
                yield None
                return
            ok = False
            try:
                out.write(json.dumps(self.store.state()).encode() + b"\n")
                yield out
                ok = True
            finally:
                try:
                    out.close()
                    if ok:
                        os.replace(tmp, path)
                except OSError:
                    ok = False
                if not ok:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)

        return saving()

    def _summary_all(self) -> pa.Table:
        import json

        from chatcore.store.summary import list_of_turns, merged_lists

        state = self.store.state()
        path = self._summary_path()
        old = _read_summary(path) if path is not None else None
        if old is not None and old[1] == state:
            return old[0].drop_columns(["first_row"])  # the saved answer: the big columns stay untouched
        base = _appended_rows(old[1], state) if old is not None else None
        # grouped on the Arrow columns (chatcore.store.summary): the list never starts the engine
        if base is None:
            groups = list_of_turns(self._table)
        else:  # the log only grew at its end: the saved list merged with the new rows' groups
            groups = merged_lists(old[0], list_of_turns(self._table.slice(base)))
        table = self._with_first_text(groups, keep_row=True)
        if path is not None:
            try:
                _write_summary(path, table, json.dumps(state))
            except OSError:
                pass  # a cache that cannot be written is only slower
        return table.drop_columns(["first_row"])

    def transcript(self, conversation_id: str) -> pa.Table:
        """Every turn of one conversation, oldest first (the store's columns)."""
        with self._lock:
            self._ensure()
            cols = ", ".join(self.columns)
            return _arrow(self._con.execute(
                f"SELECT {cols} FROM turns WHERE conversation_id = ? ORDER BY ts, row", [conversation_id]))

    def has_conversation(self, conversation_id: str) -> bool:
        with self._lock:
            self._ensure()
            return self._con.execute("SELECT count(*) FROM turns_narrow WHERE conversation_id = ? LIMIT 1",
                                     [conversation_id]).fetchone()[0] > 0

    def ids_starting_with(self, prefix: str, limit: int = 100) -> list[str]:
        """Conversation ids starting with ``prefix`` in any case (for :mod:`chatcore.log.ids`)."""
        with self._lock:
            self._ensure()
            rows = self._con.execute(
                "SELECT DISTINCT conversation_id FROM turns_narrow "
                "WHERE starts_with(lower(conversation_id), ?) LIMIT ?", [prefix.lower(), limit]).fetchall()
        return [r[0] for r in rows]

    def turns_of(self, f: Filters = Filters(), ids: list[str] | None = None) -> pa.Table:
        """Every turn of the conversations in the list for ``f`` (or of ``ids``), in time
        order: what an export of the filtered view holds."""
        with self._lock:
            lst = self.conversations(f) if ids is None else None
            chosen = lst.ids() if ids is None else list(ids)
            self._con.register("chosen", pa.table({"conversation_id": pa.array(chosen, pa.string())}))
            where, params = self._where(f)
            cols = ", ".join(self.columns)
            sql = (f"SELECT {cols} FROM (SELECT * FROM turns{where}) "
                   "SEMI JOIN chosen USING (conversation_id) ORDER BY ts, row")
            return _arrow(self._con.execute(sql, params))

    # -- the Overview and Live pages -------------------------------------------

    def overview(self, day_start: datetime, active_since: datetime, include_test: bool = True) -> dict:
        """The Overview's figures: ``turns_total``, ``conversations_total`` (the whole log),
        ``turns_today``, ``conversations_today``, ``latency_p50``/``latency_p95`` (ms, None
        without a logged reply time), ``errors_today`` (turns with a non-empty error) for the
        turns at or after ``day_start``, and ``active_now``: conversations with a turn at or
        after ``active_since``. Percentiles interpolate linearly between the closest ranks.
        The whole-log counts are kept per store version. ``include_test`` False leaves test
        traffic out of every figure."""
        with self._lock:
            self._ensure()
            totals = self._totals
            if totals is None or totals[0] != (self._version, include_test):
                if include_test:
                    groups = self._whole_groups()  # one row per conversation, when at hand
                    convs = (groups.num_rows if groups is not None
                             else pc.count_distinct(self._table.column("conversation_id")).as_py())
                    turns = self._table.num_rows
                else:
                    groups = self._whole_groups()
                    if groups is not None:  # one row per conversation: far fewer than the turns
                        self._con.register("whole_groups", groups)
                        source = "source" if "source" in self.columns else None
                        turns, convs = self._con.execute(
                            "SELECT coalesce(sum(turns), 0), count(*) FROM whole_groups WHERE NOT "
                            + test_traffic_sql(source=source, grouped=True)).fetchone()
                        self._con.unregister("whole_groups")
                    else:
                        turns, convs = self._con.execute(
                            "SELECT count(*), count(DISTINCT conversation_id) FROM turns_narrow"
                            + self._leave_out_test("", False)).fetchone()
                totals = self._totals = ((self._version, include_test), int(turns), int(convs))
            real = "" if include_test else f" AND NOT {self._test_sql()}"
            has = set(self.columns)
            lat = ("quantile_cont(latency_ms, 0.5), quantile_cont(latency_ms, 0.95)" if "latency_ms" in has
                   else "NULL, NULL")
            err = "count(*) FILTER (WHERE error <> '')" if "error" in has else "0"
            today = self._con.execute(
                f"SELECT count(*), count(DISTINCT conversation_id), {lat}, {err} FROM turns_narrow "
                f"WHERE ts >= ?{real}", [day_start]).fetchone()
            active = self._con.execute(f"SELECT count(DISTINCT conversation_id) FROM turns_narrow WHERE ts >= ?{real}",
                                       [active_since]).fetchone()[0]
            return {"turns_total": totals[1], "conversations_total": totals[2],
                    "turns_today": int(today[0]), "conversations_today": int(today[1]),
                    "latency_p50": None if today[2] is None else float(today[2]),
                    "latency_p95": None if today[3] is None else float(today[3]),
                    "errors_today": int(today[4]), "active_now": int(active)}

    # -- tokens, cost and prompt versions ---------------------------------------

    #: What :meth:`spend` can group by.
    SPEND_KEYS = ("model", "prompt_version")

    def _has(self, *names: str) -> bool:
        return set(names) <= set(self.columns)

    def spend(self, since: datetime | None = None, until: datetime | None = None, by: str | None = None,
              include_test: bool = True) -> list[dict]:
        """Tokens and cost of the turns in ``[since, until)``: one row (``by`` None) or one per
        ``model`` / ``prompt_version`` (most expensive first), each with ``turns``,
        ``input_tokens``, ``output_tokens`` (as the model servers reported them) and ``cost_usd``
        (None when no turn there has a price)."""
        if by is not None and by not in self.SPEND_KEYS:
            raise ValueError(f"cannot group spend by {by!r}")
        with self._lock:
            self._ensure()
            if not self._has("input_tokens", "output_tokens", "cost_usd") or (by and not self._has(by)):
                return []
            where, params = self._where(Filters(since=since, until=until))
            where = self._leave_out_test(where, include_test)
            key = f"{by} AS {by}, " if by else ""
            group = " GROUP BY 1 ORDER BY coalesce(sum(cost_usd), 0) DESC, 1" if by else ""

            def compute():
                cur = self._con.execute(
                    f"SELECT {key}count(*) AS turns, CAST(coalesce(sum(input_tokens), 0) AS BIGINT) AS input_tokens, "
                    "CAST(coalesce(sum(output_tokens), 0) AS BIGINT) AS output_tokens, sum(cost_usd) AS cost_usd "
                    f"FROM turns_usage{where}{group}", params)
                names = [d[0] for d in cur.description]
                return [dict(zip(names, row)) for row in cur.fetchall()]
            return [dict(r) for r in self._answer(("spend", since, until, by, include_test), compute)]

    def spend_by_day(self, day_starts: list[datetime]) -> list[float]:
        """The cost (USD) of the turns in each day ``[day_starts[i], day_starts[i+1])``; the last
        day runs to now. 0.0 for a day without priced turns."""
        with self._lock:
            self._ensure()
            if not day_starts or not self._has("cost_usd"):
                return [0.0] * len(day_starts)
            out = []
            for i, start in enumerate(day_starts):
                end = day_starts[i + 1] if i + 1 < len(day_starts) else None
                where, params = self._where(Filters(since=start, until=end))
                value = self._con.execute(f"SELECT sum(cost_usd) FROM turns_usage{where}", params).fetchone()[0]
                out.append(float(value or 0.0))
            return out

    def conversation_costs(self, ids: list[str]) -> dict[str, float]:
        """The cost (USD) of each of ``ids`` that has priced turns, over all its turns."""
        with self._lock:
            self._ensure()
            if not ids or not self._has("cost_usd"):
                return {}

            def compute():
                self._con.register("cost_ids", pa.table({"conversation_id": pa.array(list(ids), pa.string())}))
                rows = self._con.execute(
                    "SELECT conversation_id, sum(cost_usd) FROM turns_usage SEMI JOIN cost_ids USING (conversation_id) "
                    "WHERE cost_usd IS NOT NULL GROUP BY 1").fetchall()
                self._con.unregister("cost_ids")
                return {cid: float(cost) for cid, cost in rows}
            return dict(self._answer(("costs", tuple(ids)), compute))

    def prompt_version_ids(self, version: str, f: Filters = Filters()) -> frozenset[str]:
        """Conversations with a turn written by prompt ``version`` (in the date range and sources)."""
        with self._lock:
            self._ensure()
            if not self._has("prompt_version"):
                return frozenset()
            where, params = self._where(f)
            where = (where + " AND" if where else " WHERE") + " prompt_version = ?"
            return self._answer(("version_ids", version, f), lambda: frozenset(r[0] for r in self._con.execute(
                f"SELECT DISTINCT conversation_id FROM turns_usage{where}", [*params, version]).fetchall()))

    def prompt_versions(self, since: datetime | None = None, handed_off: set[str] | frozenset[str] = frozenset(),
                        limit: int = 20, include_test: bool = True) -> list[dict]:
        """Per prompt version (newest first) what a lead compares: ``conversations`` (each counted
        for the version of its latest versioned turn in range), ``turns``, ``negative_share``
        (thumbs-down among the rated turns of those conversations, None without ratings),
        ``handoff_share`` (share of them in ``handed_off``), ``reply_p50_ms`` (its turns'
        logged reply time), ``cost_per_conversation`` (USD, None without priced turns),
        ``first_ts`` / ``last_ts``."""
        with self._lock:
            self._ensure()
            if not self._has("prompt_version", "cost_usd", "latency_ms"):
                return []
            where, params = self._where(Filters(since=since))
            where = self._leave_out_test(where, include_test)
            where = (where + " AND" if where else " WHERE") + " prompt_version IS NOT NULL"
            sql = (
                f"WITH v AS (SELECT conversation_id, prompt_version, ts, latency_ms, cost_usd, row FROM turns_usage{where}), "
                "conv AS (SELECT conversation_id, arg_max(prompt_version, (epoch_us(ts)::HUGEINT << 40) + row) "
                "AS version, sum(cost_usd) AS cost FROM v GROUP BY 1), "
                "t AS (SELECT prompt_version AS version, count(*) AS turns, quantile_cont(latency_ms, 0.5) AS p50, "
                "min(ts) AS first_ts, max(ts) AS last_ts FROM v GROUP BY 1), "
                "c AS (SELECT conv.version, count(*) AS conversations, "
                "count(*) FILTER (WHERE h.conversation_id IS NOT NULL) AS handed, "
                "sum(coalesce(r.up, 0)) AS up, sum(coalesce(r.down, 0)) AS down, "
                "sum(conv.cost) AS cost, count(conv.cost) AS priced "
                "FROM conv LEFT JOIN ratings r USING (conversation_id) LEFT JOIN handed h USING (conversation_id) "
                "GROUP BY 1) "
                "SELECT t.version, coalesce(c.conversations, 0), t.turns, c.up, c.down, c.handed, t.p50, c.cost, "
                "c.priced, t.first_ts, t.last_ts FROM t LEFT JOIN c USING (version) ORDER BY t.last_ts DESC LIMIT ?")

            def compute():
                self._con.register("handed", pa.table({"conversation_id": pa.array(sorted(handed_off),
                                                                                   pa.string())}))
                rows = self._con.execute(sql, [*params, int(limit)]).fetchall()
                self._con.unregister("handed")
                return rows
            rows = self._answer(("prompt_versions", since, frozenset(handed_off), int(limit), include_test), compute)
        out = []
        for version, convs, turns, up, down, handed, p50, cost, priced, first_ts, last_ts in rows:
            up, down, handed = int(up or 0), int(down or 0), int(handed or 0)
            out.append({
                "prompt_version": version, "conversations": int(convs), "turns": int(turns),
                "negative_share": down / (up + down) if up + down else None,
                "handoff_share": handed / convs if convs else None,
                "reply_p50_ms": None if p50 is None else float(p50),
                "cost_per_conversation": float(cost) / convs if priced and convs else None,
                "first_ts": first_ts, "last_ts": last_ts,
            })
        return out

    def turns_per_hour(self, start: datetime, hours: int = 24, include_test: bool = True) -> list[int]:
        """Turns in each hour from ``start``: ``hours`` counts, the k-th for ``start + k h <= ts <
        start + (k+1) h``."""
        from datetime import timedelta

        with self._lock:
            self._ensure()
            end = start + timedelta(hours=hours)
            rows = self._con.execute(
                "SELECT (epoch_us(ts) - epoch_us(?::TIMESTAMPTZ)) // 3600000000 AS k, count(*) FROM turns_narrow "
                f"{self._leave_out_test(' WHERE ts >= ? AND ts < ?', include_test)} GROUP BY k",
                [start, start, end]).fetchall()
            counts = [0] * hours
            for k, n in rows:
                if 0 <= k < hours:
                    counts[int(k)] = int(n)
            return counts

    def _rows(self, where: str, params: list, limit: int, newest_first: bool) -> pa.Table:
        """The last ``limit`` turns (time, then file order) matching ``where``: the engine picks
        row numbers from two narrow columns, the rows are then taken from the Arrow table."""
        sql = f"SELECT row FROM turns_narrow{where} ORDER BY ts DESC, row DESC LIMIT ?"
        rows = [r[0] for r in self._con.execute(sql, [*params, max(0, int(limit))]).fetchall()]
        if not newest_first:
            rows.reverse()
        table = self._table.select(list(self.columns))
        if not rows:
            return table.slice(0, 0)
        # one-row slices (no copy): a take over the whole table would first join its chunks,
        # i.e. copy every text column of the log
        return pa.concat_tables([table.slice(r, 1) for r in rows]).combine_chunks()

    def latest_turns(self, limit: int = 50, since: datetime | None = None) -> pa.Table:
        """The last ``limit`` turns (at or after ``since``), oldest first; equal times in file order."""
        with self._lock:
            self._ensure()
            if since is None:
                return self._rows("", [], limit, newest_first=False)
            return self._rows(" WHERE ts >= ?", [since], limit, newest_first=False)

    def latest_errors(self, limit: int = 10, include_test: bool = True) -> pa.Table:
        """The last ``limit`` turns with a non-empty error, newest first."""
        with self._lock:
            self._ensure()
            if "error" not in self.columns:
                return self._table.slice(0, 0).select(list(self.columns))
            return self._rows(self._leave_out_test(" WHERE error <> ''", include_test), [], limit, newest_first=True)

    def sources(self) -> list[str]:
        """Every source in the log, sorted."""
        return self.distinct("source")

    #: The short text columns whose distinct values the pages list (the source filter, the
    #: prompt picker).
    DISTINCT = ("source", "prompt_version")

    def distinct(self, column: str) -> list[str]:
        """The distinct values of ``column`` (one of :attr:`DISTINCT`) in the whole log, sorted,
        without nulls. Read by Arrow's hash kernel over that one column (no engine start, no
        scan of the others), kept per store state and saved beside the segments with the state
        they were read from: a restarted dashboard reads them, and after appends only the new
        rows are read. (A scan of one column of 5M turns reads about 0.3 GB from a cold disk.)"""
        if column not in self.DISTINCT:
            raise ValueError(f"no list of distinct values for {column!r}")
        with self._lock:
            self._ensure()
            if column not in self.columns:
                return []
            state = self.store.state()
            if self._distinct is None or self._distinct[0] != state:
                self._distinct = self._distinct_now(state)
            return list(self._distinct[1].get(column, []))

    def _distinct_now(self, state: list) -> tuple[list, dict[str, list[str]]]:
        import json
        import time

        names = [c for c in self.DISTINCT if c in self.columns]
        kept = self._distinct or self._saved_distinct()
        base = _appended_rows(kept[0], state) if kept is not None and sorted(kept[1]) == sorted(names) else None
        rows = self._table if base is None else self._table.slice(base)
        values = {}
        for name in names:
            found = set(pc.unique(rows.column(name)).drop_null().to_pylist())
            values[name] = sorted(found | set(kept[1][name]) if base is not None else found)
        path = self._distinct_path()
        now = time.monotonic()
        changed = kept is None or kept[0] != state
        # (a live log's values are saved again at most every GROUPS_SAVE_EVERY seconds)
        if path is not None and changed and (base is None or now - self._distinct_saved_at >= self.GROUPS_SAVE_EVERY):
            table = pa.table({"column": [n for n in names for _ in values[n]],
                              "value": [v for n in names for v in values[n]]}, schema=_DISTINCT_SCHEMA)
            try:
                _write_summary(path, table, json.dumps(state))
                self._distinct_saved_at = now
            except OSError:
                pass  # a cache that cannot be written is only slower
        return state, values

    def _distinct_path(self):
        path = self._summary_path()
        return None if path is None else path.with_name(f"{path.stem}.distinct.arrow")

    def _saved_distinct(self) -> tuple[list, dict[str, list[str]]] | None:
        path = self._distinct_path()
        saved = _read_summary(path, _DISTINCT_SCHEMA.names) if path is not None else None
        if saved is None:
            return None
        table, state = saved
        values: dict[str, list[str]] = {name: [] for name in self.DISTINCT if name in self.columns}
        for name, value in zip(table.column("column").to_pylist(), table.column("value").to_pylist()):
            if name in values:
                values[name].append(value)
        return state, values

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


def open_questions(path, columns=None, cache_dir=None, **kw) -> Questions:
    """A :class:`Questions` over a new :class:`chatcore.store.LogStore` of ``path``."""
    from chatcore.store.ingest import LogStore

    return Questions(LogStore(path, cache_dir=cache_dir, columns=columns), **kw)

"""The whole log's conversation list (the CLI's), grouped on the Arrow columns.

One row per conversation: ``conversation_id, turns, first_ts, last_ts, first_row`` (the row of
its first turn: the earliest time, ties in file order), newest first (``last_ts`` descending,
then ``conversation_id``). The turns are grouped with a hash of their ids and a few numpy
reductions, without starting the SQL engine: on a cold list the engine's start and its
grouping cost more than the grouping itself. :class:`chatcore.store.questions.Questions`
takes the first question's text from the store's rows by ``first_row``.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from chatcore.store.schema import UTC_US

#: Columns of a list made here.
GROUP_COLUMNS = ["conversation_id", "turns", "first_ts", "last_ts", "first_row"]
_SCHEMA = pa.schema([("conversation_id", pa.string()), ("turns", pa.int64()), ("first_ts", UTC_US),
                     ("last_ts", UTC_US), ("first_row", pa.int64())])
_BIG = np.iinfo(np.int64).max
_SMALL = np.iinfo(np.int64).min


def _ints(col) -> np.ndarray:
    """A timestamp or integer column as int64 numbers (microseconds for times)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return np.asarray(col.view(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def list_of_turns(turns: pa.Table) -> pa.Table:
    """The list of ``turns`` (columns ``conversation_id``, ``ts`` and ``row``, its row number)."""
    return _grouped(turns.column("conversation_id"), _ints(turns.column("ts")), None, _ints(turns.column("row")))


def merged_lists(old: pa.Table, new: pa.Table) -> pa.Table:
    """Two lists of the same log (``new`` of the rows after ``old``'s) as one."""
    both = pa.concat_tables([old.select(GROUP_COLUMNS).cast(_SCHEMA), new.select(GROUP_COLUMNS).cast(_SCHEMA)])
    return _grouped(both.column("conversation_id"), _ints(both.column("first_ts")), _ints(both.column("last_ts")),
                    _ints(both.column("first_row")), _ints(both.column("turns")))


def _encoded(ids) -> tuple[pa.Array, np.ndarray]:
    """The distinct ids and, for each row, the position of its id among them. The chunks of the
    store's column are encoded as they are (one dictionary for all of them), not copied into one."""
    encoded = pc.dictionary_encode(ids)
    chunks = encoded.chunks if isinstance(encoded, pa.ChunkedArray) else [encoded]
    names = chunks[0].dictionary

    def data(c) -> int | None:
        buf = c.dictionary.buffers()[-1]
        return None if buf is None else buf.address
    if any(data(c) != data(chunks[0]) or len(c.dictionary) != len(names) for c in chunks[1:]):
        # (not one shared dictionary: encode the ids as one array)
        return _encoded(ids.combine_chunks())
    codes = np.concatenate([np.asarray(c.indices.to_numpy(zero_copy_only=False)) for c in chunks])
    return names, codes.astype(np.intp, copy=False)


def _grouped(ids, first: np.ndarray, last: np.ndarray | None, rows: np.ndarray,
             turns: np.ndarray | None = None) -> pa.Table:
    """Rows (a turn each, or a conversation of an earlier list: ``turns`` of them, ``last`` its
    last time) grouped by id. No id is null: the store vouches for every one."""
    if not len(ids):
        return _SCHEMA.empty_table()
    names, codes = _encoded(ids)
    k = len(names)
    if turns is None:
        count = np.bincount(codes, minlength=k).astype(np.int64)
    else:
        count = np.zeros(k, dtype=np.int64)
        np.add.at(count, codes, turns)
    first_ts = np.full(k, _BIG, dtype=np.int64)
    np.minimum.at(first_ts, codes, first)
    last_ts = np.full(k, _SMALL, dtype=np.int64)
    np.maximum.at(last_ts, codes, first if last is None else last)
    # the first turn: of those at the earliest time, the first in the file
    at_first = first == first_ts[codes]
    first_row = np.full(k, _BIG, dtype=np.int64)
    np.minimum.at(first_row, codes[at_first], rows[at_first])
    table = pa.Table.from_arrays(
        [names.cast(pa.string()), pa.array(count), pa.array(first_ts).view(UTC_US),
         pa.array(last_ts).view(UTC_US), pa.array(first_row)], schema=_SCHEMA)
    order = pc.sort_indices(table, sort_keys=[("last_ts", "descending"), ("conversation_id", "ascending")])
    return table.take(order)

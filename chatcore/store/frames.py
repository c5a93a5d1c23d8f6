"""Arrow rows -> the pandas frame the pages and the CLI show."""
from __future__ import annotations

import gc

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from chatcore.store.schema import ARROW_SCHEMA



def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow rows -> the documented frame dtypes."""
    data = {}
    for name in table.column_names:
        col = table.column(name)
        if name == "files":
            data[name] = _lists(col)
        elif name == "error":
            data[name] = _objects(col)
        elif name == "turn":
            data[name] = col.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
        else:
            data[name] = col.to_pandas()
    df = pd.DataFrame(data, copy=False)
    return df


def _objects(col: pa.ChunkedArray) -> pd.Series:
    n = len(col)
    out = np.full(n, None, dtype=object)
    if col.null_count < n:
        valid = np.asarray(pc.is_valid(col).to_numpy(zero_copy_only=False), dtype=bool)
        idx = np.flatnonzero(valid)
        out[idx] = pc.drop_null(col).to_pylist()
    return pd.Series(out, dtype=object)


def _lists(col: pa.ChunkedArray) -> pd.Series:
    n = len(col)
    lengths = np.asarray(pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False))
    nz = np.flatnonzero(lengths)
    enabled = gc.isenabled()
    gc.disable()  # a million new lists would trigger many useless collections
    try:
        out = np.fromiter(([] for _ in range(n)), dtype=object, count=n)
        if len(nz):
            for i, v in zip(nz.tolist(), col.take(pa.array(nz)).to_pylist()):
                out[i] = v
    finally:
        if enabled:
            gc.enable()
    return pd.Series(out, dtype=object, copy=False)


def _empty_frame(columns: tuple[str, ...]) -> pd.DataFrame:
    return _to_pandas(ARROW_SCHEMA.empty_table().select(list(columns)))


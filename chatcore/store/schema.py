"""The stored columns: Arrow schema of the normalised turn record (cache and memory)."""
from __future__ import annotations

import pyarrow as pa

from chatcore.log.records import COLUMNS, USAGE_COLUMNS

UTC_US = pa.timestamp("us", tz="UTC")
#: Text is stored as large_string: what pandas' "str" dtype holds, so no copy later.
STR = pa.large_string()

#: The normalised columns as stored (cache and memory).
ARROW_SCHEMA = pa.schema(
    [
        ("ts", UTC_US),
        ("conversation_id", STR),
        ("turn", pa.int64()),
        ("user_text", STR),
        ("response", STR),
        ("latency_ms", pa.float64()),
        ("source", STR),
        ("backend", STR),
        ("model", STR),
        ("error", STR),
        ("files", pa.list_(pa.string())),
        ("session", STR),
        ("v", pa.int64()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("cost_usd", pa.float64()),
        ("prompt_version", STR),
    ]
)
#: A turn's ``usage`` object as the log holds it: its counts become the columns of the same names.
USAGE_STRUCT = pa.struct([(name, pa.int64()) for name in USAGE_COLUMNS])
assert tuple(ARROW_SCHEMA.names) == COLUMNS

#: What the fast parser reads from a v1 line (everything else is ignored): the stored

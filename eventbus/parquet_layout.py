"""The Parquet log's layout: which fields have columns, of what types, and the layout's version.

Shared by the writer and reader (:mod:`eventbus.parquet`) and by the segment files' merging
(:mod:`eventbus.parquet_segments`), which must agree on them. pyarrow is imported only when a
function here is called.

The layout is versioned apart from the record schema (``v``, shared with JSON Lines):
:data:`LAYOUT_VERSION`, in each file's key-value metadata under :data:`LAYOUT_KEY`.

- 1 (no key): every field but the envelope, the indices and the metrics in ``payload``.
- 2: decisions' and outcomes' ``source``, ``reason``, ``code`` and ``cause_seq`` as columns of
  their own (:data:`FIELD_COLUMNS`); pandas metadata that reads the integer columns with nulls
  as integers; a metric column may hold lists of floats (vector metrics).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson

__all__ = ["FIELD_COLUMNS", "LAYOUT_KEY", "LAYOUT_VERSION", "METRIC_PREFIX", "as_vectors",
           "layout_metadata", "vector_type"]

LAYOUT_VERSION = 2
LAYOUT_KEY = b"eventbus.parquet_layout"
#: A metric's column is this prefix and its name.
METRIC_PREFIX = "logs."
#: Fields outside ``records.BATCH_FIELDS`` with a column of their own, and what each holds.
FIELD_COLUMNS = {"source": str, "reason": str, "code": str, "cause_seq": int}
# The integer columns that may hold nulls: pandas reads them as its nullable Int64, not as
# float64 (which it makes of an integer column with nulls unless its metadata says otherwise).
_NULLABLE_INTS = ("epoch", "batch", "step", "cause_seq")


@cache
def layout_metadata() -> dict[bytes, bytes]:
    """The key-value metadata of every file the writer makes: the layout's version, and
    pandas metadata that makes ``pandas.read_parquet`` read the integer columns with nulls
    as integers (pandas's ``Int64``; pyarrow reads the rest as it always does)."""
    columns = [{"name": name, "field_name": name, "pandas_type": "int64",
                "numpy_type": "Int64", "metadata": None} for name in _NULLABLE_INTS]
    pandas = {"index_columns": [], "column_indexes": [], "columns": columns,
              "creator": {"library": "eventbus"}, "pandas_version": "2.0.0"}
    return {LAYOUT_KEY: str(LAYOUT_VERSION).encode(), b"pandas": orjson.dumps(pandas)}


@cache
def vector_type() -> Any:
    """The Arrow type of a metric column that holds vectors: lists of float64."""
    import pyarrow as pa

    return pa.list_(pa.float64())


def as_vectors(column: Any) -> Any:
    """A metric column (or None) as a column of lists: a float ``x`` becomes ``[x]`` (no
    vector has one element, so ``[x]`` reads back as the float), a null stays null."""
    import numpy as np
    import pyarrow as pa

    if column is None or column.type == vector_type():
        return column
    column = column.cast(pa.float64())
    offsets = pa.array(np.arange(len(column) + 1, dtype=np.int32))
    mask = column.is_null() if column.null_count else None
    return pa.ListArray.from_arrays(offsets, column.fill_null(0.0), vector_type(), mask=mask)

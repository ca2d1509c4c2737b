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

What a file may decode to (:class:`DecodeBudget`) is here too: the reader and the merging of
segments both read files that may be damaged or hostile, and must refuse the same ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from .errors import LogCorruptError
from .jsonl import MAX_LINE_BYTES

__all__ = ["BATCH_BYTES", "FIELD_COLUMNS", "LAYOUT_KEY", "LAYOUT_VERSION", "MAX_DECODED_RATIO",
           "MAX_RECORD_BYTES", "METRIC_PREFIX", "DecodeBudget", "as_vectors", "layout_metadata",
           "vector_type"]

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


# --- what a file may decode to ----------------------------------------------------------------

#: The most one record of a Parquet log may decode to, in bytes: the longest line a JSON Lines
#: log may have (``jsonl.MAX_LINE_BYTES``, 64 MiB), which holds the same record.
MAX_RECORD_BYTES = MAX_LINE_BYTES
#: A Parquet log may decode to :data:`MAX_RECORD_BYTES` plus this many times the size of its
#: files (see :class:`DecodeBudget`). The logs this library writes decode to under 10 times
#: their size; a 22 KB file of one dictionary value repeated decoded to 2 GB.
MAX_DECODED_RATIO = 64
#: Rows a Parquet log may hold beyond one per byte of its files (see :class:`DecodeBudget`):
#: each row costs the readers Python work whatever it decodes to, and the logs this library
#: writes take 4 bytes a row or more (a batch record with a constant loss), where run-length
#: and delta encodings let a crafted file hold 13 rows a byte.
MIN_ROWS = 1 << 16
#: About the most a batch of rows, read at a time, takes as Python objects (by the footer's
#: sizes, 32 bytes a value: a float and the list's pointer to it).
BATCH_BYTES = 16 << 20


class DecodeBudget:
    """What the files of one Parquet log may decode to, and what they have decoded so far.

    Parquet's encodings let a few bytes stand for far more: a dictionary holds a string once
    for any number of rows, run-length encoding a value for any number of rows, compression
    a page for a small part of its size. So a log may decode to :data:`MAX_RECORD_BYTES` plus
    :data:`MAX_DECODED_RATIO` times the size of its files read so far (``add_file``), and one
    row to :data:`MAX_RECORD_BYTES`, counting each row as 8 bytes, each string as its length
    in every row that holds it, and each number of a list as 8 bytes (a number that is not
    in a list is in a row, and costs no more than one).

    ``batches`` reads a file so. ``plan`` checks a row group before any of it is decoded,
    from the footer (each column chunk's uncompressed size, and number of values for a list)
    and, for a column of strings stored with a dictionary, from the dictionary and the rows'
    indices into it, read without the values; it also says how many rows to read at a time,
    for about :data:`BATCH_BYTES` a batch. ``spend`` counts each batch as it is read, before
    anything is made of it: a footer may lie. A file beyond the budget is a
    :class:`LogCorruptError` naming the file, the row group or row, the column and the limit.
    """

    def __init__(self) -> None:
        self.allowed = MAX_RECORD_BYTES
        self.spent = 0
        self.allowed_rows = MIN_ROWS
        self.rows = 0

    def add_file(self, size: int) -> None:
        """Allow for a file of ``size`` bytes, about to be read."""
        self.allowed += MAX_DECODED_RATIO * size
        self.allowed_rows += size

    def plan(self, file: Path, parquet: Any, source: Any, group: int, first: int,
             columns: list[str] | None, most_rows: int) -> int:
        """Check row group ``group`` of ``parquet`` (a ``pyarrow.parquet.ParquetFile`` opened
        from the pyarrow file ``source``; ``first``: the file's row it starts at, counted
        from 1) before reading ``columns`` of it (None: all); the rows to read at a time, from
        1 to ``most_rows``."""
        import pyarrow.parquet as pq

        row_group = parquet.metadata.row_group(group)
        rows = row_group.num_rows
        where = f"row group {group + 1}, rows {first:,} to {first + rows - 1:,}"
        if rows <= 0:
            return most_rows  # nothing to decode
        if self.rows + rows > self.allowed_rows:
            raise LogCorruptError(
                f"{file} ({where}): the log's files hold more rows than bytes ({MIN_ROWS:,} "
                f"rows allowed beyond one a byte, parquet_layout.MIN_ROWS): run-length or "
                "delta encoding stands for far more records than any log of this size holds. "
                "The file is damaged or made to exhaust time", path=str(file), line=first)
        self.rows += rows
        claimed = 8 * rows  # what the footer says the rows decode to
        memory = 0  # what they take as Python objects (32 bytes a value, nulls too, at least)
        stored = []  # (leaf, name, size claimed) of the strings stored with a dictionary
        for leaf, name in _leaves(parquet, columns):
            chunk = row_group.column(leaf)
            column = parquet.schema.column(leaf)
            size = max(chunk.total_uncompressed_size, 0)
            values = max(chunk.num_values, 0)
            if column.max_repetition_level:  # a list: its numbers are its values
                size = max(size, 8 * values)
            if column.physical_type == "FIXED_LEN_BYTE_ARRAY":
                # Arrow makes every row of a fixed width at that width, a null too: a column
                # of 128 MiB a row, all null, is stored in bytes and decoded to gigabytes.
                size = max(size, max(column.length or 0, 0) * rows)
            claimed += size
            memory += max(size, 32 * values)
            if self.spent + claimed > self.allowed:
                raise self._too_much(file, where, name, first,
                                     f"by the footer, {claimed:,} bytes up to this column")
            if (chunk.has_dictionary_page and column.physical_type == "BYTE_ARRAY"
                    and not column.max_repetition_level):
                stored.append((leaf, name, size))
        if claimed > rows * MAX_RECORD_BYTES:
            raise LogCorruptError(
                f"{file} ({where}): by the footer its rows decode to {claimed // rows:,} bytes "
                f"each, more than a record may ({MAX_RECORD_BYTES:,} bytes, "
                "jsonl.MAX_LINE_BYTES); the file is damaged or made to exhaust memory",
                path=str(file), line=first)
        # No row holds more of a dictionary column than the column's chunk holds in all: when
        # that many bytes in every row fit the budget and a record, the rows need no reading
        # (the common case: small chunks; the reading below costs a second open of the file).
        bound = sum(size for _, _, size in stored)
        if stored and bound <= MAX_RECORD_BYTES and \
                self.spent + claimed + (rows - 1) * bound <= self.allowed:
            memory += (rows - 1) * bound
            stored = []
        if stored:
            # The dictionary's values once and an index per row: what the rows decode to,
            # before they are decoded.
            # (Not pre-buffered: for a column or two, its thread hand-offs cost more.)
            handle = pq.ParquetFile(source, metadata=parquet.metadata, pre_buffer=False,
                                    read_dictionary=[parquet.schema.column(leaf).path
                                                     for leaf, _, _ in stored])
            indexed = []  # (name, the column's dictionary and indices)
            longest = 0  # the most a row can hold in these columns
            for leaf, name, size in stored:
                column = self._indexed(file, where, first, handle, group, leaf, name)
                if len(column) != rows:
                    raise LogCorruptError(f"{file} ({where}): column {name} holds "
                                          f"{len(column):,} values for {rows:,} rows",
                                          path=str(file), line=first, field=name)
                decoded, most = _dictionary_bytes(column)
                claimed += decoded - size
                memory += decoded - size
                if self.spent + claimed > self.allowed:
                    raise self._too_much(file, where, name, first,
                                         f"{decoded:,} bytes in this column's strings")
                indexed.append((name, column))
                longest += most
            if longest > MAX_RECORD_BYTES:  # a row may hold more than a record may: find it
                self._check_rows(file, first, indexed, 0)
        return max(1, min(most_rows, BATCH_BYTES * rows // max(memory, 1)))

    @staticmethod
    def _indexed(file: Path, where: str, first: int, handle: Any, group: int, leaf: int,
                 name: str) -> Any:
        """A column of strings stored with a dictionary, read as the dictionary and the
        rows' indices into it (a ChunkedArray of DictionaryArrays)."""
        import pyarrow as pa

        path = handle.schema.column(leaf).path
        try:
            if handle.reader.column_name_idx(path) != leaf:  # another column of that name
                raise LogCorruptError(f"{file}: two columns are named {name}; a Parquet log "
                                      "has one of each", path=str(file), field=name)
            column = handle.reader.read_row_group(group, column_indices=[leaf],
                                                  use_threads=False).column(0)
        except LogCorruptError:
            raise
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise LogCorruptError(f"{file} ({where}): column {name} cannot be read: {exc}",
                                  path=str(file), line=first, field=name) from exc
        if not pa.types.is_dictionary(column.type):
            raise LogCorruptError(f"{file} ({where}): column {name} is not strings",
                                  path=str(file), line=first, field=name)
        return column

    def _check_rows(self, file: Path, first: int, columns: list[tuple[str, Any]],
                    extra: int) -> None:
        """Refuse the first row of ``columns`` ((name, pyarrow column) pairs of the same rows,
        the first the file's row ``first``) that, with ``extra`` bytes, decodes to more than
        a record may."""
        named = [(name, _row_bytes(column)) for name, column in columns]
        per_row = sum(sizes for _, sizes in named) + extra
        biggest = int(per_row.argmax())
        if per_row[biggest] > MAX_RECORD_BYTES:
            name = max(named, key=lambda column: column[1][biggest])[0]
            raise LogCorruptError(
                f"{file} (row {first + biggest:,}): the record decodes to "
                f"{int(per_row[biggest]):,} bytes (most of them in column {name}), more than "
                f"a record may ({MAX_RECORD_BYTES:,} bytes, as the longest line of a JSON "
                "Lines log, jsonl.MAX_LINE_BYTES); the file is damaged or made to exhaust "
                "memory", path=str(file), line=first + biggest, field=name)

    def batches(self, file: Path, parquet: Any, source: Any, columns: list[str] | None,
                most_rows: int) -> Iterator[Any]:
        """``columns`` of ``parquet`` (opened from ``source``, as for ``plan``) a
        ``pyarrow.RecordBatch`` of at most ``most_rows`` rows at a time: each row group is
        checked before it is read (``plan``), each batch before it is given (``spend``)."""
        first = 1  # the file's row the row group starts at
        for group in range(parquet.metadata.num_row_groups):
            size = self.plan(file, parquet, source, group, first, columns, most_rows)
            row = first
            counted = None  # the columns that count, and how: the same in every batch
            for batch in parquet.iter_batches(batch_size=size, row_groups=[group],
                                              columns=columns):
                if counted is None:
                    counted = _counted(batch.schema)
                self.spend(file, row, batch, counted)
                row += batch.num_rows
                yield batch
            first += parquet.metadata.row_group(group).num_rows

    def spend(self, file: Path, row: int, batch: Any,
              counted: list[tuple[int, Any]] | None = None) -> None:
        """Count ``batch`` (a ``pyarrow.RecordBatch`` whose first row is the file's ``row``,
        counted from 1) before anything is made of it. ``counted``: what ``_counted`` says of
        its schema, when known."""
        total = 8 * batch.num_rows
        for i, count in _counted(batch.schema) if counted is None else counted:
            total += count(batch.column(i))
            if self.spent + total > self.allowed:
                raise self._too_much(file, f"rows {row:,} to {row + batch.num_rows - 1:,}",
                                     batch.schema.names[i], row, "as read")
        self.spent += total
        if total > MAX_RECORD_BYTES:  # then a row may be over: find the biggest
            self._check_rows(file, row, list(zip(batch.schema.names, batch.columns)), 8)

    def _too_much(self, file: Path, where: str, name: str, row: int,
                  how: str) -> LogCorruptError:
        return LogCorruptError(
            f"{file} ({where}): column {name} takes the log past the {self.allowed:,} bytes "
            f"it may decode to ({how}; a log may decode to {MAX_RECORD_BYTES:,} bytes plus "
            f"{MAX_DECODED_RATIO} times the size of its files, parquet.MAX_DECODED_RATIO): "
            "a dictionary, run-length encoding or compression stands for far more than any "
            "log holds. The file is damaged or made to exhaust memory", path=str(file),
            line=row, field=name)


def _leaves(parquet: Any, columns: list[str] | None) -> list[tuple[int, str]]:
    """The leaf columns pyarrow decodes to read ``columns`` of ``parquet`` (None: all), with
    the name of each. pyarrow takes a leaf for a name when the name is its path, or the path's
    first parts joined with dots: ``logs.f1`` reads ``logs.f1``'s list, and a column ``a.b``
    with ``a``'s. The same are counted here."""
    paths = parquet.reader.column_paths
    if columns is None:
        return [(leaf, ".".join(path)) for leaf, path in enumerate(paths)]
    wanted = set(columns)
    found = []
    for leaf, path in enumerate(paths):
        prefix = path[0]
        for part in [*path[1:], None]:
            if prefix in wanted:
                found.append((leaf, prefix))
                break
            if part is not None:
                prefix = f"{prefix}.{part}"
    return found


def _counted(schema: Any) -> list[tuple[int, Any]]:
    """The columns of ``schema`` that count for more than their rows (strings, lists and
    dictionaries), each with the function that counts an array of it."""
    import pyarrow as pa

    types = pa.types
    found = []
    for i, field in enumerate(schema):
        kind = field.type
        if types.is_dictionary(kind):
            found.append((i, _dictionary_array_bytes))
        elif types.is_string(kind) or types.is_binary(kind):
            found.append((i, _text_bytes))
        elif types.is_large_string(kind) or types.is_large_binary(kind):
            found.append((i, _large_text_bytes))
        elif types.is_list(kind):
            found.append((i, _list_bytes))
        elif types.is_large_list(kind):
            found.append((i, _large_list_bytes))
    return found


def _span(array: Any, offset_type: str) -> int:
    """From the first offset of ``array`` (of strings or lists) to its last: its bytes or
    its lists' values."""
    import numpy as np

    n = len(array)
    if not n:
        return 0
    offsets = np.frombuffer(array.buffers()[1], offset_type)
    return int(offsets[array.offset + n]) - int(offsets[array.offset])


def _text_bytes(array: Any) -> int:
    return _span(array, "<i4")


def _large_text_bytes(array: Any) -> int:
    return _span(array, "<i8")


def _list_bytes(array: Any) -> int:
    return 8 * _span(array, "<i4")


def _large_list_bytes(array: Any) -> int:
    return 8 * _span(array, "<i8")


def _dictionary_array_bytes(array: Any) -> int:
    """A dictionary's values at each row that holds one, and the dictionary itself (which
    is made into Python objects with each batch)."""
    decoded, _ = _dictionary_bytes(array)
    return decoded + int(_row_bytes(array.dictionary).sum())


def _dictionary_bytes(column: Any) -> tuple[int, int]:
    """What a dictionary column (a pyarrow DictionaryArray, or ChunkedArray of them) decodes
    to: (all its rows, the most one row does)."""
    import numpy as np
    import pyarrow as pa

    total = most = 0
    for chunk in column.chunks if isinstance(column, pa.ChunkedArray) else [column]:
        sizes = np.append(_row_bytes(chunk.dictionary), 0)  # a null: the last
        counts = np.bincount(_codes(chunk, len(sizes) - 1), minlength=len(sizes))
        total += int(counts @ sizes)
        most = max(most, int(sizes[counts > 0].max(initial=0)))
    return total, most


def _codes(array: Any, null: int) -> Any:
    """The indices of a DictionaryArray into its dictionary, ``null`` for a null, as a NumPy
    array of int64 (read from the buffers: ``to_numpy`` imports pandas, 25 MB and 0.3 s)."""
    import numpy as np
    import pyarrow as pa

    indices = array.indices
    n, start = len(indices), indices.offset
    if not n:
        return np.zeros(0, np.int64)
    kind = indices.type
    dtype = f"{'<u' if pa.types.is_unsigned_integer(kind) else '<i'}{kind.bit_width // 8}"
    validity, data = indices.buffers()
    codes = np.frombuffer(data, dtype)[start:start + n].astype(np.int64)
    if indices.null_count:
        bits = np.unpackbits(np.frombuffer(validity, np.uint8), bitorder="little")
        codes[bits[start:start + n] == 0] = null
    if codes.min() < 0 or codes.max() > null:
        raise ValueError("a dictionary index out of the dictionary's range")
    return codes


def _row_bytes(column: Any) -> Any:
    """What each row of ``column`` (a pyarrow Array or ChunkedArray) counts for: its string's
    bytes, 8 for each number of its list, a dictionary's value as that value (0 for any other
    type); a NumPy array of int64. (From the offsets: a null counts for what its offsets span,
    nothing in any file pyarrow writes.)"""
    import numpy as np
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        parts = [_row_bytes(chunk) for chunk in column.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)
    types = pa.types
    kind = column.type
    n = len(column)
    if types.is_dictionary(kind):
        sizes = np.append(_row_bytes(column.dictionary), 0)  # a null: the last
        return sizes[_codes(column, len(sizes) - 1)]
    if types.is_string(kind) or types.is_binary(kind) or types.is_list(kind):
        offset_type = "<i4"
    elif types.is_large_string(kind) or types.is_large_binary(kind) or types.is_large_list(kind):
        offset_type = "<i8"
    else:
        return np.zeros(n, np.int64)
    if not n:
        return np.zeros(0, np.int64)
    offsets = np.frombuffer(column.buffers()[1], offset_type)
    sizes = np.diff(offsets[column.offset:column.offset + n + 1]).astype(np.int64)
    return 8 * sizes if types.is_list(kind) or types.is_large_list(kind) else sizes

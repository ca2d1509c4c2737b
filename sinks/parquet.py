"""Parquet event logs as a sink.

The writer and reader are the core's (:mod:`eventbus.parquet`): a log is a directory of
segment files, compacted into one at ``close()``, which pandas and pyarrow read as one table.
This module makes them usable like every other sink (``Bus(log=[ParquetSink("run.parquet")])``)
and offers :func:`convert` here too.
"""

from __future__ import annotations

from eventbus.parquet import ParquetWriter, compact, iter_parquet_dicts, read_parquet

from .jsonl import convert

__all__ = ["ParquetSink", "ParquetWriter", "compact", "convert", "iter_parquet_dicts",
           "read_parquet"]

#: The Parquet log writer, under the name the other sinks follow.
ParquetSink = ParquetWriter

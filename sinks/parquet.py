"""The Parquet event log as a sink: a directory of segments, merged into one file at close
(the format: docs/log-format.md).

The writer lives in the core (:mod:`eventbus.parquet`), beside its reader, because the bus
opens its own log (``Bus(log="run.parquet")``); it is a :class:`~eventbus.Sink` like every
other and can be given to a bus as one: ``Bus(log=["run.jsonl", ParquetSink("run.parquet")])``.
"""

from eventbus.parquet import ParquetWriter

#: The same class under the name the other sinks' pattern gives it.
ParquetSink = ParquetWriter

__all__ = ["ParquetSink", "ParquetWriter"]

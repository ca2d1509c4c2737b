"""JSON Lines event logs as a sink, and conversion between the log formats.

The writer and reader are the core's (:mod:`eventbus.jsonl`); this module makes them usable like
every other sink (``Bus(log=[JsonlSink("run.jsonl"), ...])``) and adds :func:`convert`.
"""

from __future__ import annotations

import os
from pathlib import Path

from eventbus.errors import ConfigError
from eventbus.jsonl import JsonlWriter, iter_jsonl_dicts, read_jsonl
from eventbus.log import open_writer, read_log

__all__ = ["JsonlSink", "JsonlWriter", "convert", "iter_jsonl_dicts", "read_jsonl"]

#: The JSON Lines log writer, under the name the other sinks follow.
JsonlSink = JsonlWriter


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> int:
    """Write the event log ``src`` to ``dst``, each in the format its path says; returns records.

    ``.parquet`` (or a directory) is Parquet, anything else JSON Lines. The records are the
    same, field for field, NaN and infinities included; ``dst`` is replaced. A resumed run's
    log converts whole, the abandoned partial epoch included (readers skip it, as they do in
    the source).
    """
    src_path, dst_path = Path(src), Path(dst)
    if src_path.resolve() == dst_path.resolve():
        raise ConfigError(f"convert: source and destination are the same log: {src_path}",
                          field="dst")
    if not src_path.exists():
        raise ConfigError(f"convert: {src_path}: no such log", field="src")
    count = 0
    writer = open_writer(dst_path)
    try:
        for record in read_log(src_path):
            writer.write(record.model_dump())
            count += 1
    finally:
        writer.close()
    return count

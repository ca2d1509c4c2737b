"""``eventbus convert``: a log rewritten in another format, or replayed into a logging sink.

JSON Lines and Parquet are copies record for record (``sinks.jsonl.convert``). CSV and
TensorBoard are made by feeding the recorded events, as they were, to the CSVLogger or
TensorBoard plugin, so a converted log looks exactly like one those plugins wrote live; a
resumed run's abandoned partial epochs are left out, so their batches do not show twice. Part of
the command line, which is where the core meets the plugins.
"""

from __future__ import annotations

import os
from pathlib import Path

from .bus import Bus
from .effective import read_effective
from .errors import ConfigError
from .log import is_parquet

__all__ = ["FORMATS", "convert"]

FORMATS = ("jsonl", "parquet", "csv", "tensorboard")


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, to: str) -> int:
    """Write the log ``src`` as ``to`` at ``dst``; returns the number of records read."""
    if to not in FORMATS:
        raise ConfigError(f"convert: unknown format {to!r}; choose one of {', '.join(FORMATS)}",
                          field="to")
    dst = Path(dst)
    if to in ("jsonl", "parquet"):
        if (to == "parquet") != is_parquet(dst) or (to == "jsonl" and dst.suffix != ".jsonl"):
            raise ConfigError(f"convert: {dst} is not a .{to} path; name the output "
                              f"something.{to}", field="out")
        from sinks.jsonl import convert as copy_log

        return copy_log(src, dst)
    if to == "csv":
        from plugins import CSVLogger

        sink = CSVLogger(str(dst))
    else:
        from plugins import TensorBoard

        sink = TensorBoard(log_dir=str(dst), write_graph=False)
    count = 0
    bus = Bus([sink])
    try:
        # The run as it went on: an abandoned partial epoch's batches would show twice.
        for record in read_effective(src):
            bus.feed(record, side_effects=True)
            count += 1
    finally:
        bus.close()
    return count

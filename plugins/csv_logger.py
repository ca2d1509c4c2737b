"""CSVLogger: one CSV row per epoch, Keras's layout (``epoch``, then the metrics sorted).

The file handling lives in :class:`sinks.csv.CsvTable`; this plugin decides when to open, write
and close it.
"""

from __future__ import annotations

import os
from typing import Any

from eventbus import ConfigError, Plugin, hookimpl

from .monitor import require_bool, require_path

__all__ = ["CSVLogger"]


class CSVLogger(Plugin):
    """Stream epoch results to a CSV file.

    ``filename``: the file; ``separator``: its one-character delimiter; ``append``: add the
    run's rows after those of an existing file instead of starting it afresh at
    ``train_begin``. Rows are always appended, as Keras appends them.

    A run the bus resumed (``bus.resumed``; it publishes no ``train_begin``) always continues the
    file, whatever ``append`` says: the rows of the epochs before the crash are the run's too.
    The bus flushes its log at every epoch end after the plugins ran, so a crash can leave at
    most one row the log lacks: the file's last row, for the epoch the run resumes from
    (``bus.initial_epoch``). That row, and no other, is removed before the resumed run writes
    the epoch again.
    """

    side_effects = True

    def __init__(self, filename: str | os.PathLike[str], separator: str = ",",
                 append: bool = False):
        from sinks.csv import CsvTable  # noqa: F401 - fail on a broken install at construction

        name = type(self).name
        self.filename = require_path(filename, "filename", name)
        if not isinstance(separator, str) or len(separator) != 1:
            raise ConfigError(f"{name}: separator must be one character; got {separator!r}",
                              plugin=name, field="separator")
        self.separator = separator
        self.append = require_bool(append, "append", name)
        self._bus: Any = None
        self._table: Any = None

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["filename"] = self.filename
        return config

    def _open(self, append: bool) -> Any:
        from sinks.csv import CsvTable

        self._close()
        self._table = CsvTable(self.filename, separator=self.separator, append=append)
        return self._table

    def _resume(self) -> Any:
        """Open on a run that published no ``train_begin``. A run the bus resumed continues the
        file, without the row a crashed attempt wrote for the epoch it resumes from; a loop that
        never publishes ``train_begin`` opens the file as ``train_begin`` would."""
        resumed = self._bus is not None and self._bus.resumed
        table = self._open(append=self.append or resumed)
        if resumed:
            table.drop_last_row(self._bus.initial_epoch)
        return table

    def _close(self) -> None:
        table, self._table = self._table, None
        if table is not None:
            table.close()

    @hookimpl
    def on_attach(self, bus: Any) -> None:
        self._bus = bus

    @hookimpl
    def on_train_begin(self, event: Any) -> None:
        self._open(self.append)

    @hookimpl
    def on_epoch_end(self, event: Any) -> None:
        table = self._table if self._table is not None else self._resume()
        table.write(event.epoch, event.logs)

    @hookimpl
    def on_train_end(self, event: Any) -> None:
        self._close()

    @hookimpl
    def on_close(self) -> None:
        self._close()

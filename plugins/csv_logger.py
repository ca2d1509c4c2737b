"""CSVLogger: one CSV row per epoch, Keras's layout (``epoch``, then the metrics sorted).

The file handling lives in :class:`sinks.csv.CsvTable`; this plugin decides when to open, write
and close it.
"""

from __future__ import annotations

import os
from typing import Any

from eventbus import Plugin, hookimpl

__all__ = ["CSVLogger"]


class CSVLogger(Plugin):
    """Stream epoch results to a CSV file.

    ``filename``: the file; ``separator``: its one-character delimiter; ``append``: continue an
    existing file instead of starting it afresh at ``train_begin``. A resumed run (one that
    publishes no ``train_begin``) always continues the file, whatever ``append`` says: the rows
    of the epochs before the crash are the run's too.
    """

    side_effects = True

    def __init__(self, filename: str | os.PathLike[str], separator: str = ",",
                 append: bool = False):
        from sinks.csv import CsvTable  # noqa: F401 - fail on a broken install at construction

        self.filename = os.fspath(filename)
        self.separator = separator
        self.append = append
        if not isinstance(separator, str) or len(separator) != 1:
            from eventbus.errors import ConfigError

            raise ConfigError(f"CSVLogger: separator must be one character; got {separator!r}",
                              plugin="CSVLogger", field="separator")
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

    def _close(self) -> None:
        table, self._table = self._table, None
        if table is not None:
            table.close()

    @hookimpl
    def on_train_begin(self, event: Any) -> None:
        self._open(self.append)

    @hookimpl
    def on_epoch_end(self, event: Any) -> None:
        table = self._table if self._table is not None else self._open(append=True)
        table.write(event.epoch, event.logs)

    @hookimpl
    def on_train_end(self, event: Any) -> None:
        self._close()

    @hookimpl
    def on_close(self) -> None:
        self._close()

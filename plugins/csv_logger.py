"""CSVLogger: one CSV row per epoch, Keras's layout (``epoch``, then the metrics sorted).

A sink: it takes the ``epoch_end`` records (and ``train_begin``/``train_end``, to open and close
the file per fit). The file handling lives in :class:`sinks.csv.CsvTable`.
"""

from __future__ import annotations

import os
from typing import Any

from eventbus import ConfigError, Plugin, Sink
from eventbus.run import Run
from eventbus.sink import FailingWrites

from .monitor import require_bool, require_path

__all__ = ["CSVLogger"]


class CSVLogger(Plugin, Sink):
    """Stream epoch results to a CSV file.

    ``filename``: the file; ``separator``: its one-character delimiter; ``append``: add the
    run's rows after those of an existing file instead of starting it afresh at
    ``train_begin``. Rows are always appended, as Keras appends them.

    A run the bus resumed (``run.resumed``; it publishes no ``train_begin``) always continues the
    file, whatever ``append`` says: the rows of the epochs before the crash are the run's too.
    The rows a crashed attempt wrote for the epoch the run resumes from, and later ones the
    event log never kept, are removed before the resumed run writes those epochs again
    (:meth:`sinks.csv.CsvTable.drop_rows_from`).
    """

    side_effects = True
    takes = frozenset({"train_begin", "epoch_end", "train_end"})

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
        self._table: Any = None
        self._run: Run | None = None
        self._failing = FailingWrites()

    @property
    def sep(self) -> str:
        """Keras's name for ``separator``."""
        return self.separator

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

    # --- the sink ------------------------------------------------------------------------------

    def open(self, run: Run) -> None:
        self._run = run
        self._failing.over()  # a new run: its first failed write is reported
        if run.resumed:
            # The run goes on: its file continues, less what a crashed attempt wrote for the
            # epochs the loop runs again.
            table = self._open(append=True)
            table.drop_rows_from(run.initial_epoch, after_other_runs=self.append)

    def write(self, record: dict[str, Any]) -> None:
        kind = record["kind"]
        if kind == "epoch_end":
            # A loop that never publishes train_begin opens the file as train_begin would.
            table = self._table if self._table is not None else self._open(self.append)
            self._keeping(table.write, record["epoch"], record["logs"])
        elif kind == "train_begin":
            self._open(self.append)
        else:  # train_end
            self._close()

    def flush(self) -> None:
        table = self._table
        if table is not None and table.kept:
            self._keeping(table.flush)

    def _keeping(self, call: Any, *args: Any) -> None:
        """``call(*args)``; a row it could not write (a full disk) stays in the table, tried
        again at the next flush, and the fault is reported once while it lasts."""
        try:
            call(*args)
        except OSError as exc:
            if self._run is None:
                raise
            kept = self._table.kept
            self._failing.failed(self._run, self._run.label(self), "epoch_end", exc,
                                 f"the rows of epochs {kept[0][0]} to {kept[-1][0]} kept")
            return
        self._failing.over()

    def close(self) -> None:
        self._close()

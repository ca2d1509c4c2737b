"""CSVLogger: one CSV row per epoch, Keras's layout (``epoch``, then the metrics sorted).

A sink: :class:`sinks.csv.CsvSink` (the ``epoch_end`` records as rows, the file opened and
closed per fit), with Keras's name and parameters. The file handling lives in
:class:`sinks.csv.CsvTable`.
"""

from __future__ import annotations

import os
from typing import Any

from eventbus import ConfigError, Plugin
from eventbus.run import Run
from sinks.csv import CsvSink

from .monitor import require_bool, require_path

__all__ = ["CSVLogger"]


class CSVLogger(Plugin, CsvSink):
    """Stream epoch results to a CSV file: :class:`sinks.csv.CsvSink`, with Keras's name and
    parameters, listed in the log's header as a plugin.

    ``filename``: the file; ``separator``: its one-character delimiter; ``append``: add the
    run's rows after those of an existing file instead of starting it afresh at
    ``train_begin``. Rows are always appended, as Keras appends them. A resumed run continues
    the file, less the rows of the epochs it runs again (see ``CsvSink``).
    """

    # Plugin's class attributes come first in the order: the sink's are said again.
    side_effects = CsvSink.side_effects
    takes = CsvSink.takes

    def __init__(self, filename: str | os.PathLike[str], separator: str = ",",
                 append: bool = False):
        name = type(self).name
        path = require_path(filename, "filename", name)
        if not isinstance(separator, str) or len(separator) != 1:
            raise ConfigError(f"{name}: separator must be one character; got {separator!r}",
                              plugin=name, field="separator")
        CsvSink.__init__(self, path, separator, require_bool(append, "append", name))

    @property
    def sep(self) -> str:
        """Keras's name for ``separator``."""
        return self.separator

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["filename"] = self.filename
        return config

    def _reported_as(self, run: Run) -> str:
        return run.label(self)

"""The one error family of the project.

    EventBusError
    ├── ConfigError(ValueError)          a plugin, sink or bus was configured wrongly
    ├── EventError(ValueError)           a published event is malformed
    │   └── MetricValueError             a metric value is not a real number
    ├── PluginError(RuntimeError)        a plugin raised while handling an event
    ├── AbortTraining(RuntimeError)      a plugin ends the run by raising, whatever the policy
    ├── LogError(ValueError)             an event log cannot be read
    │   ├── LogCorruptError              a line or file in the middle of a log is not a record
    │   └── SchemaVersionError           the log was written by a newer, incompatible schema
    ├── RegistryError(LookupError)       a plugin name is not registered
    └── ReplayError(RuntimeError)        a log cannot be replayed as asked

Each error that concerns an event or a plugin names them (``.event``, ``.plugin``), so a
message read in a CI log is enough to find the fault.
"""

from __future__ import annotations

__all__ = [
    "AbortTraining",
    "ConfigError",
    "EventBusError",
    "EventError",
    "LogCorruptError",
    "LogError",
    "MetricValueError",
    "PluginError",
    "RegistryError",
    "ReplayError",
    "SchemaVersionError",
]


class EventBusError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(EventBusError, ValueError):
    """A plugin, sink or bus was given a parameter it cannot work with."""

    def __init__(self, message: str, *, plugin: str | None = None, field: str | None = None):
        super().__init__(message)
        self.plugin = plugin
        self.field = field


class EventError(EventBusError, ValueError):
    """A published event is malformed; nothing of it was recorded."""

    def __init__(self, message: str, *, event: str | None = None, field: str | None = None,
                 plugin: str | None = None):
        super().__init__(message)
        self.event = event
        self.field = field
        self.plugin = plugin


class MetricValueError(EventError):
    """A metric value in ``logs`` is not a real number."""


class PluginError(EventBusError, RuntimeError):
    """A plugin raised while handling an event; the fault is in the log as ``plugin_failed``."""

    def __init__(self, message: str, *, plugin: str, event: str, seq: int | None = None):
        super().__init__(message)
        self.plugin = plugin
        self.event = event
        self.seq = seq


class AbortTraining(EventBusError, RuntimeError):
    """Raised by a plugin to end training at once (``TerminateOnNaN(raise_error=True)``).

    The bus records it as ``plugin_failed`` and lets it through even when plugins are isolated.
    """


class LogError(EventBusError, ValueError):
    """An event log cannot be read.

    ``path``: the file at fault (a Parquet log's segment file, not its directory); ``line``:
    the line of a JSON Lines log, or the row of a Parquet file, counted from 1; ``field``: the
    field (or Parquet column) at fault, where one is.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None):
        super().__init__(message)
        self.path = path
        self.line = line
        self.field = field


class LogCorruptError(LogError):
    """A record in the middle of a log is not valid (a torn *last* line is only a warning)."""


class SchemaVersionError(LogError):
    """The log's major schema version is newer than this library reads."""


class RegistryError(EventBusError, LookupError):
    """No plugin is registered under the name asked for."""


class ReplayError(EventBusError, RuntimeError):
    """A log cannot be replayed as asked (e.g. a plugin whose parameters were not recorded)."""

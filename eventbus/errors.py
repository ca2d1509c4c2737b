"""The one error family of the project.

    EventBusError
    ├── ConfigError(ValueError)          a plugin, sink or bus was configured wrongly
    ├── UsageError(ValueError)           a command-line argument cannot be used
    ├── EventError(ValueError)           a published event is malformed
    │   └── MetricValueError             a metric value is not a real number
    ├── PluginError(RuntimeError)        a plugin raised while handling an event
    ├── AbortTraining(RuntimeError)      a plugin ends the run by raising, whatever the policy
    │   └── NonFiniteLossError           (plugins.terminate_on_nan) a loss was NaN or infinite
    ├── LogError(ValueError)             an event log cannot be read
    │   ├── LogCorruptError              a line or file in the middle of a log is not a record
    │   └── SchemaVersionError           the log was written by a newer, incompatible schema
    ├── CheckpointError(ValueError)      a checkpoint file is not one this library reads safely
    ├── RegistryError(LookupError)       a plugin name is not registered
    ├── ReplayError(RuntimeError)        a log cannot be replayed as asked
    ├── DeliveryError(RuntimeError)      records or payloads could not be delivered (HTTP)
    └── DistributedError(RuntimeError)   the ranks of a job could not agree
        └── RankTimeoutError(TimeoutError)  a rank never answered; ``.ranks`` names it

Each error that concerns an event or a plugin names them (``.event``, ``.plugin``), and one that
concerns a file names it (``.path``, and ``.dataset`` for a checkpoint), so a message read in a
CI log is enough to find the fault.
"""

from __future__ import annotations

import builtins
from typing import Any

__all__ = [
    "AbortTraining",
    "CheckpointError",
    "ConfigError",
    "DeliveryError",
    "DistributedError",
    "EventBusError",
    "EventError",
    "LogCorruptError",
    "LogError",
    "MetricValueError",
    "PluginError",
    "RankTimeoutError",
    "RegistryError",
    "ReplayError",
    "SchemaVersionError",
    "UsageError",
]

from collections.abc import Sequence


class EventBusError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(EventBusError, ValueError):
    """A plugin, sink or bus was given a parameter it cannot work with."""

    def __init__(self, message: str, *, plugin: str | None = None, field: str | None = None):
        super().__init__(message)
        self.plugin = plugin
        self.field = field


class UsageError(EventBusError, ValueError):
    """A command-line argument that cannot be used."""


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
    """A plugin raised while handling an event; the fault is in the log as ``plugin_failed``.

    The plugin's own exception is the ``__cause__``. The PluginError raised is also an
    instance of that exception's built-in class (``ZeroDivisionError``, ``ValueError``,
    ``KeyError``, ...), or of its nearest built-in base (a ``ConfigError`` is a
    ``ValueError``): :meth:`raised_for`. So ``except ZeroDivisionError`` around the loop
    catches it as it would catch a Keras callback's.
    """

    def __init__(self, message: str, *, plugin: str, event: str, seq: int | None = None):
        super().__init__(message)
        self.plugin = plugin
        self.event = event
        self.seq = seq

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""  # not KeyError's quoted repr

    def __reduce__(self) -> Any:
        # Pickled (to another process) as a plain PluginError: the mixed class is this one's.
        return (_plugin_error, (str(self), self.plugin, self.event, self.seq))

    @classmethod
    def raised_for(cls, cause: BaseException, message: str, *, plugin: str, event: str,
                   seq: int | None = None) -> PluginError:
        """A PluginError for ``cause``: of a subclass that is also ``cause``'s class, when that
        is a built-in exception whose layout allows it (an OSError's does not)."""
        try:
            return _of_class(type(cause))(message, plugin=plugin, event=event, seq=seq)
        except TypeError:  # a class whose constructor takes other arguments than a message
            return PluginError(message, plugin=plugin, event=event, seq=seq)


def _plugin_error(message: str, plugin: str, event: str, seq: int | None) -> PluginError:
    return PluginError(message, plugin=plugin, event=event, seq=seq)


_AS: dict[type, type[PluginError]] = {}
_NOT_MIXED = (OSError, UnicodeError, SyntaxError, StopIteration, StopAsyncIteration,
              getattr(builtins, "BaseExceptionGroup", PluginError), PluginError)


def _of_class(cause: type) -> type[PluginError]:
    found = _AS.get(cause)
    if found is None:
        found = PluginError
        # The cause's own class if it is built in, else its nearest built-in bases (a
        # ConfigError is a ValueError; a missing checkpoint field is also a KeyError): what
        # ``except`` clauses around a loop name.
        built_in = [k for k in cause.__mro__ if k.__module__ == "builtins"]
        # Not a class whose handlers read fields a PluginError lacks (an OSError's errno, a
        # UnicodeError's encoding), nor one Python treats apart (StopIteration in generators).
        kinds = tuple(k for k in built_in if issubclass(k, Exception)
                      and k not in (Exception, RuntimeError) and not issubclass(k, _NOT_MIXED)
                      and not any(o is not k and issubclass(o, k) for o in built_in))
        if kinds:
            try:
                found = type(f"PluginError[{', '.join(k.__name__ for k in kinds)}]",
                             (PluginError, *kinds), {"__module__": __name__})
            except TypeError:  # an instance layout of its own (OSError, UnicodeError, ...)
                found = PluginError
        _AS[cause] = found
    return found


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


class CheckpointError(EventBusError, ValueError):
    """A checkpoint file is refused: not an eventbus checkpoint, or built to make the loader read
    other files, allocate more than the file can hold, or return something that is not a
    numeric array (``sinks.hdf5.load_checkpoint``). Nothing of the file is returned."""

    def __init__(self, message: str, *, path: str | None = None, dataset: str | None = None,
                 misfit: bool = False):
        super().__init__(message)
        self.path = path
        #: The dataset, group or attribute at fault, as an HDF5 path ("/weights/dense/kernel").
        self.dataset = dataset
        #: Refused as no checkpoint of the model it was read for (weights of another name,
        #: shape or dtype kind, or more than one of the model can hold), not as damaged.
        self.misfit = misfit


class RegistryError(EventBusError, LookupError):
    """No plugin is registered under the name asked for."""


class ReplayError(EventBusError, RuntimeError):
    """A log cannot be replayed as asked (e.g. a plugin whose parameters were not recorded)."""


class DeliveryError(EventBusError, RuntimeError):
    """Records or payloads could not be delivered (raised by a sink's ``close``; recorded
    too for a sink that ``follows_logs``, stopped because an event log was taken out)."""


class DistributedError(EventBusError, RuntimeError):
    """The ranks could not agree: out of step, or a message could not be sent."""


class RankTimeoutError(DistributedError, TimeoutError):
    """A rank never answered within the timeout; ``ranks`` lists the ranks that did not."""

    def __init__(self, message: str, *, ranks: Sequence[int], op: str = "",
                 epoch: int | None = None):
        super().__init__(message)
        self.ranks = list(ranks)
        self.op = op
        self.epoch = epoch

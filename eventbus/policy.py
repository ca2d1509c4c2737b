"""What a failure becomes: recorded, then raised, isolated or the run aborted. One place.

- A plugin that raises is recorded as ``plugin_failed``; then, by the bus's
  ``on_plugin_error``, a :class:`~eventbus.errors.PluginError` is raised (``"raise"``) or the
  plugin is disabled and a :class:`PluginIsolatedWarning` shown (``"isolate"``).
- A plugin with side effects (a logger, a sink) and every sink is always isolated, and
  recorded as ``sink_failed``: a full disk does not end a training run.
- :class:`~eventbus.errors.AbortTraining` (``TerminateOnNaN(raise_error=True)``) is recorded and
  raised whatever the policy: asking to raise means the run ends.
- While the bus closes, every failure is a ``sink_failed`` and nothing is raised: the run is
  over and its log must still be closed.

Before anything is raised the log is flushed, so the failure is on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from . import terminal
from .errors import AbortTraining, ConfigError, PluginError
from .records import PluginFailed, Record, SinkFailed

__all__ = ["FailurePolicy", "PluginIsolatedWarning", "SinkFailureWarning"]

Mode = Literal["raise", "isolate"]


class SinkFailureWarning(UserWarning):
    """A sink failed during the run; training went on and the failure is in the log."""


class PluginIsolatedWarning(UserWarning):
    """A plugin raised and was disabled (``on_plugin_error="isolate"``)."""


class FailurePolicy:
    """Turns exceptions into records and decides what happens next.

    ``record(item)`` records a fault; ``disable(plugin)`` takes a plugin (and the sink it is)
    out of the run; ``flush()`` puts the log on disk before an exception leaves the bus;
    ``label(plugin)`` is the name its records carry.
    """

    def __init__(self, mode: Any, *, record: Callable[[Record], Any],
                 disable: Callable[[object], None], flush: Callable[[], None],
                 label: Callable[[object], str]):
        if mode not in ("raise", "isolate"):
            raise ConfigError(f"Bus: on_plugin_error must be 'raise' or 'isolate'; got "
                              f"{mode!r}", field="on_plugin_error")
        self.mode: Mode = mode
        self._record = record
        self._disable = disable
        self._flush = flush
        self._label = label
        #: True once the bus is closing: failures are recorded, never raised.
        self.closing = False

    def plugin_failed(self, plugin: object, kind: str, seq: int | None, epoch: int | None,
                      exc: Exception) -> None:
        """``plugin`` raised ``exc`` while handling ``kind`` (the record ``seq``)."""
        label = self._label(plugin)
        error, message = type(exc).__name__, str(exc)
        if self.closing:
            self._record(SinkFailed(sink=label, event=kind, error=error, message=message,
                                    cause_seq=seq, epoch=epoch))
            return
        if isinstance(exc, AbortTraining):
            self._record(PluginFailed(plugin=label, event=kind, error=error, message=message,
                                      cause_seq=seq, epoch=epoch))
            self._flush()
            raise exc
        if getattr(plugin, "side_effects", False):
            self._record(SinkFailed(sink=label, event=kind, error=error, message=message,
                                    cause_seq=seq, epoch=epoch))
            self._disable(plugin)
            # Shown now, not only in close()'s summary: a bug in a user's callback (a wrong
            # signature) would otherwise go unseen for the whole run.
            # (worded as close()'s summary words each failure, so one match finds both)
            terminal.warn(f"{label} on {kind}: {error}: {message} (seq {seq}); the plugin is "
                          "disabled and training goes on (a plugin with side effects never ends "
                          "a run)", SinkFailureWarning)
            return
        self._record(PluginFailed(plugin=label, event=kind, error=error, message=message,
                                  cause_seq=seq, epoch=epoch))
        if self.mode == "isolate":
            self._disable(plugin)
            terminal.warn(f"plugin {label!r} raised on {kind} (seq {seq}) and was disabled: "
                          f"{error}: {message}", PluginIsolatedWarning)
            return
        self._flush()
        raise PluginError.raised_for(
            exc, f"plugin {label!r} failed on {kind} (seq {seq}): {error}: {message}",
            plugin=label, event=kind, seq=seq) from exc

    def sink_failed(self, name: str, kind: str | None, seq: int | None, epoch: int | None,
                    exc: BaseException) -> SinkFailed:
        """A sink named ``name`` failed on ``kind``: recorded (the caller has taken the sink
        out of the run first, so the record does not go to it again)."""
        fault = SinkFailed(sink=name, event=kind, error=type(exc).__name__, message=str(exc),
                           cause_seq=seq, epoch=epoch)
        self._record(fault)
        return fault

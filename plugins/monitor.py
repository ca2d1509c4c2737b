"""The plugins' side of the monitor: the shared rule, and the parameter checks every plugin makes.

The monitor rule (which way a metric should go, what counts as better, best tracking) lives once,
in the core, as :mod:`eventbus.monitor`, so the audit uses the same rule as the plugins; its names
are re-exported here so ``from plugins.monitor import Monitor, infer_mode`` keeps working.

The module also holds the few parameter checks every plugin makes, so each error names the plugin
and the field the same way; those a sink makes too (``require_real``, ``require_int``,
``require_bool``) live in :mod:`eventbus.checks` and are re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from eventbus import ConfigError
from eventbus.checks import require_bool, require_int, require_real, require_verbose
from eventbus.monitor import MAX_WORDS, MIN_WORDS, Mode, Monitor, fmt, infer_mode

__all__ = [
    "MAX_WORDS",
    "MIN_WORDS",
    "KerasMonitorNames",
    "Mode",
    "Monitor",
    "fmt",
    "infer_mode",
    "monitor_op",
    "require_bool",
    "require_int",
    "require_names",
    "require_path",
    "require_real",
    "require_save_freq",
    "require_verbose",
]


def monitor_op(monitor: Monitor | None) -> Any:
    """Keras's ``monitor_op`` for ``monitor``: ``keras.ops.greater`` when higher is better,
    ``keras.ops.less`` when lower is (NumPy's of the same names when Keras is not imported;
    the plugins themselves compare with :class:`Monitor`). None without a monitor, and, as
    Keras's before its first ``epoch_end``, while ``mode="auto"`` has not placed the name."""
    if monitor is None or monitor.mode is None:
        return None
    import sys

    ops = sys.modules["keras"].ops if "keras" in sys.modules else __import__("numpy")
    return ops.greater if monitor.mode == "max" else ops.less


# --- parameter checks shared by the plugins ------------------------------------------------


class KerasMonitorNames:
    """Keras's names for a monitoring plugin's configuration and state: ``monitor`` (the
    metric's name), ``mode`` (as given: ``"auto"`` stays ``"auto"``), ``min_delta`` (its
    absolute value), ``monitor_op`` and ``best``, as Keras 3's ``MonitorCallback`` keeps them.

    The rule itself is the plugin's ``tracker`` (a :class:`Monitor`, or None for a plugin that
    compares nothing as configured: ModelCheckpoint without ``save_best_only``), which the
    audit shares. ``best`` may be set, as code written against Keras's callbacks does;
    ``train_begin`` resets it where Keras's does (EarlyStopping, ReduceLROnPlateau;
    ModelCheckpoint keeps the best of earlier fits). A best set by hand is not in the log: a
    replay starts without it.
    """

    tracker: Monitor | None

    def _keras_monitor_names(self, monitor: str, mode: str, min_delta: float) -> None:
        """Keep the Keras names of the arguments the tracker was made from."""
        self.monitor = monitor
        self.mode = mode
        self.min_delta = abs(min_delta)

    @property
    def monitor_op(self) -> Any:
        """Keras's comparison for the monitored metric (``keras.ops.greater`` or ``less``;
        None without a tracker or before a name ``mode="auto"`` cannot place is compared):
        read by code written against Keras's callbacks."""
        return monitor_op(self.tracker)

    @property
    def best(self) -> float | None:
        """The best value of the monitored metric so far (None before the first)."""
        return None if self.tracker is None else self.tracker.best

    @best.setter
    def best(self, value: float | None) -> None:
        name = type(self).__name__
        if self.tracker is None:
            raise ConfigError(f"{name}: best: this plugin monitors no metric as configured "
                              "(ModelCheckpoint tracks one only with save_best_only=True)",
                              plugin=name, field="best")
        self.tracker.best = None if value is None else \
            require_real(value, "best", name, finite=False)


def require_path(value: Any, field: str, plugin: str) -> str:
    """``value`` (a str or path) as a non-empty str; anything else is an error."""
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if isinstance(text, str) and text:
            return text
    # Keras's words for a missing path first, as its users know them.
    empty = f"Empty `{field}` argument passed: " if value is None or value == "" else ""
    raise ConfigError(f"{plugin}: {empty}{field} must be a file or directory path (a non-empty "
                      f"str or os.PathLike); got {type(value).__name__} {value!r}",
                      plugin=plugin, field=field)


def require_save_freq(value: Any, plugin: str) -> None:
    """``save_freq``: ``"epoch"`` or a positive int (a number of batches), as Keras takes it."""
    if value != "epoch" and (isinstance(value, bool) or not isinstance(value, int)
                             or value < 1):
        # Keras's two callbacks' words ("Unrecognized", "Invalid value"), then what it takes.
        raise ConfigError(f"{plugin}: Unrecognized save_freq {value!r} (Invalid value): "
                          "save_freq must be 'epoch' or a positive int (a number of batches)",
                          plugin=plugin, field="save_freq")


def require_names(value: Any, field: str, plugin: str) -> list[str]:
    """``value`` as a list of names: None is none, one str is one name, else an iterable of str.

    A str is one name, not the letters of one (``stateful_metrics="acc"`` is ``["acc"]``).
    """
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, Iterable):
        raise ConfigError(f"{plugin}: {field} must be a name or a list of names (str); got "
                          f"{type(value).__name__} {value!r}", plugin=plugin, field=field)
    names = list(value)
    wrong = [name for name in names if not isinstance(name, str)]
    if wrong:
        raise ConfigError(f"{plugin}: {field} must hold names (str); got "
                          f"{type(wrong[0]).__name__} {wrong[0]!r}", plugin=plugin, field=field)
    return names

"""The plugins' side of the monitor: the shared rule, and the parameter checks every plugin makes.

The monitor rule (which way a metric should go, what counts as better, best tracking) lives once,
in the core, as :mod:`eventbus.monitor`, so the audit uses the same rule as the plugins; its names
are re-exported here so ``from plugins.monitor import Monitor, infer_mode`` keeps working.

The module also holds the few parameter checks every plugin makes, so each error names the plugin
and the field the same way (``require_real`` is the core's: :class:`~eventbus.monitor.Monitor`
checks ``min_delta`` with it).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Mapping
from typing import Any

from eventbus import ConfigError
from eventbus.monitor import (
    MAX_WORDS,
    MIN_WORDS,
    Mode,
    Monitor,
    fmt,
    infer_mode,
    require_real,
)

__all__ = [
    "MAX_WORDS",
    "MIN_WORDS",
    "Mode",
    "Monitor",
    "fmt",
    "infer_mode",
    "require_bool",
    "require_int",
    "require_names",
    "require_path",
    "require_real",
    "require_save_freq",
]


# --- parameter checks shared by the plugins ------------------------------------------------


def require_int(value: Any, field: str, plugin: str, *, minimum: int = 0) -> int:
    """``value`` as an int >= ``minimum``; bools and floats are errors."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{plugin}: {field} must be an int; got {type(value).__name__} "
                          f"{value!r}", plugin=plugin, field=field)
    out = int(value)
    if out < minimum:
        raise ConfigError(f"{plugin}: {field} must be >= {minimum}; got {out}",
                          plugin=plugin, field=field)
    return out


def require_bool(value: Any, field: str, plugin: str) -> bool:
    """``value`` if it is a bool (NumPy's included); anything else is an error.

    Not ``bool(value)``: ``append="no"`` or ``save_best_only="False"`` would silently be True.
    """
    if isinstance(value, bool) or _is_numpy_bool(value):
        return bool(value)
    raise ConfigError(f"{plugin}: {field} must be True or False; got {type(value).__name__} "
                      f"{value!r}", plugin=plugin, field=field)


def _is_numpy_bool(value: Any) -> bool:
    kind = type(value)
    return kind.__module__ == "numpy" and kind.__name__ in ("bool_", "bool")


def require_path(value: Any, field: str, plugin: str) -> str:
    """``value`` (a str or path) as a non-empty str; anything else is an error."""
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if isinstance(text, str) and text:
            return text
    raise ConfigError(f"{plugin}: {field} must be a file or directory path (a non-empty str or "
                      f"os.PathLike); got {type(value).__name__} {value!r}", plugin=plugin,
                      field=field)


def require_save_freq(value: Any, plugin: str) -> None:
    """``save_freq``: ``"epoch"`` or a positive int (a number of batches), as Keras takes it."""
    if value != "epoch" and (isinstance(value, bool) or not isinstance(value, int)
                             or value < 1):
        raise ConfigError(f"{plugin}: save_freq must be 'epoch' or a positive int (a number "
                          f"of batches); got {value!r}", plugin=plugin, field="save_freq")


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

"""Parameter checks shared by plugins and sinks, so every error names its owner and field alike.

They live in the core because ``sinks`` may not import ``plugins``: ``plugins.monitor``
re-exports them for the plugins, and ``sinks.http`` uses them directly. ``owner`` is the name of
the plugin or sink being configured; it becomes the :class:`~eventbus.errors.ConfigError`'s
``plugin`` and the start of its message.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError

__all__ = ["require_bool", "require_headers", "require_int", "require_real"]


def require_real(value: Any, field: str, plugin: str, *, finite: bool = True,
                 minimum: float | None = None) -> float:
    """``value`` as a float; bools, strings and NaN are errors naming ``plugin`` and ``field``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{plugin}: {field} must be a real number; got "
                          f"{type(value).__name__} {value!r}", plugin=plugin, field=field)
    out = float(value)
    if math.isnan(out) or (finite and math.isinf(out)):
        raise ConfigError(f"{plugin}: {field} must be a finite number; got {out}",
                          plugin=plugin, field=field)
    if minimum is not None and out < minimum:
        raise ConfigError(f"{plugin}: {field} must be >= {minimum}; got {out}",
                          plugin=plugin, field=field)
    return out


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


def require_verbose(value: Any, plugin: str) -> int:
    """``verbose`` as an int >= 0. Unlike a count, it may be a bool, as Keras takes it
    (``verbose=True`` is 1): Keras code runs with only its imports changed."""
    if isinstance(value, bool) or _is_numpy_bool(value):
        return int(value)
    return require_int(value, "verbose", plugin)


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


# RFC 9110's token for a field name; a value may hold any visible character, spaces and tabs.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")


def require_headers(value: Any, field: str, plugin: str) -> dict[str, str]:
    """``value`` checked: None, or a mapping of header names to values, all str, with no line
    break or control character (which would split the request). A value may be a token: an
    error names its type, never its text."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{plugin}: {field} must be a dict of header names to values (str); "
                          f"got {type(value).__name__}", plugin=plugin, field=field)
    for key, text in value.items():
        if not isinstance(key, str) or not isinstance(text, str):
            raise ConfigError(f"{plugin}: {field} must map str to str; got "
                              f"{type(key).__name__} {key!r:.40} -> {type(text).__name__}",
                              plugin=plugin, field=field)
        if not _HEADER_NAME.fullmatch(key):
            raise ConfigError(f"{plugin}: {field}: {key!r:.40} is not a header name (letters, "
                              "digits and !#$%&'*+-.^_`|~ only)", plugin=plugin, field=field)
        if not _HEADER_VALUE.fullmatch(text):
            raise ConfigError(f"{plugin}: {field}: the value of {key!r} holds a line break or "
                              "a control character", plugin=plugin, field=field)
    return dict(value)

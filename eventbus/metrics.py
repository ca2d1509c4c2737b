"""Turning what a training loop reports into plain floats.

Loops hand us Python numbers, numpy scalars, 0-d arrays and framework tensors. Events hold plain
floats only, so logs serialise, compare and replay the same way everywhere. The common case (a
dict of Python floats) costs one type check per value; everything else takes the slow path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import EventError, MetricValueError

__all__ = ["coerce_logs", "to_float"]

_ACCEPTED = "a real number (float, int, numpy scalar, 0-d array or tensor)"


def _where(kind: str, plugin: str | None) -> str:
    return f"{kind} (from plugin {plugin!r})" if plugin else kind


def to_float(value: Any, key: str, kind: str, plugin: str | None = None) -> float:
    """``value`` as a float, or :class:`MetricValueError` naming the key, event and type."""
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bool) or value is None or isinstance(value, (str, bytes)):
        raise _bad(value, key, kind, plugin)
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            raise MetricValueError(
                f"{_where(kind, plugin)}: logs[{key!r}] = {value} is too large for a float",
                event=kind, field=f"logs.{key}", plugin=plugin) from None
    ndim = getattr(value, "ndim", 0)
    if ndim:
        shape = tuple(getattr(value, "shape", ()))
        raise MetricValueError(
            f"{_where(kind, plugin)}: logs[{key!r}] must be a scalar; got "
            f"{type(value).__name__} of shape {shape} (reduce it, e.g. with .mean())",
            event=kind, field=f"logs.{key}", plugin=plugin)
    item = getattr(value, "item", None)
    if callable(item):
        try:
            inner = item()
        except Exception as exc:
            raise MetricValueError(
                f"{_where(kind, plugin)}: logs[{key!r}]: "
                f"{type(value).__name__}.item() failed: {exc}",
                event=kind, field=f"logs.{key}", plugin=plugin) from exc
        if isinstance(inner, (int, float)) and not isinstance(inner, bool):
            return float(inner)
        if not hasattr(type(inner), "__float__"):  # numpy.longdouble's item() is itself
            raise _bad(value, key, kind, plugin)
    if hasattr(type(value), "__float__"):
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise MetricValueError(
                f"{_where(kind, plugin)}: logs[{key!r}]: float() of {type(value).__name__} "
                f"failed: {exc}", event=kind, field=f"logs.{key}", plugin=plugin) from exc
    raise _bad(value, key, kind, plugin)


def _bad(value: Any, key: str, kind: str, plugin: str | None) -> MetricValueError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return MetricValueError(
        f"{_where(kind, plugin)}: logs[{key!r}] must be {_ACCEPTED}; "
        f"got {type(value).__name__} {shown}",
        event=kind, field=f"logs.{key}", plugin=plugin)


def coerce_logs(logs: Mapping[str, Any] | None, kind: str,
                plugin: str | None = None) -> dict[str, float]:
    """Copy ``logs`` into a new dict of plain floats; the caller's dict is never kept or changed."""
    if logs is None:
        return {}
    try:
        items = logs.items()
    except AttributeError:
        raise EventError(
            f"{_where(kind, plugin)}: logs must be a mapping of metric name to number; "
            f"got {type(logs).__name__}", event=kind, field="logs", plugin=plugin) from None
    out = {}
    for key, value in items:
        if type(value) is not float or type(key) is not str:
            if isinstance(key, str):
                key = str.__str__(key)  # a str subclass (numpy.str_, an enum): its text
            else:
                raise EventError(
                    f"{_where(kind, plugin)}: logs keys must be str; got "
                    f"{type(key).__name__} {key!r}", event=kind, field="logs", plugin=plugin)
            value = to_float(value, key, kind, plugin)
        out[key] = value
    return out

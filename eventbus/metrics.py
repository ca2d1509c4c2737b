"""Turning what a training loop reports into the plain values records hold.

Loops hand us Python numbers, numpy scalars, 0-d arrays and framework tensors, and vectors: a
1-D array or tensor, a list or tuple of numbers (Keras's ``F1Score`` gives one value per class).
Events hold plain values only, a float or a list of floats, so logs serialise, compare and replay
the same way everywhere. A value with one element is its float, as Keras's ``float(value)``
makes it: so a list in a record always has 0 or at least 2 elements, and no log needs to tell
``0.5`` from ``[0.5]``. The common case (a dict of Python floats) costs one type check per
value; everything else takes the slow path. Indices (epoch, batch, step) are plain ints within
64 bits; ``params`` and ``meta`` plain data.
"""

from __future__ import annotations

import reprlib
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import ConfigError, EventError, MetricValueError

__all__ = [
    "MAX_DEPTH", "MAX_INDEX", "Metric", "PendingLogs", "coerce_logs", "hold_logs", "is_vector",
    "plain", "plain_meta", "plain_params", "read_pending", "to_float", "to_index", "to_metric",
]

#: A metric value as records hold it: a float, or a vector of floats (never of one element).
Metric = float | list[float]

#: The largest epoch, batch or step a log stores (a signed 64-bit integer).
MAX_INDEX = (1 << 63) - 1


def to_index(value: Any, field: str, kind: str) -> int:
    """An epoch or batch index as a plain int (numpy integers and 0-d tensors included), 0 or
    more and within 64 bits."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise EventError(f"{kind}: {field} must be an int; got {type(value).__name__} "
                         f"{shown(value)}", event=kind, field=field)
    try:
        index = value.__index__()
    except Exception as exc:
        raise EventError(f"{kind}: {field}: {type(value).__name__}.__index__() failed: {exc}",
                         event=kind, field=field) from exc
    if not 0 <= index <= MAX_INDEX:
        raise EventError(f"{kind}: {field} must be 0 or more and fit in 64 bits; got {index}",
                         event=kind, field=field)
    return index


def plain_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``train_begin``'s params as plain data, or an :class:`EventError` naming the field."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise EventError(f"train_begin: params must be a mapping; got {type(params).__name__}",
                         event="train_begin", field="params")
    try:
        return plain(dict(params))  # type: ignore[no-any-return]
    except ValueError as exc:
        raise EventError(f"train_begin: params.{exc}", event="train_begin",
                         field="params") from None


def plain_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """``Bus(meta=...)`` as plain data, checked when given: the header is written at the first
    event, too late to say which argument was wrong."""
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise ConfigError(f"Bus: meta must be a mapping of plain data; got "
                          f"{type(meta).__name__}", field="meta")
    try:
        return plain(dict(meta), "meta")  # type: ignore[no-any-return]
    except ValueError as exc:
        raise ConfigError(f"Bus: {exc}", field="meta") from None

_ACCEPTED = ("a real number (float, int, numpy scalar, 0-d array or tensor) or a 1-D vector of "
             "them (list, tuple, 1-D array or tensor)")


_ELEMENT = "a real number (each element of a vector metric)"


def _field(key: str, index: int | None) -> str:
    return f"logs.{key}" if index is None else f"logs.{key}[{index}]"


def _where(kind: str, plugin: str | None) -> str:
    return f"{kind} (from plugin {plugin!r})" if plugin else kind


def to_float(value: Any, key: str, kind: str, plugin: str | None = None, *,
             index: int | None = None) -> float:
    """``value`` as a float, or :class:`MetricValueError` naming the key, event and type
    (``index``: the element of the vector ``logs[key]`` that ``value`` is)."""
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bool) or value is None or isinstance(value, (str, bytes)):
        raise _bad(value, key, kind, plugin, index)
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            raise MetricValueError(
                f"{_where(kind, plugin)}: {_cell(key, index)} = {shown(value)} is too large "
                "for a float",
                event=kind, field=_field(key, index), plugin=plugin) from None
    ndim = getattr(value, "ndim", 0)
    if ndim:
        shape = tuple(getattr(value, "shape", ()))
        raise MetricValueError(
            f"{_where(kind, plugin)}: {_cell(key, index)} must be a scalar; got "
            f"{type(value).__name__} of shape {shape} (reduce it, e.g. with .mean())",
            event=kind, field=_field(key, index), plugin=plugin)
    item = getattr(value, "item", None)
    if callable(item):
        try:
            inner = item()
        except Exception as exc:
            raise MetricValueError(
                f"{_where(kind, plugin)}: {_cell(key, index)}: "
                f"{type(value).__name__}.item() failed: {exc}",
                event=kind, field=_field(key, index), plugin=plugin) from exc
        if isinstance(inner, (int, float)) and not isinstance(inner, bool):
            return float(inner)
        if not hasattr(type(inner), "__float__"):  # numpy.longdouble's item() is itself
            raise _bad(value, key, kind, plugin, index)
    if hasattr(type(value), "__float__"):
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise MetricValueError(
                f"{_where(kind, plugin)}: {_cell(key, index)}: float() of {type(value).__name__} "
                f"failed: {exc}", event=kind, field=_field(key, index), plugin=plugin) from exc
    raise _bad(value, key, kind, plugin, index)


def _cell(key: str, index: int | None) -> str:
    return f"logs[{key!r}]" if index is None else f"logs[{key!r}][{index}]"


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for an error message: never itself an
    error (an int of 5,000 digits has no repr; a list nested 5,000 deep overflows the stack)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an int of {value.bit_length()} bits"
    try:
        text = reprlib.repr(value)
    except (ValueError, RecursionError):
        text = f"a {type(value).__name__} too large or deep to show"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _bad(value: Any, key: str, kind: str, plugin: str | None,
         index: int | None = None) -> MetricValueError:
    shown_value = shown(value)
    return MetricValueError(
        f"{_where(kind, plugin)}: {_cell(key, index)} must be "
        f"{_ACCEPTED if index is None else _ELEMENT}; "
        f"got {type(value).__name__} {shown_value}",
        event=kind, field=_field(key, index), plugin=plugin)


def is_vector(value: Any) -> bool:
    """Whether a metric value as records hold it is a vector (a list), not a float."""
    return type(value) is list


def to_metric(value: Any, key: str, kind: str, plugin: str | None = None) -> Metric:
    """``value`` as a float, or as a list of floats for a 1-D vector; a value of one element is
    its float (Keras's ``float(value)``). Anything else is a :class:`MetricValueError` naming
    the key, event and type."""
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (list, tuple)):
        items = list(value)
    else:
        ndim = getattr(value, "ndim", 0)
        if not ndim or isinstance(value, (str, bytes)):
            return to_float(value, key, kind, plugin)
        items = _elements(value, ndim, key, kind, plugin)
    if len(items) == 1:
        return to_float(items[0], key, kind, plugin)
    return [item if type(item) is float else to_float(item, key, kind, plugin, index=i)
            for i, item in enumerate(items)]


def _elements(value: Any, ndim: Any, key: str, kind: str, plugin: str | None) -> list[Any]:
    """The elements of an array or tensor (NumPy, torch, JAX, TensorFlow: duck-typed, none of
    them imported) that is 1-D or holds one element; anything else is refused."""
    name = type(value).__name__
    try:
        shape = tuple(int(n) for n in getattr(value, "shape", ()))
    except (TypeError, ValueError):  # an unknown dimension (a symbolic tensor)
        shape = ()
    if ndim != 1 and (len(shape) != ndim or any(n != 1 for n in shape)):
        raise MetricValueError(
            f"{_where(kind, plugin)}: logs[{key!r}] must be a scalar or a 1-D vector; got "
            f"{name} of shape {shape} (reduce it, e.g. with .mean(), or flatten it)",
            event=kind, field=f"logs.{key}", plugin=plugin)
    try:
        tolist = getattr(value, "tolist", None)
        if not callable(tolist):  # a TensorFlow tensor: through NumPy
            tolist = value.numpy().tolist
        items = tolist()
    except Exception as exc:
        raise MetricValueError(
            f"{_where(kind, plugin)}: logs[{key!r}]: the elements of {name} could not be "
            f"read: {exc}", event=kind, field=f"logs.{key}", plugin=plugin) from exc
    while ndim != 1 and isinstance(items, list) and len(items) == 1:  # shape (1, 1, ...)
        items = items[0]
        ndim -= 1
    if not isinstance(items, list):
        items = [items]
    return items


def coerce_logs(logs: Mapping[str, Any] | None, kind: str,
                plugin: str | None = None) -> dict[str, Metric]:
    """Copy ``logs`` into a new dict of plain floats and lists of floats (see :func:`to_metric`);
    the caller's dict is never kept or changed."""
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
            value = to_metric(value, key, kind, plugin)
        if not key.isascii() and not encodes(key):
            raise EventError(f"{_where(kind, plugin)}: logs key {key!r} is not valid text (a "
                             "lone surrogate, as os.fsdecode makes of an undecodable byte); "
                             "a log cannot hold it", event=kind, field="logs", plugin=plugin)
        out[key] = value
    return out


def encodes(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (no lone surrogate): what a log can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


#: How deep plain data may nest (dicts and lists in evidence, params, meta): far more than any
#: record needs, far less than Python's stack (a log could otherwise nest a thousand deep).
MAX_DEPTH = 64


def plain(value: Any, path: str = "", _depth: int = 0) -> Any:
    """Plain JSON data from what plugins put in evidence: numpy scalars become Python numbers.

    Nested deeper than :data:`MAX_DEPTH` is a ValueError ("nested too deeply")."""
    if type(value) is str:
        if not value.isascii() and not encodes(value):
            raise ValueError(f"{path.lstrip('.') or 'value'}: {value!r} is not valid text (a "
                             "lone surrogate, as os.fsdecode makes of an undecodable byte)")
        return value
    if value is None or type(value) in (bool, float):
        return value
    if type(value) is int:
        return _int64(value, path)
    for base in (bool, int, float, str):  # subclasses such as numpy.float64 or IntEnum
        if isinstance(value, base):
            return _int64(int(value), path) if base is int else \
                plain(str.__str__(value), path) if base is str else base(value)
    if isinstance(value, (Mapping, list, tuple)) and _depth >= MAX_DEPTH:
        where = path.lstrip(".") or "value"
        raise ValueError(f"{where if len(where) < 60 else where[:40] + '...'}: nested too "
                         f"deeply (more than {MAX_DEPTH} levels)")
    if isinstance(value, Mapping):
        return {plain(str(k), f"{path}.{k!r}"): plain(v, f"{path}.{k}", _depth + 1)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, f"{path}[{i}]", _depth + 1) for i, v in enumerate(value)]
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 0) == 0:
        return plain(item(), path, _depth)
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return plain(tolist(), path, _depth)
    raise ValueError(f"{path.lstrip('.') or 'value'}: {type(value).__name__} is not plain data "
                     f"(numbers, strings, booleans, None, lists and dicts of them)")


def _int64(value: int, path: str) -> int:
    # What the logs can store: JSON Lines through orjson (64 bits) and Parquet's columns.
    if -(1 << 63) <= value < (1 << 63):
        return value
    raise ValueError(f"{path.lstrip('.') or 'value'}: int {shown(value)} does not fit in 64 "
                     "bits; "
                     "pass it as a float or a string")


# --- metric tensors read late ---------------------------------------------------------------------
#
# Reading a tensor on an accelerator (``.item()``) waits for the device: once per batch, that
# wait is a training loop's most common slowdown. So a batch's 0-d floating tensors are held as
# they are (a :class:`PendingLogs`) and read when a plugin reads a value of that batch, or all
# together at the next flush point (see ``Recorder.hold``), one host copy for the lot.


#: Tensor types (by their class) that have what holding needs: ``item``, ``detach`` and
#: ``is_floating_point``; anything else is read at once.
_HOLDABLE_TYPES: dict[type, bool] = {}


def _holdable(value: Any) -> bool:
    """Whether ``value`` is a 0-d floating tensor (torch, duck-typed: none is imported) whose
    float can wait: reading it later gives exactly what ``.item()`` gives now."""
    cls = type(value)
    known = _HOLDABLE_TYPES.get(cls)
    if known is None:
        known = _HOLDABLE_TYPES[cls] = all(
            callable(getattr(cls, name, None)) for name in ("item", "detach", "is_floating_point")
        ) and hasattr(cls, "device")
    if not known:
        return False
    try:
        return value.ndim == 0 and value.is_floating_point() is True
    except Exception:
        return False


class PendingLogs(Mapping[str, Any]):
    """A batch's logs whose tensors are not read yet: keys and length without reading them, any
    value read reads them all (one host copy), after which it is a plain mapping of floats.

    ``logs``: the dict of values, floats and held tensors; ``pending``: the keys of the tensors.
    """

    __slots__ = ("logs", "pending")

    def __init__(self, logs: dict[str, Any], pending: list[str]):
        self.logs = logs
        self.pending: list[str] | None = pending

    def __getitem__(self, key: str) -> Any:
        if self.pending is not None:
            read_pending((self,))
        return self.logs[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.logs)

    def __len__(self) -> int:
        return len(self.logs)

    def __contains__(self, key: object) -> bool:
        return key in self.logs

    def plain(self) -> dict[str, Any]:
        """The logs as a dict of floats (read now if they are not yet)."""
        if self.pending is not None:
            read_pending((self,))
        return self.logs

    def copy(self) -> dict[str, Any]:
        """A dict of the floats, as ``dict.copy`` gives (code written for a dict calls it)."""
        return dict(self.plain())

    def __repr__(self) -> str:
        return repr(self.plain())


def hold_logs(logs: dict[Any, Any], kind: str) -> PendingLogs | dict[str, Metric] | None:
    """``logs`` with its 0-d floating tensors held unread (see :class:`PendingLogs`), every
    other value made plain as :func:`coerce_logs` does (a plain dict when nothing is held);
    None when a key is not a plain str (then :func:`coerce_logs` takes it all, with its
    messages)."""
    out: dict[str, Any] = {}
    pending: list[str] = []
    for key, value in logs.items():
        if type(key) is not str or not (key.isascii() or encodes(key)):
            return None
        if type(value) is not float:
            if _holdable(value):
                if value.requires_grad:  # not the graph: held for up to a flush interval
                    value = value.detach()
                pending.append(key)
            else:
                value = to_metric(value, key, kind)
        out[key] = value
    return PendingLogs(out, pending) if pending else out


def read_pending(batches: Any) -> None:
    """Read the held tensors of every :class:`PendingLogs` in ``batches`` into floats: one
    ``stack(...).tolist()`` per device and dtype (one host copy, one device sync), each float
    exactly what the tensor's ``.item()`` gives."""
    cells: list[tuple[dict[str, Any], str]] = []
    for batch in batches:
        if batch.pending is not None:
            cells.extend((batch.logs, key) for key in batch.pending)
            batch.pending = None
    if not cells:
        return
    if len(cells) == 1:
        logs, key = cells[0]
        logs[key] = float(logs[key].item())
        return
    groups: dict[Any, list[tuple[dict[str, Any], str]]] = {}
    for logs, key in cells:
        value = logs[key]
        groups.setdefault((value.device, value.dtype), []).append((logs, key))
    for group in groups.values():
        tensors = [logs[key] for logs, key in group]
        stack = _stack_of(type(tensors[0]))
        floats = None
        if stack is not None and len(tensors) > 1:
            try:
                floats = stack(tensors).tolist()
            except Exception:  # e.g. a tensor type whose stack does not take these: one by one
                floats = None
        if floats is None:
            floats = [value.item() for value in tensors]
        for (logs, key), value in zip(group, floats):
            logs[key] = float(value)


_STACKS: dict[type, Any] = {}


def _stack_of(cls: type) -> Any:
    """The ``stack`` function of a tensor class's library (``torch.stack`` for a
    ``torch.Tensor`` or a subclass), found in the library already imported; None if none."""
    if cls not in _STACKS:
        found = None
        for base in cls.__mro__:
            module = sys.modules.get(base.__module__.partition(".")[0])
            found = getattr(module, "stack", None) if module is not None else None
            if callable(found) and base.__module__.partition(".")[0] != "builtins":
                break
            found = None
        _STACKS[cls] = found
    return _STACKS[cls]

"""Event filters: which epochs or batches a plugin's hooks see.

    Bus([every(5, TensorBoard("runs")), after(10, EarlyStopping(patience=3)),
         every_seconds(3600, ModelCheckpoint("ckpt/{epoch}.h5"), on="batch")])

One mechanism for every plugin, applied where the bus builds its call tables (the dispatcher):
a filtered hook is wrapped in a test of the event, so a plugin counts nothing itself and an
unfiltered plugin pays nothing. A filter is part of how the run was set up, so the header
records it with the plugin and replay and resume apply it again.

Indices are the ones the bus publishes, counted from 0: ``on="epoch"`` looks at
``event.epoch`` (the epoch hooks), ``on="batch"`` at ``event.batch`` (within the epoch) and
``on="step"`` at ``event.step`` (batches across epochs; the batch hooks). ``every=n`` passes
the n-th, 2n-th, ... (index + 1 divisible by n, Lightning's ``every_n_epochs``); ``once=i``
only index i; ``before=i`` indices below i; ``after=i`` indices above i; ``seconds=s`` an
event at least s seconds (by the events' recorded times, so replay agrees) after the last one
it passed, the first one passing (Lightning's ``train_time_interval``; an event whose time is
before the last one passed, the clock having stepped back, passes too). Several filters on a
plugin must all pass. The begin and end of one epoch or batch are judged alike, except by
``seconds``, which times each hook on its own.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from .errors import ConfigError

__all__ = ["EventFilter", "after", "before", "every", "every_seconds", "filtered", "once",
           "record_test"]

P = TypeVar("P")

#: unit -> (the hooks it filters, the event field it reads)
UNITS: dict[str, tuple[tuple[str, ...], str]] = {
    "epoch": (("on_epoch_begin", "on_epoch_end"), "epoch"),
    "batch": (("on_batch_begin", "on_batch_end"), "batch"),
    "step": (("on_batch_begin", "on_batch_end"), "step"),
}


@dataclass(frozen=True)
class EventFilter:
    """One condition on the events of one unit a plugin's hooks are given."""

    on: str = "epoch"
    every: int | None = None
    once: int | None = None
    before: int | None = None
    after: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.on not in UNITS:
            raise ConfigError(f"event filter: on must be one of {', '.join(UNITS)}; got "
                              f"{self.on!r}", field="on")
        given = {k: v for k, v in asdict(self).items() if k != "on" and v is not None}
        if not given:
            raise ConfigError("event filter: give one of every, once, before, after, seconds",
                              field="every")
        for name, value in given.items():
            least = 1 if name == "every" else 0
            if name == "seconds":
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value) and value > 0
                want = "a finite number of seconds > 0"
            else:
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= least
                want = f"an integer >= {least}"
            if not ok:
                raise ConfigError(f"event filter: {name} must be {want}; got {value!r}",
                                  field=name)

    @property
    def hooks(self) -> tuple[str, ...]:
        return UNITS[self.on][0]

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def passes(self, event: Any) -> bool:
        """Whether the event's index passes (``seconds`` is judged by :func:`guard`)."""
        return self.passes_index(getattr(event, UNITS[self.on][1], None))

    def passes_index(self, index: Any) -> bool:
        """Whether an event with this index (its epoch, batch or step) passes."""
        if index is None:
            return True  # an event without the index (a batch outside an epoch)
        if self.every is not None and (index + 1) % self.every:
            return False
        if self.once is not None and index != self.once:
            return False
        if self.before is not None and index >= self.before:
            return False
        return self.after is None or index > self.after


def filtered(plugin: P, *filters: EventFilter) -> P:
    """``plugin`` with ``filters`` added to those it has (returns the plugin itself)."""
    if isinstance(plugin, type):
        raise ConfigError(f"event filter: give a plugin instance, not the class "
                          f"{plugin.__name__}", field="plugin")
    for f in filters:
        if not isinstance(f, EventFilter):
            raise ConfigError(f"event filter: {f!r:.60} is not an EventFilter", field="filters")
    current = tuple(getattr(plugin, "event_filters", ()))
    try:
        plugin.event_filters = (*current, *filters)  # type: ignore[attr-defined]
    except AttributeError as exc:
        raise ConfigError(f"event filter: cannot attach a filter to {type(plugin).__name__} "
                          "(no attribute event_filters and no __dict__)",
                          field="plugin") from exc
    return plugin


def every(n: int, plugin: P, *, on: str = "epoch") -> P:
    """``plugin`` sees every n-th epoch (batch, step): the n-th, 2n-th, ..."""
    return filtered(plugin, EventFilter(on=on, every=n))


def once(index: int, plugin: P, *, on: str = "epoch") -> P:
    """``plugin`` sees only the epoch (batch, step) ``index``, counted from 0."""
    return filtered(plugin, EventFilter(on=on, once=index))


def before(index: int, plugin: P, *, on: str = "epoch") -> P:
    """``plugin`` sees the epochs (batches, steps) below ``index``."""
    return filtered(plugin, EventFilter(on=on, before=index))


def after(index: int, plugin: P, *, on: str = "epoch") -> P:
    """``plugin`` sees the epochs (batches, steps) above ``index``."""
    return filtered(plugin, EventFilter(on=on, after=index))


def every_seconds(seconds: float, plugin: P, *, on: str = "epoch") -> P:
    """``plugin`` sees an epoch (batch) end at least ``seconds`` after the last it saw."""
    return filtered(plugin, EventFilter(on=on, seconds=seconds))


def filters_of(plugin: object) -> tuple[EventFilter, ...]:
    """The filters on ``plugin`` (checked: the attribute may have been set by hand)."""
    found = getattr(plugin, "event_filters", ())
    try:
        found = tuple(found)
    except TypeError:
        found = (found,)
    for f in found:
        if not isinstance(f, EventFilter):
            raise ConfigError(f"plugin {type(plugin).__name__}: event_filters holds {f!r:.60}, "
                              "not an EventFilter (use eventbus.filters.every(...) and the "
                              "others)", field="event_filters", plugin=type(plugin).__name__)
    return found


#: The most event filters a log header may list for one plugin. Each is tested on every
#: event of its kind, so a crafted header's thousands would make replay quadratic in the
#: log; a run's own plugins have a few.
MAX_RECORDED_FILTERS = 64


def recorded(filters: Iterable[Mapping[str, Any]]) -> tuple[EventFilter, ...]:
    """Filters as a log header recorded them (checked as if given by hand)."""
    listed = list(itertools.islice(filters, MAX_RECORDED_FILTERS + 1))
    if len(listed) > MAX_RECORDED_FILTERS:
        raise ConfigError(f"the log lists more than {MAX_RECORDED_FILTERS} event filters for "
                          "one plugin; a run's plugins have a few", field="filters")
    out = []
    for f in listed:
        if not isinstance(f, Mapping) or set(f) - set(EventFilter.__dataclass_fields__):
            raise ConfigError(f"event filter in the log is malformed: {f!r:.80}",
                              field="filters")
        out.append(EventFilter(**f))
    return tuple(out)


def guard(hook: str, filters: tuple[EventFilter, ...],
          handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``handler`` behind the filters that apply to ``hook`` (``handler`` itself if none).

    A time filter's clock is this hook's own, and moves only when the event is passed."""
    mine = tuple(f for f in filters if hook in f.hooks)
    if not mine:
        return handler
    intervals = tuple(f.seconds for f in mine if f.seconds is not None)
    last: list[float] = []

    def filtered_hook(event: Any) -> Any:
        for f in mine:
            if not f.passes(event):
                return None
        if intervals:
            if last and too_soon(event.time - last[0], intervals):
                return None
            last[:] = [event.time]
        return handler(event)

    return filtered_hook


def too_soon(elapsed: float, intervals: Iterable[float]) -> bool:
    """Whether ``elapsed`` seconds since the last event passed is less than an interval. A
    negative time passes: the clock stepped back (NTP, a resume on a machine whose clock is
    behind), and waiting for it to catch up would skip the events, checkpoints among them,
    for the whole step; the interval counts from this event instead."""
    return elapsed >= 0 and any(elapsed < s for s in intervals)


def record_test(filters: tuple[EventFilter, ...]) -> Callable[[Mapping[str, Any]], bool] | None:
    """For a plugin that is also a sink (CSVLogger, TensorBoard): whether a record its
    ``write`` is given passes ``filters``, as the event would pass them for its hooks. A record
    of a filtered hook's kind (``epoch_end`` for ``on="epoch"``, ``batch_end`` for ``"batch"``
    and ``"step"``, and their begins) passes only as its event would; decisions and every
    other kind always pass. None without filters. A time filter's clock is each kind's own,
    moved only by the records passed."""
    by_kind: dict[str, list[EventFilter]] = {}
    for f in filters:
        for hook in f.hooks:
            by_kind.setdefault(hook[3:], []).append(f)
    if not by_kind:
        return None
    last: dict[str, float] = {}

    def passes(record: Mapping[str, Any]) -> bool:
        kind = record.get("kind")
        mine = by_kind.get(kind)  # type: ignore[arg-type]
        if mine is None:
            return True
        seconds = []
        for f in mine:
            if not f.passes_index(record.get(UNITS[f.on][1])):
                return False
            if f.seconds is not None:
                seconds.append(f.seconds)
        if seconds:
            now, previous = record.get("time"), last.get(kind)  # type: ignore[arg-type]
            if previous is not None and too_soon(now - previous, seconds):
                return False
            last[kind] = now  # type: ignore[index]
        return True

    return passes

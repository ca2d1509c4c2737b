"""What a plugin's hook receives: an observation as a plain, immutable object.

The bus hands each hook the observation it has just recorded as an :class:`Event`: an object
whose attributes are the record's fields (``kind``, ``seq``, ``time``, ``run_id``, ``v``,
``logs``, and ``epoch``, ``batch``, ``step``, ``params`` where the kind has them), with the same
names and values the log holds. Replay and resume hand plugins the same type, made from the
records they read.

An event is not a pydantic model. Plugins read events on every batch, and a read on a pydantic
model costs about three times a plain object's (its ``__getattr__`` keeps CPython from
specialising the read); making one costs more too. pydantic stays the schema: the bus checks
values at the edge (``metrics.coerce_logs``), and records are what logs are written from and
read into. An event's attributes are its record's storage itself, so making one copies nothing.

What code written against records still finds on an event: ``isinstance(event, EpochEnd)``
and ``isinstance(event, Observation)`` hold (the observation records' metaclass admits the
events of their kinds; ``Record`` does not: decisions and outcomes are records, never events);
``event.record()`` gives the pydantic record; ``model_dump()``, ``model_dump_json()``,
``model_copy(update=...)``, ``model_fields``, ``model_fields_set``, ``dict(event)``, ``==``
(with an event or a record of the same fields) and ``repr`` behave as the record's do; and it
is immutable: setting or deleting an attribute raises :class:`FrozenEventError` naming the
field and the event. (As with a frozen record, the ``logs`` dict itself is not frozen; a
plugin that changes it changes what later plugins see, so copy it first.)

A batch event whose metrics are tensors not read yet has a ``logs`` mapping that reads them all
on its first value read (``metrics.PendingLogs``); dumping, copying or comparing the event reads
them first.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

from .errors import EventError
from .metrics import PendingLogs
from .records import (  # the observation kinds, here too: what ``isinstance(event, ...)`` takes
    EVENT_RECORDS,
    KINDS,
    OBSERVATION_KINDS,
    BatchBegin,
    BatchEnd,
    EpochBegin,
    EpochEnd,
    Observation,
    PredictBatchBegin,
    PredictBatchEnd,
    PredictBegin,
    PredictEnd,
    Record,
    TestBatchBegin,
    TestBatchEnd,
    TestBegin,
    TestEnd,
    TrainBegin,
    TrainEnd,
    trusted,
)

__all__ = ["EVENTS", "BatchBegin", "BatchEnd", "EpochBegin", "EpochEnd", "Event",
           "FrozenEventError", "Observation", "PredictBatchBegin", "PredictBatchEnd",
           "PredictBegin", "PredictEnd", "TestBatchBegin", "TestBatchEnd", "TestBegin",
           "TestEnd", "TrainBegin", "TrainEnd", "event_from", "event_of", "make_event",
           "observation_of_kind", "set_event_fields"]

_new = object.__new__


class FrozenEventError(AttributeError):
    """An event's attribute was set or deleted: events are immutable, as the log is."""


class Event:
    """An observation as a hook receives it (see the module's documentation)."""

    __slots__ = ("__dict__",)

    #: The record kind, the pydantic model of its record, and that model's fields.
    kind: ClassVar[str]
    record_class: ClassVar[type[Record]]
    model_fields: ClassVar[dict[str, Any]]
    category: ClassVar[str] = "observation"

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenEventError(f"{self.kind} event (seq {self.__dict__.get('seq')}): cannot set "
                               f"{name!r}; events are immutable (copy one with "
                               "event.model_copy(update={...}))")

    def __delattr__(self, name: str) -> None:
        raise FrozenEventError(f"{self.kind} event (seq {self.__dict__.get('seq')}): cannot "
                               f"delete {name!r}; events are immutable")

    def _fields(self) -> dict[str, Any]:
        """The fields, with tensors held in ``logs`` read first."""
        fields = self.__dict__
        if type(fields.get("logs")) is PendingLogs:
            fields["logs"] = fields["logs"].plain()
        return fields

    def record(self) -> Record:
        """This event as its pydantic record (sharing its field storage)."""
        return trusted(self.record_class, self._fields())

    @property
    def model_fields_set(self) -> set[str]:
        return set(self.__dict__)

    def __iter__(self) -> Any:
        """(name, value) pairs, as a pydantic model iterates: ``dict(event)`` works."""
        return iter(self._fields().items())

    def model_dump(self, **options: Any) -> dict[str, Any]:
        return self.record().model_dump(**options)

    def model_dump_json(self, **options: Any) -> str:
        return self.record().model_dump_json(**options)

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Event:
        """A copy, with ``update``'s fields replaced (not validated, as pydantic's is not)."""
        fields = dict(self._fields())
        if deep:
            fields = copy.deepcopy(fields)
        if update:
            unknown = set(update) - set(fields)
            if unknown:
                raise AttributeError(f"{self.kind} event has no field {sorted(unknown)[0]!r}")
            fields.update(update)
        return make_event(type(self), fields)

    def __copy__(self) -> Event:
        return make_event(type(self), dict(self._fields()))

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Event:
        return make_event(type(self), copy.deepcopy(self._fields(), memo))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Event):
            return self.kind == other.kind and self._fields() == other._fields()
        if isinstance(other, Record):
            return self.kind == other.kind and self._fields() == other.__dict__
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # as a record's: its logs are a dict

    def __repr__(self) -> str:
        return repr(self.record())

    def __str__(self) -> str:
        return str(self.record())

    def __rich_repr__(self) -> Any:  # pragma: no cover - rich's pretty printer
        yield from self._fields().items()

    def __reduce__(self) -> Any:
        return make_event, (type(self), dict(self._fields()))


#: The ``__dict__`` slot's setter: an event is made by giving it its record's field dict.
set_event_fields = Event.__dict__["__dict__"].__set__


def make_event(cls: type[Event], fields: dict[str, Any]) -> Event:
    """An event of ``cls`` whose attributes are ``fields`` (taken, not copied; already checked:
    nothing is validated here)."""
    event = _new(cls)
    set_event_fields(event, fields)
    return event


def _event_class(kind: str) -> type[Event]:
    record_class = KINDS[kind]
    cls = type(f"{record_class.__name__}Event", (Event,), {
        "__slots__": (), "__module__": __name__, "kind": kind, "record_class": record_class,
        "model_fields": record_class.model_fields,
        "__doc__": f"A ``{kind}`` observation as a hook receives it (fields of "
                   f":class:`~eventbus.records.{record_class.__name__}`)."})
    EVENT_RECORDS[cls] = record_class  # isinstance(event, BatchEnd) holds, as for the record
    return cls


#: Observation kind -> its event class.
EVENTS: dict[str, type[Event]] = {kind: _event_class(kind) for kind in OBSERVATION_KINDS}


def event_of(record: Any) -> Event:
    """The event for an observation record (sharing its field storage); an event as it is."""
    if isinstance(record, Event):
        return record
    event = _new(EVENTS[record.kind])
    set_event_fields(event, record.__dict__)
    return event


def event_from(fields: dict[str, Any]) -> Event:
    """The event for a checked record dict (its ``kind`` picks the class; taken, not copied)."""
    event = _new(EVENTS[fields["kind"]])
    set_event_fields(event, fields)
    return event


def observation_of_kind(kind: str, fields: Mapping[str, Any]) -> Observation:
    """The observation record ``publish(kind, **fields)`` names, its fields checked: an unknown
    kind, or a field the record refuses, is an EventError naming the kind and the field."""
    if kind not in OBSERVATION_KINDS:
        raise EventError(f"publish: {kind!r} is not an observation kind; one of "
                         f"{', '.join(sorted(OBSERVATION_KINDS))}", event=kind)
    envelope = {"v", "run_id", "seq", "kind", "time"} & set(fields)
    if envelope:
        raise EventError(f"publish({kind!r}): the bus stamps {', '.join(sorted(envelope))}; "
                         "leave it out", event=kind, field=min(envelope))
    cls = KINDS[kind]
    own = sorted(set(cls.model_fields) - {"v", "run_id", "seq", "kind", "time"})
    unknown = set(fields) - set(own)
    if unknown:
        raise EventError(f"publish({kind!r}): no field {', '.join(sorted(unknown))}; "
                         f"{kind} has {', '.join(own)}", event=kind, field=min(unknown))
    # A batch's step is the bus's counter unless given: a stand-in passes the check, and is
    # then not "given", so publish takes the counter, as for a record built without it.
    stamped = "step" in own and "step" not in fields
    try:
        record = cls(**fields, **({"step": 0} if stamped else {}))
        if stamped:
            record.model_fields_set.discard("step")
        return record  # type: ignore[no-any-return]
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        errors = getattr(exc, "errors", lambda: [])()
        where = ".".join(str(p) for p in errors[0]["loc"]) if errors else None
        message = errors[0]["msg"] if errors else str(exc)
        raise EventError(f"publish({kind!r}): {where or 'a field'}: {message}", event=kind,
                         field=where) from None

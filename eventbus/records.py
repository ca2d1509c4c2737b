"""Every record an event log holds: observations, decisions, outcomes and the header.

One immutable pydantic model per kind. A record's ``kind`` is stored in logs and never renamed.
Every record carries the envelope: ``v`` (the schema's major version), ``run_id``, ``seq``
(strictly increasing within a run, the header is 0), ``kind`` and ``time`` (the bus's wall clock,
seconds since the epoch; plugins read time only from events, never from the clock).

The bus builds the records of its hot path (batches) without pydantic validation: it validates
the few fields itself and then calls :func:`trusted`, which makes the same model instance from an
already checked dict. Everything else (records a user builds, logs read with ``validate=True``)
goes through normal validation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
)

from .metrics import MAX_DEPTH, MAX_INDEX, Metric, coerce_logs, plain

__all__ = [
    "DECISION_KINDS",
    "KINDS",
    "OBSERVATION_KINDS",
    "OUTCOME_KINDS",
    "BATCH_FIELDS",
    "BATCH_KINDS",
    "SCHEMA_VERSION",
    "BatchBegin",
    "BatchEnd",
    "CheckpointDeleted",
    "CheckpointSaved",
    "Decision",
    "DeleteCheckpoint",
    "EpochBegin",
    "EpochEnd",
    "Header",
    "Observation",
    "Outcome",
    "PluginFailed",
    "PluginSpec",
    "PredictBatchBegin",
    "PredictBatchEnd",
    "PredictBegin",
    "PredictEnd",
    "Record",
    "RestoreWeights",
    "Resumed",
    "SaveCheckpoint",
    "SetLearningRate",
    "ShadowDecision",
    "SinkFailed",
    "SnapshotWeights",
    "StopTraining",
    "TestBatchBegin",
    "TestBatchEnd",
    "TestBegin",
    "TestEnd",
    "TrainBegin",
    "TrainEnd",
    "Warning",
    "WeightsRestored",
    "decode_nonfinite",
    "encode_nonfinite",
    "encode_plain",
    "parse_record",
    "restore_nonfinite",
    "same_decision",
    "same_values",
    "spell_nonfinite",
    "trusted",
]

#: The major version of the record schema. Additive changes (a new optional field, a new kind)
#: keep it; a reader refuses a log whose major version is newer than this.
SCHEMA_VERSION = 1

#: The fields of a batch record in the order the bus builds it (and its lines spell it).
BATCH_FIELDS = ("v", "run_id", "seq", "kind", "time", "logs", "epoch", "batch", "step")

#: The per-batch observations: most of a log's records, and what readers that want the run's
#: story (audit) leave out.
BATCH_KINDS = ("batch_begin", "batch_end", "test_batch_begin", "test_batch_end",
               "predict_batch_begin", "predict_batch_end")


def _logs(value: Any, info: ValidationInfo) -> dict[str, Metric]:
    kind = info.data.get("kind", "record")
    return coerce_logs(value, kind)


#: Metric name -> a float, or a list of floats for a vector metric (see ``metrics.to_metric``).
Logs = Annotated[dict[str, Metric], BeforeValidator(_logs)]


PlainDict = Annotated[dict[str, Any], BeforeValidator(plain)]


def _shallow(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` if it is nested no deeper than :data:`~eventbus.metrics.MAX_DEPTH` levels
    (looked at without recursion: a header nested hundreds deep made every reader of it end in
    a RecursionError)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                raise ValueError(f"nested too deeply (more than {MAX_DEPTH} levels)")
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict)
                                                  else item))
    return value


#: A header's data kept as given (not made plain), but no deeper than a PlainDict may be.
ShallowDict = Annotated[dict[str, Any], AfterValidator(_shallow)]

#: An epoch, batch, step or seq a record refers to: 0 or more and within 64 bits, the bounds
#: the bus checks as it records (``metrics.to_index``). A log read back is held to them too, so
#: a crafted ``epoch`` of -4 or 2**64-1 is a ``LogCorruptError`` naming the field, not a
#: failure inside a plugin that replays it.
Index = Annotated[int, Field(ge=0, le=MAX_INDEX)]


class Record(BaseModel):
    """The envelope every record shares."""

    # Each kind's validator is built the first time it is used, not at import: building all of
    # them was most of ``import eventbus``, and a run validates only a few kinds (the batch
    # path makes its records with ``trusted``).
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    v: int = SCHEMA_VERSION
    run_id: str = ""
    seq: int = -1
    kind: str
    time: float = 0.0

    #: The record's group: "observation", "decision", "outcome" or "header".
    category: ClassVar[str] = "record"


# --- observations: what the training loop reports ----------------------------------------------


#: Event class (``eventbus.events``) -> the record class it carries the fields of.
EVENT_RECORDS: dict[type, type[Record]] = {}


class _ObservationClass(type(BaseModel)):  # type: ignore[misc]
    """The metaclass of the observation records: an event of a kind (what hooks receive, see
    :mod:`eventbus.events`) is an instance of its record class and of ``Observation``, as the
    record itself is. pydantic's own ``isinstance`` admits no virtual subclasses."""

    def __instancecheck__(cls, instance: Any) -> bool:
        if type.__instancecheck__(cls, instance):
            return True
        record_class = EVENT_RECORDS.get(type(instance))
        return record_class is not None and type.__subclasscheck__(cls, record_class)


class Observation(Record, metaclass=_ObservationClass):
    """Something the training loop saw. ``logs`` maps metric names to floats (Keras's word), or
    to lists of floats for vector metrics (one value per class, ...)."""

    category: ClassVar[str] = "observation"
    logs: Logs = Field(default_factory=dict)


class TrainBegin(Observation):
    kind: Literal["train_begin"] = "train_begin"
    #: The run's parameters, as Keras's ``callback.params`` (epochs, steps, verbose, ...).
    params: PlainDict = Field(default_factory=dict)


class TrainEnd(Observation):
    kind: Literal["train_end"] = "train_end"


class EpochBegin(Observation):
    kind: Literal["epoch_begin"] = "epoch_begin"
    epoch: Index


class EpochEnd(Observation):
    kind: Literal["epoch_end"] = "epoch_end"
    epoch: Index


class BatchBegin(Observation):
    """A training batch starts. ``batch`` counts within the epoch, ``step`` across epochs."""

    kind: Literal["batch_begin"] = "batch_begin"
    epoch: Index | None = None
    batch: Index
    step: Index


class BatchEnd(Observation):
    kind: Literal["batch_end"] = "batch_end"
    epoch: Index | None = None
    batch: Index
    step: Index


class TestBegin(Observation):
    kind: Literal["test_begin"] = "test_begin"
    epoch: Index | None = None


class TestEnd(Observation):
    kind: Literal["test_end"] = "test_end"
    epoch: Index | None = None


class TestBatchBegin(Observation):
    kind: Literal["test_batch_begin"] = "test_batch_begin"
    epoch: Index | None = None
    batch: Index


class TestBatchEnd(Observation):
    kind: Literal["test_batch_end"] = "test_batch_end"
    epoch: Index | None = None
    batch: Index


class PredictBegin(Observation):
    kind: Literal["predict_begin"] = "predict_begin"


class PredictEnd(Observation):
    kind: Literal["predict_end"] = "predict_end"


class PredictBatchBegin(Observation):
    kind: Literal["predict_batch_begin"] = "predict_batch_begin"
    batch: Index


class PredictBatchEnd(Observation):
    kind: Literal["predict_batch_end"] = "predict_batch_end"
    batch: Index


# --- decisions: what a plugin asks for ----------------------------------------------------------


class Decision(Record):
    """What a plugin asks the bus to do, with the reason a person reads and the evidence behind it.

    A plugin may leave ``source``, ``cause_seq`` and ``epoch`` out: the bus fills them in from the
    plugin's registered name and the event being handled.
    """

    category: ClassVar[str] = "decision"
    source: str = ""
    reason: str
    #: A stable machine-readable label for the rule that fired, e.g. ``patience_exhausted``.
    code: str | None = None
    evidence: PlainDict = Field(default_factory=dict)
    cause_seq: Index | None = None
    epoch: Index | None = None


class StopTraining(Decision):
    kind: Literal["stop_training"] = "stop_training"


class SetLearningRate(Decision):
    kind: Literal["set_learning_rate"] = "set_learning_rate"
    #: The new rate: a finite number, 0 or more.
    value: Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
    previous: float | None = None


class SaveCheckpoint(Decision):
    kind: Literal["save_checkpoint"] = "save_checkpoint"
    path: str
    weights_only: bool = False


class DeleteCheckpoint(Decision):
    """Remove a checkpoint file an earlier ``save_checkpoint`` of the same plugin wrote (a
    ``save_top_k`` file no longer among the best); the checkpoint writer removes it."""

    kind: Literal["delete_checkpoint"] = "delete_checkpoint"
    path: str


class SnapshotWeights(Decision):
    """Keep a copy of the model's current weights under ``tag`` (e.g. the best epoch so far)."""

    kind: Literal["snapshot_weights"] = "snapshot_weights"
    tag: str


class RestoreWeights(Decision):
    """Put the weights kept under ``tag`` back into the model."""

    kind: Literal["restore_weights"] = "restore_weights"
    tag: str


# --- outcomes and faults: what happened at the edge -------------------------------------------


class Outcome(Record):
    category: ClassVar[str] = "outcome"
    #: The plugin, sink or bus component the outcome comes from.
    source: str = ""
    cause_seq: Index | None = None
    epoch: Index | None = None


class CheckpointSaved(Outcome):
    kind: Literal["checkpoint_saved"] = "checkpoint_saved"
    path: str
    size: int
    sha256: str


class CheckpointDeleted(Outcome):
    """The writer removed the file a ``delete_checkpoint`` named: the bytes it had saved there
    (``sha256`` as its ``checkpoint_saved`` recorded it)."""

    kind: Literal["checkpoint_deleted"] = "checkpoint_deleted"
    path: str
    sha256: str


class WeightsRestored(Outcome):
    kind: Literal["weights_restored"] = "weights_restored"
    tag: str


class ShadowDecision(Outcome):
    """What a shadow policy (:mod:`eventbus.shadow`) decided: recorded, never applied."""

    kind: Literal["shadow_decision"] = "shadow_decision"
    #: The policy, with the parameters that differ from its defaults: ``EarlyStopping(patience=3)``.
    policy: str
    #: The kind of the decision it made (``stop_training``, ``set_learning_rate``, ...).
    decision: str
    reason: str
    code: str | None = None
    evidence: PlainDict = Field(default_factory=dict)
    #: The learning rate a ``set_learning_rate`` decision asked for.
    value: float | None = None


class PluginFailed(Outcome):
    kind: Literal["plugin_failed"] = "plugin_failed"
    plugin: str
    event: str
    error: str
    message: str


class SinkFailed(Outcome):
    kind: Literal["sink_failed"] = "sink_failed"
    sink: str
    event: str | None = None
    error: str
    message: str


class Warning(Outcome):  # noqa: A001 - the record kind is "warning"; users import it qualified
    kind: Literal["warning"] = "warning"
    message: str
    details: PlainDict = Field(default_factory=dict)

    @property
    def text(self) -> str:
        """The warning as a person reads it: its source, then its message (many messages name
        their plugin already, as Keras's do: not twice)."""
        source = self.source or "bus"
        return self.message if self.message.startswith(f"{source}:") else \
            f"{source}: {self.message}"


class Resumed(Outcome):
    """The run went on from an existing log after a crash or a restart."""

    kind: Literal["resumed"] = "resumed"
    from_seq: Index
    initial_epoch: Index


# --- the header ----------------------------------------------------------------------------------


class PluginSpec(BaseModel):
    """One plugin as the header records it: enough to rebuild it through the registry."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    name: str
    params: ShallowDict = Field(default_factory=dict)
    #: False when a parameter could not be recorded (a Python callable): replay needs an instance.
    recordable: bool = True
    #: True for plugins that write files or talk to the network; replay leaves them out.
    side_effects: bool = False
    #: Where the class lives, for people reading the log; never imported from the log.
    cls: str = ""
    #: The name the plugin's records carry when it differs from ``name`` (``"EarlyStopping#2"``
    #: for a second EarlyStopping on one bus).
    label: str = ""
    #: The plugin's event filters (``eventbus.filters``), each as its fields.
    filters: list[dict[str, Any]] = Field(default_factory=list)


class Header(Record):
    category: ClassVar[str] = "header"
    kind: Literal["header"] = "header"
    created: str
    library: str
    plugins: list[PluginSpec] = Field(default_factory=list)
    meta: ShallowDict = Field(default_factory=dict)


# --- kinds and parsing ---------------------------------------------------------------------------

_ALL: tuple[type[Record], ...] = (
    TrainBegin, TrainEnd, EpochBegin, EpochEnd, BatchBegin, BatchEnd,
    TestBegin, TestEnd, TestBatchBegin, TestBatchEnd,
    PredictBegin, PredictEnd, PredictBatchBegin, PredictBatchEnd,
    StopTraining, SetLearningRate, SaveCheckpoint, DeleteCheckpoint, SnapshotWeights,
    RestoreWeights, CheckpointSaved, CheckpointDeleted, WeightsRestored, ShadowDecision,
    PluginFailed, SinkFailed, Warning, Resumed,
    Header,
)

#: Record kind -> model class.
KINDS: dict[str, type[Record]] = {cls.model_fields["kind"].default: cls for cls in _ALL}
OBSERVATION_KINDS = tuple(k for k, c in KINDS.items() if c.category == "observation")
DECISION_KINDS = tuple(k for k, c in KINDS.items() if c.category == "decision")
OUTCOME_KINDS = tuple(k for k, c in KINDS.items() if c.category == "outcome")

AnyRecord = Annotated[Union[_ALL], Field(discriminator="kind")]  # type: ignore[valid-type]
_ADAPTER: TypeAdapter[Record] = TypeAdapter(AnyRecord, config=ConfigDict(defer_build=True))
_FIELDS = {cls: frozenset(cls.model_fields) for cls in _ALL}


def parse_record(data: Mapping[str, Any]) -> Record:
    """Validate a record dict (as stored in a log) into its model; raises pydantic's error."""
    return _ADAPTER.validate_python(data)


def _trusted_class(cls: type[Record]) -> type[Record]:
    """A subclass of ``cls`` whose instances need only their ``__dict__`` set.

    pydantic keeps three more per-instance slots (fields set, extra, private); setting them costs
    as much again as making the object. For records the bus has already checked they are always
    the same, so this subclass holds them at class level. It is not built by pydantic's
    metaclass (no new schema): validation, serialisation, ``repr`` and ``==`` are ``cls``'s, and
    copies come back as plain ``cls`` instances. Never validated into: only :func:`trusted`
    makes instances.
    """

    def untrusted(self: Record) -> Record:
        return cls.model_construct(_fields_set=None, **self.__dict__)

    namespace = {
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__slots__": (),
        "__pydantic_fields_set__": _FIELDS[cls],
        "__pydantic_extra__": None,
        "__pydantic_private__": None,
        # pydantic compares models by their generic origin: make this class compare as ``cls``.
        "__pydantic_generic_metadata__": {"origin": cls, "args": (), "parameters": ()},
        "__copy__": untrusted,
        "__deepcopy__": lambda self, memo=None: untrusted(self).__deepcopy__(memo),
        "model_copy": lambda self, *, update=None, deep=False: untrusted(self).model_copy(
            update=update, deep=deep),
    }
    return type.__new__(type(cls), cls.__name__, (cls,), namespace)  # type: ignore[return-value]


#: Record class -> its trusted subclass (see :func:`trusted`).
TRUSTED: dict[type[Record], type[Record]] = {cls: _trusted_class(cls) for cls in _ALL}
_new = object.__new__
#: pydantic's own ``__dict__`` slot setter: the cheapest way to give a model instance its fields
#: (a third cheaper than ``object.__setattr__(obj, "__dict__", fields)``).
set_model_dict = next(vars(c)["__dict__"] for c in BaseModel.__mro__
                      if "__dict__" in vars(c)).__set__


def trusted(cls: type[Record], fields: dict[str, Any]) -> Record:
    """Make a ``cls`` record from a dict whose fields are already checked, without validation.

    ``fields`` becomes the instance's field storage and must hold exactly the fields of ``cls``.
    The result is an instance of ``cls`` (``isinstance`` holds, it compares, dumps and prints as
    one). This is what keeps the per-batch path free of pydantic validation.
    """
    obj = _new(TRUSTED[cls])
    set_model_dict(obj, fields)
    return obj


# --- non-finite floats ---------------------------------------------------------------------------
#
# JSON has no NaN or infinity and orjson writes them as null. Logs store them as the strings
# "NaN", "Infinity" and "-Infinity" (the spellings of JavaScript and Python's json module). On
# reading, those strings become floats again in float fields: metric values (``logs``), ``value``
# and ``previous``, and anywhere inside ``evidence``, ``details``, ``params`` and ``meta``. So
# that a string that is one of those words (an evidence value "NaN", a meta note "Infinity")
# comes back a string, it is written there with a "~" in front, as is one that already starts
# with "~" and goes on with one of them; reading takes one "~" off.

_NONFINITE_TEXT = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_FLOAT_FIELDS = ("value", "previous")
_FLOAT_CONTAINERS = ("logs", "evidence", "details", "params", "meta")


def _escaped(text: str) -> bool:
    """Whether ``text`` is written with a "~" in front: a word that means a float, after any
    number of "~"."""
    return text.lstrip("~") in _NONFINITE_TEXT


def _encode(value: Any, escape: bool) -> Any:
    if type(value) is float:
        if value != value:
            return "NaN"
        if value in (math.inf, -math.inf):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if type(value) is str:
        return "~" + value if escape and _escaped(value) else value
    if isinstance(value, dict):
        return {k: _encode(v, escape) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v, escape) for v in value]
    if isinstance(value, float):
        return _encode(float(value), escape)
    if isinstance(value, str):
        return _encode(str(value), escape)
    return value


def encode_nonfinite(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``record`` with every non-finite float replaced by its string spelling, and in
    the fields :func:`decode_nonfinite` reads back, every string that spells one escaped: what
    the log stores."""
    return {name: _encode(value, name in _FLOAT_CONTAINERS or name in _FLOAT_FIELDS)
            for name, value in record.items()}


def writable_text(value: Any) -> Any:
    """``value`` with every string (keys too, at any depth) that holds a lone surrogate (a
    path ``os.fsdecode`` made of undecodable bytes, in a fault's message) written with the
    surrogate as a backslash escape: text a log can hold. The bus refuses such text in what a
    loop gives it; this keeps a record made from an error message writable."""
    if isinstance(value, str):
        return value if value.isascii() else \
            value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {writable_text(k): writable_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [writable_text(v) for v in value]
    return value


def encode_plain(value: Any) -> Any:
    """``value`` (plain data) as :func:`restore_nonfinite` reads it back: every non-finite float
    spelled, every string that spells one escaped, at any depth."""
    return _encode(value, True)


def spell_nonfinite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its string spelling and nothing else
    changed: JSON for people and other programs, never read back here."""
    return _encode(value, False)


def _restore_text(text: str) -> Any:
    if text in _NONFINITE_TEXT:
        return _NONFINITE_TEXT[text]
    return text[1:] if text[:1] == "~" and _escaped(text) else text


def restore_nonfinite(value: Any, _depth: int = 0) -> Any:
    """``value`` with every "NaN", "Infinity" and "-Infinity" string in it made a float again,
    and every escaped string (see :func:`encode_plain`) given back as it was, to the depth a
    record may hold; what is nested deeper is left as it is, for validation to refuse."""
    if type(value) is str:
        return _restore_text(value)
    if _depth > MAX_DEPTH:
        return value
    if type(value) is dict:
        return {k: restore_nonfinite(v, _depth + 1) for k, v in value.items()}
    if type(value) is list:
        return [restore_nonfinite(v, _depth + 1) for v in value]
    return value


def decode_nonfinite(record: dict[str, Any]) -> dict[str, Any]:
    """Undo :func:`encode_nonfinite` in the float fields of ``record`` (changes it in place)."""
    for name in _FLOAT_CONTAINERS:
        inner = record.get(name)
        if inner:
            record[name] = restore_nonfinite(inner)
    for name in _FLOAT_FIELDS:
        if type(record.get(name)) is str:
            record[name] = _restore_text(record[name])
    return record


def same_values(a: Any, b: Any) -> bool:
    """Equality in which NaN equals NaN, at any depth of dicts, lists and records.

    Logs hold NaN legitimately, and ``nan != nan``: this is how to compare what was recorded
    with what was read back or recomputed. Records compare by kind and fields (one made without
    validation is a trusted subclass of its model, the same record).
    """
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (a != a and b != b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_values(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_values(x, y) for x, y in zip(a, b))
    if isinstance(a, BaseModel) and isinstance(b, BaseModel):
        return getattr(a, "kind", None) == getattr(b, "kind", None) and \
            same_values(a.model_dump(), b.model_dump())
    return bool(a == b)


# Fields that differ between a live run and its replay without meaning anything.
_ENVELOPE = frozenset({"v", "run_id", "seq", "time"})


def same_decision(a: Decision, b: Decision) -> bool:
    """Equal but for the envelope (run, seq, time); NaN equals NaN. How replay and resume
    compare a recomputed decision with a recorded one."""
    if a.kind != b.kind:
        return False
    da = {k: v for k, v in a.__dict__.items() if k not in _ENVELOPE}
    db = {k: v for k, v in b.__dict__.items() if k not in _ENVELOPE}
    return same_values(da, db)

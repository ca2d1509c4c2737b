"""What a hook receives (``eventbus.events``): a plain, immutable event with its record's fields,
the same type live, replayed and resumed, equal to the record the log holds, and read back as
that record by the reader."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, Event, Plugin, hookimpl, read_log, replay
from eventbus.events import EVENTS, FrozenEventError
from eventbus.records import KINDS, OBSERVATION_KINDS, BatchEnd, EpochEnd, Observation, Record

from hypothesis_profiles import examples


class Seen(Plugin):
    """Keeps every observation event its hooks receive."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def _take(self, event: Any) -> None:
        self.events.append(event)

    @hookimpl
    def on_train_begin(self, event: Any) -> None:
        self._take(event)

    @hookimpl
    def on_epoch_begin(self, event: Any) -> None:
        self._take(event)

    @hookimpl
    def on_batch_begin(self, event: Any) -> None:
        self._take(event)

    @hookimpl
    def on_batch_end(self, event: Any) -> None:
        self._take(event)

    @hookimpl
    def on_epoch_end(self, event: Any) -> None:
        self._take(event)

    @hookimpl
    def on_test_batch_end(self, event: Any) -> None:
        self._take(event)

    @hookimpl
    def on_train_end(self, event: Any) -> None:
        self._take(event)


def train(bus: Bus, losses: list[list[float]]) -> None:
    bus.train_begin({"epochs": len(losses)})
    for epoch, batches in enumerate(losses):
        bus.epoch_begin(epoch)
        for i, loss in enumerate(batches):
            bus.batch_begin(i)
            bus.batch_end(i, {"loss": loss, "acc": 0.5})
        bus.test_batch_end(0, {"loss": 1.0})
        bus.epoch_end(epoch, {"loss": sum(batches) / max(len(batches), 1)})
    bus.train_end()


def test_every_observation_kind_has_an_event_class_with_its_record_class() -> None:
    assert set(EVENTS) == set(OBSERVATION_KINDS)
    for kind, cls in EVENTS.items():
        assert issubclass(cls, Event)
        assert cls.kind == kind
        assert cls.record_class is KINDS[kind]


def test_hooks_receive_events_equal_to_the_records_the_log_holds(tmp_path: Any) -> None:
    seen = Seen()
    with Bus([seen], log=tmp_path / "run.jsonl", learning_rate=0.1) as bus:
        train(bus, [[0.9, 0.8], [0.7]])
    recorded = {r.seq: r for r in read_log(tmp_path / "run.jsonl")
                if isinstance(r, Observation)}
    assert len(seen.events) == len(recorded) == 14
    for event in seen.events:
        assert type(event) is EVENTS[event.kind]
        assert isinstance(event, Event) and isinstance(event, Observation)
        assert isinstance(event, KINDS[event.kind]) and not isinstance(event, Record)
        assert not any(isinstance(event, cls) for kind, cls in KINDS.items()
                       if kind != event.kind)
        record = recorded[event.seq]
        assert event == record and record == event  # both ways: pydantic defers to the event
        assert event.model_dump() == record.model_dump()
        assert event.model_dump_json() == record.model_dump_json()
        assert dict(event) == dict(record) and type(event).model_fields == type(record).model_fields
        assert repr(event) == repr(record) and str(event) == str(record)
        assert isinstance(event.record(), KINDS[event.kind]) and event.record() == record
    batch = next(e for e in seen.events if e.kind == "batch_end")
    assert (batch.epoch, batch.batch, batch.step, batch.logs) == (0, 0, 0,
                                                                  {"loss": 0.9, "acc": 0.5})
    epoch = next(e for e in seen.events if e.kind == "epoch_end")
    assert "learning_rate" not in epoch.logs  # no plugin sets the rate (Keras's rule)


def test_an_event_is_immutable_and_says_which_field_of_which_event() -> None:
    seen = Seen()
    with Bus([seen]) as bus:
        bus.train_begin({})
        bus.epoch_begin(0)
        bus.batch_end(0, {"loss": 1.0})
    event = seen.events[-1]
    with pytest.raises(FrozenEventError, match=r"batch_end event \(seq 3\): cannot set 'logs'"):
        event.logs = {}
    with pytest.raises(AttributeError, match="cannot delete 'batch'"):
        del event.batch
    with pytest.raises(AttributeError):  # a field its kind does not have
        event.params  # noqa: B018
    assert event.logs == {"loss": 1.0} and event.batch == 0
    with pytest.raises(TypeError):
        hash(event)  # as a record's: its logs are a dict


def test_copies_are_events_of_their_own() -> None:
    seen = Seen()
    with Bus([seen]) as bus:
        bus.train_begin({})
        bus.epoch_begin(0)
        bus.epoch_end(0, {"loss": 1.0})
    event = seen.events[-1]
    changed = event.model_copy(update={"logs": {"loss": 2.0}})
    assert type(changed) is type(event) and changed.logs == {"loss": 2.0}
    assert event.logs == {"loss": 1.0} and changed != event
    deep = copy.deepcopy(event)
    assert deep == event and deep.logs is not event.logs
    shallow = copy.copy(event)
    assert shallow == event and shallow is not event
    with pytest.raises(AttributeError, match="no field 'batch'"):
        event.model_copy(update={"batch": 1})


def test_a_keras_named_hook_called_with_an_event_runs_the_hook() -> None:
    """A plugin's hook named after a Keras method answers both callers: an event goes to the
    hook (as a record does), Keras's ``(epoch, logs)`` to a fit."""

    class Stopper(Plugin):
        def __init__(self) -> None:
            self.epochs: list[int] = []

        @hookimpl
        def on_epoch_end(self, event: Any) -> None:
            self.epochs.append(event.epoch)

    seen, stopper = Seen(), Stopper()
    with Bus([seen, stopper]) as bus:
        bus.train_begin({})
        bus.epoch_begin(0)
        bus.epoch_end(0, {"loss": 1.0})
    event = seen.events[-1]
    stopper.on_epoch_end(event)
    stopper.on_epoch_end(EpochEnd(epoch=4))
    assert stopper.epochs == [0, 0, 4]


def test_publish_takes_an_event_a_hook_received() -> None:
    seen, other = Seen(), Seen()
    with Bus([seen]) as bus:
        bus.train_begin({})
        bus.epoch_begin(0)
        bus.batch_end(0, {"loss": 0.5})
    with Bus([other]) as forwarded:
        forwarded.train_begin({})
        forwarded.epoch_begin(0)
        forwarded.publish(seen.events[-1])
    assert other.events[-1].logs == {"loss": 0.5} and other.events[-1].batch == 0


def test_held_tensor_logs_are_read_when_the_event_is_dumped(tmp_path: Any) -> None:
    torch = pytest.importorskip("torch")
    seen = Seen()
    with Bus([seen], log=tmp_path / "run.jsonl") as bus:
        bus.train_begin({})
        bus.epoch_begin(0)
        bus.batch_end(0, {"loss": torch.tensor(0.25)})
        event = seen.events[-1]
        assert event.model_dump()["logs"] == {"loss": 0.25}
        assert event == BatchEnd(**event.model_dump())


finite = st.floats(-1e6, 1e6, allow_nan=False)


@examples(0.5, function_fixture=True)
@given(losses=st.lists(st.lists(finite, min_size=0, max_size=3), min_size=1, max_size=3))
def test_replay_hands_plugins_the_same_events_as_the_live_run(tmp_path: Any,
                                                               losses: list[list[float]]) -> None:
    """Live and fed again, a plugin sees one type with the same fields: what it decides
    cannot depend on which."""
    path = tmp_path / f"run-{abs(hash(str(losses)))}.jsonl"
    path.unlink(missing_ok=True)
    live = Seen()
    with Bus([live], log=path) as bus:
        train(bus, losses)
    again = Seen()
    replay(path, plugins=[again])
    assert [type(e) for e in again.events] == [type(e) for e in live.events]
    assert again.events == live.events
    assert all(not math.isnan(e.time) for e in again.events)

"""Metric tensors in batch logs are read late (issue 17, target 2): no host conversion per batch
unless a plugin reads that batch's values, one bulk conversion at each flush point, and a log
that holds every batch's exact float in seq order, as if the floats had been given.

Conversions are counted with a ``torch.Tensor`` subclass whose ``item``, ``tolist`` and ``cpu``
count their calls (each is a device sync on an accelerator); the log is read back with the
library's own reader."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, Plugin, hookimpl, read_log
from eventbus.engine import HOLD_RECORDS
from eventbus.records import StopTraining, WeightsRestored
from plugins import TerminateOnNaN

from hypothesis_profiles import examples

CALLS: Counter[str] = Counter()


class Counted(torch.Tensor):
    """A tensor that counts the calls that copy its value to the host."""

    def item(self) -> Any:
        CALLS["item"] += 1
        return super().item()

    def tolist(self) -> Any:
        CALLS["tolist"] += 1
        return super().tolist()

    def cpu(self, *args: Any, **kwargs: Any) -> Any:
        CALLS["cpu"] += 1
        return super().cpu(*args, **kwargs)


def counted(value: float, dtype: torch.dtype = torch.float32) -> Counted:
    return torch.tensor(value, dtype=dtype).as_subclass(Counted)


def exact(tensor: torch.Tensor) -> float:
    """The float ``.item()`` gives, read without counting."""
    return torch.Tensor.item(tensor.as_subclass(torch.Tensor))


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()


def conversions() -> int:
    return sum(CALLS.values())


def batch_logs(path: Any) -> list[dict[str, Any]]:
    return [dict(rec.logs) for rec in read_log(path) if rec.kind == "batch_end"]


class Reader(Plugin):
    """Reads something of every batch_end: its values (``values=True``) or only its keys."""

    def __init__(self, values: bool):
        self.values = values
        self.seen: list[Any] = []

    @hookimpl
    def on_batch_end(self, event: Any) -> None:
        logs = event.logs
        self.seen.append(logs["loss"] if self.values else ("loss" in logs, len(logs),
                                                             sorted(logs)))


def test_no_conversion_per_batch_then_one_bulk_conversion_at_epoch_end(tmp_path: Any) -> None:
    log = tmp_path / "run.jsonl"
    bus = Bus(log=log)
    bus.train_begin({"epochs": 1})
    bus.epoch_begin(0)
    losses = [counted(1.0 / (i + 3)) for i in range(10)]
    for i, loss in enumerate(losses):
        bus.batch_begin(i)
        bus.batch_end(i, {"loss": loss, "size": 32.0})
        assert conversions() == 0, f"batch {i}"
    bus.epoch_end(0, {"loss": 0.5})
    assert CALLS == {"tolist": 1}  # the ten losses, stacked, read once
    bus.train_end()
    bus.close()
    assert batch_logs(log) == [{"loss": exact(t), "size": 32.0} for t in losses]
    assert all(type(logs["loss"]) is float for logs in batch_logs(log))


def test_a_flush_point_every_so_many_records(tmp_path: Any) -> None:
    log = tmp_path / "run.jsonl"
    bus = Bus(log=log)
    bus.train_begin({"epochs": 1})
    bus.epoch_begin(0)
    losses = [counted(i / 7.0) for i in range(3 * HOLD_RECORDS // 2)]
    converted_at = []
    for i, loss in enumerate(losses):
        before = conversions()
        bus.batch_begin(i)
        bus.batch_end(i, {"loss": loss})
        if conversions() != before:
            converted_at.append((i, conversions() - before))
    # A batch's begin and end wait together once something waits: a release, one conversion,
    # when HOLD_RECORDS records wait (a begin that joins counts), every 64 batches.
    every = HOLD_RECORDS // 2
    assert converted_at == [(every, 1), (2 * every, 1)]
    bus.train_end()
    bus.close()
    assert [logs["loss"] for logs in batch_logs(log)] == [exact(t) for t in losses]


def test_a_plugin_reading_the_value_converts_that_batch_and_only_it(tmp_path: Any) -> None:
    reader = Reader(values=True)
    bus = Bus([reader], log=tmp_path / "run.jsonl")
    bus.train_begin({"epochs": 1})
    bus.epoch_begin(0)
    losses = [counted(0.25 * i) for i in range(5)]
    for i, loss in enumerate(losses):
        bus.batch_end(i, {"loss": loss})
        assert CALLS == {"item": i + 1}
    assert reader.seen == [exact(t) for t in losses]
    bus.close()
    assert CALLS == {"item": 5}  # what was read is not read again
    assert [logs["loss"] for logs in batch_logs(tmp_path / "run.jsonl")] == reader.seen


def test_a_plugin_reading_only_the_keys_converts_nothing(tmp_path: Any) -> None:
    reader = Reader(values=False)
    bus = Bus([reader], log=tmp_path / "run.jsonl")
    bus.train_begin({"epochs": 1})
    bus.epoch_begin(0)
    for i in range(5):
        bus.batch_end(i, {"loss": counted(0.5), "acc": 0.75})
    assert conversions() == 0
    assert reader.seen == [(True, 2, ["acc", "loss"])] * 5
    bus.close()
    assert CALLS == {"tolist": 1}


def test_terminate_on_nan_stops_at_the_nan_batch(tmp_path: Any) -> None:
    log = tmp_path / "run.jsonl"
    bus = Bus([TerminateOnNaN(verbose=0)], log=log)
    bus.train_begin({"epochs": 1})
    bus.epoch_begin(0)
    values = [0.5, 0.25, math.nan, 0.125]
    decisions = []
    for i, value in enumerate(values):
        bus.batch_begin(i)
        decisions.append(bus.batch_end(i, {"loss": counted(value)}))
        if decisions[-1]:
            break
    assert [bool(d) for d in decisions] == [False, False, True]
    assert isinstance(decisions[2][0], StopTraining)
    assert CALLS == {"item": 3}  # it reads every batch it sees: one conversion each
    bus.close()
    records = list(read_log(log))
    kinds = [(rec.kind, getattr(rec, "batch", None)) for rec in records]
    # the NaN batch is written before the decision it caused, in seq order
    assert kinds.index(("batch_end", 2)) < kinds.index(("stop_training", None))
    assert [rec.seq for rec in records] == sorted(rec.seq for rec in records)
    logged = [logs["loss"] for logs in batch_logs(log)]
    assert logged[:2] == [0.5, 0.25] and math.isnan(logged[2])


def test_tensors_with_grad_are_held_detached_and_integers_read_at_once(tmp_path: Any) -> None:
    bus = Bus(log=tmp_path / "run.jsonl")
    bus.train_begin({"epochs": 1})
    bus.epoch_begin(0)
    weight = torch.tensor(2.0, requires_grad=True)
    loss = (weight * 0.5).as_subclass(Counted)
    assert loss.requires_grad
    bus.batch_end(0, {"loss": loss, "count": torch.tensor(7).as_subclass(Counted)})
    assert CALLS == {"item": 1}  # the integer: not a float tensor, read as before
    held = bus.recorder.held[-1]["logs"]
    assert not held.logs["loss"].requires_grad
    bus.close()
    assert batch_logs(tmp_path / "run.jsonl") == [{"loss": 1.0, "count": 7.0}]


def test_a_sink_other_than_a_line_log_taking_batches_gets_floats_at_once(tmp_path: Any) -> None:
    # CSVLogger is a plugin; a sink that takes every record and is not a line buffer:
    class Sink:
        def __init__(self) -> None:
            self.records: list[dict[str, Any]] = []

        def write(self, record: dict[str, Any]) -> None:
            self.records.append(record)

        def flush(self) -> None:
            pass

        def close(self) -> None:
            pass

    sink = Sink()
    bus = Bus(log=tmp_path / "run.jsonl")
    bus.add_sink(sink)
    bus.train_begin({"epochs": 1})
    bus.epoch_begin(0)
    bus.batch_end(0, {"loss": counted(0.5)})
    assert CALLS == {"item": 1}
    assert sink.records[-1]["logs"] == {"loss": 0.5}
    bus.close()


def test_evaluation_and_prediction_batches_are_held_as_training_ones(tmp_path: Any) -> None:
    log = tmp_path / "run.jsonl"
    bus = Bus(log=log)
    bus.train_begin({"epochs": 1})
    bus.epoch_begin(0)
    bus.batch_end(0, {"loss": 0.5})
    bus.test_begin()
    val_losses = [counted(1.0 / (i + 2)) for i in range(6)]
    for i, loss in enumerate(val_losses):
        bus.test_batch_begin(i)
        bus.test_batch_end(i, {"val_loss": loss})
        assert conversions() == 0, f"evaluation batch {i}"
    bus.test_end({"val_loss": 0.25})
    assert CALLS == {"tolist": 1}  # the six, read once as the evaluation ends
    bus.epoch_end(0, {"loss": 0.5, "val_loss": 0.25})
    bus.train_end()
    bus.predict_begin()
    outputs = [counted(i / 3.0) for i in range(4)]
    for i, out in enumerate(outputs):
        bus.predict_batch_begin(i)
        bus.predict_batch_end(i, {"mean": out})
    assert CALLS == {"tolist": 1}
    bus.predict_end()
    assert CALLS == {"tolist": 2}
    bus.close()
    records = list(read_log(log))
    assert [rec.seq for rec in records] == list(range(len(records)))
    assert [(rec.epoch, rec.batch, rec.logs) for rec in records if rec.kind == "test_batch_end"] \
        == [(0, i, {"val_loss": exact(t)}) for i, t in enumerate(val_losses)]
    assert [(rec.batch, rec.logs) for rec in records if rec.kind == "predict_batch_end"] \
        == [(i, {"mean": exact(t)}) for i, t in enumerate(outputs)]
    kinds = [rec.kind for rec in records]
    assert kinds.index("test_end") > max(i for i, k in enumerate(kinds) if k == "test_batch_end")


def test_an_evaluation_batch_a_plugin_reads_is_converted_then_and_only_it(tmp_path: Any) -> None:
    seen: list[float] = []

    class ValReader(Plugin):
        @hookimpl
        def on_test_batch_end(self, event: Any) -> None:
            seen.append(event.logs["val_loss"])

    bus = Bus([ValReader()], log=tmp_path / "run.jsonl")
    bus.test_begin()
    losses = [counted(0.125 * (i + 1)) for i in range(3)]
    for i, loss in enumerate(losses):
        bus.test_batch_end(i, {"val_loss": loss, "other": counted(1.0)})
        assert conversions() == i + 1  # the batch read: its two tensors at once
    bus.test_end()
    assert seen == [exact(t) for t in losses]
    bus.close()
    assert conversions() == 3  # what was read is not read again
    assert [rec.logs for rec in read_log(tmp_path / "run.jsonl")
            if rec.kind == "test_batch_end"] == [{"val_loss": exact(t), "other": 1.0}
                                                 for t in losses]


def test_evaluation_batches_to_a_sink_other_than_a_line_log_are_read_at_once(
        tmp_path: Any) -> None:
    bus = Bus(log=tmp_path / "run.parquet")  # Parquet takes records, not lines
    bus.test_begin()
    bus.test_batch_end(0, {"val_loss": counted(0.5)})
    assert CALLS == {"item": 1}
    bus.test_end()
    bus.close()
    assert [rec.logs for rec in read_log(tmp_path / "run.parquet")
            if rec.kind == "test_batch_end"] == [{"val_loss": 0.5}]


@given(st.lists(st.sampled_from(["tensor", "float", "begin", "epoch", "report", "sink",
                                "flush", "val_tensor", "val_begin", "val_float", "evaluated",
                                "predicted"]),
                max_size=40),
       st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=40,
                max_size=40))
@examples(0.3, function_fixture=False)
def test_the_log_is_what_floats_given_at_once_would_have_written(
        tmp_path_factory: Any, script: list[str], values: list[float]) -> None:
    """Whatever events come between tensor batches, both logs hold the same records in the same
    seq order (times aside), every float exact."""
    logs = []
    for as_tensor in (True, False):
        path = tmp_path_factory.mktemp("run") / "run.jsonl"
        bus = Bus(log=path)
        bus.train_begin({"epochs": 1})
        epoch = batch = 0
        bus.epoch_begin(epoch)
        for step, what in enumerate(script):
            value = values[step]
            if what == "tensor":
                bus.batch_end(batch, {"loss": counted(value) if as_tensor else
                                      exact(counted(value)), "n": float(step)})
                batch += 1
            elif what == "float":
                bus.batch_end(batch, {"acc": float(step)})
                batch += 1
            elif what == "begin":
                bus.batch_begin(batch)
            elif what == "epoch":
                bus.epoch_end(epoch)
                epoch, batch = epoch + 1, 0
                bus.epoch_begin(epoch)
            elif what == "report":
                bus.report(WeightsRestored(tag=f"kept {step}"))
            elif what == "sink":  # a log added mid-run: the held records go before it
                bus.add_sink(path.with_suffix(f".{step}.jsonl"))
            elif what == "flush":
                bus.flush()
            elif what == "val_tensor":
                bus.test_batch_end(step, {"val_loss": counted(value) if as_tensor else
                                          exact(counted(value))})
            elif what == "val_begin":
                bus.test_batch_begin(step)
            elif what == "val_float":
                bus.test_batch_end(step, {"val_loss": float(step)})
            elif what == "evaluated":
                bus.test_end({"val_loss": 0.5})
            elif what == "predicted":
                bus.predict_batch_end(step, {"p": counted(value) if as_tensor else
                                             exact(counted(value))})
        bus.train_end()
        bus.close()
        logs.append([{k: v for k, v in rec.model_dump().items() if k not in ("time", "run_id")}
                     for rec in read_log(path) if rec.kind != "header"])
    held, given_floats = logs
    assert [r["seq"] for r in held] == list(range(1, len(held) + 1))
    assert repr(held) == repr(given_floats)  # repr: NaN compares unequal to itself


def test_an_event_dumped_or_copied_by_a_plugin_holds_floats(tmp_path: Any) -> None:
    """pydantic reads a model's field storage directly: a dump, copy or comparison of the event
    reads its tensors first (no serialisation warning, which is an error here)."""
    seen: list[Any] = []

    class Dumper(Plugin):
        @hookimpl
        def on_batch_end(self, event: Any) -> None:
            seen.append((event.model_dump()["logs"], event.model_copy().logs,
                         event.model_dump_json()))

    bus = Bus([Dumper()], log=tmp_path / "run.jsonl")
    bus.train_begin({"epochs": 1})
    bus.epoch_begin(0)
    bus.batch_end(0, {"loss": counted(0.5)})
    assert CALLS == {"item": 1}
    assert seen[0][:2] == ({"loss": 0.5}, {"loss": 0.5})
    assert '"logs":{"loss":0.5}' in seen[0][2]
    bus.close()

"""Shadow policies: decide on the live events, recorded as shadow decisions, never applied."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventbus import Bus, ConfigError, NumpyModel, RunWarning, replay
from eventbus.filters import every
from eventbus.log import read_log
from eventbus.records import ShadowDecision
from eventbus.shadow import summarise
from plugins import (
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
)

losses = st.lists(st.floats(0.1, 2.0, allow_nan=False), min_size=2, max_size=25)


def train(log, values, plugins, shadow=None, *, resume=False, start=0, until=None,
          model=None, finish=True):
    bus = Bus(plugins, log=log, shadow=shadow, resume=resume, model=model,
              learning_rate=None if model else 0.1)
    bus.train_begin({"epochs": len(values)})
    for epoch in range(bus.initial_epoch if resume else start, until or len(values)):
        bus.epoch_begin(epoch)
        bus.batch_begin(0)
        bus.batch_end(0, {"loss": values[epoch]})
        bus.epoch_end(epoch, {"val_loss": values[epoch]})
        if bus.stop_training:
            break
    if finish:
        bus.train_end()
    bus.close()
    return bus


def shadows(log):
    return [r for r in read_log(log) if isinstance(r, ShadowDecision)]


@settings(max_examples=40)
@given(losses, st.integers(0, 4))
def test_a_shadow_stops_where_replay_with_that_parameter_stops(tmp_path_factory, values,
                                                               patience):
    log = tmp_path_factory.mktemp("shadow") / "run.jsonl"
    live = train(log, values, [EarlyStopping(patience=100)],
                 shadow=[EarlyStopping(patience=patience)])
    assert not live.stop_training  # the shadow's stop is not applied
    stops = [d for d in shadows(log) if d.decision == "stop_training"]
    what_if = replay(log, overrides={"EarlyStopping": {"patience": patience}})
    assert (stops[0].epoch if stops else None) == what_if.stopped_at
    assert stops[:1] == stops  # it stops once: after it, the shadow run has ended
    assert replay(log, verify=True).ok


@settings(max_examples=25)
@given(losses)
def test_a_shadow_rate_schedule_is_its_own_and_never_reaches_the_model(tmp_path_factory,
                                                                        values):
    log = tmp_path_factory.mktemp("shadow") / "run.jsonl"
    model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
    train(log, values, [], shadow=[ReduceLROnPlateau(patience=1, factor=0.5)], model=model)
    assert model.learning_rate == 0.1
    cuts = [(d.epoch, d.value) for d in shadows(log) if d.decision == "set_learning_rate"]
    # The same plugin replayed alone on the same events makes the same cuts.
    alone = tmp_path_factory.mktemp("alone") / "run.jsonl"
    model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
    train(alone, values, [ReduceLROnPlateau(patience=1, factor=0.5)], model=model)
    applied = [(d.epoch, d.value) for d in read_log(alone) if d.kind == "set_learning_rate"]
    assert cuts == applied


def test_a_shadow_checkpoint_is_recorded_and_never_written(tmp_path):
    model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
    train(tmp_path / "run.jsonl", [1.0, 0.5, 0.7], [], model=model,
          shadow=[ModelCheckpoint(str(tmp_path / "ckpt-{epoch}.h5"))])
    assert [d.decision for d in shadows(tmp_path / "run.jsonl")] == ["save_checkpoint"] * 3
    assert not list(tmp_path.glob("ckpt-*"))


def test_the_live_run_decides_exactly_as_without_shadows(tmp_path):
    values = [1.0, 0.9, 0.95, 0.97, 0.99, 1.2, 1.3]
    train(tmp_path / "a.jsonl", values, [EarlyStopping(patience=3)])
    train(tmp_path / "b.jsonl", values, [EarlyStopping(patience=3)],
          shadow=[EarlyStopping(patience=1), ReduceLROnPlateau(patience=1)])

    def decisions(log):
        return [(r.kind, r.epoch, r.reason) for r in read_log(log) if r.category == "decision"]

    assert decisions(tmp_path / "a.jsonl") == decisions(tmp_path / "b.jsonl")
    assert {d.policy for d in shadows(tmp_path / "b.jsonl")} == {
        "EarlyStopping(patience=1)", "ReduceLROnPlateau(patience=1)"}


def test_a_resumed_run_keeps_the_shadows_patience_and_records_nothing_twice(tmp_path):
    values = [1.0, 0.9, 0.95, 0.97, 0.99, 0.98, 0.97, 1.2]
    whole = tmp_path / "whole.jsonl"
    train(whole, values, [], shadow=[EarlyStopping(patience=4)])
    cut = tmp_path / "cut.jsonl"
    train(cut, values, [], shadow=[EarlyStopping(patience=4)], until=4, finish=False)
    train(cut, values, [], shadow=[EarlyStopping(patience=4)], resume=True)

    def seen(log):
        return [(d.decision, d.epoch, d.reason) for d in shadows(log)]

    assert seen(cut) == seen(whole) != []


@pytest.mark.parametrize("policies, match", [
    ([CSVLogger("x.csv")], "only decides"),
    ([LambdaCallback(on_epoch_end=lambda epoch, logs: None)], "only decides"),
    ([LearningRateScheduler(lambda epoch, lr: lr)], "cannot record"),
    ([], "at least one"),
    ("EarlyStopping", "list of plugins"),
])
def test_what_cannot_be_a_shadow_is_refused(policies, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=match):
        Bus([], shadow=policies)


def test_a_shadow_is_never_a_shadow_policy_given_or_read_from_a_log(tmp_path):
    """Nested in a log's header, each level would build the levels below it again and spell
    their labels into its own (a 1 KB header took gigabytes): refused before it is built,
    a clear error naming the field."""
    import json

    from eventbus import LogCorruptError, ReplayError
    from eventbus.shadow import Shadow

    with pytest.raises(ConfigError, match="cannot be a Shadow"):
        Bus([], shadow=[Shadow([EarlyStopping(patience=1)])])
    log = tmp_path / "run.jsonl"
    train(log, [1.0, 0.9, 0.95], [EarlyStopping(patience=5)],
          shadow=[EarlyStopping(patience=1)])
    lines = log.read_text().splitlines()
    header = json.loads(lines[0])
    (shadow,) = [p for p in header["plugins"] if p["name"] == "Shadow"]
    policy = shadow["params"]["policies"][0]
    for levels in (10, 40):  # 40 levels of specs nest past the 64 any header may hold
        spec = policy
        for _ in range(levels):
            spec = {"name": "Shadow", "params": {"policies": [spec]}, "label": "s"}
        shadow["params"]["policies"] = [spec]
        log.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
        if levels == 40:
            with pytest.raises(LogCorruptError, match="nested too deeply"):
                replay(log)
            continue
        with pytest.raises(ReplayError) as info:  # (before: 40 levels never finished)
            replay(log)
        assert "a shadow policy cannot be one" in str(info.value.__cause__ or info.value)


@pytest.mark.parametrize("what", ["policies", "filters"])
def test_a_header_listing_thousands_of_policies_or_filters_is_refused(tmp_path, what):
    """Each policy and each filter runs on every event: a crafted header's thousands made
    replay quadratic in the log (4,000 policies of 1,000 epochs ran for minutes). Refused
    before anything is built, naming the field; a run's own count reads back."""
    import json

    from eventbus import ReplayError
    from eventbus.filters import MAX_RECORDED_FILTERS
    from eventbus.shadow import MAX_RECORDED_POLICIES

    log = tmp_path / "run.jsonl"
    train(log, [1.0, 0.9, 0.95], [every(1, EarlyStopping(patience=5))],
          shadow=[EarlyStopping(patience=1)])
    assert replay(log).mismatch is None
    lines = log.read_text().splitlines()
    header = json.loads(lines[0])
    if what == "policies":
        (shadow,) = [p for p in header["plugins"] if p["name"] == "Shadow"]
        shadow["params"]["policies"] *= MAX_RECORDED_POLICIES + 1
    else:
        (spec,) = [p for p in header["plugins"] if p["name"] == "EarlyStopping"]
        spec["filters"] *= MAX_RECORDED_FILTERS + 1
    log.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    with pytest.raises(ReplayError) as info:
        replay(log)
    assert f"at most {MAX_RECORDED_POLICIES}" in str(info.value) if what == "policies" else \
        f"more than {MAX_RECORDED_FILTERS} event filters" in str(info.value)


def test_the_summary_says_where_and_what_it_would_have_saved(tmp_path):
    values = [1.0, 0.8, 0.7, 0.72, 0.71, 0.73, 0.74, 0.69, 0.75, 0.76]
    log = tmp_path / "run.jsonl"
    train(log, values, [], shadow=[EarlyStopping(patience=2)])
    curves = {"val_loss": list(enumerate(values))}
    (summary,) = summarise(shadows(log), curves, len(values))
    assert summary.stop_epoch == 4
    assert summary.best_at_stop == 0.7 and summary.best_recorded == 0.69
    assert summary.text() == ("shadow EarlyStopping(patience=2) would have stopped at epoch 5 "
                              "of 10: 50% fewer epochs; best val_loss 0.7 instead of 0.69")
    quiet = summarise([], curves, 10, policies=["EarlyStopping(patience=50)"])
    assert quiet[0].text() == ("shadow EarlyStopping(patience=50) would have decided nothing "
                               "within the 10 recorded epochs")


def test_the_audit_reports_every_shadow_policy(tmp_path):
    from eventbus.audit import audit, render

    values = [1.0, 0.8, 0.7, 0.72, 0.71, 0.73, 0.74, 0.69, 0.75, 0.76]
    log = tmp_path / "run.jsonl"
    train(log, values, [], shadow=[EarlyStopping(patience=2), EarlyStopping(patience=50)])
    result = audit(log)
    assert result.shadow_lines() == [
        "shadow EarlyStopping(patience=2) would have stopped at epoch 5 of 10: 50% fewer "
        "epochs; best val_loss 0.7 instead of 0.69",
        "shadow EarlyStopping(patience=50) would have decided nothing within the 10 recorded "
        "epochs"]
    assert all(line in render(result) for line in result.shadow_lines())
    (first, second) = result.as_dict()["shadow"]
    assert (first["stop_epoch"], second["stop_epoch"]) == (4, None)


def test_a_shadow_that_keeps_the_best_says_so():
    (summary,) = summarise([], {"val_loss": [(0, 0.5), (1, 0.4), (2, 0.6)]}, 3, ["P(x=1)"])
    summary.stop_epoch, summary.monitor, summary.best_at_stop, summary.best_recorded = \
        1, "val_loss", 0.4, 0.4
    assert summary.text().endswith("33% fewer epochs; the same best val_loss, 0.4")


def test_a_failing_shadow_policy_never_ends_the_live_run(tmp_path):
    """A policy that raises (here: mode='auto' cannot place its metric, asked at the first
    epoch end that carries it) decides no more, with one warning naming it; the live run and
    the other policies go on as without it."""
    values = [1.0, 0.9, 0.95, 0.97, 0.99, 1.2, 1.3]

    def run(log, shadow):
        with Bus([EarlyStopping(patience=3)], log=log, shadow=shadow) as bus:
            bus.train_begin({"epochs": len(values)})
            for epoch, value in enumerate(values):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"val_loss": value, "val_custom_metric": value})
                if bus.stop_training:
                    break
            bus.train_end()

    run(tmp_path / "a.jsonl", [EarlyStopping(patience=1)])
    with pytest.warns(RunWarning, match=r"shadow policy EarlyStopping\(monitor='val_custom_metric"
                                        r"'\) failed on epoch_end .* ConfigError"):
        run(tmp_path / "b.jsonl", [EarlyStopping(monitor="val_custom_metric"),
                                   EarlyStopping(patience=1)])

    def kept(log):
        return [(r.kind, r.epoch, getattr(r, "policy", None), r.reason) for r in read_log(log)
                if r.category == "decision" or isinstance(r, ShadowDecision)]

    assert kept(tmp_path / "a.jsonl") == kept(tmp_path / "b.jsonl")
    warnings = [r for r in read_log(tmp_path / "b.jsonl") if r.kind == "warning"]
    assert [w.details["policy"] for w in warnings] == ["EarlyStopping(monitor='val_custom_metric')"]


@settings(max_examples=25)
@given(losses, st.integers(0, 4))
def test_a_log_verifies_against_its_own_shadow_decisions(tmp_path_factory, values, patience):
    """Property: --verify now compares shadow decisions too, and a log replays to its own."""
    log = tmp_path_factory.mktemp("shadow") / "run.jsonl"
    train(log, values, [EarlyStopping(patience=100)],
          shadow=[EarlyStopping(patience=patience), ReduceLROnPlateau(patience=1)])
    result = replay(log, verify=True)
    assert result.ok, result.mismatch


def test_verify_names_the_first_shadow_decision_that_differs(tmp_path):
    """One epoch's value edited so the shadow EarlyStopping would stop later: --verify fails
    naming the shadow decision. Before, shadows were never compared: a golden log kept no
    watch on what its shadow policies decide."""
    import orjson

    log = tmp_path / "run.jsonl"
    values = [1.0, 0.9, 0.95, 0.97, 0.99, 1.0, 1.1]
    train(log, values, [EarlyStopping(patience=100)], shadow=[EarlyStopping(patience=2)])
    (stop,) = [d for d in shadows(log) if d.decision == "stop_training"]
    assert stop.epoch == 3 and replay(log, verify=True).ok
    records = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    end = next(rec for rec in records if rec["kind"] == "epoch_end" and rec["epoch"] == 3)
    end["logs"]["val_loss"] = 0.1  # a new best at epoch 3: the shadow stops 2 epochs later
    log.write_bytes(b"".join(orjson.dumps(rec) + b"\n" for rec in records))
    result = replay(log, verify=True)
    assert result.mismatch is not None and result.mismatch.what == "shadow decision"
    assert str(result.mismatch).startswith("shadow decision #1 differs: recorded "
                                           "stop_training from shadow EarlyStopping(patience=2)"
                                           " at epoch 4")

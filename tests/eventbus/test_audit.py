"""eventbus.audit: what the audit says of runs that are not one plain fit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, Plugin, SinkFailureWarning, hookimpl
from eventbus.records import SaveCheckpoint

from record_strategies import metric_runs, placed_metric_names

DOCS = Path(__file__).resolve().parents[2] / "docs"


class TestAuditEndings:
    """How the audit says a run ended, for runs that are not one plain fit."""

    def ended(self, path) -> tuple[str, str]:
        from eventbus.audit import audit, render

        result = audit(path)
        line = next(x for x in render(result).splitlines() if x.startswith("  ended:"))
        return result.ended, line

    def test_a_fit_from_initial_epoch_completes_its_plan(self, tmp_path):
        path = tmp_path / "run.jsonl"
        with Bus(log=path) as bus:
            bus.train_begin({"epochs": 5})
            for epoch in range(2, 5):  # fit(initial_epoch=2, epochs=5)
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": 1.0})
            bus.train_end()
        assert self.ended(path) == ("completed", "  ended: completed every planned epoch")

    def test_an_evaluation_only_log_did_not_crash(self, tmp_path):
        path = tmp_path / "run.jsonl"
        with Bus(log=path) as bus:
            bus.test_begin()
            bus.test_batch_end(0, {"loss": 1.0})
            bus.test_end({"loss": 1.0})
        assert self.ended(path) == (
            "no_training", "  ended: no training in the log (evaluation or prediction only)")

    @staticmethod
    def fit(bus: Bus, epochs: int, *, fail_at: tuple[int, int] | None = None,
            error: BaseException | None = None) -> None:
        bus.train_begin({"epochs": epochs})
        for epoch in range(epochs):
            bus.epoch_begin(epoch)
            for batch in range(3):
                bus.batch_begin(batch)
                bus.batch_end(batch, {"loss": 1.0})
                if (epoch, batch) == fail_at:
                    raise error  # type: ignore[misc]
            bus.epoch_end(epoch, {"loss": 1.0})
        bus.train_end()

    @pytest.mark.parametrize(("error", "said"), [
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore"),
         "raised RuntimeError in epoch 3: CUDA out of memory. Tried to allocate 2.00 GiB"),
        (KeyboardInterrupt(), "was interrupted (KeyboardInterrupt) in epoch 3"),
    ])
    def test_a_loop_that_raised_in_the_block_says_what_and_where(self, tmp_path, recwarn,
                                                                 error, said):
        """The ``with bus:`` block ended by an exception: the log holds the bus's warning of it
        (no RunWarning besides the traceback), and the audit's ended line, its JSON and the
        report's answer say it, where a crash can only say "no train_end"."""
        from eventbus.audit import audit
        from eventbus.report import stop_answer

        path = tmp_path / "run.jsonl"
        with pytest.raises(type(error)), Bus(log=path) as bus:
            self.fit(bus, 5, fail_at=(2, 1), error=error)
        assert not [w for w in recwarn if "training loop" in str(w.message)]
        assert self.ended(path) == (
            "incomplete", f"  ended: the training loop {said} (no train_end in the log)")
        result = audit(path)
        raised = result.as_dict()["raised"]
        assert raised["source"] == "bus" and raised["epoch"] == 2
        assert raised["details"]["raised"] == f"builtins.{type(error).__name__}"
        assert raised["details"]["step"] == 2 * 3 + 2
        assert stop_answer(result).startswith(f"The training loop {said}")

    def test_code_after_a_completed_fit_raising_leaves_it_completed(self, tmp_path):
        """The block raised after train_end: the fit completed, as the audit says; the bus's
        warning is in the log."""
        path = tmp_path / "run.jsonl"
        with pytest.raises(ValueError), Bus(log=path) as bus:
            self.fit(bus, 2)
            raise ValueError("plotting failed")
        assert self.ended(path) == ("completed", "  ended: completed every planned epoch")
        assert "plotting failed" in path.read_text()

    def test_a_resume_goes_on_past_what_ended_an_attempt(self, tmp_path):
        """The block raised after epoch 2's end; a resume trained on and was itself killed
        (no train_end): the audit says the run crashed or is running, not the first
        attempt's error, which a resume went on from."""
        path = tmp_path / "run.jsonl"
        with pytest.raises(ValueError), Bus(log=path) as bus:
            bus.train_begin({"epochs": 5})
            for epoch in range(2):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": 1.0})
            raise ValueError("between epochs")
        assert self.ended(path)[1] == ("  ended: the training loop raised ValueError after "
                                       "epoch 2: between epochs (no train_end in the log)")
        bus = Bus(log=path, resume=True)
        bus.train_begin({"epochs": 5})
        bus.epoch_begin(bus.initial_epoch)
        bus.epoch_end(bus.initial_epoch, {"loss": 1.0})
        bus.close()  # (no train_end: as a kill leaves it)
        assert self.ended(path) == (
            "incomplete", "  ended: no train_end in the log: the run crashed or is still running")

    def test_a_second_fit_that_raised_ended_the_run(self, tmp_path):
        """What ended the run is what ended its last fit: a first fit's train_end does not
        make a second, which raised, "completed"."""
        path = tmp_path / "run.jsonl"
        with pytest.raises(ValueError), Bus(log=path) as bus:
            self.fit(bus, 2)
            self.fit(bus, 2, fail_at=(1, 0), error=ValueError("bad batch"))
        assert self.ended(path) == ("incomplete", "  ended: the training loop raised ValueError "
                                    "in epoch 2: bad batch (no train_end in the log)")


def test_a_rate_the_model_refused_is_shown_as_not_applied(tmp_path):
    """A Keras optimizer with a LearningRateSchedule has no rate to set: the decision stays in
    the log, and the audit says it never reached the model."""
    from eventbus import Plugin, hookimpl
    from eventbus import records as r
    from eventbus.audit import audit, render

    class Scheduled:  # a model adapter whose rate cannot be set
        def get_weights(self):
            return {}

        def set_weights(self, weights):
            pass

        @property
        def learning_rate(self):
            return 0.1

        @learning_rate.setter
        def learning_rate(self, value):
            raise AttributeError("the rate follows a LearningRateSchedule")

    class Halve(Plugin):
        @hookimpl
        def on_epoch_end(self, event):
            return r.SetLearningRate(value=0.05, previous=0.1, reason="halve")

    path = tmp_path / "run.jsonl"
    with pytest.warns(SinkFailureWarning, match="model on set_learning_rate"), \
            Bus([Halve()], log=path, model=Scheduled()) as bus:
        bus.epoch_end(0, {"loss": 1.0})
    result = audit(path)
    (line,) = [x for x in render(result).splitlines() if x.startswith("    epoch 1:")]
    assert line.endswith("(Halve; not applied, the model refused it (AttributeError: the rate "
                         "follows a LearningRateSchedule))")
    (change,) = result.as_dict()["learning_rate_changes"]
    assert change["refused"].startswith("AttributeError")


class Watch(Plugin):
    """A third-party plugin with a ``monitor`` parameter and a mode left to 'auto'; with
    ``decide_mode`` it records a decision at every epoch whose evidence resolves the mode."""

    def __init__(self, monitor: str, mode: str = "auto", decide_mode: str | None = None):
        self.monitor, self.mode, self.decide_mode = monitor, mode, decide_mode

    @hookimpl
    def on_epoch_end(self, event):
        if self.decide_mode is None:
            return None
        return SaveCheckpoint(path="x.h5", reason="watch",
                              evidence={"monitor": self.monitor, "mode": self.decide_mode})


class TestMonitoredMetrics:
    """Which way a monitored metric goes, and its best, follow the plugins' rule
    (eventbus.monitor), so the audit never calls best what a plugin called worst."""

    def test_val_top1_best_is_the_highest_value_with_no_decision_in_the_log(self, tmp_path):
        """Regression: EarlyStopping maximises val_top1; with no decision to say so, the
        audit once guessed min and reported the worst value as the best."""
        from eventbus import read_log
        from eventbus import records as r
        from eventbus.audit import MetricSummary, audit, render
        from plugins import EarlyStopping

        values = [0.2, 0.7, 0.5, 0.7, 0.4]
        path = tmp_path / "run.jsonl"
        with Bus([EarlyStopping(monitor="val_top1", patience=10)], log=path) as bus:
            bus.train_begin({"epochs": len(values)})
            for epoch, value in enumerate(values):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"val_top1": value})
            bus.train_end()
        records = list(read_log(path))
        assert not [x for x in records if isinstance(x, r.Decision)]
        assert records[0].plugins[0].params["mode"] == "auto"
        result = audit(path)
        # The first epoch that reached the highest value, as the plugin's monitor counts it.
        assert result.monitors == [MetricSummary("val_top1", "max", 0.7, 1, 0.4)]
        assert "  best val_top1: 0.7 at epoch 2 (max; last 0.4)" in render(result).splitlines()

    @given(placed_metric_names(), metric_runs)
    def test_audit_best_is_the_plugins_best(self, name, values):
        """For any name the rule places and any values (ties, NaN, infinities), the audit's
        best and best epoch are EarlyStopping's own, with mode 'auto' in the header."""
        from eventbus.audit import audit
        from eventbus.testing import epochs, run
        from plugins import EarlyStopping

        plugin = EarlyStopping(monitor=name, patience=len(values) + 1)
        _, records = run([plugin], epochs(**{name: values}))
        (summary,) = audit(records).monitors
        assert summary.mode == plugin.tracker.mode
        # (the plugin's best_epoch is Keras's 0 while it has no best; the audit says None)
        assert (summary.best, summary.best_epoch) == (
            plugin.best, None if plugin.best is None else plugin.best_epoch)

    def test_a_decision_evidence_mode_wins_over_the_name(self):
        """The mode a plugin resolved and recorded in its evidence is the one used."""
        from eventbus.audit import audit
        from eventbus.testing import epochs, run

        _, records = run([Watch(monitor="val_top1", decide_mode="min")],
                         epochs(val_top1=[0.5, 0.2, 0.9]), stop=False)
        (summary,) = audit(records).monitors
        assert (summary.mode, summary.best, summary.best_epoch) == ("min", 0.2, 1)

    @pytest.mark.parametrize(("name", "why"), [
        ("val_activation_mean", "its name has no word that says which way is better"),
        ("accuracy_loss", "its name has words of both kinds (['loss'] and ['accuracy'])"),
    ])
    def test_a_name_the_rule_cannot_place_has_no_best(self, tmp_path, name, why):
        """mode 'auto' in the header, no decision, a name the rule cannot place: the audit
        says the direction is unknown (mode null in --json) instead of guessing."""
        from eventbus.audit import audit, render

        path = tmp_path / "run.jsonl"
        with Bus([Watch(monitor=name)], log=path) as bus:
            for epoch, value in enumerate([3.0, 1.0, 2.0]):
                bus.epoch_end(epoch, {name: value})
        line = f"  {name}: no best, direction unknown (the log says neither min nor max for " \
               f"it and {why}; last 2)"
        assert line in render(audit(path)).splitlines()
        if name == "val_activation_mean":  # the line replay-and-audit.md shows
            assert line in (DOCS / "replay-and-audit.md").read_text().splitlines()
        done = subprocess.run([sys.executable, "-m", "eventbus", "audit", str(path), "--json"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert orjson.loads(done.stdout)["monitors"] == [
            {"name": name, "mode": None, "best": None, "best_epoch": None, "last": 2.0}]

    def test_guess_mode_is_the_core_rule(self):
        """audit.guess_mode, exported before the rule moved, is the core's lenient rule."""
        import importlib

        from eventbus import monitor

        audit = importlib.import_module("eventbus.audit")  # ``eventbus.audit`` is the function
        assert audit.guess_mode is monitor.guess_mode
        assert audit.guess_mode("val_top1") == "max"
        assert audit.guess_mode("val_activation_mean") is None



def deferring_run(values: list[float], *, min_epochs: int, patience: int = 2,
                  epochs: int | None = None) -> list:
    """A loop that, like Lightning with ``min_epochs``, acts on a stop only from that epoch
    (counted from 1); EarlyStopping asks again at every epoch until it does."""
    from eventbus import records as r
    from eventbus.testing import RecordingWriter
    from plugins import EarlyStopping

    writer = RecordingWriter()
    bus = Bus([EarlyStopping(monitor="val_loss", patience=patience)], log=writer)
    bus.train_begin({"epochs": epochs or len(values)})
    for epoch, value in enumerate(values):
        bus.epoch_begin(epoch)
        bus.epoch_end(epoch, {"val_loss": value})
        if bus.stop_training and epoch + 1 >= min_epochs:
            break
    bus.train_end()
    bus.close()
    return [r.parse_record(x) for x in writer.records]


class TestDeferredStops:
    """A stop the loop did not act on at once (Lightning's ``min_epochs``) is reported as
    deferred, and the run as stopped where it did stop, not where the plugin first asked."""

    def test_a_stop_deferred_by_min_epochs_is_reported_as_deferred(self):
        """Asked at epoch 4, acted on at 7: "stopped ... at epoch 7", then a deferred line."""
        from eventbus.audit import audit, render

        result = audit(deferring_run([1.0, 0.5, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9], min_epochs=7,
                                     epochs=40))
        assert (result.stop.epoch, result.ended) == (6, "stopped")
        assert [s.epoch for s in result.deferred_stops] == [3, 4, 5]
        lines = render(result).splitlines()
        ended = next(x for x in lines if x.startswith("  ended:"))
        assert ended.startswith("  ended: stopped by EarlyStopping, rule patience_exhausted at "
                                "epoch 7: ")
        deferred = next(x for x in lines if x.startswith("  deferred stop:"))
        assert deferred.startswith("  deferred stop: EarlyStopping asked to stop at epoch 4 "
                                   "(rule patience_exhausted: ")
        assert "and again at 2 later epoch(s); the loop stopped only at epoch 7" in deferred
        data = result.as_dict()
        assert data["stop"]["epoch"] == 6
        assert [d["epoch"] for d in data["deferred_stops"]] == [3, 4, 5]

    def test_a_stop_never_acted_on_leaves_the_run_completed(self):
        """A plugin that asked once and a loop that ran every planned epoch: completed, with
        the stop it did not act on shown as deferred."""
        from eventbus.audit import audit, render
        from eventbus.testing import epochs, run

        class AskOnce(Plugin):
            @hookimpl
            def on_epoch_end(self, event):
                if event.epoch == 1:
                    from eventbus.records import StopTraining

                    return StopTraining(reason="asked once")
                return None

        _, records = run([AskOnce()], epochs(loss=[1.0, 0.9, 0.8, 0.7]), stop=False)
        result = audit(records)
        assert result.stop is None and result.ended == "completed"
        lines = render(result).splitlines()
        assert "  ended: completed every planned epoch" in lines
        assert any(x.startswith("  deferred stop: AskOnce asked to stop at epoch 2 (asked "
                                "once); the loop went on to epoch 4 without stopping")
                   for x in lines)

    @given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=15), st.integers(1, 16),
           st.integers(1, 3))
    def test_the_stop_is_the_one_the_loop_acted_on(self, values, min_epochs, patience):
        """For any run and any min_epochs: the stop is the last epoch's, every earlier ask is
        deferred, and with no deferral (min_epochs reached) there is none."""
        from eventbus import records as r
        from eventbus.audit import audit

        records = deferring_run(values, min_epochs=min_epochs, patience=patience)
        result = audit(records)
        asked = [x for x in records if isinstance(x, r.StopTraining)]
        last = result.last_epoch
        acted = [s for s in asked if s.epoch == last]
        assert result.stop == (acted[0] if acted else None)
        assert result.deferred_stops == [s for s in asked if s.epoch < last]
        if asked and asked[0].epoch + 1 >= min_epochs:
            assert result.deferred_stops == []
        assert result.ended == ("stopped" if acted else "completed")


class TestSeveralFitsOnOneBus:
    """A bus may run several fits (Keras's staged fine-tuning: fit, then fit again). The
    audit used to add their epochs ("epochs run: 6 of 3") and report the first fit's stop as
    what ended the run."""

    @staticmethod
    def fits(path, *plans: list[float]) -> None:
        from plugins import EarlyStopping

        with Bus([EarlyStopping(monitor="loss", patience=1)], log=path) as bus:
            for plan in plans:
                bus.train_begin({"epochs": len(plan)})
                for epoch, value in enumerate(plan):
                    bus.epoch_begin(epoch)
                    bus.epoch_end(epoch, {"loss": value})
                    if bus.stop_training:
                        break
                bus.train_end()

    def test_the_last_fit_is_counted_and_the_others_said(self, tmp_path):
        from eventbus.audit import audit, render

        path = tmp_path / "run.jsonl"
        self.fits(path, [1.0, 0.9, 0.8], [0.7, 0.6, 0.5])
        result = audit(path)
        assert (result.fits, result.epochs_run, result.epochs_in_all) == (2, 3, 6)
        assert result.ended == "completed" and result.stop is None
        text = render(result)
        assert "epochs run: 3 of 3 (the last of 2 fits; 6 epochs in all)" in text
        assert "ended: completed every planned epoch" in text

    def test_the_shadows_are_summarised_for_the_last_fit(self, tmp_path):
        """A shadow that would have stopped fit 1 at epoch 5 was summarised against fit 2's 3
        epochs ('stopped at epoch 5 of 3: -67% fewer epochs'), with fit 2's best value."""
        from eventbus.audit import audit
        from plugins import EarlyStopping

        path = tmp_path / "run.jsonl"
        with Bus([], log=path, shadow=[EarlyStopping(monitor="loss", patience=2)]) as bus:
            for plan in ([1.0, 0.9, 0.8, 0.85, 0.86, 0.87, 0.8, 0.7], [0.5, 0.4, 0.3]):
                bus.train_begin({"epochs": len(plan)})
                for epoch, value in enumerate(plan):
                    bus.epoch_begin(epoch)
                    bus.epoch_end(epoch, {"loss": value})
                bus.train_end()
        (summary,) = audit(path).shadow_summaries()
        assert summary.stop_epoch is None and summary.epochs_run == 3

    def test_what_ended_the_run_is_what_ended_its_last_fit(self, tmp_path):
        from eventbus.audit import audit

        path = tmp_path / "run.jsonl"
        self.fits(path, [1.0, 2.0, 3.0, 4.0], [1.0, 0.9, 0.8, 0.7])
        result = audit(path)
        assert result.ended == "completed" and result.stop is None
        self.fits(path, [1.0, 0.9, 0.8, 0.7], [1.0, 2.0, 3.0, 4.0])
        result = audit(path)
        assert result.ended == "stopped" and result.stop.epoch == 1
        assert result.as_dict()["fits"] == 2 and result.epochs_run == 2


def lines_run_in(module, call) -> int:
    """How many lines of ``module`` ``call()`` executes, each loop turn counted (a traced
    ``line`` event): the audit's work, counted instead of timed."""
    count = 0
    filename = module.__file__

    def local(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return local

    def calls(frame, event, arg):
        return local if frame.f_code.co_filename == filename else None

    before = sys.gettrace()
    sys.settrace(calls)
    try:
        call()
    finally:
        sys.settrace(before)
    return count


def hostile_run(n: int, case: str) -> list:
    """A log whose size grows with ``n`` in a way that made the audit scan a list per record.

    stops: stop_training without an epoch, then epochs; lr: rate changes, then faults of
    other decisions; del: saves, then deletes of a path never saved; fits: stops deferred,
    then empty fits; metrics: each epoch a new metric, then empty fits."""
    from eventbus import records as r

    records = [r.Header(v=1, run_id="r", seq=0, time=0.0, created="now", library="eventbus")]

    def add(cls, **fields):
        records.append(cls(v=1, run_id="r", seq=len(records), time=0.0, **fields))

    add(r.TrainBegin, params={})
    for i in range(n):
        if case == "stops":
            add(r.StopTraining, reason="r", epoch=None)
        elif case == "fits":
            add(r.StopTraining, reason="r", epoch=0)
        elif case == "lr":
            add(r.SetLearningRate, reason="r", value=0.5, previous=1.0, epoch=0)
        elif case == "del":
            add(r.CheckpointSaved, path=f"/c/{i}.h5", size=1, sha256="0" * 64)
        elif case == "metrics":
            add(r.EpochEnd, epoch=i, logs={f"m{i}": 1.0})
    if case == "fits":
        add(r.EpochEnd, epoch=1, logs={})
    for i in range(n):
        if case == "stops":
            add(r.EpochEnd, epoch=i, logs={"loss": 1.0})
        elif case == "lr":
            add(r.SinkFailed, sink="model", error="E", message="m", cause_seq=0)
        elif case == "del":
            add(r.CheckpointDeleted, path="/nope.h5", sha256="0" * 64)
        elif case in ("fits", "metrics"):
            add(r.TrainBegin, params={})
            add(r.TrainEnd, logs={})
    return records


@pytest.mark.parametrize("case", ["stops", "lr", "del", "fits", "metrics"])
def test_the_audit_of_a_hostile_log_is_linear_in_it(case):
    """Twice the records, about twice the work, in audit(), render(), as_dict() and the plot's
    rate steps: each used to scan a list the log makes as long as it likes once per record
    (a stop without an epoch stayed asked for ever; each rate change scanned every fault,
    each delete every save; each fit copied every deferred stop and every curve), so a log of
    tens of MB kept `eventbus audit` busy for hours."""
    from eventbus.audit import audit, render
    from eventbus.plot import learning_rate_steps

    module = sys.modules["eventbus.audit"]  # (the package's ``audit`` is the function)

    def work(n: int) -> int:
        records = hostile_run(n, case)

        def everything():
            result = audit(records)
            render(result)
            result.as_dict()
            learning_rate_steps(result)

        return lines_run_in(module, everything)

    small, large = work(150), work(300)
    assert large < 2.3 * small, (small, large)  # a scan per record gives about 4 times

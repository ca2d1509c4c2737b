"""eventbus.audit: what the audit says of runs that are not one plain fit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import given

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
        assert summary.mode == plugin.monitor.mode
        assert (summary.best, summary.best_epoch) == (plugin.best, plugin.best_epoch)

    def test_a_decision_evidence_mode_wins_over_the_name(self):
        """The mode a plugin resolved and recorded in its evidence is the one used."""
        from eventbus.audit import audit
        from eventbus.testing import epochs, run

        _, records = run([Watch(monitor="val_top1", decide_mode="min")],
                         epochs(val_top1=[0.5, 0.2, 0.9]), stop=False)
        (summary,) = audit(records).monitors
        assert (summary.mode, summary.best, summary.best_epoch) == ("min", 0.2, 1)

    @pytest.mark.parametrize(("name", "why"), [
        ("val_false_positives", "its name has no word that says which way is better"),
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
        if name == "val_false_positives":  # the line replay-and-audit.md shows
            assert line in (DOCS / "replay-and-audit.md").read_text().splitlines()
        done = subprocess.run([sys.executable, "-m", "eventbus", "audit", str(path), "--json"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert orjson.loads(done.stdout)["monitors"] == [
            {"name": name, "mode": None, "best": None, "best_epoch": None, "last": 2.0}]

    def test_guess_mode_is_the_core_rule(self):
        """audit.guess_mode, exported before the rule moved, is the core's lenient rule."""
        from eventbus import audit, monitor

        assert audit.guess_mode is monitor.guess_mode
        assert audit.guess_mode("val_top1") == "max"
        assert audit.guess_mode("val_false_positives") is None


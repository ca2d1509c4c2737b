"""eventbus.audit: what the audit says of runs that are not one plain fit."""

from __future__ import annotations

import pytest

from eventbus import Bus, SinkFailureWarning


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

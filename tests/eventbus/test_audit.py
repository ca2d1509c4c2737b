"""eventbus.audit: what the audit says of runs that are not one plain fit."""

from __future__ import annotations

from eventbus import Bus


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

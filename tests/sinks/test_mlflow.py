"""The MLflow sink against a real local MLflow tracking store (MLflow's file store in a temp
dir, read back through MLflow's own client): what lands where, and exactly once through a
SIGKILL, a resume and repeated backfills."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventbus import Bus
from eventbus import records as r
from eventbus.cli import main as cli_main
from eventbus.effective import read_effective
from eventbus.errors import ConfigError
from sinks.mlflow import RUN_ID_TAG, SEQ_TAG, MLflowSink, backfill

pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1] / "eventbus"))
from crash_runs import running  # noqa: E402

WORKER = Path(__file__).with_name("mlflow_worker.py")


@pytest.fixture
def uri(tmp_path, monkeypatch):
    """A file store: the one local store mlflow-skinny runs without a database driver
    (MLflow 3 asks for this opt-in to use it)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


def mlflow_run(uri: str, experiment: str = "eventbus"):
    """The one MLflow run of the experiment, and its metric histories: key -> [(step, value)]."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, [run.info.run_id for run in runs]
    run = runs[0]
    history = {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
               for key in run.data.metrics}
    return run, history


def expected_metrics(log: Path, batch_every: int | None) -> dict[str, list[tuple[int, float]]]:
    """What the run as it went on says MLflow must hold, each (key, step) once."""
    out: dict[str, list[tuple[int, float]]] = {}
    for record in read_effective(log, kinds=("epoch_end", "batch_end")):
        if record.kind == "epoch_end":
            items = [(k, record.epoch, v) for k, v in record.logs.items()]
        elif batch_every is not None and (record.step + 1) % batch_every == 0:
            items = [(f"batch_{k}", record.step + 1, v) for k, v in record.logs.items()]
        else:
            continue
        for key, step, value in items:
            out.setdefault(key, []).append((step, value))
    return out


def assert_exactly_once(history, expected) -> None:
    for key, points in history.items():
        twice = [step for step, n in Counter(s for s, _ in points).items() if n > 1]
        assert not twice, f"{key}: steps logged more than once: {twice}"
    assert {k: sorted(v) for k, v in history.items()} == \
        {k: sorted(v) for k, v in expected.items()}


def train(bus: Bus, epochs: int, batches: int = 4, *, start: int = 0, end: bool = True) -> None:
    bus.train_begin({"epochs": epochs, "steps": batches})
    for epoch in range(start, epochs):
        bus.epoch_begin(epoch)
        for batch in range(batches):
            bus.batch_begin(batch)
            bus.batch_end(batch, {"loss": 1.0 / (1 + epoch * batches + batch)})
        bus.epoch_end(epoch, {"loss": 1.0 / (1 + epoch), "val_loss": [1.0, 0.9, 0.95, 0.97,
                                                                       0.99][epoch]})
        if bus.stop_training:
            break
    if end:
        bus.train_end()


class TestWhatGoesWhere:
    def test_params_metrics_decisions_and_checkpoints(self, tmp_path, uri):
        """Plugin and loop params, epoch metrics at their epoch, batch metrics every
        batch_every steps, each decision as a tag, the checkpoint as an artifact."""
        from plugins import ReduceLROnPlateau

        checkpoint = tmp_path / "ckpt-1.h5"
        checkpoint.write_bytes(b"weights")
        log = tmp_path / "run.jsonl"
        sink = MLflowSink(uri, batch_every=2)
        with Bus([ReduceLROnPlateau(patience=1, factor=0.5)], log=[str(log), sink],
                 learning_rate=0.1, run_id="run-a") as bus:
            train(bus, 4, end=False)
            bus.record(r.CheckpointSaved(path=str(checkpoint), size=7, epoch=3,
                                         sha256=hashlib.sha256(b"weights").hexdigest()))
            bus.train_end()
        run, history = mlflow_run(uri)
        assert run.data.tags[RUN_ID_TAG] == "run-a"
        assert run.info.run_name == "run-a" and run.info.status == "FINISHED"
        assert run.data.params["ReduceLROnPlateau.patience"] == "1"
        assert run.data.params["ReduceLROnPlateau.factor"] == "0.5"
        assert run.data.params["epochs"] == "4" and run.data.params["steps"] == "4"
        assert run.data.params["meta.learning_rate"] == "0.1"
        assert_exactly_once(history, expected_metrics(log, 2))
        assert [s for s, _ in history["batch_loss"]] == [2, 4, 6, 8, 10, 12, 14, 16]
        assert [s for s, _ in history["learning_rate"]] == [0, 1, 2, 3]
        decisions = {k: v for k, v in run.data.tags.items() if k.startswith("eventbus.decision")}
        recorded = [d for d in read_effective(log) if d.kind == "set_learning_rate"]
        assert len(decisions) == len(recorded) >= 1
        first = recorded[0]
        value = decisions[f"eventbus.decision.{first.cause_seq}.set_learning_rate."
                          f"ReduceLROnPlateau"]
        assert f"learning rate {first.previous} -> {first.value}" in value
        assert first.reason in value
        assert int(run.data.tags[SEQ_TAG]) == max(rec.seq for rec in read_effective(log))
        client = MlflowClient(uri)
        [ckpt] = client.list_artifacts(run.info.run_id, "checkpoints")
        assert ckpt.path == "checkpoints/ckpt-1.h5"
        local = client.download_artifacts(run.info.run_id, ckpt.path, str(tmp_path / "down"))
        assert Path(local).read_bytes() == b"weights"

    def test_an_epoch_in_progress_is_not_sent(self, tmp_path, uri):
        """A decision flushes the bus mid-epoch; the epoch's batches stay out of MLflow until
        it ends, so a crash there leaves nothing a resume would write again."""
        sink = MLflowSink(uri, batch_every=1)
        bus = Bus([], log=[str(tmp_path / "run.jsonl"), sink], learning_rate=0.1)
        train(bus, 1, end=False)
        bus.epoch_begin(1)
        bus.batch_begin(0)
        bus.batch_end(0, {"loss": 0.5})
        bus.decide(r.SetLearningRate(value=0.05, reason="test"))  # flushes every sink
        _, history = mlflow_run(uri)
        assert [s for s, _ in history["batch_loss"]] == [1, 2, 3, 4]
        bus.epoch_end(1, {"loss": 0.4})
        _, history = mlflow_run(uri)
        assert [s for s, _ in history["batch_loss"]] == [1, 2, 3, 4, 5]
        bus.close()
        run, _ = mlflow_run(uri)
        assert run.info.status == "RUNNING"  # no train_end: left as a crashed run is

    def test_a_missing_checkpoint_is_a_warning_not_a_failure(self, tmp_path, uri):
        """A checkpoint gone before it is sent is reported; the rest of the run still lands."""
        sink = MLflowSink(uri)
        with Bus([], log=[str(tmp_path / "run.jsonl"), sink]) as bus:
            train(bus, 1, end=False)
            with pytest.warns(Warning, match="is gone"):
                bus.record(r.CheckpointSaved(path=str(tmp_path / "nope.h5"), size=1, epoch=0,
                                             sha256="0" * 64))
                bus.train_end()
        assert sink.missing_checkpoints == [str(tmp_path / "nope.h5")]
        run, history = mlflow_run(uri)
        assert run.info.status == "FINISHED" and history["loss"] == [(0, 1.0)]

    @pytest.mark.parametrize(("field", "kwargs"), [
        ("batch_every", {"batch_every": 0}), ("batch_every", {"batch_every": True}),
        ("experiment", {"experiment": ""}), ("tracking_uri", {"tracking_uri": 3}),
        ("run_name", {"run_name": 1})])
    def test_bad_parameters_name_the_field(self, field, kwargs):
        """A bad parameter is refused when the sink is made, naming it."""
        with pytest.raises(ConfigError, match=field) as info:
            MLflowSink(**kwargs)
        assert info.value.field == field


class TestHoldBack:
    @settings(max_examples=15, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(epochs=st.integers(1, 3), batches=st.integers(1, 3), data=st.data())
    def test_mlflow_never_holds_an_epoch_in_progress(self, tmp_path_factory, monkeypatch,
                                                     epochs, batches, data):
        """Whatever the flushes (decisions mid-epoch, the bus's epoch-end flushes), after
        each one MLflow holds exactly the batches of the epochs that have ended, each once;
        after train_end, every batch."""
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        uri = (tmp_path_factory.mktemp("store") / "mlruns").as_uri()
        flushes = data.draw(st.sets(st.integers(0, epochs * batches - 1)), label="flush after")
        bus = Bus([], log=[MLflowSink(uri, batch_every=1)], learning_rate=0.1)
        bus.train_begin({"epochs": epochs})
        step, ended = 0, 0  # batches done, and those of ended epochs
        for epoch in range(epochs):
            bus.epoch_begin(epoch)
            for batch in range(batches):
                bus.batch_begin(batch)
                bus.batch_end(batch, {"loss": float(step)})
                step += 1
                if step - 1 in flushes:
                    bus.decide(r.SetLearningRate(value=0.1, reason="flush"))
                    held = mlflow_run(uri)[1].get("batch_loss", [])
                    assert held == [(s + 1, float(s)) for s in range(ended)]
            bus.epoch_end(epoch, {"loss": 1.0})
            ended = step
        bus.train_end()
        bus.close()
        assert mlflow_run(uri)[1]["batch_loss"] == [(s + 1, float(s)) for s in range(step)]


def test_importing_the_sink_does_not_import_mlflow():
    """MLflow is an optional extra: it is imported when the sink first talks to a store."""
    code = "import sys, eventbus, sinks.mlflow; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[2])
    assert out.stdout.strip() == "False"


class TestExactlyOnce:
    def test_killed_then_resumed_holds_every_step_once(self, tmp_path, uri):
        """SIGKILLed once after the event log flushed an epoch and before MLflow did, once
        mid-epoch after a decision flushed the bus, then resumed to the end:
        MLflow holds every (metric, step) of the run as it went on, once, with its values."""
        log = tmp_path / "run.jsonl"
        argv = [sys.executable, str(WORKER), str(log), uri]
        for kill_at in ("flushed 2", "batch_end 4 1", None):
            with running(argv, answer=True, timeout=60) as proc:
                line = ""
                for line in iter(proc.stdout.readline, ""):
                    if line.strip() == kill_at:
                        proc.kill()
                        proc.wait()
                        break
                    proc.stdin.write("\n")
                    proc.stdin.flush()
                assert kill_at is not None or line == "done\n", proc.stderr.read()
        run, history = mlflow_run(uri, "crash")
        assert run.info.status == "FINISHED"
        assert run.data.params["Plateau.cut_after"] == "2" and run.data.params["epochs"] == "7"
        assert_exactly_once(history, expected_metrics(log, 1))
        # Each decision of the run as it went on is one tag (the abandoned attempt's
        # mid-epoch one, made again with another cause seq, is not among them).
        assert sum(k.startswith("eventbus.decision") for k in run.data.tags) == \
            sum(rec.kind == "set_learning_rate" for rec in read_effective(log)) == 2
        # A backfill of the finished run afterwards adds nothing.
        backfill(log, uri, experiment="crash", batch_every=1)
        assert mlflow_run(uri, "crash")[1] == history

    def test_backfill_twice_adds_nothing(self, tmp_path, uri):
        """``eventbus convert LOG URI --to mlflow`` writes a finished run; a second time, and a
        direct backfill after it, add nothing."""
        log = tmp_path / "run.jsonl"
        with Bus([], log=str(log), learning_rate=0.1) as bus:
            train(bus, 3)
        assert cli_main(["convert", str(log), uri, "--to", "mlflow"]) == 0
        run, history = mlflow_run(uri)
        assert run.info.status == "FINISHED"
        assert_exactly_once(history, expected_metrics(log, None))
        assert cli_main(["convert", str(log), uri, "--to", "mlflow"]) == 0
        backfill(log, uri)
        again, history_again = mlflow_run(uri)
        assert history_again == history and again.data.tags == run.data.tags

    def test_a_crashed_run_is_backfilled_and_stays_running(self, tmp_path, uri):
        """A log that ends mid-epoch (the process died): its whole epochs go to MLflow, not
        the partial one a resume will run again; the MLflow run is left RUNNING, for a resume
        to go on with."""
        log = tmp_path / "run.jsonl"
        bus = Bus([], log=str(log), learning_rate=0.1)
        train(bus, 2, end=False)
        bus.epoch_begin(2)
        bus.batch_begin(0)
        bus.batch_end(0, {"loss": 0.3})
        bus.flush()  # the log as a crash here leaves it
        backfill(log, uri, batch_every=1)
        run, history = mlflow_run(uri)
        assert run.info.status == "RUNNING"
        whole = {k: [(s, v) for s, v in points if s <= 8]
                 for k, points in expected_metrics(log, 1).items()}
        assert_exactly_once(history, whole)
        assert history["batch_loss"][-1][0] == 8  # epochs 0 and 1; not epoch 2's batch
        backfill(log, uri, batch_every=1)
        assert mlflow_run(uri)[1] == history
        bus.close()
        # The run resumed with the sink goes on in the same MLflow run, each step once.
        with Bus([], log=[str(log), MLflowSink(uri, batch_every=1)], learning_rate=0.1,
                 resume=True) as bus:
            assert bus.initial_epoch == 2
            train(bus, 3, start=bus.initial_epoch)
        run, history = mlflow_run(uri)
        assert run.info.status == "FINISHED"
        assert_exactly_once(history, expected_metrics(log, 1))

    def test_a_missing_log_is_refused(self, tmp_path, uri):
        with pytest.raises(ConfigError, match="no such log"):
            backfill(tmp_path / "none.jsonl", uri)

"""The MLflow sink against a real local MLflow tracking store (MLflow's file store in a temp
dir, read back through MLflow's own client): what lands where, and exactly once through a
SIGKILL, a resume and repeated backfills; and a log as untrusted input: which files it can
have uploaded (what the store's artifacts hold afterwards), and which MLflow run it can write."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import string
import subprocess
import sys
import threading
import warnings
import zipfile
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventbus import Bus, RunWarning, SinkFailureWarning
from eventbus import records as r
from eventbus.cli import main as cli_main
from eventbus.effective import read_effective
from eventbus.errors import ConfigError
from sinks.mlflow import (
    LAST_RECORD_TAG,
    RUN_ID_TAG,
    SEQ_TAG,
    STARTED_TAG,
    MLflowSink,
    _Claim,
    backfill,
    check_run_id,
)

pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1] / "eventbus"))
from crash_runs import running  # noqa: E402

WORKER = Path(__file__).with_name("mlflow_worker.py")
#: How an HDF5 file starts: what a checkpoint the sink uploads must begin with.
H5 = b"\x89HDF\r\n\x1a\n"


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
        checkpoint.write_bytes(H5 + b"weights")
        log = tmp_path / "run.jsonl"
        sink = MLflowSink(uri, batch_every=2)
        with Bus([ReduceLROnPlateau(patience=1, factor=0.5)], log=[str(log), sink],
                 learning_rate=0.1, run_id="run-a") as bus:
            train(bus, 4, end=False)
            bus.record(r.CheckpointSaved(path=str(checkpoint), size=15, epoch=3,
                                         sha256=hashlib.sha256(H5 + b"weights").hexdigest()))
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
        assert Path(local).read_bytes() == H5 + b"weights"

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


@given(st.text(max_size=300))
def test_every_name_becomes_a_key_mlflow_takes(name):
    """Property, with MLflow's own validators: any metric, param or tag name becomes a key
    MLflow accepts. (``val//loss``, ``acc/`` and ``a/./b`` are refused by MLflow; one such
    metric made it refuse the whole flush, and every metric of the run was lost.)"""
    from mlflow.utils.validation import (
        _validate_metric_name,
        _validate_param_name,
        _validate_tag_name,
    )

    from sinks.mlflow import _key

    key = _key(name)
    _validate_metric_name(key)
    _validate_param_name(key)
    _validate_tag_name(key)
    assert _key(key) == key  # a key is its own key


def test_a_metric_name_mlflow_would_refuse_loses_no_other_metric(tmp_path, uri):
    log = tmp_path / "run.jsonl"
    with Bus([], log=[str(log), MLflowSink(uri)], learning_rate=0.1) as bus:
        bus.train_begin({"epochs": 2})
        for epoch in range(2):
            bus.epoch_begin(epoch)
            bus.epoch_end(epoch, {"loss": 1.0 - epoch / 10, "val//loss": 2.0})
        bus.train_end()
    assert bus.failures == []
    _, history = mlflow_run(uri)
    assert [v for _, v in history["loss"]] == [1.0, 0.9]
    assert [v for _, v in history["val/_/loss"]] == [2.0, 2.0]


def fit_with_names_that_make_one_key(bus: Bus, epochs: int, *, start: int = 0,
                                     end: bool = True) -> None:
    """``recall@5`` and ``recall#5`` both make ``recall_5``; the batch metric ``loss``
    (``batch_loss``, shown first) and the epoch metric ``batch_loss`` make ``batch_loss``."""
    bus.train_begin({"epochs": epochs, "lr@x": 1, "lr#x": 2})
    for epoch in range(start, epochs):
        bus.epoch_begin(epoch)
        bus.batch_begin(0)
        bus.batch_end(0, {"loss": 10.0 + epoch})
        bus.epoch_end(epoch, {"recall@5": 0.5 + epoch, "recall#5": 0.1 + epoch,
                              "batch_loss": 20.0 + epoch})
    if end:
        bus.train_end()


def test_names_that_make_one_key_each_keep_a_key_of_their_own(tmp_path, uri):
    """Two names that MLflow's characters make one key would merge into one history, one of
    them lost: the first name the log shows keeps the key, the next gets ``_2``, said once in
    a warning. A resume (which replays the log) and a backfill give each name the same key."""
    log = tmp_path / "run.jsonl"
    with pytest.warns(RunWarning):  # each said as the log records it (below)
        bus = Bus([], log=[str(log), MLflowSink(uri, batch_every=1)], learning_rate=0.1,
                  meta={"a@b": "first", "a#b": "second"})
        fit_with_names_that_make_one_key(bus, 3, end=False)
        bus.close()  # as a crash leaves it: no train_end
    with Bus([], log=[str(log), MLflowSink(uri, batch_every=1)], learning_rate=0.1,
             resume=True) as bus:
        fit_with_names_that_make_one_key(bus, 4, start=bus.initial_epoch)
    run, history = mlflow_run(uri)
    assert_exactly_once(history, {
        "recall_5": [(e, 0.5 + e) for e in range(4)],
        "recall_5_2": [(e, 0.1 + e) for e in range(4)],
        "batch_loss": [(e + 1, 10.0 + e) for e in range(4)],
        "batch_loss_2": [(e, 20.0 + e) for e in range(4)]})
    params = run.data.params
    assert (params["lr_x"], params["lr_x_2"]) == ("1", "2")
    assert (params["meta.a_b"], params["meta.a_b_2"]) == ("first", "second")
    said = [rec.message for rec in read_effective(log)
            if rec.kind == "warning" and rec.source == "mlflow"]
    assert sorted(said) == sorted([
        "mlflow: metric 'recall#5' is sent to MLflow as 'recall_5_2': 'recall_5' is metric "
        "'recall@5'",
        "mlflow: metric 'batch_loss' is sent to MLflow as 'batch_loss_2': 'batch_loss' is "
        "batch metric 'loss'",
        "mlflow: param 'meta.a#b' is sent to MLflow as 'meta.a_b_2': 'meta.a_b' is param "
        "'meta.a@b'",
        "mlflow: param 'lr#x' is sent to MLflow as 'lr_x_2': 'lr_x' is param 'lr@x'"])
    with pytest.warns(RunWarning) as caught:
        backfill(log, uri, experiment="again", batch_every=1)
    assert sorted(str(w.message) for w in caught) == sorted(said)
    again, history_again = mlflow_run(uri, "again")
    assert history_again == history and again.data.params == params


def log_on_a_disk_that_fills(path: Path) -> tuple[object, dict[str, bool]]:
    """A JSON Lines log whose writes fail with ENOSPC while ``full["on"]``."""
    import errno

    from eventbus.jsonl import JsonlWriter

    log = JsonlWriter(path)
    real, full = log._write_buffer, {"on": False}

    def write_buffer() -> None:
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real()

    log._write_buffer = write_buffer
    return log, full


def test_mlflow_waits_while_the_log_keeps_records_it_could_not_write(tmp_path, uri):
    """A full disk made the log keep epoch 1 for its next flush while MLflow was sent it; a
    kill then left MLflow ahead of the log, and the resume refused that MLflow run for good.
    The logs flush first, and MLflow waits while one is behind."""
    log, full = log_on_a_disk_that_fills(tmp_path / "run.jsonl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkFailureWarning)
        with Bus([], log=[log, MLflowSink(uri)], learning_rate=0.1) as bus:
            bus.train_begin({"epochs": 3})
            for epoch in range(3):
                full["on"] = epoch == 1
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})
                if epoch == 1:
                    _, history = mlflow_run(uri)
                    assert [s for s, _ in history["loss"]] == [0]  # not ahead of the log
            bus.train_end()
    _, history = mlflow_run(uri)
    assert [s for s, _ in history["loss"]] == [0, 1, 2]


def test_mlflow_forgets_at_close_what_the_log_could_not_write(tmp_path, uri, monkeypatch):
    """A disk full to the end: the log's last write fails at close, and MLflow, closed
    before the logs, sent what it held all the same, ahead of the log a resume reads."""
    import eventbus.sink

    monkeypatch.setattr(eventbus.sink, "CLOSE_RETRY_SECONDS", 0.1)
    log, full = log_on_a_disk_that_fills(tmp_path / "run.jsonl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkFailureWarning)
        bus = Bus([], log=[log, MLflowSink(uri)], learning_rate=0.1)
        bus.train_begin({"epochs": 3})
        for epoch in range(3):
            full["on"] = epoch >= 1
            bus.epoch_begin(epoch)
            bus.epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})
        bus.train_end()
        bus.close()  # the log gives up its last records: a sink failure
    assert [f.sink for f in bus.failures][-1].startswith("jsonl")
    _, history = mlflow_run(uri)
    assert [s for s, _ in history["loss"]] == [0]


class TestHoldBack:
    @settings(max_examples=15, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(fits=st.integers(1, 2), epochs=st.integers(1, 3), batches=st.integers(1, 3),
           data=st.data())
    def test_mlflow_never_holds_an_epoch_in_progress(self, tmp_path_factory, monkeypatch,
                                                     fits, epochs, batches, data):
        """Whatever the flushes (decisions mid-epoch, the bus's epoch-end flushes), after
        each one MLflow holds exactly the batches of the epochs that have ended, each once;
        after train_end, every batch. A further fit of the bus, its epochs counted from 0
        again, is held back as the first was (its epochs went out unended before)."""
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        uri = (tmp_path_factory.mktemp("store") / "mlruns").as_uri()
        total = fits * epochs * batches
        flushes = data.draw(st.sets(st.integers(0, total - 1)), label="flush after")
        bus = Bus([], log=[MLflowSink(uri, batch_every=1)], learning_rate=0.1)
        step, ended = 0, 0  # batches done, and those of ended epochs
        for _ in range(fits):
            bus.train_begin({"epochs": epochs})
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


#: A run of 3 epochs whose event log is taken out in epoch 1 (a write fails, and it keeps
#: nothing: max_kept_bytes=0); the "killed" attempt (its losses 0.5 higher) dies in epoch 2.
_LOG_TAKEN_OUT = r"""
import errno, os, signal, sys
from eventbus import Bus
from eventbus.jsonl import JsonlWriter
from sinks.mlflow import MLflowSink

path, uri, attempt = sys.argv[1:]
log = JsonlWriter(path, max_kept_bytes=0)
write_buffer, failing = log._write_buffer, False


def failing_write_buffer():
    if failing:
        raise OSError(errno.EIO, "Input/output error")
    write_buffer()


log._write_buffer = failing_write_buffer
with Bus([], log=[log, MLflowSink(uri)], resume=True) as bus:
    bus.train_begin({"epochs": 3})
    for epoch in range(bus.initial_epoch, 3):
        failing = attempt == "killed" and epoch == 1
        if attempt == "killed" and epoch == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        bus.epoch_begin(epoch)
        bus.epoch_end(epoch, {"loss": epoch + (0.5 if attempt == "killed" else 0.0)})
    bus.train_end()
"""


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

    def test_a_log_taken_out_then_killed_and_resumed_holds_the_logs_run(self, tmp_path, uri):
        """The event log is taken out in epoch 1 (its disk fails) and the process SIGKILLed
        in epoch 2: MLflow got nothing the log lacks (the killed attempt's epoch 1), so the
        resume goes on with the MLflow run, which ends FINISHED with the resumed values."""
        log = tmp_path / "run.jsonl"
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
        for attempt in ("killed", "resumed"):
            done = subprocess.run([sys.executable, "-c", _LOG_TAKEN_OUT, str(log), uri, attempt],
                                  env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == (-9 if attempt == "killed" else 0), done.stderr
        run, history = mlflow_run(uri)
        assert run.info.status == "FINISHED"
        assert history["loss"] == [(0, 0.5), (1, 1.0), (2, 2.0)]
        assert_exactly_once(history, expected_metrics(log, None))

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


# --- a log is untrusted input: the files it can have uploaded ---------------------------------


def h5(body: bytes = b"weights") -> bytes:
    return H5 + body


def saved(path: str | Path, data: bytes, **fields) -> r.CheckpointSaved:
    """A checkpoint_saved record naming ``path`` with the size and sha256 of ``data``."""
    record = {"path": str(path), "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
              "epoch": 0, **fields}
    return r.CheckpointSaved(**record)


def log_naming(log: Path, *saves: r.CheckpointSaved, run_id: str | None = None) -> Path:
    """A finished run's log (one epoch) whose checkpoint_saved records are ``saves``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with Bus([], log=str(log), run_id=run_id) as bus:
        train(bus, 1, end=False)
        for save in saves:
            bus.record(save)
        bus.train_end()
    return log


def stored(uri: str) -> dict[str, bytes]:
    """Every file under the artifact folders of the store's runs (read from the file store
    itself, not through MLflow): path below the run's artifacts -> bytes. A link there would
    show as one (it is listed, not followed)."""
    client = MlflowClient(uri)
    out: dict[str, bytes] = {}
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            root = Path(url2pathname(urlparse(run.info.artifact_uri).path))
            for found in sorted(root.rglob("*")) if root.exists() else ():
                if found.is_symlink():
                    out[found.relative_to(root).as_posix()] = b"<link>"
                elif found.is_file():
                    out[found.relative_to(root).as_posix()] = found.read_bytes()
    return out


def backfill_warned(log: Path, uri: str, **kwargs) -> list[str]:
    """Backfill ``log``; the warnings it gave (a refused checkpoint each)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backfill(log, uri, **kwargs)
    return [str(w.message) for w in caught if issubclass(w.category, RunWarning)]


def one_line_error(capsys) -> str:
    """What the command line wrote to stderr: one line, no traceback."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_time_mlflow_cannot_hold_is_the_logs_error_in_one_line(tmp_path, uri, capsys):
    """A log's record at time 1e308 (a log is anyone's): MLflow's milliseconds overflowed,
    and convert ended in an OverflowError traceback."""
    import orjson

    log = tmp_path / "run.jsonl"
    with Bus([], log=str(log)) as bus:
        train(bus, 2)
    lines = log.read_bytes().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if orjson.loads(line)["kind"] == "epoch_end")
    record = orjson.loads(lines[at])
    lines[at] = orjson.dumps({**record, "time": 1e308}) + b"\n"
    log.write_bytes(b"".join(lines))
    assert cli_main(["convert", str(log), uri, "--to", "mlflow"]) == 2
    assert f"record seq {record['seq']}: time 1e+308 is no time MLflow can hold" in \
        one_line_error(capsys)


def test_a_run_starts_and_ends_when_its_log_says_live_and_in_a_backfill(tmp_path, uri):
    """The MLflow run begins at the log's header and ends at its train_end: a backfill made a
    day after the run gave a run started and ended at the conversion, after its own metrics."""
    import orjson

    log = tmp_path / "run.jsonl"
    with Bus([], log=[str(log), MLflowSink(uri, experiment="live")]) as bus:
        train(bus, 2)
    live = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    yesterday = [{**rec, "time": rec["time"] - 86400} for rec in live]
    log.write_bytes(b"".join(orjson.dumps(rec) + b"\n" for rec in yesterday))
    backfill(log, uri)
    for experiment, records in (("live", live), ("eventbus", yesterday)):
        millis = {rec["kind"]: int(rec["time"] * 1000) for rec in reversed(records)}
        run, _ = mlflow_run(uri, experiment)
        stamps = [m.timestamp for m in MlflowClient(uri).get_metric_history(run.info.run_id,
                                                                            "val_loss")]
        assert run.info.start_time == millis["header"] <= min(stamps)
        assert run.info.end_time == millis["train_end"] >= max(stamps)


def test_a_run_is_finished_when_train_end_is_sent_not_only_at_close(tmp_path, uri):
    """A bus never closed (a script that ends after train_end) left the MLflow run RUNNING:
    it is FINISHED, at train_end's time, once train_end is sent. A further fit of the bus sets
    it RUNNING again, and its own train_end FINISHED."""
    log = tmp_path / "run.jsonl"
    bus = Bus([], log=[str(log), MLflowSink(uri)])
    train(bus, 3)  # and no close
    ended = [rec for rec in read_effective(log) if rec.kind == "train_end"]
    run, _ = mlflow_run(uri)
    assert (run.info.status, run.info.end_time) == ("FINISHED", int(ended[0].time * 1000))
    bus.train_begin({"epochs": 4})
    bus.flush()
    assert mlflow_run(uri)[0].info.status == "RUNNING"
    bus.epoch_begin(3)
    bus.epoch_end(3, {"loss": 0.25})
    bus.train_end()
    ended = [rec for rec in read_effective(log) if rec.kind == "train_end"]
    run, history = mlflow_run(uri)
    assert (run.info.status, run.info.end_time) == ("FINISHED", int(ended[-1].time * 1000))
    assert history["loss"][-1] == (3, 0.25)
    bus.close()
    assert mlflow_run(uri)[0].info == run.info


@pytest.mark.parametrize("error, status", [(RuntimeError("CUDA out of memory"), "FAILED"),
                                           (KeyboardInterrupt(), "RUNNING")])
def test_a_with_block_ended_by_an_exception_leaves_the_run_failed(tmp_path, uri, error,
                                                                  status):
    """The bus records that its with-block ended by an exception: the MLflow run is then
    FAILED, as MLflow's own start_run context leaves it, where it stayed RUNNING as a run
    still going. Ctrl-C leaves it RUNNING, as a kill does (the logs are left as a kill leaves
    them). A resume sets it RUNNING again, and FINISHED at the end."""
    log = tmp_path / "run.jsonl"
    with pytest.raises(type(error)), Bus([], log=[str(log), MLflowSink(uri)]) as bus:
        train(bus, 2, end=False)
        bus.epoch_begin(2)
        raise error
    raised = [rec for rec in read_effective(log) if rec.kind == "warning"]
    run, history = mlflow_run(uri)
    assert run.info.status == status
    if status == "FAILED":
        assert run.info.end_time == int(raised[-1].time * 1000)
    assert [step for step, _ in history["loss"]] == [0, 1]
    backfill(log, uri, experiment="backfilled")  # as the live sink left it
    assert mlflow_run(uri, "backfilled")[0].info.status == status
    with Bus([], log=[str(log), MLflowSink(uri)], resume=True) as bus:
        train(bus, 3, start=bus.initial_epoch, end=False)  # epoch 2 is sent as it ends
        assert mlflow_run(uri)[0].info.status == "RUNNING"
        bus.train_end()
    run, history = mlflow_run(uri)
    assert run.info.status == "FINISHED"
    assert [step for step, _ in history["loss"]] == [0, 1, 2]
    # A backfill of the resumed log says the same: the resume went on past what ended the
    # first attempt (it was left FAILED).
    backfill(log, uri, experiment="resumed")
    assert mlflow_run(uri, "resumed")[0].info.status == "FINISHED"


class TestCheckpointUpload:
    def test_a_checkpoint_below_the_root_with_its_size_and_sha_is_uploaded(
            self, tmp_path, uri, monkeypatch):
        """An HDF5 file and a .keras zip below the log's folder, named absolutely or relative
        to that folder (not to the working directory), are uploaded with their bytes."""
        run = tmp_path / "run"
        (run / "ckpts").mkdir(parents=True)
        best, rel = h5(b"best"), h5(b"relative")
        (run / "ckpts" / "best.h5").write_bytes(best)
        (run / "ckpts" / "rel.h5").write_bytes(rel)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("config.json", "{}")
        keras = buffer.getvalue()
        (run / "model.keras").write_bytes(keras)
        log = log_naming(run / "run.jsonl", saved(run / "ckpts" / "best.h5", best),
                         saved("ckpts/rel.h5", rel), saved(run / "model.keras", keras))
        monkeypatch.chdir(tmp_path)  # "ckpts/rel.h5" is not below here
        assert backfill_warned(log, uri) == []
        assert stored(uri) == {"checkpoints/best.h5": best, "checkpoints/rel.h5": rel,
                               "checkpoints/model.keras": keras}

    def test_nothing_outside_the_root_is_uploaded(self, tmp_path, uri):
        """/etc/passwd, the disk's root, a checkpoint beside the log's folder (absolute, or
        reached by '..') are refused, each with a warning naming it; the run still lands.
        With checkpoint_root above them, the checkpoint is uploaded and /etc still is not."""
        run, other = tmp_path / "run", tmp_path / "other"
        other.mkdir()
        data = h5(b"beside")
        (other / "x.h5").write_bytes(data)
        passwd = Path("/etc/passwd").read_bytes()
        log = log_naming(run / "run.jsonl", saved("/etc/passwd", passwd), saved("/", b""),
                         saved(other / "x.h5", data), saved("../other/x.h5", data))
        said = backfill_warned(log, uri)
        assert stored(uri) == {}
        assert len(said) == 4
        assert "/etc/passwd is not below the checkpoint root" in said[0]
        assert "checkpoint / " in said[1]
        assert f"{other / 'x.h5'} is not below the checkpoint root" in said[2]
        assert "../other/x.h5 has a '..' in it" in said[3]
        assert mlflow_run(uri)[1]["loss"] == [(0, 1.0)]  # the rest of the run is there
        wider = (tmp_path / "store2").as_uri()
        said = backfill_warned(log, wider, checkpoint_root=tmp_path)
        assert stored(wider) == {"checkpoints/x.h5": data}
        assert [m for m in said if "/etc/passwd" in m and "not below" in m]

    def test_a_directory_is_never_uploaded(self, tmp_path, uri):
        """A folder of checkpoints below the root (and the root itself) is refused, as a
        directory; nothing of what it holds is uploaded."""
        run = tmp_path / "run"
        (run / "ckpts").mkdir(parents=True)
        (run / "ckpts" / "a.h5").write_bytes(h5())
        log = log_naming(run / "run.jsonl", saved(run / "ckpts", h5()), saved("ckpts", h5()),
                         saved(run, h5()))
        said = backfill_warned(log, uri)
        assert stored(uri) == {}
        assert "is a directory" in said[0] and "is a directory" in said[1]
        assert "is not below the checkpoint root" in said[2]

    def test_links_are_not_followed(self, tmp_path, uri):
        """A link at the file (to a checkpoint that would pass, or to /etc/passwd) and a
        checkpoint in a folder reached through a link below the root are refused."""
        run = tmp_path / "run"
        (run / "real").mkdir(parents=True)
        data = h5()
        (run / "real" / "ok.h5").write_bytes(data)
        (run / "link.h5").symlink_to(run / "real" / "ok.h5")
        (run / "passwd.h5").symlink_to("/etc/passwd")
        (run / "via").symlink_to(run / "real", target_is_directory=True)
        passwd = Path("/etc/passwd").read_bytes()
        log = log_naming(run / "run.jsonl", saved(run / "link.h5", data),
                         saved("passwd.h5", passwd), saved("via/ok.h5", data))
        said = backfill_warned(log, uri)
        assert stored(uri) == {}
        assert "link.h5 is a link" in said[0] and "passwd.h5 is a link" in said[1]
        assert "via/ok.h5 is in a folder reached through a link (via)" in said[2]

    def test_a_fifo_or_a_device_is_never_opened(self, tmp_path, uri):
        """A FIFO where a checkpoint was (opening it would wait for a writer forever) and a
        device are refused without being opened: the backfill ends at once."""
        run = tmp_path / "run"
        run.mkdir()
        os.mkfifo(run / "pipe.h5")
        log = log_naming(run / "run.jsonl", saved(run / "pipe.h5", h5()),
                         saved("/dev/zero", h5()))
        said: list[str] = []
        done = threading.Thread(target=lambda: said.extend(backfill_warned(
            log, uri, checkpoint_root="/dev") + backfill_warned(
            log, (tmp_path / "store2").as_uri())), daemon=True)
        done.start()
        done.join(timeout=60)
        assert not done.is_alive(), "the backfill waited on the FIFO"
        assert any("/dev/zero is a character device" in m for m in said)
        assert any("pipe.h5 is a FIFO" in m for m in said)
        assert stored(uri) == {} and stored((tmp_path / "store2").as_uri()) == {}

    def test_size_sha_and_signature_are_checked(self, tmp_path, uri):
        """Below the root, a file whose size or sha256 is not the record's, or that does not
        start as a checkpoint does (its size and sha256 right), is refused, and one that is
        gone is a missing checkpoint; the one that passes is uploaded."""
        run = tmp_path / "run"
        run.mkdir()
        good, script = h5(b"good"), b"#!/bin/sh\necho hi\n"
        for name, data in (("good.h5", good), ("sha.h5", h5(b"abcd")), ("size.h5", h5()),
                           ("script.h5", script)):
            (run / name).write_bytes(data)
        log = log_naming(run / "run.jsonl", saved(run / "good.h5", good),
                         saved(run / "sha.h5", h5(b"wxyz")),
                         saved(run / "size.h5", h5(b"longer")),
                         saved(run / "script.h5", script), saved(run / "gone.h5", good))
        said = backfill_warned(log, uri)
        assert stored(uri) == {"checkpoints/good.h5": good}
        assert "sha.h5 does not hold the bytes the log records" in said[0]
        assert "size.h5 is 15 bytes; the log records 14" in said[1]
        assert "script.h5 does not start as a checkpoint does" in said[2]
        assert "gone.h5 is gone" in said[3]

    def test_a_file_swapped_after_its_check_is_not_what_is_sent(self, tmp_path, uri,
                                                              monkeypatch):
        """What is uploaded is a private copy of the bytes hashed: the file replaced by other
        bytes, or by a link to /etc/passwd, between the check and the upload changes
        nothing that is sent."""
        run = tmp_path / "run"
        run.mkdir()
        first, second = h5(b"first"), h5(b"second")
        (run / "a.h5").write_bytes(first)
        (run / "b.h5").write_bytes(second)
        log = log_naming(run / "run.jsonl", saved(run / "a.h5", first),
                         saved(run / "b.h5", second))
        upload = MlflowClient.log_artifact

        def swap_then_upload(client, run_id, local, artifact_path=None):
            name = Path(local).name
            (run / name).unlink()
            if name == "a.h5":
                (run / name).write_bytes(h5(b"swapped in"))
            else:
                (run / name).symlink_to("/etc/passwd")
            return upload(client, run_id, local, artifact_path)

        monkeypatch.setattr(MlflowClient, "log_artifact", swap_then_upload)
        assert backfill_warned(log, uri) == []
        assert stored(uri) == {"checkpoints/a.h5": first, "checkpoints/b.h5": second}

    def test_a_file_this_process_wrote_is_uploaded_from_anywhere(self, tmp_path, uri):
        """Live, a checkpoint this process's writer wrote (sinks.hdf5) is uploaded wherever
        it is; one beside it that the writer did not write, or that changed since, is not.
        The same log backfilled (a record read back, not live) uploads neither."""
        from sinks.hdf5 import write_atomically

        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        data, other = h5(b"written here"), h5(b"not written here")
        write_atomically(elsewhere / "w.h5", lambda tmp: Path(tmp).write_bytes(data))
        write_atomically(elsewhere / "t.h5", lambda tmp: Path(tmp).write_bytes(data))
        with open(elsewhere / "t.h5", "r+b") as file:  # same bytes, rewritten: changed since
            file.write(data)
        (elsewhere / "x.h5").write_bytes(other)
        log = tmp_path / "logs" / "run.jsonl"
        log.parent.mkdir()
        sink = MLflowSink(uri)
        with pytest.warns(RunWarning) as said, Bus([], log=[str(log), sink]) as bus:
            train(bus, 1, end=False)
            bus.record(saved(elsewhere / "w.h5", data))
            bus.record(saved(elsewhere / "t.h5", data))
            bus.record(saved(elsewhere / "x.h5", other))
            bus.train_end()
        assert stored(uri) == {"checkpoints/w.h5": data}
        assert [path for path, _ in sink.refused_checkpoints] == \
            [str(elsewhere / "t.h5"), str(elsewhere / "x.h5")]
        assert all("not below the checkpoint root" in why for _, why in sink.refused_checkpoints)
        assert sum("x.h5" in str(w.message) for w in said) == 1
        again = (tmp_path / "store2").as_uri()
        assert len(backfill_warned(log, again)) == 3 and stored(again) == {}

    def test_a_file_mostly_holes_is_refused_unread(self, tmp_path, uri):
        """A planted sparse file (a checkpoint's first bytes, then a 128 MiB hole) whose
        record claims its size: refused as mostly holes before any of it is read or copied
        (a dense copy of the claimed size was written, then refused by its sha256)."""
        run = tmp_path / "run"
        run.mkdir()
        with open(run / "hole.h5", "wb") as file:
            file.write(h5())
            file.truncate(128 << 20)
        log = log_naming(run / "run.jsonl", r.CheckpointSaved(
            path=str(run / "hole.h5"), size=128 << 20, sha256="0" * 64, epoch=0))
        said = backfill_warned(log, uri)
        assert len(said) == 1 and "mostly holes" in said[0] and stored(uri) == {}

    def test_nothing_is_copied_of_a_file_whose_sha256_is_not_the_recorded(self, tmp_path):
        """The bytes are hashed before the private copy is made: a file of the recorded size
        and other bytes leaves nothing in the private folder."""
        from eventbus.confine import Refused
        from sinks.mlflow_checkpoints import copy_checked as _copy

        data = h5(b"x" * (3 << 20))
        (tmp_path / "c.h5").write_bytes(data)
        (tmp_path / "private").mkdir()
        fd = os.open(tmp_path / "c.h5", os.O_RDONLY)
        try:
            with pytest.raises(Refused, match="another sha256"):
                _copy(fd, "c.h5", {"size": len(data), "sha256": "0" * 64},
                      str(tmp_path / "private"))
            assert os.listdir(tmp_path / "private") == []
            copy = _copy(fd, "c.h5", {"size": len(data),
                                       "sha256": hashlib.sha256(data).hexdigest()},
                         str(tmp_path / "private"))
            assert Path(copy).read_bytes() == data
        finally:
            os.close(fd)

    def test_a_resumed_run_uploads_nothing_its_log_names_outside_the_root(self, tmp_path,
                                                                         uri):
        """On resume the sink catches up the log's checkpoint records: read back, not
        written by this process, so /etc/passwd is refused and the checkpoint below the
        log's folder is uploaded."""
        run = tmp_path / "run"
        run.mkdir()
        data, passwd = h5(), Path("/etc/passwd").read_bytes()
        (run / "ok.h5").write_bytes(data)
        log = run / "run.jsonl"
        bus = Bus([], log=str(log), learning_rate=0.1)
        train(bus, 1, end=False)
        bus.record(saved("/etc/passwd", passwd))
        bus.record(saved(run / "ok.h5", data))
        bus.close()  # no train_end: a crashed run, to resume
        sink = MLflowSink(uri)
        with pytest.warns(RunWarning, match="/etc/passwd is not below"), \
                Bus([], log=[str(log), sink], learning_rate=0.1, resume=True) as bus:
            train(bus, 2, start=bus.initial_epoch)
        assert stored(uri) == {"checkpoints/ok.h5": data}
        assert sink.refused_checkpoints == [("/etc/passwd", sink.refused_checkpoints[0][1])]

    def test_convert_takes_a_checkpoint_root(self, tmp_path, uri, capsys):
        """``--checkpoint-root DIR`` widens (or narrows) where checkpoints are taken from;
        with another format than mlflow it is an error."""
        run, other = tmp_path / "run", tmp_path / "other"
        other.mkdir()
        data = h5()
        (other / "x.h5").write_bytes(data)
        log = log_naming(run / "run.jsonl", saved("x.h5", data))
        assert cli_main(["convert", str(log), uri, "--to", "mlflow", "--checkpoint-root",
                         str(other)]) == 0
        assert stored(uri) == {"checkpoints/x.h5": data}
        capsys.readouterr()
        assert cli_main(["convert", str(log), str(tmp_path / "h.csv"), "--checkpoint-root",
                         str(other)]) == 2
        assert "--checkpoint-root is for --to mlflow" in one_line_error(capsys)
        assert not (tmp_path / "h.csv").exists()

    def test_a_path_relative_to_where_training_ran_is_taken_from_there(
            self, tmp_path, uri, monkeypatch, capsys):
        """Training in a folder recorded ``run/checkpoints/best.h5``, its log in ``run/``:
        convert from that folder finds it from the working directory (it looked only in
        ``run/run/checkpoints/`` and said the file was gone). What the working directory
        leads to must still be below the root, with no link followed; a path found nowhere
        says where it was looked for, and what to pass."""
        run = tmp_path / "run"
        (run / "checkpoints").mkdir(parents=True)
        (tmp_path / "elsewhere").mkdir()
        best, beside = h5(b"best"), h5(b"beside")
        (run / "checkpoints" / "best.h5").write_bytes(best)
        (tmp_path / "beside.h5").write_bytes(beside)  # here, but not below the root
        (tmp_path / "elsewhere" / "x.h5").write_bytes(beside)
        (run / "via").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
        log_naming(run / "events.jsonl", saved("run/checkpoints/best.h5", best),
                   saved("beside.h5", beside), saved("run/via/x.h5", beside),
                   saved("run/checkpoints/gone.h5", best))
        monkeypatch.chdir(tmp_path)
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # the command line shows each as a line
            assert cli_main(["convert", "run/events.jsonl", uri, "--to", "mlflow"]) == 0
        assert stored(uri) == {"checkpoints/best.h5": best}
        said = [line for line in capsys.readouterr().err.splitlines() if "checkpoint" in line]
        assert len(said) == 3, said
        hint = "; not uploaded (pass the folder training ran in as --checkpoint-root DIR)"
        assert said[0].endswith(f"checkpoint beside.h5 is not at {run / 'beside.h5'}{hint}")
        assert "checkpoint run/via/x.h5 is in a folder reached through a link (via)" in said[1]
        assert said[2].endswith(f"checkpoint run/checkpoints/gone.h5 is not at "
                                f"{run / 'checkpoints' / 'gone.h5'} nor at "
                                f"{run / 'run' / 'checkpoints' / 'gone.h5'}{hint}")

    def test_a_wrong_file_where_training_ran_gives_way_to_the_right_one_below_the_root(
            self, tmp_path, uri, monkeypatch):
        """``ckpt.h5`` recorded relative to a folder that is not this one: the working
        directory holds a file of that name with other bytes, the log's folder the right one.
        The right one is uploaded (the wrong one, found first, hid it)."""
        run = tmp_path / "run"
        run.mkdir()
        right, wrong = h5(b"right"), h5(b"wrong, and longer")
        (run / "ckpt.h5").write_bytes(right)
        log_naming(run / "events.jsonl", saved("ckpt.h5", right))
        (run / "sub").mkdir()
        (run / "sub" / "ckpt.h5").write_bytes(wrong)
        monkeypatch.chdir(run / "sub")  # below the root: the working directory is tried first
        assert backfill_warned(run / "events.jsonl", uri) == []
        assert stored(uri) == {"checkpoints/ckpt.h5": right}

    def test_a_bad_checkpoint_root_names_the_field(self):
        with pytest.raises(ConfigError, match="checkpoint_root") as info:
            MLflowSink(checkpoint_root="")
        assert info.value.field == "checkpoint_root"


# --- a log is untrusted input: the MLflow run it can write --------------------------------------

_RUN_ID_CHARS = string.ascii_letters + string.digits + "._-"


def snapshot(uri: str) -> tuple:
    """All an MLflow run is: status, end time, tags, params, metric histories, artifacts."""
    run, history = mlflow_run(uri)
    return (run.info.status, run.info.end_time, run.data.tags, run.data.params, history,
            stored(uri))


class TestWhichRun:
    @given(st.one_of(st.text(max_size=140),
                     st.text(alphabet=_RUN_ID_CHARS, max_size=140),
                     st.text(alphabet=_RUN_ID_CHARS + "'\\\"` \n%*/é", max_size=20)))
    def test_the_run_id_rule(self, run_id):
        """A run id is accepted exactly when it is 1 to 128 ASCII letters, digits, '.', '_'
        and '-'; anything else is a ConfigError naming run_id and the sink."""
        fits = 1 <= len(run_id) <= 128 and all(c in _RUN_ID_CHARS for c in run_id)
        if fits:
            assert check_run_id(run_id) == run_id
        else:
            with pytest.raises(ConfigError) as info:
                check_run_id(run_id)
            assert (info.value.field, info.value.plugin) == ("run_id", "mlflow")

    def test_a_quote_in_the_run_id_never_reaches_mlflow(self, tmp_path, uri, capsys):
        """A log whose run id would change MLflow's search filter is refused before the store
        is asked anything: a one-line error (exit 2) from the command line, a ConfigError
        when a live sink opens; no MLflow run is made."""
        log = log_naming(tmp_path / "run.jsonl", run_id="x' OR tags.`eventbus.run_id` != '")
        with pytest.raises(ConfigError, match="run id") as info:
            backfill(log, uri)
        assert info.value.field == "run_id"
        assert cli_main(["convert", str(log), uri, "--to", "mlflow"]) == 2
        assert "cannot name an MLflow run" in one_line_error(capsys)
        # Live, the sink is opened at the first event; the bus then reports it failed.
        with pytest.warns(SinkFailureWarning, match="cannot name an MLflow run"), \
                pytest.raises(ConfigError, match="cannot name an MLflow run") as info, \
                Bus([], log=[MLflowSink(uri)], run_id="a'b") as bus:
            train(bus, 1)
        assert (info.value.field, info.value.plugin) == ("run_id", "mlflow")
        client = MlflowClient(uri)
        assert all(not client.search_runs([e.experiment_id])
                   for e in client.search_experiments())

    def test_a_log_carrying_another_runs_id_leaves_that_run_as_it_was(self, tmp_path, uri,
                                                                    capsys):
        """A finished MLflow run, and a log with its run id that does not go on from it
        (another run's log): backfill, the command line and a live sink all refuse it
        (ConfigError naming run_id; live, when the sink opens) and the MLflow run is not
        reopened nor written."""
        first = tmp_path / "first"
        first.mkdir()
        (first / "ok.h5").write_bytes(h5())
        with Bus([], log=[str(first / "run.jsonl"), MLflowSink(uri)], run_id="shared",
                 learning_rate=0.1) as bus:
            train(bus, 2, end=False)
            bus.record(saved(first / "ok.h5", h5()))
            bus.train_end()
        before = snapshot(uri)
        assert before[0] == "FINISHED" and before[2][STARTED_TAG] and before[2][LAST_RECORD_TAG]
        other = tmp_path / "other"
        other.mkdir()
        (other / "evil.h5").write_bytes(h5(b"evil"))
        hostile = log_naming(other / "run.jsonl", saved(other / "evil.h5", h5(b"evil")),
                             run_id="shared")
        with pytest.raises(ConfigError, match="does not go on from it") as info:
            backfill(hostile, uri)
        assert info.value.field == "run_id"
        assert cli_main(["convert", str(hostile), uri, "--to", "mlflow"]) == 2
        assert "carries the run id shared" in one_line_error(capsys)
        with pytest.warns(SinkFailureWarning, match="it starts a log of its own"), \
                pytest.raises(ConfigError, match="it starts a log of its own") as info, \
                Bus([], log=[str(other / "live.jsonl"), MLflowSink(uri)],
                    run_id="shared") as bus:
            train(bus, 3)
        assert info.value.field == "run_id"
        assert snapshot(uri) == before

    def test_a_log_must_hold_the_header_and_the_record_the_run_ends_with(self, tmp_path, uri):
        """The log the MLflow run was written from, cut before its last record, or with that
        record's time or its header's time changed, is refused and the run left as it was;
        the log itself adds nothing and leaves the run FINISHED."""
        log = tmp_path / "run.jsonl"
        with Bus([], log=str(log), learning_rate=0.1) as bus:
            train(bus, 3)
        backfill(log, uri)
        before = snapshot(uri)
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        last = int(before[2][LAST_RECORD_TAG].split()[0])
        cut = [rec for rec in lines if rec["seq"] < last]
        moved = [{**rec, "time": rec["time"] + 1e-3} if rec["seq"] == last else rec
                 for rec in lines]
        header = [{**rec, "time": rec["time"] - 1} if rec["kind"] == "header" else rec
                  for rec in lines]
        for name, records in (("cut", cut), ("moved", moved), ("header", header)):
            forged = tmp_path / f"{name}.jsonl"
            forged.write_text("".join(json.dumps(rec) + "\n" for rec in records))
            with pytest.raises(ConfigError, match="does not go on from it"):
                backfill(forged, uri)
            assert snapshot(uri) == before, name
        backfill(log, uri)
        assert snapshot(uri) == before

    def test_a_run_no_log_is_shown_to_continue_is_not_written(self, tmp_path, uri):
        """An MLflow run carrying the run id but not the tag of the header it was written
        from (made by hand, or by an older version) is refused, and left as it was."""
        client = MlflowClient(uri)
        made = client.create_run(client.create_experiment("eventbus"),
                                 tags={RUN_ID_TAG: "by-hand"})
        client.set_terminated(made.info.run_id, status="FINISHED")
        before = snapshot(uri)
        log = log_naming(tmp_path / "run.jsonl", run_id="by-hand")
        with pytest.raises(ConfigError, match=f"no tag {STARTED_TAG}"):
            backfill(log, uri)
        assert snapshot(uri) == before

    def test_a_further_fit_of_a_resumed_run_goes_on_in_its_mlflow_run(self, tmp_path, uri):
        """A finished run resumed for a further fit: its log goes on from the MLflow run, so
        that run is reopened, gets the new epochs, each once, and is FINISHED again."""
        log = tmp_path / "run.jsonl"
        with Bus([], log=[str(log), MLflowSink(uri)], learning_rate=0.1) as bus:
            train(bus, 2)
        with pytest.warns(RunWarning, match="had finished"), \
                Bus([], log=[str(log), MLflowSink(uri)], learning_rate=0.1,
                    resume=True) as bus:
            train(bus, 4, start=bus.initial_epoch)
        run, history = mlflow_run(uri)
        assert run.info.status == "FINISHED"
        assert [s for s, _ in history["loss"]] == [0, 1, 2, 3]

    def test_a_resume_that_steps_back_still_goes_on_in_its_mlflow_run(self, tmp_path, uri):
        """A damaged latest backup makes a resume go on from an epoch earlier than the MLflow
        run holds: the records it abandons are in the log, so the run is still this log's, and
        gets every epoch once."""
        import numpy as np

        from eventbus import NumpyModel
        from plugins import BackupAndRestore

        log, backup = tmp_path / "run.jsonl", tmp_path / "backup"
        model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        bus = Bus([BackupAndRestore(str(backup))], model=model, log=[str(log), MLflowSink(uri)])
        train(bus, 3, end=False)
        bus.close()  # a crash: no train_end
        with open(backup / "latest.weights.h5", "r+b") as file:
            file.write(b"garbage!")
        model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
        with pytest.warns(RunWarning), Bus([BackupAndRestore(str(backup))], model=model,
                                           log=[str(log), MLflowSink(uri)], resume=True) as bus:
            assert bus.initial_epoch == 2
            train(bus, 5, start=bus.initial_epoch)
        assert not [f for f in bus.failures if f.kind == "sink_failed"]
        run, history = mlflow_run(uri)
        assert run.info.status == "FINISHED"
        assert [s for s, _ in history["loss"]] == [0, 1, 2, 3, 4]

    def test_epochs_a_resume_runs_again_get_the_reruns_values(self, tmp_path, uri):
        """``resume_at_most=1`` after epochs 0-3 ran: epochs 2 and 3 run again, with other
        values. MLflow cannot delete a point, so each such step's history holds the abandoned
        value, then the rerun's, which MLflow shows, and the log has a warning naming the
        steps; a step whose rerun value is the same is not logged twice. Before, the sink
        skipped every step MLflow had, and MLflow kept the abandoned values alone."""
        log = tmp_path / "run.jsonl"

        def fit(bus: Bus, shift: float) -> None:
            bus.train_begin({"epochs": 5})
            for epoch in range(bus.initial_epoch, 5):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": epoch + (shift if epoch == 3 else 0.0)})

        bus = Bus([], log=[str(log), MLflowSink(uri)])
        fit(bus, 0.0)  # (as far as epoch 4's end)
        bus.close()  # a crash: no train_end
        with pytest.warns(RunWarning, match="cannot delete metric points"), \
                Bus([], log=[str(log), MLflowSink(uri)], resume=True, resume_at_most=1) as bus:
            assert bus.initial_epoch == 2
            fit(bus, 100.0)
            bus.train_end()
        run, history = mlflow_run(uri)
        assert history["loss"] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0),
                                   (3, 103.0)]
        assert run.data.metrics["loss"] == 4.0
        client = MlflowClient(uri)
        shown = {m.step: m.value for m in sorted(
            client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.timestamp)}
        assert shown[3] == 103.0
        [warning] = [r for r in read_effective(log) if r.kind == "warning"]
        assert "steps 3," in warning.message and warning.details["steps"] == {"loss": [3]}

    def test_an_mlflow_error_is_one_line_from_the_command_line(self, tmp_path, capsys):
        """An error MLflow raises (a store URI it does not support) is a one-line error,
        exit 2, not a traceback."""
        log = log_naming(tmp_path / "run.jsonl")
        assert cli_main(["convert", str(log), "bogus://nowhere", "--to", "mlflow"]) == 2
        assert one_line_error(capsys).startswith("eventbus convert: error: MLflow: ")


# The witness: which logs may write into a found MLflow run, without a store.

_KINDS = ("train_begin", "epoch_end", "set_learning_rate", "checkpoint_saved", "train_end")


@st.composite
def logs_and_claims(draw):
    """A log (header first, seqs rising, some missing) as the sink takes its records, and what
    a found MLflow run holds: drawn from the log's own records, or not quite."""
    count = draw(st.integers(1, 12))
    seqs = sorted(draw(st.sets(st.integers(1, 40), min_size=count - 1, max_size=count - 1)))
    times = draw(st.lists(st.floats(1e9, 2e9), min_size=count, max_size=count))
    records = [{"seq": 0, "kind": "header", "time": times[0]}] + [
        {"seq": seq, "kind": draw(st.sampled_from(_KINDS)), "time": time}
        for seq, time in zip(seqs, times[1:])]
    started = repr(draw(st.sampled_from([times[0], times[0] + 1.0])))
    if draw(st.booleans()):
        last = None
    else:
        pick = draw(st.sampled_from(records))
        seq = draw(st.sampled_from([pick["seq"], pick["seq"] + 1]))
        kind = draw(st.sampled_from([pick["kind"], "epoch_end"]))
        time = draw(st.sampled_from([pick["time"], pick["time"] + 0.5]))
        last = f"{seq} {kind} {time!r}"
    return records, started, last


@given(logs_and_claims(), st.integers(0, 12))
def test_a_found_run_is_written_only_if_the_log_holds_its_header_and_last_record(case, stop):
    """Fed a log's records in order (up to ``stop``), the sink lets a found MLflow run be
    written exactly when the log has begun with the header it was written from and has held
    the very record (seq, kind, time) it last got; it refuses, naming run_id, as soon as the
    log shows otherwise, and not before."""
    records, started, last = case
    records = records[:stop + 1]
    sink = MLflowSink("file:/nowhere")
    sink._run_key, sink.mlflow_run_id = "r", "m"
    sink._claim = _Claim(started=started, last=last,
                         last_seq=None if last is None else int(last.split()[0]))
    header_ok = repr(records[0]["time"]) == started
    wanted = None if last is None else int(last.split()[0])
    same = [rec for rec in records if rec["seq"] == wanted]
    holds = last is None or bool(same and f"{wanted} {same[0]['kind']} {same[0]['time']!r}"
                                 == last)
    passed = wanted is not None and records[-1]["seq"] > wanted
    refused = None
    try:
        for record in records:
            sink._witness(record)
    except ConfigError as exc:
        refused = exc
    if not header_ok or (not holds and (same or passed)):
        assert refused is not None and refused.field == "run_id"
    else:
        assert refused is None
        assert (sink._claim is None) == holds  # shown, or not yet: the log may go on


def failing_store(monkeypatch, method: str, fails) -> dict[str, int]:
    """MlflowClient.``method`` raising, at the calls ``fails(n)`` says, what MLflow's client
    raises once its own retries are spent (a 503, a refused connection); the file store works
    behind it. Returns the count of calls."""
    from mlflow.exceptions import MlflowException

    real, calls = getattr(MlflowClient, method), {"n": 0}

    def call(self, *args, **kwargs):
        calls["n"] += 1
        if fails(calls["n"]):
            raise MlflowException("API request failed with error code 503 != 200")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, method, call)
    return calls


def test_a_store_down_holds_only_the_batches_it_would_send(tmp_path):
    """While the store cannot be reached, the sink keeps what it will send: with
    ``batch_every=100`` every batch was kept (and keyed on the training thread), a hundred
    times what could ever go out."""
    import socket

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there: every connection is refused at once
    sink = MLflowSink(f"http://127.0.0.1:{port}", batch_every=100)
    bus = Bus([], log=[sink])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bus.train_begin({"epochs": 2})
        for epoch in range(2):
            bus.epoch_begin(epoch)
            for batch in range(2000):
                bus.batch_end(batch, {"loss": 1.0})
            bus.epoch_end(epoch, {"loss": 1.0})
        held = len(sink._backlog) + len(sink._pending)
        with contextlib.suppress(Exception):  # the give-up at close is not what is checked
            bus.close()
    # The 40 batch points, the epoch ends, the header, train_begin and a warning or two:
    # not the 4,000 batches.
    assert held < 60, held


def test_an_upload_waits_for_its_answer_longer_than_the_loop_s_calls():
    """A checkpoint's upload to an artifact server gets MLflow's own wait for its answer (a
    server storing a large file elsewhere answers late); the calls of the training loop get
    the sink's short one. Both are the sink's own: no redirect is followed for either."""
    from sinks import mlflow as sink_module

    class Client:
        def log_batch(self):
            return sink_module._OWN_CALL.get()

        def log_artifact(self):
            return sink_module._OWN_CALL.get()

    calls = sink_module._OwnCalls(Client())
    assert calls.log_batch() == "REQUEST_TIMEOUT"
    assert calls.log_artifact() == "UPLOAD_TIMEOUT"
    assert sink_module.UPLOAD_TIMEOUT > sink_module.REQUEST_TIMEOUT
    assert sink_module._OWN_CALL.get() is None  # (the user's own calls: MLflow's settings)


class TestAFailingStore:
    def test_a_failed_send_is_kept_and_sent_at_the_next_flush(self, tmp_path, uri,
                                                              monkeypatch):
        """One send refused (a 503 past MLflow's retries): its records are kept and go with
        the next flush, each step once; said once, as a sink_failed; the run ends FINISHED."""
        calls = failing_store(monkeypatch, "log_batch", lambda n: n in (4, 5))
        log = tmp_path / "run.jsonl"
        with pytest.warns(SinkFailureWarning, match="kept"), \
                Bus([], log=[str(log), MLflowSink(uri)], learning_rate=0.1) as bus:
            train(bus, 5)
        assert calls["n"] > 5
        run, history = mlflow_run(uri)
        assert run.info.status == "FINISHED"
        assert_exactly_once(history, expected_metrics(log, None))
        failed = [rec for rec in read_effective(log) if rec.kind == "sink_failed"]
        assert [(rec.sink, rec.event) for rec in failed] == [("mlflow", "flush")]

    def test_a_store_down_at_a_resume_is_reached_later(self, tmp_path, uri, monkeypatch):
        """The store fails as a resume catches up (finding the MLflow run): the sink is not
        out for the run; a later flush finds it, and it holds every step once."""
        log = tmp_path / "run.jsonl"
        with Bus([], log=[str(log), MLflowSink(uri)], learning_rate=0.1) as bus:
            train(bus, 2, end=False)
        failing_store(monkeypatch, "search_runs", lambda n: n <= 2)
        with pytest.warns(SinkFailureWarning, match="kept"), \
                Bus([], log=[str(log), MLflowSink(uri)], resume=True) as bus:
            train(bus, 5, start=bus.initial_epoch)
        run, history = mlflow_run(uri)
        assert run.info.status == "FINISHED"
        assert_exactly_once(history, expected_metrics(log, None))
        failed = [rec for rec in read_effective(log) if rec.kind == "sink_failed"]
        assert [(rec.sink, rec.event) for rec in failed] == [("mlflow", "open")]

    def test_close_gives_up_after_a_while_saying_what_was_lost(self, tmp_path, uri,
                                                               monkeypatch):
        """A store that never answers again: close tries for CLOSE_RETRY_SECONDS, then the
        sink fails saying how many records were not sent; the log holds them all."""
        import eventbus.sink

        monkeypatch.setattr(eventbus.sink, "CLOSE_RETRY_SECONDS", 0.2)
        failing_store(monkeypatch, "log_batch", lambda n: n >= 4)
        log = tmp_path / "run.jsonl"
        with pytest.warns(SinkFailureWarning, match="not sent to the MLflow store"), \
                Bus([], log=[str(log), MLflowSink(uri)], learning_rate=0.1) as bus:
            train(bus, 3)
        assert [step for step, _ in mlflow_run(uri)[1]["loss"]] == [0]
        assert [rec.event for rec in read_effective(log) if rec.kind == "sink_failed"] == \
            ["flush", "close"]

    def test_a_refused_request_is_final(self, tmp_path, uri, monkeypatch):
        """A request the store refuses as such (INVALID_PARAMETER_VALUE) will not pass by
        trying again: the sink is out, as before, not retrying at every flush."""
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        real, calls = MlflowClient.log_batch, {"n": 0}

        def log_batch(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 4:
                raise MlflowException("refused", error_code=INVALID_PARAMETER_VALUE)
            return real(self, *args, **kwargs)

        monkeypatch.setattr(MlflowClient, "log_batch", log_batch)
        with pytest.warns(SinkFailureWarning), \
                Bus([], log=[str(tmp_path / "run.jsonl"), MLflowSink(uri)]) as bus:
            train(bus, 3)
        assert calls["n"] == 4


@pytest.fixture
def silent_server():
    """A tracking URI on 127.0.0.1 whose server accepts connections and never answers."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(50)
    held = []

    def accept():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for conn in held:
        conn.close()


class TestASlowStore:
    def test_a_server_that_never_answers_holds_the_loop_only_for_the_timeout(
            self, tmp_path, silent_server, monkeypatch):
        """Each of the sink's requests waits REQUEST_TIMEOUT, not MLflow's 120 s and 7
        retries; after a slow try the store is not asked at every flush; close tries once
        more, then says what was not sent. The user's own MLflow settings stay as they were."""
        import time

        import sinks.mlflow

        monkeypatch.setattr(sinks.mlflow, "REQUEST_TIMEOUT", 0.5, raising=False)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        log = tmp_path / "run.jsonl"
        began = time.monotonic()
        with pytest.warns(SinkFailureWarning, match="not sent to the MLflow store"), \
                Bus([], log=[str(log), MLflowSink(silent_server)], learning_rate=0.1) as bus:
            train(bus, 5)
        assert time.monotonic() - began < 4  # open's try, and close's: each about 0.5 s
        assert [rec.event for rec in read_effective(log) if rec.kind == "sink_failed"] == \
            ["open", "close"]
        # A call of the user's own goes by the user's settings: 3 s, not the sink's 0.5.
        began = time.monotonic()
        with pytest.raises(Exception, match="timeout"):
            MlflowClient(silent_server).get_experiment_by_name("eventbus")
        assert 2.5 < time.monotonic() - began < 10


def test_a_redirect_of_the_tracking_server_is_never_followed(tmp_path):
    """A tracking server answering 307 to another server (both on 127.0.0.1): the sink's
    requests never reach the other one, in a backfill and live; the redirect is a failed
    call, as the HTTP sinks count one."""
    import http.server

    hits: list[str] = []

    class Other(http.server.BaseHTTPRequestHandler):
        def _any(self):
            hits.append(self.path)
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _any

        def log_message(self, *args):
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Other)

    class Redirect(http.server.BaseHTTPRequestHandler):
        def _any(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{other.server_port}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _any

        def log_message(self, *args):
            pass

    named = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    for server in (other, named):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{named.server_port}"
        log = tmp_path / "run.jsonl"
        with pytest.warns(SinkFailureWarning, match="307"), \
                Bus([], log=[str(log), MLflowSink(uri)], learning_rate=0.1) as bus:
            train(bus, 2)
        with pytest.raises(Exception, match="307"):
            backfill(log, uri)
        assert hits == []
    finally:
        for server in (other, named):
            server.shutdown()
            server.server_close()


@pytest.mark.parametrize("value", ["false", "False", 0, None, "no"])
def test_checkpoints_must_be_a_bool(value):
    """checkpoints="false" was taken through bool() and turned uploads on."""
    with pytest.raises(ConfigError, match="checkpoints") as raised:
        MLflowSink("file:/nowhere", checkpoints=value)
    assert raised.value.field == "checkpoints"
    assert MLflowSink("file:/nowhere", checkpoints=False).checkpoints is False

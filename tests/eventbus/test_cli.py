"""The command line: what each command prints, its exit status, and the files it writes, read
back with real readers (pyarrow, the csv module, h5py, TensorBoard's event reader).

The commands run in this process through ``eventbus.cli.main(argv)``, which is what the
``eventbus`` script and ``python -m eventbus`` call: a fresh interpreter for each would add only
its start-up. What only a real process shows is in TestEntryPoints: the installed script and
``python -m eventbus`` run and exit with main's status, and the demo run by the script in a
fresh interpreter (its own hash seed, nothing imported before) decides exactly as the one run
here. The demo runs once per module in each way, in parallel; the other commands work on its
output.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import math
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eventbus
from eventbus import Bus, read_log
from eventbus import records as r
from eventbus.cli import main
from eventbus.replay import effective_records

SCRIPT = shutil.which("eventbus") or str(Path(sys.executable).with_name("eventbus"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    env.update(extra)
    return env


@dataclass
class Done:
    """How a command ended, as subprocess.run reports it."""

    returncode: int
    stdout: str
    stderr: str


def eventbus_cmd(*args: object) -> Done:
    """``eventbus ARGS`` in this process: main's exit status (argparse's too, which exits) and
    what it wrote. The streams are bytes underneath, as a process's are: ``--json`` writes to
    ``sys.stdout.buffer``."""
    out, err = (io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
                for _ in range(2))
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # --version, or an argument argparse itself refuses
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return Done(code, out.buffer.getvalue().decode(), err.buffer.getvalue().decode())


def script(*args: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the installed ``eventbus`` script (for TestEntryPoints only)."""
    return subprocess.run([SCRIPT, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=_env())


def read_whole(path: Path) -> list[r.Record]:
    """Every record of a log; a warning (a torn line) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return list(read_log(path))


def decisions_of(records: list[r.Record]) -> list[tuple]:
    return [(d.seq, d.kind, d.source, d.epoch, d.code, d.reason, d.evidence,
             getattr(d, "value", None), getattr(d, "path", None))
            for d in records if isinstance(d, r.Decision)]


def early_stopping_epoch(values: list[float], patience: int, min_delta: float) -> int | None:
    """Keras's EarlyStopping rule (mode min), written out independently: the 0-based stop epoch."""
    best, wait = math.inf, 0
    for epoch, value in enumerate(values):
        wait += 1
        if value + abs(min_delta) < best:
            best, wait = value, 0
        if wait >= patience and epoch > 0:
            return epoch
    return None


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, object]:
    """Two demo runs with the same seed: ``eventbus demo`` in this process (the default seed)
    and, at the same time, the installed script with ``--seed 0`` in a process of its own."""
    root = tmp_path_factory.mktemp("demo")
    out, other = root / "here", root / "script"
    with subprocess.Popen([SCRIPT, "demo", "--out", str(other), "--quiet", "--seed", "0"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=_env()) as proc:
        try:
            done = eventbus_cmd("demo", "--out", out, "--quiet")
            script_out, script_err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert done.returncode == 0, f"demo failed: {done.stderr}"
    records = read_whole(out / "events.jsonl")
    return {"out": out, "log": out / "events.jsonl", "stdout": done.stdout, "records": records,
            "other": other, "script": Done(proc.returncode, script_out, script_err)}


def epoch_ends(records: list[r.Record]) -> list[r.EpochEnd]:
    return [e for e in effective_records(records) if isinstance(e, r.EpochEnd)]


class TestDemo:
    def test_the_event_log_reads_back_with_every_plugin_in_its_header(self, demo):
        """events.jsonl: a header naming the built-in plugins, epochs, decisions, a train_end."""
        records = demo["records"]
        header = records[0]
        assert isinstance(header, r.Header)
        names = {p.name for p in header.plugins}
        assert {"EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint", "CSVLogger",
                "TensorBoard", "History", "ProgbarLogger", "TerminateOnNaN"} <= names
        assert [rec.seq for rec in records] == list(range(len(records)))
        # EarlyStopping restores the best weights at train_end: that outcome comes last.
        assert [rec.kind for rec in records[-3:]] == ["train_end", "restore_weights",
                                                      "weights_restored"]
        assert len(epoch_ends(records)) >= 5
        kinds = {rec.kind for rec in records}
        assert {"stop_training", "set_learning_rate", "save_checkpoint",
                "checkpoint_saved"} <= kinds

    def test_the_parquet_log_holds_the_same_records(self, demo):
        """events.parquet (pyarrow): the documented columns, the same rows as the JSON Lines."""
        import pyarrow.parquet as pq

        table = pq.read_table(demo["out"] / "events.parquet")
        for column in ("v", "run_id", "seq", "kind", "time", "epoch", "batch", "step",
                       "payload", "logs.val_loss", "logs.loss"):
            assert column in table.column_names
        records = demo["records"]
        assert table.column("seq").to_pylist() == [rec.seq for rec in records]
        assert table.column("kind").to_pylist() == [rec.kind for rec in records]
        from_parquet = read_whole(demo["out"] / "events.parquet")
        assert [x.model_dump() for x in from_parquet] == [x.model_dump() for x in records]

    def test_the_csv_has_one_row_per_epoch_with_the_logged_values(self, demo):
        """history.csv (csv module): epochs 0..n-1 once each, values equal to the log's."""
        with open(demo["out"] / "history.csv", newline="") as file:
            rows = list(csv.DictReader(file))
        ends = epoch_ends(demo["records"])
        assert [int(row["epoch"]) for row in rows] == [e.epoch for e in ends]
        for row, end in zip(rows, ends):
            assert float(row["val_loss"]) == end.logs["val_loss"]
            assert float(row["learning_rate"]) == end.logs["learning_rate"]

    def test_every_checkpoint_opens_in_h5py_and_matches_its_logged_hash(self, demo):
        """checkpoints/*.h5: h5py reads weights; size and sha256 are those in the log."""
        import h5py

        saved = [rec for rec in demo["records"] if isinstance(rec, r.CheckpointSaved)]
        files = sorted((demo["out"] / "checkpoints").iterdir())
        assert sorted(Path(s.path) for s in saved) == files
        for record in saved:
            data = Path(record.path).read_bytes()
            assert len(data) == record.size
            assert hashlib.sha256(data).hexdigest() == record.sha256
            with h5py.File(record.path, "r") as file:
                assert file.attrs["format"] == "eventbus-checkpoint"
                assert file["weights/dense/kernel"].shape == (2, 64)

    def test_tensorboard_event_files_are_written(self, demo):
        """tensorboard/: train and validation runs, and the HParams session in tensorboard/
        itself, with non-empty event files."""
        files = [p for p in (demo["out"] / "tensorboard").rglob("events.out.tfevents.*")]
        assert {p.parent.name for p in files} == {"tensorboard", "train", "validation"}
        assert all(p.stat().st_size > 0 for p in files)

    def test_it_ends_with_the_audit_summary_and_the_next_commands(self, demo):
        """The demo's output ends with why the run stopped and what to try next."""
        out = demo["stdout"]
        assert "ended: stopped by EarlyStopping" in out
        assert "next, try:" in out
        assert f"eventbus replay {demo['log']} --verify" in out

    def test_epochs_limits_the_run(self, tmp_path):
        """``--epochs 2``: two epochs, ended as planned."""
        done = eventbus_cmd("demo", "--out", tmp_path, "--epochs", "2", "--quiet")
        assert done.returncode == 0, done.stderr
        assert "epochs run: 2 of 2" in done.stdout
        assert "ended: completed every planned epoch" in done.stdout


class TestAudit:
    def test_text_summary(self, demo):
        """The text names the stop, the best value, the learning-rate changes, every decision."""
        done = eventbus_cmd("audit", demo["log"])
        assert done.returncode == 0 and done.stderr == ""
        records = demo["records"]
        stop = next(rec for rec in records if isinstance(rec, r.StopTraining))
        ends = epoch_ends(records)
        best = min(ends, key=lambda e: e.logs["val_loss"])
        out = done.stdout
        assert f"epochs run: {len(ends)} of 40" in out
        assert f"ended: stopped by EarlyStopping, rule {stop.code} at epoch {stop.epoch + 1}" in out
        assert f"best val_loss: {best.logs['val_loss']:.6g} at epoch {best.epoch + 1}" in out
        for change in (rec for rec in records if isinstance(rec, r.SetLearningRate)):
            assert f"epoch {change.epoch + 1}: {change.previous:.6g} -> {change.value:.6g}" in out
        count = sum(isinstance(rec, r.Decision) for rec in records)
        assert f"decisions ({count})" in out

    def test_json_gives_the_same_as_data(self, demo):
        """``--json``: the stop, the monitors, every checkpoint with its sha256, every decision."""
        done = eventbus_cmd("audit", demo["log"], "--json")
        assert done.returncode == 0
        data = orjson.loads(done.stdout)
        records = demo["records"]
        assert data["run_id"] == records[0].run_id
        assert data["ended"] == "stopped"
        assert data["stop"]["source"] == "EarlyStopping"
        assert data["epochs_run"] == len(epoch_ends(records))
        saved = [rec for rec in records if isinstance(rec, r.CheckpointSaved)]
        assert [(c["path"], c["sha256"]) for c in data["checkpoints"]] == \
            [(s.path, s.sha256) for s in saved]
        assert [d["seq"] for d in data["decisions"]] == \
            [d.seq for d in records if isinstance(d, r.Decision)]
        assert [c["value"] for c in data["learning_rate_changes"]] == \
            [d.value for d in records if isinstance(d, r.SetLearningRate)]
        (monitor,) = data["monitors"]
        assert monitor["name"] == "val_loss" and monitor["mode"] == "min"

    def test_plot_writes_a_png(self, demo, tmp_path):
        """``--plot``: a PNG file (with matplotlib installed, as the test extra has it)."""
        pytest.importorskip("matplotlib")
        png = tmp_path / "run.png"
        done = eventbus_cmd("audit", demo["log"], "--plot", png)
        assert done.returncode == 0, done.stderr
        assert png.read_bytes()[:8] == PNG_MAGIC

    def test_plot_without_matplotlib_is_one_clear_line(self, demo, tmp_path, monkeypatch):
        """Without matplotlib: one line saying how to install it, before any output."""
        for name in ("matplotlib", "matplotlib.pyplot"):
            monkeypatch.setitem(sys.modules, name, None)  # ``import matplotlib`` raises
        png = tmp_path / "run.png"
        done = eventbus_cmd("audit", demo["log"], "--plot", png)
        assert done.returncode == 2
        assert done.stdout == ""
        assert done.stderr.splitlines() == [
            "eventbus audit: error: --plot needs matplotlib: pip install 'eventbus[plot]'"]
        assert not png.exists()

    # The warning is what is tested, printed by main's own showwarning: let it through to it,
    # as a process's default filters do (pytest.warns would take it before main prints it).
    @pytest.mark.filterwarnings("always::eventbus.TornLogWarning")
    def test_a_torn_last_line_is_one_warning_line(self, demo, tmp_path):
        """A log cut mid-line (a crash) is audited, with one warning line on stderr."""
        data = demo["log"].read_bytes()
        torn = tmp_path / "torn.jsonl"
        torn.write_bytes(data[:data.index(b'"kind":"epoch_end"') + 10])
        done = eventbus_cmd("audit", torn)
        assert done.returncode == 0
        assert "ended: no train_end in the log" in done.stdout
        (line,) = done.stderr.splitlines()
        assert line.startswith("eventbus audit: warning: ") and "incomplete" in line


class TestReplay:
    def test_verify_matches_every_recorded_decision(self, demo):
        """``--verify`` on the demo's log (both formats): exit 0, every decision matched."""
        count = sum(isinstance(rec, r.Decision) for rec in demo["records"])
        for log in (demo["log"], demo["out"] / "events.parquet"):
            done = eventbus_cmd("replay", log, "--verify")
            assert done.returncode == 0, done.stderr
            assert f"verify: all {count} decisions match the log" in done.stdout

    def test_verify_fails_on_a_tampered_log(self, demo, tmp_path):
        """A metric changed after the fact: the replayed decisions differ, exit 1."""
        lines = demo["log"].read_bytes().splitlines(keepends=True)
        out = []
        for line in lines:
            record = orjson.loads(line)
            if record["kind"] == "epoch_end" and record["epoch"] == 3:
                record["logs"]["val_loss"] = 0.01  # a new best the recorded run never saw
                line = orjson.dumps(record) + b"\n"
            out.append(line)
        tampered = tmp_path / "tampered.jsonl"
        tampered.write_bytes(b"".join(out))
        done = eventbus_cmd("replay", tampered, "--verify")
        assert done.returncode == 1
        (line,) = done.stderr.splitlines()
        assert line.startswith("verify: MISMATCH: decision #")
        assert "at epoch 4" in line  # epoch index 3, counted from 1 as the reasons count
        # The demo is deterministic: the line replay-and-audit.md shows is this very line.
        assert line in (DOCS / "replay-and-audit.md").read_text().splitlines()

    def test_set_answers_a_what_if(self, demo):
        """``--set EarlyStopping.patience=3`` says first that the answer is exact, then names
        the epoch an independent rule gives, of the epochs the log recorded."""
        ends = epoch_ends(demo["records"])
        values = [e.logs["val_loss"] for e in ends]
        expected = early_stopping_epoch(values, patience=3, min_delta=1e-4)
        recorded = next(rec.epoch for rec in demo["records"] if isinstance(rec, r.StopTraining))
        assert expected is not None and expected < recorded
        done = eventbus_cmd("replay", demo["log"], "--set", "EarlyStopping.patience=3")
        assert done.returncode == 0, done.stderr
        first, second = done.stdout.splitlines()[:2]
        assert first.startswith("What-if with EarlyStopping.patience=3: exact (")
        assert second == (
            f"  The run would have stopped at epoch {expected + 1} of the {len(ends)} recorded "
            f"(EarlyStopping, rule patience_exhausted); the recorded run stopped at epoch "
            f"{recorded + 1} (EarlyStopping).")
        assert "estimate" not in done.stdout
        alias = eventbus_cmd("what-if", demo["log"], "--set", "EarlyStopping.patience=3")
        assert (alias.returncode, alias.stdout) == (0, done.stdout)  # the same command

    def test_set_names_the_plugin_that_would_have_stopped_the_run(self, demo):
        """A what-if of ReduceLROnPlateau (which never stops a run) says the run would have
        stopped, and by EarlyStopping; the lines are those replay-and-audit.md shows."""
        done = eventbus_cmd("replay", demo["log"], "--set", "ReduceLROnPlateau.patience=4")
        assert done.returncode == 0, done.stderr
        first, second = done.stdout.splitlines()[:2]
        assert first.startswith("What-if with ReduceLROnPlateau.patience=4: an estimate from "
                                "epoch ")
        assert second.startswith("  The run would have stopped at epoch ")
        assert "(EarlyStopping, rule patience_exhausted)" in second
        doc = (DOCS / "replay-and-audit.md").read_text().splitlines()
        assert first in doc and second in doc
        three = eventbus_cmd("replay", demo["log"], "--set", "EarlyStopping.patience=3")
        assert three.stdout.splitlines() == \
            doc[doc.index(three.stdout.splitlines()[0]):][:len(three.stdout.splitlines())]

    def test_set_leads_with_the_estimate_and_its_epoch(self, demo):
        """A what-if that changes the learning rate says on its first line that the answer is
        an estimate, from the epoch the replayed rate leaves the recorded one (not a seq); a
        run that would not have stopped is "not within the N recorded epochs"."""
        done = eventbus_cmd("replay", demo["log"], "--set", "ReduceLROnPlateau.patience=1",
                            "--set", "EarlyStopping.patience=100")
        assert done.returncode == 0, done.stderr
        ends = epoch_ends(demo["records"])
        data = orjson.loads(eventbus_cmd("replay", demo["log"], "--set",
                                         "ReduceLROnPlateau.patience=1", "--set",
                                         "EarlyStopping.patience=100", "--json").stdout)
        diverged = data["diverged_epoch"]
        # The first epoch whose recorded rate is not the one the replayed cuts give.
        seqs = {e.seq: e.epoch for e in demo["records"]
                if isinstance(e, (r.EpochBegin, r.EpochEnd))}
        assert seqs[data["diverged_at"]] == diverged
        first, second = done.stdout.splitlines()[:2]
        assert first.startswith(
            "What-if with ReduceLROnPlateau.patience=1, EarlyStopping.patience=100: an estimate "
            f"from epoch {diverged + 1} on (")
        assert second.startswith(
            f"  The run would not have stopped within the {len(ends)} recorded epochs; the "
            "recorded run stopped at epoch ")
        assert "event" not in first and "seq" not in first

    def test_sweep_prints_one_row_per_value(self, demo):
        """``--sweep``: a header, one row per value with its stop epoch, the recorded stop."""
        ends = epoch_ends(demo["records"])
        values = [e.logs["val_loss"] for e in ends]
        done = eventbus_cmd("replay", demo["log"], "--sweep", "EarlyStopping.patience=1,3,6,100")
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].split() == ["EarlyStopping.patience", "stops", "at", "epoch",
                                    "decisions", "lr", "changes", "answer"]
        rows = [line.split() for line in lines[1:5]]
        assert [row[0] for row in rows] == ["1", "3", "6", "100"]
        for patience, row in zip((1, 3, 6, 100), rows):
            stop = early_stopping_epoch(values, patience=patience, min_delta=1e-4)
            assert row[1] == ("-" if stop is None else str(stop + 1))
            assert row[-1] == "exact"  # EarlyStopping alone never changes the learning rate
        recorded = next(rec.epoch for rec in demo["records"] if isinstance(rec, r.StopTraining))
        assert lines[5:] == [
            f'epochs counted from 1; "-": would not have stopped within the {len(ends)} '
            "recorded epochs",
            f"the recorded run stopped at epoch {recorded + 1} (EarlyStopping)"]

    def test_sweep_marks_rows_that_stop_being_exact(self, demo):
        """Sweeping ReduceLROnPlateau: the recorded value is exact, others are estimates from
        the epoch their rate leaves the recorded one."""
        done = eventbus_cmd("replay", demo["log"], "--sweep", "ReduceLROnPlateau.patience=1,2")
        assert done.returncode == 0, done.stderr
        rows = done.stdout.splitlines()[1:3]
        assert "estimate from epoch " in rows[0]
        assert rows[1].endswith("exact")


class TestReplayJson:
    def test_replay_json_is_the_answer_as_data(self, demo):
        """``replay --json``: the replayed decisions, 0-based epochs said so, the stop, the
        recorded stop and the log's extent, and nothing else on stdout."""
        done = eventbus_cmd("replay", demo["log"], "--set", "EarlyStopping.patience=3", "--json")
        assert (done.returncode, done.stderr) == (0, "")
        data = orjson.loads(done.stdout)
        ends = epoch_ends(demo["records"])
        values = [e.logs["val_loss"] for e in ends]
        assert data["epochs_counted_from"] == 0
        assert data["overrides"] == {"EarlyStopping": {"patience": 3}}
        assert data["stopped_at"] == early_stopping_epoch(values, patience=3, min_delta=1e-4)
        assert data["recorded_stop"] == next(rec.epoch for rec in demo["records"]
                                             if isinstance(rec, r.StopTraining))
        assert (data["last_recorded_epoch"], data["epochs_recorded"]) == \
            (ends[-1].epoch, len(ends))
        assert data["exact"] is True and data["diverged_epoch"] is None
        stops = [d for d in data["decisions"] if d["kind"] == "stop_training"]
        assert [d["epoch"] for d in stops] == [data["stopped_at"]]

    def test_verify_json_has_the_verdict_and_exit_status(self, demo):
        """``replay --verify --json``: every recorded decision, ``verify.ok`` true, exit 0."""
        done = eventbus_cmd("replay", demo["log"], "--verify", "--json")
        assert done.returncode == 0, done.stderr
        data = orjson.loads(done.stdout)
        recorded = [d.seq for d in demo["records"] if isinstance(d, r.Decision)]
        assert len(data["decisions"]) == data["recorded_decisions"] == len(recorded)
        assert data["verify"] == {"ok": True, "mismatch": None, "unchecked": 0}

    def test_a_what_if_on_a_metric_the_log_never_holds_says_so(self, demo):
        """A misspelt monitor: the replayed plugin's warning is printed under the answer
        ("would not have stopped"), once, and is in --json and under a sweep's table. Before,
        the answer came alone, as exact and as confident as any other."""
        told = "Early stopping conditioned on metric `val_los` which is not available"
        args = ("--set", "EarlyStopping.monitor=val_los", "--set", "EarlyStopping.mode=min")
        done = eventbus_cmd("replay", demo["log"], *args)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert "would not have stopped" in lines[1]
        assert lines[2].startswith(f"  warned as replayed: EarlyStopping: {told}")
        assert done.stdout.count(told) == 1  # warned at every epoch, said once
        data = orjson.loads(eventbus_cmd("replay", demo["log"], *args, "--json").stdout)
        assert [(w["source"], w["epoch"], w["message"][:len(told)])
                for w in data["warnings"]] == [("EarlyStopping", 0, told)]  # as it first came
        sweep = eventbus_cmd("replay", demo["log"], "--sweep",
                             "EarlyStopping.monitor=val_los,val_loss", "--set",
                             "EarlyStopping.mode=min")
        assert sweep.returncode == 0, sweep.stderr
        assert sweep.stdout.splitlines()[-1].startswith(
            f"  EarlyStopping.monitor='val_los': warned as replayed: EarlyStopping: {told}")
        assert sweep.stdout.count("warned as replayed") == 1
        plain = orjson.loads(eventbus_cmd("replay", demo["log"], "--json").stdout)
        assert plain["warnings"] == []  # the recorded parameters: nothing to warn of

    def test_sweep_json_has_a_row_per_value(self, demo):
        """``--sweep ... --json``: one row per value with the same answers as the table."""
        table = eventbus_cmd("replay", demo["log"], "--sweep", "ReduceLROnPlateau.patience=1,2")
        done = eventbus_cmd("replay", demo["log"], "--sweep", "ReduceLROnPlateau.patience=1,2",
                            "--json")
        assert done.returncode == 0, done.stderr
        data = orjson.loads(done.stdout)
        assert data["parameter"] == "ReduceLROnPlateau.patience"
        assert [row["value"] for row in data["rows"]] == [1, 2]
        for line, row in zip(table.stdout.splitlines()[1:3], data["rows"]):
            cells = line.split()
            assert cells[1] == ("-" if row["stopped_at"] is None else str(row["stopped_at"] + 1))
            assert (cells[2], cells[3]) == (str(row["decisions"]), str(row["lr_changes"]))
            assert row["exact"] == (cells[-1] == "exact")
            if not row["exact"]:
                assert cells[-1] == str(row["diverged_epoch"] + 1)


class TestConvert:
    def test_to_jsonl_and_parquet_copies_every_record(self, demo, tmp_path):
        """JSON Lines and Parquet copies read back record for record."""
        original = [x.model_dump() for x in demo["records"]]
        for name, fmt in (("copy.jsonl", "jsonl"), ("copy.parquet", "parquet")):
            done = eventbus_cmd("convert", demo["log"], tmp_path / name)  # format from the name
            assert done.returncode == 0, done.stderr
            assert done.stdout == f"wrote {len(original)} records to {tmp_path / name} ({fmt})\n"
            assert [x.model_dump() for x in read_whole(tmp_path / name)] == original

    def test_to_parquet_is_readable_by_pyarrow_as_one_table(self, demo, tmp_path):
        """The converted Parquet log is one table pyarrow reads, a row per record."""
        import pyarrow.parquet as pq

        eventbus_cmd("convert", demo["log"], tmp_path / "x.parquet", "--to", "parquet")
        table = pq.read_table(tmp_path / "x.parquet")
        assert table.num_rows == len(demo["records"])

    def test_to_csv_equals_the_csv_the_run_wrote(self, demo, tmp_path):
        """Converting the log to CSV gives the table CSVLogger wrote live."""
        done = eventbus_cmd("convert", demo["log"], tmp_path / "h.csv")
        assert done.returncode == 0, done.stderr
        # Counted in the CSV's own unit: a row per epoch, not the log's records.
        assert done.stdout == f"wrote {len(epoch_ends(demo['records']))} rows to " \
            f"{tmp_path / 'h.csv'} (csv)\n"

        def rows(path: Path) -> list[list[str]]:
            with open(path, newline="") as file:
                return list(csv.reader(file))

        assert rows(tmp_path / "h.csv") == rows(demo["out"] / "history.csv")

    def test_a_csv_of_epochs_by_epochs_is_refused_before_anything_is_written(self, tmp_path):
        """Each epoch names a new metric: the table would be epochs x epochs, nearly all of it
        NA (3,000 epochs, a 0.8 MB log, made a 27 MB CSV; tens of MB fill a disk). Refused
        naming the output, the estimated size and the way out; nothing written."""
        log = tmp_path / "wide.jsonl"
        with Bus(log=log) as bus:
            bus.train_begin({"epochs": 3000})
            for epoch in range(3000):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {f"m{epoch}": 1.0})
            bus.train_end()
        out = tmp_path / "out" / "wide.csv"
        done = eventbus_cmd("convert", log, out)
        assert done.returncode == 2 and done.stdout == ""
        assert f"convert: {out} would be a CSV of about 25.8 MiB (3,000 rows by 3,000 metric " \
            f"columns) from a log of {os.path.getsize(log) / 2**20:.1f} MiB, more than 16 " \
            "times the log and 16 MiB" in done.stderr
        assert "Convert it to .jsonl or .parquet instead" in done.stderr
        assert not out.parent.exists() or not any(out.parent.iterdir())

    def test_a_final_epoch_of_many_metrics_converts_and_is_measured_exactly(self, tmp_path):
        """Many epochs of the same metrics, then a final evaluation per class: NA fills the
        per-class columns of every earlier row, a few times the log, and converts, by the
        ratio alone (before, it was refused as more than 16 cells a value). The
        estimate is the file's size."""
        from unittest import mock

        from eventbus import convert as convert_module

        log = tmp_path / "run.jsonl"
        with Bus(log=log) as bus:
            bus.train_begin({"epochs": 1000})
            for epoch in range(1000):
                bus.epoch_begin(epoch)
                logs = {f"metric_{i}": 0.5 + epoch for i in range(20)}
                if epoch == 999:
                    logs.update({f"test_class_{c}_acc": 0.9 for c in range(1100)})
                bus.epoch_end(epoch, logs)
            bus.train_end()
        out = tmp_path / "run.csv"
        with mock.patch.object(convert_module, "CSV_ALLOWED_BYTES", 0):
            done = convert_module.convert(log, out)
        assert (done.count, done.unit) == (1000, "rows")
        with open(out, newline="") as file:
            header = next(csv.reader(file))
        assert len(header) == 1 + 20 + 1100
        assert 3 * os.path.getsize(log) < os.path.getsize(out) < 16 * os.path.getsize(log)
        size = convert_module._TableSize()
        for record in read_log(log):
            if record.kind == "epoch_end":
                size.add(record.epoch, record.logs)
        assert size.estimate() == os.path.getsize(out)

    @settings(max_examples=25, deadline=None)
    @given(st.integers(1, 400), st.integers(1, 60), st.integers(1, 16))
    def test_a_run_whose_metrics_come_now_and_then_is_never_refused(self, epochs, metrics,
                                                                    every):
        """A real run reports the same metrics each epoch, some only every few epochs (a
        validation every ``every``): its CSV is within the ratio, with no floor to help."""
        import tempfile
        from unittest import mock

        from eventbus import convert as convert_module

        often = metrics // 2
        with tempfile.TemporaryDirectory() as folder:
            log = Path(folder) / "run.jsonl"
            with Bus(log=log) as bus:
                bus.train_begin({"epochs": epochs})
                for epoch in range(epochs):
                    bus.epoch_begin(epoch)
                    count = metrics if epoch % every == 0 else often
                    bus.epoch_end(epoch, {f"m{i}": 0.25 * i for i in range(count)})
                bus.train_end()
            with mock.patch.object(convert_module, "CSV_ALLOWED_BYTES", 0):
                convert_module.convert(log, Path(folder) / "run.csv")

    def test_to_tensorboard_holds_a_scalar_per_epoch(self, demo, tmp_path):
        """TensorBoard's own reader finds one epoch_loss point per epoch."""
        done = eventbus_cmd("convert", demo["log"], tmp_path / "tb", "--to", "tensorboard")
        assert done.returncode == 0, done.stderr
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        ends = epoch_ends(demo["records"])
        assert done.stdout.startswith(f"wrote {len(ends)} epochs to ")
        for run, key in (("train", "loss"), ("validation", "val_loss")):
            acc = EventAccumulator(str(tmp_path / "tb" / run))
            acc.Reload()
            points = acc.Scalars("epoch_loss")
            assert [p.step for p in points] == [e.epoch for e in ends]
            assert [p.value for p in points] == pytest.approx([e.logs[key] for e in ends],
                                                              rel=1e-6)

    def test_to_tensorboard_has_the_live_scalars_and_not_what_needs_the_model(self, demo,
                                                                             tmp_path):
        """As replay-and-audit.md says: every scalar of the live run, value, step and time
        alike, and the decisions; no weight histograms and no model_config (no model)."""
        done = eventbus_cmd("convert", demo["log"], tmp_path / "tb", "--to", "tensorboard")
        assert done.returncode == 0, done.stderr
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        def load(folder: Path) -> tuple[dict, dict]:
            acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0,
                                                               "histograms": 0})
            acc.Reload()
            tags = acc.Tags()
            scalars = {t: [(e.step, e.value, e.wall_time) for e in acc.Scalars(t)]
                       for t in tags["scalars"]}
            return scalars, {kind: set(names) for kind, names in tags.items()
                             if kind != "scalars" and isinstance(names, list)}

        for run in ("train", "validation"):
            live, live_other = load(demo["out"] / "tensorboard" / run)
            converted, other = load(tmp_path / "tb" / run)
            assert converted == live and live
            if run == "train":
                assert other["tensors"] == {"decisions"}
                assert live_other["tensors"] == {"decisions", "model_config"}
                assert "dense/kernel/histogram" in live_other["histograms"]
                assert other["histograms"] == set()


class TestPlugins:
    def test_lists_every_built_in_with_its_distribution_and_version(self):
        """``eventbus plugins``: each built-in, from this distribution at this version."""
        done = eventbus_cmd("plugins")
        assert done.returncode == 0
        lines = done.stdout.splitlines()
        assert lines[0].split() == ["plugin", "from", "target"]
        by_name = {line.split()[0]: line.split()[1:] for line in lines[1:]}
        assert by_name["EarlyStopping"] == ["eventbus", eventbus.__version__,
                                            "plugins.early_stopping:EarlyStopping"]
        assert {"ReduceLROnPlateau", "ModelCheckpoint", "CSVLogger", "BackupAndRestore",
                "TensorBoard", "TerminateOnNaN"} <= set(by_name)

    def test_no_trailing_blanks_and_on_80_columns_no_line_wraps(self):
        """Piped, the table's last column is not padded (every row was padded to 92
        columns). On an 80-column terminal, too narrow for the table, each target goes on its
        own line under its plugin, whole: the terminal wrapped every row, one mid-word."""
        piped = eventbus_cmd("plugins").stdout.splitlines()
        assert all(line == line.rstrip() for line in piped)
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
        try:
            from terminal import run_in_pty
        finally:
            sys.path.pop(0)
        out = run_in_pty("import sys; from eventbus.cli import main; "
                         "sys.exit(main(['plugins']))", columns=80)
        lines = out.replace("\r\n", "\n").rstrip("\n").split("\n")
        assert max(map(len, piped)) > 80 >= max(map(len, lines))
        assert lines[:2] == ["plugin                 from", "  target"]
        shown = dict(zip(lines[2::2], lines[3::2]))
        assert [(name.split(), target) for name, target in shown.items()] == [
            (row.split()[:3], "  " + row.split()[3]) for row in piped[1:]]

    def test_json(self):
        """``--json``: name, target, distribution and version for each."""
        data = orjson.loads(eventbus_cmd("plugins", "--json").stdout)
        spec = next(p for p in data if p["name"] == "ReduceLROnPlateau")
        assert spec == {"name": "ReduceLROnPlateau",
                        "target": "plugins.reduce_lr_on_plateau:ReduceLROnPlateau",
                        "distribution": "eventbus", "version": eventbus.__version__}


def test_every_option_of_every_command_is_in_its_section_of_cli_md():
    """docs/cli.md covers every command: each option ``eventbus COMMAND -h`` lists is named in
    that command's section (``--ranks`` and ``--rank`` once were in none)."""
    import argparse

    from eventbus.cli import build_parser

    doc = (DOCS / "cli.md").read_text()
    (commands,) = [a for a in build_parser()._actions
                   if isinstance(a, argparse._SubParsersAction)]
    seen: set[int] = set()
    for name, command in commands.choices.items():
        if id(command) in seen:
            assert f"`eventbus {name}`" in doc, f"the alias eventbus {name} is not in docs/cli.md"
            continue  # an alias (what-if): its options are its command's
        seen.add(id(command))
        section = doc[doc.index(f"## `eventbus {name}"):]
        end = section.find("\n## ", 1)
        section = section if end == -1 else section[:end]
        options = [o for a in command._actions for o in a.option_strings
                   if o not in ("-h", "--help")]
        assert options
        for option in options:
            assert f"`{option}" in section, f"eventbus {name} {option} is not in docs/cli.md"


def test_version():
    """``--version`` prints the package version and exits 0."""
    done = eventbus_cmd("--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"eventbus {eventbus.__version__}")


class TestEntryPoints:
    """What only a real process shows. Every other test calls main in this process."""

    def test_the_script_runs_the_demo_and_decides_as_main_did_here(self, demo):
        """``eventbus demo --seed 0`` through the installed script, in a fresh interpreter (its
        own hash seed, nothing imported before): exit 0, and the decisions and epoch values of
        the run made in this process with the default seed."""
        done = demo["script"]
        assert done.returncode == 0, done.stderr
        assert "ended: stopped by EarlyStopping" in done.stdout
        other = read_whole(demo["other"] / "events.jsonl")

        def relative(records: list[r.Record], out: Path) -> bytes:
            # The output folders differ, and checkpoint paths include them.
            return orjson.dumps(decisions_of(records)).replace(str(out).encode(), b"OUT")

        assert relative(other, demo["other"]) == relative(demo["records"], demo["out"])
        assert [e.logs for e in epoch_ends(other)] == [e.logs for e in epoch_ends(demo["records"])]

    def test_the_script_exits_with_mains_status_for_a_user_error(self, tmp_path):
        """A file that is no log (``printf hello``): status 2 from the process, one line on
        stderr, no traceback, nothing on stdout."""
        bad = tmp_path / "c.jsonl"
        bad.write_bytes(b"hello")
        done = script("audit", bad)
        check_one_line("audit", done.returncode, done.stdout, done.stderr, str(bad))

    def test_python_m_eventbus_is_the_command(self):
        """``python -m eventbus`` runs the same main."""
        done = subprocess.run([sys.executable, "-m", "eventbus", "--version"],
                              capture_output=True, text=True, timeout=60, env=_env())
        assert (done.returncode, done.stdout.strip()) == (0, f"eventbus {eventbus.__version__}")


# --- user errors: one line on stderr, exit 2, never a traceback --------------------------------

def _make_inputs(root: Path, log: Path) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = {
        "text": root / "notes.txt", "empty": root / "empty.jsonl", "json": root / "obj.jsonl",
        "csv": root / "history.csv", "dir": root / "a-directory", "bad_parquet": root / "x.parquet",
        "table": root / "table.parquet", "newer": root / "newer.jsonl",
    }
    files["text"].write_text("hello\n")
    files["empty"].write_bytes(b"")
    files["json"].write_text('{"a": 1}\n')
    files["csv"].write_text("epoch,loss\n0,1.0\n")
    files["dir"].mkdir()
    files["bad_parquet"].write_bytes(b"PAR1 but not really")
    pq.write_table(pa.table({"x": [1, 2]}), files["table"])
    lines = log.read_bytes().splitlines(keepends=True)
    newer = orjson.loads(lines[0])
    newer["v"] = eventbus.records.SCHEMA_VERSION + 1
    files["newer"].write_bytes(orjson.dumps(newer) + b"\n" + b"".join(lines[1:]))
    return files


# (id, argv with {name} placeholders, a word the message must contain).
USER_ERRORS = [
    ("missing-file", ["audit", "{root}/missing.jsonl"], "no such file"),
    ("not-a-log", ["replay", "{text}", "--verify"], "not an event log"),
    ("unknown-plugin", ["replay", "{log}", "--set", "Nope.patience=3"], "Nope"),
    ("unknown-parameter", ["replay", "{log}", "--set", "EarlyStopping.pateince=3"],
     "pateince"),
    ("malformed-set", ["replay", "{log}", "--set", "patience=3"], "Plugin.param=value"),
    ("bad-value", ["replay", "{log}", "--set", "EarlyStopping.patience=soon"], "patience"),
    ("replay-missing", ["replay", "{root}/missing.jsonl"], "no such file"),
    ("convert-missing", ["convert", "{root}/missing.jsonl", "{root}/o.csv", "--to", "csv"],
     "no such file"),
    ("csv-file", ["audit", "{csv}"], "not an event log"),
    ("empty-file", ["audit", "{empty}"], "empty log"),
    ("json-not-a-record", ["audit", "{json}"], "not a record"),
    ("directory", ["audit", "{dir}"], "no Parquet segments"),
    ("damaged-parquet", ["audit", "{bad_parquet}"], "not a readable Parquet file"),
    ("parquet-not-a-log", ["audit", "{table}"], "not an event log"),
    ("newer-schema", ["replay", "{newer}"], "schema version"),
    ("set-without-value", ["replay", "{log}", "--set", "EarlyStopping.patience"],
     "Plugin.param=value"),
    ("negative-value", ["replay", "{log}", "--set", "EarlyStopping.patience=-1"], "patience"),
    ("sweep-no-values", ["replay", "{log}", "--sweep", "EarlyStopping.patience="],
     "at least one value"),
    ("sweep-unknown-plugin", ["replay", "{log}", "--sweep", "Nope.x=1,2"], "Nope"),
    ("sweep-with-verify", ["replay", "{log}", "--sweep", "EarlyStopping.patience=1,2",
                           "--verify"], "one or the other"),
    ("set-with-verify", ["replay", "{log}", "--set", "EarlyStopping.patience=3", "--verify"],
     "--set changes them: give one or the other"),
    ("rank-below-0", ["replay", "{log}", "--rank", "-1"], "--rank must be at least 0"),
    ("convert-wrong-suffix", ["convert", "{log}", "{root}/out.txt", "--to", "jsonl"], ".jsonl"),
    ("demo-out-under-a-file", ["demo", "--out", "{text}/run", "--quiet"],
     "is a file, not a directory; --out must be a directory"),
    ("demo-out-a-file", ["demo", "--out", "{text}", "--quiet"], "--out must be a directory"),
    ("plot-missing-directory", ["audit", "{log}", "--plot", "{root}/no/such/dir/run.png"],
     "--plot"),
]


@pytest.fixture(scope="module")
def inputs(demo, tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("inputs")
    return {**_make_inputs(root, demo["log"]), "root": root, "log": demo["log"]}


def check_one_line(command: str, code: int, out: str, err: str, word: str) -> None:
    assert "Traceback" not in err
    assert code == 2
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"eventbus {command}: error: ")
    assert word in line


@pytest.mark.parametrize("ident,argv,word", USER_ERRORS, ids=[c[0] for c in USER_ERRORS])
def test_a_user_error_is_one_line_and_exit_2(inputs, ident, argv, word):
    """A bad input or argument: exit 2, one line on stderr naming the problem, no traceback."""
    done = eventbus_cmd(*(a.format(**inputs) for a in argv))
    check_one_line(argv[0], done.returncode, done.stdout, done.stderr, word)

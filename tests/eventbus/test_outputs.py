"""The command line writes only the output it is told to, whatever is already at that name or
beside it (eventbus.outputs): a link there is replaced, never written through; a FIFO is
refused, never opened; a hard link to the log being read is refused, never truncated. And
hostile values in a log (numbers at a double's limits, megabyte names, thousands of metrics)
give a written output, not a traceback or minutes of work.

The commands run in-process through ``eventbus.cli.main`` on runs made here.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, read_log
from eventbus.audit import audit
from eventbus.cli import main
from eventbus.outputs import read_head, same_file, write_replacing
from eventbus.verify import verify_log

from hypothesis_profiles import examples

VICTIM_TEXT = "a file that is not the output\n"


def cli(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def make_run(path: Path, epochs: int = 4, **extra_logs: list[float]) -> Path:
    from plugins import EarlyStopping

    with Bus([EarlyStopping(monitor="val_loss", patience=9)], log=path,
             learning_rate=0.1) as bus:
        bus.train_begin({"epochs": epochs})
        for epoch in range(epochs):
            bus.epoch_begin(epoch)
            logs = {"loss": 1.0 / (epoch + 1), "val_loss": 1.5 / (epoch + 1)}
            logs.update({k: v[epoch] for k, v in extra_logs.items()})
            bus.epoch_end(epoch, logs)
        bus.train_end()
    return path


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return make_run(tmp_path / "events.jsonl")


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text(VICTIM_TEXT)
    return path


def finishes(fn, seconds: float = 20.0) -> None:
    """``fn`` returns within ``seconds`` (it would block forever opening a FIFO)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked"
    if errors:
        raise errors[0]


# The outputs: (command line, output name, --force needed over an existing file).
OUTPUTS = {
    "report": (lambda log, out: ["report", log, "-o", out], "report.html"),
    "csv": (lambda log, out: ["convert", log, out], "history.csv"),
    "jsonl": (lambda log, out: ["convert", log, out], "copy.jsonl"),
    "plot": (lambda log, out: ["audit", log, "--plot", out], "run.png"),
}


class TestLinksAtTheOutput:
    @pytest.mark.parametrize("kind", sorted(OUTPUTS))
    def test_a_link_at_the_output_is_replaced_not_written_through(self, kind, log, victim,
                                                                  tmp_path, capsys):
        argv, name = OUTPUTS[kind]
        out = tmp_path / name
        out.symlink_to(victim)
        force = [] if kind == "plot" else ["--force"]
        code, _, err = cli(capsys, *argv(log, out), *force)
        assert code == 0, err
        assert victim.read_text() == VICTIM_TEXT  # the link's target is untouched
        assert not out.is_symlink() and out.stat().st_size > 0  # the output replaced the link

    @pytest.mark.parametrize("to", ["parquet", "tensorboard"])
    def test_a_link_at_a_directory_output_is_refused_even_with_force(self, to, log, tmp_path,
                                                                     capsys):
        """A directory output is written in place: a link at its name (to another team's log
        or runs) would be written and emptied through. Refused; what it points at stays."""
        other = tmp_path / "other-team" / ("precious.parquet" if to == "parquet" else "runs")
        if to == "parquet":
            make_run(other)
        else:
            other.mkdir(parents=True)
            (other / "keep.txt").write_text("keep")
        before = {p.name: p.read_bytes() for p in other.iterdir()}
        out = tmp_path / ("run.parquet" if to == "parquet" else "tb")
        out.symlink_to(other, target_is_directory=True)
        code, _, err = cli(capsys, "convert", log, out, "--to", to, "--force")
        assert code == 2 and "is a link" in err
        assert {p.name: p.read_bytes() for p in other.iterdir()} == before
        assert out.is_symlink()

    def test_without_force_a_link_at_the_report_is_not_taken_for_a_report(self, log, tmp_path,
                                                                          capsys):
        """check_out reads what is there without following a link: a link to a report this
        command wrote is still not that report."""
        assert cli(capsys, "report", log, "-o", tmp_path / "real.html")[0] == 0
        (tmp_path / "link.html").symlink_to(tmp_path / "real.html")
        code, _, err = cli(capsys, "report", log, "-o", tmp_path / "link.html")
        assert code == 2 and "not a report this command wrote" in err

    def test_no_temporary_name_can_be_planted(self, log, victim, tmp_path, capsys):
        """The old fixed names beside the output (``report.html.tmp``, ``.name.tmp``) are not
        used: links planted there are left alone."""
        planted = [tmp_path / "report.html.tmp", tmp_path / ".report.html.tmp",
                   tmp_path / ".history.csv.tmp", tmp_path / "copy.jsonl.tmp"]
        for path in planted:
            path.symlink_to(victim)
        assert cli(capsys, "report", log, "-o", tmp_path / "report.html")[0] == 0
        assert cli(capsys, "convert", log, tmp_path / "history.csv")[0] == 0
        assert cli(capsys, "convert", log, tmp_path / "copy.jsonl")[0] == 0
        assert victim.read_text() == VICTIM_TEXT
        assert all(p.is_symlink() for p in planted)
        # and nothing is left beside the outputs but what was there and the outputs
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [p.name for p in planted] + ["copy.jsonl", "events.jsonl", "history.csv",
                                         "report.html", "victim.txt"])

    def test_the_csv_loggers_rewrite_leaves_a_planted_name_alone(self, tmp_path, victim):
        """CSVLogger rewrites its file when a metric appears mid-run, beside it then renamed."""
        from plugins import CSVLogger

        path = tmp_path / "history.csv"
        (tmp_path / ".history.csv.tmp").symlink_to(victim)
        with Bus([CSVLogger(str(path))]) as bus:
            bus.train_begin()
            bus.epoch_begin(0)
            bus.epoch_end(0, {"loss": 1.0})
            bus.epoch_begin(1)
            bus.epoch_end(1, {"loss": 0.5, "acc": 0.75})  # a new column: the file is rewritten
            bus.train_end()
        assert victim.read_text() == VICTIM_TEXT
        assert path.read_text().splitlines()[0].split(",")[:3] == ["epoch", "acc", "loss"]


class TestSpecialFilesAtTheOutput:
    @pytest.mark.parametrize("kind", sorted(OUTPUTS))
    def test_a_fifo_at_the_output_is_refused_without_blocking(self, kind, log, tmp_path,
                                                              capsys):
        argv, name = OUTPUTS[kind]
        out = tmp_path / name
        os.mkfifo(out)
        result: list[tuple[int, str, str]] = []
        finishes(lambda: result.append(cli(capsys, *argv(log, out), "--force")
                                       if kind != "plot" else
                                       result.append(cli(capsys, *argv(log, out)))))
        code, _, err = result[0]
        assert code == 2 and "not a regular file" in err, err


class TestSpecialFilesAsTheLog:
    @pytest.mark.parametrize("argv", [["audit", "{fifo}"], ["report", "{fifo}", "-o", "r.html"],
                                      ["convert", "{fifo}", "x.csv"], ["audit", "{log}",
                                                                       "--ranks"]])
    def test_a_fifo_where_a_log_is_read_is_refused_without_blocking(self, argv, log, tmp_path,
                                                                    capsys, monkeypatch):
        """A FIFO named as a log, or put where a rank's log is looked for, would make the
        command wait for a writer for ever: it is refused at once."""
        monkeypatch.chdir(tmp_path)
        fifo = tmp_path / "planted.jsonl"
        os.mkfifo(fifo)
        os.mkfifo(tmp_path / "events.rank1.jsonl")  # beside ``log``, as rank 1's
        result: list[tuple[int, str, str]] = []
        finishes(lambda: result.append(cli(capsys, *(a.format(fifo=fifo, log=log)
                                                     for a in argv))))
        code, _, err = result[0]
        assert code == 2 and "not a regular file" in err, err

    def test_verify_of_a_folder_reports_a_fifo_and_goes_on(self, log, tmp_path, capsys):
        os.mkfifo(tmp_path / "planted.jsonl")
        result: list[tuple[int, str, str]] = []
        finishes(lambda: result.append(cli(capsys, "verify", tmp_path)))
        code, out, err = result[0]
        assert code == 1 and "planted.jsonl: not a regular file" in out + err
        assert "1 of 2 log(s) verified" in out + err


class TestHardLinks:
    @pytest.mark.parametrize("name", ["hard.jsonl", "hard.csv"])
    def test_a_hard_link_to_the_log_is_refused_and_the_log_kept(self, log, tmp_path, capsys,
                                                                name):
        before = log.read_bytes()
        os.link(log, tmp_path / name)
        code, _, err = cli(capsys, "convert", log, tmp_path / name, "--force")
        assert code == 2 and "the log being converted" in err
        assert log.read_bytes() == before

    def test_same_file(self, tmp_path):
        a, b = tmp_path / "a", tmp_path / "b"
        a.write_text("x")
        os.link(a, b)
        (tmp_path / "c").symlink_to(a)
        assert same_file(a, b) and same_file(a, tmp_path / "c")
        assert not same_file(a, tmp_path / "missing")


class TestWriteReplacing:
    def test_whole_or_not_at_all(self, tmp_path):
        target = tmp_path / "out.txt"
        target.write_text("old")

        def fails(path: Path) -> None:
            path.write_text("half")
            raise RuntimeError("interrupted")

        with pytest.raises(RuntimeError):
            write_replacing(target, fails)
        assert target.read_text() == "old"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # no leftover
        write_replacing(target, lambda path: path.write_text("new"))
        assert target.read_text() == "new"

    def test_a_new_file_gets_the_usual_permissions(self, tmp_path):
        mask = os.umask(0o022)
        try:
            write_replacing(tmp_path / "out.txt", lambda path: path.write_text("x"))
        finally:
            os.umask(mask)
        assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o644

    def test_read_head_neither_follows_nor_blocks(self, tmp_path, victim):
        (tmp_path / "link").symlink_to(victim)
        os.mkfifo(tmp_path / "fifo")
        assert read_head(victim, 5) == VICTIM_TEXT[:5].encode()
        assert read_head(tmp_path / "link", 5) is None
        finishes(lambda: read_head(tmp_path / "fifo", 5))
        assert read_head(tmp_path / "fifo", 5) is None and read_head(tmp_path / "no", 5) is None


class TestVerifyReadsOnlyCheckpoints:
    def checkpoint_log(self, tmp_path: Path, path: str, sha256: str) -> Path:
        from eventbus import records as r

        log = tmp_path / "run.jsonl"
        with Bus(log=log) as bus:
            bus.train_begin()
            bus.epoch_begin(0)
            bus.report(r.CheckpointSaved(path=path, sha256=sha256, size=30, epoch=0))
            bus.epoch_end(0, {"loss": 1.0})
            bus.train_end()
        return log

    def test_a_file_that_is_not_a_checkpoint_is_never_confirmed(self, tmp_path, victim):
        """A log naming any readable file with its real digest: verify must not say whether
        the guess is right."""
        digest = hashlib.sha256(victim.read_bytes()).hexdigest()
        log = self.checkpoint_log(tmp_path, str(victim), digest)
        assert [c.status for c in verify_log(log).checkpoints] == ["changed"]

    def test_a_fifo_named_as_a_checkpoint_is_not_opened(self, tmp_path):
        os.mkfifo(tmp_path / "ckpt.h5")
        log = self.checkpoint_log(tmp_path, str(tmp_path / "ckpt.h5"), "0" * 64)
        verdicts = []
        finishes(lambda: verdicts.append(verify_log(log)))
        assert [c.status for c in verdicts[0].checkpoints] == ["changed"]

    def test_a_real_checkpoint_is_still_verified(self, tmp_path):
        import numpy as np

        from eventbus import NumpyModel
        from plugins import ModelCheckpoint

        log = tmp_path / "run.jsonl"
        path = tmp_path / "best.h5"
        with Bus([ModelCheckpoint(str(path))], log=log,
                 model=NumpyModel({"w": np.ones(3)})) as bus:
            bus.train_begin()
            bus.epoch_begin(0)
            bus.epoch_end(0, {"loss": 1.0})
            bus.train_end()
        assert [c.status for c in verify_log(log).checkpoints] == ["verified"]


class TestHostileValues:
    def test_numbers_at_a_doubles_limits_make_a_report(self, tmp_path, capsys):
        log = make_run(tmp_path / "run.jsonl", epochs=4,
                       val_loss=[1e308, -1e308, 1e308, 5e-324],
                       lr=[5e-324, 1e308, 5e-324, 1e308])
        code, out, err = cli(capsys, "report", log, "-o", tmp_path / "r.html")
        assert code == 0, err
        assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")

    def test_numbers_at_a_doubles_limits_make_a_plot(self, tmp_path, capsys):
        """matplotlib's transforms overflow there ("Singular matrix"): drawn at the edge."""
        pytest.importorskip("matplotlib")
        log = make_run(tmp_path / "run.jsonl", epochs=4,
                       val_loss=[1e308, -1e308, 1e308, 5e-324],
                       lr=[5e-324, 1e308, 5e-324, 1e308])
        code, out, err = cli(capsys, "audit", log, "--plot", tmp_path / "run.png")
        assert code == 0 and "warning" not in err and "error" not in err, err
        assert (tmp_path / "run.png").read_bytes().startswith(b"\x89PNG")

    def test_a_learning_rate_over_600_decades_has_few_ticks(self):
        from eventbus.report import _log_ticks, _ticks

        ticks = _log_ticks(-361.0, 346.0)
        assert 2 <= len(ticks) <= 12 and all(0 < t < float("inf") for t in ticks)
        assert _ticks(-1.12e300, 1.12e300)  # a finite span, ticks within it
        assert _ticks(0.0, 1e-321)  # subnormal steps

    def test_a_huge_metric_converts_to_csv(self, tmp_path, capsys):
        name = "m" * 300_000  # over the csv module's default field limit
        log = make_run(tmp_path / "run.jsonl", epochs=2, **{name: [1.0, 2.0]})
        code, out, err = cli(capsys, "convert", log, tmp_path / "out.csv")
        assert code == 0, err
        assert "2 rows" in out or "2 row" in out

    def test_thousands_of_metrics_plot_quickly_with_the_monitored_first(self, tmp_path):
        from eventbus.audit import MOST_CURVES
        from eventbus.plot import plot_data

        many = {f"val_m{i:05d}": [float(i)] * 3 for i in range(2000)}
        log = make_run(tmp_path / "run.jsonl", epochs=3, **many)
        data = plot_data(audit(log))
        drawn = {c.name for p in data.panels for c in p.curves}
        assert "val_loss" in drawn  # EarlyStopping's monitor, first in its panel
        assert all(len(p.curves) <= MOST_CURVES for p in data.panels)
        assert sum(p.left_out for p in data.panels) == 2002 - len(drawn - {"learning_rate"})


@given(st.lists(st.text("abcdefl_os", min_size=1, max_size=12), unique=True, max_size=60),
       st.sampled_from(["val_loss", "loss", "acc"]))
@examples(0.3)
def test_a_panel_draws_at_most_so_many_curves_and_never_drops_the_monitored(names, monitor):
    from eventbus.audit import MOST_CURVES, Audit, MetricSummary
    from eventbus.plot import plot_data
    from eventbus.records import Header

    curves = {name: [(0, 1.0), (1, 0.5)] for name in [*names, monitor]}
    header = Header(v=1, run_id="r", seq=0, time=0.0, created="now", library="eventbus")
    result = Audit(header=header, curves=curves,
                   monitors=[MetricSummary(monitor, "min", 0.5, 1, 0.5)])
    data = plot_data(result)
    drawn = [c.name for p in data.panels for c in p.curves]
    assert monitor in drawn
    assert len(drawn) + sum(p.left_out for p in data.panels) == len(
        [n for n in curves if n not in ("learning_rate", "lr")])
    assert all(len(p.curves) == min(MOST_CURVES, len(p.curves) + p.left_out)
               for p in data.panels)


def test_read_back_what_was_written(log, tmp_path, capsys):
    """A converted copy reads back as the source (the replacing write loses nothing)."""
    assert cli(capsys, "convert", log, tmp_path / "copy.jsonl")[0] == 0
    assert [r.model_dump() for r in read_log(tmp_path / "copy.jsonl")] == \
        [r.model_dump() for r in read_log(log)]


class TestNamesAsTheyAre:
    """An output's name is a name: never a URI, never refused for its bytes."""

    def test_a_parquet_name_that_reads_as_a_uri_is_written_where_it_names(self, log, tmp_path,
                                                                         capsys, monkeypatch):
        """pyarrow took a string path for a URI when it could: 'file:/elsewhere/x.parquet',
        relative, had a temporary segment written into /elsewhere/x.parquet. It gets the open
        file now."""
        elsewhere = tmp_path / "elsewhere" / "x.parquet"
        elsewhere.mkdir(parents=True)
        work = tmp_path / "work"
        work.mkdir()
        monkeypatch.chdir(work)
        name = f"file:{elsewhere}"
        code, _, err = cli(capsys, "convert", log, name)
        assert code == 0, err
        assert list(elsewhere.iterdir()) == []
        assert len(list(read_log(work / name))) == len(list(read_log(log)))

    def test_names_that_are_not_utf8_are_written_and_shown_escaped(self, log, tmp_path,
                                                                   capsys):
        odd = tmp_path / os.fsdecode(b"caf\xe9.jsonl")
        odd.write_bytes(log.read_bytes())
        page = tmp_path / "r.html"
        code, _, err = cli(capsys, "report", odd, "-o", page)
        assert code == 0, err
        assert "caf\\udce9.jsonl" in page.read_text(encoding="utf-8")
        out = tmp_path / os.fsdecode(b"out\xe9.parquet")
        code, _, err = cli(capsys, "convert", log, out)
        assert code == 0, err
        assert len(list(read_log(out))) == len(list(read_log(log)))

    def test_a_record_no_reader_builds_is_refused_by_convert_and_nothing_left(self, log,
                                                                              tmp_path, capsys):
        """A batch record with an index past 2**63 (read on its types alone) reached the
        Parquet writer: a traceback, and an empty output folder left."""
        import orjson

        log = tmp_path / "batches.jsonl"
        with Bus([], log=log) as bus:
            bus.train_begin({"epochs": 1})
            bus.epoch_begin(0)
            for batch in range(3):
                bus.batch_end(batch, {"loss": 1.0})
            bus.epoch_end(0, {"loss": 1.0})
        lines = log.read_bytes().splitlines()
        at = next(i for i, line in enumerate(lines) if b'"batch_end"' in line)
        record = orjson.loads(lines[at])
        record["step"] = 2**63
        lines[at] = orjson.dumps(record)
        bad = tmp_path / "bad.jsonl"
        bad.write_bytes(b"\n".join(lines) + b"\n")
        out = tmp_path / "out.parquet"
        code, _, err = cli(capsys, "convert", bad, out)
        assert code == 2 and f"bad.jsonl:{at + 1}: invalid batch_end record: step" in err
        assert not out.exists()

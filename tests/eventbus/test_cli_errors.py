"""Bad input to the command line ends as one line on stderr and exit 2, never as a traceback or a
success message for something that did not happen; the audit and replay entry points refuse bad
arguments by name.

The commands run in-process through ``eventbus.cli.main`` (the same code as the script, without
an interpreter's start-up) on a small run made here. That the installed script exits with main's
status, one line and no traceback, is tested once, in test_cli.py's TestEntryPoints.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import orjson
import pydantic
import pytest

from eventbus import Bus, Plugin, hookimpl, read_log
from eventbus import records as r
from eventbus.audit import audit, header_of, render
from eventbus.bus import RunWarning
from eventbus.cli import _parse_value, main
from eventbus.demo import run_demo
from eventbus.errors import ConfigError, LogError
from eventbus.records import KINDS, trusted

VALUES = [1.0, 0.8, 0.9, 0.95, 0.97, 0.99, 1.0, 1.1]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    """A short run with decision plugins and the two sinks convert uses."""
    from plugins import CSVLogger, EarlyStopping, History, ReduceLROnPlateau, TensorBoard

    root = tmp_path_factory.mktemp("run")
    log = root / "events.jsonl"
    plugins = [ReduceLROnPlateau(monitor="val_loss", patience=1, factor=0.5),
               EarlyStopping(monitor="val_loss", patience=3), History(),
               CSVLogger(str(root / "history.csv")), TensorBoard(log_dir=str(root / "tb"))]
    with Bus(plugins, log=log, learning_rate=0.1) as bus:
        bus.train_begin({"epochs": len(VALUES)})
        for epoch, value in enumerate(VALUES):
            bus.epoch_begin(epoch)
            bus.batch_end(0, {"loss": value})
            bus.epoch_end(epoch, {"loss": value, "val_loss": value})
            if bus.stop_training:
                break
        bus.train_end()
    return {"root": root, "log": log}


def cli(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(capsys, *argv: object, words: tuple[str, ...] = ()) -> str:
    """Run the command; check it failed as a user error (exit 2, one line, no output)."""
    code, out, err = cli(capsys, *argv)
    assert "Traceback" not in err
    assert (code, out) == (2, ""), err
    (line,) = err.splitlines()
    assert line.startswith(f"eventbus {argv[0]}: error: ")
    for word in words:
        assert word in line
    return line


def with_line(log: Path, dest: Path, index: int, line: bytes) -> Path:
    """A copy of ``log`` with its line ``index`` replaced."""
    lines = log.read_bytes().splitlines(keepends=True)
    lines[index] = line
    dest.write_bytes(b"".join(lines))
    return dest


def with_bad_metric(log: Path, dest: Path) -> tuple[Path, int]:
    """A copy of ``log`` whose first epoch_end has ``"val_loss": "oops"``; and its seq."""
    lines = log.read_bytes().splitlines(keepends=True)
    for i, line in enumerate(lines):
        data = orjson.loads(line)
        if data["kind"] == "epoch_end":
            data["logs"]["val_loss"] = "oops"
            return with_line(log, dest, i, orjson.dumps(data) + b"\n"), data["seq"]
    raise AssertionError("no epoch_end")


class TestReplayOverrides:
    @pytest.mark.parametrize("assignment", ["TensorBoard.update_freq=-5",
                                            "CSVLogger.separator=x"])
    def test_set_of_a_plugin_replay_does_not_run_is_refused(self, run, capsys, assignment):
        """A sink is not replayed, so overriding it would change nothing: an error naming it."""
        plugin, param = assignment.split("=")[0].split(".")
        one_line_error(capsys, "replay", run["log"], "--set", assignment,
                       words=(f"does not run {plugin}", "side effects", f"{plugin}.{param}"))

    def test_a_sweep_of_a_plugin_replay_does_not_run_is_refused(self, run, capsys):
        """The same for --sweep."""
        one_line_error(capsys, "replay", run["log"], "--sweep", "TensorBoard.update_freq=1,2",
                       words=("does not run TensorBoard",))

    def test_two_sweeps_are_refused(self, run, capsys):
        """A second --sweep is not silently dropped: one parameter at a time."""
        one_line_error(capsys, "replay", run["log"], "--sweep", "EarlyStopping.patience=1,2",
                       "--sweep", "ReduceLROnPlateau.factor=0.1,0.2",
                       words=("--sweep", "EarlyStopping.patience",
                              "ReduceLROnPlateau.factor"))

    @pytest.mark.parametrize("values,which", [("1,,3", "value 2 of 3"), ("1,2,", "value 3 of 3"),
                                              (",1", "value 1 of 2")])
    def test_an_empty_sweep_value_is_refused(self, run, capsys, values, which):
        """An empty value in the list is not silently dropped: the error says which one."""
        one_line_error(capsys, "replay", run["log"], "--sweep",
                       f"EarlyStopping.patience={values}", words=(which, "empty"))

    def test_a_sweep_of_one_parameter_still_works(self, run, capsys):
        """One --sweep with every value given: a row per value."""
        code, out, err = cli(capsys, "replay", run["log"], "--sweep",
                             "EarlyStopping.patience=1,2,3")
        assert code == 0, err
        assert [line.split()[0] for line in out.splitlines()[1:4]] == ["1", "2", "3"]

    def test_a_plugin_without_parameters_says_it_takes_none(self, run, capsys):
        """Not "its parameters are " followed by nothing."""
        line = one_line_error(capsys, "replay", run["log"], "--set", "History.foo=1",
                              words=("History has no parameter 'foo'", "takes no parameters"))
        assert "its parameters are" not in line

    def test_integers_are_read_exactly(self, run, capsys):
        """A 23-digit patience stays an int (not the float 1e+23) and is used as given."""
        code, out, err = cli(capsys, "replay", run["log"], "--set",
                             "EarlyStopping.patience=99999999999999999999999")
        assert code == 0, err
        assert out.splitlines()[:2] == [
            "What-if with EarlyStopping.patience=99999999999999999999999: exact (the replayed "
            "learning rate never leaves the recorded one, so the recorded metrics are those "
            "this run would have seen).",
            # VALUES: the best at epoch 2, then 3 worse ones: patience 3 stopped it at 5.
            "  The run would not have stopped within the 5 recorded epochs; the recorded run "
            "stopped at epoch 5 (EarlyStopping)."]

    @pytest.mark.parametrize("text,value", [
        ("3", 3), ("99999999999999999999999", 99999999999999999999999),
        ("-18446744073709551617", -18446744073709551617), ("0.5", 0.5), ("true", True),
        ("null", None), ('"max"', "max"), ("max", "max"), ("[1, 99999999999999999999]",
                                                           [1, 99999999999999999999]),
        ("NaN", "NaN"), ("Infinity", "Infinity"), ("1e400", "1e400"), ("", ""),
    ])
    def test_values_are_json_where_they_parse_else_text(self, text, value):
        """JSON (integers exact), else the text; NaN and out-of-range floats stay text."""
        parsed = _parse_value(text)
        assert parsed == value and type(parsed) is type(value)

    @pytest.mark.parametrize("command", ["replay", "what-if"])
    @pytest.mark.parametrize("value, words", [
        ("[" * 5000 + "]" * 5000, ("nested too deeply",)),
        ("9" * 5000, ("an integer of 5000 digits",)),
    ], ids=["nested 5000 deep", "5000 digits"])
    def test_a_value_too_deep_or_long_is_a_one_line_error(self, run, capsys, command, value,
                                                         words):
        """Not a RecursionError traceback, and not a 5,000-digit integer read as text."""
        flag = "--set" if command == "replay" else "--sweep"
        one_line_error(capsys, command, run["log"], flag, f"EarlyStopping.patience={value}",
                       words=words)


class _StrictSettings(pydantic.BaseModel):
    rate: float
    window: int


class Strict(Plugin):
    """A third-party plugin that validates its parameters with pydantic."""

    def __init__(self, rate: float = 0.5, window: int = 3):
        self.settings = _StrictSettings(rate=rate, window=window)

    @hookimpl
    def on_epoch_end(self, event):
        return None


@pytest.mark.parametrize(("flag", "given", "value"), [("--set", "EarlyStopping.patience", "3"),
                                                     ("--sweep", "EarlyStopping.patience",
                                                      "1,2")])
def test_a_space_for_the_equals_sign_is_named_with_the_form(run, capsys, flag, given, value):
    """``--set EarlyStopping.patience 3``: argparse gave the top level's usage and
    "unrecognized arguments: 3". The command's own usage, and the form to give (not a value
    guessed: with the value before the log, argparse takes the value for the log)."""
    with pytest.raises(SystemExit) as exited:  # argparse's way out
        main(["replay", str(run["log"]), flag, given, value])
    out, err = capsys.readouterr()
    assert (exited.value.code, out) == (2, "")
    assert err.startswith("usage: eventbus replay")
    assert err.splitlines()[-1] == (
        f"eventbus replay: error: unrecognized arguments: {value}; {flag} takes "
        f"PLUGIN.PARAM=VALUE as one argument: {flag} {given}=VALUE")


class TestTheWrongFile:
    """A file or folder that is not a log is named as such, not as a damaged log."""

    def test_a_run_folder_names_the_logs_it_holds(self, run, capsys):
        line = one_line_error(capsys, "audit", run["root"])
        assert line.endswith(f"{run['root']}: a folder, not an event log; the logs in it: "
                             f"{run['root'] / 'events.jsonl'}")

    @pytest.mark.parametrize("name", ["history.csv", "weights.h5"])
    def test_a_csv_or_a_checkpoint_is_not_an_event_log(self, run, capsys, tmp_path, name):
        path = run["root"] / "history.csv"
        if name == "weights.h5":
            path = tmp_path / name
            path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 8)
        line = one_line_error(capsys, "audit", path)
        assert line.endswith(f"{path}: not an event log: it does not start with a JSON record")

    def test_a_folder_of_many_logs_names_four_and_counts_the_rest_not_temporaries(
            self, capsys, tmp_path):
        for name in ("a.jsonl", "b.jsonl", "c.parquet", "d.jsonl", "e.jsonl", "f.jsonl",
                     ".out.jsonl.0a1b2c.jsonl"):
            (tmp_path / name).write_text("")
        line = one_line_error(capsys, "audit", tmp_path)
        assert line.endswith(f"the logs in it: {tmp_path / 'a.jsonl'}, {tmp_path / 'b.jsonl'}, "
                             f"{tmp_path / 'c.parquet'}, {tmp_path / 'd.jsonl'} and 2 more")

    def test_a_byte_order_mark_is_named_not_called_another_kind_of_file(self, capsys,
                                                                        tmp_path):
        path = tmp_path / "events.jsonl"
        path.write_bytes(b'\xef\xbb\xbf{"v": 1, "kind": "header"}\n{"v": 1}\n')
        assert "byte order mark" in one_line_error(capsys, "audit", path)

    def test_a_damaged_first_record_is_still_called_damaged(self, capsys, tmp_path):
        path = tmp_path / "events.jsonl"
        path.write_bytes(b'{"v": 1, "kind": \n')
        assert "line is not JSON" in one_line_error(capsys, "audit", path)


class TestMessages:
    def test_a_message_of_several_lines_is_joined_not_cut(self, capsys, tmp_path, monkeypatch):
        """A pydantic error names the field on its second line: the one line keeps it."""
        from eventbus.registry import registry

        monkeypatch.setitem(registry._classes, "Strict", Strict)
        log = tmp_path / "events.jsonl"
        with Bus([Strict()], log=log) as bus:
            bus.train_begin({"epochs": 1})
            bus.epoch_begin(0)
            bus.epoch_end(0, {"val_loss": 1.0})
            bus.train_end()
        line = one_line_error(capsys, "replay", log, "--set", "Strict.rate=high",
                              words=("1 validation error for _StrictSettings; rate; Input "
                                     "should be a valid number",))
        assert "\n" not in line

    def test_a_warning_of_several_lines_is_joined_too(self, capsys, monkeypatch):
        """Warnings go through the same one-line rule."""
        from eventbus.cli import _one_line_warnings

        _one_line_warnings("audit")("first\n  second\n\nthird", UserWarning)
        assert capsys.readouterr().err == "eventbus audit: warning: first; second; third\n"


class TestPlotPath:
    """``audit --plot PATH``: a path matplotlib cannot write is one line before any output."""

    @pytest.mark.parametrize("name,words", [
        ("missing/run.png", ("--plot", "the directory", "does not exist")),
        ("run.txt", ("--plot", ".txt is not an image format matplotlib writes", ".png")),
        ("run", ("--plot", "no extension")),
    ])
    def test_an_unusable_path_is_refused_first(self, run, capsys, tmp_path, name, words):
        pytest.importorskip("matplotlib")
        one_line_error(capsys, "audit", run["log"], "--plot", tmp_path / name, words=words)
        assert list(tmp_path.iterdir()) == []

    def test_a_directory_is_not_an_image(self, run, capsys, tmp_path):
        pytest.importorskip("matplotlib")
        (tmp_path / "run.png").mkdir()
        one_line_error(capsys, "audit", run["log"], "--plot", tmp_path / "run.png",
                       words=("--plot", "is a directory"))

    def test_a_path_under_a_file_is_refused(self, run, capsys, tmp_path):
        pytest.importorskip("matplotlib")
        (tmp_path / "afile").write_text("x")
        one_line_error(capsys, "audit", run["log"], "--plot", tmp_path / "afile" / "run.png",
                       words=("--plot", "is not a directory"))

    def test_another_format_matplotlib_writes_is_fine(self, run, capsys, tmp_path):
        """The format comes from the extension: .svg is written as SVG."""
        pytest.importorskip("matplotlib")
        code, out, err = cli(capsys, "audit", run["log"], "--plot", tmp_path / "run.svg")
        assert code == 0, err
        assert out.startswith("run ")
        assert b"<svg" in (tmp_path / "run.svg").read_bytes()[:500]


class TestNaNMetrics:
    """A monitored metric that is NaN was reported: the audit says nan, not "never"."""

    @staticmethod
    def nan_run(path: Path, values: list[float]) -> Path:
        from plugins import EarlyStopping

        with Bus([EarlyStopping(monitor="val_loss", patience=3)], log=path) as bus:
            bus.train_begin({"epochs": len(values)})
            for epoch, value in enumerate(values):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": 1.0, "val_loss": value})
            bus.train_end()
        return path

    def test_a_last_value_of_nan_shows_as_nan(self, capsys, tmp_path):
        log = self.nan_run(tmp_path / "events.jsonl", [1.0, 0.9, math.nan])
        code, out, _ = cli(capsys, "audit", log)
        assert code == 0
        assert "  best val_loss: 0.9 at epoch 2 (min; last nan)" in out.splitlines()
        code, out, _ = cli(capsys, "audit", log, "--json")
        (monitor,) = orjson.loads(out)["monitors"]
        assert monitor == {"name": "val_loss", "mode": "min", "best": 0.9, "best_epoch": 1,
                           "last": "NaN"}

    def test_only_nan_is_reported_not_never_reported(self, capsys, tmp_path):
        log = self.nan_run(tmp_path / "events.jsonl", [math.nan, math.nan])
        code, out, _ = cli(capsys, "audit", log)
        assert code == 0
        assert "never reported" not in out
        assert "  best val_loss: none, every value reported is nan (min; last nan)" in \
            out.splitlines()
        code, out, _ = cli(capsys, "audit", log, "--json")
        (monitor,) = orjson.loads(out)["monitors"]
        assert (monitor["best"], monitor["last"]) == (None, "NaN")
        assert math.isnan(audit(log).monitors[0].last)  # Python gets the float

    def test_a_metric_never_reported_still_says_so(self, capsys, tmp_path):
        from plugins import EarlyStopping

        log = tmp_path / "events.jsonl"
        with Bus([EarlyStopping(monitor="val_loss")], log=log) as bus, \
                pytest.warns(RunWarning, match="val_loss` which is not available"):
            bus.train_begin({"epochs": 1})
            bus.epoch_begin(0)
            bus.epoch_end(0, {"loss": 1.0})
            bus.train_end()
        code, out, _ = cli(capsys, "audit", log, "--json")
        assert orjson.loads(out)["monitors"][0]["last"] is None
        code, out, _ = cli(capsys, "audit", log)
        assert "  val_loss: never reported" in out.splitlines()


class TestConvertOutput:
    def test_csv_into_an_existing_directory_is_refused(self, run, capsys, tmp_path):
        """Nothing could be written there: exit 2, not "wrote N records"."""
        one_line_error(capsys, "convert", run["log"], tmp_path, "--to", "csv",
                       words=(str(tmp_path), "is a directory"))
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("to,name", [("csv", "x.csv"), ("tensorboard", "tb"),
                                         ("jsonl", "x.jsonl"), ("parquet", "x.parquet")])
    def test_an_output_under_a_file_is_refused(self, run, capsys, tmp_path, to, name):
        """A path below a regular file cannot be made, in any format."""
        (tmp_path / "file").write_text("x")
        one_line_error(capsys, "convert", run["log"], tmp_path / "file" / name, "--to", to,
                       words=("is a file, not a directory",))

    def test_tensorboard_onto_a_file_is_refused(self, run, capsys, tmp_path):
        """TensorBoard writes a directory; an existing file is left alone."""
        target = tmp_path / "history.csv"
        target.write_text("epoch\n")
        one_line_error(capsys, "convert", run["log"], target, "--to", "tensorboard",
                       words=("is a file", "writes a directory"))
        assert target.read_text() == "epoch\n"

    def test_jsonl_onto_a_directory_says_so(self, run, capsys, tmp_path):
        """An existing directory named x.jsonl is called a directory, not "not a .jsonl path"."""
        (tmp_path / "x.jsonl").mkdir()
        one_line_error(capsys, "convert", run["log"], tmp_path / "x.jsonl", "--to", "jsonl",
                       words=("is a directory",))

    def test_converting_a_log_onto_itself_is_refused(self, run, capsys, tmp_path):
        """--to csv over the source would truncate the log being read."""
        copy = tmp_path / "events.jsonl"
        copy.write_bytes(run["log"].read_bytes())
        one_line_error(capsys, "convert", copy, copy, "--to", "csv",
                       words=("the log being converted",))
        assert copy.read_bytes() == run["log"].read_bytes()

    def test_a_sink_failing_part_way_is_an_error(self, run, capsys, tmp_path):
        """The path is usable but the sink cannot write (a file where it makes train/):
        exit 2 naming the sink, not a warning and a success message."""
        (tmp_path / "train").write_text("in the way")
        line = one_line_error(capsys, "convert", run["log"], tmp_path, "--to", "tensorboard",
                              "--force", words=("TensorBoard", "train"))
        assert "wrote" not in line

    @pytest.mark.parametrize("to,name", [("csv", "out/h.csv"), ("tensorboard", "tb"),
                                         ("jsonl", "copy.jsonl"), ("parquet", "copy.parquet")])
    def test_a_usable_output_is_written(self, run, capsys, tmp_path, to, name):
        """The checks refuse nothing they should not: a new path (parents made as needed)."""
        code, out, err = cli(capsys, "convert", run["log"], tmp_path / name, "--to", to)
        assert (code, err) == (0, ""), err
        assert out.startswith("wrote ") and (tmp_path / name).exists()


class TestBadLogs:
    def test_a_file_with_no_newline_and_no_record_is_one_line(self, run, capsys, tmp_path):
        """``printf 'hello' > c.jsonl``: neither a traceback nor a warning line before the
        error."""
        bad = tmp_path / "c.jsonl"
        bad.write_bytes(b"hello")
        for argv in (["audit", bad], ["replay", bad], ["convert", bad, tmp_path / "o.csv",
                                                       "--to", "csv"]):
            one_line_error(capsys, *argv, words=(str(bad),))

    @pytest.mark.parametrize("argv", [
        ["audit", "{bad}"], ["audit", "{bad}", "--json"], ["replay", "{bad}"],
        ["replay", "{bad}", "--verify"], ["replay", "{bad}", "--set", "EarlyStopping.patience=1"],
        ["replay", "{bad}", "--sweep", "EarlyStopping.patience=1,2"],
        ["convert", "{bad}", "{out}.jsonl", "--to", "jsonl"],
        ["convert", "{bad}", "{out}.parquet", "--to", "parquet"],
        ["convert", "{bad}", "{out}.csv", "--to", "csv"],
        ["convert", "{bad}", "{out}-tb", "--to", "tensorboard"],
    ], ids=lambda argv: "-".join(a.strip("-{}") for a in argv if not a.startswith("{")))
    def test_a_corrupt_log_is_one_line_in_every_command(self, run, capsys, tmp_path, argv):
        """A LogCorruptError (a line mid-log that is not a record) names the file and line."""
        bad = with_line(run["log"], tmp_path / "bad.jsonl", 5, b'{"kind": oops\n')
        one_line_error(capsys, *(a.format(bad=bad, out=tmp_path / "out") for a in argv),
                       words=(f"{bad}:6",))

    def test_a_non_number_metric_never_crashes_audit(self, run, capsys, tmp_path):
        """``"val_loss": "oops"`` in a log file: the reader refuses the record, as the docs
        say, in one line naming the file, the line and the field (exit 2); records given from
        Python reach the bad-records listing (below)."""
        bad, seq = with_bad_metric(run["log"], tmp_path / "bad.jsonl")
        code, out, err = cli(capsys, "audit", bad)
        assert "Traceback" not in err and code == 2
        (line,) = err.splitlines()
        assert str(bad) in line and "val_loss" in line and seq is not None


def _header(**fields: object) -> r.Header:
    return r.Header(seq=0, created="2026-11-27T00:00:00+00:00", library="eventbus test",
                    **fields)


def _records_with_bad_metric() -> list[r.Record]:
    epoch_end = trusted(KINDS["epoch_end"], {
        **r.EpochEnd(seq=3, epoch=0, logs={"val_loss": 1.0}).__dict__,
        "logs": {"val_loss": "oops", "loss": 0.5}})
    return [_header(), r.TrainBegin(seq=1, params={"epochs": 2}),
            r.EpochBegin(seq=2, epoch=0), epoch_end, r.EpochBegin(seq=4, epoch=1),
            r.EpochEnd(seq=5, epoch=1, logs={"val_loss": 0.7, "loss": 0.4}),
            r.TrainEnd(seq=6)]


class TestAuditArguments:
    def test_a_non_number_metric_is_a_bad_record(self):
        """Reported with its seq and field, left out of the curves; the audit goes on."""
        records = _records_with_bad_metric()
        records[0] = _header(plugins=[r.PluginSpec(name="EarlyStopping",
                                                           params={"monitor": "val_loss"})])
        result = audit(records)
        (bad,) = result.bad_records
        assert (bad["seq"], bad["field"], bad["value"]) == (3, "logs.val_loss", "oops")
        assert result.curves["val_loss"] == [(1, 0.7)]
        (monitor,) = result.monitors
        assert (monitor.best, monitor.best_epoch) == (0.7, 1)
        assert "seq 3 (epoch_end, epoch 1): val_loss is str 'oops'" in render(result)
        assert result.as_dict()["bad_records"] == [bad]

    def test_an_audit_of_a_clean_log_has_no_bad_records(self, run):
        """Nothing is listed, and the text has no "bad records" line."""
        result = audit(run["log"])
        assert result.bad_records == [] and "bad records" not in render(result)

    def test_no_records_is_not_an_event_log(self):
        """Not an IndexError."""
        with pytest.raises(LogError, match="not an event log"):
            audit([])

    @pytest.mark.parametrize("log", [None, 5, b"events.jsonl", {"kind": "header"}])
    def test_a_log_that_is_neither_a_path_nor_records_is_named(self, log):
        """Not "'NoneType' object is not iterable"."""
        with pytest.raises(ConfigError, match=r"audit: log must be a path") as caught:
            audit(log)
        assert caught.value.field == "log"

    def test_an_item_that_is_not_a_record_is_named(self):
        """An iterable is checked record by record as it is read."""
        with pytest.raises(ConfigError, match=r"audit: log item 1 is str 'x'"):
            audit([_header(), "x"])

    def test_a_torn_only_file_is_one_error_and_no_warning(self, monkeypatch):
        """If the reader yields nothing but a torn-line warning, that warning goes into the
        error (one line for the command line), not out as a warning as well."""
        from eventbus.jsonl import TornLogWarning

        def torn(log, **_):
            warnings.warn(f"{log}: the last line (line 1, 5 bytes) is incomplete",
                          TornLogWarning, stacklevel=2)
            yield from ()

        monkeypatch.setattr(sys.modules["eventbus.audit"], "read_log", torn)
        with warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("always")
            with pytest.raises(LogError) as caught:
                header_of("c.jsonl", "c.jsonl")
        assert shown == []
        assert str(caught.value) == ("c.jsonl: not an event log (no header record; the last "
                                     "line (line 1, 5 bytes) is incomplete)")


class TestDemoOptions:
    @pytest.mark.parametrize("argv,words", [
        (["--epochs", "-1"], ("--epochs", "at least 1", "-1")),
        (["--epochs", "0"], ("--epochs", "at least 1")),
        (["--seed", "-5"], ("--seed", "at least 0", "-5")),
        (["--seed", str(2**64)], ("--seed", "at most")),
        (["--epochs", str(2**63)], ("--epochs", "at most")),
    ])
    def test_numbers_out_of_range_are_refused_by_name(self, capsys, tmp_path, argv, words):
        """Before anything is trained or written."""
        out = tmp_path / "run"
        one_line_error(capsys, "demo", "--out", out, "--quiet", *argv, words=words)
        assert not out.exists()

    @pytest.mark.parametrize("kwargs,field", [({"epochs": -1}, "epochs"),
                                              ({"epochs": True}, "epochs"),
                                              ({"seed": -5}, "seed"), ({"seed": "0"}, "seed")])
    def test_run_demo_checks_its_arguments(self, tmp_path, kwargs, field):
        """The Python entry point refuses the same numbers, naming the argument."""
        with pytest.raises(ConfigError, match=f"run_demo: {field} must be an int") as caught:
            run_demo(out=tmp_path / "run", **kwargs)
        assert caught.value.field == field


def test_the_fixture_log_reads_back(run):
    """The run the tests above break in various ways is itself a good log."""
    records = list(read_log(run["log"]))
    assert records[0].kind == "header" and records[-1].kind == "train_end"

"""The command line explains itself: every command's --help (description, examples that parse,
defaults), one epoch numbering said everywhere, ``convert``'s formats, units and overwrites, and
what-if and deferred-stop wording. Commands run in this process through ``main``, as in
test_cli.py."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import shlex
from pathlib import Path

import orjson
import pytest
from test_audit import deferring_run

from eventbus import Bus, read_log
from eventbus import records as r
from eventbus.cli import EPOCHS_NOTE, build_parser, main
from eventbus.log import open_writer

DOCS = Path(__file__).resolve().parents[2] / "docs"
VALUES = [1.0, 0.8, 0.9, 0.95, 0.97, 0.99, 1.0, 1.1]


def cmd(*args: object) -> tuple[int, str, str]:
    """``eventbus ARGS`` in this process: exit status (argparse's too), stdout, stderr."""
    out, err = (io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
                for _ in range(2))
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return code, out.buffer.getvalue().decode(), err.buffer.getvalue().decode()


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    """A short run EarlyStopping stopped at epoch 5 (counted from 1) of 8 planned."""
    from plugins import EarlyStopping, ReduceLROnPlateau

    path = tmp_path_factory.mktemp("run") / "events.jsonl"
    with Bus([ReduceLROnPlateau(monitor="val_loss", patience=1, factor=0.5),
              EarlyStopping(monitor="val_loss", patience=3)], log=path,
             learning_rate=0.1) as bus:
        bus.train_begin({"epochs": len(VALUES)})
        for epoch, value in enumerate(VALUES):
            bus.epoch_begin(epoch)
            bus.batch_end(0, {"loss": value})
            bus.epoch_end(epoch, {"loss": value, "val_loss": value})
            if bus.stop_training:
                break
        bus.train_end()
    return path


class TestHelp:
    @pytest.mark.parametrize("name", sorted(subcommands()))
    def test_every_command_has_a_description_and_examples_that_parse(self, name):
        """``eventbus NAME --help``: a description beyond the one-line summary, and an
        examples section whose every line is a command the parser accepts."""
        code, out, _ = cmd(name, "--help")
        assert code == 0
        parser = subcommands()[name]
        assert parser.description and len(parser.description) > 60
        assert parser.description.splitlines()[0] in out
        examples = out[out.index("\nexamples:\n") + len("\nexamples:\n"):].splitlines()
        assert examples and all(line.startswith("  eventbus ") for line in examples)
        for line in examples:
            argv = shlex.split(line.split("|")[0])[1:]
            args = build_parser().parse_args(argv)  # exits (a failure) if it does not parse
            assert subcommands()[args.command].prog == parser.prog  # the command, or an alias

    @pytest.mark.parametrize("name", sorted(subcommands()))
    def test_every_argument_has_help_and_every_default_is_shown(self, name):
        """Positionals (LOG, OUT) have help text; an option with a default says it."""
        parser = subcommands()[name]
        code, out, _ = cmd(name, "--help")
        for action in parser._actions:
            assert action.help, f"{name} {action.dest} has no help"
            if action.option_strings and action.default not in (None, False, [],
                                                                 argparse.SUPPRESS):
                assert f"(default: {action.default})" in " ".join(out.split())

    def test_demo_help_shows_its_defaults(self):
        """The numbers a user would otherwise guess: 40 epochs, seed 0, folder demo-run."""
        out = " ".join(cmd("demo", "--help")[1].split())
        assert "at most this many epochs (default: 40)" in out
        assert "(default: 0)" in out and "(default: demo-run)" in out

    def test_the_epoch_numbering_is_said_in_help_and_both_docs(self):
        """One rule, stated where people look: the top-level help, audit's and replay's, and
        docs/cli.md and docs/replay-and-audit.md (in the same words)."""
        rule = " ".join(EPOCHS_NOTE.split())
        assert rule in " ".join(cmd("--help")[1].split())
        for name in ("audit", "replay"):
            assert rule in " ".join(cmd(name, "--help")[1].split())
        for page in ("cli.md", "replay-and-audit.md"):
            assert rule in " ".join((DOCS / page).read_text().split()), page

    def test_replay_json_without_a_log_is_replays_usage_not_the_top_level(self):
        """``replay --json`` is an option of replay: the error names what replay misses."""
        code, out, err = cmd("replay", "--json")
        assert code == 2 and out == ""
        assert err.startswith("usage: eventbus replay")
        assert "the following arguments are required: LOG" in err


class TestConvertFormats:
    @pytest.mark.parametrize("name,fmt", [("h.csv", "csv"), ("c.jsonl", "jsonl"),
                                          ("c.parquet", "parquet"), ("C.CSV", "csv")])
    def test_the_format_comes_from_the_extension(self, log, tmp_path, name, fmt):
        """No --to needed when the name says the format."""
        code, out, err = cmd("convert", log, tmp_path / name)
        assert (code, err) == (0, "")
        assert out.rstrip().endswith(f"({fmt})")

    def test_csv_counts_rows_and_logs_count_records(self, log, tmp_path):
        """"wrote N rows" is the CSV's data rows read back; "wrote N records" the log's."""
        _, out, _ = cmd("convert", log, tmp_path / "h.csv")
        with open(tmp_path / "h.csv", newline="") as file:
            rows = list(csv.DictReader(file))
        ends = [x for x in read_log(log) if isinstance(x, r.EpochEnd)]
        assert len(rows) == len(ends) == 5
        assert out == f"wrote 5 rows to {tmp_path / 'h.csv'} (csv)\n"
        _, out, _ = cmd("convert", log, tmp_path / "c.jsonl")
        assert out == f"wrote {len(list(read_log(log)))} records to {tmp_path / 'c.jsonl'} " \
                      "(jsonl)\n"
        _, out, _ = cmd("convert", log, tmp_path / "tb", "--to", "tensorboard")
        assert out == f"wrote 5 epochs to {tmp_path / 'tb'} (tensorboard)\n"

    def test_a_name_with_no_format_needs_to(self, log, tmp_path):
        """A TensorBoard directory (no extension): one line asking for --to; nothing made."""
        code, out, err = cmd("convert", log, tmp_path / "tb")
        assert (code, out) == (2, "")
        (line,) = err.splitlines()
        assert line.startswith("eventbus convert: error: convert: cannot tell the format")
        assert "--to" in line and not (tmp_path / "tb").exists()

    def test_a_name_and_a_to_that_disagree_are_refused(self, log, tmp_path):
        """``x.parquet --to csv`` is a slip: refused, nothing written."""
        code, _, err = cmd("convert", log, tmp_path / "x.parquet", "--to", "csv")
        assert code == 2 and "is named as parquet but --to is csv" in err
        assert not (tmp_path / "x.parquet").exists()


class TestConvertOverwrite:
    @pytest.mark.parametrize("name", ["h.csv", "c.jsonl"])
    def test_an_existing_file_is_kept_without_force(self, log, tmp_path, name):
        """Exit 2, one line naming --force, the file byte for byte as it was."""
        target = tmp_path / name
        target.write_bytes(b"mine\n")
        code, out, err = cmd("convert", log, target)
        assert (code, out) == (2, "")
        (line,) = err.splitlines()
        assert line == f"eventbus convert: error: convert: {target} exists (a file); add " \
                       "--force to replace it, or name a new output"
        assert target.read_bytes() == b"mine\n"

    def test_force_replaces_it(self, log, tmp_path):
        """With --force the file is the converted one."""
        target = tmp_path / "h.csv"
        target.write_bytes(b"mine\n")
        code, out, err = cmd("convert", log, target, "--force")
        assert (code, err) == (0, "") and out.startswith("wrote 5 rows")
        with open(target, newline="") as file:
            assert next(csv.reader(file))[0] == "epoch"

    def test_an_existing_parquet_log_is_kept_without_force_and_replaced_with_it(self, log,
                                                                                tmp_path):
        """A Parquet log is a directory: refused while it has segments; --force gives one
        copy, not two."""
        target = tmp_path / "c.parquet"
        assert cmd("convert", log, target)[0] == 0
        before = sorted(p.name for p in target.iterdir())
        code, _, err = cmd("convert", log, target)
        assert code == 2 and "a directory with files in it" in err
        assert sorted(p.name for p in target.iterdir()) == before
        assert cmd("convert", log, target, "--force")[0] == 0
        assert len(list(read_log(target))) == len(list(read_log(log)))

    def test_tensorboard_into_a_used_directory_needs_force(self, log, tmp_path):
        """A directory with files in it: refused, saying --force adds event files there; an
        empty one is only a place to write."""
        (tmp_path / "used").mkdir()
        (tmp_path / "used" / "notes.txt").write_text("x")
        code, _, err = cmd("convert", log, tmp_path / "used", "--to", "tensorboard")
        assert code == 2 and "TensorBoard adds its event files" in err
        assert [p.name for p in (tmp_path / "used").iterdir()] == ["notes.txt"]
        (tmp_path / "empty").mkdir()
        assert cmd("convert", log, tmp_path / "empty", "--to", "tensorboard")[0] == 0


class TestWhatIfWording:
    def test_a_what_if_past_the_log_says_not_within_the_recorded_epochs(self, log):
        """Patience 50 on a log of 5 epochs: "not within the 5 recorded epochs", not "would
        not have been stopped"; the first line says whether the answer is exact."""
        code, out, _ = cmd("replay", log, "--set", "EarlyStopping.patience=50")
        assert code == 0
        first, second = out.splitlines()[:2]
        assert first.startswith("What-if with EarlyStopping.patience=50: ")
        assert second == ("  The run would not have stopped within the 5 recorded epochs; the "
                          "recorded run stopped at epoch 5 (EarlyStopping).")

    def test_an_estimate_says_so_first_in_epochs(self, log):
        """A what-if of ReduceLROnPlateau: the first line says "an estimate from epoch N"
        (counted from 1), the epoch whose recorded rate the replay no longer has."""
        code, out, _ = cmd("replay", log, "--set", "ReduceLROnPlateau.patience=3")
        assert code == 0
        first = out.splitlines()[0]
        records = list(read_log(log))
        cut = next(x for x in records if isinstance(x, r.SetLearningRate))
        # The recorded cut came at the end of epoch cut.epoch; its rate is logged from the next.
        assert first.startswith("What-if with ReduceLROnPlateau.patience=3: an estimate from "
                                f"epoch {cut.epoch + 2} on (")
        data = orjson.loads(cmd("replay", log, "--set", "ReduceLROnPlateau.patience=3",
                                "--json")[1])
        assert (data["exact"], data["diverged_epoch"]) == (False, cut.epoch + 1)


class TestReplayJsonValues:
    def test_an_integer_past_64_bits_is_written_exactly(self, log):
        """A --set value read exactly (23 digits) is written exactly, not a traceback."""
        big = 99999999999999999999999
        for argv in (["--set", f"EarlyStopping.patience={big}"],
                     ["--sweep", f"EarlyStopping.patience=3,{big}"]):
            code, out, err = cmd("replay", log, *argv, "--json")
            assert (code, err) == (0, ""), err
            data = json.loads(out)  # the standard library's reader: orjson refuses it too
            values = [data["overrides"]["EarlyStopping"]["patience"]] if "rows" not in data \
                else [row["value"] for row in data["rows"]]
            assert values[-1] == big and type(values[-1]) is int


class TestDeferredStopOnTheCommandLine:
    @pytest.fixture
    def deferred_log(self, tmp_path) -> Path:
        """EarlyStopping asked at epoch 4 (counted from 1); the loop stopped at 7 of 40."""
        path = tmp_path / "deferred.jsonl"
        writer = open_writer(path)
        for record in deferring_run([1.0, 0.5, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9], min_epochs=7,
                                    epochs=40):
            writer.write(record.model_dump())
        writer.close()
        return path

    def test_audit_says_where_it_stopped_and_that_the_first_ask_was_deferred(self,
                                                                              deferred_log):
        code, out, _ = cmd("audit", deferred_log)
        assert code == 0
        assert "  epochs run: 7 of 40" in out
        assert "ended: stopped by EarlyStopping, rule patience_exhausted at epoch 7:" in out
        assert "  deferred stop: EarlyStopping asked to stop at epoch 4 " in out
        # The lines docs/cli.md shows are these very lines.
        doc = (DOCS / "cli.md").read_text().splitlines()
        for line in out.splitlines()[2:5]:
            assert line in doc
        data = orjson.loads(cmd("audit", deferred_log, "--json")[1])
        assert data["epochs_counted_from"] == 0
        assert data["stop"]["epoch"] == 6
        assert [d["epoch"] for d in data["deferred_stops"]] == [3, 4, 5]

    def test_replay_calls_the_recorded_stop_deferred(self, deferred_log):
        code, out, _ = cmd("replay", deferred_log, "--set", "EarlyStopping.patience=4")
        assert code == 0
        assert out.splitlines()[1].endswith(
            "the recorded run was asked to stop at epoch 4 (EarlyStopping), a stop the loop "
            "deferred: it stopped at epoch 7.")
        data = orjson.loads(cmd("replay", deferred_log, "--json")[1])
        assert (data["recorded_stop"], data["recorded_deferred"]) == (3, [3, 4, 5])

    def test_a_stop_that_ended_an_earlier_fit_is_not_deferred(self, tmp_path):
        """fit() called again after a stop: the second fit's epochs do not make the first
        fit's stop a deferred one."""
        from plugins import EarlyStopping

        path = tmp_path / "two-fits.jsonl"
        with Bus([EarlyStopping(monitor="val_loss", patience=1)], log=path) as bus:
            for values in ([1.0, 2.0], [1.0, 0.9, 0.8, 0.7]):
                bus.train_begin({"epochs": 4})
                for epoch, value in enumerate(values):
                    bus.epoch_begin(epoch)
                    bus.epoch_end(epoch, {"val_loss": value})
                    if bus.stop_training:
                        break
                bus.train_end()
        code, out, _ = cmd("replay", path, "--set", "EarlyStopping.patience=1")
        assert code == 0
        assert out.splitlines()[1].endswith("the recorded run stopped at epoch 2 "
                                            "(EarlyStopping).")
        code, out, _ = cmd("audit", path)
        assert "deferred" not in out and "ended: completed every planned epoch" in out
        assert "fit 1 of 2: stopped by EarlyStopping at epoch 2" in out

"""``eventbus demo``: what it may remove in its output directory, and a stdout that goes away.

The demo writes into a directory the user names; it must never remove a file it did not write.
The commands run in-process (``eventbus.cli.main``) with one or two epochs; the closed-pipe test
runs the real script, since only a process has a stdout whose reader can go away: it is read by
this one, which stops after three lines, as ``eventbus demo | head -3`` does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import orjson
import pytest

from eventbus import Bus, read_log
from eventbus import records as r
from eventbus.bus import RunWarning
from eventbus.cli import STDOUT_CLOSED, main
from eventbus.demo import MANIFEST, demo_plugins, init_model, make_data, run_demo, train
from eventbus.errors import ConfigError

SCRIPT = shutil.which("eventbus") or str(Path(sys.executable).with_name("eventbus"))


def demo(capsys, out: Path, *extra: str, epochs: int = 1) -> tuple[int, str, str]:
    code = main(["demo", "--out", str(out), "--epochs", str(epochs), "--quiet", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def files_under(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` with its content, by '/'-separated relative path."""
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for p in sorted(out.rglob("*")) if p.is_file()}


def manifest_files(out: Path) -> set[str]:
    return set(orjson.loads((out / MANIFEST).read_bytes())["files"])


def refused(code: int, out: str, err: str) -> str:
    assert (code, out) == (2, ""), err
    (line,) = err.splitlines()
    assert line.startswith("eventbus demo: error: --out ")
    return line


# Files a user might keep where a demo once wrote, at the very paths the demo writes.
USER_FILES = {
    "events.jsonl": b'{"my": "own log"}\n',
    "history.csv": b"epoch,loss\n0,0.5\n",
    "checkpoints/model-final.h5": b"weights I trained for a week",
    "tensorboard/train/notes.txt": b"my run\n",
    "events.parquet/README": b"not a segment\n",
    "paper.tex": b"\\documentclass{article}\n",
}


def write_user_files(out: Path) -> None:
    for name, data in USER_FILES.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)


class TestOutputDirectory:
    def test_a_directory_of_the_users_files_is_refused_and_left_as_it_was(self, capsys,
                                                                          tmp_path):
        """Files no demo wrote: exit 2, one line naming --out and --force, nothing touched."""
        write_user_files(tmp_path)
        line = refused(*demo(capsys, tmp_path))
        assert f"holds {len(USER_FILES)} file(s) no earlier demo wrote" in line
        assert "--force" in line
        assert files_under(tmp_path) == USER_FILES

    def test_a_second_demo_removes_exactly_what_the_first_wrote(self, capsys, tmp_path):
        """The manifest lists every file the demo wrote; the next demo removes those only."""
        out = tmp_path / "run"
        assert demo(capsys, out, epochs=2)[0] == 0
        first = files_under(out)
        assert manifest_files(out) == set(first) - {MANIFEST}
        assert any(name.startswith("checkpoints/best-02-") for name in first)
        assert demo(capsys, out, epochs=1)[0] == 0
        second = files_under(out)
        # Epoch 2's checkpoint is gone: the second run had one epoch, and removed the first's.
        assert not any(name.startswith("checkpoints/best-02-") for name in second)
        assert manifest_files(out) == set(second) - {MANIFEST}

    def test_force_writes_there_and_keeps_the_users_files(self, capsys, tmp_path):
        """``--force``: the run happens, the user's files stay, a later demo still asks."""
        write_user_files(tmp_path)
        replaced = {"events.jsonl", "history.csv"}  # at the demo's own paths: --force says so
        kept = {name: data for name, data in USER_FILES.items() if name not in replaced}
        for _ in range(2):  # the second run removes the first's files, and not the user's
            code, _, err = demo(capsys, tmp_path, "--force")
            assert code == 0, err
            after = files_under(tmp_path)
            assert {name: after.get(name) for name in kept} == kept
            assert not manifest_files(tmp_path) & set(kept)
            assert isinstance(next(read_log(tmp_path / "events.jsonl")), r.Header)
        line = refused(*demo(capsys, tmp_path))
        assert f"holds {len(kept)} file(s) no earlier demo wrote" in line

    def test_a_planted_manifest_removes_no_folder_outside_the_output(self, capsys, tmp_path):
        """The manifest is a file anyone may write: folders it names outside the output (by
        an absolute path, by '..', through a link in it) are not the demo's, even empty."""
        out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
        code, _, err = demo(capsys, out)
        assert code == 0, err
        victims = [tmp_path / "victim-absolute", tmp_path / "victim-dotdot",
                   elsewhere / "victim-via-link"]
        for victim in victims:
            victim.mkdir(parents=True)
        (out / "link").symlink_to(elsewhere)
        manifest = orjson.loads((out / MANIFEST).read_bytes())
        manifest["folders"] += [str(victims[0]), "../victim-dotdot", "link/victim-via-link"]
        (out / MANIFEST).write_bytes(orjson.dumps(manifest))
        code, _, err = demo(capsys, out, "--force")
        assert code == 0, err
        assert all(victim.is_dir() for victim in victims)

    def test_a_file_changed_since_the_demo_wrote_it_is_the_users(self, capsys, tmp_path):
        """A demo's file edited afterwards is no longer the demo's to remove."""
        assert demo(capsys, tmp_path)[0] == 0
        with open(tmp_path / "history.csv", "a") as file:
            file.write("my notes\n")
        os.utime(tmp_path / "history.csv", ns=(1, 1))  # a changed time, whatever the clock
        line = refused(*demo(capsys, tmp_path))
        assert "(history.csv)" in line
        assert (tmp_path / "history.csv").read_text().endswith("my notes\n")

    def test_a_file_is_not_a_directory(self, capsys, tmp_path):
        """``--out FILE``: says --out must be a directory; the file is left alone."""
        target = tmp_path / "afile"
        target.write_text("keep me\n")
        line = refused(*demo(capsys, target))
        assert line == (f"eventbus demo: error: --out {target} is a file; --out must be a "
                        "directory (a new or an existing one)")
        line = refused(*demo(capsys, target / "run"))
        assert f"{target} is a file, not a directory" in line
        assert target.read_text() == "keep me\n"

    def test_run_demo_names_its_own_arguments(self, tmp_path):
        """From Python the refusal names ``out`` and ``force=True``."""
        write_user_files(tmp_path)
        with pytest.raises(ConfigError, match=r"^out .* or add force=True to write") as info:
            run_demo(out=tmp_path, epochs=1, progress=False)
        assert info.value.field == "out"
        assert files_under(tmp_path) == USER_FILES


class TestClosedStdout:
    def test_a_reader_that_stops_ends_the_demo_quietly_and_resumably(self, tmp_path):
        """``eventbus demo | head -3``: status 141, nothing on stderr, no failure recorded, a log
        that reads back whole and resumes, and a manifest for the next demo."""
        out = tmp_path / "run"
        with subprocess.Popen([SCRIPT, "demo", "--out", str(out)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) as proc:
            try:
                lines = [proc.stdout.readline() for _ in range(3)]  # type: ignore[union-attr]
                proc.stdout.close()  # type: ignore[union-attr]
                err = proc.stderr.read().decode()  # type: ignore[union-attr]
                code = proc.wait(timeout=120)
            finally:
                if proc.poll() is None:
                    proc.kill()
        assert all(line.startswith(b"Epoch ") for line in lines), lines
        assert err == ""
        assert code == STDOUT_CLOSED
        log = out / "events.jsonl"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a torn line would warn
            records = list(read_log(log))
        kinds = {rec.kind for rec in records}
        assert "train_end" not in kinds  # cut short, as an interrupted run is
        assert not {"plugin_failed", "sink_failed"} & kinds
        assert manifest_files(out) >= {"events.jsonl", "history.csv"}

        model = init_model(0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "the plugins' decisions differ" would warn
            # The demo keeps the best checkpoint only: the weights come back from it, a few
            # epochs behind the epoch the run goes on at, and the bus says so.
            warnings.filterwarnings("ignore", "HDF5CheckpointWriter: resume: the newest "
                                    "checkpoint", RunWarning)
            bus = Bus(demo_plugins(out, progress=False), log=log, model=model, resume=True)
        with bus, warnings.catch_warnings():
            # The best weights EarlyStopping kept lived in the first process; restoring them at
            # the end says it has none, as for any resumed run that did not reload them.
            warnings.filterwarnings("ignore", "bus: restore_weights", RunWarning)
            assert bus.initial_epoch >= 3
            train(bus, model, make_data(0), epochs=bus.initial_epoch + 1, batch_size=32, seed=0)
        resumed = list(read_log(log))
        assert sum(isinstance(rec, r.Resumed) for rec in resumed) == 1
        assert "train_end" in {rec.kind for rec in resumed}


def test_following_the_suggested_commands_leaves_the_next_demo_possible(tmp_path, capsys,
                                                                        monkeypatch):
    """Every `eventbus ...` line under "next, try" runs, and none of them writes into the
    demo's directory, so the same demo command works again afterwards. On a narrow terminal
    too: the commands were fitted to its width with the rest, and a line copied from the
    screen was half a command (the --sweep's value on the next line)."""
    import eventbus.demo

    monkeypatch.setattr(eventbus.demo, "width_of", lambda stream: 40)
    monkeypatch.chdir(tmp_path)
    code, out, _ = demo(capsys, Path("run"), epochs=2)
    assert code == 0
    shown = [line.strip() for line in out.split("next, try:")[1].splitlines() if line.strip()]
    assert all(line.startswith(("# ", "eventbus ", "tensorboard ")) for line in shown), shown
    suggested = [line.split() for line in shown if line.startswith("eventbus ")]
    assert len(suggested) >= 4
    for argv in suggested:
        code = main(argv[1:])
        assert code == 0, (argv, capsys.readouterr().err)
    code, out, err = demo(capsys, Path("run"), epochs=2)
    assert code == 0, err

"""eventbus.verify: stored logs replayed against their decisions, checkpoints against their
files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import orjson
import pytest

from eventbus.demo import run_demo
from eventbus.verify import describe, find_logs, render, verify_log, verify_logs


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("golden") / "run"
    run_demo(out=out, epochs=25, progress=False)
    return out


def fresh_copy(demo_run: Path, tmp_path: Path) -> Path:
    """The demo's JSON Lines log, with its checkpoints, copied where a test may change them."""
    log = tmp_path / "events.jsonl"
    text = (demo_run / "events.jsonl").read_bytes()
    (tmp_path / "checkpoints").mkdir()
    for ckpt in (demo_run / "checkpoints").iterdir():
        (tmp_path / "checkpoints" / ckpt.name).write_bytes(ckpt.read_bytes())
    log.write_bytes(text.replace(str(demo_run).encode(), str(tmp_path).encode()))
    return log


def test_a_fresh_run_verifies_decisions_and_every_checkpoint(demo_run):
    verdicts = verify_logs([demo_run])
    assert [Path(v.log).name for v in verdicts] == ["events.jsonl", "events.parquet"]
    for verdict in verdicts:
        assert verdict.ok, verdict.as_dict()
        assert verdict.decisions > 5
        assert verdict.recorded_stop == verdict.replayed_stop is not None
        assert verdict.count("verified") == len(verdict.checkpoints) > 0
        assert verdict.count("changed") == verdict.count("missing") == 0


def test_a_changed_checkpoint_fails_and_a_missing_one_is_reported(demo_run, tmp_path):
    log = fresh_copy(demo_run, tmp_path)
    first, second, *_ = sorted((tmp_path / "checkpoints").iterdir())
    first.write_bytes(first.read_bytes()[:-1] + b"\0")
    second.unlink()
    verdict = verify_log(log)
    assert not verdict.ok
    assert {c.path: c.status for c in verdict.checkpoints}[str(first)] == "changed"
    assert {c.path: c.status for c in verdict.checkpoints}[str(second)] == "missing"
    assert verdict.mismatch is None


@pytest.mark.parametrize("size_in_the_log", ["as written", "the file's new size"])
def test_a_checkpoint_of_another_size_is_changed_without_being_read(demo_run, tmp_path,
                                                                    monkeypatch,
                                                                    size_in_the_log):
    """A checkpoint grown to a terabyte (a sparse file: kilobytes on disk) kept verify hashing
    for hours: its size is not the one recorded, so it is changed, and none of it is read
    past the signature. A log that records the terabyte too (whoever planted the file can
    write the log) meets the same answer: a file that is mostly holes is changed, unread."""
    import hashlib

    import orjson

    import eventbus.verify

    log = fresh_copy(demo_run, tmp_path)
    target = sorted((tmp_path / "checkpoints").iterdir())[0]
    os.truncate(target, 1 << 40)
    if size_in_the_log != "as written":
        lines = []
        for line in log.read_bytes().splitlines(keepends=True):
            record = orjson.loads(line)
            if record["kind"] == "checkpoint_saved" and record["path"].endswith(target.name):
                record["size"] = 1 << 40
                line = orjson.dumps(record) + b"\n"
            lines.append(line)
        log.write_bytes(b"".join(lines))
    hashed = []
    real_sha256 = hashlib.sha256

    class Counting:
        def __init__(self):
            self.real = real_sha256()

        def update(self, data):
            hashed.append(len(data))
            self.real.update(data)

        def hexdigest(self):
            return self.real.hexdigest()

    monkeypatch.setattr(eventbus.verify.hashlib, "sha256", Counting)
    checks = {c.path: c.status for c in verify_log(log).checkpoints}
    assert checks[str(target)] == "changed"
    assert sum(hashed) < 1 << 30  # the other checkpoints, not the terabyte


def test_a_checkpoint_replaced_by_a_link_is_not_followed(demo_run, tmp_path):
    log = fresh_copy(demo_run, tmp_path)
    target = sorted((tmp_path / "checkpoints").iterdir())[0]
    real = tmp_path / "elsewhere.h5"
    real.write_bytes(target.read_bytes())  # the very bytes recorded, but behind a link
    target.unlink()
    os.symlink(real, target)
    checks = {c.path: c.status for c in verify_log(log).checkpoints}
    assert checks[str(target)] == "changed"


def test_a_plugin_that_now_decides_otherwise_is_a_mismatch_naming_the_epochs(demo_run,
                                                                            tmp_path):
    log = fresh_copy(demo_run, tmp_path)
    lines = log.read_bytes().splitlines()
    header = orjson.loads(lines[0])
    for spec in header["plugins"]:
        if spec["name"] == "EarlyStopping":
            spec["params"]["patience"] = 1  # as if the plugin's behaviour had changed
    log.write_bytes(b"\n".join([orjson.dumps(header), *lines[1:]]) + b"\n")
    verdict = verify_log(log)
    assert not verdict.ok
    assert "differs" in verdict.mismatch and "epoch" in verdict.mismatch
    assert verdict.replayed_stop < verdict.recorded_stop
    assert (f"stop moves from epoch {verdict.recorded_stop + 1} to epoch "
            f"{verdict.replayed_stop + 1}") in describe(verdict)
    table = render([verdict, verify_log(demo_run / "events.jsonl")])
    assert table.splitlines()[1].endswith("FAIL") and table.splitlines()[2].endswith("ok")
    assert table.splitlines()[-1] == "1 of 2 log(s) verified; 1 failed"


def test_what_is_not_a_log_is_an_error_row_not_a_crash(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    verdict = verify_log(bad)
    assert not verdict.ok and verdict.error


def test_logs_are_found_below_directories_without_following_links(demo_run, tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.jsonl").write_bytes((demo_run / "events.jsonl").read_bytes())
    os.symlink(demo_run, tmp_path / "a" / "linked")
    (tmp_path / "a" / "notes.txt").write_text("not a log")
    assert find_logs([tmp_path]) == [tmp_path / "a" / "b" / "x.jsonl"]
    assert find_logs([demo_run / "events.parquet"]) == [demo_run / "events.parquet"]


def test_the_command_exits_1_on_a_failure_and_speaks_json(demo_run, tmp_path, capsys):
    from eventbus.cli import main

    assert main(["verify", str(demo_run)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 of 2 log(s) verified"
    log = fresh_copy(demo_run, tmp_path)
    target = sorted((tmp_path / "checkpoints").iterdir())[-1]
    target.write_bytes(b"not the checkpoint")
    assert main(["verify", str(log), "--json"]) == 1
    (row,) = json.loads(capsys.readouterr().out)
    assert row["ok"] is False and row["checkpoints"]["changed"] == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["verify", str(empty)]) == 2
    assert "no logs" in capsys.readouterr().err



def test_a_checkpoint_path_out_of_the_root_is_listed_unread(demo_run, tmp_path, monkeypatch):
    """A log someone else wrote names files this user can read, with their sha256 guessed:
    an absolute path elsewhere, a ``..``, a folder link out of the run. None of them is opened
    (verify would otherwise say whether the guess was right); each is ``outside``, which fails
    nothing, while a checkpoint of the run's own beside them is still verified."""
    import hashlib

    run, private = tmp_path / "run", tmp_path / "private"
    run.mkdir()
    private.mkdir()
    secret = private / "salaries.xlsx"
    secret.write_bytes(b"PK\x03\x04" + b"guessed" * 100)  # a zip, as a checkpoint starts
    own = run / "own.h5"
    own.write_bytes(b"\x89HDF\r\n\x1a\n" + b"weights" * 100)
    os.symlink(private, run / "models")
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    header = orjson.loads((demo_run / "events.jsonl").read_bytes().splitlines()[0])
    header["plugins"] = []
    saves = [(str(secret), digest, secret), ("../private/salaries.xlsx", digest, secret),
             ("models/salaries.xlsx", digest, secret), ("/etc/hostname", digest, secret),
             ("own.h5", hashlib.sha256(own.read_bytes()).hexdigest(), own)]
    lines = [header] + [
        {"v": 1, "seq": seq, "kind": "checkpoint_saved", "run_id": header["run_id"],
         "time": 1.0, "source": "HDF5CheckpointWriter", "cause_seq": 0, "epoch": 0,
         "path": path, "size": file.stat().st_size, "sha256": sha}
        for seq, (path, sha, file) in enumerate(saves, start=1)]
    log = run / "events.jsonl"
    log.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    opened: list[str] = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: opened.append(os.fsdecode(p))
                        or real_open(p, *a, **k))
    verdict = verify_log(log, root=run)
    assert verdict.error is None, verdict.error
    assert {c.path: c.status for c in verdict.checkpoints} == {
        str(secret): "outside", "../private/salaries.xlsx": "outside",
        "models/salaries.xlsx": "outside", "/etc/hostname": "outside", "own.h5": "verified"}
    assert verdict.ok and not any("salaries" in p or "hostname" in p for p in opened)
    table = render([verdict])
    assert "outside" in table.splitlines()[0] and table.splitlines()[1].split()[-2:] == ["4", "ok"]


def test_a_folder_nested_deeper_than_pythons_recursion_limit_is_walked(demo_run, tmp_path):
    """os.walk recurses once per level on Python 3.11: one folder nested 1,500 deep in a tree
    of golden logs stopped the verification of all of them with a RecursionError."""
    import sys

    limit = sys.getrecursionlimit()
    # The default limit, whatever another test set: 1,200 levels of "d/" pass it and keep the
    # path under PATH_MAX.
    sys.setrecursionlimit(1000)
    created: list[Path] = []
    try:
        folder = tmp_path / "d"
        for _ in range(1_200):
            folder.mkdir()  # one at a time: os.makedirs recurses too
            created.append(folder)
            folder = folder / "d"
        deep = created[-1]
        (deep / "events.jsonl").write_bytes((demo_run / "events.jsonl").read_bytes())
        (tmp_path / "top.jsonl").write_bytes((demo_run / "events.jsonl").read_bytes())
        found = find_logs([tmp_path])
        assert found[-1] == tmp_path / "top.jsonl" and found[0] == deep / "events.jsonl"
    finally:  # removed from the bottom up: shutil.rmtree (pytest's cleanup) recurses as well
        sys.setrecursionlimit(limit)
        if created:
            (created[-1] / "events.jsonl").unlink(missing_ok=True)
        for made in reversed(created):
            made.rmdir()


MOVED_BACK = """
import os, signal, sys
import numpy as np
from eventbus import Bus, NumpyModel
from plugins import ModelCheckpoint
out, attempt, kill_after, at_most = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
kw = {} if at_most == "none" else {"resume_at_most": int(at_most)}
with Bus([ModelCheckpoint(os.path.join(out, "best.h5"), monitor="loss", save_best_only=True)],
         model=model, log=os.path.join(out, "events.jsonl"), resume=True, **kw) as bus:
    bus.train_begin({"epochs": 6})
    for epoch in range(bus.initial_epoch, 6):
        bus.epoch_begin(epoch)
        model.weights["w"][:] = epoch + 100 * attempt
        bus.epoch_end(epoch, {"loss": 10.0 - epoch if attempt == 0 else 50.0 + epoch})
        if epoch == kill_after:
            bus.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    bus.train_end()
"""


def test_a_save_a_resume_abandoned_vouches_for_no_file(tmp_path):
    """A run killed after epoch 4, each epoch a new best, resumed with ``resume_at_most=2``:
    the reruns do worse, so best.h5 still holds epoch 4's abandoned save, while the run as it
    went on records epoch 2's. verify compares files with the effective records: the file is
    ``changed``. Before, it was ``verified`` against the abandoned save, and the log ok."""
    import subprocess
    import sys

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", MOVED_BACK, str(tmp_path), *map(str, args)],
                              capture_output=True, text=True, timeout=120)

    assert run(0, 4, "none").returncode == -9
    resumed = run(1, -1, 2)
    assert resumed.returncode == 0, resumed.stderr
    verdict = verify_log(tmp_path / "events.jsonl", root=tmp_path)
    [check] = verdict.checkpoints
    assert (check.epoch, check.status) == (2, "changed") and not verdict.ok

"""A log written by an attacker: replaying, auditing or converting it writes nothing but the
named output, and sends nothing anywhere.

Whether a plugin acts (writes files, sends requests) comes from its class, never from the log: a
header that marks BackupAndRestore, CSVLogger, TensorBoard, RemoteMonitor or the checkpoint
writer as pure, with paths and URLs of its choosing, only makes replay leave them out.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import orjson
import pytest

from eventbus import Bus, read_log, replay
from eventbus.audit import audit
from eventbus.cli import main
from eventbus.convert import convert
from plugins import BackupAndRestore, EarlyStopping, ReduceLROnPlateau


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``root``: size, modification time and content hash."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            stat = path.stat()
            out[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns,
                                                hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def hostile_specs(world: Path, url: str) -> list[dict]:
    """Plugins that act, each claiming to be pure, aimed at the attacker's targets."""
    def spec(name: str, **params: object) -> dict:
        return {"name": name, "params": params, "recordable": True, "side_effects": False,
                "cls": "", "label": ""}

    return [
        spec("BackupAndRestore", backup_dir=str(world / "victim"), save_freq="epoch",
             double_checkpoint=True, delete_checkpoint=True),
        spec("CSVLogger", filename=str(world / "planted.csv"), separator=",", append=False),
        spec("TensorBoard", log_dir=str(world / "planted-tb")),
        spec("RemoteMonitor", root=url, path="/steal"),
        spec("HDF5CheckpointWriter", verbose=0),
        spec("ModelCheckpoint", filepath=str(world / "planted-{epoch}.h5")),
    ]


@pytest.fixture
def hostile(tmp_path: Path, server) -> tuple[Path, Path, object]:
    """A world holding another run's backup and a log whose header points into it."""
    world = tmp_path / "world"
    listener = server()
    victim = world / "victim"
    with Bus([EarlyStopping(patience=1), BackupAndRestore(victim, delete_checkpoint=False)],
             learning_rate=0.1) as other:  # another run's backup, which a resume would change
        other.train_begin({"epochs": 2})
        other.epoch_begin(0)
        other.epoch_end(0, {"val_loss": 1.0})
    log = world / "evil.jsonl"
    with Bus([EarlyStopping(patience=1), ReduceLROnPlateau(patience=1)], log=log,
             learning_rate=0.1) as bus:
        bus.train_begin({"epochs": 4})
        for epoch, value in enumerate([1.0, 0.9, 0.95, 0.97]):
            bus.epoch_begin(epoch)
            bus.batch_end(0, {"loss": value})
            bus.epoch_end(epoch, {"val_loss": value})
            if bus.stop_training:
                break
        bus.train_end()
    lines = log.read_bytes().splitlines(keepends=True)
    header = orjson.loads(lines[0])
    header["plugins"] = [*header["plugins"], *hostile_specs(world, listener.url)]
    log.write_bytes(orjson.dumps(header) + b"\n" + b"".join(lines[1:]))
    return world, log, listener


def test_replay_audit_and_convert_write_only_the_named_output(hostile, capsys) -> None:
    """Every way of reading the log leaves the world as it was, but for what was asked for."""
    world, log, listener = hostile
    before = snapshot(world)
    result = replay(log, verify=True)  # ModelCheckpoint, planted, decides what the run did not
    assert {type(p).__name__ for p in result.plugins} == {"EarlyStopping", "ReduceLROnPlateau",
                                                          "ModelCheckpoint"}
    audit(log)
    # --verify exits 1: the planted ModelCheckpoint decides what the run did not.
    for argv, status in ((["replay", str(log), "--verify"], 1), (["audit", str(log)], 0),
                         (["replay", str(log), "--set", "EarlyStopping.patience=3"], 0)):
        assert main(argv) == status
    capsys.readouterr()
    outputs = {"out.jsonl": "jsonl", "out.parquet": "parquet", "out.csv": "csv",
               "out-tb": "tensorboard"}
    for name, to in outputs.items():
        convert(log, world / name, to=to)
    after = snapshot(world)
    new = {path for path in after if path not in before}
    assert all(path.split(os.sep)[0] in outputs for path in new), sorted(new)
    assert {path: after[path] for path in before} == before  # nothing changed, nothing gone
    assert listener.requests == []  # nothing was sent


def test_a_replay_of_a_header_that_says_pure_runs_no_sink(hostile) -> None:
    """The class says whether a plugin acts: an override of one the log calls pure is
    refused as an override of a plugin replay does not run."""
    _, log, _ = hostile
    from eventbus.errors import ReplayError

    with pytest.raises(ReplayError, match="replay does not run BackupAndRestore"):
        replay(log, overrides={"BackupAndRestore": {"backup_dir": "elsewhere"}})


def test_the_log_itself_is_read_not_written(hostile) -> None:
    """Reading the hostile log back is all any of this does to it."""
    _, log, _ = hostile
    data = log.read_bytes()
    replay(log)
    audit(log)
    assert log.read_bytes() == data
    assert [r.kind for r in read_log(log)][0] == "header"


def test_a_header_listing_many_plugins_is_tabled_once(tmp_path, monkeypatch) -> None:
    """Replay builds the plugins a header lists with the call tables made once, not once per
    plugin (per plugin that work grows with the plugins before it: a 0.8 MB header of 2,000
    took 14 s, 20,000 past five minutes). Every plugin is still attached and decides."""
    from eventbus.dispatch import Dispatcher
    from plugins import EarlyStopping

    log = tmp_path / "run.jsonl"
    with Bus([EarlyStopping(monitor="loss", patience=0)], log=log) as bus:
        bus.train_begin()
        for epoch, loss in enumerate([1.0, 2.0]):
            bus.epoch_begin(epoch)
            bus.epoch_end(epoch, {"loss": loss})
        bus.train_end()
    lines = log.read_bytes().splitlines()
    header = orjson.loads(lines[0])
    header["plugins"] = [dict(header["plugins"][0], label=f"E{i}") for i in range(300)]
    log.write_bytes(b"\n".join([orjson.dumps(header), *lines[1:]]) + b"\n")
    rebuilds = []
    real = Dispatcher._rebuild
    monkeypatch.setattr(Dispatcher, "_rebuild", lambda self: (rebuilds.append(1), real(self)))
    result = replay(log)
    assert len(rebuilds) <= 3  # made, then once for all 300 (was 301)
    assert len([d for d in result.decisions if d.kind == "stop_training"]) == 300

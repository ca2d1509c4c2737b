"""Resuming from a log built to make the checkpoint writer touch files that are not its own.

A log is untrusted input: each test here writes a real run's log, then adds records naming
files outside the run, links, FIFOs and devices, with their real sha256, and resumes. The
writer reads back and removes only files it can tell it wrote (``HDF5CheckpointWriter._place``);
everything else stays as it was, no link is followed, nothing blocks, and a warning names the
path and the reason."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, CheckpointError, NumpyModel, Plugin, RunWarning, hookimpl, read_log
from eventbus.jsonl import JsonlWriter
from eventbus.records import DeleteCheckpoint, SaveCheckpoint
from plugins import EarlyStopping, ModelCheckpoint
from sinks.hdf5 import HDF5CheckpointWriter, file_sha256, load_checkpoint, write_checkpoint

from hypothesis_profiles import FILES, examples

#: The two shapes of template: fields in the file name only, and a field naming a folder.
FLAT = "ckpt/e{epoch:02d}.h5"
NESTED = "ckpt/{epoch:02d}/m.h5"
EPOCHS = 3
#: The weights of the file a hostile log points at; a restore of it would put these back.
FOREIGN = 42.0
#: How long a resume may take before the test calls it hung (it takes well under a second).
PATIENCE = 60


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def in_template(template: str, name: str) -> str:
    """The path ``template`` gives for epoch ``name`` (a string: "77", "..")."""
    return template.replace("{epoch:02d}", name)


def crashed_run(run: Path, template: str) -> Path:
    """A run of EPOCHS epochs with ModelCheckpoint saving every epoch (weights w = epoch + 1),
    killed after the last epoch_end: its log, never closed."""
    log = run / "events.jsonl"
    writer = JsonlWriter(str(log))
    model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
    bus = Bus([EarlyStopping(patience=5), ModelCheckpoint(str(run / template))], model=model,
              log=writer)
    bus.train_begin({"epochs": EPOCHS + 2})
    for epoch in range(EPOCHS):
        model.set_weights({"w": np.full(2, epoch + 1.0)})
        bus.epoch_begin(epoch)
        bus.epoch_end(epoch, {"loss": 1.0, "val_loss": 1.0})
    bus.flush()
    writer.close()  # the crash: the bus is never closed
    return log


def insert(log: Path, make: Callable[[int], list[dict[str, Any]]]) -> None:
    """Put the records ``make(first_seq)`` gives right after the log's last checkpoint_saved
    (inside the last finished epoch), the seqs after them moved on to make room."""
    records = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    at = max(i for i, r in enumerate(records) if r["kind"] == "checkpoint_saved")
    base = records[at]["seq"]
    added = make(base + 1)
    shift = len(added)
    for record in records[at + 1:]:
        for key in ("seq", "cause_seq", "from_seq"):
            if isinstance(record.get(key), int) and record[key] > base:
                record[key] += shift
    envelope = {"v": 1, "run_id": records[0]["run_id"], "time": records[at]["time"]}
    added = [{**envelope, **record} for record in added]
    log.write_bytes(b"".join(orjson.dumps(r) + b"\n"
                             for r in [*records[:at + 1], *added, *records[at + 1:]]))


def claim(path: str, digest: str, size: int, *, decision: str | None = "same",
          source: str = "ModelCheckpoint", remove: bool = True
          ) -> Callable[[int], list[dict[str, Any]]]:
    """Records saying ``path`` was saved (a decision by ``source`` naming it, or naming
    another path, or none) and then decided to be removed, the crash before the removal."""
    def make(seq: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cause = None
        if decision is not None:
            out.append({"seq": seq, "kind": "save_checkpoint", "source": source,
                        "reason": "save at the end of epoch 3", "code": "epoch",
                        "evidence": {}, "cause_seq": None, "epoch": EPOCHS - 1,
                        "path": path if decision == "same" else decision,
                        "weights_only": False})
            cause = seq
        out.append({"seq": seq + len(out), "kind": "checkpoint_saved",
                    "source": "HDF5CheckpointWriter", "cause_seq": cause, "epoch": EPOCHS - 1,
                    "path": path, "size": size, "sha256": digest})
        if remove:
            out.append({"seq": seq + len(out), "kind": "delete_checkpoint", "source": source,
                        "reason": "no longer among the 1 best", "code": "not_top_k",
                        "evidence": {}, "cause_seq": None, "epoch": EPOCHS - 1, "path": path})
        return out
    return make


def tree(root: Path, *, but: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under ``root`` (links not followed) but ``but``: mode, size, mtime."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if path != str(but):
                info = os.lstat(path)
                out[path] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return out


@contextmanager
def run_warnings() -> Iterator[list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RunWarning)
        messages: list[str] = []
        yield messages
    messages.extend(str(w.message) for w in caught if w.category is RunWarning)


def resume(run: Path, log: Path, template: str, **params: Any) -> NumpyModel:
    """The run resumed with the same ModelCheckpoint, in a thread that must end within
    PATIENCE seconds (a hang fails the test instead of hanging it); the weights restored."""
    model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
    failed: list[BaseException] = []

    def go() -> None:
        try:
            with Bus([EarlyStopping(patience=5), ModelCheckpoint(str(run / template), **params)],
                     model=model, log=str(log), resume=True) as bus:
                bus.epoch_begin(bus.initial_epoch)  # the restore happens here
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            failed.append(exc)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    thread.join(PATIENCE)
    assert not thread.is_alive(), f"the resume hung for {PATIENCE} s"
    if failed:
        raise failed[0]
    return model


def warned(log: Path, path: str) -> list[str]:
    return [r.message for r in read_log(log) if r.kind == "warning" and path in r.message]


def foreign_checkpoint(path: Path) -> Path:
    """A real checkpoint of another run: loading it would restore FOREIGN."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_checkpoint(path, {"w": np.full(2, FOREIGN)}, metadata={"epoch": 9})
    return path


# --- files a hostile log names: never removed, never read, never followed -----------------------

#: How a hostile path is laid out, relative to the run folder ``run`` and a folder ``away``
#: beside it: (path claimed, the file its bytes come from, what to build first).
HOSTILE = ["outside", "log_folder", "dotdot", "file_link", "folder_link", "no_decision",
           "other_path_decided", "stranger", "other_plugin_removes"]


def lay_out(kind: str, run: Path, away: Path, template: str) -> tuple[str, Path, str | None,
                                                                      str, bool]:
    """Build what ``kind`` needs: returns (claimed path, victim file, decision, source, and
    whether a restore of it is ruled out too)."""
    victim = foreign_checkpoint(away / "m.h5")
    decision: str | None = "same"
    source = "ModelCheckpoint"
    if kind == "outside":
        return str(victim), victim, decision, source, True
    if kind == "log_folder":
        copy = run / "m.h5"
        shutil.copyfile(victim, copy)
        return str(copy), copy, decision, source, True
    if kind == "dotdot":  # NESTED makes it, its field as "..": the file beside ckpt/
        copy = run / "m.h5"
        shutil.copyfile(victim, copy)
        return f"{run}/ckpt/../m.h5", copy, decision, source, True
    target = run / in_template(template, "77")
    if kind == "folder_link":  # a folder where the template has a file name is a link out
        link_at = target.parent if template == NESTED else run / "ckpt" / "sub"
        link_at.symlink_to(away, target_is_directory=True)
        path = target if template == NESTED else link_at / "m.h5"
        return str(path), victim, decision, source, True
    target.parent.mkdir(parents=True, exist_ok=True)
    if kind == "file_link":
        target.symlink_to(victim)
        return str(target), victim, decision, source, True
    shutil.copyfile(victim, target)
    if kind == "no_decision":
        decision = None
    elif kind == "other_path_decided":
        decision = str(run / in_template(template, "01"))
    elif kind == "stranger":
        source = "Stranger"
    elif kind == "other_plugin_removes":
        # A plugin on the bus without a template: its files are not removed after a resume
        # (one in the log's folder may be read back, so the restore is not asserted).
        source = "EarlyStopping"
        return str(target), target, decision, source, False
    return str(target), target, decision, source, True


@examples(FILES)
@given(kind=st.sampled_from(HOSTILE), template=st.sampled_from([FLAT, NESTED]))
def test_a_file_the_writer_cannot_tell_it_wrote_is_never_removed_read_or_followed(kind,
                                                                                  template):
    """Whatever a log claims of a path outside the writer's template, a link, a '..', or a
    save no decision of a plugin on the bus made: the resume removes nothing, writes nothing,
    restores the run's own newest checkpoint, and a warning names the path."""
    with tempfile.TemporaryDirectory() as tmp:
        run, away = Path(tmp) / "run", Path(tmp) / "away"
        run.mkdir()
        log = crashed_run(run, template)
        path, victim, decision, source, unread = lay_out(kind, run, away, template)
        before_bytes = victim.read_bytes()
        insert(log, claim(path, sha256(victim), victim.stat().st_size, decision=decision,
                          source=source))
        before = tree(Path(tmp), but=log)
        with run_warnings():
            model = resume(run, log, template)
        assert tree(Path(tmp), but=log) == before  # nothing written, removed or replaced
        assert victim.read_bytes() == before_bytes
        records = list(read_log(log))
        assert not [r for r in records if r.kind == "checkpoint_deleted" and r.path == path]
        assert any("is not carried out" in m for m in warned(log, path)), warned(log, path)
        if unread:
            assert model.weights["w"].tolist() == [float(EPOCHS)] * 2  # the run's own e03
            assert any("an older one is tried" in m for m in warned(log, path))
            restored = [r.tag for r in records if r.kind == "weights_restored"]
            assert path not in " ".join(restored)


@pytest.mark.parametrize("template", [FLAT, NESTED])
def test_a_file_the_template_names_with_its_decision_is_removed(tmp_path, template):
    """The rule's other side: the crash cut short a removal the plugin decided of a file the
    writer saved (a copy of the run's own checkpoint at a name the template makes): the
    resume carries it out, so top-k removal across a crash still works."""
    run = tmp_path / "run"
    run.mkdir()
    log = crashed_run(run, template)
    target = run / in_template(template, "77")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / in_template(template, "01"), target)
    insert(log, claim(str(target), sha256(target), target.stat().st_size))
    with run_warnings() as messages:
        resume(run, log, template)
    assert not target.exists(), messages
    assert [r.path for r in read_log(log) if r.kind == "checkpoint_deleted"] == [str(target)]


def test_a_link_in_the_fixed_folder_of_the_template_is_the_users_own(tmp_path):
    """A link in the part of the template before its first field (the user's folder, e.g. a
    home on another disk) is followed: the run resumes from and removes its own files."""
    real = tmp_path / "disk"
    real.mkdir()
    (tmp_path / "home").symlink_to(real, target_is_directory=True)
    run = tmp_path / "home"
    log = crashed_run(run, FLAT)
    target = run / "ckpt" / "e77.h5"
    shutil.copyfile(run / "ckpt" / "e01.h5", target)
    insert(log, claim(str(target), sha256(target), target.stat().st_size))
    with run_warnings() as messages:
        model = resume(run, log, FLAT)
    assert not target.exists(), messages
    assert model.weights["w"].tolist() == [float(EPOCHS)] * 2


def test_a_link_to_another_runs_checkpoint_is_not_restored(tmp_path):
    """A name the template makes, with its decision, size and sha256 all right, that is a
    link to another run's checkpoint: the link is not followed; the run's own newest
    checkpoint comes back, and the link and its target stay."""
    run = tmp_path / "run"
    run.mkdir()
    log = crashed_run(run, FLAT)
    other = foreign_checkpoint(tmp_path / "other" / "best.h5")
    link = run / "ckpt" / "e77.h5"
    link.symlink_to(other)
    insert(log, claim(str(link), sha256(other), other.stat().st_size, remove=False))
    with run_warnings():
        model = resume(run, log, FLAT)
    assert model.weights["w"].tolist() == [float(EPOCHS)] * 2
    assert link.is_symlink() and load_checkpoint(other).weights["w"][0] == FOREIGN
    [message] = warned(log, str(link))
    assert "is a link now, not the file written; links are not followed" in message


# --- no hang: FIFOs, devices, folders where a checkpoint was ------------------------------------


def special(kind: str, at: Path) -> str:
    """Put ``kind`` at ``at`` (a name the template makes); returns the path claimed."""
    if kind == "fifo":
        os.mkfifo(at)
    elif kind == "directory":
        at.mkdir()
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(at))
        server.close()
    elif kind == "dev_zero_link":
        at.symlink_to("/dev/zero")
    else:
        return "/dev/zero"
    return str(at)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
@pytest.mark.parametrize("kind, reason", [
    ("fifo", "is a FIFO, not the regular file written"),
    ("directory", "is a directory, not the regular file written"),
    ("socket", "is a socket, not the regular file written"),
    ("dev_zero_link", "is a link now, not the file written; links are not followed"),
    ("dev_zero", "is not a name ModelCheckpoint's filepath"),
])
def test_a_resume_never_blocks_on_what_is_not_a_regular_file(tmp_path, kind, reason):
    """A log claims a FIFO (an open would wait for a writer for ever), /dev/zero (a read
    would never end), a folder or a socket as its newest checkpoint, and decides to remove
    it: the resume ends at once, restores the run's own newest checkpoint, leaves the thing
    there, and says what it is."""
    run = tmp_path / "run"
    run.mkdir()
    log = crashed_run(run, FLAT)
    path = special(kind, run / "ckpt" / "e77.h5")
    insert(log, claim(path, "0" * 64, 1))
    with run_warnings():
        model = resume(run, log, FLAT)
    assert model.weights["w"].tolist() == [float(EPOCHS)] * 2
    assert os.path.lexists(path)
    messages = warned(log, path)
    assert any(reason in m and "an older one is tried" in m for m in messages), messages


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_put_where_the_writer_s_own_file_was_is_not_waited_on(tmp_path):
    """Live, not resumed: the writer's own file replaced by a FIFO before it is removed. The
    bus runs in a thread that must end within PATIENCE seconds."""
    written = tmp_path / "ckpt" / "01.h5"
    failed: list[BaseException] = []

    def run() -> None:
        try:
            with Bus([ModelCheckpoint(str(tmp_path / "ckpt" / "{epoch:02d}.h5"),
                                      save_top_k=2)],
                     model=NumpyModel({"w": np.zeros(2)}),
                     log=str(tmp_path / "run.jsonl")) as bus:
                bus.train_begin({"epochs": 1})
                bus.epoch_begin(0)
                bus.epoch_end(0, {"val_loss": 0.5})
                written.unlink()
                os.mkfifo(written)
                bus.decide(DeleteCheckpoint(path=str(written), reason="asked by the test"))
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            failed.append(exc)

    with run_warnings():
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(PATIENCE)
    assert not thread.is_alive(), "the removal hung on a FIFO"
    assert not failed, failed
    assert written.exists()
    assert warned(tmp_path / "run.jsonl", "01.h5 is a FIFO, not the regular file written")


def test_file_sha256_refuses_a_fifo_instead_of_waiting(tmp_path):
    fifo = tmp_path / "c.h5"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="is a FIFO"):
        file_sha256(fifo)


# --- the rule's decisions, without files ---------------------------------------------------------

names = st.sampled_from(["ckpt", "e01.h5", "e..h5", "..", ".", "", "x", "m.h5", "01", "e7-v2.h5"])


class FakeRun:
    """The two things the rule asks of a run: its plugins' labels, and its logs."""

    def __init__(self, plugin: object, label: str, logs: tuple[str, ...] = ()):
        self.plugins = [plugin]
        self._label = label
        self.logs = logs

    def label(self, plugin: object) -> str:
        return self._label


@examples()
@given(parts=st.lists(names, min_size=1, max_size=5), template=st.sampled_from(
    ["/r/ckpt/e{epoch:02d}.h5", "/r/ckpt/{epoch}/m.h5", "/r/c-{epoch}-{val_loss:.2f}.h5",
     "rel/e{epoch}.h5"]), absolute=st.booleans())
def test_a_path_the_rule_accepts_is_one_the_template_makes_inside_its_folder(parts, template,
                                                                             absolute):
    """Any path: accepted only when the template makes it, and then it lies, by its names
    alone ('..' refused, not resolved), under the template's fixed folder."""
    from sinks.hdf5 import _Saved, _template_root

    path = ("/r/" if absolute else "rel/") + "/".join(parts)
    plugin = ModelCheckpoint(template)
    writer = HDF5CheckpointWriter()
    entry = _Saved(sha256="0" * 64, size=1, seq=5, epoch=0, decided_by="ModelCheckpoint")
    place = writer._place(path, entry, FakeRun(plugin, "ModelCheckpoint"))  # type: ignore[arg-type]
    if isinstance(place, str):
        return
    root, rest = place
    assert _template_root(template, path) == root
    assert all(name not in ("", ".", "..") for name in rest)
    fixed = os.path.abspath(root or ".")
    assert os.path.normpath(os.path.join(fixed, *rest)).startswith(fixed + os.sep)
    # Removal by another plugin, or a save no decision named, is never accepted.
    assert isinstance(writer._place(path, entry, FakeRun(plugin, "ModelCheckpoint"),  # type: ignore[arg-type]
                                    removing="EarlyStopping"), str)
    orphan = _Saved(sha256="0" * 64, size=1, seq=5, epoch=0, decided_by=None)
    assert isinstance(writer._place(path, orphan, FakeRun(plugin, "ModelCheckpoint")), str)  # type: ignore[arg-type]


# --- a decider without a template, and a loader that reads by name -------------------------------


class SaveTo(Plugin):
    """Saves epoch e to ``paths[e]``: a decider with no filepath template."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    @hookimpl
    def on_epoch_end(self, event):
        return SaveCheckpoint(reason="save", path=self.paths[event.epoch])


#: What LoadsByName.load was given: (path, the bytes there).
LOADED: list[tuple[str, bytes]] = []


class LoadsByName(NumpyModel):
    """An adapter that writes and reads a file format of its own, by path (as KerasModel
    does): raw float64 weights."""

    def save(self, path: str, weights_only: bool) -> None:
        Path(path).write_bytes(self.weights["w"].astype(np.float64).tobytes())

    def load(self, path: str) -> None:
        data = Path(path).read_bytes()
        LOADED.append((path, data))
        self.set_weights({"w": np.frombuffer(data, dtype=np.float64).copy()})


def test_a_decider_without_a_template_is_read_back_from_the_logs_folder_only(tmp_path):
    """Without a template, a checkpoint is read back only from the folder of the run's log;
    one outside it is not read, and none is removed after a resume. An adapter that loads
    by name gets a private copy of the bytes checked, never the recorded path."""
    run = tmp_path / "run"
    run.mkdir()
    log = run / "events.jsonl"
    inside, outside = run / "c0.h5", tmp_path / "elsewhere" / "c1.h5"
    outside.parent.mkdir()
    paths = [str(inside), str(outside)]
    model = LoadsByName({"w": np.zeros(2)})
    writer = JsonlWriter(str(log))
    bus = Bus([SaveTo(paths + paths), HDF5CheckpointWriter()], model=model, log=writer)
    bus.train_begin({"epochs": 4})
    for epoch in range(2):
        model.set_weights({"w": np.full(2, epoch + 1.0)})
        bus.epoch_begin(epoch)
        bus.epoch_end(epoch, {"loss": 1.0})
    bus.flush()
    writer.close()
    insert(log, lambda seq: [{"seq": seq, "kind": "delete_checkpoint", "source": "SaveTo",
                              "reason": "asked", "evidence": {}, "path": str(inside)}])
    fresh = LoadsByName({"w": np.zeros(2)})
    LOADED.clear()
    with run_warnings():
        with Bus([SaveTo(paths + paths), HDF5CheckpointWriter()], model=fresh, log=str(log),
                 resume=True) as again:
            again.epoch_begin(again.initial_epoch)
    assert fresh.weights["w"].tolist() == [1.0, 1.0]  # c0, the newest one inside
    [(given_path, given_bytes)] = LOADED
    assert given_path != str(inside) and os.path.basename(given_path) == "c0.h5"
    assert given_bytes == inside.read_bytes() and not os.path.exists(given_path)
    assert inside.exists() and outside.exists()
    assert any("is outside the folder of the run's log" in m for m in warned(log, str(outside)))
    assert any("has no filepath template" in m for m in warned(log, str(inside)))


def test_a_checkpoint_larger_than_the_model_can_make_is_neither_hashed_nor_copied(
        tmp_path, monkeypatch):
    """The last checkpoint grown to a terabyte (a sparse file: kilobytes on disk), the log's
    record given that size: a resume read it whole and copied it to the temporary folder. A
    file larger than a checkpoint of the model can be is passed over, unread, for the one
    saved before it."""
    import sinks.hdf5

    run = tmp_path / "run"
    run.mkdir()
    log = crashed_run(run, FLAT)
    last = run / in_template(FLAT, f"{EPOCHS:02d}")
    os.truncate(last, 1 << 40)
    records = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    saved = [r for r in records if r["kind"] == "checkpoint_saved"][-1]
    saved["size"] = 1 << 40  # the sha256 need not be right: nothing is read to compare it
    log.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    hashed: list[str] = []
    real = sinks.hdf5._Held.sha256
    monkeypatch.setattr(sinks.hdf5._Held, "sha256",
                        lambda self: hashed.append(self.name) or real(self))
    with run_warnings():
        model = resume(run, log, FLAT)
    assert model.weights["w"].tolist() == [float(EPOCHS - 1)] * 2  # the one before it
    assert not any(name == last.name for name in hashed)
    (why,) = warned(log, str(last))
    assert "more than a checkpoint of this model can be" in why

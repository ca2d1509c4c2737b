"""ModelCheckpoint(save_top_k=k, save_last=True): the k best files by the monitor stay on disk,
with ``last``; every other file goes by a ``delete_checkpoint`` decision the writer carries out,
and a replay, a resumed run, the audit and ``verify`` all agree with the files."""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, ConfigError, NumpyModel, RunWarning, read_log, replay
from eventbus.audit import audit, render
from eventbus.jsonl import JsonlWriter
from eventbus.records import DeleteCheckpoint
from eventbus.verify import verify_log
from plugins import ModelCheckpoint
from sinks.hdf5 import load_checkpoint

from hypothesis_profiles import FILES, RUNS, examples

#: Few distinct values, so ties are common; NaN and the infinities among them.
values_with_ties = st.lists(st.sampled_from([0.1, 0.2, 0.3, 0.5, -1.0, math.nan,
                                              math.inf, -math.inf]),
                            min_size=0, max_size=10)


def train(directory: Path, values: list[float], plugin: ModelCheckpoint, *,
          log: Any = None, start: int = 0, stop: int | None = None,
          resume: bool = False) -> Bus:
    """Epochs ``start`` to ``stop`` of a run reporting ``values`` as val_loss, the weights
    changing every epoch so each file's content says which epoch it holds."""
    model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
    bus = Bus([plugin], model=model, log=log if log is not None else
              str(directory / "run.jsonl"), resume=resume)
    end = len(values) if stop is None else stop
    if not resume:
        bus.train_begin({"epochs": len(values)})
    for epoch in range(max(start, bus.initial_epoch), end):
        model.set_weights({"w": np.full(2, float(epoch))})
        bus.epoch_begin(epoch)
        bus.epoch_end(epoch, {"val_loss": values[epoch]})
    return bus


def expected_top_k(values: list[float], k: int, mode: str) -> list[int]:
    """The epochs of the k best values, best first: NaN never among them, a tie won by the
    earlier epoch. Computed from the whole sequence at once (the plugin decides online)."""
    finite = [(v if mode == "min" else -v, e) for e, v in enumerate(values) if not math.isnan(v)]
    return [e for _, e in sorted(finite)[:k]]


def files_on_disk(directory: Path) -> set[str]:
    folder = directory / "ckpt"
    return set(os.listdir(folder)) if folder.exists() else set()


@examples(FILES)
@given(values=values_with_ties, k=st.integers(1, 3), save_last=st.booleans(),
       mode=st.sampled_from(["min", "max"]))
def test_the_files_on_disk_are_the_k_best_and_the_last(values, k, save_last, mode):
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        plugin = ModelCheckpoint(str(directory / "ckpt" / "{epoch:03d}.h5"), mode=mode,
                                 save_top_k=k, save_last=save_last)
        train(directory, values, plugin).close()
        best = expected_top_k(values, k, mode)
        wanted = {f"{e + 1:03d}.h5" for e in best} | ({"last.h5"} if save_last and values
                                                      else set())
        assert files_on_disk(directory) == wanted
        assert plugin.kept == [str(directory / "ckpt" / f"{e + 1:03d}.h5") for e in best]
        for e in best:  # each kept file holds its own epoch's weights
            weights = load_checkpoint(directory / "ckpt" / f"{e + 1:03d}.h5").weights
            assert weights["w"].tolist() == [float(e)] * 2
        if save_last and values:
            last = load_checkpoint(directory / "ckpt" / "last.h5").weights["w"]
            assert last.tolist() == [float(len(values) - 1)] * 2

        # The log says why each other file went: a delete decision, naming the epoch and
        # value, and the writer's checkpoint_deleted after it.
        records = list(read_log(directory / "run.jsonl"))
        saved = {r.path for r in records if r.kind == "checkpoint_saved"}
        deleted = {r.path for r in records if r.kind == "checkpoint_deleted"}
        gone = {p for p in saved if os.path.basename(p) not in wanted}
        assert deleted == gone
        for d in (r for r in records if isinstance(r, DeleteCheckpoint)):
            epoch = d.evidence["epoch"]
            assert d.reason == (f"epoch {epoch + 1} (val_loss {values[epoch]:.6g}) is no "
                                f"longer among the {k} best")
            assert epoch not in best
        # Replay recomputes the same decisions, removals included.
        assert replay(directory / "run.jsonl", verify=True).mismatch is None


@examples(RUNS)
@given(values=values_with_ties.filter(lambda v: len(v) >= 2), k=st.integers(1, 3),
       data=st.data())
def test_a_resumed_run_keeps_and_removes_as_an_uninterrupted_one(values, k, data):
    cut = data.draw(st.integers(1, len(values) - 1), label="epochs before the crash")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        template = str(directory / "ckpt" / "{epoch:03d}.h5")
        log = str(directory / "run.jsonl")
        writer = JsonlWriter(log)
        train(directory, values, ModelCheckpoint(template, save_top_k=k, save_last=True),
              log=writer, stop=cut)
        writer.close()  # the crash: the bus is never closed
        plugin = ModelCheckpoint(template, save_top_k=k, save_last=True)
        # last.h5, the newest file, is the one the writer puts back into the model.
        train(directory, values, plugin, log=log, resume=True).close()
        best = expected_top_k(values, k, "min")
        assert files_on_disk(directory) == {f"{e + 1:03d}.h5" for e in best} | {"last.h5"}
        assert plugin.kept == [str(directory / "ckpt" / f"{e + 1:03d}.h5") for e in best]
        assert replay(log, verify=True).mismatch is None


def test_a_name_already_kept_gets_a_version_instead_of_overwriting_the_best(tmp_path):
    plugin = ModelCheckpoint(str(tmp_path / "ckpt" / "best.h5"), save_top_k=2, save_last=True)
    train(tmp_path, [0.5, 0.4, 0.45, 0.3], plugin).close()
    # 0.5 -> best.h5, 0.4 -> best-v1.h5, 0.45 -> best.h5 is taken (kept): best-v2.h5, which
    # pushes out 0.5's best.h5; 0.3 -> best.h5 again, pushing out 0.45's best-v2.h5.
    assert files_on_disk(tmp_path) == {"best.h5", "best-v1.h5", "last.h5"}
    assert load_checkpoint(tmp_path / "ckpt" / "best.h5").weights["w"].tolist() == [3.0, 3.0]
    assert load_checkpoint(tmp_path / "ckpt" / "best-v1.h5").weights["w"].tolist() == [1.0, 1.0]


def test_the_audit_marks_removed_checkpoints_and_verify_counts_them_deleted(tmp_path):
    plugin = ModelCheckpoint(str(tmp_path / "ckpt" / "{epoch:02d}.h5"), save_top_k=1)
    train(tmp_path, [0.5, 0.4], plugin).close()
    result = audit(tmp_path / "run.jsonl")
    entries = {os.path.basename(c["path"]): c for c in result.checkpoints}
    assert entries["01.h5"]["deleted"] and not entries["02.h5"]["deleted"]
    assert entries["01.h5"]["deleted_reason"] == \
        "epoch 1 (val_loss 0.5) is no longer among the 1 best"
    text = render(result)
    assert "checkpoints: 2, 1 deleted since" in text
    assert re.search(r"01\.h5 .*deleted at epoch 2: epoch 1 \(val_loss 0\.5\) is no longer", text)
    verdict = verify_log(tmp_path / "run.jsonl")
    assert {os.path.basename(c.path): c.status for c in verdict.checkpoints} == \
        {"01.h5": "deleted", "02.h5": "verified"}
    assert verdict.ok and verdict.as_dict()["checkpoints"]["deleted"] == 1


# --- the writer removes only what it wrote ------------------------------------------------------


def writer_run(tmp_path: Path) -> Bus:
    """A bus whose writer has saved ckpt/01.h5 (k=2: nothing removed yet)."""
    plugin = ModelCheckpoint(str(tmp_path / "ckpt" / "{epoch:02d}.h5"), save_top_k=2)
    return train(tmp_path, [0.5], plugin)


def test_the_writer_leaves_a_file_it_did_not_write(tmp_path):
    bus = writer_run(tmp_path)
    other = tmp_path / "ckpt" / "notes.h5"
    other.write_bytes(b"the user's own file")
    with pytest.warns(RunWarning, match="was not written by this checkpoint writer"):
        bus.decide(DeleteCheckpoint(path=str(other), reason="asked by the test"))
    bus.close()
    assert other.read_bytes() == b"the user's own file"
    assert not [r for r in read_log(tmp_path / "run.jsonl") if r.kind == "checkpoint_deleted"]


def test_the_writer_never_follows_a_link_put_where_its_file_was(tmp_path):
    bus = writer_run(tmp_path)
    written = tmp_path / "ckpt" / "01.h5"
    precious = tmp_path / "precious.h5"
    written.rename(precious)  # the same bytes, elsewhere, and a link to them at the name
    written.symlink_to(precious)
    with pytest.warns(RunWarning, match="is a link now"):
        bus.decide(DeleteCheckpoint(path=str(written), reason="asked by the test"))
    bus.close()
    assert written.is_symlink() and precious.exists()


def test_the_writer_leaves_a_file_changed_since_it_wrote_it(tmp_path):
    bus = writer_run(tmp_path)
    written = tmp_path / "ckpt" / "01.h5"
    written.write_bytes(b"someone else's bytes")
    with pytest.warns(RunWarning, match="was changed since it was saved"):
        bus.decide(DeleteCheckpoint(path=str(written), reason="asked by the test"))
    bus.close()
    assert written.read_bytes() == b"someone else's bytes"


def test_the_writer_removes_its_own_file_and_records_it(tmp_path):
    bus = writer_run(tmp_path)
    written = tmp_path / "ckpt" / "01.h5"
    bus.decide(DeleteCheckpoint(path=str(written), reason="asked by the test"))
    bus.close()
    assert not written.exists()
    [saved] = [r for r in read_log(tmp_path / "run.jsonl") if r.kind == "checkpoint_saved"]
    [gone] = [r for r in read_log(tmp_path / "run.jsonl") if r.kind == "checkpoint_deleted"]
    assert (gone.path, gone.sha256) == (saved.path, saved.sha256)


# --- parameters -----------------------------------------------------------------------------------


@pytest.mark.parametrize("params, field", [
    ({"save_top_k": 0}, "save_top_k"),
    ({"save_top_k": True}, "save_top_k"),
    ({"save_top_k": "3"}, "save_top_k"),
    ({"save_top_k": 3, "save_best_only": True}, "save_top_k"),
    ({"save_last": "yes"}, "save_last"),
])
def test_bad_parameters_name_the_field(params, field):
    with pytest.raises(ConfigError) as info:
        ModelCheckpoint("ckpt/{epoch}.h5", **params)
    assert info.value.field == field and "ModelCheckpoint" in str(info.value)


def test_save_best_only_is_top_1_when_save_top_k_is_given(tmp_path):
    plugin = ModelCheckpoint(str(tmp_path / "ckpt" / "{epoch:02d}.h5"), save_best_only=True,
                             save_top_k=1)
    train(tmp_path, [0.5, 0.4, 0.6, 0.3], plugin).close()
    assert files_on_disk(tmp_path) == {"04.h5"}


def test_without_save_top_k_best_only_keeps_every_improvement_as_keras(tmp_path):
    plugin = ModelCheckpoint(str(tmp_path / "ckpt" / "{epoch:02d}.h5"), save_best_only=True)
    train(tmp_path, [0.5, 0.4, 0.6, 0.3], plugin).close()
    assert files_on_disk(tmp_path) == {"01.h5", "02.h5", "04.h5"}


def test_last_takes_the_template_ending_and_directory():
    assert ModelCheckpoint("out/m-{epoch}.weights.h5", save_weights_only=True,
                           save_last=True).last_path == os.path.join("out", "last.weights.h5")
    assert ModelCheckpoint("m-{epoch}.keras", save_last=True).last_path == "last.keras"


def test_a_missing_monitor_warns_once_and_removes_nothing(tmp_path):
    plugin = ModelCheckpoint(str(tmp_path / "ckpt" / "{epoch:02d}.h5"), monitor="val_acc",
                             save_top_k=1, save_last=True)
    with pytest.warns(RunWarning, match="Can save the 1 best models only with val_acc"):
        train(tmp_path, [0.5, 0.4], plugin).close()
    assert files_on_disk(tmp_path) == {"last.h5"}


def test_save_freq_batches_keep_the_k_best_by_the_batch_value(tmp_path):
    model = NumpyModel({"w": np.zeros(2)}, learning_rate=0.1)
    plugin = ModelCheckpoint(str(tmp_path / "ckpt" / "{epoch}-{batch}.h5"), monitor="loss",
                             save_freq=2, save_top_k=2)
    with Bus([plugin], model=model, log=str(tmp_path / "run.jsonl")) as bus:
        bus.train_begin({"epochs": 1})
        bus.epoch_begin(0)
        for batch, loss in enumerate([9.0, 0.4, 9.0, 0.6, 9.0, 0.2, 9.0, 0.5]):
            bus.batch_begin(batch)
            bus.batch_end(batch, {"loss": loss})
        bus.epoch_end(0, {"loss": 4.7})
        bus.train_end()
    # Saves at batches 2, 4, 6 and 8 (losses 0.4, 0.6, 0.2, 0.5): the 2 best are 0.2 and 0.4.
    assert files_on_disk(tmp_path) == {"1-6.h5", "1-2.h5"}
    reasons = [r.reason for r in read_log(tmp_path / "run.jsonl")
               if r.kind == "delete_checkpoint"]
    # 0.5 at batch 8 is worse than both kept: never saved, so never removed.
    assert reasons == ["epoch 1 batch 4 (loss 0.6) is no longer among the 2 best"]


def test_a_resumed_run_does_not_try_a_removed_file(tmp_path):
    template = str(tmp_path / "ckpt" / "{epoch:02d}.h5")
    log = str(tmp_path / "run.jsonl")
    writer = JsonlWriter(log)
    # k=1: epoch 2's file removes epoch 1's; then the kept file is damaged.
    train(tmp_path, [0.5, 0.4], ModelCheckpoint(template, save_top_k=1), log=writer)
    writer.close()
    (tmp_path / "ckpt" / "02.h5").write_bytes(b"damaged")
    with pytest.warns(RunWarning) as caught:
        train(tmp_path, [0.5, 0.4, 0.6], ModelCheckpoint(template, save_top_k=1), log=log,
              resume=True).close()
    messages = [str(w.message) for w in caught]
    assert any("02.h5 was changed since it was saved" in m for m in messages)
    # The removed file is not tried (it would be "gone"): no checkpoint could be loaded.
    assert not any("01.h5" in m for m in messages), messages
    assert any("no checkpoint the log records could be loaded" in m for m in messages)


def test_a_removal_the_crash_cut_short_is_finished_on_resume(tmp_path):
    template = str(tmp_path / "ckpt" / "{epoch:02d}.h5")
    log = tmp_path / "run.jsonl"
    writer = JsonlWriter(str(log))
    bus = train(tmp_path, [0.5], ModelCheckpoint(template, save_top_k=1), log=writer)
    first = (tmp_path / "ckpt" / "01.h5").read_bytes()
    bus.epoch_begin(1)
    bus.epoch_end(1, {"val_loss": 0.4})  # decides to remove 01.h5, and the writer does
    writer.close()
    # The crash as it could have come: after the decision, before the file was removed.
    lines = [line for line in log.read_text().splitlines()
             if '"kind":"checkpoint_deleted"' not in line]
    log.write_text("\n".join(lines) + "\n")
    (tmp_path / "ckpt" / "01.h5").write_bytes(first)
    train(tmp_path, [0.5, 0.4, 0.6], ModelCheckpoint(template, save_top_k=1), log=str(log),
          resume=True).close()
    assert files_on_disk(tmp_path) == {"02.h5"}
    records = list(read_log(log))
    [decision] = [r for r in records if r.kind == "delete_checkpoint"]
    [done] = [r for r in records if r.kind == "checkpoint_deleted"]
    assert (done.path, done.cause_seq) == (decision.path, decision.seq)
    assert verify_log(log).ok


@examples(FILES)
@given(values=st.lists(st.sampled_from([0.1, 0.2, 0.3, 0.5]), min_size=1, max_size=14),
       k=st.integers(1, 4), save_last=st.booleans(),
       template=st.sampled_from(["best.h5", "best-v1.h5", "{epoch:03d}.h5"]))
def test_each_name_is_the_first_free_one(values, k, save_last, template):
    """Property: a save is named ``path``, or the first ``path-vN`` not kept (nor ``last``),
    as Lightning names it: a reference keeping the files from the decisions alone gives every
    name. (The plugin finds names without scanning what it keeps: a header with a huge
    save_top_k made replay quadratic.)"""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        plugin = ModelCheckpoint(str(directory / "ckpt" / template), save_top_k=k,
                                 save_last=save_last)
        train(directory, values, plugin).close()
        kept: set[str] = set()
        last = plugin.last_path if save_last else None
        base = str(directory / "ckpt" / template)
        for record in read_log(directory / "run.jsonl"):
            if record.kind == "save_checkpoint" and record.code == "top_k":
                wanted = base if "{" not in template else record.path
                stem, ending = wanted[:-3], ".h5"
                version, expected = 0, wanted
                while expected in kept or expected == last:
                    version += 1
                    expected = f"{stem}-v{version}{ending}"
                assert record.path == expected
                kept.add(record.path)
            elif record.kind == "delete_checkpoint":
                kept.discard(record.path)
        assert kept == set(plugin.kept)

"""eventbus.integrations.distributed: two real processes agreeing through gloo on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from eventbus import Bus, read_log  # noqa: E402
from eventbus.integrations.distributed import (  # noqa: E402
    AGREEMENT,
    DistributedBus,
    audit_ranks,
    checked_rank_logs,
    rank_log_path,
    rank_logs,
    read_rank_logs,
    render_ranks,
    replay_ranks,
)
from eventbus.records import SetLearningRate, StopTraining  # noqa: E402
from plugins import EarlyStopping  # noqa: E402

WORKER = Path(__file__).with_name("dist_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def run_ranks(out: Path, scenario: str, *, wait_for: tuple[int, ...] = (0, 1),
              killed: tuple[int, ...] = (), limit: float = 60.0) -> dict[int, dict]:
    """Start both ranks; wait for the ranks in ``wait_for``, and for those in ``killed`` to die
    by SIGKILL (the scenario kills them); end the others; read results."""
    # A file store, not a TCP port: a port found free and handed over can be taken by another
    # test worker before rank 0 binds it. Each start gets a file of its own (a store's file
    # must not be reused).
    rendezvous = out / f"rendezvous-{uuid.uuid4().hex}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH",
                                                                                  "")]))
    procs = {rank: subprocess.Popen([sys.executable, str(WORKER), str(rank), "2", str(rendezvous),
                                     str(out), scenario], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
             for rank in (0, 1)}
    deadline = time.monotonic() + limit
    try:
        for rank in wait_for:
            output, _ = procs[rank].communicate(timeout=max(deadline - time.monotonic(), 1))
            assert procs[rank].returncode == 0, output.decode(errors="replace")
        for rank in killed:
            output, _ = procs[rank].communicate(timeout=max(deadline - time.monotonic(), 1))
            assert procs[rank].returncode == -signal.SIGKILL, output.decode(errors="replace")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {rank: json.loads((out / f"result.rank{rank}.json").read_text()) for rank in wait_for}


@pytest.fixture(scope="module")
def plateau(tmp_path_factory):
    out = tmp_path_factory.mktemp("plateau")
    return out, run_ranks(out, "plateau")


class TestAgreedStop:
    def test_both_ranks_stop_at_the_same_epoch(self, plateau):
        """Only rank 1's score plateaus, and both ranks stop at its epoch, sharing one run id."""
        _, results = plateau
        assert results[0]["last_epoch"] == results[1]["last_epoch"] == 4
        assert results[0]["run_id"] == results[1]["run_id"]
        # val_loss is averaged, so ReduceLROnPlateau decides alike: same rate everywhere.
        assert results[0]["learning_rate"] == results[1]["learning_rate"]

    def test_each_rank_logs_why(self, plateau):
        """Rank 1 records its own EarlyStopping; rank 0 records the agreed stop naming rank 1."""
        out, _ = plateau
        logs = read_rank_logs(out / "events.jsonl")
        assert sorted(logs) == [0, 1]
        for rank, records in logs.items():
            assert records[0].meta["rank"] == rank and records[0].meta["world_size"] == 2
        own = [r for r in logs[1] if isinstance(r, StopTraining)]
        assert [(s.source, s.epoch) for s in own] == [("EarlyStopping", 4)]
        agreed = [r for r in logs[0] if isinstance(r, StopTraining)]
        assert [(s.source, s.epoch, s.code) for s in agreed] == [(AGREEMENT, 4, "stop_agreed")]
        assert agreed[0].evidence["rank"] == 1
        assert agreed[0].evidence["source"] == "EarlyStopping"
        assert "rank 1 asked to stop" in agreed[0].reason
        # The epoch_end both record carries the averaged val_loss: the same on both ranks.
        ends = {rank: [r.logs["val_loss"] for r in recs if r.kind == "epoch_end"]
                for rank, recs in logs.items()}
        assert ends[0] == ends[1]
        # A vector metric is averaged element by element: rank 0 gave [0, 1 + epoch], rank 1
        # [1, 1 + epoch].
        vectors = {rank: [(r.epoch, r.logs["val_f1"]) for r in recs if r.kind == "epoch_end"]
                   for rank, recs in logs.items()}
        assert vectors[0] == vectors[1] == [(e, [0.5, 1.0 + e]) for e in range(5)]

    def test_learning_rate_comes_from_rank_zero(self, plateau):
        """Rank 1 started at 0.05: at the first epoch end it takes rank 0's 0.1, on record."""
        out, _ = plateau
        logs = read_rank_logs(out / "events.jsonl")
        agreed = {rank: [r for r in recs if isinstance(r, SetLearningRate)
                         and r.source == AGREEMENT] for rank, recs in logs.items()}
        assert agreed[0] == []
        assert [(d.epoch, d.value, d.previous) for d in agreed[1]] == [(0, 0.1, 0.05)]

    def test_logs_replay_to_the_same_decisions(self, plateau):
        """Each rank's log replays to its recorded decisions; the agreement is epoch 5, rank 1."""
        out, _ = plateau
        result = replay_ranks(out / "events.jsonl")
        assert result.ok, result.problems
        assert result.stopped_at == 4 and result.stopped_by == [1]
        assert result.recorded_stops == {0: 4, 1: 4}

    def test_audit_over_both_ranks_explains_the_stop(self, plateau):
        """The text names the asking rank, its plugin and rule, for a person to read."""
        out, _ = plateau
        audits = audit_ranks(out / "events.jsonl")
        assert audits[0].stop.source == AGREEMENT and audits[1].stop.source == "EarlyStopping"
        text = render_ranks(audits)
        assert "stopped at epoch 5 on 2 of 2 rank(s); asked by rank 1" in text
        assert "rank 1: EarlyStopping" in text

    def test_sinks_write_on_rank_zero_only(self, plateau):
        """CSVLogger ran on rank 0 alone; rank 1's header says it was left out."""
        out, _ = plateau
        logs = read_rank_logs(out / "events.jsonl")
        assert logs[1][0].meta["distributed"]["left_out"] == ["CSVLogger"]
        assert logs[0][0].meta["distributed"]["left_out"] == []
        rows = (out / "metrics.csv").read_text().splitlines()
        assert len(rows) == 1 + 5  # header and epochs 1..5, written once

    def test_one_rank_log_reads_alone(self, plateau):
        """A single rank's log is an ordinary log: read, replay and audit work on it."""
        out, _ = plateau
        path = rank_log_path(out / "events.jsonl", 1)
        assert list(rank_logs(path)) == [1]
        assert any(isinstance(r, StopTraining) for r in read_log(path))


@pytest.mark.parametrize("planted", ["events.rank00.jsonl", "events.rank\u0660.jsonl",
                                     "events.rank01.jsonl", "events.rank1.jsonl\n"])
def test_only_a_rank_as_written_names_a_rank_log(tmp_path, planted):
    """A file planted beside a run's rank logs, its rank spelled with a leading zero or a
    non-ASCII digit (both rank 0 or 1 to ``int``), stood in for the real log in --ranks: it is
    no rank log; two names for one rank are an error naming both."""
    for rank in (0, 1):
        Path(rank_log_path(tmp_path / "events.jsonl", rank)).write_text("{}\n")
    (tmp_path / planted).write_text("{}\n")
    assert rank_logs(tmp_path / "events.jsonl") == {
        0: tmp_path / "events.rank0.jsonl", 1: tmp_path / "events.rank1.jsonl"}
    (tmp_path / "x.rank7.jsonl").write_text("{}\n")
    template = str(tmp_path / "x.rank{rank}.jsonl")
    assert rank_logs(template) == {7: tmp_path / "x.rank7.jsonl"}


def test_a_silent_rank_becomes_a_timeout_naming_it(tmp_path):
    """Rank 1 never reaches its epoch end: rank 0 raises RankTimeoutError naming rank 1."""
    # A rank 0 that waited for ever would be killed at ``limit`` and give no result: the
    # bound is the subprocess's, not a timed assertion (start-up varies with the load).
    results = run_ranks(tmp_path, "silent", wait_for=(0,), limit=120)
    error = results[0]["error"]
    assert error["type"] == "RankTimeoutError" and error["ranks"] == [1]
    assert "rank 1 never answered within 2 s" in error["message"]
    # The log keeps what happened, the timeout included.
    warnings = [r for r in read_log(tmp_path / "events.rank0.jsonl") if r.kind == "warning"]
    assert warnings and warnings[-1].details["missing"] == [1]


class TestResumeAfterARankDiedInTheAgreement:
    """Rank 1's plugin decided at epoch 4's end (its "score" alone stalled) and rank 1 was
    SIGKILLed entering that epoch end's agreement: its log holds its own decision, flushed
    before the exchange, and never the agreed ones; rank 0 timed out. Then both resume."""

    @staticmethod
    def kill_then_resume(out: Path, kind: str) -> dict[int, dict]:
        killed = run_ranks(out, f"{kind}-kill", wait_for=(0,), killed=(1,))
        assert killed[0]["error"]["ranks"] == [1]
        return run_ranks(out, f"{kind}-resume")

    @staticmethod
    def resumed_part(records: list) -> list:
        """The records from the last resume on."""
        return records[max(i for i, r in enumerate(records) if r.kind == "resumed"):]

    def test_the_resumed_ranks_train_at_rank_zero_s_rate(self, tmp_path):
        """Rank 1 restored its own cut (0.05) where rank 0 has 0.1: the resume agrees on rank
        0's rate as an epoch end does, on record before the first resumed epoch, so both ranks
        train every resumed epoch at one rate and the logs replay."""
        results = self.kill_then_resume(tmp_path, "rate")
        assert results[0]["rates"] == results[1]["rates"] == {"4": 0.1, "5": 0.1}
        logs = read_rank_logs(tmp_path / "events.jsonl")
        end = [r for r in logs[1] if r.kind == "epoch_end" and r.epoch == 3][-1]
        cut = [r for r in logs[1] if isinstance(r, SetLearningRate) and r.cause_seq == end.seq]
        assert [(d.source, d.value) for d in cut] == [("ReduceLROnPlateau", 0.05),
                                                      (AGREEMENT, 0.1)]
        resumed = self.resumed_part(logs[1])
        agreed = next(r for r in resumed if isinstance(r, SetLearningRate))
        assert (agreed.code, agreed.value, agreed.previous, agreed.epoch) == \
            ("rank0_learning_rate", 0.1, 0.05, 3)
        assert agreed is cut[1]  # caused by epoch 4's end, as the agreement there would be
        begin = next(r for r in resumed if r.kind == "epoch_begin")
        assert agreed.seq < begin.seq and begin.epoch == 4
        # Rank 0's rate is rank 0's: nothing to set.
        assert not any(isinstance(r, SetLearningRate) for r in self.resumed_part(logs[0]))
        result = replay_ranks(tmp_path / "events.jsonl")
        assert result.ok, result.problems

    def test_a_stop_asked_before_the_kill_is_recorded_on_every_rank(self, tmp_path):
        """Rank 1's EarlyStopping asked to stop; resumed, both ranks stop before another
        epoch, and rank 0 records why: the agreed stop naming rank 1, as at an epoch end."""
        results = self.kill_then_resume(tmp_path, "stop")
        assert results[0]["rates"] == results[1]["rates"] == {}
        logs = read_rank_logs(tmp_path / "events.jsonl")
        end = [r for r in logs[0] if r.kind == "epoch_end" and r.epoch == 3][-1]
        agreed = [r for r in logs[0] if isinstance(r, StopTraining)]
        assert [(s.source, s.code, s.epoch, s.cause_seq) for s in agreed] == \
            [(AGREEMENT, "stop_agreed", 3, end.seq)]
        assert agreed[0].evidence["rank"] == 1
        assert agreed[0].evidence["source"] == "EarlyStopping"
        assert "rank 1 asked to stop" in agreed[0].reason
        assert agreed[0] in self.resumed_part(logs[0])
        # Rank 1 keeps its own stop and records no other.
        own = [r for r in logs[1] if isinstance(r, StopTraining)]
        assert [(s.source, s.epoch) for s in own] == [("EarlyStopping", 3)]
        result = replay_ranks(tmp_path / "events.jsonl")
        assert result.ok, result.problems
        assert result.stopped_at == 3 and result.stopped_by == [1]
        assert result.recorded_stops == {0: 3, 1: 3}
        text = render_ranks(audit_ranks(tmp_path / "events.jsonl"))
        assert "stopped at epoch 4 on 2 of 2 rank(s); asked by rank 1" in text


class TestSingleProcess:
    def test_without_torch_distributed_it_is_a_plain_bus(self, tmp_path):
        """Not initialised: rank 0 of 1, a rank log name, decisions as a plain bus makes them."""
        from eventbus.testing import epochs

        bus = DistributedBus([EarlyStopping(patience=1)], log=tmp_path / "e.jsonl")
        with bus:
            for event in epochs(val_loss=[0.5, 0.6, 0.7]):
                bus.publish(event)
                if bus.stop_training:
                    break
        assert bus.rank == 0 and bus.world_size == 1 and bus.stop_training
        header = next(iter(read_log(tmp_path / "e.rank0.jsonl")))
        assert header.meta["world_size"] == 1
        plain = Bus([EarlyStopping(patience=1)])
        for event in epochs(val_loss=[0.5, 0.6, 0.7]):
            plain.publish(event)
        assert plain.stop_training

    @pytest.mark.parametrize("world, match", [
        (10**12, r"had 1000000000000 ranks but ranks 2, 3, .* and 999999999988 more left"),
        ([2], r"rank0\.jsonl: meta\.world_size is \[2\], not a count of ranks"),
        ("x", r"meta\.world_size is 'x', not a count"),
        (True, r"meta\.world_size is True, not a count"),
        (1, r"had 1 ranks but there is a log of rank 1"),
    ])
    def test_a_header_s_world_size_is_checked_never_trusted(self, tmp_path, world, match):
        """A header is untrusted: a world of 10**12 is counted, never made into a range (it
        took gigabytes); anything but a count is an error naming the file and the field."""
        from eventbus import LogError

        for rank in (0, 1):
            with Bus([], log=rank_log_path(tmp_path / "events.jsonl", rank), run_id="a",
                     meta={"world_size": world}) as bus:
                bus.train_begin()
        with pytest.raises(LogError, match=match):
            checked_rank_logs(tmp_path / "events.jsonl")

    def test_rank_logs_of_other_runs_or_a_missing_rank_are_refused(self, tmp_path):
        """The headers alone tell: one run id for all ranks, and every rank of the world."""
        from eventbus import LogError

        def rank_log(rank: int, run_id: str, world: int) -> None:
            with Bus([], log=rank_log_path(tmp_path / "events.jsonl", rank), run_id=run_id,
                     meta={"world_size": world}) as bus:
                bus.train_begin()
                bus.epoch_end(0, {"loss": 1.0})

        rank_log(0, "a", 3)
        rank_log(2, "a", 3)
        with pytest.raises(LogError, match="had 3 ranks but rank 1 left no log"):
            checked_rank_logs(tmp_path / "events.jsonl")
        rank_log(1, "b", 3)
        with pytest.raises(LogError, match=r"from different runs \(\['a', 'b'\]\)"):
            audit_ranks(tmp_path / "events.jsonl")
        rank_log(1, "a", 3)
        paths = checked_rank_logs(tmp_path / "events.jsonl")
        assert list(paths) == [0, 1, 2]
        assert {rank: [r.kind for r in records]
                for rank, records in read_rank_logs(tmp_path / "events.jsonl").items()} == \
            dict.fromkeys(paths, ["header", "train_begin", "epoch_end"])

    def test_rank_log_path(self):
        """{rank} is filled in; otherwise .rank{R} goes before the extension."""
        assert rank_log_path("runs/events.jsonl", 3) == os.path.join("runs", "events.rank3.jsonl")
        assert rank_log_path("runs/r{rank}/log.jsonl", 1) == "runs/r1/log.jsonl"




class TestCommandLine:
    def test_audit_and_replay_over_both_ranks_from_the_command_line(self, plateau, capsys):
        """eventbus audit/replay --ranks read every rank's log; --rank reads one."""
        from eventbus.cli import main

        out, _ = plateau
        log = str(out / "events.jsonl")

        def cli(*argv: str) -> tuple[int, str, str]:
            code = main(list(argv))
            captured = capsys.readouterr()
            return code, captured.out, captured.err

        code, stdout, stderr = cli("audit", log, "--ranks")
        assert code == 0, stderr
        assert "asked by rank 1" in stdout
        code, stdout, stderr = cli("replay", log, "--ranks")
        assert code == 0, stderr
        assert "agreed stop: epoch 5 (asked by rank 1)" in stdout
        # --json: the same answers as data, epochs 0-based.
        code, stdout, _ = cli("audit", log, "--ranks", "--json")
        data = json.loads(stdout)
        assert (code, data["stopped_at"], data["asked_by"]) == (0, [4], [1])
        assert sorted(data["ranks"]) == ["0", "1"]
        code, stdout, _ = cli("replay", log, "--ranks", "--json")
        data = json.loads(stdout)
        assert (code, data["ok"], data["stopped_at"], data["stopped_by"]) == (0, True, 4, [1])
        code, stdout, _ = cli("audit", log, "--rank", "1")
        assert code == 0 and "stopped by EarlyStopping" in stdout
        code, _, stderr = cli("replay", log, "--ranks", "--set", "EarlyStopping.patience=1")
        assert code == 2 and len(stderr.strip().splitlines()) == 1


class TestAveraging:
    """The mean rank 0 computes for every rank: of a metric, or of a vector element by
    element, over the ranks that report it, summed in rank order."""


    @given(st.integers(1, 4).flatmap(lambda n: st.lists(
        st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False),
                  st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=n, max_size=n)),
        min_size=1, max_size=4)))
    def test_the_mean_of_what_the_ranks_report(self, per_rank):
        from eventbus.errors import DistributedError
        from eventbus.integrations.distributed import _combine_average

        messages = [{"op": "average", "epoch": 0,
                     "values": {} if value is None else {"m": value}} for value in per_rank]
        given = [value for value in per_rank if value is not None]
        kinds = {type(value) for value in given}
        if len(kinds) > 1:  # a vector on one rank, a number on another
            with pytest.raises(DistributedError, match=r"logs\['m'\] cannot be averaged.*rank"):
                _combine_average(messages)
            return
        answer = _combine_average(messages)
        if not given:
            assert answer["values"] == {}
            return
        assert answer["counts"] == {"m": len(given)}
        mean = answer["values"]["m"]
        if kinds == {float}:
            assert mean == pytest.approx(sum(given) / len(given))
        else:
            assert mean == pytest.approx([sum(col) / len(given) for col in zip(*given)])

    def test_vectors_of_different_lengths_name_each_rank(self):
        from eventbus.errors import DistributedError
        from eventbus.integrations.distributed import _combine_average

        messages = [{"op": "average", "epoch": 3, "values": {"val_f1": [0.5, 0.25]}},
                    {"op": "average", "epoch": 3, "values": {"val_f1": [0.5, 0.25, 1.0]}}]
        with pytest.raises(DistributedError, match=r"rank 0: 2 values, rank 1: 3 values"):
            _combine_average(messages)


def test_a_resume_agrees_on_the_asking_rank_s_own_stop_and_rank_zero_s_rate():
    """On resume each rank sends the stop its log holds and its rate. The answer is the asking
    rank's own decision, as at an epoch end (not another rank's agreed stop naming it, which
    would be named as the asker), and rank 0's rate."""
    from eventbus.integrations.distributed import _combine_hello

    asked = {"kind": "stop_training", "source": "EarlyStopping", "code": "patience_exhausted",
             "reason": "score did not improve", "seq": 9}
    forwarded = {"kind": "stop_training", "source": AGREEMENT, "code": "stop_agreed",
                 "reason": "rank 2 asked to stop", "seq": 12}

    def resume(stops, rates):
        return [{"op": "resume", "n": 3, "run_id": "a", "initial_epoch": 4, "stop": stop,
                 "learning_rate": rate} for stop, rate in zip(stops, rates)]

    answer = _combine_hello(resume([forwarded, None, asked], [0.1, 0.05, 0.2]))
    assert answer["stop"] == {"rank": 2, "ranks": [2], "decision": asked}
    assert answer["learning_rate"] == 0.1
    answer = _combine_hello(resume([None, None, None], [0.1, 0.1, 0.1]))
    assert answer["stop"] is None


@given(st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats()
    | st.text(max_size=6) | st.sampled_from(["NaN", "Infinity", "-Infinity", "~NaN", "~~x"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=8))
def test_a_message_between_ranks_reads_back_as_sent(value):
    """Property: what one rank sends (a stop's evidence, a rate) the others read as it was:
    non-finite floats floats, strings that spell them strings."""
    from eventbus.integrations.distributed import _dumps, _loads
    from eventbus.records import same_values

    assert same_values(_loads(_dumps({"stop": value})), {"stop": value})

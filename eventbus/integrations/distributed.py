"""Decisions agreed across processes, through ``torch.distributed``.

:class:`DistributedBus` is a :class:`~eventbus.Bus` that knows its rank::

    dist.init_process_group("gloo")   # or nccl, as the job already does
    bus = DistributedBus([EarlyStopping(patience=3)], log="runs/events.jsonl", model=model)
    # rank R records to runs/events.rank{R}.jsonl

What it adds to the bus:

- **A log per rank**: ``events.rank{R}.jsonl`` (or ``{rank}`` in the path), with ``rank``,
  ``world_size`` and the distributed settings in the header's ``meta``. Every rank shares rank
  0's run id.
- **Averaged metrics**: before plugins see an ``epoch_end``, the metrics named by ``average``
  (shell patterns; by default ``val_*``) are replaced by their mean over the ranks that report
  them, computed once on rank 0, so every rank records and decides on the same value; a
  vector metric (per class, ...) element by element, its length the same on every rank. The
  log holds the averaged value. ``average=True`` averages every metric, ``False`` none.
- **Agreed decisions**: after the plugins have handled an ``epoch_end``, one exchange tells
  every rank whether any rank asked to stop and what rank 0's learning rate is. A stop asked
  for by any rank, at that epoch end or at a batch during the epoch, stops every rank at this
  epoch's end (``stop_training`` turns true on every rank together, so no rank leaves a
  DDP step the others are in); ranks that did not ask record a ``stop_training`` decision
  from source ``"distributed"`` naming the rank that asked, its plugin, rule and reason. A
  learning rate that differs from rank 0's is set to rank 0's, recorded as a
  ``set_learning_rate`` from ``"distributed"``. Schedules decided at ``epoch_begin``
  (LearningRateScheduler) are functions of the epoch and agree without an exchange.
- **Sinks on rank 0**: plugins named in ``rank_zero_only`` (checkpoint writer, CSV,
  TensorBoard, HTTP, progress bar) are not registered on other ranks; their names are in the
  header. Decision plugins run everywhere (ModelCheckpoint still decides on every rank; only
  rank 0 writes). ``rank_zero_only=()`` writes on every rank.
- **Timeouts that name the rank**: an exchange is a gather to rank 0 and rank 0's answer, by
  point-to-point messages, each wait bounded. Rank 0 waits ``timeout`` seconds for every rank,
  then tells the ranks that did answer which ones did not; every rank raises
  :class:`RankTimeoutError` naming the missing ranks (``.ranks``). Other ranks wait twice as
  long for rank 0's answer and, if rank 0 itself is gone, name rank 0.

Cost: one exchange per ``epoch_end`` for the agreement, whatever the number of plugins, plus one
for averaging when ``average`` is on (two in the default configuration); an exchange is
2 small messages from each rank to rank 0 and 2 back. Batches cost nothing extra. One at
construction agrees on the run id (and, when resuming, on where to resume; one more then
agrees on a recorded stop and on rank 0's learning rate).

Error tree (all :class:`~eventbus.EventBusError`)::

    DistributedError(RuntimeError)      ranks out of step, a transport failure
    └── RankTimeoutError(TimeoutError)  a rank never answered; .ranks names it

Reading: :func:`rank_logs`, :func:`checked_rank_logs`, :func:`read_rank_logs`,
:func:`replay_ranks`, :func:`audit_ranks` and :func:`render_ranks` read one rank's log or all
of them together.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import itertools
import os
import re
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from eventbus import hookimpl
from eventbus.bus import Bus
from eventbus.coordination import Agreement
from eventbus.errors import ConfigError, DistributedError, LogError, RankTimeoutError
from eventbus.metrics import MAX_INDEX, to_metric
from eventbus.records import (
    DECISION_KINDS,
    Decision,
    Record,
    SetLearningRate,
    StopTraining,
    encode_plain,
    restore_nonfinite,
)
from eventbus.records import Warning as WarningRecord
from eventbus.terminal import printable

__all__ = [
    "AGREEMENT",
    "RANK_ZERO_ONLY",
    "AgreedDecisions",
    "DistributedBus",
    "DistributedError",
    "RankAgreement",
    "RankTimeoutError",
    "RanksReplay",
    "TorchTransport",
    "Transport",
    "audit_ranks",
    "checked_rank_logs",
    "rank_log_path",
    "rank_logs",
    "read_rank_logs",
    "render_ranks",
    "replay_ranks",
]

#: The ``source`` of decisions the ranks agreed on (not made by a plugin of this rank).
AGREEMENT = "distributed"
#: Plugins that write files or talk to the network: registered on rank 0 only by default.
RANK_ZERO_ONLY = frozenset({"CSVLogger", "HDF5CheckpointWriter", "ProgbarLogger",
                            "RemoteMonitor", "TensorBoard"})
_TAG = 0x5EB  # keeps the bus's messages apart from the job's own point-to-point traffic


# --- transport ---------------------------------------------------------------------------------


class Transport(Protocol):
    """How ranks exchange small JSON messages: every rank sends one, rank 0 combines them
    (``combine(messages_by_rank)``) and every rank gets the same answer back."""

    rank: int
    world_size: int

    def exchange(self, message: dict[str, Any],
                 combine: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> dict[str, Any]:
        ...


def _dumps(message: Mapping[str, Any]) -> bytes:
    return orjson.dumps(encode_plain(dict(message)), option=orjson.OPT_NON_STR_KEYS)


def _loads(data: bytes) -> dict[str, Any]:
    return restore_nonfinite(orjson.loads(data))  # type: ignore[no-any-return]


class TorchTransport:
    """Exchanges through a ``torch.distributed`` process group (the job's own), star-shaped.

    Each rank sends its message to rank 0 (a length, then the bytes); rank 0 waits for all of
    them with one deadline, combines, and sends the answer back. Every wait is bounded, so a
    rank that died or hangs becomes :class:`RankTimeoutError` naming it, not a hung job.

    ``group``: the process group (the default one if None). With NCCL, messages travel as CUDA
    tensors on the current device; a separate gloo group (``dist.new_group(backend="gloo")``)
    keeps them on the CPU and is the tested path.
    """

    def __init__(self, group: Any = None, *, timeout: float = 60.0):
        import torch
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise ConfigError("TorchTransport: torch.distributed is not initialised; call "
                              "torch.distributed.init_process_group first", field="group")
        if not timeout > 0:
            raise ConfigError(f"TorchTransport: timeout must be > 0 seconds; got {timeout!r}",
                              field="timeout")
        self._torch = torch
        self._dist = dist
        self.group = group
        self.timeout = float(timeout)
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.backend = str(dist.get_backend(group))
        if self.backend == "nccl":
            self.device = torch.device("cuda", torch.cuda.current_device())
        else:
            self.device = torch.device("cpu")

    def _global(self, rank: int) -> int:
        if self.group is None:
            return rank
        return int(self._dist.get_global_rank(self.group, rank))

    def _wait(self, work: Any, seconds: float) -> None:
        work.wait(timeout=_dt.timedelta(seconds=max(seconds, 0.001)))

    def _send(self, data: bytes, to: int) -> list[Any]:
        torch = self._torch
        size = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        body = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(self.device)
        dst = self._global(to)
        return [self._dist.isend(size, dst, group=self.group, tag=_TAG),
                self._dist.isend(body, dst, group=self.group, tag=_TAG)]

    def _recv_size(self, src: int) -> tuple[Any, Any]:
        torch = self._torch
        size = torch.zeros(1, dtype=torch.int64, device=self.device)
        return size, self._dist.irecv(size, self._global(src), group=self.group, tag=_TAG)

    def _recv_body(self, size: Any, src: int, seconds: float) -> bytes:
        torch = self._torch
        body = torch.empty(int(size.item()), dtype=torch.uint8, device=self.device)
        self._wait(self._dist.irecv(body, self._global(src), group=self.group, tag=_TAG),
                   seconds)
        return bytes(body.cpu().numpy().tobytes())

    def exchange(self, message: dict[str, Any],
                 combine: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> dict[str, Any]:
        op, epoch = message.get("op", ""), message.get("epoch")
        data = _dumps(message)
        if self.rank != 0:
            return self._follow(data, op, epoch)
        deadline = time.monotonic() + self.timeout
        pending = {r: self._recv_size(r) for r in range(1, self.world_size)}
        sizes: dict[int, Any] = {}
        missing: list[int] = []
        for r, (size, work) in pending.items():
            try:
                self._wait(work, deadline - time.monotonic())
            except RuntimeError:
                missing.append(r)
                continue
            sizes[r] = size
        messages: list[dict[str, Any] | None] = [message] + [None] * (self.world_size - 1)
        for r, size in sizes.items():
            try:
                messages[r] = _loads(self._recv_body(size, r, deadline - time.monotonic()))
            except RuntimeError:
                missing.append(r)
        if missing:
            missing.sort()
            text = (f"{_ranks(missing)} never answered within {self.timeout:g} s "
                    f"({_what(op, epoch)}); rank 0 gave up waiting")
            self._answer({"error": text, "missing": missing}, [r for r in sizes
                                                                if r not in missing])
            raise RankTimeoutError(text, ranks=missing, op=op, epoch=epoch)
        try:
            answer = combine(messages)  # type: ignore[arg-type]
        except DistributedError as exc:
            self._answer({"error": str(exc), "missing": []}, range(1, self.world_size))
            raise
        self._answer(answer, range(1, self.world_size))
        return answer

    def _answer(self, answer: Mapping[str, Any], ranks: Iterable[int]) -> None:
        data = _dumps(answer)
        works = [w for r in ranks for w in self._send(data, r)]
        for work in works:
            try:
                self._wait(work, self.timeout)
            except RuntimeError:
                pass  # a rank that stopped listening learns nothing; its own wait times out

    def _follow(self, data: bytes, op: str, epoch: int | None) -> dict[str, Any]:
        # Twice rank 0's wait: rank 0 answers "rank N never answered" before this runs out.
        limit = 2 * self.timeout
        deadline = time.monotonic() + limit
        try:
            for work in self._send(data, 0):
                self._wait(work, deadline - time.monotonic())
            size, work = self._recv_size(0)
            self._wait(work, deadline - time.monotonic())
            answer = _loads(self._recv_body(size, 0, deadline - time.monotonic()))
        except RuntimeError as exc:
            raise RankTimeoutError(
                f"rank 0 never answered rank {self.rank} within {limit:g} s "
                f"({_what(op, epoch)}): {exc}", ranks=[0], op=op, epoch=epoch) from exc
        if "error" in answer:
            if answer.get("missing"):
                raise RankTimeoutError(f"{answer['error']} (seen from rank {self.rank})",
                                       ranks=answer["missing"], op=op, epoch=epoch)
            raise DistributedError(f"{answer['error']} (seen from rank {self.rank})")
        return answer


def _ranks(ranks: Sequence[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def _what(op: str, epoch: int | None) -> str:
    return f"{op} at epoch {epoch + 1}" if epoch is not None else op


def _in_step(messages: list[dict[str, Any]]) -> None:
    """Every rank must be at the same exchange: same operation, same epoch, same count."""
    first = messages[0]
    keys = ("op", "epoch", "n")
    odd = [r for r, m in enumerate(messages) if any(m.get(k) != first.get(k) for k in keys)]
    if odd:
        seen = "; ".join(f"rank {r}: {_what(m.get('op', '?'), m.get('epoch'))} "
                         f"(exchange #{m.get('n')})" for r, m in enumerate(messages))
        raise DistributedError(f"ranks are out of step ({seen}); every rank must publish the "
                               "same epochs to its DistributedBus")


def _combine_hello(messages: list[dict[str, Any]]) -> dict[str, Any]:
    _in_step(messages)
    initial = {m.get("initial_epoch") for m in messages}
    if len(initial) > 1:
        raise DistributedError("resume: the ranks cannot go on from one epoch ("
                               + ", ".join(f"rank {r} resumes at epoch "
                                           f"{(m.get('initial_epoch') or 0) + 1}"
                                           for r, m in enumerate(messages))
                               + "): a rank without its log, or whose weights backup is older "
                               "than the others' (a damaged latest file); give every rank "
                               "its log and backup of this run")
    # The stop a rank recorded, as _combine_agree gives it: the asking rank's own decision,
    # where one holds it, rather than an agreed stop that names it.
    asking = [r for r, m in enumerate(messages) if m.get("stop") is not None]
    own = [r for r in asking if messages[r]["stop"].get("source") != AGREEMENT] or asking
    stop = {"rank": own[0], "ranks": own, "decision": messages[own[0]]["stop"]} if own else None
    # Rank 0's rate, as at an epoch end: a rank killed in that agreement restored its own.
    return {"run_id": messages[0]["run_id"], "stop": stop,
            "learning_rate": messages[0].get("learning_rate")}


def _combine_average(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of each metric over the ranks that report it; a vector metric (a list), element
    by element. Ranks whose values of one metric differ in shape are a DistributedError naming
    the metric and each rank's shape (every rank raises it)."""
    _in_step(messages)
    reported: dict[str, list[tuple[int, Any]]] = {}
    for rank, m in enumerate(messages):  # rank order: the same sum on every run
        for key, value in m["values"].items():
            reported.setdefault(key, []).append((rank, value))
    means: dict[str, Any] = {}
    for key, got in reported.items():
        values = [value for _, value in got]
        shapes = {len(v) if type(v) is list else None for v in values}
        if shapes == {None}:
            means[key] = sum(values) / len(values)
        elif len(shapes) == 1:
            means[key] = [sum(column) / len(values) for column in zip(*values)]
        else:
            each = ", ".join(f"rank {rank}: " + (f"{len(v)} values" if type(v) is list
                                                 else "one value") for rank, v in got)
            raise DistributedError(f"epoch_end: logs[{key!r}] cannot be averaged over the "
                                   f"ranks: its shape differs ({each})")
    return {"values": means, "counts": {k: len(v) for k, v in reported.items()}}


def _combine_agree(messages: list[dict[str, Any]]) -> dict[str, Any]:
    _in_step(messages)
    asking = [r for r, m in enumerate(messages) if m.get("stop") is not None]
    stop = None
    if asking:
        stop = {"rank": asking[0], "ranks": asking, "decision": messages[asking[0]]["stop"]}
    return {"stop": stop, "learning_rate": messages[0].get("learning_rate")}


# --- the bus -------------------------------------------------------------------------------------


def rank_log_path(log: str | os.PathLike[str], rank: int) -> str:
    """Where rank ``rank`` records: ``{rank}`` in the path is replaced, else ``.rank{R}`` goes
    before the extension (``events.jsonl`` -> ``events.rank1.jsonl``)."""
    text = os.fspath(log)
    if "{rank}" in text:
        return text.replace("{rank}", str(rank))
    path = Path(text)
    return str(path.with_name(f"{path.stem}.rank{rank}{path.suffix}"))


def _patterns(average: bool | str | Sequence[str] | None) -> tuple[str, ...]:
    if average is True:
        return ("*",)
    if average is False or average is None:
        return ()
    if isinstance(average, str):
        return (average,)
    patterns = tuple(average)
    if not all(isinstance(p, str) for p in patterns):
        raise ConfigError(f"DistributedBus: average must be a bool, a pattern or a list of "
                          f"patterns; got {average!r}", field="average")
    return patterns


class RankAgreement:
    """The coordinator of one rank (:mod:`eventbus.coordination`): what :class:`DistributedBus`
    plugs into its bus. It averages metrics before an epoch's end is recorded, holds a stop as
    a request until the epoch ends, agrees with the other ranks, and leaves out the plugins
    that run on rank 0 only."""

    def __init__(self, transport: Transport | None, *, average: tuple[str, ...],
                 rank_zero_only: frozenset[str]):
        self.transport = transport if transport is not None and transport.world_size > 1 \
            else None
        self.rank = transport.rank if transport is not None else 0
        self.world_size = transport.world_size if transport is not None else 1
        self.average = average
        self.rank_zero_only = rank_zero_only
        #: Plugins left out on this rank (their names go to the header).
        self.left_out: list[str] = []
        self.exchanges = 0
        #: True while the bus restores a resumed run: a stop from the log is held, then agreed.
        self.resuming = False
        self.local_stop = False
        self.request: Decision | None = None
        self.bus: Bus | None = None

    # --- the coordinator protocol --------------------------------------------------------------

    def admits(self, name: str) -> bool:
        if self.rank != 0 and name in self.rank_zero_only:
            self.left_out.append(name)
            return False
        return True

    def header_meta(self) -> dict[str, Any]:
        return {"rank": self.rank, "world_size": self.world_size, "distributed": {
            "average": list(self.average), "rank_zero_only": sorted(self.rank_zero_only),
            "left_out": list(self.left_out),
            "backend": getattr(self.transport, "backend", None)}}

    def hold_stop(self, decision: StopTraining | None) -> bool:
        if decision is not None and decision.source == AGREEMENT:
            return False  # the ranks agreed on it: it stops now
        if self.transport is None and not self.resuming:
            return False  # one process: nothing to agree on
        self.local_stop = True
        if decision is not None and self.request is None and not self._replaying():
            self.request = decision
        return True

    def stop_cleared(self) -> None:
        self.local_stop = False
        self.request = None

    def epoch_logs(self, epoch: int, logs: Mapping[str, Any] | None) -> Any:
        if self.transport is None or not self.average:
            return logs
        out = dict(logs or {})
        # to_metric: a tensor's one device sync happens here, for the averaged keys only; a
        # vector metric is a list of floats, averaged element by element.
        local = {k: to_metric(v, k, "epoch_end") for k, v in out.items()
                 if isinstance(k, str) and self._averaged(k)}
        answer = self.exchange({"op": "average", "epoch": int(epoch), "values": local},
                               _combine_average)
        for key in local:
            mean = answer["values"][key]
            out[key] = [float(x) for x in mean] if type(mean) is list else float(mean)
        return out

    def agree(self, epoch: int, cause_seq: int) -> Agreement:
        if self.transport is None:
            return Agreement()
        request = _asked(self.request) if self.local_stop else None
        mine = self._bus().learning_rate
        answer = self.exchange({"op": "epoch_end", "epoch": int(epoch), "stop": request,
                                "learning_rate": mine}, _combine_agree)
        agreed = Agreement()
        stop = answer.get("stop")
        if stop is not None:
            if self.rank not in stop["ranks"]:
                agreed.decisions.append(self.agreed_stop_decision(stop, epoch, cause_seq))
            agreed.stop = True
        self.stop_cleared()
        rate = self.agreed_rate(answer.get("learning_rate"), mine, epoch, cause_seq)
        if rate is not None:
            agreed.decisions.append(rate)
        return agreed

    def agreed_rate(self, lr0: float | None, mine: float | None, epoch: int,
                     cause_seq: int) -> SetLearningRate | None:
        """The decision that gives this rank rank 0's rate ``lr0``; None where it has it."""
        if self.rank == 0 or lr0 is None or mine == lr0:
            return None
        return SetLearningRate(
            source=AGREEMENT, code="rank0_learning_rate", value=float(lr0), previous=mine,
            reason=f"every rank follows rank 0's learning rate: {lr0:.6g} "
                   f"(this rank had {mine if mine is None else f'{mine:.6g}'})",
            evidence={"rank": 0, "value": lr0, "local": mine},
            cause_seq=cause_seq, epoch=epoch)

    # --- the exchanges -------------------------------------------------------------------------

    def _bus(self) -> Bus:
        assert self.bus is not None, "the agreement is used by its bus only"
        return self.bus

    def _replaying(self) -> bool:
        return self.bus is not None and self.bus.replaying

    def _averaged(self, key: str) -> bool:
        return key != "learning_rate" and any(fnmatch.fnmatchcase(key, p) for p in self.average)

    def exchange(self, message: dict[str, Any],
                 combine: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> dict[str, Any]:
        assert self.transport is not None
        self.exchanges += 1
        message["n"] = self.exchanges
        try:
            return self.transport.exchange(message, combine)
        except DistributedError as exc:
            if self.bus is not None:
                # Kept in the log before the error ends the run: the audit shows who was missing.
                self.bus.record(WarningRecord(
                    source=AGREEMENT, message=str(exc), epoch=message.get("epoch"),
                    details={"op": message.get("op"), "rank": self.rank,
                             "missing": list(getattr(exc, "ranks", []))}))
            raise

    def agreed_stop_decision(self, stop: Mapping[str, Any], epoch: int | None,
                              cause: int | None) -> StopTraining:
        asked = stop["decision"]
        rank = stop["rank"]
        source = asked.get("source") or "?"
        code = asked.get("code")
        rule = f", rule {code}" if code else ""
        when = "now" if epoch is None else f"at the end of epoch {epoch + 1}"
        return StopTraining(
            source=AGREEMENT, code="stop_agreed", cause_seq=cause, epoch=epoch,
            reason=f"rank {rank} asked to stop ({source}{rule}: {asked.get('reason')}); every "
                   f"rank stops {when}",
            evidence={"rank": rank, "ranks": stop["ranks"], "world_size": self.world_size,
                      "source": source, "code": code, "asked_epoch": asked.get("epoch"),
                      "asked_seq": asked.get("seq"), "evidence": asked.get("evidence", {})})


def _asked(decision: Decision | None) -> dict[str, Any]:
    """A rank's stop as sent to the others: its decision, or what stands for one where none
    was made (the loop set ``stop_training``)."""
    if decision is not None:
        return decision.model_dump()
    return {"kind": "stop_training", "source": "?", "reason": "stop_training was set",
            "seq": None}


class DistributedBus(Bus):
    """A :class:`~eventbus.Bus` whose ranks agree (see the module documentation).

    Parameters are :class:`~eventbus.Bus`'s, plus:

    transport:
        How ranks talk; by default a :class:`TorchTransport` over the default process group
        when ``torch.distributed`` is initialised. Without either, the bus is rank 0 of 1 and
        behaves as a plain bus (with a rank log name).
    group, timeout:
        For the default transport: the process group, and seconds to wait for a rank.
    average:
        Metric name patterns averaged across ranks before plugins see an ``epoch_end``
        (default ``("val_*",)``); ``True`` for all, ``False`` for none.
    rank_zero_only:
        Plugin names registered on rank 0 only (default :data:`RANK_ZERO_ONLY`).

    It is a plain bus with a :class:`RankAgreement` as its coordinator
    (:mod:`eventbus.coordination`); ``stop_training`` turns true on every rank together, at an
    epoch's end.
    """

    def __init__(self, plugins: Sequence[object] = (), *, log: Any = None,
                 transport: Transport | None = None, group: Any = None, timeout: float = 60.0,
                 average: bool | str | Sequence[str] | None = ("val_*",),
                 rank_zero_only: Collection[str] = RANK_ZERO_ONLY,
                 run_id: str | None = None, resume: bool = False, **kwargs: Any):
        if transport is None:
            transport = _default_transport(group, timeout)
        agreement = self.agreement = RankAgreement(transport, average=_patterns(average),
                                                   rank_zero_only=frozenset(rank_zero_only))
        self.rank, self.world_size = agreement.rank, agreement.world_size
        if run_id is None and agreement.transport is not None:
            run_id = agreement.exchange({"op": "hello", "run_id": uuid.uuid4().hex[:16],
                                         "initial_epoch": None}, _combine_hello)["run_id"]
        if log is None:
            logs: list[Any] = []
        elif isinstance(log, (str, os.PathLike)) or not isinstance(log, Sequence):
            logs = [log]
        else:
            logs = list(log)
        logs = [rank_log_path(t, self.rank) if isinstance(t, (str, os.PathLike)) else t
                for t in logs]
        # Where to go on: the last epoch every rank finished. A job killed between the ranks'
        # flushes leaves one rank's log an epoch ahead; that epoch is run again everywhere, as
        # a partial epoch is, so the ranks go on together (agreed before any log is written).
        self._at_most: int | None = None
        self._resumed_from: str | None = None  # the log the resume went on from
        if resume and agreement.transport is not None:
            self._at_most = agreement.exchange(
                {"op": "where", "run_id": run_id, "finished": _last_finished(logs)},
                _combine_where)["finished"]
        agreement.resuming = resume
        super().__init__(plugins, log=logs or None, run_id=run_id, resume=resume,
                         coordinator=agreement, **kwargs)
        agreement.bus = self
        agreement.resuming = False
        if resume:
            self._agree_resumed()
        agreement.stop_cleared()

    def _agree_resumed(self) -> None:
        """Each rank resumed from its own log; they agree as at an epoch end: a stop recorded
        on any of them holds for all, and every rank goes on at rank 0's learning rate. A log
        can end between its plugins' decisions at an epoch end and the agreed ones (a rank
        killed while it waited in that agreement): what the others decided is recorded now,
        caused by that epoch end as the agreement's would have been, before the first resumed
        epoch."""
        agreement = self.agreement
        stopped = agreement.local_stop or self.control.stop_training
        if agreement.transport is None:
            if stopped:
                self.control.stop()
            return
        log = self._resumed_from
        mine = self.learning_rate
        answer = agreement.exchange({"op": "resume", "run_id": self.run_id,
                                     "initial_epoch": self.initial_epoch,
                                     "stop": _asked(_recorded_stop(log)) if stopped else None,
                                     "learning_rate": mine}, _combine_hello)
        stop, lr0 = answer.get("stop"), answer.get("learning_rate")
        cause, epoch, at_end = _resumed_at(log) if (stop is not None and not stopped) \
            or lr0 != mine else (None, None, False)
        if stopped:
            self.control.stop()  # this rank's own, in its log
        elif stop is not None:
            # Recorded as a decision, as at an epoch end: applied alone, the log would say no
            # plugin stopped the run, and its replay would go on where the others stop.
            self.decide(agreement.agreed_stop_decision(stop, epoch, cause))
        # Only after an epoch's end: before the first one the ranks' rates may differ in a run
        # never interrupted too (they agree at that epoch's end).
        rate = agreement.agreed_rate(lr0, mine, epoch, cause) if at_end else None
        if rate is not None:
            self.decide(rate)

    def resume(self, log: str | os.PathLike[str], *, at_most: int | None = None) -> bool:
        if self._at_most is not None:
            at_most = self._at_most if at_most is None else min(at_most, self._at_most)
        resumed = super().resume(log, at_most=at_most)
        if resumed:
            self._resumed_from = os.fspath(log)
        return resumed


def _resumed_at(log: str | None) -> tuple[int | None, int | None, bool]:
    """Where a resume of ``log`` went on, read back once it has (its ``resumed`` record
    abandons what came after): the seq of the record it went on after, the epoch that record
    ended, and whether it is an epoch's end (an epoch None and False after a fit's start or
    end; all None and False from no log)."""
    from eventbus.effective import find_kinds, resume_point

    if log is None:
        return None, None, False
    point = resume_point(log)
    if point.seq is None:
        return None, None, False
    if any(r.get("seq") == point.seq for r in find_kinds(log, ("epoch_end",))):
        return point.seq, point.epoch, True
    return point.seq, None, False


def _recorded_stop(log: str | None) -> StopTraining | None:
    """The stop a resumed ``log`` holds for the fit it goes on with (the first since the fit's
    start; a stop without a record, None)."""
    from eventbus.effective import read_effective

    stop = None
    for record in read_effective(log, kinds=("train_begin", "stop_training")) if log else ():
        if record.kind == "train_begin":
            stop = None  # a new fit starts unstopped
        elif stop is None and isinstance(record, StopTraining):
            stop = record
    return stop


def _last_finished(logs: Sequence[Any]) -> int | None:
    """The last epoch this rank's log (the one a resume reads) finished; None without one."""
    from eventbus.effective import resume_point
    from eventbus.log import has_records, resume_source

    source = resume_source(logs)
    if source is None or not has_records(source):
        return None
    try:
        epoch = resume_point(source).epoch
    except Exception:  # noqa: BLE001 - the resume reads it and says what is wrong
        return None
    return epoch if epoch is not None else -1  # a log, no epoch finished


def _combine_where(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The last epoch every rank with a log finished (-1: one finished none). A rank without a
    log does not hold the others back: it cannot go on with them, which the resume's own
    agreement (``_combine_hello``) then says."""
    _in_step(messages)
    epochs = [m["finished"] for m in messages if type(m.get("finished")) is int]
    return {"finished": min(epochs) if epochs else None}


def _default_transport(group: Any, timeout: float) -> Transport | None:
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if not dist.is_available() or not dist.is_initialized():
        return None
    return TorchTransport(group, timeout=timeout)


# --- reading every rank's log --------------------------------------------------------------------

#: A rank as ``rank_log_path`` writes it: ASCII digits, no leading zero (``00`` and ``٠`` would
#: both be rank 0 to ``int``: a file planted beside the logs could stand in for one).
_RANK = r"(0|[1-9][0-9]*)"
_RANK_FILE = re.compile(r"\.rank" + _RANK + r"(\.[^.\n]+)?\Z")


def rank_logs(log: str | os.PathLike[str]) -> dict[int, Path]:
    """The rank logs of a run, by rank: ``log`` is the path given to :class:`DistributedBus`
    (``runs/events.jsonl`` or a ``{rank}`` template), or one rank's log (then only that one)."""
    text = os.fspath(log)
    if "{rank}" in text:
        pattern = re.compile(re.escape(Path(text).name).replace(re.escape("{rank}"), _RANK)
                             + r"\Z")
        folder = Path(text).parent
    else:
        path = Path(text)
        if _RANK_FILE.search(path.name) and path.exists():
            return {int(_RANK_FILE.search(path.name).group(1)): path}  # type: ignore[union-attr]
        folder = path.parent
        pattern = re.compile(re.escape(path.stem) + r"\.rank" + _RANK + re.escape(path.suffix)
                             + r"\Z")
    found: dict[int, Path] = {}
    for name in sorted(os.listdir(folder or ".")) if folder.is_dir() else ():
        m = pattern.match(name)
        if m is None:
            continue
        rank = int(m.group(1))
        if rank in found:  # one name per rank can match; two cannot both be the rank's log
            raise LogError(printable(f"{text}: rank {rank} has two logs, {found[rank]} and "
                                     f"{folder / name}"), path=text)
        found[rank] = folder / name
    if not found:
        raise LogError(f"{text}: no rank logs ({rank_log_path(text, 0)} and so on) found",
                       path=text)
    return dict(sorted(found.items()))


def read_rank_logs(log: str | os.PathLike[str]) -> dict[int, list[Record]]:
    """Every rank's records, by rank; checks they are one run and no rank's log is missing."""
    from eventbus.log import read_log

    return {rank: list(read_log(path)) for rank, path in checked_rank_logs(log).items()}


def checked_rank_logs(log: str | os.PathLike[str]) -> dict[int, Path]:
    """:func:`rank_logs`, checked from their headers to be one run with no rank's log missing."""
    from eventbus.log import read_header

    out = rank_logs(log)
    headers = {rank: read_header(path) for rank, path in out.items()}
    runs = {h.run_id for h in headers.values()}
    if len(runs) > 1:
        raise LogError(f"{log}: the rank logs are from different runs ({sorted(runs)})",
                       path=os.fspath(log))
    worlds = set()
    for rank, header in headers.items():
        world = header.meta.get("world_size")  # type: ignore[attr-defined]
        # A header is untrusted: a count, or nothing (a range of it is never made).
        if world is not None and (type(world) is not int or not 1 <= world <= MAX_INDEX):
            raise LogError(f"{out[rank]}: meta.world_size is {printable(repr(world))[:60]}, "
                           "not a count of ranks", path=os.fspath(out[rank]))
        worlds.add(world)
    if len(out) > 1 and len(worlds) == 1 and None not in worlds:
        world = worlds.pop()
        beyond = [rank for rank in out if rank >= world]
        if beyond:
            raise LogError(f"{log}: the run had {world} ranks but there is a log of "
                           f"{_ranks(beyond)}", path=os.fspath(log))
        if world > len(out):
            missing = list(itertools.islice((r for r in range(world) if r not in out), 10))
            more = world - len(out) - len(missing)
            raise LogError(f"{log}: the run had {world} ranks but {_ranks(missing)}"
                           f"{f' and {more} more' if more else ''} left no log",
                           path=os.fspath(log))
    return out


def _first_stop(log: str | os.PathLike[str] | Iterable[Record]) -> StopTraining | None:
    from eventbus.effective import read_effective

    return next((r for r in read_effective(log, kinds=("stop_training",))
                 if isinstance(r, StopTraining)), None)


@dataclass
class RanksReplay:
    """What :func:`replay_ranks` found: each rank's replay and the agreement they imply."""

    results: dict[int, Any]
    #: The epoch at which the replayed ranks stopped (the earliest), and the ranks that asked.
    stopped_at: int | None
    stopped_by: list[int]
    #: The epoch each rank's log says it stopped at (its own or an agreed stop).
    recorded_stops: dict[int, int | None]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every rank replays to its recorded decisions, and the agreed stop matches the logs."""
        return not self.problems


class AgreedDecisions:
    """A replay input: the decisions a rank's log says the ranks agreed on, at their events.

    What the other ranks answered is, for one rank's replay, as much a recorded fact as its
    observations: this pure plugin hands the recorded agreed decisions back at the
    ``epoch_end`` that caused them, so the replayed learning rate and stop follow the run's.
    Give it last: ``replay(log, plugins=[AgreedDecisions.from_log(log)])``.
    """

    name = AGREEMENT
    side_effects = False

    def __init__(self, decisions: Iterable[Decision]):
        self._by_cause: dict[int | None, list[Decision]] = {}
        for decision in decisions:
            if decision.source == AGREEMENT:
                self._by_cause.setdefault(decision.cause_seq, []).append(decision)

    @classmethod
    def from_log(cls, log: str | os.PathLike[str] | Iterable[Record]) -> AgreedDecisions:
        from eventbus.effective import read_effective

        return cls(r for r in read_effective(log, kinds=DECISION_KINDS) if isinstance(r, Decision))

    @hookimpl
    def on_epoch_end(self, event: Any) -> Any:
        found = self._by_cause.get(event.seq)
        return [d.model_copy(update={"seq": -1}) for d in found] if found else None


def replay_ranks(log: str | os.PathLike[str], **kwargs: Any) -> RanksReplay:
    """Replay every rank's log (``kwargs`` as :func:`eventbus.replay`; ``verify`` on).

    Each rank's replay takes the decisions its log says the ranks agreed on as input
    (:class:`AgreedDecisions`) and is verified against all its recorded decisions, agreed ones
    included. A stop is agreed, so every rank's replay must stop at the same epoch.
    """
    from eventbus.replay import replay

    kwargs.setdefault("verify", True)
    given = list(kwargs.pop("plugins", None) or ())
    paths = checked_rank_logs(log)  # each read as it is replayed: none is held in memory
    results = {rank: replay(path, plugins=[*given, AgreedDecisions.from_log(path)], **kwargs)
               for rank, path in paths.items()}
    stops = {rank: r.stopped_at for rank, r in results.items() if r.stopped_at is not None}
    stopped_at = min(stops.values()) if stops else None
    # Who asked: the ranks whose own plugins (not the agreement) stopped the replay.
    by = sorted(rank for rank, r in results.items()
                if any(d.kind == "stop_training" and d.source != AGREEMENT
                       and d.epoch == stopped_at for d in r.decisions))
    recorded = {}
    for rank, path in paths.items():
        stop = _first_stop(path)
        recorded[rank] = stop.epoch if stop is not None else None
    problems = [f"rank {rank}: {res.mismatch}" for rank, res in results.items()
                if res.mismatch is not None]
    for rank, epoch in recorded.items():
        if epoch != stopped_at or stops.get(rank) != stopped_at:
            problems.append(f"rank {rank}: the log stops at epoch "
                            f"{'-' if epoch is None else epoch + 1}, the replayed agreement at "
                            f"{'-' if stopped_at is None else stopped_at + 1}")
    return RanksReplay(results=results, stopped_at=stopped_at, stopped_by=by,
                       recorded_stops=recorded, problems=problems)


def audit_ranks(log: str | os.PathLike[str]) -> dict[int, Any]:
    """:func:`eventbus.audit.audit` of every rank's log, by rank."""
    from eventbus.audit import audit

    return {rank: audit(path) for rank, path in checked_rank_logs(log).items()}


def render_ranks(audits: Mapping[int, Any], *, decisions: bool = True) -> str:
    """Every rank's audit as text, after a summary of why the run stopped on all ranks."""
    from eventbus.audit import render
    from eventbus.terminal import inline

    lines = [f"{len(audits)} rank log(s)"]
    stops = {rank: a.stop for rank, a in audits.items() if a.stop is not None}
    asked = sorted(r for r, s in stops.items() if s.source != AGREEMENT)
    if stops:
        epochs = sorted({s.epoch for s in stops.values()})
        where = ", ".join(str(e + 1) for e in epochs if e is not None)
        lines.append(f"stopped at epoch {where} on {len(stops)} of {len(audits)} rank(s); asked "
                     f"by {_ranks(asked) if asked else 'no rank in these logs'}")
        for rank in asked:
            s = stops[rank]
            rule = f", rule {inline(s.code)}" if s.code else ""
            lines.append(f"  rank {rank}: {inline(s.source)}{rule}: {inline(s.reason)}")
    else:
        lines.append("no rank was stopped by a decision")
    for rank, result in audits.items():
        lines.append("")
        lines.append(f"== rank {rank} ==")
        lines.append(render(result, decisions=decisions))
    return "\n".join(lines)

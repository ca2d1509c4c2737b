"""Issue 17, target 2: the bus's cost around a small torch step, and its device-sync count.

Run: ``python benchmarks/bench_torch_step.py`` (``--quick``: under a minute; ``--smoke``: a
second or two). A small MLP's forward, backward and SGD step on the CPU (one thread), alone and
with a bus of five plugins (EarlyStopping, ReduceLROnPlateau, TerminateOnNaN, History,
CSVLogger), a JSON Lines log and ``TorchModel``, in interleaved rounds; the loss goes to the
bus three ways: as the tensor, through ``integrations.torch.scalars``, and as ``loss.item()``.

Then the conversions: ``Tensor.item``, ``tolist``, ``cpu``, ``numpy`` and ``__float__`` are
wrapped with counters for a run of batches (here, in the benchmark, not in the library), and
the count per batch is printed, with what the epoch end adds. On a GPU each such call on a
loss waits for the device: the target is none per batch (issue 17: convert when a subscriber
reads the value, or in bulk at a flush point), and at most 3% added to the step.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import count
from pathlib import Path
from typing import Any

import torch
from _common import Bus, median, modes, table  # before eventbus: this tree first

from eventbus.integrations.torch import TorchModel, scalars
from plugins import CSVLogger, EarlyStopping, History, ReduceLROnPlateau, TerminateOnNaN

CONVERSIONS = ("item", "tolist", "cpu", "numpy", "__float__")


def model() -> tuple[Any, Any, Callable[[], Any]]:
    """An MLP (32 -> 64 -> 10, batch 32) and one training step returning the loss: small
    enough that the step is mostly torch's own per-op overhead (issue 17 measured ~200 µs)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(32, 32), torch.randint(0, 10, (32,))
    loss_fn = torch.nn.functional.cross_entropy

    def step() -> Any:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    return net, opt, step


def five(tmp: Path, tag: str) -> list[Any]:
    return [EarlyStopping(monitor="loss", patience=10**6),
            ReduceLROnPlateau(monitor="loss", patience=10**6), TerminateOnNaN(), History(),
            CSVLogger(str(tmp / f"{tag}.csv"))]


def loop(tmp: Path, how: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """One training step, alone (``how == "bare"``) or with its batch published to a bus."""
    net, opt, step = model()
    if how == "bare":
        return step, lambda: None
    bus = Bus(five(tmp, how), model=TorchModel(net, opt), log=tmp / f"{how}.jsonl")
    bus.train_begin({"epochs": 1})
    bus.epoch_begin(0)
    convert: Callable[[Any], Any] = {
        "tensor": lambda loss: {"loss": loss},
        "scalars": lambda loss: scalars({"loss": loss}),
        "item": lambda loss: {"loss": loss.item()},
    }[how]
    begin, end, batch = bus.batch_begin, bus.batch_end, count()

    def one() -> None:
        i = next(batch)
        begin(i)
        end(i, convert(step()))

    return one, bus.close


@contextmanager
def counting() -> Iterator[Counter[str]]:
    """Count calls of the tensor methods that copy a value to the host (a device sync on GPU)."""
    counts: Counter[str] = Counter()
    saved = {name: torch.Tensor.__dict__.get(name) for name in CONVERSIONS}

    def wrap(name: str) -> Any:
        original = getattr(torch.Tensor, name)

        def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return original(self, *args, **kwargs)
        return counted

    for name in CONVERSIONS:
        setattr(torch.Tensor, name, wrap(name))
    try:
        yield counts
    finally:
        for name, old in saved.items():
            if old is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, old)


def conversions(tmp: Path, batches: int) -> list[list[Any]]:
    rows = []
    for how in ("bare", "tensor", "scalars", "item"):
        net, opt, step = model()
        bus = None
        if how != "bare":
            bus = Bus(five(tmp, f"count-{how}"), model=TorchModel(net, opt),
                      log=tmp / f"count-{how}.jsonl")
            bus.train_begin({"epochs": 1})
            bus.epoch_begin(0)
        with counting() as counts:
            for i in range(batches):
                loss = step()
                if bus is not None:
                    bus.batch_begin(i)
                    logs = ({"loss": loss} if how == "tensor" else scalars({"loss": loss})
                            if how == "scalars" else {"loss": loss.item()})
                    bus.batch_end(i, logs)
            per_batch = dict(counts)
            if bus is not None:
                bus.epoch_end(0, {"loss": loss})
        at_end = {k: counts[k] - per_batch.get(k, 0) for k in counts if counts[k] -
                  per_batch.get(k, 0)}
        if bus is not None:
            bus.train_end()
            bus.close()
        total = sum(per_batch.values())
        rows.append([how, f"{total / batches:.2f}",
                     ", ".join(f"{k} {v / batches:.2f}" for k, v in sorted(per_batch.items()))
                     or "none", ", ".join(f"{k} {v}" for k, v in sorted(at_end.items())) or "none"])
    return rows


def between_steps(tmp: Path, blocks: int, block: int) -> list[list[Any]]:
    """What a piece of work run after each step costs the step: one model, one optimizer, and
    for each piece a block of ``block`` steps, each followed by it, against a block of bare
    steps; the blocks in turn, ``blocks`` times. Each row: the piece's own time (alone, in a
    loop of its own) and what it adds to the step (the median of its block over the bare block
    beside it). The five plugins, as above; every bus is in an epoch, the loss given as
    ``loss.item()`` (the bare step calls it too)."""
    import timeit

    import orjson

    net, opt, step = model()

    def bus_of(plugins: list[Any], log: Path | None) -> Any:
        bus = Bus(plugins, model=TorchModel(net, opt), log=log)
        bus.train_begin({"epochs": 1})
        bus.epoch_begin(0)
        return bus

    record = {"v": 1, "run_id": "0123456789abcdef", "seq": 5, "kind": "batch_end",
              "time": 1.7e9, "logs": {"loss": 0.5}, "epoch": 0, "batch": 3, "step": 3}
    lines = bytearray()

    def encode_two() -> None:
        lines.extend(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        lines.extend(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        if len(lines) > 1 << 20:
            del lines[:]

    def python_2us() -> float:
        total = 0.0
        for k in range(70):
            total += k
        return total

    batch = count()

    def publishing(bus: Any) -> Callable[[], None]:
        begin, end = bus.batch_begin, bus.batch_end

        def publish() -> None:
            i = next(batch)
            begin(i)
            end(i, {"loss": 0.5})
        return publish

    pieces: dict[str, Callable[[], Any]] = {
        "2 µs of plain Python (a loop of additions)": python_2us,
        "two `orjson.dumps` of a batch record, appended to a buffer": encode_two,
        "a bus with nothing on it (both calls return at once)": publishing(bus_of([], None)),
        "a bus with a JSON Lines log only": publishing(bus_of([], tmp / "between-log.jsonl")),
        "a bus with the five plugins, no log": publishing(bus_of(five(tmp, "between"), None)),
        "a bus with the five plugins and a JSON Lines log": publishing(
            bus_of(five(tmp, "between-all"), tmp / "between-all.jsonl")),
    }
    alone = {label: min(timeit.repeat(piece, number=2_000, repeat=5)) / 2_000 * 1e6
             for label, piece in pieces.items()}

    def bare() -> None:
        step().item()

    runs: dict[str, Callable[[], None]] = {"bare": bare}
    for label, piece in pieces.items():
        def with_piece(piece: Callable[[], Any] = piece) -> None:
            step().item()
            piece()
        runs[label] = with_piece
    for run in runs.values():
        for _ in range(block):
            run()
    samples: dict[str, list[float]] = {label: [] for label in runs}
    gc.collect()
    gc.freeze()
    clock = time.perf_counter_ns
    for _ in range(blocks):
        for label, run in runs.items():
            start = clock()
            for _ in range(block):
                run()
            samples[label].append((clock() - start) / block / 1e3)
    gc.unfreeze()
    bare_us = median(samples["bare"])
    rows = [["the step alone (and `loss.item()`)", "", bare_us, "", ""]]
    for label in pieces:
        over = median(a / b for a, b in zip(samples[label], samples["bare"])) - 1
        rows.append([label, alone[label], median(samples[label]), f"{over * bare_us:+.1f}",
                     f"{100 * over:+.1f}%"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes(parser)
    args = parser.parse_args(argv)
    chunk, rounds = (20, 2) if args.smoke else (300, 9) if args.quick else (1_000, 15)
    torch.set_num_threads(1)  # a shared machine: one thread keeps the step's time steadier
    with tempfile.TemporaryDirectory(prefix="eventbus-torch-") as name:
        tmp = Path(name)
        runs, closers = {}, []
        for how in ("bare", "tensor", "scalars", "item"):
            runs[how], close = loop(tmp, how)
            closers.append(close)
        samples: dict[str, list[float]] = {k: [] for k in runs}
        for run in runs.values():
            for _ in range(max(chunk // 5, 5)):
                run()
        gc.collect()
        gc.freeze()  # torch's objects are never collected: each collect below stays cheap
        clock = time.perf_counter_ns
        for _ in range(rounds):
            gc.collect()
            for _ in range(chunk):  # the variants step by step, so drift hits them alike
                for how, run in runs.items():
                    start = clock()
                    run()
                    samples[how].append((clock() - start) / 1e3)
        gc.unfreeze()
        for close in closers:
            close()
        bare = median(samples["bare"])
        rows = [["step alone", bare, "", ""]]
        for how, label in (("tensor", "the loss tensor"), ("scalars", "`scalars({...})`"),
                           ("item", "`loss.item()`")):
            added = median(samples[how]) - bare
            rows.append([f"step + bus, five plugins, JSON Lines; logs get {label}",
                         median(samples[how]), f"{added:+.1f}", f"{100 * added / bare:+.1f}%"])
        table("A small torch step (MLP, CPU, one thread) with the bus around it",
              ["", "µs per batch (median)", "added µs", "added"], rows,
              f"(medians over {rounds * chunk:,} steps of each, taken in turn step by step; "
              "target: at most +3%)")
        between = between_steps(tmp, *((2, 5) if args.smoke else (40, 50) if args.quick
                                       else (80, 50)))
        table("What a piece of work after each step costs the step (one model; blocks of "
              "steps with the piece and without it, in turn)",
              ["run after each step", "its own µs (alone)", "µs per step (median)",
               "added to the step, µs", "added"], between,
              "(the bus's own time, alone, against what it adds between two steps)")
        count_rows = conversions(tmp, 20 if args.smoke else 200)
        table("Host conversions of tensors per batch (each a device sync on a GPU), counted by "
              "wrapping torch.Tensor's methods in the benchmark (with `loss.item()` the one "
              "conversion is the loop's own)",
              ["logs given as", "per batch", "by method, per batch", "added by epoch_end"],
              count_rows, "(target: 0 per batch with the tensor given; \"bare\" is the step "
              "alone)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

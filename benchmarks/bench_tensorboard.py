"""Cost per scalar: tensorboardX's ``SummaryWriter.add_scalar`` against ``TensorBoardWriter``.

    python benchmarks/bench_tensorboard.py [--scalars 20000]

Three numbers per writer: the time the calling (training) thread spends per scalar, and the
total time per scalar until everything is on disk (the writer closed). The sink is measured
twice: one scalar per event (the worst case) and four per event (a batch's loss, accuracy and
their validation twins: how the TensorBoard plugin writes). Exits 1 if the sink is not at least
5x cheaper than ``add_scalar`` in total time with one scalar per event.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sinks.tensorboard import TensorBoardWriter  # noqa: E402


def bench_add_scalar(directory: str, n: int) -> tuple[float, float]:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(directory)
    start = time.perf_counter()
    for step in range(n):
        writer.add_scalar("batch_loss", 1.0 / (step + 1), step)
    caller = time.perf_counter() - start
    writer.close()
    return caller / n, (time.perf_counter() - start) / n


def bench_sink(directory: str, n: int, per_event: int) -> tuple[float, float]:
    names = ["loss", "accuracy", "val_loss", "val_accuracy"][:per_event]
    sink = TensorBoardWriter(directory)
    events = n // per_event
    now = time.time()
    start = time.perf_counter()
    for step in range(events):
        value = 1.0 / (step + 1)
        sink.scalars("train", {name: value for name in names}, step, now, "batch_")
    caller = time.perf_counter() - start
    if not sink.close(timeout=600):
        raise SystemExit("the sink did not finish writing")
    total = time.perf_counter() - start
    return caller / (events * per_event), total / (events * per_event)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scalars", type=int, default=20000)
    args = parser.parse_args(argv)
    n = args.scalars
    with tempfile.TemporaryDirectory() as tmp:
        base_caller, base_total = bench_add_scalar(f"{tmp}/add_scalar", n)
        print(f"SummaryWriter.add_scalar      caller {base_caller * 1e6:7.2f} us/scalar   "
              f"total {base_total * 1e6:7.2f} us/scalar")
        ratio = 0.0
        for per_event in (1, 4):
            caller, total = bench_sink(f"{tmp}/sink{per_event}", n, per_event)
            print(f"TensorBoardWriter, {per_event}/event   caller {caller * 1e6:7.2f} us/scalar   "
                  f"total {total * 1e6:7.2f} us/scalar   "
                  f"x{base_caller / caller:6.1f} caller, x{base_total / total:5.1f} total")
            if per_event == 1:
                ratio = base_total / total
    print(f"ratio (add_scalar / sink, total time, one scalar per event): {ratio:.1f}x")
    return 0 if ratio >= 5 else 1


if __name__ == "__main__":
    raise SystemExit(main())

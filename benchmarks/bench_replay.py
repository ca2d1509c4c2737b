"""Reading a long run back: replay, resume and audit, against reading the log, in this process.

Run: ``python benchmarks/bench_replay.py`` (``--quick`` for a smaller run). Records a run of
``epochs x batches`` training batches (a ``batch_begin`` and a ``batch_end`` each) with
EarlyStopping, ReduceLROnPlateau, TerminateOnNaN and History, to JSON Lines and Parquet, then
times each way of reading it back and prints microseconds per record and the ratio to the
baseline: ``iter_jsonl_dicts``, the checked dicts every JSON Lines reader starts from. A second
pass measures the peak of Python memory (tracemalloc) of each, which must not grow with the
run. Nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from eventbus import Bus, read_log, replay
from eventbus.audit import audit
from eventbus.jsonl import iter_jsonl_dicts
from plugins import EarlyStopping, History, ReduceLROnPlateau, TerminateOnNaN


def plugins() -> list[object]:
    return [EarlyStopping(patience=1000), ReduceLROnPlateau(patience=5), TerminateOnNaN(),
            History()]


def record_run(directory: Path, epochs: int, batches: int) -> tuple[Path, Path, int]:
    jsonl, parquet = directory / "events.jsonl", directory / "events.parquet"
    with Bus(plugins(), log=[jsonl, parquet], learning_rate=0.1) as bus:
        bus.train_begin({"epochs": epochs})
        for epoch in range(epochs):
            bus.epoch_begin(epoch)
            for batch in range(batches):
                bus.batch_begin(batch, {"size": 32})
                bus.batch_end(batch, {"loss": 1.0 / (batch + 1), "acc": 0.5})
            bus.epoch_end(epoch, {"loss": 0.5, "val_loss": 0.5 + epoch % 7 / 100})
        bus.train_end()
    return jsonl, parquet, bus.seq


def resume(jsonl: Path, directory: Path) -> Callable[[], object]:
    copy = directory / "resumed.jsonl"

    def run() -> object:
        shutil.copyfile(jsonl, copy)  # a fresh copy each time: resume appends to the log
        Bus(plugins(), log=copy, resume=True).close()
        return None
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run")
    args = parser.parse_args()
    epochs, batches = (10, 5_000) if args.quick else (50, 10_000)
    directory = Path(tempfile.mkdtemp(prefix="eventbus-bench-replay-"))
    try:
        jsonl, parquet, records = record_run(directory, epochs, batches)
        runs: dict[str, Callable[[], object]] = {
            "JSON Lines read as dicts (baseline)": lambda: sum(1 for _ in iter_jsonl_dicts(jsonl)),
            "JSON Lines read as typed records": lambda: sum(1 for _ in read_log(jsonl)),
            "Parquet read as typed records": lambda: sum(1 for _ in read_log(parquet)),
            "replay(verify=True), JSON Lines": lambda: replay(jsonl, verify=True),
            "replay(verify=True), Parquet": lambda: replay(parquet, verify=True),
            "Bus(resume=True), JSON Lines": resume(jsonl, directory),
            "audit, JSON Lines": lambda: audit(jsonl),
        }
        best = dict.fromkeys(runs, float("inf"))
        for _ in range(2):  # interleaved rounds: this machine's speed drifts
            for label, run in runs.items():
                gc.collect()
                start = time.perf_counter()
                run()
                best[label] = min(best[label], time.perf_counter() - start)
        peaks = {}
        for label, run in runs.items():
            gc.collect()
            tracemalloc.start()
            try:
                run()
                peaks[label] = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        size = jsonl.stat().st_size
        baseline = best["JSON Lines read as dicts (baseline)"]
        print(f"\nreading a run back: {records:,} records ({epochs} epochs x {batches:,} "
              f"batches), JSON Lines {size / 2**20:.0f} MiB\n")
        print(f"  {'':40} {'s':>6} {'us/record':>10} {'x baseline':>11} {'peak MiB':>9}")
        for label in runs:
            print(f"  {label:40} {best[label]:6.2f} {best[label] / records * 1e6:10.2f} "
                  f"{best[label] / baseline:10.2f}x {peaks[label] / 2**20:9.1f}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Issue 17, target 3: reading logs against the floors, in one process; peak memory per reader.

Run: ``python benchmarks/bench_read.py`` (about 200,000 records; ``--records 1000000`` for the
issue's million; ``--quick``: fewer rounds; ``--smoke``: a tiny log). A run of batches (a
``batch_begin`` and a ``batch_end`` each, two metrics, bench_replay.py's four plugins) is
recorded by the bus to JSON Lines and Parquet, then read back each way in interleaved rounds:

- JSON Lines as typed records (``read_log``) and as dicts (``iter_jsonl_dicts``), against a
  bare ``orjson.loads`` loop over the same file's lines;
- Parquet as typed records (``read_log``), against pyarrow's own ``to_pylist`` over the file's
  record batches (streamed, as the reader streams);
- ``Bus(resume=True)`` against ``replay(verify=True)`` (the copy of the log that resume
  appends to is made outside the timing), and audit.

Peak memory: each reader again in a fresh process: the peak of Python's allocations
(tracemalloc), and the growth of the peak resident set (``ru_maxrss`` after minus before, so
the imports are not counted; it counts pyarrow's buffers, but only above the imports' peak).

Targets (issue 17): typed JSON Lines >= 1.2 M records/s and <= 1.3x the bare loop; typed
Parquet <= 1.2x ``to_pylist``; resume no slower than replay with verify; peak memory flat.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import orjson
import pyarrow.parquet as pq
from _common import ROOT, median, modes, table  # before eventbus: this tree first

from eventbus import Bus, RunWarning, read_log, replay
from eventbus.audit import audit
from eventbus.jsonl import iter_jsonl_dicts

BENCH = Path(__file__).resolve().parent


def readers(jsonl: Path, parquet: Path, scratch: Path) -> dict[str, Callable[[], object]]:
    """Each way of reading, as a function that reads the whole log once."""
    from bench_replay import plugins

    copy = scratch / "resumed.jsonl"

    def bare_loop() -> int:
        loads = orjson.loads
        with open(jsonl, "rb", buffering=1 << 20) as source:
            return sum(1 for line in source if loads(line))

    # The log is one file, or a directory of segment files (docs/log-format.md).
    files = sorted(parquet.glob("*.parquet")) if parquet.is_dir() else [parquet]

    def to_pylist() -> int:
        return sum(len(batch.to_pylist()) for file in files
                   for batch in pq.ParquetFile(file).iter_batches())

    def resume() -> None:
        # The benchmark's run ended its fit: resuming it says so (a RunWarning), which is
        # not what is measured.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RunWarning)
            Bus(plugins(), log=copy, resume=True).close()

    resume.prepare = lambda: shutil.copyfile(jsonl, copy)  # type: ignore[attr-defined]
    return {
        "bare orjson.loads loop": bare_loop,
        "JSON Lines, dicts (iter_jsonl_dicts)": lambda: sum(1 for _ in iter_jsonl_dicts(jsonl)),
        "JSON Lines, typed (read_log)": lambda: sum(1 for _ in read_log(jsonl)),
        "pyarrow to_pylist": to_pylist,
        "Parquet, typed (read_log)": lambda: sum(1 for _ in read_log(parquet)),
        "replay(verify=True), JSON Lines": lambda: replay(jsonl, verify=True),
        "Bus(resume=True), JSON Lines": resume,
        "audit, JSON Lines": lambda: audit(jsonl),
    }


# A reader in a fresh process: the growth of the peak resident set while it reads.
PEAK = r"""
import resource, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from pathlib import Path
import bench_read
runs = bench_read.readers(Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
run = runs[sys.argv[6]]
getattr(run, "prepare", lambda: None)()
import tracemalloc
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
run()
python_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(python_peak / 2**20, (after - before) / 1024)
"""


def peak_mib(label: str, jsonl: Path, parquet: Path, scratch: Path) -> tuple[float, float]:
    """The peak of Python's allocations (tracemalloc) and the growth of the peak resident set
    (which counts pyarrow's buffers too, but only above the peak the imports reached)."""
    done = subprocess.run([sys.executable, "-c", PEAK, str(ROOT), str(BENCH), str(jsonl),
                           str(parquet), str(scratch), label],
                          capture_output=True, text=True, check=True, cwd=scratch)
    python_peak, rss = done.stdout.strip().splitlines()[-1].split()
    return float(python_peak), float(rss)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes(parser)
    parser.add_argument("--records", type=int, default=200_000,
                        help="about this many records (default 200,000; the issue: 1000000)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time by the process's CPU time, not the wall clock: steadier on a "
                             "loaded machine, where other processes take turns with this one "
                             "(resume's writes to disk then count less than they take)")
    args = parser.parse_args(argv)
    records = 600 if args.smoke else args.records
    rounds = 2 if args.smoke else 3 if args.quick else 5
    batches = min(10_000, max(records // 2, 1))
    epochs = max(records // (2 * batches), 1)
    from bench_replay import record_run

    scratch = Path(tempfile.mkdtemp(prefix="eventbus-read-"))
    try:
        jsonl, parquet, _ = record_run(scratch, epochs, batches)
        runs = readers(jsonl, parquet, scratch)
        n = sum(1 for _ in open(jsonl, "rb"))
        samples: dict[str, list[float]] = {label: [] for label in runs}
        clock = time.process_time if args.cpu_time else time.perf_counter
        # What is alive now is never collected again: each collect below stays cheap even in a
        # process that holds torch or Keras (a full collect there takes most of a second).
        gc.collect()
        gc.freeze()
        try:
            for _ in range(rounds):
                for label, run in runs.items():
                    getattr(run, "prepare", lambda: None)()
                    gc.collect()
                    start = clock()
                    run()
                    samples[label].append(clock() - start)
        finally:
            gc.unfreeze()
        peaks = {}
        if not (args.smoke or args.no_memory):
            for label in runs:
                peaks[label] = peak_mib(label, jsonl, parquet, scratch)

        def row(label: str, base: str | None) -> list[object]:
            s = median(samples[label])
            x = "" if base is None else \
                f"{median(a / b for a, b in zip(samples[label], samples[base])):.2f}x"
            best = "" if base is None else f"{min(samples[label]) / min(samples[base]):.2f}x"
            return [label, f"{n / s / 1e6:.2f}", f"{n / min(samples[label]) / 1e6:.2f}", x, best,
                    f"{peaks[label][0]:.1f}" if label in peaks else "",
                    f"{peaks[label][1]:.1f}" if label in peaks else ""]

        size = jsonl.stat().st_size / 2**20
        header = ["", "M records/s (median)", "(best)", "x the baseline (median of rounds)",
                  "(best)", "peak MiB (tracemalloc)",
                  "peak RSS growth, MiB"]
        note = (f"(medians of {rounds} interleaved rounds; {n:,} records, {size:.0f} MiB of "
                f"JSON Lines{'; CPU time' if args.cpu_time else ''})")
        table("JSON Lines: typed and dict reading against a bare `orjson.loads` loop", header,
              [row("bare orjson.loads loop", None),
               row("JSON Lines, dicts (iter_jsonl_dicts)", "bare orjson.loads loop"),
               row("JSON Lines, typed (read_log)", "bare orjson.loads loop")],
              note + " targets: typed >= 1.2 M/s and <= 1.3x")
        table("Parquet: typed reading against pyarrow's `to_pylist`", header,
              [row("pyarrow to_pylist", None),
               row("Parquet, typed (read_log)", "pyarrow to_pylist")], note + " target <= 1.2x")
        table("Resume against replay with verify (and audit), JSON Lines", header,
              [row("replay(verify=True), JSON Lines", None),
               row("Bus(resume=True), JSON Lines", "replay(verify=True), JSON Lines"),
               row("audit, JSON Lines", "replay(verify=True), JSON Lines")],
              note + " target: resume <= 1.0x; peaks flat")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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

``--ladder``: where the typed JSON Lines reader's time goes instead, its loop rebuilt step by
step in this file, each step adding to the last, against the bare loop in the same rounds.
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
from _common import ROOT, median, modes, table  # before eventbus: this tree first

from eventbus import Bus, RunWarning, read_log, replay
from eventbus.audit import audit
from eventbus.jsonl import iter_jsonl_dicts, read_jsonl
from eventbus.records import BATCH_KINDS, KINDS, SCHEMA_VERSION, TRUSTED, set_model_dict

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


def ladder(jsonl: Path) -> dict[str, Callable[[], object]]:
    """The typed JSON Lines reader's loop, a step at a time, each step adding to the one
    before: what each of its per-line tasks costs (no error paths: the log is whole)."""
    loads = orjson.loads
    version = SCHEMA_VERSION
    # kind -> (the trusted class, its field count, whether it has epoch, whether step)
    plan = {kind: (TRUSTED[KINDS[kind]], len(KINDS[kind].model_fields),
                   "epoch" in KINDS[kind].model_fields, "step" in KINDS[kind].model_fields)
            for kind in BATCH_KINDS}
    other = (None, -1, False, False)
    new, set_fields = object.__new__, set_model_dict

    def lines() -> Iterator[list[bytes]]:
        """The file's lines, 256 KiB of them at a time (as the reader reads)."""
        rest = b""
        with open(jsonl, "rb") as file:
            while chunk := file.read(1 << 18):
                data = rest + chunk
                cut = data.rfind(b"\n") + 1
                rest = data[cut:]
                yield data[:cut].split(b"\n")[:-1]

    def dicts() -> Iterator[dict[str, Any]]:
        for piece in lines():
            yield from map(loads, piece)

    def looped() -> Iterator[dict[str, Any]]:
        for piece in lines():
            for line in piece:
                yield loads(line)

    def envelope() -> Iterator[dict[str, Any]]:
        previous = -1
        for piece in lines():
            for line in piece:
                record = loads(line)
                seq = record["seq"]
                if record["v"] is not version or type(seq) is not int or seq <= previous:
                    raise AssertionError(line)
                previous = seq
                plan.get(record["kind"], other)
                yield record

    def built() -> Iterator[Any]:
        previous = -1
        for piece in lines():
            for line in piece:
                record = loads(line)
                seq = record["seq"]
                if record["v"] is not version or type(seq) is not int or seq <= previous:
                    raise AssertionError(line)
                previous = seq
                known = plan.get(record["kind"], other)
                if known[0] is None:
                    yield record  # validated by the reader: a few records a run
                    continue
                event = new(known[0])
                set_fields(event, record)
                yield event

    def checked() -> Iterator[Any]:
        previous = -1
        for piece in lines():
            for line in piece:
                record = loads(line)
                seq = record["seq"]
                if record["v"] is not version or type(seq) is not int or seq <= previous:
                    raise AssertionError(line)
                previous = seq
                cls, fields, epoch, step = plan.get(record["kind"], other)
                if (len(record) == fields and type(record["batch"]) is int
                        and type(record["time"]) is float and type(record["run_id"]) is str
                        and type(record["logs"]) is dict
                        and (not epoch or record["epoch"] is None
                             or type(record["epoch"]) is int)
                        and (not step or type(record["step"]) is int)):
                    event = new(cls)
                    set_fields(event, record)
                    yield event
                    continue
                yield record

    def bare_loop() -> int:
        with open(jsonl, "rb", buffering=1 << 20) as source:
            return sum(1 for line in source if loads(line))

    return {
        "bare orjson.loads loop": bare_loop,
        "pieces, split, loads through map: no Python per line": lambda: sum(1 for _ in dicts()),
        "pieces, split, a loop calling loads per line": lambda: sum(1 for _ in looped()),
        "+ version and seq checks, kind looked up": lambda: sum(1 for _ in envelope()),
        "+ trusted record built (no shape checks)": lambda: sum(1 for _ in built()),
        "+ exact-shape checks (the reader's fast path)": lambda: sum(1 for _ in checked()),
        "read_jsonl (the reader)": lambda: sum(1 for _ in read_jsonl(jsonl)),
        "read_log (read_jsonl through read_log)": lambda: sum(1 for _ in read_log(jsonl)),
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
    parser.add_argument("--ladder", action="store_true",
                        help="time the typed JSON Lines reader's loop step by step instead")
    args = parser.parse_args(argv)
    records = 600 if args.smoke else args.records
    rounds = 2 if args.smoke else 3 if args.quick else 5
    batches = min(10_000, max(records // 2, 1))
    epochs = max(records // (2 * batches), 1)
    from bench_replay import record_run

    scratch = Path(tempfile.mkdtemp(prefix="eventbus-read-"))
    try:
        jsonl, parquet, _ = record_run(scratch, epochs, batches)
        runs = ladder(jsonl) if args.ladder else readers(jsonl, parquet, scratch)
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
        if not (args.smoke or args.no_memory or args.ladder):
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

        if args.ladder:
            base = "bare orjson.loads loop"
            table("Typed JSON Lines, step by step (each step adds to the one before)",
                  ["", "M records/s (median)", "(best)", "x the baseline (median of rounds)",
                   "(best)"],
                  [row(label, None if label == base else base)[:5] for label in runs],
                  f"(medians of {rounds} interleaved rounds; {n:,} records"
                  f"{'; CPU time' if args.cpu_time else ''})")
            return 0
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

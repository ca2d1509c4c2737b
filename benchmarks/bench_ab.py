"""Two versions of the bus side by side: the ratios bench_core.py reports, before and after.

Run: ``python benchmarks/bench_ab.py [REF]`` (REF: a git commit or branch, ``HEAD~1`` by
default; ``--quick`` for a smaller run). The code at REF is checked out in a temporary git
worktree, and the two trees are measured in turns, each in a fresh process that imports only
its own tree, round after round, so the machine's drift hits both alike. Each process reports:

- ``batch_end`` with 12 metric-reading subscribers and a JSON Lines log, as a ratio to the
  hand-written floor measured in the same process (bench_core.py's floor);
- ``batch_end`` with a JSON Lines log alone, and with a Parquet log alone, as ratios to the
  same floor (each log's own path through the bus);
- ``batch_begin`` that no plugin and no log takes, in microseconds.

The medians over rounds are printed with the change from REF to the working tree. Nothing here
is a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# One measurement, run with only one tree importable: the bus against its floor, interleaved.
WORKER = r"""
import gc, json, sys, tempfile, time, os
sys.path.insert(0, sys.argv[1])
chunk, rounds = int(sys.argv[2]), int(sys.argv[3])
import orjson
from eventbus import Bus, Plugin, hookimpl
assert os.path.dirname(__import__("eventbus").__file__).startswith(sys.argv[1])

LOGS = {"loss": 0.6931, "acc": 0.5}


class Counter(Plugin):
    def __init__(self):
        self.total = 0.0

    @hookimpl
    def on_batch_end(self, event):
        self.total += event.logs["loss"]


class _Event:
    pass


tmp = tempfile.mkdtemp()
subs = [Counter() for _ in range(12)]
# The hook itself: since plugins are Keras callbacks too, a hook at a Keras method's name is
# kept under _bus_<name> (older trees: the method itself).
calls = [getattr(s, "_bus_on_batch_end", s.on_batch_end) for s in subs]
out = open(os.path.join(tmp, "floor.jsonl"), "wb", buffering=1 << 20)
dumps, new, setattr_, now = orjson.dumps, object.__new__, object.__setattr__, time.time


def floor(n):
    for i in range(n):
        record = {"v": 1, "run_id": "r", "seq": i, "kind": "batch_end", "time": now(),
                  "epoch": 0, "batch": i, "step": i, "logs": dict(LOGS)}
        event = new(_Event)
        setattr_(event, "__dict__", record)
        for call in calls:
            call(event)
        out.write(dumps(record, option=orjson.OPT_APPEND_NEWLINE))


bus = Bus([Counter() for _ in range(12)], log=os.path.join(tmp, "bus.jsonl"),
          learning_rate=0.01)
bus.train_begin({"epochs": 1})
bus.epoch_begin(0)


def ours(n):
    end = bus.batch_end
    for i in range(n):
        end(i, LOGS)


idle_bus = Bus([])


def idle(n):
    begin = idle_bus.batch_begin
    for i in range(n):
        begin(i, LOGS)


def log_only(suffix):
    # A log and nothing else: the batch path's cost to each log format.
    log_bus = Bus(log=os.path.join(tmp, "only" + suffix))
    log_bus.train_begin({"epochs": 1})
    log_bus.epoch_begin(0)
    closers.append(log_bus.close)

    def run(n):
        end = log_bus.batch_end
        for i in range(n):
            end(i, LOGS)
    return run


closers = []
runs = {"floor": floor, "bus": ours, "idle": idle, "jsonl": log_only(".jsonl"),
        "parquet": log_only(".parquet")}
best = dict.fromkeys(runs, float("inf"))
for run in runs.values():
    run(1000)
for _ in range(rounds):
    for label, run in runs.items():
        gc.collect()
        start = time.perf_counter()
        run(chunk)
        best[label] = min(best[label], (time.perf_counter() - start) / chunk * 1e6)
bus.close()
for close in closers:
    close()
out.close()
print(json.dumps({"ratio": best["bus"] / best["floor"], "idle_us": best["idle"],
                  "bus_us": best["bus"], "floor_us": best["floor"],
                  "jsonl": best["jsonl"] / best["floor"],
                  "parquet": best["parquet"] / best["floor"]}))
"""


def measure(tree: Path, chunk: int, rounds: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", WORKER, str(tree), str(chunk), str(rounds)],
                          capture_output=True, text=True, check=True, env=env, cwd=tree)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref", nargs="?", default="HEAD~1",
                        help="the version to compare the working tree with (default HEAD~1)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--rounds", type=int, default=None, help="process pairs to run")
    args = parser.parse_args()
    pairs = args.rounds or (5 if args.quick else 15)
    chunk, inner = (4_000, 6) if args.quick else (10_000, 10)
    with tempfile.TemporaryDirectory(prefix="eventbus-ab-") as scratch:
        before = Path(scratch) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(before), args.ref],
                       cwd=ROOT, check=True)
        try:
            results: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
            for i in range(pairs):
                order = [("before", before), ("after", ROOT)]
                for label, tree in order if i % 2 == 0 else order[::-1]:
                    results[label].append(measure(tree, chunk, inner))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT,
                           check=False)
    print(f"{args.ref} (before) against the working tree (after): medians of {pairs} "
          "processes each, alternated\n")
    print(f"  {'':44} {'before':>9} {'after':>9} {'change':>8}")
    for key, label in (("ratio", "batch_end, 12 subscribers, JSONL / floor"),
                       ("bus_us", "  batch_end, µs"), ("floor_us", "  the floor, µs"),
                       ("jsonl", "batch_end, a JSONL log alone / floor"),
                       ("parquet", "batch_end, a Parquet log alone / floor"),
                       ("idle_us", "batch_begin nobody takes, no log, µs")):
        a = statistics.median(r[key] for r in results["before"])
        b = statistics.median(r[key] for r in results["after"])
        print(f"  {label:44} {a:9.3f} {b:9.3f} {100 * (b / a - 1):+7.1f}%")


if __name__ == "__main__":
    main()

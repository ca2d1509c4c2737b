"""Where a ``batch_end`` spends its time: a ladder of the batch path, attribute reads, cProfile.

Run: ``python benchmarks/profile_batch.py`` (``--quick``; ``--smoke``: a second or two).

1. A ladder, built by hand, each step adding one piece of work a recording bus does to the one
   before: check and copy the metrics, build the record dict, ``orjson.dumps`` it, append the
   line to a buffer, make the event object (a plain one, and the pydantic model the bus used at
   the time this was written, ``model_construct``), call 12 metric-reading subscribers. The
   real bus with the same subscribers and a JSON Lines log is timed in the same rounds, so
   ``bus - ladder`` is what the bus's own structure costs.
2. Attribute reads, the two causes issue 17 measured: ``event.logs`` on the event the bus
   hands out against a plain and a slotted object, and a plugin's reads of its own state
   before and after it is registered on a bus (and after a bare ``dir()``), against a slotted
   class.
3. cProfile of the bus's ``batch_end``: the functions with the most time of their own.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from _common import (  # before eventbus: this tree first
    LOGS,
    Bus,
    MetricReader,
    Plugin,
    _Event,
    bus_run,
    hook_of,
    hookimpl,
    interleaved,
    median,
    modes,
    table,
)

SUBS = 12


def captured_event() -> Any:
    """The object a plugin receives for a ``batch_end`` on today's bus."""
    seen = []

    class Catch(Plugin):
        @hookimpl
        def on_batch_end(self, event: Any) -> None:
            seen.append(event)

    run, close = bus_run([Catch()], None)
    run(1)
    close()
    return seen[0]


def ladder(tmp: Path) -> dict[str, Any]:
    """Each step of the batch path added to the last, as a ``run(n)``."""
    from eventbus import records

    # How the bus makes the pydantic event it hands plugins without validating it; a later
    # tree may not have it (then pydantic's own model_construct, or no pydantic step at all).
    trusted = getattr(records, "trusted", None)
    batch_end_cls = getattr(records, "BatchEnd", None)
    if trusted is not None and batch_end_cls is not None:
        def construct(**record: Any) -> Any:
            return trusted(batch_end_cls, record)
        how = "records.trusted"
    else:
        construct = getattr(batch_end_cls, "model_construct", None)
        how = "model_construct"

    dumps, option, now = orjson.dumps, orjson.OPT_APPEND_NEWLINE, time.time
    new, setattr_ = object.__new__, object.__setattr__
    calls = [hook_of(MetricReader(), "on_batch_end") for _ in range(SUBS)]
    buffer = bytearray()

    def make(depth: int, pydantic: bool = False) -> Any:
        def run(n: int) -> None:
            del buffer[:]
            for i in range(n):
                clean = LOGS.copy()
                for key, value in clean.items():
                    if type(value) is not float or type(key) is not str or value - value:
                        raise ValueError(key)
                if depth < 2:
                    continue
                record = {"v": 1, "run_id": "r", "seq": i, "kind": "batch_end", "time": now(),
                          "logs": clean, "epoch": 0, "batch": i, "step": i}
                if depth < 3:
                    continue
                line = dumps(record, option=option)
                if depth < 4:
                    continue
                buffer.extend(line)
                if len(buffer) > 1 << 20:  # what a flush empties
                    del buffer[:]
                if depth < 5:
                    continue
                if pydantic:
                    event = construct(**record)  # type: ignore[misc]
                else:
                    event = new(_Event)
                    setattr_(event, "__dict__", record)
                if depth < 6:
                    continue
                for call in calls:
                    call(event)
        return run

    steps = {
        "1 check and copy the metrics": make(1),
        "2 + the record dict": make(2),
        "3 + orjson.dumps": make(3),
        "4 + append to the line buffer": make(4),
        "5 + a plain event object": make(5),
        f"6 + dispatch to {SUBS} metric readers (plain event)": make(6),
    }
    if construct is not None:
        steps[f"5' + the pydantic event ({how})"] = make(5, pydantic=True)
        steps[f"6' + dispatch to {SUBS} metric readers (pydantic event)"] = make(6, True)
    steps[f"the bus, {SUBS} metric readers, JSON Lines"] = bus_run(
        [MetricReader() for _ in range(SUBS)], tmp / "ladder.jsonl")[0]
    return steps


class Plain:
    """A plain object whose attributes are set one by one (CPython keeps them inline)."""

    def __init__(self) -> None:
        self.logs = dict(LOGS)
        self.monitor, self.total, self.count, self.best, self.wait = "loss", 0.0, 0, 1.0, 0


class Slotted:
    __slots__ = ("logs", "monitor", "total", "count", "best", "wait")

    def __init__(self) -> None:
        self.logs = dict(LOGS)
        self.monitor, self.total, self.count, self.best, self.wait = "loss", 0.0, 0, 1.0, 0


def reads(obj: Any, names: tuple[str, ...]) -> Any:
    """``run(n)``: n times, read each of ``names`` on ``obj`` (12 reads in all)."""
    source = "def run(n):\n    o = obj\n    for _ in range(n):\n"
    source += "".join(f"        o.{name}\n" for name in names)
    scope: dict[str, Any] = {"obj": obj}
    exec(source, scope)  # straight-line reads, as a hook makes them
    return scope["run"]


def attribute_reads(tmp: Path) -> dict[str, Any]:
    event = captured_event()
    plain = new_plain(event)
    twelve_logs = ("logs",) * 12
    own = ("monitor", "total", "count", "best", "wait", "monitor") * 2
    never = MetricReader()
    registered = MetricReader()
    Bus([registered]).close()
    after_dir = MetricReader()
    dir(after_dir)
    return {
        f"12 reads of event.logs, the bus's event ({type(event).__name__})": reads(event,
                                                                                  twelve_logs),
        "12 reads of event.logs, a plain object given a __dict__ (the floor's)": reads(
            plain, twelve_logs),
        "12 reads of event.logs, a plain object, attributes set in __init__": reads(
            Plain(), twelve_logs),
        "12 reads of event.logs, a slotted object": reads(Slotted(), twelve_logs),
        "12 reads of its own state, a plugin never registered": reads(never, own),
        "12 reads of its own state, the plugin after Bus([plugin])": reads(registered, own),
        "12 reads of its own state, a plain object after dir()": reads(after_dir, own),
        "12 reads of its own state, a slotted object": reads(Slotted(), own),
    }


def new_plain(event: Any) -> Any:
    plain = object.__new__(_Event)
    object.__setattr__(plain, "__dict__", dict(getattr(event, "__dict__", {"logs": LOGS})))
    return plain


def profile(tmp: Path, n: int, top: int = 14) -> list[list[Any]]:
    run, close = bus_run([MetricReader() for _ in range(SUBS)], tmp / "profile.jsonl")
    run(1000)
    profiler = cProfile.Profile()
    profiler.enable()
    run(n)
    profiler.disable()
    close()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    rows = []
    for (file, line, func), (_, calls, tottime, _cumtime, _) in sorted(
            stats.stats.items(), key=lambda kv: -kv[1][2])[:top]:  # type: ignore[attr-defined]
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if line else file
        rows.append([f"`{func}` ({where})", f"{calls / n:.1f}", f"{tottime / n * 1e6:.3f}",
                     f"{100 * tottime / total:.0f}%"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes(parser)
    args = parser.parse_args(argv)
    # Many short rounds (see _common.interleaved).
    chunk, rounds = (200, 2) if args.smoke else (300, 41) if args.quick else (300, 151)
    with tempfile.TemporaryDirectory(prefix="eventbus-profile-") as name:
        tmp = Path(name)
        samples = interleaved(ladder(tmp), chunk, rounds)
        # On a loaded machine the noise only adds: the best round is the steadier figure for
        # what a step adds; the medians are printed beside it.
        rows, last = [], {}  # each step's best, by its number
        for label, values in samples.items():
            us, best, number = median(values), min(values), label.split()[0]
            if number[0].isdigit():
                base = {"5'": "4", "6'": "5'"}.get(number, str(int(number.rstrip("'")) - 1))
                step = f"{best - last.get(base, 0.0):+.3f}"
                last[number] = best
            else:  # the bus: against the plain-event ladder's top
                step = f"{best - last.get('6', 0.0):+.3f} over step 6"
            rows.append([label, us, best, step])
        table("The batch path as a ladder (each step adds to the one before; the bus in the "
              "same rounds)", ["", "µs per batch (median)", "µs (best round)",
                               "this step adds (best)"], rows,
              f"(medians of {rounds} interleaved rounds of {chunk:,})")
        samples = interleaved(attribute_reads(tmp), chunk * 10, rounds)
        table("Attribute reads (12 per call)",
              ["", "µs per 12 reads (median)", "ns per read (median)", "ns per read (best)"],
              [[k, median(v), f"{median(v) / 12 * 1000:.1f}", f"{min(v) / 12 * 1000:.1f}"]
               for k, v in samples.items()],
              f"(medians of {rounds} interleaved rounds of {chunk * 10:,})")
        table(f"cProfile of `bus.batch_end`, {SUBS} metric readers, JSON Lines (own time; "
              "cProfile inflates calls)", ["function", "calls per batch", "µs per batch", "share"],
              profile(tmp, chunk * 20))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

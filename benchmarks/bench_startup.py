"""Issue 17, target 4: start-up. ``import eventbus`` against a bare interpreter, and the demo.

Run: ``python benchmarks/bench_startup.py`` (``--quick``: fewer runs; ``--smoke``: one run, as
installed only, no demo). Every figure comes from fresh child processes of this interpreter,
the two sides alternated run by run:

- ``-X importtime``: the sum of the self times Python reports for every module imported, for
  ``-c "import eventbus"`` and for ``-c pass`` (the bare interpreter's own start-up imports);
  medians, and the best runs (a loaded machine only adds time);
- wall time of the same two commands, and the ratio;
- ``eventbus demo --quiet`` (into a scratch folder): wall time, the child's peak resident set
  (``resource.getrusage`` in a process that runs only the demo), and which heavy packages it
  imported.

Each import figure is taken twice. **As installed**: the children get a bytecode cache of their
own (``PYTHONPYCACHEPREFIX``, a scratch folder warmed by a first run), as an installed package
has its ``.pyc`` files. **From source**: the environment as it is; where it sets
``PYTHONDONTWRITEBYTECODE`` (this machine does) the tree's modules are compiled on every
import, about 0.1 s of ``import eventbus`` that no installed copy pays.

Targets (issue 17): ``import eventbus`` at most 0.15 s on this machine; the demo at most
150 MiB peak, no torch unless the model is torch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, modes, table

IMPORT = "import eventbus"
BARE = "pass"

# Runs the demo as the console script does, then reports what it cost this process.
DEMO = r"""
import resource, sys, time
sys.path.insert(0, sys.argv[1])
start = time.perf_counter()
from eventbus.cli import main
try:
    main(["demo", "--quiet", "--out", sys.argv[2]])
except SystemExit:
    pass
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
heavy = [m for m in ("torch", "tensorboardX", "keras", "pandas", "pyarrow", "h5py", "numpy",
                     "matplotlib", "requests") if m in sys.modules]
print(wall, peak, "torch" in sys.modules, "tensorboardX" in sys.modules, ",".join(heavy) or "-")
"""


def child_env(pycache: str | None = None) -> dict[str, str]:
    """This tree first on the path, as the benchmarks import it; with ``pycache``, a bytecode
    cache in that folder (written, and read on the next run), as an installed package has."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    return env


def importtime(code: str, pycache: str | None = None,
               best: dict[str, int] | None = None) -> tuple[float, list[tuple[int, str]]]:
    """Seconds of import time for ``python -c code`` (the sum of self times) and, for each
    top-level package imported, the cumulative time of its outermost import, largest first.
    ``best`` keeps each module's least self time (µs) over the runs it is given to."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True,
                          text=True, check=True, env=child_env(pycache), cwd=ROOT)
    total, roots = 0, {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative, name = line[12:].split("|")
        total += int(self_us)
        if best is not None:
            best[name.strip()] = min(best.get(name.strip(), 1 << 62), int(self_us))
        root = name.strip().split(".")[0]
        roots[root] = max(roots.get(root, 0), int(cumulative))
    return total / 1e6, sorted(((us, root) for root, us in roots.items()), reverse=True)


def wall(code: str, pycache: str | None = None) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=child_env(pycache), cwd=ROOT)
    return time.perf_counter() - start


def measure(runs: int, pycache: str | None) -> tuple[list[list[object]], list[tuple[int, str]]]:
    """The import table's rows for one way of running (see the module's docstring)."""
    if pycache is not None:  # warm the cache: every later run reads bytecode
        importtime(IMPORT, pycache)
        importtime(BARE, pycache)
    imported, bare, walls, bare_walls = [], [], [], []
    best_imported: dict[str, int] = {}
    best_bare: dict[str, int] = {}
    tops: list[tuple[int, str]] = []
    for i in range(runs):
        for which in ((IMPORT, BARE) if i % 2 == 0 else (BARE, IMPORT)):
            if which == IMPORT:
                seconds, tops = importtime(IMPORT, pycache, best_imported)
                imported.append(seconds)
                walls.append(wall(IMPORT, pycache))
            else:
                bare.append(importtime(BARE, pycache, best_bare)[0])
                bare_walls.append(wall(BARE, pycache))
    med = statistics.median
    how = "as installed (bytecode cache)" if pycache is not None else "from source"
    rows: list[list[object]] = [
        [f"`-X importtime`, sum of self times, s, {how}", med(bare), med(imported),
         f"{med(a / b for a, b in zip(imported, bare)):.1f}x", f"{med(imported) - med(bare):.3f}",
         min(bare), min(imported), f"{min(imported) / min(bare):.1f}x"],
        [f"wall time of the process, s, {how}", med(bare_walls), med(walls),
         f"{med(a / b for a, b in zip(walls, bare_walls)):.2f}x",
         f"{med(walls) - med(bare_walls):.3f}", min(bare_walls), min(walls),
         f"{min(walls) / min(bare_walls):.2f}x"],
    ]
    # Each module's best run, summed: on a loaded machine, the steadiest estimate of the work.
    floor, bare_floor = sum(best_imported.values()) / 1e6, sum(best_bare.values()) / 1e6
    rows.insert(1, [f"`-X importtime`, each module's best self time, summed, s, {how}", "", "",
                    "", f"{floor - bare_floor:.3f}", bare_floor, floor,
                    f"{floor / bare_floor:.1f}x"])
    return rows, tops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes(parser)
    args = parser.parse_args(argv)
    runs = 1 if args.smoke else 7 if args.quick else 15
    with tempfile.TemporaryDirectory(prefix="eventbus-pycache-") as pycache:
        installed, tops = measure(runs, pycache)
    from_source = [] if args.smoke else measure(runs, None)[0]
    table("`import eventbus` against a bare interpreter (`python -c pass`)",
          ["", "bare (median)", "import eventbus (median)", "ratio (median)", "difference, s",
           "bare (best)", "import eventbus (best)", "ratio (best)"], installed + from_source,
          f"(medians and best of {runs} alternated runs; target: import eventbus <= 0.15 s)")
    print("\nthe packages `import eventbus` spends most in (cumulative, one run, as installed): " +
          ", ".join(f"{name} {us / 1e3:.0f} ms" for us, name in tops[:10]))
    if args.smoke:
        return 0
    demo_runs = 1 if args.quick else 3
    results = []
    with tempfile.TemporaryDirectory(prefix="eventbus-demo-") as scratch:
        for i in range(demo_runs):
            out = Path(scratch) / f"run{i}"
            done = subprocess.run([sys.executable, "-c", DEMO, str(ROOT), str(out)],
                                  capture_output=True, text=True, check=True, cwd=scratch,
                                  env=child_env())
            seconds, peak, torch, tbx, heavy = done.stdout.strip().splitlines()[-1].split()
            results.append((float(seconds), float(peak), torch, tbx, heavy))
    med = statistics.median
    table("`eventbus demo --quiet`, in a process of its own",
          ["", "wall s (median)", "peak RSS MiB (median)", "torch imported",
           "tensorboardX imported", "heavy packages imported"],
          [["demo", med(r[0] for r in results), med(r[1] for r in results), results[-1][2],
            results[-1][3], results[-1][4].replace(",", ", ")]],
          f"({demo_runs} run(s); target: <= 150 MiB, no torch)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

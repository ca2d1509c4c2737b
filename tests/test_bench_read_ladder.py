"""bench_read.py's ``--ladder`` still runs against this tree (``--smoke``: a tiny log): the
typed JSON Lines reader's loop rebuilt step by step, each step checking the log as it goes.
What it measures is not checked: nothing in the suite is timed."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_the_ladder_runs_every_step(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_read

    assert bench_read.main(["--smoke", "--ladder"]) == 0
    out = capsys.readouterr().out
    assert "### Typed JSON Lines, step by step" in out
    rows = [line.split("|")[1].strip() for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| ---")][1:]
    assert rows[0] == "bare orjson.loads loop"
    assert rows[-2:] == ["read_jsonl (the reader)", "read_log (read_jsonl through read_log)"]
    assert len(rows) == 8

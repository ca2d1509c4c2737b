"""The issue-17 benchmarks still run against this tree: each script's ``--smoke`` mode (a tiny
run, Keras and Lightning left out), in this process. What they measure is not checked here:
nothing in the suite is timed. bench_torch_step.py is left out: importing torch alone takes
seconds here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))

    def run(name: str, *argv: str) -> str:
        module = __import__(name)
        assert module.main(["--smoke", *argv]) == 0
        return name

    return run


def tables(text: str) -> dict[str, list[str]]:
    """Each printed markdown table's title and its data rows."""
    found: dict[str, list[str]] = {}
    title = None
    for line in text.splitlines():
        if line.startswith("### "):
            title = line[4:]
            found[title] = []
        elif title and line.startswith("| ") and not line.startswith("| ---"):
            found[title].append(line)
    return {t: rows[1:] for t, rows in found.items()}  # less the header row


def test_bench_peers_smoke(bench, capsys):
    bench("bench_peers")
    out = tables(capsys.readouterr().out)
    readers = next(rows for title, rows in out.items() if title.startswith("`batch_end`"))
    assert [row.split("|")[1].strip() for row in readers] == ["floor", "bus"]
    plugins = next(rows for title, rows in out.items() if "built-in plugin" in title)
    names = {row.split("|")[1].strip() for row in plugins}
    assert {"EarlyStopping", "TerminateOnNaN", "History"} <= names
    for row in plugins:  # every ratio printed as a number
        assert re.search(r"\| \d+\.\d\dx \|$", row), row


def test_bench_read_and_profile_smoke(bench, capsys):
    bench("bench_read")
    bench("profile_batch")
    out = tables(capsys.readouterr().out)
    assert any(title.startswith("Parquet: typed") for title in out)
    ladder = next(rows for title, rows in out.items() if "ladder" in title)
    assert ladder[-1].startswith("| the bus, 12 metric readers")


def test_bench_startup_smoke(bench, capsys):
    bench("bench_startup")
    out = tables(capsys.readouterr().out)
    [(_, rows)] = out.items()
    assert rows[0].startswith("| `-X importtime`")

"""sinks.progress: the text of progress, and what a terminal shows of it at any width.

The properties render the real ProgbarLogger's output on a terminal screen (tests/plugins/
terminal.py) of 40 to 200 columns: no line wider than the terminal, every metric complete.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from eventbus import Bus, SinkFailureWarning
from plugins import LambdaCallback, ProgbarLogger, TerminateOnNaN
from sinks.console import ConsoleSink
from sinks.progress import (
    bar_line,
    columns,
    cut,
    format_duration,
    format_number,
    format_per_unit,
    format_value,
    plain_line,
    wrap,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
from terminal import Screen  # noqa: E402

names = st.text("abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=40)
values = st.floats(allow_nan=True, allow_infinity=True, width=64) | st.floats(-1e-2, 1e-2)
widths = st.integers(40, 200)
#: Names as users write them in any script: wide CJK characters (two columns), accented and
#: combining letters (one and none), emoji.
any_names = names | st.text("损失准确率λéü\u0301_🔥ab1", min_size=1, max_size=40)


class Terminal(io.StringIO):
    """A text stream that says it is a terminal; its size comes from COLUMNS and LINES."""

    encoding = "utf-8"

    def isatty(self) -> bool:
        return True


@contextlib.contextmanager
def terminal_of(columns: int, rows: int = 24) -> Iterator[None]:
    """A Terminal stream has no descriptor: its size is read from COLUMNS and LINES."""
    saved = {k: os.environ.get(k) for k in ("COLUMNS", "LINES")}
    os.environ.update(COLUMNS=str(columns), LINES=str(rows))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def place_of(item: str, lines: list[str]) -> tuple[int, int] | None:
    """Where ``item`` is: whole in one of ``lines`` (its line, and where on it), or, wider than
    a line, on consecutive lines of its own, broken at spaces or inside a word wider than a
    line (its first line); None if it is neither."""
    for number, line in enumerate(lines):
        padded = f" - {line} - "
        if item in line.split(" - ") or f" - {item} - " in padded:
            return number, padded.index(f" - {item} - ")
    flat = item.replace(" ", "")
    for start in range(len(lines)):
        joined = ""
        for line in lines[start:]:
            joined += line.replace(" ", "")
            if joined == flat:
                return start, 0
            if not flat.startswith(joined):
                break
    return None


def pieces_in(item: str, lines: list[str]) -> bool:
    """``item`` is whole in one of ``lines``, or, wider than a line, on consecutive lines of its
    own (see :func:`place_of`)."""
    return place_of(item, lines) is not None


class TestColumns:
    def test_wide_combining_and_plain_characters(self) -> None:
        assert columns("loss") == 4
        assert columns("损失") == 4  # each takes two columns of a terminal
        assert columns("🔥") == 2
        assert columns("e\u0301") == 1  # e and a combining acute accent: one column
        assert columns("λé") == 2
        assert columns("a\u200bb") == 2  # a zero-width space takes none

    def test_cut_never_splits_a_wide_character_over_the_width(self) -> None:
        assert cut("损失函数", 5) == "损失"
        assert cut("损失函数", 4) == "损失"
        assert cut("ab损", 3) == "ab"
        assert cut("loss", 2) == "lo"


class TestWrap:
    @given(st.lists(st.tuples(any_names, values), max_size=30), st.integers(1, 200))
    def test_lines_fit_and_hold_every_item(self, metrics, width) -> None:
        """Every line fits, in the columns a terminal gives it (but a wide character alone on
        a line of one column); every item is whole on a line or alone on lines of its own."""
        items = [f"{name}: {format_value(value)}" for name, value in metrics]
        lines = wrap(items, width)
        assert all(columns(line) <= width or len(line) == 1 for line in lines)
        assert all(pieces_in(item, lines) for item in items)
        assert " - ".join(lines).replace(" ", "").replace("-", "") == \
            "".join(items).replace(" ", "").replace("-", "")  # in order, nothing added or lost

    def test_greedy(self) -> None:
        assert wrap(["a: 1", "b: 2", "c: 3"], 11) == ["a: 1 - b: 2", "c: 3"]
        assert wrap(["long: [0.5000 0.6000]", "x: 1"], 12) == ["long:", "[0.5000", "0.6000]",
                                                              "x: 1"]

    def test_wide_names_are_measured_in_columns(self) -> None:
        """Five CJK characters take ten columns: the second item does not fit beside them on a
        line of 20, though the characters are 18."""
        assert wrap(["损失函数值: 0.1", "准确率: 0.9"], 20) == ["损失函数值: 0.1", "准确率: 0.9"]
        assert wrap(["损失函数值损失函数值: 0.1"], 8) == ["损失函数", "值损失函", "数值:", "0.1"]


class TestBarLine:
    @given(st.text(min_size=0, max_size=30).filter(str.isprintable) | any_names,
           st.integers(0, 10**6), st.none() | st.integers(1, 10**6), st.floats(0, 1e6),
           st.floats(0, 1e3), st.booleans(), st.integers(1, 200))
    def test_fits(self, title, count, target, elapsed, per_unit, finished, width) -> None:
        """Whatever the title, counts and times, the bar line fits the width in columns."""
        line = bar_line(title, count, target, elapsed=elapsed, per_unit=per_unit, unit="step",
                        width=width, finished=finished)
        assert columns(line) <= width

    @given(st.data(), st.sampled_from([(44, 10**3, 1.0), (80, 10**6, 1e3)]))
    def test_keeps_counts_eta_and_rate(self, data, case) -> None:
        """Counts, ETA and time per step all fit: from 44 columns up to 1,000 steps of up to 1 s
        each (the widest: "Epoch 10/10:    1/1000 ETA 8:19 500ms/step"), from 80 columns up to
        a million steps of up to 1,000 s each."""
        least, most, slowest = case
        width = data.draw(st.integers(least, 200))
        target = data.draw(st.integers(1, most))
        count = data.draw(st.integers(1, target))
        per_unit = data.draw(st.floats(0, slowest))
        line = bar_line("Epoch 10/10", count, target, elapsed=1.0, per_unit=per_unit,
                        unit="step", width=width, finished=False)
        assert f"{count}/{target}" in line and "ETA " in line
        assert format_per_unit(per_unit, "step") in line

    def test_looks_like_keras(self) -> None:
        assert bar_line("Epoch 3/10", 54, 120, elapsed=2.0, per_unit=0.021, unit="step",
                        width=79, finished=False) == \
            f"Epoch 3/10:  54/120 {'━' * 9}{'─' * 11} ETA 1s 21ms/step"
        assert bar_line("Epoch 3/10", 120, 120, elapsed=4.4, per_unit=0.035, unit="step",
                        width=79, finished=True, unicode=False) == \
            f"Epoch 3/10: 120/120 {'=' * 20} 4s 35ms/step"

    def test_narrow_drops_the_bar_first(self) -> None:
        line = bar_line("Epoch 3/10", 54, 120, elapsed=2.0, per_unit=0.021, unit="step",
                        width=35, finished=False)
        assert line == "Epoch 3/10:  54/120 ETA 1s 21ms/step"[:35] or "━" not in line


def test_keras_formats() -> None:
    """Numbers, ETAs and times per step as keras/src/utils/progbar.py writes them."""
    assert [format_number(v) for v in (0.5, -2.0, 1e-3, 0.0, 2e6, math.nan)] == \
        ["0.5000", "-2.0000", "1.0000e-03", "0.0000e+00", "2000000.0000", "nan"]
    assert [format_duration(s) for s in (5.9, 61, 3700)] == ["5s", "1:01", "1:01:40"]
    assert [format_per_unit(s, "step") for s in (0, 2.4, 0.035, 8e-5)] == \
        ["0s/step", "2s/step", "35ms/step", "80us/step"]
    assert format_value([0.5, 1e-4]) == "[0.5000 1.0000e-04]"


def test_plain_line() -> None:
    assert plain_line("Epoch 1/2", 3, 10, elapsed=2.0, per_unit=0.5, unit="step",
                      finished=False, items=["loss: 0.5000"]) == \
        "Epoch 1/2 - 3/10 steps - 2.0s - ETA 3s - 500ms/step - loss: 0.5000"
    assert plain_line("Evaluation", 0, None, elapsed=0.25, per_unit=0.0, unit="step",
                      finished=True, items=[]) == "Evaluation - 0.2s"


@given(st.dictionaries(names, values, min_size=1, max_size=12), widths,
       st.integers(1, 4), st.booleans())
@example({"lr": 0.0}, 40, 1, True)  # the learning rate after val_lr, as Keras shows it
@example({"0000": 0.0, "0000000": 1e6}, 40, 1, False)  # an item per line, no separator
def test_a_terminal_shows_every_metric_at_any_width(metrics, width, steps, validate) -> None:
    """The ProgbarLogger on a terminal of 40 to 200 columns: no line overflows (the screen never
    wraps one) and every metric, name and value, is complete on the final screen, train metrics
    before val_ ones, and the learning rate (``lr``, ``learning_rate``) after both, as Keras
    shows it."""
    train = {k: v for k, v in metrics.items() if not k.startswith("val_")}
    val = {f"val_{k}": v for k, v in train.items()} if validate else {}
    out = Terminal()
    with terminal_of(width):
        bus = Bus([ProgbarLogger(file=out, mininterval=0.0)])
        bus.train_begin({"epochs": 1, "steps": steps})
        bus.epoch_begin(0)
        for batch in range(steps):
            bus.batch_end(batch, train)
        bus.epoch_end(0, {**train, **val})
        bus.train_end()
        bus.close()
    screen = Screen(width, 24).feed(out.getvalue().replace("\n", "\r\n"))
    assert screen.wraps == 0
    lines = screen.lines()
    assert lines[0].startswith(f"Epoch 1/1: {steps}/{steps} ")
    shown = [f"{k}: {format_value(v)}" for k, v in {**train, **val}.items()]
    assert all(pieces_in(item, lines[1:]) for item in shown)
    where = {k: place_of(f"{k}: {format_value(v)}", lines[1:])
             for k, v in {**train, **val}.items()}

    def group(name: str) -> int:
        return 2 if name in ("lr", "learning_rate") else 1 if name.startswith("val_") else 0

    assert [group(k) for k in sorted(where, key=where.__getitem__)] == \
        sorted(group(k) for k in where)


def test_a_message_in_the_middle_of_an_epoch_takes_the_blocks_place() -> None:
    """A plugin's message printed while the block is live (TerminateOnNaN at a batch) erases
    the block first, so the two never share a line; the block comes back below it."""
    out = Terminal()
    with terminal_of(80):
        bus = Bus([ProgbarLogger(file=out, mininterval=0.0), TerminateOnNaN()],
                  log=[ConsoleSink(out)])
        bus.train_begin({"epochs": 1, "steps": 4})
        bus.epoch_begin(0)
        bus.batch_end(0, {"loss": 1.0})
        bus.batch_end(1, {"loss": math.nan})
        bus.epoch_end(0, {})
        bus.train_end()
        bus.close()
    screen = Screen(80, 24).feed(out.getvalue().replace("\n", "\r\n"))
    assert screen.wraps == 0
    message, head, metrics = screen.lines()
    assert message == "Batch 1: Invalid loss, terminating training"
    assert head.startswith("Epoch 1/1: 2/4 ") and metrics == "loss: nan"


def stopped_by_nan(out: io.StringIO, verbose: int = 1) -> None:
    """A loop that breaks out of its epoch when TerminateOnNaN stops it, with no epoch_end."""
    bus = Bus([ProgbarLogger(verbose=verbose, file=out, mininterval=0.0), TerminateOnNaN()],
              log=[ConsoleSink(out)])
    bus.train_begin({"epochs": 2, "steps": 4})
    bus.epoch_begin(0)
    for batch, loss in enumerate([1.0, 0.5, math.nan, 0.25]):
        bus.batch_end(batch, {"loss": loss})
        if bus.stop_training:
            break
    bus.train_end()
    bus.close()


def test_an_epoch_cut_short_stays_on_screen_below_the_message() -> None:
    """The message erased the block and the loop broke out: the count reached and the running
    means come back below the message, and stay."""
    out = Terminal()
    with terminal_of(80):
        stopped_by_nan(out)
    screen = Screen(80, 24).feed(out.getvalue().replace("\n", "\r\n"))
    assert screen.wraps == 0
    message, head, metrics = [line for line in screen.lines() if line]
    assert message == "Batch 2: Invalid loss, terminating training"
    assert head.startswith("Epoch 1/2: 3/4 ") and "ETA" not in head
    assert metrics == "loss: nan"


def test_an_epoch_cut_short_gets_its_line_in_a_file() -> None:
    """Lines (a file, a CI log), with verbose=1 or 2: the epoch cut short gets a line saying
    where it stopped."""
    for verbose in (1, 2):
        out = io.StringIO()
        stopped_by_nan(out, verbose)
        lines = out.getvalue().splitlines()
        assert lines[0] == "Batch 2: Invalid loss, terminating training"
        assert lines[1].startswith("Epoch 1/2 - 3/4 steps - ") and lines[1].endswith(" - loss: nan")
        assert len(lines) == 2


def test_a_warning_of_the_bus_erases_the_block_and_names_the_users_line() -> None:
    """A warning goes to standard error, which shares the terminal with the block: the block
    is erased first (the next draw puts it back below), and the warning points at the line of
    the loop that called the bus, not at a line inside the library."""
    def boom(batch: int, logs: object) -> None:
        raise RuntimeError("disk full")

    out = Terminal()
    with terminal_of(80):
        bus = Bus([ProgbarLogger(file=out, mininterval=0.0), LambdaCallback(on_batch_end=boom)])
        bus.train_begin({"epochs": 1, "steps": 4})
        bus.epoch_begin(0)
        with pytest.warns(SinkFailureWarning, match="LambdaCallback on batch_end") as caught:
            bus.batch_end(0, {"loss": 1.0}); line = sys._getframe().f_lineno  # noqa: E702
        erased = out.getvalue()
        with pytest.warns(SinkFailureWarning, match="1 sink failure"):
            bus.close()
    assert caught[0].filename == __file__ and caught[0].lineno == line
    # Drawn at the batch (two lines: bar and metrics), then erased: back up and clear below.
    assert erased.endswith("\r\x1b[1A\x1b[J")

"""ProgbarLogger in a real pseudo-terminal (80 and 120 columns), and piped to a file.

Each test runs a training in a child process whose standard output is a pty of the given size
(or a pipe), then renders what it wrote on a screen (terminal.py) and reads it as a person would.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import textwrap

import pytest
from terminal import Screen, child_env, run_in_pty

from sinks.progress import format_number, wrap

# Five batches of known metrics; BaseLogger gives the epoch their means, validation its own.
LOSSES = [1.0, 0.5, 0.25, 0.125, 0.0625]
TRAIN = ["loss", "accuracy", "precision", "recall", "auc", "mean_absolute_error"]
FIT = textwrap.dedent("""
    from eventbus import Bus
    from plugins import BaseLogger, LearningRateScheduler, ProgbarLogger
    losses = {losses!r}
    train = {train!r}
    # A rate-setting plugin puts learning_rate in the epoch's logs, as Keras's does.
    bus = Bus([ProgbarLogger(mininterval=0.0, **{kwargs!r}), BaseLogger(),
               LearningRateScheduler(lambda epoch, lr: lr)], learning_rate=0.001)
    bus.train_begin({{"epochs": 2, "steps": len(losses)}})
    for epoch in range(2):
        bus.epoch_begin(epoch)
        for batch, loss in enumerate(losses):
            bus.batch_end(batch, {{name: loss * (i + 1) / 7 for i, name in enumerate(train)}})
        bus.epoch_end(epoch, {{"val_" + name: 0.3 + i / 10 for i, name in enumerate(train)}})
    bus.train_end()
    bus.close()
""")


def fit_script(**kwargs) -> str:
    return FIT.format(losses=LOSSES, train=TRAIN, kwargs=kwargs)


def expected(batches: int) -> dict[str, str]:
    """What Keras's progress bar shows after ``batches`` batches: each metric's mean so far."""
    return {name: format_number(sum(loss * (i + 1) / 7 for loss in LOSSES[:batches]) / batches)
            for i, name in enumerate(TRAIN)}


def blocks(screen: list[str]) -> list[tuple[str, list[str]]]:
    """Each epoch's bar line and the metric items on the lines beneath it (up to the next bar
    line or a line that is not metrics: a blank line, another plugin's message)."""
    out: list[tuple[str, list[str]]] = []
    inside = False
    for line in screen:
        if re.match(r"Epoch \d+/\d+: ", line):
            out.append((line, []))
            inside = True
        elif inside and line and all(re.fullmatch(r"\w+: \S+", item)
                                     for item in line.split(" - ")):
            out[-1][1].extend(line.split(" - "))
        else:
            inside = False
    return out


def frames(output: str, columns: int, rows: int = 24) -> list[list[str]]:
    """The screen after each redraw (each ``ESC[J``) and at the end."""
    screen, shots = Screen(columns, rows), []
    for piece in re.split(r"(?=\r\x1b\[\d*A?\x1b\[J)", output):
        screen.feed(piece)
        shots.append(screen.lines())
    assert screen.wraps == 0, "a line overflowed the terminal"
    return shots


@pytest.fixture(scope="module")
def eighty() -> str:
    """What the training wrote to a terminal of 80x24."""
    return run_in_pty(fit_script(), columns=80)


class TestEightyColumns:
    def test_every_metric_complete_and_in_order(self, eighty) -> None:
        """In 80x24, the finished epochs show the bar line and every metric, name and value,
        train metrics before val_ ones, the learning rate last; no line is wider than 80."""
        final = frames(eighty, 80)[-1]
        assert all(len(line) <= 80 for line in final)
        shown = blocks(final)
        assert [head.split(":")[0] for head, _ in shown] == ["Epoch 1/2", "Epoch 2/2"]
        assert len(final) == sum(1 + len(wrap(items, 79)) for _, items in shown)  # nothing else
        for head, items in shown:
            assert re.fullmatch(r"Epoch \d/2: 5/5 ━{20} \d+s \d+(us|ms|s)/step", head)
            names = [item.split(": ")[0] for item in items]
            assert names == TRAIN + [f"val_{n}" for n in TRAIN] + ["learning_rate"]
            metrics = dict(item.split(": ") for item in items)
            assert {n: metrics[n] for n in TRAIN} == expected(len(LOSSES))
            assert metrics["val_auc"] == "0.7000" and metrics["learning_rate"] == "1.0000e-03"

    def test_running_means_while_the_epoch_goes(self, eighty) -> None:
        """During the epoch, after each batch, the block shows the count and each metric's
        mean over the batches so far, as Keras's progress bar does (not the latest batch)."""
        seen = {}
        for shot in frames(eighty, 80):
            heads = [line for line in shot if line.startswith("Epoch 1/2: ")]
            match = heads and re.match(r"Epoch 1/2: (\d)/5 ", heads[-1])
            if match and "ETA" in heads[-1]:
                block = " - ".join(shot[shot.index(heads[-1]) + 1:])
                seen[int(match.group(1))] = dict(item.split(": ") for item in block.split(" - "))
        assert sorted(seen) == [1, 2, 3, 4, 5]
        for batches, shown in seen.items():
            assert shown == expected(batches), batches

    def test_verbose_2_one_line_per_epoch(self) -> None:
        """verbose=2 on a terminal: one plain line per epoch, no redraws."""
        output = run_in_pty(fit_script(verbose=2), columns=80)
        assert "\x1b" not in output
        lines = output.replace("\r\n", "\n").splitlines()
        assert len(lines) == 2 and lines[1].startswith("Epoch 2/2 - 5/5 steps - ")
        assert lines[1].endswith(" - learning_rate: 1.0000e-03")


def test_the_demo_at_120_columns(tmp_path) -> None:
    """The demo's training loop and metrics in 120 columns, with the plugins that print beside
    the bar: every epoch's loss, acc, val_loss, val_acc and learning_rate complete and equal to
    what its CSV history holds, nothing overflowing."""
    history_csv = tmp_path / "history.csv"
    script = textwrap.dedent(f"""
        from eventbus import Bus
        from eventbus.demo import init_model, make_data, train
        from plugins import BaseLogger, CSVLogger, EarlyStopping, ProgbarLogger, \\
            ReduceLROnPlateau
        model = init_model(0)
        plugins = [ProgbarLogger(), BaseLogger(),
                   ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, verbose=1),
                   EarlyStopping(monitor="val_loss", patience=2, verbose=1),
                   CSVLogger({str(history_csv)!r})]
        with Bus(plugins, model=model) as bus:
            train(bus, model, make_data(0), epochs=6, batch_size=32, seed=0)
        print("trained")
    """)
    output = run_in_pty(script, columns=120, rows=40)
    final = frames(output, 120, 40)[-1]
    assert final[-1] == "trained"
    shown = blocks(final)
    with open(history_csv, newline="") as f:
        history = list(csv.DictReader(f))
    assert len(shown) == len(history) == 6
    order = ["loss", "acc", "val_loss", "val_acc", "learning_rate"]
    for (head, items), row in zip(shown, history):
        assert re.fullmatch(r"Epoch \d/6: 12/12 ━{20} \d+s \d+(us|ms|s)/step", head)
        metrics = dict(item.split(": ") for item in items)
        assert list(metrics) == order
        assert metrics == {name: format_number(float(row[name])) for name in order}


def test_a_users_print_while_the_bar_is_drawn_stays_above_it() -> None:
    """The Keras docs' ``LambdaCallback(on_batch_begin=lambda batch, logs: print(batch))``
    beside the bar, and a print to standard error from the loop: every printed line stays on
    screen, each epoch's bar once, below its prints. Before, the bar's next draw went back up
    from below the printed line and erased it, leaving a copy of the bar above."""
    script = textwrap.dedent("""
        import sys
        from eventbus import Bus
        from plugins import BaseLogger, LambdaCallback, ProgbarLogger
        printing = LambdaCallback(on_batch_begin=lambda batch, logs: print(batch))
        with Bus([ProgbarLogger(mininterval=0.0), BaseLogger(), printing]) as bus:
            bus.train_begin({"epochs": 2, "steps": 4})
            for epoch in range(2):
                bus.epoch_begin(epoch)
                for batch in range(4):
                    bus.batch_begin(batch)
                    bus.batch_end(batch, {"loss": 0.5})
                    if batch == 2:
                        print(f"loop note {epoch}", file=sys.stderr)
                bus.epoch_end(epoch, {"loss": 0.4})
            bus.train_end()
        print("trained", sys.stdout is sys.__stdout__)
    """)
    final = frames(run_in_pty(script, columns=80), 80)[-1]
    assert final[-1] == "trained True"  # the stream is the program's own again
    lines = [line for line in final if not line.startswith("loss:")]
    bars = [line for line in lines if line.startswith("Epoch")]
    assert [bar[:15] for bar in bars] == ["Epoch 1/2: 4/4 ", "Epoch 2/2: 4/4 "]
    assert [line for line in lines if not line.startswith("Epoch")][:-1] == \
        ["0", "1", "2", "loop note 0", "3", "0", "1", "2", "loop note 1", "3"]
    assert lines.index(bars[0]) == 5 and lines.index(bars[1]) == 11


def test_a_logging_line_while_the_bar_is_drawn_stays_above_it() -> None:
    """``logging.basicConfig()`` before the run: its handler holds the terminal's stream
    itself, not ``sys.stderr``, so the guard put in ``sys.stderr`` missed its lines and the
    bar's next draw erased them. The handler writes through the guard while the bar is drawn,
    and has its own stream back after."""
    script = textwrap.dedent("""
        import logging, sys
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        log = logging.getLogger("trainer")
        from eventbus import Bus
        from plugins import BaseLogger, LambdaCallback, ProgbarLogger
        noting = LambdaCallback(on_batch_begin=lambda batch, logs: log.info("batch %d", batch))
        with Bus([ProgbarLogger(mininterval=0.0), BaseLogger(), noting]) as bus:
            bus.train_begin({"epochs": 2, "steps": 3})
            for epoch in range(2):
                bus.epoch_begin(epoch)
                for batch in range(3):
                    bus.batch_begin(batch)
                    bus.batch_end(batch, {"loss": 0.5})
                bus.epoch_end(epoch, {"loss": 0.4})
            bus.train_end()
        print("own stream", logging.getLogger().handlers[0].stream is sys.__stderr__)
    """)
    final = frames(run_in_pty(script, columns=80), 80)[-1]
    assert final[-1] == "own stream True"
    lines = [line for line in final if not line.startswith("loss:")]
    bars = [line for line in lines if line.startswith("Epoch")]
    assert [bar[:15] for bar in bars] == ["Epoch 1/2: 3/3 ", "Epoch 2/2: 3/3 "]
    assert [line for line in lines if not line.startswith("Epoch")][:-1] == \
        ["batch 0", "batch 1", "batch 2", "batch 0", "batch 1", "batch 2"]
    assert lines.index(bars[0]) == 3 and lines.index(bars[1]) == 7


def test_text_without_a_line_break_never_shares_a_line_with_the_bar() -> None:
    """``print(".", end="")`` from a callback, a dot a batch: the bar was drawn on the dots'
    line, and the next dot's erasing of it took the dots with it (2 of 10 stayed). Every dot
    stays, and no line holds both a dot and the bar, a whole line printed first too."""
    script = textwrap.dedent("""
        from eventbus import Bus
        from plugins import BaseLogger, LambdaCallback, ProgbarLogger
        dots = LambdaCallback(on_epoch_begin=lambda epoch, logs: print("epoch begins"),
                              on_batch_begin=lambda batch, logs: print(".", end="", flush=True))
        with Bus([ProgbarLogger(mininterval=0.0), BaseLogger(), dots]) as bus:
            bus.train_begin({"epochs": 2, "steps": 5})
            for epoch in range(2):
                bus.epoch_begin(epoch)
                for batch in range(5):
                    bus.batch_begin(batch)
                    bus.batch_end(batch, {"loss": 0.5})
                bus.epoch_end(epoch, {"loss": 0.4})
            bus.train_end()
        print("done")
    """)
    final = frames(run_in_pty(script, columns=80), 80)[-1]
    assert sum(line.count(".") for line in final if not line.startswith(("Epoch", "loss"))) == 10
    assert sum(line == "epoch begins" for line in final) == 2  # a whole line first, then dots
    assert not [line for line in final if "." in line and "Epoch" in line]
    assert [line[:15] for line in final if line.startswith("Epoch")] == [
        "Epoch 1/2: 5/5 ", "Epoch 2/2: 5/5 "]


class TestPiped:
    def run(self, **kwargs) -> list[str]:
        done = subprocess.run([sys.executable, "-c", fit_script(**kwargs)], env=child_env(),
                              capture_output=True, text=True, timeout=60, check=True)
        assert "\r" not in done.stdout and "\x1b" not in done.stdout
        return done.stdout.splitlines()

    def test_lines_during_the_epoch_and_one_at_its_end(self) -> None:
        """Piped (a CI log): whole lines only, a progress line whenever line_interval has
        passed (0 here: every batch) with the running means, and the epoch's line at its end."""
        lines = self.run(line_interval=0.0)
        assert len(lines) == 2 * (len(LOSSES) + 1)
        for batches, line in enumerate(lines[:len(LOSSES)], start=1):
            assert line.startswith(f"Epoch 1/2 - {batches}/5 steps - ") and " - ETA " in line
            shown = dict(item.split(": ") for item in line.split(" - ") if ": " in item)
            assert shown == expected(batches)
        assert lines[5].startswith("Epoch 1/2 - 5/5 steps - ") and "ETA" not in lines[5]
        assert lines[5].endswith(" - val_mean_absolute_error: 0.8000 - learning_rate: 1.0000e-03")

    def test_the_default_interval_keeps_a_short_epoch_to_one_line(self) -> None:
        """With the default 10 s, an epoch shorter than that prints only its end line."""
        lines = self.run()
        assert [line.split(" - ")[0] for line in lines] == ["Epoch 1/2", "Epoch 2/2"]

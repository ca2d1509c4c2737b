"""Text from a log never acts on the terminal: eventbus.terminal, and every command that shows
a log's text (audit, replay --verify, verify, errors, warnings, argparse's refusals).

The hostile log is the golden demo log with escape sequences written into its run_id, header,
a plugin's label, every decision's reason (each also carrying a line break and a forged
"verify:" line after it), checkpoint paths, a metric name and a warning record. The commands run
as ``python -m eventbus`` in a process of their own, one of them on a real pseudo-terminal.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus
from eventbus.audit import audit, render
from eventbus.terminal import inline, json_safe, printable
from eventbus.verify import render as render_verdicts
from eventbus.verify import verify_log

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "demo.jsonl"

#: What no output may hold raw, written out here rather than taken from the module under test:
#: C0 but newline and tab, DEL, C1, the bidirectional controls, the line and paragraph
#: separators, lone surrogates.
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                    "\u2066-\u2069\ud800-\udfff]")
TITLE = "\x1b]0;PWNED\x07"
EVIL = (TITLE + "\x1b[2J\x1b[H"                               # set the title, clear the screen
        "\x1b]8;;http://127.0.0.1:1/x\x1b\\click\x1b]8;;\x1b\\"  # an OSC 8 link
        "\rFAKE: all good"                                     # overwrite the line's start
        "\u202egpj.exe\x9b31m\x7f\u2066\u200e\u061c")          # reversed text, 8-bit CSI
#: A line a reason tries to add to the output, after a line break of its own.
FORGED = "verify: all 99 decisions match the log"


def unsafe(text: str) -> list[str]:
    return sorted({repr(c) for c in UNSAFE.findall(text)})


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    return env


def eventbus(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m eventbus ARGS``; its output decoded as a terminal would get it (bytes that
    are not UTF-8 kept, as surrogates, so the check sees them)."""
    done = subprocess.run([sys.executable, "-m", "eventbus", *map(os.fsencode, map(str, args))],
                          capture_output=True, timeout=120, cwd=cwd, env=_env())
    return subprocess.CompletedProcess(done.args, done.returncode,
                                       done.stdout.decode("utf-8", "surrogateescape"),
                                       done.stderr.decode("utf-8", "surrogateescape"))


def hostile_lines() -> list[dict]:
    records = [orjson.loads(line) for line in GOLDEN.read_bytes().splitlines()]
    for rec in records:
        rec["run_id"] = "r" + EVIL
        kind = rec["kind"]
        if kind == "header":
            rec["created"] += EVIL
            rec["library"] += TITLE
            next(p for p in rec["plugins"] if p["name"] == "ReduceLROnPlateau")["label"] = \
                "RLR" + EVIL
        elif "reason" in rec:
            rec["reason"] += EVIL + "\n" + FORGED
        elif kind == "checkpoint_saved":
            rec["path"] += EVIL
        elif kind == "epoch_end":
            rec["logs"]["val_loss" + TITLE] = 1.0
    last = records[-1]
    records.append({"v": 1, "run_id": last["run_id"], "seq": last["seq"] + 1, "kind": "warning",
                    "time": last["time"], "source": "X" + EVIL, "message": "careful" + EVIL,
                    "details": {}})
    return records


def write_log(path: Path, records: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


@pytest.fixture
def hostile(tmp_path) -> Path:
    return write_log(tmp_path / "hostile.jsonl", hostile_lines())


class TestPrintable:
    def test_each_control_is_shown_as_its_escape(self):
        """ESC, CR, DEL, C1, bidi controls and a lone surrogate become the text repr writes."""
        assert printable("a\x1b]0;t\x07b") == "a\\x1b]0;t\\x07b"
        assert printable("\r\x00\x7f\x9b\x85") == "\\r\\x00\\x7f\\x9b\\x85"
        assert printable("\u202e\u2066\u2069\u200e\u200f\u061c\u202a") == \
            "\\u202e\\u2066\\u2069\\u200e\\u200f\\u061c\\u202a"
        assert printable("\u2028\u2029\udcff") == "\\u2028\\u2029\\udcff"

    def test_newline_tab_and_ordinary_text_are_kept(self):
        """A block's own lines and tabs stay; letters, emoji (a joiner included), backslashes
        and a Windows path are shown as they are."""
        text = "run\tok\nepoch 3: val_loss μ=0.5 👩‍💻 C:\\runs\\x1b\n"
        assert printable(text) == text

    @given(st.text(st.characters(codec="utf-8") | st.sampled_from(list(EVIL + "\n\t\udc80"))))
    def test_nothing_unsafe_survives_and_the_lines_stay_the_callers(self, text):
        """For any text: nothing a terminal acts on is left, and the newlines are the input's."""
        shown = printable(text)
        assert unsafe(shown) == []
        assert shown.count("\n") == text.count("\n")

    @given(st.text(st.characters(codec="utf-8")).filter(lambda t: not UNSAFE.search(t)))
    def test_text_with_nothing_to_escape_is_unchanged(self, text):
        assert printable(text) == text


class TestInline:
    def test_a_line_break_in_a_field_is_shown_not_obeyed(self):
        assert inline("best\nverify: ok\r") == "best\\nverify: ok\\r"
        assert inline(None) == "None"

    @given(st.text(st.characters(codec="utf-8") | st.sampled_from(list(EVIL + "\n\udc80"))))
    def test_a_field_is_always_one_line(self, text):
        shown = inline(text)
        assert "\n" not in shown
        assert unsafe(shown) == []


class TestJsonSafe:
    @given(st.text(st.characters(codec="utf-8") | st.sampled_from(list(EVIL + "\u2028\udcff"))))
    def test_the_data_read_back_is_equal_and_nothing_unsafe_is_raw(self, text):
        """JSON's own ``\\uXXXX`` escapes: json.loads gives back exactly the string."""
        data = {"k" + text: [text]}
        encoded = json_safe(json.dumps(data, ensure_ascii=False))
        assert unsafe(encoded) == []
        assert json.loads(encoded) == data

    def test_orjson_output_reads_back_equal(self):
        data = {"created": EVIL, "name": "val_loss μ"}
        encoded = json_safe(orjson.dumps(data).decode())
        assert unsafe(encoded) == []
        assert "μ" in encoded  # only the controls are escaped, not every character past ASCII
        assert orjson.loads(encoded) == data


class TestAudit:
    def test_render_shows_every_hostile_field_escaped_on_its_own_line(self, hostile):
        """audit.render, as a library user calls it: visible escapes, and no reason starts a
        line of its own."""
        text = render(audit(hostile))
        assert unsafe(text) == []
        assert "run r\\x1b]0;PWNED\\x07\\x1b[2J" in text.splitlines()[0]
        assert "\\u202egpj.exe\\x9b31m" in text
        assert "\\n" + FORGED in text
        assert not any(line.startswith(FORGED) for line in text.split("\n"))

    def test_the_command_prints_nothing_raw(self, hostile):
        done = eventbus("audit", hostile)
        assert done.returncode == 0, done.stderr
        assert unsafe(done.stdout + done.stderr) == []
        assert "[X\\x1b]0;PWNED\\x07" in done.stdout  # the warning record, escaped
        assert not any(line.lstrip().startswith(FORGED) for line in done.stdout.split("\n"))

    def test_json_escapes_c1_and_bidi_and_reads_back_equal(self, hostile):
        done = eventbus("audit", hostile, "--json")
        assert done.returncode == 0, done.stderr
        assert unsafe(done.stdout) == []
        data = json.loads(done.stdout)
        assert data["created"] == "2026-12-07T02:15:22+00:00" + EVIL
        assert data["run_id"] == "r" + EVIL
        assert data["stop"]["reason"].endswith(EVIL + "\n" + FORGED)

    def test_on_a_real_terminal_nothing_raw_arrives(self, hostile):
        """Through a pseudo-terminal, as a person running ``eventbus audit`` sees it: the bytes
        the terminal receives hold no escape, no 8-bit CSI, no U+202E, and a carriage return
        only where the terminal itself turns each newline into CR LF."""
        master, slave = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "eventbus", "audit", str(hostile)],
                                stdin=slave, stdout=slave, stderr=slave, env=_env())
        os.close(slave)
        received = b""
        deadline = time.monotonic() + 120
        try:
            while True:
                ready, _, _ = select.select([master], [], [],
                                             max(0.0, deadline - time.monotonic()))
                assert ready, "eventbus audit did not finish in 120 s"
                try:
                    chunk = os.read(master, 1 << 16)
                except OSError:  # EIO: the child exited and closed the terminal
                    break
                if not chunk:
                    break
                received += chunk
        finally:
            os.close(master)
            proc.kill()
            proc.wait(timeout=60)
        text = received.decode("utf-8", "surrogateescape").replace("\r\n", "\n")
        assert "ended: stopped by EarlyStopping" in text
        assert unsafe(text) == []
        assert "\\x1b]8;;http://127.0.0.1:1/x" in text


class TestReplayAndVerify:
    def test_a_mismatch_line_is_one_escaped_line(self, hostile):
        """replay --verify: the recorded reason differs from the replayed one, and the line that
        says so shows it escaped, its line break included."""
        done = eventbus("replay", hostile, "--verify")
        assert done.returncode == 1
        assert unsafe(done.stdout + done.stderr) == []
        (mismatch,) = [line for line in done.stderr.split("\n") if line]
        assert mismatch.startswith("verify: MISMATCH: ")
        assert "\\n" + FORGED in mismatch
        assert not any(line.startswith(FORGED) for line in done.stdout.split("\n"))

    def test_verify_text_shows_the_reason_escaped(self, hostile):
        done = eventbus("verify", hostile)
        assert done.returncode == 1
        assert unsafe(done.stdout + done.stderr) == []
        assert not any(line.startswith(FORGED) for line in done.stdout.split("\n"))
        text = render_verdicts([verify_log(hostile)])  # the same, as a library user calls it
        assert unsafe(text) == [] and "\\u202egpj.exe" in text

    def test_log_file_names_are_escaped_undecodable_bytes_included(self, tmp_path):
        """A directory someone else named the logs in: a title sequence and a byte that is not
        UTF-8 (a lone surrogate in Python) are shown escaped, in text and in --json."""
        logs = tmp_path / "logs"
        logs.mkdir()
        names = ["x" + TITLE + ".jsonl", os.fsdecode(b"y\xff.jsonl")]
        for name in names:
            (logs / name).write_bytes(GOLDEN.read_bytes())
        done = eventbus("verify", logs, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert unsafe(done.stdout + done.stderr) == []
        assert "x\\x1b]0;PWNED\\x07.jsonl" in done.stdout
        assert "y\\udcff.jsonl" in done.stdout
        as_json = eventbus("verify", logs, "--json", cwd=tmp_path)
        assert unsafe(as_json.stdout) == []
        assert sorted(v["log"] for v in json.loads(as_json.stdout)) == \
            sorted(str(logs / name) for name in names)


class TestErrorsAndWarnings:
    def test_an_error_quoting_a_field_name_is_one_escaped_line(self, tmp_path):
        """pydantic names the unexpected field in its message; the field is the log's."""
        records = [orjson.loads(line) for line in GOLDEN.read_bytes().splitlines()]
        next(r for r in records if r["kind"] == "save_checkpoint")["k" + EVIL] = 1
        done = eventbus("audit", write_log(tmp_path / "extra.jsonl", records))
        assert done.returncode == 2
        (line,) = done.stderr.split("\n")[:-1]
        assert line.startswith("eventbus audit: error: ")
        assert "k\\x1b]0;PWNED\\x07" in line
        assert unsafe(done.stderr) == []

    def test_a_warning_naming_a_hostile_file_is_escaped(self, tmp_path):
        """A torn last line is a warning that names the file: the name is shown escaped."""
        log = tmp_path / ("torn" + TITLE + ".jsonl")
        log.write_bytes(GOLDEN.read_bytes() + b'{"v":1,"kind":"epoch_end' + EVIL.encode())
        done = eventbus("audit", log)
        assert done.returncode == 0, done.stderr
        (warning,) = [line for line in done.stderr.split("\n") if line]
        assert warning.startswith("eventbus audit: warning: ")
        assert "torn\\x1b]0;PWNED\\x07.jsonl" in warning
        assert unsafe(done.stderr) == []

    def test_an_argument_argparse_refuses_is_escaped(self, tmp_path):
        """An extra file name a shell's glob found: argparse's error quotes it, escaped."""
        done = eventbus("replay", GOLDEN, "b" + TITLE + ".jsonl")
        assert done.returncode == 2
        assert "unrecognized arguments: b\\x1b]0;PWNED\\x07.jsonl" in done.stderr
        assert unsafe(done.stderr) == []


class TestWarningsALibraryUserSees:
    """Warnings a library user's own Bus shows go through Python's ``warnings`` to a terminal
    too: the text from a log or a plugin in them is escaped there as well."""

    def test_a_recorded_warning_and_a_torn_log_named_with_escapes(self, tmp_path):
        from eventbus import Bus, RunWarning, TornLogWarning
        from eventbus.log import read_log
        from eventbus.records import Warning as WarningRecord

        with pytest.warns(RunWarning) as shown, Bus() as bus:
            bus.record(WarningRecord(message="\x1b]0;pwned\x07 \x1b[2J done\u202e"))
        (text,) = [str(w.message) for w in shown]
        assert "\x1b" not in text and "\u202e" not in text and "\\x1b]0;pwned" in text

        path = tmp_path / "run\x1b[31m.jsonl"
        with Bus(log=path) as bus:
            bus.epoch_begin(0)
        with open(path, "ab") as file:
            file.write(b'{"v":1,"run_id":')  # a line cut by a crash
        with pytest.warns(TornLogWarning) as torn:
            list(read_log(path))
        assert all("\x1b" not in str(w.message) and "\\x1b[31m" in str(w.message)
                   for w in torn)

    def test_a_plugin_error_shown_as_it_is_isolated(self):
        from eventbus import Bus, Plugin, hookimpl
        from eventbus.policy import PluginIsolatedWarning

        class Hostile(Plugin):
            @hookimpl
            def on_epoch_end(self, event):
                raise KeyError("\x1b[2J")

        with pytest.warns(PluginIsolatedWarning) as shown, \
                Bus([Hostile()], on_plugin_error="isolate") as bus:
            bus.epoch_end(0, {"loss": 1.0})
        assert all("\x1b" not in str(w.message) for w in shown) and shown


class TestFit:
    words = st.text("abcdefghij", min_size=1, max_size=12)

    @given(st.lists(st.lists(words, max_size=30), max_size=6), st.integers(40, 200),
           st.integers(0, 8))
    def test_lines_fit_the_width_and_keep_every_word_in_order(self, lines, width, indent):
        from eventbus.terminal import fit

        text = "\n".join(" " * indent + " ".join(line) for line in lines)
        out = fit(text, width)
        assert all(len(line) <= width for line in out.split("\n"))
        assert out.split() == text.split()
        assert fit(text, None) == text

    # Words of ASCII, CJK (two columns each), fullwidth forms, letters with combining marks
    # (none) and an emoji (two), as a metric named in Chinese puts them in a reason.
    wide_words = st.text(st.sampled_from("ab\u9a8c\u8bc1\u96c6\uff21\u00e9e\u0301\u3042"
                                         "\U0001f642"),
                         min_size=1, max_size=40)

    @staticmethod
    def cells(text: str) -> int:
        """Terminal columns, counted here rather than by the module under test."""
        return sum(0 if unicodedata.combining(c) else
                   2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)

    @given(st.lists(st.lists(wide_words, max_size=20), max_size=5), st.integers(1, 120),
           st.integers(0, 8), st.booleans())
    def test_lines_fit_the_width_in_columns_and_lose_no_character(self, lines, width, indent,
                                                                   row):
        """A CJK character takes two columns: measured in characters, a line of them ran
        past the terminal's width and the terminal broke it mid-word."""
        from eventbus.terminal import fit

        prefix = "       8      3  stop_training     EarlyStopping        " if row else ""
        text = "\n".join(prefix + " " * indent + "  ".join(line) for line in lines)
        out = fit(text, width)
        # (A wide character alone, with any marks on it, is two columns however narrow.)
        assert all(self.cells(line) <= width for line in out.split("\n")
                   if sum(not unicodedata.combining(c) for c in line.strip()) > 1)
        assert "".join(out.split()) == "".join(text.split())

    @pytest.mark.parametrize("text", ["\u4e2d", "a \u4e2d", "\u4e2d\u4e2d b", "\U0001f642"])
    def test_a_wide_character_at_one_column_goes_on_a_line_of_its_own(self, text):
        """A wide character cannot fit one column: it takes a line alone, and what follows
        goes on (it raised IndexError)."""
        from eventbus.terminal import fit

        out = fit(text, 1)
        assert "".join(out.split()) == "".join(text.split())
        assert all(self.cells(line) <= 1 or len(line) == 1 for line in out.split("\n"))

    @given(st.lists(st.lists(words, max_size=30), max_size=6), st.integers(30, 200),
           st.integers(0, 8))
    def test_ascii_text_breaks_where_textwrap_breaks_it(self, lines, width, indent):
        """The column-counting fit changes nothing for ASCII: it breaks where
        ``textwrap.wrap`` does, with the same hanging indent."""
        import textwrap

        from eventbus.terminal import fit

        text = "\n".join(" " * indent + " ".join(line) for line in lines)
        hang = indent + 4 if width - indent - 4 >= 24 else min(indent + 4, width // 3)
        expected = [part for line in text.split("\n")
                    for part in ([line] if len(line) <= width else
                                 textwrap.wrap(line, width, subsequent_indent=" " * hang,
                                               break_on_hyphens=False) or [line])]
        assert fit(text, width).split("\n") == expected

    def test_a_word_of_megabytes_is_cut_in_one_pass(self):
        """textwrap cut a word wider than the line one line at a time, copying the rest each
        time: a 32 MB reason without a space held ``eventbus audit`` on a terminal for about
        5 minutes of CPU. The bound is the subprocess's generous limit,
        some 100 times what one pass takes."""
        script = ("from eventbus.terminal import fit\n"
                  "for word in ('R' * 32_000_000, '\\u9a8c' * 200_000):\n"
                  "    out = fit(word, 100).split('\\n')\n"
                  "    assert max(len(x) + x.count('\\u9a8c') for x in out) == 100\n"
                  "    assert ''.join(line.lstrip() for line in out) == word\n")
        repo = str(Path(__file__).resolve().parents[2])
        env = {**_env(), "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=120, env=env)
        assert done.returncode == 0, done.stderr

    def test_a_decision_row_goes_on_under_its_reason(self):
        from eventbus.terminal import fit

        row = ("      31      1  save_checkpoint   ModelCheckpoint      val_loss = 1.23176 at "
               "the end of epoch 1: the first value, so the best so far")
        first, *rest = fit(row, 80).split("\n")
        assert first.startswith("      31      1  save_checkpoint") and rest
        assert all(line.startswith(" " * 56) and line[56] != " " for line in rest)

    def test_the_audit_on_an_80_column_terminal_never_wraps_a_line(self, tmp_path):
        """`eventbus audit` in a real pseudo-terminal of 80 columns: every line fits (a
        reason, the plugin list, the checkpoint paths were one line each, wrapped mid-word
        by the terminal); piped, the lines stay whole for tools."""
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
        try:
            from terminal import run_in_pty
        finally:
            sys.path.pop(0)
        log = write_log(tmp_path / "run.jsonl", hostile_lines())
        out = run_in_pty(f"import sys; from eventbus.cli import main; "
                         f"sys.exit(main(['audit', {str(log)!r}]))", columns=80)
        lines = out.replace("\r\n", "\n").split("\n")
        assert len(lines) > 5 and max(len(line) for line in lines) <= 80
        piped = eventbus("audit", log)
        assert max(len(line) for line in piped.stdout.split("\n")) > 80

    def test_a_reason_in_chinese_fits_80_columns(self, tmp_path):
        """`eventbus audit` on an 80-column terminal, EarlyStopping monitoring a metric named
        in Chinese: measured in characters, the decision row was 77 long but 90 columns wide,
        and the terminal wrapped it inside the metric's name."""
        from plugins import EarlyStopping

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
        try:
            from terminal import run_in_pty
        finally:
            sys.path.pop(0)
        name = "\u9a8c\u8bc1\u96c6\u4e0a\u7684\u4ea4\u53c9\u71b5\u635f\u5931\u51fd\u6570\u503c"
        log = tmp_path / "run.jsonl"
        with Bus([EarlyStopping(monitor=name, patience=1, mode="min")], log=log) as bus:
            bus.train_begin({"epochs": 5})
            for epoch, value in enumerate([1.0, 0.9, 0.95, 0.97]):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": value, name: value})
                if bus.stop_training:
                    break
            bus.train_end()
        out = run_in_pty(f"import sys; from eventbus.cli import main; "
                         f"sys.exit(main(['audit', {str(log)!r}]))", columns=80)
        lines = out.replace("\r\n", "\n").split("\n")
        assert max(map(self.cells, lines)) <= 80
        # The name is wider than the reason column: the reason goes on a little in, whole.
        row = next(i for i, line in enumerate(lines) if "stop_training" in line)
        assert lines[row].endswith("EarlyStopping")
        assert lines[row + 1].startswith(" " * 11 + name + " did not improve on 0.9 (epoch 2)")


def test_a_write_while_a_block_is_drawn_erases_it_first(monkeypatch):
    """While a live block is drawn, standard output (a terminal) is guarded: a write from the
    block's thread erases the block first (its next draw comes below); one from another thread
    is written as it is; once no block is drawn the stream is the program's own again, and a
    stream the program put in place meanwhile is left to it."""
    import contextlib
    import io
    import sys
    import threading

    from eventbus import terminal

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    class Block:
        out, cleared, redrawn = io.StringIO(), 0, 0

        def clear(self) -> None:
            self.cleared += 1
            terminal.set_live(self, False)

        def redraw(self) -> None:
            self.redrawn += 1
            terminal.set_live(self, True)

    tty, block = Tty(), Block()
    monkeypatch.setattr(sys, "stdout", tty)
    terminal.set_live(block, True)
    assert type(sys.stdout) is terminal.GuardedStream and terminal.unguarded(sys.stdout) is tty
    other = threading.Thread(target=lambda: sys.stdout.write("from a thread "))
    other.start()
    other.join()
    assert block.cleared == 0
    print("mine")  # "mine", then "\n": erased before the one, drawn again after the other
    assert (block.cleared, block.redrawn) == (1, 1)
    assert tty.getvalue() == "from a thread mine\n"
    block.clear()
    assert sys.stdout is tty
    terminal.set_live(block, True)
    with contextlib.redirect_stdout(io.StringIO()) as redirected:
        terminal.set_live(block, False)
        assert sys.stdout is redirected


def test_a_forked_childs_print_leaves_the_parents_block_alone(tmp_path):
    """A DataLoader or multiprocessing worker forked while the bar is drawn inherits the
    guarded stream, and the same thread id: its prints must not erase the parent's block (the
    parent's next draw would then go up from below them, over the user's lines)."""
    script = """
import io, os, sys
from eventbus import terminal
class Tty(io.StringIO):
    def isatty(self): return True
class Block:
    out, cleared = io.StringIO(), 0
    def clear(self):
        self.cleared += 1
        terminal.set_live(self, False)
    def redraw(self): pass
sys.stdout = Tty()
block = Block()
terminal.set_live(block, True)
pid = os.fork()
if pid == 0:
    print("from the worker")
    os._exit(0 if block.cleared == 0 else 1)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr

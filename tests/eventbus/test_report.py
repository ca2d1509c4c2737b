"""eventbus report: the page model (what is drawn, the stop answer, the what-if) and its HTML.

The logs are written by real runs (the demo's NumPy model and loop with the built-in plugins,
a crashed and resumed run, a plugin whose name and reasons are hostile) and read back by the
real readers; the HTML is parsed by the standard library's HTML parser. The page in a real
browser is tested in test_report_browser.py.
"""

from __future__ import annotations

import hashlib
import html
import math
import re
import warnings
from html.parser import HTMLParser
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventbus import Bus, hookimpl, read_log, replay
from eventbus import records as r
from eventbus.audit import audit, render
from eventbus.cli import main
from eventbus.demo import init_model, make_data, train
from eventbus.effective import effective_records
from eventbus.errors import ConfigError, ReplayError
from eventbus.records import same_decision
from eventbus.report import (
    LEARNING_RATE,
    LOSSES,
    METRICS,
    build_page,
    curves_of,
    family_of,
    render_html,
    stop_answer,
    write_report,
)
from eventbus.testing import epochs, run
from plugins import BaseLogger, EarlyStopping, History, ModelCheckpoint, ReduceLROnPlateau

HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


def trained_run(out: Path) -> dict[str, Path]:
    """A short real run (the demo's model and loop) that EarlyStopping ends at epoch 13, with
    learning-rate cuts and checkpoints, logged as JSON Lines and as Parquet."""
    out.mkdir(parents=True, exist_ok=True)
    plugins = [BaseLogger(),
               ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, min_lr=0.01),
               EarlyStopping(monitor="val_loss", patience=4, min_delta=1e-3,
                             restore_best_weights=True),
               ModelCheckpoint(str(out / "ckpt-{epoch:02d}.h5"), monitor="val_loss",
                               save_best_only=True),
               History()]
    model = init_model(1)
    logs = {"jsonl": out / "run.jsonl", "parquet": out / "run.parquet"}
    with Bus(plugins, log=list(logs.values()), model=model, run_id="trained") as bus:
        train(bus, model, make_data(1, n=300), epochs=25, batch_size=32, seed=1)
    return logs


LOSSES_SEEN = [0.9, 0.8, 0.85, 0.84, 0.86, 0.83]


def _small_run(path: Path, *, resume: bool = False) -> None:
    with Bus([EarlyStopping(patience=3), ReduceLROnPlateau(patience=1, factor=0.5)], log=path,
             learning_rate=0.1, resume=resume, run_id="resumed") as bus:
        bus.train_begin({"epochs": len(LOSSES_SEEN)})
        for epoch in range(bus.initial_epoch, len(LOSSES_SEEN)):
            if bus.stop_training:
                break
            bus.epoch_begin(epoch)
            bus.batch_begin(0)
            bus.batch_end(0, {"loss": LOSSES_SEEN[epoch]})
            bus.epoch_end(epoch, {"loss": LOSSES_SEEN[epoch],
                                  "val_loss": LOSSES_SEEN[epoch] + 0.05})
        bus.train_end()


def resumed_run(path: Path) -> Path:
    """A run that crashed in its third epoch (its log cut there) and was resumed."""
    _small_run(path)
    lines = path.read_bytes().splitlines(keepends=True)
    third = next(i for i, line in enumerate(lines) if b'"epoch_begin"' in line
                 and orjson.loads(line)["epoch"] == 2)
    path.write_bytes(b"".join(lines[:third + 2]))
    _small_run(path, resume=True)
    return path


class Hostile:
    """A plugin whose name, warnings and stop reason carry markup."""

    name = "Evil" + HOSTILE

    @hookimpl
    def on_epoch_end(self, event):
        if event.epoch == 2:
            return r.StopTraining(reason="stop " + HOSTILE, code="rule" + HOSTILE,
                                  evidence={"monitor": HOSTILE, "mode": "min"})
        return r.Warning(message="warn " + HOSTILE)


def hostile_run(path: Path) -> Path:
    """A real run of :class:`Hostile`, with a metric named with markup too."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its warnings are RunWarnings: recorded is enough
        with Bus([Hostile()], log=path, learning_rate=0.1, run_id="run" + HOSTILE) as bus:
            bus.train_begin({"epochs": 5})
            for epoch in range(5):
                if bus.stop_training:
                    break
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": 1.0 / (epoch + 1), HOSTILE: 0.5 + epoch / 10})
            bus.train_end()
    return path


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report")
    made = trained_run(root / "trained")
    made["resumed"] = resumed_run(root / "resumed.jsonl")
    made["hostile"] = hostile_run(root / "hostile.jsonl")
    return made


@pytest.fixture(scope="module")
def page(logs):
    return build_page([logs["jsonl"]])


def epoch_ends(log: Path) -> list[r.EpochEnd]:
    return [e for e in effective_records(read_log(log)) if isinstance(e, r.EpochEnd)]


def plain(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")


class Tags(HTMLParser):
    """Every start tag of a document with its attributes, and its text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


# The elements the report is made of: anything else came from a log.
ALLOWED = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "h4", "p",
           "strong", "span", "section", "figure", "svg", "rect", "line", "text", "g", "path",
           "circle", "ul", "li", "code", "dl", "dt", "dd", "table", "thead", "tbody", "tr",
           "th", "td", "details", "summary", "div", "script"}


class TestPanels:
    def test_one_panel_per_family(self, page):
        """Losses, the other metrics and the learning rate each get a panel, in that order."""
        assert [(p.family, p.metrics) for p in page.panels] == [
            (LOSSES, ["loss", "val_loss"]), (METRICS, ["acc", "val_acc"]),
            (LEARNING_RATE, ["learning_rate"])]

    def test_the_curves_are_the_logged_epoch_values_counted_from_one(self, logs, page):
        """Each curve holds every epoch_end value the log has for it, at epoch + 1."""
        ends = epoch_ends(logs["jsonl"])
        for panel in page.panels:
            for curve in panel.curves:
                assert curve.points == tuple((e.epoch + 1, e.logs[curve.metric]) for e in ends)

    def test_a_learning_rate_cut_tenfold_falls_on_a_log_scale(self, logs, page):
        """Halved twice (1 to 0.25), the rate is drawn on a linear scale; cut by ten (the
        what-if of factor=0.1), on a log scale, where each cut is the same step."""
        assert not any(p.log_scale for p in page.panels)
        cut = build_page([logs["jsonl"]], overrides={"ReduceLROnPlateau": {"factor": 0.1}})
        assert [p.log_scale for p in cut.panels] == [False, False, True]

    def test_the_best_epoch_is_the_first_that_reached_the_lowest_val_loss(self, logs, page):
        """The best val_loss, found here from the log independently of the audit."""
        ends = epoch_ends(logs["jsonl"])
        lowest = min(e.logs["val_loss"] for e in ends)
        first = next(e.epoch + 1 for e in ends if e.logs["val_loss"] == lowest)
        (losses,) = [p for p in page.panels if p.family == LOSSES]
        assert [(b.metric, b.epoch, b.value, b.mode) for b in losses.best] == [
            ("val_loss", first, lowest, "min")]

    def test_every_decision_is_a_mark_at_its_epoch_with_its_reason(self, logs, page):
        """One mark per recorded decision, at its epoch counted from 1, saying its reason."""
        decisions = [d for d in read_log(logs["jsonl"]) if isinstance(d, r.Decision)]
        assert len(decisions) > 10
        assert [(m.epoch, m.kind, m.source) for m in page.marks] == [
            (d.epoch + 1, d.kind, d.source) for d in decisions]
        for mark, decision in zip(page.marks, decisions):
            assert decision.reason in mark.text and not mark.what_if

    def test_jsonl_and_parquet_give_the_same_page(self, logs):
        """Both formats are read by the project's readers into the same page."""
        a, b = (build_page([logs[k]], labels=["run"]) for k in ("jsonl", "parquet"))
        assert a.panels == b.panels and a.marks == b.marks
        assert a.runs[0].stop == b.runs[0].stop

    def test_several_logs_are_overlaid(self, logs):
        """Two runs: each metric's curves of both, the marks of both, a label for each."""
        page = build_page([logs["jsonl"], logs["resumed"]])
        assert [run.label for run in page.runs] == ["run.jsonl", "resumed.jsonl"]
        (losses,) = [p for p in page.panels if p.family == LOSSES]
        assert {(c.run, c.metric) for c in losses.curves} == {
            (0, "loss"), (0, "val_loss"), (1, "loss"), (1, "val_loss")}
        assert {m.run for m in page.marks} == {0, 1}
        assert page.epochs == (1, len(epoch_ends(logs["jsonl"])))
        text = render_html(page)
        assert text.count('class="curve"') == sum(len(p.curves) for p in page.panels)
        assert "2 runs compared" in text

    def test_logs_of_the_same_name_are_labelled_by_path(self, logs, tmp_path):
        """run.jsonl twice (two folders): the labels say which is which."""
        other = tmp_path / "run.jsonl"
        other.write_bytes(logs["jsonl"].read_bytes())
        page = build_page([logs["jsonl"], other])
        assert [run.label for run in page.runs] == [str(logs["jsonl"]), str(other)]

    def test_no_log_is_an_error_naming_the_argument(self):
        with pytest.raises(ConfigError, match="logs must be a non-empty list") as caught:
            build_page([])
        assert caught.value.field == "logs"

    @given(st.text(max_size=30))
    def test_a_metric_is_drawn_in_exactly_one_family(self, name):
        """The learning rate by its names; a loss by the word; the rest are metrics."""
        family = family_of(name)
        lowered = name.lower()
        if lowered in ("lr", "learning_rate") or lowered.endswith(("_lr", "learning_rate")):
            assert family == LEARNING_RATE
        elif "loss" in lowered:
            assert family == LOSSES
        else:
            assert family == METRICS


class TestValuesThatAreNotCurves:
    def test_a_vector_metric_is_left_out_of_the_curves(self):
        """A list of floats (vector metrics) is no curve point; the page is drawn anyway."""
        _, records = run([EarlyStopping(monitor="loss", patience=5)],
                         epochs(loss=[0.5, 0.4, 0.3]))
        ends = [i for i, rec in enumerate(records) if isinstance(rec, r.EpochEnd)]
        for i in ends:  # as a log with vector metrics has them: a list among the floats
            fields = {**records[i].__dict__, "logs": {**records[i].logs, "weights": [0.1, 0.2]}}
            records[i] = r.trusted(r.EpochEnd, fields)
        page = build_page([records])
        assert [p.metrics for p in page.panels] == [["loss"]]
        assert "weights" in render_html(page)  # told, not drawn

    def test_a_list_in_the_audits_curves_is_skipped_and_named(self, logs):
        """Should the audit keep vector values among its curves, they are still not drawn."""
        result = audit(logs["resumed"])
        result.curves["weights"] = [(0, [0.1, 0.2]), (1, [0.3, 0.4])]  # type: ignore[list-item]
        curves, skipped = curves_of(result, 0)
        assert "weights" not in {c.metric for c in curves}
        assert skipped == ["weights at epoch 1", "weights at epoch 2"]

    def test_nan_breaks_the_line(self):
        """A NaN epoch is a gap: the curve has a None there and its path starts again."""
        _, records = run([], epochs(loss=[0.5, math.nan, 0.3, 0.2]))
        page = build_page([records])
        (curve,) = page.panels[0].curves
        assert curve.points == ((1, 0.5), (2, None), (3, 0.3), (4, 0.2))
        paths = re.findall(r'<path class="curve" d="([^"]*)"', render_html(page))
        assert [p.count("M") for p in paths] == [2]


class TestStopAnswer:
    def test_the_answer_is_the_audits(self, logs, page):
        """Who stopped it, by which rule, at which epoch and why, as the audit says it."""
        result = audit(logs["jsonl"])
        stop = result.stop
        assert stop is not None
        answer = page.runs[0].stop
        assert answer == (f"Stopped by {stop.source}, rule {stop.code} at epoch "
                          f"{stop.epoch + 1}: {stop.reason}")
        assert answer.lower() in render(result).lower()

    def test_the_answer_is_at_the_top_of_the_page(self, page):
        text = render_html(page)
        why = text.index('id="why"')
        assert why < text.index('id="charts"')
        assert html.escape(page.runs[0].stop) in text[why:text.index('id="charts"')]

    def test_a_run_that_ran_every_epoch(self):
        _, records = run([], epochs(loss=[0.5, 0.4]))
        assert stop_answer(audit(records)) == "Completed every planned epoch"

    def test_a_run_with_no_end(self):
        _, records = run([], epochs(loss=[0.5, 0.4]))
        result = audit(records[:-1])  # no train_end: crashed, or still running
        assert stop_answer(result).startswith("No train_end in the log")


class TestWhatIf:
    def test_a_what_if_that_stops_earlier(self, logs):
        """patience=1: the replay's stop is drawn, its decisions marked as the what-if's."""
        overrides = {"EarlyStopping": {"patience": 1}}
        expected = replay(logs["jsonl"], overrides=overrides)
        page = build_page([logs["jsonl"]], overrides=overrides)
        what_if = page.runs[0].what_if
        assert what_if is not None and expected.stopped_at is not None
        assert what_if.stopped_at == expected.stopped_at + 1
        assert f"would have stopped at epoch {expected.stopped_at + 1}" in what_if.summary
        assert what_if.settings == "EarlyStopping.patience=1"
        # Drawn: the what-if's decisions the run did not make (from its stop on, here).
        replayed = [m for m in page.marks if m.what_if]
        new = [d for d in expected.decisions
               if not any(same_decision(d, old) for old in expected.recorded)]
        assert new and new[0].kind == "stop_training"
        assert [(m.epoch, m.kind) for m in replayed] == [(d.epoch + 1, d.kind) for d in new]
        for mark, decision in zip(replayed, new):
            assert mark.text.startswith("what-if, run.jsonl: ") and decision.reason in mark.text
        text = render_html(page)
        assert "what-if stop" in text and "What if?" in text

    def test_a_what_if_with_the_recorded_parameters_adds_no_mark(self, logs, page):
        """It decides as the run did: nothing of its own is drawn, and it stops where the
        run stopped."""
        same = build_page([logs["jsonl"]], overrides={"EarlyStopping": {"patience": 4}})
        assert [m for m in same.marks if m.what_if] == []
        assert same.runs[0].what_if.stopped_at == page.runs[0].audit.stop.epoch + 1

    def test_a_what_if_on_a_metric_the_log_never_holds_says_so(self, logs):
        """The replayed plugin's warning ends the what-if's sentence: the answer alone would
        read as a fact about a metric that is not there."""
        page = build_page([logs["jsonl"]], overrides={"EarlyStopping": {
            "monitor": "val_los", "mode": "min"}})
        summary = page.runs[0].what_if.summary
        assert "no plugin would have stopped the run" in summary
        assert summary.split(". ", 1)[1].startswith(
            "The replayed plugins warned: EarlyStopping: Early stopping conditioned on metric "
            "`val_los` which is not available")
        assert "warned" in render_html(page)

    def test_a_what_if_that_never_stops_says_within_the_recorded_epochs(self, logs):
        page = build_page([logs["jsonl"]], overrides={"EarlyStopping": {"patience": 1000}})
        n = len(epoch_ends(logs["jsonl"]))
        assert page.runs[0].what_if.summary.endswith(
            f"no plugin would have stopped the run within the {n} recorded epochs.")
        assert page.runs[0].what_if.stopped_at is None

    def test_a_what_if_that_changes_the_rate_is_an_estimate_said_first(self, logs):
        """Another learning rate: the caveat leads, and the what-if's rate is drawn."""
        overrides = {"ReduceLROnPlateau": {"factor": 0.1}}
        expected = replay(logs["jsonl"], overrides=overrides)
        page = build_page([logs["jsonl"]], overrides=overrides)
        what_if = page.runs[0].what_if
        assert expected.diverged_at is not None
        ends = {e.seq: e.epoch for e in read_log(logs["jsonl"])
                if isinstance(e, (r.EpochBegin, r.EpochEnd))}
        assert what_if.diverged_at == ends[expected.diverged_at] + 1
        assert what_if.summary.startswith(f"An estimate from epoch {what_if.diverged_at} on")
        (lr,) = [p for p in page.panels if p.family == LEARNING_RATE]
        (recorded,) = [c for c in lr.curves if not c.what_if]
        (replayed,) = [c for c in lr.curves if c.what_if]
        cut = next(d for d in expected.decisions if d.kind == "set_learning_rate")
        # The same rate up to the epoch of the first cut; 0.1 of it after.
        assert replayed.points[:cut.epoch + 1] == recorded.points[:cut.epoch + 1]
        assert replayed.points[cut.epoch + 1][1] == pytest.approx(cut.value)
        assert cut.value == pytest.approx(recorded.points[0][1] * 0.1)

    def test_a_what_if_of_a_plugin_the_run_lacks_names_the_log(self, logs):
        with pytest.raises(ReplayError, match=r"^resumed\.jsonl: overrides name plugins the "
                                              r"run did not have: \['ModelCheckpoint'\]"):
            build_page([logs["resumed"]], overrides={"ModelCheckpoint": {"verbose": 1}})


class TestCheckpointsResumesFaults:
    def test_checkpoints_with_their_hashes_as_on_disk(self, logs, page):
        """Every checkpoint's path and full sha256, which is the file's on disk."""
        checkpoints = page.runs[0].audit.checkpoints
        assert len(checkpoints) >= 3
        text = render_html(page)
        for c in checkpoints:
            assert hashlib.sha256(Path(c["path"]).read_bytes()).hexdigest() == c["sha256"]
            assert f'<code class="hash">{c["sha256"]}</code>' in text
            assert html.escape(c["path"]) in text
        assert f"Checkpoints ({len(checkpoints)})" in text

    def test_a_resume_is_marked_and_listed(self, logs):
        page = build_page([logs["resumed"]])
        (resume,) = [m for m in page.marks if m.kind == "resumed"]
        assert resume.epoch == 2 and "resumed at epoch 3" in resume.text
        assert "Resumes (1)" in render_html(page)

    def test_warnings_are_marked_and_listed(self, logs):
        page = build_page([logs["hostile"]])
        warned = [m for m in page.marks if m.kind == "warning"]
        assert [m.epoch for m in warned] == [1, 2]
        assert "Warnings and faults (2)" in render_html(page)


class TestEscaping:
    def test_nothing_from_a_hostile_log_becomes_markup(self, logs):
        """Plugin names, reasons, warnings, metric names and the run id carrying <script> and
        an <img onerror>: the page's elements are its own, the strings are text."""
        text = render_html(build_page([logs["hostile"]]))
        parsed = Tags(text)
        assert {tag for tag, _ in parsed.tags} <= ALLOWED
        assert [tag for tag, _ in parsed.tags].count("script") == 2
        assert not [(t, a) for t, attrs in parsed.tags for a in attrs if a.startswith("on")]
        assert "<img" not in text and "<script>alert" not in text
        shown = "".join(parsed.text)
        for said in ("stop " + HOSTILE, "warn " + HOSTILE, "Evil" + HOSTILE, "run" + HOSTILE):
            assert said in shown

    def test_the_scripts_data_cannot_end_its_element(self, logs):
        """Names in the hover data are JSON with < > & escaped: they read back as they were."""
        text = render_html(build_page([logs["hostile"]]))
        block = re.search(r'<script type="application/json" id="report-data">(.*?)</script>',
                          text, re.S)
        assert block is not None and "<" not in block.group(1)
        names = {s["name"] for p in orjson.loads(block.group(1))["panels"] for s in p["series"]}
        assert HOSTILE in names

    def test_only_the_pages_own_script_may_run(self, page):
        """The policy names the inline script by its hash and lets nothing be fetched."""
        text = render_html(page)
        policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', text)
        assert policy is not None
        rules = html.unescape(policy.group(1))
        assert "default-src 'none'" in rules and "unsafe-inline" not in rules.split(
            "script-src")[1].split(";")[0]
        script = re.findall(r"<script>(.*?)</script>", text, re.S)[-1]
        import base64

        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"script-src 'sha256-{digest}'" in rules
        assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "https://" not in text

    @settings(max_examples=25, deadline=None)
    @given(st.text(min_size=1, max_size=40))
    def test_any_reason_is_text(self, reason):
        """Whatever a reason holds, the page's elements stay its own and the reason reads
        back whole."""

        class Says:
            name = "Says"

            @hookimpl
            def on_epoch_end(self, event):
                return r.StopTraining(reason=reason)

        _, records = run([Says()], epochs(loss=[0.5, 0.4]))
        text = render_html(build_page([records]))
        parsed = Tags(text)
        assert {tag for tag, _ in parsed.tags} <= ALLOWED
        assert [tag for tag, _ in parsed.tags].count("script") == 2
        assert not [a for _, attrs in parsed.tags for a in attrs if a.startswith("on")]
        # The reason reads back whole (line ends and NUL as an HTML parser may change them).
        assert plain(reason) in plain("".join(parsed.text))


class TestFileAndCommand:
    def test_write_report_writes_one_self_contained_file(self, logs, tmp_path):
        out = tmp_path / "report.html"
        page = write_report([logs["jsonl"]], out)
        text = out.read_text(encoding="utf-8")
        assert text.startswith("<!DOCTYPE html>") and text == render_html(page)
        assert not (tmp_path / "report.html.tmp").exists()

    def test_the_command_writes_the_page(self, logs, tmp_path, capsys):
        out = tmp_path / "r.html"
        code = main(["report", str(logs["jsonl"]), str(logs["parquet"]), "-o", str(out),
                     "--set", "EarlyStopping.patience=1"])
        assert code == 0
        assert f"wrote {out}: 2 run(s), 3 panel(s) with a what-if" in capsys.readouterr().out
        text = out.read_text(encoding="utf-8")
        assert text.count("What if?") == 2 and "2 runs compared" in text

    def test_the_command_refuses_to_replace_a_file_it_did_not_write(self, logs, tmp_path,
                                                                     capsys):
        out = tmp_path / "notes.html"
        out.write_text("my notes")
        assert main(["report", str(logs["jsonl"]), "-o", str(out)]) == 2
        assert "--out" in capsys.readouterr().err and out.read_text() == "my notes"
        assert main(["report", str(logs["jsonl"]), "-o", str(out), "--force"]) == 0
        # Its own report it replaces without asking.
        assert main(["report", str(logs["resumed"]), "-o", str(out)]) == 0
        assert "resumed.jsonl" in out.read_text(encoding="utf-8")

    def test_the_command_names_a_missing_log(self, tmp_path, capsys):
        assert main(["report", str(tmp_path / "nope.jsonl"), "-o",
                     str(tmp_path / "r.html")]) == 2
        assert "nope.jsonl: no such file" in capsys.readouterr().err
        assert not (tmp_path / "r.html").exists()


def test_a_panel_draws_at_most_so_many_curves_a_run_the_monitored_first(tmp_path):
    """A log of 40 metrics (a hostile one has hundreds of thousands: the page was 29 times
    the log and the report took gigabytes): each panel draws at most MOST_CURVES a run,
    never leaving out the monitored one, and says how many it left out."""
    from eventbus.audit import MOST_CURVES
    from eventbus.report import render_html

    log = tmp_path / "wide.jsonl"
    names = [f"acc_{i:02d}" for i in range(40)]
    with Bus([EarlyStopping(monitor="acc_39", mode="max", patience=50)], log=log) as bus:
        bus.train_begin()
        for epoch in range(3):
            bus.epoch_begin(epoch)
            bus.epoch_end(epoch, {name: 0.1 * epoch for name in names})
        bus.train_end()
    page = build_page([log])
    (panel,) = [p for p in page.panels if p.family == METRICS]
    drawn = [c.metric for c in panel.curves]
    assert len(drawn) == MOST_CURVES and "acc_39" in drawn
    assert panel.left_out == 40 - MOST_CURVES
    assert f"({40 - MOST_CURVES} more metric(s) not drawn" in render_html(page)

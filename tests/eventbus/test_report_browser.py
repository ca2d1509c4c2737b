"""eventbus report in a real headless browser: Debian's Chromium, driven by Playwright.

The page is opened from its file as a user would open it, with every request recorded (and
any to the network refused): it must need none, log no console error, say why the run
stopped, draw its panels, show a decision's reason on hover, and run no script from a hostile
log. The screenshot is checked for what it shows.

Skipped, saying why, where Chromium (``apt install chromium``) or Playwright
(``pip install playwright``) is missing. ``EVENTBUS_REPORT_SCREENSHOT=PATH`` keeps the
screenshot of the report at PATH (docs/img/report.png is one).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from test_report import HOSTILE, hostile_run, trained_run

from eventbus import Bus
from eventbus.audit import audit
from eventbus.cli import main
from plugins import EarlyStopping

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the browser test needs Playwright: pip install playwright")
Image = pytest.importorskip("PIL.Image", reason="the screenshot is checked with Pillow")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason=f"the browser test needs Chromium at {CHROMIUM} "
                                       "(apt install chromium)")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


#: The name Keras gives a two-output model's metric: the run's facts list "best <it>".
LONG_NAME = "val_classification_head_sparse_categorical_accuracy"


def long_name_run(path: Path) -> Path:
    """A run that monitors a metric with a long name, stopped early."""
    with Bus([EarlyStopping(monitor=LONG_NAME, patience=2, mode="max")], log=path,
             run_id="long-name") as bus:
        bus.train_begin({"epochs": 6})
        for epoch, value in enumerate([0.5, 0.6, 0.55, 0.52, 0.5, 0.5]):
            bus.epoch_begin(epoch)
            bus.epoch_end(epoch, {"loss": 1 - value, LONG_NAME: value})
            if bus.stop_training:
                break
        bus.train_end()
    return path


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    """The report of a real run with a what-if, of a hostile run and of a run monitoring a
    long metric name, written by the command."""
    root = tmp_path_factory.mktemp("browser")
    logs = trained_run(root / "trained")
    hostile = hostile_run(root / "hostile.jsonl")
    long = long_name_run(root / "long.jsonl")
    made = {"log": logs["jsonl"], "report": root / "report.html",
            "hostile": root / "hostile.html", "long": root / "long.html",
            "two runs": root / "two.html"}
    assert main(["report", str(logs["jsonl"]), "-o", str(made["report"]),
                 "--set", "EarlyStopping.patience=2"]) == 0
    assert main(["report", str(hostile), "-o", str(made["hostile"])]) == 0
    assert main(["report", str(long), "-o", str(made["long"])]) == 0
    # Two runs whose logs lie deep: the run key under the heading holds the long paths.
    deep = root / "runs" / "resnet50_imagenet_baseline_lr_0.1_batch_256" / "attempt_3"
    deep.mkdir(parents=True)
    other = long_name_run(deep / "events_of_the_long_named_metric_run.jsonl")
    assert main(["report", str(long), str(other), "-o", str(made["two runs"])]) == 0
    return made


class Opened:
    """A report opened in a fresh browser context, with what the page did recorded."""

    def __init__(self, browser, path: Path, width: int = 1200):
        self.url = path.resolve().as_uri()
        self.requests: list[str] = []
        self.refused: list[str] = []
        self.console: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.context = browser.new_context(viewport={"width": width, "height": 900},
                                           offline=True)
        self.context.route("**/*", self._route)
        page = self.page = self.context.new_page()
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("console", lambda message: self.console.append((message.type, message.text)))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("dialog", self._dialog)
        page.goto(self.url, wait_until="load")

    def _route(self, route) -> None:
        if route.request.url == self.url:
            route.continue_()
        else:
            self.refused.append(route.request.url)
            route.abort()

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def opened(browser, reports):
    pages: list[Opened] = []

    def open_(name: str, width: int = 1200) -> Opened:
        pages.append(Opened(browser, reports[name], width))
        return pages[-1]

    yield open_
    for page in pages:
        page.close()


def image(png: bytes) -> np.ndarray:
    """The PNG's pixels, height x width x RGB."""
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def spread(pixels: np.ndarray) -> float:
    """The standard deviation of the pixels' grey levels: 0 for a blank image."""
    return float(pixels.mean(axis=2).std())


def has_colour(pixels: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 40) -> int:
    """How many pixels are near ``rgb``."""
    return int((np.abs(pixels - np.array(rgb)) <= tolerance).all(axis=2).sum())


class TestInTheBrowser:
    def test_it_loads_with_nothing_from_the_network_and_no_console_error(self, opened):
        page = opened("report")
        assert page.requests == [page.url]
        assert page.refused == []
        assert [m for m in page.console if m[0] in ("error", "warning")] == []
        assert page.errors == [] and page.dialogs == []

    @pytest.mark.parametrize("report", ["report", "long", "two runs"])
    def test_on_a_phone_the_page_does_not_scroll_sideways_and_the_charts_are_readable(
            self, opened, report):
        """375 px wide: the charts keep a width their text can be read at and scroll in their
        own box, as the tables do; the page itself is never wider than the screen (the charts'
        text was 3 px high, a table made the whole page scroll sideways, and so did the run's
        facts with "best <a long metric name>" as a label)."""
        page = opened(report, width=375)
        widths = page.page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert widths[0] <= widths[1], widths
        past = page.page.evaluate(
            "[...document.querySelectorAll('body *')].filter(e => !e.closest("
            "'.panel-box, .table-box') && e.getBoundingClientRect().right > "
            "document.documentElement.clientWidth + 1).map(e => e.tagName)")
        assert past == [], past  # nothing cut off at the right edge either
        smallest = page.page.evaluate(
            "Math.min(...[...document.querySelectorAll('svg.panel text')]"
            ".filter(t => t.textContent.trim())"
            ".map(t => t.getBoundingClientRect().height))")
        assert smallest >= 8, smallest

    def test_it_says_why_the_run_stopped_at_the_top(self, opened, reports):
        stop = audit(reports["log"]).stop
        assert stop is not None
        page = opened("report").page
        why = page.locator("#why")
        text = why.inner_text()
        assert stop.reason in text and f"at epoch {stop.epoch + 1}" in text
        assert "What if?" in text
        # At the top: above the charts, in the first screenful.
        box = why.bounding_box()
        assert box is not None and box["y"] < page.locator("#charts").bounding_box()["y"]
        assert box["y"] + box["height"] < 900

    def test_three_panels_with_their_curves_are_drawn(self, opened):
        page = opened("report").page
        panels = page.locator("svg.panel")
        assert panels.count() == 3
        assert [panels.nth(i).get_attribute("data-family") for i in range(3)] == [
            "losses", "metrics", "learning rate"]
        for i in range(3):
            box = panels.nth(i).bounding_box()
            assert box is not None and box["width"] > 800 and box["height"] > 200
            lengths = panels.nth(i).locator("path.curve").evaluate_all(
                "paths => paths.map(p => p.getTotalLength())")
            assert lengths and min(lengths) > 100

    def test_hovering_a_decision_shows_its_reason(self, opened, reports):
        """The page's own script runs (its hash is allowed) and shows the reason at once."""
        stop = audit(reports["log"]).stop
        page = opened("report").page
        glyph = page.locator("svg.panel").first.locator(
            'g.mark[data-kind="stop_training"]:not(.whatif)')
        assert glyph.count() == 1
        glyph.hover()
        tip = page.locator("#tip")
        tip.wait_for(state="visible")
        assert stop.reason in tip.inner_text()
        # Over a curve: the values at that epoch.
        box = page.locator("svg.panel").first.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.6)
        assert tip.inner_text().startswith("epoch ") and "val_loss: " in tip.inner_text()

    def test_the_read_out_near_the_window_s_bottom_stays_in_the_window(self, opened):
        """Hovered near the bottom of the window, the read-out goes above the pointer: below
        it, its last lines (the values hovered for) were cut off by the window's edge."""
        page = opened("report").page
        panel = page.locator("svg.panel").nth(2)
        panel.scroll_into_view_if_needed()
        box = panel.bounding_box()
        page.evaluate(f"window.scrollBy(0, {box['y'] + box['height'] - 880})")
        box = panel.bounding_box()
        assert 860 <= box["y"] + box["height"] <= 900  # the panel ends at the window's bottom
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] - 12)
        tip = page.locator("#tip")
        tip.wait_for(state="visible")
        shown = tip.bounding_box()
        assert tip.inner_text().startswith("epoch ")
        assert shown["y"] >= 0 and shown["y"] + shown["height"] <= 900, shown

    def test_the_screenshot_shows_the_panels(self, opened, tmp_path):
        page = opened("report").page
        png = page.screenshot(full_page=True)
        whole = image(png)
        assert whole.shape[1] == 1200 and whole.shape[0] > 1500
        assert spread(whole) > 20
        for i in range(3):
            panel = image(page.locator("svg.panel").nth(i).screenshot())
            assert spread(panel) > 10
            # The first curve colour of every panel, and the stop glyph's red, are drawn.
            assert has_colour(panel, (0x1F, 0x77, 0xB4)) > 100
            assert has_colour(panel, (0xD6, 0x27, 0x28), tolerance=30) > 20
        keep = os.environ.get("EVENTBUS_REPORT_SCREENSHOT")
        target = Path(keep) if keep else tmp_path / "report.png"
        target.write_bytes(png)

    def test_a_hostile_log_runs_no_script(self, opened):
        """Names and reasons holding <script> and <img onerror>: shown as text, none run."""
        page = opened("hostile")
        assert page.dialogs == [] and page.errors == []
        assert [m for m in page.console if m[0] in ("error", "warning")] == []
        assert page.page.evaluate("document.images.length") == 0
        assert page.page.evaluate("document.scripts.length") == 2
        assert page.requests == [page.url] and page.refused == []
        why = page.page.locator("#why").inner_text()
        assert "stop " + HOSTILE in why

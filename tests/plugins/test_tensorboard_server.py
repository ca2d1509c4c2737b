"""What a person sees in TensorBoard: the demo's event files served by TensorBoard's own server
(started on 127.0.0.1, both data loaders), read through its HTTP data API, and a screenshot
of its Text tab taken with the system's Chromium."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventbus import read_log
from eventbus.demo import run_demo
from eventbus.records import Decision

CHROMIUM = "/usr/bin/chromium"
#: How long TensorBoard may take to start and load the files before a test gives up (the
#: assertions themselves are on what it serves, never on how fast).
PATIENCE = 90.0
#: The demo's train run as the server names it, serving the directory above the demo's.
TRAIN = "run/tensorboard/train"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("demo") / "run"
    run_demo(out=out, progress=False)
    decisions = [r for r in read_log(out / "events.jsonl") if isinstance(r, Decision)]
    return {"root": out.parent, "out": out, "decisions": decisions}


class TensorBoardServer:
    """TensorBoard's server on 127.0.0.1 and a port it picks (``--port 0``)."""

    def __init__(self, logdir: Path, *flags: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host",
             "127.0.0.1", "--port", "0", *flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def url(self) -> str:
        """Its base URL, once it prints that it serves."""
        for line in self.proc.stderr:
            found = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
            if found:
                return found[1]
        raise AssertionError("TensorBoard exited without serving")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stderr.close()


# The demo has more steps with decisions than the slow loader keeps by default (10 text
# samples a tag): docs/plugins/tensorboard.md says to pass --samples_per_plugin there.
LOADERS = {"fast (default)": (), "slow": ("--load_fast=false", "--samples_per_plugin=text=1000")}


@pytest.fixture(scope="module")
def servers(demo) -> Iterator[dict[str, str]]:
    """Both loaders serving the demo's directory, started side by side."""
    started = {name: TensorBoardServer(demo["root"], *flags) for name, flags in LOADERS.items()}
    try:
        yield {name: server.url() for name, server in started.items()}
    finally:
        for server in started.values():
            server.stop()


def get(url: str, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def served(url: str, path: str, ready, body: dict | None = None):
    """What ``path`` serves once ``ready(answer)`` holds (TensorBoard loads files in the
    background); the last answer when it never does, for the assertion to show."""
    deadline = time.monotonic() + PATIENCE
    answer = None
    while time.monotonic() < deadline:
        try:
            answer = get(url, path, body)
        except OSError:
            answer = None
        if answer is not None and ready(answer):
            return answer
        time.sleep(0.5)
    return answer


def rows(entry_html: str) -> list[list[str]]:
    """The body rows of the decision table in one served text entry, cell texts unescaped."""
    inner = entry_html[entry_html.index("<thead>"):]
    return [[html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", inner.split("<tbody>", 1)[1], re.S)]


@pytest.mark.parametrize("loader", list(LOADERS))
def test_every_decision_is_served(demo, servers, loader):
    """Each of the demo's decisions is a row of the text entry at its epoch, source, kind and
    reason as recorded, and a marker scalar at that step; the run's parameters and final
    metrics are in the HParams tab."""
    decisions = demo["decisions"]
    by_step: dict[int, list[Decision]] = {}
    for decision in decisions:
        by_step.setdefault(decision.epoch, []).append(decision)
    url = servers[loader]
    path = f"data/plugin/text/text?run={TRAIN}&tag=decisions"
    entries = served(url, path, lambda a: len(a) == len(by_step))
    assert [e["step"] for e in entries] == sorted(by_step)
    for entry in entries:
        got = rows(entry["text"])
        want = by_step[entry["step"]]
        assert [(source, what.split()[0], why) for source, what, why in got] == \
            [(d.source, d.kind, d.reason) for d in want]
    assert sum(len(rows(e["text"])) for e in entries) == len(decisions) == 23

    for marker, kind in (("stop", "stop_training"), ("lr_cut", "set_learning_rate"),
                         ("checkpoint", "save_checkpoint")):
        steps = [d.epoch for d in decisions if d.kind == kind]
        points = served(url, f"data/plugin/scalars/scalars?run={TRAIN}&tag=decisions/{marker}",
                        lambda a, steps=steps: len(a) == len(steps))
        assert [step for _, step, _ in points] == steps, marker

    # The session is the run's log directory (run/tensorboard); its runs are the groups.
    wanted = {("train", "epoch_loss"), ("validation", "epoch_loss")}

    def metrics(answer: dict) -> set[tuple[str, str]]:
        return {(m["name"]["group"], m["name"]["tag"]) for m in answer.get("metricInfos", [])}

    experiment = served(url, "data/plugin/hparams/experiment",
                        lambda a: wanted <= metrics(a), {"experimentName": ""})
    names = {h["name"] for h in experiment["hparamInfos"]}
    assert {"EarlyStopping.patience", "ReduceLROnPlateau.factor", "params.epochs",
            "params.batch_size", "meta.seed"} <= names
    assert wanted <= metrics(experiment)
    last_epoch = max(d.epoch for d in decisions)

    def final_loss(answer: dict) -> list[dict]:
        return [m for g in answer.get("sessionGroups", []) for m in g["metricValues"]
                if m["name"] == {"group": "validation", "tag": "epoch_loss"}]

    groups = served(url, "data/plugin/hparams/session_groups", lambda a: any(
        m["trainingStep"] == last_epoch for m in final_loss(a)), {
        "experimentName": "", "startIndex": 0, "sliceSize": 10,
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                            "STATUS_RUNNING"],
        "colParams": [{"hparam": "EarlyStopping.patience"},
                      {"metric": {"group": "validation", "tag": "epoch_loss"}}]})
    (group,) = groups["sessionGroups"]
    assert group["hparams"]["EarlyStopping.patience"] == 6
    assert [m["trainingStep"] for m in final_loss(groups)] == [last_epoch]


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}")
def test_screenshots_of_the_decisions_and_hparams(servers, tmp_path):
    """TensorBoard's Text tab, opened in Chromium, shows the last epoch's decisions (the stop
    among them), and its HParams tab the run's parameters; each page is saved as a PNG
    (EVENTBUS_DOCS_IMG=DIR copies them there too, for docs/img)."""
    from playwright.sync_api import sync_playwright

    url = servers["fast (default)"]
    served(url, f"data/plugin/text/text?run={TRAIN}&tag=decisions",
           lambda a: len(a) > 10)
    pages = {"decisions": ("#text&tagFilter=decisions",
                           ["stop_training", "restore_weights", "val_loss did not improve"]),
             "hparams": ("#hparams", ["EarlyStopping.patience", "ReduceLROnPlateau.factor"])}
    shown: dict[str, list[bool]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            for name, (fragment, words) in pages.items():
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(url + fragment, timeout=PATIENCE * 1000)
                # Locators look inside the dashboards' shadow DOM, where the entries are.
                page.get_by_text(words[0]).first.wait_for(timeout=PATIENCE * 1000)
                shown[name] = [page.get_by_text(word).first.is_visible() for word in words]
                page.screenshot(path=str(tmp_path / f"tensorboard-{name}.png"))
                page.close()
        finally:
            browser.close()
    assert shown == {name: [True] * len(words) for name, (_, words) in pages.items()}
    for name in pages:
        png = tmp_path / f"tensorboard-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("EVENTBUS_DOCS_IMG"):
            shutil.copyfile(png, Path(os.environ["EVENTBUS_DOCS_IMG"]) / png.name)

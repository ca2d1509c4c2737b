"""A third-party plugin end to end: the example distribution in examples/, installed with pip.

The distribution is installed into a temporary site directory (``pip install --target``) that
the subprocesses get on ``PYTHONPATH``: a real install, found through its entry point like any
other, that leaves the test environment as it was.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import read_log
from eventbus import records as r
from eventbus.testing import drive, epochs

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "eventbus-example-plugin"
SCRIPT = shutil.which("eventbus") or str(Path(sys.executable).with_name("eventbus"))

TRAIN = '''
import sys

from eventbus import Bus
from eventbus_example_plugin import LossSpikeStop
from plugins import EarlyStopping

LOSSES = [1.0, 0.8, 0.7, 0.65, 0.6, 0.58, 2.5, 0.5, 0.45, 0.4]
plugins = [LossSpikeStop(factor=2.0, window=3), EarlyStopping(monitor="val_loss", patience=5)]
with Bus(plugins, log=sys.argv[1], learning_rate=0.1) as bus:
    bus.train_begin({"epochs": len(LOSSES)})
    for epoch, loss in enumerate(LOSSES):
        if bus.stop_training:
            break
        bus.epoch_begin(epoch)
        for batch in range(4):
            bus.batch_begin(batch)
            bus.batch_end(batch, {"loss": loss})
        bus.epoch_end(epoch, {"loss": loss, "val_loss": loss + 0.1})
    bus.train_end()
print("stopped" if bus.stop_training else "finished")
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The example distribution, pip-installed into a site directory of its own."""
    root = tmp_path_factory.mktemp("third-party")
    # Built from a copy: an in-tree build would leave build/ and *.egg-info in examples/.
    source = root / "source"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__"))
    target = root / "site"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
               "--target", str(target), str(source)]
    if importlib.util.find_spec("setuptools") is not None:
        command[4:4] = ["--no-build-isolation", "--no-index"]  # offline, with our setuptools
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert (target / "eventbus_example_plugin").is_dir()
    return target


def env_with(site: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    paths = [str(site)] if site is not None else []
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return env


def cli(*args: object, site: Path | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *map(str, args)], capture_output=True, text=True,
                          timeout=60, env=env_with(site))


@pytest.fixture(scope="module")
def log(site, tmp_path_factory) -> Path:
    """A run that uses the third-party plugin next to a built-in one."""
    root = tmp_path_factory.mktemp("run")
    script = root / "train.py"
    script.write_text(TRAIN)
    path = root / "events.jsonl"
    done = subprocess.run([sys.executable, str(script), str(path)], capture_output=True,
                          text=True, timeout=60, env=env_with(site))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped"
    return path


def records_of(path: Path) -> list[r.Record]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return list(read_log(path))


class TestInstalled:
    def test_listed_by_eventbus_plugins_with_distribution_and_version(self, site):
        """``eventbus plugins`` lists it next to the built-ins, from its own distribution."""
        done = cli("plugins", site=site)
        assert done.returncode == 0, done.stderr
        rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()[1:]}
        assert rows["LossSpikeStop"] == ["eventbus-example-plugin", "0.1.0",
                                         "eventbus_example_plugin:LossSpikeStop"]
        assert rows["EarlyStopping"][0] == "eventbus"
        data = orjson.loads(cli("plugins", "--json", site=site).stdout)
        assert {"name": "LossSpikeStop", "target": "eventbus_example_plugin:LossSpikeStop",
                "distribution": "eventbus-example-plugin", "version": "0.1.0"} in data

    def test_not_listed_without_the_install(self):
        """Without the site directory the registry does not know it: nothing leaked."""
        done = cli("plugins", site=None)
        assert done.returncode == 0
        assert "LossSpikeStop" not in done.stdout

    def test_its_own_tests_pass_against_the_installed_copy(self, site, tmp_path):
        """The distribution's tests, written with ``eventbus.testing``, pass as installed."""
        tests = tmp_path / "tests"
        shutil.copytree(EXAMPLE / "tests", tests,
                        ignore=shutil.ignore_patterns("__pycache__"))
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "--rootdir", str(tmp_path), str(tests)],
                              capture_output=True, text=True, timeout=120, env=env_with(site),
                              cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert " passed" in done.stdout.splitlines()[-1]


class TestRun:
    def test_it_decides_on_the_bus_with_reason_and_evidence(self, log):
        """The spike at epoch 7 stops the run; the decision carries its reason and numbers."""
        records = records_of(log)
        (stop,) = [rec for rec in records if isinstance(rec, r.Decision)]
        assert (stop.kind, stop.source, stop.epoch, stop.code) == \
            ("stop_training", "LossSpikeStop", 6, "loss_spike")
        assert stop.reason.startswith("loss = 2.5 is ")
        assert stop.evidence["value"] == 2.5
        assert stop.evidence["window"] == [0.65, 0.6, 0.58]
        cause = next(rec for rec in records if rec.seq == stop.cause_seq)
        assert (cause.kind, cause.epoch) == ("epoch_end", 6)
        assert [rec.epoch for rec in records if rec.kind == "epoch_end"] == list(range(7))

    def test_recorded_in_the_log_header(self, log):
        """The header names it with every parameter and where its class lives."""
        header = records_of(log)[0]
        spec = next(p for p in header.plugins if p.name == "LossSpikeStop")
        assert spec.params == {"monitor": "loss", "factor": 2.0, "window": 3, "patience": 1}
        assert spec.cls == "eventbus_example_plugin:LossSpikeStop"
        assert spec.recordable and not spec.side_effects

    def test_audit_names_it_as_the_reason_the_run_ended(self, log, site):
        """``eventbus audit``: stopped by LossSpikeStop, its rule, its epoch."""
        done = cli("audit", log, site=site)
        assert done.returncode == 0, done.stderr
        assert "ended: stopped by LossSpikeStop, rule loss_spike at epoch 7" in done.stdout


class TestReplay:
    def test_verify_rebuilds_it_from_the_header(self, log, site):
        """``replay --verify``: rebuilt by name through its entry point, same decision."""
        done = cli("replay", log, "--verify", site=site)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "verify: all 1 decisions match the log" in done.stdout

    def test_set_answers_a_what_if_about_it(self, log, site):
        """``--set LossSpikeStop.factor=5``: a laxer rule would not have stopped."""
        done = cli("replay", log, "--set", "LossSpikeStop.factor=5", site=site)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[1] == (
            "  The run would not have stopped within the 7 recorded epochs; the recorded run "
            "stopped at epoch 7 (LossSpikeStop).")

    def test_sweep_over_its_parameter(self, log, site):
        """``--sweep LossSpikeStop.window=1,3``: one row per value."""
        done = cli("replay", log, "--sweep", "LossSpikeStop.window=1,3", site=site)
        assert done.returncode == 0, done.stderr
        rows = [line.split() for line in done.stdout.splitlines()[1:3]]
        # window=1 compares with the last epoch only: 2.5 > 2 x 0.58 still stops at epoch 7.
        assert [(row[0], row[1]) for row in rows] == [("1", "7"), ("3", "7")]

    def test_an_unknown_parameter_lists_its_parameters(self, log, site):
        """A misspelt parameter: one line naming the plugin's real parameters, exit 2."""
        done = cli("replay", log, "--set", "LossSpikeStop.threshold=5", site=site)
        assert done.returncode == 2
        assert done.stderr.splitlines() == [
            "eventbus replay: error: LossSpikeStop has no parameter 'threshold'; its parameters "
            "are factor, monitor, patience, window"]

    def test_without_the_distribution_replay_says_what_to_install(self, log):
        """The log names plugins, never code: without the install, one line says so."""
        done = cli("replay", log, "--verify", site=None)
        assert done.returncode == 2
        (line,) = done.stderr.splitlines()
        assert "no plugin named 'LossSpikeStop' is registered" in line
        assert "Install the package that provides it" in line


def _doc_class() -> type:
    """The LossSpikeStop of docs/writing-plugins.md, run from the page's own code block."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "writing-plugins.md").read_text()
    block = next(b for b in page.split("```python")[1:] if "class LossSpikeStop" in b)
    namespace: dict = {}
    exec(block.split("```")[0], namespace)  # noqa: S102 - the page's own example
    return namespace["LossSpikeStop"]


@given(losses=st.lists(st.floats(0.01, 100.0), min_size=1, max_size=12),
       factor=st.floats(1.0, 4.0), window=st.integers(1, 4), patience=st.integers(1, 3))
def test_the_pages_class_decides_as_the_distributions(losses, factor, window, patience):
    """A log written with the page's class must verify against the installed distribution's."""
    sys.path.insert(0, str(EXAMPLE / "src"))
    try:
        from eventbus_example_plugin import LossSpikeStop
    finally:
        sys.path.remove(str(EXAMPLE / "src"))
    params = {"factor": factor, "window": window, "patience": patience}
    mine = drive(_doc_class()(**params), epochs(loss=losses))
    theirs = drive(LossSpikeStop(**params), epochs(loss=losses))
    assert [d.model_dump(exclude={"time", "run_id"}) for d in mine] == \
        [d.model_dump(exclude={"time", "run_id"}) for d in theirs]


class TestWhatAnInstalledDistributionCanDo:
    """Distributions are found on the path (a stray ``.dist-info`` in a folder on it counts),
    and a log names plugins by name: neither may do more than name a plugin class."""

    @staticmethod
    def dist_info(site: Path, name: str, entry_points: bytes) -> None:
        info = site / f"{name}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_bytes(entry_points)

    def test_a_malformed_distribution_is_passed_over_with_a_warning(self, tmp_path,
                                                                   monkeypatch):
        """One broken entry_points.txt, in any group, made every lookup die with a TypeError
        from the standard library's parser."""
        from eventbus.registry import Registry

        self.dist_info(tmp_path, "broken", b"[console_scripts]\nno equals sign\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        with pytest.warns(RuntimeWarning, match=r"broken-1\.0\.dist-info has metadata that "
                                                r"cannot be read"):
            names = Registry().names()
        assert "EarlyStopping" in names

    @pytest.mark.parametrize("target", ["os:system", "subprocess:Popen", "collections:Counter"])
    def test_an_entry_point_that_names_no_plugin_class_is_never_called(self, tmp_path,
                                                                       monkeypatch, target):
        """A log names a plugin and its parameters, and the registry called what the entry
        point named with them: os:system would run a command from a log's header."""
        from eventbus.errors import RegistryError
        from eventbus.registry import Registry

        self.dist_info(tmp_path, "planted", f"[eventbus]\nNotAPlugin = {target}\n".encode())
        monkeypatch.syspath_prepend(str(tmp_path))
        with pytest.raises(RegistryError, match="not a plugin class"):
            Registry().build("NotAPlugin", {"command": "touch /tmp/never"})

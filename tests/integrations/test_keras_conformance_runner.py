"""benchmarks/keras_conformance.py: Keras's test files, imports rewritten, run and counted."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parents[2] / "benchmarks" / "keras_conformance.py"


@pytest.fixture(scope="module")
def runner():
    spec = importlib.util.spec_from_file_location("keras_conformance", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_imports_are_rewritten(runner):
    text = "\n".join([
        "from keras.src import callbacks",
        "from keras.src.callbacks.callback import Callback",
        "from keras.src.callbacks import BackupAndRestore",
        "from keras.src import layers",
        "from tensorflow.core.util import event_pb2",
    ])
    assert runner.rewrite(text).splitlines() == [
        "import plugins as callbacks",
        "from plugins import Callback",
        "from plugins import BackupAndRestore",
        "from keras.src import layers",
        "from tensorboard.compat.proto import event_pb2",
    ]


def test_a_checkout_is_run_and_counted(runner, tmp_path, capsys):
    """A stand-in checkout: its test file runs against the plugins, and the counts and the
    failure's first line are printed."""
    tests = tmp_path / "keras" / "src" / "callbacks"
    tests.mkdir(parents=True)
    (tests / "early_stopping_test.py").write_text(
        "from keras.src import callbacks\n"
        "from keras.src.callbacks import TerminateOnNaN\n\n\n"
        "def test_the_plugins_are_used():\n"
        "    assert callbacks.EarlyStopping.__module__ == 'plugins.early_stopping'\n"
        "    assert TerminateOnNaN.__module__ == 'plugins.terminate_on_nan'\n\n\n"
        "def test_failing():\n"
        "    assert 1 == 2, 'on purpose'\n")
    assert runner.main([str(tmp_path), "--keep", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "early_stopping_test" in out and "1 / 2" in out
    assert "FAILED   early_stopping_test.test_failing: AssertionError: on purpose" in out
    assert out.rstrip().endswith("1 of 2 passed (0 skipped)")


def test_not_a_checkout(runner, tmp_path):
    with pytest.raises(SystemExit, match="is not a Keras checkout"):
        runner.main([str(tmp_path)])

"""Keras's own callback tests, run against this project's plugins.

    python benchmarks/keras_conformance.py /path/to/keras-checkout [-k EXPR] [--keep DIR]

Copies the test files of ``keras/src/callbacks`` whose subject is one of the built-in plugins
(and Keras's ``conftest.py``) out of a Keras checkout, rewrites their imports so that
``callbacks.EarlyStopping`` & co. are ``plugins.EarlyStopping`` & co., runs them with pytest on
the installed Keras (``KERAS_BACKEND=torch``) and prints the pass/fail counts and each failure's
first line. Keras itself is not changed and none of its code is kept here.

The TensorBoard tests read event files through TensorFlow, which is not installed: the runner
reads them with TensorBoard's own protobufs and record reader instead (the writing side of
``test_custom_summary`` needs TensorFlow and cannot run). What each remaining failure means is
in docs/integrations/keras.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Keras's test files whose subject is a built-in plugin. Left out: monitor_callback_test
#: (Keras's private MonitorCallback base), orbax_checkpoint_test and swap_ema_weights_test
#: (callbacks this project does not have).
FILES = ("backup_and_restore_test.py", "callback_test.py", "csv_logger_test.py",
         "early_stopping_test.py", "lambda_callback_test.py", "learning_rate_scheduler_test.py",
         "model_checkpoint_test.py", "reduce_lr_on_plateau_test.py", "remote_monitor_test.py",
         "tensorboard_test.py", "terminate_on_nan_test.py")

#: Import lines rewritten: Keras's callbacks become the plugins; TensorFlow's event-file
#: reading becomes TensorBoard's.
REWRITES = (
    (r"^from keras\.src import callbacks$", "import plugins as callbacks"),
    (r"^from keras\.src\.callbacks\.callback import Callback$", "from plugins import Callback"),
    (r"^from keras\.src\.callbacks import (\w+)$", r"from plugins import \1"),
    (r"^import tensorflow\.summary as summary$", "summary = None  # needs TensorFlow"),
    (r"^from tensorflow\.compat\.v1 import SummaryMetadata$",
     "from tensorboard.compat.proto.summary_pb2 import SummaryMetadata"),
    (r"^from tensorflow\.core\.util import event_pb2$",
     "from tensorboard.compat.proto import event_pb2"),
    (r"^from tensorflow\.python\.lib\.io import tf_record$", "import _tf_record as tf_record"),
)

#: TensorFlow's tf_record_iterator, through TensorBoard's reader.
TF_RECORD = '''
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader


def tf_record_iterator(path):
    return iter(RawEventFileLoader(path).Load())
'''


def rewrite(text: str) -> str:
    lines = []
    for line in text.splitlines():
        for pattern, replacement in REWRITES:
            line = re.sub(pattern, replacement, line)
        lines.append(line)
    return "\n".join(lines) + "\n"


def prepare(checkout: Path, into: Path) -> list[str]:
    source = checkout / "keras" / "src" / "callbacks"
    if not source.is_dir():
        sys.exit(f"{checkout} is not a Keras checkout: no keras/src/callbacks in it")
    if (checkout / "conftest.py").is_file():
        shutil.copy(checkout / "conftest.py", into / "conftest.py")
    (into / "_tf_record.py").write_text(TF_RECORD)
    found = []
    for name in FILES:
        path = source / name
        if path.is_file():
            (into / name).write_text(rewrite(path.read_text()))
            found.append(name)
    return found


def run(into: Path, files: list[str], select: str | None) -> Path:
    report = into / "report.xml"
    env = dict(os.environ, KERAS_BACKEND="torch",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                        os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               f"--junitxml={report}", "--rootdir", str(into), *files]
    if select:
        command += ["-k", select]
    subprocess.run(command, cwd=into, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    return report


def summarize(report: Path) -> int:
    if not report.is_file():
        sys.exit("pytest wrote no report: the test files could not be collected")
    rows = []
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}.{case.get('name')}"
        file = case.get("classname", "").split(".")[0]
        outcome, why = "passed", ""
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                why = (found.get("message") or "").strip().splitlines()[0:1]
                why = why[0][:160] if why else ""
                break
        rows.append((file, name, outcome, why))
    passed = sum(r[2] == "passed" for r in rows)
    skipped = sum(r[2] == "skipped" for r in rows)
    ran = len(rows) - skipped
    by_file: dict[str, list[int]] = {}
    for file, _, outcome, _ in rows:
        counts = by_file.setdefault(file, [0, 0])
        if outcome != "skipped":
            counts[1] += 1
            counts[0] += outcome == "passed"
    for file, (ok, total) in sorted(by_file.items()):
        print(f"{file:36} {ok:3} / {total}")
    print()
    for _, name, outcome, why in rows:
        if outcome != "passed":
            print(f"{outcome.upper():8} {name}: {why}")
    print(f"\n{passed} of {ran} passed ({skipped} skipped)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a Keras checkout (the repository root)")
    parser.add_argument("-k", dest="select", help="pytest -k expression")
    parser.add_argument("--keep", type=Path, help="write the rewritten tests here and keep them")
    args = parser.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        files = prepare(args.checkout, args.keep)
        return summarize(run(args.keep, files, args.select))
    with tempfile.TemporaryDirectory(prefix="keras-conformance-") as tmp:
        files = prepare(args.checkout, Path(tmp))
        return summarize(run(Path(tmp), files, args.select))


if __name__ == "__main__":
    raise SystemExit(main())

"""The golden logs in tests/golden/: stored runs (the demo, a PyTorch loop with shadow policies
and an event filter, the plugins in a Keras model.fit) replayed against the decisions they
recorded. A change to any plugin's behaviour fails here with the diff ("stop moves from epoch
7 to epoch 5"); when the change is meant, make them again with tests/golden/make_golden.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventbus.audit import audit
from eventbus.verify import describe, find_logs, verify_log

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
LOGS = find_logs([GOLDEN])


def test_the_golden_logs_are_there():
    assert {p.name for p in LOGS} == {"demo.jsonl", "torch.jsonl", "keras.jsonl"}


@pytest.mark.parametrize("log", LOGS, ids=lambda p: p.name)
def test_every_recorded_decision_is_made_again(log):
    verdict = verify_log(log, root=GOLDEN)
    assert verdict.ok, describe(verdict)
    assert verdict.decisions > 0
    assert verdict.replayed_stop == verdict.recorded_stop is not None


def test_the_shadow_and_the_filter_are_replayed_too():
    result = audit(GOLDEN / "torch.jsonl")
    assert result.shadow_lines() and "would have stopped at epoch" in result.shadow_lines()[0]
    early = next(p for p in result.header.plugins if p.name == "EarlyStopping")
    assert early.filters == [{"on": "epoch", "after": 2}]

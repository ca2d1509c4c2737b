"""PyTorch checkpoints: one line back into ``load_state_dict``, and a resume that restores."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from eventbus import Bus, RunWarning, read_log  # noqa: E402
from eventbus.integrations.torch import TorchModel  # noqa: E402
from eventbus.jsonl import JsonlWriter  # noqa: E402
from plugins import ModelCheckpoint  # noqa: E402
from sinks.hdf5 import load_state_dict  # noqa: E402


def make_net(seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8),
                               torch.nn.Linear(8, 1)).to(dtype)


def train(net: torch.nn.Module, bus: Bus, epochs: int) -> None:
    """A plain loop over ``bus.initial_epoch`` .. ``epochs``; val_loss gets worse after 2."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1)).to(
        next(net.parameters()).dtype)
    bus.train_begin({"epochs": epochs})
    for epoch in range(bus.initial_epoch, epochs):
        bus.epoch_begin(epoch)
        optimizer.zero_grad()
        loss = net(x).pow(2).mean()
        loss.backward()
        optimizer.step()
        bus.epoch_end(epoch, {"loss": loss.item(), "val_loss": [0.5, 0.4, 0.3, 0.6, 0.7][epoch]})


def equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_checkpoint_is_one_line_into_load_state_dict(tmp_path, dtype):
    """net.load_state_dict(load_state_dict(path)): parameters and buffers (BatchNorm's running
    statistics) come back; a bfloat16 module gets bfloat16 back."""
    net = make_net(dtype=dtype)
    with Bus([ModelCheckpoint(str(tmp_path / "last.h5"))], model=TorchModel(net)) as bus:
        train(net, bus, 2)
    fresh = make_net(seed=1, dtype=dtype)
    assert not equal(fresh, net)
    fresh.load_state_dict(load_state_dict(tmp_path / "last.h5"))
    assert equal(fresh, net)
    assert next(fresh.parameters()).dtype == dtype


def crash_after(tmp_path: Path, plugins: list, epochs: int) -> torch.nn.Module:
    """Train ``epochs`` epochs and stop as a crash would: the log ends without train_end."""
    net = make_net()
    writer = JsonlWriter(tmp_path / "events.jsonl")
    bus = Bus(plugins, model=TorchModel(net), log=writer)
    train(net, bus, epochs)
    bus.flush()
    writer.close()
    return net


def test_a_resumed_run_gets_the_newest_checkpoint_back(tmp_path):
    """The newest checkpoint the log records is put into the fresh module at resume."""
    crashed = crash_after(tmp_path, [ModelCheckpoint(str(tmp_path / "ckpt-{epoch}.h5"))], 3)
    fresh = make_net(seed=7)
    bus = Bus([ModelCheckpoint(str(tmp_path / "ckpt-{epoch}.h5"))], model=TorchModel(fresh),
              log=tmp_path / "events.jsonl", resume=True)
    assert bus.initial_epoch == 3
    assert equal(fresh, crashed)
    bus.close()
    restored = [r for r in read_log(tmp_path / "events.jsonl") if r.kind == "weights_restored"]
    assert [r.tag for r in restored] == [f"checkpoint:{tmp_path / 'ckpt-3.h5'}"]


def test_a_tampered_checkpoint_falls_back_to_the_one_before(tmp_path):
    """The newest file's sha256 is not the recorded one: the one before is loaded, and the
    warnings say which and how far behind it is."""
    crash_after(tmp_path, [ModelCheckpoint(str(tmp_path / "best-{epoch}.h5"),
                                           save_best_only=True)], 5)
    second = make_net()
    second.load_state_dict(load_state_dict(tmp_path / "best-2.h5"))
    (tmp_path / "best-3.h5").write_bytes((tmp_path / "best-2.h5").read_bytes())
    fresh = make_net(seed=7)
    with pytest.warns(RunWarning) as caught:
        Bus([ModelCheckpoint(str(tmp_path / "best-{epoch}.h5"), save_best_only=True)],
            model=TorchModel(fresh), log=tmp_path / "events.jsonl", resume=True).close()
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert "best-3.h5 was changed since it was saved" in messages[0]
    assert "the newest checkpoint, " in messages[1] and "was saved at epoch 2; the run goes " \
        "on at epoch 6" in messages[1]
    assert equal(fresh, second)

"""Write the golden logs in this folder again: ``python tests/golden/make_golden.py``.

Each log is a run whose decisions a test replays (``eventbus verify tests/golden``): a change
to any plugin's behaviour shows there as a diff ("stop moves from epoch 21 to 19"). Make them
again only when a change of behaviour is meant, and say so in the commit. Checkpoint paths in
them are relative and the files are not kept: ``verify`` lists them as missing, which is no
failure.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def demo(work: Path) -> None:
    """The NumPy demo, every built-in plugin on."""
    from eventbus.demo import run_demo

    run_demo(out=Path("demo"), progress=False)
    shutil.copyfile(work / "demo" / "events.jsonl", HERE / "demo.jsonl")


def torch_loop(work: Path) -> None:
    """A plain PyTorch loop through TorchModel, with shadow policies and an event filter."""
    import torch

    from eventbus import Bus
    from eventbus.filters import after
    from eventbus.integrations.torch import TorchModel
    from plugins import EarlyStopping, ReduceLROnPlateau, TerminateOnNaN

    torch.manual_seed(0)
    x, y = torch.randn(256, 8), torch.randn(256, 1)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    plugins = [TerminateOnNaN(), ReduceLROnPlateau(patience=2, factor=0.5),
               after(2, EarlyStopping(patience=3, restore_best_weights=True))]
    with Bus(plugins, log="torch.jsonl", model=TorchModel(net, opt),
             shadow=[EarlyStopping(patience=1)]) as bus:
        bus.train_begin({"epochs": 30, "steps": 6})
        for epoch in range(30):
            bus.epoch_begin(epoch)
            for batch in range(6):
                bus.batch_begin(batch)
                xb, yb = x[batch * 32:(batch + 1) * 32], y[batch * 32:(batch + 1) * 32]
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(net(xb), yb)
                loss.backward()
                opt.step()
                bus.batch_end(batch, {"loss": loss.item()})
            with torch.no_grad():
                val = float(torch.nn.functional.mse_loss(net(x[192:]), y[192:]))
            bus.epoch_end(epoch, {"val_loss": val})
            if bus.stop_training:
                break
        bus.train_end()
    shutil.copyfile(work / "torch.jsonl", HERE / "torch.jsonl")


def keras_fit(work: Path) -> None:
    """The plugins straight in a Keras 3 model.fit (torch backend)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    import numpy as np

    from plugins import EarlyStopping, ModelCheckpoint, ReduceLROnPlateau

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(128, 4)), rng.normal(size=(128, 1))
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    model.fit(x, y, validation_split=0.25, epochs=25, batch_size=32, verbose=0,
              callbacks=[EarlyStopping(patience=3, log="keras.jsonl"),
                         ReduceLROnPlateau(patience=1, factor=0.5),
                         ModelCheckpoint("ckpt/best.weights.h5", save_best_only=True,
                                         save_weights_only=True)])
    shutil.copyfile(work / "keras.jsonl", HERE / "keras.jsonl")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[1]))
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        for make in (demo, torch_loop, keras_fit):
            make(Path(tmp))
            print(f"wrote {make.__name__}")

"""eventbus.integrations.torch: a real PyTorch loop on CPU through the bus."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from eventbus import Bus, ConfigError, read_log, replay  # noqa: E402
from eventbus.integrations.torch import TorchModel, scalars  # noqa: E402
from eventbus.records import SetLearningRate, StopTraining  # noqa: E402
from plugins import EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, TensorBoard  # noqa: E402
from sinks.hdf5 import load_checkpoint  # noqa: E402


def make_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def noise_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets unrelated to inputs: the validation loss soon stops improving."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g)


def train(tmp_path, max_epochs: int = 40):
    net = make_net()
    # Two parameter groups: the output layer at a tenth of the rate.
    optimizer = torch.optim.SGD([
        {"params": net[0].parameters(), "lr": 0.2},
        {"params": net[2].parameters(), "lr": 0.02},
    ])
    x, y = noise_data(64, 1)
    vx, vy = noise_data(32, 2)
    loss_fn = torch.nn.MSELoss()
    plugins = [
        ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, min_delta=1e-3),
        EarlyStopping(monitor="val_loss", patience=4, min_delta=1e-3, restore_best_weights=True),
        ModelCheckpoint(str(tmp_path / "best.h5"), monitor="val_loss", save_best_only=True),
        TensorBoard(log_dir=str(tmp_path / "tb")),
    ]
    bus = Bus(plugins, model=TorchModel(net, optimizer), log=tmp_path / "events.jsonl")
    with bus:
        bus.train_begin({"epochs": max_epochs, "steps": 4})
        for epoch in range(max_epochs):
            bus.epoch_begin(epoch)
            net.train()
            for batch in range(4):
                bus.batch_begin(batch)
                xb, yb = x[batch * 16:(batch + 1) * 16], y[batch * 16:(batch + 1) * 16]
                optimizer.zero_grad()
                loss = loss_fn(net(xb), yb)
                loss.backward()
                optimizer.step()
                bus.batch_end(batch, {"loss": loss.detach()})  # a tensor: the bus converts it
            net.eval()
            with torch.no_grad():
                val_loss = loss_fn(net(vx), vy)
            bus.epoch_end(epoch, scalars({"loss": loss.detach(), "val_loss": val_loss}))
            if bus.stop_training:
                break
        bus.train_end()
    return net, optimizer, bus, epoch


class TestTrainingLoop:
    def test_decisions_reach_the_optimizer_and_the_module(self, tmp_path):
        """A plateau cuts every group's rate by the same factor; EarlyStopping stops the loop."""
        net, optimizer, bus, last_epoch = train(tmp_path)
        records = list(read_log(tmp_path / "events.jsonl"))
        cuts = [r for r in records if isinstance(r, SetLearningRate)]
        stops = [r for r in records if isinstance(r, StopTraining)]
        assert cuts, "the validation loss of noise should plateau"
        assert stops and stops[0].epoch == last_epoch < 39
        lrs = [g["lr"] for g in optimizer.param_groups]
        assert lrs[0] == pytest.approx(cuts[-1].value)
        assert lrs[0] < 0.2
        assert lrs[1] == pytest.approx(lrs[0] / 10)  # the groups keep their ratio

    def test_checkpoint_loads_into_a_fresh_module(self, tmp_path):
        """The best checkpoint holds the state_dict; the restored best weights equal it."""
        net, _, _, _ = train(tmp_path)
        checkpoint = load_checkpoint(tmp_path / "best.h5")
        assert set(checkpoint.weights) == set(net.state_dict())
        fresh = make_net(seed=99)
        TorchModel(fresh).set_weights(checkpoint.weights)
        # restore_best_weights put the best epoch's weights back: the checkpoint's.
        for name, tensor in net.state_dict().items():
            assert torch.equal(fresh.state_dict()[name], tensor), name

    def test_tensorboard_and_replay(self, tmp_path):
        """TensorBoard has the epoch curve; the log replays to the same decisions."""
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        _, _, _, last_epoch = train(tmp_path)
        acc = EventAccumulator(str(tmp_path / "tb" / "validation"), size_guidance={"scalars": 0})
        acc.Reload()
        steps = [e.step for e in acc.Scalars("epoch_loss")]
        assert steps == list(range(last_epoch + 1))
        result = replay(tmp_path / "events.jsonl", verify=True)
        assert result.ok and result.stopped_at == last_epoch


    def test_a_rate_the_loop_s_own_scheduler_moved_replays_exactly(self, tmp_path):
        """A plain loop whose own StepLR decays the rate each epoch, with ReduceLROnPlateau
        cutting it too: the epochs log the optimizer's rate, so replay cuts from the rate the
        live plugin saw and verifies, exactly."""
        net = make_net()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.2)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.8)
        x, y = noise_data(32, 1)
        loss_fn = torch.nn.MSELoss()
        path = tmp_path / "events.jsonl"
        with Bus([ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=1.0)],
                 model=TorchModel(net, optimizer), log=path) as bus:
            bus.train_begin({"epochs": 4})
            for epoch in range(4):
                bus.epoch_begin(epoch)
                optimizer.zero_grad()
                loss = loss_fn(net(x), y)
                loss.backward()
                optimizer.step()
                bus.epoch_end(epoch, {"loss": loss.item()})
                scheduler.step()  # the loop's own move, after the bus's cut
            bus.train_end()
        cuts = [rec for rec in read_log(path) if isinstance(rec, SetLearningRate)]
        assert [c.previous for c in cuts[1:]] == pytest.approx([c.value * 0.8 for c in cuts[:-1]])
        result = replay(path, verify=True)
        assert result.ok, result.mismatch
        assert result.diverged_at is None and len(result.decisions) == len(cuts) == 3


class TestTorchModel:
    def test_learning_rate_scales_every_group(self):
        """Setting the rate multiplies each group's lr by new/old; the first group is exact."""
        net = make_net()
        opt = torch.optim.SGD([{"params": net[0].parameters(), "lr": 0.1},
                               {"params": net[2].parameters(), "lr": 0.03}])
        model = TorchModel(net, opt)
        model.learning_rate = 0.05
        assert model.learning_rate == 0.05
        assert opt.param_groups[1]["lr"] == pytest.approx(0.015)

    def test_zero_rate_sets_every_group(self):
        """From a rate of 0 there is no factor: every group gets the new value."""
        net = make_net()
        opt = torch.optim.SGD([{"params": net[0].parameters(), "lr": 0.0},
                               {"params": net[2].parameters(), "lr": 0.0}])
        TorchModel(net, opt).learning_rate = 0.01
        assert [g["lr"] for g in opt.param_groups] == [0.01, 0.01]

    def test_without_optimizer(self):
        """No optimizer: no learning rate, and setting one is a clear error."""
        model = TorchModel(make_net())
        assert model.learning_rate is None
        with pytest.raises(ConfigError, match="no optimizer"):
            model.learning_rate = 0.1

    def test_set_weights_checks_names_and_shapes(self):
        """Unknown names and wrong shapes are refused before anything is copied."""
        model = TorchModel(make_net())
        with pytest.raises(ConfigError, match="unknown names"):
            model.set_weights({"nope": np.zeros(1)})
        with pytest.raises(ConfigError, match="shape"):
            model.set_weights({"0.weight": np.zeros((2, 2))})

    def test_weights_are_copies_by_state_dict_name(self):
        """get_weights returns NumPy copies; changing them leaves the module alone."""
        net = make_net()
        weights = TorchModel(net).get_weights()
        assert list(weights) == list(net.state_dict())
        weights["0.bias"][:] = 123.0
        assert not torch.any(net[0].bias == 123.0)

    def test_optimizer_state_and_config_are_plain(self, tmp_path):
        """Adam's moments go to the checkpoint's optimizer group; the config is JSON data."""
        import orjson

        net = make_net()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        net(torch.randn(2, 4)).sum().backward()
        opt.step()
        model = TorchModel(net, opt)
        state = model.get_optimizer_state()
        assert "0/0/exp_avg" in state and state["0/0/exp_avg"].shape == (8, 4)
        config = orjson.loads(orjson.dumps(model.get_config()))
        assert config["optimizers"][0]["class"] == "Adam"

    @pytest.mark.parametrize("make_optimizer", [
        lambda params: torch.optim.Adam(params, lr=0.05),
        lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
        lambda params: torch.optim.Rprop(params, lr=0.05),  # its step counts as tensors
    ], ids=["Adam", "SGD", "Rprop"])
    def test_optimizer_state_goes_back_and_training_goes_on_as_it_would(self, make_optimizer):
        """A fresh model given the weights and the optimizer's state (what BackupAndRestore
        keeps) takes the next steps exactly as the trained one: Adam's moments and step
        count, a momentum buffer, Rprop's step sizes all come back as they were."""
        x, y = noise_data(16, 1)

        def steps(net, opt, n):
            for _ in range(n):
                def closure():
                    opt.zero_grad()
                    loss = torch.nn.functional.mse_loss(net(x), y)
                    loss.backward()
                    return loss
                opt.step(closure)

        trained = make_net()
        opt = make_optimizer(trained.parameters())
        steps(trained, opt, 3)
        model = TorchModel(trained, opt)
        weights, state = model.get_weights(), model.get_optimizer_state()
        fresh = make_net(seed=5)
        fresh_opt = make_optimizer(fresh.parameters())
        resumed = TorchModel(fresh, fresh_opt)
        resumed.set_weights(weights)
        resumed.set_optimizer_state(state)
        steps(trained, opt, 2)
        steps(fresh, fresh_opt, 2)
        for a, b in zip(trained.parameters(), fresh.parameters()):
            assert torch.equal(a, b)

    def test_an_optimizer_whose_state_cannot_come_back_whole_is_left_out(self):
        """LBFGS keeps lists of past directions: its state is not kept at all (part of it
        put back broke its next step; a fresh one restarts it)."""
        net = make_net()
        opt = torch.optim.LBFGS(net.parameters(), lr=0.5, max_iter=3)
        x, y = noise_data(16, 1)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(x), y)
            loss.backward()
            return loss

        for _ in range(2):
            opt.step(closure)
        assert opt.state_dict()["state"]
        assert TorchModel(net, opt).get_optimizer_state() == {}

    def test_an_optimizer_state_of_another_model_is_refused_and_changes_nothing(self):
        net = make_net()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        model = TorchModel(net, opt)
        with pytest.raises(ConfigError, match="names no optimizer state"):
            model.set_optimizer_state({"3/0/exp_avg": np.zeros((8, 4))})
        with pytest.raises(ConfigError, match="has no parameter 99"):
            model.set_optimizer_state({"0/99/exp_avg": np.zeros((8, 4))})
        # "²" is a digit to str.isdigit and no number to int: a name from a file, refused
        with pytest.raises(ConfigError, match="names no optimizer state"):
            model.set_optimizer_state({"\u00b2/0/exp_avg": np.zeros((8, 4))})
        assert opt.state_dict()["state"] == {}


def test_scalars_converts_tensors_once():
    """0-d tensors become floats; other values pass through for the bus to check."""
    out = scalars({"a": torch.tensor(1.5), "b": 2.0, "c": torch.tensor(3, dtype=torch.int64)})
    assert out == {"a": 1.5, "b": 2.0, "c": 3.0}
    assert all(type(v) is float for v in out.values())

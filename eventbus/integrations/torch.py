"""PyTorch: a model adapter for ``torch.nn.Module`` and its optimizer(s).

    model = TorchModel(net, optimizer)
    bus = Bus([EarlyStopping(patience=3), ReduceLROnPlateau(patience=2)], model=model, log=...)

Weights are the module's ``state_dict`` (parameters and buffers) as NumPy arrays, keyed by
PyTorch's names (``"fc1.weight"``), so a checkpoint written through this adapter loads back
into a module in one line: ``net.load_state_dict(load_state_dict("best.h5"))`` (``from
sinks.hdf5 import load_state_dict``).

The learning rate lives in the optimizer's parameter groups. With one group it is that group's
``lr``. With several (other rates for the head, no decay for biases, ...), the adapter reads the
first group's ``lr`` as *the* learning rate, and a change multiplies every group's ``lr`` by
the same factor, new / old, which is what a plateau cut or a schedule step means; groups keep
their ratios. If the first group's rate is 0 the factor is undefined, and every group is set to
the new value instead. Several optimizers (Lightning's ``trainer.optimizers``) are one list of
groups, the first optimizer's first group being the reference.

Device synchronisation: reading a CUDA tensor's value waits for the device. The bus reads a
batch_end's 0-d floating tensors only when a plugin reads a value of that batch, or, all held
batches together, at the next flush point (``eventbus.metrics.PendingLogs``; docs/integrations/
pytorch.md says when); other events' tensors are read as they are recorded. :func:`scalars`
converts all tensors of one event with a single device-to-host copy (one sync per event
instead of one per metric): for epoch ends, not batch ends, where it reads what the bus would
have left unread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from eventbus.errors import ConfigError

__all__ = ["TorchModel", "scalars"]


def scalars(logs: Mapping[str, Any]) -> dict[str, Any]:
    """``logs`` with every 0-d tensor turned into a float, with one device sync at most.

    Tensors on the CPU are read with ``.item()`` (no sync to wait for). Tensors on an
    accelerator are stacked and copied to the host together: one sync for the event instead of
    one per metric. Values that are not tensors pass through unchanged (the bus checks them).
    """
    out = dict(logs)
    device: list[str] = []
    for key, value in logs.items():
        if isinstance(value, torch.Tensor) and value.ndim == 0:
            if value.device.type == "cpu":
                out[key] = float(value.item())
            else:
                device.append(key)
    if len(device) == 1:
        out[device[0]] = float(logs[device[0]].item())
    elif device:
        stacked = torch.stack([logs[k].detach().to(torch.float64) for k in device])
        for key, value in zip(device, stacked.tolist()):
            out[key] = value
    return out


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:  # NumPy has no bfloat16; set_weights casts back
        tensor = tensor.to(torch.float32)
    return tensor.cpu().numpy().copy()


class TorchModel:
    """The bus's model adapter for a PyTorch module and, optionally, its optimizer(s).

    ``optimizer`` is a ``torch.optim.Optimizer``, a sequence of them, or None (then the adapter
    has no learning rate and a learning-rate decision is recorded as a failure at the edge).
    """

    def __init__(self, module: torch.nn.Module,
                 optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None = None,
                 *, config: Mapping[str, Any] | None = None):
        if not isinstance(module, torch.nn.Module):
            raise ConfigError(f"TorchModel: module must be a torch.nn.Module; got "
                              f"{type(module).__name__}", field="module")
        if optimizer is None:
            optimizers: list[Any] = []
        elif isinstance(optimizer, torch.optim.Optimizer):
            optimizers = [optimizer]
        else:
            optimizers = list(optimizer)
        for opt in optimizers:
            if not hasattr(opt, "param_groups"):
                raise ConfigError(f"TorchModel: optimizer must be a torch.optim.Optimizer (or a "
                                  f"list of them); got {type(opt).__name__}", field="optimizer")
        self.module = module
        self.optimizers = optimizers
        self._config = dict(config or {})

    # --- weights -----------------------------------------------------------------------------

    def get_weights(self) -> dict[str, np.ndarray]:
        """A copy of the module's ``state_dict`` (parameters and buffers) as NumPy arrays."""
        return {name: _to_numpy(t) for name, t in self.module.state_dict().items()
                if isinstance(t, torch.Tensor)}

    def set_weights(self, weights: Mapping[str, Any]) -> None:
        """Copy ``weights`` into the module in place (its devices and dtypes are kept)."""
        state = self.module.state_dict()
        unknown = sorted(set(weights) - set(state))
        if unknown:
            raise ConfigError(f"TorchModel.set_weights: unknown names {unknown[:5]}; the module "
                              f"has {sorted(state)[:10]}", field="weights")
        for name, value in weights.items():
            target = state[name]
            source = torch.as_tensor(np.asarray(value))
            if tuple(source.shape) != tuple(target.shape):
                raise ConfigError(f"TorchModel.set_weights: {name!r} has shape "
                                  f"{tuple(source.shape)}, the module's is {tuple(target.shape)}",
                                  field=name)
        with torch.no_grad():
            for name, value in weights.items():
                # state_dict tensors share storage with the module's parameters and buffers.
                state[name].copy_(torch.as_tensor(np.asarray(value)))

    # --- learning rate -----------------------------------------------------------------------

    def _groups(self) -> list[dict[str, Any]]:
        return [group for opt in self.optimizers for group in opt.param_groups]

    @property
    def learning_rate(self) -> float | None:
        """The first parameter group's ``lr`` (None without an optimizer)."""
        groups = self._groups()
        return float(groups[0]["lr"]) if groups else None

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        groups = self._groups()
        if not groups:
            raise ConfigError("TorchModel has no optimizer, so it has no learning rate to set; "
                              "give TorchModel(module, optimizer)", field="optimizer")
        value = float(value)
        reference = float(groups[0]["lr"])
        factor = value / reference if reference != 0.0 else None
        for group in groups:
            new = value if factor is None else float(group["lr"]) * factor
            if group is groups[0]:
                new = value  # exact for the reference group, whatever the rounding
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(new)  # a tensor lr (capturable optimizers) stays a tensor
            else:
                group["lr"] = new

    # --- config and optimizer state ----------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """Plain facts for the log header and checkpoints: classes, shapes, optimizer settings."""
        config: dict[str, Any] = dict(self._config)
        config.setdefault("framework", f"torch {torch.__version__}")
        config.setdefault("class", f"{type(self.module).__module__}."
                                   f"{type(self.module).__qualname__}")
        config.setdefault("weights", {name: list(t.shape)
                                      for name, t in self.module.state_dict().items()
                                      if isinstance(t, torch.Tensor)})
        if self.optimizers:
            config.setdefault("optimizers", [
                {"class": type(opt).__name__,
                 "param_groups": [{k: _plain(v) for k, v in group.items() if k != "params"}
                                  for group in opt.param_groups]}
                for opt in self.optimizers])
        return config

    def get_optimizer_state(self) -> dict[str, np.ndarray]:
        """The optimizers' tensor state (moments, step counts) as arrays, for checkpoints.

        Names are ``"<optimizer>/<param index>/<key>"``, e.g. ``"0/3/exp_avg"``. An optimizer
        whose state holds anything else (LBFGS's history lists) is left out whole: part of its
        state put back would break its next step, where a fresh state only restarts it.
        """
        out: dict[str, np.ndarray] = {}
        for i, opt in enumerate(self.optimizers):
            mine: dict[str, np.ndarray] = {}
            for index, state in opt.state_dict()["state"].items():
                for key, value in state.items():
                    if isinstance(value, torch.Tensor):
                        mine[f"{i}/{index}/{key}"] = _to_numpy(value)
                    elif isinstance(value, (int, float)) and not isinstance(value, bool):
                        mine[f"{i}/{index}/{key}"] = np.asarray(value)
                    else:
                        break
                else:
                    continue
                break
            else:
                out.update(mine)
        return out

    def set_optimizer_state(self, state: Mapping[str, Any]) -> None:
        """Put a state :meth:`get_optimizer_state` gave back into the optimizers (through
        ``load_state_dict``, which moves each tensor to its parameter's device). A value
        the optimizer holds as a Python number now (or an integer count) goes back as one;
        a state naming an optimizer or parameter this model does not have is a
        ``ConfigError``, and nothing is changed."""
        grouped: dict[int, dict[int, dict[str, Any]]] = {}
        for name, value in state.items():
            parts = name.split("/")
            if len(parts) != 3 or not _index(parts[0]) or not _index(parts[1]) or \
                    int(parts[0]) >= len(self.optimizers):
                raise ConfigError(f"TorchModel.set_optimizer_state: {name!r} names no "
                                  f"optimizer state of this model ({len(self.optimizers)} "
                                  "optimizer(s))", field="optimizer")
            grouped.setdefault(int(parts[0]), {}).setdefault(int(parts[1]), {})[parts[2]] = value
        loaded = []
        for i, opt in enumerate(self.optimizers):
            saved = opt.state_dict()
            params = {index for group in saved["param_groups"] for index in group["params"]}
            now = saved["state"]
            new: dict[int, dict[str, Any]] = {}
            for index, values in grouped.get(i, {}).items():
                if index not in params:
                    raise ConfigError(f"TorchModel.set_optimizer_state: optimizer {i} has no "
                                      f"parameter {index}", field="optimizer")
                new[index] = {key: _state_value(value, now.get(index, {}).get(key))
                              for key, value in values.items()}
            loaded.append((opt, {**saved, "state": new}))
        for opt, state_dict in loaded:
            opt.load_state_dict(state_dict)


def _state_value(value: Any, now: Any) -> Any:
    """A saved optimizer value as the optimizer keeps it: a Python number where it holds one
    now (or, with nothing held yet, an integer count), else a tensor."""
    array = np.asarray(value)
    if isinstance(now, (int, float)) and not isinstance(now, bool):
        return type(now)(array.item())
    if now is None and array.ndim == 0 and array.dtype.kind in "iu":
        return int(array.item())
    return torch.from_numpy(np.array(array, copy=True))


def _plain(value: Any) -> Any:
    """Optimizer settings as JSON data (tensors to numbers, tuples to lists)."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _index(text: str) -> bool:
    """Whether ``text`` is an index as this adapter writes one: ASCII digits (isdigit alone
    takes "²", which int() refuses: a state from a file became a ValueError)."""
    return text.isascii() and text.isdigit()

"""The model adapter: the only way the bus touches a model.

Decision plugins never see the model; the bus applies their decisions through an adapter, and
sinks (checkpoints, TensorBoard histograms) read weights through it. An adapter is any object
with ``get_weights()`` and ``set_weights()``. Optional, used where present:

- ``learning_rate``: a read/write attribute or property; the bus reads and sets it.
- ``get_config()``: plain data describing the model, kept in the log header and checkpoints.
- ``get_optimizer_state() -> dict[str, ndarray]`` and ``set_optimizer_state(state)``: the
  optimizer's state, kept in full checkpoints and restored by BackupAndRestore
  (``TorchModel`` and ``KerasModel`` have both). Putting a state back leaves the learning rate
  as it is: the rate is the run's, which the bus sets from its log.
- ``weight_paths() -> dict[str, str]``: another path for each weight key, one its framework's
  users name layers by (``KerasModel``'s: ``"0.embedding/embeddings"`` ->
  ``"sequential/word_embedding/embeddings"``); TensorBoard finds a layer by either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ModelAdapter", "NumpyModel", "adapter_learning_rate"]


@runtime_checkable
class ModelAdapter(Protocol):
    """What the bus needs of a model. Weights are NumPy arrays keyed by a stable name."""

    def get_weights(self) -> dict[str, np.ndarray]:
        """A copy of every weight, keyed by name (``"dense/kernel"``)."""
        ...

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        """Replace the weights named in ``weights``; every name must exist, shapes must match."""
        ...


def adapter_learning_rate(model: object) -> float | None:
    """The adapter's learning rate, or ``None`` when it has none."""
    value = getattr(model, "learning_rate", None)
    return None if value is None else float(value)


class NumpyModel:
    """A model for plain NumPy training loops: a dict of arrays and a learning rate.

    The loop reads ``model.weights[name]`` and ``model.learning_rate`` and updates the arrays in
    place; the bus saves, snapshots and restores them, and sets ``learning_rate`` when a plugin
    decides so.

    >>> model = NumpyModel({"w": np.zeros(3)}, learning_rate=0.1)
    >>> model.weights["w"] -= 0.1 * np.ones(3)
    """

    def __init__(self, weights: Mapping[str, Any], *, learning_rate: float | None = None,
                 config: Mapping[str, Any] | None = None):
        import numpy as np  # here, not at the top: importing numpy is half of ``import eventbus``

        self.weights: dict[str, np.ndarray] = {}
        for name, value in weights.items():
            if not isinstance(name, str):
                raise ConfigError(f"NumpyModel: weight names must be str; got {name!r}",
                                  field="weights")
            self.weights[name] = np.array(value, copy=True)
        self.learning_rate = None if learning_rate is None else float(learning_rate)
        self._config = dict(config or {})

    def get_weights(self) -> dict[str, np.ndarray]:
        return {name: array.copy() for name, array in self.weights.items()}

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        unknown = sorted(set(weights) - set(self.weights))
        if unknown:
            raise ConfigError(f"NumpyModel.set_weights: unknown weight names {unknown}; "
                              f"the model has {sorted(self.weights)}", field="weights")
        import numpy as np

        for name, value in weights.items():
            array = np.asarray(value)
            if array.shape != self.weights[name].shape:
                raise ConfigError(
                    f"NumpyModel.set_weights: {name!r} has shape {array.shape}, "
                    f"the model's is {self.weights[name].shape}", field=name)
            # In place, so references the loop holds keep seeing the model's weights.
            self.weights[name][...] = array

    def get_config(self) -> dict[str, Any]:
        config = dict(self._config)
        config.setdefault("weights", {n: list(a.shape) for n, a in self.weights.items()})
        return config

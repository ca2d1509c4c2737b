"""The bus's model adapter for a Keras 3 model (:class:`KerasModel`).

Weights are keyed by layer order and variable role, ``"0.dense/kernel"`` (the first layer, a
``Dense``, its ``kernel``), as Keras's own weights file keys them by position rather than by the
names Keras makes up per process (``sequential_1/dense_3/kernel``): a model built again in the
same process (a notebook cell run twice) has the same keys, so it takes a backup or a
checkpoint of the first. :meth:`KerasModel.weight_paths` tells each key's Keras path
(``sequential/word_embedding/embeddings``), for what names layers as a Keras user does
(TensorBoard's ``embeddings_metadata``).

Checkpoints are written and read through Keras's own saving API (:meth:`KerasModel.save`,
:meth:`KerasModel.load`), so ``keras.models.load_model`` and ``model.load_weights`` read them.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from eventbus.errors import ConfigError

__all__ = ["KerasModel", "weight_keys"]

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()


def weight_keys(model: Any) -> dict[str, Any]:
    """The model's variables keyed by layer order and role, in the order of ``model.weights``.

    A layer's variables are keyed ``"<index>.<layer class>/<variable name>"``; a name that
    comes again in the same layer (sublayers with a ``kernel`` each) gets ``":1"``, ``":2"``,
    ... in Keras's variable order. Variables no layer holds (a subclassed model's own) are
    ``"model/<name>"``, numbered the same way.
    """
    keyed: dict[int, str] = {}
    for index, layer in enumerate(getattr(model, "layers", ())):
        prefix = f"{index}.{_snake(type(layer).__name__)}"
        seen: dict[str, int] = {}
        for variable in layer.weights:
            if id(variable) in keyed:  # a layer shared with an earlier one keeps its first key
                continue
            n = seen.get(variable.name, 0)
            seen[variable.name] = n + 1
            keyed[id(variable)] = f"{prefix}/{variable.name}" + (f":{n}" if n else "")
    own: dict[str, int] = {}
    out: dict[str, Any] = {}
    for variable in model.weights:
        key = keyed.get(id(variable))
        if key is None:
            n = own.get(variable.name, 0)
            own[variable.name] = n + 1
            key = f"model/{variable.name}" + (f":{n}" if n else "")
        out[key] = variable
    return out


#: Room a save needs beyond its variables' bytes: HDF5's and Keras's own structure, a config.
_SAVE_OVERHEAD = 1 << 20


def _require_room(path: str, model: Any, weights_only: bool) -> None:
    """An ``OSError`` (ENOSPC) before Keras opens the file when its folder has less room than
    the variables take: Keras writes HDF5 straight to the disk, and HDF5 closing a file whose
    writes a full disk refused crashes the process, where an ``OSError`` is a save the
    checkpoint writer keeps and tries again. (A disk that fills during the save is still
    HDF5's.)"""
    variables = list(model.weights)
    optimizer = getattr(model, "optimizer", None)
    if not weights_only and optimizer is not None:
        variables += list(getattr(optimizer, "variables", []))
    need = _SAVE_OVERHEAD + sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
                                for v in variables)
    try:
        disk = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:  # no way to tell: Keras's save will say
        return
    free = disk.f_bavail * disk.f_frsize
    if free < need:
        raise OSError(errno.ENOSPC, f"{path}: no room for the save: about {need} bytes "
                                    f"needed, {free} free")


def _save_legacy_h5(model: Any, path: str) -> None:
    """``model.save`` to a legacy ``.h5`` file, with the model's compile config kept whole:
    Keras 3's legacy saver takes the optimizer out of the model's own compile config as it
    writes (``training_config.pop("optimizer")`` on the live dict), so every later ``.keras``
    save of the model, a checkpoint's or the user's, would reload with Keras's default
    RMSprop and without the optimizer's state."""
    compiled = getattr(model, "_compile_config", None)
    config = getattr(compiled, "config", None)
    kept = dict(config) if isinstance(config, dict) else None
    try:
        model.save(path, overwrite=True)
    finally:
        if kept is not None and isinstance(compiled.config, dict):
            compiled.config.clear()
            compiled.config.update(kept)


class KerasModel:
    """The bus's model adapter for a Keras 3 model.

    Weights are keyed by layer order and variable role (``"0.dense/kernel"``, see
    :func:`weight_keys`); the learning rate is ``model.optimizer.learning_rate`` (an optimizer
    with a ``LearningRateSchedule`` has no settable rate: setting it fails and the bus records
    that as a failure at the edge). Checkpoints go through Keras's saving API (:meth:`save`).
    """

    def __init__(self, model: Any):
        self.keras_model = model

    def _variables(self) -> dict[str, Any]:
        return weight_keys(self.keras_model)

    def get_weights(self) -> dict[str, np.ndarray]:
        return {key: np.array(v.numpy(), copy=True) for key, v in self._variables().items()}

    def weight_paths(self) -> dict[str, str]:
        """Each weight key's Keras variable path, ``{"0.embedding/embeddings":
        "sequential/word_embedding/embeddings"}``: the layer's name and path as the user wrote
        or Keras made them up, which the keys leave out to stay the same in every process."""
        return {key: str(v.path) for key, v in self._variables().items()}

    def set_weights(self, weights: Mapping[str, Any]) -> None:
        variables = self._variables()
        if weights and not set(weights) & set(variables):
            weights = self._by_path(weights, variables)
        unknown = sorted(set(weights) - set(variables))
        if unknown:
            raise ConfigError(f"KerasModel.set_weights: unknown weights {unknown[:5]}; the model "
                              f"has {list(variables)[:10]}", field="weights")
        for key, value in weights.items():
            if tuple(np.shape(value)) != tuple(variables[key].shape):
                raise ConfigError(f"KerasModel.set_weights: {key!r} has shape "
                                  f"{tuple(np.shape(value))}, the model's is "
                                  f"{tuple(variables[key].shape)}", field=key)
        for key, value in weights.items():
            variables[key].assign(np.asarray(value))

    # --- the optimizer's state, for backups (BackupAndRestore) -------------------------------

    def _optimizer_variables(self, build: bool) -> list[Any]:
        """The optimizer's variables in Keras's order (its iteration count, then the slots of
        each trainable variable in the model's order: the same for the same model in any
        process); built first when asked, as ``fit``'s first step would build them."""
        model = self.keras_model
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None or not hasattr(optimizer, "variables"):
            return []
        if not getattr(optimizer, "built", True):
            if not build or not model.built:
                return []
            optimizer.build(model.trainable_variables)
        return list(optimizer.variables)

    def get_optimizer_state(self) -> dict[str, np.ndarray]:
        """The optimizer's variables (step count, moments) as arrays keyed by position,
        ``"0000"`` up; empty before the optimizer is built."""
        return {f"{i:04d}": np.array(v.numpy(), copy=True)
                for i, v in enumerate(self._optimizer_variables(build=False))}

    def set_optimizer_state(self, state: Mapping[str, Any]) -> None:
        """Put a state :meth:`get_optimizer_state` gave back (building the optimizer first, as
        a resumed run's has taken no step yet), all but the learning rate, which stays the
        run's (the bus sets it from its log: see :meth:`_rate_variables`). A state of another
        optimizer or model (other count or shapes) is a ``ConfigError``, and nothing is
        changed."""
        variables = self._optimizer_variables(build=True)
        keys = [f"{i:04d}" for i in range(len(variables))]
        if sorted(state) != keys:
            raise ConfigError(f"KerasModel.set_optimizer_state: the state has {len(state)} "
                              f"variables, this model's optimizer {len(variables)}",
                              field="optimizer")
        for key, variable in zip(keys, variables):
            if tuple(np.shape(state[key])) != tuple(variable.shape):
                raise ConfigError(f"KerasModel.set_optimizer_state: variable {key} "
                                  f"({variable.path}) has shape {tuple(np.shape(state[key]))}, "
                                  f"the optimizer's is {tuple(variable.shape)}", field=key)
        rates = self._rate_variables()
        for key, variable in zip(keys, variables):
            if id(variable) not in rates:
                variable.assign(np.asarray(state[key]))

    def _rate_variables(self) -> dict[int, Any]:
        """The optimizer's learning-rate variables, by id (none for a rate on a schedule).

        Keras keeps the rate among the optimizer's variables, so a backup or a checkpoint
        holds the rate of the epoch it was written in (a backup is written as the epoch's end
        is recorded, before a rate plugin cuts it). The rate is the run's, set by the bus from
        its log; putting an optimizer's state back leaves it as it is, as TorchModel's does."""
        optimizer = getattr(self.keras_model, "optimizer", None)
        found: dict[int, Any] = {}
        while optimizer is not None:
            rate = getattr(optimizer, "_learning_rate", None)
            if rate is not None and callable(getattr(rate, "assign", None)):
                found[id(rate)] = rate
            optimizer = getattr(optimizer, "inner_optimizer", None)  # a LossScaleOptimizer's
        return found

    def _by_path(self, weights: Mapping[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
        """Weights keyed by variable path (checkpoints and backups of eventbus before keys by
        layer order): by path where the paths are this model's, else by position, as Keras
        reads its legacy HDF5 weights, where every variable's name and shape match in order."""
        by_path = {v.path: key for key, v in variables.items()}
        if set(weights) <= set(by_path):
            return {by_path[path]: value for path, value in weights.items()}
        ordered = list(variables.items())
        given = list(weights.items())
        if len(given) == len(ordered) and all(
                path.rsplit("/", 1)[-1] == variable.name and
                tuple(np.shape(value)) == tuple(variable.shape)
                for (path, value), (_, variable) in zip(given, ordered)):
            return {key: value for (_, value), (key, _) in zip(given, ordered)}
        return dict(weights)  # unknown names: set_weights says which

    @property
    def learning_rate(self) -> float | None:
        optimizer = getattr(self.keras_model, "optimizer", None)
        if optimizer is None:
            return None
        return float(np.asarray(optimizer.learning_rate.numpy()))

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        optimizer = getattr(self.keras_model, "optimizer", None)
        if optimizer is None:
            raise ConfigError("KerasModel: the model is not compiled (no optimizer), so it has "
                              "no learning rate to set", field="optimizer")
        optimizer.learning_rate = float(value)

    def get_config(self) -> dict[str, Any]:
        model = self.keras_model
        config: dict[str, Any] = {
            "framework": f"keras {keras.__version__} ({keras.backend.backend()})",
            "class": type(model).__name__, "name": model.name,
            "weights": {key: list(v.shape) for key, v in self._variables().items()},
        }
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None:
            config["optimizer"] = type(optimizer).__name__
        return config

    # --- checkpoint files, through Keras's saving API ----------------------------------------

    def save(self, path: str, weights_only: bool) -> None:
        """Write the model to ``path`` as Keras writes it, chosen by the file name as Keras's
        ModelCheckpoint does: weights only to ``.weights.h5`` (``model.save_weights``, read by
        ``model.load_weights``) or to ``.h5``/``.hdf5`` (Keras's legacy weights layout, also
        read by ``load_weights``); the whole model to ``.keras`` or ``.h5``/``.hdf5``
        (``model.save``, read by ``keras.models.load_model``)."""
        model = self.keras_model
        _require_room(path, model, weights_only)
        if weights_only:
            if path.endswith(".weights.h5"):
                model.save_weights(path, overwrite=True)
            elif path.endswith((".h5", ".hdf5")):
                import h5py
                from keras.src.legacy.saving import legacy_h5_format

                with h5py.File(path, "w") as file:
                    legacy_h5_format.save_weights_to_hdf5_group(file, model)
            else:
                raise ConfigError(f"KerasModel.save: save_weights_only=True needs a file name "
                                  f"ending in .weights.h5 (Keras's weights format); got {path}",
                                  field="filepath")
        elif path.endswith(".keras"):
            model.save(path, overwrite=True)
        elif path.endswith((".h5", ".hdf5")):
            _save_legacy_h5(model, path)
        else:
            raise ConfigError(f"KerasModel.save: a whole Keras model is saved to a .keras file "
                              f"(or legacy .h5); got {path}", field="filepath")

    def load(self, path: str) -> None:
        """Put the weights of a file :meth:`save` wrote back into the model
        (``model.load_weights``, which reads every one of those layouts), and the optimizer's
        state where the file has it, but for the learning rate, which stays the run's."""
        model = self.keras_model
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and not optimizer.built and model.built:
            # Keras skips the optimizer's variables of a file for an optimizer not yet built
            # (before the first step): the resumed run would start its moments from zero.
            optimizer.build(model.trainable_variables)
        # The file's learning rate is the one of the epoch it was saved in; the run's is the
        # bus's (see _rate_variables), kept across the load.
        rates = [(v, np.array(v.numpy(), copy=True)) for v in self._rate_variables().values()]
        model.load_weights(path)
        for variable, value in rates:
            variable.assign(value)

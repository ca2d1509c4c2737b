"""Test doubles more than one test file uses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from eventbus import NumpyModel


class ScheduleModel(NumpyModel):
    """A model adapter whose optimizer's rate is a schedule: it can be read, not set."""

    def __init__(self, weights: Mapping[str, Any] | None = None):
        super().__init__(dict(weights) if weights is not None else {"w": np.zeros(2)})

    @property
    def learning_rate(self) -> float:
        return 0.01

    @learning_rate.setter
    def learning_rate(self, value: float | None) -> None:
        if value is not None:
            raise TypeError("the optimizer's learning rate is a schedule")

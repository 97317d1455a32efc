"""Balancing several training objectives: fixed weights, or uncertainty weighting (Kendall, Gal & Cipolla 2018).

Both take the objectives' current values and give the total loss and the multiplier of each objective's gradient
(the gradient of the total with respect to that objective's loss), so a training step scales each objective's
backward pass by its multiplier and sums.

* :class:`FixedWeights`: ``L = Σ_i w_i L_i``.
* :class:`UncertaintyWeighting`: one learned log-variance ``s_i`` per objective and
  ``L = Σ_i exp(-s_i) L_i + s_i`` (the form of Kendall et al. with ``s = log σ²`` and the constant factors
  dropped).  For fixed losses the optimum is ``s_i = log L_i``: each objective is weighted by the inverse of its
  own loss, so a noisy objective (large irreducible loss) is weighted down and no weight has to be tuned.
  ``log_vars`` is a :class:`~ruvattn.nn.Parameter`, trained by the same optimizer as the model.

>>> import numpy as np
>>> bal = UncertaintyWeighting(2)
>>> total, mult = bal([0.5, 2.0])
>>> round(total, 6), mult.tolist()  # s = 0: the plain sum, every multiplier 1
(2.5, [1.0, 1.0])
>>> bal.log_vars.grad.tolist()  # dL/ds_i = 1 - exp(-s_i) L_i
[0.5, -1.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ruvattn.errors import DimensionMismatch, InvalidConfig, NumericalInstability
from ruvattn.nn.core import Parameter

__all__ = ["FixedWeights", "UncertaintyWeighting"]


def _losses(op: str, losses: Any, count: int) -> NDArray[np.float64]:
    values = np.asarray(losses, np.float64).ravel()
    if values.size != count:
        raise DimensionMismatch(f"{op}: expected {count} objective values; got {values.size}.")
    if not np.isfinite(values).all():
        raise NumericalInstability(f"{op}: an objective's value is NaN or infinite: {values.tolist()}.")
    return values


class FixedWeights:
    """``L = Σ_i w_i L_i`` with constant weights ``w_i >= 0``."""

    def __init__(self, weights: Sequence[float]) -> None:
        w = np.asarray(weights, np.float64).ravel()
        if w.size == 0 or not np.isfinite(w).all() or (w < 0).any():
            raise InvalidConfig(f"FixedWeights: weights must be finite numbers >= 0; got {list(weights)!r}.")
        self.weights = w

    def __call__(self, losses: Any) -> tuple[float, NDArray[np.float64]]:
        """``(total, multipliers)`` for the objectives' current values."""
        values = _losses("FixedWeights", losses, self.weights.size)
        return float(self.weights @ values), self.weights.copy()

    def parameters(self) -> list[Parameter]:
        return []


class UncertaintyWeighting:
    """Kendall et al.'s homoscedastic-uncertainty weighting of ``count`` objectives (see the module docstring).

    Calling it with the objectives' values returns ``(total, multipliers)`` and adds ``∂L/∂s`` to
    ``log_vars.grad`` (zero it with the model's gradients: pass :meth:`parameters` to the optimizer).
    """

    def __init__(self, count: int, init: float = 0.0) -> None:
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise InvalidConfig(f"UncertaintyWeighting: count must be a positive integer; got {count!r}.")
        if not math.isfinite(init):
            raise InvalidConfig(f"UncertaintyWeighting: init must be finite; got {init!r}.")
        self.log_vars = Parameter(np.full(int(count), float(init)), "log_vars")

    def __call__(self, losses: Any) -> tuple[float, NDArray[np.float64]]:
        s = self.log_vars.data
        values = _losses("UncertaintyWeighting", losses, s.size)
        precision = np.exp(-s)
        self.log_vars.grad += 1.0 - precision * values
        return float(precision @ values + s.sum()), precision

    @property
    def weights(self) -> NDArray[np.float64]:
        """The current multipliers ``exp(-s_i)``."""
        return np.exp(-self.log_vars.data)

    def parameters(self) -> list[Parameter]:
        return [self.log_vars]

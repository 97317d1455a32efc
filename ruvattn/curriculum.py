"""Curriculum learning: a schedule over difficulty that drives what a training loop feeds the model.

A :class:`Curriculum` maps the epoch to a difficulty ``d ∈ [0, 1]`` (a pacing function: linear, cosine, step
or exponential, after an optional warm-up at ``start``) and turns it into the knobs of contrastive training:

* :meth:`~Curriculum.pick_negatives`: from candidates ordered hardest first (for example the output of
  :func:`ruvattn.mining.mine_hard_negatives`), a window that moves from the far end (easy, dissimilar negatives)
  at ``d = 0`` to the near end (the hardest) at ``d = 1``;
* :meth:`~Curriculum.temperature`: annealed from ``t_start`` to ``t_end`` (a sharper InfoNCE as training goes);
* :meth:`~Curriculum.hops`: the graph distance negatives are drawn from, from ``max_hops`` (far) down to
  ``min_hops`` (near).

>>> c = Curriculum(epochs=10, pacing="linear")
>>> [round(c.difficulty(e), 2) for e in (0, 5, 9, 20)]
[0.0, 0.56, 1.0, 1.0]
>>> c.pick_negatives(list(range(10)), 3, epoch=0), c.pick_negatives(list(range(10)), 3, epoch=9)
([7, 8, 9], [0, 1, 2])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ruvattn.errors import InvalidConfig

__all__ = ["PACINGS", "Curriculum"]

PACINGS = ("linear", "cosine", "step", "exponential")


class Curriculum:
    """Difficulty over ``epochs`` (see the module docstring).

    Parameters
    ----------
    epochs : the epoch at which difficulty reaches ``end`` (held after it).
    pacing : ``"linear"``, ``"cosine"`` (slow start and finish), ``"step"`` (``steps`` equal stairs) or
        ``"exponential"`` (slow start: ``(2^(10 p) - 1) / (2^10 - 1)``).
    start, end : the difficulty at epoch 0 and from ``epochs`` on (``0 <= start <= end <= 1``).
    warmup : epochs held at ``start`` before the pacing begins.
    """

    def __init__(self, epochs: int, pacing: str = "linear", start: float = 0.0, end: float = 1.0, warmup: int = 0,
                 steps: int = 4) -> None:  # fmt: skip
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
            raise InvalidConfig(f"Curriculum: epochs must be a positive integer; got {epochs!r}.")
        if pacing not in PACINGS:
            raise InvalidConfig(f"Curriculum: pacing must be one of {PACINGS}; got {pacing!r}.")
        if not 0.0 <= start <= end <= 1.0:
            raise InvalidConfig(f"Curriculum: need 0 <= start <= end <= 1; got start={start!r}, end={end!r}.")
        if warmup < 0 or warmup >= epochs or steps < 1:
            raise InvalidConfig(f"Curriculum: need 0 <= warmup < epochs and steps >= 1; got {warmup!r}, {steps!r}.")
        self.epochs, self.pacing, self.start, self.end = int(epochs), pacing, float(start), float(end)
        self.warmup, self.steps = int(warmup), int(steps)

    def progress(self, epoch: int) -> float:
        """``p ∈ [0, 1]``: how far through the pacing epoch ``epoch`` is (0 during the warm-up)."""
        if epoch < 0:
            raise InvalidConfig(f"Curriculum: epoch must be >= 0; got {epoch!r}.")
        span = max(1, self.epochs - 1 - self.warmup)
        return min(1.0, max(0.0, (epoch - self.warmup) / span))

    def difficulty(self, epoch: int) -> float:
        """``start + (end - start) · pace(p)`` for the epoch's progress ``p``."""
        p = self.progress(epoch)
        if self.pacing == "linear":
            pace = p
        elif self.pacing == "cosine":
            pace = (1 - math.cos(math.pi * p)) / 2
        elif self.pacing == "step":
            pace = math.floor(p * self.steps) / self.steps if p < 1 else 1.0
        else:
            pace = (2 ** (10 * p) - 1) / (2**10 - 1)
        return self.start + (self.end - self.start) * pace

    def temperature(self, epoch: int, t_start: float = 1.0, t_end: float = 0.07) -> float:
        """A temperature annealed geometrically from ``t_start`` (easy, soft) to ``t_end`` (hard, sharp)."""
        if not (t_start > 0 and t_end > 0):
            raise InvalidConfig(f"Curriculum.temperature: temperatures must be > 0; got {t_start!r}, {t_end!r}.")
        d = self.difficulty(epoch)
        return float(t_start * (t_end / t_start) ** d)

    def hops(self, epoch: int, min_hops: int = 2, max_hops: int = 4) -> int:
        """The hop distance to draw negatives from: ``max_hops`` (far, easy) at difficulty 0 down to ``min_hops``."""
        if not 1 <= min_hops <= max_hops:
            raise InvalidConfig(f"Curriculum.hops: need 1 <= min_hops <= max_hops; got {min_hops!r}, {max_hops!r}.")
        return round(max_hops - (max_hops - min_hops) * self.difficulty(epoch))

    def pick_negatives(self, candidates: Sequence[Any] | np.ndarray, count: int, epoch: int) -> list[Any]:
        """``count`` consecutive candidates from a list ordered hardest first: the window starts at the far (easy)
        end at difficulty 0 and slides to the front (the hardest) at difficulty 1.  ``-1`` ids (padding) are
        dropped first."""
        items = [c for c in list(candidates) if not (isinstance(c, (int, np.integer)) and c < 0)]
        if count < 0:
            raise InvalidConfig(f"Curriculum.pick_negatives: count must be >= 0; got {count!r}.")
        take = min(count, len(items))
        if take == 0:
            return []
        first = round((1.0 - self.difficulty(epoch)) * (len(items) - take))
        return items[first : first + take]

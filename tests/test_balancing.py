"""Multi-objective balancing and curricula: the formulas, gradients by finite differences, Kendall et al.'s
published behaviour on a toy problem, and the curriculum's schedules."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ruvattn import DimensionMismatch, InvalidConfig, NumericalInstability, nn, optim
from ruvattn.balancing import FixedWeights, UncertaintyWeighting
from ruvattn.curriculum import Curriculum


def test_uncertainty_weighting_formula_and_gradient():
    bal = UncertaintyWeighting(3)
    bal.log_vars.data[:] = [0.3, -1.2, 2.0]
    losses = np.array([0.7, 0.1, 5.0])
    total, mult = bal(losses)
    s = bal.log_vars.data
    assert total == pytest.approx(float(np.sum(np.exp(-s) * losses + s)))
    np.testing.assert_allclose(mult, np.exp(-s))
    grad = bal.log_vars.grad.copy()
    for i in range(3):
        probe = UncertaintyWeighting(3)
        probe.log_vars.data[:] = s
        probe.log_vars.data[i] += 1e-6
        up = probe(losses)[0]
        probe.log_vars.data[i] -= 2e-6
        down = probe(losses)[0]
        assert (up - down) / 2e-6 == pytest.approx(grad[i], rel=1e-6)


def _two_tasks(weighting, seed):
    """Two regression tasks sharing one weight vector, noise 0.1 and 1.0; returns (|w - truth|, multipliers)."""
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal(4)
    x = rng.standard_normal((200, 4))
    ys = [x @ truth + 0.1 * rng.standard_normal(200), x @ truth + 1.0 * rng.standard_normal(200)]
    w = nn.Parameter(np.zeros(4), "w")
    opt = optim.Adam([w, *weighting.parameters()], lr=0.02)
    for _ in range(1500):
        opt.zero_grad()
        residuals = [x @ w.data - y for y in ys]
        losses = [float(np.mean(r**2)) for r in residuals]
        _, mult = weighting(losses)
        for m, r in zip(mult, residuals, strict=True):
            w.grad += m * (2 * x.T @ r / len(r))
        opt.step()
    return float(np.linalg.norm(w.data - truth)), mult


def test_uncertainty_weighting_weights_tasks_by_inverse_noise_and_fits_better():
    errs_u, errs_f = [], []
    for seed in range(3):
        err_u, mult = _two_tasks(UncertaintyWeighting(2), seed)
        err_f, _ = _two_tasks(FixedWeights([1.0, 1.0]), seed)
        errs_u.append(err_u)
        errs_f.append(err_f)
        assert 50 < mult[0] / mult[1] < 200  # ≈ (1.0 / 0.1)²: each task weighted by 1 / its noise variance
    assert np.mean(errs_u) < 0.8 * np.mean(errs_f)  # inverse-variance weighting estimates the shared w better


def test_fixed_weights_and_refusals():
    total, mult = FixedWeights([2.0, 0.5])([1.0, 4.0])
    assert total == 4.0 and mult.tolist() == [2.0, 0.5]
    with pytest.raises(InvalidConfig):
        FixedWeights([-1.0])
    with pytest.raises(NumericalInstability):
        UncertaintyWeighting(2)([1.0, np.nan])
    with pytest.raises(DimensionMismatch, match="expected 2"):
        UncertaintyWeighting(2)([1.0])


@pytest.mark.parametrize("pacing", ["linear", "cosine", "step", "exponential"])
def test_curriculum_difficulty_rises_from_start_to_end(pacing):
    c = Curriculum(epochs=20, pacing=pacing, start=0.1, end=0.9, warmup=3)
    d = [c.difficulty(e) for e in range(30)]
    assert d[0] == d[3] == pytest.approx(0.1) and d[19] == d[29] == pytest.approx(0.9)
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(d))
    t = [c.temperature(e, 1.0, 0.1) for e in range(30)]
    assert t[0] == pytest.approx(1.0 * 0.1**0.1) and t[-1] == pytest.approx(1.0 * 0.1**0.9)
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(t))
    hops = [c.hops(e, 2, 5) for e in range(30)]
    assert hops[0] >= hops[-1] and hops[-1] == 2


def test_curriculum_negatives_move_from_far_to_near():
    c = Curriculum(epochs=11)
    hardest_first = np.array([10, 11, 12, 13, 14, 15, 16, 17, -1, -1])  # -1: padding from the miner
    windows = [c.pick_negatives(hardest_first, 3, e) for e in range(11)]
    assert windows[0] == [15, 16, 17] and windows[-1] == [10, 11, 12]
    starts = [hardest_first.tolist().index(w[0]) for w in windows]
    assert starts == sorted(starts, reverse=True)
    assert c.pick_negatives([], 3, 5) == [] and c.pick_negatives([1, 2], 5, 0) == [1, 2]
    with pytest.raises(InvalidConfig, match="pacing"):
        Curriculum(5, pacing="sigmoid")
    with pytest.raises(InvalidConfig, match="warmup"):
        Curriculum(5, warmup=5)

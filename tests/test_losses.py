"""Losses and regularizers: the golden corpus (PyTorch autograd), float64 finite differences for every form
the golden cases do not cover (several positives, shared negatives, dot, local_contrastive, norm_penalty),
and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from ruvattn import DimensionMismatch, InvalidConfig, NumericalInstability, OutOfBounds
from ruvattn.losses import info_nce, local_contrastive, triplet
from ruvattn.regularizers import laplacian, norm_penalty, orthogonality
from tests.golden_harness import assert_close, cases, load

INFONCE = cases(("infonce_",))
TRIPLET = cases(("triplet_",))
LAPLACIAN = cases(("laplacian_",))
ORTHO = cases(("orthogonality_",))


def test_the_golden_cases_are_there():
    assert len(INFONCE) >= 3 and len(TRIPLET) >= 2 and len(LAPLACIAN) >= 2 and len(ORTHO) >= 2


@pytest.mark.parametrize("path", INFONCE, ids=[p.stem for p in INFONCE])
def test_info_nce_golden(path):
    case = load(path)
    i, p = case["inputs"], case["params"]
    loss, (ga, gp, gn) = info_nce(i["anchor"], i["positive"], i["negatives"], p["tau"], p["similarity"])
    assert_close(case, "loss", loss)
    assert_close(case, "grad_anchor", ga)
    assert_close(case, "grad_positive", gp)
    assert_close(case, "grad_negatives", gn)
    assert ga.dtype == np.float32 and gn.shape == i["negatives"].shape


@pytest.mark.parametrize("path", TRIPLET, ids=[p.stem for p in TRIPLET])
def test_triplet_golden(path):
    case = load(path)
    i, p = case["inputs"], case["params"]
    per, _ = triplet(i["anchor"], i["positive"], i["negative"], p["margin"], p["eps"], reduction="none")
    assert_close(case, "loss_per_sample", per)
    loss, (ga, _, _) = triplet(i["anchor"], i["positive"], i["negative"], p["margin"], p["eps"])
    assert_close(case, "loss_mean", loss)
    assert_close(case, "grad_anchor_of_mean", ga)


@pytest.mark.parametrize("path", LAPLACIAN, ids=[p.stem for p in LAPLACIAN])
def test_laplacian_golden(path):
    case = load(path)
    i = case["inputs"]
    loss, grad = laplacian(i["x"], i["edge_index"], i["edge_weight"])
    assert_close(case, "loss_unnormalized", loss)
    assert_close(case, "grad_unnormalized", grad)
    loss, grad = laplacian(i["x"], i["edge_index"].T, i["edge_weight"], normalized=True)  # (E, 2) pairs too
    assert_close(case, "loss_sym_normalized", loss)
    assert_close(case, "grad_sym_normalized", grad)


@pytest.mark.parametrize("path", ORTHO, ids=[p.stem for p in ORTHO])
def test_orthogonality_golden(path):
    case = load(path)
    loss, grad = orthogonality(case["inputs"]["x"])
    assert_close(case, "loss", loss)
    assert_close(case, "grad", grad)


def _fd_check(fn, arrays, grads, eps=1e-6, rtol=1e-6, picks=10, seed=0):
    rng = np.random.default_rng(seed)
    for k, (arr, grad) in enumerate(zip(arrays, grads, strict=True)):
        flat, g = arr.reshape(-1), np.asarray(grad).reshape(-1)
        for idx in rng.choice(flat.size, min(picks, flat.size), replace=False):
            old = flat[idx]
            flat[idx] = old + eps
            plus = fn(*arrays)
            flat[idx] = old - eps
            minus = fn(*arrays)
            flat[idx] = old
            fd = (plus - minus) / (2 * eps)
            assert abs(fd - g[idx]) <= rtol * max(1.0, abs(fd)) + 1e-9, (k, idx, fd, g[idx])


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
@pytest.mark.parametrize(
    "shapes",
    [((6,), (6,), (5, 6)), ((6,), (3, 6), (5, 6)), ((4, 6), (4, 6), (4, 5, 6)), ((4, 6), (4, 2, 6), (5, 6)),
     ((4, 6), (4, 3, 6), (4, 5, 6))],
    ids=["one", "one-anchor-3-positives", "batch", "batch-2-positives-shared-negatives", "batch-3-positives"],
)  # fmt: skip
def test_info_nce_gradients_match_finite_differences(similarity, shapes):
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(s) for s in shapes]
    loss, grads = info_nce(*arrays, temperature=0.5, similarity=similarity)

    def f(a, p, n):
        return info_nce(a, p, n, 0.5, similarity)[0]

    _fd_check(f, arrays, grads)
    # one positive per anchor reduces to cross-entropy over [pos, negs] (the golden definition), term by term
    if shapes == ((6,), (3, 6), (5, 6)):
        terms = [info_nce(arrays[0], arrays[1][j], arrays[2], 0.5, similarity)[0] for j in range(3)]
        assert loss == pytest.approx(np.mean(terms), rel=1e-12)


def test_shared_negatives_equal_copied_negatives():
    rng = np.random.default_rng(2)
    a, p, n = rng.standard_normal((3, 8)), rng.standard_normal((3, 8)), rng.standard_normal((4, 8))
    shared, (ga, _, gn) = info_nce(a, p, n)
    copied, (ga2, _, gn2) = info_nce(a, p, np.broadcast_to(n, (3, 4, 8)))
    assert shared == pytest.approx(copied, rel=1e-12)
    np.testing.assert_allclose(ga, ga2, rtol=1e-10)
    np.testing.assert_allclose(gn, gn2.sum(0), rtol=1e-10, atol=1e-14)


def test_local_contrastive_prefers_close_neighbours_and_has_gradients():
    rng = np.random.default_rng(3)
    node = rng.standard_normal(8)
    near = node + 0.05 * rng.standard_normal((3, 8))
    far = rng.standard_normal((6, 8))
    good, grads = local_contrastive(node, near, far, temperature=0.2)
    bad, _ = local_contrastive(node, far[:3], near, temperature=0.2)
    assert good < bad
    _fd_check(lambda a, p, n: local_contrastive(a, p, n, 0.2)[0], [node, near, far], grads)


def test_triplet_and_regularizer_gradients_match_finite_differences():
    rng = np.random.default_rng(4)
    a, p, n = (rng.standard_normal((5, 7)) for _ in range(3))
    _, grads = triplet(a, p, n, margin=2.0)
    _fd_check(lambda a, p, n: triplet(a, p, n, 2.0)[0], [a, p, n], grads)
    x = rng.standard_normal((9, 4))
    _, g = norm_penalty(x, 1.5)
    _fd_check(lambda x: norm_penalty(x, 1.5)[0], [x], [g])
    edges = np.array([[0, 1], [1, 2], [2, 3], [0, 5], [6, 7]])
    w = rng.random(5) + 0.1
    for normalized in (False, True):
        _, g = laplacian(x, edges, w, normalized=normalized)
        _fd_check(lambda x, nz=normalized: laplacian(x, edges, w, normalized=nz)[0], [x], [g])
    _, g = orthogonality(x[:3])
    _fd_check(lambda x: orthogonality(x)[0], [x[:3].copy()], [g])


def test_hand_derived_values():
    # orthonormal rows: no orthogonality penalty; unit rows: no norm penalty
    q, _ = np.linalg.qr(np.random.default_rng(5).standard_normal((6, 6)))
    assert orthogonality(q[:3])[0] == pytest.approx(0.0, abs=1e-24)
    assert norm_penalty(q, 1.0)[0] == pytest.approx(0.0, abs=1e-24)
    assert norm_penalty(np.zeros((2, 3)), 2.0) == (4.0, pytest.approx(np.zeros((2, 3))))
    # the triplet hinge: an easy triplet has loss and gradient 0
    loss, (ga, _, _) = triplet(np.zeros(3), np.zeros(3), np.full(3, 10.0), margin=1.0)
    assert loss == 0.0 and not ga.any()


def test_bad_inputs():
    a = np.ones(4)
    with pytest.raises(InvalidConfig, match="temperature"):
        info_nce(a, a, np.ones((2, 4)), temperature=0)
    with pytest.raises(InvalidConfig, match="similarity"):
        info_nce(a, a, np.ones((2, 4)), similarity="l2")
    with pytest.raises(DimensionMismatch, match="width 3"):
        info_nce(a, a, np.ones((2, 3)))
    with pytest.raises(DimensionMismatch, match="negatives"):
        info_nce(np.ones((2, 4)), np.ones((2, 4)), np.ones((3, 2, 4)))
    with pytest.raises(NumericalInstability, match="zero vector"):
        info_nce(a, np.zeros(4), np.ones((2, 4)))
    with pytest.raises(NumericalInstability, match="NaN"):
        info_nce(a, a, np.full((2, 4), np.nan))
    with pytest.raises(DimensionMismatch, match="share one shape"):
        triplet(np.ones(3), np.ones(3), np.ones(4))
    with pytest.raises(DimensionMismatch, match="P >= 1"):
        local_contrastive(a, np.ones((0, 4)), np.ones((2, 4)))
    with pytest.raises(OutOfBounds):
        laplacian(np.ones((3, 2)), np.array([[0, 3]]))
    with pytest.raises(DimensionMismatch, match="integer"):
        laplacian(np.ones((3, 2)), np.array([[0.0, 1.0]]))
    with pytest.raises(DimensionMismatch, match=r"\(N, d\)"):
        orthogonality(np.ones(3))
    # no negatives: every term is 0 (the positive is the whole softmax)
    loss, (ga, _, _) = info_nce(a, a, np.ones((0, 4)))
    assert loss == 0.0 and not ga.any()


def test_consistency_against_torch_autograd_and_fd() -> None:
    """GRAND's consistency loss: the sharpened mean is a constant target (detached), as in GRAND's code."""
    torch = pytest.importorskip("torch")
    from ruvattn.losses import consistency

    rng = np.random.default_rng(0)
    zs = [rng.standard_normal((7, 4)) * 2 for _ in range(3)]
    idx = np.array([0, 2, 3, 6])
    loss, grads = consistency(zs, temperature=0.5, index=idx)
    tz = [torch.tensor(z, requires_grad=True) for z in zs]
    ps = [torch.softmax(z[idx], dim=1) for z in tz]
    mean = torch.stack(ps).mean(0)
    sharp = mean**2  # 1 / tau with tau = 0.5
    target = (sharp / sharp.sum(1, keepdim=True)).detach()
    ref = sum(((p - target) ** 2).sum(1).mean() for p in ps) / 3
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    for g, z in zip(grads, tz, strict=True):
        np.testing.assert_allclose(g, z.grad.numpy(), rtol=1e-10, atol=1e-14)
    assert not grads[0][[1, 4, 5]].any()  # rows outside the index get no gradient


def test_consistency_bad_inputs() -> None:
    from ruvattn.losses import consistency

    z = np.zeros((3, 2))
    with pytest.raises(InvalidConfig):
        consistency([z])
    with pytest.raises(DimensionMismatch):
        consistency([z, np.zeros((3, 3))])
    with pytest.raises(InvalidConfig):
        consistency([z, z], temperature=0.0)
    with pytest.raises(NumericalInstability):
        consistency([z, z + np.nan])
    with pytest.raises(DimensionMismatch):
        consistency([z, z], index=[5])

"""Dual-space cross-attention against a numpy transcription of its formula and torch autograd."""

from __future__ import annotations

import numpy as np
import pytest

from ruvattn import DimensionMismatch, DualSpaceAttention, EmptyInput, InvalidConfig, NeighbourList


def _sdpa(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    s = k @ q * scale
    w = np.exp(s - s.max())
    return (w / w.sum()) @ v


def _reference(q, k, v, lk, lv, w, b, scale):
    zg = _sdpa(q, k, v, scale)
    zl = _sdpa(q, lk, lv, scale)
    zc = _sdpa(zg, lk, lv, scale)
    z = np.stack([zg, zl, zc])
    logits = w @ z.reshape(-1) + b
    a = np.exp(logits - logits.max())
    a /= a.sum()
    return a @ z


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    d = 6
    m = DualSpaceAttention(d, latent_k=3, temperature=0.7)
    m.load_state_dict({"gate.weight": rng.standard_normal((3, 3 * d)), "gate.bias": rng.standard_normal(3)})
    q, k, v = rng.standard_normal(d), rng.standard_normal((9, d)), rng.standard_normal((9, d))
    lk, lv = rng.standard_normal((4, d)), rng.standard_normal((4, d))
    return m, q, k, v, lk, lv


def test_forward_matches_the_formula(problem) -> None:
    m, q, k, v, lk, lv = problem
    s = m.state_dict()
    scale = 1 / (np.sqrt(6) * 0.7)
    got = m.forward(q, k, v, latent_keys=lk, latent_values=lv)
    np.testing.assert_allclose(got, _reference(q, k, v, lk, lv, s["gate.weight"], s["gate.bias"], scale), rtol=1e-12)
    top = np.sort(np.argsort(-(k @ q))[:3])  # no latent keys: the 3 best-scoring candidates
    ref = _reference(q, k, v, k[top], v[top], s["gate.weight"], s["gate.bias"], scale)
    np.testing.assert_allclose(m.forward(q, k, v), ref, rtol=1e-12)
    # the weights reproduce the output exactly
    w = m.weights(q, k, values=v, latent_keys=lk, latent_values=lv)
    assert w.shape == (1, 13) and np.isclose(w.sum(), 1.0)
    np.testing.assert_allclose(w[0] @ np.vstack([v, lv]), got, rtol=1e-12)
    np.testing.assert_allclose(m.weights(q, k, values=v)[0] @ v, m.forward(q, k, v), rtol=1e-12)
    np.testing.assert_allclose(m.weights(q, k)[0] @ k, m.forward(q, k, k), rtol=1e-12)  # values default: the keys


def test_initial_gate_averages_the_three_parts() -> None:
    rng = np.random.default_rng(1)
    m = DualSpaceAttention(4, latent_k=2)
    q, k, lk = rng.standard_normal(4), rng.standard_normal((5, 4)), rng.standard_normal((3, 4))
    scale = 0.5
    zg = _sdpa(q, k, k, scale)
    mean = (zg + _sdpa(q, lk, lk, scale) + _sdpa(zg, lk, lk, scale)) / 3
    np.testing.assert_allclose(m.forward(q, k, k, latent_keys=lk, latent_values=lk), mean, rtol=1e-12)


def test_backward_matches_torch_autograd(problem) -> None:
    torch = pytest.importorskip("torch")
    m, q, k, v, lk, lv = problem
    s = m.state_dict()
    qs = np.stack([q, -0.5 * q, np.roll(q, 1)])
    up = np.random.default_rng(2).standard_normal((3, 6))
    grads, dlk, dlv = m.backward_latent(qs, k, v, up, latent_keys=lk, latent_values=lv)
    t = {n: torch.tensor(a, dtype=torch.float64, requires_grad=True) for n, a in
         {"q": qs, "k": k, "v": v, "lk": lk, "lv": lv, "w": s["gate.weight"], "b": s["gate.bias"]}.items()}  # fmt: skip
    scale = 1 / (np.sqrt(6) * 0.7)

    def attn(qq, kk, vv):
        return torch.softmax(qq @ kk.T * scale, dim=-1) @ vv

    zg = attn(t["q"], t["k"], t["v"])
    zl = attn(t["q"], t["lk"], t["lv"])
    zc = attn(zg, t["lk"], t["lv"])
    z = torch.stack([zg, zl, zc], dim=1)  # (m, 3, d)
    a = torch.softmax(z.reshape(3, -1) @ t["w"].T + t["b"], dim=-1)
    out = (a[:, :, None] * z).sum(1)
    (out * torch.tensor(up)).sum().backward()
    np.testing.assert_allclose(m.forward_batch(qs, k, v, latent_keys=lk, latent_values=lv), out.detach().numpy(),
                               rtol=1e-12)  # fmt: skip
    for mine, ref in ((grads.query, "q"), (grads.keys, "k"), (grads.values, "v"), (dlk, "lk"), (dlv, "lv"),
                      (grads.params["gate.weight"], "w"), (grads.params["gate.bias"], "b")):  # fmt: skip
        np.testing.assert_allclose(mine, t[ref].grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=ref)


def test_neighbour_form_with_latent_neighbours(problem) -> None:
    m, _, k, v, _, _ = problem
    rng = np.random.default_rng(3)
    qs = rng.standard_normal((4, 6))
    graph = NeighbourList.from_lists([[0, 1, 2], [3, 4], [5, 6, 7, 8], []], 9)
    latent = NeighbourList.from_lists([[8, 7], [], [0], [1, 2]], 9)
    got = m.forward_neighbours(qs, k, v, graph, latent_neighbours=latent)
    np.testing.assert_allclose(got[0], m.forward(qs[0], k[[0, 1, 2]], v[[0, 1, 2]], latent_keys=k[[8, 7]],
                                                 latent_values=v[[8, 7]]))  # fmt: skip
    np.testing.assert_allclose(got[1], m.forward(qs[1], k[[3, 4]], v[[3, 4]]))  # no latent list: chosen
    np.testing.assert_allclose(got[2], m.forward(qs[2], k[5:], v[5:], latent_keys=k[[0]], latent_values=v[[0]]))
    assert not got[3].any()  # no graph neighbours: zero row


def test_bad_inputs(problem) -> None:
    m, q, k, v, lk, lv = problem
    with pytest.raises(InvalidConfig):
        m.forward(q, k, v, latent_values=lv)
    with pytest.raises(InvalidConfig):
        m.forward(q, k, v, latent_keys=lk)
    with pytest.raises(DimensionMismatch):
        m.forward(q, k, v, latent_keys=lk[:, :5], latent_values=lv)
    with pytest.raises(DimensionMismatch):
        m.forward(q, k, v, latent_keys=lk, latent_values=lv[:3])
    with pytest.raises(DimensionMismatch):  # the graph summary is the cross term's query: values of width d
        m.forward(q, k, v[:, :4])
    with pytest.raises(EmptyInput):
        m.forward(q, k, v, latent_keys=lk[:0], latent_values=lv[:0])
    with pytest.raises(InvalidConfig):
        DualSpaceAttention(6, latent_k=0)

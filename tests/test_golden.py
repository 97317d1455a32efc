"""Every sdpa_*, flash_* and mha_* golden case, within its stored tolerance."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ruvattn import FlashAttention, MultiHeadAttention, ScaledDotProductAttention
from tests.golden_harness import GOLDEN_DIR, assert_close, cases, load

SDPA = cases(("sdpa_", "flash_"))
SDPA = [p for p in SDPA if not p.name.startswith("sdpa_grad")]
MHA = cases(("mha_",))


def _ids(paths):
    return [p.stem for p in paths]


def test_corpus_is_present():
    if "RUVATTN_GOLDEN_DIR" in os.environ:  # another corpus in the same format: any subset of kinds
        assert SDPA or MHA or GRAD, f"no sdpa_/flash_/mha_ cases in {GOLDEN_DIR}"
    else:
        assert len(SDPA) >= 15 and len(MHA) >= 3 and len(GRAD) >= 2, f"golden corpus incomplete in {GOLDEN_DIR}"


def _sdpa(case):
    q, k, v = (case["inputs"][n] for n in ("q", "k", "v"))
    T = float(case["params"].get("temperature", 1.0))
    return q, k, v, case["inputs"].get("mask"), T


@pytest.mark.parametrize("path", SDPA, ids=_ids(SDPA))
def test_scaled_dot_product_golden(path):
    case = load(path)
    q, k, v, mask, T = _sdpa(case)
    attn = ScaledDotProductAttention(q.shape[-1], temperature=T)
    if q.ndim == 1:
        out, lse = attn.forward_with_lse(q, k, v, mask=mask)
        w = attn.attention_weights(q, k, mask=mask)
    else:
        out = attn.forward_batch(q, k, v, mask=mask)
        w = attn.weights(q, k, mask=mask)[0]
        lse = FlashAttention(q.shape[-1], temperature=T).forward_with_lse(q, k, v, mask=mask)[1]
    assert out.dtype == np.float32
    assert_close(case, "output", out)
    if "weights" in case["expected"]:
        assert_close(case, "weights", w)
    if "lse" in case["expected"]:
        assert_close(case, "lse", lse)
    if "scores" in case["expected"]:
        scores = (np.atleast_2d(q).astype(np.float64) @ k.T.astype(np.float64)) * float(1 / (np.sqrt(q.shape[-1]) * T))
        assert_close(case, "scores", scores.reshape(case["expected"]["scores"].shape))


@pytest.mark.parametrize("block", [64, 128, 256, 1000, 7])
@pytest.mark.parametrize("path", SDPA, ids=_ids(SDPA))
def test_flash_golden(path, block):
    case = load(path)
    q, k, v, mask, T = _sdpa(case)
    flash = FlashAttention(q.shape[-1], block_size=block, temperature=T)
    out, lse = flash.forward_with_lse(np.atleast_2d(q), k, v, mask=mask)
    assert_close(case, "output", out.reshape(case["expected"]["output"].shape))
    if "lse" in case["expected"]:
        assert_close(case, "lse", lse.reshape(case["expected"]["lse"].shape))


def _mha(case):
    d = case["params"]["d"]
    h = case["params"]["num_heads"]
    mha = MultiHeadAttention(d, h)
    w = case["weights"]
    mha.load_state_dict(
        {
            "in_proj_weight": w["in_proj_weight"],
            "in_proj_bias": w["in_proj_bias"],
            "out_proj.weight": w["out_proj_weight"],
            "out_proj.bias": w["out_proj_bias"],
        }
    )
    return mha


@pytest.mark.parametrize("path", MHA, ids=_ids(MHA))
def test_multi_head_golden(path):
    case = load(path)
    mha = _mha(case)
    x, key, value = (case["inputs"][n] for n in ("query", "key", "value"))
    x = np.atleast_2d(x)  # [m, d] (the public corpus has m = 1)
    assert_close(case, "output", np.stack([mha.forward(row, key, value) for row in x]))
    heads = np.stack([mha.weights(row, key) for row in x], axis=1)  # [h, m, n]
    assert_close(case, "attn_weights", heads)
    assert_close(case, "attn_weights_avg", np.stack([mha.attention_weights(row, key) for row in x]))
    # projected once and reused; the batch and neighbour forms agree with the golden output too
    kv = mha.project(key, value)
    assert_close(case, "output", np.stack([mha.forward(row, kv) for row in x]))
    assert_close(case, "output", mha.forward_batch(x, key, value))
    nbrs = np.tile(np.arange(key.shape[0]), (x.shape[0], 1))
    assert_close(case, "output", mha.forward_neighbours(x, key, value, nbrs))


@pytest.mark.parametrize("path", MHA, ids=_ids(MHA))
def test_multi_head_golden_from_safetensors(path, tmp_path):
    """A safetensors file with torch's tensor names (as torch writes it) loads and reproduces torch."""
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    case = load(path)
    w = case["weights"]
    f = tmp_path / "mha.safetensors"
    safetensors_numpy.save_file(
        {
            "attn.in_proj_weight": w["in_proj_weight"],
            "attn.in_proj_bias": w["in_proj_bias"],
            "attn.out_proj.weight": w["out_proj_weight"],
            "attn.out_proj.bias": w["out_proj_bias"],
        },
        str(f),
    )
    mha = MultiHeadAttention(case["params"]["d"], case["params"]["num_heads"]).load_safetensors(f)
    x, key, value = (case["inputs"][n] for n in ("query", "key", "value"))
    assert_close(case, "output", mha.forward_batch(np.atleast_2d(x), key, value))
    # and our own save round-trips bit for bit
    mha.save_safetensors(tmp_path / "ours.safetensors")
    again = MultiHeadAttention(case["params"]["d"], case["params"]["num_heads"], seed=99).load_safetensors(
        tmp_path / "ours.safetensors"
    )
    x0 = np.atleast_2d(x)[0]
    np.testing.assert_array_equal(again.forward(x0, key, value), mha.forward(x0, key, value))


GRAD = cases(("sdpa_grad_",))


@pytest.mark.parametrize("path", GRAD, ids=_ids(GRAD))
def test_scaled_dot_product_backward_golden(path):
    case = load(path)
    q, k, v, g = (case["inputs"][n] for n in ("q", "k", "v", "upstream"))
    attn = ScaledDotProductAttention(q.shape[-1])
    out = attn.forward(q, k, v) if q.ndim == 1 else attn.forward_batch(q, k, v)
    assert_close(case, "output", out)
    assert_close(case, "loss", np.sum(out.astype(np.float64) * g))
    grads = attn.backward(q, k, v, g)
    assert_close(case, "grad_q", grads.query)
    assert_close(case, "grad_k", grads.keys)
    assert_close(case, "grad_v", grads.values)

"""The hot kernels compile to vector FMA on this CPU (the specification's SIMD requirement)."""

from __future__ import annotations

import re

import numba
import numpy as np
import pytest

from ruvattn import _config, backend_info
from ruvattn.kernels import attention as K

pytestmark = pytest.mark.skipif(_config.JIT_DISABLED, reason="no machine code under NUMBA_DISABLE_JIT=1")

VECTOR_FMA = re.compile(r"vfmadd\d+ps\s+[^\n]*%[yz]mm")


def _has_fma() -> bool:
    return {"avx2", "fma"} <= set(backend_info()["simd"])


def _asm(kernel, *args) -> str:
    """Assembly of a fresh, uncached compile of the kernel (Numba cannot inspect cached code)."""
    fresh = numba.njit(fastmath=_config.FASTMATH, cache=False)(kernel.py_func)
    fresh(*args)
    return fresh.inspect_asm(fresh.signatures[-1])


@pytest.mark.skipif(not _has_fma(), reason="CPU without AVX2+FMA")
def test_hot_kernels_use_vector_fma():
    f = np.float32
    q = np.ones(128, f)
    k = np.ones((40, 128), f)
    ids = np.empty(0, np.int64)
    out = np.zeros(40, f)
    assert VECTOR_FMA.search(_asm(K.rows_dot, q, k, ids, False, 0, 128, out)), "rows_dot is not vectorised"
    acc = np.zeros(128, f)
    assert VECTOR_FMA.search(_asm(K.rows_axpy, out, k, ids, False, 0, 128, acc)), "rows_axpy is not vectorised"
    assert VECTOR_FMA.search(_asm(K.dot, q, q)), "dot is not vectorised"
    x = np.zeros(64, f)
    assert VECTOR_FMA.search(_asm(K.exp_sum, x, f(0))), "float32 exp is not vectorised"


def test_backend_info_reports_numba():
    info = backend_info()
    assert info["backend"] == "numba" and "nnan" not in info["fastmath"] and "ninf" not in info["fastmath"]

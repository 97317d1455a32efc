"""Which backend runs the kernels, and compiling them all once (:func:`warmup`)."""

from __future__ import annotations

import time
from typing import Any

import numba
import numpy as np

from ruvattn import _config
from ruvattn.kernels import attention as K

__all__ = ["backend_info", "warmup"]


def backend_info() -> dict[str, Any]:
    """The kernel backend in use: Numba version, JIT on/off, target CPU and its SIMD features.

    >>> info = backend_info()
    >>> info["backend"] in {"numba", "python (NUMBA_DISABLE_JIT=1)"}
    True
    """
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features() if not _config.JIT_DISABLED else {}
    return {
        "backend": "python (NUMBA_DISABLE_JIT=1)" if _config.JIT_DISABLED else "numba",
        "numba": numba.__version__,
        "llvm_cpu": llvm.get_host_cpu_name(),
        "simd": sorted(f for f in ("sse4.2", "avx", "avx2", "fma", "avx512f") if features.get(f)),
        "fastmath": sorted(_config.FASTMATH),
        "cache": _config.CACHE,
        "threads": numba.get_num_threads(),
        "threading_layer": _threading_layer(),
    }


def _threading_layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return "not started"


def _warm_geometry(q: np.ndarray, k: np.ndarray) -> None:
    """Every hyperbolic / geometry kernel through the public classes (so with their exact argument types)."""
    from ruvattn.geometry import Lorentz, PoincareBall, Sphere
    from ruvattn.mechanisms.hyperbolic import HyperbolicAttention

    hyp = HyperbolicAttention(8, projections=True)
    plain = HyperbolicAttention(8)
    keep = np.array([True, False, True, True, True])
    plain.forward(q[0], k, k)
    plain.forward(q[0], k, k, mask=keep, ids=[0, 1, 2, 3, 4])
    hyp.forward(q[0], k, k)
    plain.attention_weights(q[0], k)
    plain.distances(q[0], k)
    plain.forward_batch(q, k, k, mask=keep)
    plain.attention_weights_batch(q, k)
    plain.forward_neighbours(q, k, k, [[0, 1], [], [4]])
    plain.neighbour_weights(q, k, [[0, 1], [], [4]])
    for m in (PoincareBall(-1.0), Sphere(1.0)):
        m.mobius_add(q, q[::-1])
        m.dist(q, q[::-1])
        m.expmap0(q)
        m.logmap0(q)
        m.expmap(q, q[::-1])
        m.logmap(q, q[::-1])
        m.mobius_matvec(np.eye(8, dtype=q.dtype), q)
        m.conformal_factor(q)
        m.proj(q)
    lor = Lorentz(-1.0)
    x = lor.from_poincare(q)
    lor.to_poincare(x)
    lor.dist(x, x[::-1])
    lor.logmap(x, x[::-1])
    lor.expmap(x, lor.logmap(x, x[::-1]))
    lor.proj(x)


def warmup(verbose: bool = False) -> dict[str, float]:
    """Compile every kernel for float32 and float64 once; returns seconds per dtype.

    With the on-disk cache (``NUMBA_CACHE_DIR``) a second process loads the
    serial kernels instead of compiling them.
    """
    timings: dict[str, float] = {}
    for dt in (np.float32, np.float64):
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        q = rng.standard_normal((3, 8)).astype(dt)
        k = rng.standard_normal((5, 8)).astype(dt)
        w = np.empty((2, 5), dt)
        out = np.empty(8, dt)
        lse = np.empty(2, dt)
        ids = np.array([0, 2, 4], np.int64)
        keep = np.ones(5, np.bool_)
        K.dot(q[0], k[0])
        K.axpy(dt(0.5), q[0], out)
        K.softmax(w[0])
        K.exp_sum(k[:, 0].copy(), dt(0))
        K.max_value(k[:, 0].copy())
        K.online_softmax_update(dt(-np.inf), dt(0), out, k[:, 0].copy(), k, ids, False)
        K.matvec(np.eye(8, dtype=dt), q[0], q[1], out)
        kt = np.ascontiguousarray(k.T)
        for heads in (1, 2):
            K.attend_one(q[0], k, k, heads, dt(0.3), w[:heads], out, lse[:heads])
            eye = np.eye(8, dtype=dt)
            K.multi_head_one(q[0], eye, q[1], kt, kt, eye, q[2], heads, dt(0.3), w[:heads], np.empty(24 + heads, dt))
            K.attend_one_general(q[0], k, k, ids, True, keep[:3], True, q[0, :3], True, heads, dt(0.3),
                                 w[:heads, :3], out, lse[:heads])  # fmt: skip
            K.attend_weights(q[0], k, ids, True, keep[:3], True, q[0, :3], True, heads, dt(0.3), w[:heads, :3],
                             lse[:heads])  # fmt: skip
        K.attend_ids(q[0], k, k, ids, dt(0.3), out)
        st = np.empty(3, np.int8)
        kk = np.ones((1, 5), np.bool_)
        bb = np.zeros((1, 5), dt)
        for heads in (1, 2):
            K.attend_many(q, k, k, kk, 1, bb, 1, heads, dt(0.3), np.empty((3, heads, 5), dt), True,
                          np.empty((3, 8), dt), np.empty((3, heads), dt), st, 2)  # fmt: skip
            K.attend_csr(q, k, k, np.array([0, 1, 3, 3]), ids, heads, dt(0.3), np.empty(heads * 3, dt), True,
                         np.empty((3, 8), dt), np.empty((3, heads), dt), st, 2)  # fmt: skip
        K.flash_many(q, k, k, kk, 1, bb, 1, dt(0.3), 2, np.empty((3, 8), dt), np.empty(3, dt), st, 2)
        from ruvattn.mechanisms.gat import GATConv, GATv2Conv  # the layers pass the graph kernels their exact types

        edges, attrs = np.array([[0, 1, 2, 2], [1, 2, 0, 2]]), k[:4, :2].copy()
        for conv in (GATConv(8, 2, heads=2, edge_dim=2), GATv2Conv(8, 2, heads=2, edge_dim=2)):
            conv(q, edges, attrs)
            conv(q, edges)
            conv.forward_with_edges(q[0], k, k, k[:, :2].copy())
        _warm_geometry(q * dt(0.1), k * dt(0.1))
        from ruvattn.mechanisms.local_global import LocalGlobalAttention
        from ruvattn.routing import Router

        Router(8, 3, top_k=2).choose(q[0])  # the MoE per-query routing kernel
        lg = LocalGlobalAttention(8, local_window=2, global_nodes=1)
        lg.forward(q[0], k, k)
        lg.forward(q[0], k, k)  # the cached fast path
        lg.attention_weights(q[0], k, global_ids=[4])
        lg.forward_neighbours(q, k, k, [[0, 1, 2, 3], [], [4]])
        from ruvattn.mechanisms.linear import LinearAttention  # every linear kernel, with the class's argument types

        for lin in (LinearAttention(8), LinearAttention(8, "favor", num_features=4)):
            summary = lin.summarize(k, k, mask=keep)
            lin.forward(q[0], summary)
            lin.forward_batch(q, summary)
            lin.forward(q[0], k, k)
            lin.attention_weights(q[0], k)
            lin.features(k)
            lin.forward_neighbours(q, k, k, [[0, 1], [], [4]])
        timings[np.dtype(dt).name] = time.perf_counter() - t0
        if verbose:
            print(f"warmup {np.dtype(dt).name}: {timings[np.dtype(dt).name]:.2f} s")
    return timings

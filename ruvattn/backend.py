"""Which backend runs the kernels, and compiling them all once (:func:`warmup`)."""

from __future__ import annotations

import time
from typing import Any

import numba
import numpy as np

from ruvattn import _config
from ruvattn.kernels.tiles import BLOCK_ROWS, MIN_QUERIES
from ruvattn.mechanisms import Attention, Example

__all__ = ["backend_info", "warm_mechanism", "warmup"]


def backend_info() -> dict[str, Any]:
    """The kernel backend in use: Numba version, JIT on/off, target CPU and its SIMD features, and the
    threading layer (whether parallel kernels launched from several Python threads run concurrently).

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
        "parallel_launches": _parallel_launches(),
    }


def _parallel_launches() -> str:
    """How parallel kernels launched from several Python threads run (see :func:`ruvattn._config.parallel_njit`)."""
    if _config.JIT_DISABLED:
        return "python"
    safe = _config.layer_threadsafe()
    return "not started" if safe is None else "concurrent" if safe else "one at a time (the layer is not threadsafe)"


def _threading_layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return "not started"


def _warm_training(dt: type) -> None:
    """The training layers' kernels (:mod:`ruvattn.kernels.training`): GAT and GATv2 forward and backward with
    dropout, ELU, the slot grouping; and hard-negative mining's (:mod:`ruvattn.kernels.mining`)."""
    from ruvattn import nn

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3)).astype(dt)
    graph = nn.Graph.from_edges([0, 1, 2], [1, 2, 3], 4)
    for cls in (nn.GATLayer, nn.GATv2Layer):
        model = nn.Sequential(cls(3, 2, heads=2, dropout=0.5, seed=0, dtype=dt), nn.ELU())
        y = model(x, graph)
        model.backward(np.ones_like(y), True)
    from ruvattn.graph import NeighbourList
    from ruvattn.mining import mine_hard_negatives

    path = NeighbourList(np.array([0, 1, 3, 5, 6]), np.array([1, 0, 2, 1, 3, 2]), 4)
    mine_hard_negatives(x, path, 1)


def _warm_graph() -> None:
    """The HNSW navigator's kernels (:mod:`ruvattn.kernels.navigator`: edge tables, the navigated search), when
    faiss is installed (the navigator needs an :class:`~ruvattn.graph.hnsw.HNSWIndex`); one dtype: faiss
    stores float32 vectors and the queries run in float64."""
    from ruvattn.graph.hnsw import HNSWIndex, faiss_available

    if not faiss_available():
        return
    from ruvattn.graph.navigator import Navigator

    x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    nav = Navigator(HNSWIndex.build(x, M=4, ef_construction=16)).fit(x[:60] + 0.01, efs=(8,))
    nav.search(x[:2], 3, ef=8)


def _warm_quantized() -> None:
    """The quantised-table kernels (:mod:`ruvattn.kernels.quant`) through every form: int8 and uint8 codes with
    float32 or float16 scales, and keys and values of the two code types mixed (float32 only; each pair of
    table layouts is its own compiled specialisation, ~13 s)."""
    from ruvattn.compression import quantize
    from ruvattn.mechanisms import mechanism_class

    x = np.random.default_rng(0).standard_normal((12, 8)).astype(np.float32)
    attn = mechanism_class("scaled_dot_product")(8)
    int8, int4 = quantize(x, "int8"), quantize(x, "int4", symmetric=False)
    pairs = [(int8, int8), (int4, int4), (int8, int4), (int4, int8)]
    pairs += [(t, t) for t in (quantize(x, "int8", scale_dtype="float16"), quantize(x, "int4", scale_dtype="float16"))]
    for k, v in pairs:
        attn.forward(x[0], k, v)
        attn.forward_batch(x[:3], k, v)
        attn.forward_neighbours(x[:3], k, v, [[0, 1], [2], []])
        if v is k:
            attn.weights(x[0], k)  # weights only: the key table stands in for the values


def _warm_geometry(dt: type) -> None:
    """The geometry module's own kernels (every manifold operation), outside any mechanism."""
    from ruvattn.geometry import Lorentz, PoincareBall, Sphere

    rng = np.random.default_rng(0)
    q = (0.1 * rng.standard_normal((3, 8))).astype(dt)
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


def warm_mechanism(mech: Attention, ex: Example) -> None:
    """Run every form of the contract on ``mech`` with the example's data: forward (raw, prepared, with each
    generic option it takes), forward_batch, forward_neighbours and the three weights forms, then the
    mechanism's own extra entry points (:meth:`~ruvattn.mechanisms.Attention._warmup`)."""
    q, qs, k, v, nl = ex.query, ex.queries, ex.keys, ex.values, ex.neighbours
    n = k.shape[0]
    options: dict[str, Any] = {}
    if "mask" in mech.forward_options:
        options["mask"] = np.arange(n) % 3 != 1
    if "bias" in mech.forward_options:
        options["bias"] = np.zeros(n, k.dtype)
    mech.forward(q, k, v)
    mech.forward(q, k, v)  # a mechanism may cache per key-set size on the first call and take a fast path after
    for name, value in options.items():
        mech.forward(q, k, v, **{name: value})
    if options:
        mech.forward(q, k, v, **options)
        mech.forward_batch(qs, k, v, **options)
    if "ids" in mech.forward_options:
        mech.forward(q, k, v, ids=np.arange(0, n, 2))
    prepared = mech.prepare(k, v)
    mech.forward(q, prepared)
    mech.forward_batch(qs, prepared)
    mech.forward_batch(qs, k, v)
    for m in (MIN_QUERIES, BLOCK_ROWS + 1):  # the tiled kernels: one block (serial), several (parallel)
        mech.forward_batch(np.resize(qs, (max(m, qs.shape[0]), qs.shape[1])), k, v, **options)
    mech.forward_neighbours(qs, k, v, nl)
    mech.weights(q, k)
    mech.weights(qs, k)
    mech.weights(qs, k, neighbours=nl)
    mech._warmup(ex)


def warmup(verbose: bool = False) -> dict[str, float]:
    """Compile every kernel for float32 and float64 once; returns seconds per dtype.

    It iterates over the registry: every kind's :meth:`~ruvattn.mechanisms.Attention.example` in each dtype
    through every form of the contract (:func:`warm_mechanism`), plus the geometry module's, the training
    layers' and (with faiss) the HNSW navigator's kernels.  A mechanism registered tomorrow is warmed without
    an edit here.  With the on-disk cache (``NUMBA_CACHE_DIR``) a second process loads the kernels instead of
    compiling them.
    """
    from ruvattn.mechanisms import available, mechanism_class

    timings: dict[str, float] = {}
    for dt in (np.float32, np.float64):
        t0 = time.perf_counter()
        for kind in available():
            ex = mechanism_class(kind).example(dt)
            warm_mechanism(ex.mechanism, ex)
        _warm_geometry(dt)
        _warm_training(dt)
        if dt is np.float32:
            _warm_graph()
            _warm_quantized()
        timings[np.dtype(dt).name] = time.perf_counter() - t0
        if verbose:
            print(f"warmup {np.dtype(dt).name}: {timings[np.dtype(dt).name]:.2f} s")
    return timings

"""Which backend runs the kernels, and compiling them all once (:func:`warmup`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
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


#: the key / value table layouts :func:`_warm_quantized` compiles for, one warm-up unit each: each pair of code
#: and scale types is its own compiled specialisation of every quantised kernel (~25 s for the forms together);
#: ``"paired"``: :func:`~ruvattn.compression.quantize_pair`'s tables (scales as strided views of one array)
QUANTIZED_PAIRS = ("int8/int8", "int4/int4", "int8/int4", "int4/int8", "int8_f16/int8_f16", "int4_f16/int4_f16",
                   "int8 paired", "int4 paired")  # fmt: skip


def _warm_quantized(pair: str) -> None:
    """The quantised-table kernels (:mod:`ruvattn.kernels.quant`) through every form for one pair of
    :data:`QUANTIZED_PAIRS`: int8 codes (INT8 symmetric) or uint8 codes (INT4; INT8 asymmetric is the same
    types), float32 or float16 scales, contiguous or shared by the two tables (float32 only)."""
    from ruvattn.compression import quantize, quantize_pair
    from ruvattn.mechanisms import mechanism_class

    x = np.random.default_rng(0).standard_normal((12, 8)).astype(np.float32)
    attn = mechanism_class("scaled_dot_product")(8)
    layouts = {
        "int8": lambda: quantize(x, "int8"),
        "int4": lambda: quantize(x, "int4", symmetric=False),
        "int8_f16": lambda: quantize(x, "int8", scale_dtype="float16"),
        "int4_f16": lambda: quantize(x, "int4", scale_dtype="float16"),
    }
    if pair.endswith(" paired"):  # asymmetric INT4: offsets shared too (the same array types as symmetric)
        k, v = quantize_pair(x, x, pair.split()[0], symmetric=pair.startswith("int8"))
    else:
        key_layout, value_layout = pair.split("/")
        k = layouts[key_layout]()
        v = k if value_layout == key_layout else layouts[value_layout]()
    attn.forward(x[0], k, v)
    attn.forward_batch(x[:3], k, v)
    attn.forward_neighbours(x[:3], k, v, [[0, 1], [2], []])
    if v is k or pair.endswith(" paired"):
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


def _warm_tasks(kinds: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """The warm-up's units of work, ``(dtype name, what)``: ``what`` is a registered kind (its example through
    every form of the contract) or one of ``"geometry"``, ``"training"``, ``"graph"`` and ``"quantized"`` (the
    kernels outside the mechanisms; the last two in float32 only, ``"quantized"`` one unit per pair of
    :data:`QUANTIZED_PAIRS`: ``"quantized int8/int4"``).  ``kinds`` keeps those kinds and nothing
    else."""
    from ruvattn.mechanisms import available

    if kinds is not None:
        return [(dt, kind) for dt in ("float32", "float64") for kind in kinds]
    # the longest units first, so that with several processes none is left running alone at the end
    tasks = [("float32", f"quantized {pair}") for pair in QUANTIZED_PAIRS]
    tasks += [(dt, kind) for dt in ("float32", "float64") for kind in available()]
    tasks += [(dt, what) for dt in ("float32", "float64") for what in ("geometry", "training")]
    return [*tasks, ("float32", "graph")]


def _run_task(task: tuple[str, str]) -> float:
    """Run one unit of :func:`_warm_tasks`; returns its seconds."""
    from ruvattn.mechanisms import mechanism_class

    dt, what = task
    dtype = np.dtype(dt).type
    t0 = time.perf_counter()
    if what == "geometry":
        _warm_geometry(dtype)
    elif what == "training":
        _warm_training(dtype)
    elif what == "graph":
        _warm_graph()
    elif what.startswith("quantized "):
        _warm_quantized(what.split(" ", 1)[1])
    else:
        ex = mechanism_class(what).example(dtype)
        warm_mechanism(ex.mechanism, ex)
    return time.perf_counter() - t0


def warmup(verbose: bool = False, jobs: int = 1, kinds: Sequence[str] | None = None) -> dict[str, float]:
    """Compile every kernel for float32 and float64 once; returns seconds per dtype (summed over the units).

    It iterates over the registry: every kind's :meth:`~ruvattn.mechanisms.Attention.example` in each dtype
    through every form of the contract (:func:`warm_mechanism`), plus the geometry module's, the training
    layers' and (with faiss) the HNSW navigator's kernels, and the quantised-table kernels.  A mechanism
    registered tomorrow is warmed without an edit here.  With the on-disk cache (``NUMBA_CACHE_DIR``) a second
    process loads the kernels instead of compiling them.

    ``jobs=1`` compiles in this process (its kernels are then ready here too).  ``jobs > 1`` compiles in that
    many worker processes, each taking the next unit when free, into the on-disk cache only (this process then
    loads each kernel at its first call); it needs the cache on.  Concurrent saves are safe: every kernel's
    cache is a :class:`~ruvattn._config.LockedFunctionCache`.  ``kinds``: warm only these registered kinds
    (both dtypes, every form), not the kernels outside the mechanisms.  ``verbose`` prints each unit's
    seconds and each dtype's total.
    """
    from ruvattn.errors import InvalidConfig
    from ruvattn.mechanisms import available

    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise InvalidConfig(f"warmup: 'jobs' must be a positive int; got {jobs!r}.")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        unknown = [k for k in kinds if k not in available()]
        if unknown or not kinds:
            raise InvalidConfig(f"warmup: 'kinds' must name registered kinds ({', '.join(available())}); "
                                f"got {kinds!r}.")  # fmt: skip
    if jobs > 1 and (_config.JIT_DISABLED or not _config.CACHE):
        why = "NUMBA_DISABLE_JIT=1" if _config.JIT_DISABLED else "the kernel cache is off (RUVATTN_NUMBA_CACHE=0)"
        raise InvalidConfig(f"warmup: jobs={jobs} compiles in other processes for the on-disk cache, but {why}; "
                            "use jobs=1.")  # fmt: skip
    tasks = _warm_tasks(kinds)
    if jobs == 1:
        seconds = [_run_task(t) for t in tasks]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: a worker starts clean (no inherited Numba threads or half-held locks); each takes the next unit
        with ProcessPoolExecutor(min(jobs, len(tasks)), mp_context=multiprocessing.get_context("spawn")) as pool:
            seconds = list(pool.map(_run_task, tasks))
    timings: dict[str, float] = {"float32": 0.0, "float64": 0.0}
    for (dt, what), sec in zip(tasks, seconds, strict=True):
        timings[dt] += sec
        if verbose:
            print(f"warmup {dt} {what}: {sec:.2f} s")
    if verbose:
        for dt, sec in timings.items():
            print(f"warmup {dt}: {sec:.2f} s")
    return timings

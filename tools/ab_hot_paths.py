"""Interleaved A/B timing of the hot paths of two checkouts of ruvattn, in the same minutes.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python tools/ab_hot_paths.py A_DIR B_DIR [--rounds 5]

Each round runs one subprocess per checkout (A then B, then B then A, alternating), each importing
ruvattn from its own directory (``PYTHONPATH``) with its own Numba cache, warming up, then timing every
hot path with :func:`timeit` below (median of many single calls, one thread, GC off).  The table gives
each side's median over rounds and B/A.  ``--child`` is the subprocess side.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _timeit(fn: Any, seconds: float = 1.0) -> float:
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    n = int(min(20000, max(5, seconds / one)))
    times = np.empty(n)
    gc.disable()
    try:
        for i in range(n):
            t0 = time.perf_counter()
            fn()
            times[i] = time.perf_counter() - t0
    finally:
        gc.enable()
    return float(np.median(times) * 1e6)


def child() -> dict[str, float]:
    import numba

    numba.set_num_threads(1)
    from ruvattn import (
        GATConv,
        HyperbolicAttention,
        LocalGlobalAttention,
        MultiHeadAttention,
        ScaledDotProductAttention,
    )
    from ruvattn.geometry import PoincareBall

    rng = np.random.default_rng(0)
    d = 128
    keys = rng.standard_normal((1000, d)).astype(np.float32)
    q = rng.standard_normal(d).astype(np.float32)
    sdpa = ScaledDotProductAttention(d)
    mha = MultiHeadAttention(d, 4)
    kv = mha.project(keys, keys)
    lg = LocalGlobalAttention(d, local_window=32, global_nodes=8)
    ball = PoincareBall(-1.0)
    kb = ball.expmap0(0.05 * keys[:100]).astype(np.float32)
    qb = kb[0].copy()
    hyp = HyperbolicAttention(d)
    x = rng.standard_normal((10000, d)).astype(np.float32)
    nb = rng.integers(0, 10000, (10000, 32))
    n, e_per = 10000, 32
    xg = rng.standard_normal((n, 64)).astype(np.float32)
    src = rng.integers(0, n, n * e_per)
    dst = np.repeat(np.arange(n), e_per)
    edge_index = np.stack([src, dst]).astype(np.int64)
    edge_attr = rng.standard_normal((n * e_per, 16)).astype(np.float32)
    gat = GATConv(64, 16, heads=4, edge_dim=16)
    paths = {
        "sdpa 1x1000": lambda: sdpa.forward(q, keys, keys),
        "multi-head 4h 1x1000 projected": lambda: mha.forward(q, kv),
        "neighbours 10k x 32": lambda: sdpa.forward_neighbours(x, x, x, nb),
        "GAT 10k nodes / 320k edges": lambda: gat(xg, edge_index, edge_attr),
        "local+global 1x1000": lambda: lg.forward(q, keys, keys),
        "hyperbolic 1x100": lambda: hyp.forward(qb, kb, kb),
    }
    return {name: _timeit(fn, 2.0 if "GAT" in name or "10k" in name else 1.0) for name, fn in paths.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("a", nargs="?")
    ap.add_argument("b", nargs="?")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child()))
        return
    runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    for r in range(args.rounds):
        order = [("A", args.a), ("B", args.b)] if r % 2 == 0 else [("B", args.b), ("A", args.a)]
        for side, path in order:
            env = dict(os.environ, PYTHONPATH=str(Path(path).resolve()),
                       NUMBA_CACHE_DIR=str(Path(path).resolve() / ".numba_cache"), NUMBA_NUM_THREADS="1")  # fmt: skip
            out = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True,
                                 check=True, timeout=3600)  # fmt: skip
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {side}: done", file=sys.stderr)
    names = list(runs["A"][0])
    print(f"{'hot path':<32} {'A µs':>10} {'B µs':>10} {'B/A':>7}")
    for name in names:
        a = float(np.median([x[name] for x in runs["A"]]))
        b = float(np.median([x[name] for x in runs["B"]]))
        print(f"{name:<32} {a:>10.1f} {b:>10.1f} {b / a:>7.3f}")
    print(json.dumps(runs))


if __name__ == "__main__":
    main()

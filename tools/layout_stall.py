"""First-call and steady-state time of each entry point per memory layout, each in a fresh process.

A strided, Fortran-ordered or read-only array reaching a Numba kernel for the first time can cost a new
specialisation (seconds of compiling when the on-disk cache does not have it).  This script measures it:
for every mechanism and layout it starts a fresh interpreter (the on-disk cache as ``NUMBA_CACHE_DIR`` left
it: run ``ruvattn warmup`` first to measure a warmed cache), calls each entry point once with arrays of that
layout (the first call: cache loads and any compile included), then ``--repeat`` more times (steady state,
median), and prints a table in milliseconds.  Before the first entry point, one small kernel of another module
(``kernels.attention.matvec``) is called to pay Numba's one-time start-up in the process (~0.3 s here, the same
for every layout, paid by whichever kernel runs first; printed separately, ``--no-prime`` leaves it in the
first entry point's time).

    NUMBA_CACHE_DIR=.numba_cache python tools/layout_stall.py
    NUMBA_CACHE_DIR=.numba_cache python tools/layout_stall.py --mechanisms all --dtype float32 --n 1000

Layouts (applied to query, queries, keys, values and the neighbour arrays ``(indptr, indices)``):
``C`` C-contiguous and writeable (the baseline), ``slice`` a column slice of a wider array (``X[:, :d]``,
1-D: every other element), ``F`` Fortran order, ``ro`` read-only C-contiguous (a read-only memmap or
``np.frombuffer``), ``ro_slice`` a read-only slice.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

LAYOUTS = ("C", "slice", "F", "ro", "ro_slice")
ENTRIES = ("forward", "forward_batch", "forward_neighbours", "weights", "weights_batch", "prepare", "forward_prepared")
DEFAULT_MECHANISMS = ("scaled_dot_product", "hyperbolic", "linear", "gat", "local_global", "flash")


def relayout(a: np.ndarray, layout: str) -> np.ndarray:
    """``a``'s values in ``layout`` (a fresh array or view; ``a`` itself is untouched)."""
    if layout == "C":
        return np.array(a, order="C")
    if layout == "F":
        return np.array(a, order="F")
    if layout in ("slice", "ro_slice"):
        if a.ndim == 1:
            wide = np.zeros(2 * a.shape[0] + 1, a.dtype)
            wide[1::2] = a
            out = wide[1::2]
        else:
            wide = np.zeros((a.shape[0], a.shape[1] + 3), a.dtype)
            wide[:, : a.shape[1]] = a
            out = wide[:, : a.shape[1]]
    else:
        out = np.array(a, order="C")
    if layout.startswith("ro"):
        out.flags.writeable = False
    return out


def problem(kind: str, dtype: str, n: int, m: int, degree: int, seed: int = 0) -> dict[str, Any]:
    """A valid problem for ``kind`` of ``n`` keys and ``m`` queries (rows mapped into its input space)."""
    from ruvattn.graph import NeighbourList
    from ruvattn.mechanisms.base import mechanism_class

    ex = mechanism_class(kind).example(dtype=dtype, seed=seed, dim=8)
    mech, rng = ex.mechanism, np.random.default_rng(seed)
    d, dv = ex.keys.shape[1], ex.values.shape[1]
    keys = mech.embed(rng.standard_normal((n, d))).astype(dtype)
    queries = mech.embed(rng.standard_normal((m, d))).astype(dtype)
    values = mech.embed(rng.standard_normal((n, dv)))  # as Attention.example makes them
    nl = NeighbourList.from_padded(rng.integers(0, n, (m, degree)), n)
    return {
        "mechanism": mech,
        "query": queries[0].copy(),
        "queries": queries,
        "keys": keys,
        "values": values.astype(dtype),
        "neighbours": (nl.indptr, nl.indices),
    }


def calls(p: dict[str, Any], layout: str) -> dict[str, Any]:
    """The entry points as closures over arrays in ``layout``."""
    mech = p["mechanism"]
    q, qs, k, v = (relayout(p[name], layout) for name in ("query", "queries", "keys", "values"))
    nb = tuple(relayout(a, layout) for a in p["neighbours"])
    prepared: dict[str, Any] = {}
    return {
        "forward": lambda: mech.forward(q, k, v),
        "forward_batch": lambda: mech.forward_batch(qs, k, v),
        "forward_neighbours": lambda: mech.forward_neighbours(qs, k, v, nb),
        "weights": lambda: mech.weights(q, k),
        "weights_batch": lambda: mech.weights(qs, k),
        "prepare": lambda: prepared.update(kv=mech.prepare(k, v)),
        "forward_prepared": lambda: mech.forward(q, prepared["kv"]),  # the query in the layout
    }


def child(kind: str, layout: str, dtype: str, n: int, m: int, degree: int, repeat: int, prime: bool) -> None:
    p = problem(kind, dtype, n, m, degree)
    rows: dict[str, Any] = {}
    if prime:
        from ruvattn.kernels.attention import matvec

        t0 = time.perf_counter()
        matvec(np.eye(2), np.zeros(2), np.zeros(2), np.empty(2))
        rows["numba start-up"] = time.perf_counter() - t0
    for entry, call in calls(p, layout).items():
        t0 = time.perf_counter()
        try:
            call()
        except Exception as exc:  # a mechanism without this entry point (reported, not timed)
            rows[entry] = {"error": f"{type(exc).__name__}: {exc}"[:120]}
            continue
        first = time.perf_counter() - t0
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        rows[entry] = {"first": first, "steady": statistics.median(times)}
    print(json.dumps(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mechanisms", nargs="+", default=list(DEFAULT_MECHANISMS), help="names, or 'all'")
    ap.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--n", type=int, default=1000, help="keys")
    ap.add_argument("--m", type=int, default=64, help="queries (and nodes)")
    ap.add_argument("--degree", type=int, default=16, help="neighbours per node")
    ap.add_argument("--repeat", type=int, default=20, help="calls after the first (median reported)")
    ap.add_argument("--no-prime", action="store_true", help="no kernel call before the first entry point")
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "LAYOUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, args.dtype, args.n, args.m, args.degree, args.repeat, not args.no_prime)
        return
    kinds = args.mechanisms
    if kinds == ["all"]:
        import ruvattn

        kinds = ruvattn.available()
    env = dict(os.environ)
    results: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        for layout in args.layouts:
            cmd = [sys.executable, __file__, "--child", kind, layout, "--dtype", args.dtype, "--n", str(args.n)]
            cmd += ["--m", str(args.m), "--degree", str(args.degree), "--repeat", str(args.repeat)]
            cmd += ["--no-prime"] if args.no_prime else []
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                results[f"{kind}/{layout}"] = {"crash": done.stderr.strip().splitlines()[-1:]}
                print(f"{kind} {layout}: exit {done.returncode} {done.stderr.strip()[-300:]}", file=sys.stderr)
                continue
            results[f"{kind}/{layout}"] = json.loads(done.stdout.strip().splitlines()[-1])
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    print(f"first call / steady-state median, ms ({args.dtype}, n={args.n}, m={args.m}, degree={args.degree}; "
          "fresh process per mechanism and layout)")  # fmt: skip
    print("| mechanism | entry point | " + " | ".join(args.layouts) + " |")
    print("|---|---|" + "---|" * len(args.layouts))
    worst = 0.0
    for kind in kinds:
        for entry in ENTRIES:
            cells = []
            for layout in args.layouts:
                r = results.get(f"{kind}/{layout}", {})
                if "crash" in r:
                    cells.append("crash")
                    continue
                e = r.get(entry, {})
                if "first" in e:
                    worst = max(worst, e["first"])
                    cells.append(f"{1e3 * e['first']:.1f} / {1e3 * e['steady']:.3f}")
                else:
                    cells.append("n/a")
            if any(c != "n/a" for c in cells):
                print(f"| {kind} | {entry} | " + " | ".join(cells) + " |")
    startup = [r["numba start-up"] for r in results.values() if "numba start-up" in r]
    if startup:
        print(f"\nNumba start-up (first kernel of a process, before the entry points): "
              f"{1e3 * min(startup):.0f}-{1e3 * max(startup):.0f} ms")  # fmt: skip
    print(f"slowest first call of an entry point: {1e3 * worst:.1f} ms")


if __name__ == "__main__":
    main()

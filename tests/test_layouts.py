"""Every memory layout gives the C-contiguous answer bit for bit, leaves the inputs alone, and compiles nothing new.

A strided slice (``X[:, :64]``), Fortran order, a read-only buffer (``np.frombuffer``, a read-only memmap)
or an unaligned one used to reach the Numba kernels as they were, and each new layout compiled a new
specialisation on its first call (2-17 s, measured by ``tools/layout_stall.py``).  The validation copies
any such array once (``flags.carray``: C-contiguous, aligned, writeable), so the kernels see one layout.

Every registered mechanism (its :meth:`~ruvattn.mechanisms.Attention.example`), every entry point
(forward, forward_batch, forward_neighbours, weights in its three forms, prepare + forward, and the
``mask``/``bias``/``ids`` options a mechanism takes) and both dtypes; the layout is applied to every array
argument of the call at once, the neighbour lists included (CSR arrays and padded ids).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ruvattn
from ruvattn import _config
from ruvattn.mechanisms.base import mechanism_class

KINDS = ruvattn.available()
LAYOUTS = ("slice", "F", "ro", "ro_slice", "unaligned")


def relayout(a: np.ndarray, layout: str) -> Any:
    """``a``'s values in ``layout``: a new array or view (``a`` itself is untouched)."""
    if layout == "C":
        return np.array(a, order="C")
    if layout == "F":
        return np.array(a, order="F")
    if layout == "unaligned":  # a writeable array one byte off its dtype's alignment
        raw = np.zeros(a.nbytes + a.itemsize + 1, np.uint8)
        out = raw[1 : 1 + a.nbytes].view(a.dtype).reshape(a.shape)
        out[...] = a
        assert a.itemsize == 1 or not out.flags.aligned
        return out
    if layout in ("slice", "ro_slice"):  # every other element of a wider array (1-D) or X[:, :d] (2-D)
        if a.ndim == 1:
            wide = np.zeros(2 * a.shape[0] + 1, a.dtype)
            wide[1::2] = a
            out = wide[1::2]
        else:
            wide = np.zeros((a.shape[0], a.shape[1] + 3), a.dtype)
            wide[:, : a.shape[1]] = a
            out = wide[:, : a.shape[1]]
        if a.size > 1:
            assert not out.flags.c_contiguous
    else:
        out = np.array(a, order="C")
    if layout.startswith("ro"):
        out.flags.writeable = False
    return out


def _csr(ex: Any) -> tuple[np.ndarray, np.ndarray]:
    return ex.neighbours.indptr, ex.neighbours.indices


def entry_points(ex: Any) -> dict[str, Callable[[Callable[[np.ndarray], Any]], Any]]:
    """Each entry point as ``call(L)``: ``L`` maps every array argument to the layout under test."""
    mech, n, m = ex.mechanism, ex.keys.shape[0], ex.queries.shape[0]
    q, qs, k, v = ex.query, ex.queries, ex.keys, ex.values
    calls: dict[str, Callable[[Callable[[np.ndarray], Any]], Any]] = {
        "forward": lambda L: mech.forward(L(q), L(k), L(v)),
        "forward_batch": lambda L: mech.forward_batch(L(qs), L(k), L(v)),
        "forward_neighbours csr": lambda L: mech.forward_neighbours(L(qs), L(k), L(v), tuple(map(L, _csr(ex)))),
        "forward_neighbours padded": lambda L: mech.forward_neighbours(L(qs), L(k), L(v), L(ex.neighbours.to_padded())),
        "weights": lambda L: mech.weights(L(q), L(k)),
        "weights batch": lambda L: mech.weights(L(qs), L(k)),
        "weights neighbours": lambda L: mech.weights(L(qs), L(k), neighbours=tuple(map(L, _csr(ex)))),
        "prepare + forward": lambda L: mech.forward(L(q), mech.prepare(L(k), L(v))),
        "prepare + forward_batch": lambda L: mech.forward_batch(L(qs), mech.prepare(L(k), L(v))),
    }
    keep = np.arange(n) % 3 != 1
    keep_rows = np.arange(m * n).reshape(m, n) % 4 != 2
    bias = np.linspace(-1.0, 1.0, n).astype(k.dtype)
    bias_rows = np.linspace(-1.0, 1.0, m * n).reshape(m, n).astype(k.dtype)
    ids = np.array([n - 1, 0, 3, 3, 5], np.int64)
    if "mask" in mech.forward_options:
        calls["forward mask"] = lambda L: mech.forward(L(q), L(k), L(v), mask=L(keep))
        calls["forward_batch mask"] = lambda L: mech.forward_batch(L(qs), L(k), L(v), mask=L(keep_rows))
    if "bias" in mech.forward_options:
        calls["forward bias"] = lambda L: mech.forward(L(q), L(k), L(v), bias=L(bias))
        calls["forward_batch bias"] = lambda L: mech.forward_batch(L(qs), L(k), L(v), bias=L(bias_rows))
    if "ids" in mech.forward_options:
        calls["forward ids"] = lambda L: mech.forward(L(q), L(k), L(v), ids=L(ids))
    if hasattr(mech, "forward_graph"):
        edges = np.stack([ex.neighbours.indices, np.repeat(np.arange(m), ex.neighbours.degrees())])
        calls["forward_graph"] = lambda L: mech.forward_graph(L(k), L(edges))
    return calls


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", call()
    except ruvattn.AttentionError as exc:  # e.g. an entry point a mechanism does not offer
        return "error", type(exc).__name__


def _flat(result: Any) -> list[np.ndarray]:
    if isinstance(result, tuple):
        return [a for r in result for a in _flat(r)]
    return [np.asarray(result)]


def _call(kind: str, dtype: Any, name: str, layout: str) -> tuple[str, Any, list[tuple[Any, np.ndarray]]]:
    """``(outcome, result, [(array given, its values before)])`` of entry point ``name`` on a fresh example
    (state a call may advance, such as a redraw counter, starts equal) with every array in ``layout``."""
    given: list[tuple[Any, np.ndarray]] = []

    def tracked(a: np.ndarray) -> Any:
        arr = relayout(a, layout)
        given.append((arr, np.array(a, copy=True)))
        return arr

    call = entry_points(mechanism_class(kind).example(dtype, seed=0, dim=8))[name]
    status, result = _outcome(lambda: call(tracked))
    return status, result, given


def run_layout(kind: str, dtype: Any, layout: str) -> list[str]:
    """The problems found for ``layout``: outputs that differ from C order's, inputs that changed."""
    problems = []
    for name in entry_points(mechanism_class(kind).example(dtype, seed=0, dim=8)):
        status, want, _ = _call(kind, dtype, name, "C")
        got_status, got, given = _call(kind, dtype, name, layout)
        if got_status != status:
            problems.append(f"{name}: {layout} gives {got_status} {got if got_status == 'error' else ''}, C {status}")
        elif status == "error":
            if got != want:
                problems.append(f"{name}: {layout} raises {got}, C order {want}")
        else:
            for a, b in zip(_flat(got), _flat(want), strict=True):
                if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                    problems.append(f"{name}: {layout} output differs from C order's")
                    break
        for arr, before in given:
            now = np.asarray(arr)
            if now.shape != before.shape or now.tobytes() != before.tobytes():
                problems.append(f"{name}: {layout} input was modified")
    return problems


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_every_layout_gives_the_c_order_answer_and_leaves_inputs_alone(kind, dtype):
    problems = [p for layout in LAYOUTS for p in run_layout(kind, dtype, layout)]
    assert not problems, "\n".join(problems)


def _signatures() -> dict[str, int]:
    """Compiled signatures of every dispatcher in ruvattn.kernels."""
    import importlib
    import pkgutil

    from numba.extending import is_jitted

    import ruvattn.kernels

    found = {}
    for info in pkgutil.iter_modules(ruvattn.kernels.__path__):
        module = importlib.import_module(f"ruvattn.kernels.{info.name}")
        for name, obj in vars(module).items():
            if is_jitted(obj) and obj.py_func.__module__ == module.__name__:
                found[f"{info.name}.{name}"] = len(obj.signatures)
    return found


def new_specialisations() -> dict[str, Any]:
    """:func:`ruvattn.warmup`, then every kind and entry point in every layout (C order included): the
    kernels that gained a compiled signature after the warmup (run in a fresh process by the test below)."""
    ruvattn.warmup()
    before = _signatures()
    for kind in KINDS:
        for dtype in (np.float32, np.float64):
            for layout in ("C", *LAYOUTS):
                run_layout(kind, dtype, layout)
    after = _signatures()
    return {"kernels": len(after), "new": {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k)}}


@pytest.mark.skipif(_config.JIT_DISABLED, reason="nothing is compiled with NUMBA_DISABLE_JIT=1")
def test_warmup_covers_every_layout():
    """In a fresh process (no specialisation compiled by other tests): after :func:`ruvattn.warmup`, no entry
    point in any layout adds a signature to any kernel, so a warmed cache has no first-call stall."""
    root = Path(__file__).resolve().parent.parent
    code = "import json; from tests.test_layouts import new_specialisations; print(json.dumps(new_specialisations()))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=1800, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["kernels"] > 20
    assert result["new"] == {}, f"layouts compiled new specialisations: {result['new']}"

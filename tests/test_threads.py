"""Parallel kernels launched from several Python threads at once, under every Numba threading layer here.

The kernels are ``nogil``: four Python threads can launch parallel kernels concurrently.  Numba's
``workqueue`` layer (a machine without OpenMP or TBB) is not threadsafe and aborted the whole process
(SIGABRT) when that happened; :class:`ruvattn._config.ParallelDispatcher` serialises the launches there.
Each test runs a fresh interpreter with ``NUMBA_THREADING_LAYER`` set (the layer is chosen once per
process), four threads calling the batched and neighbour forms of several mechanisms in different orders,
and compares every output bit for bit with a single-threaded run in the same process.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import pkgutil
import subprocess
import sys

import numba
import numpy as np
import pytest
from numba.extending import is_jitted

import ruvattn
import ruvattn.kernels
from ruvattn import _config
from ruvattn.mechanisms.base import mechanism_class

needs_jit = pytest.mark.skipif(_config.JIT_DISABLED, reason="no threading layer: NUMBA_DISABLE_JIT runs Python")
LAYERS = ("workqueue", "omp", "tbb")

_PROBE = """
import numba, numpy as np
@numba.njit(parallel=True)
def f(x):
    s = 0.0
    for i in numba.prange(x.shape[0]):
        s += x[i]
    return s
f(np.ones(64))
print(numba.threading_layer())
"""

_WORKER = r"""
import json, sys, threading
import numpy as np
import numba
from ruvattn.graph import NeighbourList
from ruvattn.mechanisms.base import mechanism_class

kinds, rounds = sys.argv[1].split(","), int(sys.argv[2])
rng = np.random.default_rng(0)
m, n, degree = 192, 160, 12   # several chunks of rows per kernel launch (chunk_size)
calls = []
for kind in kinds:
    ex = mechanism_class(kind).example(seed=0, dim=16)
    mech = ex.mechanism
    keys = mech.embed(rng.standard_normal((n, ex.keys.shape[1])))
    queries = mech.embed(rng.standard_normal((m, ex.queries.shape[1])))
    values = mech.embed(rng.standard_normal((n, ex.values.shape[1])))
    keys, queries, values = (a.astype(ex.keys.dtype) for a in (keys, queries, values))
    nl = NeighbourList.from_padded(rng.integers(0, n, (m, degree)), n)
    calls += [
        (kind + ".forward_batch", lambda mech=mech, q=queries, k=keys, v=values: mech.forward_batch(q, k, v)),
        (kind + ".forward_neighbours",
         lambda mech=mech, q=queries, k=keys, v=values, nl=nl: mech.forward_neighbours(q, k, v, nl)),
        (kind + ".weights_batch", lambda mech=mech, q=queries, k=keys: mech.weights(q, k)),
        (kind + ".weights_neighbours", lambda mech=mech, q=queries, k=keys, nl=nl: mech.weights(q, k, neighbours=nl)),
    ]
reference = {name: call() for name, call in calls}   # single-threaded, in this process
layer = numba.threading_layer()
mismatches, errors = [], []

def run(seed):
    order = np.random.default_rng(seed).permutation(len(calls))
    try:
        for _ in range(rounds):
            for i in order:
                name, call = calls[i]
                out = call()
                ref = reference[name]
                if out.dtype != ref.dtype or out.shape != ref.shape or out.tobytes() != ref.tobytes():
                    mismatches.append(name)
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")

threads = [threading.Thread(target=run, args=(seed,)) for seed in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
from ruvattn.backend import backend_info
launches = backend_info()["parallel_launches"]
print(json.dumps({"layer": layer, "launches": launches, "calls": len(calls), "mismatches": sorted(set(mismatches)),
                  "errors": errors}))
"""


def _env(layer: str) -> dict[str, str]:
    env = dict(os.environ, NUMBA_THREADING_LAYER=layer)
    env.pop("NUMBA_NUM_THREADS", None)  # the machine's cores: real parallel launches
    return env


@functools.cache
def _probe(layer: str) -> str:
    """'' when Numba can run ``layer`` here, else why not (its error's last line)."""
    done = subprocess.run([sys.executable, "-c", _PROBE], env=_env(layer), capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    if done.returncode == 0 and done.stdout.strip().splitlines()[-1:] == [layer]:
        return ""
    lines = (done.stderr or done.stdout).strip().splitlines()
    start = max((i for i, line in enumerate(lines) if line.startswith(("ValueError", "Error"))), default=len(lines) - 1)
    return " ".join(line.strip() for line in lines[start:]) or f"exit code {done.returncode}"


# the mechanisms whose batched/neighbour forms run parallel kernels (dot-product, flash, local+global,
# hyperbolic, linear, GAT/GATv2) and two that project first (multi-head, manifold)
KINDS = ("scaled_dot_product", "flash", "local_global", "hyperbolic", "linear", "gat", "gatv2", "multi_head",
         "manifold")  # fmt: skip


@needs_jit
@pytest.mark.parametrize("layer", LAYERS)
def test_four_threads_under_each_threading_layer(layer):
    why = _probe(layer)
    if why:
        pytest.skip(f"Numba's {layer} threading layer is not available here: {why}")
    done = subprocess.run([sys.executable, "-c", _WORKER, ",".join(KINDS), "3"], env=_env(layer),
                          capture_output=True, text=True, timeout=1200, check=False)  # fmt: skip
    assert done.returncode == 0, f"exit code {done.returncode} under {layer}:\n{done.stderr[-2000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["layer"] == layer
    assert result["launches"] == ("concurrent" if layer in _config.THREADSAFE_LAYERS else
                                  "one at a time (the layer is not threadsafe)")  # fmt: skip
    assert result["calls"] == 4 * len(KINDS)
    assert result["errors"] == []
    assert result["mismatches"] == [], "outputs differ from the single-threaded run"


def _parallel_kernels() -> dict[str, object]:
    found = {}
    for info in pkgutil.iter_modules(ruvattn.kernels.__path__):
        module = importlib.import_module(f"ruvattn.kernels.{info.name}")
        for name, obj in vars(module).items():
            if is_jitted(obj) and obj.py_func.__module__ == module.__name__ and obj.targetoptions.get("parallel"):
                found[f"{info.name}.{name}"] = obj
    return found


@needs_jit
def test_every_parallel_kernel_is_launched_through_the_guarded_dispatcher():
    """A parallel kernel declared with a bare ``njit(parallel=True)`` would bypass the launch lock."""
    kernels = _parallel_kernels()
    assert len(kernels) >= 10  # attend_many/csr, flash_many, hyp_many/csr, gat(v2)_attend, linear x3
    plain = sorted(name for name, k in kernels.items() if not isinstance(k, _config.ParallelDispatcher))
    assert not plain, f"declare these with ruvattn.kernels.attention._parallel: {plain}"


@needs_jit
def test_single_query_forms_launch_no_parallel_kernel(monkeypatch):
    """The hot path (one query) never takes the launch lock: its kernels are serial."""
    launched = []
    real = _config._launch

    def counting(self, *args, **kwargs):
        launched.append(self.py_func.__name__)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(_config, "_launch", counting)
    for kind in ruvattn.available():
        ex = mechanism_class(kind).example(np.float32, seed=0, dim=8)
        mech, q, k, v = ex.mechanism, ex.query, ex.keys, ex.values
        prepared = mech.prepare(k, v)  # per key set (a linear summary is built in parallel)
        launched.clear()
        mech.forward(q, k, v)
        mech.forward(q, prepared)
        mech.weights(q, k)
        assert launched == [], f"{kind}: a single-query form launched {launched}"
    ex = mechanism_class("scaled_dot_product").example(np.float32, seed=0, dim=8)
    ex.mechanism.forward_batch(ex.queries, ex.keys, ex.values)
    assert launched == ["attend_many"]  # the counter sees launches


@needs_jit
def test_launches_serialise_until_the_layer_is_known_threadsafe(monkeypatch):
    """Under a threadsafe layer the lock is skipped after the first launch; otherwise every launch holds it."""
    ex = mechanism_class("scaled_dot_product").example(np.float32, seed=0, dim=8)
    ex.mechanism.forward_batch(ex.queries, ex.keys, ex.values)
    assert _config._threadsafe == (numba.threading_layer() in _config.THREADSAFE_LAYERS)
    held = []

    def probe(self, *args, **kwargs):
        held.append(_config._launch_lock.locked())
        return real(self, *args, **kwargs)

    real = _config._launch
    monkeypatch.setattr(_config, "_launch", probe)
    monkeypatch.setattr(_config, "_threadsafe", False)
    ex.mechanism.forward_batch(ex.queries, ex.keys, ex.values)
    assert held == [True]
    assert _config._threadsafe == (numba.threading_layer() in _config.THREADSAFE_LAYERS)


def test_backend_info_names_how_parallel_launches_run():
    launches = ruvattn.backend_info()["parallel_launches"]
    if _config.JIT_DISABLED:
        assert launches == "python"
    else:
        assert launches in {"not started", "concurrent", "one at a time (the layer is not threadsafe)"}


def test_a_forked_child_starts_with_a_free_launch_lock(monkeypatch):
    """The lock held by another thread at fork time would never be released in the child."""
    held = _config._launch_lock
    monkeypatch.setattr(_config, "_launch_lock", held)
    with held:
        _config._renew_lock()  # what os.register_at_fork runs in the child
        assert _config._launch_lock is not held and not _config._launch_lock.locked()

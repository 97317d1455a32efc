"""backend_info() and warmup(): warmup reaches every kernel entry point, in both dtypes where it matters."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import numba
import pytest
from numba.extending import is_jitted

import ruvattn
import ruvattn.kernels
from ruvattn import _config
from ruvattn.backend import backend_info, warmup

#: the kind the two-process warm-up test compiles (one of the quickest; its kernels are its own)
WARM_KIND = "local_global"


def _python_callers() -> str:
    """The source of every module outside ruvattn.kernels (where kernels are called from Python)."""
    root = Path(ruvattn.__file__).parent
    files = [p for p in root.rglob("*.py") if "kernels" not in p.relative_to(root).parts]
    return "\n".join(p.read_text(encoding="utf-8") for p in files)


def _entry_kernels() -> dict[str, object]:
    """Every @njit function of ruvattn.kernels that Python calls (the inlined helpers are not compiled on their
    own, and a serial chunk called only inside a parallel kernel is compiled as part of it, or loaded with it
    from the cache, without a signature of its own)."""
    callers = _python_callers()
    found = {}
    for info in pkgutil.iter_modules(ruvattn.kernels.__path__):
        module = importlib.import_module(f"ruvattn.kernels.{info.name}")
        for name, obj in vars(module).items():
            own = is_jitted(obj) and obj.py_func.__module__ == module.__name__
            called = re.search(rf"\b{re.escape(name)}\(", callers) is not None
            if own and called and obj.targetoptions.get("inline") != "always":
                found[f"{info.name}.{name}"] = obj
    return found


def test_warmup_compiles_every_kernel_entry_point(capsys):
    timings = warmup(verbose=True)
    assert set(timings) == {"float32", "float64"} and all(t >= 0 for t in timings.values())
    out = capsys.readouterr().out
    assert "warmup float32:" in out and "warmup float64:" in out
    if _config.JIT_DISABLED:
        assert not _entry_kernels()  # the kernels are plain Python functions: warmup ran them as such
        return
    kernels = _entry_kernels()
    assert len(kernels) > 20
    missing = sorted(name for name, k in kernels.items() if not k.signatures)
    assert not missing, f"warmup() does not compile {missing}"
    # the dtype-generic dot-product kernels are compiled for both float32 and float64
    for name in ("attention.attend_one", "attention.attend_many", "attention.attend_csr", "attention.flash_many"):
        dtypes = {str(sig[0].dtype) for sig in kernels[name].signatures}
        assert dtypes == {"float32", "float64"}, (name, dtypes)


def test_backend_info_names_the_backend():
    info = backend_info()
    assert info["numba"] == numba.__version__ and info["cache"] == _config.CACHE
    if _config.JIT_DISABLED:
        assert info["backend"] == "python (NUMBA_DISABLE_JIT=1)" and info["simd"] == []
    else:
        assert info["backend"] == "numba" and info["threads"] >= 1
        assert info["threading_layer"] in {"not started", "tbb", "omp", "workqueue"}


def test_warmup_refuses_bad_jobs_and_kinds():
    from ruvattn.errors import InvalidConfig

    for jobs in (0, -1, 1.5, True, "2"):
        with pytest.raises(InvalidConfig, match="'jobs' must be a positive int"):
            warmup(jobs=jobs)
    for kinds in (["no_such_kind"], [], ["scaled_dot_product", "nope"]):
        with pytest.raises(InvalidConfig, match="'kinds' must name registered kinds"):
            warmup(kinds=kinds)


def test_warmup_in_other_processes_needs_the_cache(monkeypatch):
    from ruvattn.errors import InvalidConfig

    monkeypatch.setattr(_config, "CACHE", False)
    with pytest.raises(InvalidConfig, match="jobs=2 compiles in other processes"):
        warmup(jobs=2, kinds=["scaled_dot_product"])


COUNT_CACHE = """
import importlib, json, pkgutil, sys
import ruvattn.kernels
from numba.extending import is_jitted
from ruvattn.backend import warmup
if sys.argv[1] == "fill":
    print(json.dumps(warmup(jobs=2, kinds=[KIND])))
else:
    warmup(kinds=[KIND])  # in this process: every kernel it reaches is loaded or compiled here
    hits = misses = 0
    for info in pkgutil.iter_modules(ruvattn.kernels.__path__):
        for obj in vars(importlib.import_module("ruvattn.kernels." + info.name)).values():
            if is_jitted(obj):
                hits += sum(obj.stats.cache_hits.values())
                misses += sum(obj.stats.cache_misses.values())
    print(json.dumps({"hits": hits, "misses": misses}))
"""


@pytest.mark.skipif(_config.JIT_DISABLED or not _config.CACHE, reason="compiles into the on-disk cache")
def test_warmup_in_two_processes_fills_the_cache_a_later_process_loads(tmp_path):
    """``warmup(jobs=2)`` compiles in two worker processes at once into a fresh cache; a later process warming
    the same kinds in-process then loads every kernel (hits) and compiles none (no miss)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CACHE_DIR")}
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "cache")
    code = COUNT_CACHE.replace("KIND", repr(WARM_KIND))
    runs = [subprocess.run([sys.executable, "-c", code, step], env=env, capture_output=True, text=True, timeout=900)
            for step in ("fill", "load")]  # fmt: skip
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:] + runs[1].stderr[-2000:]
    filled, loaded = (json.loads(r.stdout.strip().splitlines()[-1]) for r in runs)
    assert set(filled) == {"float32", "float64"} and all(t > 0 for t in filled.values())
    assert loaded["misses"] == 0 and loaded["hits"] > 0, loaded

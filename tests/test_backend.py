"""backend_info() and warmup(): warmup reaches every kernel entry point, in both dtypes where it matters."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import numba
from numba.extending import is_jitted

import ruvattn
import ruvattn.kernels
from ruvattn import _config
from ruvattn.backend import backend_info, warmup


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

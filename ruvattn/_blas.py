"""The BLAS on one thread while a tiled kernel runs.

The tiled kernels (:mod:`ruvattn.kernels.tiles`) call the BLAS (``np.dot`` inside Numba lowers to
SciPy's ``sgemm``/``dgemm``) from each of Numba's threads.  A BLAS that starts threads of its own
inside those oversubscribes the cores: on a loaded 2-core machine one 64 x 256 x 64 product went
from 10 µs to 1,100 µs.  :func:`one_thread` sets every BLAS loaded in the process to one thread for
the duration of a kernel launch, through ``threadpoolctl`` (the library scikit-learn uses for the
same purpose), and puts the previous counts back when the last launch in flight ends.  Another
Python thread using the BLAS at that moment runs on one thread for that long: slower, never wrong.

Without ``threadpoolctl`` (or with no BLAS it can control) :data:`PINNED` is False and the kernels
keep every product small enough that OpenBLAS runs it on the calling thread anyway
(:data:`ruvattn.kernels.tiles.GEMM_BUDGET`).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["PINNED", "one_thread"]

_lock = threading.Lock()
_depth = 0
_saved: list[tuple[Any, int]] = []


def _controllers() -> list[Any]:
    try:
        importlib.import_module("scipy.linalg.cython_blas")  # SciPy's BLAS, the one Numba's np.dot calls, loaded
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return []
    try:
        return [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    except Exception:  # a library threadpoolctl cannot read: fall back to small products
        return []


_LIBS = _controllers()
#: True when every product of a tiled kernel is known to run on its calling thread through :func:`one_thread`.
PINNED: bool = bool(_LIBS)


@contextmanager
def one_thread() -> Iterator[None]:
    """Every BLAS of the process on one thread inside the block (nested and concurrent blocks share it)."""
    global _depth
    if not _LIBS:
        yield
        return
    with _lock:
        if _depth == 0:
            _saved[:] = [(lib, lib.num_threads) for lib in _LIBS]
            for lib, n in _saved:
                if n != 1:
                    lib.set_num_threads(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for lib, n in _saved:
                    if n != 1:
                        lib.set_num_threads(n)

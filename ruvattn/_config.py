"""The one place for Numba flags.

Every ``@njit`` in :mod:`ruvattn.kernels` takes its options from here, so a
flag is changed once for the whole package.

* ``FASTMATH`` is a *set* of LLVM fast-math flags.  It leaves out ``nnan`` and
  ``ninf``: with fast-math switched on wholesale (a bare boolean) LLVM may assume that no value is NaN
  or infinite, which turns ``np.isnan(x)`` into ``False`` and breaks the
  non-finite checks that every kernel reports back to Python.
* ``CACHE`` switches Numba's on-disk cache (``RUVATTN_NUMBA_CACHE=0`` turns it
  off).  It covers the parallel kernels as well as the serial ones: helpers are
  inlined into the fused kernels, which makes a cold compile long (minutes for
  every kernel in both dtypes) and a cached start short (under a second).
* ``JIT_DISABLED`` mirrors ``NUMBA_DISABLE_JIT``: the kernels then run as plain
  Python, which is how the test suite measures their coverage.
* :func:`parallel_njit` is the one decorator of the parallel (``prange``) kernels.  The kernels are
  ``nogil``, so several Python threads can launch them at once; Numba's ``workqueue`` threading
  layer (what a machine without OpenMP or TBB gets) is not threadsafe and aborts the whole process
  (SIGABRT) when that happens.  Its dispatchers (:class:`ParallelDispatcher`) therefore take one
  process-wide lock around a launch until the first launch has shown the layer to be threadsafe
  (``tbb`` or ``omp``, :data:`THREADSAFE_LAYERS`); from then on a launch is one flag read more.
  Serial kernels (every single-query path) are plain dispatchers and never wait.
* :func:`kernel_njit` (serial and inlined kernels) and :func:`parallel_njit` give every cached kernel a
  :class:`LockedFunctionCache`: Numba's on-disk cache with one writer at a time per cache directory.
  Numba's own cache picks a data file name by reading the index, and two processes compiling different
  signatures of one function at once could both take name 1, so that one signature's index entry pointed
  at the other's machine code (a wrong result or a crash in every later process; numba issues #4807,
  #10128).  ``ruvattn warmup --jobs 2``, ``pytest -n 2`` and experiment workers compile concurrently.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numba
from numba.core.caching import FunctionCache
from numba.core.registry import CPUDispatcher

try:
    import fcntl
except ImportError:  # not POSIX: Numba's cache unlocked, as Numba ships it
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CACHE",
    "FASTMATH",
    "JIT_DISABLED",
    "THREADSAFE_LAYERS",
    "LockedFunctionCache",
    "ParallelDispatcher",
    "kernel_njit",
    "parallel_njit",
    "threads",
]


def _env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() not in {"0", "false", "no", "off"}


#: Fast-math flags: re-association (vectorised reductions), contraction (FMA),
#: reciprocal, no signed zeros, approximate functions; never nnan / ninf.
FASTMATH: set[str] = {"reassoc", "contract", "arcp", "nsz", "afn"}

#: On-disk cache for the kernels (env ``RUVATTN_NUMBA_CACHE``; default on).
CACHE: bool = _env_flag("RUVATTN_NUMBA_CACHE", True)

#: True when Numba runs the kernels as Python (``NUMBA_DISABLE_JIT=1``).
JIT_DISABLED: bool = bool(numba.config.DISABLE_JIT)

#: Numba threading layers that take parallel kernels launched from several Python threads at once
#: (Numba's threading-layer docs: ``tbb`` and ``omp`` are threadsafe, ``workqueue`` is not).
THREADSAFE_LAYERS: frozenset[str] = frozenset({"tbb", "omp"})

_launch_lock = threading.Lock()
#: True once a parallel kernel has run and Numba's layer is in THREADSAFE_LAYERS (it never changes after).
_threadsafe = False
_launch = CPUDispatcher.__call__  # the compiled dispatch (C), without the lock


def _renew_lock() -> None:
    """A forked child starts with a free lock (the parent's may have been held by another thread)."""
    global _launch_lock
    _launch_lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_lock)


def layer_threadsafe() -> bool | None:
    """Whether the active Numba threading layer is threadsafe; ``None`` before any parallel kernel ran."""
    try:
        return numba.threading_layer() in THREADSAFE_LAYERS
    except ValueError:  # no parallel kernel has run yet: the layer is not chosen
        return None


#: the lock file :class:`LockedFunctionCache` takes in each cache directory
LOCK_NAME = "ruvattn-cache.lock"


@contextmanager
def _cache_dir_locked(path: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``'s lock file (created with the directory if missing)."""
    if fcntl is None:
        yield
        return
    os.makedirs(path, exist_ok=True)
    fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class LockedFunctionCache(FunctionCache):  # type: ignore[misc]
    """Numba's ``FunctionCache`` whose saves hold an exclusive lock on the cache directory: reading the
    index, choosing a data file name, writing the index and the data happen as one step across processes.

    Loads take no lock: an index entry is written before its data file, so a load that comes between the
    two finds no file and compiles (a miss, never another signature's code), and with saves serialised a
    data file name is never given to a second signature.
    """

    def save_overload(self, sig: Any, data: Any) -> None:
        with _cache_dir_locked(self._cache_path):
            super().save_overload(sig, data)


def _lock_cache(kernel: Any) -> Any:
    """Give a dispatcher made with ``cache=True`` a :class:`LockedFunctionCache` (same state: only the
    class changes)."""
    cache = getattr(kernel, "_cache", None)
    if type(cache) is FunctionCache:
        cache.__class__ = LockedFunctionCache
    return kernel


def kernel_njit(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``numba.njit(**options)`` for serial and inlined kernels, with a :class:`LockedFunctionCache` when
    ``cache=True`` (with ``NUMBA_DISABLE_JIT`` the plain function)."""
    jit = numba.njit(**options)

    def decorate(fn: Callable[..., Any]) -> Any:
        return _lock_cache(jit(fn))

    return decorate


class ParallelDispatcher(CPUDispatcher):  # type: ignore[misc]
    """The dispatcher of a parallel kernel (made by :func:`parallel_njit`): a launch holds one
    process-wide lock unless the threading layer is known to be threadsafe.

    Under ``workqueue`` this serialises concurrent launches (each one uses every Numba thread anyway)
    instead of aborting the process.  Everything else (compiling, caching, ``signatures``,
    ``py_func``) is Numba's own ``CPUDispatcher``.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        global _threadsafe
        if _threadsafe:
            return _launch(self, *args, **kwargs)
        with _launch_lock:
            result = _launch(self, *args, **kwargs)
            _threadsafe = layer_threadsafe() is True
        return result


def parallel_njit(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``numba.njit(parallel=True, **options)`` whose dispatchers are :class:`ParallelDispatcher` (with
    ``NUMBA_DISABLE_JIT`` the plain function: ``prange`` is then ``range`` and the GIL serialises).

    Every parallel kernel of the package is declared with it, so none can be launched unguarded.
    """
    jit = numba.njit(parallel=True, **options)

    def decorate(fn: Callable[..., Any]) -> Any:
        kernel = jit(fn)
        if isinstance(kernel, CPUDispatcher):
            # Numba builds its own dispatcher (options, caching); only the class is ours: it adds __call__.
            kernel.__class__ = ParallelDispatcher
        return _lock_cache(kernel)

    return decorate


@contextmanager
def threads(n: int) -> Iterator[int]:
    """Run a block with ``n`` Numba threads, restoring the previous count after.

    >>> from ruvattn import threads
    >>> with threads(1) as used:
    ...     used
    1
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        from ruvattn.errors import InvalidConfig

        raise InvalidConfig(f"threads: n must be a positive integer; got {n!r}.")
    n = min(n, numba.config.NUMBA_NUM_THREADS)
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(previous)

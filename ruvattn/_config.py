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
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numba

__all__ = ["CACHE", "FASTMATH", "JIT_DISABLED", "threads"]


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

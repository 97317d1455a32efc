"""Timing helpers shared by the benchmark notebooks in ``experiments/``.

Timings on shared machines are noisy: :func:`timeit` reports the median and
p95 of many single calls, with a pinned thread count for Numba, BLAS
(``threadpoolctl``, when installed) and torch, and the garbage collector off;
compare implementations by ratios measured in the same run.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from ruvattn._config import threads

__all__ = ["load_peer", "peak_bytes", "pinned_threads", "timeit", "verdict", "verdict_table"]


@contextlib.contextmanager
def pinned_threads(n: int) -> Iterator[None]:
    """Numba, BLAS and (if imported) torch limited to ``n`` threads inside the block."""
    import sys

    torch = sys.modules.get("torch")
    saved_torch = torch.get_num_threads() if torch is not None else None
    with contextlib.ExitStack() as stack:
        stack.enter_context(threads(n))
        try:
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(n))
        except ImportError:
            pass
        if torch is not None:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            if torch is not None and saved_torch is not None:
                torch.set_num_threads(saved_torch)


def timeit(fn: Callable[[], Any], repeats: int, n_threads: int = 1) -> dict[str, float]:
    """Median, p95 and p99 wall time of ``fn()`` in µs over ``repeats`` single calls, after one warm-up call."""
    times = np.empty(repeats)
    with pinned_threads(n_threads):
        fn()
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for i in range(repeats):
                t0 = time.perf_counter()
                fn()
                times[i] = time.perf_counter() - t0
        finally:
            if gc_was_enabled:
                gc.enable()
    return {
        "median_us": float(np.median(times) * 1e6),
        "p95_us": float(np.percentile(times, 95) * 1e6),
        "p99_us": float(np.percentile(times, 99) * 1e6),
    }


def peak_bytes(fn: Callable[[], Any], n_threads: int = 1) -> int:
    """Python-side peak allocation (tracemalloc) of one ``fn()`` call, after a warm-up call."""
    with pinned_threads(n_threads):
        fn()
        tracemalloc.start()
        tracemalloc.reset_peak()
        try:
            fn()
            return int(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else "met" if ok else "missed"


def load_peer(name: str, module: str, wanted: Sequence[str]) -> ModuleType | None:
    """Import an optional comparison package if ``name`` is in ``wanted``; ``None`` (with a note) otherwise."""
    if name not in wanted:
        return None
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        print(f"peer {name} skipped: {exc}")
        return None


def verdict_table(targets: Sequence[tuple[str, str, str, bool | None]]) -> str:
    """A plain-text table of ``(name, measured, goal, met)`` rows.

    >>> print(verdict_table([("latency", "12.0 µs", "<= 20 µs", True)]))
    target   measured  goal      result
    -------  --------  --------  ------
    latency  12.0 µs   <= 20 µs  met
    """
    rows = [(n, m, g, verdict(ok)) for n, m, g, ok in targets]
    header = ("target", "measured", "goal", "result")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, tuple("-" * w for w in widths), *rows]]  # fmt: skip
    return "\n".join(lines)

"""Tables for ``ruvattn benchmark`` (the specification's latency targets) and ``ruvattn compare`` (peers).

Both read the rows of an experiment's ``results.csv`` (:func:`ruvattn.lab.experiments.read_results` or
:attr:`RunReport.rows`): ``spec_targets`` rows carry ``mechanism``, ``neighbours`` and the recorded
``latency_us.p50/p95/p99``, ``ops_per_s`` and ``peak_kib``; ``peers`` rows carry ``workload`` and
one ``time_us.<peer>`` per peer measured in the same run.

:data:`SPEC_TARGETS` holds the targets the issues quoted from the specification; a row without a
known target says so rather than inventing one.
"""

from __future__ import annotations

import statistics
from typing import Any

__all__ = ["SPEC_TARGETS", "format_value", "peer_table", "targets_table"]

#: (mechanism, neighbours) -> (recorded metric, bound, wording, where the target comes from)
SPEC_TARGETS: dict[tuple[str, int], tuple[str, float | None, str, str]] = {
    ("scaled_dot_product", 1000): ("latency_us.p50", 20.0, "p50 <= 20 µs", "issue 2"),
    ("multi_head", 1000): ("latency_us.p50", 30.0, "p50 <= 30 µs", "issue 2"),
    ("hyperbolic", 100): ("latency_us.p50", 20.0, "p50 <= 20 µs", "issue 3"),
    ("local_global", 1000): ("latency_us.p50", 5.0, "p50 <= 5 µs", "issue 4"),
    ("moe", 1000): ("latency_us.p95", 180_000.0, "p95 < 180 ms (spec)", "spec, quoted in issue 5"),
    ("scaled_dot_product", 10000): ("ns_per_key", None, "linear in n", "issue 2"),  # checked against n = 1,000
}


def format_value(value: Any) -> str:
    """A table cell as ``ruvattn`` prints it: ``-`` for none, floats to 4 significant digits
    (whole numbers with thousands separators from 1,000 on).

    >>> [format_value(v) for v in (None, 3, 12.3456, 52345.6, "moe")]
    ['-', '3', '12.35', '52,346', 'moe']
    """
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return "-" if value is None else str(value)


def _median(rows: list[dict[str, Any]], column: str) -> float | None:
    xs = [r[column] for r in rows if r.get("status") == "ok" and isinstance(r.get(column), (int, float))]
    return statistics.median(xs) if xs else None


def _groups(rows: list[dict[str, Any]], *names: str) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(tuple(r.get(n) for n in names), []).append(r)
    return out


def targets_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """One row per (mechanism, neighbours): p50/p95/p99 µs, ops/s, peak KiB, the target and met/missed."""
    groups = _groups(rows, "mechanism", "neighbours")
    header = ["mechanism", "neighbours", "p50 µs", "p95 µs", "p99 µs", "ops/s", "peak KiB", "target", "result"]
    body = []
    for (mech, n), members in groups.items():
        p50, p95, p99 = (_median(members, f"latency_us.{q}") for q in ("p50", "p95", "p99"))
        target, result = "no target in hand", "-"
        spec = SPEC_TARGETS.get((mech, n))
        if spec is not None:
            metric, bound, target, _ = spec
            if metric == "ns_per_key":  # linear scaling: time per key at n no more than 2x that at 1,000
                base = groups.get((mech, 1000))
                here = p50 / n * 1e3 if p50 else None
                ref = _median(base, "latency_us.p50") / 1000 * 1e3 if base and _median(base, "latency_us.p50") else None
                if here is not None and ref is not None:
                    target = f"linear in n: {here:.0f} ns/key vs {ref:.0f} at n = 1,000 (<= 2x)"
                    result = "met" if here <= 2 * ref else "missed"
            else:
                value = _median(members, metric)
                if value is not None:
                    result = "met" if value <= bound else "missed"
        body.append([
            mech, n, p50, p95, p99, _median(members, "ops_per_s"), _median(members, "peak_kib"), target, result,
        ])  # fmt: skip
    return header, body


def peer_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """One row per workload and peer: the medians and peer time / ruvattn time (measured in the same run)."""
    header = ["workload", "neighbours", "peer", "ruvattn µs", "peer µs", "peer / ruvattn"]
    body = []
    for (workload, n), members in _groups(rows, "workload", "neighbours").items():
        ours = _median(members, "time_us.ruvattn")
        peers = sorted({c.split(".", 1)[1] for r in members for c in r if c.startswith("time_us.")} - {"ruvattn"})
        for peer in peers:
            theirs = _median(members, f"time_us.{peer}")
            if theirs is None:
                continue
            body.append([workload, n, peer, ours, theirs, theirs / ours if ours else None])
    return header, body

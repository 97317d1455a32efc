"""Peak resident memory of the neighbour form over a large table, per storage format (issue 17, item 6).

Each format runs in a fresh process: it builds one ``rows`` x ``dim`` key table and one value table in that
format (the float32 source rows are generated block by block and never held whole, except for float32
itself), restarts the kernel's resident-memory high-water mark (``/proc/self/clear_refs``, Linux >= 4.0), runs
``forward_neighbours`` for ``nodes`` nodes x ``degree`` random ids, and reports the resident memory held before
the call and the peak during it: the difference is what the call itself allocates (no dequantised copy).

    python tools/rss_neighbours.py [--rows 1000000] [--dim 128] [--formats float32 int8 int4_asym]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys
import numpy as np
from ruvattn import ScaledDotProductAttention
from ruvattn.compression import preset

fmt, rows, dim, nodes, degree = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
attn = ScaledDotProductAttention(dim)
rng = np.random.default_rng(0)
q = rng.standard_normal((nodes, dim)).astype(np.float32)
ids = rng.integers(0, rows, size=(nodes, degree))
attn.forward_neighbours(q[:2], rng.standard_normal((4, dim)).astype(np.float32),
                        rng.standard_normal((4, dim)).astype(np.float32), [[0, 1], [2]])  # kernels loaded
def mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux

base = mb()

def table(seed):
    if fmt == "float32":
        return np.random.default_rng(seed).standard_normal((rows, dim), dtype=np.float32)
    parts, g = [], np.random.default_rng(seed)
    for lo in range(0, rows, 65536):  # 32 MB of float32 at a time
        parts.append(preset(g.standard_normal((min(65536, rows - lo), dim), dtype=np.float32), fmt))
    t = parts[0]
    codes = np.concatenate([p.codes for p in parts])
    scales = np.concatenate([p.scales for p in parts])
    offsets = None if t.offsets is None else np.concatenate([p.offsets for p in parts])
    return type(t)(codes, scales, offsets, t.format, t.symmetric, t.block, t.dim)

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)

k, v = table(1), table(2)
import gc; gc.collect()
with open("/proc/self/clear_refs", "w") as fh:  # Linux >= 4.0: the high-water mark restarts from here
    fh.write("5")
held = status("VmRSS")
attn.forward_neighbours(q, k, v, ids)
peak = status("VmHWM")
print(json.dumps({"format": fmt, "base_mb": base, "tables_mb": (k.nbytes + v.nbytes) / 1e6, "rss_held_mb": held,
                  "peak_during_call_mb": peak}))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--degree", type=int, default=32)
    p.add_argument("--formats", nargs="+", default=["float32", "int8", "int4_asym", "int4_asym_b64_f16"])
    args = p.parse_args(argv)
    print(f"{'format':20s} {'tables MB':>10s} {'RSS held MB':>12s} {'peak in call MB':>16s} {'call adds MB':>13s}")
    for fmt in args.formats:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, fmt, str(args.rows), str(args.dim), str(args.nodes), str(args.degree)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{fmt:20s} {r['tables_mb']:10.1f} {r['rss_held_mb']:12.1f} {r['peak_during_call_mb']:16.1f} "
            f"{r['peak_during_call_mb'] - r['rss_held_mb']:13.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Loading the golden corpus (format: tests/golden/README.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

GOLDEN_DIR = Path(os.environ.get("RUVATTN_GOLDEN_DIR", Path(__file__).parent / "golden"))

_DTYPES = {"f32": np.float32, "i64": np.int64, "i8": np.int8, "bool": np.bool_}


def tensor(t: dict[str, Any]) -> np.ndarray:
    """A golden tensor as a numpy array with its exact float32 bits."""
    dt = _DTYPES[t["dtype"]]
    if dt is np.float32:
        data = np.array([np.float32(x) for x in t["data"]], dtype=np.float32)
    else:
        data = np.array(t["data"], dtype=dt)
    return data.reshape(t["shape"])


def load(path: Path) -> dict[str, Any]:
    case = json.loads(path.read_text())
    for group in ("inputs", "weights", "expected"):
        case[group] = {k: tensor(v) for k, v in case.get(group, {}).items()}
    return case


def cases(prefixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in GOLDEN_DIR.glob("*.json") if p.name != "index.json" and p.name.startswith(prefixes))


def assert_close(case: dict[str, Any], name: str, got: Any) -> None:
    exp = case["expected"][name]
    tol = case["tolerance"][name]
    got = np.asarray(got, dtype=np.float64).reshape(exp.shape)
    err = np.abs(got - exp.astype(np.float64))
    allowed = tol["atol"] + tol["rtol"] * np.abs(exp.astype(np.float64))
    worst = float(np.max(err / np.maximum(allowed, 1e-300))) if err.size else 0.0
    assert np.all(err <= allowed), f"{case['name']}: {name} off by {err.max():.3g} (worst err/allowed {worst:.3g})"

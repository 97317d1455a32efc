"""``record(name, value)``: keep a result in an executed notebook so runs can be collected later.

Inside IPython/Jupyter the value is displayed as a JSON output with the MIME
type :data:`MIME` (plus a short text line); :func:`read_records` collects
them from a saved ``.ipynb``.  Outside IPython it is printed as one JSON line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MIME", "read_records", "record"]

MIME = "application/x.ruvattn.record+json"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def record(name: str, value: Any) -> None:
    """Record ``value`` (JSON-serialisable after numpy conversion) under ``name``."""
    payload = {"name": name, "value": _plain(value)}
    text = json.dumps(payload)
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display({MIME: payload, "text/plain": f"record {name}"}, raw=True)
    else:
        print(text)


def read_records(notebook: str | Path) -> dict[str, Any]:
    """All values recorded in an executed notebook, by name (last one wins)."""
    nb = json.loads(Path(notebook).read_text())
    found: dict[str, Any] = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if MIME in data:
                found[data[MIME]["name"]] = data[MIME]["value"]
    return found

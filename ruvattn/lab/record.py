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

__all__ = ["MIME", "read_records", "record", "records_in"]

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
    return records_in(json.loads(Path(notebook).read_text(encoding="utf-8")))


def records_in(nb: Any) -> dict[str, Any]:
    """The records of a parsed notebook (its JSON), by name (last one wins); whatever is not shaped like a
    notebook, a cell, an output or a record is passed over.

    >>> records_in({"cells": [{"outputs": [{"data": {MIME: {"name": "x", "value": 2}}}]}, 3]})
    {'x': 2}
    """
    found: dict[str, Any] = {}
    cells = nb.get("cells") if isinstance(nb, dict) else None
    for cell in cells if isinstance(cells, list) else []:
        outputs = cell.get("outputs") if isinstance(cell, dict) else None
        for output in outputs if isinstance(outputs, list) else []:
            data = output.get("data") if isinstance(output, dict) else None
            entry = data.get(MIME) if isinstance(data, dict) else None
            if isinstance(entry, dict) and isinstance(entry.get("name"), str) and "value" in entry:
                found[entry["name"]] = entry["value"]
    return found

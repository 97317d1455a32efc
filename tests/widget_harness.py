"""Helpers shared by the widget tests."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import numpy as np


def traces_from_html(text: str) -> list[dict[str, Any]]:
    """The trace list passed to ``Plotly.newPlot`` in an exported page, typed arrays decoded."""
    start = re.search(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*", text).end()
    data, _ = json.JSONDecoder().raw_decode(text, start)

    def decode(v: Any) -> Any:
        if isinstance(v, dict) and "bdata" in v:
            arr = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
            return arr.reshape([int(x) for x in v["shape"].split(",")]) if "shape" in v else arr
        return np.asarray(v)

    return [{k: decode(v) if k in ("x", "y", "z", "customdata") else v for k, v in tr.items()} for tr in data]

"""Tensor compression.

- quantised key/value tables that attention reads directly (:mod:`~ruvattn.compression.quantization`);
- low-rank factors of projection weights and key tables (:mod:`~ruvattn.compression.lowrank`);
- attention weights and masks stored sparse, by top-k, threshold or mass (:mod:`~ruvattn.compression.sparse_storage`);
- per-HNSW-layer precision (:mod:`~ruvattn.compression.hierarchical`).

:data:`PRESETS` names the layouts the benchmarks and notebooks compare; :func:`agreement` measures how far
attention over a compressed table is from attention over the float32 one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ruvattn.compression.hierarchical import LayeredTable, layered_error, quantize_by_level, uniform_at_bytes
from ruvattn.compression.lowrank import LowRank, energy_curve, error_curve, factorize
from ruvattn.compression.quantization import (
    FORMATS,
    QuantizedTable,
    dequantize,
    quantize,
    quantize_int8,
    quantize_pair,
)
from ruvattn.compression.sparse_storage import SparseWeights, sparsify
from ruvattn.errors import InvalidConfig

__all__ = [
    "FORMATS",
    "PRESETS",
    "LayeredTable",
    "LowRank",
    "QuantizedTable",
    "SparseWeights",
    "agreement",
    "dequantize",
    "energy_curve",
    "error_curve",
    "factorize",
    "layered_error",
    "preset",
    "preset_pair",
    "quantize",
    "quantize_by_level",
    "quantize_int8",
    "quantize_pair",
    "sparsify",
    "uniform_at_bytes",
]

#: name -> keyword arguments of :func:`quantize`
PRESETS: dict[str, dict[str, Any]] = {
    "int8": {"format": "int8"},
    "int8_asym": {"format": "int8", "symmetric": False},
    "int4": {"format": "int4"},
    "int4_asym": {"format": "int4", "symmetric": False},
    "int4_asym_b32": {"format": "int4", "symmetric": False, "block": 32},
    "int4_asym_b64_f16": {"format": "int4", "symmetric": False, "block": 64, "scale_dtype": "float16"},
    "float16": {"format": "float16"},
    "bfloat16": {"format": "bfloat16"},
}


def preset(x: Any, name: str) -> QuantizedTable:
    """``quantize(x, **PRESETS[name])``."""
    if name not in PRESETS:
        raise InvalidConfig(f"preset: unknown name {name!r}; choose one of {', '.join(PRESETS)}.")
    return quantize(x, **PRESETS[name])


def preset_pair(keys: Any, values: Any, name: str) -> tuple[QuantizedTable, QuantizedTable]:
    """``quantize_pair(keys, values, **PRESETS[name])`` (INT presets: key and value scales in one array)."""
    if name not in PRESETS:
        raise InvalidConfig(f"preset_pair: unknown name {name!r}; choose one of {', '.join(PRESETS)}.")
    return quantize_pair(keys, values, **PRESETS[name])


def agreement(
    mechanism: Any, queries: Any, keys: Any, values: Any, table_keys: Any, table_values: Any, top: int = 10
) -> dict[str, NDArray[np.float64]]:
    """Per query: cosine similarity of the outputs over the compressed and the float tables, and the overlap
    of their ``top`` largest attention weights (a fraction of ``top``)."""
    ref = np.asarray(mechanism.forward_batch(queries, keys, values), np.float64)
    got = np.asarray(mechanism.forward_batch(queries, table_keys, table_values), np.float64)
    cos = (ref * got).sum(axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    w_ref = mechanism.weights(queries, keys).mean(axis=0)
    w_got = mechanism.weights(queries, table_keys).mean(axis=0)
    k = min(top, w_ref.shape[1])
    a = np.argpartition(-w_ref, k - 1, axis=1)[:, :k]
    b = np.argpartition(-w_got, k - 1, axis=1)[:, :k]
    overlap = np.array([len(set(x) & set(y)) / k for x, y in zip(a, b, strict=True)])
    return {"cosine": cos, "top_overlap": overlap}

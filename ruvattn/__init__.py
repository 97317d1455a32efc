"""ruvattn: attention mechanisms on graphs, accelerated with Numba.

>>> import numpy as np
>>> from ruvattn import ScaledDotProductAttention
>>> rng = np.random.default_rng(0)
>>> keys = rng.standard_normal((100, 128)).astype(np.float32)
>>> out = ScaledDotProductAttention(128).forward(keys[0], keys, keys)
>>> out.shape, out.dtype
((128,), dtype('float32'))
"""

from ruvattn._config import threads
from ruvattn.backend import backend_info, warmup
from ruvattn.errors import (
    AttentionError,
    DimensionMismatch,
    EmptyInput,
    Internal,
    InvalidConfig,
    MissingDependency,
    NumericalInstability,
    OutOfBounds,
    Unsupported,
)
from ruvattn.graph import GraphMetadata, NeighbourList
from ruvattn.mechanisms import (
    Attention,
    DualSpaceAttention,
    DynamicHeadAttention,
    FlashAttention,
    GATConv,
    GATv2Conv,
    GraphRoPE,
    HyperbolicAttention,
    LinearAttention,
    LocalGlobalAttention,
    ManifoldAttention,
    MixedCurvatureAttention,
    MoEAttention,
    MultiHeadAttention,
    ProjectedKeysValues,
    ScaledDotProductAttention,
    SparseGraphAttention,
    available,
    build,
)
from ruvattn.sparse import SparsityPattern

__version__ = "0.1.0"

__all__ = [
    "Attention",
    "AttentionError",
    "DimensionMismatch",
    "DualSpaceAttention",
    "DynamicHeadAttention",
    "EmptyInput",
    "FlashAttention",
    "GATConv",
    "GATv2Conv",
    "GraphMetadata",
    "GraphRoPE",
    "HyperbolicAttention",
    "Internal",
    "InvalidConfig",
    "LinearAttention",
    "LocalGlobalAttention",
    "ManifoldAttention",
    "MissingDependency",
    "MixedCurvatureAttention",
    "MoEAttention",
    "MultiHeadAttention",
    "NeighbourList",
    "NumericalInstability",
    "OutOfBounds",
    "ProjectedKeysValues",
    "ScaledDotProductAttention",
    "SparseGraphAttention",
    "SparsityPattern",
    "Unsupported",
    "available",
    "backend_info",
    "build",
    "threads",
    "warmup",
]

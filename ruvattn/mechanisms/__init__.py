"""User-facing attention mechanisms; importing this package registers them all."""

from ruvattn.mechanisms.base import Attention, Example, Prepared, available, build, mechanism_class, register
from ruvattn.mechanisms.dual_space import DualSpaceAttention
from ruvattn.mechanisms.dynamic_heads import DynamicHeadAttention
from ruvattn.mechanisms.flash import FlashAttention
from ruvattn.mechanisms.gat import GATConv, GATv2Conv
from ruvattn.mechanisms.graph_rope import GraphRoPE
from ruvattn.mechanisms.hyperbolic import HyperbolicAttention
from ruvattn.mechanisms.linear import LinearAttention, LinearSummary
from ruvattn.mechanisms.local_global import LocalGlobalAttention, SparseGraphAttention
from ruvattn.mechanisms.manifold import ManifoldAttention, MixedCurvatureAttention
from ruvattn.mechanisms.moe import MoEAttention, MoEBuilder
from ruvattn.mechanisms.multi_head import MultiHeadAttention, ProjectedKeysValues
from ruvattn.mechanisms.scaled_dot import Gradients, ScaledDotProductAttention

__all__ = [
    "Attention",
    "DualSpaceAttention",
    "DynamicHeadAttention",
    "Example",
    "FlashAttention",
    "GATConv",
    "GATv2Conv",
    "Gradients",
    "GraphRoPE",
    "HyperbolicAttention",
    "LinearAttention",
    "LinearSummary",
    "LocalGlobalAttention",
    "ManifoldAttention",
    "MixedCurvatureAttention",
    "MoEAttention",
    "MoEBuilder",
    "MultiHeadAttention",
    "Prepared",
    "ProjectedKeysValues",
    "ScaledDotProductAttention",
    "SparseGraphAttention",
    "available",
    "build",
    "mechanism_class",
    "register",
]

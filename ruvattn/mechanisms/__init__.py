"""User-facing attention mechanisms; importing this package registers them all."""

from ruvattn.mechanisms.base import Attention, AttentionConfig, available, build, register
from ruvattn.mechanisms.dynamic_heads import DynamicHeadAttention, DynamicHeadConfig
from ruvattn.mechanisms.flash import FlashAttention, FlashConfig
from ruvattn.mechanisms.gat import GATConfig, GATConv, GATv2Config, GATv2Conv
from ruvattn.mechanisms.hyperbolic import HyperbolicAttention, HyperbolicConfig
from ruvattn.mechanisms.linear import LinearAttention, LinearConfig, LinearSummary
from ruvattn.mechanisms.local_global import LocalGlobalAttention, LocalGlobalConfig, SparseGraphAttention
from ruvattn.mechanisms.manifold import (
    ManifoldAttention,
    ManifoldConfig,
    MixedCurvatureAttention,
    MixedCurvatureConfig,
)
from ruvattn.mechanisms.moe import MoEAttention, MoEBuilder, MoEConfig
from ruvattn.mechanisms.multi_head import MultiHeadAttention, MultiHeadConfig, ProjectedKeysValues
from ruvattn.mechanisms.scaled_dot import Gradients, ScaledDotProductAttention, ScaledDotProductConfig

__all__ = [
    "Attention",
    "AttentionConfig",
    "DynamicHeadAttention",
    "DynamicHeadConfig",
    "FlashAttention",
    "FlashConfig",
    "GATConfig",
    "GATConv",
    "GATv2Config",
    "GATv2Conv",
    "Gradients",
    "HyperbolicAttention",
    "HyperbolicConfig",
    "LinearAttention",
    "LinearConfig",
    "LinearSummary",
    "LocalGlobalAttention",
    "LocalGlobalConfig",
    "ManifoldAttention",
    "ManifoldConfig",
    "MixedCurvatureAttention",
    "MixedCurvatureConfig",
    "MoEAttention",
    "MoEBuilder",
    "MoEConfig",
    "MultiHeadAttention",
    "MultiHeadConfig",
    "ProjectedKeysValues",
    "ScaledDotProductAttention",
    "ScaledDotProductConfig",
    "SparseGraphAttention",
    "available",
    "build",
    "register",
]

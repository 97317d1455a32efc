"""Training: layers with explicit forward and backward, composed in order (no autograd engine).

A two-layer GAT for node classification (Veličković et al. 2018) is a :class:`Sequential`::

    model = nn.Sequential(
        nn.Dropout(0.6), nn.GATLayer(features, 8, heads=8, dropout=0.6), nn.ELU(),
        nn.Dropout(0.6), nn.GATLayer(64, classes, heads=1, concat=False, dropout=0.6),
    )
    logits = model(x, graph)
    loss, dlogits = nn.softmax_cross_entropy(logits, labels, train_ids)
    model.zero_grad(); model.backward(dlogits); optimizer.step()

See :mod:`ruvattn.optim` for the optimizers and schedules.
"""

from ruvattn.nn.core import (
    ELU,
    Bias,
    Dropout,
    Identity,
    LeakyReLU,
    Linear,
    Module,
    Parameter,
    ReLU,
    Sequential,
    glorot,
    softmax_cross_entropy,
)
from ruvattn.nn.dual import DualSpaceLayer, Propagation, dual_space_model, grand_model
from ruvattn.nn.gat import GATLayer, GATv2Layer, Graph

__all__ = [
    "ELU",
    "Bias",
    "Dropout",
    "DualSpaceLayer",
    "GATLayer",
    "GATv2Layer",
    "Graph",
    "Identity",
    "LeakyReLU",
    "Linear",
    "Module",
    "Parameter",
    "Propagation",
    "ReLU",
    "Sequential",
    "dual_space_model",
    "glorot",
    "grand_model",
    "softmax_cross_entropy",
]

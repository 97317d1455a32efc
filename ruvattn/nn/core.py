"""Layers with an explicit forward and backward, composed in order: no autograd engine.

A :class:`Module` computes ``y = forward(x, graph)`` and keeps what its backward needs;
``backward(dy)`` adds the gradients of its :class:`Parameter` s into their ``grad`` and returns
``dx`` (``None`` when the input is not differentiable: a sparse feature matrix, or the first layer
of a :class:`Sequential`).  A model is a :class:`Sequential` of layers; an optimizer
(:mod:`ruvattn.optim`) reads ``model.parameters()``.

>>> import numpy as np
>>> from ruvattn import nn
>>> layer = nn.Linear(3, 2, seed=0, dtype=np.float64)
>>> x = np.ones((4, 3))
>>> y = layer(x)
>>> dx = layer.backward(np.ones_like(y))
>>> bool(np.allclose(layer.weight.grad, x.T @ np.ones((4, 2)))), dx.shape
(True, (4, 3))
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ruvattn.errors import DimensionMismatch, InvalidConfig, NumericalInstability

__all__ = [
    "ELU",
    "Bias",
    "Dropout",
    "Identity",
    "LeakyReLU",
    "Linear",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "glorot",
    "softmax_cross_entropy",
]

Array = NDArray[np.floating]
Input = Any  # a dense (N, F) array, or a scipy.sparse matrix for a layer that takes sparse rows


class Parameter:
    """A learned array and its gradient (same shape and dtype; gradients accumulate until ``zero_grad``)."""

    __slots__ = ("data", "grad", "name")

    def __init__(self, data: Array, name: str = "") -> None:
        self.data = np.ascontiguousarray(data)
        self.grad = np.zeros_like(self.data)
        self.name = name

    def __repr__(self) -> str:
        return f"Parameter({self.name!r}, shape={self.data.shape}, dtype={self.data.dtype})"


def glorot(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> Array:
    """Glorot-uniform ``U(-a, a)``, ``a = sqrt(6 / (fan_in + fan_out))`` over the last two axes (PyG's ``glorot``)."""
    bound = math.sqrt(6.0 / (shape[-2] + shape[-1]))
    return rng.uniform(-bound, bound, shape).astype(dtype)


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _float_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise InvalidConfig(f"dtype must be float32 or float64; got {dt}.")
    return dt


class Module(ABC):
    """Base layer: ``forward``/``backward``, its parameters and sub-layers, ``train()``/``eval()``."""

    training: bool = True

    @abstractmethod
    def forward(self, x: Input, graph: Any = None) -> Array:
        """The layer's output for ``x`` (and ``graph``, for layers that read one); keeps what ``backward`` needs."""

    @abstractmethod
    def backward(self, dy: Array, need_input_grad: bool = True) -> Array | None:
        """Add this layer's parameter gradients from ``dy`` (the gradient of the loss with respect to the last
        forward's output) and return the gradient with respect to its input (``None`` when not asked for or
        not defined)."""

    def __call__(self, x: Input, graph: Any = None) -> Array:
        return self.forward(x, graph)

    def children(self) -> Iterator[tuple[str, Module]]:
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Every parameter with its dotted path, in the order the attributes were set (sub-layers included)."""
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value.named_parameters(prefix + name + ".")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad[...] = 0

    def train(self, mode: bool = True) -> Module:
        """Training mode (dropout on) or, with ``mode=False``, evaluation mode, for this layer and its sub-layers."""
        self.training = mode
        for _, child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def buffers(self) -> dict[str, Array]:
        """State that is not learned by gradient but belongs to the model (saved and restored with the parameters):
        none by default."""
        return {}

    def load_buffers(self, state: dict[str, Array]) -> None:
        """Restore :meth:`buffers` from ``state`` (the same names); a layer with buffers overrides this."""
        if state:
            raise DimensionMismatch(f"{type(self).__name__} has no buffers; got {sorted(state)}.")

    def _modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, child in self.children():
            yield from child._modules(prefix + name + ".")

    def state_dict(self) -> dict[str, Array]:
        """Copies of every parameter's array and every buffer by dotted name."""
        state = {name: p.data.copy() for name, p in self.named_parameters()}
        for prefix, module in self._modules():
            state.update({prefix + name: np.array(v, copy=True) for name, v in module.buffers().items()})
        return state

    def load_state_dict(self, state: dict[str, Array]) -> None:
        """Copy arrays of :meth:`state_dict`'s names and shapes into the parameters and buffers (all, or none)."""
        params = dict(self.named_parameters())
        buffers = {prefix + name for prefix, m in self._modules() for name in m.buffers()}
        if set(state) != set(params) | buffers:
            expected = set(params) | buffers
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise DimensionMismatch(f"load_state_dict: missing {missing}, unexpected {extra}.")
        for name, p in params.items():
            arr = np.asarray(state[name])
            if arr.shape != p.data.shape:
                raise DimensionMismatch(f"load_state_dict: {name} has shape {p.data.shape}; got {arr.shape}.")
        for name, p in params.items():
            p.data[...] = state[name]
        for prefix, module in self._modules():
            names = module.buffers()
            if names:
                module.load_buffers({name: state[prefix + name] for name in names})


class Sequential(Module):
    """Layers applied in order; ``graph`` goes to every layer (layers without a graph ignore it).

    The first layer's backward is not asked for an input gradient (the features are data, not parameters).
    """

    def __init__(self, *layers: Module) -> None:
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise InvalidConfig(f"Sequential: layer {i} is a {type(layer).__name__}, not a Module.")
            setattr(self, str(i), layer)
        self.layers = list(layers)

    def children(self) -> Iterator[tuple[str, Module]]:
        for i, layer in enumerate(self.layers):
            yield str(i), layer

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for name, layer in self.children():
            yield from layer.named_parameters(f"{prefix}{name}.")

    def forward(self, x: Input, graph: Any = None) -> Array:
        for layer in self.layers:
            x = layer.forward(x, graph)
        return x

    def backward(self, dy: Array, need_input_grad: bool = False) -> Array | None:
        g: Array | None = dy
        for i in range(len(self.layers) - 1, -1, -1):
            if g is None:  # a sparse input has no gradient: fine while nothing below it learns
                below = [p.name for layer in self.layers[: i + 1] for p in layer.parameters()]
                if below:
                    raise InvalidConfig(
                        f"Sequential.backward: layer {i + 1} takes sparse input and gives no input gradient, but "
                        f"layer {i} below it has parameters ({below[0]}); densify the input of layer {i + 1}."
                    )
                return None
            g = self.layers[i].backward(g, need_input_grad or i > 0)
        return g

    def __repr__(self) -> str:
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"


def _saved(layer: Module, value: Any) -> Any:
    if value is None:
        raise InvalidConfig(f"{type(layer).__name__}.backward: call forward first (nothing is saved).")
    return value


class Identity(Module):
    """``y = x``."""

    def forward(self, x: Input, graph: Any = None) -> Array:
        return x

    def backward(self, dy: Array, need_input_grad: bool = True) -> Array | None:
        return dy if need_input_grad else None

    def __repr__(self) -> str:
        return "Identity()"


class Dropout(Module):
    """Inverted dropout: in training mode each entry is zeroed with probability ``p`` and the rest scaled by
    ``1 / (1 - p)``; the identity in evaluation mode.  A sparse input keeps its pattern: only its stored
    entries can be dropped (a zero stays zero either way, so the result has the same distribution)."""

    def __init__(self, p: float = 0.5, seed: int | np.random.Generator | None = None) -> None:
        if not 0.0 <= p < 1.0:
            raise InvalidConfig(f"Dropout: p must be in [0, 1); got {p}.")
        self.p = float(p)
        self.rng = _rng(seed)
        self._mask: Array | None = None
        self._sparse = False

    def forward(self, x: Input, graph: Any = None) -> Array:
        if not self.training or self.p == 0.0:
            self._mask = None
            self._sparse = sp.issparse(x)
            return x
        scale = 1.0 / (1.0 - self.p)
        if sp.issparse(x):
            x = sp.csr_matrix(x, copy=True)
            keep = self.rng.random(x.data.shape[0]) >= self.p
            x.data = np.where(keep, x.data * x.data.dtype.type(scale), x.data.dtype.type(0))
            x.eliminate_zeros()
            self._sparse = True
            return x
        x = np.asarray(x)
        draw = np.float32 if x.dtype == np.float32 else np.float64  # float32 draws: half the random bits, same law
        self._mask = (self.rng.random(x.shape, dtype=draw) >= self.p).astype(x.dtype) * x.dtype.type(scale)
        self._sparse = False
        return x * self._mask

    def backward(self, dy: Array, need_input_grad: bool = True) -> Array | None:
        if not need_input_grad or self._sparse:
            return None
        return dy if self._mask is None else dy * self._mask

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"


class ELU(Module):
    """``y = x`` for ``x > 0``, else ``alpha (exp(x) - 1)`` (fused: :func:`ruvattn.kernels.training.elu_forward`)."""

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = float(alpha)
        self._xy: tuple[Array, Array] | None = None

    def forward(self, x: Input, graph: Any = None) -> Array:
        from ruvattn.kernels.training import elu_forward

        x = np.ascontiguousarray(x)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)
        y = np.empty_like(x)
        elu_forward(x.reshape(-1), self.alpha, y.reshape(-1))
        self._xy = (x, y)
        return y

    def backward(self, dy: Array, need_input_grad: bool = True) -> Array | None:
        x, y = _saved(self, self._xy)
        if not need_input_grad:
            return None
        from ruvattn.kernels.training import elu_backward

        dy = np.ascontiguousarray(dy, dtype=x.dtype)
        dx = np.empty_like(x)
        elu_backward(x.reshape(-1), y.reshape(-1), dy.reshape(-1), self.alpha, dx.reshape(-1))
        return dx

    def __repr__(self) -> str:
        return f"ELU(alpha={self.alpha})"


class ReLU(Module):
    """``y = max(x, 0)`` (gradient 0 at 0, as PyTorch)."""

    def __init__(self) -> None:
        self._x: Array | None = None

    def forward(self, x: Input, graph: Any = None) -> Array:
        self._x = np.asarray(x)
        return np.maximum(self._x, 0)

    def backward(self, dy: Array, need_input_grad: bool = True) -> Array | None:
        x = _saved(self, self._x)
        return dy * (x > 0) if need_input_grad else None

    def __repr__(self) -> str:
        return "ReLU()"


class LeakyReLU(Module):
    """``y = x`` for ``x > 0``, else ``negative_slope * x``."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        self.negative_slope = float(negative_slope)
        self._x: Array | None = None

    def forward(self, x: Input, graph: Any = None) -> Array:
        self._x = np.asarray(x)
        return np.where(self._x > 0, self._x, self._x * self._x.dtype.type(self.negative_slope))

    def backward(self, dy: Array, need_input_grad: bool = True) -> Array | None:
        x = _saved(self, self._x)
        if not need_input_grad:
            return None
        return np.where(x > 0, dy, dy * x.dtype.type(self.negative_slope))

    def __repr__(self) -> str:
        return f"LeakyReLU(negative_slope={self.negative_slope})"


def check_features(op: str, x: Input, width: int, dtype: np.dtype) -> Input:
    """``x`` as a 2-D dense array or CSR matrix of ``dtype`` with ``width`` columns and finite entries."""
    if sp.issparse(x):
        x = sp.csr_matrix(x, dtype=dtype)
        data = x.data
    else:
        x = np.asarray(x)
        if x.dtype.kind not in "fiub":
            raise DimensionMismatch(f"{op}: features must be numbers; got dtype {x.dtype}.")
        x = np.ascontiguousarray(x, dtype=dtype)
        data = x
    if x.ndim != 2 or x.shape[1] != width:
        raise DimensionMismatch(f"{op}: features must have shape (N, {width}); got {x.shape}.")
    if not np.isfinite(data).all():
        raise NumericalInstability(f"{op}: the features hold NaN or inf; remove or replace them.")
    return x


def matmul_input(x: Input, w: Array) -> Array:
    """``x @ w`` for a dense or sparse ``x`` (a dense result; an overflow is left to the caller's finiteness check)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(x @ w) if sp.issparse(x) else x @ w


def weight_grad(x: Input, dy: Array) -> Array:
    """``xᵀ dy`` for a dense or sparse ``x``."""
    return np.asarray(x.T @ dy) if sp.issparse(x) else x.T @ dy


_LINEAR_INITS = ("glorot", "gcn")


class Linear(Module):
    """``y = x W + b`` with ``W (in_features, out_features)``; ``x`` dense or sparse (CSR).  Zero ``b``; ``W`` is
    Glorot-uniform (``init="glorot"``, PyG's ``Linear(weight_initializer="glorot")``) or, with ``init="gcn"``,
    :math:`U(-1/\\sqrt{\\text{out}}, 1/\\sqrt{\\text{out}})`, the initialisation of pygcn (the GCN authors' PyTorch
    code), which :func:`~ruvattn.nn.grand_model`'s hidden layer uses.  (GRAND's code, built on pygcn, calls
    ``normal_(-stdv, stdv)`` instead: a normal draw with mean :math:`-1/\\sqrt{\\text{out}}`; on Cora it gave the same
    accuracy, see ``docs/research/dual_space.md``.)"""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 seed: int | np.random.Generator | None = None, dtype: Any = np.float32,
                 init: str = "glorot") -> None:  # fmt: skip
        dt = _float_dtype(dtype)
        if init not in _LINEAR_INITS:
            raise InvalidConfig(f"Linear: init must be one of {', '.join(map(repr, _LINEAR_INITS))}; got {init!r}.")
        rng = _rng(seed)
        self.in_features, self.out_features = int(in_features), int(out_features)
        shape = (self.in_features, self.out_features)
        if init == "glorot":
            w = glorot(rng, shape, dt)
        else:
            bound = 1.0 / math.sqrt(self.out_features)
            w = rng.uniform(-bound, bound, shape).astype(dt)
        self.weight = Parameter(w, "weight")
        self.bias = Parameter(np.zeros(self.out_features, dt), "bias") if bias else None
        self.init = init
        self._x: Input = None

    def forward(self, x: Input, graph: Any = None) -> Array:
        x = check_features("Linear", x, self.in_features, self.weight.data.dtype)
        self._x = x
        y = matmul_input(x, self.weight.data)
        return y + self.bias.data if self.bias is not None else y

    def backward(self, dy: Array, need_input_grad: bool = True) -> Array | None:
        x = _saved(self, self._x)
        self.weight.grad += weight_grad(x, dy)
        if self.bias is not None:
            self.bias.grad += dy.sum(0)
        if not need_input_grad or sp.issparse(x):
            return None
        return dy @ self.weight.data.T

    def __repr__(self) -> str:
        init = "" if self.init == "glorot" else f", init={self.init!r}"
        return f"Linear({self.in_features}, {self.out_features}, bias={self.bias is not None}{init})"


class Bias(Module):
    """``y = x + b``, a learned bias per channel ``b (channels,)`` (zero at the start) -- for a bias after a layer
    that has none, such as GRAND's hidden-layer bias after :class:`~ruvattn.nn.Propagation`."""

    def __init__(self, channels: int, dtype: Any = np.float32) -> None:
        if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1:
            raise InvalidConfig(f"Bias: channels must be a positive integer; got {channels!r}.")
        self.channels = int(channels)
        self.bias = Parameter(np.zeros(self.channels, _float_dtype(dtype)), "bias")

    def forward(self, x: Input, graph: Any = None) -> Array:
        if sp.issparse(x):  # before the check, which would copy it to CSR first
            raise InvalidConfig("Bias: x must be dense (adding a bias to a sparse matrix fills it).")
        return check_features("Bias", x, self.channels, self.bias.data.dtype) + self.bias.data

    def backward(self, dy: Array, need_input_grad: bool = True) -> Array | None:
        self.bias.grad += np.asarray(dy).sum(0)
        return dy if need_input_grad else None

    def __repr__(self) -> str:
        return f"Bias({self.channels})"


def softmax_cross_entropy(logits: Array, labels: Any, index: Any = None) -> tuple[float, Array]:
    """Mean cross-entropy of ``softmax(logits)`` against integer ``labels`` over the rows ``index`` (all rows when
    ``None``), and its gradient with respect to ``logits`` (zero on the other rows).

    Equal to ``torch.nn.functional.cross_entropy(logits[index], labels[index])``.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2:
        raise DimensionMismatch(f"softmax_cross_entropy: logits must be (N, classes); got {logits.shape}.")
    if labels.shape != (logits.shape[0],) or labels.dtype.kind not in "iu":
        raise DimensionMismatch(
            f"softmax_cross_entropy: labels must be {logits.shape[0]} integers; got {labels.shape} {labels.dtype}."
        )
    rows = np.arange(logits.shape[0]) if index is None else np.asarray(index, dtype=np.int64).ravel()
    if rows.size == 0:
        raise DimensionMismatch("softmax_cross_entropy: no rows to average over (empty index).")
    y = labels[rows]
    if y.min() < 0 or y.max() >= logits.shape[1]:
        bad = y[(y < 0) | (y >= logits.shape[1])][0]
        raise DimensionMismatch(
            f"softmax_cross_entropy: label {bad} is not a class id in [0, {logits.shape[1]}) "
            "(unlabelled nodes must not be in the index)."
        )
    z = logits[rows].astype(np.float64)
    z -= z.max(1, keepdims=True)
    lse = np.log(np.exp(z).sum(1))
    loss = float(np.mean(lse - z[np.arange(rows.size), y]))
    if not math.isfinite(loss):
        raise NumericalInstability("softmax_cross_entropy: the logits hold NaN or inf.")
    p = np.exp(z - lse[:, None])
    p[np.arange(rows.size), y] -= 1.0
    grad = np.zeros_like(logits)
    np.add.at(grad, rows, (p / rows.size).astype(logits.dtype))
    return loss, grad

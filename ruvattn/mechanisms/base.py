"""The mechanism contract: the :class:`Attention` base class, its shared parameters and the registry.

Every registered mechanism implements the same methods with the same shapes:

* ``forward(query, keys, values)`` -> ``(dv,)``; ``forward_batch(queries, keys, values)``
  -> ``(m, dv)``; ``forward_neighbours(queries, keys, values, neighbours)`` -> ``(N, dv)``
  (each node over its own rows of key/value tables; a node with no neighbours gets zeros);
* one weights method, :meth:`Attention.weights`, that always has a head axis: ``(H, n)`` for
  one query, ``(H, m, n)`` for a batch, ``(H, nnz)`` over neighbour lists (aligned with the
  ids); ``H = 1`` for single-head mechanisms.  The specification's ``attention_weights`` is
  its head mean ``(n,)``;
* ``prepare(keys, values)``: per-key-set work done once; ``forward(query, prepared)`` (values
  omitted) equals ``forward(query, keys, values)``;
* ``input_space`` and ``embed(x)``: where inputs live, and the one map of Euclidean rows into it;
* ``example()``: a tiny valid problem (used by warmup, the demo, the contract tests);
* parameters declared once (:mod:`ruvattn._params`) and learned state (``state_dict``,
  ``load_state_dict``, safetensors) for every mechanism holding learned or random arrays;
* ``backward``: the gradient hook (``supports_backward`` says whether it is implemented).

Subclasses implement :meth:`Attention.forward` and :meth:`Attention._weights_one`; the batch
and neighbour forms have correct (looping) defaults that fast mechanisms override.
``build({"type": "multi_head", "dim": 128, "num_heads": 4})`` makes any registered mechanism.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple, TypeVar

import numpy as np
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn._blas import one_thread
from ruvattn._params import Param, Parametrized
from ruvattn.compression.quantization import QuantizedTable
from ruvattn.errors import DimensionMismatch, InvalidConfig, NumericalInstability, Unsupported
from ruvattn.geometry import Euclidean, Manifold
from ruvattn.graph import NeighbourList, as_neighbours
from ruvattn.graph.metadata import GraphMetadata
from ruvattn.kernels import attention as K
from ruvattn.kernels import quant as KQ
from ruvattn.kernels import tiles as T

__all__ = [
    "DIM",
    "DROPOUT",
    "SCALE",
    "SEED",
    "TEMPERATURE",
    "Attention",
    "Complexity",
    "Example",
    "Prepared",
    "available",
    "build",
    "register",
]

Array = NDArray[np.floating]
_REGISTRY: dict[str, type[Attention]] = {}
_EUCLIDEAN = Euclidean()
_A = TypeVar("_A", bound="Attention")

# -- parameters many mechanisms share (declared once) ---------------------------------------
DIM = Param("dim", V.WIDTH, doc="query/key width (the specification's hidden_dim)", live=False)
SCALE = Param("scale", V.POSITIVE, None, "replaces 1/sqrt(dim) as the score scale", none=True)
TEMPERATURE = Param("temperature", V.POSITIVE, 1.0, "divides the scores (lower: sharper weights)")
DROPOUT = Param("dropout", V.PROBABILITY, 0.0, "probability of zeroing a weight in training mode")
SEED = Param("seed", V.SEED, 0, "seed of initialisation and randomness (None: fresh entropy)", none=True, live=False)


def register(kind: str) -> Callable[[type[_A]], type[_A]]:
    """Class decorator: make a mechanism buildable by name through :func:`build`."""

    def deco(cls: type[_A]) -> type[_A]:
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls

    return deco


def available() -> list[str]:
    """Names accepted by :func:`build`."""
    return sorted(_REGISTRY)


def mechanism_class(kind: str) -> type[Attention]:
    """The class registered under ``kind`` (:class:`InvalidConfig` listing the names otherwise)."""
    cls = _REGISTRY.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InvalidConfig(f"build: unknown mechanism type {kind!r}. Available: {', '.join(available())}.")
    return cls


def build(spec: Mapping[str, Any] | str) -> Attention:
    """Build a mechanism from ``{"type": name, **params}`` (or its JSON text).

    >>> from ruvattn import build
    >>> build({"type": "scaled_dot_product", "dim": 8}).hidden_dim
    8
    """
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as exc:
            raise InvalidConfig(f"build: the spec is not valid JSON ({exc}).") from None
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise InvalidConfig(f"build: spec must be a dict with a 'type' key; got {spec!r}.")
    return mechanism_class(spec["type"]).from_dict(spec)


_CHECKED_FORMS: set[Callable[..., Any]] = set()  # forward_batch/forward_neighbours wrappers already installed


def _check_widths(mech: Attention, op: str, queries: Any, keys: Any) -> None:
    """``queries (m, d)`` and raw ``keys (n, d)`` of the mechanism's width ``d`` (cheap: shapes only)."""
    d = mech.hidden_dim
    qs = np.shape(queries) if isinstance(queries, np.ndarray) else np.shape(np.asarray(queries, dtype=object))
    if len(qs) == 2 and qs[1] != d:
        raise DimensionMismatch(f"{op}: queries has shape {qs}, expected (m, {d}).")
    if _raw(keys):
        ks = np.shape(keys) if isinstance(keys, np.ndarray) else np.shape(np.asarray(keys, dtype=object))
        if len(ks) == 2 and ks[1] != d:
            raise DimensionMismatch(f"{op}: keys has shape {ks}, expected (n, {d}).")


def _checked_form(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    if name == "forward_batch":

        @functools.wraps(fn)
        def forward_batch(self: Attention, queries: Any, keys: Any, values: Any = None, *args: Any, **kw: Any) -> Any:
            _check_widths(self, f"{self.kind}.forward_batch", queries, keys)
            return fn(self, queries, keys, values, *args, **kw)

        return forward_batch

    @functools.wraps(fn)
    def forward_neighbours(self: Attention, queries: Any, keys: Any, values: Any, *args: Any, **kw: Any) -> Any:
        op = f"{self.kind}.forward_neighbours"
        if values is None and _raw(keys):
            raise V.values_required(op)
        neighbours = args[0] if args else kw.get("neighbours")
        if neighbours is None:
            raise DimensionMismatch(f"{op}: neighbours are required (a NeighbourList, CSR pair or padded ids).")
        _check_widths(self, op, queries, keys)
        if _has_table(keys, values) and not self._reads_quantized(keys, values):
            keys, values, nl = _float_rows(op, queries, keys, values, neighbours)
            args, kw = ((nl, *args[1:]), kw) if args else (args, {**kw, "neighbours": nl})
        return fn(self, queries, keys, values, *args, **kw)

    return forward_neighbours


def _has_table(keys: Any, values: Any) -> bool:
    return type(keys) is QuantizedTable or type(values) is QuantizedTable


def _native(keys: Any, values: Any) -> bool:
    """Keys an INT8/INT4 table, values one too or ``None`` (weights only): the quantised kernels read them."""
    return (
        type(keys) is QuantizedTable
        and keys.readable_in_kernels
        and (values is None or (type(values) is QuantizedTable and values.readable_in_kernels))
    )


def _float_rows(op: str, queries: Any, keys: Any, values: Any, neighbours: Any) -> tuple[Any, Any, NeighbourList]:
    """For a mechanism that does not read quantised tables: float rows of only what the neighbour form can
    read -- rows ``0..N-1`` (node ``i``'s own row, which self loops use) and the rows the lists name --
    and the lists re-numbered into them.  Never a float copy of a whole large table."""
    n_nodes, n_keys = int(np.shape(queries)[0]), int(np.shape(keys)[0])
    nl = as_neighbours(op, neighbours, n_nodes, n_keys)
    own = min(n_nodes, n_keys)
    extra = np.unique(nl.indices[nl.indices >= own])
    rows = np.concatenate([np.arange(own, dtype=np.int64), extra])
    idx = nl.indices.copy()
    far = idx >= own
    idx[far] = own + np.searchsorted(extra, idx[far])

    def pick(t: Any) -> Any:
        if t is None:
            return None
        if type(t) is QuantizedTable:
            return t.dequantize(rows)
        return V.as_array(t, op, "values" if t is values else "keys", 2)[rows]

    return pick(keys), pick(values), NeighbourList(nl.indptr, idx, int(rows.size))


def _raw(keys: Any) -> bool:
    """Keys given as a plain array or list (not a prepared form that carries its values)."""
    return isinstance(keys, np.ndarray) or type(keys) in (list, tuple)


def _finite_weights(op: str, w: Array) -> Array:
    """Weights are never NaN: a score that overflowed is :class:`NumericalInstability`, as in forward."""
    if not np.isfinite(w).all():
        raise NumericalInstability(
            f"{op}: a score overflowed (inputs are finite but too large, or the temperature too small). "
            "Scale the inputs down or use float64."
        )
    return w


@functools.cache
def _option_names(fn: Callable[..., Any]) -> frozenset[str] | None:
    """The keyword options a weights hook takes (None: it takes any, ``**kwargs``)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind is p.KEYWORD_ONLY)


def _check_options(op: str, fn: Callable[..., Any], kwargs: dict[str, Any], form: str) -> None:
    names = _option_names(fn)
    if names is not None:
        extra = sorted(k for k, v in kwargs.items() if k not in names and v is not None)
        if extra:
            raise Unsupported(f"{op}: {', '.join(extra)}= is not supported for {form}; pass one query at a time.")


class Gradients(NamedTuple):
    """Gradients of a scalar loss with respect to the inputs of one forward call, and (``params``) to the
    mechanism's learned arrays by state-dict name (empty for a mechanism without any)."""

    query: Array
    keys: Array
    values: Array
    params: Mapping[str, Array] = MappingProxyType({})
    edge_features: Array | None = None
    """With respect to the edge features, for a mechanism that takes them (GAT layers with ``edge_dim``)."""


def softmax_attention_grads(
    q: Array, k: Array, v: Array, p: Array, g: Array, scale: float
) -> tuple[Array, Array, Array]:
    r"""``(dq, dk, dv)`` of ``sum(g * (p @ v))`` with ``p = softmax(scale q kᵀ)`` (removed keys: ``p = 0``):
    :math:`dP = G V^\top`, :math:`dS = P \odot (dP - \operatorname{rowsum}(P \odot dP))`,
    :math:`\nabla_q = c\,dS\,K`, :math:`\nabla_k = c\,dS^\top Q`, :math:`\nabla_v = P^\top G`."""
    dp = g @ v.T
    ds = p * (dp - (p * dp).sum(axis=1, keepdims=True))
    return (ds @ k) * scale, (ds.T @ q) * scale, p.T @ g


class Complexity(str):
    """The specification's ``Complexity``: a description (the string itself) and its ``kind`` in the
    number of keys ``n`` -- ``"linear"``, ``"linearithmic"``, ``"quadratic"`` or ``"custom"``.

    >>> c = Complexity("linear", "O(n·d) time per query")
    >>> c.kind, str(c)
    ('linear', 'O(n·d) time per query')
    """

    kind: str

    def __new__(cls, kind: str, text: str) -> Complexity:
        if kind not in ("linear", "linearithmic", "quadratic", "custom"):
            raise InvalidConfig(f"Complexity: kind must be linear, linearithmic, quadratic or custom; got {kind!r}.")
        obj = super().__new__(cls, text)
        obj.kind = kind
        return obj


class Prepared(NamedTuple):
    """Keys and values prepared once by :meth:`Attention.prepare` (the default: validated arrays)."""

    keys: Array
    values: Array
    owner: Any
    version: int


class Example(NamedTuple):
    """A tiny valid problem for one mechanism (:meth:`Attention.example`)."""

    mechanism: Attention
    query: Array  # (d,)
    queries: Array  # (m, d)
    keys: Array  # (n, d)
    values: Array  # (n, dv)
    neighbours: NeighbourList  # N = m nodes over the n keys


class Attention(Parametrized, ABC):
    """Base class of every attention mechanism (the contract: see the module docstring)."""

    kind: ClassVar[str] = "attention"
    #: The keyword options :meth:`forward` takes besides query/keys/values (``mask``, ``bias``,
    #: ``ids``, ``edge_features``, ...): a mixture passes each expert only its own.
    forward_options: ClassVar[frozenset[str]] = frozenset()
    #: Whether :meth:`forward` over an empty key set raises :class:`~ruvattn.errors.EmptyInput`
    #: (False where an empty neighbourhood has a defined output, as GAT's bias for an isolated node).
    empty_keys_raise: ClassVar[bool] = True
    #: Whether :meth:`backward` is implemented (the training hook).
    supports_backward: ClassVar[bool] = False
    #: state-dict entries that are drawn or fixed rather than learned: ``backward`` gives them no gradient
    fixed_state: frozenset[str] = frozenset()
    #: The :class:`~ruvattn.graph.GraphMetadata` fields :meth:`forward_with_metadata` can read (empty: the
    #: mechanism takes no graph metadata).
    metadata_fields: ClassVar[tuple[str, ...]] = ()
    #: Whether the mechanism's kernels read INT8/INT4 :class:`~ruvattn.compression.QuantizedTable` codes
    #: directly; the others get float rows (the whole table for one query or a batch, only the rows named
    #: by the lists for the neighbour form).
    reads_quantized: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every ``forward_batch`` / ``forward_neighbours`` a mechanism defines first checks what holds for
        all of them, so no mechanism can forget it: query and raw key widths (even when there is nothing to
        compute, e.g. zero queries), ``values=None`` only with prepared keys (values are never taken from
        the keys or silently dropped), and ``neighbours`` given."""
        super().__init_subclass__(**kwargs)
        for name in ("forward_batch", "forward_neighbours"):
            fn = cls.__dict__.get(name)
            if fn is not None and fn not in _CHECKED_FORMS:
                wrapped = _checked_form(name, fn)
                _CHECKED_FORMS.add(wrapped)
                type.__setattr__(cls, name, wrapped)

    def train(self: _A, mode: bool = True) -> _A:
        """Training mode turns on dropout / noise (if configured); returns ``self``."""
        self.training = bool(mode)
        return self

    def eval(self: _A) -> _A:
        """Inference mode: deterministic outputs."""
        return self.train(False)

    # -- the one weights method ------------------------------------------------------
    def weights(self, query: Any, keys: Any, *, neighbours: Any = None, **kwargs: Any) -> Array:
        """Attention weights with a head axis (``H = 1`` for single-head mechanisms).

        * ``query (d,)`` -> ``(H, n)``;
        * ``queries (m, d)`` -> ``(H, m, n)``;
        * ``queries (N, d)`` with ``neighbours=`` (CSR, padded ids or a
          :class:`~ruvattn.graph.NeighbourList`) -> ``(H, nnz)``, aligned with the ids.

        Keyword arguments (``mask``, ``bias``, ``ids``, ...) are those of :meth:`forward`.
        Each row sums to 1 per head (a neighbour-less node has no entries).
        """
        op = f"{self.kind}.weights"
        if neighbours is not None:
            _check_widths(self, op, query, keys)
            _check_options(op, type(self)._weights_neighbours, kwargs, "neighbour lists")
            if _has_table(keys, None) and not self._reads_quantized(keys, None):
                keys, _, neighbours = _float_rows(op, query, keys, None, neighbours)
            w = self._weights_neighbours(op, query, keys, neighbours, **kwargs)
        elif np.ndim(query) == 2:
            _check_widths(self, op, query, keys)
            _check_options(op, type(self)._weights_batch, kwargs, "a batch of queries")
            w = self._weights_batch(op, query, keys, **kwargs)
        else:
            w = self._weights_one(op, query, keys, **kwargs)
        return _finite_weights(op, w)

    def attention_weights(self, query: Any, keys: Any, **kwargs: Any) -> Array:
        """The specification's weights ``(n,)`` of one query: :meth:`weights` averaged over heads."""
        op = f"{self.kind}.attention_weights"
        w = _finite_weights(op, self._weights_one(op, query, keys, **kwargs))
        return w[0] if w.shape[0] == 1 else w.mean(axis=0)

    @abstractmethod
    def _weights_one(self, op: str, query: Any, keys: Any, **kwargs: Any) -> Array:
        """``(H, n)`` weights of one query."""

    def _weights_batch(self, op: str, queries: Any, keys: Any, **kwargs: Any) -> Array:
        """``(H, m, n)``: one :meth:`_weights_one` per query (mechanisms with a batched kernel override)."""
        qs = V.as_array(queries, op, "queries", 2)
        k = self._check_keys(op, keys)
        rows = [self._weights_one(op, q, k, **_row_kwargs(kwargs, i, qs.shape[0])) for i, q in enumerate(qs)]
        if not rows:
            return np.empty((self.num_weight_heads, 0, k.shape[0]), qs.dtype)
        return np.stack(rows, axis=1)

    def _weights_neighbours(self, op: str, queries: Any, keys: Any, neighbours: Any, **kwargs: Any) -> Array:
        """``(H, nnz)``: node ``i``'s weights over its own rows (looping default)."""
        qs = V.as_array(queries, op, "queries", 2)
        k = self._check_keys(op, keys)
        nl = as_neighbours(op, neighbours, qs.shape[0], k.shape[0])
        out = np.zeros((self.num_weight_heads, nl.nnz), np.result_type(qs.dtype, k.dtype))
        for i in range(nl.num_nodes):
            lo, hi = nl.indptr[i], nl.indptr[i + 1]
            if hi > lo:
                out[:, lo:hi] = self._weights_one(op, qs[i], k[nl.indices[lo:hi]], **kwargs)
        return out

    @property
    def num_weight_heads(self) -> int:
        """``H`` of :meth:`weights` (1 unless the mechanism has several heads)."""
        return 1

    def _reads_quantized(self, keys: Any, values: Any) -> bool:
        """Whether this call's tables go to the quantised kernels (:attr:`reads_quantized`, INT8/INT4 tables,
        no dropout: dropout re-weights float rows)."""
        return self.reads_quantized and _native(keys, values) and not self._dropping

    def _check_keys(self, op: str, keys: Any) -> Array:
        if isinstance(keys, Prepared):
            return keys.keys
        return V.as_array(keys, op, "keys", 2)

    # -- forms of the forward pass ---------------------------------------------------
    @abstractmethod
    def forward(self, query: Any, keys: Any, values: Any = None, **kwargs: Any) -> Array:
        """Output ``(dv,)`` of one query over ``keys (n, d)`` / ``values (n, dv)``."""

    def forward_batch(self, queries: Any, keys: Any, values: Any = None, **kwargs: Any) -> Array:
        """Many queries ``(m, d)`` over one key set -> ``(m, dv)`` (looping default)."""
        op = f"{self.kind}.forward_batch"
        qs = V.as_array(queries, op, "queries", 2)
        prepared = keys if isinstance(keys, Prepared) or values is None else self.prepare(keys, values)
        rows = [self.forward(q, prepared, **_row_kwargs(kwargs, i, qs.shape[0])) for i, q in enumerate(qs)]
        if not rows:
            v = self._unprepare(op, keys, values)[1]
            return np.empty((0, v.shape[1]), np.result_type(qs.dtype, v.dtype))
        return np.stack(rows)

    def forward_neighbours(self, queries: Any, keys: Any, values: Any, neighbours: Any) -> Array:
        """Node ``i`` (query row ``i``) over its own neighbour rows of the key/value tables -> ``(N, dv)``.

        ``neighbours``: a :class:`~ruvattn.graph.NeighbourList`, ``(indptr, indices)``, a scipy
        CSR matrix, or padded ``(N, k)`` ids with -1 for empty slots.  A node with no neighbours
        gets a zero output row.  (Looping default; kernels override it.)
        """
        op = f"{self.kind}.forward_neighbours"
        qs = V.as_array(queries, op, "queries", 2)
        k, v = self._unprepare(op, keys, values)
        nl = as_neighbours(op, neighbours, qs.shape[0], k.shape[0])
        dt = np.result_type(qs.dtype, k.dtype, v.dtype)
        out = np.zeros((nl.num_nodes, v.shape[1]), dt)
        for i in range(nl.num_nodes):
            ids = nl.indices[nl.indptr[i] : nl.indptr[i + 1]]
            if ids.size:
                out[i] = self.forward(qs[i], k[ids], v[ids])
        return out

    def forward_with_metadata(
        self, query: Any, keys: Any, values: Any, metadata: GraphMetadata, **kwargs: Any
    ) -> Array:
        """The specification's graph-aware form: :meth:`forward` with options read from ``metadata`` (a
        :class:`~ruvattn.graph.GraphMetadata` describing the ``n`` keys) by the mechanism's own
        :meth:`_metadata_options` -- which fields it reads is :attr:`metadata_fields`.  A field it needs and
        does not get is :class:`~ruvattn.errors.InvalidConfig` naming it; a mechanism that reads none raises
        :class:`~ruvattn.errors.Unsupported` listing those that do."""
        op = f"{self.kind}.forward_with_metadata"
        if not isinstance(metadata, GraphMetadata):
            raise InvalidConfig(f"{op}: metadata must be a GraphMetadata; got {type(metadata).__name__}.")
        if not self.metadata_fields:
            users = ", ".join(k for k in available() if _REGISTRY[k].metadata_fields)
            raise Unsupported(f"{op}: {type(self).__name__} reads no graph metadata; mechanisms that do: {users}.")
        n = self._check_keys(op, keys).shape[0]
        options = self._metadata_options(op, metadata, n)
        clash = sorted(set(options) & set(kwargs))
        if clash:
            raise InvalidConfig(f"{op}: {', '.join(clash)} comes from the metadata; do not pass it as well.")
        return self.forward(query, keys, values, **options, **kwargs)

    def _metadata_options(self, op: str, metadata: GraphMetadata, n: int) -> dict[str, Any]:
        """The :meth:`forward` options ``metadata`` gives for ``n`` keys (mechanisms with
        :attr:`metadata_fields` override it)."""
        return {}

    # -- per-key-set work, spaces, examples ------------------------------------------
    def prepare(self, keys: Any, values: Any) -> Any:
        """Do the per-key-set work once; pass the result as ``keys`` (values omitted).

        The default validates and converts the arrays once (:class:`Prepared`); mechanisms with
        real per-key-set work (projections, summaries) return their own form.
        """
        op = f"{self.kind}.prepare"
        if not isinstance(keys, Prepared) and self._reads_quantized(keys, values):
            self._check_tables(op, keys, values)
            return Prepared(keys, values, self, self.state_version)  # the codes stay as they are
        k, v = self._unprepare(op, keys, values)
        if not isinstance(keys, Prepared):  # once per key set: a prepared form never holds NaN/inf
            V.check_finite(op, keys=k, values=v)
        return Prepared(k, v, self, self.state_version)

    def _kv(self, op: str, keys: Any, values: Any) -> tuple[Any, Any]:
        """``(keys, values)`` as given, unpacked from :class:`Prepared` keys when ``values`` is omitted."""
        if values is None or isinstance(keys, Prepared):
            return self._unprepare(op, keys, values)
        return keys, values

    def _unprepare(self, op: str, keys: Any, values: Any) -> tuple[Array, Array]:
        """``(keys, values)`` from raw arrays or a :class:`Prepared` of this mechanism."""
        if isinstance(keys, Prepared):
            if values is not None:
                raise V.values_with_prepared(op)
            if keys.owner is not self or keys.version != self.state_version:
                raise V.stale_prepared(op)
            return keys.keys, keys.values
        if values is None:
            raise V.values_required(op)
        return self._key_value_tables(op, keys, values)

    def _key_value_tables(self, op: str, keys: Any, values: Any) -> tuple[Array, Array]:
        """Validated ``keys (n, d)`` and ``values (n, dv)`` as C-contiguous arrays of one dtype."""
        k = V.as_array(keys, op, "keys", 2)
        v = V.as_array(values, op, "values", 2)
        dt = V.common_dtype(k, v)
        k, v = k.astype(dt, copy=False), v.astype(dt, copy=False)
        V.check_width(op, "keys", k, self.hidden_dim)
        V.check_keys_values(op, k, v)
        return k, v

    @property
    def _space(self) -> Manifold:
        """The manifold queries, keys and values live on (Euclidean space unless overridden)."""
        return _EUCLIDEAN

    @property
    def input_space(self) -> str:
        """Where inputs live: ``"euclidean"``, ``"poincare"``, ``"sphere"``, ``"lorentz"`` or ``"product"``."""
        return self._space.name

    def embed(self, x: Any) -> Array:
        """Map Euclidean rows ``(n, d)`` into :attr:`input_space` (identity for Euclidean mechanisms).

        Non-Euclidean spaces scale the rows and map them through the exponential map at the origin
        (:meth:`ruvattn.geometry.Manifold.embed`), so any data set becomes a valid input.
        """
        op = f"{self.kind}.embed"
        arr = V.as_array(x, op, "x", 2)
        V.check_width(op, "x", arr, self.hidden_dim)
        V.check_finite(op, x=arr)
        return self._space.embed(arr)

    @classmethod
    def example(cls, dtype: Any = np.float64, seed: int = 0, dim: int = 8) -> Example:
        """A tiny valid problem: the mechanism of :meth:`example_params`, 5 queries over 12 keys (mapped into
        :attr:`input_space`), 3 neighbours each."""
        mech = cls(**cls.example_params(dim))
        return mech._example_data(np.dtype(dtype), seed)

    @classmethod
    def example_params(cls, dim: int = 8, heads: int | None = None) -> dict[str, Any]:
        """Constructor arguments of a small working instance of width ``dim`` (``heads`` where there are heads).

        Every tool that needs "one of each mechanism" (warmup, the demo, ``analyze``, the contract tests)
        starts from these and overrides parameters by name.
        """
        return {"dim": dim}

    def _example_data(self, dtype: np.dtype, seed: int) -> Example:
        rng = np.random.default_rng(seed)
        d = self.hidden_dim
        keys = self.embed(rng.standard_normal((12, d))).astype(dtype)
        queries = self.embed(rng.standard_normal((5, d))).astype(dtype)
        values = self.embed(rng.standard_normal((12, self._example_value_dim()))).astype(dtype)
        ids = np.stack([rng.permutation(12)[:3] for _ in range(5)])
        return Example(self, queries[0].copy(), queries, keys, values, NeighbourList.from_padded(ids, 12))

    def _example_value_dim(self) -> int:
        return self.hidden_dim

    def _warmup(self, ex: Example) -> None:
        """Exercise entry points beyond the contract's forms (other parameter variants, extra methods) so that
        :func:`ruvattn.warmup` compiles their kernels too; nothing by default."""

    # -- gradients (the training hook) -----------------------------------------------
    def backward(self, query: Any, keys: Any, values: Any, grad_output: Any, **kwargs: Any) -> Any:
        """Gradients of ``sum(grad_output * forward(query, keys, values, **kwargs))``: a :class:`Gradients` with the
        gradients with respect to ``query`` (one ``(d,)`` or a batch ``(m, d)``, the shape of ``forward`` or
        ``forward_batch``), ``keys``, ``values`` and, in ``params``, every learned array by its state-dict name.

        Implemented where ``supports_backward`` is true; elsewhere it raises
        :class:`~ruvattn.errors.Unsupported`.
        """
        raise Unsupported(f"{type(self).__name__}.backward: gradients are not implemented for this mechanism yet "
                          "(supports_backward is False).")  # fmt: skip

    def backward_neighbours(
        self, queries: Any, keys: Any, values: Any, neighbours: Any, grad_output: Any, *, edge_features: Any = None
    ) -> Gradients:
        """Gradients of ``sum(grad_output * forward_neighbours(queries, keys, values, neighbours))``: node ``i``'s
        :meth:`backward` over its own rows ``keys[ids_i]``/``values[ids_i]`` (the contract's definition of that
        form), scattered into the key and value tables; ``params`` summed over the nodes.  A node without
        neighbours has a zero output row, so zero gradients.  ``edge_features (nnz, edge_dim)`` in CSR order for a
        mechanism that takes them (GAT layers).  A loop over nodes in Python: for whole-graph training use the
        :mod:`ruvattn.nn` layers, whose kernels run every node at once."""
        op = f"{self.kind}.backward_neighbours"
        if not self.supports_backward:
            self.backward(None, None, None, None)  # raises Unsupported with the mechanism's own message
        if values is None:
            raise V.values_required(op, "the gradient with respect to the values")
        extra_all = {} if edge_features is None else {"edge_features": edge_features}
        out = self.forward_neighbours(queries, keys, values, neighbours, **extra_all)
        dt = out.dtype
        qs = V.as_array(queries, op, "queries", 2)
        k = V.as_array(keys, op, "keys", 2)
        v = V.as_array(values, op, "values", 2)
        nl = as_neighbours(op, neighbours, qs.shape[0], k.shape[0])
        g = self._upstream(op, grad_output, out.shape[0], out.shape[1], False, dt)
        ef = None if edge_features is None else np.asarray(edge_features)
        dq, dk, dv = np.zeros(qs.shape), np.zeros(k.shape), np.zeros(v.shape)
        de = None if ef is None else np.zeros(ef.shape)
        params = {n: np.zeros(a.shape) for n, a in self.state_dict().items() if n not in self.fixed_state}
        for i in range(qs.shape[0]):
            lo, hi = int(nl.indptr[i]), int(nl.indptr[i + 1])
            if hi == lo:
                continue
            ids = nl.indices[lo:hi]
            extra = {} if ef is None else {"edge_features": ef[lo:hi]}
            gr = self.backward(qs[i], k[ids], v[ids], g[i], **extra)
            dq[i] = gr.query
            np.add.at(dk, ids, gr.keys)
            np.add.at(dv, ids, gr.values)
            if de is not None and gr.edge_features is not None:
                de[lo:hi] = gr.edge_features
            for name, a in gr.params.items():
                params[name] += a
        gq, gk, gv = (V.check_output(op, a.astype(dt), dt) for a in (dq, dk, dv))
        grads = {n: V.check_output(op, a.astype(dt), dt) for n, a in params.items()}
        return Gradients(gq, gk, gv, grads, None if de is None else de.astype(dt))

    def _upstream(self, op: str, grad_output: Any, rows: int, width: int, single: bool, dt: np.dtype) -> Array:
        """``grad_output`` as ``(rows, width)`` of ``dt``; a wrong shape or a NaN/inf entry is an error."""
        if self._dropping:
            raise Unsupported(f"{op}: gradients through dropout are not available; call .eval() first.")
        g = V.as_array(np.atleast_2d(grad_output), op, "grad_output", 2, dt)
        if g.shape != (rows, width):
            want = (width,) if single else (rows, width)
            raise DimensionMismatch(f"{op}: grad_output has shape {np.shape(grad_output)}, expected {want}.")
        V.check_finite(op, grad_output=g)  # a NaN upstream gradient is an error, never NaN gradients
        return g

    @property
    def _dropping(self) -> bool:
        return bool(self.training and getattr(self.config, "dropout", 0.0))

    # -- the specification's properties -----------------------------------
    @property
    def hidden_dim(self) -> int:
        return int(self.config.dim)

    @property
    def supports_variable_length(self) -> bool:
        return True

    @property
    def complexity(self) -> Complexity:
        """The specification's complexity class in the number of keys, with a description."""
        return Complexity("linear", "O(n·d) time, O(n) memory per query")

    @property
    def _op(self) -> str:
        return self.kind

    def _base_scale(self, d: int) -> float:
        """``scale / temperature`` with ``scale`` defaulting to ``1/sqrt(d)``; subclasses may change it."""
        scale = getattr(self.config, "scale", None)
        base = 1.0 / math.sqrt(d) if scale is None else float(scale)
        return base / float(getattr(self.config, "temperature", 1.0))

    def _scale(self, d: int) -> float:
        """:meth:`_base_scale`, cached per config."""
        return float(self._typed_scale(d, _F64))

    def _typed_scale(self, d: int, dt: np.dtype) -> np.floating:
        """The scale as a numpy scalar of ``dt`` (what the kernels take), cached per config and dtype."""
        cache = self.__dict__.get("_scale_cache")
        if cache is None or cache[0] is not self.config:
            cache = self._scale_cache = (self.config, {})
        value = cache[1].get((d, dt))
        if value is None:
            value = cache[1][(d, dt)] = dt.type(self._base_scale(d))
        return value

    # -- shared machinery: one query, many queries, neighbour lists ---------
    #: the last (keys, values) pair found C-contiguous by :meth:`_plain_arrays` (held until the next pair)
    _contiguous: tuple[Any, Any] = (None, None)

    def _plain_arrays(self, query: Any, keys: Any, values: Any) -> np.dtype | None:
        """The dtype when ``query (d,)``, ``keys (n, d)`` and ``values (n, dv)`` are C-contiguous
        float32/float64 numpy arrays of one dtype (the hot path's check: a few attribute reads), else ``None``."""
        if type(query) is _NDARRAY and type(keys) is _NDARRAY and type(values) is _NDARRAY:
            dt = query.dtype
            if (dt is _F32 or dt is _F64) and keys.dtype is dt and values.dtype is dt:
                ks, vs, d = keys.shape, values.shape, self.config.dim
                if (
                    len(ks) == 2
                    and len(vs) == 2
                    and ks[1] == d
                    and ks[0] == vs[0]
                    and query.shape == (d,)
                    and query.flags.carray
                ):  # carray: C-contiguous, aligned, writeable (any other layout: the general path copies it)
                    seen = self._contiguous
                    if keys is seen[0] and values is seen[1]:  # a layout never changes: checked once per pair
                        return dt
                    if keys.flags.carray and values.flags.carray:
                        self._contiguous = (keys, values)
                        return dt
        return None

    def _tables(
        self, op: str, queries: Any, keys: Any, values: Any, name: str = "queries"
    ) -> tuple[Array, Array, Array, np.dtype]:
        """Validated ``(queries, keys, values, dtype)``: one dtype, widths checked, one value per key.

        ``name == "query"`` takes a single ``(d,)`` query, else ``(m, d)``; ``values=None`` means
        "weights only" and returns the keys in its place.
        """
        d = self.hidden_dim
        qs = V.as_array(queries, op, name, 1 if name == "query" else 2)
        k = V.as_array(keys, op, "keys", 2)
        v = V.as_array(values, op, "values", 2) if values is not None else k
        dt = V.common_dtype(qs, k, v)
        if qs.dtype is not dt or k.dtype is not dt or v.dtype is not dt:
            qs, k, v = (a.astype(dt, copy=False) for a in (qs, k, v))
        V.check_width(op, name, qs, d)
        V.check_width(op, "keys", k, d)
        V.check_keys_values(op, k, v)
        return qs, k, v, dt

    @staticmethod
    def _key_rows(op: str, ids: Any, keys: Array) -> tuple[NDArray[np.int64] | None, int]:
        """``(ids as int64, number of keys)`` for ``ids=`` rows of a key table, or ``(None, len(keys))``."""
        if ids is None:
            return None, keys.shape[0]
        idx = V.as_ids(op, ids, keys.shape[0])
        return idx, idx.size

    def _one(
        self,
        op: str,
        query: Any,
        keys: Any,
        values: Any,
        mask: Any,
        bias: Any,
        ids: Any,
        heads: int,
        scale: float,
    ) -> tuple[Array, Array, Array]:
        """Validate and run one query; returns ``(output, weights (heads, n), lse (heads,))``."""
        if heads == 1 and _native(keys, values):
            return self._quantized_one(op, query, keys, values, mask, bias, ids, scale)
        q, k, v, dt = self._tables(op, query, keys, values, "query")
        idx, n = self._key_rows(op, ids, k)
        w = np.empty((heads, n), dt)
        out = np.empty(v.shape[1] if values is not None else 0, dt)
        lse = np.empty(heads, dt)
        sc = dt.type(scale)
        b = None
        if idx is None and mask is None and bias is None and values is not None:
            status = K.attend_one(q, k, v, heads, sc, w, out, lse)
        else:
            keep = V.as_keep(op, mask, (n,)) if mask is not None else _NO_KEEP
            b = V.as_bias(op, bias, (n,), dt) if bias is not None else q
            ids_ = idx if idx is not None else _NO_IDS
            if values is None:
                status = K.attend_weights(
                    q, k, ids_, idx is not None, keep, mask is not None, b, bias is not None, heads, sc, w, lse
                )
            else:
                status = K.attend_one_general(
                    q, k, v, ids_, idx is not None, keep, mask is not None, b, bias is not None, heads, sc, w, out, lse
                )
        if status:
            V.raise_for_status(op, status, query=q, keys=k, values=v, bias=None if bias is None else b, ids=idx)
        return out, w, lse

    def _many(
        self,
        op: str,
        queries: Any,
        keys: Any,
        values: Any,
        mask: Any,
        bias: Any,
        heads: int,
        scale: float,
        want_weights: bool,
    ) -> tuple[Array, Array | None, Array]:
        """Many queries over one key set: ``(outputs, weights (m, heads, n) or None, lse (m, heads))``."""
        if heads == 1 and _native(keys, values):
            return self._quantized_many(op, queries, keys, values, mask, bias, scale, want_weights)
        qs, k, v, dt = self._tables(op, queries, keys, values)
        m, n = qs.shape[0], k.shape[0]
        keep, keep_mode = _mode_array(op, "mask", mask, m, n, None)
        b, bias_mode = _mode_array(op, "bias", bias, m, n, dt)
        w = np.empty((m, heads, n), dt) if want_weights else np.empty((1, heads, 1), dt)
        out = np.empty((m, v.shape[1]), dt)
        lse = np.empty((m, heads), dt)
        status = np.empty(m, np.int8)
        if m >= T.MIN_QUERIES:  # query blocks against key tiles (kernels/tiles.py)
            rows, keys_per_tile = T.tile_shape(k.shape[1] // heads, v.shape[1] // heads, queries=m)
            sc = dt.type(scale)
            if m <= rows:  # one block: its serial kernel on this thread (a BLAS thread pool is no oversubscription)
                bad = T.many_block(qs, k, v, heads, keep, keep_mode, b, bias_mode, sc, keys_per_tile, w, want_weights,
                                   values is not None, out, lse, status, 0, m)  # fmt: skip
            else:
                with one_thread():
                    T.attend_many_tiled(qs, k, v, heads, keep, keep_mode, b, bias_mode, sc, rows, keys_per_tile, w,
                                        want_weights, values is not None, out, lse, status)  # fmt: skip
                bad = status.any()
        else:
            K.attend_many(qs, k, v, keep, keep_mode, b, bias_mode, heads, dt.type(scale), w, want_weights, out, lse,
                          status, K.chunk_size(m))  # fmt: skip
            bad = status.any()
        if bad:
            V.raise_for_status(op, status, query=qs, keys=k, values=v, bias=b if bias_mode else None)
        return out, (w if want_weights else None), lse

    def _neighbours(
        self,
        op: str,
        queries: Any,
        keys: Any,
        values: Any,
        neighbours: Any,
        heads: int,
        scale: float,
        want_weights: bool,
    ) -> tuple[Array, Array | None, Array, NeighbourList]:
        if heads == 1 and _native(keys, values):
            return self._quantized_neighbours(op, queries, keys, values, neighbours, scale, want_weights)
        qs, k, v, dt = self._tables(op, queries, keys, values)
        nl = as_neighbours(op, neighbours, qs.shape[0], k.shape[0])
        w = np.empty(heads * nl.nnz if want_weights else 0, dt)
        out = np.empty((qs.shape[0], v.shape[1]), dt)
        lse = np.empty((qs.shape[0], heads), dt)
        status = np.empty(qs.shape[0], np.int8)
        K.attend_csr(qs, k, v, nl.indptr, nl.indices, heads, dt.type(scale), w, want_weights, out, lse, status,
                     K.chunk_size(qs.shape[0]))  # fmt: skip
        if status.any():
            V.raise_for_status(op, status, query=qs, keys=k, values=v, empty_ok=True)
        return out, (_edge_major(w, nl, heads) if want_weights else None), lse, nl

    # -- quantised tables (INT8 / INT4 codes read by the kernels of ruvattn.kernels.quant) ----------
    def _check_tables(self, op: str, keys: QuantizedTable, values: QuantizedTable | None) -> None:
        d = self.hidden_dim
        if keys.dim != d:
            raise DimensionMismatch(f"{op}: keys has shape {keys.shape}, expected (n, {d}).")
        if values is not None and values.shape[0] != keys.shape[0]:
            raise DimensionMismatch(
                f"{op}: keys has {keys.shape[0]} rows but values has {values.shape[0]}; give one value row per key."
            )

    def _quantized_query(self, op: str, queries: Any, ndim: int) -> NDArray[np.float32]:
        name = "query" if ndim == 1 else "queries"
        q = V.as_array(queries, op, name, ndim, _F32)
        V.check_width(op, name, q, self.hidden_dim)
        return q

    def _quantized_one(
        self, op: str, query: Any, keys: QuantizedTable, values: QuantizedTable | None, mask: Any, bias: Any,
        ids: Any, scale: float,
    ) -> tuple[Array, Array, Array]:  # fmt: skip
        """:meth:`_one` over quantised tables (computed in float32)."""
        self._check_tables(op, keys, values)
        q = self._quantized_query(op, query, 1)
        idx, n = self._key_rows(op, ids, keys)
        w = np.empty(n, _F32)
        out = np.empty(values.dim if values is not None else 0, _F32)
        lse = np.empty(1, _F32)
        keep = V.as_keep(op, mask, (n,)) if mask is not None else _NO_KEEP
        b = V.as_bias(op, bias, (n,), _F32) if bias is not None else q
        vt = values if values is not None else keys
        status = KQ.q_attend_one(q, *keys.kernel_args(), *vt.kernel_args(), idx if idx is not None else _NO_IDS,
                                 idx is not None, keep, mask is not None, b, bias is not None, _F32.type(scale),
                                 values is not None, w, out, lse)  # fmt: skip
        if status:
            V.raise_for_status(op, status, query=q, bias=None if bias is None else b)
        return out, w[None, :], lse

    def _quantized_many(
        self, op: str, queries: Any, keys: QuantizedTable, values: QuantizedTable | None, mask: Any, bias: Any,
        scale: float, want_weights: bool,
    ) -> tuple[Array, Array | None, Array]:  # fmt: skip
        """:meth:`_many` over quantised tables (computed in float32, parallel over queries)."""
        self._check_tables(op, keys, values)
        qs = self._quantized_query(op, queries, 2)
        m, n = qs.shape[0], keys.shape[0]
        keep, keep_mode = _mode_array(op, "mask", mask, m, n, None)
        b, bias_mode = _mode_array(op, "bias", bias, m, n, _F32)
        w = np.empty((m, n), _F32) if want_weights else np.empty((1, 1), _F32)
        out = np.empty((m, values.dim if values is not None else 0), _F32)
        lse = np.empty(m, _F32)
        status = np.empty(m, np.int8)
        vt = values if values is not None else keys
        KQ.q_attend_many(qs, *keys.kernel_args(), *vt.kernel_args(), keep, keep_mode, b, bias_mode, _F32.type(scale),
                         w, want_weights, values is not None, out, lse, status, K.chunk_size(m))  # fmt: skip
        if status.any():
            V.raise_for_status(op, status, query=qs, bias=b if bias_mode else None)
        return out, (w[:, None, :] if want_weights else None), lse[:, None]

    def _quantized_neighbours(
        self, op: str, queries: Any, keys: QuantizedTable, values: QuantizedTable | None, neighbours: Any,
        scale: float, want_weights: bool,
    ) -> tuple[Array, Array | None, Array, NeighbourList]:  # fmt: skip
        """:meth:`_neighbours` over quantised tables: each node's rows read from the codes (float32)."""
        self._check_tables(op, keys, values)
        qs = self._quantized_query(op, queries, 2)
        nl = as_neighbours(op, neighbours, qs.shape[0], keys.shape[0])
        w = np.empty(nl.nnz if want_weights else 0, _F32)
        out = np.empty((qs.shape[0], values.dim if values is not None else 0), _F32)
        lse = np.empty(qs.shape[0], _F32)
        status = np.empty(qs.shape[0], np.int8)
        vt = values if values is not None else keys
        KQ.q_attend_csr(qs, *keys.kernel_args(), *vt.kernel_args(), nl.indptr, nl.indices, _F32.type(scale), w,
                        want_weights, values is not None, out, lse, status, K.chunk_size(qs.shape[0]))  # fmt: skip
        if status.any():
            V.raise_for_status(op, status, query=qs, empty_ok=True)
        return out, (w[None, :] if want_weights else None), lse[:, None], nl


def edge_weight_bias(self: Attention, op: str, metadata: GraphMetadata, n: int) -> dict[str, Any]:
    """``_metadata_options`` of a softmax mechanism with a ``bias`` option: ``bias = log(edge_weights)``, so
    the weights become ``w_j e^{s_j} / sum_l w_l e^{s_l}`` (an edge weight multiplies its key's share; weight 0
    removes the key)."""
    w = metadata.require(self.kind, "edge_weights", n)
    with np.errstate(divide="ignore"):
        return {"bias": np.log(w)}


# The base class's own (looping) forms are checked too: a mechanism that inherits them (GAT's
# forward_batch, MoE's forward_neighbours) refuses a bad width even with zero queries or no neighbours.
for _name in ("forward_batch", "forward_neighbours"):
    _wrapped = _checked_form(_name, Attention.__dict__[_name])
    _CHECKED_FORMS.add(_wrapped)
    setattr(Attention, _name, _wrapped)


def _edge_major(flat: Array, nl: NeighbourList, heads: int) -> Array:
    """Per-node ``(heads, degree)`` blocks (the kernel's layout) as ``(heads, nnz)`` aligned with the ids."""
    if heads == 1:
        return flat.reshape(1, -1)
    deg = nl.degrees()
    node = np.repeat(np.arange(nl.num_nodes), deg)
    pos = np.arange(nl.nnz) - nl.indptr[node]
    h = np.arange(heads)[:, None]
    return flat[heads * nl.indptr[node][None, :] + h * deg[node][None, :] + pos[None, :]]


_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_NDARRAY = np.ndarray
_NO_KEEP = np.empty(0, np.bool_)
_NO_IDS = np.empty(0, np.int64)


def _mode_array(op: str, name: str, arr: Any, m: int, n: int, dtype: np.dtype | None) -> tuple[NDArray[Any], int]:
    """A batch mask/bias: ``(n,)`` is shared by every query (mode 1), ``(m, n)`` is per query (mode 2)."""
    if arr is None:
        return np.empty((1, 0), np.bool_ if dtype is None else dtype), 0
    shared = np.ndim(arr) == 1
    shape = (n,) if shared else (m, n)
    a = V.as_keep(op, arr, shape) if dtype is None else V.as_bias(op, arr, shape, dtype)
    return (a.reshape(1, n), 1) if shared else (a, 2)


def _row_kwargs(kwargs: dict[str, Any], i: int, m: int) -> dict[str, Any]:
    """Keyword arguments of query ``i`` of a batch: ``(m, n)`` masks/biases give their row ``i``."""
    out = {}
    for name, value in kwargs.items():
        if name in ("mask", "bias") and value is not None and np.ndim(value) == 2 and np.shape(value)[0] == m:
            value = np.asarray(value)[i]
        out[name] = value
    return out

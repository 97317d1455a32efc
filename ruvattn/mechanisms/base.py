"""The :class:`Attention` base class, mechanism configs and the registry.

Every mechanism has the specification's methods -- ``forward(query, keys,
values)``, ``attention_weights(query, keys)``, ``hidden_dim``,
``supports_variable_length``, ``complexity`` -- and three batched forms:

* ``forward_batch(queries, keys, values)``: many queries over one key set,
  ``(m, d)`` -> ``(m, dv)``, parallel over queries;
* ``forward_neighbours(queries, keys, values, neighbours)``: each node over its
  own neighbour list (CSR or padded ids) into shared key/value tables,
  parallel over nodes; a node with no neighbours gets a zero row;
* ``forward(query, keys, values, ids=...)``: one query over rows ``ids`` of an
  embedding table (no gather copy).

Parameters live in a dataclass config (validated, to/from dict/JSON);
``build({"type": "multi_head", "dim": 128, "num_heads": 4})`` makes any
registered mechanism from a dict.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import numpy as np
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn.errors import InvalidConfig
from ruvattn.graph import NeighbourList, as_neighbours
from ruvattn.kernels import attention as K

__all__ = ["Attention", "AttentionConfig", "available", "build", "register"]

Array = NDArray[np.floating]
_REGISTRY: dict[str, type[Attention]] = {}
_A = TypeVar("_A", bound="Attention")


@dataclasses.dataclass
class AttentionConfig:
    """Base of every mechanism config: a plain dataclass that validates itself.

    ``dim`` is the query/key width every mechanism has (the specification's ``hidden_dim``).
    """

    dim: int

    def validate(self, owner: str) -> None:
        """Raise :class:`~ruvattn.errors.InvalidConfig` for out-of-range fields."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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


def build(spec: dict[str, Any] | str) -> Attention:
    """Build a mechanism from ``{"type": name, **params}`` (or its JSON text).

    >>> from ruvattn import build
    >>> build({"type": "scaled_dot_product", "dim": 8}).hidden_dim
    8
    """
    if isinstance(spec, str):
        spec = json.loads(spec)
    if not isinstance(spec, dict) or "type" not in spec:
        raise InvalidConfig(f"build: spec must be a dict with a 'type' key; got {spec!r}.")
    params = dict(spec)
    kind = params.pop("type")
    if kind not in _REGISTRY:
        raise InvalidConfig(f"build: unknown mechanism type {kind!r}. Available: {', '.join(available())}.")
    return _REGISTRY[kind].from_dict({"type": kind, **params})


class Attention:
    """Base class of every attention mechanism.

    Subclasses set ``Config`` (a dataclass), are decorated with
    :func:`register`, and may override :meth:`_base_scale` plus, where the mechanism is
    not plain dot-product attention over the given keys, the ``forward*``
    methods.  Learned arrays end in ``_``.
    """

    kind: ClassVar[str] = "attention"
    Config: ClassVar[type[AttentionConfig]] = AttentionConfig

    def __init__(self, **params: Any) -> None:
        try:
            config = self.Config(**params)
        except TypeError as exc:
            raise InvalidConfig(f"{type(self).__name__}: {exc}.") from None
        config.validate(type(self).__name__)
        self.config = config
        self.training = False
        self._init_state()

    # -- parameters -----------------------------------------------------
    def _init_state(self) -> None:
        """(Re)create learned arrays and random generators from the config."""

    def get_params(self) -> dict[str, Any]:
        return self.config.to_dict()

    def set_params(self, **params: Any) -> Attention:
        """Change parameters (validated); learned arrays are re-initialised from the seed."""
        unknown = set(params) - set(self.get_params())
        if unknown:
            raise InvalidConfig(f"{type(self).__name__}.set_params: unknown parameter(s) {sorted(unknown)}.")
        new = dataclasses.replace(self.config, **params)
        new.validate(type(self).__name__)
        self.config = new
        self._init_state()
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, **self.get_params()}

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> Attention:
        params = dict(spec)
        kind = params.pop("type", cls.kind)
        if kind != cls.kind:
            raise InvalidConfig(f"{cls.__name__}.from_dict: spec is for {kind!r}, not {cls.kind!r}.")
        try:
            inspect.signature(cls).bind(**params)
        except TypeError as exc:  # an unknown or missing constructor argument
            raise InvalidConfig(f"{cls.__name__}.from_dict: {exc}.") from None
        return cls(**params)

    def train(self, mode: bool = True) -> Attention:
        """Training mode turns on dropout (if configured); returns ``self``."""
        self.training = bool(mode)
        return self

    def eval(self) -> Attention:
        """Inference mode: deterministic outputs."""
        return self.train(False)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- the specification's properties -----------------------------------
    @property
    def hidden_dim(self) -> int:
        return int(self.config.dim)

    @property
    def supports_variable_length(self) -> bool:
        return True

    @property
    def complexity(self) -> str:
        return "O(n·d) time, O(n) memory per query"

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
    def _plain_arrays(self, query: Any, keys: Any, values: Any) -> np.dtype | None:
        """The dtype when ``query (d,)``, ``keys (n, d)`` and ``values (n, dv)`` are float32/float64
        numpy arrays of one dtype (the hot path's check: a few attribute reads), else ``None``."""
        if type(query) is np.ndarray and type(keys) is np.ndarray and type(values) is np.ndarray:
            dt = query.dtype
            d = self.config.dim
            if (
                (dt is _F32 or dt is _F64)
                and keys.dtype is dt
                and values.dtype is dt
                and query.shape == (d,)
                and keys.ndim == 2
                and values.ndim == 2
                and keys.shape[1] == d
                and keys.shape[0] == values.shape[0]
            ):
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
        qs, k, v, dt = self._tables(op, queries, keys, values)
        m, n = qs.shape[0], k.shape[0]
        keep, keep_mode = _mode_array(op, "mask", mask, m, n, None)
        b, bias_mode = _mode_array(op, "bias", bias, m, n, dt)
        w = np.empty((m, heads, n), dt) if want_weights else np.empty((1, heads, 1), dt)
        out = np.empty((m, v.shape[1]), dt)
        lse = np.empty((m, heads), dt)
        status = np.empty(m, np.int8)
        K.attend_many(qs, k, v, keep, keep_mode, b, bias_mode, heads, dt.type(scale), w, want_weights, out, lse, status,
                      K.chunk_size(m))  # fmt: skip
        if status.any():
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

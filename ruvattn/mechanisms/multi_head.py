r"""Multi-head attention, identical to ``torch.nn.MultiheadAttention``.

.. math::

    Q = x W_q^\top + b_q,\quad K = k W_k^\top + b_k,\quad V = v W_v^\top + b_v \\
    O_i = \operatorname{softmax}\!\Big(\frac{Q_i K_i^\top}{\sqrt{d/h}}\Big) V_i,
    \qquad \text{out} = [O_0, \dots, O_{h-1}]\, W_o^\top + b_o

where head ``i`` uses columns ``i·d/h .. (i+1)·d/h - 1`` (Vaswani et al. 2017).
Parameters use PyTorch's names and layout -- ``in_proj_weight = [W_q; W_k; W_v]``
``(3d, d)``, ``in_proj_bias (3d,)``, ``out_proj.weight (d, d)``,
``out_proj.bias (d,)`` -- so a torch ``state_dict`` (or a safetensors file of
one) gives identical outputs (golden ``mha_*`` cases).  Initialisation follows
torch: Xavier-uniform ``in_proj_weight``, ``U(-1/sqrt(d), 1/sqrt(d))``
``out_proj.weight``, zero biases, from ``seed``.

Keys and values of a whole table can be projected once with
:meth:`MultiHeadAttention.project` and passed instead of raw keys; each query
then costs only its own projection and the attention.

Shapes:
    - query ``(d,)``, keys ``(n, d)``, values ``(n, d)`` -> output ``(d,)``
    - head_attention_weights ``(h, n)``, attention_weights ``(n,)`` (mean over heads),
      head_output ``(h, d/h)``
    - forward_batch ``(m, d)`` -> ``(m, d)``; forward_neighbours ``(N, d)`` -> ``(N, d)``
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn._params import Param, ParamSet
from ruvattn.errors import InvalidConfig, NumericalInstability, Unsupported
from ruvattn.kernels import attention as K
from ruvattn.mechanisms.base import (
    DIM,
    DROPOUT,
    SEED,
    Attention,
    Complexity,
    Gradients,
    register,
    softmax_attention_grads,
)
from ruvattn.mechanisms.scaled_dot import DropoutMixin

__all__ = ["MultiHeadAttention", "ProjectedKeysValues"]

Array = NDArray[np.floating]
MAX_HEADS = 16


def _head_counts(params: Mapping[str, Any]) -> list[int]:
    """The head counts that divide ``dim``."""
    return [h for h in range(1, MAX_HEADS + 1) if int(params["dim"]) % h == 0]


def _heads_divide(owner: str, dim: int, h: int) -> None:
    if dim % h:
        ok = [x for x in range(1, MAX_HEADS + 1) if dim % x == 0]
        fix = f"Try {', '.join(map(str, ok[:-1]))} or {ok[-1]}." if len(ok) > 1 else "Try 1."
        raise InvalidConfig(f"{owner}: 'num_heads' must divide hidden_dim={dim}; got {h}. {fix}")


@dataclass(frozen=True)
class ProjectedKeysValues:
    """Keys and values already projected by one :class:`MultiHeadAttention` (``(n, d)`` each).

    The transposed copies (``(d, n)``) used by the single-query kernel are made on first use.
    """

    keys: Array
    values: Array
    owner: Any
    version: int

    @cached_property
    def keys_t(self) -> Array:
        return np.ascontiguousarray(self.keys.T)

    @cached_property
    def values_t(self) -> Array:
        return np.ascontiguousarray(self.values.T)


_F32 = np.dtype(np.float32)


def _wide(x: Any) -> bool:
    """Whether ``x`` counts as float64 under the promotion rule (float32/float16 do not; integers and
    Python floats become float64, as in :func:`ruvattn._validation.as_array`)."""
    dt = x.dtype if type(x) is np.ndarray else np.asarray(x).dtype
    return not (dt is _F32 or dt == np.float32 or dt == np.float16)


@register("multi_head")
class MultiHeadAttention(DropoutMixin, Attention):
    """Multi-head attention with PyTorch's parameter layout (see the module docstring)."""

    forward_options = frozenset({"mask", "bias", "ids"})
    supports_backward = True
    params = (
        DIM,
        Param("num_heads", V.Integer(1, MAX_HEADS), 8, "attention heads; must divide dim", options=_head_counts),
        DROPOUT,
        SEED,
    )

    @classmethod
    def _check_params(cls, owner: str, p: ParamSet) -> None:
        _heads_divide(owner, p.dim, p.num_heads)

    @classmethod
    def example_params(cls, dim: int = 8, heads: int | None = None) -> dict[str, Any]:
        return {"dim": dim, "num_heads": heads or max(h for h in (1, 2, 4) if dim % h == 0)}

    # -- parameters --------------------------------------------------------
    def _init_state(self) -> None:
        d = self.config.dim
        rng = np.random.default_rng(self.config.seed)
        bound_in = np.sqrt(6.0 / (d + 3 * d))  # xavier_uniform on (3d, d)
        bound_out = 1.0 / np.sqrt(d)
        self.in_proj_weight_ = rng.uniform(-bound_in, bound_in, (3 * d, d)).astype(np.float32)
        self.in_proj_bias_ = np.zeros(3 * d, np.float32)
        self.out_proj_weight_ = rng.uniform(-bound_out, bound_out, (d, d)).astype(np.float32)
        self.out_proj_bias_ = np.zeros(d, np.float32)
        self._init_rng()
        self._cast: tuple[Any, ...] = ()

    def _weights(self, dt: np.dtype) -> tuple[Array, ...]:
        """``(wq, bq, wk, bk, wv, bv, wo, bo)`` as contiguous arrays of ``dt``.

        When the parameters already have dtype ``dt`` these are views, so in-place
        changes to the parameters show through; they are reused while the same
        parameter arrays are assigned.  Another dtype is converted on every call.
        """
        cached = self._cast
        if (
            cached
            and cached[0] is dt
            and cached[1] is self.in_proj_weight_
            and cached[2] is self.in_proj_bias_
            and cached[3] is self.out_proj_weight_
            and cached[4] is self.out_proj_bias_
        ):
            return cached[5]
        d = self.config.dim
        arrays = self._arrays()
        w, b = arrays[0], arrays[1]
        parts = (w[:d], b[:d], w[d : 2 * d], b[d : 2 * d], w[2 * d :], b[2 * d :], *arrays[2:])
        got = tuple(np.ascontiguousarray(a, dtype=dt) for a in parts)
        if all(np.shares_memory(g, p) for g, p in zip(got, parts, strict=True)):
            self._cast = (dt, *arrays, got)  # views: in-place changes show through
        return got

    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        """``torch.nn.MultiheadAttention``'s tensors (bias=True, packed in-projection)."""
        d = self.hidden_dim
        return {
            "in_proj_weight": (3 * d, d),
            "in_proj_bias": (3 * d,),
            "out_proj.weight": (d, d),
            "out_proj.bias": (d,),
        }

    def _state_loaded(self) -> None:
        self._cast = ()

    def _arrays(self) -> tuple[Array, ...]:
        return (self.in_proj_weight_, self.in_proj_bias_, self.out_proj_weight_, self.out_proj_bias_)

    @property
    def num_weight_heads(self) -> int:
        return int(self.config.num_heads)

    @property
    def complexity(self) -> Complexity:
        return Complexity(
            "linear", "O(n·d) time per query with projected keys (O(n·d²) to project them), O(h·n) memory"
        )

    def _base_scale(self, d: int) -> float:
        return 1.0 / math.sqrt(d // self.config.num_heads)

    # -- projections ------------------------------------------------------
    def project(self, keys: Any, values: Any | None = None) -> ProjectedKeysValues:
        """Project keys (and values; default: the keys) once for many queries."""
        return self._project(f"{self.kind}.project", keys, values)

    def _project(self, op: str, keys: Any, values: Any | None, wide: bool = False) -> ProjectedKeysValues:
        k = V.as_array(keys, op, "keys", 2)
        v = V.as_array(values, op, "values", 2) if values is not None else k
        dt = np.dtype(np.float64) if wide else V.common_dtype(k, v)
        V.check_width(op, "keys", k, self.hidden_dim)
        V.check_width(op, "values", v, self.hidden_dim)
        V.check_keys_values(op, k, v)
        V.check_finite(op, keys=k, values=v)
        _, _, wk, bk, wv, bv, _, _ = self._weights(dt)
        kp = k.astype(dt, copy=False) @ wk.T + bk
        vp = kp if values is None and wk is wv else v.astype(dt, copy=False) @ wv.T + bv
        return ProjectedKeysValues(np.ascontiguousarray(kp), np.ascontiguousarray(vp), self, self.state_version)

    def prepare(self, keys: Any, values: Any) -> ProjectedKeysValues:
        """Keys and values projected once (:meth:`project`); values are required (the contract's
        ``prepare``; :meth:`project` is the form whose values default to the keys)."""
        op = f"{self.kind}.prepare"
        if values is None:
            raise V.values_required(op, None)
        kv = self._project(op, keys, values)
        if not (np.isfinite(kv.keys).all() and np.isfinite(kv.values).all()):  # once per key set
            raise NumericalInstability(
                f"{op}: the projected keys or values overflowed {kv.keys.dtype.name} (inputs are finite but too "
                "large). Scale the inputs down or use float64."
            )
        return kv

    def _projected_kv(self, op: str, keys: Any, values: Any, query: Any = None) -> ProjectedKeysValues:
        """Projected keys/values in the call's dtype: float64 if the query, keys or values are (the
        contract's promotion rule; float32 tables prepared earlier are widened for a float64 query)."""
        if isinstance(keys, ProjectedKeysValues):
            if keys.owner is not self or keys.version != self.state_version:
                raise V.stale_prepared(op, "MultiHeadAttention")
            if values is not None:
                raise V.values_with_prepared(op)
            if query is not None and keys.keys.dtype is _F32 and _wide(query):
                f64 = np.float64
                return ProjectedKeysValues(keys.keys.astype(f64), keys.values.astype(f64), keys.owner, keys.version)
            return keys
        if values is None:
            raise V.values_required(op)
        return self._project(op, keys, values, query is not None and _wide(query))

    def _query(self, op: str, query: Any, dt: np.dtype) -> Array:
        """The projected query.  NaN/inf in it is caught by the kernel; :meth:`_attend` then names the raw entry."""
        x = V.as_array(query, op, "query", 1, dt)
        V.check_width(op, "query", x, self.hidden_dim)
        wq, bq = self._weights(dt)[:2]
        q = np.empty(self.hidden_dim, dt)
        K.matvec(wq, x, bq, q)
        return q

    # -- forward ----------------------------------------------------------
    def _per_head(self, head: Callable[[int, slice], Array]) -> Array:
        """Concatenate ``head(i, columns of head i)`` over the heads along the last axis."""
        dh = self.hidden_dim // self.num_heads
        return np.concatenate([head(i, slice(i * dh, (i + 1) * dh)) for i in range(self.num_heads)], axis=-1)

    def _attend(
        self, op: str, query: Any, kv: ProjectedKeysValues, values: Array | None, mask: Any, bias: Any, ids: Any
    ) -> tuple[Array, Array, Array]:
        """Project one query and attend over projected keys (``values=None``: weights only)."""
        q = self._query(op, query, kv.keys.dtype)
        try:
            return self._one(op, q, kv.keys, values, mask, bias, ids, self.num_heads, self._scale(self.hidden_dim))
        except NumericalInstability:
            V.check_finite(op, query=np.asarray(query, dtype=float))  # name the raw entry if the query is the culprit
            raise

    def _forward_fast(self, op: str, query: Any, kv: ProjectedKeysValues) -> Array | None:
        """The whole layer in one kernel call (transposed keys: every head width vectorises).

        Returns None when the kernel flags a problem, so the general path can name it.
        """
        dt = kv.keys.dtype
        x = V.as_array(query, op, "query", 1, dt)
        d = self.hidden_dim
        V.check_width(op, "query", x, d)
        wq, bq, _, _, _, _, wo, bo = self._weights(dt)
        h, n = self.num_heads, kv.keys.shape[0]
        w = np.empty((h, n), dt)
        buf = np.empty(3 * d + h, dt)  # q | head outputs | output | lse
        status = K.multi_head_one(x, wq, bq, kv.keys_t, kv.values_t, wo, bo, h, self._typed_scale(d, dt), w, buf)
        return None if status else buf[2 * d : 3 * d]

    def _heads(
        self, op: str, query: Any, keys: Any, values: Any, mask: Any, bias: Any, ids: Any
    ) -> tuple[Array, Array, np.dtype]:
        kv = self._projected_kv(op, keys, values, query)
        dt = kv.keys.dtype
        heads_out, w, _ = self._attend(op, query, kv, kv.values, mask, bias, ids)
        if self._dropping:
            rows = kv.values if ids is None else kv.values[np.asarray(ids, dtype=np.int64)]
            w = self._dropout(w)
            heads_out = self._per_head(lambda i, cols: w[i] @ rows[:, cols])
        return heads_out, w, dt

    def forward(self, query: Any, keys: Any, values: Any = None, *, mask: Any = None, bias: Any = None,
                ids: Any = None) -> Array:  # fmt: skip
        """Output ``(d,)`` of one query; ``keys`` may be a :class:`ProjectedKeysValues`."""
        op = f"{self.kind}.forward"
        if mask is None and bias is None and ids is None and not self._dropping:
            out = self._forward_fast(op, query, self._projected_kv(op, keys, values, query))
            if out is not None:
                return out
        # masks, ids, dropout, or an error to report: the general path
        heads_out, _, dt = self._heads(op, query, keys, values, mask, bias, ids)
        wo, bo = self._weights(dt)[6:]
        out = np.empty(self.hidden_dim, dt)
        K.matvec(wo, heads_out, bo, out)
        return V.check_output(op, out, dt)  # the output projection (or dropout's 1/(1-p)) can overflow

    def head_output(self, query: Any, keys: Any, values: Any = None, *, mask: Any = None, bias: Any = None,
                    ids: Any = None) -> Array:  # fmt: skip
        """Per-head outputs ``(h, d/h)`` before the output projection."""
        heads_out, _, _ = self._heads(f"{self.kind}.head_output", query, keys, values, mask, bias, ids)
        return heads_out.reshape(self.num_heads, -1)

    def _weights_one(
        self, op: str, query: Any, keys: Any, *, mask: Any = None, bias: Any = None, ids: Any = None
    ) -> Array:
        """Weights ``(h, n)`` of every head (before dropout); their mean is torch's ``average_attn_weights``."""
        kv = self._projected_kv(op, keys, keys if not isinstance(keys, ProjectedKeysValues) else None, query)
        return self._attend(op, query, kv, None, mask, bias, ids)[1]

    def _weights_batch(self, op: str, queries: Any, keys: Any, *, mask: Any = None, bias: Any = None) -> Array:
        kv = self._projected_kv(op, keys, keys if not isinstance(keys, ProjectedKeysValues) else None, queries)
        q = self._project_queries(op, queries, kv.keys.dtype)
        w = self._many(op, q, kv.keys, None, mask, bias, self.num_heads, self._scale(self.hidden_dim), True)[1]
        return w.transpose(1, 0, 2)

    def _project_queries(self, op: str, queries: Any, dt: np.dtype) -> Array:
        x = V.as_array(queries, op, "queries", 2, dt)
        V.check_width(op, "queries", x, self.hidden_dim)
        V.check_finite(op, queries=x)
        wq, bq = self._weights(dt)[:2]
        return np.ascontiguousarray(x @ wq.T + bq)

    def _projected(
        self, op: str, queries: Any, keys: Any, values: Any
    ) -> tuple[ProjectedKeysValues, Array, int, float]:
        """``(projected keys/values, projected queries, heads, scale)`` for the batched forms."""
        kv = self._projected_kv(op, keys, values, queries)
        return kv, self._project_queries(op, queries, kv.keys.dtype), self.num_heads, self._scale(self.hidden_dim)

    def forward_batch(self, queries: Any, keys: Any, values: Any = None, *, mask: Any = None,
                      bias: Any = None) -> Array:  # fmt: skip
        """Many queries ``(m, d)`` over one key set -> ``(m, d)``, parallel over queries."""
        op = f"{self.kind}.forward_batch"
        kv, q, h, sc = self._projected(op, queries, keys, values)
        if self._dropping:
            _, w, _ = self._many(op, q, kv.keys, kv.values, mask, bias, h, sc, True)
            w = self._dropout(w)
            heads_out = self._per_head(lambda i, cols: w[:, i] @ kv.values[:, cols])
        else:
            heads_out = self._many(op, q, kv.keys, kv.values, mask, bias, h, sc, False)[0]
        wo, bo = self._weights(kv.keys.dtype)[6:]
        return V.check_output(op, heads_out @ wo.T + bo, kv.keys.dtype)

    def backward(
        self, query: Any, keys: Any, values: Any, grad_output: Any, *, mask: Any = None, bias: Any = None
    ) -> Gradients:
        r"""Gradients of ``sum(grad_output * forward(...))`` for one query ``(d,)`` or a batch ``(m, d)``: with respect
        to the query, the raw keys and values, and (``params``) ``in_proj_weight``, ``in_proj_bias``,
        ``out_proj.weight`` and ``out_proj.bias`` (torch's names; equal to torch autograd on
        ``nn.MultiheadAttention``).  Each head is scaled dot-product attention's backward on its columns; the
        projections are linear maps (:math:`\nabla_X = \nabla_Q W_q`, :math:`\nabla_{W_q} = \nabla_Q^\top X`).
        Keys projected beforehand (:meth:`project`) have no gradient: pass the raw keys and values.
        """
        return self._backward(f"{self.kind}.backward", query, keys, values, grad_output, mask, bias, None)

    def _backward(
        self, op: str, query: Any, keys: Any, values: Any, grad_output: Any, mask: Any, bias: Any, active: Any
    ) -> Gradients:
        """:meth:`backward` with only the heads ``active`` contributing (every head when ``None``)."""
        if isinstance(keys, ProjectedKeysValues) or isinstance(values, ProjectedKeysValues):
            raise Unsupported(f"{op}: keys projected beforehand have no gradient; pass the raw keys and values.")
        if values is None:
            raise InvalidConfig(f"{op}: values are required (the gradient with respect to them is returned).")
        single = np.ndim(query) == 1
        p = self._weights_batch(op, np.atleast_2d(query), keys, mask=mask, bias=bias)  # (h, m, n)
        dt = p.dtype
        x = V.as_array(np.atleast_2d(query), op, "query", 2, dt)
        k = V.as_array(keys, op, "keys", 2, dt)
        v = V.as_array(values, op, "values", 2, dt)
        V.check_keys_values(op, k, v)
        V.check_width(op, "values", v, self.hidden_dim)
        V.check_finite(op, values=v)
        m, d, h = x.shape[0], self.hidden_dim, self.num_heads
        g = self._upstream(op, grad_output, m, d, single, dt)
        wq, bq, wk, bk, wv, bv, wo, _ = self._weights(dt)
        qp, kp, vp = x @ wq.T + bq, k @ wk.T + bk, v @ wv.T + bv
        on = np.ones(h, bool) if active is None else np.isin(np.arange(h), active)
        heads_out = self._per_head(lambda i, cols: p[i] @ vp[:, cols] * on[i])
        d_heads = g @ wo
        dq, dk, dv = np.zeros_like(qp), np.zeros_like(kp), np.zeros_like(vp)
        sc = self._scale(self.hidden_dim)
        w = d // h
        for i in np.flatnonzero(on):
            cols = slice(i * w, (i + 1) * w)
            dq[:, cols], dk[:, cols], dv[:, cols] = softmax_attention_grads(
                qp[:, cols], kp[:, cols], vp[:, cols], p[i], d_heads[:, cols], sc
            )
        params = {
            "in_proj_weight": np.vstack([dq.T @ x, dk.T @ k, dv.T @ v]),
            "in_proj_bias": np.concatenate([dq.sum(0), dk.sum(0), dv.sum(0)]),
            "out_proj.weight": g.T @ heads_out,
            "out_proj.bias": g.sum(0),
        }
        gx, gk, gv = (V.check_output(op, a, dt) for a in (dq @ wq, dk @ wk, dv @ wv))
        return Gradients(gx[0] if single else gx, gk, gv, {n: V.check_output(op, a, dt) for n, a in params.items()})

    def _weights_neighbours(self, op: str, queries: Any, keys: Any, neighbours: Any) -> Array:
        """Per-head, per-edge weights ``(h, nnz)`` aligned with the neighbour ids (before dropout)."""
        kv = self._projected_kv(op, keys, keys if not isinstance(keys, ProjectedKeysValues) else None, queries)
        q = self._project_queries(op, queries, kv.keys.dtype)
        h = self.num_heads
        return self._neighbours(op, q, kv.keys, None, neighbours, h, self._scale(self.hidden_dim), True)[1]

    def forward_neighbours(self, queries: Any, keys: Any, values: Any, neighbours: Any) -> Array:
        """Each node over its own neighbour rows; tables are projected once, then gathered by id."""
        op = f"{self.kind}.forward_neighbours"
        kv, q, h, sc = self._projected(op, queries, keys, values)
        if self._dropping:
            _, w, _, nl = self._neighbours(op, q, kv.keys, kv.values, neighbours, h, sc, True)
            w = self._dropout(w)
            shape = (nl.num_nodes, kv.values.shape[0])
            heads_out = self._per_head(
                lambda i, cols: np.asarray(
                    sp.csr_matrix((w[i], nl.indices, nl.indptr), shape=shape) @ kv.values[:, cols]
                )
            )
        else:
            heads_out, _, _, nl = self._neighbours(op, q, kv.keys, kv.values, neighbours, h, sc, False)
        wo, bo = self._weights(kv.keys.dtype)[6:]
        out = heads_out @ wo.T + bo
        out[nl.degrees() == 0] = 0  # a node with no neighbours gets a zero row, as in every mechanism
        return V.check_output(op, out, kv.keys.dtype)

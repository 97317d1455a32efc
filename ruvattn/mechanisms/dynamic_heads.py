r"""Multi-head attention that runs only a chosen subset of its heads (head pruning, FR-005.4).

.. math::

    \text{out} = \sum_{h \in A} O_h\, W_o[:, \text{cols}_h]^\top + b_o,
    \qquad O_h = \operatorname{softmax}\!\Big(\frac{Q_h K_h^\top}{\sqrt{d/H}}\Big) V_h

where ``A`` is the set of *active* heads, ``H`` the configured number of heads and
``cols_h = h·d/H .. (h+1)·d/H - 1``.  A pruned head contributes exactly zero, as in
head pruning (Michel et al. 2019, "Are sixteen heads really better than one?"), and
its query/key/value projections, scores, softmax and weighted sum are never computed.
With every head active the layer *is* :class:`MultiHeadAttention` (same code path).
The scale stays ``1/sqrt(d/H)`` (the head width), whatever the number of active heads.

Selection rules (evaluated on every call, in this order of precedence):

1. ``forward(..., heads=[i, j, ...])``: exactly these head indices.
2. ``forward(..., heads=k)`` (an int): the ``k`` heads of highest importance.
3. ``threshold`` (in ``(0, 1]``, a "confidence threshold"): take heads in decreasing
   importance and stop at the first ``k`` whose cumulative importance share
   ``sum_{top k} I / sum I`` is ``>= threshold`` (with a relative rounding tolerance of
   ``1e-12``).  If ``budget`` is also set, at most ``budget`` heads run.
4. ``budget`` (int in ``[1, H]``): the ``budget`` heads of highest importance.
5. Neither: all heads.

Importance ``I = head_importance_ (H,)`` (non-negative; default all ones, so a budget keeps
the first heads).  Ties are broken by head index (lower first); when every importance is
zero all heads count as equally important.  :meth:`DynamicHeadAttention.estimate_importance`
sets ``I`` from data: ``I_h = mean_q || O_h(q) W_o[:, cols_h]^T ||_2``, the mean norm of
head ``h``'s contribution to the output, a cheap proxy for the "expected sensitivity" of
Michel et al.  The selection does not depend on the query (a query-dependent confidence
would need the pruned heads' scores, i.e. computing them).

Active heads are reported sorted ascending by :meth:`~DynamicHeadAttention.forward_with_heads`
and in ``last_active_heads``.

The active heads' rows of ``W_q, W_k, W_v`` (and biases) and columns of ``W_o`` are gathered
into contiguous arrays, cached per (dtype, active set) while the same parameter arrays are
assigned (``load_state_dict``, ``set_params`` and assignment invalidate the cache).  After
editing a parameter array *in place* call :meth:`~DynamicHeadAttention.clear_head_cache`.

Shapes:
    - query ``(d,)``, keys ``(n, d)``, values ``(n, d)`` (or a :class:`ProjectedKeysValues`
      from :meth:`project`, which projects all heads once; each call then slices the active
      heads' rows) -> output ``(d,)``; active heads ``(k,)`` int64
    - forward_batch ``(m, d)`` -> ``(m, d)``
    - head_output ``(H, d/H)``, head_attention_weights ``(H, n)``, attention_weights ``(n,)``
      are diagnostics and always cover every head.

Masks, bias, ids, dropout and ``forward_neighbours`` are supported with every head active
(the :class:`MultiHeadAttention` path); with a subset they raise
:class:`~ruvattn.errors.Unsupported`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn._params import Param, ParamSet
from ruvattn.errors import (
    DimensionMismatch,
    EmptyInput,
    InvalidConfig,
    NumericalInstability,
    OutOfBounds,
    Unsupported,
)
from ruvattn.kernels import attention as K
from ruvattn.mechanisms.base import DROPOUT, SEED, Complexity, Example, Gradients, register
from ruvattn.mechanisms.multi_head import MultiHeadAttention, ProjectedKeysValues, _wide

__all__ = ["DynamicHeadAttention"]

Array = NDArray[np.floating]
IntArray = NDArray[np.int64]
_SELECTION = frozenset({"budget", "threshold", "importance"})
_CACHE_LIMIT = 64  # gathered weight sets kept per parameter version
_TOL = 1e-12


def _importance_list(owner: str, name: str, value: Any) -> list[float]:
    return V.float_list(owner, name, value)


def _importance(owner: str, value: Any, heads: int) -> NDArray[np.float64]:
    """``value`` as a validated read-only float64 array ``(heads,)``: finite and non-negative."""
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise InvalidConfig(f"{owner}: 'importance' must hold real numbers; got {value!r}.") from None
    if arr.shape != (heads,):
        raise DimensionMismatch(f"{owner}: 'importance' has shape {arr.shape}, expected ({heads},) (one per head).")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise InvalidConfig(f"{owner}: 'importance' must be finite and non-negative; got {arr.tolist()}.")
    arr.flags.writeable = False
    return arr


@register("dynamic_heads")
class DynamicHeadAttention(MultiHeadAttention):
    """Multi-head attention computing only the active heads (see the module docstring).

    Dropout in training mode is supported with every head active only.
    """

    forward_options = frozenset({"mask", "bias", "ids", "heads"})
    supports_backward = True
    #: the importances choose heads, they do not scale them: no gradient (set them with estimate_importance)
    fixed_state = frozenset({"head_importance"})
    params = (
        MultiHeadAttention.params[0],
        MultiHeadAttention.params[1],
        Param("budget", V.POSITIVE_INT, None, "keep the `budget` most important heads (at most num_heads)", none=True),
        Param(
            "threshold",
            V.Real(0.0, 1.0, closed="right"),
            None,
            "keep the most important heads until their importance share reaches it",
            none=True,
        ),
        Param(
            "importance",
            V.Custom(_importance_list, "a list of finite numbers >= 0"),
            None,
            "initial head_importance_ (num_heads values; default all ones)",
            none=True,
        ),
        SEED,
        DROPOUT,
    )

    @classmethod
    def _check_params(cls, owner: str, p: ParamSet) -> None:
        super()._check_params(owner, p)
        h = int(p.num_heads)
        if p.budget is not None and p.budget > h:
            raise InvalidConfig(
                f"{owner}: 'budget' must be an integer in [1, num_heads={h}] or None; got {p.budget!r}."
            )
        if p.importance is not None:
            try:
                _importance(owner, p.importance, h)
            except DimensionMismatch as exc:  # a parameter of the wrong length is a configuration error
                raise InvalidConfig(str(exc)) from None

    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        return {**super()._state_shapes(), "head_importance": (self.num_heads,)}

    def _warmup(self, ex: Example) -> None:
        """A subset of the heads (the transposed per-head kernel), with raw and projected keys."""
        self.forward_with_heads(ex.query, ex.keys, ex.values, heads=[0])
        self.forward_with_heads(ex.query, self.project(ex.keys, ex.values), heads=[0])
        self.forward_batch(ex.queries, ex.keys, ex.values, heads=[0])

    def _state_optional(self) -> frozenset[str]:
        """A ``torch.nn.MultiheadAttention`` state dict (no importances) loads as it is."""
        return frozenset({"head_importance"})

    def _state_loaded(self) -> None:
        super()._state_loaded()
        self.clear_head_cache()

    # -- state ------------------------------------------------------------
    def _init_state(self) -> None:
        super()._init_state()
        self._head_cache: tuple[tuple[Array, ...], dict[Any, tuple[Array, ...]]] | None = None
        self._kv_cache: tuple[ProjectedKeysValues, tuple[int, ...], Array, Array] | None = None
        self._rule: tuple[Any, ...] = ()
        self.last_active_heads: IntArray | None = None
        imp = self.config.importance
        self.head_importance_ = np.ones(self.num_heads) if imp is None else imp

    @property
    def head_importance_(self) -> NDArray[np.float64]:
        """Per-head importance ``(H,)`` (read-only; assign a new array to change it)."""
        return self._importance

    @head_importance_.setter
    def head_importance_(self, value: Any) -> None:
        imp = _importance(f"{type(self).__name__}.head_importance_", value, self.num_heads)
        total = imp.sum()
        self._importance = imp
        self._order = np.argsort(-imp, kind="stable").astype(np.int64)  # decreasing, ties by index
        ranked = imp[self._order] if total > 0 else np.ones(self.num_heads)
        self._share = np.cumsum(ranked) / ranked.sum()

    def set_params(self, **params: Any) -> DynamicHeadAttention:
        """Change parameters; changing only ``budget``/``threshold``/``importance`` keeps the weights."""
        if params and set(params) <= _SELECTION:
            new = self._validated({**self.config.as_dict(), **params})  # raises before anything changes
            self.config = new
            if "importance" in params:
                self.head_importance_ = np.ones(self.num_heads) if new.importance is None else new.importance
            return self
        super().set_params(**params)
        return self

    def clear_head_cache(self) -> None:
        """Drop the gathered per-head-set weights (needed after editing parameter arrays in place)."""
        self._head_cache = None
        self._kv_cache = None

    # -- selection --------------------------------------------------------
    def _top(self, k: int) -> IntArray:
        return np.sort(self._order[:k])

    def select_heads(self, heads: Any = None) -> IntArray:
        """The active heads ``(k,)`` (sorted) for a call with ``heads`` (see the module docstring)."""
        return self._select(f"{self.kind}.select_heads", heads).copy()

    def _select(self, op: str, heads: Any) -> IntArray:
        h = self.num_heads
        if heads is None:
            rule = self._rule
            if rule and rule[0] is self.config and rule[1] is self._importance:
                return rule[2]
            budget, threshold = self.config.budget, self.config.threshold
            k = h if budget is None else int(budget)
            if threshold is not None:
                k = min(k, int(np.searchsorted(self._share, float(threshold) - _TOL, side="left")) + 1)
            active = self._top(min(k, h))
            active.flags.writeable = False
            self._rule = (self.config, self._importance, active)
            return active
        if isinstance(heads, (int, np.integer)) and not isinstance(heads, bool):
            if not 1 <= heads <= h:
                raise InvalidConfig(f"{op}: heads (a budget) must be in [1, {h}]; got {heads}.")
            return self._top(int(heads))
        arr = np.asarray(heads)
        if isinstance(heads, bool) or arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise InvalidConfig(f"{op}: heads must be an int budget or a 1-D list of head indices; got {heads!r}.")
        if arr.size == 0:
            raise InvalidConfig(f"{op}: heads must name at least one head; got an empty list.")
        bad = arr[(arr < 0) | (arr >= h)]
        if bad.size:
            raise OutOfBounds(f"{op}: head indices must be in [0, {h}); got {bad[0]}.")
        active = np.unique(arr).astype(np.int64)
        if active.size != arr.size:
            raise InvalidConfig(f"{op}: head indices must be distinct; got {arr.tolist()}.")
        return active

    def _cols(self, active: IntArray) -> IntArray:
        """Feature columns of the active heads, ``(k·d/H,)``."""
        dh = self.hidden_dim // self.num_heads
        return (active[:, None] * dh + np.arange(dh)).ravel()

    def _active_weights(self, dt: np.dtype, active: IntArray) -> tuple[Array, ...]:
        """``(wq, bq, wk, bk, wv, bv, wo, bo)`` of the active heads: ``(k·d/H, d)`` rows, ``wo (d, k·d/H)``."""
        params = self._arrays()
        cache = self._head_cache
        if cache is None or any(a is not b for a, b in zip(cache[0], params, strict=True)):
            cache = self._head_cache = (params, {})
        key = (dt, active.tobytes())
        got = cache[1].get(key)
        if got is None:
            wq, bq, wk, bk, wv, bv, wo, bo = self._weights(dt)
            c = self._cols(active)
            got = (*(np.ascontiguousarray(a[c]) for a in (wq, bq, wk, bk, wv, bv)), np.ascontiguousarray(wo[:, c]), bo)
            if len(cache[1]) >= _CACHE_LIMIT:
                cache[1].clear()
            cache[1][key] = got
        return got

    def _active_kv(
        self, op: str, keys: Any, values: Any, active: IntArray, query: Any
    ) -> tuple[Array, Array, np.dtype]:
        """Transposed keys/values ``(k·d/H, n)`` of the active heads only, in the call's dtype (float64
        if ``query``, keys or values are)."""
        if isinstance(keys, ProjectedKeysValues):
            kv = self._projected_kv(op, keys, values, query)  # owner, values=None and dtype checks
            key = tuple(active.tolist())
            cached = self._kv_cache
            if cached is not None and cached[0] is kv and cached[1] == key:
                return cached[2], cached[3], kv.keys.dtype
            dh = self.hidden_dim // self.num_heads
            if active[-1] - active[0] + 1 == active.size:  # one block of heads: a view, no copy
                rows: Any = slice(int(active[0]) * dh, (int(active[-1]) + 1) * dh)
            else:
                rows = self._cols(active)
            kt, vt = kv.keys_t[rows], kv.values_t[rows]
            self._kv_cache = (kv, key, kt, vt)
            return kt, vt, kv.keys.dtype
        if values is None:
            raise V.values_required(op)
        k = V.as_array(keys, op, "keys", 2)
        v = V.as_array(values, op, "values", 2)
        dt = np.dtype(np.float64) if _wide(query) else V.common_dtype(k, v)
        V.check_width(op, "keys", k, self.hidden_dim)
        V.check_width(op, "values", v, self.hidden_dim)
        V.check_keys_values(op, k, v)
        V.check_finite(op, keys=k, values=v)
        _, _, wk, bk, wv, bv, _, _ = self._active_weights(dt, active)
        kt = np.ascontiguousarray(wk @ k.astype(dt, copy=False).T + bk[:, None])
        vt = np.ascontiguousarray(wv @ v.astype(dt, copy=False).T + bv[:, None])
        return kt, vt, dt

    def _forward_active(self, op: str, query: Any, kt: Array, vt: Array, dt: np.dtype, active: IntArray) -> Array:
        """One query through the active heads only: ``q_A = W_q[A] x + b_q[A]``, attention of
        ``len(A)`` heads of width ``d/H``, then ``W_o[:, A] O_A + b_o``."""
        d = self.hidden_dim
        x = V.as_array(query, op, "query", 1, dt)
        V.check_width(op, "query", x, d)
        wq, bq, _, _, _, _, wo, bo = self._active_weights(dt, active)
        a, n = active.size, kt.shape[1]
        q = np.empty(wq.shape[0], dt)
        K.matvec(wq, x, bq, q)
        w = np.empty((a, n), dt)
        heads_out = np.empty(wq.shape[0], dt)
        lse = np.empty(a, dt)
        status = K.attend_one_transposed(q, kt, vt, a, self._typed_scale(d, dt), w, heads_out, lse)
        if status:
            V.check_finite(op, query=x)
            if status == K.NONFINITE and not all(np.isfinite(p).all() for p in (wq, bq, kt, vt)):
                raise NumericalInstability(
                    f"{op}: the parameters of active heads {active.tolist()} contain NaN or inf "
                    "(or projected keys/values do). Check in_proj_weight/in_proj_bias."
                )
            V.raise_for_status(op, status, keys=kt)
        out = np.empty(d, dt)
        K.matvec(wo, heads_out, bo, out)
        return V.check_output(op, out, dt)  # the output projection can overflow

    def _subset_only(self, op: str, mask: Any, bias: Any, ids: Any) -> None:
        if mask is not None or bias is not None or ids is not None or self._dropping:
            raise Unsupported(
                f"{op}: mask, bias, ids and dropout need every head active; got a subset of heads. "
                "Pass heads=None with no budget/threshold, or drop these options."
            )

    # -- forward ----------------------------------------------------------
    def forward_with_heads(self, query: Any, keys: Any, values: Any = None, *, heads: Any = None, mask: Any = None,
                           bias: Any = None, ids: Any = None) -> tuple[Array, IntArray]:  # fmt: skip
        """Output ``(d,)`` of one query and the active heads ``(k,)`` (sorted) that produced it.

        ``heads``: None (the configured rule), an int budget, or a list of head indices.
        """
        op = f"{self.kind}.forward"
        active = self._select(op, heads)
        if active.size == self.num_heads:
            out = super().forward(query, keys, values, mask=mask, bias=bias, ids=ids)
        else:
            self._subset_only(op, mask, bias, ids)
            kt, vt, dt = self._active_kv(op, keys, values, active, query)
            out = self._forward_active(op, query, kt, vt, dt, active)
        self.last_active_heads = active
        return out, active

    def forward(self, query: Any, keys: Any, values: Any = None, *, heads: Any = None, mask: Any = None,
                bias: Any = None, ids: Any = None) -> Array:  # fmt: skip
        """Output ``(d,)`` of one query through the active heads (see :meth:`forward_with_heads`)."""
        return self.forward_with_heads(query, keys, values, heads=heads, mask=mask, bias=bias, ids=ids)[0]

    def forward_batch(self, queries: Any, keys: Any, values: Any = None, *, heads: Any = None, mask: Any = None,
                      bias: Any = None) -> Array:  # fmt: skip
        """Many queries ``(m, d)`` over one key set -> ``(m, d)``; keys/values are projected once
        for the active heads, then each query runs the active heads only."""
        op = f"{self.kind}.forward_batch"
        active = self._select(op, heads)
        if active.size == self.num_heads:
            out = super().forward_batch(queries, keys, values, mask=mask, bias=bias)
        else:
            self._subset_only(op, mask, bias, None)
            kt, vt, dt = self._active_kv(op, keys, values, active, queries)
            qs = V.as_array(queries, op, "queries", 2, dt)
            V.check_width(op, "queries", qs, self.hidden_dim)
            out = np.empty((qs.shape[0], self.hidden_dim), dt)
            for i in range(qs.shape[0]):
                out[i] = self._forward_active(op, qs[i], kt, vt, dt, active)
        self.last_active_heads = active
        return out

    def backward(self, query: Any, keys: Any, values: Any, grad_output: Any, *, heads: Any = None, mask: Any = None,
                 bias: Any = None) -> Gradients:  # fmt: skip
        """Gradients of ``sum(grad_output * forward(..., heads=heads))``: :class:`MultiHeadAttention`'s, with the
        pruned heads contributing nothing (their rows of ``in_proj_*`` and columns of ``out_proj.weight`` get zero
        gradient).  ``head_importance`` only selects heads, so it has none (``fixed_state``)."""
        op = f"{self.kind}.backward"
        active = self._select(op, heads)
        if active.size < self.num_heads:
            self._subset_only(op, mask, bias, None)
        return self._backward(op, query, keys, values, grad_output, mask, bias, active)

    def forward_neighbours(self, queries: Any, keys: Any, values: Any, neighbours: Any) -> Array:
        """:meth:`MultiHeadAttention.forward_neighbours`; needs every head active."""
        op = f"{self.kind}.forward_neighbours"
        active = self._select(op, None)
        if active.size != self.num_heads:
            raise Unsupported(f"{op}: neighbour lists need every head active; this layer runs heads "
                              f"{active.tolist()}. Use forward/forward_batch per node instead.")  # fmt: skip
        out = super().forward_neighbours(queries, keys, values, neighbours)
        self.last_active_heads = active
        return out

    # -- importance -------------------------------------------------------
    def estimate_importance(self, queries: Any, keys: Any, values: Any = None) -> NDArray[np.float64]:
        r"""Set ``head_importance_`` from a sample and return it.

        .. math::

            I_h = \frac{1}{m} \sum_{i=1}^{m} \big\| O_h(q_i)\, W_o[:, \text{cols}_h]^\top \big\|_2

        the mean L2 norm of head ``h``'s contribution to the output over the ``m`` queries
        (all heads computed, no dropout).  ``queries (m, d)``, ``keys (n, d)``, ``values (n, d)``
        (or projected keys and ``values=None``) -> ``(H,)`` float64.
        """
        op = f"{self.kind}.estimate_importance"
        kv, q, h, scale = self._projected(op, queries, keys, values)
        if q.shape[0] == 0:
            raise EmptyInput(f"{op}: queries is empty; pass at least one query to estimate importance from.")
        heads_out = self._many(op, q, kv.keys, kv.values, None, None, h, scale, False)[0].astype(np.float64)
        wo = self._weights(kv.keys.dtype)[6].astype(np.float64)
        dh = self.hidden_dim // h
        imp = np.array(
            [
                np.linalg.norm(heads_out[:, i * dh : (i + 1) * dh] @ wo[:, i * dh : (i + 1) * dh].T, axis=1).mean()
                for i in range(h)
            ]
        )
        self.head_importance_ = imp
        return self.head_importance_

    @property
    def complexity(self) -> Complexity:
        return Complexity(
            "linear", "O(n·d·k/H) time per query for k active heads (projection of raw keys included), O(k·n) memory"
        )

r"""Linear attention: elu(x)+1 features (Katharopoulos et al. 2020) and Performer FAVOR+ (Choromanski et al. 2021).

Softmax attention weighs key ``j`` by ``exp(q·k_j/sqrt(d))``.  Linear attention
replaces that kernel by a dot product of feature maps, ``φ(q)·φ(k_j)``, so the sum
over keys can be taken once, before any query is seen:

.. math::

    \text{out}(q) = \frac{\sum_j \varphi(q)\cdot\varphi(k_j)\; v_j}{\sum_j \varphi(q)\cdot\varphi(k_j)}
                  = \frac{\varphi(q)^\top S}{\varphi(q)\cdot z}, \qquad
    S = \sum_j \varphi(k_j)\, v_j^\top \ (F \times d_v), \quad z = \sum_j \varphi(k_j) \ (F)

* ``feature_map="elu"``: :math:`\varphi(x) = \operatorname{elu}(x) + 1` elementwise
  (``F = d``; no ``1/sqrt(d)``, no eps; golden ``linear_elu_*`` cases).  A different
  kernel from softmax, not an approximation of it.
* ``feature_map="favor"``: positive orthogonal random features,
  :math:`\varphi(x)_r = \exp(w_r\cdot\tilde x - \|\tilde x\|^2/2)/\sqrt m`,
  :math:`\tilde x = x\,d^{-1/4}`, ``r = 1..m`` (``F = m = num_features``).  Then
  :math:`\mathbb E[\varphi(q)\cdot\varphi(k)] = \exp(q\cdot k/\sqrt d)`: an unbiased
  estimate of softmax attention's kernel (scale ``1/sqrt(d)``) whose error falls like
  ``1/sqrt(m)`` (golden ``favor_*`` cases, with their given ``W``).  The projection
  ``projection_ (m, d)`` is drawn from ``seed`` as orthogonal Gaussian blocks with
  chi(d) row norms; :meth:`~LinearAttention.redraw` draws the next one of the seeded
  sequence, ``redraw_every=N`` does so after every ``N`` calls that use it.  The
  estimator's variance grows like ``exp(|q̃|² + |k̃|²)``: it is accurate when
  ``|x̃|² = |x|²/sqrt(d)`` is of order 1 (e.g. normalised queries and keys), and noisy
  for raw N(0, 1) entries at large ``d`` (``|x̃|² = sqrt(d)``).

**When it pays off.**  Building the summary ``(S, z)`` costs ``O(n·F·(d + dv))``;
a query against it costs ``O(F·(d + dv))``, independent of ``n``.  One query over its
own keys (:meth:`~LinearAttention.forward` with keys and values) is therefore
*slower* than exact attention (``O(n·(d + dv))``).  Linear attention wins only when
one summary serves many queries: :meth:`~LinearAttention.forward_batch` builds it
once for all ``m`` queries (``O((n + m)·F·(d + dv))`` instead of ``O(n·m·(d + dv))``),
and :meth:`~LinearAttention.summarize` returns it for reuse (``forward(query,
summary)``: microseconds per query).  No ``n × n`` array is ever formed.

Numerics: FAVOR+ exponents span hundreds of units for ordinary inputs, so the raw
features overflow and their products underflow.  Each random feature's exponents are
shifted by their maximum over the keys and the query's by ``max_r(b_r + log z_r)``
(see :mod:`ruvattn.kernels.linear`); the shifts cancel exactly, every factor is
``≤ 1`` and the normaliser is ``≥ 1``: finite, non-zero outputs for any finite
input, in float32 too.  elu+1 needs no shift; if its normaliser ``φ(q)·z``
underflows to 0 (entries far below 0: ``exp(x)`` flushes to 0) the call raises
:class:`~ruvattn.errors.NumericalInstability`.

Shapes:
    - query ``(d,)``, keys ``(n, d)``, values ``(n, dv)`` -> output ``(dv,)``;
      ``mask`` ``(n,)`` bool (true = the key takes part; removed keys are left out of
      ``S`` and ``z``: weight exactly 0)
    - ``summarize(keys, values)`` -> :class:`LinearSummary`; ``forward(query, summary)`` -> ``(dv,)``
    - ``forward_batch``: queries ``(m, d)`` -> ``(m, dv)`` (one summary, shared; parallel over queries)
    - ``forward_neighbours``: queries ``(N, d)``, key/value tables ``(M, d)``/``(M, dv)``,
      neighbours CSR or padded ``(N, k)`` -> ``(N, dv)`` (one summary per node)

>>> import numpy as np
>>> from ruvattn import LinearAttention
>>> attn = LinearAttention(2)  # elu+1
>>> keys = np.array([[0.0, 0.0], [1.0, 1.0]])
>>> attn.attention_weights(np.zeros(2), keys).round(4).tolist()  # φ(0)·φ(k_j) = 2, 4
[0.3333, 0.6667]
>>> summary = attn.summarize(keys, np.eye(2))
>>> attn.forward(np.zeros(2), summary).round(4).tolist()
[0.3333, 0.6667]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn._params import Param, ParamSet
from ruvattn.errors import DimensionMismatch, InvalidConfig, NumericalInstability, Unsupported
from ruvattn.graph import as_neighbours
from ruvattn.kernels import linear as L
from ruvattn.kernels.attention import OK, chunk_size
from ruvattn.mechanisms.base import _NO_KEEP, DIM, SEED, Attention, Complexity, Example, Gradients, register

__all__ = ["LinearAttention", "LinearSummary", "draw_projection"]

Array = NDArray[np.floating]
FEATURE_MAPS = {"elu": L.ELU, "favor": L.FAVOR}
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)


def draw_projection(
    rng: np.random.Generator, num_features: int, dim: int, orthogonal: bool = True
) -> NDArray[np.float64]:
    """A FAVOR+ projection ``(num_features, dim)`` in float64.

    ``orthogonal=False``: i.i.d. N(0, 1) entries.  ``orthogonal=True`` (Choromanski
    et al. 2021, "orthogonal random features"): blocks of ``dim`` rows that are exactly
    orthogonal -- the ``Q`` of the QR decomposition of a ``dim × dim`` Gaussian, column
    signs fixed by ``diag(R)`` so the block is Haar-distributed; the last block is
    truncated -- with every row then scaled to an independent chi(dim) length (the norm
    of a fresh Gaussian vector), so each row is still marginally N(0, I) and only the
    correlations within a block change (lower variance).
    """
    if not orthogonal:
        return rng.standard_normal((num_features, dim))
    blocks = []
    for start in range(0, num_features, dim):
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
        q = q * np.where(np.diag(r) < 0, -1.0, 1.0)
        blocks.append(q.T[: min(dim, num_features - start)])
    lengths = np.linalg.norm(rng.standard_normal((num_features, dim)), axis=1)
    return np.ascontiguousarray(np.concatenate(blocks) * lengths[:, None])


def _frozen(a: NDArray[Any]) -> NDArray[Any]:
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class LinearSummary:
    """The key/value summary of one key set, for any number of queries (arrays are read-only).

    ``F`` features (``m`` for FAVOR+, ``d`` for elu+1), values of width ``dv``:

    * ``S (F, dv)``: ``S_r = Σ_j exp(a_jr − shift_r) v_j`` (FAVOR+, ``a_jr`` the exponent
      of key ``j``'s feature ``r``) or ``Σ_j φ(k_j)_r v_j`` (elu+1), over the kept keys;
    * ``z (F,)``: the same sums without the values (each ``≥ 1`` for FAVOR+);
    * ``shift (F,)``: each feature's largest exponent over the keys (zeros for elu+1):
      the textbook ``φ(K)ᵀV`` and ``Σ_j φ(k_j)`` are ``S·exp(shift)/sqrt(m)`` and
      ``z·exp(shift)/sqrt(m)`` (:meth:`textbook`);
    * ``log_norm (F,) = shift + log z``;
    * ``projection (F, d)``: the projection the keys were featurised with, ``d^(−1/4)``
      folded in, in the summary's dtype (``(0, d)`` for elu+1).  Queries against this
      summary use it, so a later redraw of the mechanism leaves the summary consistent.
    """

    feature_map: str
    S: Array
    z: Array
    shift: Array
    log_norm: Array
    projection: Array
    num_keys: int
    kind: int
    half: np.floating
    dtype: np.dtype
    query_shape: tuple[int]
    #: The LinearAttention that made it: another instance's summary (another random projection) is refused.
    owner: Any = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        """Query/key width ``d``."""
        return self.query_shape[0]

    @property
    def num_features(self) -> int:
        return int(self.S.shape[0])

    @property
    def value_dim(self) -> int:
        return int(self.S.shape[1])

    def textbook(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """``(S, z)`` of the formula, ``φ(K)ᵀV (F, dv)`` and ``Σ_j φ(k_j) (F,)``, in float64.

        For FAVOR+ these are ``exp(shift)/sqrt(m)`` times the stored sums and may
        overflow to inf for large inputs (the stored form never does).
        """
        if self.kind == L.ELU:
            return self.S.astype(np.float64), self.z.astype(np.float64)
        with np.errstate(over="ignore"):
            f = np.exp(self.shift.astype(np.float64)) / math.sqrt(self.num_features)
        return self.S.astype(np.float64) * f[:, None], self.z.astype(np.float64) * f


@register("linear")
class LinearAttention(Attention):
    """Linear attention with elu+1 or FAVOR+ features (see the module docstring for the formula,
    the shapes and when it pays off).

    ``num_features`` read as an attribute is the effective feature count ``F`` (``dim`` for elu+1).
    """

    forward_options = frozenset({"mask"})
    params = (
        DIM,
        Param(
            "feature_map",
            V.Options(
                *FEATURE_MAPS,
                hint=" 'elu' is elu(x)+1 (Katharopoulos et al.), 'favor' the Performer's positive random features.",
            ),
            "elu",
            "'elu' (elu(x)+1) or 'favor' (Performer FAVOR+)",
        ),
        Param(
            "num_features",
            V.Integer(1, hint=" Try 64 or 256 (more features, less error)."),
            64,
            "FAVOR+'s number of random features m (elu+1 has dim)",
        ),
        Param(
            "redraw_every",
            V.Integer(1, hint=" Use None to keep one projection."),
            None,
            "FAVOR+ only: a new projection after every N calls that featurise keys",
            none=True,
        ),
        Param("orthogonal", V.FLAG, True, "orthogonal Gaussian blocks with chi(d) row norms (else i.i.d. rows)"),
        SEED,
    )

    @classmethod
    def _check_params(cls, owner: str, p: ParamSet) -> None:
        if p.redraw_every is not None and p.feature_map != "favor":
            raise InvalidConfig(
                f"{owner}: 'redraw_every' applies to feature_map='favor' only (elu+1 has no random "
                f"projection); got redraw_every={p.redraw_every!r} with feature_map={p.feature_map!r}."
            )

    @classmethod
    def example_params(cls, dim: int = 8, heads: int | None = None) -> dict[str, Any]:
        """FAVOR+ with ``2·dim`` features (the form with random state)."""
        return {"dim": dim, "feature_map": "favor", "num_features": 2 * dim}

    def _warmup(self, ex: Example) -> None:
        """Both feature maps through the summary, one-query, weights, features and neighbour kernels."""
        keep = np.arange(len(ex.keys)) % 3 != 1
        for fmap in ("elu", "favor"):
            m = type(self)(**{**self.get_params(), "feature_map": fmap})
            summary = m.summarize(ex.keys, ex.values, mask=keep)
            m.forward(ex.query, summary)
            m.forward_batch(ex.queries, summary)
            m.forward(ex.query, ex.keys, ex.values)
            m.forward(ex.query, ex.keys, ex.values, mask=keep)
            m.weights(ex.query, ex.keys)
            m.features(ex.keys)
            m.forward_neighbours(ex.queries, ex.keys, ex.values, ex.neighbours)

    supports_backward = True
    #: state that is drawn, not learned: no gradient (``backward`` holds it fixed)
    fixed_state = frozenset({"projection"})

    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        """FAVOR+'s projection ``(m, d)`` (elu+1 holds no random state)."""
        return {"projection": (int(self.config.num_features), self.hidden_dim)} if self._kind == L.FAVOR else {}

    def _init_state(self) -> None:
        c = self.config
        d = int(c.dim)
        self._kind = FEATURE_MAPS[c.feature_map]
        self._qshape = (d,)
        self._half = {dt: dt.type(0.5 / math.sqrt(d)) for dt in (_F32, _F64)}
        self._calls = 0
        self._rng = np.random.default_rng(c.seed)
        self._projection: NDArray[np.float64] | None = None
        self._w = {dt: _frozen(np.empty((0, d), dt)) for dt in (_F32, _F64)}
        if self._kind == L.FAVOR:
            self._use(draw_projection(self._rng, int(c.num_features), d, bool(c.orthogonal)))

    # -- the FAVOR+ projection ------------------------------------------------
    def _use(self, w: NDArray[np.float64]) -> None:
        """Adopt ``w (m, d)`` (float64) and its per-dtype kernel copies with ``d^(−1/4)`` folded in."""
        self._projection = _frozen(np.array(w, dtype=np.float64, order="C"))
        scaled = self._projection * self.hidden_dim**-0.25
        self._w = {dt: _frozen(scaled.astype(dt)) for dt in (_F32, _F64)}

    @property
    def projection_(self) -> NDArray[np.float64] | None:
        """The FAVOR+ projection ``W (m, d)``, float64, read-only (None for elu+1).  Assigning to it
        is :meth:`set_projection`."""
        return self._projection

    @projection_.setter
    def projection_(self, w: Any) -> None:
        self.set_projection(w)

    def _require_favor(self, op: str) -> None:
        if self._kind != L.FAVOR:
            raise Unsupported(f"{op}: feature_map='elu' has no random projection; use feature_map='favor'.")

    def set_projection(self, w: Any) -> LinearAttention:
        """Use the given projection ``W (num_features, dim)`` (e.g. a golden case's); returns ``self``."""
        op = f"{self.kind}.set_projection"
        self._require_favor(op)
        arr = V.as_array(w, op, "projection", 2, _F64)
        want = (int(self.config.num_features), self.hidden_dim)
        if arr.shape != want:
            fix = (
                f"Build LinearAttention({self.hidden_dim}, 'favor', num_features={arr.shape[0]}) for another m."
                if arr.shape[1] == self.hidden_dim
                else "Its width must be the mechanism's dim."
            )
            raise DimensionMismatch(
                f"{op}: projection has shape {arr.shape}, expected {want} (num_features, dim). {fix}"
            )
        V.check_finite(op, projection=arr)
        self._use(arr)
        return self

    def redraw(self) -> NDArray[np.float64]:
        """Draw the next projection of the seeded sequence (FAVOR+); returns it."""
        self._require_favor(f"{self.kind}.redraw")
        c = self.config
        self._use(draw_projection(self._rng, int(c.num_features), self.hidden_dim, bool(c.orthogonal)))
        assert self._projection is not None
        return self._projection

    def _tick(self) -> None:
        """Count one call that used the projection; redraw after every ``redraw_every``."""
        every = self.config.redraw_every
        if every is not None:
            self._calls += 1
            if self._calls % every == 0:
                self.redraw()

    # -- properties -------------------------------------------------------------
    @property
    def num_features(self) -> int:
        """``F``: ``num_features`` for FAVOR+, ``dim`` for elu+1."""
        return int(self.config.num_features) if self._kind == L.FAVOR else self.hidden_dim

    @property
    def complexity(self) -> Complexity:
        return Complexity(
            "linear",
            "O(n·d·m) time for the key/value summary (m features; m = d for elu+1, values of width ~d), "
            "then O(d·m) per query; O(m·dv) memory, no n×n array",
        )

    # -- helpers ------------------------------------------------------------------
    def _raise(self, op: str, status: Any, empty_ok: bool = False, **arrays: Any) -> None:
        V.raise_for_status(op, status, empty_ok=empty_ok, **arrays)
        if (np.asarray(status) == L.UNDERFLOW).any():
            dt = next(a.dtype for a in arrays.values() if a is not None)
            raise NumericalInstability(
                f"{op}: the normaliser φ(q)·Σ_j φ(k_j) underflowed to 0 in {dt}: elu(x)+1 is exp(x) below 0, "
                f"which is 0 for x below about {math.log(np.finfo(dt).tiny):.0f}, so the query's features and the "
                "keys' have no overlap. Scale the inputs, use float64, or feature_map='favor' (its normaliser "
                "is >= 1 by construction)."
            )

    def _keep(self, op: str, mask: Any, n: int, batch: bool = False) -> tuple[NDArray[np.bool_], bool]:
        """A keep-mask ``(n,)``; a batch's per-query ``(m, n)`` mask is :class:`Unsupported`."""
        if mask is None:
            return _NO_KEEP, False
        if batch and np.ndim(mask) == 2:
            raise Unsupported(
                f"{op}: a per-query mask (m, n) would need one key/value summary per query, which is what "
                "linear attention avoids. Pass one keep-mask (n,) shared by every query, or call forward() per query."
            )
        return V.as_keep(op, mask, (n,)), True

    def _check_summary(self, op: str, summary: LinearSummary, values: Any, mask: Any) -> None:
        if summary.owner is not None and summary.owner is not self:
            raise V.stale_prepared(op, "LinearAttention")
        if summary.feature_map != self.config.feature_map or summary.dim != self.hidden_dim:
            raise Unsupported(
                f"{op}: this summary was made by feature_map={summary.feature_map!r} with dim {summary.dim}; "
                f"this mechanism has feature_map={self.config.feature_map!r}, dim {self.hidden_dim}."
            )
        if values is not None:
            raise V.values_with_prepared(op)
        if mask is not None:
            raise Unsupported(f"{op}: apply a mask when the summary is made: summarize(keys, values, mask=...).")

    def _summary(self, op: str, k: Array, v: Array, keep: NDArray[np.bool_], use_keep: bool) -> LinearSummary:
        """The summary of validated keys/values (parallel over chunks of keys)."""
        dt = k.dtype
        n, dv, width = k.shape[0], v.shape[1], self.num_features
        parts, size = L.summary_parts(n)
        s_parts = np.empty((parts, width, dv))
        z_parts = np.empty((parts, width))
        c_parts = np.empty((parts, width))
        st_parts = np.empty(parts, np.int8)
        kept = np.empty(parts, np.int64)
        w, half = self._w[dt], self._half[dt]
        L.summary_many(k, v, keep, use_keep, w, self._kind, half, s_parts, z_parts, c_parts, st_parts, kept, size)
        s, z, shift, log_norm = np.empty((width, dv), dt), np.empty(width, dt), np.empty(width, dt), np.empty(width, dt)
        status = L.finish_summary(s_parts, z_parts, c_parts, st_parts, kept, s, z, shift, log_norm)
        if status:
            self._raise(op, status, keys=k, values=v)
        return LinearSummary(self.config.feature_map, _frozen(s), _frozen(z), _frozen(shift), _frozen(log_norm), w,
                             int(kept.sum()), self._kind, half, dt, self._qshape, self)  # fmt: skip

    # -- the API ------------------------------------------------------------------
    def features(self, x: Any) -> Array:
        """The raw features ``φ(x)``: ``(F,)`` for ``x (d,)``, ``(n, F)`` for ``x (n, d)``, in ``x``'s dtype.

        Exactly the definition (no shift), for inspection: FAVOR+ features of large
        inputs overflow, which raises :class:`~ruvattn.errors.NumericalInstability`
        (the attention methods never form them).
        """
        op = f"{self.kind}.features"
        xa = V.as_array(x, op, "x", 1 if np.ndim(x) == 1 else 2)
        V.check_width(op, "x", xa, self.hidden_dim)
        rows = xa.reshape(-1, self.hidden_dim)
        dt = xa.dtype
        out = np.empty((rows.shape[0], self.num_features), dt)
        if L.features(rows, self._w[dt], self._kind, self._half[dt], out) != OK:
            V.check_finite(op, x=xa)
            raise NumericalInstability(
                f"{op}: a FAVOR+ feature exp(w·x̃ − |x̃|²/2) overflows {dt} for these inputs. Only the raw features "
                "overflow (forward and attention_weights shift the exponents); scale x down or use float64."
            )
        return out[0] if xa.ndim == 1 else out

    def summarize(self, keys: Any, values: Any, *, mask: Any = None) -> LinearSummary:
        """The key/value summary ``(S, z)`` of ``keys (n, d)``, ``values (n, dv)`` (``mask`` ``(n,)``: keys
        to keep), in ``O(n·F·(d + dv))``; then ``forward(query, summary)`` is ``O(F·(d + dv))`` per query."""
        op = f"{self.kind}.summarize"
        if values is None:
            raise V.values_required(op, None)
        k, v = self._key_value_tables(op, keys, values)
        summary = self._summary(op, k, v, *self._keep(op, mask, k.shape[0]))
        self._tick()
        return summary

    def forward(self, query: Any, keys: Any, values: Any = None, *, mask: Any = None) -> Array:
        """Output ``(dv,)`` of one query over ``keys (n, d)``/``values (n, dv)`` (``O(n·F·(d + dv))``: slower
        than exact attention), or against a :class:`LinearSummary` (``values=None``; ``O(F·(d + dv))``, the
        fast path; the query is taken in the summary's dtype)."""
        if type(keys) is LinearSummary:
            fast = values is None and mask is None and keys.owner is self
            if fast and type(query) is np.ndarray and query.flags.carray:
                dt = keys.dtype
                if query.dtype is dt and query.shape == self._qshape == keys.query_shape and keys.kind == self._kind:
                    out = np.empty(keys.S.shape[1], dt)
                    if L.query_one(query, keys.projection, keys.kind, keys.half, keys.S, keys.z, keys.shift,
                                   keys.log_norm, out) == OK:  # fmt: skip
                        return out
            return self._forward_summary(f"{self.kind}.forward", query, keys, values, mask)
        if mask is None:
            dt = self._plain_arrays(query, keys, values)  # the hot path: a few attribute reads
            if dt is not None:
                out = np.empty(values.shape[1], dt)
                if L.forward_one(query, keys, values, _NO_KEEP, False, self._w[dt], self._kind, self._half[dt],
                                 out) == OK:  # fmt: skip
                    self._tick()
                    return out
        op = f"{self.kind}.forward"
        if values is None:
            raise V.values_required(op, "a LinearSummary")
        q, k, v, dt = self._tables(op, query, keys, values, "query")
        keep, use_keep = self._keep(op, mask, k.shape[0])
        out = np.empty(v.shape[1], dt)
        status = L.forward_one(q, k, v, keep, use_keep, self._w[dt], self._kind, self._half[dt], out)
        if status:
            self._raise(op, status, query=q, keys=k, values=v)
        self._tick()
        return out

    def _forward_summary(self, op: str, query: Any, summary: LinearSummary, values: Any, mask: Any) -> Array:
        self._check_summary(op, summary, values, mask)
        q = V.as_array(query, op, "query", 1, summary.dtype)
        V.check_width(op, "query", q, self.hidden_dim)
        out = np.empty(summary.value_dim, summary.dtype)
        status = L.query_one(q, summary.projection, summary.kind, summary.half, summary.S, summary.z, summary.shift,
                             summary.log_norm, out)  # fmt: skip
        if status:
            self._raise(op, status, query=q)
        return out

    def prepare(self, keys: Any, values: Any) -> LinearSummary:
        """The key/value summary (:meth:`summarize`): per-query work is then ``O(F·(d + dv))``."""
        return self.summarize(keys, values)

    def _weights_one(self, op: str, query: Any, keys: Any, *, mask: Any = None) -> Array:
        """The normalised weights ``φ(q)·φ(k_j) / Σ_l φ(q)·φ(k_l)`` ``(1, n)`` (removed keys: exactly 0);
        ``weights @ values`` is :meth:`forward`'s output.  ``O(n·d·F)``."""
        if type(keys) is LinearSummary:
            raise Unsupported(f"{op}: a summary no longer holds the keys; pass the keys themselves.")
        q, k, _, dt = self._tables(op, query, keys, None, "query")
        keep, use_keep = self._keep(op, mask, k.shape[0])
        out = np.empty(k.shape[0], dt)
        status = L.weights_one(q, k, keep, use_keep, self._w[dt], self._kind, self._half[dt], out)
        if status:
            self._raise(op, status, query=q, keys=k)
        return out[None, :]

    def _log_features(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """FAVOR+'s exponents ``w_r·x̃ − |x̃|²/2`` (float64; the constant ``1/sqrt(m)`` cancels in the ratio)."""
        assert self._projection is not None
        xt = x * self.hidden_dim**-0.25
        return xt @ self._projection.T - 0.5 * np.einsum("ij,ij->i", xt, xt)[:, None]

    def backward(self, query: Any, keys: Any, values: Any, grad_output: Any, *, mask: Any = None) -> Gradients:
        r"""Gradients of ``sum(grad_output * forward(...))`` for one query ``(d,)`` or a batch ``(m, d)`` (with
        ``mask (n,)``), through the feature map, FAVOR+'s projection held fixed (``params`` is empty: it is
        drawn, not learned).  With :math:`c_i = \varphi(q_i)\cdot z` and outputs :math:`o_i`, all in
        ``O((n + m) F d_v)``, no ``n × m`` array: :math:`\nabla\varphi(q_i) = (S g_i - z\,(g_i\cdot o_i))/c_i`,
        :math:`dS = \sum_i \varphi(q_i) g_i^\top / c_i`, :math:`dz = -\sum_i \varphi(q_i)(g_i\cdot o_i)/c_i`,
        :math:`\nabla\varphi(k_j) = dS\,v_j + dz`, :math:`\nabla v_j = dS^\top\varphi(k_j)`.  FAVOR+'s features are
        taken with the forward's shifts (per feature over the keys, per query), which cancel in every product.
        Computed in float64, returned in the inputs' dtype.
        """
        op = f"{self.kind}.backward"
        if type(keys) is LinearSummary:
            raise Unsupported(f"{op}: a LinearSummary has no gradient with respect to its keys; pass keys and values.")
        if values is None:
            raise V.values_required(op, "a LinearSummary")
        single = np.ndim(query) == 1
        qs, k, v, dt = self._tables(op, np.atleast_2d(query), keys, values)
        keep, use_keep = self._keep(op, mask, k.shape[0], batch=not single)
        g = self._upstream(op, grad_output, qs.shape[0], v.shape[1], single, dt).astype(np.float64)
        rows = np.flatnonzero(keep) if use_keep else np.arange(k.shape[0])
        q64, k64, v64 = qs.astype(np.float64), k[rows].astype(np.float64), v[rows].astype(np.float64)
        if self._kind == L.FAVOR:
            lk = self._log_features(k64)
            fk = np.exp(lk - lk.max(axis=0, initial=-np.inf)) if rows.size else np.empty((0, self.num_features))
            lq = self._log_features(q64) + (lk.max(axis=0) if rows.size else 0.0)
            fq = np.exp(lq - lq.max(axis=1, keepdims=True))
        else:
            fq, fk = (np.where(x > 0, x + 1, np.exp(np.minimum(x, 0))) for x in (q64, k64))
        s, z = fk.T @ v64, fk.sum(axis=0)
        c = fq @ z
        if not (c > 0).all() or not np.isfinite(c).all():
            raise NumericalInstability(f"{op}: the normaliser φ(q)·z is 0 or not finite for these inputs.")
        out = (fq @ s) / c[:, None]
        go = (g * out).sum(axis=1) / c
        dfq = (g @ s.T) / c[:, None] - z[None, :] * go[:, None]
        ds, dz = fq.T @ (g / c[:, None]), -(fq.T @ go)
        dfk = v64 @ ds.T + dz[None, :]
        dv = np.zeros(v.shape)
        dv[rows] = fk @ ds
        dk = np.zeros(k.shape)
        if self._kind == L.FAVOR:
            assert self._projection is not None
            scale = self.hidden_dim**-0.25

            def through(df: NDArray[np.float64], f: NDArray[np.float64], x: NDArray[np.float64]) -> NDArray[np.float64]:
                dl = df * f  # d/d(exponent)
                return (dl @ self._projection - dl.sum(axis=1, keepdims=True) * (x * scale)) * scale

            dq, dk[rows] = through(dfq, fq, q64), through(dfk, fk, k64)
        else:
            dq = dfq * np.where(q64 > 0, 1.0, fq)
            dk[rows] = dfk * np.where(k64 > 0, 1.0, fk)
        gq, gk, gv = (V.check_output(op, x.astype(dt), dt) for x in (dq, dk, dv))
        return Gradients(gq[0] if single else gq, gk, gv)

    def forward_batch(self, queries: Any, keys: Any, values: Any = None, *, mask: Any = None) -> Array:
        """Outputs ``(m, dv)`` of queries ``(m, d)``: the summary of the keys/values is built **once** (or
        ``keys`` is a :class:`LinearSummary`) and shared, parallel over queries.  ``mask`` ``(n,)``."""
        op = f"{self.kind}.forward_batch"
        if type(keys) is LinearSummary:
            self._check_summary(op, keys, values, mask)
            summary = keys
            qs = V.as_array(queries, op, "queries", 2, summary.dtype)
            V.check_width(op, "queries", qs, self.hidden_dim)
            raw = False
        else:
            if values is None:
                raise V.values_required(op, "a LinearSummary")
            qs, k, v, _ = self._tables(op, queries, keys, values)
            summary = self._summary(op, k, v, *self._keep(op, mask, k.shape[0], batch=True))
            raw = True
        m = qs.shape[0]
        out = np.empty((m, summary.value_dim), summary.dtype)
        status = np.empty(m, np.int8)
        L.query_many(qs, summary.projection, summary.kind, summary.half, summary.S, summary.z, summary.shift,
                     summary.log_norm, out, status, chunk_size(m))  # fmt: skip
        if status.any():
            self._raise(op, status, query=qs)
        if raw:
            self._tick()
        return out

    def forward_neighbours(self, queries: Any, keys: Any, values: Any, neighbours: Any) -> Array:
        """Node ``i`` (query row ``i``) over its own neighbour rows of the key/value tables -> ``(N, dv)``.

        ``neighbours``: a :class:`~ruvattn.graph.NeighbourList`, ``(indptr, indices)``, a
        scipy CSR matrix, or padded ``(N, k)`` ids with -1 for empty slots.  Each node
        builds the summary of its own neighbours (``O(deg·F·(d + dv))``: correct, but
        slower than exact attention for short lists).  A node with no neighbours gets a
        zero row.  Parallel over nodes.
        """
        op = f"{self.kind}.forward_neighbours"
        qs, k, v, dt = self._tables(op, queries, keys, values)
        nl = as_neighbours(op, neighbours, qs.shape[0], k.shape[0])
        out = np.empty((qs.shape[0], v.shape[1]), dt)
        status = np.empty(qs.shape[0], np.int8)
        L.neighbours_many(qs, k, v, nl.indptr, nl.indices, self._w[dt], self._kind, self._half[dt], out, status,
                          chunk_size(qs.shape[0]))  # fmt: skip
        if status.any():
            self._raise(op, status, empty_ok=True, query=qs, keys=k, values=v)
        self._tick()
        return out

r"""Sparse storage of attention weights: the large entries of each row kept in scipy CSR or COO.

:func:`sparsify` keeps, in every query row, the entries one selection rule picks and stores them as a
:class:`SparseWeights`, which reports what that costs and what it saves:

* ``top_k=k`` -- the ``k`` largest weights of the row; equal weights are taken in key order (the lower key
  index first), so the kept set is the first ``k`` of a stable descending sort;
* ``threshold=t`` -- every weight ``w >= t`` (``t`` in ``[0, 1]``; ``t = 0`` keeps every non-zero weight:
  lossless storage);
* ``mass=p`` -- the smallest set of largest weights (the same order as ``top_k``) whose sum reaches ``p`` of
  the row's sum (``p`` in ``(0, 1]``), the "nucleus" of the row.

Zeros are never stored, whichever the rule (a stored zero and a missing entry read the same).  With
``renormalize`` the kept weights of each row are divided by their sum, so the row sums to 1 again.

Reported: ``nnz``; ``nbytes``, the bytes of the arrays actually stored (CSR: ``data + indices + indptr``;
COO: ``data + row + col``); ``dense_nbytes``, the dense array of the same shape and dtype; ``saved``
``= 1 - nbytes / dense_nbytes`` (negative when the storage is denser than about half); ``mass_lost`` per
row, ``1 - kept / row sum`` computed in float64 on the input weights before ``renormalize`` and before the
cast to ``dtype`` (0 for a row with nothing in it), with ``max_mass_lost`` and ``mean_mass_lost``.

Inputs:

* dense ``(m, n)`` weights, or ``(heads, m, n)`` (what :meth:`~ruvattn.mechanisms.Attention.weights`
  returns for a batch);
* the neighbour form: ``(nnz,)`` or ``(heads, nnz)`` weights aligned with a neighbour list's CSR order
  (``neighbours=`` a :class:`~ruvattn.graph.NeighbourList`, ``(indptr, indices)``, a scipy CSR matrix,
  padded ids with -1 or one list per node), as ``mechanism.weights(queries, keys, neighbours=...)``
  returns them; ids unsorted within a row are sorted (with their weights), a repeated id is refused;
* a 2-D scipy sparse matrix: its stored entries are the row's weights (the others are zero).

Layout of several heads: **one stacked matrix** of shape ``(heads * m, n)`` whose row ``h * m + i`` is
query ``i`` of head ``h`` (the dense ``(heads, m, n)`` array reshaped to ``(heads * m, n)``), so a single
``save_npz`` holds every head; :meth:`SparseWeights.to_scipy` with ``head=h`` gives one head's ``(m, n)``.

Files: :meth:`SparseWeights.save` writes the matrix with :func:`scipy.sparse.save_npz` (so
``scipy.sparse.load_npz`` alone reads it back) and adds two entries to the same ``.npz``:
``ruvattn_meta.npy`` (JSON: shape, rule, renormalize, labels) and ``ruvattn_mass_lost.npy``.
:meth:`SparseWeights.load` reads both; the round trip is bit-exact (values, index arrays and their dtypes).

Masks are stored with :class:`~ruvattn.sparse.SparsityPattern`, which already keeps a boolean keep-mask as
canonical CSR: ``SparsityPattern(mask).to_csr()`` is the boolean CSR, ``scipy.sparse.save_npz`` /
``load_npz`` store it, and ``SparsityPattern(csr).attention_mask()`` is the dense mask again.
:meth:`SparseWeights.pattern` gives the kept entries of one head as such a pattern (a neighbour list for
``forward_neighbours``).

Shapes:
    - ``sparsify(weights (m, n) | (H, m, n))`` -> :class:`SparseWeights` with ``shape`` the input's
    - ``sparsify(weights (nnz,) | (H, nnz), neighbours=(N lists over n keys))`` -> ``shape (N, n) | (H, N, n)``
    - ``to_scipy()``: ``(H * m, n)`` (``H = 1`` without a head axis); ``mass_lost``: ``shape[:-1]``

>>> import numpy as np
>>> w = np.array([[0.5, 0.3, 0.2, 0.0], [0.25, 0.25, 0.25, 0.25]])
>>> s = sparsify(w, top_k=2)
>>> s.to_dense().tolist()
[[0.5, 0.3, 0.0, 0.0], [0.25, 0.25, 0.0, 0.0]]
>>> s.mass_lost.round(3).tolist(), s.nnz, s.nbytes  # 4 float64 + 4 int32 indices + 3 int32 indptr
([0.2, 0.5], 4, 60)
>>> sparsify(w, mass=0.75).to_scipy().indices.tolist()
[0, 1, 0, 1, 2]
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn.errors import DimensionMismatch, EmptyInput, InvalidConfig, NumericalInstability
from ruvattn.graph import NeighbourList, as_neighbours
from ruvattn.sparse.patterns import SparsityPattern

__all__ = ["RULES", "SparseWeights", "sparsify"]

#: the selection rules, in the order :func:`sparsify` names them
RULES = ("top_k", "threshold", "mass")
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # scipy.sparse stores no float16
_META, _MASS = "ruvattn_meta", "ruvattn_mass_lost"  # the entries save() adds to scipy's .npz
_VERSION = 1

Labels = tuple[Any, ...]


# -- input forms ---------------------------------------------------------------------------------------
class _Entries:
    """The candidate entries of ``R = heads * m`` stacked rows: row ``r`` is ``vals[indptr[r]:indptr[r+1]]``
    at columns ``cols[...]`` (ascending within the row); ``cols is None`` means dense (every row holds all
    ``n`` columns in order)."""

    __slots__ = ("cols", "indptr", "n", "shape", "vals")

    def __init__(
        self, vals: NDArray[Any], indptr: NDArray[np.int64], cols: NDArray[np.int64] | None, shape: tuple[int, ...]
    ) -> None:
        self.vals, self.indptr, self.cols, self.shape, self.n = vals, indptr, cols, shape, shape[-1]


def _real(op: str, x: Any, name: str = "weights") -> NDArray[Any]:
    try:
        arr = np.asarray(x)
    except ValueError:
        raise DimensionMismatch(f"{op}: {name} must be a rectangular array; got ragged rows.") from None
    if arr.dtype.kind == "b":
        raise InvalidConfig(
            f"{op}: {name} is a boolean array, a mask rather than weights; got dtype bool. "
            "Store a mask with SparsityPattern(mask).to_csr() (ruvattn.sparse)."
        )
    if arr.dtype.kind not in "fiu":
        raise DimensionMismatch(f"{op}: {name} must hold real numbers; got dtype {arr.dtype}.")
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    elif arr.dtype.kind != "f" or arr.dtype not in _DTYPES:
        arr = arr.astype(np.float64)
    V.check_finite(op, **{name: arr})
    if arr.size and (arr < 0).any():
        where = tuple(int(i) for i in np.argwhere(arr < 0)[0])
        raise InvalidConfig(
            f"{op}: {name} must be non-negative (attention weights); got {name}{list(where)} = {arr[where]}."
        )
    return arr


def _dense(op: str, weights: Any) -> _Entries:
    arr = _real(op, weights)
    if arr.ndim not in (2, 3):
        raise DimensionMismatch(f"{op}: weights has shape {arr.shape}, expected (m, n) or (heads, m, n).")
    rows, n = int(np.prod(arr.shape[:-1])), int(arr.shape[-1])
    if n == 0:
        raise EmptyInput(f"{op}: weights has no keys; got shape {arr.shape}. There is nothing to store.")
    indptr = np.arange(rows + 1, dtype=np.int64) * n
    return _Entries(np.ascontiguousarray(arr).reshape(-1), indptr, None, tuple(arr.shape))


def _from_scipy(op: str, weights: Any) -> _Entries:
    if weights.ndim != 2:
        raise DimensionMismatch(f"{op}: weights has shape {weights.shape}, expected a 2-D (m, n) sparse matrix.")
    csr = sp.csr_array(weights, copy=True)
    csr.sum_duplicates()  # scipy's meaning of a repeated entry; also sorts the column ids
    data = _real(op, csr.data)
    m, n = (int(s) for s in csr.shape)
    if n == 0:
        raise EmptyInput(f"{op}: weights has no keys; got shape {csr.shape}. There is nothing to store.")
    return _Entries(data, csr.indptr.astype(np.int64), csr.indices.astype(np.int64), (m, n))


def _neighbour_form(op: str, weights: Any, neighbours: Any, num_keys: int | None) -> _Entries:
    arr = _real(op, weights)
    if arr.ndim not in (1, 2):
        raise DimensionMismatch(
            f"{op}: weights has shape {arr.shape}, expected (nnz,) or (heads, nnz) aligned with the neighbour list."
        )
    if num_keys is None:
        if isinstance(neighbours, NeighbourList):
            num_keys = neighbours.num_keys
        elif sp.issparse(neighbours):
            num_keys = int(neighbours.shape[1])
        else:
            raise InvalidConfig(
                f"{op}: 'num_keys' (the number of keys the ids index) is required with neighbour ids given as "
                f"{type(neighbours).__name__}; got None."
            )
    n = V.positive_int(op, "num_keys", num_keys)
    if isinstance(neighbours, NeighbourList):
        nodes = neighbours.num_nodes
    elif sp.issparse(neighbours):
        nodes = int(neighbours.shape[0])
    elif isinstance(neighbours, tuple) and len(neighbours) == 2:
        nodes = len(neighbours[0]) - 1
    else:
        nodes = len(neighbours)
    nl = as_neighbours(op, neighbours, nodes, n)
    if arr.shape[-1] != nl.nnz:
        raise DimensionMismatch(
            f"{op}: weights has shape {arr.shape}, expected (..., {nl.nnz}): one weight per neighbour id, "
            "in the list's CSR order."
        )
    heads = arr.reshape(-1, nl.nnz)
    row = np.repeat(np.arange(nodes, dtype=np.int64), nl.degrees())
    order = np.lexsort((nl.indices, row))  # each row's ids ascending, their weights with them
    cols = nl.indices[order]
    repeated = (row[order][1:] == row[order][:-1]) & (cols[1:] == cols[:-1])
    if repeated.any():
        at = int(np.flatnonzero(repeated)[0]) + 1
        raise InvalidConfig(
            f"{op}: a neighbour id may appear once per row; got id {cols[at]} twice in row {row[order][at]}."
        )
    h = heads.shape[0]
    indptr = np.concatenate([(nl.indptr[:-1][None, :] + nl.nnz * np.arange(h)[:, None]).ravel(), [h * nl.nnz]])
    shape = (nodes, n) if arr.ndim == 1 else (h, nodes, n)
    return _Entries(heads[:, order].reshape(-1), indptr.astype(np.int64), np.tile(cols, h), shape)


# -- selection -------------------------------------------------------------------------------------------
def _segment_sum(x: NDArray[Any], indptr: NDArray[np.int64]) -> NDArray[np.float64]:
    """Per-row sums (float64) of a flat array laid out by ``indptr``."""
    deg = np.diff(indptr)
    if deg.size and deg[0] > 0 and (deg == deg[0]).all():
        return x.reshape(deg.size, int(deg[0])).sum(axis=1, dtype=np.float64)
    return np.bincount(np.repeat(np.arange(deg.size), deg), weights=x, minlength=deg.size)


def _segment_cumsum(s: NDArray[np.float64], indptr: NDArray[np.int64]) -> NDArray[np.float64]:
    """Running sums restarting at every row (one vectorised pass per position, rows longest first)."""
    deg = np.diff(indptr)
    if deg.size == 0 or s.size == 0:
        return s.copy()
    if (deg == deg[0]).all():
        return s.reshape(deg.size, int(deg[0])).cumsum(axis=1).ravel()
    by_length = np.argsort(-deg, kind="stable")
    starts, lengths = indptr[:-1][by_length], deg[by_length]
    c = s.copy()
    for j in range(1, int(lengths[0])):
        live = starts[: int(np.searchsorted(-lengths, -j, side="left"))] + j  # the rows longer than j
        c[live] += c[live - 1]
    return c


def _descending(vals: NDArray[Any], indptr: NDArray[np.int64]) -> NDArray[np.int64]:
    """A permutation putting each row's entries in descending order, equal values in key order."""
    deg = np.diff(indptr)
    if deg.size and deg[0] > 0 and (deg == deg[0]).all():
        order = np.argsort(-vals.reshape(deg.size, int(deg[0])), axis=1, kind="stable")
        return (order + indptr[:-1, None]).ravel()
    row = np.repeat(np.arange(deg.size), deg)
    return np.lexsort((np.arange(vals.size), -vals, row))


def _keep(e: _Entries, rule: str, value: float) -> NDArray[np.bool_]:
    """Which entries the rule keeps (never a zero)."""
    if rule == "threshold":
        return (e.vals >= value) & (e.vals > 0)
    deg = np.diff(e.indptr)
    perm = _descending(e.vals, e.indptr)
    s = e.vals[perm].astype(np.float64)
    rank = np.arange(s.size) - np.repeat(e.indptr[:-1], deg)
    if rule == "top_k":
        kept = rank < value
    else:  # mass: the shortest prefix whose running sum reaches value * (the row's sum in that order)
        c = _segment_cumsum(s, e.indptr)
        total = np.zeros(deg.size)
        total[deg > 0] = c[e.indptr[1:][deg > 0] - 1]
        target = np.repeat(value * total, deg)
        count = _segment_sum((c < target).astype(np.float64), e.indptr).astype(np.int64) + 1
        kept = rank < np.repeat(count, deg)
    keep = np.empty(s.size, dtype=bool)
    keep[perm] = kept & (s > 0)
    return keep


def _labels(op: str, name: str, labels: Any, size: int) -> Labels | None:
    if labels is None:
        return None
    items = labels.tolist() if isinstance(labels, np.ndarray) else list(labels)
    if len(items) != size:
        raise DimensionMismatch(
            f"{op}: {name} must have one label per {name.split('_')[0]} ({size}); got {len(items)}."
        )
    out = []
    for item in items:
        item = item.item() if isinstance(item, np.generic) else item
        if not isinstance(item, (str, int, float)):
            raise InvalidConfig(f"{op}: {name} must be strings or numbers; got {type(item).__name__} {item!r}.")
        out.append(item)
    return tuple(out)


def _rule(op: str, top_k: Any, threshold: Any, mass: Any, n: int) -> tuple[str, float]:
    given = [(name, v) for name, v in zip(RULES, (top_k, threshold, mass), strict=True) if v is not None]
    if len(given) != 1:
        got = ", ".join(name for name, _ in given) or "none"
        raise InvalidConfig(f"{op}: give exactly one of 'top_k', 'threshold' or 'mass'; got {got}.")
    name, value = given[0]
    if name == "top_k":
        return name, V.Integer(1, n).check(op, "top_k", value)
    if name == "threshold":
        return name, V.Real(0.0, 1.0).check(op, "threshold", value)
    return name, V.Real(0.0, 1.0, closed="right").check(op, "mass", value)


def sparsify(
    weights: Any,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
    mass: float | None = None,
    neighbours: Any = None,
    num_keys: int | None = None,
    format: str = "csr",
    renormalize: bool = False,
    dtype: Any = None,
    query_labels: Sequence[Any] | None = None,
    key_labels: Sequence[Any] | None = None,
) -> SparseWeights:
    """Keep the entries one rule picks in every row of ``weights`` (see the module docstring).

    ``top_k`` (an integer in ``[1, n]``), ``threshold`` (in ``[0, 1]``) or ``mass`` (in ``(0, 1]``): exactly
    one.  ``neighbours`` / ``num_keys``: the neighbour form (``weights`` aligned with the list's CSR order;
    ``num_keys`` defaults to a NeighbourList's or scipy matrix's width).  ``format``: ``"csr"`` or
    ``"coo"``.  ``renormalize``: divide each row's kept weights by their sum.  ``dtype``: of the stored values
    (float32 or float64; default the input's, float16 as float32, integers as float64).  ``query_labels`` /
    ``key_labels``: one string or number per query / key, kept with the weights.
    """
    op = "sparsify"
    if neighbours is not None:
        e = _neighbour_form(op, weights, neighbours, num_keys)
    elif sp.issparse(weights):
        e = _from_scipy(op, weights)
    else:
        e = _dense(op, weights)
    rule, value = _rule(op, top_k, threshold, mass, e.n)
    fmt = V.Options("csr", "coo").check(op, "format", format)
    renorm = V.FLAG.check(op, "renormalize", renormalize)
    out_dtype = e.vals.dtype if dtype is None else _as_dtype(dtype)
    if out_dtype is None or all(out_dtype != d for d in _DTYPES):
        raise InvalidConfig(f"{op}: 'dtype' must be float32 or float64 (scipy.sparse has no float16); got {dtype!r}.")
    m = e.shape[-2]
    qlab = _labels(op, "query_labels", query_labels, m)
    klab = _labels(op, "key_labels", key_labels, e.n)

    keep = _keep(e, rule, value)
    row_sum = _segment_sum(e.vals, e.indptr)
    kept = np.where(keep, e.vals, 0)
    kept_sum = _segment_sum(kept, e.indptr)
    with np.errstate(divide="ignore", invalid="ignore"):
        lost = np.where(row_sum > 0, np.maximum(1.0 - kept_sum / row_sum, 0.0), 0.0)

    at = np.flatnonzero(keep)
    counts = _segment_sum(keep.astype(np.float64), e.indptr).astype(np.int64)
    indptr = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    cols = at % e.n if e.cols is None else e.cols[at]
    data = e.vals[at].astype(np.float64)
    if renorm:
        data /= np.repeat(kept_sum, counts)
    with np.errstate(over="ignore"):
        data = data.astype(out_dtype)
    if not np.isfinite(data).all():
        big = e.vals[at][~np.isfinite(data)][0]
        raise NumericalInstability(f"{op}: a kept weight does not fit {out_dtype}; got {big:.3g}. Use dtype='float32'.")
    idx = np.int32 if max(counts.size, e.n, int(at.size)) < 2**31 - 1 else np.int64
    matrix: Any = sp.csr_array((data, cols.astype(idx), indptr.astype(idx)), shape=(counts.size, e.n))
    if fmt == "coo":
        matrix = matrix.tocoo()
    return SparseWeights(
        matrix, e.shape, (rule, value), lost.reshape(e.shape[:-1]),
        renormalized=renorm, query_labels=qlab, key_labels=klab,
    )  # fmt: skip


def _as_dtype(x: Any) -> np.dtype | None:
    try:
        return np.dtype(x)
    except TypeError:
        return None


# -- the stored form -------------------------------------------------------------------------------------
class SparseWeights:
    """Queries × keys attention weights stored sparse (built by :func:`sparsify` or :meth:`load`).

    Attributes: ``shape`` (``(m, n)`` or ``(heads, m, n)``, the dense shape), ``rule`` (``("top_k", 8)``,
    ``("threshold", 0.05)`` or ``("mass", 0.9)``), ``renormalized``, ``mass_lost`` (``shape[:-1]``, float64),
    ``query_labels`` / ``key_labels`` (tuples or ``None``); reports ``nnz``, ``nbytes``, ``dense_nbytes``,
    ``saved``, ``max_mass_lost``, ``mean_mass_lost`` (all in :meth:`report`).
    """

    __slots__ = ("_matrix", "key_labels", "mass_lost", "query_labels", "renormalized", "rule", "shape")

    def __init__(
        self,
        matrix: Any,
        shape: tuple[int, ...],
        rule: tuple[str, float],
        mass_lost: Any,
        *,
        renormalized: bool = False,
        query_labels: Sequence[Any] | None = None,
        key_labels: Sequence[Any] | None = None,
    ) -> None:
        op = "SparseWeights"
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (2, 3):
            raise DimensionMismatch(f"{op}: shape must be (m, n) or (heads, m, n); got {shape}.")
        if not sp.issparse(matrix) or matrix.format not in ("csr", "coo"):
            raise InvalidConfig(f"{op}: matrix must be a scipy CSR or COO matrix; got {type(matrix).__name__}.")
        stacked = (int(np.prod(shape[:-1])), shape[-1])
        if tuple(matrix.shape) != stacked:
            raise DimensionMismatch(f"{op}: matrix has shape {tuple(matrix.shape)}, expected {stacked} for {shape}.")
        lost = np.asarray(mass_lost, dtype=np.float64)
        if lost.shape != shape[:-1]:
            raise DimensionMismatch(f"{op}: mass_lost has shape {lost.shape}, expected {shape[:-1]}.")
        if rule[0] not in RULES:
            raise InvalidConfig(f"{op}: rule must name one of {', '.join(RULES)}; got {rule[0]!r}.")
        self._matrix = matrix
        self.shape, self.rule, self.mass_lost, self.renormalized = shape, (rule[0], rule[1]), lost, bool(renormalized)
        self.query_labels = _labels(op, "query_labels", query_labels, shape[-2])
        self.key_labels = _labels(op, "key_labels", key_labels, shape[-1])

    # -- sizes and losses -----------------------------------------------------------------------------------
    @property
    def num_heads(self) -> int:
        """``H`` (1 for ``(m, n)`` weights)."""
        return self.shape[0] if len(self.shape) == 3 else 1

    @property
    def num_queries(self) -> int:
        return self.shape[-2]

    @property
    def num_keys(self) -> int:
        return self.shape[-1]

    @property
    def format(self) -> str:
        """``"csr"`` or ``"coo"``."""
        return str(self._matrix.format)

    @property
    def dtype(self) -> np.dtype:
        return self._matrix.dtype

    @property
    def nnz(self) -> int:
        """Stored entries, over every head."""
        return int(self._matrix.nnz)

    def _arrays(self) -> tuple[NDArray[Any], ...]:
        m = self._matrix
        return (m.data, m.indices, m.indptr) if m.format == "csr" else (m.data, m.row, m.col)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays stored: ``data + indices + indptr`` (CSR) or ``data + row + col`` (COO)."""
        return int(sum(a.nbytes for a in self._arrays()))

    @property
    def dense_nbytes(self) -> int:
        """Bytes of the dense array of the same shape and dtype."""
        return int(np.prod(self.shape)) * self.dtype.itemsize

    @property
    def saved(self) -> float:
        """``1 - nbytes / dense_nbytes``: the fraction of the dense array's memory saved."""
        return 1.0 - self.nbytes / self.dense_nbytes if self.dense_nbytes else 0.0

    @property
    def max_mass_lost(self) -> float:
        return float(self.mass_lost.max()) if self.mass_lost.size else 0.0

    @property
    def mean_mass_lost(self) -> float:
        return float(self.mass_lost.mean()) if self.mass_lost.size else 0.0

    def report(self) -> dict[str, Any]:
        """The numbers above in one dict (for tables and notebooks)."""
        return {
            "rule": f"{self.rule[0]}={self.rule[1]:g}",
            "nnz": self.nnz,
            "nbytes": self.nbytes,
            "dense_nbytes": self.dense_nbytes,
            "saved": self.saved,
            "max_mass_lost": self.max_mass_lost,
            "mean_mass_lost": self.mean_mass_lost,
        }

    # -- views ----------------------------------------------------------------------------------------------
    def to_scipy(self, head: int | None = None) -> Any:
        """A copy of the stored matrix: every head stacked ``(H * m, n)``, or head ``head``'s ``(m, n)``."""
        if head is None:
            return self._matrix.copy()
        h = V.Integer(0, self.num_heads - 1).check("SparseWeights.to_scipy", "head", head)
        m = self.num_queries
        rows = self._matrix.tocsr()[h * m : (h + 1) * m]
        return rows.tocoo() if self.format == "coo" else rows

    def to_dense(self) -> NDArray[np.floating]:
        """The dense weights of ``shape`` (zero where nothing is stored), in the stored dtype."""
        return self._matrix.toarray().reshape(self.shape)

    def pattern(self, head: int = 0) -> SparsityPattern:
        """The kept (query, key) pairs of one head as a :class:`~ruvattn.sparse.SparsityPattern`."""
        return SparsityPattern(self.to_scipy(head))

    def with_labels(
        self, query_labels: Sequence[Any] | None = None, key_labels: Sequence[Any] | None = None
    ) -> SparseWeights:
        """The same stored weights with new labels (``None`` keeps the current ones)."""
        return SparseWeights(
            self._matrix, self.shape, self.rule, self.mass_lost, renormalized=self.renormalized,
            query_labels=self.query_labels if query_labels is None else query_labels,
            key_labels=self.key_labels if key_labels is None else key_labels,
        )  # fmt: skip

    # -- files ----------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write one ``.npz`` (the suffix is added if missing): scipy's ``save_npz`` of the stacked matrix plus
        this object's metadata and ``mass_lost``.  Returns the path written."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        sp.save_npz(path, self._matrix)
        meta = {
            "version": _VERSION,
            "shape": list(self.shape),
            "rule": list(self.rule),
            "renormalized": self.renormalized,
            "query_labels": None if self.query_labels is None else list(self.query_labels),
            "key_labels": None if self.key_labels is None else list(self.key_labels),
        }
        with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, arr in ((_META, np.array(json.dumps(meta))), (_MASS, self.mass_lost)):
                with zf.open(f"{name}.npy", "w") as f:
                    np.lib.format.write_array(f, arr, allow_pickle=False)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SparseWeights:
        """Read a file written by :meth:`save`."""
        matrix = sp.load_npz(path)
        with np.load(path, allow_pickle=False) as z:
            if _META not in z.files or _MASS not in z.files:
                raise InvalidConfig(
                    f"SparseWeights.load: {path} holds a scipy sparse matrix but no SparseWeights metadata; got "
                    f"entries {sorted(z.files)}. Build one with sparsify(scipy.sparse.load_npz(path), ...)."
                )
            meta = json.loads(z[_META].item())
            lost = z[_MASS]
        if meta.get("version") != _VERSION:
            raise InvalidConfig(f"SparseWeights.load: unknown file version; got {meta.get('version')!r}.")
        return cls(
            matrix, tuple(meta["shape"]), (meta["rule"][0], meta["rule"][1]), lost,
            renormalized=meta["renormalized"], query_labels=meta["query_labels"], key_labels=meta["key_labels"],
        )  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"SparseWeights(shape={self.shape}, {self.rule[0]}={self.rule[1]:g}, format={self.format!r}, "
            f"nnz={self.nnz}, saved={self.saved:.1%}, max_mass_lost={self.max_mass_lost:.3g})"
        )

"""The reliability sweep (the specification's NFR-002.1): seeded random operations on every mechanism.

An *operation* is one public call on one registered mechanism (:func:`ruvattn.available`):
``forward``, ``forward`` over keys from ``prepare``, ``forward_batch``, ``forward_neighbours``,
the three forms of ``weights``, ``attention_weights``, ``backward``, ``embed``, ``set_params``
with random valid and invalid values, ``build`` from a (mutated) dict, and GAT's ``forward_graph``.
Its inputs are drawn from a mix of

* valid problems (the mechanism's own input space, :meth:`~ruvattn.mechanisms.Attention.embed`);
* magnitudes over each dtype's whole finite range (float32 and float64): element-wise
  log-uniform from the smallest subnormal to ``np.finfo(dtype).max`` (which is also used
  exactly), zeros, subnormals, one huge row, points at the edge of a curved space;
* NaN and ±inf injected into one argument (query, keys, values, bias, edge features, the
  upstream gradient, a node table);
* wrong shapes, lengths and dtypes (int, bool, complex, object, str, float16), empty key sets,
  empty neighbour lists, bad ids (negative, too large, fractional), mixed dtypes and
  non-contiguous, Fortran-ordered or read-only layouts;
* random configurations (temperatures and scales from 1e-45 to 1e38, curvatures, dropout in
  training mode, edge features, component weights, ...).

Every operation gets one outcome (:data:`OUTCOMES`):

``ok``
    it returned, and every float array in the result is finite (tuples such as the gradients'
    ``NamedTuple`` are checked field by field);
``typed``
    it raised an :class:`~ruvattn.errors.AttentionError` (the class is counted);
``nonfinite``
    it returned NaN or inf: a failure;
``untyped``
    it raised any other exception: a failure;
``accepted``
    it returned normally on an input the contract must refuse (fractional or out-of-range ids,
    omitted values, a key width other than ``dim``, complex or object data, keys and values of
    different lengths, a NaN query or an all-NaN table, every key masked out, an empty key set
    where ``empty_keys_raise``, a NaN/inf/str parameter value): a silent wrong answer, a failure;
``inconsistent``
    ``set_params`` raised but left the object changed: a failure.

A process abort cannot be recorded from inside; run chunks in separate processes (the
``reliability_sweep`` experiment does) and a crash shows up as a failed point.

Operation ``i`` of chunk ``c`` of seed ``s`` is drawn from its own PCG64 stream (its state a hash
of ``(s, c, i)``): the same (seed, chunk) always gives the same operations
and the same counts, and :func:`replay` rebuilds any one of them for a debugger
(mechanisms are built per chunk; state a call changes, such as a FAVOR+ redraw counter or the
dropout generator, carries over to the next operation within a chunk).

>>> r = run_sweep(seed=1, ops=30, kinds=["scaled_dot_product"])
>>> r.ops, sum(r.counts.values())
(30, 30)
>>> {outcome for (_, _, outcome) in r.counts} <= set(OUTCOMES)
True
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import re
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ruvattn.errors import AttentionError, InvalidConfig

__all__ = [
    "FAILURES",
    "OPERATIONS",
    "OUTCOMES",
    "Operation",
    "SweepResult",
    "classify",
    "experiment_result",
    "format_table",
    "generate",
    "main",
    "merge_rows",
    "nonfinite_in",
    "replay",
    "run_sweep",
]

OUTCOMES = ("ok", "typed", "nonfinite", "untyped", "accepted", "inconsistent")
#: the outcomes that are failures (NFR-002.1 is ``nonfinite`` and ``untyped``)
FAILURES = ("nonfinite", "untyped", "accepted", "inconsistent")

#: operation -> relative frequency (the cheap single-query forms dominate)
OPERATIONS: dict[str, float] = {
    "forward": 26.0,
    "forward_prepared": 7.0,
    "forward_batch": 8.0,
    "forward_neighbours": 7.0,
    "weights": 8.0,
    "weights_batch": 5.0,
    "weights_neighbours": 5.0,
    "attention_weights": 8.0,
    "backward": 6.0,
    "embed": 3.0,
    "set_params": 4.0,
    "build": 3.0,
    "forward_graph": 6.0,  # GAT layers only
}

_GRAPH_KINDS = frozenset({"gat", "gatv2"})
_NCONF = 6  # configurations per mechanism and chunk: 0 is the example's, the others random
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_FINFO = {dt: np.finfo(dt) for dt in _FLOAT_DTYPES}
_NAMES = {dt: dt.name for dt in _FLOAT_DTYPES}
_LOG_MAX = {dt: math.log10(float(_FINFO[dt].max)) for dt in _FLOAT_DTYPES}
_LOG_SUB = {dt: math.log10(float(_FINFO[dt].smallest_subnormal)) for dt in _FLOAT_DTYPES}
#: parameters that fix the input widths (never drawn at random: the inputs are drawn for them)
_SHAPE_PARAMS = frozenset({"dim", "in_channels", "out_channels", "experts"})
#: which method's keyword-only options an operation may pass
_OPTION_SOURCE = {
    "forward": "forward", "forward_prepared": "forward", "forward_batch": "forward_batch",
    "forward_neighbours": "forward_neighbours", "weights": "_weights_one", "attention_weights": "_weights_one",
    "weights_batch": "_weights_batch", "weights_neighbours": "_weights_neighbours", "backward": "backward",
}  # fmt: skip
_SINGLE = frozenset({"forward", "forward_prepared", "weights", "attention_weights"})
_BATCH = frozenset({"forward_batch", "weights_batch"})
_NEIGHBOUR_OPS = frozenset({"forward_neighbours", "weights_neighbours"})
_NEEDS_VALUES = frozenset({"forward", "forward_prepared", "forward_batch", "forward_neighbours", "backward"})


_M64 = (1 << 64) - 1
_INC = 0xDA3E39CB94B95BDB_5851F42D4C957F2D | 1  # a fixed odd PCG64 increment


def _mix64(x: int) -> int:
    """SplitMix64's finaliser: a 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


class _Inconsistent(Exception):
    """Raised by a ``set_params`` operation whose rejected change left the object changed."""


# -- outcomes --------------------------------------------------------------------------------
def nonfinite_in(result: Any, name: str = "output") -> str | None:
    """Where ``result`` holds NaN or inf (``"output[1] has NaN"``), or ``None`` when every float array
    (and float) in it is finite; tuples, ``NamedTuple`` fields, lists and dicts are searched."""
    if isinstance(result, np.ndarray):
        if result.dtype.kind in "fc" and result.size and not np.isfinite(result).all():
            kind = "NaN" if np.isnan(result).any() else "inf"
            return f"{name} has {kind}"
        return None
    if isinstance(result, (float, np.floating)):
        return None if math.isfinite(result) else f"{name} is {result}"
    if isinstance(result, tuple):
        names = getattr(result, "_fields", None) or [f"[{i}]" for i in range(len(result))]
        for key, item in zip(names, result, strict=False):
            hit = nonfinite_in(item, f"{name}.{key}" if key[0] != "[" else name + key)
            if hit:
                return hit
    elif isinstance(result, list):
        for i, item in enumerate(result):
            hit = nonfinite_in(item, f"{name}[{i}]")
            if hit:
                return hit
    elif isinstance(result, dict):
        for key, item in result.items():
            hit = nonfinite_in(item, f"{name}[{key!r}]")
            if hit:
                return hit
    return None


def classify(call: Callable[[], Any], invalid: str | None = None) -> tuple[str, str, str]:
    """Run ``call`` and return ``(outcome, error class or "", message)``.

    ``invalid`` names why the contract must refuse the input (a returned result is then
    ``accepted``).  Outcomes: see :data:`OUTCOMES`.

    >>> classify(lambda: np.array([1.0, np.nan]))[:2]
    ('nonfinite', '')
    >>> classify(lambda: {}["x"])[:2]
    ('untyped', 'KeyError')
    """
    try:
        result = call()
    except AttentionError as exc:
        return "typed", type(exc).__name__, str(exc)
    except _Inconsistent as exc:
        return "inconsistent", "", str(exc)
    except Exception as exc:
        return "untyped", type(exc).__name__, str(exc)
    where = nonfinite_in(result)
    if where:
        return "nonfinite", "", where
    if invalid:
        return "accepted", "", f"returned a result for an invalid input ({invalid})"
    return "ok", "", ""


# -- one operation ---------------------------------------------------------------------------
@dataclass
class Operation:
    """One drawn operation: ``call()`` makes the public call; ``run()`` classifies it."""

    seed: int
    chunk: int
    index: int
    kind: str
    op: str
    config: int
    call: Callable[[], Any]
    tags: list[str] = field(default_factory=list)
    invalid: str | None = None  # why the contract must refuse it, if it must
    spec: dict[str, Any] = field(default_factory=dict)  # the mechanism's to_dict()

    def run(self) -> tuple[str, str, str]:
        """``(outcome, error class, message)`` of :func:`classify`."""
        return classify(self.call, self.invalid)

    def describe(self) -> str:
        """The input in a few words: dtype, sizes, magnitudes and what is bad about it."""
        text = ", ".join(self.tags)
        return f"{text}; must refuse: {self.invalid}" if self.invalid else text


class _Draw:
    """Fast draws from one generator (uniforms taken 32 at a time), plus the tags that describe what was drawn."""

    __slots__ = ("buf", "invalid", "k", "rng", "tags")

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.tags: list[str] = []
        self.invalid: str | None = None
        self.buf: list[float] = []
        self.k = 0

    def u(self) -> float:
        k = self.k
        if k == len(self.buf):
            self.buf = self.rng.random(32).tolist()
            k = 0
        self.k = k + 1
        return self.buf[k]

    def i(self, k: int) -> int:
        return int(self.u() * k) if k > 0 else 0

    def pick(self, seq: Sequence[Any]) -> Any:
        return seq[int(self.u() * len(seq))]

    def chance(self, p: float) -> bool:
        return self.u() < p

    def tag(self, text: str) -> None:
        self.tags.append(text)

    def refuse(self, why: str) -> None:
        if self.invalid is None:
            self.invalid = why

    def count(self, hi: int) -> int:
        """0 .. hi, skewed small (0 and 1 are frequent edge cases)."""
        r = self.u()
        if r < 0.04:
            return 0
        if r < 0.10:
            return 1
        return min(hi, 1 + int(hi ** self.u()))


# -- mechanisms per chunk --------------------------------------------------------------------
@dataclass
class _Entry:
    mech: Any
    spec: dict[str, Any]
    dim: int
    dv: int
    space: str
    curvature: float
    seed: int = 0
    pools: dict[int, np.ndarray] = field(default_factory=dict)

    def pool(self, width: int) -> np.ndarray:
        """256 valid float64 points of ``width`` in the input space (embedded once per chunk)."""
        got = self.pools.get(width)
        if got is None:
            raw = np.random.default_rng([self.seed, width]).standard_normal((256, width))
            got = self.pools[width] = _embed(self, raw)
        return got


def _defaults(cls: Any, dim: int, heads: int | None) -> dict[str, Any]:
    from ruvattn._params import REQUIRED

    out = {p.name: p.default for p in cls.params if p.default is not REQUIRED}
    out.update(cls.example_params(dim, heads=heads))
    return out


def _valid_value(g: _Draw, p: Any, current: Mapping[str, Any], dim: int) -> Any:
    """A value the parameter's constraint accepts (edge values favoured), or the current one when unknown."""
    from ruvattn import _validation as V

    if p.none and g.chance(0.15):
        return None
    if p.options is not None:
        try:
            return g.pick(list(p.options(current)))
        except Exception:  # an options helper needing other values: fall through to the constraint
            pass
    return _constraint_value(g, p.name, p.constraint, current.get(p.name), dim, V)


def _magnitude(g: _Draw, lo: float = -45.0, hi: float = 38.0) -> float:
    return float(10.0 ** (lo + (hi - lo) * g.u()))


def _constraint_value(g: _Draw, name: str, c: Any, current: Any, dim: int, V: Any) -> Any:
    if isinstance(c, V.Either):
        return _constraint_value(g, name, g.pick(c.options), current, dim, V)
    if isinstance(c, V.Boolean):
        return g.chance(0.5)
    if isinstance(c, V.Options):
        return g.pick(c.choices)
    if isinstance(c, V.Curvature):
        return c.sign * _magnitude(g, -30.0, 30.0)
    if isinstance(c, V.Integer):
        lo = 0 if c.low is None else int(c.low)
        if name == "seed":
            return g.pick([0, 1, 12345, 2**63 - 1])
        value = lo + g.i(6)
        return min(value, int(c.high)) if c.high is not None else value
    if isinstance(c, V.Real):
        if c.low is not None and c.high is not None:  # a bounded interval: uniform inside, ends included
            value = c.low + (c.high - c.low) * g.u()
            if g.chance(0.2):
                value = c.high if c.closed in ("both", "right") else c.low if c.closed == "left" else value
            return float(value)
        if c.low == 0.0 and c.high is None:
            return 0.0 if c.closed in ("both", "left") and g.chance(0.1) else _magnitude(g)
        return (1 if g.chance(0.5) else -1) * _magnitude(g)
    if name == "components":  # MixedCurvatureAttention: random factors that add up to dim
        return _components(g, dim)
    if isinstance(current, list) and current and all(isinstance(x, (int, float)) for x in current):
        return [0.0 if g.chance(0.15) else _magnitude(g, -45.0, 30.0) for _ in current]  # weights, importance
    return current


def _components(g: _Draw, dim: int) -> list[list[Any]]:
    parts, left = [], dim
    while left:
        w = left if len(parts) == 2 else 1 + g.i(left)
        name = g.pick(["euclidean", "poincare", "sphere"])
        curv = {"euclidean": 0.0, "poincare": -_magnitude(g, -3, 3), "sphere": _magnitude(g, -3, 3)}[name]
        parts.append([name, w] if name == "euclidean" else [name, w, curv])
        left -= w
    return parts


_BAD_VALUES: tuple[tuple[str, Any], ...] = (
    ("nan", float("nan")), ("inf", float("inf")), ("-inf", float("-inf")), ("str", "abc"), ("neg", -1),
    ("zero", 0), ("half", 0.5), ("bool", True), ("list", [1, 2]), ("dict", {"a": 1}), ("huge", 1e300),
    ("-huge", -1e300), ("tiny", 5e-324), ("none", None),
)  # fmt: skip
_BAD_CUSTOM: tuple[Any, ...] = ("x", [], [1], 5, {"a": 1}, [{"type": "nope"}], [["sphere", 0]], [float("nan")])


def _invalid_value(g: _Draw, p: Any) -> tuple[Any, str, bool]:
    """``(value, label, certainly invalid)`` of a probably-bad value for parameter ``p``."""
    from ruvattn import _validation as V

    if isinstance(p.constraint, V.Custom) and g.chance(0.5):
        v = g.pick(_BAD_CUSTOM)
        return v, f"{v!r}", False
    label, v = g.pick(_BAD_VALUES)
    # NaN, inf and text are never a valid number, flag or choice; None only where the parameter takes it
    certain = label in ("nan", "inf", "-inf", "str") or (label == "none" and not p.none)
    certain = certain and not isinstance(p.constraint, V.Custom)
    return v, label, certain


class _Context:
    """The mechanisms of one chunk (built on first use) and the drawing of operations."""

    def __init__(self, seed: int, chunk: int, dims: Sequence[int], max_keys: int, kinds: Sequence[str] | None) -> None:
        from ruvattn import available
        from ruvattn.mechanisms.base import mechanism_class

        self.seed, self.chunk = int(seed), int(chunk)
        self.dims = [int(d) for d in dims]
        self.max_keys = int(max_keys)
        self.kinds = sorted(kinds) if kinds is not None else available()
        unknown = sorted(set(self.kinds) - set(available()))
        if unknown or not self.kinds:
            raise InvalidConfig(f"run_sweep: unknown mechanism(s) {unknown}; available: {available()}.")
        self.entries: dict[tuple[str, int], _Entry] = {}
        self.table: dict[str, tuple[list[str], np.ndarray]] = {}
        for kind in self.kinds:
            names = [op for op in OPERATIONS if op != "forward_graph" or kind in _GRAPH_KINDS]
            backward = mechanism_class(kind).supports_backward  # elsewhere backward only raises Unsupported
            weights = np.cumsum([OPERATIONS[op] if op != "backward" or backward else 0.5 for op in names])
            self.table[kind] = (names, weights / weights[-1])
        self.options: dict[tuple[str, str], tuple[str, ...]] = {}
        self._bits = np.random.PCG64(0)
        self._rng = np.random.Generator(self._bits)

    # -- mechanisms
    def entry(self, kind: str, c: int) -> _Entry:
        got = self.entries.get((kind, c))
        if got is None:
            got = self.entries[(kind, c)] = self._make_entry(kind, c)
        return got

    def _make_entry(self, kind: str, c: int) -> _Entry:
        from ruvattn import build
        from ruvattn.mechanisms.base import mechanism_class

        cls = mechanism_class(kind)
        kind_index = self.kinds.index(kind) if kind in self.kinds else 0
        g = _Draw(np.random.default_rng([self.seed, self.chunk, 1_000_003, kind_index, c]))
        dim = g.pick(self.dims)
        heads = g.pick([h for h in (1, 2, 4) if dim % h == 0])
        mech = None
        if c > 0:
            for _ in range(4):
                params = _defaults(cls, dim, heads)
                for p in cls.params:
                    if p.name not in _SHAPE_PARAMS and g.chance(0.5):
                        params[p.name] = _valid_value(g, p, params, dim)
                try:
                    mech = build({"type": kind, **params})
                    break
                except Exception:  # a random combination the layer refuses: draw again (the build op tests this)
                    mech = None
        if mech is None:
            mech = cls(**cls.example_params(dim, heads=heads))
        if c > 0 and g.chance(0.3):
            mech.train()
        space = mech.input_space
        curv = abs(float(getattr(getattr(mech, "_space", None), "curvature", -1.0) or -1.0))
        seed = int(g.rng.integers(2**31))
        return _Entry(mech, mech.to_dict(), mech.hidden_dim, int(mech._example_value_dim()), space, curv, seed)

    def option_names(self, kind: str, op: str) -> tuple[str, ...]:
        key = (kind, op)
        got = self.options.get(key)
        if got is None:
            from ruvattn.mechanisms.base import mechanism_class

            cls = mechanism_class(kind)
            source = _OPTION_SOURCE.get(op)
            names: list[str] = []
            if source is not None:
                sig = inspect.signature(getattr(cls, source))
                names = [p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY]
                if not names and any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()) and op != "backward":
                    names = sorted(cls.forward_options)
                    if op in _BATCH:  # the batch forms take per-query positions, not one position
                        names = [n for n in names if n not in ("position", "ids")]
            got = self.options[key] = tuple(n for n in names if n in _OPTION_MAKERS)
        return got

    # -- operations
    def operation(self, index: int) -> Operation:
        # operation i's own stream: the PCG64 state is a hash of (seed, chunk, i) (1 us; a SeedSequence takes 10)
        a = _mix64(_mix64(_mix64(self.seed) ^ self.chunk) ^ index)
        self._bits.state = {
            "bit_generator": "PCG64", "state": {"state": (a << 64) | _mix64(a), "inc": _INC},
            "has_uint32": 0, "uinteger": 0,
        }  # fmt: skip
        g = _Draw(self._rng)
        kind = g.pick(self.kinds)
        c = g.i(_NCONF)
        e = self.entry(kind, c)
        names, cum = self.table[kind]
        op = names[int(np.searchsorted(cum, g.u(), side="right"))]
        try:
            call = _BUILDERS[op](self, g, kind, c, e, op)
        except Exception as exc:  # a bug of the sweep itself, never an outcome of the library
            raise RuntimeError(f"sweep: drawing operation {index} of seed {self.seed}, chunk {self.chunk} "
                               f"({kind}.{op}) failed: {exc!r}") from exc  # fmt: skip
        return Operation(self.seed, self.chunk, index, kind, op, c, call, g.tags, g.invalid, e.spec)


# -- arrays ----------------------------------------------------------------------------------
_MODES = ("logu", "scale", "max", "onemax", "rowmax", "tiny", "zeros", "const")


def _raw(g: _Draw, shape: tuple[int, ...], dt: np.dtype, regime: str, name: str) -> np.ndarray:
    """Euclidean float64 data of ``shape`` whose values fit ``dt`` (no inf after the cast)."""
    rng = g.rng
    if regime != "magnitude" or g.chance(0.3):
        return rng.standard_normal(shape)
    fi = _FINFO[dt]
    big = float(fi.max)
    mode = g.pick(_MODES)
    if mode == "logu":  # every element its own magnitude over the dtype's whole range
        x = np.power(10.0, rng.uniform(_LOG_SUB[dt], _LOG_MAX[dt], shape))
        x = np.minimum(x, big) * np.where(rng.random(shape) < 0.5, -1.0, 1.0)
        g.tag(f"{name}:log-uniform 1e{_LOG_SUB[dt]:.0f}..max")
    elif mode == "scale":
        e = _LOG_SUB[dt] + (_LOG_MAX[dt] - _LOG_SUB[dt]) * g.u()
        x = np.clip(rng.standard_normal(shape) * 10.0**e, -big, big)
        g.tag(f"{name}:N(0,1)x1e{e:.0f}")
    elif mode == "max":
        x = np.full(shape, big) * (np.where(rng.random(shape) < 0.5, -1.0, 1.0) if g.chance(0.5) else 1.0)
        g.tag(f"{name}:±finfo.max")
    elif mode == "onemax":
        x = rng.standard_normal(shape)
        if x.size:
            x.flat[g.i(x.size)] = big if g.chance(0.5) else -big
        g.tag(f"{name}:one finfo.max")
    elif mode == "rowmax":
        x = rng.standard_normal(shape)
        if x.ndim == 2 and x.shape[0]:
            x[g.i(x.shape[0])] = big
        g.tag(f"{name}:a row of finfo.max")
    elif mode == "tiny":
        vals = np.array([0.0, -0.0, float(fi.smallest_subnormal), float(fi.tiny), -float(fi.smallest_subnormal)])
        x = vals[(rng.random(shape) * vals.size).astype(np.intp)] * (1 + (rng.random(shape) * 4).astype(np.intp))
        g.tag(f"{name}:subnormal/zero")
    elif mode == "zeros":
        x = np.zeros(shape)
        g.tag(f"{name}:zeros")
    else:
        e = _LOG_SUB[dt] + (_LOG_MAX[dt] - _LOG_SUB[dt]) * g.u()
        x = np.full(shape, min(10.0**e, big) * (1 if g.chance(0.5) else -1))
        g.tag(f"{name}:all 1e{e:.0f}")
    return x


def _points(g: _Draw, e: _Entry, shape: tuple[int, ...], dt: np.dtype, regime: str, name: str) -> np.ndarray:
    """A float array of ``dt`` in the mechanism's input space (or, under ``magnitude``, anywhere)."""
    if e.space == "euclidean" or len(shape) > 2 or not shape[-1]:
        return _raw(g, shape, dt, regime, name).astype(dt)
    r = 0.0 if regime == "valid" else g.u()
    if r < 0.5:  # valid points: rows of the chunk's embedded pool
        pool = e.pool(shape[-1])
        count = 1 if len(shape) == 1 else shape[0]
        x = pool[(g.rng.random(count) * pool.shape[0]).astype(np.intp)]
        if regime == "magnitude" and r < 0.25:
            x = _edge_of_space(g, e, x, dt, name)
        return (x[0] if len(shape) == 1 else x).astype(dt)
    raw = _raw(g, shape, dt, regime, name)
    if r < 0.7:
        g.tag(f"{name}:embedded")
        return _embed(e, raw).astype(dt)
    g.tag(f"{name}:raw (not embedded)")
    return raw.astype(dt)


def _embed(e: _Entry, x: np.ndarray) -> np.ndarray:
    two = x.reshape(1, -1) if x.ndim == 1 else x
    try:
        out = np.asarray(e.mech.embed(two), np.float64)
    except Exception:  # the embed operation tests this; here it only shapes data
        return x
    return out.reshape(x.shape) if out.shape == two.shape else x


def _edge_of_space(g: _Draw, e: _Entry, x: np.ndarray, dt: np.dtype, name: str) -> np.ndarray:
    """Points at the edge of the space: near the ball's boundary, far out on the hyperboloid, antipodes."""
    two = x.reshape(1, -1) if x.ndim == 1 else x
    if e.space == "poincare":
        eps = g.pick([1e-3, 1e-6, 1e-9, 1e-12, 1e-15, 1e-17])
        norms = np.linalg.norm(two, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        two = two / norms * ((1.0 - eps) / math.sqrt(e.curvature))
        g.tag(f"{name}:ball radius (1-{eps:g})/sqrt(c)")
    elif e.space == "lorentz" and two.shape[1] > 1:
        r = min(10.0 ** (-3 + 5.8 * g.u()), 700.0)
        s = two[:, 1:]
        norms = np.linalg.norm(s, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        s = s / norms * (math.sinh(r) / math.sqrt(e.curvature))
        two = np.concatenate([np.sqrt(1.0 / e.curvature + (s * s).sum(axis=1, keepdims=True)), s], axis=1)
        g.tag(f"{name}:hyperboloid distance {r:.3g}")
    elif e.space == "sphere" and two.shape[0] > 1:
        two = two.copy()
        two[1::2] = -two[0]
        g.tag(f"{name}:antipodal rows")
    else:
        g.tag(f"{name}:embedded")
    if dt == np.float32:
        two = np.clip(two, -float(_FINFO[dt].max), float(_FINFO[dt].max))
    return two.reshape(x.shape)


def _layout(g: _Draw, a: Any, name: str) -> Any:
    """The same values in another (valid) layout: strided, Fortran order, read-only, a list, or another float dtype."""
    if not isinstance(a, np.ndarray) or a.dtype.kind != "f" or g.u() > 0.12:
        return a
    r = g.i(5)
    if r == 0 and a.ndim >= 1:
        big = np.empty((*a.shape[:-1], 2 * a.shape[-1]), a.dtype)
        big[..., ::2] = a
        g.tag(f"{name}:strided")
        return big[..., ::2]
    if r == 1 and a.ndim == 2:
        g.tag(f"{name}:Fortran order")
        return np.asfortranarray(a)
    if r == 2:
        b = a.copy()
        b.flags.writeable = False
        g.tag(f"{name}:read-only")
        return b
    if r == 3 and a.size < 200:
        g.tag(f"{name}:list")
        return a.tolist()
    if a.dtype == np.float64:  # float32 next to float64 inputs, clipped to float32's range (no inf made here)
        g.tag(f"{name}:float32 (mixed dtypes)")
        big = float(_FINFO[_FLOAT_DTYPES[0]].max)
        return np.clip(a, -big, big).astype(np.float32)
    g.tag(f"{name}:float64 (mixed dtypes)")
    return a.astype(np.float64)


def _inject(g: _Draw, a: np.ndarray, name: str) -> tuple[np.ndarray, bool, bool]:
    """NaN or ±inf into ``a`` (one element, one row or all); returns (array, any NaN, every element NaN)."""
    a = np.array(a, copy=True)
    value = g.pick([np.nan, np.inf, -np.inf])
    where = g.pick(["one", "one", "row", "all"])
    if not a.size:
        return a, False, False
    if where == "all" or a.size == 1:
        a[...] = value
    elif where == "row" and a.ndim == 2:
        a[g.i(a.shape[0])] = value
    else:
        a.flat[g.i(a.size)] = value
    g.tag(f"{name}:{value} ({where})")
    nan = bool(np.isnan(value))
    return a, nan, nan and (where == "all" or a.size == 1)


_BAD_ARRAY = ("width", "ndim", "int", "bool", "float16", "complex", "object", "str", "rows", "none", "scalar")


def _corrupt_array(g: _Draw, a: np.ndarray, name: str, role: str, op: str) -> Any:
    """A wrong shape, dtype or type for ``a``; flags what the contract must refuse."""
    bad = g.pick(_BAD_ARRAY)
    g.tag(f"{name}:{bad}")
    must = role in ("query", "keys", "queries", "x")
    if bad == "width":
        w = a.shape[-1] + g.pick([-1, 1, 3]) if a.ndim else 1
        w = max(w, 0)
        out = np.resize(a, (*a.shape[:-1], w)) if a.ndim else a
        if must and w != a.shape[-1]:
            g.refuse(f"{name} of width {w}, not dim")
        return out
    if bad == "ndim":
        out = a[..., None] if g.chance(0.5) else a[None]
        # what counts is the dimensions the call receives: an empty table that went through a list
        # (`[]`, 1-D) comes back 2-D here, which is a valid table of zero rows
        expected = 2 if role in ("keys", "values") else 1
        if out.ndim != expected and (role in ("keys", "values") or (role == "query" and op in _SINGLE
                                                                     and op != "weights")):  # fmt: skip
            g.refuse(f"{name} with {out.ndim} dimensions")  # weights() takes (m, d) as a batch
        return out
    if bad == "int":
        return (a * 3).astype(np.int64) if np.isfinite(a).all() and np.abs(a).max(initial=0) < 1e15 else a
    if bad == "bool":
        return a > 0
    if bad == "float16":  # clipped to float16's range: the dtype is the bad part, not an inf
        return np.clip(a, -65504.0, 65504.0).astype(np.float16)
    if bad == "complex":
        if must or role == "values":
            g.refuse(f"complex {name}")
        return a.astype(np.complex128)
    if bad == "object":
        if must or role == "values":
            g.refuse(f"object-dtype {name}")
        return a.astype(object)
    if bad == "str":
        if must or role == "values":
            g.refuse(f"str {name}")
        return np.full(a.shape, "x")
    if bad == "rows":
        if role in ("keys", "values") and op in _NEEDS_VALUES:
            g.refuse("keys and values of different lengths")
        extra = g.pick([1, 2]) if a.ndim else 0
        return np.resize(a, (a.shape[0] + extra, *a.shape[1:])) if a.ndim else a
    if bad == "none":
        if must:
            g.refuse(f"{name}=None")
        return None
    if must:
        g.refuse(f"a scalar {name}")
    return 1.5


# -- options ---------------------------------------------------------------------------------
def _ids(g: _Draw, n: int, count: int) -> np.ndarray:
    return (g.rng.random(count) * n).astype(np.int64) if n else np.empty(0, np.int64)


def _opt_mask(g: _Draw, e: _Entry, n: int, m: int, batch: bool, dt: np.dtype) -> Any:
    shape = (m, n) if batch and g.chance(0.5) else (n,)
    keep = g.rng.random(shape) < 0.7
    if n:
        keep[..., 0] = True
    return keep


def _opt_bias(g: _Draw, e: _Entry, n: int, m: int, batch: bool, dt: np.dtype) -> Any:
    shape = (m, n) if batch and g.chance(0.5) else (n,)
    return _raw(g, shape, dt, "magnitude" if g.chance(0.4) else "valid", "bias").astype(dt)


def _opt_ids(g: _Draw, e: _Entry, n: int, m: int, batch: bool, dt: np.dtype) -> Any:
    return _ids(g, n, 1 + g.i(min(n, 8))) if n else None


def _opt_heads(g: _Draw, e: _Entry, n: int, m: int, batch: bool, dt: np.dtype) -> Any:
    h = int(getattr(e.mech.config, "num_heads", 1))
    if g.chance(0.5):
        return 1 + g.i(h)
    return np.sort(g.rng.permutation(h)[: 1 + g.i(h)])


def _opt_position(g: _Draw, e: _Entry, n: int, m: int, batch: bool, dt: np.dtype) -> Any:
    return g.i(n) if n else None


def _opt_positions(g: _Draw, e: _Entry, n: int, m: int, batch: bool, dt: np.dtype) -> Any:
    return _ids(g, n, m) if n else None


def _opt_global_ids(g: _Draw, e: _Entry, n: int, m: int, batch: bool, dt: np.dtype) -> Any:
    return np.unique(_ids(g, n, 1 + g.i(3))) if n else None


def _opt_edge_features(g: _Draw, e: _Entry, n: int, m: int, batch: bool, dt: np.dtype) -> Any:
    width = getattr(e.mech.config, "edge_dim", None) or 4
    return _raw(g, (n, width), dt, "magnitude" if g.chance(0.3) else "valid", "edge_features").astype(dt)


_OPTION_MAKERS: dict[str, Callable[..., Any]] = {
    "mask": _opt_mask, "bias": _opt_bias, "ids": _opt_ids, "heads": _opt_heads, "position": _opt_position,
    "positions": _opt_positions, "global_ids": _opt_global_ids, "edge_features": _opt_edge_features,
}  # fmt: skip


def _corrupt_option(g: _Draw, name: str, value: Any, n: int, m: int, op: str, h: int) -> Any:
    """A bad value for option ``name``; flags the ones the contract must refuse."""
    if name == "mask":
        bad = g.pick(["int", "float", "shape", "none_kept", "list"])
        g.tag(f"mask:{bad}")
        if bad == "int":
            g.refuse("an integer mask")
            return np.ones(n, np.int64)
        if bad == "float":
            g.refuse("a float mask")
            return np.ones(n)
        if bad == "shape":
            g.refuse("a mask of the wrong shape")
            return np.ones(n + 1, bool)
        if bad == "none_kept":
            if n and op in _SINGLE:
                g.refuse("every key masked out")
            return np.zeros(n, bool)
        return [True] * n
    if name == "bias":
        bad = g.pick(["shape", "complex", "neg_inf_all", "list"])
        g.tag(f"bias:{bad}")
        if bad == "shape":
            g.refuse("a bias of the wrong shape")
            return np.zeros(n + 1)
        if bad == "complex":
            g.refuse("a complex bias")
            return np.zeros(n, complex)
        if bad == "neg_inf_all":
            return np.full(n, -np.inf)
        return [0.0] * n
    if name in ("ids", "global_ids", "positions"):
        bad = g.pick(["too_large", "negative", "fraction", "whole_float", "2d", "empty", "bool", "str"])
        g.tag(f"{name}:{bad}")
        base = _ids(g, max(n, 1), max(m if name == "positions" else 2, 1))
        if bad == "too_large":
            g.refuse(f"{name} out of range")
            base[0] = n + g.i(3)
            return base
        if bad == "negative":
            g.refuse(f"negative {name}")
            base[0] = -1 - g.i(3)
            return base
        if bad == "fraction":
            g.refuse(f"fractional {name}")
            return base + 0.5
        if bad == "whole_float":
            return base.astype(np.float64)
        if bad == "2d":
            g.refuse(f"2-D {name}")
            return base[None, :]
        if bad == "empty":
            if name == "ids" and op in _SINGLE and op.startswith("forward"):
                g.refuse("ids selecting no key")
            return np.empty(0, np.int64)
        if bad == "bool":
            g.refuse(f"boolean {name}")
            return np.ones(base.size, bool)
        g.refuse(f"str {name}")
        return "0"
    if name == "position":
        bad = g.pick([-1, n, n + 5, 1.5, "0", True, None])
        g.tag(f"position:{bad!r}")
        if bad is not None and not (bad is True and n > 1):
            g.refuse(f"position {bad!r}")
        return bad
    if name == "heads":
        bad = g.pick([0, h + 1, -1, [], [h], [0, 0], [0.5], True, "a", 1.0])
        g.tag(f"heads:{bad!r}")
        g.refuse(f"heads {bad!r}")
        return bad
    if name == "edge_features" and isinstance(value, np.ndarray):
        bad = g.pick(["rows", "width", "1d", "complex"])
        g.tag(f"edge_features:{bad}")
        if bad == "rows":
            return np.resize(value, (value.shape[0] + 1, value.shape[1]))
        if bad == "width":
            return np.resize(value, (value.shape[0], value.shape[1] + 1))
        if bad == "1d":
            return value.reshape(-1)
        return value.astype(complex)
    return value


# -- neighbour lists -------------------------------------------------------------------------
def _neighbours(g: _Draw, nodes: int, n: int) -> tuple[Any, int, str]:
    """A valid neighbour structure in a random form: ``(structure, nnz, form)``."""
    from ruvattn.graph import NeighbourList

    rng = g.rng
    if n:
        deg = (rng.random(nodes) * min(n, 6) + 1).astype(np.int64)
        deg[rng.random(nodes) < 0.15] = 0
    else:
        deg = np.zeros(nodes, np.int64)
    if g.chance(0.03):
        deg[:] = 0
    indptr = np.zeros(nodes + 1, np.int64)
    np.cumsum(deg, out=indptr[1:])
    indices = _ids(g, n, int(indptr[-1]))
    form = g.pick(["csr", "csr", "padded", "list", "neighbourlist", "scipy"])
    g.tag(f"neighbours:{form}, {nodes} nodes, nnz {indices.size}")
    if form == "csr":
        return (indptr, indices), indices.size, form
    if form == "neighbourlist":
        return NeighbourList(indptr, indices, n), indices.size, form
    if form == "scipy":
        import scipy.sparse as sp

        a = sp.csr_matrix((np.ones(indices.size), indices, indptr), shape=(nodes, max(n, 1)))
        return a, int(a.nnz), form
    lists = [indices[indptr[i] : indptr[i + 1]].tolist() for i in range(nodes)]
    if form == "list":
        return lists, indices.size, form
    k = int(deg.max(initial=0))
    padded = np.full((nodes, k), -1, np.int64)
    for i, row in enumerate(lists):
        padded[i, : len(row)] = row
    return padded, indices.size, form


def _corrupt_neighbours(g: _Draw, nb: Any, form: str, nodes: int, n: int, op: str) -> Any:
    bad = g.pick(["too_large", "negative", "fraction", "whole_float", "indptr", "nodes", "str", "none"])
    g.tag(f"neighbours:{bad}")
    if bad == "str":
        g.refuse("neighbours given as a str")
        return "abc"
    if bad == "none":
        if op == "forward_neighbours":  # weights(neighbours=None) is the batch form
            g.refuse("neighbours=None")
        return None
    if bad == "nodes":
        g.refuse("neighbours for a different number of nodes")
        return (np.zeros(nodes + 2, np.int64), np.empty(0, np.int64))
    indptr = np.zeros(nodes + 1, np.int64)
    deg = np.ones(nodes, np.int64)
    np.cumsum(deg, out=indptr[1:])
    indices = _ids(g, max(n, 1), nodes)
    if bad == "indptr" and nodes:
        g.refuse("a decreasing or short indptr")
        indptr = indptr[::-1].copy() if g.chance(0.5) else indptr[:-1]
        return (indptr, indices)
    if not nodes:
        return (indptr, indices)
    if bad == "too_large":
        g.refuse("a neighbour id out of range")
        indices[g.i(nodes)] = n + g.i(3)
    elif bad == "negative":
        g.refuse("a negative neighbour id")
        if form == "padded":
            return np.full((nodes, 1), -2, np.int64)
        indices[g.i(nodes)] = -1
    elif bad == "fraction":
        g.refuse("fractional neighbour ids")
        return (indptr, indices + 0.5) if form != "padded" else (indices + 0.5).reshape(nodes, 1)
    else:
        return (indptr.astype(np.float64), indices.astype(np.float64))
    return (indptr, indices) if form != "padded" else indices.reshape(nodes, 1)


# -- operation builders ----------------------------------------------------------------------
def _dtype(g: _Draw) -> np.dtype:
    return _FLOAT_DTYPES[g.i(2)]


def _regime(g: _Draw) -> str:
    r = g.u()
    return "valid" if r < 0.35 else "magnitude" if r < 0.65 else "nonfinite" if r < 0.77 else "bad"


def _attention_op(ctx: _Context, g: _Draw, kind: str, c: int, e: _Entry, op: str) -> Callable[[], Any]:
    """Every call that takes a query (or queries) and keys: the forward, weights and backward forms."""
    m_ = e.mech
    dt = _dtype(g)
    regime = _regime(g)
    n = g.count(ctx.max_keys)
    single = op in _SINGLE or (op == "backward" and g.chance(0.6))
    rows = 1 + g.i(8) if not single else 0
    if op in _BATCH and g.chance(0.05):
        rows = 0
    g.tag(f"{_NAMES[dt]} n={n}" + ("" if single else f" m={rows}") + f" d={e.dim} {regime}")
    args: dict[str, Any] = {}
    roles: dict[str, str] = {}
    qname = "query" if single else "queries"
    args[qname] = _points(g, e, (e.dim,) if single else (rows, e.dim), dt, regime, qname)
    roles[qname] = "query" if single else "queries"
    args["keys"] = _points(g, e, (n, e.dim), dt, regime, "keys")
    roles["keys"] = "keys"
    if op in _NEEDS_VALUES:
        args["values"] = _points(g, e, (n, e.dv), dt, regime, "values")
        roles["values"] = "values"
    nb, nnz, form = None, 0, ""
    if op in _NEIGHBOUR_OPS:
        nb, nnz, form = _neighbours(g, rows, n)
    if op == "backward":
        args["grad_output"] = _raw(g, (e.dv,) if single else (rows, e.dv), dt, regime, "grad_output").astype(dt)
        roles["grad_output"] = "grad"
    opts: dict[str, Any] = {}
    for name in ctx.option_names(kind, op):
        if g.chance(0.3):
            value = _OPTION_MAKERS[name](g, e, nnz if name == "edge_features" and nb is not None else n, rows,
                                         op in _BATCH, dt)  # fmt: skip
            if value is not None:
                opts[name] = value
                g.tag(f"+{name}")
    for name in list(args):
        args[name] = _layout(g, args[name], name)
    effective = nnz if nb is not None else len(opts["ids"]) if "ids" in opts else n  # keys that take part
    if regime == "nonfinite":
        floats = [k for k, v in args.items() if v is not None and np.asarray(v).dtype.kind == "f"]
        floats += [k for k in ("bias", "edge_features") if k in opts]
        target = g.pick(floats)
        holder = opts if target in opts else args
        holder[target], any_nan, all_nan = _inject(g, np.asarray(holder[target]), target)
        nan_query = target == "query" and any_nan and effective > 0 and single
        if nan_query or (all_nan and target in ("keys", "values", "queries") and effective > 0 and rows != 0):
            g.refuse(f"NaN in {target}")
    elif regime == "bad":
        choices = list(args) + list(opts) + (["neighbours"] if nb is not None else [])
        if op in _NEEDS_VALUES:
            choices += ["values=None", "empty"]
        elif "keys" in args:
            choices.append("empty")
        target = g.pick(choices)
        h = int(getattr(m_.config, "num_heads", 1))
        if target == "neighbours":
            nb = _corrupt_neighbours(g, nb, form, rows, n, op)
        elif target == "values=None":
            g.tag("values=None")
            g.refuse("values omitted with raw keys")
            args["values"] = None
        elif target == "empty":
            g.tag("empty key set")
            args["keys"] = np.empty((0, e.dim), dt)
            if "values" in args:
                args["values"] = np.empty((0, e.dv), dt)
            opts = {k: v for k, v in opts.items() if k not in ("mask", "bias", "ids", "position", "positions",
                                                             "global_ids", "edge_features")}  # fmt: skip
            n = 0
            if type(m_).empty_keys_raise and (op in _SINGLE and op.startswith("forward")):
                g.refuse("an empty key set")
        elif target in opts:
            opts[target] = _corrupt_option(g, target, opts[target], n, rows, op, h)
            if (op in _BATCH and rows == 0) or (nb is not None and nnz == 0):
                g.invalid = None  # nothing is computed: an option the call never reads may go unchecked
        else:
            a = args[target]
            args[target] = _corrupt_array(g, np.asarray(a) if a is not None else np.zeros(1), target,
                                          roles[target], op)  # fmt: skip
    return _caller(m_, op, args, opts, nb, ctx, g, kind, c)


def _caller(m_: Any, op: str, args: dict[str, Any], opts: dict[str, Any], nb: Any, ctx: _Context, g: _Draw,
            kind: str, c: int) -> Callable[[], Any]:  # fmt: skip
    q = args.get("query", args.get("queries"))
    k = args["keys"]
    v = args.get("values")
    if op == "forward":
        return lambda: m_.forward(q, k, v, **opts)
    if op == "forward_prepared":
        r = g.u()
        if r < 0.08:
            g.tag("values passed with prepared keys")
            g.refuse("values next to prepared keys")
            return lambda: m_.forward(q, m_.prepare(k, v), v, **opts)
        if r < 0.14 and _NCONF > 1:
            other = ctx.entry(kind, (c + 1) % _NCONF).mech
            if other is not m_:
                g.tag("keys prepared by another instance")
                g.refuse("keys prepared by another mechanism")
                return lambda: m_.forward(q, other.prepare(k, v), **opts)
        return lambda: m_.forward(q, m_.prepare(k, v), **opts)
    if op == "forward_batch":
        return lambda: m_.forward_batch(q, k, v, **opts)
    if op == "forward_neighbours":
        return lambda: m_.forward_neighbours(q, k, v, nb, **opts)
    if op in ("weights", "weights_batch"):
        return lambda: m_.weights(q, k, **opts)
    if op == "weights_neighbours":
        return lambda: m_.weights(q, k, neighbours=nb, **opts)
    if op == "attention_weights":
        return lambda: m_.attention_weights(q, k, **opts)
    grad = args["grad_output"]
    return lambda: m_.backward(q, k, v, grad, **opts)


def _embed_op(ctx: _Context, g: _Draw, kind: str, c: int, e: _Entry, op: str) -> Callable[[], Any]:
    dt = _dtype(g)
    regime = g.pick(["valid", "magnitude", "magnitude", "nonfinite", "bad"])
    rows = g.count(16)
    g.tag(f"{_NAMES[dt]} rows={rows} d={e.dim} {regime}")
    x: Any = _layout(g, _raw(g, (rows, e.dim), dt, regime, "x").astype(dt), "x")
    if regime == "nonfinite" and rows:
        x, any_nan, _ = _inject(g, np.asarray(x), "x")
        if any_nan:
            g.refuse("NaN in x")
    elif regime == "bad":
        x = _corrupt_array(g, np.asarray(x), "x", "x", op)
    m_ = e.mech
    return lambda: m_.embed(x)


def _probe(mech: Any, seed: int) -> tuple[Any, Any, Any]:
    ex = mech._example_data(np.dtype(np.float64), seed)
    return ex.query, ex.keys, ex.values


def _same_outcome(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))
    return type(a) is type(b) and not isinstance(a, np.ndarray)


def _forward_or_error(mech: Any, probe: tuple[Any, Any, Any]) -> Any:
    try:
        return np.array(mech.forward(*probe), copy=True)
    except Exception as exc:
        return exc.__class__


def _set_params_op(ctx: _Context, g: _Draw, kind: str, c: int, e: _Entry, op: str) -> Callable[[], Any]:
    """``set_params`` with random valid and invalid values on a fresh copy (in inference mode), then a forward.

    A rejected change must leave the object as it was: the same configuration object, the same learned
    arrays, and the same forward output as a twin built from the same spec that made the same calls
    without the ``set_params`` (a FAVOR+ redraw counter advances in both); otherwise the operation is
    ``inconsistent``.
    """
    from ruvattn import build
    from ruvattn.mechanisms.base import mechanism_class

    cls = mechanism_class(kind)
    changes: dict[str, Any] = {}
    labels: dict[str, tuple[str, bool]] = {}
    params = list(cls.params)
    current = dict(e.spec)
    current.pop("type", None)
    for _ in range(1 + g.i(2)):
        p = g.pick(params)
        sure = False
        if p.name in ("dim", "in_channels") and g.chance(0.7):
            value: Any = g.pick([2, 4, 6, 8, 12, 16])
            label = "valid"
        elif g.chance(0.5) and p.name not in ("experts",):
            value = _valid_value(g, p, current, e.dim)
            label = "valid"
        else:
            value, label, sure = _invalid_value(g, p)
        changes[p.name] = value
        labels[p.name] = (label, sure)
    for name, value in changes.items():
        label, sure = labels[name]
        g.tag(f"{name}={value!r}" if label == "valid" else f"{name}: {label} {value!r}")
    certain = [f"{name}={changes[name]!r}" for name, (_, sure) in labels.items() if sure]
    if certain:
        g.refuse("set_params(" + ", ".join(certain) + ")")
    spec = e.spec

    def call() -> Any:
        mech, twin = build(spec), build(spec)  # the twin makes the same calls without the set_params
        probe = _probe(mech, 0)
        before = _forward_or_error(mech, probe)
        comparable = _same_outcome(before, _forward_or_error(twin, probe))  # False with fresh entropy
        before_config = mech.config
        before_state = {k: np.array(v, copy=True) for k, v in mech.state_dict().items()}
        try:
            mech.set_params(**changes)
        except AttentionError:
            if mech.config is not before_config:
                raise _Inconsistent("set_params raised but replaced the configuration") from None
            state = mech.state_dict()
            changed = [k for k, v in before_state.items() if k not in state or not _same_outcome(v, state[k])]
            if changed or set(state) != set(before_state):
                raise _Inconsistent(f"set_params raised but changed the learned arrays {changed}") from None
            after, expected = _forward_or_error(mech, probe), _forward_or_error(twin, probe)
            if comparable and not _same_outcome(after, expected):
                raise _Inconsistent(
                    f"set_params raised, and forward then gave {_brief(after)} instead of {_brief(expected)}"
                ) from None
            raise
        return mech.forward(*_probe(mech, 1))

    return call


def _brief(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"array{x.shape} starting {np.array2string(x.ravel()[:3], precision=4)}"
    return getattr(x, "__name__", repr(x))


def _build_op(ctx: _Context, g: _Draw, kind: str, c: int, e: _Entry, op: str) -> Callable[[], Any]:
    from ruvattn import build
    from ruvattn.mechanisms.base import mechanism_class

    cls = mechanism_class(kind)
    spec: Any = json.loads(json.dumps(e.spec, default=str))
    r = g.i(9)
    if r == 0:
        g.tag("the instance's own to_dict()")
    elif r == 1:
        g.tag("JSON text")
        spec = json.dumps(spec)
    elif r == 2:
        bad = g.pick(["{bad", "[]", "null", "5", '"x"', ""])
        g.tag(f"JSON text {bad!r}")
        g.refuse("malformed JSON spec")
        spec = bad
    elif r == 3:
        required = [k for k in ("dim", "in_channels", "out_channels", "experts") if k in spec]
        if required:
            key = g.pick(required)
            del spec[key]
            g.tag(f"without {key!r}")
            g.refuse(f"a spec without {key!r}")
    elif r == 4:
        spec["no_such_parameter"] = 1
        g.tag("an unknown key")
        g.refuse("an unknown parameter")
    elif r == 5:
        spec["type"] = g.pick(["nope", 5, None, ""])
        g.tag(f"type={spec['type']!r}")
        g.refuse("an unknown type")
    elif r == 6:
        spec = g.pick([[], None, 5, {"dim": 8}, ("type", kind)])
        g.tag(f"spec={spec!r}")
        g.refuse("a spec that is not a dict with a type")
    else:
        p = g.pick(list(cls.params))
        if g.chance(0.5):
            value = _valid_value(g, p, spec, e.dim)
            g.tag(f"{p.name}={value!r}")
        else:
            value, label, sure = _invalid_value(g, p)
            g.tag(f"{p.name}: {label}")
            if sure:
                g.refuse(f"{p.name}={value!r}")
        spec[p.name] = value

    def call() -> Any:
        mech = build(spec)
        return mech.forward(*_probe(mech, 2))

    return call


def _graph_op(ctx: _Context, g: _Draw, kind: str, c: int, e: _Entry, op: str) -> Callable[[], Any]:
    """GAT's ``forward_graph(x, edge_index, edge_attr, return_attention_weights)``."""
    m_ = e.mech
    dt = _dtype(g)
    regime = _regime(g)
    nodes = g.count(24)
    edges = g.count(48) if nodes else 0
    g.tag(f"{_NAMES[dt]} nodes={nodes} edges={edges} d={e.dim} {regime}")
    x: Any = _raw(g, (nodes, e.dim), dt, regime, "x").astype(dt)
    ei: Any = (g.rng.random((2, edges)) * nodes).astype(np.int64) if nodes else np.zeros((2, 0), np.int64)
    edge_dim = getattr(m_.config, "edge_dim", None)
    ea: Any = None
    if edge_dim is not None and g.chance(0.8):
        ea = _raw(g, (edges, edge_dim), dt, regime, "edge_attr").astype(dt)
    weights = g.chance(0.3)
    x = _layout(g, x, "x")
    if regime == "nonfinite":
        if ea is not None and g.chance(0.3):
            ea, _, _ = _inject(g, ea, "edge_attr")
        elif nodes:
            x, _, all_nan = _inject(g, np.asarray(x), "x")
            if all_nan:
                g.refuse("NaN node features")
    elif regime == "bad":
        bad = g.pick(["too_large", "negative", "fraction", "rows3", "x", "edge_attr_rows"])
        g.tag(f"edge_index:{bad}" if bad != "x" else "x bad")
        if bad == "too_large" and edges:
            g.refuse("an edge id out of range")
            ei[g.i(2), g.i(edges)] = nodes + g.i(3)
        elif bad == "negative" and edges:
            g.refuse("a negative edge id")
            ei[g.i(2), g.i(edges)] = -1
        elif bad == "fraction" and edges:
            g.refuse("fractional edge ids")
            ei = ei + 0.5
        elif bad == "rows3":
            g.refuse("edge_index of shape (3, E)")
            ei = np.vstack([ei, ei[:1]])
        elif bad == "x":
            x = _corrupt_array(g, np.asarray(x), "x", "x", op)
        elif bad == "edge_attr_rows" and ea is not None:
            g.refuse("edge_attr rows != edges")
            ea = np.resize(ea, (edges + 1, edge_dim))
    return lambda: m_.forward_graph(x, ei, ea, return_attention_weights=weights)


_BUILDERS: dict[str, Callable[..., Callable[[], Any]]] = {
    **{op: _attention_op for op in _OPTION_SOURCE},
    "embed": _embed_op,
    "set_params": _set_params_op,
    "build": _build_op,
    "forward_graph": _graph_op,
}


# -- the sweep -------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """Counts of one sweep (or of several merged with :meth:`merge`).

    ``counts[(kind, op, outcome)]``; ``errors[(kind, op, outcome, error class)]`` for the exceptions;
    ``failures``: one repro record (dict) per failing operation, the first ``keep`` of every
    (kind, op, outcome, error class); ``slowest[(kind, op)] = (seconds, seed, chunk, index)``.
    """

    seed: int = 0
    chunk: int = 0
    ops: int = 0
    seconds: float = 0.0
    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    errors: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    slowest: dict[tuple[str, str], tuple[float, int, int, int]] = field(default_factory=dict)

    def totals(self) -> dict[str, int]:
        """Operations per outcome (every outcome present, zeros included) and ``ops``."""
        out = dict.fromkeys(OUTCOMES, 0)
        for (_, _, outcome), n in self.counts.items():
            out[outcome] += n
        out["ops"] = sum(out[o] for o in OUTCOMES)
        return out

    @property
    def failed(self) -> int:
        """Operations with a failing outcome (:data:`FAILURES`)."""
        t = self.totals()
        return sum(t[o] for o in FAILURES)

    def by(self, axis: str = "kind") -> dict[str, dict[str, int]]:
        """Outcome counts per mechanism (``axis="kind"``) or per operation (``axis="op"``)."""
        pos = 0 if axis == "kind" else 1
        out: dict[str, dict[str, int]] = {}
        for key, n in self.counts.items():
            row = out.setdefault(key[pos], dict.fromkeys(OUTCOMES, 0))
            row[key[2]] += n
        return dict(sorted(out.items()))

    def table(self, axis: str = "kind") -> str:
        """The results table: one row per mechanism (or operation), ops and every outcome, and a total."""
        return format_table(self.by(axis), "mechanism" if axis == "kind" else "operation")

    def failure_classes(self) -> list[dict[str, Any]]:
        """The failures grouped by (outcome, error class, op, message with numbers blanked): the mechanisms
        hit, the count among the kept records, and one example each."""
        groups: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        for f in self.failures:
            key = (f["outcome"], f["error"], f["op"], _pattern(f["message"]))
            grp = groups.setdefault(key, {"outcome": f["outcome"], "error": f["error"], "op": f["op"],
                                          "message": f["message"], "kinds": [], "count": 0, "example": f})  # fmt: skip
            grp["count"] += 1
            if f["kind"] not in grp["kinds"]:
                grp["kinds"].append(f["kind"])
        return sorted(groups.values(), key=lambda x: (x["outcome"], x["op"], -x["count"]))

    def merge(self, other: SweepResult, keep: int = 20) -> SweepResult:
        """This result with ``other`` added (failure records kept up to ``keep`` per class)."""
        out = SweepResult(self.seed, self.chunk, self.ops + other.ops, self.seconds + other.seconds,
                          dict(self.counts), dict(self.errors), list(self.failures), dict(self.slowest))  # fmt: skip
        for k, n in other.counts.items():
            out.counts[k] = out.counts.get(k, 0) + n
        for k2, n in other.errors.items():
            out.errors[k2] = out.errors.get(k2, 0) + n
        kept: dict[tuple[str, ...], int] = {}
        for f in out.failures:
            kk = (f["kind"], f["op"], f["outcome"], f["error"])
            kept[kk] = kept.get(kk, 0) + 1
        for f in other.failures:
            kk = (f["kind"], f["op"], f["outcome"], f["error"])
            if kept.get(kk, 0) < keep:
                kept[kk] = kept.get(kk, 0) + 1
                out.failures.append(f)
        for k3, s in other.slowest.items():
            if k3 not in out.slowest or s[0] > out.slowest[k3][0]:
                out.slowest[k3] = s
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-able data (what the experiment notebook records); :meth:`from_json` reads it back."""
        return {
            "seed": self.seed, "chunk": self.chunk, "ops": self.ops, "seconds": round(self.seconds, 3),
            "counts": [[*k, n] for k, n in sorted(self.counts.items())],
            "errors": [[*k, n] for k, n in sorted(self.errors.items())],
            "failures": self.failures,
            "slowest": [[*k, *v] for k, v in sorted(self.slowest.items())],
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SweepResult:
        return cls(
            int(data.get("seed", 0)), int(data.get("chunk", 0)), int(data.get("ops", 0)),
            float(data.get("seconds", 0.0)),
            {(a, b, c): int(n) for a, b, c, n in data.get("counts", [])},
            {(a, b, c, d): int(n) for a, b, c, d, n in data.get("errors", [])},
            list(data.get("failures", [])),
            {(a, b): (float(s), int(sd), int(ch), int(i)) for a, b, s, sd, ch, i in data.get("slowest", [])},
        )  # fmt: skip


def _pattern(message: str) -> str:
    return re.sub(r"-?\d[\d.e+\-]*", "#", message)[:120]


def format_table(rows: Mapping[str, Mapping[str, int]], first: str = "mechanism") -> str:
    """A markdown table: one row per key with ``ops`` and every outcome of :data:`OUTCOMES`, then a total.

    >>> print(format_table({"flash": {"ok": 3, "typed": 1}}))
    | mechanism | ops | ok | typed | nonfinite | untyped | accepted | inconsistent |
    |---|---:|---:|---:|---:|---:|---:|---:|
    | flash | 4 | 3 | 1 | 0 | 0 | 0 | 0 |
    | **total** | 4 | 3 | 1 | 0 | 0 | 0 | 0 |
    """
    head = f"| {first} | ops | " + " | ".join(OUTCOMES) + " |"
    lines = [head, "|---|" + "---:|" * (len(OUTCOMES) + 1)]
    total = dict.fromkeys(OUTCOMES, 0)
    for name, row in rows.items():
        counts = [int(row.get(o, 0)) for o in OUTCOMES]
        for o, n in zip(OUTCOMES, counts, strict=True):
            total[o] += n
        lines.append(f"| {name} | {sum(counts):,} | " + " | ".join(f"{n:,}" for n in counts) + " |")
    lines.append(f"| **total** | {sum(total.values()):,} | " + " | ".join(f"{total[o]:,}" for o in OUTCOMES) + " |")
    return "\n".join(lines)


def generate(
    seed: int, chunk: int = 0, ops: int = 100, *, start: int = 0, dims: Sequence[int] = (4, 8, 16),
    max_keys: int = 64, kinds: Sequence[str] | None = None,
) -> Iterable[Operation]:  # fmt: skip
    """The operations ``start .. start + ops - 1`` of (``seed``, ``chunk``), drawn but not run."""
    ctx = _Context(seed, chunk, dims, max_keys, kinds)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for i in range(start, start + ops):
            yield ctx.operation(i)


def replay(
    seed: int, chunk: int, index: int, *, dims: Sequence[int] = (4, 8, 16), max_keys: int = 64,
    kinds: Sequence[str] | None = None,
) -> Operation:  # fmt: skip
    """Operation ``index`` of (``seed``, ``chunk``) on freshly built mechanisms: ``op.call()`` makes the call
    (in a debugger), ``op.run()`` classifies it, ``op.describe()`` says what its input is."""
    ctx = _Context(seed, chunk, dims, max_keys, kinds)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return ctx.operation(index)


def run_sweep(
    seed: int, chunk: int = 0, ops: int = 10_000, *, dims: Sequence[int] = (4, 8, 16), max_keys: int = 64,
    kinds: Sequence[str] | None = None, keep: int = 20, start: int = 0,
    progress: Callable[[int], None] | None = None,
) -> SweepResult:  # fmt: skip
    """Draw and run ``ops`` operations of (``seed``, ``chunk``) and count their outcomes.

    ``dims``: the query widths drawn per mechanism configuration; ``max_keys``: the most keys of
    one call; ``kinds``: the mechanisms (default all registered); ``keep``: failure records kept
    per (kind, op, outcome, error class); ``progress(done)`` is called every 10,000 operations.
    numpy floating-point warnings are silenced for the duration (outputs are checked instead).
    """
    ctx = _Context(seed, chunk, dims, max_keys, kinds)
    result = SweepResult(seed=int(seed), chunk=int(chunk))
    counts, errors, failures, slowest = result.counts, result.errors, result.failures, result.slowest
    kept: dict[tuple[str, str, str, str], int] = {}
    clock = time.perf_counter
    began = clock()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for i in range(start, start + ops):
            o = ctx.operation(i)
            t0 = clock()
            outcome, error, message = classify(o.call, o.invalid)
            dt = clock() - t0
            key = (o.kind, o.op, outcome)
            counts[key] = counts.get(key, 0) + 1
            if error:
                ekey = (o.kind, o.op, outcome, error)
                errors[ekey] = errors.get(ekey, 0) + 1
            if outcome in FAILURES:
                fkey = (o.kind, o.op, outcome, error)
                if kept.get(fkey, 0) < keep:
                    kept[fkey] = kept.get(fkey, 0) + 1
                    failures.append({
                        "seed": int(seed), "chunk": int(chunk), "index": i, "kind": o.kind, "op": o.op,
                        "outcome": outcome, "error": error, "message": message[:300], "input": o.describe()[:400],
                        "config": _short_spec(o.spec),
                    })  # fmt: skip
            skey = (o.kind, o.op)
            if skey not in slowest or dt > slowest[skey][0]:
                slowest[skey] = (dt, int(seed), int(chunk), i)
            if progress is not None and (i - start + 1) % 10_000 == 0:
                progress(i - start + 1)
    result.ops = ops
    result.seconds = clock() - began
    return result


def _short_spec(spec: Mapping[str, Any]) -> str:
    text = json.dumps(spec, default=str, separators=(",", ":"))
    return text if len(text) <= 300 else text[:297] + "..."


# -- the experiment's table ------------------------------------------------------------------
def experiment_result(
    experiment: str = "experiments/reliability_sweep.experiment.yaml", *, ci: bool = False
) -> tuple[SweepResult, list[dict[str, Any]]]:
    """Every recorded point of the ``reliability_sweep`` experiment on the current code, merged, and the runs
    without a record (a crashed kernel, a point not run yet).

    A point whose notebook failed its final assertion (failures found) still recorded its counts before it:
    they are read from its executed notebook, so the table exists whether or not the sweep is clean.
    """
    from ruvattn.lab.experiments import code_version, load_experiment
    from ruvattn.lab.record import read_records

    exp = load_experiment(experiment, ci=ci)
    code = code_version()
    wanted = {json.dumps(r["params"], sort_keys=True, default=str): r["params"] for r in exp.runs()}
    found: dict[str, tuple[str, Any]] = {}
    for path in sorted((exp.runs_dir / "points").glob("*.json")):
        try:
            point = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(point, dict) or point.get("code") != code:
            continue
        key = json.dumps(point.get("params"), sort_keys=True, default=str)
        if key not in wanted:
            continue
        records = point.get("records") or {}
        notebook = path.with_suffix(".ipynb")
        if "sweep" not in records and notebook.is_file():
            try:
                records = read_records(notebook)
            except (OSError, ValueError):
                records = {}
        finished = str(point.get("finished", ""))
        if isinstance(records, dict) and records.get("sweep") and (key not in found or finished > found[key][0]):
            found[key] = (finished, records["sweep"])
    merged = merge_rows({"status": "ok", "sweep": sweep} for _, sweep in found.values())
    return merged, [params for key, params in wanted.items() if key not in found]


def merge_rows(rows: Iterable[Mapping[str, Any]]) -> SweepResult:
    """The ``sweep`` column (JSON of :meth:`SweepResult.to_json`) of the rows whose status is ``ok``, merged."""
    total = SweepResult()
    for row in rows:
        data = row.get("sweep")
        if row.get("status") != "ok" or not data:
            continue
        total = total.merge(SweepResult.from_json(json.loads(data) if isinstance(data, str) else data))
    return total


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ruvattn.lab.sweep``: the experiment's merged table (or a sweep run here with ``--ops``)."""
    parser = argparse.ArgumentParser(prog="python -m ruvattn.lab.sweep", description=main.__doc__)
    parser.add_argument("--experiment", default="experiments/reliability_sweep.experiment.yaml")
    parser.add_argument("--ci", action="store_true", help="the experiment's CI-sized grid")
    parser.add_argument("--ops", type=int, default=0, help="run this many operations here instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=0)
    parser.add_argument("--failures", type=int, default=3, help="examples printed per failure class")
    args = parser.parse_args(argv)
    if args.ops:
        result = run_sweep(args.seed, args.chunk, args.ops)
    else:
        try:
            result, missing = experiment_result(args.experiment, ci=args.ci)
        except AttentionError as exc:
            print(f"error: {exc}")
            return 2
        if missing:
            print(f"{len(missing)} point(s) without a record on this code (crashed, or not run yet):")
            for params in missing:
                print(f"  {params}")
        if not result.ops:
            return 1
    print(result.table())
    print()
    print(result.table("op"))
    print(f"\n{result.ops:,} operations in {result.seconds:,.0f} s of sweep time "
          f"({result.ops / max(result.seconds, 1e-9):,.0f} ops/s per process)")  # fmt: skip
    for grp in result.failure_classes():
        f = grp["example"]
        print(f"\n{grp['outcome']} {grp['error']} in {grp['op']} ({', '.join(grp['kinds'])}): {grp['message']}")
        print(f"  replay({f['seed']}, {f['chunk']}, {f['index']}): {f['input']}")
    return 1 if result.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

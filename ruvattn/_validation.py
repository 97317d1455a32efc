"""Input checks shared by every mechanism, and the one error-message format.

Messages read ``<op>: <argument> <constraint>; got <value>. <fix>`` or
``<op>: <argument> has shape (7, 64), expected (n, 128).``  The checks are
cheap (shape, dtype and flag look-ups): NaN and infinity are not scanned for up
front but detected by the kernels from their results, and only then are the
inputs scanned to name the culprit (:func:`raise_for_status`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ruvattn.errors import DimensionMismatch, EmptyInput, InvalidConfig, NumericalInstability, OutOfBounds
from ruvattn.kernels.attention import BADID, EMPTY, NONFINITE

_FLOATS = (np.float32, np.float64)
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_I64 = np.dtype(np.int64)


def _shape(x: Any) -> str:
    return str(tuple(np.shape(x))) if not isinstance(x, np.ndarray) else str(x.shape)


def as_array(x: Any, op: str, name: str, ndim: int, dtype: np.dtype | None = None) -> NDArray[np.floating]:
    """Convert ``x`` to a C-contiguous, aligned, writeable float32/float64 array of ``ndim`` dimensions.

    Such an array of the right dtype passes through unchanged (no copy).  Any other layout -- a
    strided slice, Fortran order, a read-only or unaligned buffer (``np.frombuffer``, a read-only
    memmap) -- is copied once: the kernels are compiled for that one layout, and every other one
    would cost a new Numba specialisation (seconds of compiling, measured 2-17 s, the first time
    it is seen).  The inputs are never written to.  Lists of vectors are converted once.
    ``dtype`` forces the result dtype; otherwise float32/float64 are kept, float16 becomes float32
    and anything else float64.
    """
    if type(x) is np.ndarray and x.ndim == ndim and x.flags.carray:  # the fast path: no copy, few checks
        dt = x.dtype
        if (dt is _F32 or dt is _F64) and (dtype is None or dt is dtype):
            return x
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except ValueError as exc:  # ragged lists
            raise DimensionMismatch(f"{op}: {name} must be a rectangular array; got ragged rows ({exc}).") from None
    if arr.ndim != ndim:
        want = "(d,)" if ndim == 1 else "(n, d)" if ndim == 2 else f"{ndim}-D"
        raise DimensionMismatch(f"{op}: {name} has shape {arr.shape}, expected {want}.")
    if dtype is None:
        if arr.dtype in _FLOATS:
            dtype = arr.dtype
        elif arr.dtype == np.float16:
            dtype = np.dtype(np.float32)
        elif arr.dtype.kind in "iub":
            dtype = np.dtype(np.float64)
        else:
            raise DimensionMismatch(f"{op}: {name} must hold real numbers; got dtype {arr.dtype}.")
    if arr.dtype != dtype or not arr.flags.carray:  # carray: C-contiguous, aligned and writeable
        if arr.dtype.kind not in "fiub":
            raise DimensionMismatch(f"{op}: {name} must hold real numbers; got dtype {arr.dtype}.")
        arr = np.array(arr, dtype=dtype, order="C")  # a copy (ascontiguousarray keeps a read-only array)
    return arr


def common_dtype(*arrays: NDArray[np.floating]) -> np.dtype:
    """float64 if any input is float64, else float32."""
    first = arrays[0].dtype
    if all(a.dtype is first for a in arrays[1:]):
        return first
    for a in arrays:
        if a is not None and a.dtype == np.float64:
            return np.dtype(np.float64)
    return np.dtype(np.float32)


def values_required(op: str, prepared: str | None = "keys prepared with prepare(keys, values)") -> InvalidConfig:
    """The one error for omitted values (every mechanism: values are never replaced by the keys or
    silently dropped)."""
    alt = f" (or pass {prepared} as keys, values=None)" if prepared else ""
    return InvalidConfig(f"{op}: values are required with raw keys{alt}.")


def stale_prepared(op: str, what: str = "mechanism") -> InvalidConfig:
    """The one error for keys prepared by another instance, or by this one before its learned state
    changed (``load_state_dict``, ``set_params``): they would mix old and new weights."""
    return InvalidConfig(
        f"{op}: these keys were prepared by another {what} or before its state was loaded; call prepare() again."
    )


def values_with_prepared(op: str) -> InvalidConfig:
    """The one error for values passed next to keys that already carry theirs."""
    return InvalidConfig(f"{op}: these keys were prepared with their values; pass values=None.")


def check_width(op: str, name: str, arr: NDArray[Any], expected: int) -> None:
    if arr.shape[-1] != expected:
        want = f"({expected},)" if arr.ndim == 1 else f"(n, {expected})" if arr.ndim == 2 else f"(..., {expected})"
        raise DimensionMismatch(f"{op}: {name} has shape {arr.shape}, expected {want}.")


def check_keys_values(op: str, keys: NDArray[Any], values: NDArray[Any]) -> None:
    if keys.shape[0] != values.shape[0]:
        raise DimensionMismatch(
            f"{op}: keys and values must have the same number of rows; got {keys.shape[0]} keys and "
            f"{values.shape[0]} values. Every key needs exactly one value (nothing is truncated)."
        )


def as_keep(op: str, mask: Any, shape: tuple[int, ...]) -> NDArray[np.bool_]:
    """A boolean keep-mask (true = the key takes part) of exactly ``shape``."""
    arr = np.asarray(mask)
    if arr.dtype != np.bool_:
        raise DimensionMismatch(
            f"{op}: mask must be boolean (true = the key takes part); got dtype {arr.dtype}. "
            "For additive scores use bias=."
        )
    if arr.shape != shape:
        raise DimensionMismatch(f"{op}: mask has shape {arr.shape}, expected {shape}.")
    return np.require(arr, None, "CAW")  # C-contiguous, aligned, writeable (a copy otherwise): the kernels' layout


def as_bias(op: str, bias: Any, shape: tuple[int, ...], dtype: np.dtype) -> NDArray[np.floating]:
    arr = as_array(bias, op, "bias", len(shape), dtype)
    if arr.shape != shape:
        raise DimensionMismatch(f"{op}: bias has shape {arr.shape}, expected {shape}.")
    return arr


def as_ids(op: str, ids: Any, size: int, name: str = "ids") -> NDArray[np.int64]:
    """Integer row ids as int64.  Their range ``[0, size)`` is checked by the kernels
    (status :data:`~ruvattn.kernels.attention.BADID`), see :func:`raise_for_status`."""
    if type(ids) is np.ndarray and ids.dtype is _I64 and ids.ndim == 1 and ids.flags.carray:
        return ids
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise DimensionMismatch(f"{op}: {name} has shape {arr.shape}, expected (n,).")
    if arr.size and arr.dtype.kind not in "iu":
        raise DimensionMismatch(f"{op}: {name} must be integers; got dtype {arr.dtype}.")
    return np.require(arr, np.int64, "CAW")  # C-contiguous, aligned, writeable (a copy otherwise): see as_array


def check_ids(op: str, ids: NDArray[np.int64], size: int, name: str = "ids") -> None:
    """Raise :class:`OutOfBounds` for the first id outside ``[0, size)``."""
    bad = ids[(ids < 0) | (ids >= size)]
    if bad.size:
        raise OutOfBounds(f"{op}: {name} must be in [0, {size}); got {bad[0]}.")


def positive_int(owner: str, name: str, value: Any, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidConfig(f"{owner}: '{name}' must be a positive integer; got {value!r}.{hint}")
    return int(value)


def non_negative_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InvalidConfig(f"{owner}: '{name}' must be a non-negative integer; got {value!r}.")
    return int(value)


def positive_float(owner: str, name: str, value: Any, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidConfig(f"{owner}: '{name}' must be a positive number; got {value!r}.") from None
    if not np.isfinite(f) or f <= 0:
        raise InvalidConfig(f"{owner}: '{name}' must be a positive finite number; got {value!r}.")
    return f


def non_negative_float(owner: str, name: str, value: Any) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidConfig(f"{owner}: '{name}' must be a non-negative number; got {value!r}.") from None
    if not np.isfinite(f) or f < 0:
        raise InvalidConfig(f"{owner}: '{name}' must be a non-negative finite number; got {value!r}.")
    return f


def unit_interval(owner: str, name: str, value: Any) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidConfig(f"{owner}: '{name}' must be a number in [0, 1); got {value!r}.") from None
    if not (0.0 <= f < 1.0):
        raise InvalidConfig(f"{owner}: '{name}' must be in [0, 1); got {value!r}.")
    return f


def _first_nonfinite(name: str, arr: NDArray[Any] | None) -> str | None:
    """``"name[i, j] = value"`` for the first NaN/inf entry (a ``-inf`` bias is a mask, not an error)."""
    if arr is None or arr.size == 0:
        return None
    bad = ~np.isfinite(arr)
    if name == "bias":
        bad &= arr != -np.inf  # -inf bias is a mask
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        return f"{name}{list(where)} = {arr[where]}"
    return None


def check_finite(op: str, **arrays: NDArray[Any]) -> None:
    """Scan inputs for NaN/inf (used where a scan is cheap next to the work, e.g. before a projection)."""
    for name, arr in arrays.items():
        found = _first_nonfinite(name, arr)
        if found is not None:
            raise NumericalInstability(f"{op}: {name} must be finite; got {found}. Remove or replace NaN/inf.")


def check_ball(op: str, name: str, x: NDArray[Any], c: float) -> None:
    """:class:`OutOfBounds` for the first row of ``x`` on or outside the Poincaré ball ``c|x|² < 1``."""
    a = np.atleast_2d(x).astype(np.float64, copy=False)
    top = np.abs(a).max(axis=1, initial=0.0)
    scaled = a / np.where(top > 0, top, 1.0)[:, None]  # no overflow of |x|² for huge rows
    norms = top * np.sqrt(np.einsum("ij,ij->i", scaled, scaled))
    bad = np.flatnonzero(np.sqrt(c) * norms >= 1.0)
    if bad.size:
        where = name if np.ndim(x) == 1 else f"{name}[{bad[0]}]"
        raise OutOfBounds(
            f"{op}: {where} has norm {norms[bad[0]]:.6g} >= 1/sqrt(c) = {1.0 / np.sqrt(c):.6g}: it is on or outside "
            "the Poincaré ball. Map Euclidean data in with mech.embed(x) first."
        )


def check_scores(op: str, scores: NDArray[Any], keep: NDArray[np.bool_] | None = None) -> None:
    """:class:`NumericalInstability` if a live score (a key not masked out) is NaN or infinite: the
    inputs were checked finite, so a distance or score overflowed.  Never a softmax of ``-inf``
    rows (zeros) or NaN."""
    live = scores if keep is None else scores[keep]
    if not np.isfinite(live).all():
        raise NumericalInstability(
            f"{op}: a distance or score overflowed float64 (inputs are finite but too large, or the "
            "temperature too small). Scale the inputs down or raise the temperature."
        )


def check_output(op: str, out: NDArray[Any], dtype: np.dtype) -> NDArray[Any]:
    """``out`` cast to ``dtype``; :class:`NumericalInstability` if it is not finite there (a finite
    float64 result too large for float32 is an error, never ``inf``)."""
    res = np.asarray(out).astype(dtype, copy=False)
    if not np.isfinite(res).all():
        raise NumericalInstability(
            f"{op}: the output overflowed {np.dtype(dtype).name} (inputs are finite but too large). "
            "Scale the inputs down or use float64."
        )
    return res


def raise_for_status(
    op: str,
    status: int | NDArray[np.integer],
    *,
    query: NDArray[Any] | None = None,
    keys: NDArray[Any] | None = None,
    values: NDArray[Any] | None = None,
    bias: NDArray[Any] | None = None,
    ids: NDArray[np.int64] | None = None,
    empty_ok: bool = False,
) -> None:
    """Turn a kernel status into a typed error naming the culprit."""
    st = np.asarray(status)
    if st.size == 0 or not st.any():
        return
    if (st == BADID).any() and ids is not None and keys is not None:
        check_ids(op, ids, keys.shape[0])
    if (st == NONFINITE).any():
        check_finite(op, query=query, keys=keys, values=values, bias=bias)
        raise NumericalInstability(
            f"{op}: a score or the output overflowed {keys.dtype if keys is not None else 'the dtype'} "
            "(inputs are finite but too large). Scale the inputs down or use float64."
        )
    if (st == EMPTY).any() and not empty_ok:
        rows = np.flatnonzero(np.atleast_1d(st) == EMPTY)
        where = "" if st.ndim == 0 else f" (query rows {rows[:5].tolist()}{'...' if rows.size > 5 else ''})"
        raise EmptyInput(
            f"{op}: nothing to attend over{where}: the key set is empty or every key is masked out. "
            "Pass at least one key with mask=True."
        )


# -- parameter constraints (declared once, used by every Param in the package) ----------------


def _message(owner: str, name: str, text: str, value: Any, none: bool, hint: str = "") -> InvalidConfig:
    alt = " or None" if none else ""
    return InvalidConfig(f"{owner}: '{name}' must be {text}{alt}; got {value!r}.{hint}")


class Constraint(ABC):
    """What a parameter's value must be (abstract: a subclass missing a method cannot be instantiated).

    :meth:`check` returns the normalised value or raises
    :class:`InvalidConfig` as ``"<owner>: '<name>' must be <describe()>; got <value>."``.

    ``control`` names the widget that edits it (``"int"``, ``"float"``, ``"bool"``, ``"choice"``
    or ``""`` for none); ``low``/``high``/``choices`` bound it.
    """

    control: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    hint: str = ""

    @abstractmethod
    def check(self, owner: str, name: str, value: Any, none: bool = False) -> Any:
        """The normalised value, or :class:`InvalidConfig` in the one message format."""

    @abstractmethod
    def describe(self) -> str:
        """The constraint in words (``"a positive integer"``), for messages and docstrings."""


def _is_int(value: Any) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer))


def _is_real(value: Any) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))


def _finite_real(value: Any) -> bool:
    """A real number representable as a finite float (an int beyond float range is not)."""
    if not _is_real(value):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


class Integer(Constraint):
    """An integer in ``[low, high]``.  An omitted bound means the int32 range (±(2**31 - 1)): every integer a
    kernel receives fits its integer type, so ``2**64`` is refused here rather than inside a compiled function."""

    control = "int"

    def __init__(self, low: int | None = None, high: int | None = None, hint: str = "") -> None:
        self.low, self.high, self.hint = low, high, hint

    def check(self, owner: str, name: str, value: Any, none: bool = False) -> int:
        if (
            not _is_int(value)
            or value < (-_INT32 if self.low is None else self.low)
            or value > (_INT32 if self.high is None else self.high)
        ):
            raise _message(owner, name, self.describe(), value, none, self.hint)
        return int(value)

    def describe(self) -> str:
        lo = -_INT32 if self.low is None else self.low
        hi = _INT32 if self.high is None else self.high
        top = "2**31 - 1" if hi == _INT32 else str(hi)
        if hi < 65536:  # a small range reads best as an interval ("an integer in [1, 16]")
            return f"an integer in [{lo}, {hi}]"
        if lo == 1:
            return f"a positive integer (at most {top})"
        if lo == 0:
            return f"a non-negative integer (at most {top})"
        return f"an integer in [{lo}, {hi}]"


class Real(Constraint):
    """A finite real number in an interval; ``closed`` is ``"both"``, ``"left"``, ``"right"`` or ``"neither"``."""

    control = "float"

    def __init__(
        self, low: float | None = None, high: float | None = None, closed: str = "both", hint: str = ""
    ) -> None:
        self.low, self.high, self.closed, self.hint = low, high, closed, hint

    def check(self, owner: str, name: str, value: Any, none: bool = False) -> float:
        ok = _finite_real(value)
        if ok:
            f = float(value)
            left = self.closed in ("both", "left")
            right = self.closed in ("both", "right")
            if self.low is not None and (f < self.low or (f == self.low and not left)):
                ok = False
            if self.high is not None and (f > self.high or (f == self.high and not right)):
                ok = False
        if not ok:
            raise _message(owner, name, self.describe(), value, none, self.hint)
        return float(value)

    def describe(self) -> str:
        if self.low is None and self.high is None:
            return "a finite number"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        left = "[" if self.closed in ("both", "left") and self.low is not None else "("
        right = "]" if self.closed in ("both", "right") and self.high is not None else ")"
        return f"a number in {left}{lo}, {hi}{right}"


class Options(Constraint):
    """One of a fixed set of values (strings)."""

    control = "choice"

    def __init__(self, *choices: Any, hint: str = "") -> None:
        self.choices, self.hint = tuple(choices), hint

    def check(self, owner: str, name: str, value: Any, none: bool = False) -> Any:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool) or value not in self.choices:
            raise _message(owner, name, self.describe(), value, none, self.hint)
        return value

    def describe(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)


class Boolean(Constraint):
    """``True`` or ``False`` (numpy booleans accepted; 0/1 are not)."""

    control = "bool"

    def check(self, owner: str, name: str, value: Any, none: bool = False) -> bool:
        if not isinstance(value, (bool, np.bool_)):
            raise _message(owner, name, self.describe(), value, none)
        return bool(value)

    def describe(self) -> str:
        return "True or False"


class Either(Constraint):
    """The first of several constraints that accepts the value (e.g. a mode name or a number)."""

    def __init__(self, *options: Constraint) -> None:
        self.options = options
        self.control = options[0].control
        self.choices = tuple(c for o in options for c in o.choices)

    def check(self, owner: str, name: str, value: Any, none: bool = False) -> Any:
        for o in self.options:
            try:
                return o.check(owner, name, value)
            except InvalidConfig:
                continue
        raise _message(owner, name, self.describe(), value, none)

    def describe(self) -> str:
        return " or ".join(o.describe() for o in self.options)


class Custom(Constraint):
    """A check written as a function ``(owner, name, value) -> normalised value`` that raises
    :class:`InvalidConfig` itself (lists of experts, manifold factors)."""

    def __init__(self, check: Any, text: str) -> None:
        self._check, self._text = check, text

    def check(self, owner: str, name: str, value: Any, none: bool = False) -> Any:
        return self._check(owner, name, value)

    def describe(self) -> str:
        return self._text


#: Shared constraints: declared here once, named by every mechanism that has the parameter.
_INT32 = 2**31 - 1  # every count and size fits the kernels' index arithmetic
POSITIVE_INT = Integer(1)  # at most 2**31 - 1, like every Integer without an upper bound
NON_NEGATIVE_INT = Integer(0)
#: a feature width (dim, in/out channels): learned matrices are width², so 65,536 is already 16 GiB
WIDTH = Integer(1, 65536)
SEED = Integer(0, 2**63 - 1)
PROBABILITY = Real(0.0, 1.0, closed="left")
POSITIVE = Real(0.0, None, closed="neither")
NON_NEGATIVE = Real(0.0, None, closed="left")
FLAG = Boolean()


class Curvature(Real):
    """A signed curvature: negative for hyperbolic spaces (``-1.0`` is the unit ball)."""

    def __init__(self, sign: int = -1, hint: str = "") -> None:
        if sign < 0:
            super().__init__(None, 0.0, closed="neither", hint=hint)
        else:
            super().__init__(0.0, None, closed="neither", hint=hint)
        self.sign = sign

    def describe(self) -> str:
        return "negative (e.g. -1.0 for the unit ball)" if self.sign < 0 else "positive (e.g. 1.0 for the unit sphere)"


NEGATIVE_CURVATURE = Curvature(-1)


def float_list(owner: str, name: str, value: Any, length: int | None = None, low: float = 0.0) -> list[float]:
    """A list of finite numbers ``>= low`` (of ``length`` entries when given)."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        arr = None
    if (
        arr is None
        or arr.ndim != 1
        or (length is not None and arr.size != length)
        or not np.all(np.isfinite(arr))
        or np.any(arr < low)
        or any(isinstance(v, (bool, np.bool_)) for v in np.ravel(np.asarray(value, dtype=object)))
    ):
        size = f"{length} " if length is not None else ""
        raise InvalidConfig(f"{owner}: '{name}' must be a list of {size}finite numbers >= {low:g}; got {value!r}.")
    return [float(x) for x in arr]

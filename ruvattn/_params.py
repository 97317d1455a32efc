"""Parameters declared once: the machinery every mechanism (and the MoE router) is built on.

A class lists its constructor parameters as :class:`Param` declarations -- name, constraint
(from :mod:`ruvattn._validation`), default, one-line doc -- and :class:`Parametrized` derives
the rest from that one list:

* the constructor (positional or keyword, in declaration order; ``inspect.signature`` and
  ``help()`` show it), with validation and one message format
  (``"<Class>: '<name>' must be <constraint>; got <value>."``);
* attribute access by name (``sdpa.temperature``; assigning goes through :meth:`set_params`);
* :meth:`~Parametrized.get_params` / :meth:`~Parametrized.set_params` (an unknown name lists
  the valid ones; a rejected change leaves the object exactly as it was);
* :meth:`~Parametrized.to_dict` / :meth:`~Parametrized.from_dict` (JSON-able);
* the ``Parameters`` section of the class docstring;
* the controls a widget builds (each constraint knows its interval or choices);
* the learned-state protocol: :meth:`~Parametrized.state_dict`,
  :meth:`~Parametrized.load_state_dict` (all or nothing) and safetensors files, with one
  name-mapping helper (external names such as torch's ``out_proj.weight`` <-> attributes
  ending in ``_``).

The current values live in an immutable :class:`ParamSet` (``obj.config``); a change builds a
new one, so anything cached against the old set is invalidated by identity.

>>> from ruvattn import ScaledDotProductAttention
>>> s = ScaledDotProductAttention(8, temperature=2.0)
>>> s.temperature, s.get_params()["dim"]
(2.0, 8)
>>> s.set_params(temperature=-1)
Traceback (most recent call last):
...
ruvattn.errors.InvalidConfig: ScaledDotProductAttention: 'temperature' must be a number in (0, inf); got -1.
>>> s.temperature
2.0
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
from numpy.typing import NDArray

from ruvattn._validation import Constraint
from ruvattn.errors import DimensionMismatch, InvalidConfig, NumericalInstability

__all__ = ["REQUIRED", "Param", "ParamSet", "Parametrized"]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: The default of a parameter that must be given.
REQUIRED: Any = _Required()

_P = TypeVar("_P", bound="Parametrized")


@dataclass(frozen=True)
class Param:
    """One constructor parameter: name, constraint, default and a one-line doc.

    ``none=True`` admits ``None`` (shown as "or None").  ``encode`` turns the stored value
    into JSON-able data for :meth:`Parametrized.to_dict` (identity by default).  ``live=False``
    marks a parameter that changes the shapes of inputs or learned arrays (a widget offers no
    control for it); ``options(params)`` lists the valid values given the other parameters (a
    widget then offers exactly those, e.g. the head counts that divide ``dim``).
    """

    name: str
    constraint: Constraint
    default: Any = REQUIRED
    doc: str = ""
    none: bool = False
    encode: Callable[[Any], Any] | None = None
    live: bool = True
    options: Callable[[Mapping[str, Any]], Sequence[Any]] | None = None

    def check(self, owner: str, value: Any) -> Any:
        """The validated (normalised) value, or :class:`InvalidConfig` in the one format."""
        if value is None and self.none:
            return None
        return self.constraint.check(owner, self.name, value, none=self.none)

    def describe(self) -> str:
        text = self.constraint.describe()
        return f"{text} or None" if self.none else text

    def to_json(self, value: Any) -> Any:
        if value is None:
            return None
        return self.encode(value) if self.encode is not None else value


class ParamSet:
    """Immutable parameter values with attribute access (``config.dim``) and mapping helpers."""

    __slots__ = ("__dict__",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"parameters are read-only; use set_params({name}=...)")

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dict__)

    def __repr__(self) -> str:
        return "ParamSet(" + ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items()) + ")"


class _ParamAttribute:
    """``obj.<name>`` reads the parameter; assigning validates through ``set_params``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(obj.config, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        obj.set_params(**{self.name: value})


@dataclass
class _StateSpec:
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)


class Parametrized:
    """Base of everything built from declared parameters (mechanisms, the MoE router).

    Subclasses set ``params``; may override :meth:`_check_params` (constraints that involve
    several parameters), :meth:`_init_state` (learned arrays and generators from the
    parameters) and, when they hold learned or random arrays, :meth:`_state_shapes`.
    """

    params: ClassVar[tuple[Param, ...]] = ()
    kind: ClassVar[str] = ""
    _param_index: ClassVar[dict[str, Param]] = {}
    __signature__: ClassVar[inspect.Signature]

    config: ParamSet

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names = [p.name for p in cls.params]
        if len(set(names)) != len(names):
            raise TypeError(f"{cls.__name__}: a parameter is declared twice in {names}.")
        cls._param_index = {p.name: p for p in cls.params}
        for p in cls.params:  # attribute access unless the class defines the name itself
            if not any(p.name in vars(k) and not isinstance(vars(k)[p.name], _ParamAttribute) for k in cls.__mro__):
                setattr(cls, p.name, _ParamAttribute(p.name))
        cls.__signature__ = inspect.Signature(
            [
                inspect.Parameter(
                    p.name,
                    inspect.Parameter.POSITIONAL_OR_KEYWORD,
                    default=inspect.Parameter.empty if p.default is REQUIRED else p.default,
                )
                for p in cls.params
            ]
        )
        if cls.params and cls.__doc__ is not None and "\n    Parameters\n" not in cls.__doc__:
            cls.__doc__ = cls.__doc__.rstrip() + "\n\n" + _param_doc(cls.params)

    # -- construction and validation ------------------------------------------
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        owner = type(self).__name__
        try:
            bound = self.__signature__.bind(*args, **kwargs)
        except TypeError as exc:  # an unknown, missing or repeated argument
            raise InvalidConfig(f"{owner}: {exc}. Parameters: {', '.join(self._param_index)}.") from None
        bound.apply_defaults()
        self.config = self._validated(dict(bound.arguments))
        self.training = False
        self._allocate(owner)

    def _allocate(self, owner: str) -> None:
        """:meth:`_init_state`, with a configuration too large for memory a typed error."""
        try:
            self._init_state()
        except MemoryError:
            raise InvalidConfig(
                f"{owner}: the learned arrays of this configuration do not fit in memory "
                f"({self.config.as_dict()}); use smaller widths."
            ) from None

    @classmethod
    def _validated(cls, values: dict[str, Any]) -> ParamSet:
        owner = cls.__name__
        checked = {p.name: p.check(owner, values[p.name]) for p in cls.params}
        config = ParamSet(checked)
        cls._check_params(owner, config)
        return config

    @classmethod
    def _check_params(cls, owner: str, p: ParamSet) -> None:
        """Constraints between parameters; raise :class:`InvalidConfig`."""

    def _init_state(self) -> None:
        """(Re)create learned arrays and random generators from the parameters."""

    # -- parameters ------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The constructor arguments, in declaration order."""
        return self.config.as_dict()

    def set_params(self: _P, **params: Any) -> _P:
        """Change parameters (validated; learned arrays are re-initialised from the seed).

        All or nothing: a rejected change leaves the object exactly as it was.
        """
        owner = type(self).__name__
        unknown = sorted(set(params) - set(self._param_index))
        if unknown:
            raise InvalidConfig(
                f"{owner}.set_params: unknown parameter(s) {unknown}. Valid: {', '.join(self._param_index)}."
            )
        new = self._validated({**self.config.as_dict(), **params})
        before = dict(self.__dict__)
        try:
            self.config = new
            self._allocate(owner)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise
        return self

    def to_dict(self) -> dict[str, Any]:
        """``{"type": kind, **params}`` as JSON-able data; :func:`ruvattn.build` takes it back."""
        out: dict[str, Any] = {"type": self.kind} if self.kind else {}
        for p in self.params:
            out[p.name] = p.to_json(getattr(self.config, p.name))
        return out

    @classmethod
    def from_dict(cls: type[_P], spec: Mapping[str, Any] | str) -> _P:
        if isinstance(spec, str):
            spec = _json(cls.__name__ + ".from_dict", spec)
        if not isinstance(spec, Mapping):
            raise InvalidConfig(f"{cls.__name__}.from_dict: spec must be a dict; got {type(spec).__name__}.")
        params = dict(spec)
        kind = params.pop("type", cls.kind)
        if kind != cls.kind:
            raise InvalidConfig(f"{cls.__name__}.from_dict: spec is for {kind!r}, not {cls.kind!r}.")
        return cls(**params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "type")
        return f"{type(self).__name__}({args})"

    # -- learned state -----------------------------------------------------------
    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        """External tensor names -> shapes of the learned/random arrays (none by default).

        Each is stored on the attribute :meth:`_state_attr` names.
        """
        return {}

    def _state_aliases(self) -> dict[str, str]:
        """Tensors that are another tensor (``name -> the one it shares``)."""
        return {}

    @staticmethod
    def _state_attr(name: str) -> str:
        """The one name mapping: ``out_proj.weight`` -> attribute ``out_proj_weight_``."""
        return name.replace(".", "_") + "_"

    def _state_optional(self) -> frozenset[str]:
        """Tensors a load may leave out (they keep their current values); none by default."""
        return frozenset()

    def _state_hint(self, names: list[str]) -> str:
        """A fix for tensors the parameters do not expect (or expect but lack); empty by default."""
        return ""

    def _state_get(self, name: str) -> NDArray[Any]:
        """The array stored under external ``name``."""
        return getattr(self, self._state_attr(name))

    def _state_set(self, name: str, value: NDArray[Any]) -> None:
        """Store a validated array under external ``name``."""
        setattr(self, self._state_attr(name), value)

    def _state_loaded(self) -> None:
        """Called after a successful load (drop caches derived from the arrays)."""

    @property
    def state_version(self) -> int:
        """Increases at every load of learned state (prepared key sets check it)."""
        return int(self.__dict__.get("_state_version", 0))

    def state_dict(self) -> dict[str, NDArray[Any]]:
        """Learned and random arrays under their external names (copies)."""
        return {n: np.array(self._state_get(n)) for n in self._state_shapes()}

    def load_state_dict(self: _P, state: Mapping[str, Any], *, strict: bool = True) -> _P:
        """Load arrays by external name: every one present with the right shape and finite.

        All or nothing: a missing tensor (``strict``), a wrong shape or a NaN raises a typed error
        and leaves the object exactly as it was.  float32/float64 inputs keep their dtype.
        """
        op = f"{type(self).__name__}.load_state_dict"
        shapes = self._state_shapes()
        aliases = self._state_aliases()
        if not isinstance(state, Mapping):
            raise InvalidConfig(f"{op}: state must be a mapping of names to arrays; got {type(state).__name__}.")
        unexpected = sorted(set(state) - set(shapes))
        if unexpected and strict:
            raise InvalidConfig(f"{op}: unknown tensor(s) {unexpected}; expected {list(shapes)}."
                                f"{self._state_hint(unexpected)}")  # fmt: skip
        optional = self._state_optional()
        missing = [n for n in shapes if n not in state and n not in aliases and n not in optional]
        if missing and strict:
            raise InvalidConfig(
                f"{op}: missing tensor(s) {missing}; expected {list(shapes)}.{self._state_hint(missing)}"
            )
        loaded: dict[str, NDArray[Any]] = {}
        for name, shape in shapes.items():
            if name not in state:
                continue
            value = state[name]
            if hasattr(value, "detach"):  # a torch tensor, possibly requiring grad (named_parameters())
                value = value.detach().cpu().numpy()
            try:
                a = np.asarray(value)
            except (TypeError, ValueError) as exc:
                raise InvalidConfig(f"{op}: {name} is not an array ({exc}).") from None
            if a.shape != shape:
                raise DimensionMismatch(f"{op}: {name} has shape {a.shape}, expected {shape}.")
            if a.dtype.kind not in "fiub":
                raise InvalidConfig(f"{op}: {name} must hold real numbers; got dtype {a.dtype}.")
            if not np.isfinite(a).all():
                raise NumericalInstability(f"{op}: {name} contains NaN or inf.")
            current = self._state_get(name)
            dt = a.dtype if a.dtype in (np.float32, np.float64) else np.asarray(current).dtype
            loaded[name] = np.array(a, dtype=dt)
        for name, target in aliases.items():
            if name in loaded and target in loaded and not np.array_equal(loaded[name], loaded[target]):
                raise InvalidConfig(
                    f"{op}: {name} must equal {target} (they are one shared tensor).{self._state_hint([name])}"
                )
        before = dict(self.__dict__)
        try:
            for name, value in loaded.items():
                if name not in aliases:
                    self._state_set(name, value)
            for name, target in aliases.items():
                self._state_set(name, self._state_get(target))
            self.__dict__["_state_version"] = self.state_version + 1
            self._state_loaded()
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise
        return self

    def save_safetensors(self, path: str | Path, *, prefix: str = "") -> None:
        """Write :meth:`state_dict` as a safetensors file (names optionally under ``prefix.``)."""
        from safetensors.numpy import save_file

        state = self.state_dict()
        if not state:
            raise InvalidConfig(f"{type(self).__name__}.save_safetensors: this object holds no learned state.")
        head = f"{prefix}." if prefix else ""
        save_file({head + k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))

    def load_safetensors(self: _P, path: str | Path, *, prefix: str | None = None) -> _P:
        """Load a safetensors file written by :meth:`save_safetensors`, torch or PyG.

        Names may carry a module prefix (``layer.0.attn.in_proj_weight``): with ``prefix=None``
        the one prefix under which every expected tensor is found is used (ambiguity is an
        error); a file that is missing, corrupt or not safetensors raises
        :class:`~ruvattn.errors.InvalidConfig` and changes nothing.
        """
        op = f"{type(self).__name__}.load_safetensors"
        raw = _read_safetensors(op, path)
        names = [n for n in self._state_shapes() if n not in self._state_aliases()]
        if prefix is None:
            prefixes = {k[: -len(n)] for n in names for k in raw if k == n or k.endswith("." + n)}
            usable = sorted(p for p in prefixes if all(p + n in raw for n in names))
            if len(usable) > 1:
                raise InvalidConfig(f"{op}: several module prefixes hold these tensors in {path}: {usable}; "
                                    "pass prefix=.")  # fmt: skip
            head = usable[0] if usable else ""
        else:
            head = f"{prefix.rstrip('.')}." if prefix else ""
        state = {n: raw[head + n] for n in self._state_shapes() if head + n in raw}
        return self.load_state_dict(state)


def _read_safetensors(op: str, path: str | Path) -> dict[str, NDArray[Any]]:
    from safetensors.numpy import load_file

    p = Path(path)
    if not p.is_file():
        raise InvalidConfig(f"{op}: no file at {str(p)!r}.")
    try:
        return dict(load_file(str(p)))
    except Exception as exc:  # safetensors raises its own error type (and OSError/ValueError) on bad files
        raise InvalidConfig(
            f"{op}: {str(p)!r} is not a readable safetensors file ({type(exc).__name__}: {exc})."
        ) from None


def _json(op: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidConfig(f"{op}: the spec is not valid JSON ({exc}).") from None


def _param_doc(params: tuple[Param, ...]) -> str:
    lines = ["    Parameters", "    ----------"]
    for p in params:
        default = "required" if p.default is REQUIRED else f"default {p.default!r}"
        lines.append(f"    {p.name} : {p.describe()}, {default}")
        if p.doc:
            lines.append(f"        {p.doc}")
    return "\n".join(lines) + "\n"

"""Controls derived from declared parameters: one rule per constraint, nothing per mechanism.

Every mechanism (and the MoE router) declares its parameters once as
:class:`~ruvattn._params.Param` objects whose constraints know their interval or choices
(:mod:`ruvattn._validation`). :func:`controls_for` turns each *live* parameter whose constraint
names a control kind into an ipywidget set to the current value, so a mechanism registered
tomorrow gets its controls without a line changed here:

* ``live=False`` (the parameter changes shapes): no control;
* a constraint without a control kind (``Custom``: lists of experts, manifold factors): no control;
* current value ``None`` (a ``none=True`` parameter): no control. ``None`` stands for a rule
  (``1/sqrt(d)``, unlimited capacity, every head), not a number a slider could sit at, and a
  slider parked at a made-up number would misreport the setting; build the mechanism with a
  value to get the control;
* ``options`` declared: a ``Dropdown`` of ``param.options(params)`` (e.g. the head counts that
  divide ``dim``), re-listed after every change;
* ``"choice"``: a ``Dropdown`` of the constraint's ``choices``;
* ``"bool"``: a ``Checkbox``;
* ``"int"``: an ``IntSlider`` over ``[low, high]``; an open upper end reaches
  ``max(4·value, num_keys)`` (window-like sizes can cover every key);
* ``"float"`` in ``(0, inf)`` (temperature, scale, noise scale): a ``FloatLogSlider`` reaching
  1.5 decades beyond both 1 and the value;
* ``"float"`` with both ends finite: a ``FloatSlider`` over the interval in 100 steps, an
  excluded end one step in (dropout ``[0, 1)`` → ``[0, 0.99]``);
* ``"float"`` with one end finite: a ``FloatSlider`` from that end over ``max(1, 5·|value − end|)``
  rounded up to 1, 2 or 5 × 10^k (curvature ``-1`` in ``(-inf, 0)`` → ``[-5, -0.05]``, LeakyReLU
  slope ``0.2`` in ``[0, inf)`` → ``[0, 1]``);
* ``"float"`` without bounds: a ``FloatSlider`` over ``[-w, w]``, ``w`` the same rounded width.

Every control is labelled with the parameter's name and carries its one-line doc as the tooltip.
The widget applies the controls with :func:`apply_controls` (one validated
:meth:`~ruvattn._params.Parametrized.set_params` call with every changed value: all or nothing,
so an invalid combination raises the library's error and changes nothing) and then refreshes the
option lists that depend on other parameters with :func:`refresh_options`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import ipywidgets as ipw
import numpy as np

from ruvattn._params import Param, Parametrized

__all__ = ["apply_controls", "control_for", "controls_for", "refresh_options"]

#: decades a log slider reaches beyond both 1 and the current value
LOG_DECADES = 1.5
#: steps across a linear slider
STEPS = 100
#: a half-open interval's slider spans this many times the value's distance from the finite end
SPAN = 5.0
_STYLE = {"description_width": "initial"}


def _nice(x: float, up: bool) -> float:
    """The nearest of 1, 2, 5 × 10^k at or above (``up``) or at or below ``x > 0``."""
    e = math.floor(math.log10(x))
    candidates = [m * 10.0**k for k in (e - 1, e, e + 1) for m in (1, 2, 5)]
    if up:
        return min(c for c in candidates if c >= x * (1 - 1e-12))
    return max(c for c in candidates if c <= x * (1 + 1e-12))


def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step) + 1e-9))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def option_values(param: Param, params: Mapping[str, Any]) -> list[Any]:
    """The values a ``Dropdown`` offers: the declared options (or choices), the current value included."""
    values = list(param.options(params)) if param.options is not None else list(param.constraint.choices)
    current = params[param.name]
    if current not in values:
        values.append(current)
    return values


def _int_slider(param: Param, value: int, num_keys: int, common: dict[str, Any]) -> ipw.IntSlider:
    c = param.constraint
    lo = c.low if c.low is not None else value - max(4 * abs(value), num_keys, 1)
    hi = c.high if c.high is not None else max(4 * value, num_keys, value, lo + 1)
    return ipw.IntSlider(value=value, min=int(lo), max=int(hi), step=1, **common)


def _float_slider(param: Param, value: float, common: dict[str, Any]) -> ipw.FloatSlider | ipw.FloatLogSlider:
    c = param.constraint
    closed = getattr(c, "closed", "both")
    left_open = c.low is not None and closed not in ("both", "left")
    right_open = c.high is not None and closed not in ("both", "right")
    if c.low == 0 and c.high is None and left_open and value > 0:  # (0, inf): temperature, scale, noise scale
        log = math.log10(value)
        return ipw.FloatLogSlider(
            value=value, base=10, min=min(log, 0.0) - LOG_DECADES, max=max(log, 0.0) + LOG_DECADES, step=0.05,
            **common,
        )  # fmt: skip
    if c.low is not None and c.high is not None:
        step = _nice((c.high - c.low) / STEPS, up=False)
        lo, hi = c.low, c.high
    elif c.low is not None or c.high is not None:
        end = c.low if c.low is not None else c.high
        width = _nice(max(1.0, SPAN * abs(value - end)), up=True)
        step = width / STEPS
        lo, hi = (end, end + width) if c.low is not None else (end - width, end)
    else:
        width = _nice(max(1.0, SPAN * abs(value)), up=True)
        step = width / STEPS
        lo, hi = -width, width
    lo = min(lo + step if left_open else lo, value)  # an excluded end is one step in (unless the value is nearer)
    hi = max(hi - step if right_open else hi, value)
    return ipw.FloatSlider(value=value, min=lo, max=hi, step=step, readout_format=f".{_decimals(step)}f", **common)


def control_for(param: Param, params: Mapping[str, Any], num_keys: int) -> ipw.ValueWidget | None:
    """The control of one parameter at its current value in ``params``, or ``None`` (see the module docstring)."""
    kind = param.constraint.control
    value = params[param.name]
    if not param.live or not kind or value is None:
        return None
    common: dict[str, Any] = {"description": param.name.replace("_", " "), "style": _STYLE}
    if param.doc:
        common["tooltip"] = param.doc
    if param.options is not None or kind == "choice":
        return ipw.Dropdown(options=option_values(param, params), value=value, **common)
    if kind == "bool":
        return ipw.Checkbox(value=bool(value), indent=False, **common)
    if not _is_number(value):  # e.g. an Either whose current value is not of its first kind
        return None
    if kind == "int":
        return _int_slider(param, int(value), max(int(num_keys), 1), common)
    if kind == "float":
        return _float_slider(param, float(value), common)
    return None


def controls_for(obj: Parametrized, num_keys: int, *, only: Iterable[str] | None = None) -> dict[str, ipw.ValueWidget]:
    """``{parameter name: control}`` for every live parameter of ``obj`` that gets one, in declaration order.

    ``num_keys`` sizes the open-ended integer sliders (windows, landmark counts, features);
    ``only`` restricts the result to those names (a view whose picture is defined by some
    parameters, as the Poincaré disk by curvature and temperature).
    """
    params = obj.get_params()
    keep = None if only is None else set(only)
    out: dict[str, ipw.ValueWidget] = {}
    for p in type(obj).params:
        if keep is not None and p.name not in keep:
            continue
        control = control_for(p, params, num_keys)
        if control is not None:
            out[p.name] = control
    return out


def apply_controls(obj: Parametrized, controls: Mapping[str, ipw.ValueWidget]) -> dict[str, Any]:
    """Set every parameter whose control differs from it, in one :meth:`set_params` call; returns the changes.

    All or nothing: an invalid combination raises the library's error and leaves ``obj`` as it was.
    """
    current = obj.get_params()
    changed = {name: c.value for name, c in controls.items() if current[name] != c.value}
    if changed:
        obj.set_params(**changed)
    return changed


def refresh_options(obj: Parametrized, controls: Mapping[str, ipw.ValueWidget]) -> None:
    """Re-list the options of ``Dropdown`` controls whose declared options depend on the other parameters.

    Call it with the widget's observers off: assigning ``options`` re-selects in ipywidgets,
    and the value is put back here.
    """
    params = obj.get_params()
    for p in type(obj).params:
        control = controls.get(p.name)
        if p.options is None or not isinstance(control, ipw.Dropdown):
            continue
        values = option_values(p, params)
        if list(control.options) != values:
            control.options = values
            control.value = params[p.name]

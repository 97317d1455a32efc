"""Optimizers, gradient clipping and learning-rate schedules for :mod:`ruvattn.nn` parameters.

Each update is ``torch.optim``'s single-tensor algorithm, operation for operation, so a trajectory
matches PyTorch's step for step (``tests/test_optim.py`` runs 100 steps against it):

* :class:`SGD`: momentum, dampening, Nesterov, L2 ``weight_decay`` added to the gradient;
* :class:`Adam`: L2 ``weight_decay`` added to the gradient (``torch.optim.Adam``);
* :class:`AdamW`: decoupled weight decay (``torch.optim.AdamW``).

A schedule sets ``optimizer.lr`` from the base rate and the step count: :class:`ConstantLR`,
:class:`StepLR`, :class:`CosineLR`, :class:`WarmupLR` (linear warm-up, then another schedule or constant).

>>> import numpy as np
>>> from ruvattn import nn, optim
>>> p = nn.Parameter(np.array([1.0, -2.0]))
>>> opt = optim.SGD([p], lr=0.1)
>>> p.grad[:] = [0.5, 0.5]
>>> opt.step()
>>> p.data.tolist()
[0.95, -2.05]
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable

import numpy as np

from ruvattn.errors import InvalidConfig, NumericalInstability
from ruvattn.nn.core import Parameter

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "ConstantLR",
    "CosineLR",
    "Optimizer",
    "Schedule",
    "StepLR",
    "WarmupLR",
    "clip_grad_norm",
    "clip_grad_value",
]


def _params(op: str, params: Iterable[Parameter]) -> list[Parameter]:
    out = list(params)
    if not out:
        raise InvalidConfig(f"{op}: no parameters to optimise.")
    for p in out:
        if not isinstance(p, Parameter):
            raise InvalidConfig(f"{op}: expected ruvattn.nn.Parameter objects; got {type(p).__name__}.")
    return out


def _non_negative(op: str, **values: float) -> None:
    for name, v in values.items():
        if not (isinstance(v, (int, float, np.floating)) and math.isfinite(v) and v >= 0):
            raise InvalidConfig(f"{op}: {name} must be a finite number >= 0; got {v!r}.")


class Optimizer(ABC):
    """Base: the parameters, the current learning rate ``lr`` (a schedule may change it) and per-parameter state.

    ``no_decay``: parameters that get no weight decay (for example the biases, as the GAT paper's L2 term
    leaves them out); by default every parameter is decayed, as ``torch.optim`` does with one group.
    """

    def __init__(self, params: Iterable[Parameter], lr: float, no_decay: Iterable[Parameter] = ()) -> None:
        op = type(self).__name__
        self.params = _params(op, params)
        _non_negative(op, lr=lr)
        self.lr = float(lr)
        self.steps = 0
        skip = {id(p) for p in no_decay}
        unknown = skip - {id(p) for p in self.params}
        if unknown:
            raise InvalidConfig(f"{op}: no_decay names {len(unknown)} parameter(s) that are not being optimised.")
        self._decays = [id(p) not in skip for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad[...] = 0

    def step(self) -> None:
        """One update from the gradients now in ``p.grad`` (a non-finite gradient raises, nothing is changed)."""
        for p in self.params:
            if not np.isfinite(p.grad).all():
                raise NumericalInstability(
                    f"{type(self).__name__}.step: the gradient of {p.name or 'a parameter'} holds NaN or inf; "
                    "no parameter was updated (lower the learning rate or clip the gradients)."
                )
        self.steps += 1
        for i, p in enumerate(self.params):
            self._update(i, p)

    @abstractmethod
    def _update(self, i: int, p: Parameter) -> None:
        """Update parameter ``i`` from its gradient (``self.steps`` is already the new step count)."""


class SGD(Optimizer):
    """Stochastic gradient descent: ``g = grad + weight_decay p``; with momentum ``b = momentum b + (1 - dampening) g``
    (``b = g`` on the first step), the step is ``b`` or, with ``nesterov``, ``g + momentum b``."""

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        no_decay: Iterable[Parameter] = (),
    ) -> None:
        super().__init__(params, lr, no_decay)
        _non_negative("SGD", momentum=momentum, dampening=dampening, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise InvalidConfig("SGD: Nesterov momentum needs momentum > 0 and dampening 0.")
        self.momentum, self.dampening = float(momentum), float(dampening)
        self.nesterov, self.weight_decay = bool(nesterov), float(weight_decay)
        self._buf: list[np.ndarray | None] = [None] * len(self.params)

    def _update(self, i: int, p: Parameter) -> None:
        dt = p.data.dtype.type
        g = p.grad + dt(self.weight_decay) * p.data if self.weight_decay and self._decays[i] else p.grad
        if self.momentum:
            buf = self._buf[i]
            if buf is None:
                buf = self._buf[i] = g.copy()
            else:
                buf *= dt(self.momentum)
                buf += dt(1 - self.dampening) * g
            g = g + dt(self.momentum) * buf if self.nesterov else buf
        p.data -= dt(self.lr) * g


class Adam(Optimizer):
    """Adam (Kingma & Ba) with L2 ``weight_decay`` added to the gradient, as ``torch.optim.Adam``."""

    decoupled = False

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        no_decay: Iterable[Parameter] = (),
    ) -> None:
        super().__init__(params, lr, no_decay)
        op = type(self).__name__
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise InvalidConfig(f"{op}: betas must be two numbers in [0, 1); got {betas!r}.")
        _non_negative(op, eps=eps, weight_decay=weight_decay)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps, self.weight_decay = float(eps), float(weight_decay)
        self._m = [np.zeros_like(p.data) for p in self.params]
        self._v = [np.zeros_like(p.data) for p in self.params]

    def _update(self, i: int, p: Parameter) -> None:
        dt = p.data.dtype.type
        b1, b2 = self.betas
        g = p.grad
        if self.weight_decay and self._decays[i]:
            if self.decoupled:
                p.data *= dt(1 - self.lr * self.weight_decay)
            else:
                g = g + dt(self.weight_decay) * p.data
        m, v = self._m[i], self._v[i]
        m += dt(1 - b1) * (g - m)  # torch: exp_avg.lerp_(grad, 1 - beta1)
        v *= dt(b2)
        v += dt(1 - b2) * (g * g)
        t = self.steps
        step_size = self.lr / (1 - b1**t)
        denom = np.sqrt(v) / dt(math.sqrt(1 - b2**t)) + dt(self.eps)
        p.data -= dt(step_size) * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``p *= 1 - lr weight_decay`` before the Adam step."""

    decoupled = True

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        no_decay: Iterable[Parameter] = (),
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, no_decay)


def clip_grad_norm(params: Iterable[Parameter], max_norm: float) -> float:
    """Scale all gradients together so their joint 2-norm is at most ``max_norm``; returns the norm before
    clipping (``torch.nn.utils.clip_grad_norm_``: factor ``max_norm / (norm + 1e-6)`` when below 1)."""
    ps = _params("clip_grad_norm", params)
    _non_negative("clip_grad_norm", max_norm=max_norm)
    norm = math.sqrt(sum(float(np.sum(np.square(p.grad, dtype=np.float64))) for p in ps))
    if not math.isfinite(norm):
        raise NumericalInstability("clip_grad_norm: the gradients hold NaN or inf.")
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for p in ps:
            p.grad *= p.grad.dtype.type(coef)
    return norm


def clip_grad_value(params: Iterable[Parameter], clip_value: float) -> None:
    """Clamp every gradient entry into ``[-clip_value, clip_value]``."""
    _non_negative("clip_grad_value", clip_value=clip_value)
    for p in _params("clip_grad_value", params):
        np.clip(p.grad, -clip_value, clip_value, out=p.grad)


class Schedule(ABC):
    """Sets ``optimizer.lr = base_lr * factor(step)``; call :meth:`step` once per epoch (or per update), after
    ``optimizer.step()``, as with ``torch.optim.lr_scheduler``."""

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise InvalidConfig(
                f"{type(self).__name__}: expected a ruvattn.optim optimizer; got {type(optimizer).__name__}."
            )
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.count = 0
        optimizer.lr = self.lr_at(0)

    @abstractmethod
    def factor(self, step: int) -> float:
        """The multiplier of the base rate at ``step``."""

    def lr_at(self, step: int) -> float:
        return self.base_lr * self.factor(step)

    def step(self) -> float:
        self.count += 1
        self.optimizer.lr = self.lr_at(self.count)
        return self.optimizer.lr

    def rates(self, steps: int) -> list[float]:
        """The learning rates of steps ``0..steps-1`` (for plotting; the optimizer is not touched)."""
        return [self.lr_at(s) for s in range(steps)]


class ConstantLR(Schedule):
    """``factor`` for the first ``total_iters`` steps, then 1 (``torch.optim.lr_scheduler.ConstantLR``); the defaults
    ``factor=1`` keep the rate constant."""

    def __init__(self, optimizer: Optimizer, factor: float = 1.0, total_iters: int = 0) -> None:
        _non_negative("ConstantLR", factor=factor)
        self._factor, self.total_iters = float(factor), int(total_iters)
        super().__init__(optimizer)

    def factor(self, step: int) -> float:
        return self._factor if step < self.total_iters else 1.0


class StepLR(Schedule):
    """``gamma ** (step // step_size)`` (``torch.optim.lr_scheduler.StepLR``)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        if int(step_size) < 1:
            raise InvalidConfig(f"StepLR: step_size must be >= 1; got {step_size}.")
        _non_negative("StepLR", gamma=gamma)
        self.step_size, self.gamma = int(step_size), float(gamma)
        super().__init__(optimizer)

    def factor(self, step: int) -> float:
        return self.gamma ** (step // self.step_size)


class CosineLR(Schedule):
    """Cosine annealing from the base rate to ``eta_min`` over ``t_max`` steps, then held at ``eta_min``
    (the closed form of ``torch.optim.lr_scheduler.CosineAnnealingLR`` within one half period)."""

    def __init__(self, optimizer: Optimizer, t_max: int, eta_min: float = 0.0) -> None:
        if int(t_max) < 1:
            raise InvalidConfig(f"CosineLR: t_max must be >= 1; got {t_max}.")
        _non_negative("CosineLR", eta_min=eta_min)
        self.t_max, self.eta_min = int(t_max), float(eta_min)
        super().__init__(optimizer)

    def lr_at(self, step: int) -> float:
        s = min(step, self.t_max)
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * s / self.t_max)) / 2

    def factor(self, step: int) -> float:
        return self.lr_at(step) / self.base_lr if self.base_lr else 0.0


class WarmupLR(Schedule):
    """Linear warm-up from ``start_factor * base`` to ``base`` over ``warmup`` steps (``LinearLR``), then the schedule
    ``after`` (built on the same optimizer first; its step 0 is the end of the warm-up) or the base rate.

    >>> opt = SGD([Parameter(np.zeros(1))], lr=1.0)
    >>> [round(r, 3) for r in WarmupLR(opt, 2, after=CosineLR(opt, t_max=2)).rates(5)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """

    def __init__(self, optimizer: Optimizer, warmup: int, start_factor: float = 0.0,
                 after: Schedule | None = None) -> None:  # fmt: skip
        if int(warmup) < 1:
            raise InvalidConfig(f"WarmupLR: warmup must be >= 1; got {warmup}.")
        if not 0.0 <= start_factor <= 1.0:
            raise InvalidConfig(f"WarmupLR: start_factor must be in [0, 1]; got {start_factor}.")
        if after is not None and after.optimizer is not optimizer:
            raise InvalidConfig("WarmupLR: the schedule after the warm-up must drive the same optimizer.")
        self.warmup, self.start_factor, self.after = int(warmup), float(start_factor), after
        super().__init__(optimizer)
        if after is not None:
            self.base_lr = after.base_lr

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.base_lr * (self.start_factor + (1.0 - self.start_factor) * step / self.warmup)
        return self.after.lr_at(step - self.warmup) if self.after is not None else self.base_lr

    def factor(self, step: int) -> float:
        return self.lr_at(step) / self.base_lr if self.base_lr else 0.0

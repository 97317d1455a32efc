"""ruvattn.optim against torch.optim, step for step over 100-step trajectories, and its guards."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ruvattn import InvalidConfig, NumericalInstability, nn, optim

torch = pytest.importorskip("torch")


def _trajectory(make_ours, make_torch, dtype=np.float64, steps=100, clip=None):
    """Minimise the same quartic-plus-linear loss with both optimizers; return both parameter paths."""
    rng = np.random.default_rng(0)
    init = [rng.standard_normal((4, 3)).astype(dtype), rng.standard_normal(5).astype(dtype)]
    targets = [rng.standard_normal(a.shape).astype(dtype) for a in init]
    ours = [nn.Parameter(a.copy()) for a in init]
    theirs = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in init]
    opt, topt = make_ours(ours), make_torch(theirs)
    path, tpath = [], []
    for _ in range(steps):
        for p, t in zip(ours, targets, strict=True):  # gradient of sum((p - t)^4 / 4 + p * t)
            p.grad[...] = (p.data - t) ** 3 + t
        topt.zero_grad()
        loss = sum(
            ((p - torch.from_numpy(t)) ** 4 / 4 + p * torch.from_numpy(t)).sum()
            for p, t in zip(theirs, targets, strict=True)
        )
        loss.backward()
        if clip is not None:
            norm = optim.clip_grad_norm(ours, clip)
            tnorm = torch.nn.utils.clip_grad_norm_(theirs, clip)
            assert norm == pytest.approx(float(tnorm), rel=1e-5)
        opt.step()
        topt.step()
        path.append([p.data.copy() for p in ours])
        tpath.append([p.detach().numpy().copy() for p in theirs])
    return path, tpath


CASES = {
    "sgd": (lambda ps: optim.SGD(ps, lr=0.01), lambda ps: torch.optim.SGD(ps, lr=0.01)),
    "sgd-momentum-wd": (lambda ps: optim.SGD(ps, lr=0.01, momentum=0.9, dampening=0.1, weight_decay=0.01),
                        lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    "sgd-nesterov": (lambda ps: optim.SGD(ps, lr=0.01, momentum=0.8, nesterov=True),
                     lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.8, nesterov=True)),
    "adam": (lambda ps: optim.Adam(ps, lr=0.01), lambda ps: torch.optim.Adam(ps, lr=0.01)),
    "adam-l2": (lambda ps: optim.Adam(ps, lr=0.005, betas=(0.8, 0.99), eps=1e-6, weight_decay=5e-4),
                lambda ps: torch.optim.Adam(ps, lr=0.005, betas=(0.8, 0.99), eps=1e-6, weight_decay=5e-4)),
    "adamw": (lambda ps: optim.AdamW(ps, lr=0.01, weight_decay=0.1),
              lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1)),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_trajectory_equals_torch_step_for_step(name, dtype):
    path, tpath = _trajectory(*CASES[name], dtype=dtype)
    tol = {"rtol": 1e-12, "atol": 1e-13} if dtype == np.float64 else {"rtol": 1e-5, "atol": 1e-6}
    for step, (ours, theirs) in enumerate(zip(path, tpath, strict=True)):
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(a, b, **tol, err_msg=f"{name}, step {step}")
    assert not np.allclose(path[0][0], path[-1][0])  # the parameters did move


def test_clip_grad_norm_trajectory_equals_torch():
    path, tpath = _trajectory(*CASES["adam"], clip=0.5)
    np.testing.assert_allclose(path[-1][0], tpath[-1][0], rtol=1e-12, atol=1e-13)


def test_clip_grad_value_clamps():
    p = nn.Parameter(np.zeros(4))
    p.grad[:] = [-3.0, -0.5, 0.5, 3.0]
    optim.clip_grad_value([p], 1.0)
    assert p.grad.tolist() == [-1.0, -0.5, 0.5, 1.0]


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda o: optim.StepLR(o, step_size=7, gamma=0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 7, 0.5)),
        (lambda o: optim.CosineLR(o, t_max=40, eta_min=1e-4),
         lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 40, 1e-4)),
        (lambda o: optim.WarmupLR(o, warmup=10, start_factor=0.1),
         lambda o: torch.optim.lr_scheduler.LinearLR(o, 0.1, 1.0, total_iters=10)),
        (lambda o: optim.ConstantLR(o, factor=0.25, total_iters=5),
         lambda o: torch.optim.lr_scheduler.ConstantLR(o, 0.25, total_iters=5)),
    ],
)  # fmt: skip
def test_schedules_equal_torch(ours, theirs):
    p = nn.Parameter(np.zeros(1))
    opt = optim.SGD([p], lr=0.1)
    topt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched, tsched = ours(opt), theirs(topt)
    for _ in range(40):
        assert opt.lr == pytest.approx(tsched.get_last_lr()[0], rel=1e-12, abs=1e-15)
        opt.step()
        topt.step()
        sched.step()
        tsched.step()


def test_warmup_then_cosine_is_continuous_and_ends_at_eta_min():
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=1.0)
    sched = optim.WarmupLR(opt, 5, after=optim.CosineLR(opt, t_max=20, eta_min=0.01))
    rates = sched.rates(30)
    assert rates[0] == 0.0 and rates[5] == 1.0 and rates[25] == pytest.approx(0.01) and rates[29] == pytest.approx(0.01)
    assert all(a <= b for a, b in itertools.pairwise(rates[:6]))
    assert all(a >= b for a, b in itertools.pairwise(rates[5:26]))


def test_guards():
    p = nn.Parameter(np.zeros(2))
    with pytest.raises(InvalidConfig, match="no parameters"):
        optim.Adam([])
    with pytest.raises(InvalidConfig, match="lr"):
        optim.SGD([p], lr=-1)
    with pytest.raises(InvalidConfig, match="Nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(InvalidConfig, match="betas"):
        optim.Adam([p], betas=(0.9, 1.0))
    with pytest.raises(InvalidConfig, match="Parameter"):
        optim.SGD([np.zeros(2)], lr=0.1)
    opt = optim.Adam([p], lr=0.1)
    p.grad[0] = np.nan
    with pytest.raises(NumericalInstability, match="no parameter was updated"):
        opt.step()
    assert p.data.tolist() == [0.0, 0.0] and opt.steps == 0
    with pytest.raises(NumericalInstability):
        optim.clip_grad_norm([p], 1.0)
    with pytest.raises(InvalidConfig, match="same optimizer"):
        other = optim.SGD([nn.Parameter(np.zeros(1))], lr=1.0)
        optim.WarmupLR(opt, 3, after=optim.CosineLR(other, t_max=3))


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_no_decay_equals_a_torch_group_without_weight_decay(name):
    rng = np.random.default_rng(3)
    w0, b0 = rng.standard_normal((3, 2)), rng.standard_normal(2)
    ours = [nn.Parameter(w0.copy(), "weight"), nn.Parameter(b0.copy(), "bias")]
    theirs = [torch.nn.Parameter(torch.from_numpy(w0.copy())), torch.nn.Parameter(torch.from_numpy(b0.copy()))]
    make = {"adam": (optim.Adam, torch.optim.Adam), "adamw": (optim.AdamW, torch.optim.AdamW),
            "sgd": (optim.SGD, torch.optim.SGD)}[name]  # fmt: skip
    opt = make[0](ours, lr=0.01, weight_decay=0.1, no_decay=[ours[1]])
    topt = make[1]([{"params": [theirs[0]]}, {"params": [theirs[1]], "weight_decay": 0.0}], lr=0.01, weight_decay=0.1)
    for step in range(50):
        for p, t in zip(ours, theirs, strict=True):
            g = np.sin(step + p.data)
            p.grad[...] = g
            t.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    for p, t in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-13)
    with pytest.raises(InvalidConfig, match="not being optimised"):
        optim.Adam(ours[:1], no_decay=ours[1:])

"""Learning-rate schedules: each curve at hand-computed points (warmup boundaries and
peaks included), ReduceLROnPlateau's patience and cooldown, state-dict resumption, and
(when PyTorch happens to be installed) the PyTorch-named ones against torch."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import minilm.optim as optim
from minilm.nn import Parameter
from minilm.optim import lr_scheduler as S


def make_opt(lr: float = 1.0, cls=optim.SGD, groups: int = 1, **kw):
    ps = [{"params": [Parameter(np.zeros(2))], "lr": lr * (i + 1)} for i in range(groups)]
    return cls(ps, lr=lr, **kw)


def curve(sched, n: int, group: int = 0) -> list:
    """lr used by the optimizer steps 0 .. n-1 (the scheduler steps after each)."""
    out = []
    for _ in range(n):
        out.append(sched.optimizer.param_groups[group]["lr"])
        sched.step()
    return out


def at(sched, ts) -> list:
    c = curve(sched, max(ts) + 1)
    return [c[t] for t in ts]


# ---------------------------------------------------------------------------- PyTorch's


def test_step_multistep_exponential():
    assert curve(S.StepLR(make_opt(), step_size=3, gamma=0.5), 7) == [1, 1, 1, .5, .5, .5, .25]
    np.testing.assert_allclose(curve(S.MultiStepLR(make_opt(), [2, 5], gamma=0.1), 7),
                               [1, 1, .1, .1, .1, .01, .01])
    np.testing.assert_allclose(curve(S.ExponentialLR(make_opt(2.0), 0.9), 4),
                               [2, 1.8, 1.62, 1.458])


def test_constant_linear_lambda_cosine():
    assert curve(S.ConstantLR(make_opt(), factor=0.5, total_iters=3), 5) == [.5, .5, .5, 1, 1]
    assert curve(S.ConstantLR(make_opt(), factor=0.5, total_iters=None), 5) == [.5] * 5
    assert curve(S.ConstantLR(make_opt(0.3), factor=1.0), 3) == [0.3] * 3
    np.testing.assert_allclose(
        curve(S.LinearLR(make_opt(), start_factor=0.25, end_factor=1.0, total_iters=4), 6),
        [.25, .4375, .625, .8125, 1, 1])
    np.testing.assert_allclose(curve(S.LambdaLR(make_opt(2.0), lambda t: 1 / (t + 1)), 3),
                               [2, 1, 2 / 3])
    c = at(S.CosineAnnealingLR(make_opt(), T_max=10, eta_min=0.1), [0, 5, 10])
    np.testing.assert_allclose(c, [1.0, 0.55, 0.1])


def test_per_group_base_lrs():
    opt = make_opt(1.0, groups=2)
    s = S.StepLR(opt, step_size=1, gamma=0.5)
    s.step()
    assert s.get_last_lr() == [0.5, 1.0]
    assert [g["initial_lr"] for g in opt.param_groups] == [1.0, 2.0]
    with pytest.raises(ValueError, match="2 lr_lambdas"):
        S.LambdaLR(make_opt(groups=2), [lambda t: 1.0])


# ---------------------------------------------------------------------------- decays


def test_exponential_decay_and_staircase():
    c = at(S.ExponentialDecay(make_opt(), decay_rate=0.5, decay_steps=4), [0, 2, 4, 6])
    np.testing.assert_allclose(c, [1, 0.5 ** 0.5, 0.5, 0.5 ** 1.5])
    c = at(S.ExponentialDecay(make_opt(), 0.5, 4, staircase=True), [0, 3, 4, 7, 8])
    assert c == [1, 1, 0.5, 0.5, 0.25]


def test_inverse_time_decay():
    c = at(S.InverseTimeDecay(make_opt(), decay_rate=0.5, decay_steps=2), [0, 3, 4])
    np.testing.assert_allclose(c, [1, 1 / 1.75, 0.5])
    c = at(S.InverseTimeDecay(make_opt(), 0.5, 2, staircase=True), [1, 3, 4])
    np.testing.assert_allclose(c, [1, 1 / 1.5, 0.5])


# ---------------------------------------------------------------------------- warmup


def test_cosine_with_warmup():
    s = S.CosineWithWarmup(make_opt(2.0), warmup_steps=4, total_steps=12, min_lr_ratio=0.1)
    c = curve(s, 20)
    np.testing.assert_allclose([c[0], c[2], c[3], c[4]], [0, 1, 1.5, 2])  # warmup, peak at w
    assert max(c) == c[4] == 2.0
    np.testing.assert_allclose(c[8], 0.2 + 1.8 * 0.5)  # half way down the cosine
    np.testing.assert_allclose(c[6], 0.2 + 1.8 * (1 + math.cos(math.pi / 4)) / 2)
    assert c[12] == c[19] == pytest.approx(0.2)
    c = at(S.CosineWithWarmup(make_opt(2.0), 0, 10, min_lr=0.5), [0, 5, 10])
    np.testing.assert_allclose(c, [2.0, 1.25, 0.5])
    with pytest.raises(ValueError, match="not both"):
        S.CosineWithWarmup(make_opt(), 1, 10, min_lr=0.1, min_lr_ratio=0.1)
    with pytest.raises(ValueError, match="total_steps"):
        S.CosineWithWarmup(make_opt(), 10, 5)


def test_linear_warmup_decay():
    np.testing.assert_allclose(curve(S.LinearWarmupDecay(make_opt(), 2, 6), 8),
                               [0, .5, 1, .75, .5, .25, 0, 0])
    np.testing.assert_allclose(at(S.LinearWarmupDecay(make_opt(), 2, 6, min_lr=0.2), [2, 4, 9]),
                               [1, .6, .2])


def test_inverse_sqrt_and_noam_peaks():
    c = at(S.InverseSqrt(make_opt(), warmup_steps=4), [0, 2, 4, 16])
    np.testing.assert_allclose(c, [0, 0.5, 1, 0.5])
    d, w, k = 16, 10, 2.0
    c = curve(S.Noam(make_opt(123.0), d_model=d, warmup_steps=w, scale=k), 41)
    peak = k * d ** -0.5 * w ** -0.5
    assert int(np.argmax(c)) == w and c[w] == pytest.approx(peak)
    np.testing.assert_allclose([c[0], c[5], c[40]], [0, peak / 2, peak / 2])
    np.testing.assert_allclose(c[20], k * d ** -0.5 * 20 ** -0.5)


def test_piecewise_linear():
    pts = [(0, 0.0), (10, 1.0), (20, 0.5)]
    c = at(S.PiecewiseLinear(make_opt(), pts), [0, 5, 10, 15, 20, 30])
    np.testing.assert_allclose(c, [0, .5, 1, .75, .5, .5])
    c = at(S.PiecewiseLinear(make_opt(2.0), [(5, 1.0), (9, 0.0)], relative=True), [0, 5, 7, 9])
    np.testing.assert_allclose(c, [2, 2, 1, 0])
    with pytest.raises(ValueError, match="increase"):
        S.PiecewiseLinear(make_opt(), [(5, 1.0), (5, 0.0)])


# ---------------------------------------------------------------------------- one cycle


def test_one_cycle_peak_end_and_momentum():
    opt = make_opt(cls=optim.SGD, momentum=0.9)
    s = S.OneCycleLR(opt, max_lr=1.0, total_steps=100)
    lrs, moms = [], []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        s.step()
    assert lrs[0] == pytest.approx(1.0 / 25) and moms[0] == pytest.approx(0.95)
    assert int(np.argmax(lrs)) == 29 and lrs[29] == pytest.approx(1.0)  # t_w = 0.3*100 - 1
    assert moms[29] == pytest.approx(0.85) and int(np.argmin(moms)) == 29
    assert lrs[64] == pytest.approx(0.04 / 1e4 + (1.0 - 0.04 / 1e4) / 2)  # half way down
    assert lrs[99] == pytest.approx(0.04 / 1e4) and moms[99] == pytest.approx(0.95)
    assert s.last_epoch == 100  # t = total_steps is still allowed (as PyTorch)
    with pytest.raises(ValueError, match="total_steps is 100"):
        s.step()
    assert s.last_epoch == 100  # the failed step changed nothing


def test_one_cycle_three_phase_linear_and_betas():
    opt = make_opt(cls=optim.Adam)
    s = S.OneCycleLR(opt, max_lr=[2.0], epochs=10, steps_per_epoch=10, three_phase=True,
                     anneal_strategy="linear", div_factor=10, final_div_factor=100)
    lrs, b1 = [], []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        b1.append(opt.param_groups[0]["betas"][0])
        s.step()
    np.testing.assert_allclose([lrs[0], lrs[29], lrs[58], lrs[99]], [0.2, 2.0, 0.2, 0.002])
    np.testing.assert_allclose(lrs[14], 0.2 + 1.8 * 14 / 29)
    np.testing.assert_allclose([b1[0], b1[29], b1[58], b1[99]], [0.95, 0.85, 0.95, 0.95])
    assert opt.param_groups[0]["betas"][1] == 0.999
    with pytest.raises(ValueError, match="momentum or betas"):
        S.OneCycleLR(make_opt(cls=optim.Adagrad), max_lr=1.0, total_steps=10)
    with pytest.raises(ValueError, match="total_steps"):
        S.OneCycleLR(make_opt(), max_lr=1.0)


# ---------------------------------------------------------------------------- plateau


def test_reduce_on_plateau_patience_and_cooldown():
    opt = make_opt()
    s = S.ReduceLROnPlateau(opt, factor=0.5, patience=2, cooldown=1)
    lrs = []
    for metric in [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]:
        s.step(metric)
        lrs.append(opt.param_groups[0]["lr"])
    # bad epochs 1, 2, 3 > patience -> halve; one cooldown evaluation not counted
    assert lrs == [1, 1, 1, 1, .5, .5, .5, .5, .25]
    assert s.get_last_lr() == [0.25]


def test_reduce_on_plateau_modes_threshold_and_min_lr():
    opt = make_opt()
    s = S.ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=0, threshold=0.5,
                            threshold_mode="abs", min_lr=0.05)
    lrs = []
    for metric in [1.0, 1.6, 2.0, 3.0, 3.1]:  # 2.0 < 1.6 + 0.5: no improvement
        s.step(metric)
        lrs.append(opt.param_groups[0]["lr"])
    np.testing.assert_allclose(lrs, [1, 1, .1, .1, .05])
    s.step(0.0)
    assert opt.param_groups[0]["lr"] == 0.05  # clamped at min_lr
    s = S.ReduceLROnPlateau(make_opt(), patience=0, threshold=0.1)  # rel: needs 10% better
    s.step(1.0)
    s.step(0.95)
    assert s.get_last_lr() == [pytest.approx(0.1)]
    with pytest.raises(ValueError, match="factor"):
        S.ReduceLROnPlateau(make_opt(), factor=1.0)
    with pytest.raises(TypeError, match="metric"):
        s.step()


# ---------------------------------------------------------------------------- state dicts


SCHEDULES = [
    lambda o: S.StepLR(o, 3, 0.5),
    lambda o: S.MultiStepLR(o, [2, 6], 0.3),
    lambda o: S.ExponentialLR(o, 0.9),
    lambda o: S.ConstantLR(o, 0.5, 4),
    lambda o: S.LinearLR(o, 0.2, 1.0, 5),
    lambda o: S.CosineAnnealingLR(o, 8, 0.01),
    lambda o: S.ExponentialDecay(o, 0.5, 3, staircase=True),
    lambda o: S.InverseTimeDecay(o, 0.3, 2),
    lambda o: S.CosineWithWarmup(o, 3, 10, min_lr_ratio=0.1),
    lambda o: S.LinearWarmupDecay(o, 3, 10),
    lambda o: S.InverseSqrt(o, 4),
    lambda o: S.Noam(o, 64, 4),
    lambda o: S.PiecewiseLinear(o, [(0, 0.1), (4, 1.0), (10, 0.0)]),
    lambda o: S.OneCycleLR(o, max_lr=1.0, total_steps=12),
    lambda o: S.LambdaLR(o, lambda t: 0.9 ** t),
]


@pytest.mark.parametrize("build", SCHEDULES, ids=lambda b: "")
def test_state_dict_resumes_the_same_curve(build):
    full = curve(build(make_opt(cls=optim.Adam, groups=2)), 12, group=1)
    opt = make_opt(cls=optim.Adam, groups=2)
    s = build(opt)
    head = curve(s, 5, group=1)
    sd = json.loads(json.dumps(s.state_dict(), allow_nan=False))  # plain JSON
    opt2 = make_opt(cls=optim.Adam, groups=2)  # a fresh run: its own lr is not restored
    s2 = build(opt2)
    s2.step()
    s2.load_state_dict(sd)
    assert s2.last_epoch == 5 and s2.get_last_lr() == s.get_last_lr()
    assert opt2.param_groups[1]["lr"] == opt.param_groups[1]["lr"]
    assert opt2.param_groups[0]["betas"] == opt.param_groups[0]["betas"]  # OneCycle's too
    np.testing.assert_allclose(head + curve(s2, 7, group=1), full, rtol=1e-15)


def test_plateau_state_dict_round_trip():
    metrics = [1.0, 0.9, 0.95, 0.97, 0.99, 0.8, 0.85, 0.9, 0.95, 0.99]

    def run(s, ms):
        out = []
        for m in ms:
            s.step(m)
            out.append(s.get_last_lr()[0])
        return out

    full = run(S.ReduceLROnPlateau(make_opt(), patience=1, cooldown=1, factor=0.5), metrics)
    s = S.ReduceLROnPlateau(make_opt(), patience=1, cooldown=1, factor=0.5)
    head = run(s, metrics[:4])
    assert S.ReduceLROnPlateau(make_opt()).state_dict()["best"] is None
    sd = json.loads(json.dumps(s.state_dict(), allow_nan=False))
    s2 = S.ReduceLROnPlateau(make_opt(), patience=1, cooldown=1, factor=0.5)
    s2.load_state_dict(sd)
    assert head + run(s2, metrics[4:]) == full
    assert full != [1.0] * len(metrics)


def test_scheduler_errors():
    with pytest.raises(TypeError, match="not an Optimizer"):
        S.StepLR(object(), 2)
    with pytest.raises(ValueError, match="step_size"):
        S.StepLR(make_opt(), 0)
    with pytest.raises(ValueError, match="initial_lr"):
        S.StepLR(make_opt(), 2, last_epoch=3)
    s = S.StepLR(make_opt(), 2)
    with pytest.raises(ValueError, match="unexpected keys"):
        s.load_state_dict({"last_epoch": 1, "bogus": 2})
    with pytest.raises(ValueError, match="base_lrs has 2 entries"):
        s.load_state_dict({"base_lrs": [1.0, 2.0]})
    assert s.last_epoch == 0


def test_resume_with_last_epoch():
    opt = make_opt()
    s = S.StepLR(opt, 2, 0.5)
    curve(s, 3)
    s2 = S.StepLR(opt, 2, 0.5, last_epoch=s.last_epoch)  # the groups hold initial_lr
    assert s2.last_epoch == 4 and s2.get_last_lr() == [0.25]


# ---------------------------------------------------------------------------- torch


TORCH_PAIRS = [
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("MultiStepLR", dict(milestones=[2, 5, 5, 9], gamma=0.3)),
    ("ExponentialLR", dict(gamma=0.8)),
    ("ConstantLR", dict(factor=0.4, total_iters=4)),
    ("LinearLR", dict(start_factor=0.1, end_factor=0.9, total_iters=6)),
    ("CosineAnnealingLR", dict(T_max=10, eta_min=0.05)),
    ("OneCycleLR", dict(max_lr=0.5, total_steps=20)),
    ("OneCycleLR", dict(max_lr=[0.5, 0.7], total_steps=20, three_phase=True,
                        anneal_strategy="linear", pct_start=0.25)),
    ("LambdaLR", dict(lr_lambda=lambda t: 1 / (1 + t))),
]


@pytest.mark.parametrize("name,kwargs", TORCH_PAIRS, ids=[n for n, _ in TORCH_PAIRS])
def test_pytorch_named_schedules_equal_torch(name, kwargs):
    """Extra check, only when PyTorch happens to be installed (it is not a dependency)."""
    torch = pytest.importorskip("torch")
    for cls, tcls in ((optim.SGD, torch.optim.SGD), (optim.Adam, torch.optim.Adam)):
        extra = dict(momentum=0.9) if cls is optim.SGD else {}
        ours = make_opt(0.3, cls=cls, groups=2, **extra)
        tp = [{"params": [torch.zeros(2, requires_grad=True)], "lr": 0.3 * (i + 1)} for i in range(2)]
        theirs = tcls(tp, lr=0.3, **extra)
        s, ts = getattr(S, name)(ours, **kwargs), getattr(torch.optim.lr_scheduler, name)(theirs, **kwargs)
        for _ in range(20):
            for g, tg in zip(ours.param_groups, theirs.param_groups):
                assert g["lr"] == pytest.approx(tg["lr"], rel=1e-12, abs=1e-15)
                key = "betas" if cls is optim.Adam else "momentum"
                np.testing.assert_allclose(g[key], tg[key], rtol=1e-12)
            theirs.step()
            s.step()
            ts.step()


def test_plateau_equals_torch():
    torch = pytest.importorskip("torch")
    metrics = [1.0, 0.9, 0.95, 0.97, 0.99, 0.8, 0.85, 0.9, 0.95, 0.99, 0.7, 0.7, 0.7, 0.7]
    for kw in (dict(patience=1, cooldown=1, factor=0.5),
               dict(mode="max", threshold_mode="abs", threshold=0.05, patience=0, min_lr=0.01)):
        s = S.ReduceLROnPlateau(make_opt(), **kw)
        topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        ts = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kw)
        for m in metrics:
            s.step(m)
            ts.step(m)
            assert s.get_last_lr()[0] == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)

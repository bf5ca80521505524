"""Optimizers, the backend update kernels, param groups, state dicts, gradient
clipping and EMA: every update rule against its formula written out in float64 NumPy
(and, when PyTorch happens to be installed, against torch.optim)."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

import minilm
import minilm.optim as optim
from minilm import Tensor
from minilm.nn import Embedding, LayerNorm, Linear, Module, Parameter

SHAPES = [(3, 4), (5,)]
SCALE = [3.0, 1.0, 0.3, 2.0, 0.5]  # shrinking then growing gradients: amsgrad matters


def init_values(seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in SHAPES]


def grads_at(t: int) -> list:
    rng = np.random.default_rng(100 + t)
    return [SCALE[t] * rng.standard_normal(s) for s in SHAPES]


def run(cls, kwargs: dict, steps: int, values: list | None = None) -> tuple:
    """Parameters after each of ``steps`` optimizer steps (float64), and the optimizer."""
    params = [Parameter(v.copy()) for v in (values or init_values())]
    opt = cls(params, **kwargs)
    out = []
    for t in range(steps):
        for p, g in zip(params, grads_at(t)):
            p.grad = Tensor(g)
        opt.step()
        out.append([p.data.copy() for p in params])
    return out, opt, params


# ---------------------------------------------------------------------------- references
# One array at a time, straight from the formulas in the docstrings.


def ref_sgd(w, gs, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
            maximize=False):
    out, buf = [], None
    for g in gs:
        g = -g if maximize else g
        g = g + weight_decay * w
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            d = g + momentum * buf if nesterov else buf
        else:
            d = g
        w = w - lr * d
        out.append(w)
    return out


def ref_adam(w, gs, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
             maximize=False, decoupled=False):
    b1, b2 = betas
    m = v = vmax = np.zeros_like(w)
    out = []
    for t, g in enumerate(gs, 1):
        g = -g if maximize else g
        if decoupled:
            w = w - lr * weight_decay * w
        else:
            g = g + weight_decay * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v)
        m_hat = m / (1 - b1 ** t)
        v_hat = (vmax if amsgrad else v) / (1 - b2 ** t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(w)
    return out


def ref_adamw(w, gs, weight_decay=1e-2, **kw):
    return ref_adam(w, gs, weight_decay=weight_decay, decoupled=True, **kw)


def ref_adagrad(w, gs, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                eps=1e-10, maximize=False):
    s = np.full_like(w, initial_accumulator_value)
    out = []
    for t, g in enumerate(gs, 1):
        g = -g if maximize else g
        g = g + weight_decay * w
        s = s + g * g
        w = w - lr / (1 + (t - 1) * lr_decay) * g / (np.sqrt(s) + eps)
        out.append(w)
    return out


def ref_rmsprop(w, gs, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                centered=False, maximize=False):
    v = gm = b = np.zeros_like(w)
    out = []
    for g in gs:
        g = -g if maximize else g
        g = g + weight_decay * w
        v = alpha * v + (1 - alpha) * g * g
        if centered:
            gm = alpha * gm + (1 - alpha) * g
            den = np.sqrt(v - gm * gm) + eps
        else:
            den = np.sqrt(v) + eps
        if momentum > 0:
            b = momentum * b + g / den
            w = w - lr * b
        else:
            w = w - lr * g / den
        out.append(w)
    return out


def ref_adamax(w, gs, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False):
    b1, b2 = betas
    m = u = np.zeros_like(w)
    out = []
    for t, g in enumerate(gs, 1):
        g = -g if maximize else g
        g = g + weight_decay * w
        m = b1 * m + (1 - b1) * g
        u = np.maximum(b2 * u, np.abs(g) + eps)
        w = w - lr / (1 - b1 ** t) * m / u
        out.append(w)
    return out


CASES = [
    (optim.SGD, ref_sgd, dict(lr=0.1)),
    (optim.SGD, ref_sgd, dict(lr=0.1, momentum=0.9)),
    (optim.SGD, ref_sgd, dict(lr=0.1, momentum=0.9, dampening=0.3)),
    (optim.SGD, ref_sgd, dict(lr=0.1, momentum=0.9, nesterov=True)),
    (optim.SGD, ref_sgd, dict(lr=0.1, weight_decay=0.2)),
    (optim.SGD, ref_sgd, dict(lr=0.1, momentum=0.8, weight_decay=0.2, nesterov=True)),
    (optim.SGD, ref_sgd, dict(lr=0.1, momentum=0.8, dampening=0.1, weight_decay=0.2, maximize=True)),
    (optim.SGD, ref_sgd, dict(lr=0.1, maximize=True)),
    (optim.Adam, ref_adam, dict()),
    (optim.Adam, ref_adam, dict(lr=0.01, weight_decay=0.5)),
    (optim.Adam, ref_adam, dict(lr=0.01, betas=(0.8, 0.5), amsgrad=True)),
    (optim.Adam, ref_adam, dict(lr=0.01, betas=(0.8, 0.5), amsgrad=True, weight_decay=0.1,
                                maximize=True)),
    (optim.Adam, ref_adam, dict(lr=0.01, eps=0.1, maximize=True)),
    (optim.AdamW, ref_adamw, dict()),
    (optim.AdamW, ref_adamw, dict(lr=0.01, weight_decay=0.5)),
    (optim.AdamW, ref_adamw, dict(lr=0.01, betas=(0.8, 0.5), weight_decay=0.5, amsgrad=True)),
    (optim.AdamW, ref_adamw, dict(lr=0.01, maximize=True)),
    (optim.Adagrad, ref_adagrad, dict()),
    (optim.Adagrad, ref_adagrad, dict(lr=0.1, lr_decay=0.5, weight_decay=0.2)),
    (optim.Adagrad, ref_adagrad, dict(initial_accumulator_value=0.5, eps=1e-3, maximize=True)),
    (optim.RMSprop, ref_rmsprop, dict()),
    (optim.RMSprop, ref_rmsprop, dict(alpha=0.5, centered=True)),
    (optim.RMSprop, ref_rmsprop, dict(momentum=0.9, weight_decay=0.1)),
    (optim.RMSprop, ref_rmsprop, dict(alpha=0.7, centered=True, momentum=0.5, weight_decay=0.1,
                                      maximize=True)),
    (optim.Adamax, ref_adamax, dict()),
    (optim.Adamax, ref_adamax, dict(lr=0.01, betas=(0.5, 0.6), weight_decay=0.3)),
    (optim.Adamax, ref_adamax, dict(eps=0.5, maximize=True)),
]
IDS = [f"{c.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}"
       for c, _, kw in CASES]


# ---------------------------------------------------------------------------- update rules


@pytest.mark.parametrize("cls,ref,kwargs", CASES, ids=IDS)
def test_first_three_steps_match_formula(cls, ref, kwargs):
    got, _, _ = run(cls, kwargs, 3)
    gs = [grads_at(t) for t in range(3)]
    for i, w0 in enumerate(init_values()):
        want = ref(w0, [g[i] for g in gs], **kwargs)
        for t in range(3):
            np.testing.assert_allclose(got[t][i], want[t], rtol=1e-12, atol=1e-14,
                                       err_msg=f"step {t + 1}, parameter {i}")


def test_amsgrad_and_nesterov_cases_are_not_trivial():
    """The option really changes the trajectory with these gradients."""
    a, _, _ = run(optim.Adam, dict(lr=0.01, betas=(0.8, 0.5)), 3)
    b, _, _ = run(optim.Adam, dict(lr=0.01, betas=(0.8, 0.5), amsgrad=True), 3)
    assert not np.allclose(a[2][0], b[2][0])
    a, _, _ = run(optim.SGD, dict(lr=0.1, momentum=0.9), 3)
    b, _, _ = run(optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True), 3)
    assert not np.allclose(a[2][0], b[2][0])


def test_adamw_decay_is_decoupled():
    """AdamW's first step = Adam's undecayed step - lr * wd * w0; Adam's L2 term is
    instead normalised away (|step| ~ lr whatever the decay)."""
    lr, wd = 0.01, 0.5
    w0 = init_values()[0]
    plain, _, _ = run(optim.Adam, dict(lr=lr), 1)
    adamw, _, _ = run(optim.AdamW, dict(lr=lr, weight_decay=wd), 1)
    adam_l2, _, _ = run(optim.Adam, dict(lr=lr, weight_decay=wd), 1)
    np.testing.assert_allclose(adamw[0][0], plain[0][0] - lr * wd * w0, rtol=1e-12)
    np.testing.assert_allclose(np.abs(adam_l2[0][0] - w0), lr, rtol=1e-5)
    assert not np.allclose(adamw[0][0], adam_l2[0][0])


def test_adamw_default_weight_decay_and_lr_defaults():
    p = Parameter(np.zeros(2))
    assert optim.AdamW([p]).defaults["weight_decay"] == 1e-2
    assert optim.Adam([p]).defaults["weight_decay"] == 0.0
    assert optim.Adamax([p]).defaults["lr"] == 2e-3
    assert optim.Adagrad([p]).defaults["lr"] == 1e-2
    assert optim.RMSprop([p]).defaults["alpha"] == 0.99


def test_update_is_in_place_bumps_version_and_records_nothing():
    for cls in (optim.SGD, optim.Adam, optim.Adagrad, optim.RMSprop, optim.Adamax):
        p = Parameter(np.ones((2, 3)))
        arr, version = p.data, p._version.value
        loss = (p * p).sum()
        loss.backward()
        g = p.grad.data.copy()
        opt = cls([p], lr=0.1, momentum=0.9) if cls is optim.SGD else cls([p], lr=0.1)
        opt.step()
        assert p.data is arr and p._version.value == version + 1
        assert p.grad_fn is None and p.requires_grad
        np.testing.assert_array_equal(p.grad.data, g)  # the gradient is only read
        assert not np.allclose(p.data, 1.0)


def test_float32_parameters_stay_float32():
    for cls in (optim.SGD, optim.Adam, optim.AdamW, optim.Adagrad, optim.RMSprop, optim.Adamax):
        p = Parameter(np.ones(4, dtype=np.float32))
        p.grad = Tensor(np.full(4, 0.5, dtype=np.float32))
        opt = cls([p], lr=0.1)
        opt.step()
        opt.step()
        assert p.dtype == np.float32
        assert all(v.dtype == np.float32 for v in opt.state[p].values() if hasattr(v, "dtype"))


def test_grad_none_is_skipped():
    a, b = Parameter(np.ones(3)), Parameter(np.ones(2))
    a.grad = Tensor(np.ones(3))
    opt = optim.Adam([a, b], lr=0.1)
    v = b._version.value
    opt.step()
    np.testing.assert_array_equal(b.data, 1.0)
    assert b._version.value == v and not opt.state.get(b)
    assert opt.state[a]["step"] == 1


def test_param_groups_with_different_lr_and_decay():
    w, b = Parameter(np.ones((2, 2))), Parameter(np.ones(2))
    opt = optim.SGD([{"params": [w]}, {"params": [b], "lr": 0.01, "weight_decay": 0.0}],
                    lr=0.1, weight_decay=0.5)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[0]["weight_decay"] == 0.5
    assert opt.param_groups[1]["momentum"] == 0.0  # filled from the defaults
    w.grad, b.grad = Tensor(np.ones((2, 2))), Tensor(np.ones(2))
    opt.step()
    np.testing.assert_allclose(w.data, 1 - 0.1 * (1 + 0.5 * 1))
    np.testing.assert_allclose(b.data, 1 - 0.01 * 1)


def test_add_param_group_and_closure():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(3))
    opt = optim.SGD([a], lr=0.5)
    opt.add_param_group({"params": b, "lr": 0.25})
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["params"][0] is b

    def closure():
        opt.zero_grad()
        loss = (a * a).sum() + (b * b).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert float(loss) == 5.0
    np.testing.assert_allclose(a.data, 1 - 0.5 * 2)
    np.testing.assert_allclose(b.data, 1 - 0.25 * 2)


def test_zero_grad():
    p = Parameter(np.ones(2))
    p.grad = Tensor(np.ones(2))
    opt = optim.SGD([p], lr=0.1)
    g = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is g and np.all(p.grad.data == 0)
    opt.zero_grad()
    assert p.grad is None


def test_sgd_momentum_switched_on_later_starts_its_buffer():
    """A schedule (OneCycle) may turn momentum on after plain steps: the buffer starts
    at the current gradient, as in PyTorch."""
    p = Parameter(np.zeros(2))
    opt = optim.SGD([p], lr=1.0)
    p.grad = Tensor(np.ones(2))
    opt.step()
    assert "momentum_buffer" not in opt.state[p]
    opt.param_groups[0]["momentum"] = 0.5
    opt.step()
    np.testing.assert_array_equal(opt.state[p]["momentum_buffer"], 1.0)
    opt.step()
    np.testing.assert_array_equal(opt.state[p]["momentum_buffer"], 1.5)
    np.testing.assert_allclose(p.data, -3.5)


# ---------------------------------------------------------------------------- backend kernels


def _kernel_inputs(dtype):
    rng = np.random.default_rng(7)
    return [rng.standard_normal((4, 5)).astype(dtype) for _ in range(4)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numpy_kernels_match_formulas(dtype):
    be = minilm.get_backend("numpy")
    w, g, buf, _ = _kernel_inputs(dtype)
    for kw in (dict(), dict(nesterov=True), dict(dampening=0.2, weight_decay=0.1, maximize=True)):
        p, b = w.copy(), buf.copy()
        be.sgd_step(p, g, b, 0.1, 0.9, init_buf=False, **kw)
        gg = (-g if kw.get("maximize") else g) + kw.get("weight_decay", 0) * w
        bb = 0.9 * buf + (1 - kw.get("dampening", 0)) * gg
        d = gg + 0.9 * bb if kw.get("nesterov") else bb
        tol = 1e-12 if dtype == np.float64 else 1e-5
        np.testing.assert_allclose(b, bb, rtol=tol, atol=tol)
        np.testing.assert_allclose(p, w - 0.1 * d, rtol=tol, atol=tol)
        assert p.dtype == dtype and b.dtype == dtype
    w, g, m, v = _kernel_inputs(dtype)
    v = np.abs(v)
    for decoupled in (False, True):
        p, mm, vv, vmax = w.copy(), m.copy(), v.copy(), v.copy() * 2
        be.adam_step(p, g, mm, vv, 3, 0.01, 0.9, 0.99, 1e-8, 0.1, decoupled, vmax)
        w0 = w * (1 - 0.01 * 0.1) if decoupled else w
        gg = g if decoupled else g + 0.1 * w
        m1 = 0.9 * m + 0.1 * gg
        v1 = 0.99 * v + 0.01 * gg * gg
        vm = np.maximum(v * 2, v1)
        want = w0 - 0.01 / (1 - 0.9 ** 3) * m1 / (np.sqrt(vm / (1 - 0.99 ** 3)) + 1e-8)
        tol = 1e-12 if dtype == np.float64 else 1e-5
        np.testing.assert_allclose(vv, v1, rtol=tol)
        np.testing.assert_allclose(vmax, vm, rtol=tol)
        np.testing.assert_allclose(p, want, rtol=tol, atol=tol)


def test_other_backends_kernels_equal_numpy_reference():
    """Every available backend's override of the update kernels (Numba, CuPy when
    present) gives the NumPy reference's numbers."""
    ref = minilm.get_backend("numpy")
    others = [n for n in minilm.available_backends() if n != "numpy"]
    # numba is a test dependency (`make test` / `pip install -e .[test]` install it): its
    # absence is a broken environment, not a reason to skip the fused kernels' check
    assert "numba" in others, (
        "the Numba backend does not import, so its fused SGD/Adam kernels cannot be checked "
        "against the NumPy reference; install the test dependencies (pip install -e '.[test]' "
        "or `make test`, which pulls numba)")
    w, g, m, v = _kernel_inputs(np.float64)
    v = np.abs(v)
    for name in others:
        be = minilm.get_backend(name)
        for kw in (dict(), dict(nesterov=True, weight_decay=0.1), dict(dampening=0.3, maximize=True)):
            for init in (True, False):
                p0, b0 = w.copy(), m.copy()
                ref.sgd_step(p0, g, b0, 0.1, 0.9, init_buf=init, **kw)
                p1, b1 = be.asarray(w.copy()), be.asarray(m.copy())
                be.sgd_step(p1, be.asarray(g), b1, 0.1, 0.9, init_buf=init, **kw)
                np.testing.assert_allclose(be.to_numpy(p1), p0, rtol=1e-12, err_msg=name)
                np.testing.assert_allclose(be.to_numpy(b1), b0, rtol=1e-12, err_msg=name)
        for wd, dec, ams, mx in ((0.0, False, False, False), (0.1, False, True, True),
                                 (0.1, True, False, False), (0.1, True, True, False)):
            arrs = [w.copy(), m.copy(), v.copy(), v.copy() * 2]
            ref.adam_step(arrs[0], g, arrs[1], arrs[2], 4, 0.01, 0.9, 0.99, 1e-8, wd, dec,
                          arrs[3] if ams else None, mx)
            dev = [be.asarray(w.copy()), be.asarray(m.copy()), be.asarray(v.copy()),
                   be.asarray(v.copy() * 2)]
            be.adam_step(dev[0], be.asarray(g), dev[1], dev[2], 4, 0.01, 0.9, 0.99, 1e-8, wd,
                         dec, dev[3] if ams else None, mx)
            for a, b in zip(arrs, dev):
                np.testing.assert_allclose(be.to_numpy(b), a, rtol=1e-12, err_msg=name)


# ---------------------------------------------------------------------------- torch


TORCH_NAMES = {optim.SGD: "SGD", optim.Adam: "Adam", optim.AdamW: "AdamW",
               optim.Adagrad: "Adagrad", optim.RMSprop: "RMSprop", optim.Adamax: "Adamax"}


@pytest.mark.parametrize("cls,ref,kwargs", CASES, ids=IDS)
def test_five_steps_equal_torch_optim(cls, ref, kwargs):
    """Extra check, only when PyTorch happens to be installed (it is not a dependency)."""
    torch = pytest.importorskip("torch")
    got, opt, params = run(cls, kwargs, 5)
    tp = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in init_values()]
    topt = getattr(torch.optim, TORCH_NAMES[cls])(tp, foreach=False, **kwargs)
    for t in range(5):
        for p, g in zip(tp, grads_at(t)):
            p.grad = torch.tensor(g, dtype=torch.float64)
        topt.step()
        for i, p in enumerate(tp):
            np.testing.assert_allclose(got[t][i], p.detach().numpy(), rtol=1e-12, atol=1e-13,
                                       err_msg=f"step {t + 1}")
    # same state names and values as PyTorch
    for p, q in zip(params, tp):
        ours, theirs = opt.state[p], topt.state[q]
        assert set(ours) == set(theirs)
        for k, v in theirs.items():
            np.testing.assert_allclose(np.asarray(ours[k]), v.detach().numpy(), rtol=1e-12,
                                       atol=1e-13, err_msg=k)


# ---------------------------------------------------------------------------- state dicts


STATEFUL = [
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),
    (optim.Adam, dict(lr=0.01, betas=(0.8, 0.5), amsgrad=True)),
    (optim.AdamW, dict(lr=0.01, weight_decay=0.3)),
    (optim.Adagrad, dict(lr=0.1, lr_decay=0.2)),
    (optim.RMSprop, dict(centered=True, momentum=0.5)),
    (optim.Adamax, dict(lr=0.01)),
]


@pytest.mark.parametrize("cls,kwargs", STATEFUL, ids=[c.__name__ for c, _ in STATEFUL])
def test_state_dict_round_trip_resumes_exactly(cls, kwargs):
    full, _, _ = run(cls, kwargs, 5)
    part, opt, params = run(cls, kwargs, 3)
    sd = copy.deepcopy(opt.state_dict())
    json.dumps(sd["param_groups"])  # hyperparameters are plain JSON
    assert sorted(sd["state"]) == [0, 1]
    assert sd["param_groups"][0]["params"] == [0, 1]
    fresh = [Parameter(p.data.copy()) for p in params]
    opt2 = cls(fresh, lr=123.0)  # different hyperparameters: the state dict restores them
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == kwargs.get("lr", opt.defaults["lr"])
    for t in range(3, 5):
        for p, g in zip(fresh, grads_at(t)):
            p.grad = Tensor(g)
        opt2.step()
    for i, p in enumerate(fresh):
        np.testing.assert_array_equal(p.data, full[4][i])


def test_load_state_dict_json_like_and_float32():
    """Indices as strings, betas as a list and scalars as 0-d arrays (what a JSON /
    safetensors round trip gives) load too; buffers take the parameter's dtype."""
    _, opt, params = run(optim.Adam, dict(lr=0.01), 2)
    sd = opt.state_dict()
    sd = {"state": {str(k): {n: (np.asarray(v) if n == "step" else v.astype(np.float32))
                             for n, v in s.items()} for k, s in sd["state"].items()},
          "param_groups": json.loads(json.dumps(sd["param_groups"]))}
    fresh = [Parameter(p.data.copy()) for p in params]
    opt2 = optim.Adam(fresh)
    opt2.load_state_dict(sd)
    st = opt2.state[fresh[0]]
    assert st["step"] == 2 and isinstance(st["step"], int)
    assert st["exp_avg"].dtype == np.float64
    assert opt2.param_groups[0]["betas"] == (0.9, 0.999)
    assert st["exp_avg"] is not sd["state"]["0"]["exp_avg"]


def test_load_state_dict_errors_leave_optimizer_unchanged():
    _, opt, params = run(optim.Adam, dict(lr=0.01), 2)
    good = copy.deepcopy(opt.state_dict())
    target = optim.Adam([Parameter(p.data.copy()) for p in params], lr=0.5)
    p0 = target.param_groups[0]["params"][0]
    p0.grad = Tensor(np.ones(p0.shape))
    target.step()
    before = copy.deepcopy(target.state_dict())

    def unchanged():
        after = target.state_dict()
        assert after["param_groups"] == before["param_groups"]
        assert after["state"].keys() == before["state"].keys()
        for k in before["state"]:
            for n, v in before["state"][k].items():
                np.testing.assert_array_equal(after["state"][k][n], v)

    bad = copy.deepcopy(good)
    bad["param_groups"].append(dict(bad["param_groups"][0], params=[]))
    with pytest.raises(ValueError, match="2 parameter groups.*has 1"):
        target.load_state_dict(bad)
    unchanged()
    bad = copy.deepcopy(good)
    bad["param_groups"][0]["params"] = [0]
    with pytest.raises(ValueError, match="group 0 has 1 parameters"):
        target.load_state_dict(bad)
    unchanged()
    bad = copy.deepcopy(good)
    bad["state"][1]["exp_avg_sq"] = np.zeros(7)
    with pytest.raises(ValueError, match=r"exp_avg_sq.*parameter 1.*\(7,\).*\(5,\)"):
        target.load_state_dict(bad)
    unchanged()
    bad = copy.deepcopy(good)
    bad["state"][9] = {"step": 1}
    with pytest.raises(ValueError, match="parameter 9"):
        target.load_state_dict(bad)
    unchanged()
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        target.load_state_dict({"state": {}})
    unchanged()


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("cls,kwargs,msg", [
    (optim.SGD, dict(lr=-0.1), r"SGD: invalid lr -0\.1"),
    (optim.SGD, dict(lr=0.1, momentum=-1), "SGD: invalid momentum -1"),
    (optim.SGD, dict(lr=0.1, nesterov=True), "SGD: nesterov"),
    (optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "SGD: nesterov"),
    (optim.Adam, dict(betas=(1.0, 0.999)), "Adam: invalid beta1 1.0"),
    (optim.Adam, dict(betas=(0.9, -0.1)), r"Adam: invalid beta2 -0\.1"),
    (optim.Adam, dict(betas=(0.9,)), "Adam: betas must be a pair"),
    (optim.AdamW, dict(eps=-1e-8), "AdamW: invalid eps"),
    (optim.AdamW, dict(weight_decay=-0.1), "AdamW: invalid weight_decay"),
    (optim.Adamax, dict(betas=(0.9, 1.5)), "Adamax: invalid beta2 1.5"),
    (optim.Adagrad, dict(lr_decay=-1), "Adagrad: invalid lr_decay -1"),
    (optim.Adagrad, dict(initial_accumulator_value=-1), "Adagrad: invalid initial_accumulator_value"),
    (optim.RMSprop, dict(alpha=-0.5), r"RMSprop: invalid alpha -0\.5"),
    (optim.RMSprop, dict(lr=float("nan")), "RMSprop: invalid lr nan"),
])
def test_invalid_hyperparameters(cls, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        cls([Parameter(np.zeros(2))], **kwargs)


def test_invalid_group_hyperparameter_and_type_errors():
    p = Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="SGD: invalid lr -1"):
        optim.SGD([{"params": [p], "lr": -1}], lr=0.1)
    with pytest.raises(TypeError, match="real number"):
        optim.Adam([p], lr="0.1")
    with pytest.raises(TypeError, match=r"params\[1\] is a ndarray"):
        optim.SGD([p, np.zeros(2)], lr=0.1)
    with pytest.raises(TypeError, match="int64"):
        optim.SGD([Tensor(np.zeros(2, dtype=np.int64))], lr=0.1)
    with pytest.raises(TypeError, match="single Parameter"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="set"):
        optim.SGD({p}, lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    x = Parameter(np.ones(2))
    with pytest.raises(ValueError, match="not a leaf"):
        optim.SGD([x * 2], lr=0.1)
    # a plain float tensor that is a leaf is accepted
    optim.SGD([Tensor(np.zeros(2), requires_grad=True)], lr=0.1)


def test_duplicate_parameters_are_rejected_and_change_nothing():
    p, q = Parameter(np.zeros(2)), Parameter(np.zeros(3))
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [p]}, {"params": [q, p]}], lr=0.1)
    with pytest.raises(ValueError, match="twice"):
        optim.SGD([p, q, p], lr=0.1)
    opt = optim.SGD([p], lr=0.1)
    with pytest.raises(ValueError, match="more than one"):
        opt.add_param_group({"params": [q, p]})
    with pytest.raises(ValueError, match="invalid lr"):
        opt.add_param_group({"params": [q], "lr": -2.0})
    assert len(opt.param_groups) == 1


def test_param_groups_for_weight_decay():
    class Tiny(Module):
        def __init__(self):
            super().__init__()
            self.emb = Embedding(10, 4)
            self.ln = LayerNorm(4)
            self.proj = Linear(4, 4)
            self.head = Linear(4, 10, bias=False)
            self.head.weight = self.emb.weight  # tied

    m = Tiny()
    decay, rest = optim.param_groups_for_weight_decay(m, 0.1)
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay["params"]) == {id(m.emb.weight), id(m.proj.weight)}
    assert ids(rest["params"]) == {id(m.ln.weight), id(m.ln.bias), id(m.proj.bias)}
    assert len(decay["params"]) + len(rest["params"]) == len(list(m.parameters())) == 5
    opt = optim.AdamW(optim.param_groups_for_weight_decay(m, 0.1), lr=1e-3)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    decay, rest = optim.param_groups_for_weight_decay(m, 0.1, no_decay=("emb",))
    assert ids(decay["params"]) == {id(m.proj.weight)}
    m.ln.weight.requires_grad = False  # frozen parameters are left out
    decay, rest = optim.param_groups_for_weight_decay(m, 0.1)
    assert id(m.ln.weight) not in ids(rest["params"])


# ---------------------------------------------------------------------------- clipping


def _with_grads(arrays):
    ps = []
    for a in arrays:
        p = Parameter(np.zeros(a.shape))
        p.grad = Tensor(a.copy())
        ps.append(p)
    return ps


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_clip_grad_norm_against_numpy(norm_type):
    rng = np.random.default_rng(3)
    gs = [rng.standard_normal((4, 3)), rng.standard_normal(7)]
    flat = np.concatenate([g.ravel() for g in gs])
    norm = np.linalg.norm(flat, ord=norm_type)
    ps = _with_grads(gs) + [Parameter(np.zeros(2))]  # the grad-less one is ignored
    total = optim.clip_grad_norm_(ps, max_norm=0.5, norm_type=norm_type)
    assert isinstance(total, float)
    np.testing.assert_allclose(total, norm, rtol=1e-12)
    coef = 0.5 / (norm + 1e-6)
    for p, g in zip(ps, gs):
        np.testing.assert_allclose(p.grad.data, g * coef, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(np.concatenate(
        [p.grad.data.ravel() for p in ps[:2]]), ord=norm_type), 0.5, rtol=1e-5)
    # below the limit: untouched
    ps = _with_grads(gs)
    arrays = [p.grad.data for p in ps]
    assert optim.clip_grad_norm_(ps, max_norm=norm + 1.0, norm_type=norm_type) == pytest.approx(norm)
    for p, a, g in zip(ps, arrays, gs):
        assert p.grad.data is a
        np.testing.assert_array_equal(a, g)


def test_clip_grad_norm_edge_cases():
    p = _with_grads([np.array([3.0, 4.0])])[0]
    assert optim.clip_grad_norm_(p, 1.0) == pytest.approx(5.0)  # a single tensor
    np.testing.assert_allclose(p.grad.data, [3 / (5 + 1e-6), 4 / (5 + 1e-6)])
    assert optim.clip_grad_norm_([Parameter(np.zeros(2))], 1.0) == 0.0
    bad = _with_grads([np.array([1.0, np.nan])])
    with pytest.raises(RuntimeError, match="nan"):
        optim.clip_grad_norm_(bad, 1.0, error_if_nonfinite=True)
    assert math.isnan(optim.clip_grad_norm_(bad, 1.0))
    half = Parameter(np.zeros(2, dtype=np.float16))
    half.grad = Tensor(np.array([300.0, 400.0], dtype=np.float16))  # squares overflow fp16
    assert optim.clip_grad_norm_([half], 1e6) == pytest.approx(500.0)
    with pytest.raises(ValueError, match="norm_type"):
        optim.clip_grad_norm_([p], 1.0, norm_type=0)


def test_clip_grad_value():
    g = np.array([[-3.0, 0.5], [2.0, -0.1]])
    ps = _with_grads([g]) + [Parameter(np.zeros(1))]
    arr = ps[0].grad.data
    optim.clip_grad_value_(ps, 1.0)
    assert ps[0].grad.data is arr
    np.testing.assert_array_equal(arr, np.clip(g, -1, 1))
    with pytest.raises(ValueError):
        optim.clip_grad_value_(ps, -1.0)


# ---------------------------------------------------------------------------- EMA


def test_ema_math_and_warmup():
    p = Parameter(np.array([1.0, 2.0]))
    q = Parameter(np.array([[0.5]]))
    ema = optim.EMA([p, q], decay=0.9)
    ema_w = optim.EMA([p, q], decay=0.9, warmup=True)
    s, sw = p.data.copy(), p.data.copy()
    for n, new in enumerate([[2.0, 0.0], [4.0, 4.0], [-1.0, 3.0]]):
        p.data[...] = new
        ema.update()
        ema_w.update()
        s = 0.9 * s + 0.1 * p.data
        d = min(0.9, (1 + n) / (10 + n))
        sw = d * sw + (1 - d) * p.data
    np.testing.assert_allclose(ema.shadow["0"], s, rtol=1e-14)
    np.testing.assert_allclose(ema_w.shadow["0"], sw, rtol=1e-14)
    np.testing.assert_allclose(ema.shadow["1"], [[0.5]])
    assert ema.num_updates == 3 and ema_w.current_decay() == pytest.approx(min(0.9, 4 / 13))


def test_ema_apply_restore_and_state_dict():
    model = Linear(3, 2)
    ema = optim.EMA(model, decay=0.5)
    assert set(ema.shadow) == {"weight", "bias"}
    w0 = model.weight.data.copy()
    with minilm.no_grad():
        model.weight.data += 1.0
    ema.update()
    trained = model.weight.data.copy()
    arr, version = model.weight.data, model.weight._version.value
    with ema.apply_to():
        np.testing.assert_allclose(model.weight.data, w0 + 0.5)
        assert model.weight.data is arr and model.weight._version.value > version
    np.testing.assert_array_equal(model.weight.data, trained)
    ema.apply_to(model)
    with pytest.raises(RuntimeError, match="already applied"):
        ema.apply_to()
    ema.restore()
    np.testing.assert_array_equal(model.weight.data, trained)
    with pytest.raises(RuntimeError, match="nothing to restore"):
        ema.restore()
    sd = copy.deepcopy(ema.state_dict())
    ema2 = optim.EMA(model, decay=0.9)
    ema2.load_state_dict(sd)
    assert ema2.decay == 0.5 and ema2.num_updates == 1
    np.testing.assert_array_equal(ema2.shadow["weight"], ema.shadow["weight"])
    with pytest.raises(ValueError, match="shadow keys"):
        ema2.load_state_dict({"shadow": {"weight": sd["shadow"]["weight"]}})
    with pytest.raises(ValueError, match="shape"):
        ema2.load_state_dict({"shadow": {"weight": np.zeros((1, 1)), "bias": np.zeros(2)}})
    np.testing.assert_array_equal(ema2.shadow["weight"], ema.shadow["weight"])
    ema.copy_to()
    np.testing.assert_allclose(model.weight.data, w0 + 0.5)
    with pytest.raises(ValueError, match="decay"):
        optim.EMA(model, decay=1.5)

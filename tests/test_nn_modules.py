"""nn.Module machinery, containers, basic layers and init schemes."""

import math

import numpy as np
import pytest

import minilm as ml
import minilm.functional as F
from minilm import nn


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(8, 2)
        self.register_buffer("scale", ml.ones(2))
        self.register_buffer("scratch", ml.zeros(3), persistent=False)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x))) * self.scale


def test_registration_and_traversal():
    m = TwoLayer()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert [n for n, _ in m.named_buffers()] == ["scale", "scratch"]
    assert [n for n, _ in m.named_children()] == ["fc1", "act", "fc2"]
    assert len(list(m.modules())) == 4
    assert m.num_parameters() == 4 * 8 + 8 + 8 * 2 + 2
    assert list(m.state_dict()) == ["scale"] + names  # own state first, non-persistent left out
    del m.fc2
    assert "fc2.weight" not in m.state_dict()


def test_shared_parameter_is_yielded_once_and_gets_summed_gradient():
    a, b = nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False)
    b.weight = a.weight
    seq = nn.Sequential(a, b)
    assert len(list(seq.parameters())) == 1
    assert list(seq.state_dict()) == ["0.weight", "1.weight"]
    x = ml.randn(2, 3, dtype="float64")
    seq.double()
    seq(x).sum().backward()
    W = a.weight.numpy()
    # d/dW sum(x W^T W^T) = contributions of both uses
    g_first = (np.ones((2, 3)) @ W).T @ x.numpy()
    g_second = np.ones((2, 3)).T @ (x.numpy() @ W.T)
    np.testing.assert_allclose(a.weight.grad.numpy(), g_first + g_second, rtol=1e-10)


def test_state_dict_round_trip_and_strictness():
    ml.manual_seed(0)
    src, dst = TwoLayer(), TwoLayer()
    res = dst.load_state_dict(src.state_dict())
    assert res.missing_keys == [] and res.unexpected_keys == []
    x = ml.randn(5, 4)
    np.testing.assert_array_equal(src(x).numpy(), dst(x).numpy())

    sd = src.state_dict()
    sd.pop("fc2.bias")
    sd["extra.weight"] = ml.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys: fc2.bias.*unexpected keys: extra.weight"):
        dst.load_state_dict(sd)
    res = dst.load_state_dict(sd, strict=False)
    assert res.missing_keys == ["fc2.bias"] and res.unexpected_keys == ["extra.weight"]


def test_shape_mismatch_leaves_module_untouched():
    m = TwoLayer()
    before = {k: v.numpy().copy() for k, v in m.state_dict().items()}
    bad = {k: v.numpy() + 1 for k, v in m.state_dict().items()}
    bad["fc2.weight"] = np.zeros((3, 8), dtype=np.float32)
    with pytest.raises(ValueError, match=r"fc2.weight: checkpoint \(3, 8\) vs model \(2, 8\)"):
        m.load_state_dict(bad)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])


def test_train_eval_freeze_zero_grad_apply():
    m = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5), nn.Linear(3, 1))
    assert m.training and m[1].training
    m.eval()
    assert not m.training and not m[1].training
    x = ml.randn(4, 3)
    np.testing.assert_array_equal(m(x).numpy(), m(x).numpy())  # dropout off in eval
    m.train()
    m[0].requires_grad_(False)
    m(x).sum().backward()
    assert m[0].weight.grad is None and m[2].weight.grad is not None
    m.zero_grad()
    assert m[2].weight.grad is None
    seen = []
    m.apply(lambda mod: seen.append(type(mod).__name__))
    assert seen == ["Linear", "Dropout", "Linear", "Sequential"]


def test_containers_and_repr():
    ml_list = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert len(ml_list) == 3 and len(list(ml_list.parameters())) == 6
    assert isinstance(ml_list[1:], nn.ModuleList) and len(ml_list[1:]) == 2
    d = nn.ModuleDict({"a": nn.Linear(2, 3), "b": nn.ReLU()})
    assert "a" in d and list(d.keys()) == ["a", "b"]
    assert [n for n, _ in d.named_parameters()] == ["a.weight", "a.bias"]
    r = repr(nn.Sequential(nn.Linear(2, 3), nn.ReLU()))
    assert "(0): Linear(in_features=2, out_features=3, bias=True)" in r and "(1): ReLU()" in r


def test_forward_hook_can_observe_and_replace():
    m = nn.Linear(2, 2)
    seen = []
    h = m.register_forward_hook(lambda mod, args, out: seen.append(out.shape) or out * 0)
    assert np.all(m(ml.randn(3, 2)).numpy() == 0) and seen == [(3, 2)]
    h.remove()
    assert not np.all(m(ml.randn(3, 2)).numpy() == 0)


def test_module_to_dtype_keeps_parameter_objects():
    m = TwoLayer()
    w = m.fc1.weight
    m.double()
    assert m.fc1.weight is w and w.dtype == np.float64 and m.scale.dtype == np.float64


def test_layers_match_formulas():
    ml.manual_seed(1)
    x = ml.randn(2, 5, 6, dtype="float64")
    lin = nn.Linear(6, 3).double()
    np.testing.assert_allclose(lin(x).numpy(), x.numpy() @ lin.weight.numpy().T + lin.bias.numpy())
    ln = nn.LayerNorm(6).double()
    a = x.numpy()
    ref = (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(ln(x).numpy(), ref, rtol=1e-10)
    rms = nn.RMSNorm(6).double()
    np.testing.assert_allclose(rms(x).numpy(), a / np.sqrt((a * a).mean(-1, keepdims=True) + 1e-6))
    emb = nn.Embedding(10, 4, padding_idx=0)
    assert np.all(emb.weight.numpy()[0] == 0)
    ids = ml.tensor([[0, 3, 3]])
    emb(ids).sum().backward()
    np.testing.assert_allclose(emb.weight.grad.numpy()[3], [2, 2, 2, 2])
    np.testing.assert_allclose(emb.weight.grad.numpy()[0], 0)


def test_linear_default_init_bounds_and_init_schemes():
    ml.manual_seed(0)
    lin = nn.Linear(100, 50)
    bound = 1 / math.sqrt(100)
    assert np.abs(lin.weight.numpy()).max() <= bound and lin.weight.numpy().std() > bound / 3
    w = ml.empty(200, 300)
    nn.init.xavier_uniform_(w)
    assert abs(w.numpy().std() - math.sqrt(2 / 500)) < 0.003
    nn.init.kaiming_normal_(w, nonlinearity="relu")
    assert abs(w.numpy().std() - math.sqrt(2 / 300)) < 0.003
    nn.init.trunc_normal_(w, std=1.0, a=-1.0, b=1.0)
    assert np.abs(w.numpy()).max() <= 1.0
    assert nn.init.scaled_residual_std(0.02, 8) == pytest.approx(0.02 / 4)
    with pytest.raises(ValueError, match="at least 2 dims"):
        nn.init.xavier_uniform_(ml.empty(3))


def test_setting_attributes_before_init_is_a_clear_error():
    class Bad(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(RuntimeError, match="call super"):
        Bad()


def test_dropout_module_validates_p():
    with pytest.raises(ValueError, match="Dropout: p must be in"):
        nn.Dropout(1.5)
    assert F.dropout(ml.ones(10), 0.0).numpy().sum() == 10


def test_embedding_positions_equal_the_lookup_of_a_range():
    """Embedding.positions(start, n) is E[arange(start, start + n)]: same values and the
    same gradient, the range checked (a padding row inside it keeps the lookup's rule)."""
    from minilm.nn import Embedding

    for pad in (None, 3):
        emb = Embedding(10, 4, padding_idx=pad).double()
        g = np.random.default_rng(0).standard_normal((5, 4))
        out = emb.positions(2, 5)
        out.backward(ml.tensor(g))
        got_grad = emb.weight.grad.numpy().copy()
        emb.weight.grad = None
        ref = emb(ml.tensor(np.arange(2, 7)))
        ref.backward(ml.tensor(g))
        np.testing.assert_array_equal(out.numpy(), ref.numpy())
        np.testing.assert_array_equal(got_grad, emb.weight.grad.numpy())
    with pytest.raises(ValueError, match=r"embedding positions: 8\.\.11 out of range for 10"):
        Embedding(10, 4).positions(8, 4)

"""RNN / LSTM / GRU (minilm/nn/recurrent.py), in float64: the forward against a slow,
explicit NumPy reference of the gate equations (one sequence at a time), gradcheck
through every layer kind, padding invariance, batch_first, dropout between layers,
truncated BPTT, parameter names and initialisation, and bad input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import examples

import minilm as ml
from minilm import nn
from minilm.finite_diff import gradcheck_module as _gradcheck_module
from minilm.nn.module import model_backend

KINDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


def make(kind, input_size, hidden, **kw):
    if kind.startswith("rnn"):
        return nn.RNN(input_size, hidden, nonlinearity=kind[4:], **kw).double()
    return {"lstm": nn.LSTM, "gru": nn.GRU}[kind](input_size, hidden, **kw).double()


def run(m, x, h0=None, c0=None, **kw):
    """(output, h_n, c_n or None) as NumPy arrays-in-Tensors, for any layer kind."""
    hx = (h0, c0) if isinstance(m, nn.LSTM) and h0 is not None else h0
    out, state = m(x, hx, **kw)
    if isinstance(m, nn.LSTM):
        return out, state[0], state[1]
    return out, state, None


# ---------------------------------------------------------------------------- reference


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def reference(kind, params, x, num_layers, bidirectional, lengths=None, h0=None, c0=None):
    """The gate equations written out, one sequence and one step at a time. x (T, B, I);
    sequence b has lengths[b] real steps; the reverse direction starts at its last."""
    T, B, _ = x.shape
    D = 2 if bidirectional else 1
    H = params["weight_hh_l0"].shape[1]
    lengths = [T] * B if lengths is None else list(lengths)
    h0 = np.zeros((num_layers * D, B, H)) if h0 is None else h0
    c0 = np.zeros((num_layers * D, B, H)) if c0 is None else c0
    h_n, c_n = np.zeros_like(h0), np.zeros_like(c0)
    inp = x
    for layer in range(num_layers):
        out = np.zeros((T, B, D * H))
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            W_ih, W_hh = params["weight_ih" + sfx], params["weight_hh" + sfx]
            b_ih = params.get("bias_ih" + sfx, np.zeros(W_ih.shape[0]))
            b_hh = params.get("bias_hh" + sfx, np.zeros(W_ih.shape[0]))
            k = layer * D + d
            for b in range(B):
                h, c = h0[k, b].copy(), c0[k, b].copy()
                order = range(lengths[b]) if d == 0 else reversed(range(lengths[b]))
                for t in order:
                    xt = inp[t, b]
                    if kind.startswith("rnn"):
                        pre = W_ih @ xt + b_ih + W_hh @ h + b_hh
                        h = np.tanh(pre) if kind == "rnn_tanh" else np.maximum(pre, 0.0)
                    elif kind == "lstm":
                        a = W_ih @ xt + b_ih + W_hh @ h + b_hh
                        i, f = sigmoid(a[:H]), sigmoid(a[H:2 * H])
                        g, o = np.tanh(a[2 * H:3 * H]), sigmoid(a[3 * H:])
                        c = f * c + i * g
                        h = o * np.tanh(c)
                    else:
                        ax, ah = W_ih @ xt + b_ih, W_hh @ h + b_hh
                        r = sigmoid(ax[:H] + ah[:H])
                        z = sigmoid(ax[H:2 * H] + ah[H:2 * H])
                        n = np.tanh(ax[2 * H:] + r * ah[2 * H:])
                        h = (1 - z) * n + z * h
                    out[t, b, d * H:(d + 1) * H] = h
                h_n[k, b], c_n[k, b] = h, c
        inp = out
    return inp, h_n, c_n


def rand(*shape, rng):
    return ml.Tensor(rng.standard_normal(shape))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_layers,bidirectional,with_h0,with_lengths", [
    (1, False, False, False), (2, True, True, True), (3, False, True, True),
    (1, True, False, True)])
def test_forward_equals_numpy_reference(kind, num_layers, bidirectional, with_h0, with_lengths):
    rng = np.random.default_rng(1)
    T, B, I, H = 6, 3, 4, 5
    D = 2 if bidirectional else 1
    m = make(kind, I, H, num_layers=num_layers, bidirectional=bidirectional)
    x = rand(T, B, I, rng=rng)
    h0 = rand(num_layers * D, B, H, rng=rng) if with_h0 else None
    c0 = rand(num_layers * D, B, H, rng=rng) if with_h0 else None
    lengths = [6, 2, 4] if with_lengths else None
    out, h_n, c_n = run(m, x, h0, c0, lengths=lengths)
    params = {n: p.numpy() for n, p in m.named_parameters()}
    ref = reference(kind, params, x.numpy(), num_layers, bidirectional, lengths,
                    None if h0 is None else h0.numpy(), None if c0 is None else c0.numpy())
    np.testing.assert_allclose(out.numpy(), ref[0], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h_n.numpy(), ref[1], rtol=1e-12, atol=1e-13)
    if c_n is not None:
        np.testing.assert_allclose(c_n.numpy(), ref[2], rtol=1e-12, atol=1e-13)
    assert out.shape == (T, B, D * H) and h_n.shape == (num_layers * D, B, H)


def test_no_bias_matches_reference():
    rng = np.random.default_rng(2)
    m = make("lstm", 3, 4, bias=False)
    assert [n for n, _ in m.named_parameters()] == ["weight_ih_l0", "weight_hh_l0"]
    x = rand(5, 2, 3, rng=rng)
    out, _, _ = run(m, x)
    ref = reference("lstm", {n: p.numpy() for n, p in m.named_parameters()}, x.numpy(), 1, False)
    np.testing.assert_allclose(out.numpy(), ref[0], rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------------------- gradcheck


def gradcheck_module(m, fn, inputs):
    """gradcheck over ``inputs`` and every parameter of ``m``."""
    assert _gradcheck_module(m, fn, inputs)


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_two_layers_bidirectional_initial_states_padded(kind):
    rng = np.random.default_rng(3)
    T, B, I, H, L = 4, 2, 2, 2, 2
    m = make(kind, I, H, num_layers=L, bidirectional=True)
    if kind == "rnn_relu":  # keep pre-activations away from relu's kink
        for p in m.parameters():
            p.data[...] = np.abs(p.data) * 0.5
    x = ml.Tensor(rng.standard_normal((T, B, I)), requires_grad=True)
    h0 = ml.Tensor(rng.standard_normal((2 * L, B, H)), requires_grad=True)
    c0 = ml.Tensor(rng.standard_normal((2 * L, B, H)), requires_grad=True)
    if kind == "rnn_relu":
        x.data[...] = np.abs(x.data)
        h0.data[...] = np.abs(h0.data)
    inputs = [x, h0, c0] if kind == "lstm" else [x, h0]

    def fn(x, h0, c0=None):
        out, h_n, c_n = run(m, x, h0, c0, lengths=[4, 2])
        return [out, h_n] + ([c_n] if c_n is not None else [])

    gradcheck_module(m, fn, inputs)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gradcheck_batch_first_no_state(kind):
    rng = np.random.default_rng(4)
    m = make(kind, 3, 2, batch_first=True)
    x = ml.Tensor(rng.standard_normal((2, 3, 3)), requires_grad=True)
    gradcheck_module(m, lambda x: run(m, x)[:2], [x])


@given(st.data())
@examples(0.5)
def test_gradcheck_over_drawn_configurations(data):
    """Shapes, depth, directions, layout, initial states and padding drawn by Hypothesis
    (relu, whose kink finite differences cannot cross, has its own test above)."""
    kind = data.draw(st.sampled_from(["rnn_tanh", "lstm", "gru"]))
    L, bidir, batch_first = data.draw(st.integers(1, 2)), data.draw(st.booleans()), \
        data.draw(st.booleans())
    T, B, I, H = (data.draw(st.integers(1, n)) for n in (3, 2, 2, 2))
    lengths = data.draw(st.none() | st.lists(st.integers(1, T), min_size=B, max_size=B))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    m = make(kind, I, H, num_layers=L, bidirectional=bidir, batch_first=batch_first)
    D = 2 if bidir else 1
    shape = (B, T, I) if batch_first else (T, B, I)
    x = ml.Tensor(rng.standard_normal(shape), requires_grad=True)
    states = [ml.Tensor(rng.standard_normal((L * D, B, H)), requires_grad=True)
              for _ in range(2 if kind == "lstm" else 1)] if data.draw(st.booleans()) else []

    def fn(x, *states):
        out, h_n, c_n = run(m, x, *states, lengths=lengths)
        return [out, h_n] + ([c_n] if c_n is not None else [])

    gradcheck_module(m, fn, [x, *states])


# ---------------------------------------------------------------------------- padding


@given(st.data())
@examples(1.0)
def test_padding_never_changes_real_positions(data):
    kind = data.draw(st.sampled_from(KINDS))
    L = data.draw(st.integers(1, 2))
    bidir = data.draw(st.booleans())
    T, B = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 4))
    lengths = data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    I, H, D = 3, 4, 2 if bidir else 1
    m = make(kind, I, H, num_layers=L, bidirectional=bidir)
    x = rng.standard_normal((T, B, I)) * 3  # padding: garbage, not zeros
    h0 = rng.standard_normal((L * D, B, H))
    c0 = rng.standard_normal((L * D, B, H))
    out, h_n, c_n = run(m, ml.Tensor(x), ml.Tensor(h0), ml.Tensor(c0), lengths=lengths)
    for b, n in enumerate(lengths):
        one = run(m, ml.Tensor(x[:n, b:b + 1]), ml.Tensor(h0[:, b:b + 1]),
                  ml.Tensor(c0[:, b:b + 1]))
        np.testing.assert_allclose(out.numpy()[:n, b], one[0].numpy()[:, 0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(h_n.numpy()[:, b], one[1].numpy()[:, 0], rtol=1e-12, atol=1e-14)
        if c_n is not None:
            np.testing.assert_allclose(c_n.numpy()[:, b], one[2].numpy()[:, 0], rtol=1e-12,
                                       atol=1e-14)
        assert (out.numpy()[n:, b] == 0).all()


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_padding_gradients_equal_per_sequence_sum(kind):
    """d(sum over real outputs)/dparams of the padded batch equals the sum of each
    sequence's own gradient; padded inputs get a zero gradient."""
    rng = np.random.default_rng(5)
    m = make(kind, 3, 4, num_layers=2, bidirectional=True)
    lengths = [5, 2, 3]
    x = ml.Tensor(rng.standard_normal((5, 3, 3)), requires_grad=True)
    out, h_n, _ = run(m, x, lengths=lengths)
    (out.sum() + h_n.sum()).backward()
    batch_grads = {n: p.grad.numpy().copy() for n, p in m.named_parameters()}
    m.zero_grad()
    for b, n in enumerate(lengths):
        xb = ml.Tensor(x.numpy()[:n, b:b + 1], requires_grad=True)
        o, h, _ = run(m, xb)
        (o.sum() + h.sum()).backward()
        np.testing.assert_allclose(x.grad.numpy()[:n, b], xb.grad.numpy()[:, 0], rtol=1e-10,
                                   atol=1e-12)
        assert (x.grad.numpy()[n:, b] == 0).all()
    for name, p in m.named_parameters():
        np.testing.assert_allclose(batch_grads[name], p.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_mask_equals_lengths_and_full_lengths_equal_no_padding():
    rng = np.random.default_rng(6)
    m = make("gru", 3, 4, bidirectional=True, batch_first=True)
    x = rand(3, 5, 3, rng=rng)
    lengths = np.array([5, 1, 3])
    mask = np.arange(5)[None, :] < lengths[:, None]  # (B, T) with batch_first
    a, b = run(m, x, lengths=lengths), run(m, x, mask=ml.Tensor(mask))
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    full, plain = run(m, x, lengths=[5, 5, 5]), run(m, x)
    np.testing.assert_array_equal(full[0].numpy(), plain[0].numpy())


# ---------------------------------------------------------------------------- layout, dropout


@pytest.mark.parametrize("kind", KINDS)
def test_batch_first_is_the_transpose(kind):
    rng = np.random.default_rng(7)
    a = make(kind, 3, 4, num_layers=2, bidirectional=True)
    b = make(kind, 3, 4, num_layers=2, bidirectional=True, batch_first=True)
    b.load_state_dict(a.state_dict())
    x = rng.standard_normal((5, 2, 3))
    ya = run(a, ml.Tensor(x), lengths=[5, 3])
    yb = run(b, ml.Tensor(x.transpose(1, 0, 2)), lengths=[5, 3])
    np.testing.assert_array_equal(ya[0].numpy().transpose(1, 0, 2), yb[0].numpy())
    np.testing.assert_array_equal(ya[1].numpy(), yb[1].numpy())  # h_n is never batch-first


def test_dropout_only_between_layers():
    rng = np.random.default_rng(8)
    x = rand(6, 3, 4, rng=rng)
    one = make("lstm", 4, 5, num_layers=1, dropout=0.5)
    one.train()
    train_out = run(one, x)[0].numpy()
    one.eval()
    np.testing.assert_array_equal(train_out, run(one, x)[0].numpy())  # none after the last
    two = make("lstm", 4, 5, num_layers=2, dropout=0.5)
    plain = make("lstm", 4, 5, num_layers=2)
    plain.load_state_dict(two.state_dict())
    two.train()
    assert not np.allclose(run(two, x)[0].numpy(), run(plain, x)[0].numpy())
    two.eval()
    np.testing.assert_array_equal(run(two, x)[0].numpy(), run(plain, x)[0].numpy())
    # p = 1 between layers: layer 2 sees zeros, so its output is a function of nothing
    # but its own weights; identical for two different inputs
    drop_all = make("gru", 4, 5, num_layers=2, dropout=1.0)
    drop_all.train()
    np.testing.assert_array_equal(run(drop_all, x)[0].numpy(),
                                  run(drop_all, rand(6, 3, 4, rng=rng))[0].numpy())


# ---------------------------------------------------------------------------- truncated BPTT


def test_truncated_bptt_carries_the_value_and_cuts_the_gradient():
    rng = np.random.default_rng(9)
    m = make("lstm", 3, 4, num_layers=2)
    stream = rng.standard_normal((8, 2, 3))
    full_out, (full_h, full_c) = m(ml.Tensor(stream))
    x1 = ml.Tensor(stream[:4], requires_grad=True)
    x2 = ml.Tensor(stream[4:], requires_grad=True)
    out1, state = m(x1)
    carried = nn.detach_state(state)
    assert not carried[0].requires_grad and not carried[1].requires_grad
    out2, (h2, c2) = m(x2, carried)
    # the value carries over: the chunks together are the whole stream
    np.testing.assert_allclose(np.concatenate([out1.numpy(), out2.numpy()]), full_out.numpy(),
                               rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(h2.numpy(), full_h.numpy(), rtol=1e-13, atol=1e-15)
    # the gradient stays inside the chunk
    out2.sum().backward()
    assert x1.grad is None and x2.grad is not None
    grads = {n: p.grad.numpy().copy() for n, p in m.named_parameters()}
    m.zero_grad()
    fresh = tuple(ml.Tensor(s.numpy()) for s in carried)  # the same values, a new leaf
    m(ml.Tensor(stream[4:]), fresh)[0].sum().backward()
    for n, p in m.named_parameters():
        np.testing.assert_array_equal(grads[n], p.grad.numpy())
    # without the detach the gradient does reach the first chunk
    m.zero_grad()
    out1, state = m(x1)
    m(x2, state)[0].sum().backward()
    assert x1.grad is not None and np.abs(x1.grad.numpy()).sum() > 0
    assert nn.detach_state(None) is None


# ---------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("cls,gates", [(nn.RNN, 1), (nn.LSTM, 4), (nn.GRU, 3)])
def test_pytorch_parameter_names_shapes_and_init(cls, gates):
    m = cls(3, 5, num_layers=2, bidirectional=True)
    shapes = {n: p.shape for n, p in m.named_parameters()}
    names = []
    for k in range(2):
        for sfx in (f"_l{k}", f"_l{k}_reverse"):
            names += [f"weight_ih{sfx}", f"weight_hh{sfx}", f"bias_ih{sfx}", f"bias_hh{sfx}"]
    assert list(shapes) == names
    assert shapes["weight_ih_l0"] == (gates * 5, 3)
    assert shapes["weight_ih_l1_reverse"] == (gates * 5, 10)
    assert shapes["weight_hh_l1"] == (gates * 5, 5) and shapes["bias_hh_l0"] == (gates * 5,)
    bound = 1 / np.sqrt(5)
    assert all(p.dtype == np.float32 for p in m.parameters())
    values = np.concatenate([p.numpy().ravel() for p in m.parameters()])
    assert (np.abs(values) <= bound).all()
    assert abs(values.std() - bound / np.sqrt(3)) < 0.1 * bound  # U(-a, a) has std a/sqrt(3)
    m.load_state_dict({n: np.full(s, 0.1, dtype=np.float32) for n, s in shapes.items()})
    assert (m.weight_hh_l1_reverse.numpy() == np.float32(0.1)).all()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_input_is_a_batch_of_one(kind, batch_first):
    rng = np.random.default_rng(11)
    m = make(kind, 3, 4, num_layers=2, bidirectional=True, batch_first=batch_first)
    x, h0, c0 = (rng.standard_normal(s) for s in [(5, 3), (4, 4), (4, 4)])
    one = run(m, ml.Tensor(x), ml.Tensor(h0), ml.Tensor(c0))
    bdim = 0 if batch_first else 1
    batched = run(m, ml.Tensor(np.expand_dims(x, bdim)), ml.Tensor(h0[:, None]),
                  ml.Tensor(c0[:, None]))
    assert one[0].shape == (5, 8) and one[1].shape == (4, 4)
    np.testing.assert_array_equal(one[0].numpy(), np.squeeze(batched[0].numpy(), bdim))
    np.testing.assert_array_equal(one[1].numpy(), batched[1].numpy()[:, 0])
    if one[2] is not None:
        np.testing.assert_array_equal(one[2].numpy(), batched[2].numpy()[:, 0])


def test_non_prefix_mask_skips_the_masked_steps():
    """A mask need not be a prefix: the masked steps are skipped wherever they are, so
    each sequence gives the result of its real steps run alone, in order."""
    rng = np.random.default_rng(12)
    m = make("lstm", 3, 4, num_layers=2, bidirectional=True)
    x = rng.standard_normal((6, 2, 3))
    mask = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 1], [0, 1]], dtype=bool)
    out, h_n, c_n = run(m, ml.Tensor(x), mask=mask)
    for b in range(2):
        real = np.flatnonzero(mask[:, b])
        alone = run(m, ml.Tensor(x[real, b:b + 1]))
        np.testing.assert_allclose(out.numpy()[real, b], alone[0].numpy()[:, 0], rtol=1e-12,
                                   atol=1e-14)
        np.testing.assert_allclose(c_n.numpy()[:, b], alone[2].numpy()[:, 0], rtol=1e-12,
                                   atol=1e-14)
        assert (out.numpy()[~mask[:, b], b] == 0).all()


def test_float32_runs():
    m = nn.GRU(3, 4, num_layers=2)
    out, h = m(ml.Tensor(np.ones((5, 2, 3), dtype=np.float32)), lengths=[5, 2])
    assert out.dtype == np.float32 and h.dtype == np.float32


# ---------------------------------------------------------------------------- bad input


def test_bad_input_names_the_shapes():
    m = make("lstm", 3, 4, num_layers=2)
    x = ml.Tensor(np.zeros((5, 2, 3)))
    with pytest.raises(ValueError, match=r"input of shape \(5, 2, 7\).*input_size=3"):
        m(ml.Tensor(np.zeros((5, 2, 7))))
    with pytest.raises(ValueError, match=r"input of shape \(5, 2, 3, 1\)"):
        m(ml.Tensor(np.zeros((5, 2, 3, 1))))
    with pytest.raises(ValueError, match=r"unbatched input of shape \(5, 4\) .*input_size=3"):
        m(ml.Tensor(np.zeros((5, 4))))
    with pytest.raises(ValueError, match=r"lengths and mask need a batched input"):
        m(ml.Tensor(np.zeros((5, 3))), lengths=[5])
    with pytest.raises(ValueError, match=r"h0 of an unbatched .* \(2, 4\), got \(2, 1, 4\)"):
        m(ml.Tensor(np.zeros((5, 3))), (ml.Tensor(np.zeros((2, 1, 4))),) * 2)
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 5\].*\[6, 2\]"):
        m(x, lengths=[6, 2])
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 5\].*\[0, 2\]"):
        m(x, lengths=[0, 2])
    with pytest.raises(ValueError, match=r"lengths must be in .*\[-1, 2\]"):
        m(x, lengths=[-1, 2])
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        m(x, lengths=[5, 2, 1])
    with pytest.raises(TypeError, match="lengths must be integers"):
        m(x, lengths=[2.5, 1.0])
    with pytest.raises(ValueError, match=r"h0 must have shape .* \(2, 2, 4\), got \(1, 2, 4\)"):
        m(x, (ml.Tensor(np.zeros((1, 2, 4))), ml.Tensor(np.zeros((2, 2, 4)))))
    with pytest.raises(ValueError, match=r"c0 must have shape .* got \(2, 3, 4\)"):
        m(x, (ml.Tensor(np.zeros((2, 2, 4))), ml.Tensor(np.zeros((2, 3, 4)))))
    with pytest.raises(TypeError, match="c0 dtype float32 does not match the input's float64"):
        m(x, (ml.Tensor(np.zeros((2, 2, 4))), ml.Tensor(np.zeros((2, 2, 4), dtype=np.float32))))
    with pytest.raises(TypeError, match=r"tuple \(h0, c0\)"):
        m(x, ml.Tensor(np.zeros((2, 2, 4))))
    with pytest.raises(ValueError, match=r"h0 must have shape .* got \(2, 2, 5\)"):
        make("gru", 3, 4, num_layers=2)(x, ml.Tensor(np.zeros((2, 2, 5))))
    with pytest.raises(ValueError, match=r"mask must be bool of shape \(5, 2\)"):
        m(x, mask=np.ones((2, 5), dtype=bool))
    with pytest.raises(ValueError, match=r"no real step for sequences \[1\]"):
        m(x, mask=np.array([[True, False]] * 5))
    with pytest.raises(ValueError, match="lengths or mask, not both"):
        m(x, lengths=[5, 5], mask=np.ones((5, 2), dtype=bool))
    with pytest.raises(TypeError, match="float32 does not match the parameters' float64"):
        m(ml.Tensor(np.zeros((5, 2, 3), dtype=np.float32)))
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        nn.GRU(3, 0)
    with pytest.raises(ValueError, match="dropout must be in"):
        nn.LSTM(3, 4, dropout=1.5)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_every_backend_matches_the_reference(kind, backend):
    rng = np.random.default_rng(10)
    m = make(kind, 3, 4, num_layers=2, bidirectional=True)
    x = rng.standard_normal((5, 2, 3))
    out, h_n, _ = run(m, ml.tensor(x), lengths=[5, 3])
    params = {n: p.numpy() for n, p in m.named_parameters()}
    ref = reference(kind, params, x, 2, True, [5, 3])
    np.testing.assert_allclose(out.numpy(), ref[0], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h_n.numpy(), ref[1], rtol=1e-12, atol=1e-13)


def test_lstm_language_model_example_runs_reduced():
    """examples/lstm_language_model.py end to end, reduced (CI form of the example):
    two layers so that dropout between layers runs too."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, "examples/lstm_language_model.py", "--steps", "3",
                        "--hidden", "16", "--layers", "2", "--dropout", "0.1", "--bptt", "8",
                        "--sample", "5"], cwd=root, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "validation loss" in p.stdout and "sample: 'The " in p.stdout


# ---------------------------------------------------------------------------- fused = composed

def _values_and_grads(m, x, lengths, state_kind):
    """Output, final states and the gradient of every parameter and of the input, for
    one loss that reads the output and the final states."""
    m.zero_grad()
    be = model_backend(m)  # the inputs live where the model does (the device for cupy)
    x = ml.Tensor(x.copy(), requires_grad=True, backend=be)
    out, h_n, c_n = run(m, x, lengths=lengths)
    w = np.linspace(-1, 1, out.numel()).reshape(out.shape).astype(out.dtype)
    loss = (out * ml.Tensor(w, backend=be)).sum() + (h_n * h_n).sum()
    if c_n is not None:
        loss = loss + c_n.sum() * 0.5
    loss.backward()
    vals = [out.numpy(), h_n.numpy()] + ([] if c_n is None else [c_n.numpy()])
    grads = [x.grad.numpy()] + [p.grad.numpy() for p in m.parameters()]
    return vals, grads


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_sequence_equals_the_composed_cells(kind, dtype, backend):
    """The fused op (one per layer-direction, hand-written BPTT; on Numba a compiled
    gate kernel per step) gives the values and gradients of the per-step ``_cell``
    composed from autograd ops: padded batch, two layers, both directions, dropout off."""
    rng = np.random.default_rng(3)
    m = make(kind, 3, 5, num_layers=2, bidirectional=True)
    if dtype == "float32":
        m = m.float()
    x = rng.standard_normal((6, 4, 3)).astype(dtype)
    lengths = [6, 2, 5, 1]
    m.fused = False
    ref_vals, ref_grads = _values_and_grads(m, x, lengths, kind)
    m.fused = True
    vals, grads = _values_and_grads(m, x, lengths, kind)
    tol = dict(rtol=1e-11, atol=1e-12) if dtype == "float64" else dict(rtol=2e-5, atol=2e-6)
    for a, b in zip(vals + grads, ref_vals + ref_grads):
        np.testing.assert_allclose(a, b, **tol)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_fused_sequence_with_extreme_preactivations(kind, backend):
    """Saturated gates (|pre-activation| up to 60) stay finite and equal the composed
    cells in float32: the Numba kernel's own exp/tanh must clamp, not overflow."""
    rng = np.random.default_rng(4)
    m = make(kind, 2, 3).float()
    for p in m.parameters():
        p.data[...] = p.backend.asarray(rng.uniform(-20, 20, p.shape), np.float32)
    x = rng.uniform(-3, 3, (5, 2, 2)).astype(np.float32)
    m.fused = False
    ref_vals, ref_grads = _values_and_grads(m, x, None, kind)
    m.fused = True
    vals, grads = _values_and_grads(m, x, None, kind)
    for a, b in zip(vals + grads, ref_vals + ref_grads):
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)

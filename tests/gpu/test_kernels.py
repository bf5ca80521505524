"""Every kernel of the backend interface (minilm/backends/interface.py ``KERNELS``) on the
CuPy backend equals the NumPy reference, forward and backward, on Hypothesis-drawn
shapes, in float32 and float64 — the GPU twin of tests/test_numba_backend.py.

Each check draws host arrays, runs the reference on them and the CuPy backend on device
copies (``cupy.asarray``), asserts that every array the CuPy kernel returns is a device
array (nothing fell back to the host) of the reference's dtype and shape, and compares
its host copy (``.get()``). Backward kernels are given the reference forward's outputs,
so each kernel is judged alone.

Tolerances are norm-wise, as in the Numba tests: |gpu - ref| <= rtol * max(1, max|ref|)
elementwise, rtol 1e-12 in float64 and 2e-5 in float32 (the float32 reference is run on
float64 copies, ``ref64``: a kernel that accumulates in float64, or in another order,
is then judged against the exact value, not against NumPy's float32 rounding). Dropout
masks come from different generators on the two backends: they are checked by their
values and statistics, and the attention backward with a given mask against the
reference's. ``test_every_kernel_is_covered`` keeps the list of kernels checked here
equal to the interface's."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import as32, as64, attention_case, examples, kernel_shapes, randn, ref64

from minilm.backends.interface import KERNELS

DTYPES = st.sampled_from([np.float32, np.float64])
SEEDS = st.integers(0, 2**32 - 1)


# ---------------------------------------------------------------------------- helpers


def shapes(min_dims=1, max_dims=3, max_side=7):
    """Small shapes whose last dim is sometimes 8..300 (past a warp, past a block)."""
    return kernel_shapes(min_dims, max_dims, max_side, wide=st.integers(8, 40) | st.integers(250, 300))


def rtol_of(dtype):
    return 1e-12 if np.dtype(dtype) == np.float64 else 2e-5


def on_device(cp, a):
    """A device copy of a host array (never sharing its memory); anything else as is."""
    return cp.array(a) if isinstance(a, np.ndarray) else a


def to_host(cp, out):
    """The host copy of a kernel's result; every array in it must be a device array."""
    if isinstance(out, tuple):
        return tuple(to_host(cp, o) for o in out)
    if out is None:
        return None
    assert isinstance(out, cp.ndarray), f"the CuPy kernel returned a {type(out).__name__}"
    return out.get()


def run(cp, backend, name, *args):
    """``backend.<name>`` on device copies of the array arguments; host results."""
    return to_host(cp, getattr(backend, name)(*(on_device(cp, a) for a in args)))


def close(got, want, dtype=None, rtol=None):
    """Same shape and dtype, equal to the norm-wise tolerance of the dtype."""
    if want is None:
        assert got is None
        return
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            close(g, w, dtype, rtol)
        return
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    rtol = rtol_of(dtype or want.dtype) if rtol is None else rtol
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


def check(cp, gpu, ref, name, *args, rtol=None):
    """The CuPy kernel ``name`` equals the reference on ``args``; returns the
    reference's result (host)."""
    want = ref64(getattr(ref, name), *args)
    dtype = next((a.dtype for a in args if isinstance(a, np.ndarray) and a.dtype.kind == "f"),
                 None)  # the tolerance of the inputs' precision (lse is float64 from float32)
    close(run(cp, gpu, name, *args), want, dtype=dtype, rtol=rtol)
    return want


# ---------------------------------------------------------------------------- softmax family


@given(shape=shapes(), dtype=DTYPES, seed=SEEDS, offset=st.sampled_from([0.0, 1e4, -3e3]))
def test_softmax_and_log_softmax(cp, gpu, ref, shape, dtype, seed, offset):
    """Also at offsets up to 1e4, over another dim and on a transposed input."""
    rng = np.random.default_rng(seed)
    x, g = randn(rng, shape, dtype, 4.0) + dtype(offset), randn(rng, shape, dtype)
    for fwd, bwd in (("softmax", "softmax_backward"), ("log_softmax", "log_softmax_backward")):
        y = check(cp, gpu, ref, fwd, x, -1)
        assert np.isfinite(y).all()
        check(cp, gpu, ref, fwd, x, 0)
        check(cp, gpu, ref, bwd, y, g, -1)
        check(cp, gpu, ref, bwd, ref64(getattr(ref, fwd), x, 0), g, 0)
    xt = cp.swapaxes(cp.array(x), 0, -1)  # a non-contiguous device array
    close(to_host(cp, gpu.softmax(xt, -1)), ref64(ref.softmax, np.swapaxes(x, 0, -1), -1))


@given(shape=shapes(1, 4), dtype=DTYPES, seed=SEEDS, data=st.data())
def test_masked_softmax(cp, gpu, ref, shape, dtype, seed, data):
    """Masks broadcast from any shape, fully masked rows, -inf scores."""
    rng = np.random.default_rng(seed)
    x = randn(rng, shape, dtype, 4.0)
    kshape = data.draw(hnp.broadcastable_shapes(shape, min_dims=0, max_dims=4, max_side=7))
    keep = rng.random(kshape) < 0.6
    check(cp, gpu, ref, "masked_softmax", x, keep, -1)
    check(cp, gpu, ref, "masked_softmax", x, None, -1)
    x[..., 0] = -np.inf
    check(cp, gpu, ref, "masked_softmax", x, keep, -1)


# ---------------------------------------------------------------------------- attention


@given(dtype=DTYPES, seed=SEEDS, data=st.data())
def test_attention_forward_backward(cp, gpu, ref, dtype, seed, data):
    rng = np.random.default_rng(seed)
    q, k, v, keep, bias = attention_case(rng, data, dtype, wide=True)
    scale = float(1.0 / np.sqrt(q.shape[-1]))
    out, p, drop = check(cp, gpu, ref, "attention", q, k, v, keep, bias, scale, 0.0)
    assert drop is None
    g = randn(rng, out.shape, dtype)
    check(cp, gpu, ref, "attention_backward", g, q, k, v, p, None, scale)


@given(dtype=DTYPES, seed=SEEDS, data=st.data())
def test_attention_dropout_is_consistent(cp, gpu, ref, dtype, seed, data):
    """The mask is the CuPy backend's own, but P equals the reference's, the mask takes
    the values {0, 1/(1-p)}, out = (P * drop) v, and the backward with that mask equals
    the reference's."""
    rng = np.random.default_rng(seed)
    q, k, v, keep, bias = attention_case(rng, data, dtype, wide=True)
    pdrop = data.draw(st.sampled_from([0.1, 0.5, 1.0]))
    out, p, drop = run(cp, gpu, "attention", q, k, v, keep, bias, 0.5, pdrop)
    _, p_r, _ = ref64(ref.attention, q, k, v, keep, bias, 0.5, 0.0)
    close(p, p_r)
    assert drop.shape == p.shape and drop.dtype == p.dtype
    keep_value = 0.0 if pdrop == 1.0 else dtype(1.0 / (1.0 - pdrop))
    assert np.all((drop == 0) | (drop == keep_value))
    close(out, as32(np.matmul(as64(p_r) * drop, as64(v))) if dtype == np.float32
          else np.matmul(p_r * drop, v))
    g = randn(rng, out.shape, dtype)
    check(cp, gpu, ref, "attention_backward", g, q, k, v, p, drop, 0.5)


causal_shapes = st.tuples(st.lists(st.integers(1, 3), min_size=1, max_size=2).map(tuple),
                          st.integers(1, 9) | st.integers(30, 140),
                          st.integers(1, 9) | st.just(64))


@given(shape=causal_shapes, dtype=DTYPES, seed=SEEDS)
def test_causal_attention(cp, gpu, ref, shape, dtype, seed):
    lead, T, E = shape
    rng = np.random.default_rng(seed)
    q, k, v, g = (randn(rng, (*lead, T, E), dtype, 1.0) for _ in range(4))
    scale = 1.0 / math.sqrt(E)
    out, lse = check(cp, gpu, ref, "causal_attention", q, k, v, scale)
    assert lse.dtype == np.float64
    check(cp, gpu, ref, "causal_attention_backward", g, q, k, v, out, lse, scale)


@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 9) | st.integers(30, 140),
                       st.integers(1, 4), st.integers(1, 6) | st.just(64)),
       dtype=DTYPES, seed=SEEDS)
def test_causal_attention_qkv(cp, gpu, ref, shape, dtype, seed):
    B, T, H, E = shape
    rng = np.random.default_rng(seed)
    qkv = randn(rng, (B, T, 3 * H * E), dtype, 1.0)
    g = randn(rng, (B, T, H * E), dtype)
    scale = 1.0 / math.sqrt(E)
    out, lse = check(cp, gpu, ref, "causal_attention_qkv", qkv, H, scale)
    check(cp, gpu, ref, "causal_attention_qkv_backward", g, qkv, out, lse, H, scale)


# ---------------------------------------------------------------------------- cross-entropy


@given(n=st.integers(1, 9) | st.integers(60, 150),
       c=st.integers(1, 11) | st.integers(12, 40) | st.integers(1000, 1100),
       dtype=DTYPES, seed=SEEDS, offset=st.sampled_from([0.0, 1e4]),
       smoothing=st.sampled_from([0.0, 0.1, 1.0]), weighted=st.booleans(),
       ignore=st.sampled_from([-100, 0]), scalar_g=st.booleans())
def test_cross_entropy(cp, gpu, ref, n, c, dtype, seed, offset, smoothing, weighted, ignore,
                       scalar_g):
    rng = np.random.default_rng(seed)
    z = randn(rng, (n, c), dtype, 3.0) + dtype(offset)
    t = rng.integers(0, c, n)
    t[rng.random(n) < 0.3] = ignore
    w = rng.uniform(0.1, 2.0, c).astype(dtype) if weighted else None
    loss, _, logp = check(cp, gpu, ref, "cross_entropy", z, t, ignore, smoothing, w)
    assert np.isfinite(loss).all()
    g_row = np.broadcast_to(dtype(0.7), (n,)).copy() if scalar_g else randn(rng, (n,), dtype)
    check(cp, gpu, ref, "cross_entropy_backward", logp, t, g_row, ignore, smoothing, w)


def test_cross_entropy_bad_target_raises_like_the_reference(cp, gpu):
    with pytest.raises(IndexError):
        gpu.cross_entropy(cp.zeros((3, 4)), cp.asarray([0, 4, 1]), -100, 0.0, None)


# ---------------------------------------------------------------------------- normalisation


@given(shape=shapes() | st.tuples(st.integers(65, 300), st.integers(1, 20)), dtype=DTYPES,
       seed=SEEDS, affine=st.sampled_from(["none", "w", "wb"]), need=st.booleans())
def test_layer_norm_and_rms_norm(cp, gpu, ref, shape, dtype, seed, affine, need):
    rng = np.random.default_rng(seed)
    C = shape[-1]
    x = randn(rng, shape, dtype) + dtype(rng.standard_normal())
    g = randn(rng, shape, dtype)
    w = randn(rng, (C,), dtype) if affine != "none" else None
    b = randn(rng, (C,), dtype) if affine == "wb" else None
    sums = rtol_of(dtype) * (1 + np.sqrt(x.size / C))  # dw, db: sums over the rows
    _, mean, rstd = check(cp, gpu, ref, "layer_norm", x, w, b, 1e-5)
    check(cp, gpu, ref, "layer_norm_backward", g, x, w, mean, rstd, need, rtol=sums)
    _, rstd = check(cp, gpu, ref, "rms_norm", x, w, 1e-6)
    check(cp, gpu, ref, "rms_norm_backward", g, x, w, rstd, need, rtol=sums)


# ---------------------------------------------------------------------------- activations


@given(shape=shapes(0, 3), dtype=DTYPES, seed=SEEDS, approximate=st.sampled_from(["none", "tanh"]))
def test_gelu_and_erf(cp, gpu, ref, shape, dtype, seed, approximate):
    rng = np.random.default_rng(seed)
    x, g = randn(rng, shape, dtype), randn(rng, shape, dtype)
    check(cp, gpu, ref, "erf", x)
    check(cp, gpu, ref, "gelu", x, approximate)
    check(cp, gpu, ref, "gelu_backward", x, g, approximate)


# ---------------------------------------------------------------------------- dropout, embedding


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_mask_statistics(cp, gpu, dtype, p):
    n = 1_000_000
    m = to_host(cp, gpu.dropout_mask((n // 1000, 1000), p, dtype))
    assert m.shape == (n // 1000, 1000) and m.dtype == dtype
    keep_value = dtype(1.0 / (1.0 - p))
    assert np.all((m == 0) | (m == keep_value))
    kept = np.count_nonzero(m) / n
    assert abs(kept - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    both = np.count_nonzero(m[:, 1:] * m[:, :-1]) / m[:, 1:].size
    assert abs(both - (1 - p) ** 2) < 5 * np.sqrt((1 - p) ** 2 / m[:, 1:].size)


def test_dropout_mask_is_seeded_and_fresh_each_call(cp, gpu):
    import minilm as ml

    ml.manual_seed(3)
    a = to_host(cp, gpu.dropout_mask((50, 7), 0.5, np.float32))
    b = to_host(cp, gpu.dropout_mask((50, 7), 0.5, np.float32))
    assert not np.array_equal(a, b)
    ml.manual_seed(3)
    np.testing.assert_array_equal(to_host(cp, gpu.dropout_mask((50, 7), 0.5, np.float32)), a)
    np.testing.assert_array_equal(to_host(cp, gpu.dropout_mask((50, 7), 0.5, np.float32)), b)
    np.testing.assert_array_equal(to_host(cp, gpu.dropout_mask((3,), 0.0, np.float64)),
                                  np.ones(3))
    np.testing.assert_array_equal(to_host(cp, gpu.dropout_mask((3,), 1.0, np.float64)),
                                  np.zeros(3))


@given(n=st.integers(1, 40) | st.integers(2000, 3000), vocab=st.integers(1, 9) | st.just(1000),
       dim=st.integers(1, 70) | st.just(768), dtype=DTYPES, seed=SEEDS,
       ids_dtype=st.sampled_from([np.int64, np.int32]))
@examples(0.5)
def test_embedding_backward(cp, gpu, ref, n, vocab, dim, dtype, seed, ids_dtype):
    """Many repeated ids (the atomic adds collide), int32 and int64 ids."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (n,)).astype(ids_dtype).reshape(-1, 1 + (n % 2 == 0))
    g = randn(rng, ids.shape + (dim,), dtype)
    check(cp, gpu, ref, "embedding_backward", ids, g, vocab,
          rtol=rtol_of(dtype) * (1 + np.sqrt(n)))  # sums of up to n rows, in any order


# ---------------------------------------------------------------------------- optimizers


def _steps(cp, be, state0, step_fn, shape, dtype, seed, steps=3):
    """``step_fn(be, state, g, t)`` run ``steps`` times from host copies of ``state0``
    (on the device for the CuPy backend); the final state on the host."""
    dev = be.name == "cupy"
    state = [None if s is None else (cp.array(s) if dev else s.copy()) for s in state0]
    for t in range(1, steps + 1):
        g = randn(np.random.default_rng(seed + t), shape, dtype)
        step_fn(be, state, cp.asarray(g) if dev else g, t)
    return [None if s is None else (to_host(cp, s) if dev else s) for s in state]


@given(shape=shapes(1, 2), dtype=DTYPES, seed=SEEDS, momentum=st.sampled_from([0.0, 0.9]),
       dampening=st.sampled_from([0.0, 0.3]), nesterov=st.booleans(),
       weight_decay=st.sampled_from([0.0, 0.01]), maximize=st.booleans())
def test_sgd_step(cp, gpu, ref, shape, dtype, seed, momentum, dampening, nesterov, weight_decay,
                  maximize):
    if nesterov and (momentum == 0.0 or dampening != 0.0):
        nesterov = False
    p0 = randn(np.random.default_rng(seed), shape, dtype)

    def step(be, s, g, t):
        be.sgd_step(s[0], g, s[1], 0.1, momentum, dampening, weight_decay, nesterov, maximize,
                    init_buf=t == 1)

    state0 = [p0, np.zeros_like(p0) if momentum else None]
    got = _steps(cp, gpu, state0, step, shape, dtype, seed)
    want = _steps(cp, ref, state0, step, shape, dtype, seed)
    for a, b in zip(got, want):
        close(a, b)


@given(shape=shapes(1, 2), dtype=DTYPES, seed=SEEDS, weight_decay=st.sampled_from([0.0, 0.1]),
       decoupled=st.booleans(), amsgrad=st.booleans(), maximize=st.booleans())
def test_adam_step(cp, gpu, ref, shape, dtype, seed, weight_decay, decoupled, amsgrad, maximize):
    p0 = randn(np.random.default_rng(seed), shape, dtype)

    def step(be, s, g, t):
        be.adam_step(s[0], g, s[1], s[2], t, 1e-2, 0.9, 0.999, 1e-8, weight_decay, decoupled,
                     s[3], maximize)

    state0 = [p0, np.zeros_like(p0), np.zeros_like(p0), np.zeros_like(p0) if amsgrad else None]
    got = _steps(cp, gpu, state0, step, shape, dtype, seed)
    want = _steps(cp, ref, state0, step, shape, dtype, seed)
    for a, b in zip(got, want):
        close(a, b)


def test_optimizer_steps_keep_the_parameter_array(cp, gpu, real_gpu):
    """IN PLACE: the parameter stays the same device array."""
    p = cp.arange(6.0).reshape(2, 3)
    before = p.data.ptr
    gpu.sgd_step(p, cp.ones((2, 3)), None, 0.5)
    gpu.adam_step(p, cp.ones((2, 3)), cp.zeros((2, 3)), cp.zeros((2, 3)), 1, 0.1, 0.9, 0.999,
                  1e-8)
    assert p.data.ptr == before


# ---------------------------------------------------------------------------- recurrent


def _keep(rng, T, B, padded):
    if not padded:
        return None
    lengths = rng.integers(1, T + 1, B)
    return np.arange(T)[:, None] < lengths[None, :]


@given(T=st.integers(1, 7), B=st.integers(1, 4), H=st.integers(1, 9) | st.just(64),
       dtype=DTYPES, seed=SEEDS, padded=st.booleans(), reverse=st.booleans(),
       kind=st.sampled_from(["lstm", "gru", "gru_nobias", "rnn_tanh", "rnn_relu"]))
@examples(0.5)
def test_recurrent_sequences(cp, gpu, ref, T, B, H, dtype, seed, padded, reverse, kind):
    rng = np.random.default_rng(seed)
    keep = _keep(rng, T, B, padded)
    h0 = randn(rng, (B, H), dtype, 0.5)
    ghs, ghT = randn(rng, (T, B, H), dtype), randn(rng, (B, H), dtype)
    # the step-by-step sums are float32 recurrences: a little more room in float32
    tol = None if dtype == np.float64 else 1e-4
    if kind == "lstm":
        gx, c0 = randn(rng, (T, B, 4 * H), dtype), randn(rng, (B, H), dtype, 0.5)
        w = randn(rng, (4 * H, H), dtype, 1.0 / math.sqrt(H))
        hs, cs, acts = check(cp, gpu, ref, "lstm_sequence", gx, h0, c0, w, keep, reverse,
                             rtol=tol)
        check(cp, gpu, ref, "lstm_sequence_backward", ghs, ghT, randn(rng, (B, H), dtype), hs,
              cs, acts, h0, c0, w, keep, reverse, rtol=tol)
    elif kind.startswith("gru"):
        gx = randn(rng, (T, B, 3 * H), dtype)
        w = randn(rng, (3 * H, H), dtype, 1.0 / math.sqrt(H))
        b = None if kind == "gru_nobias" else randn(rng, (3 * H,), dtype)
        hs, acts = check(cp, gpu, ref, "gru_sequence", gx, h0, w, b, keep, reverse, rtol=tol)
        check(cp, gpu, ref, "gru_sequence_backward", ghs, ghT, hs, acts, h0, w, keep, reverse,
              rtol=tol)
    else:
        relu = kind == "rnn_relu"
        gx = randn(rng, (T, B, H), dtype)
        w = randn(rng, (H, H), dtype, 0.5 / math.sqrt(H))
        hs = check(cp, gpu, ref, "rnn_sequence", gx, h0, w, keep, reverse, relu, rtol=tol)
        check(cp, gpu, ref, "rnn_sequence_backward", ghs, ghT, hs, h0, w, keep, reverse, relu,
              rtol=tol)


# ---------------------------------------------------------------------------- quantized linear


@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (3, 17, 5), (1, 4096, 40), (9, 2049, 33)])
def test_int8_matmul_is_exact(cp, gpu, ref, M, K, N):
    rng = np.random.default_rng(K)
    a = rng.integers(-128, 128, (M, K), dtype=np.int8)
    b = rng.integers(-128, 128, (N, K), dtype=np.int8)
    a[0, : K // 2] = -128
    b[-1, : K // 2] = 127
    got = run(cp, gpu, "int8_matmul", a, b)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, ref.int8_matmul(a, b))
    with pytest.raises(ValueError, match="overflow"):
        gpu.int8_matmul(cp.zeros((1, 131073), cp.int8), cp.zeros((1, 131073), cp.int8))


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("xshape,N,group_size,symmetric", [
    ((1, 64), 48, None, True), ((5, 33), 7, None, True), ((2, 3, 96), 50, 32, False),
    ((4, 128), 130, 64, True), ((3, 70), 17, 14, False), ((8, 768), 768, 128, True),
])
def test_weight_only_linear(cp, gpu, ref, bits, xshape, N, group_size, symmetric):
    """Within the float32 summation bound of tests/test_quant_linear.py: both sum the
    same K products in some order, so they differ by at most 2 gamma_{K+4} A + u(|a|+|b|)."""
    from minilm.quant.affine import quantize_weight

    rng = np.random.default_rng(N)
    K = xshape[-1]
    w = rng.standard_normal((N, K)).astype(np.float32)
    qt = quantize_weight(w, bits, symmetric, "channel" if group_size is None else "group",
                         group_size)
    gs = group_size or K
    scale, zero = qt.scale.reshape(N, K // gs), qt.zero.reshape(N, K // gs)
    x = rng.standard_normal(xshape).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    name = f"linear_int{bits}_weight"
    got = run(cp, gpu, name, x, qt.q, scale, zero, gs, bias)
    want = getattr(ref, name)(x, qt.q, scale, zero, gs, bias)
    assert got.shape == want.shape and got.dtype == np.float32
    q = qt.int_values().astype(np.float64)
    s = np.repeat(scale, gs, axis=1).astype(np.float64)
    z = np.repeat(zero, gs, axis=1).astype(np.float64)
    A = np.abs(x.astype(np.float64)) @ (s * (np.abs(q) + np.abs(z))).T + np.abs(bias)
    u = 2.0 ** -24
    gamma = (K + 4) * u / (1 - (K + 4) * u)
    bound = 2 * gamma * A + u * (np.abs(got) + np.abs(want))
    assert np.all(np.abs(got.astype(np.float64) - want) <= bound)


# ---------------------------------------------------------------------------- coverage


COVERED = {
    "softmax", "softmax_backward", "log_softmax", "log_softmax_backward", "masked_softmax",
    "layer_norm", "layer_norm_backward", "rms_norm", "rms_norm_backward", "gelu",
    "gelu_backward", "erf", "dropout_mask", "embedding_backward", "attention",
    "attention_backward", "causal_attention", "causal_attention_backward",
    "causal_attention_qkv", "causal_attention_qkv_backward", "cross_entropy",
    "cross_entropy_backward", "sgd_step", "adam_step", "lstm_sequence", "lstm_sequence_backward",
    "gru_sequence", "gru_sequence_backward", "rnn_sequence", "rnn_sequence_backward",
    "int8_matmul", "linear_int8_weight", "linear_int4_weight",
}


def test_every_kernel_is_covered():
    """A kernel added to the interface must be added to the checks above."""
    assert COVERED == set(KERNELS), (sorted(set(KERNELS) - COVERED),
                                     sorted(COVERED - set(KERNELS)))

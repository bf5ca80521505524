"""Every kernel the Numba backend overrides equals the NumPy reference, forward and
backward, on Hypothesis-drawn shapes (odd sizes, length-1 dims) in float32 and float64;
dropout masks are checked by their statistics (the two backends draw different masks);
a whole GPT gives the same loss and gradients on both backends.

Tolerances are norm-wise: |numba - numpy| <= rtol * max(1, max|numpy|) elementwise,
with rtol 1e-12 in float64 and 1e-5 in float32. A float32 kernel is compared with the
reference run on float64 copies of its inputs (``ref64``): the Numba kernels accumulate
in float64, and where a formula is ill-conditioned (RMS norm's gradient over one
element) the reference's float32 rounding is the less accurate of the two."""

import numpy as np
import pytest

pytest.importorskip("numba")

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minilm as ml
from minilm.backends import _default_backend_name, get_backend

DTYPES = st.sampled_from([np.float32, np.float64])
SEEDS = st.integers(0, 2**32 - 1)


@pytest.fixture(scope="module")
def nb():
    return get_backend("numba")


@pytest.fixture(scope="module")
def ref():
    return get_backend("numpy")


def shapes(min_dims=1, max_dims=3, max_side=7):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=max_side)


def randn(rng, shape, dtype, scale=2.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def rtol_of(dtype):
    return 1e-12 if np.dtype(dtype) == np.float64 else 1e-5


def _as64(a):
    return a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype == np.float32 else a


def _as32(a):
    return a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == np.float64 else a


def ref64(fn, *args):
    """``fn`` (a reference kernel) on float64 copies of float32 array arguments, its
    results cast back to float32; float64 arguments are passed as they are."""
    if not any(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in args):
        return fn(*args)
    out = fn(*(_as64(a) for a in args))
    return tuple(_as32(o) for o in out) if isinstance(out, tuple) else _as32(out)


def close(got, want, dtype=None, rtol=None):
    """Same shape and dtype, equal to the norm-wise tolerance of the dtype."""
    if want is None:
        assert got is None
        return
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    rtol = rtol_of(dtype or want.dtype) if rtol is None else rtol
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


# ---------------------------------------------------------------------------- softmax family


@given(shape=shapes(), dtype=DTYPES, seed=SEEDS)
def test_softmax_and_log_softmax_forward_backward(nb, ref, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x, g = randn(rng, shape, dtype, 4.0), randn(rng, shape, dtype)
    for fwd, bwd in (("softmax", "softmax_backward"), ("log_softmax", "log_softmax_backward")):
        y = ref64(getattr(ref, fwd), x, -1)
        close(getattr(nb, fwd)(x, -1), y)
        close(getattr(nb, fwd)(x, x.ndim - 1), y)
        close(getattr(nb, bwd)(y, g, -1), ref64(getattr(ref, bwd), y, g, -1))
    # non-contiguous input and a dim that is not the last (the reference's path)
    xt = np.swapaxes(x, 0, -1)
    close(nb.softmax(xt, -1), ref64(ref.softmax, xt, -1))
    close(nb.log_softmax(x, 0), ref.log_softmax(x, 0))
    close(nb.softmax_backward(x, g, 0), ref.softmax_backward(x, g, 0))


@given(shape=shapes(1, 4), dtype=DTYPES, seed=SEEDS, data=st.data())
def test_masked_softmax(nb, ref, shape, dtype, seed, data):
    rng = np.random.default_rng(seed)
    x = randn(rng, shape, dtype, 4.0)
    kshape = data.draw(hnp.broadcastable_shapes(shape, min_dims=0, max_dims=4, max_side=7))
    keep = rng.random(kshape) < 0.6  # some rows end up fully masked
    close(nb.masked_softmax(x, keep, -1), ref64(ref.masked_softmax, x, keep, -1))
    close(nb.masked_softmax(x, None, -1), ref64(ref.masked_softmax, x, None, -1))
    x[..., 0] = -np.inf
    close(nb.masked_softmax(x, keep, -1), ref64(ref.masked_softmax, x, keep, -1))


# ---------------------------------------------------------------------------- attention


def _attention_case(rng, data, dtype):
    B, H = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    lq, lk, E = (data.draw(st.integers(1, 9)) for _ in range(3))
    q = randn(rng, (B, H, lq, E), dtype, 1.0)
    k = randn(rng, (B, H, lk, E), dtype, 1.0)
    v = randn(rng, (B, H, lk, E + 1), dtype, 1.0)
    kind = data.draw(st.sampled_from(["none", "causal", "padding", "bias", "bias+keep"]))
    keep = bias = None
    if kind == "causal":
        keep = np.tril(np.ones((lq, lk), dtype=bool))
    elif kind == "padding":
        keep = rng.random((B, 1, 1, lk)) < 0.7
    elif kind == "bias":
        bias = randn(rng, (1, H, lq, lk), dtype)
        bias[rng.random(bias.shape) < 0.2] = -np.inf
    elif kind == "bias+keep":
        bias = randn(rng, (lq, lk), dtype)
        keep = rng.random((B, H, lq, lk)) < 0.7
    return q, k, v, keep, bias


@given(dtype=DTYPES, seed=SEEDS, data=st.data())
def test_attention_forward_backward(nb, ref, dtype, seed, data):
    rng = np.random.default_rng(seed)
    q, k, v, keep, bias = _attention_case(rng, data, dtype)
    scale = float(1.0 / np.sqrt(q.shape[-1]))
    out, p, drop = nb.attention(q, k, v, keep, bias, scale, 0.0)
    out_r, p_r, drop_r = ref64(ref.attention, q, k, v, keep, bias, scale, 0.0)
    assert drop is None and drop_r is None
    close(out, out_r)
    close(p, p_r)
    g = randn(rng, out_r.shape, dtype)
    for got, want in zip(nb.attention_backward(g, q, k, v, p_r, None, scale),
                         ref64(ref.attention_backward, g, q, k, v, p_r, None, scale)):
        close(got, want)


@given(dtype=DTYPES, seed=SEEDS, data=st.data())
def test_attention_dropout_is_consistent(nb, ref, dtype, seed, data):
    """The mask differs from the reference's, but P is the same, the mask takes the
    values {0, 1/(1-p)}, out = (P * drop) v, and the backward with a given mask equals
    the reference's."""
    rng = np.random.default_rng(seed)
    q, k, v, keep, bias = _attention_case(rng, data, dtype)
    pdrop = data.draw(st.sampled_from([0.1, 0.5, 1.0]))
    out, p, drop = nb.attention(q, k, v, keep, bias, 0.5, pdrop)
    _, p_r, _ = ref64(ref.attention, q, k, v, keep, bias, 0.5, 0.0)
    close(p, p_r)
    assert drop.shape == p.shape and drop.dtype == p.dtype
    keep_value = 0.0 if pdrop == 1.0 else dtype(1.0 / (1.0 - pdrop))
    assert np.all((drop == 0) | (drop == keep_value))
    close(out, _as32(np.matmul(_as64(p_r) * drop, _as64(v))) if dtype == np.float32
          else np.matmul(p_r * drop, v))
    g = randn(rng, out.shape, dtype)
    for got, want in zip(nb.attention_backward(g, q, k, v, p, drop, 0.5),
                         ref64(ref.attention_backward, g, q, k, v, p, drop, 0.5)):
        close(got, want)


# ---------------------------------------------------------------------------- cross-entropy


@given(n=st.integers(1, 9), c=st.integers(1, 11), dtype=DTYPES, seed=SEEDS,
       smoothing=st.sampled_from([0.0, 0.1, 1.0]), weighted=st.booleans(),
       ignore=st.sampled_from([-100, 0]), scalar_g=st.booleans())
def test_cross_entropy_forward_backward(nb, ref, n, c, dtype, seed, smoothing, weighted,
                                        ignore, scalar_g):
    rng = np.random.default_rng(seed)
    z = randn(rng, (n, c), dtype, 3.0)
    t = rng.integers(0, c, n)
    t[rng.random(n) < 0.3] = ignore
    w = rng.uniform(0.1, 2.0, c).astype(dtype) if weighted else None
    got = nb.cross_entropy(z, t, ignore, smoothing, w)
    want = ref64(ref.cross_entropy, z, t, ignore, smoothing, w)
    for a, b in zip(got, want):
        close(a, b)
    logp = want[2]
    g_row = np.broadcast_to(dtype(0.7), (n,)) if scalar_g else randn(rng, (n,), dtype)
    close(nb.cross_entropy_backward(logp, t, g_row, ignore, smoothing, w),
          ref64(ref.cross_entropy_backward, logp, t, g_row, ignore, smoothing, w))


def test_cross_entropy_bad_target_raises_like_the_reference(nb):
    z = np.zeros((3, 4))
    with pytest.raises(IndexError):
        nb.cross_entropy(z, np.array([0, 4, 1]), -100, 0.0, None)


def test_functional_cross_entropy_on_both_backends():
    import minilm.functional as F

    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 5, 3))  # (N, C, d): classes on dim 1
    t = rng.integers(0, 5, (2, 3))
    t[0, 1] = -100
    results = []
    for name in ("numpy", "numba"):
        ml.use_backend(name)
        x = ml.tensor(z, requires_grad=True)
        loss = F.cross_entropy(x, ml.tensor(t), label_smoothing=0.1)
        loss.backward()
        results.append((loss.item(), x.grad.numpy()))
    close(results[1][0], results[0][0])
    close(results[1][1], results[0][1])


# ---------------------------------------------------------------------------- normalisation


@given(shape=shapes(), dtype=DTYPES, seed=SEEDS, affine=st.sampled_from(["none", "w", "wb"]),
       need=st.booleans())
def test_layer_norm_and_rms_norm(nb, ref, shape, dtype, seed, affine, need):
    rng = np.random.default_rng(seed)
    C = shape[-1]
    x = randn(rng, shape, dtype) + dtype(rng.standard_normal())
    g = randn(rng, shape, dtype)
    w = randn(rng, (C,), dtype) if affine != "none" else None
    b = randn(rng, (C,), dtype) if affine == "wb" else None
    y, mean, rstd = ref64(ref.layer_norm, x, w, b, 1e-5)
    for got, want in zip(nb.layer_norm(x, w, b, 1e-5), (y, mean, rstd)):
        close(got, want)
    for got, want in zip(nb.layer_norm_backward(g, x, w, mean, rstd, need),
                         ref64(ref.layer_norm_backward, g, x, w, mean, rstd, need)):
        close(got, want)
    y, rstd = ref64(ref.rms_norm, x, w, 1e-6)
    for got, want in zip(nb.rms_norm(x, w, 1e-6), (y, rstd)):
        close(got, want)
    for got, want in zip(nb.rms_norm_backward(g, x, w, rstd, need),
                         ref64(ref.rms_norm_backward, g, x, w, rstd, need)):
        close(got, want)


def test_norm_weight_gradient_over_many_rows(nb, ref):
    """More rows than the kernel has partial-sum chunks (64)."""
    rng = np.random.default_rng(1)
    x, g, w = rng.standard_normal((300, 5)), rng.standard_normal((300, 5)), rng.random(5)
    _, mean, rstd = ref.layer_norm(x, w, None, 1e-5)
    for got, want in zip(nb.layer_norm_backward(g, x, w, mean, rstd),
                         ref.layer_norm_backward(g, x, w, mean, rstd)):
        close(got, want)


# ---------------------------------------------------------------------------- activations


@given(shape=shapes(0, 3), dtype=DTYPES, seed=SEEDS, approximate=st.sampled_from(["none", "tanh"]))
def test_gelu_bias_gelu_and_erf(nb, ref, shape, dtype, seed, approximate):
    rng = np.random.default_rng(seed)
    x, g = randn(rng, shape, dtype), randn(rng, shape, dtype)
    # the reference's float32 erf is a polynomial good to 1.5e-7 (absolute)
    close(nb.erf(x), ref64(ref.erf, x))
    close(nb.gelu(x, approximate), ref64(ref.gelu, x, approximate))
    close(nb.gelu_backward(x, g, approximate), ref64(ref.gelu_backward, x, g, approximate))
    if x.ndim:
        b = randn(rng, (shape[-1],), dtype)
        close(nb.bias_gelu(x, b, approximate), ref64(ref.bias_gelu, x, b, approximate))
        close(ref.bias_gelu(x, b, approximate), ref.gelu(x + b, approximate))
        dx, db = nb.bias_gelu_backward(x, b, g, approximate)
        dx_r, db_r = ref64(ref.bias_gelu_backward, x, b, g, approximate)
        close(dx, dx_r)
        close(db, db_r, rtol=10 * rtol_of(dtype))  # summed over up to 49 rows
        close(ref.bias_gelu_backward(x, b, g, approximate)[0],
              ref.gelu_backward(x + b, g, approximate))


def test_gelu_large_flat_array_crosses_blocks_and_bias_wraps(nb, ref):
    rng = np.random.default_rng(2)
    x, b, g = rng.standard_normal((1000, 13)), rng.standard_normal(13), rng.standard_normal((1000, 13))
    close(nb.bias_gelu(x, b), ref.bias_gelu(x, b))
    for got, want in zip(nb.bias_gelu_backward(x, b, g), ref.bias_gelu_backward(x, b, g)):
        close(got, want)


# ---------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_mask_statistics(nb, dtype, p):
    n = 200_000
    m = nb.dropout_mask((n // 100, 100), p, dtype)
    assert m.shape == (n // 100, 100) and m.dtype == dtype
    keep_value = dtype(1.0 / (1.0 - p))
    assert np.all((m == 0) | (m == keep_value))
    kept = np.count_nonzero(m) / n
    assert abs(kept - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)  # 5 sigma
    # neighbouring entries are independent: P(both kept) = (1-p)^2
    both = np.count_nonzero(m[:, 1:] * m[:, :-1]) / m[:, 1:].size
    assert abs(both - (1 - p) ** 2) < 5 * np.sqrt((1 - p) ** 2 / m[:, 1:].size)


def test_dropout_mask_is_seeded_and_fresh_each_call(nb):
    ml.manual_seed(3)
    a, b = nb.dropout_mask((50, 7), 0.5, np.float32), nb.dropout_mask((50, 7), 0.5, np.float32)
    assert not np.array_equal(a, b)
    ml.manual_seed(3)
    np.testing.assert_array_equal(nb.dropout_mask((50, 7), 0.5, np.float32), a)
    np.testing.assert_array_equal(nb.dropout_mask((50, 7), 0.5, np.float32), b)
    np.testing.assert_array_equal(nb.dropout_mask((3,), 0.0, np.float64), np.ones(3))
    np.testing.assert_array_equal(nb.dropout_mask((3,), 1.0, np.float64), np.zeros(3))
    assert nb.dropout_mask((0, 4), 0.5, np.float32).shape == (0, 4)


def test_dropout_op_uses_the_mask_as_its_gradient():
    import minilm.functional as F

    ml.use_backend("numba")
    x = ml.randn(40, 30, requires_grad=True)
    y = F.dropout(x, 0.3)
    y.sum().backward()
    m = x.grad.numpy()
    np.testing.assert_allclose(y.numpy(), x.numpy() * m, rtol=1e-6)
    assert set(np.unique(m)) <= {0.0, np.float32(1 / 0.7)}


# ---------------------------------------------------------------------------- embedding


@given(n=st.integers(1, 40), vocab=st.integers(1, 9), dim=st.integers(1, 70), dtype=DTYPES,
       seed=SEEDS, ids_dtype=st.sampled_from([np.int64, np.int32]))
def test_embedding_backward(nb, ref, n, vocab, dim, dtype, seed, ids_dtype):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (n,)).astype(ids_dtype).reshape(-1, 1 + (n % 2 == 0))
    g = randn(rng, ids.shape + (dim,), dtype)
    close(nb.embedding_backward(ids, g, vocab), ref.embedding_backward(ids, g, vocab))


# ---------------------------------------------------------------------------- optimizers


@given(shape=shapes(1, 2), dtype=DTYPES, seed=SEEDS, momentum=st.sampled_from([0.0, 0.9]),
       dampening=st.sampled_from([0.0, 0.3]), nesterov=st.booleans(),
       weight_decay=st.sampled_from([0.0, 0.01]), maximize=st.booleans())
def test_sgd_step(nb, ref, shape, dtype, seed, momentum, dampening, nesterov, weight_decay,
                  maximize):
    if nesterov and (momentum == 0.0 or dampening != 0.0):
        nesterov = False
    rng = np.random.default_rng(seed)
    p0 = randn(rng, shape, dtype)
    states = {}
    for name, be in (("numba", nb), ("numpy", ref)):
        p, buf = p0.copy(), np.empty_like(p0) if momentum else None
        for step in range(3):
            g = randn(np.random.default_rng(seed + step), shape, dtype)
            be.sgd_step(p, g, buf, 0.1, momentum, dampening, weight_decay, nesterov, maximize,
                        init_buf=step == 0)
        states[name] = (p, buf)
    close(states["numba"][0], states["numpy"][0])
    close(states["numba"][1], states["numpy"][1])


@given(shape=shapes(1, 2), dtype=DTYPES, seed=SEEDS, weight_decay=st.sampled_from([0.0, 0.1]),
       decoupled=st.booleans(), amsgrad=st.booleans(), maximize=st.booleans())
def test_adam_step(nb, ref, shape, dtype, seed, weight_decay, decoupled, amsgrad, maximize):
    rng = np.random.default_rng(seed)
    p0 = randn(rng, shape, dtype)
    states = {}
    for name, be in (("numba", nb), ("numpy", ref)):
        p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
        vmax = np.zeros_like(p0) if amsgrad else None
        for step in range(1, 4):
            g = randn(np.random.default_rng(seed + step), shape, dtype)
            be.adam_step(p, g, m, v, step, 1e-2, 0.9, 0.999, 1e-8, weight_decay, decoupled,
                         vmax, maximize)
        states[name] = (p, m, v, vmax)
    for got, want in zip(states["numba"], states["numpy"]):
        close(got, want)


def test_optimizer_falls_back_for_non_contiguous_params(nb, ref):
    base = np.arange(12.0).reshape(3, 4)
    p, p_r = base.copy().T, base.copy().T  # Fortran-ordered: updated in place all the same
    g = np.ones((4, 3))
    nb.sgd_step(p, g, None, 0.5)
    ref.sgd_step(p_r, g, None, 0.5)
    np.testing.assert_array_equal(p, p_r)


# ---------------------------------------------------------------------------- the whole GPT


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-10), ("float32", 1e-4)])
def test_gpt_same_loss_gradients_and_adamw_step_on_both_backends(dtype, rtol):
    from minilm.nn import GPT, GPTConfig
    from minilm.optim import AdamW

    ml.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=17, context_length=16, n_layers=2, n_heads=2, d_model=16,
                          dropout=0.0))
    model = model.double() if dtype == "float64" else model
    start = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    ids = ml.tensor(rng.integers(0, 17, (3, 11)))
    targets = rng.integers(0, 17, (3, 11))
    targets[0, :3] = -100
    results = {}
    for name in ("numpy", "numba"):
        ml.use_backend(name)
        model.load_state_dict({k: ml.tensor(v) for k, v in start.items()})
        opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
        opt.zero_grad()
        _, loss = model(ids, ml.tensor(targets))
        loss.backward()
        grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
        opt.step()
        params = {n: p.numpy().copy() for n, p in model.named_parameters()}
        results[name] = (loss.item(), grads, params)
    (loss_r, grads_r, params_r), (loss_n, grads_n, params_n) = results["numpy"], results["numba"]
    assert np.isfinite(loss_r)
    np.testing.assert_allclose(loss_n, loss_r, rtol=rtol)
    for n in grads_r:
        close(grads_n[n], grads_r[n], rtol=rtol)
        close(params_n[n], params_r[n], rtol=rtol)


# ---------------------------------------------------------------------------- threads, default


def test_set_num_threads_governs_numba_and_blas(nb, ref):
    import numba

    before = numba.get_num_threads()
    try:
        ml.set_num_threads(1)
        assert numba.get_num_threads() == 1 and ml.get_num_threads() == 1
        x = np.random.default_rng(0).standard_normal((33, 17))
        close(nb.softmax(x, -1), ref.softmax(x, -1))
        threadpoolctl = pytest.importorskip("threadpoolctl")
        for info in threadpoolctl.threadpool_info():
            if info["user_api"] == "blas":
                assert info["num_threads"] == 1
        with pytest.raises(ValueError, match="at least 1"):
            ml.set_num_threads(0)
    finally:
        ml.set_num_threads(before)
    assert numba.get_num_threads() == before


def test_default_backend_is_numba_unless_minilm_backend_says(monkeypatch):
    monkeypatch.delenv("MINILM_BACKEND", raising=False)
    assert _default_backend_name() == "numba"
    monkeypatch.setenv("MINILM_BACKEND", "numpy")
    assert _default_backend_name() == "numpy"

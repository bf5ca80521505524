"""Every kernel the Numba backend overrides equals the NumPy reference, forward and
backward, on Hypothesis-drawn shapes (odd sizes, length-1 dims, rows past the kernels'
8-way unrolled reductions, more rows than the norm backward's 64 chunks, embedding dims
past its 16-column blocks) in float32 and float64; each such test asserts that the
Numba kernel ran (``uses_kernels``), not the NumPy fallback. GELU is checked against
the GELU formulas written out here. Dropout masks are checked by their
statistics (the two backends draw different masks); a whole GPT gives the same loss and
gradients on both backends.

Tolerances are norm-wise: |numba - numpy| <= rtol * max(1, max|numpy|) elementwise,
with rtol 1e-12 in float64 and 1e-5 in float32. A float32 kernel is compared with the
reference run on float64 copies of its inputs (``ref64``): the Numba kernels accumulate
in float64, and where a formula is ill-conditioned (RMS norm's gradient over one
element) the reference's float32 rounding is the less accurate of the two.

Numba is a dependency of the tests (the ``test`` extra that ``make test`` installs), so
this module fails, loudly, when it does not import; it is never skipped."""

import math

import numpy as np
import pytest

try:
    import numba  # noqa: F401
    import threadpoolctl  # a dependency of minilm itself

    from minilm.backends import numba_backend  # noqa: F401
except ImportError as exc:  # a broken or missing install must not pass as a skip
    pytest.fail(f"tests/test_numba_backend.py needs numba and threadpoolctl ({exc}); "
                "`make test` installs them (pip install -e '.[test]')", pytrace=False)

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import as32, as64, attention_case, randn, ref64, uses_kernels
from strategies import kernel_shapes as shapes

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


def rtol_of(dtype):
    return 1e-12 if np.dtype(dtype) == np.float64 else 1e-5


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


@given(shape=shapes(), dtype=DTYPES, seed=SEEDS, offset=st.sampled_from([0.0, 1e4, -3e3]))
def test_softmax_and_log_softmax_forward_backward(nb, ref, shape, dtype, seed, offset):
    """Also at offsets up to 1e4 (the kernel must subtract the row max) and on a
    non-contiguous (transposed) input."""
    rng = np.random.default_rng(seed)
    x, g = randn(rng, shape, dtype, 4.0) + dtype(offset), randn(rng, shape, dtype)
    with uses_kernels(nb, "softmax", "softmax_backward"):
        for fwd, bwd in (("softmax", "softmax_backward"), ("log_softmax", "log_softmax_backward")):
            y = ref64(getattr(ref, fwd), x, -1)
            assert np.isfinite(y).all()
            close(getattr(nb, fwd)(x, -1), y)
            close(getattr(nb, fwd)(x, x.ndim - 1), y)
            close(getattr(nb, bwd)(y, g, -1), ref64(getattr(ref, bwd), y, g, -1))
        xt = np.swapaxes(x, 0, -1)
        close(nb.softmax(xt, -1), ref64(ref.softmax, xt, -1))


@given(shape=shapes(2, 3), dtype=DTYPES, seed=SEEDS)
def test_softmax_over_another_dim_falls_back_to_the_reference(nb, ref, shape, dtype, seed):
    """A dim that is not the last is not the kernels' case: the reference runs (and
    must give the reference's result), and no kernel is called."""
    rng = np.random.default_rng(seed)
    x, g = randn(rng, shape, dtype, 4.0), randn(rng, shape, dtype)
    with uses_kernels(nb) as calls:
        close(nb.log_softmax(x, 0), ref.log_softmax(x, 0))
        close(nb.softmax_backward(x, g, 0), ref.softmax_backward(x, g, 0))
    assert not calls


@given(shape=shapes(1, 4), dtype=DTYPES, seed=SEEDS, data=st.data())
def test_masked_softmax(nb, ref, shape, dtype, seed, data):
    """Masks broadcast from any shape, fully masked rows, -inf scores."""
    rng = np.random.default_rng(seed)
    x = randn(rng, shape, dtype, 4.0)
    kshape = data.draw(hnp.broadcastable_shapes(shape, min_dims=0, max_dims=4, max_side=7))
    keep = rng.random(kshape) < 0.6  # some rows end up fully masked
    with uses_kernels(nb, "masked_softmax") as calls:
        close(nb.masked_softmax(x, keep, -1), ref64(ref.masked_softmax, x, keep, -1))
        close(nb.masked_softmax(x, None, -1), ref64(ref.masked_softmax, x, None, -1))
        x[..., 0] = -np.inf
        close(nb.masked_softmax(x, keep, -1), ref64(ref.masked_softmax, x, keep, -1))
    assert calls["masked_softmax"] == 3


# ---------------------------------------------------------------------------- attention


@given(dtype=DTYPES, seed=SEEDS, data=st.data())
def test_attention_forward_backward(nb, ref, dtype, seed, data):
    rng = np.random.default_rng(seed)
    q, k, v, keep, bias = attention_case(rng, data, dtype)
    scale = float(1.0 / np.sqrt(q.shape[-1]))
    with uses_kernels(nb, "masked_softmax", "softmax_backward"):
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
    q, k, v, keep, bias = attention_case(rng, data, dtype)
    pdrop = data.draw(st.sampled_from([0.1, 0.5, 1.0]))
    with uses_kernels(nb, "masked_softmax"):
        out, p, drop = nb.attention(q, k, v, keep, bias, 0.5, pdrop)
    _, p_r, _ = ref64(ref.attention, q, k, v, keep, bias, 0.5, 0.0)
    close(p, p_r)
    assert drop.shape == p.shape and drop.dtype == p.dtype
    keep_value = 0.0 if pdrop == 1.0 else dtype(1.0 / (1.0 - pdrop))
    assert np.all((drop == 0) | (drop == keep_value))
    close(out, as32(np.matmul(as64(p_r) * drop, as64(v))) if dtype == np.float32
          else np.matmul(p_r * drop, v))
    g = randn(rng, out.shape, dtype)
    with uses_kernels(nb, "softmax_backward"):
        for got, want in zip(nb.attention_backward(g, q, k, v, p, drop, 0.5),
                             ref64(ref.attention_backward, g, q, k, v, p, drop, 0.5)):
            close(got, want)


# ---------------------------------------------------------------------------- cross-entropy


@given(n=st.integers(1, 9) | st.integers(60, 150), c=st.integers(1, 11) | st.integers(12, 40),
       dtype=DTYPES, seed=SEEDS, offset=st.sampled_from([0.0, 1e4]),
       smoothing=st.sampled_from([0.0, 0.1, 1.0]), weighted=st.booleans(),
       ignore=st.sampled_from([-100, 0]), scalar_g=st.booleans())
def test_cross_entropy_forward_backward(nb, ref, n, c, dtype, seed, offset, smoothing, weighted,
                                        ignore, scalar_g):
    rng = np.random.default_rng(seed)
    z = randn(rng, (n, c), dtype, 3.0) + dtype(offset)
    t = rng.integers(0, c, n)
    t[rng.random(n) < 0.3] = ignore
    w = rng.uniform(0.1, 2.0, c).astype(dtype) if weighted else None
    with uses_kernels(nb, "cross_entropy", "cross_entropy_backward"):
        got = nb.cross_entropy(z, t, ignore, smoothing, w)
        want = ref64(ref.cross_entropy, z, t, ignore, smoothing, w)
        assert np.isfinite(want[0]).all()
        for a, b in zip(got, want):
            close(a, b)
        logp = want[2]
        g_row = np.broadcast_to(dtype(0.7), (n,)) if scalar_g else randn(rng, (n,), dtype)
        close(nb.cross_entropy_backward(logp, t, g_row, ignore, smoothing, w),
              ref64(ref.cross_entropy_backward, logp, t, g_row, ignore, smoothing, w))


def test_cross_entropy_bad_target_raises_like_the_reference(nb):
    z = np.zeros((3, 4))
    with uses_kernels(nb, "cross_entropy"), pytest.raises(IndexError):
        nb.cross_entropy(z, np.array([0, 4, 1]), -100, 0.0, None)


def test_functional_cross_entropy_on_both_backends():
    import minilm.functional as F

    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 5, 3))  # (N, C, d): classes on dim 1
    t = rng.integers(0, 5, (2, 3))
    t[0, 1] = -100
    results = []
    for name in ("numpy", "numba"):
        with uses_kernels(ml.use_backend(name), "cross_entropy", "cross_entropy_backward"):
            x = ml.tensor(z, requires_grad=True)
            loss = F.cross_entropy(x, ml.tensor(t), label_smoothing=0.1)
            loss.backward()
        results.append((loss.item(), x.grad.numpy()))
    close(results[1][0], results[0][0])
    close(results[1][1], results[0][1])


# ---------------------------------------------------------------------------- normalisation


@given(shape=shapes() | st.tuples(st.integers(65, 200), st.integers(1, 20)), dtype=DTYPES,
       seed=SEEDS, affine=st.sampled_from(["none", "w", "wb"]), need=st.booleans())
def test_layer_norm_and_rms_norm(nb, ref, shape, dtype, seed, affine, need):
    """Also with more rows (65..200) than the backward kernel's 64 chunks."""
    rng = np.random.default_rng(seed)
    C = shape[-1]
    x = randn(rng, shape, dtype) + dtype(rng.standard_normal())
    g = randn(rng, shape, dtype)
    w = randn(rng, (C,), dtype) if affine != "none" else None
    b = randn(rng, (C,), dtype) if affine == "wb" else None
    with uses_kernels(nb, "norm", "norm_backward") as calls:
        y, mean, rstd = ref64(ref.layer_norm, x, w, b, 1e-5)
        for got, want in zip(nb.layer_norm(x, w, b, 1e-5), (y, mean, rstd)):
            close(got, want)
        for got, want in zip(nb.layer_norm_backward(g, x, w, mean, rstd, need),
                             ref64(ref.layer_norm_backward, g, x, w, mean, rstd, need)):
            close(got, want, rtol=rtol_of(dtype) * (1 + np.sqrt(x.size / C)))  # column sums
        y, rstd = ref64(ref.rms_norm, x, w, 1e-6)
        for got, want in zip(nb.rms_norm(x, w, 1e-6), (y, rstd)):
            close(got, want)
        for got, want in zip(nb.rms_norm_backward(g, x, w, rstd, need),
                             ref64(ref.rms_norm_backward, g, x, w, rstd, need)):
            close(got, want, rtol=rtol_of(dtype) * (1 + np.sqrt(x.size / C)))
    assert calls["norm"] == 2 and calls["norm_backward"] == 2


def test_norm_weight_gradient_over_many_rows(nb, ref):
    """More rows than the kernel has partial-sum chunks (64)."""
    rng = np.random.default_rng(1)
    x, g, w = rng.standard_normal((300, 5)), rng.standard_normal((300, 5)), rng.random(5)
    _, mean, rstd = ref.layer_norm(x, w, None, 1e-5)
    with uses_kernels(nb, "norm_backward"):
        for got, want in zip(nb.layer_norm_backward(g, x, w, mean, rstd),
                             ref.layer_norm_backward(g, x, w, mean, rstd)):
            close(got, want)


@pytest.mark.parametrize("offset", [1e3, -1e4])
def test_float32_norm_accumulates_in_float64(nb, offset):
    """The module's promise: row reductions accumulate in float64. A float32 layer norm
    of rows near ``offset`` is then as accurate as float32 can hold the result (the
    NumPy reference, summing in float32, is off by ~C eps |offset| / std)."""
    rng = np.random.default_rng(4)
    C = 37
    x = (rng.standard_normal((130, C)) + offset).astype(np.float32)
    x64 = x.astype(np.float64)
    mu = x64.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((x64 - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
    with uses_kernels(nb, "norm"):
        y, mean, rs = nb.layer_norm(x, None, None, 1e-5)
    np.testing.assert_allclose(y, (x64 - mu) * rstd, rtol=0, atol=2e-6)
    np.testing.assert_allclose(mean, mu, rtol=1e-7)
    np.testing.assert_allclose(rs, rstd, rtol=1e-6)


# ---------------------------------------------------------------------------- activations


_K = math.sqrt(2 / math.pi)


def np_gelu(h, approximate):
    """x Phi(x) (math.erf), or 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    if approximate == "tanh":
        return 0.5 * h * (1 + np.tanh(_K * (h + 0.044715 * h ** 3)))
    return h * 0.5 * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))


def np_gelu_grad(h, approximate):
    """Phi(x) + x phi(x), or 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 0.044715 x^2)."""
    if approximate == "tanh":
        t = np.tanh(_K * (h + 0.044715 * h ** 3))
        return 0.5 * (1 + t) + 0.5 * h * (1 - t * t) * _K * (1 + 3 * 0.044715 * h * h)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))
    return cdf + h * np.exp(-0.5 * h * h) / math.sqrt(2 * math.pi)


@given(shape=shapes(0, 3), dtype=DTYPES, seed=SEEDS, approximate=st.sampled_from(["none", "tanh"]))
def test_gelu_and_erf(nb, shape, dtype, seed, approximate):
    """Against the formulas above, evaluated in float64 on the same inputs (float32
    kernels: to 1e-5 of max(1, |result|); the exact GELU in float32 uses a polynomial
    erf good to 1.5e-7, absolute)."""
    rng = np.random.default_rng(seed)
    x, g = randn(rng, shape, dtype), randn(rng, shape, dtype)
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    kernel = "gelu32" if dtype == np.float32 else "gelu64"
    with uses_kernels(nb, "erf"):
        close(nb.erf(x), np.vectorize(math.erf)(x64).astype(dtype))
    with uses_kernels(nb, kernel) as calls:
        close(nb.gelu(x, approximate), np_gelu(x64, approximate).astype(dtype))
        close(nb.gelu_backward(x, g, approximate),
              (g64 * np_gelu_grad(x64, approximate)).astype(dtype))
    assert calls[kernel] == 2


def test_gelu_large_array(nb):
    """1000 rows of 13: many threads' chunks."""
    rng = np.random.default_rng(2)
    x, g = rng.standard_normal((1000, 13)), rng.standard_normal((1000, 13))
    with uses_kernels(nb, "gelu64"):
        y = nb.gelu(x)
        dx = nb.gelu_backward(x, g)
    close(y, np_gelu(x, "none"))
    close(dx, g * np_gelu_grad(x, "none"))


# ---------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_mask_statistics(nb, dtype, p):
    n = 200_000
    with uses_kernels(nb, "dropout"):
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
    with uses_kernels(nb, "dropout"):
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

    with uses_kernels(ml.use_backend("numba"), "dropout"):
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
    with uses_kernels(nb, "embedding_backward"):
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
        with uses_kernels(be, *(("sgd",) if be is nb else ())):
            for step in range(3):
                g = randn(np.random.default_rng(seed + step), shape, dtype)
                be.sgd_step(p, g, buf, 0.1, momentum, dampening, weight_decay, nesterov,
                            maximize, init_buf=step == 0)
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
        with uses_kernels(be, *(("adam",) if be is nb else ())):
            for step in range(1, 4):
                g = randn(np.random.default_rng(seed + step), shape, dtype)
                be.adam_step(p, g, m, v, step, 1e-2, 0.9, 0.999, 1e-8, weight_decay, decoupled,
                             vmax, maximize)
        states[name] = (p, m, v, vmax)
    for got, want in zip(states["numba"], states["numpy"]):
        close(got, want)


def test_optimizer_falls_back_for_non_contiguous_params(nb, ref):
    """A Fortran-ordered parameter is not the kernel's case (it updates flat C-ordered
    views in place): the reference updates it, in place, and the kernel is not called."""
    base = np.arange(12.0).reshape(3, 4)
    p, p_r = base.copy().T, base.copy().T
    g = np.ones((4, 3))
    with uses_kernels(nb) as calls:
        nb.sgd_step(p, g, None, 0.5)
        nb.adam_step(p, g, np.zeros_like(p), np.zeros_like(p), 1, 0.1, 0.9, 0.999, 1e-8)
    ref.sgd_step(p_r, g, None, 0.5)
    ref.adam_step(p_r, g, np.zeros_like(p_r), np.zeros_like(p_r), 1, 0.1, 0.9, 0.999, 1e-8)
    assert not calls
    np.testing.assert_array_equal(p, p_r)
    assert not np.array_equal(p, base.T)


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
        # causal attention over 11 positions: the flash kernels where the backend
        # takes them that short (one thread), else the fused masked softmax
        be = ml.use_backend(name)
        flash = name == "numba" and (be.flash_min_len or 10**9) <= 11
        attn = ("flash_forward", "flash_backward") if flash else ("masked_softmax",
                                                                   "softmax_backward")
        with uses_kernels(be, *attn, "norm",
                          "norm_backward", "cross_entropy", "cross_entropy_backward",
                          "embedding_backward", "adam"):
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
        with uses_kernels(nb, "softmax"):
            close(nb.softmax(x, -1), ref.softmax(x, -1))
        blas = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        assert blas, "threadpoolctl sees no BLAS library in this process"
        assert all(info["num_threads"] == 1 for info in blas)
        with pytest.raises(ValueError, match="at least 1"):
            ml.set_num_threads(0)
    finally:
        ml.set_num_threads(before)
    assert numba.get_num_threads() == before


def test_default_backend_is_numba_unless_minilm_backend_says(monkeypatch):
    monkeypatch.delenv("MINILM_BACKEND", raising=False)
    assert _default_backend_name() == ("numba", "the default: Numba imports")
    monkeypatch.setenv("MINILM_BACKEND", "numpy")
    assert _default_backend_name() == ("numpy", "MINILM_BACKEND=numpy")


def test_without_numba_the_reference_runs_and_says_why(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_numba(name, *args, **kwargs):
        if name == "numba" or name.startswith("numba."):
            raise ImportError("No module named 'numba'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delenv("MINILM_BACKEND", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_numba)
    name, why = _default_backend_name()
    assert name == "numpy"
    assert "numba, does not import" in why and "No module named 'numba'" in why


def test_info_names_the_backend_and_why(capsys, monkeypatch):
    from minilm.cli import main as cli

    ml.use_backend("numba")
    assert cli(["info"]) == 0
    out = capsys.readouterr().out
    assert "current backend: numba (chosen with use_backend('numba')" in out
    assert "threads:" in out


def test_every_kernel_has_a_reference_and_every_override_is_declared(nb):
    """The backend interface (minilm/backends/interface.py) names each overridable
    kernel; each has a reference registered with ``@kernel`` next to its algorithm, and
    the Numba backend's public methods are all such kernels (a misspelt override would
    silently never run)."""
    from minilm.backends.interface import KERNELS, REFERENCES
    from minilm.backends.numba_backend import NumbaBackend

    assert set(REFERENCES) == set(KERNELS)
    overrides = {n for n, v in vars(NumbaBackend).items()
                 if callable(v) and not n.startswith("_")}
    assert overrides and overrides <= set(KERNELS), sorted(overrides - set(KERNELS))

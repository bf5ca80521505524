"""The CuPy backend's CUDA kernels, checked on a machine without a GPU.

1. NVRTC (NVIDIA's runtime compiler, the one CuPy uses; the ``nvidia-cuda-nvrtc-cu12``
   wheel) compiles the whole source for every instantiation: a syntax or type error in
   a kernel fails here, not on the first GPU run.
2. The same source, compiled for the CPU and run thread for thread (tests/cuda_emu.py),
   behind the CuPy backend's own Python (``CupyBackend(xp=numpy, kernels=emulation)``),
   equals the reference kernels, forward and backward, on Hypothesis-drawn shapes. The
   reference runs on a ``CupyBackend(xp=numpy)`` without kernels: the same generator,
   so dropout masks are compared exactly.

The same comparisons on a real device are in tests/gpu/ (the ``gpu`` marker).
"""

from __future__ import annotations

import ctypes
import glob
import os
import re
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minilm as ml
from minilm.backends._cuda_kernels import kernel_signatures, row_threads
from minilm.backends._cuda_source import CUDA_SOURCE
from minilm.backends.cupy_backend import CupyBackend

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True)
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
DTYPES = st.sampled_from([np.float32, np.float64])


# =============================================================================== NVRTC
def _nvrtc():
    """libnvrtc from the nvidia-cuda-nvrtc-cu12 wheel, or None."""
    try:
        import nvidia.cuda_nvrtc as pkg
    except ImportError:
        return None
    for root in pkg.__path__:
        for path in sorted(glob.glob(os.path.join(root, "lib", "libnvrtc.so*"))):
            if "builtins" not in path and ".alt." not in path:
                return ctypes.CDLL(path)
    return None


def nvrtc_compile(source: str, names: list, options: list) -> tuple:
    """(status, log) of compiling ``source`` with NVRTC, instantiating ``names``."""
    lib = _nvrtc()
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"minilm.cu", 0,
                                  None, None) == 0
    try:
        for name in names:
            assert lib.nvrtcAddNameExpression(prog, name.encode()) == 0
        opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
        status = lib.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        return status, log.value.decode(errors="replace")
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


needs_nvrtc = pytest.mark.skipif(_nvrtc() is None, reason="nvidia-cuda-nvrtc-cu12 not installed")
INSTANCES = [f"{k}<{t}>" for k in kernel_signatures() for t in ("float", "double")]


@needs_nvrtc
@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
def test_nvrtc_compiles_every_kernel(arch):
    status, log = nvrtc_compile(CUDA_SOURCE, INSTANCES, [f"--gpu-architecture={arch}",
                                                         "--std=c++14"])
    assert status == 0, log
    assert "warning" not in log.lower(), log


@needs_nvrtc
def test_nvrtc_check_can_fail():
    """The compile check would catch a typo in a kernel."""
    broken = CUDA_SOURCE.replace("exp(xr[j] - m) / s", "expp(xr[j] - m) / s")
    status, log = nvrtc_compile(broken, INSTANCES, ["--gpu-architecture=compute_80"])
    assert status != 0 and "expp" in log


def test_signatures_cover_every_kernel():
    found = set(re.findall(r"__global__\s+void\s+(\w+)", CUDA_SOURCE))
    assert found == set(kernel_signatures()) and len(found) == 15


# =========================================================================== emulation
@pytest.fixture(scope="module")
def pair():
    if shutil.which("g++") is None:
        pytest.skip("g++ is needed to run the CUDA kernels on the CPU")
    from cuda_emu import EmuLauncher

    return CupyBackend(xp=np, kernels=EmuLauncher()), CupyBackend(xp=np)


def close(a, b, dtype):
    np.testing.assert_allclose(a, b, **TOL[dtype])


def data(seed, shape, dtype, scale=3.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


ROWS = st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 300))


@SETTINGS
@given(shape=ROWS, dtype=DTYPES, seed=st.integers(0, 99))
def test_softmax_family(pair, shape, dtype, seed):
    fused, ref = pair
    x = data(seed, shape, dtype)
    if shape[-1] > 1:
        x[0, 0, 0] = -np.inf
    g = data(seed + 1, shape, dtype)
    for fwd, bwd in (("softmax", "softmax_backward"), ("log_softmax", "log_softmax_backward")):
        y = getattr(fused, fwd)(x, -1)
        y_ref = getattr(ref, fwd)(x, -1)
        close(y, y_ref, dtype)
        if fwd == "log_softmax":
            x2 = np.where(np.isinf(x), 0, x).astype(dtype)  # finite logp for the backward
            y, y_ref = fused.log_softmax(x2, -1), ref.log_softmax(x2, -1)
        close(getattr(fused, bwd)(y, g, -1), getattr(ref, bwd)(y_ref, g, -1), dtype)
    assert fused.kernels.launches[-1][3] == row_threads(shape[-1])


def test_block_sizes_cover_several_warps(pair):
    fused, ref = pair
    x = data(0, (3, 1000), np.float64)
    close(fused.softmax(x, -1), ref.softmax(x, -1), np.float64)
    assert fused.kernels.launches[-1][3] == 256  # 8 warps combined by block_reduce


@SETTINGS
@given(b=st.integers(1, 2), h=st.integers(1, 2), lq=st.integers(1, 5), lk=st.integers(1, 70),
       e=st.integers(1, 6), dtype=DTYPES, seed=st.integers(0, 99), p=st.sampled_from([0.0, 0.3]),
       mask=st.sampled_from(["none", "padding", "causal", "bias"]))
def test_attention_forward_backward(pair, b, h, lq, lk, e, dtype, seed, p, mask):
    fused, ref = pair
    q, k, v = (data(seed + i, (b, h, n, e), dtype, 1.0) for i, n in enumerate((lq, lk, lk)))
    keep = bias = None
    if mask == "padding":
        keep = np.random.default_rng(seed).random((b, 1, 1, lk)) < 0.7
        keep[0, 0, 0, :] = False  # a batch row with nothing kept: zeros, not NaN
    elif mask == "causal":
        keep = np.tril(np.ones((lq, lk), bool), k=lk - lq)
    elif mask == "bias":
        bias = data(seed + 5, (1, h, lq, lk), dtype, 1.0)
    fused.seed(seed)
    ref.seed(seed)
    out, P, drop = fused.attention(q, k, v, keep, bias, 0.5, p)
    out_r, P_r, drop_r = ref.attention(q, k, v, keep, bias, 0.5, p)
    close(P, P_r, dtype)
    close(out, out_r, dtype)
    if p:
        np.testing.assert_array_equal(drop, drop_r)  # the same generator, the same mask
    else:
        assert drop is None and drop_r is None
    g = data(seed + 9, out.shape, dtype, 1.0)
    for a, r in zip(fused.attention_backward(g, q, k, v, P, drop, 0.5),
                    ref.attention_backward(g, q, k, v, P_r, drop_r, 0.5), strict=True):
        close(a, r, dtype)


@SETTINGS
@given(shape=ROWS, dtype=DTYPES, seed=st.integers(0, 99), affine=st.sampled_from(["wb", "w", ""]),
       need=st.booleans())
def test_norms_forward_backward(pair, shape, dtype, seed, affine, need):
    fused, ref = pair
    x = data(seed, shape, dtype) + 1.0
    C = shape[-1]
    w = data(seed + 1, (C,), dtype) if "w" in affine else None
    b = data(seed + 2, (C,), dtype) if "b" in affine else None
    gy = data(seed + 3, shape, dtype)
    outs, refs = fused.layer_norm(x, w, b, 1e-5), ref.layer_norm(x, w, b, 1e-5)
    for a, r in zip(outs, refs, strict=True):
        close(a, r, dtype)
    y, mean, rstd = refs
    for a, r in zip(fused.layer_norm_backward(gy, x, w, mean, rstd, need),
                    ref.layer_norm_backward(gy, x, w, mean, rstd, need), strict=True):
        assert (a is None) == (r is None) == (not need and r is None)
        if r is not None:
            close(a, r, dtype)
    (y, rstd), (y_r, rstd_r) = fused.rms_norm(x, w, 1e-6), ref.rms_norm(x, w, 1e-6)
    close(y, y_r, dtype)
    close(rstd, rstd_r, dtype)
    for a, r in zip(fused.rms_norm_backward(gy, x, w, rstd_r, need),
                    ref.rms_norm_backward(gy, x, w, rstd_r, need), strict=True):
        if r is None:
            assert a is None
        else:
            close(a, r, dtype)


def test_norm_column_sums_over_many_chunks(pair):
    """Enough rows for several row chunks of the dw/db partial sums."""
    fused, ref = pair
    x, gy = data(1, (700, 5), np.float64), data(2, (700, 5), np.float64)  # 44 chunks of 16
    w = data(3, (5,), np.float64)
    y, mean, rstd = ref.layer_norm(x, w, None, 1e-5)
    for a, r in zip(fused.layer_norm_backward(gy, x, w, mean, rstd),
                    ref.layer_norm_backward(gy, x, w, mean, rstd), strict=True):
        close(a, r, np.float64)


@SETTINGS
@given(n=st.integers(1, 600), dtype=DTYPES, seed=st.integers(0, 99),
       approximate=st.sampled_from(["none", "tanh"]))
def test_gelu_and_erf(pair, n, dtype, seed, approximate):
    """CUDA's erf is exact to an ulp or two where the float32 reference uses a 1.5e-7
    polynomial: float32 results are checked against the float64 reference."""
    fused, ref = pair
    x, gy = data(seed, (n,), dtype), data(seed + 1, (n,), dtype)
    x64, gy64 = x.astype(np.float64), gy.astype(np.float64)
    # float32: 1 + t cancels near t = -1 (a few ulps of 1.0, times |gy| up to ~10)
    tol = TOL[dtype] if dtype == np.float64 else dict(rtol=1e-5, atol=5e-6)
    np.testing.assert_allclose(fused.gelu(x, approximate), ref.gelu(x64, approximate), **tol)
    np.testing.assert_allclose(fused.gelu_backward(x, gy, approximate),
                               ref.gelu_backward(x64, gy64, approximate), **tol)
    np.testing.assert_allclose(fused.erf(x), ref.erf(x64), **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_masks_equal_the_reference(pair, dtype):
    fused, ref = pair
    fused.seed(7)
    ref.seed(7)
    for shape, p in (((3, 50), 0.25), ((1000,), 0.5), ((2, 2, 2), 0.9)):
        m, m_ref = fused.dropout_mask(shape, p, dtype), ref.dropout_mask(shape, p, dtype)
        np.testing.assert_array_equal(m, m_ref)
        assert m.dtype == dtype and set(np.unique(m)) <= {0, dtype(1 / (1 - p))}
    assert fused.rng.counter == ref.rng.counter == 150 + 1000 + 8
    big = fused.dropout_mask((100_000,), 0.3, dtype)
    assert abs((big == 0).mean() - 0.3) < 0.01


@SETTINGS
@given(n=st.integers(1, 40), V=st.integers(1, 9), D=st.integers(1, 300), dtype=DTYPES,
       seed=st.integers(0, 99))
def test_embedding_backward(pair, n, V, D, dtype, seed):
    fused, ref = pair
    ids = np.random.default_rng(seed).integers(0, V, (n,))
    gy = data(seed, (n, D), dtype)
    close(fused.embedding_backward(ids, gy, V), ref.embedding_backward(ids, gy, V), dtype)


def test_embedding_backward_skips_ids_outside_the_table(pair):
    """The forward refuses such ids; the kernel, which does not wait for the device to
    report them, never writes outside dE."""
    dE = pair[0].embedding_backward(np.array([0, 4, 1, -1]), np.ones((4, 2)), 4)
    np.testing.assert_array_equal(dE, [[1, 1], [1, 1], [0, 0], [0, 0]])


@SETTINGS
@given(N=st.integers(1, 6), C=st.integers(1, 300), dtype=DTYPES, seed=st.integers(0, 99),
       eps=st.sampled_from([0.0, 0.1]), weighted=st.booleans())
def test_cross_entropy(pair, N, C, dtype, seed, eps, weighted):
    fused, ref = pair
    rng = np.random.default_rng(seed)
    z = data(seed, (N, C), dtype)
    t = rng.integers(0, C, N)
    t[0] = -100  # ignored
    w = rng.random(C).astype(dtype) + 0.5 if weighted else None
    outs = fused.cross_entropy(z, t, -100, eps, w)
    refs = ref.cross_entropy(z, t, -100, eps, w)
    for a, r in zip(outs, refs, strict=True):
        close(a, r, dtype)
    g_row = data(seed + 1, (N,), dtype)
    logp = refs[2]
    close(fused.cross_entropy_backward(logp, t, g_row, -100, eps, w),
          ref.cross_entropy_backward(logp, t, g_row, -100, eps, w), dtype)


def test_cross_entropy_bad_target(pair):
    with pytest.raises(IndexError, match="target 5 is out of bounds for 3 classes"):
        pair[0].cross_entropy(np.zeros((2, 3)), np.array([1, 5]), -100, 0.0, None)


OPTIONS = st.fixed_dictionaries({
    "momentum": st.sampled_from([0.0, 0.9]), "dampening": st.sampled_from([0.0, 0.1]),
    "weight_decay": st.sampled_from([0.0, 0.01]), "nesterov": st.booleans(),
    "maximize": st.booleans(), "init_buf": st.booleans()})


@SETTINGS
@given(n=st.integers(1, 700), dtype=DTYPES, seed=st.integers(0, 99), opts=OPTIONS)
def test_sgd_step(pair, n, dtype, seed, opts):
    fused, ref = pair
    if opts["nesterov"] and (opts["momentum"] == 0 or opts["dampening"]):
        opts["nesterov"] = False
    p, g, buf = (data(seed + i, (n,), dtype) for i in range(3))
    p2, buf2 = p.copy(), buf.copy()
    fused.sgd_step(p, g, buf, 0.1, **opts)
    ref.sgd_step(p2, g, buf2, 0.1, **opts)
    close(p, p2, dtype)
    close(buf, buf2, dtype)


@SETTINGS
@given(n=st.integers(1, 700), dtype=DTYPES, seed=st.integers(0, 99), step=st.integers(1, 5),
       wd=st.sampled_from([0.0, 0.1]), decoupled=st.booleans(), ams=st.booleans(),
       maximize=st.booleans())
def test_adam_step(pair, n, dtype, seed, step, wd, decoupled, ams, maximize):
    fused, ref = pair
    p, g, m = (data(seed + i, (n,), dtype) for i in range(3))
    v = np.abs(data(seed + 3, (n,), dtype))
    vmax = np.abs(data(seed + 4, (n,), dtype)) if ams else None
    state = [a.copy() if a is not None else None for a in (p, m, v, vmax)]
    fused.adam_step(p, g, m, v, step, 1e-2, 0.9, 0.999, 1e-8, wd, decoupled, vmax, maximize)
    ref.adam_step(state[0], g, state[1], state[2], step, 1e-2, 0.9, 0.999, 1e-8, wd, decoupled,
                  state[3], maximize)
    for a, r in zip((p, m, v, vmax), state, strict=True):
        if r is not None:
            close(a, r, dtype)


def test_launcher_refuses_wrong_arrays(pair):
    fused = pair[0]
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(TypeError, match="y must be a C-contiguous float32 array, got float64"):
        fused.kernels("softmax_fwd", np.float32, 2, 32, x, np.zeros((2, 3)), 2, 3, 0)
    with pytest.raises(TypeError, match="takes 5 arguments, got 4"):
        fused.kernels("softmax_fwd", np.float32, 2, 32, x, x, 2, 3)
    with pytest.raises(TypeError, match="no instantiation for float16"):
        fused.kernels("softmax_fwd", np.float16, 2, 32, x, x, 2, 3, 0)


def test_emulation_catches_a_broken_reduction(pair):
    """The check can fail: with the block reduction combining only the first warp's
    value, a softmax over rows that take several warps no longer equals the reference."""
    from cuda_emu import EmuLauncher, build_library

    broken = CUDA_SOURCE.replace("v = lane < nwarps ? shared[lane] : none;",
                                 "v = lane < 1 ? shared[lane] : none;")
    assert broken != CUDA_SOURCE
    fused = CupyBackend(xp=np, kernels=EmuLauncher(build_library(cuda_source=broken)))
    x = data(0, (2, 300), np.float64)
    assert not np.allclose(fused.softmax(x, -1), CupyBackend(xp=np).softmax(x, -1))


def test_unfused_cases_fall_back_to_the_reference(pair):
    """float16, a softmax over another dim, mixed dtypes: the reference runs."""
    fused, ref = pair
    fused.kernels.launches.clear()
    x = data(0, (3, 4), np.float16)
    np.testing.assert_array_equal(fused.softmax(x, -1), ref.softmax(x, -1))
    y = data(0, (3, 4), np.float32)
    np.testing.assert_array_equal(fused.softmax(y, 0), ref.softmax(y, 0))
    assert fused.kernels.launches == []


# ====================================================================== a whole model
@pytest.fixture
def emulated_backend(pair):
    """The CuPy backend's Python and kernels (emulated) as the CPU backend, so a whole
    model runs through them; the registry and the selected backend are restored after."""
    from minilm import backends

    before = backends.current_backend().name
    backends.register_backend("cuda_emu", lambda: pair[0])
    backends.register_backend("cuda_ref", lambda: pair[1])
    yield pair
    backends.use_backend(before)
    for name in ("cuda_emu", "cuda_ref"):
        backends._FACTORIES.pop(name, None)
        backends._INSTANCES.pop(name, None)


def _gpt_step(backend_name, dropout, dtype):
    """Loss, gradients and the weights after two AdamW steps of a tiny GPT."""
    from minilm.nn import GPT, GPTConfig

    ml.use_backend(backend_name)
    ml.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, context_length=16, n_layers=1, n_heads=2,
                          d_model=64, dropout=dropout))
    model = model.double() if dtype == np.float64 else model
    opt = ml.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    ids = ml.tensor(np.random.default_rng(1).integers(0, 40, (2, 8)))
    losses, grads = [], None
    for _ in range(2):
        opt.zero_grad()
        _, loss = model(ids, ids)
        loss.backward()
        losses.append(loss.item())
        if grads is None:
            grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
        opt.step()
    return losses, grads, {n: p.numpy().copy() for n, p in model.named_parameters()}



def test_gpt_training_steps_through_the_emulated_kernels(emulated_backend):
    """Loss, every gradient and two AdamW steps of a GPT through the CUDA kernels equal
    the references, run by the kernel-less CuPy backend on the same generator (so the
    same initial weights and dropout masks)."""
    dtype, tol = np.float64, 1e-10  # float32: each kernel's own test above
    launches = emulated_backend[0].kernels.launches
    launches.clear()
    for dropout in (0.0, 0.2):
        got = _gpt_step("cuda_emu", dropout, dtype)
        want = _gpt_step("cuda_ref", dropout, dtype)
        np.testing.assert_allclose(got[0], want[0], rtol=tol)
        for part in (1, 2):
            for name in want[part]:
                np.testing.assert_allclose(got[part][name], want[part][name], rtol=tol,
                                           atol=tol, err_msg=name)
    used = {name for name, *_ in launches}
    assert {"norm_fwd", "norm_bwd", "norm_wb_partial", "gelu_fwd", "gelu_bwd", "xent_fwd",
            "xent_bwd", "embedding_bwd", "adam_update", "masked_softmax",
            "softmax_bwd"} <= used, used

"""Planted bugs in the ops: the Numba kernels (blocked row reductions, chunked weight
gradients, column blocks, float32 arithmetic, dispatch), the NumPy reference kernels
and the autograd glue of the elementwise ops. Each is one realistic slip; the tests
named are those expected to fail (see tests/mutate.py).

Several are only visible on shapes past the kernels' blocking (rows of 8 or more, more
than 64 rows, embedding dims past 16), at large magnitudes, in float32, on read-only
or strided inputs, or on the Numba backend at op level: what the op tests draw since
they run on every backend (tests/conftest.py) with tests/strategies.py.
"""

from tests.mutations import Mutation

_K = "minilm/backends/_numba_kernels.py"
_KU = "minilm/backends/_numba_update_kernels.py"
_NB = "minilm/backends/numba_backend.py"
_GELU = "minilm/functional/gelu_kernel.py"
_NN = "minilm/functional/nn.py"
_NORM = "minilm/functional/normalization.py"

_LANES = "tests/test_nn_ops.py::test_softmax_family_row_max_in_every_lane"
_SOFTMAX_BIG = "tests/test_nn_ops.py::test_softmax_family_kernel_sizes_and_large_magnitudes"
_CE_BIG = "tests/test_losses.py::test_cross_entropy_kernel_sizes_and_large_logits"
_NORM_BIG = "tests/test_nn_ops.py::test_norm_kernel_sizes_and_large_offsets"
_ATT_BIG = "tests/test_nn_ops.py::test_attention_kernel_sizes_and_large_scores"
_GELU_BIG = "tests/test_math_ops.py::test_gelu_kernel_sizes_and_wide_range"
_NBT = "tests/test_numba_backend.py::"

MUTATIONS = [
    # ------------------------------------------------------------------ Numba kernels
    Mutation(
        name="numba: the row max skips lane 7 of its 8 interleaved maxima (rows of 8+; "
             "softmax / cross-entropy overflow when the skipped entry is the max by far)",
        file=_K,
        old="        m7 = a[i + 7] if a[i + 7] > m7 else m7\n",
        new="        m7 = a[i + 6] if a[i + 6] > m7 else m7\n",
        tests=[f"{_LANES}[numba-16-float64-softmax]", f"{_LANES}[numba-9-float32-log_softmax]",
               "tests/test_losses.py::test_cross_entropy_logit_max_in_every_lane[numba-23-float64]",
               f"{_SOFTMAX_BIG}[numba-softmax]"],
    ),
    Mutation(
        name="numba: the row sum adds lane 6 twice and lane 7 never (rows of 8+ only)",
        file=_K,
        old="        s7 += a[i + 7]\n",
        new="        s7 += a[i + 6]\n",
        tests=[f"{_SOFTMAX_BIG}[numba-softmax]", f"{_NORM_BIG}[numba-layer_norm]",
               f"{_CE_BIG}[numba]"],
    ),
    Mutation(
        name="numba: softmax shifts each row by its first entry, not its max (exact in "
             "arithmetic, overflows when a row spans more than ~88 in float32)",
        file=_K,
        old="        m = _max(xr)\n",
        new="        m = xr[0]\n",
        tests=[f"{_LANES}[numba-8-float32-softmax]", f"{_LANES}[numba-8-float64-log_softmax]",
               f"{_SOFTMAX_BIG}[numba-softmax]", f"{_SOFTMAX_BIG}[numba-log_softmax]"],
    ),
    Mutation(
        name="numba: norm backward chunk bounds use R // nchunks (rows past 64 * (R // 64) "
             "get no dx and add nothing to dw, db)",
        file=_K,
        old="        for r in range(c * R // nchunks, (c + 1) * R // nchunks):\n",
        new="        for r in range(c * (R // nchunks), (c + 1) * (R // nchunks)):\n",
        tests=[f"{_NORM_BIG}[numba-layer_norm]", f"{_NORM_BIG}[numba-rms_norm]",
               f"{_NBT}test_norm_weight_gradient_over_many_rows"],
    ),
    Mutation(
        name="numba: embedding backward rounds the number of column blocks down (the "
             "last partial block of a dim past 16 gets no gradient)",
        file=_KU,
        old="    for k in prange((D + block - 1) // block):\n",
        new="    for k in prange(max(1, D // block)):\n",
        tests=["tests/test_nn_ops.py::test_embedding[numba]", f"{_NBT}test_embedding_backward"],
    ),
    Mutation(
        name="numba: a digit typo in 1/sqrt(2 pi) in the float32 exact-GELU derivative",
        file=_K,
        old="f(-0.5) * v * v) * f(_INV_SQRT_2PI))",
        new="f(-0.5) * v * v) * f(0.39794228))",
        tests=[f"{_GELU_BIG}[numba]", "tests/test_math_ops.py::test_unary[numba-gelu]",
               f"{_NBT}test_gelu_and_erf"],
    ),
    Mutation(
        name="numba: the layer-norm row mean is accumulated in float32 (array.sum), not "
             "float64 as the backend promises",
        file=_K,
        old="        mu = 0.0 if rms else _sum(xr) / C\n",
        new="        mu = 0.0 if rms else xr.sum() / C\n",
        tests=[f"{_NBT}test_float32_norm_accumulates_in_float64[1000.0]",
               f"{_NBT}test_float32_norm_accumulates_in_float64[-10000.0]"],
    ),
    Mutation(
        name="numba: the masked-softmax kernel adds the bias before scaling the scores",
        file=_K,
        old="                sr[j] = sr[j] * scale + br[j]\n",
        new="                sr[j] = (sr[j] + br[j]) * scale\n",
        tests=[f"{_ATT_BIG}[numba]", f"{_NBT}test_attention_forward_backward"],
    ),
    Mutation(
        name="numba: softmax / log-softmax use the kernels only for dim=-1, and the ops "
             "pass dims normalised to ndim-1 (every F.softmax silently runs NumPy)",
        file=_NB,
        old="    return ndim >= 1 and dim in (-1, ndim - 1)\n",
        new="    return ndim >= 1 and dim == -1\n",
        tests=["tests/test_nn_ops.py::test_softmax_family[numba-softmax]",
               f"{_SOFTMAX_BIG}[numba-log_softmax]"],
    ),
    Mutation(
        name="numba: optimizer kernels take any array as contiguous (a Fortran-ordered "
             "parameter is updated in a flat copy, not in place)",
        file=_NB,
        old="and all(a.shape == first.shape and a.flags.c_contiguous for a in present))",
        new="and all(a.shape == first.shape for a in present))",
        tests=[f"{_NBT}test_optimizer_falls_back_for_non_contiguous_params"],
    ),
    # ------------------------------------------------------------------ NumPy reference
    Mutation(
        name="reference: the tanh-GELU constant is a NumPy float64 scalar, so float32 "
             "inputs give float64 results (NumPy 2 promotion)",
        file=_GELU,
        old="        k = math.sqrt(2.0 / math.pi)\n        return 0.5 * x * (1.0 + xp.tanh(",
        new="        k = xp.sqrt(2.0 / math.pi)\n        return 0.5 * x * (1.0 + xp.tanh(",
        tests=["tests/test_math_ops.py::test_unary[numpy-gelu_tanh]", f"{_GELU_BIG}[numpy]"],
    ),
    Mutation(
        name="reference: softmax backward writes into the incoming gradient (read-only "
             "or shared cotangents)",
        file=_NN,
        old="    return y * (gy - (gy * y).sum(axis=dim, keepdims=True))\n",
        new="    gy -= (gy * y).sum(axis=dim, keepdims=True)\n    return y * gy\n",
        tests=["tests/test_nn_ops.py::test_softmax_family[numpy-softmax]",
               f"{_SOFTMAX_BIG}[numpy-softmax]"],
    ),
    Mutation(
        name="reference: layer-norm bias gradient off by one part in 1e5",
        file=_NORM,
        old="        db = gy.sum(axis=lead)\n",
        new="        db = gy.sum(axis=lead) * (1 + 1e-5)\n",
        tests=["tests/test_nn_ops.py::test_layer_norm[numpy]", f"{_NORM_BIG}[numpy-layer_norm]"],
    ),
    # ------------------------------------------------------------------ autograd glue
    Mutation(
        name="elementwise backward: a broadcast dim of size 1 gets the mean of the "
             "gradient, not its sum",
        file="minilm/functional/_util.py",
        old="        g = g.sum(axis=axes, keepdims=True)\n",
        new="        g = g.mean(axis=axes, keepdims=True)\n",
        tests=["tests/test_math_ops.py::test_binary_broadcasting[numpy-add]",
               "tests/test_math_ops.py::test_binary_broadcasting[numba-mul]"],
    ),
]

"""Planted bugs in the CuPy backend's CUDA kernels (minilm/backends/_cuda_source.py),
which the CPU emulation of the kernels (tests/cuda_emu.py) must catch without a GPU:
a fully masked row, the mask itself, the norm backward, the cross-entropy gradient,
Adam's bias correction, and a block reduction that drops warps."""

from tests.mutations import Mutation

_K = "tests/test_cuda_kernels.py::"
SRC = "minilm/backends/_cuda_source.py"

MUTATIONS = [
    Mutation(
        name="cuda: block reduction keeps only the first warp's partial",
        file=SRC,
        old="v = lane < nwarps ? shared[lane] : none;",
        new="v = lane < 1 ? shared[lane] : none;",
        tests=[_K + "test_block_sizes_cover_several_warps"],
    ),
    Mutation(
        name="cuda: masked entries take part in the attention softmax",
        file=SRC,
        old="if (has_keep && !kr[j]) z = (T)(-INFINITY);",
        new="if (has_keep && !kr[j]) z = z;",
        tests=[_K + "test_attention_forward_backward"],
    ),
    Mutation(
        name="cuda: a fully masked row gives NaN instead of zeros",
        file=SRC,
        old="if (!isfinite(m)) m = 0;",
        new="",
        tests=[_K + "test_attention_forward_backward"],
    ),
    Mutation(
        name="cuda: norm backward drops the mean(g xh) term",
        file=SRC,
        old="sgx = block_reduce(sgx, red, 0) / (T)C;",
        new="sgx = (T)0 * block_reduce(sgx, red, 0);",
        tests=[_K + "test_norms_forward_backward"],
    ),
    Mutation(
        name="cuda: cross-entropy gradient misses the one-hot term",
        file=SRC,
        old="if (c == y) d = d - (T)(1.0 - eps) * wy;",
        new="",
        tests=[_K + "test_cross_entropy"],
    ),
    Mutation(
        name="cuda: Adam forgets the second-moment bias correction",
        file=SRC,
        old="const T denom = sqrt(vi) / sqrt_bc2 + eps;",
        new="const T denom = sqrt(vi) + eps;",
        tests=[_K + "test_adam_step"],
    ),
]

"""Planted bugs in compression (minilm/quant, the compressed-model file): the integer
grid, int4 packing, the int8 kernels, GPTQ's error feedback, the straight-through
estimator, pruning masks through optimizer steps, low-rank rank choice, saving."""

from tests.mutations import Mutation

_AFF = "tests/test_quant_affine.py::"
_LIN = "tests/test_quant_linear.py::"
_GPTQ = "tests/test_gptq.py::"
_QAT = "tests/test_qat.py::"
_PRUNE = "tests/test_prune.py::"
_LR = "tests/test_low_rank.py::"
_CLI = "tests/test_compress_cli.py::"

MUTATIONS = [
    Mutation(
        name="affine: values are clamped one short of qmax",
        file="minilm/quant/affine.py",
        old="return xp.clip(t, qmin, qmax).astype(np.int8)",
        new="return xp.clip(t, qmin, qmax - 1).astype(np.int8)",
        tests=[_AFF + "test_values_outside_the_range_clamp_to_its_ends"],
    ),
    Mutation(
        name="int4 pack: the two nibbles of a byte swapped",
        file="minilm/quant/affine.py",
        old="return (nib[..., 0::2] | (nib[..., 1::2] << 4)).astype(np.uint8)",
        new="return (nib[..., 1::2] | (nib[..., 0::2] << 4)).astype(np.uint8)",
        tests=[_AFF + "test_pack_layout_and_all_sixteen_values"],
    ),
    Mutation(
        name="numba int8 GEMM: products wrap in int8 instead of widening to int32",
        file="minilm/backends/_numba_quant_kernels.py",
        old="acc += np.int32(a[m, k]) * np.int32(b[n, k])",
        new="acc += np.int32(np.int8(a[m, k] * b[n, k]))",
        tests=[_LIN + "test_int8_matmul_all_extremes_and_refusals[numba]"],
    ),
    Mutation(
        name="GPTQ: the error feedback to the later columns of a block is dropped",
        file="minilm/quant/gptq.py",
        old="W1[:, k + 1:] -= np.outer(err, U1[k, k + 1:])",
        new="pass",
        tests=[_GPTQ + "test_blocked_equals_direct"],
    ),
    Mutation(
        name="QAT: the straight-through gradient is not masked outside the clip range",
        file="minilm/quant/qat.py",
        old="gx = gy * ctx.inside if ctx.needs_input_grad[0] else None",
        new="gx = gy if ctx.needs_input_grad[0] else None",
        tests=[_QAT + "test_ste_gradient_is_the_mask"],
    ),
    Mutation(
        name="pruning: masks zero the weights but not the optimizer moments",
        file="minilm/quant/prune.py",
        old="value[...] = xp.where(m, value, 0)",
        new="pass",
        tests=[_PRUNE + "test_masks_survive_adamw_steps_with_weight_decay"],
    ),
    Mutation(
        name="low rank: the energy rank is one too small",
        file="minilm/quant/low_rank.py",
        old="return int(np.argmax(ratio >= energy - 1e-12)) + 1",
        new="return max(int(np.argmax(ratio >= energy - 1e-12)), 1)",
        tests=["tests/test_low_rank.py"],
    ),
    Mutation(
        name="compressed file: an unset W8A8 input scale is not restored on load",
        file="minilm/train/compressed.py",
        old="m._buffers[buf] = Tensor(np.zeros_like(np.asarray(value)),\n"
            "                                     backend=model_backend(m))",
        new="pass",
        tests=[_CLI + "test_saved_compressed_model_reloads_bit_for_bit"],
    ),
]

"""Compression: affine quantization and its observers, quantized layers, LLM.int8,
GPTQ, quantization-aware training (docs/quantization.md).

Each method adds one ``from .x import ...`` line and one ``__all__ += [...]`` line.
"""

from .affine import (
    BITS,
    GRANULARITIES,
    QuantizedTensor,
    dequantize,
    fake_quantize,
    pack_int4,
    qparams_from_range,
    qrange,
    quantize,
    quantize_weight,
    unpack_int4,
)
from .gptq import (
    HessianAccumulator,
    gptq_quantize_layer,
    gptq_quantize_model,
    quantizable_linears,
    rtn_quantize_model,
)
from .linear import QuantizedLinear, W8A8Linear, calibrate, quantize_model
from .llm_int8 import LLMInt8Linear
from .low_rank import (
    LowRankLinear,
    choose_rank,
    factorize_linear,
    format_low_rank,
    low_rank_model,
)
from .observers import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
)
from .prune import (
    GradualPruner,
    PruningMasks,
    format_sparsity,
    magnitude_prune,
    prune_attention_heads,
    prune_mlp_neurons,
    select_linears,
    sparsity_report,
    zhu_gupta_sparsity,
)
from .qat import (
    ActQuantLinear,
    FakeQuantize,
    FakeQuantizeFunction,
    QATLinear,
    convert,
    fake_quantize_ste,
    prepare_qat,
)

__all__: list[str] = []
__all__ += ["BITS", "GRANULARITIES", "QuantizedTensor", "dequantize", "fake_quantize",
            "pack_int4", "qparams_from_range", "qrange", "quantize", "quantize_weight",
            "unpack_int4"]
__all__ += ["Observer", "MinMaxObserver", "MovingAverageMinMaxObserver", "PercentileObserver",
            "MSEObserver"]
__all__ += ["LowRankLinear", "choose_rank", "factorize_linear", "format_low_rank",
            "low_rank_model"]
__all__ += ["GradualPruner", "PruningMasks", "format_sparsity", "magnitude_prune",
            "prune_attention_heads", "prune_mlp_neurons", "select_linears",
            "sparsity_report", "zhu_gupta_sparsity"]
__all__ += ["QuantizedLinear", "W8A8Linear", "calibrate", "quantize_model", "LLMInt8Linear"]
__all__ += ["HessianAccumulator", "gptq_quantize_layer", "gptq_quantize_model",
            "quantizable_linears", "rtn_quantize_model"]
__all__ += ["ActQuantLinear", "FakeQuantize", "FakeQuantizeFunction", "QATLinear", "convert",
            "fake_quantize_ste", "prepare_qat"]

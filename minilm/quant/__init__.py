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
from .observers import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
)

__all__: list[str] = []
__all__ += ["BITS", "GRANULARITIES", "QuantizedTensor", "dequantize", "fake_quantize",
            "pack_int4", "qparams_from_range", "qrange", "quantize", "quantize_weight",
            "unpack_int4"]
__all__ += ["Observer", "MinMaxObserver", "MovingAverageMinMaxObserver", "PercentileObserver",
            "MSEObserver"]

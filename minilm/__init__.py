"""minilm: a from-scratch deep-learning framework for language models on NumPy.

    import minilm as ml
    import minilm.functional as F
    x = ml.randn(4, 8, requires_grad=True)
    w = ml.randn(8, 3, requires_grad=True)
    loss = F.cross_entropy(x @ w, ml.tensor([0, 2, 1, 2]))
    loss.backward()
"""

import numpy as _np

from .autograd import (
    Function,
    checkpoint,
    enable_grad,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
)
from .backends import (
    available_backends,
    current_backend,
    get_backend,
    manual_seed,
    register_backend,
    use_backend,
)
from .backends import get_num_threads, set_num_threads
from .tensor import Tensor
from .finite_diff import GradcheckError, gradcheck

from . import functional  # also binds Tensor's operators and op methods (x + y, x.sum())
from .creation import *  # noqa: F403
from .functional import (
    cat, chunk, einsum, matmul, maximum, minimum, split, stack, where,
)

from . import data, nn, optim, quant, train  # quant: registers its kernels' references
from . import cuda  # minilm.cuda: devices and memory (imports CuPy only when asked)

__version__ = "0.1.0"

float16 = half = _np.dtype(_np.float16)
float32 = float = _np.dtype(_np.float32)  # noqa: A001
float64 = double = _np.dtype(_np.float64)
int8 = _np.dtype(_np.int8)
uint8 = _np.dtype(_np.uint8)
int16 = _np.dtype(_np.int16)
int32 = int = _np.dtype(_np.int32)  # noqa: A001
int64 = long = _np.dtype(_np.int64)
bool = _np.dtype(_np.bool_)  # noqa: A001

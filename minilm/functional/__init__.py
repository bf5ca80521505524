"""Every differentiable op of minilm, one ``Function`` class each; import as
``import minilm.functional as F``.

- ``math``: elementwise arithmetic, unary math, activations, selection, comparisons
- ``reduce``: sum/mean/var/std/max/min/argmax/logsumexp/cumsum
- ``linalg``: matmul, linear, einsum
- ``shape``: reshape/permute/expand/repeat/cat/stack/split/pad/triu
- ``indexing``: ``x[index]``, gather, scatter_add, index_select
- ``nn``: softmax, log_softmax, layer_norm, rms_norm, dropout, embedding, one_hot,
  scaled_dot_product_attention
- ``losses``: cross_entropy, nll_loss, mse_loss, l1_loss, binary cross-entropy, kl_div,
  hinge losses
"""

from .math import *  # noqa: F403
from .math import __all__ as _math_all
from .reduce import *  # noqa: F403
from .reduce import __all__ as _reduce_all
from .linalg import *  # noqa: F403
from .linalg import __all__ as _linalg_all
from .shape import *  # noqa: F403
from .shape import __all__ as _shape_all
from .indexing import *  # noqa: F403
from .indexing import __all__ as _indexing_all
from .nn import *  # noqa: F403
from .nn import __all__ as _nn_all
from .losses import *  # noqa: F403
from .losses import __all__ as _losses_all

__all__ = (_math_all + _reduce_all + _linalg_all + _shape_all + _indexing_all + _nn_all
           + _losses_all)

#: functional ops that are also Tensor methods (``x.sum(dim=1)`` == ``F.sum(x, dim=1)``)
TENSOR_METHODS = (
    # math
    "add", "sub", "mul", "div", "pow", "neg", "exp", "log", "sqrt", "rsqrt", "abs",
    "sign", "sin", "cos", "tanh", "sigmoid", "relu", "clamp", "maximum", "minimum",
    "masked_fill", "eq", "ne", "lt", "le", "gt", "ge", "isnan", "isfinite", "allclose",
    # reduce
    "sum", "mean", "var", "std", "max", "min", "argmax", "argmin", "logsumexp", "cumsum",
    "any", "all", "amax", "amin", "prod",
    # linalg
    "matmul",
    # shape
    "reshape", "view", "transpose", "permute", "squeeze", "unsqueeze", "expand",
    "broadcast_to", "flatten", "split", "chunk", "triu", "tril", "gather", "scatter_add",
    "index_select", "expand_as", "view_as", "reshape_as", "repeat", "flip", "roll",
    "unflatten", "movedim", "swapaxes", "unbind", "narrow",
    # nn
    "softmax", "log_softmax",
)

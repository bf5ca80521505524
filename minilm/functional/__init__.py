"""Every differentiable op of minilm, one ``Function`` class each with its public
function right under it; import as ``import minilm.functional as F``.

- ``math``: elementwise arithmetic with broadcasting, selection (where, masked_fill,
  maximum, minimum), clone / cast / to_backend
- ``unary``: exp, log, sqrt, rsqrt, abs, sign, sin, cos, tanh, clamp; the activations
  sigmoid, relu, leaky_relu, gelu, silu, softplus
- ``gelu_kernel``: the reference GELU and erf kernels (the ``gelu`` op is in ``unary``)
- ``compare``: comparisons and logical ops, isnan, isfinite, allclose (no gradient)
- ``reduce``: sum/mean/var/std/logsumexp/cumsum/prod/any/all
- ``extrema``: max/min (with indices), amax/amin, argmax/argmin
- ``linalg``: matmul, linear, einsum
- ``shape``: reshape/view/flatten/squeeze, permute/transpose, expand, repeat, flip, roll
- ``join``: cat/stack, split/chunk/unbind, narrow
- ``padding``: pad, triu/tril
- ``indexing``: ``x[index]``, gather, scatter_add, index_select
- ``nn``: softmax, log_softmax, dropout, embedding, one_hot
- ``normalization``: layer_norm, rms_norm
- ``attention``: scaled_dot_product_attention
- ``losses``: cross_entropy, nll_loss, kl_div, multi_margin_loss
- ``recurrent``: lstm_sequence, gru_sequence, rnn_sequence (fused loops over time)
- ``elementwise_losses``: mse_loss, l1_loss, smooth_l1_loss, huber_loss, binary
  cross-entropy, hinge_embedding_loss

An op's hot arithmetic is a kernel function registered by name next to the op
(``@kernel("softmax")``, see minilm/backends/interface.py); backends may override it.

Importing this package also gives :class:`~minilm.tensor.Tensor` its operators and op
methods (``x + y``, ``x @ w``, ``x.sum(dim=1)``): ``_methods.py`` binds them, so that
``tensor`` never imports ``functional``, the layer above it.
"""

import sys as _sys

from ._methods import install_tensor_methods as _install_tensor_methods
from .math import *  # noqa: F403
from .math import __all__ as _math_all
from .unary import *  # noqa: F403
from .unary import __all__ as _unary_all
from .compare import *  # noqa: F403
from .compare import __all__ as _compare_all
from .reduce import *  # noqa: F403
from .reduce import __all__ as _reduce_all
from .extrema import *  # noqa: F403
from .extrema import __all__ as _extrema_all
from .linalg import *  # noqa: F403
from .linalg import __all__ as _linalg_all
from .shape import *  # noqa: F403
from .shape import __all__ as _shape_all
from .join import *  # noqa: F403
from .join import __all__ as _join_all
from .padding import *  # noqa: F403
from .padding import __all__ as _padding_all
from .indexing import *  # noqa: F403
from .indexing import __all__ as _indexing_all
from .nn import *  # noqa: F403
from .nn import __all__ as _nn_all
from .normalization import *  # noqa: F403
from .normalization import __all__ as _normalization_all
from .attention import *  # noqa: F403
from .attention import __all__ as _attention_all
from .losses import *  # noqa: F403
from .losses import __all__ as _losses_all
from .elementwise_losses import *  # noqa: F403
from .elementwise_losses import __all__ as _elementwise_losses_all

__all__ = (_math_all + _unary_all + _compare_all + _reduce_all
           + _extrema_all + _linalg_all + _shape_all + _join_all + _padding_all
           + _indexing_all + _nn_all + _normalization_all + _attention_all + _losses_all
           + _elementwise_losses_all)

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

# this package, whose ops the methods call: F.add, F.sum, ...
_install_tensor_methods(_sys.modules[__name__])

# sparse: CSR matrix @ dense weight (differentiable in the weight)
from .sparse import *  # noqa: E402, F403
from .sparse import __all__ as _sparse_all  # noqa: E402

__all__ = __all__ + _sparse_all

# conv: conv1d, max/avg pooling over time, global (masked) max/mean over time
from .conv import *  # noqa: E402, F403
from .conv import __all__ as _conv_all  # noqa: E402

__all__ = __all__ + _conv_all

# regularizers: L1 / L2 penalties as loss terms, DropConnect, the L1 proximal step
from .regularizers import *  # noqa: E402, F403
from .regularizers import __all__ as _regularizers_all  # noqa: E402

__all__ = __all__ + _regularizers_all

# recurrent: one fused op per RNN / LSTM / GRU layer-direction (backprop through time)
from .recurrent import *  # noqa: E402, F403
from .recurrent import __all__ as _recurrent_all  # noqa: E402

__all__ = __all__ + _recurrent_all

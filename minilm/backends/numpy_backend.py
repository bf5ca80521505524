"""The NumPy backend: the readable reference every other backend is tested against.

Each kernel works on raw arrays of ``self.xp`` and is written as its formula. Faster
backends (Numba, CuPy) subclass this class and override kernels one by one; an
override must return what the reference returns, to floating-point tolerance.
"""

from __future__ import annotations

import math

import numpy


class NumpyBackend:
    """Reference backend: ``xp`` is NumPy, kernels are plain vectorised NumPy."""

    name = "numpy"
    default_seed = 0

    def __init__(self) -> None:
        self.xp = numpy
        self.seed(NumpyBackend.default_seed)

    # ------------------------------------------------------------------ random numbers
    def seed(self, seed: int) -> None:
        """Reset this backend's generator to ``seed``."""
        self.rng = self.xp.random.default_rng(seed)

    def get_rng_state(self) -> dict:
        """A JSON-serialisable snapshot of the generator (restored by set_rng_state)."""
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    # ------------------------------------------------------------------ arrays
    def asarray(self, data, dtype=None):
        return self.xp.asarray(data, dtype=dtype)

    def to_numpy(self, array) -> numpy.ndarray:
        return numpy.asarray(array)

    def __repr__(self) -> str:
        return f"<minilm backend {self.name!r}>"

    # ------------------------------------------------------------------ softmax family
    # Kernels below allocate their result once and then update it in place (``out=``,
    # ``-=``, ``*=``): the same operations in the same order as the one-line formula in
    # the docstring, hence the same bits, without a fresh temporary per step.

    def softmax(self, x, dim: int):
        """y = exp(x - max x) / sum exp(x - max x) along ``dim``."""
        xp = self.xp
        y = x - x.max(axis=dim, keepdims=True)
        xp.exp(y, out=y)
        y /= y.sum(axis=dim, keepdims=True)
        return y

    def softmax_backward(self, y, gy, dim: int):
        """dx = y * (gy - sum(gy * y))."""
        xp = self.xp
        dx = gy * y  # first holds gy * y for the row sums
        xp.subtract(gy, dx.sum(axis=dim, keepdims=True), out=dx)
        dx *= y
        return dx

    def masked_softmax(self, x, keep, dim: int = -1):
        """y = keep * exp(x - max x) / sum(keep * exp(x - max x)) along ``dim``, the max
        taken over kept entries. ``keep`` is a bool array broadcastable to ``x`` (True =
        take part) or None. Rows with nothing kept (or all ``-inf``) give zeros, not NaN.
        Its gradient is ``softmax_backward`` (zeros stay zeros)."""
        xp = self.xp
        z = x if keep is None else xp.where(keep, x, -xp.inf)
        m = z.max(axis=dim, keepdims=True)
        m[~xp.isfinite(m)] = 0  # a fully masked row: exp(-inf - 0) = 0
        if z is x:
            e = x - m
        else:  # z is our own masked copy of x: reuse it
            e = z
            e -= m
        xp.exp(e, out=e)
        denom = e.sum(axis=dim, keepdims=True)
        denom[~(denom > 0)] = 1  # nothing kept: 0 / 1
        e /= denom
        return e

    def log_softmax(self, x, dim: int):
        """y = x - logsumexp(x) along ``dim``."""
        xp = self.xp
        y = x - x.max(axis=dim, keepdims=True)
        y -= xp.log(xp.exp(y).sum(axis=dim, keepdims=True))
        return y

    def log_softmax_backward(self, y, gy, dim: int):
        """dx = gy - softmax(x) * sum(gy), with softmax(x) = exp(y)."""
        return gy - self.xp.exp(y) * gy.sum(axis=dim, keepdims=True)

    # ------------------------------------------------------------------ normalisation
    def layer_norm(self, x, weight, bias, eps: float):
        """y = (x - mean) * rstd * weight + bias over the last dim; returns (y, mean, rstd)."""
        xp = self.xp
        mean = x.mean(axis=-1, keepdims=True)
        y = x - mean
        var = (y * y).mean(axis=-1, keepdims=True)
        rstd = 1.0 / xp.sqrt(var + eps)
        y *= rstd
        if weight is not None:
            y = _imul(y, weight)
        if bias is not None:
            y = _iadd(y, bias)
        return y, mean, rstd

    def layer_norm_backward(self, gy, x, weight, mean, rstd, need_wb: bool = True):
        """With xh = (x-mean)*rstd and g = gy*w:
        dx = rstd * (g - mean(g) - xh * mean(g*xh)); dw = sum(gy*xh); db = sum(gy)."""
        xp = self.xp
        xh = x - mean
        xh *= rstd
        g = gy * weight if weight is not None else gy
        t = g * xh  # first holds g * xh for its row means, then xh * that mean
        xp.multiply(xh, t.mean(axis=-1, keepdims=True), out=t)
        g_mean = g.mean(axis=-1, keepdims=True)
        # g is our fresh gy * w, or gy itself (which must stay untouched) without weight
        dx = _isub(g, g_mean) if weight is not None else g - g_mean
        dx = _isub(dx, t)
        dx = _imul(dx, rstd)
        dw = db = None
        if need_wb:
            lead = tuple(range(gy.ndim - 1))
            dw = _mul_into(xp, t, gy, xh).sum(axis=lead)  # t is free again: gy * xh in it
            db = gy.sum(axis=lead)
        return dx, dw, db

    def rms_norm(self, x, weight, eps: float):
        """y = x * rstd * weight with rstd = 1/sqrt(mean(x^2) + eps); returns (y, rstd)."""
        xp = self.xp
        rstd = 1.0 / xp.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)
        y = x * rstd
        if weight is not None:
            y = _imul(y, weight)
        return y, rstd

    def rms_norm_backward(self, gy, x, weight, rstd, need_w: bool = True):
        """With xh = x*rstd and g = gy*w: dx = rstd * (g - xh * mean(g*xh)); dw = sum(gy*xh)."""
        xp = self.xp
        xh = x * rstd
        g = gy * weight if weight is not None else gy
        t = g * xh  # first holds g * xh for its row means, then xh * that mean
        xp.multiply(xh, t.mean(axis=-1, keepdims=True), out=t)
        # g is our fresh gy * w, or gy itself (which must stay untouched) without weight
        dx = _isub(g, t) if weight is not None else g - t
        dx = _imul(dx, rstd)
        dw = _mul_into(xp, t, gy, xh).sum(axis=tuple(range(gy.ndim - 1))) if need_w else None
        return dx, dw

    # ------------------------------------------------------------------ activations
    def gelu(self, x, approximate: str = "none"):
        """Exact: x * Phi(x). Tanh: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
        return _blockwise(self._gelu_formula, x, approximate=approximate)

    def _gelu_formula(self, x, approximate: str):
        xp = self.xp
        if approximate == "tanh":
            k = math.sqrt(2.0 / math.pi)
            return 0.5 * x * (1.0 + xp.tanh(k * (x + 0.044715 * x * x * x)))
        return 0.5 * x * (1.0 + self.erf(x / math.sqrt(2.0)))

    def gelu_backward(self, x, gy, approximate: str = "none"):
        """Exact: Phi(x) + x phi(x). Tanh: 0.5(1+t) + 0.5 x (1-t^2) k (1 + 3*0.044715 x^2)."""
        return _blockwise(self._gelu_backward_formula, x, gy, approximate=approximate)

    def _gelu_backward_formula(self, x, gy, approximate: str):
        xp = self.xp
        if approximate == "tanh":
            k = math.sqrt(2.0 / math.pi)
            t = xp.tanh(k * (x + 0.044715 * x * x * x))
            d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3 * 0.044715 * x * x)
            return gy * d
        cdf = 0.5 * (1.0 + self.erf(x / math.sqrt(2.0)))
        pdf = xp.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        return gy * (cdf + x * pdf)

    def bias_gelu(self, x, b, approximate: str = "none"):
        """y = gelu(x + b), the bias ``b`` (shape (C,)) added along the last dim: a
        Linear's bias fused with the GELU after it."""
        return self.gelu(x + b, approximate)

    def bias_gelu_backward(self, x, b, gy, approximate: str = "none"):
        """With h = x + b:  dx = gy * gelu'(h);  db = dx summed over the leading dims.
        Returns (dx, db)."""
        dx = self.gelu_backward(x + b, gy, approximate)
        return dx, dx.reshape(-1, dx.shape[-1]).sum(axis=0)

    def erf(self, x):
        """Error function, elementwise. float64 uses libm's ``math.erf`` (exact to the
        last ulp, which gradcheck needs); lower precisions use Abramowitz & Stegun
        7.1.26, |error| < 1.5e-7, below float32's resolution and fully vectorised."""
        xp = self.xp
        if x.dtype == xp.float64:
            return _vec_erf(x)
        s = xp.sign(x)
        a = xp.abs(x)
        t = 1.0 / (1.0 + 0.3275911 * a)
        poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
                    + t * (-1.453152027 + t * 1.061405429))))
        return (s * (1.0 - poly * xp.exp(-a * a))).astype(x.dtype, copy=False)

    # ------------------------------------------------------------------ dropout
    def dropout_mask(self, shape: tuple, p: float, dtype):
        """m = [u >= p] / (1 - p) with u ~ U[0, 1) from ``self.rng``: each entry is kept
        with probability 1 - p and E[m] = 1 (inverted dropout). p == 1 gives zeros."""
        xp = self.xp
        if p >= 1.0:
            return xp.zeros(shape, dtype=dtype)
        m = (self.rng.random(shape) >= p).astype(dtype)
        m *= 1.0 / (1.0 - p)
        return m

    # ------------------------------------------------------------------ attention
    def attention(self, q, k, v, keep, bias, scale: float, dropout_p: float = 0.0):
        """S = q k^T * scale + bias;  P = masked_softmax(S, keep);  out = (P * drop) v
        over the last two dims (leading dims broadcast), with drop = dropout_mask(S.shape,
        dropout_p). ``keep`` (bool) and ``bias`` may be None. Returns (out, P, drop);
        drop is None when dropout_p == 0."""
        xp = self.xp
        s = xp.matmul(q, xp.swapaxes(k, -1, -2))
        s *= scale
        if bias is not None:
            s = _iadd(s, bias)
        if keep is not None:
            s = xp.broadcast_to(s, numpy.broadcast_shapes(s.shape, keep.shape))
        p = self.masked_softmax(s, keep, -1)
        drop = None
        if dropout_p > 0.0:
            drop = self.dropout_mask(p.shape, dropout_p, p.dtype)
        pd = p if drop is None else p * drop
        return xp.matmul(pd, v), p, drop

    def attention_backward(self, g, q, k, v, p, drop, scale: float):
        """With Pd = P * drop:  dV = Pd^T g;  dP = (g V^T) * drop;
        dS = softmax_backward(P, dP);  dQ = dS K * scale;  dK = dS^T Q * scale.
        Returns (dQ, dK, dV, dS); dS is also the gradient of an additive mask."""
        xp = self.xp
        pd = p if drop is None else p * drop
        dv = xp.matmul(xp.swapaxes(pd, -1, -2), g)
        dp = xp.matmul(g, xp.swapaxes(v, -1, -2))
        if drop is not None:
            dp = _imul(dp, drop)
        ds = self.softmax_backward(p, dp, -1)
        dq = xp.matmul(ds, k)
        dq *= scale
        dk = xp.matmul(xp.swapaxes(ds, -1, -2), q)
        dk *= scale
        return dq, dk, dv, ds

    # ------------------------------------------------------------------ embedding
    def embedding_backward(self, ids, gy, num_embeddings: int):
        """dE[v] = sum over positions p with ids[p] == v of gy[p] (a scatter-add:
        repeated ids add up)."""
        xp = self.xp
        flat_ids = ids.reshape(-1)
        g = gy.reshape(flat_ids.shape[0], gy.shape[-1])
        dE = xp.zeros((num_embeddings, gy.shape[-1]), dtype=gy.dtype)
        if xp is not numpy or flat_ids.size == 0:
            if flat_ids.size:
                xp.add.at(dE, flat_ids, g)
            return dE
        # np.add.at(dE, ids, g) does this, one slow indexed update per position. Sort
        # the positions by id instead (stably: each id's rows stay in position order)
        # and sum each run of equal ids with one call: the same additions in the same
        # order, one NumPy call per distinct id.
        order = xp.argsort(flat_ids, kind="stable")
        ids_sorted, g_sorted = flat_ids[order], g[order]
        cuts = (xp.flatnonzero(ids_sorted[1:] != ids_sorted[:-1]) + 1).tolist()
        for start, end in zip([0] + cuts, cuts + [len(order)]):
            dE[ids_sorted[start]] = g_sorted[start:end].sum(axis=0)
        return dE

    # ------------------------------------------------------------------ cross-entropy
    def cross_entropy(self, logits, target, ignore_index: int, label_smoothing: float, weight):
        """Per-row loss of 2-D ``logits`` (N, C) against class indices (N,).

        loss_i = w[y_i] * ((1-eps) * (-logp[i, y_i]) + eps * mean_c(-logp[i, c]))
        (with class weights, the smoothing term is sum_c w_c (-logp[i,c]) / C, as in
        PyTorch). Rows whose target is ``ignore_index`` get loss 0 and row weight 0.
        Returns (loss_per_row, row_weight, logp)."""
        xp = self.xp
        logp = self.log_softmax(logits, dim=1)
        valid = target != ignore_index
        safe_t = xp.where(valid, target, 0)
        rows = xp.arange(logits.shape[0])
        nll = -logp[rows, safe_t]
        if weight is not None:
            row_w = weight[safe_t] * valid
            nll = nll * weight[safe_t]
        else:
            row_w = valid.astype(logits.dtype)
        loss = (1.0 - label_smoothing) * nll
        if label_smoothing > 0.0:
            C = logits.shape[1]
            if weight is not None:
                smooth = -(logp * weight).sum(axis=1) / C
            else:
                smooth = -logp.sum(axis=1) / C
            loss = loss + label_smoothing * smooth
        loss = loss * valid
        return loss, row_w.astype(logits.dtype), logp

    def cross_entropy_backward(self, logp, target, g_row, ignore_index: int,
                               label_smoothing: float, weight):
        """d loss_i / d logits_i scaled by the upstream per-row gradient ``g_row``:
        dz = a_i * softmax(z_i) - (1-eps) w[y_i] onehot(y_i) - eps/C * w   where
        a_i = (1-eps) w[y_i] + eps/C * sum_c w_c (w = 1 without class weights)."""
        xp = self.xp
        N, C = logp.shape
        valid = target != ignore_index
        safe_t = xp.where(valid, target, 0)
        rows = xp.arange(N)
        p = xp.exp(logp)
        wy = weight[safe_t] if weight is not None else xp.ones(N, dtype=logp.dtype)
        wsum = weight.sum() if weight is not None else float(C)
        a = (1.0 - label_smoothing) * wy + label_smoothing / C * wsum
        dz = p * a[:, None]
        dz[rows, safe_t] -= (1.0 - label_smoothing) * wy
        if label_smoothing > 0.0:
            dz -= label_smoothing / C * (weight[None, :] if weight is not None else 1.0)
        dz *= (g_row * valid)[:, None]
        return dz

    # ------------------------------------------------------------------ optimizer updates
    # Both kernels update their array arguments IN PLACE (the parameter keeps its array
    # object) and only read ``grad``. They allocate at most two parameter-sized scratch
    # arrays; a fused backend does the same arithmetic in one pass with none.

    def _step_grad(self, param, grad, weight_decay: float, maximize: bool):
        """The gradient an update uses: ±grad + weight_decay * param (L2 folded in). A
        new array when it differs from ``grad``; ``grad`` itself (only read) otherwise."""
        xp = self.xp
        if weight_decay != 0.0:
            g = xp.multiply(param, weight_decay)
            if maximize:
                g -= grad
            else:
                g += grad
            return g
        return xp.negative(grad) if maximize else grad

    def sgd_step(self, param, grad, momentum_buf, lr: float, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 maximize: bool = False, init_buf: bool = False) -> None:
        """One SGD step, in place on ``param`` and ``momentum_buf``:

            g   = (-grad if maximize else grad) + weight_decay * param
            buf = g                                       (init_buf: its first step)
            buf = momentum * buf + (1 - dampening) * g    (later steps)
            d   = g + momentum * buf if nesterov else buf  (d = g when momentum == 0)
            param = param - lr * d

        ``momentum_buf`` may be None when ``momentum == 0``."""
        xp = self.xp
        g = self._step_grad(param, grad, weight_decay, maximize)
        tmp = xp.empty_like(param)
        d = g
        if momentum != 0.0:
            buf = momentum_buf
            if init_buf:
                xp.copyto(buf, g)
            else:
                buf *= momentum
                if dampening == 0.0:
                    buf += g
                else:
                    xp.multiply(g, 1.0 - dampening, out=tmp)
                    buf += tmp
            if nesterov:
                xp.multiply(buf, momentum, out=tmp)
                tmp += g
                d = tmp
            else:
                d = buf
        xp.multiply(d, lr, out=tmp)
        param -= tmp

    def adam_step(self, param, grad, exp_avg, exp_avg_sq, step: int, lr: float, beta1: float,
                  beta2: float, eps: float, weight_decay: float = 0.0, decoupled: bool = False,
                  amsgrad_max=None, maximize: bool = False) -> None:
        """One Adam / AdamW step (``step`` = t, counted from 1), in place on ``param``,
        ``exp_avg`` (m), ``exp_avg_sq`` (v) and ``amsgrad_max`` (v_max, if given):

            g = -grad if maximize else grad
            param = param * (1 - lr * weight_decay)        (decoupled: AdamW)
            g = g + weight_decay * param                   (not decoupled: Adam's L2)
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g^2
            v_max = max(v_max, v)  and v_max replaces v below   (amsgrad)
            denom = sqrt(v) / sqrt(1 - beta2^t) + eps
            param = param - lr / (1 - beta1^t) * m / denom
        """
        xp = self.xp
        g = self._step_grad(param, grad, 0.0 if decoupled else weight_decay, maximize)
        if weight_decay != 0.0 and decoupled:
            param *= 1.0 - lr * weight_decay
        tmp = xp.empty_like(param)
        exp_avg *= beta1
        xp.multiply(g, 1.0 - beta1, out=tmp)
        exp_avg += tmp
        exp_avg_sq *= beta2
        xp.multiply(g, g, out=tmp)
        tmp *= 1.0 - beta2
        exp_avg_sq += tmp
        v = exp_avg_sq
        if amsgrad_max is not None:
            xp.maximum(amsgrad_max, exp_avg_sq, out=amsgrad_max)
            v = amsgrad_max
        bias_correction1 = 1.0 - beta1 ** step
        bias_correction2 = 1.0 - beta2 ** step
        xp.sqrt(v, out=tmp)
        tmp /= math.sqrt(bias_correction2)
        tmp += eps
        xp.divide(exp_avg, tmp, out=tmp)
        tmp *= lr / bias_correction1
        param -= tmp


# In-place helpers. A fresh array costs more than its arithmetic: NumPy gets large
# arrays from the C allocator, which hands big blocks back to the OS when they are
# freed, so the next one must be mapped and zeroed again, page by page. The kernels
# therefore update arrays they have just made, in place, where that gives the same
# values; these helpers fall back to a fresh result when in place would not (a wider
# dtype or a larger broadcast shape in ``other``).


def _in_place_ok(y, other) -> bool:
    return (numpy.result_type(y.dtype, other.dtype) == y.dtype
            and numpy.broadcast_shapes(y.shape, other.shape) == y.shape)


def _imul(y, other):
    """y * other, in place on ``y`` (an array the caller has just made) when possible."""
    if _in_place_ok(y, other):
        y *= other
        return y
    return y * other


def _iadd(y, other):
    """y + other, in place on ``y`` when possible (see ``_imul``)."""
    if _in_place_ok(y, other):
        y += other
        return y
    return y + other


def _isub(y, other):
    """y - other, in place on ``y`` when possible (see ``_imul``)."""
    if _in_place_ok(y, other):
        y -= other
        return y
    return y - other


def _mul_into(xp, buf, a, b):
    """a * b written into ``buf``, a spare array of the caller's, when it has the
    product's shape and dtype (else a fresh a * b)."""
    if buf.dtype == numpy.result_type(a.dtype, b.dtype) and \
            numpy.broadcast_shapes(a.shape, b.shape) == buf.shape:
        return xp.multiply(a, b, out=buf)
    return a * b


# Elementwise formulas of many steps (erf, GELU and their gradients) make one fresh
# temporary per step. On arrays of several MiB each temporary is a round trip to main
# memory, and a fresh allocation that the OS must map and zero. Evaluating the same
# formula on consecutive blocks of BLOCK_BYTES keeps every temporary in the L2 cache:
# each element goes through exactly the same operations, so the result is bit for bit
# the same, about twice as soon (GELU on 2M float32). A fused kernel goes further: one
# pass over memory, no temporaries at all.
BLOCK_BYTES = 1 << 17


def _blockwise(fn, *arrays, **kwargs):
    """``fn(*arrays, **kwargs)`` for an elementwise ``fn`` of same-shape arrays,
    evaluated block by block into one output array (NumPy arrays only: on a GPU,
    or for small, broadcast or strided inputs, it is simply ``fn(*arrays)``)."""
    x = arrays[0]
    block = max(BLOCK_BYTES // x.itemsize, 1)
    if x.size <= 2 * block or any(type(a) is not numpy.ndarray or a.shape != x.shape
                                  or not a.flags.c_contiguous for a in arrays):
        return fn(*arrays, **kwargs)
    flat = [a.reshape(-1) for a in arrays]
    out = out_flat = None
    for start in range(0, x.size, block):
        part = fn(*(f[start:start + block] for f in flat), **kwargs)
        if out is None:  # the first block tells the output dtype
            out = numpy.empty(x.shape, dtype=part.dtype)
            out_flat = out.reshape(-1)
        out_flat[start:start + block] = part
    return out


def _vec_erf(x):
    return numpy.vectorize(math.erf, otypes=[numpy.float64])(numpy.asarray(x, dtype=numpy.float64))

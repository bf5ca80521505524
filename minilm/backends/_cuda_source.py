"""The CUDA C++ source of the CuPy backend's fused kernels (one module, compiled once by
NVRTC through ``cupy.RawModule``; every kernel a template on T = float or double).

Layout conventions, shared by every kernel:

- Row kernels (softmax, norms, cross-entropy) run one block per row of a C-contiguous
  (rows, C) array; the block's threads stride over the row (coalesced) and combine
  their partial max / sum with ``block_reduce``: a butterfly over each warp's 32 lanes
  (``__shfl_xor_sync``), one value per warp through shared memory, and the butterfly
  again, so every thread ends with the row's result. Block sizes are powers of two from
  32 to 1024.
- Elementwise kernels (GELU, erf, dropout, optimizer updates, the cross-entropy
  gradient, the embedding scatter) run one thread per element, 256 to a block.
- Arithmetic follows the NumPy reference's formula and order (minilm/functional,
  minilm/optim), in T; column sums of the norm backward accumulate in double.
- Random numbers: ``uniform01(key, i)`` is the i-th number of ``CounterRng``'s stream
  (counter_rng.py), so a dropout mask drawn here equals ``rng.random(shape) >= p``.
"""

CUDA_SOURCE = r"""
#ifndef INFINITY  // NVRTC compiles without the C headers
#define INFINITY __int_as_float(0x7f800000)
#endif

// ----------------------------------------------------------------- reductions
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// The sum (is_max = 0) or max (is_max = 1) of v over the block, returned to every
// thread. ``shared`` holds 32 values; the leading barrier lets a block call this twice
// in a row with the same buffer.
template <typename T>
__device__ T block_reduce(T v, T* shared, int is_max) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    v = is_max ? warp_max(v) : warp_sum(v);
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    const T none = is_max ? (T)(-INFINITY) : (T)0;
    v = lane < nwarps ? shared[lane] : none;
    return is_max ? warp_max(v) : warp_sum(v);
}

// ----------------------------------------------------------------- random numbers
// SplitMix64 at position i of the stream with key ``key`` (counter_rng.py), as a
// uniform number in [0, 1) with 53 random bits.
__device__ __forceinline__ double uniform01(unsigned long long key, unsigned long long i) {
    unsigned long long z = key + (i + 1ULL) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z = z ^ (z >> 31);
    return (double)(z >> 11) * 1.1102230246251565e-16;  // 2^-53
}

// ----------------------------------------------------------------- softmax family
// y = exp(x - m) / sum exp(x - m)   or   y = x - m - log sum exp(x - m)   (log_out)
template <typename T>
__global__ void softmax_fwd(const T* x, T* y, long long rows, int C, int log_out) {
    __shared__ T red[32];
    const long long r = blockIdx.x;
    const T* xr = x + r * C;
    T* yr = y + r * C;
    T m = (T)(-INFINITY);
    for (int j = threadIdx.x; j < C; j += blockDim.x) m = fmax(m, xr[j]);
    m = block_reduce(m, red, 1);
    T s = 0;
    for (int j = threadIdx.x; j < C; j += blockDim.x) s += exp(xr[j] - m);
    s = block_reduce(s, red, 0);
    if (log_out) {
        const T ls = log(s);
        for (int j = threadIdx.x; j < C; j += blockDim.x) yr[j] = (xr[j] - m) - ls;
    } else {
        for (int j = threadIdx.x; j < C; j += blockDim.x) yr[j] = exp(xr[j] - m) / s;
    }
}

// softmax:      dx = y (g - sum(g y))          log_softmax: dx = g - exp(y) sum(g)
// with g = gy * drop when has_drop (attention's dropout folded in). dx may be gy.
template <typename T>
__global__ void softmax_bwd(const T* y, const T* gy, const T* drop, T* dx, long long rows,
                            int C, int log_in, int has_drop) {
    __shared__ T red[32];
    const long long off = (long long)blockIdx.x * C;
    T s = 0;
    for (int j = threadIdx.x; j < C; j += blockDim.x) {
        const T g = has_drop ? gy[off + j] * drop[off + j] : gy[off + j];
        s += log_in ? g : g * y[off + j];
    }
    s = block_reduce(s, red, 0);
    for (int j = threadIdx.x; j < C; j += blockDim.x) {
        const T g = has_drop ? gy[off + j] * drop[off + j] : gy[off + j];
        dx[off + j] = log_in ? g - exp(y[off + j]) * s : y[off + j] * (g - s);
    }
}

// Attention scores, in place: z = s * scale + bias, -inf where not kept, then the
// masked softmax (max over kept entries; a row with none kept gives zeros) and,
// when has_drop, drop = [u >= p] * keep_scale and pd = P * drop with u from the
// counter stream at position counter + (flat index). Row r is row i = r % lq of
// score matrix r / lq, whose bias and keep rows come from slab bidx / kidx of it.
template <typename T>
__global__ void masked_softmax(T* s, long long rows, int lq, int lk, T scale,
                               const T* bias, const long long* bidx, int has_bias,
                               const bool* keep, const long long* kidx, int has_keep,
                               T* drop, T* pd, int has_drop, unsigned long long key,
                               unsigned long long counter, double p, T keep_scale) {
    __shared__ T red[32];
    const long long r = blockIdx.x;
    const long long mat = r / lq, i = r % lq;
    T* sr = s + r * lk;
    const T* br = has_bias ? bias + (bidx[mat] * lq + i) * lk : (const T*)0;
    const bool* kr = has_keep ? keep + (kidx[mat] * lq + i) * lk : (const bool*)0;
    T m = (T)(-INFINITY);
    for (int j = threadIdx.x; j < lk; j += blockDim.x) {
        T z = sr[j] * scale;
        if (has_bias) z = z + br[j];
        if (has_keep && !kr[j]) z = (T)(-INFINITY);
        sr[j] = z;
        m = fmax(m, z);
    }
    m = block_reduce(m, red, 1);
    if (!isfinite(m)) m = 0;
    T d = 0;
    for (int j = threadIdx.x; j < lk; j += blockDim.x) {
        const T e = exp(sr[j] - m);
        sr[j] = e;
        d += e;
    }
    d = block_reduce(d, red, 0);
    if (!(d > 0)) d = 1;
    for (int j = threadIdx.x; j < lk; j += blockDim.x) {
        const T pr = sr[j] / d;
        sr[j] = pr;
        if (has_drop) {
            const unsigned long long at = counter + (unsigned long long)(r * lk + j);
            const T dj = uniform01(key, at) >= p ? keep_scale : (T)0;
            drop[r * lk + j] = dj;
            pd[r * lk + j] = pr * dj;
        }
    }
}

// ----------------------------------------------------------------- normalisation
// layer norm: mu = mean x, rstd = 1 / sqrt(mean (x - mu)^2 + eps)
// rms norm:   mu = 0 (not stored),  rstd = 1 / sqrt(mean x^2 + eps)
// y = (x - mu) rstd w + b  (w, b optional)
template <typename T>
__global__ void norm_fwd(const T* x, const T* w, const T* b, int has_w, int has_b,
                         double eps, int rms, T* y, T* mean, T* rstd, long long rows, int C) {
    __shared__ T red[32];
    const long long off = (long long)blockIdx.x * C;
    T mu = 0;
    if (!rms) {
        T s = 0;
        for (int j = threadIdx.x; j < C; j += blockDim.x) s += x[off + j];
        mu = block_reduce(s, red, 0) / (T)C;
    }
    T q = 0;
    for (int j = threadIdx.x; j < C; j += blockDim.x) {
        const T c = x[off + j] - mu;
        q += c * c;
    }
    q = block_reduce(q, red, 0) / (T)C;
    const T rs = (T)1 / sqrt(q + (T)eps);
    for (int j = threadIdx.x; j < C; j += blockDim.x) {
        T v = (x[off + j] - mu) * rs;
        if (has_w) v = v * w[j];
        if (has_b) v = v + b[j];
        y[off + j] = v;
    }
    if (threadIdx.x == 0) {
        if (!rms) mean[blockIdx.x] = mu;
        rstd[blockIdx.x] = rs;
    }
}

// With xh = (x - mu) rstd and g = gy w:
// layer norm: dx = rstd (g - mean(g) - xh mean(g xh));  rms norm: dx = rstd (g - xh mean(g xh))
template <typename T>
__global__ void norm_bwd(const T* gy, const T* x, const T* w, int has_w, const T* mean,
                         const T* rstd, int rms, T* dx, long long rows, int C) {
    __shared__ T red[32];
    const long long r = blockIdx.x;
    const long long off = r * C;
    const T mu = rms ? (T)0 : mean[r], rs = rstd[r];
    T sg = 0, sgx = 0;
    for (int j = threadIdx.x; j < C; j += blockDim.x) {
        const T g = has_w ? gy[off + j] * w[j] : gy[off + j];
        sg += g;
        sgx += g * ((x[off + j] - mu) * rs);
    }
    sgx = block_reduce(sgx, red, 0) / (T)C;
    sg = rms ? (T)0 : block_reduce(sg, red, 0) / (T)C;
    for (int j = threadIdx.x; j < C; j += blockDim.x) {
        const T g = has_w ? gy[off + j] * w[j] : gy[off + j];
        const T xh = (x[off + j] - mu) * rs;
        dx[off + j] = rs * ((g - sg) - xh * sgx);
    }
}

// Column sums of the norm backward, per chunk of ``per`` rows (grid: column blocks x
// chunks): dw_part[k, c] = sum gy xh, db_part[k, c] = sum gy over chunk k, in double.
template <typename T>
__global__ void norm_wb_partial(const T* gy, const T* x, const T* mean, const T* rstd,
                                int rms, double* dw_part, double* db_part, long long rows,
                                int C, long long per) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const long long k = blockIdx.y;
    const long long r0 = k * per;
    const long long r1 = r0 + per < rows ? r0 + per : rows;
    double dw = 0, db = 0;
    for (long long r = r0; r < r1; ++r) {
        const T mu = rms ? (T)0 : mean[r];
        const T g = gy[r * C + c];
        dw += (double)(g * ((x[r * C + c] - mu) * rstd[r]));
        db += (double)g;
    }
    dw_part[k * C + c] = dw;
    db_part[k * C + c] = db;
}

// ----------------------------------------------------------------- activations
// exact: y = 0.5 x (1 + erf(x / sqrt 2)); tanh: y = 0.5 x (1 + tanh(k (x + 0.044715 x^3)))
template <typename T>
__global__ void gelu_fwd(const T* x, T* y, long long n, int tanh_approx) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const T v = x[i];
    if (tanh_approx) {
        const T k = (T)0.7978845608028654;  // sqrt(2 / pi)
        y[i] = (T)0.5 * v * ((T)1 + tanh(k * (v + (T)0.044715 * v * v * v)));
    } else {
        y[i] = (T)0.5 * v * ((T)1 + erf(v * (T)0.7071067811865476));
    }
}

// exact: dx = gy (Phi(x) + x phi(x));  tanh: dx = gy (0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 0.044715 x^2))
template <typename T>
__global__ void gelu_bwd(const T* x, const T* gy, T* dx, long long n, int tanh_approx) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const T v = x[i];
    if (tanh_approx) {
        const T k = (T)0.7978845608028654;
        const T t = tanh(k * (v + (T)0.044715 * v * v * v));
        dx[i] = gy[i] * ((T)0.5 * ((T)1 + t)
                         + (T)0.5 * v * ((T)1 - t * t) * k * ((T)1 + (T)(3 * 0.044715) * v * v));
    } else {
        const T cdf = (T)0.5 * ((T)1 + erf(v * (T)0.7071067811865476));
        const T pdf = exp((T)(-0.5) * v * v) * (T)0.3989422804014327;  // 1 / sqrt(2 pi)
        dx[i] = gy[i] * (cdf + v * pdf);
    }
}

template <typename T>
__global__ void erf_fwd(const T* x, T* y, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = erf(x[i]);
}

// ----------------------------------------------------------------- dropout
// out[i] = keep_scale if u_i >= p else 0, u_i from the counter stream at counter + i
template <typename T>
__global__ void dropout_mask(T* out, long long n, unsigned long long key,
                             unsigned long long counter, double p, T keep_scale) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = uniform01(key, counter + (unsigned long long)i) >= p ? keep_scale : (T)0;
}

// ----------------------------------------------------------------- cross-entropy
// Per row: logp = z - logsumexp(z); with y the target (0 where ignored), valid = y != ignore,
// loss = valid ((1 - eps) w_y (-logp_y) + eps sum_c w_c (-logp_c) / C), row_w = valid w_y
// (w = 1 without class weights). A target outside [0, C) that is not ignored counts in *bad.
template <typename T>
__global__ void xent_fwd(const T* z, const long long* t, const T* w, int has_w,
                         long long ignore, double eps, T* logp, T* loss, T* row_w, int* bad,
                         long long rows, int C) {
    __shared__ T red[32];
    const long long r = blockIdx.x;
    const long long off = r * C;
    T m = (T)(-INFINITY);
    for (int j = threadIdx.x; j < C; j += blockDim.x) m = fmax(m, z[off + j]);
    m = block_reduce(m, red, 1);
    T s = 0;
    for (int j = threadIdx.x; j < C; j += blockDim.x) s += exp(z[off + j] - m);
    s = block_reduce(s, red, 0);
    const T ls = log(s);
    T acc = 0;
    for (int j = threadIdx.x; j < C; j += blockDim.x) {
        const T lp = (z[off + j] - m) - ls;
        logp[off + j] = lp;
        acc += has_w ? lp * w[j] : lp;
    }
    acc = block_reduce(acc, red, 0);
    if (threadIdx.x != 0) return;
    const long long y = t[r];
    const int valid = y != ignore;
    long long safe = valid ? y : 0;
    if (valid && (y < 0 || y >= C)) {
        atomicAdd(bad, 1);
        safe = 0;
    }
    const T wy = has_w ? w[safe] : (T)1;
    T nll = -((z[off + safe] - m) - ls);
    if (has_w) nll = nll * wy;
    T l = (T)(1.0 - eps) * nll;
    if (eps > 0.0) l = l + (T)eps * (-acc / (T)C);
    loss[r] = valid ? l : (T)0;
    row_w[r] = valid ? wy : (T)0;
}

// dz = (a exp(logp) - (1 - eps) w_y [c == y] - eps / C w_c) g_r valid,
// a = (1 - eps) w_y + eps / C sum_c w_c. Grid: (column blocks, row blocks); a thread owns
// column c and strides over the rows by gridDim.y (no 64-bit division per element).
template <typename T>
__global__ void xent_bwd(const T* logp, const long long* t, const T* g, const T* w,
                         int has_w, double wsum, long long ignore, double eps, T* dz,
                         long long rows, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    for (long long r = blockIdx.y; r < rows; r += gridDim.y) {
        const long long i = r * C + c;
        const long long y = t[r];
        if (y == ignore) {
            dz[i] = 0;
            continue;
        }
        const T wy = has_w ? w[y] : (T)1;
        const T a = (T)(1.0 - eps) * wy + (T)(eps / C * wsum);
        T d = exp(logp[i]) * a;
        if (c == y) d = d - (T)(1.0 - eps) * wy;
        if (eps > 0.0) d = d - (T)(eps / C) * (has_w ? w[c] : (T)1);
        dz[i] = d * g[r];
    }
}

// ----------------------------------------------------------------- embedding
// dE[ids[p], d] += gy[p, d] by atomic adds (the order of the adds is not fixed, so the
// float sums of repeated ids may differ in the last bits from run to run). Grid as
// xent_bwd's: a thread owns column d and strides over the positions. ids outside [0, V)
// (which the embedding's forward refuses) are skipped, never written out of bounds.
template <typename T>
__global__ void embedding_bwd(const long long* ids, const T* gy, T* dE, long long n, int D,
                              long long V) {
    const int d = blockIdx.x * blockDim.x + threadIdx.x;
    if (d >= D) return;
    for (long long p = blockIdx.y; p < n; p += gridDim.y) {
        const long long v = ids[p];
        if (v >= 0 && v < V) atomicAdd(dE + v * D + d, gy[p * D + d]);
    }
}

// ----------------------------------------------------------------- optimizer updates
// The reference sgd_step / adam_step (optim/sgd.py, optim/adam.py) one element per
// thread, with the Numba kernels' order of operations; scalars come in T.
template <typename T>
__global__ void sgd_update(T* param, const T* grad, T* buf, long long n, T lr, T momentum,
                           T dampening, T one_minus_damp, T weight_decay, int nesterov,
                           int maximize, int init_buf) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    T g = maximize ? -grad[i] : grad[i];
    if (weight_decay != (T)0) g = param[i] * weight_decay + g;
    T d = g;
    if (momentum != (T)0) {
        T b;
        if (init_buf) b = g;
        else if (dampening == (T)0) b = buf[i] * momentum + g;
        else b = buf[i] * momentum + g * one_minus_damp;
        buf[i] = b;
        d = nesterov ? b * momentum + g : b;
    }
    param[i] = param[i] - d * lr;
}

template <typename T>
__global__ void adam_update(T* param, const T* grad, T* m, T* v, T* vmax, int amsgrad,
                            long long n, T decay, T one_minus_b1, T beta1, T one_minus_b2,
                            T beta2, T sqrt_bc2, T eps, T step_size, T weight_decay,
                            int decoupled, int maximize) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    T g = maximize ? -grad[i] : grad[i];
    if (weight_decay != (T)0) {
        if (decoupled) param[i] = param[i] * decay;
        else g = param[i] * weight_decay + g;
    }
    const T mi = m[i] * beta1 + g * one_minus_b1;
    T vi = v[i] * beta2 + (g * g) * one_minus_b2;
    m[i] = mi;
    v[i] = vi;
    if (amsgrad) {
        if (vi > vmax[i] || vi != vi || vmax[i] != vmax[i]) vmax[i] = vi;
        vi = vmax[i];
    }
    const T denom = sqrt(vi) / sqrt_bc2 + eps;
    param[i] = param[i] - (mi / denom) * step_size;
}
"""

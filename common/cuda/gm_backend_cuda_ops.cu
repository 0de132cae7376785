/*
 * The CUDA backend's own kernels: batch normalisation, ReLU, pooling, global
 * average pooling, upsampling, residual add, dropout, the losses and the
 * optimiser updates; each mirrors its CPU twin in gm_cpu_ops.c, element for
 * element, so that the two backends agree to float rounding.
 *
 * Element-wise kernels are grid-stride loops (one thread per output element,
 * consecutive threads on consecutive addresses). Sums are fixed-order block
 * reductions into per-block partials, then a fixed-order pass over the partials:
 * no atomics except atomicMin on "first bad index", whose result is order-free.
 * Backward passes of the window ops gather (each input sums the outputs whose
 * windows hold it) instead of scattering, for the same reason.
 */
#include "gm_backend_cuda_impl.cuh"

#include <float.h>
#include <math.h>

#define GMC_NONE 0xffffffffffffffffull /* "no bad index" in gmc_loss_dev */

/* ---- reductions (blockDim.x == GMC_THREADS, a multiple of 32) ------------- */

template <typename T> __device__ T warp_sum(T v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

__device__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block in a fixed order; the result is valid in thread 0. Every
 * thread must call it (it synchronises); sh holds 32 values. */
template <typename T> __device__ T block_sum(T v, T *sh)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* sh may still be read from the previous call */
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < nwarps ? sh[lane] : (T)0;
    return warp == 0 ? warp_sum(v) : (T)0;
}

__device__ float block_max(float v, float *sh)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < nwarps ? sh[lane] : -INFINITY;
    return warp == 0 ? warp_max(v) : -INFINITY;
}

#define GRID_STRIDE(i, n)                                                                          \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)blockDim.x * gridDim.x)

/* ---- batch normalisation -------------------------------------------------- */

/*
 * A channel's statistics are a sum over its N*hw elements. To use the whole GPU
 * when there are few channels, each channel is split into `splits` contiguous
 * chunks, one block each, whose partial sums (double) a second kernel adds in
 * order. splits grows with the element count, so the scratch sized for the
 * largest batch covers every smaller one.
 */
typedef struct {
    int n, c, hw;
    int splits;
    size_t chunk; /* elements of one channel per block */
} bn_dims;

static int bn_splits(int c, size_t m)
{
    size_t want = (size_t)(512 + c - 1) / (size_t)c; /* about 512 blocks in all */
    size_t by_size = m / 4096 > 0 ? m / 4096 : 1;      /* at least 4096 elements a block */
    size_t s = want < by_size ? want : by_size;
    if (s > GMC_MAX_BN_SPLITS) s = GMC_MAX_BN_SPLITS;
    return s < 1 ? 1 : (int)s;
}

static bn_dims bn_dims_of(gm_shape in, int batch)
{
    bn_dims d = {batch, in.c, in.h * in.w, 0, 0};
    size_t m = (size_t)batch * (size_t)d.hw;
    d.splits = bn_splits(d.c, m);
    d.chunk = (m + (size_t)d.splits - 1) / (size_t)d.splits;
    return d;
}

/* Scratch: 2 partial sums per (channel, split), then 4 backward coefficients per channel. */
static size_t bn_part_bytes(const bn_dims *d)
{
    return gmc_round_up(sizeof(double) * 2 * (size_t)d->c * (size_t)d->splits, GMC_ALIGN);
}
static size_t bn_scratch_bytes(const bn_dims *d) { return bn_part_bytes(d) + sizeof(float) * 4 * (size_t)d->c; }

/* The channel's mean and 1/std: the saved batch statistics (train) or the running ones. */
__device__ inline void bn_stats_of(int c, int C, int train, const float *saved, const float *buf, float eps,
                                   float *mean, float *invstd)
{
    if (train) {
        *mean = saved[c];
        *invstd = saved[C + c];
    } else {
        *mean = buf[c];
        *invstd = 1.0f / sqrtf(buf[C + c] + eps);
    }
}

/* Element j of channel c (j over the N planes of hw) in NCHW memory. */
__device__ inline size_t bn_at(const bn_dims &d, int c, size_t j)
{
    size_t n = j / (size_t)d.hw;
    return (n * (size_t)d.c + (size_t)c) * (size_t)d.hw + (j - n * (size_t)d.hw);
}

/* grid (splits, C): part[(c*splits + s)*2 + {0,1}] = sum x, sum x^2 over chunk s of channel c. */
__global__ void bn_stats_kernel(const float *__restrict__ x, double *__restrict__ part, bn_dims d)
{
    __shared__ double sh[32];
    const int c = blockIdx.y, s = blockIdx.x;
    const size_t m = (size_t)d.n * d.hw, j0 = (size_t)s * d.chunk, j1 = j0 + d.chunk < m ? j0 + d.chunk : m;
    double sum = 0.0, sq = 0.0;
    for (size_t j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
        double v = x[bn_at(d, c, j)];
        sum += v;
        sq += v * v;
    }
    sum = block_sum(sum, sh);
    sq = block_sum(sq, sh);
    if (threadIdx.x == 0) {
        part[((size_t)c * d.splits + s) * 2] = sum;
        part[((size_t)c * d.splits + s) * 2 + 1] = sq;
    }
}

/* One thread per channel: the batch statistics, saved for backward, and the running update. */
__global__ void bn_finalize_kernel(const double *__restrict__ part, float *__restrict__ saved, float *__restrict__ buf,
                                   bn_dims d, float eps, float momentum)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= d.c) return;
    double s = 0.0, ss = 0.0;
    for (int k = 0; k < d.splits; k++) {
        s += part[((size_t)c * d.splits + k) * 2];
        ss += part[((size_t)c * d.splits + k) * 2 + 1];
    }
    const double m = (double)d.n * d.hw;
    double mu = s / m, var = ss / m - mu * mu;
    if (var < 0.0) var = 0.0;
    const float mean = (float)mu;
    saved[c] = mean;
    saved[d.c + c] = (float)(1.0 / sqrt(var + eps));
    double unbiased = m > 1.0 ? var * m / (m - 1.0) : var;
    buf[c] = (1.0f - momentum) * buf[c] + momentum * mean;
    buf[d.c + c] = (1.0f - momentum) * buf[d.c + c] + momentum * (float)unbiased;
}

__global__ void bn_apply_kernel(const float *__restrict__ x, float *__restrict__ y, const float *__restrict__ w,
                                const float *__restrict__ saved, const float *__restrict__ buf, bn_dims d,
                                int train, int relu, float eps)
{
    const size_t total = (size_t)d.n * d.c * d.hw;
    GRID_STRIDE(i, total)
    {
        const int c = (int)((i / (size_t)d.hw) % (size_t)d.c);
        float mean, invstd;
        bn_stats_of(c, d.c, train, saved, buf, eps, &mean, &invstd);
        const float scale = w[c] * invstd, shift = w[d.c + c] - mean * scale;
        float v = x[i] * scale + shift;
        y[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
    }
}

/* dL/d(BN output): dy, or gated by the folded ReLU's output. */
__device__ inline float bn_dy(const float *y, const float *dy, size_t i, int relu)
{
    return relu ? (y[i] > 0.0f ? dy[i] : 0.0f) : dy[i];
}

/* grid (splits, C): part = sum g, sum g * (x - mean) over chunk s of channel c. */
__global__ void bn_bwd_stats_kernel(const float *__restrict__ x, const float *__restrict__ y,
                                    const float *__restrict__ dy, const float *__restrict__ saved,
                                    const float *__restrict__ buf, double *__restrict__ part, bn_dims d,
                                    int train, int relu, float eps)
{
    __shared__ double sh[32];
    const int c = blockIdx.y, s = blockIdx.x;
    float mean, invstd;
    bn_stats_of(c, d.c, train, saved, buf, eps, &mean, &invstd);
    const size_t m = (size_t)d.n * d.hw, j0 = (size_t)s * d.chunk, j1 = j0 + d.chunk < m ? j0 + d.chunk : m;
    double sg = 0.0, sgx = 0.0;
    for (size_t j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
        const size_t i = bn_at(d, c, j);
        const float g = bn_dy(y, dy, i, relu);
        sg += g;
        sgx += (double)g * (double)(x[i] - mean);
    }
    sg = block_sum(sg, sh);
    sgx = block_sum(sgx, sh);
    if (threadIdx.x == 0) {
        part[((size_t)c * d.splits + s) * 2] = sg;
        part[((size_t)c * d.splits + s) * 2 + 1] = sgx;
    }
}

/* One thread per channel: dgamma, dbeta, and the coefficients of dx (k, k0, kx, mean). */
__global__ void bn_bwd_finalize_kernel(const double *__restrict__ part, const float *__restrict__ w,
                                       const float *__restrict__ saved, const float *__restrict__ buf,
                                       float *__restrict__ dw, float *__restrict__ coef, bn_dims d, int train,
                                       float eps)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= d.c) return;
    float mean, invstd;
    bn_stats_of(c, d.c, train, saved, buf, eps, &mean, &invstd);
    double sdy = 0.0, sdyx = 0.0;
    for (int k = 0; k < d.splits; k++) {
        sdy += part[((size_t)c * d.splits + k) * 2];
        sdyx += part[((size_t)c * d.splits + k) * 2 + 1];
    }
    sdyx *= invstd;
    dw[c] += (float)sdyx;
    dw[d.c + c] += (float)sdy;
    const float m = (float)d.n * (float)d.hw;
    const float k = w[c] * invstd;
    /* in eval mode the statistics are constants: only the direct term remains */
    const float mdy = train ? (float)sdy / m : 0.0f, mdyx = train ? (float)sdyx / m : 0.0f;
    coef[4 * c] = k;
    coef[4 * c + 1] = k * mdy;
    coef[4 * c + 2] = k * invstd * mdyx;
    coef[4 * c + 3] = mean;
}

__global__ void bn_bwd_dx_kernel(const float *__restrict__ x, const float *__restrict__ y,
                                 const float *__restrict__ dy, const float *__restrict__ coef, float *dx, bn_dims d,
                                 int relu, int set)
{
    const size_t total = (size_t)d.n * d.c * d.hw;
    GRID_STRIDE(i, total)
    {
        const int c = (int)((i / (size_t)d.hw) % (size_t)d.c);
        const float k = coef[4 * c], k0 = coef[4 * c + 1], kx = coef[4 * c + 2], mean = coef[4 * c + 3];
        const float v = k * bn_dy(y, dy, i, relu) - k0 - (x[i] - mean) * kx;
        dx[i] = set ? v : dx[i] + v;
    }
}

static void bn_forward(gmc_state *s, const gm_op_args *a)
{
    const bn_dims d = bn_dims_of(a->in[0], a->batch);
    const gm_bn_params *p = &a->op->p.bn;
    float *saved = (float *)a->aux;
    if (a->train) {
        double *part = (double *)gmc_scratch(s, bn_scratch_bytes(&d), "batchnorm2d");
        if (!part) return;
        bn_stats_kernel<<<dim3((unsigned)d.splits, (unsigned)d.c), GMC_THREADS, 0, s->stream>>>(a->x[0], part, d);
        if (!GMC_LAUNCHED(s, "bn_stats_kernel")) return;
        bn_finalize_kernel<<<(unsigned)((d.c + 127) / 128), 128, 0, s->stream>>>(part, saved, a->buf, d, p->eps,
                                                                                p->momentum);
        if (!GMC_LAUNCHED(s, "bn_finalize_kernel")) return;
    }
    const size_t total = (size_t)d.n * d.c * d.hw;
    bn_apply_kernel<<<gmc_blocks(s, total), GMC_THREADS, 0, s->stream>>>(a->x[0], a->y, a->w, saved, a->buf, d,
                                                                         a->train, a->relu_after, p->eps);
    GMC_LAUNCHED(s, "bn_apply_kernel");
}

static void bn_backward(gmc_state *s, const gm_op_args *a)
{
    const bn_dims d = bn_dims_of(a->in[0], a->batch);
    const float eps = a->op->p.bn.eps;
    const float *saved = (const float *)a->aux;
    char *scratch = (char *)gmc_scratch(s, bn_scratch_bytes(&d), "batchnorm2d");
    if (!scratch) return;
    double *part = (double *)scratch;
    float *coef = (float *)(scratch + bn_part_bytes(&d));
    bn_bwd_stats_kernel<<<dim3((unsigned)d.splits, (unsigned)d.c), GMC_THREADS, 0, s->stream>>>(
        a->x[0], a->y, a->dy, saved, a->buf, part, d, a->train, a->relu_after, eps);
    if (!GMC_LAUNCHED(s, "bn_bwd_stats_kernel")) return;
    bn_bwd_finalize_kernel<<<(unsigned)((d.c + 127) / 128), 128, 0, s->stream>>>(part, a->w, saved, a->buf, a->dw,
                                                                                 coef, d, a->train, eps);
    if (!GMC_LAUNCHED(s, "bn_bwd_finalize_kernel") || !a->dx[0]) return;
    const size_t total = (size_t)d.n * d.c * d.hw;
    bn_bwd_dx_kernel<<<gmc_blocks(s, total), GMC_THREADS, 0, s->stream>>>(a->x[0], a->y, a->dy, coef, a->dx[0], d,
                                                                          a->relu_after, a->dx_set[0]);
    GMC_LAUNCHED(s, "bn_bwd_dx_kernel");
}

/* ---- element-wise ---------------------------------------------------------- */

__global__ void relu_kernel(const float *__restrict__ x, float *__restrict__ y, size_t n)
{
    GRID_STRIDE(i, n) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

__global__ void relu_bwd_kernel(const float *__restrict__ y, const float *__restrict__ dy, float *dx, size_t n,
                                int set)
{
    GRID_STRIDE(i, n)
    {
        const float g = y[i] > 0.0f ? dy[i] : 0.0f;
        dx[i] = set ? g : dx[i] + g;
    }
}

__global__ void add_kernel(const float *__restrict__ a, const float *__restrict__ b, float *__restrict__ y, size_t n)
{
    GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}

__global__ void acc_kernel(float *dst, const float *src, size_t n)
{
    GRID_STRIDE(i, n) dst[i] += src[i];
}

void gmc_accumulate(gmc_state *s, float *dst, const float *src, size_t n, int set)
{
    if (!n) return;
    if (set) {
        if (dst != src) GMC_CUDA(s, cudaMemcpyAsync(dst, src, sizeof(float) * n, cudaMemcpyDeviceToDevice, s->stream));
        return;
    }
    acc_kernel<<<gmc_blocks(s, n), GMC_THREADS, 0, s->stream>>>(dst, src, n);
    GMC_LAUNCHED(s, "acc_kernel");
}

/* y[r][c][i] += b[c] */
__global__ void add_bias_kernel(float *y, const float *__restrict__ b, size_t total, int c, int hw)
{
    GRID_STRIDE(i, total) y[i] += b[(i / (size_t)hw) % (size_t)c];
}

void gmc_add_bias(gmc_state *s, float *y, const float *b, int n, int c, int hw)
{
    const size_t total = (size_t)n * c * hw;
    add_bias_kernel<<<gmc_blocks(s, total), GMC_THREADS, 0, s->stream>>>(y, b, total, c, hw);
    GMC_LAUNCHED(s, "add_bias_kernel");
}

__global__ void fill_rows_kernel(float *__restrict__ y, const float *__restrict__ b, size_t total, int c)
{
    GRID_STRIDE(i, total) y[i] = b[i % (size_t)c];
}

void gmc_fill_rows(gmc_state *s, float *y, const float *b, int n, int c)
{
    const size_t total = (size_t)n * c;
    fill_rows_kernel<<<gmc_blocks(s, total), GMC_THREADS, 0, s->stream>>>(y, b, total, c);
    GMC_LAUNCHED(s, "fill_rows_kernel");
}

/* One block per channel: db[c] += sum of dy over the batch and the map. */
__global__ void bias_grad_kernel(float *db, const float *__restrict__ dy, int n, int c, int hw)
{
    __shared__ double sh[32];
    const int ch = blockIdx.x;
    const size_t m = (size_t)n * hw;
    double sum = 0.0;
    for (size_t j = threadIdx.x; j < m; j += blockDim.x) {
        const size_t r = j / (size_t)hw;
        sum += dy[(r * (size_t)c + (size_t)ch) * (size_t)hw + (j - r * (size_t)hw)];
    }
    sum = block_sum(sum, sh);
    if (threadIdx.x == 0) db[ch] += (float)sum;
}

void gmc_bias_grad(gmc_state *s, float *db, const float *dy, int n, int c, int hw)
{
    bias_grad_kernel<<<(unsigned)c, GMC_THREADS, 0, s->stream>>>(db, dy, n, c, hw);
    GMC_LAUNCHED(s, "bias_grad_kernel");
}

/* ---- dropout ------------------------------------------------------------------- */

/*
 * Masks come from a counter-based hash (splitmix64's finaliser) of a per-call
 * seed drawn from the net's generator and the element index: the same seed gives
 * the same mask on any grid, and the generator advances once per call. Draws are
 * 24-bit uniforms in [0, 1) like gm_rng_uniform. The mask is kept as bytes.
 */
__device__ inline float dropout_uniform(uint64_t seed, size_t i)
{
    uint64_t z = seed + ((uint64_t)i + 1u) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

__global__ void dropout_kernel(const float *__restrict__ x, float *__restrict__ y, uint8_t *__restrict__ mask,
                               size_t n, float p, float keep, uint64_t seed)
{
    GRID_STRIDE(i, n)
    {
        const uint8_t kept = dropout_uniform(seed, i) < p ? 0 : 1;
        mask[i] = kept;
        y[i] = x[i] * (kept ? keep : 0.0f);
    }
}

__global__ void dropout_bwd_kernel(const float *__restrict__ dy, const uint8_t *__restrict__ mask, float *dx,
                                   size_t n, float keep, int set)
{
    GRID_STRIDE(i, n)
    {
        const float g = dy[i] * (mask[i] ? keep : 0.0f);
        dx[i] = set ? g : dx[i] + g;
    }
}

static void dropout_forward(gmc_state *s, const gm_op_args *a, size_t n)
{
    if (!a->train) {
        if (a->y != a->x[0])
            GMC_CUDA(s, cudaMemcpyAsync(a->y, a->x[0], sizeof(float) * n, cudaMemcpyDeviceToDevice, s->stream));
        return;
    }
    const float p = a->op->p.dropout.p;
    const uint64_t seed = gm_rng_next(a->rng);
    dropout_kernel<<<gmc_blocks(s, n), GMC_THREADS, 0, s->stream>>>(a->x[0], a->y, (uint8_t *)a->aux, n, p,
                                                                    1.0f / (1.0f - p), seed);
    GMC_LAUNCHED(s, "dropout_kernel");
}

static void dropout_backward(gmc_state *s, const gm_op_args *a, size_t n)
{
    if (!a->train) {
        gmc_accumulate(s, a->dx[0], a->dy, n, a->dx_set[0]);
        return;
    }
    const float keep = 1.0f / (1.0f - a->op->p.dropout.p);
    dropout_bwd_kernel<<<gmc_blocks(s, n), GMC_THREADS, 0, s->stream>>>(a->dy, (const uint8_t *)a->aux, a->dx[0], n,
                                                                        keep, a->dx_set[0]);
    GMC_LAUNCHED(s, "dropout_bwd_kernel");
}

/* ---- pooling --------------------------------------------------------------------- */

typedef struct {
    int k, stride, pad;
    int ih, iw, oh, ow;
} pool_dims;

static pool_dims pool_dims_of(const gm_op_args *a)
{
    const gm_pool_params *p = &a->op->p.pool;
    const pool_dims d = {p->k, p->stride, p->pad, a->in[0].h, a->in[0].w, a->out.h, a->out.w};
    return d;
}

/* The taps [lo, hi) of the window at output o that fall inside [0, size) (gm_cpu_ops.c). */
__device__ inline void window_taps(int o, const pool_dims &p, int size, int *lo, int *hi)
{
    const int start = o * p.stride - p.pad;
    *lo = start < 0 ? -start : 0;
    *hi = size - start < p.k ? size - start : p.k;
}

/* The outputs [lo, hi] along one axis whose windows contain input i. */
__device__ inline void windows_of(int i, const pool_dims &p, int out, int *lo, int *hi)
{
    const int first = i + p.pad - p.k + 1; /* o * stride >= first */
    *lo = first <= 0 ? 0 : (first + p.stride - 1) / p.stride;
    *hi = (i + p.pad) / p.stride;
    if (*hi > out - 1) *hi = out - 1;
}

/* Max and flat argmax of each window, scanned as the CPU does: the first NaN wins,
 * then the first strict maximum (PyTorch's choice). */
__global__ void maxpool_kernel(const float *__restrict__ x, float *__restrict__ y, int32_t *__restrict__ arg,
                               size_t planes, pool_dims p)
{
    const size_t per = (size_t)p.oh * p.ow;
    GRID_STRIDE(i, planes * per)
    {
        const size_t pl = i / per;
        const int o = (int)(i - pl * per), oy = o / p.ow, ox = o - oy * p.ow;
        const float *xp = x + pl * (size_t)p.ih * p.iw;
        int ky0, ky1, kx0, kx1;
        window_taps(oy, p, p.ih, &ky0, &ky1);
        window_taps(ox, p, p.iw, &kx0, &kx1);
        float best = -FLT_MAX;
        int32_t bi = -1;
        for (int ky = ky0; ky < ky1 && !(bi >= 0 && best != best); ky++) {
            const int iy = oy * p.stride - p.pad + ky;
            for (int kx = kx0; kx < kx1; kx++) {
                const int ix = ox * p.stride - p.pad + kx;
                const float v = xp[iy * p.iw + ix];
                if (v != v) { /* the first NaN is the result */
                    best = v;
                    bi = iy * p.iw + ix;
                    break;
                }
                if (bi < 0 || v > best) {
                    best = v;
                    bi = iy * p.iw + ix;
                }
            }
        }
        y[i] = best;
        arg[i] = bi;
    }
}

/* dx at an input: the sum, in output order, of the dy whose argmax it is. */
__global__ void maxpool_bwd_kernel(const float *__restrict__ dy, const int32_t *__restrict__ arg, float *dx,
                                   size_t planes, pool_dims p, int set)
{
    const size_t in_per = (size_t)p.ih * p.iw, out_per = (size_t)p.oh * p.ow;
    GRID_STRIDE(i, planes * in_per)
    {
        const size_t pl = i / in_per;
        const int me = (int)(i - pl * in_per), iy = me / p.iw, ix = me - iy * p.iw;
        int oy0, oy1, ox0, ox1;
        windows_of(iy, p, p.oh, &oy0, &oy1);
        windows_of(ix, p, p.ow, &ox0, &ox1);
        const int32_t *ap = arg + pl * out_per;
        const float *gp = dy + pl * out_per;
        float acc = set ? 0.0f : dx[i];
        for (int oy = oy0; oy <= oy1; oy++)
            for (int ox = ox0; ox <= ox1; ox++)
                if (ap[oy * p.ow + ox] == me) acc += gp[oy * p.ow + ox];
        dx[i] = acc;
    }
}

/* Average pooling divides by k*k including padding (count_include_pad). */
__global__ void avgpool_kernel(const float *__restrict__ x, float *__restrict__ y, size_t planes, pool_dims p,
                               float inv)
{
    const size_t per = (size_t)p.oh * p.ow;
    GRID_STRIDE(i, planes * per)
    {
        const size_t pl = i / per;
        const int o = (int)(i - pl * per), oy = o / p.ow, ox = o - oy * p.ow;
        const float *xp = x + pl * (size_t)p.ih * p.iw;
        int ky0, ky1, kx0, kx1;
        window_taps(oy, p, p.ih, &ky0, &ky1);
        window_taps(ox, p, p.iw, &kx0, &kx1);
        float sum = 0.0f;
        for (int ky = ky0; ky < ky1; ky++)
            for (int kx = kx0; kx < kx1; kx++)
                sum += xp[(oy * p.stride - p.pad + ky) * p.iw + ox * p.stride - p.pad + kx];
        y[i] = sum * inv;
    }
}

__global__ void avgpool_bwd_kernel(const float *__restrict__ dy, float *dx, size_t planes, pool_dims p, float inv,
                                   int set)
{
    const size_t in_per = (size_t)p.ih * p.iw, out_per = (size_t)p.oh * p.ow;
    GRID_STRIDE(i, planes * in_per)
    {
        const size_t pl = i / in_per;
        const int me = (int)(i - pl * in_per), iy = me / p.iw, ix = me - iy * p.iw;
        int oy0, oy1, ox0, ox1;
        windows_of(iy, p, p.oh, &oy0, &oy1);
        windows_of(ix, p, p.ow, &ox0, &ox1);
        const float *gp = dy + pl * out_per;
        float acc = set ? 0.0f : dx[i];
        for (int oy = oy0; oy <= oy1; oy++)
            for (int ox = ox0; ox <= ox1; ox++) acc += gp[oy * p.ow + ox] * inv;
        dx[i] = acc;
    }
}

/* One warp per plane. */
__global__ void gap_kernel(const float *__restrict__ x, float *__restrict__ y, size_t planes, int hw, float inv)
{
    const size_t warps = (size_t)gridDim.x * (blockDim.x >> 5);
    const int lane = threadIdx.x & 31;
    for (size_t pl = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); pl < planes; pl += warps) {
        const float *xp = x + pl * (size_t)hw;
        float sum = 0.0f;
        for (int i = lane; i < hw; i += 32) sum += xp[i];
        sum = warp_sum(sum);
        if (lane == 0) y[pl] = sum * inv;
    }
}

__global__ void gap_bwd_kernel(const float *__restrict__ dy, float *dx, size_t total, int hw, float inv, int set)
{
    GRID_STRIDE(i, total)
    {
        const float g = dy[i / (size_t)hw] * inv;
        dx[i] = set ? g : dx[i] + g;
    }
}

/* ---- nearest-neighbour upsampling -------------------------------------------------- */

__global__ void upsample_kernel(const float *__restrict__ x, float *__restrict__ y, size_t planes, int ih, int iw,
                                int f)
{
    const int oh = ih * f, ow = iw * f;
    const size_t per = (size_t)oh * ow;
    GRID_STRIDE(i, planes * per)
    {
        const size_t pl = i / per;
        const int o = (int)(i - pl * per), oy = o / ow, ox = o - oy * ow;
        y[i] = x[pl * (size_t)ih * iw + (size_t)(oy / f) * iw + ox / f];
    }
}

/* dx at a source pixel: the f*f output gradients it was copied to, rows then columns. */
__global__ void upsample_bwd_kernel(const float *__restrict__ dy, float *dx, size_t planes, int ih, int iw, int f,
                                    int set)
{
    const int ow = iw * f;
    const size_t in_per = (size_t)ih * iw, out_per = in_per * f * f;
    GRID_STRIDE(i, planes * in_per)
    {
        const size_t pl = i / in_per;
        const int me = (int)(i - pl * in_per), iy = me / iw, ix = me - iy * iw;
        const float *g = dy + pl * out_per + (size_t)iy * f * ow + (size_t)ix * f;
        float sum = 0.0f;
        for (int r = 0; r < f; r++)
            for (int b = 0; b < f; b++) sum += g[(size_t)r * ow + b];
        dx[i] = set ? sum : dx[i] + sum;
    }
}

/* ---- dispatch -------------------------------------------------------------------------- */

size_t gmc_op_aux_bytes(const gm_op *op, gm_shape in, gm_shape out, int batch)
{
    (void)in;
    switch (op->kind) {
    case GM_OP_BATCHNORM2D: return 2 * sizeof(float) * (size_t)op->p.bn.c;
    /* every max pool keeps its argmax (the CPU's 2x2 path finds it again instead) */
    case GM_OP_MAXPOOL2D: return sizeof(int32_t) * (size_t)batch * gm_shape_numel(out);
    case GM_OP_DROPOUT: return (size_t)batch * gm_shape_numel(out);
    default: return 0;
    }
}

size_t gmc_op_scratch_bytes(const gm_op *op, gm_shape in, gm_shape out, int batch)
{
    (void)out;
    if (op->kind != GM_OP_BATCHNORM2D) return 0;
    const bn_dims d = bn_dims_of(in, batch);
    return bn_scratch_bytes(&d);
}

static void copy_d2d(gmc_state *s, float *dst, const float *src, size_t n)
{
    if (dst != src && n)
        GMC_CUDA(s, cudaMemcpyAsync(dst, src, sizeof(float) * n, cudaMemcpyDeviceToDevice, s->stream));
}

static void pool_forward(gmc_state *s, const gm_op_args *a)
{
    const pool_dims p = pool_dims_of(a);
    const size_t planes = (size_t)a->batch * a->in[0].c, total = planes * p.oh * p.ow;
    if (a->op->kind == GM_OP_MAXPOOL2D) {
        maxpool_kernel<<<gmc_blocks(s, total), GMC_THREADS, 0, s->stream>>>(a->x[0], a->y, (int32_t *)a->aux,
                                                                            planes, p);
        GMC_LAUNCHED(s, "maxpool_kernel");
        return;
    }
    avgpool_kernel<<<gmc_blocks(s, total), GMC_THREADS, 0, s->stream>>>(a->x[0], a->y, planes, p,
                                                                        1.0f / (float)(p.k * p.k));
    GMC_LAUNCHED(s, "avgpool_kernel");
}

static void pool_backward(gmc_state *s, const gm_op_args *a)
{
    const pool_dims p = pool_dims_of(a);
    const size_t planes = (size_t)a->batch * a->in[0].c, total = planes * p.ih * p.iw;
    if (a->op->kind == GM_OP_MAXPOOL2D) {
        maxpool_bwd_kernel<<<gmc_blocks(s, total), GMC_THREADS, 0, s->stream>>>(
            a->dy, (const int32_t *)a->aux, a->dx[0], planes, p, a->dx_set[0]);
        GMC_LAUNCHED(s, "maxpool_bwd_kernel");
        return;
    }
    avgpool_bwd_kernel<<<gmc_blocks(s, total), GMC_THREADS, 0, s->stream>>>(a->dy, a->dx[0], planes, p,
                                                                            1.0f / (float)(p.k * p.k), a->dx_set[0]);
    GMC_LAUNCHED(s, "avgpool_bwd_kernel");
}

static void gap_forward(gmc_state *s, const gm_op_args *a)
{
    const size_t planes = (size_t)a->batch * a->in[0].c;
    const int hw = a->in[0].h * a->in[0].w;
    gap_kernel<<<gmc_blocks(s, planes * 32), GMC_THREADS, 0, s->stream>>>(a->x[0], a->y, planes, hw,
                                                                          1.0f / (float)hw);
    GMC_LAUNCHED(s, "gap_kernel");
}

static void gap_backward(gmc_state *s, const gm_op_args *a)
{
    const int hw = a->in[0].h * a->in[0].w;
    const size_t total = (size_t)a->batch * a->in[0].c * hw;
    gap_bwd_kernel<<<gmc_blocks(s, total), GMC_THREADS, 0, s->stream>>>(a->dy, a->dx[0], total, hw,
                                                                        1.0f / (float)hw, a->dx_set[0]);
    GMC_LAUNCHED(s, "gap_bwd_kernel");
}

static void upsample_forward(gmc_state *s, const gm_op_args *a)
{
    const gm_shape in = a->in[0];
    const size_t planes = (size_t)a->batch * in.c;
    upsample_kernel<<<gmc_blocks(s, (size_t)a->batch * gm_shape_numel(a->out)), GMC_THREADS, 0, s->stream>>>(
        a->x[0], a->y, planes, in.h, in.w, a->op->p.upsample.factor);
    GMC_LAUNCHED(s, "upsample_kernel");
}

static void upsample_backward(gmc_state *s, const gm_op_args *a)
{
    const gm_shape in = a->in[0];
    const size_t planes = (size_t)a->batch * in.c;
    upsample_bwd_kernel<<<gmc_blocks(s, planes * in.h * in.w), GMC_THREADS, 0, s->stream>>>(
        a->dy, a->dx[0], planes, in.h, in.w, a->op->p.upsample.factor, a->dx_set[0]);
    GMC_LAUNCHED(s, "upsample_bwd_kernel");
}

void gmc_op_forward(gmc_state *s, const gm_op_args *a)
{
    const size_t n = (size_t)a->batch * gm_shape_numel(a->out);
    switch (a->op->kind) {
    case GM_OP_CONV2D: gmc_conv_forward(s, a); break;
    case GM_OP_BATCHNORM2D: bn_forward(s, a); break;
    case GM_OP_RELU:
        relu_kernel<<<gmc_blocks(s, n), GMC_THREADS, 0, s->stream>>>(a->x[0], a->y, n);
        GMC_LAUNCHED(s, "relu_kernel");
        break;
    case GM_OP_MAXPOOL2D:
    case GM_OP_AVGPOOL2D: pool_forward(s, a); break;
    case GM_OP_GLOBALAVGPOOL: gap_forward(s, a); break;
    case GM_OP_LINEAR: gmc_linear_forward(s, a); break;
    case GM_OP_FLATTEN: copy_d2d(s, a->y, a->x[0], n); break;
    case GM_OP_ADD:
        add_kernel<<<gmc_blocks(s, n), GMC_THREADS, 0, s->stream>>>(a->x[0], a->x[1], a->y, n);
        GMC_LAUNCHED(s, "add_kernel");
        break;
    case GM_OP_DROPOUT: dropout_forward(s, a, n); break;
    case GM_OP_UPSAMPLE: upsample_forward(s, a); break;
    case GM_OP_KIND_COUNT: break;
    }
}

void gmc_op_backward(gmc_state *s, const gm_op_args *a)
{
    const size_t n = (size_t)a->batch * gm_shape_numel(a->out);
    switch (a->op->kind) {
    case GM_OP_CONV2D: gmc_conv_backward(s, a); return;
    case GM_OP_BATCHNORM2D: bn_backward(s, a); return;
    case GM_OP_LINEAR: gmc_linear_backward(s, a); return;
    default: break;
    }
    if (!a->dx[0] && !a->dx[1]) return; /* nothing upstream wants a gradient */
    switch (a->op->kind) {
    case GM_OP_RELU:
        relu_bwd_kernel<<<gmc_blocks(s, n), GMC_THREADS, 0, s->stream>>>(a->y, a->dy, a->dx[0], n, a->dx_set[0]);
        GMC_LAUNCHED(s, "relu_bwd_kernel");
        break;
    case GM_OP_MAXPOOL2D:
    case GM_OP_AVGPOOL2D: pool_backward(s, a); break;
    case GM_OP_GLOBALAVGPOOL: gap_backward(s, a); break;
    case GM_OP_FLATTEN:
        if (a->dx[0] != a->dy) gmc_accumulate(s, a->dx[0], a->dy, n, a->dx_set[0]);
        break;
    case GM_OP_ADD:
        for (int i = 0; i < 2; i++)
            if (a->dx[i]) gmc_accumulate(s, a->dx[i], a->dy, n, a->dx_set[i]);
        break;
    case GM_OP_DROPOUT: dropout_backward(s, a, n); break;
    case GM_OP_UPSAMPLE: upsample_backward(s, a); break;
    default: break;
    }
}

/* ---- losses ------------------------------------------------------------------------------- */

/* The first non-finite prediction and the first label outside [0, d), by index. */
__global__ void loss_check_kernel(const float *__restrict__ pred, size_t total, const int32_t *__restrict__ labels,
                                  int n, int d, gmc_loss_dev *L)
{
    GRID_STRIDE(i, total)
    {
        if (!isfinite(pred[i])) atomicMin(&L->bad_pred, (unsigned long long)i);
    }
    if (!labels) return;
    GRID_STRIDE(s, (size_t)n)
    {
        if (labels[s] < 0 || labels[s] >= d) atomicMin(&L->bad_label, (unsigned long long)s);
    }
}

/*
 * Cross-entropy, rows split over blocks: per row the maximum, the sum of
 * exp(z - max) in double, the loss log(se) + max - z[label] and the gradient
 * (softmax - onehot) * scale / n, as gm_cpu_loss computes them. Each block's rows
 * add up in thread 0 in order; nothing is written when the check found a bad input.
 */
__global__ void cross_entropy_kernel(const float *__restrict__ pred, const int32_t *__restrict__ labels, int n, int d,
                                     float scale, float *__restrict__ grad, gmc_loss_dev *L)
{
    __shared__ double shd[32];
    __shared__ float shf[32];
    __shared__ float row_max;
    __shared__ double row_se;
    if (L->bad_pred != GMC_NONE || L->bad_label != GMC_NONE) return;
    double acc = 0.0;
    for (int r = blockIdx.x; r < n; r += gridDim.x) {
        const float *z = pred + (size_t)r * d;
        float mx = -INFINITY;
        for (int j = threadIdx.x; j < d; j += blockDim.x) mx = fmaxf(mx, z[j]);
        mx = block_max(mx, shf);
        if (threadIdx.x == 0) row_max = mx;
        __syncthreads();
        mx = row_max;
        double se = 0.0;
        for (int j = threadIdx.x; j < d; j += blockDim.x) se += exp((double)z[j] - mx);
        se = block_sum(se, shd);
        if (threadIdx.x == 0) row_se = se;
        __syncthreads();
        se = row_se;
        const int lab = labels[r];
        if (threadIdx.x == 0) acc += log(se) + mx - z[lab];
        if (grad)
            for (int j = threadIdx.x; j < d; j += blockDim.x) {
                const double sm = exp((double)z[j] - mx) / se;
                grad[(size_t)r * d + j] = (float)((sm - (j == lab ? 1.0 : 0.0)) * (double)scale / (double)n);
            }
        __syncthreads(); /* row_max and row_se are rewritten by the next row */
    }
    if (threadIdx.x == 0) L->partial[blockIdx.x] = acc;
}

/* L1 and MSE over all elements; a grid-stride sum per thread, then per block. */
__global__ void regression_kernel(const float *__restrict__ pred, const float *__restrict__ target, size_t total,
                                  int l1, float scale, float *__restrict__ grad, gmc_loss_dev *L)
{
    __shared__ double sh[32];
    if (L->bad_pred != GMC_NONE) return;
    const double m = (double)total;
    double acc = 0.0;
    GRID_STRIDE(i, total)
    {
        const double diff = (double)pred[i] - (double)target[i];
        if (l1) {
            acc += fabs(diff);
            if (grad) grad[i] = (float)((double)((diff > 0) - (diff < 0)) * (double)scale / m);
        } else {
            acc += diff * diff;
            if (grad) grad[i] = (float)(2.0 * diff * (double)scale / m);
        }
    }
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0) L->partial[blockIdx.x] = acc;
}

__global__ void loss_total_kernel(gmc_loss_dev *L, int blocks)
{
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    double t = 0.0;
    for (int b = 0; b < blocks; b++) t += L->partial[b];
    L->total = t;
}

/* 1 when p is device (or managed) memory; a host pointer would fault in a kernel. */
static int is_device_ptr(const void *p)
{
    cudaPointerAttributes at;
    if (cudaPointerGetAttributes(&at, p) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return at.type == cudaMemoryTypeDevice || at.type == cudaMemoryTypeManaged;
}

static gm_status check_loss_args(gm_loss_kind kind, const float *pred, const float *target, const int32_t *labels,
                                 int n, int d, const float *grad, gm_error *err)
{
    if (n < 1 || d < 1) return gm_error_set(err, GM_EINVAL, "loss: %d samples of %d outputs", n, d);
    if (kind != GM_LOSS_CROSS_ENTROPY && kind != GM_LOSS_L1 && kind != GM_LOSS_MSE)
        return gm_error_set(err, GM_EINVAL, "loss: unknown kind %d", (int)kind);
    const char *what = NULL;
    if (!pred || !is_device_ptr(pred)) what = "predictions";
    else if (kind == GM_LOSS_CROSS_ENTROPY && (!labels || !is_device_ptr(labels))) what = "labels";
    else if (kind != GM_LOSS_CROSS_ENTROPY && (!target || !is_device_ptr(target))) what = "targets";
    else if (grad && !is_device_ptr(grad)) what = "gradients";
    if (what)
        return gm_error_set(err, GM_EINVAL, "loss: the %s are not in the CUDA backend's memory (allocate them "
                            "with the backend and copy with to_device)", what);
    return GM_OK;
}

/* Reads one value back for an error message (the failure path only). */
template <typename T> static T fetch(gmc_state *s, const T *p)
{
    T v = (T)0;
    if (GMC_CUDA(s, cudaMemcpyAsync(&v, p, sizeof v, cudaMemcpyDeviceToHost, s->stream)))
        GMC_CUDA(s, cudaStreamSynchronize(s->stream));
    return v;
}

gm_status gmc_loss(gmc_state *s, gm_loss_kind kind, const float *pred, const float *target,
                   const int32_t *labels, int n, int d, float scale, float *grad, float *loss, gm_error *err)
{
    gm_status r = check_loss_args(kind, pred, target, labels, n, d, grad, err);
    if (r != GM_OK) return r;
    const size_t total = (size_t)n * (size_t)d;
    const int ce = kind == GM_LOSS_CROSS_ENTROPY;
    gmc_loss_dev *L = s->loss_dev;
    /* all-ones bytes: both "first bad index" fields start at GMC_NONE */
    if (!GMC_CUDA(s, cudaMemsetAsync(L, 0xff, 2 * sizeof(unsigned long long), s->stream))) return GM_EDEVICE;
    loss_check_kernel<<<gmc_blocks(s, total), GMC_THREADS, 0, s->stream>>>(pred, total, ce ? labels : NULL, n, d, L);
    if (!GMC_LAUNCHED(s, "loss_check_kernel")) return GM_EDEVICE;
    int blocks;
    if (ce) {
        blocks = n < GMC_LOSS_BLOCKS ? n : GMC_LOSS_BLOCKS;
        cross_entropy_kernel<<<(unsigned)blocks, GMC_THREADS, 0, s->stream>>>(pred, labels, n, d, scale, grad, L);
        if (!GMC_LAUNCHED(s, "cross_entropy_kernel")) return GM_EDEVICE;
    } else {
        blocks = (int)gmc_blocks(s, total);
        if (blocks > GMC_LOSS_BLOCKS) blocks = GMC_LOSS_BLOCKS;
        regression_kernel<<<(unsigned)blocks, GMC_THREADS, 0, s->stream>>>(pred, target, total, kind == GM_LOSS_L1,
                                                                          scale, grad, L);
        if (!GMC_LAUNCHED(s, "regression_kernel")) return GM_EDEVICE;
    }
    loss_total_kernel<<<1, 32, 0, s->stream>>>(L, blocks);
    if (!GMC_LAUNCHED(s, "loss_total_kernel")) return GM_EDEVICE;
    gmc_loss_host *h = s->loss_host;
    if (!GMC_CUDA(s, cudaMemcpyAsync(h, L, sizeof *h, cudaMemcpyDeviceToHost, s->stream)) ||
        !GMC_CUDA(s, cudaStreamSynchronize(s->stream)))
        return GM_EDEVICE;
    if (h->bad_pred != GMC_NONE) {
        const size_t i = (size_t)h->bad_pred;
        return gm_error_set(err, GM_ENUMERIC, "loss: prediction of sample %zu, output %zu is %g", i / (size_t)d,
                            i % (size_t)d, (double)fetch(s, pred + i));
    }
    if (h->bad_label != GMC_NONE) {
        const int i = (int)h->bad_label;
        return gm_error_set(err, GM_EINVAL, "loss: label %d of sample %d is outside [0, %d)",
                            (int)fetch(s, labels + i), i, d);
    }
    *loss = (float)(h->total / (ce ? (double)n : (double)total));
    if (!isfinite(*loss))
        return gm_error_set(err, GM_ENUMERIC, "loss is %g (targets not finite?)", (double)*loss);
    return GM_OK;
}

/* ---- optimiser updates (gm_cpu_update, element for element) ------------------------------- */

__global__ void sgd_kernel(float *__restrict__ param, const float *__restrict__ grad, float *__restrict__ m, size_t n,
                           float lr, float momentum, float wd, int nesterov, int first)
{
    GRID_STRIDE(i, n)
    {
        float g = grad[i] + wd * param[i];
        if (momentum != 0.0f) {
            m[i] = first ? g : momentum * m[i] + g;
            g = nesterov ? g + momentum * m[i] : m[i];
        }
        param[i] -= lr * g;
    }
}

__global__ void adam_kernel(float *__restrict__ param, const float *__restrict__ grad, float *__restrict__ m,
                            float *__restrict__ v, size_t n, float beta1, float beta2, float eps, float step,
                            float bc2s, float l2, float decay)
{
    GRID_STRIDE(i, n)
    {
        const float g = grad[i] + l2 * param[i];
        m[i] = beta1 * m[i] + (1.0f - beta1) * g;
        v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
        param[i] = param[i] * decay - step * m[i] / (sqrtf(v[i]) / bc2s + eps);
    }
}

void gmc_update(gmc_state *s, const gm_update *u, float *param, const float *grad, float *m, float *v, size_t n)
{
    if (!n) return;
    if (u->kind == gm_update::GM_UPDATE_SGD) {
        sgd_kernel<<<gmc_blocks(s, n), GMC_THREADS, 0, s->stream>>>(param, grad, m, n, u->lr, u->momentum,
                                                                    u->weight_decay, u->nesterov, u->step == 1);
        GMC_LAUNCHED(s, "sgd_kernel");
        return;
    }
    /* the scalars exactly as gm_cpu_update computes them, on the host (the kinds are
     * members of gm_update in C++) */
    const float bc1 = 1.0f - powf(u->beta1, (float)u->step);
    const float bc2s = sqrtf(1.0f - powf(u->beta2, (float)u->step));
    const float step = u->lr / bc1, l2 = u->kind == gm_update::GM_UPDATE_ADAM ? u->weight_decay : 0.0f;
    const float decay = u->kind == gm_update::GM_UPDATE_ADAMW ? 1.0f - u->lr * u->weight_decay : 1.0f;
    adam_kernel<<<gmc_blocks(s, n), GMC_THREADS, 0, s->stream>>>(param, grad, m, v, n, u->beta1, u->beta2, u->eps,
                                                                 step, bc2s, l2, decay);
    GMC_LAUNCHED(s, "adam_kernel");
}

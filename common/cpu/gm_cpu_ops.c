/*
 * The CPU backend's non-convolution kernels: normalisation, activations,
 * pooling, upsampling, linear, residual add, dropout, losses and optimiser updates.
 * Memory-bound loops are split over OpenMP threads only when the tensor is
 * large enough to repay the fork (batch-1 inference stays on one thread).
 */
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <omp.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "gm_cpu_kernels.h"

enum { GM_PAR_MIN = 1 << 15 }; /* elements below which a loop runs on one thread */

static void split(size_t total, int tid, int team, size_t *lo, size_t *hi)
{
    size_t q = total / (size_t)team, r = total % (size_t)team, t = (size_t)tid;
    *lo = t * q + (t < r ? t : r);
    *hi = *lo + q + (t < r ? 1 : 0);
}

/* ---- batch normalisation ------------------------------------------------- */

static void bn_forward(const gm_op_args *a, int nt)
{
    const int C = a->in[0].c, hw = a->in[0].h * a->in[0].w, N = a->batch;
    const float *gamma = a->w, *beta = a->w + C;
    float *rmean = a->buf, *rvar = a->buf + C, *saved = a->aux;
    const gm_bn_params *p = &a->op->p.bn;
    const double m = (double)N * hw;

#pragma omp parallel for num_threads(nt) schedule(static) if ((size_t)N * C * hw >= GM_PAR_MIN)
    for (int c = 0; c < C; c++) {
        float mean, invstd;
        if (a->train) {
            double s = 0.0, ss = 0.0; /* float sums per plane (vectorised), double across planes */
            for (int n = 0; n < N; n++) {
                const float *x = a->x[0] + ((size_t)n * C + c) * hw;
                float ps = 0.0f, pss = 0.0f;
#pragma omp simd reduction(+ : ps, pss)
                for (int i = 0; i < hw; i++) {
                    ps += x[i];
                    pss += x[i] * x[i];
                }
                s += ps;
                ss += pss;
            }
            double mu = s / m, var = ss / m - mu * mu;
            if (var < 0.0) var = 0.0;
            mean = (float)mu;
            invstd = (float)(1.0 / sqrt(var + p->eps));
            saved[c] = mean;
            saved[C + c] = invstd;
            double unbiased = m > 1.0 ? var * m / (m - 1.0) : var;
            rmean[c] = (1.0f - p->momentum) * rmean[c] + p->momentum * mean;
            rvar[c] = (1.0f - p->momentum) * rvar[c] + p->momentum * (float)unbiased;
        } else {
            mean = rmean[c];
            invstd = 1.0f / sqrtf(rvar[c] + p->eps);
        }
        const float scale = gamma[c] * invstd, shift = beta[c] - mean * scale;
        for (int n = 0; n < N; n++) {
            const float *x = a->x[0] + ((size_t)n * C + c) * hw;
            float *y = a->y + ((size_t)n * C + c) * hw;
            if (a->relu_after) {
#pragma omp simd
                for (int i = 0; i < hw; i++) {
                    float v = x[i] * scale + shift;
                    y[i] = v > 0.0f ? v : 0.0f;
                }
            } else {
#pragma omp simd
                for (int i = 0; i < hw; i++) y[i] = x[i] * scale + shift;
            }
        }
    }
}

/* dL/d(BN output) at i: dy itself, or gated by the folded ReLU's output y. */
#define BN_DY(i) (relu ? (y[i] > 0.0f ? dy[i] : 0.0f) : dy[i])

static void bn_backward(const gm_op_args *a, int nt)
{
    const int C = a->in[0].c, hw = a->in[0].h * a->in[0].w, N = a->batch, relu = a->relu_after;
    const float *gamma = a->w;
    const float *saved = a->aux;
    const float m = (float)N * (float)hw;

#pragma omp parallel for num_threads(nt) schedule(static) if ((size_t)N * C * hw >= GM_PAR_MIN)
    for (int c = 0; c < C; c++) {
        float mean, invstd;
        if (a->train) {
            mean = saved[c];
            invstd = saved[C + c];
        } else {
            mean = a->buf[c];
            invstd = 1.0f / sqrtf(a->buf[C + c] + a->op->p.bn.eps);
        }
        double sdy = 0.0, sdyx = 0.0;
        for (int n = 0; n < N; n++) {
            const size_t off = ((size_t)n * C + c) * hw;
            const float *x = a->x[0] + off, *dy = a->dy + off, *y = a->y + off;
            float ps = 0.0f, psx = 0.0f;
#pragma omp simd reduction(+ : ps, psx)
            for (int i = 0; i < hw; i++) {
                float g = BN_DY(i);
                ps += g;
                psx += g * (x[i] - mean);
            }
            sdy += ps;
            sdyx += (double)psx * invstd;
        }
        a->dw[c] += (float)sdyx;
        a->dw[C + c] += (float)sdy;
        if (!a->dx[0]) continue;
        const float k = gamma[c] * invstd;
        /* In eval mode the statistics are constants, so only the direct term remains. */
        const float mdy = a->train ? (float)sdy / m : 0.0f, mdyx = a->train ? (float)sdyx / m : 0.0f;
        const float kx = k * invstd * mdyx, k0 = k * mdy;
        for (int n = 0; n < N; n++) {
            const size_t off = ((size_t)n * C + c) * hw;
            const float *x = a->x[0] + off, *dy = a->dy + off, *y = a->y + off;
            float *dx = a->dx[0] + off;
            if (a->dx_set[0]) {
#pragma omp simd
                for (int i = 0; i < hw; i++) dx[i] = k * BN_DY(i) - k0 - (x[i] - mean) * kx;
            } else {
#pragma omp simd
                for (int i = 0; i < hw; i++) dx[i] += k * BN_DY(i) - k0 - (x[i] - mean) * kx;
            }
        }
    }
}

#undef BN_DY

/* ---- element-wise ------------------------------------------------------- */

static void relu_forward(const gm_op_args *a, size_t n, int nt)
{
    const float *x = a->x[0];
    float *y = a->y;
#pragma omp parallel for simd num_threads(nt) schedule(static) if (n >= GM_PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

static void relu_backward(const gm_op_args *a, size_t n, int nt)
{
    const float *y = a->y, *dy = a->dy;
    float *dx = a->dx[0];
    if (a->dx_set[0]) {
#pragma omp parallel for simd num_threads(nt) schedule(static) if (n >= GM_PAR_MIN)
        for (size_t i = 0; i < n; i++) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    } else {
#pragma omp parallel for simd num_threads(nt) schedule(static) if (n >= GM_PAR_MIN)
        for (size_t i = 0; i < n; i++) dx[i] += y[i] > 0.0f ? dy[i] : 0.0f;
    }
}

static void add_forward(const gm_op_args *a, size_t n, int nt)
{
    const float *x0 = a->x[0], *x1 = a->x[1];
    float *y = a->y;
#pragma omp parallel for simd num_threads(nt) schedule(static) if (n >= GM_PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] = x0[i] + x1[i];
}

/* dst = src (set) or dst += src */
static void acc(float *dst, const float *src, size_t n, int set, int nt)
{
    if (set) {
        if (dst != src) memcpy(dst, src, sizeof(float) * n);
        return;
    }
#pragma omp parallel for simd num_threads(nt) schedule(static) if (n >= GM_PAR_MIN)
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

/* Masks are drawn on one thread from the net's generator, so runs repeat exactly. */
static void dropout_forward(const gm_op_args *a, size_t n)
{
    float *mask = a->aux;
    const float p = a->op->p.dropout.p, keep = 1.0f / (1.0f - p);
    if (!a->train) {
        if (a->y != a->x[0]) memcpy(a->y, a->x[0], sizeof(float) * n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        mask[i] = gm_rng_uniform(a->rng) < p ? 0.0f : keep;
        a->y[i] = a->x[0][i] * mask[i];
    }
}

static void dropout_backward(const gm_op_args *a, size_t n, int nt)
{
    if (!a->train) {
        acc(a->dx[0], a->dy, n, a->dx_set[0], nt);
        return;
    }
    const float *mask = a->aux, *dy = a->dy;
    float *dx = a->dx[0];
    if (a->dx_set[0]) memset(dx, 0, sizeof(float) * n); /* rare op: keep one loop */
#pragma omp parallel for simd num_threads(nt) schedule(static) if (n >= GM_PAR_MIN)
    for (size_t i = 0; i < n; i++) dx[i] += dy[i] * mask[i];
}

/* ---- pooling ------------------------------------------------------------ */

/*
 * The 2x2 stride-2 pool (VGG's) keeps no argmax: forward is a plain vectorised
 * max, and backward finds the winner again as the first element equal to the
 * output (or the first NaN), which is the element PyTorch picks.
 */
static int is_pool2x2(const gm_pool_params *p) { return p->k == 2 && p->stride == 2 && p->pad == 0; }

#if defined(__AVX512F__)
/* Maps are narrow (14 outputs per row at 28x28), too short for the compiler's
 * vector loop, so: masked loads of both rows, even/odd lanes split, masked store. */
static void pool2x2_row(const float *r0, const float *r1, float *yo, int ow)
{
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    for (int ox = 0; ox < ow; ox += 16) {
        int n = ow - ox < 16 ? ow - ox : 16, lo = 2 * n < 16 ? 2 * n : 16, hi = 2 * n - lo;
        __mmask16 mlo = (__mmask16)((1u << lo) - 1u), mhi = (__mmask16)((1u << hi) - 1u);
        __m512 m = _mm512_setzero_ps();
        const float *rows[2] = {r0 + 2 * ox, r1 + 2 * ox};
        for (int r = 0; r < 2; r++) {
            __m512 a = _mm512_maskz_loadu_ps(mlo, rows[r]), b = _mm512_maskz_loadu_ps(mhi, rows[r] + 16);
            __m512 e = _mm512_permutex2var_ps(a, even, b), o = _mm512_permutex2var_ps(a, odd, b);
            __m512 v = r == 0 ? e : _mm512_max_ps(m, e);
            /* _mm512_max_ps drops NaNs; put them back so NaN propagates */
            if (r) v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(e, e, _CMP_UNORD_Q), v, e);
            if (r) v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(m, m, _CMP_UNORD_Q), v, m);
            __m512 w = _mm512_max_ps(v, o);
            w = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(o, o, _CMP_UNORD_Q), w, o);
            m = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), w, v);
        }
        _mm512_mask_storeu_ps(yo + ox, (__mmask16)((1u << n) - 1u), m);
    }
}

/* The gradient of one output row goes to the first input of each window equal to
 * its output (or the first NaN when the output is NaN). */
static void pool2x2_row_backward(const float *r0, const float *r1, const float *yo, const float *g,
                                 float *d0, float *d1, int ow, int iw, int set)
{
    if (set && iw > 2 * ow) { /* an odd last column is in no window */
        d0[iw - 1] = 0.0f;
        d1[iw - 1] = 0.0f;
    }
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    const __m512i lo_half = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi_half = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    for (int ox = 0; ox < ow; ox += 16) {
        int n = ow - ox < 16 ? ow - ox : 16, lo = 2 * n < 16 ? 2 * n : 16, hi = 2 * n - lo;
        __mmask16 mlo = (__mmask16)((1u << lo) - 1u), mhi = (__mmask16)((1u << hi) - 1u);
        __mmask16 mn = (__mmask16)((1u << n) - 1u);
        __m512 y = _mm512_maskz_loadu_ps(mn, yo + ox), gy = _mm512_maskz_loadu_ps(mn, g + ox);
        __mmask16 ynan = _mm512_cmp_ps_mask(y, y, _CMP_UNORD_Q), taken = 0;
        const float *rows[2] = {r0 + 2 * ox, r1 + 2 * ox};
        float *drows[2] = {d0 + 2 * ox, d1 + 2 * ox};
        for (int r = 0; r < 2; r++) {
            __m512 a = _mm512_maskz_loadu_ps(mlo, rows[r]), b = _mm512_maskz_loadu_ps(mhi, rows[r] + 16);
            __m512 v[2] = {_mm512_permutex2var_ps(a, even, b), _mm512_permutex2var_ps(a, odd, b)};
            __m512 gsel[2];
            for (int c = 0; c < 2; c++) {
                __mmask16 hit = _mm512_cmp_ps_mask(v[c], y, _CMP_EQ_OQ) |
                                (ynan & _mm512_cmp_ps_mask(v[c], v[c], _CMP_UNORD_Q));
                hit &= (__mmask16)~taken;
                taken |= hit;
                gsel[c] = _mm512_maskz_mov_ps(hit, gy);
            }
            /* interleave the even and odd gradients back into input order */
            __m512 ga = _mm512_permutex2var_ps(gsel[0], lo_half, gsel[1]);
            __m512 gb = _mm512_permutex2var_ps(gsel[0], hi_half, gsel[1]);
            if (!set) {
                ga = _mm512_add_ps(_mm512_maskz_loadu_ps(mlo, drows[r]), ga);
                gb = _mm512_add_ps(_mm512_maskz_loadu_ps(mhi, drows[r] + 16), gb);
            }
            _mm512_mask_storeu_ps(drows[r], mlo, ga);
            _mm512_mask_storeu_ps(drows[r] + 16, mhi, gb);
        }
    }
}
#else
static inline float max_nan(float m, float v) { return (v > m) | (v != v) ? v : m; }

static void pool2x2_row_backward(const float *r0, const float *r1, const float *yo, const float *g,
                                 float *d0, float *d1, int ow, int iw, int set)
{
    if (set) {
        memset(d0, 0, sizeof(float) * (size_t)iw);
        memset(d1, 0, sizeof(float) * (size_t)iw);
    }
    for (int ox = 0; ox < ow; ox++) {
        const float *x[4] = {r0 + 2 * ox, r0 + 2 * ox + 1, r1 + 2 * ox, r1 + 2 * ox + 1};
        float *d[4] = {d0 + 2 * ox, d0 + 2 * ox + 1, d1 + 2 * ox, d1 + 2 * ox + 1};
        const float m = yo[ox];
        int k = 0;
        while (k < 3 && !(*x[k] == m || (m != m && *x[k] != *x[k]))) k++;
        *d[k] += g[ox];
    }
}

static void pool2x2_row(const float *r0, const float *r1, float *yo, int ow)
{
    for (int ox = 0; ox < ow; ox++)
        yo[ox] = max_nan(max_nan(max_nan(r0[2 * ox], r0[2 * ox + 1]), r1[2 * ox]), r1[2 * ox + 1]);
}
#endif

/* The taps [lo, hi) of the window at output o that fall inside [0, size). */
static inline void window_taps(int o, const gm_pool_params *p, int size, int *lo, int *hi)
{
    int start = o * p->stride - p->pad;
    *lo = start < 0 ? -start : 0;
    *hi = size - start < p->k ? size - start : p->k;
}

/* Max of one window, with its flat index; NaN wins, as in PyTorch. */
static inline float window_max(const float *x, gm_shape in, const gm_pool_params *p, int oy, int ox,
                               int32_t *arg)
{
    float best = -FLT_MAX;
    int32_t bi = -1;
    int ky0, ky1, kx0, kx1;
    window_taps(oy, p, in.h, &ky0, &ky1);
    window_taps(ox, p, in.w, &kx0, &kx1);
    for (int ky = ky0; ky < ky1; ky++) {
        int iy = oy * p->stride - p->pad + ky;
        for (int kx = kx0; kx < kx1; kx++) {
            int ix = ox * p->stride - p->pad + kx;
            float v = x[iy * in.w + ix];
            if (v != v) { /* the first NaN is the result */
                *arg = iy * in.w + ix;
                return v;
            }
            if (bi < 0 || v > best) {
                best = v;
                bi = iy * in.w + ix;
            }
        }
    }
    *arg = bi;
    return best;
}

static void maxpool_forward(const gm_op_args *a, int nt)
{
    const gm_pool_params *p = &a->op->p.pool;
    const gm_shape in = a->in[0], out = a->out;
    const int planes = a->batch * in.c;
    const int fast = is_pool2x2(p);
    int32_t *arg = a->aux;
#pragma omp parallel for num_threads(nt) schedule(static) if ((size_t)planes * gm_shape_numel(out) >= GM_PAR_MIN / 4)
    for (int pl = 0; pl < planes; pl++) {
        const float *x = a->x[0] + (size_t)pl * in.h * in.w;
        float *y = a->y + (size_t)pl * out.h * out.w;
        int32_t *ai = fast ? NULL : arg + (size_t)pl * out.h * out.w;
        for (int oy = 0; oy < out.h; oy++) {
            if (!fast) {
                for (int ox = 0; ox < out.w; ox++)
                    y[oy * out.w + ox] = window_max(x, in, p, oy, ox, &ai[oy * out.w + ox]);
                continue;
            }
            pool2x2_row(x + 2 * oy * in.w, x + (2 * oy + 1) * in.w, y + oy * out.w, out.w);
        }
    }
}

static void maxpool_backward(const gm_op_args *a, int nt)
{
    const gm_shape in = a->in[0], out = a->out;
    const int planes = a->batch * in.c, nout = out.h * out.w;
    const int32_t *arg = a->aux;
    const int fast = is_pool2x2(&a->op->p.pool);
#pragma omp parallel for num_threads(nt) schedule(static) if ((size_t)planes * nout >= GM_PAR_MIN / 4)
    for (int pl = 0; pl < planes; pl++) {
        float *dx = a->dx[0] + (size_t)pl * in.h * in.w;
        const float *dy = a->dy + (size_t)pl * nout, *x = a->x[0] + (size_t)pl * in.h * in.w;
        const float *y = a->y + (size_t)pl * nout;
        if (a->dx_set[0] && !fast) memset(dx, 0, sizeof(float) * (size_t)in.h * in.w);
        if (!fast) {
            const int32_t *ai = arg + (size_t)pl * nout;
            for (int i = 0; i < nout; i++) dx[ai[i]] += dy[i];
            continue;
        }
        if (a->dx_set[0] && in.h % 2) /* an odd last row is in no window */
            memset(dx + (size_t)(in.h - 1) * in.w, 0, sizeof(float) * (size_t)in.w);
        for (int oy = 0; oy < out.h; oy++)
            pool2x2_row_backward(x + 2 * oy * in.w, x + (2 * oy + 1) * in.w, y + oy * out.w, dy + oy * out.w,
                                 dx + 2 * oy * in.w, dx + (2 * oy + 1) * in.w, out.w, in.w, a->dx_set[0]);
    }
}

/* Average pooling divides by k*k including padding (count_include_pad). */
static void avgpool(const gm_op_args *a, int nt, int backward)
{
    const gm_pool_params *p = &a->op->p.pool;
    const gm_shape in = a->in[0], out = a->out;
    const int planes = a->batch * in.c;
    const float inv = 1.0f / (float)(p->k * p->k);
#pragma omp parallel for num_threads(nt) schedule(static) if ((size_t)planes * gm_shape_numel(out) >= GM_PAR_MIN / 4)
    for (int pl = 0; pl < planes; pl++) {
        const size_t ib = (size_t)pl * in.h * in.w, ob = (size_t)pl * out.h * out.w;
        if (backward && a->dx_set[0]) memset(a->dx[0] + ib, 0, sizeof(float) * (size_t)in.h * in.w);
        for (int oy = 0; oy < out.h; oy++)
            for (int ox = 0; ox < out.w; ox++) {
                float s = 0.0f, g = backward ? a->dy[ob + oy * out.w + ox] * inv : 0.0f;
                int ky0, ky1, kx0, kx1;
                window_taps(oy, p, in.h, &ky0, &ky1);
                window_taps(ox, p, in.w, &kx0, &kx1);
                for (int ky = ky0; ky < ky1; ky++) {
                    int iy = oy * p->stride - p->pad + ky;
                    for (int kx = kx0; kx < kx1; kx++) {
                        int ix = ox * p->stride - p->pad + kx;
                        if (backward)
                            a->dx[0][ib + iy * in.w + ix] += g;
                        else
                            s += a->x[0][ib + iy * in.w + ix];
                    }
                }
                if (!backward) a->y[ob + oy * out.w + ox] = s * inv;
            }
    }
}

static void gap(const gm_op_args *a, int nt, int backward)
{
    const int planes = a->batch * a->in[0].c, hw = a->in[0].h * a->in[0].w;
    const float inv = 1.0f / (float)hw;
#pragma omp parallel for num_threads(nt) schedule(static) if ((size_t)planes * hw >= GM_PAR_MIN)
    for (int pl = 0; pl < planes; pl++) {
        if (backward) {
            float g = a->dy[pl] * inv, *dx = a->dx[0] + (size_t)pl * hw;
            if (a->dx_set[0])
                for (int i = 0; i < hw; i++) dx[i] = g;
            else
                for (int i = 0; i < hw; i++) dx[i] += g;
        } else {
            const float *x = a->x[0] + (size_t)pl * hw;
            float s = 0.0f;
            for (int i = 0; i < hw; i++) s += x[i];
            a->y[pl] = s * inv;
        }
    }
}

/* ---- nearest-neighbour upsampling --------------------------------------- */

/* Each input row is widened once, and the f-1 other output rows copy it. */
static void upsample_forward(const gm_op_args *a, int nt)
{
    const int f = a->op->p.upsample.factor;
    const gm_shape in = a->in[0], out = a->out;
    const int planes = a->batch * in.c;
#pragma omp parallel for num_threads(nt) schedule(static) if ((size_t)planes * gm_shape_numel(out) >= GM_PAR_MIN)
    for (int pl = 0; pl < planes; pl++) {
        const float *x = a->x[0] + (size_t)pl * in.h * in.w;
        float *y = a->y + (size_t)pl * out.h * out.w;
        for (int iy = 0; iy < in.h; iy++) {
            const float *xr = x + (size_t)iy * in.w;
            float *yr = y + (size_t)iy * f * out.w;
            for (int ix = 0; ix < in.w; ix++)
                for (int b = 0; b < f; b++) yr[ix * f + b] = xr[ix];
            for (int r = 1; r < f; r++) memcpy(yr + (size_t)r * out.w, yr, sizeof(float) * (size_t)out.w);
        }
    }
}

/* dx at a source pixel is the sum of the f*f output gradients it was copied to. */
static void upsample_backward(const gm_op_args *a, int nt)
{
    const int f = a->op->p.upsample.factor, set = a->dx_set[0];
    const gm_shape in = a->in[0], out = a->out;
    const int planes = a->batch * in.c;
#pragma omp parallel for num_threads(nt) schedule(static) if ((size_t)planes * gm_shape_numel(out) >= GM_PAR_MIN)
    for (int pl = 0; pl < planes; pl++) {
        float *dx = a->dx[0] + (size_t)pl * in.h * in.w;
        const float *dy = a->dy + (size_t)pl * out.h * out.w;
        for (int iy = 0; iy < in.h; iy++)
            for (int ix = 0; ix < in.w; ix++) {
                const float *g = dy + (size_t)iy * f * out.w + (size_t)ix * f;
                float s = 0.0f;
                for (int r = 0; r < f; r++)
                    for (int b = 0; b < f; b++) s += g[(size_t)r * out.w + b];
                float *d = dx + (size_t)iy * in.w + ix;
                *d = set ? s : *d + s;
            }
    }
}

/* ---- linear ------------------------------------------------------------- */

/* Rows of the batch are split over threads; one GEMM per thread. */
static void linear_forward(const gm_op_args *a, int nt)
{
    const gm_linear_params *p = &a->op->p.linear;
    const int team_max = a->batch >= 8 * nt ? nt : 1;
#pragma omp parallel num_threads(team_max)
    {
        size_t lo, hi;
        split((size_t)a->batch, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
        float *y = a->y + lo * (size_t)p->out;
        int rows = (int)(hi - lo);
        if (rows > 0) {
            if (p->bias)
                for (int r = 0; r < rows; r++) memcpy(y + (size_t)r * p->out, a->w + (size_t)p->out * p->in, sizeof(float) * p->out);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, p->out, p->in, 1.0f,
                        a->x[0] + lo * (size_t)p->in, p->in, a->w, p->in, p->bias ? 1.0f : 0.0f, y, p->out);
        }
    }
}

static void linear_backward(const gm_op_args *a, int nt)
{
    const gm_linear_params *p = &a->op->p.linear;
    const int team_max = a->batch * p->out >= 4096 ? nt : 1;
#pragma omp parallel num_threads(team_max)
    {
        int tid = omp_get_thread_num(), team = omp_get_num_threads();
        size_t lo, hi;
        split((size_t)p->out, tid, team, &lo, &hi); /* weight rows owned by this thread */
        if (hi > lo) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(hi - lo), p->in, a->batch, 1.0f,
                        a->dy + lo, p->out, a->x[0], p->in, 1.0f, a->dw + lo * (size_t)p->in, p->in);
            if (p->bias) {
                float *db = a->dw + (size_t)p->out * p->in;
                for (int n = 0; n < a->batch; n++)
                    for (size_t o = lo; o < hi; o++) db[o] += a->dy[(size_t)n * p->out + o];
            }
        }
        if (a->dx[0]) {
            split((size_t)a->batch, tid, team, &lo, &hi);
            if (hi > lo)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(hi - lo), p->in, p->out, 1.0f,
                            a->dy + lo * (size_t)p->out, p->out, a->w, p->in, a->dx_set[0] ? 0.0f : 1.0f,
                            a->dx[0] + lo * (size_t)p->in, p->in);
        }
    }
}

/* ---- dispatch ----------------------------------------------------------- */

size_t gm_cpu_op_aux_bytes(const gm_op *op, gm_shape in, gm_shape out, int batch)
{
    (void)in;
    switch (op->kind) {
    case GM_OP_BATCHNORM2D: return 2 * sizeof(float) * (size_t)op->p.bn.c;
    case GM_OP_MAXPOOL2D:
        return is_pool2x2(&op->p.pool) ? 0 : sizeof(int32_t) * (size_t)batch * gm_shape_numel(out);
    case GM_OP_DROPOUT: return sizeof(float) * (size_t)batch * gm_shape_numel(out);
    default: return 0;
    }
}

void gm_cpu_op_forward(const gm_op_args *a, float *scratch, int nt)
{
    const size_t n = (size_t)a->batch * gm_shape_numel(a->out);
    switch (a->op->kind) {
    case GM_OP_CONV2D: {
        gm_conv_dims d = gm_conv_dims_of(a);
        const gm_conv_params *p = &a->op->p.conv;
        const float *b = p->bias ? a->w + (size_t)p->cout * p->cin * p->k * p->k : NULL;
        gm_cpu_conv_forward(&d, a->x[0], a->w, b, a->y, scratch, nt);
        break;
    }
    case GM_OP_BATCHNORM2D: bn_forward(a, nt); break;
    case GM_OP_RELU: relu_forward(a, n, nt); break;
    case GM_OP_MAXPOOL2D: maxpool_forward(a, nt); break;
    case GM_OP_AVGPOOL2D: avgpool(a, nt, 0); break;
    case GM_OP_GLOBALAVGPOOL: gap(a, nt, 0); break;
    case GM_OP_LINEAR: linear_forward(a, nt); break;
    case GM_OP_FLATTEN:
        if (a->y != a->x[0]) memcpy(a->y, a->x[0], sizeof(float) * n);
        break;
    case GM_OP_ADD: add_forward(a, n, nt); break;
    case GM_OP_DROPOUT: dropout_forward(a, n); break;
    case GM_OP_UPSAMPLE: upsample_forward(a, nt); break;
    case GM_OP_KIND_COUNT: break;
    }
}

void gm_cpu_op_backward(const gm_op_args *a, float *scratch, int nt)
{
    const size_t n = (size_t)a->batch * gm_shape_numel(a->out);
    switch (a->op->kind) {
    case GM_OP_CONV2D: {
        gm_conv_dims d = gm_conv_dims_of(a);
        const gm_conv_params *p = &a->op->p.conv;
        float *db = p->bias ? a->dw + (size_t)p->cout * p->cin * p->k * p->k : NULL;
        gm_cpu_conv_backward(&d, a->x[0], a->w, a->dy, a->dx[0], a->dx_set[0], a->dw, db, scratch, nt);
        break;
    }
    case GM_OP_BATCHNORM2D: bn_backward(a, nt); break;
    case GM_OP_LINEAR: linear_backward(a, nt); break;
    default:
        if (!a->dx[0] && !a->dx[1]) return; /* nothing upstream wants a gradient */
        switch (a->op->kind) {
        case GM_OP_RELU: relu_backward(a, n, nt); break;
        case GM_OP_MAXPOOL2D: maxpool_backward(a, nt); break;
        case GM_OP_AVGPOOL2D: avgpool(a, nt, 1); break;
        case GM_OP_GLOBALAVGPOOL: gap(a, nt, 1); break;
        case GM_OP_FLATTEN:
            if (a->dx[0] != a->dy) acc(a->dx[0], a->dy, n, a->dx_set[0], nt);
            break;
        case GM_OP_ADD:
            for (int i = 0; i < 2; i++)
                if (a->dx[i]) acc(a->dx[i], a->dy, n, a->dx_set[i], nt);
            break;
        case GM_OP_DROPOUT: dropout_backward(a, n, nt); break;
        case GM_OP_UPSAMPLE: upsample_backward(a, nt); break;
        default: break;
        }
    }
}

/* ---- losses ------------------------------------------------------------- */

gm_status gm_cpu_loss(gm_loss_kind kind, const float *pred, const float *target,
                      const int32_t *labels, int n, int d, float scale, float *grad, float *loss,
                      gm_error *err)
{
    for (size_t i = 0; i < (size_t)n * d; i++)
        if (!isfinite(pred[i]))
            return gm_error_set(err, GM_ENUMERIC, "loss: prediction of sample %zu, output %zu is %g",
                                i / (size_t)d, i % (size_t)d, (double)pred[i]);
    double total = 0.0;
    if (kind == GM_LOSS_CROSS_ENTROPY) {
        for (int s = 0; s < n; s++)
            if (labels[s] < 0 || labels[s] >= d)
                return gm_error_set(err, GM_EINVAL, "loss: label %d of sample %d is outside [0, %d)",
                                    (int)labels[s], s, d);
        for (int s = 0; s < n; s++) {
            const float *z = pred + (size_t)s * d;
            float mx = z[0];
            for (int j = 1; j < d; j++) mx = z[j] > mx ? z[j] : mx;
            double se = 0.0;
            for (int j = 0; j < d; j++) se += exp((double)z[j] - mx);
            total += log(se) + mx - z[labels[s]];
            if (grad)
                for (int j = 0; j < d; j++) {
                    double sm = exp((double)z[j] - mx) / se;
                    grad[(size_t)s * d + j] = (float)((sm - (j == labels[s])) * scale / n);
                }
        }
        total /= n;
    } else {
        const double m = (double)n * d;
        for (size_t i = 0; i < (size_t)n * d; i++) {
            double diff = (double)pred[i] - target[i];
            if (kind == GM_LOSS_L1) {
                total += fabs(diff);
                if (grad) grad[i] = (float)(((diff > 0) - (diff < 0)) * scale / m);
            } else {
                total += diff * diff;
                if (grad) grad[i] = (float)(2.0 * diff * scale / m);
            }
        }
        total /= m;
    }
    *loss = (float)total;
    if (!isfinite(*loss))
        return gm_error_set(err, GM_ENUMERIC, "loss is %g (targets not finite?)", (double)*loss);
    return GM_OK;
}

/* ---- optimiser updates (PyTorch's semantics) ---------------------------- */

void gm_cpu_update(const gm_update *u, float *param, const float *grad, float *m, float *v,
                   size_t n, int nt)
{
    if (u->kind == GM_UPDATE_SGD) {
#pragma omp parallel for simd num_threads(nt) schedule(static) if (n >= GM_PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            float g = grad[i] + u->weight_decay * param[i];
            if (u->momentum != 0.0f) {
                m[i] = u->step == 1 ? g : u->momentum * m[i] + g;
                g = u->nesterov ? g + u->momentum * m[i] : m[i];
            }
            param[i] -= u->lr * g;
        }
        return;
    }
    const float bc1 = 1.0f - powf(u->beta1, (float)u->step);
    const float bc2s = sqrtf(1.0f - powf(u->beta2, (float)u->step));
    const float step = u->lr / bc1, l2 = u->kind == GM_UPDATE_ADAM ? u->weight_decay : 0.0f;
    const float decay = u->kind == GM_UPDATE_ADAMW ? 1.0f - u->lr * u->weight_decay : 1.0f;
#pragma omp parallel for simd num_threads(nt) schedule(static) if (n >= GM_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] + l2 * param[i];
        m[i] = u->beta1 * m[i] + (1.0f - u->beta1) * g;
        v[i] = u->beta2 * v[i] + (1.0f - u->beta2) * g * g;
        param[i] = param[i] * decay - step * m[i] / (sqrtf(v[i]) / bc2s + u->eps);
    }
}

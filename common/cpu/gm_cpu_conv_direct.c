/*
 * Direct convolution for "same" stride-1 convolutions (3x3 pad 1, 5x5 pad 2...).
 *
 * im2col + GEMM spends most of its time moving data when channels are few (a
 * 16-channel layer reuses each im2col element only 16 times). Here the image is
 * copied once into a zero-padded plane of width Wp = W + 2p; in that plane the
 * output pixel at flat index j reads input j + ky*Wp + kx, so a vector of 16
 * consecutive outputs reads 16 consecutive inputs for every tap, whatever the
 * image width (the 2p extra columns per row are computed and dropped). Each
 * input vector feeds CB output channels, each weight a whole register row.
 *
 * The input gradient of such a convolution is the same kind of convolution of
 * dy with the weights transposed and flipped, so it reuses the forward kernel.
 * Written with GCC vector extensions: AVX-512 with -march=native on this
 * machine, two AVX2 registers per vector elsewhere.
 */
#include <string.h>

#include <omp.h>

#include "gm_cpu_kernels.h"

typedef float v16 __attribute__((vector_size(64), aligned(4))); /* unaligned loads */

/* Keeps a loaded vector in a register: folded into every FMA that uses it, it
 * would be loaded again each time, and unaligned loads cost two slots. Only
 * where one register holds a whole v16 (AVX-512). */
#if defined(__AVX512F__)
#define KEEP_IN_REGISTER(v) __asm__("" : "+v"(v))
#else
#define KEEP_IN_REGISTER(v) ((void)0)
#endif

/* 3 vectors of pixels x 8 output channels: 24 accumulators. Each input vector is
 * loaded once per tap and used 8 times; each weight is broadcast once, used 3x. */
enum { VB = 3, CB = 8, PIX = 16 * VB };

typedef struct {
    int cin, cout, h, w, k, p, wp;
    size_t in_plane;  /* floats per padded input plane, with read slack */
    size_t out_plane; /* floats per flat output plane, a multiple of PIX */
} plan;

static plan plan_of(int cin, int cout, int h, int w, int k)
{
    plan q = {cin, cout, h, w, k, (k - 1) / 2, w + k - 1, 0, 0};
    q.out_plane = ((size_t)h * q.wp + PIX - 1) / PIX * PIX;
    /* the last pixel block reads up to out_plane - 1 + (k-1)*(wp+1) */
    q.in_plane = (q.out_plane + (size_t)(k - 1) * (q.wp + 1) + 15) & ~(size_t)15;
    return q;
}

int gm_cpu_conv_direct_ok(const gm_conv_dims *d)
{
#if !defined(__AVX512F__)
    (void)d;
    return 0; /* 24 accumulators of 16 floats need AVX-512's 32 wide registers */
#else
    if (d->stride != 1 || d->k % 2 == 0 || d->pad != (d->k - 1) / 2) return 0;
    /* Small maps waste lanes on padding columns and on the last partial block.
     * Measured on Zen 5: 7x7 maps (51% useful lanes) are faster with GEMM; 8x8
     * maps (67%) only while the layer is narrow, GEMM catching up as K grows. */
    plan q = plan_of(d->cin, d->cout, d->h, d->w, d->k);
    double useful = (double)d->h * d->w / (double)q.out_plane;
    return useful >= 0.8 || (useful >= 0.6 && d->cin + d->cout <= 128);
#endif
}

size_t gm_cpu_conv_direct_scratch_floats(const gm_conv_dims *d, int nt)
{
    plan f = plan_of(d->cin, d->cout, d->h, d->w, d->k), b = plan_of(d->cout, d->cin, d->h, d->w, d->k);
    size_t fwd = (size_t)d->cin * f.in_plane + (size_t)d->cout * f.out_plane;
    size_t bwd = (size_t)d->cout * b.in_plane + (size_t)d->cin * b.out_plane;
    size_t per = (fwd > bwd ? fwd : bwd) + 16;
    return per * (size_t)nt + (size_t)d->cin * d->cout * d->k * d->k + 16;
}

static size_t per_thread(const gm_conv_dims *d)
{
    return (gm_cpu_conv_direct_scratch_floats(d, 1) - (size_t)d->cin * d->cout * d->k * d->k - 16);
}

/* Copies one image into zero-padded planes (the slack stays zero). */
static void pad_image(const plan *q, const float *x, float *xp)
{
    memset(xp, 0, sizeof(float) * q->in_plane * (size_t)q->cin);
    for (int c = 0; c < q->cin; c++)
        for (int y = 0; y < q->h; y++)
            memcpy(xp + (size_t)c * q->in_plane + (size_t)(y + q->p) * q->wp + q->p,
                   x + ((size_t)c * q->h + y) * q->w, sizeof(float) * (size_t)q->w);
}

/* out[co0 .. co0+cb) at pixels [j, j+PIX): the register-blocked inner kernel. */
static inline __attribute__((always_inline)) void tile(const plan *q, const float *xp, const float *w,
                                                        float *out, int co0, int cb, size_t j)
{
    v16 acc[CB][VB];
    for (int c = 0; c < cb; c++)
        for (int v = 0; v < VB; v++) acc[c][v] = (v16){0};
    const int kk = q->k * q->k;
    for (int ci = 0; ci < q->cin; ci++) {
        const float *src = xp + (size_t)ci * q->in_plane + j;
        const float *wc = w + ((size_t)co0 * q->cin + ci) * kk;
        for (int ky = 0; ky < q->k; ky++)
            for (int kx = 0; kx < q->k; kx++) {
                const float *s = src + ky * q->wp + kx;
                v16 in[VB];
                for (int v = 0; v < VB; v++) {
                    in[v] = *(const v16 *)(s + 16 * v);
                    KEEP_IN_REGISTER(in[v]);
                }
                for (int c = 0; c < cb; c++) {
                    float wt = wc[(size_t)c * q->cin * kk + ky * q->k + kx];
                    for (int v = 0; v < VB; v++) acc[c][v] += in[v] * wt;
                }
            }
    }
    for (int c = 0; c < cb; c++)
        for (int v = 0; v < VB; v++) *(v16 *)(out + (size_t)(co0 + c) * q->out_plane + j + 16 * v) = acc[c][v];
}

/* Flat padded output planes of one image: out[co][oy*wp + ox]. */
static void conv_image(const plan *q, const float *xp, const float *w, float *out)
{
    for (size_t j = 0; j < q->out_plane; j += PIX) {
        int co = 0;
        for (; co + CB <= q->cout; co += CB) tile(q, xp, w, out, co, CB, j);
        switch (q->cout - co) { /* constant tile heights, so each unrolls fully */
        case 7: tile(q, xp, w, out, co, 7, j); break;
        case 6: tile(q, xp, w, out, co, 6, j); break;
        case 5: tile(q, xp, w, out, co, 5, j); break;
        case 4: tile(q, xp, w, out, co, 4, j); break;
        case 3: tile(q, xp, w, out, co, 3, j); break;
        case 2: tile(q, xp, w, out, co, 2, j); break;
        case 1: tile(q, xp, w, out, co, 1, j); break;
        default: break;
        }
    }
}

/* The valid W columns of each flat output plane into NCHW planes: dst = o + bias
 * (bias may be NULL) when set, dst += o otherwise. */
static void crop_planes(const plan *q, const float *out, float *dst, const float *bias, int set)
{
    for (int c = 0; c < q->cout; c++) {
        const float *o = out + (size_t)c * q->out_plane;
        float *t = dst + (size_t)c * q->h * q->w, b = bias ? bias[c] : 0.0f;
        for (int oy = 0; oy < q->h; oy++)
            for (int ox = 0; ox < q->w; ox++)
                t[oy * q->w + ox] = (set ? b : t[oy * q->w + ox]) + o[oy * q->wp + ox];
    }
}

void gm_cpu_conv_direct_forward(const gm_conv_dims *d, const float *x, const float *w, const float *b,
                                float *y, float *scratch, int nt)
{
    const plan q = plan_of(d->cin, d->cout, d->h, d->w, d->k);
    const size_t per = per_thread(d), hw = (size_t)d->h * d->w;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < d->n; n++) {
        float *xp = scratch + per * (size_t)omp_get_thread_num(), *out = xp + (size_t)q.cin * q.in_plane;
        pad_image(&q, x + (size_t)n * q.cin * hw, xp);
        conv_image(&q, xp, w, out);
        crop_planes(&q, out, y + (size_t)n * q.cout * hw, b, 1);
    }
}

void gm_cpu_conv_direct_backward_data(const gm_conv_dims *d, const float *w, const float *dy, float *dx,
                                      int set, float *scratch, int nt)
{
    /* dx = conv(dy, wt) with wt[ci][co][ky][kx] = w[co][ci][k-1-ky][k-1-kx] */
    const int kk = d->k * d->k;
    const size_t per = per_thread(d), hw = (size_t)d->h * d->w;
    float *wt = scratch + per * (size_t)nt;
    for (int co = 0; co < d->cout; co++)
        for (int ci = 0; ci < d->cin; ci++)
            for (int t = 0; t < kk; t++)
                wt[((size_t)ci * d->cout + co) * kk + t] = w[((size_t)co * d->cin + ci) * kk + (kk - 1 - t)];
    const plan q = plan_of(d->cout, d->cin, d->h, d->w, d->k);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < d->n; n++) {
        float *dyp = scratch + per * (size_t)omp_get_thread_num(), *out = dyp + (size_t)q.cin * q.in_plane;
        pad_image(&q, dy + (size_t)n * q.cin * hw, dyp);
        conv_image(&q, dyp, wt, out);
        crop_planes(&q, out, dx + (size_t)n * q.cout * hw, NULL, set);
    }
}

/*
 * Weight gradient (k = 3): dw[co][ci][ky][kx] = sum over pixels of dy * x shifted by
 * the tap. A stack of g images is laid out plane after plane (stride P, the padded
 * plane), so one long run of vectors covers them all and the 16-lane sums are
 * reduced once per stack; dy is zero at the padding positions, so what those
 * positions read (the neighbouring plane) never counts.
 */
typedef struct {
    int cin, cout, h, w, p, wp, g;
    size_t P;      /* padded plane of one image */
    size_t run;    /* pixels swept: g*P rounded up to a vector */
    size_t xs, ds; /* floats per channel of the stacked x and dy */
} wplan;

/* Pixels per stack: long enough to amortise the reductions, short enough that the
 * stacked x and dy of all channels (re-read for every tap row) stay in L2. */
enum { WCOLS = 4096, WFLOATS_L2 = 1 << 17 };

static wplan wplan_of(const gm_conv_dims *d, int nt)
{
    wplan q = {d->cin, d->cout, d->h, d->w, 1, d->w + 2, 1, 0, 0, 0, 0};
    q.P = (size_t)(d->h + 2) * q.wp;
    int fair = (d->n + nt - 1) / nt;
    size_t cols = (size_t)WFLOATS_L2 / (size_t)(d->cin + d->cout);
    if (cols > WCOLS) cols = WCOLS;
    q.g = (int)((cols + q.P - 1) / q.P);
    if (q.g > fair) q.g = fair;
    if (q.g < 1) q.g = 1;
    q.run = ((size_t)q.g * q.P + 15) & ~(size_t)15;
    q.ds = q.run;
    q.xs = (q.run + 2 * (size_t)q.wp + 2 + 31) & ~(size_t)15;
    return q;
}

static size_t wplan_floats(const wplan *q)
{
    return (size_t)q->cin * q->xs + (size_t)q->cout * q->ds + (size_t)q->cout * q->cin * 9 + (size_t)q->cout + 16;
}

static inline __attribute__((always_inline)) void wtile(const wplan *q, const float *xs, const float *dys,
                                                         float *dw, int co0, int cb, int ci, int ky)
{
    v16 acc[CB][3];
    for (int c = 0; c < cb; c++)
        for (int t = 0; t < 3; t++) acc[c][t] = (v16){0};
    const float *src = xs + (size_t)ci * q->xs + (size_t)ky * q->wp;
    for (size_t j = 0; j < q->run; j += 16) {
        v16 in[3];
        for (int t = 0; t < 3; t++) {
            in[t] = *(const v16 *)(src + j + t);
            KEEP_IN_REGISTER(in[t]);
        }
        for (int c = 0; c < cb; c++) {
            v16 gv = *(const v16 *)(dys + (size_t)(co0 + c) * q->ds + j);
            for (int t = 0; t < 3; t++) acc[c][t] += gv * in[t];
        }
    }
    for (int c = 0; c < cb; c++)
        for (int t = 0; t < 3; t++) {
            float sum = 0.0f;
            for (int l = 0; l < 16; l++) sum += acc[c][t][l];
            dw[(((size_t)(co0 + c) * q->cin + ci) * 3 + ky) * 3 + t] += sum;
        }
}

static void weights_stack(const wplan *q, const float *xs, const float *dys, float *dw)
{
    for (int ci = 0; ci < q->cin; ci++)
        for (int ky = 0; ky < 3; ky++) {
            int co = 0;
            for (; co + CB <= q->cout; co += CB) wtile(q, xs, dys, dw, co, CB, ci, ky);
            switch (q->cout - co) {
            case 7: wtile(q, xs, dys, dw, co, 7, ci, ky); break;
            case 6: wtile(q, xs, dys, dw, co, 6, ci, ky); break;
            case 5: wtile(q, xs, dys, dw, co, 5, ci, ky); break;
            case 4: wtile(q, xs, dys, dw, co, 4, ci, ky); break;
            case 3: wtile(q, xs, dys, dw, co, 3, ci, ky); break;
            case 2: wtile(q, xs, dys, dw, co, 2, ci, ky); break;
            case 1: wtile(q, xs, dys, dw, co, 1, ci, ky); break;
            default: break;
            }
        }
}

/* Stacks images [n0, n0+gc) of x (padded) and dy (flat, zero at the padding). */
static void stack_images(const wplan *q, const float *x, const float *dy, int gc, float *xs, float *dys)
{
    const size_t hw = (size_t)q->h * q->w;
    memset(xs, 0, sizeof(float) * q->xs * (size_t)q->cin);
    memset(dys, 0, sizeof(float) * q->ds * (size_t)q->cout);
    for (int gi = 0; gi < gc; gi++) {
        for (int c = 0; c < q->cin; c++)
            for (int y = 0; y < q->h; y++)
                memcpy(xs + (size_t)c * q->xs + (size_t)gi * q->P + (size_t)(y + 1) * q->wp + 1,
                       x + ((size_t)gi * q->cin + c) * hw + (size_t)y * q->w, sizeof(float) * (size_t)q->w);
        for (int c = 0; c < q->cout; c++)
            for (int y = 0; y < q->h; y++)
                memcpy(dys + (size_t)c * q->ds + (size_t)gi * q->P + (size_t)y * q->wp,
                       dy + ((size_t)gi * q->cout + c) * hw + (size_t)y * q->w, sizeof(float) * (size_t)q->w);
    }
}

/* Wide layers re-read too much per reduction; GEMM's weight gradient wins there. */
int gm_cpu_conv_direct_weights_ok(const gm_conv_dims *d)
{
    return d->k == 3 && d->cin + d->cout <= 64 && gm_cpu_conv_direct_ok(d);
}

size_t gm_cpu_conv_direct_weights_scratch_floats(const gm_conv_dims *d, int nt)
{
    wplan q = wplan_of(d, nt);
    return wplan_floats(&q) * (size_t)nt;
}

void gm_cpu_conv_direct_backward_weights(const gm_conv_dims *d, const float *x, const float *dy, float *dw,
                                         float *db, float *scratch, int nt)
{
    const wplan q = wplan_of(d, nt);
    const size_t per = wplan_floats(&q), hw = (size_t)d->h * d->w;
    const size_t nw = (size_t)d->cout * d->cin * 9, nwb = nw + (size_t)d->cout;
    const size_t part_off = (size_t)q.cin * q.xs + (size_t)q.cout * q.ds;
    const int nchunks = (d->n + q.g - 1) / q.g;
#pragma omp parallel num_threads(nt)
    {
        int tid = omp_get_thread_num(), team = omp_get_num_threads();
        float *xs = scratch + per * (size_t)tid, *dys = xs + (size_t)q.cin * q.xs;
        float *part = xs + part_off; /* dw then db: this thread's sums */
        memset(part, 0, sizeof(float) * nwb);
#pragma omp for schedule(static)
        for (int c = 0; c < nchunks; c++) {
            int n0 = c * q.g, gc = d->n - n0 < q.g ? d->n - n0 : q.g;
            stack_images(&q, x + (size_t)n0 * q.cin * hw, dy + (size_t)n0 * q.cout * hw, gc, xs, dys);
            weights_stack(&q, xs, dys, part);
            if (db)
                for (int gi = 0; gi < gc; gi++)
                    for (int co = 0; co < q.cout; co++) {
                        const float *gp = dy + ((size_t)(n0 + gi) * q.cout + co) * hw;
                        float sum = 0.0f;
                        for (size_t i = 0; i < hw; i++) sum += gp[i];
                        part[nw + (size_t)co] += sum;
                    }
        }
#pragma omp for schedule(static)
        for (size_t i = 0; i < nwb; i++) {
            float sum = 0.0f;
            for (int t = 0; t < team; t++) sum += scratch[per * (size_t)t + part_off + i];
            if (i < nw)
                dw[i] += sum;
            else if (db)
                db[i - nw] += sum;
        }
    }
}

/*
 * Convolution on the CPU: im2col + one cblas_sgemm per chunk of images.
 *
 * Small images give short GEMMs (a 4x4 feature map is 16 columns per image), so
 * images are grouped into chunks of about GM_CONV_COLS columns: the GEMM sees
 * [K x g*HW] and its result is scattered back to NCHW. Chunks are spread over
 * OpenMP threads; weight gradients go to per-thread partial sums that are then
 * reduced, so no thread ever writes another's memory.
 */
#include <cblas.h>
#include <omp.h>
#include <string.h>

#include "gm_cpu_kernels.h"

enum { GM_CONV_COLS = 1024 };

gm_conv_dims gm_conv_dims_of(const gm_op_args *a)
{
    const gm_conv_params *p = &a->op->p.conv;
    return (gm_conv_dims){a->batch, a->in[0].c, a->in[0].h, a->in[0].w, a->out.c, a->out.h,
                          a->out.w, p->k, p->stride, p->pad};
}

static int chunk_images(const gm_conv_dims *d, int nt)
{
    int hw = d->ho * d->wo;
    int g = (GM_CONV_COLS + hw - 1) / hw;
    int fair = (d->n + nt - 1) / nt; /* leave every thread at least one chunk */
    if (g > fair) g = fair;
    return g < 1 ? 1 : g;
}

static size_t per_thread_floats(const gm_conv_dims *d, int g)
{
    size_t kdim = (size_t)d->cin * (size_t)(d->k * d->k);
    size_t cols = (size_t)g * (size_t)(d->ho * d->wo);
    /* col (also dcol), gathered output, weight and bias partial sums */
    size_t f = kdim * cols + (size_t)d->cout * cols + (size_t)d->cout * kdim + (size_t)d->cout;
    return (f + 15) & ~(size_t)15; /* keep every thread's slice 64-byte aligned */
}

size_t gm_cpu_conv_scratch_floats(const gm_conv_dims *d, int nt)
{
    size_t gemm = per_thread_floats(d, chunk_images(d, nt)) * (size_t)nt;
    size_t direct = gm_cpu_conv_direct_ok(d) ? gm_cpu_conv_direct_scratch_floats(d, nt) : 0;
    size_t wgt = gm_cpu_conv_direct_weights_ok(d) ? gm_cpu_conv_direct_weights_scratch_floats(d, nt) : 0;
    /* the paths never run at the same time, so they share one region */
    size_t m = gemm > direct ? gemm : direct;
    return m > wgt ? m : wgt;
}

/* The output columns [lo, hi) whose input column ox*s - p + kx lies inside the image. */
static void valid_cols(const gm_conv_dims *d, int kx, int *lo, int *hi)
{
    int s = d->stride, first = d->pad - kx, end = d->w + d->pad - kx;
    int l = first > 0 ? (first + s - 1) / s : 0;
    int h = end > 0 ? (end + s - 1) / s : 0;
    if (h > d->wo) h = d->wo;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* A stride-1 convolution whose output has its input's size (3x3 pad 1, 5x5 pad 2). */
static int is_same(const gm_conv_dims *d) { return d->stride == 1 && d->ho == d->h && d->wo == d->w; }

/*
 * im2col of a "same" stride-1 convolution: each row of col is the image shifted
 * by (ky-p, kx-p), so one copy per plane plus zeroed border columns replaces a
 * copy per image row (the hot case: every 3x3 pad-1 layer).
 */
static void im2col_same(const gm_conv_dims *d, const float *x, int g, float *col, int cols)
{
    const int k = d->k, p = d->pad, w = d->w, hw = d->h * d->w;
    for (int ci = 0; ci < d->cin; ci++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                const int shift = (ky - p) * w + (kx - p);
                const int lo = shift < 0 ? -shift : 0, hi = shift > 0 ? hw - shift : hw;
                for (int gi = 0; gi < g; gi++) {
                    const float *src = x + ((size_t)gi * d->cin + ci) * (size_t)hw;
                    float *o = col + (size_t)((ci * k + ky) * k + kx) * (size_t)cols + (size_t)gi * hw;
                    if (lo >= hi) {
                        memset(o, 0, sizeof(float) * (size_t)hw);
                        continue;
                    }
                    memset(o, 0, sizeof(float) * (size_t)lo);
                    memcpy(o + lo, src + lo + shift, sizeof(float) * (size_t)(hi - lo));
                    memset(o + hi, 0, sizeof(float) * (size_t)(hw - hi));
                    /* columns whose source lies left or right of the image (they wrapped rows) */
                    for (int oy = 0; oy < d->h; oy++) {
                        float *r = o + (size_t)oy * w;
                        for (int ox = 0; ox < p - kx; ox++) r[ox] = 0.0f;
                        for (int ox = w - (kx - p); ox < w; ox++) r[ox] = 0.0f;
                    }
                }
            }
}

static void im2col(const gm_conv_dims *d, const float *x, int g, float *col, int cols)
{
    const int k = d->k, s = d->stride, p = d->pad, hw = d->ho * d->wo;
    if (is_same(d)) {
        im2col_same(d, x, g, col, cols);
        return;
    }
    for (int ci = 0; ci < d->cin; ci++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                float *dst = col + (size_t)((ci * k + ky) * k + kx) * (size_t)cols;
                int lo, hi;
                valid_cols(d, kx, &lo, &hi);
                for (int gi = 0; gi < g; gi++) {
                    const float *src = x + ((size_t)gi * d->cin + ci) * (size_t)(d->h * d->w);
                    for (int oy = 0; oy < d->ho; oy++) {
                        float *o = dst + (size_t)gi * hw + (size_t)oy * d->wo;
                        int iy = oy * s - p + ky;
                        if (iy < 0 || iy >= d->h) {
                            memset(o, 0, sizeof(float) * (size_t)d->wo);
                            continue;
                        }
                        const float *row = src + (size_t)iy * d->w;
                        const int off = kx - p; /* ox*s + off >= 0 for ox >= lo */
                        for (int ox = 0; ox < lo; ox++) o[ox] = 0.0f;
                        if (s == 1)
                            memcpy(o + lo, row + lo + off, sizeof(float) * (size_t)(hi - lo));
                        else if (s == 2) /* a constant stride lets the compiler vectorise */
                            for (int ox = lo; ox < hi; ox++) o[ox] = row[2 * ox + off];
                        else
                            for (int ox = lo; ox < hi; ox++) o[ox] = row[ox * s + off];
                        for (int ox = hi; ox < d->wo; ox++) o[ox] = 0.0f;
                    }
                }
            }
}

/* The transpose of im2col_same: zero the wrapped border columns of col (scratch),
 * then add each shifted plane back with one contiguous, vectorised loop. With
 * set, the centre tap, which covers every pixel, writes first: no zeroing pass. */
static void col2im_same(const gm_conv_dims *d, float *col, int g, float *dx, int cols, int set)
{
    const int k = d->k, p = d->pad, w = d->w, hw = d->h * d->w, centre = p * k + p;
    for (int gi = 0; gi < g; gi++)
        for (int ci = 0; ci < d->cin; ci++) {
            float *img = dx + ((size_t)gi * d->cin + ci) * (size_t)hw;
            const float *oc = col + (size_t)(ci * k * k + centre) * (size_t)cols + (size_t)gi * hw;
            if (set) memcpy(img, oc, sizeof(float) * (size_t)hw);
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++) {
                    if (set && ky * k + kx == centre) continue;
                    const int shift = (ky - p) * w + (kx - p);
                    const int lo = shift < 0 ? -shift : 0, hi = shift > 0 ? hw - shift : hw;
                    float *o = col + (size_t)((ci * k + ky) * k + kx) * (size_t)cols + (size_t)gi * hw;
                    if (kx != p)
                        for (int oy = 0; oy < d->h; oy++) {
                            float *r = o + (size_t)oy * w;
                            for (int ox = 0; ox < p - kx; ox++) r[ox] = 0.0f;
                            for (int ox = w - (kx - p); ox < w; ox++) r[ox] = 0.0f;
                        }
#pragma omp simd
                    for (int j = lo; j < hi; j++) img[j + shift] += o[j];
                }
        }
}

/* dx += col2im(col), or dx = col2im(col) when set. */
static void col2im(const gm_conv_dims *d, float *col, int g, float *dx, int cols, int set)
{
    const int k = d->k, s = d->stride, p = d->pad, hw = d->ho * d->wo;
    if (is_same(d)) {
        col2im_same(d, col, g, dx, cols, set);
        return;
    }
    if (set) memset(dx, 0, sizeof(float) * (size_t)g * d->cin * (size_t)(d->h * d->w));
    for (int gi = 0; gi < g; gi++)
        for (int ci = 0; ci < d->cin; ci++) {
            float *img = dx + ((size_t)gi * d->cin + ci) * (size_t)(d->h * d->w);
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++) {
                    const float *src = col + (size_t)((ci * k + ky) * k + kx) * (size_t)cols +
                                       (size_t)gi * hw;
                    int lo, hi;
                    valid_cols(d, kx, &lo, &hi);
                    for (int oy = 0; oy < d->ho; oy++) {
                        int iy = oy * s - p + ky;
                        if (iy < 0 || iy >= d->h) continue;
                        float *row = img + (size_t)iy * d->w;
                        const float *o = src + (size_t)oy * d->wo;
                        if (s == 1)
                            for (int ox = lo; ox < hi; ox++) row[ox + kx - p] += o[ox];
                        else if (s == 2)
                            for (int ox = lo; ox < hi; ox++) row[2 * ox + kx - p] += o[ox];
                        else
                            for (int ox = lo; ox < hi; ox++) row[ox * s + kx - p] += o[ox];
                    }
                }
        }
}

static int is_pointwise(const gm_conv_dims *d) { return d->k == 1 && d->stride == 1 && d->pad == 0; }

void gm_cpu_conv_forward(const gm_conv_dims *d, const float *x, const float *w, const float *b,
                         float *y, float *scratch, int nt)
{
    if (gm_cpu_conv_direct_ok(d)) {
        gm_cpu_conv_direct_forward(d, x, w, b, y, scratch, nt);
        return;
    }
    const int hw = d->ho * d->wo, kdim = d->cin * d->k * d->k;
    const int g = chunk_images(d, nt), nchunks = (d->n + g - 1) / g;
    const size_t per = per_thread_floats(d, g);
    const size_t in_img = (size_t)d->cin * (size_t)(d->h * d->w), out_img = (size_t)d->cout * hw;

#pragma omp parallel for num_threads(nt) schedule(static)
    for (int c = 0; c < nchunks; c++) {
        float *col = scratch + per * (size_t)omp_get_thread_num();
        float *tmp = col + (size_t)kdim * (size_t)g * hw;
        int n0 = c * g, gc = d->n - n0 < g ? d->n - n0 : g, cols = gc * hw;
        const float *bmat = col;
        if (gc == 1 && is_pointwise(d))
            bmat = x + (size_t)n0 * in_img;
        else
            im2col(d, x + (size_t)n0 * in_img, gc, col, cols);
        if (gc == 1) {
            float *yo = y + (size_t)n0 * out_img;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d->cout, hw, kdim, 1.0f, w,
                        kdim, bmat, hw, 0.0f, yo, hw);
            if (b)
                for (int co = 0; co < d->cout; co++)
                    for (int i = 0; i < hw; i++) yo[(size_t)co * hw + i] += b[co];
            continue;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d->cout, cols, kdim, 1.0f, w, kdim,
                    bmat, cols, 0.0f, tmp, cols);
        for (int gi = 0; gi < gc; gi++)
            for (int co = 0; co < d->cout; co++) {
                float *yo = y + (size_t)(n0 + gi) * out_img + (size_t)co * hw;
                const float *t = tmp + (size_t)co * cols + (size_t)gi * hw;
                float bias = b ? b[co] : 0.0f;
                for (int i = 0; i < hw; i++) yo[i] = t[i] + bias;
            }
    }
}

/* One chunk's contribution to dw, db and dx; dwp/dbp are this thread's sums. */
static void conv_backward_chunk(const gm_conv_dims *d, int n0, int gc, int g, int dx_set, const float *x,
                                const float *w, const float *dy, float *dx, float *dwp,
                                float *dbp, float *col)
{
    const int hw = d->ho * d->wo, kdim = d->cin * d->k * d->k, cols = gc * hw;
    const size_t in_img = (size_t)d->cin * (size_t)(d->h * d->w), out_img = (size_t)d->cout * hw;
    float *tmp = col + (size_t)kdim * (size_t)g * hw;
    const float *dmat = dy + (size_t)n0 * out_img;
    if (gc > 1) {
        for (int gi = 0; gi < gc; gi++)
            for (int co = 0; co < d->cout; co++)
                memcpy(tmp + (size_t)co * cols + (size_t)gi * hw,
                       dy + (size_t)(n0 + gi) * out_img + (size_t)co * hw, sizeof(float) * hw);
        dmat = tmp;
    }
    int direct = gc == 1 && is_pointwise(d);
    const float *bmat = direct ? x + (size_t)n0 * in_img : col;
    if (!direct) im2col(d, x + (size_t)n0 * in_img, gc, col, cols);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d->cout, kdim, cols, 1.0f, dmat, cols,
                bmat, cols, 1.0f, dwp, kdim);
    if (dbp)
        for (int co = 0; co < d->cout; co++) {
            const float *r = dmat + (size_t)co * cols;
            float s = 0.0f;
            for (int i = 0; i < cols; i++) s += r[i];
            dbp[co] += s;
        }
    if (!dx) return;
    if (direct) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kdim, cols, d->cout, 1.0f, w, kdim,
                    dmat, cols, dx_set ? 0.0f : 1.0f, dx + (size_t)n0 * in_img, cols);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kdim, cols, d->cout, 1.0f, w, kdim, dmat,
                cols, 0.0f, col, cols);
    col2im(d, col, gc, dx + (size_t)n0 * in_img, cols, dx_set);
}

void gm_cpu_conv_backward(const gm_conv_dims *d, const float *x, const float *w, const float *dy,
                          float *dx, int dx_set, float *dw, float *db, float *scratch, int nt)
{
    const int hw = d->ho * d->wo, kdim = d->cin * d->k * d->k;
    const int g = chunk_images(d, nt), nchunks = (d->n + g - 1) / g;
    const size_t per = per_thread_floats(d, g), nw = (size_t)d->cout * kdim;
    const size_t part_off = (size_t)kdim * (size_t)g * hw + (size_t)d->cout * (size_t)g * hw;
    if (gm_cpu_conv_direct_ok(d)) { /* the direct path, one pass per gradient */
        if (gm_cpu_conv_direct_weights_ok(d)) gm_cpu_conv_direct_backward_weights(d, x, dy, dw, db, scratch, nt);
        if (dx) gm_cpu_conv_direct_backward_data(d, w, dy, dx, dx_set, scratch, nt);
        if (gm_cpu_conv_direct_weights_ok(d)) return;
        dx = NULL; /* 5x5 and larger: weights by GEMM below */
    }

#pragma omp parallel num_threads(nt)
    {
        int tid = omp_get_thread_num(), team = omp_get_num_threads();
        float *col = scratch + per * (size_t)tid;
        float *dwp = dw, *dbp = db;
        if (team > 1) { /* private partial sums, reduced below */
            dwp = col + part_off;
            dbp = db ? dwp + nw : NULL;
            memset(dwp, 0, sizeof(float) * (nw + (size_t)d->cout));
        }
#pragma omp for schedule(static)
        for (int c = 0; c < nchunks; c++) {
            int n0 = c * g, gc = d->n - n0 < g ? d->n - n0 : g;
            conv_backward_chunk(d, n0, gc, g, dx_set, x, w, dy, dx, dwp, dbp, col);
        }
        if (team > 1) {
#pragma omp for schedule(static)
            for (size_t i = 0; i < nw + (size_t)d->cout; i++) {
                if (i >= nw && !db) continue;
                float s = 0.0f;
                for (int t = 0; t < team; t++) s += scratch[per * (size_t)t + part_off + i];
                if (i < nw)
                    dw[i] += s;
                else
                    db[i - nw] += s;
            }
        }
    }
}

#include "gm_stitch.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct gm_stitch_acc {
    int ca, cb;
    double n;        /* pixels */
    double *G;       /* ca x ca: sum x_a x_a^T */
    double *C;       /* ca x cb: sum x_a x_b^T */
    double *sa, *sb; /* sums of x_a, x_b */
    double *qb;      /* sums of x_b^2 per channel */
    float *tg, *tc;  /* one sample's products, in float (a few thousand pixels each) */
};

gm_status gm_stitch_acc_create(gm_stitch_acc **out, int ca, int cb, gm_error *err)
{
    *out = NULL;
    if (ca < 1 || cb < 1 || ca > 8192 || cb > 8192)
        return gm_error_set(err, GM_EINVAL, "stitch: %d -> %d channels (1 to 8192 each)", ca, cb);
    gm_stitch_acc *a = calloc(1, sizeof *a);
    if (!a) return gm_error_set(err, GM_ENOMEM, "stitch: out of memory");
    a->ca = ca;
    a->cb = cb;
    size_t g = (size_t)ca * ca, c = (size_t)ca * cb;
    a->G = calloc(g, sizeof(double));
    a->C = calloc(c, sizeof(double));
    a->sa = calloc((size_t)ca, sizeof(double));
    a->sb = calloc((size_t)cb, sizeof(double));
    a->qb = calloc((size_t)cb, sizeof(double));
    a->tg = malloc(g * sizeof(float));
    a->tc = malloc(c * sizeof(float));
    if (!a->G || !a->C || !a->sa || !a->sb || !a->qb || !a->tg || !a->tc) {
        gm_stitch_acc_free(a);
        return gm_error_set(err, GM_ENOMEM, "stitch: out of memory for %d x %d sums", ca, cb);
    }
    *out = a;
    return GM_OK;
}

void gm_stitch_acc_free(gm_stitch_acc *a)
{
    if (!a) return;
    free(a->G);
    free(a->C);
    free(a->sa);
    free(a->sb);
    free(a->qb);
    free(a->tg);
    free(a->tc);
    free(a);
}

void gm_stitch_acc_add(gm_stitch_acc *a, const float *xa, const float *xb, int n, size_t hw)
{
    const int ca = a->ca, cb = a->cb;
    for (int s = 0; s < n; s++) {
        const float *A = xa + (size_t)s * ca * hw, *B = xb + (size_t)s * cb * hw;
        /* per sample in float (hw terms), across samples in double */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ca, ca, (int)hw, 1.0f, A, (int)hw, A, (int)hw, 0.0f,
                    a->tg, ca);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ca, cb, (int)hw, 1.0f, A, (int)hw, B, (int)hw, 0.0f,
                    a->tc, cb);
        for (size_t k = 0; k < (size_t)ca * ca; k++) a->G[k] += a->tg[k];
        for (size_t k = 0; k < (size_t)ca * cb; k++) a->C[k] += a->tc[k];
        for (int i = 0; i < ca; i++) {
            double sum = 0.0;
            for (size_t p = 0; p < hw; p++) sum += A[(size_t)i * hw + p];
            a->sa[i] += sum;
        }
        for (int j = 0; j < cb; j++) {
            double sum = 0.0, sq = 0.0;
            for (size_t p = 0; p < hw; p++) {
                double v = B[(size_t)j * hw + p];
                sum += v;
                sq += v * v;
            }
            a->sb[j] += sum;
            a->qb[j] += sq;
        }
        a->n += (double)hw;
    }
}

void gm_stitch_fit_free(gm_stitch_fit *f)
{
    free(f->M);
    free(f->c);
    free(f->mean_mx);
    free(f->var_mx);
    memset(f, 0, sizeof *f);
}

/* In-place Cholesky A = L L^T of an n x n symmetric positive definite matrix (lower triangle). */
static int cholesky(double *A, int n)
{
    for (int j = 0; j < n; j++) {
        double d = A[(size_t)j * n + j];
        for (int k = 0; k < j; k++) d -= A[(size_t)j * n + k] * A[(size_t)j * n + k];
        if (!(d > 0.0)) return -1;
        d = sqrt(d);
        A[(size_t)j * n + j] = d;
        for (int i = j + 1; i < n; i++) {
            double s = A[(size_t)i * n + j];
            for (int k = 0; k < j; k++) s -= A[(size_t)i * n + k] * A[(size_t)j * n + k];
            A[(size_t)i * n + j] = s / d;
        }
    }
    return 0;
}

/* Solves L L^T x = b in place for one right-hand side. */
static void chol_solve(const double *L, int n, double *b)
{
    for (int i = 0; i < n; i++) {
        double s = b[i];
        for (int k = 0; k < i; k++) s -= L[(size_t)i * n + k] * b[k];
        b[i] = s / L[(size_t)i * n + i];
    }
    for (int i = n - 1; i >= 0; i--) {
        double s = b[i];
        for (int k = i + 1; k < n; k++) s -= L[(size_t)k * n + i] * b[k];
        b[i] = s / L[(size_t)i * n + i];
    }
}

/* Covariances from the sums: Gc (ca x ca) and Cc (ca x cb), centred, per pixel. */
static void covariances(const gm_stitch_acc *a, double *Gc, double *Cc, double *ma, double *mb)
{
    const int ca = a->ca, cb = a->cb;
    for (int i = 0; i < ca; i++) ma[i] = a->sa[i] / a->n;
    for (int j = 0; j < cb; j++) mb[j] = a->sb[j] / a->n;
    for (int i = 0; i < ca; i++) {
        for (int k = 0; k < ca; k++) Gc[(size_t)i * ca + k] = a->G[(size_t)i * ca + k] / a->n - ma[i] * ma[k];
        for (int j = 0; j < cb; j++) Cc[(size_t)i * cb + j] = a->C[(size_t)i * cb + j] / a->n - ma[i] * mb[j];
    }
}

gm_status gm_stitch_fit_alloc(gm_stitch_fit *f, int ca, int cb, gm_error *err)
{
    memset(f, 0, sizeof *f);
    f->ca = ca;
    f->cb = cb;
    f->M = malloc(sizeof(double) * (size_t)ca * cb);
    f->c = malloc(sizeof(double) * (size_t)cb);
    f->mean_mx = malloc(sizeof(double) * (size_t)cb);
    f->var_mx = malloc(sizeof(double) * (size_t)cb);
    if (f->M && f->c && f->mean_mx && f->var_mx) return GM_OK;
    gm_stitch_fit_free(f);
    return gm_error_set(err, GM_ENOMEM, "stitch: out of memory");
}

/* Residual and statistics of M x + c against x_b, from the covariances (per pixel). */
static void fit_stats(const gm_stitch_acc *a, gm_stitch_fit *f, const double *Gc, const double *Cc, const double *ma,
                      const double *mb)
{
    const int ca = a->ca, cb = a->cb;
    double res = 0.0, var_b = 0.0;
    for (int o = 0; o < cb; o++) {
        const double *m = f->M + (size_t)o * ca;
        double mean = 0.0, var = 0.0, cross = 0.0;
        for (int i = 0; i < ca; i++) {
            mean += m[i] * ma[i];
            cross += m[i] * Cc[(size_t)i * cb + o];
            double gi = 0.0;
            for (int k = 0; k < ca; k++) gi += Gc[(size_t)i * ca + k] * m[k];
            var += m[i] * gi;
        }
        double vb = a->qb[o] / a->n - mb[o] * mb[o];
        f->mean_mx[o] = mean;
        f->var_mx[o] = var > 0.0 ? var : 0.0;
        res += vb - 2.0 * cross + var;
        var_b += vb;
    }
    const double denom = var_b > 1e-30 ? var_b : 1e-30;
    f->residual = (res > 0.0 ? res : 0.0) / denom;
    f->plain_residual = NAN;
    if (ca == cb) {
        double plain = 0.0;
        for (int o = 0; o < cb; o++)
            plain += (a->G[(size_t)o * ca + o] - 2.0 * a->C[(size_t)o * cb + o] + a->qb[o]) / a->n;
        f->plain_residual = (plain > 0.0 ? plain : 0.0) / denom;
    }
    f->pixels = a->n;
}

gm_status gm_stitch_solve(const gm_stitch_acc *a, double ridge, gm_stitch_fit *f, gm_error *err)
{
    const int ca = a->ca, cb = a->cb;
    if (a->n < 2.0) return gm_error_set(err, GM_ENUMERIC, "stitch: %.0f observations, need at least 2", a->n);
    gm_status st = gm_stitch_fit_alloc(f, ca, cb, err);
    if (st != GM_OK) return st;
    double *Gc = malloc(sizeof(double) * (size_t)ca * ca), *Cc = malloc(sizeof(double) * (size_t)ca * cb);
    double *ma = malloc(sizeof(double) * (size_t)ca), *mb = malloc(sizeof(double) * (size_t)cb);
    double *L = malloc(sizeof(double) * (size_t)ca * ca), *col = malloc(sizeof(double) * (size_t)ca);
    if (!Gc || !Cc || !ma || !mb || !L || !col) st = gm_error_set(err, GM_ENOMEM, "stitch: out of memory");
    if (st == GM_OK) {
        covariances(a, Gc, Cc, ma, mb);
        /* centring cancels: a near-constant feature's variance is known only to about 1e-7 of its raw moment */
        double tr = 0.0, raw = 0.0;
        for (int i = 0; i < ca; i++) {
            double g = a->G[(size_t)i * ca + i] / a->n;
            tr += Gc[(size_t)i * ca + i] > 0.0 ? Gc[(size_t)i * ca + i] : 0.0;
            raw = g > raw ? g : raw;
        }
        const double lambda = ridge * (tr > 0.0 ? tr / ca : 1.0) + 1e-6 * raw + 1e-12;
        memcpy(L, Gc, sizeof(double) * (size_t)ca * ca);
        for (int i = 0; i < ca; i++) L[(size_t)i * ca + i] += lambda;
        if (cholesky(L, ca) != 0)
            st = gm_error_set(err, GM_ENUMERIC, "stitch: the features' covariance is not positive definite (ridge %g)",
                              ridge);
    }
    /* column o of B = (Gc + lambda I)^-1 Cc is row o of M; c makes the means agree */
    for (int o = 0; st == GM_OK && o < cb; o++) {
        for (int i = 0; i < ca; i++) col[i] = Cc[(size_t)i * cb + o];
        chol_solve(L, ca, col);
        double cm = mb[o];
        for (int i = 0; i < ca; i++) {
            f->M[(size_t)o * ca + i] = col[i];
            cm -= col[i] * ma[i];
        }
        f->c[o] = cm;
        if (!isfinite(cm)) st = gm_error_set(err, GM_ENUMERIC, "stitch: the solution is not finite (channel %d)", o);
    }
    if (st == GM_OK) fit_stats(a, f, Gc, Cc, ma, mb);
    free(Gc);
    free(Cc);
    free(ma);
    free(mb);
    free(L);
    free(col);
    if (st != GM_OK) gm_stitch_fit_free(f);
    return st;
}

/* ---- folding ------------------------------------------------------------------ */

/* Ops that commute with a per-pixel channel map x -> M x + c (the constant survives them too). */
static int transparent(const gm_op *op)
{
    return op->kind == GM_OP_FLATTEN || op->kind == GM_OP_UPSAMPLE ||
           (op->kind == GM_OP_AVGPOOL2D && op->p.pool.pad == 0);
}

/*
 * reads[k] = 1 when op k reads the block input, directly or through
 * transparent ops. Returns how the input enters the block.
 */
static gm_stitch_kind input_readers(const gm_block *b, char *reads)
{
    char through[GM_BLOCK_MAX_OPS] = {0};
    gm_stitch_kind kind = GM_STITCH_FOLD;
    int linear = 0;
    for (int k = 0; k < b->nops; k++) {
        reads[k] = 0;
        for (int j = 0; j < gm_op_ninputs(&b->ops[k]); j++) {
            int s = b->src[k][j];
            if (s < 0 || through[s]) reads[k] = 1;
        }
        if (!reads[k]) continue;
        const gm_op *op = &b->ops[k];
        if (transparent(op)) through[k] = 1;
        else if (op->kind == GM_OP_CONV2D || op->kind == GM_OP_LINEAR) linear++;
        else if (op->kind == GM_OP_ADD) kind = GM_STITCH_PARTIAL;
        else return GM_STITCH_NONE;
    }
    return linear ? kind : GM_STITCH_NONE;
}

gm_stitch_kind gm_stitch_foldable(const gm_block *b)
{
    char reads[GM_BLOCK_MAX_OPS];
    return input_readers(b, reads);
}

static void op_offsets(const gm_block *b, size_t *par, size_t *buf)
{
    size_t p = 0, q = 0;
    for (int k = 0; k < b->nops; k++) {
        par[k] = p;
        buf[k] = q;
        p += gm_op_nparams(&b->ops[k]);
        q += gm_op_nbuffers(&b->ops[k]);
    }
}

/* The BatchNorm that reads op k directly, or -1. */
static int bn_after(const gm_block *b, int k)
{
    for (int i = k + 1; i < b->nops; i++)
        if (b->ops[i].kind == GM_OP_BATCHNORM2D && b->src[i][0] == k) return i;
    return -1;
}

/*
 * W (out x cin x per) reads cin channels of per weights each (k*k for a
 * convolution, h*w for a linear layer after flatten): W <- W M, and d[o] gets
 * the constant's contribution sum_j sum_p W[o,j,p] c[j] (from the old W).
 */
static void fold_weights(float *W, int out, int cin, size_t per, const gm_stitch_fit *f, double *d, double *row)
{
    for (int o = 0; o < out; o++) {
        float *w = W + (size_t)o * cin * per;
        double dc = 0.0;
        for (size_t p = 0; p < per; p++) {
            for (int j = 0; j < cin; j++) {
                row[j] = w[(size_t)j * per + p];
                dc += row[j] * f->c[j];
            }
            for (int i = 0; i < cin; i++) {
                double s = 0.0;
                for (int j = 0; j < cin; j++) s += row[j] * f->M[(size_t)j * f->ca + i];
                w[(size_t)i * per + p] = (float)s;
            }
        }
        d[o] = dc;
    }
}

/* Hands the constant d (one per output) to the op's bias or the BatchNorm after it; 0 if neither exists. */
static int place_constant(const gm_block *b, int k, float *params, float *buffers, const size_t *par,
                          const size_t *buf, const double *d, int out, size_t wsize)
{
    const gm_op *op = &b->ops[k];
    int bias = op->kind == GM_OP_CONV2D ? op->p.conv.bias : op->p.linear.bias;
    if (bias) {
        for (int o = 0; o < out; o++) params[par[k] + wsize + (size_t)o] += (float)d[o];
        return 1;
    }
    int bn = bn_after(b, k);
    if (bn < 0) return 0;
    for (int o = 0; o < out; o++) buffers[buf[bn] + (size_t)o] -= (float)d[o]; /* running mean */
    return 1;
}

gm_status gm_stitch_fold(const gm_block *b, gm_shape in, float *params, float *buffers, const gm_stitch_fit *f,
                         int *dropped, gm_error *err)
{
    char reads[GM_BLOCK_MAX_OPS];
    *dropped = 0;
    if (input_readers(b, reads) == GM_STITCH_NONE)
        return gm_error_set(err, GM_EINVAL, "stitch: a %s block has no linear layer reading its input",
                            gm_block_kind_name(b->kind));
    if (f->ca != in.c || f->cb != in.c)
        return gm_error_set(err, GM_EINVAL, "stitch: a %d -> %d map cannot fold into a block reading %d channels",
                            f->ca, f->cb, in.c);
    size_t par[GM_BLOCK_MAX_OPS], buf[GM_BLOCK_MAX_OPS];
    gm_shape shapes[GM_BLOCK_MAX_OPS];
    op_offsets(b, par, buf);
    gm_block_shapes(b, in, shapes);
    double *d = NULL, *row = malloc(sizeof(double) * (size_t)in.c);
    gm_status st = row ? GM_OK : gm_error_set(err, GM_ENOMEM, "stitch: out of memory");
    for (int k = 0; st == GM_OK && k < b->nops; k++) {
        const gm_op *op = &b->ops[k];
        if (!reads[k] || (op->kind != GM_OP_CONV2D && op->kind != GM_OP_LINEAR)) continue;
        int out, cin = in.c;
        size_t per;
        if (op->kind == GM_OP_CONV2D) {
            out = op->p.conv.cout;
            per = (size_t)op->p.conv.k * (size_t)op->p.conv.k;
            if (op->p.conv.cin != in.c) st = gm_error_set(err, GM_EINVAL, "stitch: op %d reads %d channels, not %d", k,
                                                         op->p.conv.cin, in.c);
        } else { /* after flatten: features are channel-major over the (possibly pooled) map */
            out = op->p.linear.out;
            per = (size_t)op->p.linear.in / (size_t)in.c;
            if (per * (size_t)in.c != (size_t)op->p.linear.in)
                st = gm_error_set(err, GM_EINVAL, "stitch: op %d has %d inputs, not a multiple of %d channels", k,
                                  op->p.linear.in, in.c);
        }
        double *nd = st == GM_OK ? realloc(d, sizeof(double) * (size_t)out) : NULL;
        if (st == GM_OK && !nd) st = gm_error_set(err, GM_ENOMEM, "stitch: out of memory");
        if (st != GM_OK) break;
        d = nd;
        fold_weights(params + par[k], out, cin, per, f, d, row);
        if (!place_constant(b, k, params, buffers, par, buf, d, out, (size_t)out * cin * per)) (*dropped)++;
    }
    free(d);
    free(row);
    return st;
}

int gm_stitch_adapter_conv(const gm_block *b)
{
    char reads[GM_BLOCK_MAX_OPS];
    (void)input_readers(b, reads);
    for (int k = 0; k < b->nops; k++)
        if (reads[k] && b->ops[k].kind == GM_OP_CONV2D && b->ops[k].p.conv.k == 1 && bn_after(b, k) >= 0) return k;
    return -1;
}

gm_status gm_stitch_set_adapter(const gm_block *b, float *params, float *buffers, const gm_stitch_fit *f,
                                gm_error *err)
{
    int k = gm_stitch_adapter_conv(b);
    if (k < 0) return gm_error_set(err, GM_EINVAL, "stitch: the %s block is not an adapter with a 1x1 convolution",
                                   gm_block_kind_name(b->kind));
    const gm_conv_params *cp = &b->ops[k].p.conv;
    if (cp->cin != f->ca || cp->cout != f->cb)
        return gm_error_set(err, GM_EINVAL, "stitch: adapter maps %d -> %d channels, the fit %d -> %d", cp->cin,
                            cp->cout, f->ca, f->cb);
    size_t par[GM_BLOCK_MAX_OPS], buf[GM_BLOCK_MAX_OPS];
    op_offsets(b, par, buf);
    const int bn = bn_after(b, k), cb = f->cb;
    const float eps = b->ops[bn].p.bn.eps;
    for (size_t i = 0; i < (size_t)cb * f->ca; i++) params[par[k] + i] = (float)f->M[i];
    if (cp->bias)
        for (int o = 0; o < cb; o++) params[par[k] + (size_t)cb * f->ca + (size_t)o] = 0.0f;
    for (int o = 0; o < cb; o++) {
        /* inference: gamma (z - mean) / sqrt(var + eps) + beta = z + c */
        params[par[bn] + (size_t)o] = (float)sqrt(f->var_mx[o] + eps);
        params[par[bn] + (size_t)cb + (size_t)o] = (float)(f->mean_mx[o] + f->c[o]);
        buffers[buf[bn] + (size_t)o] = (float)f->mean_mx[o];
        buffers[buf[bn] + (size_t)cb + (size_t)o] = (float)f->var_mx[o];
    }
    return GM_OK;
}

/* ---- the output fit ------------------------------------------------------------------ */

int gm_stitch_refittable(const gm_block *b, int k)
{
    if (k < 0 || k >= b->nops) return 0;
    const gm_op *op = &b->ops[k];
    const int s = b->src[k][0];
    if (op->kind == GM_OP_CONV2D) return s < 0;
    if (op->kind != GM_OP_LINEAR) return 0;
    return s < 0 || (b->ops[s].kind == GM_OP_FLATTEN && b->src[s][0] < 0);
}

void gm_stitch_patches(const gm_op *op, gm_shape in, const float *x, float *out)
{
    if (op->kind != GM_OP_CONV2D) {
        memcpy(out, x, sizeof(float) * gm_shape_numel(in));
        return;
    }
    const gm_conv_params *p = &op->p.conv;
    const int ho = (in.h + 2 * p->pad - p->k) / p->stride + 1, wo = (in.w + 2 * p->pad - p->k) / p->stride + 1;
    for (int c = 0; c < in.c; c++)
        for (int ky = 0; ky < p->k; ky++)
            for (int kx = 0; kx < p->k; kx++) {
                float *row = out + ((size_t)(c * p->k + ky) * p->k + kx) * ho * wo;
                for (int y = 0; y < ho; y++) {
                    const int iy = y * p->stride - p->pad + ky;
                    for (int xx = 0; xx < wo; xx++) {
                        const int ix = xx * p->stride - p->pad + kx;
                        row[y * wo + xx] = iy < 0 || iy >= in.h || ix < 0 || ix >= in.w
                                               ? 0.0f
                                               : x[((size_t)c * in.h + iy) * in.w + ix];
                    }
                }
            }
}

gm_status gm_stitch_add_delta(const gm_block *b, int k, float *params, float *buffers, const gm_stitch_fit *f,
                              int *dropped, gm_error *err)
{
    *dropped = 0;
    if (!gm_stitch_refittable(b, k))
        return gm_error_set(err, GM_EINVAL, "stitch: op %d of a %s block cannot be refitted", k,
                            gm_block_kind_name(b->kind));
    const gm_op *op = &b->ops[k];
    const int out = op->kind == GM_OP_CONV2D ? op->p.conv.cout : op->p.linear.out;
    const size_t per = op->kind == GM_OP_CONV2D ? (size_t)op->p.conv.cin * op->p.conv.k * op->p.conv.k
                                                : (size_t)op->p.linear.in;
    if (f->cb != out || (size_t)f->ca != per)
        return gm_error_set(err, GM_EINVAL, "stitch: a %d -> %d fit for an op of %zu inputs and %d outputs", f->ca,
                            f->cb, per, out);
    size_t par[GM_BLOCK_MAX_OPS], buf[GM_BLOCK_MAX_OPS];
    op_offsets(b, par, buf);
    for (size_t i = 0; i < (size_t)out * per; i++) params[par[k] + i] += (float)f->M[i];
    if (!place_constant(b, k, params, buffers, par, buf, f->c, out, (size_t)out * per)) *dropped = 1;
    return GM_OK;
}

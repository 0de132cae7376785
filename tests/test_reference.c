#include "test_reference.h"

#include <float.h>
#include <math.h>
#include <string.h>

static double xat(const double *x, gm_shape s, int n, int c, int h, int w)
{
    return x[(((size_t)n * s.c + c) * s.h + h) * s.w + w];
}

static void conv(const ref_args *a, double *y)
{
    const gm_conv_params *p = &a->op->p.conv;
    gm_shape in = a->in[0], out = a->out;
    const double *b = p->bias ? a->w + (size_t)p->cout * p->cin * p->k * p->k : NULL;
    for (int n = 0; n < a->batch; n++)
        for (int co = 0; co < out.c; co++)
            for (int oy = 0; oy < out.h; oy++)
                for (int ox = 0; ox < out.w; ox++) {
                    double s = b ? b[co] : 0.0;
                    for (int ci = 0; ci < in.c; ci++)
                        for (int ky = 0; ky < p->k; ky++)
                            for (int kx = 0; kx < p->k; kx++) {
                                int iy = oy * p->stride - p->pad + ky, ix = ox * p->stride - p->pad + kx;
                                if (iy < 0 || iy >= in.h || ix < 0 || ix >= in.w) continue;
                                s += a->w[((co * in.c + ci) * p->k + ky) * p->k + kx] *
                                     xat(a->x[0], in, n, ci, iy, ix);
                            }
                    y[(((size_t)n * out.c + co) * out.h + oy) * out.w + ox] = s;
                }
}

static void batchnorm(const ref_args *a, double *y)
{
    gm_shape s = a->in[0];
    const int C = s.c, hw = s.h * s.w;
    for (int c = 0; c < C; c++) {
        double mean = 0.0, var = 0.0, m = (double)a->batch * hw;
        if (a->train) {
            for (int n = 0; n < a->batch; n++)
                for (int i = 0; i < hw; i++) mean += a->x[0][((size_t)n * C + c) * hw + i];
            mean /= m;
            for (int n = 0; n < a->batch; n++)
                for (int i = 0; i < hw; i++) {
                    double d = a->x[0][((size_t)n * C + c) * hw + i] - mean;
                    var += d * d;
                }
            var /= m;
        } else {
            mean = a->buf[c];
            var = a->buf[C + c];
        }
        double inv = 1.0 / sqrt(var + a->op->p.bn.eps);
        for (int n = 0; n < a->batch; n++)
            for (int i = 0; i < hw; i++) {
                size_t j = ((size_t)n * C + c) * hw + i;
                y[j] = (a->x[0][j] - mean) * inv * a->w[c] + a->w[C + c];
            }
    }
}

static void pool(const ref_args *a, double *y, int is_max)
{
    const gm_pool_params *p = &a->op->p.pool;
    gm_shape in = a->in[0], out = a->out;
    for (int n = 0; n < a->batch; n++)
        for (int c = 0; c < in.c; c++)
            for (int oy = 0; oy < out.h; oy++)
                for (int ox = 0; ox < out.w; ox++) {
                    double s = is_max ? -DBL_MAX : 0.0;
                    for (int ky = 0; ky < p->k; ky++)
                        for (int kx = 0; kx < p->k; kx++) {
                            int iy = oy * p->stride - p->pad + ky, ix = ox * p->stride - p->pad + kx;
                            if (iy < 0 || iy >= in.h || ix < 0 || ix >= in.w) continue;
                            double v = xat(a->x[0], in, n, c, iy, ix);
                            s = is_max ? (v > s ? v : s) : s + v;
                        }
                    y[(((size_t)n * out.c + c) * out.h + oy) * out.w + ox] = is_max ? s : s / (p->k * p->k);
                }
}

/* Output pixel (oy, ox) is input pixel (oy / f, ox / f), straight from the definition. */
static void upsample(const ref_args *a, double *y)
{
    const int f = a->op->p.upsample.factor;
    gm_shape in = a->in[0], out = a->out;
    for (int n = 0; n < a->batch; n++)
        for (int c = 0; c < out.c; c++)
            for (int oy = 0; oy < out.h; oy++)
                for (int ox = 0; ox < out.w; ox++)
                    y[(((size_t)n * out.c + c) * out.h + oy) * out.w + ox] = xat(a->x[0], in, n, c, oy / f, ox / f);
}

static void linear(const ref_args *a, double *y)
{
    const gm_linear_params *p = &a->op->p.linear;
    for (int n = 0; n < a->batch; n++)
        for (int o = 0; o < p->out; o++) {
            double s = p->bias ? a->w[(size_t)p->out * p->in + o] : 0.0;
            for (int i = 0; i < p->in; i++) s += a->w[(size_t)o * p->in + i] * a->x[0][(size_t)n * p->in + i];
            y[(size_t)n * p->out + o] = s;
        }
}

void ref_forward(const ref_args *a, double *y)
{
    size_t n_in = (size_t)a->batch * gm_shape_numel(a->in[0]);
    size_t n_out = (size_t)a->batch * gm_shape_numel(a->out);
    switch (a->op->kind) {
    case GM_OP_CONV2D: conv(a, y); break;
    case GM_OP_BATCHNORM2D: batchnorm(a, y); break;
    case GM_OP_RELU:
        for (size_t i = 0; i < n_out; i++) y[i] = a->x[0][i] > 0.0 ? a->x[0][i] : 0.0;
        break;
    case GM_OP_MAXPOOL2D: pool(a, y, 1); break;
    case GM_OP_AVGPOOL2D: pool(a, y, 0); break;
    case GM_OP_GLOBALAVGPOOL: {
        size_t hw = (size_t)a->in[0].h * a->in[0].w;
        for (size_t pl = 0; pl < n_out; pl++) {
            double s = 0.0;
            for (size_t i = 0; i < hw; i++) s += a->x[0][pl * hw + i];
            y[pl] = s / (double)hw;
        }
        break;
    }
    case GM_OP_LINEAR: linear(a, y); break;
    case GM_OP_FLATTEN: memcpy(y, a->x[0], sizeof(double) * n_in); break;
    case GM_OP_ADD:
        for (size_t i = 0; i < n_out; i++) y[i] = a->x[0][i] + a->x[1][i];
        break;
    case GM_OP_DROPOUT:
        for (size_t i = 0; i < n_out; i++) y[i] = a->x[0][i] * (a->train ? a->mask[i] : 1.0);
        break;
    case GM_OP_UPSAMPLE: upsample(a, y); break;
    case GM_OP_KIND_COUNT: break;
    }
}

void ref_conv_backward(const gm_conv_params *p, gm_shape in, gm_shape out, int batch, const double *x,
                       const double *w, const double *dy, double *dx, double *dw, double *db)
{
    if (dx) memset(dx, 0, sizeof(double) * (size_t)batch * gm_shape_numel(in));
    memset(dw, 0, sizeof(double) * (size_t)p->cout * p->cin * p->k * p->k);
    if (db) memset(db, 0, sizeof(double) * (size_t)p->cout);
    for (int n = 0; n < batch; n++)
        for (int co = 0; co < out.c; co++)
            for (int oy = 0; oy < out.h; oy++)
                for (int ox = 0; ox < out.w; ox++) {
                    double g = dy[(((size_t)n * out.c + co) * out.h + oy) * out.w + ox];
                    if (db) db[co] += g;
                    for (int ci = 0; ci < in.c; ci++)
                        for (int ky = 0; ky < p->k; ky++)
                            for (int kx = 0; kx < p->k; kx++) {
                                int iy = oy * p->stride - p->pad + ky, ix = ox * p->stride - p->pad + kx;
                                if (iy < 0 || iy >= in.h || ix < 0 || ix >= in.w) continue;
                                size_t xi = (((size_t)n * in.c + ci) * in.h + iy) * in.w + ix;
                                size_t wi = (((size_t)co * in.c + ci) * p->k + ky) * p->k + kx;
                                dw[wi] += g * x[xi];
                                if (dx) dx[xi] += g * w[wi];
                            }
                }
}

void ref_upsample_backward(int factor, gm_shape in, int batch, const double *dy, double *dx)
{
    gm_shape out = {in.c, in.h * factor, in.w * factor};
    memset(dx, 0, sizeof(double) * (size_t)batch * gm_shape_numel(in));
    for (int n = 0; n < batch; n++)
        for (int c = 0; c < in.c; c++)
            for (int oy = 0; oy < out.h; oy++)
                for (int ox = 0; ox < out.w; ox++)
                    dx[(((size_t)n * in.c + c) * in.h + oy / factor) * in.w + ox / factor] +=
                        dy[(((size_t)n * out.c + c) * out.h + oy) * out.w + ox];
}

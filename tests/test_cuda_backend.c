/*
 * test_cuda_backend: the CUDA backend against the CPU backend, op by op.
 *
 * Every op runs forward and backward on both backends with the same inputs, in
 * strict float32 (tf32 = 0): several shapes (odd sizes, stride 2, padding, batch
 * 1 and 7), train and eval, BatchNorm with the folded ReLU, misaligned weights,
 * and backward twice: adding into gradients that hold values (dx_set 0), then
 * overwriting buffers full of NaN (dx_set 1). Each array must agree within
 * max|diff| / max|cpu| < 1e-4; so must every loss and optimiser update, and a
 * whole VGG and ResNet trained a few Adam steps by gm_net on each backend
 * (within 1e-3). Also: dropout masks (no CPU twin: checked for their own
 * properties and reproducibility), loss errors, timing marks, the recorded
 * failure of a void call, and TF32.
 *
 * Without a usable GPU, gm_backend_cuda_create must fail cleanly with GM_EDEVICE
 * and a message; the program then prints "SKIPPED: no CUDA device: <reason>" and
 * exits 77, which ctest counts as skipped (SKIP_RETURN_CODE 77).
 */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_backend.h"
#include "gm_backend_cuda.h"
#include "gm_models.h"
#include "gm_net.h"
#include "gm_optim.h"

#define GM_TEST_SKIPPED 77

static const double kOpTol = 1e-4, kNetTol = 1e-3;

typedef struct {
    gm_backend *cpu, *gpu;
} pair;

/* max|got - want| / max|want| (the absolute difference when want is all zero); inf for a NaN. */
static double max_rel(const float *got, const float *want, size_t n, size_t *worst)
{
    double md = 0.0, mw = 0.0;
    *worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (isnan(d) && !(isnan(got[i]) && isnan(want[i]))) {
            *worst = i;
            return INFINITY;
        }
        if (d > md) {
            md = d;
            *worst = i;
        }
        if (fabs((double)want[i]) > mw) mw = fabs((double)want[i]);
    }
    return mw > 0.0 ? md / mw : md;
}

static void check_rel(const char *name, const char *what, const float *got, const float *want, size_t n, double tol)
{
    size_t i;
    double r = max_rel(got, want, n, &i);
    if (!(r <= tol))
        fail_msg("%s: %s differs: max rel err %.3g > %.3g (element %zu: cuda %.9g, cpu %.9g)", name, what, r, tol,
                 i, n ? (double)got[i] : 0.0, n ? (double)want[i] : 0.0);
}

static void expect_no_failure(gm_backend *gpu, const char *name)
{
    gm_error err;
    gm_error_clear(&err);
    gm_status st = gm_backend_cuda_status(gpu, &err);
    if (st != GM_OK) fail_msg("%s: cuda backend recorded %s: %s", name, gm_status_name(st), err.msg);
}

/* n floats of backend memory holding h (zeros when h is NULL). */
static float *dev_floats(gm_backend *be, const float *h, size_t n)
{
    float *d = be->alloc(be, sizeof(float) * (n ? n : 1));
    assert_non_null(d);
    if (h && n) be->to_device(be, d, h, sizeof(float) * n);
    return d;
}

static float *host_floats(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

/* ---- ops ----------------------------------------------------------------------- */

typedef struct {
    const char *name;
    gm_op op;
    gm_shape in;
    int batch, train, relu_after;
    int no_dx;    /* dx[0] = NULL: the op reads the net input */
    int misalign; /* weights and their gradient one float off a 16-byte boundary */
} op_case;

/* Host data of one case, the same for both backends. */
typedef struct {
    gm_shape out;
    size_t n_in, n_out, np, nb;
    float *x[2], *w, *buf, *dy, *dx_init[2], *dw_init, *nan_in;
} op_data;

/* What a backend produced. */
typedef struct {
    float *y, *buf, *dx_add[2], *dw_add, *dx_set[2], *dw_set;
} op_result;

static void op_data_make(const op_case *c, op_data *d)
{
    gm_error err;
    gm_shape ins[2] = {c->in, c->in};
    assert_int_equal(gm_op_infer(&c->op, ins, &d->out, &err), GM_OK);
    d->n_in = (size_t)c->batch * gm_shape_numel(c->in);
    d->n_out = (size_t)c->batch * gm_shape_numel(d->out);
    d->np = gm_op_nparams(&c->op);
    d->nb = gm_op_nbuffers(&c->op);
    gm_rng rng;
    gm_rng_seed(&rng, 4242 + (uint64_t)c->op.kind * 31 + (uint64_t)c->batch);
    for (int j = 0; j < 2; j++) {
        d->x[j] = host_floats(d->n_in);
        d->dx_init[j] = host_floats(d->n_in);
        gm_fill_uniform(d->x[j], d->n_in, &rng, -1.0f, 1.0f);
        gm_fill_uniform(d->dx_init[j], d->n_in, &rng, -1.0f, 1.0f);
    }
    d->w = host_floats(d->np);
    d->dw_init = host_floats(d->np);
    d->buf = host_floats(d->nb);
    d->dy = host_floats(d->n_out);
    d->nan_in = host_floats(d->n_in);
    gm_fill_uniform(d->w, d->np, &rng, -0.5f, 0.5f);
    gm_fill_uniform(d->dw_init, d->np, &rng, -1.0f, 1.0f);
    gm_fill_uniform(d->dy, d->n_out, &rng, -1.0f, 1.0f);
    for (size_t i = 0; i < d->n_in; i++) d->nan_in[i] = NAN; /* stale: set mode must not read it */
    if (c->op.kind == GM_OP_BATCHNORM2D) {
        int C = c->op.p.bn.c;
        gm_fill_uniform(d->w, (size_t)C, &rng, 0.5f, 1.5f);          /* gamma */
        gm_fill_uniform(d->buf, (size_t)C, &rng, -0.2f, 0.2f);       /* running mean */
        gm_fill_uniform(d->buf + C, (size_t)C, &rng, 0.5f, 1.5f);    /* running variance */
    }
}

static void op_data_free(op_data *d)
{
    for (int j = 0; j < 2; j++) {
        free(d->x[j]);
        free(d->dx_init[j]);
    }
    free(d->w); free(d->dw_init); free(d->buf); free(d->dy); free(d->nan_in);
}

static void op_result_free(op_result *r)
{
    free(r->y); free(r->buf); free(r->dw_add); free(r->dw_set);
    for (int j = 0; j < 2; j++) {
        free(r->dx_add[j]);
        free(r->dx_set[j]);
    }
}

/* Forward, backward adding, backward overwriting; everything read back to the host. */
static void op_run(gm_backend *be, const op_case *c, const op_data *d, op_result *r)
{
    gm_error err;
    const int two = c->op.kind == GM_OP_ADD, off = c->misalign ? 1 : 0;
    float *x[2], *dx[2], *y = dev_floats(be, NULL, d->n_out), *dy = dev_floats(be, d->dy, d->n_out);
    float *wbase = dev_floats(be, NULL, d->np + 1), *dwbase = dev_floats(be, NULL, d->np + 1);
    float *w = wbase + off, *dw = dwbase + off, *buf = dev_floats(be, d->buf, d->nb);
    if (d->np) {
        be->to_device(be, w, d->w, sizeof(float) * d->np);
        be->to_device(be, dw, d->dw_init, sizeof(float) * d->np);
    }
    for (int j = 0; j < 2; j++) {
        x[j] = dev_floats(be, d->x[j], d->n_in);
        dx[j] = dev_floats(be, d->dx_init[j], d->n_in);
    }
    size_t aux_bytes = be->aux_bytes(be, &c->op, c->in, d->out, c->batch);
    void *aux = be->alloc(be, aux_bytes ? aux_bytes : 1);
    assert_non_null(aux);
    if (be->reserve_scratch(be, be->scratch_bytes(be, &c->op, c->in, d->out, c->batch), &err) != GM_OK)
        fail_msg("%s: reserve_scratch on %s: %s", c->name, be->name, err.msg);
    gm_rng rng;
    gm_rng_seed(&rng, 99);
    gm_op_args a = {.op = &c->op, .in = {c->in, c->in}, .out = d->out, .batch = c->batch, .train = c->train,
                    .relu_after = c->relu_after, .x = {x[0], x[1]}, .y = y, .w = d->np ? w : NULL,
                    .buf = d->nb ? buf : NULL, .aux = aux, .rng = &rng, .dy = dy,
                    .dx = {c->no_dx ? NULL : dx[0], two ? dx[1] : NULL}, .dw = d->np ? dw : NULL};
    be->forward(be, &a);
    r->y = host_floats(d->n_out);
    r->buf = host_floats(d->nb);
    be->to_host(be, r->y, y, sizeof(float) * d->n_out);
    be->to_host(be, r->buf, buf, sizeof(float) * d->nb);

    be->backward(be, &a); /* adds into dx_init and dw_init */
    r->dw_add = host_floats(d->np);
    be->to_host(be, r->dw_add, dw, sizeof(float) * d->np);
    for (int j = 0; j < 2; j++) {
        r->dx_add[j] = host_floats(d->n_in);
        be->to_host(be, r->dx_add[j], dx[j], sizeof(float) * d->n_in);
        be->to_device(be, dx[j], d->nan_in, sizeof(float) * d->n_in);
        a.dx_set[j] = 1;
    }
    be->backward(be, &a); /* overwrites the NaNs; dw adds a second time */
    r->dw_set = host_floats(d->np);
    be->to_host(be, r->dw_set, dw, sizeof(float) * d->np);
    for (int j = 0; j < 2; j++) {
        r->dx_set[j] = host_floats(d->n_in);
        be->to_host(be, r->dx_set[j], dx[j], sizeof(float) * d->n_in);
    }
    be->sync(be);
    void *mem[] = {y, dy, wbase, dwbase, buf, x[0], x[1], dx[0], dx[1], aux};
    for (size_t i = 0; i < sizeof mem / sizeof mem[0]; i++) be->free(be, mem[i]);
}

static void op_compare(const pair *p, const op_case *c)
{
    op_data d;
    op_result rc, rg;
    op_data_make(c, &d);
    op_run(p->cpu, c, &d, &rc);
    op_run(p->gpu, c, &d, &rg);
    expect_no_failure(p->gpu, c->name);
    check_rel(c->name, "y", rg.y, rc.y, d.n_out, kOpTol);
    check_rel(c->name, "running statistics", rg.buf, rc.buf, d.nb, kOpTol);
    check_rel(c->name, "dw (adding)", rg.dw_add, rc.dw_add, d.np, kOpTol);
    check_rel(c->name, "dw (second add)", rg.dw_set, rc.dw_set, d.np, kOpTol);
    const int inputs = c->op.kind == GM_OP_ADD ? 2 : c->no_dx ? 0 : 1;
    for (int j = 0; j < inputs; j++) {
        check_rel(c->name, j ? "dx1 (adding)" : "dx (adding)", rg.dx_add[j], rc.dx_add[j], d.n_in, kOpTol);
        check_rel(c->name, j ? "dx1 (dx_set)" : "dx (dx_set)", rg.dx_set[j], rc.dx_set[j], d.n_in, kOpTol);
    }
    if (c->no_dx) /* untouched: still what it held */
        check_rel(c->name, "dx when NULL", rg.dx_add[0], d.dx_init[0], d.n_in, 0.0);
    op_result_free(&rc);
    op_result_free(&rg);
    op_data_free(&d);
}

#define CASE(nm, o, c_, h_, w_, b, t) {nm, o, {c_, h_, w_}, b, t, 0, 0, 0}

static void test_ops_match_cpu(void **state)
{
    const pair *p = *state;
    const op_case cases[] = {
        CASE("conv 3x3 s1 p1 bias, batch 7", gm_op_conv2d(3, 4, 3, 1, 1, 1), 3, 5, 5, 7, 1),
        CASE("conv 3x3 s2 p1, batch 1", gm_op_conv2d(2, 3, 3, 2, 1, 0), 2, 7, 6, 1, 1),
        CASE("conv 1x1 s1 bias", gm_op_conv2d(3, 2, 1, 1, 0, 1), 3, 4, 4, 7, 1),
        CASE("conv 1x1 s2", gm_op_conv2d(3, 2, 1, 2, 0, 0), 3, 5, 5, 2, 1),
        CASE("conv 5x5 p2 bias", gm_op_conv2d(2, 2, 5, 1, 2, 1), 2, 6, 6, 1, 1),
        CASE("conv 3x3 p0 tiny", gm_op_conv2d(2, 3, 3, 1, 0, 1), 2, 3, 3, 2, 1),
        CASE("conv 3x3 p1 on 1x1", gm_op_conv2d(2, 2, 3, 1, 1, 1), 2, 1, 1, 7, 1),
        CASE("conv 2x2 s2", gm_op_conv2d(2, 2, 2, 2, 0, 1), 2, 7, 7, 2, 1),
        CASE("conv 16->24 3x3 on 9x9", gm_op_conv2d(16, 24, 3, 1, 1, 0), 16, 9, 9, 7, 1),
        CASE("conv 8->8 3x3 s2 on 9x9", gm_op_conv2d(8, 8, 3, 2, 1, 0), 8, 9, 9, 7, 1),
        CASE("conv 1->16 3x3 on 36x36", gm_op_conv2d(1, 16, 3, 1, 1, 0), 1, 36, 36, 7, 1),
        CASE("batchnorm train", gm_op_batchnorm2d(3), 3, 4, 4, 7, 1),
        CASE("batchnorm eval", gm_op_batchnorm2d(3), 3, 4, 4, 7, 0),
        CASE("batchnorm train batch 1 on 5x7", gm_op_batchnorm2d(3), 3, 5, 7, 1, 1),
        /* batch 3: with 2 values per channel dx is nearly all cancellation (|dx| ~ 5e-3
         * from terms ~ 10), and the CPU's float sum of squares alone differs by 2e-4 */
        CASE("batchnorm train on 1x1", gm_op_batchnorm2d(4), 4, 1, 1, 3, 1),
        CASE("batchnorm train, 2 splits", gm_op_batchnorm2d(3), 3, 40, 40, 7, 1),
        CASE("batchnorm train, 7 splits", gm_op_batchnorm2d(4), 4, 64, 64, 7, 1),
        CASE("batchnorm train 32 channels", gm_op_batchnorm2d(32), 32, 16, 16, 7, 1),
        CASE("relu", gm_op_relu(), 2, 3, 3, 7, 1),
        CASE("maxpool 2 s2 odd width", gm_op_maxpool2d(2, 2, 0), 2, 4, 5, 7, 1),
        CASE("maxpool 2 s2 odd 7x7", gm_op_maxpool2d(2, 2, 0), 3, 7, 7, 1, 1),
        CASE("maxpool 3 s2 p1", gm_op_maxpool2d(3, 2, 1), 2, 5, 5, 7, 1),
        CASE("maxpool 3 s1 p1", gm_op_maxpool2d(3, 1, 1), 2, 6, 5, 2, 1),
        CASE("maxpool 1 s2", gm_op_maxpool2d(1, 2, 0), 2, 5, 5, 2, 1),
        CASE("avgpool 2 s2", gm_op_avgpool2d(2, 2, 0), 2, 4, 4, 7, 1),
        CASE("avgpool 3 s1 p1", gm_op_avgpool2d(3, 1, 1), 2, 4, 4, 7, 1),
        CASE("avgpool 3 s2 p1 odd", gm_op_avgpool2d(3, 2, 1), 3, 7, 9, 1, 1),
        CASE("global avgpool", gm_op_globalavgpool(), 3, 3, 2, 7, 1),
        CASE("global avgpool 1x1", gm_op_globalavgpool(), 5, 1, 1, 1, 1),
        CASE("global avgpool 36x36", gm_op_globalavgpool(), 4, 36, 36, 7, 1),
        CASE("linear", gm_op_linear(5, 4, 1), 5, 1, 1, 7, 1),
        CASE("linear no bias, batch 1", gm_op_linear(6, 3, 0), 6, 1, 1, 1, 1),
        CASE("linear 300->70", gm_op_linear(300, 70, 1), 300, 1, 1, 64, 1),
        CASE("flatten", gm_op_flatten(), 2, 2, 2, 7, 1),
        CASE("add", gm_op_add(), 3, 2, 2, 7, 1),
        CASE("dropout eval", gm_op_dropout(0.3f), 3, 4, 4, 7, 0),
        CASE("upsample x2", gm_op_upsample(2), 3, 3, 4, 7, 1),
        CASE("upsample x3 non-square", gm_op_upsample(3), 2, 2, 3, 1, 1),
        CASE("upsample x1", gm_op_upsample(1), 2, 3, 3, 2, 1),
        CASE("upsample x4 on 7x5", gm_op_upsample(4), 3, 7, 5, 2, 1),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("  %s\n", cases[i].name);
        op_compare(p, &cases[i]);
    }
    /* the folded ReLU, in both modes; the first layer's dx (NULL); misaligned weights */
    op_case extra[] = {
        CASE("batchnorm+relu train", gm_op_batchnorm2d(3), 3, 5, 5, 7, 1),
        CASE("batchnorm+relu eval", gm_op_batchnorm2d(3), 3, 5, 5, 7, 0),
        CASE("batchnorm+relu train, 2 splits", gm_op_batchnorm2d(3), 3, 40, 40, 7, 1),
        CASE("conv without dx", gm_op_conv2d(3, 4, 3, 1, 1, 1), 3, 6, 6, 7, 1),
        CASE("batchnorm without dx", gm_op_batchnorm2d(3), 3, 4, 4, 7, 1),
        CASE("linear without dx", gm_op_linear(5, 4, 1), 5, 1, 1, 7, 1),
        CASE("conv, misaligned weights", gm_op_conv2d(4, 6, 3, 2, 1, 1), 4, 9, 8, 7, 1),
        CASE("linear, misaligned weights", gm_op_linear(7, 5, 1), 7, 1, 1, 7, 1),
    };
    for (int i = 0; i < 3; i++) extra[i].relu_after = 1;
    for (int i = 3; i < 6; i++) extra[i].no_dx = 1;
    for (int i = 6; i < 8; i++) extra[i].misalign = 1;
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        print_message("  %s\n", extra[i].name);
        op_compare(p, &extra[i]);
    }
}

/* ---- dropout: masks from the device's own generator ------------------------------ */

static void test_dropout(void **state)
{
    const pair *p = *state;
    gm_backend *be = p->gpu;
    enum { B = 16 };
    const gm_shape in = {4, 25, 40}; /* 16000 elements a batch, 64000 in all */
    const size_t n = B * gm_shape_numel(in);
    const float prob = 0.3f, keep = 1.0f / (1.0f - prob);
    gm_op op = gm_op_dropout(prob);
    float *hx = host_floats(n), *hdy = host_floats(n), *hy = host_floats(n), *hy2 = host_floats(n);
    float *hdx = host_floats(n);
    gm_rng data;
    gm_rng_seed(&data, 3);
    gm_fill_uniform(hx, n, &data, 0.5f, 1.5f); /* never 0: a 0 output means dropped */
    gm_fill_uniform(hdy, n, &data, -1.0f, 1.0f);
    float *x = dev_floats(be, hx, n), *y = dev_floats(be, NULL, n), *dy = dev_floats(be, hdy, n);
    float *dx = dev_floats(be, NULL, n);
    void *aux = be->alloc(be, be->aux_bytes(be, &op, in, in, B));
    assert_non_null(aux);
    gm_rng rng, want;
    gm_rng_seed(&rng, 5);
    gm_op_args a = {.op = &op, .in = {in, in}, .out = in, .batch = B, .train = 1, .x = {x, NULL}, .y = y,
                    .aux = aux, .rng = &rng, .dy = dy, .dx = {dx, NULL}, .dx_set = {1, 0}};
    be->forward(be, &a);
    be->backward(be, &a);
    be->to_host(be, hy, y, sizeof(float) * n);
    be->to_host(be, hdx, dx, sizeof(float) * n);
    expect_no_failure(be, "dropout");
    size_t dropped = 0;
    for (size_t i = 0; i < n; i++) {
        int kept = hy[i] != 0.0f;
        dropped += !kept;
        if (kept && hy[i] != hx[i] * keep) fail_msg("dropout: y[%zu] = %g, not 0 or x/(1-p) = %g", i, (double)hy[i],
                                                    (double)(hx[i] * keep));
        if (hdx[i] != hdy[i] * (kept ? keep : 0.0f))
            fail_msg("dropout: dx[%zu] = %g does not follow the forward mask", i, (double)hdx[i]);
    }
    double frac = (double)dropped / (double)n;
    if (fabs(frac - prob) > 0.015) fail_msg("dropout: %.4f of the elements dropped, want about %.2f", frac, prob);
    /* the net's generator advanced once, and the same seed repeats the mask */
    gm_rng_seed(&want, 5);
    (void)gm_rng_next(&want);
    assert_memory_equal(&rng, &want, sizeof rng);
    gm_rng_seed(&rng, 5);
    be->forward(be, &a);
    be->to_host(be, hy2, y, sizeof(float) * n);
    assert_memory_equal(hy, hy2, sizeof(float) * n);
    be->forward(be, &a); /* the generator moved on: another mask */
    be->to_host(be, hy2, y, sizeof(float) * n);
    assert_true(memcmp(hy, hy2, sizeof(float) * n) != 0);
    a.train = 0; /* eval: the identity */
    be->forward(be, &a);
    be->to_host(be, hy2, y, sizeof(float) * n);
    assert_memory_equal(hy2, hx, sizeof(float) * n);
    expect_no_failure(be, "dropout");
    be->free(be, x); be->free(be, y); be->free(be, dy); be->free(be, dx); be->free(be, aux);
    free(hx); free(hdy); free(hy); free(hy2); free(hdx);
}

/* ---- losses ----------------------------------------------------------------------- */

typedef struct {
    float *pred, *target, *grad;
    int32_t *labels;
} loss_bufs;

static loss_bufs loss_bufs_on(gm_backend *be, const float *pred, const float *target, const int32_t *labels,
                              int n, int d)
{
    loss_bufs b = {dev_floats(be, pred, (size_t)n * d), dev_floats(be, target, (size_t)n * d),
                   dev_floats(be, NULL, (size_t)n * d), be->alloc(be, sizeof(int32_t) * (size_t)n)};
    assert_non_null(b.labels);
    be->to_device(be, b.labels, labels, sizeof(int32_t) * (size_t)n);
    return b;
}

static void loss_bufs_free(gm_backend *be, loss_bufs *b)
{
    be->free(be, b->pred); be->free(be, b->target); be->free(be, b->grad); be->free(be, b->labels);
}

static void test_losses_match_cpu(void **state)
{
    const pair *p = *state;
    const int shapes[][2] = {{7, 10}, {1, 3}, {64, 5}, {300, 1000}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int n = shapes[si][0], d = shapes[si][1];
        const size_t nd = (size_t)n * d;
        gm_rng rng;
        gm_rng_seed(&rng, 11 + si);
        float *pred = host_floats(nd), *target = host_floats(nd), *gc = host_floats(nd), *gg = host_floats(nd);
        int32_t *labels = calloc((size_t)n, sizeof *labels);
        gm_fill_uniform(pred, nd, &rng, -4.0f, 4.0f);
        gm_fill_uniform(target, nd, &rng, -4.0f, 4.0f);
        for (int i = 0; i < n; i++) labels[i] = (int32_t)gm_rng_below(&rng, (uint32_t)d);
        loss_bufs bc = loss_bufs_on(p->cpu, pred, target, labels, n, d);
        loss_bufs bg = loss_bufs_on(p->gpu, pred, target, labels, n, d);
        for (int k = GM_LOSS_CROSS_ENTROPY; k <= GM_LOSS_MSE; k++) {
            char name[64];
            snprintf(name, sizeof name, "loss %d on %dx%d", k, n, d);
            float lc, lg, lg_nograd;
            gm_error err;
            assert_int_equal(p->cpu->loss(p->cpu, (gm_loss_kind)k, bc.pred, bc.target, bc.labels, n, d, 1.5f, bc.grad,
                                          &lc, &err), GM_OK);
            gm_status st = p->gpu->loss(p->gpu, (gm_loss_kind)k, bg.pred, bg.target, bg.labels, n, d, 1.5f, bg.grad,
                                        &lg, &err);
            if (st != GM_OK) fail_msg("%s: %s", name, err.msg);
            st = p->gpu->loss(p->gpu, (gm_loss_kind)k, bg.pred, bg.target, bg.labels, n, d, 1.5f, NULL, &lg_nograd,
                              &err);
            if (st != GM_OK) fail_msg("%s without grad: %s", name, err.msg);
            check_rel(name, "loss", &lg, &lc, 1, 1e-5);
            assert_true(lg == lg_nograd);
            p->cpu->to_host(p->cpu, gc, bc.grad, sizeof(float) * nd);
            p->gpu->to_host(p->gpu, gg, bg.grad, sizeof(float) * nd);
            check_rel(name, "grad", gg, gc, nd, kOpTol);
        }
        loss_bufs_free(p->cpu, &bc);
        loss_bufs_free(p->gpu, &bg);
        free(pred); free(target); free(gc); free(gg); free(labels);
    }
}

static void expect_loss_error(gm_backend *be, gm_loss_kind k, const loss_bufs *b, const int32_t *labels, int n,
                              int d, gm_status want, const char *needle)
{
    gm_error err;
    gm_error_clear(&err);
    float loss = 12345.0f;
    gm_status st = be->loss(be, k, b->pred, b->target, labels, n, d, 1.0f, b->grad, &loss, &err);
    if (st != want) fail_msg("loss error: got %s (%s), want %s", gm_status_name(st), err.msg, gm_status_name(want));
    if (!strstr(err.msg, needle)) fail_msg("loss error message \"%s\" lacks \"%s\"", err.msg, needle);
}

static void test_loss_errors(void **state)
{
    const pair *p = *state;
    gm_backend *be = p->gpu;
    enum { N = 5, D = 4 };
    float pred[N * D], target[N * D], seven[N * D], back[N * D];
    int32_t labels[N] = {0, 1, 2, 3, 0};
    for (int i = 0; i < N * D; i++) {
        pred[i] = 0.1f * (float)i;
        target[i] = 0.0f;
        seven[i] = 7.0f;
    }
    loss_bufs b = loss_bufs_on(be, pred, target, labels, N, D);
    be->to_device(be, b.grad, seven, sizeof seven);
    /* a label out of range, then a negative one: GM_EINVAL naming the sample, grad untouched */
    labels[3] = D;
    be->to_device(be, b.labels, labels, sizeof labels);
    expect_loss_error(be, GM_LOSS_CROSS_ENTROPY, &b, b.labels, N, D, GM_EINVAL, "label 4 of sample 3");
    labels[3] = 3;
    labels[1] = -1;
    be->to_device(be, b.labels, labels, sizeof labels);
    expect_loss_error(be, GM_LOSS_CROSS_ENTROPY, &b, b.labels, N, D, GM_EINVAL, "sample 1");
    labels[1] = 1;
    be->to_device(be, b.labels, labels, sizeof labels);
    be->to_host(be, back, b.grad, sizeof back);
    assert_memory_equal(back, seven, sizeof back);
    /* a NaN prediction (before the label check, as on the CPU) */
    float bad = NAN;
    be->to_device(be, b.pred + 2 * D + 1, &bad, sizeof bad);
    expect_loss_error(be, GM_LOSS_CROSS_ENTROPY, &b, b.labels, N, D, GM_ENUMERIC, "sample 2, output 1");
    expect_loss_error(be, GM_LOSS_MSE, &b, b.labels, N, D, GM_ENUMERIC, "sample 2, output 1");
    be->to_device(be, b.pred, pred, sizeof pred);
    /* a non-finite target: the loss itself is not finite */
    bad = INFINITY;
    be->to_device(be, b.target + 7, &bad, sizeof bad);
    expect_loss_error(be, GM_LOSS_L1, &b, b.labels, N, D, GM_ENUMERIC, "loss is");
    be->to_device(be, b.target, target, sizeof target);
    /* host memory where device memory belongs */
    expect_loss_error(be, GM_LOSS_CROSS_ENTROPY, &b, labels, N, D, GM_EINVAL, "labels");
    /* and the backend still works */
    float loss;
    gm_error err;
    assert_int_equal(be->loss(be, GM_LOSS_CROSS_ENTROPY, b.pred, NULL, b.labels, N, D, 1.0f, b.grad, &loss, &err),
                     GM_OK);
    assert_true(isfinite(loss));
    loss_bufs_free(be, &b);
    expect_no_failure(be, "loss errors");
}

/* ---- optimiser updates ----------------------------------------------------------- */

static void test_updates_match_cpu(void **state)
{
    const pair *p = *state;
    const size_t n = 1031;
    const struct {
        const char *name;
        gm_update u;
    } rules[] = {
        {"sgd", gm_update_sgd(0.1f, 0.0f, 0.0f, 0)},
        {"sgd momentum decay", gm_update_sgd(0.1f, 0.9f, 1e-2f, 0)},
        {"sgd nesterov", gm_update_sgd(0.05f, 0.9f, 1e-2f, 1)},
        {"adam", gm_update_adam(1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f)},
        {"adam l2", gm_update_adam(2e-3f, 0.8f, 0.99f, 1e-6f, 1e-2f)},
        {"adamw", gm_update_adamw(1e-3f, 0.9f, 0.999f, 1e-8f, 1e-2f)},
    };
    float *param = host_floats(n), *grad = host_floats(n), *hc = host_floats(n), *hg = host_floats(n);
    for (size_t r = 0; r < sizeof rules / sizeof rules[0]; r++) {
        gm_rng rng;
        gm_rng_seed(&rng, 21 + r);
        gm_fill_uniform(param, n, &rng, -1.0f, 1.0f);
        gm_backend *be[2] = {p->cpu, p->gpu};
        float *dp[2], *dg[2], *dm[2], *dv[2];
        for (int b = 0; b < 2; b++) {
            dp[b] = dev_floats(be[b], param, n);
            dg[b] = dev_floats(be[b], NULL, n);
            dm[b] = dev_floats(be[b], NULL, n);
            dv[b] = dev_floats(be[b], NULL, n);
        }
        for (long step = 1; step <= 3; step++) {
            gm_update u = rules[r].u;
            u.step = step;
            gm_fill_uniform(grad, n, &rng, -1.0f, 1.0f);
            for (int b = 0; b < 2; b++) {
                be[b]->to_device(be[b], dg[b], grad, sizeof(float) * n);
                be[b]->update(be[b], &u, dp[b], dg[b], dm[b], dv[b], n);
            }
            float **arrays[3] = {dp, dm, dv};
            const char *what[3] = {"param", "m", "v"};
            for (int k = 0; k < 3; k++) {
                be[0]->to_host(be[0], hc, arrays[k][0], sizeof(float) * n);
                be[1]->to_host(be[1], hg, arrays[k][1], sizeof(float) * n);
                check_rel(rules[r].name, what[k], hg, hc, n, kOpTol);
            }
        }
        for (int b = 0; b < 2; b++) {
            be[b]->free(be[b], dp[b]); be[b]->free(be[b], dg[b]); be[b]->free(be[b], dm[b]); be[b]->free(be[b], dv[b]);
        }
    }
    expect_no_failure(p->gpu, "updates");
    free(param); free(grad); free(hc); free(hg);
}

/* ---- whole nets -------------------------------------------------------------------- */

/* Losses of every step, then parameters, statistics and outputs, of one net on one backend.
 * gm_net_loss takes host labels and stages them in the backend's memory. */
typedef struct {
    float loss[4];
    float *params, *buffers, *out;
    size_t np, nb, nout;
} net_run;

static void net_train(gm_backend *be, const gm_model *m, const float *x, const int32_t *y, int batch, net_run *r)
{
    gm_error err;
    gm_net *net;
    gm_optim *opt;
    gm_net_desc d = gm_model_desc(m);
    if (gm_net_create(&net, be, &d, batch, 7, &err) != GM_OK) fail_msg("gm_net_create on %s: %s", be->name, err.msg);
    /* Adam's first step moves every parameter by lr * sign(g): with eps 1e-8 a gradient that is
     * zero up to rounding (|g| ~ 1e-9) moves by +-lr on either backend at random. eps 1e-6
     * bounds how much a rounding-sized difference in g can change an update (lr * dg / eps). */
    assert_int_equal(gm_optim_create(&opt, be, gm_update_adam(1e-3f, 0.9f, 0.999f, 1e-6f, 0.0f), gm_net_nparams(net),
                                     &err), GM_OK);
    /* three steps at the full batch, a fourth at a smaller one (a convolution shape not planned) */
    for (int step = 0; step < 4; step++) {
        int b = step < 3 ? batch : batch - 3;
        if (gm_net_forward(net, x, b, 1, &err) != GM_OK ||
            gm_net_loss(net, 0, GM_LOSS_CROSS_ENTROPY, NULL, y, 1.0f, &r->loss[step], &err) != GM_OK)
            fail_msg("net step %d on %s: %s", step, be->name, err.msg);
        gm_net_zero_grad(net);
        if (gm_net_backward(net, &err) != GM_OK) fail_msg("backward on %s: %s", be->name, err.msg);
        gm_optim_step(opt, gm_net_params(net), gm_net_grads(net));
    }
    if (gm_net_forward(net, x, batch, 0, &err) != GM_OK) fail_msg("eval forward on %s: %s", be->name, err.msg);
    r->np = gm_net_nparams(net);
    r->nb = gm_net_nbuffers(net);
    r->nout = (size_t)batch * gm_shape_numel(gm_net_output_shape(net, 0));
    r->params = host_floats(r->np);
    r->buffers = host_floats(r->nb);
    r->out = host_floats(r->nout);
    be->to_host(be, r->params, gm_net_params(net), sizeof(float) * r->np);
    be->to_host(be, r->buffers, gm_net_buffers(net), sizeof(float) * r->nb);
    be->to_host(be, r->out, gm_net_output(net, 0), sizeof(float) * r->nout);
    gm_optim_free(opt);
    gm_net_free(net);
}

static void net_compare(const pair *p, const char *name, const gm_model *m, int batch)
{
    const size_t nx = (size_t)batch * gm_shape_numel(m->input);
    float *x = host_floats(nx);
    int32_t *y = calloc((size_t)batch, sizeof *y);
    gm_rng rng;
    gm_rng_seed(&rng, 8);
    for (size_t i = 0; i < nx; i++) x[i] = gm_rng_normal(&rng);
    for (int i = 0; i < batch; i++) y[i] = (int32_t)gm_rng_below(&rng, (uint32_t)m->classes);
    net_run rc, rg;
    net_train(p->cpu, m, x, y, batch, &rc);
    net_train(p->gpu, m, x, y, batch, &rg);
    expect_no_failure(p->gpu, name);
    print_message("  %s: losses cpu %.6f %.6f %.6f %.6f, cuda %.6f %.6f %.6f %.6f\n", name, (double)rc.loss[0],
                  (double)rc.loss[1], (double)rc.loss[2], (double)rc.loss[3], (double)rg.loss[0], (double)rg.loss[1],
                  (double)rg.loss[2], (double)rg.loss[3]);
    for (int s = 0; s < 4; s++) check_rel(name, "loss", &rg.loss[s], &rc.loss[s], 1, kNetTol);
    check_rel(name, "parameters", rg.params, rc.params, rc.np, kNetTol);
    check_rel(name, "running statistics", rg.buffers, rc.buffers, rc.nb, kNetTol);
    check_rel(name, "eval outputs", rg.out, rc.out, rc.nout, kNetTol);
    free(rc.params); free(rc.buffers); free(rc.out);
    free(rg.params); free(rg.buffers); free(rg.out);
    free(x);
    free(y);
}

static void test_nets_match_cpu(void **state)
{
    const pair *p = *state;
    gm_error err;
    static gm_model m; /* large: keep it off the stack */
    /* VGG-style without dropout (its masks differ by design between the backends) */
    gm_vgg_config vc = {.nstages = 2, .convs = {1, 2}, .widths = {8, 16}, .fc = 32, .dropout = 0.0f};
    assert_int_equal(gm_model_vgg(&m, &vc, (gm_shape){3, 12, 12}, 5, &err), GM_OK);
    net_compare(p, "vgg", &m, 7);
    const int widths[] = {8, 16, 0};
    assert_int_equal(gm_model_from_name(&m, "resnet10", widths, (gm_shape){3, 16, 16}, 5, &err), GM_OK);
    net_compare(p, "resnet10", &m, 7);
}

/* ---- timing, recorded failures, TF32 ---------------------------------------------- */

static void test_timing(void **state)
{
    const pair *p = *state;
    gm_backend *be = p->gpu;
    gm_op op = gm_op_conv2d(16, 32, 3, 1, 1, 0);
    gm_shape in = {16, 32, 32}, out = {32, 32, 32};
    enum { B = 32 };
    float *x = dev_floats(be, NULL, B * gm_shape_numel(in)), *y = dev_floats(be, NULL, B * gm_shape_numel(out));
    float *w = dev_floats(be, NULL, gm_op_nparams(&op));
    gm_error err;
    assert_int_equal(be->reserve_scratch(be, be->scratch_bytes(be, &op, in, out, B), &err), GM_OK);
    gm_op_args a = {.op = &op, .in = {in, in}, .out = out, .batch = B, .x = {x, NULL}, .y = y, .w = w};
    be->mark(be, 0);
    for (int i = 0; i < 20; i++) be->forward(be, &a);
    be->mark(be, 1);
    double ms = be->elapsed_ms(be, 0, 1);
    print_message("  20 convolutions: %.3f ms\n", ms);
    assert_true(ms > 0.0);
    assert_true(be->elapsed_ms(be, 0, 0) == 0.0);
    expect_no_failure(be, "timing");
    be->free(be, x); be->free(be, y); be->free(be, w);
}

/* A misuse inside a void call is kept, reported once, then cleared. */
static void test_recorded_failure(void **state)
{
    (void)state;
    gm_backend *be;
    gm_error err;
    gm_cuda_opts opts = {0, 0};
    assert_int_equal(gm_backend_cuda_create(&be, &opts, &err), GM_OK);
    assert_int_equal(gm_backend_cuda_status(be, &err), GM_OK);
    /* an elapsed time between marks never recorded */
    (void)be->elapsed_ms(be, 2, 3);
    assert_int_equal(gm_backend_cuda_status(be, &err), GM_EINVAL);
    assert_non_null(strstr(err.msg, "never recorded"));
    assert_int_equal(gm_backend_cuda_status(be, &err), GM_OK);
    /* batch normalisation without its scratch */
    gm_op op = gm_op_batchnorm2d(2);
    gm_shape in = {2, 3, 3};
    float *x = dev_floats(be, NULL, 18), *y = dev_floats(be, NULL, 18), *w = dev_floats(be, NULL, 4);
    float *buf = dev_floats(be, NULL, 4), *aux = dev_floats(be, NULL, 4), *pred = dev_floats(be, NULL, 2);
    int32_t *lab = be->alloc(be, 2 * sizeof(int32_t));
    gm_op_args a = {.op = &op, .in = {in, in}, .out = in, .batch = 1, .train = 1, .x = {x, NULL}, .y = y, .w = w,
                    .buf = buf, .aux = aux};
    be->forward(be, &a);
    /* the next status-returning call reports it: here a loss */
    float loss;
    assert_int_equal(be->loss(be, GM_LOSS_CROSS_ENTROPY, pred, NULL, lab, 1, 2, 1.0f, NULL, &loss, &err), GM_EINVAL);
    assert_non_null(strstr(err.msg, "scratch"));
    assert_int_equal(be->loss(be, GM_LOSS_CROSS_ENTROPY, pred, NULL, lab, 1, 2, 1.0f, NULL, &loss, &err), GM_OK);
    assert_true(fabsf(loss - logf(2.0f)) < 1e-6f);
    /* with scratch it runs */
    assert_int_equal(be->reserve_scratch(be, be->scratch_bytes(be, &op, in, in, 1), &err), GM_OK);
    be->forward(be, &a);
    be->sync(be);
    assert_int_equal(gm_backend_cuda_status(be, &err), GM_OK);
    void *mem[] = {x, y, w, buf, aux, pred, lab};
    for (size_t i = 0; i < sizeof mem / sizeof mem[0]; i++) be->free(be, mem[i]);
    gm_backend_free(be);
}

/* Memory from alloc is zeroed; copies round-trip; zero clears. */
static void test_memory(void **state)
{
    const pair *p = *state;
    gm_backend *be = p->gpu;
    enum { N = 1000 };
    float h[N], back[N];
    float *d = be->alloc(be, sizeof h);
    assert_non_null(d);
    be->to_host(be, back, d, sizeof back);
    for (int i = 0; i < N; i++) assert_true(back[i] == 0.0f);
    for (int i = 0; i < N; i++) h[i] = (float)i - 3.5f;
    be->to_device(be, d, h, sizeof h);
    be->to_host(be, back, d, sizeof back);
    assert_memory_equal(h, back, sizeof h);
    be->zero(be, d + 10, 20 * sizeof(float));
    be->to_host(be, back, d, sizeof back);
    for (int i = 0; i < N; i++) assert_true(back[i] == (i >= 10 && i < 30 ? 0.0f : h[i]));
    void *none = be->alloc(be, 0);
    assert_non_null(none);
    be->free(be, none);
    be->free(be, d);
    assert_non_null(gm_backend_cuda_stream(be));
    expect_no_failure(be, "memory");
}

/* TF32 runs and stays near strict float32 (TF32 keeps 10 mantissa bits). */
static void test_tf32(void **state)
{
    const pair *p = *state;
    gm_backend *fast;
    gm_error err;
    gm_cuda_opts opts = {0, 1};
    assert_int_equal(gm_backend_cuda_create(&fast, &opts, &err), GM_OK);
    pair q = {p->cpu, fast};
    const gm_op ops[2] = {gm_op_conv2d(16, 32, 3, 1, 1, 1), gm_op_linear(256, 64, 1)};
    const gm_shape ins[2] = {{16, 16, 16}, {256, 1, 1}};
    for (int i = 0; i < 2; i++) {
        op_case c = {i ? "linear tf32" : "conv tf32", ops[i], ins[i], 8, 1, 0, 0, 0};
        op_data d;
        op_result rc, rg;
        op_data_make(&c, &d);
        op_run(q.cpu, &c, &d, &rc);
        op_run(q.gpu, &c, &d, &rg);
        expect_no_failure(fast, c.name);
        check_rel(c.name, "y", rg.y, rc.y, d.n_out, 1e-2);
        check_rel(c.name, "dx", rg.dx_set[0], rc.dx_set[0], d.n_in, 1e-2);
        check_rel(c.name, "dw", rg.dw_add, rc.dw_add, d.np, 1e-2);
        op_result_free(&rc);
        op_result_free(&rg);
        op_data_free(&d);
    }
    gm_backend_free(fast);
}

/* ---- without a GPU ------------------------------------------------------------------ */

static void test_create_refuses(void **state)
{
    (void)state;
    gm_backend *be = (gm_backend *)&be; /* must be cleared */
    gm_error err;
    gm_cuda_opts opts = {-1, 0};
    assert_int_equal(gm_backend_cuda_create(&be, NULL, &err), GM_EINVAL);
    assert_null(be);
    assert_int_equal(gm_backend_cuda_create(&be, &opts, &err), GM_EINVAL);
    assert_non_null(strstr(err.msg, "-1"));
}

static void test_no_device_fails_cleanly(void **state)
{
    (void)state;
    gm_backend *be = (gm_backend *)&be;
    gm_error err;
    gm_error_clear(&err);
    gm_cuda_opts opts = {0, 0};
    assert_int_equal(gm_backend_cuda_create(&be, &opts, &err), GM_EDEVICE);
    assert_null(be);
    assert_int_equal(err.code, GM_EDEVICE);
    assert_true(err.msg[0] != '\0');
    assert_int_equal(gm_backend_cuda_create(&be, &opts, NULL), GM_EDEVICE); /* err may be NULL */
}

static void test_gpu_skipped(void **state)
{
    (void)state;
    skip();
}

static int setup_pair(void **state)
{
    static pair p;
    gm_error err;
    gm_cuda_opts opts = {0, 0};
    if (gm_backend_cpu_create(&p.cpu, 1, &err) != GM_OK || gm_backend_cuda_create(&p.gpu, &opts, &err) != GM_OK) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    *state = &p;
    return 0;
}

static int teardown_pair(void **state)
{
    pair *p = *state;
    gm_backend_free(p->gpu);
    gm_backend_free(p->cpu);
    return 0;
}

int main(void)
{
    gm_backend *probe;
    gm_error err;
    gm_error_clear(&err);
    gm_cuda_opts opts = {0, 0};
    gm_status st = gm_backend_cuda_create(&probe, &opts, &err);
    if (st == GM_EDEVICE) {
        printf("SKIPPED: no CUDA device: %s\n", err.msg);
        fflush(stdout);
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_create_refuses),
            cmocka_unit_test(test_no_device_fails_cleanly),
            cmocka_unit_test(test_gpu_skipped),
        };
        int failed = cmocka_run_group_tests_name("cuda_backend_no_device", tests, NULL, NULL);
        return failed ? 1 : GM_TEST_SKIPPED;
    }
    if (st != GM_OK) {
        fprintf(stderr, "gm_backend_cuda_create: %s: %s\n", gm_status_name(st), err.msg);
        return 1;
    }
    gm_backend_free(probe);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_refuses),
        cmocka_unit_test(test_memory),
        cmocka_unit_test(test_ops_match_cpu),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_losses_match_cpu),
        cmocka_unit_test(test_loss_errors),
        cmocka_unit_test(test_updates_match_cpu),
        cmocka_unit_test(test_nets_match_cpu),
        cmocka_unit_test(test_timing),
        cmocka_unit_test(test_recorded_failure),
        cmocka_unit_test(test_tf32),
    };
    return cmocka_run_group_tests_name("cuda_backend", tests, setup_pair, teardown_pair);
}

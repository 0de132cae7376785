/*
 * The optimised CPU kernels against the plain double reference on shapes large
 * enough to take every fast path: chunked and single-image convolutions, the
 * direct 1x1 path, and the multi-threaded loops of the memory-bound ops.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gm_backend.h"
#include "test_reference.h"
#include "test_util.h"

typedef struct {
    gm_op op;
    gm_shape in;
    int batch;
} kcase;

static double *dbl(const float *f, size_t n)
{
    double *d = malloc(sizeof *d * (n + 1));
    for (size_t i = 0; i < n; i++) d[i] = f[i];
    return d;
}

static void run_case(const kcase *c, int nt)
{
    gm_backend *be;
    gm_error err;
    assert_int_equal(gm_backend_cpu_create(&be, nt, &err), GM_OK);
    gm_shape ins[2] = {c->in, c->in}, out;
    assert_int_equal(gm_op_infer(&c->op, ins, &out, &err), GM_OK);
    size_t n_in = (size_t)c->batch * gm_shape_numel(c->in), n_out = (size_t)c->batch * gm_shape_numel(out);
    size_t np = gm_op_nparams(&c->op), nb = gm_op_nbuffers(&c->op);
    gm_rng rng;
    gm_rng_seed(&rng, 7);
    float *x = malloc(4 * n_in), *x1 = malloc(4 * n_in), *y = malloc(4 * n_out), *dy = malloc(4 * n_out);
    float *dx = calloc(n_in, 4), *w = calloc(np + 1, 4), *dw = calloc(np + 1, 4), *buf = calloc(nb + 1, 4);
    gm_fill_uniform(x, n_in, &rng, -1, 1);
    gm_fill_uniform(x1, n_in, &rng, -1, 1);
    gm_fill_uniform(w, np, &rng, -0.3f, 0.3f);
    gm_fill_uniform(dy, n_out, &rng, -1, 1);
    if (c->op.kind == GM_OP_BATCHNORM2D)
        for (int i = 0; i < c->op.p.bn.c; i++) buf[c->op.p.bn.c + i] = 1.0f;
    void *aux = calloc(be->aux_bytes(be, &c->op, c->in, out, c->batch) + 8, 1);
    assert_int_equal(be->reserve_scratch(be, be->scratch_bytes(be, &c->op, c->in, out, c->batch), &err), GM_OK);
    gm_op_args a = {.op = &c->op, .in = {c->in, c->in}, .out = out, .batch = c->batch, .train = 1,
                    .x = {x, x1}, .y = y, .w = np ? w : NULL, .buf = nb ? buf : NULL, .aux = aux,
                    .rng = &rng, .dy = dy, .dx = {dx, NULL}, .dw = np ? dw : NULL};
    be->forward(be, &a);
    double *xd = dbl(x, n_in), *x1d = dbl(x1, n_in), *wd = dbl(w, np), *yd = malloc(8 * n_out);
    ref_args r = {.op = &c->op, .in = {c->in, c->in}, .out = out, .batch = c->batch, .train = 1,
                  .x = {xd, x1d}, .w = wd};
    ref_forward(&r, yd);
    for (size_t i = 0; i < n_out; i++) gm_assert_close("y", i, y[i], yd[i], 1e-4, 1e-4);
    if (c->op.kind == GM_OP_CONV2D) {
        be->backward(be, &a);
        const gm_conv_params *p = &c->op.p.conv;
        double *dyd = dbl(dy, n_out), *dxr = malloc(8 * n_in), *dwr = malloc(8 * (np + 1));
        ref_conv_backward(p, c->in, out, c->batch, xd, wd, dyd, dxr, dwr,
                          p->bias ? dwr + (size_t)p->cout * p->cin * p->k * p->k : NULL);
        for (size_t i = 0; i < n_in; i++) gm_assert_close("dx", i, dx[i], dxr[i], 1e-3, 1e-4);
        for (size_t i = 0; i < np; i++) gm_assert_close("dw", i, dw[i], dwr[i], 1e-3, 1e-4);
        free(dyd); free(dxr); free(dwr);
    }
    if (c->op.kind == GM_OP_UPSAMPLE) {
        double *dyd = dbl(dy, n_out), *dxr = malloc(8 * n_in);
        ref_upsample_backward(c->op.p.upsample.factor, c->in, c->batch, dyd, dxr);
        be->backward(be, &a); /* dx was zero: adding gives the gradient */
        for (size_t i = 0; i < n_in; i++) gm_assert_close("dx", i, dx[i], dxr[i], 1e-5, 1e-5);
        be->backward(be, &a); /* adds again */
        for (size_t i = 0; i < n_in; i++) gm_assert_close("dx+dx", i, dx[i], 2.0 * dxr[i], 1e-5, 1e-5);
        for (size_t i = 0; i < n_in; i++) dx[i] = NAN; /* stale: set mode must not read it */
        a.dx_set[0] = 1;
        be->backward(be, &a);
        for (size_t i = 0; i < n_in; i++) gm_assert_close("dx set", i, dx[i], dxr[i], 1e-5, 1e-5);
        free(dyd); free(dxr);
    }
    free(x); free(x1); free(y); free(dy); free(dx); free(w); free(dw); free(buf); free(aux);
    free(xd); free(x1d); free(wd); free(yd);
    gm_backend_free(be);
}

static void test_kernels_vs_reference(void **state)
{
    int nt = *(int *)*state;
    const kcase cases[] = {
        {gm_op_conv2d(3, 16, 3, 1, 1, 1), {3, 32, 32}, 4},  /* direct path, 4-channel tiles */
        {gm_op_conv2d(5, 7, 5, 1, 2, 1), {5, 20, 19}, 3},   /* direct 5x5, a 3-channel tail tile */
        {gm_op_conv2d(4, 6, 3, 2, 1, 1), {4, 40, 40}, 2},   /* strided: one image per GEMM */
        {gm_op_conv2d(16, 24, 3, 1, 1, 0), {16, 8, 8}, 9},  /* chunks of 8 images, a ragged tail */
        {gm_op_conv2d(8, 8, 3, 2, 1, 0), {8, 9, 9}, 5},
        {gm_op_conv2d(16, 8, 1, 1, 0, 1), {16, 24, 24}, 3}, /* direct 1x1 */
        {gm_op_conv2d(16, 8, 1, 1, 0, 1), {16, 6, 6}, 7},   /* chunked 1x1 */
        {gm_op_batchnorm2d(32), {32, 16, 16}, 8},
        {gm_op_relu(), {32, 16, 16}, 8},
        {gm_op_add(), {32, 16, 16}, 8},
        {gm_op_maxpool2d(2, 2, 0), {32, 16, 16}, 8},
        {gm_op_avgpool2d(3, 2, 1), {32, 16, 16}, 8},
        {gm_op_globalavgpool(), {64, 16, 16}, 8},
        {gm_op_linear(300, 70, 1), {300, 1, 1}, 64},
        {gm_op_upsample(2), {16, 16, 12}, 8},               /* threaded: 98304 outputs */
        {gm_op_upsample(3), {5, 7, 4}, 3},                  /* one thread, non-square */
        {gm_op_upsample(1), {32, 16, 16}, 8},               /* identity, threaded */
        {gm_op_upsample(16), {2, 3, 2}, 2},                 /* the largest factor */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], nt);
}

/* NaN propagates through max pooling, as in PyTorch, on the 2x2 fast path and the general one. */
static void test_maxpool_nan(void **state)
{
    (void)state;
    gm_backend *be;
    gm_error err;
    assert_int_equal(gm_backend_cpu_create(&be, 1, &err), GM_OK);
    const gm_op ops[2] = {gm_op_maxpool2d(2, 2, 0), gm_op_maxpool2d(3, 2, 1)};
    for (int k = 0; k < 2; k++) {
        gm_shape in = {1, 6, 6}, out;
        assert_int_equal(gm_op_infer(&ops[k], &in, &out, &err), GM_OK);
        float x[36], y[9];
        for (int i = 0; i < 36; i++) x[i] = (float)i;
        x[0] = NAN; /* only in the first window of both pools */
        int32_t arg[9];
        gm_op_args a = {.op = &ops[k], .in = {in, in}, .out = out, .batch = 1, .x = {x, NULL}, .y = y, .aux = arg};
        be->forward(be, &a);
        assert_true(isnan(y[0]));
        assert_false(isnan(y[1]));
    }
    gm_backend_free(be);
}

int main(void)
{
    static int one = 1, two = 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate(test_kernels_vs_reference, &one),
        cmocka_unit_test_prestate(test_kernels_vs_reference, &two),
        cmocka_unit_test(test_maxpool_nan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Every op's backward (and every loss's gradient) against central finite
 * differences of the double-precision reference forward (test_reference.c).
 * The scalar checked is L = sum_i dy_i * y_i for a random dy, so dL/dx is what
 * backward must produce for that upstream gradient. Inputs of ReLU and max
 * pooling are kept away from their kinks so the derivative exists.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_backend.h"
#include "gm_net.h"
#include "test_reference.h"
#include "test_util.h"

enum { MAX_CHECKS = 48 };

typedef struct {
    const char *name;
    gm_op op;
    gm_shape in;
    int batch, train;
} grad_case;

typedef struct {
    const grad_case *c;
    gm_shape out;
    size_t n_in, n_out, np, nb;
    double *xd[2], *wd, *bufd, *maskd, *dyd, *yd;
} ref_problem;

static double ref_loss(ref_problem *p)
{
    ref_args a = {.op = &p->c->op, .in = {p->c->in, p->c->in}, .out = p->out, .batch = p->c->batch,
                  .train = p->c->train, .x = {p->xd[0], p->xd[1]}, .w = p->wd, .buf = p->bufd,
                  .mask = p->maskd};
    ref_forward(&a, p->yd);
    double l = 0.0;
    for (size_t i = 0; i < p->n_out; i++) l += p->dyd[i] * p->yd[i];
    return l;
}

/* Checks analytic gradient g (float) of the array v (double, perturbed in place). */
static void check_array(const char *what, ref_problem *p, double *v, const float *g, size_t n, gm_rng *rng)
{
    size_t checks = n < MAX_CHECKS ? n : MAX_CHECKS;
    for (size_t t = 0; t < checks; t++) {
        size_t i = n <= MAX_CHECKS ? t : gm_rng_below(rng, (uint32_t)n);
        double keep = v[i], h = 1e-5;
        v[i] = keep + h;
        double lp = ref_loss(p);
        v[i] = keep - h;
        double lm = ref_loss(p);
        v[i] = keep;
        gm_assert_close(what, i, g[i], (lp - lm) / (2 * h), 2e-4, 2e-3);
    }
}

static void fill_input(const grad_case *c, float *x, size_t n, gm_rng *rng)
{
    if (c->op.kind == GM_OP_MAXPOOL2D) { /* distinct values: the argmax is unique */
        for (size_t i = 0; i < n; i++) x[i] = (float)i * 0.01f;
        for (size_t i = n - 1; i > 0; i--) {
            size_t j = gm_rng_below(rng, (uint32_t)(i + 1));
            float t = x[i];
            x[i] = x[j];
            x[j] = t;
        }
    } else if (c->op.kind == GM_OP_RELU) { /* |x| >= 0.1: far from the kink */
        for (size_t i = 0; i < n; i++)
            x[i] = (0.1f + 0.9f * gm_rng_uniform(rng)) * (gm_rng_uniform(rng) < 0.5f ? -1.0f : 1.0f);
    } else {
        gm_fill_uniform(x, n, rng, -1.0f, 1.0f);
    }
}

static double *to_double(const float *f, size_t n)
{
    double *d = calloc(n + 1, sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = f[i];
    return d;
}

static void check_case(const grad_case *c, int nthreads)
{
    gm_backend *be;
    gm_error err;
    assert_int_equal(gm_backend_cpu_create(&be, nthreads, &err), GM_OK);
    gm_shape ins[2] = {c->in, c->in}, out;
    assert_int_equal(gm_op_infer(&c->op, ins, &out, &err), GM_OK);
    ref_problem p = {.c = c, .out = out, .n_in = (size_t)c->batch * gm_shape_numel(c->in),
                     .n_out = (size_t)c->batch * gm_shape_numel(out), .np = gm_op_nparams(&c->op),
                     .nb = gm_op_nbuffers(&c->op)};
    gm_rng rng;
    gm_rng_seed(&rng, 1234 + (uint64_t)c->op.kind);
    float *x[2], *dx[2], *w = calloc(p.np + 1, 4), *dw = calloc(p.np + 1, 4), *buf = calloc(p.nb + 1, 4);
    float *y = calloc(p.n_out, 4), *dy = calloc(p.n_out, 4);
    for (int j = 0; j < 2; j++) {
        x[j] = calloc(p.n_in, 4);
        dx[j] = calloc(p.n_in, 4);
        fill_input(c, x[j], p.n_in, &rng);
    }
    gm_fill_uniform(w, p.np, &rng, -0.5f, 0.5f);
    if (c->op.kind == GM_OP_BATCHNORM2D) {
        int C = c->op.p.bn.c;
        gm_fill_uniform(w, (size_t)C, &rng, 0.5f, 1.5f);
        gm_fill_uniform(buf, (size_t)C, &rng, -0.2f, 0.2f);
        gm_fill_uniform(buf + C, (size_t)C, &rng, 0.5f, 1.5f);
    }
    gm_fill_uniform(dy, p.n_out, &rng, -1.0f, 1.0f);
    size_t aux_bytes = be->aux_bytes(be, &c->op, c->in, out, c->batch);
    void *aux = calloc(aux_bytes + 8, 1);
    assert_int_equal(be->reserve_scratch(be, be->scratch_bytes(be, &c->op, c->in, out, c->batch), &err), GM_OK);
    float *buf_before = calloc(p.nb + 1, 4);
    memcpy(buf_before, buf, 4 * p.nb);

    gm_op_args a = {.op = &c->op, .in = {c->in, c->in}, .out = out, .batch = c->batch, .train = c->train,
                    .x = {x[0], x[1]}, .y = y, .w = p.np ? w : NULL, .buf = p.nb ? buf : NULL, .aux = aux,
                    .rng = &rng, .dy = dy, .dx = {dx[0], c->op.kind == GM_OP_ADD ? dx[1] : NULL},
                    .dw = p.np ? dw : NULL};
    be->forward(be, &a);
    be->backward(be, &a);

    p.xd[0] = to_double(x[0], p.n_in);
    p.xd[1] = to_double(x[1], p.n_in);
    p.wd = to_double(w, p.np);
    p.bufd = to_double(buf_before, p.nb); /* eval mode reads the statistics as they were */
    p.dyd = to_double(dy, p.n_out);
    p.yd = calloc(p.n_out, sizeof(double));
    p.maskd = c->op.kind == GM_OP_DROPOUT && c->train ? to_double(aux, p.n_out) : NULL;

    /* forward agrees with the reference too */
    ref_loss(&p);
    for (size_t i = 0; i < p.n_out; i++) gm_assert_close("y", i, y[i], p.yd[i], 1e-5, 1e-4);
    check_array("dx0", &p, p.xd[0], dx[0], p.n_in, &rng);
    if (c->op.kind == GM_OP_ADD) check_array("dx1", &p, p.xd[1], dx[1], p.n_in, &rng);
    if (p.np) check_array("dw", &p, p.wd, dw, p.np, &rng);

    /* backward adds: a second call doubles every gradient */
    float *dx_once = calloc(p.n_in, 4), *dw_once = calloc(p.np + 1, 4);
    memcpy(dx_once, dx[0], 4 * p.n_in);
    memcpy(dw_once, dw, 4 * p.np);
    be->backward(be, &a);
    for (size_t i = 0; i < p.n_in; i++) gm_assert_close("2*dx", i, dx[0][i], 2.0 * dx_once[i], 1e-6, 1e-5);
    for (size_t i = 0; i < p.np; i++) gm_assert_close("2*dw", i, dw[i], 2.0 * dw_once[i], 1e-6, 1e-5);

    /* dx_set: the first writer overwrites whatever the buffer held */
    for (int j = 0; j < 2; j++) {
        for (size_t i = 0; i < p.n_in; i++) dx[j][i] = 1e3f;
        a.dx_set[j] = 1;
    }
    be->backward(be, &a);
    for (size_t i = 0; i < p.n_in; i++) gm_assert_close("dx set", i, dx[0][i], dx_once[i], 1e-6, 1e-5);
    if (c->op.kind == GM_OP_ADD)
        for (size_t i = 0; i < p.n_in; i++) gm_assert_close("dx1 set", i, dx[1][i], dx_once[i], 1e-6, 1e-5);

    free(dx_once); free(dw_once); free(buf_before);
    for (int j = 0; j < 2; j++) { free(x[j]); free(dx[j]); free(p.xd[j]); }
    free(w); free(dw); free(buf); free(y); free(dy); free(aux);
    free(p.wd); free(p.bufd); free(p.dyd); free(p.yd); free(p.maskd);
    gm_backend_free(be);
}

static const grad_case cases[] = {
    {"conv 3x3 s1 p1 bias", {0}, {3, 5, 5}, 2, 1},
    {"conv 3x3 s2 p1", {0}, {2, 7, 6}, 2, 1},
    {"conv 1x1 s1", {0}, {3, 4, 4}, 3, 1},
    {"conv 1x1 s2", {0}, {3, 5, 5}, 2, 1},
    {"conv 5x5 p2", {0}, {2, 6, 6}, 1, 1},
    {"conv 3x3 p0 tiny", {0}, {2, 3, 3}, 2, 1},
    {"conv 3x3 p1 on 1x1", {0}, {2, 1, 1}, 2, 1},
    {"conv 2x2 s2", {0}, {2, 6, 6}, 2, 1},
    {"conv large map", {0}, {1, 24, 24}, 1, 1},
    {"conv 1x1 large map", {0}, {4, 24, 24}, 1, 1},
    {"batchnorm train", {0}, {3, 4, 4}, 3, 1},
    {"batchnorm eval", {0}, {3, 4, 4}, 2, 0},
    {"relu", {0}, {2, 3, 3}, 2, 1},
    {"maxpool 2 s2", {0}, {2, 4, 5}, 2, 1},
    {"maxpool 3 s2 p1", {0}, {2, 5, 5}, 2, 1},
    {"avgpool 2 s2", {0}, {2, 4, 4}, 2, 1},
    {"avgpool 3 s1 p1", {0}, {2, 4, 4}, 2, 1},
    {"global avgpool", {0}, {3, 3, 2}, 2, 1},
    {"linear", {0}, {5, 1, 1}, 3, 1},
    {"linear no bias", {0}, {6, 1, 1}, 2, 1},
    {"flatten", {0}, {2, 2, 2}, 2, 1},
    {"add", {0}, {3, 2, 2}, 2, 1},
    {"dropout train", {0}, {3, 4, 4}, 2, 1},
    {"dropout eval", {0}, {3, 4, 4}, 2, 0},
    {"upsample x2", {0}, {3, 3, 4}, 2, 1},
    {"upsample x3 non-square", {0}, {2, 2, 3}, 2, 1},
    {"upsample x1", {0}, {2, 3, 3}, 2, 1},
    {"upsample x2 on 1x1", {0}, {4, 1, 1}, 3, 1},
    {"upsample x4 large map", {0}, {3, 7, 5}, 2, 1},
};

static gm_op case_op(int i)
{
    switch (i) {
    case 0: return gm_op_conv2d(3, 4, 3, 1, 1, 1);
    case 1: return gm_op_conv2d(2, 3, 3, 2, 1, 0);
    case 2: return gm_op_conv2d(3, 2, 1, 1, 0, 1);
    case 3: return gm_op_conv2d(3, 2, 1, 2, 0, 0);
    case 4: return gm_op_conv2d(2, 2, 5, 1, 2, 1);
    case 5: return gm_op_conv2d(2, 3, 3, 1, 0, 1);
    case 6: return gm_op_conv2d(2, 2, 3, 1, 1, 1);
    case 7: return gm_op_conv2d(2, 2, 2, 2, 0, 1);
    case 8: return gm_op_conv2d(1, 2, 3, 1, 1, 1);
    case 9: return gm_op_conv2d(4, 3, 1, 1, 0, 1);
    case 10: case 11: return gm_op_batchnorm2d(3);
    case 12: return gm_op_relu();
    case 13: return gm_op_maxpool2d(2, 2, 0);
    case 14: return gm_op_maxpool2d(3, 2, 1);
    case 15: return gm_op_avgpool2d(2, 2, 0);
    case 16: return gm_op_avgpool2d(3, 1, 1);
    case 17: return gm_op_globalavgpool();
    case 18: return gm_op_linear(5, 4, 1);
    case 19: return gm_op_linear(6, 3, 0);
    case 20: return gm_op_flatten();
    case 21: return gm_op_add();
    case 22: case 23: return gm_op_dropout(0.3f);
    case 24: return gm_op_upsample(2);
    case 25: return gm_op_upsample(3);
    case 26: return gm_op_upsample(1);
    case 27: return gm_op_upsample(2);
    default: return gm_op_upsample(4);
    }
}

static void test_all_ops(void **state)
{
    int nthreads = *(int *)*state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        grad_case c = cases[i];
        c.op = case_op((int)i);
        print_message("  %-22s (%d thread%s)\n", c.name, nthreads, nthreads > 1 ? "s" : "");
        check_case(&c, nthreads);
    }
}

/* ---- upsample: shapes, refusals, counts ---- */

static void test_upsample_infer(void **state)
{
    (void)state;
    gm_error err;
    gm_shape in = {3, 5, 7}, out;
    gm_op op = gm_op_upsample(3);
    assert_string_equal(gm_op_name(op.kind), "upsample");
    assert_int_equal(gm_op_ninputs(&op), 1);
    assert_int_equal(gm_op_infer(&op, &in, &out, &err), GM_OK);
    assert_int_equal(out.c, 3);
    assert_int_equal(out.h, 15);
    assert_int_equal(out.w, 21);
    assert_int_equal(gm_op_nparams(&op), 0);
    assert_int_equal(gm_op_nbuffers(&op), 0);
    assert_int_equal(gm_op_flops(&op, in, out), 3 * 15 * 21);
    const int bad[] = {0, -2, 17};
    for (int i = 0; i < 3; i++) {
        op = gm_op_upsample(bad[i]);
        assert_int_equal(gm_op_infer(&op, &in, &out, &err), GM_EINVAL);
        char want[32];
        snprintf(want, sizeof want, "factor %d", bad[i]);
        if (!strstr(err.msg, want)) fail_msg("message \"%s\" lacks \"%s\"", err.msg, want);
    }
    op = gm_op_upsample(16);
    assert_int_equal(gm_op_infer(&op, &in, &out, &err), GM_OK);
    assert_int_equal(out.h, 80);
    gm_shape huge = {1, 1 << 28, 4};
    assert_int_equal(gm_op_infer(&op, &huge, &out, &err), GM_ESHAPE);
}

/*
 * Upsampling inside nets, in the adapter's places: block 0 is a residual of
 * conv1x1, avgpool, upsample and add (so the upsample overwrites the pool's
 * gradient and the conv's gradient is the sum of two paths); block 1 upsamples
 * its block input and ends in a conv1x1 (the adapter itself). Every op is linear,
 * so the MSE loss is quadratic in each weight and a central difference in float
 * is exact up to rounding: it must match backward's parameter gradients.
 */
static float net_mse(gm_net *net, const float *x, const float *target, int batch)
{
    gm_error err;
    float loss;
    assert_int_equal(gm_net_forward(net, x, batch, 1, &err), GM_OK);
    assert_int_equal(gm_net_loss(net, 0, GM_LOSS_MSE, target, NULL, 1.0f, &loss, &err), GM_OK);
    return loss;
}

static void test_upsample_in_net(void **state)
{
    int nthreads = *(int *)*state;
    enum { B = 2 };
    gm_error err;
    gm_block blocks[2] = {gm_block_empty(GM_BLOCK_CUSTOM), gm_block_empty(GM_BLOCK_CUSTOM)};
    assert_int_equal(gm_block_push(&blocks[0], gm_op_conv2d(2, 3, 1, 1, 0, 1), -1, -1, &err), GM_OK);
    assert_int_equal(gm_block_push(&blocks[0], gm_op_avgpool2d(2, 2, 0), 0, -1, &err), GM_OK);
    assert_int_equal(gm_block_push(&blocks[0], gm_op_upsample(2), 1, -1, &err), GM_OK);
    assert_int_equal(gm_block_push(&blocks[0], gm_op_add(), 2, 0, &err), GM_OK);
    assert_int_equal(gm_block_push(&blocks[1], gm_op_upsample(3), -1, -1, &err), GM_OK);
    assert_int_equal(gm_block_push(&blocks[1], gm_op_conv2d(3, 2, 1, 1, 0, 1), 0, -1, &err), GM_OK);
    gm_shape in = {2, 4, 6}, out;
    assert_int_equal(gm_block_infer(&blocks[1], (gm_shape){3, 4, 6}, &out, &err), GM_OK);
    assert_int_equal(out.h, 12);
    assert_int_equal(out.w, 18);
    gm_net_desc d = {in, 2, blocks, NULL};
    gm_backend *be;
    gm_net *net;
    assert_int_equal(gm_backend_cpu_create(&be, nthreads, &err), GM_OK);
    if (gm_net_create(&net, be, &d, B, 5, &err) != GM_OK) fail_msg("%s", err.msg);
    size_t nx = B * gm_shape_numel(in), ny = B * gm_shape_numel(gm_net_output_shape(net, 0));
    size_t np = gm_net_nparams(net);
    assert_int_equal(np, 3 * 2 + 3 + 2 * 3 + 2);
    float *x = malloc(4 * nx), *t = malloc(4 * ny), *g = malloc(4 * np);
    gm_rng rng;
    gm_rng_seed(&rng, 17);
    gm_fill_uniform(x, nx, &rng, -1.0f, 1.0f);
    gm_fill_uniform(t, ny, &rng, -1.0f, 1.0f);
    /* Twice: the second backward finds the first one's gradients in every activation
     * gradient buffer, which the first writer of each must overwrite. */
    for (int pass = 0; pass < 2; pass++) {
        net_mse(net, x, t, B);
        gm_net_zero_grad(net);
        assert_int_equal(gm_net_backward(net, &err), GM_OK);
    }
    memcpy(g, gm_net_grads(net), 4 * np);
    float *w = gm_net_params(net);
    for (size_t i = 0; i < np; i++) {
        float keep = w[i], h = 1e-2f;
        w[i] = keep + h;
        double lp = net_mse(net, x, t, B);
        w[i] = keep - h;
        double lm = net_mse(net, x, t, B);
        w[i] = keep;
        gm_assert_close("dw", i, g[i], (lp - lm) / (2.0 * h), 2e-4, 2e-3);
    }
    free(x); free(t); free(g);
    gm_net_free(net);
    gm_backend_free(be);
}

/* ---- losses ---- */

static double ref_loss_value(gm_loss_kind k, const double *p, const float *t, const int32_t *lab, int n, int d)
{
    double s = 0.0;
    for (int i = 0; i < n; i++) {
        if (k == GM_LOSS_CROSS_ENTROPY) {
            double se = 0.0;
            for (int j = 0; j < d; j++) se += exp(p[i * d + j]);
            s += log(se) - p[i * d + lab[i]];
            continue;
        }
        for (int j = 0; j < d; j++) {
            double diff = p[i * d + j] - t[i * d + j];
            s += k == GM_LOSS_L1 ? fabs(diff) : diff * diff;
        }
    }
    return k == GM_LOSS_CROSS_ENTROPY ? s / n : s / ((double)n * d);
}

static void test_losses(void **state)
{
    (void)state;
    enum { N = 4, D = 5 };
    gm_backend *be;
    gm_error err;
    assert_int_equal(gm_backend_cpu_create(&be, 1, &err), GM_OK);
    gm_rng rng;
    gm_rng_seed(&rng, 99);
    float pred[N * D], target[N * D], grad[N * D];
    int32_t labels[N] = {0, 4, 2, 1};
    gm_fill_uniform(pred, N * D, &rng, -2.0f, 2.0f);
    for (int i = 0; i < N * D; i++) /* |pred - target| >= 0.1 so L1 is differentiable */
        target[i] = pred[i] + (0.1f + gm_rng_uniform(&rng)) * (i % 2 ? 1.0f : -1.0f);
    for (int k = GM_LOSS_CROSS_ENTROPY; k <= GM_LOSS_MSE; k++) {
        float loss;
        assert_int_equal(be->loss(be, (gm_loss_kind)k, pred, target, labels, N, D, 1.5f, grad, &loss, &err), GM_OK);
        double pd[N * D];
        for (int i = 0; i < N * D; i++) pd[i] = pred[i];
        gm_assert_close("loss", (size_t)k, loss, ref_loss_value((gm_loss_kind)k, pd, target, labels, N, D), 1e-6, 1e-5);
        for (int i = 0; i < N * D; i++) {
            double keep = pd[i], h = 1e-6;
            pd[i] = keep + h;
            double lp = ref_loss_value((gm_loss_kind)k, pd, target, labels, N, D);
            pd[i] = keep - h;
            double lm = ref_loss_value((gm_loss_kind)k, pd, target, labels, N, D);
            pd[i] = keep;
            gm_assert_close("dloss", (size_t)i, grad[i], 1.5 * (lp - lm) / (2 * h), 1e-6, 1e-4);
        }
    }
    gm_backend_free(be);
}

int main(void)
{
    static int one = 1, two = 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate(test_all_ops, &one),
        cmocka_unit_test_prestate(test_all_ops, &two),
        cmocka_unit_test(test_losses),
        cmocka_unit_test(test_upsample_infer),
        cmocka_unit_test_prestate(test_upsample_in_net, &one),
        cmocka_unit_test_prestate(test_upsample_in_net, &two),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

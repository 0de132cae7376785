/*
 * gm_finetune's budget: the extension past max_epochs (gm_ft_opts.extra_epochs)
 * is granted once, only when the learning-curve check does not abort at the
 * longer horizon, and never in GMorph's fixed-budget setting (extra 0).
 * The loss is the one asked for (GMorph's L1, or the squared distance).
 * The net and data are dp_fixture's tiny two-task ones, run alone; with
 * orig_val 1 and threshold 0 no run can pass early unless it is exact.
 */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <setjmp.h>
#include <cmocka.h>

#include "dp_fixture.h"
#include "gm_backend.h"
#include "test_util.h"

typedef struct {
    int calls;
    int max_horizon;   /* the largest horizon asked about */
    int refuse_beyond; /* abort when asked about a horizon beyond this (0: never abort) */
} recorder;

static int record(void *ctx, const double *epoch, const double *acc, int n, int max_epoch, double target)
{
    (void)epoch, (void)acc, (void)n, (void)target;
    recorder *r = ctx;
    r->calls++;
    if (max_epoch > r->max_horizon) r->max_horizon = max_epoch;
    return r->refuse_beyond > 0 && max_epoch > r->refuse_beyond;
}

/* dp_fixture's data, a one-thread CPU backend, and the net from its seed-7 weights. */
static void open_fixture(gm_ft_data *d, gm_backend **be, gm_net **net)
{
    gm_error err;
    assert_ok(dp_make_data(d, &err), err);
    assert_ok(gm_backend_cpu_create(be, 1, &err), err);
    assert_ok(dp_make_net(net, *be, GM_FT_EVAL_BATCH, 7, &err), err);
}

static void close_fixture(gm_ft_data *d, gm_backend *be, gm_net *net)
{
    gm_net_free(net);
    gm_backend_free(be);
    gm_ft_data_free(d);
}

/* One fine-tune of 3 epochs plus `extra` with the recorder as the curve check; returns epochs trained. */
static int run_rows(int extra, recorder *rec, long epoch_rows, long *nft, gm_ft_result *res)
{
    gm_error err;
    gm_ft_data d;
    gm_backend *be = NULL;
    gm_net *net = NULL;
    open_fixture(&d, &be, &net);
    const gm_ft_opts o = {.max_epochs = 3, .check_every = 1, .batch = 8, .lr = 1e-2f, .threshold = 0.0, .seed = 11,
                          .abort_check = rec ? record : NULL, .abort_ctx = rec, .extra_epochs = extra,
                          .epoch_rows = epoch_rows};
    assert_ok(gm_finetune(net, dp_heads, &d, &o, res, &err), err);
    if (nft) *nft = d.nft;
    close_fixture(&d, be, net);
    return res->epochs;
}

static int run(int extra, recorder *rec, gm_ft_result *res)
{
    return run_rows(extra, rec, 0, NULL, res);
}

/* A pool larger than an epoch: each epoch takes epoch_rows of it (its own shuffle), so fewer steps. */
static void epochs_draw_from_the_pool(void **state)
{
    (void)state;
    gm_ft_result whole, part;
    long nft = 0;
    run_rows(0, NULL, 0, &nft, &whole);
    if (whole.status == GM_FT_PASSED) skip();
    assert_int_equal(whole.steps, whole.epochs * (nft / 8));
    run_rows(0, NULL, nft / 2, NULL, &part);
    assert_int_equal(part.epochs, 3);
    assert_int_equal(part.steps, 3 * ((nft / 2) / 8));
    assert_true(part.steps < whole.steps);
}

static void extends_when_the_curve_reaches(void **state)
{
    (void)state;
    recorder rec = {0};
    gm_ft_result r;
    if (run(2, &rec, &r) == 0 && r.status == GM_FT_PASSED) skip(); /* exact from the start: nothing to extend */
    assert_int_equal(r.status, GM_FT_FAILED);
    assert_int_equal(r.epochs, 5);
    assert_int_equal(rec.max_horizon, 5); /* asked about the longer budget, and only that */
    assert_true(isfinite(r.first_drop) && r.first_drop > 0.0);
}

static void no_extension_when_the_curve_falls_short(void **state)
{
    (void)state;
    recorder rec = {.refuse_beyond = 3};
    gm_ft_result r;
    run(2, &rec, &r);
    assert_int_equal(r.epochs, 3);
    assert_int_equal(r.status, GM_FT_FAILED); /* the horizon-3 checks did not abort */
    assert_int_equal(rec.max_horizon, 5);     /* the extension was asked about and refused */
}

static void fixed_budget_without_extra_or_curve(void **state)
{
    (void)state;
    recorder rec = {0};
    gm_ft_result r;
    assert_int_equal(run(0, &rec, &r), 3);
    assert_int_equal(rec.max_horizon, 3);
    assert_int_equal(run(2, NULL, &r), 3); /* no curve check, no evidence: GMorph's budget */
}

/*
 * One epoch at a learning rate too small to move a weight, BatchNorm frozen:
 * the epoch's reported loss is the initial net's distance to the teachers
 * over every distillation row, summed over tasks, computed here from its logits.
 */
static void loss_is_the_kind_asked(void **state)
{
    (void)state;
    for (int mse = 0; mse < 2; mse++) {
        gm_error err;
        gm_ft_data d;
        gm_backend *be = NULL;
        gm_net *net = NULL;
        open_fixture(&d, &be, &net);
        double want = 0.0;
        for (int t = 0; t < d.n; t++) {
            float *y = malloc(sizeof(float) * (size_t)d.nft * (size_t)d.classes[t]);
            assert_non_null(y);
            assert_ok(dp_run_net(net, d.x_ft, d.nft, t, y, &err), err);
            double sum = 0.0;
            for (long i = 0; i < d.nft * d.classes[t]; i++) {
                const double e = (double)y[i] - d.teacher[t][i];
                sum += mse ? e * e : fabs(e);
            }
            want += sum / (double)(d.nft * d.classes[t]);
            free(y);
        }
        const gm_ft_opts o = {.max_epochs = 1, .check_every = 1, .batch = 10, .lr = 1e-12f, .threshold = -1.0,
                              .frozen_bn = 1, .logit_mse = mse, .seed = 3};
        gm_ft_result r;
        assert_ok(gm_finetune(net, dp_heads, &d, &o, &r, &err), err);
        assert_int_equal(r.nchecks, 2);
        assert_true(fabs(r.checks[1].loss - want) <= 1e-4 * want);
        close_fixture(&d, be, net);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(extends_when_the_curve_reaches),
        cmocka_unit_test(no_extension_when_the_curve_falls_short),
        cmocka_unit_test(fixed_budget_without_extra_or_curve),
        cmocka_unit_test(epochs_draw_from_the_pool),
        cmocka_unit_test(loss_is_the_kind_asked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

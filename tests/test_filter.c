/*
 * The predictive filter: parameter-count features on hand-built fused graphs
 * match hand-computed sums; dominance is "<= on every feature"; the failure set
 * grows and matches; the geometric curve fit recovers known curves (exactly from
 * exact data, within a derived bound from noisy data); the abort decision
 * follows the extrapolation, the tolerance, the horizon and the observations.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gm_filter.h"
#include "gm_mutate.h"
#include "test_util.h"

/* ---- hand-built graphs (gm_fgraph.c's builders are not used on purpose) ---- */

static gm_fgraph *graph_new(int ntasks)
{
    gm_fgraph *g = calloc(1, sizeof *g); /* large: never on the stack */
    assert_non_null(g);
    g->input = (gm_shape){3, 8, 8};
    g->ntasks = ntasks;
    return g;
}

static int add_node(gm_fgraph *g, gm_block b, int parent, int task)
{
    assert_true(g->nnodes < GM_FG_MAX_NODES);
    int i = g->nnodes++;
    gm_fnode *n = &g->nodes[i];
    n->block = b;
    n->model = -1;
    n->layer = -1;
    n->parent = parent;
    n->task = task;
    n->w = (gm_wref){-1, -1};
    return i;
}

/* Hand formulas, checked against gm_block_nparams so the expected sums below mean something. */
static double conv3(int cin, int cout)
{
    double want = (double)cin * cout * 9 + cout; /* 3x3 weights + bias (no BatchNorm) */
    gm_block b = gm_block_conv(cin, cout, 3, 1, 1, 0, 1);
    assert_int_equal(gm_block_nparams(&b), (size_t)want);
    return want;
}

static double head(int c, int classes)
{
    double want = (double)c * 8 * 8 * classes + classes; /* flatten c x 8 x 8, weights + bias */
    gm_block b = gm_block_head((gm_shape){c, 8, 8}, classes);
    assert_int_equal(gm_block_nparams(&b), (size_t)want);
    return want;
}

static gm_block conv_block(int cin, int cout) { return gm_block_conv(cin, cout, 3, 1, 1, 0, 1); }
static gm_block head_block(int c, int classes) { return gm_block_head((gm_shape){c, 8, 8}, classes); }

static void assert_features(const gm_features *f, const double *want, int n)
{
    assert_int_equal(f->n, n);
    for (int i = 0; i < n; i++) gm_assert_close("feature", (size_t)i, f->v[i], want[i], 0.0, 0.0);
    for (int i = n; i < GM_FILTER_MAX_FEATURES; i++) gm_assert_close("unused", (size_t)i, f->v[i], 0.0, 0.0, 0.0);
}

/* Two tasks share conv0 -> conv1, then each has its own conv and head. */
static void test_features_two_tasks_shared_prefix(void **state)
{
    (void)state;
    gm_fgraph *g = graph_new(2);
    int c0 = add_node(g, conv_block(3, 4), -1, -1);
    int c1 = add_node(g, conv_block(4, 8), c0, -1);
    int a = add_node(g, conv_block(8, 8), c1, -1);
    add_node(g, head_block(8, 10), a, 0);
    int b = add_node(g, conv_block(8, 16), c1, -1);
    add_node(g, head_block(16, 5), b, 1);

    double shared = conv3(3, 4) + conv3(4, 8);
    double only0 = conv3(8, 8) + head(8, 10), only1 = conv3(8, 16) + head(16, 5);
    /* total, path 0, path 1, pattern {0}, {1}, {0,1} */
    const double want[] = {shared + only0 + only1, shared + only0, shared + only1, only0, only1, shared};
    gm_features f;
    gm_filter_features(g, &f);
    assert_features(&f, want, 6);
    /* the same numbers written out, in case the helpers and the code share a mistake */
    assert_true(f.v[0] == 12415.0 && f.v[1] == 6122.0 && f.v[2] == 6701.0 && f.v[5] == 408.0);
    free(g);
}

/* Three tasks: 0 and 1 share a conv, 2 is alone; node order interleaves the tasks. */
static void build_three(gm_fgraph *g, int swap)
{
    if (!swap) {
        int c2 = add_node(g, conv_block(3, 8), -1, -1);
        int c01 = add_node(g, conv_block(3, 4), -1, -1);
        add_node(g, head_block(8, 3), c2, 2);
        add_node(g, head_block(4, 10), c01, 0);
        add_node(g, head_block(4, 6), c01, 1);
    } else {
        int c01 = add_node(g, conv_block(3, 4), -1, -1);
        add_node(g, head_block(4, 6), c01, 1);
        add_node(g, head_block(4, 10), c01, 0);
        int c2 = add_node(g, conv_block(3, 8), -1, -1);
        add_node(g, head_block(8, 3), c2, 2);
    }
}

static void test_features_three_tasks_pair_shares(void **state)
{
    (void)state;
    gm_fgraph *g = graph_new(3), *h = graph_new(3);
    build_three(g, 0);
    build_three(h, 1);
    double s01 = conv3(3, 4), h0 = head(4, 10), h1 = head(4, 6), only2 = conv3(3, 8) + head(8, 3);
    /* total, paths 0..2, then patterns 1..7 = {0} {1} {0,1} {2} {0,2} {1,2} {0,1,2} */
    const double want[] = {s01 + h0 + h1 + only2, s01 + h0, s01 + h1, only2, h0, h1, s01, only2, 0, 0, 0};
    gm_features f, f2;
    gm_filter_features(g, &f);
    assert_features(&f, want, 11);
    gm_filter_features(h, &f2);
    assert_memory_equal(&f, &f2, sizeof f); /* node order does not matter */
    assert_true(f.v[0] == 5987.0 && f.v[1] == 2682.0 && f.v[6] == 112.0 && f.v[7] == 1763.0);
    free(g);
    free(h);
}

/* The original state: three separate chains. Multi-task patterns hold nothing. */
static void test_features_original_unshared(void **state)
{
    (void)state;
    gm_fgraph *g = graph_new(3);
    double chain[3];
    for (int t = 0; t < 3; t++) {
        int c = add_node(g, conv_block(3, 4 + t), -1, -1);
        int d = add_node(g, conv_block(4 + t, 8), c, -1);
        add_node(g, head_block(8, 2 + t), d, t);
        chain[t] = conv3(3, 4 + t) + conv3(4 + t, 8) + head(8, 2 + t);
    }
    const double want[] = {chain[0] + chain[1] + chain[2], chain[0], chain[1], chain[2], chain[0], chain[1], 0,
                           chain[2], 0, 0, 0};
    gm_features f;
    gm_filter_features(g, &f);
    assert_features(&f, want, 11);
    free(g);
}

/* Seven tasks: pairs only, "shared by at least the pair". */
static void test_features_pairs_beyond_six_tasks(void **state)
{
    (void)state;
    gm_fgraph *g = graph_new(7);
    int c012 = add_node(g, conv_block(3, 4), -1, -1);
    int c01 = add_node(g, conv_block(4, 4), c012, -1);
    add_node(g, head_block(4, 10), c01, 0);
    add_node(g, head_block(4, 9), c01, 1);
    add_node(g, head_block(4, 8), c012, 2);
    double rest = 0.0;
    for (int t = 3; t < 7; t++) {
        add_node(g, head_block(3, t), -1, t);
        rest += head(3, t);
    }
    gm_features f;
    gm_filter_features(g, &f);
    assert_int_equal(f.n, 1 + 7 + 21);
    double p012 = conv3(3, 4), p01 = conv3(4, 4);
    gm_assert_close("total", 0, f.v[0], p012 + p01 + head(4, 10) + head(4, 9) + head(4, 8) + rest, 0.0, 0.0);
    gm_assert_close("path 0", 0, f.v[1], p012 + p01 + head(4, 10), 0.0, 0.0);
    gm_assert_close("path 2", 2, f.v[3], p012 + head(4, 8), 0.0, 0.0);
    gm_assert_close("path 6", 6, f.v[7], head(3, 6), 0.0, 0.0);
    const double *pair = f.v + 8; /* (0,1) (0,2) .. (0,6) (1,2) .. */
    gm_assert_close("pair 0,1", 0, pair[0], p012 + p01, 0.0, 0.0);
    gm_assert_close("pair 0,2", 1, pair[1], p012, 0.0, 0.0);
    gm_assert_close("pair 1,2", 6, pair[6], p012, 0.0, 0.0);
    for (int k = 0; k < 21; k++)
        if (k != 0 && k != 1 && k != 6) gm_assert_close("other pairs", (size_t)k, pair[k], 0.0, 0.0, 0.0);
    free(g);
}

/* The most tasks a graph can have: the pair features still fit. */
static void test_features_most_tasks_fit(void **state)
{
    (void)state;
    gm_fgraph *g = graph_new(GM_FG_MAX_MODELS);
    for (int t = 0; t < GM_FG_MAX_MODELS; t++) add_node(g, head_block(3, t + 1), -1, t);
    gm_features f;
    gm_filter_features(g, &f);
    int T = GM_FG_MAX_MODELS;
    assert_int_equal(f.n, 1 + T + T * (T - 1) / 2);
    assert_true(f.n <= GM_FILTER_MAX_FEATURES);
    gm_assert_close("path 15", 15, f.v[T], head(3, T), 0.0, 0.0);
    for (int k = 1 + T; k < f.n; k++) gm_assert_close("pair", (size_t)k, f.v[k], 0.0, 0.0, 0.0);
    free(g);
}

/* ---- dominance ---- */

static gm_features feats(int n, const double *v)
{
    gm_features f;
    memset(&f, 0, sizeof f);
    f.n = n;
    memcpy(f.v, v, (size_t)n * sizeof *v);
    return f;
}

static void test_dominance(void **state)
{
    (void)state;
    gm_features fail = feats(4, (const double[]){10, 5, 5, 3});
    gm_features equal = feats(4, (const double[]){10, 5, 5, 3});
    gm_features smaller = feats(4, (const double[]){9, 5, 4, 0});
    gm_features one_larger = feats(4, (const double[]){9, 5, 6, 3});
    gm_features last_larger = feats(4, (const double[]){1, 1, 1, 3.5});
    assert_int_equal(gm_filter_dominated(&equal, &fail), 1);
    assert_int_equal(gm_filter_dominated(&smaller, &fail), 1);
    assert_int_equal(gm_filter_dominated(&one_larger, &fail), 0);
    assert_int_equal(gm_filter_dominated(&last_larger, &fail), 0);
    assert_int_equal(gm_filter_dominated(&fail, &smaller), 0); /* not symmetric */
    gm_features shorter = feats(3, (const double[]){1, 1, 1});
    assert_int_equal(gm_filter_dominated(&shorter, &fail), 0); /* other task count: not comparable */
    gm_features nan = feats(4, (const double[]){1, NAN, 1, 1});
    assert_int_equal(gm_filter_dominated(&nan, &fail), 0);
}

/* A graph with a parameter-skipping merge is dominated by the failed, less aggressive one. */
static void test_dominance_on_graphs(void **state)
{
    (void)state;
    gm_fgraph *failed = graph_new(2), *bolder = graph_new(2), *unshared = graph_new(2);
    /* failed: shared conv(3,4) -> conv(4,4), then the heads */
    int a = add_node(failed, conv_block(3, 4), -1, -1);
    int b = add_node(failed, conv_block(4, 4), a, -1);
    add_node(failed, head_block(4, 10), b, 0);
    add_node(failed, head_block(4, 5), b, 1);
    /* bolder: the same sharing with conv(4,4) skipped */
    a = add_node(bolder, conv_block(3, 4), -1, -1);
    add_node(bolder, head_block(4, 10), a, 0);
    add_node(bolder, head_block(4, 5), a, 1);
    /* unshared: each task its own conv(3,4) */
    a = add_node(unshared, conv_block(3, 4), -1, -1);
    add_node(unshared, head_block(4, 10), a, 0);
    b = add_node(unshared, conv_block(3, 4), -1, -1);
    add_node(unshared, head_block(4, 5), b, 1);
    gm_features ff, fb, fu;
    gm_filter_features(failed, &ff);
    gm_filter_features(bolder, &fb);
    gm_filter_features(unshared, &fu);
    assert_int_equal(gm_filter_dominated(&fb, &ff), 1);
    assert_int_equal(gm_filter_dominated(&ff, &fb), 0);
    /* unshared has more parameters on the single-task patterns than failed: not dominated */
    assert_int_equal(gm_filter_dominated(&fu, &ff), 0);
    free(failed);
    free(bolder);
    free(unshared);
}

/* ---- failure set ---- */

static void test_failures(void **state)
{
    (void)state;
    gm_failures s;
    gm_failures_init(&s);
    gm_features c = feats(2, (const double[]){0, 0});
    assert_int_equal(gm_failures_match(&s, &c), -1);
    /* failures k = (k, 100 - k): pairwise incomparable, so only failure k dominates its own point */
    enum { N = 100 };
    for (int k = 0; k < N; k++) {
        gm_features f = feats(2, (const double[]){k, 100 - k});
        assert_int_equal(gm_failures_add(&s, &f), 0);
        f.v[0] = -1e9; /* the set keeps its own copy */
    }
    assert_int_equal(s.n, N);
    assert_true(s.cap >= N);
    for (int k = 0; k < N; k++) {
        gm_features hit = feats(2, (const double[]){k, 100 - k});
        assert_int_equal(gm_failures_match(&s, &hit), k);
        gm_features below = feats(2, (const double[]){k - 0.5, 100 - k});
        assert_int_equal(gm_failures_match(&s, &below), k);
        /* between failures k and k+1: needs v0 >= k + 0.5 (k+1 or later) and v1 >= 99.5 - k (k or earlier) */
        gm_features between = feats(2, (const double[]){k + 0.5, 99.5 - k});
        assert_int_equal(gm_failures_match(&s, &between), -1);
    }
    gm_failures_free(&s);
    assert_int_equal(s.n, 0);
    assert_null(s.f);
    assert_int_equal(gm_failures_match(&s, &c), -1);
}

/* ---- learning curve ---- */

static double geo(double a, double b, double r, double e) { return a - b * pow(r, e); }

static void test_fit_exact(void **state)
{
    (void)state;
    /* on the grid (r = 0.75), epochs 0..9 */
    double e[10], y[10];
    for (int i = 0; i < 10; i++) {
        e[i] = i;
        y[i] = geo(0.92, 0.6, 0.75, i);
    }
    gm_curve c;
    assert_int_equal(gm_curve_fit(e, y, 10, &c), 0);
    gm_assert_close("a", 0, c.a, 0.92, 1e-6, 0.0);
    gm_assert_close("b", 0, c.b, 0.6, 1e-6, 0.0);
    gm_assert_close("r", 0, c.r, 0.75, 1e-6, 0.0);
    assert_true(c.rmse < 1e-9);

    /* off the grid (r = 0.81374), uneven epochs, given out of order */
    const double e2[] = {11, 0, 7, 2, 3, 20};
    double y2[6];
    for (int i = 0; i < 6; i++) y2[i] = geo(0.873, 0.512, 0.81374, e2[i]);
    assert_int_equal(gm_curve_fit(e2, y2, 6, &c), 0);
    gm_assert_close("a", 1, c.a, 0.873, 1e-6, 0.0);
    gm_assert_close("b", 1, c.b, 0.512, 1e-6, 0.0);
    gm_assert_close("r", 1, c.r, 0.81374, 1e-6, 0.0);
    assert_true(c.rmse < 1e-9);
    gm_assert_close("at 40", 40, gm_curve_at(&c, 40), geo(0.873, 0.512, 0.81374, 40), 1e-6, 0.0);
    gm_assert_close("limit", 0, gm_curve_at(&c, INFINITY), c.a, 0.0, 0.0);

    /* exactly three points determine the curve */
    const double e3[] = {0, 1, 2};
    double y3[3];
    for (int i = 0; i < 3; i++) y3[i] = geo(0.7, 0.4, 0.33, e3[i]);
    assert_int_equal(gm_curve_fit(e3, y3, 3, &c), 0);
    gm_assert_close("a", 2, c.a, 0.7, 1e-6, 0.0);
    gm_assert_close("r", 2, c.r, 0.33, 1e-6, 0.0);
}

/* 3x3 inverse by cofactors (the test's own, independent of the code under test). */
static void inv3(double m[3][3], double out[3][3])
{
    double det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
                 m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    assert_true(fabs(det) > 0.0);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            int r0 = (j + 1) % 3, r1 = (j + 2) % 3, c0 = (i + 1) % 3, c1 = (i + 2) % 3;
            out[i][j] = (m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0]) / det;
        }
}

/*
 * Noisy data: y = truth + eps with |eps| <= 0.003. The tolerance is derived, not
 * guessed: to first order the least-squares error is dtheta = (J^T J)^-1 J^T eps
 * (J the Jacobian of a - b r^e in (a, b, r) at the truth), so by Cauchy-Schwarz
 * |dtheta_k| <= |row k of (J^T J)^-1 J^T| * |eps|; we allow twice that for the
 * model's curvature. And since r = 0.7 is a grid point, the fit's squared error
 * cannot exceed that of the truth: rmse <= rms(eps).
 */
static void test_fit_noisy(void **state)
{
    (void)state;
    enum { N = 15 };
    const double A = 0.9, B = 0.5, R = 0.7, SIGMA = 0.003;
    double e[N], y[N], eps2 = 0.0, J[N][3];
    gm_rng rng;
    gm_rng_seed(&rng, 41);
    for (int i = 0; i < N; i++) {
        e[i] = i;
        double eps = SIGMA * (2.0 * gm_rng_uniform(&rng) - 1.0);
        y[i] = geo(A, B, R, i) + eps;
        eps2 += eps * eps;
        J[i][0] = 1.0;
        J[i][1] = -pow(R, i);
        J[i][2] = i > 0 ? -B * i * pow(R, i - 1) : 0.0;
    }
    double jtj[3][3] = {{0}}, inv[3][3];
    for (int i = 0; i < N; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 3; k++) jtj[j][k] += J[i][j] * J[i][k];
    inv3(jtj, inv);
    double tol[3];
    for (int k = 0; k < 3; k++) {
        double row2 = 0.0;
        for (int i = 0; i < N; i++) {
            double p = inv[k][0] * J[i][0] + inv[k][1] * J[i][1] + inv[k][2] * J[i][2];
            row2 += p * p;
        }
        tol[k] = 2.0 * sqrt(row2) * sqrt(eps2);
    }
    /* the bounds are tight enough to mean something */
    assert_true(tol[0] < 0.01 && tol[1] < 0.02 && tol[2] < 0.02);

    gm_curve c;
    assert_int_equal(gm_curve_fit(e, y, N, &c), 0);
    gm_assert_close("a", 0, c.a, A, tol[0], 0.0);
    gm_assert_close("b", 0, c.b, B, tol[1], 0.0);
    gm_assert_close("r", 0, c.r, R, tol[2], 0.0);
    assert_true(c.rmse <= sqrt(eps2 / N) + 1e-12);
    assert_true(c.rmse > 0.0);
}

static void test_fit_flat_and_degenerate(void **state)
{
    (void)state;
    const double e[] = {0, 1, 2, 3}, flat[] = {0.8, 0.8, 0.8, 0.8};
    gm_curve c;
    assert_int_equal(gm_curve_fit(e, flat, 4, &c), 0);
    assert_true(c.a == 0.8 && c.b == 0.0 && c.rmse == 0.0);
    assert_true(c.r > 0.0 && c.r < 1.0);
    assert_true(gm_curve_at(&c, 100) == 0.8);
    assert_true(gm_curve_at(&c, -INFINITY) == 0.8);

    /* one distinct epoch: only the mean is determined */
    const double same_e[] = {5, 5, 5}, ys[] = {0.5, 0.6, 0.7};
    assert_int_equal(gm_curve_fit(same_e, ys, 3, &c), 0);
    gm_assert_close("mean", 0, c.a, 0.6, 1e-12, 0.0);
    gm_assert_close("b", 0, c.b, 0.0, 1e-12, 0.0);
    gm_assert_close("rmse", 0, c.rmse, sqrt(0.02 / 3), 1e-12, 0.0);
}

static void test_fit_rejects(void **state)
{
    (void)state;
    const double e[] = {0, 1, 2, 3}, y[] = {0.1, 0.5, 0.7, 0.8};
    gm_curve c;
    assert_int_equal(gm_curve_fit(e, y, 2, &c), -1);
    assert_int_equal(gm_curve_fit(e, y, 0, &c), -1);
    const double ynan[] = {0.1, NAN, 0.7, 0.8}, einf[] = {0, 1, INFINITY, 3}, yinf[] = {0.1, 0.5, -INFINITY, 0.8};
    assert_int_equal(gm_curve_fit(e, ynan, 4, &c), -1);
    assert_int_equal(gm_curve_fit(einf, y, 4, &c), -1);
    assert_int_equal(gm_curve_fit(e, yinf, 4, &c), -1);
    /* a prediction can never come from them: no abort even far below target */
    assert_int_equal(gm_curve_should_abort(e, ynan, 4, 30, 0.99, 0.0), 0);
    assert_int_equal(gm_curve_should_abort(einf, y, 4, 30, 0.99, 0.0), 0);
    assert_int_equal(gm_curve_should_abort(e, y, 4, 30, NAN, 0.0), 0);
    /* fine inputs do abort there, so the zeros above are not the default */
    assert_int_equal(gm_curve_should_abort(e, y, 4, 30, 0.99, 0.0), 1);
}

static void test_abort_decision(void **state)
{
    (void)state;
    /* rising towards 0.9: 0.3, 0.42, 0.516, 0.5928 */
    double e[4], y[4];
    for (int i = 0; i < 4; i++) {
        e[i] = i;
        y[i] = geo(0.9, 0.6, 0.8, i);
    }
    /* at epoch 30 the curve is at 0.8993 */
    assert_int_equal(gm_curve_should_abort(e, y, 4, 30, 0.95, 0.01), 1);
    assert_int_equal(gm_curve_should_abort(e, y, 4, 30, 0.85, 0.01), 0);
    /* the tolerance counts: 0.8993 + 0.06 reaches 0.95 */
    assert_int_equal(gm_curve_should_abort(e, y, 4, 30, 0.95, 0.06), 0);
    /* the horizon counts: at epoch 4 the curve is only at 0.654 */
    assert_int_equal(gm_curve_should_abort(e, y, 4, 4, 0.85, 0.01), 1);
    /* the limit: 0.9 */
    assert_int_equal(gm_curve_should_abort(e, y, 4, INFINITY, 0.905, 0.0), 1);
    assert_int_equal(gm_curve_should_abort(e, y, 4, INFINITY, 0.895, 0.0), 0);
    /* fewer than 3 points never abort */
    assert_int_equal(gm_curve_should_abort(e, y, 2, 30, 0.99, 0.0), 0);
    assert_int_equal(gm_curve_should_abort(e, y, 0, 30, 0.99, 0.0), 0);

    /* falling towards 0.9: 1.0, 0.95, 0.925, 0.9125; the latest observation already reaches 0.91 */
    double f[4], back_e[4], back_f[4];
    for (int i = 0; i < 4; i++) f[i] = geo(0.9, -0.1, 0.5, i);
    for (int i = 0; i < 4; i++) {
        back_e[i] = e[3 - i];
        back_f[i] = f[3 - i];
    }
    assert_int_equal(gm_curve_should_abort(e, f, 4, 30, 0.91, 0.0), 0);
    assert_int_equal(gm_curve_should_abort(back_e, back_f, 4, 30, 0.91, 0.0), 0); /* latest = largest epoch */
    assert_int_equal(gm_curve_should_abort(e, f, 4, 30, 0.92, 0.0), 1);         /* not reached: extrapolate */

    /* flat at 0.8 */
    const double flat[] = {0.8, 0.8, 0.8, 0.8};
    assert_int_equal(gm_curve_should_abort(e, flat, 4, 30, 0.85, 0.01), 1);
    assert_int_equal(gm_curve_should_abort(e, flat, 4, 30, 0.805, 0.01), 0);
    assert_int_equal(gm_curve_should_abort(e, flat, 4, 30, 0.8, 0.0), 0);
}

/*
 * The structural rule: a failure dominates a candidate that makes the same
 * merge and more, not one that makes another merge of the same size; GMorph's
 * rule dominates both. Merges through adapters and layer skips are edges too.
 */
static void test_structural_dominance(void **state)
{
    (void)state;
    const gm_shape in = {3, 16, 16};
    gm_mfile m[3];
    const gm_mfile *mp[3] = {&m[0], &m[1], &m[2]};
    for (int k = 0; k < 3; k++) gm_test_random_model(&m[k], in, 50 + (uint64_t)k);
    const int nb = m[0].nblocks;
    gm_fgraph *orig = malloc(sizeof *orig), *fail = malloc(sizeof *fail), *more = malloc(sizeof *more),
              *other = malloc(sizeof *other);
    gm_error err;
    assert_ok(gm_fgraph_from_models(orig, mp, 3, &err), err);
    gm_features fo, ff, fm, fx;
    gm_filter_features(orig, &fo);
    assert_int_equal(fo.nedges, 0);
    /* failure: task 1 shares task 0's first two blocks */
    *fail = *orig;
    assert_ok(gm_mutate_apply(fail, (gm_merge){2, nb + 2, 0}, &err), err);
    gm_filter_features(fail, &ff);
    assert_int_equal(ff.nedges, 1);
    /* more: the same, then task 2 shares them too */
    *more = *fail;
    int a = -1, b = -1; /* task 0's block 2 and task 2's block 2 in the renumbered graph */
    for (int i = 0; i < more->nnodes; i++) {
        if (more->nodes[i].model == 0 && more->nodes[i].layer == 2) a = i;
        if (more->nodes[i].model == 2 && more->nodes[i].layer == 2) b = i;
    }
    assert_ok(gm_mutate_apply(more, (gm_merge){a, b, 0}, &err), err);
    gm_filter_features(more, &fm);
    assert_int_equal(fm.nedges, 2);
    /* other: task 2 shares task 0's first two blocks instead (as aggressive, elsewhere) */
    *other = *orig;
    assert_ok(gm_mutate_apply(other, (gm_merge){2, 2 * nb + 2, 0}, &err), err);
    gm_filter_features(other, &fx);
    assert_int_equal(gm_filter_contains(&fm, &ff), 1);
    assert_int_equal(gm_filter_contains(&fx, &ff), 0);
    assert_int_equal(gm_filter_contains(&ff, &fm), 0);
    gm_failures s;
    gm_failures_init(&s);
    assert_int_equal(gm_failures_add(&s, &ff), 0);
    /* GMorph's rule: a candidate with fewer parameters on every feature is skipped, wherever it merges */
    gm_features bold = fx;
    for (int i = 0; i < bold.n; i++) bold.v[i] = 0.0;
    assert_int_equal(gm_failures_match(&s, &bold), 0);
    s.structural = 1;
    assert_int_equal(gm_failures_match(&s, &bold), -1);    /* another merge: tried */
    assert_int_equal(gm_failures_match(&s, &fm) == 0, gm_filter_dominated(&fm, &ff)); /* the same merge: skipped */
    assert_int_equal(gm_failures_match(&s, &ff), 0);       /* the failure itself */
    gm_failures_free(&s);
    assert_int_equal(s.structural, 1);                     /* freeing keeps the rule */
    free(orig);
    free(fail);
    free(more);
    free(other);
    for (int k = 0; k < 3; k++) gm_mfile_free(&m[k]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_features_two_tasks_shared_prefix),
        cmocka_unit_test(test_features_three_tasks_pair_shares),
        cmocka_unit_test(test_features_original_unshared),
        cmocka_unit_test(test_features_pairs_beyond_six_tasks),
        cmocka_unit_test(test_features_most_tasks_fit),
        cmocka_unit_test(test_dominance),
        cmocka_unit_test(test_dominance_on_graphs),
        cmocka_unit_test(test_structural_dominance),
        cmocka_unit_test(test_failures),
        cmocka_unit_test(test_fit_exact),
        cmocka_unit_test(test_fit_noisy),
        cmocka_unit_test(test_fit_flat_and_degenerate),
        cmocka_unit_test(test_fit_rejects),
        cmocka_unit_test(test_abort_decision),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

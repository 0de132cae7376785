/*
 * The stitch (worker/gm_stitch.h, gm_stitch_graph.h): least squares recovers a
 * known map; a fold into a convolution, a residual block or a linear layer
 * equals running an explicit 1x1 convolution (the map) before the block, exactly
 * in the interior and, with a zero constant, everywhere (the border error of a
 * non-zero constant is measured); an adapter set to a map computes it; merging
 * two copies of one model stitches with the identity and changes no logit; on
 * a merge of two different models the fitted map leaves less error than none;
 * a residual block's projected shortcut takes the map too, exactly.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_fgraph.h"
#include "gm_models.h"
#include "gm_mutate.h"
#include "gm_stitch.h"
#include "gm_stitch_graph.h"
#include "test_util.h"

static gm_backend *cpu(void)
{
    gm_backend *be;
    gm_error err;
    assert_ok(gm_backend_cpu_create(&be, 1, &err), err);
    return be;
}

/* A fit with M and c given (mean_mx, var_mx arbitrary but valid). */
static void make_fit(gm_stitch_fit *f, int ca, int cb, gm_rng *rng, double cscale)
{
    gm_error err;
    assert_ok(gm_stitch_fit_alloc(f, ca, cb, &err), err);
    for (int i = 0; i < ca * cb; i++) f->M[i] = 2.0 * gm_rng_uniform(rng) - 1.0;
    for (int j = 0; j < cb; j++) {
        f->c[j] = cscale * (2.0 * gm_rng_uniform(rng) - 1.0);
        f->mean_mx[j] = gm_rng_uniform(rng) - 0.5;
        f->var_mx[j] = 0.2 + gm_rng_uniform(rng);
    }
}

/* ---- least squares ------------------------------------------------------------ */

static void lsq_recovers_known_map(void **state)
{
    (void)state;
    enum { N = 6, CA = 5, CB = 4, HW = 49 };
    gm_rng rng;
    gm_rng_seed(&rng, 7);
    gm_stitch_fit want;
    make_fit(&want, CA, CB, &rng, 1.0);
    float *xa = malloc(sizeof(float) * N * CA * HW), *xb = malloc(sizeof(float) * N * CB * HW);
    gm_fill_uniform(xa, (size_t)N * CA * HW, &rng, -1.0f, 2.0f);
    for (int s = 0; s < N; s++)
        for (int j = 0; j < CB; j++)
            for (int p = 0; p < HW; p++) {
                double v = want.c[j];
                for (int i = 0; i < CA; i++) v += want.M[j * CA + i] * xa[(s * CA + i) * HW + p];
                xb[(s * CB + j) * HW + p] = (float)v;
            }
    gm_stitch_acc *acc;
    gm_error err;
    assert_ok(gm_stitch_acc_create(&acc, CA, CB, &err), err);
    gm_stitch_acc_add(acc, xa, xb, N / 2, HW); /* in two calls: sums accumulate */
    gm_stitch_acc_add(acc, xa + (size_t)(N / 2) * CA * HW, xb + (size_t)(N / 2) * CB * HW, N - N / 2, HW);
    gm_stitch_fit got;
    assert_ok(gm_stitch_solve(acc, 1e-9, &got, &err), err);
    for (int i = 0; i < CA * CB; i++) gm_assert_close("M", (size_t)i, got.M[i], want.M[i], 1e-4, 1e-4);
    for (int j = 0; j < CB; j++) gm_assert_close("c", (size_t)j, got.c[j], want.c[j], 1e-4, 1e-4);
    assert_true(got.residual < 1e-5); /* float products per sample: about 1e-7 of the raw moments */
    assert_true(isnan(got.plain_residual)); /* 5 -> 4 channels: no plain merge */
    assert_true(got.pixels == N * HW);
    /* noise the map cannot explain: the residual is its share of the variance */
    for (int k = 0; k < N * CB * HW; k++) xb[k] += (float)(0.3 * (2.0 * gm_rng_uniform(&rng) - 1.0));
    gm_stitch_acc_free(acc);
    assert_ok(gm_stitch_acc_create(&acc, CA, CB, &err), err);
    gm_stitch_acc_add(acc, xa, xb, N, HW);
    gm_stitch_fit noisy;
    assert_ok(gm_stitch_solve(acc, 1e-9, &noisy, &err), err);
    assert_true(noisy.residual > 0.005 && noisy.residual < 0.2);
    for (int i = 0; i < CA * CB; i++) gm_assert_close("M under noise", (size_t)i, noisy.M[i], want.M[i], 0.05, 0.05);
    gm_stitch_fit_free(&noisy);
    gm_stitch_fit_free(&got);
    gm_stitch_fit_free(&want);
    gm_stitch_acc_free(acc);
    free(xa);
    free(xb);
}

static void lsq_refuses_too_little(void **state)
{
    (void)state;
    gm_stitch_acc *acc;
    gm_stitch_fit f;
    gm_error err;
    assert_int_equal(gm_stitch_acc_create(&acc, 0, 3, &err), GM_EINVAL);
    assert_ok(gm_stitch_acc_create(&acc, 2, 2, &err), err);
    assert_int_equal(gm_stitch_solve(acc, 1e-4, &f, &err), GM_ENUMERIC);
    assert_msg_has(err, "observations");
    gm_stitch_acc_free(acc);
}

/* ---- folding --------------------------------------------------------------------- */

/* The map as an explicit block: a 1x1 convolution with bias. */
static gm_block map_block(int c)
{
    gm_block b = gm_block_empty(GM_BLOCK_CUSTOM);
    gm_error err;
    assert_ok(gm_block_push(&b, gm_op_conv2d(c, c, 1, 1, 0, 1), -1, -1, &err), err);
    return b;
}

/*
 * Runs block b (random weights, random BatchNorm statistics) after an explicit
 * map, and b folded, on the same inputs; returns the largest difference in the
 * interior (output pixels at least `margin` from the edge) and on the border.
 */
static void fold_vs_explicit(gm_block b, gm_shape in, double cscale, int margin, double *interior, double *border)
{
    enum { B = 3 };
    gm_backend *be = cpu();
    gm_rng rng;
    gm_rng_seed(&rng, 11);
    gm_error err;
    gm_block two[2] = {map_block(in.c), b};
    gm_net_desc d2 = {in, 2, two, NULL}, d1 = {in, 1, &two[1], NULL};
    gm_net *explicit_net, *folded;
    assert_ok(gm_net_create(&explicit_net, be, &d2, B, 3, &err), err);
    assert_ok(gm_net_create(&folded, be, &d1, B, 4, &err), err);
    /* b's weights and statistics: random, the same in both nets */
    const size_t np = gm_block_nparams(&b), nb = gm_net_nbuffers(folded);
    float *bp = gm_net_params(folded), *bb = gm_net_buffers(folded);
    gm_fill_uniform(bp, np, &rng, -0.5f, 0.5f);
    gm_fill_uniform(bb, nb, &rng, 0.2f, 1.5f);
    memcpy(gm_net_params(explicit_net) + gm_net_block_param_offset(explicit_net, 1), bp, sizeof(float) * np);
    memcpy(gm_net_buffers(explicit_net) + gm_net_block_buffer_offset(explicit_net, 1), bb, sizeof(float) * nb);
    gm_stitch_fit f;
    make_fit(&f, in.c, in.c, &rng, cscale);
    float *mp = gm_net_params(explicit_net); /* the map: weights [c][c][1][1], then bias */
    for (int i = 0; i < in.c * in.c; i++) mp[i] = (float)f.M[i];
    for (int j = 0; j < in.c; j++) mp[in.c * in.c + j] = (float)f.c[j];
    int dropped;
    assert_ok(gm_stitch_fold(&b, in, bp, bb, &f, &dropped, &err), err);
    assert_int_equal(dropped, 0);
    const size_t numel = gm_shape_numel(in);
    float *x = malloc(sizeof(float) * B * numel);
    gm_fill_uniform(x, B * numel, &rng, -1.0f, 1.0f);
    assert_ok(gm_net_forward(explicit_net, x, B, 0, &err), err);
    assert_ok(gm_net_forward(folded, x, B, 0, &err), err);
    gm_shape o = gm_net_output_shape(folded, 0);
    const float *y1 = gm_net_output(explicit_net, 0), *y2 = gm_net_output(folded, 0);
    *interior = *border = 0.0;
    for (int s = 0; s < B * o.c; s++)
        for (int h = 0; h < o.h; h++)
            for (int w = 0; w < o.w; w++) {
                size_t k = ((size_t)s * o.h + h) * o.w + w;
                double diff = fabs((double)y1[k] - y2[k]) / (1.0 + fabs((double)y1[k]));
                int in_border = h < margin || w < margin || h >= o.h - margin || w >= o.w - margin;
                double *slot = in_border ? border : interior;
                *slot = diff > *slot ? diff : *slot;
            }
    gm_stitch_fit_free(&f);
    free(x);
    gm_net_free(explicit_net);
    gm_net_free(folded);
    gm_backend_free(be);
}

static void fold_conv_equals_explicit_map(void **state)
{
    (void)state;
    const gm_shape in = {4, 9, 9};
    double interior, border;
    fold_vs_explicit(gm_block_conv(4, 6, 3, 1, 1, 1, 1), in, 1.0, 1, &interior, &border);
    print_message("conv 3x3 + BN + ReLU, constant ~1: interior %.2e, border %.2e (zero padding of a shifted map)\n",
                  interior, border);
    assert_true(interior < 1e-5);
    assert_true(border > 1e-3); /* the padding's share of the constant: this test sees it */
    fold_vs_explicit(gm_block_conv(4, 6, 3, 1, 1, 1, 1), in, 0.0, 1, &interior, &border);
    assert_true(interior < 1e-5 && border < 1e-5); /* without a constant the fold is exact everywhere */
    /* a convolution with a bias and no BatchNorm takes the constant in its bias */
    gm_block cb = gm_block_empty(GM_BLOCK_CONV);
    gm_error err;
    assert_ok(gm_block_push(&cb, gm_op_conv2d(4, 5, 3, 1, 0, 1), -1, -1, &err), err);
    fold_vs_explicit(cb, in, 1.0, 0, &interior, &border);
    assert_true(interior < 1e-5); /* no padding: no border */
}

static void fold_residual_and_linear(void **state)
{
    (void)state;
    double interior, border;
    /* 1x1 shortcut (the stride changes the shape): both paths take the map */
    fold_vs_explicit(gm_block_basic(4, 8, 2), (gm_shape){4, 8, 8}, 0.0, 0, &interior, &border);
    assert_true(interior < 1e-5);
    /* the second 3x3 convolution carries the border's error one pixel further in */
    fold_vs_explicit(gm_block_basic(4, 8, 2), (gm_shape){4, 16, 16}, 1.0, 2, &interior, &border);
    print_message("residual block with a 1x1 shortcut: interior %.2e, border %.2e\n", interior, border);
    assert_true(interior < 1e-5);
    /* a head after flatten: features are channel-major over the map */
    const gm_shape in = {4, 3, 3};
    fold_vs_explicit(gm_block_head(in, 5), in, 1.0, 0, &interior, &border);
    assert_true(interior < 1e-5);
    fold_vs_explicit(gm_block_linear((gm_shape){6, 1, 1}, 7, 1, 0.0f), (gm_shape){6, 1, 1}, 1.0, 0, &interior,
                     &border);
    assert_true(interior < 1e-5);
    /* what cannot take a fold, fully or at all */
    assert_int_equal(gm_stitch_foldable(&(gm_block){0}), GM_STITCH_NONE);
    gm_block id = gm_block_basic(4, 4, 1), pool = gm_block_maxpool(2, 2), gap = gm_block_gap();
    assert_int_equal(gm_stitch_foldable(&id), GM_STITCH_PARTIAL);
    assert_int_equal(gm_stitch_foldable(&pool), GM_STITCH_NONE);
    assert_int_equal(gm_stitch_foldable(&gap), GM_STITCH_NONE);
    gm_block conv = gm_block_conv(4, 6, 3, 1, 1, 1, 1);
    assert_int_equal(gm_stitch_foldable(&conv), GM_STITCH_FOLD);
}

/* An adapter set to (M, c) computes M x + c after its pooling or before its upsampling. */
static void adapter_computes_the_map(void **state)
{
    (void)state;
    const gm_shape cases[2][2] = {{{4, 8, 8}, {6, 4, 4}}, {{4, 4, 4}, {6, 8, 8}}};
    for (int k = 0; k < 2; k++) {
        gm_shape from = cases[k][0], to = cases[k][1];
        gm_block ad;
        gm_error err;
        assert_ok(gm_fgraph_adapter(from, to, &ad, &err), err);
        gm_backend *be = cpu();
        gm_net *net;
        gm_net_desc d = {from, 1, &ad, NULL};
        assert_ok(gm_net_create(&net, be, &d, 2, 5, &err), err);
        gm_rng rng;
        gm_rng_seed(&rng, 21);
        gm_stitch_fit f;
        make_fit(&f, from.c, to.c, &rng, 1.0);
        assert_ok(gm_stitch_set_adapter(&ad, gm_net_params(net), gm_net_buffers(net), &f, &err), err);
        float x[2 * 4 * 8 * 8];
        gm_fill_uniform(x, sizeof x / sizeof *x, &rng, -1.0f, 1.0f);
        assert_ok(gm_net_forward(net, x, 2, 0, &err), err);
        const float *y = gm_net_output(net, 0);
        const int f2 = k == 0 ? 2 : 1, up = k == 1 ? 2 : 1; /* pooled by 2, or upsampled by 2 */
        for (int s = 0; s < 2; s++)
            for (int o = 0; o < to.c; o++)
                for (int h = 0; h < to.h; h++)
                    for (int w = 0; w < to.w; w++) {
                        double v = f.c[o];
                        for (int i = 0; i < from.c; i++) {
                            double px = 0.0; /* the (pooled) input pixel the output reads */
                            for (int dy = 0; dy < f2; dy++)
                                for (int dx = 0; dx < f2; dx++)
                                    px += x[((s * from.c + i) * from.h + (h / up) * f2 + dy) * from.w + (w / up) * f2 +
                                            dx];
                            v += f.M[o * from.c + i] * px / (f2 * f2);
                        }
                        size_t idx = (((size_t)s * to.c + o) * to.h + h) * to.w + w;
                        gm_assert_close("adapter output", idx, y[idx], v, 1e-4, 1e-4);
                    }
        gm_stitch_fit_free(&f);
        gm_net_free(net);
        gm_backend_free(be);
    }
    /* a spatial-only adapter has no convolution to set */
    gm_block pool_only;
    gm_error err;
    assert_ok(gm_fgraph_adapter((gm_shape){4, 8, 8}, (gm_shape){4, 4, 4}, &pool_only, &err), err);
    assert_int_equal(gm_stitch_adapter_conv(&pool_only), -1);
}

/*
 * The output fit on a block that reads X_A where it was trained on X_B = M X_A + c:
 * with c = 0 it reproduces the teacher's output everywhere; with a constant it
 * leaves less squared error than the folded map (it regresses the zero-padded
 * border patches too). Returns the largest error of the fit and both sums.
 */
static void output_fit_vs_fold(double cscale, double *max_out, double *e_out, double *e_fold)
{
    enum { B = 4 };
    const gm_shape in = {3, 8, 8};
    gm_block blk = gm_block_empty(GM_BLOCK_CONV);
    gm_error err;
    assert_ok(gm_block_push(&blk, gm_op_conv2d(3, 5, 3, 1, 1, 1), -1, -1, &err), err);
    gm_backend *be = cpu();
    gm_net_desc d = {in, 1, &blk, NULL};
    gm_net *teacher, *cand;
    assert_ok(gm_net_create(&teacher, be, &d, B, 3, &err), err);
    assert_ok(gm_net_create(&cand, be, &d, B, 4, &err), err);
    const size_t np = gm_net_nparams(teacher), numel = gm_shape_numel(in), nout = 5 * 8 * 8;
    memcpy(gm_net_params(cand), gm_net_params(teacher), sizeof(float) * np);
    gm_rng rng;
    gm_rng_seed(&rng, 8);
    gm_stitch_fit map;
    make_fit(&map, 3, 3, &rng, cscale);
    float xa[B * 3 * 64], xb[B * 3 * 64], t[B * 5 * 64], diff[B * 5 * 64], patches[27 * 64];
    gm_fill_uniform(xa, B * numel, &rng, -1.0f, 1.0f);
    for (int s = 0; s < B; s++)
        for (int j = 0; j < 3; j++)
            for (int p = 0; p < 64; p++) {
                double v = map.c[j];
                for (int i = 0; i < 3; i++) v += map.M[j * 3 + i] * xa[(s * 3 + i) * 64 + p];
                xb[(s * 3 + j) * 64 + p] = (float)v;
            }
    assert_ok(gm_net_forward(teacher, xb, B, 0, &err), err);
    memcpy(t, gm_net_output(teacher, 0), sizeof t);
    assert_ok(gm_net_forward(cand, xa, B, 0, &err), err);
    const float *y = gm_net_output(cand, 0);
    for (size_t i = 0; i < B * nout; i++) diff[i] = t[i] - y[i];
    assert_true(gm_stitch_refittable(&blk, 0));
    gm_stitch_acc *acc;
    assert_ok(gm_stitch_acc_create(&acc, 27, 5, &err), err);
    for (int s = 0; s < B; s++) {
        gm_stitch_patches(&blk.ops[0], in, xa + s * numel, patches);
        gm_stitch_acc_add(acc, patches, diff + s * nout, 1, 64);
    }
    gm_stitch_fit delta;
    assert_ok(gm_stitch_solve(acc, 1e-9, &delta, &err), err);
    int dropped;
    assert_ok(gm_stitch_add_delta(&blk, 0, gm_net_params(cand), NULL, &delta, &dropped, &err), err);
    assert_int_equal(dropped, 0);
    assert_ok(gm_net_forward(cand, xa, B, 0, &err), err);
    *max_out = *e_out = *e_fold = 0.0;
    for (size_t i = 0; i < B * nout; i++) {
        double e = fabs((double)y[i] - t[i]);
        *max_out = e > *max_out ? e : *max_out;
        *e_out += e * e;
    }
    /* the fold, on the same candidate input */
    memcpy(gm_net_params(cand), gm_net_params(teacher), sizeof(float) * np);
    assert_ok(gm_stitch_fold(&blk, in, gm_net_params(cand), NULL, &map, &dropped, &err), err);
    assert_ok(gm_net_forward(cand, xa, B, 0, &err), err);
    for (size_t i = 0; i < B * nout; i++) *e_fold += ((double)y[i] - t[i]) * ((double)y[i] - t[i]);
    gm_stitch_fit_free(&delta);
    gm_stitch_fit_free(&map);
    gm_stitch_acc_free(acc);
    gm_net_free(teacher);
    gm_net_free(cand);
    gm_backend_free(be);
}

static void output_fit_reproduces_teacher(void **state)
{
    (void)state;
    double max_out, e_out, e_fold;
    output_fit_vs_fold(0.0, &max_out, &e_out, &e_fold);
    assert_true(max_out < 1e-3);
    output_fit_vs_fold(0.5, &max_out, &e_out, &e_fold);
    print_message("output fit with a constant: squared error %.3g, the fold's %.3g\n", e_out, e_fold);
    assert_true(e_out < e_fold);
}

/* ---- whole candidates ------------------------------------------------------------ */

static const gm_shape IN = {3, 16, 16};


/* Logits of task t of model file m on x (n samples), into y (n x classes). */
static void logits(const gm_mfile *m, int t, const float *x, int n, float *y)
{
    gm_backend *be = cpu();
    gm_net *net;
    gm_error err;
    gm_net_desc d = gm_mfile_desc(m);
    assert_ok(gm_net_create(&net, be, &d, n, 1, &err), err);
    assert_ok(gm_mfile_to_net(m, net, &err), err);
    assert_ok(gm_net_forward(net, x, n, 0, &err), err);
    int out = -1;
    for (int o = 0; o < gm_net_noutputs(net); o++)
        if (gm_net_output_block(net, o) == m->tasks[t].head) out = o;
    assert_true(out >= 0);
    memcpy(y, gm_net_output(net, out), sizeof(float) * (size_t)n * m->tasks[t].classes);
    gm_net_free(net);
    gm_backend_free(be);
}

/*
 * Models a and b; task 1's block `layer` re-parented onto task 0's block
 * layer - 1 (a prefix shared); stitched on a probe; returns the report and,
 * in y, task 1's logits of the fused model.
 */
static void merge_and_stitch_with(const gm_mfile *a, const gm_mfile *b, int layer, const gm_stitch_opts *o,
                                  int project, gm_stitch_report *rep, float *before, float *y, const float *x, int n)
{
    gm_fgraph *g = malloc(sizeof *g);
    gm_error err;
    const gm_mfile *mp[2] = {a, b};
    assert_ok(gm_fgraph_from_models(g, mp, 2, &err), err);
    assert_int_equal(gm_fgraph_project_seams(g), 0); /* the originals have no seams */
    assert_ok(gm_mutate_apply(g, (gm_merge){layer, a->nblocks + layer, 0}, &err), err);
    if (project) assert_int_equal(gm_fgraph_project_seams(g), 1);
    gm_wstore store = {2, mp, 0, NULL, NULL};
    gm_mfile m;
    assert_ok(gm_fgraph_to_mfile(g, &store, 1, &m, &err), err);
    if (before) logits(&m, 1, x, n, before);
    gm_backend *be = cpu();
    assert_ok(gm_stitch_graph(g, &m, &store, x, n, be, o, rep, &err), err);
    logits(&m, 1, x, n, y);
    gm_mfile_free(&m);
    gm_backend_free(be);
    free(g);
}

static void merge_and_stitch(const gm_mfile *a, const gm_mfile *b, int layer, gm_stitch_report *rep, float *y,
                             const float *x, int n)
{
    const gm_stitch_opts o = {.ridge = 1e-6};
    merge_and_stitch_with(a, b, layer, &o, 0, rep, NULL, y, x, n);
}

static void same_model_twice_is_identity(void **state)
{
    (void)state;
    enum { N = 40 };
    gm_mfile a, copy;
    gm_error err;
    gm_test_random_model(&a, IN, 31);
    assert_ok(gm_mfile_copy(&copy, &a, &err), err); /* two files, as two models would be */
    snprintf(copy.tasks[0].name, sizeof copy.tasks[0].name, "copy"); /* a task of its own */
    float *x = malloc(sizeof(float) * N * gm_shape_numel(IN));
    gm_rng rng;
    gm_rng_seed(&rng, 3);
    gm_fill_uniform(x, N * gm_shape_numel(IN), &rng, -1.0f, 1.0f);
    float want[N * 4], got[N * 4];
    logits(&a, 0, x, N, want);
    float lo = want[0], hi = want[0]; /* a live model: its logits depend on the input */
    for (int i = 0; i < N * 4; i++) {
        lo = want[i] < lo ? want[i] : lo;
        hi = want[i] > hi ? want[i] : hi;
    }
    assert_true(hi - lo > 1e-2f);
    for (int layer = 1; layer <= 3; layer++) { /* after a conv, after a pool, deeper */
        gm_stitch_report rep;
        merge_and_stitch(&a, &copy, layer, &rep, got, x, N);
        assert_true(rep.nsites >= 1);
        for (int s = 0; s < rep.nsites; s++) {
            assert_true(rep.site[s].residual < 1e-6);       /* the map is the identity */
            assert_true(rep.site[s].plain_residual < 1e-5); /* and none was needed (float sums) */
        }
        gm_assert_all_close("task 1 logits of two merged copies", got, want, N * 4, 1e-4, 1e-4);
    }
    free(x);
    gm_mfile_free(&a);
    gm_mfile_free(&copy);
}

static void stitch_beats_plain_merge(void **state)
{
    (void)state;
    enum { N = 64 };
    gm_mfile a, b;
    gm_test_random_model(&a, IN, 41);
    gm_test_random_model(&b, IN, 42);
    float *x = malloc(sizeof(float) * N * gm_shape_numel(IN));
    gm_rng rng;
    gm_rng_seed(&rng, 5);
    gm_fill_uniform(x, N * gm_shape_numel(IN), &rng, -1.0f, 1.0f);
    float got[N * 4];
    gm_stitch_report rep;
    merge_and_stitch(&a, &b, 1, &rep, got, x, N);
    assert_int_equal(rep.nsites, 1);
    assert_int_equal(rep.site[0].node, a.nblocks); /* task 1's first block after the cut */
    print_message("two different models, block 1: residual %.3f with the stitch, %.3f without\n",
                  rep.site[0].residual, rep.site[0].plain_residual);
    assert_true(rep.site[0].residual < rep.site[0].plain_residual);
    assert_true(rep.site[0].residual >= 0.0 && rep.site[0].residual < 1.0);
    free(x);
    gm_mfile_free(&a);
    gm_mfile_free(&b);
}

static float max_abs_diff(const float *a, const float *b, int n)
{
    float d = 0.0f;
    for (int i = 0; i < n; i++) d = fabsf(a[i] - b[i]) > d ? fabsf(a[i] - b[i]) : d;
    return d;
}

/*
 * A residual block merged onto a map its own input is an exact channel
 * permutation of: model b's first block is model a's with its output channels
 * reversed, so b's block 1 reads P x where the merge gives it x. The fitted
 * map is P; folded into the block's first convolution alone, the identity
 * shortcut still adds x in place of P x, and the logits move. With the
 * shortcut projected (a 1x1 convolution starting as the identity, which
 * changes nothing by itself) the map goes into both paths and b's logits come
 * back exactly, by either fit.
 */
static void projected_shortcut_stitches_exactly(void **state)
{
    (void)state;
    enum { N = 48, K = 4 };
    gm_mfile a, b;
    gm_test_random_arch(&a, "resnet10", IN, 51);
    gm_test_random_arch(&b, "resnet10", IN, 52);
    assert_true(gm_block_identity_add(&b.blocks[1]) >= 0);
    /* b's block 0 := a's block 0 with output channels reversed (conv 3x3 without bias, BatchNorm, ReLU) */
    const gm_op *cv = &a.blocks[0].ops[0];
    const int C = cv->p.conv.cout, fan = cv->p.conv.cin * cv->p.conv.k * cv->p.conv.k;
    assert_int_equal(cv->p.conv.bias, 0);
    assert_int_equal(a.blocks[0].ops[1].kind, GM_OP_BATCHNORM2D);
    for (int o = 0; o < C; o++) {
        const int from = C - 1 - o;
        memcpy(b.params + (size_t)o * fan, a.params + (size_t)from * fan, sizeof(float) * (size_t)fan);
        for (int v = 0; v < 2; v++) { /* gamma, beta; running mean, variance */
            b.params[(size_t)C * fan + (size_t)v * C + o] = a.params[(size_t)C * fan + (size_t)v * C + from];
            b.buffers[(size_t)v * C + o] = a.buffers[(size_t)v * C + from];
        }
    }
    float *x = malloc(sizeof(float) * N * gm_shape_numel(IN));
    gm_rng rng;
    gm_rng_seed(&rng, 9);
    gm_fill_uniform(x, N * gm_shape_numel(IN), &rng, -1.0f, 1.0f);
    float want[N * K], got[N * K], before[N * K], plain_before[N * K];
    logits(&b, 0, x, N, want);
    gm_stitch_report rep;
    const gm_stitch_opts in_fit = {.ridge = 1e-8, .fit = GM_STITCH_FIT_INPUT};
    const gm_stitch_opts out_fit = {.ridge = 1e-8, .fit = GM_STITCH_FIT_OUTPUT};

    merge_and_stitch_with(&a, &b, 1, &in_fit, 0, &rep, plain_before, got, x, N);
    assert_int_equal(rep.nsites, 1);
    assert_true(rep.site[0].partial);
    assert_true(rep.site[0].residual < 1e-6); /* the map is found exactly... */
    const float partial = max_abs_diff(got, want, N * K);
    print_message("permuted input, identity shortcut: logits off by %.3g after the stitch\n", partial);
    assert_true(partial > 1e-2f); /* ...but the shortcut still adds x */

    merge_and_stitch_with(&a, &b, 1, &in_fit, 1, &rep, before, got, x, N);
    gm_assert_all_close("a projection starting as the identity changes nothing", before, plain_before, N * K, 1e-5,
                        1e-5);
    assert_int_equal(rep.nsites, 1);
    assert_false(rep.site[0].partial);
    gm_assert_all_close("projected shortcut, input fit: b's logits", got, want, N * K, 1e-3, 1e-3);
    merge_and_stitch_with(&a, &b, 1, &out_fit, 1, &rep, NULL, got, x, N);
    assert_true(rep.site[0].output_fit);
    gm_assert_all_close("projected shortcut, output fit: b's logits", got, want, N * K, 1e-3, 1e-3);
    free(x);
    gm_mfile_free(&a);
    gm_mfile_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lsq_recovers_known_map),       cmocka_unit_test(lsq_refuses_too_little),
        cmocka_unit_test(fold_conv_equals_explicit_map), cmocka_unit_test(fold_residual_and_linear),
        cmocka_unit_test(adapter_computes_the_map),     cmocka_unit_test(same_model_twice_is_identity),
        cmocka_unit_test(stitch_beats_plain_merge),     cmocka_unit_test(output_fit_reproduces_teacher),
        cmocka_unit_test(projected_shortcut_stitches_exactly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

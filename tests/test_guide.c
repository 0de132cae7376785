/*
 * Guided proposals (coordinator/gm_guide.h): a merge between two copies of one
 * model is priced at no cost and a merge onto another model's maps above it;
 * a layer skip is priced too; with no exploration and a sharp cost scale the
 * draws go to the free merges; with full exploration they spread over all.
 * Trunks (coordinator/gm_trunk.h): planned shallowest first and spread up to
 * the deepest, each on the model the guide prices cheapest, and applied as
 * every task reading that model's first blocks.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_guide.h"
#include "gm_models.h"
#include "gm_trunk.h"
#include "test_util.h"

static const gm_shape IN = {3, 16, 16};
enum { NPROBE = 48 };


typedef struct {
    gm_mfile m[3]; /* a, a copy of a, another model */
    const gm_mfile *mp[3];
    gm_guide *guide;
    gm_backend *be;
} fixture;

static void open_fixture(fixture *f, double explore, double cost_scale, int nmodels)
{
    gm_error err;
    gm_test_random_model(&f->m[0], IN, 5);
    assert_ok(gm_mfile_copy(&f->m[1], &f->m[0], &err), err);
    snprintf(f->m[1].tasks[0].name, sizeof f->m[1].tasks[0].name, "t5_copy"); /* a task of its own */
    gm_test_random_model(&f->m[2], IN, 6);
    f->mp[0] = &f->m[0];
    f->mp[1] = &f->m[1];
    f->mp[2] = &f->m[2];
    float *x = malloc(sizeof(float) * NPROBE * gm_shape_numel(IN));
    gm_rng rng;
    gm_rng_seed(&rng, 9);
    gm_fill_uniform(x, NPROBE * gm_shape_numel(IN), &rng, -1.0f, 1.0f);
    assert_ok(gm_backend_cpu_create(&f->be, 1, &err), err);
    gm_guide_opts o = {.explore = explore, .cost_scale = cost_scale};
    assert_ok(gm_guide_create(&f->guide, f->mp, nmodels, x, NULL, NPROBE, f->be, &o, &err), err);
    free(x);
}

static void close_fixture(fixture *f)
{
    gm_guide_free(f->guide);
    gm_backend_free(f->be);
    for (int k = 0; k < 3; k++) gm_mfile_free(&f->m[k]);
}

static void prices_merges(void **state)
{
    (void)state;
    fixture f = {0};
    open_fixture(&f, 0.2, 0.1, 3);
    gm_fgraph *g = malloc(sizeof *g);
    gm_error err;
    assert_ok(gm_fgraph_from_models(g, f.mp, 3, &err), err);
    const int nb = f.m[0].nblocks;
    assert_true(gm_guide_npairs(f.guide) > 10);
    /* block 2 of the copy reading block 1 of a (a's block 2's input): the same map */
    double same = gm_guide_cost(f.guide, g, (gm_merge){2, nb + 2, 0});
    double other = gm_guide_cost(f.guide, g, (gm_merge){2, 2 * nb + 2, 0});
    double skip = gm_guide_cost(f.guide, g, (gm_merge){1, 3, 0}); /* a's block 3 reads block 0: a skip */
    print_message("cost: copy %.2e, another model %.3f, a layer skip %.3f; median %.3f over %d pairs\n", same, other,
                  skip, gm_guide_median(f.guide), gm_guide_npairs(f.guide));
    assert_true(same < 1e-3);
    assert_true(other > 0.005 && other > 100 * same); /* random models seldom change their top class: the residual share */
    assert_true(skip > 0.0 && isfinite(skip));
    free(g);
    close_fixture(&f);
}

/* Fraction of n single-merge draws whose cost is below 1e-3. */
static double free_share(fixture *f, int n)
{
    gm_fgraph *g = malloc(sizeof *g), *orig = malloc(sizeof *orig);
    gm_error err;
    assert_ok(gm_fgraph_from_models(orig, f->mp, 2, &err), err);
    gm_rng rng;
    gm_rng_seed(&rng, 17);
    int cheap = 0;
    for (int k = 0; k < n; k++) {
        memcpy(g, orig, sizeof *g);
        double pred = -1.0;
        assert_ok(gm_guide_mutate(f->guide, g, &rng, 1, 0, &pred, &err), err);
        assert_true(pred >= 0.0 && isfinite(pred));
        /* the merged graph lost FLOPs; was the map it made b read the one b was trained on? */
        assert_true(gm_fgraph_flops(g) < gm_fgraph_flops(orig));
        int shared = 0; /* a node of one copy reading the other copy's previous layer: a shared prefix */
        for (int i = 0; i < g->nnodes; i++) {
            int p = g->nodes[i].parent;
            if (p >= 0 && g->nodes[p].model >= 0 && g->nodes[i].model != g->nodes[p].model &&
                g->nodes[p].layer == g->nodes[i].layer - 1)
                shared = 1;
        }
        cheap += shared;
        if (shared) assert_true(pred < 1e-3); /* the predicted cost of a free merge: the copies agree */
    }
    free(g);
    free(orig);
    return (double)cheap / n;
}

static void draws_follow_cost(void **state)
{
    (void)state;
    fixture f = {0};
    open_fixture(&f, 0.0, 0.00002, 2); /* a and its copy: sharing a prefix is free, skipping layers is not */
    double guided = free_share(&f, 60);
    close_fixture(&f);
    fixture u = {0};
    open_fixture(&u, 1.0, 0.00002, 2); /* all exploration: GMorph's uniform draw */
    double uniform = free_share(&u, 60);
    close_fixture(&u);
    print_message("free merges drawn: %.0f%% guided, %.0f%% uniform\n", 100 * guided, 100 * uniform);
    assert_true(guided > 0.95);
    assert_true(uniform < 0.8);
}

/* The node of (model, layer) in g, or -1. */
static int node_at(const gm_fgraph *g, int model, int layer)
{
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].model == model && g->nodes[i].layer == layer) return i;
    return -1;
}

static void plans_trunks(void **state)
{
    (void)state;
    fixture f = {0};
    open_fixture(&f, 0.2, 0.1, 3);
    gm_fgraph *orig = malloc(sizeof *orig), *g = malloc(sizeof *g);
    gm_error err;
    assert_ok(gm_fgraph_from_models(orig, f.mp, 3, &err), err);
    const int nb = f.m[0].nblocks;
    gm_trunk plan[GM_TRUNK_MAX];
    int n = 0;
    assert_ok(gm_trunk_plan(orig, f.guide, 3, plan, &n, &err), err);
    assert_int_equal(n, 3);
    double deepest = 0.0; /* the largest FLOPs ratio of any trunk */
    for (int d = 1; d < nb; d++) {
        memcpy(g, orig, sizeof *g);
        if (gm_trunk_apply(g, (gm_trunk){.model = 0, .depth = d}, &err) == GM_OK)
            deepest = fmax(deepest, (double)gm_fgraph_flops(orig) / (double)gm_fgraph_flops(g));
    }
    for (int k = 0; k < n; k++) {
        const gm_trunk t = plan[k];
        print_message("trunk %d: model %d, depth %d, %.2fx fewer FLOPs, cost %.3f\n", k, t.model, t.depth,
                      t.flops_ratio, t.cost);
        if (k > 0) assert_true(t.depth > plan[k - 1].depth && t.flops_ratio > plan[k - 1].flops_ratio);
        memcpy(g, orig, sizeof *g);
        assert_ok(gm_trunk_apply(g, t, &err), err);
        assert_ok(gm_fgraph_check(g, &err), err);
        assert_int_equal(g->nnodes, orig->nnodes - 2 * t.depth); /* the two other models' first blocks are gone */
        for (int task = 0; task < 3; task++) /* every task reads the trunk */
            for (int l = 0; l < t.depth; l++) assert_true(gm_fgraph_on_path(g, node_at(g, t.model, l), task));
        assert_true(fabs((double)gm_fgraph_flops(orig) / (double)gm_fgraph_flops(g) - t.flops_ratio) < 1e-9);
        for (int m = 0; m < 3; m++) { /* no other model's trunk of this depth is priced cheaper */
            double worst = 0.0;
            for (int o = 0; o < 3; o++)
                if (o != m)
                    worst = fmax(worst, gm_guide_cost(f.guide, orig, (gm_merge){node_at(orig, m, t.depth),
                                                                                node_at(orig, o, t.depth), 0}));
            assert_true(t.cost <= worst + 1e-12);
        }
    }
    /* the plan reaches the deepest trunk, or one within 1 % of its FLOPs */
    assert_true(plan[n - 1].flops_ratio <= deepest + 1e-9 && plan[n - 1].flops_ratio * 1.01 >= deepest);
    /* without a guide: model 0's trunks, unpriced */
    assert_ok(gm_trunk_plan(orig, NULL, 2, plan, &n, &err), err);
    assert_int_equal(n, 2);
    assert_true(plan[0].model == 0 && plan[1].model == 0 && isnan(plan[0].cost));
    assert_int_equal(gm_trunk_plan(orig, NULL, 0, plan, &n, &err), GM_EINVAL);
    free(g);
    free(orig);
    close_fixture(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(prices_merges), cmocka_unit_test(draws_follow_cost),
                                       cmocka_unit_test(plans_trunks)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

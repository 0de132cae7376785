/*
 * bench_guide: does the guide's predicted cost (coordinator/gm_guide.h) predict
 * what a merge does before fine-tuning? For n random single merges of the
 * original graph (seeded): the guide's cost, and the worst task's drop of the
 * stitched candidate on validation data, as a worker measures it with
 * finetune.epochs 0. Prints one line per merge and the Spearman rank
 * correlation of the two (results/fusion.md).
 *
 * usage: bench_guide CONFIG.json [N]   (N default 40; the config's models, data, stitch and mutation keys)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_guide.h"
#include "gm_search_config.h"
#include "gm_worker.h"

/* Ranks (ties averaged) of v into r. */
static void ranks(const double *v, int n, double *r)
{
    for (int i = 0; i < n; i++) {
        int less = 0, equal = 0;
        for (int j = 0; j < n; j++) {
            less += v[j] < v[i];
            equal += v[j] == v[i];
        }
        r[i] = less + (equal + 1) / 2.0;
    }
}

static double spearman(const double *a, const double *b, int n)
{
    double *ra = malloc(sizeof(double) * (size_t)n), *rb = malloc(sizeof(double) * (size_t)n);
    ranks(a, n, ra);
    ranks(b, n, rb);
    double ma = 0, mb = 0, sab = 0, saa = 0, sbb = 0;
    for (int i = 0; i < n; i++) {
        ma += ra[i] / n;
        mb += rb[i] / n;
    }
    for (int i = 0; i < n; i++) {
        sab += (ra[i] - ma) * (rb[i] - mb);
        saa += (ra[i] - ma) * (ra[i] - ma);
        sbb += (rb[i] - mb) * (rb[i] - mb);
    }
    free(ra);
    free(rb);
    return saa > 0 && sbb > 0 ? sab / sqrt(saa * sbb) : NAN;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_guide CONFIG.json [N]\n");
        return 2;
    }
    const int n = argc > 2 ? atoi(argv[2]) : 40;
    gm_search_config c;
    gm_error err;
    gm_search_defaults(&c);
    if (gm_search_config_load(&c, argv[1], &err) != GM_OK || n < 2) {
        fprintf(stderr, "bench_guide: %s\n", n < 2 ? "N must be at least 2" : err.msg);
        return 2;
    }
    c.ft_epochs = 0;
    c.gmorph_mode = 0;
    gm_worker_opts wo = {.config = &c, .time_latency = 0};
    gm_worker *w = NULL;
    gm_backend *be = NULL;
    gm_guide *gd = NULL;
    gm_fgraph *orig = malloc(sizeof *orig);
    gm_job *job = calloc(1, sizeof *job);
    gm_status st = gm_worker_open(&w, &wo, &err);
    long np = 0;
    const float *probe = st == GM_OK ? gm_worker_probe(w, &np) : NULL;
    if (st == GM_OK && !probe) st = gm_error_set(&err, GM_EINVAL, "the config turns stitching and guidance off");
    if (st == GM_OK) st = gm_backend_cpu_create(&be, c.threads, &err);
    gm_guide_opts go = {.explore = c.guide_explore, .cost_scale = c.guide_cost_scale};
    if (st == GM_OK) st = gm_guide_create(&gd, gm_worker_models(w), c.nmodels, probe, gm_worker_probe_own(w), np, be, &go, &err);
    if (st == GM_OK) st = gm_fgraph_from_models(orig, gm_worker_models(w), c.nmodels, &err);
    double *cost = calloc((size_t)n, sizeof(double)), *drop = calloc((size_t)n, sizeof(double));
    gm_rng rng;
    gm_rng_seed(&rng, c.seed);
    gm_fgraph *g = malloc(sizeof *g);
    for (int k = 0; st == GM_OK && k < n; k++) {
        *g = *orig;
        const int ns = gm_mutate_list(g, 0, NULL, 0);
        gm_merge m;
        gm_merge *list = malloc(sizeof *list * (size_t)ns);
        gm_mutate_list(g, 0, list, ns);
        m = list[gm_rng_below(&rng, (uint32_t)ns)];
        free(list);
        cost[k] = gm_guide_cost(gd, g, m);
        const gm_fnode nb = g->nodes[m.b];
        const int p = g->nodes[m.a].parent;
        const int pm = p < 0 ? -1 : g->nodes[p].model, pl = p < 0 ? -1 : g->nodes[p].layer;
        st = gm_mutate_apply(g, m, &err);
        gm_result r;
        *job = (gm_job){.id = k, .source = -1};
        job->enc_len = gm_fgraph_encode(g, job->enc, GM_JOB_ENC_MAX);
        if (st == GM_OK) st = gm_worker_run(w, job, &r, &err);
        if (st != GM_OK) break;
        drop[k] = r.ft.worst_drop;
        printf("merge %2d: block (%d, %2d) reads (%2d, %2d): predicted %.3f, worst drop %.2f points\n", k, nb.model,
               nb.layer, pm, pl, cost[k], 100 * drop[k]);
        fflush(stdout);
        gm_result_free(&r);
    }
    if (st == GM_OK)
        printf("%d merges: Spearman rank correlation of predicted cost and drop before fine-tuning %.2f\n", n,
               spearman(cost, drop, n));
    else
        fprintf(stderr, "bench_guide: %s\n", err.msg);
    free(cost);
    free(drop);
    free(g);
    free(orig);
    free(job);
    gm_guide_free(gd);
    gm_backend_free(be);
    gm_worker_free(w);
    return st == GM_OK ? 0 : 1;
}

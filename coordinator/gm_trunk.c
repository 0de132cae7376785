/* gm_trunk: see gm_trunk.h. */
#include "gm_trunk.h"

#include <math.h>
#include <stdlib.h>

#include "gm_mutate.h"

/* The node of (model, layer), or -1. */
static int node_of(const gm_fgraph *g, int model, int layer)
{
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].model == model && g->nodes[i].layer == layer) return i;
    return -1;
}

static int same_shape(gm_shape a, gm_shape b) { return a.c == b.c && a.h == b.h && a.w == b.w; }

gm_status gm_trunk_apply(gm_fgraph *g, gm_trunk t, gm_error *err)
{
    if (t.depth < 1 || t.model < 0 || t.model >= g->ntasks)
        return gm_error_set(err, GM_EINVAL, "trunk of model %d, depth %d: no such trunk", t.model, t.depth);
    int joined = 0;
    for (int m = 0; m < g->ntasks; m++) {
        const int a = node_of(g, t.model, t.depth), b = node_of(g, m, t.depth);
        if (m == t.model || a < 0 || b < 0 || !same_shape(gm_fgraph_in_shape(g, a), gm_fgraph_in_shape(g, b)))
            continue; /* a model without such a block, or of other shapes there, keeps its own path */
        gm_status st = gm_mutate_apply(g, (gm_merge){.a = a, .b = b}, err);
        if (st != GM_OK) return st;
        joined++;
    }
    if (joined == 0)
        return gm_error_set(err, GM_ESHAPE, "trunk of model %d, depth %d: no other model reads a map of that shape there",
                            t.model, t.depth);
    return GM_OK;
}

/* The worst predicted cost of trunk t's seams (the models that join it), each priced on the original graph g. */
static double trunk_cost(const gm_fgraph *g, const gm_guide *gd, gm_trunk t)
{
    double worst = 0.0;
    const int a = node_of(g, t.model, t.depth);
    for (int m = 0; m < g->ntasks; m++) {
        const int b = node_of(g, m, t.depth);
        if (m == t.model || b < 0 || !same_shape(gm_fgraph_in_shape(g, a), gm_fgraph_in_shape(g, b))) continue;
        const double c = gm_guide_cost(gd, g, (gm_merge){.a = a, .b = b});
        worst = c > worst ? c : worst;
    }
    return worst;
}

gm_status gm_trunk_plan(const gm_fgraph *g, const gm_guide *gd, int k, gm_trunk *out, int *nout, gm_error *err)
{
    *nout = 0;
    if (k < 1 || k > GM_TRUNK_MAX) return gm_error_set(err, GM_EINVAL, "trunks: %d asked, 1 to %d allowed", k, GM_TRUNK_MAX);
    int maxdepth = 0;
    for (int i = 0; i < g->nnodes; i++) maxdepth = g->nodes[i].layer > maxdepth ? g->nodes[i].layer : maxdepth;
    gm_trunk *best = malloc(sizeof *best * (size_t)(maxdepth + 1)); /* per depth, the cheapest model's trunk */
    gm_fgraph *tmp = malloc(sizeof *tmp);
    if (!best || !tmp) {
        free(best);
        free(tmp);
        return gm_error_set(err, GM_ENOMEM, "out of memory");
    }
    const double base = (double)gm_fgraph_flops(g);
    int n = 0; /* depths with a trunk: best[0 .. n) */
    for (int d = 1; d <= maxdepth; d++) {
        gm_trunk pick = {.model = -1};
        for (int m = 0; m < g->ntasks; m++) {
            gm_trunk t = {.model = m, .depth = d, .cost = NAN};
            gm_error e;
            *tmp = *g;
            if (gm_trunk_apply(tmp, t, &e) != GM_OK) continue; /* shapes differ there, or no such block */
            t.flops_ratio = base / (double)gm_fgraph_flops(tmp);
            if (gd) t.cost = trunk_cost(g, gd, t);
            /* more FLOPs saved (more models join), then the cheaper */
            const int more = pick.model < 0 || t.flops_ratio > pick.flops_ratio * (1 + 1e-9);
            const int same = pick.model >= 0 && t.flops_ratio >= pick.flops_ratio * (1 - 1e-9) && !more;
            if (more || (same && gd && t.cost < pick.cost)) pick = t;
        }
        /* a deeper trunk that saves under 1 % more than a shallower one (sharing a classifier's small layers) only costs accuracy */
        int worth = pick.model >= 0;
        for (int q = 0; q < n && worth; q++) worth = pick.flops_ratio > 1.01 * best[q].flops_ratio;
        if (worth) best[n++] = pick;
    }
    /* k targets evenly spaced in log ratio up to the largest; each takes the nearest depth not yet taken */
    int got = 0;
    double top = 0.0;
    for (int q = 0; q < n; q++) top = fmax(top, log(best[q].flops_ratio));
    for (int i = 1; i <= k && n > 0 && got < n; i++) {
        const double want = top * i / k;
        int j = -1;
        for (int q = 0; q < n; q++) {
            int taken = 0;
            for (int p = 0; p < got; p++) taken |= out[p].depth == best[q].depth;
            if (!taken && (j < 0 || fabs(log(best[q].flops_ratio) - want) < fabs(log(best[j].flops_ratio) - want))) j = q;
        }
        out[got++] = best[j];
    }
    for (int i = 1; i < got; i++) /* shallowest first */
        for (int p = i; p > 0 && out[p - 1].depth > out[p].depth; p--) {
            gm_trunk s = out[p];
            out[p] = out[p - 1];
            out[p - 1] = s;
        }
    free(best);
    free(tmp);
    *nout = got;
    return GM_OK;
}

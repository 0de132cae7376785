#include "gm_filter.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/*
 * Sharing features: every non-empty subset of tasks up to this many tasks (63
 * at 6), the pairs beyond (the subsets would grow as 2^T).
 */
enum { FLT_SUBSET_MAX_TASKS = 6 };

_Static_assert(1 + FLT_SUBSET_MAX_TASKS + ((1 << FLT_SUBSET_MAX_TASKS) - 1) <= GM_FILTER_MAX_FEATURES,
               "subset features at 6 tasks must fit gm_features");
_Static_assert(1 + GM_FG_MAX_MODELS + GM_FG_MAX_MODELS * (GM_FG_MAX_MODELS - 1) / 2 <= GM_FILTER_MAX_FEATURES,
               "pair features at the most tasks must fit gm_features");
_Static_assert(GM_FG_MAX_MODELS <= 32, "task patterns are 32-bit masks");

/* ---- (R) dominance features ---- */

/*
 * Each node's pattern: the tasks whose root-to-head path contains it. Walks up
 * from every head by the parent links, so it does not depend on gm_fgraph.c;
 * the step bound keeps a malformed (cyclic) graph from looping forever.
 */
static void node_patterns(const gm_fgraph *g, int nnodes, int ntasks, uint32_t *mask)
{
    memset(mask, 0, (size_t)nnodes * sizeof *mask);
    for (int i = 0; i < nnodes; i++) {
        int t = g->nodes[i].task;
        if (t < 0 || t >= ntasks) continue;
        int j = i;
        for (int steps = 0; j >= 0 && j < nnodes && steps <= nnodes; steps++) {
            mask[j] |= 1u << t;
            j = g->nodes[j].parent;
        }
    }
}

/* Edge key: child (model, layer), parent map (model + 1, 0 for the input; layer), through an adapter. */
static uint32_t edge_key(int cm, int cl, int pm, int pl, int adapter)
{
    return ((((uint32_t)cm * 512u + (uint32_t)cl) * 17u + (uint32_t)(pm + 1)) * 512u + (uint32_t)pl) * 2u +
           (uint32_t)adapter;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* The merged edges of g: nodes of an original model that read something else than their original input. */
static void merge_edges(const gm_fgraph *g, int nnodes, gm_features *f)
{
    f->nedges = 0;
    for (int i = 0; i < nnodes; i++) {
        const gm_fnode *nd = &g->nodes[i];
        if (nd->model < 0 || nd->model >= GM_FG_MAX_MODELS || nd->layer < 0 || nd->layer >= 512) continue;
        int p = nd->parent, adapter = 0;
        if (p >= 0 && p < nnodes && g->nodes[p].model < 0) { /* through an adapter: what the adapter reads */
            adapter = 1;
            p = g->nodes[p].parent;
        }
        if (p >= nnodes) continue;
        const int pm = p < 0 ? -1 : g->nodes[p].model, pl = p < 0 ? 0 : g->nodes[p].layer;
        if (pm < -1 || pm >= GM_FG_MAX_MODELS || pl < 0 || pl >= 512) continue;
        if (!adapter && (p < 0 ? nd->layer == 0 : pm == nd->model && pl == nd->layer - 1)) continue; /* original */
        if (f->nedges < 0 || f->nedges == GM_FILTER_MAX_EDGES) {
            f->nedges = -1;
            continue;
        }
        f->edge[f->nedges++] = edge_key(nd->model, nd->layer, pm, pl, adapter);
    }
    if (f->nedges > 0) qsort(f->edge, (size_t)f->nedges, sizeof f->edge[0], cmp_u32);
}

void gm_filter_features(const gm_fgraph *g, gm_features *f)
{
    memset(f, 0, sizeof *f);
    int nnodes = g->nnodes < 0 ? 0 : (g->nnodes > GM_FG_MAX_NODES ? GM_FG_MAX_NODES : g->nnodes);
    int T = g->ntasks < 0 ? 0 : (g->ntasks > GM_FG_MAX_MODELS ? GM_FG_MAX_MODELS : g->ntasks);
    uint32_t mask[GM_FG_MAX_NODES];
    node_patterns(g, nnodes, T, mask);
    merge_edges(g, nnodes, f);

    int subsets = T <= FLT_SUBSET_MAX_TASKS;
    f->n = 1 + T + (subsets ? (1 << T) - 1 : T * (T - 1) / 2);
    double *path = f->v + 1, *share = f->v + 1 + T;
    for (int i = 0; i < nnodes; i++) {
        double p = (double)gm_block_nparams(&g->nodes[i].block);
        uint32_t m = mask[i];
        f->v[0] += p;
        for (int t = 0; t < T; t++)
            if (m & (1u << t)) path[t] += p;
        if (subsets) {
            if (m) share[m - 1] += p; /* exactly this pattern; orphans (m = 0) count in the total only */
        } else {
            int k = 0;
            for (int a = 0; a < T; a++)
                for (int b = a + 1; b < T; b++, k++)
                    if ((m & (1u << a)) && (m & (1u << b))) share[k] += p; /* at least this pair */
        }
    }
}

int gm_filter_contains(const gm_features *c, const gm_features *failure)
{
    if (c->nedges < 0 || failure->nedges < 0) return 1;
    int i = 0;
    for (int k = 0; k < failure->nedges; k++) {
        while (i < c->nedges && c->edge[i] < failure->edge[k]) i++;
        if (i == c->nedges || c->edge[i] != failure->edge[k]) return 0;
    }
    return 1;
}

int gm_filter_dominated(const gm_features *c, const gm_features *failure)
{
    if (c->n != failure->n || c->n < 1 || c->n > GM_FILTER_MAX_FEATURES) return 0;
    for (int i = 0; i < c->n; i++)
        if (!(c->v[i] <= failure->v[i])) return 0; /* written so that NaN means "not dominated" */
    return 1;
}

/* ---- known failures ---- */

enum { FLT_FAILURES_INITIAL_CAP = 8 };

void gm_failures_init(gm_failures *s)
{
    s->n = 0;
    s->cap = 0;
    s->f = NULL;
    s->structural = 0;
}

void gm_failures_free(gm_failures *s)
{
    const int structural = s->structural;
    free(s->f);
    gm_failures_init(s);
    s->structural = structural;
}

int gm_failures_add(gm_failures *s, const gm_features *f)
{
    if (s->n == s->cap) {
        if (s->cap > INT32_MAX / 2) return -1;
        int cap = s->cap ? 2 * s->cap : FLT_FAILURES_INITIAL_CAP;
        gm_features *grown = realloc(s->f, (size_t)cap * sizeof *grown);
        if (!grown) return -1; /* the set stays as it was */
        s->f = grown;
        s->cap = cap;
    }
    s->f[s->n++] = *f;
    return 0;
}

int gm_failures_match(const gm_failures *s, const gm_features *c)
{
    for (int i = 0; i < s->n; i++)
        if (gm_filter_dominated(c, &s->f[i]) && (!s->structural || gm_filter_contains(c, &s->f[i]))) return i;
    return -1;
}

/* ---- (P) learning curve ---- */

/* r stays inside (0, 1) while the grid is refined near an end. */
#define FLT_R_MIN 1e-9
#define FLT_R_MAX (1.0 - 1e-9)

/*
 * For a fixed r the model is linear in (a, b) with basis 1 and -r^e: solve it
 * in closed form (centred, for accuracy) and return the squared error, or
 * INFINITY when r^e overflows for some epoch.
 */
static double fit_for_r(const double *e, const double *y, int n, double ymean, double r, double *a, double *b)
{
    double xmean = 0.0;
    for (int i = 0; i < n; i++) {
        double x = pow(r, e[i]);
        if (!isfinite(x)) return INFINITY;
        xmean += x;
    }
    xmean /= n;
    double sxx = 0.0, sxy = 0.0;
    for (int i = 0; i < n; i++) {
        double dx = pow(r, e[i]) - xmean;
        sxx += dx * dx;
        sxy += dx * (y[i] - ymean);
    }
    /* All r^e equal (one distinct epoch, or all underflowed): only the mean is determined. */
    double slope = sxx > 0.0 ? sxy / sxx : 0.0;
    *a = ymean - slope * xmean;
    *b = -slope;
    double sse = 0.0;
    for (int i = 0; i < n; i++) {
        double d = y[i] - (*a + slope * pow(r, e[i]));
        sse += d * d;
    }
    return isfinite(sse) && isfinite(*a) && isfinite(*b) ? sse : INFINITY;
}

typedef struct {
    double sse, r, a, b;
} flt_best;

static void try_r(const double *e, const double *y, int n, double ymean, double r, flt_best *best)
{
    double a, b, sse = fit_for_r(e, y, n, ymean, r, &a, &b);
    if (sse < best->sse) *best = (flt_best){sse, r, a, b};
}

int gm_curve_fit(const double *epoch, const double *acc, int n, gm_curve *c)
{
    if (!epoch || !acc || !c || n < 3) return -1;
    double ymean = 0.0;
    int flat = 1;
    for (int i = 0; i < n; i++) {
        if (!isfinite(epoch[i]) || !isfinite(acc[i])) return -1;
        ymean += acc[i];
        flat &= acc[i] == acc[0];
    }
    if (flat) { /* every r fits equally well: report the flat curve exactly */
        *c = (gm_curve){.a = acc[0], .b = 0.0, .r = 0.5, .rmse = 0.0};
        return 0;
    }
    ymean /= n;

    flt_best best = {INFINITY, 0.5, 0.0, 0.0};
    for (int k = 1; k <= 99; k++) try_r(epoch, acc, n, ymean, k / 100.0, &best);
    if (!isfinite(best.sse)) return -1;
    /* Refine: search +-h around the best at step h/10, then shrink h tenfold. */
    for (double h = 0.01; h > 1e-12; h /= 10.0) {
        double lo = fmax(best.r - h, FLT_R_MIN), hi = fmin(best.r + h, FLT_R_MAX);
        for (int k = 0; k <= 20; k++) try_r(epoch, acc, n, ymean, lo + (hi - lo) * k / 20.0, &best);
    }
    *c = (gm_curve){.a = best.a, .b = best.b, .r = best.r, .rmse = sqrt(best.sse / n)};
    return 0;
}

double gm_curve_at(const gm_curve *c, double epoch)
{
    if (c->b == 0.0) return c->a; /* avoids 0 * inf for epoch = -inf */
    return c->a - c->b * pow(c->r, epoch);
}

int gm_curve_should_abort(const double *epoch, const double *acc, int n, double max_epoch, double target,
                          double tolerance)
{
    if (n < 3 || isnan(max_epoch) || isnan(target) || isnan(tolerance)) return 0;
    gm_curve c;
    if (gm_curve_fit(epoch, acc, n, &c) != 0) return 0;
    int last = 0;
    for (int i = 1; i < n; i++)
        if (epoch[i] >= epoch[last]) last = i;
    if (acc[last] >= target) return 0; /* already there: extrapolation cannot overrule an observation */
    double predicted = gm_curve_at(&c, max_epoch);
    if (isnan(predicted)) return 0;
    return predicted + tolerance < target;
}

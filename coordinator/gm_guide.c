#include "gm_guide.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "gm_stitch.h"

enum { CHUNK = 32 };

struct gm_guide {
    gm_guide_opts o;
    int nmodels;
    int first[GM_FG_MAX_MODELS + 1]; /* block (m, l) has index first[m] + l; first[nmodels] blocks in all */
    /*
     * cost[src * nblocks + dst]: the residual of mapping src's output (src = 0:
     * the input, 1 + k: block k) to block dst's training input; NAN: not priced.
     */
    double *cost;
    int npairs;
    double median;
};

void gm_guide_free(gm_guide *gd)
{
    if (!gd) return;
    free(gd->cost);
    free(gd);
}

int gm_guide_npairs(const gm_guide *gd) { return gd->npairs; }
double gm_guide_median(const gm_guide *gd) { return gd->median; }

static int shape_eq(gm_shape a, gm_shape b) { return a.c == b.c && a.h == b.h && a.w == b.w; }

/* One pair's sums: the source map (0: the input, 1 + k: block k's output) and the block it would feed. */
typedef struct {
    int src, dst;
    gm_stitch_acc *acc;
} pair;

typedef struct {
    const gm_mfile *const *models;
    gm_net *net[GM_FG_MAX_MODELS];
    float *host[GM_FG_MAX_MODELS]; /* a chunk's activations of every block of model m, in block order */
    size_t per[GM_FG_MAX_MODELS];  /* floats per sample of model m's blocks */
    size_t *off;                   /* per block: its offset in host[model] (floats per sample) */
    gm_shape *shape;               /* per block: its output shape */
    int *model, *layer;            /* per block: where it is */
} probe_state;

/* Output shape of map src (0 input, 1 + k block k) and a pointer to it in the chunk (sample s). */
static const float *map_of(const gm_guide *gd, const probe_state *p, const float *x, int s, int src, gm_shape in,
                           gm_shape *shape)
{
    (void)gd;
    if (src == 0) {
        *shape = in;
        return x + (size_t)s * gm_shape_numel(in);
    }
    const int k = src - 1, m = p->model[k];
    *shape = p->shape[k];
    return p->host[m] + (size_t)s * p->per[m] + p->off[k];
}

/* The map block dst was trained on: its model's previous block's output, or the input. */
static int training_input(const gm_guide *gd, const probe_state *p, int dst)
{
    return p->layer[dst] == 0 ? 0 : 1 + gd->first[p->model[dst]] + p->layer[dst] - 1;
}

static gm_status plan_pairs(gm_guide *gd, probe_state *p, gm_shape in, pair **out, int *npairs, gm_error *err)
{
    const int nb = gd->first[gd->nmodels];
    int cap = 0, n = 0;
    pair *pairs = NULL;
    gm_status st = GM_OK;
    for (int dst = 0; st == GM_OK && dst < nb; dst++) {
        const int own = training_input(gd, p, dst);
        gm_shape want = own == 0 ? in : p->shape[own - 1];
        for (int src = 0; st == GM_OK && src <= nb; src++) {
            gm_shape have = src == 0 ? in : p->shape[src - 1];
            if (src == own || src == 1 + dst || !shape_eq(have, want)) continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 64;
                pair *q = realloc(pairs, sizeof *pairs * (size_t)cap);
                if (!q) st = gm_error_set(err, GM_ENOMEM, "guide: out of memory");
                else pairs = q;
            }
            if (st == GM_OK) {
                pairs[n] = (pair){src, dst, NULL};
                st = gm_stitch_acc_create(&pairs[n].acc, have.c, want.c, err);
                n += st == GM_OK;
            }
        }
    }
    *out = pairs;
    *npairs = n;
    return st;
}

/* Runs every model over one chunk and copies each block's output to the host. */
static gm_status forward_chunk(gm_guide *gd, probe_state *p, const float *x, int b, gm_error *err)
{
    gm_status st = GM_OK;
    for (int m = 0; st == GM_OK && m < gd->nmodels; m++) {
        gm_net *net = p->net[m];
        st = gm_net_forward(net, x, b, 0, err);
        gm_backend *be = gm_net_backend(net);
        for (int q = 0; st == GM_OK && q < p->models[m]->nblocks; q++) {
            const int k = gd->first[m] + q;
            const size_t numel = gm_shape_numel(p->shape[k]);
            /* sample-major in the host copy: sample s's blocks one after the other */
            const float *act = gm_net_activation(net, q, -1);
            for (int s = 0; s < b; s++)
                be->to_host(be, p->host[m] + (size_t)s * p->per[m] + p->off[k], act + (size_t)s * numel,
                            sizeof(float) * numel);
        }
    }
    return st;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static gm_status measure(gm_guide *gd, probe_state *p, const float *probe, long nprobe, gm_shape in, gm_error *err)
{
    pair *pairs = NULL;
    int np = 0;
    gm_status st = plan_pairs(gd, p, in, &pairs, &np, err);
    const size_t numel = gm_shape_numel(in);
    for (long i = 0; st == GM_OK && i < nprobe; i += CHUNK) {
        const int b = (int)(nprobe - i < CHUNK ? nprobe - i : CHUNK);
        const float *x = probe + (size_t)i * numel;
        st = forward_chunk(gd, p, x, b, err);
        for (int k = 0; st == GM_OK && k < np; k++)
            for (int s = 0; s < b; s++) {
                gm_shape sa, sb;
                const float *xa = map_of(gd, p, x, s, pairs[k].src, in, &sa);
                const float *xb = map_of(gd, p, x, s, training_input(gd, p, pairs[k].dst), in, &sb);
                gm_stitch_acc_add(pairs[k].acc, xa, xb, 1, (size_t)sa.h * sa.w);
            }
    }
    const int nb = gd->first[gd->nmodels];
    double *sorted = np ? malloc(sizeof(double) * (size_t)np) : NULL;
    for (int k = 0; st == GM_OK && k < np; k++) {
        gm_stitch_fit fit;
        st = gm_stitch_solve(pairs[k].acc, 1e-4, &fit, err);
        if (st != GM_OK) break;
        gd->cost[(size_t)pairs[k].src * nb + pairs[k].dst] = fit.residual;
        if (sorted) sorted[gd->npairs++] = fit.residual;
        gm_stitch_fit_free(&fit);
    }
    if (sorted && gd->npairs) {
        qsort(sorted, (size_t)gd->npairs, sizeof *sorted, cmp_double);
        gd->median = sorted[gd->npairs / 2];
    }
    free(sorted);
    for (int k = 0; k < np; k++) gm_stitch_acc_free(pairs[k].acc);
    free(pairs);
    return st;
}

static gm_status probe_open(gm_guide *gd, probe_state *p, gm_backend *be, gm_error *err)
{
    const int nb = gd->first[gd->nmodels];
    p->off = calloc((size_t)nb, sizeof *p->off);
    p->shape = calloc((size_t)nb, sizeof *p->shape);
    p->model = calloc((size_t)nb, sizeof *p->model);
    p->layer = calloc((size_t)nb, sizeof *p->layer);
    if (!p->off || !p->shape || !p->model || !p->layer) return gm_error_set(err, GM_ENOMEM, "guide: out of memory");
    gm_status st = GM_OK;
    for (int m = 0; st == GM_OK && m < gd->nmodels; m++) {
        gm_net_desc d = gm_mfile_desc(p->models[m]);
        st = gm_net_create(&p->net[m], be, &d, CHUNK, 1, err);
        if (st == GM_OK) st = gm_mfile_to_net(p->models[m], p->net[m], err);
        size_t per = 0;
        for (int q = 0; st == GM_OK && q < p->models[m]->nblocks; q++) {
            const int k = gd->first[m] + q;
            p->model[k] = m;
            p->layer[k] = q;
            p->shape[k] = gm_net_activation_shape(p->net[m], q, -1);
            p->off[k] = per;
            per += gm_shape_numel(p->shape[k]);
        }
        p->per[m] = per;
        if (st == GM_OK && !(p->host[m] = malloc(sizeof(float) * per * CHUNK)))
            st = gm_error_set(err, GM_ENOMEM, "guide: out of memory for the probe's activations");
    }
    return st;
}

static void probe_close(gm_guide *gd, probe_state *p)
{
    for (int m = 0; m < gd->nmodels; m++) {
        gm_net_free(p->net[m]);
        free(p->host[m]);
    }
    free(p->off);
    free(p->shape);
    free(p->model);
    free(p->layer);
}

gm_status gm_guide_create(gm_guide **out, const gm_mfile *const *models, int n, const float *probe, long nprobe,
                          gm_backend *be, const gm_guide_opts *o, gm_error *err)
{
    *out = NULL;
    if (n < 1 || n > GM_FG_MAX_MODELS || nprobe < 1)
        return gm_error_set(err, GM_EINVAL, "guide: %d models and %ld probe samples", n, nprobe);
    gm_guide *gd = calloc(1, sizeof *gd);
    if (!gd) return gm_error_set(err, GM_ENOMEM, "guide: out of memory");
    gd->o = *o;
    gd->nmodels = n;
    for (int m = 0; m < n; m++) gd->first[m + 1] = gd->first[m] + models[m]->nblocks;
    const int nb = gd->first[n];
    gd->cost = malloc(sizeof(double) * (size_t)(nb + 1) * nb);
    gd->median = 1.0;
    gm_status st = gd->cost ? GM_OK : gm_error_set(err, GM_ENOMEM, "guide: out of memory");
    for (size_t k = 0; st == GM_OK && k < (size_t)(nb + 1) * nb; k++) gd->cost[k] = NAN;
    probe_state p = {.models = models};
    if (st == GM_OK) st = probe_open(gd, &p, be, err);
    if (st == GM_OK) st = measure(gd, &p, probe, nprobe, models[0]->input, err);
    probe_close(gd, &p);
    if (st != GM_OK) {
        gm_guide_free(gd);
        return st;
    }
    *out = gd;
    return GM_OK;
}

/* ---- proposals -------------------------------------------------------------------- */

/* Index of the original block node i stands for (-1: an adapter). */
static int block_of(const gm_guide *gd, const gm_fgraph *g, int i)
{
    const gm_fnode *nd = &g->nodes[i];
    return nd->model < 0 || nd->model >= gd->nmodels ? -1 : gd->first[nd->model] + nd->layer;
}

double gm_guide_cost(const gm_guide *gd, const gm_fgraph *g, gm_merge m)
{
    const int p = g->nodes[m.a].parent, dst = block_of(gd, g, m.b);
    const int src = p < 0 ? 0 : 1 + block_of(gd, g, p);
    if (m.relaxed || dst < 0 || src < 0 || (p >= 0 && src == 0)) return gd->median;
    const double c = gd->cost[(size_t)src * gd->first[gd->nmodels] + dst];
    if (!isnan(c)) return c;
    /* the block's own training input (a merge that undoes a skip): nothing to reconcile */
    const gm_fnode *nb = &g->nodes[m.b];
    if ((nb->layer == 0 && src == 0) || (nb->layer > 0 && src == 1 + dst - 1)) return 0.0;
    return gd->median;
}

/* FLOPs of the first nnodes of g after merge m (g is not changed); 0 if the merge fails. */
static double flops_after(const gm_fgraph *g, gm_merge m, gm_fgraph *scratch)
{
    memcpy(scratch, g, offsetof(gm_fgraph, nodes) + sizeof g->nodes[0] * (size_t)g->nnodes);
    return gm_mutate_apply(scratch, m, NULL) == GM_OK ? (double)gm_fgraph_flops(scratch) : -1.0;
}

/* Draws one merge of the list with the guide's probabilities. */
static gm_status draw(const gm_guide *gd, const gm_fgraph *g, const gm_merge *list, int n, gm_rng *rng,
                      gm_merge *out, gm_error *err)
{
    double *w = malloc(sizeof(double) * (size_t)n);
    gm_fgraph *scratch = malloc(sizeof *scratch);
    if (!w || !scratch) {
        free(w);
        free(scratch);
        return gm_error_set(err, GM_ENOMEM, "guide: out of memory");
    }
    const double before = (double)gm_fgraph_flops(g);
    double sum = 0.0;
    for (int k = 0; k < n; k++) {
        const double after = flops_after(g, list[k], scratch);
        const double gain = after < 0.0 || before <= 0.0 ? 0.0 : (before - after) / before;
        w[k] = (gain > 0.0 ? gain : 0.0) * exp(-gm_guide_cost(gd, g, list[k]) / gd->o.cost_scale);
        sum += w[k];
    }
    const double explore = sum > 0.0 ? gd->o.explore : 1.0;
    double u = gm_rng_uniform(rng), acc = 0.0;
    int pick = n - 1;
    for (int k = 0; k < n; k++) {
        acc += explore / n + (1.0 - explore) * (sum > 0.0 ? w[k] / sum : 0.0);
        if (u < acc) {
            pick = k;
            break;
        }
    }
    *out = list[pick];
    free(w);
    free(scratch);
    return GM_OK;
}

gm_status gm_guide_mutate(const gm_guide *gd, gm_fgraph *g, gm_rng *rng, int n, int relaxed_below, gm_error *err)
{
    gm_status st = GM_OK;
    for (int step = 0; st == GM_OK && step < n; step++) {
        const int ns = gm_mutate_list(g, 0, NULL, 0);
        const int relaxed = relaxed_below > 0 && ns < relaxed_below;
        const int total = gm_mutate_list(g, relaxed, NULL, 0);
        if (total == 0)
            return gm_error_set(err, GM_EINVAL, "guided merges: step %d of %d finds no merge (%d nodes)", step + 1, n,
                                g->nnodes);
        gm_merge *list = malloc(sizeof *list * (size_t)total), m;
        if (!list) return gm_error_set(err, GM_ENOMEM, "guide: out of memory");
        gm_mutate_list(g, relaxed, list, total);
        st = draw(gd, g, list, total, rng, &m, err);
        free(list);
        if (st == GM_OK) st = gm_mutate_apply(g, m, err);
    }
    return st;
}

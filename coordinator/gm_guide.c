#include "gm_guide.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "gm_stitch.h"
#include "gm_train.h"

enum { CHUNK = 32 };
/* The probe's activations kept for pricing: 512 MiB at the most (fewer samples for bigger models). */
#define CACHE_BYTES ((size_t)512 << 20)

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
    long nsamples;
};

void gm_guide_free(gm_guide *gd)
{
    if (!gd) return;
    free(gd->cost);
    free(gd);
}

int gm_guide_npairs(const gm_guide *gd) { return gd->npairs; }
long gm_guide_nsamples(const gm_guide *gd) { return gd->nsamples; }
double gm_guide_median(const gm_guide *gd) { return gd->median; }

static int shape_eq(gm_shape a, gm_shape b) { return a.c == b.c && a.h == b.h && a.w == b.w; }

/* One pair's sums: the source map (0: the input, 1 + k: block k's output) and the block it would feed. */
typedef struct {
    int src, dst;
    gm_stitch_acc *acc;
} pair;

typedef struct {
    const gm_mfile *const *models;
    gm_backend *be;
    long n;                        /* probe samples cached (evenly strided over the probe) */
    unsigned char *own;            /* n x nmodels: sample s is from model m's dataset */
    gm_net *net[GM_FG_MAX_MODELS];
    float *host[GM_FG_MAX_MODELS]; /* every probe sample's activations of every block of model m */
    size_t per[GM_FG_MAX_MODELS];  /* floats per sample of model m's blocks */
    size_t *off;                   /* per block: its offset in host[model] (floats per sample) */
    gm_shape *shape;               /* per block: its output shape */
    int *model, *layer;            /* per block: where it is */
} probe_state;

/* Output shape of map src (0 input, 1 + k block k) and a pointer to it for probe sample s (x: the probe). */
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

/* Runs every model over probe samples [first, first + b) and keeps each block's output on the host. */
static gm_status forward_chunk(gm_guide *gd, probe_state *p, const float *x, long first, int b, gm_error *err)
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
                be->to_host(be, p->host[m] + (size_t)(first + s) * p->per[m] + p->off[k], act + (size_t)s * numel,
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

/*
 * What a merge does to a task before any fine-tuning: block dst's model from
 * dst on (a suffix net), with the stitch folded into dst, run on the source
 * map; the share of probe samples whose top class differs from the model's
 * own. A block the stitch cannot enter (a max pool) runs on the map as is.
 */
typedef struct {
    gm_net *net;
    gm_block *blocks;          /* the model's blocks from dst on, dst's shortcut projected when at >= 0 */
    int at;                    /* the projection's op index in blocks[0], or -1 */
    float *par, *buf, *x;      /* the suffix's weights (host), a chunk of source maps */
    size_t npar, nbuf;
} suffix;

static gm_status suffix_open(gm_guide *gd, probe_state *p, int dst, suffix *sx, gm_error *err)
{
    const gm_mfile *m = p->models[p->model[dst]];
    const int l = p->layer[dst];
    size_t po, bo;
    gm_mfile_block_offsets(m, l, &po, &bo);
    const gm_shape in = l == 0 ? m->input : p->shape[dst - 1];
    sx->at = -1;
    if (!(sx->blocks = malloc(sizeof(gm_block) * (size_t)(m->nblocks - l))))
        return gm_error_set(err, GM_ENOMEM, "guide: out of memory");
    memcpy(sx->blocks, m->blocks + l, sizeof(gm_block) * (size_t)(m->nblocks - l));
    if (gd->o.project_shortcuts) /* a block without an identity shortcut stays as it is (at -1) */
        (void)gm_block_project_shortcut(&m->blocks[l], in.c, &sx->blocks[0], &sx->at, NULL);
    gm_net_desc d = {.input = in, .nblocks = m->nblocks - l, .blocks = sx->blocks, .parent = NULL};
    gm_status st = gm_net_create(&sx->net, p->be, &d, CHUNK, 1, err);
    sx->npar = m->nparams - po + gm_block_nparams(&sx->blocks[0]) - gm_block_nparams(&m->blocks[l]);
    sx->nbuf = m->nbuffers - bo;
    sx->par = malloc(sizeof(float) * (sx->npar + 1));
    sx->buf = malloc(sizeof(float) * (sx->nbuf + 1));
    sx->x = malloc(sizeof(float) * CHUNK * gm_shape_numel(d.input));
    if (st == GM_OK && (!sx->par || !sx->buf || !sx->x)) st = gm_error_set(err, GM_ENOMEM, "guide: out of memory");
    return st;
}

static void suffix_close(suffix *sx)
{
    gm_net_free(sx->net);
    free(sx->blocks);
    free(sx->par);
    free(sx->buf);
    free(sx->x);
}

static gm_status disagreement(gm_guide *gd, probe_state *p, const float *probe, const pair *pr,
                              const gm_stitch_fit *fit, suffix *sx, double *out, gm_error *err)
{
    const gm_mfile *m = p->models[p->model[pr->dst]];
    const int l = p->layer[pr->dst];
    size_t po, bo;
    gm_mfile_block_offsets(m, l, &po, &bo);
    if (sx->at >= 0) { /* the projected block's weights (identity shortcut), then the rest as they are */
        const size_t own = gm_block_nparams(&m->blocks[l]), proj = gm_block_nparams(&sx->blocks[0]);
        gm_block_project_params(&sx->blocks[0], sx->at, m->params + po, sx->par);
        memcpy(sx->par + proj, m->params + po + own, sizeof(float) * (sx->npar - proj));
    } else {
        memcpy(sx->par, m->params + po, sizeof(float) * sx->npar);
    }
    memcpy(sx->buf, m->buffers + bo, sizeof(float) * sx->nbuf);
    const gm_shape in = l == 0 ? m->input : p->shape[pr->dst - 1];
    int dropped;
    if (gm_stitch_foldable(&sx->blocks[0]) != GM_STITCH_NONE && fit->ca == in.c && fit->cb == in.c)
        (void)gm_stitch_fold(&sx->blocks[0], in, sx->par, sx->buf, fit, &dropped, NULL);
    gm_backend *be = p->be;
    be->to_device(be, gm_net_params(sx->net), sx->par, sizeof(float) * sx->npar);
    be->to_device(be, gm_net_buffers(sx->net), sx->buf, sizeof(float) * sx->nbuf);
    const int head = gd->first[p->model[pr->dst]] + m->nblocks - 1, classes = p->shape[head].c;
    const size_t numel = gm_shape_numel(in);
    long differ = 0, counted = 0;
    const int mdst = p->model[pr->dst];
    gm_status st = GM_OK;
    float *y = malloc(sizeof(float) * CHUNK * (size_t)classes);
    if (!y) return gm_error_set(err, GM_ENOMEM, "guide: out of memory");
    for (long i = 0; st == GM_OK && i < p->n; i += CHUNK) {
        const int b = (int)(p->n - i < CHUNK ? p->n - i : CHUNK);
        for (int s = 0; s < b; s++) {
            gm_shape sa;
            memcpy(sx->x + (size_t)s * numel, map_of(gd, p, probe, i + s, pr->src, p->models[0]->input, &sa),
                   sizeof(float) * numel);
        }
        st = gm_net_forward(sx->net, sx->x, b, 0, err);
        if (st != GM_OK) break;
        be->to_host(be, y, gm_net_output(sx->net, 0), sizeof(float) * (size_t)b * classes);
        for (int s = 0; s < b; s++) {
            gm_shape sh;
            const float *own = map_of(gd, p, probe, i + s, 1 + head, p->models[0]->input, &sh);
            if (!p->own[(size_t)(i + s) * gd->nmodels + mdst]) continue;
            differ += gm_top1(y + (size_t)s * classes, classes) != gm_top1(own, classes);
            counted++;
        }
    }
    free(y);
    *out = (double)differ / (double)(counted ? counted : 1);
    return st;
}

static gm_status measure(gm_guide *gd, probe_state *p, const float *probe, gm_error *err)
{
    pair *pairs = NULL;
    int np = 0;
    const gm_shape in = p->models[0]->input;
    gm_status st = plan_pairs(gd, p, in, &pairs, &np, err);
    for (long i = 0; st == GM_OK && i < p->n; i += CHUNK)
        st = forward_chunk(gd, p, probe + (size_t)i * gm_shape_numel(in), i, (int)(p->n - i < CHUNK ? p->n - i : CHUNK),
                           err);
    for (int k = 0; st == GM_OK && k < np; k++)
        for (long s = 0; s < p->n; s++) {
            gm_shape sa, sb;
            const float *xa = map_of(gd, p, probe, s, pairs[k].src, in, &sa);
            const float *xb = map_of(gd, p, probe, s, training_input(gd, p, pairs[k].dst), in, &sb);
            gm_stitch_acc_add(pairs[k].acc, xa, xb, 1, (size_t)sa.h * sa.w);
        }
    const int nb = gd->first[gd->nmodels];
    double *sorted = np ? malloc(sizeof(double) * (size_t)np) : NULL;
    suffix sx = {0};
    int open_dst = -1;
    for (int k = 0; st == GM_OK && k < np; k++) { /* pairs come grouped by dst: one suffix net each */
        if (pairs[k].dst != open_dst) {
            suffix_close(&sx);
            memset(&sx, 0, sizeof sx);
            open_dst = pairs[k].dst;
            st = suffix_open(gd, p, open_dst, &sx, err);
        }
        gm_stitch_fit fit;
        if (st == GM_OK) st = gm_stitch_solve(pairs[k].acc, 1e-4, &fit, err);
        if (st != GM_OK) break;
        double d = 0.0;
        st = disagreement(gd, p, probe, &pairs[k], &fit, &sx, &d, err);
        /* the residual breaks ties between merges that change no top class on the probe */
        const double cost = d + 0.01 * fit.residual;
        gd->cost[(size_t)pairs[k].src * nb + pairs[k].dst] = cost;
        if (sorted) sorted[gd->npairs++] = cost;
        gm_stitch_fit_free(&fit);
    }
    suffix_close(&sx);
    if (sorted && gd->npairs) {
        qsort(sorted, (size_t)gd->npairs, sizeof *sorted, cmp_double);
        gd->median = sorted[gd->npairs / 2];
    }
    free(sorted);
    for (int k = 0; k < np; k++) gm_stitch_acc_free(pairs[k].acc);
    free(pairs);
    return st;
}

static gm_status probe_open(gm_guide *gd, probe_state *p, gm_backend *be, long nprobe, gm_error *err)
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
    }
    size_t all = 0;
    for (int m = 0; m < gd->nmodels; m++) all += p->per[m];
    p->n = nprobe;
    if (all > 0 && (size_t)p->n * all * sizeof(float) > CACHE_BYTES) p->n = (long)(CACHE_BYTES / (all * sizeof(float)));
    if (p->n < 1) p->n = 1;
    for (int m = 0; st == GM_OK && m < gd->nmodels; m++) {
        if (!(p->host[m] = malloc(sizeof(float) * p->per[m] * (size_t)p->n)))
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

gm_status gm_guide_create(gm_guide **out, const gm_mfile *const *models, int n, const float *probe,
                          const unsigned char *own, long nprobe, gm_backend *be, const gm_guide_opts *o,
                          gm_error *err)
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
    probe_state p = {.models = models, .be = be};
    if (st == GM_OK) st = probe_open(gd, &p, be, nprobe, err);
    /* fewer samples than the probe: an even stride keeps every dataset of it */
    const size_t numel = gm_shape_numel(models[0]->input);
    float *sel = st == GM_OK ? malloc(sizeof(float) * numel * (size_t)p.n) : NULL;
    if (st == GM_OK && !sel) st = gm_error_set(err, GM_ENOMEM, "guide: out of memory");
    p.own = st == GM_OK ? malloc((size_t)p.n * (size_t)n) : NULL;
    if (st == GM_OK && !p.own) st = gm_error_set(err, GM_ENOMEM, "guide: out of memory");
    for (long i = 0; st == GM_OK && i < p.n; i++) {
        const long row = i * nprobe / p.n;
        memcpy(sel + (size_t)i * numel, probe + (size_t)row * numel, sizeof(float) * numel);
        for (int m = 0; m < n; m++) p.own[(size_t)i * n + m] = own ? own[(size_t)row * n + m] : 1;
    }
    gd->nsamples = p.n;
    if (st == GM_OK) st = measure(gd, &p, sel, err);
    free(sel);
    free(p.own);
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

gm_status gm_guide_mutate(const gm_guide *gd, gm_fgraph *g, gm_rng *rng, int n, int relaxed_below, double *predicted,
                          gm_error *err)
{
    gm_status st = GM_OK;
    if (predicted) *predicted = 0.0;
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
        if (st == GM_OK && predicted) *predicted += gm_guide_cost(gd, g, m);
        if (st == GM_OK) st = gm_mutate_apply(g, m, err);
    }
    return st;
}

/*
 * Warm start (gm_search_int.h): a sweep begins with what earlier sweeps over
 * the same models learned. Their checkpoints are read in full, checked against
 * this sweep's models and validation data, and then three things carry over:
 * the graphs they trained (never trained again), their failures (the dominance
 * filter, when this threshold is no looser than theirs) and, for a fresh sweep,
 * their held models that fit this threshold (elites, best, Pareto set).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_search_int.h"

/* One earlier model with weights: a row and where its weights are (borrowed from the loaded file). */
typedef struct {
    const gm_ckpt_cand *row;
    const gm_mfile *w;
} held;

/* Same models, tasks and validation data, or a refusal that names the first difference. */
static gm_status same_sweep(const gm_search *S, const gm_ckpt *w, const gm_search_config *old, const char *path,
                            gm_error *err)
{
    const gm_search_config *c = S->c;
    if (w->ntasks != c->nmodels)
        return gm_error_set(err, GM_EINVAL, "warm_start %s: a sweep over %d models, this one has %d", path, w->ntasks,
                            c->nmodels);
    for (int t = 0; t < c->nmodels; t++) {
        const char *task = S->o.models[t]->tasks[0].name;
        if (strcmp(w->tasks[t], task) != 0)
            return gm_error_set(err, GM_EINVAL, "warm_start %s: task %d is \"%s\" there, \"%s\" here", path, t,
                                w->tasks[t], task);
        if (strcmp(old->models[t], c->models[t]) != 0)
            return gm_error_set(err, GM_EINVAL, "warm_start %s: models[%d] is %s there, %s here", path, t, old->models[t],
                                c->models[t]);
        if (strcmp(old->data[t], c->data[t]) != 0)
            return gm_error_set(err, GM_EINVAL, "warm_start %s: data[%d] is \"%s\" there, \"%s\" here", path, t,
                                old->data[t], c->data[t]);
        /* The same file retrained, or other validation samples, shows here; older files do not say. */
        const double a = w->summary.orig_val[t], b = S->o.orig_val[t];
        if (isfinite(a) && fabs(a - b) > 1e-9)
            return gm_error_set(err, GM_EINVAL,
                                "warm_start %s: task %s's original model scored %.4f on validation there, %.4f here "
                                "(another model file or other validation samples: its drops would not compare)",
                                path, task, a, b);
    }
    if (old->val_samples != c->val_samples)
        return gm_error_set(err, GM_EINVAL, "warm_start %s: finetune.val_samples is %ld there, %ld here", path,
                            old->val_samples, c->val_samples);
    return GM_OK;
}

static gm_status remember(uint64_t **v, int *n, uint64_t x, gm_error *err)
{
    uint64_t *p = realloc(*v, sizeof *p * (size_t)(*n + 1));
    if (!p) return gm_error_set(err, GM_ENOMEM, "out of memory");
    *v = p;
    p[(*n)++] = x;
    return GM_OK;
}

/* Every graph w trained; its failures when this threshold is no looser than w's. */
static gm_status learn(gm_search *S, const gm_ckpt *w, double old_threshold, gm_error *err)
{
    const gm_search_config *c = S->c;
    gm_status st = GM_OK;
    for (int i = 0; st == GM_OK && i < w->ncand; i++) {
        const gm_ckpt_cand *r = &w->cand[i];
        if (r->status != GM_CAND_PASSED && r->status != GM_CAND_FAILED && r->status != GM_CAND_ABORTED) continue;
        st = gm_fgraph_decode(S->cand, r->enc, r->enc_len, S->o.models, c->nmodels, err);
        if (st == GM_OK) st = remember(&S->warm_loc, &S->nwarm_loc, r->location, err);
        if (st == GM_OK && r->status == GM_CAND_PASSED) st = remember(&S->warm_top, &S->nwarm_top, r->topology, err);
        if (st == GM_OK && r->status != GM_CAND_PASSED && c->threshold <= old_threshold) {
            gm_features f;
            gm_filter_features(S->cand, &f);
            if (gm_failures_add(&S->failures, &f) != 0) st = gm_error_set(err, GM_ENOMEM, "out of memory");
        }
    }
    return st;
}

/* Held models (elites, Pareto set, best: each once) whose every task fits this threshold. */
static int fitting(const gm_search *S, const gm_ckpt *w, held *out)
{
    int n = 0;
    const int total = w->nelites + w->npareto + (w->best_id >= 0);
    for (int k = 0; k < total; k++) {
        const int id = k < w->nelites ? w->elite_id[k] : k < w->nelites + w->npareto ? w->pareto_id[k - w->nelites]
                                                                                      : w->best_id;
        const gm_mfile *m = k < w->nelites ? &w->elite_w[k]
                            : k < w->nelites + w->npareto ? &w->pareto_w[k - w->nelites]
                                                           : &w->best;
        int dup = 0;
        for (int j = 0; j < n; j++) dup |= out[j].row->id == id;
        if (!dup && w->cand[id].worst_drop <= S->c->threshold) out[n++] = (held){&w->cand[id], m};
    }
    return n;
}

/* Fastest first (fewest MFLOPs in deterministic mode); a few dozen at most: insertion sort. */
static void faster_first(held *h, int n, int det)
{
    for (int i = 1; i < n; i++) {
        const held x = h[i];
        const double kx = det ? -x.row->mflops : x.row->speedup;
        int j = i;
        for (; j > 0 && (det ? -h[j - 1].row->mflops : h[j - 1].row->speedup) < kx; j--) h[j] = h[j - 1];
        h[j] = x;
    }
}

gm_status gm_search_warm(gm_search *S, int adopt, gm_error *err)
{
    const gm_search_config *c = S->c;
    gm_ckpt *w = calloc((size_t)c->nwarm, sizeof *w);
    held *h = NULL;
    int nh = 0, cap = 0;
    gm_status st = w ? GM_OK : gm_error_set(err, GM_ENOMEM, "out of memory");
    for (int k = 0; st == GM_OK && k < c->nwarm; k++) {
        gm_error e;
        if (gm_ckpt_load(c->warm_start[k], &w[k], &e) != GM_OK) {
            st = gm_error_set(err, e.code, "warm_start: %s", e.msg);
            break;
        }
        gm_search_config old;
        gm_search_defaults(&old);
        st = gm_search_config_parse(&old, w[k].config ? w[k].config : "", c->warm_start[k], err);
        if (st == GM_OK) st = same_sweep(S, &w[k], &old, c->warm_start[k], err);
        if (st == GM_OK) st = learn(S, &w[k], old.threshold, err);
        const int more = w[k].nelites + w[k].npareto + 1;
        if (st == GM_OK && nh + more > cap) {
            held *p = realloc(h, sizeof *h * (size_t)(cap = nh + more));
            if (!p) st = gm_error_set(err, GM_ENOMEM, "out of memory");
            else h = p;
        }
        if (st == GM_OK) nh += fitting(S, &w[k], h + nh);
    }
    if (st == GM_OK && adopt) {
        /* Fastest first; the same graph from two files once. */
        faster_first(h, nh, c->deterministic);
        int taken = 0;
        for (int i = 0; st == GM_OK && i < nh && taken < c->max_elites; i++) {
            int dup = 0;
            for (int j = 0; j < S->nrows; j++) dup |= S->rows[j].location == h[i].row->location;
            if (dup) continue;
            gm_mfile m;
            st = gm_mfile_copy(&m, h[i].w, err);
            if (st == GM_OK) st = gm_search_adopt(S, h[i].row, &m, err);
            gm_mfile_free(&m);
            taken++;
        }
    }
    for (int k = 0; w && k < c->nwarm; k++) gm_ckpt_free(&w[k]);
    free(w);
    free(h);
    return st;
}

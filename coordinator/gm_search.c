#define _POSIX_C_SOURCE 200809L
/*
 * The search's state and policy: proposing (the annealing, mutations, hashes,
 * the dominance filter), recording what workers report (best, elites,
 * failures), restoring and saving the checkpoint. The end of a sweep is
 * gm_search_final.c; the files for people are gm_results.
 */
#include "gm_search.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_clock.h"
#include "gm_guide.h"
#include "gm_mutate.h"
#include "gm_search_int.h"
#include "gm_trunk.h"
#include "gm_tb.h"

/* ---- small helpers --------------------------------------------------------------- */

static gm_ckpt_cand *new_row(gm_search *S, gm_error *err)
{
    if (S->nrows == S->cap_rows) {
        int cap = S->cap_rows ? 2 * S->cap_rows : 256;
        gm_ckpt_cand *r = realloc(S->rows, sizeof *r * (size_t)cap);
        if (!r) {
            gm_error_set(err, GM_ENOMEM, "out of memory for the candidates table");
            return NULL;
        }
        S->rows = r;
        S->cap_rows = cap;
    }
    gm_ckpt_cand *r = &S->rows[S->nrows];
    memset(r, 0, sizeof *r);
    r->id = S->nrows++;
    r->worker = -1;
    r->latency_ms = r->base_latency_ms = r->speedup = r->worst_drop = r->drop0 = r->predicted = NAN;
    for (int t = 0; t < GM_MF_MAX_TASKS; t++) r->val[t] = NAN;
    return r;
}

/* Higher is faster: the speed-up, or fewer MFLOPs in deterministic mode (where timing must not decide). */
static double speed_key(const gm_search *S, const gm_ckpt_cand *r)
{
    return S->c->deterministic ? -r->mflops : r->speedup;
}

/* Seen: any row that was or is being fine-tuned with this location. Passed: a passed row with this topology. */
static int known(const gm_search *S, uint64_t loc, uint64_t top)
{
    for (int i = 0; i < S->nrows; i++) {
        const gm_ckpt_cand *r = &S->rows[i];
        if (r->status == GM_CAND_FILTERED || r->status == GM_CAND_DUPLICATE) continue;
        if (r->location == loc || (r->status == GM_CAND_PASSED && r->topology == top)) return 1;
    }
    for (int i = 0; i < S->nwarm_loc; i++)
        if (S->warm_loc[i] == loc) return 1;
    for (int i = 0; i < S->nwarm_top; i++)
        if (S->warm_top[i] == top) return 1;
    return 0;
}

static elite *find_elite(gm_search *S, int id)
{
    for (int k = 0; k < S->nelites; k++)
        if (S->elites[k].id == id) return &S->elites[k];
    return NULL;
}

/* Takes w. The graph's weight sources are rewritten to point at the elite itself. */
static gm_status add_elite(gm_search *S, const gm_fgraph *g, gm_mfile *w, int id, gm_error *err)
{
    elite *e;
    if (S->nelites < S->c->max_elites) e = &S->elites[S->nelites++];
    else { /* first in, first out */
        e = &S->elites[S->oldest];
        S->oldest = (S->oldest + 1) % S->c->max_elites;
        gm_mfile_free(&e->w);
        free(e->g);
    }
    e->g = malloc(sizeof *e->g);
    if (!e->g) return gm_error_set(err, GM_ENOMEM, "out of memory");
    *e->g = *g;
    for (int i = 0; i < e->g->nnodes; i++) e->g->nodes[i].w = (gm_wref){id, i};
    e->id = id;
    e->w = *w;
    memset(w, 0, sizeof *w);
    return GM_OK;
}

/*
 * The live view (gm_tb.h): per candidate (step: its id) its status (gm_cand_status's
 * value), speed-up, worst drop and drop before fine-tuning in points, and its
 * learning curve (step: epoch); for the sweep (step: candidates finished) the
 * best speed-up, the pass rate among fine-tuned candidates, candidates per hour
 * and the worker groups busy on average (fine-tune seconds over elapsed seconds).
 */
static gm_status live_view(gm_search *S, const gm_ckpt_cand *r, gm_error *err)
{
    gm_tb *w = S->tb;
    const int nt = S->c->nmodels, tuned_row = r->status == GM_CAND_PASSED || r->status == GM_CAND_FAILED ||
                                                 r->status == GM_CAND_ABORTED;
    gm_status st = gm_tb_scalar(w, "candidate/status", r->id, 0, (double)r->status, err);
    if (st == GM_OK && tuned_row && isfinite(r->speedup)) st = gm_tb_scalar(w, "candidate/speedup", r->id, 0, r->speedup, err);
    if (st == GM_OK && tuned_row && isfinite(r->worst_drop))
        st = gm_tb_scalar(w, "candidate/worst_drop_points", r->id, 0, 100 * r->worst_drop, err);
    if (st == GM_OK && tuned_row && isfinite(r->drop0))
        st = gm_tb_scalar(w, "candidate/drop0_points", r->id, 0, 100 * r->drop0, err);
    for (int k = 0; st == GM_OK && k < r->ncurve; k++) {
        const double *q = r->curve + (size_t)k * GM_CKPT_CURVE_COLS(nt);
        double worst = -INFINITY;
        for (int t = 0; t < nt; t++) worst = fmax(worst, S->o.orig_val[t] - q[2 + t]);
        char tag[64];
        snprintf(tag, sizeof tag, "curve/c%d/worst_drop_points", r->id);
        st = gm_tb_scalar(w, tag, (int64_t)q[0], 0, 100 * worst, err);
        if (st == GM_OK && isfinite(q[1])) {
            snprintf(tag, sizeof tag, "curve/c%d/loss", r->id);
            st = gm_tb_scalar(w, tag, (int64_t)q[0], 0, q[1], err);
        }
    }
    int tuned = 0, passed = 0;
    double busy = 0;
    for (int i = 0; i < S->nrows; i++) {
        const gm_ckpt_cand *x = &S->rows[i];
        if (x->status != GM_CAND_PASSED && x->status != GM_CAND_FAILED && x->status != GM_CAND_ABORTED) continue;
        tuned++;
        passed += x->status == GM_CAND_PASSED;
        busy += isfinite(x->seconds) ? x->seconds : 0;
    }
    const double el = gm_search_elapsed(S);
    if (st == GM_OK && S->best_id >= 0)
        st = gm_tb_scalar(w, "search/best_speedup", S->done, 0, S->rows[S->best_id].speedup, err);
    if (st == GM_OK && tuned > 0) st = gm_tb_scalar(w, "search/pass_rate", S->done, 0, (double)passed / tuned, err);
    if (st == GM_OK && el > 0) st = gm_tb_scalar(w, "search/candidates_per_hour", S->done, 0, 3600.0 * S->done / el, err);
    if (st == GM_OK && el > 0) st = gm_tb_scalar(w, "search/groups_busy", S->done, 0, busy / el, err);
    return st;
}

static gm_status announce(gm_search *S, gm_ckpt_cand *r, const char *error, gm_error *err)
{
    S->done++;
    r->finished_s = gm_search_elapsed(S);
    if (S->results) gm_results_row(S->results, r);
    gm_status st = S->tb ? live_view(S, r, err) : GM_OK;
    if (!S->o.progress) return st;
    const int tuned = r->status == GM_CAND_PASSED || r->status == GM_CAND_FAILED || r->status == GM_CAND_ABORTED;
    gm_search_event e = {.id = r->id, .iteration = r->iteration, .source = r->source,
                         .status = gm_cand_status_name(r->status), .worker = r->worker, .nodes = r->nodes,
                         .epochs = r->epochs, .params = (size_t)r->params, .mflops = r->mflops,
                         .latency_ms = r->latency_ms, .worst_drop = r->worst_drop, .drop0 = r->drop0,
                         .predicted = r->predicted, .seconds = r->seconds,
                         .base_latency_ms = r->base_latency_ms, .speedup = r->speedup,
                         .val = tuned && !isnan(r->worst_drop) ? r->val : NULL, .error = error,
                         .best_speedup = S->best_id >= 0 ? S->rows[S->best_id].speedup : NAN, .done = S->done,
                         .iterations = S->c->iterations, .elapsed_s = gm_search_elapsed(S),
                         .budget_s = S->c->time_budget_s};
    S->o.progress(S->o.ctx, &e);
    return st;
}

static gm_status open_results(gm_search *S, gm_error *err)
{
    char task[GM_MF_MAX_TASKS][64];
    for (int t = 0; t < S->c->nmodels; t++) snprintf(task[t], sizeof task[t], "%s", S->o.models[t]->tasks[0].name);
    gm_status st = gm_results_open(&S->results, S->c->out, (const char (*)[64])task, S->c->nmodels, err);
    return st == GM_OK ? gm_tb_open(&S->tb, S->c->out, err) : st;
}

/* ---- open, restore, free ----------------------------------------------------------- */

void gm_search_free(gm_search *S)
{
    if (!S) return;
    for (int k = 0; k < S->nelites; k++) {
        gm_mfile_free(&S->elites[k].w);
        free(S->elites[k].g);
    }
    free(S->elites);
    for (int k = 0; k < S->npareto; k++) gm_mfile_free(&S->pareto[k].w);
    free(S->pareto);
    for (int i = 0; i < S->nrows; i++) {
        free(S->rows[i].enc);
        free(S->rows[i].curve);
    }
    free(S->rows);
    free(S->queue);
    gm_failures_free(&S->failures);
    gm_mfile_free(&S->best);
    free(S->orig);
    free(S->cand);
    gm_results_close(S->results);
    gm_tb_close(S->tb);
    free(S->warm_loc);
    free(S->warm_top);
    free(S);
}

static gm_status restore(gm_search *S, const gm_ckpt *ck, gm_error *err)
{
    const gm_search_config *c = S->c;
    if (ck->ntasks != c->nmodels) return gm_error_set(err, GM_EFORMAT, "checkpoint: %d tasks, the config has %d", ck->ntasks, c->nmodels);
    S->iteration = ck->iteration;
    S->T = ck->temperature;
    S->last_drop = ck->last_drop;
    S->elapsed0 = ck->elapsed_s;
    memcpy(S->rng.s, ck->rng, sizeof S->rng.s);
    gm_status st = GM_OK;
    for (int i = 0; st == GM_OK && i < ck->ncand; i++) {
        gm_ckpt_cand *r = new_row(S, err);
        if (!r) return GM_ENOMEM;
        *r = ck->cand[i];
        r->enc = malloc(sizeof(int32_t) * (size_t)(r->enc_len ? r->enc_len : 1));
        if (!r->enc) return gm_error_set(err, GM_ENOMEM, "out of memory");
        memcpy(r->enc, ck->cand[i].enc, sizeof(int32_t) * (size_t)r->enc_len);
        r->curve = NULL;
        if (r->ncurve > 0) {
            const size_t nv = (size_t)r->ncurve * GM_CKPT_CURVE_COLS(c->nmodels);
            if (!(r->curve = malloc(sizeof(double) * nv))) return gm_error_set(err, GM_ENOMEM, "out of memory");
            memcpy(r->curve, ck->cand[i].curve, sizeof(double) * nv);
        }
        if (r->status == GM_CAND_PENDING) S->queue[S->nqueue++] = r->id;
        else S->done++;
        if (r->status == GM_CAND_FAILED || r->status == GM_CAND_ABORTED) {
            st = gm_fgraph_decode(S->cand, r->enc, r->enc_len, S->o.models, c->nmodels, err);
            gm_features f;
            if (st == GM_OK) gm_filter_features(S->cand, &f);
            if (st == GM_OK && gm_failures_add(&S->failures, &f) != 0) st = gm_error_set(err, GM_ENOMEM, "out of memory");
        }
    }
    for (int k = 0; st == GM_OK && k < ck->nelites; k++) {
        const gm_ckpt_cand *r = &S->rows[ck->elite_id[k]];
        gm_mfile w;
        st = gm_fgraph_decode(S->cand, r->enc, r->enc_len, S->o.models, c->nmodels, err);
        if (st == GM_OK) st = gm_mfile_copy(&w, &ck->elite_w[k], err);
        if (st == GM_OK) st = add_elite(S, S->cand, &w, r->id, err);
    }
    if (st == GM_OK && ck->npareto > 0) {
        if (!(S->pareto = calloc((size_t)ck->npareto, sizeof *S->pareto)))
            return gm_error_set(err, GM_ENOMEM, "out of memory for the Pareto set");
        S->cap_pareto = ck->npareto;
    }
    for (int k = 0; st == GM_OK && k < ck->npareto; k++) { /* as saved: no member beats another */
        S->pareto[k].id = ck->pareto_id[k];
        st = gm_mfile_copy(&S->pareto[k].w, &ck->pareto_w[k], err);
        if (st == GM_OK) S->npareto = k + 1;
    }
    S->best_id = ck->best_id;
    if (st == GM_OK && ck->best_id >= 0) {
        const gm_ckpt_cand *b = &S->rows[ck->best_id];
        S->best_key = speed_key(S, b);
        st = gm_mfile_copy(&S->best, &ck->best, err);
    }
    return st;
}

gm_status gm_search_open(gm_search **out, const gm_search_opts *o, gm_error *err)
{
    const gm_search_config *c = o->config;
    gm_search *S = calloc(1, sizeof *S);
    *out = NULL;
    if (!S) return gm_error_set(err, GM_ENOMEM, "out of memory");
    S->o = *o;
    S->c = c;
    S->t_open = gm_now_s();
    S->best_id = -1;
    S->T = c->t0;
    S->last_drop = 1.0;
    gm_rng_seed(&S->rng, c->seed);
    gm_failures_init(&S->failures);
    S->failures.structural = !c->gmorph_mode; /* a failed merge, not a parameter count, predicts failure */
    gm_ckpt_summary_unknown(&S->summary); /* a resumed sweep has not ended: the end measures again */
    S->summary.base_latency_ms = o->base_latency_ms;
    for (int t = 0; o->orig_val && t < c->nmodels; t++) S->summary.orig_val[t] = o->orig_val[t];
    S->orig = malloc(sizeof *S->orig);
    S->cand = malloc(sizeof *S->cand);
    S->elites = calloc((size_t)c->max_elites, sizeof *S->elites);
    const int qcap = (o->resume ? o->resume->ncand : 0) + 1;
    S->queue = malloc(sizeof(int) * (size_t)qcap);
    gm_status st = GM_OK;
    if (!S->orig || !S->cand || !S->elites || !S->queue) st = gm_error_set(err, GM_ENOMEM, "out of memory");
    if (st == GM_OK) st = gm_fgraph_from_models(S->orig, o->models, c->nmodels, err);
    if (st == GM_OK && c->trunks > 0 && !c->gmorph_mode) {
        st = gm_trunk_plan(S->orig, o->guide, c->trunks, S->trunks, &S->ntrunks, err);
    }
    if (st == GM_OK && o->resume) st = restore(S, o->resume, err);
    if (st == GM_OK) st = open_results(S, err);
    for (int i = 0; st == GM_OK && i < S->nrows; i++)
        if (S->rows[i].status != GM_CAND_PENDING) gm_results_row(S->results, &S->rows[i]);
    if (st == GM_OK && c->nwarm > 0) st = gm_search_warm(S, !o->resume, err);
    if (st != GM_OK) {
        gm_search_free(S);
        return st;
    }
    *out = S;
    return GM_OK;
}

double gm_search_elapsed(const gm_search *S) { return S->elapsed0 + (gm_now_s() - S->t_open); }

/* ---- propose ------------------------------------------------------------------------ */

int gm_search_remaining(const gm_search *S)
{
    return S->nqueue + (S->iteration < S->c->iterations ? S->c->iterations - S->iteration : 0);
}

/* The job for row r: its graph, and its source elite's weights. */
static gm_status fill_job(gm_search *S, const gm_ckpt_cand *r, gm_job *job, int *lost, gm_error *err)
{
    memset(job, 0, sizeof *job);
    job->id = r->id;
    job->source = r->source;
    job->enc_len = r->enc_len;
    memcpy(job->enc, r->enc, sizeof(int32_t) * (size_t)r->enc_len);
    *lost = 0;
    if (r->source < 0) return GM_OK;
    const elite *e = find_elite(S, r->source);
    if (!e) { /* its source left the elites (first in, first out) before it could run again */
        *lost = 1;
        return GM_OK;
    }
    return gm_mfile_copy(&job->src, &e->w, err);
}

gm_status gm_search_take_queued(gm_search *S, gm_job *job, int *got, gm_error *err)
{
    *got = 0;
    while (S->nqueue > 0) {
        gm_ckpt_cand *r = &S->rows[S->queue[0]];
        memmove(S->queue, S->queue + 1, sizeof(int) * (size_t)--S->nqueue);
        if (r->status != GM_CAND_PENDING) continue; /* its first dispatch answered after all */
        int lost;
        gm_status st = fill_job(S, r, job, &lost, err);
        if (st != GM_OK) return st;
        if (!lost) {
            *got = 1;
            return GM_OK;
        }
        st = gm_search_fail(S, r->id, "its source elite was replaced before it could run again", err);
        if (st != GM_OK) return st;
    }
    return GM_OK;
}

gm_status gm_search_propose(gm_search *S, gm_job *job, int *got, gm_error *err)
{
    const gm_search_config *c = S->c;
    gm_status st = gm_search_take_queued(S, job, got, err);
    if (st != GM_OK || *got) return st;
    while (S->iteration < c->iterations) {
        const int it = S->iteration++;
        const elite *src = NULL; /* drawn by age rank, so a restored ring (oldest first) draws the same */
        gm_error merr;
        double predicted = NAN;
        gm_status ms;
        if (it < S->ntrunks) { /* the planned deep candidates come first, drawing nothing */
            *S->cand = *S->orig;
            ms = gm_trunk_apply(S->cand, S->trunks[it], &merr);
            predicted = S->trunks[it].cost;
        } else {
            double p = 0.0;
            if (c->policy == GM_POLICY_SA && S->nelites > 0) {
                double drop = S->last_drop < 0 ? 0 : S->last_drop > 1 ? 1 : S->last_drop;
                p = (1.0 - exp(-(1.0 - drop) * c->t0 / S->T)) * sqrt((double)S->nelites / c->max_elites);
            }
            if (gm_rng_uniform(&S->rng) < p)
                src = &S->elites[(S->oldest + (int)gm_rng_below(&S->rng, (uint32_t)S->nelites)) % S->nelites];
            *S->cand = src ? *src->g : *S->orig;
            ms = S->o.guide ? gm_guide_mutate(S->o.guide, S->cand, &S->rng, c->merges, c->relaxed_below, &predicted,
                                              &merr)
                            : gm_mutate_random(S->cand, &S->rng, c->merges, c->relaxed_below, &merr);
        }
        S->T *= c->alpha;
        if (ms != GM_OK) continue; /* nothing to merge */
        if (c->stitch && c->stitch_shortcuts && !c->gmorph_mode) gm_fgraph_project_seams(S->cand);
        const uint64_t loc = gm_fgraph_location_hash(S->cand), top = gm_fgraph_topology_hash(S->cand);
        const int dup = known(S, loc, top); /* asked before the candidate has a row of its own */
        gm_ckpt_cand *r = new_row(S, err);
        if (!r) return GM_ENOMEM;
        r->iteration = it;
        r->source = src ? src->id : -1;
        r->predicted = predicted;
        r->status = GM_CAND_PENDING;
        r->location = loc;
        r->topology = top;
        r->nodes = S->cand->nnodes;
        r->params = (long long)gm_fgraph_nparams(S->cand);
        r->mflops = (double)gm_fgraph_flops(S->cand) / 1e6;
        r->enc = malloc(sizeof(int32_t) * GM_JOB_ENC_MAX);
        if (!r->enc) return gm_error_set(err, GM_ENOMEM, "out of memory");
        r->enc_len = gm_fgraph_encode(S->cand, r->enc, GM_JOB_ENC_MAX);
        if (r->enc_len < 0) return gm_error_set(err, GM_EINVAL, "candidate %d: its encoding does not fit", r->id);
        gm_features feat;
        gm_filter_features(S->cand, &feat);
        if (dup || (c->filter_dominance && gm_failures_match(&S->failures, &feat) >= 0)) {
            r->status = dup ? GM_CAND_DUPLICATE : GM_CAND_FILTERED;
            st = announce(S, r, NULL, err);
            if (st != GM_OK) return st;
            continue;
        }
        int lost;
        st = fill_job(S, r, job, &lost, err);
        if (st == GM_OK) *got = 1;
        return st;
    }
    return GM_OK;
}

void gm_search_requeue(gm_search *S, int id)
{
    if (id < 0 || id >= S->nrows || S->rows[id].status != GM_CAND_PENDING) return;
    for (int i = 0; i < S->nqueue; i++)
        if (S->queue[i] == id) return;
    int *q = realloc(S->queue, sizeof(int) * (size_t)(S->nqueue + 1));
    if (!q) return; /* the candidate stays pending: the checkpoint still has it */
    S->queue = q;
    S->queue[S->nqueue++] = id;
}

/* ---- record ------------------------------------------------------------------------- */

/* q is at least as fast and at most as far down as r (better in one when strict). */
static int dominates(const gm_search *S, const gm_ckpt_cand *q, const gm_ckpt_cand *r, int strict)
{
    const double kq = speed_key(S, q), kr = speed_key(S, r);
    return strict ? gm_search_beats(kq, q->worst_drop, kr, r->worst_drop) : kq >= kr && q->worst_drop <= r->worst_drop;
}

/* A passed candidate joins the Pareto set unless a member is as good on both; the members it beats leave. */
static gm_status pareto_offer(gm_search *S, const gm_ckpt_cand *r, const gm_mfile *w, gm_error *err)
{
    for (int k = 0; k < S->npareto; k++)
        if (dominates(S, &S->rows[S->pareto[k].id], r, 0)) return GM_OK;
    int m = 0;
    for (int k = 0; k < S->npareto; k++) {
        if (dominates(S, r, &S->rows[S->pareto[k].id], 1)) gm_mfile_free(&S->pareto[k].w);
        else S->pareto[m++] = S->pareto[k];
    }
    S->npareto = m;
    if (S->npareto == S->cap_pareto) {
        const int cap = S->cap_pareto ? 2 * S->cap_pareto : 8;
        kept *p = realloc(S->pareto, sizeof *p * (size_t)cap);
        if (!p) return gm_error_set(err, GM_ENOMEM, "out of memory for the Pareto set");
        S->pareto = p;
        S->cap_pareto = cap;
    }
    kept *k = &S->pareto[S->npareto];
    k->id = r->id;
    gm_status st = gm_mfile_copy(&k->w, w, err);
    if (st == GM_OK) S->npareto++;
    return st;
}

static gm_status update_best(gm_search *S, const gm_ckpt_cand *r, const gm_mfile *w, gm_error *err)
{
    const double key = speed_key(S, r);
    if (S->best_id >= 0 && !(key > S->best_key)) return GM_OK;
    S->best_id = r->id;
    S->best_key = key;
    gm_mfile_free(&S->best);
    return gm_mfile_copy(&S->best, w, err);
}

/* The fine-tune's learning curve into row r (which owns it). */
static gm_status keep_curve(gm_ckpt_cand *r, const gm_ft_result *f, int ntasks, gm_error *err)
{
    const int cols = GM_CKPT_CURVE_COLS(ntasks);
    free(r->curve);
    r->curve = NULL;
    r->ncurve = 0;
    if (f->nchecks <= 0) return GM_OK;
    if (!(r->curve = malloc(sizeof(double) * (size_t)f->nchecks * (size_t)cols)))
        return gm_error_set(err, GM_ENOMEM, "out of memory for a learning curve");
    for (int i = 0; i < f->nchecks; i++) {
        double *p = r->curve + (size_t)i * (size_t)cols;
        p[0] = f->checks[i].epoch;
        p[1] = f->checks[i].loss;
        for (int t = 0; t < ntasks; t++) p[2 + t] = f->checks[i].val[t];
    }
    r->ncurve = f->nchecks;
    return GM_OK;
}

gm_status gm_search_record(gm_search *S, gm_result *res, int worker, const char *error, gm_error *err)
{
    const gm_search_config *c = S->c;
    if (res->id < 0 || res->id >= S->nrows || S->rows[res->id].status != GM_CAND_PENDING) return GM_OK;
    gm_ckpt_cand *r = &S->rows[res->id];
    r->worker = worker;
    gm_status st = GM_OK;
    if (error) {
        r->status = GM_CAND_FAILED;
        r->seconds = res->ft.seconds;
    } else {
        const gm_ft_result *f = &res->ft;
        r->status = f->status == GM_FT_PASSED ? GM_CAND_PASSED : f->status == GM_FT_ABORTED ? GM_CAND_ABORTED
                                                                                            : GM_CAND_FAILED;
        r->epochs = f->epochs;
        r->worst_drop = f->worst_drop;
        r->drop0 = f->first_drop;
        r->seconds = f->seconds;
        r->latency_ms = res->latency_ms;
        r->base_latency_ms = res->base_latency_ms;
        r->speedup = res->base_latency_ms / res->latency_ms;
        for (int t = 0; t < c->nmodels; t++) r->val[t] = f->val[t];
        S->last_drop = f->worst_drop;
        st = keep_curve(r, f, c->nmodels, err);
    }
    if (st != GM_OK) return st;
    if (r->status == GM_CAND_PASSED) {
        st = update_best(S, r, &res->tuned, err);
        if (st == GM_OK) st = pareto_offer(S, r, &res->tuned, err);
        if (st == GM_OK && c->policy == GM_POLICY_SA) {
            st = gm_fgraph_decode(S->cand, r->enc, r->enc_len, S->o.models, c->nmodels, err);
            if (st == GM_OK) st = add_elite(S, S->cand, &res->tuned, r->id, err);
        }
    } else if (!error) {
        gm_features f;
        st = gm_fgraph_decode(S->cand, r->enc, r->enc_len, S->o.models, c->nmodels, err);
        if (st == GM_OK) gm_filter_features(S->cand, &f);
        if (st == GM_OK && gm_failures_add(&S->failures, &f) != 0) st = gm_error_set(err, GM_ENOMEM, "out of memory");
    }
    return st == GM_OK ? announce(S, r, error, err) : st;
}

gm_status gm_search_adopt(gm_search *S, const gm_ckpt_cand *src, gm_mfile *w, gm_error *err)
{
    const gm_search_config *c = S->c;
    gm_ckpt_cand *r = new_row(S, err);
    if (!r) return GM_ENOMEM;
    const int id = r->id;
    *r = (gm_ckpt_cand){.id = id, .iteration = -1, .source = -1, .status = GM_CAND_PASSED, .worker = -1,
                        .nodes = src->nodes, .epochs = src->epochs, .location = src->location,
                        .topology = src->topology, .params = src->params, .mflops = src->mflops,
                        .latency_ms = src->latency_ms, .base_latency_ms = src->base_latency_ms,
                        .speedup = src->speedup, .worst_drop = src->worst_drop, .seconds = src->seconds,
                        .drop0 = src->drop0, .predicted = src->predicted, .enc_len = src->enc_len,
                        .ncurve = src->ncurve};
    memcpy(r->val, src->val, sizeof r->val);
    const size_t ncv = (size_t)src->ncurve * GM_CKPT_CURVE_COLS(c->nmodels);
    r->enc = malloc(sizeof(int32_t) * (size_t)(src->enc_len + 1));
    r->curve = ncv ? malloc(sizeof(double) * ncv) : NULL;
    if (!r->enc || (ncv && !r->curve)) return gm_error_set(err, GM_ENOMEM, "out of memory");
    memcpy(r->enc, src->enc, sizeof(int32_t) * (size_t)src->enc_len);
    if (ncv) memcpy(r->curve, src->curve, sizeof(double) * ncv);
    gm_status st = update_best(S, r, w, err);
    if (st == GM_OK) st = pareto_offer(S, r, w, err);
    if (st == GM_OK && c->policy == GM_POLICY_SA) {
        st = gm_fgraph_decode(S->cand, r->enc, r->enc_len, S->o.models, c->nmodels, err);
        if (st == GM_OK) st = add_elite(S, S->cand, w, r->id, err);
    }
    return st == GM_OK ? announce(S, r, NULL, err) : st;
}

gm_status gm_search_fail(gm_search *S, int id, const char *why, gm_error *err)
{
    gm_result res = {.id = id};
    return gm_search_record(S, &res, -1, why, err);
}

/* ---- checkpoint ----------------------------------------------------------------------- */

gm_status gm_search_checkpoint(gm_search *S, gm_error *err)
{
    const gm_search_config *c = S->c;
    gm_ckpt ck = {.config = gm_search_config_to_json(c), .ntasks = c->nmodels, .iteration = S->iteration,
                  .next_id = S->nrows, .temperature = S->T, .last_drop = S->last_drop,
                  .elapsed_s = gm_search_elapsed(S), .ncand = S->nrows, .cand = S->rows, .nelites = S->nelites,
                  .best_id = S->best_id, .summary = S->summary};
    for (int t = 0; t < c->nmodels; t++) snprintf(ck.tasks[t], sizeof ck.tasks[t], "%s", S->o.models[t]->tasks[0].name);
    memcpy(ck.rng, S->rng.s, sizeof ck.rng);
    ck.elite_id = malloc(sizeof(int) * (size_t)(S->nelites + 1));
    ck.elite_w = malloc(sizeof(gm_mfile) * (size_t)(S->nelites + 1));
    ck.npareto = S->npareto;
    ck.pareto_id = malloc(sizeof(int) * (size_t)(S->npareto + 1));
    ck.pareto_w = malloc(sizeof(gm_mfile) * (size_t)(S->npareto + 1));
    gm_status st = GM_OK;
    if (!ck.config || !ck.elite_id || !ck.elite_w || !ck.pareto_id || !ck.pareto_w)
        st = gm_error_set(err, GM_ENOMEM, "out of memory");
    for (int k = 0; st == GM_OK && k < S->npareto; k++) { /* shallow, as the elites */
        ck.pareto_id[k] = S->pareto[k].id;
        ck.pareto_w[k] = S->pareto[k].w;
    }
    for (int k = 0; st == GM_OK && k < S->nelites; k++) { /* oldest first; shallow copies, not freed here */
        const elite *e = &S->elites[(S->oldest + k) % S->nelites];
        ck.elite_id[k] = e->id;
        ck.elite_w[k] = e->w;
    }
    if (S->best_id >= 0) ck.best = S->best;
    char path[1200];
    snprintf(path, sizeof path, "%s/search.h5", c->out);
    if (st == GM_OK) st = gm_ckpt_save(path, &ck, err);
    free(ck.config);
    free(ck.elite_id);
    free(ck.elite_w);
    free(ck.pareto_id);
    free(ck.pareto_w);
    return st;
}

/* ---- the learning-curve rule ---------------------------------------------------------- */

int gm_search_curve_abort(void *ctx, const double *epoch, const double *acc, int n, int max_epoch, double target)
{
    (void)ctx;
    /*
     * The check right after the merges (epoch 0) sits far below the rest of the
     * curve, so three points extrapolate badly: wait for four, and give the fit
     * two points of slack before giving up on a candidate.
     */
    return n >= 4 && gm_curve_should_abort(epoch, acc, n, max_epoch, target, 0.02);
}

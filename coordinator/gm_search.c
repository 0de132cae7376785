#define _POSIX_C_SOURCE 200809L
#include "gm_search.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_clock.h"
#include "gm_dataset.h"
#include "gm_filter.h"
#include "gm_fs.h"
#include "gm_mutate.h"
#include "gm_rng.h"
#include "gm_train.h"

typedef struct {
    int id;
    gm_fgraph *g;         /* nodes' weight sources point at this elite itself */
    gm_mfile w;           /* fine-tuned weights, block b = node b */
} elite;

struct gm_search {
    gm_search_opts o;
    const gm_search_config *c;
    gm_fgraph *orig, *cand;
    gm_rng rng;
    int iteration;               /* next iteration to propose */
    double T, last_drop;
    double elapsed0, t_open;     /* elapsed before this process, and when it opened */
    /* every candidate, id order (rows[i].id == i); the table the checkpoint saves */
    gm_ckpt_cand *rows;
    int nrows, cap_rows;
    int *queue;                  /* pending ids to dispatch again, oldest first */
    int nqueue;
    gm_failures failures;
    elite *elites;               /* ring of max_elites, oldest at index `oldest` */
    int nelites, oldest;
    int best_id;
    double best_key;             /* speed-up, or -MFLOPs in deterministic mode: higher is better */
    gm_mfile best;
    int done;                    /* finished rows */
    FILE *csv, *jsonl;
    gm_ckpt_summary summary;     /* what the checkpoint keeps for the report; the end fills the rest */
};

/* ---- small helpers --------------------------------------------------------------- */

static FILE *open_out(const gm_search *S, const char *name, gm_error *err)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", S->c->out, name);
    FILE *f = fopen(p, "w");
    if (!f) gm_error_set(err, GM_EIO, "%s: cannot write: %s", p, strerror(errno));
    return f;
}

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
    r->latency_ms = r->base_latency_ms = r->speedup = r->worst_drop = NAN;
    for (int t = 0; t < GM_MF_MAX_TASKS; t++) r->val[t] = NAN;
    return r;
}

/* Seen: any row that was or is being fine-tuned with this location. Passed: a passed row with this topology. */
static int known(const gm_search *S, uint64_t loc, uint64_t top)
{
    for (int i = 0; i < S->nrows; i++) {
        const gm_ckpt_cand *r = &S->rows[i];
        if (r->status == GM_CAND_FILTERED || r->status == GM_CAND_DUPLICATE) continue;
        if (r->location == loc || (r->status == GM_CAND_PASSED && r->topology == top)) return 1;
    }
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

static void write_row(gm_search *S, const gm_ckpt_cand *r)
{
    const int n = S->c->nmodels, tuned = r->status == GM_CAND_PASSED || r->status == GM_CAND_FAILED ||
                                         r->status == GM_CAND_ABORTED;
    const char *st = gm_cand_status_name(r->status);
    fprintf(S->csv, "%d,%d,%d,%s,%d,%016llx,%016llx,%d,%lld,%.3f,%.4f,%.4f,%.3f,%d,%.5f,%.2f,%.2f", r->id,
            r->iteration, r->source, st, r->worker, (unsigned long long)r->location, (unsigned long long)r->topology,
            r->nodes, r->params, r->mflops, r->latency_ms, r->base_latency_ms, r->speedup, r->epochs, r->worst_drop,
            r->seconds, r->finished_s);
    for (int t = 0; t < n; t++) fprintf(S->csv, ",%.5f", r->val[t]);
    fputc('\n', S->csv);
    fprintf(S->jsonl, "{\"id\": %d, \"iteration\": %d, \"source\": %d, \"status\": \"%s\", \"worker\": %d, "
                      "\"location\": \"%016llx\", \"topology\": \"%016llx\", \"nodes\": %d, \"params\": %lld, "
                      "\"mflops\": %.3f, ",
            r->id, r->iteration, r->source, st, r->worker, (unsigned long long)r->location,
            (unsigned long long)r->topology, r->nodes, r->params, r->mflops);
    if (tuned && !isnan(r->worst_drop)) {
        fprintf(S->jsonl, "\"latency_ms\": %.4f, \"base_latency_ms\": %.4f, \"speedup\": %.3f, \"epochs\": %d, "
                          "\"worst_drop\": %.5f, \"val\": {",
                r->latency_ms, r->base_latency_ms, r->speedup, r->epochs, r->worst_drop);
        for (int t = 0; t < n; t++)
            fprintf(S->jsonl, "%s\"%s\": %.5f", t ? ", " : "", S->o.models[t]->tasks[0].name, r->val[t]);
        fprintf(S->jsonl, "}, ");
    }
    fprintf(S->jsonl, "\"seconds\": %.2f, \"finished_s\": %.2f}\n", r->seconds, r->finished_s);
    fflush(S->csv);
    fflush(S->jsonl);
}

static void announce(gm_search *S, gm_ckpt_cand *r, const char *error)
{
    S->done++;
    r->finished_s = gm_search_elapsed(S);
    if (S->csv) write_row(S, r);
    if (!S->o.progress) return;
    const int tuned = r->status == GM_CAND_PASSED || r->status == GM_CAND_FAILED || r->status == GM_CAND_ABORTED;
    gm_search_event e = {.id = r->id, .iteration = r->iteration, .source = r->source,
                         .status = gm_cand_status_name(r->status), .worker = r->worker, .nodes = r->nodes,
                         .epochs = r->epochs, .params = (size_t)r->params, .mflops = r->mflops,
                         .latency_ms = r->latency_ms, .worst_drop = r->worst_drop, .seconds = r->seconds,
                         .base_latency_ms = r->base_latency_ms, .speedup = r->speedup,
                         .val = tuned && !isnan(r->worst_drop) ? r->val : NULL, .error = error,
                         .best_speedup = S->best_id >= 0 ? S->rows[S->best_id].speedup : NAN, .done = S->done,
                         .iterations = S->c->iterations, .elapsed_s = gm_search_elapsed(S),
                         .budget_s = S->c->time_budget_s};
    S->o.progress(S->o.ctx, &e);
}

static gm_status open_logs(gm_search *S, gm_error *err)
{
    if (gm_fs_mkdirs(S->c->out) != 0) return gm_error_set(err, GM_EIO, "%s: cannot create: %s", S->c->out, strerror(errno));
    S->csv = open_out(S, "candidates.csv", err);
    S->jsonl = S->csv ? open_out(S, "candidates.jsonl", err) : NULL;
    if (!S->csv || !S->jsonl) return GM_EIO;
    fprintf(S->csv, "id,iteration,source,status,worker,location,topology,nodes,params,mflops,latency_ms,"
                    "base_latency_ms,speedup,epochs,worst_drop,seconds,finished_s");
    for (int t = 0; t < S->c->nmodels; t++) fprintf(S->csv, ",val_%s", S->o.models[t]->tasks[0].name);
    fputc('\n', S->csv);
    return GM_OK;
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
    for (int i = 0; i < S->nrows; i++) free(S->rows[i].enc);
    free(S->rows);
    free(S->queue);
    gm_failures_free(&S->failures);
    gm_mfile_free(&S->best);
    free(S->orig);
    free(S->cand);
    if (S->csv) fclose(S->csv);
    if (S->jsonl) fclose(S->jsonl);
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
    S->best_id = ck->best_id;
    if (st == GM_OK && ck->best_id >= 0) {
        const gm_ckpt_cand *b = &S->rows[ck->best_id];
        S->best_key = c->deterministic ? -b->mflops : b->speedup;
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
    if (st == GM_OK && o->resume) st = restore(S, o->resume, err);
    if (st == GM_OK) st = open_logs(S, err);
    for (int i = 0; st == GM_OK && i < S->nrows; i++)
        if (S->rows[i].status != GM_CAND_PENDING) write_row(S, &S->rows[i]);
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
        double p = 0.0;
        if (c->policy == GM_POLICY_SA && S->nelites > 0) {
            double drop = S->last_drop < 0 ? 0 : S->last_drop > 1 ? 1 : S->last_drop;
            p = (1.0 - exp(-(1.0 - drop) * c->t0 / S->T)) * sqrt((double)S->nelites / c->max_elites);
        }
        const elite *src = NULL; /* drawn by age rank, so a restored ring (oldest first) draws the same */
        if (gm_rng_uniform(&S->rng) < p)
            src = &S->elites[(S->oldest + (int)gm_rng_below(&S->rng, (uint32_t)S->nelites)) % S->nelites];
        *S->cand = src ? *src->g : *S->orig;
        S->T *= c->alpha;
        gm_error merr;
        if (gm_mutate_random(S->cand, &S->rng, c->merges, c->relaxed_below, &merr) != GM_OK) continue; /* nothing to merge */
        const uint64_t loc = gm_fgraph_location_hash(S->cand), top = gm_fgraph_topology_hash(S->cand);
        const int dup = known(S, loc, top); /* asked before the candidate has a row of its own */
        gm_ckpt_cand *r = new_row(S, err);
        if (!r) return GM_ENOMEM;
        r->iteration = it;
        r->source = src ? src->id : -1;
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
            announce(S, r, NULL);
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

static gm_status update_best(gm_search *S, const gm_ckpt_cand *r, const gm_mfile *w, gm_error *err)
{
    const double key = S->c->deterministic ? -r->mflops : r->speedup;
    if (S->best_id >= 0 && !(key > S->best_key)) return GM_OK;
    S->best_id = r->id;
    S->best_key = key;
    gm_mfile_free(&S->best);
    return gm_mfile_copy(&S->best, w, err);
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
        r->seconds = f->seconds;
        r->latency_ms = res->latency_ms;
        r->base_latency_ms = res->base_latency_ms;
        r->speedup = res->base_latency_ms / res->latency_ms;
        for (int t = 0; t < c->nmodels; t++) r->val[t] = f->val[t];
        S->last_drop = f->worst_drop;
    }
    if (r->status == GM_CAND_PASSED) {
        st = update_best(S, r, &res->tuned, err);
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
    announce(S, r, error);
    return st;
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
    gm_status st = GM_OK;
    if (!ck.config || !ck.elite_id || !ck.elite_w) st = gm_error_set(err, GM_ENOMEM, "out of memory");
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
    return st;
}

/* ---- finish ------------------------------------------------------------------------- */

/* Test accuracy per task of a model (best or original) on each task's dataset. */
static gm_status test_accuracy(gm_search *S, gm_backend *be, const gm_mfile *m, double *acc, gm_error *err)
{
    const gm_search_config *c = S->c;
    gm_net *net = NULL;
    gm_net_desc d = gm_mfile_desc(m);
    gm_status st = gm_net_create(&net, be, &d, 128, 1, err);
    if (st == GM_OK) st = gm_mfile_to_net(m, net, err);
    for (int k = 0; st == GM_OK && k < m->ntasks; k++) {
        const gm_mf_task *t = &m->tasks[k];
        int ti = -1;
        for (int j = 0; j < c->nmodels; j++)
            if (!strcmp(S->o.models[j]->tasks[0].name, t->name)) ti = j;
        const char *path = ti >= 0 && c->data[ti][0] ? c->data[ti] : t->dataset;
        gm_dataset *ds;
        st = gm_ds_open(&ds, path, err);
        if (st != GM_OK) break;
        gm_ds_set_normalisation(ds, S->o.models[0]->mean, S->o.models[0]->std);
        int dt = gm_ds_task_index(ds, t->name), out = -1;
        for (int o = 0; o < gm_net_noutputs(net); o++)
            if (gm_net_output_block(net, o) == t->head) out = o;
        if (dt < 0 || out < 0)
            st = gm_error_set(err, GM_EINVAL, "%s: no task \"%s\" to score", path, t->name);
        else
            st = gm_eval_tasks(net, ds, GM_SPLIT_TEST, 1, &out, &dt, 128, 0, &acc[ti >= 0 ? ti : k], err);
        gm_ds_close(ds);
    }
    gm_net_free(net);
    return st;
}

/* One model against the originals, alternately, with 3x the search's runs. */
static gm_status retime(gm_search *S, gm_backend *be, const gm_mfile *m, gm_net *const *base, double *ms,
                        double *base_ms, gm_error *err)
{
    const gm_search_config *c = S->c;
    gm_net *net = NULL;
    gm_net_desc d = gm_mfile_desc(m);
    gm_status st = gm_net_create(&net, be, &d, 1, 1, err);
    if (st == GM_OK) st = gm_mfile_to_net(m, net, err);
    if (st == GM_OK) st = gm_measure_latency_pair(net, base, c->nmodels, c->lat_warmup, 3 * c->lat_runs, ms, base_ms, err);
    gm_net_free(net);
    return st;
}

/*
 * The final choice. During the sweep the best is the highest of many noisy
 * ratios, so its own is biased upward, and a busy machine can crown the wrong
 * model: time the passed models still held (the best and the elites) again and
 * keep the fastest. Deterministic mode keeps its fewest-FLOPs rule and only
 * re-times that one.
 */
static gm_status final_choice(gm_search *S, gm_backend *be, gm_search_summary *s, gm_error *err)
{
    const gm_search_config *c = S->c;
    gm_net *base[GM_MF_MAX_TASKS] = {0};
    gm_status st = GM_OK;
    for (int t = 0; st == GM_OK && t < c->nmodels; t++) {
        gm_net_desc bd = gm_mfile_desc(S->o.models[t]);
        st = gm_net_create(&base[t], be, &bd, 1, 1, err);
        if (st == GM_OK) st = gm_mfile_to_net(S->o.models[t], base[t], err);
    }
    double ms, base_ms;
    if (st == GM_OK) st = retime(S, be, &S->best, base, &ms, &base_ms, err);
    int pick = -1; /* an elite that beat the best */
    for (int k = 0; st == GM_OK && !c->deterministic && k < S->nelites; k++) {
        if (S->elites[k].id == S->best_id) continue;
        double e_ms, e_base;
        st = retime(S, be, &S->elites[k].w, base, &e_ms, &e_base, err);
        if (st == GM_OK && e_base / e_ms > base_ms / ms) {
            pick = k;
            ms = e_ms;
            base_ms = e_base;
        }
    }
    if (st == GM_OK && pick >= 0) {
        gm_mfile_free(&S->best);
        st = gm_mfile_copy(&S->best, &S->elites[pick].w, err);
        S->best_id = S->elites[pick].id;
    }
    if (st == GM_OK) {
        const gm_ckpt_cand *b = &S->rows[S->best_id];
        s->best_id = S->best_id;
        s->found_speedup = b->speedup;
        memcpy(s->best_val, b->val, sizeof(double) * (size_t)c->nmodels);
        s->best_latency_ms = ms;
        s->best_base_ms = base_ms;
        s->speedup = base_ms / ms;
    }
    for (int t = 0; t < c->nmodels; t++) gm_net_free(base[t]);
    return st;
}

/* The end's numbers into what the final checkpoint keeps, so a report needs nothing else. */
static void keep_summary(gm_search *S, const gm_search_summary *s)
{
    gm_ckpt_summary *k = &S->summary;
    k->ended = 1;
    k->final_latency_ms = s->best_latency_ms;
    k->final_base_latency_ms = s->best_base_ms;
    k->final_speedup = s->speedup;
    for (int t = 0; t < s->ntasks; t++) {
        k->orig_test[t] = s->orig_test[t];
        k->best_test[t] = s->best_test[t];
    }
}

static gm_status write_summary(gm_search *S, const gm_search_summary *s, gm_error *err)
{
    const gm_search_config *c = S->c;
    FILE *f = open_out(S, "summary.md", err);
    if (!f) return GM_EIO;
    fprintf(f, "# gmorph search\n\npolicy %s, threshold %.3f, %d iterations, seed %llu%s\n\n",
            c->policy == GM_POLICY_SA ? "sa" : "random", c->threshold, c->iterations, (unsigned long long)c->seed,
            c->deterministic ? ", deterministic (best = fewest FLOPs)" : "");
    fprintf(f, "- originals one after the other: %.3f ms at the start; best fused: speed-up %.2fx (candidate %d) "
               "when the search timed it; timed again at the end, alternately with the originals (the best and the "
               "elites, the fastest kept): %.3f ms against %.3f ms, **%.2fx**\n",
            s->base_latency_ms, s->found_speedup, s->best_id, s->best_latency_ms, s->best_base_ms, s->speedup);
    fprintf(f, "- candidates %d: passed %d, failed %d, aborted %d, filtered %d, duplicates %d; %ld fine-tune epochs; "
               "%.0f s wall%s\n\n", s->candidates, s->passed, s->failed, s->aborted, s->filtered, s->duplicates,
            s->ft_epochs, s->wall_s, s->interrupted ? " (stopped early)" : "");
    fprintf(f, "| task | original val %% | fused val %% | original test %% | fused test %% | test drop (points) |\n"
               "|---|---|---|---|---|---|\n");
    for (int t = 0; t < s->ntasks; t++)
        fprintf(f, "| %s | %.2f | %.2f | %.2f | %.2f | %.2f |\n", s->task[t], 100 * s->orig_val[t],
                100 * s->best_val[t], 100 * s->orig_test[t], 100 * s->best_test[t],
                100 * (s->orig_test[t] - s->best_test[t]));
    fclose(f);
    return GM_OK;
}

gm_status gm_search_finish(gm_search *S, int interrupted, gm_search_summary *s, gm_error *err)
{
    const gm_search_config *c = S->c;
    memset(s, 0, sizeof *s);
    s->ntasks = c->nmodels;
    s->interrupted = interrupted;
    s->base_latency_ms = S->o.base_latency_ms;
    s->best_id = S->best_id;
    s->best_latency_ms = s->best_base_ms = s->speedup = s->found_speedup = NAN;
    for (int t = 0; t < c->nmodels; t++) {
        snprintf(s->task[t], sizeof s->task[t], "%s", S->o.models[t]->tasks[0].name);
        s->orig_val[t] = S->o.orig_val[t];
        s->best_val[t] = s->best_test[t] = s->orig_test[t] = NAN;
    }
    for (int i = 0; i < S->nrows; i++) {
        const gm_ckpt_cand *r = &S->rows[i];
        if (r->status == GM_CAND_PENDING) continue;
        s->candidates++;
        s->passed += r->status == GM_CAND_PASSED;
        s->failed += r->status == GM_CAND_FAILED;
        s->aborted += r->status == GM_CAND_ABORTED;
        s->filtered += r->status == GM_CAND_FILTERED;
        s->duplicates += r->status == GM_CAND_DUPLICATE;
        s->ft_epochs += r->epochs;
    }
    gm_backend *be = NULL;
    gm_status st = gm_backend_cpu_create(&be, c->threads, err);
    for (int t = 0; st == GM_OK && t < c->nmodels; t++) {
        double acc[GM_MF_MAX_TASKS];
        st = test_accuracy(S, be, S->o.models[t], acc, err);
        s->orig_test[t] = acc[t];
    }
    gm_backend *one = NULL; /* batch-1 latency where the workers timed it: the device, else one CPU thread */
    if (st == GM_OK && S->best_id >= 0 && !S->o.latency_device) st = gm_backend_cpu_create(&one, 1, err);
    if (st == GM_OK && S->best_id >= 0) st = final_choice(S, one ? one : S->o.latency_device, s, err);
    gm_backend_free(one);
    if (st == GM_OK && S->best_id >= 0) {
        st = test_accuracy(S, be, &S->best, s->best_test, err);
        for (int t = 0; st == GM_OK && t < s->ntasks; t++) S->best.tasks[t].test_accuracy = s->best_test[t];
        /* name the dataset a task was scored on when the config gave one (imported
         * models record none), so `gmorph eval best.h5` needs no --data */
        for (int t = 0; t < S->best.ntasks; t++)
            for (int j = 0; j < c->nmodels; j++)
                if (c->data[j][0] && !strcmp(S->o.models[j]->tasks[0].name, S->best.tasks[t].name))
                    snprintf(S->best.tasks[t].dataset, sizeof S->best.tasks[t].dataset, "%s", c->data[j]);
        char p[1200];
        snprintf(p, sizeof p, "%s/best.h5", c->out);
        if (st == GM_OK) st = gm_mfile_save(p, &S->best, err);
    }
    gm_backend_free(be);
    s->wall_s = gm_search_elapsed(S);
    if (st == GM_OK) keep_summary(S, s);
    if (st == GM_OK) st = write_summary(S, s, err);
    if (st == GM_OK) st = gm_search_checkpoint(S, err); /* with the final choice of best */
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

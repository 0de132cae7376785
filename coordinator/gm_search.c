#define _POSIX_C_SOURCE 200809L
#include "gm_search.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_clock.h"
#include "gm_filter.h"
#include "gm_fs.h"
#include "gm_json.h"
#include "gm_mutate.h"
#include "gm_train.h"

void gm_search_defaults(gm_search_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->out, sizeof c->out, "run");
    c->threshold = 0.01;
    c->policy = GM_POLICY_SA;
    c->iterations = 200;
    c->seed = 1;
    c->t0 = 100.0;
    c->alpha = 0.99;
    c->max_elites = 10;
    c->merges = 2;
    c->relaxed_below = 4;
    c->ft_samples = 5000;
    c->val_samples = 2000;
    c->ft_epochs = 10;
    c->check_every = 1;
    c->batch = 64;
    c->lr = 1e-3;
    c->frozen_bn = 1;
    c->cosine = 0;
    c->filter_dominance = 1;
    c->filter_curve = 1;
    c->threads = 1;
    c->lat_warmup = 20;
    c->lat_runs = 100;
}

/* ---- config ------------------------------------------------------------------ */

static gm_status get_long(const gm_json *o, const char *k, long long lo, long long hi, long *v, gm_error *err)
{
    long long x = *v;
    gm_status st = gm_json_get_int(o, k, 0, lo, hi, &x, err);
    *v = (long)x;
    return st;
}

/* A string key that must be one of names (NULL-terminated); *v = its index. */
static gm_status get_choice(const gm_json *o, const char *k, const char *const *names, int *v, const char *path,
                            gm_error *err)
{
    char s[32] = "";
    gm_status st = gm_json_get_string(o, k, 0, s, sizeof s, err);
    if (st != GM_OK || !s[0]) return st;
    for (int i = 0; names[i]; i++)
        if (!strcmp(s, names[i])) {
            *v = i;
            return GM_OK;
        }
    return gm_error_set(err, GM_EINVAL, "%s: finetune.%s: expected \"%s\" or \"%s\", got \"%s\"", path, k, names[0],
                        names[1], s);
}

static gm_status get_int(const gm_json *o, const char *k, long long lo, long long hi, int *v, gm_error *err)
{
    long long x = *v;
    gm_status st = gm_json_get_int(o, k, 0, lo, hi, &x, err);
    *v = (int)x;
    return st;
}

static gm_status section(const gm_json *root, const char *name, const char *const *keys, const gm_json **out,
                         gm_error *err)
{
    *out = gm_json_get(root, name);
    if (*out && gm_json_type_of(*out) != GM_JSON_OBJECT) {
        char p[64];
        return gm_error_set(err, GM_EINVAL, "%s: expected an object, got %s", gm_json_path(*out, p, sizeof p),
                            gm_json_type_name(gm_json_type_of(*out)));
    }
    return gm_json_check_keys(*out, keys, err);
}

gm_status gm_search_config_load(gm_search_config *c, const char *path, gm_error *err)
{
    gm_json *root;
    gm_status st = gm_json_parse_file(&root, path, err);
    if (st != GM_OK) return st;
    static const char *const top[] = {"models", "data", "out", "threshold", "policy", "iterations", "time_budget_s",
                                      "seed", "sa", "mutation", "finetune", "filter", "threads", "latency", NULL};
    static const char *const sa_keys[] = {"t0", "alpha", "max_elites", NULL};
    static const char *const mut_keys[] = {"merges", "relaxed_below", NULL};
    static const char *const ft_keys[] = {"samples", "val_samples", "epochs", "check_every", "batch", "lr",
                                                 "bn", "schedule", NULL};
    static const char *const flt_keys[] = {"dominance", "curve", NULL};
    static const char *const lat_keys[] = {"warmup", "runs", NULL};
    const gm_json *models = gm_json_get(root, "models"), *data = gm_json_get(root, "data"), *sec;
    st = gm_json_check_keys(root, top, err);
    if (st == GM_OK && (gm_json_type_of(models) != GM_JSON_ARRAY || gm_json_len(models) < 2 ||
                        gm_json_len(models) > GM_MF_MAX_TASKS))
        st = gm_error_set(err, GM_EINVAL, "%s: \"models\" must be an array of 2 to %d model files", path,
                          GM_MF_MAX_TASKS);
    for (size_t i = 0; st == GM_OK && i < gm_json_len(models); i++) {
        const char *m = gm_json_string(gm_json_at(models, i));
        if (!m || !*m || strlen(m) >= sizeof c->models[0])
            st = gm_error_set(err, GM_EINVAL, "%s: models[%zu] must be a model file path", path, i);
        else
            snprintf(c->models[i], sizeof c->models[i], "%s", m);
        c->nmodels = (int)i + 1;
    }
    if (st == GM_OK && data && (gm_json_type_of(data) != GM_JSON_ARRAY || gm_json_len(data) != gm_json_len(models)))
        st = gm_error_set(err, GM_EINVAL, "%s: \"data\" must be an array with one dataset file per model", path);
    for (size_t i = 0; st == GM_OK && data && i < gm_json_len(data); i++) {
        const char *d = gm_json_string(gm_json_at(data, i));
        if (!d || strlen(d) >= sizeof c->data[0])
            st = gm_error_set(err, GM_EINVAL, "%s: data[%zu] must be a dataset file path (\"\": the recorded one)", path, i);
        else
            snprintf(c->data[i], sizeof c->data[i], "%s", d);
    }
    char policy[16] = "sa";
    long long seed = (long long)c->seed;
    if (st == GM_OK) st = gm_json_get_string(root, "out", 0, c->out, sizeof c->out, err);
    if (st == GM_OK) st = gm_json_get_double(root, "threshold", 0, 0.0, 1.0, &c->threshold, err);
    if (st == GM_OK) st = gm_json_get_string(root, "policy", 0, policy, sizeof policy, err);
    if (st == GM_OK) {
        if (!strcmp(policy, "sa")) c->policy = GM_POLICY_SA;
        else if (!strcmp(policy, "random")) c->policy = GM_POLICY_RANDOM;
        else st = gm_error_set(err, GM_EINVAL, "%s: policy: expected \"sa\" or \"random\", got \"%s\"", path, policy);
    }
    if (st == GM_OK) st = get_int(root, "iterations", 1, 1000000, &c->iterations, err);
    if (st == GM_OK) st = gm_json_get_double(root, "time_budget_s", 0, 0.0, 1e9, &c->time_budget_s, err);
    if (st == GM_OK) st = gm_json_get_int(root, "seed", 0, 0, 2147483647, &seed, err);
    c->seed = (uint64_t)seed;
    if (st == GM_OK) st = get_int(root, "threads", 1, 1024, &c->threads, err);
    if (st == GM_OK) st = section(root, "sa", sa_keys, &sec, err);
    if (st == GM_OK) st = gm_json_get_double(sec, "t0", 0, 1e-9, 1e9, &c->t0, err);
    if (st == GM_OK) st = gm_json_get_double(sec, "alpha", 0, 1e-9, 1.0, &c->alpha, err);
    if (st == GM_OK) st = get_int(sec, "max_elites", 1, 10000, &c->max_elites, err);
    if (st == GM_OK) st = section(root, "mutation", mut_keys, &sec, err);
    if (st == GM_OK) st = get_int(sec, "merges", 1, 100, &c->merges, err);
    if (st == GM_OK) st = get_int(sec, "relaxed_below", 0, 1000000, &c->relaxed_below, err);
    if (st == GM_OK) st = section(root, "finetune", ft_keys, &sec, err);
    if (st == GM_OK) st = get_long(sec, "samples", 1, 100000000, &c->ft_samples, err);
    if (st == GM_OK) st = get_long(sec, "val_samples", 0, 100000000, &c->val_samples, err);
    if (st == GM_OK) st = get_int(sec, "epochs", 0, 10000, &c->ft_epochs, err);
    if (st == GM_OK) st = get_int(sec, "check_every", 1, 10000, &c->check_every, err);
    if (st == GM_OK) st = get_int(sec, "batch", 2, 65536, &c->batch, err);
    if (st == GM_OK) st = gm_json_get_double(sec, "lr", 0, 1e-12, 100.0, &c->lr, err);
    static const char *const bn_names[] = {"batch", "frozen", NULL}, *const sched_names[] = {"constant", "cosine", NULL};
    if (st == GM_OK) st = get_choice(sec, "bn", bn_names, &c->frozen_bn, path, err);
    if (st == GM_OK) st = get_choice(sec, "schedule", sched_names, &c->cosine, path, err);
    if (st == GM_OK) st = section(root, "filter", flt_keys, &sec, err);
    if (st == GM_OK) st = gm_json_get_bool(sec, "dominance", 0, &c->filter_dominance, err);
    if (st == GM_OK) st = gm_json_get_bool(sec, "curve", 0, &c->filter_curve, err);
    if (st == GM_OK) st = section(root, "latency", lat_keys, &sec, err);
    if (st == GM_OK) st = get_int(sec, "warmup", 0, 100000, &c->lat_warmup, err);
    if (st == GM_OK) st = get_int(sec, "runs", 1, 1000000, &c->lat_runs, err);
    gm_json_free(root);
    return st;
}

/* ---- the search -------------------------------------------------------------- */

typedef struct {
    int id;
    gm_fgraph *g;         /* nodes' weight sources point at this elite itself */
    gm_mfile w;           /* fine-tuned weights, block b = node b */
    double latency_ms;
} elite;

typedef struct {
    const gm_search_config *c;
    gm_mfile models[GM_MF_MAX_TASKS];
    const gm_mfile *mptr[GM_MF_MAX_TASKS];
    gm_fgraph *orig;
    gm_ft_data data;
    gm_backend *be;
    gm_net *base[GM_MF_MAX_TASKS]; /* the originals, batch 1: the latency peer */
    elite *elites;        /* ring of max_elites */
    int nelites, oldest;
    uint64_t *seen, *passed_top;
    int nseen, npassed_top, cap_seen;
    gm_failures failures;
    FILE *csv, *jsonl;
    gm_mfile best;        /* the passed candidate with the highest speed-up */
    gm_search_summary *s;
} search;

static int has(const uint64_t *v, int n, uint64_t x)
{
    for (int i = 0; i < n; i++)
        if (v[i] == x) return 1;
    return 0;
}

static FILE *open_out(const search *S, const char *name, gm_error *err)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", S->c->out, name);
    FILE *f = fopen(p, "w");
    if (!f) gm_error_set(err, GM_EIO, "%s: cannot write: %s", p, strerror(errno));
    return f;
}

static void record(search *S, const gm_search_event *e, uint64_t loc, uint64_t top)
{
    int n = S->s->ntasks;
    fprintf(S->csv, "%d,%d,%d,%s,%016llx,%016llx,%d,%zu,%.3f,%.4f,%.4f,%.3f,%d,%.5f,%.2f", e->id, e->iteration,
            e->source, e->status, (unsigned long long)loc, (unsigned long long)top, e->nodes, e->params, e->mflops,
            e->latency_ms, e->base_latency_ms, e->speedup, e->epochs, e->worst_drop, e->seconds);
    for (int t = 0; t < n; t++) fprintf(S->csv, ",%.5f", e->val ? e->val[t] : NAN);
    fputc('\n', S->csv);
    fprintf(S->jsonl, "{\"id\": %d, \"iteration\": %d, \"source\": %d, \"status\": \"%s\", \"location\": \"%016llx\", "
                      "\"topology\": \"%016llx\", \"nodes\": %d, \"params\": %zu, \"mflops\": %.3f, ",
            e->id, e->iteration, e->source, e->status, (unsigned long long)loc, (unsigned long long)top, e->nodes,
            e->params, e->mflops);
    if (e->val) {
        fprintf(S->jsonl, "\"latency_ms\": %.4f, \"base_latency_ms\": %.4f, \"speedup\": %.3f, \"epochs\": %d, "
                          "\"worst_drop\": %.5f, \"val\": {",
                e->latency_ms, e->base_latency_ms, e->speedup, e->epochs, e->worst_drop);
        for (int t = 0; t < n; t++) fprintf(S->jsonl, "%s\"%s\": %.5f", t ? ", " : "", S->s->task[t], e->val[t]);
        fprintf(S->jsonl, "}, ");
    }
    fprintf(S->jsonl, "\"seconds\": %.2f}\n", e->seconds);
    fflush(S->csv);
    fflush(S->jsonl);
}

/* The predictive filter's learning-curve rule, as the worker's abort hook. */
static int curve_abort(void *ctx, const double *epoch, const double *acc, int n, int max_epoch, double target)
{
    (void)ctx;
    /*
     * The check right after the merges (epoch 0) sits far below the rest of the
     * curve, so three points extrapolate badly: wait for four, and give the fit
     * two points of slack before giving up on a candidate.
     */
    return n >= 4 && gm_curve_should_abort(epoch, acc, n, max_epoch, target, 0.02);
}

/* Builds, fine-tunes and times one candidate. */
static gm_status evaluate(search *S, const gm_fgraph *g, int id, gm_mfile *w, gm_ft_result *r, double *lat,
                          double *base_lat, gm_error *err)
{
    const gm_search_config *c = S->c;
    int ids[1024];
    const gm_mfile *ew[1024];
    int ne = S->nelites < 1024 ? S->nelites : 1024;
    for (int k = 0; k < ne; k++) {
        ids[k] = S->elites[k].id;
        ew[k] = &S->elites[k].w;
    }
    gm_wstore store = {S->c->nmodels, S->mptr, ne, ids, ew};
    gm_net *net = NULL;
    gm_status st = gm_fgraph_to_mfile(g, &store, c->seed + (uint64_t)id, w, err);
    gm_net_desc desc = gm_mfile_desc(w);
    if (st == GM_OK)
        st = gm_net_create(&net, S->be, &desc, c->batch > GM_FT_EVAL_BATCH ? c->batch : GM_FT_EVAL_BATCH,
                           c->seed + (uint64_t)id, err);
    if (st == GM_OK) st = gm_mfile_to_net(w, net, err);
    int heads[GM_MF_MAX_TASKS];
    for (int t = 0; t < w->ntasks; t++) heads[t] = w->tasks[t].head;
    gm_ft_opts o = {.max_epochs = c->ft_epochs, .check_every = c->check_every, .batch = c->batch,
                    .lr = (float)c->lr, .frozen_bn = c->frozen_bn, .cosine = c->cosine, .threshold = c->threshold, .seed = c->seed + (uint64_t)id,
                    .abort_check = c->filter_curve ? curve_abort : NULL};
    if (st == GM_OK) st = gm_finetune(net, heads, &S->data, &o, r, err);
    if (st == GM_OK)
        st = gm_measure_latency_pair(net, S->base, c->nmodels, c->lat_warmup, c->lat_runs, lat, base_lat, err);
    if (st == GM_OK && r->status == GM_FT_PASSED) {
        gm_mfile tuned = {0};
        st = gm_mfile_from_net(&tuned, net, err);
        if (st == GM_OK) {
            /* Keep the metadata, take the fine-tuned weights. */
            free(w->params);
            free(w->buffers);
            w->params = tuned.params;
            w->buffers = tuned.buffers;
            tuned.params = tuned.buffers = NULL;
            for (int t = 0; t < w->ntasks; t++) w->tasks[t].val_accuracy = r->val[t];
        }
        gm_mfile_free(&tuned);
    }
    gm_net_free(net);
    return st;
}

static gm_status add_elite(search *S, const gm_fgraph *g, gm_mfile *w, int id, double lat, gm_error *err)
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
    e->latency_ms = lat;
    e->w = *w; /* takes ownership */
    memset(w, 0, sizeof *w);
    return GM_OK;
}

static gm_status open_logs(search *S, gm_error *err)
{
    if (gm_fs_mkdirs(S->c->out) != 0) return gm_error_set(err, GM_EIO, "%s: cannot create: %s", S->c->out, strerror(errno));
    S->csv = open_out(S, "candidates.csv", err);
    S->jsonl = S->csv ? open_out(S, "candidates.jsonl", err) : NULL;
    if (!S->csv || !S->jsonl) return GM_EIO;
    fprintf(S->csv, "id,iteration,source,status,location,topology,nodes,params,mflops,latency_ms,base_latency_ms,speedup,epochs,"
                    "worst_drop,seconds");
    for (int t = 0; t < S->s->ntasks; t++) fprintf(S->csv, ",val_%s", S->s->task[t]);
    fputc('\n', S->csv);
    return GM_OK;
}

/* Baseline: the originals one after the other, timed like every candidate. */
static gm_status baseline(search *S, double *ms, gm_error *err)
{
    gm_status st = GM_OK;
    for (int t = 0; st == GM_OK && t < S->c->nmodels; t++) {
        gm_net_desc d = gm_mfile_desc(&S->models[t]);
        st = gm_net_create(&S->base[t], S->be, &d, 1, 1, err);
        if (st == GM_OK) st = gm_mfile_to_net(&S->models[t], S->base[t], err);
    }
    if (st == GM_OK) st = gm_measure_latency_seq(S->base, S->c->nmodels, S->c->lat_warmup, S->c->lat_runs, ms, err);
    return st;
}

/* Test accuracy per task of a model (best or original) on each task's dataset. */
static gm_status test_accuracy(search *S, const gm_mfile *m, double *acc, gm_error *err)
{
    gm_net *net = NULL;
    gm_net_desc d = gm_mfile_desc(m);
    gm_status st = gm_net_create(&net, S->be, &d, 128, 1, err);
    if (st == GM_OK) st = gm_mfile_to_net(m, net, err);
    for (int k = 0; st == GM_OK && k < m->ntasks; k++) {
        const gm_mf_task *t = &m->tasks[k];
        int ti = -1;
        for (int j = 0; j < S->c->nmodels; j++)
            if (!strcmp(S->models[j].tasks[0].name, t->name)) ti = j;
        const char *path = ti >= 0 && S->c->data[ti][0] ? S->c->data[ti] : t->dataset;
        gm_dataset *ds;
        st = gm_ds_open(&ds, path, err);
        if (st != GM_OK) break;
        gm_ds_set_normalisation(ds, S->models[0].mean, S->models[0].std);
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

static gm_status write_summary(search *S, gm_error *err)
{
    gm_search_summary *s = S->s;
    FILE *f = open_out(S, "summary.md", err);
    if (!f) return GM_EIO;
    fprintf(f, "# gmorph search\n\npolicy %s, threshold %.3f, %d iterations, seed %llu\n\n",
            S->c->policy == GM_POLICY_SA ? "sa" : "random", S->c->threshold, S->c->iterations,
            (unsigned long long)S->c->seed);
    fprintf(f, "- originals one after the other: %.3f ms at the start; best fused: %.3f ms against %.3f ms for the "
               "originals measured alternately with it: speed-up %.2fx (candidate %d)\n",
            s->base_latency_ms, s->best_latency_ms, s->best_base_ms, s->speedup, s->best_id);
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

static void search_free(search *S)
{
    for (int k = 0; k < S->nelites; k++) {
        gm_mfile_free(&S->elites[k].w);
        free(S->elites[k].g);
    }
    free(S->elites);
    free(S->seen);
    free(S->passed_top);
    gm_failures_free(&S->failures);
    for (int t = 0; t < S->c->nmodels; t++) {
        gm_mfile_free(&S->models[t]);
        gm_net_free(S->base[t]);
    }
    gm_mfile_free(&S->best);
    free(S->orig);
    gm_ft_data_free(&S->data);
    gm_backend_free(S->be);
    if (S->csv) fclose(S->csv);
    if (S->jsonl) fclose(S->jsonl);
}

static gm_status setup(search *S, gm_error *err)
{
    const gm_search_config *c = S->c;
    gm_search_summary *s = S->s;
    gm_status st = GM_OK;
    for (int t = 0; st == GM_OK && t < c->nmodels; t++) {
        st = gm_mfile_load(c->models[t], &S->models[t], err);
        S->mptr[t] = &S->models[t];
        if (st == GM_OK && S->models[t].ntasks != 1)
            st = gm_error_set(err, GM_EINVAL, "%s: a model to fuse has one task, this one has %d", c->models[t],
                              S->models[t].ntasks);
        if (st == GM_OK) snprintf(s->task[t], sizeof s->task[t], "%s", S->models[t].tasks[0].name);
    }
    s->ntasks = c->nmodels;
    S->orig = malloc(sizeof *S->orig);
    S->elites = calloc((size_t)c->max_elites, sizeof *S->elites);
    S->cap_seen = c->iterations + 1;
    S->seen = malloc(sizeof(uint64_t) * (size_t)S->cap_seen);
    S->passed_top = malloc(sizeof(uint64_t) * (size_t)S->cap_seen);
    gm_failures_init(&S->failures);
    if (st == GM_OK && (!S->orig || !S->elites || !S->seen || !S->passed_top))
        st = gm_error_set(err, GM_ENOMEM, "out of memory");
    if (st == GM_OK) st = gm_fgraph_from_models(S->orig, S->mptr, c->nmodels, err);
    if (st == GM_OK) st = gm_backend_cpu_create(&S->be, c->threads, err);
    if (st == GM_OK) st = open_logs(S, err);
    char cache[1200];
    snprintf(cache, sizeof cache, "%s/teacher.h5", c->out);
    const char *data[GM_MF_MAX_TASKS];
    for (int t = 0; t < c->nmodels; t++) data[t] = c->data[t][0] ? c->data[t] : NULL;
    gm_ft_data_opts fo = {.samples = c->ft_samples, .val_samples = c->val_samples, .seed = c->seed,
                          .threads = c->threads, .cache = cache, .data = data};
    if (st == GM_OK) st = gm_ft_data_load(&S->data, S->mptr, c->nmodels, &fo, err);
    for (int t = 0; st == GM_OK && t < c->nmodels; t++) s->orig_val[t] = S->data.orig_val[t];
    if (st == GM_OK) st = baseline(S, &s->base_latency_ms, err);
    return st;
}

gm_status gm_search_run(const gm_search_config *c, void (*progress)(void *ctx, const gm_search_event *e),
                        void *ctx, const volatile sig_atomic_t *stop, gm_search_summary *s, gm_error *err)
{
    memset(s, 0, sizeof *s);
    s->best_id = -1;
    s->best_latency_ms = NAN;
    search S = {.c = c, .s = s};
    const double t_start = gm_now_s();
    gm_status st = setup(&S, err);
    gm_rng rng;
    gm_rng_seed(&rng, c->seed);
    double T = c->t0, last_drop = 1.0;
    gm_fgraph *cand = malloc(sizeof *cand);
    if (st == GM_OK && !cand) st = gm_error_set(err, GM_ENOMEM, "out of memory");
    for (int it = 0; st == GM_OK && it < c->iterations; it++) {
        if ((stop && *stop) || (c->time_budget_s > 0 && gm_now_s() - t_start > c->time_budget_s)) {
            s->interrupted = 1;
            break;
        }
        const double t0 = gm_now_s();
        double p = 0.0;
        if (c->policy == GM_POLICY_SA && S.nelites > 0) {
            double drop = last_drop < 0 ? 0 : last_drop > 1 ? 1 : last_drop;
            p = (1.0 - exp(-(1.0 - drop) * c->t0 / T)) * sqrt((double)S.nelites / c->max_elites);
        }
        int src = -1;
        if (gm_rng_uniform(&rng) < p) src = (int)gm_rng_below(&rng, (uint32_t)S.nelites);
        *cand = src < 0 ? *S.orig : *S.elites[src].g;
        T *= c->alpha;
        gm_error merr;
        if (gm_mutate_random(cand, &rng, c->merges, c->relaxed_below, &merr) != GM_OK) continue; /* nothing to merge */
        uint64_t loc = gm_fgraph_location_hash(cand), top = gm_fgraph_topology_hash(cand);
        gm_search_event e = {.id = s->candidates, .iteration = it, .source = src < 0 ? -1 : S.elites[src].id,
                             .nodes = cand->nnodes, .params = gm_fgraph_nparams(cand),
                             .mflops = (double)gm_fgraph_flops(cand) / 1e6, .latency_ms = NAN, .speedup = NAN,
                             .base_latency_ms = NAN,
                             .worst_drop = NAN};
        s->candidates++;
        gm_ft_result r; /* outlives the branch: e.val points into it until the event is recorded */
        gm_features feat;
        gm_filter_features(cand, &feat);
        if (has(S.seen, S.nseen, loc) || has(S.passed_top, S.npassed_top, top)) {
            e.status = "duplicate";
            s->duplicates++;
        } else if (c->filter_dominance && gm_failures_match(&S.failures, &feat) >= 0) {
            e.status = "filtered";
            s->filtered++;
        } else {
            S.seen[S.nseen++] = loc;
            gm_mfile w = {0};
            double lat, base_lat;
            st = evaluate(&S, cand, e.id, &w, &r, &lat, &base_lat, err);
            if (st != GM_OK) {
                gm_mfile_free(&w);
                break;
            }
            e.status = gm_ft_status_name(r.status);
            e.epochs = r.epochs;
            e.latency_ms = lat;
            e.base_latency_ms = base_lat;
            e.speedup = base_lat / lat; /* both measured now, alternating */
            e.worst_drop = r.worst_drop;
            e.val = r.val;
            s->ft_epochs += r.epochs;
            last_drop = r.worst_drop;
            if (r.status == GM_FT_PASSED) {
                s->passed++;
                S.passed_top[S.npassed_top++] = top;
                if (s->best_id < 0 || e.speedup > s->speedup) {
                    s->best_id = e.id;
                    s->best_latency_ms = lat;
                    s->best_base_ms = base_lat;
                    s->speedup = e.speedup;
                    memcpy(s->best_val, r.val, sizeof(double) * (size_t)s->ntasks);
                    gm_mfile_free(&S.best);
                    st = gm_mfile_copy(&S.best, &w, err);
                }
                if (st == GM_OK && c->policy == GM_POLICY_SA) st = add_elite(&S, cand, &w, e.id, lat, err);
            } else {
                s->failed += r.status == GM_FT_FAILED;
                s->aborted += r.status == GM_FT_ABORTED;
                if (gm_failures_add(&S.failures, &feat) != 0) st = gm_error_set(err, GM_ENOMEM, "out of memory");
            }
            gm_mfile_free(&w);
        }
        e.seconds = gm_now_s() - t0;
        e.best_speedup = s->best_id >= 0 ? s->speedup : NAN;
        if (S.csv) record(&S, &e, loc, top);
        if (progress) progress(ctx, &e);
    }
    free(cand);
    if (s->best_id < 0) s->speedup = NAN;
    if (st == GM_OK) {
        for (int t = 0; t < s->ntasks; t++) s->best_test[t] = s->orig_test[t] = NAN;
        for (int t = 0; st == GM_OK && t < c->nmodels; t++) {
            double acc[GM_MF_MAX_TASKS];
            st = test_accuracy(&S, &S.models[t], acc, err);
            s->orig_test[t] = acc[t];
        }
        if (st == GM_OK && s->best_id >= 0) {
            st = test_accuracy(&S, &S.best, s->best_test, err);
            for (int t = 0; st == GM_OK && t < s->ntasks; t++) S.best.tasks[t].test_accuracy = s->best_test[t];
            char p[1200];
            snprintf(p, sizeof p, "%s/best.h5", c->out);
            if (st == GM_OK) st = gm_mfile_save(p, &S.best, err);
        }
        s->wall_s = gm_now_s() - t_start;
        if (st == GM_OK) st = write_summary(&S, err);
    }
    search_free(&S);
    return st;
}

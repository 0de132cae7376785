#define _POSIX_C_SOURCE 200809L
/*
 * The end of a sweep (gm_search_finish): the final choice among the passed
 * models still held, test scores of the originals and of the best, best.h5,
 * summary.md (gm_results) and the final checkpoint with what the report needs.
 */
#include "gm_search.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gm_dataset.h"
#include "gm_fs.h"
#include "gm_search_int.h"
#include "gm_train.h"

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
static gm_status final_choice(gm_search *S, gm_backend *be, gm_net *const *base, gm_search_summary *s,
                              gm_error *err)
{
    const gm_search_config *c = S->c;
    gm_status st = GM_OK;
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
    return st;
}

/* The originals as batch-1 nets on be, the peer of every re-timing at the end. */
static gm_status open_originals(gm_search *S, gm_backend *be, gm_net **base, gm_error *err)
{
    gm_status st = GM_OK;
    for (int t = 0; st == GM_OK && t < S->c->nmodels; t++) {
        gm_net_desc bd = gm_mfile_desc(S->o.models[t]);
        st = gm_net_create(&base[t], be, &bd, 1, 1, err);
        if (st == GM_OK) st = gm_mfile_to_net(S->o.models[t], base[t], err);
    }
    return st;
}

/*
 * A fused model's test accuracies (acc, in task order) into its file, with
 * the dataset each task was scored on when the config gave one (imported
 * models record none), so `gmorph eval FILE` needs no --data; saved at path.
 */
static gm_status score_and_save(gm_search *S, gm_backend *be, gm_mfile *m, const char *path, double *acc,
                                gm_error *err)
{
    const gm_search_config *c = S->c;
    gm_status st = test_accuracy(S, be, m, acc, err);
    for (int t = 0; st == GM_OK && t < m->ntasks; t++)
        for (int j = 0; j < c->nmodels; j++)
            if (!strcmp(S->o.models[j]->tasks[0].name, m->tasks[t].name)) {
                m->tasks[t].test_accuracy = acc[j];
                if (c->data[j][0]) snprintf(m->tasks[t].dataset, sizeof m->tasks[t].dataset, "%s", c->data[j]);
            }
    return st == GM_OK ? gm_mfile_save(path, m, err) : st;
}

static int by_speed(const void *a, const void *b)
{
    const gm_pareto_row *x = a, *y = b;
    return (x->speedup < y->speedup) - (x->speedup > y->speedup);
}

/* Files of an earlier end in OUT/pareto: the set may have changed since (a resumed sweep). */
static gm_status clear_pareto(const char *dir, gm_error *err)
{
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? GM_OK : gm_error_set(err, GM_EIO, "%s: cannot read: %s", dir, strerror(errno));
    gm_status st = GM_OK;
    struct dirent *e;
    while (st == GM_OK && (e = readdir(d))) {
        const size_t n = strlen(e->d_name);
        if (n < 4 || strcmp(e->d_name + n - 3, ".h5") != 0) continue;
        char p[1400];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (unlink(p) != 0) st = gm_error_set(err, GM_EIO, "%s: cannot remove: %s", p, strerror(errno));
    }
    closedir(d);
    return st;
}

/*
 * The Pareto set (gm_ckpt.h) as model files, OUT/pareto/<speed-up>x-<drop>.h5
 * (the speed-up timed again here, the worst validation drop in points; -<id>
 * after a name already taken), each scored on the test split, and its table:
 * one sweep serves several operating points.
 */
static gm_status write_pareto(gm_search *S, gm_backend *be, gm_backend *lat, gm_net *const *base,
                             gm_search_summary *s, gm_error *err)
{
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/pareto", S->c->out);
    gm_status st = clear_pareto(dir, err);
    if (st != GM_OK || S->npareto == 0) return st;
    if (gm_fs_mkdirs(dir) != 0) return gm_error_set(err, GM_EIO, "%s: cannot create: %s", dir, strerror(errno));
    gm_pareto_row *rows = calloc((size_t)S->npareto, sizeof *rows);
    if (!rows) return gm_error_set(err, GM_ENOMEM, "out of memory");
    for (int k = 0; st == GM_OK && k < S->npareto; k++) {
        const gm_ckpt_cand *r = &S->rows[S->pareto[k].id];
        rows[k] = (gm_pareto_row){.id = r->id, .speedup = r->speedup, .mflops = r->mflops, .worst_drop = r->worst_drop};
        double ms, base_ms;
        st = retime(S, lat, &S->pareto[k].w, base, &ms, &base_ms, err);
        if (st == GM_OK) rows[k].speedup = base_ms / ms;
    }
    /*
     * The set was kept by the speed-ups the sweep measured, each from one busy
     * moment; timed again together, a member may now be beaten by another. Those
     * leave (deterministic mode keeps its set: fewer MFLOPs decided it, not timing).
     */
    int n = 0;
    for (int k = 0; k < S->npareto; k++) {
        int beaten = 0;
        for (int j = 0; !S->c->deterministic && j < S->npareto; j++)
            beaten |= j != k &&
                      gm_search_beats(rows[j].speedup, rows[j].worst_drop, rows[k].speedup, rows[k].worst_drop);
        if (!beaten) rows[n++] = rows[k];
    }
    qsort(rows, (size_t)n, sizeof *rows, by_speed);
    for (int i = 0; st == GM_OK && i < n; i++) {
        gm_pareto_row *r = &rows[i];
        snprintf(r->file, sizeof r->file, "%.2fx-%.2f.h5", r->speedup, 100 * r->worst_drop);
        for (int j = 0; j < i; j++)
            if (!strcmp(rows[j].file, r->file)) snprintf(r->file, sizeof r->file, "%.2fx-%.2f-%d.h5", r->speedup,
                                                         100 * r->worst_drop, r->id);
        int k = 0;
        while (S->pareto[k].id != r->id) k++;
        char p[1200];
        snprintf(p, sizeof p, "%s/%s", dir, r->file);
        st = score_and_save(S, be, &S->pareto[k].w, p, r->test, err);
    }
    if (st == GM_OK) st = gm_results_pareto(S->c->out, s, rows, n, err);
    if (st == GM_OK) s->npareto = n;
    free(rows);
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
    gm_backend *lat = one ? one : S->o.latency_device;
    gm_net *base[GM_MF_MAX_TASKS] = {0};
    if (st == GM_OK && S->best_id >= 0) st = open_originals(S, lat, base, err);
    if (st == GM_OK && S->best_id >= 0) st = final_choice(S, lat, base, s, err);
    if (st == GM_OK && S->best_id >= 0) {
        char p[1200];
        snprintf(p, sizeof p, "%s/best.h5", c->out);
        st = score_and_save(S, be, &S->best, p, s->best_test, err);
    }
    if (st == GM_OK) st = write_pareto(S, be, lat, base, s, err);
    for (int t = 0; t < c->nmodels; t++) gm_net_free(base[t]);
    gm_backend_free(one);
    gm_backend_free(be);
    s->wall_s = gm_search_elapsed(S);
    if (st == GM_OK) keep_summary(S, s);
    if (st == GM_OK) st = gm_results_summary(c->out, c, s, err);
    if (st == GM_OK) st = gm_search_checkpoint(S, err); /* with the final choice of best */
    return st;
}

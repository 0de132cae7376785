#define _POSIX_C_SOURCE 200809L
#include "gm_finetune.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gm_clock.h"
#include "gm_h5.h"
#include "gm_optim.h"
#include "gm_train.h"

enum { EVAL_BATCH = GM_FT_EVAL_BATCH };

const char *gm_ft_status_name(gm_ft_status s)
{
    static const char *const names[] = {"passed", "failed", "aborted"};
    return (unsigned)s < 3 ? names[s] : "?";
}

void gm_ft_data_free(gm_ft_data *d)
{
    free(d->x_ft);
    for (int t = 0; t < GM_MF_MAX_TASKS; t++) {
        free(d->teacher[t]);
        free(d->x_val[t]);
        free(d->y_val[t]);
    }
    memset(d, 0, sizeof *d);
}

/* Output index of block `head` in net, or -1. */
static int output_of(gm_net *net, int head)
{
    for (int o = 0; o < gm_net_noutputs(net); o++)
        if (gm_net_output_block(net, o) == head) return o;
    return -1;
}

/* Runs net in eval mode over n samples of x; logits of output `out` to y (n * classes). */
static gm_status forward_all(gm_net *net, const float *x, long n, size_t numel, int nout, const int *outs,
                             const int *classes, float **y, gm_error *err)
{
    gm_backend *be = gm_net_backend(net);
    for (long i = 0; i < n; i += EVAL_BATCH) {
        int b = (int)(n - i < EVAL_BATCH ? n - i : EVAL_BATCH);
        gm_status st = gm_net_forward(net, x + (size_t)i * numel, b, 0, err);
        if (st != GM_OK) return st;
        for (int k = 0; k < nout; k++)
            be->to_host(be, y[k] + (size_t)i * classes[k], gm_net_output(net, outs[k]),
                        sizeof(float) * (size_t)b * classes[k]);
    }
    return be->status(be, err); /* a failed forward on a device left garbage logits */
}

static long correct(const float *logits, const int32_t *y, long n, int classes)
{
    long ok = 0;
    for (long i = 0; i < n; i++) ok += gm_top1(logits + (size_t)i * classes, classes) == y[i];
    return ok;
}

static double accuracy(const float *logits, const int32_t *y, long n, int classes)
{
    return n ? (double)correct(logits, y, n, classes) / (double)n : 0.0;
}

/* ---- the data-parallel group -------------------------------------------- */

static int grouped(const gm_ft_group *g) { return g && g->size > 1; }

/* Rows [lo, hi) of n that this rank takes: an even split, the first n % size ranks one more. */
static void shard(long n, const gm_ft_group *g, long *lo, long *hi)
{
    if (!grouped(g)) {
        *lo = 0;
        *hi = n;
        return;
    }
    const long q = n / g->size, rem = n % g->size, r = g->rank;
    *lo = r * q + (r < rem ? r : rem);
    *hi = *lo + q + (r < rem);
}

/*
 * g->sum over n floats of buf, in the backend's memory (the CPU backend's is the
 * host; a device backend's group sums device pointers). A rank whose own work
 * failed (st != GM_OK) still joins, with a NaN in buf[0], so the others learn
 * of it from the sum instead of waiting forever at the next collective; it
 * keeps its own error, they get one naming the step.
 */
static gm_status group_sum(const gm_ft_group *g, gm_backend *be, float *buf, size_t n, gm_status st,
                           const char *what, gm_error *err)
{
    if (st != GM_OK) {
        const float nan = NAN;
        be->to_device(be, buf, &nan, sizeof nan);
    }
    gm_error ignored;
    gm_status s = g->sum(g->ctx, buf, n, st == GM_OK ? err : &ignored);
    if (st != GM_OK || s != GM_OK) return st != GM_OK ? st : s;
    float first;
    be->to_host(be, &first, buf, sizeof first);
    if (!isfinite(first))
        return gm_error_set(err, GM_ENUMERIC, "fine-tune: %s: rank %d of %d got a non-finite sum (another rank failed, "
                            "or the values diverged)", what, g->rank, g->size);
    return GM_OK;
}

/* The fingerprint a teacher cache must match: models, datasets, sizes, seed. */
static void fingerprint(char *buf, size_t cap, const gm_mfile *const *models, int n, const char *const *paths,
                        const gm_ft_data_opts *o)
{
    int k = snprintf(buf, cap, "samples=%ld val=%ld seed=%llu", o->samples, o->val_samples,
                     (unsigned long long)o->seed);
    for (int t = 0; t < n && k < (int)cap; t++)
        k += snprintf(buf + k, cap - (size_t)k, ";%s:%s:%zu:%.9g", paths[t], models[t]->arch, models[t]->nparams,
                      models[t]->nparams ? (double)models[t]->params[models[t]->nparams / 2] : 0.0);
}

static gm_status cache_load(gm_ft_data *d, const char *path, const char *fp, int *hit, gm_error *err)
{
    *hit = 0;
    hid_t f;
    if (!path || access(path, F_OK) != 0 || gm_h5_open(&f, path, 0, err) != GM_OK) return GM_OK;
    char have[2048] = "";
    gm_status st = gm_h5_attr_read_str(f, "fingerprint", have, sizeof have, err);
    if (st == GM_OK && !strcmp(have, fp)) {
        for (int t = 0; st == GM_OK && t < d->n; t++) {
            char name[32];
            hsize_t dims[2] = {(hsize_t)d->nft, (hsize_t)d->classes[t]};
            snprintf(name, sizeof name, "teacher%d", t);
            st = gm_h5_read(f, name, H5T_NATIVE_FLOAT, 2, dims, d->teacher[t], err);
        }
        *hit = st == GM_OK;
    }
    gm_h5_close_file(f);
    return GM_OK; /* a bad cache is recomputed, not an error */
}

static gm_status cache_save(const gm_ft_data *d, const char *path, const char *fp, gm_error *err)
{
    hid_t f;
    gm_status st = gm_h5_create(&f, path, err);
    if (st != GM_OK) return st;
    st = gm_h5_attr_write_str(f, "fingerprint", fp, err);
    for (int t = 0; st == GM_OK && t < d->n; t++) {
        char name[32];
        hsize_t dims[2] = {(hsize_t)d->nft, (hsize_t)d->classes[t]};
        snprintf(name, sizeof name, "teacher%d", t);
        st = gm_h5_write(f, name, H5T_NATIVE_FLOAT, 2, dims, d->teacher[t], err);
    }
    if (st == GM_OK) return gm_h5_commit(f, path, err);
    gm_h5_discard(f, path);
    return st;
}

/* Seeded sample of `want` rows out of n (all of them, in order, when want >= n). */
static long pick_rows(long n, long want, uint64_t seed, int salt, long *rows)
{
    if (want <= 0 || want >= n) {
        for (long i = 0; i < n; i++) rows[i] = i;
        return n;
    }
    gm_ds_epoch_order(n, seed, salt, rows);
    return want;
}

/*
 * Refuses a distillation set that cannot fit in this machine's memory, with an
 * estimate, before allocating it: the kernel would otherwise kill the rank
 * mid-allocation with nothing said. Inputs only (the logits are a few floats a sample).
 */
static gm_status fits_in_memory(long rows, size_t numel, const char *path, gm_error *err)
{
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    double have = pages > 0 && page > 0 ? (double)pages * (double)page : INFINITY;
    /* A rank's share of a node shared with others (its ranks, other jobs): GMORPH_MEMORY_GB, when set. */
    const char *cap = getenv("GMORPH_MEMORY_GB");
    const char *why = "this machine's";
    if (cap && *cap && strtod(cap, NULL) > 0) {
        have = strtod(cap, NULL) * 1073741824.0;
        why = "GMORPH_MEMORY_GB's";
    }
    const double need = (double)rows * (double)numel * sizeof(float);
    if (need <= have) return GM_OK;
    return gm_error_set(err, GM_ENOMEM,
                        "distillation set: %ld samples of %zu values (up to %s) need %.2f GiB, more than %s "
                        "%.2f GiB of memory (lower finetune.samples or finetune.pool)",
                        rows, numel, path, need / 1073741824.0, why, have / 1073741824.0);
}

/* Distillation inputs from every distinct dataset, then validation data per task. */
static gm_status load_inputs(gm_ft_data *d, const gm_mfile *const *models, const char *const *paths,
                             const gm_ft_data_opts *o, gm_error *err)
{
    gm_status st = GM_OK;
    long cap = 0;
    for (int t = 0; st == GM_OK && t < d->n; t++) {
        int first = 1;
        for (int u = 0; u < t; u++)
            if (!strcmp(paths[u], paths[t])) { /* the same dataset: the same distillation rows */
                first = 0;
                d->ft_first[t] = d->ft_first[u];
                d->ft_count[t] = d->ft_count[u];
            }
        gm_dataset *ds;
        st = gm_ds_open(&ds, paths[t], err);
        if (st != GM_OK) break;
        const gm_ds_info *info = gm_ds_get_info(ds);
        int task = gm_ds_task_index(ds, models[t]->tasks[0].name);
        if (task < 0)
            st = gm_error_set(err, GM_EINVAL, "%s has no task \"%s\" (the task of model %d)", paths[t],
                              models[t]->tasks[0].name, t);
        else if (info->shape.c != d->input.c || info->shape.h != d->input.h || info->shape.w != d->input.w)
            st = gm_error_set(err, GM_ESHAPE, "%s holds %dx%dx%d samples, the models read %dx%dx%d", paths[t],
                              info->shape.c, info->shape.h, info->shape.w, d->input.c, d->input.h, d->input.w);
        if (st == GM_OK) st = gm_ds_require(ds, GM_SPLIT_VAL, err);
        if (st == GM_OK && first) st = gm_ds_require(ds, GM_SPLIT_TRAIN, err);
        if (st == GM_OK) gm_ds_set_normalisation(ds, models[0]->mean, models[0]->std);
        long ntr = info->n[GM_SPLIT_TRAIN], nva = info->n[GM_SPLIT_VAL];
        long *rows = st == GM_OK ? malloc(sizeof(long) * (size_t)(ntr > nva ? ntr : nva)) : NULL;
        if (st == GM_OK && !rows) st = gm_error_set(err, GM_ENOMEM, "out of memory");
        if (st == GM_OK && first) {
            long k = pick_rows(ntr, o->samples, o->seed, 1000 + t, rows);
            st = fits_in_memory(cap + k, d->numel, paths[t], err);
            float *x = realloc(d->x_ft, sizeof(float) * (size_t)(cap + k) * d->numel);
            if (!x) st = gm_error_set(err, GM_ENOMEM, "out of memory for %ld distillation samples", cap + k);
            else d->x_ft = x;
            for (long i = 0; st == GM_OK && i < k; i += 256)
                st = gm_ds_read(ds, GM_SPLIT_TRAIN, rows + i, (int)(k - i < 256 ? k - i : 256),
                                d->x_ft + (size_t)(cap + i) * d->numel, err);
            d->ft_first[t] = cap;
            d->ft_count[t] = k;
            cap += k;
        }
        if (st == GM_OK) {
            /* Not the sweep's seed: sweeps of other seeds score on the same samples, so their drops compare. */
            long k = pick_rows(nva, o->val_samples, GM_FT_VAL_SEED, 2000, rows);
            const int32_t *lab = gm_ds_labels(ds, GM_SPLIT_VAL, task);
            d->nval[t] = k;
            d->x_val[t] = malloc(sizeof(float) * (size_t)k * d->numel);
            d->y_val[t] = malloc(sizeof(int32_t) * (size_t)k);
            if (!d->x_val[t] || !d->y_val[t]) st = gm_error_set(err, GM_ENOMEM, "out of memory");
            for (long i = 0; st == GM_OK && i < k; i++) d->y_val[t][i] = lab[rows[i]];
            for (long i = 0; st == GM_OK && i < k; i += 256)
                st = gm_ds_read(ds, GM_SPLIT_VAL, rows + i, (int)(k - i < 256 ? k - i : 256),
                                d->x_val[t] + (size_t)i * d->numel, err);
        }
        free(rows);
        gm_ds_close(ds);
    }
    d->nft = cap;
    return st;
}

gm_status gm_ft_data_load(gm_ft_data *d, const gm_mfile *const *models, int n, const gm_ft_data_opts *o,
                          gm_error *err)
{
    memset(d, 0, sizeof *d);
    if (n < 1 || n > GM_MF_MAX_TASKS) return gm_error_set(err, GM_EINVAL, "fine-tune data: %d models", n);
    d->n = n;
    d->input = models[0]->input;
    d->numel = gm_shape_numel(d->input);
    const char *paths[GM_MF_MAX_TASKS];
    for (int t = 0; t < n; t++) {
        paths[t] = o->data && o->data[t] ? o->data[t] : models[t]->tasks[0].dataset;
        d->classes[t] = models[t]->tasks[0].classes;
        snprintf(d->task_name[t], sizeof d->task_name[t], "%s", models[t]->tasks[0].name);
        if (!paths[t][0])
            return gm_error_set(err, GM_EINVAL, "model %d (task %s) records no dataset: name one in the config", t,
                                d->task_name[t]);
    }
    gm_status st = load_inputs(d, models, paths, o, err);
    for (int t = 0; st == GM_OK && t < n; t++)
        if (!(d->teacher[t] = malloc(sizeof(float) * (size_t)d->nft * d->classes[t])))
            st = gm_error_set(err, GM_ENOMEM, "out of memory for teacher logits");
    char fp[2048];
    fingerprint(fp, sizeof fp, models, n, paths, o);
    int hit = 0;
    if (st == GM_OK) st = cache_load(d, o->cache, fp, &hit, err);
    /* The originals: teacher logits (unless cached) and their own validation accuracy. */
    gm_backend *be = NULL;
    if (st == GM_OK) st = gm_backend_cpu_create(&be, o->threads, err);
    for (int t = 0; st == GM_OK && t < n; t++) {
        gm_net *net = NULL;
        gm_net_desc desc = gm_mfile_desc(models[t]);
        st = gm_net_create(&net, be, &desc, EVAL_BATCH, 1, err);
        if (st == GM_OK) st = gm_mfile_to_net(models[t], net, err);
        int out = 0, cls = d->classes[t];
        if (st == GM_OK && !hit) st = forward_all(net, d->x_ft, d->nft, d->numel, 1, &out, &cls, &d->teacher[t], err);
        float *logits = st == GM_OK ? malloc(sizeof(float) * (size_t)d->nval[t] * cls) : NULL;
        if (st == GM_OK && !logits) st = gm_error_set(err, GM_ENOMEM, "out of memory");
        if (st == GM_OK) st = forward_all(net, d->x_val[t], d->nval[t], d->numel, 1, &out, &cls, &logits, err);
        if (st == GM_OK) d->orig_val[t] = accuracy(logits, d->y_val[t], d->nval[t], cls);
        free(logits);
        gm_net_free(net);
    }
    gm_backend_free(be);
    if (st == GM_OK && !hit && o->cache) st = cache_save(d, o->cache, fp, err);
    if (st != GM_OK) gm_ft_data_free(d);
    return st;
}

/*
 * Validation accuracy, each task's validation set split across the group's
 * ranks: the correct counts are summed (floats hold counts below 2^24
 * exactly), so every rank gets the same accuracies. The gradient array carries
 * the counts: it is free between steps (each step zeroes it before backward),
 * already in the memory the group sums, and needs no allocation that could fail
 * on one rank only.
 */
static gm_status eval_group(gm_net *net, const int *heads, const gm_ft_data *d, const gm_ft_group *g, double *acc,
                            gm_error *err)
{
    gm_status st = GM_OK;
    long lo[GM_MF_MAX_TASKS], hi[GM_MF_MAX_TASKS], maxn = 1;
    int maxc = 0;
    for (int t = 0; t < d->n; t++) {
        maxc = d->classes[t] > maxc ? d->classes[t] : maxc;
        shard(d->nval[t], g, &lo[t], &hi[t]);
        maxn = hi[t] - lo[t] > maxn ? hi[t] - lo[t] : maxn;
    }
    float count[GM_MF_MAX_TASKS] = {0};
    float *logits = malloc(sizeof(float) * (size_t)maxn * maxc);
    if (!logits) st = gm_error_set(err, GM_ENOMEM, "out of memory");
    /* Tasks sharing a validation set could share forwards; the sets are small, keep it simple. */
    for (int t = 0; st == GM_OK && t < d->n; t++) {
        int out = output_of(net, heads[t]);
        if (out < 0) {
            st = gm_error_set(err, GM_EINVAL, "fine-tune: task %d's head (block %d) is not an output", t, heads[t]);
            break;
        }
        st = forward_all(net, d->x_val[t] + (size_t)lo[t] * d->numel, hi[t] - lo[t], d->numel, 1, &out,
                         &d->classes[t], &logits, err);
        if (st == GM_OK) count[t] = (float)correct(logits, d->y_val[t] + lo[t], hi[t] - lo[t], d->classes[t]);
    }
    free(logits);
    if (grouped(g)) {
        gm_backend *be = gm_net_backend(net);
        float *buf = gm_net_grads(net);
        if (st == GM_OK) be->to_device(be, buf, count, sizeof(float) * (size_t)d->n);
        st = group_sum(g, be, buf, (size_t)d->n, st, "validation counts", err);
        if (st == GM_OK) be->to_host(be, count, buf, sizeof(float) * (size_t)d->n);
    }
    for (int t = 0; st == GM_OK && t < d->n; t++) acc[t] = d->nval[t] ? (double)count[t] / (double)d->nval[t] : 0.0;
    return st;
}

gm_status gm_ft_eval(gm_net *net, const int *heads, const gm_ft_data *d, double *acc, gm_error *err)
{
    return eval_group(net, heads, d, NULL, acc, err);
}

/*
 * Batch-statistics BatchNorm updates each rank's running statistics from its
 * own shard; averaging them, weighted by rows, keeps the ranks identical (the
 * running means then equal one update by the global batch mean).
 */
static gm_status sync_stats(gm_net *net, const gm_ft_group *g, float *host, double weight, gm_error *err)
{
    gm_backend *be = gm_net_backend(net);
    const size_t n = gm_net_nbuffers(net);
    float *buf = gm_net_buffers(net);
    be->to_host(be, host, buf, sizeof(float) * n);
    for (size_t i = 0; i < n; i++) host[i] = (float)(host[i] * weight);
    be->to_device(be, buf, host, sizeof(float) * n);
    return group_sum(g, be, buf, n, GM_OK, "BatchNorm statistics", err);
}

/*
 * The feature losses of one step (after the fused net's forward on x):
 * each distinct teacher runs once; scales are fixed on the first call.
 */
static gm_status feature_losses(gm_net *net, const gm_ft_opts *o, const float *x, int m, float scale,
                                float *fscale, gm_error *err)
{
    gm_status st = GM_OK;
    for (int k = 0; st == GM_OK && k < o->nfeatures; k++) {
        const gm_ft_feature *f = &o->features[k];
        int seen = 0;
        for (int j = 0; j < k; j++) seen |= o->features[j].teacher == f->teacher;
        if (!seen) st = gm_net_forward(f->teacher, x, m, 0, err);
    }
    for (int k = 0; st == GM_OK && k < o->nfeatures; k++) {
        const gm_ft_feature *f = &o->features[k];
        const float *t = gm_net_activation(f->teacher, f->teacher_block, -1);
        if (fscale[k] <= 0.0f) { /* weight over the teacher's mean square, from this first batch */
            gm_backend *be = gm_net_backend(net);
            const size_t n = (size_t)m * gm_shape_numel(gm_net_activation_shape(f->teacher, f->teacher_block, -1));
            float *h = malloc(sizeof(float) * n);
            if (!h) return gm_error_set(err, GM_ENOMEM, "fine-tune: out of memory");
            be->to_host(be, h, t, sizeof(float) * n);
            double ms = 0.0;
            for (size_t i = 0; i < n; i++) ms += (double)h[i] * h[i];
            free(h);
            ms /= (double)(n ? n : 1);
            fscale[k] = (float)(o->feature_weight / (ms > 1e-12 ? ms : 1e-12));
        }
        float loss;
        st = gm_net_block_loss(net, f->block, t, fscale[k] * scale, &loss, err);
    }
    return st;
}

/* GMorph's sub-graph level: blocks outside the trained set keep their weights. */
static void freeze_blocks(gm_net *net, const char *train_block)
{
    gm_backend *be = gm_net_backend(net);
    const int nb = gm_net_nblocks(net);
    for (int b = 0; b < nb; b++) {
        if (train_block[b]) continue;
        size_t lo = gm_net_block_param_offset(net, b);
        size_t hi = b + 1 < nb ? gm_net_block_param_offset(net, b + 1) : gm_net_nparams(net);
        if (hi > lo) be->zero(be, gm_net_grads(net) + lo, sizeof(float) * (hi - lo));
    }
}

/* The learning-curve check (o->abort_check) for every task short of its target: 1 if any would not reach it by horizon. */
static int curve_aborts(const gm_ft_opts *o, const gm_ft_data *d, const double *acc, const double *ep,
                        double (*curve)[256], int npts, int horizon)
{
    for (int t = 0; o->abort_check && t < d->n; t++)
        if (d->orig_val[t] - acc[t] > o->threshold &&
            o->abort_check(o->abort_ctx, ep, curve[t], npts, horizon, d->orig_val[t] - o->threshold))
            return 1;
    return 0;
}

static double worst_drop(const gm_ft_data *d, const double *acc)
{
    double w = -1.0;
    for (int t = 0; t < d->n; t++) w = d->orig_val[t] - acc[t] > w ? d->orig_val[t] - acc[t] : w;
    return w;
}

gm_status gm_finetune(gm_net *net, const int *heads, const gm_ft_data *d, const gm_ft_opts *o, gm_ft_result *r,
                      gm_error *err)
{
    memset(r, 0, sizeof *r);
    r->first_drop = NAN;
    const double t0 = gm_now_s();
    gm_backend *be = gm_net_backend(net);
    const gm_ft_group *g = grouped(o->group) ? o->group : NULL;
    const int B = o->batch, n = d->n;
    /* This rank's rows of every batch; the loss scale makes the group's summed gradient the full batch's mean. */
    long lo, hi;
    shard(B, g, &lo, &hi);
    const int m = (int)(hi - lo);
    const float scale = (float)m / (float)B;
    const int sync_bn = g && !o->frozen_bn && gm_net_nbuffers(net) > 0;
    gm_status st = GM_OK;
    int outs[GM_MF_MAX_TASKS];
    for (int t = 0; st == GM_OK && t < n; t++)
        if ((outs[t] = output_of(net, heads[t])) < 0)
            st = gm_error_set(err, GM_EINVAL, "fine-tune: task %d's head (block %d) is not an output", t, heads[t]);
    /* Each epoch's shuffle of the whole pool, cut to the epoch's rows: a fresh subset every epoch. */
    const long per_epoch = (o->epoch_rows > 0 && o->epoch_rows < d->nft ? o->epoch_rows : d->nft) / B;
    if (st == GM_OK && per_epoch < 1)
        st = gm_error_set(err, GM_EINVAL, "fine-tune: %ld samples an epoch, fewer than a batch of %d",
                          o->epoch_rows > 0 && o->epoch_rows < d->nft ? o->epoch_rows : d->nft, B);
    gm_optim *opt = NULL;
    if (st == GM_OK)
        st = gm_optim_create(&opt, be, gm_update_adam(o->lr, 0.9f, 0.999f, 1e-8f, 0.0f), gm_net_nparams(net), err);
    long *order = malloc(sizeof(long) * (size_t)d->nft);
    float *x = malloc(sizeof(float) * (size_t)B * d->numel);
    float *stats = sync_bn ? malloc(sizeof(float) * gm_net_nbuffers(net)) : NULL;
    float *target[GM_MF_MAX_TASKS] = {0};
    float *fscale = o->nfeatures > 0 ? calloc((size_t)o->nfeatures, sizeof(float)) : NULL;
    for (int t = 0; t < n; t++) target[t] = malloc(sizeof(float) * (size_t)B * d->classes[t]);
    int ok = order && x && (stats || !sync_bn) && (fscale || o->nfeatures <= 0);
    for (int k = 0; st == GM_OK && k < o->nfeatures; k++) st = gm_net_reserve_block_loss(net, o->features[k].block, err);
    for (int t = 0; t < n; t++) ok &= target[t] != NULL;
    if (st == GM_OK && !ok) st = gm_error_set(err, GM_ENOMEM, "fine-tune: out of memory");
    /* Dropout (train mode only): the same stream on every rank would give each shard the others' masks. */
    if (g && !o->frozen_bn) gm_rng_seed(gm_net_rng(net), o->seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(g->rank + 1)));
    if (g) { /* every rank starts, or none */
        be->zero(be, gm_net_grads(net), sizeof(float));
        st = group_sum(g, be, gm_net_grads(net), 1, st, "set-up", err);
    }
    /* Learning curves of every task, for the early abort. */
    double ep[256], curve[GM_MF_MAX_TASKS][256];
    int npts = 0;
    double loss_sum = 0; /* this rank's loss over the epoch so far, times rows */
    long rows_seen = 0;
    int last = o->max_epochs; /* the budget, extended once at most */
    r->status = GM_FT_FAILED;
    for (int e = 0; st == GM_OK; e++) {
        if (e % o->check_every == 0 || e == last) {
            st = eval_group(net, heads, d, g, r->val, err);
            if (st != GM_OK) break;
            r->worst_drop = worst_drop(d, r->val);
            if (e == 0) r->first_drop = r->worst_drop;
            if (r->nchecks < GM_FT_MAX_CHECKS) {
                gm_ft_check *c = &r->checks[r->nchecks++];
                c->epoch = e;
                c->loss = e > 0 && rows_seen > 0 ? loss_sum / (double)rows_seen : NAN;
                memcpy(c->val, r->val, sizeof c->val);
            }
            if (r->worst_drop <= o->threshold) {
                r->status = GM_FT_PASSED;
                break;
            }
            if (npts < 256) {
                ep[npts] = e;
                for (int t = 0; t < n; t++) curve[t][npts] = r->val[t];
                npts++;
            }
            if (e == last && last == o->max_epochs && o->extra_epochs > 0 && o->abort_check && npts >= 3 &&
                !curve_aborts(o, d, r->val, ep, curve, npts, last + o->extra_epochs))
                last += o->extra_epochs;
            if (curve_aborts(o, d, r->val, ep, curve, npts, last)) {
                r->status = GM_FT_ABORTED;
                break;
            }
        }
        if (e == last) break;
        gm_ds_epoch_order(d->nft, o->seed, e, order);
        loss_sum = 0;
        rows_seen = 0;
        for (long b = 0; st == GM_OK && b < per_epoch; b++) {
            if (o->stop && *o->stop) {
                r->interrupted = 1;
                break;
            }
            const long *rows = order + b * B + lo;
            if (o->cosine) /* per step, reaching 0 at the end of the budget */
                gm_optim_set_lr(opt, (float)(0.5 * o->lr *
                                             (1.0 + cos(3.14159265358979 * (double)(e * per_epoch + b) /
                                                        ((double)last * per_epoch)))));
            for (int i = 0; i < m; i++) memcpy(x + (size_t)i * d->numel, d->x_ft + (size_t)rows[i] * d->numel,
                                               sizeof(float) * d->numel);
            for (int t = 0; t < n; t++)
                for (int i = 0; i < m; i++)
                    memcpy(target[t] + (size_t)i * d->classes[t], d->teacher[t] + (size_t)rows[i] * d->classes[t],
                           sizeof(float) * (size_t)d->classes[t]);
            if (m > 0) st = gm_net_forward(net, x, m, !o->frozen_bn, err);
            for (int t = 0; st == GM_OK && m > 0 && t < n; t++) {
                float loss;
                st = gm_net_loss(net, outs[t], o->logit_mse ? GM_LOSS_MSE : GM_LOSS_L1, target[t], NULL, scale, &loss, err);
                if (st == GM_OK && !isfinite(loss))
                    st = gm_error_set(err, GM_ENUMERIC, "fine-tune: the loss of task %d became %g", t, (double)loss);
                loss_sum += (double)loss * m;
            }
            rows_seen += m;
            if (st == GM_OK && m > 0 && o->nfeatures > 0) st = feature_losses(net, o, x, m, scale, fscale, err);
            if (st == GM_OK) gm_net_zero_grad(net);
            if (st == GM_OK && m > 0) st = gm_net_backward(net, err);
            if (st == GM_OK && o->train_block) freeze_blocks(net, o->train_block);
            /* A rank without rows adds zeros, but must still join the sum. */
            if (g) st = group_sum(g, be, gm_net_grads(net), gm_net_nparams(net), st, "gradients", err);
            if (st != GM_OK) break;
            gm_optim_step(opt, gm_net_params(net), gm_net_grads(net));
            r->steps++;
            if (sync_bn) st = sync_stats(net, g, stats, (double)m / B, err);
        }
        if (r->interrupted) break;
        r->epochs = e + 1;
    }
    r->seconds = gm_now_s() - t0;
    gm_optim_free(opt);
    free(order);
    free(x);
    free(stats);
    free(fscale);
    for (int t = 0; t < n; t++) free(target[t]);
    return st;
}

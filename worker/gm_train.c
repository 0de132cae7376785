#define _POSIX_C_SOURCE 200809L
#include "gm_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gm_h5.h"
#include "gm_mfile.h"
#include "gm_optim.h"

int gm_top1(const float *z, int classes)
{
    int best = 0;
    for (int k = 1; k < classes; k++) best = z[k] > z[best] ? k : best;
    return best;
}

/* ---- evaluation ----------------------------------------------------------- */

gm_status gm_eval_tasks(gm_net *net, gm_dataset *ds, gm_split s, int n, const int *outputs, const int *tasks,
                        int batch, long limit, double *acc, gm_error *err)
{
    const gm_ds_info *info = gm_ds_get_info(ds);
    gm_status st = gm_ds_require(ds, s, err);
    if (st != GM_OK) return st;
    for (int i = 0; i < n; i++) {
        int classes = info->tasks[tasks[i]].classes;
        if ((int)gm_shape_numel(gm_net_output_shape(net, outputs[i])) != classes)
            return gm_error_set(err, GM_ESHAPE, "eval: output %d has %zu logits but task \"%s\" has %d classes",
                                outputs[i], gm_shape_numel(gm_net_output_shape(net, outputs[i])),
                                info->tasks[tasks[i]].name, classes);
    }
    const long total = limit > 0 && limit < info->n[s] ? limit : info->n[s];
    gm_backend *be = gm_net_backend(net);
    size_t maxc = 0;
    for (int i = 0; i < n; i++) maxc = gm_shape_numel(gm_net_output_shape(net, outputs[i])) > maxc
                                           ? gm_shape_numel(gm_net_output_shape(net, outputs[i])) : maxc;
    float *x = malloc(sizeof(float) * (size_t)batch * gm_shape_numel(info->shape));
    float *logits = malloc(sizeof(float) * (size_t)batch * maxc);
    long *rows = malloc(sizeof(long) * (size_t)batch);
    long *correct = calloc((size_t)n, sizeof(long));
    if (!x || !logits || !rows || !correct) st = gm_error_set(err, GM_ENOMEM, "eval: out of memory");
    for (long first = 0; st == GM_OK && first < total; first += batch) {
        int cnt = (int)(total - first < batch ? total - first : batch);
        for (int i = 0; i < cnt; i++) rows[i] = first + i;
        st = gm_ds_read(ds, s, rows, cnt, x, err);
        if (st == GM_OK) st = gm_net_forward(net, x, cnt, 0, err);
        for (int t = 0; st == GM_OK && t < n; t++) {
            int classes = info->tasks[tasks[t]].classes;
            const int32_t *y = gm_ds_labels(ds, s, tasks[t]);
            be->to_host(be, logits, gm_net_output(net, outputs[t]), sizeof(float) * (size_t)cnt * classes);
            for (int i = 0; i < cnt; i++) correct[t] += gm_top1(logits + (size_t)i * classes, classes) == y[first + i];
        }
    }
    if (st == GM_OK) st = be->status(be, err); /* a failed forward left garbage logits */
    for (int t = 0; st == GM_OK && t < n; t++) acc[t] = total ? (double)correct[t] / (double)total : 0.0;
    free(x);
    free(logits);
    free(rows);
    free(correct);
    return st;
}

/*
 * One batch-1 eval forward of each of n nets in turn, in ms, timed by the
 * backend's marks (the CPU's clock; CUDA events, the device finished when the
 * time is read).
 */
static double time_once(gm_backend *be, gm_net *const *nets, int n, const float *x, gm_status *s, gm_error *err)
{
    be->mark(be, 0);
    for (int k = 0; *s == GM_OK && k < n; k++) *s = gm_net_forward(nets[k], x, 1, 0, err);
    be->mark(be, 1);
    return be->elapsed_ms(be, 0, 1);
}

static float *zero_input(gm_net *const *nets, int n)
{
    size_t numel = 0;
    for (int k = 0; k < n; k++) {
        size_t e = gm_shape_numel(gm_net_block_input_shape(nets[k], 0));
        numel = e > numel ? e : numel;
    }
    return calloc(numel, sizeof(float));
}

/* The backend every net of a and base runs on; NULL when they differ (one set of marks times them all). */
static gm_backend *common_backend(gm_net *a, gm_net *const *base, int n)
{
    gm_backend *be = a ? gm_net_backend(a) : gm_net_backend(base[0]);
    for (int k = 0; base && k < n; k++)
        if (gm_net_backend(base[k]) != be) return NULL;
    return be;
}

gm_status gm_measure_latency_pair(gm_net *a, gm_net *const *base, int n, int warmup, int runs, double *a_ms,
                                  double *base_ms, gm_error *err)
{
    if (runs < 1) return gm_error_set(err, GM_EINVAL, "latency: %d runs", runs);
    if (!a && (!base || n < 1)) return gm_error_set(err, GM_EINVAL, "latency: no net to time");
    gm_backend *be = common_backend(a, base, n);
    if (!be) return gm_error_set(err, GM_EINVAL, "latency: the nets timed together must share one backend");
    float *x = a ? zero_input(&a, 1) : NULL, *xb = base ? zero_input(base, n) : NULL;
    double *ta = malloc(sizeof(double) * (size_t)runs), *tb = malloc(sizeof(double) * (size_t)runs);
    gm_status s = (!a || x) && (!base || xb) && ta && tb ? GM_OK : gm_error_set(err, GM_ENOMEM, "latency: out of memory");
    for (int i = 0; s == GM_OK && i < warmup + runs; i++) {
        double da = a ? time_once(be, &a, 1, x, &s, err) : 0.0;
        double db = base ? time_once(be, base, n, xb, &s, err) : 0.0;
        if (i >= warmup) {
            ta[i - warmup] = da;
            tb[i - warmup] = db;
        }
    }
    if (s == GM_OK) s = be->status(be, err); /* a failed forward or mark leaves no time worth reporting */
    if (s == GM_OK && a_ms) *a_ms = gm_median(ta, runs);
    if (s == GM_OK && base_ms) *base_ms = gm_median(tb, runs);
    free(x);
    free(xb);
    free(ta);
    free(tb);
    return s;
}

gm_status gm_measure_latency_seq(gm_net *const *nets, int n, int warmup, int runs, double *median_ms,
                                 gm_error *err)
{
    if (n < 1) return gm_error_set(err, GM_EINVAL, "latency: %d nets", n);
    return gm_measure_latency_pair(NULL, nets, n, warmup, runs, NULL, median_ms, err);
}

gm_status gm_measure_latency(gm_net *net, int warmup, int runs, double *median_ms, gm_error *err)
{
    return gm_measure_latency_pair(net, NULL, 0, warmup, runs, median_ms, NULL, err);
}

/* ---- training state ------------------------------------------------------- */

enum { MAX_EPOCHS = 100000 };

/* One training in progress: the run's position, running sums and history. */
typedef struct {
    gm_net *net;
    gm_dataset *ds;
    int task;
    const gm_train_opts *o;
    gm_optim *opt;
    long per_epoch, steps, n_train;
    /* Where the run is: epoch (0-based) and batches done inside it. */
    int epoch;
    long in_epoch;
    double loss_sum;       /* running sums over the current epoch */
    long seen, correct;
    double train_s;        /* over every run, excluding evaluation */
    int best_epoch;
    double best_val;
    /* History, one entry per finished epoch. */
    double *h_loss, *h_acc, *h_val, *h_s;
} trainer;

static gm_status check_setup(const trainer *t, gm_error *err)
{
    const gm_train_opts *o = t->o;
    const gm_ds_info *info = gm_ds_get_info(t->ds);
    if (gm_net_noutputs(t->net) != 1)
        return gm_error_set(err, GM_EINVAL, "train: the net has %d outputs; a single-task model has one",
                            gm_net_noutputs(t->net));
    if (t->task < 0 || t->task >= info->ntasks) return gm_error_set(err, GM_EINVAL, "train: no task %d", t->task);
    if ((int)gm_shape_numel(gm_net_output_shape(t->net, 0)) != info->tasks[t->task].classes)
        return gm_error_set(err, GM_ESHAPE, "train: the net has %zu logits but task \"%s\" has %d classes",
                            gm_shape_numel(gm_net_output_shape(t->net, 0)), info->tasks[t->task].name,
                            info->tasks[t->task].classes);
    if (o->epochs < 1 || o->epochs > MAX_EPOCHS || o->batch < 1)
        return gm_error_set(err, GM_EINVAL, "train: %d epochs of batch %d", o->epochs, o->batch);
    if (!o->out || !*o->out) return gm_error_set(err, GM_EINVAL, "train: no output model file given");
    gm_status st = gm_ds_require(t->ds, GM_SPLIT_TRAIN, err);
    if (st != GM_OK) return st;
    if (t->n_train < o->batch)
        return gm_error_set(err, GM_EINVAL, "train: %ld training samples are fewer than one batch of %d",
                            t->n_train, o->batch);
    return GM_OK;
}

/* The options a checkpoint must agree on to be resumed. */
static gm_status write_options(hid_t g, const trainer *t, gm_error *err)
{
    const gm_train_opts *o = t->o;
    const gm_ds_info *info = gm_ds_get_info(t->ds);
    long long ints[6] = {o->epochs, o->batch, (long long)o->seed, t->n_train, o->optimizer.kind, t->task};
    double fl[3] = {o->optimizer.lr, o->optimizer.weight_decay, o->optimizer.kind == GM_UPDATE_SGD
                                                                     ? o->optimizer.momentum : o->optimizer.beta1};
    gm_status st = gm_h5_attr_write_ints(g, "options", ints, 6, err);
    if (st == GM_OK) st = gm_h5_attr_write_floats(g, "hyper", fl, 3, err);
    if (st == GM_OK) st = gm_h5_attr_write_str(g, "dataset", info->name, err);
    if (st == GM_OK) st = gm_h5_attr_write_str(g, "arch", o->arch ? o->arch : "", err);
    return st;
}

static gm_status check_options(hid_t g, const trainer *t, const char *path, gm_error *err)
{
    long long have[6];
    double hyper[3];
    char ds[GM_DS_NAME_MAX], arch[128];
    gm_status st = gm_h5_attr_read_ints(g, "options", have, 6, err);
    if (st == GM_OK) st = gm_h5_attr_read_floats(g, "hyper", hyper, 3, err);
    if (st == GM_OK) st = gm_h5_attr_read_str(g, "dataset", ds, sizeof ds, err);
    if (st == GM_OK) st = gm_h5_attr_read_str(g, "arch", arch, sizeof arch, err);
    if (st != GM_OK) return st;
    const gm_train_opts *o = t->o;
    const long long want[6] = {o->epochs, o->batch, (long long)o->seed, t->n_train, o->optimizer.kind, t->task};
    static const char *const names[6] = {"--epochs", "--batch", "--seed", "--limit (training samples)",
                                         "--optim", "--task"};
    for (int i = 0; i < 6; i++)
        if (have[i] != want[i])
            return gm_error_set(err, GM_EINVAL,
                                "%s was made with %s %lld, this run has %lld: rerun with the same options, or "
                                "--fresh to start over", path, names[i], have[i], want[i]);
    if (fabs(hyper[0] - (double)o->optimizer.lr) > 1e-6 * fabs(hyper[0]) ||
        fabs(hyper[1] - (double)o->optimizer.weight_decay) > 1e-6 * fabs(hyper[1]) + 1e-12)
        return gm_error_set(err, GM_EINVAL,
                            "%s was made with --lr %g --weight-decay %g, this run has %g and %g: rerun with the "
                            "same options, or --fresh to start over", path, hyper[0], hyper[1],
                            (double)o->optimizer.lr, (double)o->optimizer.weight_decay);
    if (strcmp(ds, gm_ds_get_info(t->ds)->name) || strcmp(arch, o->arch ? o->arch : ""))
        return gm_error_set(err, GM_EINVAL,
                            "%s was made for %s on dataset \"%s\", this run is %s on \"%s\": use --fresh to start over",
                            path, arch, ds, o->arch ? o->arch : "", gm_ds_get_info(t->ds)->name);
    return GM_OK;
}

static gm_status write_history(hid_t loc, const trainer *t, int nep, gm_error *err)
{
    hid_t g;
    gm_status st = gm_h5_group_create(loc, "training", &g, err);
    if (st != GM_OK) return st;
    hsize_t d = (hsize_t)nep;
    st = write_options(g, t, err);
    if (st == GM_OK) st = gm_h5_write(g, "loss", H5T_NATIVE_DOUBLE, 1, &d, t->h_loss, err);
    if (st == GM_OK) st = gm_h5_write(g, "train_accuracy", H5T_NATIVE_DOUBLE, 1, &d, t->h_acc, err);
    if (st == GM_OK) st = gm_h5_write(g, "val_accuracy", H5T_NATIVE_DOUBLE, 1, &d, t->h_val, err);
    if (st == GM_OK) st = gm_h5_write(g, "seconds", H5T_NATIVE_DOUBLE, 1, &d, t->h_s, err);
    if (st == GM_OK) st = gm_h5_attr_write_float(g, "train_seconds", t->train_s, err);
    if (st == GM_OK) st = gm_h5_attr_write_int(g, "best_epoch", t->best_epoch, err);
    if (st == GM_OK) st = gm_h5_attr_write_float(g, "best_val_accuracy", t->best_val, err);
    H5Gclose(g);
    return st;
}

/* The net's weights and the task's metadata as a model file in memory. */
static gm_status to_mfile(const trainer *t, gm_mfile *m, double val, double test, gm_error *err)
{
    gm_status st = gm_mfile_from_net(m, t->net, err);
    if (st != GM_OK) return st;
    const gm_ds_info *info = gm_ds_get_info(t->ds);
    snprintf(m->arch, sizeof m->arch, "%s", t->o->arch ? t->o->arch : "");
    for (int c = 0; c < info->shape.c && c < GM_MF_MAX_CHANNELS; c++) {
        m->mean[c] = info->mean[c];
        m->std[c] = info->std[c];
    }
    gm_mf_task *k = &m->tasks[0];
    snprintf(k->name, sizeof k->name, "%s", info->tasks[t->task].name);
    snprintf(k->dataset, sizeof k->dataset, "%s", gm_ds_path(t->ds));
    k->classes = info->tasks[t->task].classes;
    k->val_accuracy = val;
    k->test_accuracy = test;
    return GM_OK;
}

/* A model file with the training history beside the model. */
static gm_status save_model(const trainer *t, const char *path, double val, double test, gm_error *err)
{
    gm_mfile m = {0};
    hid_t f = -1;
    gm_status st = to_mfile(t, &m, val, test, err);
    if (st == GM_OK) st = gm_h5_create(&f, path, err);
    if (st == GM_OK) st = gm_mfile_write(f, &m, err);
    if (st == GM_OK) st = write_history(f, t, t->epoch, err);
    gm_mfile_free(&m);
    if (st == GM_OK) return gm_h5_commit(f, path, err);
    if (f >= 0) gm_h5_discard(f, path);
    return st;
}

static gm_status save_checkpoint(const trainer *t, gm_error *err)
{
    const char *path = t->o->checkpoint;
    gm_mfile m = {0};
    hid_t f = -1, g = -1;
    gm_backend *be = gm_net_backend(t->net);
    float *mom[2], *host = NULL;
    size_t n;
    gm_optim_state(t->opt, &mom[0], &mom[1], &n);
    gm_status st = to_mfile(t, &m, NAN, NAN, err);
    if (st == GM_OK) st = gm_h5_create(&f, path, err);
    if (st == GM_OK) st = gm_mfile_write(f, &m, err);
    if (st == GM_OK) st = write_history(f, t, t->epoch, err);
    if (st == GM_OK) st = gm_h5_group_create(f, "train_state", &g, err);
    if (st == GM_OK) {
        long long pos[3] = {t->epoch, t->in_epoch, gm_optim_steps(t->opt)};
        long long acc[2] = {t->seen, t->correct};
        const gm_rng *rng = gm_net_rng(t->net);
        hsize_t four = 4;
        st = gm_h5_attr_write_ints(g, "position", pos, 3, err);
        if (st == GM_OK) st = gm_h5_attr_write_ints(g, "epoch_counts", acc, 2, err);
        if (st == GM_OK) st = gm_h5_attr_write_float(g, "epoch_loss_sum", t->loss_sum, err);
        if (st == GM_OK) st = gm_h5_write(g, "dropout_rng", H5T_NATIVE_UINT64, 1, &four, rng->s, err);
    }
    if (st == GM_OK && n > 0 && !(host = malloc(sizeof(float) * n))) st = gm_error_set(err, GM_ENOMEM, "out of memory");
    static const char *const mname[2] = {"optimizer_m", "optimizer_v"};
    for (int i = 0; st == GM_OK && n > 0 && i < 2; i++) {
        if (!mom[i]) continue;
        hsize_t d = n;
        be->to_host(be, host, mom[i], sizeof(float) * n);
        st = gm_h5_write(g, mname[i], H5T_NATIVE_FLOAT, 1, &d, host, err);
    }
    free(host);
    if (g >= 0) H5Gclose(g);
    gm_mfile_free(&m);
    if (st == GM_OK) return gm_h5_commit(f, path, err);
    if (f >= 0) gm_h5_discard(f, path);
    return st;
}

static gm_status read_doubles(hid_t g, const char *name, int n, double *v, gm_error *err)
{
    hsize_t d = (hsize_t)n;
    return gm_h5_read(g, name, H5T_NATIVE_DOUBLE, 1, &d, v, err);
}

static gm_status load_checkpoint(trainer *t, gm_error *err)
{
    const char *path = t->o->checkpoint;
    hid_t f = -1, g = -1, h = -1;
    gm_mfile m = {0};
    gm_backend *be = gm_net_backend(t->net);
    float *mom[2], *host = NULL;
    size_t n;
    gm_optim_state(t->opt, &mom[0], &mom[1], &n);
    gm_status st = gm_h5_open(&f, path, 0, err);
    if (st == GM_OK) st = gm_mfile_read(f, &m, err);
    if (st == GM_OK) st = gm_mfile_to_net(&m, t->net, err);
    if (st == GM_OK) st = gm_h5_group_open(f, "train_state", &g, err);
    if (st == GM_OK) st = gm_h5_group_open(f, "training", &h, err);
    if (st == GM_OK) st = check_options(h, t, path, err);
    long long pos[3], acc[2];
    if (st == GM_OK) st = gm_h5_attr_read_ints(g, "position", pos, 3, err);
    if (st == GM_OK) st = gm_h5_attr_read_ints(g, "epoch_counts", acc, 2, err);
    if (st == GM_OK) st = gm_h5_attr_read_float(g, "epoch_loss_sum", &t->loss_sum, err);
    if (st == GM_OK && (pos[0] < 0 || pos[0] > t->o->epochs || pos[1] < 0 || pos[1] > t->per_epoch ||
                        pos[2] != pos[0] * t->per_epoch + pos[1]))
        st = gm_error_set(err, GM_EFORMAT, "%s: train_state position (%lld, %lld, %lld) does not fit this training",
                          path, pos[0], pos[1], pos[2]);
    if (st == GM_OK) {
        hsize_t four = 4;
        st = gm_h5_read(g, "dropout_rng", H5T_NATIVE_UINT64, 1, &four, gm_net_rng(t->net)->s, err);
    }
    if (st == GM_OK) {
        t->epoch = (int)pos[0];
        t->in_epoch = pos[1];
        t->seen = acc[0];
        t->correct = acc[1];
        gm_optim_set_steps(t->opt, (long)pos[2]);
        st = read_doubles(h, "loss", t->epoch, t->h_loss, err);
    }
    if (st == GM_OK) st = read_doubles(h, "train_accuracy", t->epoch, t->h_acc, err);
    if (st == GM_OK) st = read_doubles(h, "val_accuracy", t->epoch, t->h_val, err);
    if (st == GM_OK) st = read_doubles(h, "seconds", t->epoch, t->h_s, err);
    if (st == GM_OK) st = gm_h5_attr_read_float(h, "train_seconds", &t->train_s, err);
    long long be_ep = 0;
    if (st == GM_OK) st = gm_h5_attr_read_int(h, "best_epoch", &be_ep, err);
    if (st == GM_OK) st = gm_h5_attr_read_float(h, "best_val_accuracy", &t->best_val, err);
    t->best_epoch = (int)be_ep;
    if (st == GM_OK && n > 0 && !(host = malloc(sizeof(float) * n))) st = gm_error_set(err, GM_ENOMEM, "out of memory");
    static const char *const mname[2] = {"optimizer_m", "optimizer_v"};
    for (int i = 0; st == GM_OK && n > 0 && i < 2; i++) {
        if (!mom[i]) continue;
        hsize_t d = n;
        st = gm_h5_read(g, mname[i], H5T_NATIVE_FLOAT, 1, &d, host, err);
        if (st == GM_OK) be->to_device(be, mom[i], host, sizeof(float) * n);
    }
    free(host);
    gm_mfile_free(&m);
    if (h >= 0) H5Gclose(h);
    if (g >= 0) H5Gclose(g);
    gm_h5_close_file(f);
    return st;
}

/* ---- the loop ------------------------------------------------------------- */

static float lr_at(const trainer *t, long step)
{
    return 0.5f * t->o->optimizer.lr * (1.0f + cosf(3.14159265f * (float)step / (float)t->steps));
}

/* done: the epoch that just ended, whose sums are already in the history. */
static void report(const trainer *t, double s0, long step0, int done, double val)
{
    const gm_train_opts *o = t->o;
    if (!o->progress) return;
    long step = (long)t->epoch * t->per_epoch + t->in_epoch;
    double el = t->train_s - s0; /* training time only: evaluation is not throughput */
    double rate = el > 0 ? (double)(step - step0) * o->batch / el : 0.0;
    gm_train_progress p = {.epoch = t->epoch + 1 - done, .epochs = o->epochs, .step = step, .steps = t->steps,
                           .loss = done ? (float)t->h_loss[t->epoch - 1]
                                        : t->seen ? (float)(t->loss_sum / (double)t->seen) : 0.0f,
                           .acc = done ? (float)t->h_acc[t->epoch - 1]
                                       : t->seen ? (float)t->correct / (float)t->seen : 0.0f,
                           .val_acc = val,
                           .images_per_s = rate, .elapsed_s = t->train_s,
                           .eta_s = rate > 0 ? (double)(t->steps - step) * o->batch / rate : 0.0,
                           .epoch_done = done};
    o->progress(o->ctx, &p);
}

/* Validation (or, without a val split, nothing: the last epoch is kept). */
static gm_status end_epoch(trainer *t, double epoch_s, double *val, gm_error *err)
{
    const gm_ds_info *info = gm_ds_get_info(t->ds);
    int out = 0;
    *val = NAN;
    gm_status st = GM_OK;
    if (info->n[GM_SPLIT_VAL] > 0)
        st = gm_eval_tasks(t->net, t->ds, GM_SPLIT_VAL, 1, &out, &t->task, t->o->batch, 0, val, err);
    if (st != GM_OK) return st;
    int e = t->epoch;
    t->h_loss[e] = t->seen ? t->loss_sum / (double)t->seen : 0.0;
    t->h_acc[e] = t->seen ? (double)t->correct / (double)t->seen : 0.0;
    t->h_val[e] = *val;
    t->h_s[e] = epoch_s;
    t->epoch++;
    t->in_epoch = 0;
    t->loss_sum = 0.0;
    t->seen = t->correct = 0;
    int better = isnan(*val) || t->best_epoch == 0 || *val > t->best_val;
    if (better) {
        t->best_epoch = t->epoch;
        t->best_val = *val;
        st = save_model(t, t->o->out, *val, NAN, err);
    }
    return st;
}

static gm_status train_loop(trainer *t, gm_train_result *r, gm_error *err)
{
    const gm_train_opts *o = t->o;
    const gm_ds_info *info = gm_ds_get_info(t->ds);
    const int B = o->batch, classes = info->tasks[t->task].classes;
    const int32_t *labels = gm_ds_labels(t->ds, GM_SPLIT_TRAIN, t->task);
    gm_backend *be = gm_net_backend(t->net);
    long *order = malloc(sizeof(long) * (size_t)t->n_train);
    float *x = malloc(sizeof(float) * (size_t)B * gm_shape_numel(info->shape));
    float *logits = malloc(sizeof(float) * (size_t)B * classes);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)B);
    gm_status st = order && x && logits && y ? GM_OK : gm_error_set(err, GM_ENOMEM, "train: out of memory");
    const long step0 = (long)t->epoch * t->per_epoch + t->in_epoch;
    const double t0 = gm_now_s(), train_s0 = t->train_s;
    double last_report = t0, last_ckpt = t0;
    while (st == GM_OK && t->epoch < o->epochs) {
        gm_ds_epoch_order(t->n_train, o->seed, t->epoch, order);
        double epoch_t0 = gm_now_s();
        while (st == GM_OK && t->in_epoch < t->per_epoch) {
            if (o->stop && *o->stop) break;
            const long *rows = order + t->in_epoch * B;
            double s0 = gm_now_s();
            float loss;
            gm_optim_set_lr(t->opt, lr_at(t, (long)t->epoch * t->per_epoch + t->in_epoch));
            st = gm_ds_read(t->ds, GM_SPLIT_TRAIN, rows, B, x, err);
            for (int i = 0; i < B; i++) y[i] = labels[rows[i]];
            if (st == GM_OK) st = gm_net_forward(t->net, x, B, 1, err);
            if (st == GM_OK) st = gm_net_loss(t->net, 0, GM_LOSS_CROSS_ENTROPY, NULL, y, 1.0f, &loss, err);
            if (st != GM_OK) break;
            if (!isfinite(loss)) {
                st = gm_error_set(err, GM_ENUMERIC, "train: the loss became %g at epoch %d step %ld (learning rate "
                                  "too high?)", (double)loss, t->epoch + 1, t->in_epoch + 1);
                break;
            }
            be->to_host(be, logits, gm_net_output(t->net, 0), sizeof(float) * (size_t)B * classes);
            for (int i = 0; i < B; i++) t->correct += gm_top1(logits + (size_t)i * classes, classes) == y[i];
            gm_net_zero_grad(t->net);
            st = gm_net_backward(t->net, err);
            if (st != GM_OK) break;
            gm_optim_step(t->opt, gm_net_params(t->net), gm_net_grads(t->net));
            t->loss_sum += (double)loss * B;
            t->seen += B;
            t->in_epoch++;
            double now = gm_now_s();
            t->train_s += now - s0;
            if (now - last_report >= o->report_every_s && t->in_epoch < t->per_epoch) {
                report(t, train_s0, step0, 0, NAN);
                last_report = now;
            }
            if (o->checkpoint && o->checkpoint_every_s > 0 && now - last_ckpt >= o->checkpoint_every_s &&
                t->in_epoch < t->per_epoch) {
                st = save_checkpoint(t, err);
                last_ckpt = gm_now_s();
            }
        }
        if (st != GM_OK) break;
        if (t->in_epoch < t->per_epoch) { /* stopped */
            r->interrupted = 1;
            if (o->checkpoint) st = save_checkpoint(t, err);
            break;
        }
        double val;
        double epoch_s = gm_now_s() - epoch_t0;
        st = end_epoch(t, epoch_s, &val, err);
        if (st == GM_OK) report(t, train_s0, step0, 1, val);
        if (st == GM_OK && o->checkpoint) {
            st = save_checkpoint(t, err);
            last_ckpt = gm_now_s();
        }
    }
    free(order);
    free(x);
    free(logits);
    free(y);
    return st;
}

/* Puts the best weights back and scores them on the test split. */
static gm_status finish(trainer *t, gm_train_result *r, gm_error *err)
{
    gm_mfile best = {0};
    gm_status st = gm_mfile_load(t->o->out, &best, err);
    if (st == GM_OK) st = gm_mfile_to_net(&best, t->net, err);
    gm_mfile_free(&best);
    r->test_acc = NAN;
    int out = 0;
    if (st == GM_OK && gm_ds_get_info(t->ds)->n[GM_SPLIT_TEST] > 0)
        st = gm_eval_tasks(t->net, t->ds, GM_SPLIT_TEST, 1, &out, &t->task, t->o->batch, 0, &r->test_acc, err);
    if (st != GM_OK) return st;
    /* The history covers every epoch; the weights are the best epoch's. */
    return save_model(t, t->o->out, t->best_val, r->test_acc, err);
}

gm_status gm_train_task(gm_net *net, gm_dataset *ds, int task, const gm_train_opts *o, gm_train_result *r,
                        gm_error *err)
{
    trainer t = {.net = net, .ds = ds, .task = task, .o = o, .best_val = NAN};
    *r = (gm_train_result){.best_val = NAN, .test_acc = NAN};
    const gm_ds_info *info = gm_ds_get_info(ds);
    t.n_train = o->limit > 0 && o->limit < info->n[GM_SPLIT_TRAIN] ? o->limit : info->n[GM_SPLIT_TRAIN];
    gm_status st = check_setup(&t, err);
    if (st != GM_OK) return st;
    t.per_epoch = t.n_train / o->batch;
    t.steps = t.per_epoch * o->epochs;
    size_t ne = (size_t)o->epochs;
    t.h_loss = calloc(ne, sizeof(double));
    t.h_acc = calloc(ne, sizeof(double));
    t.h_val = calloc(ne, sizeof(double));
    t.h_s = calloc(ne, sizeof(double));
    if (!t.h_loss || !t.h_acc || !t.h_val || !t.h_s) st = gm_error_set(err, GM_ENOMEM, "train: out of memory");
    if (st == GM_OK) st = gm_optim_create(&t.opt, gm_net_backend(net), o->optimizer, gm_net_nparams(net), err);
    if (st == GM_OK && o->checkpoint && o->resume && access(o->checkpoint, F_OK) == 0) {
        st = load_checkpoint(&t, err);
        r->resumed = st == GM_OK;
    }
    r->start_epoch = t.epoch + 1;
    r->start_step = (long)t.epoch * t.per_epoch + t.in_epoch;
    if (st == GM_OK && t.epoch < o->epochs) st = train_loop(&t, r, err);
    if (st == GM_OK && !r->interrupted) st = finish(&t, r, err);
    r->epochs_done = t.epoch;
    r->best_epoch = t.best_epoch;
    r->best_val = t.best_val;
    r->train_s = t.train_s;
    gm_optim_free(t.opt);
    free(t.h_loss);
    free(t.h_acc);
    free(t.h_val);
    free(t.h_s);
    return st;
}

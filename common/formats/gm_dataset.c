#define _POSIX_C_SOURCE 200809L
#include "gm_dataset.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_h5.h"
#include "gm_rng.h"

static const char *const FORMAT_NAME = "gmorph-dataset";
static const char *const SPLIT_NAMES[GM_NSPLITS] = {"train", "val", "test"};

const char *gm_split_name(gm_split s) { return (unsigned)s < GM_NSPLITS ? SPLIT_NAMES[s] : "?"; }

gm_status gm_split_parse(const char *name, gm_split *s, gm_error *err)
{
    for (int i = 0; i < GM_NSPLITS; i++) {
        if (name && strcmp(name, SPLIT_NAMES[i]) == 0) {
            *s = (gm_split)i;
            return GM_OK;
        }
    }
    return gm_error_set(err, GM_EINVAL, "unknown split \"%s\" (valid: train, val, test)", name ? name : "(null)");
}

static const char *dtype_name(gm_dtype t) { return t == GM_DT_U8 ? "uint8" : "float32"; }
static size_t dtype_size(gm_dtype t) { return t == GM_DT_U8 ? 1 : 4; }
static hid_t dtype_native(gm_dtype t) { return t == GM_DT_U8 ? H5T_NATIVE_UINT8 : H5T_NATIVE_FLOAT; }

/* The split whose scaled values define mean and std: train, else test, else val. */
static int stats_split(const long *n)
{
    if (n[GM_SPLIT_TRAIN] > 0) return GM_SPLIT_TRAIN;
    if (n[GM_SPLIT_TEST] > 0) return GM_SPLIT_TEST;
    return GM_SPLIT_VAL;
}

/* Checks a declared info (writer side); where names the file for messages. */
static gm_status check_info(const gm_ds_info *info, const char *where, gm_error *err)
{
    gm_shape sh = info->shape;
    if (sh.c <= 0 || sh.h <= 0 || sh.w <= 0)
        return gm_error_set(err, GM_EINVAL, "%s: sample shape %dx%dx%d must be positive", where, sh.c, sh.h, sh.w);
    if (sh.c > GM_DS_MAX_CHANNELS)
        return gm_error_set(err, GM_EINVAL, "%s: %d channels, at most %d are supported", where, sh.c,
                            GM_DS_MAX_CHANNELS);
    if (info->dtype != GM_DT_U8 && info->dtype != GM_DT_F32)
        return gm_error_set(err, GM_EINVAL, "%s: unknown dtype %d (uint8 or float32)", where, (int)info->dtype);
    if (!(info->scale > 0.0f) || !isfinite(info->scale))
        return gm_error_set(err, GM_EINVAL, "%s: scale %g must be positive and finite", where, (double)info->scale);
    if (strnlen(info->name, GM_DS_NAME_MAX) >= GM_DS_NAME_MAX)
        return gm_error_set(err, GM_EINVAL, "%s: dataset name is not terminated within %d characters", where,
                            GM_DS_NAME_MAX);
    if (strnlen(info->source, sizeof info->source) >= sizeof info->source)
        return gm_error_set(err, GM_EINVAL, "%s: source is not terminated within %zu characters", where,
                            sizeof info->source);
    if (info->ntasks < 1 || info->ntasks > GM_DS_MAX_TASKS)
        return gm_error_set(err, GM_EINVAL, "%s: %d tasks, expected 1 to %d", where, info->ntasks, GM_DS_MAX_TASKS);
    for (int t = 0; t < info->ntasks; t++) {
        const gm_ds_task *k = &info->tasks[t];
        size_t len = strnlen(k->name, GM_DS_NAME_MAX);
        if (len == 0) return gm_error_set(err, GM_EINVAL, "%s: task %d has an empty name", where, t);
        if (len >= GM_DS_NAME_MAX)
            return gm_error_set(err, GM_EINVAL, "%s: task %d name is not terminated within %d characters", where, t,
                                GM_DS_NAME_MAX);
        if (strchr(k->name, ','))
            return gm_error_set(err, GM_EINVAL,
                                "%s: task name \"%s\" contains a comma (names are stored comma-separated)", where,
                                k->name);
        for (int u = 0; u < t; u++)
            if (strcmp(info->tasks[u].name, k->name) == 0)
                return gm_error_set(err, GM_EINVAL, "%s: task name \"%s\" appears twice (tasks %d and %d)", where,
                                    k->name, u, t);
        if (k->classes < 2)
            return gm_error_set(err, GM_EINVAL, "%s: task \"%s\" has %d classes, at least 2 are needed", where,
                                k->name, k->classes);
    }
    long total = 0;
    for (int s = 0; s < GM_NSPLITS; s++) {
        if (info->n[s] < 0)
            return gm_error_set(err, GM_EINVAL, "%s: split %s declares %ld samples", where, SPLIT_NAMES[s], info->n[s]);
        total += info->n[s];
    }
    if (total == 0) return gm_error_set(err, GM_EINVAL, "%s: every split declares 0 samples", where);
    return GM_OK;
}

/* ---- writing ------------------------------------------------------------- */

struct gm_ds_writer {
    hid_t file;
    gm_ds_info info;
    hid_t x[GM_NSPLITS];
    hid_t y[GM_NSPLITS][GM_DS_MAX_TASKS];
    long written[GM_NSPLITS];
    int stats;                          /* the split mean and std come from */
    /* Sums of (value - shift[c]) keep the variance exact enough for any offset,
     * and, summed row by row, do not depend on how appends are batched. */
    double shift[GM_DS_MAX_CHANNELS];
    double sum[GM_DS_MAX_CHANNELS], sumsq[GM_DS_MAX_CHANNELS];
    char path[4096];
};

static void writer_close_objects(gm_ds_writer *w)
{
    for (int s = 0; s < GM_NSPLITS; s++) {
        if (w->x[s] >= 0) H5Dclose(w->x[s]);
        w->x[s] = -1;
        for (int t = 0; t < GM_DS_MAX_TASKS; t++) {
            if (w->y[s][t] >= 0) H5Dclose(w->y[s][t]);
            w->y[s][t] = -1;
        }
    }
}

void gm_ds_writer_abort(gm_ds_writer *w)
{
    if (!w) return;
    writer_close_objects(w);
    gm_h5_discard(w->file, w->path);
    free(w);
}

static gm_status write_root_attrs(gm_ds_writer *w, gm_error *err)
{
    const gm_ds_info *in = &w->info;
    hid_t f = w->file;
    char tasks[GM_DS_MAX_TASKS * GM_DS_NAME_MAX];
    long long classes[GM_DS_MAX_TASKS];
    tasks[0] = '\0';
    for (int t = 0; t < in->ntasks; t++) {
        if (t) strcat(tasks, ",");
        strcat(tasks, in->tasks[t].name);
        classes[t] = in->tasks[t].classes;
    }
    long long shape[3] = {in->shape.c, in->shape.h, in->shape.w};
    gm_status st;
    if ((st = gm_h5_attr_write_str(f, "format", FORMAT_NAME, err)) != GM_OK) return st;
    if ((st = gm_h5_attr_write_int(f, "version", GM_DS_VERSION, err)) != GM_OK) return st;
    if ((st = gm_h5_attr_write_str(f, "name", in->name, err)) != GM_OK) return st;
    if ((st = gm_h5_attr_write_str(f, "source", in->source, err)) != GM_OK) return st;
    if ((st = gm_h5_attr_write_str(f, "tasks", tasks, err)) != GM_OK) return st;
    if ((st = gm_h5_attr_write_ints(f, "classes", classes, in->ntasks, err)) != GM_OK) return st;
    if ((st = gm_h5_attr_write_ints(f, "shape", shape, 3, err)) != GM_OK) return st;
    if ((st = gm_h5_attr_write_str(f, "dtype", dtype_name(in->dtype), err)) != GM_OK) return st;
    return gm_h5_attr_write_float(f, "scale", in->scale, err);
}

static gm_status create_split(gm_ds_writer *w, int s, gm_error *err)
{
    const gm_ds_info *in = &w->info;
    hid_t g, yg;
    gm_status st = gm_h5_group_create(w->file, SPLIT_NAMES[s], &g, err);
    if (st != GM_OK) return st;
    hsize_t dims[4] = {(hsize_t)in->n[s], (hsize_t)in->shape.c, (hsize_t)in->shape.h, (hsize_t)in->shape.w};
    st = gm_h5_create_dataset(g, "x", dtype_native(in->dtype), 4, dims, &w->x[s], err);
    if (st == GM_OK) st = gm_h5_group_create(g, "y", &yg, err);
    if (st == GM_OK) {
        for (int t = 0; t < in->ntasks && st == GM_OK; t++)
            st = gm_h5_create_dataset(yg, in->tasks[t].name, H5T_NATIVE_INT32, 1, dims, &w->y[s][t], err);
        H5Gclose(yg);
    }
    H5Gclose(g);
    return st;
}

gm_status gm_ds_writer_create(gm_ds_writer **w, const char *path, const gm_ds_info *info, gm_error *err)
{
    *w = NULL;
    if (!path || !info) return gm_error_set(err, GM_EINVAL, "gm_ds_writer_create: path and info are required");
    if (strlen(path) + 5 > sizeof((*w)->path))
        return gm_error_set(err, GM_EINVAL, "%.64s...: path too long", path);
    gm_status st = check_info(info, path, err);
    if (st != GM_OK) return st;
    gm_ds_writer *nw = calloc(1, sizeof *nw);
    if (!nw) return gm_error_set(err, GM_ENOMEM, "%s: out of memory", path);
    nw->info = *info;
    memset(nw->info.mean, 0, sizeof nw->info.mean);
    memset(nw->info.std, 0, sizeof nw->info.std);
    nw->stats = stats_split(info->n);
    snprintf(nw->path, sizeof nw->path, "%s", path);
    for (int s = 0; s < GM_NSPLITS; s++) {
        nw->x[s] = -1;
        for (int t = 0; t < GM_DS_MAX_TASKS; t++) nw->y[s][t] = -1;
    }
    st = gm_h5_create_stream(&nw->file, path, err); /* datasets can be larger than memory */
    if (st != GM_OK) {
        free(nw);
        return st;
    }
    st = write_root_attrs(nw, err);
    for (int s = 0; s < GM_NSPLITS && st == GM_OK; s++)
        if (info->n[s] > 0) st = create_split(nw, s, err);
    if (st != GM_OK) {
        gm_ds_writer_abort(nw);
        return st;
    }
    *w = nw;
    return GM_OK;
}

static double stored_value(const void *x, gm_dtype dt, size_t i)
{
    return dt == GM_DT_U8 ? (double)((const uint8_t *)x)[i] : (double)((const float *)x)[i];
}

/* Accumulates the scaled values of count samples into the per-channel sums. */
static void accumulate(gm_ds_writer *w, long count, const void *x)
{
    const gm_ds_info *in = &w->info;
    size_t hw = (size_t)in->shape.h * (size_t)in->shape.w;
    double scale = in->scale;
    int first = w->written[w->stats] == 0;
    for (long i = 0; i < count; i++) {
        for (int c = 0; c < in->shape.c; c++) {
            size_t off = ((size_t)i * (size_t)in->shape.c + (size_t)c) * hw;
            if (first && i == 0) w->shift[c] = stored_value(x, in->dtype, off) * scale;
            double k = w->shift[c], s = 0.0, q = 0.0;
            for (size_t j = 0; j < hw; j++) {
                double d = stored_value(x, in->dtype, off + j) * scale - k;
                s += d;
                q += d * d;
            }
            w->sum[c] += s;
            w->sumsq[c] += q;
        }
    }
}

gm_status gm_ds_append(gm_ds_writer *w, gm_split s, long count, const void *x, const int32_t *const *y,
                       gm_error *err)
{
    if (!w) return gm_error_set(err, GM_EINVAL, "gm_ds_append: no writer");
    const gm_ds_info *in = &w->info;
    if ((unsigned)s >= GM_NSPLITS) return gm_error_set(err, GM_EINVAL, "%s: unknown split %d", w->path, (int)s);
    const char *sn = SPLIT_NAMES[s];
    if (in->n[s] == 0)
        return gm_error_set(err, GM_EINVAL, "%s: split %s was declared with 0 samples", w->path, sn);
    if (count < 0) return gm_error_set(err, GM_EINVAL, "%s: split %s: appending %ld samples", w->path, sn, count);
    if (count == 0) return GM_OK;
    if (w->written[s] + count > in->n[s])
        return gm_error_set(err, GM_EINVAL,
                            "%s: split %s: appending %ld samples at row %ld goes past the declared %ld", w->path,
                            sn, count, w->written[s], in->n[s]);
    if (!x || !y) return gm_error_set(err, GM_EINVAL, "%s: split %s: no samples or no labels given", w->path, sn);
    for (int t = 0; t < in->ntasks; t++) {
        if (!y[t])
            return gm_error_set(err, GM_EINVAL, "%s: split %s: no labels given for task %s", w->path, sn,
                                in->tasks[t].name);
        for (long i = 0; i < count; i++)
            if (y[t][i] < 0 || y[t][i] >= in->tasks[t].classes)
                return gm_error_set(err, GM_EINVAL, "%s: split %s, task %s, row %ld: label %d is outside [0, %d)",
                                    w->path, sn, in->tasks[t].name, w->written[s] + i, (int)y[t][i],
                                    in->tasks[t].classes);
    }
    size_t numel = gm_shape_numel(in->shape);
    if (in->dtype == GM_DT_F32) {
        const float *f = x;
        for (size_t j = 0; j < (size_t)count * numel; j++)
            if (!isfinite(f[j]))
                return gm_error_set(err, GM_ENUMERIC, "%s: split %s, row %ld: non-finite value %g in x", w->path,
                                    sn, w->written[s] + (long)(j / numel), (double)f[j]);
    }
    hsize_t first = (hsize_t)w->written[s];
    gm_status st = gm_h5_write_rows(w->x[s], dtype_native(in->dtype), first, (hsize_t)count, x, err);
    for (int t = 0; t < in->ntasks && st == GM_OK; t++)
        st = gm_h5_write_rows(w->y[s][t], H5T_NATIVE_INT32, first, (hsize_t)count, y[t], err);
    if (st != GM_OK) return st;
    if ((int)s == w->stats) accumulate(w, count, x);
    w->written[s] += count;
    return GM_OK;
}

gm_status gm_ds_writer_close(gm_ds_writer *w, gm_error *err)
{
    if (!w) return gm_error_set(err, GM_EINVAL, "gm_ds_writer_close: no writer");
    const gm_ds_info *in = &w->info;
    gm_status st = GM_OK;
    for (int s = 0; s < GM_NSPLITS && st == GM_OK; s++)
        if (w->written[s] != in->n[s])
            st = gm_error_set(err, GM_EINVAL, "%s: split %s: %ld of %ld samples written", w->path, SPLIT_NAMES[s],
                              w->written[s], in->n[s]);
    if (st == GM_OK) {
        double mean[GM_DS_MAX_CHANNELS], sd[GM_DS_MAX_CHANNELS];
        double cnt = (double)in->n[w->stats] * in->shape.h * in->shape.w;
        for (int c = 0; c < in->shape.c; c++) {
            double m = w->sum[c] / cnt;
            double var = w->sumsq[c] / cnt - m * m;
            mean[c] = w->shift[c] + m;
            sd[c] = sqrt(var > 0.0 ? var : 0.0);
        }
        st = gm_h5_attr_write_floats(w->file, "mean", mean, in->shape.c, err);
        if (st == GM_OK) st = gm_h5_attr_write_floats(w->file, "std", sd, in->shape.c, err);
    }
    if (st != GM_OK) {
        gm_ds_writer_abort(w);
        return st;
    }
    writer_close_objects(w);
    st = gm_h5_commit(w->file, w->path, err);
    free(w);
    return st;
}

/* ---- reading ------------------------------------------------------------- */

typedef struct {
    long row;
    int idx; /* position in the caller's list */
} row_ref;

struct gm_dataset {
    hid_t file;
    gm_ds_info info;
    hid_t x[GM_NSPLITS];
    hid_t space[GM_NSPLITS];            /* file dataspace of x, reselected per read */
    int32_t *labels[GM_NSPLITS][GM_DS_MAX_TASKS];
    double scale, mean[GM_DS_MAX_CHANNELS], inv_std[GM_DS_MAX_CHANNELS]; /* as stored (double) */
    float lut[GM_DS_MAX_CHANNELS][256]; /* uint8: normalised value of every byte */
    /* Scratch grown on demand, reused by every read. */
    unsigned char *raw;
    size_t raw_cap;
    row_ref *refs;
    size_t refs_cap;
    char path[4096];
};

const gm_ds_info *gm_ds_get_info(const gm_dataset *ds) { return &ds->info; }
const char *gm_ds_path(const gm_dataset *ds) { return ds->path; }

int gm_ds_task_index(const gm_dataset *ds, const char *task)
{
    for (int t = 0; task && t < ds->info.ntasks; t++)
        if (strcmp(ds->info.tasks[t].name, task) == 0) return t;
    return -1;
}

gm_status gm_ds_require(const gm_dataset *ds, gm_split s, gm_error *err)
{
    if ((unsigned)s >= GM_NSPLITS) return gm_error_set(err, GM_EINVAL, "%s: unknown split %d", ds->path, (int)s);
    if (ds->info.n[s] <= 0) return gm_error_set(err, GM_EFORMAT, "%s has no '%s' split", ds->path, SPLIT_NAMES[s]);
    return GM_OK;
}

const int32_t *gm_ds_labels(const gm_dataset *ds, gm_split s, int task)
{
    if ((unsigned)s >= GM_NSPLITS || task < 0 || task >= ds->info.ntasks) return NULL;
    return ds->labels[s][task];
}

void gm_ds_close(gm_dataset *ds)
{
    if (!ds) return;
    for (int s = 0; s < GM_NSPLITS; s++) {
        if (ds->space[s] >= 0) H5Sclose(ds->space[s]);
        if (ds->x[s] >= 0) H5Dclose(ds->x[s]);
        for (int t = 0; t < GM_DS_MAX_TASKS; t++) free(ds->labels[s][t]);
    }
    gm_h5_close_file(ds->file);
    free(ds->raw);
    free(ds->refs);
    free(ds);
}

/* Root attributes into ds->info. */

/* The normalisation reads apply: per channel (x * scale - mean) / std. */
static void set_norm(gm_dataset *ds, const double *mean, const double *sd)
{
    gm_ds_info *in = &ds->info;
    for (int c = 0; c < in->shape.c; c++) {
        ds->mean[c] = mean[c];
        in->mean[c] = (float)mean[c];
        in->std[c] = (float)sd[c];
        /* A constant channel has std 0: it is only shifted. */
        ds->inv_std[c] = sd[c] > 0.0 ? 1.0 / sd[c] : 1.0;
        for (int v = 0; v < 256; v++)
            ds->lut[c][v] = (float)(((double)v * ds->scale - ds->mean[c]) * ds->inv_std[c]);
    }
}

void gm_ds_set_normalisation(gm_dataset *ds, const float *mean, const float *std)
{
    double m[GM_DS_MAX_CHANNELS], sd[GM_DS_MAX_CHANNELS];
    for (int c = 0; c < ds->info.shape.c; c++) {
        m[c] = mean[c];
        sd[c] = std[c];
    }
    set_norm(ds, m, sd);
}

static gm_status read_root(gm_dataset *ds, gm_error *err)
{
    hid_t f = ds->file;
    const char *p = ds->path;
    gm_ds_info *in = &ds->info;
    char buf[GM_DS_MAX_TASKS * GM_DS_NAME_MAX + 64];
    gm_status st;
    if (gm_h5_attr_count(f, "format") < 0)
        return gm_error_set(err, GM_EFORMAT, "%s: not a gmorph dataset file (it has no \"format\" attribute)", p);
    if ((st = gm_h5_attr_read_str(f, "format", buf, sizeof buf, err)) != GM_OK) return st;
    if (strcmp(buf, FORMAT_NAME) != 0)
        return gm_error_set(err, GM_EFORMAT, "%s: not a gmorph dataset file (format is \"%s\")", p, buf);
    long long version;
    if ((st = gm_h5_attr_read_int(f, "version", &version, err)) != GM_OK) return st;
    if (version > GM_DS_VERSION)
        return gm_error_set(err, GM_EFORMAT,
                            "%s: written by a newer gmorph (dataset format version %lld; this build reads %d)", p,
                            version, GM_DS_VERSION);
    if (version < 1)
        return gm_error_set(err, GM_EFORMAT, "%s: invalid dataset format version %lld", p, version);
    if ((st = gm_h5_attr_read_str(f, "name", in->name, sizeof in->name, err)) != GM_OK) return st;
    if ((st = gm_h5_attr_read_str(f, "source", in->source, sizeof in->source, err)) != GM_OK) return st;

    if ((st = gm_h5_attr_read_str(f, "tasks", buf, sizeof buf, err)) != GM_OK) return st;
    in->ntasks = 0;
    for (char *tok = buf, *next; tok; tok = next) {
        next = strchr(tok, ',');
        if (next) *next++ = '\0';
        if (in->ntasks == GM_DS_MAX_TASKS)
            return gm_error_set(err, GM_EFORMAT, "%s: attribute \"tasks\" names more than %d tasks", p,
                                GM_DS_MAX_TASKS);
        size_t len = strlen(tok);
        if (len == 0)
            return gm_error_set(err, GM_EFORMAT, "%s: attribute \"tasks\" has an empty task name", p);
        if (len >= GM_DS_NAME_MAX)
            return gm_error_set(err, GM_EFORMAT, "%s: task name \"%.20s...\" is longer than %d characters", p, tok,
                                GM_DS_NAME_MAX - 1);
        for (int u = 0; u < in->ntasks; u++)
            if (strcmp(in->tasks[u].name, tok) == 0)
                return gm_error_set(err, GM_EFORMAT, "%s: task \"%s\" appears twice in attribute \"tasks\"", p, tok);
        memcpy(in->tasks[in->ntasks++].name, tok, len + 1);
    }
    long nc = gm_h5_attr_count(f, "classes");
    if (nc >= 0 && nc != in->ntasks)
        return gm_error_set(err, GM_EFORMAT, "%s: attribute \"classes\" has %ld values for %d tasks", p, nc,
                            in->ntasks);
    long long classes[GM_DS_MAX_TASKS];
    if ((st = gm_h5_attr_read_ints(f, "classes", classes, in->ntasks, err)) != GM_OK) return st;
    for (int t = 0; t < in->ntasks; t++) {
        if (classes[t] < 2 || classes[t] > INT32_MAX)
            return gm_error_set(err, GM_EFORMAT, "%s: task \"%s\" has %lld classes", p, in->tasks[t].name,
                                classes[t]);
        in->tasks[t].classes = (int)classes[t];
    }

    long long shape[3];
    if ((st = gm_h5_attr_read_ints(f, "shape", shape, 3, err)) != GM_OK) return st;
    if (shape[0] <= 0 || shape[1] <= 0 || shape[2] <= 0 || shape[0] > GM_DS_MAX_CHANNELS || shape[1] > INT32_MAX ||
        shape[2] > INT32_MAX)
        return gm_error_set(err, GM_EFORMAT, "%s: attribute \"shape\" is %lldx%lldx%lld (C 1..%d, H and W positive)",
                            p, shape[0], shape[1], shape[2], GM_DS_MAX_CHANNELS);
    in->shape = (gm_shape){(int)shape[0], (int)shape[1], (int)shape[2]};
    if ((st = gm_h5_attr_read_str(f, "dtype", buf, sizeof buf, err)) != GM_OK) return st;
    if (strcmp(buf, "uint8") == 0) in->dtype = GM_DT_U8;
    else if (strcmp(buf, "float32") == 0) in->dtype = GM_DT_F32;
    else return gm_error_set(err, GM_EFORMAT, "%s: attribute \"dtype\" is \"%s\" (uint8 or float32)", p, buf);

    double scale;
    if ((st = gm_h5_attr_read_float(f, "scale", &scale, err)) != GM_OK) return st;
    if (!(scale > 0.0) || !isfinite(scale) || scale > 3.0e38)
        return gm_error_set(err, GM_EFORMAT, "%s: attribute \"scale\" is %g, it must be positive and finite", p, scale);
    in->scale = (float)scale;
    ds->scale = scale;
    int C = in->shape.c;
    double sd[GM_DS_MAX_CHANNELS];
    const char *names[2] = {"mean", "std"};
    double *vals[2] = {ds->mean, sd};
    for (int k = 0; k < 2; k++) {
        long have = gm_h5_attr_count(f, names[k]);
        if (have >= 0 && have != C)
            return gm_error_set(err, GM_EFORMAT, "%s: attribute \"%s\" has %ld values for %d channels", p, names[k],
                                have, C);
        if ((st = gm_h5_attr_read_floats(f, names[k], vals[k], C, err)) != GM_OK) return st;
        for (int c = 0; c < C; c++)
            if (!isfinite(vals[k][c]) || (k == 1 && vals[k][c] < 0.0))
                return gm_error_set(err, GM_EFORMAT, "%s: attribute \"%s\"[%d] is %g", p, names[k], c, vals[k][c]);
    }
    set_norm(ds, ds->mean, sd);
    return GM_OK;
}

static gm_status type_matches(hid_t d, gm_dtype want)
{
    hid_t t = H5Dget_type(d);
    H5T_class_t cls = H5Tget_class(t);
    size_t size = H5Tget_size(t);
    H5T_sign_t sign = cls == H5T_INTEGER ? H5Tget_sign(t) : H5T_SGN_ERROR;
    H5Tclose(t);
    if (want == GM_DT_U8) return cls == H5T_INTEGER && size == 1 && sign == H5T_SGN_NONE ? GM_OK : GM_EFORMAT;
    return cls == H5T_FLOAT && size == 4 ? GM_OK : GM_EFORMAT;
}

/* Opens /<split>/x and reads and checks every label of the split. */
static gm_status open_split(gm_dataset *ds, int s, gm_error *err)
{
    const char *p = ds->path, *sn = SPLIT_NAMES[s];
    gm_ds_info *in = &ds->info;
    hid_t g;
    gm_status st = gm_h5_group_open(ds->file, sn, &g, err);
    if (st != GM_OK) return st;
    int rank = 0;
    hsize_t dims[GM_H5_MAX_RANK];
    /* Missing pieces are named here: gm_h5's message would not say which split. */
    if (!gm_h5_exists(g, "x")) st = gm_error_set(err, GM_EFORMAT, "%s: split %s has no \"x\" dataset", p, sn);
    if (st == GM_OK) st = gm_h5_shape(g, "x", &rank, dims, err);
    if (st == GM_OK && (rank != 4 || dims[1] != (hsize_t)in->shape.c || dims[2] != (hsize_t)in->shape.h ||
                        dims[3] != (hsize_t)in->shape.w)) {
        char have[128] = "";
        for (int i = 0; i < rank && i < 8; i++)
            snprintf(have + strlen(have), sizeof have - strlen(have), "%s%llu", i ? "x" : "",
                     (unsigned long long)dims[i]);
        st = gm_error_set(err, GM_EFORMAT, "%s: split %s: x has shape %s, expected Nx%dx%dx%d", p, sn,
                          rank ? have : "scalar", in->shape.c, in->shape.h, in->shape.w);
    }
    if (st == GM_OK && dims[0] > (hsize_t)INT64_MAX / 2)
        st = gm_error_set(err, GM_EFORMAT, "%s: split %s: x has %llu samples", p, sn, (unsigned long long)dims[0]);
    if (st == GM_OK) {
        ds->x[s] = H5Dopen2(g, "x", H5P_DEFAULT);
        ds->space[s] = ds->x[s] >= 0 ? H5Dget_space(ds->x[s]) : -1;
        if (ds->space[s] < 0) st = gm_error_set(err, GM_EFORMAT, "%s: split %s: x cannot be opened", p, sn);
        else if (type_matches(ds->x[s], in->dtype) != GM_OK)
            st = gm_error_set(err, GM_EFORMAT, "%s: split %s: x is not stored as %s (the \"dtype\" attribute)", p,
                              sn, dtype_name(in->dtype));
    }
    long n = st == GM_OK ? (long)dims[0] : 0;
    if (st == GM_OK) in->n[s] = n;
    hid_t yg = -1;
    if (st == GM_OK && !gm_h5_exists(g, "y"))
        st = gm_error_set(err, GM_EFORMAT, "%s: split %s has no \"y\" group (labels)", p, sn);
    if (st == GM_OK) st = gm_h5_group_open(g, "y", &yg, err);
    for (int t = 0; t < in->ntasks && st == GM_OK; t++) {
        const char *tn = in->tasks[t].name;
        hsize_t ydims[GM_H5_MAX_RANK];
        if (!gm_h5_exists(yg, tn))
            st = gm_error_set(err, GM_EFORMAT, "%s: split %s has no labels for task %s (y/%s)", p, sn, tn, tn);
        if (st == GM_OK) st = gm_h5_shape(yg, tn, &rank, ydims, err);
        if (st == GM_OK && (rank != 1 || ydims[0] != (hsize_t)n))
            st = gm_error_set(err, GM_EFORMAT, "%s: split %s: y/%s holds %llu%s labels for %ld samples", p, sn, tn,
                              rank == 1 ? (unsigned long long)ydims[0] : 0ull, rank == 1 ? "" : " (not 1-D)", n);
        if (st == GM_OK) {
            hid_t d = H5Dopen2(yg, tn, H5P_DEFAULT);
            hid_t ty = d >= 0 ? H5Dget_type(d) : -1;
            int is_int = ty >= 0 && H5Tget_class(ty) == H5T_INTEGER;
            if (ty >= 0) H5Tclose(ty);
            if (d >= 0) H5Dclose(d);
            if (!is_int) st = gm_error_set(err, GM_EFORMAT, "%s: split %s: y/%s is not integer", p, sn, tn);
        }
        if (st == GM_OK) {
            ds->labels[s][t] = malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
            if (!ds->labels[s][t]) st = gm_error_set(err, GM_ENOMEM, "%s: out of memory for labels", p);
        }
        if (st == GM_OK && n > 0) st = gm_h5_read(yg, tn, H5T_NATIVE_INT32, 1, ydims, ds->labels[s][t], err);
        for (long i = 0; i < n && st == GM_OK; i++) {
            int32_t v = ds->labels[s][t][i];
            if (v < 0 || v >= in->tasks[t].classes)
                st = gm_error_set(err, GM_EFORMAT, "%s: split %s, task %s, row %ld: label %d is outside [0, %d)", p,
                                  sn, tn, i, (int)v, in->tasks[t].classes);
        }
    }
    if (yg >= 0) H5Gclose(yg);
    H5Gclose(g);
    return st;
}

gm_status gm_ds_open(gm_dataset **out, const char *path, gm_error *err)
{
    *out = NULL;
    if (!path) return gm_error_set(err, GM_EINVAL, "gm_ds_open: no path");
    gm_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) return gm_error_set(err, GM_ENOMEM, "%s: out of memory", path);
    snprintf(ds->path, sizeof ds->path, "%s", path);
    for (int s = 0; s < GM_NSPLITS; s++) ds->x[s] = ds->space[s] = -1;
    gm_status st = gm_h5_open(&ds->file, path, 0, err);
    if (st == GM_OK) st = read_root(ds, err);
    int any = 0;
    for (int s = 0; s < GM_NSPLITS && st == GM_OK; s++) {
        if (!gm_h5_exists(ds->file, SPLIT_NAMES[s])) continue;
        st = open_split(ds, s, err);
        any |= ds->info.n[s] > 0;
    }
    if (st == GM_OK && !any)
        st = gm_error_set(err, GM_EFORMAT, "%s: has no samples in any split (train, val, test)", path);
    if (st != GM_OK) {
        gm_ds_close(ds);
        return st;
    }
    *out = ds;
    return GM_OK;
}

static gm_status check_split(const gm_dataset *ds, gm_split s, gm_error *err)
{
    if ((unsigned)s >= GM_NSPLITS) return gm_error_set(err, GM_EINVAL, "%s: unknown split %d", ds->path, (int)s);
    if (ds->info.n[s] <= 0) return gm_error_set(err, GM_EINVAL, "%s has no '%s' split", ds->path, SPLIT_NAMES[s]);
    return GM_OK;
}

static gm_status grow_raw(gm_dataset *ds, size_t bytes, gm_error *err)
{
    if (bytes <= ds->raw_cap) return GM_OK;
    unsigned char *p = realloc(ds->raw, bytes);
    if (!p) return gm_error_set(err, GM_ENOMEM, "%s: out of memory for %zu bytes of samples", ds->path, bytes);
    ds->raw = p;
    ds->raw_cap = bytes;
    return GM_OK;
}

gm_status gm_ds_read_raw(gm_dataset *ds, gm_split s, long first, long count, void *x, gm_error *err)
{
    gm_status st = check_split(ds, s, err);
    if (st != GM_OK) return st;
    long n = ds->info.n[s];
    if (first < 0 || count < 0 || first > n || count > n - first)
        return gm_error_set(err, GM_EINVAL, "%s: split %s: rows %ld..%ld are outside [0, %ld)", ds->path,
                            SPLIT_NAMES[s], first, first + count, n);
    if (count == 0) return GM_OK;
    const gm_shape sh = ds->info.shape;
    hsize_t start[4] = {(hsize_t)first, 0, 0, 0};
    hsize_t cnt[4] = {(hsize_t)count, (hsize_t)sh.c, (hsize_t)sh.h, (hsize_t)sh.w};
    hid_t fs = ds->space[s];
    hid_t ms = H5Screate_simple(4, cnt, NULL);
    herr_t rc = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL);
    if (rc >= 0) rc = H5Dread(ds->x[s], dtype_native(ds->info.dtype), ms, fs, H5P_DEFAULT, x);
    H5Sclose(ms);
    if (rc < 0)
        return gm_error_set(err, GM_EIO, "%s: split %s: reading rows %ld..%ld of x failed (file damaged?)", ds->path,
                            SPLIT_NAMES[s], first, first + count);
    return GM_OK;
}

static int cmp_ref(const void *a, const void *b)
{
    const row_ref *p = a, *q = b;
    if (p->row != q->row) return p->row < q->row ? -1 : 1;
    return (p->idx > q->idx) - (p->idx < q->idx);
}

gm_status gm_ds_read(gm_dataset *ds, gm_split s, const long *rows, int count, float *x, gm_error *err)
{
    gm_status st = check_split(ds, s, err);
    if (st != GM_OK) return st;
    const char *sn = SPLIT_NAMES[s];
    long n = ds->info.n[s];
    if (count < 0) return gm_error_set(err, GM_EINVAL, "%s: split %s: reading %d samples", ds->path, sn, count);
    if (count == 0) return GM_OK;
    if (!rows || !x) return gm_error_set(err, GM_EINVAL, "%s: split %s: no rows or no output", ds->path, sn);
    for (int i = 0; i < count; i++)
        if (rows[i] < 0 || rows[i] >= n)
            return gm_error_set(err, GM_EINVAL, "%s: split %s: row %ld is outside [0, %ld)", ds->path, sn, rows[i], n);

    /* Sort a copy so the file is read once, forwards, in as few runs as possible. */
    if ((size_t)count > ds->refs_cap) {
        row_ref *r = realloc(ds->refs, sizeof *r * (size_t)count);
        if (!r) return gm_error_set(err, GM_ENOMEM, "%s: out of memory", ds->path);
        ds->refs = r;
        ds->refs_cap = (size_t)count;
    }
    row_ref *refs = ds->refs;
    for (int i = 0; i < count; i++) refs[i] = (row_ref){rows[i], i};
    qsort(refs, (size_t)count, sizeof *refs, cmp_ref);

    const gm_shape sh = ds->info.shape;
    const size_t numel = gm_shape_numel(sh), esize = dtype_size(ds->info.dtype);
    int nuniq = 0;
    for (int i = 0; i < count; i++) nuniq += i == 0 || refs[i].row != refs[i - 1].row;
    if ((st = grow_raw(ds, (size_t)nuniq * numel * esize, err)) != GM_OK) return st;

    hid_t fs = ds->space[s];
    herr_t rc = 0;
    int first_run = 1;
    for (int i = 0; i < count && rc >= 0;) {
        long start_row = refs[i].row, end_row = start_row + 1;
        int j = i + 1;
        while (j < count && refs[j].row <= end_row) end_row = refs[j++].row + 1;
        hsize_t start[4] = {(hsize_t)start_row, 0, 0, 0};
        hsize_t cnt[4] = {(hsize_t)(end_row - start_row), (hsize_t)sh.c, (hsize_t)sh.h, (hsize_t)sh.w};
        rc = H5Sselect_hyperslab(fs, first_run ? H5S_SELECT_SET : H5S_SELECT_OR, start, NULL, cnt, NULL);
        first_run = 0;
        i = j;
    }
    hsize_t total = (hsize_t)nuniq * numel;
    hid_t ms = H5Screate_simple(1, &total, NULL);
    if (rc >= 0) rc = H5Dread(ds->x[s], dtype_native(ds->info.dtype), ms, fs, H5P_DEFAULT, ds->raw);
    H5Sclose(ms);
    if (rc < 0)
        return gm_error_set(err, GM_EIO, "%s: split %s: reading %d samples of x failed (file damaged?)", ds->path,
                            sn, count);

    /* Scatter into the caller's order, normalising. */
    const size_t hw = (size_t)sh.h * (size_t)sh.w;
    const double scale = ds->scale;
    int u = -1;
    for (int i = 0; i < count; i++) {
        if (i == 0 || refs[i].row != refs[i - 1].row) u++;
        float *dst = x + (size_t)refs[i].idx * numel;
        if (ds->info.dtype == GM_DT_U8) {
            const uint8_t *src = ds->raw + (size_t)u * numel;
            for (int c = 0; c < sh.c; c++) {
                const float *lut = ds->lut[c];
                for (size_t k = 0; k < hw; k++) dst[(size_t)c * hw + k] = lut[src[(size_t)c * hw + k]];
            }
        } else {
            const float *src = (const float *)ds->raw + (size_t)u * numel;
            for (int c = 0; c < sh.c; c++) {
                double m = ds->mean[c], is = ds->inv_std[c];
                for (size_t k = 0; k < hw; k++) {
                    float v = src[(size_t)c * hw + k];
                    if (!isfinite(v))
                        return gm_error_set(err, GM_ENUMERIC, "%s: split %s, row %ld: non-finite value %g in x",
                                            ds->path, sn, refs[i].row, (double)v);
                    dst[(size_t)c * hw + k] = (float)(((double)v * scale - m) * is);
                }
            }
        }
    }
    return GM_OK;
}

/* ---- epoch order --------------------------------------------------------- */

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void gm_ds_epoch_order(long n, uint64_t seed, int epoch, long *order)
{
    gm_rng rng;
    /* Mixing seed first keeps (seed, epoch) pairs from colliding by simple xor. */
    gm_rng_seed(&rng, mix64(seed) ^ ((uint64_t)(int64_t)epoch * 0xd1b54a32d192ed69ull));
    for (long i = 0; i < n; i++) order[i] = i;
    for (long i = n - 1; i > 0; i--) {
        uint64_t bound = (uint64_t)i + 1;
        long j = bound <= UINT32_MAX ? (long)gm_rng_below(&rng, (uint32_t)bound) : (long)(gm_rng_next(&rng) % bound);
        long t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

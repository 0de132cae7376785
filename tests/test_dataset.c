/*
 * The HDF5 dataset format: what is written reads back exactly (raw bytes,
 * labels, normalised values, mean and std); the same content gives the same
 * file bytes; epoch orders are reproducible permutations; bad files and bad
 * writes are refused with a message naming the split, task, row or version;
 * a file written by h5py as datasets/README.md shows is accepted.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>

#include "gm_dataset.h"
#include "gm_h5.h"
#include "test_util.h"

/* ---- temporary directory ------------------------------------------------- */

typedef struct {
    char dir[256];
} tmpdir;

static void tmpdir_make(tmpdir *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/gm_test_dataset_XXXXXX");
    assert_non_null(mkdtemp(t->dir));
}

static void tmpdir_path(const tmpdir *t, const char *name, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s", t->dir, name);
}

/* The directory is flat: remove its files, then it. */
static int tmpdir_remove(tmpdir *t)
{
    DIR *d = opendir(t->dir);
    if (!d) return -1;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        tmpdir_path(t, e->d_name, p, sizeof p);
        unlink(p);
    }
    closedir(d);
    return rmdir(t->dir);
}

/* Every test gets its own directory, removed even when the test fails. */
static int td_setup(void **state)
{
    tmpdir *t = malloc(sizeof *t);
    if (!t) return -1;
    tmpdir_make(t);
    *state = t;
    return 0;
}

static int td_teardown(void **state)
{
    int rc = tmpdir_remove(*state);
    free(*state);
    return rc;
}

static int file_exists(const char *path) { return access(path, F_OK) == 0; }

/* Whole file into memory; *size its length. Caller frees. */
static unsigned char *slurp(const char *path, long *size)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)*size + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)*size, f), (size_t)*size);
    fclose(f);
    return b;
}

/* ---- a small dataset in memory ------------------------------------------- */

typedef struct {
    gm_ds_info info;
    void *x[GM_NSPLITS];                      /* n[s] samples of the declared dtype */
    int32_t *y[GM_NSPLITS][GM_DS_MAX_TASKS];
} content;

static void set_task(gm_ds_info *in, int t, const char *name, int classes)
{
    snprintf(in->tasks[t].name, sizeof in->tasks[t].name, "%s", name);
    in->tasks[t].classes = classes;
}

/*
 * uint8: 2x3x4 samples, tasks digit (10) and color (3), 7/3/5 samples.
 * float32: 2x2x3 samples whose channel 1 is constant (std 0), one task, no
 * train split, so mean and std come from the test split.
 */
static void content_make(content *ct, gm_dtype dt, uint64_t seed)
{
    memset(ct, 0, sizeof *ct);
    gm_ds_info *in = &ct->info;
    gm_rng rng;
    gm_rng_seed(&rng, seed);
    if (dt == GM_DT_U8) {
        snprintf(in->name, sizeof in->name, "tiny-u8");
        snprintf(in->source, sizeof in->source, "test_dataset seed=%llu", (unsigned long long)seed);
        in->shape = (gm_shape){2, 3, 4};
        in->scale = 1.0f / 255.0f;
        in->ntasks = 2;
        set_task(in, 0, "digit", 10);
        set_task(in, 1, "color", 3);
        in->n[GM_SPLIT_TRAIN] = 7;
        in->n[GM_SPLIT_VAL] = 3;
        in->n[GM_SPLIT_TEST] = 5;
    } else {
        snprintf(in->name, sizeof in->name, "tiny-f32");
        snprintf(in->source, sizeof in->source, "test_dataset float");
        in->shape = (gm_shape){2, 2, 3};
        in->scale = 0.5f;
        in->ntasks = 1;
        set_task(in, 0, "kind", 4);
        in->n[GM_SPLIT_VAL] = 4;
        in->n[GM_SPLIT_TEST] = 6;
    }
    in->dtype = dt;
    size_t numel = gm_shape_numel(in->shape), hw = (size_t)in->shape.h * (size_t)in->shape.w;
    for (int s = 0; s < GM_NSPLITS; s++) {
        long n = in->n[s];
        if (n == 0) continue;
        ct->x[s] = malloc((size_t)n * numel * (dt == GM_DT_U8 ? 1 : 4));
        for (size_t j = 0; j < (size_t)n * numel; j++) {
            if (dt == GM_DT_U8) ((uint8_t *)ct->x[s])[j] = (uint8_t)gm_rng_below(&rng, 256);
            else ((float *)ct->x[s])[j] = (j / hw) % 2 == 1 ? 3.0f : 10.0f * gm_rng_normal(&rng) + 4.0f;
        }
        for (int t = 0; t < in->ntasks; t++) {
            ct->y[s][t] = malloc(sizeof(int32_t) * (size_t)n);
            for (long i = 0; i < n; i++) ct->y[s][t][i] = (int32_t)gm_rng_below(&rng, (uint32_t)in->tasks[t].classes);
        }
    }
}

static void content_free(content *ct)
{
    for (int s = 0; s < GM_NSPLITS; s++) {
        free(ct->x[s]);
        for (int t = 0; t < GM_DS_MAX_TASKS; t++) free(ct->y[s][t]);
    }
}

static size_t sample_bytes(const gm_ds_info *in)
{
    return gm_shape_numel(in->shape) * (in->dtype == GM_DT_U8 ? 1 : 4);
}

/* Appends rows [first, first+count) of split s. */
static gm_status append_rows(gm_ds_writer *w, const content *ct, int s, long first, long count, gm_error *err)
{
    const int32_t *y[GM_DS_MAX_TASKS];
    for (int t = 0; t < ct->info.ntasks; t++) y[t] = ct->y[s][t] + first;
    const unsigned char *x = (const unsigned char *)ct->x[s] + (size_t)first * sample_bytes(&ct->info);
    return gm_ds_append(w, (gm_split)s, count, x, y, err);
}

/* Writes ct to path, appending batch samples at a time (splits test, train, val). */
static void write_content(const content *ct, const char *path, long batch)
{
    gm_error err;
    gm_ds_writer *w;
    assert_ok(gm_ds_writer_create(&w, path, &ct->info, &err), err);
    const int order[GM_NSPLITS] = {GM_SPLIT_TEST, GM_SPLIT_TRAIN, GM_SPLIT_VAL};
    for (int k = 0; k < GM_NSPLITS; k++) {
        int s = order[k];
        for (long i = 0; i < ct->info.n[s]; i += batch) {
            long c = ct->info.n[s] - i < batch ? ct->info.n[s] - i : batch;
            assert_ok(append_rows(w, ct, s, i, c, &err), err);
        }
    }
    assert_ok(gm_ds_writer_close(w, &err), err);
}

/* Scaled value j of sample i in split s, in double. */
static double scaled_value(const content *ct, int s, size_t idx)
{
    double v = ct->info.dtype == GM_DT_U8 ? (double)((const uint8_t *)ct->x[s])[idx]
                                          : (double)((const float *)ct->x[s])[idx];
    return v * (double)ct->info.scale;
}

/* Per-channel mean and population std of split s, two passes in double. */
static void stats_by_hand(const content *ct, int s, double *mean, double *sd)
{
    const gm_ds_info *in = &ct->info;
    size_t hw = (size_t)in->shape.h * (size_t)in->shape.w;
    for (int c = 0; c < in->shape.c; c++) {
        double sum = 0.0, q = 0.0;
        for (long i = 0; i < in->n[s]; i++)
            for (size_t k = 0; k < hw; k++)
                sum += scaled_value(ct, s, ((size_t)i * (size_t)in->shape.c + (size_t)c) * hw + k);
        mean[c] = sum / ((double)in->n[s] * (double)hw);
        for (long i = 0; i < in->n[s]; i++)
            for (size_t k = 0; k < hw; k++) {
                double d = scaled_value(ct, s, ((size_t)i * (size_t)in->shape.c + (size_t)c) * hw + k) - mean[c];
                q += d * d;
            }
        sd[c] = sqrt(q / ((double)in->n[s] * (double)hw));
    }
}

/* Everything written reads back: info, raw bytes, labels, stats, normalised rows. */
static void check_round_trip(const content *ct, const char *path, int stats_split)
{
    gm_error err;
    gm_dataset *ds;
    assert_ok(gm_ds_open(&ds, path, &err), err);
    const gm_ds_info *in = gm_ds_get_info(ds), *want = &ct->info;
    assert_string_equal(gm_ds_path(ds), path);
    assert_string_equal(in->name, want->name);
    assert_string_equal(in->source, want->source);
    assert_int_equal(in->shape.c, want->shape.c);
    assert_int_equal(in->shape.h, want->shape.h);
    assert_int_equal(in->shape.w, want->shape.w);
    assert_int_equal(in->dtype, want->dtype);
    assert_true(in->scale == want->scale);
    assert_int_equal(in->ntasks, want->ntasks);
    for (int t = 0; t < want->ntasks; t++) {
        assert_string_equal(in->tasks[t].name, want->tasks[t].name);
        assert_int_equal(in->tasks[t].classes, want->tasks[t].classes);
        assert_int_equal(gm_ds_task_index(ds, want->tasks[t].name), t);
    }
    assert_int_equal(gm_ds_task_index(ds, "nope"), -1);

    double mean[GM_DS_MAX_CHANNELS], sd[GM_DS_MAX_CHANNELS];
    stats_by_hand(ct, stats_split, mean, sd);
    for (int c = 0; c < in->shape.c; c++) {
        gm_assert_close("mean", (size_t)c, in->mean[c], mean[c], 1e-6, 1e-6);
        gm_assert_close("std", (size_t)c, in->std[c], sd[c], 1e-6, 1e-6);
    }

    size_t numel = gm_shape_numel(in->shape), hw = (size_t)in->shape.h * (size_t)in->shape.w;
    for (int s = 0; s < GM_NSPLITS; s++) {
        long n = want->n[s];
        assert_int_equal(in->n[s], n);
        if (n == 0) {
            assert_int_equal(gm_ds_require(ds, (gm_split)s, &err), GM_EFORMAT);
            continue;
        }
        assert_ok(gm_ds_require(ds, (gm_split)s, &err), err);
        size_t bytes = (size_t)n * sample_bytes(in);
        unsigned char *raw = malloc(bytes);
        assert_ok(gm_ds_read_raw(ds, (gm_split)s, 0, n, raw, &err), err);
        assert_memory_equal(raw, ct->x[s], bytes);
        /* A range in the middle. */
        assert_ok(gm_ds_read_raw(ds, (gm_split)s, 1, n - 2, raw, &err), err);
        assert_memory_equal(raw, (unsigned char *)ct->x[s] + sample_bytes(in), (size_t)(n - 2) * sample_bytes(in));
        free(raw);
        for (int t = 0; t < in->ntasks; t++)
            assert_memory_equal(gm_ds_labels(ds, (gm_split)s, t), ct->y[s][t], sizeof(int32_t) * (size_t)n);
        assert_null(gm_ds_labels(ds, (gm_split)s, in->ntasks));

        /* Shuffled, with repeats: rows n-1, 0, n-1, 1, 2, 1, ... */
        long rows[9] = {n - 1, 0, n - 1, 1, 2, 1, n / 2, 0, n - 2};
        float *x = malloc(sizeof(float) * 9 * numel);
        assert_ok(gm_ds_read(ds, (gm_split)s, rows, 9, x, &err), err);
        for (int i = 0; i < 9; i++)
            for (int c = 0; c < in->shape.c; c++) {
                double std = in->std[c] > 0.0f ? in->std[c] : 1.0;
                for (size_t k = 0; k < hw; k++) {
                    size_t j = (size_t)c * hw + k;
                    double v = (scaled_value(ct, s, (size_t)rows[i] * numel + j) - in->mean[c]) / std;
                    gm_assert_close("normalised", (size_t)i * numel + j, x[(size_t)i * numel + j], v, 1e-5, 1e-5);
                }
            }
        free(x);
    }
    gm_ds_close(ds);
}

static void test_round_trip(void **state)
{
    const tmpdir *td = *state;
    char path[512];
    content ct;

    content_make(&ct, GM_DT_U8, 42);
    tmpdir_path(td, "u8.h5", path, sizeof path);
    write_content(&ct, path, 2);
    check_round_trip(&ct, path, GM_SPLIT_TRAIN);
    content_free(&ct);

    content_make(&ct, GM_DT_F32, 7);
    tmpdir_path(td, "f32.h5", path, sizeof path);
    write_content(&ct, path, 3);
    check_round_trip(&ct, path, GM_SPLIT_TEST); /* no train split: stats from test */
    /* Channel 1 is constant: std 0, read as shifted only (0), never NaN. */
    gm_dataset *ds;
    gm_error err;
    assert_ok(gm_ds_open(&ds, path, &err), err);
    assert_true(gm_ds_get_info(ds)->std[1] == 0.0f);
    gm_assert_close("mean[1]", 1, gm_ds_get_info(ds)->mean[1], 1.5, 0, 1e-7);
    content_free(&ct);
    gm_ds_close(ds);

    assert_false(file_exists(strcat(path, ".tmp")));
}

/* Same content: same bytes, however the appends were batched. */
static void test_reproducible_bytes(void **state)
{
    const tmpdir *td = *state;
    char a[512], b[512], c[512];
    tmpdir_path(td, "a.h5", a, sizeof a);
    tmpdir_path(td, "b.h5", b, sizeof b);
    tmpdir_path(td, "c.h5", c, sizeof c);
    content ct, other;
    content_make(&ct, GM_DT_U8, 5);
    content_make(&other, GM_DT_U8, 6);
    write_content(&ct, a, 1);
    write_content(&ct, b, 4);
    write_content(&other, c, 4);
    long na, nb, nc;
    unsigned char *ba = slurp(a, &na), *bb = slurp(b, &nb), *bc = slurp(c, &nc);
    assert_int_equal(na, nb);
    assert_memory_equal(ba, bb, (size_t)na);
    /* ... and the comparison can fail: other content differs. */
    assert_int_equal(na, nc);
    assert_memory_not_equal(ba, bc, (size_t)na);
    free(ba);
    free(bb);
    free(bc);
    content_free(&ct);
    content_free(&other);
}

static void test_epoch_order(void **state)
{
    (void)state;
    enum { N = 1000 };
    static long a[N], b[N], c[N], d[N];
    gm_ds_epoch_order(N, 99, 3, a);
    char seen[N] = {0};
    for (long i = 0; i < N; i++) {
        assert_in_range(a[i], 0, N - 1);
        assert_int_equal(seen[a[i]], 0);
        seen[a[i]] = 1;
    }
    gm_ds_epoch_order(N, 99, 3, b);
    assert_memory_equal(a, b, sizeof a);
    gm_ds_epoch_order(N, 99, 4, c);
    assert_memory_not_equal(a, c, sizeof a);
    gm_ds_epoch_order(N, 100, 3, d);
    assert_memory_not_equal(a, d, sizeof a);
    long fixed = 0; /* a shuffle moves most elements */
    for (long i = 0; i < N; i++) fixed += a[i] == i;
    assert_true(fixed < 20);
    long one = -1;
    gm_ds_epoch_order(1, 1, 0, &one);
    assert_int_equal(one, 0);
}

static void test_split_names(void **state)
{
    (void)state;
    gm_error err;
    gm_split s;
    for (int i = 0; i < GM_NSPLITS; i++) {
        assert_ok(gm_split_parse(gm_split_name((gm_split)i), &s, &err), err);
        assert_int_equal(s, i);
    }
    assert_string_equal(gm_split_name(GM_SPLIT_VAL), "val");
    assert_int_equal(gm_split_parse("validation", &s, &err), GM_EINVAL);
    assert_msg_has(err, "\"validation\"");
    assert_msg_has(err, "train, val, test");
}

/* Overwrites one int32 element (or float) of a dataset in an existing file. */
static void patch_element(const char *path, const char *dset, hsize_t row, hid_t type, const void *v)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t d = H5Dopen2(f, dset, H5P_DEFAULT);
    assert_true(d >= 0);
    hid_t fs = H5Dget_space(d);
    hsize_t coord[4] = {row, 0, 0, 0};
    assert_true(H5Sselect_elements(fs, H5S_SELECT_SET, 1, coord) >= 0);
    hsize_t one = 1;
    hid_t ms = H5Screate_simple(1, &one, NULL);
    assert_true(H5Dwrite(d, type, ms, fs, H5P_DEFAULT, v) >= 0);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(d);
    H5Fclose(f);
}

static void test_bad_files(void **state)
{
    const tmpdir *td = *state;
    char path[512], p2[512];
    gm_error err;
    gm_dataset *ds = NULL;
    content ct;
    content_make(&ct, GM_DT_U8, 11);
    tmpdir_path(td, "good.h5", path, sizeof path);
    write_content(&ct, path, 3);

    /* A split the file lacks. */
    content f32;
    content_make(&f32, GM_DT_F32, 3);
    tmpdir_path(td, "f32.h5", p2, sizeof p2);
    write_content(&f32, p2, 10);
    assert_ok(gm_ds_open(&ds, p2, &err), err);
    assert_int_equal(gm_ds_require(ds, GM_SPLIT_TRAIN, &err), GM_EFORMAT);
    assert_msg_has(err, "has no 'train' split");
    assert_msg_has(err, "f32.h5");
    long row = 0;
    float one[12];
    assert_int_equal(gm_ds_read(ds, GM_SPLIT_TRAIN, &row, 1, one, &err), GM_EINVAL);
    assert_msg_has(err, "no 'train' split");
    row = 6;
    assert_int_equal(gm_ds_read(ds, GM_SPLIT_TEST, &row, 1, one, &err), GM_EINVAL);
    assert_msg_has(err, "row 6 is outside [0, 6)");
    gm_ds_close(ds);

    /* float32 samples that became NaN on disk: the read names split and row. */
    float nan = NAN;
    patch_element(p2, "/test/x", 3, H5T_NATIVE_FLOAT, &nan);
    assert_ok(gm_ds_open(&ds, p2, &err), err);
    long rows[3] = {1, 3, 0};
    float x3[36];
    assert_int_equal(gm_ds_read(ds, GM_SPLIT_TEST, rows, 3, x3, &err), GM_ENUMERIC);
    assert_msg_has(err, "split test, row 3");
    assert_ok(gm_ds_read(ds, GM_SPLIT_TEST, rows, 1, x3, &err), err);
    gm_ds_close(ds);

    /* A label corrupted after writing. */
    tmpdir_path(td, "badlabel.h5", p2, sizeof p2);
    write_content(&ct, p2, 7);
    int32_t bad = 99;
    patch_element(p2, "/val/y/color", 2, H5T_NATIVE_INT32, &bad);
    assert_int_equal(gm_ds_open(&ds, p2, &err), GM_EFORMAT);
    assert_null(ds);
    assert_msg_has(err, "badlabel.h5");
    assert_msg_has(err, "split val, task color, row 2: label 99 is outside [0, 3)");

    /* The first half of a valid file. */
    long size;
    unsigned char *bytes = slurp(path, &size);
    tmpdir_path(td, "half.h5", p2, sizeof p2);
    FILE *f = fopen(p2, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, (size_t)size / 2, f), (size_t)size / 2);
    fclose(f);
    free(bytes);
    assert_int_equal(gm_ds_open(&ds, p2, &err), GM_EFORMAT);
    assert_msg_has(err, "half.h5");
    assert_msg_has(err, "truncated");

    /* A newer version. */
    tmpdir_path(td, "v2.h5", p2, sizeof p2);
    write_content(&ct, p2, 7);
    hid_t h;
    assert_ok(gm_h5_open(&h, p2, 1, &err), err);
    assert_ok(gm_h5_attr_write_int(h, "version", 2, &err), err);
    gm_h5_close_file(h);
    assert_int_equal(gm_ds_open(&ds, p2, &err), GM_EFORMAT);
    assert_msg_has(err, "v2.h5");
    assert_msg_has(err, "written by a newer gmorph (dataset format version 2; this build reads 1)");

    /* Another kind of gmorph file, and an HDF5 file of no kind. */
    tmpdir_path(td, "model.h5", p2, sizeof p2);
    assert_ok(gm_h5_create(&h, p2, &err), err);
    assert_ok(gm_h5_attr_write_str(h, "format", "gmorph-model", &err), err);
    assert_ok(gm_h5_commit(h, p2, &err), err);
    assert_int_equal(gm_ds_open(&ds, p2, &err), GM_EFORMAT);
    assert_msg_has(err, "not a gmorph dataset file (format is \"gmorph-model\")");
    tmpdir_path(td, "plain.h5", p2, sizeof p2);
    assert_ok(gm_h5_create(&h, p2, &err), err);
    assert_ok(gm_h5_commit(h, p2, &err), err);
    assert_int_equal(gm_ds_open(&ds, p2, &err), GM_EFORMAT);
    assert_msg_has(err, "not a gmorph dataset file");
    assert_msg_has(err, "\"format\"");

    /* x whose shape disagrees with the shape attribute. */
    tmpdir_path(td, "shape.h5", p2, sizeof p2);
    write_content(&ct, p2, 7);
    assert_ok(gm_h5_open(&h, p2, 1, &err), err);
    const long long wrong[3] = {2, 4, 3};
    assert_ok(gm_h5_attr_write_ints(h, "shape", wrong, 3, &err), err);
    gm_h5_close_file(h);
    assert_int_equal(gm_ds_open(&ds, p2, &err), GM_EFORMAT);
    assert_msg_has(err, "split train: x has shape 7x2x3x4, expected Nx2x4x3");

    /* A task's labels removed from one split. */
    tmpdir_path(td, "nolabels.h5", p2, sizeof p2);
    write_content(&ct, p2, 7);
    h = H5Fopen(p2, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(h >= 0);
    assert_true(H5Ldelete(h, "/test/y/digit", H5P_DEFAULT) >= 0);
    H5Fclose(h);
    assert_int_equal(gm_ds_open(&ds, p2, &err), GM_EFORMAT);
    assert_msg_has(err, "split test has no labels for task digit");

    /* A missing file. */
    tmpdir_path(td, "none.h5", p2, sizeof p2);
    assert_int_equal(gm_ds_open(&ds, p2, &err), GM_EIO);
    assert_msg_has(err, "none.h5");

    content_free(&ct);
    content_free(&f32);
}

static void test_bad_writes(void **state)
{
    const tmpdir *td = *state;
    char path[512], tmp[600];
    gm_error err;
    gm_ds_writer *w;
    content ct;
    content_make(&ct, GM_DT_U8, 13);
    tmpdir_path(td, "w.h5", path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);

    /* A label out of range, at row 5 of train (the third of the second batch). */
    assert_ok(gm_ds_writer_create(&w, path, &ct.info, &err), err);
    assert_true(file_exists(tmp));
    assert_ok(append_rows(w, &ct, GM_SPLIT_TRAIN, 0, 3, &err), err);
    int32_t saved = ct.y[GM_SPLIT_TRAIN][1][5];
    ct.y[GM_SPLIT_TRAIN][1][5] = 3;
    assert_int_equal(append_rows(w, &ct, GM_SPLIT_TRAIN, 3, 3, &err), GM_EINVAL);
    assert_msg_has(err, "split train, task color, row 5: label 3 is outside [0, 3)");
    ct.y[GM_SPLIT_TRAIN][1][5] = -1;
    assert_int_equal(append_rows(w, &ct, GM_SPLIT_TRAIN, 3, 3, &err), GM_EINVAL);
    assert_msg_has(err, "label -1");
    ct.y[GM_SPLIT_TRAIN][1][5] = saved;

    /* Past the declared size: 3 + 5 > 7. */
    assert_int_equal(append_rows(w, &ct, GM_SPLIT_TRAIN, 0, 5, &err), GM_EINVAL);
    assert_msg_has(err, "split train");
    assert_msg_has(err, "past the declared 7");
    /* Closing with rows missing: an error, and nothing left behind. */
    assert_ok(append_rows(w, &ct, GM_SPLIT_TRAIN, 3, 2, &err), err);
    assert_int_equal(gm_ds_writer_close(w, &err), GM_EINVAL);
    assert_msg_has(err, "split train: 5 of 7 samples written");
    assert_false(file_exists(path));
    assert_false(file_exists(tmp));

    /* Abort removes the temporary. */
    assert_ok(gm_ds_writer_create(&w, path, &ct.info, &err), err);
    gm_ds_writer_abort(w);
    assert_false(file_exists(tmp));
    assert_false(file_exists(path));

    /* Declared info that cannot make a valid file. */
    int nc = 0;
    gm_ds_info bad;
#define CASE(body, text)                                        \
    do {                                                        \
        bad = ct.info;                                          \
        { gm_ds_info *in = &bad; body; }                        \
        assert_int_equal(gm_ds_writer_create(&w, path, &bad, &err), GM_EINVAL); \
        assert_null(w);                                         \
        assert_msg_has(err, text);                              \
        assert_false(file_exists(tmp));                         \
        nc++;                                                   \
    } while (0)
    CASE(in->shape.h = 0, "sample shape 2x0x4 must be positive");
    CASE(in->shape.c = 17, "17 channels, at most 16");
    CASE(in->ntasks = 0, "0 tasks, expected 1 to 16");
    CASE(set_task(in, 1, "digit", 3), "task name \"digit\" appears twice");
    CASE(set_task(in, 1, "a,b", 3), "task name \"a,b\" contains a comma");
    CASE(set_task(in, 1, "", 3), "task 1 has an empty name");
    CASE(in->tasks[0].classes = 1, "task \"digit\" has 1 classes, at least 2");
    CASE(in->scale = 0.0f, "scale 0 must be positive");
    CASE((in->n[0] = in->n[1] = in->n[2] = 0), "every split declares 0 samples");
#undef CASE
    assert_int_equal(nc, 9);

    /* Appending to a split declared empty. */
    bad = ct.info;
    bad.n[GM_SPLIT_VAL] = 0;
    assert_ok(gm_ds_writer_create(&w, path, &bad, &err), err);
    assert_int_equal(append_rows(w, &ct, GM_SPLIT_VAL, 0, 1, &err), GM_EINVAL);
    assert_msg_has(err, "split val was declared with 0 samples");
    gm_ds_writer_abort(w);

    /* float32 samples must be finite. */
    content f32;
    content_make(&f32, GM_DT_F32, 2);
    assert_ok(gm_ds_writer_create(&w, path, &f32.info, &err), err);
    ((float *)f32.x[GM_SPLIT_TEST])[13] = INFINITY; /* row 1 (12 values per sample) */
    assert_int_equal(append_rows(w, &f32, GM_SPLIT_TEST, 0, 2, &err), GM_ENUMERIC);
    assert_msg_has(err, "split test, row 1: non-finite");
    gm_ds_writer_abort(w);
    content_free(&f32);

    assert_false(file_exists(path));
    content_free(&ct);
}

/* ---- a file written by h5py, as datasets/README.md shows ----------------- */

/* The README's ```python block into out; 0 when found. */
static int extract_snippet(const char *readme, const char *out)
{
    FILE *in = fopen(readme, "r");
    if (!in) return -1;
    FILE *o = fopen(out, "w");
    assert_non_null(o);
    char line[1024];
    int inside = 0, seen_section = 0, lines = 0;
    while (fgets(line, sizeof line, in)) {
        if (strncmp(line, "## The dataset format", 21) == 0) seen_section = 1;
        if (!seen_section) continue;
        if (!inside && strncmp(line, "```python", 9) == 0) {
            inside = 1;
            continue;
        }
        if (inside && strncmp(line, "```", 3) == 0) break;
        if (inside) {
            fputs(line, o);
            lines++;
        }
    }
    fclose(o);
    fclose(in);
    return lines > 10 ? 0 : -1;
}

/* The toy set of the README snippet: value and labels from the position. */
static uint8_t toy_x(long row, int c, int h, int w) { return (uint8_t)((row * 7 + c * 50 + h * 3 + w * 11) % 256); }

static void test_h5py_snippet(void **state)
{
    const tmpdir *td = *state;
    if (system("/usr/bin/python3 -c 'import h5py, numpy' >/dev/null 2>&1") != 0) {
        print_message("h5py or numpy missing under /usr/bin/python3: not cross-checked\n");
        skip();
    }
    /* ctest sets GM_FIXTURES to tests/fixtures; else go by this file's path. */
    char readme[512];
    const char *fx = getenv("GM_FIXTURES");
    if (fx) {
        snprintf(readme, sizeof readme, "%s/../../datasets/README.md", fx);
    } else {
        snprintf(readme, sizeof readme, "%s", __FILE__);
        char *slash = strrchr(readme, '/');
        size_t at = slash ? (size_t)(slash + 1 - readme) : 0;
        snprintf(readme + at, sizeof readme - at, "../datasets/README.md");
    }
    char script[512], path[512], cmd[1200];
    tmpdir_path(td, "write_dataset.py", script, sizeof script);
    tmpdir_path(td, "toy.h5", path, sizeof path);
    if (extract_snippet(readme, script) != 0) fail_msg("no python snippet in %s", readme);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s", script, path);
    assert_int_equal(system(cmd), 0);

    gm_error err;
    gm_dataset *ds;
    assert_ok(gm_ds_open(&ds, path, &err), err);
    const gm_ds_info *in = gm_ds_get_info(ds);
    assert_string_equal(in->name, "toy");
    assert_string_equal(in->source, "datasets/README.md example");
    assert_int_equal(in->dtype, GM_DT_U8);
    assert_int_equal(in->shape.c, 2);
    assert_int_equal(in->shape.h, 8);
    assert_int_equal(in->shape.w, 8);
    assert_int_equal(in->ntasks, 2);
    assert_string_equal(in->tasks[0].name, "digit");
    assert_int_equal(in->tasks[0].classes, 10);
    assert_string_equal(in->tasks[1].name, "parity");
    assert_int_equal(in->tasks[1].classes, 2);
    const long n[GM_NSPLITS] = {50, 10, 20}, first[GM_NSPLITS] = {0, 100, 200};

    /* mean and std as our writer defines them: train split, population std. */
    for (int c = 0; c < 2; c++) {
        double sum = 0.0, q = 0.0, cnt = 50.0 * 64.0;
        for (long i = 0; i < 50; i++)
            for (int k = 0; k < 64; k++) sum += toy_x(i, c, k / 8, k % 8) / 255.0;
        double m = sum / cnt;
        for (long i = 0; i < 50; i++)
            for (int k = 0; k < 64; k++) {
                double d = toy_x(i, c, k / 8, k % 8) / 255.0 - m;
                q += d * d;
            }
        gm_assert_close("mean", (size_t)c, in->mean[c], m, 1e-6, 1e-6);
        gm_assert_close("std", (size_t)c, in->std[c], sqrt(q / cnt), 1e-6, 1e-6);
    }
    static uint8_t raw[50 * 128];
    static float x[4 * 128];
    for (int s = 0; s < GM_NSPLITS; s++) {
        assert_int_equal(in->n[s], n[s]);
        assert_ok(gm_ds_read_raw(ds, (gm_split)s, 0, n[s], raw, &err), err);
        for (long i = 0; i < n[s]; i++) {
            for (int j = 0; j < 128; j++)
                if (raw[i * 128 + j] != toy_x(first[s] + i, j / 64, (j / 8) % 8, j % 8))
                    fail_msg("split %d row %ld value %d: %d", s, i, j, raw[i * 128 + j]);
            assert_int_equal(gm_ds_labels(ds, (gm_split)s, 0)[i], (first[s] + i) % 10);
            assert_int_equal(gm_ds_labels(ds, (gm_split)s, 1)[i], (first[s] + i) % 2);
        }
        long rows[4] = {n[s] - 1, 3, 3, 0};
        assert_ok(gm_ds_read(ds, (gm_split)s, rows, 4, x, &err), err);
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 128; j++) {
                int c = j / 64;
                double v = toy_x(first[s] + rows[i], c, (j / 8) % 8, j % 8) * (double)in->scale;
                v = (v - in->mean[c]) / in->std[c];
                gm_assert_close("h5py normalised", (size_t)(i * 128 + j), x[i * 128 + j], v, 1e-5, 1e-5);
            }
    }
    gm_ds_close(ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, td_setup, td_teardown),
        cmocka_unit_test_setup_teardown(test_reproducible_bytes, td_setup, td_teardown),
        cmocka_unit_test(test_epoch_order),
        cmocka_unit_test(test_split_names),
        cmocka_unit_test_setup_teardown(test_bad_files, td_setup, td_teardown),
        cmocka_unit_test_setup_teardown(test_bad_writes, td_setup, td_teardown),
        cmocka_unit_test_setup_teardown(test_h5py_snippet, td_setup, td_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

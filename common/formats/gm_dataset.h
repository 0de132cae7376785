/*
 * gm_dataset: the HDF5 dataset format (datasets/README.md
 * shows how to write one from h5py).
 *
 * Layout of a file:
 *   /                       attrs: format = "gmorph-dataset", version = 1, name,
 *                                  tasks (names, comma-separated), classes (int[]),
 *                                  shape (int[3]: C, H, W), dtype ("uint8" or
 *                                  "float32"), scale, mean (float[C]), std (float[C]),
 *                                  source
 *   /train, /val, /test     one group per split (any may be absent)
 *     x                     (N, C, H, W) uint8 or float32, contiguous
 *     y/<task>              (N,) int32 labels in [0, classes of the task)
 *
 * A sample's network input is (x * scale - mean[c]) / std[c]. The writer computes
 * mean and std per channel from the train split (the test split when there is no
 * train split) as it is appended, so every maker and converter normalises alike.
 *
 * Reading: gm_ds_open validates the layout and every label (small) up front and
 * keeps the labels in memory; images stay on disk and gm_ds_read reads only the
 * rows asked for, in any order, converting them to normalised floats. An epoch's
 * order is a pure function of (seed, epoch), so a resumed training sees the same
 * batches as an uninterrupted one.
 */
#ifndef GM_DATASET_H
#define GM_DATASET_H

#include <stdint.h>

#include "gm_error.h"
#include "gm_op.h"

enum { GM_DS_MAX_TASKS = 16, GM_DS_NAME_MAX = 64, GM_DS_MAX_CHANNELS = 16, GM_DS_VERSION = 1 };

typedef enum { GM_SPLIT_TRAIN, GM_SPLIT_VAL, GM_SPLIT_TEST, GM_NSPLITS } gm_split;

/* "train", "val", "test". */
const char *gm_split_name(gm_split s);
/* Parses a split name; GM_EINVAL lists the valid ones. */
gm_status gm_split_parse(const char *name, gm_split *s, gm_error *err);

typedef enum { GM_DT_U8, GM_DT_F32 } gm_dtype;

typedef struct {
    char name[GM_DS_NAME_MAX];
    int classes;
} gm_ds_task;

typedef struct {
    char name[GM_DS_NAME_MAX];          /* e.g. "multi-fashion" */
    char source[256];                   /* provenance: maker, seed, options */
    gm_shape shape;                     /* per sample, C <= GM_DS_MAX_CHANNELS */
    gm_dtype dtype;
    float scale;                        /* stored value * scale; uint8 images use 1/255 */
    float mean[GM_DS_MAX_CHANNELS];     /* per channel, of scaled values; set by the writer */
    float std[GM_DS_MAX_CHANNELS];
    int ntasks;
    gm_ds_task tasks[GM_DS_MAX_TASKS];
    long n[GM_NSPLITS];                 /* samples per split; 0: the split is absent */
} gm_ds_info;

/* ---- writing ------------------------------------------------------------- */

typedef struct gm_ds_writer gm_ds_writer;

/*
 * Starts a dataset file at path (written to "<path>.tmp", renamed by
 * gm_ds_writer_close). info declares the shape, dtype, scale, tasks and the
 * number of samples of each split; its mean and std are ignored (computed).
 */
gm_status gm_ds_writer_create(gm_ds_writer **w, const char *path, const gm_ds_info *info, gm_error *err);
/*
 * Appends count samples to a split, in order: x holds count samples of the
 * declared dtype, y[t] count labels of task t. Labels out of range and writing
 * past the declared size are errors (the message names split, task and row).
 */
gm_status gm_ds_append(gm_ds_writer *w, gm_split s, long count, const void *x, const int32_t *const *y,
                       gm_error *err);
/*
 * Checks every declared sample was written, stores mean and std, and renames
 * the file into place. Frees w whatever happens; on error nothing is left at path.
 */
gm_status gm_ds_writer_close(gm_ds_writer *w, gm_error *err);
/* Gives up: frees w and removes the temporary file. */
void gm_ds_writer_abort(gm_ds_writer *w);

/* ---- reading ------------------------------------------------------------- */

typedef struct gm_dataset gm_dataset;

/*
 * Opens and validates a dataset file: format and version, shapes of every
 * split, a label dataset per task of the right length, every label in range.
 * The message names the file and what is wrong.
 */
gm_status gm_ds_open(gm_dataset **ds, const char *path, gm_error *err);
void gm_ds_close(gm_dataset *ds);

const gm_ds_info *gm_ds_get_info(const gm_dataset *ds);
const char *gm_ds_path(const gm_dataset *ds);
/* Index of a task by name, or -1. */
int gm_ds_task_index(const gm_dataset *ds, const char *task);
/* GM_EFORMAT "<file> has no 'val' split" when the split is absent or empty. */
gm_status gm_ds_require(const gm_dataset *ds, gm_split s, gm_error *err);

/* All labels of task t in split s (n[s] values, owned by ds). */
const int32_t *gm_ds_labels(const gm_dataset *ds, gm_split s, int task);

/*
 * Reads samples rows[0..count) of a split (any order, repeats allowed) as
 * normalised floats: x holds count * numel(shape) floats on return.
 */
gm_status gm_ds_read(gm_dataset *ds, gm_split s, const long *rows, int count, float *x, gm_error *err);
/*
 * Makes later reads normalise with another mean and std (C values each), e.g. a
 * model's own when it was trained on a different dataset of the same shape.
 * gm_ds_get_info reports them from then on.
 */
void gm_ds_set_normalisation(gm_dataset *ds, const float *mean, const float *std);
/* Raw stored values of samples [first, first+count) (uint8 or float32 as stored). */
gm_status gm_ds_read_raw(gm_dataset *ds, gm_split s, long first, long count, void *x, gm_error *err);

/* Writes a permutation of [0, n) into order, a function of (seed, epoch) only. */
void gm_ds_epoch_order(long n, uint64_t seed, int epoch, long *order);

#endif

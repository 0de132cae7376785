/*
 * gm_mfile: model files in HDF5, for single-task models and fused multi-task
 * graphs alike (both are a tree of blocks; a single model is a chain).
 *
 * Layout (readable with h5py and h5dump; datasets/README.md has an example):
 *   /                      attrs: format = "gmorph-model", version = 1, arch,
 *                                 input (int[3] C,H,W), mean, std (float[C]),
 *                                 ntasks, nblocks
 *   /tasks/<k>             attrs: name, classes, metric, head (block index),
 *                                 dataset, val_accuracy, test_accuracy
 *   /blocks/<bbb>          attrs: kind ("conv", "residual", ...), parent
 *                                 (-1: the input), model_id, layer_id, nops
 *     op<ii>               attrs: kind ("conv2d", ...), inputs (int[2]) and the
 *                                 op's hyper-parameters by name (cin, cout, k,
 *                                 stride, pad, bias, c, eps, momentum, in, out, p,
 *                                 factor)
 *                          datasets: weight, bias (PyTorch's shapes and names),
 *                                 running_mean, running_var (BatchNorm)
 *
 * Loading checks the format name and version (a file from an older or newer
 * gmorph gets a message saying which), every op's hyper-parameters, the tree,
 * every edge's shapes and every weight's shape, so a damaged file is an error,
 * never a silently wrong model.
 */
#ifndef GM_MFILE_H
#define GM_MFILE_H

#include <hdf5.h>

#include "gm_net.h"

enum { GM_MF_MAX_TASKS = 16, GM_MF_VERSION = 1, GM_MF_MAX_CHANNELS = 16 };

typedef struct {
    char name[64];       /* the task, as named in its dataset */
    int classes;
    char metric[32];     /* "accuracy" */
    int head;            /* index of the block whose output is the task's logits */
    char dataset[256];   /* dataset file it was trained or evaluated on ("" unknown) */
    double val_accuracy, test_accuracy; /* fractions; NAN when not measured */
} gm_mf_task;

/*
 * A model in host memory. Owns blocks, parent, params and buffers (freed by
 * gm_mfile_free); params and buffers are laid out as gm_net_params and
 * gm_net_buffers of a net built from gm_mfile_desc.
 */
typedef struct {
    char arch[128];      /* how it was built, e.g. "vgg13 32,64,128,128", or "fused" */
    gm_shape input;
    float mean[GM_MF_MAX_CHANNELS], std[GM_MF_MAX_CHANNELS]; /* input normalisation */
    int ntasks;
    gm_mf_task tasks[GM_MF_MAX_TASKS];
    int nblocks;
    gm_block *blocks;
    int *parent;         /* parent[i] in [-1, i) */
    size_t nparams, nbuffers;
    float *params, *buffers;
} gm_mfile;

/*
 * Copies a net's structure and weights into m (m's metadata is zeroed; tasks get
 * one entry per net output with head set and metric "accuracy"; the caller fills
 * names, classes and the rest).
 */
gm_status gm_mfile_from_net(gm_mfile *m, gm_net *net, gm_error *err);
/* Copies m's weights into a net built from gm_mfile_desc(m) (sizes are checked). */
gm_status gm_mfile_to_net(const gm_mfile *m, gm_net *net, gm_error *err);
/* The structure as a net description (borrows m). */
gm_net_desc gm_mfile_desc(const gm_mfile *m);

/* Writes m into an open file or group / reads it from one. */
gm_status gm_mfile_write(hid_t loc, const gm_mfile *m, gm_error *err);
gm_status gm_mfile_read(hid_t loc, gm_mfile *m, gm_error *err);
/* Whole files: atomic save (temporary file, fsync, rename) and load. */
gm_status gm_mfile_save(const char *path, const gm_mfile *m, gm_error *err);
gm_status gm_mfile_load(const char *path, gm_mfile *m, gm_error *err);

/*
 * A model as the bytes of its model file (an in-memory HDF5 image): how a model
 * travels in MPI messages, with every check of gm_mfile_read on arrival.
 * to_bytes: *buf is malloc'd, the caller frees it.
 */
gm_status gm_mfile_to_bytes(const gm_mfile *m, void **buf, size_t *len, gm_error *err);
gm_status gm_mfile_from_bytes(gm_mfile *m, const void *buf, size_t len, gm_error *err);

/* A deep copy of src into dst (dst is overwritten; free it first if it held anything). */
gm_status gm_mfile_copy(gm_mfile *dst, const gm_mfile *src, gm_error *err);
/* Where block b's parameters and buffers start in m->params and m->buffers. */
void gm_mfile_block_offsets(const gm_mfile *m, int b, size_t *par, size_t *buf);
/* Index of a task by name, or -1. */
int gm_mfile_task_index(const gm_mfile *m, const char *name);
void gm_mfile_free(gm_mfile *m);

#endif

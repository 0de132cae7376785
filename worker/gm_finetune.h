/*
 * gm_finetune: what a worker does with a candidate (coordinator/README.md, "How the search works"):
 * fine-tune a fused model by distillation from the original models, check its
 * accuracy on validation data, stop as soon as every task is within the
 * threshold, and time its batch-1 inference.
 *
 * gm_ft_data holds, in memory, everything fine-tuning reads: the distillation
 * inputs (a seeded sample of each task dataset's train split), the original
 * models' logits on them (the teachers, computed once and cached in HDF5), the
 * validation inputs and labels of every task, and the originals' own
 * validation accuracies (the reference for "drop").
 */
#ifndef GM_FINETUNE_H
#define GM_FINETUNE_H

#include <signal.h>

#include "gm_dataset.h"
#include "gm_mfile.h"
#include "gm_net.h"

typedef struct {
    int n;                       /* tasks = original models */
    gm_shape input;
    size_t numel;                /* per sample */
    long nft;                    /* distillation samples */
    float *x_ft;                 /* nft * numel, normalised */
    long ft_first[GM_MF_MAX_TASKS], ft_count[GM_MF_MAX_TASKS]; /* the rows of x_ft from task t's dataset */
    float *teacher[GM_MF_MAX_TASKS]; /* nft * classes[t] */
    int classes[GM_MF_MAX_TASKS];
    /* Validation data per task (tasks on one dataset share inputs, copied). */
    long nval[GM_MF_MAX_TASKS];
    float *x_val[GM_MF_MAX_TASKS];
    int32_t *y_val[GM_MF_MAX_TASKS];
    double orig_val[GM_MF_MAX_TASKS];  /* the originals' validation accuracy */
    char task_name[GM_MF_MAX_TASKS][64];
} gm_ft_data;

enum { GM_FT_VAL_SEED = 1 }; /* the validation rows' draw: the same for every sweep */

typedef struct {
    long samples;        /* distillation samples drawn from each distinct dataset's train split */
    long val_samples;    /* validation samples per task (0: the whole split), the same rows whatever the seed */
    uint64_t seed;       /* draws the distillation samples */
    int threads;
    const char *cache;   /* teacher cache file (HDF5); NULL: no cache */
    const char *const *data; /* per task: its dataset file; NULL entries use the model's recorded one */
} gm_ft_data_opts;

/*
 * Loads the data for n original models (their normalisation is applied to every
 * dataset) and computes or reloads the teachers' logits. A cache whose recorded
 * models, datasets and sizes differ is recomputed, not trusted.
 */
gm_status gm_ft_data_load(gm_ft_data *d, const gm_mfile *const *models, int n, const gm_ft_data_opts *o,
                          gm_error *err);
void gm_ft_data_free(gm_ft_data *d);

/* Evaluation runs in chunks of this many samples: size nets for max(batch, it). */
enum { GM_FT_EVAL_BATCH = 128 };

typedef enum { GM_FT_PASSED, GM_FT_FAILED, GM_FT_ABORTED } gm_ft_status;
const char *gm_ft_status_name(gm_ft_status s);

/*
 * A data-parallel worker group: `size` ranks fine-tune the same candidate from
 * the same weights; each takes its share of every batch, and their gradients
 * are summed before the same Adam step, so the ranks stay identical. sum() is
 * a collective that every rank calls in the same order with the same n
 * (MPI_Allreduce on CPUs, ncclAllReduce on GPUs); it sums buf in place. buf is
 * in the net's backend memory: host floats for the CPU backend, device
 * pointers for a device backend's own sum (gm_group_mpi.h is the CPU one).
 *
 * Rank r takes rows [lo, hi) of each batch of B (an even split, the first
 * B % size ranks one more; a rank may get none and still joins every sum) and
 * scales its loss by its rows / B, so the summed gradient is the full batch's.
 * Validation sets are split alike and the correct counts summed, so every
 * rank sees the same accuracies (abort_check must decide alike on them).
 *
 * Only frozen_bn == 1 (the search's default) matches one rank on the same
 * batches, to float rounding; but a gradient that cancels to exactly 0 alone
 * (L1's head bias on an even batch) can be a rounding residue in the group,
 * which Adam scales up to a step of lr. With frozen_bn == 0 each shard
 * normalises with its own batch statistics (PyTorch DDP without SyncBN) and
 * draws its own dropout; the running statistics are averaged over the ranks
 * after each step, weighted by rows, to keep the ranks equal.
 *
 * A rank that fails still joins the next sum, poisoning it, so every rank
 * returns an error rather than the others waiting forever.
 */
typedef struct {
    int rank, size;
    gm_status (*sum)(void *ctx, float *buf, size_t n, gm_error *err);
    void *ctx;
} gm_ft_group;

/*
 * Feature matching at a merge's seam: block `block` of the fused net should
 * output what block teacher_block of the net `teacher` (the weights' source
 * model, on the same backend, sized for the batch) outputs on the same input.
 */
typedef struct {
    int block;
    gm_net *teacher;
    int teacher_block;
} gm_ft_feature;

typedef struct {
    int max_epochs;      /* fine-tuning budget per candidate */
    /*
     * Rows per epoch, drawn afresh from the distillation pool (d->nft rows) by each
     * epoch's shuffle: a pool larger than an epoch shows a deep merge more distinct
     * inputs for the same steps. 0 (or >= d->nft): every epoch is the whole pool.
     */
    long epoch_rows;
    int check_every;     /* accuracy checked at epochs 0, k, 2k, ... and at the end */
    int batch;
    float lr;            /* Adam, fresh per candidate */
    /*
     * 1: BatchNorm normalises with its running statistics while fine-tuning, as it
     * will at inference, and they stay as the originals left them. Distillation
     * batches mix datasets, and batch statistics of that mixture both perturb the
     * branches a merge did not touch and shift the statistics each task is later
     * evaluated with. 0: batch statistics, updated running averages.
     */
    int frozen_bn;
    /*
     * 0: GMorph's loss, the L1 distance to the teachers' logits, whose gradient
     * is only a sign; 1: the mean squared distance, whose gradient grows with
     * the error (distillation at a high temperature).
     */
    int logit_mse;
    int cosine;          /* 1: lr decays as a half cosine over the budget (stretched if extended); 0: constant */
    double threshold;    /* allowed accuracy drop per task (0.01 = 1 point) */
    /*
     * Early abort (the predictive filter's learning-curve rule lives with the
     * coordinator): called at each check for every task still short of its
     * target with that task's accuracy checks so far; returning 1 aborts.
     * NULL: never abort.
     */
    int (*abort_check)(void *ctx, const double *epoch, const double *acc, int n, int max_epoch, double target);
    void *abort_ctx;
    /*
     * A candidate still short at max_epochs gets up to extra_epochs more, once,
     * when every task short of its target has 3 checks or more and abort_check
     * does not abort it at the longer horizon: a fixed budget would throw away
     * a fine-tune about to pass. 0 (or no abort_check): GMorph's fixed budget.
     */
    int extra_epochs;
    uint64_t seed;
    const gm_ft_group *group; /* NULL (or size 1): this rank alone; else see gm_ft_group */
    /*
     * Feature matching: beside the logits' L1, the mean squared error of each
     * feature's block against its teacher's, weighted by feature_weight over the
     * teacher's mean square on the first batch (so the weight is scale-free).
     * Each distinct teacher net runs forward once per step.
     */
    const gm_ft_feature *features;
    int nfeatures;
    float feature_weight;
    /*
     * GMorph's sub-graph level: NULL trains every block; else only blocks b with
     * train_block[b] != 0 (their gradients are kept, the others' zeroed, so Adam
     * never moves them).
     */
    const char *train_block;
    /*
     * Non-zero (a signal handler's flag): return before the next batch with
     * r->interrupted set and the candidate unfinished. One rank only: ranks of
     * a group would see it at different batches.
     */
    const volatile sig_atomic_t *stop;
} gm_ft_opts;

enum { GM_FT_MAX_CHECKS = 128 };

/* One point of a fine-tune's learning curve: an accuracy check. */
typedef struct {
    int epoch;                       /* epochs trained before it (0: the candidate as built) */
    /*
     * Mean distillation loss over the epoch before it (the logits' L1 summed over
     * tasks; feature matching not included); NAN at epoch 0. In a group, over the
     * rows of rank 0 (the one that reports), an unbiased estimate of the batch's.
     */
    double loss;
    double val[GM_MF_MAX_TASKS];     /* validation accuracy per task */
} gm_ft_check;

typedef struct {
    gm_ft_status status;
    int epochs;                      /* epochs actually trained */
    long steps;                      /* optimiser steps taken (batches of every epoch trained) */
    double val[GM_MF_MAX_TASKS];     /* accuracy at the last check */
    double worst_drop;               /* max over tasks of orig_val - val */
    double first_drop;               /* the worst drop at the first check, before any step (NAN: none) */
    double seconds;
    int interrupted;                 /* stopped by opts.stop: no verdict */
    int nchecks;                     /* the learning curve: every check, in order (the last is r->val) */
    gm_ft_check checks[GM_FT_MAX_CHECKS]; /* a fine-tune of more checks keeps the first GM_FT_MAX_CHECKS */
} gm_ft_result;

/*
 * Fine-tunes net (a fused model with d->n outputs, output of task t at block
 * heads[t]) in place. The loss is the sum over tasks of the distance (opts.logit_mse) between
 * the net's logits and the teacher's.
 */
gm_status gm_finetune(gm_net *net, const int *heads, const gm_ft_data *d, const gm_ft_opts *o, gm_ft_result *r,
                      gm_error *err);

/* Validation accuracy of every task (acc[t]) of a fused net in eval mode. */
gm_status gm_ft_eval(gm_net *net, const int *heads, const gm_ft_data *d, double *acc, gm_error *err);

#endif

/*
 * gm_train: trains one task of a dataset file into a single-task model file,
 * evaluates models on a split, and measures batch-1 latency honestly.
 *
 * Training: mini-batches in a seeded order that depends only on (seed, epoch);
 * a cosine learning-rate schedule from lr to 0 over all steps; after every epoch
 * the validation accuracy decides whether the weights become the new best model
 * (written atomically to opts.out). At the end the best weights are put back in
 * the net, the test split is scored, and opts.out gets the test accuracy too.
 *
 * Resume: opts.checkpoint holds everything a step depends on (weights, BN
 * statistics, optimiser moments and step count, the dropout generator, the
 * position inside the epoch, the history), rewritten atomically after every
 * epoch, every checkpoint_every_s seconds and when *stop becomes non-zero. A
 * resumed run therefore ends with exactly the weights an uninterrupted one
 * would have. Resuming with different options is refused (the message names
 * the option).
 *
 * The library never prints: progress goes to a callback.
 */
#ifndef GM_TRAIN_H
#define GM_TRAIN_H

#include <signal.h>

#include "gm_clock.h"
#include "gm_dataset.h"
#include "gm_net.h"

typedef struct {
    int epoch, epochs;     /* 1-based current epoch */
    long step, steps;      /* within the whole run */
    float loss, acc;       /* running averages over the current epoch */
    double val_acc;        /* after the epoch's validation (epoch_done), else NAN */
    double images_per_s, elapsed_s, eta_s;
    int epoch_done;        /* 1 on the last report of an epoch */
} gm_train_progress;

typedef struct {
    int epochs, batch;
    gm_update optimizer;   /* kind, peak lr, betas, weight decay */
    uint64_t seed;
    long limit;            /* train on the first limit samples only; 0: all */
    const char *arch;      /* recorded in the model file, e.g. "vgg13 32,64,128,128" */
    const char *out;       /* the best model is written here (required) */
    const char *checkpoint;        /* resumable state; NULL: no checkpoints */
    double checkpoint_every_s;     /* also checkpoint inside an epoch; 0: per epoch only */
    int resume;                    /* 1: continue from checkpoint when it exists */
    const volatile sig_atomic_t *stop; /* non-zero: checkpoint and return (may be NULL) */
    double report_every_s;
    void (*progress)(void *ctx, const gm_train_progress *p);
    void *ctx;
} gm_train_opts;

typedef struct {
    int resumed;           /* 1 when the run continued a checkpoint */
    int start_epoch;       /* 1-based epoch it started or resumed in */
    long start_step;       /* global step it started from */
    int interrupted;       /* 1 when *stop ended it early (checkpoint written) */
    int epochs_done;
    int best_epoch;        /* 1-based; 0 when no epoch finished */
    double best_val;       /* NAN without a val split (then the last epoch is kept) */
    double test_acc;       /* NAN without a test split or when interrupted */
    double train_s;        /* training time over every run of this training */
} gm_train_result;

/*
 * Trains output 0 of net on task `task` of ds. net must have one output with as
 * many logits as the task has classes, and ds's input shape.
 */
gm_status gm_train_task(gm_net *net, gm_dataset *ds, int task, const gm_train_opts *o, gm_train_result *r,
                        gm_error *err);

/*
 * Top-1 accuracy of several outputs at once on a split, in eval mode: output
 * outputs[i] is scored against task tasks[i] of ds, into acc[i]. limit > 0
 * scores only the first limit samples.
 */
gm_status gm_eval_tasks(gm_net *net, gm_dataset *ds, gm_split s, int n, const int *outputs, const int *tasks,
                        int batch, long limit, double *acc, gm_error *err);

/* Index of the largest of k logits (the first on ties): a prediction. */
int gm_top1(const float *z, int k);

/*
 * Median time of runs batch-1 eval forwards after warmup ones, in ms, timed by
 * the backend's marks (gm_backend.mark): wall time on the CPU, CUDA events on
 * a GPU, so a device's time is that of the finished work, the input's copy in
 * included. Nets timed in one call share one backend.
 */
gm_status gm_measure_latency(gm_net *net, int warmup, int runs, double *median_ms, gm_error *err);
/*
 * The same for n nets run one after the other on one input each time (the
 * baseline a fused model is compared with): median of the whole sequence.
 */
gm_status gm_measure_latency_seq(gm_net *const *nets, int n, int warmup, int runs, double *median_ms,
                                 gm_error *err);
/*
 * A fused net against its peers measured in the same run: each round times one
 * forward of `a`, then the n nets of `base` one after the other, so both see
 * the same machine noise; medians of each.
 */
gm_status gm_measure_latency_pair(gm_net *a, gm_net *const *base, int n, int warmup, int runs, double *a_ms,
                                  double *base_ms, gm_error *err);

#endif

/*
 * gm_train: supervised training and evaluation of a single-task classifier on an
 * in-memory image set, plus honest batch-1 latency measurement.
 *
 * Mini-batches are drawn from a seeded shuffle every epoch; the learning rate
 * follows a cosine schedule from lr to 0 over all steps. Progress is reported
 * through a callback (the library never prints).
 */
#ifndef GM_TRAIN_H
#define GM_TRAIN_H

#include "gm_clock.h"
#include "gm_idx.h"
#include "gm_net.h"

typedef struct {
    int epoch, epochs;
    long step, steps;     /* within the whole run */
    float loss, acc;      /* running averages over the current epoch */
    double images_per_s, elapsed_s, eta_s;
    int epoch_done;       /* 1 on the last report of an epoch */
} gm_train_progress;

typedef struct {
    int epochs, batch;
    gm_update optimizer;  /* kind, lr, betas, weight decay */
    uint64_t seed;
    float mean, std;      /* input normalisation: (pixel/255 - mean) / std */
    double report_every_s;
    void (*progress)(void *ctx, const gm_train_progress *p);
    void *ctx;
} gm_train_opts;

/* Trains net (one output with set->classes logits) in place. */
gm_status gm_train_classifier(gm_net *net, const gm_imageset *set, const gm_train_opts *o, gm_error *err);

/* Top-1 accuracy of output 0 on a whole set, in eval mode. */
gm_status gm_eval_accuracy(gm_net *net, const gm_imageset *set, int batch, float mean, float std,
                           double *acc, gm_error *err);

/* Median wall time of runs batch-1 eval forwards after warmup ones, in ms. */
gm_status gm_measure_latency(gm_net *net, int warmup, int runs, double *median_ms, gm_error *err);

#endif

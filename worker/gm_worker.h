/*
 * gm_worker: the worker side of the search (worker/README.md). Builds a
 * candidate from its encoding and the weight store, fine-tunes it by
 * distillation (alone, or as one rank of a data-parallel group), times it
 * against the original models run one after the other, and reports.
 *
 * It knows nothing of MPI or of the search policy: gm_wire moves jobs and
 * results between ranks, and the coordinator decides what to try. A worker
 * holds the original models, the distillation data with the teachers' logits
 * (cached in the run folder's teacher.h5, so only the first rank to open
 * computes them) and the originals as batch-1 nets: the latency peer.
 */
#ifndef GM_WORKER_H
#define GM_WORKER_H

#include "gm_fgraph.h"
#include "gm_finetune.h"
#include "gm_search_config.h"

enum { GM_JOB_ENC_MAX = GM_FG_ENC_HEADER + GM_FG_MAX_NODES * GM_FG_ENC_PER_NODE };

/* One candidate to fine-tune. */
typedef struct {
    int id;                      /* candidate id: also seeds its fine-tune and new adapters */
    int enc_len;
    int32_t enc[GM_JOB_ENC_MAX]; /* the candidate's graph (gm_fgraph_encode) */
    int source;                  /* -1: its weights come from the originals; else this elite's id */
    gm_mfile src;                /* source >= 0: that elite's fine-tuned model (owned by the job) */
} gm_job;

/* What a worker reports for a job. */
typedef struct {
    int id;
    gm_ft_result ft;             /* status, epochs, per-task validation accuracy, worst drop, seconds */
    double latency_ms;           /* batch 1, median */
    double base_latency_ms;      /* the originals one after the other, timed alternately with it */
    gm_mfile tuned;              /* passed only: the fine-tuned model (owned by the result) */
} gm_result;

void gm_job_free(gm_job *j);
void gm_result_free(gm_result *r);

typedef struct gm_worker gm_worker;

typedef struct {
    const gm_search_config *config;
    /*
     * The learning-curve abort of the predictive filter (the coordinator's
     * rule, run where the curve is): see gm_ft_opts.abort_check. NULL: never.
     */
    int (*abort_check)(void *ctx, const double *epoch, const double *acc, int n, int max_epoch, double target);
    const gm_ft_group *group;    /* NULL: this rank alone (gm_device_group_open makes one) */
    /*
     * The backend that fine-tunes and times candidates (borrowed: it must
     * outlive the worker), a GPU from gm_device_open; candidates and the
     * originals are then timed at batch 1 on it too. NULL: the CPU, with
     * config->threads threads for fine-tuning and one for batch-1 latency.
     * The teachers' logits are computed on the CPU either way.
     */
    gm_backend *device;
    int time_latency;            /* 0: skip the latency measurement (group members other than the leader) */
    const volatile sig_atomic_t *stop; /* alone only: a set flag interrupts a fine-tune (see gm_ft_opts.stop) */
} gm_worker_opts;

/* Loads the models and data of config (o is copied; config must outlive w). */
gm_status gm_worker_open(gm_worker **w, const gm_worker_opts *o, gm_error *err);
/* Fine-tunes and times job; r is overwritten (gm_result_free it after). */
gm_status gm_worker_run(gm_worker *w, const gm_job *job, gm_result *r, gm_error *err);
/* The distillation data: the originals' validation accuracy and the task names. */
const gm_ft_data *gm_worker_data(const gm_worker *w);
/*
 * The stitch probe (*n samples, normalised, spread over every dataset of the
 * distillation set): made when stitching or guided proposals are on (and not
 * in GMorph mode); NULL otherwise.
 */
const float *gm_worker_probe(const gm_worker *w, long *n);
/* own[s * nmodels + t] = 1 when probe sample s comes from model t's dataset (NULL without a probe). */
const unsigned char *gm_worker_probe_own(const gm_worker *w);
/* The original models (n = config->nmodels). */
const gm_mfile *const *gm_worker_models(const gm_worker *w);
/* The originals one after the other at batch 1: median ms, as every candidate is timed. */
gm_status gm_worker_baseline(gm_worker *w, double *ms, gm_error *err);
void gm_worker_free(gm_worker *w);

#endif

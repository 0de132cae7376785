/*
 * gm_search: the coordinator's search state (coordinator/README.md, "How the search works"): it proposes
 * candidates (policy, mutations, hashes, the predictive filter), records the
 * results workers report, and saves and restores itself as a checkpoint
 * (gm_ckpt). gm_sched decides when to propose and where jobs run.
 *
 * Policies:
 * - "sa" (GMorph, 5.1): a candidate is `merges` random merges applied to the
 *   original graph or, with probability
 *     p = (1 - exp(-(1 - drop) * T0 / T)) * sqrt(|elites| / max_elites),
 *   T = T0 * alpha^it, to a random elite (with its fine-tuned weights); drop
 *   is the worst task's drop of the last fine-tuned candidate. Passed
 *   candidates join the elites (first in, first out).
 * - "random": every candidate is drawn from the original graph.
 * A candidate whose location hash was seen, or whose topology already passed,
 * is skipped without fine-tuning. Each candidate's latency is timed
 * alternately with the originals run one after the other, and its speed-up is
 * the ratio of the two medians (same run, same noise); the result is the
 * passed candidate with the highest speed-up, scored on the test split at the
 * end.
 *
 * In deterministic mode (config run.deterministic) the best is the passed
 * candidate with the fewest FLOPs instead: measured latency depends on timing.
 *
 * Outputs in the run folder: candidates.csv and candidates.jsonl (one row per
 * finished candidate: status passed, failed, aborted, filtered or duplicate),
 * best.h5 (a model file gmorph eval runs), summary.md, teacher.h5 (cached
 * logits), search.h5 (the checkpoint, with search.h5.prev before it).
 *
 * Files: gm_search.c holds the state and the policy (open, propose, record,
 * checkpoint); gm_search_final.c the end (gm_search_finish: the final choice,
 * test scores, best.h5); gm_results writes candidates.* and summary.md; the
 * state both .c files share is gm_search_int.h, which nothing else includes.
 */
#ifndef GM_SEARCH_H
#define GM_SEARCH_H

#include "gm_ckpt.h"
#include "gm_results.h"
#include "gm_search_config.h"
#include "gm_worker.h"

typedef struct {
    int id, iteration;
    int source;              /* -1: the original graph; else the elite's candidate id */
    const char *status;      /* passed, failed, aborted, filtered, duplicate */
    int worker;              /* worker group that ran it (-1: none) */
    int nodes, epochs;
    size_t params;
    double mflops, latency_ms, worst_drop, seconds;
    double drop0;            /* the worst drop before fine-tuning (NAN: not measured) */
    double predicted;        /* the guide's prediction of it (NAN: not guided) */
    double base_latency_ms;  /* the originals one after the other, timed alternately with it */
    double speedup;          /* base_latency_ms / latency_ms */
    const double *val;       /* per task (NULL unless fine-tuned) */
    const char *error;       /* a worker error that failed it, or NULL */
    double best_speedup;     /* so far (NAN: none passed yet) */
    int done, iterations;    /* finished candidates so far; the iteration budget */
    double elapsed_s;        /* since the sweep began, across resumes */
    double budget_s;         /* the time budget (0: none) */
} gm_search_event;

typedef struct gm_search gm_search;

typedef struct {
    const gm_search_config *config;      /* must outlive the search */
    const gm_mfile *const *models;       /* the originals, config->nmodels (borrowed) */
    const double *orig_val;              /* their validation accuracy per task */
    double base_latency_ms;              /* the originals one after the other, for the summary */
    const gm_ckpt *resume;               /* NULL: a fresh sweep; else continue this checkpoint */
    /*
     * What the final re-timing of the best and the elites runs on (borrowed): the
     * device the workers timed candidates on (a GPU in a --device cuda sweep), so
     * the summary's speed-up is the deployment's. NULL: a one-thread CPU backend,
     * as CPU workers time.
     */
    gm_backend *latency_device;
    /*
     * Guided proposals (gm_guide.h; borrowed, must outlive the search): merges
     * drawn toward low predicted cost and high gain. NULL: GMorph's uniform draw.
     */
    const struct gm_guide *guide;
    void (*progress)(void *ctx, const gm_search_event *e); /* hears every finished candidate; may be NULL */
    void *ctx;
} gm_search_opts;

/*
 * A fresh search, or one restored from a checkpoint: its candidates, elites,
 * best, RNG and temperature; candidates that were in flight go back to the
 * queue, and the results files are rewritten from the finished ones.
 */
gm_status gm_search_open(gm_search **S, const gm_search_opts *o, gm_error *err);
/*
 * The next job to fine-tune: a candidate put back in the queue first, else a
 * new proposal; duplicates and filtered candidates are recorded on the way.
 * *got = 0 when the iteration budget is spent and the queue is empty.
 */
gm_status gm_search_propose(gm_search *S, gm_job *job, int *got, gm_error *err);
/* Only a candidate put back in the queue (*got = 0: none); never a new proposal. */
gm_status gm_search_take_queued(gm_search *S, gm_job *job, int *got, gm_error *err);
/* Proposals left in the iteration budget plus queued candidates: 0 when done. */
int gm_search_remaining(const gm_search *S);
/*
 * Records what a worker group reported for job (error: the worker's error
 * message, which fails the candidate, or NULL). Takes r->tuned. A result for
 * a candidate that is no longer pending (reported twice after a re-dispatch)
 * is ignored.
 */
gm_status gm_search_record(gm_search *S, gm_result *r, int worker, const char *error, gm_error *err);
/* Puts a pending candidate back in the queue (its group is lost or timed out). */
void gm_search_requeue(gm_search *S, int id);
/* Marks a pending candidate failed (it timed out twice). */
gm_status gm_search_fail(gm_search *S, int id, const char *why, gm_error *err);
/* Saves the state (pending candidates stay pending) to the run folder's search.h5. */
gm_status gm_search_checkpoint(gm_search *S, gm_error *err);
/* Seconds since the sweep began, across resumes. */
double gm_search_elapsed(const gm_search *S);
/*
 * The final choice and report: times the best and the elites again against
 * the originals (alternately, 3x the runs) and keeps the fastest (in
 * deterministic mode the best stays the fewest-FLOPs one), scores the
 * originals and it on the test split, writes best.h5, summary.md and the
 * checkpoint, fills s.
 */
gm_status gm_search_finish(gm_search *S, int interrupted, gm_search_summary *s, gm_error *err);
void gm_search_free(gm_search *S);

/* The predictive filter's learning-curve rule in the form gm_worker_opts.abort_check takes. */
int gm_search_curve_abort(void *ctx, const double *epoch, const double *acc, int n, int max_epoch, double target);

#endif

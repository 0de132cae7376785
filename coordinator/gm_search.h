/*
 * gm_search: the fusion search in one process (DESIGN.md section 5): the
 * coordinator proposes candidates (policy, mutations, hashes, the predictive
 * filter) and the worker side fine-tunes and times them, in turn.
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
 * Outputs in the run folder: candidates.csv and candidates.jsonl (one row per
 * candidate: status passed, failed, aborted, filtered or duplicate), best.h5
 * (a model file gmorph eval runs), summary.md, teacher.h5 (cached logits).
 */
#ifndef GM_SEARCH_H
#define GM_SEARCH_H

#include <signal.h>

#include "gm_finetune.h"

typedef enum { GM_POLICY_SA, GM_POLICY_RANDOM } gm_policy;

typedef struct {
    int nmodels;
    char models[GM_MF_MAX_TASKS][1024];  /* model files, one task each */
    char data[GM_MF_MAX_TASKS][1024];    /* dataset per model; "" = the one it records */
    char out[1024];                      /* run folder */
    double threshold;                    /* allowed drop per task, e.g. 0.01 */
    gm_policy policy;
    int iterations;
    double time_budget_s;                /* stop proposing after this long; 0: no limit */
    uint64_t seed;
    double t0, alpha;
    int max_elites;
    int merges, relaxed_below;
    long ft_samples, val_samples;
    int ft_epochs, check_every, batch;
    double lr;
    int frozen_bn, cosine; /* fine-tune: "bn": "frozen"|"batch", "schedule": "cosine"|"constant" */
    int filter_dominance, filter_curve;
    int threads;
    int lat_warmup, lat_runs;
} gm_search_config;

/* GMorph's defaults (T0 100, alpha 0.99, 200 iterations, 2 merges, ...). */
void gm_search_defaults(gm_search_config *c);
/*
 * Reads a JSON config over the defaults (documented in coordinator/README.md);
 * every bad or unknown field is reported by its path and why.
 */
gm_status gm_search_config_load(gm_search_config *c, const char *path, gm_error *err);

typedef struct {
    int id, iteration;
    int source;              /* -1: the original graph; else the elite's candidate id */
    const char *status;      /* passed, failed, aborted, filtered, duplicate */
    int nodes, epochs;
    size_t params;
    double mflops, latency_ms, worst_drop, seconds;
    double base_latency_ms;  /* the originals one after the other, timed alternately with it */
    double speedup;          /* base_latency_ms / latency_ms */
    const double *val;       /* per task (NULL unless fine-tuned) */
    double best_speedup;     /* so far */
} gm_search_event;

typedef struct {
    int ntasks;
    char task[GM_MF_MAX_TASKS][64];
    double base_latency_ms;  /* the originals one after the other, at the start */
    double best_latency_ms, best_base_ms, speedup; /* the best, against the originals timed with it */
    int candidates, passed, failed, aborted, filtered, duplicates, best_id;
    long ft_epochs;          /* fine-tune epochs spent in all */
    double orig_val[GM_MF_MAX_TASKS], best_val[GM_MF_MAX_TASKS];
    double orig_test[GM_MF_MAX_TASKS], best_test[GM_MF_MAX_TASKS];
    double wall_s;
    int interrupted;
} gm_search_summary;

/*
 * Runs the search; progress (may be NULL) hears every candidate. *stop (may be
 * NULL) ends it early, after the candidate in hand: what exists so far is
 * still written out.
 */
gm_status gm_search_run(const gm_search_config *c, void (*progress)(void *ctx, const gm_search_event *e),
                        void *ctx, const volatile sig_atomic_t *stop, gm_search_summary *s, gm_error *err);

#endif

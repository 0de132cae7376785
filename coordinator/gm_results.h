/*
 * gm_results: the files a sweep leaves for people in its run folder:
 * candidates.csv and candidates.jsonl, a row per finished candidate written as
 * it finishes (flushed, so a killed sweep keeps what finished), and summary.md
 * at the end. It knows nothing of the search's state: it writes the rows and
 * the summary it is given. Nothing reads these files back; gmorph report reads
 * the checkpoint (gm_ckpt).
 */
#ifndef GM_RESULTS_H
#define GM_RESULTS_H

#include "gm_ckpt.h"
#include "gm_search_config.h"

/* What the end of a sweep reports (gm_search_finish fills it). */
typedef struct {
    int ntasks;
    char task[GM_MF_MAX_TASKS][64];
    double base_latency_ms;  /* the originals one after the other, at the start */
    double best_latency_ms, best_base_ms, speedup; /* the final best, timed again at the end alternately with
                                                      the originals (3x the runs) */
    double found_speedup;    /* its speed-up when the search measured it (biased up: the max of noisy ratios) */
    int candidates, passed, failed, aborted, filtered, duplicates, best_id;
    long ft_epochs;          /* fine-tune epochs spent in all */
    double orig_val[GM_MF_MAX_TASKS], best_val[GM_MF_MAX_TASKS];
    double orig_test[GM_MF_MAX_TASKS], best_test[GM_MF_MAX_TASKS];
    double wall_s;
    int interrupted;
    int npareto;             /* models of the Pareto set written to pareto/ */
} gm_search_summary;

/* One model of the Pareto set as the end wrote it (pareto/FILE). */
typedef struct {
    char file[64];           /* relative to OUT/pareto */
    int id;
    double speedup;          /* timed again at the end, alternately with the originals */
    double mflops, worst_drop;
    double test[GM_MF_MAX_TASKS];
} gm_pareto_row;

typedef struct gm_results gm_results;

/*
 * Creates the run folder `out` (and its parents) if needed, and
 * candidates.csv and candidates.jsonl there with the CSV's header; task[t]
 * names task t's validation-accuracy column. Existing files are replaced.
 */
gm_status gm_results_open(gm_results **R, const char *out, const char (*task)[64], int ntasks, gm_error *err);
/* One finished candidate's row in both files. */
void gm_results_row(gm_results *R, const gm_ckpt_cand *r);
/* NULL-safe. */
void gm_results_close(gm_results *R);

/* out/summary.md: the settings, latency before and after, counts, accuracy per task before and after. */
gm_status gm_results_summary(const char *out, const gm_search_config *c, const gm_search_summary *s, gm_error *err);
/* OUT/pareto/pareto.md: the Pareto set's table, fastest first (rows in that order). */
gm_status gm_results_pareto(const char *out, const gm_search_summary *s, const gm_pareto_row *rows, int n,
                            gm_error *err);

#endif

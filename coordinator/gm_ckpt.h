/*
 * gm_ckpt: the search checkpoint (coordinator/README.md, "Checkpoints"), one HDF5 file that
 * holds everything a killed or pre-empted sweep needs to resume: the config,
 * the search state with its RNG, every candidate proposed so far with its
 * status and metrics, the elites' fine-tuned weights and the best model.
 *
 * Layout (format "gmorph-search", version 2; readable with h5py and h5dump):
 *   header block      the file's first 512 bytes, an HDF5 user block that
 *                     h5py and h5dump skip: three lines of text, NUL-padded,
 *                     "gmorph-search 2", "bytes N" (the file's size) and
 *                     "fnv1a64 H" (16 hex digits: the FNV-1a 64 hash of bytes
 *                     512..N-1). Loading checks it before HDF5 reads anything:
 *                     a truncated or damaged file is an error, never a crash
 *                     in HDF5's parser nor a silently wrong weight.
 *   /                 attrs: format, version, config (the JSON text, at most
 *                     60000 bytes), tasks (comma-separated names), iteration,
 *                     next_id, temperature, last_drop, elapsed_s, rng (4 x
 *                     uint64 as int64), best_id, elite_ids (oldest first; may
 *                     be empty); since version 2 also what a report needs
 *                     (gm_ckpt_summary): orig_val (float64[tasks]),
 *                     base_latency_ms, ended (int 0/1), final_latency_ms,
 *                     final_base_latency_ms, final_speedup, orig_test and
 *                     best_test (float64[tasks]); NaN where unknown
 *   /candidates/      one dataset per column, one row per candidate, id order:
 *                     id, iteration, source, status (int; attr "names" lists
 *                     them, comma-separated, in value order), worker, nodes,
 *                     epochs (int32); location, topology (uint64); params
 *                     (int64); mflops, latency_ms, base_latency_ms, speedup,
 *                     worst_drop, seconds, finished_s, drop0, predicted
                     (float64; the last three NaN when a file predates
                     them); val (rows x tasks,
 *                     float64); enc_offset (int64, rows + 1) and enc (int32):
 *                     candidate i's graph encoding (gm_fgraph_encode) is
 *                     enc[enc_offset[i] .. enc_offset[i+1]); curve_offset
 *                     (int64, rows + 1) and curve (float64, points x
 *                     (2 + tasks): epoch, loss, accuracy per task): candidate
 *                     i's learning curve is rows curve_offset[i] ..
 *                     curve_offset[i+1] (both absent in older files: no curves)
 *   /elites/<id>/     each elite's fine-tuned model (gm_mfile_write layout)
 *   /pareto/<id>/     each model of the Pareto set, named by the root attribute
 *                     pareto_ids (both absent in older files: an empty set)
 *   /best/            the best model so far (absent while best_id is -1)
 *
 * Saving is atomic: the new file is written to PATH.tmp and fsynced; an
 * existing PATH becomes PATH.prev; then PATH.tmp is renamed to PATH. A crash
 * at any moment leaves PATH or PATH.prev whole.
 *
 * Version 1 files (without the summary attributes) still load: their
 * summary is unknown (NaN, ended 0) and c->version says 1. A file always
 * saves as the current version.
 *
 * Save and load check the same rules, so every file written loads back: ids
 * are row numbers, next_id >= ncand, statuses in range, source -1 or a row,
 * worker >= -1, every elite id a distinct passed row, best_id -1 or a passed
 * row, every Pareto id a distinct passed row, task names 1..63 characters
 * without commas.
 */
#ifndef GM_CKPT_H
#define GM_CKPT_H

#include <stdint.h>

#include "gm_error.h"
#include "gm_mfile.h"

enum { GM_CKPT_VERSION = 2 }; /* what gm_ckpt_save writes; gm_ckpt_load reads 1 and 2 */

typedef enum {
    GM_CAND_PENDING,   /* dispatched, no result yet: goes back to the queue on resume */
    GM_CAND_PASSED,
    GM_CAND_FAILED,
    GM_CAND_ABORTED,
    GM_CAND_FILTERED,
    GM_CAND_DUPLICATE,
    GM_CAND_NSTATUS
} gm_cand_status;

/* "pending", "passed", ...; "?" when out of range. */
const char *gm_cand_status_name(gm_cand_status s);

/* One candidate row. */
typedef struct {
    int id, iteration;
    int source;               /* -1: the original graph; else the elite's candidate id */
    gm_cand_status status;
    int worker;               /* worker group that ran it; -1: none (filtered, duplicate, pending) */
    int nodes, epochs;
    uint64_t location, topology;
    long long params;
    double mflops, latency_ms, base_latency_ms, speedup, worst_drop, seconds;
    double finished_s;        /* the sweep's elapsed time (across resumes) when it was recorded */
    double drop0;             /* the worst drop before any fine-tuning step (NAN: not measured) */
    double predicted;         /* the guide's predicted cost of its new merges (NAN: GMorph's uniform draw) */
    double val[GM_MF_MAX_TASKS]; /* NAN where not fine-tuned */
    int enc_len;
    int32_t *enc;             /* owned by the row (malloc) */
    /*
     * Its fine-tune's learning curve (gm_ft_check), ncurve points of
     * GM_CKPT_CURVE_COLS(ntasks) values each: epoch, loss (NAN at epoch 0),
     * the validation accuracy of every task. Owned (malloc); NULL when ncurve is 0.
     */
    int ncurve;
    double *curve;
} gm_ckpt_cand;

#define GM_CKPT_CURVE_COLS(ntasks) (2 + (ntasks))
enum { GM_CKPT_MAX_CURVE = 1024 }; /* points per candidate that a file may hold */

/*
 * What the sweep measured beyond the candidates, for its report (version 2):
 * the originals' accuracies and the end's re-timing of the best. NAN where
 * unknown (a version-1 file; before the end, everything after `ended`).
 */
typedef struct {
    double orig_val[GM_MF_MAX_TASKS];  /* the originals' validation accuracy, per task */
    double base_latency_ms;            /* the originals one after the other, timed when the sweep began */
    int ended;                         /* 1: the sweep ended, chose best_id, and filled what follows */
    double final_latency_ms, final_base_latency_ms, final_speedup; /* the best timed again at the end,
                                                                      alternately with the originals */
    double orig_test[GM_MF_MAX_TASKS]; /* the originals' test accuracy, per task */
    double best_test[GM_MF_MAX_TASKS]; /* the best's (NAN when none passed) */
} gm_ckpt_summary;

/* A summary with everything unknown (what a version-1 file holds). */
void gm_ckpt_summary_unknown(gm_ckpt_summary *s);

typedef struct {
    int version;              /* gm_ckpt_load: the file's version (1 or 2); saving ignores it */
    char *config;             /* JSON text, owned (malloc); NULL saves as "" */
    int ntasks;
    char tasks[GM_MF_MAX_TASKS][64];
    /* search state */
    int iteration;            /* next iteration to propose */
    int next_id;              /* next candidate id */
    double temperature, last_drop, elapsed_s;
    uint64_t rng[4];
    /* candidates, id order; cand[i].id == i */
    int ncand;
    gm_ckpt_cand *cand;       /* owned */
    /* elites, oldest first */
    int nelites;
    int *elite_id;            /* owned, nelites */
    gm_mfile *elite_w;        /* owned, nelites */
    /*
     * The Pareto set so far: passed candidates that no other passed one beats
     * on both speed-up (fewer MFLOPs in deterministic mode) and worst drop.
     */
    int npareto;
    int *pareto_id;           /* owned, npareto */
    gm_mfile *pareto_w;       /* owned, npareto */
    int best_id;              /* -1: none yet */
    gm_mfile best;            /* owned; empty while best_id is -1 */
    gm_ckpt_summary summary;  /* per task for the first ntasks */
} gm_ckpt;

/* Writes c to path atomically (see above); c breaking a rule is GM_EINVAL and writes nothing. */
gm_status gm_ckpt_save(const char *path, const gm_ckpt *c, gm_error *err);
/*
 * Reads a checkpoint into c (zeroed first; gm_ckpt_free releases it). A file
 * that is not a gmorph search checkpoint, has a version this build does not
 * read (a newer one is named as such), or whose header block and "version"
 * attribute disagree, is truncated or damaged (header block), whose columns
 * disagree in length, or that breaks a rule above is an error naming the path
 * and what is wrong; c is then left empty (nothing to free, best_id -1).
 */
gm_status gm_ckpt_load(const char *path, gm_ckpt *c, gm_error *err);
/* Frees what c owns and leaves it empty (best_id -1); freeing twice is a no-op. */
void gm_ckpt_free(gm_ckpt *c);

#endif

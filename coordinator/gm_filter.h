/*
 * gm_filter: GMorph's predictive filter (coordinator/README.md, "How the search works"), done right.
 *
 * (R) Dominance: a candidate is described by parameter-count features: the total,
 * each task's path (root to head), and each sharing pattern (the parameters of
 * the nodes shared by exactly a given set of tasks). Fewer parameters = more
 * aggressive. A candidate at least as aggressive as a known failure on every
 * feature is predicted to fail and skipped.
 *
 * (P) Learning curve: a fine-tune's accuracy checks so far are fitted by a
 * geometric curve acc(e) = a - b * r^e (0 < r < 1); if even the fitted limit a
 * (or the value at the last allowed epoch) stays below the target, the
 * fine-tune is aborted. Unlike GMorph's, the fit uses every observation so far,
 * refitted at each check.
 */
#ifndef GM_FILTER_H
#define GM_FILTER_H

#include <stddef.h>
#include <stdint.h>

#include "gm_fgraph.h"

/*
 * Room for the total, one path per task and the sharing patterns: 63 subsets at
 * 6 tasks, but the pairs outnumber that from 12 tasks on (120 at 16), so the
 * bound is sized by the pairs.
 */
enum { GM_FILTER_MAX_FEATURES = 1 + GM_FG_MAX_MODELS + GM_FG_MAX_MODELS * (GM_FG_MAX_MODELS - 1) / 2 };

enum { GM_FILTER_MAX_EDGES = 64 };

typedef struct {
    int n;                                   /* number of features used */
    double v[GM_FILTER_MAX_FEATURES];        /* parameter counts */
    /*
     * The graph's merges, as edges "block (model, layer) reads map (model,
     * layer) or the input, through an adapter or not" that the originals do not
     * have; sorted. -1: more than GM_FILTER_MAX_EDGES (containment unknown).
     */
    int nedges;
    uint32_t edge[GM_FILTER_MAX_EDGES];
} gm_features;

/*
 * Features of g: [0] total, [1..ntasks] per-task path, then one per sharing
 * pattern (a bitmask of tasks, for every non-empty subset when ntasks <= 6,
 * else the pairs only), in a fixed order that depends only on ntasks.
 * ntasks <= 6: for mask = 1 .. 2^ntasks - 1 in increasing order, the parameters
 * of the nodes whose pattern (the set of tasks whose path contains them) is
 * exactly mask. ntasks > 6: for pairs (0,1), (0,2), .., (0,T-1), (1,2), ..,
 * the parameters of the nodes shared by at least that pair. Unused entries of
 * f->v are 0, so equal graphs give byte-equal features.
 */
void gm_filter_features(const gm_fgraph *g, gm_features *f);

/*
 * 1 when c is at least as aggressive as failure on every feature (c <= f
 * everywhere, equality included); 0 when the feature counts differ (graphs with
 * different task counts are not comparable) or a value is NaN.
 */
int gm_filter_dominated(const gm_features *c, const gm_features *failure);

/*
 * 1 when c makes every merge failure made (its edges include failure's; 1 too
 * when either edge list overflowed).
 */
int gm_filter_contains(const gm_features *c, const gm_features *failure);

/*
 * A set of known failures (owned; grows as needed). structural = 0 (GMorph's
 * rule): a failure dominates every candidate at least as aggressive on every
 * feature. structural = 1: only those that also make every merge the failure
 * made. A failed merge says that this block cannot read that map after a
 * stitch; it says little about merges elsewhere that happen to remove as many
 * parameters, and under GMorph's rule a few failures come to skip most
 * proposals.
 */
typedef struct {
    int n, cap;
    gm_features *f;
    int structural;
} gm_failures;

/* An empty set with GMorph's rule (structural 0). */
void gm_failures_init(gm_failures *s);
void gm_failures_free(gm_failures *s);
/* Records a failure; returns -1 when out of memory. */
int gm_failures_add(gm_failures *s, const gm_features *f);
/* Index of a failure that dominates c, or -1. */
int gm_failures_match(const gm_failures *s, const gm_features *c);

/*
 * Fits acc(e) = a - b r^e to the points (epoch[i], acc[i]) by least squares
 * (r searched on a grid in (0, 1), a and b solved in closed form for each r).
 * Returns 0 with the fit in *c. Needs at least 3 points, all finite; returns
 * -1 otherwise (no prediction), and -1 when no r gives a finite fit. All
 * accuracies equal: b = 0, a = that value, rmse = 0. Points may come in any
 * order. Allocates nothing.
 */
typedef struct {
    double a, b, r;   /* the curve */
    double rmse;      /* fit error */
} gm_curve;

int gm_curve_fit(const double *epoch, const double *acc, int n, gm_curve *c);
double gm_curve_at(const gm_curve *c, double epoch);

/*
 * The abort decision for one task: 1 when the fitted curve at max_epoch (plus a
 * margin of tolerance, e.g. 2 * rmse) is still below target. Fewer than 3 points:
 * never abort. Never aborts either when the latest observation (largest epoch)
 * already reaches target, or when the fit fails (non-finite input) or target,
 * tolerance or max_epoch is NaN. max_epoch = INFINITY asks about the limit a.
 */
int gm_curve_should_abort(const double *epoch, const double *acc, int n, double max_epoch, double target,
                          double tolerance);

#endif

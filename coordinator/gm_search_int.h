/*
 * gm_search_int.h: the search's state, shared by the two halves of gm_search
 * and by nothing else: gm_search.c (the state, the policy, recording results,
 * the checkpoint) and gm_search_final.c (the end: the final choice, test
 * scores, best.h5 and summary.md).
 */
#ifndef GM_SEARCH_INT_H
#define GM_SEARCH_INT_H

#include "gm_filter.h"
#include "gm_results.h"
#include "gm_rng.h"
#include "gm_search.h"
#include "gm_trunk.h"

typedef struct {
    int id;
    gm_fgraph *g;         /* nodes' weight sources point at this elite itself */
    gm_mfile w;           /* fine-tuned weights, block b = node b */
} elite;

/* A passed candidate's fine-tuned model, kept for the Pareto set. */
typedef struct {
    int id;
    gm_mfile w;
} kept;

struct gm_search {
    gm_search_opts o;
    const gm_search_config *c;
    gm_fgraph *orig, *cand;
    gm_rng rng;
    int iteration;               /* next iteration to propose */
    gm_trunk trunks[GM_TRUNK_MAX]; /* iterations 0 .. ntrunks - 1 propose these (mutation.trunks) */
    int ntrunks;
    double T, last_drop;
    double elapsed0, t_open;     /* elapsed before this process, and when it opened */
    /* every candidate, id order (rows[i].id == i); the table the checkpoint saves */
    gm_ckpt_cand *rows;
    int nrows, cap_rows;
    int *queue;                  /* pending ids to dispatch again, oldest first */
    int nqueue;
    gm_failures failures;
    elite *elites;               /* ring of max_elites, oldest at index `oldest` */
    int nelites, oldest;
    kept *pareto;                /* the Pareto set (gm_ckpt.h), in the order its members passed */
    int npareto, cap_pareto;
    int best_id;
    double best_key;             /* speed-up, or -MFLOPs in deterministic mode: higher is better */
    gm_mfile best;
    int done;                    /* finished rows */
    gm_results *results;         /* candidates.csv and .jsonl */
    struct gm_tb *tb;            /* the TensorBoard event file (gm_tb.h) */
    gm_ckpt_summary summary;     /* what the checkpoint keeps for the report; the end fills the rest */
    /* graphs earlier sweeps trained (warm_start): locations, and topologies of those that passed */
    uint64_t *warm_loc, *warm_top;
    int nwarm_loc, nwarm_top;
};

/*
 * Warm start (gm_search_warm.c): reads the config's warm_start checkpoints,
 * refusing one over other models or other validation data (by name), and
 * remembers every graph they trained, so none is trained again; their failures
 * feed the dominance filter when this sweep's threshold is no looser. With
 * adopt (a fresh sweep, not a resumed one, which has them already), their
 * passed models held with weights whose every task fits this threshold become
 * this sweep's first rows (iteration -1): elites, best and Pareto set, fastest
 * first, up to max_elites.
 */
gm_status gm_search_warm(gm_search *S, int adopt, gm_error *err);

/* (speed a, drop a) beats (speed b, drop b): no slower, no further down, better in one (the Pareto rule). */
static inline int gm_search_beats(double sa, double da, double sb, double db)
{
    return sa >= sb && da <= db && (sa > sb || da < db);
}
/*
 * A finished passed row from an earlier sweep, recorded as a result would be
 * (best, Pareto set, an elite under SA). The elite takes w's weights; the
 * caller frees w after either way (gm_mfile_free of a taken model is a no-op).
 */
gm_status gm_search_adopt(gm_search *S, const gm_ckpt_cand *src, gm_mfile *w, gm_error *err);

#endif

/*
 * gm_guide: guided proposals. GMorph draws each merge uniformly; most of them
 * join maps a stitch cannot reconcile, or save little. The guide predicts both
 * sides of a merge before anything is fine-tuned:
 *
 * - cost: what the merge does to its task before any fine-tuning. The
 *   least-squares map (gm_stitch.h) from what the merged block would read to
 *   what it was trained on is fitted on a probe batch through the original
 *   models and folded into the block; the block's model from there on runs on
 *   the new map, and the cost is the share of probe samples whose top class
 *   changes (plus a hundredth of the map's residual, to order merges that
 *   change none). For every block and every map of the same shape in any
 *   original model (its input included), one cost: a table the coordinator
 *   keeps. The probe's activations are kept in memory (512 MiB at most: fewer
 *   samples, evenly strided, for bigger models). A node of a fused graph stands for the
 *   original block it came from (elites are fine-tuned to stay near it), so
 *   the table prices merges in any graph; a merge the table cannot price (an
 *   adapter's output, shapes that differ) gets the table's median.
 * - gain: the forward FLOPs the merge removes from the graph.
 *
 * A merge is then drawn with probability
 *     explore / |merges| + (1 - explore) * w / sum(w),   w = gain * exp(-cost / cost_scale),
 * so a uniform share keeps exploring and the rest goes to cheap, rewarding merges.
 * The guide changes which candidates are proposed, never how one is built.
 */
#ifndef GM_GUIDE_H
#define GM_GUIDE_H

#include "gm_fgraph.h"
#include "gm_mutate.h"
#include "gm_rng.h"

typedef struct gm_guide gm_guide;

typedef struct {
    double explore;     /* uniform share of every draw, in [0, 1] */
    double cost_scale;  /* cost (a share of changed predictions) that divides a merge's weight by e */
    int project_shortcuts; /* price residual blocks with their shortcut projected (gm_fgraph_project_seams) */
} gm_guide_opts;

/*
 * Measures the cost table: the n original models run over the probe (host,
 * nprobe x numel(input), normalised) on backend be, in chunks. own (NULL: all
 * of them) marks the probe samples of each model's own dataset,
 * own[s * n + m]: a model's changed predictions are counted there only (on
 * another dataset's images its predictions mean nothing). o is copied.
 */
gm_status gm_guide_create(gm_guide **out, const gm_mfile *const *models, int n, const float *probe,
                          const unsigned char *own, long nprobe, gm_backend *be, const gm_guide_opts *o,
                          gm_error *err);
void gm_guide_free(gm_guide *gd);

/* Number of (map, block) pairs priced; the median cost over them; the probe samples it used. */
int gm_guide_npairs(const gm_guide *gd);
long gm_guide_nsamples(const gm_guide *gd);
double gm_guide_median(const gm_guide *gd);

/*
 * The predicted cost of merge m in g: node m.b's block reading, through the
 * stitch, what node parent(m.a) outputs (the input for -1).
 */
double gm_guide_cost(const gm_guide *gd, const gm_fgraph *g, gm_merge m);

/*
 * As gm_mutate_random: n merges applied to g one after the other, each drawn
 * from the merges of the graph as it then is (relaxed ones too while fewer
 * than relaxed_below strict ones exist), with the guide's probabilities.
 * *predicted (may be NULL): the sum of the drawn merges' costs, a rough
 * prediction of the candidate's drop before fine-tuning.
 */
gm_status gm_guide_mutate(const gm_guide *gd, gm_fgraph *g, gm_rng *rng, int n, int relaxed_below, double *predicted,
                          gm_error *err);

#endif

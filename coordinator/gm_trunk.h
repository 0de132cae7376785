/*
 * gm_trunk: deep candidates proposed on purpose.
 *
 * GMorph's random merges, and the guide's (gm_guide.h), share a few blocks at
 * a time: a merge that lets every task read one model's first ten blocks
 * starts tens of points down, so the guide's weight for it is negligible and
 * a uniform draw almost never builds it. Yet on models of one architecture
 * most of the speed-up lies there (three VGG-13s sharing all their
 * convolutions run 3x faster than the three alone), and a trunk fine-tuned
 * long enough recovers most of its drop (results/fusion.md, section 8).
 *
 * A trunk candidate: every task reads model `model`'s first `depth` blocks
 * (block `depth` of every other model reads that model's block depth - 1, one
 * strict merge per other model). A model without a block `depth` reading a
 * map of that shape keeps its own path (another architecture); at least one
 * must join. The plan spreads k trunks evenly in log FLOPs
 * ratio between the shallowest and the deepest possible trunk, and at each
 * depth takes the model whose trunk saves the most FLOPs (the most models
 * join it) and, among those, the one the guide prices cheapest (the worst of
 * its seams' predicted costs; without a guide, the first). A depth that saves
 * under 1 % more FLOPs than a shallower one is left out: sharing a
 * classifier's small layers costs accuracy and buys nothing. The search proposes them first,
 * shallowest first, before any random merge; the fine-tune's learning-curve
 * rule and extra epochs decide how long each is trained.
 */
#ifndef GM_TRUNK_H
#define GM_TRUNK_H

#include "gm_fgraph.h"
#include "gm_guide.h"

enum { GM_TRUNK_MAX = 16 };

typedef struct {
    int model, depth;
    double flops_ratio;  /* the original graph's FLOPs over the trunk candidate's */
    double cost;         /* the guide's predicted cost (the worst seam's); NAN without a guide */
} gm_trunk;

/*
 * Up to k (1 to GM_TRUNK_MAX) trunks of the original graph g, shallowest
 * first, into out, and how many into *n (0 when no trunk of any depth is
 * possible, e.g. models whose first blocks differ in shape). gd may be NULL.
 */
gm_status gm_trunk_plan(const gm_fgraph *g, const gm_guide *gd, int k, gm_trunk *out, int *n, gm_error *err);

/* Applies trunk t to the original graph g in place (the merges it stands for); GM_ESHAPE: no model joins it. */
gm_status gm_trunk_apply(gm_fgraph *g, gm_trunk t, gm_error *err);

#endif

/*
 * gm_mutate: GMorph's graph mutations (coordinator/README.md, "How the search works").
 *
 * A merge picks two nodes a and b whose inputs have the same shape and
 * re-parents b so that it reads a's input (b.parent = a.parent); the nodes that
 * only b used die and are removed. Across models this shares a prefix; inside
 * one model it skips layers. A move whose new parent lies in b's own subtree
 * (it would create a cycle: re-parenting b above a branch point it depends on)
 * is refused, as is a no-op (same parent already).
 *
 * A relaxed merge allows different input shapes: an adapter node is put
 * between a's input and b: a 1x1 convolution (+BN) when channels differ, and
 * for height/width an average pool (integer factor down) or a nearest
 * upsample (integer factor up). Pairs whose sizes are not integer multiples
 * are not candidates.
 */
#ifndef GM_MUTATE_H
#define GM_MUTATE_H

#include "gm_fgraph.h"
#include "gm_rng.h"

typedef struct {
    int a, b;      /* b will read a's input */
    int relaxed;   /* 1: shapes differ, an adapter is needed */
} gm_merge;

/*
 * Every valid merge of g (strict ones first, then relaxed ones when relaxed is
 * non-zero), at most cap; returns how many there are in total.
 */
int gm_mutate_list(const gm_fgraph *g, int relaxed, gm_merge *out, int cap);

/* Applies one merge (and removes dead nodes, renumbering the rest). */
gm_status gm_mutate_apply(gm_fgraph *g, gm_merge m, gm_error *err);

/*
 * n random merges in a row, each drawn uniformly from the strict merges of the
 * current graph, or from strict plus relaxed ones when fewer than
 * relaxed_below strict merges exist (0: never relaxed). Returns GM_EINVAL when
 * a step finds no merge at all (the message says at which step).
 */
gm_status gm_mutate_random(gm_fgraph *g, gm_rng *rng, int n, int relaxed_below, gm_error *err);

#endif

/*
 * gm_fgraph: the fused multi-task graph the search moves (common/README.md, "The model IR").
 *
 * A tree of nodes rooted at the input; every leaf is a task head. Each node is a
 * block (a copy of an original model's block, or an adapter the search inserted)
 * plus where it came from and where its weights come from. The original state,
 * built from N single-task model files, is N chains hanging from the root.
 *
 * No weights live here: a node names its weight source (the original model's
 * block, or a node of an elite fine-tuned earlier), and gm_fgraph_to_mfile
 * assembles a runnable model from a weight store. So the coordinator moves and
 * hashes graphs without ever holding tensors, and the encoding (a few integers
 * per node) is what travels in messages and checkpoints.
 *
 * Invariants (gm_fgraph_check verifies them all): nodes are in topological order
 * (parent < index); every task's head is a leaf, reachable once; every node has
 * a head below it (no orphans); shapes agree along every edge.
 */
#ifndef GM_FGRAPH_H
#define GM_FGRAPH_H

#include <stdint.h>

#include "gm_mfile.h"

enum { GM_FG_MAX_NODES = 512, GM_FG_MAX_MODELS = GM_MF_MAX_TASKS };

/* Where a node's weights come from. */
typedef struct {
    int elite;   /* -1: the original model's block (model, layer); >= 0: an elite's id */
    int node;    /* with elite >= 0: the node of that elite's graph */
} gm_wref;

typedef struct {
    gm_block block;  /* ops; block.model_id/layer_id repeat the origin */
    int model;       /* origin: which original model (-1: an adapter the search made) */
    int layer;       /* origin: which block of that model (-1 for an adapter) */
    int parent;      /* -1: the input; else a node index < this one */
    int task;        /* >= 0: this node is that task's head; -1 otherwise */
    gm_wref w;       /* weight source; an adapter with elite -1 starts freshly initialised */
    int proj;        /* 1: the block's identity shortcut became a 1x1 convolution (gm_fgraph_project_seams) */
} gm_fnode;

typedef struct {
    gm_shape input;
    int ntasks;          /* = number of original models (one task each) */
    int nnodes;
    gm_fnode nodes[GM_FG_MAX_NODES];
} gm_fgraph;

/*
 * The original state from N single-task models (all must read the same input
 * shape and normalisation; the message names the first that does not). Model i
 * becomes task i. The graph is large: allocate it (malloc), do not put it on the stack.
 */
gm_status gm_fgraph_from_models(gm_fgraph *g, const gm_mfile *const *models, int n, gm_error *err);

/* Checks every invariant; the message names the node and what is wrong. */
gm_status gm_fgraph_check(const gm_fgraph *g, gm_error *err);

/*
 * Points every node's weight source at the same node of elite elite_id, whose
 * graph g is (its fine-tuned model file's block b is node b): mutating the
 * result then starts from the elite's weights, adapters included.
 */
void gm_fgraph_use_elite_weights(gm_fgraph *g, int elite_id);

/*
 * The adapter a relaxed merge puts between a map of shape from and a block
 * that reads shape to: a custom block (model_id, layer_id -1) of an average
 * pool by f (from is f times larger, integer f), a 1x1 convolution without
 * bias + BatchNorm (channels differ), then a nearest upsample by f (from is f
 * times smaller, f <= 16). Height and width must scale by the same factor;
 * otherwise, or when the shapes are equal, there is none (adaptable 0,
 * adapter GM_ESHAPE). The output shape of the adapter is to.
 */
int gm_fgraph_adaptable(gm_shape from, gm_shape to);
gm_status gm_fgraph_adapter(gm_shape from, gm_shape to, gm_block *out, gm_error *err);

/*
 * Projects the identity shortcut (gm_block_project_shortcut) of every residual
 * node at a seam: one whose input is no longer the output of the block before
 * it in its own model (a merge re-parented it onto another model's map, a
 * skipped layer's or an adapter's). Its weights then start as identity there
 * (gm_fgraph_to_mfile), and the stitch fits the shortcut like the block's
 * first convolution. Returns how many nodes it projected; a node projected
 * once stays so.
 */
int gm_fgraph_project_seams(gm_fgraph *g);

/* Input shape of node i (its parent's output, or the graph input). */
gm_shape gm_fgraph_in_shape(const gm_fgraph *g, int i);
gm_shape gm_fgraph_out_shape(const gm_fgraph *g, int i);

/* Parameter count and forward FLOPs per sample of the whole graph (each node once). */
size_t gm_fgraph_nparams(const gm_fgraph *g);
uint64_t gm_fgraph_flops(const gm_fgraph *g);
/* 1 when node i is on task t's path from the root to its head. */
int gm_fgraph_on_path(const gm_fgraph *g, int i, int t);

/*
 * Hashes (64 bits each), independent of node order:
 * - location: exact wiring and which weights (origins, weight sources, adapters);
 * - topology: structure only (block kinds and shapes, the tree, which task each
 *   head serves), so two graphs that differ only in where weights come from match.
 */
uint64_t gm_fgraph_location_hash(const gm_fgraph *g);
uint64_t gm_fgraph_topology_hash(const gm_fgraph *g);

/*
 * Compact encoding for messages and checkpoints: int32 values, GM_FG_ENC_PER_NODE
 * per node after a small header. Decoding rebuilds every node's block from the
 * originals (projected where the node says so) or, for adapters, from the
 * recorded adapter shape, and checks the
 * result with gm_fgraph_check. Returns the number of int32 values written
 * (cap too small: -1).
 */
enum { GM_FG_ENC_PER_NODE = 8, GM_FG_ENC_HEADER = 5 };
int gm_fgraph_encode(const gm_fgraph *g, int32_t *buf, int cap);
gm_status gm_fgraph_decode(gm_fgraph *g, const int32_t *buf, int n, const gm_mfile *const *models, int nmodels,
                           gm_error *err);

/*
 * A weight store: the original models and the elites' fine-tuned fused models
 * (as model files whose block b is node b of the elite's graph).
 */
typedef struct {
    int nmodels;
    const gm_mfile *const *models;
    int nelites;
    const int *elite_ids;        /* elite_ids[k] is the id of elites[k] */
    const gm_mfile *const *elites;
} gm_wstore;

/*
 * A runnable fused model: structure from g, weights copied from the store (an
 * adapter without weights gets seed-initialised ones), tasks from the originals
 * (name, classes, dataset, metric), normalisation from model 0. m is overwritten
 * (gm_mfile_free it first if it held anything); the caller frees it.
 */
gm_status gm_fgraph_to_mfile(const gm_fgraph *g, const gm_wstore *store, uint64_t seed, gm_mfile *m,
                             gm_error *err);

#endif

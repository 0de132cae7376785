/*
 * gm_stitch_graph: stitches a candidate fused model before it is fine-tuned
 * (the arithmetic is gm_stitch.h).
 *
 * Every node's weights were trained on some input: the original model's
 * previous block, or the node's parent in the elite it was taken from. Where
 * a merge changed that (the re-parented block; the block behind a new
 * adapter), the probe batch is run through the candidate and through the
 * weights' source model, and the map from what the node now reads to what it
 * was trained on is fitted and folded into its first linear layers. Nodes
 * are visited in topological order and the candidate is run again after
 * each stitch, so a stitch sees its ancestors already stitched. A block that
 * starts non-linearly (a max pool) cannot take a fold: its children are
 * stitched instead, on the pooled maps. A new adapter with a 1x1 convolution
 * is set to the map itself (fitted to its child's training input, averaged
 * over the upsampling factor when it upsamples after the convolution).
 *
 * A residual node whose shortcut was projected since its weights' source was
 * trained (gm_fgraph_project_seams) has its projection fitted too: by the
 * input map like the first convolution, or, with the output fit, to reproduce
 * the identity shortcut's output on the source, the source block's input.
 *
 * The candidate's structure, hashes and latency do not change: only weights.
 */
#ifndef GM_STITCH_GRAPH_H
#define GM_STITCH_GRAPH_H

#include "gm_fgraph.h"
#include "gm_stitch.h"

enum { GM_STITCH_MAX_SITES = 64 };

/*
 * What is fitted at a node that is not a new adapter: the map of its input
 * (folded), the output fit of its first layers (gm_stitch_add_delta), or
 * both, keeping the one whose output is nearer its source block's on the
 * probe (two more passes over the probe).
 */
typedef enum { GM_STITCH_FIT_INPUT, GM_STITCH_FIT_OUTPUT, GM_STITCH_FIT_BEST } gm_stitch_fit_kind;

typedef struct {
    double ridge;   /* relative ridge of the least squares (gm_stitch_solve) */
    gm_stitch_fit_kind fit;
    /*
     * 0: stitch only where a node reads something else than its weights' input and
     * no stitch above it already restored that input (the seams). 1: also every
     * node below a seam (each one corrects what is left of the error above it).
     */
    int cascade;
} gm_stitch_opts;

typedef struct {
    int node;              /* the node stitched */
    int adapter;           /* 1: a new adapter set to the map; 0: folded into the node's weights */
    /*
     * The seam's teacher: node `match`'s output (the node itself, or an adapter's
     * child) should equal block src_block's output in model src, the weights'
     * source (an original model or the elite). Feature matching reads it.
     */
    int match;
    const gm_mfile *src;
    int src_block;
    int partial;           /* an identity shortcut still adds the unstitched input */
    int dropped;           /* constants that found no bias or BatchNorm */
    int output_fit;        /* 1: the node's first layers were refitted; 0: its input map folded in */
    double residual;       /* the input map's gm_stitch_fit.residual on the probe (0 when not fitted) */
    double plain_residual; /* the same without the stitch (NAN when channels differ) */
    double out_error;      /* "best" only: the node's output error against its source block's (NAN otherwise) */
} gm_stitch_site;

typedef struct {
    int nsites;
    gm_stitch_site site[GM_STITCH_MAX_SITES];
    double seconds;
} gm_stitch_report;

/*
 * same[i] = 1 when node i reads what its weights were trained on: the parent it
 * had at its weight source (the original model's previous layer, or its parent
 * in the source elite), and that parent reads the same, up to the input.
 * Merges change the input of the re-parented node and of all below it; new
 * adapters have no past. The store gives the weights' sources.
 */
void gm_stitch_same_inputs(const gm_fgraph *g, const gm_wstore *store, int *same);

/*
 * Where g needs stitches (site[k].node, .adapter, .match, .src, .src_block;
 * nothing fitted yet), in topological order, into rep. The store gives the
 * weights' sources.
 */
void gm_stitch_plan(const gm_fgraph *g, const gm_wstore *store, int cascade, gm_stitch_report *rep);

/*
 * Stitches m (gm_fgraph_to_mfile(g, store) made it: block i is node i) in
 * place, on n probe samples x (host, n x numel(g->input), normalised), with
 * nets on backend be. The store gives the weights' source models (the
 * originals, and the elite a candidate was mutated from). rep may be NULL.
 */
gm_status gm_stitch_graph(const gm_fgraph *g, gm_mfile *m, const gm_wstore *store, const float *x, long n,
                          gm_backend *be, const gm_stitch_opts *o, gm_stitch_report *rep, gm_error *err);

#endif

#include "gm_fgraph.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_rng.h"

/* The encoding's header: magic, version, ntasks, nnodes, values per node. */
enum { ENC_MAGIC = 0x47464731 /* "GFG1" */, ENC_VERSION = 1 };
/* gm_op_upsample accepts factors 1..16 (gm_op.h). */
enum { MAX_UPSAMPLE = 16 };

static int shape_eq(gm_shape a, gm_shape b) { return a.c == b.c && a.h == b.h && a.w == b.w; }

/*
 * Input and output shape of every node, in one topological pass. Fails (message
 * naming the node) on a bad parent or a block that does not fit its input.
 */
static gm_status node_shapes(const gm_fgraph *g, gm_shape *in, gm_shape *out, gm_error *err)
{
    for (int i = 0; i < g->nnodes; i++) {
        int p = g->nodes[i].parent;
        if (p < -1 || p >= i)
            return gm_error_set(err, GM_EINVAL, "fused graph: node %d reads node %d, which does not precede it", i,
                                p);
        in[i] = p < 0 ? g->input : out[p];
        gm_error e;
        if (gm_block_infer(&g->nodes[i].block, in[i], &out[i], &e) != GM_OK)
            return gm_error_set(err, GM_ESHAPE,
                                "fused graph: node %d (%s block, model %d layer %d) on input %dx%dx%d: %s", i,
                                gm_block_kind_name(g->nodes[i].block.kind), g->nodes[i].model, g->nodes[i].layer,
                                in[i].c, in[i].h, in[i].w, e.msg);
    }
    return GM_OK;
}

/* ---- adapters ------------------------------------------------------------- */

/* Spatial factor f from -> to: > 1 pools down by f, < -1 upsamples by -f, 1 equal, 0 impossible. */
static int spatial_factor(gm_shape from, gm_shape to)
{
    if (from.h == to.h && from.w == to.w) return 1;
    if (from.h > to.h && from.h % to.h == 0 && from.w % to.w == 0 && from.h / to.h == from.w / to.w)
        return from.h / to.h;
    if (to.h > from.h && to.h % from.h == 0 && to.w % from.w == 0 && to.h / from.h == to.w / from.w &&
        to.h / from.h <= MAX_UPSAMPLE)
        return -(to.h / from.h);
    return 0;
}

int gm_fgraph_adaptable(gm_shape from, gm_shape to)
{
    if (from.c < 1 || from.h < 1 || from.w < 1 || to.c < 1 || to.h < 1 || to.w < 1) return 0;
    return !shape_eq(from, to) && spatial_factor(from, to) != 0;
}

gm_status gm_fgraph_adapter(gm_shape from, gm_shape to, gm_block *out, gm_error *err)
{
    if (!gm_fgraph_adaptable(from, to))
        return gm_error_set(err, GM_ESHAPE, "adapter: cannot map %dx%dx%d to %dx%dx%d (%s)", from.c, from.h, from.w,
                            to.c, to.h, to.w,
                            shape_eq(from, to) ? "the shapes are equal"
                                               : "height and width must scale by the same integer factor");
    int f = spatial_factor(from, to);
    gm_block b = gm_block_empty(GM_BLOCK_CUSTOM);
    /* Pool first and upsample last, so the 1x1 convolution runs on the smaller map. */
    if (f > 1) (void)gm_block_push(&b, gm_op_avgpool2d(f, f, 0), b.nops - 1, -1, NULL);
    if (from.c != to.c) {
        (void)gm_block_push(&b, gm_op_conv2d(from.c, to.c, 1, 1, 0, 0), b.nops - 1, -1, NULL);
        (void)gm_block_push(&b, gm_op_batchnorm2d(to.c), b.nops - 1, -1, NULL);
    }
    if (f < -1) (void)gm_block_push(&b, gm_op_upsample(-f), b.nops - 1, -1, NULL);
    *out = b;
    return GM_OK;
}

/* ---- building and checking ------------------------------------------------ */

/* The originals must be single-task chains with one input shape and normalisation. */
static gm_status check_models(const gm_mfile *const *models, int n, gm_error *err)
{
    if (n < 1 || n > GM_FG_MAX_MODELS)
        return gm_error_set(err, GM_EINVAL, "fused graph: %d models (1 to %d)", n, GM_FG_MAX_MODELS);
    int total = 0;
    for (int i = 0; i < n; i++) {
        const gm_mfile *m = models[i], *m0 = models[0];
        if (!m || m->nblocks < 1)
            return gm_error_set(err, GM_EINVAL, "fused graph: model %d has no blocks", i);
        if (m->ntasks != 1)
            return gm_error_set(err, GM_EINVAL, "fused graph: model %d has %d tasks (each model must have one)", i,
                                m->ntasks);
        for (int b = 0; b < m->nblocks; b++)
            if (m->parent[b] != b - 1)
                return gm_error_set(err, GM_EINVAL, "fused graph: model %d is not a chain: block %d reads block %d", i,
                                    b, m->parent[b]);
        if (m->tasks[0].head != m->nblocks - 1)
            return gm_error_set(err, GM_EINVAL, "fused graph: model %d: task head is block %d, not the last block %d",
                                i, m->tasks[0].head, m->nblocks - 1);
        /* Tasks are found by name (results, test scores, the report): one name twice would merge two tasks. */
        for (int j = 0; j < i; j++)
            if (!strcmp(models[j]->tasks[0].name, m->tasks[0].name))
                return gm_error_set(err, GM_EINVAL,
                                    "fused graph: models %d and %d both serve task \"%s\" (the same model given "
                                    "twice? each task needs its own name)", j, i, m->tasks[0].name);
        if (!shape_eq(m->input, m0->input))
            return gm_error_set(err, GM_EINVAL, "fused graph: model %d reads %dx%dx%d inputs, model 0 %dx%dx%d", i,
                                m->input.c, m->input.h, m->input.w, m0->input.c, m0->input.h, m0->input.w);
        if (m->input.c < 1 || m->input.c > GM_MF_MAX_CHANNELS)
            return gm_error_set(err, GM_EINVAL, "fused graph: model %d has %d input channels", i, m->input.c);
        for (int c = 0; c < m->input.c; c++)
            if (m->mean[c] != m0->mean[c] || m->std[c] != m0->std[c])
                return gm_error_set(err, GM_EINVAL,
                                    "fused graph: model %d normalises channel %d with mean %g std %g, model 0 with "
                                    "mean %g std %g",
                                    i, c, (double)m->mean[c], (double)m->std[c], (double)m0->mean[c],
                                    (double)m0->std[c]);
        total += m->nblocks;
        if (total > GM_FG_MAX_NODES)
            return gm_error_set(err, GM_EINVAL, "fused graph: models 0 to %d have %d blocks, more than %d nodes", i,
                                total, GM_FG_MAX_NODES);
    }
    return GM_OK;
}

static gm_fnode original_node(const gm_mfile *m, int model, int layer, int parent)
{
    gm_fnode nd = {.block = m->blocks[layer], .model = model, .layer = layer, .parent = parent,
                   .task = layer == m->nblocks - 1 ? model : -1, .w = {-1, -1}};
    nd.block.model_id = model;
    nd.block.layer_id = layer;
    return nd;
}

gm_status gm_fgraph_from_models(gm_fgraph *g, const gm_mfile *const *models, int n, gm_error *err)
{
    gm_status s = check_models(models, n, err);
    if (s != GM_OK) return s;
    memset(g, 0, sizeof *g);
    g->input = models[0]->input;
    g->ntasks = n;
    for (int i = 0; i < n; i++)
        for (int l = 0; l < models[i]->nblocks; l++) {
            g->nodes[g->nnodes] = original_node(models[i], i, l, l == 0 ? -1 : g->nnodes - 1);
            g->nnodes++;
        }
    return gm_fgraph_check(g, err);
}

static gm_status check_node(const gm_fgraph *g, int i, gm_error *err)
{
    const gm_fnode *nd = &g->nodes[i];
    if (nd->task < -1 || nd->task >= g->ntasks)
        return gm_error_set(err, GM_EINVAL, "fused graph: node %d is the head of task %d (graph has %d tasks)", i,
                            nd->task, g->ntasks);
    if (nd->model < -1 || nd->model >= g->ntasks)
        return gm_error_set(err, GM_EINVAL, "fused graph: node %d comes from model %d (graph has %d)", i, nd->model,
                            g->ntasks);
    if (nd->model < 0 && (nd->layer != -1 || nd->block.kind != GM_BLOCK_CUSTOM))
        return gm_error_set(err, GM_EINVAL, "fused graph: node %d is an adapter but has layer %d and a %s block", i,
                            nd->layer, gm_block_kind_name(nd->block.kind));
    if (nd->model >= 0 && nd->layer < 0)
        return gm_error_set(err, GM_EINVAL, "fused graph: node %d comes from model %d, layer %d", i, nd->model,
                            nd->layer);
    if (nd->block.model_id != nd->model || nd->block.layer_id != nd->layer)
        return gm_error_set(err, GM_EINVAL, "fused graph: node %d comes from model %d layer %d, its block says %d, %d",
                            i, nd->model, nd->layer, nd->block.model_id, nd->block.layer_id);
    if (nd->w.elite < -1 || (nd->w.elite < 0 && nd->w.node != -1) ||
        (nd->w.elite >= 0 && (nd->w.node < 0 || nd->w.node >= GM_FG_MAX_NODES)))
        return gm_error_set(err, GM_EINVAL, "fused graph: node %d has weight source elite %d node %d", i, nd->w.elite,
                            nd->w.node);
    return GM_OK;
}

gm_status gm_fgraph_check(const gm_fgraph *g, gm_error *err)
{
    if (g->ntasks < 1 || g->ntasks > GM_FG_MAX_MODELS)
        return gm_error_set(err, GM_EINVAL, "fused graph: %d tasks (1 to %d)", g->ntasks, GM_FG_MAX_MODELS);
    if (g->nnodes < 1 || g->nnodes > GM_FG_MAX_NODES)
        return gm_error_set(err, GM_EINVAL, "fused graph: %d nodes (1 to %d)", g->nnodes, GM_FG_MAX_NODES);
    int head[GM_FG_MAX_MODELS];
    char has_child[GM_FG_MAX_NODES] = {0};
    for (int t = 0; t < g->ntasks; t++) head[t] = -1;
    for (int i = 0; i < g->nnodes; i++) {
        const gm_fnode *nd = &g->nodes[i];
        if (nd->parent < -1 || nd->parent >= i)
            return gm_error_set(err, GM_EINVAL, "fused graph: node %d reads node %d, which does not precede it", i,
                                nd->parent);
        if (nd->parent >= 0) has_child[nd->parent] = 1;
        gm_status s = check_node(g, i, err);
        if (s != GM_OK) return s;
        if (nd->task >= 0 && head[nd->task] >= 0)
            return gm_error_set(err, GM_EINVAL, "fused graph: task %d has two heads, nodes %d and %d", nd->task,
                                head[nd->task], i);
        if (nd->task >= 0) head[nd->task] = i;
    }
    for (int t = 0; t < g->ntasks; t++)
        if (head[t] < 0) return gm_error_set(err, GM_EINVAL, "fused graph: task %d has no head", t);
    for (int i = 0; i < g->nnodes; i++) {
        const gm_fnode *nd = &g->nodes[i];
        if (nd->task >= 0 && has_child[i])
            return gm_error_set(err, GM_EINVAL, "fused graph: node %d is task %d's head but other nodes read it", i,
                                nd->task);
        if (nd->task < 0 && !has_child[i])
            return gm_error_set(err, GM_EINVAL, "fused graph: node %d (model %d layer %d) leads to no task head",
                                i, nd->model, nd->layer);
    }
    gm_shape in[GM_FG_MAX_NODES], out[GM_FG_MAX_NODES];
    return node_shapes(g, in, out, err);
}

void gm_fgraph_use_elite_weights(gm_fgraph *g, int elite_id)
{
    for (int i = 0; i < g->nnodes; i++) g->nodes[i].w = (gm_wref){elite_id, i};
}

/* ---- shapes and costs ----------------------------------------------------- */

gm_shape gm_fgraph_out_shape(const gm_fgraph *g, int i)
{
    if (i < 0 || i >= g->nnodes) return (gm_shape){0, 0, 0};
    int path[GM_FG_MAX_NODES], n = 0;
    for (int k = i; k >= 0 && n < GM_FG_MAX_NODES; k = g->nodes[k].parent) {
        if (g->nodes[k].parent >= k) return (gm_shape){0, 0, 0};
        path[n++] = k;
    }
    gm_shape s = g->input;
    while (n > 0)
        if (gm_block_infer(&g->nodes[path[--n]].block, s, &s, NULL) != GM_OK) return (gm_shape){0, 0, 0};
    return s;
}

gm_shape gm_fgraph_in_shape(const gm_fgraph *g, int i)
{
    if (i < 0 || i >= g->nnodes) return (gm_shape){0, 0, 0};
    int p = g->nodes[i].parent;
    return p < 0 ? g->input : gm_fgraph_out_shape(g, p);
}

size_t gm_fgraph_nparams(const gm_fgraph *g)
{
    size_t n = 0;
    for (int i = 0; i < g->nnodes; i++) n += gm_block_nparams(&g->nodes[i].block);
    return n;
}

uint64_t gm_fgraph_flops(const gm_fgraph *g)
{
    gm_shape in[GM_FG_MAX_NODES], out[GM_FG_MAX_NODES];
    if (node_shapes(g, in, out, NULL) != GM_OK) return 0;
    uint64_t f = 0;
    for (int i = 0; i < g->nnodes; i++) f += gm_block_flops(&g->nodes[i].block, in[i]);
    return f;
}

int gm_fgraph_on_path(const gm_fgraph *g, int i, int t)
{
    int h = -1;
    for (int k = 0; k < g->nnodes && h < 0; k++)
        if (g->nodes[k].task == t) h = k;
    /* parent < index bounds the walk even on a damaged graph */
    for (int k = h; k >= 0; k = g->nodes[k].parent) {
        if (k == i) return 1;
        if (g->nodes[k].parent >= k) break;
    }
    return 0;
}

/* ---- hashes --------------------------------------------------------------- */

/* splitmix64's finaliser: every input bit affects every output bit. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Order-sensitive combination of a running hash with one more value. */
static uint64_t hadd(uint64_t h, uint64_t v)
{
    return mix64(h ^ mix64(v + 0x9e3779b97f4a7c15ull) ^ 0x5851f42d4c957f2dull);
}

static uint64_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static uint64_t hash_shape(uint64_t h, gm_shape s) { return hadd(hadd(hadd(h, s.c), s.h), s.w); }

/* Kind and hyper-parameters (not the union's bytes: unused ones are not part of the op). */
static uint64_t hash_op(uint64_t h, const gm_op *op)
{
    h = hadd(h, op->kind);
    switch (op->kind) {
    case GM_OP_CONV2D: {
        const gm_conv_params *p = &op->p.conv;
        int v[6] = {p->cin, p->cout, p->k, p->stride, p->pad, p->bias};
        for (int i = 0; i < 6; i++) h = hadd(h, v[i]);
        return h;
    }
    case GM_OP_BATCHNORM2D: return hadd(hadd(hadd(h, op->p.bn.c), fbits(op->p.bn.eps)), fbits(op->p.bn.momentum));
    case GM_OP_MAXPOOL2D:
    case GM_OP_AVGPOOL2D: return hadd(hadd(hadd(h, op->p.pool.k), op->p.pool.stride), op->p.pool.pad);
    case GM_OP_LINEAR: return hadd(hadd(hadd(h, op->p.linear.in), op->p.linear.out), op->p.linear.bias);
    case GM_OP_DROPOUT: return hadd(h, fbits(op->p.dropout.p));
    case GM_OP_UPSAMPLE: return hadd(h, op->p.upsample.factor);
    default: return h;
    }
}

static uint64_t hash_block(uint64_t h, const gm_block *b)
{
    h = hadd(hadd(h, b->kind), b->nops);
    for (int i = 0; i < b->nops; i++) {
        h = hash_op(h, &b->ops[i]);
        for (int j = 0; j < gm_op_ninputs(&b->ops[i]); j++) h = hadd(h, b->src[i][j]);
    }
    return h;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/*
 * Canonical tree hash: each node's hash is its signature combined with its
 * children's hashes in sorted order, so the result ignores node numbering.
 * sig[n] is the root's (the input's) signature. Assumes parent < index.
 */
static uint64_t tree_hash(const gm_fgraph *g, const uint64_t *sig)
{
    int n = g->nnodes, start[GM_FG_MAX_NODES + 2] = {0}, child[GM_FG_MAX_NODES];
    uint64_t h[GM_FG_MAX_NODES + 1], tmp[GM_FG_MAX_NODES];
    if (n < 1 || n > GM_FG_MAX_NODES) return 0;
    /* children of node p (slot p + 1; slot 0 is the root) grouped by counting sort */
    for (int i = 0; i < n; i++) start[g->nodes[i].parent + 2]++;
    for (int k = 1; k <= n + 1; k++) start[k] += start[k - 1];
    int fill[GM_FG_MAX_NODES + 1];
    for (int k = 0; k <= n; k++) fill[k] = start[k];
    for (int i = 0; i < n; i++) child[fill[g->nodes[i].parent + 1]++] = i;
    for (int slot = n; slot >= 0; slot--) {
        int nc = start[slot + 1] - start[slot];
        for (int k = 0; k < nc; k++) tmp[k] = h[child[start[slot] + k] + 1];
        qsort(tmp, (size_t)nc, sizeof *tmp, cmp_u64);
        uint64_t x = hadd(slot == 0 ? sig[n] : sig[slot - 1], nc);
        for (int k = 0; k < nc; k++) x = hadd(x, tmp[k]);
        h[slot] = x;
    }
    return h[0];
}

uint64_t gm_fgraph_location_hash(const gm_fgraph *g)
{
    gm_shape in[GM_FG_MAX_NODES], out[GM_FG_MAX_NODES];
    if (node_shapes(g, in, out, NULL) != GM_OK) return 0;
    uint64_t sig[GM_FG_MAX_NODES + 1];
    for (int i = 0; i < g->nnodes; i++) {
        const gm_fnode *nd = &g->nodes[i];
        uint64_t h = hadd(hadd(hadd(0x4c4f43ull, nd->model), nd->layer), nd->task);
        h = hadd(hadd(h, (uint64_t)nd->w.elite), (uint64_t)(nd->w.elite >= 0 ? nd->w.node : -1));
        /* an adapter is known by its target (its source is the parent's output) */
        if (nd->model < 0) h = hash_shape(h, out[i]);
        if (nd->proj) h = hadd(h, 0x50524f4aull); /* only when set: graphs without projections hash as before */
        sig[i] = h;
    }
    sig[g->nnodes] = hadd(hash_shape(0x4c4f43ull, g->input), g->ntasks);
    return tree_hash(g, sig);
}

uint64_t gm_fgraph_topology_hash(const gm_fgraph *g)
{
    gm_shape in[GM_FG_MAX_NODES], out[GM_FG_MAX_NODES];
    if (node_shapes(g, in, out, NULL) != GM_OK) return 0;
    uint64_t sig[GM_FG_MAX_NODES + 1];
    for (int i = 0; i < g->nnodes; i++) {
        const gm_fnode *nd = &g->nodes[i];
        uint64_t h = hash_block(0x544f50ull, &nd->block);
        sig[i] = hadd(hash_shape(hash_shape(h, in[i]), out[i]), nd->task);
    }
    sig[g->nnodes] = hadd(hash_shape(0x544f50ull, g->input), g->ntasks);
    return tree_hash(g, sig);
}

/* ---- encoding ------------------------------------------------------------- */

/*
 * Per node: model, layer, parent, task, weight elite, weight node, then proj
 * (0 or 1) and 0. An adapter (model -1) records its target shape instead: C in
 * the layer slot, H and W in the last two; its ops follow from that and its
 * parent's output. Encodings made before projections existed hold 0 there.
 */
int gm_fgraph_encode(const gm_fgraph *g, int32_t *buf, int cap)
{
    if (g->nnodes < 1 || g->nnodes > GM_FG_MAX_NODES) return -1;
    int need = GM_FG_ENC_HEADER + g->nnodes * GM_FG_ENC_PER_NODE;
    if (cap < need) return -1;
    gm_shape in[GM_FG_MAX_NODES], out[GM_FG_MAX_NODES];
    if (node_shapes(g, in, out, NULL) != GM_OK) return -1;
    int32_t hdr[GM_FG_ENC_HEADER] = {ENC_MAGIC, ENC_VERSION, g->ntasks, g->nnodes, GM_FG_ENC_PER_NODE};
    memcpy(buf, hdr, sizeof hdr);
    for (int i = 0; i < g->nnodes; i++) {
        const gm_fnode *nd = &g->nodes[i];
        int adapter = nd->model < 0;
        int32_t v[GM_FG_ENC_PER_NODE] = {nd->model, adapter ? out[i].c : nd->layer, nd->parent, nd->task,
                                         nd->w.elite, nd->w.node, adapter ? out[i].h : nd->proj, adapter ? out[i].w : 0};
        memcpy(buf + GM_FG_ENC_HEADER + i * GM_FG_ENC_PER_NODE, v, sizeof v);
    }
    return need;
}

static gm_status decode_node(gm_fgraph *g, int i, const int32_t *v, const gm_mfile *const *models, int nmodels,
                             const gm_shape *out, gm_error *err)
{
    int model = v[0], parent = v[2];
    if (parent < -1 || parent >= i)
        return gm_error_set(err, GM_EFORMAT, "fused graph encoding: node %d reads node %d", i, parent);
    gm_fnode nd = {.model = model, .layer = v[1], .parent = parent, .task = v[3], .w = {v[4], v[5]}};
    if (model >= nmodels || model < -1)
        return gm_error_set(err, GM_EFORMAT, "fused graph encoding: node %d comes from model %d (%d models)", i,
                            model, nmodels);
    if (model >= 0) {
        if (nd.layer < 0 || nd.layer >= models[model]->nblocks)
            return gm_error_set(err, GM_EFORMAT, "fused graph encoding: node %d is layer %d of model %d (%d blocks)",
                                i, nd.layer, model, models[model]->nblocks);
        nd.block = models[model]->blocks[nd.layer];
        nd.block.model_id = model;
        nd.block.layer_id = nd.layer;
        if (v[6] != 0 && v[6] != 1)
            return gm_error_set(err, GM_EFORMAT, "fused graph encoding: node %d has projection flag %d", i, v[6]);
        if (v[6]) {
            gm_shape in = parent < 0 ? g->input : out[parent];
            gm_error e;
            if (gm_block_project_shortcut(&nd.block, in.c, &nd.block, NULL, &e) != GM_OK)
                return gm_error_set(err, GM_EFORMAT, "fused graph encoding: node %d: %s", i, e.msg);
            nd.proj = 1;
        }
    } else {
        gm_shape from = parent < 0 ? g->input : out[parent], to = {v[1], v[6], v[7]};
        gm_error e;
        if (gm_fgraph_adapter(from, to, &nd.block, &e) != GM_OK)
            return gm_error_set(err, GM_EFORMAT, "fused graph encoding: node %d: %s", i, e.msg);
        nd.layer = -1;
    }
    g->nodes[i] = nd;
    return GM_OK;
}

gm_status gm_fgraph_decode(gm_fgraph *g, const int32_t *buf, int n, const gm_mfile *const *models, int nmodels,
                           gm_error *err)
{
    if (n < GM_FG_ENC_HEADER || buf[0] != ENC_MAGIC)
        return gm_error_set(err, GM_EFORMAT, "fused graph encoding: %d values without the header", n);
    if (buf[1] != ENC_VERSION || buf[4] != GM_FG_ENC_PER_NODE)
        return gm_error_set(err, GM_EFORMAT, "fused graph encoding: version %d with %d values per node (this gmorph "
                            "reads version %d with %d)", buf[1], buf[4], ENC_VERSION, GM_FG_ENC_PER_NODE);
    int ntasks = buf[2], nnodes = buf[3];
    if (ntasks != nmodels)
        return gm_error_set(err, GM_EINVAL, "fused graph encoding: %d tasks, but %d models were given", ntasks,
                            nmodels);
    if (nnodes < 1 || nnodes > GM_FG_MAX_NODES || n != GM_FG_ENC_HEADER + nnodes * GM_FG_ENC_PER_NODE)
        return gm_error_set(err, GM_EFORMAT, "fused graph encoding: %d nodes in %d values", nnodes, n);
    gm_status s = check_models(models, nmodels, err);
    if (s != GM_OK) return s;
    memset(g, 0, sizeof *g);
    g->input = models[0]->input;
    g->ntasks = ntasks;
    gm_shape out[GM_FG_MAX_NODES];
    for (int i = 0; i < nnodes; i++) {
        s = decode_node(g, i, buf + GM_FG_ENC_HEADER + i * GM_FG_ENC_PER_NODE, models, nmodels, out, err);
        if (s != GM_OK) return s;
        g->nnodes = i + 1;
        gm_shape in = g->nodes[i].parent < 0 ? g->input : out[g->nodes[i].parent];
        gm_error e;
        if (gm_block_infer(&g->nodes[i].block, in, &out[i], &e) != GM_OK)
            return gm_error_set(err, GM_EFORMAT, "fused graph encoding: node %d does not fit its input: %s", i, e.msg);
    }
    return gm_fgraph_check(g, err);
}

/* ---- weights -------------------------------------------------------------- */

/* PyTorch's default initialisation, as gm_net does it (uniform +-1/sqrt(fan_in); BN 1, 0; stats 0, 1). */
static void init_block(const gm_block *b, float *par, float *buf, gm_rng *rng)
{
    for (int i = 0; i < b->nops; i++) {
        const gm_op *op = &b->ops[i];
        size_t np = gm_op_nparams(op), fan_in = 0;
        if (op->kind == GM_OP_CONV2D)
            fan_in = (size_t)op->p.conv.cin * (size_t)(op->p.conv.k * op->p.conv.k);
        else if (op->kind == GM_OP_LINEAR)
            fan_in = (size_t)op->p.linear.in;
        if (op->kind == GM_OP_BATCHNORM2D) {
            int c = op->p.bn.c;
            for (int k = 0; k < c; k++) {
                par[k] = 1.0f;
                par[c + k] = 0.0f;
                buf[k] = 0.0f;
                buf[c + k] = 1.0f;
            }
        }
        if (fan_in) {
            float bound = 1.0f / sqrtf((float)fan_in);
            for (size_t k = 0; k < np; k++) par[k] = (2.0f * gm_rng_uniform(rng) - 1.0f) * bound;
        }
        par += np;
        buf += gm_op_nbuffers(op);
    }
}

/* The block of the store that holds node i's weights (NULL for a fresh adapter), and its file. */
static gm_status weight_source(const gm_fgraph *g, int i, const gm_wstore *st, const gm_mfile **file, int *blk,
                               gm_error *err)
{
    const gm_fnode *nd = &g->nodes[i];
    *file = NULL;
    *blk = -1;
    if (nd->w.elite >= 0) {
        for (int k = 0; k < st->nelites && !*file; k++)
            if (st->elite_ids[k] == nd->w.elite) *file = st->elites[k];
        if (!*file)
            return gm_error_set(err, GM_EINVAL, "fused model: node %d takes weights from elite %d, not in the store", i,
                                nd->w.elite);
        *blk = nd->w.node;
    } else if (nd->model >= 0) {
        *file = st->models[nd->model];
        *blk = nd->layer;
    } else {
        return GM_OK;
    }
    if (*blk >= (*file)->nblocks)
        return gm_error_set(err, GM_EFORMAT, "fused model: node %d takes weights from block %d of %s %d, which has %d",
                            i, *blk, nd->w.elite >= 0 ? "elite" : "model", nd->w.elite >= 0 ? nd->w.elite : nd->model,
                            (*file)->nblocks);
    return GM_OK;
}

/* Copies block blk of src into par/buf after checking it matches node i's block op by op. */
static gm_status copy_weights(const gm_fgraph *g, int i, const gm_mfile *src, int blk, float *par, float *buf,
                              gm_error *err)
{
    const gm_block *want = &g->nodes[i].block, *have = &src->blocks[blk];
    const int at = gm_block_projection_of(want, have); /* a shortcut projected since the source was trained */
    int same = want->nops == have->nops || at >= 0;
    for (int k = 0; same && at < 0 && k < want->nops; k++)
        same = gm_op_nparams(&want->ops[k]) == gm_op_nparams(&have->ops[k]) &&
               gm_op_nbuffers(&want->ops[k]) == gm_op_nbuffers(&have->ops[k]);
    if (!same)
        return gm_error_set(err, GM_EFORMAT,
                            "fused model: node %d (%s block, %zu parameters) takes weights from a %s block of %zu "
                            "parameters and %d ops (%s %d, block %d)",
                            i, gm_block_kind_name(want->kind), gm_block_nparams(want), gm_block_kind_name(have->kind),
                            gm_block_nparams(have), have->nops, g->nodes[i].w.elite >= 0 ? "elite" : "model",
                            g->nodes[i].w.elite >= 0 ? g->nodes[i].w.elite : g->nodes[i].model, blk);
    size_t po, bo;
    gm_mfile_block_offsets(src, blk, &po, &bo);
    size_t np = gm_block_nparams(have), nb = gm_block_nbuffers(want);
    if (po + np > src->nparams || bo + nb > src->nbuffers)
        return gm_error_set(err, GM_EFORMAT, "fused model: node %d: source block %d lies past its file's weights", i,
                            blk);
    if (at >= 0)
        gm_block_project_params(want, at, src->params + po, par);
    else
        memcpy(par, src->params + po, np * sizeof(float));
    memcpy(buf, src->buffers + bo, nb * sizeof(float));
    return GM_OK;
}

static gm_status check_store(const gm_fgraph *g, const gm_wstore *st, gm_error *err)
{
    if (st->nmodels != g->ntasks)
        return gm_error_set(err, GM_EINVAL, "fused model: the store holds %d original models, the graph has %d tasks",
                            st->nmodels, g->ntasks);
    for (int k = 0; k < st->nmodels; k++)
        if (!st->models[k] || st->models[k]->ntasks < 1)
            return gm_error_set(err, GM_EINVAL, "fused model: original model %d is missing or has no task", k);
    if (st->nelites > 0 && (!st->elites || !st->elite_ids))
        return gm_error_set(err, GM_EINVAL, "fused model: %d elites but no elite arrays", st->nelites);
    if (st->models[0]->input.c > GM_MF_MAX_CHANNELS)
        return gm_error_set(err, GM_EINVAL, "fused model: %d input channels", st->models[0]->input.c);
    return GM_OK;
}

static void fill_meta(const gm_fgraph *g, const gm_wstore *st, gm_mfile *m)
{
    snprintf(m->arch, sizeof m->arch, "fused");
    m->input = g->input;
    const gm_mfile *m0 = st->models[0];
    for (int c = 0; c < m0->input.c; c++) {
        m->mean[c] = m0->mean[c];
        m->std[c] = m0->std[c];
    }
    m->ntasks = g->ntasks;
    for (int t = 0; t < g->ntasks; t++) {
        m->tasks[t] = st->models[t]->tasks[0];
        m->tasks[t].val_accuracy = NAN;
        m->tasks[t].test_accuracy = NAN;
    }
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].task >= 0) m->tasks[g->nodes[i].task].head = i;
    m->nblocks = g->nnodes;
    for (int i = 0; i < g->nnodes; i++) {
        m->nparams += gm_block_nparams(&g->nodes[i].block);
        m->nbuffers += gm_block_nbuffers(&g->nodes[i].block);
    }
}

gm_status gm_fgraph_to_mfile(const gm_fgraph *g, const gm_wstore *store, uint64_t seed, gm_mfile *m,
                             gm_error *err)
{
    memset(m, 0, sizeof *m);
    gm_status s = gm_fgraph_check(g, err);
    if (s == GM_OK) s = check_store(g, store, err);
    if (s != GM_OK) return s;
    fill_meta(g, store, m);
    m->blocks = calloc((size_t)m->nblocks, sizeof *m->blocks);
    m->parent = calloc((size_t)m->nblocks, sizeof *m->parent);
    m->params = calloc(m->nparams + 1, sizeof(float));
    m->buffers = calloc(m->nbuffers + 1, sizeof(float));
    if (!m->blocks || !m->parent || !m->params || !m->buffers) {
        gm_mfile_free(m);
        return gm_error_set(err, GM_ENOMEM, "fused model: out of memory for %d blocks and %zu parameters", g->nnodes,
                            gm_fgraph_nparams(g));
    }
    gm_rng rng;
    gm_rng_seed(&rng, seed);
    size_t po = 0, bo = 0;
    for (int i = 0; i < g->nnodes && s == GM_OK; i++) {
        m->blocks[i] = g->nodes[i].block;
        m->parent[i] = g->nodes[i].parent;
        const gm_mfile *src;
        int blk;
        s = weight_source(g, i, store, &src, &blk, err);
        if (s == GM_OK && src) s = copy_weights(g, i, src, blk, m->params + po, m->buffers + bo, err);
        if (s == GM_OK && !src) init_block(&g->nodes[i].block, m->params + po, m->buffers + bo, &rng);
        po += gm_block_nparams(&g->nodes[i].block);
        bo += gm_block_nbuffers(&g->nodes[i].block);
    }
    if (s != GM_OK) gm_mfile_free(m);
    return s;
}

int gm_fgraph_project_seams(gm_fgraph *g)
{
    int n = 0;
    for (int i = 0; i < g->nnodes; i++) {
        gm_fnode *nd = &g->nodes[i];
        if (nd->model < 0 || nd->proj || gm_block_identity_add(&nd->block) < 0) continue;
        const int p = nd->parent;
        /* the originals are chains: block l reads block l - 1 of the same model */
        const int own = p < 0 ? nd->layer == 0 : g->nodes[p].model == nd->model && g->nodes[p].layer == nd->layer - 1;
        if (own) continue;
        gm_block b;
        if (gm_block_project_shortcut(&nd->block, gm_fgraph_in_shape(g, i).c, &b, NULL, NULL) != GM_OK) continue;
        nd->block = b;
        nd->proj = 1;
        n++;
    }
    return n;
}

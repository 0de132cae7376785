/*
 * ONNX import: the lowered ops cut into a chain of blocks (gm_onnx_import_int.h).
 *
 * The rule: walk the ops that reach the output in order and cut wherever
 * exactly one activation is live (computed before the cut, read after it).
 * Between two cuts lies either one op or a region with a skip connection; a
 * residual unit is such a region (its ReLU after the Add comes next, alone).
 * Then, to get the layout gm_models builds for its own VGGs and ResNets:
 *   - a lone BatchNorm, ReLU or Dropout joins the block before it
 *     (Conv+BN+ReLU; the ReLU after a residual Add; Linear+ReLU);
 *   - a lone Linear joins a block that is only a Flatten ((Flatten) Linear);
 *   - every other piece starts a block.
 * Kinds follow the ops: conv, pool, gap, residual, linear, and head for a last
 * (Flatten) Linear; anything else is custom.
 */
#include <stdlib.h>
#include <string.h>

#include "gm_onnx_import_int.h"

typedef struct {
    const gm_oi_graph *g;
    gm_oi_blocks *out;
    int cap;
    int *stamp, *local; /* per activation: which block wrote it, and as which of its ops */
    int in_act;         /* the current block's input */
    gm_error *err;
} part_ctx;

/* Ops whose output leads to the graph output, in order; *n of them in keep. */
static gm_status live_ops(const gm_oi_graph *g, int *keep, int *n, gm_error *err)
{
    char *live = calloc((size_t)g->nops + 1, 1), *need = calloc((size_t)g->nacts + 1, 1);
    if (!live || !need) {
        free(live);
        free(need);
        return gm_error_set(err, GM_ENOMEM, "out of memory for %d ops", g->nops);
    }
    need[g->output] = 1;
    for (int i = g->nops - 1; i >= 0; i--) {
        const gm_oi_op *o = &g->ops[i];
        if (!need[o->out]) continue;
        live[i] = 1;
        need[o->in[0]] = 1;
        if (o->in[1] >= 0) need[o->in[1]] = 1;
    }
    *n = 0;
    for (int i = 0; i < g->nops; i++)
        if (live[i]) keep[(*n)++] = i;
    free(live);
    free(need);
    return GM_OK;
}

/*
 * cut[p] = 1 when exactly one activation is live between kept ops p and p+1.
 * An activation is live from its writer's position to its last reader's
 * (the output: past the end); counts are summed from a difference array.
 */
static gm_status cuts(const gm_oi_graph *g, const int *keep, int n, char *cut, gm_error *err)
{
    int *pos = malloc(((size_t)g->nops + 1) * sizeof *pos), *last = malloc(((size_t)g->nacts + 1) * sizeof *last);
    int *diff = calloc((size_t)n + 2, sizeof *diff);
    if (!pos || !last || !diff) {
        free(pos);
        free(last);
        free(diff);
        return gm_error_set(err, GM_ENOMEM, "out of memory for %d ops", n);
    }
    for (int a = 0; a < g->nacts; a++) last[a] = -2;
    for (int p = 0; p < n; p++) {
        const gm_oi_op *o = &g->ops[keep[p]];
        pos[keep[p]] = p;
        last[o->in[0]] = p;
        if (o->in[1] >= 0) last[o->in[1]] = p;
    }
    last[g->output] = n;
    for (int a = 0; a < g->nacts; a++) {
        if (last[a] < -1) continue;
        int born = g->producer[a] < 0 ? -1 : pos[g->producer[a]];
        /* live across the gaps after positions born .. last-1; gap p is diff index p+1 */
        diff[born + 1]++;
        diff[last[a] + 1]--;
    }
    int live = 0;
    for (int p = -1; p < n - 1; p++) {
        live += diff[p + 1];
        if (p >= 0) cut[p] = live == 1;
    }
    cut[n - 1] = 1;
    free(pos);
    free(last);
    free(diff);
    return GM_OK;
}

static gm_block *cur_block(part_ctx *x) { return x->out->nblocks ? &x->out->blocks[x->out->nblocks - 1] : NULL; }

static gm_status new_block(part_ctx *x)
{
    gm_oi_blocks *b = x->out;
    if (b->nblocks == x->cap) {
        int cap = x->cap ? 2 * x->cap : 16;
        gm_block *p = realloc(b->blocks, (size_t)cap * sizeof *p);
        if (p) b->blocks = p;
        int(*q)[GM_BLOCK_MAX_OPS] = p ? realloc(b->opidx, (size_t)cap * sizeof *q) : NULL;
        if (!q) return gm_error_set(x->err, GM_ENOMEM, "out of memory for %d blocks", cap);
        b->opidx = q;
        x->cap = cap;
    }
    gm_block *prev = cur_block(x);
    if (prev) x->in_act = x->g->ops[b->opidx[b->nblocks - 1][prev->nops - 1]].out;
    b->blocks[b->nblocks] = gm_block_empty(GM_BLOCK_CUSTOM);
    b->blocks[b->nblocks].model_id = 0;
    b->blocks[b->nblocks].layer_id = b->nblocks;
    b->nblocks++;
    return GM_OK;
}

/* Appends lowered op i to the current block, wired to its ops or its input. */
static gm_status append(part_ctx *x, int i)
{
    const gm_oi_op *o = &x->g->ops[i];
    int bi = x->out->nblocks - 1, src[2] = {-1, -1};
    gm_block *b = cur_block(x);
    for (int j = 0; j < 2 && o->in[j] >= 0; j++) {
        int a = o->in[j];
        if (x->stamp[a] == bi) src[j] = x->local[a];
        else if (a != x->in_act)
            return gm_oi_node_fail(x->err, GM_EFORMAT, o->node, "reads a tensor from before the block it falls in "
                                   "(a gmorph importer bug: the partition is wrong)");
    }
    if (b->nops == GM_BLOCK_MAX_OPS)
        return gm_oi_node_fail(x->err, GM_EFORMAT, o->node, "falls in a region of more than %d ops between two "
                               "points where a single tensor is live; gmorph blocks hold at most %d",
                               GM_BLOCK_MAX_OPS, GM_BLOCK_MAX_OPS);
    gm_status s = gm_block_push(b, o->op, src[0], src[1], x->err);
    if (s != GM_OK) return s;
    x->out->opidx[bi][b->nops - 1] = i;
    x->stamp[o->out] = bi;
    x->local[o->out] = b->nops - 1;
    return GM_OK;
}

static int trailing(gm_op_kind k) { return k == GM_OP_BATCHNORM2D || k == GM_OP_RELU || k == GM_OP_DROPOUT; }

/* Where a piece of one op goes: into the current block (1) or a new one (0). */
static int joins(const gm_block *b, gm_op_kind k)
{
    if (!b || b->nops == GM_BLOCK_MAX_OPS) return 0;
    if (trailing(k)) return 1;
    return k == GM_OP_LINEAR && b->nops == 1 && b->ops[0].kind == GM_OP_FLATTEN;
}

static int is_chain(const gm_block *b)
{
    for (int i = 0; i < b->nops; i++)
        if (b->src[i][0] != i - 1 || b->ops[i].kind == GM_OP_ADD) return 0;
    return 1;
}

/* ops[*i] has kind k: step past it (optional parts of a pattern). */
static int take(const gm_block *b, int *i, gm_op_kind k)
{
    if (*i < b->nops && b->ops[*i].kind == k) return ++*i, 1;
    return 0;
}

static gm_block_kind classify(const gm_block *b, int last)
{
    gm_op_kind k0 = b->ops[0].kind;
    int i = 0;
    if (is_chain(b)) {
        if (b->nops == 1 && (k0 == GM_OP_MAXPOOL2D || k0 == GM_OP_AVGPOOL2D)) return GM_BLOCK_POOL;
        if (b->nops == 1 && k0 == GM_OP_GLOBALAVGPOOL) return GM_BLOCK_GAP;
        if (take(b, &i, GM_OP_CONV2D)) {
            take(b, &i, GM_OP_BATCHNORM2D);
            take(b, &i, GM_OP_RELU);
            return i == b->nops ? GM_BLOCK_CONV : GM_BLOCK_CUSTOM;
        }
        take(b, &i, GM_OP_FLATTEN);
        if (!take(b, &i, GM_OP_LINEAR)) return GM_BLOCK_CUSTOM;
        if (i == b->nops && last) return GM_BLOCK_HEAD;
        take(b, &i, GM_OP_RELU);
        take(b, &i, GM_OP_DROPOUT);
        return i == b->nops ? GM_BLOCK_LINEAR : GM_BLOCK_CUSTOM;
    }
    /* a residual unit: convolutions, BN and ReLU joined by one Add, maybe a ReLU after it */
    int adds = 0, end = b->nops - 1;
    for (int j = 0; j < b->nops; j++) {
        gm_op_kind k = b->ops[j].kind;
        adds += k == GM_OP_ADD;
        if (k != GM_OP_CONV2D && k != GM_OP_BATCHNORM2D && k != GM_OP_RELU && k != GM_OP_ADD) return GM_BLOCK_CUSTOM;
    }
    if (b->ops[end].kind == GM_OP_RELU && end > 0) end--;
    return adds == 1 && b->ops[end].kind == GM_OP_ADD ? GM_BLOCK_RESIDUAL : GM_BLOCK_CUSTOM;
}

static gm_status group(part_ctx *x, const int *keep, int n, const char *cut)
{
    gm_status s = GM_OK;
    for (int start = 0, p = 0; s == GM_OK && p < n; p++) {
        if (!cut[p]) continue;
        gm_op_kind k = x->g->ops[keep[start]].op.kind;
        if (p > start || !joins(cur_block(x), k)) s = new_block(x);
        for (int q = start; s == GM_OK && q <= p; q++) s = append(x, keep[q]);
        start = p + 1;
    }
    for (int b = 0; s == GM_OK && b < x->out->nblocks; b++)
        x->out->blocks[b].kind = classify(&x->out->blocks[b], b == x->out->nblocks - 1);
    return s;
}

gm_status gm_oi_partition(const gm_oi_graph *g, gm_oi_blocks *out, gm_error *err)
{
    memset(out, 0, sizeof *out);
    part_ctx x = {.g = g, .out = out, .in_act = 0, .err = err};
    int *keep = malloc(((size_t)g->nops + 1) * sizeof *keep), n = 0;
    char *cut = calloc((size_t)g->nops + 1, 1);
    x.stamp = malloc(((size_t)g->nacts + 1) * sizeof *x.stamp);
    x.local = malloc(((size_t)g->nacts + 1) * sizeof *x.local);
    gm_status s = keep && cut && x.stamp && x.local ? GM_OK : gm_error_set(err, GM_ENOMEM, "out of memory");
    for (int a = 0; s == GM_OK && a < g->nacts; a++) x.stamp[a] = -1;
    if (s == GM_OK) s = live_ops(g, keep, &n, err);
    if (s == GM_OK && n == 0) s = gm_error_set(err, GM_EFORMAT, "the graph computes nothing");
    if (s == GM_OK) s = cuts(g, keep, n, cut, err);
    if (s == GM_OK) s = group(&x, keep, n, cut);
    free(keep);
    free(cut);
    free(x.stamp);
    free(x.local);
    if (s != GM_OK) gm_oi_blocks_free(out);
    return s;
}

void gm_oi_blocks_free(gm_oi_blocks *b)
{
    if (!b) return;
    free(b->blocks);
    free(b->opidx);
    memset(b, 0, sizeof *b);
}

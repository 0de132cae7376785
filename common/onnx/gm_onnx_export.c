/*
 * ONNX export (see gm_onnx.h): the block tree walked once, in block order, each
 * op mapped to ONNX nodes with inference semantics, the ModelProto packed by
 * protobuf-c and written atomically.
 *
 * gmorph's IR keeps every tensor as (C, H, W) per sample, a vector being (C, 1, 1);
 * ONNX's Gemm wants [N, C] and Conv [N, C, H, W]. So each value carries its ONNX
 * rank (2 or 4), and a Flatten or Reshape is put in only where an op needs the
 * other one (Linear after global pooling, a 1x1 conv adapter after a Linear).
 * The executor's folded BN+ReLU is the same function as BatchNormalization then
 * Relu, so the export simply writes both.
 */
#define _POSIX_C_SOURCE 200809L
#include "gm_onnx.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gm_onnx_export_pb.h"

#ifndef GMORPH_VERSION
#define GMORPH_VERSION "unknown"
#endif

/* A tensor of the graph: its name, ONNX rank and gmorph per-sample shape. */
typedef struct {
    const char *name;
    int rank;    /* 4: [N, C, H, W]; 2: [N, C] (shape is then (C, 1, 1)) */
    gm_shape s;
} ox_value;

typedef struct {
    const gm_mfile *m;
    gm_oxb_graph g;
    ox_value *block_out;        /* per block, once exported */
    size_t *par_off, *buf_off;  /* per block: offsets into m->params and m->buffers */
    char *needed;               /* per block: on some task's path */
    char (*outputs)[64];        /* graph output name per task */
    size_t params, buffers;     /* values exported so far */
} exporter;

/* ---- names ------------------------------------------------------------------------ */

void gm_onnx_output_names(const gm_mfile *m, char names[][64])
{
    for (int k = 0; k < m->ntasks; k++) {
        char base[64];
        snprintf(base, sizeof base, "%s", m->tasks[k].name);
        for (char *c = base; *c; c++)
            if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_' ||
                  *c == '-'))
                *c = '_';
        if (!base[0]) snprintf(base, sizeof base, "task%d", k);
        /* Internal names all hold a '.', so only "input" and the other tasks can clash. */
        for (int n = 1;; n++) {
            if (n == 1) snprintf(names[k], 64, "%s", base);
            else snprintf(names[k], 64, "%.50s_%d", base, n);
            int clash = strcmp(names[k], "input") == 0;
            for (int j = 0; j < k && !clash; j++) clash = strcmp(names[j], names[k]) == 0;
            if (!clash) break;
        }
    }
}

static const char *op_short(gm_op_kind k)
{
    static const char *const s[GM_OP_KIND_COUNT] = {"conv", "bn", "relu", "maxpool", "avgpool", "gap",
                                                    "linear", "flatten", "add", "dropout", "upsample"};
    return (unsigned)k < GM_OP_KIND_COUNT ? s[k] : "op";
}

static gm_status oom(gm_error *err) { return gm_error_set(err, GM_ENOMEM, "ONNX export: out of memory"); }

/* ---- rank changes --------------------------------------------------------------------- */

/* x as [N, C*H*W] (Flatten); unchanged when already 2-D. */
static gm_status to2d(exporter *e, const char *prefix, ox_value x, ox_value *y, gm_error *err)
{
    *y = x;
    if (x.rank == 2) return GM_OK;
    gm_oxb_arena *a = &e->g.arena;
    char *name = gm_oxb_str(a, "%s.to2d", prefix);
    if (!name) return oom(err);
    Onnx__AttributeProto *at[1] = {gm_oxb_attr_int(a, "axis", 1)};
    *y = (ox_value){name, 2, {(int)gm_shape_numel(x.s), 1, 1}};
    return gm_oxb_node(&e->g, "Flatten", name, &x.name, 1, name, at, 1, err);
}

/* x as [N, C, 1, 1] (Reshape); unchanged when already 4-D. */
static gm_status to4d(exporter *e, const char *prefix, ox_value x, ox_value *y, gm_error *err)
{
    *y = x;
    if (x.rank == 4) return GM_OK;
    gm_oxb_arena *a = &e->g.arena;
    char *name = gm_oxb_str(a, "%s.to4d", prefix), *shape = gm_oxb_str(a, "%s.to4d.shape", prefix);
    if (!name || !shape) return oom(err);
    const int64_t dims[4] = {-1, x.s.c, 1, 1};
    gm_status st = gm_oxb_init_int64s(&e->g, shape, dims, 4, err);
    const char *in[2] = {x.name, shape};
    *y = (ox_value){name, 4, x.s};
    return st != GM_OK ? st : gm_oxb_node(&e->g, "Reshape", name, in, 2, name, NULL, 0, err);
}

/* ---- weights ---------------------------------------------------------------------------- */

/* Appends initializer "<prefix>.<what>" of dims from the model's params (buffer 0) or buffers (1). */
static gm_status weight(exporter *e, const char *prefix, const char *what, const int64_t *dims, int ndims,
                        int buffer, size_t *off, const char **name, gm_error *err)
{
    size_t n = 1;
    for (int i = 0; i < ndims; i++) n *= (size_t)dims[i];
    const float *src = buffer ? e->m->buffers : e->m->params;
    size_t have = buffer ? e->m->nbuffers : e->m->nparams;
    if (*off + n > have)
        return gm_error_set(err, GM_EINVAL, "%s: its %s runs past the model's %zu %s values", prefix, what, have,
                            buffer ? "buffer" : "parameter");
    char *nm = gm_oxb_str(&e->g.arena, "%s.%s", prefix, what);
    if (!nm) return oom(err);
    gm_status st = gm_oxb_init_floats(&e->g, nm, dims, ndims, src + *off, err);
    *off += n;
    *(buffer ? &e->buffers : &e->params) += n;
    *name = nm;
    return st;
}

/* ---- ops ---------------------------------------------------------------------------------- */

typedef struct {
    exporter *e;
    const char *prefix;        /* "b3.conv0": node name and output name */
    const gm_op *op;
    gm_shape out;              /* gmorph's output shape */
    size_t *par, *buf;         /* the block's running offsets */
} op_ctx;

static gm_status node(op_ctx *c, const char *type, const char *const *in, int nin, int rank,
                      Onnx__AttributeProto *const *at, int nat, ox_value *y, gm_error *err)
{
    *y = (ox_value){c->prefix, rank, c->out};
    return gm_oxb_node(&c->e->g, type, c->prefix, in, nin, c->prefix, at, nat, err);
}

static gm_status emit_conv(op_ctx *c, ox_value x, ox_value *y, gm_error *err)
{
    const gm_conv_params *p = &c->op->p.conv;
    gm_oxb_arena *a = &c->e->g.arena;
    const char *in[3];
    const int64_t wd[4] = {p->cout, p->cin, p->k, p->k}, bd[1] = {p->cout};
    const int64_t k[2] = {p->k, p->k}, s[2] = {p->stride, p->stride}, pads[4] = {p->pad, p->pad, p->pad, p->pad};
    gm_status st = to4d(c->e, c->prefix, x, &x, err);
    in[0] = x.name;
    if (st == GM_OK) st = weight(c->e, c->prefix, "weight", wd, 4, 0, c->par, &in[1], err);
    if (st == GM_OK && p->bias) st = weight(c->e, c->prefix, "bias", bd, 1, 0, c->par, &in[2], err);
    if (st != GM_OK) return st;
    Onnx__AttributeProto *at[4] = {gm_oxb_attr_ints(a, "kernel_shape", k, 2), gm_oxb_attr_ints(a, "strides", s, 2),
                                   gm_oxb_attr_ints(a, "pads", pads, 4), gm_oxb_attr_int(a, "group", 1)};
    return node(c, "Conv", in, p->bias ? 3 : 2, 4, at, 4, y, err);
}

/* Inference form: scale, B, running mean and variance; works on [N, C] and [N, C, H, W]. */
static gm_status emit_bn(op_ctx *c, ox_value x, ox_value *y, gm_error *err)
{
    const gm_bn_params *p = &c->op->p.bn;
    const int64_t d[1] = {p->c};
    const char *in[5] = {x.name};
    gm_status st = weight(c->e, c->prefix, "weight", d, 1, 0, c->par, &in[1], err);
    if (st == GM_OK) st = weight(c->e, c->prefix, "bias", d, 1, 0, c->par, &in[2], err);
    if (st == GM_OK) st = weight(c->e, c->prefix, "running_mean", d, 1, 1, c->buf, &in[3], err);
    if (st == GM_OK) st = weight(c->e, c->prefix, "running_var", d, 1, 1, c->buf, &in[4], err);
    if (st != GM_OK) return st;
    Onnx__AttributeProto *at[1] = {gm_oxb_attr_float(&c->e->g.arena, "epsilon", p->eps)};
    return node(c, "BatchNormalization", in, 5, x.rank, at, 1, y, err);
}

/* Floor mode, symmetric padding; AveragePool divides by k*k, padding included (PyTorch's default). */
static gm_status emit_pool(op_ctx *c, ox_value x, ox_value *y, gm_error *err)
{
    const gm_pool_params *p = &c->op->p.pool;
    gm_oxb_arena *a = &c->e->g.arena;
    const int64_t k[2] = {p->k, p->k}, s[2] = {p->stride, p->stride}, pads[4] = {p->pad, p->pad, p->pad, p->pad};
    gm_status st = to4d(c->e, c->prefix, x, &x, err);
    if (st != GM_OK) return st;
    int avg = c->op->kind == GM_OP_AVGPOOL2D;
    Onnx__AttributeProto *at[4] = {gm_oxb_attr_ints(a, "kernel_shape", k, 2), gm_oxb_attr_ints(a, "strides", s, 2),
                                   gm_oxb_attr_ints(a, "pads", pads, 4),
                                   avg ? gm_oxb_attr_int(a, "count_include_pad", 1) : NULL};
    return node(c, avg ? "AveragePool" : "MaxPool", &x.name, 1, 4, at, avg ? 4 : 3, y, err);
}

static gm_status emit_linear(op_ctx *c, ox_value x, ox_value *y, gm_error *err)
{
    const gm_linear_params *p = &c->op->p.linear;
    const int64_t wd[2] = {p->out, p->in}, bd[1] = {p->out};
    const char *in[3];
    gm_status st = to2d(c->e, c->prefix, x, &x, err);
    in[0] = x.name;
    if (st == GM_OK) st = weight(c->e, c->prefix, "weight", wd, 2, 0, c->par, &in[1], err);
    if (st == GM_OK && p->bias) st = weight(c->e, c->prefix, "bias", bd, 1, 0, c->par, &in[2], err);
    if (st != GM_OK) return st;
    Onnx__AttributeProto *at[1] = {gm_oxb_attr_int(&c->e->g.arena, "transB", 1)};
    return node(c, "Gemm", in, p->bias ? 3 : 2, 2, at, 1, y, err);
}

/* Residual sum: operands of the same gmorph shape, brought to one rank. */
static gm_status emit_add(op_ctx *c, ox_value x0, ox_value x1, ox_value *y, gm_error *err)
{
    gm_status st = GM_OK;
    if (x0.rank != x1.rank) {
        char *p0 = gm_oxb_str(&c->e->g.arena, "%s.in%d", c->prefix, x0.rank == 4 ? 0 : 1);
        if (!p0) return oom(err);
        st = x0.rank == 4 ? to2d(c->e, p0, x0, &x0, err) : to2d(c->e, p0, x1, &x1, err);
    }
    const char *in[2] = {x0.name, x1.name};
    return st != GM_OK ? st : node(c, "Add", in, 2, x0.rank, NULL, 0, y, err);
}

/* y[h][w] = x[h/f][w/f]: asymmetric coordinates (x = y / f) rounded down. */
static gm_status emit_upsample(op_ctx *c, ox_value x, ox_value *y, gm_error *err)
{
    gm_oxb_arena *a = &c->e->g.arena;
    const float f = (float)c->op->p.upsample.factor, scales[4] = {1.0f, 1.0f, f, f};
    const int64_t d[1] = {4};
    char *sn = gm_oxb_str(a, "%s.scales", c->prefix);
    if (!sn) return oom(err);
    gm_status st = to4d(c->e, c->prefix, x, &x, err);
    if (st == GM_OK) st = gm_oxb_init_floats(&c->e->g, sn, d, 1, scales, err);
    if (st != GM_OK) return st;
    const char *in[3] = {x.name, "", sn}; /* no roi */
    Onnx__AttributeProto *at[3] = {gm_oxb_attr_str(a, "mode", "nearest"),
                                   gm_oxb_attr_str(a, "coordinate_transformation_mode", "asymmetric"),
                                   gm_oxb_attr_str(a, "nearest_mode", "floor")};
    return node(c, "Resize", in, 3, 4, at, 3, y, err);
}

static gm_status emit_op(op_ctx *c, ox_value x0, ox_value x1, ox_value *y, gm_error *err)
{
    switch (c->op->kind) {
    case GM_OP_CONV2D: return emit_conv(c, x0, y, err);
    case GM_OP_BATCHNORM2D: return emit_bn(c, x0, y, err);
    case GM_OP_RELU: return node(c, "Relu", &x0.name, 1, x0.rank, NULL, 0, y, err);
    case GM_OP_MAXPOOL2D:
    case GM_OP_AVGPOOL2D: return emit_pool(c, x0, y, err);
    case GM_OP_GLOBALAVGPOOL: {
        gm_status st = to4d(c->e, c->prefix, x0, &x0, err);
        return st != GM_OK ? st : node(c, "GlobalAveragePool", &x0.name, 1, 4, NULL, 0, y, err);
    }
    case GM_OP_LINEAR: return emit_linear(c, x0, y, err);
    case GM_OP_FLATTEN: {
        if (x0.rank == 2) { /* already a vector: nothing to do */
            *y = x0;
            return GM_OK;
        }
        Onnx__AttributeProto *at[1] = {gm_oxb_attr_int(&c->e->g.arena, "axis", 1)};
        return node(c, "Flatten", &x0.name, 1, 2, at, 1, y, err);
    }
    case GM_OP_ADD: return emit_add(c, x0, x1, y, err);
    case GM_OP_DROPOUT: *y = x0; return GM_OK; /* identity at inference */
    case GM_OP_UPSAMPLE: return emit_upsample(c, x0, y, err);
    case GM_OP_KIND_COUNT: break;
    }
    return gm_error_set(err, GM_EINVAL, "%s: op kind %d has no ONNX form", c->prefix, (int)c->op->kind);
}

/* ---- blocks and outputs ------------------------------------------------------------------- */

/* Task k's graph output: the head's value as [N, classes] under the task's name. */
static gm_status emit_output(exporter *e, int k, size_t first_node, gm_error *err)
{
    const int b = e->m->tasks[k].head;
    ox_value v = e->block_out[b];
    const char *name = e->outputs[k];
    gm_oxb_graph *g = &e->g;
    char *prefix = gm_oxb_str(&g->arena, "b%d.output", b);
    if (!prefix) return oom(err);
    if (v.rank == 4) {
        Onnx__AttributeProto *at[1] = {gm_oxb_attr_int(&g->arena, "axis", 1)};
        return gm_oxb_node(g, "Flatten", prefix, &v.name, 1, name, at, 1, err);
    }
    /* The head's last node produced the value and nothing reads it: rename its output. */
    Onnx__NodeProto *last = g->nnodes > first_node ? g->nodes[g->nnodes - 1] : NULL;
    if (last && strcmp(last->output[0], v.name) == 0) {
        last->output[0] = gm_oxb_str(&g->arena, "%s", name);
        return last->output[0] ? GM_OK : oom(err);
    }
    return gm_oxb_node(g, "Identity", prefix, &v.name, 1, name, NULL, 0, err); /* a shared or passed-through value */
}

static gm_status emit_block(exporter *e, int b, gm_error *err)
{
    const gm_mfile *m = e->m;
    const gm_block *blk = &m->blocks[b];
    const int parent = m->parent[b];
    ox_value in = parent < 0 ? (ox_value){"input", 4, m->input} : e->block_out[parent];
    ox_value v[GM_BLOCK_MAX_OPS];
    gm_shape out, shapes[GM_BLOCK_MAX_OPS];
    gm_error inner;
    if (gm_block_infer(blk, in.s, &out, &inner) != GM_OK)
        return gm_error_set(err, inner.code, "block %d (%s): %s", b, gm_block_kind_name(blk->kind), inner.msg);
    gm_block_shapes(blk, in.s, shapes);
    size_t par = e->par_off[b], buf = e->buf_off[b], first_node = e->g.nnodes;
    for (int i = 0; i < blk->nops; i++) {
        char *prefix = gm_oxb_str(&e->g.arena, "b%d.%s%d", b, op_short(blk->ops[i].kind), i);
        if (!prefix) return oom(err);
        op_ctx c = {e, prefix, &blk->ops[i], shapes[i], &par, &buf};
        ox_value x0 = blk->src[i][0] < 0 ? in : v[blk->src[i][0]];
        ox_value x1 = blk->src[i][1] < 0 ? in : v[blk->src[i][1]];
        gm_status st = emit_op(&c, x0, x1, &v[i], err);
        if (st != GM_OK) return st;
    }
    e->block_out[b] = v[blk->nops - 1];
    for (int k = 0; k < m->ntasks; k++) {
        if (m->tasks[k].head != b) continue;
        gm_status st = emit_output(e, k, first_node, err);
        if (st != GM_OK) return st;
    }
    return GM_OK;
}

/* Offsets of every block's weights, which blocks a task reads, and the size of the lists. */
static gm_status plan(exporter *e, size_t *max_nodes, size_t *max_inits, gm_error *err)
{
    const gm_mfile *m = e->m;
    size_t par = 0, buf = 0;
    *max_nodes = (size_t)m->ntasks;
    *max_inits = 0;
    for (int b = 0; b < m->nblocks; b++) {
        if (m->parent[b] < -1 || m->parent[b] >= b)
            return gm_error_set(err, GM_EINVAL, "block %d: parent %d must be -1 or an earlier block", b, m->parent[b]);
        if (m->blocks[b].nops < 1 || m->blocks[b].nops > GM_BLOCK_MAX_OPS)
            return gm_error_set(err, GM_EINVAL, "block %d: %d ops", b, m->blocks[b].nops);
        e->par_off[b] = par;
        e->buf_off[b] = buf;
        for (int i = 0; i < m->blocks[b].nops; i++) {
            par += gm_op_nparams(&m->blocks[b].ops[i]);
            buf += gm_op_nbuffers(&m->blocks[b].ops[i]);
        }
        *max_nodes += 2 * (size_t)m->blocks[b].nops; /* an op, and a rank change before it */
        *max_inits += 4 * (size_t)m->blocks[b].nops;
    }
    if (par != m->nparams || buf != m->nbuffers)
        return gm_error_set(err, GM_EINVAL, "the blocks hold %zu parameters and %zu buffer values, the model %zu and %zu",
                            par, buf, m->nparams, m->nbuffers);
    for (int k = 0; k < m->ntasks; k++) {
        if (m->tasks[k].head < 0 || m->tasks[k].head >= m->nblocks)
            return gm_error_set(err, GM_EINVAL, "task %s: head %d is not a block", m->tasks[k].name, m->tasks[k].head);
        for (int b = m->tasks[k].head; b >= 0; b = m->parent[b]) e->needed[b] = 1;
    }
    return GM_OK;
}

/* ---- the model ------------------------------------------------------------------------------ */

static char *float_list(gm_oxb_arena *a, const float *v, int n)
{
    char buf[GM_MF_MAX_CHANNELS * 20] = "";
    for (int i = 0; i < n; i++)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%.9g", i ? "," : "", (double)v[i]);
    return gm_oxb_str(a, "%s", buf);
}

static Onnx__StringStringEntryProto *prop(gm_oxb_arena *a, const char *key, char *value)
{
    Onnx__StringStringEntryProto *p = gm_oxb_alloc(a, sizeof *p);
    if (!p || !value) return NULL;
    *p = (Onnx__StringStringEntryProto)ONNX__STRING_STRING_ENTRY_PROTO__INIT;
    p->key = gm_oxb_str(a, "%s", key);
    p->value = value;
    return p->key ? p : NULL;
}

/* The graph's input and outputs, and the model around the graph, into *model (all in the arena). */
static gm_status assemble(exporter *e, Onnx__ModelProto *model, gm_error *err)
{
    const gm_mfile *m = e->m;
    gm_oxb_arena *a = &e->g.arena;
    Onnx__GraphProto *g = gm_oxb_alloc(a, sizeof *g);
    Onnx__ValueInfoProto **in = gm_oxb_alloc(a, sizeof *in), **out = gm_oxb_alloc(a, sizeof *out * (size_t)m->ntasks);
    Onnx__OperatorSetIdProto *ops = gm_oxb_alloc(a, sizeof *ops), **opsv = gm_oxb_alloc(a, sizeof *opsv);
    Onnx__StringStringEntryProto **props = gm_oxb_alloc(a, sizeof *props * 4);
    char tasks[GM_MF_MAX_TASKS * 65] = "";
    if (!g || !in || !out || !ops || !opsv || !props) return oom(err);
    const int64_t din[4] = {-1, m->input.c, m->input.h, m->input.w};
    in[0] = gm_oxb_value_info(a, "input", din, 4, "normalised image: (x - gmorph.mean) / gmorph.std per channel");
    for (int k = 0; k < m->ntasks; k++) {
        const int64_t d[2] = {-1, m->tasks[k].classes};
        char *doc = gm_oxb_str(a, "task \"%s\": %d logits", m->tasks[k].name, m->tasks[k].classes);
        out[k] = doc ? gm_oxb_value_info(a, e->outputs[k], d, 2, doc) : NULL;
        snprintf(tasks + strlen(tasks), sizeof tasks - strlen(tasks), "%s%s", k ? "," : "", e->outputs[k]);
    }
    props[0] = prop(a, "gmorph.mean", float_list(a, m->mean, m->input.c));
    props[1] = prop(a, "gmorph.std", float_list(a, m->std, m->input.c));
    props[2] = prop(a, "gmorph.tasks", gm_oxb_str(a, "%s", tasks));
    props[3] = prop(a, "gmorph.arch", gm_oxb_str(a, "%s", m->arch));
    *g = (Onnx__GraphProto)ONNX__GRAPH_PROTO__INIT;
    g->name = gm_oxb_str(a, "gmorph %s", m->arch);
    g->n_node = e->g.nnodes;
    g->node = e->g.nodes;
    g->n_initializer = e->g.ninits;
    g->initializer = e->g.inits;
    g->n_input = 1;
    g->input = in;
    g->n_output = (size_t)m->ntasks;
    g->output = out;
    *ops = (Onnx__OperatorSetIdProto)ONNX__OPERATOR_SET_ID_PROTO__INIT;
    ops->domain = gm_oxb_str(a, "%s", "");
    ops->has_version = 1;
    ops->version = GM_ONNX_OPSET;
    opsv[0] = ops;
    *model = (Onnx__ModelProto)ONNX__MODEL_PROTO__INIT;
    model->has_ir_version = 1;
    model->ir_version = GM_ONNX_IR_VERSION;
    model->n_opset_import = 1;
    model->opset_import = opsv;
    model->producer_name = gm_oxb_str(a, "gmorph");
    model->producer_version = gm_oxb_str(a, "%s", GMORPH_VERSION);
    model->doc_string = gm_oxb_str(a, "gmorph model \"%s\", %d task%s", m->arch, m->ntasks, m->ntasks == 1 ? "" : "s");
    model->graph = g;
    model->n_metadata_props = 4;
    model->metadata_props = props;
    return a->failed ? oom(err) : GM_OK;
}

/* Makes a rename in path's folder durable; best effort, as gm_h5 does (some file systems refuse). */
static void sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096] = ".";
    if (slash) snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return;
    (void)fsync(fd);
    close(fd);
}

/* Writes len bytes to "<path>.tmp", syncs it and renames it to path; removes the temporary on failure. */
static gm_status write_atomic(const char *path, const uint8_t *data, size_t len, gm_error *err)
{
    size_t cap = strlen(path) + 5;
    char *tmp = malloc(cap);
    if (!tmp) return oom(err);
    snprintf(tmp, cap, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        gm_status st = gm_error_set(err, GM_EIO, "%s: cannot create: %s", path, strerror(errno));
        free(tmp);
        return st;
    }
    int bad = fwrite(data, 1, len, f) != len || fflush(f) != 0 || fsync(fileno(f)) != 0;
    int why = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        why = errno;
    }
    if (!bad && rename(tmp, path) != 0) {
        bad = 1;
        why = errno;
    }
    gm_status st = GM_OK;
    if (bad) {
        st = gm_error_set(err, GM_EIO, "%s: cannot write: %s", path, strerror(why));
        remove(tmp);
    } else {
        sync_dir(path);
    }
    free(tmp);
    return st;
}

static gm_status pack_and_write(Onnx__ModelProto *model, const char *path, size_t *bytes, gm_error *err)
{
    size_t len = onnx__model_proto__get_packed_size(model);
    if (len > 0x7fffffff) /* protobuf's own limit on one message */
        return gm_error_set(err, GM_EINVAL, "%s: the model packs to %zu bytes, over ONNX's 2 GiB", path, len);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return oom(err);
    size_t packed = onnx__model_proto__pack(model, buf);
    gm_status st = packed == len ? write_atomic(path, buf, len, err)
                                 : gm_error_set(err, GM_EINVAL, "%s: packed %zu bytes, expected %zu", path, packed, len);
    free(buf);
    *bytes = len;
    return st;
}

static gm_status export_model(exporter *e, const char *path, gm_onnx_export_info *info, gm_error *err)
{
    const gm_mfile *m = e->m;
    size_t max_nodes, max_inits;
    gm_status st = plan(e, &max_nodes, &max_inits, err);
    if (st == GM_OK) st = gm_oxb_graph_init(&e->g, max_nodes, max_inits, err);
    for (int b = 0; st == GM_OK && b < m->nblocks; b++)
        if (e->needed[b]) st = emit_block(e, b, err);
    Onnx__ModelProto model;
    if (st == GM_OK) st = assemble(e, &model, err);
    size_t bytes = 0;
    if (st == GM_OK) st = pack_and_write(&model, path, &bytes, err);
    if (st == GM_OK && info) {
        *info = (gm_onnx_export_info){.nodes = (int)e->g.nnodes, .initializers = (int)e->g.ninits,
                                      .params = e->params, .buffers = e->buffers, .bytes = bytes,
                                      .noutputs = m->ntasks};
        memcpy(info->outputs, e->outputs, sizeof info->outputs[0] * (size_t)m->ntasks);
    }
    return st;
}

gm_status gm_onnx_export(const gm_mfile *m, const char *path, gm_onnx_export_info *info, gm_error *err)
{
    if (m->nblocks < 1 || m->ntasks < 1 || m->ntasks > GM_MF_MAX_TASKS || m->input.c < 1 ||
        m->input.c > GM_MF_MAX_CHANNELS)
        return gm_error_set(err, GM_EINVAL, "%s: a model of %d blocks, %d tasks and %d input channels cannot be exported",
                            path, m->nblocks, m->ntasks, m->input.c);
    exporter e = {.m = m};
    size_t nb = (size_t)m->nblocks;
    e.block_out = calloc(nb, sizeof *e.block_out);
    e.par_off = calloc(nb, sizeof *e.par_off);
    e.buf_off = calloc(nb, sizeof *e.buf_off);
    e.needed = calloc(nb, 1);
    e.outputs = calloc(GM_MF_MAX_TASKS, sizeof *e.outputs);
    gm_status st = e.block_out && e.par_off && e.buf_off && e.needed && e.outputs ? GM_OK : oom(err);
    if (st == GM_OK) {
        gm_onnx_output_names(m, e.outputs);
        st = export_model(&e, path, info, err);
    }
    gm_oxb_graph_free(&e.g);
    free(e.block_out);
    free(e.par_off);
    free(e.buf_off);
    free(e.needed);
    free(e.outputs);
    return st;
}

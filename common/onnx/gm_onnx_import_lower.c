/*
 * ONNX import: the graph's nodes to gmorph ops (gm_onnx_import_int.h).
 *
 * Nodes are read in file order (ONNX requires a topological order) and every
 * tensor name is bound to one of three things:
 *   an activation: a tensor computed from the input, per sample, with its
 *     ONNX rank (4 for maps, 2 after a Flatten or a Gemm);
 *   a constant: an initializer, a Constant node, or shape arithmetic on them
 *     (Shape of an activation gives [N, C, H, W] with N symbolic);
 *   a zero padding (Pad) waiting to be folded into the AveragePool after it.
 * Identity and Dropout (identity at inference) bind their output to their
 * input; a Flatten or Reshape of a (C, 1, 1) map is a no-op too. Everything
 * else becomes one gmorph op, or is refused by name.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_onnx_import_int.h"

/* Bounds that keep every int shape computation far from overflow. */
enum { MAX_DIM = 1 << 22, MAX_WINDOW = 1 << 15, MAX_INPUT_DIM = 1 << 16 };

typedef enum { VAL_ACT, VAL_CONST, VAL_PAD } val_kind;

typedef struct {
    const char *name;   /* borrowed from the proto */
    val_kind kind;
    int act, rank;      /* VAL_ACT, VAL_PAD: the activation and its ONNX rank */
    int pad;            /* VAL_PAD: zeros added on each side of H and W */
    gm_oi_const c;      /* VAL_CONST */
    int owns;           /* 1: c's arrays are this value's (an alias borrows them) */
} val;

typedef struct {
    const Onnx__GraphProto *g;
    int64_t opset;
    int64_t batch;      /* the input's fixed batch size; 0 when symbolic */
    int nvals, capvals, capops, capacts;
    val *vals;
    gm_oi_graph *out;
    gm_error *err;
} lower_ctx;

static const char SUPPORTED[] =
    "gmorph imports Conv, BatchNormalization, Relu, MaxPool, AveragePool, GlobalAveragePool, Gemm, MatMul+Add, "
    "Add, Flatten, Reshape, Dropout and Identity (and Constant, Shape, Gather, Unsqueeze, Concat and Pad where they "
    "compute shapes and paddings)";

/* ---- values ---------------------------------------------------------------- */

static const val *find(const lower_ctx *x, const char *name)
{
    for (int k = x->nvals - 1; k >= 0; k--)
        if (strcmp(x->vals[k].name, name) == 0) return &x->vals[k];
    return NULL;
}

/* Binds name to v (taking v's constant when v owns it). */
static gm_status define(lower_ctx *x, const Onnx__NodeProto *n, const char *name, val v)
{
    if (!name || !name[0] || find(x, name)) {
        if (v.owns) gm_oi_const_free(&v.c);
        if (!n) return gm_error_set(x->err, GM_EFORMAT, "tensor \"%.120s\" is defined twice", gm_oi_str(name));
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "its output \"%.120s\" is empty or defined twice",
                               gm_oi_str(name));
    }
    if (x->nvals == x->capvals) {
        int cap = x->capvals ? 2 * x->capvals : 64;
        val *p = realloc(x->vals, (size_t)cap * sizeof *p);
        if (!p) {
            if (v.owns) gm_oi_const_free(&v.c);
            return gm_error_set(x->err, GM_ENOMEM, "out of memory for %d tensors", cap);
        }
        x->vals = p;
        x->capvals = cap;
    }
    v.name = name;
    x->vals[x->nvals++] = v;
    return GM_OK;
}

/* The same thing under another name (constants are borrowed, not copied). */
static gm_status alias(lower_ctx *x, const Onnx__NodeProto *n, const val *v)
{
    val a = *v;
    a.owns = 0;
    return define(x, n, n->output[0], a);
}

/* How many nodes read name (plus one if it is a graph output). */
static int uses(const Onnx__GraphProto *g, const char *name)
{
    int u = 0;
    for (size_t k = 0; k < g->n_node; k++)
        for (size_t i = 0; i < g->node[k]->n_input; i++) u += strcmp(gm_oi_str(g->node[k]->input[i]), name) == 0;
    for (size_t k = 0; k < g->n_output; k++) u += strcmp(gm_oi_str(g->output[k]->name), name) == 0;
    return u;
}

static int has_input(const Onnx__NodeProto *n, size_t i) { return i < n->n_input && n->input[i] && n->input[i][0]; }

static gm_status input_val(lower_ctx *x, const Onnx__NodeProto *n, size_t i, const val **v)
{
    if (!has_input(n, i)) return gm_oi_node_fail(x->err, GM_EFORMAT, n, "input %zu is missing", i);
    *v = find(x, n->input[i]);
    if (!*v)
        return gm_oi_node_fail(x->err, GM_EFORMAT, n,
                               "reads \"%.120s\", which no initializer, graph input or earlier node provides (nodes "
                               "out of order, or a damaged file?)", n->input[i]);
    return GM_OK;
}

static gm_status need_act(lower_ctx *x, const Onnx__NodeProto *n, size_t i, const val **v)
{
    gm_status s = input_val(x, n, i, v);
    if (s != GM_OK) return s;
    if ((*v)->kind == VAL_PAD)
        return gm_oi_node_fail(x->err, GM_EFORMAT, n,
                               "reads the Pad output \"%.120s\"; gmorph folds a Pad only into the AveragePool that "
                               "follows it", n->input[i]);
    if ((*v)->kind == VAL_CONST)
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "input %zu (\"%.120s\") is a constant where gmorph expects an "
                               "activation", i, n->input[i]);
    return GM_OK;
}

static gm_status need_const(lower_ctx *x, const Onnx__NodeProto *n, size_t i, int is_int, const gm_oi_const **c)
{
    const val *v;
    gm_status s = input_val(x, n, i, &v);
    if (s != GM_OK) return s;
    if (v->kind != VAL_CONST)
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "input %zu (\"%.120s\") is computed from the graph input; "
                               "gmorph needs a constant there (an initializer or a Constant node)", i, n->input[i]);
    if (v->c.is_int != is_int)
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "input %zu (\"%.120s\") holds %s, not %s", i, n->input[i],
                               v->c.is_int ? "integers" : "floats", is_int ? "integers" : "floats");
    *c = &v->c;
    return GM_OK;
}

/* ---- ops ----------------------------------------------------------------------- */

static gm_status grow_graph(lower_ctx *x)
{
    gm_oi_graph *g = x->out;
    if (g->nops == x->capops) {
        int cap = x->capops ? 2 * x->capops : 32;
        gm_oi_op *p = realloc(g->ops, (size_t)cap * sizeof *p);
        if (!p) return gm_error_set(x->err, GM_ENOMEM, "out of memory for %d ops", cap);
        g->ops = p;
        x->capops = cap;
    }
    if (g->nacts == x->capacts) {
        int cap = x->capacts ? 2 * x->capacts : 32;
        gm_shape *s = realloc(g->shapes, (size_t)cap * sizeof *s);
        if (s) g->shapes = s;
        int *p = s ? realloc(g->producer, (size_t)cap * sizeof *p) : NULL;
        if (!p) return gm_error_set(x->err, GM_ENOMEM, "out of memory for %d activations", cap);
        g->producer = p;
        x->capacts = cap;
    }
    return GM_OK;
}

/* A new activation written by op (-1: the graph input). */
static int new_act(gm_oi_graph *g, gm_shape s, int op)
{
    g->shapes[g->nacts] = s;
    g->producer[g->nacts] = op;
    return g->nacts++;
}

static int all_finite(const float *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(w[i])) return 0;
    return 1;
}

/* Appends op reading a (and b for ADD), taking w; binds the node's output to the result. */
static gm_status push_op(lower_ctx *x, const Onnx__NodeProto *n, gm_op op, const val *a, const val *b, float *w,
                         int rank)
{
    gm_oi_graph *g = x->out;
    gm_shape in[2] = {g->shapes[a->act], b ? g->shapes[b->act] : g->shapes[a->act]}, o;
    gm_error e;
    gm_status s = gm_op_infer(&op, in, &o, &e);
    if (s == GM_OK && !all_finite(w, gm_op_nparams(&op) + gm_op_nbuffers(&op)))
        s = gm_error_set(&e, GM_EFORMAT, "its weights hold NaN or Inf (a damaged file?)");
    if (s == GM_OK && (o.c > MAX_DIM || o.h > MAX_DIM || o.w > MAX_DIM || gm_shape_numel(o) > (size_t)MAX_DIM * 64))
        s = gm_error_set(&e, GM_ESHAPE, "its %dx%dx%d output is too large", o.c, o.h, o.w);
    if (s != GM_OK) {
        free(w);
        return gm_oi_node_fail(x->err, s == GM_EINVAL ? GM_EFORMAT : s, n, "%s", e.msg);
    }
    s = grow_graph(x);
    if (s != GM_OK) {
        free(w);
        return s;
    }
    int id = new_act(g, o, g->nops);
    g->ops[g->nops++] = (gm_oi_op){.op = op, .in = {a->act, b ? b->act : -1}, .out = id, .node = n, .w = w};
    return define(x, n, n->output[0], (val){.kind = VAL_ACT, .act = id, .rank = rank});
}

static float *alloc_w(lower_ctx *x, const Onnx__NodeProto *n, size_t count)
{
    float *w = malloc((count + 1) * sizeof *w);
    if (!w) gm_oi_node_fail(x->err, GM_ENOMEM, n, "out of memory for %zu weights", count);
    return w;
}

static int dim_ok(int64_t v, int64_t lo, int64_t hi) { return v >= lo && v <= hi; }

/* ---- windows: Conv, MaxPool, AveragePool -------------------------------------------- */

typedef struct {
    int k, stride, pad;
} window;

/* kernel_shape, strides, pads, dilations, auto_pad; kh, kw from the weight (-1 for pools). */
static gm_status window_attrs(lower_ctx *x, const Onnx__NodeProto *n, int64_t kh, int64_t kw, window *wd)
{
    int64_t ks[GM_OI_MAX_RANK], st[GM_OI_MAX_RANK], pd[GM_OI_MAX_RANK], dl[GM_OI_MAX_RANK];
    int nk, ns, np, nd;
    char autopad[32];
    gm_status s = gm_oi_attr_ints(n, "kernel_shape", ks, GM_OI_MAX_RANK, &nk, x->err);
    if (s == GM_OK) s = gm_oi_attr_ints(n, "strides", st, GM_OI_MAX_RANK, &ns, x->err);
    if (s == GM_OK) s = gm_oi_attr_ints(n, "pads", pd, GM_OI_MAX_RANK, &np, x->err);
    if (s == GM_OK) s = gm_oi_attr_ints(n, "dilations", dl, GM_OI_MAX_RANK, &nd, x->err);
    if (s == GM_OK) s = gm_oi_attr_str(n, "auto_pad", "NOTSET", autopad, sizeof autopad, x->err);
    if (s != GM_OK) return s;
    if (strcmp(autopad, "NOTSET") != 0 && strcmp(autopad, "VALID") != 0)
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "auto_pad %s: gmorph reads explicit pads only", autopad);
    if (nk < 0 && kh < 0) return gm_oi_node_fail(x->err, GM_EFORMAT, n, "kernel_shape is missing");
    if (nk < 0) {
        ks[0] = kh;
        ks[1] = kw;
        nk = 2;
    }
    if (nk != 2 || (kh >= 0 && (ks[0] != kh || ks[1] != kw)))
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "kernel_shape has %d values or disagrees with the weight; "
                               "gmorph imports 2-D windows", nk);
    if (ks[0] != ks[1])
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "kernel %lldx%lld is not square; gmorph's windows are square",
                               (long long)ks[0], (long long)ks[1]);
    if (ns < 0) st[0] = st[1] = 1, ns = 2;
    if (ns != 2 || st[0] != st[1])
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "strides differ between height and width (or are not 2 "
                               "values); gmorph strides both alike");
    if (np < 0) pd[0] = pd[1] = pd[2] = pd[3] = 0, np = 4;
    if (np != 4 || pd[0] != pd[1] || pd[0] != pd[2] || pd[0] != pd[3])
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "pads are not the same on all four sides; gmorph pads "
                               "symmetrically");
    if (strcmp(autopad, "VALID") == 0 && pd[0] != 0)
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "auto_pad VALID with pads %lld", (long long)pd[0]);
    for (int i = 0; i < nd; i++)
        if (dl[i] != 1)
            return gm_oi_node_fail(x->err, GM_EFORMAT, n, "dilations [%lld, %lld]: gmorph convolves and pools "
                                   "without dilation", (long long)dl[0], (long long)(nd > 1 ? dl[1] : dl[0]));
    if (!dim_ok(ks[0], 1, MAX_WINDOW) || !dim_ok(st[0], 1, MAX_WINDOW) || !dim_ok(pd[0], 0, MAX_WINDOW))
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "kernel %lld, stride %lld or padding %lld is out of range",
                               (long long)ks[0], (long long)st[0], (long long)pd[0]);
    *wd = (window){(int)ks[0], (int)st[0], (int)pd[0]};
    return GM_OK;
}

static gm_status lower_conv(lower_ctx *x, const Onnx__NodeProto *n)
{
    const val *a;
    const gm_oi_const *w, *b = NULL;
    int64_t group;
    window wd;
    gm_status s = need_act(x, n, 0, &a);
    if (s == GM_OK) s = need_const(x, n, 1, 0, &w);
    if (s == GM_OK && has_input(n, 2)) s = need_const(x, n, 2, 0, &b);
    if (s == GM_OK) s = gm_oi_attr_int(n, "group", 1, &group, x->err);
    if (s != GM_OK) return s;
    if (group != 1)
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "group %lld: gmorph's convolutions have group 1 (no grouped "
                               "or depthwise convolutions)", (long long)group);
    if (a->rank != 4 || w->rank != 4)
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "gmorph imports 2-D convolutions (input rank %d, weight rank "
                               "%d)", a->rank, w->rank);
    s = window_attrs(x, n, w->dims[2], w->dims[3], &wd);
    if (s != GM_OK) return s;
    if (!dim_ok(w->dims[0], 1, MAX_DIM) || !dim_ok(w->dims[1], 1, MAX_DIM))
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "weight of %lldx%lld channels", (long long)w->dims[0],
                               (long long)w->dims[1]);
    int cout = (int)w->dims[0], cin = (int)w->dims[1];
    if (b && b->n != (size_t)cout)
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "bias has %zu values for %d output channels", b->n, cout);
    gm_op op = gm_op_conv2d(cin, cout, wd.k, wd.stride, wd.pad, b != NULL);
    float *buf = alloc_w(x, n, gm_op_nparams(&op));
    if (!buf) return GM_ENOMEM;
    memcpy(buf, w->f, w->n * sizeof *buf); /* ONNX and PyTorch share the [out, in, kh, kw] layout */
    if (b) memcpy(buf + w->n, b->f, b->n * sizeof *buf);
    return push_op(x, n, op, a, NULL, buf, 4);
}

/* Output size of a pooling window along one axis, rounding down or up (PyTorch's rule). */
static int pool_out(int in, const window *wd, int ceil_mode)
{
    int span = in + 2 * wd->pad - wd->k;
    if (span < 0) return -1;
    return (ceil_mode ? (span + wd->stride - 1) / wd->stride : span / wd->stride) + 1;
}

static gm_status lower_pool(lower_ctx *x, const Onnx__NodeProto *n)
{
    int avg = strcmp(n->op_type, "AveragePool") == 0, extra = 0;
    const val *a;
    int64_t ceil_mode, include_pad = 0;
    window wd;
    /* an AveragePool may read a Pad's output (folded in below); anything else needs an activation */
    gm_status s = avg ? input_val(x, n, 0, &a) : need_act(x, n, 0, &a);
    if (s == GM_OK && a->kind == VAL_CONST) s = need_act(x, n, 0, &a);
    if (s == GM_OK) s = window_attrs(x, n, -1, -1, &wd);
    if (s == GM_OK) s = gm_oi_attr_int(n, "ceil_mode", 0, &ceil_mode, x->err);
    if (s == GM_OK && avg) s = gm_oi_attr_int(n, "count_include_pad", 0, &include_pad, x->err);
    if (s != GM_OK) return s;
    if (a->rank != 4) return gm_oi_node_fail(x->err, GM_EFORMAT, n, "gmorph pools 2-D maps, not rank %d", a->rank);
    if (avg && wd.pad > 0 && !include_pad)
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "count_include_pad 0 with pads %d: gmorph's average pool "
                               "divides by the whole window, padding included (count_include_pad 1, PyTorch's "
                               "default)", wd.pad);
    if (a->kind == VAL_PAD) extra = a->pad; /* zeros counted in the window: count_include_pad semantics */
    wd.pad += extra;
    gm_shape in = x->out->shapes[a->act];
    int same = pool_out(in.h, &wd, 1) == pool_out(in.h, &wd, 0) && pool_out(in.w, &wd, 1) == pool_out(in.w, &wd, 0);
    if (ceil_mode && !same)
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "ceil_mode 1 rounds the output up to %dx%d where gmorph's "
                               "pools round down to %dx%d", pool_out(in.h, &wd, 1), pool_out(in.w, &wd, 1),
                               pool_out(in.h, &wd, 0), pool_out(in.w, &wd, 0));
    gm_op op = avg ? gm_op_avgpool2d(wd.k, wd.stride, wd.pad) : gm_op_maxpool2d(wd.k, wd.stride, wd.pad);
    return push_op(x, n, op, a, NULL, NULL, 4);
}

/* ---- the other ops ---------------------------------------------------------------- */

static gm_status lower_relu(lower_ctx *x, const Onnx__NodeProto *n)
{
    const val *a;
    gm_status s = need_act(x, n, 0, &a);
    return s == GM_OK ? push_op(x, n, gm_op_relu(), a, NULL, NULL, a->rank) : s;
}

static gm_status lower_gap(lower_ctx *x, const Onnx__NodeProto *n)
{
    const val *a;
    gm_status s = need_act(x, n, 0, &a);
    if (s == GM_OK && a->rank != 4)
        s = gm_oi_node_fail(x->err, GM_EFORMAT, n, "gmorph pools 2-D maps, not rank %d", a->rank);
    return s == GM_OK ? push_op(x, n, gm_op_globalavgpool(), a, NULL, NULL, 4) : s;
}

/* PyTorch's momentum m is written as 1 - m in float; rounding to 1e-6 gives back m. */
static float torch_momentum(float onnx_momentum) { return (float)(round((1.0 - onnx_momentum) * 1e6) / 1e6); }

static gm_status lower_bn(lower_ctx *x, const Onnx__NodeProto *n)
{
    const val *a;
    const gm_oi_const *c[4]; /* scale, bias, running mean, running variance */
    float eps, momentum;
    int64_t training;
    gm_status s = need_act(x, n, 0, &a);
    for (size_t i = 0; s == GM_OK && i < 4; i++) s = need_const(x, n, i + 1, 0, &c[i]);
    if (s == GM_OK) s = gm_oi_attr_float(n, "epsilon", 1e-5f, &eps, x->err);
    if (s == GM_OK) s = gm_oi_attr_float(n, "momentum", 0.9f, &momentum, x->err);
    if (s == GM_OK) s = gm_oi_attr_int(n, "training_mode", 0, &training, x->err);
    if (s != GM_OK) return s;
    if (training)
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "training_mode 1: gmorph imports inference BatchNormalization "
                               "(export the model in eval mode)");
    if (a->rank != 4 && a->rank != 2)
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "normalises a rank-%d tensor (2 or 4 expected)", a->rank);
    int ch = x->out->shapes[a->act].c;
    for (int i = 0; i < 4; i++)
        if (c[i]->n != (size_t)ch)
            return gm_oi_node_fail(x->err, GM_EFORMAT, n, "input %d has %zu values for %d channels", i + 1, c[i]->n,
                                   ch);
    for (int i = 0; i < ch; i++)
        if (!(c[3]->f[i] >= 0.0f))
            return gm_oi_node_fail(x->err, GM_EFORMAT, n, "running variance %g of channel %d is not >= 0",
                                   (double)c[3]->f[i], i);
    if (!(eps > 0.0f && isfinite(eps)) || !(momentum >= 0.0f && momentum <= 1.0f))
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "epsilon %g or momentum %g is out of range", (double)eps,
                               (double)momentum);
    gm_op op = gm_op_batchnorm2d(ch); /* rank 2 (BatchNorm1d) is the same per-channel affine map */
    op.p.bn.eps = eps;
    op.p.bn.momentum = torch_momentum(momentum);
    float *buf = alloc_w(x, n, 4 * (size_t)ch); /* gamma, beta (parameters), mean, var (buffers) */
    if (!buf) return GM_ENOMEM;
    for (int i = 0; i < 4; i++) memcpy(buf + (size_t)i * ch, c[i]->f, (size_t)ch * sizeof *buf);
    return push_op(x, n, op, a, NULL, buf, a->rank);
}

/* Fills out x in weights [out, in] from b, stored [out, in] (trans) or [in, out]. */
static void linear_weights(float *dst, const gm_oi_const *b, int trans)
{
    int64_t r = b->dims[0], c = b->dims[1];
    if (trans) {
        memcpy(dst, b->f, b->n * sizeof *dst);
        return;
    }
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < c; j++) dst[j * r + i] = b->f[i * c + j];
}

/* A bias of out values: shape (out), (1, out), or one value broadcast. */
static int bias_fits(const gm_oi_const *c, int out)
{
    if (c->n == 1) return 1;
    return c->n == (size_t)out && (c->rank == 1 || (c->rank == 2 && c->dims[0] == 1));
}

static void fill_bias(float *dst, const gm_oi_const *c, int out)
{
    for (int i = 0; i < out; i++) dst[i] = c->f[c->n == 1 ? 0 : i];
}

/* Gemm (trans_b from the node) or MatMul (bias NULL, [in, out] weight). */
static gm_status push_linear(lower_ctx *x, const Onnx__NodeProto *n, const val *a, const gm_oi_const *b, int trans_b,
                             const gm_oi_const *c)
{
    if (a->rank != 2)
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "reads a rank-%d tensor; gmorph's linear layers read the 2-D "
                               "output of a Flatten or Reshape", a->rank);
    if (b->rank != 2 || !dim_ok(b->dims[0], 1, MAX_DIM) || !dim_ok(b->dims[1], 1, MAX_DIM))
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "its weight is not a 2-D matrix");
    int out = (int)b->dims[trans_b ? 0 : 1], in = (int)b->dims[trans_b ? 1 : 0];
    if (c && !bias_fits(c, out))
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "its bias has %zu values in %d dimensions; gmorph reads a "
                               "bias of %d values", c->n, c->rank, out);
    gm_op op = gm_op_linear(in, out, c != NULL);
    float *buf = alloc_w(x, n, gm_op_nparams(&op));
    if (!buf) return GM_ENOMEM;
    linear_weights(buf, b, trans_b);
    if (c) fill_bias(buf + (size_t)in * out, c, out);
    return push_op(x, n, op, a, NULL, buf, 2);
}

static gm_status lower_gemm(lower_ctx *x, const Onnx__NodeProto *n)
{
    const val *a;
    const gm_oi_const *b, *c = NULL;
    int64_t ta, tb;
    float alpha, beta;
    gm_status s = need_act(x, n, 0, &a);
    if (s == GM_OK) s = need_const(x, n, 1, 0, &b);
    if (s == GM_OK && has_input(n, 2)) s = need_const(x, n, 2, 0, &c);
    if (s == GM_OK) s = gm_oi_attr_int(n, "transA", 0, &ta, x->err);
    if (s == GM_OK) s = gm_oi_attr_int(n, "transB", 0, &tb, x->err);
    if (s == GM_OK) s = gm_oi_attr_float(n, "alpha", 1.0f, &alpha, x->err);
    if (s == GM_OK) s = gm_oi_attr_float(n, "beta", 1.0f, &beta, x->err);
    if (s != GM_OK) return s;
    if (ta != 0 || (tb != 0 && tb != 1))
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "transA %lld, transB %lld: gmorph imports transA 0",
                               (long long)ta, (long long)tb);
    if (alpha != 1.0f || (c && beta != 1.0f))
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "alpha %g, beta %g: gmorph imports alpha = beta = 1",
                               (double)alpha, (double)beta);
    return push_linear(x, n, a, b, (int)tb, c);
}

static gm_status lower_matmul(lower_ctx *x, const Onnx__NodeProto *n)
{
    const val *a;
    const gm_oi_const *b;
    gm_status s = need_act(x, n, 0, &a);
    if (s == GM_OK) s = need_const(x, n, 1, 0, &b);
    return s == GM_OK ? push_linear(x, n, a, b, 0, NULL) : s;
}

/* activation + constant: the bias of the MatMul that wrote the activation, read only here. */
static gm_status fuse_bias(lower_ctx *x, const Onnx__NodeProto *n, const val *a, const char *aname,
                           const gm_oi_const *c)
{
    gm_oi_graph *g = x->out;
    int p = g->producer[a->act];
    gm_oi_op *o = p >= 0 ? &g->ops[p] : NULL;
    if (!o || o->op.kind != GM_OP_LINEAR || o->op.p.linear.bias || strcmp(o->node->op_type, "MatMul") != 0 ||
        strcmp(o->node->output[0], aname) != 0 || uses(x->g, aname) != 1)
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "adds a constant to \"%.120s\"; gmorph imports such an Add only "
                               "as the bias of the MatMul right before it", aname);
    int out = o->op.p.linear.out;
    size_t nw = (size_t)out * (size_t)o->op.p.linear.in;
    if (!bias_fits(c, out))
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "its bias has %zu values; the MatMul has %d outputs", c->n, out);
    float *w = realloc(o->w, (nw + (size_t)out + 1) * sizeof *w);
    if (!w) return gm_oi_node_fail(x->err, GM_ENOMEM, n, "out of memory");
    o->w = w;
    fill_bias(w + nw, c, out);
    if (!all_finite(w + nw, (size_t)out))
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "its bias holds NaN or Inf (a damaged file?)");
    o->op.p.linear.bias = 1;
    return alias(x, n, a);
}

static gm_status lower_add(lower_ctx *x, const Onnx__NodeProto *n)
{
    const val *p, *q;
    gm_status s = input_val(x, n, 0, &p);
    if (s == GM_OK) s = input_val(x, n, 1, &q);
    if (s != GM_OK) return s;
    if (p->kind == VAL_ACT && q->kind == VAL_ACT) {
        if (p->rank != q->rank)
            return gm_oi_node_fail(x->err, GM_ESHAPE, n, "adds rank %d to rank %d (no broadcasting in gmorph)",
                                   p->rank, q->rank);
        return push_op(x, n, gm_op_add(), p, q, NULL, p->rank);
    }
    if (p->kind == VAL_ACT && q->kind == VAL_CONST && !q->c.is_int) return fuse_bias(x, n, p, n->input[0], &q->c);
    if (q->kind == VAL_ACT && p->kind == VAL_CONST && !p->c.is_int) return fuse_bias(x, n, q, n->input[1], &p->c);
    return gm_oi_node_fail(x->err, GM_EFORMAT, n, "gmorph imports Add of two activations (a residual connection) or "
                           "of a MatMul's output and its bias");
}

/* Flatten to (N, C*H*W): a no-op for a (C, 1, 1) map. */
static gm_status flatten(lower_ctx *x, const Onnx__NodeProto *n, const val *a)
{
    gm_shape s = x->out->shapes[a->act];
    if (s.h == 1 && s.w == 1) {
        val v = *a;
        v.owns = 0;
        v.rank = 2;
        return define(x, n, n->output[0], v);
    }
    return push_op(x, n, gm_op_flatten(), a, NULL, NULL, 2);
}

static gm_status lower_flatten(lower_ctx *x, const Onnx__NodeProto *n)
{
    const val *a;
    int64_t axis;
    gm_status s = need_act(x, n, 0, &a);
    if (s == GM_OK) s = gm_oi_attr_int(n, "axis", 1, &axis, x->err);
    if (s != GM_OK) return s;
    if (axis < 0) axis += a->rank;
    if (axis != 1)
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "axis %lld: gmorph flattens all but the batch (axis 1)",
                               (long long)axis);
    return flatten(x, n, a);
}

static gm_status lower_reshape(lower_ctx *x, const Onnx__NodeProto *n)
{
    const val *a;
    const gm_oi_const *t;
    int64_t allowzero;
    gm_status s = need_act(x, n, 0, &a);
    if (s == GM_OK) s = need_const(x, n, 1, 1, &t);
    if (s == GM_OK) s = gm_oi_attr_int(n, "allowzero", 0, &allowzero, x->err);
    if (s != GM_OK) return s;
    int64_t f = (int64_t)gm_shape_numel(x->out->shapes[a->act]);
    int ok = 0;
    if (t->n == 2) {
        int64_t b = t->i[0], r = t->i[1];
        int batch = b == GM_OI_BATCH || (b == 0 && !allowzero) || (x->batch > 0 && b == x->batch);
        ok = (batch && (r == -1 || r == f)) || (b == -1 && r == f);
    }
    if (!ok) {
        char dims[96] = "";
        for (size_t i = 0; i < t->n && i < 6; i++) {
            size_t len = strlen(dims);
            if (t->i[i] == GM_OI_BATCH) snprintf(dims + len, sizeof dims - len, "%sN", i ? ", " : "");
            else snprintf(dims + len, sizeof dims - len, "%s%lld", i ? ", " : "", (long long)t->i[i]);
        }
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "reshapes to [%s%s]; gmorph imports Reshape only to (N, -1), "
                               "a flatten", dims, t->n > 6 ? ", ..." : "");
    }
    return flatten(x, n, a);
}

/* Identity and Dropout (the identity at inference): the output is the input. */
static gm_status lower_alias(lower_ctx *x, const Onnx__NodeProto *n)
{
    const val *a;
    gm_status s = input_val(x, n, 0, &a);
    return s == GM_OK ? alias(x, n, a) : s;
}

/* ---- constants and shape arithmetic ---------------------------------------------------- */

static gm_status new_const(lower_ctx *x, const Onnx__NodeProto *n, int is_int, int rank, const int64_t *dims,
                           gm_oi_const *c)
{
    memset(c, 0, sizeof *c);
    c->is_int = is_int;
    c->rank = rank;
    c->n = 1;
    for (int d = 0; d < rank; d++) {
        c->dims[d] = dims[d];
        c->n *= (size_t)dims[d];
    }
    if (is_int) c->i = malloc((c->n + 1) * sizeof *c->i);
    else c->f = malloc((c->n + 1) * sizeof *c->f);
    if (!c->i && !c->f) return gm_oi_node_fail(x->err, GM_ENOMEM, n, "out of memory");
    return GM_OK;
}

static gm_status define_const(lower_ctx *x, const Onnx__NodeProto *n, gm_oi_const *c)
{
    return define(x, n, n->output[0], (val){.kind = VAL_CONST, .c = *c, .owns = 1});
}

static gm_status lower_constant(lower_ctx *x, const Onnx__NodeProto *n)
{
    const Onnx__AttributeProto *a;
    gm_oi_const c;
    gm_status s;
    if ((a = gm_oi_attr(n, "value")) && a->t) {
        gm_error e;
        s = gm_oi_const_decode(a->t, &c, &e);
        if (s != GM_OK) return gm_oi_node_fail(x->err, s, n, "%s", e.msg);
    } else if ((a = gm_oi_attr(n, "value_ints")) || (a = gm_oi_attr(n, "value_floats"))) {
        int is_int = strcmp(a->name, "value_ints") == 0;
        int64_t len = (int64_t)(is_int ? a->n_ints : a->n_floats);
        s = new_const(x, n, is_int, 1, &len, &c);
        if (s != GM_OK) return s;
        if (is_int) memcpy(c.i, a->ints, c.n * sizeof *c.i);
        else memcpy(c.f, a->floats, c.n * sizeof *c.f);
    } else if ((a = gm_oi_attr(n, "value_int")) || (a = gm_oi_attr(n, "value_float"))) {
        int is_int = strcmp(a->name, "value_int") == 0;
        s = new_const(x, n, is_int, 0, NULL, &c);
        if (s != GM_OK) return s;
        if (is_int) c.i[0] = a->i;
        else c.f[0] = a->f;
    } else {
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "has no value gmorph reads (value, value_int(s), "
                               "value_float(s))");
    }
    return define_const(x, n, &c);
}

static gm_status lower_shape(lower_ctx *x, const Onnx__NodeProto *n)
{
    const val *a;
    int64_t full[GM_OI_MAX_RANK], start, end;
    int r;
    gm_status s = input_val(x, n, 0, &a);
    if (s == GM_OK) s = gm_oi_attr_int(n, "start", 0, &start, x->err);
    if (s == GM_OK) s = gm_oi_attr_int(n, "end", GM_OI_MAX_RANK + 1, &end, x->err);
    if (s != GM_OK) return s;
    if (a->kind == VAL_CONST) {
        r = a->c.rank;
        memcpy(full, a->c.dims, sizeof full);
    } else {
        gm_shape sh = x->out->shapes[a->act];
        r = a->rank;
        full[0] = GM_OI_BATCH;
        int64_t chw[3] = {sh.c, sh.h, sh.w};
        if (a->kind == VAL_PAD) chw[1] += 2 * a->pad, chw[2] += 2 * a->pad;
        if (r == 4) memcpy(full + 1, chw, sizeof chw);
        else full[1] = (int64_t)gm_shape_numel(sh);
    }
    if (start < 0) start += r;
    if (end < 0) end += r;
    start = start < 0 ? 0 : start > r ? r : start;
    end = end < start ? start : end > r ? r : end;
    gm_oi_const c;
    int64_t len = end - start;
    s = new_const(x, n, 1, 1, &len, &c);
    if (s != GM_OK) return s;
    memcpy(c.i, full + start, (size_t)len * sizeof *c.i);
    return define_const(x, n, &c);
}

static gm_status lower_gather(lower_ctx *x, const Onnx__NodeProto *n)
{
    const gm_oi_const *d, *idx;
    int64_t axis;
    gm_status s = need_const(x, n, 0, 1, &d);
    if (s == GM_OK) s = need_const(x, n, 1, 1, &idx);
    if (s == GM_OK) s = gm_oi_attr_int(n, "axis", 0, &axis, x->err);
    if (s != GM_OK) return s;
    if (d->rank != 1 || (axis != 0 && axis != -1) || idx->rank > 1)
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "gmorph evaluates Gather only on a 1-D shape vector");
    gm_oi_const c;
    s = new_const(x, n, 1, idx->rank, idx->dims, &c);
    for (size_t k = 0; s == GM_OK && k < idx->n; k++) {
        int64_t j = idx->i[k] < 0 ? idx->i[k] + (int64_t)d->n : idx->i[k];
        if (j < 0 || j >= (int64_t)d->n) {
            gm_oi_const_free(&c);
            return gm_oi_node_fail(x->err, GM_EFORMAT, n, "index %lld is out of range (%zu values)",
                                   (long long)idx->i[k], d->n);
        }
        c.i[k] = d->i[j];
    }
    return s == GM_OK ? define_const(x, n, &c) : s;
}

static gm_status lower_unsqueeze(lower_ctx *x, const Onnx__NodeProto *n)
{
    const val *a;
    int64_t axes[GM_OI_MAX_RANK];
    int na;
    gm_status s = input_val(x, n, 0, &a);
    if (s == GM_OK && a->kind != VAL_CONST)
        s = gm_oi_node_fail(x->err, GM_EFORMAT, n, "gmorph evaluates Unsqueeze only on constants (shape vectors)");
    if (s != GM_OK) return s;
    if (x->opset < 13) {
        s = gm_oi_attr_ints(n, "axes", axes, GM_OI_MAX_RANK, &na, x->err);
    } else {
        const gm_oi_const *t;
        s = need_const(x, n, 1, 1, &t);
        na = s == GM_OK && t->n <= GM_OI_MAX_RANK ? (int)t->n : -1;
        if (na > 0) memcpy(axes, t->i, (size_t)na * sizeof *axes);
    }
    if (s != GM_OK) return s;
    int r = a->c.rank + na;
    if (na < 1 || r > GM_OI_MAX_RANK)
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "%d axes on a rank-%d constant", na, a->c.rank);
    int at[GM_OI_MAX_RANK] = {0};
    for (int k = 0; k < na; k++) {
        int64_t ax = axes[k] < 0 ? axes[k] + r : axes[k];
        if (ax < 0 || ax >= r || at[ax])
            return gm_oi_node_fail(x->err, GM_EFORMAT, n, "axis %lld is out of range or repeated", (long long)axes[k]);
        at[ax] = 1;
    }
    val v = *a;
    v.owns = 0; /* same values, new dims */
    for (int d = 0, j = 0; d < r; d++) v.c.dims[d] = at[d] ? 1 : a->c.dims[j++];
    v.c.rank = r;
    return define(x, n, n->output[0], v);
}

static gm_status lower_concat(lower_ctx *x, const Onnx__NodeProto *n)
{
    const gm_oi_const *in[16];
    int64_t total = 0;
    gm_status s = n->n_input >= 1 && n->n_input <= 16
                      ? GM_OK
                      : gm_oi_node_fail(x->err, GM_EFORMAT, n, "%zu inputs (1 to 16 expected)", n->n_input);
    for (size_t k = 0; s == GM_OK && k < n->n_input; k++) {
        s = need_const(x, n, k, 1, &in[k]);
        if (s == GM_OK && in[k]->rank != 1)
            s = gm_oi_node_fail(x->err, GM_EFORMAT, n, "gmorph evaluates Concat only on 1-D shape vectors");
        if (s == GM_OK) total += (int64_t)in[k]->n;
    }
    if (s != GM_OK) return s;
    gm_oi_const c;
    s = new_const(x, n, 1, 1, &total, &c);
    if (s != GM_OK) return s;
    size_t at = 0;
    for (size_t k = 0; k < n->n_input; k++) {
        memcpy(c.i + at, in[k]->i, in[k]->n * sizeof *c.i);
        at += in[k]->n;
    }
    return define_const(x, n, &c);
}

/* Pad with zeros on H and W alike: remembered, and folded into the AveragePool after it. */
static gm_status lower_pad(lower_ctx *x, const Onnx__NodeProto *n)
{
    const val *a;
    char mode[32];
    int64_t p[GM_OI_MAX_RANK];
    int np = -1;
    float value = 0.0f;
    gm_status s = need_act(x, n, 0, &a);
    if (s == GM_OK) s = gm_oi_attr_str(n, "mode", "constant", mode, sizeof mode, x->err);
    if (s == GM_OK && x->opset < 11) {
        s = gm_oi_attr_ints(n, "pads", p, GM_OI_MAX_RANK, &np, x->err);
        if (s == GM_OK) s = gm_oi_attr_float(n, "value", 0.0f, &value, x->err);
    } else if (s == GM_OK) {
        const gm_oi_const *t, *v = NULL;
        s = need_const(x, n, 1, 1, &t);
        if (s == GM_OK && has_input(n, 2)) s = need_const(x, n, 2, 0, &v);
        if (s == GM_OK && has_input(n, 3))
            s = gm_oi_node_fail(x->err, GM_EFORMAT, n, "gmorph reads Pad without axes");
        if (s == GM_OK && t->n <= GM_OI_MAX_RANK) np = (int)t->n, memcpy(p, t->i, t->n * sizeof *p);
        if (s == GM_OK && v) value = v->n == 1 ? v->f[0] : NAN;
    }
    if (s != GM_OK) return s;
    if (strcmp(mode, "constant") != 0 || value != 0.0f || a->rank != 4 || np != 8 || p[0] || p[1] || p[4] || p[5] ||
        p[2] != p[3] || p[2] != p[6] || p[2] != p[7] || !dim_ok(p[2], 0, MAX_WINDOW))
        return gm_oi_node_fail(x->err, GM_EFORMAT, n, "gmorph reads Pad only as the same zero padding on all four "
                               "sides of a map (mode %s, value %g)", mode, (double)value);
    if (p[2] == 0) return alias(x, n, a);
    val v = *a;
    v.kind = VAL_PAD;
    v.pad = (int)p[2];
    return define(x, n, n->output[0], v);
}

/* ---- the graph ---------------------------------------------------------------------- */

typedef gm_status (*lower_fn)(lower_ctx *, const Onnx__NodeProto *);

static const struct {
    const char *type;
    lower_fn fn;
} LOWER[] = {
    {"Conv", lower_conv},           {"BatchNormalization", lower_bn},
    {"Relu", lower_relu},           {"MaxPool", lower_pool},
    {"AveragePool", lower_pool},    {"GlobalAveragePool", lower_gap},
    {"Gemm", lower_gemm},           {"MatMul", lower_matmul},
    {"Add", lower_add},             {"Flatten", lower_flatten},
    {"Reshape", lower_reshape},     {"Dropout", lower_alias},
    {"Identity", lower_alias},      {"Constant", lower_constant},
    {"Shape", lower_shape},         {"Gather", lower_gather},
    {"Unsqueeze", lower_unsqueeze}, {"Concat", lower_concat},
    {"Pad", lower_pad},
};

static gm_status lower_node(lower_ctx *x, const Onnx__NodeProto *n)
{
    const char *dom = gm_oi_str(n->domain);
    lower_fn fn = NULL;
    for (size_t k = 0; !fn && k < sizeof LOWER / sizeof *LOWER; k++)
        if (strcmp(gm_oi_str(n->op_type), LOWER[k].type) == 0) fn = LOWER[k].fn;
    char label[160];
    if (!fn || (dom[0] && strcmp(dom, "ai.onnx") != 0))
        return gm_error_set(x->err, GM_EFORMAT, "%s (op %.40s%s%.40s) is not supported; %s",
                            gm_oi_node_label(n, label, sizeof label), gm_oi_str(n->op_type),
                            dom[0] ? ", domain " : "", dom, SUPPORTED);
    if (n->n_output < 1 || !n->output[0][0]) return gm_oi_node_fail(x->err, GM_EFORMAT, n, "has no output");
    for (size_t k = 1; k < n->n_output; k++)
        if (n->output[k][0] && uses(x->g, n->output[k]) > 0)
            return gm_oi_node_fail(x->err, GM_EFORMAT, n, "its output %zu (\"%.120s\") is read; gmorph keeps only "
                                   "the first output of a %s", k, n->output[k], n->op_type);
    return fn(x, n);
}

static gm_status define_initializers(lower_ctx *x)
{
    const Onnx__GraphProto *g = x->g;
    if (g->n_sparse_initializer)
        return gm_error_set(x->err, GM_EFORMAT, "the graph has sparse initializers, which gmorph does not read");
    for (size_t k = 0; k < g->n_initializer; k++) {
        gm_oi_const c;
        gm_status s = gm_oi_const_decode(g->initializer[k], &c, x->err);
        if (s == GM_OK) s = define(x, NULL, g->initializer[k]->name, (val){.kind = VAL_CONST, .c = c, .owns = 1});
        if (s != GM_OK) return s;
    }
    return GM_OK;
}

/* The one graph input that is not an initializer: float (N, C, H, W), C, H, W fixed. */
static gm_status define_input(lower_ctx *x)
{
    const Onnx__GraphProto *g = x->g;
    const Onnx__ValueInfoProto *in = NULL;
    int count = 0;
    for (size_t k = 0; k < g->n_input; k++)
        if (!find(x, gm_oi_str(g->input[k]->name))) in = g->input[k], count++;
    if (count != 1)
        return gm_error_set(x->err, GM_EFORMAT, "the graph has %d inputs besides its weights; gmorph imports "
                            "single-input models", count);
    const Onnx__TypeProto *t = in->type;
    const Onnx__TensorShapeProto *sh = t && t->value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE && t->tensor_type
                                           ? t->tensor_type->shape : NULL;
    int ok = sh && t->tensor_type->elem_type == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT && sh->n_dim == 4;
    int64_t d[4] = {0, 0, 0, 0};
    for (int k = 0; ok && k < 4; k++) {
        const Onnx__TensorShapeProto__Dimension *dim = sh->dim[k];
        if (dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) d[k] = dim->dim_value;
        else if (k > 0) ok = 0;
    }
    if (!ok || !dim_ok(d[1], 1, 1 << 10) || !dim_ok(d[2], 1, MAX_INPUT_DIM) || !dim_ok(d[3], 1, MAX_INPUT_DIM) ||
        d[0] < 0)
        return gm_error_set(x->err, GM_EFORMAT, "input \"%.120s\" is not a float tensor (N, C, H, W) with C, H and W "
                            "fixed; gmorph imports image models", gm_oi_str(in->name));
    x->batch = d[0];
    x->out->input = (gm_shape){(int)d[1], (int)d[2], (int)d[3]};
    gm_status s = grow_graph(x);
    if (s != GM_OK) return s;
    int id = new_act(x->out, x->out->input, -1);
    return define(x, NULL, in->name, (val){.kind = VAL_ACT, .act = id, .rank = 4});
}

static gm_status find_output(lower_ctx *x)
{
    const Onnx__GraphProto *g = x->g;
    if (g->n_output != 1)
        return gm_error_set(x->err, GM_EFORMAT, "the graph has %zu outputs; gmorph imports single-output models (one "
                            "task)", g->n_output);
    const char *name = gm_oi_str(g->output[0]->name);
    const val *v = find(x, name);
    if (!v || v->kind != VAL_ACT || v->act == 0)
        return gm_error_set(x->err, GM_EFORMAT, "the output \"%.120s\" is %s", name,
                            !v ? "not computed by any node" : v->kind == VAL_CONST ? "a constant"
                            : v->kind == VAL_PAD ? "a padding" : "the input itself");
    gm_shape s = x->out->shapes[v->act];
    if (s.h != 1 || s.w != 1)
        return gm_error_set(x->err, GM_EFORMAT, "the output \"%.120s\" is a %dx%dx%d map, not a vector of class "
                            "scores", name, s.c, s.h, s.w);
    x->out->output = v->act;
    return GM_OK;
}

gm_status gm_oi_lower(const Onnx__GraphProto *g, int64_t opset, gm_oi_graph *out, gm_error *err)
{
    memset(out, 0, sizeof *out);
    lower_ctx x = {.g = g, .opset = opset, .out = out, .err = err};
    gm_status s = define_initializers(&x);
    if (s == GM_OK) s = define_input(&x);
    for (size_t k = 0; s == GM_OK && k < g->n_node; k++) s = lower_node(&x, g->node[k]);
    if (s == GM_OK) s = find_output(&x);
    for (int k = 0; k < x.nvals; k++)
        if (x.vals[k].owns) gm_oi_const_free(&x.vals[k].c);
    free(x.vals);
    if (s != GM_OK) gm_oi_graph_free(out);
    return s;
}

void gm_oi_graph_free(gm_oi_graph *g)
{
    if (!g) return;
    for (int k = 0; k < g->nops; k++) free(g->ops[k].w);
    free(g->ops);
    free(g->shapes);
    free(g->producer);
    memset(g, 0, sizeof *g);
}

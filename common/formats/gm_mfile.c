#include "gm_mfile.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_h5.h"

static const char FORMAT_NAME[] = "gmorph-model";

/*
 * Bounds a file's numbers must respect before they are used: they keep every
 * shape computation below in int range (no overflow, whatever the file says).
 */
enum {
    MAX_BLOCKS = 1 << 16,
    MAX_WINDOW = 1 << 15,   /* kernel, stride, padding */
    MAX_INPUT_DIM = 1 << 16,
    MAX_DIM = 1 << 22       /* any op's output C, H or W */
};

/* ---- messages ------------------------------------------------------------- */

/* "file: ctx: message" (ctx may be empty). */
static gm_status fail(gm_error *err, gm_status code, const char *file, const char *ctx, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

static gm_status fail(gm_error *err, gm_status code, const char *file, const char *ctx, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return gm_error_set(err, code, "%s: %s%s%s", file, ctx, *ctx ? ": " : "", msg);
}

/* Re-raises a gm_h5 error under a context; gm_h5 already named the file, so drop that. */
static gm_status wrap(gm_error *err, const gm_error *in, const char *file, const char *ctx)
{
    const char *msg = in->msg;
    size_t n = strlen(file);
    if (n && strncmp(msg, file, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ') msg += n + 2;
    return fail(err, in->code, file, ctx, "%s", msg);
}

/* ---- ops: hyper-parameters and weight datasets, shared by writer and reader ---- */

typedef struct {
    const char *name;
    int *v;
} int_field;

typedef struct {
    const char *name;
    float *v;
} float_field;

/* The op's integer hyper-parameters by their file names, pointing into op. */
static int op_int_fields(gm_op *op, int_field *f)
{
    switch (op->kind) {
    case GM_OP_CONV2D: {
        gm_conv_params *p = &op->p.conv;
        f[0] = (int_field){"cin", &p->cin};
        f[1] = (int_field){"cout", &p->cout};
        f[2] = (int_field){"k", &p->k};
        f[3] = (int_field){"stride", &p->stride};
        f[4] = (int_field){"pad", &p->pad};
        f[5] = (int_field){"bias", &p->bias};
        return 6;
    }
    case GM_OP_BATCHNORM2D:
        f[0] = (int_field){"c", &op->p.bn.c};
        return 1;
    case GM_OP_MAXPOOL2D:
    case GM_OP_AVGPOOL2D:
        f[0] = (int_field){"k", &op->p.pool.k};
        f[1] = (int_field){"stride", &op->p.pool.stride};
        f[2] = (int_field){"pad", &op->p.pool.pad};
        return 3;
    case GM_OP_LINEAR:
        f[0] = (int_field){"in", &op->p.linear.in};
        f[1] = (int_field){"out", &op->p.linear.out};
        f[2] = (int_field){"bias", &op->p.linear.bias};
        return 3;
    case GM_OP_UPSAMPLE: /* its range (1..16) is gm_op_infer's check */
        f[0] = (int_field){"factor", &op->p.upsample.factor};
        return 1;
    default:
        return 0;
    }
}

/* The op's real-valued hyper-parameters (stored as doubles). */
static int op_float_fields(gm_op *op, float_field *f)
{
    switch (op->kind) {
    case GM_OP_BATCHNORM2D:
        f[0] = (float_field){"eps", &op->p.bn.eps};
        f[1] = (float_field){"momentum", &op->p.bn.momentum};
        return 2;
    case GM_OP_DROPOUT:
        f[0] = (float_field){"p", &op->p.dropout.p};
        return 1;
    default:
        return 0;
    }
}

enum { MAX_INT_FIELDS = 6, MAX_FLOAT_FIELDS = 2, MAX_DATASETS = 4 };

typedef struct {
    const char *name;
    int rank;
    hsize_t dims[4];
    int buffer; /* 1: lives in the buffers array, else in the params array */
} ds_spec;

/*
 * The op's weight datasets with PyTorch's names and shapes, in the order of the
 * flat arrays: parameters (weight then bias), then buffers.
 */
static int op_datasets(const gm_op *op, ds_spec *d)
{
    switch (op->kind) {
    case GM_OP_CONV2D: {
        const gm_conv_params *p = &op->p.conv;
        d[0] = (ds_spec){"weight", 4, {(hsize_t)p->cout, (hsize_t)p->cin, (hsize_t)p->k, (hsize_t)p->k}, 0};
        if (!p->bias) return 1;
        d[1] = (ds_spec){"bias", 1, {(hsize_t)p->cout}, 0};
        return 2;
    }
    case GM_OP_BATCHNORM2D: {
        hsize_t c = (hsize_t)op->p.bn.c;
        d[0] = (ds_spec){"weight", 1, {c}, 0};
        d[1] = (ds_spec){"bias", 1, {c}, 0};
        d[2] = (ds_spec){"running_mean", 1, {c}, 1};
        d[3] = (ds_spec){"running_var", 1, {c}, 1};
        return 4;
    }
    case GM_OP_LINEAR: {
        const gm_linear_params *p = &op->p.linear;
        d[0] = (ds_spec){"weight", 2, {(hsize_t)p->out, (hsize_t)p->in}, 0};
        if (!p->bias) return 1;
        d[1] = (ds_spec){"bias", 1, {(hsize_t)p->out}, 0};
        return 2;
    }
    default:
        return 0;
    }
}

/* a * b, or UINT64_MAX on overflow (sizes from a file may be absurd). */
static uint64_t mul_sat(uint64_t a, uint64_t b) { return a && b > UINT64_MAX / a ? UINT64_MAX : a * b; }
static uint64_t add_sat(uint64_t a, uint64_t b) { return b > UINT64_MAX - a ? UINT64_MAX : a + b; }

static uint64_t ds_numel(const ds_spec *d)
{
    uint64_t n = 1;
    for (int i = 0; i < d->rank; i++) n = mul_sat(n, d->dims[i]);
    return n;
}

/* Equal kind and hyper-parameters (not memcmp: union padding is undefined). */
static int op_equal(const gm_op *a, const gm_op *b)
{
    if (a->kind != b->kind) return 0;
    gm_op x = *a, y = *b;
    int_field fx[MAX_INT_FIELDS] = {{0}}, fy[MAX_INT_FIELDS] = {{0}};
    float_field gx[MAX_FLOAT_FIELDS] = {{0}}, gy[MAX_FLOAT_FIELDS] = {{0}};
    int ni = op_int_fields(&x, fx), nf = op_float_fields(&x, gx);
    op_int_fields(&y, fy);
    op_float_fields(&y, gy);
    for (int i = 0; i < ni; i++)
        if (*fx[i].v != *fy[i].v) return 0;
    for (int i = 0; i < nf; i++)
        if (*gx[i].v != *gy[i].v) return 0;
    return 1;
}

static int parse_op_kind(const char *s)
{
    for (int k = 0; k < GM_OP_KIND_COUNT; k++)
        if (strcmp(s, gm_op_name((gm_op_kind)k)) == 0) return k;
    return -1;
}

static int parse_block_kind(const char *s)
{
    for (int k = GM_BLOCK_CONV; k <= GM_BLOCK_CUSTOM; k++)
        if (strcmp(s, gm_block_kind_name((gm_block_kind)k)) == 0) return k;
    return -1;
}

static void block_ctx(char *buf, size_t cap, int b) { snprintf(buf, cap, "block %03d", b); }
static void op_ctx(char *buf, size_t cap, int b, int i, const gm_op *op)
{
    snprintf(buf, cap, "block %03d op%02d (%s)", b, i, gm_op_name(op->kind));
}

/* ---- validation, shared by writer and reader -------------------------------- */

/* What gm_op_infer leaves unchecked: flags, BN constants, window bounds. */
static gm_status check_op(const gm_op *op, gm_status code, const char *file, const char *ctx, gm_error *err)
{
    switch (op->kind) {
    case GM_OP_CONV2D: {
        const gm_conv_params *p = &op->p.conv;
        if (p->bias != 0 && p->bias != 1)
            return fail(err, code, file, ctx, "bias is %d, not 0 or 1", p->bias);
        if (p->k > MAX_WINDOW || p->stride > MAX_WINDOW || p->pad > MAX_WINDOW)
            return fail(err, code, file, ctx, "kernel %d, stride %d or padding %d is above %d", p->k, p->stride,
                        p->pad, MAX_WINDOW);
        return GM_OK;
    }
    case GM_OP_MAXPOOL2D:
    case GM_OP_AVGPOOL2D: {
        const gm_pool_params *p = &op->p.pool;
        if (p->k > MAX_WINDOW || p->stride > MAX_WINDOW || p->pad > MAX_WINDOW)
            return fail(err, code, file, ctx, "kernel %d, stride %d or padding %d is above %d", p->k, p->stride,
                        p->pad, MAX_WINDOW);
        return GM_OK;
    }
    case GM_OP_LINEAR:
        if (op->p.linear.bias != 0 && op->p.linear.bias != 1)
            return fail(err, code, file, ctx, "bias is %d, not 0 or 1", op->p.linear.bias);
        return GM_OK;
    case GM_OP_BATCHNORM2D: {
        const gm_bn_params *p = &op->p.bn;
        if (!(isfinite(p->eps) && p->eps > 0.0f))
            return fail(err, code, file, ctx, "eps %g is not a positive number", (double)p->eps);
        if (!(p->momentum >= 0.0f && p->momentum <= 1.0f))
            return fail(err, code, file, ctx, "momentum %g is not in [0, 1]", (double)p->momentum);
        return GM_OK;
    }
    default:
        return GM_OK;
    }
}

static int shape_ok(gm_shape s)
{
    return s.c >= 1 && s.h >= 1 && s.w >= 1 && s.c <= MAX_DIM && s.h <= MAX_DIM && s.w <= MAX_DIM &&
           gm_shape_numel(s) <= (size_t)INT_MAX;
}

/*
 * The tree, every edge's shapes, the parameter totals and the tasks. Shapes of
 * every block's output go to shapes[nblocks]. code: GM_EFORMAT for a file read,
 * GM_EINVAL for a model about to be written.
 */
static gm_status validate(const gm_mfile *m, gm_shape *shapes, gm_status code, const char *file, gm_error *err)
{
    char ctx[96];
    gm_shape in = m->input;
    if (in.c < 1 || in.c > GM_MF_MAX_CHANNELS || in.h < 1 || in.w < 1 || in.h > MAX_INPUT_DIM ||
        in.w > MAX_INPUT_DIM)
        return fail(err, code, file, "", "input shape %dx%dx%d is not valid (1 to %d channels, 1 to %d pixels)",
                    in.c, in.h, in.w, GM_MF_MAX_CHANNELS, MAX_INPUT_DIM);
    for (int c = 0; c < in.c; c++)
        if (!isfinite(m->mean[c]) || !isfinite(m->std[c]) || !(m->std[c] > 0.0f))
            return fail(err, code, file, "", "channel %d: mean %g and std %g are not finite with std > 0", c,
                        (double)m->mean[c], (double)m->std[c]);
    if (m->nblocks < 1 || m->nblocks > MAX_BLOCKS || !m->blocks || !m->parent)
        return fail(err, code, file, "", "%d blocks (1 to %d expected)", m->nblocks, MAX_BLOCKS);
    uint64_t npar = 0, nbuf = 0;
    for (int b = 0; b < m->nblocks; b++) {
        const gm_block *blk = &m->blocks[b];
        block_ctx(ctx, sizeof ctx, b);
        if ((unsigned)blk->kind > (unsigned)GM_BLOCK_CUSTOM)
            return fail(err, code, file, ctx, "block kind %d is not known", (int)blk->kind);
        int p = m->parent[b];
        if (p < -1 || p >= b) return fail(err, code, file, ctx, "parent %d is not -1 or an earlier block", p);
        if (blk->nops < 1 || blk->nops > GM_BLOCK_MAX_OPS)
            return fail(err, code, file, ctx, "%d ops (1 to %d expected)", blk->nops, GM_BLOCK_MAX_OPS);
        for (int i = 0; i < blk->nops; i++) {
            char octx[96];
            op_ctx(octx, sizeof octx, b, i, &blk->ops[i]);
            gm_status st = check_op(&blk->ops[i], code, file, octx, err);
            if (st != GM_OK) return st;
        }
        gm_shape bin = p < 0 ? in : shapes[p];
        gm_error e;
        if (gm_block_infer(blk, bin, &shapes[b], &e) != GM_OK) {
            snprintf(ctx, sizeof ctx, "block %03d (%s)", b, gm_block_kind_name(blk->kind));
            /* A file's bad shapes are a bad file; a caller's are a shape error. */
            return fail(err, code == GM_EFORMAT ? code : e.code, file, ctx, "%s", e.msg);
        }
        gm_shape os[GM_BLOCK_MAX_OPS];
        gm_block_shapes(blk, bin, os);
        for (int i = 0; i < blk->nops; i++) {
            if (!shape_ok(os[i])) {
                char octx[96];
                op_ctx(octx, sizeof octx, b, i, &blk->ops[i]);
                return fail(err, code, file, octx, "output %dx%dx%d is too large", os[i].c, os[i].h, os[i].w);
            }
            ds_spec d[MAX_DATASETS];
            int nd = op_datasets(&blk->ops[i], d);
            for (int j = 0; j < nd; j++) {
                if (d[j].buffer) nbuf = add_sat(nbuf, ds_numel(&d[j]));
                else npar = add_sat(npar, ds_numel(&d[j]));
            }
        }
    }
    if (npar != (uint64_t)m->nparams || nbuf != (uint64_t)m->nbuffers)
        return fail(err, code, file, "", "nparams %zu and nbuffers %zu, but the blocks hold %llu and %llu",
                    m->nparams, m->nbuffers, (unsigned long long)npar, (unsigned long long)nbuf);
    if (m->ntasks < 1 || m->ntasks > GM_MF_MAX_TASKS)
        return fail(err, code, file, "", "%d tasks (1 to %d expected)", m->ntasks, GM_MF_MAX_TASKS);
    for (int k = 0; k < m->ntasks; k++) {
        const gm_mf_task *t = &m->tasks[k];
        snprintf(ctx, sizeof ctx, "task %d (%.64s)", k, t->name);
        if (t->name[0] == '\0' || !memchr(t->name, '\0', sizeof t->name))
            return fail(err, code, file, ctx, "the name is empty or not terminated");
        if (!memchr(t->metric, '\0', sizeof t->metric) || !memchr(t->dataset, '\0', sizeof t->dataset))
            return fail(err, code, file, ctx, "metric or dataset is not terminated");
        for (int j = 0; j < k; j++)
            if (strcmp(m->tasks[j].name, t->name) == 0)
                return fail(err, code, file, ctx, "the name is used by task %d too", j);
        if (t->head < 0 || t->head >= m->nblocks)
            return fail(err, code, file, ctx, "head %d is not a block (0 to %d)", t->head, m->nblocks - 1);
        for (int b = t->head + 1; b < m->nblocks; b++)
            if (m->parent[b] == t->head)
                return fail(err, code, file, ctx, "head block %03d is not a leaf (block %03d reads it)", t->head, b);
        for (int j = 0; j < k; j++)
            if (m->tasks[j].head == t->head)
                return fail(err, code, file, ctx, "head block %03d is task %d's head too", t->head, j);
        size_t out = gm_shape_numel(shapes[t->head]);
        if (t->classes < 1 || (size_t)t->classes != out)
            return fail(err, code, file, ctx, "%d classes, but head block %03d outputs %zu values", t->classes,
                        t->head, out);
        double acc[2] = {t->val_accuracy, t->test_accuracy};
        for (int j = 0; j < 2; j++)
            if (!isnan(acc[j]) && !(acc[j] >= 0.0 && acc[j] <= 1.0))
                return fail(err, code, file, ctx, "%s accuracy %g is neither NaN nor in [0, 1]", j ? "test" : "val",
                            acc[j]);
    }
    return GM_OK;
}

/* ---- memory ------------------------------------------------------------------ */

void gm_mfile_free(gm_mfile *m)
{
    if (!m) return;
    free(m->blocks);
    free(m->parent);
    free(m->params);
    free(m->buffers);
    memset(m, 0, sizeof *m);
}

gm_net_desc gm_mfile_desc(const gm_mfile *m)
{
    return (gm_net_desc){.input = m->input, .nblocks = m->nblocks, .blocks = m->blocks, .parent = m->parent};
}

int gm_mfile_task_index(const gm_mfile *m, const char *name)
{
    for (int k = 0; k < m->ntasks; k++)
        if (strcmp(m->tasks[k].name, name) == 0) return k;
    return -1;
}

/* Zeroed arrays for the structure and weights (+1: never malloc(0)). */
static gm_status alloc_model(gm_mfile *m, gm_error *err, const char *who)
{
    m->blocks = calloc((size_t)m->nblocks, sizeof *m->blocks);
    m->parent = calloc((size_t)m->nblocks, sizeof *m->parent);
    if (!m->blocks || !m->parent)
        return gm_error_set(err, GM_ENOMEM, "%s: out of memory for %d blocks", who, m->nblocks);
    m->params = calloc(m->nparams + 1, sizeof(float));
    m->buffers = calloc(m->nbuffers + 1, sizeof(float));
    if (!m->params || !m->buffers)
        return gm_error_set(err, GM_ENOMEM, "%s: out of memory for %zu parameters and %zu buffers", who,
                            m->nparams, m->nbuffers);
    return GM_OK;
}

/* ---- net <-> model -------------------------------------------------------------- */

gm_status gm_mfile_from_net(gm_mfile *m, gm_net *net, gm_error *err)
{
    memset(m, 0, sizeof *m);
    int nb = gm_net_nblocks(net), nout = gm_net_noutputs(net);
    if (nb < 1) return gm_error_set(err, GM_EINVAL, "model from net: the net has no blocks");
    if (nout > GM_MF_MAX_TASKS)
        return gm_error_set(err, GM_EINVAL, "model from net: %d outputs, but a model file holds at most %d tasks",
                            nout, GM_MF_MAX_TASKS);
    gm_shape in = gm_net_block_input_shape(net, 0); /* block 0 always reads the net input */
    if (in.c > GM_MF_MAX_CHANNELS)
        return gm_error_set(err, GM_EINVAL, "model from net: %d input channels, a model file holds at most %d",
                            in.c, GM_MF_MAX_CHANNELS);
    m->input = in;
    m->nblocks = nb;
    m->nparams = gm_net_nparams(net);
    m->nbuffers = gm_net_nbuffers(net);
    gm_status st = alloc_model(m, err, "model from net");
    if (st != GM_OK) {
        gm_mfile_free(m);
        return st;
    }
    for (int b = 0; b < nb; b++) {
        m->blocks[b] = *gm_net_block(net, b);
        m->parent[b] = gm_net_block_parent(net, b);
    }
    for (int c = 0; c < in.c; c++) {
        m->mean[c] = 0.0f;
        m->std[c] = 1.0f;
    }
    gm_backend *be = gm_net_backend(net);
    be->to_host(be, m->params, gm_net_params(net), sizeof(float) * m->nparams);
    be->to_host(be, m->buffers, gm_net_buffers(net), sizeof(float) * m->nbuffers);
    m->ntasks = nout;
    for (int k = 0; k < nout; k++) {
        gm_mf_task *t = &m->tasks[k];
        snprintf(t->name, sizeof t->name, "task%d", k);
        t->classes = (int)gm_shape_numel(gm_net_output_shape(net, k));
        snprintf(t->metric, sizeof t->metric, "accuracy");
        t->head = gm_net_output_block(net, k);
        t->val_accuracy = NAN;
        t->test_accuracy = NAN;
    }
    return GM_OK;
}

gm_status gm_mfile_to_net(const gm_mfile *m, gm_net *net, gm_error *err)
{
    static const char who[] = "model to net";
    if (gm_net_nblocks(net) != m->nblocks)
        return gm_error_set(err, GM_EINVAL, "%s: the model has %d blocks, the net %d", who, m->nblocks,
                            gm_net_nblocks(net));
    gm_shape a = m->input, b = gm_net_block_input_shape(net, 0);
    if (a.c != b.c || a.h != b.h || a.w != b.w)
        return gm_error_set(err, GM_ESHAPE, "%s: the model's input is %dx%dx%d, the net's %dx%dx%d", who, a.c, a.h,
                            a.w, b.c, b.h, b.w);
    for (int k = 0; k < m->nblocks; k++) {
        const gm_block *x = &m->blocks[k], *y = gm_net_block(net, k);
        if (m->parent[k] != gm_net_block_parent(net, k))
            return gm_error_set(err, GM_EINVAL, "%s: block %03d reads block %d in the model, %d in the net", who, k,
                                m->parent[k], gm_net_block_parent(net, k));
        if (x->kind != y->kind || x->nops != y->nops)
            return gm_error_set(err, GM_EINVAL, "%s: block %03d is %s with %d ops in the model, %s with %d in the net",
                                who, k, gm_block_kind_name(x->kind), x->nops, gm_block_kind_name(y->kind), y->nops);
        for (int i = 0; i < x->nops; i++) {
            int wired = x->src[i][0] == y->src[i][0] &&
                        (x->ops[i].kind != GM_OP_ADD || x->src[i][1] == y->src[i][1]);
            if (!op_equal(&x->ops[i], &y->ops[i]) || !wired)
                return gm_error_set(err, GM_EINVAL,
                                    "%s: block %03d op%02d differs (%s in the model, %s in the net, or its "
                                    "hyper-parameters or inputs)",
                                    who, k, i, gm_op_name(x->ops[i].kind), gm_op_name(y->ops[i].kind));
        }
    }
    if (gm_net_nparams(net) != m->nparams || gm_net_nbuffers(net) != m->nbuffers)
        return gm_error_set(err, GM_EINVAL, "%s: %zu parameters and %zu buffers in the model, %zu and %zu in the net",
                            who, m->nparams, m->nbuffers, gm_net_nparams(net), gm_net_nbuffers(net));
    gm_backend *be = gm_net_backend(net);
    be->to_device(be, gm_net_params(net), m->params, sizeof(float) * m->nparams);
    be->to_device(be, gm_net_buffers(net), m->buffers, sizeof(float) * m->nbuffers);
    return GM_OK;
}

/* ---- writing -------------------------------------------------------------------- */

static gm_status write_task(hid_t tasks, int k, const gm_mf_task *t, const char *file, gm_error *err)
{
    char name[16], ctx[32];
    snprintf(name, sizeof name, "%d", k);
    snprintf(ctx, sizeof ctx, "task %d", k);
    hid_t g;
    gm_error e;
    if (gm_h5_group_create(tasks, name, &g, &e) != GM_OK) return wrap(err, &e, file, ctx);
    gm_status st = gm_h5_attr_write_str(g, "name", t->name, &e);
    if (st == GM_OK) st = gm_h5_attr_write_int(g, "classes", t->classes, &e);
    if (st == GM_OK) st = gm_h5_attr_write_str(g, "metric", t->metric, &e);
    if (st == GM_OK) st = gm_h5_attr_write_int(g, "head", t->head, &e);
    if (st == GM_OK) st = gm_h5_attr_write_str(g, "dataset", t->dataset, &e);
    if (st == GM_OK) st = gm_h5_attr_write_float(g, "val_accuracy", t->val_accuracy, &e);
    if (st == GM_OK) st = gm_h5_attr_write_float(g, "test_accuracy", t->test_accuracy, &e);
    H5Gclose(g);
    return st == GM_OK ? GM_OK : wrap(err, &e, file, ctx);
}

/* One op group; *par and *buf advance over the op's weights. */
static gm_status write_op(hid_t bg, int b, int i, const gm_block *blk, const gm_mfile *m, size_t *par, size_t *buf,
                          const char *file, gm_error *err)
{
    char name[16], ctx[96];
    gm_op op = blk->ops[i];
    snprintf(name, sizeof name, "op%02d", i);
    op_ctx(ctx, sizeof ctx, b, i, &op);
    hid_t g;
    gm_error e;
    if (gm_h5_group_create(bg, name, &g, &e) != GM_OK) return wrap(err, &e, file, ctx);
    /* An unused second input is always -1 in the file, whatever the struct holds. */
    long long inputs[2] = {blk->src[i][0], op.kind == GM_OP_ADD ? blk->src[i][1] : -1};
    gm_status st = gm_h5_attr_write_str(g, "kind", gm_op_name(op.kind), &e);
    if (st == GM_OK) st = gm_h5_attr_write_ints(g, "inputs", inputs, 2, &e);
    int_field fi[MAX_INT_FIELDS];
    float_field ff[MAX_FLOAT_FIELDS];
    int ni = op_int_fields(&op, fi), nf = op_float_fields(&op, ff);
    for (int j = 0; st == GM_OK && j < ni; j++) st = gm_h5_attr_write_int(g, fi[j].name, *fi[j].v, &e);
    for (int j = 0; st == GM_OK && j < nf; j++) st = gm_h5_attr_write_float(g, ff[j].name, *ff[j].v, &e);
    ds_spec d[MAX_DATASETS];
    int nd = op_datasets(&op, d);
    for (int j = 0; st == GM_OK && j < nd; j++) {
        size_t *off = d[j].buffer ? buf : par;
        const float *src = (d[j].buffer ? m->buffers : m->params) + *off;
        st = gm_h5_write(g, d[j].name, H5T_NATIVE_FLOAT, d[j].rank, d[j].dims, src, &e);
        *off += (size_t)ds_numel(&d[j]);
    }
    H5Gclose(g);
    return st == GM_OK ? GM_OK : wrap(err, &e, file, ctx);
}

static gm_status write_block(hid_t blocks, int b, const gm_mfile *m, size_t *par, size_t *buf, const char *file,
                             gm_error *err)
{
    char name[16], ctx[32];
    const gm_block *blk = &m->blocks[b];
    snprintf(name, sizeof name, "%03d", b);
    block_ctx(ctx, sizeof ctx, b);
    hid_t g;
    gm_error e;
    if (gm_h5_group_create(blocks, name, &g, &e) != GM_OK) return wrap(err, &e, file, ctx);
    gm_status st = gm_h5_attr_write_str(g, "kind", gm_block_kind_name(blk->kind), &e);
    if (st == GM_OK) st = gm_h5_attr_write_int(g, "parent", m->parent[b], &e);
    if (st == GM_OK) st = gm_h5_attr_write_int(g, "model_id", blk->model_id, &e);
    if (st == GM_OK) st = gm_h5_attr_write_int(g, "layer_id", blk->layer_id, &e);
    if (st == GM_OK) st = gm_h5_attr_write_int(g, "nops", blk->nops, &e);
    if (st != GM_OK) {
        H5Gclose(g);
        return wrap(err, &e, file, ctx);
    }
    for (int i = 0; st == GM_OK && i < blk->nops; i++) st = write_op(g, b, i, blk, m, par, buf, file, err);
    H5Gclose(g);
    return st;
}

gm_status gm_mfile_write(hid_t loc, const gm_mfile *m, gm_error *err)
{
    char file[1024];
    gm_h5_filename(loc, file, sizeof file);
    /* validate() rejects more than MAX_BLOCKS before it indexes shapes. */
    int n = m->nblocks < 1 ? 1 : m->nblocks > MAX_BLOCKS ? MAX_BLOCKS : m->nblocks;
    gm_shape *shapes = malloc(sizeof(gm_shape) * (size_t)n);
    if (!shapes) return gm_error_set(err, GM_ENOMEM, "%s: out of memory", file);
    /* Refuse what the reader would refuse: every file written can be loaded back. */
    gm_status st = validate(m, shapes, GM_EINVAL, file, err);
    free(shapes);
    if (st != GM_OK) return st;
    if (!memchr(m->arch, '\0', sizeof m->arch))
        return fail(err, GM_EINVAL, file, "", "arch is not a terminated string");

    gm_error e;
    long long input[3] = {m->input.c, m->input.h, m->input.w};
    double mean[GM_MF_MAX_CHANNELS], sd[GM_MF_MAX_CHANNELS];
    for (int c = 0; c < m->input.c; c++) {
        mean[c] = m->mean[c];
        sd[c] = m->std[c];
    }
    st = gm_h5_attr_write_str(loc, "format", FORMAT_NAME, &e);
    if (st == GM_OK) st = gm_h5_attr_write_int(loc, "version", GM_MF_VERSION, &e);
    if (st == GM_OK) st = gm_h5_attr_write_str(loc, "arch", m->arch, &e);
    if (st == GM_OK) st = gm_h5_attr_write_ints(loc, "input", input, 3, &e);
    if (st == GM_OK) st = gm_h5_attr_write_floats(loc, "mean", mean, m->input.c, &e);
    if (st == GM_OK) st = gm_h5_attr_write_floats(loc, "std", sd, m->input.c, &e);
    if (st == GM_OK) st = gm_h5_attr_write_int(loc, "ntasks", m->ntasks, &e);
    if (st == GM_OK) st = gm_h5_attr_write_int(loc, "nblocks", m->nblocks, &e);
    if (st == GM_OK) st = gm_h5_attr_write_int(loc, "nparams", (long long)m->nparams, &e);
    if (st == GM_OK) st = gm_h5_attr_write_int(loc, "nbuffers", (long long)m->nbuffers, &e);
    if (st != GM_OK) return wrap(err, &e, file, "");

    hid_t g;
    if (gm_h5_group_create(loc, "tasks", &g, &e) != GM_OK) return wrap(err, &e, file, "");
    for (int k = 0; st == GM_OK && k < m->ntasks; k++) st = write_task(g, k, &m->tasks[k], file, err);
    H5Gclose(g);
    if (st != GM_OK) return st;

    if (gm_h5_group_create(loc, "blocks", &g, &e) != GM_OK) return wrap(err, &e, file, "");
    size_t par = 0, buf = 0;
    for (int b = 0; st == GM_OK && b < m->nblocks; b++) st = write_block(g, b, m, &par, &buf, file, err);
    H5Gclose(g);
    return st;
}

/* ---- reading -------------------------------------------------------------------- */

static gm_status read_int_in(hid_t obj, const char *name, long long lo, long long hi, long long *v,
                             const char *file, const char *ctx, gm_error *err)
{
    gm_error e;
    if (gm_h5_attr_read_int(obj, name, v, &e) != GM_OK) return wrap(err, &e, file, ctx);
    if (*v < lo || *v > hi)
        return fail(err, GM_EFORMAT, file, ctx, "attribute \"%s\" is %lld, outside [%lld, %lld]", name, *v, lo, hi);
    return GM_OK;
}

static gm_status read_int(hid_t obj, const char *name, long long lo, long long hi, int *v, const char *file,
                          const char *ctx, gm_error *err)
{
    long long x;
    gm_status st = read_int_in(obj, name, lo, hi, &x, file, ctx, err);
    if (st == GM_OK) *v = (int)x;
    return st;
}

/* A group's number of links (children), or -1. */
static long nlinks(hid_t g)
{
    H5G_info_t info;
    return H5Gget_info(g, &info) < 0 ? -1 : (long)info.nlinks;
}

/* Format name first, then version: a foreign or future file is named as such, not as damaged. */
static gm_status read_header(hid_t loc, gm_mfile *m, const char *file, gm_error *err)
{
    char fmt[256];
    gm_error e;
    if (H5Aexists(loc, "format") <= 0)
        return fail(err, GM_EFORMAT, file, "", "not a gmorph model file (format is missing)");
    if (gm_h5_attr_read_str(loc, "format", fmt, sizeof fmt, &e) != GM_OK)
        return fail(err, GM_EFORMAT, file, "", "not a gmorph model file (format is unreadable: %s)", e.msg);
    if (strcmp(fmt, FORMAT_NAME) != 0)
        return fail(err, GM_EFORMAT, file, "", "not a gmorph model file (format is \"%s\", expected \"%s\")", fmt,
                    FORMAT_NAME);
    long long version;
    if (gm_h5_attr_read_int(loc, "version", &version, &e) != GM_OK) return wrap(err, &e, file, "");
    if (version > GM_MF_VERSION)
        return fail(err, GM_EFORMAT, file, "",
                    "written by a newer gmorph (model format version %lld; this build reads %d)", version,
                    GM_MF_VERSION);
    if (version < GM_MF_VERSION)
        return fail(err, GM_EFORMAT, file, "",
                    "written by an older gmorph (model format version %lld; this build reads %d)", version,
                    GM_MF_VERSION);
    long long input[3], n;
    if (gm_h5_attr_read_str(loc, "arch", m->arch, sizeof m->arch, &e) != GM_OK) return wrap(err, &e, file, "");
    if (gm_h5_attr_read_ints(loc, "input", input, 3, &e) != GM_OK) return wrap(err, &e, file, "");
    if (input[0] < 1 || input[0] > GM_MF_MAX_CHANNELS || input[1] < 1 || input[1] > MAX_INPUT_DIM || input[2] < 1 ||
        input[2] > MAX_INPUT_DIM)
        return fail(err, GM_EFORMAT, file, "", "input shape %lldx%lldx%lld is not valid", input[0], input[1],
                    input[2]);
    m->input = (gm_shape){(int)input[0], (int)input[1], (int)input[2]};
    double mean[GM_MF_MAX_CHANNELS], sd[GM_MF_MAX_CHANNELS];
    if (gm_h5_attr_read_floats(loc, "mean", mean, m->input.c, &e) != GM_OK ||
        gm_h5_attr_read_floats(loc, "std", sd, m->input.c, &e) != GM_OK)
        return wrap(err, &e, file, "");
    for (int c = 0; c < m->input.c; c++) {
        /* Out-of-range doubles would make the float conversion undefined. */
        if (!(fabs(mean[c]) <= FLT_MAX && fabs(sd[c]) <= FLT_MAX))
            return fail(err, GM_EFORMAT, file, "", "channel %d: mean %g or std %g is not a finite float", c,
                        mean[c], sd[c]);
        m->mean[c] = (float)mean[c];
        m->std[c] = (float)sd[c];
    }
    gm_status st = read_int(loc, "ntasks", 1, GM_MF_MAX_TASKS, &m->ntasks, file, "", err);
    if (st == GM_OK) st = read_int(loc, "nblocks", 1, MAX_BLOCKS, &m->nblocks, file, "", err);
    if (st == GM_OK) st = read_int_in(loc, "nparams", 0, LLONG_MAX, &n, file, "", err);
    if (st == GM_OK && (unsigned long long)n > SIZE_MAX)
        st = fail(err, GM_EFORMAT, file, "", "nparams %lld does not fit in memory", n);
    if (st == GM_OK) m->nparams = (size_t)n;
    if (st == GM_OK) st = read_int_in(loc, "nbuffers", 0, LLONG_MAX, &n, file, "", err);
    if (st == GM_OK && (unsigned long long)n > SIZE_MAX)
        st = fail(err, GM_EFORMAT, file, "", "nbuffers %lld does not fit in memory", n);
    if (st == GM_OK) m->nbuffers = (size_t)n;
    return st;
}

static gm_status read_task(hid_t tasks, int k, gm_mf_task *t, const char *file, gm_error *err)
{
    char name[16], ctx[32];
    snprintf(name, sizeof name, "%d", k);
    snprintf(ctx, sizeof ctx, "task %d", k);
    hid_t g;
    gm_error e;
    if (gm_h5_group_open(tasks, name, &g, &e) != GM_OK) return wrap(err, &e, file, ctx);
    gm_status st = gm_h5_attr_read_str(g, "name", t->name, sizeof t->name, &e);
    if (st == GM_OK) st = gm_h5_attr_read_str(g, "metric", t->metric, sizeof t->metric, &e);
    if (st == GM_OK) st = gm_h5_attr_read_str(g, "dataset", t->dataset, sizeof t->dataset, &e);
    if (st == GM_OK) st = gm_h5_attr_read_float(g, "val_accuracy", &t->val_accuracy, &e);
    if (st == GM_OK) st = gm_h5_attr_read_float(g, "test_accuracy", &t->test_accuracy, &e);
    if (st != GM_OK) st = wrap(err, &e, file, ctx);
    if (st == GM_OK) st = read_int(g, "classes", 1, INT_MAX, &t->classes, file, ctx, err);
    if (st == GM_OK) st = read_int(g, "head", 0, MAX_BLOCKS, &t->head, file, ctx, err);
    H5Gclose(g);
    return st;
}

static gm_status read_op(hid_t bg, int b, int i, gm_block *blk, const char *file, gm_error *err)
{
    char name[16], ctx[96], kind[64];
    snprintf(name, sizeof name, "op%02d", i);
    snprintf(ctx, sizeof ctx, "block %03d op%02d", b, i);
    hid_t g;
    gm_error e;
    if (gm_h5_group_open(bg, name, &g, &e) != GM_OK) return wrap(err, &e, file, ctx);
    gm_status st = GM_OK;
    int k = -1;
    if (gm_h5_attr_read_str(g, "kind", kind, sizeof kind, &e) != GM_OK) st = wrap(err, &e, file, ctx);
    else if ((k = parse_op_kind(kind)) < 0)
        st = fail(err, GM_EFORMAT, file, ctx, "unknown op kind \"%s\"", kind);
    gm_op op = {.kind = (gm_op_kind)(k < 0 ? 0 : k)};
    if (st == GM_OK) op_ctx(ctx, sizeof ctx, b, i, &op);
    long long inputs[2] = {0, 0};
    if (st == GM_OK && gm_h5_attr_read_ints(g, "inputs", inputs, 2, &e) != GM_OK) st = wrap(err, &e, file, ctx);
    int_field fi[MAX_INT_FIELDS];
    float_field ff[MAX_FLOAT_FIELDS];
    int ni = op_int_fields(&op, fi), nf = op_float_fields(&op, ff);
    for (int j = 0; st == GM_OK && j < ni; j++) st = read_int(g, fi[j].name, 0, INT_MAX, fi[j].v, file, ctx, err);
    for (int j = 0; st == GM_OK && j < nf; j++) {
        double v;
        if (gm_h5_attr_read_float(g, ff[j].name, &v, &e) != GM_OK) st = wrap(err, &e, file, ctx);
        else if (!(fabs(v) <= FLT_MAX))
            st = fail(err, GM_EFORMAT, file, ctx, "attribute \"%s\" is %g, not a finite float", ff[j].name, v);
        else *ff[j].v = (float)v;
    }
    H5Gclose(g);
    if (st != GM_OK) return st;
    if (inputs[0] < -1 || inputs[0] >= i || inputs[1] < -1 || inputs[1] >= i ||
        (op.kind != GM_OP_ADD && inputs[1] != -1))
        return fail(err, GM_EFORMAT, file, ctx, "inputs (%lld, %lld) are not -1 or earlier ops of the block%s",
                    inputs[0], inputs[1], op.kind != GM_OP_ADD && inputs[1] != -1 ? " (the second must be -1)" : "");
    /* gm_block_push validates the wiring the same way the builders' blocks were. */
    if (gm_block_push(blk, op, (int)inputs[0], (int)inputs[1], &e) != GM_OK)
        return fail(err, GM_EFORMAT, file, ctx, "%s", e.msg);
    return GM_OK;
}

static gm_status read_block(hid_t blocks, int b, gm_mfile *m, const char *file, gm_error *err)
{
    char name[16], ctx[32], kind[64];
    snprintf(name, sizeof name, "%03d", b);
    block_ctx(ctx, sizeof ctx, b);
    hid_t g;
    gm_error e;
    if (gm_h5_group_open(blocks, name, &g, &e) != GM_OK) return wrap(err, &e, file, ctx);
    gm_status st = GM_OK;
    int k = -1, nops = 0, model_id = 0, layer_id = 0;
    if (gm_h5_attr_read_str(g, "kind", kind, sizeof kind, &e) != GM_OK) st = wrap(err, &e, file, ctx);
    else if ((k = parse_block_kind(kind)) < 0)
        st = fail(err, GM_EFORMAT, file, ctx, "unknown block kind \"%s\"", kind);
    if (st == GM_OK) st = read_int(g, "parent", -1, b - 1, &m->parent[b], file, ctx, err);
    if (st == GM_OK) st = read_int(g, "model_id", INT_MIN, INT_MAX, &model_id, file, ctx, err);
    if (st == GM_OK) st = read_int(g, "layer_id", INT_MIN, INT_MAX, &layer_id, file, ctx, err);
    if (st == GM_OK) st = read_int(g, "nops", 1, GM_BLOCK_MAX_OPS, &nops, file, ctx, err);
    if (st == GM_OK && nlinks(g) != nops)
        st = fail(err, GM_EFORMAT, file, ctx, "holds %ld groups, but nops is %d", nlinks(g), nops);
    if (st == GM_OK) {
        gm_block *blk = &m->blocks[b];
        *blk = gm_block_empty((gm_block_kind)k);
        blk->model_id = model_id;
        blk->layer_id = layer_id;
        for (int i = 0; st == GM_OK && i < nops; i++) st = read_op(g, b, i, blk, file, err);
    }
    H5Gclose(g);
    return st;
}

/* Every op's datasets into the flat arrays, shape-checked, then checked finite. */
static gm_status read_weights(hid_t blocks, gm_mfile *m, const char *file, gm_error *err)
{
    size_t par = 0, buf = 0;
    for (int b = 0; b < m->nblocks; b++) {
        const gm_block *blk = &m->blocks[b];
        for (int i = 0; i < blk->nops; i++) {
            ds_spec d[MAX_DATASETS];
            int nd = op_datasets(&blk->ops[i], d);
            if (nd == 0) continue;
            char path[32], ctx[96];
            snprintf(path, sizeof path, "%03d/op%02d", b, i);
            op_ctx(ctx, sizeof ctx, b, i, &blk->ops[i]);
            hid_t g;
            gm_error e;
            if (gm_h5_group_open(blocks, path, &g, &e) != GM_OK) return wrap(err, &e, file, ctx);
            gm_status st = GM_OK;
            for (int j = 0; st == GM_OK && j < nd; j++) {
                size_t *off = d[j].buffer ? &buf : &par;
                float *dst = (d[j].buffer ? m->buffers : m->params) + *off;
                size_t n = (size_t)ds_numel(&d[j]); /* validate() matched the totals: no overflow */
                if (gm_h5_read(g, d[j].name, H5T_NATIVE_FLOAT, d[j].rank, d[j].dims, dst, &e) != GM_OK) {
                    st = wrap(err, &e, file, ctx);
                    break;
                }
                for (size_t x = 0; x < n && st == GM_OK; x++) {
                    if (!isfinite(dst[x]))
                        st = fail(err, GM_ENUMERIC, file, ctx, "dataset \"%s\" holds %s at index %zu", d[j].name,
                                  isnan(dst[x]) ? "NaN" : "an infinity", x);
                    else if (d[j].buffer && strcmp(d[j].name, "running_var") == 0 && dst[x] < 0.0f)
                        st = fail(err, GM_EFORMAT, file, ctx, "dataset \"%s\" holds a negative variance at index %zu",
                                  d[j].name, x);
                }
                *off += n;
            }
            H5Gclose(g);
            if (st != GM_OK) return st;
        }
    }
    return GM_OK;
}

static gm_status read_all(hid_t loc, gm_mfile *m, const char *file, gm_error *err)
{
    gm_status st = read_header(loc, m, file, err);
    if (st != GM_OK) return st;
    gm_error e;
    hid_t g;
    if (gm_h5_group_open(loc, "tasks", &g, &e) != GM_OK) return wrap(err, &e, file, "");
    if (nlinks(g) != m->ntasks) st = fail(err, GM_EFORMAT, file, "", "tasks holds %ld groups, but ntasks is %d",
                                          nlinks(g), m->ntasks);
    for (int k = 0; st == GM_OK && k < m->ntasks; k++) st = read_task(g, k, &m->tasks[k], file, err);
    H5Gclose(g);
    if (st != GM_OK) return st;

    /* Structure first: its totals must match before anything is sized from them. */
    m->blocks = calloc((size_t)m->nblocks, sizeof *m->blocks);
    m->parent = calloc((size_t)m->nblocks, sizeof *m->parent);
    gm_shape *shapes = calloc((size_t)m->nblocks, sizeof *shapes);
    if (!m->blocks || !m->parent || !shapes) {
        free(shapes);
        return gm_error_set(err, GM_ENOMEM, "%s: out of memory for %d blocks", file, m->nblocks);
    }
    if (gm_h5_group_open(loc, "blocks", &g, &e) != GM_OK) {
        free(shapes);
        return wrap(err, &e, file, "");
    }
    if (nlinks(g) != m->nblocks) st = fail(err, GM_EFORMAT, file, "", "blocks holds %ld groups, but nblocks is %d",
                                           nlinks(g), m->nblocks);
    for (int b = 0; st == GM_OK && b < m->nblocks; b++) st = read_block(g, b, m, file, err);
    if (st == GM_OK) st = validate(m, shapes, GM_EFORMAT, file, err);
    free(shapes);
    if (st == GM_OK) {
        /* calloc refuses a size that overflows; +1: never calloc(0). */
        m->params = calloc(m->nparams + 1, sizeof(float));
        m->buffers = calloc(m->nbuffers + 1, sizeof(float));
        if (!m->params || !m->buffers)
            st = fail(err, GM_ENOMEM, file, "", "out of memory for %zu parameters and %zu buffers", m->nparams,
                      m->nbuffers);
    }
    if (st == GM_OK) st = read_weights(g, m, file, err);
    H5Gclose(g);
    return st;
}

gm_status gm_mfile_read(hid_t loc, gm_mfile *m, gm_error *err)
{
    memset(m, 0, sizeof *m);
    char file[1024];
    gm_h5_filename(loc, file, sizeof file);
    gm_status st = read_all(loc, m, file, err);
    if (st != GM_OK) gm_mfile_free(m); /* a failed read leaves nothing to free */
    return st;
}

/* ---- whole files ---------------------------------------------------------------- */

gm_status gm_mfile_save(const char *path, const gm_mfile *m, gm_error *err)
{
    hid_t f;
    gm_status st = gm_h5_create(&f, path, err);
    if (st != GM_OK) return st;
    st = gm_mfile_write(f, m, err);
    if (st != GM_OK) {
        gm_h5_discard(f, path);
        return st;
    }
    return gm_h5_commit(f, path, err);
}

gm_status gm_mfile_load(const char *path, gm_mfile *m, gm_error *err)
{
    memset(m, 0, sizeof *m);
    hid_t f;
    gm_status st = gm_h5_open(&f, path, 0, err);
    if (st != GM_OK) return st;
    st = gm_mfile_read(f, m, err);
    gm_h5_close_file(f);
    return st;
}

gm_status gm_mfile_to_bytes(const gm_mfile *m, void **buf, size_t *len, gm_error *err)
{
    *buf = NULL;
    *len = 0;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_core(fapl, 1 << 20, 0); /* memory only, never written to disk */
    hid_t f = H5Fcreate("gmorph-model-image", H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) return gm_error_set(err, GM_EIO, "model image: cannot create an in-memory HDF5 file");
    gm_status st = gm_mfile_write(f, m, err);
    ssize_t n = st == GM_OK && H5Fflush(f, H5F_SCOPE_GLOBAL) >= 0 ? H5Fget_file_image(f, NULL, 0) : -1;
    if (st == GM_OK && n <= 0) st = gm_error_set(err, GM_EIO, "model image: cannot take the file image");
    if (st == GM_OK && !(*buf = malloc((size_t)n))) st = gm_error_set(err, GM_ENOMEM, "model image: out of memory");
    if (st == GM_OK && H5Fget_file_image(f, *buf, (size_t)n) != n)
        st = gm_error_set(err, GM_EIO, "model image: cannot copy the file image");
    H5Fclose(f);
    if (st == GM_OK) *len = (size_t)n;
    else {
        free(*buf);
        *buf = NULL;
    }
    return st;
}

gm_status gm_mfile_from_bytes(gm_mfile *m, const void *buf, size_t len, gm_error *err)
{
    memset(m, 0, sizeof *m);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_core(fapl, 1 << 20, 0);
    /* HDF5 copies the image (no flags), so buf stays the caller's. */
    hid_t f = H5Pset_file_image(fapl, (void *)buf, len) >= 0
                  ? H5Fopen("gmorph-model-image", H5F_ACC_RDONLY, fapl) : H5I_INVALID_HID;
    H5Pclose(fapl);
    if (f < 0) return gm_error_set(err, GM_EFORMAT, "model image of %zu bytes: not an HDF5 model file", len);
    gm_status st = gm_mfile_read(f, m, err);
    H5Fclose(f);
    return st;
}

gm_status gm_mfile_copy(gm_mfile *dst, const gm_mfile *src, gm_error *err)
{
    *dst = *src;
    dst->blocks = malloc(sizeof(gm_block) * (size_t)(src->nblocks ? src->nblocks : 1));
    dst->parent = malloc(sizeof(int) * (size_t)(src->nblocks ? src->nblocks : 1));
    dst->params = malloc(sizeof(float) * (src->nparams ? src->nparams : 1));
    dst->buffers = malloc(sizeof(float) * (src->nbuffers ? src->nbuffers : 1));
    if (!dst->blocks || !dst->parent || !dst->params || !dst->buffers) {
        gm_mfile_free(dst);
        return gm_error_set(err, GM_ENOMEM, "model copy: out of memory");
    }
    memcpy(dst->blocks, src->blocks, sizeof(gm_block) * (size_t)src->nblocks);
    memcpy(dst->parent, src->parent, sizeof(int) * (size_t)src->nblocks);
    memcpy(dst->params, src->params, sizeof(float) * src->nparams);
    memcpy(dst->buffers, src->buffers, sizeof(float) * src->nbuffers);
    return GM_OK;
}

void gm_mfile_block_offsets(const gm_mfile *m, int b, size_t *par, size_t *buf)
{
    *par = *buf = 0;
    for (int k = 0; k < b && k < m->nblocks; k++) {
        *par += gm_block_nparams(&m->blocks[k]);
        *buf += gm_block_nbuffers(&m->blocks[k]);
    }
}

#include "gm_block.h"

#include <string.h>

const char *gm_block_kind_name(gm_block_kind kind)
{
    switch (kind) {
    case GM_BLOCK_CONV: return "conv";
    case GM_BLOCK_POOL: return "pool";
    case GM_BLOCK_RESIDUAL: return "residual";
    case GM_BLOCK_GAP: return "gap";
    case GM_BLOCK_LINEAR: return "linear";
    case GM_BLOCK_HEAD: return "head";
    case GM_BLOCK_CUSTOM: return "custom";
    }
    return "unknown";
}

gm_block gm_block_empty(gm_block_kind kind)
{
    return (gm_block){.kind = kind, .nops = 0, .model_id = -1, .layer_id = -1};
}

gm_status gm_block_push(gm_block *b, gm_op op, int src0, int src1, gm_error *err)
{
    int i = b->nops;
    if (i >= GM_BLOCK_MAX_OPS)
        return gm_error_set(err, GM_EINVAL, "block: more than %d ops", GM_BLOCK_MAX_OPS);
    if (src0 < -1 || src0 >= i || (op.kind == GM_OP_ADD && (src1 < -1 || src1 >= i)))
        return gm_error_set(err, GM_EINVAL, "block: op %d (%s) reads an op that does not precede it",
                            i, gm_op_name(op.kind));
    b->ops[i] = op;
    b->src[i][0] = src0;
    b->src[i][1] = op.kind == GM_OP_ADD ? src1 : -1;
    b->nops = i + 1;
    return GM_OK;
}

/* Builders push at most GM_BLOCK_MAX_OPS well-wired ops, so push cannot fail here. */
static void push(gm_block *b, gm_op op, int src0, int src1) { (void)gm_block_push(b, op, src0, src1, NULL); }
static void chain(gm_block *b, gm_op op) { push(b, op, b->nops - 1, -1); }

gm_block gm_block_conv(int cin, int cout, int k, int stride, int pad, int bn, int relu)
{
    gm_block b = gm_block_empty(GM_BLOCK_CONV);
    chain(&b, gm_op_conv2d(cin, cout, k, stride, pad, !bn));
    if (bn) chain(&b, gm_op_batchnorm2d(cout));
    if (relu) chain(&b, gm_op_relu());
    return b;
}

gm_block gm_block_maxpool(int k, int stride)
{
    gm_block b = gm_block_empty(GM_BLOCK_POOL);
    chain(&b, gm_op_maxpool2d(k, stride, 0));
    return b;
}

gm_block gm_block_basic(int cin, int cout, int stride)
{
    gm_block b = gm_block_empty(GM_BLOCK_RESIDUAL);
    chain(&b, gm_op_conv2d(cin, cout, 3, stride, 1, 0)); /* 0 */
    chain(&b, gm_op_batchnorm2d(cout));                  /* 1 */
    chain(&b, gm_op_relu());                             /* 2 */
    chain(&b, gm_op_conv2d(cout, cout, 3, 1, 1, 0));     /* 3 */
    chain(&b, gm_op_batchnorm2d(cout));                  /* 4 */
    int shortcut = -1;
    if (stride != 1 || cin != cout) {
        push(&b, gm_op_conv2d(cin, cout, 1, stride, 0, 0), -1, -1); /* 5 */
        chain(&b, gm_op_batchnorm2d(cout));                         /* 6 */
        shortcut = 6;
    }
    push(&b, gm_op_add(), 4, shortcut);
    chain(&b, gm_op_relu());
    return b;
}

gm_block gm_block_gap(void)
{
    gm_block b = gm_block_empty(GM_BLOCK_GAP);
    chain(&b, gm_op_globalavgpool());
    return b;
}

static gm_block dense(gm_block_kind kind, gm_shape in, int out)
{
    gm_block b = gm_block_empty(kind);
    if (in.h != 1 || in.w != 1) chain(&b, gm_op_flatten());
    chain(&b, gm_op_linear((int)gm_shape_numel(in), out, 1));
    return b;
}

gm_block gm_block_linear(gm_shape in, int out, int relu, float dropout)
{
    gm_block b = dense(GM_BLOCK_LINEAR, in, out);
    if (relu) chain(&b, gm_op_relu());
    if (dropout > 0.0f) chain(&b, gm_op_dropout(dropout));
    return b;
}

gm_block gm_block_head(gm_shape in, int classes) { return dense(GM_BLOCK_HEAD, in, classes); }

gm_status gm_block_infer(const gm_block *b, gm_shape in, gm_shape *out, gm_error *err)
{
    if (b->nops < 1 || b->nops > GM_BLOCK_MAX_OPS)
        return gm_error_set(err, GM_EINVAL, "%s block has %d ops", gm_block_kind_name(b->kind), b->nops);
    gm_shape shapes[GM_BLOCK_MAX_OPS];
    for (int i = 0; i < b->nops; i++) {
        const gm_op *op = &b->ops[i];
        gm_shape ins[2];
        for (int j = 0; j < gm_op_ninputs(op); j++) {
            int s = b->src[i][j];
            if (s < -1 || s >= i)
                return gm_error_set(err, GM_EINVAL, "op %d (%s) reads op %d, which does not precede it",
                                    i, gm_op_name(op->kind), s);
            ins[j] = s < 0 ? in : shapes[s];
        }
        gm_error inner;
        if (gm_op_infer(op, ins, &shapes[i], &inner) != GM_OK)
            return gm_error_set(err, inner.code, "op %d (%s): %s", i, gm_op_name(op->kind), inner.msg);
    }
    *out = shapes[b->nops - 1];
    return GM_OK;
}

void gm_block_shapes(const gm_block *b, gm_shape in, gm_shape *shapes)
{
    for (int i = 0; i < b->nops; i++) {
        gm_shape ins[2];
        for (int j = 0; j < gm_op_ninputs(&b->ops[i]); j++)
            ins[j] = b->src[i][j] < 0 ? in : shapes[b->src[i][j]];
        (void)gm_op_infer(&b->ops[i], ins, &shapes[i], NULL);
    }
}

size_t gm_block_nparams(const gm_block *b)
{
    size_t n = 0;
    for (int i = 0; i < b->nops; i++) n += gm_op_nparams(&b->ops[i]);
    return n;
}

size_t gm_block_nbuffers(const gm_block *b)
{
    size_t n = 0;
    for (int i = 0; i < b->nops; i++) n += gm_op_nbuffers(&b->ops[i]);
    return n;
}

uint64_t gm_block_flops(const gm_block *b, gm_shape in)
{
    gm_shape shapes[GM_BLOCK_MAX_OPS];
    gm_block_shapes(b, in, shapes);
    uint64_t f = 0;
    for (int i = 0; i < b->nops; i++) {
        int s = b->src[i][0];
        f += gm_op_flops(&b->ops[i], s < 0 ? in : shapes[s], shapes[i]);
    }
    return f;
}

int gm_block_identity_add(const gm_block *b)
{
    for (int k = 0; k < b->nops; k++)
        if (b->ops[k].kind == GM_OP_ADD && (b->src[k][0] == -1 || b->src[k][1] == -1)) return k;
    return -1;
}

gm_status gm_block_project_shortcut(const gm_block *b, int channels, gm_block *out, int *at, gm_error *err)
{
    const int add = gm_block_identity_add(b);
    if (add < 0) return gm_error_set(err, GM_EINVAL, "block: no identity shortcut to project");
    if (b->nops >= GM_BLOCK_MAX_OPS)
        return gm_error_set(err, GM_EINVAL, "block: no room for a shortcut projection (%d ops)", b->nops);
    gm_block p = *b;
    p.nops = 0;
    /* ops before the ADD keep their indices; the ADD and those after it move down by one */
    for (int k = 0; k <= b->nops; k++) {
        if (k == add) {
            p.ops[k] = gm_op_conv2d(channels, channels, 1, 1, 0, 1);
            p.src[k][0] = -1;
            p.src[k][1] = -1;
            continue;
        }
        const int from = k < add ? k : k - 1;
        p.ops[k] = b->ops[from];
        for (int j = 0; j < 2; j++) {
            int s = b->src[from][j];
            p.src[k][j] = s >= add ? s + 1 : s;
        }
        if (from == add) p.src[k][b->src[from][0] == -1 ? 0 : 1] = add; /* the ADD reads the projection */
    }
    p.nops = b->nops + 1;
    *out = p;
    if (at) *at = add;
    return GM_OK;
}

void gm_block_project_params(const gm_block *proj, int at, const float *par, float *out)
{
    size_t before = 0, after = 0;
    for (int k = 0; k < proj->nops; k++)
        if (k != at) *(k < at ? &before : &after) += gm_op_nparams(&proj->ops[k]);
    const size_t c = (size_t)proj->ops[at].p.conv.cin, n = c * c + c; /* C x C weights, then C biases */
    memcpy(out, par, sizeof(float) * before);
    float *w = out + before;
    memset(w, 0, sizeof(float) * n);
    for (size_t i = 0; i < c; i++) w[i * c + i] = 1.0f;
    memcpy(w + n, par + before, sizeof(float) * after);
}

int gm_block_projection_of(const gm_block *proj, const gm_block *orig)
{
    gm_block p;
    int at;
    const int add = gm_block_identity_add(orig);
    if (proj->nops != orig->nops + 1 || add < 0) return -1;
    const gm_op *c = &proj->ops[add];
    if (c->kind != GM_OP_CONV2D || c->p.conv.k != 1) return -1;
    if (gm_block_project_shortcut(orig, c->p.conv.cin, &p, &at, NULL) != GM_OK) return -1;
    for (int k = 0; k < p.nops; k++) {
        if (p.ops[k].kind != proj->ops[k].kind || gm_op_nparams(&p.ops[k]) != gm_op_nparams(&proj->ops[k]) ||
            gm_op_nbuffers(&p.ops[k]) != gm_op_nbuffers(&proj->ops[k]))
            return -1;
        for (int j = 0; j < 2; j++)
            if (p.src[k][j] != proj->src[k][j]) return -1;
    }
    return at;
}

#include "gm_block.h"

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

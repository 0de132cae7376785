#include "gm_op.h"

#include <limits.h>

gm_op gm_op_conv2d(int cin, int cout, int k, int stride, int pad, int bias)
{
    gm_op op = {.kind = GM_OP_CONV2D};
    op.p.conv = (gm_conv_params){cin, cout, k, stride, pad, bias};
    return op;
}

gm_op gm_op_batchnorm2d(int c)
{
    gm_op op = {.kind = GM_OP_BATCHNORM2D};
    op.p.bn = (gm_bn_params){c, 1e-5f, 0.1f};
    return op;
}

gm_op gm_op_relu(void) { return (gm_op){.kind = GM_OP_RELU}; }

gm_op gm_op_maxpool2d(int k, int stride, int pad)
{
    gm_op op = {.kind = GM_OP_MAXPOOL2D};
    op.p.pool = (gm_pool_params){k, stride, pad};
    return op;
}

gm_op gm_op_avgpool2d(int k, int stride, int pad)
{
    gm_op op = {.kind = GM_OP_AVGPOOL2D};
    op.p.pool = (gm_pool_params){k, stride, pad};
    return op;
}

gm_op gm_op_globalavgpool(void) { return (gm_op){.kind = GM_OP_GLOBALAVGPOOL}; }

gm_op gm_op_linear(int in, int out, int bias)
{
    gm_op op = {.kind = GM_OP_LINEAR};
    op.p.linear = (gm_linear_params){in, out, bias};
    return op;
}

gm_op gm_op_flatten(void) { return (gm_op){.kind = GM_OP_FLATTEN}; }
gm_op gm_op_add(void) { return (gm_op){.kind = GM_OP_ADD}; }

gm_op gm_op_dropout(float p)
{
    gm_op op = {.kind = GM_OP_DROPOUT};
    op.p.dropout.p = p;
    return op;
}

gm_op gm_op_upsample(int factor)
{
    gm_op op = {.kind = GM_OP_UPSAMPLE};
    op.p.upsample.factor = factor;
    return op;
}

const char *gm_op_name(gm_op_kind kind)
{
    static const char *const names[GM_OP_KIND_COUNT] = {
        "conv2d", "batchnorm2d", "relu", "maxpool2d", "avgpool2d",
        "globalavgpool", "linear", "flatten", "add", "dropout", "upsample"};
    return (unsigned)kind < GM_OP_KIND_COUNT ? names[kind] : "unknown";
}

int gm_op_ninputs(const gm_op *op) { return op->kind == GM_OP_ADD ? 2 : 1; }

static int window_out(int in, int k, int stride, int pad)
{
    return (in + 2 * pad - k) / stride + 1;
}

static gm_status infer_window(const char *what, int k, int stride, int pad, gm_shape in,
                              int cout, gm_shape *out, gm_error *err)
{
    if (k < 1 || stride < 1 || pad < 0)
        return gm_error_set(err, GM_EINVAL, "%s: kernel %d, stride %d, padding %d are not valid",
                            what, k, stride, pad);
    if (in.h + 2 * pad < k || in.w + 2 * pad < k)
        return gm_error_set(err, GM_ESHAPE, "%s: kernel %d does not fit a %dx%d input with padding %d",
                            what, k, in.h, in.w, pad);
    *out = (gm_shape){cout, window_out(in.h, k, stride, pad), window_out(in.w, k, stride, pad)};
    return GM_OK;
}

gm_status gm_op_infer(const gm_op *op, const gm_shape *in, gm_shape *out, gm_error *err)
{
    const char *name = gm_op_name(op->kind);
    gm_shape x = in[0];
    if (x.c <= 0 || x.h <= 0 || x.w <= 0)
        return gm_error_set(err, GM_ESHAPE, "%s: zero-sized or negative input shape %dx%dx%d",
                            name, x.c, x.h, x.w);
    switch (op->kind) {
    case GM_OP_CONV2D: {
        const gm_conv_params *p = &op->p.conv;
        if (p->cout < 1)
            return gm_error_set(err, GM_EINVAL, "conv2d: %d output channels", p->cout);
        if (p->cin != x.c)
            return gm_error_set(err, GM_ESHAPE, "conv2d: expects %d input channels, got %d (input %dx%dx%d)",
                                p->cin, x.c, x.c, x.h, x.w);
        return infer_window(name, p->k, p->stride, p->pad, x, p->cout, out, err);
    }
    case GM_OP_BATCHNORM2D:
        if (op->p.bn.c != x.c)
            return gm_error_set(err, GM_ESHAPE, "batchnorm2d: expects %d channels, got %d", op->p.bn.c, x.c);
        *out = x;
        return GM_OK;
    case GM_OP_MAXPOOL2D:
    case GM_OP_AVGPOOL2D:
        /* A window made only of padding would have no defined maximum. */
        if (2 * op->p.pool.pad > op->p.pool.k)
            return gm_error_set(err, GM_EINVAL, "%s: padding %d is more than half the kernel %d",
                                name, op->p.pool.pad, op->p.pool.k);
        return infer_window(name, op->p.pool.k, op->p.pool.stride, op->p.pool.pad, x, x.c, out, err);
    case GM_OP_GLOBALAVGPOOL:
        *out = (gm_shape){x.c, 1, 1};
        return GM_OK;
    case GM_OP_LINEAR: {
        const gm_linear_params *p = &op->p.linear;
        if (p->out < 1)
            return gm_error_set(err, GM_EINVAL, "linear: %d output features", p->out);
        if (x.h != 1 || x.w != 1)
            return gm_error_set(err, GM_ESHAPE, "linear: input %dx%dx%d is not a vector (flatten it first)",
                                x.c, x.h, x.w);
        if (p->in != x.c)
            return gm_error_set(err, GM_ESHAPE, "linear: expects %d input features, got %d", p->in, x.c);
        *out = (gm_shape){p->out, 1, 1};
        return GM_OK;
    }
    case GM_OP_FLATTEN:
        *out = (gm_shape){(int)gm_shape_numel(x), 1, 1};
        return GM_OK;
    case GM_OP_ADD:
        if (in[1].c != x.c || in[1].h != x.h || in[1].w != x.w)
            return gm_error_set(err, GM_ESHAPE, "add: operands %dx%dx%d and %dx%dx%d differ",
                                x.c, x.h, x.w, in[1].c, in[1].h, in[1].w);
        *out = x;
        return GM_OK;
    case GM_OP_DROPOUT:
        if (!(op->p.dropout.p >= 0.0f && op->p.dropout.p < 1.0f))
            return gm_error_set(err, GM_EINVAL, "dropout: probability %g is not in [0, 1)",
                                (double)op->p.dropout.p);
        *out = x;
        return GM_OK;
    case GM_OP_RELU:
        *out = x;
        return GM_OK;
    case GM_OP_UPSAMPLE: {
        const int f = op->p.upsample.factor;
        if (f < 1 || f > 16)
            return gm_error_set(err, GM_EINVAL, "upsample: factor %d is not in 1..16", f);
        if (x.h > INT_MAX / f || x.w > INT_MAX / f)
            return gm_error_set(err, GM_ESHAPE, "upsample: a %dx%d map times %d overflows", x.h, x.w, f);
        *out = (gm_shape){x.c, x.h * f, x.w * f};
        return GM_OK;
    }
    case GM_OP_KIND_COUNT:
        break;
    }
    return gm_error_set(err, GM_EINVAL, "unknown op kind %d", (int)op->kind);
}

size_t gm_op_nparams(const gm_op *op)
{
    switch (op->kind) {
    case GM_OP_CONV2D: {
        const gm_conv_params *p = &op->p.conv;
        return (size_t)p->cout * (size_t)p->cin * (size_t)(p->k * p->k) + (p->bias ? (size_t)p->cout : 0);
    }
    case GM_OP_BATCHNORM2D: return 2 * (size_t)op->p.bn.c;
    case GM_OP_LINEAR: {
        const gm_linear_params *p = &op->p.linear;
        return (size_t)p->out * (size_t)p->in + (p->bias ? (size_t)p->out : 0);
    }
    default: return 0;
    }
}

size_t gm_op_nbuffers(const gm_op *op)
{
    return op->kind == GM_OP_BATCHNORM2D ? 2 * (size_t)op->p.bn.c : 0;
}

uint64_t gm_op_flops(const gm_op *op, gm_shape in, gm_shape out)
{
    uint64_t n_out = gm_shape_numel(out);
    switch (op->kind) {
    case GM_OP_CONV2D:
        return 2ull * n_out * (uint64_t)in.c * (uint64_t)(op->p.conv.k * op->p.conv.k);
    case GM_OP_LINEAR:
        return 2ull * (uint64_t)op->p.linear.in * (uint64_t)op->p.linear.out;
    case GM_OP_BATCHNORM2D: return 2 * n_out;
    case GM_OP_MAXPOOL2D:
    case GM_OP_AVGPOOL2D: return n_out * (uint64_t)(op->p.pool.k * op->p.pool.k);
    case GM_OP_GLOBALAVGPOOL: return gm_shape_numel(in);
    case GM_OP_FLATTEN: return 0;
    default: return n_out;
    }
}

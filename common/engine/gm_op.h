/*
 * gm_op: the description of one layer operation, independent of any backend.
 *
 * An op is a tagged value: its kind plus a per-kind parameter struct. This module
 * knows shapes, parameter counts and FLOPs; it never touches weights or memory.
 * Shapes are per sample (C, H, W); the batch dimension N belongs to the executor.
 * Vectors (Linear inputs and outputs) are (features, 1, 1).
 */
#ifndef GM_OP_H
#define GM_OP_H

#include <stddef.h>
#include <stdint.h>

#include "gm_error.h"

typedef struct {
    int c, h, w;
} gm_shape;

static inline size_t gm_shape_numel(gm_shape s) { return (size_t)s.c * (size_t)s.h * (size_t)s.w; }

typedef enum {
    GM_OP_CONV2D,
    GM_OP_BATCHNORM2D,
    GM_OP_RELU,
    GM_OP_MAXPOOL2D,
    GM_OP_AVGPOOL2D,    /* count_include_pad semantics, as PyTorch's default */
    GM_OP_GLOBALAVGPOOL,
    GM_OP_LINEAR,
    GM_OP_FLATTEN,      /* (C,H,W) -> (C*H*W,1,1); a view, moves no data */
    GM_OP_ADD,          /* two inputs of the same shape (residual connection) */
    GM_OP_DROPOUT,      /* inverted dropout; identity in eval mode */
    GM_OP_UPSAMPLE,     /* nearest neighbour by an integer factor: y[h][w] = x[h/f][w/f] */
    GM_OP_KIND_COUNT
} gm_op_kind;

typedef struct {
    int cin, cout, k, stride, pad;
    int bias; /* 1: a bias vector of cout; 0: none (before BatchNorm) */
} gm_conv_params;

typedef struct {
    int c;
    float eps, momentum; /* PyTorch semantics: running = (1-m)*running + m*batch */
} gm_bn_params;

typedef struct {
    int k, stride, pad;
} gm_pool_params;

typedef struct {
    int in, out;
    int bias;
} gm_linear_params;

typedef struct {
    float p; /* probability of zeroing, in [0, 1) */
} gm_dropout_params;

/* The factor is limited to 1..16: adapters bridge maps a few halvings apart. */
typedef struct {
    int factor;
} gm_upsample_params;

typedef struct {
    gm_op_kind kind;
    union {
        gm_conv_params conv;
        gm_bn_params bn;
        gm_pool_params pool;
        gm_linear_params linear;
        gm_dropout_params dropout;
        gm_upsample_params upsample;
    } p;
} gm_op;

/* Constructors: plain values, nothing allocated. */
gm_op gm_op_conv2d(int cin, int cout, int k, int stride, int pad, int bias);
gm_op gm_op_batchnorm2d(int c);
gm_op gm_op_relu(void);
gm_op gm_op_maxpool2d(int k, int stride, int pad);
gm_op gm_op_avgpool2d(int k, int stride, int pad);
gm_op gm_op_globalavgpool(void);
gm_op gm_op_linear(int in, int out, int bias);
gm_op gm_op_flatten(void);
gm_op gm_op_add(void);
gm_op gm_op_dropout(float p);
gm_op gm_op_upsample(int factor);

const char *gm_op_name(gm_op_kind kind);
int gm_op_ninputs(const gm_op *op); /* 2 for ADD, 1 otherwise */

/*
 * Output shape for the given input shapes (in[1] only for ADD). Returns
 * GM_ESHAPE or GM_EINVAL with a message naming the op and the disagreeing sizes.
 */
gm_status gm_op_infer(const gm_op *op, const gm_shape *in, gm_shape *out, gm_error *err);

/* Trainable parameters: weights then bias (conv, linear) or gamma then beta (BN). */
size_t gm_op_nparams(const gm_op *op);
/* Non-trained state saved with a model: BN running mean then running variance. */
size_t gm_op_nbuffers(const gm_op *op);
/*
 * Forward FLOPs for one sample: 2 per multiply-add for conv and linear, one per
 * output element read or written for the others (BN: 2, pool: k*k).
 */
uint64_t gm_op_flops(const gm_op *op, gm_shape in, gm_shape out);

#endif

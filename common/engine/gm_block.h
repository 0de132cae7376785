/*
 * gm_block: the unit the fusion search moves (common/README.md, "The model IR").
 *
 * A block is a short, fixed-capacity sequence of ops with local wiring: each op
 * reads the block's input (-1) or the output of an earlier op of the same block,
 * and the block's output is its last op's output. That covers a chain
 * (Conv+BN+ReLU) and a residual BasicBlock (two paths joined by ADD) with one
 * mechanism. A block is a plain value: copy it freely, nothing to free.
 */
#ifndef GM_BLOCK_H
#define GM_BLOCK_H

#include "gm_op.h"

enum { GM_BLOCK_MAX_OPS = 12 };

typedef enum {
    GM_BLOCK_CONV,     /* Conv (+BN) (+ReLU) */
    GM_BLOCK_POOL,     /* MaxPool or AvgPool */
    GM_BLOCK_RESIDUAL, /* BasicBlock: two 3x3 convs, identity or 1x1 shortcut */
    GM_BLOCK_GAP,      /* global average pooling */
    GM_BLOCK_LINEAR,   /* (Flatten) Linear (+ReLU) (+Dropout), a hidden layer */
    GM_BLOCK_HEAD,     /* (Flatten) Linear: a task's logits */
    GM_BLOCK_CUSTOM
} gm_block_kind;

typedef struct {
    gm_block_kind kind;
    int nops;
    gm_op ops[GM_BLOCK_MAX_OPS];
    int src[GM_BLOCK_MAX_OPS][2]; /* -1: the block input; j: output of ops[j], j < i */
    int model_id, layer_id;       /* origin: which model, which of its blocks */
} gm_block;

const char *gm_block_kind_name(gm_block_kind kind);

/* An empty block of a kind; ops are added with gm_block_push. */
gm_block gm_block_empty(gm_block_kind kind);
/* Appends op reading src0 (and src1 for ADD); GM_EINVAL when full or miswired. */
gm_status gm_block_push(gm_block *b, gm_op op, int src0, int src1, gm_error *err);

/* Builders for the standard blocks. */
gm_block gm_block_conv(int cin, int cout, int k, int stride, int pad, int bn, int relu);
gm_block gm_block_maxpool(int k, int stride);
gm_block gm_block_basic(int cin, int cout, int stride);
gm_block gm_block_gap(void);
gm_block gm_block_linear(gm_shape in, int out, int relu, float dropout);
gm_block gm_block_head(gm_shape in, int classes);

/*
 * Output shape for an input shape, checking every op and the wiring. The
 * message names the failing op by index and kind, for example
 * "op 0 (conv2d): expects 64 input channels, got 32".
 */
gm_status gm_block_infer(const gm_block *b, gm_shape in, gm_shape *out, gm_error *err);
/* Output shapes of every op (shapes[nops]) for an input shape already checked. */
void gm_block_shapes(const gm_block *b, gm_shape in, gm_shape *shapes);

size_t gm_block_nparams(const gm_block *b);
/* Non-trained state (BatchNorm running statistics) of every op. */
size_t gm_block_nbuffers(const gm_block *b);
uint64_t gm_block_flops(const gm_block *b, gm_shape in);

#endif

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

/*
 * Identity shortcuts. A residual block whose ADD reads the raw block input
 * passes that input on unchanged; when a merge makes the block read another
 * model's features, that sum is wrong by the whole difference of the two maps,
 * and no change of the block's weights can fix it. Projecting the shortcut
 * inserts a 1x1 convolution with bias (C -> C, where the input has C
 * channels) between the input and the ADD, like a stride-2 BasicBlock's
 * projection but without BatchNorm, so that identity weights (W = I, b = 0)
 * make the block compute exactly what it did (train and eval alike).
 *
 * gm_block_identity_add: the index of the ADD that reads the block input, or -1.
 * gm_block_project_shortcut: out = b with the convolution inserted just before
 *   that ADD (index *at, the ADD's old index); GM_EINVAL when b has no identity
 *   shortcut or no room for one more op, and then out and *at are untouched.
 * gm_block_project_params: the unprojected block's parameters (par) laid out
 *   for the projected block proj (out: gm_block_nparams(proj) floats), its
 *   convolution at index at set to identity. Buffers do not move (the
 *   convolution has none).
 * gm_block_projection_of: *at when proj is gm_block_project_shortcut(orig) op
 *   for op (same op kinds and parameter sizes), else -1.
 */
int gm_block_identity_add(const gm_block *b);
gm_status gm_block_project_shortcut(const gm_block *b, int channels, gm_block *out, int *at, gm_error *err);
void gm_block_project_params(const gm_block *proj, int at, const float *par, float *out);
int gm_block_projection_of(const gm_block *proj, const gm_block *orig);

size_t gm_block_nparams(const gm_block *b);
/* Non-trained state (BatchNorm running statistics) of every op. */
size_t gm_block_nbuffers(const gm_block *b);
uint64_t gm_block_flops(const gm_block *b, gm_shape in);

#endif

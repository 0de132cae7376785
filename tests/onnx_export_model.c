/*
 * Writes the model file test_onnx_export.sh exports to cover every IR op and
 * every path of the exporter: a 3x12x12 input, four tasks on a tree of custom
 * blocks (a shared trunk), with
 * - conv with and without bias, BatchNorm followed by ReLU (the executor folds it)
 *   and BatchNorm alone, on maps and on vectors;
 * - max pooling with padding, average pooling with padding (count_include_pad
 *   decides the border values), global average pooling;
 * - nearest upsampling by 3 and by 2; flatten; linear with and without bias;
 *   dropout; a residual add of two maps and an add of a vector and a 1x1 map;
 * - a 1x1 conv reading a Linear's output (a vector back to a map);
 * - heads ending in a map (GAP, no Linear), in a Linear, and in a Dropout of a
 *   block that another block reads too (the output is then an Identity);
 * - task names that must be sanitised ("colour/hue 2") or clash ("input");
 * - a leaf block no task reads (the export leaves it out).
 * Weights: PyTorch's default init from a seed; BatchNorm scales, shifts and
 * running statistics random too, so inference-mode BatchNorm is really tested.
 * Usage: onnx_export_model OUT.h5
 */
#include <stdio.h>

#include "gm_backend.h"
#include "gm_mfile.h"
#include "gm_rng.h"

enum { NBLOCKS = 9 };

/* Pushes ops onto a custom block; the first failure sticks in *st. */
static void push(gm_block *b, gm_op op, int src0, int src1, gm_status *st, gm_error *err)
{
    if (*st == GM_OK) *st = gm_block_push(b, op, src0, src1, err);
}

static gm_status build(gm_block *blk, int *parent, gm_error *err)
{
    gm_status st = GM_OK;
    for (int b = 0; b < NBLOCKS; b++) blk[b] = gm_block_empty(GM_BLOCK_CUSTOM);
    /* 0 trunk: 3x12x12 -> conv(bias) relu maxpool(3, 2, pad 1) -> 4x6x6 */
    push(&blk[0], gm_op_conv2d(3, 4, 3, 1, 1, 1), -1, -1, &st, err);
    push(&blk[0], gm_op_relu(), 0, -1, &st, err);
    push(&blk[0], gm_op_maxpool2d(3, 2, 1), 1, -1, &st, err);
    parent[0] = -1;
    /* 1 residual, 1x1 shortcut: -> 8x3x3 */
    blk[1] = gm_block_basic(4, 8, 2);
    parent[1] = 0;
    /* 2 adapter-like: upsample x3 -> 8x9x9, avgpool(3, 2, pad 1) -> 8x5x5, conv 1x1 no bias, BN alone, dropout */
    push(&blk[2], gm_op_upsample(3), -1, -1, &st, err);
    push(&blk[2], gm_op_avgpool2d(3, 2, 1), 0, -1, &st, err);
    push(&blk[2], gm_op_conv2d(8, 6, 1, 1, 0, 0), 1, -1, &st, err);
    push(&blk[2], gm_op_batchnorm2d(6), 2, -1, &st, err);
    push(&blk[2], gm_op_dropout(0.3f), 3, -1, &st, err);
    parent[2] = 1;
    /* 3 head: GAP -> (6,1,1), linear without a flatten -> 5 */
    push(&blk[3], gm_op_globalavgpool(), -1, -1, &st, err);
    push(&blk[3], gm_op_linear(6, 5, 1), 0, -1, &st, err);
    parent[3] = 2;
    /* 4 hidden: flatten 150, linear 16, relu, dropout */
    blk[4] = gm_block_linear((gm_shape){6, 5, 5}, 16, 1, 0.5f);
    parent[4] = 2;
    /* 5 head: vector ops, back to a map and out again -> 3 */
    push(&blk[5], gm_op_linear(16, 8, 0), -1, -1, &st, err);     /* 0: 8 */
    push(&blk[5], gm_op_batchnorm2d(8), 0, -1, &st, err);        /* 1: BN on a vector */
    push(&blk[5], gm_op_relu(), 1, -1, &st, err);                /* 2 */
    push(&blk[5], gm_op_conv2d(8, 8, 1, 1, 0, 1), 2, -1, &st, err); /* 3: a map (8,1,1) */
    push(&blk[5], gm_op_add(), 3, 0, &st, err);                  /* 4: map + vector */
    push(&blk[5], gm_op_upsample(2), 4, -1, &st, err);           /* 5: 8x2x2 */
    push(&blk[5], gm_op_maxpool2d(2, 2, 0), 5, -1, &st, err);    /* 6: 8x1x1 */
    push(&blk[5], gm_op_flatten(), 6, -1, &st, err);             /* 7 */
    push(&blk[5], gm_op_linear(8, 3, 1), 7, -1, &st, err);       /* 8 */
    push(&blk[5], gm_op_dropout(0.1f), 8, -1, &st, err);         /* 9: the head ends in a dropout */
    parent[5] = 4;
    /* 6 head: a map's GAP straight out -> 4 classes */
    push(&blk[6], gm_op_globalavgpool(), -1, -1, &st, err);
    parent[6] = 0;
    /* 7 head: only a dropout of block 4's output, which block 5 reads too -> 16 classes */
    push(&blk[7], gm_op_dropout(0.2f), -1, -1, &st, err);
    parent[7] = 4;
    /* 8: a leaf that no task reads */
    push(&blk[8], gm_op_globalavgpool(), -1, -1, &st, err);
    parent[8] = 1;
    return st;
}

/* Random BatchNorm scale, shift and running statistics, in gm_net_params/buffers order. */
static void randomise_bn(gm_mfile *m, uint64_t seed)
{
    gm_rng rng;
    gm_rng_seed(&rng, seed);
    size_t par = 0, buf = 0;
    for (int b = 0; b < m->nblocks; b++)
        for (int i = 0; i < m->blocks[b].nops; i++) {
            const gm_op *op = &m->blocks[b].ops[i];
            if (op->kind == GM_OP_BATCHNORM2D) {
                const int c = op->p.bn.c;
                for (int j = 0; j < c; j++) {
                    m->params[par + j] = 0.5f + gm_rng_uniform(&rng);            /* gamma */
                    m->params[par + c + j] = 0.2f * gm_rng_normal(&rng);         /* beta */
                    m->buffers[buf + j] = 0.2f * gm_rng_normal(&rng);            /* running mean */
                    m->buffers[buf + c + j] = 0.3f + 1.5f * gm_rng_uniform(&rng); /* running var */
                }
            }
            par += gm_op_nparams(op);
            buf += gm_op_nbuffers(op);
        }
}

static gm_status make(const char *path, gm_error *err)
{
    gm_block blk[NBLOCKS];
    int parent[NBLOCKS];
    gm_status st = build(blk, parent, err);
    if (st != GM_OK) return st;
    gm_backend *be = NULL;
    gm_net *net = NULL;
    gm_net_desc d = {.input = {3, 12, 12}, .nblocks = NBLOCKS, .blocks = blk, .parent = parent};
    gm_mfile m = {0};
    st = gm_backend_cpu_create(&be, 1, err);
    if (st == GM_OK) st = gm_net_create(&net, be, &d, 1, 7, err);
    if (st == GM_OK) st = gm_mfile_from_net(&m, net, err);
    if (st == GM_OK && m.ntasks != 5) st = gm_error_set(err, GM_EINVAL, "%d leaves, expected 5", m.ntasks);
    if (st == GM_OK) {
        /* Leaves in block order: 3, 5, 6, 7, 8; the last gets no task. */
        static const char *const names[4] = {"colour/hue 2", "input", "shape", "scale"};
        m.ntasks = 4;
        for (int k = 0; k < 4; k++) snprintf(m.tasks[k].name, sizeof m.tasks[k].name, "%s", names[k]);
        snprintf(m.arch, sizeof m.arch, "every IR op");
        const float mean[3] = {0.5f, 0.25f, 0.125f}, sd[3] = {0.2f, 0.3f, 0.4f};
        for (int c = 0; c < 3; c++) {
            m.mean[c] = mean[c];
            m.std[c] = sd[c];
        }
        randomise_bn(&m, 11);
        st = gm_mfile_save(path, &m, err);
    }
    gm_mfile_free(&m);
    gm_net_free(net);
    gm_backend_free(be);
    return st;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: onnx_export_model OUT.h5\n");
        return 2;
    }
    gm_error err;
    if (make(argv[1], &err) != GM_OK) {
        fprintf(stderr, "onnx_export_model: %s\n", err.msg);
        return 1;
    }
    return 0;
}

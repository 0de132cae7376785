/*
 * gm_net: executes a tree of blocks (forward, backward) on one backend.
 *
 * The blocks form a tree rooted at the input: block i reads the net input
 * (parent -1) or the output of block parent[i] < i. A single model is a chain;
 * a fused multi-task graph is a tree whose leaves are task heads. Every shared
 * prefix is computed once.
 *
 * Memory: everything a training step touches (parameters, gradients, buffers,
 * activations, their gradients, saved state, backend scratch) is sized from a
 * table and allocated in gm_net_create, for a maximum batch. Forward, backward
 * and the loss allocate nothing. The net owns all of it; gm_net_free releases it.
 * The backend is borrowed and must outlive the net.
 */
#ifndef GM_NET_H
#define GM_NET_H

#include <stddef.h>
#include <stdint.h>

#include "gm_backend.h"
#include "gm_block.h"
#include "gm_tensor.h"

typedef struct gm_net gm_net;

typedef struct {
    gm_shape input;         /* per-sample input shape */
    int nblocks;
    const gm_block *blocks;
    const int *parent;      /* parent[i] in [-1, i); NULL means a chain */
} gm_net_desc;

/* Memory held by a net, by purpose, in bytes (what a rank reports). */
typedef struct {
    size_t params, grads, buffers, activations, act_grads, saved, input, scratch;
    size_t targets; /* the loss's staged targets and labels */
} gm_net_memory;

/*
 * Checks shapes along every edge and allocates. Parameters are initialised as
 * PyTorch does by default (uniform +-1/sqrt(fan_in)), from seed.
 */
gm_status gm_net_create(gm_net **out, gm_backend *be, const gm_net_desc *desc, int max_batch,
                        uint64_t seed, gm_error *err);
void gm_net_free(gm_net *net);

/* x: batch samples on the host, copied in. train: batch statistics and dropout. */
gm_status gm_net_forward(gm_net *net, const float *x, int batch, int train, gm_error *err);
/*
 * The same on a tensor already on the net's device, read in place (no copy):
 * it must stay unchanged until gm_net_backward. Its shape is checked against
 * the net's input (GM_ESHAPE names both) and its device against the net's.
 */
gm_status gm_net_forward_tensor(gm_net *net, const gm_tensor *x, int train, gm_error *err);
/*
 * Back-propagates the gradients that the loss wrote into the output gradients
 * (gm_net_loss or gm_net_output_grad) of the last forward. Parameter gradients
 * are ADDED to gm_net_grads(): call gm_net_zero_grad before each step.
 */
gm_status gm_net_backward(gm_net *net, gm_error *err);
/*
 * Forward, backward and time_blocks end by asking the backend for a failure it
 * recorded on the way (be->status: a device launch or library call that failed),
 * so a broken GPU surfaces as GM_EDEVICE from the call that hit it. A kernel that
 * faults while running shows only once something waits for the device.
 */
void gm_net_zero_grad(gm_net *net);

/*
 * A loss on an inner activation (feature matching): the mean squared error
 * between block b's output in the last forward and target (backend memory,
 * batch x numel of that output: another net's activation, say), times scale,
 * into *loss. Its gradient joins what flows into block b's output in the next
 * gm_net_backward, once. gm_net_reserve_block_loss(b) must come first, outside
 * the training step: it allocates the gradient's buffer.
 */
gm_status gm_net_reserve_block_loss(gm_net *net, int b, gm_error *err);
gm_status gm_net_block_loss(gm_net *net, int b, const float *target, float scale, float *loss, gm_error *err);

/*
 * Loss of output k against targets (n x d floats) or labels; writes the output
 * gradient times scale, ready for gm_net_backward. Several outputs (tasks) each
 * get their own call. target and labels are host memory, copied into buffers
 * the net reserved on its backend (the backend's loss reads only its own
 * memory); *loss is a host float.
 */
gm_status gm_net_loss(gm_net *net, int k, gm_loss_kind kind, const float *target,
                      const int32_t *labels, float scale, float *loss, gm_error *err);

int gm_net_noutputs(const gm_net *net);
gm_shape gm_net_output_shape(const gm_net *net, int k);
int gm_net_output_block(const gm_net *net, int k);
float *gm_net_output(gm_net *net, int k);      /* backend memory, batch x numel */
float *gm_net_output_grad(gm_net *net, int k); /* backend memory, batch x numel */

/* Flat parameter, gradient and buffer arrays in backend memory, in block order. */
float *gm_net_params(gm_net *net);
float *gm_net_grads(gm_net *net);
float *gm_net_buffers(gm_net *net);
size_t gm_net_nparams(const gm_net *net);
size_t gm_net_nbuffers(const gm_net *net);

/* Offsets of block b's parameters and buffers inside the flat arrays. */
size_t gm_net_block_param_offset(const gm_net *net, int b);
size_t gm_net_block_buffer_offset(const gm_net *net, int b);

/*
 * Per-block cost of the last forward (and backward, if train) on the same batch:
 * every block's ops are run again reps times and the median time of each
 * block, in seconds, goes to fwd[b] and bwd[b] (bwd may be NULL), timed with
 * the backend's marks (gm_backend.mark: wall time on the CPU, events on a GPU). Measures the
 * latency table the search uses to predict a fused graph's cost. It disturbs
 * state: BN running statistics and dropout draws advance, and the gradients are
 * left meaningless, so run it on a net that is not in the middle of a step.
 */
gm_status gm_net_time_blocks(gm_net *net, int reps, double *fwd, double *bwd, gm_error *err);

/*
 * What the last forward computed inside the net, in backend memory (batch x
 * numel of the shape): the output of op `op` of block b (op = -1: the block's
 * last op, its output). A ReLU folded into the BatchNorm before it shares that
 * BatchNorm's buffer, so the BatchNorm's output reads as post-ReLU. Block b =
 * -1 is the net input. The stitch (worker/gm_stitch) reads activations here.
 */
const float *gm_net_activation(const gm_net *net, int b, int op);
gm_shape gm_net_activation_shape(const gm_net *net, int b, int op);

int gm_net_nblocks(const gm_net *net);
const gm_block *gm_net_block(const gm_net *net, int b);
/*
 * eval = 1: block b runs as at inference even in a training forward (BatchNorm
 * normalises with its running statistics and leaves them alone, no dropout),
 * while its parameters still get gradients. Fine-tuning uses it for blocks
 * whose input is what they were trained on. Default 0.
 */
void gm_net_set_block_eval(gm_net *net, int b, int eval);
/* The block that block b reads: -1 for the net input, else an earlier block. */
int gm_net_block_parent(const gm_net *net, int b);
gm_shape gm_net_block_input_shape(const gm_net *net, int b);
uint64_t gm_net_flops(const gm_net *net); /* forward, per sample */
gm_net_memory gm_net_memory_use(const gm_net *net);
gm_backend *gm_net_backend(gm_net *net);
/* The dropout generator: saved and restored by a resumable training. */
gm_rng *gm_net_rng(gm_net *net);

#endif

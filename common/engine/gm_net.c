#include "gm_net.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gm_clock.h"

/* One op of the flattened graph, with its place in every slab. */
typedef struct {
    gm_op op;
    int in[2];           /* producer node, or -1 for the net input */
    gm_shape ins[2], out;
    int view;            /* output aliases input 0 (flatten, fused ReLU): no memory of its own */
    int relu_after;      /* a BatchNorm whose only consumer, a ReLU, is folded into it */
    int dx_set[2];       /* first writer of input j's gradient in backward order: overwrite */
    int is_output;
    int eval;            /* runs as at inference even in a training forward (gm_net_set_block_eval) */
    size_t act;          /* offset in floats into acts (also into act_grads) */
    size_t aux;          /* offset in bytes into saved */
    size_t par, buf;     /* offsets in floats into params/grads and buffers */
} gm_node;

struct gm_net {
    gm_backend *be;
    int nblocks, nnodes, noutputs, max_batch, batch, train, have_forward;
    gm_block *blocks;
    int *block_parent, *block_last; /* last node of each block */
    gm_shape *block_in;
    size_t *block_par, *block_buf;
    gm_node *nodes;
    int *outputs;        /* node of each output (leaf block), in block order */
    int *output_blocks;
    gm_shape input;
    size_t nparams, nbuffers, nact, max_out; /* max_out: floats per sample of the widest output */
    float *params, *grads, *buffers, *acts, *act_grads, *in_buf;
    float *target_buf;   /* the loss's targets, staged from the host (max_batch * max_out) */
    int32_t *label_buf;  /* the loss's labels, staged from the host (max_batch) */
    const float *input_data; /* what the last forward read: in_buf or a caller's tensor */
    float **block_xgrad;     /* per block: the gradient of its output's inner loss (NULL: none reserved) */
    char *block_xpending;    /* per block: block_xgrad holds a loss's gradient for the next backward */
    void *saved;
    gm_net_memory mem;
    gm_rng rng;
};

static size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }

static gm_status alloc_arrays(gm_net *n, int nblocks, int nnodes)
{
    n->blocks = calloc((size_t)nblocks, sizeof *n->blocks);
    n->block_parent = calloc((size_t)nblocks, sizeof(int));
    n->block_last = calloc((size_t)nblocks, sizeof(int));
    n->block_in = calloc((size_t)nblocks, sizeof(gm_shape));
    n->block_par = calloc((size_t)nblocks, sizeof(size_t));
    n->block_buf = calloc((size_t)nblocks, sizeof(size_t));
    n->outputs = calloc((size_t)nblocks, sizeof(int));
    n->output_blocks = calloc((size_t)nblocks, sizeof(int));
    n->nodes = calloc((size_t)nnodes, sizeof(gm_node));
    return n->blocks && n->block_parent && n->block_last && n->block_in && n->block_par &&
                   n->block_buf && n->outputs && n->output_blocks && n->nodes
               ? GM_OK
               : GM_ENOMEM;
}

/* Flattens the block tree into nodes, checking shapes and wiring. */
static gm_status build_nodes(gm_net *n, const gm_net_desc *d, gm_error *err)
{
    int k = 0;
    for (int b = 0; b < d->nblocks; b++) {
        const gm_block *blk = &d->blocks[b];
        int parent = d->parent ? d->parent[b] : b - 1;
        if (parent < -1 || parent >= b)
            return gm_error_set(err, GM_EINVAL, "block %d: parent %d must be -1 or an earlier block", b, parent);
        gm_shape in = parent < 0 ? d->input : n->nodes[n->block_last[parent]].out, out;
        gm_error inner;
        if (gm_block_infer(blk, in, &out, &inner) != GM_OK)
            return gm_error_set(err, inner.code, "block %d (%s): %s", b, gm_block_kind_name(blk->kind), inner.msg);
        if (!n->be->supports_op)
            return gm_error_set(err, GM_EDEVICE, "backend %s has no op table", n->be->name);
        gm_shape shapes[GM_BLOCK_MAX_OPS];
        gm_block_shapes(blk, in, shapes);
        int base = k, entry = parent < 0 ? -1 : n->block_last[parent];
        for (int i = 0; i < blk->nops; i++, k++) {
            gm_node *nd = &n->nodes[k];
            nd->op = blk->ops[i];
            if (!n->be->supports_op(n->be, &nd->op))
                return gm_error_set(err, GM_EDEVICE, "block %d op %d: backend %s does not support %s",
                                    b, i, n->be->name, gm_op_name(nd->op.kind));
            nd->in[1] = -1;
            for (int j = 0; j < gm_op_ninputs(&nd->op); j++) {
                int s = blk->src[i][j];
                nd->in[j] = s < 0 ? entry : base + s;
                nd->ins[j] = s < 0 ? in : shapes[s];
            }
            nd->out = shapes[i];
            nd->view = nd->op.kind == GM_OP_FLATTEN && nd->in[0] >= 0; /* the net input is not a node */
        }
        n->blocks[b] = *blk;
        n->block_parent[b] = parent;
        n->block_last[b] = k - 1;
        n->block_in[b] = in;
    }
    return GM_OK;
}

/*
 * Folds a ReLU into the BatchNorm before it when the BN feeds nothing else:
 * BN then writes max(0, .) and masks its upstream gradient, and the ReLU
 * becomes a view of the BN's buffers. Saves two passes over the activation
 * forward and three backward (the pattern of every Conv+BN+ReLU block).
 */
static void fuse_bn_relu(gm_net *n)
{
    for (int k = 0; k < n->nnodes; k++) {
        gm_node *nd = &n->nodes[k];
        int j = nd->in[0];
        if (nd->op.kind != GM_OP_RELU || j < 0 || nd->is_output) continue;
        gm_node *bn = &n->nodes[j];
        if (bn->op.kind != GM_OP_BATCHNORM2D || bn->is_output) continue;
        int consumers = 0;
        for (int c = j + 1; c < n->nnodes; c++)
            for (int i = 0; i < gm_op_ninputs(&n->nodes[c].op); i++) consumers += n->nodes[c].in[i] == j;
        if (consumers != 1) continue;
        bn->relu_after = 1;
        nd->view = 1;
    }
}

/* The node whose buffers a node's output really lives in (views resolved). */
static int owner(const gm_net *n, int k)
{
    while (k >= 0 && n->nodes[k].view) k = n->nodes[k].in[0];
    return k;
}

/*
 * In backward order, the first op to write a gradient buffer overwrites it and
 * the later ones add, so no buffer is zeroed before backward (a pass saved).
 */
static gm_status mark_first_writers(gm_net *n, gm_error *err)
{
    char *written = calloc((size_t)n->nnodes, 1);
    if (!written) return gm_error_set(err, GM_ENOMEM, "net: out of memory");
    for (int k = n->nnodes - 1; k >= 0; k--) {
        gm_node *nd = &n->nodes[k];
        if (nd->view) continue; /* views write nothing */
        for (int j = 0; j < gm_op_ninputs(&nd->op); j++) {
            int o = owner(n, nd->in[j]);
            if (o < 0) continue;
            nd->dx_set[j] = !written[o];
            written[o] = 1;
        }
    }
    free(written);
    return GM_OK;
}

static void find_outputs(gm_net *n)
{
    for (int b = 0; b < n->nblocks; b++) {
        int has_child = 0;
        for (int c = b + 1; c < n->nblocks && !has_child; c++) has_child = n->block_parent[c] == b;
        if (has_child) continue;
        n->output_blocks[n->noutputs] = b;
        n->outputs[n->noutputs++] = n->block_last[b];
        n->nodes[n->block_last[b]].is_output = 1;
    }
}

/* Assigns every node its offsets and sizes the slabs (the size table). */
static size_t plan_memory(gm_net *n, size_t *saved_bytes)
{
    size_t par = 0, buf = 0, act = 0, aux = 0, scratch = 0;
    for (int k = 0; k < n->nnodes; k++) {
        gm_node *nd = &n->nodes[k];
        nd->par = par;
        nd->buf = buf;
        par += gm_op_nparams(&nd->op);
        buf += gm_op_nbuffers(&nd->op);
        if (nd->view) {
            nd->act = n->nodes[nd->in[0]].act;
        } else {
            nd->act = act;
            act += align16((size_t)n->max_batch * gm_shape_numel(nd->out));
        }
        nd->aux = aux;
        aux += (n->be->aux_bytes(n->be, &nd->op, nd->ins[0], nd->out, n->max_batch) + 63) & ~(size_t)63;
        size_t s = n->be->scratch_bytes(n->be, &nd->op, nd->ins[0], nd->out, n->max_batch);
        scratch = s > scratch ? s : scratch;
    }
    for (int bb = 0, first = 0; bb < n->nblocks; first = n->block_last[bb] + 1, bb++) {
        n->block_par[bb] = n->nodes[first].par;
        n->block_buf[bb] = n->nodes[first].buf;
    }
    n->nparams = par;
    n->nbuffers = buf;
    n->nact = act;
    for (int o = 0; o < n->noutputs; o++) {
        size_t d = gm_shape_numel(n->nodes[n->outputs[o]].out);
        n->max_out = d > n->max_out ? d : n->max_out;
    }
    *saved_bytes = aux;
    return scratch;
}

static gm_status alloc_slabs(gm_net *n, size_t saved, size_t scratch, gm_error *err)
{
    gm_backend *be = n->be;
    gm_net_memory *m = &n->mem;
    m->params = m->grads = sizeof(float) * n->nparams;
    m->buffers = sizeof(float) * n->nbuffers;
    m->activations = m->act_grads = sizeof(float) * n->nact;
    m->saved = saved;
    m->input = sizeof(float) * (size_t)n->max_batch * gm_shape_numel(n->input);
    m->scratch = scratch;
    m->targets = sizeof(float) * (size_t)n->max_batch * n->max_out + sizeof(int32_t) * (size_t)n->max_batch;
    n->params = be->alloc(be, m->params);
    n->grads = be->alloc(be, m->grads);
    n->buffers = be->alloc(be, m->buffers);
    n->acts = be->alloc(be, m->activations);
    n->act_grads = be->alloc(be, m->act_grads);
    n->saved = be->alloc(be, saved);
    n->in_buf = be->alloc(be, m->input);
    n->target_buf = be->alloc(be, sizeof(float) * (size_t)n->max_batch * n->max_out);
    n->label_buf = be->alloc(be, sizeof(int32_t) * (size_t)n->max_batch);
    if (!n->params || !n->grads || !n->buffers || !n->acts || !n->act_grads || !n->saved || !n->in_buf ||
        !n->target_buf || !n->label_buf)
        return gm_error_set(err, GM_ENOMEM, "net: cannot allocate %.1f MiB for batch %d",
                            (double)(m->params * 2 + m->buffers + m->activations * 2 + saved + m->input +
                                     m->targets) / 1048576.0,
                            n->max_batch);
    return be->reserve_scratch(be, scratch, err);
}

/* PyTorch's default: weights and biases uniform in +-1/sqrt(fan_in); BN 1, 0; stats 0, 1. */
static void init_params(gm_net *n, float *host_par, float *host_buf)
{
    for (int k = 0; k < n->nnodes; k++) {
        const gm_node *nd = &n->nodes[k];
        float *p = host_par + nd->par;
        size_t np = gm_op_nparams(&nd->op), fan_in = 0;
        if (nd->op.kind == GM_OP_CONV2D) {
            const gm_conv_params *c = &nd->op.p.conv;
            fan_in = (size_t)c->cin * (size_t)(c->k * c->k);
        } else if (nd->op.kind == GM_OP_LINEAR) {
            fan_in = (size_t)nd->op.p.linear.in;
        } else if (nd->op.kind == GM_OP_BATCHNORM2D) {
            int c = nd->op.p.bn.c;
            for (int i = 0; i < c; i++) {
                p[i] = 1.0f;
                p[c + i] = 0.0f;
                host_buf[nd->buf + (size_t)i] = 0.0f;
                host_buf[nd->buf + (size_t)(c + i)] = 1.0f;
            }
        }
        if (fan_in) {
            float bound = 1.0f / sqrtf((float)fan_in);
            for (size_t i = 0; i < np; i++) p[i] = (2.0f * gm_rng_uniform(&n->rng) - 1.0f) * bound;
        }
    }
}

static gm_status init_on_device(gm_net *n, gm_error *err)
{
    float *hp = calloc(n->nparams + 1, sizeof(float)), *hb = calloc(n->nbuffers + 1, sizeof(float));
    if (!hp || !hb) {
        free(hp);
        free(hb);
        return gm_error_set(err, GM_ENOMEM, "net: out of memory initialising parameters");
    }
    init_params(n, hp, hb);
    n->be->to_device(n->be, n->params, hp, sizeof(float) * n->nparams);
    n->be->to_device(n->be, n->buffers, hb, sizeof(float) * n->nbuffers);
    free(hp);
    free(hb);
    return GM_OK;
}

gm_status gm_net_create(gm_net **out, gm_backend *be, const gm_net_desc *desc, int max_batch,
                        uint64_t seed, gm_error *err)
{
    *out = NULL;
    if (desc->nblocks < 1)
        return gm_error_set(err, GM_EINVAL, "net: no blocks");
    if (max_batch < 1)
        return gm_error_set(err, GM_EINVAL, "net: batch size %d must be at least 1", max_batch);
    if (desc->input.c < 1 || desc->input.h < 1 || desc->input.w < 1)
        return gm_error_set(err, GM_ESHAPE, "net: zero-sized input shape %dx%dx%d",
                            desc->input.c, desc->input.h, desc->input.w);
    gm_net *n = calloc(1, sizeof *n);
    if (!n) return gm_error_set(err, GM_ENOMEM, "net: out of memory");
    n->be = be;
    n->nblocks = desc->nblocks;
    n->input = desc->input;
    n->max_batch = max_batch;
    gm_rng_seed(&n->rng, seed);
    for (int b = 0; b < desc->nblocks; b++) n->nnodes += desc->blocks[b].nops;
    gm_status s = alloc_arrays(n, desc->nblocks, n->nnodes);
    if (s != GM_OK) gm_error_set(err, s, "net: out of memory");
    if (s == GM_OK) s = build_nodes(n, desc, err);
    if (s == GM_OK) {
        find_outputs(n);
        fuse_bn_relu(n);
        s = mark_first_writers(n, err);
    }
    if (s == GM_OK) {
        size_t saved, scratch = plan_memory(n, &saved);
        s = alloc_slabs(n, saved, scratch, err);
    }
    if (s == GM_OK) s = init_on_device(n, err);
    if (s != GM_OK) {
        gm_net_free(n);
        return s;
    }
    *out = n;
    return GM_OK;
}

void gm_net_free(gm_net *n)
{
    if (!n) return;
    gm_backend *be = n->be;
    void *slabs[] = {n->params, n->grads, n->buffers, n->acts, n->act_grads, n->saved, n->in_buf,
                     n->target_buf, n->label_buf};
    for (size_t i = 0; i < sizeof slabs / sizeof slabs[0]; i++)
        if (slabs[i]) be->free(be, slabs[i]);
    free(n->blocks);
    free(n->block_parent);
    free(n->block_last);
    free(n->block_in);
    free(n->block_par);
    free(n->block_buf);
    free(n->outputs);
    free(n->output_blocks);
    free(n->nodes);
    for (int b = 0; n->block_xgrad && b < n->nblocks; b++)
        if (n->block_xgrad[b]) be->free(be, n->block_xgrad[b]);
    free(n->block_xgrad);
    free(n->block_xpending);
    free(n);
}

static gm_op_args node_args(gm_net *n, gm_node *nd)
{
    gm_op_args a = {.op = &nd->op, .in = {nd->ins[0], nd->ins[1]}, .out = nd->out,
                    .batch = n->batch, .train = n->train && !nd->eval, .relu_after = nd->relu_after, .rng = &n->rng};
    for (int j = 0; j < gm_op_ninputs(&nd->op); j++)
        a.x[j] = nd->in[j] < 0 ? n->input_data : n->acts + n->nodes[nd->in[j]].act;
    a.y = n->acts + nd->act;
    a.w = gm_op_nparams(&nd->op) ? n->params + nd->par : NULL;
    a.buf = gm_op_nbuffers(&nd->op) ? n->buffers + nd->buf : NULL;
    a.aux = (char *)n->saved + nd->aux;
    return a;
}

static void forward_node(gm_net *n, gm_node *nd);
static void backward_node(gm_net *n, gm_node *nd);

static gm_status check_batch(const gm_net *n, int batch, gm_error *err)
{
    if (batch < 1 || batch > n->max_batch)
        return gm_error_set(err, GM_ESHAPE, "net: batch of %d samples, but the net was sized for 1 to %d",
                            batch, n->max_batch);
    return GM_OK;
}

static void run_forward(gm_net *n, const float *input, int batch, int train)
{
    n->input_data = input;
    n->batch = batch;
    n->train = train;
    for (int k = 0; k < n->nnodes; k++) forward_node(n, &n->nodes[k]);
    n->have_forward = 1;
}

gm_status gm_net_forward(gm_net *n, const float *x, int batch, int train, gm_error *err)
{
    gm_status s = check_batch(n, batch, err);
    if (s != GM_OK) return s;
    n->be->to_device(n->be, n->in_buf, x, sizeof(float) * (size_t)batch * gm_shape_numel(n->input));
    run_forward(n, n->in_buf, batch, train);
    return n->be->status(n->be, err);
}

gm_status gm_net_forward_tensor(gm_net *n, const gm_tensor *x, int train, gm_error *err)
{
    if (!x->data) return gm_error_set(err, GM_EINVAL, "net: input tensor is not allocated");
    if (x->be != n->be)
        return gm_error_set(err, GM_EDEVICE, "net: input tensor lives on %s, the net on %s", x->be->name,
                            n->be->name);
    if (x->c != n->input.c || x->h != n->input.h || x->w != n->input.w)
        return gm_error_set(err, GM_ESHAPE, "net: input tensor samples are %dx%dx%d but the net reads %dx%dx%d",
                            x->c, x->h, x->w, n->input.c, n->input.h, n->input.w);
    gm_status s = check_batch(n, x->n, err);
    if (s != GM_OK) return s;
    run_forward(n, x->data, x->n, train);
    return n->be->status(n->be, err);
}

static void forward_node(gm_net *n, gm_node *nd)
{
    if (nd->view) return;
    gm_op_args a = node_args(n, nd);
    n->be->forward(n->be, &a);
}

static void backward_node(gm_net *n, gm_node *nd)
{
    if (nd->view) return; /* its gradient already lives in its input's buffer */
    gm_op_args a = node_args(n, nd);
    a.dy = n->act_grads + nd->act;
    for (int j = 0; j < gm_op_ninputs(&nd->op); j++) {
        a.dx[j] = nd->in[j] < 0 ? NULL : n->act_grads + n->nodes[nd->in[j]].act;
        a.dx_set[j] = nd->dx_set[j];
    }
    a.dw = a.w ? n->grads + nd->par : NULL;
    n->be->backward(n->be, &a);
}

/*
 * Median seconds of reps runs of nodes [first, last], forward or backward,
 * timed by the backend's marks: on a device they are timed in its own order
 * (CUDA events) and each run is complete when its time is read.
 */
static double time_nodes(gm_net *n, int first, int last, int backward, int reps, double *t)
{
    gm_backend *be = n->be;
    for (int r = 0; r < reps; r++) {
        be->mark(be, 0);
        if (backward)
            for (int k = last; k >= first; k--) backward_node(n, &n->nodes[k]);
        else
            for (int k = first; k <= last; k++) forward_node(n, &n->nodes[k]);
        be->mark(be, 1);
        t[r] = 1e-3 * be->elapsed_ms(be, 0, 1);
    }
    return gm_median(t, reps);
}

gm_status gm_net_time_blocks(gm_net *n, int reps, double *fwd, double *bwd, gm_error *err)
{
    if (!n->have_forward)
        return gm_error_set(err, GM_EINVAL, "net: time_blocks needs a forward pass first");
    if (reps < 1 || reps > 1000)
        return gm_error_set(err, GM_EINVAL, "net: %d timing repetitions (1 to 1000)", reps);
    double t[1000];
    for (int b = 0, first = 0; b < n->nblocks; first = n->block_last[b] + 1, b++) {
        fwd[b] = time_nodes(n, first, n->block_last[b], 0, reps, t);
        if (bwd) bwd[b] = time_nodes(n, first, n->block_last[b], 1, reps, t);
    }
    return n->be->status(n->be, err);
}

/*
 * Adds block b's inner-loss gradient to what its consumers (all later nodes,
 * already processed) wrote into its output's gradient: the backward of an
 * addition, so every backend does it with the op it has.
 */
static void add_inner_grad(gm_net *n, int b)
{
    const gm_node *nd = &n->nodes[n->block_last[b]];
    const gm_op add = gm_op_add();
    gm_op_args a = {.op = &add, .in = {nd->out, nd->out}, .out = nd->out, .batch = n->batch};
    a.dy = n->block_xgrad[b];
    a.dx[0] = n->act_grads + nd->act;
    n->be->backward(n->be, &a);
    n->block_xpending[b] = 0;
}

gm_status gm_net_backward(gm_net *n, gm_error *err)
{
    if (!n->have_forward)
        return gm_error_set(err, GM_EINVAL, "net: backward without a forward pass");
    for (int b = n->nblocks - 1; b >= 0; b--) {
        if (n->block_xpending && n->block_xpending[b]) add_inner_grad(n, b);
        for (int k = n->block_last[b], first = b ? n->block_last[b - 1] + 1 : 0; k >= first; k--)
            backward_node(n, &n->nodes[k]);
    }
    return n->be->status(n->be, err);
}

gm_status gm_net_reserve_block_loss(gm_net *n, int b, gm_error *err)
{
    if (b < 0 || b >= n->nblocks)
        return gm_error_set(err, GM_EINVAL, "net: block %d does not exist (%d blocks)", b, n->nblocks);
    if (!n->block_xgrad) {
        n->block_xgrad = calloc((size_t)n->nblocks, sizeof *n->block_xgrad);
        n->block_xpending = calloc((size_t)n->nblocks, 1);
        if (!n->block_xgrad || !n->block_xpending) return gm_error_set(err, GM_ENOMEM, "net: out of memory");
    }
    if (n->block_xgrad[b]) return GM_OK;
    size_t bytes = sizeof(float) * (size_t)n->max_batch * gm_shape_numel(n->nodes[n->block_last[b]].out);
    if (!(n->block_xgrad[b] = n->be->alloc(n->be, bytes)))
        return gm_error_set(err, GM_ENOMEM, "net: cannot allocate %.1f MiB for block %d's inner loss",
                            (double)bytes / 1048576.0, b);
    n->mem.act_grads += bytes;
    return GM_OK;
}

gm_status gm_net_block_loss(gm_net *n, int b, const float *target, float scale, float *loss, gm_error *err)
{
    if (b < 0 || b >= n->nblocks || !n->block_xgrad || !n->block_xgrad[b])
        return gm_error_set(err, GM_EINVAL, "net: block %d has no inner loss reserved", b);
    if (!n->have_forward) return gm_error_set(err, GM_EINVAL, "net: loss without a forward pass");
    const gm_node *nd = &n->nodes[n->block_last[b]];
    gm_status st = n->be->loss(n->be, GM_LOSS_MSE, n->acts + nd->act, target, NULL, n->batch,
                               (int)gm_shape_numel(nd->out), scale, n->block_xgrad[b], loss, err);
    n->block_xpending[b] = st == GM_OK;
    return st;
}

void gm_net_zero_grad(gm_net *n) { n->be->zero(n->be, n->grads, sizeof(float) * n->nparams); }

gm_status gm_net_loss(gm_net *n, int k, gm_loss_kind kind, const float *target,
                      const int32_t *labels, float scale, float *loss, gm_error *err)
{
    if (k < 0 || k >= n->noutputs)
        return gm_error_set(err, GM_EINVAL, "net: output %d does not exist (%d outputs)", k, n->noutputs);
    if (!n->have_forward)
        return gm_error_set(err, GM_EINVAL, "net: loss without a forward pass");
    const gm_node *nd = &n->nodes[n->outputs[k]];
    const size_t d = gm_shape_numel(nd->out);
    gm_backend *be = n->be;
    /* The backend reads targets and labels in its own memory: stage them (a memcpy on the CPU). */
    if (target) be->to_device(be, n->target_buf, target, sizeof(float) * (size_t)n->batch * d);
    if (labels) be->to_device(be, n->label_buf, labels, sizeof(int32_t) * (size_t)n->batch);
    return be->loss(be, kind, n->acts + nd->act, target ? n->target_buf : NULL, labels ? n->label_buf : NULL,
                    n->batch, (int)d, scale, n->act_grads + nd->act, loss, err);
}

int gm_net_noutputs(const gm_net *n) { return n->noutputs; }
gm_shape gm_net_output_shape(const gm_net *n, int k) { return n->nodes[n->outputs[k]].out; }
int gm_net_output_block(const gm_net *n, int k) { return n->output_blocks[k]; }
float *gm_net_output(gm_net *n, int k) { return n->acts + n->nodes[n->outputs[k]].act; }
float *gm_net_output_grad(gm_net *n, int k) { return n->act_grads + n->nodes[n->outputs[k]].act; }
float *gm_net_params(gm_net *n) { return n->params; }
float *gm_net_grads(gm_net *n) { return n->grads; }
float *gm_net_buffers(gm_net *n) { return n->buffers; }
size_t gm_net_nparams(const gm_net *n) { return n->nparams; }
size_t gm_net_nbuffers(const gm_net *n) { return n->nbuffers; }
size_t gm_net_block_param_offset(const gm_net *n, int b) { return n->block_par[b]; }
size_t gm_net_block_buffer_offset(const gm_net *n, int b) { return n->block_buf[b]; }
/* Node of op `op` of block b (op -1: the block's last); -1 for the net input or out of range. */
static int node_of(const gm_net *n, int b, int op)
{
    if (b < 0 || b >= n->nblocks) return -1;
    int first = b ? n->block_last[b - 1] + 1 : 0, last = n->block_last[b];
    if (op < 0) return last;
    return first + op <= last ? first + op : -1;
}

const float *gm_net_activation(const gm_net *n, int b, int op)
{
    if (b < 0) return n->input_data;
    int k = node_of(n, b, op);
    return k < 0 ? NULL : n->acts + n->nodes[k].act;
}

gm_shape gm_net_activation_shape(const gm_net *n, int b, int op)
{
    if (b < 0) return n->input;
    int k = node_of(n, b, op);
    return k < 0 ? (gm_shape){0, 0, 0} : n->nodes[k].out;
}

int gm_net_nblocks(const gm_net *n) { return n->nblocks; }
const gm_block *gm_net_block(const gm_net *n, int b) { return &n->blocks[b]; }
int gm_net_block_parent(const gm_net *n, int b) { return n->block_parent[b]; }

void gm_net_set_block_eval(gm_net *n, int b, int eval)
{
    if (b < 0 || b >= n->nblocks) return;
    for (int k = b ? n->block_last[b - 1] + 1 : 0; k <= n->block_last[b]; k++) n->nodes[k].eval = eval != 0;
}
gm_shape gm_net_block_input_shape(const gm_net *n, int b) { return n->block_in[b]; }
gm_net_memory gm_net_memory_use(const gm_net *n) { return n->mem; }
gm_backend *gm_net_backend(gm_net *n) { return n->be; }

uint64_t gm_net_flops(const gm_net *n)
{
    uint64_t f = 0;
    for (int b = 0; b < n->nblocks; b++) f += gm_block_flops(&n->blocks[b], n->block_in[b]);
    return f;
}

gm_rng *gm_net_rng(gm_net *net) { return &net->rng; }

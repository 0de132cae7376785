/*
 * The CUDA backend's matrix work: convolutions through cuDNN's convolution API
 * (NCHW float) and linear layers through cuBLAS.
 *
 * Convolution plans: one per shape, batch included (descriptors plus the
 * forward, backward-data and backward-filter algorithms), made on first use and
 * kept until destroy. The executor asks scratch_bytes for every op at its
 * largest batch before training, so the plans of the shapes it runs are made
 * then, with up to kPlanWorkspace bytes of workspace each; a shape first seen in
 * forward (a smaller last batch) is planned within the scratch already reserved.
 * Algorithms come from cuDNN's heuristics (no benchmarking runs), preferring
 * deterministic ones; in strict mode only FMA (non-tensor-core) kernels.
 *
 * Scratch layout of a convolution: [workspace][weight staging]. cuDNN's kernels
 * may need 16-byte aligned tensors, but a layer's weights sit at any float offset
 * of the net's parameter slab, so misaligned weights (and weight gradients) go
 * through the staging copy.
 *
 * Linear: row-major y[n][out] = x[n][in] W[out][in]^T + b is, in cuBLAS's
 * column-major terms, y^T (out x n) = W (out x in, stored as W^T) x^T (in x n):
 * every leading dimension is a row length, and the transpose flags follow.
 */
#include "gm_backend_cuda_impl.cuh"

#include <stdlib.h>
#include <string.h>

/* Most workspace one convolution algorithm may take when planned before training. */
static const size_t kPlanWorkspace = (size_t)256 << 20;

enum { KEY_N, KEY_CIN, KEY_H, KEY_W, KEY_COUT, KEY_K, KEY_STRIDE, KEY_PAD, KEY_LEN };

struct gmc_conv_plan {
    int key[KEY_LEN];
    int ho, wo;
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t data;
    cudnnConvolutionBwdFilterAlgo_t filter;
    cudnnMathType_t fwd_math, data_math, filter_math;
    size_t ws; /* the largest workspace of the three */
};

static void key_of(const gm_op *op, gm_shape in, int batch, int key[KEY_LEN])
{
    const gm_conv_params *p = &op->p.conv;
    const int k[KEY_LEN] = {batch, in.c, in.h, in.w, p->cout, p->k, p->stride, p->pad};
    memcpy(key, k, sizeof k);
}

static size_t weight_floats(const int key[KEY_LEN])
{
    return (size_t)key[KEY_COUT] * (size_t)key[KEY_CIN] * (size_t)key[KEY_K] * (size_t)key[KEY_K];
}

static size_t stage_bytes(const int key[KEY_LEN]) { return gmc_round_up(sizeof(float) * weight_floats(key), GMC_ALIGN); }

static void plan_destroy(gmc_conv_plan *p)
{
    if (!p) return;
    if (p->x) (void)cudnnDestroyTensorDescriptor(p->x);
    if (p->y) (void)cudnnDestroyTensorDescriptor(p->y);
    if (p->w) (void)cudnnDestroyFilterDescriptor(p->w);
    if (p->conv) (void)cudnnDestroyConvolutionDescriptor(p->conv);
    free(p);
}

void gmc_conv_plans_free(gmc_state *s)
{
    for (int i = 0; i < s->nplans; i++) plan_destroy(s->plans[i]);
    free(s->plans);
    s->plans = NULL;
    s->nplans = s->cap_plans = 0;
}

/* Strict float32 excludes the tensor-core (TF32) kernels; neither mode lets cuDNN
 * convert float data to half precision (ALLOW_CONVERSION). */
static int math_ok(const gmc_state *s, cudnnMathType_t m)
{
    if (m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return 0;
    return s->tf32 || m != CUDNN_TENSOR_OP_MATH;
}

/*
 * The first of cuDNN's ranked candidates that succeeded, suits the math mode and
 * needs at most limit bytes of workspace: a deterministic one if any qualifies,
 * else any (the filter gradient of some shapes has only atomics-based kernels).
 * ws_of(algo, &bytes) asks cuDNN for an algorithm's workspace under the math type
 * just set on the descriptor.
 */
template <typename Perf, typename Algo, typename WsFn>
static int pick(gmc_state *s, gmc_conv_plan *p, const Perf *perf, int got, size_t limit, WsFn ws_of, Algo *algo,
                cudnnMathType_t *math, const char *what)
{
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < got; i++) {
            if (perf[i].status != CUDNN_STATUS_SUCCESS || !math_ok(s, perf[i].mathType)) continue;
            if (pass == 0 && perf[i].determinism != CUDNN_DETERMINISTIC) continue;
            const cudnnMathType_t m = s->tf32 ? perf[i].mathType : CUDNN_FMA_MATH;
            size_t bytes = 0;
            if (cudnnSetConvolutionMathType(p->conv, m) != CUDNN_STATUS_SUCCESS) continue;
            if (ws_of(perf[i].algo, &bytes) != CUDNN_STATUS_SUCCESS || bytes > limit) continue;
            *algo = perf[i].algo;
            *math = m;
            if (bytes > p->ws) p->ws = bytes;
            return 1;
        }
    const int *k = p->key;
    gmc_fail(s, GM_EDEVICE, "conv2d %dx%dx%d (batch %d) to %d channels, kernel %d stride %d pad %d: no cuDNN %s "
             "algorithm%s fits in %zu bytes of workspace", k[KEY_CIN], k[KEY_H], k[KEY_W], k[KEY_N], k[KEY_COUT],
             k[KEY_K], k[KEY_STRIDE], k[KEY_PAD], what, s->tf32 ? "" : " without TF32", limit);
    return 0;
}

static int pick_algorithms(gmc_state *s, gmc_conv_plan *p, size_t limit)
{
    int got = 0;
    cudnnConvolutionFwdAlgoPerf_t fwd[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    if (!GMC_DNN(s, cudnnGetConvolutionForwardAlgorithm_v7(s->dnn, p->x, p->w, p->conv, p->y,
                                                            CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, fwd)))
        return 0;
    auto fwd_ws = [&](cudnnConvolutionFwdAlgo_t algo, size_t *bytes) {
        return cudnnGetConvolutionForwardWorkspaceSize(s->dnn, p->x, p->w, p->conv, p->y, algo, bytes);
    };
    if (!pick(s, p, fwd, got, limit, fwd_ws, &p->fwd, &p->fwd_math, "forward")) return 0;

    cudnnConvolutionBwdDataAlgoPerf_t data[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    if (!GMC_DNN(s, cudnnGetConvolutionBackwardDataAlgorithm_v7(s->dnn, p->w, p->y, p->conv, p->x,
                                                                 CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, data)))
        return 0;
    auto data_ws = [&](cudnnConvolutionBwdDataAlgo_t algo, size_t *bytes) {
        return cudnnGetConvolutionBackwardDataWorkspaceSize(s->dnn, p->w, p->y, p->conv, p->x, algo, bytes);
    };
    if (!pick(s, p, data, got, limit, data_ws, &p->data, &p->data_math, "backward-data")) return 0;

    cudnnConvolutionBwdFilterAlgoPerf_t filt[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    if (!GMC_DNN(s, cudnnGetConvolutionBackwardFilterAlgorithm_v7(s->dnn, p->x, p->y, p->conv, p->w,
                                                                   CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, filt)))
        return 0;
    auto filt_ws = [&](cudnnConvolutionBwdFilterAlgo_t algo, size_t *bytes) {
        return cudnnGetConvolutionBackwardFilterWorkspaceSize(s->dnn, p->x, p->y, p->conv, p->w, algo, bytes);
    };
    return pick(s, p, filt, got, limit, filt_ws, &p->filter, &p->filter_math, "backward-filter");
}

static int plan_init(gmc_state *s, gmc_conv_plan *p, size_t limit)
{
    const int *k = p->key;
    if (!GMC_DNN(s, cudnnCreateTensorDescriptor(&p->x)) || !GMC_DNN(s, cudnnCreateTensorDescriptor(&p->y)) ||
        !GMC_DNN(s, cudnnCreateFilterDescriptor(&p->w)) || !GMC_DNN(s, cudnnCreateConvolutionDescriptor(&p->conv)))
        return 0;
    if (!GMC_DNN(s, cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, k[KEY_N], k[KEY_CIN],
                                               k[KEY_H], k[KEY_W])) ||
        !GMC_DNN(s, cudnnSetFilter4dDescriptor(p->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, k[KEY_COUT], k[KEY_CIN],
                                               k[KEY_K], k[KEY_K])) ||
        !GMC_DNN(s, cudnnSetConvolution2dDescriptor(p->conv, k[KEY_PAD], k[KEY_PAD], k[KEY_STRIDE], k[KEY_STRIDE],
                                                    1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT)))
        return 0;
    int on = 0, oc = 0;
    if (!GMC_DNN(s, cudnnGetConvolution2dForwardOutputDim(p->conv, p->x, p->w, &on, &oc, &p->ho, &p->wo)))
        return 0;
    const int ho = (k[KEY_H] + 2 * k[KEY_PAD] - k[KEY_K]) / k[KEY_STRIDE] + 1;
    const int wo = (k[KEY_W] + 2 * k[KEY_PAD] - k[KEY_K]) / k[KEY_STRIDE] + 1;
    if (on != k[KEY_N] || oc != k[KEY_COUT] || p->ho != ho || p->wo != wo) {
        gmc_fail(s, GM_ESHAPE, "conv2d: cuDNN gives a %dx%dx%dx%d output, gm_op_infer %dx%dx%dx%d", on, oc, p->ho,
                 p->wo, k[KEY_N], k[KEY_COUT], ho, wo);
        return 0;
    }
    if (!GMC_DNN(s, cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, on, oc, p->ho, p->wo)))
        return 0;
    return pick_algorithms(s, p, limit);
}

/* The plan of a shape: cached, or made with at most limit bytes of workspace. */
static gmc_conv_plan *plan_get(gmc_state *s, const int key[KEY_LEN], size_t limit)
{
    for (int i = 0; i < s->nplans; i++)
        if (!memcmp(s->plans[i]->key, key, sizeof s->plans[i]->key)) return s->plans[i];
    if (s->nplans == s->cap_plans) {
        int cap = s->cap_plans ? 2 * s->cap_plans : 16;
        gmc_conv_plan **grown = (gmc_conv_plan **)realloc(s->plans, sizeof *grown * (size_t)cap);
        if (!grown) {
            gmc_fail(s, GM_ENOMEM, "conv2d: out of host memory for %d plans", cap);
            return NULL;
        }
        s->plans = grown;
        s->cap_plans = cap;
    }
    gmc_conv_plan *p = (gmc_conv_plan *)calloc(1, sizeof *p);
    if (!p) {
        gmc_fail(s, GM_ENOMEM, "conv2d: out of host memory for a plan");
        return NULL;
    }
    memcpy(p->key, key, sizeof p->key);
    if (!plan_init(s, p, limit)) {
        plan_destroy(p);
        return NULL;
    }
    s->plans[s->nplans++] = p;
    return p;
}

size_t gmc_conv_scratch_bytes(gmc_state *s, const gm_op *op, gm_shape in, gm_shape out, int batch)
{
    (void)out;
    int key[KEY_LEN];
    key_of(op, in, batch, key);
    const gmc_conv_plan *p = plan_get(s, key, kPlanWorkspace);
    if (!p) return 0; /* recorded; reserve_scratch reports it */
    return gmc_round_up(p->ws, GMC_ALIGN) + stage_bytes(key);
}

static int misaligned(const void *p) { return ((uintptr_t)p & 15u) != 0; }

/* What one convolution call works with. */
typedef struct {
    const gmc_conv_plan *p;
    void *ws;       /* p->ws bytes */
    float *stage;   /* weight_floats of staging */
    size_t nw;
} conv_call;

static int conv_begin(gmc_state *s, const gm_op_args *a, conv_call *c)
{
    int key[KEY_LEN];
    key_of(a->op, a->in[0], a->batch, key);
    /* staging only when the weights need it (scratch_bytes counts it always) */
    const size_t stage = misaligned(a->w) || (a->dw && misaligned(a->dw)) ? stage_bytes(key) : 0;
    size_t room = s->scratch_bytes > stage ? (s->scratch_bytes - stage) / GMC_ALIGN * GMC_ALIGN : 0;
    c->p = plan_get(s, key, room);
    if (!c->p) return 0;
    const size_t ws = gmc_round_up(c->p->ws, GMC_ALIGN);
    char *base = (char *)gmc_scratch(s, ws + stage, "conv2d");
    if (!base && ws + stage) return 0; /* recorded; needing none, NULL scratch is fine */
    c->ws = base;
    c->stage = (float *)(base + ws);
    c->nw = weight_floats(key);
    return 1;
}

/* The weights as cuDNN may read them: in place, or copied to the aligned staging area. */
static const float *aligned_weights(gmc_state *s, const conv_call *c, const float *w)
{
    if (!misaligned(w)) return w;
    if (!GMC_CUDA(s, cudaMemcpyAsync(c->stage, w, sizeof(float) * c->nw, cudaMemcpyDeviceToDevice, s->stream)))
        return NULL;
    return c->stage;
}

void gmc_conv_forward(gmc_state *s, const gm_op_args *a)
{
    conv_call c;
    if (!conv_begin(s, a, &c)) return;
    const gmc_conv_plan *p = c.p;
    const float *w = aligned_weights(s, &c, a->w);
    const float one = 1.0f, zero = 0.0f;
    if (!w || !GMC_DNN(s, cudnnSetConvolutionMathType(p->conv, p->fwd_math)) ||
        !GMC_DNN(s, cudnnConvolutionForward(s->dnn, &one, p->x, a->x[0], p->w, w, p->conv, p->fwd, c.ws, p->ws, &zero,
                                            p->y, a->y)))
        return;
    if (a->op->p.conv.bias) gmc_add_bias(s, a->y, a->w + c.nw, a->batch, a->out.c, a->out.h * a->out.w);
}

void gmc_conv_backward(gmc_state *s, const gm_op_args *a)
{
    conv_call c;
    if (!conv_begin(s, a, &c)) return;
    const gmc_conv_plan *p = c.p;
    const float one = 1.0f, zero = 0.0f;
    /* dw += dL/dw: straight into dw, or into the staging area and then added */
    const int staged = misaligned(a->dw);
    if (!GMC_DNN(s, cudnnSetConvolutionMathType(p->conv, p->filter_math)) ||
        !GMC_DNN(s, cudnnConvolutionBackwardFilter(s->dnn, &one, p->x, a->x[0], p->y, a->dy, p->conv, p->filter,
                                                   c.ws, p->ws, staged ? &zero : &one, p->w,
                                                   staged ? c.stage : a->dw)))
        return;
    if (staged) gmc_accumulate(s, a->dw, c.stage, c.nw, 0);
    if (a->op->p.conv.bias) gmc_bias_grad(s, a->dw + c.nw, a->dy, a->batch, a->out.c, a->out.h * a->out.w);
    if (!a->dx[0]) return;
    /* the staging area is free again: stream order puts this copy after the add above */
    const float *w = aligned_weights(s, &c, a->w);
    if (!w || !GMC_DNN(s, cudnnSetConvolutionMathType(p->conv, p->data_math)))
        return;
    /* beta 0 overwrites without reading dx (cuDNN reads no output when beta is 0) */
    GMC_DNN(s, cudnnConvolutionBackwardData(s->dnn, &one, p->w, w, p->y, a->dy, p->conv, p->data, c.ws, p->ws,
                                            a->dx_set[0] ? &zero : &one, p->x, a->dx[0]));
}

/* ---- linear ------------------------------------------------------------------ */

void gmc_linear_forward(gmc_state *s, const gm_op_args *a)
{
    const gm_linear_params *p = &a->op->p.linear;
    const float one = 1.0f, zero = 0.0f;
    if (p->bias) gmc_fill_rows(s, a->y, a->w + (size_t)p->out * p->in, a->batch, p->out);
    /* y^T (out x n) = op_T(W^T stored in x out) x^T (in x n); the bias rows are added (beta 1) */
    GMC_BLAS(s, cublasSgemm(s->blas, CUBLAS_OP_T, CUBLAS_OP_N, p->out, a->batch, p->in, &one, a->w, p->in, a->x[0],
                            p->in, p->bias ? &one : &zero, a->y, p->out));
}

void gmc_linear_backward(gmc_state *s, const gm_op_args *a)
{
    const gm_linear_params *p = &a->op->p.linear;
    const float one = 1.0f, zero = 0.0f;
    /* dW^T (in x out) += x^T (in x n) op_T(dy^T stored out x n) */
    if (!GMC_BLAS(s, cublasSgemm(s->blas, CUBLAS_OP_N, CUBLAS_OP_T, p->in, p->out, a->batch, &one, a->x[0], p->in,
                                 a->dy, p->out, &one, a->dw, p->in)))
        return;
    if (p->bias) gmc_bias_grad(s, a->dw + (size_t)p->out * p->in, a->dy, a->batch, p->out, 1);
    if (!a->dx[0]) return;
    /* dx^T (in x n) = W^T (in x out) dy^T (out x n); beta 0 does not read dx */
    GMC_BLAS(s, cublasSgemm(s->blas, CUBLAS_OP_N, CUBLAS_OP_N, p->in, a->batch, p->out, &one, a->w, p->in, a->dy,
                            p->out, a->dx_set[0] ? &zero : &one, a->dx[0], p->in));
}

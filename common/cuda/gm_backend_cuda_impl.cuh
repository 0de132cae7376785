/*
 * gm_backend_cuda_impl: the CUDA backend's private state and the functions its
 * three .cu files share (internal header; include from .cu files only).
 *
 *   gm_backend_cuda.cu       the gm_backend table: create/destroy, memory, timing,
 *                            the recorded first failure, dispatch
 *   gm_backend_cuda_ops.cu   own kernels: BN, pooling, element-wise, upsample,
 *                            dropout, losses, optimiser updates
 *   gm_backend_cuda_conv.cu  cuDNN convolutions (a plan per shape) and cuBLAS linear
 *
 * Every call goes on s->stream, in order. A void entry point (forward, backward,
 * update, copies) cannot return a status, so the first CUDA/cuBLAS/cuDNN failure
 * (or a misuse such as too little scratch) is recorded in s->fail and reported by
 * the next call that returns a status (loss, reserve_scratch, gm_backend_cuda_status).
 */
#ifndef GM_BACKEND_CUDA_IMPL_CUH
#define GM_BACKEND_CUDA_IMPL_CUH

#include <stddef.h>
#include <stdint.h>

/*
 * cuDNN 9 marks the legacy convolution API (cudnnConvolutionForward and its
 * descriptors) deprecated, but its headers emit the attribute only when
 * CUDNN_WARN_DEPRECATED is defined (cudnn_graph.h); keep it undefined so that
 * -Werror builds accept the API we deliberately use (the graph API would need
 * an engine search of its own for the same three operations).
 */
#ifdef CUDNN_WARN_DEPRECATED
#undef CUDNN_WARN_DEPRECATED
#endif
#include <cudnn.h>

/* The core headers are plain C without extern "C" of their own. */
extern "C" {
#include "gm_backend.h"
#include "gm_error.h"
#include "gm_rng.h"
}
#include "gm_backend_cuda.h"
#include "gm_cuda_check.h"

enum {
    GMC_THREADS = 256,         /* threads per block of every own kernel */
    GMC_LOSS_BLOCKS = 1024,    /* most blocks a loss reduction uses (partial sums kept) */
    GMC_MAX_BN_SPLITS = 64,    /* most blocks one BN channel's statistics are split over */
    GMC_ALIGN = 256            /* alignment of every region carved out of scratch */
};

/* What a loss leaves on the device: first bad index (ULLONG_MAX: none) and the sum. */
typedef struct {
    unsigned long long bad_pred, bad_label;
    double total;
    double partial[GMC_LOSS_BLOCKS];
} gmc_loss_dev;

/* The three fields copied back to the host after a loss (pinned memory). */
typedef struct {
    unsigned long long bad_pred, bad_label;
    double total;
} gmc_loss_host;

typedef struct gmc_conv_plan gmc_conv_plan;

typedef struct {
    int device, tf32;
    int max_blocks;             /* grid-stride kernels launch at most this many blocks */
    cudaStream_t stream;
    cublasHandle_t blas;
    cudnnHandle_t dnn;
    void *blas_ws;              /* cuBLAS workspace, set once so that GEMMs never allocate */
    size_t blas_ws_bytes;
    void *scratch;              /* op scratch (reserve_scratch) */
    size_t scratch_bytes;
    cudaEvent_t marks[GM_BACKEND_MARKS];
    int marked[GM_BACKEND_MARKS];
    gmc_loss_dev *loss_dev;     /* device */
    gmc_loss_host *loss_host;   /* pinned host */
    gmc_conv_plan **plans;      /* convolution plans, one per shape (batch included) */
    int nplans, cap_plans;
    gm_status fail;             /* first failure of a void call, GM_OK when none pending */
    gm_error fail_err;
} gmc_state;

/* ---- failure recording (gm_backend_cuda.cu) ------------------------------ */

/* Records code and message as the pending failure unless one is already pending. */
void gmc_fail(gmc_state *s, gm_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* 1 on success; otherwise records "file:line: call: message" and returns 0. */
int gmc_cuda_ok(gmc_state *s, cudaError_t rc, const char *call, const char *file, int line);
int gmc_blas_ok(gmc_state *s, cublasStatus_t rc, const char *call, const char *file, int line);
int gmc_dnn_ok(gmc_state *s, cudnnStatus_t rc, const char *call, const char *file, int line);

#define GMC_CUDA(s, call) gmc_cuda_ok((s), (call), #call, __FILE__, __LINE__)
#define GMC_BLAS(s, call) gmc_blas_ok((s), (call), #call, __FILE__, __LINE__)
#define GMC_DNN(s, call) gmc_dnn_ok((s), (call), #call, __FILE__, __LINE__)
/* Launch errors (bad configuration) show at once; execution errors at the next sync. */
#define GMC_LAUNCHED(s, name) gmc_cuda_ok((s), cudaGetLastError(), name, __FILE__, __LINE__)

/* For gm_status functions: like GM_CUBLAS_CHECK (gm_cuda_check.h), for cuDNN. */
#define GMC_CUDNN_CHECK(err, call)                                                              \
    do {                                                                                        \
        cudnnStatus_t gm_cudnn_rc_ = (call);                                                    \
        if (gm_cudnn_rc_ != CUDNN_STATUS_SUCCESS)                                               \
            return gm_error_set((err), GM_EDEVICE, "%s:%d: %s: %s (cudnnStatus %d)", __FILE__,  \
                                __LINE__, #call, cudnnGetErrorString(gm_cudnn_rc_),             \
                                (int)gm_cudnn_rc_);                                             \
    } while (0)

/* Blocks for a grid-stride loop over n items: at least 1, at most s->max_blocks. */
static inline unsigned gmc_blocks(const gmc_state *s, size_t n)
{
    size_t b = (n + GMC_THREADS - 1) / GMC_THREADS;
    if (b < 1) b = 1;
    if (b > (size_t)s->max_blocks) b = (size_t)s->max_blocks;
    return (unsigned)b;
}

static inline size_t gmc_round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

/* Scratch of at least bytes, or NULL after recording which op wanted how much. */
void *gmc_scratch(gmc_state *s, size_t bytes, const char *what);

/* ---- own kernels (gm_backend_cuda_ops.cu) ------------------------------- */

size_t gmc_op_aux_bytes(const gm_op *op, gm_shape in, gm_shape out, int batch);
/* Scratch of the ops other than convolution (batch normalisation's partial sums). */
size_t gmc_op_scratch_bytes(const gm_op *op, gm_shape in, gm_shape out, int batch);
void gmc_op_forward(gmc_state *s, const gm_op_args *a);
void gmc_op_backward(gmc_state *s, const gm_op_args *a);

gm_status gmc_loss(gmc_state *s, gm_loss_kind kind, const float *pred, const float *target,
                   const int32_t *labels, int n, int d, float scale, float *grad, float *loss,
                   gm_error *err);
void gmc_update(gmc_state *s, const gm_update *u, float *param, const float *grad, float *m, float *v,
                size_t n);

/* Helpers the convolution and linear code reuse. */
/* y[r][c][i] += b[c] over rows r < n, channels c < c, i < hw. */
void gmc_add_bias(gmc_state *s, float *y, const float *b, int n, int c, int hw);
/* y[r][c] = b[c]: rows of a bias, for a GEMM that then adds into them. */
void gmc_fill_rows(gmc_state *s, float *y, const float *b, int n, int c);
/* db[c] += sum over r < n, i < hw of dy[r][c][i]; deterministic (no atomics). */
void gmc_bias_grad(gmc_state *s, float *db, const float *dy, int n, int c, int hw);
/* dst = src (set) or dst += src, n floats. */
void gmc_accumulate(gmc_state *s, float *dst, const float *src, size_t n, int set);

/* ---- cuDNN and cuBLAS (gm_backend_cuda_conv.cu) ------------------------- */

size_t gmc_conv_scratch_bytes(gmc_state *s, const gm_op *op, gm_shape in, gm_shape out, int batch);
void gmc_conv_forward(gmc_state *s, const gm_op_args *a);
void gmc_conv_backward(gmc_state *s, const gm_op_args *a);
void gmc_linear_forward(gmc_state *s, const gm_op_args *a);
void gmc_linear_backward(gmc_state *s, const gm_op_args *a);
void gmc_conv_plans_free(gmc_state *s);

#endif

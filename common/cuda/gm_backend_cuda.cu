/*
 * The CUDA backend's gm_backend table: creation, memory, copies, timing, the
 * recorded first failure, and dispatch to the kernels (gm_backend_cuda_ops.cu)
 * and to cuDNN/cuBLAS (gm_backend_cuda_conv.cu). See gm_backend_cuda.h.
 */
#include "gm_backend_cuda_impl.cuh"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* cuBLAS's recommended workspace on Hopper; given once so that no GEMM allocates. */
static const size_t kBlasWorkspace = (size_t)32 << 20;

static gmc_state *st(gm_backend *be) { return (gmc_state *)be->impl; }

/* ---- failure recording --------------------------------------------------- */

void gmc_fail(gmc_state *s, gm_status code, const char *fmt, ...)
{
    if (s->fail != GM_OK) return; /* the first failure explains the rest */
    char msg[sizeof s->fail_err.msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s->fail = gm_error_set(&s->fail_err, code, "cuda backend: %s", msg);
}

int gmc_cuda_ok(gmc_state *s, cudaError_t rc, const char *call, const char *file, int line)
{
    if (rc == cudaSuccess) return 1;
    gmc_fail(s, GM_EDEVICE, "%s:%d: %s: %s (%s)", file, line, call, cudaGetErrorString(rc), cudaGetErrorName(rc));
    return 0;
}

int gmc_blas_ok(gmc_state *s, cublasStatus_t rc, const char *call, const char *file, int line)
{
    if (rc == CUBLAS_STATUS_SUCCESS) return 1;
    gmc_fail(s, GM_EDEVICE, "%s:%d: %s: %s (%s)", file, line, call, cublasGetStatusString(rc),
             cublasGetStatusName(rc));
    return 0;
}

int gmc_dnn_ok(gmc_state *s, cudnnStatus_t rc, const char *call, const char *file, int line)
{
    if (rc == CUDNN_STATUS_SUCCESS) return 1;
    gmc_fail(s, GM_EDEVICE, "%s:%d: %s: %s (cudnnStatus %d)", file, line, call, cudnnGetErrorString(rc), (int)rc);
    return 0;
}

/* Hands the pending failure to err and clears it, as cudaGetLastError does. */
static gm_status take_failure(gmc_state *s, gm_error *err)
{
    gm_status code = s->fail;
    if (code == GM_OK) return GM_OK;
    gm_error_set(err, code, "%s", s->fail_err.msg);
    s->fail = GM_OK;
    gm_error_clear(&s->fail_err);
    return code;
}

void *gmc_scratch(gmc_state *s, size_t bytes, const char *what)
{
    if (bytes <= s->scratch_bytes) return s->scratch;
    gmc_fail(s, GM_EINVAL, "%s needs %zu bytes of scratch but %zu are reserved (call reserve_scratch with "
             "the op's scratch_bytes for this batch)", what, bytes, s->scratch_bytes);
    return NULL;
}

/* ---- the table ----------------------------------------------------------- */

static int cuda_supports(const gm_backend *be, const gm_op *op)
{
    (void)be;
    return (unsigned)op->kind < GM_OP_KIND_COUNT;
}

static size_t cuda_aux_bytes(const gm_backend *be, const gm_op *op, gm_shape in, gm_shape out, int batch)
{
    (void)be;
    return gmc_op_aux_bytes(op, in, out, batch);
}

/* Convolutions choose their cuDNN algorithms here, once per shape (the plan is cached). */
static size_t cuda_scratch_bytes(const gm_backend *be, const gm_op *op, gm_shape in, gm_shape out, int batch)
{
    gmc_state *s = (gmc_state *)be->impl;
    if (op->kind == GM_OP_CONV2D) return gmc_conv_scratch_bytes(s, op, in, out, batch);
    return gmc_op_scratch_bytes(op, in, out, batch);
}

static gm_status cuda_reserve(gm_backend *be, size_t bytes, gm_error *err)
{
    gmc_state *s = st(be);
    /* a planning failure in scratch_bytes (cuDNN) surfaces here, where the net is built */
    gm_status pending = take_failure(s, err);
    if (pending != GM_OK) return pending;
    if (bytes <= s->scratch_bytes) return GM_OK;
    void *p = NULL;
    GM_CUDA_CHECK(err, cudaStreamSynchronize(s->stream)); /* queued work may still use the old one */
    if (s->scratch) GM_CUDA_CHECK(err, cudaFree(s->scratch));
    s->scratch = NULL;
    s->scratch_bytes = 0;
    cudaError_t rc = cudaMalloc(&p, gmc_round_up(bytes, GMC_ALIGN));
    if (rc != cudaSuccess) {
        (void)cudaGetLastError(); /* out of memory is not sticky: clear it */
        return gm_error_set(err, GM_ENOMEM, "cuda backend: cannot allocate %zu bytes of scratch: %s", bytes,
                            cudaGetErrorString(rc));
    }
    s->scratch = p;
    s->scratch_bytes = bytes;
    return GM_OK;
}

static void cuda_forward(gm_backend *be, const gm_op_args *a) { gmc_op_forward(st(be), a); }
static void cuda_backward(gm_backend *be, const gm_op_args *a) { gmc_op_backward(st(be), a); }

static gm_status cuda_loss(gm_backend *be, gm_loss_kind kind, const float *pred, const float *target,
                           const int32_t *labels, int n, int d, float scale, float *grad, float *loss,
                           gm_error *err)
{
    gmc_state *s = st(be);
    gm_status pending = take_failure(s, err); /* a failed forward makes the loss meaningless */
    if (pending != GM_OK) return pending;
    gm_status r = gmc_loss(s, kind, pred, target, labels, n, d, scale, grad, loss, err);
    if (r == GM_EDEVICE && s->fail != GM_OK) return take_failure(s, err); /* a recorded CUDA failure */
    if (r != GM_OK) return r;
    return take_failure(s, err); /* anything the loss's own calls recorded */
}

static void cuda_update(gm_backend *be, const gm_update *u, float *param, const float *grad, float *m,
                        float *v, size_t n)
{
    gmc_update(st(be), u, param, grad, m, v, n);
}

/* Device memory, zeroed on the stream (so it is zero before any later work on it).
 * At least GMC_ALIGN bytes, so that a zero-byte request still gets a pointer. */
static void *cuda_alloc(gm_backend *be, size_t bytes)
{
    gmc_state *s = st(be);
    size_t rounded = gmc_round_up(bytes ? bytes : 1, GMC_ALIGN);
    void *p = NULL;
    if (cudaMalloc(&p, rounded) != cudaSuccess) {
        (void)cudaGetLastError(); /* not sticky: the caller reports GM_ENOMEM */
        return NULL;
    }
    if (!GMC_CUDA(s, cudaMemsetAsync(p, 0, rounded, s->stream))) {
        (void)cudaFree(p);
        return NULL;
    }
    return p;
}

static void cuda_free(gm_backend *be, void *p)
{
    if (p) GMC_CUDA(st(be), cudaFree(p)); /* cudaFree waits for work that may use p */
}

static void cuda_zero(gm_backend *be, void *p, size_t bytes)
{
    gmc_state *s = st(be);
    if (bytes) GMC_CUDA(s, cudaMemsetAsync(p, 0, bytes, s->stream));
}

/* Copies are ordered with the stream's work and complete before returning. */
static void cuda_copy(gmc_state *s, void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
    if (!bytes) return;
    if (GMC_CUDA(s, cudaMemcpyAsync(dst, src, bytes, kind, s->stream)))
        GMC_CUDA(s, cudaStreamSynchronize(s->stream));
}

static void cuda_to_device(gm_backend *be, void *dst, const void *src, size_t bytes)
{
    cuda_copy(st(be), dst, src, bytes, cudaMemcpyHostToDevice);
}

static void cuda_to_host(gm_backend *be, void *dst, const void *src, size_t bytes)
{
    cuda_copy(st(be), dst, src, bytes, cudaMemcpyDeviceToHost);
}

static void cuda_sync(gm_backend *be)
{
    gmc_state *s = st(be);
    GMC_CUDA(s, cudaStreamSynchronize(s->stream));
}

static int valid_slot(gmc_state *s, int slot)
{
    if (slot >= 0 && slot < GM_BACKEND_MARKS) return 1;
    gmc_fail(s, GM_EINVAL, "timing mark %d is not in 0..%d", slot, GM_BACKEND_MARKS - 1);
    return 0;
}

static void cuda_mark(gm_backend *be, int slot)
{
    gmc_state *s = st(be);
    if (valid_slot(s, slot) && GMC_CUDA(s, cudaEventRecord(s->marks[slot], s->stream))) s->marked[slot] = 1;
}

static double cuda_elapsed_ms(gm_backend *be, int from, int to)
{
    gmc_state *s = st(be);
    if (!valid_slot(s, from) || !valid_slot(s, to)) return 0.0;
    if (!s->marked[from] || !s->marked[to]) {
        gmc_fail(s, GM_EINVAL, "elapsed_ms(%d, %d): mark %d was never recorded", from, to,
                 s->marked[from] ? to : from);
        return 0.0;
    }
    float ms = 0.0f;
    if (!GMC_CUDA(s, cudaEventSynchronize(s->marks[to]))) return 0.0;
    if (!GMC_CUDA(s, cudaEventElapsedTime(&ms, s->marks[from], s->marks[to]))) return 0.0;
    return (double)ms;
}

/* Frees whatever create got; every handle may be absent. Errors are ignored: the
 * device may be the reason we are tearing down. */
static void release(gmc_state *s)
{
    if (!s) return;
    if (s->stream) (void)cudaStreamSynchronize(s->stream);
    gmc_conv_plans_free(s);
    if (s->dnn) (void)cudnnDestroy(s->dnn);
    if (s->blas) (void)cublasDestroy(s->blas);
    for (int i = 0; i < GM_BACKEND_MARKS; i++)
        if (s->marks[i]) (void)cudaEventDestroy(s->marks[i]);
    if (s->blas_ws) (void)cudaFree(s->blas_ws);
    if (s->scratch) (void)cudaFree(s->scratch);
    if (s->loss_dev) (void)cudaFree(s->loss_dev);
    if (s->loss_host) (void)cudaFreeHost(s->loss_host);
    if (s->stream) (void)cudaStreamDestroy(s->stream);
    (void)cudaGetLastError();
    free(s);
}

static void cuda_destroy(gm_backend *be)
{
    gmc_state *s = st(be);
    (void)cudaSetDevice(s->device); /* the handles belong to the backend's device */
    release(s);
    free(be);
}

/* The device count, as gm_cuda_probe reports it: GM_EDEVICE with the runtime's reason. */
static gm_status check_device(int device, gm_error *err)
{
    int count = 0;
    cudaError_t rc = cudaGetDeviceCount(&count);
    if (rc != cudaSuccess) {
        (void)cudaGetLastError();
        return gm_error_set(err, GM_EDEVICE, "cuda backend: cudaGetDeviceCount: %s (%s)", cudaGetErrorString(rc),
                            cudaGetErrorName(rc));
    }
    if (device >= count)
        return gm_error_set(err, GM_EDEVICE, "cuda backend: device %d does not exist (%d visible)", device, count);
    return GM_OK;
}

/* Everything create needs; on failure the caller releases what was made. */
static gm_status setup(gmc_state *s, gm_error *err)
{
    GM_CUDA_CHECK(err, cudaSetDevice(s->device));
    int sms = 0;
    GM_CUDA_CHECK(err, cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, s->device));
    s->max_blocks = 8 * (sms > 0 ? sms : 16); /* enough resident blocks to fill every SM */
    if (cudnnGetVersion() / 10000 != CUDNN_MAJOR) /* a cuDNN wheel of another major version */
        return gm_error_set(err, GM_EDEVICE, "cuda backend: built with cuDNN %d but loaded cuDNN %zu",
                            CUDNN_VERSION, cudnnGetVersion());
    GM_CUDA_CHECK(err, cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
    GM_CUBLAS_CHECK(err, cublasCreate(&s->blas));
    GM_CUBLAS_CHECK(err, cublasSetStream(s->blas, s->stream));
    /* strict: plain FP32 GEMMs; tf32: tensor cores on FP32 data, as PyTorch's allow_tf32 */
    GM_CUBLAS_CHECK(err, cublasSetMathMode(s->blas, s->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    GM_CUDA_CHECK(err, cudaMalloc(&s->blas_ws, kBlasWorkspace));
    s->blas_ws_bytes = kBlasWorkspace;
    GM_CUBLAS_CHECK(err, cublasSetWorkspace(s->blas, s->blas_ws, s->blas_ws_bytes));
    GMC_CUDNN_CHECK(err, cudnnCreate(&s->dnn));
    GMC_CUDNN_CHECK(err, cudnnSetStream(s->dnn, s->stream));
    for (int i = 0; i < GM_BACKEND_MARKS; i++) GM_CUDA_CHECK(err, cudaEventCreate(&s->marks[i]));
    GM_CUDA_CHECK(err, cudaMalloc((void **)&s->loss_dev, sizeof *s->loss_dev));
    GM_CUDA_CHECK(err, cudaMallocHost((void **)&s->loss_host, sizeof *s->loss_host));
    GM_CUDA_CHECK(err, cudaStreamSynchronize(s->stream));
    return GM_OK;
}

extern "C" gm_status gm_backend_cuda_create(gm_backend **out, const gm_cuda_opts *opts, gm_error *err)
{
    if (!out) return gm_error_set(err, GM_EINVAL, "cuda backend: out is NULL");
    *out = NULL;
    if (!opts) return gm_error_set(err, GM_EINVAL, "cuda backend: opts is NULL");
    if (opts->device < 0)
        return gm_error_set(err, GM_EINVAL, "cuda backend: device %d is negative", opts->device);
    gm_status r = check_device(opts->device, err);
    if (r != GM_OK) return r;
    gm_backend *be = (gm_backend *)calloc(1, sizeof *be);
    gmc_state *s = (gmc_state *)calloc(1, sizeof *s);
    if (!be || !s) {
        free(be);
        free(s);
        return gm_error_set(err, GM_ENOMEM, "cuda backend: out of memory");
    }
    s->device = opts->device;
    s->tf32 = opts->tf32 != 0;
    r = setup(s, err);
    if (r != GM_OK) {
        release(s);
        free(be);
        return r;
    }
    be->name = "cuda";
    be->impl = s;
    be->supports_op = cuda_supports;
    be->aux_bytes = cuda_aux_bytes;
    be->scratch_bytes = cuda_scratch_bytes;
    be->reserve_scratch = cuda_reserve;
    be->forward = cuda_forward;
    be->backward = cuda_backward;
    be->loss = cuda_loss;
    be->update = cuda_update;
    be->alloc = cuda_alloc;
    be->free = cuda_free;
    be->zero = cuda_zero;
    be->to_device = cuda_to_device;
    be->to_host = cuda_to_host;
    be->sync = cuda_sync;
    be->mark = cuda_mark;
    be->elapsed_ms = cuda_elapsed_ms;
    be->status = gm_backend_cuda_status;
    be->destroy = cuda_destroy;
    *out = be;
    return GM_OK;
}

extern "C" void *gm_backend_cuda_stream(gm_backend *be) { return (void *)st(be)->stream; }

extern "C" gm_status gm_backend_cuda_status(gm_backend *be, gm_error *err)
{
    return take_failure(st(be), err);
}

/*
 * gm_cuda: device probe, per-rank device selection and the GPU self-test.
 * See gm_cuda.h. Every CUDA and cuBLAS call goes through the GM_*_CHECK macros
 * of gm_cuda_check.h; no function here keeps state between calls.
 */
#include "gm_cuda.h"
#include "gm_cuda_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace {

/*
 * cudaGetDeviceCount is the first call that needs the driver; without a GPU (or
 * without a driver) it fails cleanly with cudaErrorNoDevice (100) or
 * cudaErrorInsufficientDriver (35). Reports that as GM_EDEVICE with the
 * runtime's message, plus a hint where the runtime's wording misleads.
 */
gm_status device_count(int *count, gm_error *err)
{
    *count = 0;
    cudaError_t rc = cudaGetDeviceCount(count);
    if (rc != cudaSuccess) {
        (void)cudaGetLastError(); /* clear it: later calls must not report it again */
        *count = 0;
        int driver = 0;
        if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
        return gm_error_set(err, GM_EDEVICE, "cudaGetDeviceCount: %s (%s)%s", cudaGetErrorString(rc),
                            cudaGetErrorName(rc),
                            driver == 0 ? "; no NVIDIA driver is installed" : "");
    }
    if (*count <= 0) {
        const char *visible = getenv("CUDA_VISIBLE_DEVICES");
        return gm_error_set(err, GM_EDEVICE, "the CUDA runtime sees no device (CUDA_VISIBLE_DEVICES=%s)",
                            visible ? visible : "<unset>");
    }
    return GM_OK;
}

/* y = max(x, 0) over n floats; a grid-stride loop, so any grid size covers n. */
__global__ void relu_forward_kernel(const float *__restrict__ x, float *__restrict__ y, size_t n)
{
    size_t stride = (size_t)blockDim.x * gridDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* Self-test sizes: n is not a multiple of the block, and the grid is smaller
 * than n / block so that each thread loops; the GEMM is non-square in every
 * dimension so that a transposition or leading-dimension mistake shows. */
constexpr size_t kReluN = 4099;
constexpr int kReluBlocks = 4, kReluThreads = 256;
constexpr int kM = 37, kN = 19, kK = 23;
constexpr float kAlpha = 1.5f, kBeta = 0.5f;

/* Everything the self-test allocates, owned by gm_cuda_selftest, so that the
 * check macros in selftest_run may return early without leaking. */
struct selftest_res {
    float *hx, *hy, *ha, *hb, *hc;     /* host */
    float *dx, *dy, *da, *db, *dc;     /* device */
    cudaStream_t stream;
    cublasHandle_t blas;
};

gm_status relu_check(selftest_res *r, gm_error *err)
{
    const size_t bytes = kReluN * sizeof(float);
    for (size_t i = 0; i < kReluN; i++) /* multiples of 0.25 in [-12.5, 12.5], zeros included */
        r->hx[i] = (float)((int)((i * 37u) % 101u) - 50) * 0.25f;

    GM_CUDA_CHECK(err, cudaMalloc((void **)&r->dx, bytes));
    GM_CUDA_CHECK(err, cudaMalloc((void **)&r->dy, bytes));
    GM_CUDA_CHECK(err, cudaMemcpyAsync(r->dx, r->hx, bytes, cudaMemcpyHostToDevice, r->stream));
    /* all-ones bytes are NaN: an element the kernel misses cannot pass */
    GM_CUDA_CHECK(err, cudaMemsetAsync(r->dy, 0xff, bytes, r->stream));
    relu_forward_kernel<<<kReluBlocks, kReluThreads, 0, r->stream>>>(r->dx, r->dy, kReluN);
    GM_CUDA_CHECK(err, cudaGetLastError());
    GM_CUDA_CHECK(err, cudaMemcpyAsync(r->hy, r->dy, bytes, cudaMemcpyDeviceToHost, r->stream));
    GM_CUDA_CHECK(err, cudaStreamSynchronize(r->stream));

    for (size_t i = 0; i < kReluN; i++) {
        float want = r->hx[i] > 0.0f ? r->hx[i] : 0.0f;
        if (!(r->hy[i] == want)) /* exact: ReLU does no arithmetic */
            return gm_error_set(err, GM_EDEVICE, "gm_cuda_selftest: relu forward y[%zu] = %.9g, want %.9g (x = %.9g)",
                                i, (double)r->hy[i], (double)want, (double)r->hx[i]);
    }
    return GM_OK;
}

/*
 * C = alpha * A * B + beta * C with row-major A (M x K), B (K x N), C (M x N).
 * cuBLAS is column-major, and a row-major matrix is its transpose in column-major
 * order, so it computes C^T = alpha * B^T * A^T + beta * C^T: the operands swap,
 * m and n swap, and each leading dimension is the row length.
 */
gm_status sgemm_check(selftest_res *r, gm_error *err)
{
    const size_t na = (size_t)kM * kK, nb = (size_t)kK * kN, nc = (size_t)kM * kN;
    /* multiples of 1/8 and 1/4: exact in float (and TF32), so the sums are too */
    for (size_t i = 0; i < na; i++) r->ha[i] = (float)((int)((i * 7u) % 13u) - 6) / 8.0f;
    for (size_t i = 0; i < nb; i++) r->hb[i] = (float)((int)((i * 5u) % 11u) - 5) / 4.0f;
    for (size_t i = 0; i < nc; i++) r->hc[i] = (float)((int)(i % 7u) - 3) * 0.5f;

    GM_CUDA_CHECK(err, cudaMalloc((void **)&r->da, na * sizeof(float)));
    GM_CUDA_CHECK(err, cudaMalloc((void **)&r->db, nb * sizeof(float)));
    GM_CUDA_CHECK(err, cudaMalloc((void **)&r->dc, nc * sizeof(float)));
    GM_CUDA_CHECK(err, cudaMemcpyAsync(r->da, r->ha, na * sizeof(float), cudaMemcpyHostToDevice, r->stream));
    GM_CUDA_CHECK(err, cudaMemcpyAsync(r->db, r->hb, nb * sizeof(float), cudaMemcpyHostToDevice, r->stream));
    GM_CUDA_CHECK(err, cudaMemcpyAsync(r->dc, r->hc, nc * sizeof(float), cudaMemcpyHostToDevice, r->stream));

    const float alpha = kAlpha, beta = kBeta;
    GM_CUBLAS_CHECK(err, cublasSgemm(r->blas, CUBLAS_OP_N, CUBLAS_OP_N, kN, kM, kK, &alpha, r->db, kN,
                                     r->da, kK, &beta, r->dc, kN));
    /* hc still holds C's input until this copy lands, after the synchronise */
    float *got = r->hy; /* relu's output buffer is larger than C: reuse it */
    GM_CUDA_CHECK(err, cudaMemcpyAsync(got, r->dc, nc * sizeof(float), cudaMemcpyDeviceToHost, r->stream));
    GM_CUDA_CHECK(err, cudaStreamSynchronize(r->stream));

    for (int i = 0; i < kM; i++) {
        for (int j = 0; j < kN; j++) {
            double sum = 0.0, mag = 0.0;
            for (int p = 0; p < kK; p++) {
                double t = (double)r->ha[(size_t)i * kK + p] * (double)r->hb[(size_t)p * kN + j];
                sum += t;
                mag += t < 0 ? -t : t;
            }
            size_t ij = (size_t)i * kN + j;
            double want = (double)kAlpha * sum + (double)kBeta * (double)r->hc[ij];
            double tol = 1e-6 + 1e-5 * ((double)kAlpha * mag + (double)kBeta * (r->hc[ij] < 0 ? -r->hc[ij] : r->hc[ij]));
            double diff = (double)got[ij] - want;
            if (!(diff <= tol && -diff <= tol))
                return gm_error_set(err, GM_EDEVICE,
                                    "gm_cuda_selftest: cublasSgemm C[%d][%d] = %.9g, want %.9g (|diff| %.3g > tol %.3g)",
                                    i, j, (double)got[ij], want, diff < 0 ? -diff : diff, tol);
        }
    }
    return GM_OK;
}

gm_status selftest_run(selftest_res *r, gm_error *err)
{
    r->hx = (float *)malloc(kReluN * sizeof(float));
    r->hy = (float *)malloc(kReluN * sizeof(float));
    r->ha = (float *)malloc((size_t)kM * kK * sizeof(float));
    r->hb = (float *)malloc((size_t)kK * kN * sizeof(float));
    r->hc = (float *)malloc((size_t)kM * kN * sizeof(float));
    if (!r->hx || !r->hy || !r->ha || !r->hb || !r->hc)
        return gm_error_set(err, GM_ENOMEM, "gm_cuda_selftest: host buffers of %zu floats",
                            2 * kReluN + (size_t)(kM * kK + kK * kN + kM * kN));

    int count = 0;
    gm_status st = device_count(&count, err);
    if (st != GM_OK) return st;
    GM_CUDA_CHECK(err, cudaStreamCreateWithFlags(&r->stream, cudaStreamNonBlocking));
    GM_CUBLAS_CHECK(err, cublasCreate(&r->blas));
    GM_CUBLAS_CHECK(err, cublasSetStream(r->blas, r->stream));

    st = relu_check(r, err);
    if (st != GM_OK) return st;
    return sgemm_check(r, err);
}

/* Frees what selftest_run got; reports the first failure if st is still GM_OK
 * (a failing free after a passing test means the device is in trouble). */
gm_status selftest_free(selftest_res *r, gm_status st, gm_error *err)
{
    const char *what = NULL;
    if (r->blas && cublasDestroy(r->blas) != CUBLAS_STATUS_SUCCESS && !what) what = "cublasDestroy";
    float *dev[] = {r->dx, r->dy, r->da, r->db, r->dc};
    cudaError_t first = cudaSuccess;
    for (float *p : dev) {
        if (!p) continue;
        cudaError_t rc = cudaFree(p);
        if (rc != cudaSuccess && first == cudaSuccess) first = rc;
    }
    if (r->stream) {
        cudaError_t rc = cudaStreamDestroy(r->stream);
        if (rc != cudaSuccess && first == cudaSuccess) first = rc;
    }
    free(r->hx);
    free(r->hy);
    free(r->ha);
    free(r->hb);
    free(r->hc);
    if (st != GM_OK) return st;
    if (what) return gm_error_set(err, GM_EDEVICE, "gm_cuda_selftest: %s failed", what);
    if (first != cudaSuccess)
        return gm_error_set(err, GM_EDEVICE, "gm_cuda_selftest: freeing device memory: %s (%s)",
                            cudaGetErrorString(first), cudaGetErrorName(first));
    return GM_OK;
}

} // namespace

extern "C" gm_status gm_cuda_probe(gm_cuda_info *info, gm_error *err)
{
    if (!info) return gm_error_set(err, GM_EINVAL, "gm_cuda_probe: info is NULL");
    memset(info, 0, sizeof *info);
    /* none of these needs a device; a failure leaves 0 */
    if (cudaRuntimeGetVersion(&info->runtime_version) != cudaSuccess) info->runtime_version = 0;
    if (cudaDriverGetVersion(&info->driver_version) != cudaSuccess) info->driver_version = 0;
#ifdef GMORPH_HAVE_NCCL
    if (ncclGetVersion(&info->nccl_version) != ncclSuccess) info->nccl_version = 0;
#endif

    int count = 0;
    gm_status st = device_count(&count, err);
    if (st != GM_OK) return st;
    info->device_count = count;

    /* attributes, not cudaMemGetInfo: that would create a context on device 0 in
     * every rank that probes */
    cudaDeviceProp prop;
    GM_CUDA_CHECK(err, cudaGetDeviceProperties(&prop, 0));
    snprintf(info->name, sizeof info->name, "%s", prop.name);
    info->cc_major = prop.major;
    info->cc_minor = prop.minor;
    info->total_mem = prop.totalGlobalMem;
    info->multiprocessors = prop.multiProcessorCount;
    return GM_OK;
}

extern "C" gm_status gm_cuda_select_device(int local_rank, int *device, gm_error *err)
{
    if (local_rank < 0)
        return gm_error_set(err, GM_EINVAL, "gm_cuda_select_device: local rank %d is negative", local_rank);
    int count = 0;
    gm_status st = device_count(&count, err);
    if (st != GM_OK) return st;
    int d = local_rank % count;
    GM_CUDA_CHECK(err, cudaSetDevice(d));
    if (device) *device = d;
    return GM_OK;
}

extern "C" gm_status gm_cuda_selftest(gm_error *err)
{
    selftest_res r;
    memset(&r, 0, sizeof r);
    gm_status st = selftest_run(&r, err);
    return selftest_free(&r, st, err);
}

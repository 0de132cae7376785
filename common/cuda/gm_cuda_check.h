/*
 * gm_cuda_check: error-checking macros for CUDA, cuBLAS and NCCL calls, for use
 * in .cu files of the CUDA backend only (it includes the CUDA headers).
 *
 * Each macro evaluates the call once; on failure it stores "file:line: call:
 * library message (error name)" in err (which may be NULL) and returns
 * GM_EDEVICE from the enclosing function, which must therefore return gm_status
 * and must not own anything that needs freeing: keep allocations in the caller
 * (see gm_cuda_selftest) so that an early return leaks nothing.
 *
 * Kernel launches report launch errors through cudaGetLastError() and
 * execution errors at the next synchronising call; check both:
 *     kernel<<<g, b, 0, s>>>(...);
 *     GM_CUDA_CHECK(err, cudaGetLastError());
 *     GM_CUDA_CHECK(err, cudaStreamSynchronize(s));
 */
#ifndef GM_CUDA_CHECK_H
#define GM_CUDA_CHECK_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#ifdef GMORPH_HAVE_NCCL
#include <nccl.h>
#endif

extern "C" {
#include "gm_error.h"
}

#define GM_CUDA_CHECK(err, call)                                                                \
    do {                                                                                        \
        cudaError_t gm_cuda_rc_ = (call);                                                       \
        if (gm_cuda_rc_ != cudaSuccess) {                                                       \
            return gm_error_set((err), GM_EDEVICE, "%s:%d: %s: %s (%s)", __FILE__, __LINE__,    \
                                #call, cudaGetErrorString(gm_cuda_rc_),                         \
                                cudaGetErrorName(gm_cuda_rc_));                                 \
        }                                                                                       \
    } while (0)

#define GM_CUBLAS_CHECK(err, call)                                                              \
    do {                                                                                        \
        cublasStatus_t gm_cublas_rc_ = (call);                                                  \
        if (gm_cublas_rc_ != CUBLAS_STATUS_SUCCESS) {                                           \
            return gm_error_set((err), GM_EDEVICE, "%s:%d: %s: %s (%s)", __FILE__, __LINE__,    \
                                #call, cublasGetStatusString(gm_cublas_rc_),                    \
                                cublasGetStatusName(gm_cublas_rc_));                            \
        }                                                                                       \
    } while (0)

#ifdef GMORPH_HAVE_NCCL
#define GM_NCCL_CHECK(err, call)                                                                \
    do {                                                                                        \
        ncclResult_t gm_nccl_rc_ = (call);                                                      \
        if (gm_nccl_rc_ != ncclSuccess) {                                                       \
            return gm_error_set((err), GM_EDEVICE, "%s:%d: %s: %s (ncclResult %d)", __FILE__,   \
                                __LINE__, #call, ncclGetErrorString(gm_nccl_rc_),               \
                                (int)gm_nccl_rc_);                                              \
        }                                                                                       \
    } while (0)
#endif

#endif

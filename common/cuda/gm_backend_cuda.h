/*
 * gm_backend_cuda: the CUDA backend, the gm_backend table (gm_backend.h) on one
 * GPU: cuBLAS for matrix products, cuDNN for convolutions, own kernels for the
 * rest. All work goes on the backend's own stream, in order; memory from alloc
 * is device memory, so callers move data only with to_device / to_host (which
 * synchronise the stream) and never dereference it on the host.
 *
 * Plain C header, no CUDA types: it may be included from C files.
 */
#ifndef GM_BACKEND_CUDA_H
#define GM_BACKEND_CUDA_H

#include "gm_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int device; /* CUDA device index (gm_cuda_select_device picks it from the local rank) */
    /*
     * 1: matrix products and convolutions may use TF32 tensor cores (PyTorch's
     * default for convolutions); 0: strict float32, as the CPU backend.
     */
    int tf32;
} gm_cuda_opts;

/*
 * Creates the backend on opts->device (made current for the calling thread).
 * GM_EDEVICE with the CUDA, cuBLAS or cuDNN message when the device is missing
 * or a library fails to initialise.
 */
gm_status gm_backend_cuda_create(gm_backend **out, const gm_cuda_opts *opts, gm_error *err);

/* The backend's stream (a cudaStream_t), for NCCL collectives ordered with its work. */
void *gm_backend_cuda_stream(gm_backend *be);

#ifdef __cplusplus
}
#endif

#endif

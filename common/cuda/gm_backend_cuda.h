/*
 * gm_backend_cuda: the CUDA backend, the gm_backend table (gm_backend.h) on one
 * GPU: cuBLAS for matrix products, cuDNN for convolutions, own kernels for the
 * rest. All work goes on the backend's own stream, in order; memory from alloc
 * is device memory, so callers move data only with to_device / to_host (which
 * synchronise the stream) and never dereference it on the host.
 *
 * Pointers: every pointer in gm_op_args, and pred, target, labels and grad of
 * loss(), and the arrays of update() are device memory (from alloc). loss()
 * returns the scalar to host memory (*loss) and synchronises the stream; it
 * refuses host pointers for pred, target, labels and grad with GM_EINVAL.
 *
 * Failures: forward, backward, update and the copies return nothing, so the
 * first CUDA, cuBLAS or cuDNN failure among them (or a misuse, such as running
 * an op with less scratch than its scratch_bytes) is recorded and reported, then
 * cleared, by the next call that returns a status: loss(), reserve_scratch() or
 * gm_backend_cuda_status(). A kernel that faults while running shows only after
 * a call that waits for it (sync, to_host, loss).
 *
 * Determinism: no atomics in any sum (fixed-order reductions), deterministic
 * cuDNN algorithms where one fits in the scratch, dropout masks drawn by a
 * counter-based hash seeded from gm_op_args.rng: a run repeats bit for bit on the
 * same GPU and library versions.
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

/*
 * The failure recorded by an earlier void call (see above), with its message in
 * err, and clears it; GM_OK when none is pending. Waits for nothing.
 */
gm_status gm_backend_cuda_status(gm_backend *be, gm_error *err);

#ifdef __cplusplus
}
#endif

#endif

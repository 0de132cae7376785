/*
 * gm_backend: the one interface every compute backend (CPU, CUDA) implements.
 *
 * The executor (gm_net) and the optimisers only ever call through this table, so
 * no backend detail leaks into them: no #ifdef, no device pointers interpreted
 * outside the backend. A backend owns its scratch memory, reserved once before
 * training starts; forward, backward, loss and update calls allocate nothing.
 *
 * Gradient convention: backward ADDS into dw and into dx, except where dx_set
 * says to overwrite dx; so an activation read by two ops (a residual input) gets
 * the sum of both, and no gradient buffer needs zeroing before backward.
 */
#ifndef GM_BACKEND_H
#define GM_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "gm_error.h"
#include "gm_op.h"
#include "gm_rng.h"

/* Everything one op needs for one forward or backward call. */
typedef struct {
    const gm_op *op;
    gm_shape in[2], out; /* per-sample shapes; in[1] only for ADD */
    int batch;
    int train;           /* 1: batch statistics and dropout; 0: inference */
    int relu_after;      /* BATCHNORM2D only: y = max(0, bn(x)), and dy is masked by y > 0
                            before back-propagating (a ReLU folded in by the executor) */
    const float *x[2];   /* inputs, batch * numel(in[i]) */
    float *y;            /* output, batch * numel(out) */
    const float *w;      /* parameters (weights then bias, or gamma then beta); NULL if none */
    float *buf;          /* buffers (BN running mean then variance); NULL if none */
    void *aux;           /* op-private state kept from forward for backward */
    gm_rng *rng;         /* dropout masks */
    /* backward only */
    const float *dy;
    float *dx[2];        /* NULL where the gradient is not needed */
    int dx_set[2];       /* 1: dx[j] holds stale values, so write it instead of adding
                            (the executor marks the first writer of each buffer) */
    float *dw;
} gm_op_args;

typedef enum { GM_LOSS_CROSS_ENTROPY, GM_LOSS_L1, GM_LOSS_MSE } gm_loss_kind;

/* Hyper-parameters of one optimiser update over a flat parameter array. */
typedef struct {
    enum { GM_UPDATE_SGD, GM_UPDATE_ADAM, GM_UPDATE_ADAMW } kind;
    float lr, momentum, beta1, beta2, eps, weight_decay;
    int nesterov;
    long step; /* 1 for the first update (Adam bias correction) */
} gm_update;

enum { GM_BACKEND_MARKS = 4 };

typedef struct gm_backend gm_backend;

struct gm_backend {
    const char *name;
    void *impl; /* backend-private state */

    int (*supports_op)(const gm_backend *be, const gm_op *op);
    /* Bytes of op-private state kept between forward and backward. */
    size_t (*aux_bytes)(const gm_backend *be, const gm_op *op, gm_shape in, gm_shape out, int batch);
    /* Bytes of scratch an op needs during a call; the backend reserves the max. */
    size_t (*scratch_bytes)(const gm_backend *be, const gm_op *op, gm_shape in, gm_shape out, int batch);
    gm_status (*reserve_scratch)(gm_backend *be, size_t bytes, gm_error *err);

    void (*forward)(gm_backend *be, const gm_op_args *a);
    void (*backward)(gm_backend *be, const gm_op_args *a);

    /*
     * Loss averaged over the batch (cross-entropy) or over all elements (L1, MSE).
     * pred: n x d; target: n x d floats, or labels (n int32) for cross-entropy.
     * Writes d(loss)/d(pred), times scale, into grad (may be NULL) and the loss
     * into *loss. Returns GM_ENUMERIC for a non-finite loss or prediction and
     * GM_EINVAL for a label out of range, with a message naming the sample.
     */
    gm_status (*loss)(gm_backend *be, gm_loss_kind kind, const float *pred, const float *target,
                      const int32_t *labels, int n, int d, float scale, float *grad, float *loss,
                      gm_error *err);

    /* One optimiser update of n parameters; m and v are the optimiser's state. */
    void (*update)(gm_backend *be, const gm_update *u, float *param, const float *grad, float *m,
                   float *v, size_t n);

    void *(*alloc)(gm_backend *be, size_t bytes); /* zeroed; NULL on failure */
    void (*free)(gm_backend *be, void *p);
    void (*zero)(gm_backend *be, void *p, size_t bytes);
    void (*to_device)(gm_backend *be, void *dst, const void *src, size_t bytes);
    void (*to_host)(gm_backend *be, void *dst, const void *src, size_t bytes);
    void (*sync)(gm_backend *be);

    /*
     * Latency timing, the one mechanism for every backend: mark(be, slot) records
     * "now" in the backend's execution order (the CPU's monotonic clock; a CUDA
     * event on the backend's stream, so nothing waits), and elapsed_ms(be, a, b)
     * waits until mark b has happened and returns the milliseconds from mark a to
     * mark b. Slots are 0 .. GM_BACKEND_MARKS - 1.
     */
    void (*mark)(gm_backend *be, int slot);
    double (*elapsed_ms)(gm_backend *be, int from, int to);

    /*
     * The first failure since the last call that reported one, then cleared:
     * forward, backward, update and the copies return nothing, so a device
     * backend records a failed launch or library call and the executor asks
     * here at the end of each forward and backward. The CPU backend cannot fail
     * there and always returns GM_OK.
     */
    gm_status (*status)(gm_backend *be, gm_error *err);

    void (*destroy)(gm_backend *be); /* frees the backend itself */
};

/* The CPU backend (common/cpu/, gmorph_cpu): OpenBLAS for matrix products, OpenMP over nthreads. */
gm_status gm_backend_cpu_create(gm_backend **out, int nthreads, gm_error *err);

/*
 * The OpenBLAS kernel family in use ("Cooperlake", "Haswell", ...). OpenBLAS picks
 * it when loaded, from the CPU or from OPENBLAS_CORETYPE; a forced AVX2 family on
 * an AVX-512 CPU halves GEMM speed, so programs print it.
 */
const char *gm_backend_cpu_blas_core(void);

/* NULL-safe destructor for any backend. */
void gm_backend_free(gm_backend *be);

#endif

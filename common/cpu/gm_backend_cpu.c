/*
 * The CPU backend: the gm_backend table over gm_cpu_kernels.
 * Memory is host memory aligned to 64 bytes; "device" copies are memcpy.
 */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "gm_backend.h"
#include "gm_clock.h"
#include "gm_cpu_kernels.h"

char *openblas_get_corename(void); /* OpenBLAS extension, absent from some cblas.h */

const char *gm_backend_cpu_blas_core(void) { return openblas_get_corename(); }

typedef struct {
    int nthreads;
    float *scratch;
    size_t scratch_bytes;
    double marks[GM_BACKEND_MARKS]; /* seconds, gm_now_s */
} cpu_state;

static cpu_state *st(gm_backend *be) { return be->impl; }

static int cpu_supports(const gm_backend *be, const gm_op *op)
{
    (void)be;
    return (unsigned)op->kind < GM_OP_KIND_COUNT;
}

static size_t cpu_aux_bytes(const gm_backend *be, const gm_op *op, gm_shape in, gm_shape out, int batch)
{
    (void)be;
    return gm_cpu_op_aux_bytes(op, in, out, batch);
}

static size_t cpu_scratch_bytes(const gm_backend *be, const gm_op *op, gm_shape in, gm_shape out, int batch)
{
    if (op->kind != GM_OP_CONV2D) return 0;
    gm_op_args a = {.op = op, .in = {in, in}, .out = out, .batch = batch};
    gm_conv_dims d = gm_conv_dims_of(&a);
    return sizeof(float) * gm_cpu_conv_scratch_floats(&d, ((const cpu_state *)be->impl)->nthreads);
}

static void *cpu_alloc(gm_backend *be, size_t bytes)
{
    (void)be;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (p) memset(p, 0, rounded);
    return p;
}

static void cpu_free(gm_backend *be, void *p)
{
    (void)be;
    free(p);
}

static gm_status cpu_reserve(gm_backend *be, size_t bytes, gm_error *err)
{
    cpu_state *s = st(be);
    if (bytes <= s->scratch_bytes) return GM_OK;
    float *p = cpu_alloc(be, bytes);
    if (!p)
        return gm_error_set(err, GM_ENOMEM, "cpu backend: cannot allocate %zu bytes of scratch", bytes);
    free(s->scratch);
    s->scratch = p;
    s->scratch_bytes = bytes;
    return GM_OK;
}

static void cpu_forward(gm_backend *be, const gm_op_args *a)
{
    gm_cpu_op_forward(a, st(be)->scratch, st(be)->nthreads);
}

static void cpu_backward(gm_backend *be, const gm_op_args *a)
{
    gm_cpu_op_backward(a, st(be)->scratch, st(be)->nthreads);
}

static gm_status cpu_loss(gm_backend *be, gm_loss_kind kind, const float *pred, const float *target,
                          const int32_t *labels, int n, int d, float scale, float *grad, float *loss,
                          gm_error *err)
{
    (void)be;
    return gm_cpu_loss(kind, pred, target, labels, n, d, scale, grad, loss, err);
}

static void cpu_update(gm_backend *be, const gm_update *u, float *param, const float *grad, float *m,
                       float *v, size_t n)
{
    gm_cpu_update(u, param, grad, m, v, n, st(be)->nthreads);
}

static void cpu_zero(gm_backend *be, void *p, size_t bytes)
{
    (void)be;
    memset(p, 0, bytes);
}

static void cpu_copy(gm_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (dst != src) memcpy(dst, src, bytes);
}

static void cpu_sync(gm_backend *be) { (void)be; }

static gm_status cpu_status(gm_backend *be, gm_error *err)
{
    (void)be;
    (void)err;
    return GM_OK;
}

static void cpu_mark(gm_backend *be, int slot) { st(be)->marks[slot] = gm_now_s(); }

static double cpu_elapsed_ms(gm_backend *be, int from, int to)
{
    return 1e3 * (st(be)->marks[to] - st(be)->marks[from]);
}

static void cpu_destroy(gm_backend *be)
{
    free(st(be)->scratch);
    free(be->impl);
    free(be);
}

gm_status gm_backend_cpu_create(gm_backend **out, int nthreads, gm_error *err)
{
    *out = NULL;
    if (nthreads < 1 || nthreads > 1024)
        return gm_error_set(err, GM_EINVAL, "cpu backend: %d threads is not a valid count", nthreads);
    gm_backend *be = calloc(1, sizeof *be);
    cpu_state *s = calloc(1, sizeof *s);
    if (!be || !s) {
        free(be);
        free(s);
        return gm_error_set(err, GM_ENOMEM, "cpu backend: out of memory");
    }
    /* We parallelise around GEMM calls ourselves; OpenBLAS threads inside them would
     * oversubscribe the cores and serialise on OpenBLAS's internal lock. */
    openblas_set_num_threads(1);
    s->nthreads = nthreads;
    *be = (gm_backend){
        .name = "cpu", .impl = s, .supports_op = cpu_supports, .aux_bytes = cpu_aux_bytes,
        .scratch_bytes = cpu_scratch_bytes, .reserve_scratch = cpu_reserve, .forward = cpu_forward,
        .backward = cpu_backward, .loss = cpu_loss, .update = cpu_update, .alloc = cpu_alloc,
        .free = cpu_free, .zero = cpu_zero, .to_device = cpu_copy, .to_host = cpu_copy,
        .sync = cpu_sync, .mark = cpu_mark,
        .elapsed_ms = cpu_elapsed_ms, .status = cpu_status, .destroy = cpu_destroy};
    *out = be;
    return GM_OK;
}

/*
 * gm_tensor: a float32 NCHW tensor that owns its buffer and knows its device.
 *
 * The device is the backend that allocated the buffer (CPU memory for the CPU
 * backend, GPU memory for the CUDA one); host code reads and writes it only
 * through gm_tensor_to_host / gm_tensor_from_host. The executor works on slabs
 * it sizes itself; tensors are how data crosses an API (a batch in, logits out).
 */
#ifndef GM_TENSOR_H
#define GM_TENSOR_H

#include <stddef.h>

#include "gm_backend.h"

typedef struct {
    int n, c, h, w;
    float *data;    /* backend memory, n*c*h*w floats, contiguous NCHW */
    gm_backend *be; /* the device the data lives on */
} gm_tensor;

/* Allocates a zeroed n x shape tensor on be; GM_ESHAPE for a zero-sized shape. */
gm_status gm_tensor_create(gm_tensor *t, gm_backend *be, int n, gm_shape shape, gm_error *err);
/* Frees the buffer and clears t; a cleared or zeroed tensor is a no-op. */
void gm_tensor_free(gm_tensor *t);

static inline size_t gm_tensor_numel(const gm_tensor *t)
{
    return (size_t)t->n * (size_t)t->c * (size_t)t->h * (size_t)t->w;
}
static inline gm_shape gm_tensor_sample_shape(const gm_tensor *t) { return (gm_shape){t->c, t->h, t->w}; }

/* Copies count floats between host memory and the tensor, from element first. */
gm_status gm_tensor_from_host(gm_tensor *t, size_t first, const float *src, size_t count, gm_error *err);
gm_status gm_tensor_to_host(const gm_tensor *t, size_t first, float *dst, size_t count, gm_error *err);

#endif

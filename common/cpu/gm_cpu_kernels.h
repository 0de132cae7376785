/*
 * gm_cpu_kernels: the CPU backend's kernels on raw pointers (internal header).
 *
 * Tensors are float32 NCHW and contiguous; every shape is passed in. Backward
 * kernels ADD into dw, and into dx unless told to overwrite it (dx_set, see
 * gm_backend.h). nt is the number of OpenMP threads; OpenBLAS itself
 * is kept single-threaded and called from inside our parallel regions, because
 * splitting the batch scales better on small images than splitting one GEMM.
 */
#ifndef GM_CPU_KERNELS_H
#define GM_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "gm_backend.h"

typedef struct {
    int n, cin, h, w;   /* input */
    int cout, ho, wo;   /* output */
    int k, stride, pad;
} gm_conv_dims;

gm_conv_dims gm_conv_dims_of(const gm_op_args *a);

/* Floats of scratch the convolution needs for nt threads. */
size_t gm_cpu_conv_scratch_floats(const gm_conv_dims *d, int nt);

/* y[n,cout,ho,wo] = conv(x, w[cout,cin,k,k]) + b (b may be NULL). */
void gm_cpu_conv_forward(const gm_conv_dims *d, const float *x, const float *w, const float *b,
                         float *y, float *scratch, int nt);
/* dw += dL/dw, db += dL/db (db may be NULL), dx += dL/dx (dx may be NULL; dx = dL/dx if dx_set). */
void gm_cpu_conv_backward(const gm_conv_dims *d, const float *x, const float *w, const float *dy,
                          float *dx, int dx_set, float *dw, float *db, float *scratch, int nt);

/* The direct path (gm_cpu_conv_direct.c) for "same" stride-1 convolutions. */
int gm_cpu_conv_direct_ok(const gm_conv_dims *d);
size_t gm_cpu_conv_direct_scratch_floats(const gm_conv_dims *d, int nt);
void gm_cpu_conv_direct_forward(const gm_conv_dims *d, const float *x, const float *w, const float *b,
                                float *y, float *scratch, int nt);
/* dw += dL/dw, db += dL/db (db may be NULL); 3x3 only (weights_ok). */
int gm_cpu_conv_direct_weights_ok(const gm_conv_dims *d);
size_t gm_cpu_conv_direct_weights_scratch_floats(const gm_conv_dims *d, int nt);
void gm_cpu_conv_direct_backward_weights(const gm_conv_dims *d, const float *x, const float *dy, float *dw,
                                         float *db, float *scratch, int nt);
/* dx += dL/dx, or dx = dL/dx when set */
void gm_cpu_conv_direct_backward_data(const gm_conv_dims *d, const float *w, const float *dy, float *dx,
                                      int set, float *scratch, int nt);

void gm_cpu_op_forward(const gm_op_args *a, float *scratch, int nt);
void gm_cpu_op_backward(const gm_op_args *a, float *scratch, int nt);
size_t gm_cpu_op_aux_bytes(const gm_op *op, gm_shape in, gm_shape out, int batch);

gm_status gm_cpu_loss(gm_loss_kind kind, const float *pred, const float *target,
                      const int32_t *labels, int n, int d, float scale, float *grad, float *loss,
                      gm_error *err);
void gm_cpu_update(const gm_update *u, float *param, const float *grad, float *m, float *v,
                   size_t n, int nt);

#endif

/*
 * Plain double-precision reference implementations of every op's forward pass,
 * written as directly as the definitions (no im2col, no threads). Tests use them
 * to check the optimised kernels and, by central finite differences, backward.
 */
#ifndef GM_TEST_REFERENCE_H
#define GM_TEST_REFERENCE_H

#include "gm_op.h"

typedef struct {
    const gm_op *op;
    gm_shape in[2], out;
    int batch, train;
    const double *x[2];
    const double *w;      /* parameters, gmorph's order */
    const double *buf;    /* BN running mean, var (eval mode) */
    const double *mask;   /* dropout scale per output element (train mode) */
} ref_args;

void ref_forward(const ref_args *a, double *y);

/* Naive convolution backward: dx (may be NULL), dw and db (may be NULL) are set, not added. */
void ref_conv_backward(const gm_conv_params *p, gm_shape in, gm_shape out, int batch, const double *x,
                       const double *w, const double *dy, double *dx, double *dw, double *db);

/* Nearest upsampling backward: dx (batch x in) is set to the sum of each pixel's f*f copies' dy. */
void ref_upsample_backward(int factor, gm_shape in, int batch, const double *dy, double *dx);

#endif

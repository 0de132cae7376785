/*
 * gm_stitch: start a merged block close to its teacher, without training.
 *
 * A merge makes block b read X_A (another block's input, or a layer-skipped
 * map) in place of the X_B its weights were trained on. Fitting
 *
 *     M, c  =  argmin  sum over probe pixels of ||M x_a + c - x_b||^2 + lambda ||M||^2
 *
 * in closed form (every pixel of a probe batch is one observation; float64
 * normal equations, ridge lambda relative to the features' variance) and
 * folding x -> M x + c into b's first convolution or linear layer,
 *
 *     W'[o,i,:,:] = sum_j W[o,j,:,:] M[j,i],   bias'[o] = bias[o] + sum_j sum_kl W[o,j,k,l] c[j],
 *
 * makes b compute nearly what it computed on X_B, at no latency cost: the
 * weights change, the graph does not. ZipIt! (ICLR'24) and PLeaS (CVPR'25)
 * merge trained networks the same way, by per-layer least squares.
 *
 * The fold is exact in a layer's interior; at a zero-padded border the padding
 * of X_B was 0 where the folded layer sees M*0 + c = c, so border outputs differ
 * by the constant's share (tests/test_stitch.c measures it). A convolution
 * without bias hands the constant to the BatchNorm after it (its running mean
 * moves by -W c: exact at inference; batch statistics absorb it anyway).
 *
 * This module is the arithmetic on host arrays: fitting, folding into a block's
 * weights, setting an adapter. gm_stitch_graph.h applies it to a candidate.
 */
#ifndef GM_STITCH_H
#define GM_STITCH_H

#include <stddef.h>

#include "gm_block.h"

/* Running sums of the normal equations for x_a (ca channels) -> x_b (cb channels). */
typedef struct gm_stitch_acc gm_stitch_acc;

gm_status gm_stitch_acc_create(gm_stitch_acc **out, int ca, int cb, gm_error *err);
void gm_stitch_acc_free(gm_stitch_acc *a);
/*
 * Adds n samples of NCHW maps on the host: xa is n x ca x hw, xb n x cb x hw
 * (the same pixels: callers resample first). Every pixel is one observation.
 */
void gm_stitch_acc_add(gm_stitch_acc *a, const float *xa, const float *xb, int n, size_t hw);

/* A solved stitch. Owns its arrays (gm_stitch_fit_free). */
typedef struct {
    int ca, cb;
    double *M;              /* cb x ca, row-major: M[j * ca + i] */
    double *c;              /* cb */
    double *mean_mx;        /* cb: mean of M x_a over the probe */
    double *var_mx;         /* cb: variance of M x_a over the probe (an adapter's BatchNorm statistics) */
    double residual;        /* sum ||M x_a + c - x_b||^2 / sum ||x_b - mean(x_b)||^2: 0 perfect, 1 as bad as a constant */
    double plain_residual;  /* the same for x_a -> x_a (the merge without a stitch); NAN unless ca == cb */
    double pixels;          /* observations */
} gm_stitch_fit;

/*
 * Solves the ridge least squares from the sums (lambda = ridge * mean feature
 * variance; 1e-4 keeps dead channels from blowing M up). Fails (GM_ENUMERIC)
 * on fewer than 2 observations or a non-finite result. fit is overwritten.
 */
gm_status gm_stitch_solve(const gm_stitch_acc *a, double ridge, gm_stitch_fit *fit, gm_error *err);
/* An unset fit of ca -> cb channels (its arrays allocated, values unset): for maps made otherwise. */
gm_status gm_stitch_fit_alloc(gm_stitch_fit *fit, int ca, int cb, gm_error *err);
void gm_stitch_fit_free(gm_stitch_fit *fit);

/* How a stitch can enter a block (gm_stitch_foldable). */
typedef enum {
    GM_STITCH_NONE,     /* the block starts non-linearly (max pool, ReLU, BatchNorm): stitch its children */
    GM_STITCH_FOLD,     /* every op that reads the input is a convolution or linear layer (through
                           flatten, average pooling without padding or upsampling, which commute with M) */
    GM_STITCH_PARTIAL   /* as FOLD, but an identity shortcut also adds the raw input: it keeps X_A
                           (gm_fgraph_project_seams gives such a block a 1x1 convolution to fold into) */
} gm_stitch_kind;

gm_stitch_kind gm_stitch_foldable(const gm_block *b);

/*
 * Folds x -> M x + c (square: the block's input channels, fit->ca == fit->cb ==
 * in.c) into block b's weights: params and buffers are the block's own slices,
 * laid out as gm_net lays them (per op, weights then bias; BatchNorm gamma,
 * beta, then running mean, variance). *dropped counts constants that found no
 * bias or BatchNorm to go to (their share is lost). GM_EINVAL when the block is
 * GM_STITCH_NONE or the sizes disagree.
 */
gm_status gm_stitch_fold(const gm_block *b, gm_shape in, float *params, float *buffers, const gm_stitch_fit *fit,
                         int *dropped, gm_error *err);

/*
 * Sets an adapter (gm_fgraph_adapter: [average pool] 1x1 convolution, BatchNorm
 * [upsample]) to compute x -> M x + c at inference: the convolution's weights are
 * M; the BatchNorm's running statistics are those of M x on the probe and its
 * gamma and beta undo them and add c, so batch statistics while fine-tuning
 * start where inference is. GM_EINVAL if b has no such convolution or the
 * sizes disagree.
 */
gm_status gm_stitch_set_adapter(const gm_block *b, float *params, float *buffers, const gm_stitch_fit *fit,
                                gm_error *err);

/* Index of the adapter's 1x1 convolution, or -1. */
int gm_stitch_adapter_conv(const gm_block *b);

/*
 * The output fit, the alternative to mapping the input: refit op k of block b
 * (a convolution or linear layer that reads the block input directly, or
 * through flatten) so that on the new input X_A it computes what it computed
 * on X_B: regress the difference of its outputs, teacher minus now, on its
 * receptive fields (a convolution's k x k patches with their zero padding, so
 * borders are fitted too; a linear layer's whole input). The fit's M is then
 * the change of the weights (ridge: towards no change) and c that of the bias.
 *
 * gm_stitch_refittable: 1 when op k is such an op. gm_stitch_patches: one
 * sample's receptive fields for op k, (cin k k) rows of ho wo (a linear
 * layer's: its input as one column). gm_stitch_add_delta: W += M; the constant
 * goes to the bias or the BatchNorm after the op (*dropped when neither).
 */
int gm_stitch_refittable(const gm_block *b, int k);
void gm_stitch_patches(const gm_op *op, gm_shape in, const float *x, float *out);
gm_status gm_stitch_add_delta(const gm_block *b, int k, float *params, float *buffers, const gm_stitch_fit *fit,
                              int *dropped, gm_error *err);

#endif

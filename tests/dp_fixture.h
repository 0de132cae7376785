/*
 * dp_fixture: what the data-parallel tests (test_dp over MPI, test_nccl_dp over
 * NCCL) share: a failure counter that works under MPI, the tiny two-task net
 * and its distillation data, the same on every rank.
 *
 * They are plain MPI programs (CMocka's output and longjmp do not mix well with
 * collectives): every rank counts its failures with DP_CHECK, and every rank
 * exits 1 if any rank failed.
 */
#ifndef DP_FIXTURE_H
#define DP_FIXTURE_H

#include <stdio.h>

#include "gm_finetune.h"

typedef struct {
    int rank, size;
    int failed;
} dp_checker;

/* MPI_Init, then c zeroed with this rank and the world's size. */
void dp_start(dp_checker *c, int *argc, char ***argv);
/* Every rank's failures summed, "NAME on N ranks: ok" printed by rank 0, MPI_Finalize: the exit code (collective). */
int dp_finish(const dp_checker *c, const char *name);

#define DP_CHECK(c, cond, ...)                                                        \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "rank %d: %s:%d: ", (c)->rank, __FILE__, __LINE__);       \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
            (c)->failed++;                                                            \
        }                                                                             \
    } while (0)

/* Distillation samples, then validation samples of task 0 and task 1. */
enum { DP_NFT = 60, DP_NVAL0 = 37, DP_NVAL1 = 23 };
extern const gm_shape dp_input;  /* 2x6x6 */
extern const int dp_heads[2];    /* the blocks whose outputs are tasks 0 and 1 */

/* A shared conv, then task 0's head and task 1's conv and head. */
gm_status dp_make_net(gm_net **net, gm_backend *be, int max_batch, uint64_t seed, gm_error *err);
/* n uniform values in [-1, 1). */
void dp_fill(float *x, size_t n, gm_rng *rng);
/* Logits of output k of net on n host samples, copied to the host array y. */
gm_status dp_run_net(gm_net *net, const float *x, long n, int k, float *y, gm_error *err);
/*
 * Random inputs; the teachers and the validation labels are another net of the
 * same shape (seed 99, computed on a one-thread CPU backend, so identical on
 * every rank and every device), so the student has something to learn.
 * orig_val = 1: with a negative threshold every run trains its whole budget.
 * Frees what it made on failure; else the caller frees d with gm_ft_data_free.
 */
gm_status dp_make_data(gm_ft_data *d, gm_error *err);

/*
 * One fine-tune of the net from its seed-7 initial weights (Adam, 3 epochs,
 * cosine, every run its whole budget), alone (group NULL) or in group; *net is
 * left for the caller to free.
 */
gm_status dp_finetune(gm_net **net, gm_backend *be, const gm_ft_data *d, int batch, int frozen_bn,
                      const gm_ft_group *group, gm_ft_result *r, gm_error *err);

/* 1 where every rank's n host floats equal rank 0's bit for bit, on every rank (collective). */
int dp_same_on_all_ranks(const float *x, size_t n);

/* The last rank's teachers turn NaN: every rank's fine-tune in group g must fail, none wait. */
void dp_check_failure_spreads(dp_checker *c, gm_backend *be, gm_ft_data *d, const gm_ft_group *g);

#endif

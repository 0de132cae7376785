/*
 * Data-parallel fine-tuning (gm_ft_group over MPI). Run under mpirun with any
 * number of ranks: every rank fine-tunes the same tiny two-task net on the same
 * distillation data, once as a group of all ranks and once alone. The group's
 * weights must match the lone run's to float rounding, be identical on every
 * rank, and have moved; the group's validation accuracies must be the same on
 * every rank and agree with the lone run's. Also: batch-statistics BatchNorm
 * keeps the ranks identical, and a rank that fails makes every rank fail
 * instead of leaving the others waiting.
 *
 * A plain MPI program (CMocka's output and longjmp do not mix well with
 * collectives): every rank counts its failures, and every rank exits 1 if any
 * rank failed.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "gm_finetune.h"
#include "gm_group_mpi.h"
#include "gm_train.h"

typedef struct {
    int rank, size;
    int failed;
} checker;

#define CHECK(c, cond, ...)                                                           \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "rank %d: %s:%d: ", (c)->rank, __FILE__, __LINE__);       \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
            (c)->failed++;                                                            \
        }                                                                             \
    } while (0)

enum { NFT = 60, NVAL0 = 37, NVAL1 = 23 };
static const gm_shape input = {2, 6, 6};
static const int heads[2] = {1, 3};

/* A shared conv, then task 0's head and task 1's conv and head. */
static gm_status make_net(gm_net **net, gm_backend *be, int max_batch, uint64_t seed, gm_error *err)
{
    const gm_shape feat = {4, 6, 6};
    const gm_block blocks[4] = {gm_block_conv(2, 4, 3, 1, 1, 1, 1), gm_block_head(feat, 3),
                                gm_block_conv(4, 4, 3, 1, 1, 1, 1), gm_block_head(feat, 4)};
    const int parent[4] = {-1, 0, 0, 2};
    const gm_net_desc desc = {input, 4, blocks, parent};
    return gm_net_create(net, be, &desc, max_batch, seed, err);
}

static void fill(float *x, size_t n, gm_rng *rng)
{
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * gm_rng_uniform(rng) - 1.0f;
}

/* Logits of output k of net on n samples, to y. */
static gm_status run_net(gm_net *net, const float *x, long n, int k, float *y, gm_error *err)
{
    gm_status st = gm_net_forward(net, x, (int)n, 0, err);
    if (st == GM_OK) memcpy(y, gm_net_output(net, k), sizeof(float) * (size_t)n * gm_shape_numel(gm_net_output_shape(net, k)));
    return st;
}

/*
 * Random inputs; the teachers and the validation labels are another net of the
 * same shape, so the student has something to learn. orig_val = 1 and a
 * negative threshold: every run trains its whole budget.
 */
static gm_status make_data(gm_ft_data *d, gm_backend *be, gm_error *err)
{
    memset(d, 0, sizeof *d);
    d->n = 2;
    d->input = input;
    d->numel = gm_shape_numel(input);
    d->nft = NFT;
    d->nval[0] = NVAL0;
    d->nval[1] = NVAL1;
    d->classes[0] = 3;
    d->classes[1] = 4;
    gm_rng rng;
    gm_rng_seed(&rng, 5);
    gm_net *teacher = NULL;
    gm_status st = make_net(&teacher, be, NFT, 99, err);
    d->x_ft = malloc(sizeof(float) * NFT * d->numel);
    float *logits = malloc(sizeof(float) * NFT * 4);
    for (int t = 0; t < 2; t++) {
        d->teacher[t] = malloc(sizeof(float) * NFT * (size_t)d->classes[t]);
        d->x_val[t] = malloc(sizeof(float) * (size_t)d->nval[t] * d->numel);
        d->y_val[t] = malloc(sizeof(int32_t) * (size_t)d->nval[t]);
        d->orig_val[t] = 1.0;
        snprintf(d->task_name[t], sizeof d->task_name[t], "task%d", t);
    }
    int ok = d->x_ft && logits;
    for (int t = 0; t < 2; t++) ok &= d->teacher[t] && d->x_val[t] && d->y_val[t];
    if (st == GM_OK && !ok) st = gm_error_set(err, GM_ENOMEM, "out of memory");
    if (st == GM_OK) fill(d->x_ft, NFT * d->numel, &rng);
    for (int t = 0; st == GM_OK && t < 2; t++) {
        st = run_net(teacher, d->x_ft, NFT, t, d->teacher[t], err);
        fill(d->x_val[t], (size_t)d->nval[t] * d->numel, &rng);
        if (st == GM_OK) st = run_net(teacher, d->x_val[t], d->nval[t], t, logits, err);
        for (long i = 0; st == GM_OK && i < d->nval[t]; i++)
            d->y_val[t][i] = gm_top1(logits + i * d->classes[t], d->classes[t]);
    }
    free(logits);
    gm_net_free(teacher);
    if (st != GM_OK) gm_ft_data_free(d);
    return st;
}

/* One fine-tune from the seed-7 initial weights; net is left for the caller to free. */
static gm_status finetune(gm_net **net, gm_backend *be, const gm_ft_data *d, int batch, int frozen_bn,
                          const gm_ft_group *group, gm_ft_result *r, gm_error *err)
{
    gm_status st = make_net(net, be, batch > GM_FT_EVAL_BATCH ? batch : GM_FT_EVAL_BATCH, 7, err);
    const gm_ft_opts o = {.max_epochs = 3, .check_every = 1, .batch = batch, .lr = 1e-2f, .frozen_bn = frozen_bn,
                          .cosine = 1, .threshold = -1.0, .seed = 11, .group = group};
    if (st == GM_OK) st = gm_finetune(*net, heads, d, &o, r, err);
    return st;
}

/* 1 where every rank's n floats equal rank 0's bit for bit, on every rank. */
static int same_on_all_ranks(const float *x, size_t n)
{
    float *root = malloc(sizeof(float) * n);
    if (!root) return 0;
    memcpy(root, x, sizeof(float) * n);
    MPI_Bcast(root, (int)n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    int same = memcmp(root, x, sizeof(float) * n) == 0, all = 0;
    MPI_Allreduce(&same, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    free(root);
    return all;
}

/* The group run against the lone run, frozen BatchNorm (exact up to rounding). */
static void check_matches_alone(checker *c, gm_backend *be, const gm_ft_data *d, const gm_ft_group *g, int batch)
{
    gm_error err;
    gm_net *grp = NULL, *one = NULL, *init = NULL;
    gm_ft_result rg, r1;
    gm_status st = finetune(&grp, be, d, batch, 1, g, &rg, &err);
    CHECK(c, st == GM_OK, "batch %d: group fine-tune: %s", batch, err.msg);
    gm_status st1 = finetune(&one, be, d, batch, 1, NULL, &r1, &err);
    CHECK(c, st1 == GM_OK, "batch %d: lone fine-tune: %s", batch, err.msg);
    gm_status sti = make_net(&init, be, batch, 7, &err);
    if (st != GM_OK || st1 != GM_OK || sti != GM_OK) goto out;

    const size_t n = gm_net_nparams(one);
    const float *a = gm_net_params(grp), *b = gm_net_params(one), *p0 = gm_net_params(init);
    double worst = 0.0, moved = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double excess = fabs((double)a[i] - b[i]) / fmax(1.0, fabs((double)b[i]));
        if (excess > worst) worst = excess, at = i;
        moved = fmax(moved, fabs((double)b[i] - p0[i]));
    }
    CHECK(c, worst <= 1e-4, "batch %d: group weight %zu is %.9g, alone %.9g", batch, at, (double)a[at],
          (double)b[at]);
    CHECK(c, moved > 1e-3, "batch %d: fine-tuning moved no weight by more than %g", batch, moved);
    CHECK(c, same_on_all_ranks(a, n), "batch %d: the ranks' weights differ", batch);

    CHECK(c, rg.status == r1.status && rg.epochs == r1.epochs && rg.epochs == 3,
          "batch %d: group %s after %d epochs, alone %s after %d", batch, gm_ft_status_name(rg.status), rg.epochs,
          gm_ft_status_name(r1.status), r1.epochs);
    float acc[2] = {(float)rg.val[0], (float)rg.val[1]};
    CHECK(c, same_on_all_ranks(acc, 2), "batch %d: the ranks' validation accuracies differ", batch);
    /* The weights differ by rounding: allow one sample whose top class flips. */
    for (int t = 0; t < 2; t++)
        CHECK(c, fabs(rg.val[t] - r1.val[t]) <= 1.0 / (double)d->nval[t] + 1e-12,
              "batch %d: task %d validation accuracy %.4f in the group, %.4f alone", batch, t, rg.val[t], r1.val[t]);
    /* And the same as the public, ungrouped evaluation of the group's weights. */
    double acc1[2];
    st = gm_ft_eval(grp, heads, d, acc1, &err);
    CHECK(c, st == GM_OK, "gm_ft_eval: %s", err.msg);
    for (int t = 0; st == GM_OK && t < 2; t++)
        CHECK(c, fabs(acc1[t] - rg.val[t]) <= 1.0 / (double)d->nval[t] + 1e-12,
              "batch %d: task %d: group accuracy %.4f, gm_ft_eval %.4f", batch, t, rg.val[t], acc1[t]);
    if (c->rank == 0)
        printf("batch %d on %d ranks: max relative weight difference %.3g, val %.4f %.4f (alone %.4f %.4f)\n", batch,
               c->size, worst, rg.val[0], rg.val[1], r1.val[0], r1.val[1]);
out:
    gm_net_free(grp);
    gm_net_free(one);
    gm_net_free(init);
}

/* Batch statistics: not the lone run's numbers, but the ranks must stay identical. */
static void check_batch_stats(checker *c, gm_backend *be, const gm_ft_data *d, const gm_ft_group *g)
{
    gm_error err;
    gm_net *net = NULL;
    gm_ft_result r;
    gm_status st = finetune(&net, be, d, 10, 0, g, &r, &err);
    CHECK(c, st == GM_OK, "batch statistics: %s", err.msg);
    if (st == GM_OK) {
        CHECK(c, same_on_all_ranks(gm_net_params(net), gm_net_nparams(net)),
              "batch statistics: the ranks' weights differ");
        CHECK(c, same_on_all_ranks(gm_net_buffers(net), gm_net_nbuffers(net)),
              "batch statistics: the ranks' running statistics differ");
    }
    gm_net_free(net);
}

/* The last rank's teachers are NaN: its loss fails, and every rank must return an error. */
static void check_failure_spreads(checker *c, gm_backend *be, gm_ft_data *d, const gm_ft_group *g)
{
    float *saved = malloc(sizeof(float) * NFT * 3);
    if (!saved) {
        CHECK(c, 0, "out of memory");
        return;
    }
    memcpy(saved, d->teacher[0], sizeof(float) * NFT * 3);
    if (c->rank == c->size - 1)
        for (int i = 0; i < NFT * 3; i++) d->teacher[0][i] = NAN;
    gm_error err;
    gm_net *net = NULL;
    gm_ft_result r;
    gm_status st = finetune(&net, be, d, 10, 1, g, &r, &err);
    CHECK(c, st != GM_OK, "a failing rank went unnoticed");
    if (st != GM_OK && c->rank == 0) printf("rank 0 after a rank failed: %s\n", err.msg);
    gm_net_free(net);
    memcpy(d->teacher[0], saved, sizeof(float) * NFT * 3);
    free(saved);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    checker c = {0};
    MPI_Comm_rank(MPI_COMM_WORLD, &c.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c.size);
    gm_group_mpi gm;
    const gm_ft_group g = gm_group_mpi_make(&gm, MPI_COMM_WORLD);
    CHECK(&c, g.rank == c.rank && g.size == c.size, "group: rank %d of %d", g.rank, g.size);

    gm_error err;
    gm_backend *be = NULL;
    gm_ft_data d;
    gm_status st = gm_backend_cpu_create(&be, 1, &err);
    if (st == GM_OK) st = make_data(&d, be, &err);
    CHECK(&c, st == GM_OK, "set-up: %s", err.msg);
    /*
     * Odd batches: L1's head-bias gradient is a sum of +-1/(batch * classes),
     * exactly 0 on an even batch when the signs balance; summed in another
     * order it is a rounding residue instead, which Adam's first step turns
     * into a step of up to lr, and the runs part by far more than rounding.
     */
    if (st == GM_OK) {
        check_matches_alone(&c, be, &d, &g, 9); /* 6 steps an epoch; with 4 ranks, shards of 3, 2, 2, 2 */
        check_matches_alone(&c, be, &d, &g, 3);  /* with 4 ranks, one rank has no rows */
        check_batch_stats(&c, be, &d, &g);
        if (c.size > 1) check_failure_spreads(&c, be, &d, &g);
        gm_ft_data_free(&d);
    }
    gm_backend_free(be);

    int failed = 0;
    MPI_Allreduce(&c.failed, &failed, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (c.rank == 0) printf("test_dp on %d ranks: %s (%d failed checks)\n", c.size, failed ? "FAILED" : "ok", failed);
    MPI_Finalize();
    return failed ? 1 : 0;
}

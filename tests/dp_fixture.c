/* See dp_fixture.h. */
#include "dp_fixture.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "gm_train.h"

const gm_shape dp_input = {2, 6, 6};
const int dp_heads[2] = {1, 3};

gm_status dp_make_net(gm_net **net, gm_backend *be, int max_batch, uint64_t seed, gm_error *err)
{
    const gm_shape feat = {4, 6, 6};
    const gm_block blocks[4] = {gm_block_conv(2, 4, 3, 1, 1, 1, 1), gm_block_head(feat, 3),
                                gm_block_conv(4, 4, 3, 1, 1, 1, 1), gm_block_head(feat, 4)};
    const int parent[4] = {-1, 0, 0, 2};
    const gm_net_desc desc = {dp_input, 4, blocks, parent};
    return gm_net_create(net, be, &desc, max_batch, seed, err);
}

void dp_fill(float *x, size_t n, gm_rng *rng)
{
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * gm_rng_uniform(rng) - 1.0f;
}

gm_status dp_run_net(gm_net *net, const float *x, long n, int k, float *y, gm_error *err)
{
    gm_backend *be = gm_net_backend(net);
    gm_status st = gm_net_forward(net, x, (int)n, 0, err);
    if (st == GM_OK)
        be->to_host(be, y, gm_net_output(net, k),
                    sizeof(float) * (size_t)n * gm_shape_numel(gm_net_output_shape(net, k)));
    return st;
}

gm_status dp_make_data(gm_ft_data *d, gm_error *err)
{
    memset(d, 0, sizeof *d);
    d->n = 2;
    d->input = dp_input;
    d->numel = gm_shape_numel(dp_input);
    d->nft = DP_NFT;
    d->nval[0] = DP_NVAL0;
    d->nval[1] = DP_NVAL1;
    d->classes[0] = 3;
    d->classes[1] = 4;
    gm_rng rng;
    gm_rng_seed(&rng, 5);
    gm_backend *cpu = NULL;
    gm_net *teacher = NULL;
    gm_status st = gm_backend_cpu_create(&cpu, 1, err);
    if (st == GM_OK) st = dp_make_net(&teacher, cpu, DP_NFT, 99, err);
    d->x_ft = malloc(sizeof(float) * DP_NFT * d->numel);
    float *logits = malloc(sizeof(float) * DP_NFT * 4);
    for (int t = 0; t < 2; t++) {
        d->teacher[t] = malloc(sizeof(float) * DP_NFT * (size_t)d->classes[t]);
        d->x_val[t] = malloc(sizeof(float) * (size_t)d->nval[t] * d->numel);
        d->y_val[t] = malloc(sizeof(int32_t) * (size_t)d->nval[t]);
        d->orig_val[t] = 1.0;
        snprintf(d->task_name[t], sizeof d->task_name[t], "task%d", t);
    }
    int ok = d->x_ft && logits;
    for (int t = 0; t < 2; t++) ok &= d->teacher[t] && d->x_val[t] && d->y_val[t];
    if (st == GM_OK && !ok) st = gm_error_set(err, GM_ENOMEM, "out of memory");
    if (st == GM_OK) dp_fill(d->x_ft, DP_NFT * d->numel, &rng);
    for (int t = 0; st == GM_OK && t < 2; t++) {
        st = dp_run_net(teacher, d->x_ft, DP_NFT, t, d->teacher[t], err);
        dp_fill(d->x_val[t], (size_t)d->nval[t] * d->numel, &rng);
        if (st == GM_OK) st = dp_run_net(teacher, d->x_val[t], d->nval[t], t, logits, err);
        for (long i = 0; st == GM_OK && i < d->nval[t]; i++)
            d->y_val[t][i] = gm_top1(logits + i * d->classes[t], d->classes[t]);
    }
    free(logits);
    gm_net_free(teacher);
    gm_backend_free(cpu);
    if (st != GM_OK) gm_ft_data_free(d);
    return st;
}

gm_status dp_finetune(gm_net **net, gm_backend *be, const gm_ft_data *d, int batch, int frozen_bn,
                      const gm_ft_group *group, gm_ft_result *r, gm_error *err)
{
    gm_status st = dp_make_net(net, be, batch > GM_FT_EVAL_BATCH ? batch : GM_FT_EVAL_BATCH, 7, err);
    const gm_ft_opts o = {.max_epochs = 3, .check_every = 1, .batch = batch, .lr = 1e-2f, .frozen_bn = frozen_bn,
                          .cosine = 1, .threshold = -1.0, .seed = 11, .group = group};
    if (st == GM_OK) st = gm_finetune(*net, dp_heads, d, &o, r, err);
    return st;
}

int dp_same_on_all_ranks(const float *x, size_t n)
{
    float *root = malloc(sizeof(float) * n);
    int same = root != NULL, all = 0;
    if (root) {
        memcpy(root, x, sizeof(float) * n);
        MPI_Bcast(root, (int)n, MPI_FLOAT, 0, MPI_COMM_WORLD);
        same = memcmp(root, x, sizeof(float) * n) == 0;
    } else { /* still take part in the broadcast */
        float *tmp = calloc(n, sizeof(float));
        if (tmp) MPI_Bcast(tmp, (int)n, MPI_FLOAT, 0, MPI_COMM_WORLD);
        free(tmp);
    }
    free(root);
    MPI_Allreduce(&same, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    return all;
}

void dp_check_failure_spreads(dp_checker *c, gm_backend *be, gm_ft_data *d, const gm_ft_group *g)
{
    float *saved = malloc(sizeof(float) * DP_NFT * 3);
    if (!saved) {
        DP_CHECK(c, 0, "out of memory");
        return;
    }
    memcpy(saved, d->teacher[0], sizeof(float) * DP_NFT * 3);
    if (c->rank == c->size - 1)
        for (int i = 0; i < DP_NFT * 3; i++) d->teacher[0][i] = NAN;
    gm_error err;
    gm_net *net = NULL;
    gm_ft_result r;
    gm_status st = dp_finetune(&net, be, d, 10, 1, g, &r, &err);
    DP_CHECK(c, st != GM_OK, "a failing rank went unnoticed");
    if (st != GM_OK && c->rank == 0) printf("rank 0 after a rank failed: %s\n", err.msg);
    gm_net_free(net);
    memcpy(d->teacher[0], saved, sizeof(float) * DP_NFT * 3);
    free(saved);
}

void dp_start(dp_checker *c, int *argc, char ***argv)
{
    MPI_Init(argc, argv);
    *c = (dp_checker){0};
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->size);
}

int dp_finish(const dp_checker *c, const char *name)
{
    int failed = 0;
    MPI_Allreduce(&c->failed, &failed, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (c->rank == 0)
        printf("%s on %d ranks: %s (%d failed checks)\n", name, c->size, failed ? "FAILED" : "ok", failed);
    MPI_Finalize();
    return failed ? 1 : 0;
}

/*
 * test_nccl_dp: data-parallel fine-tuning on GPUs, the group's sum being NCCL
 * (gm_device_group_open with a CUDA backend -> gm_group_nccl). Run under
 * mpirun with 2 ranks (any number works). Checks, on the CUDA backend:
 * - the sum itself: rank r contributes r + 1 everywhere, every rank reads
 *   size * (size + 1) / 2 exactly;
 * - gradients: each rank back-propagates its shard of a batch (loss scaled by
 *   its rows / B) and the group sums; the sum equals one rank's gradient of
 *   the whole batch to 1e-5 of the gradient's largest magnitude (float sums
 *   in another order, and cuDNN may pick another algorithm for another batch
 *   size; the worst difference is printed);
 * - fine-tuning (frozen BatchNorm, Adam, 3 epochs): the group's weights match
 *   one rank alone to 1e-4 relative (Adam's first steps magnify rounding, as in
 *   test_dp), are bit-identical on every rank, and the validation accuracies
 *   agree on every rank;
 * - a rank whose loss fails (NaN teachers) makes every rank fail.
 *
 * Device memory is only read through the backend's to_host.
 *
 * Without a usable GPU every rank exits 77 after rank 0 prints "SKIPPED: no
 * CUDA device: <reason>" (ctest's SKIP_RETURN_CODE); all ranks decide
 * together, so mpirun's own exit code is 77. On a machine with fewer GPUs than
 * ranks the ranks share GPUs, which NCCL refuses within one host: the test then
 * gives each rank its own NCCL_HOSTID and has NCCL talk over loopback
 * sockets, as ranks on different hosts would (set-up of this test only).
 *
 * A plain MPI program, like test_dp: every rank counts its failures and every
 * rank exits 1 if any rank failed.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "gm_cuda.h"
#include "gm_device.h"
#include "gm_finetune.h"
#include "gm_train.h"

#include "dp_fixture.h"

#define GM_TEST_SKIPPED 77

enum { GRAD_BATCH = 9 }; /* the batch whose sharded gradients check_gradients sums */

/* The n floats at device pointer src, copied to a new host array (NULL: out of memory). */
static float *host_copy(gm_backend *be, const float *src, size_t n)
{
    float *h = malloc(sizeof(float) * (n ? n : 1));
    if (h) be->to_host(be, h, src, sizeof(float) * n);
    return h;
}

/* The largest |a - b| over n, relative to the largest |b| (0 for two zero arrays). */
static double worst_relative(const float *a, const float *b, size_t n, size_t *at)
{
    double scale = 0.0, worst = 0.0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)b[i]));
    *at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > worst) worst = d, *at = i;
    }
    return scale > 0.0 ? worst / scale : worst;
}

/* Rank r contributes r + 1 in every float: the group's sum is exact. */
static void check_sum(dp_checker *c, gm_backend *be, const gm_ft_group *g)
{
    enum { N = 1000 };
    float *dev = be->alloc(be, sizeof(float) * N), host[N];
    DP_CHECK(c, dev != NULL, "sum: cannot allocate on the device");
    gm_error err;
    for (int i = 0; i < N; i++) host[i] = (float)(c->rank + 1);
    gm_status st = GM_OK;
    if (dev) be->to_device(be, dev, host, sizeof host);
    st = g->sum(g->ctx, dev, dev ? N : 0, &err);
    DP_CHECK(c, st == GM_OK, "sum: %s", err.msg);
    if (dev && st == GM_OK) {
        be->to_host(be, host, dev, sizeof host);
        const float want = (float)(c->size * (c->size + 1) / 2);
        int bad = 0;
        for (int i = 0; i < N; i++) bad += host[i] != want;
        DP_CHECK(c, bad == 0, "sum: %d of %d floats differ from %g (first %g)", bad, N, (double)want, (double)host[0]);
    }
    if (dev) be->free(be, dev);
}

/* Rows [lo, hi) of n for this rank: gm_finetune's split (the first n % size ranks one more). */
static void shard(long n, int rank, int size, long *lo, long *hi)
{
    const long q = n / size, rem = n % size;
    *lo = rank * q + (rank < rem ? rank : rem);
    *hi = *lo + q + (rank < rem);
}

/* Gradients of the L1 distillation loss over rows [lo, hi) of the first GRAD_BATCH samples, times scale. */
static gm_status shard_grads(gm_net *net, const gm_ft_data *d, long lo, long hi, float scale, gm_error *err)
{
    const int m = (int)(hi - lo);
    gm_net_zero_grad(net);
    if (m == 0) return GM_OK;
    gm_status st = gm_net_forward(net, d->x_ft + (size_t)lo * d->numel, m, 0, err);
    for (int t = 0; st == GM_OK && t < 2; t++) {
        float loss;
        st = gm_net_loss(net, t, GM_LOSS_L1, d->teacher[t] + (size_t)lo * d->classes[t], NULL, scale, &loss, err);
    }
    return st == GM_OK ? gm_net_backward(net, err) : st;
}

static void check_gradients(dp_checker *c, gm_backend *be, const gm_ft_data *d, const gm_ft_group *g)
{
    gm_error err;
    gm_net *grp = NULL, *one = NULL;
    long lo, hi;
    shard(GRAD_BATCH, c->rank, c->size, &lo, &hi);
    gm_status st = dp_make_net(&grp, be, GRAD_BATCH, 7, &err);
    if (st == GM_OK) st = dp_make_net(&one, be, GRAD_BATCH, 7, &err);
    if (st == GM_OK) st = shard_grads(grp, d, lo, hi, (float)(hi - lo) / GRAD_BATCH, &err);
    /* Every rank joins the sum, a failed one too (with a NaN, as gm_finetune does). */
    const size_t n = grp ? gm_net_nparams(grp) : 0;
    if (st != GM_OK && grp) {
        const float nan = NAN;
        be->to_device(be, gm_net_grads(grp), &nan, sizeof nan);
    }
    gm_error ignored;
    gm_status ss = g->sum(g->ctx, grp ? gm_net_grads(grp) : NULL, n, st == GM_OK ? &err : &ignored);
    if (st == GM_OK) st = ss;
    if (st == GM_OK) st = shard_grads(one, d, 0, GRAD_BATCH, 1.0f, &err);
    DP_CHECK(c, st == GM_OK, "gradients: %s", err.msg);
    float *a = st == GM_OK ? host_copy(be, gm_net_grads(grp), n) : NULL;
    float *b = st == GM_OK ? host_copy(be, gm_net_grads(one), n) : NULL;
    if (a && b) {
        size_t at;
        double worst = worst_relative(a, b, n, &at);
        DP_CHECK(c, worst <= 1e-5, "gradients: parameter %zu's summed gradient is %.9g, one rank's %.9g (%.3g of the "
              "largest)", at, (double)a[at], (double)b[at], worst);
        DP_CHECK(c, dp_same_on_all_ranks(a, n), "gradients: the ranks' summed gradients differ");
        if (c->rank == 0)
            printf("gradients of batch %d on %d ranks: worst difference %.3g of the largest gradient\n", GRAD_BATCH,
                   c->size, worst);
    } else if (st == GM_OK) {
        DP_CHECK(c, 0, "gradients: out of memory");
    }
    free(a);
    free(b);
    gm_net_free(grp);
    gm_net_free(one);
}

static void check_finetune(dp_checker *c, gm_backend *be, const gm_ft_data *d, const gm_ft_group *g, int batch)
{
    gm_error err;
    gm_net *grp = NULL, *one = NULL;
    gm_ft_result rg, r1;
    gm_status st = dp_finetune(&grp, be, d, batch, 1, g, &rg, &err);
    DP_CHECK(c, st == GM_OK, "batch %d: group fine-tune: %s", batch, err.msg);
    gm_status st1 = dp_finetune(&one, be, d, batch, 1, NULL, &r1, &err);
    DP_CHECK(c, st1 == GM_OK, "batch %d: lone fine-tune: %s", batch, err.msg);
    const size_t n = st == GM_OK && st1 == GM_OK ? gm_net_nparams(one) : 0;
    float *a = n ? host_copy(be, gm_net_params(grp), n) : NULL, *b = n ? host_copy(be, gm_net_params(one), n) : NULL;
    if (a && b) {
        size_t at = 0;
        double worst = 0.0;
        for (size_t i = 0; i < n; i++) {
            double excess = fabs((double)a[i] - b[i]) / fmax(1.0, fabs((double)b[i]));
            if (excess > worst) worst = excess, at = i;
        }
        DP_CHECK(c, worst <= 1e-4, "batch %d: group weight %zu is %.9g, alone %.9g", batch, at, (double)a[at],
              (double)b[at]);
        DP_CHECK(c, dp_same_on_all_ranks(a, n), "batch %d: the ranks' weights differ", batch);
        DP_CHECK(c, rg.status == r1.status && rg.epochs == r1.epochs && rg.epochs == 3,
              "batch %d: group %s after %d epochs, alone %s after %d", batch, gm_ft_status_name(rg.status),
              rg.epochs, gm_ft_status_name(r1.status), r1.epochs);
        float acc[2] = {(float)rg.val[0], (float)rg.val[1]};
        DP_CHECK(c, dp_same_on_all_ranks(acc, 2), "batch %d: the ranks' validation accuracies differ", batch);
        for (int t = 0; t < 2; t++)
            DP_CHECK(c, fabs(rg.val[t] - r1.val[t]) <= 1.0 / (double)d->nval[t] + 1e-12,
                  "batch %d: task %d validation accuracy %.4f in the group, %.4f alone", batch, t, rg.val[t],
                  r1.val[t]);
        if (c->rank == 0)
            printf("fine-tune, batch %d on %d ranks: max relative weight difference %.3g, val %.4f %.4f (alone "
                   "%.4f %.4f)\n", batch, c->size, worst, rg.val[0], rg.val[1], r1.val[0], r1.val[1]);
    } else if (n) {
        DP_CHECK(c, 0, "batch %d: out of memory", batch);
    }
    free(a);
    free(b);
    gm_net_free(grp);
    gm_net_free(one);
}

/*
 * NCCL refuses two ranks of one communicator on one GPU of one host. With fewer
 * GPUs than ranks on the node, each rank poses as a host of its own and NCCL
 * uses loopback sockets between them. Explicit settings in the environment win.
 */
static void share_gpus(int rank)
{
    char id[64];
    snprintf(id, sizeof id, "gmorph-test-nccl-rank-%d", rank);
    setenv("NCCL_HOSTID", id, 1);
    setenv("NCCL_P2P_DISABLE", "1", 0);
    setenv("NCCL_SHM_DISABLE", "1", 0);
    setenv("NCCL_IB_DISABLE", "1", 0);
    setenv("NCCL_NET", "Socket", 0);
    setenv("NCCL_SOCKET_IFNAME", "lo", 0);
    setenv("NCCL_MNNVL_ENABLE", "0", 0);
}

/* The number of ranks on this rank's node. */
static int node_ranks(void)
{
    MPI_Comm node;
    int n = 1;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
        MPI_Comm_size(node, &n);
        MPI_Comm_free(&node);
    }
    return n;
}

/*
 * Every rank opens its GPU. Returns, on every rank alike: 1 when all did; 0
 * (skip) when some rank has no usable GPU (GM_EINVAL), after rank 0 printed
 * that rank's reason; -1 when a GPU failed to start (GM_EDEVICE: a failure,
 * not a skip). *shared: this node has fewer GPUs than ranks.
 */
static int open_gpus(dp_checker *c, gm_backend **be, int *shared)
{
    gm_error err;
    gm_error_clear(&err);
    const int local = gm_device_local_rank(MPI_COMM_WORLD), on_node = node_ranks();
    const gm_device_opts o = {.kind = GM_DEVICE_CUDA, .threads = 1, .local_rank = local};
    char desc[600] = "";
    gm_status st = gm_device_open(be, &o, desc, sizeof desc, &err);
    const int mine = st == GM_OK ? 0 : st == GM_EINVAL ? 1 : 2;
    int worst = 0, who = 0, me = mine ? c->rank : c->size;
    MPI_Allreduce(&mine, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(&me, &who, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (worst) {
        char why[sizeof err.msg];
        snprintf(why, sizeof why, "%s", err.msg);
        if (who != 0 && c->rank == who) MPI_Send(why, (int)sizeof why, MPI_CHAR, 0, 0, MPI_COMM_WORLD);
        if (who != 0 && c->rank == 0)
            MPI_Recv(why, (int)sizeof why, MPI_CHAR, who, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (c->rank == 0) printf("%s%s\n", worst == 1 ? "SKIPPED: no CUDA device: " : "FAILED: ", why);
        gm_backend_free(*be);
        *be = NULL;
        return worst == 1 ? 0 : -1;
    }
    gm_cuda_info info;
    if (gm_cuda_probe(&info, &err) != GM_OK) info.device_count = 0;
    if (c->rank == 0) printf("rank 0: %s; %d rank(s) on its node\n", desc, on_node);
    *shared = on_node > info.device_count;
    return 1;
}

int main(int argc, char **argv)
{
    dp_checker c;
    dp_start(&c, &argc, &argv);
    gm_backend *be = NULL;
    int shared = 0;
    const int gpus = open_gpus(&c, &be, &shared);
    if (gpus <= 0) {
        MPI_Finalize();
        return gpus == 0 ? GM_TEST_SKIPPED : 1;
    }
    int any_shared = 0;
    MPI_Allreduce(&shared, &any_shared, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (any_shared) {
        share_gpus(c.rank);
        if (c.rank == 0) printf("fewer GPUs than ranks on a node: NCCL over loopback sockets (NCCL_HOSTID per rank)\n");
    }
    gm_error err;
    gm_device_group *dg = NULL;
    gm_ft_data d;
    gm_status st = gm_device_group_open(&dg, MPI_COMM_WORLD, GM_DEVICE_CUDA, be, &err);
    DP_CHECK(&c, st == GM_OK, "NCCL group: %s", err.msg);
    int ok = st == GM_OK, all = 0;
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (all) {
        const gm_ft_group *g = gm_device_group_get(dg);
        DP_CHECK(&c, g->rank == c.rank && g->size == c.size, "group: rank %d of %d", g->rank, g->size);
        st = dp_make_data(&d, &err);
        DP_CHECK(&c, st == GM_OK, "set-up: %s", err.msg);
        if (st == GM_OK) {
            check_sum(&c, be, g);
            check_gradients(&c, be, &d, g);
            check_finetune(&c, be, &d, g, 9); /* odd batches: see test_dp (L1's head bias on an even batch) */
            check_finetune(&c, be, &d, g, 3);
            if (c.size > 1) dp_check_failure_spreads(&c, be, &d, g);
            gm_ft_data_free(&d);
        }
    }
    gm_device_group_free(dg);
    gm_backend_free(be);

    return dp_finish(&c, "test_nccl_dp");
}

#include "gm_group_nccl.h"

#include <nccl.h>
#include <stdlib.h>

#include "gm_backend_cuda.h"
#include "gm_mpi.h"

struct gm_group_nccl {
    ncclComm_t comm;
    cudaStream_t stream; /* the backend's: sums are ordered with its work */
    int rank, size;
};

/* NCCL's error string plus its last-error detail, which names the cause (peer lost, duplicate GPU, ...). */
static gm_status nccl_error(gm_error *err, ncclResult_t rc, ncclComm_t comm, const char *what, size_t n)
{
    const char *last = ncclGetLastError(comm);
    return gm_error_set(err, GM_EDEVICE, "NCCL %s (%zu floats): %s (ncclResult %d)%s%s", what, n,
                        ncclGetErrorString(rc), (int)rc, last && *last ? ": " : "", last && *last ? last : "");
}

static gm_status nccl_sum(void *ctx, float *buf, size_t n, gm_error *err)
{
    gm_group_nccl *g = ctx;
    ncclResult_t rc = ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, g->comm, g->stream);
    if (rc != ncclSuccess) return nccl_error(err, rc, g->comm, "ncclAllReduce", n);
    ncclResult_t async = ncclSuccess;
    rc = ncclCommGetAsyncError(g->comm, &async);
    if (rc == ncclSuccess) rc = async;
    if (rc != ncclSuccess) return nccl_error(err, rc, g->comm, "communicator error after ncclAllReduce", n);
    return GM_OK;
}

/* 1 on every rank when every rank of comm has *st GM_OK; a vote that fails sets *st and err (if still OK). */
static int all_ok(gm_status *st, MPI_Comm comm, gm_error *err)
{
    int ok = *st == GM_OK, all = 0;
    gm_error e;
    const int rc = MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, comm);
    if (gm_mpi_check(rc, "NCCL group: the ranks' vote", &e) != GM_OK) {
        if (*st == GM_OK) {
            *st = GM_EIO;
            *err = e;
        }
        return 0;
    }
    return all;
}

gm_status gm_group_nccl_create(gm_group_nccl **out, MPI_Comm comm, gm_backend *cuda_be, gm_error *err)
{
    *out = NULL;
    int rank = 0, size = 1;
    gm_status st = gm_mpi_check(MPI_Comm_rank(comm, &rank), "NCCL group: its rank", err);
    if (st == GM_OK) st = gm_mpi_check(MPI_Comm_size(comm, &size), "NCCL group: its size", err);
    if (st != GM_OK) return st;
    gm_group_nccl *g = calloc(1, sizeof *g);
    st = g ? GM_OK : gm_error_set(err, GM_ENOMEM, "NCCL group: out of memory");
    ncclUniqueId id = {{0}};
    if (st == GM_OK && rank == 0) {
        ncclResult_t rc = ncclGetUniqueId(&id);
        if (rc != ncclSuccess) st = nccl_error(err, rc, NULL, "ncclGetUniqueId", 0);
    }
    /* Nobody enters ncclCommInitRank, which waits for every rank, unless every rank will. */
    if (!all_ok(&st, comm, err)) {
        free(g);
        return st != GM_OK ? st
                           : gm_error_set(err, GM_EDEVICE, "NCCL group: another rank of the %d could not set up "
                                          "(see its message)", size);
    }
    st = gm_mpi_check(MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, comm), "NCCL group: sharing its unique id", err);
    if (st != GM_OK) { /* every rank fails here alike: the broadcast's arguments are the same on all */
        free(g);
        return st;
    }
    g->rank = rank;
    g->size = size;
    g->stream = (cudaStream_t)gm_backend_cuda_stream(cuda_be);
    ncclResult_t rc = ncclCommInitRank(&g->comm, size, id, rank);
    if (rc != ncclSuccess) {
        st = nccl_error(err, rc, NULL, "ncclCommInitRank", 0);
        g->comm = NULL;
    }
    if (!all_ok(&st, comm, err)) {
        if (g->comm) ncclCommAbort(g->comm);
        free(g);
        return st != GM_OK ? st
                           : gm_error_set(err, GM_EDEVICE, "NCCL group: another rank of the %d failed to join "
                                          "(see its message)", size);
    }
    *out = g;
    return GM_OK;
}

gm_ft_group gm_group_nccl_group(gm_group_nccl *g)
{
    return (gm_ft_group){.rank = g->rank, .size = g->size, .sum = nccl_sum, .ctx = g};
}

void gm_group_nccl_free(gm_group_nccl *g)
{
    if (!g) return;
    if (g->comm) ncclCommDestroy(g->comm);
    free(g);
}

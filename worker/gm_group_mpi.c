#include "gm_group_mpi.h"

#include <limits.h>
#include <stdio.h>

#include "gm_mpi.h"

static gm_status mpi_sum(void *ctx, float *buf, size_t n, gm_error *err)
{
    const gm_group_mpi *g = ctx;
    /* MPI counts are ints: large arrays go in chunks, every rank cutting alike. */
    for (size_t i = 0; i < n; i += INT_MAX) {
        int count = n - i < (size_t)INT_MAX ? (int)(n - i) : INT_MAX;
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf + i, count, MPI_FLOAT, MPI_SUM, g->comm);
        if (rc != MPI_SUCCESS) {
            char what[96];
            snprintf(what, sizeof what, "group sum of %zu floats (MPI_Allreduce)", n);
            return gm_mpi_check(rc, what, err);
        }
    }
    return GM_OK;
}

gm_status gm_group_mpi_make(gm_group_mpi *g, MPI_Comm comm, gm_ft_group *out, gm_error *err)
{
    g->comm = comm;
    int rank = 0, size = 1;
    gm_status st = gm_mpi_check(MPI_Comm_rank(comm, &rank), "group: its rank", err);
    if (st == GM_OK) st = gm_mpi_check(MPI_Comm_size(comm, &size), "group: its size", err);
    *out = (gm_ft_group){.rank = rank, .size = size, .sum = mpi_sum, .ctx = g};
    return st;
}

#include "gm_group_mpi.h"

#include <limits.h>

static gm_status mpi_sum(void *ctx, float *buf, size_t n, gm_error *err)
{
    const gm_group_mpi *g = ctx;
    /* MPI counts are ints: large arrays go in chunks, every rank cutting alike. */
    for (size_t i = 0; i < n; i += INT_MAX) {
        int count = n - i < (size_t)INT_MAX ? (int)(n - i) : INT_MAX;
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf + i, count, MPI_FLOAT, MPI_SUM, g->comm);
        if (rc != MPI_SUCCESS) {
            char msg[MPI_MAX_ERROR_STRING];
            int len = 0;
            if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) len = 0;
            msg[len < MPI_MAX_ERROR_STRING ? len : MPI_MAX_ERROR_STRING - 1] = '\0';
            return gm_error_set(err, GM_EIO, "group sum of %zu floats: MPI_Allreduce failed: %s", n,
                                len ? msg : "unknown MPI error");
        }
    }
    return GM_OK;
}

gm_ft_group gm_group_mpi_make(gm_group_mpi *g, MPI_Comm comm)
{
    g->comm = comm;
    int rank = 0, size = 1;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    return (gm_ft_group){.rank = rank, .size = size, .sum = mpi_sum, .ctx = g};
}

#include "gm_mpi.h"

int gm_mpi_world_rank(void)
{
    int started = 0, ended = 0, rank = -1;
    if (MPI_Initialized(&started) != MPI_SUCCESS || !started) return -1;
    if (MPI_Finalized(&ended) != MPI_SUCCESS || ended) return -1;
    if (MPI_Comm_rank(MPI_COMM_WORLD, &rank) != MPI_SUCCESS) return -1;
    return rank;
}

gm_status gm_mpi_check(int rc, const char *what, gm_error *err)
{
    if (rc == MPI_SUCCESS) return GM_OK;
    char text[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    /* Open MPI's text starts with the class's name (MPI_ERR_RANK: invalid rank) */
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
    text[len > 0 && len < MPI_MAX_ERROR_STRING ? len : 0] = '\0';
    return gm_error_set(err, GM_EIO, "rank %d: %s: %s", gm_mpi_world_rank(), what,
                        text[0] ? text : "MPI error (no message)");
}

gm_status gm_mpi_errors_return(MPI_Comm comm, gm_error *err)
{
    return gm_mpi_check(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN), "setting MPI_ERRORS_RETURN", err);
}

/*
 * gm_mpi: MPI calls whose failures come back as a gm_status, with the rank.
 *
 * MPI's default handler, MPI_ERRORS_ARE_FATAL, ends the job inside a failing
 * call, so a return code is never seen and no message says which rank failed
 * or doing what. gmorph installs MPI_ERRORS_RETURN on every communicator it
 * uses (gm_mpi_errors_return; communicators split from one inherit it) and
 * checks every call with gm_mpi_check, whose message reads
 *   "rank R: WHAT: MPI's own text" (Open MPI's begins with the class, MPI_ERR_...)
 * R being the rank in MPI_COMM_WORLD, the number mpirun and Slurm print.
 *
 * What to do about a failure is the caller's choice; a program whose ranks
 * would wait forever on the one that failed ends the job (MPI_Abort) from main.
 */
#ifndef GM_MPI_H
#define GM_MPI_H

#include <mpi.h>

#include "gm_error.h"

/* MPI_ERRORS_RETURN on comm: from now on its failing calls return their code. */
gm_status gm_mpi_errors_return(MPI_Comm comm, gm_error *err);

/* GM_OK when rc is MPI_SUCCESS; else GM_EIO with the message above. */
gm_status gm_mpi_check(int rc, const char *what, gm_error *err);

/* The rank in MPI_COMM_WORLD, or -1 outside MPI_Init .. MPI_Finalize. */
int gm_mpi_world_rank(void);

#endif

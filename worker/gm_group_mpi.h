/*
 * gm_group_mpi: a data-parallel fine-tuning group (gm_ft_group) over an MPI
 * communicator, for the CPU backend: sum() is MPI_Allreduce in place over host
 * floats. Every rank of the communicator is a member, ranked as in it.
 *
 * The communicator is borrowed, not duplicated: it must outlive the group, and
 * no other traffic may interleave with the group's collectives on it. MPI
 * errors come back as gm_error (gm_mpi: the rank and MPI's message) where the
 * communicator's error handler returns them (gm_mpi_errors_return); with MPI's
 * default handler the job aborts first.
 */
#ifndef GM_GROUP_MPI_H
#define GM_GROUP_MPI_H

#include <mpi.h>

#include "gm_finetune.h"

typedef struct {
    MPI_Comm comm;
} gm_group_mpi;

/* Fills g and *out, a group whose ctx is g: g must outlive the group. Not collective. */
gm_status gm_group_mpi_make(gm_group_mpi *g, MPI_Comm comm, gm_ft_group *out, gm_error *err);

#endif

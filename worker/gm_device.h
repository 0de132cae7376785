/*
 * gm_device: where a rank computes. Turns the user's --device choice ("cpu" or
 * "cuda"), a thread count and the rank's index on its node into a gm_backend,
 * and gives a data-parallel group the sum that fits that backend (NCCL on
 * GPUs, MPI_Allreduce on CPUs).
 *
 * This is the one module that knows whether the build has the CUDA backend and
 * NCCL (compile definitions GMORPH_HAVE_CUDA_BACKEND and GMORPH_HAVE_NCCL, set
 * by worker/CMakeLists.txt): the commands and the worker carry no #ifdef. A
 * "cuda" request that this build or this machine cannot meet is a usage error
 * (GM_EINVAL, exit 2 at the command line) whose message names the device and
 * the reason; a GPU that is there but fails to start is GM_EDEVICE.
 */
#ifndef GM_DEVICE_H
#define GM_DEVICE_H

#include <stddef.h>

#include <mpi.h>

#include "gm_backend.h"
#include "gm_finetune.h"

typedef enum { GM_DEVICE_CPU, GM_DEVICE_CUDA } gm_device_kind;

/*
 * "cpu", "cuda" (strict float32, as the CPU) or "cuda-tf32" (matrix products and
 * convolutions may use TF32 tensor cores, PyTorch's default for convolutions: about
 * 3 decimal digits per product, several times the speed) to *kind and *tf32 (which
 * may be NULL); anything else GM_EINVAL, naming the text and the choices.
 */
gm_status gm_device_parse(const char *name, gm_device_kind *kind, int *tf32, gm_error *err);
/* "cpu" or "cuda". */
const char *gm_device_name(gm_device_kind kind);

/*
 * The calling rank's index among the ranks on its node, which picks its GPU:
 * OMPI_COMM_WORLD_LOCAL_RANK, else SLURM_LOCALID, else MPI_LOCALRANKID
 * (MPICH), else its rank in comm split by shared memory (MPI_COMM_TYPE_SHARED),
 * else 0. Collective over comm when comm is not MPI_COMM_NULL and MPI is
 * initialised (every rank of comm calls it); with MPI_COMM_NULL it only reads
 * the environment, so a program that never starts MPI may call it.
 */
int gm_device_local_rank(MPI_Comm comm);

typedef struct {
    gm_device_kind kind;
    int threads;    /* the CPU backend's OpenMP threads (cpu only) */
    int local_rank; /* cuda: GPU local_rank % visible GPUs (gm_device_local_rank) */
    int tf32;       /* cuda: 1 lets matrix products use TF32 tensor cores; 0 strict float32, as the CPU */
} gm_device_opts;

/*
 * Opens the backend o asks for (the caller frees it with gm_backend_free) and
 * writes one line naming it into desc (desc_size bytes; desc may be NULL):
 * "cpu, 4 threads" or "cuda GPU 0: NVIDIA H100 80GB HBM3 (sm_90, ...)".
 * GM_EINVAL when cuda is asked of a build without the CUDA backend or of a
 * machine where no GPU is usable; GM_EDEVICE when the GPU fails to start.
 */
gm_status gm_device_open(gm_backend **out, const gm_device_opts *o, char *desc, size_t desc_size, gm_error *err);

/*
 * What a single-process command (gmorph train, eval) does with its --device:
 * parses name ("cpu", "cuda"), takes the local rank from the launcher's
 * environment and opens the backend as gm_device_open does.
 */
gm_status gm_device_open_named(gm_backend **out, const char *name, int threads, char *desc, size_t desc_size,
                               gm_error *err);

/*
 * A data-parallel fine-tuning group (gm_ft_group) of every rank in comm, for
 * ranks computing on kind: gm_group_mpi (MPI_Allreduce over host floats) for
 * the CPU; gm_group_nccl (ncclAllReduce on the backend's stream) for cuda,
 * when comm has more than one rank. Collective over comm: every rank calls it
 * with the same kind, after all of them opened their backend be. GM_EINVAL
 * for a cuda group of several ranks in a build without NCCL. comm must
 * outlive the group.
 */
typedef struct gm_device_group gm_device_group;
gm_status gm_device_group_open(gm_device_group **out, MPI_Comm comm, gm_device_kind kind, gm_backend *be,
                               gm_error *err);
/* The group, valid until gm_device_group_free. */
const gm_ft_group *gm_device_group_get(const gm_device_group *g);
/* NULL-safe. Not collective, but every rank must have finished its sums. */
void gm_device_group_free(gm_device_group *g);

#endif

/*
 * gm_group_nccl: a data-parallel fine-tuning group (gm_ft_group) over NCCL,
 * for ranks computing on the CUDA backend: sum() is ncclAllReduce in place
 * (float, ncclSum) over device memory, enqueued on the backend's stream, so
 * it is ordered after the backward that wrote the gradients and before the
 * optimiser step that reads them, and the host does not wait for it
 * (gm_finetune's check of the sum's first float, a to_host, does).
 *
 * Built only with CUDA and NCCL (GMORPH_HAVE_NCCL); callers reach it through
 * gm_device_group_open (gm_device.h), never directly. One GPU per rank: NCCL
 * refuses two ranks of one communicator on the same GPU ("Duplicate GPU
 * detected") unless they look like different hosts (NCCL_HOSTID, which
 * tests/test_nccl_dp.c sets on a one-GPU machine).
 *
 * Overlap with backward: not done. The group sums the whole flat gradient
 * once, after backward has finished (one fused all-reduce per step).
 * Overlapping would issue a block's sum as soon as backward has written that
 * block's gradients (gm_net walks the blocks in reverse, and only a block's
 * own ops write its gradients), which needs a per-block hook in
 * gm_net_backward and a sum on a second stream waited on by the optimiser;
 * fine-tuning candidates of a few MB of parameters spends microseconds in the
 * sum next to milliseconds of backward, so the first version keeps one sum.
 *
 * Errors: NCCL's own message (ncclGetErrorString, and ncclGetLastError's
 * detail) in a GM_EDEVICE gm_error. The sum reports errors NCCL knows when the
 * call is issued, and any asynchronous error already raised on the
 * communicator; a failure inside the all-reduce surfaces at the next
 * synchronisation of the stream.
 */
#ifndef GM_GROUP_NCCL_H
#define GM_GROUP_NCCL_H

#include <mpi.h>

#include "gm_backend.h"
#include "gm_finetune.h"

typedef struct gm_group_nccl gm_group_nccl;

/*
 * Collective over comm: rank 0 of comm makes the NCCL unique id, MPI_Bcast
 * sends it to the others, and every rank joins with ncclCommInitRank on the
 * current CUDA device (the one cuda_be was created on, made current by
 * gm_backend_cuda_create on this thread). cuda_be (borrowed) must be a CUDA
 * backend and outlive the group. Every rank returns an error when any rank
 * failed to take part (out of memory, no id) or to initialise.
 */
gm_status gm_group_nccl_create(gm_group_nccl **out, MPI_Comm comm, gm_backend *cuda_be, gm_error *err);

/* The gm_ft_group whose ctx is g: valid while g lives. */
gm_ft_group gm_group_nccl_group(gm_group_nccl *g);

/* NULL-safe; every rank of the group calls it (NCCL's finalize may wait for the peers). */
void gm_group_nccl_free(gm_group_nccl *g);

#endif

/*
 * gm_wire: jobs and results between ranks (coordinator/README.md, "Distribution and faults").
 *
 * Coordinator -> group leader, tag GM_TAG_JOB: an int header {id, source,
 * enc_len, model bytes}, the graph encoding (int32), then, when the job starts
 * from an elite, that elite's model as the bytes of its model file. Tag
 * GM_TAG_STOP (empty) ends a worker. Leader -> coordinator, tag GM_TAG_RESULT:
 * a double header {id, status, epochs, worst drop, seconds, latency, base
 * latency, model bytes, error bytes, val[GM_MF_MAX_TASKS]}, then the fine-tuned
 * model's bytes if it passed, then the worker's error text if it failed with
 * one. Inside a group the leader broadcasts each job to its members.
 *
 * Models travel as model-file images (gm_mfile_to_bytes) so that a receiver
 * checks them exactly as it checks a file on disk.
 */
#ifndef GM_WIRE_H
#define GM_WIRE_H

#include <mpi.h>

#include "gm_worker.h"

enum { GM_TAG_JOB = 11, GM_TAG_STOP = 12, GM_TAG_RESULT = 13 };

gm_status gm_wire_send_job(const gm_job *j, int dest, MPI_Comm comm, gm_error *err);
/* Blocks for a job or a stop from src; *stop = 1 on stop (j untouched). */
gm_status gm_wire_recv_job(gm_job *j, int *stop, int src, MPI_Comm comm, gm_error *err);
gm_status gm_wire_send_stop(int dest, MPI_Comm comm, gm_error *err);
/* Collective in a group: root's job (or stop) reaches every rank. */
gm_status gm_wire_bcast_job(gm_job *j, int *stop, int root, MPI_Comm group, gm_error *err);

/* error: the worker's message when the job failed with one, else NULL. */
gm_status gm_wire_send_result(const gm_result *r, const char *error, int dest, MPI_Comm comm, gm_error *err);
/*
 * Receives the result whose header a probe found waiting from src. error gets
 * the worker's message ("" if none).
 */
gm_status gm_wire_recv_result(gm_result *r, char *error, size_t cap, int src, MPI_Comm comm, gm_error *err);

/*
 * A worker rank's life. The group's leader (group rank 0) receives jobs from
 * rank `coordinator` of comm and broadcasts them to its group; every rank of
 * the group runs them (data-parallel, w was opened with the group); the leader
 * reports each result. A failing job is reported as a failed candidate, and the
 * rank goes on. Returns at a stop, or on a communication error.
 */
gm_status gm_wire_serve(gm_worker *w, MPI_Comm comm, int coordinator, MPI_Comm group, gm_error *err);

#endif

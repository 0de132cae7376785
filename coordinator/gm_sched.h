/*
 * gm_sched: the coordinator's scheduler (coordinator/README.md, "Distribution and faults"). It keeps every
 * worker group busy: a job goes to a group as soon as it is free, proposed
 * from the current state (asynchronous steady state), and results are
 * received without blocking on any one group. In deterministic mode it runs
 * rounds of config->round candidates instead, proposed from the state at the
 * round's start, and records each round's results in id order, so the outcome
 * does not depend on timing or on the number of groups.
 *
 * A job whose group takes longer than config->timeout_s is dispatched again
 * once (to the next free group; the first result to arrive counts), then
 * failed. A worker error fails its candidate and the sweep goes on.
 *
 * Checkpoints (gm_search_checkpoint) are written every config->checkpoint_every
 * results (in deterministic mode at the first round end after that many), on
 * a save request (SIGUSR1), on a stop request (SIGINT, SIGTERM) and at the end.
 *
 * With no worker groups the jobs run in this process, one after the other,
 * through the same code.
 */
#ifndef GM_SCHED_H
#define GM_SCHED_H

#include <mpi.h>
#include <signal.h>

#include "gm_search.h"

typedef struct {
    gm_worker *local;              /* ngroups == 0: jobs run here */
    MPI_Comm comm;                 /* the communicator the leaders are in */
    int ngroups;
    const int *leaders;            /* comm rank of each group's leader */
    const volatile sig_atomic_t *stop;  /* non-zero: checkpoint and end (pending jobs stay pending) */
    const volatile sig_atomic_t *saves; /* a count: each increment asks for a checkpoint */
} gm_sched_opts;

/*
 * Runs the sweep until the iteration budget, the time budget or a stop. On
 * return *busy says how many groups still hold a job (after a stop: the
 * caller ends them, e.g. with MPI_Abort once everything is written).
 */
gm_status gm_sched_run(gm_search *S, const gm_search_config *c, const gm_sched_opts *o, int *interrupted, int *busy,
                       gm_error *err);

/* The whole single-process search: local worker, search, schedule, finish. */
gm_status gm_search_run(const gm_search_config *c, void (*progress)(void *ctx, const gm_search_event *e), void *ctx,
                        const volatile sig_atomic_t *stop, gm_search_summary *s, gm_error *err);

#endif

/*
 * MPI errors come back as a status with the rank in the message (gm_mpi),
 * instead of MPI's default handler ending the job inside the call. Run under
 * mpirun with any number of ranks: every rank makes real MPI calls fail with
 * bad arguments (a rank or a root that does not exist, a null communicator),
 * each through the code gmorph-search runs (gm_wire, gm_group_mpi), on
 * MPI_COMM_WORLD and on a group split from it as gmorph-search splits its
 * worker groups, and checks the message names this rank, what was being done
 * and MPI's error class. Then the communicators still work.
 *
 * A plain MPI program like test_dp: every rank counts its failures, and every
 * rank exits 1 if any rank failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "gm_group_mpi.h"
#include "gm_mpi.h"
#include "gm_wire.h"

#include "dp_fixture.h"

/* st is GM_EIO and the message says "rank R: what: ... class". */
static void check_error(dp_checker *c, const char *call, gm_status st, const gm_error *err, const char *what,
                        const char *cls)
{
    char want[64];
    snprintf(want, sizeof want, "rank %d: %s: ", c->rank, what);
    DP_CHECK(c, st == GM_EIO, "%s: status %d, not GM_EIO (%s)", call, (int)st, st == GM_OK ? "" : err->msg);
    if (st == GM_OK) return;
    DP_CHECK(c, strncmp(err->msg, want, strlen(want)) == 0, "%s: message \"%s\" does not begin \"%s\"", call,
             err->msg, want);
    DP_CHECK(c, strstr(err->msg, cls) != NULL, "%s: message \"%s\" lacks \"%s\"", call, err->msg, cls);
    if (c->rank == 0) printf("  %s: %s\n", call, err->msg);
}

static int handler_is(MPI_Comm comm, MPI_Errhandler want)
{
    MPI_Errhandler h;
    if (MPI_Comm_get_errhandler(comm, &h) != MPI_SUCCESS) return 0;
    const int same = h == want;
    MPI_Errhandler_free(&h);
    return same;
}

int main(int argc, char **argv)
{
    dp_checker c;
    dp_start(&c, &argc, &argv);
    gm_error err;
    const int nowhere = c.size + 3; /* no such rank */

    /* The premise: MPI's default ends the job, so without this no check could ever fire. */
    DP_CHECK(&c, handler_is(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL), "MPI_COMM_WORLD does not start fatal");
    gm_status st = gm_mpi_errors_return(MPI_COMM_WORLD, &err);
    DP_CHECK(&c, st == GM_OK && handler_is(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_ERRORS_RETURN not set: %s",
             st == GM_OK ? "" : err.msg);
    DP_CHECK(&c, gm_mpi_world_rank() == c.rank, "gm_mpi_world_rank %d, not %d", gm_mpi_world_rank(), c.rank);
    DP_CHECK(&c, gm_mpi_check(MPI_SUCCESS, "nothing", &err) == GM_OK, "MPI_SUCCESS is an error");

    /* Point to point, as the coordinator and the group leaders talk. */
    st = gm_wire_send_stop(nowhere, MPI_COMM_WORLD, &err);
    check_error(&c, "gm_wire_send_stop to no rank", st, &err, "sending a stop", "MPI_ERR_RANK");
    gm_job *job = calloc(1, sizeof *job);
    if (!job) MPI_Abort(MPI_COMM_WORLD, 2);
    job->source = -1;
    job->enc_len = 1;
    st = gm_wire_send_job(job, nowhere, MPI_COMM_WORLD, &err);
    check_error(&c, "gm_wire_send_job to no rank", st, &err, "sending a job", "MPI_ERR_RANK");
    int stop = 0;
    st = gm_wire_recv_job(job, &stop, nowhere, MPI_COMM_WORLD, &err);
    check_error(&c, "gm_wire_recv_job from no rank", st, &err, "waiting for a job", "MPI_ERR_RANK");

    /* A worker group split from the world inherits the handler; a broadcast from no root fails. */
    MPI_Comm group;
    st = gm_mpi_check(MPI_Comm_split(MPI_COMM_WORLD, c.rank % 2, c.rank, &group), "splitting", &err);
    DP_CHECK(&c, st == GM_OK, "MPI_Comm_split: %s", err.msg);
    if (st == GM_OK) {
        DP_CHECK(&c, handler_is(group, MPI_ERRORS_RETURN), "the group did not inherit MPI_ERRORS_RETURN");
        stop = 0;
        st = gm_wire_bcast_job(job, &stop, nowhere, group, &err);
        check_error(&c, "gm_wire_bcast_job from no root", st, &err, "broadcasting a job", "MPI_ERR_ROOT");
        /* after the failures the group still sums */
        gm_group_mpi gm;
        gm_ft_group g;
        float v[3] = {1, 2, 3};
        st = gm_group_mpi_make(&gm, group, &g, &err);
        if (st == GM_OK) st = g.sum(g.ctx, v, 3, &err);
        DP_CHECK(&c, st == GM_OK && v[0] == (float)g.size && v[2] == 3.0f * (float)g.size,
                 "group sum after the failures: %s, %g", st == GM_OK ? "ok" : err.msg, (double)v[0]);
        MPI_Comm_free(&group);
    }
    /* A group on no communicator: its rank cannot be asked. */
    gm_group_mpi gm;
    gm_ft_group g;
    st = gm_group_mpi_make(&gm, MPI_COMM_NULL, &g, &err);
    check_error(&c, "gm_group_mpi_make on MPI_COMM_NULL", st, &err, "group: its rank", "MPI_ERR_COMM");
    free(job);

    return dp_finish(&c, "test_mpi_errors");
}

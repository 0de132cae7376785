#include "gm_wire.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_mpi.h"

/* Every call is checked (gm_mpi: the communicators return errors); a failure ends the exchange. */
#define MPI_TRY(call, what)                                                                                        \
    do {                                                                                                           \
        if ((st = gm_mpi_check((call), what, err)) != GM_OK) goto done;                                            \
    } while (0)

enum { JH_ID, JH_SOURCE, JH_ENC, JH_BYTES, JH_N };

gm_status gm_wire_send_job(const gm_job *j, int dest, MPI_Comm comm, gm_error *err)
{
    void *bytes = NULL;
    size_t n = 0;
    gm_status st = j->source >= 0 ? gm_mfile_to_bytes(&j->src, &bytes, &n, err) : GM_OK;
    if (st != GM_OK) return st;
    if (n > INT_MAX) {
        free(bytes);
        return gm_error_set(err, GM_EINVAL, "job %d: a model of %zu bytes is too large for one message", j->id, n);
    }
    int h[JH_N] = {j->id, j->source, j->enc_len, (int)n};
    MPI_TRY(MPI_Send(h, JH_N, MPI_INT, dest, GM_TAG_JOB, comm), "sending a job");
    MPI_TRY(MPI_Send(j->enc, j->enc_len, MPI_INT32_T, dest, GM_TAG_JOB, comm), "sending a job");
    if (n) MPI_TRY(MPI_Send(bytes, (int)n, MPI_BYTE, dest, GM_TAG_JOB, comm), "sending a job");
done:
    free(bytes);
    return st;
}

gm_status gm_wire_send_stop(int dest, MPI_Comm comm, gm_error *err)
{
    gm_status st = GM_OK;
    MPI_TRY(MPI_Send(NULL, 0, MPI_INT, dest, GM_TAG_STOP, comm), "sending a stop");
done:
    return st;
}

/* Fills j from a header and its parts; takes nothing. */
static gm_status unpack(gm_job *j, const int *h, const void *bytes, gm_error *err)
{
    j->id = h[JH_ID];
    j->source = h[JH_SOURCE];
    j->enc_len = h[JH_ENC];
    memset(&j->src, 0, sizeof j->src);
    if (h[JH_BYTES] > 0) return gm_mfile_from_bytes(&j->src, bytes, (size_t)h[JH_BYTES], err);
    return GM_OK;
}

gm_status gm_wire_recv_job(gm_job *j, int *stop, int src, MPI_Comm comm, gm_error *err)
{
    gm_status st = GM_OK;
    void *bytes = NULL;
    MPI_Status ms;
    *stop = 0;
    MPI_TRY(MPI_Probe(src, MPI_ANY_TAG, comm, &ms), "waiting for a job");
    if (ms.MPI_TAG == GM_TAG_STOP) {
        MPI_TRY(MPI_Recv(NULL, 0, MPI_INT, src, GM_TAG_STOP, comm, MPI_STATUS_IGNORE), "receiving a stop");
        *stop = 1;
        return GM_OK;
    }
    int h[JH_N];
    MPI_TRY(MPI_Recv(h, JH_N, MPI_INT, src, GM_TAG_JOB, comm, MPI_STATUS_IGNORE), "receiving a job");
    if (h[JH_ENC] < 0 || h[JH_ENC] > GM_JOB_ENC_MAX || h[JH_BYTES] < 0)
        return gm_error_set(err, GM_EFORMAT, "job %d: bad header (encoding of %d values)", h[JH_ID], h[JH_ENC]);
    MPI_TRY(MPI_Recv(j->enc, h[JH_ENC], MPI_INT32_T, src, GM_TAG_JOB, comm, MPI_STATUS_IGNORE), "receiving a job");
    if (h[JH_BYTES] > 0) {
        if (!(bytes = malloc((size_t)h[JH_BYTES]))) return gm_error_set(err, GM_ENOMEM, "out of memory for a job");
        MPI_TRY(MPI_Recv(bytes, h[JH_BYTES], MPI_BYTE, src, GM_TAG_JOB, comm, MPI_STATUS_IGNORE), "receiving a job");
    }
    st = unpack(j, h, bytes, err);
done:
    free(bytes);
    return st;
}

gm_status gm_wire_bcast_job(gm_job *j, int *stop, int root, MPI_Comm group, gm_error *err)
{
    gm_status st = GM_OK;
    int rank = -1;
    void *bytes = NULL;
    MPI_TRY(MPI_Comm_rank(group, &rank), "broadcasting a job");
    size_t n = 0;
    /* h[JH_N] is the stop flag */
    int h[JH_N + 1] = {0};
    if (rank == root) {
        if (!*stop && j->source >= 0) st = gm_mfile_to_bytes(&j->src, &bytes, &n, err);
        if (st != GM_OK) n = 0; /* members must still hear something: send a stop and report */
        h[JH_ID] = j->id;
        h[JH_SOURCE] = j->source;
        h[JH_ENC] = j->enc_len;
        h[JH_BYTES] = (int)n;
        h[JH_N] = *stop || st != GM_OK;
    }
    MPI_TRY(MPI_Bcast(h, JH_N + 1, MPI_INT, root, group), "broadcasting a job");
    *stop = h[JH_N];
    if (*stop || st != GM_OK) goto done;
    MPI_TRY(MPI_Bcast(j->enc, h[JH_ENC], MPI_INT32_T, root, group), "broadcasting a job");
    if (rank != root && h[JH_BYTES] > 0 && !(bytes = malloc((size_t)h[JH_BYTES])))
        return gm_error_set(err, GM_ENOMEM, "out of memory for a job");
    if (h[JH_BYTES] > 0) MPI_TRY(MPI_Bcast(bytes, h[JH_BYTES], MPI_BYTE, root, group), "broadcasting a job");
    if (rank != root) st = unpack(j, h, bytes, err);
done:
    free(bytes);
    return st;
}

enum { RH_ID, RH_STATUS, RH_EPOCHS, RH_DROP, RH_SECONDS, RH_LAT, RH_BASE, RH_BYTES, RH_ERROR, RH_DROP0, RH_NCHECKS,
       RH_VAL };
enum { RH_N = RH_VAL + GM_MF_MAX_TASKS };
/* A learning curve travels as nchecks rows of epoch, loss and one accuracy per task slot. */
enum { CK_EPOCH, CK_LOSS, CK_VAL, CK_N = CK_VAL + GM_MF_MAX_TASKS };

gm_status gm_wire_send_result(const gm_result *r, const char *error, int dest, MPI_Comm comm, gm_error *err)
{
    void *bytes = NULL;
    size_t n = 0;
    gm_status st = !error && r->ft.status == GM_FT_PASSED ? gm_mfile_to_bytes(&r->tuned, &bytes, &n, err) : GM_OK;
    if (st != GM_OK) return st;
    const size_t elen = error ? strlen(error) + 1 : 0;
    double h[RH_N] = {[RH_ID] = r->id, [RH_STATUS] = r->ft.status, [RH_EPOCHS] = r->ft.epochs,
                      [RH_DROP] = r->ft.worst_drop, [RH_SECONDS] = r->ft.seconds, [RH_LAT] = r->latency_ms,
                      [RH_BASE] = r->base_latency_ms, [RH_BYTES] = (double)n, [RH_ERROR] = (double)elen,
                      [RH_DROP0] = r->ft.first_drop, [RH_NCHECKS] = r->ft.nchecks};
    for (int t = 0; t < GM_MF_MAX_TASKS; t++) h[RH_VAL + t] = r->ft.val[t];
    MPI_TRY(MPI_Send(h, RH_N, MPI_DOUBLE, dest, GM_TAG_RESULT, comm), "sending a result");
    if (r->ft.nchecks > 0) {
        double ck[GM_FT_MAX_CHECKS * CK_N];
        for (int i = 0; i < r->ft.nchecks; i++) {
            double *row = ck + (size_t)i * CK_N;
            row[CK_EPOCH] = r->ft.checks[i].epoch;
            row[CK_LOSS] = r->ft.checks[i].loss;
            for (int t = 0; t < GM_MF_MAX_TASKS; t++) row[CK_VAL + t] = r->ft.checks[i].val[t];
        }
        MPI_TRY(MPI_Send(ck, r->ft.nchecks * CK_N, MPI_DOUBLE, dest, GM_TAG_RESULT, comm), "sending a result");
    }
    if (n) MPI_TRY(MPI_Send(bytes, (int)n, MPI_BYTE, dest, GM_TAG_RESULT, comm), "sending a result");
    if (elen) MPI_TRY(MPI_Send(error, (int)elen, MPI_CHAR, dest, GM_TAG_RESULT, comm), "sending a result");
done:
    free(bytes);
    return st;
}

gm_status gm_wire_recv_result(gm_result *r, char *error, size_t cap, int src, MPI_Comm comm, gm_error *err)
{
    gm_status st = GM_OK;
    double h[RH_N];
    void *bytes = NULL;
    char *etext = NULL;
    memset(r, 0, sizeof *r);
    error[0] = 0;
    MPI_TRY(MPI_Recv(h, RH_N, MPI_DOUBLE, src, GM_TAG_RESULT, comm, MPI_STATUS_IGNORE), "receiving a result");
    r->id = (int)h[RH_ID];
    r->ft.status = (gm_ft_status)(int)h[RH_STATUS];
    r->ft.epochs = (int)h[RH_EPOCHS];
    r->ft.worst_drop = h[RH_DROP];
    r->ft.first_drop = h[RH_DROP0];
    r->ft.seconds = h[RH_SECONDS];
    r->latency_ms = h[RH_LAT];
    r->base_latency_ms = h[RH_BASE];
    for (int t = 0; t < GM_MF_MAX_TASKS; t++) r->ft.val[t] = h[RH_VAL + t];
    const int n = (int)h[RH_BYTES], elen = (int)h[RH_ERROR], nck = (int)h[RH_NCHECKS];
    if (nck < 0 || nck > GM_FT_MAX_CHECKS)
        return gm_error_set(err, GM_EINVAL, "a result from rank %d claims %d learning-curve checks (at most %d)", src,
                            nck, GM_FT_MAX_CHECKS);
    if (nck > 0) {
        double ck[GM_FT_MAX_CHECKS * CK_N];
        MPI_TRY(MPI_Recv(ck, nck * CK_N, MPI_DOUBLE, src, GM_TAG_RESULT, comm, MPI_STATUS_IGNORE), "receiving a result");
        for (int i = 0; i < nck; i++) {
            const double *row = ck + (size_t)i * CK_N;
            r->ft.checks[i].epoch = (int)row[CK_EPOCH];
            r->ft.checks[i].loss = row[CK_LOSS];
            for (int t = 0; t < GM_MF_MAX_TASKS; t++) r->ft.checks[i].val[t] = row[CK_VAL + t];
        }
        r->ft.nchecks = nck;
    }
    if (n > 0) {
        if (!(bytes = malloc((size_t)n))) return gm_error_set(err, GM_ENOMEM, "out of memory for a result");
        MPI_TRY(MPI_Recv(bytes, n, MPI_BYTE, src, GM_TAG_RESULT, comm, MPI_STATUS_IGNORE), "receiving a result");
        st = gm_mfile_from_bytes(&r->tuned, bytes, (size_t)n, err);
    }
    if (elen > 0) {
        if (!(etext = malloc((size_t)elen))) return gm_error_set(err, GM_ENOMEM, "out of memory for a result");
        MPI_TRY(MPI_Recv(etext, elen, MPI_CHAR, src, GM_TAG_RESULT, comm, MPI_STATUS_IGNORE), "receiving a result");
        etext[elen - 1] = 0;
        snprintf(error, cap, "%s", etext);
    }
done:
    free(bytes);
    free(etext);
    return st;
}

gm_status gm_wire_serve(gm_worker *w, MPI_Comm comm, int coordinator, MPI_Comm group, gm_error *err)
{
    int grank = -1;
    gm_status st = gm_mpi_check(MPI_Comm_rank(group, &grank), "starting to serve", err);
    if (st != GM_OK) return st;
    gm_job *job = calloc(1, sizeof *job); /* large: the encoding is inline */
    if (!job) return gm_error_set(err, GM_ENOMEM, "out of memory");
    job->source = -1;
    for (;;) {
        int stop = 0;
        gm_job_free(job);
        if (grank == 0) st = gm_wire_recv_job(job, &stop, coordinator, comm, err);
        if (st != GM_OK) stop = 1;
        gm_status bst = gm_wire_bcast_job(job, &stop, 0, group, err);
        if (st == GM_OK) st = bst;
        if (st != GM_OK || stop) break;
        gm_result r;
        gm_error werr;
        const int failed = gm_worker_run(w, job, &r, &werr) != GM_OK;
        if (grank == 0) st = gm_wire_send_result(&r, failed ? werr.msg : NULL, coordinator, comm, err);
        gm_result_free(&r);
        if (st != GM_OK) break;
    }
    gm_job_free(job);
    free(job);
    return st;
}

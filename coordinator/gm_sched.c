#define _POSIX_C_SOURCE 200809L
#include "gm_sched.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gm_clock.h"
#include "gm_mpi.h"
#include "gm_wire.h"

typedef struct {
    int busy;
    gm_job job;        /* kept for a re-dispatch */
    double started;
    int expired;       /* its job was dispatched again elsewhere: a late result may still count */
} slot;

typedef struct {
    gm_search *S;
    const gm_search_config *c;
    const gm_sched_opts *o;
    slot *slots;
    int nslots;
    int *tries;        /* per candidate id: dispatches so far */
    int cap_tries;
    /* local mode: the one result waiting to be collected */
    int have_local;
    gm_result local;
    char local_error[512];
    int since_ckpt;    /* results since the last checkpoint */
    sig_atomic_t saves_seen;
    /* deterministic mode: results held until their round is complete, id order */
    const gm_job *round; /* the round's jobs (their ids say which results belong to it) */
    int nround;
    gm_result *held;
    char (*held_error)[512];
    int *held_worker, nheld;
} sched;

static int *tries_of(sched *X, int id)
{
    if (id >= X->cap_tries) {
        int cap = id + 256;
        int *t = realloc(X->tries, sizeof(int) * (size_t)cap);
        if (!t) return NULL;
        memset(t + X->cap_tries, 0, sizeof(int) * (size_t)(cap - X->cap_tries));
        X->tries = t;
        X->cap_tries = cap;
    }
    return &X->tries[id];
}

static gm_status dispatch(sched *X, int g, gm_job *job, gm_error *err)
{
    slot *s = &X->slots[g];
    int *t = tries_of(X, job->id);
    if (!t) return gm_error_set(err, GM_ENOMEM, "out of memory");
    ++*t;
    gm_job_free(&s->job);
    s->job = *job; /* takes the job's model */
    memset(&job->src, 0, sizeof job->src);
    s->busy = 1;
    s->expired = 0;
    s->started = gm_now_s();
    if (X->o->ngroups > 0) return gm_wire_send_job(&s->job, X->o->leaders[g], X->o->comm, err);
    /* Local: run it now; a worker error fails the candidate, not the sweep. */
    gm_error werr;
    X->local_error[0] = 0;
    if (gm_worker_run(X->o->local, &s->job, &X->local, &werr) != GM_OK)
        snprintf(X->local_error, sizeof X->local_error, "%s", werr.msg);
    X->have_local = 1;
    return GM_OK;
}

/* A result, if one is waiting: *g = its slot (-1: none). */
static gm_status poll_result(sched *X, int *g, gm_result *r, char *error, size_t cap, gm_error *err)
{
    *g = -1;
    if (X->o->ngroups == 0) {
        if (!X->have_local) return GM_OK;
        X->have_local = 0;
        *r = X->local;
        memset(&X->local, 0, sizeof X->local);
        snprintf(error, cap, "%s", X->local_error);
        *g = 0;
        return GM_OK;
    }
    int flag = 0;
    MPI_Status ms;
    gm_status st = gm_mpi_check(MPI_Iprobe(MPI_ANY_SOURCE, GM_TAG_RESULT, X->o->comm, &flag, &ms),
                                "looking for a result", err);
    if (st != GM_OK || !flag) return st;
    for (int k = 0; k < X->nslots; k++)
        if (X->o->leaders[k] == ms.MPI_SOURCE) *g = k;
    if (*g < 0) return gm_error_set(err, GM_EIO, "a result from rank %d, which leads no worker group", ms.MPI_SOURCE);
    return gm_wire_recv_result(r, error, cap, ms.MPI_SOURCE, X->o->comm, err);
}

static gm_status checkpoint(sched *X, gm_error *err)
{
    X->since_ckpt = 0;
    return gm_search_checkpoint(X->S, err);
}

/* Checkpoint requests: SIGUSR1 (a count) and every checkpoint_every results. */
static gm_status maybe_checkpoint(sched *X, int round_end, gm_error *err)
{
    const int asked = X->o->saves && *X->o->saves != X->saves_seen;
    if (asked) X->saves_seen = *X->o->saves;
    const int due = X->c->checkpoint_every > 0 && X->since_ckpt >= X->c->checkpoint_every &&
                    (!X->c->deterministic || round_end);
    return asked || due ? checkpoint(X, err) : GM_OK;
}

static int stopped(const sched *X) { return X->o->stop && *X->o->stop; }

static int out_of_time(const sched *X)
{
    return X->c->time_budget_s > 0 && gm_search_elapsed(X->S) > X->c->time_budget_s;
}

static int nbusy(const sched *X)
{
    int n = 0;
    for (int k = 0; k < X->nslots; k++) n += X->slots[k].busy;
    return n;
}

static void nap(void)
{
    struct timespec ts = {0, 2000000}; /* 2 ms: a result waits at most this long; the coordinator stays idle */
    nanosleep(&ts, NULL);
}

/* Deterministic mode: does id belong to the round, and is a result for it held already? */
static int in_round(const sched *X, int id)
{
    for (int k = 0; k < X->nround; k++)
        if (X->round[k].id == id) return 1;
    return 0;
}

static int held(const sched *X, int id)
{
    for (int k = 0; k < X->nheld; k++)
        if (X->held[k].id == id) return 1;
    return 0;
}

static void hold(sched *X, gm_result *r, const char *error, int worker)
{
    X->held[X->nheld] = *r;
    snprintf(X->held_error[X->nheld], sizeof X->held_error[0], "%s", error);
    X->held_worker[X->nheld++] = worker;
    memset(r, 0, sizeof *r);
}

/* Time-outs: dispatch again once (via the queue), then fail. */
static gm_status check_timeouts(sched *X, gm_error *err)
{
    if (X->c->timeout_s <= 0) return GM_OK;
    const double now = gm_now_s();
    for (int k = 0; k < X->nslots; k++) {
        slot *s = &X->slots[k];
        if (!s->busy || s->expired || now - s->started <= X->c->timeout_s) continue;
        s->expired = 1;
        if (*tries_of(X, s->job.id) < 2) gm_search_requeue(X->S, s->job.id);
        else {
            char why[128];
            snprintf(why, sizeof why, "timed out twice (%.3g s each)", X->c->timeout_s);
            if (X->c->deterministic) { /* failed in its turn, with the rest of the round */
                gm_result f = {.id = s->job.id};
                if (in_round(X, f.id) && !held(X, f.id)) hold(X, &f, why, -1);
                continue;
            }
            gm_status st = gm_search_fail(X->S, s->job.id, why, err);
            if (st != GM_OK) return st;
        }
    }
    return GM_OK;
}

/* A result arrived on slot g: record it now, or hold it for the round's end. */
static gm_status take(sched *X, int g, gm_result *r, const char *error, gm_error *err)
{
    slot *s = &X->slots[g];
    s->busy = 0;
    gm_job_free(&s->job);
    if (r->ft.interrupted) { /* stopped mid-way: it stays pending and runs again after a resume */
        gm_result_free(r);
        return GM_OK;
    }
    if (X->c->deterministic) {
        /* a late copy of a re-dispatched job, or one from an earlier round: the first result counts */
        if (in_round(X, r->id) && !held(X, r->id)) {
            X->since_ckpt++;
            hold(X, r, error, g);
        }
        gm_result_free(r);
        return GM_OK;
    }
    X->since_ckpt++;
    gm_status st = gm_search_record(X->S, r, g, error[0] ? error : NULL, err);
    gm_result_free(r);
    return st;
}

/* Deterministic mode: the round's results in id order. */
static gm_status apply_round(sched *X, gm_error *err)
{
    int n = X->nheld;
    gm_status st = GM_OK;
    for (int done = 0; done < n; done++) {
        int best = -1;
        for (int k = 0; k < n; k++)
            if (X->held[k].id >= 0 && (best < 0 || X->held[k].id < X->held[best].id)) best = k;
        if (st == GM_OK)
            st = gm_search_record(X->S, &X->held[best], X->held_worker[best],
                                  X->held_error[best][0] ? X->held_error[best] : NULL, err);
        gm_result_free(&X->held[best]);
        X->held[best].id = -1;
    }
    X->nheld = 0;
    return st;
}

/* Takes one waiting result, if any (*got = 1). */
static gm_status collect(sched *X, int *got, gm_error *err)
{
    int g;
    gm_result r;
    char error[512];
    gm_status st = poll_result(X, &g, &r, error, sizeof error, err);
    *got = st == GM_OK && g >= 0;
    return *got ? take(X, g, &r, error, err) : st;
}

static gm_status run_async(sched *X, int *interrupted, gm_error *err)
{
    gm_status st = GM_OK;
    int more = 1;
    while (st == GM_OK) {
        if (stopped(X)) {
            *interrupted = 1;
            break;
        }
        if (out_of_time(X)) more = 0;
        for (int g = 0; st == GM_OK && more && g < X->nslots; g++) {
            if (X->slots[g].busy) continue;
            gm_job job;
            int got = 0;
            st = gm_search_propose(X->S, &job, &got, err);
            if (st == GM_OK && got) st = dispatch(X, g, &job, err);
            else if (st == GM_OK) more = gm_search_remaining(X->S) > 0; /* the queue may refill after a time-out */
            if (!got) break;
        }
        if (st != GM_OK || (!more && nbusy(X) == 0)) break;
        int got;
        st = collect(X, &got, err);
        if (st == GM_OK) st = check_timeouts(X, err);
        if (st == GM_OK) st = maybe_checkpoint(X, 1, err);
        if (st == GM_OK && !got) nap();
        if (st == GM_OK && !more && gm_search_remaining(X->S) > 0 && !out_of_time(X)) more = 1;
    }
    return st;
}

static gm_status run_rounds(sched *X, int *interrupted, gm_error *err)
{
    const gm_search_config *c = X->c;
    gm_job *round = calloc((size_t)c->round, sizeof *round);
    X->held = calloc((size_t)c->round, sizeof *X->held);
    X->held_error = calloc((size_t)c->round, sizeof *X->held_error);
    X->held_worker = calloc((size_t)c->round, sizeof *X->held_worker);
    gm_status st = round && X->held && X->held_error && X->held_worker ? GM_OK
                                                                        : gm_error_set(err, GM_ENOMEM, "out of memory");
    while (st == GM_OK && !stopped(X) && !out_of_time(X)) {
        int n = 0, got = 1;
        while (st == GM_OK && n < c->round && got) {
            st = gm_search_propose(X->S, &round[n], &got, err);
            n += got;
        }
        if (st != GM_OK || n == 0) break;
        X->round = round;
        X->nround = n;
        int next = 0; /* next job of the round to dispatch */
        while (st == GM_OK && X->nheld < n) {
            if (stopped(X)) break;
            for (int g = 0; st == GM_OK && g < X->nslots; g++) {
                if (X->slots[g].busy) continue;
                if (next < n) st = dispatch(X, g, &round[next++], err);
                else { /* a timed-out job, dispatched once more */
                    gm_job job;
                    int again = 0;
                    st = gm_search_take_queued(X->S, &job, &again, err);
                    if (st == GM_OK && again && !held(X, job.id)) st = dispatch(X, g, &job, err);
                    else if (again) gm_job_free(&job);
                }
            }
            int arrived = 0;
            if (st == GM_OK) st = collect(X, &arrived, err);
            if (st == GM_OK) st = check_timeouts(X, err);
            if (st == GM_OK && !arrived) {
                st = maybe_checkpoint(X, 0, err);
                nap();
            }
        }
        X->nround = 0;
        for (int k = next; k < n; k++) gm_job_free(&round[k]); /* stopped before dispatch: stays pending */
        if (stopped(X)) {
            /* the round's finished results are not applied: they run again after a resume */
            for (int k = 0; k < X->nheld; k++) gm_result_free(&X->held[k]);
            X->nheld = 0;
            break;
        }
        if (st == GM_OK) st = apply_round(X, err);
        if (st == GM_OK) st = maybe_checkpoint(X, 1, err);
    }
    /* Groups still on a timed-out copy: let them answer (the result is dropped), so the job ends cleanly. */
    while (st == GM_OK && !stopped(X) && nbusy(X) > 0) {
        int got;
        st = collect(X, &got, err);
        if (st == GM_OK && !got) nap();
    }
    *interrupted = stopped(X);
    free(round);
    for (int k = 0; k < X->nheld; k++) gm_result_free(&X->held[k]);
    free(X->held);
    free(X->held_error);
    free(X->held_worker);
    return st;
}

gm_status gm_sched_run(gm_search *S, const gm_search_config *c, const gm_sched_opts *o, int *interrupted, int *busy,
                       gm_error *err)
{
    sched X = {.S = S, .c = c, .o = o, .nslots = o->ngroups > 0 ? o->ngroups : 1};
    X.saves_seen = o->saves ? *o->saves : 0;
    X.slots = calloc((size_t)X.nslots, sizeof *X.slots);
    *interrupted = *busy = 0;
    if (!X.slots) return gm_error_set(err, GM_ENOMEM, "out of memory");
    for (int k = 0; k < X.nslots; k++) X.slots[k].job.source = -1;
    gm_status st = c->deterministic ? run_rounds(&X, interrupted, err) : run_async(&X, interrupted, err);
    /* Whatever happened, the state so far is worth keeping. */
    gm_error cerr;
    gm_status cst = gm_search_checkpoint(S, &cerr);
    if (st == GM_OK && cst != GM_OK) {
        *err = cerr;
        st = cst;
    }
    *busy = nbusy(&X);
    for (int k = 0; k < X.nslots; k++) gm_job_free(&X.slots[k].job);
    gm_result_free(&X.local);
    free(X.slots);
    free(X.tries);
    return st;
}

gm_status gm_search_run(const gm_search_config *c, void (*progress)(void *ctx, const gm_search_event *e), void *ctx,
                        const volatile sig_atomic_t *stop, gm_search_summary *s, gm_error *err)
{
    gm_worker *w = NULL;
    gm_search *S = NULL;
    gm_worker_opts wo = {.config = c, .abort_check = gm_search_curve_abort, .time_latency = 1, .stop = stop};
    gm_status st = gm_worker_open(&w, &wo, err);
    double base = NAN;
    if (st == GM_OK) st = gm_worker_baseline(w, &base, err);
    gm_search_opts so = {.config = c, .models = w ? gm_worker_models(w) : NULL,
                         .orig_val = w ? gm_worker_data(w)->orig_val : NULL, .base_latency_ms = base,
                         .progress = progress, .ctx = ctx};
    if (st == GM_OK) st = gm_search_open(&S, &so, err);
    int interrupted = 0, busy = 0;
    gm_sched_opts o = {.local = w, .stop = stop};
    if (st == GM_OK) st = gm_sched_run(S, c, &o, &interrupted, &busy, err);
    if (st == GM_OK) st = gm_search_finish(S, interrupted, s, err);
    gm_search_free(S);
    gm_worker_free(w);
    return st;
}

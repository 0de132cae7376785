/*
 * gmorph-search: the fusion search. Alone it runs coordinator and worker in one
 * process; under mpirun or srun, rank 0 coordinates and ranks 1..N-1 form
 * worker groups of --group-size ranks that fine-tune candidates data-parallel.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gm_cli.h"
#include "gm_clock.h"
#include "gm_device.h"
#include "gm_fs.h"
#include "gm_guide.h"
#include "gm_mpi.h"
#include "gm_sched.h"
#include "gm_version.h"
#include "gm_wire.h"

#define CMD "search"

/*
 * MPI_COMM_WORLD and the groups split from it return MPI errors (gm_mpi). A
 * failed call in this file's set-up and collectives leaves the other ranks
 * waiting for this one, so the program prints the message (rank included) and
 * ends the job; failures inside the search (gm_wire, gm_sched) come back as a
 * status and end it through coordinator_main or worker_main.
 */
static _Noreturn void mpi_abort(const gm_error *err)
{
    fprintf(stderr, "gmorph-search: %s\n", err->msg);
    MPI_Abort(MPI_COMM_WORLD, GM_EXIT_FAIL);
    exit(GM_EXIT_FAIL); /* MPI_Abort does not return */
}

#define MPI_CHECK(call, what)                                                                                      \
    do {                                                                                                           \
        gm_error e_;                                                                                               \
        if (gm_mpi_check((call), what, &e_) != GM_OK) mpi_abort(&e_);                                              \
    } while (0)

/* Set by signal handlers: only a global reaches a handler. */
static volatile sig_atomic_t stop_requested, saves_requested;

static void on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void on_save(int sig)
{
    (void)sig;
    saves_requested++;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gmorph-search --config SEARCH.json [options]\n"
            "       gmorph-search --resume RUN/search.h5 [--time-budget S] [--quiet]\n"
            "       mpirun -np N gmorph-search --config SEARCH.json [--group-size G] [options]\n"
            "Fuses single-task models into one multi-task model: the fastest fused graph whose every\n"
            "task stays within the accuracy-drop threshold (GMorph's search; coordinator/README.md\n"
            "documents the config). Writes candidates.csv, candidates.jsonl, best.h5, summary.md and\n"
            "the checkpoint search.h5 into the run folder. Run again with the same config, it continues the\n"
            "sweep saved there (a config that differs in what a sweep cannot change is refused by name).\n\n"
            "  --config FILE         search config (JSON)\n"
            "  --resume FILE         continue the sweep saved in this checkpoint, with its config, in its folder\n"
            "  --fresh               start over even if the run folder holds a checkpoint (it is replaced)\n"
            "  --out DIR             run folder (overrides the config's \"out\")\n"
            "  --threshold X         allowed accuracy drop per task, e.g. 0.01 (overrides)\n"
            "  --iterations N        candidates to propose (overrides; with --resume: a new total)\n"
            "  --policy NAME         sa or random (overrides)\n"
            "  --time-budget S       stop proposing after S seconds in all (overrides)\n"
            "  --seed N              (overrides)\n"
            "  --threads N           CPU threads per rank (overrides)\n"
            "  --device D            cpu, cuda or cuda-tf32: what workers fine-tune and time candidates on\n"
            "                        (overrides run.device; default cpu). cuda: one GPU per rank, picked\n"
            "                        from the rank's index on its node, strict float32; cuda-tf32: TF32\n"
            "                        tensor cores in products and convolutions. Groups sum gradients with\n"
            "                        NCCL. Rank 0 uses its node's GPU for the teachers and the final\n"
            "                        re-timing of the best\n"
            "  --group-size G        ranks per worker group, fine-tuning data-parallel (default 1)\n"
            "  --deterministic       rounds of run.round candidates: the result does not depend on timing\n"
            "                        or on the number of ranks (best = fewest FLOPs)\n"
            "  --checkpoint-every N  results between checkpoints (overrides; 0: end and signals only)\n"
            "  --timeout S           a candidate running longer is dispatched again once, then failed\n"
            "  --quiet               no line per candidate\n"
            "  --version             the release and the build's options (alone)\n"
            "  -h, --help            this text\n\n"
            "SIGUSR1 writes a checkpoint and goes on. SIGINT or SIGTERM writes a checkpoint and the results so\n"
            "far, and stops; candidates in flight go back to the queue when the sweep is resumed.\n");
}

static void show(void *ctx, const gm_search_event *e)
{
    (void)ctx;
    char src[32], eta[48] = "";
    if (e->source < 0) snprintf(src, sizeof src, "original");
    else snprintf(src, sizeof src, "elite %d", e->source);
    const double rate = e->elapsed_s > 0 ? 3600.0 * e->done / e->elapsed_s : 0.0;
    if (rate > 0 && e->iterations > e->iteration) {
        double left_s = (e->iterations - e->iteration - 1) / rate * 3600.0;
        if (e->budget_s > 0 && e->budget_s - e->elapsed_s < left_s) left_s = e->budget_s - e->elapsed_s;
        snprintf(eta, sizeof eta, ", %.0f/h, ETA %.0f min", rate, left_s > 0 ? left_s / 60.0 : 0.0);
    }
    char best[32] = "best: none passed yet", before[32] = "";
    if (!isnan(e->drop0) && e->epochs > 0) snprintf(before, sizeof before, " (%+.2f before)", 100.0 * e->drop0);
    if (!isnan(e->best_speedup)) snprintf(best, sizeof best, "best %.2fx", e->best_speedup);
    if (e->error)
        fprintf(stderr, "[%4d] it %4d from %-9s %3d nodes  failed: %s\n", e->id, e->iteration, src, e->nodes, e->error);
    else if (e->val)
        fprintf(stderr, "[%4d] it %4d from %-9s %3d nodes %8.3f ms %5.2fx  %-8s after %2d epochs, worst drop %+6.2f%s  "
                        "(%s%s)\n", e->id, e->iteration, src, e->nodes, e->latency_ms, e->speedup, e->status,
                e->epochs, 100.0 * e->worst_drop, before, best, eta);
    else
        fprintf(stderr, "[%4d] it %4d from %-9s %3d nodes  %s\n", e->id, e->iteration, src, e->nodes, e->status);
}

typedef struct {
    const char *config, *resume, *out, *policy, *device;
    double threshold, budget, timeout;
    long iterations, seed, threads, group_size, ckpt_every;
    int quiet, deterministic, fresh;
    int resuming; /* set by resolve_config: a checkpoint in the run folder is continued */
    int lock_fd;  /* rank 0: holds RUN/search.lock while the sweep runs (-1: none) */
} args;

/* 0: go on; otherwise the exit code (help printed: GM_EXIT_OK + 100). */
static int parse_args(int argc, char **argv, args *a, int talk)
{
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'},      {"resume", required_argument, 0, 'R'},
        {"out", required_argument, 0, 'o'},         {"threshold", required_argument, 0, 'T'},
        {"iterations", required_argument, 0, 'i'},  {"policy", required_argument, 0, 'p'},
        {"time-budget", required_argument, 0, 'b'}, {"seed", required_argument, 0, 's'},
        {"threads", required_argument, 0, 't'},     {"group-size", required_argument, 0, 'g'},
        {"deterministic", no_argument, 0, 'd'},     {"checkpoint-every", required_argument, 0, 'k'},
        {"timeout", required_argument, 0, 'O'},     {"quiet", no_argument, 0, 'q'},
        {"device", required_argument, 0, 'D'},      {"help", no_argument, 0, 'h'},
        {"fresh", no_argument, 0, 'F'},
        {0, 0, 0, 0}};
    *a = (args){.threshold = -1, .budget = -1, .timeout = -1, .seed = -1, .group_size = 1, .ckpt_every = -1,
                .lock_fd = -1};
    int c, bad = 0;
    if (!talk) opterr = 0;
    while (!bad && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': a->config = optarg; break;
        case 'R': a->resume = optarg; break;
        case 'o': a->out = optarg; break;
        case 'T': bad = gm_cli_float(CMD, "--threshold", optarg, 0.0, 1.0, &a->threshold); break;
        case 'i': bad = gm_cli_int(CMD, "--iterations", optarg, 1, 1000000, &a->iterations); break;
        case 'p': a->policy = optarg; break;
        case 'b': bad = gm_cli_float(CMD, "--time-budget", optarg, 0.0, 1e9, &a->budget); break;
        case 's': bad = gm_cli_int(CMD, "--seed", optarg, 0, 2147483647, &a->seed); break;
        case 't': bad = gm_cli_int(CMD, "--threads", optarg, 1, 1024, &a->threads); break;
        case 'g': bad = gm_cli_int(CMD, "--group-size", optarg, 1, 1 << 20, &a->group_size); break;
        case 'd': a->deterministic = 1; break;
        case 'k': bad = gm_cli_int(CMD, "--checkpoint-every", optarg, 0, 100000000, &a->ckpt_every); break;
        case 'O': bad = gm_cli_float(CMD, "--timeout", optarg, 0.0, 1e9, &a->timeout); break;
        case 'q': a->quiet = 1; break;
        case 'F': a->fresh = 1; break;
        case 'D': {
            gm_device_kind kind;
            gm_error err;
            a->device = optarg;
            if (gm_device_parse(optarg, &kind, NULL, &err) != GM_OK) {
                if (talk) fprintf(stderr, "gmorph-search: --device: %s\n", err.msg);
                bad = 1;
            }
            break;
        }
        case 'h':
            if (talk) usage(stdout);
            return GM_EXIT_OK + 100;
        default: bad = 1;
        }
    }
    if (!bad && optind < argc) {
        if (talk) fprintf(stderr, "gmorph-search: unexpected argument \"%s\"\n", argv[optind]);
        bad = 1;
    } else if (!bad && !a->config == !a->resume) {
        if (talk) fprintf(stderr, "gmorph-search: give --config or --resume (one of them)\n");
        bad = 1;
    } else if (!bad && a->resume && (a->config || a->out || a->threshold >= 0 || a->policy || a->seed >= 0 ||
                                     a->deterministic || a->fresh)) {
        if (talk)
            fprintf(stderr, "gmorph-search: --resume continues with the checkpoint's config: only --iterations, "
                            "--time-budget, --threads, --device, --checkpoint-every, --timeout, --group-size and "
                            "--quiet may change\n");
        bad = 1;
    } else if (!bad && a->policy && strcmp(a->policy, "sa") && strcmp(a->policy, "random")) {
        if (talk) fprintf(stderr, "gmorph-search: --policy must be sa or random, got \"%s\"\n", a->policy);
        bad = 1;
    }
    if (bad) {
        if (talk) fprintf(stderr, "Try 'gmorph-search --help'.\n");
        return GM_EXIT_USAGE;
    }
    return 0;
}

/* gm_ckpt_load; on failure the message points at the previous checkpoint when the atomic save kept one. */
static gm_status load_checkpoint(const char *path, gm_ckpt *ck, gm_error *err)
{
    gm_status st = gm_ckpt_load(path, ck, err);
    char prev[4200];
    snprintf(prev, sizeof prev, "%s.prev", path);
    FILE *f = st != GM_OK ? fopen(prev, "rb") : NULL;
    if (f) {
        fclose(f);
        size_t n = strlen(err->msg);
        if (n + strlen(prev) + 48 < sizeof err->msg)
            snprintf(err->msg + n, sizeof err->msg - n, " (the previous checkpoint is %.*s: --resume it)",
                     (int)(sizeof err->msg - n - 48), prev);
    }
    return st;
}

/*
 * A config run again where a sweep left its checkpoint continues that sweep
 * (as `gmorph train` does): the checkpoint is loaded into ck and a->resuming
 * set, unless the config differs in a field that cannot change, which is an
 * error naming it. --fresh starts over.
 */
static gm_status continue_run(args *a, const gm_search_config *cfg, gm_ckpt *ck, gm_error *err)
{
    char path[sizeof cfg->out + 16];
    snprintf(path, sizeof path, "%s/search.h5", cfg->out);
    FILE *f = fopen(path, "rb");
    if (!f) return GM_OK;
    fclose(f);
    if (a->fresh) {
        fprintf(stderr, "gmorph-search: --fresh: starting over in %s/ (its checkpoint will be replaced)\n", cfg->out);
        return GM_OK;
    }
    gm_status st = load_checkpoint(path, ck, err);
    if (st != GM_OK) {
        size_t n = strlen(err->msg);
        if (n + 40 < sizeof err->msg) snprintf(err->msg + n, sizeof err->msg - n, "; --fresh starts over");
        return st;
    }
    gm_search_config prev;
    gm_search_defaults(&prev);
    st = gm_search_config_parse(&prev, ck->config, path, err);
    char why[400];
    const int d = st == GM_OK ? gm_search_config_diff(&prev, cfg, why, sizeof why) : 0;
    if (d < 0) st = gm_error_set(err, GM_ENOMEM, "out of memory comparing configs");
    if (d > 0)
        st = gm_error_set(err, GM_EINVAL,
                          "%s holds a sweep whose config differs from this one in %.300s (the sweep's, then this one's), "
                          "which a sweep cannot change: change it back, write to another \"out\", or --fresh to start "
                          "over", path, why);
    if (st != GM_OK) {
        gm_ckpt_free(ck);
        memset(ck, 0, sizeof *ck);
        return st;
    }
    a->resuming = 1;
    return GM_OK;
}

/*
 * One sweep per run folder: rank 0 holds RUN/search.lock from here to its
 * exit, so a second command on the same folder (which would otherwise resume
 * the checkpoint the first is writing) is refused with who holds it.
 */
static gm_status lock_run(args *a, const char *out, gm_error *err)
{
    char path[sizeof ((gm_search_config *)0)->out + 16], owner[256], host[128] = "?", held[256];
    if (gm_fs_mkdirs(out) != 0) return gm_error_set(err, GM_EIO, "%s: cannot create the run folder: %s", out, strerror(errno));
    snprintf(path, sizeof path, "%s/search.lock", out);
    gethostname(host, sizeof host - 1);
    snprintf(owner, sizeof owner, "pid %ld on %s\n", (long)getpid(), host);
    a->lock_fd = gm_fs_lock(path, owner, held, sizeof held);
    if (a->lock_fd >= 0) return GM_OK;
    if (errno != EAGAIN && errno != EACCES) return gm_error_set(err, GM_EIO, "%s: %s", path, strerror(errno));
    held[strcspn(held, "\n")] = '\0';
    return gm_error_set(err, GM_EINVAL,
                        "another gmorph-search (%s) is running in %s/: wait for it, stop it, or write to another \"out\"",
                        held[0] ? held : "its owner unknown", out);
}

/* Rank 0: the config (file and overrides, or the checkpoint's) and, on resume, the checkpoint. */
static gm_status resolve_config(args *a, gm_search_config *cfg, gm_ckpt *ck, gm_error *err)
{
    gm_search_defaults(cfg);
    gm_status st;
    if (a->resume) {
        /* The run folder is where the checkpoint is: a moved or copied folder resumes in place. */
        const char *slash = strrchr(a->resume, '/');
        if (!slash) snprintf(cfg->out, sizeof cfg->out, ".");
        else snprintf(cfg->out, sizeof cfg->out, "%.*s", (int)(slash - a->resume), a->resume);
        st = lock_run(a, cfg->out, err);
        if (st != GM_OK) return st;
        st = load_checkpoint(a->resume, ck, err);
        char out[sizeof cfg->out];
        memcpy(out, cfg->out, sizeof out);
        if (st == GM_OK) st = gm_search_config_parse(cfg, ck->config, a->resume, err);
        memcpy(cfg->out, out, sizeof out);
    } else {
        st = gm_search_config_load(cfg, a->config, err);
        if (a->out) snprintf(cfg->out, sizeof cfg->out, "%s", a->out);
        if (a->threshold >= 0) cfg->threshold = a->threshold;
        if (a->seed >= 0) cfg->seed = (uint64_t)a->seed;
        if (a->policy) cfg->policy = strcmp(a->policy, "sa") ? GM_POLICY_RANDOM : GM_POLICY_SA;
        if (a->deterministic) cfg->deterministic = 1;
    }
    if (a->iterations) cfg->iterations = (int)a->iterations;
    if (a->budget >= 0) cfg->time_budget_s = a->budget;
    if (a->threads) cfg->threads = (int)a->threads;
    if (a->device) snprintf(cfg->device, sizeof cfg->device, "%s", a->device);
    if (a->ckpt_every >= 0) cfg->checkpoint_every = (int)a->ckpt_every;
    if (a->timeout >= 0) cfg->timeout_s = a->timeout;
    if (st == GM_OK && !a->resume) st = lock_run(a, cfg->out, err);
    if (st == GM_OK && !a->resume) st = continue_run(a, cfg, ck, err);
    return st;
}

/* Rank 0 sends every rank the resolved config as JSON text (length -1: rank 0 failed, everyone exits). */
static int share_config(gm_search_config *cfg, int ok, int rank, gm_error *err)
{
    char *text = rank == 0 && ok ? gm_search_config_to_json(cfg) : NULL;
    int len = text ? (int)strlen(text) + 1 : -1;
    MPI_CHECK(MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD), "sharing the config's length");
    if (len < 0) return 0;
    if (rank != 0 && !(text = malloc((size_t)len))) return 0;
    MPI_CHECK(MPI_Bcast(text, len, MPI_CHAR, 0, MPI_COMM_WORLD), "sharing the config");
    int good = 1;
    if (rank != 0) {
        gm_search_defaults(cfg);
        good = gm_search_config_parse(cfg, text, "config from rank 0", err) == GM_OK;
    }
    free(text);
    return good;
}

static void print_summary(const gm_search_summary *s, const gm_search_config *cfg)
{
    printf("originals one after the other %.3f ms; ", s->base_latency_ms);
    if (s->best_id >= 0)
        printf("best fused (candidate %d) timed again against them, alternately: %.3f ms against %.3f ms, %.2fx "
               "faster (%.2fx when the search timed it)\n", s->best_id, s->best_latency_ms, s->best_base_ms,
               s->speedup, s->found_speedup);
    else printf("no candidate passed\n");
    for (int t = 0; t < s->ntasks; t++) {
        if (s->best_id >= 0)
            printf("  %-12s val %6.2f%% -> %6.2f%%   test %6.2f%% -> %6.2f%%\n", s->task[t], 100 * s->orig_val[t],
                   100 * s->best_val[t], 100 * s->orig_test[t], 100 * s->best_test[t]);
        else
            printf("  %-12s val %6.2f%%   test %6.2f%% (originals)\n", s->task[t], 100 * s->orig_val[t],
                   100 * s->orig_test[t]);
    }
    printf("%d candidates: %d passed, %d failed, %d aborted, %d filtered, %d duplicates; %ld fine-tune epochs; "
           "%.0f s%s; results in %s/\n", s->candidates, s->passed, s->failed, s->aborted, s->filtered,
           s->duplicates, s->ft_epochs, s->wall_s,
           s->interrupted ? " (stopped early: the same command, or --resume <out>/search.h5, continues it)" : "", cfg->out);
}

/* The rank's device backend: NULL for the CPU (the worker makes its own CPU backends). */
/* Guided proposals: the cost table, measured on the worker's probe (on the device, or the CPU). */
static gm_status open_guide(const gm_search_config *cfg, gm_worker *w, gm_backend *dev, gm_guide **guide,
                            gm_error *err)
{
    long n = 0;
    const float *probe = gm_worker_probe(w, &n);
    gm_backend *be = dev;
    gm_status st = GM_OK;
    const double t0 = gm_now_s();
    if (!be) st = gm_backend_cpu_create(&be, cfg->threads, err);
    gm_guide_opts go = {.explore = cfg->guide_explore, .cost_scale = cfg->guide_cost_scale,
                        .project_shortcuts = cfg->stitch && cfg->stitch_shortcuts};
    if (st == GM_OK) st = gm_guide_create(guide, gm_worker_models(w), cfg->nmodels, probe, gm_worker_probe_own(w), n, be, &go, err);
    if (be != dev) gm_backend_free(be);
    if (st == GM_OK)
        fprintf(stderr, "gmorph-search: guided proposals: %d merges priced on %ld probe images in %.1f s (median "
                        "predicted drop %.2f)\n", gm_guide_npairs(*guide), gm_guide_nsamples(*guide), gm_now_s() - t0, gm_guide_median(*guide));
    return st;
}

static gm_status open_device(const gm_search_config *cfg, int local_rank, gm_backend **be, gm_device_kind *kind,
                             char *desc, size_t desc_size, gm_error *err)
{
    *be = NULL;
    int tf32 = 0;
    gm_status st = gm_device_parse(cfg->device, kind, &tf32, err);
    const gm_device_opts o = {.kind = *kind, .threads = cfg->threads, .local_rank = local_rank, .tf32 = tf32};
    if (st == GM_OK && *kind != GM_DEVICE_CPU) st = gm_device_open(be, &o, desc, desc_size, err);
    return st;
}

/* The exit code of the worst failure over every rank (2 bad input before 1 runtime); 0 when all is well. */
static int worst_code(gm_status st)
{
    int code = st == GM_OK ? GM_EXIT_OK : gm_cli_exit_code(st), worst = code;
    MPI_CHECK(MPI_Allreduce(&code, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD), "agreeing on the exit code");
    return worst;
}

/* Ranks 1..N-1: open a device and a worker for the group and serve until told to stop. */
static int worker_main(const gm_search_config *cfg, int rank, int group_size, int local_rank)
{
    MPI_Comm group;
    gm_error err;
    MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, (rank - 1) / group_size, rank, &group), "forming the worker groups");
    if (gm_mpi_errors_return(group, &err) != GM_OK) mpi_abort(&err); /* inherited from the world; said anyway */
    gm_backend *dev = NULL;
    gm_device_kind kind = GM_DEVICE_CPU;
    gm_device_group *dg = NULL;
    gm_worker *w = NULL;
    char desc[600] = "";
    /* rank 0 has written the teachers' logits: read them, do not recompute */
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD), "waiting for the teachers' logits");
    gm_status st = open_device(cfg, local_rank, &dev, &kind, desc, sizeof desc, &err);
    if (st != GM_OK) fprintf(stderr, "gmorph-search: rank %d: %s\n", rank, err.msg);
    else if (dev && (rank - 1) % group_size == 0) fprintf(stderr, "gmorph-search: rank %d: %s\n", rank, desc);
    /* The group's sum is set up collectively: only when every member has its device. */
    int ok = st == GM_OK, group_ok = 0;
    MPI_CHECK(MPI_Allreduce(&ok, &group_ok, 1, MPI_INT, MPI_MIN, group), "agreeing that the group has its devices");
    if (group_ok) {
        st = gm_device_group_open(&dg, group, kind, dev, &err);
        if (st == GM_OK) {
            gm_worker_opts wo = {.config = cfg, .abort_check = gm_search_curve_abort,
                                 .group = group_size > 1 ? gm_device_group_get(dg) : NULL,
                                 .time_latency = (rank - 1) % group_size == 0, .device = dev};
            st = gm_worker_open(&w, &wo, &err);
        }
        if (st != GM_OK) fprintf(stderr, "gmorph-search: rank %d: %s\n", rank, err.msg);
    } else if (st == GM_OK) {
        st = gm_error_set(&err, GM_EDEVICE, "another rank of the group has no device"); /* its message is printed */
    }
    int code = worst_code(st);
    if (!code) {
        st = gm_wire_serve(w, MPI_COMM_WORLD, 0, group, &err);
        if (st != GM_OK) fprintf(stderr, "gmorph-search: rank %d: %s\n", rank, err.msg);
        code = st == GM_OK ? GM_EXIT_OK : gm_cli_exit_code(st);
    }
    gm_worker_free(w);
    gm_device_group_free(dg);
    gm_backend_free(dev);
    MPI_CHECK(MPI_Comm_free(&group), "freeing the worker group");
    return code;
}

static int coordinator_main(const gm_search_config *cfg, const args *a, const gm_ckpt *ck, int size, int local_rank)
{
    MPI_Comm none; /* rank 0 takes part in the workers' split and joins no group */
    MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, MPI_UNDEFINED, 0, &none), "forming the worker groups");
    const int ngroups = (size - 1) / (int)a->group_size;
    gm_error err;
    gm_worker *w = NULL;
    gm_search *S = NULL;
    gm_backend *dev = NULL;
    gm_device_kind kind = GM_DEVICE_CPU;
    char desc[600] = "";
    /* Alone, this rank is the worker and computes on the device. With workers it still opens
     * it: the teachers' logits are computed here, and the final re-timing of the best must
     * run where the workers timed candidates (the summary's speed-up is the device's). */
    gm_status st = open_device(cfg, local_rank, &dev, &kind, desc, sizeof desc, &err);
    if (dev) fprintf(stderr, "gmorph-search: %s\n", desc);
    /* The local worker computes the teachers' logits once for everyone, and is the worker when alone. */
    gm_worker_opts wo = {.config = cfg, .abort_check = gm_search_curve_abort, .time_latency = 1,
                         .stop = size > 1 ? NULL : &stop_requested, .device = dev};
    if (st == GM_OK) st = gm_worker_open(&w, &wo, &err);
    double base = NAN;
    if (st == GM_OK) st = gm_worker_baseline(w, &base, &err);
    if (size > 1) MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD), "sharing the teachers' logits");
    const int code = size > 1 ? worst_code(st) : st == GM_OK ? GM_EXIT_OK : gm_cli_exit_code(st);
    if (st != GM_OK || code) {
        if (st != GM_OK) gm_cli_fail(CMD, NULL, &err);
        else fprintf(stderr, "gmorph-search: a worker rank could not start (see its message)\n");
        gm_worker_free(w);
        gm_backend_free(dev);
        return code;
    }
    fprintf(stderr, "gmorph-search: %d models, threshold %.3f, policy %s%s, %d iterations, %d worker group%s of %ld "
                    "rank%s, %d threads each, device %s -> %s/%s\n",
            cfg->nmodels, cfg->threshold, cfg->policy == GM_POLICY_SA ? "sa" : "random",
            cfg->deterministic ? " (deterministic)" : "", cfg->iterations, ngroups ? ngroups : 1,
            ngroups == 1 || !ngroups ? "" : "s", ngroups ? a->group_size : 1L, a->group_size > 1 ? "s" : "",
            cfg->threads, cfg->device, cfg->out, ck ? " (resumed)" : "");
    gm_guide *guide = NULL;
    if (cfg->guided && !cfg->gmorph_mode) st = open_guide(cfg, w, dev, &guide, &err);
    gm_search_opts so = {.config = cfg, .models = gm_worker_models(w), .orig_val = gm_worker_data(w)->orig_val,
                         .base_latency_ms = base, .resume = ck, .latency_device = dev, .guide = guide,
                         .progress = a->quiet ? NULL : show};
    if (st == GM_OK) st = gm_search_open(&S, &so, &err);
    int leaders[4096], interrupted = 0, busy = 0;
    for (int g = 0; g < ngroups && g < 4096; g++) leaders[g] = 1 + g * (int)a->group_size;
    gm_sched_opts o = {.local = ngroups ? NULL : w, .comm = MPI_COMM_WORLD, .ngroups = ngroups < 4096 ? ngroups : 4096,
                       .leaders = leaders, .stop = &stop_requested, .saves = &saves_requested};
    if (st == GM_OK) st = gm_sched_run(S, cfg, &o, &interrupted, &busy, &err);
    gm_search_summary s;
    if (st == GM_OK) st = gm_search_finish(S, interrupted, &s, &err);
    gm_search_free(S);
    gm_guide_free(guide);
    gm_worker_free(w);
    gm_backend_free(dev);
    if (st == GM_OK) print_summary(&s, cfg);
    fflush(stdout);
    if (st != GM_OK) fprintf(stderr, "gmorph-search: %s\n", err.msg);
    const int rc = st == GM_OK ? GM_EXIT_OK : gm_cli_exit_code(st);
    if (busy || st != GM_OK) {
        /* Groups still in a fine-tune cannot hear a stop: everything is written, end the job. */
        if (size > 1) MPI_Abort(MPI_COMM_WORLD, rc ? rc : (interrupted ? 1 : 0));
        return rc;
    }
    for (int g = 0; g < ngroups; g++)
        if (gm_wire_send_stop(leaders[g], MPI_COMM_WORLD, &err) != GM_OK) mpi_abort(&err); /* it would wait on */
    return rc;
}

/* MPI_Finalize, checked: the exit code, or a failure if MPI could not end cleanly. */
static int finalize(int code)
{
    const int rank = gm_mpi_world_rank(); /* MPI cannot say it afterwards */
    const int rc = MPI_Finalize();
    if (rc == MPI_SUCCESS) return code;
    fprintf(stderr, "gmorph-search: rank %d: MPI_Finalize failed (error %d)\n", rank, rc);
    return code ? code : GM_EXIT_FAIL;
}

int main(int argc, char **argv)
{
    /*
     * Before MPI_Init: a SIGUSR1 or SIGTERM that lands during start-up (a short
     * Slurm job, scancel -s USR1) must not kill a rank with the default action.
     * Rank 0 keeps these flag handlers; workers ignore the signals below.
     */
    if (argc == 2 && !strcmp(argv[1], "--version")) { /* before MPI_Init: an install check needs no launcher */
        gm_version_print(stdout, "gmorph-search");
        return GM_EXIT_OK;
    }
    struct sigaction sa = {0};
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_save;
    sigaction(SIGUSR1, &sa, NULL);
    if (MPI_Init(&argc, &argv) != MPI_SUCCESS) { /* the default handler usually ends the job first */
        fprintf(stderr, "gmorph-search: MPI_Init failed\n");
        return GM_EXIT_FAIL;
    }
    gm_error merr;
    if (gm_mpi_errors_return(MPI_COMM_WORLD, &merr) != GM_OK) mpi_abort(&merr);
    int rank, size;
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank), "its rank");
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size), "the number of ranks");
    const int local_rank = gm_device_local_rank(MPI_COMM_WORLD); /* collective: before any rank can leave */
    args a;
    int code = parse_args(argc, argv, &a, rank == 0);
    if (!code && (size - 1) % a.group_size != 0) {
        if (rank == 0)
            fprintf(stderr, "gmorph-search: %d worker ranks do not split into groups of %ld: run 1 + k * %ld ranks\n",
                    size - 1, a.group_size, a.group_size);
        code = GM_EXIT_USAGE;
    }
    if (code) {
        return finalize(code == GM_EXIT_OK + 100 ? GM_EXIT_OK : code);
    }
    gm_search_config cfg;
    gm_ckpt ck = {0};
    gm_error err = {0};
    gm_status st = GM_OK;
    if (rank == 0) st = resolve_config(&a, &cfg, &ck, &err);
    if (rank == 0 && st != GM_OK) gm_cli_fail(CMD, NULL, &err);
    if (!share_config(&cfg, st == GM_OK, rank, &err)) {
        if (rank != 0 && err.msg[0]) fprintf(stderr, "gmorph-search: rank %d: %s\n", rank, err.msg);
        gm_ckpt_free(&ck);
        return finalize(st != GM_OK ? gm_cli_exit_code(st) : GM_EXIT_FAIL);
    }
    if (rank != 0) {
        /* Workers leave shutdown to the coordinator, which checkpoints first. */
        sa.sa_handler = SIG_IGN;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGUSR1, &sa, NULL);
    }
    code = rank == 0 ? coordinator_main(&cfg, &a, a.resume || a.resuming ? &ck : NULL, size, local_rank)
                     : worker_main(&cfg, rank, (int)a.group_size, local_rank);
    gm_ckpt_free(&ck);
    if (a.lock_fd >= 0) close(a.lock_fd); /* after every result is written */
    return finalize(code);
}

/*
 * gmorph-search: the fusion search (single process; the MPI distribution comes
 * next). Reads a search config, runs the policy, writes the run folder.
 */
#define _POSIX_C_SOURCE 200809L
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_cli.h"
#include "gm_search.h"

#define CMD "search"

static volatile sig_atomic_t stop_requested; /* set by SIGINT/SIGTERM: only a global reaches a handler */

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gmorph-search --config SEARCH.json [options]\n"
            "Fuses single-task models into one multi-task model: the fastest fused graph whose every\n"
            "task stays within the accuracy-drop threshold (GMorph's search; coordinator/README.md\n"
            "documents the config). Writes candidates.csv, candidates.jsonl, best.h5 and summary.md.\n\n"
            "  --config FILE     search config (JSON)\n"
            "  --out DIR         run folder (overrides the config's \"out\")\n"
            "  --threshold X     allowed accuracy drop per task, e.g. 0.01 (overrides)\n"
            "  --iterations N    candidates to propose (overrides)\n"
            "  --policy NAME     sa or random (overrides)\n"
            "  --time-budget S   stop proposing after S seconds (overrides)\n"
            "  --seed N          (overrides)\n"
            "  --threads N       CPU threads (overrides)\n"
            "  --quiet           no line per candidate\n"
            "  -h, --help        this text\n\n"
            "Ctrl-C or SIGTERM stops after the candidate in hand and still writes the results so far.\n");
}

static void show(void *ctx, const gm_search_event *e)
{
    (void)ctx;
    char src[32];
    if (e->source < 0) snprintf(src, sizeof src, "original");
    else snprintf(src, sizeof src, "elite %d", e->source);
    if (!isnan(e->latency_ms))
        fprintf(stderr, "[%4d] it %4d from %-9s %3d nodes %8.3f ms %5.2fx  %-8s after %2d epochs, worst drop %+6.2f  "
                        "(best %.2fx)\n", e->id, e->iteration, src, e->nodes, e->latency_ms, e->speedup, e->status,
                e->epochs, 100.0 * e->worst_drop, e->best_speedup);
    else
        fprintf(stderr, "[%4d] it %4d from %-9s %3d nodes  %s\n", e->id, e->iteration, src, e->nodes, e->status);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'},    {"out", required_argument, 0, 'o'},
        {"threshold", required_argument, 0, 'T'}, {"iterations", required_argument, 0, 'i'},
        {"policy", required_argument, 0, 'p'},    {"time-budget", required_argument, 0, 'b'},
        {"seed", required_argument, 0, 's'},      {"threads", required_argument, 0, 't'},
        {"quiet", no_argument, 0, 'q'},           {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *config = NULL, *out = NULL, *policy = NULL;
    double threshold = -1, budget = -1;
    long iterations = 0, seed = -1, threads = 0;
    int quiet = 0, c, bad = 0;
    while (!bad && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 'o': out = optarg; break;
        case 'T': bad = gm_cli_float(CMD, "--threshold", optarg, 0.0, 1.0, &threshold); break;
        case 'i': bad = gm_cli_int(CMD, "--iterations", optarg, 1, 1000000, &iterations); break;
        case 'p': policy = optarg; break;
        case 'b': bad = gm_cli_float(CMD, "--time-budget", optarg, 0.0, 1e9, &budget); break;
        case 's': bad = gm_cli_int(CMD, "--seed", optarg, 0, 2147483647, &seed); break;
        case 't': bad = gm_cli_int(CMD, "--threads", optarg, 1, 1024, &threads); break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return GM_EXIT_OK;
        default: bad = 1;
        }
    }
    if (!bad && (optind < argc || !config)) {
        fprintf(stderr, "gmorph-search: %s\n", config ? "unexpected argument" : "--config is required");
        bad = 1;
    }
    if (bad) {
        fprintf(stderr, "Try 'gmorph-search --help'.\n");
        return GM_EXIT_USAGE;
    }
    gm_search_config cfg;
    gm_error err;
    gm_search_defaults(&cfg);
    if (gm_search_config_load(&cfg, config, &err) != GM_OK) return gm_cli_fail(CMD, NULL, &err);
    if (out) snprintf(cfg.out, sizeof cfg.out, "%s", out);
    if (threshold >= 0) cfg.threshold = threshold;
    if (iterations) cfg.iterations = (int)iterations;
    if (budget >= 0) cfg.time_budget_s = budget;
    if (seed >= 0) cfg.seed = (uint64_t)seed;
    if (threads) cfg.threads = (int)threads;
    if (policy && !strcmp(policy, "sa")) cfg.policy = GM_POLICY_SA;
    else if (policy && !strcmp(policy, "random")) cfg.policy = GM_POLICY_RANDOM;
    else if (policy) {
        fprintf(stderr, "gmorph-search: --policy must be sa or random, got \"%s\"\n", policy);
        return GM_EXIT_USAGE;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    fprintf(stderr, "gmorph-search: %d models, threshold %.3f, policy %s, %d iterations, %d threads -> %s/\n",
            cfg.nmodels, cfg.threshold, cfg.policy == GM_POLICY_SA ? "sa" : "random", cfg.iterations, cfg.threads,
            cfg.out);
    gm_search_summary s;
    if (gm_search_run(&cfg, quiet ? NULL : show, NULL, &stop_requested, &s, &err) != GM_OK)
        return gm_cli_fail(CMD, NULL, &err);
    printf("originals one after the other %.3f ms; ", s.base_latency_ms);
    if (s.best_id >= 0)
        printf("best fused %.3f ms against %.3f ms for the originals timed with it: %.2fx faster (candidate %d)\n",
               s.best_latency_ms, s.best_base_ms, s.speedup, s.best_id);
    else printf("no candidate passed\n");
    for (int t = 0; t < s.ntasks; t++) {
        if (s.best_id >= 0)
            printf("  %-12s val %6.2f%% -> %6.2f%%   test %6.2f%% -> %6.2f%%\n", s.task[t], 100 * s.orig_val[t],
                   100 * s.best_val[t], 100 * s.orig_test[t], 100 * s.best_test[t]);
        else
            printf("  %-12s val %6.2f%%   test %6.2f%% (originals)\n", s.task[t], 100 * s.orig_val[t],
                   100 * s.orig_test[t]);
    }
    printf("%d candidates: %d passed, %d failed, %d aborted, %d filtered, %d duplicates; %ld fine-tune epochs; "
           "%.0f s%s; results in %s/\n", s.candidates, s.passed, s.failed, s.aborted, s.filtered, s.duplicates,
           s.ft_epochs, s.wall_s, s.interrupted ? " (stopped early)" : "", cfg.out);
    return GM_EXIT_OK;
}

/*
 * The coordinator's own cost per candidate (issue 5's benchmark): propose
 * (policy, mutations, hashes, dominance filter, the job with its source
 * elite's weights), dispatch (the job as wire bytes), record, and checkpoint,
 * over a sweep of N candidates whose fine-tunes are replaced by synthetic
 * results (30% pass). The tuned weights a passing worker would send back are
 * assembled outside the timed region. Prints mean milliseconds per candidate
 * for each phase, over the last 10% of the sweep too (the table is largest
 * there), and the total as a fraction of a candidate's fine-tune time given
 * on the command line (measured by a real search).
 *
 * usage: bench_coordinator MODEL.h5 MODEL.h5 [...] --n N --finetune-s S [--checkpoint-every K] [--out DIR]
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_clock.h"
#include "gm_rng.h"
#include "gm_search.h"
#include "gm_wire.h"

enum { PROPOSE, DISPATCH, RECORD, CHECKPOINT, NPHASE };
static const char *const phase_name[NPHASE] = {"propose", "dispatch", "record", "checkpoint"};

static void die(const gm_error *err)
{
    fprintf(stderr, "bench_coordinator: %s\n", err->msg);
    exit(1);
}

int main(int argc, char **argv)
{
    gm_search_config c;
    gm_search_defaults(&c);
    double ft_s = 60.0;
    int n = 1000;
    snprintf(c.out, sizeof c.out, "/tmp/gmorph-bench-coordinator");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--n") && i + 1 < argc) n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--finetune-s") && i + 1 < argc) ft_s = atof(argv[++i]);
        else if (!strcmp(argv[i], "--checkpoint-every") && i + 1 < argc) c.checkpoint_every = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) snprintf(c.out, sizeof c.out, "%s", argv[++i]);
        else if (c.nmodels < GM_MF_MAX_TASKS) snprintf(c.models[c.nmodels++], sizeof c.models[0], "%s", argv[i]);
    }
    if (c.nmodels < 2 || n < 1) {
        fprintf(stderr, "usage: bench_coordinator MODEL.h5 MODEL.h5 [...] --n N --finetune-s S "
                        "[--checkpoint-every K] [--out DIR]\n");
        return 2;
    }
    c.iterations = n;
    gm_error err;
    gm_mfile models[GM_MF_MAX_TASKS];
    const gm_mfile *mp[GM_MF_MAX_TASKS];
    double orig_val[GM_MF_MAX_TASKS];
    for (int t = 0; t < c.nmodels; t++) {
        if (gm_mfile_load(c.models[t], &models[t], &err) != GM_OK) die(&err);
        mp[t] = &models[t];
        orig_val[t] = 0.9;
    }
    gm_search *S;
    gm_search_opts so = {.config = &c, .models = mp, .orig_val = orig_val, .base_latency_ms = 1.0};
    if (gm_search_open(&S, &so, &err) != GM_OK) die(&err);
    gm_rng rng;
    gm_rng_seed(&rng, 7);
    double total[NPHASE] = {0}, tail[NPHASE] = {0};
    int done = 0, ntail = 0;
    gm_job *job = calloc(1, sizeof *job);
    gm_fgraph *g = malloc(sizeof *g);
    for (;;) {
        double t0 = gm_now_s(), dt[NPHASE] = {0};
        int got;
        if (gm_search_propose(S, job, &got, &err) != GM_OK) die(&err);
        dt[PROPOSE] = gm_now_s() - t0;
        if (!got) break;
        t0 = gm_now_s();
        void *bytes = NULL;
        size_t len = 0;
        if (job->source >= 0 && gm_mfile_to_bytes(&job->src, &bytes, &len, &err) != GM_OK) die(&err);
        free(bytes);
        dt[DISPATCH] = gm_now_s() - t0;
        /* The worker's side, untimed: a synthetic verdict and, for a pass, the assembled weights. */
        gm_result r = {.id = job->id, .latency_ms = 0.5, .base_latency_ms = 1.0};
        const int pass = gm_rng_uniform(&rng) < 0.3f;
        r.ft.status = pass ? GM_FT_PASSED : GM_FT_FAILED;
        r.ft.epochs = 3;
        r.ft.worst_drop = pass ? 0.0 : 0.1;
        for (int t = 0; t < c.nmodels; t++) r.ft.val[t] = orig_val[t] - r.ft.worst_drop;
        if (pass) {
            const gm_mfile *src = &job->src;
            gm_wstore store = {c.nmodels, mp, job->source >= 0, &job->source, &src};
            if (gm_fgraph_decode(g, job->enc, job->enc_len, mp, c.nmodels, &err) != GM_OK ||
                gm_fgraph_to_mfile(g, &store, 1, &r.tuned, &err) != GM_OK)
                die(&err);
        }
        const int in_tail = job->id >= n - n / 10;
        gm_job_free(job);
        t0 = gm_now_s();
        if (gm_search_record(S, &r, 0, NULL, &err) != GM_OK) die(&err);
        dt[RECORD] = gm_now_s() - t0;
        gm_result_free(&r);
        done++;
        t0 = gm_now_s();
        if (c.checkpoint_every > 0 && done % c.checkpoint_every == 0 && gm_search_checkpoint(S, &err) != GM_OK) die(&err);
        dt[CHECKPOINT] = gm_now_s() - t0;
        for (int p = 0; p < NPHASE; p++) total[p] += dt[p];
        if (in_tail) {
            for (int p = 0; p < NPHASE; p++) tail[p] += dt[p];
            ntail++;
        }
    }
    double sum = 0, sum_tail = 0;
    printf("coordinator cost per fine-tuned candidate, %d fine-tuned of %d proposed, checkpoint every %d:\n", done, n,
           c.checkpoint_every);
    for (int p = 0; p < NPHASE; p++) {
        printf("  %-10s %9.3f ms mean   %9.3f ms over the last 10%%\n", phase_name[p], 1e3 * total[p] / done,
               ntail ? 1e3 * tail[p] / ntail : NAN);
        sum += total[p] / done;
        sum_tail += ntail ? tail[p] / ntail : 0;
    }
    printf("  %-10s %9.3f ms mean   %9.3f ms over the last 10%%\n", "total", 1e3 * sum, 1e3 * sum_tail);
    printf("against a %.1f s fine-tune: %.4f%% (mean), %.4f%% (last 10%%)\n", ft_s, 100 * sum / ft_s,
           100 * sum_tail / ft_s);
    double all = 0;
    for (int p = 0; p < NPHASE; p++) all += total[p];
    printf("per proposal (fine-tuned, filtered or duplicate): %.3f ms; with G groups each finishing a candidate every "
           "%.1f s the coordinator is busy G x %.4f%% of the time\n", 1e3 * all / n, ft_s, 100 * sum / ft_s);
    free(job);
    free(g);
    gm_search_free(S);
    for (int t = 0; t < c.nmodels; t++) gm_mfile_free(&models[t]);
    return 0;
}

#include "gm_results.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_fs.h"

struct gm_results {
    int ntasks;
    char task[GM_MF_MAX_TASKS][64];
    FILE *csv, *jsonl;
};

static FILE *open_out(const char *out, const char *name, gm_error *err)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", out, name);
    FILE *f = fopen(p, "w");
    if (!f) gm_error_set(err, GM_EIO, "%s: cannot write: %s", p, strerror(errno));
    return f;
}

gm_status gm_results_open(gm_results **out_r, const char *out, const char (*task)[64], int ntasks, gm_error *err)
{
    *out_r = NULL;
    if (gm_fs_mkdirs(out) != 0) return gm_error_set(err, GM_EIO, "%s: cannot create: %s", out, strerror(errno));
    gm_results *R = calloc(1, sizeof *R);
    if (!R) return gm_error_set(err, GM_ENOMEM, "out of memory");
    R->ntasks = ntasks;
    memcpy(R->task, task, sizeof R->task[0] * (size_t)ntasks);
    R->csv = open_out(out, "candidates.csv", err);
    R->jsonl = R->csv ? open_out(out, "candidates.jsonl", err) : NULL;
    if (!R->csv || !R->jsonl) {
        gm_results_close(R);
        return GM_EIO;
    }
    fprintf(R->csv, "id,iteration,source,status,worker,location,topology,nodes,params,mflops,latency_ms,"
                    "base_latency_ms,speedup,epochs,worst_drop,seconds,finished_s,drop0,predicted");
    for (int t = 0; t < ntasks; t++) fprintf(R->csv, ",val_%s", R->task[t]);
    fputc('\n', R->csv);
    *out_r = R;
    return GM_OK;
}

void gm_results_close(gm_results *R)
{
    if (!R) return;
    if (R->csv) fclose(R->csv);
    if (R->jsonl) fclose(R->jsonl);
    free(R);
}

/* "curve": [{"epoch": e, "loss": l or null, "val": {task: acc, ...}}, ...], as the checkpoint holds it. */
static void write_curve(FILE *f, const gm_ckpt_cand *r, int n, char (*task)[64])
{
    fprintf(f, "\"curve\": [");
    for (int i = 0; i < r->ncurve; i++) {
        const double *p = r->curve + (size_t)i * GM_CKPT_CURVE_COLS(n);
        fprintf(f, "%s{\"epoch\": %d, \"loss\": ", i ? ", " : "", (int)p[0]);
        if (isfinite(p[1])) fprintf(f, "%.6g", p[1]);
        else fprintf(f, "null");
        fprintf(f, ", \"val\": {");
        for (int t = 0; t < n; t++) fprintf(f, "%s\"%s\": %.5f", t ? ", " : "", task[t], p[2 + t]);
        fprintf(f, "}}");
    }
    fprintf(f, "], ");
}

void gm_results_row(gm_results *R, const gm_ckpt_cand *r)
{
    const int n = R->ntasks, tuned = r->status == GM_CAND_PASSED || r->status == GM_CAND_FAILED ||
                                     r->status == GM_CAND_ABORTED;
    const char *st = gm_cand_status_name(r->status);
    fprintf(R->csv, "%d,%d,%d,%s,%d,%016llx,%016llx,%d,%lld,%.3f,%.4f,%.4f,%.3f,%d,%.5f,%.2f,%.2f,%.5f,%.5f", r->id,
            r->iteration, r->source, st, r->worker, (unsigned long long)r->location, (unsigned long long)r->topology,
            r->nodes, r->params, r->mflops, r->latency_ms, r->base_latency_ms, r->speedup, r->epochs, r->worst_drop,
            r->seconds, r->finished_s, r->drop0, r->predicted);
    for (int t = 0; t < n; t++) fprintf(R->csv, ",%.5f", r->val[t]);
    fputc('\n', R->csv);
    fprintf(R->jsonl, "{\"id\": %d, \"iteration\": %d, \"source\": %d, \"status\": \"%s\", \"worker\": %d, "
                      "\"location\": \"%016llx\", \"topology\": \"%016llx\", \"nodes\": %d, \"params\": %lld, "
                      "\"mflops\": %.3f, ",
            r->id, r->iteration, r->source, st, r->worker, (unsigned long long)r->location,
            (unsigned long long)r->topology, r->nodes, r->params, r->mflops);
    if (tuned && !isnan(r->worst_drop)) {
        fprintf(R->jsonl, "\"latency_ms\": %.4f, \"base_latency_ms\": %.4f, \"speedup\": %.3f, \"epochs\": %d, "
                          "\"worst_drop\": %.5f, \"val\": {",
                r->latency_ms, r->base_latency_ms, r->speedup, r->epochs, r->worst_drop);
        for (int t = 0; t < n; t++) fprintf(R->jsonl, "%s\"%s\": %.5f", t ? ", " : "", R->task[t], r->val[t]);
        fprintf(R->jsonl, "}, ");
        if (!isnan(r->drop0)) fprintf(R->jsonl, "\"drop0\": %.5f, ", r->drop0);
    }
    if (r->ncurve > 0) write_curve(R->jsonl, r, n, R->task);
    if (!isnan(r->predicted)) fprintf(R->jsonl, "\"predicted\": %.5f, ", r->predicted);
    fprintf(R->jsonl, "\"seconds\": %.2f, \"finished_s\": %.2f}\n", r->seconds, r->finished_s);
    fflush(R->csv);
    fflush(R->jsonl);
}

gm_status gm_results_summary(const char *out, const gm_search_config *c, const gm_search_summary *s, gm_error *err)
{
    FILE *f = open_out(out, "summary.md", err);
    if (!f) return GM_EIO;
    fprintf(f, "# gmorph search\n\npolicy %s, threshold %.3f, %d iterations, seed %llu%s\n\n",
            c->policy == GM_POLICY_SA ? "sa" : "random", c->threshold, c->iterations, (unsigned long long)c->seed,
            c->deterministic ? ", deterministic (best = fewest FLOPs)" : "");
    if (s->best_id >= 0)
        fprintf(f, "- originals one after the other: %.3f ms at the start; best fused: speed-up %.2fx (candidate %d) "
                   "when the search timed it; timed again at the end, alternately with the originals (the best and "
                   "the elites, the fastest kept): %.3f ms against %.3f ms, **%.2fx**\n",
                s->base_latency_ms, s->found_speedup, s->best_id, s->best_latency_ms, s->best_base_ms, s->speedup);
    else
        fprintf(f, "- originals one after the other: %.3f ms at the start; **no candidate passed**: no fused model, "
                   "the originals stay as they are\n", s->base_latency_ms);
    fprintf(f, "- candidates %d: passed %d, failed %d, aborted %d, filtered %d, duplicates %d; %ld fine-tune epochs; "
               "%.0f s wall%s\n\n", s->candidates, s->passed, s->failed, s->aborted, s->filtered, s->duplicates,
            s->ft_epochs, s->wall_s, s->interrupted ? " (stopped early)" : "");
    fprintf(f, "| task | original val %% | fused val %% | original test %% | fused test %% | test drop (points) |\n"
               "|---|---|---|---|---|---|\n");
    for (int t = 0; t < s->ntasks; t++) {
        if (s->best_id >= 0)
            fprintf(f, "| %s | %.2f | %.2f | %.2f | %.2f | %.2f |\n", s->task[t], 100 * s->orig_val[t],
                    100 * s->best_val[t], 100 * s->orig_test[t], 100 * s->best_test[t],
                    100 * (s->orig_test[t] - s->best_test[t]));
        else
            fprintf(f, "| %s | %.2f | none | %.2f | none | none |\n", s->task[t], 100 * s->orig_val[t],
                    100 * s->orig_test[t]);
    }
    if (s->npareto > 0)
        fprintf(f, "\nThe Pareto set (no other passed candidate both faster and less far down): %d models in "
                   "`pareto/`, listed in `pareto/pareto.md`.\n", s->npareto);
    if (fclose(f) != 0) return gm_error_set(err, GM_EIO, "%s/summary.md: writing failed: %s", out, strerror(errno));
    return GM_OK;
}

gm_status gm_results_pareto(const char *out, const gm_search_summary *s, const gm_pareto_row *rows, int n,
                            gm_error *err)
{
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/pareto", out);
    FILE *f = open_out(dir, "pareto.md", err);
    if (!f) return GM_EIO;
    fprintf(f, "# The Pareto set\n\nEvery passed candidate that no other passed one beats on both speed-up and "
               "worst validation drop, fastest first; each file is a fused model (`gmorph eval FILE` scores it). "
               "Speed-ups timed again at the end, each member alternately with the originals (the sweep's own "
               "measurements, from busier moments, chose the set; a member beaten once timed again left it).\n\n| file | candidate | speed-up | MFLOPs | worst val drop (points) |");
    for (int t = 0; t < s->ntasks; t++) fprintf(f, " %s test %% |", s->task[t]);
    fprintf(f, " worst test drop (points) |\n|---|---|---|---|---|");
    for (int t = 0; t < s->ntasks; t++) fprintf(f, "---|");
    fprintf(f, "---|\n");
    for (int i = 0; i < n; i++) {
        const gm_pareto_row *r = &rows[i];
        double worst = -INFINITY;
        fprintf(f, "| %s | %d | %.2fx | %.1f | %.2f |", r->file, r->id, r->speedup, r->mflops, 100 * r->worst_drop);
        for (int t = 0; t < s->ntasks; t++) {
            fprintf(f, " %.2f |", 100 * r->test[t]);
            worst = fmax(worst, s->orig_test[t] - r->test[t]);
        }
        fprintf(f, " %.2f |\n", 100 * worst);
    }
    if (fclose(f) != 0) return gm_error_set(err, GM_EIO, "%s/pareto.md: writing failed: %s", dir, strerror(errno));
    return GM_OK;
}

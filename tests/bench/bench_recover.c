/*
 * bench_recover: how far does one chosen fusion recover with a given budget?
 * The search proposes merges at random and gives each a short fine-tune; this
 * asks the question a target depends on: if the search proposed the deep
 * trunk first, would the worker bring it within the threshold, and after how
 * many sample passes?
 *
 * The candidate: every task reads model TRUNK's first DEPTH blocks (block
 * DEPTH of every other model reads TRUNK's block DEPTH-1; DEPTH 0 is the
 * original graph; TRUNK defaults to 0),
 * built, stitched and fine-tuned exactly as a worker does with the config's
 * stitch and finetune keys, without the learning-curve abort. Prints the
 * candidate's FLOPs against the originals', then its learning curve: epoch,
 * sample passes, loss, every task's validation accuracy and the worst drop.
 *
 * usage: bench_recover CONFIG.json DEPTH [TRUNK]   (the models must share block shapes up to DEPTH)
 */
#include <stdio.h>
#include <stdlib.h>

#include "gm_fgraph.h"
#include "gm_search_config.h"
#include "gm_trunk.h"
#include "gm_worker.h"

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: bench_recover CONFIG.json DEPTH [TRUNK]\n");
        return 2;
    }
    const int depth = atoi(argv[2]), trunk = argc > 3 ? atoi(argv[3]) : 0;
    gm_search_config c;
    gm_error err;
    gm_search_defaults(&c);
    if (gm_search_config_load(&c, argv[1], &err) != GM_OK || depth < 0 || trunk < 0 || trunk >= c.nmodels) {
        fprintf(stderr, "bench_recover: %s\n", depth < 0 ? "DEPTH must be 0 or more"
                                               : trunk < 0 || trunk >= c.nmodels ? "TRUNK must be one of the models"
                                                                                 : err.msg);
        return 2;
    }
    gm_worker_opts wo = {.config = &c, .time_latency = 1};
    gm_worker *w = NULL;
    gm_fgraph *orig = malloc(sizeof *orig), *g = malloc(sizeof *g);
    gm_job *job = calloc(1, sizeof *job);
    gm_status st = orig && g && job ? gm_worker_open(&w, &wo, &err) : gm_error_set(&err, GM_ENOMEM, "out of memory");
    if (st == GM_OK) st = gm_fgraph_from_models(orig, gm_worker_models(w), c.nmodels, &err);
    if (st == GM_OK) {
        *g = *orig;
        if (depth > 0) st = gm_trunk_apply(g, (gm_trunk){.model = trunk, .depth = depth}, &err);
    }
    if (st == GM_OK && c.stitch && c.stitch_shortcuts && !c.gmorph_mode) gm_fgraph_project_seams(g);
    gm_result r;
    if (st == GM_OK) {
        printf("trunk of model %d, depth %d: %d nodes, %.1f MFLOP against the originals' %.1f (%.2fx fewer)\n", trunk, depth, g->nnodes,
               (double)gm_fgraph_flops(g) / 1e6, (double)gm_fgraph_flops(orig) / 1e6,
               (double)gm_fgraph_flops(orig) / (double)gm_fgraph_flops(g));
        fflush(stdout);
        *job = (gm_job){.id = depth, .source = -1};
        job->enc_len = gm_fgraph_encode(g, job->enc, GM_JOB_ENC_MAX);
        st = gm_worker_run(w, job, &r, &err);
    }
    if (st == GM_OK) {
        const gm_ft_data *d = gm_worker_data(w);
        printf("epoch  sample passes   loss ");
        for (int t = 0; t < d->n; t++) printf(" %10.10s", d->task_name[t]);
        printf("  worst drop (points)\n");
        for (int i = 0; i < r.ft.nchecks; i++) {
            const gm_ft_check *k = &r.ft.checks[i];
            double worst = -1;
            /* steps are the same every epoch (the pool's share, or the whole pool) */
            const long per_epoch = r.ft.epochs > 0 ? r.ft.steps / r.ft.epochs : 0;
            printf("%5d %14ld %7.4f", k->epoch, (long)k->epoch * per_epoch * c.batch, k->loss);
            for (int t = 0; t < d->n; t++) {
                printf(" %9.2f%%", 100 * k->val[t]);
                worst = d->orig_val[t] - k->val[t] > worst ? d->orig_val[t] - k->val[t] : worst;
            }
            printf("  %6.2f\n", 100 * worst);
        }
        printf("%s after %d epochs, %.0f s; batch-1 latency %.3f ms against the originals' %.3f ms (%.2fx)\n",
               gm_ft_status_name(r.ft.status), r.ft.epochs, r.ft.seconds, r.latency_ms, r.base_latency_ms,
               r.base_latency_ms / r.latency_ms);
        gm_result_free(&r);
    } else {
        fprintf(stderr, "bench_recover: %s\n", err.msg);
    }
    free(g);
    free(orig);
    free(job);
    gm_worker_free(w);
    return st == GM_OK ? 0 : 1;
}

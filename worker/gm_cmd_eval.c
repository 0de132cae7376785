/*
 * gmorph eval: accuracy of every task of a model file (single-task or fused) on a
 * dataset split, and its batch-1 latency (warm-up, then the median of many runs).
 */
#define _POSIX_C_SOURCE 200809L
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_cli.h"
#include "gm_device.h"
#include "gm_mfile.h"
#include "gm_train.h"

#define CMD "eval"

typedef struct {
    const char *model, *data, *split, *device;
    int threads, batch, warmup, runs, no_latency;
    long limit;
} eval_args;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gmorph eval MODEL.h5 [options]\n"
            "Scores every task of a model file on a dataset split and measures batch-1 latency.\n\n"
            "  --data FILE     dataset file (default: each task's own, recorded in the model)\n"
            "  --split NAME    train, val or test (default test)\n"
            "  --limit N       score only the first N samples\n"
            "  --batch N       evaluation batch (default 256)\n"
            "  --threads N     CPU threads (default: all cores)\n"
            "  --device D      cpu, cuda or cuda-tf32 (default cpu); cuda: the GPU picked by the rank's index on its\n"
            "                  node (OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID; else GPU 0), latency timed\n"
            "                  with CUDA events. Exit code 2 where this build or machine has no GPU\n"
            "  --warmup N      latency warm-up runs (default 20)\n"
            "  --runs N        timed latency runs; the median is reported (default 200)\n"
            "  --no-latency    skip the latency measurement\n"
            "  -h, --help      this text\n");
}

static int parse(int argc, char **argv, eval_args *a)
{
    static const struct option opts[] = {
        {"data", required_argument, 0, 'd'},  {"split", required_argument, 0, 'S'},
        {"limit", required_argument, 0, 'n'}, {"batch", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"warmup", required_argument, 0, 'W'},
        {"runs", required_argument, 0, 'r'},  {"no-latency", no_argument, 0, 'L'},
        {"device", required_argument, 0, 'D'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    *a = (eval_args){.split = "test", .device = "cpu", .threads = gm_cli_cores(), .batch = 256, .warmup = 20,
                     .runs = 200};
    int c, bad = 0;
    long v;
    optind = 1;
    while (!bad && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': a->data = optarg; break;
        case 'S': a->split = optarg; break;
        case 'n': bad = gm_cli_int(CMD, "--limit", optarg, 1, 1L << 40, &a->limit); break;
        case 'b': bad = gm_cli_int(CMD, "--batch", optarg, 1, 65536, &v); a->batch = (int)v; break;
        case 't': bad = gm_cli_int(CMD, "--threads", optarg, 1, 1024, &v); a->threads = (int)v; break;
        case 'W': bad = gm_cli_int(CMD, "--warmup", optarg, 0, 100000, &v); a->warmup = (int)v; break;
        case 'r': bad = gm_cli_int(CMD, "--runs", optarg, 1, 1000000, &v); a->runs = (int)v; break;
        case 'L': a->no_latency = 1; break;
        case 'D': {
            gm_device_kind kind;
            gm_error err;
            a->device = optarg;
            if (gm_device_parse(optarg, &kind, NULL, &err) != GM_OK) {
                fprintf(stderr, "gmorph eval: --device: %s\n", err.msg);
                bad = 1;
            }
            break;
        }
        case 'h': usage(stdout); exit(GM_EXIT_OK);
        default: bad = 1;
        }
    }
    if (!bad && optind == argc - 1) a->model = argv[optind];
    else if (!bad) {
        fprintf(stderr, "gmorph eval: %s\n", optind == argc ? "which model file?" : "one model file at a time");
        bad = 1;
    }
    if (bad) fprintf(stderr, "Try 'gmorph eval --help'.\n");
    return bad ? -1 : 0;
}

/* Scores task k of the model on its dataset; prints one line. */
static gm_status eval_task(gm_net *net, const gm_mfile *m, int k, const eval_args *a, gm_split split,
                           int *skipped, gm_error *err)
{
    const gm_mf_task *t = &m->tasks[k];
    const char *path = a->data ? a->data : t->dataset;
    *skipped = 0;
    if (!path[0]) {
        *skipped = 1;
        printf("  %-12s no dataset recorded: give --data\n", t->name);
        return GM_OK;
    }
    gm_dataset *ds;
    gm_status st = gm_ds_open(&ds, path, err);
    if (st != GM_OK) return st;
    const gm_ds_info *info = gm_ds_get_info(ds);
    int dt = gm_ds_task_index(ds, t->name), out = -1;
    for (int o = 0; o < gm_net_noutputs(net); o++)
        if (gm_net_output_block(net, o) == t->head) out = o;
    if (dt < 0) {
        *skipped = 1;
        printf("  %-12s not a task of %s: skipped\n", t->name, path);
    } else if (info->shape.c != m->input.c || info->shape.h != m->input.h || info->shape.w != m->input.w) {
        st = gm_error_set(err, GM_ESHAPE, "%s holds %dx%dx%d inputs but the model reads %dx%dx%d", path,
                          info->shape.c, info->shape.h, info->shape.w, m->input.c, m->input.h, m->input.w);
    } else if (out < 0) {
        st = gm_error_set(err, GM_EFORMAT, "%s: task \"%s\" has no output block %d", a->model, t->name, t->head);
    } else {
        /* The model's own normalisation: it may come from another dataset of this shape. */
        gm_ds_set_normalisation(ds, m->mean, m->std);
        double acc;
        st = gm_eval_tasks(net, ds, split, 1, &out, &dt, a->batch, a->limit, &acc, err);
        if (st == GM_OK) {
            long n = a->limit > 0 && a->limit < info->n[split] ? a->limit : info->n[split];
            printf("  %-12s %s accuracy %6.2f%%  (%ld samples of %s)\n", t->name, gm_split_name(split),
                   100.0 * acc, n, path);
        }
    }
    gm_ds_close(ds);
    return st;
}

int gm_cmd_eval(int argc, char **argv)
{
    eval_args a;
    gm_split split;
    gm_error err;
    if (parse(argc, argv, &a)) return GM_EXIT_USAGE;
    if (gm_split_parse(a.split, &split, &err) != GM_OK) return gm_cli_fail(CMD, "--split", &err);
    gm_backend *be = NULL;
    char where[600];
    gm_status st = gm_device_open_named(&be, a.device, a.threads, where, sizeof where, &err);
    if (st != GM_OK) return gm_cli_fail(CMD, NULL, &err); /* names the device */
    gm_mfile m = {0};
    if (gm_mfile_load(a.model, &m, &err) != GM_OK) return gm_backend_free(be), gm_cli_fail(CMD, NULL, &err);
    gm_net *net = NULL;
    gm_net_desc desc = gm_mfile_desc(&m);
    int rc = GM_EXIT_OK, scored = 0;
    st = gm_net_create(&net, be, &desc, a.batch, 1, &err);
    if (st == GM_OK) st = gm_mfile_to_net(&m, net, &err);
    if (st == GM_OK) {
        printf("%s: %s, %d task%s, %zu parameters, %.1f MFLOP per image\n", a.model, m.arch, m.ntasks,
               m.ntasks == 1 ? "" : "s", gm_net_nparams(net), (double)gm_net_flops(net) / 1e6);
        for (int k = 0; st == GM_OK && k < m.ntasks; k++) {
            int skipped;
            st = eval_task(net, &m, k, &a, split, &skipped, &err);
            scored += !skipped;
        }
    }
    if (st == GM_OK && !a.no_latency) {
        double ms;
        st = gm_measure_latency(net, a.warmup, a.runs, &ms, &err);
        if (st == GM_OK)
            printf("batch-1 latency %.3f ms (median of %d runs after %d warm-up; %s)\n", ms, a.runs, a.warmup,
                   where);
    }
    if (st != GM_OK) rc = gm_cli_fail(CMD, NULL, &err);
    else if (scored == 0) {
        fprintf(stderr, "gmorph eval: no task of %s could be scored\n", a.model);
        rc = GM_EXIT_USAGE;
    }
    gm_net_free(net);
    gm_backend_free(be);
    gm_mfile_free(&m);
    return rc;
}

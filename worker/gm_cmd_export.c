/*
 * gmorph export: a model file (single-task or fused) as one ONNX graph
 * (gm_onnx_export), and optionally a reference file of seeded inputs with
 * gmorph's own outputs on them, so any ONNX runtime can be checked against gmorph
 * (tests/onnx_check.py does it with ONNX Runtime).
 *
 * Reference layout (HDF5): "input" float [N, C, H, W], standard normal (already
 * in the normalised space the network reads); "output/<name>" float [N, classes]
 * for each task, under its ONNX output name; root attributes model, seed, samples.
 */
#define _POSIX_C_SOURCE 200809L
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_cli.h"
#include "gm_h5.h"
#include "gm_mfile.h"
#include "gm_onnx.h"
#include "gm_rng.h"

#define CMD "export"

enum { REF_BATCH = 64 };

typedef struct {
    const char *model, *out, *reference;
    long samples, seed;
    int threads;
} export_args;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gmorph export MODEL.h5 OUT.onnx [options]\n"
            "Writes a model file, fused multi-task ones included, as one ONNX graph (opset %d):\n"
            "input \"input\" [N,C,H,W] (normalised as the model file says: metadata gmorph.mean\n"
            "and gmorph.std), one output [N,classes] per task, named after the task.\n\n"
            "  --reference IO.h5  also write seeded random inputs and gmorph's outputs on them\n"
            "                     (datasets input and output/<task>): what any ONNX runtime must\n"
            "                     reproduce (tests/onnx_check.py checks ONNX Runtime with it)\n"
            "  --samples N        inputs in the reference file (default 16)\n"
            "  --seed S           their seed (default 1)\n"
            "  --threads N        CPU threads for the reference outputs (default: all cores)\n"
            "  -h, --help         this text\n",
            GM_ONNX_OPSET);
}

static int parse(int argc, char **argv, export_args *a)
{
    static const struct option opts[] = {{"reference", required_argument, 0, 'r'},
                                         {"samples", required_argument, 0, 'n'},
                                         {"seed", required_argument, 0, 's'},
                                         {"threads", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    *a = (export_args){.samples = 16, .seed = 1, .threads = gm_cli_cores()};
    int c, bad = 0, given = 0;
    long v;
    optind = 1;
    while (!bad && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'r': a->reference = optarg; break;
        case 'n': bad = gm_cli_int(CMD, "--samples", optarg, 1, 1L << 20, &a->samples); given = 1; break;
        case 's': bad = gm_cli_int(CMD, "--seed", optarg, 0, 1L << 62, &a->seed); given = 1; break;
        case 't': bad = gm_cli_int(CMD, "--threads", optarg, 1, 1024, &v); a->threads = (int)v; break;
        case 'h': usage(stdout); exit(GM_EXIT_OK);
        default: bad = 1;
        }
    }
    if (!bad && argc - optind == 2) {
        a->model = argv[optind];
        a->out = argv[optind + 1];
    } else if (!bad) {
        fprintf(stderr, "gmorph export: %s\n", argc - optind < 2 ? "wants a model file and an output .onnx path"
                                                                 : "one model file and one output path");
        bad = 1;
    }
    if (!bad && given && !a->reference) {
        fprintf(stderr, "gmorph export: --samples and --seed need --reference\n");
        bad = 1;
    }
    if (bad) fprintf(stderr, "Try 'gmorph export --help'.\n");
    return bad ? -1 : 0;
}

/* ---- the reference file --------------------------------------------------------------- */

/* gmorph's logits of every task on x (n samples), into y[k] (n * classes of task k). */
static gm_status run_gmorph(const gm_mfile *m, const float *x, long n, int threads, float **y, gm_error *err)
{
    gm_backend *be = NULL;
    gm_net *net = NULL;
    gm_net_desc desc = gm_mfile_desc(m);
    int outs[GM_MF_MAX_TASKS];
    const size_t numel = gm_shape_numel(m->input);
    gm_status st = gm_backend_cpu_create(&be, threads, err);
    if (st == GM_OK) st = gm_net_create(&net, be, &desc, n < REF_BATCH ? (int)n : REF_BATCH, 1, err);
    if (st == GM_OK) st = gm_mfile_to_net(m, net, err);
    for (int k = 0; st == GM_OK && k < m->ntasks; k++) {
        outs[k] = -1;
        for (int o = 0; o < gm_net_noutputs(net); o++)
            if (gm_net_output_block(net, o) == m->tasks[k].head) outs[k] = o;
        if (outs[k] < 0) st = gm_error_set(err, GM_EFORMAT, "task %s: no net output at block %d", m->tasks[k].name,
                                           m->tasks[k].head);
    }
    for (long i = 0; st == GM_OK && i < n; i += REF_BATCH) {
        int b = (int)(n - i < REF_BATCH ? n - i : REF_BATCH);
        st = gm_net_forward(net, x + (size_t)i * numel, b, 0, err);
        for (int k = 0; st == GM_OK && k < m->ntasks; k++)
            be->to_host(be, y[k] + (size_t)i * m->tasks[k].classes, gm_net_output(net, outs[k]),
                        sizeof(float) * (size_t)b * (size_t)m->tasks[k].classes);
    }
    gm_net_free(net);
    gm_backend_free(be);
    return st;
}

static gm_status write_h5(const export_args *a, const gm_mfile *m, char names[][64], const float *x,
                          float *const *y, gm_error *err)
{
    hid_t f, g = -1;
    const hsize_t din[4] = {(hsize_t)a->samples, (hsize_t)m->input.c, (hsize_t)m->input.h, (hsize_t)m->input.w};
    gm_status st = gm_h5_create(&f, a->reference, err);
    if (st != GM_OK) return st;
    st = gm_h5_attr_write_str(f, "model", a->model, err);
    if (st == GM_OK) st = gm_h5_attr_write_int(f, "seed", a->seed, err);
    if (st == GM_OK) st = gm_h5_attr_write_int(f, "samples", a->samples, err);
    if (st == GM_OK) st = gm_h5_write(f, "input", H5T_NATIVE_FLOAT, 4, din, x, err);
    if (st == GM_OK) st = gm_h5_group_create(f, "output", &g, err);
    for (int k = 0; st == GM_OK && k < m->ntasks; k++) {
        const hsize_t d[2] = {(hsize_t)a->samples, (hsize_t)m->tasks[k].classes};
        st = gm_h5_write(g, names[k], H5T_NATIVE_FLOAT, 2, d, y[k], err);
    }
    if (g >= 0) H5Gclose(g);
    if (st != GM_OK) {
        gm_h5_discard(f, a->reference);
        return st;
    }
    return gm_h5_commit(f, a->reference, err);
}

/* Seeded standard-normal inputs, gmorph's outputs on them (CPU, eval mode), into a->reference. */
static gm_status write_reference(const export_args *a, const gm_mfile *m, char names[][64], gm_error *err)
{
    const size_t numel = gm_shape_numel(m->input), n = (size_t)a->samples;
    float *x = malloc(sizeof(float) * n * numel), *y[GM_MF_MAX_TASKS] = {0};
    gm_status st = x ? GM_OK : gm_error_set(err, GM_ENOMEM, "out of memory for %zu reference inputs", n);
    for (int k = 0; st == GM_OK && k < m->ntasks; k++)
        if (!(y[k] = malloc(sizeof(float) * n * (size_t)m->tasks[k].classes)))
            st = gm_error_set(err, GM_ENOMEM, "out of memory for %zu reference outputs", n);
    if (st == GM_OK) {
        gm_rng rng;
        gm_rng_seed(&rng, (uint64_t)a->seed);
        for (size_t i = 0; i < n * numel; i++) x[i] = gm_rng_normal(&rng);
        st = run_gmorph(m, x, a->samples, a->threads, y, err);
    }
    if (st == GM_OK) st = write_h5(a, m, names, x, y, err);
    free(x);
    for (int k = 0; k < m->ntasks; k++) free(y[k]);
    return st;
}

/* ---- the command ---------------------------------------------------------------------- */

static void print_summary(const export_args *a, const gm_onnx_export_info *info)
{
    printf("gmorph export: %s: %d nodes, %d initializers, %zu parameters (+%zu BatchNorm statistics), "
           "%d output%s (",
           a->out, info->nodes, info->initializers, info->params, info->buffers, info->noutputs,
           info->noutputs == 1 ? "" : "s");
    for (int k = 0; k < info->noutputs; k++) printf("%s%s", k ? ", " : "", info->outputs[k]);
    printf("), opset %d, %.1f kB\n", GM_ONNX_OPSET, (double)info->bytes / 1e3);
}

int gm_cmd_export(int argc, char **argv)
{
    export_args a;
    gm_error err;
    if (parse(argc, argv, &a)) return GM_EXIT_USAGE;
    gm_mfile m = {0};
    if (gm_mfile_load(a.model, &m, &err) != GM_OK) return gm_cli_fail(CMD, NULL, &err);
    gm_onnx_export_info info;
    int rc = GM_EXIT_OK;
    if (gm_onnx_export(&m, a.out, &info, &err) != GM_OK) {
        rc = gm_cli_fail(CMD, NULL, &err);
    } else {
        print_summary(&a, &info);
        if (a.reference && write_reference(&a, &m, info.outputs, &err) != GM_OK)
            rc = gm_cli_fail(CMD, "--reference", &err);
        else if (a.reference)
            printf("gmorph export: %s: %ld seeded inputs (seed %ld) and gmorph's outputs of %d task%s\n", a.reference,
                   a.samples, a.seed, m.ntasks, m.ntasks == 1 ? "" : "s");
    }
    gm_mfile_free(&m);
    return rc;
}

/*
 * gmorph import: an ONNX model exported from PyTorch (torch.onnx.export) into a
 * gmorph model file (gm_onnx_import), ready for gmorph eval and gmorph-search.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_backend.h"
#include "gm_cli.h"
#include "gm_dataset.h"
#include "gm_onnx.h"
#include "gm_train.h"

#define CMD "import"

typedef struct {
    const char *onnx, *out, *data;
    gm_onnx_import_opts opts;
} import_args;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gmorph import MODEL.onnx --out M.h5 [options]\n"
            "Reads a single-input, single-output image classifier exported with torch.onnx.export into a gmorph\n"
            "model file (one task), which gmorph eval scores and gmorph-search fuses with others.\n\n"
            "  --out FILE      the model file to write (required)\n"
            "  --task NAME     the task's name, as in the dataset (default: the graph output's name)\n"
            "  --mean a,b,c    the input normalisation the network was trained with, per channel: the ONNX\n"
            "  --std a,b,c     graph reads normalised images (default: the model's gmorph.mean / gmorph.std\n"
            "                  metadata, else mean 0 and std 1)\n"
            "  --data FILE     a dataset holding the task: the model file records it, and the model's\n"
            "                  validation and test accuracy on it (what the search's threshold is\n"
            "                  measured against; a low figure means the --mean/--std are not the\n"
            "                  network's)\n"
            "  -h, --help      this text\n\n"
            "Ops read (opsets 9 to 21): Conv, BatchNormalization, Relu, MaxPool, AveragePool, GlobalAveragePool,\n"
            "Gemm, MatMul+Add, Add (residual), Flatten, Reshape to (N,-1), Dropout and Identity (dropped), and the\n"
            "Constant/Shape/Gather/Unsqueeze/Concat/Pad nodes torch writes around them. Anything else is refused\n"
            "with the node's name.\n");
}

/* 1 to GM_MF_MAX_CHANNELS numbers separated by commas. */
static int parse_list(const char *opt, const char *s, float *v, int *n)
{
    const char *p = s;
    *n = 0;
    for (;;) {
        char *end;
        errno = 0;
        double d = strtod(p, &end);
        if (end == p || errno || !isfinite(d) || *n == GM_MF_MAX_CHANNELS || (*end && *end != ',')) break;
        v[(*n)++] = (float)d;
        if (*end == '\0') return 0;
        p = end + 1;
    }
    fprintf(stderr, "gmorph %s: %s wants 1 to %d numbers like 0.5,0.5,0.5, got \"%s\"\n", CMD, opt,
            GM_MF_MAX_CHANNELS, s);
    *n = 0;
    return -1;
}

static int parse(int argc, char **argv, import_args *a)
{
    static const struct option opts[] = {{"out", required_argument, 0, 'o'},  {"task", required_argument, 0, 'T'},
                                         {"mean", required_argument, 0, 'm'}, {"std", required_argument, 0, 's'},
                                         {"data", required_argument, 0, 'd'}, {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    int c, bad = 0;
    optind = 1;
    while (!bad && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': a->out = optarg; break;
        case 'T': a->opts.task = optarg; break;
        case 'd': a->data = optarg; break;
        case 'm': bad = parse_list("--mean", optarg, a->opts.mean, &a->opts.nmean); break;
        case 's': bad = parse_list("--std", optarg, a->opts.std, &a->opts.nstd); break;
        case 'h': usage(stdout); exit(GM_EXIT_OK);
        default: bad = 1;
        }
    }
    if (!bad && optind == argc - 1) a->onnx = argv[optind];
    else if (!bad) {
        fprintf(stderr, "gmorph %s: %s\n", CMD, optind == argc ? "which ONNX file?" : "one ONNX file at a time");
        bad = 1;
    }
    if (!bad && !a->out) {
        fprintf(stderr, "gmorph %s: --out is required\n", CMD);
        bad = 1;
    }
    if (bad) fprintf(stderr, "Try 'gmorph import --help'.\n");
    return bad ? -1 : 0;
}

/* "9 blocks (4 conv, 3 pool, 1 linear, 1 head)" */
static void block_summary(const gm_mfile *m, char *buf, size_t cap)
{
    int count[GM_BLOCK_CUSTOM + 1] = {0};
    for (int b = 0; b < m->nblocks; b++) count[m->blocks[b].kind]++;
    int len = snprintf(buf, cap, "%d block%s (", m->nblocks, m->nblocks == 1 ? "" : "s");
    for (int k = 0, first = 1; k <= GM_BLOCK_CUSTOM && len > 0 && (size_t)len < cap; k++) {
        if (!count[k]) continue;
        len += snprintf(buf + len, cap - (size_t)len, "%s%d %s", first ? "" : ", ", count[k],
                        gm_block_kind_name((gm_block_kind)k));
        first = 0;
    }
    if (len > 0 && (size_t)len < cap) snprintf(buf + len, cap - (size_t)len, ")");
}

/*
 * Scores the imported model on the dataset at path (validation and test splits,
 * those present) and records the dataset and both accuracies in its task.
 */
static gm_status score(gm_mfile *m, const char *path, gm_error *err)
{
    gm_mf_task *t = &m->tasks[0];
    gm_dataset *ds = NULL;
    if (strlen(path) >= sizeof t->dataset)
        return gm_error_set(err, GM_EINVAL, "--data: a path of %zu characters does not fit a model file's %zu",
                            strlen(path), sizeof t->dataset - 1);
    gm_status st = gm_ds_open(&ds, path, err);
    if (st != GM_OK) return st;
    const gm_ds_info *info = gm_ds_get_info(ds);
    const int dt = gm_ds_task_index(ds, t->name);
    if (dt < 0)
        st = gm_error_set(err, GM_EINVAL, "%s has no task \"%s\" (name the model's task with --task)", path,
                          t->name);
    else if (info->tasks[dt].classes != t->classes)
        st = gm_error_set(err, GM_ESHAPE, "%s: task \"%s\" has %d classes but the model outputs %d", path, t->name,
                          info->tasks[dt].classes, t->classes);
    else if (info->shape.c != m->input.c || info->shape.h != m->input.h || info->shape.w != m->input.w)
        st = gm_error_set(err, GM_ESHAPE, "%s holds %dx%dx%d inputs but the model reads %dx%dx%d", path,
                          info->shape.c, info->shape.h, info->shape.w, m->input.c, m->input.h, m->input.w);
    gm_backend *be = NULL;
    gm_net *net = NULL;
    gm_net_desc d = gm_mfile_desc(m);
    if (st == GM_OK) st = gm_backend_cpu_create(&be, gm_cli_cores(), err);
    if (st == GM_OK) st = gm_net_create(&net, be, &d, 256, 1, err);
    if (st == GM_OK) st = gm_mfile_to_net(m, net, err);
    gm_ds_set_normalisation(ds, m->mean, m->std);
    double *acc[2] = {&t->val_accuracy, &t->test_accuracy};
    const gm_split splits[2] = {GM_SPLIT_VAL, GM_SPLIT_TEST};
    for (int k = 0; st == GM_OK && k < 2; k++) {
        const int out = 0;
        if (info->n[splits[k]] > 0) st = gm_eval_tasks(net, ds, splits[k], 1, &out, &dt, 256, 0, acc[k], err);
    }
    if (st == GM_OK) snprintf(t->dataset, sizeof t->dataset, "%s", path);
    gm_net_free(net);
    gm_backend_free(be);
    gm_ds_close(ds);
    return st;
}

int gm_cmd_import(int argc, char **argv)
{
    import_args a;
    gm_error err;
    if (parse(argc, argv, &a)) return GM_EXIT_USAGE;
    gm_mfile m;
    if (gm_onnx_import(a.onnx, &a.opts, &m, &err) != GM_OK) return gm_cli_fail(CMD, NULL, &err);
    if ((a.data && score(&m, a.data, &err) != GM_OK) || gm_mfile_save(a.out, &m, &err) != GM_OK) {
        gm_mfile_free(&m);
        return gm_cli_fail(CMD, NULL, &err);
    }
    int nops = 0;
    for (int b = 0; b < m.nblocks; b++) nops += m.blocks[b].nops;
    char blocks[160];
    block_summary(&m, blocks, sizeof blocks);
    printf("gmorph import: %s -> %s: %d ops in %s, %zu parameters, input %dx%dx%d, task \"%s\" (%d classes)\n",
           a.onnx, a.out, nops, blocks, m.nparams, m.input.c, m.input.h, m.input.w, m.tasks[0].name,
           m.tasks[0].classes);
    if (a.data)
        printf("gmorph import: on %s: validation accuracy %.2f%%, test accuracy %.2f%% (recorded in %s)\n", a.data,
               100 * m.tasks[0].val_accuracy, 100 * m.tasks[0].test_accuracy, a.out);
    gm_mfile_free(&m);
    return GM_EXIT_OK;
}

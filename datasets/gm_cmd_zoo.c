/*
 * gmorph zoo: builds a benchmark's datasets and single-task models from a JSON
 * config (datasets/zoo/b1.json, b2.json), then writes a summary table.
 *
 * A zoo is a script of 'gmorph data' and 'gmorph train' runs: each step is the
 * same subcommand a user would type, so the zoo adds no second way of doing
 * anything. Steps whose output already exists are skipped, and an interrupted
 * training resumes from its checkpoint, so rerunning the command after a crash
 * or a pre-emption finishes the job.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gm_cli.h"
#include "gm_fs.h"
#include "gm_h5.h"
#include "gm_json.h"
#include "gm_mfile.h"
#include "gm_train.h"

#define CMD "zoo"

enum { MAX_ARGS = 64, MAX_MODELS = 16, MAX_DATASETS = 8, ARG_LEN = 128 };

typedef struct {
    const char *config, *out, *only;
    int threads, quiet, epochs;
    double scale;
} zoo_args;

/* An argv under construction (fixed storage, no allocation). */
typedef struct {
    int argc;
    char *argv[MAX_ARGS + 1];
    char store[MAX_ARGS][ARG_LEN];
} argv_buf;

static int push(argv_buf *b, const char *s)
{
    if (b->argc >= MAX_ARGS || strlen(s) >= ARG_LEN) return -1;
    snprintf(b->store[b->argc], ARG_LEN, "%s", s);
    b->argv[b->argc] = b->store[b->argc];
    b->argv[++b->argc] = NULL;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gmorph zoo CONFIG.json --out DIR [options]\n"
            "Builds a benchmark's task zoo: makes its datasets ('gmorph data'), trains its models\n"
            "('gmorph train') and writes DIR/zoo.md, a table of every model's accuracy and cost.\n"
            "Outputs that exist are kept; an interrupted training resumes. The shipped configs\n"
            "are datasets/zoo/b1.json, b2.json and b3.json.\n\n"
            "  --out DIR       where datasets and models go (created if missing)\n"
            "  --only LIST     build only these models (comma-separated names)\n"
            "  --scale X       multiply every dataset split size by X (0 < X <= 1; default 1)\n"
            "  --epochs N      train every model N epochs instead of its configured number\n"
            "                  (with --scale: a quick smoke build of the whole pipeline)\n"
            "  --threads N     CPU threads (default: all cores)\n"
            "  --quiet         no training progress\n"
            "  -h, --help      this text\n");
}

static int parse(int argc, char **argv, zoo_args *a)
{
    static const struct option opts[] = {
        {"out", required_argument, 0, 'O'},     {"only", required_argument, 0, 'o'},
        {"scale", required_argument, 0, 'S'},   {"threads", required_argument, 0, 't'},
        {"epochs", required_argument, 0, 'e'},
        {"quiet", no_argument, 0, 'q'},         {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    *a = (zoo_args){.threads = gm_cli_cores(), .scale = 1.0};
    int c, bad = 0;
    long v;
    optind = 1;
    while (!bad && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'O': a->out = optarg; break;
        case 'o': a->only = optarg; break;
        case 'S': bad = gm_cli_float(CMD, "--scale", optarg, 1e-6, 1.0, &a->scale); break;
        case 't': bad = gm_cli_int(CMD, "--threads", optarg, 1, 1024, &v); a->threads = (int)v; break;
        case 'e': bad = gm_cli_int(CMD, "--epochs", optarg, 1, 100000, &v); a->epochs = (int)v; break;
        case 'q': a->quiet = 1; break;
        case 'h': usage(stdout); exit(GM_EXIT_OK);
        default: bad = 1;
        }
    }
    if (!bad && optind == argc - 1) a->config = argv[optind];
    else if (!bad) {
        fprintf(stderr, "gmorph zoo: %s\n", optind == argc ? "which config file?" : "one config file at a time");
        bad = 1;
    }
    if (!bad && !a->out) {
        fprintf(stderr, "gmorph zoo: --out DIR is required\n");
        bad = 1;
    }
    if (bad) fprintf(stderr, "Try 'gmorph zoo --help'.\n");
    return bad ? -1 : 0;
}

/* What the config says about one model. */
typedef struct {
    char name[64], dataset[64], task[64], arch[32], optim[16], norm_from[64];
    long long widths[4];
    int nwidths;
    long long epochs, batch, seed;
    double lr, wd, min_test;
} zoo_model;

typedef struct {
    char name[64], maker[32];
    const gm_json *args;
} zoo_dataset;

static const char *const model_keys[] = {"name", "dataset", "task", "arch", "widths", "epochs", "batch",
                                         "optim", "lr", "weight_decay", "seed", "min_test_accuracy",
                                         "norm_from", NULL};

static gm_status read_model(const gm_json *j, zoo_model *m, gm_error *err)
{
    *m = (zoo_model){.epochs = 10, .batch = 64, .seed = 1, .lr = -1.0, .wd = -1.0, .min_test = 0.0};
    snprintf(m->optim, sizeof m->optim, "adam");
    gm_status st = gm_json_check_keys(j, model_keys, err);
    if (st == GM_OK) st = gm_json_get_string(j, "name", 1, m->name, sizeof m->name, err);
    if (st == GM_OK) st = gm_json_get_string(j, "dataset", 1, m->dataset, sizeof m->dataset, err);
    if (st == GM_OK) st = gm_json_get_string(j, "task", 1, m->task, sizeof m->task, err);
    if (st == GM_OK) st = gm_json_get_string(j, "arch", 1, m->arch, sizeof m->arch, err);
    if (st == GM_OK) st = gm_json_get_ints(j, "widths", 1, 1, 65536, m->widths, 4, &m->nwidths, err);
    if (st == GM_OK) st = gm_json_get_int(j, "epochs", 0, 1, 100000, &m->epochs, err);
    if (st == GM_OK) st = gm_json_get_int(j, "batch", 0, 2, 65536, &m->batch, err);
    if (st == GM_OK) st = gm_json_get_int(j, "seed", 0, 0, 2147483647, &m->seed, err);
    if (st == GM_OK) st = gm_json_get_string(j, "optim", 0, m->optim, sizeof m->optim, err);
    if (st == GM_OK) st = gm_json_get_double(j, "lr", 0, 1e-12, 100.0, &m->lr, err);
    if (st == GM_OK) st = gm_json_get_double(j, "weight_decay", 0, 0.0, 100.0, &m->wd, err);
    if (st == GM_OK) st = gm_json_get_double(j, "min_test_accuracy", 0, 0.0, 1.0, &m->min_test, err);
    if (st == GM_OK) st = gm_json_get_string(j, "norm_from", 0, m->norm_from, sizeof m->norm_from, err);
    return st;
}

static int selected(const char *only, const char *name)
{
    if (!only) return 1;
    size_t n = strlen(name);
    for (const char *p = only; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, name, n)) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

/* The split sizes a maker would use by default, scaled (for smoke builds). */
static int push_scaled_sizes(argv_buf *b, const char *maker, double scale)
{
    static const struct { const char *maker; long n[3]; } defaults[] = {
        {"multi-fashion", {60000, 10000, 10000}}, {"fashion", {50000, 10000, 10000}},
        {"sprites", {40000, 5000, 5000}}};
    static const char *const opt[3] = {"--train", "--val", "--test"};
    if (scale >= 1.0) return 0;
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) {
        if (strcmp(defaults[i].maker, maker)) continue;
        for (int s = 0; s < 3; s++) {
            char v[32];
            long n = (long)ceil((double)defaults[i].n[s] * scale);
            snprintf(v, sizeof v, "%ld", n < 128 ? 128 : n);
            if (push(b, opt[s]) || push(b, v)) return -1;
        }
    }
    return 0;
}

static int make_dataset(const zoo_args *a, const zoo_dataset *d, const char *path)
{
    gm_dataset *ds;
    gm_error err;
    if (access(path, F_OK) == 0) {
        if (gm_ds_open(&ds, path, &err) == GM_OK) {
            gm_ds_close(ds);
            fprintf(stderr, "gmorph zoo: dataset %s exists: kept\n", path);
            return GM_EXIT_OK;
        }
        fprintf(stderr, "gmorph zoo: %s is unreadable (%s): making it again\n", path, err.msg);
    }
    argv_buf b = {0};
    int bad = push(&b, "data") || push(&b, d->maker) || push(&b, "--out") || push(&b, path) ||
              push_scaled_sizes(&b, d->maker, a->scale);
    for (size_t i = 0; !bad && d->args && i < gm_json_len(d->args); i++) {
        const char *s = gm_json_string(gm_json_at(d->args, i));
        bad = !s || push(&b, s);
    }
    if (bad) {
        fprintf(stderr, "gmorph zoo: %s: dataset \"%s\": args must be a short list of strings\n", a->config, d->name);
        return GM_EXIT_USAGE;
    }
    fprintf(stderr, "gmorph zoo: making dataset %s (gmorph data %s)\n", path, d->maker);
    return gm_cmd_data(b.argc, b.argv);
}

/* 1 when path holds a finished model (loads, and its test split was scored). */
static int model_done(const char *path)
{
    gm_mfile m = {0};
    gm_error err;
    int done = access(path, F_OK) == 0 && gm_mfile_load(path, &m, &err) == GM_OK && m.ntasks == 1 &&
               !isnan(m.tasks[0].test_accuracy);
    gm_mfile_free(&m);
    return done;
}

static int train_model(const zoo_args *a, const zoo_model *m, const char *dspath, const char *path)
{
    if (model_done(path)) {
        fprintf(stderr, "gmorph zoo: model %s exists: kept\n", path);
        return GM_EXIT_OK;
    }
    argv_buf b = {0};
    char v[64], w[64] = "";
    for (int i = 0; i < m->nwidths; i++)
        snprintf(w + strlen(w), sizeof w - strlen(w), "%s%lld", i ? "," : "", m->widths[i]);
    int bad = push(&b, "train") || push(&b, "--data") || push(&b, dspath) || push(&b, "--task") ||
              push(&b, m->task) || push(&b, "--out") || push(&b, path) || push(&b, "--arch") ||
              push(&b, m->arch) || push(&b, "--widths") || push(&b, w) || push(&b, "--optim") || push(&b, m->optim);
    snprintf(v, sizeof v, "%lld", a->epochs ? (long long)a->epochs : m->epochs);
    bad = bad || push(&b, "--epochs") || push(&b, v);
    snprintf(v, sizeof v, "%lld", m->batch);
    bad = bad || push(&b, "--batch") || push(&b, v);
    snprintf(v, sizeof v, "%lld", m->seed);
    bad = bad || push(&b, "--seed") || push(&b, v);
    snprintf(v, sizeof v, "%d", a->threads);
    bad = bad || push(&b, "--threads") || push(&b, v);
    if (m->lr > 0) {
        snprintf(v, sizeof v, "%.9g", m->lr);
        bad = bad || push(&b, "--lr") || push(&b, v);
    }
    if (m->wd >= 0) {
        snprintf(v, sizeof v, "%.9g", m->wd);
        bad = bad || push(&b, "--weight-decay") || push(&b, v);
    }
    if (m->norm_from[0]) {
        char np[4096];
        snprintf(np, sizeof np, "%s/%s.h5", a->out, m->norm_from);
        bad = bad || push(&b, "--norm-from") || push(&b, np);
    }
    if (a->quiet) bad = bad || push(&b, "--quiet");
    if (bad) {
        fprintf(stderr, "gmorph zoo: model \"%s\": too many or too long options\n", m->name);
        return GM_EXIT_USAGE;
    }
    fprintf(stderr, "gmorph zoo: training %s (%s on %s/%s)\n", path, m->arch, m->dataset, m->task);
    fflush(stdout);
    return gm_cmd_train(b.argc, b.argv);
}

/* One row of DIR/zoo.md: reads back what the model file recorded. */
static int summarise(FILE *f, const zoo_args *a, const zoo_model *zm, const char *path, int *below)
{
    gm_mfile m = {0};
    gm_error err;
    gm_backend *be = NULL;
    gm_net *net = NULL;
    hid_t file = -1, g = -1;
    double train_s = NAN, ms = NAN;
    long long best_epoch = 0;
    gm_net_desc desc;
    gm_status st = gm_mfile_load(path, &m, &err);
    if (st == GM_OK) {
        desc = gm_mfile_desc(&m);
        st = gm_backend_cpu_create(&be, 1, &err);
    }
    if (st == GM_OK) st = gm_net_create(&net, be, &desc, 1, 1, &err);
    if (st == GM_OK) st = gm_mfile_to_net(&m, net, &err);
    if (st == GM_OK) st = gm_measure_latency(net, 20, 200, &ms, &err);
    if (st == GM_OK) st = gm_h5_open(&file, path, 0, &err);
    if (st == GM_OK) st = gm_h5_group_open(file, "training", &g, &err);
    if (st == GM_OK) st = gm_h5_attr_read_float(g, "train_seconds", &train_s, &err);
    if (st == GM_OK) st = gm_h5_attr_read_int(g, "best_epoch", &best_epoch, &err);
    if (st == GM_OK) {
        const gm_mf_task *t = &m.tasks[0];
        int ok = t->test_accuracy >= zm->min_test;
        *below += !ok;
        fprintf(f, "| %s | %s/%s | %s | %zu | %.1f | %lld/%lld | %.0f | %.2f | %.2f | %.2f | %.3f | %s |\n", zm->name,
                zm->dataset, t->name, m.arch, gm_net_nparams(net), (double)gm_net_flops(net) / 1e6, best_epoch,
                a->epochs ? (long long)a->epochs : zm->epochs, train_s, 100.0 * t->val_accuracy, 100.0 * t->test_accuracy,
                100.0 * zm->min_test, ms, ok ? "yes" : "**no**");
    }
    if (g >= 0) H5Gclose(g);
    gm_h5_close_file(file);
    gm_net_free(net);
    gm_backend_free(be);
    gm_mfile_free(&m);
    return st == GM_OK ? GM_EXIT_OK : gm_cli_fail(CMD, NULL, &err);
}

static int has_dataset(const zoo_dataset *ds, int n, const char *name)
{
    for (int k = 0; k < n; k++)
        if (!strcmp(ds[k].name, name)) return 1;
    return 0;
}

int gm_cmd_zoo(int argc, char **argv)
{
    zoo_args a;
    if (parse(argc, argv, &a)) return GM_EXIT_USAGE;
    gm_error err;
    gm_json *cfg = NULL;
    if (gm_json_parse_file(&cfg, a.config, &err) != GM_OK) return gm_cli_fail(CMD, NULL, &err);
    static const char *const top_keys[] = {"name", "description", "datasets", "models", NULL};
    static const char *const ds_keys[] = {"name", "maker", "args", NULL};
    zoo_dataset ds[MAX_DATASETS];
    zoo_model *models = calloc(MAX_MODELS, sizeof *models);
    char title[64] = "", desc[512] = "", path[4096], dspath[4096];
    int nds = 0, nm = 0, rc = GM_EXIT_OK;
    const gm_json *jd = gm_json_get(cfg, "datasets"), *jm = gm_json_get(cfg, "models");
    gm_status st = models ? gm_json_check_keys(cfg, top_keys, &err) : gm_error_set(&err, GM_ENOMEM, "out of memory");
    if (st == GM_OK) st = gm_json_get_string(cfg, "name", 1, title, sizeof title, &err);
    if (st == GM_OK) st = gm_json_get_string(cfg, "description", 0, desc, sizeof desc, &err);
    if (st == GM_OK && (gm_json_type_of(jd) != GM_JSON_ARRAY || gm_json_type_of(jm) != GM_JSON_ARRAY ||
                        gm_json_len(jd) > MAX_DATASETS || gm_json_len(jm) > MAX_MODELS || !gm_json_len(jm)))
        st = gm_error_set(&err, GM_EINVAL, "%s: wants \"datasets\" (up to %d) and \"models\" (1 to %d) as arrays",
                          a.config, MAX_DATASETS, MAX_MODELS);
    for (size_t i = 0; st == GM_OK && i < gm_json_len(jd); i++, nds++) {
        const gm_json *j = gm_json_at(jd, i);
        ds[i].args = gm_json_get(j, "args");
        st = gm_json_check_keys(j, ds_keys, &err);
        if (st == GM_OK) st = gm_json_get_string(j, "name", 1, ds[i].name, sizeof ds[i].name, &err);
        if (st == GM_OK) st = gm_json_get_string(j, "maker", 1, ds[i].maker, sizeof ds[i].maker, &err);
    }
    for (size_t i = 0; st == GM_OK && i < gm_json_len(jm); i++, nm++) {
        st = read_model(gm_json_at(jm, i), &models[i], &err);
        if (st == GM_OK && !has_dataset(ds, nds, models[i].dataset))
            st = gm_error_set(&err, GM_EINVAL, "%s: models[%zu] uses dataset \"%s\", which \"datasets\" lacks",
                              a.config, i, models[i].dataset);
        if (st == GM_OK && models[i].norm_from[0] && !has_dataset(ds, nds, models[i].norm_from))
            st = gm_error_set(&err, GM_EINVAL, "%s: models[%zu].norm_from names dataset \"%s\", which \"datasets\" lacks",
                              a.config, i, models[i].norm_from);
    }
    if (st != GM_OK) {
        rc = gm_cli_fail(CMD, NULL, &err);
        goto done;
    }
    if (gm_fs_mkdirs(a.out) != 0) {
        fprintf(stderr, "gmorph zoo: cannot create %s: %s\n", a.out, strerror(errno));
        rc = GM_EXIT_USAGE;
        goto done;
    }
    /* Datasets first (only those a selected model needs), then models in config order. */
    for (int k = 0; rc == GM_EXIT_OK && k < nds; k++) {
        int needed = 0;
        for (int i = 0; i < nm; i++)
            needed |= selected(a.only, models[i].name) &&
                      (!strcmp(models[i].dataset, ds[k].name) || !strcmp(models[i].norm_from, ds[k].name));
        snprintf(path, sizeof path, "%s/%s.h5", a.out, ds[k].name);
        if (needed) rc = make_dataset(&a, &ds[k], path);
    }
    for (int i = 0; rc == GM_EXIT_OK && i < nm; i++) {
        if (!selected(a.only, models[i].name)) continue;
        snprintf(dspath, sizeof dspath, "%s/%s.h5", a.out, models[i].dataset);
        snprintf(path, sizeof path, "%s/%s.h5", a.out, models[i].name);
        rc = train_model(&a, &models[i], dspath, path);
    }
    if (rc != GM_EXIT_OK) goto done;
    snprintf(path, sizeof path, "%s/zoo.md", a.out);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "gmorph zoo: cannot write %s: %s\n", path, strerror(errno));
        rc = GM_EXIT_FAIL;
        goto done;
    }
    int below = 0;
    fprintf(f, "# Task zoo %s\n\n%s\n\nBuilt by `gmorph zoo %s --out %s%s` (threads %d).\n\n", title, desc,
            a.config, a.out, a.scale < 1.0 || a.epochs ? " (scaled down: --scale/--epochs)" : "", a.threads);
    fprintf(f, "| model | dataset/task | architecture | parameters | MFLOP | best/epochs | train s | val %% | "
               "test %% | target %% | batch-1 ms (1 thread) | target met |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; rc == GM_EXIT_OK && i < nm; i++) {
        if (!selected(a.only, models[i].name)) continue;
        snprintf(dspath, sizeof dspath, "%s/%s.h5", a.out, models[i].name);
        rc = summarise(f, &a, &models[i], dspath, &below);
    }
    fclose(f);
    if (rc == GM_EXIT_OK) {
        FILE *in = fopen(path, "r");
        char line[1024];
        while (in && fgets(line, sizeof line, in)) fputs(line, stdout);
        if (in) fclose(in);
        if (below) {
            fprintf(stderr, "gmorph zoo: %d model%s below the target test accuracy (see %s)\n", below,
                    below == 1 ? "" : "s", path);
            rc = GM_EXIT_FAIL;
        }
    }
done:
    free(models);
    gm_json_free(cfg);
    return rc;
}

/*
 * gmorph: the command-line entry point for data, training and evaluation.
 *
 *   gmorph train [options]   train a single-task model (the task zoo's job)
 *
 * Exit codes: 0 success, 2 bad usage or bad input, 1 runtime failure.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gm_cli.h"
#include "gm_idx.h"
#include "gm_models.h"
#include "gm_optim.h"
#include "gm_train.h"

enum { EXIT_USAGE = 2 };
#define FASHION_MEAN 0.2860f
#define FASHION_STD 0.3530f

typedef struct {
    const char *data, *arch, *optim;
    int widths[5], epochs, batch, threads, limit, quiet;
    float lr, wd;
    unsigned long long seed;
} train_args;

static void usage_train(FILE *f)
{
    fprintf(f,
            "usage: gmorph train [options]\n"
            "Trains one classifier on Fashion-MNIST and reports test accuracy and batch-1 latency.\n\n"
            "  --data DIR        IDX files (default %s)\n"
            "  --arch NAME       vgg11, vgg13, resnet8 ... resnet18 (default vgg11)\n"
            "  --widths LIST     channels per stage, comma-separated (default 16,32,64,64)\n"
            "  --epochs N        passes over the training set (default 1)\n"
            "  --batch N         mini-batch size (default 64)\n"
            "  --optim NAME      adam, adamw or sgd (default adam)\n"
            "  --lr X            peak learning rate, cosine-decayed (default 2e-3; sgd 0.05)\n"
            "  --weight-decay X  (default 0; adamw 0.01)\n"
            "  --threads N       CPU threads (default: all cores)\n"
            "  --limit N         use only the first N training images (default all)\n"
            "  --seed N          initialisation and shuffling seed (default 1)\n"
            "  --quiet           no progress line\n"
            "  -h, --help        this text\n",
            GM_FASHION_MNIST_DIR);
}

static int parse_widths(const char *s, int *w)
{
    int n = 0;
    char *end;
    while (*s && n < 4) {
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 4096) return -1;
        w[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    w[n] = 0;
    return *s || n == 0 ? -1 : 0;
}

static int parse_int(const char *name, const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end || v < lo || v > hi) {
        fprintf(stderr, "gmorph train: %s must be an integer in [%d, %d], got \"%s\"\n", name, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_float(const char *name, const char *s, float *out)
{
    char *end;
    float v = strtof(s, &end);
    if (*s == '\0' || *end || !(v >= 0.0f)) {
        fprintf(stderr, "gmorph train: %s must be a non-negative number, got \"%s\"\n", name, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_train(int argc, char **argv, train_args *a)
{
    static const struct option opts[] = {
        {"data", required_argument, 0, 'd'},   {"arch", required_argument, 0, 'a'},
        {"widths", required_argument, 0, 'w'}, {"epochs", required_argument, 0, 'e'},
        {"batch", required_argument, 0, 'b'},  {"optim", required_argument, 0, 'o'},
        {"lr", required_argument, 0, 'l'},     {"weight-decay", required_argument, 0, 'W'},
        {"threads", required_argument, 0, 't'}, {"limit", required_argument, 0, 'n'},
        {"seed", required_argument, 0, 's'},   {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    *a = (train_args){.data = GM_FASHION_MNIST_DIR, .arch = "vgg11", .optim = "adam",
                      .widths = {16, 32, 64, 64, 0}, .epochs = 1, .batch = 64,
                      .threads = cores > 0 ? (int)cores : 1, .lr = -1.0f, .wd = -1.0f, .seed = 1};
    int c, bad = 0;
    optind = 1;
    while (!bad && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': a->data = optarg; break;
        case 'a': a->arch = optarg; break;
        case 'w':
            if (parse_widths(optarg, a->widths)) {
                fprintf(stderr, "gmorph train: --widths wants 1 to 4 positive integers like 16,32,64, got \"%s\"\n", optarg);
                bad = 1;
            }
            break;
        case 'e': bad = parse_int("--epochs", optarg, 1, 100000, &a->epochs); break;
        case 'b': bad = parse_int("--batch", optarg, 1, 65536, &a->batch); break;
        case 'o': a->optim = optarg; break;
        case 'l': bad = parse_float("--lr", optarg, &a->lr); break;
        case 'W': bad = parse_float("--weight-decay", optarg, &a->wd); break;
        case 't': bad = parse_int("--threads", optarg, 1, 1024, &a->threads); break;
        case 'n': bad = parse_int("--limit", optarg, 1, 1 << 30, &a->limit); break;
        case 's': {
            int s = 0;
            bad = parse_int("--seed", optarg, 0, 2147483647, &s);
            a->seed = (unsigned long long)s;
            break;
        }
        case 'q': a->quiet = 1; break;
        case 'h': usage_train(stdout); exit(0);
        default: bad = 1;
        }
    }
    if (!bad && optind < argc) {
        fprintf(stderr, "gmorph train: unexpected argument \"%s\"\n", argv[optind]);
        bad = 1;
    }
    if (bad) fprintf(stderr, "Try 'gmorph train --help'.\n");
    return bad ? -1 : 0;
}

static int optimizer_from(const train_args *a, gm_update *u)
{
    if (!strcmp(a->optim, "adam"))
        *u = gm_update_adam(a->lr >= 0 ? a->lr : 2e-3f, 0.9f, 0.999f, 1e-8f, a->wd >= 0 ? a->wd : 0.0f);
    else if (!strcmp(a->optim, "adamw"))
        *u = gm_update_adamw(a->lr >= 0 ? a->lr : 2e-3f, 0.9f, 0.999f, 1e-8f, a->wd >= 0 ? a->wd : 0.01f);
    else if (!strcmp(a->optim, "sgd"))
        *u = gm_update_sgd(a->lr >= 0 ? a->lr : 0.05f, 0.9f, a->wd >= 0 ? a->wd : 0.0f, 0);
    else {
        fprintf(stderr, "gmorph train: --optim must be adam, adamw or sgd, got \"%s\"\n", a->optim);
        return -1;
    }
    return 0;
}

/* A live bar on a terminal; one line per epoch in a log file or pipe. */
static void show_progress(void *ctx, const gm_train_progress *p)
{
    const int *tty = ctx;
    if (!*tty && !p->epoch_done) return;
    int width = 30, filled = (int)(width * (double)p->step / (double)p->steps);
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "%sepoch %d/%d [%s] %3.0f%%  loss %.4f  acc %5.1f%%  %6.0f img/s  ETA %4.0fs ",
            *tty ? "\r" : "", p->epoch, p->epochs, bar, 100.0 * (double)p->step / (double)p->steps,
            (double)p->loss, 100.0 * p->acc, p->images_per_s, p->eta_s);
    if (p->epoch_done) fputc('\n', stderr);
}

/* what: context the library's message lacks, or NULL. */
static int fail(const char *what, const gm_error *err)
{
    fprintf(stderr, "gmorph train: %s%s%s\n", what ? what : "", what ? ": " : "", err->msg);
    return err->code == GM_ENOMEM || err->code == GM_EDEVICE ? EXIT_FAILURE : EXIT_USAGE;
}

static int cmd_train(int argc, char **argv)
{
    train_args a;
    gm_update upd;
    if (parse_train(argc, argv, &a) || optimizer_from(&a, &upd)) return EXIT_USAGE;
    gm_error err;
    gm_imageset train, test;
    if (gm_imageset_load_idx(&train, a.data, "train", a.limit, &err) != GM_OK) return fail("training data", &err);
    if (gm_imageset_load_idx(&test, a.data, "t10k", 0, &err) != GM_OK) {
        gm_imageset_free(&train);
        return fail("test data", &err);
    }
    static gm_model model;
    gm_backend *be = NULL;
    gm_net *net = NULL;
    int rc = EXIT_SUCCESS;
    gm_net_desc desc;
    if (gm_model_from_name(&model, a.arch, a.widths, train.shape, train.classes, &err) != GM_OK) {
        rc = fail(NULL, &err);
        goto done;
    }
    desc = gm_model_desc(&model);
    if (gm_backend_cpu_create(&be, a.threads, &err) != GM_OK ||
        gm_net_create(&net, be, &desc, a.batch, a.seed, &err) != GM_OK) {
        rc = fail(NULL, &err);
        goto done;
    }
    printf("gmorph train: %s, %zu parameters, %.1f MFLOP per image, %d training and %d test images, "
           "%d threads, OpenBLAS kernels %s\n",
           a.arch, gm_net_nparams(net), (double)gm_net_flops(net) / 1e6, train.n, test.n, a.threads,
           gm_backend_cpu_blas_core());
    fflush(stdout);
    int tty = isatty(STDERR_FILENO);
    gm_train_opts o = {.epochs = a.epochs, .batch = a.batch, .optimizer = upd, .seed = a.seed,
                       .mean = FASHION_MEAN, .std = FASHION_STD, .report_every_s = 0.5,
                       .progress = a.quiet ? NULL : show_progress, .ctx = &tty};
    double t0 = gm_now_s(), acc, ms;
    if (gm_train_classifier(net, &train, &o, &err) != GM_OK) {
        rc = fail(NULL, &err);
        goto done;
    }
    double train_s = gm_now_s() - t0;
    if (gm_eval_accuracy(net, &test, 256 < a.batch ? 256 : a.batch, FASHION_MEAN, FASHION_STD, &acc, &err) != GM_OK ||
        gm_measure_latency(net, 10, 101, &ms, &err) != GM_OK) {
        rc = fail(NULL, &err);
        goto done;
    }
    printf("trained in %.1f s (%.0f images/s); test accuracy %.2f%%; batch-1 latency %.3f ms (median of 101)\n",
           train_s, (double)train.n * a.epochs / train_s, 100.0 * acc, ms);
done:
    gm_net_free(net);
    gm_backend_free(be);
    gm_imageset_free(&train);
    gm_imageset_free(&test);
    return rc;
}

int gm_cmd_train(int argc, char **argv) { return cmd_train(argc, argv); }

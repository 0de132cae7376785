/*
 * gmorph train: trains one task of a dataset file into a model file, with a
 * progress bar, best-on-validation saving and automatic resume from the
 * checkpoint an interrupted run left (see gm_train.h).
 */
#define _POSIX_C_SOURCE 200809L
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gm_cli.h"
#include "gm_device.h"
#include "gm_models.h"
#include "gm_optim.h"
#include "gm_train.h"

#define CMD "train"

typedef struct {
    const char *data, *task, *out, *arch, *optim, *checkpoint, *norm_from, *device;
    int widths[5], epochs, batch, threads, quiet, fresh;
    long limit;
    double lr, wd, ckpt_every;
    unsigned long long seed;
} train_args;

/* Set by SIGINT/SIGTERM/SIGUSR1: a signal handler can only talk through a global. */
static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gmorph train --data FILE --task NAME --out MODEL.h5 [options]\n"
            "Trains one task of a gmorph dataset file (see 'gmorph data') and writes the model\n"
            "with the best validation accuracy, scored on the test split, to MODEL.h5.\n\n"
            "  --data FILE          dataset file (HDF5, made by 'gmorph data')\n"
            "  --task NAME          which of its tasks (default: its only task)\n"
            "  --out FILE           model file to write\n"
            "  --arch NAME          vgg11, vgg13, resnet8 ... resnet18 (default vgg11)\n"
            "  --widths LIST        channels per stage, comma-separated (default 16,32,64,64)\n"
            "  --epochs N           passes over the training split (default 10)\n"
            "  --batch N            mini-batch size (default 64)\n"
            "  --optim NAME         adam, adamw or sgd (default adam)\n"
            "  --lr X               peak learning rate, cosine-decayed to 0 (default 2e-3; sgd 0.05)\n"
            "  --weight-decay X     (default 0; adamw 0.01)\n"
            "  --limit N            train on the first N training samples only\n"
            "  --norm-from FILE     normalise inputs with another dataset file's mean and std (models\n"
            "                       that will be fused must all expect the same input)\n"
            "  --seed N             initialisation and shuffling seed (default 1)\n"
            "  --threads N          CPU threads (default: all cores)\n"
            "  --device D           cpu, cuda or cuda-tf32 (default cpu); cuda: the GPU picked by the rank's\n"
            "                       index on its node (OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID; else GPU 0),\n"
            "                       strict float32; cuda-tf32: TF32 tensor cores in products and convolutions.\n"
            "                       Fails with exit code 2 where this build or machine has no GPU\n"
            "  --checkpoint FILE    resumable state (default: MODEL.ckpt.h5 beside --out)\n"
            "  --checkpoint-every S also checkpoint every S seconds inside an epoch (default 300)\n"
            "  --fresh              ignore an existing checkpoint and start over\n"
            "  --quiet              no progress output\n"
            "  -h, --help           this text\n\n"
            "An interrupted run (Ctrl-C, SIGTERM, SIGUSR1, a crash) resumes where its last checkpoint\n"
            "left off when the same command is run again, and ends with the same weights.\n");
}

static int parse(int argc, char **argv, train_args *a)
{
    static const struct option opts[] = {
        {"data", required_argument, 0, 'd'},     {"task", required_argument, 0, 'T'},
        {"out", required_argument, 0, 'O'},      {"arch", required_argument, 0, 'a'},
        {"widths", required_argument, 0, 'w'},   {"epochs", required_argument, 0, 'e'},
        {"batch", required_argument, 0, 'b'},    {"optim", required_argument, 0, 'o'},
        {"lr", required_argument, 0, 'l'},       {"weight-decay", required_argument, 0, 'W'},
        {"threads", required_argument, 0, 't'},  {"limit", required_argument, 0, 'n'},
        {"seed", required_argument, 0, 's'},     {"checkpoint", required_argument, 0, 'c'},
        {"checkpoint-every", required_argument, 0, 'C'}, {"fresh", no_argument, 0, 'F'},
        {"norm-from", required_argument, 0, 'N'}, {"device", required_argument, 0, 'D'},
        {"quiet", no_argument, 0, 'q'},          {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    *a = (train_args){.arch = "vgg11", .optim = "adam", .device = "cpu", .widths = {16, 32, 64, 64, 0}, .epochs = 10,
                      .batch = 64, .threads = gm_cli_cores(), .lr = -1.0, .wd = -1.0, .seed = 1,
                      .ckpt_every = 300.0};
    int c, bad = 0;
    long v;
    optind = 1;
    while (!bad && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': a->data = optarg; break;
        case 'T': a->task = optarg; break;
        case 'O': a->out = optarg; break;
        case 'a': a->arch = optarg; break;
        case 'w': bad = gm_cli_int_list(CMD, "--widths", optarg, 4, a->widths); break;
        case 'e': bad = gm_cli_int(CMD, "--epochs", optarg, 1, 100000, &v); a->epochs = (int)v; break;
        case 'b': bad = gm_cli_int(CMD, "--batch", optarg, 2, 65536, &v); a->batch = (int)v; break;
        case 'o': a->optim = optarg; break;
        case 'l': bad = gm_cli_float(CMD, "--lr", optarg, 1e-12, 100.0, &a->lr); break;
        case 'W': bad = gm_cli_float(CMD, "--weight-decay", optarg, 0.0, 100.0, &a->wd); break;
        case 't': bad = gm_cli_int(CMD, "--threads", optarg, 1, 1024, &v); a->threads = (int)v; break;
        case 'n': bad = gm_cli_int(CMD, "--limit", optarg, 1, 1L << 40, &a->limit); break;
        case 's': bad = gm_cli_int(CMD, "--seed", optarg, 0, 2147483647, &v); a->seed = (unsigned long long)v; break;
        case 'c': a->checkpoint = optarg; break;
        case 'C': bad = gm_cli_float(CMD, "--checkpoint-every", optarg, 0.0, 1e9, &a->ckpt_every); break;
        case 'F': a->fresh = 1; break;
        case 'N': a->norm_from = optarg; break;
        case 'D': {
            gm_device_kind kind;
            gm_error err;
            a->device = optarg;
            if (gm_device_parse(optarg, &kind, NULL, &err) != GM_OK) {
                fprintf(stderr, "gmorph train: --device: %s\n", err.msg);
                bad = 1;
            }
            break;
        }
        case 'q': a->quiet = 1; break;
        case 'h': usage(stdout); exit(GM_EXIT_OK);
        default: bad = 1;
        }
    }
    if (!bad && optind < argc) {
        fprintf(stderr, "gmorph train: unexpected argument \"%s\"\n", argv[optind]);
        bad = 1;
    }
    if (!bad && (!a->data || !a->out)) {
        fprintf(stderr, "gmorph train: --data and --out are required\n");
        bad = 1;
    }
    if (bad) fprintf(stderr, "Try 'gmorph train --help'.\n");
    return bad ? -1 : 0;
}

static int optimizer_from(const train_args *a, gm_update *u)
{
    float lr = (float)a->lr, wd = (float)a->wd;
    if (!strcmp(a->optim, "adam"))
        *u = gm_update_adam(lr > 0 ? lr : 2e-3f, 0.9f, 0.999f, 1e-8f, wd >= 0 ? wd : 0.0f);
    else if (!strcmp(a->optim, "adamw"))
        *u = gm_update_adamw(lr > 0 ? lr : 2e-3f, 0.9f, 0.999f, 1e-8f, wd >= 0 ? wd : 0.01f);
    else if (!strcmp(a->optim, "sgd"))
        *u = gm_update_sgd(lr > 0 ? lr : 0.05f, 0.9f, wd >= 0 ? wd : 0.0f, 0);
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
    int width = 24, filled = (int)(width * (double)p->step / (double)p->steps);
    char bar[32], val[32] = "";
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    if (p->epoch_done && p->val_acc == p->val_acc) snprintf(val, sizeof val, "  val %5.2f%%", 100.0 * p->val_acc);
    fprintf(stderr, "%sepoch %d/%d [%s] %3.0f%%  loss %.4f  acc %5.1f%%%s  %5.0f img/s  ETA %s%4.0fs ",
            *tty ? "\r" : "", p->epoch, p->epochs, bar, 100.0 * (double)p->step / (double)p->steps,
            (double)p->loss, 100.0 * p->acc, val, p->images_per_s, p->eta_s >= 3600 ? ">" : "",
            p->eta_s >= 3600 ? 3599.0 : p->eta_s);
    if (p->epoch_done) fputc('\n', stderr);
}

/* "dir/model.h5" -> "dir/model.ckpt.h5". */
static void default_checkpoint(const char *out, char *buf, size_t cap)
{
    size_t n = strlen(out);
    if (n > 3 && !strcmp(out + n - 3, ".h5")) snprintf(buf, cap, "%.*s.ckpt.h5", (int)(n - 3), out);
    else snprintf(buf, cap, "%s.ckpt.h5", out);
}

static int pick_task(const gm_dataset *ds, const char *name)
{
    const gm_ds_info *info = gm_ds_get_info(ds);
    if (!name) {
        if (info->ntasks == 1) return 0;
        fprintf(stderr, "gmorph train: %s has %d tasks; choose one with --task:", gm_ds_path(ds), info->ntasks);
    } else {
        int t = gm_ds_task_index(ds, name);
        if (t >= 0) return t;
        fprintf(stderr, "gmorph train: %s has no task \"%s\"; its tasks:", gm_ds_path(ds), name);
    }
    for (int i = 0; i < info->ntasks; i++) fprintf(stderr, " %s", info->tasks[i].name);
    fputc('\n', stderr);
    return -1;
}

int gm_cmd_train(int argc, char **argv)
{
    train_args a;
    gm_update upd;
    if (parse(argc, argv, &a) || optimizer_from(&a, &upd)) return GM_EXIT_USAGE;
    gm_error err;
    gm_dataset *ds = NULL;
    gm_backend *be = NULL;
    char where[600];
    /* The device first: a missing GPU is reported before minutes of loading. */
    gm_status st = gm_device_open_named(&be, a.device, a.threads, where, sizeof where, &err);
    if (st != GM_OK) return gm_cli_fail(CMD, NULL, &err); /* names the device */
    if (gm_ds_open(&ds, a.data, &err) != GM_OK) return gm_backend_free(be), gm_cli_fail(CMD, NULL, &err);
    if (a.norm_from) {
        gm_dataset *other = NULL;
        if (gm_ds_open(&other, a.norm_from, &err) != GM_OK)
            return gm_ds_close(ds), gm_backend_free(be), gm_cli_fail(CMD, "--norm-from", &err);
        const gm_ds_info *oi = gm_ds_get_info(other);
        if (oi->shape.c != gm_ds_get_info(ds)->shape.c) {
            fprintf(stderr, "gmorph train: --norm-from %s has %d channels, %s has %d\n", a.norm_from, oi->shape.c,
                    a.data, gm_ds_get_info(ds)->shape.c);
            gm_ds_close(other);
            gm_ds_close(ds);
            gm_backend_free(be);
            return GM_EXIT_USAGE;
        }
        gm_ds_set_normalisation(ds, oi->mean, oi->std);
        gm_ds_close(other);
    }
    int task = pick_task(ds, a.task), rc = GM_EXIT_OK;
    gm_model *model = calloc(1, sizeof *model);
    gm_net *net = NULL;
    const gm_ds_info *info = gm_ds_get_info(ds);
    char ckpt[4096], arch[128];
    if (task < 0) {
        rc = GM_EXIT_USAGE;
        goto done;
    }
    if (!model) {
        rc = gm_cli_fail(CMD, NULL, &(gm_error){GM_ENOMEM, "out of memory"});
        goto done;
    }
    st = gm_model_from_name(model, a.arch, a.widths, info->shape, info->tasks[task].classes, &err);
    gm_net_desc desc = gm_model_desc(model);
    if (st == GM_OK) st = gm_net_create(&net, be, &desc, a.batch, a.seed, &err);
    if (st != GM_OK) {
        rc = gm_cli_fail(CMD, NULL, &err);
        goto done;
    }
    int n = snprintf(arch, sizeof arch, "%s ", a.arch);
    for (int i = 0; a.widths[i] && n < (int)sizeof arch; i++)
        n += snprintf(arch + n, sizeof arch - (size_t)n, "%s%d", i ? "," : "", a.widths[i]);
    if (a.checkpoint) snprintf(ckpt, sizeof ckpt, "%s", a.checkpoint);
    else default_checkpoint(a.out, ckpt, sizeof ckpt);
    printf("gmorph train: %s on %s task \"%s\" (%d classes): %zu parameters, %.1f MFLOP per image; "
           "%ld/%ld/%ld train/val/test samples; %s\n",
           arch, info->name, info->tasks[task].name, info->tasks[task].classes, gm_net_nparams(net),
           (double)gm_net_flops(net) / 1e6, info->n[GM_SPLIT_TRAIN], info->n[GM_SPLIT_VAL],
           info->n[GM_SPLIT_TEST], where);
    fflush(stdout);

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    int tty = isatty(STDERR_FILENO);
    gm_train_opts o = {.epochs = a.epochs, .batch = a.batch, .optimizer = upd, .seed = a.seed,
                       .limit = a.limit, .arch = arch, .out = a.out, .checkpoint = ckpt,
                       .checkpoint_every_s = a.ckpt_every, .resume = !a.fresh, .stop = &stop_requested,
                       .report_every_s = 0.5, .progress = a.quiet ? NULL : show_progress, .ctx = &tty};
    gm_train_result r;
    if (!a.fresh && access(ckpt, F_OK) == 0) fprintf(stderr, "gmorph train: resuming from %s\n", ckpt);
    st = gm_train_task(net, ds, task, &o, &r, &err);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGUSR1, SIG_DFL);
    if (st != GM_OK) {
        rc = gm_cli_fail(CMD, NULL, &err);
        goto done;
    }
    if (r.resumed)
        fprintf(stderr, "gmorph train: resumed at epoch %d, step %ld of %ld\n", r.start_epoch, r.start_step,
                (long)(info->n[GM_SPLIT_TRAIN] / a.batch) * a.epochs);
    if (r.interrupted) {
        fprintf(stderr, "gmorph train: interrupted after %d of %d epochs; state saved in %s; run the same "
                        "command again to resume\n", r.epochs_done, a.epochs, ckpt);
        rc = GM_EXIT_FAIL;
        goto done;
    }
    double ms = 0.0;
    if (gm_measure_latency(net, 10, 101, &ms, &err) != GM_OK) {
        rc = gm_cli_fail(CMD, NULL, &err);
        goto done;
    }
    long images = (a.limit > 0 && a.limit < info->n[GM_SPLIT_TRAIN] ? a.limit : info->n[GM_SPLIT_TRAIN]) /
                  a.batch * a.batch * (long)a.epochs;
    char val[32] = "no val split", test[32] = "no test split";
    if (r.best_val == r.best_val) snprintf(val, sizeof val, "val %.2f%%", 100.0 * r.best_val);
    if (r.test_acc == r.test_acc) snprintf(test, sizeof test, "test accuracy %.2f%%", 100.0 * r.test_acc);
    printf("trained %d epochs in %.1f s (%.0f images/s); best epoch %d (%s); %s; batch-1 latency %.3f ms; "
           "wrote %s\n", r.epochs_done, r.train_s, r.train_s > 0 ? (double)images / r.train_s : 0.0,
           r.best_epoch, val, test, ms, a.out);
done:
    gm_net_free(net);
    gm_backend_free(be);
    free(model);
    gm_ds_close(ds);
    return rc;
}

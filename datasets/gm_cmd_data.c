/*
 * gmorph data: makes the shipped datasets, converts a user's arrays, and
 * describes a dataset file. Option parsing only; the work is in datasets/gm_make.
 *
 *   gmorph data multi-fashion|fashion|sprites --out FILE [options]
 *   gmorph data import --out FILE --name NAME --split SPLIT=X --label SPLIT:TASK=Y ...
 *   gmorph data info FILE
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_cli.h"
#include "gm_clock.h"
#include "gm_dataset.h"
#include "gm_make.h"

static void usage_data(FILE *f)
{
    fprintf(f, "usage: gmorph data <what> [options]\n"
               "Makes or converts datasets into gmorph's HDF5 format, or describes one.\n\n"
               "  multi-fashion  two Fashion-MNIST items per image, tasks left and right (Lin et al. 2019)\n"
               "  fashion        one Fashion-MNIST item per image, task item\n"
               "  sprites        procedural RGB sprites, tasks shape, colour, scale and position\n"
               "  import         your own arrays (.npy files or HDF5 datasets)\n"
               "  info FILE      what a dataset file holds\n\n"
               "'gmorph data <what> --help' describes each.\n");
}

/* ---- the makers ------------------------------------------------------------ */

typedef struct {
    const char *cmd; /* "data multi-fashion", for messages */
    double t0;
} progress_ctx;

/* One line per finished split: enough to see a long run move. */
static void show_progress(void *ctx, gm_split s, long done, long total)
{
    progress_ctx *p = ctx;
    if (done != total) return;
    fprintf(stderr, "gmorph %s: %s split written, %ld samples (%.1f s)\n", p->cmd, gm_split_name(s), total,
            gm_now_s() - p->t0);
}

static void usage_maker(FILE *f, gm_make_kind k)
{
    gm_make_opts d = gm_make_defaults(k);
    const char *name = gm_make_kind_name(k);
    static const char *const what[GM_MAKE_NKINDS] = {
        "Multi-Fashion (Lin et al. 2019): two Fashion-MNIST items on one canvas, one at the top-left\n"
        "corner and one at the bottom-right; tasks \"left\" and \"right\" (10 classes each). Train and\n"
        "val pairs come from the first 50,000 and the last 10,000 training images, test pairs from\n"
        "the 10,000 test images; each pair is two independent uniform picks.\n",
        "Fashion-MNIST alone, the item centred on the canvas; task \"item\" (10 classes). Train is\n"
        "drawn from the first 50,000 training images, val from the last 10,000, test from the\n"
        "10,000 test images, each in an order shuffled by the seed.\n",
        "Procedural RGB sprites on a dark noisy background, one per image, with independent\n"
        "uniform factors: shape (square, circle, triangle, cross), colour (6 hues), scale (3 sizes)\n"
        "and position (3x3 grid, jittered); tasks \"shape\", \"colour\", \"scale\", \"position\".\n"};
    fprintf(f, "usage: gmorph data %s --out FILE [options]\n%s\n", name, what[k]);
    fprintf(f, "  --out FILE         the dataset file to write (required)\n");
    fprintf(f, "  --size N           canvas side in pixels (default %d; at least %d)\n", d.size,
            k == GM_MAKE_SPRITES ? GM_SPRITE_MIN_SIZE : GM_FASHION_SIDE);
    fprintf(f, "  --train N          training samples (default %ld%s)\n", d.n[GM_SPLIT_TRAIN],
            k == GM_MAKE_FASHION ? ", at most 50000" : "");
    fprintf(f, "  --val N            validation samples (default %ld%s)\n", d.n[GM_SPLIT_VAL],
            k == GM_MAKE_FASHION ? ", at most 10000" : "");
    fprintf(f, "  --test N           test samples (default %ld%s)\n", d.n[GM_SPLIT_TEST],
            k == GM_MAKE_FASHION ? ", at most 10000" : "");
    fprintf(f, "  --seed S           the same options and seed give a byte-identical file (default %llu)\n",
            (unsigned long long)d.seed);
    if (k != GM_MAKE_SPRITES)
        fprintf(f, "  --fashion-dir DIR  Fashion-MNIST's IDX files (default %s,\n"
                   "                     from the Debian package dataset-fashion-mnist)\n",
                GM_FASHION_MNIST_DIR);
    if (k == GM_MAKE_MULTI_FASHION)
        fprintf(f, "  --group-task       a third task, \"same_group\": are both items in the same coarse group\n"
                   "                     (tops, bottoms, shoes, bags)? It needs both items at once\n");
    fprintf(f, "  -h, --help         this text\n");
}

static void summary(const char *path, const gm_ds_info *info)
{
    printf("wrote %s: %ld/%ld/%ld samples, %d task%s, %dx%dx%d %s\n", path, info->n[GM_SPLIT_TRAIN],
           info->n[GM_SPLIT_VAL], info->n[GM_SPLIT_TEST], info->ntasks, info->ntasks == 1 ? "" : "s", info->shape.c,
           info->shape.h, info->shape.w, info->dtype == GM_DT_U8 ? "uint8" : "float32");
}

/* Reopens the file just written, for the summary line (and as a last check). */
static int report_written(const char *cmd, const char *path)
{
    gm_error err;
    gm_dataset *ds;
    if (gm_ds_open(&ds, path, &err) != GM_OK) return gm_cli_fail(cmd, NULL, &err);
    summary(path, gm_ds_get_info(ds));
    gm_ds_close(ds);
    return GM_EXIT_OK;
}

static int cmd_maker(gm_make_kind k, int argc, char **argv)
{
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'},  {"size", required_argument, 0, 'z'},
        {"train", required_argument, 0, 'r'}, {"val", required_argument, 0, 'v'},
        {"test", required_argument, 0, 't'}, {"seed", required_argument, 0, 's'},
        {"fashion-dir", required_argument, 0, 'f'}, {"help", no_argument, 0, 'h'},
        {"group-task", no_argument, 0, 'g'}, {0, 0, 0, 0}};
    char cmd[64];
    snprintf(cmd, sizeof cmd, "data %s", gm_make_kind_name(k));
    gm_make_opts o = gm_make_defaults(k);
    const char *out = NULL;
    int c, bad = 0;
    long v;
    optind = 1;
    while (!bad && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'z':
            bad = gm_cli_int(cmd, "--size", optarg, k == GM_MAKE_SPRITES ? GM_SPRITE_MIN_SIZE : GM_FASHION_SIDE,
                             k == GM_MAKE_SPRITES ? GM_SPRITE_MAX_SIZE : GM_FASHION_MAX_SIZE, &v);
            o.size = (int)v;
            break;
        case 'r': bad = gm_cli_int(cmd, "--train", optarg, 0, 1000000000L, &o.n[GM_SPLIT_TRAIN]); break;
        case 'v': bad = gm_cli_int(cmd, "--val", optarg, 0, 1000000000L, &o.n[GM_SPLIT_VAL]); break;
        case 't': bad = gm_cli_int(cmd, "--test", optarg, 0, 1000000000L, &o.n[GM_SPLIT_TEST]); break;
        case 's':
            bad = gm_cli_int(cmd, "--seed", optarg, 0, 0x7fffffffffffffffL, &v);
            o.seed = (uint64_t)v;
            break;
        case 'f':
            if (k == GM_MAKE_SPRITES) {
                fprintf(stderr, "gmorph %s: --fashion-dir does not apply to sprites\n", cmd);
                bad = 1;
            }
            o.fashion_dir = optarg;
            break;
        case 'g':
            if (k != GM_MAKE_MULTI_FASHION) {
                fprintf(stderr, "gmorph %s: --group-task applies to multi-fashion only\n", cmd);
                bad = 1;
            }
            o.group_task = 1;
            break;
        case 'h': usage_maker(stdout, k); return GM_EXIT_OK;
        default: bad = 1;
        }
    }
    if (!bad && optind < argc) {
        fprintf(stderr, "gmorph %s: unexpected argument \"%s\"\n", cmd, argv[optind]);
        bad = 1;
    }
    if (!bad && !out) {
        fprintf(stderr, "gmorph %s: --out FILE is required\n", cmd);
        bad = 1;
    }
    if (!bad && o.n[GM_SPLIT_TRAIN] + o.n[GM_SPLIT_VAL] + o.n[GM_SPLIT_TEST] == 0) {
        fprintf(stderr, "gmorph %s: --train, --val and --test are all 0: nothing to write\n", cmd);
        bad = 1;
    }
    if (bad) {
        fprintf(stderr, "Try 'gmorph data %s --help'.\n", gm_make_kind_name(k));
        return GM_EXIT_USAGE;
    }
    gm_error err;
    if (gm_make_check(k, &o, &err) != GM_OK) {
        fprintf(stderr, "gmorph %s: %s\nTry 'gmorph data %s --help'.\n", cmd, err.msg, gm_make_kind_name(k));
        return GM_EXIT_USAGE;
    }
    progress_ctx p = {cmd, gm_now_s()};
    if (k != GM_MAKE_SPRITES)
        fprintf(stderr, "gmorph %s: reading Fashion-MNIST from %s\n", cmd, o.fashion_dir ? o.fashion_dir : GM_FASHION_MNIST_DIR);
    if (gm_make_write(k, out, &o, show_progress, &p, &err) != GM_OK) return gm_cli_fail(cmd, NULL, &err);
    return report_written(cmd, out);
}

/* ---- import ------------------------------------------------------------------ */

static void usage_import(FILE *f)
{
    fprintf(f,
            "usage: gmorph data import --out FILE --name NAME --split SPLIT=X --label SPLIT:TASK=Y [...]\n"
            "Converts your own arrays into a gmorph dataset. A source X or Y is a .npy file (format 1.0 to\n"
            "3.0, little-endian, C order) or an HDF5 dataset written FILE.h5:/path/in/file.\n\n"
            "  --out FILE          the dataset file to write (required)\n"
            "  --name NAME         the dataset's name (required)\n"
            "  --split SPLIT=X     images of a split (train, val or test): uint8 or float32, shaped\n"
            "                      (N,C,H,W), (N,H,W,C) with --layout nhwc, or (N,H,W) for one channel\n"
            "  --label SPLIT:TASK=Y\n"
            "                      labels of a task for a split: int8/uint8/int16/int32/int64, shaped\n"
            "                      (N,); every task needs labels for every split given\n"
            "  --classes TASK=K    classes of a task (default: largest label + 1, at least 2)\n"
            "  --layout nchw|nhwc  layout of 4-d images (default nchw)\n"
            "  --chunk-mb N        images read per step, in MiB (default 16)\n"
            "  -h, --help          this text\n\n"
            "example: gmorph data import --out my.h5 --name digits --split train=xtr.npy\n"
            "           --label train:digit=ytr.npy --split test=data.h5:/test/x --label test:digit=data.h5:/test/y\n");
}

/* Splits "KEY=VALUE" at the first '='; 0 when there is none or either side is empty. */
static int split_eq(char *s, char **key, char **value)
{
    char *eq = strchr(s, '=');
    if (!eq || eq == s || !eq[1]) return 0;
    *eq = '\0';
    *key = s;
    *value = eq + 1;
    return 1;
}

/* Index of the task called name, adding it when new; -1 when there are too many. */
static int task_slot(gm_make_import_opts *o, const char *name)
{
    for (int t = 0; t < o->ntasks; t++)
        if (!strcmp(o->tasks[t].name, name)) return t;
    if (o->ntasks == GM_DS_MAX_TASKS) return -1;
    snprintf(o->tasks[o->ntasks].name, sizeof o->tasks[0].name, "%s", name);
    return o->ntasks++;
}

typedef struct {
    char task[GM_DS_NAME_MAX];
    int classes;
} classes_opt;

static int cmd_import(int argc, char **argv)
{
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'},     {"name", required_argument, 0, 'n'},
        {"split", required_argument, 0, 's'},   {"label", required_argument, 0, 'l'},
        {"classes", required_argument, 0, 'c'}, {"layout", required_argument, 0, 'L'},
        {"chunk-mb", required_argument, 0, 'm'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *cmd = "data import";
    static gm_make_import_opts o;
    static classes_opt cls[GM_DS_MAX_TASKS];
    memset(&o, 0, sizeof o);
    int ncls = 0, c, bad = 0;
    const char *out = NULL;
    optind = 1;
    while (!bad && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *key, *val, *colon;
        gm_split s;
        gm_error err;
        long v;
        switch (c) {
        case 'o': out = optarg; break;
        case 'n':
            if (!optarg[0] || strlen(optarg) >= GM_DS_NAME_MAX) {
                fprintf(stderr, "gmorph %s: --name must have 1 to %d characters, got \"%s\"\n", cmd,
                        GM_DS_NAME_MAX - 1, optarg);
                bad = 1;
            }
            o.name = optarg;
            break;
        case 's':
            if (!split_eq(optarg, &key, &val)) {
                fprintf(stderr, "gmorph %s: --split wants SPLIT=SOURCE like train=x_train.npy, got \"%s\"\n", cmd,
                        optarg);
                bad = 1;
            } else if (gm_split_parse(key, &s, &err) != GM_OK) {
                fprintf(stderr, "gmorph %s: --split %s=...: %s\n", cmd, key, err.msg);
                bad = 1;
            } else if (o.x[s]) {
                fprintf(stderr, "gmorph %s: --split %s given twice\n", cmd, key);
                bad = 1;
            } else
                o.x[s] = val;
            break;
        case 'l':
            colon = strchr(optarg, ':');
            if (!colon || !split_eq(colon + 1, &key, &val) || colon == optarg) {
                fprintf(stderr,
                        "gmorph %s: --label wants SPLIT:TASK=SOURCE like train:digit=y_train.npy, got \"%s\"\n", cmd,
                        optarg);
                bad = 1;
                break;
            }
            *colon = '\0';
            if (gm_split_parse(optarg, &s, &err) != GM_OK) {
                fprintf(stderr, "gmorph %s: --label %s:...: %s\n", cmd, optarg, err.msg);
                bad = 1;
            } else if (strlen(key) >= GM_DS_NAME_MAX || strchr(key, ',') || strchr(key, '/')) {
                fprintf(stderr, "gmorph %s: --label: task name \"%s\" must be under %d characters, without ',' or '/'\n",
                        cmd, key, GM_DS_NAME_MAX);
                bad = 1;
            } else {
                int t = task_slot(&o, key);
                if (t < 0) {
                    fprintf(stderr, "gmorph %s: --label: at most %d tasks\n", cmd, GM_DS_MAX_TASKS);
                    bad = 1;
                } else if (o.tasks[t].y[s]) {
                    fprintf(stderr, "gmorph %s: --label %s:%s given twice\n", cmd, optarg, key);
                    bad = 1;
                } else
                    o.tasks[t].y[s] = val;
            }
            break;
        case 'c':
            if (!split_eq(optarg, &key, &val) || strlen(key) >= GM_DS_NAME_MAX) {
                fprintf(stderr, "gmorph %s: --classes wants TASK=K like digit=10, got \"%s\"\n", cmd, optarg);
                bad = 1;
            } else if (ncls == GM_DS_MAX_TASKS) {
                fprintf(stderr, "gmorph %s: --classes: at most %d tasks\n", cmd, GM_DS_MAX_TASKS);
                bad = 1;
            } else if (!(bad = gm_cli_int(cmd, "--classes", val, 2, 1000000, &v))) {
                snprintf(cls[ncls].task, sizeof cls[0].task, "%s", key);
                cls[ncls++].classes = (int)v;
            }
            break;
        case 'L':
            if (!strcmp(optarg, "nchw")) o.nhwc = 0;
            else if (!strcmp(optarg, "nhwc")) o.nhwc = 1;
            else {
                fprintf(stderr, "gmorph %s: --layout must be nchw or nhwc, got \"%s\"\n", cmd, optarg);
                bad = 1;
            }
            break;
        case 'm': /* a smaller chunk shows streaming in tests */
            bad = gm_cli_int(cmd, "--chunk-mb", optarg, 1, 65536, &v);
            o.chunk_bytes = v << 20;
            break;
        case 'h': usage_import(stdout); return GM_EXIT_OK;
        default: bad = 1;
        }
    }
    if (!bad && optind < argc) {
        fprintf(stderr, "gmorph %s: unexpected argument \"%s\"\n", cmd, argv[optind]);
        bad = 1;
    }
    if (!bad && (!out || !o.name)) {
        fprintf(stderr, "gmorph %s: %s is required\n", cmd, !out ? "--out FILE" : "--name NAME");
        bad = 1;
    }
    int any = 0;
    for (int s = 0; s < GM_NSPLITS; s++) any |= o.x[s] != NULL;
    if (!bad && !any) {
        fprintf(stderr, "gmorph %s: give at least one --split SPLIT=SOURCE\n", cmd);
        bad = 1;
    }
    if (!bad && o.ntasks == 0) {
        fprintf(stderr, "gmorph %s: give at least one --label SPLIT:TASK=SOURCE\n", cmd);
        bad = 1;
    }
    for (int i = 0; !bad && i < ncls; i++) {
        int t = 0;
        while (t < o.ntasks && strcmp(o.tasks[t].name, cls[i].task)) t++;
        if (t == o.ntasks) {
            fprintf(stderr, "gmorph %s: --classes %s=%d names no task given by --label\n", cmd, cls[i].task,
                    cls[i].classes);
            bad = 1;
        } else
            o.tasks[t].classes = cls[i].classes;
    }
    for (int t = 0; !bad && t < o.ntasks; t++)
        for (int s = 0; !bad && s < GM_NSPLITS; s++) {
            if (o.x[s] && !o.tasks[t].y[s]) {
                fprintf(stderr, "gmorph %s: task \"%s\" needs --label %s:%s=SOURCE too\n", cmd, o.tasks[t].name,
                        gm_split_name((gm_split)s), o.tasks[t].name);
                bad = 1;
            } else if (!o.x[s] && o.tasks[t].y[s]) {
                fprintf(stderr, "gmorph %s: --label %s:%s given without --split %s=SOURCE\n", cmd,
                        gm_split_name((gm_split)s), o.tasks[t].name, gm_split_name((gm_split)s));
                bad = 1;
            }
        }
    if (bad) {
        fprintf(stderr, "Try 'gmorph data import --help'.\n");
        return GM_EXIT_USAGE;
    }
    progress_ctx p = {cmd, gm_now_s()};
    gm_error err;
    if (gm_make_import(out, &o, show_progress, &p, &err) != GM_OK) return gm_cli_fail(cmd, NULL, &err);
    return report_written(cmd, out);
}

/* ---- info -------------------------------------------------------------------- */

static void usage_info(FILE *f)
{
    fprintf(f, "usage: gmorph data info FILE\n"
               "Prints a dataset's name, source, sample shape, splits, tasks with their label\n"
               "histograms per split, and the per-channel mean and std.\n\n"
               "  -h, --help  this text\n");
}

enum { HIST_MAX_CLASSES = 20 };

/* One line per split: each class's share, or the extremes for many classes. */
static void print_histogram(const gm_dataset *ds, int task, int classes, gm_split s, long n)
{
    const int32_t *y = gm_ds_labels(ds, s, task);
    long *count = calloc((size_t)classes, sizeof *count);
    if (!count || !y) {
        free(count);
        return;
    }
    for (long i = 0; i < n; i++) count[y[i]]++;
    printf("    %-5s", gm_split_name(s));
    if (classes <= HIST_MAX_CLASSES) {
        for (int k = 0; k < classes; k++) printf(" %5.1f", 100.0 * (double)count[k] / (double)n);
        printf("  (%%)\n");
    } else {
        int lo = 0, hi = 0;
        for (int k = 1; k < classes; k++) {
            if (count[k] < count[lo]) lo = k;
            if (count[k] > count[hi]) hi = k;
        }
        printf(" smallest class %d: %.2f%%, largest class %d: %.2f%%\n", lo, 100.0 * (double)count[lo] / (double)n,
               hi, 100.0 * (double)count[hi] / (double)n);
    }
    free(count);
}

static int cmd_info(int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *cmd = "data info";
    int c, bad = 0;
    optind = 1;
    while (!bad && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'h') {
            usage_info(stdout);
            return GM_EXIT_OK;
        }
        bad = 1;
    }
    if (!bad && optind != argc - 1) {
        fprintf(stderr, optind >= argc ? "gmorph %s: which file? (gmorph data info FILE)\n"
                                       : "gmorph %s: one file at a time\n",
                cmd);
        bad = 1;
    }
    if (bad) {
        fprintf(stderr, "Try 'gmorph data info --help'.\n");
        return GM_EXIT_USAGE;
    }
    const char *path = argv[optind];
    gm_error err;
    gm_dataset *ds;
    if (gm_ds_open(&ds, path, &err) != GM_OK) return gm_cli_fail(cmd, NULL, &err);
    const gm_ds_info *info = gm_ds_get_info(ds);
    printf("%s\n", path);
    printf("  name    %s\n", info->name);
    printf("  source  %s\n", info->source);
    printf("  sample  %dx%dx%d %s (CxHxW), scale %g\n", info->shape.c, info->shape.h, info->shape.w,
           info->dtype == GM_DT_U8 ? "uint8" : "float32", (double)info->scale);
    printf("  splits ");
    for (int s = 0; s < GM_NSPLITS; s++) printf(" %s %ld%s", gm_split_name((gm_split)s), info->n[s], s + 1 < GM_NSPLITS ? "," : "\n");
    printf("  mean   ");
    for (int ch = 0; ch < info->shape.c; ch++) printf(" %.4f", (double)info->mean[ch]);
    printf("\n  std    ");
    for (int ch = 0; ch < info->shape.c; ch++) printf(" %.4f", (double)info->std[ch]);
    printf("\n  tasks   %d\n", info->ntasks);
    for (int t = 0; t < info->ntasks; t++) {
        printf("  task %s: %d classes\n", info->tasks[t].name, info->tasks[t].classes);
        for (int s = 0; s < GM_NSPLITS; s++)
            if (info->n[s] > 0) print_histogram(ds, t, info->tasks[t].classes, (gm_split)s, info->n[s]);
    }
    gm_ds_close(ds);
    return GM_EXIT_OK;
}

int gm_cmd_data(int argc, char **argv)
{
    if (argc < 2) {
        usage_data(stderr);
        return GM_EXIT_USAGE;
    }
    const char *what = argv[1];
    if (!strcmp(what, "-h") || !strcmp(what, "--help") || !strcmp(what, "help")) {
        usage_data(stdout);
        return GM_EXIT_OK;
    }
    for (int k = 0; k < GM_MAKE_NKINDS; k++)
        if (!strcmp(what, gm_make_kind_name((gm_make_kind)k))) return cmd_maker((gm_make_kind)k, argc - 1, argv + 1);
    if (!strcmp(what, "import")) return cmd_import(argc - 1, argv + 1);
    if (!strcmp(what, "info")) return cmd_info(argc - 1, argv + 1);
    fprintf(stderr, "gmorph data: unknown dataset or action \"%s\"\n", what);
    usage_data(stderr);
    return GM_EXIT_USAGE;
}

/*
 * A whole search on a tiny Sprites zoo: three small models (two architectures)
 * are trained, fused by the SA policy, and the best candidate must be faster
 * than the originals run one after the other and within the threshold on
 * validation data; the results table lists every candidate; the best model file
 * runs and scores what the summary says. With mutation.trunks, the first
 * candidates are the planned trunks (coordinator/gm_trunk.h), whole.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gm_ckpt.h"
#include "gm_json.h"
#include "gm_results.h"
#include "gm_make.h"
#include "gm_mfile.h"
#include "gm_models.h"
#include "gm_optim.h"
#include "gm_sched.h"
#include "gm_train.h"
#include "gm_trunk.h"
#include "test_util.h"

typedef struct {
    char dir[128];
} ctx;

static void train_model(const char *dir, const char *data, const char *task, const char *arch, int seed)
{
    gm_error err;
    gm_dataset *ds;
    assert_int_equal(gm_ds_open(&ds, data, &err), GM_OK);
    int t = gm_ds_task_index(ds, task);
    const gm_ds_info *info = gm_ds_get_info(ds);
    static gm_model m;
    const int widths[3] = {8, 16, 0};
    if (gm_model_from_name(&m, arch, widths, info->shape, info->tasks[t].classes, &err) != GM_OK) fail_msg("%s", err.msg);
    gm_backend *be;
    gm_net *net;
    gm_net_desc d = gm_model_desc(&m);
    assert_int_equal(gm_backend_cpu_create(&be, 1, &err), GM_OK);
    assert_int_equal(gm_net_create(&net, be, &d, 32, (uint64_t)seed, &err), GM_OK);
    char out[256];
    snprintf(out, sizeof out, "%s/%s.h5", dir, task);
    gm_train_opts o = {.epochs = 6, .batch = 32, .optimizer = gm_update_adam(3e-3f, 0.9f, 0.999f, 1e-8f, 0.0f),
                       .seed = (uint64_t)seed, .arch = arch, .out = out};
    gm_train_result r;
    if (gm_train_task(net, ds, t, &o, &r, &err) != GM_OK) fail_msg("%s", err.msg);
    gm_net_free(net);
    gm_backend_free(be);
    gm_ds_close(ds);
}

static int setup(void **state)
{
    ctx *c = calloc(1, sizeof *c);
    snprintf(c->dir, sizeof c->dir, "/tmp/gm_test_search_XXXXXX");
    if (!mkdtemp(c->dir)) return -1;
    char data[256];
    snprintf(data, sizeof data, "%s/sprites.h5", c->dir);
    gm_make_opts o = gm_make_defaults(GM_MAKE_SPRITES);
    o.size = 16;
    o.n[GM_SPLIT_TRAIN] = 2048;
    o.n[GM_SPLIT_VAL] = 512;
    o.n[GM_SPLIT_TEST] = 512;
    gm_error err;
    if (gm_make_sprites(data, &o, NULL, NULL, &err) != GM_OK) return -1;
    train_model(c->dir, data, "colour", "vgg11", 1);
    train_model(c->dir, data, "scale", "vgg11", 2);
    train_model(c->dir, data, "shape", "resnet8", 3);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    ctx *c = *state;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", c->dir);
    int rc = system(cmd);
    free(c);
    return rc == 0 ? 0 : -1;
}

static long count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    long n = 0;
    int ch;
    while ((ch = fgetc(f)) != EOF) n += ch == '\n';
    fclose(f);
    return n;
}

/* One line per candidate on stderr: what a failure report needs. */
static void show(void *unused, const gm_search_event *e)
{
    (void)unused;
    fprintf(stderr, "candidate %d from %d: %d nodes, %s, %d epochs, worst drop %.4f, %.4f ms (%.2fx)\n", e->id,
            e->source, e->nodes, e->status, e->epochs, e->worst_drop, e->latency_ms, e->speedup);
}

/*
 * A fine-tuned row's learning curve: a check before any step whose worst drop
 * is drop0, epochs rising to the row's, a loss from the first epoch on, and
 * the last check's accuracies are the row's.
 */
static void check_curve(const gm_ckpt_cand *r, const double *orig, int nt)
{
    const int cols = GM_CKPT_CURVE_COLS(nt);
    assert_true(r->ncurve >= 1);
    for (int i = 0; i < r->ncurve; i++) {
        const double *q = r->curve + (size_t)i * cols;
        if (i == 0) {
            assert_true(q[0] == 0 && isnan(q[1]));
            double w = -1;
            for (int t = 0; t < nt; t++) w = fmax(w, orig[t] - q[2 + t]);
            assert_true(fabs(w - r->drop0) < 1e-12);
        } else {
            assert_true(q[0] > q[-cols] && isfinite(q[1]) && q[1] > 0);
        }
    }
    const double *last = r->curve + (size_t)(r->ncurve - 1) * cols;
    assert_int_equal((int)last[0], r->epochs);
    for (int t = 0; t < nt; t++) assert_true(last[2 + t] == r->val[t]);
}

/* Every line's "curve" holds the checkpoint's curve of that candidate, to the printed digits. */
static void jsonl_curves_match(const char *path, const gm_ckpt *ck, const char *const *tasks)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[65536];
    int seen = 0;
    gm_error err;
    while (fgets(line, sizeof line, f)) {
        gm_json *j;
        if (gm_json_parse(&j, line, strlen(line), path, &err) != GM_OK) fail_msg("%s", err.msg);
        const gm_ckpt_cand *r = &ck->cand[(int)gm_json_number(gm_json_get(j, "id"))];
        const gm_json *cv = gm_json_get(j, "curve");
        assert_int_equal(cv ? (int)gm_json_len(cv) : 0, r->ncurve);
        for (int i = 0; i < r->ncurve; i++) {
            const double *q = r->curve + (size_t)i * GM_CKPT_CURVE_COLS(ck->ntasks);
            const gm_json *pt = gm_json_at(cv, (size_t)i);
            assert_true(gm_json_number(gm_json_get(pt, "epoch")) == q[0]);
            const gm_json *loss = gm_json_get(pt, "loss");
            if (isnan(q[1])) assert_int_equal(gm_json_type_of(loss), GM_JSON_NULL);
            else assert_true(fabs(gm_json_number(loss) - q[1]) <= 1e-5 * q[1]);
            for (int t = 0; t < ck->ntasks; t++)
                assert_true(fabs(gm_json_number(gm_json_get(gm_json_get(pt, "val"), tasks[t])) - q[2 + t]) < 1e-5);
        }
        seen += r->ncurve > 0;
        gm_json_free(j);
    }
    fclose(f);
    assert_true(seen >= 1);
}

/* Test accuracy of task `task` of a fused model file, scored here on the sprites set. */
static double score(const gm_mfile *m, int k, const char *data)
{
    gm_error err;
    gm_backend *be;
    gm_net *net;
    gm_dataset *ds;
    gm_net_desc d = gm_mfile_desc(m);
    assert_int_equal(gm_backend_cpu_create(&be, 1, &err), GM_OK);
    assert_int_equal(gm_net_create(&net, be, &d, 64, 1, &err), GM_OK);
    assert_int_equal(gm_mfile_to_net(m, net, &err), GM_OK);
    assert_int_equal(gm_ds_open(&ds, data, &err), GM_OK);
    gm_ds_set_normalisation(ds, m->mean, m->std);
    int out = -1, dt = gm_ds_task_index(ds, m->tasks[k].name);
    for (int o = 0; o < gm_net_noutputs(net); o++)
        if (gm_net_output_block(net, o) == m->tasks[k].head) out = o;
    double acc = NAN;
    assert_int_equal(gm_eval_tasks(net, ds, GM_SPLIT_TEST, 1, &out, &dt, 64, 0, &acc, &err), GM_OK);
    gm_ds_close(ds);
    gm_net_free(net);
    gm_backend_free(be);
    return acc;
}

/*
 * The Pareto set. The checkpoint's (kept by the sweep's own speed-ups): every
 * passed candidate outside it is beaten by a member. The files the end wrote
 * (pareto.md, speed-ups timed again): each once, a member of the kept set, none
 * beaten by another on the table's figures; each loads, and its test accuracies
 * are the table's and what scoring it here gives.
 */
static int beats(double sa, double da, double sb, double db)
{
    return sa >= sb && da <= db && (sa > sb || da < db);
}

static void check_pareto(const char *dir, const gm_ckpt *ck, const char *const *tasks, int npareto)
{
    int kept[64] = {0};
    for (int k = 0; k < ck->npareto; k++) {
        assert_true(ck->pareto_id[k] < 64 && ck->cand[ck->pareto_id[k]].status == GM_CAND_PASSED);
        kept[ck->pareto_id[k]] = 1;
    }
    for (int i = 0; i < ck->ncand; i++) {
        const gm_ckpt_cand *a = &ck->cand[i];
        if (a->status != GM_CAND_PASSED || kept[i]) continue;
        int beaten = 0;
        for (int j = 0; j < ck->ncand; j++)
            beaten |= kept[j] && beats(ck->cand[j].speedup, ck->cand[j].worst_drop, a->speedup, a->worst_drop);
        if (!beaten) fail_msg("passed candidate %d is beaten by no member of the kept Pareto set", i);
    }
    char p[400], line[1024];
    snprintf(p, sizeof p, "%s/run/pareto/pareto.md", dir);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    int rows = 0, id[64];
    double sp[64], drop[64];
    while (fgets(line, sizeof line, f)) {
        char file[64];
        double mf, test[3];
        if (rows >= 64 || sscanf(line, "| %63s | %d | %lfx | %lf | %lf | %lf | %lf | %lf |", file, &id[rows],
                                 &sp[rows], &mf, &drop[rows], &test[0], &test[1], &test[2]) != 8)
            continue;
        assert_true(id[rows] >= 0 && id[rows] < 64 && kept[id[rows]]);
        for (int j = 0; j < rows; j++) assert_int_not_equal(id[j], id[rows]);
        rows++;
        gm_mfile m = {0};
        gm_error err;
        snprintf(p, sizeof p, "%s/run/pareto/%s", dir, file);
        if (gm_mfile_load(p, &m, &err) != GM_OK) fail_msg("%s", err.msg);
        char data[300];
        snprintf(data, sizeof data, "%s/sprites.h5", dir);
        for (int t = 0; t < 3; t++) {
            const int k = gm_mfile_task_index(&m, tasks[t]);
            assert_true(k >= 0);
            assert_true(fabs(100 * m.tasks[k].test_accuracy - test[t]) < 0.006);
            assert_true(fabs(score(&m, k, data) - m.tasks[k].test_accuracy) < 1e-12);
        }
        gm_mfile_free(&m);
    }
    fclose(f);
    assert_int_equal(rows, npareto);
    assert_true(rows >= 1);
    for (int a = 0; a < rows; a++)
        for (int b = 0; b < rows; b++)
            if (a != b && beats(sp[b], drop[b], sp[a], drop[a]))
                fail_msg("Pareto file of candidate %d is beaten by candidate %d's", id[a], id[b]);
}

/* The defaults over the three models of dir, run folder dir/out, threshold 0.05. */
static void tiny_config(gm_search_config *cfg, const char *dir, const char *const *tasks, const char *out)
{
    gm_search_defaults(cfg);
    cfg->nmodels = 3;
    for (int t = 0; t < 3; t++) snprintf(cfg->models[t], sizeof cfg->models[t], "%s/%s.h5", dir, tasks[t]);
    snprintf(cfg->out, sizeof cfg->out, "%s/%s", dir, out);
    cfg->threshold = 0.05;
}

static void test_tiny_search(void **state)
{
    ctx *c = *state;
    gm_search_config cfg;
    const char *tasks[3] = {"colour", "scale", "shape"};
    tiny_config(&cfg, c->dir, tasks, "run");
    cfg.iterations = 8;
    cfg.ft_samples = 2048;
    cfg.val_samples = 512;
    cfg.ft_epochs = 8;
    cfg.lr = 3e-3;
    cfg.batch = 32;
    cfg.lat_runs = 300;
    gm_search_summary s;
    gm_error err;
    if (gm_search_run(&cfg, show, NULL, NULL, &s, &err) != GM_OK) fail_msg("%s", err.msg);
    fprintf(stderr, "originals: val %.4f %.4f %.4f, %.4f ms\n", s.orig_val[0], s.orig_val[1], s.orig_val[2],
            s.base_latency_ms);
    assert_int_equal(s.ntasks, 3);
    assert_true(s.candidates >= 1);
    assert_true(s.passed >= 1);
    assert_true(s.best_id >= 0);
    /*
     * Faster than the originals one by one, timed alternately with them (so a
     * busy machine slows both alike), and every task within the threshold on
     * validation data.
     */
    assert_true(s.best_latency_ms < s.best_base_ms);
    assert_true(s.speedup > 1.0);
    for (int t = 0; t < 3; t++) assert_true(s.orig_val[t] - s.best_val[t] <= cfg.threshold + 1e-12);
    /* One table row per candidate, plus the header. */
    char p[300];
    snprintf(p, sizeof p, "%s/run/candidates.csv", c->dir);
    assert_int_equal(count_lines(p), s.candidates + 1);
    snprintf(p, sizeof p, "%s/run/candidates.jsonl", c->dir);
    assert_int_equal(count_lines(p), s.candidates);
    /*
     * The checkpoint's rows: every fine-tuned candidate has its drop before any
     * step (its final drop when it passed with none); gm_search_run draws
     * merges without the guide (gmorph-search opens it), so nothing predicted.
     */
    gm_ckpt ck;
    snprintf(p, sizeof p, "%s/run/search.h5", c->dir);
    if (gm_ckpt_load(p, &ck, &err) != GM_OK) fail_msg("%s", err.msg);
    for (int i = 0; i < ck.ncand; i++) {
        const gm_ckpt_cand *r = &ck.cand[i];
        assert_true(isnan(r->predicted));
        if (r->status != GM_CAND_PASSED && r->status != GM_CAND_FAILED && r->status != GM_CAND_ABORTED) continue;
        assert_true(isfinite(r->drop0));
        if (r->epochs == 0) assert_true(r->drop0 == r->worst_drop);
        check_curve(r, s.orig_val, 3);
    }
    snprintf(p, sizeof p, "%s/run/candidates.jsonl", c->dir);
    jsonl_curves_match(p, &ck, tasks);
    check_pareto(c->dir, &ck, tasks, s.npareto);
    gm_ckpt_free(&ck);
    /* best.h5 is a runnable fused model with three tasks and the summary's test accuracies. */
    gm_mfile m = {0};
    snprintf(p, sizeof p, "%s/run/best.h5", c->dir);
    if (gm_mfile_load(p, &m, &err) != GM_OK) fail_msg("%s", err.msg);
    assert_int_equal(m.ntasks, 3);
    for (int t = 0; t < 3; t++) {
        int k = gm_mfile_task_index(&m, tasks[t]);
        assert_true(k >= 0);
        assert_true(fabs(m.tasks[k].test_accuracy - s.best_test[t]) < 1e-12);
    }
    gm_mfile_free(&m);
}

/* A sweep where nothing passed: summary.md says so, with no NaN and no candidate -1. */
static void test_summary_nothing_passed(void **state)
{
    ctx *c = *state;
    gm_search_config cfg;
    gm_search_defaults(&cfg);
    gm_search_summary s = {.ntasks = 2, .base_latency_ms = 1.5, .best_id = -1, .candidates = 3, .failed = 3,
                           .best_latency_ms = NAN, .best_base_ms = NAN, .speedup = NAN, .found_speedup = NAN};
    for (int t = 0; t < 2; t++) {
        snprintf(s.task[t], sizeof s.task[t], "task%d", t);
        s.orig_val[t] = s.orig_test[t] = 0.9;
        s.best_val[t] = s.best_test[t] = NAN;
    }
    char dir[300], path[320], text[4096];
    snprintf(dir, sizeof dir, "%s/none", c->dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    gm_error err;
    if (gm_results_summary(dir, &cfg, &s, &err) != GM_OK) fail_msg("%s", err.msg);
    snprintf(path, sizeof path, "%s/summary.md", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    const size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    assert_non_null(strstr(text, "no candidate passed"));
    assert_null(strstr(text, "nan"));
    assert_null(strstr(text, "candidate -1"));
}

/* The first candidates of a sweep with trunks are the plan's, in order, and training them decides like any other. */
static void test_trunks_first(void **state)
{
    ctx *c = *state;
    gm_search_config cfg;
    const char *tasks[3] = {"colour", "scale", "shape"};
    tiny_config(&cfg, c->dir, tasks, "trunks");
    cfg.iterations = 3;
    cfg.trunks = 2;
    cfg.ft_samples = 256;
    cfg.val_samples = 128;
    cfg.ft_epochs = 1;
    cfg.batch = 32;
    cfg.lat_runs = 5;
    gm_search_summary s;
    gm_error err;
    if (gm_search_run(&cfg, show, NULL, NULL, &s, &err) != GM_OK) fail_msg("%s", err.msg);
    /* the plan, made here from the same models (gm_search_run opens no guide) */
    gm_mfile m[3];
    const gm_mfile *mp[3];
    gm_fgraph *orig = malloc(sizeof *orig), *g = malloc(sizeof *g);
    for (int t = 0; t < 3; t++) {
        if (gm_mfile_load(cfg.models[t], &m[t], &err) != GM_OK) fail_msg("%s", err.msg);
        mp[t] = &m[t];
    }
    assert_ok(gm_fgraph_from_models(orig, mp, 3, &err), err);
    gm_trunk plan[GM_TRUNK_MAX];
    int n = 0;
    assert_ok(gm_trunk_plan(orig, NULL, cfg.trunks, plan, &n, &err), err);
    assert_int_equal(n, 2); /* the two VGG-11s share; the ResNet keeps its path */
    gm_ckpt ck;
    char p[300];
    snprintf(p, sizeof p, "%s/trunks/search.h5", c->dir);
    if (gm_ckpt_load(p, &ck, &err) != GM_OK) fail_msg("%s", err.msg);
    assert_true(ck.ncand >= 3);
    for (int k = 0; k < n; k++) {
        *g = *orig;
        assert_ok(gm_trunk_apply(g, plan[k], &err), err);
        gm_fgraph_project_seams(g); /* as the search does with stitched shortcuts */
        int32_t enc[GM_JOB_ENC_MAX];
        const int len = gm_fgraph_encode(g, enc, GM_JOB_ENC_MAX);
        const gm_ckpt_cand *r = &ck.cand[k];
        assert_int_equal(r->iteration, k);
        assert_int_equal(r->source, -1);
        assert_int_equal(r->enc_len, len);
        assert_memory_equal(r->enc, enc, sizeof(int32_t) * (size_t)len);
        assert_true(r->status == GM_CAND_PASSED || r->status == GM_CAND_FAILED || r->status == GM_CAND_ABORTED);
    }
    gm_ckpt_free(&ck);
    for (int t = 0; t < 3; t++) gm_mfile_free(&m[t]);
    free(g);
    free(orig);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_summary_nothing_passed), cmocka_unit_test(test_tiny_search),
                                       cmocka_unit_test(test_trunks_first)};
    return cmocka_run_group_tests(tests, setup, teardown);
}

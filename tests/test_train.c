/*
 * Training a task of a dataset file: a tiny model on a tiny Sprites set learns
 * (loss falls, accuracy far above chance); an interrupted training resumed from
 * its checkpoint ends with exactly the weights of an uninterrupted one; resuming
 * with other options is refused by name; bad set-ups are reported.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gm_h5.h"
#include "gm_make.h"
#include "gm_mfile.h"
#include "gm_models.h"
#include "gm_optim.h"
#include "gm_train.h"
#include "test_util.h"

typedef struct {
    char dir[200], data[300], out[300], ckpt[300];
} paths;

static int setup(void **state)
{
    paths *p = calloc(1, sizeof *p);
    snprintf(p->dir, sizeof p->dir, "/tmp/gm_test_train_XXXXXX");
    if (!mkdtemp(p->dir)) return -1;
    snprintf(p->data, sizeof p->data, "%s/sprites.h5", p->dir);
    snprintf(p->out, sizeof p->out, "%s/model.h5", p->dir);
    snprintf(p->ckpt, sizeof p->ckpt, "%s/model.ckpt.h5", p->dir);
    gm_make_opts o = gm_make_defaults(GM_MAKE_SPRITES);
    o.size = 16;
    o.n[GM_SPLIT_TRAIN] = 2048;
    o.n[GM_SPLIT_VAL] = 256;
    o.n[GM_SPLIT_TEST] = 256;
    gm_error err;
    if (gm_make_sprites(p->data, &o, NULL, NULL, &err) != GM_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    *state = p;
    return 0;
}

static int teardown(void **state)
{
    paths *p = *state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p->dir);
    if (system(cmd) != 0) return -1;
    free(p);
    return 0;
}

/* A trained net and what it needs; built fresh for every run. */
typedef struct {
    gm_model model;
    gm_backend *be;
    gm_net *net;
    gm_dataset *ds;
    int task;
} rig;

static void rig_init(rig *r, const paths *p, const char *task, int batch)
{
    gm_error err;
    const int widths[3] = {8, 16, 0};
    assert_int_equal(gm_ds_open(&r->ds, p->data, &err), GM_OK);
    r->task = gm_ds_task_index(r->ds, task);
    assert_true(r->task >= 0);
    const gm_ds_info *info = gm_ds_get_info(r->ds);
    if (gm_model_from_name(&r->model, "vgg11", widths, info->shape, info->tasks[r->task].classes, &err) != GM_OK)
        fail_msg("%s", err.msg);
    gm_net_desc d = gm_model_desc(&r->model);
    assert_int_equal(gm_backend_cpu_create(&r->be, 1, &err), GM_OK);
    assert_int_equal(gm_net_create(&r->net, r->be, &d, batch, 7, &err), GM_OK);
}

static void rig_free(rig *r)
{
    gm_net_free(r->net);
    gm_backend_free(r->be);
    gm_ds_close(r->ds);
}

static gm_train_opts opts_for(const paths *p, int epochs)
{
    return (gm_train_opts){.epochs = epochs, .batch = 32, .optimizer = gm_update_adam(3e-3f, 0.9f, 0.999f, 1e-8f, 0.0f),
                           .seed = 5, .arch = "vgg11 8,16", .out = p->out, .checkpoint = p->ckpt,
                           .checkpoint_every_s = 0, .resume = 1, .report_every_s = 0};
}

static void read_history(const char *path, const char *name, double *v, int n)
{
    hid_t f, g;
    gm_error err;
    hsize_t d = (hsize_t)n;
    assert_int_equal(gm_h5_open(&f, path, 0, &err), GM_OK);
    assert_int_equal(gm_h5_group_open(f, "training", &g, &err), GM_OK);
    if (gm_h5_read(g, name, H5T_NATIVE_DOUBLE, 1, &d, v, &err) != GM_OK) fail_msg("%s", err.msg);
    H5Gclose(g);
    gm_h5_close_file(f);
}

static void test_learns(void **state)
{
    paths *p = *state;
    rig r;
    rig_init(&r, p, "colour", 32);
    gm_train_opts o = opts_for(p, 5);
    o.checkpoint = NULL;
    gm_train_result res;
    gm_error err;
    if (gm_train_task(r.net, r.ds, r.task, &o, &res, &err) != GM_OK) fail_msg("%s", err.msg);
    assert_int_equal(res.epochs_done, 5);
    assert_false(res.interrupted);
    assert_true(res.best_epoch >= 1 && res.best_epoch <= 5);
    double loss[5], val[5];
    read_history(p->out, "loss", loss, 5);
    read_history(p->out, "val_accuracy", val, 5);
    /* 6 colours: chance is 16.7%; the loss starts near ln 6 = 1.79 and must fall clearly. */
    assert_true(loss[4] < 0.6 * loss[0]);
    assert_true(res.test_acc > 0.6);
    assert_true(val[res.best_epoch - 1] >= val[0]);
    /* The file holds the best epoch's weights, scored on test; eval agrees. */
    gm_mfile m = {0};
    assert_int_equal(gm_mfile_load(p->out, &m, &err), GM_OK);
    assert_string_equal(m.tasks[0].name, "colour");
    assert_true(fabs(m.tasks[0].test_accuracy - res.test_acc) < 1e-12);
    assert_true(fabs(m.tasks[0].val_accuracy - val[res.best_epoch - 1]) < 1e-12);
    int out = 0;
    double acc;
    assert_int_equal(gm_mfile_to_net(&m, r.net, &err), GM_OK);
    assert_int_equal(gm_eval_tasks(r.net, r.ds, GM_SPLIT_TEST, 1, &out, &r.task, 32, 0, &acc, &err), GM_OK);
    assert_true(fabs(acc - res.test_acc) < 1e-12);
    gm_mfile_free(&m);
    rig_free(&r);
}

/* Stops the run from inside: what SIGTERM does through the same flag. */
typedef struct {
    long at;
    volatile sig_atomic_t *flag;
} stopper;

static void stop_at(void *ctx, const gm_train_progress *pr)
{
    stopper *s = ctx;
    if (pr->step >= s->at) *s->flag = 1;
}

static void load_params(const char *path, gm_mfile *m)
{
    gm_error err;
    if (gm_mfile_load(path, m, &err) != GM_OK) fail_msg("%s", err.msg);
}

static void test_resume_is_exact(void **state)
{
    paths *p = *state;
    gm_error err;
    gm_train_result res;
    /* Uninterrupted: 2 epochs of 32 steps. */
    rig a;
    rig_init(&a, p, "shape", 32);
    gm_train_opts o = opts_for(p, 2);
    unlink(p->ckpt);
    assert_int_equal(gm_train_task(a.net, a.ds, a.task, &o, &res, &err), GM_OK);
    gm_mfile whole = {0};
    load_params(p->out, &whole);
    rig_free(&a);
    unlink(p->ckpt);
    unlink(p->out);

    /* Interrupted in the middle of epoch 1 (inside, not at a boundary), then in epoch 2, then finished. */
    const long stops[2] = {13, 45};
    for (int k = 0; k < 3; k++) {
        rig b;
        rig_init(&b, p, "shape", 32);
        volatile sig_atomic_t flag = 0;
        stopper s = {k < 2 ? stops[k] : 1L << 40, &flag};
        gm_train_opts ob = opts_for(p, 2);
        ob.stop = &flag;
        ob.progress = stop_at;
        ob.ctx = &s;
        if (gm_train_task(b.net, b.ds, b.task, &ob, &res, &err) != GM_OK) fail_msg("%s", err.msg);
        assert_int_equal(res.interrupted, k < 2);
        assert_int_equal(res.resumed, k > 0);
        if (k > 0) assert_int_equal(res.start_step, stops[k - 1]);
        rig_free(&b);
    }
    gm_mfile resumed = {0};
    load_params(p->out, &resumed);
    assert_int_equal(resumed.nparams, whole.nparams);
    assert_int_equal(resumed.nbuffers, whole.nbuffers);
    assert_memory_equal(resumed.params, whole.params, sizeof(float) * whole.nparams);
    assert_memory_equal(resumed.buffers, whole.buffers, sizeof(float) * whole.nbuffers);
    assert_true(resumed.tasks[0].test_accuracy == whole.tasks[0].test_accuracy);
    gm_mfile_free(&whole);
    gm_mfile_free(&resumed);

    /* The finished checkpoint with other options: refused, naming the option. */
    rig c;
    rig_init(&c, p, "shape", 64);
    gm_train_opts oc = opts_for(p, 2);
    oc.batch = 64;
    assert_int_equal(gm_train_task(c.net, c.ds, c.task, &oc, &res, &err), GM_EINVAL);
    assert_non_null(strstr(err.msg, "--batch 32"));
    assert_non_null(strstr(err.msg, "--fresh"));
    rig_free(&c);
}

static void test_bad_setups(void **state)
{
    paths *p = *state;
    gm_error err;
    gm_train_result res;
    rig r;
    rig_init(&r, p, "shape", 32);
    gm_train_opts o = opts_for(p, 1);
    o.checkpoint = NULL;
    /* The net has 4 logits; "colour" has 6 classes. */
    int colour = gm_ds_task_index(r.ds, "colour");
    assert_int_equal(gm_train_task(r.net, r.ds, colour, &o, &res, &err), GM_ESHAPE);
    assert_non_null(strstr(err.msg, "6 classes"));
    o.limit = 20; /* fewer samples than a batch */
    assert_int_equal(gm_train_task(r.net, r.ds, r.task, &o, &res, &err), GM_EINVAL);
    assert_non_null(strstr(err.msg, "fewer than one batch"));
    rig_free(&r);

    /* A dataset without a train split. */
    char path[280];
    snprintf(path, sizeof path, "%s/test-only.h5", p->dir);
    gm_make_opts mo = gm_make_defaults(GM_MAKE_SPRITES);
    mo.size = 16;
    mo.n[GM_SPLIT_TRAIN] = mo.n[GM_SPLIT_VAL] = 0;
    mo.n[GM_SPLIT_TEST] = 64;
    assert_int_equal(gm_make_sprites(path, &mo, NULL, NULL, &err), GM_OK);
    paths q = *p;
    snprintf(q.data, sizeof q.data, "%s", path);
    rig_init(&r, &q, "shape", 32);
    assert_int_equal(gm_train_task(r.net, r.ds, r.task, &o, &res, &err), GM_EFORMAT);
    assert_non_null(strstr(err.msg, "train"));
    rig_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_learns),
        cmocka_unit_test(test_resume_is_exact),
        cmocka_unit_test(test_bad_setups),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

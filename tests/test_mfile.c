/*
 * Model files: a trained VGG, a trained ResNet and a two-head tree read back
 * bit for bit (weights, BN statistics, eval outputs of a net rebuilt from the
 * file); metadata survives the trip; damaged, foreign, older and newer files
 * are refused with a message naming the file and the block, op or dataset;
 * no HDF5 handle and (under LSan) no memory leaks on any path; h5py reads the
 * layout the header documents.
 */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>

#include "gm_h5.h"
#include "gm_mfile.h"
#include "gm_models.h"
#include "gm_optim.h"
#include "test_util.h"

/* Every HDF5 id our code opened is closed again (a leaked id keeps a file open). */
static void assert_no_open_h5(void) { assert_int_equal(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0); }

/* ---- temporary directory --------------------------------------------------- */

typedef struct {
    char dir[256];
} tmpdir;

static void tmpdir_make(tmpdir *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/gm_test_mfile_XXXXXX");
    assert_non_null(mkdtemp(t->dir));
}

static void tmpdir_path(const tmpdir *t, const char *name, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s", t->dir, name);
}

/* The directory is flat: remove its files, then it. */
static void tmpdir_remove(tmpdir *t)
{
    DIR *d = opendir(t->dir);
    assert_non_null(d);
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        tmpdir_path(t, e->d_name, p, sizeof p);
        unlink(p);
    }
    closedir(d);
    assert_int_equal(rmdir(t->dir), 0);
}

static unsigned char *slurp(const char *path, long *size)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)*size + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)*size, f), (size_t)*size);
    fclose(f);
    return b;
}

static void spit(const char *path, const unsigned char *b, long size)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, (size_t)size, f), (size_t)size);
    assert_int_equal(fclose(f), 0);
}

static void copy_file(const char *from, const char *to)
{
    long n;
    unsigned char *b = slurp(from, &n);
    spit(to, b, n);
    free(b);
}

/* ---- nets ------------------------------------------------------------------- */

static gm_net *make_net(gm_backend *be, const gm_net_desc *d, int batch, uint64_t seed)
{
    gm_net *net;
    gm_error err;
    assert_ok(gm_net_create(&net, be, d, batch, seed, &err), err);
    return net;
}

/*
 * A few Adam steps on random inputs and labels for every output: weights move
 * away from their initialisation and BN running statistics from (0, 1).
 */
static void train_steps(gm_net *net, gm_shape in, int batch, int steps, uint64_t seed)
{
    gm_error err;
    gm_optim *opt;
    assert_ok(gm_optim_create(&opt, gm_net_backend(net), gm_update_adam(1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f),
                              gm_net_nparams(net), &err),
              err);
    gm_rng rng;
    gm_rng_seed(&rng, seed);
    size_t numel = gm_shape_numel(in);
    float *x = malloc(sizeof(float) * numel * (size_t)batch);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)batch);
    assert_true(x && y);
    for (int s = 0; s < steps; s++) {
        gm_fill_uniform(x, numel * (size_t)batch, &rng, -1.0f, 2.0f);
        assert_ok(gm_net_forward(net, x, batch, 1, &err), err);
        for (int k = 0; k < gm_net_noutputs(net); k++) {
            int classes = (int)gm_shape_numel(gm_net_output_shape(net, k));
            for (int i = 0; i < batch; i++) y[i] = (int32_t)gm_rng_below(&rng, (uint32_t)classes);
            float loss;
            assert_ok(gm_net_loss(net, k, GM_LOSS_CROSS_ENTROPY, NULL, y, 1.0f, &loss, &err), err);
        }
        gm_net_zero_grad(net);
        assert_ok(gm_net_backward(net, &err), err);
        gm_optim_step(opt, gm_net_params(net), gm_net_grads(net));
    }
    free(x);
    free(y);
    gm_optim_free(opt);
}

/* Output k of the last forward, copied to the host (caller frees). */
static float *output_host(gm_net *net, int k, int batch)
{
    size_t n = (size_t)batch * gm_shape_numel(gm_net_output_shape(net, k));
    float *h = malloc(sizeof(float) * n + 1);
    assert_non_null(h);
    gm_backend *be = gm_net_backend(net);
    be->to_host(be, h, gm_net_output(net, k), sizeof(float) * n);
    return h;
}

/* Some BN running mean moved away from 0: the statistics are non-trivial. */
static int buffers_trained(gm_net *net)
{
    size_t n = gm_net_nbuffers(net);
    float *b = malloc(sizeof(float) * n + 1);
    assert_non_null(b);
    gm_backend *be = gm_net_backend(net);
    be->to_host(be, b, gm_net_buffers(net), sizeof(float) * n);
    int moved = 0;
    for (size_t i = 0; i < n; i++) moved |= b[i] != 0.0f && b[i] != 1.0f;
    free(b);
    return moved;
}

/*
 * Saves net, loads the file into a fresh net (another seed: different initial
 * weights) and checks weights, buffers and every eval output are bit-identical.
 * Returns the loaded model for further checks (caller frees).
 */
static void round_trip(gm_backend *be, gm_net *net, gm_shape in, const char *path, gm_mfile *loaded)
{
    enum { B = 5 };
    gm_error err;
    gm_mfile m;
    assert_ok(gm_mfile_from_net(&m, net, &err), err);
    snprintf(m.arch, sizeof m.arch, "round trip");
    assert_ok(gm_mfile_save(path, &m, &err), err);
    assert_no_open_h5();
    assert_ok(gm_mfile_load(path, loaded, &err), err);
    assert_no_open_h5();

    assert_int_equal(loaded->nparams, m.nparams);
    assert_int_equal(loaded->nbuffers, m.nbuffers);
    assert_memory_equal(loaded->params, m.params, sizeof(float) * m.nparams);
    assert_memory_equal(loaded->buffers, m.buffers, sizeof(float) * m.nbuffers);
    assert_memory_equal(loaded->parent, m.parent, sizeof(int) * (size_t)m.nblocks);

    gm_net_desc d = gm_mfile_desc(loaded);
    gm_net *copy = make_net(be, &d, B, 777);
    assert_int_equal(gm_net_noutputs(copy), gm_net_noutputs(net));

    gm_rng rng;
    gm_rng_seed(&rng, 99);
    size_t numel = gm_shape_numel(in);
    float *x = malloc(sizeof(float) * numel * B);
    assert_non_null(x);
    gm_fill_uniform(x, numel * B, &rng, -1.0f, 2.0f);
    assert_ok(gm_net_forward(net, x, B, 0, &err), err);
    /* Before loading the copy computes something else: the comparison below means something. */
    assert_ok(gm_net_forward(copy, x, B, 0, &err), err);
    float *want0 = output_host(net, 0, B), *before = output_host(copy, 0, B);
    size_t n0 = (size_t)B * gm_shape_numel(gm_net_output_shape(net, 0));
    assert_true(memcmp(want0, before, sizeof(float) * n0) != 0);
    free(before);
    free(want0);

    assert_ok(gm_mfile_to_net(loaded, copy, &err), err);
    assert_ok(gm_net_forward(copy, x, B, 0, &err), err);
    for (int k = 0; k < gm_net_noutputs(net); k++) {
        size_t n = (size_t)B * gm_shape_numel(gm_net_output_shape(net, k));
        float *want = output_host(net, k, B), *got = output_host(copy, k, B);
        for (size_t i = 0; i < n; i++) assert_true(isfinite(want[i]));
        assert_memory_equal(got, want, sizeof(float) * n);
        free(want);
        free(got);
    }
    free(x);
    gm_net_free(copy);
    gm_mfile_free(&m);
}

static void trained_model_round_trip(const char *arch, gm_shape in, int classes)
{
    const int widths[4] = {8, 16, 0, 0};
    static gm_model model;
    gm_error err;
    assert_ok(gm_model_from_name(&model, arch, widths, in, classes, &err), err);
    gm_backend *be;
    assert_ok(gm_backend_cpu_create(&be, 2, &err), err);
    gm_net_desc d = gm_model_desc(&model);
    gm_net *net = make_net(be, &d, 8, 1);
    train_steps(net, in, 8, 3, 5);
    assert_true(buffers_trained(net));

    tmpdir td;
    tmpdir_make(&td);
    char path[512];
    tmpdir_path(&td, "model.h5", path, sizeof path);
    gm_mfile loaded;
    round_trip(be, net, in, path, &loaded);
    assert_int_equal(loaded.nblocks, model.nblocks);
    assert_int_equal(loaded.ntasks, 1);
    assert_int_equal(loaded.tasks[0].head, model.nblocks - 1);
    assert_int_equal(loaded.tasks[0].classes, classes);
    for (int b = 0; b < model.nblocks; b++) {
        assert_int_equal(loaded.parent[b], b - 1);
        assert_int_equal(loaded.blocks[b].kind, model.blocks[b].kind);
        assert_int_equal(loaded.blocks[b].layer_id, model.blocks[b].layer_id);
        assert_int_equal(loaded.blocks[b].model_id, model.blocks[b].model_id);
    }
    gm_mfile_free(&loaded);
    assert_null(loaded.params); /* free leaves an empty model */
    tmpdir_remove(&td);
    gm_net_free(net);
    gm_backend_free(be);
}

static void test_vgg_round_trip(void **state)
{
    (void)state;
    trained_model_round_trip("vgg11", (gm_shape){1, 28, 28}, 10);
}

static void test_resnet_round_trip(void **state)
{
    (void)state;
    /* ResNet blocks: two-input ADD ops, 1x1 shortcuts with their own BN. */
    trained_model_round_trip("resnet10", (gm_shape){3, 16, 16}, 5);
}

/*
 * Two chains sharing a prefix: block 0 is shared, blocks 1-2 are task A
 * (conv, head), blocks 3-4 task B (pool, head).
 */
static void tree_desc(gm_block *blocks, int *parent, gm_shape *in)
{
    *in = (gm_shape){2, 10, 10};
    blocks[0] = gm_block_conv(2, 4, 3, 1, 1, 1, 1);
    blocks[1] = gm_block_conv(4, 8, 3, 2, 1, 1, 1);
    blocks[2] = gm_block_head((gm_shape){8, 5, 5}, 3);
    blocks[3] = gm_block_maxpool(2, 2);
    blocks[4] = gm_block_head((gm_shape){4, 5, 5}, 4);
    const int p[5] = {-1, 0, 1, 0, 3};
    for (int b = 0; b < 5; b++) {
        blocks[b].model_id = b < 3 ? 0 : 1;
        blocks[b].layer_id = b < 3 ? b : b - 2;
        parent[b] = p[b];
    }
}

static void test_tree_round_trip(void **state)
{
    (void)state;
    gm_block blocks[5];
    int parent[5];
    gm_shape in;
    tree_desc(blocks, parent, &in);
    gm_error err;
    gm_backend *be;
    assert_ok(gm_backend_cpu_create(&be, 2, &err), err);
    gm_net_desc d = {in, 5, blocks, parent};
    gm_net *net = make_net(be, &d, 6, 3);
    assert_int_equal(gm_net_noutputs(net), 2);
    train_steps(net, in, 6, 4, 8);
    assert_true(buffers_trained(net));

    tmpdir td;
    tmpdir_make(&td);
    char path[512];
    tmpdir_path(&td, "tree.h5", path, sizeof path);
    gm_mfile loaded;
    round_trip(be, net, in, path, &loaded);
    assert_int_equal(loaded.ntasks, 2);
    assert_int_equal(loaded.tasks[0].head, 2);
    assert_int_equal(loaded.tasks[1].head, 4);
    assert_int_equal(loaded.tasks[0].classes, 3);
    assert_int_equal(loaded.tasks[1].classes, 4);
    assert_string_equal(loaded.tasks[0].name, "task0");
    assert_string_equal(loaded.tasks[1].name, "task1");
    assert_memory_equal(loaded.parent, parent, sizeof parent);
    for (int b = 0; b < 5; b++) {
        assert_int_equal(loaded.blocks[b].model_id, blocks[b].model_id);
        assert_int_equal(loaded.blocks[b].layer_id, blocks[b].layer_id);
    }
    gm_mfile_free(&loaded);
    tmpdir_remove(&td);
    gm_net_free(net);
    gm_backend_free(be);
}

/*
 * Adapters as the fusion search builds them: CUSTOM blocks of upsample or
 * avgpool and a 1x1 convolution, plus upsampling inside a residual. Block 0
 * conv (2->4, 8x8); block 1 upsample x3 + conv1x1 (4->6, 24x24); block 2 head A;
 * block 3 conv1x1, avgpool, upsample x2, add (4x8x8); block 4 avgpool + conv1x1
 * (4->5, 4x4); block 5 head B.
 */
static void adapter_desc(gm_block *blocks, int *parent, gm_shape *in)
{
    gm_error err;
    *in = (gm_shape){2, 8, 8};
    blocks[0] = gm_block_conv(2, 4, 3, 1, 1, 1, 1);
    gm_block up = gm_block_empty(GM_BLOCK_CUSTOM);
    assert_ok(gm_block_push(&up, gm_op_upsample(3), -1, -1, &err), err);
    assert_ok(gm_block_push(&up, gm_op_conv2d(4, 6, 1, 1, 0, 1), 0, -1, &err), err);
    blocks[1] = up;
    blocks[2] = gm_block_head((gm_shape){6, 24, 24}, 3);
    gm_block res = gm_block_empty(GM_BLOCK_CUSTOM);
    assert_ok(gm_block_push(&res, gm_op_conv2d(4, 4, 1, 1, 0, 0), -1, -1, &err), err);
    assert_ok(gm_block_push(&res, gm_op_avgpool2d(2, 2, 0), 0, -1, &err), err);
    assert_ok(gm_block_push(&res, gm_op_upsample(2), 1, -1, &err), err);
    assert_ok(gm_block_push(&res, gm_op_add(), 2, 0, &err), err);
    blocks[3] = res;
    gm_block down = gm_block_empty(GM_BLOCK_CUSTOM);
    assert_ok(gm_block_push(&down, gm_op_avgpool2d(2, 2, 0), -1, -1, &err), err);
    assert_ok(gm_block_push(&down, gm_op_conv2d(4, 5, 1, 1, 0, 1), 0, -1, &err), err);
    blocks[4] = down;
    blocks[5] = gm_block_head((gm_shape){5, 4, 4}, 4);
    const int p[6] = {-1, 0, 1, 0, 3, 4};
    memcpy(parent, p, sizeof p);
}

static void test_adapter_round_trip(void **state)
{
    (void)state;
    gm_block blocks[6];
    int parent[6];
    gm_shape in;
    adapter_desc(blocks, parent, &in);
    gm_error err;
    gm_backend *be;
    assert_ok(gm_backend_cpu_create(&be, 2, &err), err);
    gm_net_desc d = {in, 6, blocks, parent};
    gm_net *net = make_net(be, &d, 6, 3);
    assert_int_equal(gm_net_noutputs(net), 2);
    train_steps(net, in, 6, 3, 8);

    tmpdir td;
    tmpdir_make(&td);
    char path[512];
    tmpdir_path(&td, "adapters.h5", path, sizeof path);
    gm_mfile loaded;
    round_trip(be, net, in, path, &loaded);
    assert_int_equal(loaded.nblocks, 6);
    assert_memory_equal(loaded.parent, parent, sizeof parent);
    for (int b = 0; b < 6; b++) {
        assert_int_equal(loaded.blocks[b].kind, blocks[b].kind);
        assert_int_equal(loaded.blocks[b].nops, blocks[b].nops);
        for (int i = 0; i < blocks[b].nops; i++) {
            assert_int_equal(loaded.blocks[b].ops[i].kind, blocks[b].ops[i].kind);
            assert_int_equal(loaded.blocks[b].src[i][0], blocks[b].src[i][0]);
            assert_int_equal(loaded.blocks[b].src[i][1], blocks[b].src[i][1]);
        }
    }
    assert_int_equal(loaded.blocks[1].ops[0].kind, GM_OP_UPSAMPLE);
    assert_int_equal(loaded.blocks[1].ops[0].p.upsample.factor, 3);
    assert_int_equal(loaded.blocks[3].ops[2].p.upsample.factor, 2);
    gm_mfile_free(&loaded);

    /* A net whose adapter upsamples by another factor (and whose head fits it) is another structure. */
    adapter_desc(blocks, parent, &in);
    blocks[1].ops[0].p.upsample.factor = 2;
    blocks[2] = gm_block_head((gm_shape){6, 16, 16}, 3);
    gm_net *other = make_net(be, &d, 2, 1);
    gm_mfile m;
    assert_ok(gm_mfile_load(path, &m, &err), err);
    assert_int_equal(gm_mfile_to_net(&m, other, &err), GM_EINVAL);
    assert_msg_has(err, "block 001 op00 differs");
    gm_net_free(other);
    gm_mfile_free(&m);
    assert_no_open_h5();
    tmpdir_remove(&td);
    gm_net_free(net);
    gm_backend_free(be);
}

/* The tree as a model with every metadata field set to something distinctive. */
static void tree_model(gm_mfile *m, gm_backend **be, gm_net **net)
{
    gm_block blocks[5];
    int parent[5];
    gm_shape in;
    tree_desc(blocks, parent, &in);
    gm_error err;
    assert_ok(gm_backend_cpu_create(be, 1, &err), err);
    gm_net_desc d = {in, 5, blocks, parent};
    *net = make_net(*be, &d, 2, 4);
    assert_ok(gm_mfile_from_net(m, *net, &err), err);
}

static void test_metadata_round_trip(void **state)
{
    (void)state;
    gm_mfile m;
    gm_backend *be;
    gm_net *net;
    tree_model(&m, &be, &net);
    /* What from_net fills in. */
    assert_string_equal(m.arch, "");
    assert_int_equal(m.input.c, 2);
    assert_int_equal(m.input.h, 10);
    assert_int_equal(m.ntasks, 2);
    for (int k = 0; k < 2; k++) {
        assert_string_equal(m.tasks[k].metric, "accuracy");
        assert_string_equal(m.tasks[k].dataset, "");
        assert_true(isnan(m.tasks[k].val_accuracy) && isnan(m.tasks[k].test_accuracy));
    }
    for (int c = 0; c < 2; c++) {
        assert_true(m.mean[c] == 0.0f);
        assert_true(m.std[c] == 1.0f);
    }
    /* What a caller fills in. */
    snprintf(m.arch, sizeof m.arch, "fused vgg11 8,16 + resnet10 8,16");
    snprintf(m.tasks[0].name, sizeof m.tasks[0].name, "category");
    snprintf(m.tasks[0].dataset, sizeof m.tasks[0].dataset, "/data/multi-fashion.h5");
    m.tasks[0].val_accuracy = 0.8125;
    m.tasks[0].test_accuracy = NAN;
    snprintf(m.tasks[1].name, sizeof m.tasks[1].name, "colour");
    m.tasks[1].val_accuracy = NAN;
    m.tasks[1].test_accuracy = 1.0 / 3.0;
    m.mean[0] = 0.2860f;
    m.mean[1] = -1.5f;
    m.std[0] = 0.3530f;
    m.std[1] = 1e-3f;

    tmpdir td;
    tmpdir_make(&td);
    char path[512];
    tmpdir_path(&td, "meta.h5", path, sizeof path);
    gm_error err;
    assert_ok(gm_mfile_save(path, &m, &err), err);
    gm_mfile r;
    assert_ok(gm_mfile_load(path, &r, &err), err);
    assert_string_equal(r.arch, m.arch);
    assert_int_equal(r.input.c, 2);
    assert_int_equal(r.input.h, 10);
    assert_int_equal(r.input.w, 10);
    assert_memory_equal(r.mean, m.mean, sizeof(float) * 2);
    assert_memory_equal(r.std, m.std, sizeof(float) * 2);
    assert_int_equal(r.ntasks, 2);
    for (int k = 0; k < 2; k++) {
        assert_string_equal(r.tasks[k].name, m.tasks[k].name);
        assert_string_equal(r.tasks[k].metric, "accuracy");
        assert_string_equal(r.tasks[k].dataset, m.tasks[k].dataset);
        assert_int_equal(r.tasks[k].classes, m.tasks[k].classes);
        assert_int_equal(r.tasks[k].head, m.tasks[k].head);
    }
    assert_true(r.tasks[0].val_accuracy == 0.8125 && isnan(r.tasks[0].test_accuracy));
    assert_true(isnan(r.tasks[1].val_accuracy) && r.tasks[1].test_accuracy == 1.0 / 3.0);
    assert_int_equal(gm_mfile_task_index(&r, "colour"), 1);
    assert_int_equal(gm_mfile_task_index(&r, "category"), 0);
    assert_int_equal(gm_mfile_task_index(&r, "task0"), -1);
    /* Saving again over the old file replaces it atomically: no temporary left. */
    assert_ok(gm_mfile_save(path, &r, &err), err);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_not_equal(access(tmp, F_OK), 0);
    gm_mfile_free(&r);
    gm_mfile_free(&m);
    assert_no_open_h5();
    tmpdir_remove(&td);
    gm_net_free(net);
    gm_backend_free(be);
}

/* ---- refusals ------------------------------------------------------------------ */

/* The model of the bad-file tests: conv+BN+ReLU, conv+BN+ReLU, head (the tree). */
typedef struct {
    tmpdir td;
    char good[512], bad[512];
} bad_env;

static void bad_env_make(bad_env *e)
{
    tmpdir_make(&e->td);
    tmpdir_path(&e->td, "good.h5", e->good, sizeof e->good);
    tmpdir_path(&e->td, "bad.h5", e->bad, sizeof e->bad);
    gm_mfile m;
    gm_backend *be;
    gm_net *net;
    tree_model(&m, &be, &net);
    gm_error err;
    assert_ok(gm_mfile_save(e->good, &m, &err), err);
    gm_mfile_free(&m);
    gm_net_free(net);
    gm_backend_free(be);
}

/* Loading the bad file fails with code and a message holding the path and each text. */
static void expect_refused(const bad_env *e, gm_status code, const char *text1, const char *text2)
{
    gm_mfile m;
    gm_error err;
    memset(&m, 0x5a, sizeof m); /* load must not rely on a zeroed struct */
    gm_status st = gm_mfile_load(e->bad, &m, &err);
    if (st != code) fail_msg("status %s, expected %s: %s", gm_status_name(st), gm_status_name(code), err.msg);
    if (strncmp(err.msg, e->bad, strlen(e->bad)) != 0) fail_msg("message \"%s\" does not start with the path", err.msg);
    assert_msg_has(err, text1);
    if (text2) assert_msg_has(err, text2);
    /* Nothing is left allocated (LSan checks) and the struct is empty. */
    assert_null(m.blocks);
    assert_null(m.params);
    assert_int_equal(m.nblocks, 0);
    gm_mfile_free(&m);
    assert_no_open_h5();
}

/* Opens the bad copy read-write; *g is loc/name. */
static hid_t open_bad(const bad_env *e, const char *name, hid_t *g)
{
    hid_t f;
    gm_error err;
    copy_file(e->good, e->bad);
    assert_ok(gm_h5_open(&f, e->bad, 1, &err), err);
    if (name) assert_ok(gm_h5_group_open(f, name, g, &err), err);
    return f;
}

static void close_bad(hid_t f, hid_t g)
{
    if (g >= 0) H5Gclose(g);
    gm_h5_close_file(f);
}

static void patch_int(const bad_env *e, const char *group, const char *attr, long long v)
{
    hid_t g = -1, f = open_bad(e, group, &g);
    gm_error err;
    assert_ok(gm_h5_attr_write_int(group ? g : f, attr, v, &err), err);
    close_bad(f, g);
}

static void patch_str(const bad_env *e, const char *group, const char *attr, const char *v)
{
    hid_t g = -1, f = open_bad(e, group, &g);
    gm_error err;
    assert_ok(gm_h5_attr_write_str(group ? g : f, attr, v, &err), err);
    close_bad(f, g);
}

static void test_truncated_file(void **state)
{
    (void)state;
    bad_env e;
    bad_env_make(&e);
    long n;
    unsigned char *b = slurp(e.good, &n);
    spit(e.bad, b, n / 2);
    free(b);
    expect_refused(&e, GM_EFORMAT, "truncated", NULL);
    tmpdir_remove(&e.td);
}

static void test_versions(void **state)
{
    (void)state;
    bad_env e;
    bad_env_make(&e);
    patch_int(&e, NULL, "version", 2);
    expect_refused(&e, GM_EFORMAT, "written by a newer gmorph (model format version 2; this build reads 1)", NULL);
    patch_int(&e, NULL, "version", 0);
    expect_refused(&e, GM_EFORMAT, "written by an older gmorph (model format version 0; this build reads 1)", NULL);
    tmpdir_remove(&e.td);
}

static void test_foreign_files(void **state)
{
    (void)state;
    bad_env e;
    bad_env_make(&e);
    gm_error err;
    hid_t f;
    /* A dataset file: only its format attribute matters here. */
    assert_ok(gm_h5_create(&f, e.bad, &err), err);
    assert_ok(gm_h5_attr_write_str(f, "format", "gmorph-dataset", &err), err);
    assert_ok(gm_h5_commit(f, e.bad, &err), err);
    expect_refused(&e, GM_EFORMAT, "not a gmorph model file (format is \"gmorph-dataset\"", NULL);
    /* Any other HDF5 file. */
    assert_ok(gm_h5_create(&f, e.bad, &err), err);
    hsize_t dims[1] = {3};
    const float v[3] = {1, 2, 3};
    assert_ok(gm_h5_write(f, "data", H5T_NATIVE_FLOAT, 1, dims, v, &err), err);
    assert_ok(gm_h5_commit(f, e.bad, &err), err);
    expect_refused(&e, GM_EFORMAT, "not a gmorph model file", "format is missing");
    /* Not HDF5 at all. */
    spit(e.bad, (const unsigned char *)"format = gmorph-model\n", 22);
    expect_refused(&e, GM_EFORMAT, "not an HDF5 file", NULL);
    tmpdir_remove(&e.td);
}

static void test_wrong_weight_shape(void **state)
{
    (void)state;
    bad_env e;
    bad_env_make(&e);
    /* Block 1's conv weight is (8, 4, 3, 3); store it as (8, 4, 3, 2). */
    hid_t g = -1, f = open_bad(&e, "blocks/001/op00", &g);
    gm_error err;
    assert_true(H5Ldelete(g, "weight", H5P_DEFAULT) >= 0);
    hsize_t dims[4] = {8, 4, 3, 2};
    float w[8 * 4 * 3 * 2] = {0};
    assert_ok(gm_h5_write(g, "weight", H5T_NATIVE_FLOAT, 4, dims, w, &err), err);
    close_bad(f, g);
    expect_refused(&e, GM_EFORMAT, "block 001 op00 (conv2d)", "\"weight\" has shape 8x4x3x2, expected 8x4x3x3");
    /* A missing dataset is named too. */
    f = open_bad(&e, "blocks/000/op01", &g);
    assert_true(H5Ldelete(g, "running_var", H5P_DEFAULT) >= 0);
    close_bad(f, g);
    expect_refused(&e, GM_EFORMAT, "block 000 op01 (batchnorm2d)", "\"running_var\" is missing");
    tmpdir_remove(&e.td);
}

/* Sets element i of a float dataset in the bad copy. */
static void patch_value(const bad_env *e, const char *group, const char *name, size_t i, float v)
{
    hid_t g = -1, f = open_bad(e, group, &g);
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    assert_true(d >= 0);
    hid_t s = H5Dget_space(d);
    hssize_t n = H5Sget_simple_extent_npoints(s);
    H5Sclose(s);
    assert_true(n > (hssize_t)i);
    float *x = malloc(sizeof(float) * (size_t)n);
    assert_non_null(x);
    assert_true(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
    x[i] = v;
    assert_true(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
    free(x);
    H5Dclose(d);
    close_bad(f, g);
}

static void test_non_finite_weights(void **state)
{
    (void)state;
    bad_env e;
    bad_env_make(&e);
    patch_value(&e, "blocks/001/op00", "weight", 17, NAN);
    expect_refused(&e, GM_ENUMERIC, "block 001 op00 (conv2d)", "\"weight\" holds NaN at index 17");
    patch_value(&e, "blocks/004/op01", "bias", 2, INFINITY);
    expect_refused(&e, GM_ENUMERIC, "block 004 op01 (linear)", "\"bias\" holds an infinity at index 2");
    patch_value(&e, "blocks/000/op01", "running_mean", 0, NAN);
    expect_refused(&e, GM_ENUMERIC, "block 000 op01 (batchnorm2d)", "\"running_mean\" holds NaN");
    patch_value(&e, "blocks/000/op01", "running_var", 3, -0.5f);
    expect_refused(&e, GM_EFORMAT, "block 000 op01 (batchnorm2d)", "negative variance at index 3");
    tmpdir_remove(&e.td);
}

static void test_bad_structure(void **state)
{
    (void)state;
    bad_env e;
    bad_env_make(&e);
    patch_str(&e, "blocks/000/op00", "kind", "conv3d");
    expect_refused(&e, GM_EFORMAT, "block 000 op00", "unknown op kind \"conv3d\"");
    patch_str(&e, "blocks/003", "kind", "transformer");
    expect_refused(&e, GM_EFORMAT, "block 003", "unknown block kind \"transformer\"");
    /* A parent that is not earlier. */
    patch_int(&e, "blocks/001", "parent", 1);
    expect_refused(&e, GM_EFORMAT, "block 001", "\"parent\" is 1");
    /* Block 3 (the pool) reading block 1 (8 channels) breaks the edge into block 4's head. */
    patch_int(&e, "blocks/003", "parent", 1);
    expect_refused(&e, GM_EFORMAT, "block 004 (head)", "expects 100 input features");
    /* A hyper-parameter that no longer fits its neighbours: BN sees 4 channels, says 5. */
    patch_int(&e, "blocks/000/op01", "c", 5);
    expect_refused(&e, GM_EFORMAT, "block 000 (conv)", "batchnorm2d");
    /* Miswired op: the ReLU reads itself. */
    hid_t g = -1, f = open_bad(&e, "blocks/000/op02", &g);
    gm_error err;
    const long long in[2] = {2, -1};
    assert_ok(gm_h5_attr_write_ints(g, "inputs", in, 2, &err), err);
    close_bad(f, g);
    expect_refused(&e, GM_EFORMAT, "block 000 op02 (relu)", "inputs (2, -1)");
    /* A missing hyper-parameter. */
    f = open_bad(&e, "blocks/001/op00", &g);
    assert_true(H5Adelete(g, "stride") >= 0);
    close_bad(f, g);
    expect_refused(&e, GM_EFORMAT, "block 001 op00 (conv2d)", "\"stride\" is missing");
    /* A head that is not a leaf, and a class count that is not the head's output. */
    patch_int(&e, "tasks/1", "head", 3);
    expect_refused(&e, GM_EFORMAT, "task 1", "not a leaf");
    patch_int(&e, "tasks/0", "classes", 7);
    expect_refused(&e, GM_EFORMAT, "task 0", "7 classes, but head block 002 outputs 3 values");
    /* Root totals that disagree with the blocks. */
    patch_int(&e, NULL, "nparams", 12);
    expect_refused(&e, GM_EFORMAT, "nparams 12", NULL);
    patch_int(&e, NULL, "nblocks", 4);
    expect_refused(&e, GM_EFORMAT, "blocks holds 5 groups, but nblocks is 4", NULL);
    tmpdir_remove(&e.td);
}

/* A damaged upsample factor is refused, naming the block, the op and the factor. */
static void test_bad_upsample(void **state)
{
    (void)state;
    bad_env e;
    tmpdir_make(&e.td);
    tmpdir_path(&e.td, "good.h5", e.good, sizeof e.good);
    tmpdir_path(&e.td, "bad.h5", e.bad, sizeof e.bad);
    gm_block blocks[6];
    int parent[6];
    gm_shape in;
    adapter_desc(blocks, parent, &in);
    gm_error err;
    gm_backend *be;
    assert_ok(gm_backend_cpu_create(&be, 1, &err), err);
    gm_net_desc d = {in, 6, blocks, parent};
    gm_net *net = make_net(be, &d, 2, 4);
    gm_mfile m;
    assert_ok(gm_mfile_from_net(&m, net, &err), err);
    assert_ok(gm_mfile_save(e.good, &m, &err), err);
    gm_mfile_free(&m);
    gm_net_free(net);
    gm_backend_free(be);

    patch_int(&e, "blocks/001/op00", "factor", 0);
    expect_refused(&e, GM_EFORMAT, "block 001 (custom)", "op 0 (upsample): upsample: factor 0 is not in 1..16");
    patch_int(&e, "blocks/001/op00", "factor", 17);
    expect_refused(&e, GM_EFORMAT, "block 001 (custom)", "factor 17");
    /* A valid factor that breaks an edge: the residual's add sees 4x16x16 and 4x8x8. */
    patch_int(&e, "blocks/003/op02", "factor", 4);
    expect_refused(&e, GM_EFORMAT, "block 003 (custom)", "add: operands");
    /* A valid factor that breaks the next block: head A reads 6x16x16, expects 6x24x24. */
    patch_int(&e, "blocks/001/op00", "factor", 2);
    expect_refused(&e, GM_EFORMAT, "block 002 (head)", "expects 3456 input features");
    hid_t g = -1, f = open_bad(&e, "blocks/003/op02", &g);
    assert_true(H5Adelete(g, "factor") >= 0);
    close_bad(f, g);
    expect_refused(&e, GM_EFORMAT, "block 003 op02 (upsample)", "\"factor\" is missing");
    tmpdir_remove(&e.td);
}

/* The writer refuses what the reader would, leaving no file; to_net refuses another net. */
static void test_write_refusals(void **state)
{
    (void)state;
    gm_mfile m;
    gm_backend *be;
    gm_net *net;
    tree_model(&m, &be, &net);
    tmpdir td;
    tmpdir_make(&td);
    char path[512], tmp[600];
    tmpdir_path(&td, "x.h5", path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    gm_error err;
    m.tasks[1].classes = 9;
    assert_int_equal(gm_mfile_save(path, &m, &err), GM_EINVAL);
    assert_msg_has(err, "task 1");
    assert_int_not_equal(access(path, F_OK), 0);
    assert_int_not_equal(access(tmp, F_OK), 0);
    m.tasks[1].classes = 4;
    m.parent[2] = 3;
    assert_int_equal(gm_mfile_save(path, &m, &err), GM_EINVAL);
    assert_msg_has(err, "block 002: parent 3");
    m.parent[2] = 1;
    char nodir[600];
    snprintf(nodir, sizeof nodir, "%s/missing/x.h5", td.dir);
    assert_int_equal(gm_mfile_save(nodir, &m, &err), GM_EIO);
    assert_no_open_h5();

    /* A net of another structure: the tree's head B with 5 classes. */
    gm_block blocks[5];
    int parent[5];
    gm_shape in;
    tree_desc(blocks, parent, &in);
    blocks[4] = gm_block_head((gm_shape){4, 5, 5}, 5);
    gm_net_desc d = {in, 5, blocks, parent};
    gm_net *other = make_net(be, &d, 2, 1);
    assert_int_equal(gm_mfile_to_net(&m, other, &err), GM_EINVAL);
    assert_msg_has(err, "block 004 op01 differs");
    gm_net_free(other);
    /* Same ops, other BN momentum: hyper-parameters are compared too. */
    tree_desc(blocks, parent, &in);
    blocks[1].ops[1].p.bn.momentum = 0.01f;
    other = make_net(be, &d, 2, 1);
    assert_int_equal(gm_mfile_to_net(&m, other, &err), GM_EINVAL);
    assert_msg_has(err, "block 001 op01 differs");
    gm_net_free(other);

    gm_mfile_free(&m);
    tmpdir_remove(&td);
    gm_net_free(net);
    gm_backend_free(be);
}

/* ---- h5py ---------------------------------------------------------------------- */

static void test_h5py_reads_layout(void **state)
{
    (void)state;
    if (system("/usr/bin/python3 -c 'import h5py, numpy' >/dev/null 2>&1") != 0) {
        print_message("h5py or numpy missing under /usr/bin/python3: not cross-checked\n");
        skip();
    }
    const int widths[4] = {8, 16, 0, 0};
    static gm_model model;
    gm_error err;
    assert_ok(gm_model_from_name(&model, "vgg11", widths, (gm_shape){1, 28, 28}, 10, &err), err);
    gm_backend *be;
    assert_ok(gm_backend_cpu_create(&be, 1, &err), err);
    gm_net_desc d = gm_model_desc(&model);
    gm_net *net = make_net(be, &d, 2, 6);
    gm_mfile m;
    assert_ok(gm_mfile_from_net(&m, net, &err), err);
    snprintf(m.arch, sizeof m.arch, "vgg11 8,16");

    tmpdir td;
    tmpdir_make(&td);
    char path[512], script[512], cmd[2048];
    tmpdir_path(&td, "vgg.h5", path, sizeof path);
    tmpdir_path(&td, "check.py", script, sizeof script);
    assert_ok(gm_mfile_save(path, &m, &err), err);
    /* Weight [7,0,2,1] of the first conv is flat element 7*9 + 2*3 + 1: PyTorch's layout. */
    FILE *py = fopen(script, "w");
    assert_non_null(py);
    fputs("import sys, h5py, numpy as np\n"
          "f = h5py.File(sys.argv[1], 'r')\n"
          "s = lambda v: v.decode() if isinstance(v, bytes) else str(v)\n"
          "assert s(f.attrs['format']) == 'gmorph-model', f.attrs['format']\n"
          "one = lambda a: np.asarray(a).reshape(-1)[0]\n"
          "assert one(f.attrs['version']) == 1\n"
          "assert s(f.attrs['arch']) == 'vgg11 8,16'\n"
          "assert list(f.attrs['input']) == [1, 28, 28]\n"
          "w = f['blocks/000/op00/weight']\n"
          "assert w.shape == (8, 1, 3, 3) and w.dtype == np.float32, (w.shape, w.dtype)\n"
          "assert w[0, 0, 0, 0] == np.float32(sys.argv[2]) and w[7, 0, 2, 1] == np.float32(sys.argv[3])\n"
          "assert s(f['blocks/000/op00'].attrs['kind']) == 'conv2d'\n"
          "assert s(f['blocks/000'].attrs['kind']) == 'conv'\n"
          "assert f['blocks/000/op01/running_var'].shape == (8,)\n"
          "assert float(f['blocks/000/op01'].attrs['eps']) == np.float32(1e-5)\n"
          "assert 'weight' not in f['blocks/000/op02']\n"
          "n = one(f.attrs['nblocks'])\n"
          "head = f['blocks/%03d' % (n - 1)]\n"
          "assert s(head.attrs['kind']) == 'head'\n"
          "assert head['op%02d/weight' % (one(head.attrs['nops']) - 1)].shape[0] == 10\n"
          "t = f['tasks/0']\n"
          "assert s(t.attrs['name']) == 'task0' and one(t.attrs['classes']) == 10\n"
          "assert one(t.attrs['head']) == n - 1 and np.isnan(one(t.attrs['val_accuracy']))\n",
          py);
    assert_int_equal(fclose(py), 0);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s %.9g %.9g", script, path, (double)m.params[0],
             (double)m.params[7 * 9 + 2 * 3 + 1]);
    assert_int_equal(system(cmd), 0);
    /* The check can fail: a wrong expected value is noticed. */
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s %.9g %.9g 2>/dev/null", script, path,
             (double)m.params[0] + 1.0, (double)m.params[7 * 9 + 2 * 3 + 1]);
    assert_int_not_equal(system(cmd), 0);

    gm_mfile_free(&m);
    tmpdir_remove(&td);
    gm_net_free(net);
    gm_backend_free(be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vgg_round_trip),     cmocka_unit_test(test_resnet_round_trip),
        cmocka_unit_test(test_tree_round_trip),    cmocka_unit_test(test_metadata_round_trip),
        cmocka_unit_test(test_truncated_file),     cmocka_unit_test(test_versions),
        cmocka_unit_test(test_foreign_files),      cmocka_unit_test(test_wrong_weight_shape),
        cmocka_unit_test(test_non_finite_weights), cmocka_unit_test(test_bad_structure),
        cmocka_unit_test(test_write_refusals),     cmocka_unit_test(test_h5py_reads_layout),
        cmocka_unit_test(test_adapter_round_trip), cmocka_unit_test(test_bad_upsample),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * ONNX import against PyTorch (fixtures/onnx, made by make_onnx_fixtures.py):
 * a VGG with explicit BatchNormalization, Gemm and Pad+AveragePool, a ResNet with
 * BN folded into its convs and a Shape-computed Reshape, the same ResNet with its
 * BN kept (opset 9), and a MatMul+Add / Dropout / float_data variant of the VGG
 * each import to a model whose eval-mode logits match PyTorch's to 1e-5 relative
 * error; the blocks come out as gm_models lays out its own VGGs and ResNets (the
 * BN ResNet op for op), and the fusion search's graph accepts them; the
 * model survives gm_mfile_save/load bit for bit; normalisation comes from the
 * options, the metadata or the defaults; unsupported ops and attributes are
 * refused naming the node and op type, in exported models and in vgg.onnx edited
 * field by field through protobuf-c; truncated, foreign and missing files get
 * clear errors.
 */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gm_fgraph.h"
#include "gm_h5.h"
#include "gm_models.h"
#include "gm_onnx.h"
#include "onnx.pb-c.h"
#include "test_util.h"

enum { NSAMPLES = 4, CLASSES = 10, C = 3, HW = 32 };

static const char *const MODELS[] = {"vgg", "resnet", "vgg_matmul", "resnet_bn"};

/* ---- fixtures ---------------------------------------------------------------- */

static void fixture_path(const char *name, char *buf, size_t cap)
{
    const char *dir = getenv("GM_FIXTURES");
    assert_non_null(dir);
    snprintf(buf, cap, "%s/onnx/%s", dir, name);
}

typedef struct {
    char file[64];
    float x[NSAMPLES * C * HW * HW], logits[NSAMPLES * CLASSES];
    double mean[C], std[C];
} expected;

static void read_expected(const char *model, expected *e)
{
    char path[512];
    gm_error err;
    hid_t f, g;
    fixture_path("expected.h5", path, sizeof path);
    assert_ok(gm_h5_open(&f, path, 0, &err), err);
    assert_ok(gm_h5_group_open(f, model, &g, &err), err);
    hsize_t dx[4] = {NSAMPLES, C, HW, HW}, dy[2] = {NSAMPLES, CLASSES};
    assert_ok(gm_h5_read(g, "x", H5T_NATIVE_FLOAT, 4, dx, e->x, &err), err);
    assert_ok(gm_h5_read(g, "logits", H5T_NATIVE_FLOAT, 2, dy, e->logits, &err), err);
    assert_ok(gm_h5_attr_read_str(g, "file", e->file, sizeof e->file, &err), err);
    assert_ok(gm_h5_attr_read_floats(g, "mean", e->mean, C, &err), err);
    assert_ok(gm_h5_attr_read_floats(g, "std", e->std, C, &err), err);
    H5Gclose(g);
    gm_h5_close_file(f);
}

static void import_fixture(const char *file, const gm_onnx_import_opts *opts, gm_mfile *m)
{
    char path[512];
    gm_error err;
    fixture_path(file, path, sizeof path);
    assert_ok(gm_onnx_import(path, opts, m, &err), err);
}

/* Eval-mode logits of m on the CPU backend: out[NSAMPLES * classes]. */
static void forward(const gm_mfile *m, const float *x, float *out)
{
    gm_error err;
    gm_backend *be;
    gm_net *net;
    gm_net_desc d = gm_mfile_desc(m);
    assert_ok(gm_backend_cpu_create(&be, 1, &err), err);
    assert_ok(gm_net_create(&net, be, &d, NSAMPLES, 1, &err), err);
    assert_ok(gm_mfile_to_net(m, net, &err), err);
    assert_ok(gm_net_forward(net, x, NSAMPLES, 0, &err), err);
    assert_int_equal(gm_net_noutputs(net), 1);
    memcpy(out, gm_net_output(net, 0), sizeof(float) * NSAMPLES * (size_t)m->tasks[0].classes);
    gm_net_free(net);
    gm_backend_free(be);
}

/* ||got - want|| / ||want|| and every |got - want| / max |want| below tol. */
static void assert_logits_close(const char *what, const float *got, const float *want, size_t n, double tol)
{
    double diff = 0.0, ref = 0.0, peak = 0.0;
    for (size_t i = 0; i < n; i++) {
        diff += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
        ref += (double)want[i] * want[i];
        peak = fmax(peak, fabs(want[i]));
    }
    assert_true(peak > 1e-3); /* a real reference, not zeros */
    if (sqrt(diff / ref) > tol) fail_msg("%s: relative error %.3g (tolerance %.1g)", what, sqrt(diff / ref), tol);
    print_message("%s: relative error %.2g against PyTorch\n", what, sqrt(diff / ref));
    for (size_t i = 0; i < n; i++)
        gm_assert_close(what, i, got[i], want[i], tol * peak, 0.0);
}

/* ---- numerics ------------------------------------------------------------------ */

static void test_matches_pytorch(void **state)
{
    (void)state;
    static expected e;
    float got[NSAMPLES * CLASSES];
    for (size_t k = 0; k < sizeof MODELS / sizeof *MODELS; k++) {
        read_expected(MODELS[k], &e);
        gm_mfile m;
        import_fixture(e.file, NULL, &m);
        assert_int_equal(m.ntasks, 1);
        assert_int_equal(m.tasks[0].classes, CLASSES);
        assert_int_equal(m.input.c, C);
        assert_int_equal(m.input.h, HW);
        assert_int_equal(m.input.w, HW);
        forward(&m, e.x, got);
        assert_logits_close(MODELS[k], got, e.logits, NSAMPLES * CLASSES, 1e-5);
        gm_mfile_free(&m);
    }
}

/* ---- layout ----------------------------------------------------------------------- */

static void assert_kinds(const gm_mfile *m, const gm_block_kind *want, int n)
{
    assert_int_equal(m->nblocks, n);
    for (int b = 0; b < n; b++) {
        if (m->blocks[b].kind != want[b])
            fail_msg("%s block %d is %s, expected %s", m->arch, b, gm_block_kind_name(m->blocks[b].kind),
                     gm_block_kind_name(want[b]));
        assert_int_equal(m->parent[b], b - 1);
        assert_int_equal(m->blocks[b].model_id, 0);
        assert_int_equal(m->blocks[b].layer_id, b);
    }
}

static int count_ops(const gm_mfile *m, gm_op_kind k)
{
    int n = 0;
    for (int b = 0; b < m->nblocks; b++)
        for (int i = 0; i < m->blocks[b].nops; i++) n += m->blocks[b].ops[i].kind == k;
    return n;
}

static void test_vgg_layout(void **state)
{
    (void)state;
    static const gm_block_kind want[] = {GM_BLOCK_CONV, GM_BLOCK_CONV, GM_BLOCK_POOL,   GM_BLOCK_CONV, GM_BLOCK_POOL,
                                         GM_BLOCK_CONV, GM_BLOCK_POOL, GM_BLOCK_LINEAR, GM_BLOCK_HEAD};
    for (int k = 0; k < 2; k++) {
        gm_mfile m;
        import_fixture(k ? "vgg_matmul.onnx" : "vgg.onnx", NULL, &m);
        assert_kinds(&m, want, 9);
        assert_string_equal(m.arch, k ? "onnx vgg_matmul.onnx" : "onnx vgg.onnx");
        /* Conv+BN+ReLU, with PyTorch's BatchNorm constants recovered from the ONNX attributes */
        const gm_block *c = &m.blocks[0];
        assert_int_equal(c->nops, 3);
        assert_int_equal(c->ops[1].kind, GM_OP_BATCHNORM2D);
        assert_float_equal(c->ops[1].p.bn.eps, 1e-5f, 1e-12f);
        assert_true(c->ops[1].p.bn.momentum == 0.1f);
        assert_int_equal(count_ops(&m, GM_OP_BATCHNORM2D), 4);
        assert_int_equal(m.nbuffers, 2 * (8 + 8 + 16 + 16));
        /* Pad + AveragePool(3, 2) became one average pool with padding 1 */
        assert_int_equal(m.blocks[4].ops[0].kind, GM_OP_AVGPOOL2D);
        assert_int_equal(m.blocks[4].ops[0].p.pool.pad, 1);
        assert_int_equal(m.blocks[6].ops[0].kind, GM_OP_MAXPOOL2D);
        assert_int_equal(m.blocks[6].ops[0].p.pool.pad, 1);
        /* (Flatten) Linear ReLU, then the head; the Dropout is gone */
        assert_int_equal(m.blocks[7].nops, 3);
        assert_int_equal(m.blocks[7].ops[0].kind, GM_OP_FLATTEN);
        assert_int_equal(m.blocks[7].ops[1].p.linear.bias, 1);
        assert_int_equal(m.blocks[8].nops, 1);
        assert_int_equal(count_ops(&m, GM_OP_DROPOUT), 0);
        assert_int_equal(m.tasks[0].head, 8);
        gm_mfile_free(&m);
    }
}

static void test_resnet_layout(void **state)
{
    (void)state;
    static const gm_block_kind want[] = {GM_BLOCK_CONV,     GM_BLOCK_RESIDUAL, GM_BLOCK_RESIDUAL,
                                         GM_BLOCK_RESIDUAL, GM_BLOCK_GAP,      GM_BLOCK_HEAD};
    gm_mfile m;
    import_fixture("resnet.onnx", NULL, &m);
    assert_kinds(&m, want, 6);
    /* BN was folded into the convs by torch.onnx: conv (with bias), ReLU, conv, [1x1 conv], Add, ReLU */
    assert_int_equal(count_ops(&m, GM_OP_BATCHNORM2D), 0);
    assert_int_equal(m.blocks[1].nops, 5);
    const gm_block *down = &m.blocks[2];
    assert_int_equal(down->nops, 6);
    int add = 4;
    assert_int_equal(down->ops[add].kind, GM_OP_ADD);
    const gm_op *sc = &down->ops[down->src[add][1]];
    assert_int_equal(sc->kind, GM_OP_CONV2D);
    assert_int_equal(sc->p.conv.k, 1);
    assert_int_equal(sc->p.conv.stride, 2);
    assert_int_equal(down->src[down->src[add][1]][0], -1); /* the shortcut reads the block input */
    assert_int_equal(down->ops[5].kind, GM_OP_RELU);
    /* identity shortcut: the Add reads the block input */
    assert_int_equal(m.blocks[3].src[3][1], -1);
    /* the Shape-Gather-Unsqueeze-Concat-Reshape flatten of a 16x1x1 map is a no-op: the head is one Linear */
    assert_int_equal(m.blocks[5].nops, 1);
    assert_int_equal(m.blocks[5].ops[0].kind, GM_OP_LINEAR);
    gm_mfile_free(&m);
}

/* Kind and hyper-parameters (not memcmp: union padding is undefined). */
static int op_same(const gm_op *a, const gm_op *b)
{
    if (a->kind != b->kind) return 0;
    switch (a->kind) {
    case GM_OP_CONV2D: {
        const gm_conv_params *x = &a->p.conv, *y = &b->p.conv;
        return x->cin == y->cin && x->cout == y->cout && x->k == y->k && x->stride == y->stride && x->pad == y->pad &&
               x->bias == y->bias;
    }
    case GM_OP_BATCHNORM2D:
        return a->p.bn.c == b->p.bn.c && a->p.bn.eps == b->p.bn.eps && a->p.bn.momentum == b->p.bn.momentum;
    case GM_OP_MAXPOOL2D:
    case GM_OP_AVGPOOL2D:
        return a->p.pool.k == b->p.pool.k && a->p.pool.stride == b->p.pool.stride && a->p.pool.pad == b->p.pool.pad;
    case GM_OP_LINEAR:
        return a->p.linear.in == b->p.linear.in && a->p.linear.out == b->p.linear.out &&
               a->p.linear.bias == b->p.linear.bias;
    default: return 1;
    }
}

/*
 * The ResNet exported with its BatchNorms is, block for block and op for op, the
 * ResNet gm_models builds with the same stages (stem, BasicBlocks with identity
 * and 1x1 shortcuts, global pool, head): imported models are zoo models.
 */
static void test_resnet_bn_is_a_zoo_resnet(void **state)
{
    (void)state;
    gm_model zoo;
    gm_error err;
    gm_resnet_config cfg = {.nstages = 2, .blocks = {1, 2}, .widths = {8, 16}};
    assert_ok(gm_model_resnet(&zoo, &cfg, (gm_shape){C, HW, HW}, CLASSES, &err), err);
    gm_mfile m;
    import_fixture("resnet_bn.onnx", NULL, &m);
    assert_int_equal(m.nblocks, zoo.nblocks);
    for (int b = 0; b < m.nblocks; b++) {
        const gm_block *x = &m.blocks[b], *y = &zoo.blocks[b];
        if (x->kind != y->kind || x->nops != y->nops)
            fail_msg("block %d: %s with %d ops, the zoo's is %s with %d", b, gm_block_kind_name(x->kind), x->nops,
                     gm_block_kind_name(y->kind), y->nops);
        assert_int_equal(x->model_id, y->model_id);
        assert_int_equal(x->layer_id, y->layer_id);
        for (int i = 0; i < x->nops; i++) {
            if (!op_same(&x->ops[i], &y->ops[i]))
                fail_msg("block %d op %d: %s differs from the zoo's %s", b, i, gm_op_name(x->ops[i].kind),
                         gm_op_name(y->ops[i].kind));
            assert_int_equal(x->src[i][0], y->src[i][0]);
            assert_int_equal(x->src[i][1], y->src[i][1]);
        }
    }
    assert_int_equal(m.nparams, gm_model_nparams(&zoo));
    gm_mfile_free(&m);
}

/* The search builds its graph from imported models as from zoo models, and the fused model runs both. */
static void test_fuses_like_zoo_models(void **state)
{
    (void)state;
    static expected ev, er;
    gm_onnx_import_opts ov = {.task = "vgg"}, orr = {.task = "resnet"};
    gm_mfile mv, mr, fused;
    gm_error err;
    import_fixture("vgg.onnx", &ov, &mv);
    import_fixture("resnet.onnx", &orr, &mr);
    assert_string_equal(mv.tasks[0].name, "vgg");
    const gm_mfile *models[2] = {&mv, &mr};
    gm_fgraph *g = malloc(sizeof *g);
    assert_non_null(g);
    assert_ok(gm_fgraph_from_models(g, models, 2, &err), err);
    assert_int_equal(g->nnodes, mv.nblocks + mr.nblocks);
    gm_wstore store = {.nmodels = 2, .models = models};
    assert_ok(gm_fgraph_to_mfile(g, &store, 1, &fused, &err), err);
    assert_int_equal(fused.ntasks, 2);
    read_expected("vgg", &ev);
    read_expected("resnet", &er);
    /* both tasks from one forward: the tree's outputs equal PyTorch's logits of each model */
    gm_backend *be;
    gm_net *net;
    gm_net_desc d = gm_mfile_desc(&fused);
    assert_ok(gm_backend_cpu_create(&be, 1, &err), err);
    assert_ok(gm_net_create(&net, be, &d, NSAMPLES, 1, &err), err);
    assert_ok(gm_mfile_to_net(&fused, net, &err), err);
    const expected *e[2] = {&ev, &er};
    for (int t = 0; t < 2; t++) {
        assert_ok(gm_net_forward(net, e[t]->x, NSAMPLES, 0, &err), err);
        int out = -1;
        for (int o = 0; o < gm_net_noutputs(net); o++)
            if (gm_net_output_block(net, o) == fused.tasks[t].head) out = o;
        assert_true(out >= 0);
        assert_logits_close(fused.tasks[t].name, gm_net_output(net, out), e[t]->logits, NSAMPLES * CLASSES, 1e-5);
    }
    gm_net_free(net);
    gm_backend_free(be);
    gm_mfile_free(&fused);
    gm_mfile_free(&mv);
    gm_mfile_free(&mr);
    free(g);
}

/* ---- model file ------------------------------------------------------------------ */

static void test_save_load_round_trip(void **state)
{
    (void)state;
    static expected e;
    char dir[] = "/tmp/gm_test_onnx_XXXXXX", path[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/m.h5", dir);
    for (size_t k = 0; k < sizeof MODELS / sizeof *MODELS; k++) {
        gm_mfile m, back;
        gm_error err;
        float a[NSAMPLES * CLASSES], b[NSAMPLES * CLASSES];
        read_expected(MODELS[k], &e);
        import_fixture(e.file, NULL, &m);
        assert_ok(gm_mfile_save(path, &m, &err), err);
        assert_ok(gm_mfile_load(path, &back, &err), err);
        assert_string_equal(back.arch, m.arch);
        assert_string_equal(back.tasks[0].name, "logits");
        assert_string_equal(back.tasks[0].metric, "accuracy");
        assert_string_equal(back.tasks[0].dataset, "");
        assert_true(isnan(back.tasks[0].val_accuracy) && isnan(back.tasks[0].test_accuracy));
        assert_int_equal(back.nblocks, m.nblocks);
        assert_int_equal(back.nparams, m.nparams);
        assert_memory_equal(back.params, m.params, m.nparams * sizeof(float));
        assert_memory_equal(back.buffers, m.buffers, m.nbuffers * sizeof(float));
        forward(&m, e.x, a);
        forward(&back, e.x, b);
        assert_memory_equal(a, b, sizeof a);
        gm_mfile_free(&m);
        gm_mfile_free(&back);
        unlink(path);
    }
    assert_int_equal(rmdir(dir), 0);
}

/* ---- normalisation ---------------------------------------------------------------- */

static void test_normalisation(void **state)
{
    (void)state;
    static expected e;
    gm_mfile m;
    gm_error err;
    char path[512];
    /* the metadata the exporter writes (vgg_matmul carries some), else 0 and 1 */
    for (size_t k = 0; k < sizeof MODELS / sizeof *MODELS; k++) {
        read_expected(MODELS[k], &e);
        import_fixture(e.file, NULL, &m);
        for (int c = 0; c < C; c++) {
            assert_true(m.mean[c] == (float)e.mean[c]);
            assert_true(m.std[c] == (float)e.std[c]);
        }
        gm_mfile_free(&m);
    }
    /* the options win over the metadata */
    gm_onnx_import_opts o = {.nmean = 3, .nstd = 3, .mean = {0.1f, 0.2f, 0.3f}, .std = {2.0f, 3.0f, 4.0f}};
    import_fixture("vgg_matmul.onnx", &o, &m);
    for (int c = 0; c < C; c++) {
        assert_true(m.mean[c] == o.mean[c]);
        assert_true(m.std[c] == o.std[c]);
    }
    gm_mfile_free(&m);
    /* as many values as channels, std > 0 */
    fixture_path("vgg.onnx", path, sizeof path);
    o = (gm_onnx_import_opts){.nmean = 2, .mean = {0.5f, 0.5f}};
    assert_int_equal(gm_onnx_import(path, &o, &m, &err), GM_EINVAL);
    assert_msg_has(err, "2 mean values given for an input of 3 channels");
    assert_null(m.blocks);
    o = (gm_onnx_import_opts){.nstd = 3, .std = {1.0f, 0.0f, 1.0f}};
    assert_int_equal(gm_onnx_import(path, &o, &m, &err), GM_EINVAL);
    assert_msg_has(err, "std of channel 1");
}

/* ---- refusals --------------------------------------------------------------------- */

static void test_refuses_unsupported(void **state)
{
    (void)state;
    static const char *const cases[] = {"sigmoid", "group2", "dilated", "ceil", "exclude_pad"};
    char path[512], group[64], file[64], node[128], op[64], why[64];
    gm_error err;
    hid_t f, g;
    fixture_path("expected.h5", path, sizeof path);
    assert_ok(gm_h5_open(&f, path, 0, &err), err);
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        snprintf(group, sizeof group, "refused/%s", cases[k]);
        assert_ok(gm_h5_group_open(f, group, &g, &err), err);
        assert_ok(gm_h5_attr_read_str(g, "file", file, sizeof file, &err), err);
        assert_ok(gm_h5_attr_read_str(g, "node", node, sizeof node, &err), err);
        assert_ok(gm_h5_attr_read_str(g, "op", op, sizeof op, &err), err);
        assert_ok(gm_h5_attr_read_str(g, "why", why, sizeof why, &err), err);
        H5Gclose(g);
        char onnx[512], want[256];
        gm_mfile m;
        fixture_path(file, onnx, sizeof onnx);
        assert_int_equal(gm_onnx_import(onnx, NULL, &m, &err), GM_EFORMAT);
        snprintf(want, sizeof want, "node \"%s\" (op %s)", node, op);
        assert_msg_has(err, want);
        assert_msg_has(err, why);
        assert_msg_has(err, onnx);
        assert_int_equal(m.nblocks, 0);
        assert_null(m.blocks);
    }
    gm_h5_close_file(f);
    /* the message names what is supported, e.g. for the Sigmoid */
    char onnx[512];
    gm_mfile m;
    fixture_path("refused_sigmoid.onnx", onnx, sizeof onnx);
    assert_int_equal(gm_onnx_import(onnx, NULL, &m, &err), GM_EFORMAT);
    assert_msg_has(err, "node \"/act/Sigmoid\" (op Sigmoid) is not supported; gmorph imports Conv, ");
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long size = ftell(f);
    assert_true(size > 0);
    rewind(f);
    void *b = malloc((size_t)size);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    *n = (size_t)size;
    return b;
}

static void test_refuses_damaged_files(void **state)
{
    (void)state;
    char dir[] = "/tmp/gm_test_onnx_XXXXXX", cut[256], src[512];
    assert_non_null(mkdtemp(dir));
    snprintf(cut, sizeof cut, "%s/cut.onnx", dir);
    fixture_path("vgg.onnx", src, sizeof src);
    size_t n;
    unsigned char *bytes = slurp(src, &n);
    /* every truncation is refused as a format error naming the file, never a crash or a model */
    const size_t sizes[] = {0, 1, 2, 17, n / 3, n / 2, n - 100, n - 1};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        gm_mfile m;
        gm_error err;
        write_file(cut, bytes, sizes[k]);
        gm_status st = gm_onnx_import(cut, NULL, &m, &err);
        if (st != GM_EFORMAT) fail_msg("cut at %zu of %zu bytes: status %d (%s)", sizes[k], n, st, err.msg);
        assert_msg_has(err, cut);
        assert_msg_has(err, "ONNX model");
        assert_null(m.blocks);
    }
    /* flipped bytes inside the weights' lengths: refused or imported, never a crash */
    for (size_t at = 50; at < n; at += n / 23) {
        unsigned char *copy = malloc(n);
        assert_non_null(copy);
        memcpy(copy, bytes, n);
        copy[at] ^= 0xff;
        write_file(cut, copy, n);
        free(copy);
        gm_mfile m;
        gm_error err;
        if (gm_onnx_import(cut, NULL, &m, &err) == GM_OK) gm_mfile_free(&m);
        else assert_msg_has(err, cut);
    }
    free(bytes);
    /* a text file and an HDF5 file are not ONNX models */
    const char text[] = "this is not an ONNX model\n";
    write_file(cut, text, sizeof text - 1);
    char h5[512];
    fixture_path("expected.h5", h5, sizeof h5);
    const char *foreign[2] = {cut, h5};
    for (int k = 0; k < 2; k++) {
        gm_mfile m;
        gm_error err;
        assert_int_equal(gm_onnx_import(foreign[k], NULL, &m, &err), GM_EFORMAT);
        assert_msg_has(err, foreign[k]);
        assert_msg_has(err, "not an ONNX model");
    }
    unlink(cut);
    /* a missing file and a directory are I/O errors naming the path */
    gm_mfile m;
    gm_error err;
    snprintf(cut, sizeof cut, "%s/missing.onnx", dir);
    assert_int_equal(gm_onnx_import(cut, NULL, &m, &err), GM_EIO);
    assert_msg_has(err, cut);
    assert_msg_has(err, "No such file");
    assert_int_equal(gm_onnx_import(dir, NULL, &m, &err), GM_EIO);
    assert_msg_has(err, "not a regular file");
    assert_int_equal(rmdir(dir), 0);
}

/* ---- edited models: vgg.onnx decoded, one field changed, encoded again (protobuf-c both ways) ---- */

static Onnx__NodeProto *node_of(Onnx__ModelProto *m, const char *op)
{
    for (size_t k = 0; k < m->graph->n_node; k++)
        if (strcmp(m->graph->node[k]->op_type, op) == 0) return m->graph->node[k];
    fail_msg("vgg.onnx has no %s node", op);
    return NULL;
}

static Onnx__AttributeProto *attr_of(Onnx__NodeProto *n, const char *name)
{
    for (size_t k = 0; k < n->n_attribute; k++)
        if (strcmp(n->attribute[k]->name, name) == 0) return n->attribute[k];
    fail_msg("node %s has no attribute %s", n->name, name);
    return NULL;
}

static Onnx__TensorProto *init_of(Onnx__ModelProto *m, const char *name)
{
    for (size_t k = 0; k < m->graph->n_initializer; k++)
        if (strcmp(m->graph->initializer[k]->name, name) == 0) return m->graph->initializer[k];
    fail_msg("vgg.onnx has no initializer %s", name);
    return NULL;
}

typedef struct {
    const char *what; /* the case, and a phrase its message must contain */
    const char *want;
} edit_case;

/* Applies edit k (do_it 1) or undoes it (0), so the decoded model frees cleanly. */
static void edit(Onnx__ModelProto *m, int k, int do_it)
{
    static char empty[] = "", other_domain[] = "com.example", nowhere[] = "nowhere", erf[] = "Erf";
    static char *saved;
    static int64_t saved_i;
    static Onnx__NodeProto *saved_node;
    Onnx__GraphProto *g = m->graph;
    switch (k) {
    case 0: m->opset_import[0]->version = do_it ? 8 : 13; break;
    case 1: m->has_ir_version = !do_it; break;
    case 2: attr_of(node_of(m, "Gemm"), "alpha")->f = do_it ? 2.0f : 1.0f; break;
    case 3: init_of(m, "features.0.weight")->raw_data.len += do_it ? -4 : 4; break;
    case 4: init_of(m, "features.0.weight")->data_type = do_it ? 10 : 1; break;
    case 5: attr_of(node_of(m, "MaxPool"), "pads")->ints[2] = do_it ? 1 : 0; break;
    case 6: /* BatchNormalization before the Conv that feeds it */
        saved_node = g->node[0];
        g->node[0] = g->node[1];
        g->node[1] = saved_node;
        break;
    case 7:
        if (do_it) saved = node_of(m, "Relu")->domain, node_of(m, "Relu")->domain = other_domain;
        else node_of(m, "Relu")->domain = saved;
        break;
    case 8:
        if (do_it) saved = g->output[0]->name, g->output[0]->name = nowhere;
        else g->output[0]->name = saved;
        break;
    case 9: /* an unnamed node of an unsupported op */
        if (do_it) saved = g->node[2]->name, g->node[2]->name = empty, saved_node = g->node[2];
        else saved_node->name = saved;
        {
            static char *op;
            if (do_it) op = saved_node->op_type, saved_node->op_type = erf;
            else saved_node->op_type = op;
        }
        break;
    case 10: attr_of(node_of(m, "Conv"), "group")->i = do_it ? 4 : 1; break;
    case 11:
        if (do_it) saved_i = attr_of(node_of(m, "Flatten"), "axis")->i, attr_of(node_of(m, "Flatten"), "axis")->i = 2;
        else attr_of(node_of(m, "Flatten"), "axis")->i = saved_i;
        break;
    case 12: { /* a NaN in the first conv's weights (raw_data, little-endian) */
        static unsigned char keep[4];
        const unsigned char nan_le[4] = {0x00, 0x00, 0xc0, 0x7f};
        unsigned char *w = init_of(m, "features.0.weight")->raw_data.data;
        if (do_it) memcpy(keep, w, 4), memcpy(w, nan_le, 4);
        else memcpy(w, keep, 4);
        break;
    }
    default: break;
    }
}

static void test_refuses_edited_models(void **state)
{
    (void)state;
    static const edit_case cases[] = {
        {"opset 8", "uses opset 8; gmorph reads opsets 9 to 21"},
        {"no IR version", "not an ONNX model (no IR version"},
        {"Gemm alpha 2", "node \"/classifier/classifier.1/Gemm\" (op Gemm): alpha 2"},
        {"weight 4 bytes short", "tensor \"features.0.weight\" holds 860 bytes of FLOAT data, its dims need 864"},
        {"FLOAT16 weight", "data type FLOAT16"},
        {"asymmetric pads", "(op MaxPool): pads are not the same on all four sides"},
        {"nodes out of order", "reads \"/features/features.0/Conv_output_0\", which no initializer"},
        {"custom domain", "(op Relu, domain com.example) is not supported"},
        {"output not computed", "the output \"nowhere\" is not computed by any node"},
        {"unnamed unsupported node", "node writing \"/features/features.2/Relu_output_0\" (op Erf) is not supported"},
        {"group 4", "group 4"},
        {"Flatten axis 2", "axis 2: gmorph flattens all but the batch"},
        {"NaN weight", "node \"/features/features.0/Conv\" (op Conv): its weights hold NaN or Inf"},
    };
    char src[512], dir[] = "/tmp/gm_test_onnx_XXXXXX", path[256];
    fixture_path("vgg.onnx", src, sizeof src);
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/edited.onnx", dir);
    size_t n;
    unsigned char *bytes = slurp(src, &n);
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, n, bytes);
    assert_non_null(m);
    for (int k = 0; k < (int)(sizeof cases / sizeof *cases); k++) {
        edit(m, k, 1);
        size_t len = onnx__model_proto__get_packed_size(m);
        unsigned char *out = malloc(len + 1);
        assert_non_null(out);
        assert_int_equal(onnx__model_proto__pack(m, out), len);
        edit(m, k, 0);
        write_file(path, out, len);
        free(out);
        gm_mfile mf;
        gm_error err;
        gm_status st = gm_onnx_import(path, NULL, &mf, &err);
        if (st != GM_EFORMAT) fail_msg("%s: status %d (%s)", cases[k].what, st, err.msg);
        assert_msg_has(err, cases[k].want);
        assert_null(mf.blocks);
    }
    /* undone: the re-encoded model imports again */
    size_t len = onnx__model_proto__get_packed_size(m);
    unsigned char *out = malloc(len);
    assert_non_null(out);
    onnx__model_proto__pack(m, out);
    write_file(path, out, len);
    free(out);
    gm_mfile mf;
    gm_error err;
    assert_ok(gm_onnx_import(path, NULL, &mf, &err), err);
    gm_mfile_free(&mf);
    onnx__model_proto__free_unpacked(m, NULL);
    free(bytes);
    unlink(path);
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_pytorch),       cmocka_unit_test(test_vgg_layout),
        cmocka_unit_test(test_resnet_layout),         cmocka_unit_test(test_fuses_like_zoo_models),
        cmocka_unit_test(test_save_load_round_trip),  cmocka_unit_test(test_normalisation),
        cmocka_unit_test(test_refuses_unsupported),   cmocka_unit_test(test_refuses_damaged_files),
        cmocka_unit_test(test_refuses_edited_models), cmocka_unit_test(test_resnet_bn_is_a_zoo_resnet),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

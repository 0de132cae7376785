/*
 * gmorph against PyTorch: every layer's forward and backward, the losses, the
 * optimisers and two whole small networks, compared with reference values that
 * tests/fixtures/make_fixtures.py computed with PyTorch (float64, stored as
 * float32) and committed as HDF5 files. GM_FIXTURES names their folder (ctest
 * sets it). Everything runs on the CPU backend with 1 thread and with 2 threads.
 *
 * Layer cases (ops.h5) go through the public API as a net of one custom block,
 * with the upstream gradient dy fed through gm_net_output_grad. Each case runs
 * in two ways, and each way does the same step twice on one net (the second
 * step catches state left over from the first):
 *   direct:   the case's ops read the net input x. Checks y, the parameter
 *             gradients and the BN running statistics. (Not for two-input
 *             cases; a case whose first op is a flatten is run this way only
 *             by test_flatten_reads_net_input.)
 *   embedded: a leading 1x1 convolution "embeds" x so that x's gradient shows up
 *             as a parameter gradient (the net computes no gradient for its own
 *             input). The net input is one-hot: sample n of shape (N*H*W, H, W)
 *             has channel n*H*W + p set to 1 at pixel p and 0 elsewhere. The
 *             embedding conv (cin = N*H*W, cout = C, no bias) with weight
 *             W[c][n*H*W + p] = x[n][c][p] then outputs exactly x (each output
 *             is one weight times 1 plus zeros), and its weight gradient is
 *             dW[c][n*H*W + p] = dL/dx[n][c][p], again exactly. A case with a
 *             second input x2 (ADD) gets a second embedding conv.
 *             Checks y, dx (and dx2), the parameter gradients, the statistics.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include <cmocka.h>
#include <hdf5.h>

#include "gm_backend.h"
#include "gm_models.h"
#include "gm_net.h"
#include "gm_optim.h"
#include "test_util.h"

/* float32 against float64 references: relative 1e-4 plus an absolute term of
 * 1e-5 of the array's largest magnitude (cancellation in sums). */
#define RTOL 1e-4
#define ATOL_REL 1e-5
#define ATOL_MIN 1e-7

/* ---- failing with a message --------------------------------------------- */

static void die(int line, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    print_error("%s\n", msg);
    _fail(__FILE__, line);
}

/* Every HDF5 call goes through H5: a negative id or status fails the test. */
static int64_t h5_check(int64_t v, const char *call, const char *obj, int line)
{
    if (v < 0) die(line, "HDF5 call failed (%lld): %s on \"%s\"", (long long)v, call, obj);
    return v;
}
#define H5(call, obj) h5_check((int64_t)(call), #call, (obj), __LINE__)

static void gm_ok(gm_status s, const gm_error *err, const char *what, int line)
{
    if (s != GM_OK) die(line, "%s: %s (%s)", what, gm_status_name(s), err->msg);
}
#define GM_OK_OR_FAIL(call, err, what) gm_ok((call), (err), (what), __LINE__)

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) die(__LINE__, "out of memory (%zu bytes)", bytes);
    return p;
}

/* ---- reading fixtures ----------------------------------------------------- */

static hid_t open_fixture(const char *name)
{
    const char *dir = getenv("GM_FIXTURES");
    if (!dir || !*dir) die(__LINE__, "GM_FIXTURES is not set (ctest sets it to tests/fixtures)");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return (hid_t)H5(H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), path);
}

/* A float array (any stored type converted to float), with its element count. */
typedef struct {
    float *v;
    size_t n;
    int rank;
    hsize_t dims[8];
} farr;

static int has_dataset(hid_t g, const char *name)
{
    return H5(H5Lexists(g, name, H5P_DEFAULT), name) > 0;
}

static size_t dataset_shape(hid_t d, const char *name, int *rank, hsize_t *dims)
{
    hid_t sp = (hid_t)H5(H5Dget_space(d), name);
    int r = (int)H5(H5Sget_simple_extent_ndims(sp), name);
    if (r > 8) die(__LINE__, "dataset %s has rank %d", name, r);
    H5(H5Sget_simple_extent_dims(sp, dims, NULL), name);
    size_t n = 1;
    for (int i = 0; i < r; i++) n *= (size_t)dims[i];
    H5(H5Sclose(sp), name);
    *rank = r;
    return n;
}

static farr read_f(hid_t g, const char *name)
{
    farr a = {0};
    hid_t d = (hid_t)H5(H5Dopen2(g, name, H5P_DEFAULT), name);
    a.n = dataset_shape(d, name, &a.rank, a.dims);
    a.v = xmalloc(sizeof(float) * a.n);
    if (a.n) H5(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, a.v), name);
    H5(H5Dclose(d), name);
    return a;
}

static int32_t *read_i32(hid_t g, const char *name, size_t *n)
{
    int rank;
    hsize_t dims[8];
    hid_t d = (hid_t)H5(H5Dopen2(g, name, H5P_DEFAULT), name);
    *n = dataset_shape(d, name, &rank, dims);
    int32_t *v = xmalloc(sizeof(int32_t) * *n);
    if (*n) H5(H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), name);
    H5(H5Dclose(d), name);
    return v;
}

/* Numeric attribute(s) converted to the memory type; returns the element count. */
static size_t read_attr(hid_t g, const char *name, hid_t memtype, void *out, size_t max)
{
    hid_t a = (hid_t)H5(H5Aopen(g, name, H5P_DEFAULT), name);
    hid_t sp = (hid_t)H5(H5Aget_space(a), name);
    size_t n = (size_t)H5(H5Sget_simple_extent_npoints(sp), name);
    if (n < 1 || n > max) die(__LINE__, "attribute %s has %zu values, expected 1 to %zu", name, n, max);
    H5(H5Aread(a, memtype, out), name);
    H5(H5Sclose(sp), name);
    H5(H5Aclose(a), name);
    return n;
}

static int attr_int(hid_t g, const char *name)
{
    int v;
    read_attr(g, name, H5T_NATIVE_INT, &v, 1);
    return v;
}

static double attr_double(hid_t g, const char *name)
{
    double v;
    read_attr(g, name, H5T_NATIVE_DOUBLE, &v, 1);
    return v;
}

/* A fixed-length string attribute (what make_fixtures.py writes), NUL-terminated. */
static void attr_str(hid_t g, const char *name, char *buf, size_t size)
{
    hid_t a = (hid_t)H5(H5Aopen(g, name, H5P_DEFAULT), name);
    hid_t ft = (hid_t)H5(H5Aget_type(a), name);
    if (H5(H5Tget_class(ft), name) != H5T_STRING || H5(H5Tis_variable_str(ft), name) > 0)
        die(__LINE__, "attribute %s is not a fixed-length string", name);
    size_t len = H5Tget_size(ft);
    if (len == 0 || len + 1 > size) die(__LINE__, "attribute %s: string of %zu bytes", name, len);
    hid_t mt = (hid_t)H5(H5Tcopy(H5T_C_S1), name);
    H5(H5Tset_size(mt, len + 1), name);
    H5(H5Tset_strpad(mt, H5T_STR_NULLTERM), name);
    H5(H5Aread(a, mt, buf), name);
    buf[len] = '\0';
    H5(H5Tclose(mt), name);
    H5(H5Tclose(ft), name);
    H5(H5Aclose(a), name);
}

/* Calls fn for every group of the file, in name order. */
typedef void (*case_fn)(hid_t g, const char *name, int nthreads);

static void for_each_case(const char *file, case_fn fn, int nthreads)
{
    hid_t f = open_fixture(file);
    H5G_info_t info;
    H5(H5Gget_info(f, &info), file);
    if (info.nlinks == 0) die(__LINE__, "%s holds no cases", file);
    for (hsize_t i = 0; i < info.nlinks; i++) {
        char name[256];
        ssize_t len = (ssize_t)H5(H5Lget_name_by_idx(f, ".", H5_INDEX_NAME, H5_ITER_INC, i, name,
                                                      sizeof name, H5P_DEFAULT), file);
        if ((size_t)len >= sizeof name) die(__LINE__, "%s: group name too long", file);
        hid_t g = (hid_t)H5(H5Gopen2(f, name, H5P_DEFAULT), name);
        fn(g, name, nthreads);
        H5(H5Gclose(g), name);
    }
    H5(H5Fclose(f), file);
}

/* ---- comparing ---------------------------------------------------------------- */

static double max_abs(const float *v, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fabs(v[i]) > m ? fabs(v[i]) : m;
    return m;
}

static void compare(const char *cas, const char *field, const char *mode, int nt, const float *got,
                    const farr *want, double rtol, double atol)
{
    char what[384];
    snprintf(what, sizeof what, "%s/%s (%s, %d thread%s)", cas, field, mode, nt, nt > 1 ? "s" : "");
    gm_assert_all_close(what, got, want->v, want->n, atol, rtol);
}

/* The default tolerance, scaled to the reference's magnitude. */
static void compare_std(const char *cas, const char *field, const char *mode, int nt, const float *got,
                        const farr *want)
{
    compare(cas, field, mode, nt, got, want, RTOL, ATOL_MIN + ATOL_REL * max_abs(want->v, want->n));
}

static void expect_size(const char *cas, const char *what, size_t got, size_t want)
{
    if (got != want) die(__LINE__, "%s: %s has %zu values, gmorph has %zu", cas, what, want, got);
}

static gm_backend *make_backend(int nt)
{
    gm_backend *be;
    gm_error err;
    GM_OK_OR_FAIL(gm_backend_cpu_create(&be, nt, &err), &err, "gm_backend_cpu_create");
    return be;
}

/* ---- layers (ops.h5) ---------------------------------------------------------- */

enum { MAX_CASE_OPS = 8 };

typedef struct {
    gm_op op;
    int src[2]; /* op index inside the case, -1: x, -2: x2 */
} case_op;

/* Parses "conv2d 3 4 3 1 1 1;relu;add -1 0" (see make_fixtures.py). */
static int parse_ops(const char *cas, const char *spec, case_op *ops)
{
    int n = 0;
    const char *s = spec;
    while (*s) {
        if (n >= MAX_CASE_OPS) die(__LINE__, "%s: more than %d ops", cas, MAX_CASE_OPS);
        char item[128], name[32];
        const char *end = strchr(s, ';');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        if (len >= sizeof item) die(__LINE__, "%s: op spec too long", cas);
        memcpy(item, s, len);
        item[len] = '\0';
        s += len + (end ? 1 : 0);
        int used = 0;
        if (sscanf(item, "%31s%n", name, &used) != 1) die(__LINE__, "%s: empty op in \"%s\"", cas, spec);
        const char *args = item + used;
        int a[6], got = 0;
        float p = 0.0f;
        case_op *o = &ops[n];
        o->src[0] = n - 1;
        o->src[1] = -1;
        if (!strcmp(name, "conv2d")) {
            got = sscanf(args, "%d %d %d %d %d %d", &a[0], &a[1], &a[2], &a[3], &a[4], &a[5]) == 6;
            o->op = gm_op_conv2d(a[0], a[1], a[2], a[3], a[4], a[5]);
        } else if (!strcmp(name, "batchnorm2d")) {
            got = sscanf(args, "%d", &a[0]) == 1;
            o->op = gm_op_batchnorm2d(a[0]);
        } else if (!strcmp(name, "relu")) {
            got = 1;
            o->op = gm_op_relu();
        } else if (!strcmp(name, "maxpool2d") || !strcmp(name, "avgpool2d")) {
            got = sscanf(args, "%d %d %d", &a[0], &a[1], &a[2]) == 3;
            o->op = name[0] == 'm' ? gm_op_maxpool2d(a[0], a[1], a[2]) : gm_op_avgpool2d(a[0], a[1], a[2]);
        } else if (!strcmp(name, "globalavgpool")) {
            got = 1;
            o->op = gm_op_globalavgpool();
        } else if (!strcmp(name, "linear")) {
            got = sscanf(args, "%d %d %d", &a[0], &a[1], &a[2]) == 3;
            o->op = gm_op_linear(a[0], a[1], a[2]);
        } else if (!strcmp(name, "flatten")) {
            got = 1;
            o->op = gm_op_flatten();
        } else if (!strcmp(name, "dropout")) {
            got = sscanf(args, "%f", &p) == 1;
            o->op = gm_op_dropout(p);
        } else if (!strcmp(name, "add")) {
            got = sscanf(args, "%d %d", &a[0], &a[1]) == 2;
            o->op = gm_op_add();
            o->src[0] = a[0];
            o->src[1] = a[1];
        } else {
            die(__LINE__, "%s: unknown op \"%s\"", cas, name);
        }
        if (!got) die(__LINE__, "%s: bad arguments in \"%s\"", cas, item);
        n++;
    }
    if (n == 0) die(__LINE__, "%s: no ops", cas);
    return n;
}

typedef struct {
    const char *name;
    int nops, train, has_x2;
    case_op ops[MAX_CASE_OPS];
    int N;
    gm_shape in; /* per-sample shape of x */
    farr x, x2, params, buffers, dy, y, dx, dx2, grads, buffers_after;
} op_case;

/* A case's source index mapped into the block: embedded ops come first. */
static int block_src(int s, int embedded, int nembed)
{
    if (!embedded) return s; /* -1 is the block input, which is x */
    if (s == -1) return 0;
    if (s == -2) return 1;
    return s + nembed;
}

/* dx (and dx2) are the embedding convolutions' weight gradients, transposed. */
static void check_dx(const op_case *c, gm_net *net, int nembed, size_t nemb, const char *mode, int nt)
{
    const int N = c->N, C = c->in.c, hw = c->in.h * c->in.w;
    float *dx = xmalloc(sizeof(float) * nemb);
    for (int e = 0; e < nembed; e++) {
        const float *dw = gm_net_grads(net) + (size_t)e * nemb;
        for (int n = 0; n < N; n++)
            for (int ch = 0; ch < C; ch++)
                for (int p = 0; p < hw; p++)
                    dx[((size_t)n * C + ch) * hw + p] = dw[(size_t)ch * N * hw + (size_t)n * hw + p];
        compare_std(c->name, e == 0 ? "dx" : "dx2", mode, nt, dx, e == 0 ? &c->dx : &c->dx2);
    }
    free(dx);
}

static void run_op_case(const op_case *c, int embedded, int nt)
{
    const int N = c->N, C = c->in.c, hw = c->in.h * c->in.w;
    const int nembed = embedded ? 1 + c->has_x2 : 0;
    gm_error err;
    gm_block b = gm_block_empty(GM_BLOCK_CUSTOM);
    for (int e = 0; e < nembed; e++)
        GM_OK_OR_FAIL(gm_block_push(&b, gm_op_conv2d(N * hw, C, 1, 1, 0, 0), -1, -1, &err), &err, c->name);
    for (int i = 0; i < c->nops; i++)
        GM_OK_OR_FAIL(gm_block_push(&b, c->ops[i].op, block_src(c->ops[i].src[0], embedded, nembed),
                                    block_src(c->ops[i].src[1], embedded, nembed), &err),
                      &err, c->name);
    gm_shape net_in = embedded ? (gm_shape){N * hw, c->in.h, c->in.w} : c->in;
    gm_net_desc desc = {.input = net_in, .nblocks = 1, .blocks = &b, .parent = NULL};
    gm_backend *be = make_backend(nt);
    gm_net *net;
    GM_OK_OR_FAIL(gm_net_create(&net, be, &desc, N, 7, &err), &err, c->name);

    /* parameters: the embeddings' weights (from x, x2), then the case's */
    const size_t nemb = (size_t)C * (size_t)N * (size_t)hw, off = (size_t)nembed * nemb;
    expect_size(c->name, "params", gm_net_nparams(net) - off, c->params.n);
    expect_size(c->name, "buffers", gm_net_nbuffers(net), c->buffers.n);
    float *par = gm_net_params(net);
    for (int e = 0; e < nembed; e++) {
        const float *src = e == 0 ? c->x.v : c->x2.v;
        float *w = par + (size_t)e * nemb;
        for (int n = 0; n < N; n++)
            for (int ch = 0; ch < C; ch++)
                for (int p = 0; p < hw; p++)
                    w[(size_t)ch * N * hw + (size_t)n * hw + p] = src[((size_t)n * C + ch) * hw + p];
    }
    if (c->params.n) memcpy(par + off, c->params.v, sizeof(float) * c->params.n);

    /* input: x itself, or the one-hot planes */
    float *input = (float *)c->x.v;
    if (embedded) {
        size_t per = (size_t)N * hw * hw;
        input = calloc((size_t)N * per, sizeof(float));
        if (!input) die(__LINE__, "%s: out of memory for the one-hot input", c->name);
        for (int n = 0; n < N; n++)
            for (int p = 0; p < hw; p++) input[(size_t)n * per + ((size_t)n * hw + p) * hw + p] = 1.0f;
    }

    /* Two identical steps on the same net: the second one catches state left
     * behind by the first (activation gradients not zeroed, stale aux). */
    for (int step = 0; step < 2; step++) {
        char mode[64];
        snprintf(mode, sizeof mode, "%s, step %d", embedded ? "embedded" : "direct", step + 1);
        if (c->buffers.n) memcpy(gm_net_buffers(net), c->buffers.v, sizeof(float) * c->buffers.n);
        GM_OK_OR_FAIL(gm_net_forward(net, input, N, c->train, &err), &err, c->name);
        size_t ny = (size_t)N * gm_shape_numel(gm_net_output_shape(net, 0));
        expect_size(c->name, "y", ny, c->y.n);
        expect_size(c->name, "dy", ny, c->dy.n);
        compare_std(c->name, "y", mode, nt, gm_net_output(net, 0), &c->y);
        if (c->buffers.n)
            compare_std(c->name, "buffers_after", mode, nt, gm_net_buffers(net), &c->buffers_after);

        memcpy(gm_net_output_grad(net, 0), c->dy.v, sizeof(float) * ny);
        gm_net_zero_grad(net);
        GM_OK_OR_FAIL(gm_net_backward(net, &err), &err, c->name);
        if (c->params.n) compare_std(c->name, "grads", mode, nt, gm_net_grads(net) + off, &c->grads);
        if (embedded) check_dx(c, net, nembed, nemb, mode, nt);
    }
    if (embedded) free(input);
    gm_net_free(net);
    gm_backend_free(be);
}

static int flatten_first_only, flatten_first_cases;

static void op_case_fn(hid_t g, const char *name, int nt)
{
    op_case c = {.name = name};
    char spec[512];
    attr_str(g, "ops", spec, sizeof spec);
    c.nops = parse_ops(name, spec, c.ops);
    c.train = attr_int(g, "train");
    c.x = read_f(g, "x");
    if (c.x.rank != 4) die(__LINE__, "%s: x has rank %d, expected NCHW", name, c.x.rank);
    c.N = (int)c.x.dims[0];
    if (attr_int(g, "batch") != c.N) die(__LINE__, "%s: batch attribute disagrees with x", name);
    c.in = (gm_shape){(int)c.x.dims[1], (int)c.x.dims[2], (int)c.x.dims[3]};
    c.has_x2 = has_dataset(g, "x2");
    if (c.has_x2) {
        c.x2 = read_f(g, "x2");
        c.dx2 = read_f(g, "dx2");
        expect_size(name, "x2", c.x.n, c.x2.n);
    }
    c.params = read_f(g, "params");
    c.buffers = read_f(g, "buffers");
    c.dy = read_f(g, "dy");
    c.y = read_f(g, "y");
    c.dx = read_f(g, "dx");
    c.grads = read_f(g, "grads");
    c.buffers_after = read_f(g, "buffers_after");
    expect_size(name, "grads", c.grads.n, c.params.n);
    expect_size(name, "dx", c.dx.n, c.x.n);

    /* Direct mode makes a leading flatten a view of the net input itself:
     * that configuration has its own test (test_flatten_reads_net_input). */
    int flatten_first = c.ops[0].op.kind == GM_OP_FLATTEN;
    if (flatten_first_only) {
        if (flatten_first && !c.has_x2) {
            run_op_case(&c, 0, nt);
            flatten_first_cases++;
        }
    } else {
        if (!c.has_x2 && !flatten_first) run_op_case(&c, 0, nt);
        run_op_case(&c, 1, nt);
    }

    farr *all[] = {&c.x, &c.x2, &c.params, &c.buffers, &c.dy, &c.y, &c.dx, &c.dx2, &c.grads, &c.buffers_after};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]->v);
}

static void test_ops(void **state)
{
    flatten_first_only = 0;
    for_each_case("ops.h5", op_case_fn, *(int *)*state);
}

/*
 * A flatten that reads the net input directly, as the first block of an MLP
 * (gm_block_linear or gm_block_head on an image input) does: the net has to
 * alias the input buffer for that view.
 */
static void test_flatten_reads_net_input(void **state)
{
    flatten_first_only = 1;
    flatten_first_cases = 0;
    for_each_case("ops.h5", op_case_fn, *(int *)*state);
    assert_true(flatten_first_cases > 0);
}

/* ---- losses (losses.h5) -------------------------------------------------------- */

static void loss_case_fn(hid_t g, const char *name, int nt)
{
    char kind[64];
    attr_str(g, "kind", kind, sizeof kind);
    gm_loss_kind lk = GM_LOSS_CROSS_ENTROPY;
    if (!strcmp(kind, "l1"))
        lk = GM_LOSS_L1;
    else if (!strcmp(kind, "mse"))
        lk = GM_LOSS_MSE;
    else if (strcmp(kind, "cross_entropy"))
        die(__LINE__, "%s: unknown loss \"%s\"", name, kind);
    float scale = (float)attr_double(g, "scale");
    farr pred = read_f(g, "pred"), loss = read_f(g, "loss"), grad = read_f(g, "grad"), target = {0};
    int32_t *labels = NULL;
    size_t nlabels = 0;
    if (pred.rank != 2) die(__LINE__, "%s: pred has rank %d", name, pred.rank);
    const int N = (int)pred.dims[0], d = (int)pred.dims[1];
    if (lk == GM_LOSS_CROSS_ENTROPY) {
        labels = read_i32(g, "labels", &nlabels);
        expect_size(name, "labels", (size_t)N, nlabels);
    } else {
        target = read_f(g, "target");
        expect_size(name, "target", pred.n, target.n);
    }
    expect_size(name, "loss", 1, loss.n);

    /* The net's output is a (d,1,1) embedding of pred (see the top of the file). */
    gm_error err;
    gm_block b = gm_block_empty(GM_BLOCK_CUSTOM);
    GM_OK_OR_FAIL(gm_block_push(&b, gm_op_conv2d(N, d, 1, 1, 0, 0), -1, -1, &err), &err, name);
    gm_net_desc desc = {.input = {N, 1, 1}, .nblocks = 1, .blocks = &b, .parent = NULL};
    gm_backend *be = make_backend(nt);
    gm_net *net;
    GM_OK_OR_FAIL(gm_net_create(&net, be, &desc, N, 7, &err), &err, name);
    float *w = gm_net_params(net), *onehot = calloc((size_t)N * N, sizeof(float));
    if (!onehot) die(__LINE__, "out of memory");
    for (int n = 0; n < N; n++) {
        onehot[(size_t)n * N + n] = 1.0f;
        for (int j = 0; j < d; j++) w[(size_t)j * N + n] = pred.v[(size_t)n * d + j];
    }
    GM_OK_OR_FAIL(gm_net_forward(net, onehot, N, 1, &err), &err, name);
    compare_std(name, "pred", "net output", nt, gm_net_output(net, 0), &pred);
    float got;
    GM_OK_OR_FAIL(gm_net_loss(net, 0, lk, target.v, labels, scale, &got, &err), &err, name);
    compare(name, "loss", "gm_net_loss", nt, &got, &loss, 1e-5, 1e-7);
    compare_std(name, "grad", "gm_net_loss", nt, gm_net_output_grad(net, 0), &grad);

    gm_net_free(net);
    gm_backend_free(be);
    free(onehot);
    free(labels);
    free(pred.v);
    free(loss.v);
    free(grad.v);
    free(target.v);
}

static void test_losses(void **state) { for_each_case("losses.h5", loss_case_fn, *(int *)*state); }

/* ---- optimisers (optim.h5) ------------------------------------------------------- */

/* Parameters move by about lr per step: compare to a small part of that, plus
 * a few float32 ulps of the parameter itself. */
static double step_atol(double lr) { return 1e-3 * lr + 1e-7; }
#define STEP_RTOL 1e-6

static void optim_case_fn(hid_t g, const char *name, int nt)
{
    char kind[32];
    attr_str(g, "kind", kind, sizeof kind);
    const int steps = attr_int(g, "steps");
    farr lr = read_f(g, "lr"), p0 = read_f(g, "params0"), grads = read_f(g, "grads"),
         want = read_f(g, "params");
    const size_t n = p0.n;
    expect_size(name, "lr", (size_t)steps, lr.n);
    expect_size(name, "grads", (size_t)steps * n, grads.n);
    expect_size(name, "params", (size_t)steps * n, want.n);
    const float wd = (float)attr_double(g, "weight_decay");
    gm_update u;
    if (!strcmp(kind, "sgd"))
        u = gm_update_sgd(lr.v[0], (float)attr_double(g, "momentum"), wd, attr_double(g, "nesterov") != 0.0);
    else if (!strcmp(kind, "adam") || !strcmp(kind, "adamw"))
        u = (kind[4] == 'w' ? gm_update_adamw : gm_update_adam)(
            lr.v[0], (float)attr_double(g, "beta1"), (float)attr_double(g, "beta2"),
            (float)attr_double(g, "eps"), wd);
    else
        die(__LINE__, "%s: unknown optimiser \"%s\"", name, kind);

    gm_backend *be = make_backend(nt);
    gm_error err;
    gm_optim *opt;
    GM_OK_OR_FAIL(gm_optim_create(&opt, be, u, n, &err), &err, name);
    float *p = be->alloc(be, sizeof(float) * n), *gr = be->alloc(be, sizeof(float) * n);
    if (!p || !gr) die(__LINE__, "out of memory");
    be->to_device(be, p, p0.v, sizeof(float) * n);
    for (int k = 0; k < steps; k++) {
        char field[32];
        snprintf(field, sizeof field, "params after step %d", k + 1);
        be->to_device(be, gr, grads.v + (size_t)k * n, sizeof(float) * n);
        gm_optim_set_lr(opt, lr.v[k]);
        gm_optim_step(opt, p, gr);
        be->sync(be);
        assert_int_equal(gm_optim_steps(opt), k + 1);
        farr wk = {.v = want.v + (size_t)k * n, .n = n};
        compare(name, field, kind, nt, p, &wk, STEP_RTOL, step_atol(lr.v[k]));
    }
    be->free(be, p);
    be->free(be, gr);
    gm_optim_free(opt);
    gm_backend_free(be);
    free(lr.v);
    free(p0.v);
    free(grads.v);
    free(want.v);
}

static void test_optim(void **state) { for_each_case("optim.h5", optim_case_fn, *(int *)*state); }

/* ---- whole networks (nets.h5) ------------------------------------------------------ */

static void expect_ints(const char *cas, const char *what, const int *got, const int *want, int n)
{
    for (int i = 0; i < n; i++)
        if (got[i] != want[i])
            die(__LINE__, "%s: %s[%d] is %d in gmorph's preset, %d in the fixture", cas, what, i, got[i], want[i]);
}

static void build_model(hid_t g, const char *name, gm_model *m)
{
    char arch[32];
    int widths[GM_MAX_STAGES], shape[3], stages[GM_MAX_STAGES];
    gm_error err;
    attr_str(g, "arch", arch, sizeof arch);
    const int depth = attr_int(g, "depth"), classes = attr_int(g, "classes");
    if (read_attr(g, "widths", H5T_NATIVE_INT, widths, GM_MAX_STAGES) != GM_MAX_STAGES)
        die(__LINE__, "%s: widths must have %d entries", name, GM_MAX_STAGES);
    if (read_attr(g, "input_shape", H5T_NATIVE_INT, shape, 3) != 3) die(__LINE__, "%s: input_shape", name);
    gm_shape in = {shape[0], shape[1], shape[2]};
    if (!strcmp(arch, "resnet")) {
        gm_resnet_config rc;
        GM_OK_OR_FAIL(gm_resnet_preset(&rc, depth, widths, &err), &err, name);
        int ns = (int)read_attr(g, "stage_blocks", H5T_NATIVE_INT, stages, GM_MAX_STAGES);
        assert_int_equal(rc.nstages, ns);
        expect_ints(name, "blocks per stage", rc.blocks, stages, ns);
        GM_OK_OR_FAIL(gm_model_resnet(m, &rc, in, classes, &err), &err, name);
    } else if (!strcmp(arch, "vgg")) {
        gm_vgg_config vc;
        int fc;
        GM_OK_OR_FAIL(gm_vgg_preset(&vc, depth, widths, &err), &err, name);
        int ns = (int)read_attr(g, "stage_convs", H5T_NATIVE_INT, stages, GM_MAX_STAGES);
        read_attr(g, "fc", H5T_NATIVE_INT, &fc, 1);
        assert_int_equal(vc.nstages, ns);
        expect_ints(name, "convs per stage", vc.convs, stages, ns);
        assert_int_equal(vc.fc, fc);
        vc.dropout = 0.0f; /* deterministic: no dropout op at all */
        GM_OK_OR_FAIL(gm_model_vgg(m, &vc, in, classes, &err), &err, name);
    } else {
        die(__LINE__, "%s: unknown architecture \"%s\"", name, arch);
    }
}

static void net_case_fn(hid_t g, const char *name, int nt)
{
    gm_model *m = xmalloc(sizeof *m);
    build_model(g, name, m);
    const int batch = attr_int(g, "batch");
    farr params = read_f(g, "params"), buffers = read_f(g, "buffers"), x = read_f(g, "x"),
         logits = read_f(g, "logits"), loss = read_f(g, "loss"), grads = read_f(g, "grads"),
         buffers_after = read_f(g, "buffers_after"), params_after = read_f(g, "params_after_adam"),
         logits_eval = read_f(g, "logits_eval");
    size_t nlabels;
    int32_t *labels = read_i32(g, "labels", &nlabels);
    expect_size(name, "labels", (size_t)batch, nlabels);
    expect_size(name, "x", (size_t)batch * gm_shape_numel(m->input), x.n);
    expect_size(name, "logits", (size_t)batch * (size_t)m->classes, logits.n);
    expect_size(name, "logits_eval", logits.n, logits_eval.n);

    gm_error err;
    gm_backend *be = make_backend(nt);
    gm_net *net;
    gm_net_desc desc = gm_model_desc(m);
    GM_OK_OR_FAIL(gm_net_create(&net, be, &desc, batch, 3, &err), &err, name);
    expect_size(name, "params", gm_net_nparams(net), params.n);
    expect_size(name, "grads", gm_net_nparams(net), grads.n);
    expect_size(name, "params_after_adam", gm_net_nparams(net), params_after.n);
    expect_size(name, "buffers", gm_net_nbuffers(net), buffers.n);
    expect_size(name, "buffers_after", gm_net_nbuffers(net), buffers_after.n);
    memcpy(gm_net_params(net), params.v, sizeof(float) * params.n);
    memcpy(gm_net_buffers(net), buffers.v, sizeof(float) * buffers.n);

    /* one training step: forward, cross-entropy, backward, Adam */
    GM_OK_OR_FAIL(gm_net_forward(net, x.v, batch, 1, &err), &err, name);
    compare_std(name, "logits", "train", nt, gm_net_output(net, 0), &logits);
    compare_std(name, "buffers_after", "train", nt, gm_net_buffers(net), &buffers_after);
    float got_loss;
    GM_OK_OR_FAIL(gm_net_loss(net, 0, GM_LOSS_CROSS_ENTROPY, NULL, labels, 1.0f, &got_loss, &err), &err, name);
    compare(name, "loss", "train", nt, &got_loss, &loss, 1e-5, 1e-7);
    gm_net_zero_grad(net);
    GM_OK_OR_FAIL(gm_net_backward(net, &err), &err, name);
    compare_std(name, "grads", "train", nt, gm_net_grads(net), &grads);

    const float lr = (float)attr_double(g, "adam_lr");
    gm_update u = gm_update_adam(lr, (float)attr_double(g, "adam_beta1"), (float)attr_double(g, "adam_beta2"),
                                 (float)attr_double(g, "adam_eps"), (float)attr_double(g, "adam_weight_decay"));
    gm_optim *opt;
    GM_OK_OR_FAIL(gm_optim_create(&opt, be, u, gm_net_nparams(net), &err), &err, name);
    gm_optim_step(opt, gm_net_params(net), gm_net_grads(net));
    compare(name, "params_after_adam", "train", nt, gm_net_params(net), &params_after, STEP_RTOL, step_atol(lr));

    /* then inference with the updated parameters and running statistics */
    GM_OK_OR_FAIL(gm_net_forward(net, x.v, batch, 0, &err), &err, name);
    compare_std(name, "logits_eval", "eval", nt, gm_net_output(net, 0), &logits_eval);

    gm_optim_free(opt);
    gm_net_free(net);
    gm_backend_free(be);
    farr *all[] = {&params, &buffers, &x, &logits, &loss, &grads, &buffers_after, &params_after, &logits_eval};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]->v);
    free(labels);
    free(m);
}

static void test_nets(void **state) { for_each_case("nets.h5", net_case_fn, *(int *)*state); }

int main(void)
{
    static int one = 1, two = 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate(test_ops, &one),    cmocka_unit_test_prestate(test_ops, &two),
        cmocka_unit_test_prestate(test_flatten_reads_net_input, &one),
        cmocka_unit_test_prestate(test_losses, &one), cmocka_unit_test_prestate(test_losses, &two),
        cmocka_unit_test_prestate(test_optim, &one),  cmocka_unit_test_prestate(test_optim, &two),
        cmocka_unit_test_prestate(test_nets, &one),   cmocka_unit_test_prestate(test_nets, &two),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

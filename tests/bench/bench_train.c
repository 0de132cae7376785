/*
 * gmorph-bench: measurements for results/ (not a test; see results/README.md).
 *
 *   gmorph-bench arch  ARCH WIDTHS C,H,W CLASSES      the architecture as JSON
 *   gmorph-bench train ARCH WIDTHS C,H,W CLASSES THREADS
 *        training images/s (batch 64, Adam), batch-1 latency, peak memory
 *   gmorph-bench profile ARCH WIDTHS C,H,W CLASSES THREADS
 *        every block's forward and backward time in a training step (batch 64)
 *   gmorph-bench gemm  ARCH WIDTHS C,H,W CLASSES THREADS
 *        OpenBLAS sgemm peak and every convolution's forward GFLOP/s (batch 64)
 *
 * Every result is one JSON line on stdout, so a script can pair it with the
 * PyTorch peer (bench_torch.py) measured in the same run.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "gm_models.h"
#include "gm_optim.h"
#include "gm_train.h"

enum { BATCH = 64, WARMUP = 5, STEPS = 12, ROUNDS = 3 };

static long max_rss_kb(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss;
}

static void print_op(const gm_op *op, const int *src)
{
    printf("{\"op\":\"%s\",\"src\":[%d,%d]", gm_op_name(op->kind), src[0], src[1]);
    switch (op->kind) {
    case GM_OP_CONV2D:
        printf(",\"cin\":%d,\"cout\":%d,\"k\":%d,\"stride\":%d,\"pad\":%d,\"bias\":%d", op->p.conv.cin,
               op->p.conv.cout, op->p.conv.k, op->p.conv.stride, op->p.conv.pad, op->p.conv.bias);
        break;
    case GM_OP_BATCHNORM2D: printf(",\"c\":%d", op->p.bn.c); break;
    case GM_OP_MAXPOOL2D:
    case GM_OP_AVGPOOL2D:
        printf(",\"k\":%d,\"stride\":%d,\"pad\":%d", op->p.pool.k, op->p.pool.stride, op->p.pool.pad);
        break;
    case GM_OP_LINEAR: printf(",\"in\":%d,\"out\":%d,\"bias\":%d", op->p.linear.in, op->p.linear.out, op->p.linear.bias); break;
    case GM_OP_DROPOUT: printf(",\"p\":%g", (double)op->p.dropout.p); break;
    default: break;
    }
    printf("}");
}

static void cmd_arch(const gm_model *m)
{
    printf("{\"input\":[%d,%d,%d],\"classes\":%d,\"params\":%zu,\"blocks\":[", m->input.c, m->input.h,
           m->input.w, m->classes, gm_model_nparams(m));
    for (int b = 0; b < m->nblocks; b++) {
        printf("%s{\"kind\":\"%s\",\"ops\":[", b ? "," : "", gm_block_kind_name(m->blocks[b].kind));
        for (int i = 0; i < m->blocks[b].nops; i++) {
            if (i) printf(",");
            print_op(&m->blocks[b].ops[i], m->blocks[b].src[i]);
        }
        printf("]}");
    }
    printf("]}\n");
}

static int cmd_train(const gm_model *m, int threads)
{
    gm_error err;
    gm_backend *be;
    gm_net *net;
    gm_optim *opt;
    long rss0 = max_rss_kb();
    gm_net_desc d = gm_model_desc(m);
    if (gm_backend_cpu_create(&be, threads, &err) || gm_net_create(&net, be, &d, BATCH, 1, &err) ||
        gm_optim_create(&opt, be, gm_update_adam(1e-3f, 0.9f, 0.999f, 1e-8f, 0), gm_net_nparams(net), &err)) {
        fprintf(stderr, "gmorph-bench: %s\n", err.msg);
        return 1;
    }
    size_t numel = gm_shape_numel(m->input);
    float *x = malloc(sizeof(float) * BATCH * numel);
    int32_t y[BATCH];
    gm_rng rng;
    gm_rng_seed(&rng, 1);
    for (size_t i = 0; i < BATCH * numel; i++) x[i] = gm_rng_normal(&rng);
    for (int i = 0; i < BATCH; i++) y[i] = (int32_t)gm_rng_below(&rng, (uint32_t)m->classes);
    double rates[ROUNDS];
    for (int r = -1; r < ROUNDS; r++) {
        double t0 = gm_now_s();
        for (int s = 0; s < (r < 0 ? WARMUP : STEPS); s++) {
            float loss;
            gm_net_forward(net, x, BATCH, 1, &err);
            gm_net_loss(net, 0, GM_LOSS_CROSS_ENTROPY, NULL, y, 1.0f, &loss, &err);
            gm_net_zero_grad(net);
            gm_net_backward(net, &err);
            gm_optim_step(opt, gm_net_params(net), gm_net_grads(net));
        }
        if (r >= 0) rates[r] = STEPS * BATCH / (gm_now_s() - t0);
    }
    long rss1 = max_rss_kb();
    double ms;
    gm_measure_latency(net, 20, 201, &ms, &err);
    printf("{\"impl\":\"gmorph\",\"threads\":%d,\"images_per_s\":%.1f,\"latency_ms\":%.4f,"
           "\"peak_mb\":%.1f,\"params\":%zu,\"mflop\":%.2f,\"blas_core\":\"%s\"}\n",
           threads, gm_median(rates, ROUNDS), ms, (double)(rss1 - rss0) / 1024.0, gm_net_nparams(net),
           (double)gm_net_flops(net) / 1e6, gm_backend_cpu_blas_core());
    free(x);
    gm_optim_free(opt);
    gm_net_free(net);
    gm_backend_free(be);
    return 0;
}

/* Median seconds of f over reps calls after a warm-up call. */
#define TIME_MEDIAN(out, reps, stmt)                                   \
    do {                                                               \
        double t_[reps];                                               \
        stmt;                                                          \
        for (int i_ = 0; i_ < (reps); i_++) {                          \
            double s_ = gm_now_s();                                    \
            stmt;                                                      \
            t_[i_] = gm_now_s() - s_;                                  \
        }                                                              \
        (out) = gm_median(t_, (reps));                                 \
    } while (0)

static int cmd_gemm(const gm_model *m, int threads)
{
    gm_error err;
    gm_backend *be;
    if (gm_backend_cpu_create(&be, threads, &err)) return 1;
    /* OpenBLAS's own peak: a large square product, threads as ours */
    openblas_set_num_threads(threads);
    enum { N = 1024 };
    float *a = calloc(N * N, 4), *b = calloc(N * N, 4), *c = calloc(N * N, 4);
    double t;
    TIME_MEDIAN(t, 5, cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a, N, b, N, 0.0f, c, N));
    double peak = 2.0 * N * N * N / t / 1e9;
    openblas_set_num_threads(1);
    free(a); free(b); free(c);
    printf("{\"sgemm_peak_gflops\":%.1f,\"threads\":%d,\"blas_core\":\"%s\"}\n", peak, threads,
           gm_backend_cpu_blas_core());
    gm_shape cur = m->input;
    for (int bl = 0; bl < m->nblocks; bl++) {
        const gm_block *blk = &m->blocks[bl];
        gm_shape shapes[GM_BLOCK_MAX_OPS];
        gm_block_shapes(blk, cur, shapes);
        for (int i = 0; i < blk->nops; i++) {
            const gm_op *op = &blk->ops[i];
            if (op->kind != GM_OP_CONV2D) continue;
            gm_shape in = blk->src[i][0] < 0 ? cur : shapes[blk->src[i][0]];
            size_t nin = BATCH * gm_shape_numel(in), nout = BATCH * gm_shape_numel(shapes[i]);
            float *x = calloc(nin, 4), *y = calloc(nout, 4), *w = calloc(gm_op_nparams(op), 4);
            float *dx = calloc(nin, 4), *dw = calloc(gm_op_nparams(op), 4);
            void *aux = NULL;
            be->reserve_scratch(be, be->scratch_bytes(be, op, in, shapes[i], BATCH), &err);
            gm_op_args args = {.op = op, .in = {in, in}, .out = shapes[i], .batch = BATCH, .train = 1,
                               .x = {x, NULL}, .y = y, .w = w, .aux = aux, .dy = y, .dx = {dx, NULL}, .dw = dw};
            double tf, tb;
            TIME_MEDIAN(tf, 7, be->forward(be, &args));
            TIME_MEDIAN(tb, 7, be->backward(be, &args));
            double fl = (double)gm_op_flops(op, in, shapes[i]) * BATCH;
            printf("{\"block\":%d,\"op\":%d,\"in\":[%d,%d,%d],\"out\":[%d,%d,%d],\"k\":%d,\"stride\":%d,"
                   "\"mflop\":%.1f,\"fwd_gflops\":%.1f,\"bwd_gflops\":%.1f,\"fwd_share\":%.3f,\"bwd_share\":%.3f}\n",
                   bl, i, in.c, in.h, in.w, shapes[i].c, shapes[i].h, shapes[i].w, op->p.conv.k, op->p.conv.stride,
                   fl / 1e6, fl / tf / 1e9, 2 * fl / tb / 1e9, fl / tf / 1e9 / peak, 2 * fl / tb / 1e9 / peak);
            free(x); free(y); free(w); free(dx); free(dw);
        }
        gm_block_infer(blk, cur, &cur, NULL);
    }
    gm_backend_free(be);
    return 0;
}

static int cmd_profile(const gm_model *m, int threads)
{
    gm_error err;
    gm_backend *be;
    gm_net *net;
    gm_net_desc d = gm_model_desc(m);
    if (gm_backend_cpu_create(&be, threads, &err) || gm_net_create(&net, be, &d, BATCH, 1, &err)) {
        fprintf(stderr, "gmorph-bench: %s\n", err.msg);
        return 1;
    }
    size_t numel = gm_shape_numel(m->input);
    float *x = malloc(sizeof(float) * BATCH * numel);
    gm_rng rng;
    gm_rng_seed(&rng, 1);
    for (size_t i = 0; i < BATCH * numel; i++) x[i] = gm_rng_normal(&rng);
    double fwd[GM_MODEL_MAX_BLOCKS], bwd[GM_MODEL_MAX_BLOCKS];
    gm_net_forward(net, x, BATCH, 1, &err);
    gm_net_time_blocks(net, 9, fwd, bwd, &err);
    for (int b = 0; b < m->nblocks; b++) {
        gm_shape in = gm_net_block_input_shape(net, b);
        printf("{\"block\":%d,\"kind\":\"%s\",\"in\":[%d,%d,%d],\"mflop\":%.2f,\"fwd_ms\":%.3f,\"bwd_ms\":%.3f}\n",
               b, gm_block_kind_name(m->blocks[b].kind), in.c, in.h, in.w,
               (double)gm_block_flops(&m->blocks[b], in) * BATCH / 1e6, fwd[b] * 1e3, bwd[b] * 1e3);
    }
    free(x);
    gm_net_free(net);
    gm_backend_free(be);
    return 0;
}

static int parse_list(const char *s, int *v, int max)
{
    int n = 0;
    while (n < max && *s) {
        v[n++] = (int)strtol(s, (char **)&s, 10);
        if (*s == ',') s++;
    }
    return n;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: gmorph-bench arch|train|gemm ARCH WIDTHS C,H,W CLASSES [THREADS]\n");
        return 2;
    }
    int widths[5] = {0}, in[3] = {0};
    parse_list(argv[3], widths, 4);
    if (parse_list(argv[4], in, 3) != 3) {
        fprintf(stderr, "gmorph-bench: input shape must be C,H,W\n");
        return 2;
    }
    static gm_model m;
    gm_error err;
    if (gm_model_from_name(&m, argv[2], widths, (gm_shape){in[0], in[1], in[2]}, atoi(argv[5]), &err)) {
        fprintf(stderr, "gmorph-bench: %s\n", err.msg);
        return 2;
    }
    int threads = argc > 6 ? atoi(argv[6]) : 1;
    if (!strcmp(argv[1], "arch")) {
        cmd_arch(&m);
        return 0;
    }
    if (!strcmp(argv[1], "train")) return cmd_train(&m, threads);
    if (!strcmp(argv[1], "gemm")) return cmd_gemm(&m, threads);
    if (!strcmp(argv[1], "profile")) return cmd_profile(&m, threads);
    fprintf(stderr, "gmorph-bench: unknown command %s\n", argv[1]);
    return 2;
}

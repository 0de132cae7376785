/*
 * The executor: a training step allocates nothing after the first; training
 * lowers the loss; a tree computes a shared prefix once and matches separate
 * chains; parameter counts follow from the architecture; runs repeat exactly.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gm_models.h"
#include "gm_net.h"
#include "gm_optim.h"
#include "test_util.h"

/* ---- allocation counting (the link wraps our objects' allocator calls) ---- */
static long g_allocs; /* test-only counter: the wraps below have no other place to count */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t s);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
int __real_posix_memalign(void **p, size_t a, size_t n);
void *__wrap_malloc(size_t n) { g_allocs++; return __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t s) { g_allocs++; return __real_calloc(n, s); }
void *__wrap_realloc(void *p, size_t n) { g_allocs++; return __real_realloc(p, n); }
void *__wrap_aligned_alloc(size_t a, size_t n) { g_allocs++; return __real_aligned_alloc(a, n); }
int __wrap_posix_memalign(void **p, size_t a, size_t n) { g_allocs++; return __real_posix_memalign(p, a, n); }

/* Images of class k are a class pattern plus noise: learnable in a few steps. */
static void make_batch(float *x, int32_t *y, int n, gm_shape s, int classes, gm_rng *rng)
{
    size_t numel = gm_shape_numel(s);
    for (int i = 0; i < n; i++) {
        y[i] = (int32_t)gm_rng_below(rng, (uint32_t)classes);
        for (size_t j = 0; j < numel; j++) {
            float pattern = ((j * 7 + (size_t)y[i] * 13) % 5 == 0) ? 1.0f : 0.0f;
            x[(size_t)i * numel + j] = pattern + 0.3f * gm_rng_normal(rng);
        }
    }
}

typedef struct {
    gm_backend *be;
    gm_net *net;
    gm_optim *opt;
} trainer;

static void trainer_init(trainer *t, const gm_model *m, int batch, int nt, uint64_t seed)
{
    gm_error err;
    assert_int_equal(gm_backend_cpu_create(&t->be, nt, &err), GM_OK);
    gm_net_desc d = gm_model_desc(m);
    gm_status s = gm_net_create(&t->net, t->be, &d, batch, seed, &err);
    if (s != GM_OK) fail_msg("%s", err.msg);
    assert_int_equal(gm_optim_create(&t->opt, t->be, gm_update_adam(3e-3f, 0.9f, 0.999f, 1e-8f, 0.0f),
                                     gm_net_nparams(t->net), &err), GM_OK);
}

static void trainer_free(trainer *t)
{
    gm_optim_free(t->opt);
    gm_net_free(t->net);
    gm_backend_free(t->be);
}

static float train_step(trainer *t, const float *x, const int32_t *y, int batch)
{
    gm_error err;
    float loss;
    assert_int_equal(gm_net_forward(t->net, x, batch, 1, &err), GM_OK);
    assert_int_equal(gm_net_loss(t->net, 0, GM_LOSS_CROSS_ENTROPY, NULL, y, 1.0f, &loss, &err), GM_OK);
    gm_net_zero_grad(t->net);
    assert_int_equal(gm_net_backward(t->net, &err), GM_OK);
    gm_optim_step(t->opt, gm_net_params(t->net), gm_net_grads(t->net));
    return loss;
}

static void small_resnet(gm_model *m, gm_shape in, int classes)
{
    gm_resnet_config c;
    gm_error err;
    const int widths[4] = {4, 8, 0, 0};
    assert_int_equal(gm_resnet_preset(&c, 8, widths, &err), GM_OK);
    assert_int_equal(gm_model_resnet(m, &c, in, classes, &err), GM_OK);
}

static void test_step_allocates_nothing(void **state)
{
    (void)state;
    static gm_model m;
    gm_vgg_config c;
    gm_error err;
    const int widths[4] = {8, 16, 16, 32};
    assert_int_equal(gm_vgg_preset(&c, 13, widths, &err), GM_OK);
    gm_shape in = {1, 32, 32};
    assert_int_equal(gm_model_vgg(&m, &c, in, 10, &err), GM_OK);
    enum { B = 16 };
    float *x = malloc(sizeof(float) * B * gm_shape_numel(in));
    int32_t y[B];
    gm_rng rng;
    gm_rng_seed(&rng, 3);
    make_batch(x, y, B, in, 10, &rng);
    trainer t;
    trainer_init(&t, &m, B, 2, 1);
    train_step(&t, x, y, B);
    long before = g_allocs;
    for (int i = 0; i < 3; i++) train_step(&t, x, y, B);
    assert_int_equal(g_allocs - before, 0);
    assert_true(before > 0); /* the wraps do see the allocations of net creation */
    trainer_free(&t);
    free(x);
}

static void test_training_lowers_loss(void **state)
{
    (void)state;
    static gm_model m;
    gm_shape in = {1, 12, 12};
    small_resnet(&m, in, 3);
    enum { B = 32 };
    float x[B * 144];
    int32_t y[B];
    gm_rng rng;
    gm_rng_seed(&rng, 11);
    trainer t;
    trainer_init(&t, &m, B, 2, 5);
    float first = 0.0f, last = 0.0f;
    for (int step = 0; step < 60; step++) {
        make_batch(x, y, B, in, 3, &rng);
        float l = train_step(&t, x, y, B);
        if (step == 0) first = l;
        last = l;
    }
    make_batch(x, y, B, in, 3, &rng);
    gm_error err;
    assert_int_equal(gm_net_forward(t.net, x, B, 0, &err), GM_OK);
    const float *logits = gm_net_output(t.net, 0);
    int correct = 0;
    for (int i = 0; i < B; i++) {
        int best = 0;
        for (int k = 1; k < 3; k++) best = logits[i * 3 + k] > logits[i * 3 + best] ? k : best;
        correct += best == y[i];
    }
    print_message("  loss %.3f -> %.3f, held-out accuracy %d/%d\n", (double)first, (double)last, correct, B);
    assert_true(last < 0.5f * first);
    assert_true(correct >= B * 3 / 4); /* chance is 1/3 */
    trainer_free(&t);
}

static void test_parameter_count(void **state)
{
    (void)state;
    static gm_model m;
    small_resnet(&m, (gm_shape){1, 8, 8}, 3);
    /* stem 1->4 conv+BN; two 4->4 BasicBlocks; one 4->8 stride-2 block with a 1x1
     * shortcut; head 8->3 with bias */
    size_t stem = 1 * 4 * 9 + 8, basic44 = 2 * (4 * 4 * 9 + 8);
    size_t down = 4 * 8 * 9 + 16 + 8 * 8 * 9 + 16 + 4 * 8 + 16, head = 8 * 3 + 3;
    assert_int_equal(gm_model_nparams(&m), stem + 2 * basic44 + down + head);
    gm_block conv = gm_block_conv(3, 8, 3, 1, 1, 1, 1);
    /* conv: 2*8*3*9 per pixel; BN 2 per element; ReLU 1 per element */
    assert_int_equal(gm_block_flops(&conv, (gm_shape){3, 10, 10}), 100ull * (2 * 8 * 27 + 8 * 3));
}

static void test_tree_matches_chains(void **state)
{
    (void)state;
    gm_shape in = {2, 10, 10};
    gm_block blocks[3] = {gm_block_conv(2, 4, 3, 1, 1, 1, 1), gm_block_head((gm_shape){4, 10, 10}, 3),
                          gm_block_head((gm_shape){4, 10, 10}, 5)};
    int parent[3] = {-1, 0, 0};
    gm_backend *be;
    gm_error err;
    assert_int_equal(gm_backend_cpu_create(&be, 2, &err), GM_OK);
    gm_net *tree, *a, *b;
    gm_net_desc td = {in, 3, blocks, parent};
    assert_int_equal(gm_net_create(&tree, be, &td, 4, 9, &err), GM_OK);
    assert_int_equal(gm_net_noutputs(tree), 2);
    gm_block ba[2] = {blocks[0], blocks[1]}, bb[2] = {blocks[0], blocks[2]};
    gm_net_desc da = {in, 2, ba, NULL}, db = {in, 2, bb, NULL};
    assert_int_equal(gm_net_create(&a, be, &da, 4, 1, &err), GM_OK);
    assert_int_equal(gm_net_create(&b, be, &db, 4, 2, &err), GM_OK);
    /* same weights: the shared block, then each head */
    size_t h1 = gm_net_block_param_offset(tree, 1), h2 = gm_net_block_param_offset(tree, 2);
    float *tp = gm_net_params(tree);
    memcpy(gm_net_params(a), tp, sizeof(float) * gm_net_nparams(a));
    memcpy(gm_net_params(b), tp, sizeof(float) * h1);
    memcpy(gm_net_params(b) + h1, tp + h2, sizeof(float) * (gm_net_nparams(tree) - h2));
    assert_true(gm_net_flops(tree) < gm_net_flops(a) + gm_net_flops(b));

    float x[4 * 200];
    int32_t ya[4] = {0, 1, 2, 1}, yb[4] = {4, 0, 3, 2};
    gm_rng rng;
    gm_rng_seed(&rng, 4);
    gm_fill_uniform(x, 800, &rng, -1, 1);
    float l;
    gm_net *nets[3] = {tree, a, b};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(gm_net_forward(nets[i], x, 4, 1, &err), GM_OK);
        gm_net_zero_grad(nets[i]);
    }
    assert_memory_equal(gm_net_output(tree, 0), gm_net_output(a, 0), sizeof(float) * 12);
    assert_memory_equal(gm_net_output(tree, 1), gm_net_output(b, 0), sizeof(float) * 20);
    assert_int_equal(gm_net_loss(tree, 0, GM_LOSS_CROSS_ENTROPY, NULL, ya, 1.0f, &l, &err), GM_OK);
    assert_int_equal(gm_net_loss(tree, 1, GM_LOSS_CROSS_ENTROPY, NULL, yb, 1.0f, &l, &err), GM_OK);
    assert_int_equal(gm_net_loss(a, 0, GM_LOSS_CROSS_ENTROPY, NULL, ya, 1.0f, &l, &err), GM_OK);
    assert_int_equal(gm_net_loss(b, 0, GM_LOSS_CROSS_ENTROPY, NULL, yb, 1.0f, &l, &err), GM_OK);
    for (int i = 0; i < 3; i++) assert_int_equal(gm_net_backward(nets[i], &err), GM_OK);
    /* the shared block's gradient is the sum of both tasks' gradients */
    const float *tg = gm_net_grads(tree), *ag = gm_net_grads(a), *bg = gm_net_grads(b);
    for (size_t i = 0; i < h1; i++) gm_assert_close("shared grad", i, tg[i], ag[i] + bg[i], 1e-6, 1e-5);
    gm_assert_all_close("head 2 grad", tg + h2, bg + h1, gm_net_nparams(tree) - h2, 0, 0);
    gm_net_free(tree);
    gm_net_free(a);
    gm_net_free(b);
    gm_backend_free(be);
}

/* A tensor on the device is read in place and gives what the host path gives. */
static void test_forward_tensor(void **state)
{
    (void)state;
    static gm_model m;
    gm_shape in = {1, 12, 12};
    small_resnet(&m, in, 3);
    trainer t;
    trainer_init(&t, &m, 4, 1, 3);
    float x[4 * 144], logits[12];
    gm_rng rng;
    gm_rng_seed(&rng, 6);
    gm_fill_uniform(x, 4 * 144, &rng, -1, 1);
    gm_error err;
    assert_int_equal(gm_net_forward(t.net, x, 4, 0, &err), GM_OK);
    memcpy(logits, gm_net_output(t.net, 0), sizeof logits);
    gm_tensor xt;
    assert_int_equal(gm_tensor_create(&xt, t.be, 4, in, &err), GM_OK);
    assert_int_equal(gm_tensor_from_host(&xt, 0, x, 4 * 144, &err), GM_OK);
    assert_int_equal(gm_net_forward_tensor(t.net, &xt, 0, &err), GM_OK);
    assert_memory_equal(gm_net_output(t.net, 0), logits, sizeof logits);
    gm_tensor_free(&xt);
    trainer_free(&t);
}

static void test_runs_repeat_exactly(void **state)
{
    (void)state;
    static gm_model m;
    gm_shape in = {1, 12, 12};
    small_resnet(&m, in, 3);
    float losses[2][5];
    for (int r = 0; r < 2; r++) {
        gm_rng rng;
        gm_rng_seed(&rng, 21);
        trainer t;
        trainer_init(&t, &m, 8, 2, 77);
        float x[8 * 144];
        int32_t y[8];
        for (int s = 0; s < 5; s++) {
            make_batch(x, y, 8, in, 3, &rng);
            losses[r][s] = train_step(&t, x, y, 8);
        }
        trainer_free(&t);
    }
    assert_memory_equal(losses[0], losses[1], sizeof losses[0]);
}

static void test_eval_is_per_sample(void **state)
{
    (void)state;
    static gm_model m;
    gm_shape in = {1, 12, 12};
    small_resnet(&m, in, 3);
    trainer t;
    trainer_init(&t, &m, 8, 1, 8);
    float x[8 * 144];
    int32_t y[8];
    gm_rng rng;
    gm_rng_seed(&rng, 2);
    for (int s = 0; s < 3; s++) {
        make_batch(x, y, 8, in, 3, &rng);
        train_step(&t, x, y, 8);
    }
    gm_error err;
    float batch_logits[24];
    assert_int_equal(gm_net_forward(t.net, x, 8, 0, &err), GM_OK);
    memcpy(batch_logits, gm_net_output(t.net, 0), sizeof batch_logits);
    assert_int_equal(gm_net_forward(t.net, x + 3 * 144, 1, 0, &err), GM_OK);
    gm_assert_all_close("sample 3 alone", gm_net_output(t.net, 0), batch_logits + 9, 3, 1e-5, 1e-5);
    trainer_free(&t);
}

/*
 * A loss on an inner block (feature matching): its parameter gradients, with a
 * head loss beside it, equal central finite differences of the summed loss;
 * the inner gradient joins one backward only.
 */
static double two_losses(gm_net *net, const float *x, int n, int b, const float *feat, const float *logit_t)
{
    gm_error err;
    float l1, l2;
    assert_ok(gm_net_forward(net, x, n, 0, &err), err);
    assert_ok(gm_net_block_loss(net, b, feat, 0.7f, &l1, &err), err);
    assert_ok(gm_net_loss(net, 0, GM_LOSS_MSE, logit_t, NULL, 1.0f, &l2, &err), err);
    return 0.7 * (double)l1 + (double)l2;
}

static void test_block_loss_gradient(void **state)
{
    (void)state;
    enum { N = 3 };
    const gm_shape in = {2, 6, 6};
    gm_block blocks[3] = {gm_block_conv(2, 3, 3, 1, 1, 1, 1), gm_block_conv(3, 4, 3, 1, 1, 1, 0), {0}};
    blocks[2] = gm_block_head((gm_shape){4, 6, 6}, 3);
    gm_net_desc d = {in, 3, blocks, NULL};
    gm_backend *be;
    gm_net *net;
    gm_error err;
    assert_ok(gm_backend_cpu_create(&be, 1, &err), err);
    assert_ok(gm_net_create(&net, be, &d, N, 9, &err), err);
    assert_int_equal(gm_net_block_loss(net, 1, NULL, 1.0f, &(float){0}, &err), GM_EINVAL); /* not reserved */
    assert_ok(gm_net_reserve_block_loss(net, 1, &err), err);
    gm_rng rng;
    gm_rng_seed(&rng, 4);
    float x[N * 2 * 6 * 6], feat[N * 4 * 6 * 6], logit_t[N * 3];
    gm_fill_uniform(x, sizeof x / sizeof *x, &rng, -1, 1);
    gm_fill_uniform(feat, sizeof feat / sizeof *feat, &rng, -1, 1);
    gm_fill_uniform(logit_t, sizeof logit_t / sizeof *logit_t, &rng, -1, 1);
    two_losses(net, x, N, 1, feat, logit_t);
    gm_net_zero_grad(net);
    assert_ok(gm_net_backward(net, &err), err);
    const size_t np = gm_net_nparams(net);
    float *grad = malloc(sizeof(float) * np), *p = gm_net_params(net);
    memcpy(grad, gm_net_grads(net), sizeof(float) * np);
    /* blocks 0 and 1 see both losses; the head only its own */
    for (size_t i = 0; i < gm_net_block_param_offset(net, 2); i += 5) {
        const float keep = p[i], h = 2e-3f;
        p[i] = keep + h;
        double up = two_losses(net, x, N, 1, feat, logit_t);
        p[i] = keep - h;
        double down = two_losses(net, x, N, 1, feat, logit_t);
        p[i] = keep;
        gm_assert_close("d(loss)/d(param)", i, grad[i], (up - down) / (2.0 * h), 2e-3, 2e-2);
    }
    /* without a new block loss the next backward has the head's gradient alone */
    float l;
    assert_ok(gm_net_forward(net, x, N, 0, &err), err);
    assert_ok(gm_net_loss(net, 0, GM_LOSS_MSE, logit_t, NULL, 1.0f, &l, &err), err);
    gm_net_zero_grad(net);
    assert_ok(gm_net_backward(net, &err), err);
    double diff = 0.0;
    for (size_t i = 0; i < gm_net_block_param_offset(net, 2); i++) diff += fabs(grad[i] - gm_net_grads(net)[i]);
    assert_true(diff > 1e-3);
    free(grad);
    gm_net_free(net);
    gm_backend_free(be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_allocates_nothing), cmocka_unit_test(test_training_lowers_loss),
        cmocka_unit_test(test_parameter_count),        cmocka_unit_test(test_tree_matches_chains),
        cmocka_unit_test(test_runs_repeat_exactly),    cmocka_unit_test(test_eval_is_per_sample),
        cmocka_unit_test(test_forward_tensor),         cmocka_unit_test(test_block_loss_gradient),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

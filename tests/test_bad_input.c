/*
 * Bad input is reported, not crashed on: every case checks the status code and
 * that the message names the problem.
 */
#include <math.h>
#include <string.h>

#include "gm_models.h"
#include "gm_net.h"
#include "gm_optim.h"
#include "test_util.h"

static gm_backend *cpu(void)
{
    gm_backend *be;
    gm_error err;
    assert_int_equal(gm_backend_cpu_create(&be, 1, &err), GM_OK);
    return be;
}

static gm_status make(gm_backend *be, gm_shape in, const gm_block *blocks, int n, const int *parent,
                      int batch, gm_error *err)
{
    gm_net *net = NULL;
    gm_net_desc d = {in, n, blocks, parent};
    gm_status s = gm_net_create(&net, be, &d, batch, 1, err);
    assert_true(s == GM_OK ? net != NULL : net == NULL);
    gm_net_free(net);
    return s;
}

static void test_shape_mismatch(void **state)
{
    (void)state;
    gm_backend *be = cpu();
    gm_error err;
    gm_block b[2] = {gm_block_conv(1, 4, 3, 1, 1, 1, 1), gm_block_conv(8, 8, 3, 1, 1, 1, 1)};
    assert_int_equal(make(be, (gm_shape){1, 8, 8}, b, 2, NULL, 4, &err), GM_ESHAPE);
    assert_msg_has(err, "block 1 (conv)");
    assert_msg_has(err, "expects 8 input channels, got 4");

    gm_block head = gm_block_head((gm_shape){16, 1, 1}, 3); /* reads a 4x8x8 map as 16 features */
    gm_block c[2] = {b[0], head};
    assert_int_equal(make(be, (gm_shape){1, 8, 8}, c, 2, NULL, 4, &err), GM_ESHAPE);
    assert_msg_has(err, "not a vector");

    gm_block big = gm_block_conv(1, 2, 5, 1, 0, 0, 0);
    assert_int_equal(make(be, (gm_shape){1, 3, 3}, &big, 1, NULL, 1, &err), GM_ESHAPE);
    assert_msg_has(err, "does not fit");

    gm_block add = gm_block_empty(GM_BLOCK_CUSTOM);
    assert_int_equal(gm_block_push(&add, gm_op_conv2d(2, 3, 1, 1, 0, 0), -1, -1, &err), GM_OK);
    assert_int_equal(gm_block_push(&add, gm_op_add(), 0, -1, &err), GM_OK); /* 3 + 2 channels */
    assert_int_equal(make(be, (gm_shape){2, 4, 4}, &add, 1, NULL, 1, &err), GM_ESHAPE);
    assert_msg_has(err, "add: operands 3x4x4 and 2x4x4 differ");
    gm_backend_free(be);
}

static void test_zero_sized(void **state)
{
    (void)state;
    gm_backend *be = cpu();
    gm_error err;
    gm_block b = gm_block_conv(1, 4, 3, 1, 1, 1, 1);
    assert_int_equal(make(be, (gm_shape){1, 0, 8}, &b, 1, NULL, 4, &err), GM_ESHAPE);
    assert_msg_has(err, "zero-sized input shape 1x0x8");
    assert_int_equal(make(be, (gm_shape){1, 8, 8}, &b, 1, NULL, 0, &err), GM_EINVAL);
    assert_msg_has(err, "batch size 0");
    assert_int_equal(make(be, (gm_shape){1, 8, 8}, &b, 0, NULL, 4, &err), GM_EINVAL);
    gm_block zero_out = gm_block_conv(1, 0, 3, 1, 1, 0, 0);
    assert_int_equal(make(be, (gm_shape){1, 8, 8}, &zero_out, 1, NULL, 4, &err), GM_EINVAL);
    assert_msg_has(err, "0 output channels");

    gm_net *net;
    gm_net_desc d = {{1, 8, 8}, 1, &b, NULL};
    assert_int_equal(gm_net_create(&net, be, &d, 4, 1, &err), GM_OK);
    float x[5 * 64] = {0};
    assert_int_equal(gm_net_forward(net, x, 0, 1, &err), GM_ESHAPE);
    assert_int_equal(gm_net_forward(net, x, 5, 1, &err), GM_ESHAPE);
    assert_msg_has(err, "sized for 1 to 4");
    assert_int_equal(gm_net_backward(net, &err), GM_EINVAL);
    assert_msg_has(err, "backward without a forward");
    gm_tensor t;
    assert_int_equal(gm_tensor_create(&t, be, 2, (gm_shape){3, 8, 8}, &err), GM_OK);
    assert_int_equal(gm_net_forward_tensor(net, &t, 1, &err), GM_ESHAPE);
    assert_msg_has(err, "samples are 3x8x8 but the net reads 1x8x8");
    gm_tensor_free(&t);
    gm_tensor_free(&t); /* freeing twice is harmless */
    assert_int_equal(gm_tensor_create(&t, be, 0, (gm_shape){1, 8, 8}, &err), GM_ESHAPE);
    assert_null(t.data);
    assert_int_equal(gm_tensor_create(&t, be, 5, (gm_shape){1, 8, 8}, &err), GM_OK);
    assert_int_equal(gm_net_forward_tensor(net, &t, 1, &err), GM_ESHAPE);
    assert_msg_has(err, "sized for 1 to 4");
    float host[4];
    assert_int_equal(gm_tensor_to_host(&t, 5 * 64 - 2, host, 4, &err), GM_ESHAPE);
    assert_msg_has(err, "outside a 320-element tensor");
    gm_tensor_free(&t);
    gm_net_free(net);
    gm_backend_free(be);
}

static void test_nan_loss(void **state)
{
    (void)state;
    gm_backend *be = cpu();
    gm_error err;
    gm_block b[2] = {gm_block_conv(1, 2, 3, 1, 1, 1, 1), gm_block_head((gm_shape){2, 4, 4}, 3)};
    gm_net *net;
    gm_net_desc d = {{1, 4, 4}, 2, b, NULL};
    assert_int_equal(gm_net_create(&net, be, &d, 2, 1, &err), GM_OK);
    float x[32] = {0}, loss;
    int32_t y[2] = {0, 2}, bad[2] = {0, 3};
    assert_int_equal(gm_net_forward(net, x, 2, 1, &err), GM_OK);
    assert_int_equal(gm_net_loss(net, 0, GM_LOSS_CROSS_ENTROPY, NULL, bad, 1.0f, &loss, &err), GM_EINVAL);
    assert_msg_has(err, "label 3 of sample 1 is outside [0, 3)");
    assert_int_equal(gm_net_loss(net, 1, GM_LOSS_CROSS_ENTROPY, NULL, y, 1.0f, &loss, &err), GM_EINVAL);
    assert_msg_has(err, "output 1 does not exist");

    gm_net_params(net)[gm_net_block_param_offset(net, 1)] = NAN; /* poison the head */
    x[5] = 1.0f;
    assert_int_equal(gm_net_forward(net, x, 2, 1, &err), GM_OK);
    assert_int_equal(gm_net_loss(net, 0, GM_LOSS_CROSS_ENTROPY, NULL, y, 1.0f, &loss, &err), GM_ENUMERIC);
    assert_msg_has(err, "is nan");
    float target[6] = {0, 0, 0, INFINITY, 0, 0};
    gm_net_params(net)[gm_net_block_param_offset(net, 1)] = 0.0f;
    assert_int_equal(gm_net_forward(net, x, 2, 1, &err), GM_OK);
    assert_int_equal(gm_net_loss(net, 0, GM_LOSS_L1, target, NULL, 1.0f, &loss, &err), GM_ENUMERIC);
    assert_msg_has(err, "not finite");
    gm_net_free(net);
    gm_backend_free(be);
}

static void test_bad_configuration(void **state)
{
    (void)state;
    gm_backend *be = cpu();
    gm_error err;
    gm_block b = gm_block_conv(1, 2, 3, 1, 1, 1, 1);
    int parent = 0; /* a block cannot read itself */
    assert_int_equal(make(be, (gm_shape){1, 4, 4}, &b, 1, &parent, 1, &err), GM_EINVAL);
    assert_msg_has(err, "parent 0");
    gm_block pool = gm_block_empty(GM_BLOCK_POOL);
    assert_int_equal(gm_block_push(&pool, gm_op_maxpool2d(2, 2, 2), -1, -1, &err), GM_OK);
    assert_int_equal(make(be, (gm_shape){1, 4, 4}, &pool, 1, NULL, 1, &err), GM_EINVAL);
    assert_msg_has(err, "padding 2 is more than half the kernel 2");
    gm_block drop = gm_block_empty(GM_BLOCK_CUSTOM);
    assert_int_equal(gm_block_push(&drop, gm_op_dropout(1.0f), -1, -1, &err), GM_OK);
    assert_int_equal(make(be, (gm_shape){1, 4, 4}, &drop, 1, NULL, 1, &err), GM_EINVAL);
    assert_int_equal(gm_block_push(&drop, gm_op_relu(), 5, -1, &err), GM_EINVAL);

    gm_vgg_config vc;
    gm_resnet_config rc;
    const int widths[4] = {8, 16, 0, 0};
    assert_int_equal(gm_vgg_preset(&vc, 12, widths, &err), GM_EINVAL);
    assert_msg_has(err, "depth 12");
    assert_int_equal(gm_resnet_preset(&rc, 18, widths, &err), GM_EINVAL);
    assert_msg_has(err, "more than 2 stages");
    gm_optim *opt;
    assert_int_equal(gm_optim_create(&opt, be, gm_update_adam(0.0f, 0.9f, 0.999f, 1e-8f, 0), 10, &err), GM_EINVAL);
    assert_msg_has(err, "learning rate");
    gm_backend *none;
    assert_int_equal(gm_backend_cpu_create(&none, 0, &err), GM_EINVAL);
    assert_null(none);
    gm_backend_free(be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shape_mismatch),
        cmocka_unit_test(test_zero_sized),
        cmocka_unit_test(test_nan_loss),
        cmocka_unit_test(test_bad_configuration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_cuda: the CUDA backend's probe, device selection and GPU self-test.
 *
 * Without a usable GPU (gm_cuda_probe returns GM_EDEVICE) the program prints
 * "SKIPPED: no CUDA device: <reason>", checks only that every entry point fails
 * cleanly with GM_EDEVICE and a message, reports the GPU tests as skipped
 * (cmocka's skip()) and exits with 77, which ctest counts as skipped given
 * SKIP_RETURN_CODE 77 on the test.
 */
#include "test_util.h"

#include <stdio.h>
#include <string.h>

#include "gm_cuda.h"

#define GM_TEST_SKIPPED 77

/* state: the gm_cuda_info probed in main() */
static void test_probe_info(void **state)
{
    const gm_cuda_info *info = *state;
    char line[512];
    print_message("%s\n", gm_cuda_info_format(info, line, sizeof line));
    assert_true(info->device_count >= 1);
    assert_true(info->name[0] != '\0');
    assert_true(info->cc_major >= 5);
    assert_true(info->total_mem > 0);
    assert_true(info->multiprocessors > 0);
    assert_true(info->runtime_version > 0);
    assert_true(info->driver_version > 0);
}

static void test_select_device(void **state)
{
    const gm_cuda_info *info = *state;
    gm_error err;
    gm_error_clear(&err);
    for (int rank = 0; rank < 2 * info->device_count + 1; rank++) {
        int device = -1;
        gm_status st = gm_cuda_select_device(rank, &device, &err);
        if (st != GM_OK) fail_msg("gm_cuda_select_device(%d): %s", rank, err.msg);
        assert_int_equal(device, rank % info->device_count);
    }
    assert_int_equal(gm_cuda_select_device(-1, NULL, &err), GM_EINVAL);
    assert_true(strstr(err.msg, "-1") != NULL);
    assert_int_equal(gm_cuda_select_device(0, NULL, &err), GM_OK);
}

static void test_selftest(void **state)
{
    (void)state;
    gm_error err;
    gm_error_clear(&err);
    assert_int_equal(gm_cuda_select_device(0, NULL, &err), GM_OK);
    gm_status st = gm_cuda_selftest(&err);
    if (st != GM_OK) fail_msg("gm_cuda_selftest: %s: %s", gm_status_name(st), err.msg);
    /* twice: everything from the first run was freed, nothing left behind breaks it */
    st = gm_cuda_selftest(&err);
    if (st != GM_OK) fail_msg("gm_cuda_selftest (second run): %s: %s", gm_status_name(st), err.msg);
}

/* Runs with or without a GPU. */
static void test_bad_arguments(void **state)
{
    (void)state;
    gm_error err;
    gm_error_clear(&err);
    assert_int_equal(gm_cuda_probe(NULL, &err), GM_EINVAL);
    assert_true(err.msg[0] != '\0');
    assert_int_equal(gm_cuda_select_device(-3, NULL, &err), GM_EINVAL);
    assert_true(err.msg[0] != '\0');
    assert_int_equal(gm_cuda_probe(NULL, NULL), GM_EINVAL); /* err may be NULL */
}

/* Without a GPU every entry point must fail cleanly, not crash or hang. */
static void test_no_device_fails_cleanly(void **state)
{
    const gm_cuda_info *info = *state;
    assert_int_equal(info->device_count, 0);
    assert_true(info->runtime_version > 0); /* the runtime itself is linked */

    gm_error err;
    gm_error_clear(&err);
    int device = 12345;
    assert_int_equal(gm_cuda_select_device(0, &device, &err), GM_EDEVICE);
    assert_int_equal(err.code, GM_EDEVICE);
    assert_true(err.msg[0] != '\0');
    assert_int_equal(device, 12345); /* untouched on failure */

    gm_error_clear(&err);
    assert_int_equal(gm_cuda_selftest(&err), GM_EDEVICE);
    assert_true(err.msg[0] != '\0');
    assert_int_equal(gm_cuda_selftest(NULL), GM_EDEVICE);

    char line[512];
    gm_cuda_info_format(info, line, sizeof line);
    assert_true(strncmp(line, "no CUDA device", 14) == 0);
    print_message("%s\n", line);
}

/* Stands for the GPU tests (probe details, device selection, self-test), reported
 * as skipped; main() has printed the reason. */
static void test_gpu_skipped(void **state)
{
    (void)state;
    skip();
}

int main(void)
{
    gm_cuda_info info;
    gm_error err;
    gm_error_clear(&err);
    gm_status st = gm_cuda_probe(&info, &err);

    if (st == GM_EDEVICE) {
        printf("SKIPPED: no CUDA device: %s\n", err.msg);
        fflush(stdout);
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_bad_arguments),
            cmocka_unit_test_prestate(test_no_device_fails_cleanly, &info),
            cmocka_unit_test(test_gpu_skipped),
        };
        int failed = cmocka_run_group_tests_name("cuda_no_device", tests, NULL, NULL);
        return failed ? 1 : GM_TEST_SKIPPED;
    }
    if (st != GM_OK) {
        fprintf(stderr, "gm_cuda_probe: %s: %s\n", gm_status_name(st), err.msg);
        return 1;
    }

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test_prestate(test_probe_info, &info),
        cmocka_unit_test_prestate(test_select_device, &info),
        cmocka_unit_test(test_selftest),
    };
    return cmocka_run_group_tests_name("cuda", tests, NULL, NULL);
}

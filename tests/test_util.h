/*
 * Test helpers shared by the CMocka programs.
 * CMocka 1.1.5 has assert_float_equal but no double version and no relative
 * tolerance: gm_assert_close is the one tolerance check every test uses.
 */
#ifndef GM_TEST_UTIL_H
#define GM_TEST_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gm_error.h"
#include "gm_mfile.h"
#include "gm_rng.h"

/* The gm_error's message contains text (a message must name what it is about). */
#define assert_msg_has(err, text)                                                                    \
    do {                                                                                             \
        if (!strstr((err).msg, (text))) fail_msg("message \"%s\" lacks \"%s\"", (err).msg, (text)); \
    } while (0)

/* call returns GM_OK, else the test fails with err's message. */
#define assert_ok(call, err)                                    \
    do {                                                        \
        gm_status st_ = (call);                                 \
        if (st_ != GM_OK) fail_msg("%s: %s", #call, (err).msg); \
    } while (0)

/* |got - want| <= atol + rtol * |want|, failing with the index and both values. */
void gm_check_close(const char *what, size_t i, double got, double want, double atol, double rtol,
                    const char *file, int line);
#define gm_assert_close(what, i, got, want, atol, rtol) \
    gm_check_close((what), (i), (got), (want), (atol), (rtol), __FILE__, __LINE__)

/* Compares two float arrays element by element. */
void gm_check_all_close(const char *what, const float *got, const float *want, size_t n, double atol,
                        double rtol, const char *file, int line);
#define gm_assert_all_close(what, got, want, n, atol, rtol) \
    gm_check_all_close((what), (got), (want), (n), (atol), (rtol), __FILE__, __LINE__)

void gm_fill_uniform(float *x, size_t n, gm_rng *rng, float lo, float hi);

/*
 * A single-task VGG-11-style model file (widths 8, 16; 4 classes) on inputs of
 * shape in, with seeded weights and BatchNorm statistics off their defaults;
 * task "t<seed>", no normalisation. The caller frees it (gm_mfile_free).
 */
void gm_test_random_model(gm_mfile *m, gm_shape in, uint64_t seed);
/* The same for another architecture of gm_model_from_name (widths 8, 16), "resnet10" for example. */
void gm_test_random_arch(gm_mfile *m, const char *arch, gm_shape in, uint64_t seed);

#endif

#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "gm_models.h"

void gm_check_close(const char *what, size_t i, double got, double want, double atol, double rtol,
                    const char *file, int line)
{
    double tol = atol + rtol * fabs(want);
    if (!(fabs(got - want) <= tol)) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s[%zu]: got %.9g, want %.9g (|diff| %.3g > tol %.3g)", what, i, got,
                 want, fabs(got - want), tol);
        print_error("%s\n", msg);
        _fail(file, line);
    }
}

void gm_check_all_close(const char *what, const float *got, const float *want, size_t n, double atol,
                        double rtol, const char *file, int line)
{
    for (size_t i = 0; i < n; i++) {
        double tol = atol + rtol * fabs((double)want[i]);
        if (!(fabs((double)got[i] - want[i]) <= tol)) {
            print_error("%s[%zu]: got %.9g, want %.9g (|diff| %.3g > tol %.3g)\n", what, i,
                        (double)got[i], (double)want[i], fabs((double)got[i] - want[i]), tol);
            _fail(file, line);
        }
    }
}

void gm_fill_uniform(float *x, size_t n, gm_rng *rng, float lo, float hi)
{
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * gm_rng_uniform(rng);
}

void gm_test_random_model(gm_mfile *m, gm_shape in, uint64_t seed) { gm_test_random_arch(m, "vgg11", in, seed); }

void gm_test_random_arch(gm_mfile *m, const char *arch, gm_shape in, uint64_t seed)
{
    static const int widths[4] = {8, 16, 0, 0};
    gm_model *model = malloc(sizeof *model);
    gm_error err;
    gm_backend *be;
    gm_net *net;
    assert_non_null(model);
    assert_ok(gm_model_from_name(model, arch, widths, in, 4, &err), err);
    gm_net_desc d = gm_model_desc(model);
    assert_ok(gm_backend_cpu_create(&be, 1, &err), err);
    assert_ok(gm_net_create(&net, be, &d, 2, seed, &err), err);
    assert_ok(gm_mfile_from_net(m, net, &err), err);
    /* BatchNorm statistics near what training leaves: means around 0, variances around 1 */
    gm_rng rng;
    gm_rng_seed(&rng, seed);
    float *buf = m->buffers;
    for (int b = 0; b < m->nblocks; b++)
        for (int k = 0; k < m->blocks[b].nops; k++) {
            const gm_op *op = &m->blocks[b].ops[k];
            if (op->kind != GM_OP_BATCHNORM2D) continue;
            for (int c = 0; c < op->p.bn.c; c++) {
                buf[c] = 0.2f * (gm_rng_uniform(&rng) - 0.5f);
                buf[op->p.bn.c + c] = 0.5f + gm_rng_uniform(&rng);
            }
            buf += gm_op_nbuffers(op);
        }
    m->tasks[0].classes = 4;
    snprintf(m->tasks[0].name, sizeof m->tasks[0].name, "t%llu", (unsigned long long)seed);
    for (int c = 0; c < in.c; c++) m->std[c] = 1.0f;
    gm_net_free(net);
    gm_backend_free(be);
    free(model);
}

#include "test_util.h"

#include <math.h>
#include <stdio.h>

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

#define _POSIX_C_SOURCE 200809L
#include "gm_cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int gm_cli_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "gmorph %s: %s must be an integer in [%ld, %ld], got \"%s\"\n", cmd, opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int gm_cli_float(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "gmorph %s: %s must be a number in [%g, %g], got \"%s\"\n", cmd, opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int gm_cli_int_list(const char *cmd, const char *opt, const char *s, int cap, int *w)
{
    const char *p = s;
    int n = 0, ok = 1;
    for (;;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 65536 || n == cap || (*end && *end != ',')) {
            ok = 0;
            break;
        }
        w[n++] = (int)v;
        if (*end == '\0') break;
        p = end + 1;
    }
    w[ok ? n : 0] = 0;
    if (!ok) {
        fprintf(stderr, "gmorph %s: %s wants 1 to %d positive integers like 16,32,64, got \"%s\"\n", cmd, opt,
                cap, s);
        return -1;
    }
    return 0;
}

int gm_cli_exit_code(gm_status st)
{
    return st == GM_OK ? GM_EXIT_OK : (st == GM_ENOMEM || st == GM_EDEVICE || st == GM_ENUMERIC) ? GM_EXIT_FAIL
                                                                                                  : GM_EXIT_USAGE;
}

int gm_cli_fail(const char *cmd, const char *what, const gm_error *err)
{
    fprintf(stderr, "gmorph %s: %s%s%s\n", cmd, what ? what : "", what ? ": " : "", err->msg);
    return gm_cli_exit_code(err->code);
}

int gm_cli_cores(void)
{
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c > 0 ? (int)c : 1;
}

#include "gm_error.h"

#include <stdarg.h>
#include <stdio.h>

gm_status gm_error_set(gm_error *err, gm_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

void gm_error_clear(gm_error *err)
{
    if (err) {
        err->code = GM_OK;
        err->msg[0] = '\0';
    }
}

const char *gm_status_name(gm_status code)
{
    switch (code) {
    case GM_OK: return "ok";
    case GM_EINVAL: return "invalid argument";
    case GM_ESHAPE: return "shape mismatch";
    case GM_ENOMEM: return "out of memory";
    case GM_ENUMERIC: return "non-finite value";
    case GM_EIO: return "i/o error";
    case GM_EFORMAT: return "bad file format";
    case GM_EDEVICE: return "device error";
    }
    return "unknown error";
}

/*
 * gm_error: status codes and error messages.
 *
 * Library code never prints and never exits: a function that can fail returns a
 * gm_status and, when the caller passes a gm_error, stores a one-line message
 * that names the problem (which block, which shape, which value). Only main()
 * decides what to print and which exit code to use.
 */
#ifndef GM_ERROR_H
#define GM_ERROR_H

typedef enum {
    GM_OK = 0,
    GM_EINVAL,   /* a bad argument or configuration value */
    GM_ESHAPE,   /* shapes that do not fit together */
    GM_ENOMEM,   /* an allocation failed */
    GM_ENUMERIC, /* NaN or Inf where a finite value is required */
    GM_EIO,      /* a file could not be read or written */
    GM_EFORMAT,  /* a file was read but its content is wrong */
    GM_EDEVICE   /* a device (GPU) is missing or failed */
} gm_status;

typedef struct {
    gm_status code;
    char msg[512];
} gm_error;

/* Stores code and a printf-style message in err (err may be NULL); returns code. */
gm_status gm_error_set(gm_error *err, gm_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Clears err to GM_OK with an empty message; err may be NULL. */
void gm_error_clear(gm_error *err);

/* A short fixed name for a status ("shape mismatch", ...). */
const char *gm_status_name(gm_status code);

#endif

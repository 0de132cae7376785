/*
 * gm_json: a small JSON reader for configuration files (zoo, sweep).
 *
 * gm_json_parse builds a tree the caller owns (gm_json_free). Syntax errors name
 * the line and column. Every node knows where it sits, so the typed getters
 * report a bad value by its path, for example
 *   "zoo/b1.json: models[2].epochs: expected an integer in [1, 10000], got 2.5".
 * Objects keep their keys in file order; a duplicated key is a syntax error.
 */
#ifndef GM_JSON_H
#define GM_JSON_H

#include <stddef.h>

#include "gm_error.h"

typedef enum { GM_JSON_NULL, GM_JSON_BOOL, GM_JSON_NUMBER, GM_JSON_STRING, GM_JSON_ARRAY, GM_JSON_OBJECT } gm_json_type;

typedef struct gm_json gm_json;

/* Parses text (len bytes, need not be NUL-terminated); name labels messages. */
gm_status gm_json_parse(gm_json **root, const char *text, size_t len, const char *name, gm_error *err);
/* Reads and parses a file; messages start with its path. */
gm_status gm_json_parse_file(gm_json **root, const char *path, gm_error *err);
void gm_json_free(gm_json *root);

gm_json_type gm_json_type_of(const gm_json *v);
const char *gm_json_type_name(gm_json_type t);   /* "object", "number", ... */
/* Where v sits, like "models[2].epochs" ("" for the root). */
const char *gm_json_path(const gm_json *v, char *buf, size_t cap);

/* Member of an object, or NULL when absent (or v is not an object). */
const gm_json *gm_json_get(const gm_json *obj, const char *key);
/* Elements of an array or members of an object. */
size_t gm_json_len(const gm_json *v);
const gm_json *gm_json_at(const gm_json *v, size_t i);
const char *gm_json_key_at(const gm_json *obj, size_t i);  /* NULL unless an object */

/* Raw values (0, "" or NULL for the wrong type). */
double gm_json_number(const gm_json *v);
const char *gm_json_string(const gm_json *v);
int gm_json_bool(const gm_json *v);

/*
 * Typed getters of obj[key]. When the key is absent: required -> GM_EINVAL
 * naming the path, otherwise *out keeps the default the caller put there.
 * A present value of the wrong type or out of [lo, hi] is GM_EINVAL naming the
 * path, what was expected and what was found.
 */
gm_status gm_json_get_int(const gm_json *obj, const char *key, int required, long long lo, long long hi,
                          long long *out, gm_error *err);
gm_status gm_json_get_double(const gm_json *obj, const char *key, int required, double lo, double hi,
                             double *out, gm_error *err);
gm_status gm_json_get_bool(const gm_json *obj, const char *key, int required, int *out, gm_error *err);
/* Copies a string into buf (cap bytes); longer is an error. */
gm_status gm_json_get_string(const gm_json *obj, const char *key, int required, char *buf, size_t cap,
                             gm_error *err);
/* An array of integers, at most cap of them; *n gets the count. */
gm_status gm_json_get_ints(const gm_json *obj, const char *key, int required, long long lo, long long hi,
                           long long *out, int cap, int *n, gm_error *err);
/* GM_EINVAL naming the first key of obj not in allowed (NULL-terminated). */
gm_status gm_json_check_keys(const gm_json *obj, const char *const *allowed, gm_error *err);

#endif

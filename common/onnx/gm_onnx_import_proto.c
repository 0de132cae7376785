/* ONNX import: constants and attributes from the protobuf-c structures (gm_onnx_import_int.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_onnx_import_int.h"

/* No constant gmorph needs is near this; it keeps every size product far from overflow. */
static const uint64_t MAX_ELEMS = (uint64_t)1 << 32;

const char *gm_oi_node_label(const Onnx__NodeProto *n, char *buf, size_t cap)
{
    if (n->name && n->name[0]) snprintf(buf, cap, "node \"%.120s\"", n->name);
    else snprintf(buf, cap, "node writing \"%.120s\"", n->n_output ? gm_oi_str(n->output[0]) : "");
    return buf;
}

gm_status gm_oi_node_fail(gm_error *err, gm_status code, const Onnx__NodeProto *n, const char *fmt, ...)
{
    char msg[400], label[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return gm_error_set(err, code, "%s (op %.40s): %s", gm_oi_node_label(n, label, sizeof label),
                        gm_oi_str(n->op_type), msg);
}

/* ---- constants --------------------------------------------------------------- */

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

static const char *type_name(int32_t t)
{
    static const char *const names[] = {"UNDEFINED", "FLOAT",  "UINT8",  "INT8",   "UINT16",    "INT16",
                                        "INT32",     "INT64",  "STRING", "BOOL",   "FLOAT16",   "DOUBLE",
                                        "UINT32",    "UINT64", "COMPLEX64", "COMPLEX128", "BFLOAT16"};
    return t >= 0 && t < (int32_t)(sizeof names / sizeof *names) ? names[t] : "unknown";
}

/* Bytes per element in raw_data for the types we read; 0 for the others. */
static size_t elem_size(int32_t t)
{
    switch (t) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32: return 4;
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: return 8;
    default: return 0;
    }
}

/* Elements of the typed (non-raw) field that holds t's data. */
static size_t typed_count(const Onnx__TensorProto *t)
{
    switch (t->data_type) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: return t->n_float_data;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32: return t->n_int32_data;
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: return t->n_double_data;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: return t->n_int64_data;
    default: return 0;
    }
}

static void copy_elems(const Onnx__TensorProto *t, gm_oi_const *c)
{
    int raw = t->has_raw_data && t->raw_data.len > 0;
    const uint8_t *p = t->raw_data.data;
    for (size_t k = 0; k < c->n; k++) {
        switch (t->data_type) {
        case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
            if (raw) {
                uint32_t u = le32(p + 4 * k);
                memcpy(&c->f[k], &u, sizeof u);
            } else {
                c->f[k] = t->float_data[k];
            }
            break;
        case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: {
            double d = 0.0;
            if (raw) {
                uint64_t u = le64(p + 8 * k);
                memcpy(&d, &u, sizeof u);
            } else {
                d = t->double_data[k];
            }
            c->f[k] = (float)d;
            break;
        }
        case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
            c->i[k] = raw ? (int64_t)(int32_t)le32(p + 4 * k) : (int64_t)t->int32_data[k];
            break;
        default: /* INT64 */
            c->i[k] = raw ? (int64_t)le64(p + 8 * k) : t->int64_data[k];
            break;
        }
    }
}

gm_status gm_oi_const_decode(const Onnx__TensorProto *t, gm_oi_const *c, gm_error *err)
{
    memset(c, 0, sizeof *c);
    const char *name = gm_oi_str(t->name);
    if (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
        return gm_error_set(err, GM_EFORMAT,
                            "tensor \"%.120s\" is stored in an external file, which gmorph does not read (save the "
                            "model with its weights inside)", name);
    size_t es = elem_size(t->data_type);
    if (!es)
        return gm_error_set(err, GM_EFORMAT, "tensor \"%.120s\" has data type %s; gmorph reads FLOAT, DOUBLE, INT32 "
                            "and INT64 tensors", name, type_name(t->data_type));
    if (t->n_dims > GM_OI_MAX_RANK)
        return gm_error_set(err, GM_EFORMAT, "tensor \"%.120s\" has %zu dimensions (at most %d)", name, t->n_dims,
                            GM_OI_MAX_RANK);
    uint64_t n = 1;
    for (size_t d = 0; d < t->n_dims; d++) {
        if (t->dims[d] < 0 || (uint64_t)t->dims[d] > MAX_ELEMS || n * (uint64_t)t->dims[d] > MAX_ELEMS)
            return gm_error_set(err, GM_EFORMAT, "tensor \"%.120s\": dimension %zu is %lld, or the size is too large",
                                name, d, (long long)t->dims[d]);
        n *= (uint64_t)t->dims[d];
        c->dims[d] = t->dims[d];
    }
    c->rank = (int)t->n_dims;
    c->n = (size_t)n;
    c->is_int = t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__INT32 ||
                t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
    int raw = t->has_raw_data && t->raw_data.len > 0;
    size_t have = raw ? t->raw_data.len : typed_count(t) * es, want = c->n * es;
    if (have != want)
        return gm_error_set(err, GM_EFORMAT, "tensor \"%.120s\" holds %zu bytes of %s data, its dims need %zu (a "
                            "damaged file?)", name, have, type_name(t->data_type), want);
    if (c->is_int) c->i = malloc((c->n + 1) * sizeof *c->i);
    else c->f = malloc((c->n + 1) * sizeof *c->f);
    if (!c->i && !c->f) return gm_error_set(err, GM_ENOMEM, "tensor \"%.120s\": out of memory", name);
    copy_elems(t, c);
    return GM_OK;
}

void gm_oi_const_free(gm_oi_const *c)
{
    if (!c) return;
    free(c->f);
    free(c->i);
    memset(c, 0, sizeof *c);
}

/* ---- attributes -------------------------------------------------------------- */

const Onnx__AttributeProto *gm_oi_attr(const Onnx__NodeProto *n, const char *name)
{
    for (size_t k = 0; k < n->n_attribute; k++)
        if (n->attribute[k] && strcmp(gm_oi_str(n->attribute[k]->name), name) == 0) return n->attribute[k];
    return NULL;
}

/* Older writers leave out the type field: then the value that is set tells. */
static int attr_is(const Onnx__AttributeProto *a, Onnx__AttributeProto__AttributeType t, int set)
{
    return a->has_type ? a->type == t : set;
}

static gm_status mistyped(const Onnx__NodeProto *n, const char *name, const char *want, gm_error *err)
{
    return gm_oi_node_fail(err, GM_EFORMAT, n, "attribute %s is not %s", name, want);
}

gm_status gm_oi_attr_int(const Onnx__NodeProto *n, const char *name, int64_t def, int64_t *v, gm_error *err)
{
    const Onnx__AttributeProto *a = gm_oi_attr(n, name);
    *v = def;
    if (!a) return GM_OK;
    if (!attr_is(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT, a->has_i)) return mistyped(n, name, "an integer", err);
    *v = a->i;
    return GM_OK;
}

gm_status gm_oi_attr_float(const Onnx__NodeProto *n, const char *name, float def, float *v, gm_error *err)
{
    const Onnx__AttributeProto *a = gm_oi_attr(n, name);
    *v = def;
    if (!a) return GM_OK;
    if (!attr_is(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT, a->has_f)) return mistyped(n, name, "a float", err);
    *v = a->f;
    return GM_OK;
}

gm_status gm_oi_attr_ints(const Onnx__NodeProto *n, const char *name, int64_t *v, int cap, int *count,
                          gm_error *err)
{
    const Onnx__AttributeProto *a = gm_oi_attr(n, name);
    *count = -1;
    if (!a) return GM_OK;
    if (!attr_is(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS, a->n_ints > 0))
        return mistyped(n, name, "a list of integers", err);
    if (a->n_ints > (size_t)cap)
        return gm_oi_node_fail(err, GM_EFORMAT, n, "attribute %s has %zu values (at most %d expected)", name,
                               a->n_ints, cap);
    memcpy(v, a->ints, a->n_ints * sizeof *v);
    *count = (int)a->n_ints;
    return GM_OK;
}

gm_status gm_oi_attr_str(const Onnx__NodeProto *n, const char *name, const char *def, char *buf, size_t cap,
                         gm_error *err)
{
    const Onnx__AttributeProto *a = gm_oi_attr(n, name);
    snprintf(buf, cap, "%s", def);
    if (!a) return GM_OK;
    if (!attr_is(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING, a->has_s)) return mistyped(n, name, "a string", err);
    if (a->s.len >= cap || (a->s.len && memchr(a->s.data, '\0', a->s.len)))
        return gm_oi_node_fail(err, GM_EFORMAT, n, "attribute %s is not a short string", name);
    memcpy(buf, a->s.data, a->s.len);
    buf[a->s.len] = '\0';
    return GM_OK;
}

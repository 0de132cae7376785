/* Builders for the ONNX messages of an export (see gm_onnx_export_pb.h). */
#include "gm_onnx_export_pb.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the arena ------------------------------------------------------------------ */

void *gm_oxb_alloc(gm_oxb_arena *a, size_t size)
{
    if (a->failed) return NULL;
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 256;
        void **p = realloc(a->ptrs, cap * sizeof *p);
        if (!p) {
            a->failed = 1;
            return NULL;
        }
        a->ptrs = p;
        a->cap = cap;
    }
    void *m = calloc(1, size ? size : 1);
    if (!m) {
        a->failed = 1;
        return NULL;
    }
    a->ptrs[a->n++] = m;
    return m;
}

char *gm_oxb_str(gm_oxb_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = len < 0 ? NULL : gm_oxb_alloc(a, (size_t)len + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)len + 1, fmt, ap);
    va_end(ap);
    return s;
}

void gm_oxb_arena_free(gm_oxb_arena *a)
{
    for (size_t i = 0; i < a->n; i++) free(a->ptrs[i]);
    free(a->ptrs);
    *a = (gm_oxb_arena){0};
}

/* ---- the graph ------------------------------------------------------------------ */

gm_status gm_oxb_graph_init(gm_oxb_graph *g, size_t max_nodes, size_t max_inits, gm_error *err)
{
    *g = (gm_oxb_graph){.max_nodes = max_nodes, .max_inits = max_inits};
    g->nodes = gm_oxb_alloc(&g->arena, max_nodes * sizeof *g->nodes);
    g->inits = gm_oxb_alloc(&g->arena, max_inits * sizeof *g->inits);
    return g->arena.failed ? gm_error_set(err, GM_ENOMEM, "ONNX export: out of memory") : GM_OK;
}

void gm_oxb_graph_free(gm_oxb_graph *g) { gm_oxb_arena_free(&g->arena); }

static gm_status oom(gm_error *err) { return gm_error_set(err, GM_ENOMEM, "ONNX export: out of memory"); }

/* ---- attributes ----------------------------------------------------------------- */

static Onnx__AttributeProto *attr_new(gm_oxb_arena *a, const char *name, Onnx__AttributeProto__AttributeType type)
{
    Onnx__AttributeProto *at = gm_oxb_alloc(a, sizeof *at);
    if (!at) return NULL;
    *at = (Onnx__AttributeProto)ONNX__ATTRIBUTE_PROTO__INIT;
    at->name = gm_oxb_str(a, "%s", name);
    at->has_type = 1;
    at->type = type;
    return at->name ? at : NULL;
}

Onnx__AttributeProto *gm_oxb_attr_int(gm_oxb_arena *a, const char *name, int64_t v)
{
    Onnx__AttributeProto *at = attr_new(a, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (at) {
        at->has_i = 1;
        at->i = v;
    }
    return at;
}

Onnx__AttributeProto *gm_oxb_attr_float(gm_oxb_arena *a, const char *name, float v)
{
    Onnx__AttributeProto *at = attr_new(a, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (at) {
        at->has_f = 1;
        at->f = v;
    }
    return at;
}

Onnx__AttributeProto *gm_oxb_attr_str(gm_oxb_arena *a, const char *name, const char *v)
{
    Onnx__AttributeProto *at = attr_new(a, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    char *s = at ? gm_oxb_str(a, "%s", v) : NULL;
    if (!s) return NULL;
    at->has_s = 1;
    at->s = (ProtobufCBinaryData){.len = strlen(s), .data = (uint8_t *)s};
    return at;
}

Onnx__AttributeProto *gm_oxb_attr_ints(gm_oxb_arena *a, const char *name, const int64_t *v, int n)
{
    Onnx__AttributeProto *at = attr_new(a, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    int64_t *copy = at ? gm_oxb_alloc(a, sizeof *copy * (size_t)n) : NULL;
    if (!copy) return NULL;
    memcpy(copy, v, sizeof *copy * (size_t)n);
    at->n_ints = (size_t)n;
    at->ints = copy;
    return at;
}

/* ---- nodes and initializers ----------------------------------------------------- */

gm_status gm_oxb_node(gm_oxb_graph *g, const char *op_type, const char *name, const char *const *inputs,
                      int ninputs, const char *output, Onnx__AttributeProto *const *attrs, int nattrs,
                      gm_error *err)
{
    gm_oxb_arena *a = &g->arena;
    if (g->nnodes == g->max_nodes)
        return gm_error_set(err, GM_EINVAL, "ONNX export: more than %zu nodes at %s", g->max_nodes, name);
    for (int i = 0; i < nattrs; i++)
        if (!attrs[i]) return oom(err);
    Onnx__NodeProto *n = gm_oxb_alloc(a, sizeof *n);
    char **in = gm_oxb_alloc(a, sizeof *in * (size_t)ninputs), **out = gm_oxb_alloc(a, sizeof *out);
    Onnx__AttributeProto **at = gm_oxb_alloc(a, sizeof *at * (size_t)nattrs);
    if (!n || !in || !out || !at) return oom(err);
    *n = (Onnx__NodeProto)ONNX__NODE_PROTO__INIT;
    for (int i = 0; i < ninputs; i++) in[i] = gm_oxb_str(a, "%s", inputs[i]);
    out[0] = gm_oxb_str(a, "%s", output);
    if (nattrs) memcpy(at, attrs, sizeof *at * (size_t)nattrs); /* attrs may be NULL when there are none */
    n->name = gm_oxb_str(a, "%s", name);
    n->op_type = gm_oxb_str(a, "%s", op_type);
    if (a->failed) return oom(err);
    n->n_input = (size_t)ninputs;
    n->input = in;
    n->n_output = 1;
    n->output = out;
    n->n_attribute = (size_t)nattrs;
    n->attribute = at;
    g->nodes[g->nnodes++] = n;
    return GM_OK;
}

/* A tensor of a data type and shape, appended to the initializers (its data left empty). */
static gm_status init_new(gm_oxb_graph *g, const char *name, int32_t type, const int64_t *dims, int ndims,
                          Onnx__TensorProto **out, gm_error *err)
{
    if (g->ninits == g->max_inits)
        return gm_error_set(err, GM_EINVAL, "ONNX export: more than %zu initializers at %s", g->max_inits, name);
    Onnx__TensorProto *t = gm_oxb_alloc(&g->arena, sizeof *t);
    int64_t *d = gm_oxb_alloc(&g->arena, sizeof *d * (size_t)ndims);
    char *nm = gm_oxb_str(&g->arena, "%s", name);
    if (!t || !d || !nm) return oom(err);
    *t = (Onnx__TensorProto)ONNX__TENSOR_PROTO__INIT;
    memcpy(d, dims, sizeof *d * (size_t)ndims);
    t->n_dims = (size_t)ndims;
    t->dims = d;
    t->has_data_type = 1;
    t->data_type = type;
    t->name = nm;
    g->inits[g->ninits++] = t;
    *out = t;
    return GM_OK;
}

gm_status gm_oxb_init_floats(gm_oxb_graph *g, const char *name, const int64_t *dims, int ndims,
                             const float *data, gm_error *err)
{
    size_t n = 1;
    for (int i = 0; i < ndims; i++) n *= (size_t)dims[i];
    Onnx__TensorProto *t = NULL;
    gm_status st = init_new(g, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, dims, ndims, &t, err);
    if (st != GM_OK) return st;
    /* float_data, not raw_data: protobuf-c writes it little-endian whatever the host. */
    float *copy = gm_oxb_alloc(&g->arena, sizeof *copy * n);
    if (!copy) return oom(err);
    memcpy(copy, data, sizeof *copy * n);
    t->n_float_data = n;
    t->float_data = copy;
    g->nweights += n;
    return GM_OK;
}

gm_status gm_oxb_init_int64s(gm_oxb_graph *g, const char *name, const int64_t *data, int n, gm_error *err)
{
    const int64_t dims[1] = {n};
    Onnx__TensorProto *t = NULL;
    gm_status st = init_new(g, name, ONNX__TENSOR_PROTO__DATA_TYPE__INT64, dims, 1, &t, err);
    if (st != GM_OK) return st;
    int64_t *copy = gm_oxb_alloc(&g->arena, sizeof *copy * (size_t)n);
    if (!copy) return oom(err);
    memcpy(copy, data, sizeof *copy * (size_t)n);
    t->n_int64_data = (size_t)n;
    t->int64_data = copy;
    return GM_OK;
}

/* ---- value infos ---------------------------------------------------------------- */

Onnx__ValueInfoProto *gm_oxb_value_info(gm_oxb_arena *a, const char *name, const int64_t *dims, int ndims,
                                        const char *doc)
{
    Onnx__ValueInfoProto *vi = gm_oxb_alloc(a, sizeof *vi);
    Onnx__TypeProto *tp = gm_oxb_alloc(a, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = gm_oxb_alloc(a, sizeof *tt);
    Onnx__TensorShapeProto *sh = gm_oxb_alloc(a, sizeof *sh);
    Onnx__TensorShapeProto__Dimension **dv = gm_oxb_alloc(a, sizeof *dv * (size_t)ndims);
    if (!vi || !tp || !tt || !sh || !dv) return NULL;
    for (int i = 0; i < ndims; i++) {
        Onnx__TensorShapeProto__Dimension *d = gm_oxb_alloc(a, sizeof *d);
        if (!d) return NULL;
        *d = (Onnx__TensorShapeProto__Dimension)ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT;
        if (dims[i] < 0) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = gm_oxb_str(a, "N");
        } else {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = dims[i];
        }
        dv[i] = d;
    }
    *sh = (Onnx__TensorShapeProto)ONNX__TENSOR_SHAPE_PROTO__INIT;
    sh->n_dim = (size_t)ndims;
    sh->dim = dv;
    *tt = (Onnx__TypeProto__Tensor)ONNX__TYPE_PROTO__TENSOR__INIT;
    tt->has_elem_type = 1;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    tt->shape = sh;
    *tp = (Onnx__TypeProto)ONNX__TYPE_PROTO__INIT;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    *vi = (Onnx__ValueInfoProto)ONNX__VALUE_INFO_PROTO__INIT;
    vi->name = gm_oxb_str(a, "%s", name);
    vi->type = tp;
    if (doc) vi->doc_string = gm_oxb_str(a, "%s", doc);
    return a->failed ? NULL : vi;
}

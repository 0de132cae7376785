/*
 * gm_oxb: builders for the protobuf-c messages of an ONNX graph (internal to the
 * exporter, gm_onnx_export.c).
 *
 * Every message, string, array and weight copy lives in one arena, freed in one
 * call after the model is packed: the message tree has no other owner, so nothing
 * here frees a message on its own. An allocation that fails returns NULL (or
 * GM_ENOMEM) and sets the arena's failed flag; callers stop at the first one.
 *
 * The graph's node and initializer lists are sized once, from an upper bound the
 * caller computes, so they never move while messages point into them.
 */
#ifndef GM_ONNX_EXPORT_PB_H
#define GM_ONNX_EXPORT_PB_H

#include <stddef.h>
#include <stdint.h>

#include "gm_error.h"
#include "onnx.pb-c.h"

typedef struct {
    void **ptrs;        /* every allocation, freed by gm_oxb_arena_free */
    size_t n, cap;
    int failed;
} gm_oxb_arena;

/* Zeroed memory owned by the arena; NULL (and failed set) when out of memory. */
void *gm_oxb_alloc(gm_oxb_arena *a, size_t size);
/* A printf-formatted string owned by the arena. */
char *gm_oxb_str(gm_oxb_arena *a, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void gm_oxb_arena_free(gm_oxb_arena *a);

/* A graph under construction: nodes and initializers in the order they are added. */
typedef struct {
    gm_oxb_arena arena;
    Onnx__NodeProto **nodes;
    size_t nnodes, max_nodes;
    Onnx__TensorProto **inits;
    size_t ninits, max_inits;
    size_t nweights;    /* float values in the initializers */
} gm_oxb_graph;

/* Sizes the lists; GM_ENOMEM. Free with gm_oxb_graph_free (also after a failed init). */
gm_status gm_oxb_graph_init(gm_oxb_graph *g, size_t max_nodes, size_t max_inits, gm_error *err);
void gm_oxb_graph_free(gm_oxb_graph *g);

/* Attributes (NULL when out of memory). */
Onnx__AttributeProto *gm_oxb_attr_int(gm_oxb_arena *a, const char *name, int64_t v);
Onnx__AttributeProto *gm_oxb_attr_float(gm_oxb_arena *a, const char *name, float v);
Onnx__AttributeProto *gm_oxb_attr_str(gm_oxb_arena *a, const char *name, const char *v);
/* INTS: n values (copied). */
Onnx__AttributeProto *gm_oxb_attr_ints(gm_oxb_arena *a, const char *name, const int64_t *v, int n);

/*
 * Appends a node named name: op_type(inputs...) -> output. Input names are
 * borrowed from the arena or static storage ("" is ONNX's absent optional
 * input); attrs are messages from this graph's arena (nattrs of them, any NULL
 * among them meaning an allocation failed). GM_ENOMEM, or GM_EINVAL when the list
 * is full (the caller's bound was wrong).
 */
gm_status gm_oxb_node(gm_oxb_graph *g, const char *op_type, const char *name, const char *const *inputs,
                      int ninputs, const char *output, Onnx__AttributeProto *const *attrs, int nattrs,
                      gm_error *err);

/* Appends a float initializer of shape dims[ndims], copying data. */
gm_status gm_oxb_init_floats(gm_oxb_graph *g, const char *name, const int64_t *dims, int ndims,
                             const float *data, gm_error *err);
/* Appends a 1-D int64 initializer of n values (shapes for Reshape). */
gm_status gm_oxb_init_int64s(gm_oxb_graph *g, const char *name, const int64_t *data, int n, gm_error *err);

/*
 * A float tensor's name and type: dims[ndims], where a negative dim is the
 * symbolic batch dimension "N". doc may be NULL.
 */
Onnx__ValueInfoProto *gm_oxb_value_info(gm_oxb_arena *a, const char *name, const int64_t *dims, int ndims,
                                        const char *doc);

#endif

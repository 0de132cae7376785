/*
 * gm_onnx_import_int: the ONNX importer's parts, private to gm_onnx_import*.c.
 *
 * The import runs in three steps, one file each:
 *   gm_onnx_import_proto.c   constants (TensorProto) and attributes, decoded from
 *                            the protobuf-c structures with every size checked;
 *   gm_onnx_import_lower.c   the graph's nodes, in order, to a flat list of gmorph
 *                            ops over numbered activations (weights in gmorph's
 *                            layout); shape arithmetic (Shape, Gather, ...) and
 *                            no-ops (Identity, Dropout) are evaluated away here;
 *   gm_onnx_import_blocks.c  the op list cut into a chain of blocks;
 * and gm_onnx_import.c reads the file and assembles the model file.
 *
 * Messages name the node ("node \"/fc/Gemm\" (op Gemm): ...") but not the file:
 * gm_onnx_import puts the path in front once.
 */
#ifndef GM_ONNX_IMPORT_INT_H
#define GM_ONNX_IMPORT_INT_H

#include <stddef.h>
#include <stdint.h>

#include "gm_block.h"
#include "onnx.pb-c.h"

enum { GM_OI_MAX_RANK = 8 };

/* Shape values computed from an activation (Shape) carry this for the symbolic batch. */
#define GM_OI_BATCH INT64_MIN

/* ---- constants and attributes (gm_onnx_import_proto.c) ------------------------ */

/* A constant tensor: floats (weights) or integers (shapes, indices, pads). Owns f or i. */
typedef struct {
    int is_int;
    int rank;
    int64_t dims[GM_OI_MAX_RANK];
    size_t n;
    float *f;
    int64_t *i;
} gm_oi_const;

/*
 * Decodes t (raw_data little-endian, or float_data / double_data / int32_data /
 * int64_data) into c. Floats: FLOAT and DOUBLE; integers: INT32 and INT64.
 * GM_EFORMAT for other types, external data, or a data size that disagrees with dims.
 */
gm_status gm_oi_const_decode(const Onnx__TensorProto *t, gm_oi_const *c, gm_error *err);
void gm_oi_const_free(gm_oi_const *c);

/* The attribute called name, or NULL. */
const Onnx__AttributeProto *gm_oi_attr(const Onnx__NodeProto *n, const char *name);
/* Typed reads; an absent attribute gives def (count -1 for lists), a mistyped one GM_EFORMAT. */
gm_status gm_oi_attr_int(const Onnx__NodeProto *n, const char *name, int64_t def, int64_t *v, gm_error *err);
gm_status gm_oi_attr_float(const Onnx__NodeProto *n, const char *name, float def, float *v, gm_error *err);
gm_status gm_oi_attr_ints(const Onnx__NodeProto *n, const char *name, int64_t *v, int cap, int *count,
                          gm_error *err);
gm_status gm_oi_attr_str(const Onnx__NodeProto *n, const char *name, const char *def, char *buf, size_t cap,
                         gm_error *err);

/* "node \"NAME\"", or for an unnamed node "node writing \"OUTPUT\"", in buf. */
const char *gm_oi_node_label(const Onnx__NodeProto *n, char *buf, size_t cap);
/* "<label> (op TYPE): " + message; returns code. */
gm_status gm_oi_node_fail(gm_error *err, gm_status code, const Onnx__NodeProto *n, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
/* A proto string that may be absent (NULL) as a C string. */
static inline const char *gm_oi_str(const char *s) { return s ? s : ""; }

/* ---- lowering (gm_onnx_import_lower.c) ------------------------------------------ */

/* One gmorph op of the lowered graph. */
typedef struct {
    gm_op op;
    int in[2];         /* activation ids read (in[1] for ADD only, else -1) */
    int out;           /* activation id written */
    const Onnx__NodeProto *node; /* the node it came from (borrowed from the proto) */
    float *w;          /* gm_op_nparams then gm_op_nbuffers floats, gmorph's layout; owned */
} gm_oi_op;

/* The graph as gmorph ops in topological order over activations 0..nacts-1 (0: the input). */
typedef struct {
    int nops, nacts;
    gm_oi_op *ops;
    gm_shape *shapes;  /* per activation, per sample */
    int *producer;     /* per activation: the op that writes it, -1 for the input */
    int output;        /* the activation that is the graph's output */
    gm_shape input;
} gm_oi_graph;

/*
 * Lowers g (default-domain opset version opset) into out. Refuses, naming the
 * node, any op, attribute or wiring gmorph's IR cannot express exactly.
 */
gm_status gm_oi_lower(const Onnx__GraphProto *g, int64_t opset, gm_oi_graph *out, gm_error *err);
void gm_oi_graph_free(gm_oi_graph *g);

/* ---- blocks (gm_onnx_import_blocks.c) --------------------------------------------- */

typedef struct {
    int nblocks;
    gm_block *blocks;                   /* model_id 0, layer_id = index: a zoo chain's origin */
    int (*opidx)[GM_BLOCK_MAX_OPS];     /* opidx[b][j]: the lowered op that is blocks[b].ops[j] */
} gm_oi_blocks;

/*
 * Cuts the ops that reach the output into a chain of blocks wherever exactly one
 * activation is live, then gathers each cut's trailing BatchNorm/ReLU into the
 * block before it and a Flatten into the Linear after it, so a zoo model's
 * layout (conv, pool, residual, gap, linear, head blocks) comes back.
 */
gm_status gm_oi_partition(const gm_oi_graph *g, gm_oi_blocks *out, gm_error *err);
void gm_oi_blocks_free(gm_oi_blocks *b);

#endif

/*
 * gm_onnx: ONNX models in and out, so users bring the task models they trained in
 * PyTorch (exported with torch.onnx) and deploy the fused model with ONNX Runtime
 * or TensorRT.
 *
 * Both directions use the format's own schema: onnx.proto from Debian's
 * libonnx-dev, compiled to C by protoc-c at build time (no hand-written protobuf
 * code). Nothing here prints; errors come back in gm_error with the file, and for
 * an unsupported or malformed node its name and op type.
 */
#ifndef GM_ONNX_H
#define GM_ONNX_H

#include "gm_mfile.h"

/* ---- import ------------------------------------------------------------------ */

typedef struct {
    const char *task; /* the task's name; NULL: the graph output's name */
} gm_onnx_import_opts;

/*
 * Reads the single-input, single-output classification model in the ONNX file at
 * path into *m (zeroed first; the caller frees it with gm_mfile_free). opts may be
 * NULL for the defaults. GM_EIO: the file cannot be read; GM_EFORMAT: not a valid
 * ONNX model, or it uses an op or attribute gmorph's IR does not support (the
 * message names the node and its op type); GM_ESHAPE: shapes that do not fit.
 */
gm_status gm_onnx_import(const char *path, const gm_onnx_import_opts *opts, gm_mfile *m, gm_error *err);

/* ---- export ------------------------------------------------------------------ */

/*
 * Writes m (a single model or a fused multi-task graph) as one ONNX graph at path:
 * one input, one output per task named after the task, weights included as
 * initializers, inference semantics (BatchNormalization with running statistics,
 * Dropout removed). Atomic: a temporary file renamed into place.
 */
gm_status gm_onnx_export(const gm_mfile *m, const char *path, gm_error *err);

#endif

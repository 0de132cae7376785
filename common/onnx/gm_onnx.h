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

/*
 * The graph reads the network's input already normalised, so the dataset's
 * normalisation has to come from elsewhere: nmean/nstd values given here (as many
 * as the input has channels), else the model's metadata_props "gmorph.mean" and
 * "gmorph.std" (comma-separated, as gm_onnx_export writes them), else 0 and 1.
 */
typedef struct {
    const char *task; /* the task's name; NULL: the graph output's name */
    int nmean, nstd;  /* 0: not given */
    float mean[GM_MF_MAX_CHANNELS], std[GM_MF_MAX_CHANNELS];
} gm_onnx_import_opts;

/*
 * Reads the single-input, single-output classification model in the ONNX file at
 * path into *m (zeroed first; the caller frees it with gm_mfile_free). opts may be
 * NULL for the defaults. GM_EIO: the file cannot be read; GM_EFORMAT: not a valid
 * ONNX model, or it uses an op or attribute gmorph's IR does not support (the
 * message names the node and its op type); GM_ESHAPE: shapes that do not fit;
 * GM_EINVAL: options that do not fit the model.
 *
 * Ops read (default domain, opsets 9 to 21): Conv (2-D, group 1, square kernel,
 * symmetric pads, no dilation), BatchNormalization (inference), Relu, MaxPool and
 * AveragePool (floor rounding, or ceil_mode where it gives the same size;
 * AveragePool counting padding, which torch writes as Pad + AveragePool),
 * GlobalAveragePool, Gemm (alpha = beta = 1) and MatMul (+ Add of its bias) as
 * linear layers, Flatten (axis 1) and Reshape to (N, -1), Add of two activations
 * (residual), Dropout and Identity (dropped), and Constant, Shape, Gather,
 * Unsqueeze and Concat where they compute a Reshape's shape. Anything else is
 * refused by node name and op type.
 *
 * The result is one task (metric "accuracy", no dataset, accuracies NaN) over a
 * chain of blocks laid out as gm_models lays out its own VGGs and ResNets:
 * model_id 0, layer_id = block index, the last block the task's head; arch is
 * "onnx <file name>".
 */
gm_status gm_onnx_import(const char *path, const gm_onnx_import_opts *opts, gm_mfile *m, gm_error *err);

/* ---- export ------------------------------------------------------------------ */

/*
 * The format written: opset 13 of the default domain (IR version 7), which ONNX
 * Runtime, TensorRT and onnx 1.12 and later all read.
 */
enum { GM_ONNX_OPSET = 13, GM_ONNX_IR_VERSION = 7 };

/* What an export wrote. */
typedef struct {
    int nodes, initializers;
    size_t params, buffers;  /* values exported: trainable weights, BatchNorm running statistics */
    size_t bytes;            /* size of the file */
    int noutputs;            /* = the model's ntasks */
    char outputs[GM_MF_MAX_TASKS][64]; /* graph output name of task k */
} gm_onnx_export_info;

/*
 * Writes m (a single model or a fused multi-task graph) as one ONNX graph at path:
 * one input, one output per task named after the task, weights included as
 * initializers, inference semantics (BatchNormalization with running statistics,
 * Dropout removed). Atomic: a temporary file renamed into place.
 *
 * The graph:
 * - input "input", float [N, C, H, W] with a symbolic batch N, already normalised
 *   as gmorph's own net expects (metadata "gmorph.mean" and "gmorph.std" hold the
 *   per-channel normalisation, comma-separated);
 * - one output per task, float [N, classes], in task order; its name is the
 *   task's with characters other than letters, digits, '_' and '-' replaced by
 *   '_', made unique by a suffix (metadata "gmorph.tasks" lists them, comma-
 *   separated; each output's doc_string has the task's own name);
 * - every block computed once however many tasks read it (a shared trunk is
 *   shared in the graph too); blocks no task reads are left out;
 * - node names "b<block>.<op><index>" (b3.conv0), initializers after them with
 *   PyTorch's suffixes (b3.conv0.weight, b3.bn1.running_var).
 * info may be NULL. GM_EINVAL or GM_ESHAPE: m is inconsistent (the message names
 * the block and op); GM_EIO: path cannot be written (no temporary file is left).
 */
gm_status gm_onnx_export(const gm_mfile *m, const char *path, gm_onnx_export_info *info, gm_error *err);

/*
 * The graph output names gm_onnx_export gives m's tasks (names[k] for task k),
 * for a caller that writes reference outputs under the same names.
 */
void gm_onnx_output_names(const gm_mfile *m, char names[][64]);

#endif

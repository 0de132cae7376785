/* ONNX import (see gm_onnx.h). Placeholder until the importer lands. */
#include "gm_onnx.h"

gm_status gm_onnx_import(const char *path, const gm_onnx_import_opts *opts, gm_mfile *m, gm_error *err)
{
    (void)opts;
    (void)m;
    return gm_error_set(err, GM_EINVAL, "%s: ONNX import is not built yet", path);
}

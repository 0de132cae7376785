/* ONNX export (see gm_onnx.h). Placeholder until the exporter lands. */
#include "gm_onnx.h"

gm_status gm_onnx_export(const gm_mfile *m, const char *path, gm_error *err)
{
    (void)m;
    return gm_error_set(err, GM_EINVAL, "%s: ONNX export is not built yet", path);
}

/* gm_backend: what every backend shares; each backend's table lives with it (common/cpu/, common/cuda/). */
#include "gm_backend.h"

void gm_backend_free(gm_backend *be)
{
    if (be) be->destroy(be);
}

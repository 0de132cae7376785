#include "gm_tensor.h"

#include <string.h>

gm_status gm_tensor_create(gm_tensor *t, gm_backend *be, int n, gm_shape shape, gm_error *err)
{
    memset(t, 0, sizeof *t);
    if (n < 1 || shape.c < 1 || shape.h < 1 || shape.w < 1)
        return gm_error_set(err, GM_ESHAPE, "tensor: zero-sized or negative shape %dx%dx%dx%d", n, shape.c,
                            shape.h, shape.w);
    size_t numel = (size_t)n * gm_shape_numel(shape);
    float *data = be->alloc(be, sizeof(float) * numel);
    if (!data)
        return gm_error_set(err, GM_ENOMEM, "tensor: cannot allocate %dx%dx%dx%d floats on %s", n, shape.c,
                            shape.h, shape.w, be->name);
    *t = (gm_tensor){n, shape.c, shape.h, shape.w, data, be};
    return GM_OK;
}

void gm_tensor_free(gm_tensor *t)
{
    if (t && t->data) t->be->free(t->be, t->data);
    if (t) memset(t, 0, sizeof *t);
}

static gm_status check_range(const gm_tensor *t, size_t first, size_t count, gm_error *err)
{
    if (!t->data) return gm_error_set(err, GM_EINVAL, "tensor: not allocated");
    if (first > gm_tensor_numel(t) || count > gm_tensor_numel(t) - first)
        return gm_error_set(err, GM_ESHAPE, "tensor: elements [%zu, %zu) outside a %zu-element tensor", first,
                            first + count, gm_tensor_numel(t));
    return GM_OK;
}

gm_status gm_tensor_from_host(gm_tensor *t, size_t first, const float *src, size_t count, gm_error *err)
{
    gm_status s = check_range(t, first, count, err);
    if (s == GM_OK) t->be->to_device(t->be, t->data + first, src, sizeof(float) * count);
    return s;
}

gm_status gm_tensor_to_host(const gm_tensor *t, size_t first, float *dst, size_t count, gm_error *err)
{
    gm_status s = check_range(t, first, count, err);
    if (s == GM_OK) t->be->to_host(t->be, dst, t->data + first, sizeof(float) * count);
    return s;
}

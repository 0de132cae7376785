#include "gm_idx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static uint32_t be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Reads exactly n bytes or reports a truncated file. */
static gm_status read_exact(gzFile f, void *dst, size_t n, const char *path, gm_error *err)
{
    unsigned char *p = dst;
    while (n > 0) {
        unsigned chunk = n > (1u << 30) ? (1u << 30) : (unsigned)n;
        int got = gzread(f, p, chunk);
        if (got <= 0) {
            int zerr;
            const char *why = got < 0 ? gzerror(f, &zerr) : "unexpected end of file";
            return gm_error_set(err, GM_EFORMAT, "%s: truncated or corrupt (%s)", path, why);
        }
        p += got;
        n -= (size_t)got;
    }
    return GM_OK;
}

/* Opens an IDX file and checks its magic: type 0x08 (uint8) and ndim dimensions. */
static gm_status open_idx(const char *path, int ndim, uint32_t *dims, gzFile *out, gm_error *err)
{
    gzFile f = gzopen(path, "rb");
    if (!f) return gm_error_set(err, GM_EIO, "%s: cannot open (is dataset-fashion-mnist installed?)", path);
    unsigned char hdr[16];
    gm_status s = read_exact(f, hdr, 4 + 4 * (size_t)ndim, path, err);
    if (s == GM_OK && (hdr[0] || hdr[1] || hdr[2] != 0x08 || hdr[3] != ndim))
        s = gm_error_set(err, GM_EFORMAT, "%s: not an IDX file of %d-d uint8 data (magic %02x%02x%02x%02x)",
                         path, ndim, hdr[0], hdr[1], hdr[2], hdr[3]);
    for (int i = 0; s == GM_OK && i < ndim; i++) dims[i] = be32(hdr + 4 + 4 * i);
    if (s != GM_OK) {
        gzclose(f);
        return s;
    }
    *out = f;
    return GM_OK;
}

static gm_status load_labels(gm_imageset *set, const char *path, gm_error *err)
{
    uint32_t n;
    gzFile f;
    gm_status s = open_idx(path, 1, &n, &f, err);
    if (s != GM_OK) return s;
    if (n < (uint32_t)set->n) s = gm_error_set(err, GM_EFORMAT, "%s: %u labels for %d images", path, n, set->n);
    uint8_t *raw = s == GM_OK ? malloc((size_t)set->n) : NULL;
    if (s == GM_OK && !raw) s = gm_error_set(err, GM_ENOMEM, "%s: out of memory", path);
    if (s == GM_OK) s = read_exact(f, raw, (size_t)set->n, path, err);
    for (int i = 0; s == GM_OK && i < set->n; i++) {
        if (raw[i] >= set->classes)
            s = gm_error_set(err, GM_EFORMAT, "%s: label %d of image %d is not below %d", path, raw[i], i, set->classes);
        set->y[i] = raw[i];
    }
    free(raw);
    gzclose(f);
    return s;
}

gm_status gm_imageset_load_idx(gm_imageset *set, const char *dir, const char *prefix, int limit, gm_error *err)
{
    memset(set, 0, sizeof *set);
    char ipath[1024], lpath[1024];
    snprintf(ipath, sizeof ipath, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    snprintf(lpath, sizeof lpath, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    uint32_t dims[3];
    gzFile f;
    gm_status s = open_idx(ipath, 3, dims, &f, err);
    if (s != GM_OK) return s;
    if (dims[0] == 0 || dims[1] == 0 || dims[2] == 0 || dims[1] > 4096 || dims[2] > 4096 || dims[0] > (1u << 28)) {
        gzclose(f);
        return gm_error_set(err, GM_EFORMAT, "%s: implausible shape %u x %u x %u", ipath, dims[0], dims[1], dims[2]);
    }
    set->n = limit > 0 && (uint32_t)limit < dims[0] ? limit : (int)dims[0];
    set->classes = 10;
    set->shape = (gm_shape){1, (int)dims[1], (int)dims[2]};
    set->x = malloc((size_t)set->n * gm_shape_numel(set->shape));
    set->y = malloc(sizeof(int32_t) * (size_t)set->n);
    if (!set->x || !set->y) s = gm_error_set(err, GM_ENOMEM, "%s: out of memory for %d images", ipath, set->n);
    if (s == GM_OK) s = read_exact(f, set->x, (size_t)set->n * gm_shape_numel(set->shape), ipath, err);
    gzclose(f);
    if (s == GM_OK) s = load_labels(set, lpath, err);
    if (s != GM_OK) gm_imageset_free(set);
    return s;
}

void gm_imageset_free(gm_imageset *set)
{
    if (!set) return;
    free(set->x);
    free(set->y);
    memset(set, 0, sizeof *set);
}

void gm_imageset_to_float(const gm_imageset *set, const int *index, int count, float mean, float std,
                          float *out)
{
    size_t numel = gm_shape_numel(set->shape);
    const float a = 1.0f / (255.0f * std), b = -mean / std;
    for (int i = 0; i < count; i++) {
        const uint8_t *src = set->x + (size_t)index[i] * numel;
        float *dst = out + (size_t)i * numel;
        for (size_t j = 0; j < numel; j++) dst[j] = src[j] * a + b;
    }
}

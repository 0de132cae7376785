/*
 * gm_idx: reads the IDX files of MNIST-style datasets (optionally gzipped) into
 * an in-memory labelled image set, validating magic numbers, sizes and labels.
 *
 * Fashion-MNIST from Debian's dataset-fashion-mnist package lives in
 * /usr/share/datasets/fashion-mnist/ (GM_FASHION_MNIST_DIR).
 */
#ifndef GM_IDX_H
#define GM_IDX_H

#include <stdint.h>

#include "gm_error.h"
#include "gm_op.h"

#define GM_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* n images of one shape, uint8 pixels, int32 labels in [0, classes). */
typedef struct {
    int n, classes;
    gm_shape shape;
    uint8_t *x;  /* n * numel(shape) */
    int32_t *y;  /* n */
} gm_imageset;

/*
 * Loads "<dir>/<prefix>-images-idx3-ubyte.gz" and the matching labels
 * (prefix "train" or "t10k"); limit > 0 keeps only the first limit images.
 * On success the caller owns set and frees it with gm_imageset_free.
 */
gm_status gm_imageset_load_idx(gm_imageset *set, const char *dir, const char *prefix, int limit,
                               gm_error *err);
void gm_imageset_free(gm_imageset *set);

/* Converts images [first, first+count) to floats: (pixel/255 - mean) / std. */
void gm_imageset_to_float(const gm_imageset *set, const int *index, int count, float mean, float std,
                          float *out);

#endif

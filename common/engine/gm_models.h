/*
 * gm_models: the reference model families the task zoo is built from.
 *
 * VGG-style: stages of 3x3 Conv+BN+ReLU blocks, each stage ended by a 2x2 max
 * pool (skipped once the map is 1 pixel), then three linear layers (two hidden
 * with ReLU and dropout, one head). "VGG-11" has 8 convs, "VGG-13" 10.
 * ResNet-style: a 3x3 stem, stages of BasicBlocks (the first of each later
 * stage halves the map), global average pooling and a linear head;
 * depth = 2 + 2 * (number of BasicBlocks), from 8 to 18.
 * Both are sized for small images (28 to 64 pixels).
 */
#ifndef GM_MODELS_H
#define GM_MODELS_H

#include "gm_block.h"
#include "gm_net.h"

enum { GM_MODEL_MAX_BLOCKS = 64, GM_MAX_STAGES = 4 };

/* A chain of blocks ending in a task head: what gm_net_desc needs. */
typedef struct {
    gm_shape input;
    int classes;
    int nblocks;
    gm_block blocks[GM_MODEL_MAX_BLOCKS];
} gm_model;

typedef struct {
    int nstages;                 /* 1 to 4 */
    int convs[GM_MAX_STAGES];    /* 3x3 convolutions per stage */
    int widths[GM_MAX_STAGES];   /* channels per stage */
    int fc;                      /* width of the two hidden linear layers */
    float dropout;               /* after each hidden linear layer */
} gm_vgg_config;

typedef struct {
    int nstages;                 /* 1 to 4 */
    int blocks[GM_MAX_STAGES];   /* BasicBlocks per stage */
    int widths[GM_MAX_STAGES];
} gm_resnet_config;

/* depth 11 or 13; widths[4] as given (a 0 ends the list early). */
gm_status gm_vgg_preset(gm_vgg_config *c, int depth, const int *widths, gm_error *err);
/* depth 8, 10, 12, 14, 16 or 18. */
gm_status gm_resnet_preset(gm_resnet_config *c, int depth, const int *widths, gm_error *err);

gm_status gm_model_vgg(gm_model *m, const gm_vgg_config *c, gm_shape input, int classes, gm_error *err);
gm_status gm_model_resnet(gm_model *m, const gm_resnet_config *c, gm_shape input, int classes, gm_error *err);

/* The chain as a net description (borrows m). */
gm_net_desc gm_model_desc(const gm_model *m);
size_t gm_model_nparams(const gm_model *m);

/*
 * Builds a model from an architecture name: "vgg11", "vgg13", "resnet8" ...
 * "resnet18", with stage widths (0-terminated, up to 4). Unknown names are
 * reported with the list of known ones.
 */
gm_status gm_model_from_name(gm_model *m, const char *arch, const int *widths, gm_shape input,
                             int classes, gm_error *err);

#endif

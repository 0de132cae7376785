/*
 * gm_make: the shipped dataset makers (Multi-Fashion, Fashion, Sprites) and the
 * converter of a user's own arrays, each writing one gm_dataset file
 * (common/formats/gm_dataset.h; `gmorph data` is their command line).
 *
 * Reproducible: a maker's file is a pure function of its options and seed, so the
 * same options give a byte-identical file. Each split draws from its own rng
 * (gm_make_split_rng), so changing one split's size leaves the others' samples
 * as they were. All geometry is integer arithmetic: no float rounding can differ
 * between builds or machines.
 *
 * Generators fill caller-owned arrays with count consecutive samples and advance
 * the rng they are given; calling one on consecutive ranges gives the same samples
 * as a single call. The file writers stream fixed-size chunks through them, and
 * tests call them directly to see what went into a file.
 *
 * Images are uint8, (C, H, W) per sample, C = 1 for the Fashion makers and 3 for
 * Sprites; labels are int32.
 */
#ifndef GM_MAKE_H
#define GM_MAKE_H

#include <stdint.h>

#include "gm_dataset.h"
#include "gm_idx.h"
#include "gm_rng.h"

/* Called after each chunk a writer appends (done == total at a split's end). */
typedef void (*gm_make_progress)(void *ctx, gm_split s, long done, long total);

/* The rng of one split: seeded from (seed, split) only. */
void gm_make_split_rng(uint64_t seed, gm_split s, gm_rng *rng);
/* A uniform random permutation of [0, n) (Fisher-Yates). */
void gm_make_permutation(gm_rng *rng, int n, int *perm);

/* ---- Fashion-MNIST based makers ---------------------------------------- */

enum {
    GM_FASHION_SIDE = 28,           /* Fashion-MNIST images are 28x28 */
    GM_FASHION_TRAIN_IMAGES = 60000,
    GM_FASHION_TRAIN_POOL = 50000,  /* first 50,000 training images feed train */
    GM_FASHION_VAL_POOL = 10000,    /* the last 10,000 feed val */
    GM_FASHION_TEST_POOL = 10000,   /* t10k's 10,000 feed test */
    GM_FASHION_MAX_SIZE = 1024
};

/* The images one split draws from (pointers into a gm_make_fashion_src). */
typedef struct {
    const uint8_t *x; /* n * 28 * 28 */
    const int32_t *y; /* n */
    int n;
} gm_make_pool;

/* Fashion-MNIST loaded once, with the pool of each split. */
typedef struct {
    gm_imageset train, test;
    gm_make_pool pool[GM_NSPLITS];
} gm_make_fashion_src;

/*
 * Loads Fashion-MNIST's training and test files from dir (NULL: the Debian
 * package's GM_FASHION_MNIST_DIR). A missing directory is named along with the
 * package that provides it; a training file of other than 60,000 images is an
 * error. Free with gm_make_fashion_src_free (also after a failure).
 */
gm_status gm_make_fashion_src_load(gm_make_fashion_src *src, const char *dir, gm_error *err);
void gm_make_fashion_src_free(gm_make_fashion_src *src);

/* Copies a 28x28 image onto a size x size canvas at (top, left), keeping the brighter pixel. */
void gm_make_overlay(uint8_t *canvas, int size, const uint8_t *img, int top, int left);

/*
 * count Multi-Fashion samples (Lin et al. 2019): two independent uniform picks
 * from pool per sample, the first drawn at the top-left corner of a size x size
 * canvas and the second at the bottom-right (offset size - 28), combined by max.
 * x: count * size * size; left, right: count labels each; same: NULL or count
 * labels of the "same_group" task (gm_make_fashion_group); picks: NULL or
 * 2 * count pool indices (left, right) for whoever wants to check the result.
 */
void gm_make_multi_fashion_gen(const gm_make_pool *pool, int size, gm_rng *rng, long count, uint8_t *x,
                               int32_t *left, int32_t *right, int32_t *same, int *picks);

/*
 * The coarse group of a Fashion-MNIST class: 0 tops (T-shirt, pullover, dress,
 * coat, shirt), 1 bottoms (trouser), 2 shoes (sandal, sneaker, ankle boot),
 * 3 bags. Multi-Fashion's optional third task, "same_group", is 1 when both
 * items of an image are in the same group: it needs both items at once, where
 * left and right each need one.
 */
int gm_make_fashion_group(int cls);

/* Fashion alone: the pool images order[0..count) centred on a size x size canvas. */
void gm_make_fashion_gen(const gm_make_pool *pool, int size, const int *order, long count, uint8_t *x,
                         int32_t *y);

/* ---- Sprites ------------------------------------------------------------ */

enum {
    GM_SPRITE_SHAPES = 4,    /* square, circle, triangle, cross */
    GM_SPRITE_COLOURS = 6,   /* red, yellow, green, cyan, blue, magenta */
    GM_SPRITE_SCALES = 3,    /* small, medium, large */
    GM_SPRITE_POSITIONS = 9, /* 3x3 grid of cells, row-major from the top-left */
    GM_SPRITE_MIN_SIZE = 12,
    GM_SPRITE_MAX_SIZE = 1024,
    GM_SPRITE_SUB = 16       /* sub-pixel units per pixel of a sprite's centre */
};

typedef enum { GM_SPRITE_SHAPE, GM_SPRITE_COLOUR, GM_SPRITE_SCALE, GM_SPRITE_POSITION, GM_SPRITE_NFACTORS } gm_sprite_factor;

/* "shape", "colour", "scale", "position": the task names. */
const char *gm_make_sprite_factor_name(gm_sprite_factor f);
/* Number of classes of a factor. */
int gm_make_sprite_classes(gm_sprite_factor f);

/* One sprite: its factors and its jitter from the cell centre in 1/16 pixel. */
typedef struct {
    int f[GM_SPRITE_NFACTORS];
    int jx, jy;
} gm_sprite;

/*
 * Draws a sprite for a size x size canvas: each factor uniformly and separately
 * (so they are independent), then the jitter (at most a twentieth of the canvas
 * each way).
 */
void gm_make_sprite_draw(gm_rng *rng, int size, gm_sprite *sp);
/* Marks with 1 the size * size pixels the sprite covers, 0 elsewhere. */
void gm_make_sprite_mask(const gm_sprite *sp, int size, uint8_t *mask);
/*
 * Renders a sprite as (3, size, size) uint8: a dark noisy background (each
 * channel in [0, 48)) and the sprite in its colour with a little noise; the noise
 * comes from rng.
 */
void gm_make_sprite_render(const gm_sprite *sp, int size, gm_rng *rng, uint8_t *x);
/* count samples: draw and render each; y[f] (any may be NULL) gets factor f's labels. */
void gm_make_sprites_gen(gm_rng *rng, int size, long count, uint8_t *x, int32_t *const y[GM_SPRITE_NFACTORS]);

/* ---- writing the shipped makers' files ---------------------------------- */

typedef enum { GM_MAKE_MULTI_FASHION, GM_MAKE_FASHION, GM_MAKE_SPRITES, GM_MAKE_NKINDS } gm_make_kind;

typedef struct {
    int size;                /* canvas side */
    long n[GM_NSPLITS];      /* samples per split; 0 leaves a split out */
    uint64_t seed;
    const char *fashion_dir; /* NULL: GM_FASHION_MNIST_DIR; unused by sprites */
    int group_task;          /* multi-fashion: also the task "same_group" (gm_make_fashion_group) */
} gm_make_opts;

/* "multi-fashion", "fashion", "sprites". */
const char *gm_make_kind_name(gm_make_kind k);
/*
 * A maker's defaults: multi-fashion size 36, 60000/10000/10000 samples;
 * fashion size 36, 50000/10000/10000; sprites size 32, 40000/5000/5000; seed 1.
 */
gm_make_opts gm_make_defaults(gm_make_kind k);

/*
 * Checks a maker's options without touching any file: size range, split sizes in
 * [0, 1e9] and not all 0, and for fashion no split larger than its pool. The
 * message names the split or size and the value. The writers below call it first.
 */
gm_status gm_make_check(gm_make_kind k, const gm_make_opts *o, gm_error *err);

/*
 * Writes a maker's dataset to path (atomically: nothing is left at path on
 * error), after gm_make_check.
 * The file's source attribute records the maker, every option and the seed.
 * progress may be NULL.
 */
gm_status gm_make_multi_fashion(const char *path, const gm_make_opts *o, gm_make_progress progress, void *ctx,
                                gm_error *err);
gm_status gm_make_fashion(const char *path, const gm_make_opts *o, gm_make_progress progress, void *ctx,
                          gm_error *err);
gm_status gm_make_sprites(const char *path, const gm_make_opts *o, gm_make_progress progress, void *ctx,
                          gm_error *err);
/* Dispatches to one of the three above. */
gm_status gm_make_write(gm_make_kind k, const char *path, const gm_make_opts *o, gm_make_progress progress,
                        void *ctx, gm_error *err);

/* ---- a user's own arrays ------------------------------------------------- */

typedef enum { GM_ARR_U8, GM_ARR_I8, GM_ARR_I16, GM_ARR_I32, GM_ARR_I64, GM_ARR_F32 } gm_arr_dtype;

enum { GM_ARR_MAX_RANK = 8 };

/*
 * An array read by rows (along its first dimension) from a source: a ".npy" file
 * (format 1.0, 2.0 or 3.0, little-endian, C order) or an HDF5 dataset written
 * "file.h5:/path/in/file". Supported dtypes are those of gm_arr_dtype; any other,
 * a big-endian or Fortran-order .npy and a truncated file are errors naming the
 * file.
 */
typedef struct gm_make_array gm_make_array;

gm_status gm_make_array_open(gm_make_array **a, const char *source, gm_error *err);
void gm_make_array_close(gm_make_array *a);
int gm_make_array_rank(const gm_make_array *a);
/* Dimension i (0 <= i < rank). */
long gm_make_array_dim(const gm_make_array *a, int i);
gm_arr_dtype gm_make_array_dtype(const gm_make_array *a);
/* The source as given, for messages. */
const char *gm_make_array_source(const gm_make_array *a);
/* Reads rows [first, first+count) in native byte order into dst (count * row size bytes). */
gm_status gm_make_array_read(gm_make_array *a, long first, long count, void *dst, gm_error *err);
/* "uint8", "int8", ..., "float32". */
const char *gm_make_dtype_name(gm_arr_dtype t);

typedef struct {
    char name[GM_DS_NAME_MAX];
    const char *y[GM_NSPLITS]; /* label source of each split that has images */
    int classes;               /* 0: max label + 1 over all splits, at least 2 */
} gm_make_import_task;

typedef struct {
    const char *name;             /* the dataset's name */
    const char *x[GM_NSPLITS];    /* image source per split; NULL leaves the split out */
    int ntasks;
    gm_make_import_task tasks[GM_DS_MAX_TASKS];
    int nhwc;                     /* 4-d images are (N, H, W, C) rather than (N, C, H, W) */
    long chunk_bytes;             /* images read per step; 0: 16 MiB */
} gm_make_import_opts;

/*
 * Converts a user's arrays into a dataset file at path. Images are uint8 (scale
 * 1/255) or float32 (scale 1, every value finite), shaped (N, C, H, W), (N, H, W, C)
 * with nhwc, or (N, H, W) for one channel; every split alike. Labels are integers
 * in [0, classes), shaped (N,) with N equal to the split's image count; every task
 * needs labels for every split given. Images are streamed: at most one chunk of
 * them is in memory. Errors name the source and what is wrong.
 */
gm_status gm_make_import(const char *path, const gm_make_import_opts *o, gm_make_progress progress, void *ctx,
                         gm_error *err);

#endif

#define _POSIX_C_SOURCE 200809L
#include "gm_make.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "gm_h5.h"

/* Samples (or image bytes) a writer generates per gm_ds_append. */
enum { CHUNK_BYTES = 8 << 20, IMPORT_CHUNK_BYTES = 16 << 20 };
#define MAX_SAMPLES 1000000000L

void gm_make_split_rng(uint64_t seed, gm_split s, gm_rng *rng)
{
    /* gm_rng_seed runs splitmix64 over this, so nearby values give unrelated streams. */
    gm_rng_seed(rng, seed * 4ull + (uint64_t)s);
}

void gm_make_permutation(gm_rng *rng, int n, int *perm)
{
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)gm_rng_below(rng, (uint32_t)i + 1);
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* ---- Fashion-MNIST ------------------------------------------------------- */

gm_status gm_make_fashion_src_load(gm_make_fashion_src *src, const char *dir, gm_error *err)
{
    memset(src, 0, sizeof *src);
    if (!dir) dir = GM_FASHION_MNIST_DIR;
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return gm_error_set(err, GM_EIO,
                            "Fashion-MNIST directory %s does not exist (the Debian package "
                            "dataset-fashion-mnist provides it: apt-get install dataset-fashion-mnist)",
                            dir);
    gm_status s = gm_imageset_load_idx(&src->train, dir, "train", 0, err);
    if (s == GM_OK) s = gm_imageset_load_idx(&src->test, dir, "t10k", 0, err);
    if (s != GM_OK) return s;
    const gm_shape side = {1, GM_FASHION_SIDE, GM_FASHION_SIDE};
    if (src->train.n != GM_FASHION_TRAIN_IMAGES || src->train.shape.c != side.c || src->train.shape.h != side.h ||
        src->train.shape.w != side.w || src->test.shape.c != side.c || src->test.shape.h != side.h ||
        src->test.shape.w != side.w)
        return gm_error_set(err, GM_EFORMAT,
                            "%s: expected Fashion-MNIST's 60000 training images of 28x28, found %d of %dx%d", dir,
                            src->train.n, src->train.shape.h, src->train.shape.w);
    const size_t px = (size_t)GM_FASHION_SIDE * GM_FASHION_SIDE;
    src->pool[GM_SPLIT_TRAIN] = (gm_make_pool){src->train.x, src->train.y, GM_FASHION_TRAIN_POOL};
    src->pool[GM_SPLIT_VAL] = (gm_make_pool){src->train.x + (size_t)GM_FASHION_TRAIN_POOL * px,
                                             src->train.y + GM_FASHION_TRAIN_POOL, GM_FASHION_VAL_POOL};
    src->pool[GM_SPLIT_TEST] = (gm_make_pool){src->test.x, src->test.y, src->test.n};
    return GM_OK;
}

void gm_make_fashion_src_free(gm_make_fashion_src *src)
{
    gm_imageset_free(&src->train);
    gm_imageset_free(&src->test);
    memset(src, 0, sizeof *src);
}

void gm_make_overlay(uint8_t *canvas, int size, const uint8_t *img, int top, int left)
{
    for (int r = 0; r < GM_FASHION_SIDE; r++) {
        uint8_t *dst = canvas + (size_t)(top + r) * (size_t)size + left;
        const uint8_t *row = img + (size_t)r * GM_FASHION_SIDE;
        for (int c = 0; c < GM_FASHION_SIDE; c++)
            if (row[c] > dst[c]) dst[c] = row[c];
    }
}

int gm_make_fashion_group(int cls)
{
    static const int group[10] = {0, 1, 0, 0, 0, 2, 0, 2, 3, 2};
    return cls >= 0 && cls < 10 ? group[cls] : -1;
}

void gm_make_multi_fashion_gen(const gm_make_pool *pool, int size, gm_rng *rng, long count, uint8_t *x,
                               int32_t *left, int32_t *right, int32_t *same, int *picks)
{
    const size_t px = (size_t)GM_FASHION_SIDE * GM_FASHION_SIDE, canvas = (size_t)size * (size_t)size;
    const int shift = size - GM_FASHION_SIDE;
    for (long i = 0; i < count; i++) {
        /* Two separate draws, left first: the pair is uniform over pool x pool. */
        int a = (int)gm_rng_below(rng, (uint32_t)pool->n);
        int b = (int)gm_rng_below(rng, (uint32_t)pool->n);
        uint8_t *img = x + (size_t)i * canvas;
        memset(img, 0, canvas);
        gm_make_overlay(img, size, pool->x + (size_t)a * px, 0, 0);
        gm_make_overlay(img, size, pool->x + (size_t)b * px, shift, shift);
        left[i] = pool->y[a];
        right[i] = pool->y[b];
        if (same) same[i] = gm_make_fashion_group(left[i]) == gm_make_fashion_group(right[i]);
        if (picks) {
            picks[2 * i] = a;
            picks[2 * i + 1] = b;
        }
    }
}

void gm_make_fashion_gen(const gm_make_pool *pool, int size, const int *order, long count, uint8_t *x,
                         int32_t *y)
{
    const size_t px = (size_t)GM_FASHION_SIDE * GM_FASHION_SIDE, canvas = (size_t)size * (size_t)size;
    const int off = (size - GM_FASHION_SIDE) / 2;
    for (long i = 0; i < count; i++) {
        uint8_t *img = x + (size_t)i * canvas;
        memset(img, 0, canvas);
        gm_make_overlay(img, size, pool->x + (size_t)order[i] * px, off, off);
        y[i] = pool->y[order[i]];
    }
}

/* ---- Sprites ------------------------------------------------------------- */

static const char *const factor_names[GM_SPRITE_NFACTORS] = {"shape", "colour", "scale", "position"};
static const int factor_classes[GM_SPRITE_NFACTORS] = {GM_SPRITE_SHAPES, GM_SPRITE_COLOURS, GM_SPRITE_SCALES,
                                                       GM_SPRITE_POSITIONS};
/* Six hues 60 degrees apart, bright enough to stand out from the dark background. */
static const uint8_t colours[GM_SPRITE_COLOURS][3] = {{225, 40, 40},  {230, 215, 40}, {40, 205, 60},
                                                      {40, 205, 225}, {55, 95, 245},  {215, 50, 215}};
/* Half-extent of each scale and cell centres, in percent of the canvas side. */
static const int scale_pct[GM_SPRITE_SCALES] = {13, 20, 27};
static const int cell_pct[3] = {22, 50, 78};

const char *gm_make_sprite_factor_name(gm_sprite_factor f) { return factor_names[f]; }
int gm_make_sprite_classes(gm_sprite_factor f) { return factor_classes[f]; }

void gm_make_sprite_draw(gm_rng *rng, int size, gm_sprite *sp)
{
    for (int f = 0; f < GM_SPRITE_NFACTORS; f++) sp->f[f] = (int)gm_rng_below(rng, (uint32_t)factor_classes[f]);
    int j = size * GM_SPRITE_SUB / 20;
    sp->jx = (int)gm_rng_below(rng, (uint32_t)(2 * j + 1)) - j;
    sp->jy = (int)gm_rng_below(rng, (uint32_t)(2 * j + 1)) - j;
}

/*
 * Centre and half-extent in sub-pixels. The centre is kept where the sprite fits
 * whole, then moved to the middle of its pixel: a symmetric raster keeps small
 * shapes apart (a circle and a square centred on a pixel corner can cover the
 * same 4x4 pixels).
 */
static void sprite_geometry(const gm_sprite *sp, int size, long *cx, long *cy, long *r)
{
    const long side = (long)size * GM_SPRITE_SUB;
    /* Half-extent n + 1/2 pixels: a digital disk of that radius never fills its
     * bounding square (n >= 2), and each scale is at least a pixel above the last. */
    long n = 1;
    for (int k = 0; k <= sp->f[GM_SPRITE_SCALE]; k++) {
        long want = (long)size * scale_pct[k] / 100;
        n = want > n + 1 ? want : n + 1;
    }
    *r = n * GM_SPRITE_SUB + GM_SPRITE_SUB / 2;
    int pos = sp->f[GM_SPRITE_POSITION];
    long c[2] = {side * cell_pct[pos % 3] / 100 + sp->jx, side * cell_pct[pos / 3] / 100 + sp->jy};
    for (int i = 0; i < 2; i++) {
        if (c[i] < *r) c[i] = *r;
        if (c[i] > side - *r) c[i] = side - *r;
        c[i] = c[i] / GM_SPRITE_SUB * GM_SPRITE_SUB + GM_SPRITE_SUB / 2;
    }
    *cx = c[0];
    *cy = c[1];
}

/* Whether offset (dx, dy) from the centre (sub-pixels, y down) lies in the shape. */
static int inside(int shape, long dx, long dy, long r)
{
    long ax = labs(dx), ay = labs(dy);
    switch (shape) {
    case 0: /* square: the circle's bounding box, so small ones still differ by their corners */
        return ax <= r && ay <= r;
    case 1: /* circle */
        return dx * dx + dy * dy <= r * r;
    case 2: /* triangle, apex up, base 2r wide at the bottom */
        return dy >= -r && dy <= r && 2 * ax <= dy + r;
    default: { /* cross: two bars of width 3/4 r */
        long t = r * 3 / 8;
        return (ax <= r && ay <= t) || (ax <= t && ay <= r);
    }
    }
}

void gm_make_sprite_mask(const gm_sprite *sp, int size, uint8_t *mask)
{
    long cx, cy, r;
    sprite_geometry(sp, size, &cx, &cy, &r);
    for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++) {
            long px = (long)x * GM_SPRITE_SUB + GM_SPRITE_SUB / 2, py = (long)y * GM_SPRITE_SUB + GM_SPRITE_SUB / 2;
            mask[(size_t)y * (size_t)size + (size_t)x] = (uint8_t)inside(sp->f[GM_SPRITE_SHAPE], px - cx, py - cy, r);
        }
}

static uint8_t clamp_u8(int v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

void gm_make_sprite_render(const gm_sprite *sp, int size, gm_rng *rng, uint8_t *x)
{
    long cx, cy, r;
    sprite_geometry(sp, size, &cx, &cy, &r);
    const size_t plane = (size_t)size * (size_t)size;
    const uint8_t *col = colours[sp->f[GM_SPRITE_COLOUR]];
    for (int y = 0; y < size; y++)
        for (int xx = 0; xx < size; xx++) {
            long px = (long)xx * GM_SPRITE_SUB + GM_SPRITE_SUB / 2, py = (long)y * GM_SPRITE_SUB + GM_SPRITE_SUB / 2;
            int in = inside(sp->f[GM_SPRITE_SHAPE], px - cx, py - cy, r);
            size_t at = (size_t)y * (size_t)size + (size_t)xx;
            for (int c = 0; c < 3; c++) {
                int noise = (int)gm_rng_below(rng, 48);
                x[(size_t)c * plane + at] = in ? clamp_u8(col[c] + noise - 24) : (uint8_t)noise;
            }
        }
}

void gm_make_sprites_gen(gm_rng *rng, int size, long count, uint8_t *x, int32_t *const y[GM_SPRITE_NFACTORS])
{
    const size_t numel = 3 * (size_t)size * (size_t)size;
    for (long i = 0; i < count; i++) {
        gm_sprite sp;
        gm_make_sprite_draw(rng, size, &sp);
        gm_make_sprite_render(&sp, size, rng, x + (size_t)i * numel);
        for (int f = 0; f < GM_SPRITE_NFACTORS; f++)
            if (y && y[f]) y[f][i] = sp.f[f];
    }
}

/* ---- the makers' files --------------------------------------------------- */

static const char *const kind_names[GM_MAKE_NKINDS] = {"multi-fashion", "fashion", "sprites"};

const char *gm_make_kind_name(gm_make_kind k) { return kind_names[k]; }

gm_make_opts gm_make_defaults(gm_make_kind k)
{
    switch (k) {
    case GM_MAKE_MULTI_FASHION: return (gm_make_opts){.size = 36, .n = {60000, 10000, 10000}, .seed = 1};
    case GM_MAKE_FASHION: return (gm_make_opts){.size = 36, .n = {50000, 10000, 10000}, .seed = 1};
    default: return (gm_make_opts){.size = 32, .n = {40000, 5000, 5000}, .seed = 1};
    }
}

/* Fills samples [first, first+count) of a split: x and one label array per task. */
typedef void (*gen_fn)(void *ctx, long first, long count, uint8_t *x, int32_t *const *y);

/* Generates and appends a split in chunks, so memory stays bounded whatever its size. */
static gm_status write_split(gm_ds_writer *w, gm_split s, long n, size_t sample_bytes, int ntasks, gen_fn gen,
                             void *ctx, gm_make_progress progress, void *pctx, gm_error *err)
{
    long chunk = (long)(CHUNK_BYTES / sample_bytes);
    if (chunk < 1) chunk = 1;
    if (chunk > n) chunk = n;
    uint8_t *x = malloc((size_t)chunk * sample_bytes);
    int32_t *ys[GM_DS_MAX_TASKS] = {0};
    gm_status st = x ? GM_OK : GM_ENOMEM;
    for (int t = 0; t < ntasks && st == GM_OK; t++)
        if (!(ys[t] = malloc((size_t)chunk * sizeof(int32_t)))) st = GM_ENOMEM;
    if (st != GM_OK) gm_error_set(err, st, "%s split: out of memory for a chunk of %ld samples", gm_split_name(s), chunk);
    for (long first = 0; st == GM_OK && first < n; first += chunk) {
        long count = n - first < chunk ? n - first : chunk;
        gen(ctx, first, count, x, ys);
        st = gm_ds_append(w, s, count, x, (const int32_t *const *)ys, err);
        if (st == GM_OK && progress) progress(pctx, s, first + count, n);
    }
    free(x);
    for (int t = 0; t < ntasks; t++) free(ys[t]);
    return st;
}

gm_status gm_make_check(gm_make_kind k, const gm_make_opts *o, gm_error *err)
{
    if ((unsigned)k >= GM_MAKE_NKINDS) return gm_error_set(err, GM_EINVAL, "unknown maker %d", (int)k);
    const int min_size = k == GM_MAKE_SPRITES ? GM_SPRITE_MIN_SIZE : GM_FASHION_SIDE;
    const int max_size = k == GM_MAKE_SPRITES ? GM_SPRITE_MAX_SIZE : GM_FASHION_MAX_SIZE;
    if (o->size < min_size || o->size > max_size)
        return gm_error_set(err, GM_EINVAL, "canvas size must be in [%d, %d] for %s, got %d", min_size, max_size,
                            kind_names[k], o->size);
    long total = 0;
    for (int s = 0; s < GM_NSPLITS; s++) {
        if (o->n[s] < 0 || o->n[s] > MAX_SAMPLES)
            return gm_error_set(err, GM_EINVAL, "%s split size must be in [0, %ld], got %ld",
                                gm_split_name((gm_split)s), MAX_SAMPLES, o->n[s]);
        total += o->n[s];
    }
    if (total == 0) return gm_error_set(err, GM_EINVAL, "every split is empty: nothing to write");
    if (k == GM_MAKE_FASHION) {
        /* Fashion draws without replacement: a split cannot outgrow its pool. */
        static const char *const pool_names[GM_NSPLITS] = {"the first 50000 Fashion-MNIST training images",
                                                           "the last 10000 Fashion-MNIST training images",
                                                           "the 10000 Fashion-MNIST test images"};
        const long pool_n[GM_NSPLITS] = {GM_FASHION_TRAIN_POOL, GM_FASHION_VAL_POOL, GM_FASHION_TEST_POOL};
        for (int s = 0; s < GM_NSPLITS; s++)
            if (o->n[s] > pool_n[s])
                return gm_error_set(err, GM_EINVAL, "%s split of %ld samples asked for, but its pool has %ld (%s)",
                                    gm_split_name((gm_split)s), o->n[s], pool_n[s], pool_names[s]);
    }
    return GM_OK;
}

static void describe(char *buf, size_t cap, gm_make_kind k, const gm_make_opts *o, const char *note)
{
    snprintf(buf, cap, "gmorph data %s --size %d --train %ld --val %ld --test %ld --seed %llu%s%s", kind_names[k],
             o->size, o->n[GM_SPLIT_TRAIN], o->n[GM_SPLIT_VAL], o->n[GM_SPLIT_TEST], (unsigned long long)o->seed,
             o->group_task ? " --group-task" : "", note);
}

/* Writes every split of a declared dataset with gen_for(split) and closes the file. */
typedef struct {
    gen_fn gen;
    void *ctx[GM_NSPLITS];
} split_gens;

static gm_status write_all(const char *path, const gm_ds_info *info, const split_gens *g, gm_make_progress progress,
                           void *pctx, gm_error *err)
{
    gm_ds_writer *w;
    gm_status st = gm_ds_writer_create(&w, path, info, err);
    if (st != GM_OK) return st;
    size_t sample_bytes = gm_shape_numel(info->shape);
    for (int s = 0; s < GM_NSPLITS && st == GM_OK; s++)
        if (info->n[s] > 0)
            st = write_split(w, (gm_split)s, info->n[s], sample_bytes, info->ntasks, g->gen, g->ctx[s], progress, pctx,
                             err);
    if (st != GM_OK) {
        gm_ds_writer_abort(w);
        return st;
    }
    return gm_ds_writer_close(w, err);
}

static void set_task(gm_ds_info *info, const char *name, int classes)
{
    gm_ds_task *t = &info->tasks[info->ntasks++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->classes = classes;
}

static gm_ds_info base_info(gm_make_kind k, const gm_make_opts *o, int channels, const char *note)
{
    gm_ds_info info;
    memset(&info, 0, sizeof info);
    snprintf(info.name, sizeof info.name, "%s", kind_names[k]);
    describe(info.source, sizeof info.source, k, o, note);
    info.shape = (gm_shape){channels, o->size, o->size};
    info.dtype = GM_DT_U8;
    info.scale = 1.0f / 255.0f;
    for (int s = 0; s < GM_NSPLITS; s++) info.n[s] = o->n[s];
    return info;
}

typedef struct {
    const gm_make_pool *pool;
    int size, group_task;
    gm_rng rng;
} mf_ctx;

static void mf_gen(void *ctx, long first, long count, uint8_t *x, int32_t *const *y)
{
    (void)first; /* the rng carries the position in the split */
    mf_ctx *c = ctx;
    gm_make_multi_fashion_gen(c->pool, c->size, &c->rng, count, x, y[0], y[1], c->group_task ? y[2] : NULL, NULL);
}

gm_status gm_make_multi_fashion(const char *path, const gm_make_opts *o, gm_make_progress progress, void *pctx,
                                gm_error *err)
{
    gm_status st = gm_make_check(GM_MAKE_MULTI_FASHION, o, err);
    if (st != GM_OK) return st;
    gm_make_fashion_src src;
    st = gm_make_fashion_src_load(&src, o->fashion_dir, err);
    if (st == GM_OK) {
        gm_ds_info info = base_info(GM_MAKE_MULTI_FASHION, o, 1, " (Fashion-MNIST pairs, Lin et al. 2019)");
        set_task(&info, "left", src.train.classes);
        set_task(&info, "right", src.train.classes);
        if (o->group_task) set_task(&info, "same_group", 2);
        mf_ctx ctx[GM_NSPLITS];
        split_gens g = {.gen = mf_gen};
        for (int s = 0; s < GM_NSPLITS; s++) {
            ctx[s] = (mf_ctx){.pool = &src.pool[s], .size = o->size, .group_task = o->group_task};
            gm_make_split_rng(o->seed, (gm_split)s, &ctx[s].rng);
            g.ctx[s] = &ctx[s];
        }
        st = write_all(path, &info, &g, progress, pctx, err);
    }
    gm_make_fashion_src_free(&src);
    return st;
}

typedef struct {
    const gm_make_pool *pool;
    int size;
    const int *order;
} fashion_ctx;

static void fashion_gen(void *ctx, long first, long count, uint8_t *x, int32_t *const *y)
{
    fashion_ctx *c = ctx;
    gm_make_fashion_gen(c->pool, c->size, c->order + first, count, x, y[0]);
}

gm_status gm_make_fashion(const char *path, const gm_make_opts *o, gm_make_progress progress, void *pctx,
                          gm_error *err)
{
    gm_status st = gm_make_check(GM_MAKE_FASHION, o, err);
    if (st != GM_OK) return st;
    gm_make_fashion_src src;
    st = gm_make_fashion_src_load(&src, o->fashion_dir, err);
    int *order[GM_NSPLITS] = {0};
    for (int s = 0; s < GM_NSPLITS && st == GM_OK; s++) {
        if (o->n[s] > src.pool[s].n)
            st = gm_error_set(err, GM_EINVAL, "%s split of %ld samples asked for, but its pool has %d",
                              gm_split_name((gm_split)s), o->n[s], src.pool[s].n);
        else if (!(order[s] = malloc((size_t)src.pool[s].n * sizeof(int))))
            st = gm_error_set(err, GM_ENOMEM, "out of memory for the order of %d images", src.pool[s].n);
        else {
            gm_rng rng;
            gm_make_split_rng(o->seed, (gm_split)s, &rng);
            gm_make_permutation(&rng, src.pool[s].n, order[s]);
        }
    }
    if (st == GM_OK) {
        gm_ds_info info = base_info(GM_MAKE_FASHION, o, 1, " (Fashion-MNIST, centred)");
        set_task(&info, "item", src.train.classes);
        fashion_ctx ctx[GM_NSPLITS];
        split_gens g = {.gen = fashion_gen};
        for (int s = 0; s < GM_NSPLITS; s++) {
            ctx[s] = (fashion_ctx){.pool = &src.pool[s], .size = o->size, .order = order[s]};
            g.ctx[s] = &ctx[s];
        }
        st = write_all(path, &info, &g, progress, pctx, err);
    }
    for (int s = 0; s < GM_NSPLITS; s++) free(order[s]);
    gm_make_fashion_src_free(&src);
    return st;
}

typedef struct {
    int size;
    gm_rng rng;
} sprites_ctx;

static void sprites_gen(void *ctx, long first, long count, uint8_t *x, int32_t *const *y)
{
    (void)first;
    sprites_ctx *c = ctx;
    gm_make_sprites_gen(&c->rng, c->size, count, x, y);
}

gm_status gm_make_sprites(const char *path, const gm_make_opts *o, gm_make_progress progress, void *pctx,
                          gm_error *err)
{
    gm_status st = gm_make_check(GM_MAKE_SPRITES, o, err);
    if (st != GM_OK) return st;
    gm_ds_info info = base_info(GM_MAKE_SPRITES, o, 3, " (procedural sprites v1)");
    for (int f = 0; f < GM_SPRITE_NFACTORS; f++) set_task(&info, factor_names[f], factor_classes[f]);
    sprites_ctx ctx[GM_NSPLITS];
    split_gens g = {.gen = sprites_gen};
    for (int s = 0; s < GM_NSPLITS; s++) {
        ctx[s].size = o->size;
        gm_make_split_rng(o->seed, (gm_split)s, &ctx[s].rng);
        g.ctx[s] = &ctx[s];
    }
    return write_all(path, &info, &g, progress, pctx, err);
}

gm_status gm_make_write(gm_make_kind k, const char *path, const gm_make_opts *o, gm_make_progress progress,
                        void *ctx, gm_error *err)
{
    switch (k) {
    case GM_MAKE_MULTI_FASHION: return gm_make_multi_fashion(path, o, progress, ctx, err);
    case GM_MAKE_FASHION: return gm_make_fashion(path, o, progress, ctx, err);
    case GM_MAKE_SPRITES: return gm_make_sprites(path, o, progress, ctx, err);
    default: return gm_error_set(err, GM_EINVAL, "unknown maker %d", (int)k);
    }
}

/* ---- array sources: .npy files and HDF5 datasets -------------------------- */

struct gm_make_array {
    char *source;
    int rank;
    long dims[GM_ARR_MAX_RANK];
    gm_arr_dtype dtype;
    size_t row_bytes;
    /* .npy */
    FILE *f;
    off_t data_off;
    /* HDF5 */
    hid_t file, dset;
};

static const char *const dtype_names[] = {"uint8", "int8", "int16", "int32", "int64", "float32"};
static const size_t dtype_sizes[] = {1, 1, 2, 4, 8, 4};

const char *gm_make_dtype_name(gm_arr_dtype t) { return dtype_names[t]; }
int gm_make_array_rank(const gm_make_array *a) { return a->rank; }
long gm_make_array_dim(const gm_make_array *a, int i) { return a->dims[i]; }
gm_arr_dtype gm_make_array_dtype(const gm_make_array *a) { return a->dtype; }
const char *gm_make_array_source(const gm_make_array *a) { return a->source; }

void gm_make_array_close(gm_make_array *a)
{
    if (!a) return;
    if (a->f) fclose(a->f);
    if (a->dset >= 0) H5Dclose(a->dset);
    if (a->file >= 0) gm_h5_close_file(a->file);
    free(a->source);
    free(a);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* The shape as "(3, 28, 28)" for messages. */
static const char *shape_text(const gm_make_array *a, char *buf, size_t cap)
{
    size_t at = (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < a->rank && at < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%ld", i ? ", " : "", a->dims[i]);
    if (at < cap) snprintf(buf + at, cap - at, a->rank == 1 ? ",)" : ")");
    return buf;
}

/* Sets row_bytes from dims; rank 0 and absurd sizes are errors. */
static gm_status finish_shape(gm_make_array *a, const char *file, gm_error *err)
{
    if (a->rank < 1) return gm_error_set(err, GM_EFORMAT, "%s: holds a scalar, expected an array of samples", file);
    size_t row = dtype_sizes[a->dtype];
    for (int i = 1; i < a->rank; i++) {
        if (a->dims[i] < 0 || (a->dims[i] > 0 && row > SIZE_MAX / 4 / (size_t)a->dims[i]))
            return gm_error_set(err, GM_EFORMAT, "%s: dimension %d of %ld is too large", file, i, a->dims[i]);
        row *= (size_t)a->dims[i];
    }
    if (a->dims[0] < 0 || (row > 0 && (size_t)a->dims[0] > SIZE_MAX / 4 / row))
        return gm_error_set(err, GM_EFORMAT, "%s: %ld rows is too large", file, a->dims[0]);
    a->row_bytes = row;
    return GM_OK;
}

/* Skips spaces; returns the first non-space. */
static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

/* The value after 'key': in a .npy header dict, or NULL. */
static const char *npy_value(const char *hdr, const char *key)
{
    char q1[64], q2[64];
    snprintf(q1, sizeof q1, "'%s'", key);
    snprintf(q2, sizeof q2, "\"%s\"", key);
    const char *p = strstr(hdr, q1);
    if (!p) p = strstr(hdr, q2);
    if (!p) return NULL;
    p = skip_ws(p + strlen(q1));
    if (*p != ':') return NULL;
    return skip_ws(p + 1);
}

static gm_status npy_dtype(gm_make_array *a, const char *descr, gm_error *err)
{
    const char *path = a->source;
    char order = descr[0];
    const char *code = descr;
    if (order == '<' || order == '>' || order == '|' || order == '=') code++;
    else order = '|';
    static const struct {
        const char *code;
        gm_arr_dtype t;
    } known[] = {{"u1", GM_ARR_U8}, {"i1", GM_ARR_I8}, {"i2", GM_ARR_I16},
                 {"i4", GM_ARR_I32}, {"i8", GM_ARR_I64}, {"f4", GM_ARR_F32}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(code, known[i].code)) {
            if (order == '>' && dtype_sizes[known[i].t] > 1)
                return gm_error_set(err, GM_EFORMAT,
                                    "%s: big-endian data ('%s') is not supported; save it little-endian "
                                    "(arr.astype(arr.dtype.newbyteorder('<')))",
                                    path, descr);
            a->dtype = known[i].t;
            return GM_OK;
        }
    return gm_error_set(err, GM_EFORMAT,
                        "%s: unsupported dtype '%s' (supported: uint8, int8, int16, int32, int64, float32)", path,
                        descr);
}

static gm_status npy_open(gm_make_array *a, gm_error *err)
{
    const char *path = a->source;
    a->f = fopen(path, "rb");
    if (!a->f) return gm_error_set(err, GM_EIO, "%s: cannot open: %s", path, strerror(errno));
    unsigned char pre[12];
    size_t got = fread(pre, 1, 10, a->f);
    if (got < 10 || memcmp(pre, "\x93NUMPY", 6) != 0)
        return gm_error_set(err, GM_EFORMAT, "%s: not a .npy file (no \\x93NUMPY magic)", path);
    int major = pre[6];
    size_t hlen, hstart;
    if (major == 1) {
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (fread(pre + 10, 1, 2, a->f) != 2) return gm_error_set(err, GM_EFORMAT, "%s: truncated .npy header", path);
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
        hstart = 12;
    } else
        return gm_error_set(err, GM_EFORMAT, "%s: .npy format version %d.%d is not supported (1.0, 2.0, 3.0 are)", path,
                            major, pre[7]);
    if (hlen > (1u << 20)) return gm_error_set(err, GM_EFORMAT, "%s: .npy header of %zu bytes is implausible", path, hlen);
    char *hdr = malloc(hlen + 1);
    if (!hdr) return gm_error_set(err, GM_ENOMEM, "%s: out of memory", path);
    gm_status st = GM_OK;
    if (fread(hdr, 1, hlen, a->f) != hlen) st = gm_error_set(err, GM_EFORMAT, "%s: truncated .npy header", path);
    hdr[st == GM_OK ? hlen : 0] = '\0';
    const char *descr = st == GM_OK ? npy_value(hdr, "descr") : NULL;
    const char *fortran = st == GM_OK ? npy_value(hdr, "fortran_order") : NULL;
    const char *shape = st == GM_OK ? npy_value(hdr, "shape") : NULL;
    if (st == GM_OK && (!descr || !fortran || !shape))
        st = gm_error_set(err, GM_EFORMAT, "%s: .npy header lacks descr, fortran_order or shape", path);
    if (st == GM_OK) {
        /* descr is a quoted string; a list means a structured dtype. */
        char q = *descr, buf[32];
        const char *end = (q == '\'' || q == '"') ? strchr(descr + 1, q) : NULL;
        if (!end || (size_t)(end - descr - 1) >= sizeof buf)
            st = gm_error_set(err, GM_EFORMAT, "%s: unsupported dtype (structured or unreadable descr)", path);
        else {
            memcpy(buf, descr + 1, (size_t)(end - descr - 1));
            buf[end - descr - 1] = '\0';
            st = npy_dtype(a, buf, err);
        }
    }
    if (st == GM_OK && *shape != '(') st = gm_error_set(err, GM_EFORMAT, "%s: unreadable shape in .npy header", path);
    if (st == GM_OK) {
        const char *p = skip_ws(shape + 1);
        while (st == GM_OK && *p != ')') {
            char *e;
            errno = 0;
            long v = strtol(p, &e, 10);
            if (e == p || errno || v < 0 || a->rank == GM_ARR_MAX_RANK) {
                st = gm_error_set(err, GM_EFORMAT, "%s: unreadable or unsupported shape in .npy header", path);
                break;
            }
            a->dims[a->rank++] = v;
            p = skip_ws(e);
            if (*p == 'L') p = skip_ws(p + 1); /* Python 2 longs */
            if (*p == ',') p = skip_ws(p + 1);
            else if (*p != ')') st = gm_error_set(err, GM_EFORMAT, "%s: unreadable shape in .npy header", path);
        }
    }
    if (st == GM_OK) st = finish_shape(a, path, err);
    if (st == GM_OK && !strncmp(fortran, "True", 4) && a->rank > 1)
        st = gm_error_set(err, GM_EFORMAT,
                          "%s: Fortran-order arrays are not supported; save np.ascontiguousarray(arr) instead", path);
    else if (st == GM_OK && strncmp(fortran, "False", 5) && strncmp(fortran, "True", 4))
        st = gm_error_set(err, GM_EFORMAT, "%s: unreadable fortran_order in .npy header", path);
    free(hdr);
    if (st != GM_OK) return st;
    a->data_off = (off_t)(hstart + hlen);
    /* The data must all be there: a truncated file is caught here, not mid-conversion. */
    if (fseeko(a->f, 0, SEEK_END) != 0)
        return gm_error_set(err, GM_EIO, "%s: cannot seek: %s", path, strerror(errno));
    off_t size = ftello(a->f);
    unsigned long long need = (unsigned long long)a->dims[0] * a->row_bytes;
    if (size < a->data_off || (unsigned long long)(size - a->data_off) < need) {
        char sh[160];
        return gm_error_set(err, GM_EFORMAT, "%s: truncated: shape %s %s needs %llu bytes of data, the file has %lld",
                            path, shape_text(a, sh, sizeof sh), dtype_names[a->dtype], need,
                            (long long)(size < a->data_off ? 0 : size - a->data_off));
    }
    return GM_OK;
}

static gm_status h5_open_source(gm_make_array *a, gm_error *err)
{
    const char *colon = strstr(a->source, ":/");
    size_t flen = (size_t)(colon - a->source);
    char file[4096], obj[1024];
    if (flen >= sizeof file || strlen(colon + 1) >= sizeof obj)
        return gm_error_set(err, GM_EINVAL, "%s: source name too long", a->source);
    memcpy(file, a->source, flen);
    file[flen] = '\0';
    snprintf(obj, sizeof obj, "%s", colon + 1);
    gm_status st = gm_h5_open(&a->file, file, 0, err);
    if (st != GM_OK) return st;
    if (!gm_h5_exists(a->file, obj))
        return gm_error_set(err, GM_EFORMAT, "%s: has no dataset \"%s\"", file, obj);
    a->dset = H5Dopen2(a->file, obj, H5P_DEFAULT);
    if (a->dset < 0) return gm_error_set(err, GM_EFORMAT, "%s: \"%s\" is not a dataset", file, obj);
    hid_t t = H5Dget_type(a->dset);
    H5T_class_t cls = H5Tget_class(t);
    size_t size = H5Tget_size(t);
    H5T_sign_t sign = H5Tget_sign(t);
    H5Tclose(t);
    int ok = 1;
    char what[64];
    if (cls == H5T_INTEGER) {
        snprintf(what, sizeof what, "%sint%zu", sign == H5T_SGN_NONE ? "u" : "", size * 8);
        if (sign == H5T_SGN_NONE && size == 1) a->dtype = GM_ARR_U8;
        else if (sign == H5T_SGN_NONE) ok = 0;
        else if (size == 1) a->dtype = GM_ARR_I8;
        else if (size == 2) a->dtype = GM_ARR_I16;
        else if (size == 4) a->dtype = GM_ARR_I32;
        else if (size == 8) a->dtype = GM_ARR_I64;
        else ok = 0;
    } else if (cls == H5T_FLOAT) {
        snprintf(what, sizeof what, "float%zu", size * 8);
        a->dtype = GM_ARR_F32;
        ok = size == 4;
    } else {
        snprintf(what, sizeof what, "a non-numeric type");
        ok = 0;
    }
    if (!ok)
        return gm_error_set(err, GM_EFORMAT,
                            "%s: dataset \"%s\" holds %s (supported: uint8, int8, int16, int32, int64, float32)", file,
                            obj, what);
    int rank;
    hsize_t dims[GM_H5_MAX_RANK];
    st = gm_h5_shape(a->file, obj, &rank, dims, err);
    if (st != GM_OK) return st;
    if (rank > GM_ARR_MAX_RANK) return gm_error_set(err, GM_EFORMAT, "%s: dataset \"%s\" has rank %d", file, obj, rank);
    a->rank = rank;
    for (int i = 0; i < rank; i++) a->dims[i] = dims[i] > (hsize_t)LONG_MAX ? -1 : (long)dims[i];
    return finish_shape(a, a->source, err);
}

gm_status gm_make_array_open(gm_make_array **out, const char *source, gm_error *err)
{
    *out = NULL;
    gm_make_array *a = calloc(1, sizeof *a);
    if (!a || !(a->source = strdup(source))) {
        free(a);
        return gm_error_set(err, GM_ENOMEM, "%s: out of memory", source);
    }
    a->file = a->dset = -1;
    const char *colon = strstr(source, ":/");
    gm_status st;
    if (ends_with(source, ".npy")) st = npy_open(a, err);
    else if (colon && colon > source) st = h5_open_source(a, err);
    else
        st = gm_error_set(err, GM_EINVAL, "%s: a source is a .npy file or FILE.h5:/path/to/dataset", source);
    if (st != GM_OK) {
        gm_make_array_close(a);
        return st;
    }
    *out = a;
    return GM_OK;
}

static hid_t native_type(gm_arr_dtype t)
{
    switch (t) {
    case GM_ARR_U8: return H5T_NATIVE_UINT8;
    case GM_ARR_I8: return H5T_NATIVE_INT8;
    case GM_ARR_I16: return H5T_NATIVE_INT16;
    case GM_ARR_I32: return H5T_NATIVE_INT32;
    case GM_ARR_I64: return H5T_NATIVE_INT64;
    default: return H5T_NATIVE_FLOAT;
    }
}

gm_status gm_make_array_read(gm_make_array *a, long first, long count, void *dst, gm_error *err)
{
    if (first < 0 || count < 0 || first + count > a->dims[0])
        return gm_error_set(err, GM_EINVAL, "%s: rows %ld..%ld are outside its %ld rows", a->source, first,
                            first + count, a->dims[0]);
    if (count == 0 || a->row_bytes == 0) return GM_OK;
    if (a->f) {
        /* .npy data is little-endian and we only build for little-endian hosts. */
        if (fseeko(a->f, a->data_off + (off_t)first * (off_t)a->row_bytes, SEEK_SET) != 0 ||
            fread(dst, a->row_bytes, (size_t)count, a->f) != (size_t)count)
            return gm_error_set(err, GM_EIO, "%s: reading rows %ld..%ld failed", a->source, first, first + count);
        return GM_OK;
    }
    hid_t fs = H5Dget_space(a->dset);
    hsize_t start[GM_ARR_MAX_RANK] = {0}, cnt[GM_ARR_MAX_RANK];
    for (int i = 0; i < a->rank; i++) cnt[i] = (hsize_t)a->dims[i];
    start[0] = (hsize_t)first;
    cnt[0] = (hsize_t)count;
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL);
    hid_t ms = H5Screate_simple(a->rank, cnt, NULL);
    herr_t rc = H5Dread(a->dset, native_type(a->dtype), ms, fs, H5P_DEFAULT, dst);
    H5Sclose(ms);
    H5Sclose(fs);
    if (rc < 0)
        return gm_error_set(err, GM_EFORMAT, "%s: reading rows %ld..%ld failed (file damaged?)", a->source, first,
                            first + count);
    return GM_OK;
}

/* ---- import -------------------------------------------------------------- */

static int64_t label_at(gm_arr_dtype t, const void *buf, long i)
{
    switch (t) {
    case GM_ARR_U8: return ((const uint8_t *)buf)[i];
    case GM_ARR_I8: return ((const int8_t *)buf)[i];
    case GM_ARR_I16: return ((const int16_t *)buf)[i];
    case GM_ARR_I32: return ((const int32_t *)buf)[i];
    default: return ((const int64_t *)buf)[i];
    }
}

/* Reads a label source whole (labels are small) as int32, checking each. */
static gm_status load_labels(const char *source, long n, const char *xsource, int32_t **out, int32_t *max,
                             gm_error *err)
{
    gm_make_array *a;
    gm_status st = gm_make_array_open(&a, source, err);
    if (st != GM_OK) return st;
    char sh[160];
    if (a->dtype == GM_ARR_F32)
        st = gm_error_set(err, GM_EFORMAT, "%s: labels must be integers (int8/uint8/int16/int32/int64), got float32",
                          source);
    else if (a->rank != 1)
        st = gm_error_set(err, GM_EFORMAT, "%s: labels must have shape (N,), got %s", source,
                          shape_text(a, sh, sizeof sh));
    else if (a->dims[0] != n)
        st = gm_error_set(err, GM_EFORMAT, "%s: %ld labels, but %s has %ld samples", source, a->dims[0], xsource, n);
    int32_t *y = st == GM_OK ? malloc((size_t)(n > 0 ? n : 1) * sizeof *y) : NULL;
    void *buf = st == GM_OK ? malloc((size_t)(n > 0 ? n : 1) * a->row_bytes) : NULL;
    if (st == GM_OK && (!y || !buf)) st = gm_error_set(err, GM_ENOMEM, "%s: out of memory for %ld labels", source, n);
    if (st == GM_OK) st = gm_make_array_read(a, 0, n, buf, err);
    for (long i = 0; st == GM_OK && i < n; i++) {
        int64_t v = label_at(a->dtype, buf, i);
        if (v < 0 || v > INT32_MAX - 1)
            st = gm_error_set(err, GM_EFORMAT, "%s: label %lld at row %ld is out of range (labels are 0, 1, ...)",
                              source, (long long)v, i);
        else {
            y[i] = (int32_t)v;
            if (y[i] > *max) *max = y[i];
        }
    }
    free(buf);
    gm_make_array_close(a);
    if (st != GM_OK) {
        free(y);
        return st;
    }
    *out = y;
    return GM_OK;
}

/* Per-sample geometry of an image source: (C, H, W) from its rank and layout. */
static gm_status image_shape(const gm_make_array *a, int nhwc, gm_shape *s, gm_error *err)
{
    char sh[160];
    if (a->dtype != GM_ARR_U8 && a->dtype != GM_ARR_F32)
        return gm_error_set(err, GM_EFORMAT, "%s: images must be uint8 or float32, got %s", a->source,
                            dtype_names[a->dtype]);
    long c, h, w;
    if (a->rank == 3) {
        c = 1;
        h = a->dims[1];
        w = a->dims[2];
    } else if (a->rank == 4) {
        c = nhwc ? a->dims[3] : a->dims[1];
        h = nhwc ? a->dims[1] : a->dims[2];
        w = nhwc ? a->dims[2] : a->dims[3];
    } else
        return gm_error_set(err, GM_EFORMAT, "%s: images must have shape %s or (N, H, W), got %s", a->source,
                            nhwc ? "(N, H, W, C)" : "(N, C, H, W)", shape_text(a, sh, sizeof sh));
    if (c < 1 || c > GM_DS_MAX_CHANNELS || h < 1 || w < 1 || h > 65536 || w > 65536)
        return gm_error_set(err, GM_EFORMAT, "%s: %ld channels of %ldx%ld (as %s) is not an image shape (1 to %d channels)",
                            a->source, c, h, w, a->rank == 3 ? "(N, H, W)" : nhwc ? "(N, H, W, C)" : "(N, C, H, W)",
                            GM_DS_MAX_CHANNELS);
    *s = (gm_shape){(int)c, (int)h, (int)w};
    return GM_OK;
}

/* (rows, H, W, C) -> (rows, C, H, W), elements of esize bytes. */
static void to_nchw(const uint8_t *src, uint8_t *dst, long rows, gm_shape s, size_t esize)
{
    const size_t hw = (size_t)s.h * (size_t)s.w, numel = hw * (size_t)s.c;
    for (long r = 0; r < rows; r++)
        for (size_t p = 0; p < hw; p++)
            for (int c = 0; c < s.c; c++)
                memcpy(dst + ((size_t)r * numel + (size_t)c * hw + p) * esize,
                       src + ((size_t)r * numel + p * (size_t)s.c + (size_t)c) * esize, esize);
}

/* Copies the images of one split into the writer, a chunk at a time. */
static gm_status import_split(gm_ds_writer *w, gm_split s, gm_make_array *x, const gm_make_import_opts *o,
                              int32_t *const *labels, gm_make_progress progress, void *pctx, gm_error *err)
{
    const long n = x->dims[0];
    const size_t row = x->row_bytes, esize = dtype_sizes[x->dtype];
    long chunk = (long)((size_t)(o->chunk_bytes > 0 ? o->chunk_bytes : IMPORT_CHUNK_BYTES) / row);
    if (chunk < 1) chunk = 1;
    if (chunk > n) chunk = n;
    gm_shape shape;
    gm_status st = image_shape(x, o->nhwc, &shape, err);
    if (st != GM_OK) return st;
    int transpose = o->nhwc && x->rank == 4 && shape.c > 1;
    uint8_t *buf = malloc((size_t)chunk * row), *tbuf = transpose ? malloc((size_t)chunk * row) : NULL;
    if (!buf || (transpose && !tbuf)) st = gm_error_set(err, GM_ENOMEM, "%s: out of memory for a chunk", x->source);
    for (long first = 0; st == GM_OK && first < n; first += chunk) {
        long count = n - first < chunk ? n - first : chunk;
        st = gm_make_array_read(x, first, count, buf, err);
        if (st != GM_OK) break;
        if (x->dtype == GM_ARR_F32) {
            const float *v = (const float *)buf;
            size_t m = (size_t)count * (row / sizeof(float));
            for (size_t i = 0; i < m; i++)
                if (!isfinite(v[i])) {
                    st = gm_error_set(err, GM_EFORMAT, "%s: sample %ld holds a non-finite value (%g)", x->source,
                                      first + (long)(i / (row / sizeof(float))), (double)v[i]);
                    break;
                }
            if (st != GM_OK) break;
        }
        if (transpose) to_nchw(buf, tbuf, count, shape, esize);
        const int32_t *ys[GM_DS_MAX_TASKS];
        for (int t = 0; t < o->ntasks; t++) ys[t] = labels[t] + first;
        st = gm_ds_append(w, s, count, transpose ? tbuf : buf, ys, err);
        if (st == GM_OK && progress) progress(pctx, s, first + count, n);
    }
    free(buf);
    free(tbuf);
    return st;
}

/* "gmorph data import --name N --layout L --split train=SRC ..." cut to fit cap. */
static void import_source(char *buf, size_t cap, const gm_make_import_opts *o)
{
    char tmp[4096];
    size_t at = (size_t)snprintf(tmp, sizeof tmp, "gmorph data import --name %s --layout %s", o->name,
                                 o->nhwc ? "nhwc" : "nchw");
    for (int s = 0; s < GM_NSPLITS; s++)
        if (o->x[s] && at < sizeof tmp)
            at += (size_t)snprintf(tmp + at, sizeof tmp - at, " --split %s=%s", gm_split_name((gm_split)s), o->x[s]);
    for (int t = 0; t < o->ntasks; t++)
        for (int s = 0; s < GM_NSPLITS; s++)
            if (o->tasks[t].y[s] && at < sizeof tmp)
                at += (size_t)snprintf(tmp + at, sizeof tmp - at, " --label %s:%s=%s", gm_split_name((gm_split)s),
                                       o->tasks[t].name, o->tasks[t].y[s]);
    if (strlen(tmp) >= cap && cap > 4) snprintf(tmp + cap - 4, sizeof tmp - (cap - 4), "...");
    snprintf(buf, cap, "%s", tmp);
}

static gm_status check_import_opts(const gm_make_import_opts *o, gm_error *err)
{
    if (!o->name || !o->name[0] || strlen(o->name) >= GM_DS_NAME_MAX)
        return gm_error_set(err, GM_EINVAL, "the dataset name must have 1 to %d characters", GM_DS_NAME_MAX - 1);
    int any = 0;
    for (int s = 0; s < GM_NSPLITS; s++) any |= o->x[s] != NULL;
    if (!any) return gm_error_set(err, GM_EINVAL, "no split given (train, val or test images)");
    if (o->ntasks < 1 || o->ntasks > GM_DS_MAX_TASKS)
        return gm_error_set(err, GM_EINVAL, "1 to %d tasks needed, got %d", GM_DS_MAX_TASKS, o->ntasks);
    for (int t = 0; t < o->ntasks; t++) {
        const gm_make_import_task *k = &o->tasks[t];
        if (!k->name[0] || strchr(k->name, ',') || strchr(k->name, '/'))
            return gm_error_set(err, GM_EINVAL, "task name \"%s\" must be non-empty, without ',' or '/'",
                                k->name);
        for (int u = 0; u < t; u++)
            if (!strcmp(o->tasks[u].name, k->name))
                return gm_error_set(err, GM_EINVAL, "task \"%s\" given twice", k->name);
        if (k->classes < 0 || k->classes == 1)
            return gm_error_set(err, GM_EINVAL, "task \"%s\" needs at least 2 classes, got %d", k->name,
                                k->classes);
        for (int s = 0; s < GM_NSPLITS; s++) {
            if (o->x[s] && !k->y[s])
                return gm_error_set(err, GM_EINVAL, "task \"%s\" has no labels for the %s split", k->name,
                                    gm_split_name((gm_split)s));
            if (!o->x[s] && k->y[s])
                return gm_error_set(err, GM_EINVAL, "task \"%s\" has labels for the %s split, which has no images",
                                    k->name, gm_split_name((gm_split)s));
        }
    }
    return GM_OK;
}

gm_status gm_make_import(const char *path, const gm_make_import_opts *o, gm_make_progress progress, void *pctx,
                         gm_error *err)
{
    gm_status st = check_import_opts(o, err);
    if (st != GM_OK) return st;
    gm_make_array *x[GM_NSPLITS] = {0};
    int32_t *labels[GM_NSPLITS][GM_DS_MAX_TASKS] = {{0}};
    gm_ds_info info;
    memset(&info, 0, sizeof info);
    snprintf(info.name, sizeof info.name, "%s", o->name);
    import_source(info.source, sizeof info.source, o);
    int first_split = -1;
    /* Images: open each split's source and check they agree on shape and dtype. */
    for (int s = 0; s < GM_NSPLITS && st == GM_OK; s++) {
        if (!o->x[s]) continue;
        st = gm_make_array_open(&x[s], o->x[s], err);
        gm_shape shape;
        if (st == GM_OK) st = image_shape(x[s], o->nhwc, &shape, err);
        if (st != GM_OK) break;
        gm_dtype dt = x[s]->dtype == GM_ARR_U8 ? GM_DT_U8 : GM_DT_F32;
        if (first_split < 0) {
            first_split = s;
            info.shape = shape;
            info.dtype = dt;
            info.scale = dt == GM_DT_U8 ? 1.0f / 255.0f : 1.0f;
        } else if (shape.c != info.shape.c || shape.h != info.shape.h || shape.w != info.shape.w || dt != info.dtype)
            st = gm_error_set(err, GM_EFORMAT, "%s: samples are %dx%dx%d %s, but %s has %dx%dx%d %s", o->x[s], shape.c,
                              shape.h, shape.w, dtype_names[x[s]->dtype], o->x[first_split], info.shape.c,
                              info.shape.h, info.shape.w, dtype_names[x[first_split]->dtype]);
        info.n[s] = x[s]->dims[0];
        if (st == GM_OK && info.n[s] == 0)
            st = gm_error_set(err, GM_EFORMAT, "%s: holds no samples", o->x[s]);
    }
    /* Labels: each task's classes come from all its splits. */
    for (int t = 0; t < o->ntasks && st == GM_OK; t++) {
        int32_t max = 0;
        const char *at_max = NULL;
        for (int s = 0; s < GM_NSPLITS && st == GM_OK; s++) {
            if (!x[s]) continue;
            int32_t before = max;
            st = load_labels(o->tasks[t].y[s], x[s]->dims[0], o->x[s], &labels[s][t], &max, err);
            if (max > before || !at_max) at_max = o->tasks[t].y[s];
        }
        if (st != GM_OK) break;
        int classes = o->tasks[t].classes;
        if (classes > 0 && max >= classes)
            st = gm_error_set(err, GM_EFORMAT, "%s: label %d of task \"%s\" is not below its %d classes", at_max, max,
                              o->tasks[t].name, classes);
        if (classes == 0) classes = max + 1 < 2 ? 2 : max + 1;
        set_task(&info, o->tasks[t].name, classes);
    }
    gm_ds_writer *w = NULL;
    if (st == GM_OK) st = gm_ds_writer_create(&w, path, &info, err);
    for (int s = 0; s < GM_NSPLITS && st == GM_OK; s++)
        if (x[s]) st = import_split(w, (gm_split)s, x[s], o, labels[s], progress, pctx, err);
    if (w) {
        if (st == GM_OK) st = gm_ds_writer_close(w, err);
        else gm_ds_writer_abort(w);
    }
    for (int s = 0; s < GM_NSPLITS; s++) {
        gm_make_array_close(x[s]);
        for (int t = 0; t < GM_DS_MAX_TASKS; t++) free(labels[s][t]);
    }
    return st;
}

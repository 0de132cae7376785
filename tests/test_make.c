/*
 * The dataset makers: same options and seed give byte-identical files and another
 * seed another file; labels are balanced; sprite factors are independent (by a
 * chi-square test whose threshold is derived here, and which does catch a
 * dependent pair); Multi-Fashion puts its items where the paper does; sprites stay
 * distinguishable at 16x16; and import converts .npy and HDF5 arrays faithfully,
 * refusing what it cannot read with a message naming the file.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gm_make.h"
#include "test_util.h"

/* ---- helpers ----------------------------------------------------------------- */

typedef struct {
    char dir[256];
} tmpdir;

static int setup_tmp(void **state)
{
    tmpdir *t = calloc(1, sizeof *t);
    if (!t) return -1;
    snprintf(t->dir, sizeof t->dir, "/tmp/gm_test_make.XXXXXX");
    if (!mkdtemp(t->dir)) {
        free(t);
        return -1;
    }
    *state = t;
    return 0;
}

/* The directory is flat: remove its files, then it. */
static int teardown_tmp(void **state)
{
    tmpdir *t = *state;
    DIR *d = opendir(t->dir);
    struct dirent *e;
    char p[600];
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", t->dir, e->d_name);
            unlink(p);
        }
    if (d) closedir(d);
    rmdir(t->dir);
    free(t);
    return 0;
}

static const char *tpath(void **state, const char *name)
{
    static char buf[4][600]; /* a few paths live at once in one call */
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, 600, "%s/%s", ((tmpdir *)*state)->dir, name);
    return p;
}

static int have_fashion(void)
{
    char p[512];
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", GM_FASHION_MNIST_DIR);
    return access(p, R_OK) == 0;
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n ? *n : 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

static int same_bytes(const char *a, const char *b)
{
    size_t na, nb;
    unsigned char *x = slurp(a, &na), *y = slurp(b, &nb);
    int same = na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

static void make_ok(gm_make_kind k, const char *path, const gm_make_opts *o)
{
    gm_error err;
    if (gm_make_write(k, path, o, NULL, NULL, &err) != GM_OK) fail_msg("%s: %s", path, err.msg);
}

static gm_dataset *open_ok(const char *path)
{
    gm_dataset *ds;
    gm_error err;
    if (gm_ds_open(&ds, path, &err) != GM_OK) fail_msg("%s", err.msg);
    return ds;
}

static void *read_raw(gm_dataset *ds, gm_split s)
{
    const gm_ds_info *info = gm_ds_get_info(ds);
    size_t bytes = (size_t)info->n[s] * gm_shape_numel(info->shape) * (info->dtype == GM_DT_U8 ? 1 : 4);
    void *x = malloc(bytes ? bytes : 1);
    gm_error err;
    assert_non_null(x);
    if (gm_ds_read_raw(ds, s, 0, info->n[s], x, &err) != GM_OK) fail_msg("%s", err.msg);
    return x;
}

/* ---- reproducibility ----------------------------------------------------------- */

static void check_reproducible(void **state, gm_make_kind k, gm_make_opts o)
{
    const char *a = tpath(state, "a.h5"), *b = tpath(state, "b.h5"), *c = tpath(state, "c.h5");
    make_ok(k, a, &o);
    make_ok(k, b, &o);
    assert_true(same_bytes(a, b));
    o.seed += 1;
    make_ok(k, c, &o);
    assert_false(same_bytes(a, c));
    /* Each split has its own rng: a different train size leaves val as it was. */
    gm_make_opts o2 = o;
    o2.n[GM_SPLIT_TRAIN] /= 2;
    make_ok(k, b, &o2);
    gm_dataset *dc = open_ok(c), *db = open_ok(b);
    const gm_ds_info *ic = gm_ds_get_info(dc);
    void *vc = read_raw(dc, GM_SPLIT_VAL), *vb = read_raw(db, GM_SPLIT_VAL);
    assert_memory_equal(vc, vb, (size_t)ic->n[GM_SPLIT_VAL] * gm_shape_numel(ic->shape));
    /* ... and the source attribute records the maker, its options and the seed. */
    assert_non_null(strstr(ic->source, gm_make_kind_name(k)));
    char want[64];
    snprintf(want, sizeof want, "--seed %llu", (unsigned long long)o.seed);
    assert_non_null(strstr(ic->source, want));
    snprintf(want, sizeof want, "--size %d", o.size);
    assert_non_null(strstr(ic->source, want));
    free(vc);
    free(vb);
    gm_ds_close(dc);
    gm_ds_close(db);
}

static void test_sprites_reproducible(void **state)
{
    check_reproducible(state, GM_MAKE_SPRITES, (gm_make_opts){.size = 16, .n = {300, 60, 40}, .seed = 7});
}

static void test_multi_fashion_reproducible(void **state)
{
    if (!have_fashion()) skip();
    check_reproducible(state, GM_MAKE_MULTI_FASHION, (gm_make_opts){.size = 36, .n = {200, 50, 50}, .seed = 3});
}

static void test_fashion_reproducible(void **state)
{
    if (!have_fashion()) skip();
    check_reproducible(state, GM_MAKE_FASHION, (gm_make_opts){.size = 30, .n = {200, 50, 50}, .seed = 3});
}

/* ---- Fashion-MNIST makers --------------------------------------------------------- */

static void test_multi_fashion_balance(void **state)
{
    if (!have_fashion()) skip();
    const char *p = tpath(state, "mf.h5");
    make_ok(GM_MAKE_MULTI_FASHION, p, &(gm_make_opts){.size = 36, .n = {6000, 0, 10}, .seed = 11});
    gm_dataset *ds = open_ok(p);
    const gm_ds_info *info = gm_ds_get_info(ds);
    assert_int_equal(info->ntasks, 2);
    assert_string_equal(info->tasks[0].name, "left");
    assert_string_equal(info->tasks[1].name, "right");
    assert_int_equal(info->n[GM_SPLIT_VAL], 0);
    for (int t = 0; t < 2; t++) {
        assert_int_equal(info->tasks[t].classes, 10);
        long count[10] = {0};
        const int32_t *y = gm_ds_labels(ds, GM_SPLIT_TRAIN, t);
        for (long i = 0; i < 6000; i++) count[y[i]]++;
        for (int k = 0; k < 10; k++) {
            double share = (double)count[k] / 6000.0;
            if (share < 0.07 || share > 0.13) fail_msg("task %d class %d has %.1f%% of the samples", t, k, 100 * share);
        }
    }
    gm_ds_close(ds);
}

/* The expected pixel at (r, c): the brighter of the two items where both reach. */
static int expected_pixel(const uint8_t *l, const uint8_t *rt, int shift, int r, int c)
{
    int v = 0, S = GM_FASHION_SIDE;
    if (r < S && c < S) v = l[r * S + c];
    if (r >= shift && c >= shift && rt[(r - shift) * S + (c - shift)] > v) v = rt[(r - shift) * S + (c - shift)];
    return v;
}

static void test_multi_fashion_geometry(void **state)
{
    if (!have_fashion()) skip();
    gm_make_fashion_src src;
    gm_error err;
    if (gm_make_fashion_src_load(&src, NULL, &err) != GM_OK) fail_msg("%s", err.msg);
    /* The pools: train and val are disjoint halves of the training file, test is t10k. */
    const size_t px = (size_t)GM_FASHION_SIDE * GM_FASHION_SIDE;
    assert_ptr_equal(src.pool[GM_SPLIT_TRAIN].x, src.train.x);
    assert_int_equal(src.pool[GM_SPLIT_TRAIN].n, 50000);
    assert_ptr_equal(src.pool[GM_SPLIT_VAL].x, src.train.x + 50000 * px);
    assert_int_equal(src.pool[GM_SPLIT_VAL].n, 10000);
    assert_ptr_equal(src.pool[GM_SPLIT_TEST].x, src.test.x);

    const int sizes[] = {36, 28, 45};
    for (int si = 0; si < 3; si++) {
        int size = sizes[si], shift = size - GM_FASHION_SIDE;
        long n = 64;
        uint8_t *x = malloc((size_t)n * (size_t)size * (size_t)size);
        int32_t left[64], right[64];
        int picks[128];
        gm_rng rng;
        gm_make_split_rng(5, GM_SPLIT_TRAIN, &rng);
        gm_make_multi_fashion_gen(&src.pool[GM_SPLIT_TRAIN], size, &rng, n, x, left, right, NULL, picks);
        int distinct = 0;
        for (long i = 0; i < n; i++) {
            const uint8_t *l = src.train.x + (size_t)picks[2 * i] * px, *r = src.train.x + (size_t)picks[2 * i + 1] * px;
            assert_int_equal(left[i], src.train.y[picks[2 * i]]);
            assert_int_equal(right[i], src.train.y[picks[2 * i + 1]]);
            distinct += picks[2 * i] != picks[2 * i + 1];
            for (int rr = 0; rr < size; rr++)
                for (int c = 0; c < size; c++) {
                    int got = x[(size_t)i * (size_t)size * (size_t)size + (size_t)rr * (size_t)size + (size_t)c];
                    if (got != expected_pixel(l, r, shift, rr, c))
                        fail_msg("size %d sample %ld pixel (%d,%d): %d, expected %d", size, i, rr, c, got,
                                 expected_pixel(l, r, shift, rr, c));
                }
            /* Where only one item reaches, it is that item exactly (top-left of the left one). */
            if (shift > 0) assert_int_equal(x[(size_t)i * (size_t)size * (size_t)size], l[0]);
        }
        assert_true(distinct > n / 2);
        free(x);
    }

    /* The file holds what the generator makes with the split's rng, val from the val pool. */
    const char *p = tpath(state, "geo.h5");
    make_ok(GM_MAKE_MULTI_FASHION, p, &(gm_make_opts){.size = 36, .n = {20, 20, 20}, .seed = 9});
    gm_dataset *ds = open_ok(p);
    for (int s = 0; s < GM_NSPLITS; s++) {
        uint8_t *want = malloc(20 * 36 * 36);
        int32_t l[20], r[20];
        gm_rng rng;
        gm_make_split_rng(9, (gm_split)s, &rng);
        gm_make_multi_fashion_gen(&src.pool[s], 36, &rng, 20, want, l, r, NULL, NULL);
        uint8_t *got = read_raw(ds, (gm_split)s);
        assert_memory_equal(got, want, 20 * 36 * 36);
        assert_memory_equal(gm_ds_labels(ds, (gm_split)s, 0), l, sizeof l);
        assert_memory_equal(gm_ds_labels(ds, (gm_split)s, 1), r, sizeof r);
        free(got);
        free(want);
    }
    gm_ds_close(ds);

    /* --group-task: the same images, left and right, plus same_group from their coarse groups */
    const char *pg = tpath(state, "geo3.h5");
    make_ok(GM_MAKE_MULTI_FASHION, pg, &(gm_make_opts){.size = 36, .n = {200, 20, 20}, .seed = 9, .group_task = 1});
    make_ok(GM_MAKE_MULTI_FASHION, p, &(gm_make_opts){.size = 36, .n = {200, 20, 20}, .seed = 9});
    gm_dataset *d2 = open_ok(p), *d3 = open_ok(pg);
    assert_int_equal(gm_ds_get_info(d3)->ntasks, 3);
    assert_int_equal(gm_ds_task_index(d3, "same_group"), 2);
    uint8_t *x2 = read_raw(d2, GM_SPLIT_TRAIN), *x3 = read_raw(d3, GM_SPLIT_TRAIN);
    assert_memory_equal(x2, x3, 200 * 36 * 36);
    const int32_t *l = gm_ds_labels(d3, GM_SPLIT_TRAIN, 0), *r = gm_ds_labels(d3, GM_SPLIT_TRAIN, 1);
    const int32_t *same = gm_ds_labels(d3, GM_SPLIT_TRAIN, 2);
    assert_memory_equal(l, gm_ds_labels(d2, GM_SPLIT_TRAIN, 0), 200 * sizeof *l);
    int ones = 0;
    for (int i = 0; i < 200; i++) {
        assert_int_equal(same[i], gm_make_fashion_group(l[i]) == gm_make_fashion_group(r[i]));
        ones += same[i];
    }
    assert_true(ones > 40 && ones < 110); /* P(same group) = 0.36 */
    assert_int_equal(gm_make_fashion_group(8), 3); /* bag */
    assert_int_equal(gm_make_fashion_group(9), 2); /* ankle boot */
    assert_int_equal(gm_make_fashion_group(3), 0); /* dress: a top */
    free(x2);
    free(x3);
    gm_ds_close(d2);
    gm_ds_close(d3);
    gm_make_fashion_src_free(&src);
}

static void test_fashion_maker(void **state)
{
    if (!have_fashion()) skip();
    gm_make_fashion_src src;
    gm_error err;
    if (gm_make_fashion_src_load(&src, NULL, &err) != GM_OK) fail_msg("%s", err.msg);
    const char *p = tpath(state, "f.h5");
    make_ok(GM_MAKE_FASHION, p, &(gm_make_opts){.size = 32, .n = {500, 100, 100}, .seed = 4});
    gm_dataset *ds = open_ok(p);
    assert_int_equal(gm_ds_get_info(ds)->ntasks, 1);
    assert_string_equal(gm_ds_get_info(ds)->tasks[0].name, "item");
    for (int s = 0; s < GM_NSPLITS; s++) {
        const gm_make_pool *pool = &src.pool[s];
        int *order = malloc((size_t)pool->n * sizeof(int));
        gm_rng rng;
        gm_make_split_rng(4, (gm_split)s, &rng);
        gm_make_permutation(&rng, pool->n, order);
        uint8_t *x = read_raw(ds, (gm_split)s);
        const int32_t *y = gm_ds_labels(ds, (gm_split)s, 0);
        long n = gm_ds_get_info(ds)->n[s];
        for (long i = 0; i < n; i++) {
            /* The item sits centred (offset 2) and nothing else is drawn. */
            const uint8_t *img = x + (size_t)i * 32 * 32, *srcimg = pool->x + (size_t)order[i] * 784;
            for (int r = 0; r < 32; r++)
                for (int c = 0; c < 32; c++) {
                    int inside = r >= 2 && r < 30 && c >= 2 && c < 30;
                    int want = inside ? srcimg[(r - 2) * 28 + (c - 2)] : 0;
                    if (img[r * 32 + c] != want) fail_msg("split %d sample %ld pixel (%d,%d)", s, i, r, c);
                }
            assert_int_equal(y[i], pool->y[order[i]]);
        }
        free(x);
        free(order);
    }
    gm_ds_close(ds);
    /* Asking for more than a pool holds is refused, naming the pool's size. */
    assert_int_equal(gm_make_fashion(tpath(state, "big.h5"), &(gm_make_opts){.size = 36, .n = {50001, 0, 0}}, NULL,
                                     NULL, &err),
                     GM_EINVAL);
    assert_non_null(strstr(err.msg, "50000"));
    assert_int_equal(access(tpath(state, "big.h5"), F_OK), -1);
    gm_make_fashion_src_free(&src);
}

static void test_missing_fashion_dir(void **state)
{
    gm_error err;
    const char *dir = tpath(state, "no-such-dir");
    gm_make_opts o = gm_make_defaults(GM_MAKE_MULTI_FASHION);
    o.fashion_dir = dir;
    assert_int_equal(gm_make_multi_fashion(tpath(state, "x.h5"), &o, NULL, NULL, &err), GM_EIO);
    assert_non_null(strstr(err.msg, dir));
    assert_non_null(strstr(err.msg, "dataset-fashion-mnist"));
}

/* ---- sprites ----------------------------------------------------------------------- */

typedef struct {
    long n;
    int size;
    uint8_t *x;
    int32_t *y[GM_SPRITE_NFACTORS];
} sprite_set;

static sprite_set make_sprites(long n, int size, uint64_t seed)
{
    sprite_set s = {.n = n, .size = size, .x = malloc((size_t)n * 3 * (size_t)size * (size_t)size)};
    assert_non_null(s.x);
    for (int f = 0; f < GM_SPRITE_NFACTORS; f++) assert_non_null(s.y[f] = malloc((size_t)n * sizeof(int32_t)));
    gm_rng rng;
    gm_make_split_rng(seed, GM_SPLIT_TRAIN, &rng);
    gm_make_sprites_gen(&rng, size, n, s.x, s.y);
    return s;
}

static void free_sprites(sprite_set *s)
{
    free(s->x);
    for (int f = 0; f < GM_SPRITE_NFACTORS; f++) free(s->y[f]);
}

static void test_sprites_balance(void **state)
{
    (void)state;
    sprite_set s = make_sprites(4000, 16, 21);
    for (int f = 0; f < GM_SPRITE_NFACTORS; f++) {
        int k = gm_make_sprite_classes((gm_sprite_factor)f);
        long count[16] = {0};
        for (long i = 0; i < s.n; i++) {
            assert_true(s.y[f][i] >= 0 && s.y[f][i] < k);
            count[s.y[f][i]]++;
        }
        double uniform = (double)s.n / k;
        for (int c = 0; c < k; c++)
            if (fabs((double)count[c] - uniform) > 0.25 * uniform)
                fail_msg("%s class %d: %ld samples, uniform is %.0f", gm_make_sprite_factor_name((gm_sprite_factor)f), c,
                         count[c], uniform);
    }
    free_sprites(&s);
}

/* Pearson's chi-square statistic of the a x b contingency table of two label arrays. */
static double chi_square(const int32_t *u, int a, const int32_t *v, int b, long n)
{
    long table[16][16] = {{0}}, ru[16] = {0}, rv[16] = {0};
    for (long i = 0; i < n; i++) {
        table[u[i]][v[i]]++;
        ru[u[i]]++;
        rv[v[i]]++;
    }
    double chi = 0;
    for (int i = 0; i < a; i++)
        for (int j = 0; j < b; j++) {
            double e = (double)ru[i] * (double)rv[j] / (double)n;
            chi += ((double)table[i][j] - e) * ((double)table[i][j] - e) / e;
        }
    return chi;
}

/* Regularised upper incomplete gamma Q(k, x), by the power series of P (fine for x < 200). */
static double gamma_q(double k, double x)
{
    double term = 1.0 / k, sum = term;
    for (int i = 1; i < 2000 && term > sum * 1e-17; i++) {
        term *= x / (k + i);
        sum += term;
    }
    return 1.0 - exp(k * log(x) - x - lgamma(k)) * sum;
}

/*
 * The chi-square value whose upper tail is alpha for df degrees of freedom: under
 * independence a statistic exceeds it with probability alpha. Bisection on the
 * exact tail P(X > x) = Q(df/2, x/2).
 */
static double chi_square_critical(int df, double alpha)
{
    double lo = 0, hi = 400;
    for (int i = 0; i < 200; i++) {
        double mid = 0.5 * (lo + hi);
        if (gamma_q(0.5 * df, 0.5 * mid) > alpha) lo = mid;
        else hi = mid;
    }
    return 0.5 * (lo + hi);
}

static void test_sprites_independent_factors(void **state)
{
    (void)state;
    /* The tail itself against textbook values: 3.841 (df 1) and 18.307 (df 10) at 5%. */
    gm_assert_close("chi2 df1", 0, chi_square_critical(1, 0.05), 3.841, 2e-3, 0);
    gm_assert_close("chi2 df10", 0, chi_square_critical(10, 0.05), 18.307, 2e-3, 0);
    sprite_set s = make_sprites(8000, 16, 33);
    const double alpha = 1e-3; /* generous: an independent pair fails once in a thousand */
    for (int f = 0; f < GM_SPRITE_NFACTORS; f++)
        for (int g = f + 1; g < GM_SPRITE_NFACTORS; g++) {
            int a = gm_make_sprite_classes((gm_sprite_factor)f), b = gm_make_sprite_classes((gm_sprite_factor)g);
            double chi = chi_square(s.y[f], a, s.y[g], b, s.n), crit = chi_square_critical((a - 1) * (b - 1), alpha);
            if (chi > crit)
                fail_msg("%s vs %s: chi-square %.1f above %.1f (df %d)", gm_make_sprite_factor_name((gm_sprite_factor)f),
                         gm_make_sprite_factor_name((gm_sprite_factor)g), chi, crit, (a - 1) * (b - 1));
        }
    /* Control: a scale that copies the shape one time in ten is caught. */
    int32_t *dep = malloc((size_t)s.n * sizeof *dep);
    gm_rng rng;
    gm_rng_seed(&rng, 99);
    for (long i = 0; i < s.n; i++)
        dep[i] = gm_rng_below(&rng, 10) == 0 ? s.y[GM_SPRITE_SHAPE][i] % GM_SPRITE_SCALES : s.y[GM_SPRITE_SCALE][i];
    double chi = chi_square(s.y[GM_SPRITE_SHAPE], GM_SPRITE_SHAPES, dep, GM_SPRITE_SCALES, s.n);
    double crit = chi_square_critical((GM_SPRITE_SHAPES - 1) * (GM_SPRITE_SCALES - 1), alpha);
    if (!(chi > crit)) fail_msg("dependent pair not caught: chi-square %.1f, threshold %.1f", chi, crit);
    free(dep);
    free_sprites(&s);
}

static void test_sprites_distinguishable(void **state)
{
    (void)state;
    const int size = 16;
    const size_t plane = (size_t)size * size;
    sprite_set s = make_sprites(3000, size, 44);
    double area[GM_SPRITE_SCALES] = {0}, rgb[GM_SPRITE_COLOURS][3] = {{0}};
    long nscale[GM_SPRITE_SCALES] = {0}, ncol[GM_SPRITE_COLOURS] = {0};
    uint8_t mask[256];
    for (long i = 0; i < s.n; i++) {
        const uint8_t *img = s.x + (size_t)i * 3 * plane;
        /* Recover the sprite's mask from the pixels: the background stays below 48. */
        long pixels = 0;
        for (size_t p = 0; p < plane; p++) {
            int m = img[p] > 120 || img[plane + p] > 120 || img[2 * plane + p] > 120;
            mask[p] = (uint8_t)m;
            pixels += m;
            for (int c = 0; m && c < 3; c++) rgb[s.y[GM_SPRITE_COLOUR][i]][c] += img[(size_t)c * plane + p];
        }
        assert_true(pixels > 0);
        area[s.y[GM_SPRITE_SCALE][i]] += (double)pixels;
        nscale[s.y[GM_SPRITE_SCALE][i]]++;
        ncol[s.y[GM_SPRITE_COLOUR][i]] += pixels;
    }
    /* Scales: each mean area at least 1.3 times the one below. */
    for (int k = 0; k < GM_SPRITE_SCALES; k++) area[k] /= (double)nscale[k];
    for (int k = 1; k < GM_SPRITE_SCALES; k++)
        if (!(area[k] > 1.3 * area[k - 1])) fail_msg("scale %d area %.1f vs %.1f below", k, area[k], area[k - 1]);
    /* Colours: mean RGB of the sprites' pixels at least 100 apart for any two. */
    for (int k = 0; k < GM_SPRITE_COLOURS; k++)
        for (int c = 0; c < 3; c++) rgb[k][c] /= (double)ncol[k];
    for (int a = 0; a < GM_SPRITE_COLOURS; a++)
        for (int b = a + 1; b < GM_SPRITE_COLOURS; b++) {
            double d = 0;
            for (int c = 0; c < 3; c++) d += (rgb[a][c] - rgb[b][c]) * (rgb[a][c] - rgb[b][c]);
            if (sqrt(d) < 100) fail_msg("colours %d and %d are %.0f apart", a, b, sqrt(d));
        }
    /* Shapes: at every scale, position and jitter, any two shapes differ in at least 4 pixels ... */
    uint8_t ma[256], mb[256];
    for (int sc = 0; sc < GM_SPRITE_SCALES; sc++)
        for (int pos = 0; pos < GM_SPRITE_POSITIONS; pos++)
            for (int j = -12; j <= 12; j += 4)
                for (int a = 0; a < GM_SPRITE_SHAPES; a++)
                    for (int b = a + 1; b < GM_SPRITE_SHAPES; b++) {
                        gm_sprite sa = {.f = {a, 0, sc, pos}, .jx = j, .jy = -j}, sb = sa;
                        sb.f[GM_SPRITE_SHAPE] = b;
                        gm_make_sprite_mask(&sa, size, ma);
                        gm_make_sprite_mask(&sb, size, mb);
                        int diff = 0;
                        for (size_t p = 0; p < plane; p++) diff += ma[p] != mb[p];
                        if (diff < 4) fail_msg("shapes %d and %d at scale %d, position %d, jitter %d differ in %d pixels", a, b, sc, pos, j, diff);
                    }
    /* ... and so at every canvas size from the smallest (the raster does not depend on position). */
    uint8_t *la = malloc(64 * 64), *lb = malloc(64 * 64);
    for (int sz = GM_SPRITE_MIN_SIZE; sz <= 64; sz++)
        for (int sc = 0; sc < GM_SPRITE_SCALES; sc++)
            for (int a = 0; a < GM_SPRITE_SHAPES; a++)
                for (int b = a + 1; b < GM_SPRITE_SHAPES; b++) {
                    gm_sprite sa = {.f = {a, 0, sc, 4}}, sb = sa;
                    sb.f[GM_SPRITE_SHAPE] = b;
                    gm_make_sprite_mask(&sa, sz, la);
                    gm_make_sprite_mask(&sb, sz, lb);
                    int diff = 0;
                    for (int p = 0; p < sz * sz; p++) diff += la[p] != lb[p];
                    if (diff < 4) fail_msg("size %d: shapes %d and %d at scale %d differ in %d pixels", sz, a, b, sc, diff);
                }
    free(la);
    free(lb);
    /* The rendered pixels follow the mask exactly. */
    gm_rng rng;
    gm_rng_seed(&rng, 5);
    uint8_t img[3 * 256];
    for (int i = 0; i < 200; i++) {
        gm_sprite sp;
        gm_make_sprite_draw(&rng, size, &sp);
        gm_make_sprite_mask(&sp, size, mask);
        gm_make_sprite_render(&sp, size, &rng, img);
        for (size_t p = 0; p < plane; p++) {
            int bright = img[p] > 120 || img[plane + p] > 120 || img[2 * plane + p] > 120;
            assert_int_equal(bright, mask[p]);
        }
    }
    free_sprites(&s);
}

static void test_sprites_positions(void **state)
{
    (void)state;
    /* The middle of the mask's bounding box lies in the position's third of the canvas,
     * for every shape, scale and position at the largest jitter each way. */
    const int size = 24, jmax = size * GM_SPRITE_SUB / 20;
    uint8_t mask[24 * 24];
    for (int sh = 0; sh < GM_SPRITE_SHAPES; sh++)
        for (int sc = 0; sc < GM_SPRITE_SCALES; sc++)
            for (int pos = 0; pos < GM_SPRITE_POSITIONS; pos++)
                for (int j = 0; j < 4; j++) {
                    gm_sprite sp = {.f = {sh, 0, sc, pos}, .jx = j & 1 ? jmax : -jmax, .jy = j & 2 ? jmax : -jmax};
                    gm_make_sprite_mask(&sp, size, mask);
                    int x0 = size, x1 = -1, y0 = size, y1 = -1;
                    for (int y = 0; y < size; y++)
                        for (int x = 0; x < size; x++)
                            if (mask[y * size + x]) {
                                x0 = x < x0 ? x : x0;
                                x1 = x > x1 ? x : x1;
                                y0 = y < y0 ? y : y0;
                                y1 = y > y1 ? y : y1;
                            }
                    assert_true(x1 >= 0);
                    double cx = 0.5 * (x0 + x1 + 1), cy = 0.5 * (y0 + y1 + 1);
                    if ((int)(cx * 3 / size) != pos % 3 || (int)(cy * 3 / size) != pos / 3)
                        fail_msg("shape %d scale %d position %d: box centre (%.1f, %.1f)", sh, sc, pos, cx, cy);
                }
}

/* ---- import ------------------------------------------------------------------------ */

/* Writes a .npy file by hand: header dict text as given, then data. */
static void write_npy(const char *path, int major, const char *dict, const void *data, size_t bytes)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    size_t pre = major == 1 ? 10 : 12, len = strlen(dict) + 1;
    size_t pad = (64 - (pre + len) % 64) % 64;
    size_t hlen = len + pad;
    unsigned char h[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', (unsigned char)major, 0};
    if (major == 1) {
        h[8] = (unsigned char)(hlen & 0xff);
        h[9] = (unsigned char)(hlen >> 8);
    } else
        for (int i = 0; i < 4; i++) h[8 + i] = (unsigned char)(hlen >> (8 * i));
    fwrite(h, 1, pre, f);
    fputs(dict, f);
    for (size_t i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    if (bytes) fwrite(data, 1, bytes, f);
    fclose(f);
}

static void npy(const char *path, int major, const char *descr, int fortran, const char *shape, const void *data,
                size_t bytes)
{
    char dict[256];
    snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }", descr,
             fortran ? "True" : "False", shape);
    write_npy(path, major, dict, data, bytes);
}

static gm_make_import_opts one_task_opts(const char *x_train, const char *y_train)
{
    gm_make_import_opts o;
    memset(&o, 0, sizeof o);
    o.name = "mine";
    o.x[GM_SPLIT_TRAIN] = x_train;
    o.ntasks = 1;
    snprintf(o.tasks[0].name, sizeof o.tasks[0].name, "digit");
    o.tasks[0].y[GM_SPLIT_TRAIN] = y_train;
    return o;
}

static void test_import_npy(void **state)
{
    gm_error err;
    /* train: uint8 (5, 2, 3, 4) NCHW in format 1.0, int64 labels in 2.0; test: (3, 3, 4) as C = 1. */
    uint8_t xt[5 * 24], xs[3 * 12];
    for (int i = 0; i < 5 * 24; i++) xt[i] = (uint8_t)(i * 7 + 3);
    for (int i = 0; i < 3 * 12; i++) xs[i] = (uint8_t)(i * 5 + 1);
    int64_t yt[5] = {0, 4, 2, 4, 1};
    int8_t ys[3] = {3, 0, 1};
    uint8_t y2[5] = {1, 1, 0, 0, 1};
    const char *xtp = tpath(state, "xt.npy"), *ytp = tpath(state, "yt.npy");
    npy(xtp, 1, "|u1", 0, "(5, 2, 3, 4)", xt, sizeof xt);
    npy(ytp, 2, "<i8", 0, "(5,)", yt, sizeof yt);
    npy(tpath(state, "xs.npy"), 3, "|u1", 0, "(3, 3, 4)", xs, sizeof xs);
    npy(tpath(state, "ys.npy"), 1, "|i1", 0, "(3,)", ys, sizeof ys);
    npy(tpath(state, "y2.npy"), 1, "|u1", 0, "(5,)", y2, sizeof y2);
    uint8_t xs3[3 * 24];
    for (int i = 0; i < 3 * 24; i++) xs3[i] = (uint8_t)i;
    npy(tpath(state, "xs3.npy"), 1, "|u1", 0, "(3, 2, 3, 4)", xs3, sizeof xs3);

    /* Two tasks over train and test (test images 2-channel like train). */
    char p[8][600];
    const char *names[] = {"xt.npy", "yt.npy", "xs3.npy", "ys.npy", "y2.npy", "out.h5"};
    for (int i = 0; i < 6; i++) snprintf(p[i], sizeof p[i], "%s", tpath(state, names[i]));
    gm_make_import_opts o = one_task_opts(p[0], p[1]);
    o.x[GM_SPLIT_TEST] = p[2];
    o.tasks[0].y[GM_SPLIT_TEST] = p[3];
    o.ntasks = 2;
    snprintf(o.tasks[1].name, sizeof o.tasks[1].name, "parity");
    o.tasks[1].y[GM_SPLIT_TRAIN] = p[4];
    o.tasks[1].y[GM_SPLIT_TEST] = p[4]; /* wrong length: 5 labels for 3 samples */
    assert_int_equal(gm_make_import(p[5], &o, NULL, NULL, &err), GM_EFORMAT);
    assert_non_null(strstr(err.msg, p[4]));
    assert_non_null(strstr(err.msg, "5 labels"));
    assert_int_equal(access(p[5], F_OK), -1);

    int8_t y3[3] = {1, 0, 0};
    npy(tpath(state, "y3.npy"), 1, "|i1", 0, "(3,)", y3, sizeof y3);
    snprintf(p[6], sizeof p[6], "%s", tpath(state, "y3.npy"));
    o.tasks[1].y[GM_SPLIT_TEST] = p[6];
    o.chunk_bytes = 24; /* one sample per chunk */
    if (gm_make_import(p[5], &o, NULL, NULL, &err) != GM_OK) fail_msg("%s", err.msg);
    gm_dataset *ds = open_ok(p[5]);
    const gm_ds_info *info = gm_ds_get_info(ds);
    assert_string_equal(info->name, "mine");
    assert_int_equal(info->shape.c, 2);
    assert_int_equal(info->shape.h, 3);
    assert_int_equal(info->shape.w, 4);
    assert_int_equal(info->dtype, GM_DT_U8);
    assert_int_equal(info->n[GM_SPLIT_TRAIN], 5);
    assert_int_equal(info->n[GM_SPLIT_VAL], 0);
    assert_int_equal(info->n[GM_SPLIT_TEST], 3);
    assert_int_equal(info->tasks[0].classes, 5); /* max label 4 (train) + 1 */
    assert_int_equal(info->tasks[1].classes, 2);
    uint8_t *got = read_raw(ds, GM_SPLIT_TRAIN);
    assert_memory_equal(got, xt, sizeof xt);
    free(got);
    got = read_raw(ds, GM_SPLIT_TEST);
    assert_memory_equal(got, xs3, sizeof xs3);
    free(got);
    for (int i = 0; i < 5; i++) assert_int_equal(gm_ds_labels(ds, GM_SPLIT_TRAIN, 0)[i], yt[i]);
    for (int i = 0; i < 3; i++) assert_int_equal(gm_ds_labels(ds, GM_SPLIT_TEST, 0)[i], ys[i]);
    for (int i = 0; i < 3; i++) assert_int_equal(gm_ds_labels(ds, GM_SPLIT_TEST, 1)[i], y3[i]);
    gm_ds_close(ds);

    /* (N, H, W) is one channel; --classes above the largest label is kept. */
    gm_make_import_opts o1 = one_task_opts(tpath(state, "xs.npy"), p[3]);
    char xsp[600];
    snprintf(xsp, sizeof xsp, "%s", tpath(state, "xs.npy"));
    o1.x[GM_SPLIT_TRAIN] = xsp;
    o1.tasks[0].classes = 10;
    if (gm_make_import(p[5], &o1, NULL, NULL, &err) != GM_OK) fail_msg("%s", err.msg);
    ds = open_ok(p[5]);
    assert_int_equal(gm_ds_get_info(ds)->shape.c, 1);
    assert_int_equal(gm_ds_get_info(ds)->tasks[0].classes, 10);
    got = read_raw(ds, GM_SPLIT_TRAIN);
    assert_memory_equal(got, xs, sizeof xs);
    free(got);
    gm_ds_close(ds);
    /* ... but not below it. */
    o1.tasks[0].classes = 3;
    assert_int_equal(gm_make_import(p[5], &o1, NULL, NULL, &err), GM_EFORMAT);
    assert_non_null(strstr(err.msg, "label 3"));
}

static void test_import_nhwc_float(void **state)
{
    gm_error err;
    enum { N = 7, H = 2, W = 3, C = 3 };
    float x[N * H * W * C];
    for (int i = 0; i < N * H * W * C; i++) x[i] = (float)i * 0.25f - 3.0f;
    int32_t y[N] = {0, 1, 0, 1, 1, 0, 1};
    char xp[600], yp[600], out[600];
    snprintf(xp, sizeof xp, "%s", tpath(state, "x.npy"));
    snprintf(yp, sizeof yp, "%s", tpath(state, "y.npy"));
    snprintf(out, sizeof out, "%s", tpath(state, "o.h5"));
    npy(xp, 3, "<f4", 0, "(7, 2, 3, 3)", x, sizeof x);
    npy(yp, 1, "<i4", 0, "(7,)", y, sizeof y);
    gm_make_import_opts o = one_task_opts(xp, yp);
    o.nhwc = 1;
    o.chunk_bytes = 2 * H * W * C * 4; /* two samples per chunk: 7 = 2+2+2+1 */
    if (gm_make_import(out, &o, NULL, NULL, &err) != GM_OK) fail_msg("%s", err.msg);
    gm_dataset *ds = open_ok(out);
    const gm_ds_info *info = gm_ds_get_info(ds);
    assert_int_equal(info->dtype, GM_DT_F32);
    assert_int_equal(info->shape.c, C);
    assert_int_equal(info->shape.h, H);
    assert_int_equal(info->shape.w, W);
    assert_true(info->scale == 1.0f);
    float *got = read_raw(ds, GM_SPLIT_TRAIN);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int h = 0; h < H; h++)
                for (int w = 0; w < W; w++)
                    assert_true(got[((n * C + c) * H + h) * W + w] == x[((n * H + h) * W + w) * C + c]);
    free(got);
    gm_ds_close(ds);

    /* A NaN is refused, naming the sample. */
    x[2 * H * W * C + 5] = NAN;
    npy(xp, 3, "<f4", 0, "(7, 2, 3, 3)", x, sizeof x);
    assert_int_equal(gm_make_import(out, &o, NULL, NULL, &err), GM_EFORMAT);
    assert_non_null(strstr(err.msg, "sample 2"));
}

static void test_import_hdf5(void **state)
{
    gm_error err;
    /* A sprites file is HDF5: import its train images and shape labels back. */
    char src[600], xs[700], ys[700], out[600];
    snprintf(src, sizeof src, "%s", tpath(state, "spr.h5"));
    snprintf(out, sizeof out, "%s", tpath(state, "imp.h5"));
    make_ok(GM_MAKE_SPRITES, src, &(gm_make_opts){.size = 12, .n = {50, 0, 0}, .seed = 2});
    snprintf(xs, sizeof xs, "%s:/train/x", src);
    snprintf(ys, sizeof ys, "%s:/train/y/shape", src);
    gm_make_array *a;
    if (gm_make_array_open(&a, xs, &err) != GM_OK) fail_msg("%s", err.msg);
    assert_int_equal(gm_make_array_rank(a), 4);
    assert_int_equal(gm_make_array_dim(a, 0), 50);
    assert_int_equal(gm_make_array_dim(a, 1), 3);
    assert_int_equal(gm_make_array_dtype(a), GM_ARR_U8);
    gm_make_array_close(a);
    gm_make_import_opts o = one_task_opts(xs, ys);
    o.chunk_bytes = 7 * 3 * 12 * 12;
    if (gm_make_import(out, &o, NULL, NULL, &err) != GM_OK) fail_msg("%s", err.msg);
    gm_dataset *d1 = open_ok(src), *d2 = open_ok(out);
    uint8_t *x1 = read_raw(d1, GM_SPLIT_TRAIN), *x2 = read_raw(d2, GM_SPLIT_TRAIN);
    assert_memory_equal(x1, x2, 50 * 3 * 12 * 12);
    assert_memory_equal(gm_ds_labels(d1, GM_SPLIT_TRAIN, 0), gm_ds_labels(d2, GM_SPLIT_TRAIN, 0), 50 * sizeof(int32_t));
    assert_int_equal(gm_ds_get_info(d2)->tasks[0].classes, 4);
    free(x1);
    free(x2);
    gm_ds_close(d1);
    gm_ds_close(d2);
    /* A dataset path that is not there is named. */
    snprintf(ys, sizeof ys, "%s:/train/y/nothing", src);
    assert_int_equal(gm_make_array_open(&a, ys, &err), GM_EFORMAT);
    assert_non_null(strstr(err.msg, "/train/y/nothing"));
}

static void expect_open_error(const char *path, const char *needle)
{
    gm_make_array *a;
    gm_error err;
    gm_status st = gm_make_array_open(&a, path, &err);
    if (st == GM_OK) {
        gm_make_array_close(a);
        fail_msg("%s opened, expected an error with \"%s\"", path, needle);
    }
    if (!strstr(err.msg, needle) || !strstr(err.msg, path)) fail_msg("message \"%s\" lacks \"%s\" or the path", err.msg, needle);
}

static void test_import_bad_sources(void **state)
{
    int32_t d[12] = {0};
    char p[600];
    snprintf(p, sizeof p, "%s", tpath(state, "f.npy"));
    npy(p, 1, "<i4", 1, "(3, 4)", d, sizeof d);
    expect_open_error(p, "Fortran");
    npy(p, 1, ">i4", 0, "(12,)", d, sizeof d);
    expect_open_error(p, "big-endian");
    npy(p, 1, "<f8", 0, "(6,)", d, sizeof d);
    expect_open_error(p, "unsupported dtype '<f8'");
    npy(p, 1, "<u2", 0, "(12,)", d, sizeof d);
    expect_open_error(p, "unsupported dtype");
    npy(p, 1, "<i4", 0, "(13,)", d, sizeof d);
    expect_open_error(p, "truncated");
    npy(p, 4, "<i4", 0, "(12,)", d, sizeof d);
    expect_open_error(p, "version 4");
    write_npy(p, 1, "{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (3,), }", d, 12);
    expect_open_error(p, "structured");
    FILE *f = fopen(p, "wb");
    fputs("not numpy at all", f);
    fclose(f);
    expect_open_error(p, "not a .npy file");
    snprintf(p, sizeof p, "%s", tpath(state, "data.bin"));
    expect_open_error(p, ".npy file or FILE.h5:/path");

    /* Role checks: float labels, int images, a negative label, a split without labels. */
    gm_error err;
    char xp[600], yp[600], out[600];
    snprintf(xp, sizeof xp, "%s", tpath(state, "x.npy"));
    snprintf(yp, sizeof yp, "%s", tpath(state, "y.npy"));
    snprintf(out, sizeof out, "%s", tpath(state, "o.h5"));
    float fl[4] = {0, 1, 0, 1};
    uint8_t img[4 * 4] = {0};
    npy(xp, 1, "|u1", 0, "(4, 2, 2)", img, sizeof img);
    npy(yp, 1, "<f4", 0, "(4,)", fl, sizeof fl);
    gm_make_import_opts o = one_task_opts(xp, yp);
    assert_int_equal(gm_make_import(out, &o, NULL, NULL, &err), GM_EFORMAT);
    assert_non_null(strstr(err.msg, "labels must be integers"));
    int16_t neg[4] = {0, 1, -1, 1};
    npy(yp, 1, "<i2", 0, "(4,)", neg, sizeof neg);
    assert_int_equal(gm_make_import(out, &o, NULL, NULL, &err), GM_EFORMAT);
    assert_non_null(strstr(err.msg, "label -1 at row 2"));
    int32_t ix[16] = {0};
    npy(xp, 1, "<i4", 0, "(4, 2, 2)", ix, sizeof ix);
    npy(yp, 1, "<i2", 0, "(4,)", (int16_t[4]){0, 1, 1, 1}, 8);
    assert_int_equal(gm_make_import(out, &o, NULL, NULL, &err), GM_EFORMAT);
    assert_non_null(strstr(err.msg, "images must be uint8 or float32"));
    assert_non_null(strstr(err.msg, xp));
    npy(xp, 1, "|u1", 0, "(4, 2, 2)", img, sizeof img);
    o.x[GM_SPLIT_VAL] = xp; /* val images but no val labels */
    assert_int_equal(gm_make_import(out, &o, NULL, NULL, &err), GM_EINVAL);
    assert_non_null(strstr(err.msg, "no labels for the val split"));
    o.x[GM_SPLIT_VAL] = NULL;
    if (gm_make_import(out, &o, NULL, NULL, &err) != GM_OK) fail_msg("%s", err.msg);
    assert_int_equal(access(out, F_OK), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sprites_reproducible, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_multi_fashion_reproducible, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_fashion_reproducible, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_multi_fashion_balance, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_multi_fashion_geometry, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_fashion_maker, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_missing_fashion_dir, setup_tmp, teardown_tmp),
        cmocka_unit_test(test_sprites_balance),
        cmocka_unit_test(test_sprites_independent_factors),
        cmocka_unit_test(test_sprites_distinguishable),
        cmocka_unit_test(test_sprites_positions),
        cmocka_unit_test_setup_teardown(test_import_npy, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_import_nhwc_float, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_import_hdf5, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_import_bad_sources, setup_tmp, teardown_tmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

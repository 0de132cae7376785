/*
 * Search checkpoints: a table with a candidate of every status (real graph
 * encodings), two elites with real fused-model weights, a best model and a
 * long config come back field for field and bit for bit, with the summary a
 * report reads; empty tables round-trip; a version-1 file (no summary) still
 * loads; a second save keeps the first as PATH.prev; truncated files,
 * garbage anywhere in a file, foreign, newer and inconsistent files are
 * refused by name (never a crash: the header block's checksum is checked
 * before HDF5 parses anything); the writer refuses what the reader would; no
 * HDF5 handle is left open; h5py reads the layout the header documents and
 * Python recomputes the header block.
 */
#define _POSIX_C_SOURCE 200809L /* mkdtemp, truncate */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "gm_ckpt.h"
#include "gm_fgraph.h"
#include "gm_h5.h"
#include "gm_models.h"
#include "gm_mutate.h"
#include "test_util.h"

static void assert_no_open_h5(void) { assert_int_equal(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0); }

enum { NMODELS = 2, NCAND = 7, CONFIG_LEN = 20000 };
static const gm_shape IN = {3, 16, 16};
/* One candidate of every status; rows 1 and 6 are the elites, row 6 the best. */
static const gm_cand_status STATUS[NCAND] = {GM_CAND_PENDING,  GM_CAND_PASSED,    GM_CAND_FAILED, GM_CAND_ABORTED,
                                             GM_CAND_FILTERED, GM_CAND_DUPLICATE, GM_CAND_PASSED};

typedef struct {
    gm_mfile models[NMODELS];
    const gm_mfile *mp[NMODELS];
    gm_fgraph *g[NCAND]; /* g[0] the original graph, g[i] one more random merge than g[i-1] */
    char dir[256];
} fixture;

/* ---- files ---------------------------------------------------------------------- */

static void path_in(const fixture *f, const char *name, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s", f->dir, name);
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

static long file_size(const char *path)
{
    struct stat s;
    assert_int_equal(stat(path, &s), 0);
    return (long)s.st_size;
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    assert_true(in && out);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

static void overwrite(const char *path, long at, const unsigned char *bytes, size_t n)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, at, SEEK_SET), 0);
    assert_int_equal(fwrite(bytes, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* XORs n bytes at `at` with mask (all non-zero): each byte surely changes. */
static void flip(const char *path, long at, const unsigned char *mask, size_t n)
{
    unsigned char b[64];
    assert_true(n <= sizeof b);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, at, SEEK_SET), 0);
    n = fread(b, 1, n, f);
    for (size_t i = 0; i < n; i++) b[i] ^= mask[i];
    assert_int_equal(fseek(f, at, SEEK_SET), 0);
    assert_int_equal(fwrite(b, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* ---- fixture: two small models and a chain of mutated graphs ----------------------- */

static void make_model(gm_backend *be, gm_mfile *m, const char *arch, int classes, uint64_t seed)
{
    static const int widths[4] = {8, 16, 0, 0};
    static gm_model model;
    gm_error err;
    assert_ok(gm_model_from_name(&model, arch, widths, IN, classes, &err), err);
    gm_net_desc d = gm_model_desc(&model);
    gm_net *net;
    assert_ok(gm_net_create(&net, be, &d, 1, seed, &err), err);
    assert_ok(gm_mfile_from_net(m, net, &err), err);
    gm_net_free(net);
    snprintf(m->arch, sizeof m->arch, "%s 8,16", arch);
    snprintf(m->tasks[0].name, sizeof m->tasks[0].name, "task_%s", arch);
    /* BN statistics away from (0, 1): buffers are compared too */
    for (size_t i = 0; i < m->nbuffers; i++) m->buffers[i] = 0.5f + 0.001f * (float)i;
    for (int c = 0; c < IN.c; c++) {
        m->mean[c] = 0.25f * (float)c;
        m->std[c] = 0.5f + 0.1f * (float)c;
    }
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    gm_backend *be;
    gm_error err;
    if (!f || gm_backend_cpu_create(&be, 1, &err) != GM_OK) return -1;
    make_model(be, &f->models[0], "vgg11", 3, 1);
    make_model(be, &f->models[1], "resnet8", 4, 2);
    gm_backend_free(be);
    for (int k = 0; k < NMODELS; k++) f->mp[k] = &f->models[k];
    gm_rng rng;
    gm_rng_seed(&rng, 5);
    for (int i = 0; i < NCAND; i++) {
        if (!(f->g[i] = malloc(sizeof *f->g[i]))) return -1;
        if (i == 0) {
            if (gm_fgraph_from_models(f->g[0], f->mp, NMODELS, &err) != GM_OK) return -1;
        } else {
            *f->g[i] = *f->g[i - 1];
            /* relaxed merges too: adapters (custom blocks) in the elites' models */
            if (gm_mutate_random(f->g[i], &rng, 1, 1000, &err) != GM_OK) return -1;
        }
    }
    snprintf(f->dir, sizeof f->dir, "/tmp/gm_test_ckpt_XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    DIR *d = opendir(f->dir);
    struct dirent *e;
    char p[512];
    while (d && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        path_in(f, e->d_name, p, sizeof p);
        unlink(p);
    }
    if (d) closedir(d);
    rmdir(f->dir);
    for (int i = 0; i < NCAND; i++) free(f->g[i]);
    for (int k = 0; k < NMODELS; k++) gm_mfile_free(&f->models[k]);
    free(f);
    return 0;
}

/* ---- a checkpoint --------------------------------------------------------------------- */

static void fused(const fixture *f, int i, uint64_t seed, gm_mfile *m)
{
    gm_wstore store = {.nmodels = NMODELS, .models = f->mp};
    gm_error err;
    assert_ok(gm_fgraph_to_mfile(f->g[i], &store, seed, m, &err), err);
    /* "fine-tuned": every weight distinct from the originals' */
    for (size_t j = 0; j < m->nparams; j++) m->params[j] += 1e-3f * (float)(seed % 7 + 1);
    m->tasks[0].val_accuracy = 0.875;
}

static void fill_row(const fixture *f, int i, gm_ckpt_cand *r)
{
    const gm_fgraph *g = f->g[i];
    const int tuned = STATUS[i] == GM_CAND_PASSED || STATUS[i] == GM_CAND_FAILED || STATUS[i] == GM_CAND_ABORTED;
    *r = (gm_ckpt_cand){.id = i, .iteration = i / 2, .source = i == 6 ? 1 : -1, .status = STATUS[i],
                        .worker = tuned ? i % 3 : -1, .nodes = g->nnodes, .epochs = tuned ? 3 + i : 0,
                        .location = gm_fgraph_location_hash(g), .topology = gm_fgraph_topology_hash(g),
                        .params = (long long)gm_fgraph_nparams(g), .mflops = (double)gm_fgraph_flops(g) / 1e6,
                        .latency_ms = tuned ? 1.5 + i : NAN, .base_latency_ms = 4.25,
                        .speedup = tuned ? 4.25 / (1.5 + i) : NAN, .worst_drop = tuned ? 0.01 * i - 0.02 : NAN,
                        .seconds = 12.5 * i, .finished_s = 20.0 * i, .drop0 = tuned ? 0.03 * i : NAN,
                        .predicted = i % 2 ? 0.05 * i : NAN};
    for (int t = 0; t < GM_MF_MAX_TASKS; t++) r->val[t] = tuned && t < NMODELS ? 0.9 - 0.01 * t - 0.001 * i : NAN;
    int32_t enc[GM_FG_ENC_HEADER + GM_FG_ENC_PER_NODE * GM_FG_MAX_NODES];
    r->enc_len = gm_fgraph_encode(g, enc, (int)(sizeof enc / sizeof *enc));
    assert_true(r->enc_len > 0);
    r->enc = malloc(sizeof(int32_t) * (size_t)r->enc_len);
    assert_non_null(r->enc);
    memcpy(r->enc, enc, sizeof(int32_t) * (size_t)r->enc_len);
    /* a learning curve of a check per epoch; the first has no loss yet */
    if (!tuned) return;
    const int cols = GM_CKPT_CURVE_COLS(NMODELS);
    r->ncurve = r->epochs + 1;
    r->curve = malloc(sizeof(double) * (size_t)(r->ncurve * cols));
    assert_non_null(r->curve);
    for (int e = 0; e < r->ncurve; e++) {
        double *q = r->curve + e * cols;
        q[0] = e;
        q[1] = e ? 1.0 / (e + i) : NAN;
        for (int t = 0; t < NMODELS; t++) q[2 + t] = 0.5 + 0.01 * e - 0.001 * t;
    }
}

/* A whole checkpoint (all owned by c); variant changes the search state. */
static void make_ckpt(const fixture *f, gm_ckpt *c, int variant)
{
    memset(c, 0, sizeof *c);
    c->config = malloc(CONFIG_LEN + 1);
    assert_non_null(c->config);
    int n = snprintf(c->config, CONFIG_LEN + 1, "{\"variant\": %d, \"models\": [", variant);
    while (n < CONFIG_LEN - 40) n += snprintf(c->config + n, (size_t)(CONFIG_LEN + 1 - n), "\"zoo/model%05d.h5\", ", n);
    snprintf(c->config + n, (size_t)(CONFIG_LEN + 1 - n), "\"last.h5\"]}");
    c->ntasks = NMODELS;
    for (int t = 0; t < NMODELS; t++) snprintf(c->tasks[t], sizeof c->tasks[t], "%s", f->models[t].tasks[0].name);
    c->iteration = 4 + variant;
    c->next_id = NCAND;
    c->temperature = 0.125 / (1 + variant);
    c->last_drop = -0.0;
    c->elapsed_s = 3600.5 + variant;
    const uint64_t rng[4] = {0x0123456789abcdefull, 0xfedcba9876543210ull, 1, UINT64_MAX - (uint64_t)variant};
    memcpy(c->rng, rng, sizeof rng);
    c->ncand = NCAND;
    c->cand = calloc(NCAND, sizeof *c->cand);
    assert_non_null(c->cand);
    for (int i = 0; i < NCAND; i++) fill_row(f, i, &c->cand[i]);
    c->nelites = 2;
    c->elite_id = malloc(2 * sizeof(int));
    c->elite_w = calloc(2, sizeof(gm_mfile));
    assert_true(c->elite_id && c->elite_w);
    c->elite_id[0] = 1;
    c->elite_id[1] = 6;
    fused(f, 1, 11 + (uint64_t)variant, &c->elite_w[0]);
    fused(f, 6, 12 + (uint64_t)variant, &c->elite_w[1]);
    c->npareto = 1; /* the best alone: the Pareto set's own copy of its weights */
    c->pareto_id = malloc(sizeof(int));
    c->pareto_w = calloc(1, sizeof(gm_mfile));
    assert_true(c->pareto_id && c->pareto_w);
    c->pareto_id[0] = 6;
    fused(f, 6, 14 + (uint64_t)variant, &c->pareto_w[0]);
    c->best_id = 6;
    fused(f, 6, 13 + (uint64_t)variant, &c->best);
    /* an ended sweep's summary, a NaN among its numbers (a test split the end could not score) */
    gm_ckpt_summary *s = &c->summary;
    gm_ckpt_summary_unknown(s);
    s->ended = 1;
    s->base_latency_ms = 2.5 + variant;
    s->final_latency_ms = 1.25;
    s->final_base_latency_ms = 2.75;
    s->final_speedup = 2.75 / 1.25;
    for (int t = 0; t < NMODELS; t++) {
        s->orig_val[t] = 0.9 + 0.01 * t;
        s->orig_test[t] = 0.8 + 0.01 * t;
        s->best_test[t] = t ? 0.79 : NAN;
    }
}

/* ---- comparison --------------------------------------------------------------------------- */

static void assert_same_double(const char *what, int i, double a, double b)
{
    if (isnan(a) && isnan(b)) return;
    if (memcmp(&a, &b, sizeof a) != 0) fail_msg("%s %d: %.17g != %.17g", what, i, a, b);
}

static void assert_model_equal(const gm_mfile *a, const gm_mfile *b)
{
    assert_string_equal(a->arch, b->arch);
    assert_memory_equal(&a->input, &b->input, sizeof a->input);
    assert_memory_equal(a->mean, b->mean, sizeof(float) * (size_t)a->input.c);
    assert_memory_equal(a->std, b->std, sizeof(float) * (size_t)a->input.c);
    assert_int_equal(a->ntasks, b->ntasks);
    for (int k = 0; k < a->ntasks; k++) {
        assert_string_equal(a->tasks[k].name, b->tasks[k].name);
        assert_int_equal(a->tasks[k].classes, b->tasks[k].classes);
        assert_int_equal(a->tasks[k].head, b->tasks[k].head);
        assert_string_equal(a->tasks[k].dataset, b->tasks[k].dataset);
        assert_same_double("val_accuracy", k, a->tasks[k].val_accuracy, b->tasks[k].val_accuracy);
    }
    assert_int_equal(a->nblocks, b->nblocks);
    assert_memory_equal(a->parent, b->parent, sizeof(int) * (size_t)a->nblocks);
    for (int i = 0; i < a->nblocks; i++) {
        assert_int_equal(a->blocks[i].kind, b->blocks[i].kind);
        assert_int_equal(a->blocks[i].nops, b->blocks[i].nops);
        assert_int_equal(a->blocks[i].model_id, b->blocks[i].model_id);
        assert_int_equal(a->blocks[i].layer_id, b->blocks[i].layer_id);
        for (int k = 0; k < a->blocks[i].nops; k++)
            assert_int_equal(a->blocks[i].ops[k].kind, b->blocks[i].ops[k].kind);
    }
    assert_int_equal(a->nparams, b->nparams);
    assert_int_equal(a->nbuffers, b->nbuffers);
    /* bit for bit */
    assert_memory_equal(a->params, b->params, sizeof(float) * a->nparams);
    assert_memory_equal(a->buffers, b->buffers, sizeof(float) * a->nbuffers);
}

static void assert_ckpt_equal(const gm_ckpt *a, const gm_ckpt *b)
{
    assert_string_equal(a->config ? a->config : "", b->config ? b->config : "");
    assert_int_equal(a->ntasks, b->ntasks);
    for (int t = 0; t < a->ntasks; t++) assert_string_equal(a->tasks[t], b->tasks[t]);
    assert_int_equal(a->iteration, b->iteration);
    assert_int_equal(a->next_id, b->next_id);
    assert_same_double("temperature", 0, a->temperature, b->temperature);
    assert_same_double("last_drop", 0, a->last_drop, b->last_drop);
    assert_same_double("elapsed_s", 0, a->elapsed_s, b->elapsed_s);
    assert_memory_equal(a->rng, b->rng, sizeof a->rng);
    assert_int_equal(a->ncand, b->ncand);
    for (int i = 0; i < a->ncand; i++) {
        const gm_ckpt_cand *x = &a->cand[i], *y = &b->cand[i];
        assert_int_equal(x->id, y->id);
        assert_int_equal(x->iteration, y->iteration);
        assert_int_equal(x->source, y->source);
        assert_int_equal(x->status, y->status);
        assert_int_equal(x->worker, y->worker);
        assert_int_equal(x->nodes, y->nodes);
        assert_int_equal(x->epochs, y->epochs);
        assert_true(x->location == y->location && x->topology == y->topology);
        assert_true(x->params == y->params);
        const double fx[9] = {x->mflops,     x->latency_ms, x->base_latency_ms, x->speedup,  x->worst_drop,
                              x->seconds,    x->finished_s, x->drop0,           x->predicted};
        const double fy[9] = {y->mflops,     y->latency_ms, y->base_latency_ms, y->speedup,  y->worst_drop,
                              y->seconds,    y->finished_s, y->drop0,           y->predicted};
        for (int k = 0; k < 9; k++) assert_same_double("row metric", i * 10 + k, fx[k], fy[k]);
        for (int t = 0; t < a->ntasks; t++) assert_same_double("val", i * 100 + t, x->val[t], y->val[t]);
        assert_int_equal(x->enc_len, y->enc_len);
        assert_memory_equal(x->enc, y->enc, sizeof(int32_t) * (size_t)x->enc_len);
        assert_int_equal(x->ncurve, y->ncurve);
        for (int k = 0; k < x->ncurve * GM_CKPT_CURVE_COLS(a->ntasks); k++)
            assert_same_double("curve", i, x->curve[k], y->curve[k]);
    }
    assert_int_equal(a->nelites, b->nelites);
    for (int k = 0; k < a->nelites; k++) {
        assert_int_equal(a->elite_id[k], b->elite_id[k]);
        assert_model_equal(&a->elite_w[k], &b->elite_w[k]);
    }
    assert_int_equal(a->npareto, b->npareto);
    for (int k = 0; k < a->npareto; k++) {
        assert_int_equal(a->pareto_id[k], b->pareto_id[k]);
        assert_model_equal(&a->pareto_w[k], &b->pareto_w[k]);
    }
    assert_int_equal(a->best_id, b->best_id);
    if (a->best_id >= 0) assert_model_equal(&a->best, &b->best);
    const gm_ckpt_summary *x = &a->summary, *y = &b->summary;
    assert_int_equal(x->ended, y->ended);
    assert_same_double("base_latency_ms", 0, x->base_latency_ms, y->base_latency_ms);
    assert_same_double("final_latency_ms", 0, x->final_latency_ms, y->final_latency_ms);
    assert_same_double("final_base_latency_ms", 0, x->final_base_latency_ms, y->final_base_latency_ms);
    assert_same_double("final_speedup", 0, x->final_speedup, y->final_speedup);
    for (int t = 0; t < a->ntasks; t++) {
        assert_same_double("orig_val", t, x->orig_val[t], y->orig_val[t]);
        assert_same_double("orig_test", t, x->orig_test[t], y->orig_test[t]);
        assert_same_double("best_test", t, x->best_test[t], y->best_test[t]);
    }
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_round_trip(void **state)
{
    const fixture *f = *state;
    char path[512], tmp[520], prev[520];
    path_in(f, "round.h5", path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    snprintf(prev, sizeof prev, "%s.prev", path);
    gm_ckpt c, back;
    gm_error err;
    make_ckpt(f, &c, 0);
    assert_true(strlen(c.config) > CONFIG_LEN - 100); /* several KB: more than a small attribute */
    assert_ok(gm_ckpt_save(path, &c, &err), err);
    assert_no_open_h5();
    assert_true(exists(path) && !exists(tmp) && !exists(prev)); /* nothing to keep the first time */
    assert_ok(gm_ckpt_load(path, &back, &err), err);
    assert_no_open_h5();
    assert_int_equal(back.version, GM_CKPT_VERSION);
    assert_ckpt_equal(&c, &back);
    for (int t = NMODELS; t < GM_MF_MAX_TASKS; t++) assert_true(isnan(back.cand[1].val[t]));
    /* the encodings are real: each decodes to a graph with the row's hashes */
    gm_fgraph *g = malloc(sizeof *g);
    assert_non_null(g);
    for (int i = 0; i < back.ncand; i++) {
        assert_ok(gm_fgraph_decode(g, back.cand[i].enc, back.cand[i].enc_len, f->mp, NMODELS, &err), err);
        assert_true(gm_fgraph_location_hash(g) == back.cand[i].location);
        assert_true(gm_fgraph_topology_hash(g) == back.cand[i].topology);
    }
    free(g);
    /* the elites' models hold adapters (custom blocks) next to the originals' blocks */
    int custom = 0;
    for (int k = 0; k < back.nelites; k++)
        for (int b = 0; b < back.elite_w[k].nblocks; b++) custom += back.elite_w[k].blocks[b].kind == GM_BLOCK_CUSTOM;
    assert_true(custom > 0);
    for (int i = 0; i < GM_CAND_NSTATUS; i++) assert_string_not_equal(gm_cand_status_name((gm_cand_status)i), "?");
    assert_string_equal(gm_cand_status_name(GM_CAND_DUPLICATE), "duplicate");
    assert_string_equal(gm_cand_status_name(GM_CAND_NSTATUS), "?");
    gm_ckpt_free(&back);
    assert_null(back.cand);
    gm_ckpt_free(&back); /* twice: a no-op */
    gm_ckpt_free(&c);
}

static void empty_round_trip(const fixture *f, int ntasks, const char *config)
{
    char path[512];
    path_in(f, "empty.h5", path, sizeof path);
    gm_ckpt c = {.config = config ? strdup(config) : NULL, .ntasks = ntasks, .best_id = -1,
                 .rng = {1, 2, 3, 4}, .temperature = 1.0};
    for (int t = 0; t < ntasks; t++) snprintf(c.tasks[t], sizeof c.tasks[t], "t%d", t);
    gm_ckpt back;
    gm_error err;
    assert_ok(gm_ckpt_save(path, &c, &err), err);
    assert_ok(gm_ckpt_load(path, &back, &err), err);
    assert_no_open_h5();
    assert_ckpt_equal(&c, &back);
    assert_int_equal(back.ncand, 0);
    assert_int_equal(back.nelites, 0);
    assert_int_equal(back.best_id, -1);
    assert_non_null(back.config);
    gm_ckpt_free(&back);
    gm_ckpt_free(&c);
}

static void test_empty(void **state)
{
    const fixture *f = *state;
    empty_round_trip(f, 2, "{}");
    empty_round_trip(f, 0, NULL); /* no tasks, no config text */
    empty_round_trip(f, GM_MF_MAX_TASKS, "");
}

/* The previous save stays as PATH.prev; a load of either gives what was saved. */
static void test_prev(void **state)
{
    const fixture *f = *state;
    char path[512], prev[520];
    path_in(f, "prev.h5", path, sizeof path);
    snprintf(prev, sizeof prev, "%s.prev", path);
    gm_ckpt a, b, c, back;
    gm_error err;
    make_ckpt(f, &a, 1);
    make_ckpt(f, &b, 2);
    make_ckpt(f, &c, 3);
    assert_ok(gm_ckpt_save(path, &a, &err), err);
    assert_ok(gm_ckpt_save(path, &b, &err), err);
    assert_ok(gm_ckpt_load(path, &back, &err), err);
    assert_ckpt_equal(&b, &back);
    gm_ckpt_free(&back);
    assert_ok(gm_ckpt_load(prev, &back, &err), err);
    assert_ckpt_equal(&a, &back);
    gm_ckpt_free(&back);
    assert_ok(gm_ckpt_save(path, &c, &err), err);
    assert_ok(gm_ckpt_load(prev, &back, &err), err);
    assert_ckpt_equal(&b, &back);
    gm_ckpt_free(&back);
    assert_ok(gm_ckpt_load(path, &back, &err), err);
    assert_ckpt_equal(&c, &back);
    gm_ckpt_free(&back);
    /* a refused save leaves both files alone */
    c.cand[2].id = 9;
    assert_int_equal(gm_ckpt_save(path, &c, &err), GM_EINVAL);
    assert_ok(gm_ckpt_load(prev, &back, &err), err);
    assert_ckpt_equal(&b, &back);
    gm_ckpt_free(&back);
    c.cand[2].id = 2;
    assert_no_open_h5();
    gm_ckpt_free(&a);
    gm_ckpt_free(&b);
    gm_ckpt_free(&c);
}

/* A load that must fail: the status is an error, the message names the file, nothing is left to free. */
static void assert_load_fails(const char *path, const char *text)
{
    gm_ckpt back;
    gm_error err;
    memset(&err, 0, sizeof err);
    gm_status st = gm_ckpt_load(path, &back, &err);
    if (st == GM_OK) fail_msg("%s loaded; expected an error with \"%s\"", path, text ? text : "");
    assert_msg_has(err, path);
    if (text) assert_msg_has(err, text);
    assert_null(back.cand);
    assert_null(back.config);
    assert_null(back.elite_w);
    assert_no_open_h5();
}

static void test_truncated(void **state)
{
    const fixture *f = *state;
    char path[512], prev[520];
    path_in(f, "cut.h5", path, sizeof path);
    snprintf(prev, sizeof prev, "%s.prev", path);
    gm_ckpt a, b, back;
    gm_error err;
    make_ckpt(f, &a, 1);
    make_ckpt(f, &b, 2);
    assert_ok(gm_ckpt_save(path, &a, &err), err);
    assert_ok(gm_ckpt_save(path, &b, &err), err);
    assert_int_equal(truncate(path, file_size(path) / 2), 0);
    assert_load_fails(path, "truncated");
    assert_ok(gm_ckpt_load(prev, &back, &err), err);
    assert_ckpt_equal(&a, &back);
    gm_ckpt_free(&back);
    /* cut just before the end too: the last object written is the checksum's neighbourhood */
    copy_file(prev, path);
    assert_int_equal(truncate(path, file_size(path) - 100), 0);
    assert_load_fails(path, NULL);
    /* missing, empty and foreign files */
    unlink(path);
    assert_load_fails(path, "no such file");
    FILE *e = fopen(path, "w");
    assert_non_null(e);
    fputs("{\"not\": \"hdf5\"}\n", e);
    fclose(e);
    assert_load_fails(path, "not a gmorph search checkpoint");
    assert_ok(gm_mfile_save(path, &a.best, &err), err);
    assert_load_fails(path, "not a gmorph search checkpoint");
    gm_ckpt_free(&a);
    gm_ckpt_free(&b);
}

/*
 * Garbage written into the file, in the middle and at positions across the
 * whole file (header block, HDF5 metadata, weights, padding): always an error
 * naming the file, never a crash (the sweep runs under ASan too).
 */
static void test_garbage(void **state)
{
    const fixture *f = *state;
    char path[512], good[512];
    path_in(f, "garbage.h5", path, sizeof path);
    path_in(f, "garbage-good.h5", good, sizeof good);
    gm_ckpt a;
    gm_error err;
    make_ckpt(f, &a, 0);
    assert_ok(gm_ckpt_save(good, &a, &err), err);
    const long size = file_size(good);
    unsigned char junk[64];
    for (int i = 0; i < 64; i++) junk[i] = (unsigned char)(0xA5 ^ (i * 37)); /* never 0 */
    copy_file(good, path);
    overwrite(path, size / 2, junk, sizeof junk);
    assert_load_fails(path, "do not match the checksum");
    enum { NPOS = 256 };
    for (int k = 0; k < NPOS; k++) {
        copy_file(good, path);
        flip(path, size * k / NPOS + k % 7, junk + k % 32, 1 + (size_t)(k % 32));
        assert_load_fails(path, NULL);
    }
    /* one flipped bit in the header's padding, and one in the last byte */
    const unsigned char bit = 0x10;
    copy_file(good, path);
    flip(path, 300, &bit, 1);
    assert_load_fails(path, "header block is damaged");
    copy_file(good, path);
    flip(path, size - 1, &bit, 1);
    assert_load_fails(path, "checksum");
    gm_ckpt_free(&a);
}

/*
 * Re-stamps the header block after a hand edit, as gm_ckpt.h documents it:
 * "gmorph-search VERSION\nbytes N\nfnv1a64 HASH\n", NUL-padded to 512 bytes.
 */
static void reseal(const char *path, int version)
{
    const long size = file_size(path);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, 512, SEEK_SET), 0);
    uint64_t h = 0xcbf29ce484222325ull;
    int ch;
    while ((ch = fgetc(f)) != EOF) h = (h ^ (uint64_t)ch) * 0x100000001b3ull;
    char block[512] = {0};
    snprintf(block, sizeof block, "gmorph-search %d\nbytes %ld\nfnv1a64 %016llx\n", version, size,
             (unsigned long long)h);
    assert_int_equal(fseek(f, 0, SEEK_SET), 0);
    assert_int_equal(fwrite(block, 1, sizeof block, f), sizeof block);
    assert_int_equal(fclose(f), 0);
}

/* A file edited by hand: the "format" or "version" attribute. */
static void edit_root(const char *path, const char *format, long long version)
{
    hid_t file;
    gm_error err;
    assert_ok(gm_h5_open(&file, path, 1, &err), err);
    if (format) assert_ok(gm_h5_attr_write_str(file, "format", format, &err), err);
    if (version) assert_ok(gm_h5_attr_write_int(file, "version", version, &err), err);
    gm_h5_close_file(file);
}

static void test_format_version(void **state)
{
    const fixture *f = *state;
    char path[512], good[512];
    path_in(f, "fmt.h5", path, sizeof path);
    path_in(f, "fmt-good.h5", good, sizeof good);
    gm_ckpt a, back;
    gm_error err;
    const int v = GM_CKPT_VERSION;
    make_ckpt(f, &a, 0);
    assert_ok(gm_ckpt_save(good, &a, &err), err);
    /* resealing by the documented recipe gives a file that loads */
    copy_file(good, path);
    reseal(path, v);
    assert_ok(gm_ckpt_load(path, &back, &err), err);
    gm_ckpt_free(&back);
    /* an edit without resealing is damage */
    edit_root(path, "gmorph-model", 0);
    assert_load_fails(path, "do not match the checksum");
    reseal(path, v);
    assert_load_fails(path, "not a gmorph search checkpoint (format \"gmorph-model\"");
    copy_file(good, path);
    edit_root(path, NULL, v + 1);
    reseal(path, v);
    assert_load_fails(path, "written by a newer gmorph (search checkpoint version 3");
    copy_file(good, path);
    reseal(path, v + 1); /* a newer header block: refused before its checksum is read */
    assert_load_fails(path, "written by a newer gmorph (search checkpoint version 3");
    copy_file(good, path);
    reseal(path, 0);
    assert_load_fails(path, "version 0 is not supported");
    copy_file(good, path);
    edit_root(path, NULL, -1);
    reseal(path, v);
    assert_load_fails(path, "version -1 is not supported");
    /* the header block and the attribute must name the same version */
    copy_file(good, path);
    reseal(path, 1);
    assert_load_fails(path, "its header block says version 1, its \"version\" attribute 2");
    copy_file(good, path);
    hid_t file;
    assert_ok(gm_h5_open(&file, path, 1, &err), err);
    assert_true(H5Adelete(file, "format") >= 0);
    gm_h5_close_file(file);
    reseal(path, v);
    assert_load_fails(path, "not a gmorph search checkpoint");
    gm_ckpt_free(&a);
}

/* The summary's attributes, which version 1 did not have. */
static const char *const SUMMARY_ATTRS[] = {"orig_val", "base_latency_ms", "ended", "final_latency_ms",
                                            "final_base_latency_ms", "final_speedup", "orig_test", "best_test"};

/*
 * A version-1 file (a version-2 one with the summary removed and the version
 * set back, as an older gmorph wrote it) loads: everything but the summary
 * comes back, and the summary is unknown. A version-2 file without it is damaged.
 */
static void test_version1(void **state)
{
    const fixture *f = *state;
    char path[512];
    path_in(f, "v1.h5", path, sizeof path);
    gm_ckpt a, back;
    gm_error err;
    make_ckpt(f, &a, 1);
    assert_ok(gm_ckpt_save(path, &a, &err), err);
    hid_t file;
    assert_ok(gm_h5_open(&file, path, 1, &err), err);
    for (size_t k = 0; k < sizeof SUMMARY_ATTRS / sizeof SUMMARY_ATTRS[0]; k++)
        assert_true(H5Adelete(file, SUMMARY_ATTRS[k]) >= 0);
    /* columns added later than the first files, whose absence reads as NaN */
    static const char *const later[] = {"candidates/finished_s", "candidates/drop0", "candidates/predicted"};
    for (size_t k = 0; k < sizeof later / sizeof later[0]; k++) assert_true(H5Ldelete(file, later[k], H5P_DEFAULT) >= 0);
    for (int i = 0; i < a.ncand; i++) a.cand[i].finished_s = a.cand[i].drop0 = a.cand[i].predicted = NAN;
    gm_h5_close_file(file);
    reseal(path, GM_CKPT_VERSION);
    assert_load_fails(path, "ended"); /* missing where version 2 requires it */
    edit_root(path, NULL, 1);
    reseal(path, 1);
    assert_ok(gm_ckpt_load(path, &back, &err), err);
    assert_no_open_h5();
    assert_int_equal(back.version, 1);
    gm_ckpt_summary_unknown(&a.summary); /* what a version-1 file cannot hold */
    assert_ckpt_equal(&a, &back);
    assert_int_equal(back.summary.ended, 0);
    assert_true(isnan(back.summary.orig_val[0]) && isnan(back.summary.final_speedup));
    /* saved again, it is the current version, summary attributes and all */
    assert_ok(gm_ckpt_save(path, &back, &err), err);
    gm_ckpt_free(&back);
    assert_ok(gm_ckpt_load(path, &back, &err), err);
    assert_int_equal(back.version, GM_CKPT_VERSION);
    assert_ckpt_equal(&a, &back);
    gm_ckpt_free(&back);
    gm_ckpt_free(&a);
}

/* Datasets replaced or rewritten by hand (then resealed): the reader's own checks. */
static void replace_dataset(const char *path, const char *name, hid_t type, hsize_t n, const void *data)
{
    hid_t file, g;
    gm_error err;
    assert_ok(gm_h5_open(&file, path, 1, &err), err);
    assert_ok(gm_h5_group_open(file, "candidates", &g, &err), err);
    assert_true(H5Ldelete(g, name, H5P_DEFAULT) >= 0);
    assert_ok(gm_h5_write(g, name, type, 1, &n, data, &err), err);
    H5Gclose(g);
    gm_h5_close_file(file);
    reseal(path, GM_CKPT_VERSION);
}

static void rewrite_column(const char *path, const char *name, const int32_t *data)
{
    hid_t file;
    gm_error err;
    assert_ok(gm_h5_open(&file, path, 1, &err), err);
    char full[64];
    snprintf(full, sizeof full, "candidates/%s", name);
    hid_t d = H5Dopen2(file, full, H5P_DEFAULT);
    assert_true(d >= 0);
    assert_true(H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    H5Dclose(d);
    gm_h5_close_file(file);
    reseal(path, GM_CKPT_VERSION);
}

static void edit_int_attr(const char *path, const char *name, const long long *v, int n)
{
    hid_t file;
    gm_error err;
    assert_ok(gm_h5_open(&file, path, 1, &err), err);
    assert_ok(gm_h5_attr_write_ints(file, name, v, n, &err), err);
    gm_h5_close_file(file);
    reseal(path, GM_CKPT_VERSION);
}

static void test_inconsistent(void **state)
{
    const fixture *f = *state;
    char path[512], good[512];
    path_in(f, "bad.h5", path, sizeof path);
    path_in(f, "bad-good.h5", good, sizeof good);
    gm_ckpt a;
    gm_error err;
    make_ckpt(f, &a, 0);
    assert_ok(gm_ckpt_save(good, &a, &err), err);

    /* a column one row short */
    int32_t w[NCAND] = {0};
    copy_file(good, path);
    replace_dataset(path, "worker", H5T_NATIVE_INT32, NCAND - 1, w);
    assert_load_fails(path, "\"worker\" has shape 6, expected 7");
    /* offsets that go backwards, or do not end at the end of enc */
    long long off[NCAND + 1] = {0};
    for (int i = 0; i < NCAND; i++) off[i + 1] = off[i] + a.cand[i].enc_len;
    off[3] = off[2] - 1;
    copy_file(good, path);
    replace_dataset(path, "enc_offset", H5T_NATIVE_LLONG, NCAND + 1, off);
    assert_load_fails(path, "enc_offset");
    off[3] = off[4];
    off[NCAND] += 5;
    copy_file(good, path);
    replace_dataset(path, "enc_offset", H5T_NATIVE_LLONG, NCAND + 1, off);
    assert_load_fails(path, "enc_offset ends at");
    /* learning-curve offsets that do not end at the end of the points */
    long long coff[NCAND + 1] = {0};
    for (int i = 0; i < NCAND; i++) coff[i + 1] = coff[i] + a.cand[i].ncurve;
    coff[NCAND] -= 1;
    copy_file(good, path);
    replace_dataset(path, "curve_offset", H5T_NATIVE_LLONG, NCAND + 1, coff);
    assert_load_fails(path, "curve_offset ends at");
    /* statuses: out of range; a replaced column without its names */
    int32_t s[NCAND], ids[NCAND];
    for (int i = 0; i < NCAND; i++) {
        s[i] = (int32_t)STATUS[i];
        ids[i] = i;
    }
    s[2] = 9;
    copy_file(good, path);
    rewrite_column(path, "status", s);
    assert_load_fails(path, "candidate 2: status 9 is not one of 0..5");
    copy_file(good, path);
    replace_dataset(path, "status", H5T_NATIVE_INT32, NCAND, s);
    assert_load_fails(path, "name its values");
    /* an elite or the best that did not pass */
    s[2] = (int32_t)STATUS[2];
    s[6] = GM_CAND_FAILED;
    copy_file(good, path);
    rewrite_column(path, "status", s);
    assert_load_fails(path, "elite 1: id 6 is not a passed candidate");
    const long long best = 3, elites[2] = {1, 1};
    copy_file(good, path);
    edit_int_attr(path, "best_id", &best, 1);
    assert_load_fails(path, "best_id 3 is neither -1 nor a passed candidate");
    copy_file(good, path);
    edit_int_attr(path, "elite_ids", elites, 2);
    assert_load_fails(path, "elite 1: id 1 is also elite 0");
    /* ids that are not row numbers */
    ids[4] = 5;
    copy_file(good, path);
    rewrite_column(path, "id", ids);
    assert_load_fails(path, "candidate row 4 has id 5");
    /* an elite's model missing, the best model missing */
    hid_t file;
    copy_file(good, path);
    assert_ok(gm_h5_open(&file, path, 1, &err), err);
    assert_true(H5Ldelete(file, "elites/6", H5P_DEFAULT) >= 0);
    gm_h5_close_file(file);
    reseal(path, GM_CKPT_VERSION);
    assert_load_fails(path, "group \"elites\" holds 1 models, but elite_ids names 2");
    copy_file(good, path);
    assert_ok(gm_h5_open(&file, path, 1, &err), err);
    assert_true(H5Ldelete(file, "pareto/6", H5P_DEFAULT) >= 0);
    gm_h5_close_file(file);
    reseal(path, GM_CKPT_VERSION);
    assert_load_fails(path, "group \"pareto\" holds 0 models, but pareto_ids names 1");
    copy_file(good, path);
    assert_ok(gm_h5_open(&file, path, 1, &err), err);
    assert_true(H5Ldelete(file, "best", H5P_DEFAULT) >= 0);
    gm_h5_close_file(file);
    reseal(path, GM_CKPT_VERSION);
    assert_load_fails(path, "best model");
    gm_ckpt_free(&a);
}

/* The writer refuses what the reader would refuse, with the path, and writes nothing. */
static void test_save_refusals(void **state)
{
    const fixture *f = *state;
    char path[512], tmp[520];
    path_in(f, "refused.h5", path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    gm_ckpt c;
    gm_error err;
    make_ckpt(f, &c, 0);
#define REFUSED(change, undo, text)                                         \
    do {                                                                    \
        change;                                                             \
        assert_int_equal(gm_ckpt_save(path, &c, &err), GM_EINVAL);          \
        assert_msg_has(err, path);                                          \
        assert_msg_has(err, text);                                          \
        assert_false(exists(path) || exists(tmp));                          \
        undo;                                                               \
    } while (0)
    REFUSED(c.cand[2].id = 5, c.cand[2].id = 2, "has id 5");
    REFUSED(c.cand[3].status = GM_CAND_NSTATUS, c.cand[3].status = STATUS[3], "status 6");
    REFUSED(c.cand[1].source = NCAND, c.cand[1].source = -1, "source");
    REFUSED(c.cand[0].worker = -2, c.cand[0].worker = -1, "worker");
    const int len4 = c.cand[4].enc_len;
    REFUSED(c.cand[4].enc_len = -1, c.cand[4].enc_len = len4, "encoding");
    REFUSED(c.elite_id[0] = 0, c.elite_id[0] = 1, "not a passed candidate");
    REFUSED(c.elite_id[0] = NCAND, c.elite_id[0] = 1, "not a passed candidate");
    REFUSED(c.pareto_id[0] = 2, c.pareto_id[0] = 6, "Pareto model 0: id 2 is not a passed candidate");
    REFUSED(c.elite_id[0] = 6, c.elite_id[0] = 1, "also elite");
    REFUSED(c.best_id = 2, c.best_id = 6, "best_id 2");
    REFUSED(c.best_id = NCAND, c.best_id = 6, "best_id");
    REFUSED(c.next_id = 3, c.next_id = NCAND, "next_id");
    REFUSED(c.iteration = -1, c.iteration = 4, "iteration");
    REFUSED(strcpy(c.tasks[0], "a,b"), strcpy(c.tasks[0], f->models[0].tasks[0].name), "task 0");
    REFUSED(c.tasks[1][0] = '\0', strcpy(c.tasks[1], f->models[1].tasks[0].name), "task 1");
    REFUSED(c.ntasks = GM_MF_MAX_TASKS + 1, c.ntasks = NMODELS, "tasks");
    REFUSED(c.nelites = NCAND + 1, c.nelites = 2, "elites");
    REFUSED(c.summary.ended = 2, c.summary.ended = 1, "ended is 2");
    char *cfg = c.config, *big = malloc(100001);
    assert_non_null(big);
    memset(big, 'x', 100000);
    big[100000] = '\0';
    REFUSED(c.config = big, c.config = cfg, "config text");
    /* the longest config a checkpoint holds (an HDF5 attribute of the oldest format) */
    big[60000] = '\0';
    c.config = big;
    gm_ckpt back;
    assert_ok(gm_ckpt_save(path, &c, &err), err);
    assert_ok(gm_ckpt_load(path, &back, &err), err);
    assert_string_equal(back.config, big);
    gm_ckpt_free(&back);
    unlink(path);
    unlink(tmp);
    char prev[520];
    snprintf(prev, sizeof prev, "%s.prev", path);
    unlink(prev);
    c.config = cfg;
    free(big);
    /* a model gm_mfile_write refuses: the message says which */
    c.elite_w[1].parent[0] = 3;
    assert_int_not_equal(gm_ckpt_save(path, &c, &err), GM_OK);
    assert_msg_has(err, "elite 6");
    assert_false(exists(path) || exists(tmp));
    c.elite_w[1].parent[0] = -1;
#undef REFUSED
    assert_ok(gm_ckpt_save(path, &c, &err), err);
    assert_no_open_h5();
    gm_ckpt_free(&c);
}

static void test_h5py(void **state)
{
    const fixture *f = *state;
    if (system("/usr/bin/python3 -c 'import h5py, numpy' >/dev/null 2>&1") != 0) {
        print_message("h5py or numpy missing under /usr/bin/python3: layout not cross-checked\n");
        skip();
    }
    char path[512], script[512], cmd[2048];
    path_in(f, "h5py.h5", path, sizeof path);
    path_in(f, "check.py", script, sizeof script);
    gm_ckpt c;
    gm_error err;
    make_ckpt(f, &c, 0);
    assert_ok(gm_ckpt_save(path, &c, &err), err);
    FILE *py = fopen(script, "w");
    assert_non_null(py);
    fputs("import sys, h5py, numpy as np\n"
          "f = h5py.File(sys.argv[1], 'r')\n"
          "s = lambda v: v.decode() if isinstance(v, bytes) else str(v)\n"
          "one = lambda a: int(np.asarray(a).reshape(-1)[0])\n"
          "assert s(f.attrs['format']) == 'gmorph-search' and one(f.attrs['version']) == 2\n"
          "assert f.attrs['orig_val'].shape == (2,) and one(f.attrs['ended']) == 1\n"
          "assert np.isnan(f.attrs['best_test'][0]) and f.attrs['final_speedup'].reshape(-1)[0] == 2.2\n"
          "st = f['candidates/status']\n"
          "assert st.dtype == np.int32 and list(st[...]) == [0, 1, 2, 3, 4, 5, 1], st[...]\n"
          "names = s(st.attrs['names']).split(',')\n"
          "assert [names[i] for i in st[...]] == "
          "['pending', 'passed', 'failed', 'aborted', 'filtered', 'duplicate', 'passed'], names\n"
          "assert list(f['candidates/id'][...]) == list(range(7))\n"
          "assert f['candidates/val'].shape == (7, 2) and np.isnan(f['candidates/val'][0, 0])\n"
          "assert f['candidates/location'].dtype == np.uint64\n"
          "off, enc = f['candidates/enc_offset'][...], f['candidates/enc'][...]\n"
          "assert off.shape == (8,) and off[0] == 0 and off[-1] == enc.shape[0] and enc.dtype == np.int32\n"
          "assert s(f.attrs['tasks']) == 'task_vgg11,task_resnet8', f.attrs['tasks']\n"
          "assert list(f.attrs['elite_ids']) == [1, 6] and one(f.attrs['best_id']) == 6\n"
          "assert len(s(f.attrs['config'])) == int(sys.argv[3])\n"
          "assert sorted(f['elites'].keys()) == ['1', '6']\n"
          "b = f['best']\n"
          "assert s(b.attrs['format']) == 'gmorph-model' and s(b.attrs['arch']) == 'fused'\n"
          "assert len(b['blocks']) == one(b.attrs['nblocks'])\n"
          "w = b['blocks/000/op00/weight']\n"
          "assert w.dtype == np.float32 and w[...].reshape(-1)[0] == np.float32(sys.argv[2])\n"
          "f.close()\n"
          "raw = open(sys.argv[1], 'rb').read()\n"
          "head = raw[:512].rstrip(b'\\0').decode().split('\\n')\n"
          "assert head[:2] == ['gmorph-search 2', 'bytes %d' % len(raw)], head\n"
          "h = 0xcbf29ce484222325\n"
          "for x in raw[512:]: h = ((h ^ x) * 0x100000001b3) & 0xffffffffffffffff\n"
          "assert head[2] == 'fnv1a64 %016x' % h, (head, h)\n",
          py);
    assert_int_equal(fclose(py), 0);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s %.9g %d", script, path, (double)c.best.params[0],
             (int)strlen(c.config));
    assert_int_equal(system(cmd), 0);
    /* the check can fail: a wrong expected weight is noticed */
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s %.9g %d 2>/dev/null", script, path,
             (double)c.best.params[0] + 1.0, (int)strlen(c.config));
    assert_int_not_equal(system(cmd), 0);
    gm_ckpt_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),    cmocka_unit_test(test_empty),
        cmocka_unit_test(test_prev),          cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_garbage),       cmocka_unit_test(test_format_version),
        cmocka_unit_test(test_version1),
        cmocka_unit_test(test_inconsistent),  cmocka_unit_test(test_save_refusals),
        cmocka_unit_test(test_h5py),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

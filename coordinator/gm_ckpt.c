#define _POSIX_C_SOURCE 200809L /* strnlen */
#include "gm_ckpt.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_fgraph.h"
#include "gm_h5.h"

static const char FORMAT_NAME[] = "gmorph-search";
enum { CKPT_VERSION = GM_CKPT_VERSION, CKPT_OLDEST = 1 };

/*
 * Bounds a file's numbers must respect before anything is sized from them (a
 * damaged file cannot ask for a huge allocation): far above any real search.
 */
enum {
    MAX_CAND = 1 << 24,
    MAX_ENC = GM_FG_ENC_HEADER + GM_FG_ENC_PER_NODE * GM_FG_MAX_NODES, /* one candidate's encoding */
    MAX_CONFIG = 60000 /* an HDF5 attribute in the oldest file format holds under 64 KiB */
};

static const char *const STATUS_NAMES[GM_CAND_NSTATUS] = {"pending",  "passed",   "failed",
                                                          "aborted", "filtered", "duplicate"};
/* The "names" attribute of /candidates/status: STATUS_NAMES joined by commas. */
static const char STATUS_LIST[] = "pending,passed,failed,aborted,filtered,duplicate";

const char *gm_cand_status_name(gm_cand_status s)
{
    return (int)s >= 0 && (int)s < GM_CAND_NSTATUS ? STATUS_NAMES[s] : "?";
}

void gm_ckpt_summary_unknown(gm_ckpt_summary *s)
{
    memset(s, 0, sizeof *s);
    s->base_latency_ms = s->final_latency_ms = s->final_base_latency_ms = s->final_speedup = NAN;
    for (int t = 0; t < GM_MF_MAX_TASKS; t++) s->orig_val[t] = s->orig_test[t] = s->best_test[t] = NAN;
}

void gm_ckpt_free(gm_ckpt *c)
{
    if (!c) return;
    free(c->config);
    for (int i = 0; c->cand && i < c->ncand; i++) {
        free(c->cand[i].enc);
        free(c->cand[i].curve);
    }
    free(c->cand);
    for (int k = 0; c->elite_w && k < c->nelites; k++) gm_mfile_free(&c->elite_w[k]);
    free(c->elite_w);
    free(c->elite_id);
    for (int k = 0; c->pareto_w && k < c->npareto; k++) gm_mfile_free(&c->pareto_w[k]);
    free(c->pareto_w);
    free(c->pareto_id);
    gm_mfile_free(&c->best);
    memset(c, 0, sizeof *c);
    c->best_id = -1;
}

/* ---- messages ------------------------------------------------------------------ */

/* "file: message". */
static gm_status fail(gm_error *err, gm_status code, const char *file, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static gm_status fail(gm_error *err, gm_status code, const char *file, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return gm_error_set(err, code, "%s: %s", file, msg);
}

/* "file: ctx: message" from an error of gm_h5 or gm_mfile, which named the file already. */
static gm_status wrap(gm_error *err, const gm_error *in, const char *file, const char *ctx)
{
    const char *msg = in->msg;
    size_t n = strlen(file);
    if (n && strncmp(msg, file, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ') msg += n + 2;
    return gm_error_set(err, in->code, "%s: %s%s%s", file, ctx, *ctx ? ": " : "", msg);
}

/* ---- validation, shared by save and load ------------------------------------------ */

static int passed_row(const gm_ckpt *c, int id)
{
    return id >= 0 && id < c->ncand && c->cand[id].status == GM_CAND_PASSED;
}

static gm_status check_row(const gm_ckpt *c, int i, gm_status code, const char *file, gm_error *err)
{
    const gm_ckpt_cand *r = &c->cand[i];
    if (r->id != i) return fail(err, code, file, "candidate row %d has id %d (ids are row numbers)", i, r->id);
    if ((int)r->status < 0 || (int)r->status >= GM_CAND_NSTATUS)
        return fail(err, code, file, "candidate %d: status %d is not one of 0..%d", i, (int)r->status,
                    GM_CAND_NSTATUS - 1);
    if (r->source < -1 || r->source >= c->ncand)
        return fail(err, code, file, "candidate %d: source %d is neither -1 nor a candidate", i, r->source);
    if (r->worker < -1) return fail(err, code, file, "candidate %d: worker %d is below -1", i, r->worker);
    if (r->enc_len < 0 || r->enc_len > MAX_ENC || (r->enc_len > 0 && !r->enc))
        return fail(err, code, file, "candidate %d: encoding of %d values (at most %d)", i, r->enc_len, MAX_ENC);
    if (r->ncurve < 0 || r->ncurve > GM_CKPT_MAX_CURVE || (r->ncurve > 0 && !r->curve))
        return fail(err, code, file, "candidate %d: learning curve of %d points (at most %d)", i, r->ncurve,
                    GM_CKPT_MAX_CURVE);
    return GM_OK;
}

static gm_status check_tasks(const gm_ckpt *c, gm_status code, const char *file, gm_error *err)
{
    if (c->ntasks < 0 || c->ntasks > GM_MF_MAX_TASKS)
        return fail(err, code, file, "%d tasks (at most %d)", c->ntasks, GM_MF_MAX_TASKS);
    for (int t = 0; t < c->ntasks; t++) {
        size_t n = strnlen(c->tasks[t], sizeof c->tasks[t]);
        if (n == 0 || n == sizeof c->tasks[t] || strchr(c->tasks[t], ','))
            return fail(err, code, file, "task %d: a name must be 1..%zu characters without commas", t,
                        sizeof c->tasks[t] - 1);
    }
    return GM_OK;
}

/*
 * Everything the search relies on when it resumes: the writer refuses what the
 * reader would refuse, so every checkpoint written can be loaded back.
 */
/* A set of kept models (elites, the Pareto set): n distinct passed rows, with weights. */
static gm_status check_set(const gm_ckpt *c, const int *id, const gm_mfile *w, int n, const char *what, gm_status code,
                           const char *file, gm_error *err)
{
    if (n < 0 || n > c->ncand || (n > 0 && (!id || !w)))
        return fail(err, code, file, "%d %ss for %d candidates", n, what, c->ncand);
    for (int k = 0; k < n; k++) {
        if (!passed_row(c, id[k])) return fail(err, code, file, "%s %d: id %d is not a passed candidate", what, k, id[k]);
        for (int j = 0; j < k; j++)
            if (id[j] == id[k]) return fail(err, code, file, "%s %d: id %d is also %s %d", what, k, id[k], what, j);
    }
    return GM_OK;
}

static gm_status check(const gm_ckpt *c, gm_status code, const char *file, gm_error *err)
{
    gm_status st = check_tasks(c, code, file, err);
    if (st != GM_OK) return st;
    if (c->config && strlen(c->config) > MAX_CONFIG)
        return fail(err, code, file, "the config text is %zu bytes (at most %d)", strlen(c->config), MAX_CONFIG);
    if (c->ncand < 0 || c->ncand > MAX_CAND || (c->ncand > 0 && !c->cand))
        return fail(err, code, file, "%d candidates (at most %d)", c->ncand, MAX_CAND);
    if (c->iteration < 0) return fail(err, code, file, "iteration %d is negative", c->iteration);
    if (c->next_id < c->ncand)
        return fail(err, code, file, "next_id %d is below the %d candidates (ids would repeat)", c->next_id,
                    c->ncand);
    for (int i = 0; i < c->ncand; i++)
        if ((st = check_row(c, i, code, file, err)) != GM_OK) return st;
    if ((st = check_set(c, c->elite_id, c->elite_w, c->nelites, "elite", code, file, err)) != GM_OK) return st;
    if ((st = check_set(c, c->pareto_id, c->pareto_w, c->npareto, "Pareto model", code, file, err)) != GM_OK)
        return st;
    if (c->best_id != -1 && !passed_row(c, c->best_id))
        return fail(err, code, file, "best_id %d is neither -1 nor a passed candidate", c->best_id);
    if (c->summary.ended != 0 && c->summary.ended != 1)
        return fail(err, code, file, "ended is %d, neither 0 nor 1", c->summary.ended);
    return GM_OK;
}

/* ---- the header block: size and checksum, checked before HDF5 reads anything ---- */

/*
 * HDF5's oldest format has no checksums, and HDF5 1.10 reads damaged metadata
 * out of bounds (ASan finds it) before it notices anything; so the file's bytes
 * are hashed as a whole and checked before HDF5 opens it. FNV-1a 64: short,
 * standard, a few lines in any language to check a file by hand.
 */
enum { HEADER_BYTES = 512 };

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* The FNV-1a 64 hash of f's bytes after the header block, and f's size. */
static gm_status hash_body(FILE *f, uint64_t *h, long long *size, const char *file, gm_error *err)
{
    enum { CHUNK = 1 << 16 };
    *h = 0xcbf29ce484222325ull;
    *size = HEADER_BYTES;
    unsigned char *buf = malloc(CHUNK);
    if (!buf) return fail(err, GM_ENOMEM, file, "out of memory");
    gm_status st = GM_OK;
    if (fseek(f, HEADER_BYTES, SEEK_SET) != 0) st = fail(err, GM_EIO, file, "cannot seek: %s", strerror(errno));
    size_t n;
    while (st == GM_OK && (n = fread(buf, 1, CHUNK, f)) > 0) {
        *h = fnv1a(*h, buf, n);
        *size += (long long)n;
    }
    if (st == GM_OK && ferror(f)) st = fail(err, GM_EIO, file, "read error: %s", strerror(errno));
    free(buf);
    return st;
}

/* Fills the header block of a closed, complete file. */
static gm_status stamp(const char *file, gm_error *err)
{
    FILE *f = fopen(file, "r+b");
    if (!f) return fail(err, GM_EIO, file, "cannot reopen: %s", strerror(errno));
    uint64_t h;
    long long size;
    gm_status st = hash_body(f, &h, &size, file, err);
    char block[HEADER_BYTES] = {0};
    snprintf(block, sizeof block, "%s %d\nbytes %lld\nfnv1a64 %016llx\n", FORMAT_NAME, CKPT_VERSION, size,
             (unsigned long long)h);
    if (st == GM_OK && (fseek(f, 0, SEEK_SET) != 0 || fwrite(block, 1, sizeof block, f) != sizeof block))
        st = fail(err, GM_EIO, file, "cannot write the header block: %s", strerror(errno));
    if (fclose(f) != 0 && st == GM_OK) st = fail(err, GM_EIO, file, "closing failed: %s", strerror(errno));
    return st;
}

/* A version this build reads, or an error that says which it reads. */
static gm_status check_version(long long v, const char *file, gm_error *err)
{
    if (v > CKPT_VERSION)
        return fail(err, GM_EFORMAT, file,
                    "written by a newer gmorph (search checkpoint version %lld; this build reads versions %d to %d)",
                    v, CKPT_OLDEST, CKPT_VERSION);
    if (v < CKPT_OLDEST)
        return fail(err, GM_EFORMAT, file,
                    "search checkpoint version %lld is not supported (this build reads versions %d to %d)", v,
                    CKPT_OLDEST, CKPT_VERSION);
    return GM_OK;
}

/* "gmorph-search VERSION\nbytes N\nfnv1a64 HASH\n": *version, *bytes = N, *sum = HASH. */
static gm_status parse_header(const char *block, size_t got, int *version_out, long long *bytes,
                              unsigned long long *sum, const char *file, gm_error *err)
{
    const size_t nf = strlen(FORMAT_NAME);
    int version = 0, end = -1;
    if (got < HEADER_BYTES || strncmp(block, FORMAT_NAME, nf) != 0 || block[nf] != ' ')
        return fail(err, GM_EFORMAT, file, "not a gmorph search checkpoint (no \"%s\" header block)", FORMAT_NAME);
    if (sscanf(block + nf, " %d", &version) != 1)
        return fail(err, GM_EFORMAT, file, "the header block is damaged (no version)");
    gm_status st = check_version(version, file, err);
    if (st != GM_OK) return st;
    *version_out = version;
    if (sscanf(block + nf, " %d\nbytes %lld\nfnv1a64 %16llx\n%n", &version, bytes, sum, &end) != 3 || end < 0)
        return fail(err, GM_EFORMAT, file, "the header block is damaged (no size or checksum)");
    /* the padding too: every byte of the file is checked */
    for (size_t i = nf + (size_t)end; i < HEADER_BYTES; i++)
        if (block[i] != '\0') return fail(err, GM_EFORMAT, file, "the header block is damaged (at byte %zu)", i);
    return GM_OK;
}

/* The header block and the bytes it describes, before HDF5 sees the file; *version is the block's. */
static gm_status verify(const char *file, int *version, gm_error *err)
{
    FILE *f = fopen(file, "rb");
    if (!f) return fail(err, GM_EIO, file, "%s", errno == ENOENT ? "no such file" : strerror(errno));
    char block[HEADER_BYTES + 1];
    size_t got = fread(block, 1, HEADER_BYTES, f);
    block[got] = '\0';
    long long bytes = 0, size = 0;
    unsigned long long want = 0;
    uint64_t h = 0;
    gm_status st = parse_header(block, got, version, &bytes, &want, file, err);
    if (st == GM_OK) st = hash_body(f, &h, &size, file, err);
    fclose(f);
    if (st != GM_OK) return st;
    if (size < bytes) return fail(err, GM_EFORMAT, file, "truncated: %lld of its %lld bytes", size, bytes);
    if (size != bytes) return fail(err, GM_EFORMAT, file, "damaged: %lld bytes, its header says %lld", size, bytes);
    if (h != want) return fail(err, GM_EFORMAT, file, "damaged: its bytes do not match the checksum in its header");
    return GM_OK;
}

/* ---- candidates table: one column per field ---------------------------------------- */

typedef enum { COL_I32, COL_STATUS, COL_U64, COL_I64, COL_F64 } col_kind;

typedef struct {
    const char *name;
    col_kind kind;
    size_t off;   /* of the field in gm_ckpt_cand */
    int optional; /* added after the first files: NaN (float64 only) where a file lacks it */
} column;

#define COLUMN(field, kind) {#field, kind, offsetof(gm_ckpt_cand, field), 0}
#define LATER(field) {#field, COL_F64, offsetof(gm_ckpt_cand, field), 1}
static const column COLUMNS[] = {
    COLUMN(id, COL_I32),          COLUMN(iteration, COL_I32),       COLUMN(source, COL_I32),
    COLUMN(status, COL_STATUS),   COLUMN(worker, COL_I32),          COLUMN(nodes, COL_I32),
    COLUMN(epochs, COL_I32),      COLUMN(location, COL_U64),        COLUMN(topology, COL_U64),
    COLUMN(params, COL_I64),      COLUMN(mflops, COL_F64),          COLUMN(latency_ms, COL_F64),
    COLUMN(base_latency_ms, COL_F64), COLUMN(speedup, COL_F64),     COLUMN(worst_drop, COL_F64),
    COLUMN(seconds, COL_F64),     LATER(finished_s),                LATER(drop0),
    LATER(predicted),
};
#undef COLUMN
#undef LATER
enum { NCOLUMNS = sizeof COLUMNS / sizeof COLUMNS[0] };

static hid_t col_type(col_kind k)
{
    switch (k) {
    case COL_I32:
    case COL_STATUS: return H5T_NATIVE_INT32;
    case COL_U64: return H5T_NATIVE_UINT64;
    case COL_I64: return H5T_NATIVE_LLONG;
    default: return H5T_NATIVE_DOUBLE;
    }
}

/* Column values of n rows into buf (8 bytes a value at most). */
static void gather(const column *col, const gm_ckpt_cand *rows, int n, void *buf)
{
    for (int i = 0; i < n; i++) {
        const char *f = (const char *)&rows[i] + col->off;
        switch (col->kind) {
        case COL_I32: ((int32_t *)buf)[i] = *(const int *)(const void *)f; break;
        case COL_STATUS: ((int32_t *)buf)[i] = (int32_t)*(const gm_cand_status *)(const void *)f; break;
        case COL_U64: ((uint64_t *)buf)[i] = *(const uint64_t *)(const void *)f; break;
        case COL_I64: ((long long *)buf)[i] = *(const long long *)(const void *)f; break;
        case COL_F64: ((double *)buf)[i] = *(const double *)(const void *)f; break;
        }
    }
}

static void scatter(const column *col, gm_ckpt_cand *rows, int n, const void *buf)
{
    for (int i = 0; i < n; i++) {
        char *f = (char *)&rows[i] + col->off;
        switch (col->kind) {
        case COL_I32: *(int *)(void *)f = ((const int32_t *)buf)[i]; break;
        case COL_STATUS: *(gm_cand_status *)(void *)f = (gm_cand_status)((const int32_t *)buf)[i]; break;
        case COL_U64: *(uint64_t *)(void *)f = ((const uint64_t *)buf)[i]; break;
        case COL_I64: *(long long *)(void *)f = ((const long long *)buf)[i]; break;
        case COL_F64: *(double *)(void *)f = ((const double *)buf)[i]; break;
        }
    }
}

/* ---- save --------------------------------------------------------------------------- */

/* Every candidate's learning curve: offsets by candidate, points as rows. */
static gm_status write_curves(hid_t g, const gm_ckpt *c, gm_error *e)
{
    const int n = c->ncand;
    const size_t cols = GM_CKPT_CURVE_COLS(c->ntasks);
    long long *off = malloc(sizeof(long long) * ((size_t)n + 1));
    if (!off) return gm_error_set(e, GM_ENOMEM, "out of memory for the learning curves");
    off[0] = 0;
    for (int i = 0; i < n; i++) off[i + 1] = off[i] + c->cand[i].ncurve;
    double *pts = malloc(sizeof(double) * ((size_t)off[n] * cols + 1));
    if (!pts) {
        free(off);
        return gm_error_set(e, GM_ENOMEM, "out of memory for the learning curves");
    }
    for (int i = 0; i < n; i++)
        if (c->cand[i].ncurve > 0)
            memcpy(pts + (size_t)off[i] * cols, c->cand[i].curve, sizeof(double) * (size_t)c->cand[i].ncurve * cols);
    hsize_t no = (hsize_t)n + 1, dims[2] = {(hsize_t)off[n], (hsize_t)cols};
    gm_status st = gm_h5_write(g, "curve_offset", H5T_NATIVE_LLONG, 1, &no, off, e);
    if (st == GM_OK) st = gm_h5_write(g, "curve", H5T_NATIVE_DOUBLE, 2, dims, pts, e);
    free(off);
    free(pts);
    return st;
}

static gm_status write_candidates(hid_t f, const gm_ckpt *c, const char *file, gm_error *err)
{
    const int n = c->ncand, nt = c->ntasks;
    long long total = 0;
    for (int i = 0; i < n; i++) total += c->cand[i].enc_len;
    /* One buffer serves every column: 8 bytes per value, the widest of them. */
    size_t cap = (size_t)n * (size_t)(nt > 1 ? nt : 1);
    if (cap < (size_t)n + 1) cap = (size_t)n + 1;
    if (cap < (size_t)total) cap = (size_t)total;
    void *buf = malloc(8 * (cap + 1));
    if (!buf) return fail(err, GM_ENOMEM, file, "out of memory for the candidates table");
    gm_error e;
    hid_t g;
    gm_status st = gm_h5_group_create(f, "candidates", &g, &e);
    if (st != GM_OK) {
        free(buf);
        return wrap(err, &e, file, "");
    }
    hsize_t dims[2] = {(hsize_t)n, (hsize_t)nt};
    for (int k = 0; st == GM_OK && k < NCOLUMNS; k++) {
        gather(&COLUMNS[k], c->cand, n, buf);
        st = gm_h5_write(g, COLUMNS[k].name, col_type(COLUMNS[k].kind), 1, dims, buf, &e);
    }
    if (st == GM_OK) {
        hid_t d = H5Dopen2(g, "status", H5P_DEFAULT);
        st = d >= 0 ? gm_h5_attr_write_str(d, "names", STATUS_LIST, &e)
                    : gm_error_set(&e, GM_EIO, "cannot reopen dataset \"status\"");
        if (d >= 0) H5Dclose(d);
    }
    if (st == GM_OK) {
        double *v = buf;
        for (int i = 0; i < n; i++)
            for (int t = 0; t < nt; t++) v[(size_t)i * (size_t)nt + (size_t)t] = c->cand[i].val[t];
        st = gm_h5_write(g, "val", H5T_NATIVE_DOUBLE, 2, dims, v, &e);
    }
    if (st == GM_OK) {
        long long *off = buf;
        off[0] = 0;
        for (int i = 0; i < n; i++) off[i + 1] = off[i] + c->cand[i].enc_len;
        hsize_t no = (hsize_t)n + 1;
        st = gm_h5_write(g, "enc_offset", H5T_NATIVE_LLONG, 1, &no, off, &e);
    }
    if (st == GM_OK) {
        int32_t *enc = buf;
        size_t at = 0;
        for (int i = 0; i < n; i++) {
            if (c->cand[i].enc_len > 0) memcpy(enc + at, c->cand[i].enc, sizeof(int32_t) * (size_t)c->cand[i].enc_len);
            at += (size_t)c->cand[i].enc_len;
        }
        hsize_t ne = (hsize_t)total;
        st = gm_h5_write(g, "enc", H5T_NATIVE_INT32, 1, &ne, enc, &e);
    }
    if (st == GM_OK) st = write_curves(g, c, &e);
    H5Gclose(g);
    free(buf);
    return st == GM_OK ? GM_OK : wrap(err, &e, file, "candidates");
}

/* A model into a new group name under loc. */
static gm_status write_model(hid_t loc, const char *name, const gm_mfile *m, const char *file, const char *ctx,
                             gm_error *err)
{
    gm_error e;
    hid_t g;
    if (gm_h5_group_create(loc, name, &g, &e) != GM_OK) return wrap(err, &e, file, ctx);
    gm_status st = gm_mfile_write(g, m, &e);
    H5Gclose(g);
    return st == GM_OK ? GM_OK : wrap(err, &e, file, ctx);
}

/* A set of kept models as a group of models named by candidate id (the ids are a root attribute). */
static gm_status write_set(hid_t f, const char *group, const int *id, const gm_mfile *w, int n, const char *what,
                           const char *file, gm_error *err)
{
    gm_error e;
    hid_t g;
    if (gm_h5_group_create(f, group, &g, &e) != GM_OK) return wrap(err, &e, file, "");
    gm_status st = GM_OK;
    for (int k = 0; st == GM_OK && k < n; k++) {
        char name[32], ctx[64];
        snprintf(name, sizeof name, "%d", id[k]);
        snprintf(ctx, sizeof ctx, "%s %d", what, id[k]);
        st = write_model(g, name, &w[k], file, ctx, err);
    }
    H5Gclose(g);
    return st;
}

static gm_status write_models(hid_t f, const gm_ckpt *c, const char *file, gm_error *err)
{
    gm_status st = write_set(f, "elites", c->elite_id, c->elite_w, c->nelites, "elite", file, err);
    if (st == GM_OK) st = write_set(f, "pareto", c->pareto_id, c->pareto_w, c->npareto, "Pareto model", file, err);
    if (st == GM_OK && c->best_id >= 0) st = write_model(f, "best", &c->best, file, "best model", err);
    return st;
}

/* Version 2's root attributes for the report (gm_ckpt_summary), named as in gm_ckpt.h. */
static gm_status write_summary(hid_t f, const gm_ckpt_summary *s, int ntasks, gm_error *e)
{
    gm_status st = gm_h5_attr_write_floats(f, "orig_val", s->orig_val, ntasks, e);
    if (st == GM_OK) st = gm_h5_attr_write_float(f, "base_latency_ms", s->base_latency_ms, e);
    if (st == GM_OK) st = gm_h5_attr_write_int(f, "ended", s->ended, e);
    if (st == GM_OK) st = gm_h5_attr_write_float(f, "final_latency_ms", s->final_latency_ms, e);
    if (st == GM_OK) st = gm_h5_attr_write_float(f, "final_base_latency_ms", s->final_base_latency_ms, e);
    if (st == GM_OK) st = gm_h5_attr_write_float(f, "final_speedup", s->final_speedup, e);
    if (st == GM_OK) st = gm_h5_attr_write_floats(f, "orig_test", s->orig_test, ntasks, e);
    if (st == GM_OK) st = gm_h5_attr_write_floats(f, "best_test", s->best_test, ntasks, e);
    return st;
}

static gm_status write_root(hid_t f, const gm_ckpt *c, const char *file, gm_error *err)
{
    char tasks[GM_MF_MAX_TASKS * 64 + 1] = "";
    for (int t = 0; t < c->ntasks; t++) {
        if (t) strcat(tasks, ",");
        strcat(tasks, c->tasks[t]); /* check_tasks bounded every name */
    }
    long long rng[4], *elites = malloc(sizeof(long long) * (size_t)(c->nelites + 1)),
                      *pareto = malloc(sizeof(long long) * (size_t)(c->npareto + 1));
    if (!elites || !pareto) {
        free(elites);
        free(pareto);
        return fail(err, GM_ENOMEM, file, "out of memory");
    }
    memcpy(rng, c->rng, sizeof rng); /* each uint64's bits, as the int64 the layout names */
    for (int k = 0; k < c->nelites; k++) elites[k] = c->elite_id[k];
    for (int k = 0; k < c->npareto; k++) pareto[k] = c->pareto_id[k];
    gm_error e;
    gm_status st = gm_h5_attr_write_str(f, "format", FORMAT_NAME, &e);
    if (st == GM_OK) st = gm_h5_attr_write_int(f, "version", CKPT_VERSION, &e);
    if (st == GM_OK) st = gm_h5_attr_write_str(f, "config", c->config ? c->config : "", &e);
    if (st == GM_OK) st = gm_h5_attr_write_str(f, "tasks", tasks, &e);
    if (st == GM_OK) st = gm_h5_attr_write_int(f, "iteration", c->iteration, &e);
    if (st == GM_OK) st = gm_h5_attr_write_int(f, "next_id", c->next_id, &e);
    if (st == GM_OK) st = gm_h5_attr_write_float(f, "temperature", c->temperature, &e);
    if (st == GM_OK) st = gm_h5_attr_write_float(f, "last_drop", c->last_drop, &e);
    if (st == GM_OK) st = gm_h5_attr_write_float(f, "elapsed_s", c->elapsed_s, &e);
    if (st == GM_OK) st = gm_h5_attr_write_ints(f, "rng", rng, 4, &e);
    if (st == GM_OK) st = gm_h5_attr_write_int(f, "best_id", c->best_id, &e);
    if (st == GM_OK) st = gm_h5_attr_write_ints(f, "elite_ids", elites, c->nelites, &e);
    if (st == GM_OK) st = gm_h5_attr_write_ints(f, "pareto_ids", pareto, c->npareto, &e);
    if (st == GM_OK) st = write_summary(f, &c->summary, c->ntasks, &e);
    free(elites);
    free(pareto);
    return st == GM_OK ? GM_OK : wrap(err, &e, file, "");
}

gm_status gm_ckpt_save(const char *path, const gm_ckpt *c, gm_error *err)
{
    gm_status st = check(c, GM_EINVAL, path, err);
    if (st != GM_OK) return st;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    hid_t f;
    if ((st = gm_h5_create_ub(&f, path, HEADER_BYTES, err)) != GM_OK) return st;
    st = write_root(f, c, tmp, err);
    if (st == GM_OK) st = write_candidates(f, c, tmp, err);
    if (st == GM_OK) st = write_models(f, c, tmp, err);
    if (st != GM_OK) {
        gm_h5_discard(f, path);
        return st;
    }
    if ((st = gm_h5_close_tmp(f, path, err)) != GM_OK) return st;
    if ((st = stamp(tmp, err)) != GM_OK) {
        gm_h5_discard(-1, path);
        return st;
    }
    return gm_h5_install(path, 1, err);
}

/* ---- load ------------------------------------------------------------------------------ */

/* An integer attribute that must fit in [lo, hi]. */
static gm_status read_int(hid_t obj, const char *name, long long lo, long long hi, long long *v, const char *file,
                          gm_error *err)
{
    gm_error e;
    if (gm_h5_attr_read_int(obj, name, v, &e) != GM_OK) return wrap(err, &e, file, "");
    if (*v < lo || *v > hi)
        return fail(err, GM_EFORMAT, file, "attribute \"%s\" is %lld, outside %lld..%lld", name, *v, lo, hi);
    return GM_OK;
}

/*
 * format and version first: a foreign or newer file gets a message saying so,
 * not a list of what it lacks. The attribute must repeat the header block's version.
 */
static gm_status read_identity(hid_t f, int header_version, const char *file, gm_error *err)
{
    char fmt[64];
    gm_error e;
    if (gm_h5_attr_read_str(f, "format", fmt, sizeof fmt, &e) != GM_OK)
        return fail(err, GM_EFORMAT, file, "not a gmorph search checkpoint (no readable \"format\" attribute)");
    if (strcmp(fmt, FORMAT_NAME) != 0)
        return fail(err, GM_EFORMAT, file, "not a gmorph search checkpoint (format \"%s\", expected \"%s\")", fmt,
                    FORMAT_NAME);
    long long v;
    if (gm_h5_attr_read_int(f, "version", &v, &e) != GM_OK) return wrap(err, &e, file, "");
    gm_status st = check_version(v, file, err);
    if (st == GM_OK && v != header_version)
        st = fail(err, GM_EFORMAT, file, "its header block says version %d, its \"version\" attribute %lld",
                  header_version, v);
    return st;
}

static gm_status read_task_names(hid_t f, gm_ckpt *c, const char *file, gm_error *err)
{
    char s[GM_MF_MAX_TASKS * 64 + 1];
    gm_error e;
    if (gm_h5_attr_read_str(f, "tasks", s, sizeof s, &e) != GM_OK) return wrap(err, &e, file, "");
    c->ntasks = 0;
    const char *p = s;
    while (*s) { /* "" is no tasks */
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (c->ntasks == GM_MF_MAX_TASKS || n == 0 || n >= sizeof c->tasks[0])
            return fail(err, GM_EFORMAT, file,
                        "attribute \"tasks\" is not up to %d comma-separated names of 1..%zu characters",
                        GM_MF_MAX_TASKS, sizeof c->tasks[0] - 1);
        memcpy(c->tasks[c->ntasks], p, n);
        c->tasks[c->ntasks++][n] = '\0';
        if (!end) break;
        p = end + 1;
    }
    return GM_OK;
}

/* Version 2's summary attributes; a version-1 file has none, and its summary stays unknown. */
static gm_status read_summary(hid_t f, gm_ckpt *c, const char *file, gm_error *err)
{
    gm_ckpt_summary *s = &c->summary;
    gm_ckpt_summary_unknown(s);
    if (c->version < 2) return GM_OK;
    gm_error e;
    long long ended;
    gm_status st = read_int(f, "ended", 0, 1, &ended, file, err);
    if (st != GM_OK) return st;
    s->ended = (int)ended;
    st = gm_h5_attr_read_floats(f, "orig_val", s->orig_val, c->ntasks, &e);
    if (st == GM_OK) st = gm_h5_attr_read_float(f, "base_latency_ms", &s->base_latency_ms, &e);
    if (st == GM_OK) st = gm_h5_attr_read_float(f, "final_latency_ms", &s->final_latency_ms, &e);
    if (st == GM_OK) st = gm_h5_attr_read_float(f, "final_base_latency_ms", &s->final_base_latency_ms, &e);
    if (st == GM_OK) st = gm_h5_attr_read_float(f, "final_speedup", &s->final_speedup, &e);
    if (st == GM_OK) st = gm_h5_attr_read_floats(f, "orig_test", s->orig_test, c->ntasks, &e);
    if (st == GM_OK) st = gm_h5_attr_read_floats(f, "best_test", s->best_test, c->ntasks, &e);
    return st == GM_OK ? GM_OK : wrap(err, &e, file, "");
}

/* A kept set's ids (an attribute; optional: absent is empty) and room for its models. */
static gm_status read_set_ids(hid_t f, const char *attr, int required, int **id, gm_mfile **w, int *n, const char *file,
                              gm_error *err)
{
    if (!required && !H5Aexists(f, attr)) return GM_OK; /* written before the set existed */
    long m = gm_h5_attr_count(f, attr);
    if (m < 0 || m > MAX_CAND)
        return fail(err, GM_EFORMAT, file, "attribute \"%s\" is missing or holds %ld values", attr, m);
    gm_error e;
    gm_status st = GM_OK;
    long long *ids = malloc(sizeof(long long) * (size_t)(m + 1));
    *id = malloc(sizeof(int) * (size_t)(m + 1));
    *w = calloc((size_t)m + 1, sizeof(gm_mfile));
    if (!ids || !*id || !*w) st = fail(err, GM_ENOMEM, file, "out of memory for %ld models", m);
    else if (gm_h5_attr_read_ints(f, attr, ids, (int)m, &e) != GM_OK) st = wrap(err, &e, file, "");
    for (long k = 0; st == GM_OK && k < m; k++) {
        if (ids[k] < 0 || ids[k] > INT_MAX)
            st = fail(err, GM_EFORMAT, file, "%s[%ld]: id %lld is not a candidate", attr, k, ids[k]);
        else (*id)[k] = (int)ids[k];
    }
    if (st == GM_OK) *n = (int)m;
    free(ids);
    return st;
}

static gm_status read_root(hid_t f, gm_ckpt *c, const char *file, gm_error *err)
{
    gm_error e;
    long long v[3];
    gm_status st = gm_h5_attr_read_str_alloc(f, "config", &c->config, &e);
    if (st != GM_OK) return wrap(err, &e, file, "");
    if ((st = read_task_names(f, c, file, err)) != GM_OK) return st;
    if ((st = read_int(f, "iteration", 0, INT_MAX, &v[0], file, err)) != GM_OK) return st;
    if ((st = read_int(f, "next_id", 0, INT_MAX, &v[1], file, err)) != GM_OK) return st;
    if ((st = read_int(f, "best_id", -1, INT_MAX, &v[2], file, err)) != GM_OK) return st;
    c->iteration = (int)v[0];
    c->next_id = (int)v[1];
    c->best_id = (int)v[2];
    long long rng[4];
    st = gm_h5_attr_read_float(f, "temperature", &c->temperature, &e);
    if (st == GM_OK) st = gm_h5_attr_read_float(f, "last_drop", &c->last_drop, &e);
    if (st == GM_OK) st = gm_h5_attr_read_float(f, "elapsed_s", &c->elapsed_s, &e);
    if (st == GM_OK) st = gm_h5_attr_read_ints(f, "rng", rng, 4, &e);
    if (st != GM_OK) return wrap(err, &e, file, "");
    memcpy(c->rng, rng, sizeof c->rng);

    st = read_set_ids(f, "elite_ids", 1, &c->elite_id, &c->elite_w, &c->nelites, file, err);
    if (st == GM_OK) st = read_set_ids(f, "pareto_ids", 0, &c->pareto_id, &c->pareto_w, &c->npareto, file, err);
    return st == GM_OK ? read_summary(f, c, file, err) : st;
}

/* Offsets 0 = o[0] <= o[1] <= ... <= o[n] = total, each step at most MAX_ENC. */
static gm_status check_offsets(const long long *o, int n, hsize_t total, const char *file, gm_error *err)
{
    if (o[0] != 0) return fail(err, GM_EFORMAT, file, "candidates: enc_offset[0] is %lld, not 0", o[0]);
    for (int i = 0; i < n; i++)
        if (o[i + 1] < o[i] || o[i + 1] - o[i] > MAX_ENC)
            return fail(err, GM_EFORMAT, file,
                        "candidates: enc_offset %lld..%lld of candidate %d is not an encoding of 0..%d values", o[i],
                        o[i + 1], i, MAX_ENC);
    if ((unsigned long long)o[n] != (unsigned long long)total)
        return fail(err, GM_EFORMAT, file, "candidates: enc_offset ends at %lld, but enc holds %llu values", o[n],
                    (unsigned long long)total);
    return GM_OK;
}

static gm_status read_encodings(hid_t g, gm_ckpt *c, void *buf, const char *file, gm_error *err)
{
    const int n = c->ncand;
    gm_error e;
    long long *off = buf;
    hsize_t no = (hsize_t)n + 1, dims[GM_H5_MAX_RANK];
    int rank;
    if (gm_h5_read(g, "enc_offset", H5T_NATIVE_LLONG, 1, &no, off, &e) != GM_OK ||
        gm_h5_shape(g, "enc", &rank, dims, &e) != GM_OK)
        return wrap(err, &e, file, "candidates");
    if (rank != 1) return fail(err, GM_EFORMAT, file, "candidates: dataset \"enc\" has rank %d, not 1", rank);
    gm_status st = check_offsets(off, n, dims[0], file, err);
    if (st != GM_OK) return st;
    int32_t *enc = malloc(sizeof(int32_t) * (size_t)(dims[0] + 1)); /* <= n * MAX_ENC: checked above */
    if (!enc) return fail(err, GM_ENOMEM, file, "out of memory for %llu encoding values", (unsigned long long)dims[0]);
    if (gm_h5_read(g, "enc", H5T_NATIVE_INT32, 1, dims, enc, &e) != GM_OK) st = wrap(err, &e, file, "candidates");
    for (int i = 0; st == GM_OK && i < n; i++) {
        gm_ckpt_cand *r = &c->cand[i];
        r->enc_len = (int)(off[i + 1] - off[i]);
        if (!(r->enc = malloc(sizeof(int32_t) * (size_t)(r->enc_len + 1))))
            st = fail(err, GM_ENOMEM, file, "out of memory for the encodings");
        else if (r->enc_len > 0) memcpy(r->enc, enc + off[i], sizeof(int32_t) * (size_t)r->enc_len);
    }
    free(enc);
    return st;
}

/* The learning curves (a file without them: none). Offsets are checked before any point is trusted. */
static gm_status read_curves(hid_t g, gm_ckpt *c, const char *file, gm_error *err)
{
    if (H5Lexists(g, "curve_offset", H5P_DEFAULT) <= 0) return GM_OK;
    const int n = c->ncand;
    const size_t cols = GM_CKPT_CURVE_COLS(c->ntasks);
    gm_error e;
    hsize_t no = (hsize_t)n + 1, dims[GM_H5_MAX_RANK];
    int rank;
    long long *off = malloc(sizeof(long long) * ((size_t)n + 1));
    if (!off) return fail(err, GM_ENOMEM, file, "out of memory for the learning curves");
    gm_status st = GM_OK;
    if (gm_h5_read(g, "curve_offset", H5T_NATIVE_LLONG, 1, &no, off, &e) != GM_OK ||
        gm_h5_shape(g, "curve", &rank, dims, &e) != GM_OK)
        st = wrap(err, &e, file, "candidates");
    else if (rank != 2 || dims[1] != cols)
        st = fail(err, GM_EFORMAT, file, "candidates: dataset \"curve\" is not points x %zu values", cols);
    else if (off[0] != 0)
        st = fail(err, GM_EFORMAT, file, "candidates: curve_offset[0] is %lld, not 0", off[0]);
    for (int i = 0; st == GM_OK && i < n; i++)
        if (off[i + 1] < off[i] || off[i + 1] - off[i] > GM_CKPT_MAX_CURVE)
            st = fail(err, GM_EFORMAT, file,
                      "candidates: curve_offset %lld..%lld of candidate %d is not a curve of 0..%d points", off[i],
                      off[i + 1], i, GM_CKPT_MAX_CURVE);
    if (st == GM_OK && (unsigned long long)off[n] != (unsigned long long)dims[0])
        st = fail(err, GM_EFORMAT, file, "candidates: curve_offset ends at %lld, but curve holds %llu points", off[n],
                  (unsigned long long)dims[0]);
    double *pts = st == GM_OK ? malloc(sizeof(double) * ((size_t)dims[0] * cols + 1)) : NULL;
    if (st == GM_OK && !pts) st = fail(err, GM_ENOMEM, file, "out of memory for the learning curves");
    if (st == GM_OK && gm_h5_read(g, "curve", H5T_NATIVE_DOUBLE, 2, dims, pts, &e) != GM_OK)
        st = wrap(err, &e, file, "candidates");
    for (int i = 0; st == GM_OK && i < n; i++) {
        gm_ckpt_cand *r = &c->cand[i];
        r->ncurve = (int)(off[i + 1] - off[i]);
        if (r->ncurve == 0) continue;
        if (!(r->curve = malloc(sizeof(double) * (size_t)r->ncurve * cols)))
            st = fail(err, GM_ENOMEM, file, "out of memory for the learning curves");
        else memcpy(r->curve, pts + (size_t)off[i] * cols, sizeof(double) * (size_t)r->ncurve * cols);
    }
    free(off);
    free(pts);
    return st;
}

static gm_status read_columns(hid_t g, gm_ckpt *c, void *buf, const char *file, gm_error *err)
{
    const int n = c->ncand, nt = c->ntasks;
    gm_error e;
    hsize_t dims[2] = {(hsize_t)n, (hsize_t)nt};
    for (int k = 0; k < NCOLUMNS; k++) {
        if (COLUMNS[k].optional && H5Lexists(g, COLUMNS[k].name, H5P_DEFAULT) <= 0) {
            const double nan = NAN; /* written before the column existed */
            for (int i = 0; i < n; i++) memcpy((char *)&c->cand[i] + COLUMNS[k].off, &nan, sizeof nan);
            continue;
        }
        if (gm_h5_read(g, COLUMNS[k].name, col_type(COLUMNS[k].kind), 1, dims, buf, &e) != GM_OK)
            return wrap(err, &e, file, "candidates");
        scatter(&COLUMNS[k], c->cand, n, buf);
    }
    char names[sizeof STATUS_LIST + 1];
    hid_t d = H5Dopen2(g, "status", H5P_DEFAULT);
    gm_status st = d >= 0 ? gm_h5_attr_read_str(d, "names", names, sizeof names, &e) : GM_EFORMAT;
    if (d >= 0) H5Dclose(d);
    if (st != GM_OK || strcmp(names, STATUS_LIST) != 0)
        return fail(err, GM_EFORMAT, file, "candidates: dataset \"status\" does not name its values \"%s\"",
                    STATUS_LIST);
    double *v = buf;
    if (gm_h5_read(g, "val", H5T_NATIVE_DOUBLE, 2, dims, v, &e) != GM_OK) return wrap(err, &e, file, "candidates");
    for (int i = 0; i < n; i++)
        for (int t = 0; t < GM_MF_MAX_TASKS; t++)
            c->cand[i].val[t] = t < nt ? v[(size_t)i * (size_t)nt + (size_t)t] : NAN;
    return GM_OK;
}

static gm_status read_candidates(hid_t f, gm_ckpt *c, const char *file, gm_error *err)
{
    gm_error e;
    hid_t g;
    if (gm_h5_group_open(f, "candidates", &g, &e) != GM_OK) return wrap(err, &e, file, "");
    int rank;
    hsize_t dims[GM_H5_MAX_RANK];
    gm_status st = gm_h5_shape(g, "id", &rank, dims, &e);
    if (st != GM_OK) st = wrap(err, &e, file, "candidates");
    else if (rank != 1 || dims[0] > MAX_CAND)
        st = fail(err, GM_EFORMAT, file, "candidates: dataset \"id\" is not a column of up to %d rows", MAX_CAND);
    void *buf = NULL;
    if (st == GM_OK) {
        const size_t n = (size_t)dims[0], nt = (size_t)(c->ntasks > 1 ? c->ntasks : 1);
        c->cand = calloc(n + 1, sizeof *c->cand);
        buf = malloc(8 * (n * nt + 1) + 8); /* any column, val, or enc_offset (n + 1 values) */
        if (!c->cand || !buf) st = fail(err, GM_ENOMEM, file, "out of memory for %zu candidates", n);
        else c->ncand = (int)n;
    }
    if (st == GM_OK) st = read_columns(g, c, buf, file, err);
    if (st == GM_OK) st = read_encodings(g, c, buf, file, err);
    if (st == GM_OK) st = read_curves(g, c, file, err);
    free(buf);
    H5Gclose(g);
    return st;
}

static long nlinks(hid_t g)
{
    H5G_info_t info;
    return H5Gget_info(g, &info) < 0 ? -1 : (long)info.nlinks;
}

static gm_status read_model(hid_t loc, const char *name, gm_mfile *m, const char *file, const char *ctx,
                            gm_error *err)
{
    gm_error e;
    hid_t g;
    if (gm_h5_group_open(loc, name, &g, &e) != GM_OK) return wrap(err, &e, file, ctx);
    gm_status st = gm_mfile_read(g, m, &e);
    H5Gclose(g);
    return st == GM_OK ? GM_OK : wrap(err, &e, file, ctx);
}

/* A kept set's models from its group (optional when the set is empty: files before the Pareto set). */
static gm_status read_set(hid_t f, const char *group, const char *attr, const int *id, gm_mfile *w, int n,
                          const char *what, const char *file, gm_error *err)
{
    if (n == 0 && !gm_h5_exists(f, group)) return GM_OK;
    gm_error e;
    hid_t g;
    if (gm_h5_group_open(f, group, &g, &e) != GM_OK) return wrap(err, &e, file, "");
    gm_status st = GM_OK;
    if (nlinks(g) != n)
        st = fail(err, GM_EFORMAT, file, "group \"%s\" holds %ld models, but %s names %d", group, nlinks(g), attr, n);
    for (int k = 0; st == GM_OK && k < n; k++) {
        char name[32], ctx[64];
        snprintf(name, sizeof name, "%d", id[k]);
        snprintf(ctx, sizeof ctx, "%s %d", what, id[k]);
        st = read_model(g, name, &w[k], file, ctx, err);
    }
    H5Gclose(g);
    return st;
}

static gm_status read_models(hid_t f, gm_ckpt *c, const char *file, gm_error *err)
{
    gm_status st = read_set(f, "elites", "elite_ids", c->elite_id, c->elite_w, c->nelites, "elite", file, err);
    if (st == GM_OK)
        st = read_set(f, "pareto", "pareto_ids", c->pareto_id, c->pareto_w, c->npareto, "Pareto model", file, err);
    if (st != GM_OK) return st;
    if (c->best_id >= 0) return read_model(f, "best", &c->best, file, "best model", err);
    if (gm_h5_exists(f, "best")) return fail(err, GM_EFORMAT, file, "best_id is -1, but a best model is stored");
    return GM_OK;
}

gm_status gm_ckpt_load(const char *path, gm_ckpt *c, gm_error *err)
{
    memset(c, 0, sizeof *c);
    c->best_id = -1;
    gm_status st = verify(path, &c->version, err);
    if (st != GM_OK) return st;
    hid_t f;
    if ((st = gm_h5_open(&f, path, 0, err)) != GM_OK) return st;
    st = read_identity(f, c->version, path, err);
    if (st == GM_OK) st = read_root(f, c, path, err);
    if (st == GM_OK) st = read_candidates(f, c, path, err);
    if (st == GM_OK) st = read_models(f, c, path, err);
    gm_h5_close_file(f);
    if (st == GM_OK) st = check(c, GM_EFORMAT, path, err);
    if (st != GM_OK) gm_ckpt_free(c);
    return st;
}

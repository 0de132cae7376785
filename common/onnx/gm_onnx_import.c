/*
 * ONNX import (see gm_onnx.h): read the file, decode it with protobuf-c, check
 * the model's header, lower and partition the graph (gm_onnx_import_int.h), and
 * assemble the model file.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gm_onnx.h"
#include "gm_onnx_import_int.h"

/* The default-domain opsets whose ops gm_onnx_import_lower.c reads. */
enum { OPSET_MIN = 9, OPSET_MAX = 21 };

/* protobuf's own limit on a message; bigger models keep weights as external data. */
static const long long MAX_FILE = 2LL << 30;

static gm_status read_file(const char *path, uint8_t **buf, size_t *len, gm_error *err)
{
    *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return gm_error_set(err, GM_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    gm_status s = GM_OK;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode))
        s = gm_error_set(err, GM_EIO, "%s: not a regular file", path);
    else if ((long long)st.st_size > MAX_FILE)
        s = gm_error_set(err, GM_EFORMAT, "%s: %lld bytes, over protobuf's 2 GiB limit for an ONNX model",
                         path, (long long)st.st_size);
    if (s == GM_OK) {
        *len = (size_t)st.st_size;
        *buf = malloc(*len + 1);
        if (!*buf) s = gm_error_set(err, GM_ENOMEM, "%s: out of memory for %zu bytes", path, *len);
        else if (fread(*buf, 1, *len, f) != *len)
            s = gm_error_set(err, GM_EIO, "%s: read failed: %s", path, ferror(f) ? strerror(errno) : "short read");
    }
    fclose(f);
    if (s != GM_OK) {
        free(*buf);
        *buf = NULL;
    }
    return s;
}

/* The header: a graph, an IR version, and a default-domain opset we read. */
static gm_status check_model(const Onnx__ModelProto *mp, int64_t *opset, gm_error *err)
{
    if (!mp->graph || !mp->has_ir_version || mp->ir_version < 3)
        return gm_error_set(err, GM_EFORMAT, "not an ONNX model (%s)",
                            !mp->graph ? "no graph" : "no IR version 3 or later");
    *opset = -1;
    for (size_t k = 0; k < mp->n_opset_import; k++) {
        const char *d = gm_oi_str(mp->opset_import[k]->domain);
        if (!d[0] || strcmp(d, "ai.onnx") == 0) *opset = mp->opset_import[k]->version;
    }
    if (*opset < 0)
        return gm_error_set(err, GM_EFORMAT, "not an ONNX model gmorph reads: it imports no opset of the default "
                            "domain (a damaged or truncated file?)");
    if (*opset < OPSET_MIN || *opset > OPSET_MAX)
        return gm_error_set(err, GM_EFORMAT, "the ONNX model uses opset %lld; gmorph reads opsets %d to %d (export "
                            "again with torch.onnx.export(..., opset_version=13))", (long long)*opset, OPSET_MIN,
                            OPSET_MAX);
    return GM_OK;
}

/* "a,b,c" into v: exactly n finite values. */
static int parse_floats(const char *s, float *v, int n)
{
    const char *p = s;
    for (int i = 0; i < n; i++) {
        char *end;
        errno = 0;
        double d = strtod(p, &end);
        if (end == p || errno || !isfinite(d)) return 0;
        v[i] = (float)d;
        while (*end == ' ') end++;
        if (i < n - 1 && *end != ',') return 0;
        if (i == n - 1 && *end) return 0;
        p = end + 1;
    }
    return 1;
}

static const char *metadata(const Onnx__ModelProto *mp, const char *key)
{
    for (size_t k = 0; k < mp->n_metadata_props; k++)
        if (strcmp(gm_oi_str(mp->metadata_props[k]->key), key) == 0) return gm_oi_str(mp->metadata_props[k]->value);
    return NULL;
}

/* One of mean and std: from the options, else the metadata, else def. */
static gm_status norm(const Onnx__ModelProto *mp, const char *what, int ngiven, const float *given, float def,
                      int c, float *out, gm_error *err)
{
    char key[32];
    snprintf(key, sizeof key, "gmorph.%s", what);
    const char *meta = metadata(mp, key);
    if (ngiven > 0) {
        if (ngiven != c)
            return gm_error_set(err, GM_EINVAL, "%d %s values given for an input of %d channels", ngiven, what, c);
        memcpy(out, given, (size_t)c * sizeof *out);
    } else if (meta) {
        if (!parse_floats(meta, out, c))
            return gm_error_set(err, GM_EFORMAT, "metadata %s is \"%.100s\", not %d comma-separated numbers", key,
                                meta, c);
    } else {
        for (int i = 0; i < c; i++) out[i] = def;
    }
    for (int i = 0; i < c; i++)
        if (!isfinite(out[i]) || (def == 1.0f && !(out[i] > 0.0f)))
            return gm_error_set(err, ngiven ? GM_EINVAL : GM_EFORMAT, "%s of channel %d is %g", what, i,
                                (double)out[i]);
    return GM_OK;
}

static gm_status fill_meta(gm_mfile *m, const Onnx__ModelProto *mp, const gm_oi_graph *g, const char *path,
                           const gm_onnx_import_opts *o, gm_error *err)
{
    const char *base = strrchr(path, '/');
    snprintf(m->arch, sizeof m->arch, "onnx %.120s", base ? base + 1 : path);
    m->input = g->input;
    if (g->input.c > GM_MF_MAX_CHANNELS)
        return gm_error_set(err, GM_EFORMAT, "the input has %d channels; a gmorph model reads at most %d",
                            g->input.c, GM_MF_MAX_CHANNELS);
    gm_status s = norm(mp, "mean", o->nmean, o->mean, 0.0f, g->input.c, m->mean, err);
    if (s == GM_OK) s = norm(mp, "std", o->nstd, o->std, 1.0f, g->input.c, m->std, err);
    if (s != GM_OK) return s;
    gm_mf_task *t = &m->tasks[0];
    const char *name = o->task ? o->task : gm_oi_str(mp->graph->output[0]->name);
    if (!name[0] || strlen(name) >= sizeof t->name)
        return gm_error_set(err, GM_EINVAL, "the task name \"%.80s\" is empty or longer than %zu characters (name the "
                            "task: gmorph import --task)", name, sizeof t->name - 1);
    m->ntasks = 1;
    snprintf(t->name, sizeof t->name, "%s", name);
    t->classes = (int)gm_shape_numel(g->shapes[g->output]);
    snprintf(t->metric, sizeof t->metric, "accuracy");
    t->val_accuracy = t->test_accuracy = NAN;
    return GM_OK;
}

/* Blocks, the chain, and the weights in gm_net's order (per op: parameters, then buffers). */
static gm_status fill_blocks(gm_mfile *m, const gm_oi_graph *g, const gm_oi_blocks *b, gm_error *err)
{
    m->nblocks = b->nblocks;
    m->blocks = malloc((size_t)b->nblocks * sizeof *m->blocks);
    m->parent = malloc((size_t)b->nblocks * sizeof *m->parent);
    for (int i = 0; i < b->nblocks; i++) {
        m->nparams += gm_block_nparams(&b->blocks[i]);
        for (int j = 0; j < b->blocks[i].nops; j++) m->nbuffers += gm_op_nbuffers(&b->blocks[i].ops[j]);
    }
    m->params = malloc((m->nparams + 1) * sizeof *m->params);
    m->buffers = malloc((m->nbuffers + 1) * sizeof *m->buffers);
    if (!m->blocks || !m->parent || !m->params || !m->buffers)
        return gm_error_set(err, GM_ENOMEM, "out of memory for %zu parameters", m->nparams);
    size_t pp = 0, bp = 0;
    for (int i = 0; i < b->nblocks; i++) {
        m->blocks[i] = b->blocks[i];
        m->parent[i] = i - 1;
        for (int j = 0; j < b->blocks[i].nops; j++) {
            const gm_oi_op *o = &g->ops[b->opidx[i][j]];
            size_t np = gm_op_nparams(&o->op), nb = gm_op_nbuffers(&o->op);
            if (np) memcpy(m->params + pp, o->w, np * sizeof *o->w);
            if (nb) memcpy(m->buffers + bp, o->w + np, nb * sizeof *o->w);
            pp += np;
            bp += nb;
        }
    }
    m->tasks[0].head = b->nblocks - 1;
    return GM_OK;
}

/* Names in a damaged file can hold any bytes: keep the message printable UTF-8 ('?' for the rest). */
static void printable(char *s)
{
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        int len = *p < 0x80 ? 1 : (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3 : (*p & 0xf8) == 0xf0 ? 4 : 0;
        int ok = len > 1 || (len == 1 && *p >= 0x20 && *p != 0x7f);
        for (int i = 1; ok && i < len; i++) ok = (p[i] & 0xc0) == 0x80; /* stops at the terminating 0 */
        if (ok) p += len;
        else *p++ = '?';
    }
}

gm_status gm_onnx_import(const char *path, const gm_onnx_import_opts *opts, gm_mfile *m, gm_error *err)
{
    static const gm_onnx_import_opts defaults = {0};
    memset(m, 0, sizeof *m);
    uint8_t *buf;
    size_t len = 0;
    gm_status s = read_file(path, &buf, &len, err);
    if (s != GM_OK) return s;
    Onnx__ModelProto *mp = onnx__model_proto__unpack(NULL, len, buf);
    free(buf);
    if (!mp)
        return gm_error_set(err, GM_EFORMAT, "%s: not an ONNX model, or a damaged or truncated one (it does not decode "
                            "as an ONNX ModelProto)", path);
    gm_error e;
    int64_t opset = -1;
    gm_oi_graph g = {0};
    gm_oi_blocks b = {0};
    s = check_model(mp, &opset, &e);
    if (s == GM_OK) s = gm_oi_lower(mp->graph, opset, &g, &e);
    if (s == GM_OK) s = gm_oi_partition(&g, &b, &e);
    if (s == GM_OK) s = fill_meta(m, mp, &g, path, opts ? opts : &defaults, &e);
    if (s == GM_OK) s = fill_blocks(m, &g, &b, &e);
    gm_oi_blocks_free(&b);
    gm_oi_graph_free(&g);
    onnx__model_proto__free_unpacked(mp, NULL);
    if (s != GM_OK) {
        gm_mfile_free(m);
        printable(e.msg);
        return gm_error_set(err, s, "%s: %s", path, e.msg);
    }
    return GM_OK;
}

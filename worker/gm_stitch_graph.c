#include "gm_stitch_graph.h"

#include <stdlib.h>
#include <string.h>

#include "gm_clock.h"

enum { CHUNK = 128, MAX_REFS = GM_MF_MAX_TASKS + 8 };

/* Where a node's weights were trained: block blk of file (NULL: a new adapter, no past). */
typedef struct {
    const gm_mfile *file;
    int blk;
} source;

typedef struct {
    const gm_fgraph *g;
    gm_mfile *m;
    const gm_wstore *store;
    const float *x;
    long n;
    gm_backend *be;
    gm_net *cand;                  /* the candidate, at CHUNK */
    const gm_mfile *ref_file[MAX_REFS];
    gm_net *ref_net[MAX_REFS];     /* the weights' source models, made when first needed */
    int nrefs;
    size_t par[GM_FG_MAX_NODES], buf[GM_FG_MAX_NODES]; /* each block's offsets in m */
    float *ha, *hb, *hr;           /* host copies of one chunk: what the node reads, what it was trained on */
    size_t cap_a, cap_b;
} ctx;

static source source_of(const gm_fgraph *g, int i, const gm_wstore *st)
{
    const gm_fnode *nd = &g->nodes[i];
    source s = {NULL, -1};
    if (nd->w.elite >= 0) {
        for (int k = 0; k < st->nelites; k++)
            if (st->elite_ids[k] == nd->w.elite) s = (source){st->elites[k], nd->w.node};
    } else if (nd->model >= 0) {
        s = (source){st->models[nd->model], nd->layer};
    }
    if (s.file && (s.blk < 0 || s.blk >= s.file->nblocks)) s.file = NULL;
    return s;
}

/* 1 when node i reads the block its weights were trained after (the same block of the same source). */
static int reads_expected(const gm_fgraph *g, int i, source s, const gm_wstore *st)
{
    if (!s.file) return 0;
    const int p = g->nodes[i].parent, want = s.file->parent[s.blk];
    if (p < 0) return want == -1;
    source sp = source_of(g, p, st);
    return sp.file == s.file && sp.blk == want;
}

static gm_status ref_net(ctx *c, const gm_mfile *file, gm_net **out, gm_error *err)
{
    for (int k = 0; k < c->nrefs; k++)
        if (c->ref_file[k] == file) {
            *out = c->ref_net[k];
            return GM_OK;
        }
    if (c->nrefs >= MAX_REFS) return gm_error_set(err, GM_EINVAL, "stitch: more than %d source models", MAX_REFS);
    gm_net_desc d = gm_mfile_desc(file);
    gm_net *net = NULL;
    gm_status st = gm_net_create(&net, c->be, &d, CHUNK, 1, err);
    if (st == GM_OK) st = gm_mfile_to_net(file, net, err);
    if (st != GM_OK) {
        gm_net_free(net);
        return st;
    }
    c->ref_file[c->nrefs] = file;
    c->ref_net[c->nrefs++] = net;
    *out = net;
    return GM_OK;
}

static gm_status host_buffer(float **p, size_t *cap, size_t n, gm_error *err)
{
    if (n <= *cap) return GM_OK;
    float *q = realloc(*p, sizeof(float) * n);
    if (!q) return gm_error_set(err, GM_ENOMEM, "stitch: out of memory for %zu activations", n);
    *p = q;
    *cap = n;
    return GM_OK;
}

/* Averages f x f cells of each of b maps of h x w into out (b x h/f x w/f). */
static void avg_down(const float *in, int b, int h, int w, int f, float *out)
{
    const int ho = h / f, wo = w / f;
    const float s = 1.0f / (float)(f * f);
    for (int m = 0; m < b; m++)
        for (int y = 0; y < ho; y++)
            for (int x = 0; x < wo; x++) {
                float acc = 0.0f;
                for (int dy = 0; dy < f; dy++)
                    for (int dx = 0; dx < f; dx++) acc += in[((size_t)m * h + (size_t)(y * f + dy)) * w + x * f + dx];
                out[((size_t)m * ho + y) * wo + x] = acc * s;
            }
}

/*
 * One stitch: the candidate's activation (block ab, op aop) against what the
 * source block s was trained on, over the probe; the fit goes to fit.
 */
static gm_status fit_site(ctx *c, int ab, int aop, source s, gm_stitch_fit *fit, double ridge, gm_error *err)
{
    gm_net *ref = NULL;
    gm_status st = ref_net(c, s.file, &ref, err);
    if (st != GM_OK) return st;
    const int rb = s.file->parent[s.blk];
    const gm_shape sa = gm_net_activation_shape(c->cand, ab, aop), sb = gm_net_activation_shape(ref, rb, -1);
    int f = sa.h > 0 ? sb.h / sa.h : 0;
    if (f < 1 || sa.h * f != sb.h || sa.w * f != sb.w)
        return gm_error_set(err, GM_ESHAPE, "stitch: %dx%dx%d maps cannot stand for %dx%dx%d ones", sa.c, sa.h, sa.w,
                            sb.c, sb.h, sb.w);
    gm_stitch_acc *acc = NULL;
    st = gm_stitch_acc_create(&acc, sa.c, sb.c, err);
    const size_t na = gm_shape_numel(sa), nb = gm_shape_numel(sb), numel = gm_shape_numel(c->g->input);
    if (st == GM_OK) st = host_buffer(&c->ha, &c->cap_a, (size_t)CHUNK * na, err);
    if (st == GM_OK) st = host_buffer(&c->hb, &c->cap_b, (size_t)CHUNK * nb, err);
    if (st == GM_OK && f > 1 && !(c->hr = realloc(c->hr, sizeof(float) * (size_t)CHUNK * sb.c * sa.h * sa.w)))
        st = gm_error_set(err, GM_ENOMEM, "stitch: out of memory");
    for (long i = 0; st == GM_OK && i < c->n; i += CHUNK) {
        const int b = (int)(c->n - i < CHUNK ? c->n - i : CHUNK);
        const float *x = c->x + (size_t)i * numel;
        st = gm_net_forward(c->cand, x, b, 0, err);
        if (st == GM_OK) st = gm_net_forward(ref, x, b, 0, err);
        if (st != GM_OK) break;
        c->be->to_host(c->be, c->ha, gm_net_activation(c->cand, ab, aop), sizeof(float) * (size_t)b * na);
        c->be->to_host(c->be, c->hb, gm_net_activation(ref, rb, -1), sizeof(float) * (size_t)b * nb);
        if (f > 1) avg_down(c->hb, b * sb.c, sb.h, sb.w, f, c->hr);
        gm_stitch_acc_add(acc, c->ha, f > 1 ? c->hr : c->hb, b, (size_t)sa.h * sa.w);
    }
    if (st == GM_OK) st = gm_stitch_solve(acc, ridge, fit, err);
    gm_stitch_acc_free(acc);
    return st;
}

/* The only child of node i (adapters have one), or -1. */
static int child_of(const gm_fgraph *g, int i)
{
    for (int k = i + 1; k < g->nnodes; k++)
        if (g->nodes[k].parent == i) return k;
    return -1;
}

/*
 * The site at node i if it can take a stitch (0: it cannot): a new adapter
 * with a convolution is fitted to its child's training input; any other node
 * needs a source and a linear layer reading its input.
 */
static int site_at(const gm_fgraph *g, int i, source s, const gm_wstore *st, gm_stitch_site *site)
{
    const gm_fnode *nd = &g->nodes[i];
    *site = (gm_stitch_site){.node = i, .match = i, .src = s.file, .src_block = s.blk};
    if (!s.file && nd->model < 0) {
        int ch = child_of(g, i);
        source sc = ch >= 0 ? source_of(g, ch, st) : (source){NULL, -1};
        if (gm_stitch_adapter_conv(&nd->block) < 0 || !sc.file) return 0;
        site->adapter = 1;
        site->match = ch;
        site->src = sc.file;
        site->src_block = sc.blk;
        return 1;
    }
    site->partial = gm_stitch_foldable(&nd->block) == GM_STITCH_PARTIAL;
    return s.file && gm_stitch_foldable(&nd->block) != GM_STITCH_NONE;
}

void gm_stitch_plan(const gm_fgraph *g, const gm_wstore *st, int cascade, gm_stitch_report *rep)
{
    /* same: reads its weights' input all the way up; fixed: its output is restored (unchanged or stitched) */
    char same[GM_FG_MAX_NODES], fixed[GM_FG_MAX_NODES], adapter_set[GM_FG_MAX_NODES];
    memset(rep, 0, sizeof *rep);
    for (int i = 0; i < g->nnodes; i++) {
        const int p = g->nodes[i].parent;
        source s = source_of(g, i, st);
        int direct = reads_expected(g, i, s, st);
        same[i] = (char)(direct && (p < 0 || same[p]));
        adapter_set[i] = 0;
        fixed[i] = 1;
        if (p >= 0 && adapter_set[p]) continue; /* behind an adapter set to its training input */
        if (direct && (p < 0 || (cascade ? same[p] : fixed[p]))) continue;
        gm_stitch_site site;
        fixed[i] = (char)site_at(g, i, s, st, &site);
        adapter_set[i] = (char)(fixed[i] && site.adapter);
        if (fixed[i] && rep->nsites < GM_STITCH_MAX_SITES) rep->site[rep->nsites++] = site;
    }
}

/* Fits and applies one planned site; the candidate net is refreshed for the sites after it. */
static gm_status stitch_site(ctx *c, gm_stitch_site *site, double ridge, gm_error *err)
{
    const gm_fnode *nd = &c->g->nodes[site->node];
    int ab = nd->parent, aop = -1;
    if (site->adapter) {
        int conv = gm_stitch_adapter_conv(&nd->block);
        if (conv > 0) { /* the convolution reads the adapter's pooled map */
            ab = site->node;
            aop = conv - 1;
        }
    }
    gm_stitch_fit fit;
    /* the source block the map must reproduce the input of: the node's own, or the adapter's child's */
    gm_status st = fit_site(c, ab, aop, (source){site->src, site->src_block}, &fit, ridge, err);
    if (st != GM_OK) return st;
    float *par = c->m->params + c->par[site->node], *buf = c->m->buffers + c->buf[site->node];
    if (site->adapter) st = gm_stitch_set_adapter(&nd->block, par, buf, &fit, err);
    else st = gm_stitch_fold(&nd->block, gm_fgraph_in_shape(c->g, site->node), par, buf, &fit, &site->dropped, err);
    site->residual = fit.residual;
    site->plain_residual = fit.plain_residual;
    gm_stitch_fit_free(&fit);
    if (st == GM_OK) st = gm_mfile_to_net(c->m, c->cand, err);
    return st;
}

gm_status gm_stitch_graph(const gm_fgraph *g, gm_mfile *m, const gm_wstore *store, const float *x, long n,
                          gm_backend *be, const gm_stitch_opts *o, gm_stitch_report *rep, gm_error *err)
{
    const double t0 = gm_now_s();
    if (m->nblocks != g->nnodes)
        return gm_error_set(err, GM_EINVAL, "stitch: the model has %d blocks, the graph %d nodes", m->nblocks,
                            g->nnodes);
    if (n < 1) return gm_error_set(err, GM_EINVAL, "stitch: no probe samples");
    ctx *c = calloc(1, sizeof *c);
    if (!c) return gm_error_set(err, GM_ENOMEM, "stitch: out of memory");
    *c = (ctx){.g = g, .m = m, .store = store, .x = x, .n = n, .be = be};
    size_t po = 0, bo = 0;
    for (int i = 0; i < m->nblocks; i++) {
        c->par[i] = po;
        c->buf[i] = bo;
        po += gm_block_nparams(&m->blocks[i]);
        for (int k = 0; k < m->blocks[i].nops; k++) bo += gm_op_nbuffers(&m->blocks[i].ops[k]);
    }
    gm_net_desc d = gm_mfile_desc(m);
    gm_status st = gm_net_create(&c->cand, be, &d, CHUNK, 1, err);
    if (st == GM_OK) st = gm_mfile_to_net(m, c->cand, err);
    gm_stitch_report local, *r = rep ? rep : &local;
    gm_stitch_plan(g, store, o->cascade, r);
    for (int k = 0; st == GM_OK && k < r->nsites; k++) st = stitch_site(c, &r->site[k], o->ridge, err);
    gm_net_free(c->cand);
    for (int k = 0; k < c->nrefs; k++) gm_net_free(c->ref_net[k]);
    free(c->ha);
    free(c->hb);
    free(c->hr);
    free(c);
    if (rep) rep->seconds = gm_now_s() - t0;
    return st;
}

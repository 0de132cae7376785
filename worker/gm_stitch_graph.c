#include "gm_stitch_graph.h"

#include <math.h>
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
    size_t par[GM_FG_MAX_NODES + 1], buf[GM_FG_MAX_NODES + 1]; /* each block's offsets in m, and the end */
    float *ha, *hb, *hr;           /* host copies of one chunk's activations */
    size_t cap_a, cap_b, cap_r;
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

/* Runs the candidate and ref over the probe, chunk by chunk, calling fn after each chunk's forwards. */
typedef gm_status (*chunk_fn)(ctx *c, gm_net *ref, int b, void *user, gm_error *err);

static gm_status probe_pass(ctx *c, gm_net *ref, chunk_fn fn, void *user, gm_error *err)
{
    const size_t numel = gm_shape_numel(c->g->input);
    gm_status st = GM_OK;
    for (long i = 0; st == GM_OK && i < c->n; i += CHUNK) {
        const int b = (int)(c->n - i < CHUNK ? c->n - i : CHUNK);
        const float *x = c->x + (size_t)i * numel;
        st = gm_net_forward(c->cand, x, b, 0, err);
        if (st == GM_OK) st = gm_net_forward(ref, x, b, 0, err);
        if (st == GM_OK) st = fn(c, ref, b, user, err);
    }
    return st;
}

/* Copies b samples of an activation (backend memory) into a host buffer of c. */
static gm_status to_host(ctx *c, float **buf, size_t *cap, const float *act, size_t n, gm_error *err)
{
    gm_status st = host_buffer(buf, cap, n, err);
    if (st == GM_OK) c->be->to_host(c->be, *buf, act, sizeof(float) * n);
    return st;
}

/* ---- input fit: what the node reads -> what its source block read --------------- */

typedef struct {
    gm_stitch_acc *acc;
    int ab, aop, rb, f;
    gm_shape sa, sb;
} input_fit;

static gm_status input_chunk(ctx *c, gm_net *ref, int b, void *user, gm_error *err)
{
    input_fit *u = user;
    gm_status st = to_host(c, &c->ha, &c->cap_a, gm_net_activation(c->cand, u->ab, u->aop),
                           (size_t)b * gm_shape_numel(u->sa), err);
    if (st == GM_OK)
        st = to_host(c, &c->hb, &c->cap_b, gm_net_activation(ref, u->rb, -1), (size_t)b * gm_shape_numel(u->sb), err);
    if (st != GM_OK) return st;
    if (u->f > 1) avg_down(c->hb, b * u->sb.c, u->sb.h, u->sb.w, u->f, c->hr);
    gm_stitch_acc_add(u->acc, c->ha, u->f > 1 ? c->hr : c->hb, b, (size_t)u->sa.h * u->sa.w);
    return GM_OK;
}

/*
 * The input fit: the candidate's activation (block ab, op aop) against what
 * the source block s was trained on, over the probe; the map goes to fit.
 */
static gm_status fit_input(ctx *c, int ab, int aop, source s, gm_stitch_fit *fit, double ridge, gm_error *err)
{
    gm_net *ref = NULL;
    gm_status st = ref_net(c, s.file, &ref, err);
    if (st != GM_OK) return st;
    input_fit u = {.ab = ab, .aop = aop, .rb = s.file->parent[s.blk]};
    u.sa = gm_net_activation_shape(c->cand, ab, aop);
    u.sb = gm_net_activation_shape(ref, u.rb, -1);
    u.f = u.sa.h > 0 ? u.sb.h / u.sa.h : 0;
    if (u.f < 1 || u.sa.h * u.f != u.sb.h || u.sa.w * u.f != u.sb.w)
        return gm_error_set(err, GM_ESHAPE, "stitch: %dx%dx%d maps cannot stand for %dx%dx%d ones", u.sa.c, u.sa.h,
                            u.sa.w, u.sb.c, u.sb.h, u.sb.w);
    st = gm_stitch_acc_create(&u.acc, u.sa.c, u.sb.c, err);
    if (st == GM_OK && u.f > 1) st = host_buffer(&c->hr, &c->cap_r, (size_t)CHUNK * u.sb.c * u.sa.h * u.sa.w, err);
    if (st == GM_OK) st = probe_pass(c, ref, input_chunk, &u, err);
    if (st == GM_OK) st = gm_stitch_solve(u.acc, ridge, fit, err);
    gm_stitch_acc_free(u.acc);
    return st;
}

/* ---- output fit: op k's change regressed on its receptive fields ----------------- */

typedef struct {
    gm_stitch_acc *acc;
    const gm_op *op;
    int node, k, parent, rblk, rk; /* the teacher: op rk of the source's block rblk (-1: that block's output) */
    gm_shape in, out;
    float *patches;
} output_fit;

static gm_status output_chunk(ctx *c, gm_net *ref, int b, void *user, gm_error *err)
{
    output_fit *u = user;
    const size_t nin = gm_shape_numel(u->in), nout = gm_shape_numel(u->out);
    gm_status st = to_host(c, &c->ha, &c->cap_a, gm_net_activation(c->cand, u->parent, -1), (size_t)b * nin, err);
    if (st == GM_OK) st = to_host(c, &c->hb, &c->cap_b, gm_net_activation(ref, u->rblk, u->rk), (size_t)b * nout, err);
    if (st == GM_OK) st = host_buffer(&c->hr, &c->cap_r, (size_t)b * nout, err);
    if (st != GM_OK) return st;
    c->be->to_host(c->be, c->hr, gm_net_activation(c->cand, u->node, u->k), sizeof(float) * (size_t)b * nout);
    for (size_t i = 0; i < (size_t)b * nout; i++) c->hb[i] -= c->hr[i]; /* teacher minus now */
    const size_t hw = (size_t)u->out.h * u->out.w;
    for (int s = 0; s < b; s++) {
        gm_stitch_patches(u->op, u->in, c->ha + (size_t)s * nin, u->patches);
        gm_stitch_acc_add(u->acc, u->patches, c->hb + (size_t)s * nout, 1, hw);
    }
    return GM_OK;
}

/* Refits every op of node i that reads its input directly; *dropped counts constants without a place. */
static gm_status fit_output(ctx *c, int i, source s, double ridge, int *dropped, gm_error *err)
{
    gm_net *ref = NULL;
    gm_status st = ref_net(c, s.file, &ref, err);
    const gm_block *blk = &c->g->nodes[i].block;
    /* a shortcut projected since the source was trained: its teacher is what the identity passed on */
    const int at = gm_block_projection_of(blk, &s.file->blocks[s.blk]), rparent = s.file->parent[s.blk];
    for (int k = 0; st == GM_OK && k < blk->nops; k++) {
        if (!gm_stitch_refittable(blk, k) || (k == at && rparent < 0)) continue; /* the raw image: left identity */
        output_fit u = {.op = &blk->ops[k], .node = i, .k = k, .parent = c->g->nodes[i].parent, .rblk = s.blk,
                        .rk = at >= 0 && k > at ? k - 1 : k};
        if (k == at) {
            u.rblk = rparent;
            u.rk = -1;
        }
        u.in = gm_net_activation_shape(c->cand, u.parent, -1);
        u.out = gm_net_activation_shape(c->cand, i, k);
        const int ca = u.op->kind == GM_OP_CONV2D ? u.op->p.conv.cin * u.op->p.conv.k * u.op->p.conv.k
                                                 : u.op->p.linear.in;
        st = gm_stitch_acc_create(&u.acc, ca, u.out.c, err);
        if (st == GM_OK && !(u.patches = malloc(sizeof(float) * (size_t)ca * u.out.h * u.out.w)))
            st = gm_error_set(err, GM_ENOMEM, "stitch: out of memory for receptive fields");
        if (st == GM_OK) st = probe_pass(c, ref, output_chunk, &u, err);
        gm_stitch_fit fit = {0};
        if (st == GM_OK) st = gm_stitch_solve(u.acc, ridge, &fit, err);
        int drop = 0;
        if (st == GM_OK)
            st = gm_stitch_add_delta(blk, k, c->m->params + c->par[i], c->m->buffers + c->buf[i], &fit, &drop, err);
        *dropped += drop;
        gm_stitch_fit_free(&fit);
        gm_stitch_acc_free(u.acc);
        free(u.patches);
        if (st == GM_OK) st = gm_mfile_to_net(c->m, c->cand, err);
    }
    return st;
}

/* ---- how far a node's output is from its source block's ------------------------- */

typedef struct {
    int node, rblk;
    double err, sum, sq, n;
} out_error;

static gm_status error_chunk(ctx *c, gm_net *ref, int b, void *user, gm_error *err)
{
    out_error *u = user;
    const size_t n = (size_t)b * gm_shape_numel(gm_net_activation_shape(ref, u->rblk, -1));
    gm_status st = to_host(c, &c->ha, &c->cap_a, gm_net_activation(c->cand, u->node, -1), n, err);
    if (st == GM_OK) st = to_host(c, &c->hb, &c->cap_b, gm_net_activation(ref, u->rblk, -1), n, err);
    for (size_t i = 0; st == GM_OK && i < n; i++) {
        const double d = (double)c->ha[i] - c->hb[i];
        u->err += d * d;
        u->sum += c->hb[i];
        u->sq += (double)c->hb[i] * c->hb[i];
    }
    u->n += (double)n;
    return st;
}

/* sum ||out - teacher||^2 / sum ||teacher - mean||^2 over the probe, for node i against block s. */
static gm_status output_error(ctx *c, int i, source s, double *rel, gm_error *err)
{
    gm_net *ref = NULL;
    gm_status st = ref_net(c, s.file, &ref, err);
    out_error u = {.node = i, .rblk = s.blk};
    if (st == GM_OK) st = probe_pass(c, ref, error_chunk, &u, err);
    const double var = u.sq - u.sum * u.sum / (u.n > 0 ? u.n : 1.0);
    *rel = u.err / (var > 1e-30 ? var : 1e-30);
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

void gm_stitch_same_inputs(const gm_fgraph *g, const gm_wstore *st, int *same)
{
    for (int i = 0; i < g->nnodes; i++) {
        const int p = g->nodes[i].parent;
        same[i] = reads_expected(g, i, source_of(g, i, st), st) && (p < 0 || same[p]);
    }
}

void gm_stitch_plan(const gm_fgraph *g, const gm_wstore *st, int cascade, gm_stitch_report *rep)
{
    /* same: reads its weights' input all the way up; fixed: its output is restored (unchanged or stitched) */
    int same[GM_FG_MAX_NODES];
    char fixed[GM_FG_MAX_NODES], adapter_set[GM_FG_MAX_NODES];
    memset(rep, 0, sizeof *rep);
    gm_stitch_same_inputs(g, st, same);
    for (int i = 0; i < g->nnodes; i++) {
        const int p = g->nodes[i].parent;
        source s = source_of(g, i, st);
        int direct = reads_expected(g, i, s, st);
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

/* The input map folded into node i's weights (or set into the adapter), the candidate refreshed. */
static gm_status apply_input(ctx *c, gm_stitch_site *site, const gm_stitch_fit *fit, gm_error *err)
{
    const gm_fnode *nd = &c->g->nodes[site->node];
    float *par = c->m->params + c->par[site->node], *buf = c->m->buffers + c->buf[site->node];
    gm_status st = site->adapter ? gm_stitch_set_adapter(&nd->block, par, buf, fit, err)
                                 : gm_stitch_fold(&nd->block, gm_fgraph_in_shape(c->g, site->node), par, buf, fit,
                                                  &site->dropped, err);
    return st == GM_OK ? gm_mfile_to_net(c->m, c->cand, err) : st;
}

/* Node i's weights back to a saved copy. */
static gm_status restore(ctx *c, int i, const float *par, const float *buf, gm_error *err)
{
    const gm_block *b = &c->g->nodes[i].block;
    memcpy(c->m->params + c->par[i], par, sizeof(float) * gm_block_nparams(b));
    memcpy(c->m->buffers + c->buf[i], buf, sizeof(float) * (c->buf[i + 1] - c->buf[i]));
    return gm_mfile_to_net(c->m, c->cand, err);
}

static int has_refittable(const gm_block *b)
{
    for (int k = 0; k < b->nops; k++)
        if (gm_stitch_refittable(b, k)) return 1;
    return 0;
}

/*
 * "best": the input map and the output fit each applied and the node's
 * output error measured on the probe; the lower stays.
 */
static gm_status stitch_best(ctx *c, gm_stitch_site *site, const gm_stitch_fit *fit, double ridge, gm_error *err)
{
    const int i = site->node;
    const source s = {site->src, site->src_block};
    const size_t np = gm_block_nparams(&c->g->nodes[i].block), nb = c->buf[i + 1] - c->buf[i];
    float *par = malloc(sizeof(float) * (np + nb + 1));
    if (!par) return gm_error_set(err, GM_ENOMEM, "stitch: out of memory");
    memcpy(par, c->m->params + c->par[i], sizeof(float) * np);
    memcpy(par + np, c->m->buffers + c->buf[i], sizeof(float) * nb);
    double e_in = 0.0, e_out = 0.0;
    int dropped = 0;
    gm_status st = apply_input(c, site, fit, err);
    if (st == GM_OK) st = output_error(c, i, s, &e_in, err);
    if (st == GM_OK) st = restore(c, i, par, par + np, err);
    if (st == GM_OK) st = fit_output(c, i, s, ridge, &dropped, err);
    if (st == GM_OK) st = output_error(c, i, s, &e_out, err);
    site->output_fit = e_out < e_in;
    site->out_error = site->output_fit ? e_out : e_in;
    if (st == GM_OK && !site->output_fit) {
        st = restore(c, i, par, par + np, err);
        if (st == GM_OK) st = apply_input(c, site, fit, err);
    } else {
        site->dropped = dropped;
    }
    free(par);
    return st;
}

/* Fits and applies one planned site; the candidate net is refreshed for the sites after it. */
static gm_status stitch_site(ctx *c, gm_stitch_site *site, const gm_stitch_opts *o, gm_error *err)
{
    const gm_fnode *nd = &c->g->nodes[site->node];
    const source s = {site->src, site->src_block};
    site->out_error = NAN;
    if (!site->adapter && o->fit == GM_STITCH_FIT_OUTPUT && has_refittable(&nd->block)) {
        site->output_fit = 1;
        return fit_output(c, site->node, s, o->ridge, &site->dropped, err);
    }
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
    gm_status st = fit_input(c, ab, aop, s, &fit, o->ridge, err);
    if (st != GM_OK) return st;
    site->residual = fit.residual;
    site->plain_residual = fit.plain_residual;
    if (!site->adapter && o->fit == GM_STITCH_FIT_BEST && has_refittable(&nd->block))
        st = stitch_best(c, site, &fit, o->ridge, err);
    else
        st = apply_input(c, site, &fit, err);
    gm_stitch_fit_free(&fit);
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
        bo += gm_block_nbuffers(&m->blocks[i]);
    }
    c->par[m->nblocks] = po;
    c->buf[m->nblocks] = bo;
    gm_net_desc d = gm_mfile_desc(m);
    gm_status st = gm_net_create(&c->cand, be, &d, CHUNK, 1, err);
    if (st == GM_OK) st = gm_mfile_to_net(m, c->cand, err);
    gm_stitch_report local, *r = rep ? rep : &local;
    gm_stitch_plan(g, store, o->cascade, r);
    for (int k = 0; st == GM_OK && k < r->nsites; k++) st = stitch_site(c, &r->site[k], o, err);
    gm_net_free(c->cand);
    for (int k = 0; k < c->nrefs; k++) gm_net_free(c->ref_net[k]);
    free(c->ha);
    free(c->hb);
    free(c->hr);
    free(c);
    if (rep) rep->seconds = gm_now_s() - t0;
    return st;
}

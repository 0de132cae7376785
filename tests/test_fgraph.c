/*
 * The fused graph and its mutations: the unmutated graph is the original
 * models exactly; random merge sequences keep every invariant and give
 * runnable models; encodings round-trip; hashes are canonical (equal exactly
 * when an independent canonical form is equal); merges share prefixes, skip
 * layers and refuse cycles; the merge list is complete; elites' weights flow
 * into the graphs mutated from them; projected shortcuts start as the identity
 * and survive encodings.
 */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gm_fgraph.h"
#include "gm_models.h"
#include "gm_mutate.h"
#include "gm_optim.h"
#include "test_util.h"

enum { NMODELS = 3, BATCH = 2 };
static const gm_shape IN = {3, 16, 16};

typedef struct {
    gm_backend *be;
    gm_mfile models[NMODELS];
    const gm_mfile *mp[NMODELS];
} fixture;

/* ---- fixture: three small trained models ---------------------------------- */

static void train_model(fixture *f, int k, const char *arch, int classes, uint64_t seed)
{
    static const int widths[4] = {8, 16, 0, 0};
    static gm_model model;
    gm_error err;
    assert_int_equal(gm_model_from_name(&model, arch, widths, IN, classes, &err), GM_OK);
    gm_net_desc d = gm_model_desc(&model);
    gm_net *net;
    gm_optim *opt;
    enum { B = 8 };
    assert_int_equal(gm_net_create(&net, f->be, &d, B, seed, &err), GM_OK);
    assert_int_equal(gm_optim_create(&opt, f->be, gm_update_adam(1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f),
                                     gm_net_nparams(net), &err), GM_OK);
    gm_rng rng;
    gm_rng_seed(&rng, seed + 100);
    float x[B * 3 * 16 * 16];
    int32_t y[B];
    /* a few steps, so weights and BN running statistics are no longer the defaults */
    for (int s = 0; s < 3; s++) {
        gm_fill_uniform(x, sizeof x / sizeof *x, &rng, -1, 1);
        for (int i = 0; i < B; i++) y[i] = (int32_t)gm_rng_below(&rng, (uint32_t)classes);
        float loss;
        assert_int_equal(gm_net_forward(net, x, B, 1, &err), GM_OK);
        assert_int_equal(gm_net_loss(net, 0, GM_LOSS_CROSS_ENTROPY, NULL, y, 1.0f, &loss, &err), GM_OK);
        gm_net_zero_grad(net);
        assert_int_equal(gm_net_backward(net, &err), GM_OK);
        gm_optim_step(opt, gm_net_params(net), gm_net_grads(net));
    }
    gm_mfile *m = &f->models[k];
    assert_int_equal(gm_mfile_from_net(m, net, &err), GM_OK);
    snprintf(m->arch, sizeof m->arch, "%s 8,16", arch);
    snprintf(m->tasks[0].name, sizeof m->tasks[0].name, "task_%s", arch);
    snprintf(m->tasks[0].dataset, sizeof m->tasks[0].dataset, "data%d.h5", k);
    for (int c = 0; c < 3; c++) {
        m->mean[c] = 0.25f * (float)c;
        m->std[c] = 0.5f + 0.1f * (float)c;
    }
    f->mp[k] = m;
    gm_optim_free(opt);
    gm_net_free(net);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    gm_error err;
    if (!f || gm_backend_cpu_create(&f->be, 2, &err) != GM_OK) return -1;
    train_model(f, 0, "vgg11", 3, 1);
    train_model(f, 1, "resnet8", 4, 2);
    train_model(f, 2, "vgg13", 5, 3);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    for (int k = 0; k < NMODELS; k++) gm_mfile_free(&f->models[k]);
    gm_backend_free(f->be);
    free(f);
    return 0;
}

/* ---- helpers -------------------------------------------------------------- */

static gm_fgraph *new_graph(const fixture *f)
{
    gm_fgraph *g = malloc(sizeof *g);
    assert_non_null(g);
    gm_error err;
    gm_status s = gm_fgraph_from_models(g, f->mp, NMODELS, &err);
    if (s != GM_OK) fail_msg("%s", err.msg);
    return g;
}

static void copy_graph(gm_fgraph *dst, const gm_fgraph *src)
{
    dst->input = src->input;
    dst->ntasks = src->ntasks;
    dst->nnodes = src->nnodes;
    memcpy(dst->nodes, src->nodes, sizeof *src->nodes * (size_t)src->nnodes);
}

static gm_wstore originals(const fixture *f)
{
    return (gm_wstore){.nmodels = NMODELS, .models = f->mp};
}

static int node_of(const gm_fgraph *g, int model, int layer)
{
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].model == model && g->nodes[i].layer == layer) return i;
    return -1;
}

static void assert_valid(const gm_fgraph *g)
{
    gm_error err;
    if (gm_fgraph_check(g, &err) != GM_OK) fail_msg("graph check: %s", err.msg);
}

static int op_equal(const gm_op *a, const gm_op *b)
{
    if (a->kind != b->kind) return 0;
    switch (a->kind) {
    case GM_OP_CONV2D: return memcmp(&a->p.conv, &b->p.conv, sizeof a->p.conv) == 0;
    case GM_OP_BATCHNORM2D: return memcmp(&a->p.bn, &b->p.bn, sizeof a->p.bn) == 0;
    case GM_OP_MAXPOOL2D:
    case GM_OP_AVGPOOL2D: return memcmp(&a->p.pool, &b->p.pool, sizeof a->p.pool) == 0;
    case GM_OP_LINEAR: return memcmp(&a->p.linear, &b->p.linear, sizeof a->p.linear) == 0;
    case GM_OP_DROPOUT: return a->p.dropout.p == b->p.dropout.p;
    case GM_OP_UPSAMPLE: return a->p.upsample.factor == b->p.upsample.factor;
    default: return 1;
    }
}

static int node_equal(const gm_fnode *a, const gm_fnode *b)
{
    if (a->model != b->model || a->layer != b->layer || a->parent != b->parent || a->task != b->task ||
        a->w.elite != b->w.elite || a->w.node != b->w.node || a->proj != b->proj)
        return 0;
    const gm_block *x = &a->block, *y = &b->block;
    if (x->kind != y->kind || x->nops != y->nops || x->model_id != y->model_id || x->layer_id != y->layer_id) return 0;
    for (int i = 0; i < x->nops; i++)
        if (!op_equal(&x->ops[i], &y->ops[i]) || x->src[i][0] != y->src[i][0] || x->src[i][1] != y->src[i][1])
            return 0;
    return 1;
}

static void assert_graphs_equal(const gm_fgraph *a, const gm_fgraph *b)
{
    assert_int_equal(a->nnodes, b->nnodes);
    assert_int_equal(a->ntasks, b->ntasks);
    assert_memory_equal(&a->input, &b->input, sizeof a->input);
    for (int i = 0; i < a->nnodes; i++)
        if (!node_equal(&a->nodes[i], &b->nodes[i])) fail_msg("node %d differs", i);
}

/* Same graph, nodes in a random topological order. */
static void permute(const gm_fgraph *g, gm_fgraph *out, gm_rng *rng)
{
    int n = g->nnodes, newidx[GM_FG_MAX_NODES], ready[GM_FG_MAX_NODES], nready = 0;
    char placed[GM_FG_MAX_NODES] = {0};
    out->input = g->input;
    out->ntasks = g->ntasks;
    out->nnodes = n;
    for (int m = 0; m < n; m++) {
        nready = 0;
        for (int i = 0; i < n; i++)
            if (!placed[i] && (g->nodes[i].parent < 0 || placed[g->nodes[i].parent])) ready[nready++] = i;
        assert_true(nready > 0);
        int pick = ready[gm_rng_below(rng, (uint32_t)nready)];
        placed[pick] = 1;
        newidx[pick] = m;
    }
    for (int i = 0; i < n; i++) {
        gm_fnode nd = g->nodes[i];
        nd.parent = nd.parent < 0 ? -1 : newidx[nd.parent];
        out->nodes[newidx[i]] = nd;
    }
}

/*
 * An independent canonical form of the tree (children's strings sorted), to
 * test the hashes against: equal hashes exactly when equal forms.
 */
static void node_sig(const gm_fgraph *g, int i, int topo, char *s, size_t cap)
{
    const gm_fnode *nd = &g->nodes[i];
    gm_shape in = gm_fgraph_in_shape(g, i), out = gm_fgraph_out_shape(g, i);
    size_t n = 0;
    if (!topo) {
        n += (size_t)snprintf(s + n, cap - n, "m%d.l%d.t%d.e%d.n%d", nd->model, nd->layer, nd->task, nd->w.elite,
                              nd->w.node);
        if (nd->model < 0) n += (size_t)snprintf(s + n, cap - n, ".a%dx%dx%d", out.c, out.h, out.w);
        if (nd->proj) snprintf(s + n, cap - n, ".p");
        return;
    }
    n += (size_t)snprintf(s + n, cap - n, "k%d.t%d.i%dx%dx%d.o%dx%dx%d", nd->block.kind, nd->task, in.c, in.h, in.w,
                          out.c, out.h, out.w);
    for (int k = 0; k < nd->block.nops && n < cap; k++) {
        const gm_op *op = &nd->block.ops[k];
        int v[6] = {0};
        switch (op->kind) {
        case GM_OP_CONV2D: memcpy(v, &op->p.conv, sizeof op->p.conv); break;
        case GM_OP_BATCHNORM2D: memcpy(v, &op->p.bn, sizeof op->p.bn); break;
        case GM_OP_MAXPOOL2D:
        case GM_OP_AVGPOOL2D: memcpy(v, &op->p.pool, sizeof op->p.pool); break;
        case GM_OP_LINEAR: memcpy(v, &op->p.linear, sizeof op->p.linear); break;
        case GM_OP_DROPOUT: memcpy(v, &op->p.dropout, sizeof op->p.dropout); break;
        case GM_OP_UPSAMPLE: v[0] = op->p.upsample.factor; break;
        default: break;
        }
        n += (size_t)snprintf(s + n, cap - n, "|%d:%d,%d,%d,%d,%d,%d<%d,%d", op->kind, v[0], v[1], v[2], v[3], v[4],
                              v[5], nd->block.src[k][0], nd->block.src[k][1]);
    }
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static char *canon_children(const gm_fgraph *g, int parent, int topo);

static char *canon_node(const gm_fgraph *g, int i, int topo)
{
    char sig[1024];
    node_sig(g, i, topo, sig, sizeof sig);
    char *kids = canon_children(g, i, topo);
    char *s = malloc(strlen(sig) + strlen(kids) + 3);
    assert_non_null(s);
    sprintf(s, "(%s%s)", sig, kids);
    free(kids);
    return s;
}

static char *canon_children(const gm_fgraph *g, int parent, int topo)
{
    char *kid[GM_FG_MAX_NODES];
    int nk = 0;
    size_t len = 1;
    for (int j = parent + 1; j < g->nnodes; j++)
        if (g->nodes[j].parent == parent) {
            kid[nk] = canon_node(g, j, topo);
            len += strlen(kid[nk++]);
        }
    qsort(kid, (size_t)nk, sizeof *kid, cmp_str);
    char *s = malloc(len);
    assert_non_null(s);
    s[0] = 0;
    for (int k = 0; k < nk; k++) {
        strcat(s, kid[k]);
        free(kid[k]);
    }
    return s;
}

/* Logits per task (in task order, host memory, caller frees) of a model file run as one net. */
static void run_model(const fixture *f, const gm_mfile *m, const float *x, float **logits)
{
    gm_error err;
    gm_net_desc d = gm_mfile_desc(m);
    gm_net *net;
    gm_status s = gm_net_create(&net, f->be, &d, BATCH, 5, &err);
    if (s != GM_OK) fail_msg("net: %s", err.msg);
    assert_int_equal(gm_mfile_to_net(m, net, &err), GM_OK);
    s = gm_net_forward(net, x, BATCH, 0, &err);
    if (s != GM_OK) fail_msg("forward: %s", err.msg);
    assert_int_equal(gm_net_noutputs(net), m->ntasks);
    assert_int_equal(gm_net_nparams(net), m->nparams);
    for (int t = 0; t < m->ntasks; t++) {
        int o = -1;
        for (int k = 0; k < gm_net_noutputs(net); k++)
            if (gm_net_output_block(net, k) == m->tasks[t].head) o = k;
        assert_true(o >= 0);
        size_t n = (size_t)BATCH * (size_t)m->tasks[t].classes;
        assert_int_equal(gm_shape_numel(gm_net_output_shape(net, o)), (size_t)m->tasks[t].classes);
        logits[t] = malloc(n * sizeof(float));
        assert_non_null(logits[t]);
        f->be->to_host(f->be, logits[t], gm_net_output(net, o), n * sizeof(float));
    }
    gm_net_free(net);
}

static void free_logits(float **l, int n)
{
    for (int i = 0; i < n; i++) free(l[i]);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_unmutated_reproduces_models(void **state)
{
    fixture *f = *state;
    gm_fgraph *g = new_graph(f);
    int expect = 0;
    for (int k = 0; k < NMODELS; k++) expect += f->models[k].nblocks;
    assert_int_equal(g->nnodes, expect);
    gm_wstore st = originals(f);
    gm_mfile fused;
    gm_error err;
    gm_status s = gm_fgraph_to_mfile(g, &st, 1, &fused, &err);
    if (s != GM_OK) fail_msg("%s", err.msg);
    assert_string_equal(fused.arch, "fused");
    assert_int_equal(fused.ntasks, NMODELS);
    assert_memory_equal(fused.mean, f->models[0].mean, sizeof fused.mean);
    gm_rng rng;
    gm_rng_seed(&rng, 8);
    float x[BATCH * 3 * 16 * 16];
    gm_fill_uniform(x, sizeof x / sizeof *x, &rng, -2, 2);
    float *got[NMODELS], *want[1];
    run_model(f, &fused, x, got);
    for (int k = 0; k < NMODELS; k++) {
        assert_string_equal(fused.tasks[k].name, f->models[k].tasks[0].name);
        assert_string_equal(fused.tasks[k].dataset, f->models[k].tasks[0].dataset);
        assert_int_equal(fused.tasks[k].classes, f->models[k].tasks[0].classes);
        run_model(f, &f->models[k], x, want);
        assert_memory_equal(got[k], want[0], sizeof(float) * BATCH * (size_t)fused.tasks[k].classes);
        free_logits(want, 1);
    }
    free_logits(got, NMODELS);
    assert_int_equal(gm_fgraph_nparams(g), fused.nparams);
    gm_mfile_free(&fused);
    free(g);
}

/* Brute force: apply succeeds exactly for the (new parent, b) pairs the list offers. */
static void check_list_complete(const gm_fgraph *g, int relaxed)
{
    int total = gm_mutate_list(g, relaxed, NULL, 0);
    gm_merge *list = malloc(sizeof *list * (size_t)(total + 1));
    assert_non_null(list);
    assert_int_equal(gm_mutate_list(g, relaxed, list, total), total);
    int nstrict = gm_mutate_list(g, 0, NULL, 0);
    for (int k = 0; k < total; k++) {
        const gm_fnode *a = &g->nodes[list[k].a], *b = &g->nodes[list[k].b];
        assert_int_not_equal(a->parent, b->parent); /* same parent: never listed */
        gm_shape sa = gm_fgraph_in_shape(g, list[k].a), sb = gm_fgraph_in_shape(g, list[k].b);
        int same = sa.c == sb.c && sa.h == sb.h && sa.w == sb.w;
        assert_int_equal(list[k].relaxed, k >= nstrict); /* strict ones first */
        assert_int_equal(same, !list[k].relaxed);
        for (int j = 0; j < k; j++) /* (new parent, b) listed once */
            assert_false(list[j].b == list[k].b && g->nodes[list[j].a].parent == a->parent);
    }
    gm_fgraph *c = malloc(sizeof *c);
    assert_non_null(c);
    int ok = 0;
    for (int a = 0; a < g->nnodes; a++)
        for (int b = 0; b < g->nnodes; b++) {
            copy_graph(c, g);
            int applied = gm_mutate_apply(c, (gm_merge){a, b, relaxed}, NULL) == GM_OK;
            int listed = 0;
            for (int k = 0; k < total && !listed; k++)
                listed = list[k].b == b && a != b && g->nodes[list[k].a].parent == g->nodes[a].parent;
            if (applied != listed) fail_msg("merge (%d, %d): applied %d, listed %d", a, b, applied, listed);
            if (applied) assert_valid(c);
            ok += applied;
        }
    assert_true(ok >= total);
    free(c);
    free(list);
}

static void test_random_merges_keep_invariants(void **state)
{
    fixture *f = *state;
    enum { N = 300 };
    gm_fgraph *g = new_graph(f), *orig = new_graph(f), *h = malloc(sizeof *h), *p = malloc(sizeof *p);
    assert_non_null(h);
    assert_non_null(p);
    static char *canon[N][2];
    static uint64_t hash[N][2];
    int32_t *enc = malloc(sizeof(int32_t) * (GM_FG_ENC_HEADER + GM_FG_ENC_PER_NODE * GM_FG_MAX_NODES));
    assert_non_null(enc);
    gm_wstore st = originals(f);
    gm_rng rng;
    gm_rng_seed(&rng, 999);
    int adapters = 0, reordered = 0, projected = 0;
    float x[BATCH * 3 * 16 * 16];
    gm_fill_uniform(x, sizeof x / sizeof *x, &rng, -1, 1);
    for (int s = 0; s < N; s++) {
        gm_error err;
        gm_rng_seed(&rng, 1000 + (uint64_t)s);
        copy_graph(g, orig);
        int nmerge = 1 + s % 6, relaxed_below = s % 2 ? 1 << 30 : 0;
        gm_status st1 = gm_mutate_random(g, &rng, nmerge, relaxed_below, &err);
        if (st1 != GM_OK) fail_msg("graph %d: %s", s, err.msg);
        if (s % 3 == 0) projected += gm_fgraph_project_seams(g); /* encodings, hashes and models with them too */
        assert_valid(g);
        for (int i = 0; i < g->nnodes; i++) adapters += g->nodes[i].model < 0;
        /* every head once, every node on some task's path */
        for (int t = 0; t < g->ntasks; t++) {
            int heads = 0;
            for (int i = 0; i < g->nnodes; i++) heads += g->nodes[i].task == t;
            assert_int_equal(heads, 1);
        }
        for (int i = 0; i < g->nnodes; i++) {
            int used = 0;
            for (int t = 0; t < g->ntasks; t++) used |= gm_fgraph_on_path(g, i, t);
            if (!used) fail_msg("graph %d: node %d is on no task's path", s, i);
        }
        /* a runnable model with one output per task of the right size */
        gm_mfile m;
        if (gm_fgraph_to_mfile(g, &st, (uint64_t)s, &m, &err) != GM_OK) fail_msg("graph %d: %s", s, err.msg);
        assert_int_equal(m.nparams, gm_fgraph_nparams(g));
        float *logits[NMODELS];
        run_model(f, &m, x, logits);
        for (int t = 0; t < NMODELS; t++)
            for (int i = 0; i < BATCH * m.tasks[t].classes; i++) assert_true(logits[t][i] == logits[t][i]);
        free_logits(logits, NMODELS);
        gm_mfile_free(&m);
        /* encode / decode */
        int n = gm_fgraph_encode(g, enc, GM_FG_ENC_HEADER + GM_FG_ENC_PER_NODE * GM_FG_MAX_NODES);
        assert_int_equal(n, GM_FG_ENC_HEADER + GM_FG_ENC_PER_NODE * g->nnodes);
        assert_int_equal(gm_fgraph_encode(g, enc, n - 1), -1);
        if (gm_fgraph_decode(h, enc, n, f->mp, NMODELS, &err) != GM_OK) fail_msg("graph %d: %s", s, err.msg);
        assert_graphs_equal(h, g);
        hash[s][0] = gm_fgraph_location_hash(g);
        hash[s][1] = gm_fgraph_topology_hash(g);
        assert_true(gm_fgraph_location_hash(h) == hash[s][0]);
        assert_true(gm_fgraph_topology_hash(h) == hash[s][1]);
        /* renumbering changes nothing */
        permute(g, p, &rng);
        assert_valid(p);
        for (int i = 0; i < g->nnodes && !reordered; i++) reordered = p->nodes[i].model != g->nodes[i].model ||
                                                                       p->nodes[i].layer != g->nodes[i].layer;
        assert_true(gm_fgraph_location_hash(p) == hash[s][0]);
        assert_true(gm_fgraph_topology_hash(p) == hash[s][1]);
        assert_true(gm_fgraph_flops(p) == gm_fgraph_flops(g));
        /* weight source only: same topology, other location */
        copy_graph(h, g);
        gm_fgraph_use_elite_weights(h, 3);
        assert_valid(h);
        assert_true(gm_fgraph_topology_hash(h) == hash[s][1]);
        assert_true(gm_fgraph_location_hash(h) != hash[s][0]);
        canon[s][0] = canon_children(g, -1, 0);
        canon[s][1] = canon_children(g, -1, 1);
        if (s % 25 == 0) check_list_complete(g, s % 2);
    }
    /* hashes agree with the canonical forms: equal exactly when the forms are */
    int distinct = 0;
    for (int i = 0; i < N; i++) {
        int first = 1;
        for (int j = 0; j < N; j++)
            for (int k = 0; k < 2; k++) {
                int same = strcmp(canon[i][k], canon[j][k]) == 0;
                if (same != (hash[i][k] == hash[j][k]))
                    fail_msg("graphs %d and %d: %s forms %s but hashes %s", i, j, k ? "topology" : "location",
                             same ? "equal" : "differ", same ? "differ" : "equal");
                if (k == 0 && j < i && same) first = 0;
            }
        distinct += first;
    }
    print_message("  %d graphs, %d distinct, %d adapters and %d projected shortcuts in all\n", N, distinct, adapters,
                  projected);
    assert_true(distinct > N / 2);
    assert_true(adapters > 0);
    assert_true(projected > 0);
    assert_true(reordered);
    for (int i = 0; i < N; i++) {
        free(canon[i][0]);
        free(canon[i][1]);
    }
    free(enc);
    free(g);
    free(orig);
    free(h);
    free(p);
}

static void test_list_complete_on_originals(void **state)
{
    fixture *f = *state;
    gm_fgraph *g = new_graph(f);
    check_list_complete(g, 0);
    check_list_complete(g, 1);
    free(g);
}

static void test_cross_model_merge_shares_prefix(void **state)
{
    fixture *f = *state;
    gm_fgraph *g = new_graph(f);
    /* vgg11 (model 0) and vgg13 (model 2): layer 2 of both reads 8x16x16 */
    int a = node_of(g, 0, 2), b = node_of(g, 2, 2);
    gm_shape sa = gm_fgraph_in_shape(g, a), sb = gm_fgraph_in_shape(g, b);
    assert_memory_equal(&sa, &sb, sizeof sa);
    size_t before = gm_fgraph_nparams(g);
    size_t dead = gm_block_nparams(&f->models[2].blocks[0]) + gm_block_nparams(&f->models[2].blocks[1]);
    uint64_t loc = gm_fgraph_location_hash(g), flops = gm_fgraph_flops(g);
    int n = g->nnodes;
    gm_error err;
    assert_int_equal(gm_mutate_apply(g, (gm_merge){a, b, 0}, &err), GM_OK);
    assert_valid(g);
    assert_int_equal(g->nnodes, n - 2);
    assert_int_equal(gm_fgraph_nparams(g), before - dead);
    assert_int_equal(node_of(g, 2, 0), -1);
    assert_int_equal(node_of(g, 2, 1), -1);
    assert_int_equal(g->nodes[node_of(g, 2, 2)].parent, node_of(g, 0, 1));
    assert_int_equal(g->nodes[node_of(g, 0, 2)].parent, node_of(g, 0, 1));
    /* tasks 0 and 2 share the prefix, task 1 does not */
    int shared = node_of(g, 0, 0);
    assert_true(gm_fgraph_on_path(g, shared, 0) && gm_fgraph_on_path(g, shared, 2));
    assert_false(gm_fgraph_on_path(g, shared, 1));
    assert_true(gm_fgraph_location_hash(g) != loc);
    assert_true(gm_fgraph_flops(g) < flops);
    /* merging the two now-siblings is a no-op: not listed and refused */
    int a2 = node_of(g, 0, 2), b2 = node_of(g, 2, 2);
    int total = gm_mutate_list(g, 1, NULL, 0);
    gm_merge *list = malloc(sizeof *list * (size_t)total);
    assert_non_null(list);
    gm_mutate_list(g, 1, list, total);
    for (int k = 0; k < total; k++)
        assert_false((list[k].a == a2 && list[k].b == b2) || (list[k].a == b2 && list[k].b == a2));
    free(list);
    assert_int_equal(gm_mutate_apply(g, (gm_merge){a2, b2, 0}, &err), GM_EINVAL);
    assert_non_null(strstr(err.msg, "nothing to merge"));
    free(g);
}

static void test_intra_model_merge_skips_layers(void **state)
{
    fixture *f = *state;
    gm_fgraph *g = new_graph(f);
    uint64_t flops = gm_fgraph_flops(g);
    /* vgg11: layers 1 and 2 both read 8x16x16; layer 2 reading layer 0 drops layer 1 */
    int a = node_of(g, 0, 1), b = node_of(g, 0, 2), n = g->nnodes;
    size_t before = gm_fgraph_nparams(g);
    gm_error err;
    assert_int_equal(gm_mutate_apply(g, (gm_merge){a, b, 0}, &err), GM_OK);
    assert_valid(g);
    assert_int_equal(g->nnodes, n - 1);
    assert_int_equal(node_of(g, 0, 1), -1);
    assert_int_equal(g->nodes[node_of(g, 0, 2)].parent, node_of(g, 0, 0));
    assert_int_equal(gm_fgraph_nparams(g), before - gm_block_nparams(&f->models[0].blocks[1]));
    assert_true(gm_fgraph_flops(g) < flops);
    /* the other models' nodes keep their weight sources and order */
    for (int i = 1; i < g->nnodes; i++)
        if (g->nodes[i].model == g->nodes[i - 1].model && g->nodes[i].model >= 0)
            assert_true(g->nodes[i].layer > g->nodes[i - 1].layer);
    free(g);
}

static void test_cycle_refused(void **state)
{
    fixture *f = *state;
    gm_fgraph *g = new_graph(f), *c = malloc(sizeof *c);
    assert_non_null(c);
    /* vgg11 layer 3 reads layer 2's output, which depends on layer 1: layer 1 cannot read it */
    int a = node_of(g, 0, 3), b = node_of(g, 0, 1);
    gm_shape sa = gm_fgraph_in_shape(g, a), sb = gm_fgraph_in_shape(g, b);
    assert_memory_equal(&sa, &sb, sizeof sa); /* the shapes alone would allow it */
    copy_graph(c, g);
    gm_error err;
    assert_int_equal(gm_mutate_apply(g, (gm_merge){a, b, 0}, &err), GM_EINVAL);
    assert_non_null(strstr(err.msg, "cycle"));
    assert_graphs_equal(g, c);
    /* b reading its own output */
    assert_int_equal(gm_mutate_apply(g, (gm_merge){node_of(g, 0, 2), b, 0}, &err), GM_EINVAL);
    assert_non_null(strstr(err.msg, "cycle"));
    assert_graphs_equal(g, c);
    /* a strict merge of different shapes, and bad indices */
    assert_int_equal(gm_mutate_apply(g, (gm_merge){node_of(g, 0, 5), node_of(g, 1, 1), 0}, &err), GM_ESHAPE);
    assert_int_equal(gm_mutate_apply(g, (gm_merge){a, a, 0}, &err), GM_EINVAL);
    assert_int_equal(gm_mutate_apply(g, (gm_merge){-1, a, 0}, &err), GM_EINVAL);
    assert_graphs_equal(g, c);
    free(g);
    free(c);
}

/* Finds a relaxed merge whose adapter has the wanted op kinds, applies it and checks the adapter. */
static void relaxed_case(const fixture *f, gm_op_kind k0, gm_op_kind klast, int nops)
{
    gm_fgraph *g = new_graph(f);
    int total = gm_mutate_list(g, 1, NULL, 0);
    gm_merge *list = malloc(sizeof *list * (size_t)total);
    assert_non_null(list);
    gm_mutate_list(g, 1, list, total);
    int found = -1;
    gm_block ad;
    for (int k = 0; k < total && found < 0; k++) {
        if (!list[k].relaxed) continue;
        gm_error err;
        assert_int_equal(gm_fgraph_adapter(gm_fgraph_in_shape(g, list[k].a), gm_fgraph_in_shape(g, list[k].b), &ad,
                                           &err), GM_OK);
        if (ad.nops == nops && ad.ops[0].kind == k0 && ad.ops[nops - 1].kind == klast) found = k;
    }
    assert_true(found >= 0);
    gm_merge m = list[found];
    free(list);
    gm_shape want = gm_fgraph_in_shape(g, m.b);
    int bm = g->nodes[m.b].model, bl = g->nodes[m.b].layer, n = g->nnodes;
    gm_error err;
    assert_int_equal(gm_mutate_apply(g, m, &err), GM_OK);
    assert_valid(g);
    int b = node_of(g, bm, bl), ai = g->nodes[b].parent;
    assert_true(ai >= 0 && ai < b);
    const gm_fnode *an = &g->nodes[ai];
    assert_int_equal(an->model, -1);
    assert_int_equal(an->layer, -1);
    assert_int_equal(an->block.kind, GM_BLOCK_CUSTOM);
    assert_int_equal(an->w.elite, -1);
    assert_true(node_equal(an, &(gm_fnode){.block = ad, .model = -1, .layer = -1, .parent = an->parent, .task = -1,
                                           .w = {-1, -1}}));
    gm_shape got = gm_fgraph_out_shape(g, ai);
    assert_memory_equal(&got, &want, sizeof got);
    assert_true(g->nnodes <= n + 1); /* one adapter in */
    /* fresh adapter weights: PyTorch's default, reproducible from the seed */
    gm_wstore st = originals(f);
    gm_mfile m1, m2;
    assert_int_equal(gm_fgraph_to_mfile(g, &st, 77, &m1, &err), GM_OK);
    assert_int_equal(gm_fgraph_to_mfile(g, &st, 77, &m2, &err), GM_OK);
    assert_memory_equal(m1.params, m2.params, sizeof(float) * m1.nparams);
    size_t po = 0, bo = 0;
    for (int i = 0; i < ai; i++) {
        po += gm_block_nparams(&g->nodes[i].block);
        for (int k = 0; k < g->nodes[i].block.nops; k++) bo += gm_op_nbuffers(&g->nodes[i].block.ops[k]);
    }
    for (int k = 0; k < ad.nops; k++) {
        const gm_op *op = &ad.ops[k];
        if (op->kind == GM_OP_CONV2D) {
            float bound = 1.0f / sqrtf((float)op->p.conv.cin);
            float lo = 0, hi = 0;
            for (size_t i = 0; i < gm_op_nparams(op); i++) {
                float v = m1.params[po + i];
                assert_true(v >= -bound && v <= bound);
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
            }
            assert_true(hi - lo > bound); /* spread, not constant */
        } else if (op->kind == GM_OP_BATCHNORM2D) {
            int c = op->p.bn.c;
            for (int i = 0; i < c; i++) {
                assert_true(m1.params[po + (size_t)i] == 1.0f && m1.params[po + (size_t)(c + i)] == 0.0f);
                assert_true(m1.buffers[bo + (size_t)i] == 0.0f && m1.buffers[bo + (size_t)(c + i)] == 1.0f);
            }
        }
        po += gm_op_nparams(op);
        bo += gm_op_nbuffers(op);
    }
    /* a fused model with its adapter survives a save and a load */
    char dir[] = "/tmp/gm_fgraph_XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/fused.h5", dir);
    gm_mfile_free(&m2);
    gm_status s = gm_mfile_save(path, &m1, &err);
    if (s == GM_OK) s = gm_mfile_load(path, &m2, &err);
    unlink(path);
    rmdir(dir);
    if (s != GM_OK) fail_msg("%s", err.msg);
    assert_int_equal(m2.nblocks, m1.nblocks);
    assert_int_equal(m2.nparams, m1.nparams);
    assert_memory_equal(m2.params, m1.params, sizeof(float) * m1.nparams);
    assert_memory_equal(m2.parent, m1.parent, sizeof(int) * (size_t)m1.nblocks);
    assert_int_equal(m2.blocks[ai].nops, ad.nops);
    for (int k = 0; k < ad.nops; k++) assert_true(op_equal(&m2.blocks[ai].ops[k], &ad.ops[k]));
    gm_mfile_free(&m1);
    gm_mfile_free(&m2);
    free(g);
}

static void test_relaxed_merges_insert_adapters(void **state)
{
    fixture *f = *state;
    relaxed_case(f, GM_OP_AVGPOOL2D, GM_OP_BATCHNORM2D, 3); /* down and channels */
    relaxed_case(f, GM_OP_AVGPOOL2D, GM_OP_AVGPOOL2D, 1);   /* down only */
    relaxed_case(f, GM_OP_CONV2D, GM_OP_UPSAMPLE, 3);       /* channels and up */
    relaxed_case(f, GM_OP_CONV2D, GM_OP_BATCHNORM2D, 2);    /* channels only */
    gm_block b;
    gm_error err;
    assert_int_equal(gm_fgraph_adapter((gm_shape){8, 16, 16}, (gm_shape){16, 6, 6}, &b, &err), GM_ESHAPE);
    assert_int_equal(gm_fgraph_adapter((gm_shape){8, 16, 16}, (gm_shape){8, 8, 4}, &b, &err), GM_ESHAPE);
    assert_int_equal(gm_fgraph_adapter((gm_shape){8, 16, 16}, (gm_shape){8, 16, 16}, &b, &err), GM_ESHAPE);
    assert_int_equal(gm_fgraph_adapter((gm_shape){8, 1, 1}, (gm_shape){8, 32, 32}, &b, &err), GM_ESHAPE);
    assert_false(gm_fgraph_adaptable((gm_shape){8, 16, 16}, (gm_shape){8, 16, 8}));
    assert_true(gm_fgraph_adaptable((gm_shape){8, 16, 16}, (gm_shape){4, 4, 4}));
}

static void test_elite_weights_flow(void **state)
{
    fixture *f = *state;
    gm_fgraph *g = new_graph(f), *g2 = malloc(sizeof *g2);
    assert_non_null(g2);
    gm_rng rng;
    gm_rng_seed(&rng, 4);
    gm_error err;
    assert_int_equal(gm_mutate_random(g, &rng, 3, 1 << 30, &err), GM_OK);
    /* the elite's "fine-tuned" model: distinctive values everywhere */
    gm_wstore st = originals(f);
    gm_mfile elite, out;
    assert_int_equal(gm_fgraph_to_mfile(g, &st, 3, &elite, &err), GM_OK);
    for (size_t i = 0; i < elite.nparams; i++) elite.params[i] = 1000.0f + (float)i;
    for (size_t i = 0; i < elite.nbuffers; i++) elite.buffers[i] = 1.0e6f + (float)i;
    copy_graph(g2, g);
    gm_fgraph_use_elite_weights(g2, 42);
    assert_int_equal(gm_mutate_random(g2, &rng, 2, 0, &err), GM_OK);
    for (int i = 0; i < g2->nnodes; i++) assert_int_equal(g2->nodes[i].w.elite, 42);
    const gm_mfile *elites[1] = {&elite};
    int ids[1] = {42};
    gm_wstore est = {.nmodels = NMODELS, .models = f->mp, .nelites = 1, .elite_ids = ids, .elites = elites};
    gm_status s = gm_fgraph_to_mfile(g2, &est, 9, &out, &err);
    if (s != GM_OK) fail_msg("%s", err.msg);
    size_t po = 0;
    for (int i = 0; i < g2->nnodes; i++) {
        int src = g2->nodes[i].w.node;
        size_t so = 0, np = gm_block_nparams(&g2->nodes[i].block);
        for (int k = 0; k < src; k++) so += gm_block_nparams(&elite.blocks[k]);
        assert_int_equal(gm_block_nparams(&elite.blocks[src]), np);
        assert_memory_equal(out.params + po, elite.params + so, np * sizeof(float));
        po += np;
    }
    for (size_t i = 0; i < out.nparams; i++) assert_true(out.params[i] >= 1000.0f);
    for (size_t i = 0; i < out.nbuffers; i++) assert_true(out.buffers[i] >= 1.0e6f);
    gm_mfile_free(&out);
    /* a store without that elite, and a node pointed at a block of another size */
    assert_int_equal(gm_fgraph_to_mfile(g2, &st, 9, &out, &err), GM_EINVAL);
    assert_non_null(strstr(err.msg, "elite 42"));
    int victim = g2->nnodes - 1, other = -1;
    for (int k = 0; k < elite.nblocks && other < 0; k++)
        if (gm_block_nparams(&elite.blocks[k]) != gm_block_nparams(&g2->nodes[victim].block)) other = k;
    assert_true(other >= 0);
    g2->nodes[victim].w.node = other;
    assert_int_equal(gm_fgraph_to_mfile(g2, &est, 9, &out, &err), GM_EFORMAT);
    char name[32];
    snprintf(name, sizeof name, "node %d", victim);
    assert_non_null(strstr(err.msg, name));
    assert_null(out.params);
    gm_mfile_free(&elite);
    free(g);
    free(g2);
}

static void test_bad_models_and_encodings(void **state)
{
    fixture *f = *state;
    gm_fgraph *g = malloc(sizeof *g);
    assert_non_null(g);
    gm_error err;
    gm_mfile bad = f->models[1];
    const gm_mfile *mp[NMODELS] = {f->mp[0], &bad, f->mp[2]};
    bad.std[2] = 0.9f;
    assert_int_equal(gm_fgraph_from_models(g, mp, NMODELS, &err), GM_EINVAL);
    assert_non_null(strstr(err.msg, "model 1"));
    bad = f->models[1];
    bad.input.h = 32;
    assert_int_equal(gm_fgraph_from_models(g, mp, NMODELS, &err), GM_EINVAL);
    assert_non_null(strstr(err.msg, "model 1"));
    bad = f->models[1];
    bad.ntasks = 2;
    assert_int_equal(gm_fgraph_from_models(g, mp, NMODELS, &err), GM_EINVAL);
    assert_non_null(strstr(err.msg, "model 1"));
    /* the same model twice: two tasks of one name */
    const gm_mfile *twice[NMODELS] = {f->mp[0], f->mp[1], f->mp[0]};
    assert_int_equal(gm_fgraph_from_models(g, twice, NMODELS, &err), GM_EINVAL);
    assert_non_null(strstr(err.msg, "models 0 and 2 both serve task"));
    /* a broken graph: check names the node */
    gm_fgraph *ok = new_graph(f);
    copy_graph(g, ok);
    g->nodes[5].task = 0;
    assert_int_equal(gm_fgraph_check(g, &err), GM_EINVAL);
    copy_graph(g, ok);
    g->nodes[3].parent = 7;
    assert_int_equal(gm_fgraph_check(g, &err), GM_EINVAL);
    assert_non_null(strstr(err.msg, "node 3"));
    /* encodings: truncated, a wrong model count, a node reading a later one */
    int32_t enc[GM_FG_ENC_HEADER + GM_FG_ENC_PER_NODE * 64];
    int n = gm_fgraph_encode(ok, enc, (int)(sizeof enc / sizeof *enc));
    assert_true(n > 0);
    assert_int_equal(gm_fgraph_decode(g, enc, n - 1, f->mp, NMODELS, &err), GM_EFORMAT);
    assert_int_equal(gm_fgraph_decode(g, enc, n, f->mp, 2, &err), GM_EINVAL);
    enc[GM_FG_ENC_HEADER + 2 * GM_FG_ENC_PER_NODE + 2] = 9;
    assert_int_equal(gm_fgraph_decode(g, enc, n, f->mp, NMODELS, &err), GM_EFORMAT);
    assert_non_null(strstr(err.msg, "node 2"));
    free(ok);
    free(g);
}

/*
 * A residual block merged onto another model's map gets its identity shortcut
 * projected: one more op, the same outputs until the stitch changes its
 * weights (identity initialisation), an encoding that keeps it, hashes that
 * tell it apart, and encodings that claim one where none can be are refused.
 */
static void test_projected_shortcuts(void **state)
{
    fixture *f = *state;
    gm_fgraph *g = new_graph(f), *h = malloc(sizeof *h), *plain = malloc(sizeof *plain);
    assert_non_null(h);
    assert_non_null(plain);
    gm_error err;
    /* the first identity residual block of model 1, and a merge that re-parents it onto another model */
    int b = -1;
    for (int i = 0; i < g->nnodes && b < 0; i++)
        if (g->nodes[i].model == 1 && gm_block_identity_add(&g->nodes[i].block) >= 0) b = i;
    assert_true(b >= 0);
    gm_merge ms[4 * GM_FG_MAX_NODES];
    const int nm = gm_mutate_list(g, 0, ms, (int)(sizeof ms / sizeof *ms));
    int k = 0;
    while (k < nm && !(ms[k].b == b && g->nodes[ms[k].a].model != 1)) k++;
    assert_true(k < nm);
    const int nops = g->nodes[b].block.nops;
    assert_ok(gm_mutate_apply(g, ms[k], &err), err);
    copy_graph(plain, g);
    assert_int_equal(gm_fgraph_project_seams(g), 1);
    assert_int_equal(gm_fgraph_project_seams(g), 0); /* once */
    int pn = -1;
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].proj) pn = i;
    assert_true(pn >= 0);
    assert_int_equal(g->nodes[pn].block.nops, nops + 1);
    assert_valid(g);
    assert_true(gm_fgraph_location_hash(g) != gm_fgraph_location_hash(plain));
    assert_true(gm_fgraph_topology_hash(g) != gm_fgraph_topology_hash(plain));
    /* the projection starts as the identity: every task's logits as without it */
    gm_wstore st = originals(f);
    gm_mfile m, mp;
    assert_ok(gm_fgraph_to_mfile(g, &st, 1, &m, &err), err);
    assert_ok(gm_fgraph_to_mfile(plain, &st, 1, &mp, &err), err);
    assert_int_equal(m.nparams, gm_fgraph_nparams(g));
    float x[BATCH * 3 * 16 * 16], *want[NMODELS], *got[NMODELS];
    gm_rng rng;
    gm_rng_seed(&rng, 77);
    gm_fill_uniform(x, sizeof x / sizeof *x, &rng, -1, 1);
    run_model(f, &mp, x, want);
    run_model(f, &m, x, got);
    for (int t = 0; t < NMODELS; t++)
        gm_assert_all_close("logits with the identity projection", got[t], want[t], BATCH * m.tasks[t].classes, 1e-5,
                            1e-5);
    free_logits(want, NMODELS);
    free_logits(got, NMODELS);
    /* an elite's projected block gives its weights as they are */
    const int eid = 7;
    gm_wstore es = st;
    const gm_mfile *ep[1] = {&m};
    es.nelites = 1;
    es.elite_ids = &eid;
    es.elites = ep;
    copy_graph(h, g);
    gm_fgraph_use_elite_weights(h, eid);
    gm_mfile me;
    assert_ok(gm_fgraph_to_mfile(h, &es, 2, &me, &err), err);
    assert_memory_equal(me.params, m.params, sizeof(float) * m.nparams);
    gm_mfile_free(&me);
    gm_mfile_free(&m);
    gm_mfile_free(&mp);
    /* the encoding keeps it; a flag of 2, or one on a block without an identity shortcut, is refused */
    int32_t enc[GM_FG_ENC_HEADER + GM_FG_ENC_PER_NODE * 64];
    const int n = gm_fgraph_encode(g, enc, (int)(sizeof enc / sizeof *enc));
    assert_true(n > 0);
    assert_ok(gm_fgraph_decode(h, enc, n, f->mp, NMODELS, &err), err);
    assert_graphs_equal(h, g);
    enc[GM_FG_ENC_HEADER + pn * GM_FG_ENC_PER_NODE + 6] = 2;
    assert_int_equal(gm_fgraph_decode(h, enc, n, f->mp, NMODELS, &err), GM_EFORMAT);
    assert_non_null(strstr(err.msg, "projection flag"));
    enc[GM_FG_ENC_HEADER + pn * GM_FG_ENC_PER_NODE + 6] = 1;
    enc[GM_FG_ENC_HEADER + 0 * GM_FG_ENC_PER_NODE + 6] = 1; /* node 0: a plain convolution block */
    assert_int_equal(gm_fgraph_decode(h, enc, n, f->mp, NMODELS, &err), GM_EFORMAT);
    assert_non_null(strstr(err.msg, "node 0"));
    free(g);
    free(h);
    free(plain);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unmutated_reproduces_models),
        cmocka_unit_test(test_cross_model_merge_shares_prefix),
        cmocka_unit_test(test_intra_model_merge_skips_layers),
        cmocka_unit_test(test_cycle_refused),
        cmocka_unit_test(test_list_complete_on_originals),
        cmocka_unit_test(test_relaxed_merges_insert_adapters),
        cmocka_unit_test(test_elite_weights_flow),
        cmocka_unit_test(test_bad_models_and_encodings),
        cmocka_unit_test(test_projected_shortcuts),
        cmocka_unit_test(test_random_merges_keep_invariants),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

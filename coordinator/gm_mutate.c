#include "gm_mutate.h"

#include <stdlib.h>
#include <string.h>

static int shape_eq(gm_shape a, gm_shape b) { return a.c == b.c && a.h == b.h && a.w == b.w; }

/* Output shapes of every node (g must be valid: parent < index, blocks fit). */
static void out_shapes(const gm_fgraph *g, gm_shape *out)
{
    for (int i = 0; i < g->nnodes; i++) {
        int p = g->nodes[i].parent;
        if (gm_block_infer(&g->nodes[i].block, p < 0 ? g->input : out[p], &out[i], NULL) != GM_OK)
            out[i] = (gm_shape){0, 0, 0};
    }
}

/* sub[i] = 1 for b and every node below it (topological order: one pass). */
static void mark_subtree(const gm_fgraph *g, int b, char *sub)
{
    memset(sub, 0, (size_t)g->nnodes);
    sub[b] = 1;
    for (int i = b + 1; i < g->nnodes; i++) sub[i] = g->nodes[i].parent >= 0 && sub[g->nodes[i].parent];
}

/*
 * Enumerates the merges of one kind (relaxed 0: equal shapes; 1: adaptable
 * different shapes) in a fixed order. A merge's result depends only on b and
 * its new parent p, so each (p, b) is listed once, with a = p's first child.
 * Stores the first cap in out, the one numbered pick in *picked; returns the count.
 */
static int enumerate(const gm_fgraph *g, int relaxed, gm_merge *out, int cap, int pick, gm_merge *picked)
{
    gm_shape o[GM_FG_MAX_NODES];
    int first[GM_FG_MAX_NODES + 1]; /* first child of node p in slot p + 1; slot 0: the input */
    char sub[GM_FG_MAX_NODES];
    out_shapes(g, o);
    for (int k = 0; k <= g->nnodes; k++) first[k] = -1;
    for (int i = g->nnodes - 1; i >= 0; i--) first[g->nodes[i].parent + 1] = i;
    int count = 0;
    if (relaxed && g->nnodes >= GM_FG_MAX_NODES) return 0; /* no room for an adapter */
    for (int b = 0; b < g->nnodes; b++) {
        mark_subtree(g, b, sub);
        int bp = g->nodes[b].parent;
        gm_shape want = bp < 0 ? g->input : o[bp];
        for (int p = -1; p < g->nnodes; p++) {
            int a = first[p + 1];
            if (p == bp || a < 0 || (p >= 0 && sub[p])) continue;
            gm_shape have = p < 0 ? g->input : o[p];
            int ok = relaxed ? gm_fgraph_adaptable(have, want) : shape_eq(have, want);
            if (!ok) continue;
            gm_merge m = {a, b, relaxed};
            if (count < cap) out[count] = m;
            if (count == pick) *picked = m;
            count++;
        }
    }
    return count;
}

int gm_mutate_list(const gm_fgraph *g, int relaxed, gm_merge *out, int cap)
{
    if (cap < 0 || !out) cap = 0;
    int ns = enumerate(g, 0, out, cap, -1, NULL);
    if (!relaxed) return ns;
    int used = ns < cap ? ns : cap;
    return ns + enumerate(g, 1, out ? out + used : NULL, cap - used, -1, NULL);
}

/*
 * Drops the nodes no head depends on and renumbers the rest in topological
 * order, keeping the old relative order wherever the parents allow it (a
 * node's key is its old index; an inserted adapter's key puts it just before
 * the node it feeds). nodes/parent hold n entries; the result goes into g.
 */
static void compact(gm_fgraph *g, gm_fnode *nodes, int n, const int *key)
{
    char alive[GM_FG_MAX_NODES + 1] = {0}, placed[GM_FG_MAX_NODES + 1] = {0};
    int newidx[GM_FG_MAX_NODES + 1];
    for (int i = 0; i < n; i++)
        if (nodes[i].task >= 0)
            for (int k = i; k >= 0 && !alive[k]; k = nodes[k].parent) alive[k] = 1;
    int m = 0;
    for (;;) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            int p = nodes[i].parent;
            if (!alive[i] || placed[i] || (p >= 0 && !placed[p])) continue;
            if (best < 0 || key[i] < key[best]) best = i;
        }
        if (best < 0) break;
        placed[best] = 1;
        newidx[best] = m++;
    }
    g->nnodes = 0;
    for (int i = 0; i < n; i++) {
        if (!alive[i]) continue;
        gm_fnode nd = nodes[i];
        nd.parent = nd.parent < 0 ? -1 : newidx[nd.parent];
        g->nodes[newidx[i]] = nd;
    }
    g->nnodes = m;
}

gm_status gm_mutate_apply(gm_fgraph *g, gm_merge m, gm_error *err)
{
    int n = g->nnodes, a = m.a, b = m.b;
    if (a < 0 || a >= n || b < 0 || b >= n || a == b)
        return gm_error_set(err, GM_EINVAL, "merge (%d, %d): nodes must be two different ones of 0..%d", a, b, n - 1);
    int p = g->nodes[a].parent;
    if (p == g->nodes[b].parent && p < 0)
        return gm_error_set(err, GM_EINVAL, "merge (%d, %d): both already read the input: nothing to merge", a, b);
    if (p == g->nodes[b].parent)
        return gm_error_set(err, GM_EINVAL, "merge (%d, %d): both already read node %d: nothing to merge", a, b, p);
    for (int k = p, steps = 0; k >= 0 && steps <= n; k = g->nodes[k].parent, steps++)
        if (k == b)
            return gm_error_set(err, GM_EINVAL,
                                "merge (%d, %d): node %d's input (node %d) depends on node %d; re-parenting %d there "
                                "would make a cycle",
                                a, b, a, p, b, b);
    gm_shape have = gm_fgraph_in_shape(g, a), want = gm_fgraph_in_shape(g, b);
    /* a relaxed merge of equal shapes needs no adapter: it is the strict one */
    int adapt = !shape_eq(have, want);
    if (adapt && !m.relaxed)
        return gm_error_set(err, GM_ESHAPE, "merge (%d, %d): node %d reads %dx%dx%d, node %d %dx%dx%d (a strict merge "
                            "needs equal shapes)", a, b, a, have.c, have.h, have.w, b, want.c, want.h, want.w);
    gm_block ad;
    if (adapt) {
        gm_error e;
        if (gm_fgraph_adapter(have, want, &ad, &e) != GM_OK)
            return gm_error_set(err, GM_ESHAPE, "merge (%d, %d): %s", a, b, e.msg);
        if (n >= GM_FG_MAX_NODES)
            return gm_error_set(err, GM_EINVAL, "merge (%d, %d): the adapter would make more than %d nodes", a, b,
                                GM_FG_MAX_NODES);
    }
    gm_fnode *nodes = malloc(sizeof *nodes * (size_t)(n + 1));
    if (!nodes) return gm_error_set(err, GM_ENOMEM, "merge (%d, %d): out of memory", a, b);
    int key[GM_FG_MAX_NODES + 1];
    memcpy(nodes, g->nodes, sizeof *nodes * (size_t)n);
    for (int i = 0; i < n; i++) key[i] = 2 * i;
    nodes[b].parent = p;
    if (adapt) {
        nodes[n] = (gm_fnode){.block = ad, .model = -1, .layer = -1, .parent = p, .task = -1, .w = {-1, -1}};
        nodes[b].parent = n;
        key[n] = 2 * b - 1;
    }
    compact(g, nodes, n + adapt, key);
    free(nodes);
    return GM_OK;
}

gm_status gm_mutate_random(gm_fgraph *g, gm_rng *rng, int n, int relaxed_below, gm_error *err)
{
    for (int step = 0; step < n; step++) {
        int ns = enumerate(g, 0, NULL, 0, -1, NULL), nr = 0;
        if (relaxed_below > 0 && ns < relaxed_below) nr = enumerate(g, 1, NULL, 0, -1, NULL);
        if (ns + nr == 0)
            return gm_error_set(err, GM_EINVAL, "random merges: step %d of %d finds no merge (%d nodes%s)", step + 1, n,
                                g->nnodes, relaxed_below > 0 ? ", relaxed ones included" : "");
        int k = (int)gm_rng_below(rng, (uint32_t)(ns + nr));
        gm_merge m = {0, 0, 0};
        if (k < ns)
            enumerate(g, 0, NULL, 0, k, &m);
        else
            enumerate(g, 1, NULL, 0, k - ns, &m);
        gm_status s = gm_mutate_apply(g, m, err);
        if (s != GM_OK) return s;
    }
    return GM_OK;
}

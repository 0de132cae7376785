#include "gm_models.h"

#include <stdio.h>

static int count_widths(const int *widths)
{
    int n = 0;
    while (n < GM_MAX_STAGES && widths[n] > 0) n++;
    return n;
}

gm_status gm_vgg_preset(gm_vgg_config *c, int depth, const int *widths, gm_error *err)
{
    static const int vgg11[GM_MAX_STAGES] = {1, 1, 3, 3}, vgg13[GM_MAX_STAGES] = {2, 2, 3, 3};
    if (depth != 11 && depth != 13)
        return gm_error_set(err, GM_EINVAL, "vgg: depth %d is not 11 or 13", depth);
    int n = count_widths(widths);
    if (n < 1) return gm_error_set(err, GM_EINVAL, "vgg: no stage widths given");
    *c = (gm_vgg_config){.nstages = n, .fc = 2 * widths[n - 1], .dropout = 0.5f};
    int total = 0;
    for (int s = 0; s < n; s++) {
        c->widths[s] = widths[s];
        c->convs[s] = (depth == 11 ? vgg11 : vgg13)[GM_MAX_STAGES - n + s];
        total += c->convs[s];
    }
    /* fewer stages than four: keep the conv count by adding to the last stage */
    c->convs[n - 1] += (depth - 3) - total;
    return GM_OK;
}

gm_status gm_resnet_preset(gm_resnet_config *c, int depth, const int *widths, gm_error *err)
{
    if (depth < 8 || depth > 18 || depth % 2)
        return gm_error_set(err, GM_EINVAL, "resnet: depth %d is not one of 8, 10, ..., 18", depth);
    int n = count_widths(widths), nblocks = (depth - 2) / 2;
    if (n < 1) return gm_error_set(err, GM_EINVAL, "resnet: no stage widths given");
    if (nblocks < n) n = nblocks;
    if (nblocks > 2 * n)
        return gm_error_set(err, GM_EINVAL, "resnet: depth %d needs more than %d stages", depth, n);
    *c = (gm_resnet_config){.nstages = n};
    for (int s = 0; s < n; s++) {
        c->widths[s] = widths[s];
        c->blocks[s] = 1 + (s < nblocks - n); /* extra blocks go to the early stages */
    }
    return GM_OK;
}

static gm_status add(gm_model *m, gm_block b, gm_shape *cur, gm_error *err)
{
    if (m->nblocks >= GM_MODEL_MAX_BLOCKS)
        return gm_error_set(err, GM_EINVAL, "model: more than %d blocks", GM_MODEL_MAX_BLOCKS);
    gm_status s = gm_block_infer(&b, *cur, cur, err);
    if (s != GM_OK) return s;
    b.model_id = 0;
    b.layer_id = m->nblocks;
    m->blocks[m->nblocks++] = b;
    return GM_OK;
}

static void model_init(gm_model *m, gm_shape input, int classes)
{
    m->input = input;
    m->classes = classes;
    m->nblocks = 0;
}

gm_status gm_model_vgg(gm_model *m, const gm_vgg_config *c, gm_shape input, int classes, gm_error *err)
{
    if (classes < 2) return gm_error_set(err, GM_EINVAL, "vgg: %d classes (need 2 or more)", classes);
    if (c->nstages < 1 || c->nstages > GM_MAX_STAGES)
        return gm_error_set(err, GM_EINVAL, "vgg: %d stages (1 to %d)", c->nstages, GM_MAX_STAGES);
    model_init(m, input, classes);
    gm_shape cur = input;
    gm_status s = GM_OK;
    for (int st = 0; st < c->nstages && s == GM_OK; st++) {
        for (int i = 0; i < c->convs[st] && s == GM_OK; i++)
            s = add(m, gm_block_conv(cur.c, c->widths[st], 3, 1, 1, 1, 1), &cur, err);
        if (s == GM_OK && cur.h >= 2 && cur.w >= 2) s = add(m, gm_block_maxpool(2, 2), &cur, err);
    }
    if (s == GM_OK) s = add(m, gm_block_linear(cur, c->fc, 1, c->dropout), &cur, err);
    if (s == GM_OK) s = add(m, gm_block_linear(cur, c->fc, 1, c->dropout), &cur, err);
    if (s == GM_OK) s = add(m, gm_block_head(cur, classes), &cur, err);
    return s;
}

gm_status gm_model_resnet(gm_model *m, const gm_resnet_config *c, gm_shape input, int classes, gm_error *err)
{
    if (classes < 2) return gm_error_set(err, GM_EINVAL, "resnet: %d classes (need 2 or more)", classes);
    if (c->nstages < 1 || c->nstages > GM_MAX_STAGES)
        return gm_error_set(err, GM_EINVAL, "resnet: %d stages (1 to %d)", c->nstages, GM_MAX_STAGES);
    model_init(m, input, classes);
    gm_shape cur = input;
    gm_status s = add(m, gm_block_conv(cur.c, c->widths[0], 3, 1, 1, 1, 1), &cur, err);
    for (int st = 0; st < c->nstages && s == GM_OK; st++)
        for (int i = 0; i < c->blocks[st] && s == GM_OK; i++)
            s = add(m, gm_block_basic(cur.c, c->widths[st], st > 0 && i == 0 ? 2 : 1), &cur, err);
    if (s == GM_OK) s = add(m, gm_block_gap(), &cur, err);
    if (s == GM_OK) s = add(m, gm_block_head(cur, classes), &cur, err);
    return s;
}

gm_net_desc gm_model_desc(const gm_model *m)
{
    return (gm_net_desc){.input = m->input, .nblocks = m->nblocks, .blocks = m->blocks, .parent = NULL};
}

size_t gm_model_nparams(const gm_model *m)
{
    size_t n = 0;
    for (int b = 0; b < m->nblocks; b++) n += gm_block_nparams(&m->blocks[b]);
    return n;
}

gm_status gm_model_from_name(gm_model *m, const char *arch, const int *widths, gm_shape input,
                             int classes, gm_error *err)
{
    int depth = 0;
    char tail;
    if (sscanf(arch, "vgg%d%c", &depth, &tail) == 1) {
        gm_vgg_config c;
        gm_status s = gm_vgg_preset(&c, depth, widths, err);
        return s == GM_OK ? gm_model_vgg(m, &c, input, classes, err) : s;
    }
    if (sscanf(arch, "resnet%d%c", &depth, &tail) == 1) {
        gm_resnet_config c;
        gm_status s = gm_resnet_preset(&c, depth, widths, err);
        return s == GM_OK ? gm_model_resnet(m, &c, input, classes, err) : s;
    }
    return gm_error_set(err, GM_EINVAL, "unknown architecture \"%s\" (known: vgg11, vgg13, resnet8 to resnet18)", arch);
}

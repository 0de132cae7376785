#define _POSIX_C_SOURCE 200809L
#include "gm_worker.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_fs.h"
#include "gm_stitch_graph.h"
#include "gm_train.h"

struct gm_worker {
    gm_worker_opts o;
    gm_mfile models[GM_MF_MAX_TASKS];
    const gm_mfile *mptr[GM_MF_MAX_TASKS];
    gm_ft_data data;
    gm_backend *be;                /* fine-tuning */
    gm_backend *lat_be;            /* batch-1 latency: one CPU thread (as gmorph eval reports it), or the device */
    int own_be;                    /* 1: be and lat_be are the worker's own CPU backends */
    gm_net *base[GM_MF_MAX_TASKS]; /* the originals at batch 1 on lat_be: the latency peer */
    float *probe;                  /* stitch probe: distillation inputs spread over every dataset */
    long nprobe;
    unsigned char *probe_own;      /* nprobe x nmodels: sample s from model t's dataset */
    gm_net *teacher[GM_MF_MAX_TASKS]; /* the originals at the fine-tune batch on be: feature matching's teachers */
};

void gm_job_free(gm_job *j)
{
    gm_mfile_free(&j->src);
    j->source = -1;
}

void gm_result_free(gm_result *r) { gm_mfile_free(&r->tuned); }

const gm_ft_data *gm_worker_data(const gm_worker *w) { return &w->data; }

const gm_mfile *const *gm_worker_models(const gm_worker *w) { return w->mptr; }

const unsigned char *gm_worker_probe_own(const gm_worker *w) { return w->probe_own; }

const float *gm_worker_probe(const gm_worker *w, long *n)
{
    *n = w->nprobe;
    return w->probe;
}

void gm_worker_free(gm_worker *w)
{
    if (!w) return;
    for (int t = 0; t < GM_MF_MAX_TASKS; t++) {
        gm_mfile_free(&w->models[t]);
        gm_net_free(w->base[t]);
        gm_net_free(w->teacher[t]);
    }
    gm_ft_data_free(&w->data);
    free(w->probe);
    free(w->probe_own);
    if (w->own_be) {
        gm_backend_free(w->be);
        gm_backend_free(w->lat_be);
    }
    free(w);
}

/*
 * The stitch's probe: n distillation inputs at an even stride, so that every
 * dataset the distillation set concatenates is in it.
 */
static gm_status make_probe(gm_worker *w, long n, gm_error *err)
{
    const gm_ft_data *d = &w->data;
    if (n > d->nft) n = d->nft;
    w->probe = malloc(sizeof(float) * (size_t)n * d->numel);
    w->probe_own = malloc((size_t)n * (size_t)d->n);
    if (!w->probe || !w->probe_own)
        return gm_error_set(err, GM_ENOMEM, "out of memory for %ld stitch probe samples", n);
    for (long i = 0; i < n; i++) {
        const long row = i * d->nft / n;
        memcpy(w->probe + (size_t)i * d->numel, d->x_ft + (size_t)row * d->numel, sizeof(float) * d->numel);
        for (int t = 0; t < d->n; t++)
            w->probe_own[(size_t)i * d->n + t] = row >= d->ft_first[t] && row < d->ft_first[t] + d->ft_count[t];
    }
    w->nprobe = n;
    return GM_OK;
}

gm_status gm_worker_open(gm_worker **out, const gm_worker_opts *o, gm_error *err)
{
    const gm_search_config *c = o->config;
    gm_worker *w = calloc(1, sizeof *w);
    *out = NULL;
    if (!w) return gm_error_set(err, GM_ENOMEM, "out of memory");
    w->o = *o;
    gm_status st = GM_OK;
    for (int t = 0; st == GM_OK && t < c->nmodels; t++) {
        st = gm_mfile_load(c->models[t], &w->models[t], err);
        w->mptr[t] = &w->models[t];
        if (st == GM_OK && w->models[t].ntasks != 1)
            st = gm_error_set(err, GM_EINVAL, "%s: a model to fuse has one task, this one has %d", c->models[t],
                              w->models[t].ntasks);
    }
    w->own_be = !o->device;
    if (o->device) w->be = w->lat_be = o->device;
    if (st == GM_OK && w->own_be) st = gm_backend_cpu_create(&w->be, c->threads, err);
    /* Threads only add wake-up costs to one small image: 2 threads made B2's batch-1 inference 3x slower. */
    if (st == GM_OK && w->own_be) st = gm_backend_cpu_create(&w->lat_be, 1, err);
    if (st == GM_OK && gm_fs_mkdirs(c->out) != 0) /* the teachers' logits are cached in the run folder */
        st = gm_error_set(err, GM_EIO, "%s: cannot create: %s", c->out, strerror(errno));
    char cache[1200];
    snprintf(cache, sizeof cache, "%s/teacher.h5", c->out);
    const char *data[GM_MF_MAX_TASKS];
    for (int t = 0; t < c->nmodels; t++) data[t] = c->data[t][0] ? c->data[t] : NULL;
    gm_ft_data_opts fo = {.samples = c->ft_pool > c->ft_samples ? c->ft_pool : c->ft_samples, .val_samples = c->val_samples, .seed = c->seed,
                          .threads = c->threads, .cache = cache, .data = data};
    if (st == GM_OK) st = gm_ft_data_load(&w->data, w->mptr, c->nmodels, &fo, err);
    for (int t = 0; st == GM_OK && t < c->nmodels; t++) {
        gm_net_desc d = gm_mfile_desc(&w->models[t]);
        st = gm_net_create(&w->base[t], w->lat_be, &d, 1, 1, err);
        if (st == GM_OK) st = gm_mfile_to_net(&w->models[t], w->base[t], err);
    }
    if (st == GM_OK && (c->stitch || c->guided) && !c->gmorph_mode) st = make_probe(w, c->stitch_probe, err);
    if (st != GM_OK) {
        gm_worker_free(w);
        return st;
    }
    *out = w;
    return GM_OK;
}

gm_status gm_worker_baseline(gm_worker *w, double *ms, gm_error *err)
{
    const gm_search_config *c = w->o.config;
    return gm_measure_latency_seq(w->base, c->nmodels, c->lat_warmup, c->lat_runs, ms, err);
}

/*
 * Assembles the candidate's model: structure from its encoding, weights from
 * the originals or its source elite, stitched where merges changed what a
 * block reads (unless GMorph mode or stitch.enabled is off).
 */
static gm_status build(gm_worker *w, const gm_job *job, gm_mfile *m, int *same, gm_stitch_report *rep,
                       gm_error *err)
{
    const gm_search_config *c = w->o.config;
    gm_fgraph *g = malloc(sizeof *g);
    if (!g) return gm_error_set(err, GM_ENOMEM, "out of memory");
    gm_status st = gm_fgraph_decode(g, job->enc, job->enc_len, w->mptr, c->nmodels, err);
    const gm_mfile *src = &job->src;
    gm_wstore store = {c->nmodels, w->mptr, job->source >= 0, &job->source, &src};
    if (st == GM_OK) st = gm_fgraph_to_mfile(g, &store, c->seed + (uint64_t)job->id, m, err);
    if (st == GM_OK) gm_stitch_same_inputs(g, &store, same);
    gm_stitch_opts so = {.ridge = c->stitch_ridge, .cascade = c->stitch_cascade, .fit = (gm_stitch_fit_kind)c->stitch_fit};
    if (st == GM_OK && c->stitch && !c->gmorph_mode)
        st = gm_stitch_graph(g, m, &store, w->probe, w->nprobe, w->be, &so, rep, err);
    else if (st == GM_OK) gm_stitch_plan(g, &store, c->stitch_cascade, rep); /* the seams, for feature matching */
    free(g);
    return st;
}

/* A net of model file f on the fine-tune backend at the fine-tune batch: a feature teacher. */
static gm_status teacher_net(gm_worker *w, const gm_mfile *f, gm_net **out, gm_error *err)
{
    gm_net_desc d = gm_mfile_desc(f);
    gm_status st = gm_net_create(out, w->be, &d, w->o.config->batch, 1, err);
    if (st == GM_OK) st = gm_mfile_to_net(f, *out, err);
    if (st != GM_OK) {
        gm_net_free(*out);
        *out = NULL;
    }
    return st;
}

/*
 * Feature matching at every seam of the plan: the originals' nets are made
 * once and kept; an elite's (*elite_net) lives for this job.
 */
static gm_status seam_features(gm_worker *w, const gm_job *job, const gm_stitch_report *rep, gm_ft_feature *f,
                               int *nf, gm_net **elite_net, gm_error *err)
{
    gm_status st = GM_OK;
    *nf = 0;
    for (int k = 0; st == GM_OK && k < rep->nsites; k++) {
        const gm_stitch_site *s = &rep->site[k];
        gm_net **slot = s->src == &job->src ? elite_net : NULL;
        for (int t = 0; !slot && t < w->o.config->nmodels; t++)
            if (s->src == &w->models[t]) slot = &w->teacher[t];
        if (!slot) continue;
        if (!*slot) st = teacher_net(w, s->src, slot, err);
        if (st == GM_OK) f[(*nf)++] = (gm_ft_feature){s->match, *slot, s->src_block};
    }
    return st;
}

/* An epoch: samples rows per distinct dataset of the pool (0: the whole pool, as without one). */
static long epoch_rows(const gm_search_config *c, const gm_ft_data *d)
{
    if (c->ft_pool <= c->ft_samples) return 0;
    long n = 0;
    for (int t = 0; t < d->n; t++) {
        int first = 1; /* tasks on one dataset share its rows */
        for (int u = 0; u < t; u++) first &= d->ft_first[u] != d->ft_first[t];
        if (first) n += d->ft_count[t] < c->ft_samples ? d->ft_count[t] : c->ft_samples;
    }
    return n;
}

gm_status gm_worker_run(gm_worker *w, const gm_job *job, gm_result *r, gm_error *err)
{
    const gm_search_config *c = w->o.config;
    memset(r, 0, sizeof *r);
    r->ft.first_drop = NAN; /* until a fine-tune measures it */
    r->id = job->id;
    gm_mfile m = {0};
    gm_net *net = NULL;
    int same[GM_FG_MAX_NODES];
    gm_stitch_report rep;
    gm_status st = build(w, job, &m, same, &rep, err);
    gm_net_desc desc = gm_mfile_desc(&m);
    if (st == GM_OK)
        st = gm_net_create(&net, w->be, &desc, c->batch > GM_FT_EVAL_BATCH ? c->batch : GM_FT_EVAL_BATCH,
                           c->seed + (uint64_t)job->id, err);
    if (st == GM_OK) st = gm_mfile_to_net(&m, net, err);
    for (int b = 0; st == GM_OK && c->bn == GM_BN_CHANGED && b < m.nblocks; b++) gm_net_set_block_eval(net, b, same[b]);
    int heads[GM_MF_MAX_TASKS];
    for (int t = 0; t < m.ntasks; t++) heads[t] = m.tasks[t].head;
    gm_ft_opts o = {.max_epochs = c->ft_epochs, .check_every = c->check_every, .batch = c->batch,
                    .lr = (float)c->lr, .frozen_bn = c->bn == GM_BN_FROZEN, .cosine = c->cosine,
                    .logit_mse = c->logit_mse && !c->gmorph_mode,
                    .threshold = c->threshold, .seed = c->seed + (uint64_t)job->id,
                    .abort_check = c->filter_curve ? w->o.abort_check : NULL, .group = w->o.group,
                    .extra_epochs = c->gmorph_mode ? 0 : c->ft_extra_epochs, .stop = w->o.stop,
                    .epoch_rows = epoch_rows(c, &w->data)};
    gm_ft_feature features[GM_STITCH_MAX_SITES];
    gm_net *elite_teacher = NULL;
    char train_block[GM_FG_MAX_NODES];
    if (st == GM_OK && c->feature_weight > 0.0 && !c->gmorph_mode) {
        st = seam_features(w, job, &rep, features, &o.nfeatures, &elite_teacher, err);
        o.features = features;
        o.feature_weight = (float)c->feature_weight;
    }
    if (c->scope_touched && !c->gmorph_mode) { /* GMorph's sub-graph level: what the merges touched */
        for (int b = 0; b < m.nblocks; b++) train_block[b] = (char)!same[b];
        o.train_block = train_block;
    }
    if (st == GM_OK) st = gm_finetune(net, heads, &w->data, &o, &r->ft, err);
    gm_net_free(elite_teacher);
    r->latency_ms = r->base_latency_ms = 0.0;
    /* The structure and metadata of m, the fine-tuned weights of net. */
    gm_mfile tuned = {0};
    if (st == GM_OK && !r->ft.interrupted && (w->o.time_latency || r->ft.status == GM_FT_PASSED))
        st = gm_mfile_from_net(&tuned, net, err);
    if (st == GM_OK && w->o.time_latency && !r->ft.interrupted) {
        gm_net *one = NULL; /* the fine-tuned candidate at batch 1, on the latency backend */
        gm_net_desc d1 = gm_mfile_desc(&tuned);
        st = gm_net_create(&one, w->lat_be, &d1, 1, 1, err);
        if (st == GM_OK) st = gm_mfile_to_net(&tuned, one, err);
        if (st == GM_OK)
            st = gm_measure_latency_pair(one, w->base, c->nmodels, c->lat_warmup, c->lat_runs, &r->latency_ms,
                                         &r->base_latency_ms, err);
        gm_net_free(one);
    }
    if (st == GM_OK && r->ft.status == GM_FT_PASSED && !r->ft.interrupted) {
        free(m.params);
        free(m.buffers);
        m.params = tuned.params;
        m.buffers = tuned.buffers;
        tuned.params = tuned.buffers = NULL;
        for (int t = 0; t < m.ntasks; t++) m.tasks[t].val_accuracy = r->ft.val[t];
        r->tuned = m;
        memset(&m, 0, sizeof m);
    }
    gm_mfile_free(&tuned);
    gm_mfile_free(&m);
    gm_net_free(net);
    return st;
}

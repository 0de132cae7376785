/*
 * gm_search_config: the search config every rank reads (coordinator/README.md
 * documents the JSON). Rank 0 resolves it (file, command-line overrides, or a
 * checkpoint) and sends every rank the same text, so all ranks agree.
 */
#ifndef GM_SEARCH_CONFIG_H
#define GM_SEARCH_CONFIG_H

#include <stdint.h>

#include "gm_error.h"
#include "gm_mfile.h"

typedef enum { GM_POLICY_SA, GM_POLICY_RANDOM } gm_policy;

enum { GM_SEARCH_MAX_WARM = 8 };

/*
 * BatchNorm while fine-tuning (config finetune.bn):
 * - "batch" (default, GMorph's: PyTorch's train mode): batch statistics
 *   everywhere, running averages updated;
 * - "frozen": running statistics everywhere, as at inference. For tasks from
 *   different datasets (B1): batch statistics of the mixed distillation batches
 *   move every branch, even those no merge touched;
 * - "changed": batch statistics only in blocks whose input a merge changed
 *   (the re-parented block, what lies below it, new adapters); the others keep
 *   the statistics of the input they were trained on.
 * results/search.md compares them on B1 and B2.
 */
typedef enum { GM_BN_BATCH, GM_BN_FROZEN, GM_BN_CHANGED } gm_bn_mode;

typedef struct {
    int nmodels;
    char models[GM_MF_MAX_TASKS][1024];  /* model files, one task each */
    char data[GM_MF_MAX_TASKS][1024];    /* dataset per model; "" = the one it records */
    char out[1024];                      /* run folder */
    /* warm_start: earlier sweeps' checkpoints over the same models (coordinator/gm_search_int.h, gm_search_warm) */
    int nwarm;
    char warm_start[GM_SEARCH_MAX_WARM][1024];
    double threshold;                    /* allowed drop per task, e.g. 0.01 */
    gm_policy policy;
    int iterations;
    double time_budget_s;                /* stop proposing after this long; 0: no limit */
    uint64_t seed;
    double t0, alpha;
    int max_elites;
    int merges, relaxed_below;
    /* mutation.guided (coordinator/gm_guide.h): merges drawn toward low stitch residual and high FLOPs saved */
    int guided;
    double guide_explore;     /* mutation.explore: the uniform share of each draw */
    double guide_cost_scale;  /* mutation.cost_scale */
    int trunks;               /* mutation.trunks: deep candidates proposed first (coordinator/gm_trunk.h); 0: none */
    long ft_samples, val_samples;
    long ft_pool;          /* finetune.pool: distinct distillation samples per dataset, each epoch drawing
                              ft_samples of them afresh (0: ft_samples, the same samples every epoch) */
    int ft_epochs, check_every, batch;
    int ft_extra_epochs;   /* finetune.extra_epochs: more for a candidate whose curve reaches the target (gm_finetune.h) */
    double lr;
    gm_bn_mode bn;         /* finetune.bn */
    int cosine;            /* finetune.schedule: 1 "cosine", 0 "constant" */
    double feature_weight; /* finetune.features: weight of feature matching at the seams (0: off; gm_finetune.h) */
    int scope_touched;     /* finetune.scope: 1 "touched" (only blocks whose input a merge changed), 0 "all" */
    int logit_mse;         /* finetune.loss: 0 "l1" (GMorph's), 1 "mse": squared distance to the teachers' logits */
    int filter_dominance, filter_curve;
    /*
     * "stitch" (worker/gm_stitch_graph.h): before fine-tuning, a least-squares
     * map from what a merged block now reads to what it was trained on is
     * folded into its weights. Off in GMorph mode.
     */
    int stitch;             /* stitch.enabled */
    long stitch_probe;      /* stitch.probe: samples the maps are fitted on */
    double stitch_ridge;    /* stitch.ridge */
    int stitch_cascade;     /* stitch.cascade: also below each seam */
    int stitch_fit;         /* stitch.fit: gm_stitch_fit_kind, 0 "input", 1 "output" (default), 2 "best" */
    int stitch_shortcuts;   /* stitch.project_shortcuts: gm_fgraph_project_seams on every candidate */
    /* gmorph_mode: GMorph's method exactly (EuroSys'24): every addition that changes candidates is off */
    int gmorph_mode;
    int threads;
    int lat_warmup, lat_runs;
    /* "run": how the sweep runs (coordinator/README.md) */
    int deterministic;      /* 1: rounds of `round` candidates proposed from the state at the round's start,
                               results applied in id order: the outcome does not depend on timing or on
                               the number of worker groups */
    int round;              /* candidates per round in deterministic mode */
    int checkpoint_every;   /* results between checkpoints (0: only at the end and on signals) */
    double timeout_s;       /* a candidate running longer is dispatched again once, then failed (0: none) */
    char device[16];        /* "cpu" (default), "cuda" or "cuda-tf32" (gm_device.h): what worker ranks
                               fine-tune and time candidates on; rank 0 uses it for the teachers and the
                               final re-timing */
} gm_search_config;

/* GMorph's defaults (T0 100, alpha 0.99, 200 iterations, 2 merges, ...). */
void gm_search_defaults(gm_search_config *c);
/*
 * Reads a JSON config over the defaults (documented in coordinator/README.md);
 * every bad or unknown field is reported by its path and why.
 */
gm_status gm_search_config_load(gm_search_config *c, const char *path, gm_error *err);
/* The same from JSON text; name labels errors (a file name, "checkpoint"). */
gm_status gm_search_config_parse(gm_search_config *c, const char *text, const char *name, gm_error *err);
/*
 * The whole config as JSON text that gm_search_config_parse reads back to the
 * same values: what the checkpoint keeps and what rank 0 sends every rank.
 * Returns malloc'd text (NULL: out of memory); the caller frees it.
 */
char *gm_search_config_to_json(const gm_search_config *c);

/*
 * Whether b can continue the sweep a began: 0 when they agree in every field a
 * sweep cannot change (all but iterations, time_budget_s, threads, out and
 * run's device, checkpoint_every and timeout_s); otherwise 1, with the first
 * field that differs as a path ("finetune.epochs", "models[1]") and both
 * values, a's first, in why (cap bytes). -1: out of memory.
 */
int gm_search_config_diff(const gm_search_config *a, const gm_search_config *b, char *why, size_t cap);

#endif

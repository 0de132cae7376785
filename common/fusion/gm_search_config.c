#define _POSIX_C_SOURCE 200809L
#include "gm_search_config.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_json.h"

void gm_search_defaults(gm_search_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->out, sizeof c->out, "run");
    c->threshold = 0.01;
    c->policy = GM_POLICY_SA;
    c->iterations = 200;
    c->seed = 1;
    c->t0 = 100.0;
    c->alpha = 0.99;
    c->max_elites = 10;
    c->merges = 2;
    c->relaxed_below = 4;
    c->guided = 1;
    c->guide_explore = 0.25;
    c->guide_cost_scale = 0.02; /* results/fusion.md, section 4: the demo on two seeds */
    c->ft_samples = 5000;
    c->val_samples = 2000;
    c->ft_epochs = 10;
    c->ft_extra_epochs = 2;
    c->check_every = 1;
    c->batch = 64;
    c->lr = 1e-3;
    c->bn = GM_BN_BATCH;
    c->cosine = 0;
    c->filter_dominance = 1;
    c->filter_curve = 1;
    c->stitch = 1;
    c->stitch_probe = 1024;
    c->stitch_ridge = 1e-4;
    c->stitch_fit = 1; /* "output": results/fusion.md, B1 drop before fine-tuning */
    c->stitch_shortcuts = 1;
    c->threads = 1;
    c->lat_warmup = 20;
    c->lat_runs = 100;
    c->round = 4;
    c->checkpoint_every = 1;
    snprintf(c->device, sizeof c->device, "cpu");
}

/* ---- config ------------------------------------------------------------------ */

static gm_status get_long(const gm_json *o, const char *k, long long lo, long long hi, long *v, gm_error *err)
{
    long long x = *v;
    gm_status st = gm_json_get_int(o, k, 0, lo, hi, &x, err);
    *v = (long)x;
    return st;
}

/* A string key that must be one of names (NULL-terminated); *v = its index. */
static gm_status get_choice(const gm_json *o, const char *sec, const char *k, const char *const *names, int *v,
                            const char *path, gm_error *err)
{
    char s[32] = "";
    gm_status st = gm_json_get_string(o, k, 0, s, sizeof s, err);
    if (st != GM_OK || !s[0]) return st;
    for (int i = 0; names[i]; i++)
        if (!strcmp(s, names[i])) {
            *v = i;
            return GM_OK;
        }
    char list[128] = "";
    for (int i = 0; names[i]; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s\"%s\"", i ? (names[i + 1] ? ", " : " or ") : "",
                 names[i]);
    return gm_error_set(err, GM_EINVAL, "%s: %s.%s: expected %s, got \"%s\"", path, sec, k, list, s);
}

static gm_status get_int(const gm_json *o, const char *k, long long lo, long long hi, int *v, gm_error *err)
{
    long long x = *v;
    gm_status st = gm_json_get_int(o, k, 0, lo, hi, &x, err);
    *v = (int)x;
    return st;
}

static gm_status section(const gm_json *root, const char *name, const char *const *keys, const gm_json **out,
                         gm_error *err)
{
    *out = gm_json_get(root, name);
    if (*out && gm_json_type_of(*out) != GM_JSON_OBJECT) {
        char p[64];
        return gm_error_set(err, GM_EINVAL, "%s: expected an object, got %s", gm_json_path(*out, p, sizeof p),
                            gm_json_type_name(gm_json_type_of(*out)));
    }
    return gm_json_check_keys(*out, keys, err);
}

static gm_status from_json(gm_search_config *c, gm_json *root, const char *path, gm_error *err)
{
    gm_status st;
    static const char *const top[] = {"models", "data", "out", "threshold", "policy", "iterations", "time_budget_s",
                                      "seed", "sa", "mutation", "finetune", "filter", "threads", "latency", "run",
                                      "stitch", "gmorph_mode", "warm_start", NULL};
    static const char *const stitch_keys[] = {"enabled", "probe", "ridge", "cascade", "fit", "project_shortcuts", NULL};
    static const char *const fit_names[] = {"input", "output", "best", NULL};
    static const char *const run_keys[] = {"deterministic", "round", "checkpoint_every", "timeout_s", "device", NULL};
    static const char *const sa_keys[] = {"t0", "alpha", "max_elites", NULL};
    static const char *const mut_keys[] = {"merges", "relaxed_below", "guided", "explore", "cost_scale", "trunks",
                                           NULL};
    static const char *const ft_keys[] = {"samples", "pool", "val_samples", "epochs", "check_every", "batch", "lr",
                                                 "bn", "schedule", "features", "scope", "extra_epochs", "loss", NULL};
    static const char *const flt_keys[] = {"dominance", "curve", NULL};
    static const char *const lat_keys[] = {"warmup", "runs", NULL};
    const gm_json *models = gm_json_get(root, "models"), *data = gm_json_get(root, "data"), *sec;
    st = gm_json_check_keys(root, top, err);
    if (st == GM_OK && (gm_json_type_of(models) != GM_JSON_ARRAY || gm_json_len(models) < 2 ||
                        gm_json_len(models) > GM_MF_MAX_TASKS))
        st = gm_error_set(err, GM_EINVAL, "%s: \"models\" must be an array of 2 to %d model files", path,
                          GM_MF_MAX_TASKS);
    for (size_t i = 0; st == GM_OK && i < gm_json_len(models); i++) {
        const char *m = gm_json_string(gm_json_at(models, i));
        if (!m || !*m || strlen(m) >= sizeof c->models[0])
            st = gm_error_set(err, GM_EINVAL, "%s: models[%zu] must be a model file path", path, i);
        else
            snprintf(c->models[i], sizeof c->models[i], "%s", m);
        c->nmodels = (int)i + 1;
    }
    if (st == GM_OK && data && (gm_json_type_of(data) != GM_JSON_ARRAY || gm_json_len(data) != gm_json_len(models)))
        st = gm_error_set(err, GM_EINVAL, "%s: \"data\" must be an array with one dataset file per model", path);
    for (size_t i = 0; st == GM_OK && data && i < gm_json_len(data); i++) {
        const char *d = gm_json_string(gm_json_at(data, i));
        if (!d || strlen(d) >= sizeof c->data[0])
            st = gm_error_set(err, GM_EINVAL, "%s: data[%zu] must be a dataset file path (\"\": the recorded one)", path, i);
        else
            snprintf(c->data[i], sizeof c->data[i], "%s", d);
    }
    char policy[16] = "sa";
    long long seed = (long long)c->seed;
    if (st == GM_OK) st = gm_json_get_string(root, "out", 0, c->out, sizeof c->out, err);
    if (st == GM_OK) st = gm_json_get_double(root, "threshold", 0, 0.0, 1.0, &c->threshold, err);
    if (st == GM_OK) st = gm_json_get_string(root, "policy", 0, policy, sizeof policy, err);
    if (st == GM_OK) {
        if (!strcmp(policy, "sa")) c->policy = GM_POLICY_SA;
        else if (!strcmp(policy, "random")) c->policy = GM_POLICY_RANDOM;
        else st = gm_error_set(err, GM_EINVAL, "%s: policy: expected \"sa\" or \"random\", got \"%s\"", path, policy);
    }
    if (st == GM_OK) st = get_int(root, "iterations", 1, 1000000, &c->iterations, err);
    if (st == GM_OK) st = gm_json_get_double(root, "time_budget_s", 0, 0.0, 1e9, &c->time_budget_s, err);
    if (st == GM_OK) st = gm_json_get_int(root, "seed", 0, 0, 2147483647, &seed, err);
    c->seed = (uint64_t)seed;
    if (st == GM_OK) st = get_int(root, "threads", 1, 1024, &c->threads, err);
    if (st == GM_OK) st = section(root, "sa", sa_keys, &sec, err);
    if (st == GM_OK) st = gm_json_get_double(sec, "t0", 0, 1e-9, 1e9, &c->t0, err);
    if (st == GM_OK) st = gm_json_get_double(sec, "alpha", 0, 1e-9, 1.0, &c->alpha, err);
    if (st == GM_OK) st = get_int(sec, "max_elites", 1, 10000, &c->max_elites, err);
    if (st == GM_OK) st = section(root, "mutation", mut_keys, &sec, err);
    if (st == GM_OK) st = get_int(sec, "merges", 1, 100, &c->merges, err);
    if (st == GM_OK) st = get_int(sec, "relaxed_below", 0, 1000000, &c->relaxed_below, err);
    if (st == GM_OK) st = gm_json_get_bool(sec, "guided", 0, &c->guided, err);
    if (st == GM_OK) st = gm_json_get_double(sec, "explore", 0, 0.0, 1.0, &c->guide_explore, err);
    if (st == GM_OK) st = gm_json_get_double(sec, "cost_scale", 0, 1e-6, 1e6, &c->guide_cost_scale, err);
    if (st == GM_OK) st = get_int(sec, "trunks", 0, 16, &c->trunks, err);
    if (st == GM_OK) st = section(root, "finetune", ft_keys, &sec, err);
    if (st == GM_OK) st = get_long(sec, "samples", 1, 100000000, &c->ft_samples, err);
    if (st == GM_OK) st = get_long(sec, "val_samples", 0, 100000000, &c->val_samples, err);
    if (st == GM_OK) st = get_long(sec, "pool", 0, 100000000, &c->ft_pool, err);
    if (st == GM_OK) st = get_int(sec, "epochs", 0, 10000, &c->ft_epochs, err);
    if (st == GM_OK) st = get_int(sec, "extra_epochs", 0, 10000, &c->ft_extra_epochs, err);
    if (st == GM_OK) st = get_int(sec, "check_every", 1, 10000, &c->check_every, err);
    if (st == GM_OK) st = get_int(sec, "batch", 2, 65536, &c->batch, err);
    if (st == GM_OK) st = gm_json_get_double(sec, "lr", 0, 1e-12, 100.0, &c->lr, err);
    static const char *const bn_names[] = {"batch", "frozen", "changed", NULL};
    static const char *const sched_names[] = {"constant", "cosine", NULL};
    int bn = (int)c->bn;
    if (st == GM_OK) st = get_choice(sec, "finetune", "bn", bn_names, &bn, path, err);
    c->bn = (gm_bn_mode)bn;
    if (st == GM_OK) st = get_choice(sec, "finetune", "schedule", sched_names, &c->cosine, path, err);
    if (st == GM_OK) st = gm_json_get_double(sec, "features", 0, 0.0, 1e6, &c->feature_weight, err);
    static const char *const scope_names[] = {"all", "touched", NULL};
    if (st == GM_OK) st = get_choice(sec, "finetune", "scope", scope_names, &c->scope_touched, path, err);
    static const char *const loss_names[] = {"l1", "mse", NULL};
    if (st == GM_OK) st = get_choice(sec, "finetune", "loss", loss_names, &c->logit_mse, path, err);
    if (st == GM_OK) st = section(root, "filter", flt_keys, &sec, err);
    if (st == GM_OK) st = gm_json_get_bool(sec, "dominance", 0, &c->filter_dominance, err);
    if (st == GM_OK) st = gm_json_get_bool(sec, "curve", 0, &c->filter_curve, err);
    if (st == GM_OK) st = section(root, "stitch", stitch_keys, &sec, err);
    if (st == GM_OK) st = gm_json_get_bool(sec, "enabled", 0, &c->stitch, err);
    if (st == GM_OK) st = get_long(sec, "probe", 2, 1000000, &c->stitch_probe, err);
    if (st == GM_OK) st = gm_json_get_double(sec, "ridge", 0, 0.0, 1e6, &c->stitch_ridge, err);
    if (st == GM_OK) st = gm_json_get_bool(sec, "cascade", 0, &c->stitch_cascade, err);
    if (st == GM_OK) st = get_choice(sec, "stitch", "fit", fit_names, &c->stitch_fit, path, err);
    if (st == GM_OK) st = gm_json_get_bool(sec, "project_shortcuts", 0, &c->stitch_shortcuts, err);
    if (st == GM_OK) st = gm_json_get_bool(root, "gmorph_mode", 0, &c->gmorph_mode, err);
    const gm_json *warm = gm_json_get(root, "warm_start");
    if (st == GM_OK && warm && (gm_json_type_of(warm) != GM_JSON_ARRAY || gm_json_len(warm) > GM_SEARCH_MAX_WARM))
        st = gm_error_set(err, GM_EINVAL, "%s: \"warm_start\" must be an array of up to %d checkpoint files", path,
                          GM_SEARCH_MAX_WARM);
    for (size_t i = 0; st == GM_OK && warm && i < gm_json_len(warm); i++) {
        const char *w = gm_json_string(gm_json_at(warm, i));
        if (!w || !*w || strlen(w) >= sizeof c->warm_start[0])
            st = gm_error_set(err, GM_EINVAL, "%s: warm_start[%zu] must be a checkpoint path (search.h5)", path, i);
        else
            snprintf(c->warm_start[i], sizeof c->warm_start[i], "%s", w);
        c->nwarm = (int)i + 1;
    }
    if (st == GM_OK) st = section(root, "latency", lat_keys, &sec, err);
    if (st == GM_OK) st = get_int(sec, "warmup", 0, 100000, &c->lat_warmup, err);
    if (st == GM_OK) st = get_int(sec, "runs", 1, 1000000, &c->lat_runs, err);
    if (st == GM_OK) st = section(root, "run", run_keys, &sec, err);
    if (st == GM_OK) st = gm_json_get_bool(sec, "deterministic", 0, &c->deterministic, err);
    if (st == GM_OK) st = get_int(sec, "round", 1, 100000, &c->round, err);
    if (st == GM_OK) st = get_int(sec, "checkpoint_every", 0, 100000000, &c->checkpoint_every, err);
    if (st == GM_OK) st = gm_json_get_double(sec, "timeout_s", 0, 0.0, 1e9, &c->timeout_s, err);
    static const char *const device_names[] = {"cpu", "cuda", "cuda-tf32", NULL};
    int device = !strcmp(c->device, "cuda") ? 1 : !strcmp(c->device, "cuda-tf32") ? 2 : 0;
    if (st == GM_OK) st = get_choice(sec, "run", "device", device_names, &device, path, err);
    snprintf(c->device, sizeof c->device, "%s", device_names[device]);
    return st;
}

gm_status gm_search_config_load(gm_search_config *c, const char *path, gm_error *err)
{
    gm_json *root;
    gm_status st = gm_json_parse_file(&root, path, err);
    if (st != GM_OK) return st;
    st = from_json(c, root, path, err);
    gm_json_free(root);
    return st;
}

gm_status gm_search_config_parse(gm_search_config *c, const char *text, const char *name, gm_error *err)
{
    gm_json *root;
    gm_status st = gm_json_parse(&root, text, strlen(text), name, err);
    if (st != GM_OK) return st;
    st = from_json(c, root, name, err);
    gm_json_free(root);
    return st;
}

static const char *fit_names_of(int fit) { return fit == 2 ? "best" : fit == 1 ? "output" : "input"; }

/* cJSON builds the text so that paths with quotes or backslashes stay valid JSON. */
static cJSON *obj(cJSON *parent, const char *name)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(parent, name, o);
    return o;
}

char *gm_search_config_to_json(const gm_search_config *c)
{
    cJSON *r = cJSON_CreateObject(), *m = cJSON_AddArrayToObject(r, "models"), *d = cJSON_AddArrayToObject(r, "data");
    for (int t = 0; t < c->nmodels; t++) {
        cJSON_AddItemToArray(m, cJSON_CreateString(c->models[t]));
        cJSON_AddItemToArray(d, cJSON_CreateString(c->data[t]));
    }
    cJSON_AddStringToObject(r, "out", c->out);
    cJSON_AddNumberToObject(r, "threshold", c->threshold);
    cJSON_AddStringToObject(r, "policy", c->policy == GM_POLICY_SA ? "sa" : "random");
    cJSON_AddNumberToObject(r, "iterations", c->iterations);
    cJSON_AddNumberToObject(r, "time_budget_s", c->time_budget_s);
    cJSON_AddNumberToObject(r, "seed", (double)c->seed);
    cJSON_AddNumberToObject(r, "threads", c->threads);
    cJSON *s = obj(r, "sa");
    cJSON_AddNumberToObject(s, "t0", c->t0);
    cJSON_AddNumberToObject(s, "alpha", c->alpha);
    cJSON_AddNumberToObject(s, "max_elites", c->max_elites);
    s = obj(r, "mutation");
    cJSON_AddNumberToObject(s, "merges", c->merges);
    cJSON_AddNumberToObject(s, "relaxed_below", c->relaxed_below);
    cJSON_AddBoolToObject(s, "guided", c->guided);
    cJSON_AddNumberToObject(s, "explore", c->guide_explore);
    cJSON_AddNumberToObject(s, "cost_scale", c->guide_cost_scale);
    cJSON_AddNumberToObject(s, "trunks", c->trunks);
    s = obj(r, "finetune");
    cJSON_AddNumberToObject(s, "samples", (double)c->ft_samples);
    cJSON_AddNumberToObject(s, "val_samples", (double)c->val_samples);
    cJSON_AddNumberToObject(s, "pool", (double)c->ft_pool);
    cJSON_AddNumberToObject(s, "epochs", c->ft_epochs);
    cJSON_AddNumberToObject(s, "extra_epochs", c->ft_extra_epochs);
    cJSON_AddNumberToObject(s, "check_every", c->check_every);
    cJSON_AddNumberToObject(s, "batch", c->batch);
    cJSON_AddNumberToObject(s, "lr", c->lr);
    cJSON_AddStringToObject(s, "bn", c->bn == GM_BN_BATCH ? "batch" : c->bn == GM_BN_FROZEN ? "frozen" : "changed");
    cJSON_AddStringToObject(s, "schedule", c->cosine ? "cosine" : "constant");
    cJSON_AddNumberToObject(s, "features", c->feature_weight);
    cJSON_AddStringToObject(s, "scope", c->scope_touched ? "touched" : "all");
    cJSON_AddStringToObject(s, "loss", c->logit_mse ? "mse" : "l1");
    s = obj(r, "filter");
    cJSON_AddBoolToObject(s, "dominance", c->filter_dominance);
    cJSON_AddBoolToObject(s, "curve", c->filter_curve);
    s = obj(r, "stitch");
    cJSON_AddBoolToObject(s, "enabled", c->stitch);
    cJSON_AddNumberToObject(s, "probe", (double)c->stitch_probe);
    cJSON_AddNumberToObject(s, "ridge", c->stitch_ridge);
    cJSON_AddBoolToObject(s, "cascade", c->stitch_cascade);
    cJSON_AddStringToObject(s, "fit", fit_names_of(c->stitch_fit));
    cJSON_AddBoolToObject(s, "project_shortcuts", c->stitch_shortcuts);
    cJSON_AddBoolToObject(r, "gmorph_mode", c->gmorph_mode);
    cJSON *w = cJSON_AddArrayToObject(r, "warm_start");
    for (int k = 0; k < c->nwarm; k++) cJSON_AddItemToArray(w, cJSON_CreateString(c->warm_start[k]));
    s = obj(r, "latency");
    cJSON_AddNumberToObject(s, "warmup", c->lat_warmup);
    cJSON_AddNumberToObject(s, "runs", c->lat_runs);
    s = obj(r, "run");
    cJSON_AddBoolToObject(s, "deterministic", c->deterministic);
    cJSON_AddNumberToObject(s, "round", c->round);
    cJSON_AddNumberToObject(s, "checkpoint_every", c->checkpoint_every);
    cJSON_AddNumberToObject(s, "timeout_s", c->timeout_s);
    cJSON_AddStringToObject(s, "device", c->device);
    char *text = cJSON_Print(r);
    cJSON_Delete(r);
    return text;
}


/* The first difference of x and y below path, into why; 1 when found. */
static int json_diff(const cJSON *x, const cJSON *y, const char *path, char *why, size_t cap)
{
    char sub[256];
    if (cJSON_IsObject(x) && cJSON_IsObject(y)) {
        for (const cJSON *k = x->child; k; k = k->next) {
            snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", k->string);
            if (json_diff(k, cJSON_GetObjectItemCaseSensitive(y, k->string), sub, why, cap)) return 1;
        }
        for (const cJSON *k = y->child; k; k = k->next)
            if (!cJSON_GetObjectItemCaseSensitive(x, k->string)) {
                snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", k->string);
                return json_diff(NULL, k, sub, why, cap);
            }
        return 0;
    }
    if (cJSON_IsArray(x) && cJSON_IsArray(y) && cJSON_GetArraySize(x) == cJSON_GetArraySize(y)) {
        int i = 0;
        for (const cJSON *e = x->child, *f = y->child; e && f; e = e->next, f = f->next, i++) {
            snprintf(sub, sizeof sub, "%s[%d]", path, i);
            if (json_diff(e, f, sub, why, cap)) return 1;
        }
        return 0;
    }
    if (x && y && cJSON_Compare(x, y, 1)) return 0;
    char *a = x ? cJSON_PrintUnformatted(x) : NULL, *b = y ? cJSON_PrintUnformatted(y) : NULL;
    snprintf(why, cap, "%s: %.120s against %.120s", path, a ? a : "(none)", b ? b : "(none)");
    free(a);
    free(b);
    return 1;
}

int gm_search_config_diff(const gm_search_config *a, const gm_search_config *b, char *why, size_t cap)
{
    static const char *const top[] = {"iterations", "time_budget_s", "threads", "out", NULL};
    static const char *const run[] = {"device", "checkpoint_every", "timeout_s", NULL};
    char *ta = gm_search_config_to_json(a), *tb = gm_search_config_to_json(b);
    cJSON *x = ta ? cJSON_Parse(ta) : NULL, *y = tb ? cJSON_Parse(tb) : NULL;
    int d = -1;
    if (x && y) {
        for (cJSON *r = x; r; r = r == x ? y : NULL) {
            for (int k = 0; top[k]; k++) cJSON_DeleteItemFromObjectCaseSensitive(r, top[k]);
            for (int k = 0; run[k]; k++)
                cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(r, "run"), run[k]);
        }
        d = json_diff(x, y, "", why, cap);
    }
    cJSON_Delete(x);
    cJSON_Delete(y);
    free(ta);
    free(tb);
    return d;
}

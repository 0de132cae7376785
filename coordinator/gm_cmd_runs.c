/*
 * gmorph runs: one line per gmorph-search run folder found under the given
 * folders (default runs/, three levels deep), read from each checkpoint (a
 * folder with only the lock is a sweep before its first checkpoint):
 * tasks, threshold, state, candidates, best speed-up, elapsed and last update.
 * The state is "running" while a gmorph-search holds the folder's lock
 * (search.lock, gmorph_search.c), "finished" once the sweep ended, and
 * "interrupted" otherwise (killed, stopped, or pre-empted: the same command
 * continues it).
 */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "gm_ckpt.h"
#include "gm_cli.h"
#include "gm_fs.h"
#include "gm_search_config.h"

enum { PATH_CAP = 4096, MAX_DEPTH = 3 };

typedef struct {
    char **path;
    int n, cap;
} run_list;

static void usage(FILE *f)
{
    fprintf(f, "usage: gmorph runs [DIR ...] [--json]\n"
               "Lists the gmorph-search run folders under each DIR (default runs/; DIR itself when it is one,\n"
               "else up to three levels down): tasks, threshold, state (running, finished or interrupted),\n"
               "candidates, best speed-up (timed again at the end once finished), elapsed time and last update.\n\n"
               "  --json       one JSON array, for scripts\n"
               "  -h, --help   this text\n");
}

static int add_run(run_list *l, const char *dir)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        char **p = realloc(l->path, sizeof *p * (size_t)cap);
        if (!p) return -1;
        l->path = p;
        l->cap = cap;
    }
    return (l->path[l->n] = strdup(dir)) ? (l->n++, 0) : -1;
}

/* A run folder holds a checkpoint, or the lock of a sweep that has not written one yet. */
static int is_run(const char *dir)
{
    char p[PATH_CAP], q[PATH_CAP];
    struct stat s;
    return snprintf(p, sizeof p, "%s/search.h5", dir) < (int)sizeof p &&
           snprintf(q, sizeof q, "%s/search.lock", dir) < (int)sizeof q && (stat(p, &s) == 0 || stat(q, &s) == 0);
}

/* dir itself when it is a run folder, else its sub-folders down to depth; -1 out of memory. */
static int scan(run_list *l, const char *dir, int depth)
{
    if (is_run(dir)) return add_run(l, dir);
    if (depth >= MAX_DEPTH) return 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int rc = 0;
    for (struct dirent *e; rc == 0 && (e = readdir(d));) {
        char sub[PATH_CAP];
        struct stat s;
        if (e->d_name[0] == '.' || snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name) >= (int)sizeof sub) continue;
        if (stat(sub, &s) == 0 && S_ISDIR(s.st_mode)) rc = scan(l, sub, depth + 1);
    }
    closedir(d);
    return rc;
}

static int cmp_path(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* What one line says about a run folder. */
typedef struct {
    char state[16], holder[256], error[512], updated[32];
    int ntasks;
    char tasks[GM_MF_MAX_TASKS][64];
    double threshold, best, elapsed_s;
    int candidates, ended;
} run_info;

static void read_run(const char *dir, run_info *r)
{
    char p[PATH_CAP];
    struct stat s;
    *r = (run_info){.threshold = NAN, .best = NAN, .elapsed_s = NAN};
    snprintf(p, sizeof p, "%s/search.h5", dir);
    if (stat(p, &s) == 0) strftime(r->updated, sizeof r->updated, "%Y-%m-%d %H:%M", localtime(&s.st_mtime));
    gm_ckpt ck;
    gm_error err;
    if (!r->updated[0]) { /* no checkpoint yet: started, or killed before its first one */
        snprintf(r->state, sizeof r->state, "interrupted");
    } else if (gm_ckpt_load(p, &ck, &err) != GM_OK) {
        snprintf(r->state, sizeof r->state, "unreadable");
        snprintf(r->error, sizeof r->error, "%s", err.msg);
    } else {
        gm_search_config cfg;
        gm_search_defaults(&cfg);
        if (gm_search_config_parse(&cfg, ck.config, p, &err) == GM_OK) r->threshold = cfg.threshold;
        r->ntasks = ck.ntasks;
        memcpy(r->tasks, ck.tasks, sizeof r->tasks);
        r->candidates = ck.ncand;
        r->elapsed_s = ck.elapsed_s;
        r->ended = ck.summary.ended;
        if (r->ended && !isnan(ck.summary.final_speedup)) r->best = ck.summary.final_speedup;
        else
            for (int i = 0; i < ck.ncand; i++)
                if (ck.cand[i].status == GM_CAND_PASSED && !(ck.cand[i].speedup <= r->best))
                    r->best = ck.cand[i].speedup;
        snprintf(r->state, sizeof r->state, "%s", r->ended ? "finished" : "interrupted");
        gm_ckpt_free(&ck);
    }
    snprintf(p, sizeof p, "%s/search.lock", dir);
    if (gm_fs_lock_held(p, r->holder, sizeof r->holder) == 1) snprintf(r->state, sizeof r->state, "running");
    r->holder[strcspn(r->holder, "\n")] = '\0';
}

static void elapsed(double s, char *out, size_t cap)
{
    if (isnan(s)) snprintf(out, cap, "-");
    else if (s < 3600) snprintf(out, cap, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else snprintf(out, cap, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
}

static void print_text(const run_list *l, const run_info *info)
{
    int w = 3;
    for (int i = 0; i < l->n; i++) w = (int)strlen(l->path[i]) > w ? (int)strlen(l->path[i]) : w;
    printf("%-*s  %-11s  %-28s %9s %10s %7s %8s  %s\n", w, "RUN", "STATE", "TASKS", "THRESHOLD", "CANDIDATES", "BEST",
           "ELAPSED", "UPDATED");
    for (int i = 0; i < l->n; i++) {
        const run_info *r = &info[i];
        char best[16] = "-", el[16], th[16] = "-", tasks[512] = "-";
        for (int t = 0; t < r->ntasks; t++)
            snprintf(tasks + (t ? strlen(tasks) : 0), sizeof tasks - (t ? strlen(tasks) : 0), "%s%s", t ? "," : "",
                     r->tasks[t]);
        if (!isnan(r->best)) snprintf(best, sizeof best, "%.2fx", r->best);
        if (!isnan(r->threshold)) snprintf(th, sizeof th, "%.3f", r->threshold);
        elapsed(r->elapsed_s, el, sizeof el);
        printf("%-*s  %-11s  %-28.28s %9s %10d %7s %8s  %s\n", w, l->path[i], r->state, tasks,
               th, r->candidates, best, el, r->updated[0] ? r->updated : "-");
    }
}

static int print_json(const run_list *l, const run_info *info)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < l->n; i++) {
        const run_info *r = &info[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(a, o);
        cJSON_AddStringToObject(o, "run", l->path[i]);
        cJSON_AddStringToObject(o, "state", r->state);
        if (r->holder[0] && !strcmp(r->state, "running")) cJSON_AddStringToObject(o, "held_by", r->holder);
        if (r->error[0]) cJSON_AddStringToObject(o, "error", r->error);
        cJSON *t = cJSON_AddArrayToObject(o, "tasks");
        for (int k = 0; k < r->ntasks; k++) cJSON_AddItemToArray(t, cJSON_CreateString(r->tasks[k]));
        if (isnan(r->threshold)) cJSON_AddNullToObject(o, "threshold");
        else cJSON_AddNumberToObject(o, "threshold", r->threshold);
        cJSON_AddNumberToObject(o, "candidates", r->candidates);
        if (isnan(r->best)) cJSON_AddNullToObject(o, "best_speedup");
        else cJSON_AddNumberToObject(o, "best_speedup", r->best);
        cJSON_AddBoolToObject(o, "best_timed_again", r->ended && !isnan(r->best));
        if (isnan(r->elapsed_s)) cJSON_AddNullToObject(o, "elapsed_s");
        else cJSON_AddNumberToObject(o, "elapsed_s", r->elapsed_s);
        cJSON_AddStringToObject(o, "updated", r->updated);
    }
    char *text = a ? cJSON_Print(a) : NULL;
    cJSON_Delete(a);
    if (!text) return -1;
    printf("%s\n", text);
    free(text);
    return 0;
}

int gm_cmd_runs(int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c, json = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return GM_EXIT_OK;
        }
        if (c != 'j') {
            fprintf(stderr, "Try 'gmorph runs --help'.\n");
            return GM_EXIT_USAGE;
        }
        json = 1;
    }
    char *dflt[] = {"runs"};
    char **dirs = optind < argc ? argv + optind : dflt;
    const int ndirs = optind < argc ? argc - optind : 1;
    run_list l = {0};
    int code = GM_EXIT_OK;
    for (int k = 0; k < ndirs && code == GM_EXIT_OK; k++) {
        struct stat s;
        if (stat(dirs[k], &s) != 0 || !S_ISDIR(s.st_mode)) {
            fprintf(stderr, "gmorph runs: %s: %s\n", dirs[k], errno == ENOENT ? "no such folder" : "not a folder");
            code = GM_EXIT_USAGE;
        } else if (scan(&l, dirs[k], 0) != 0) {
            fprintf(stderr, "gmorph runs: out of memory\n");
            code = GM_EXIT_FAIL;
        }
    }
    run_info *info = code == GM_EXIT_OK ? calloc((size_t)l.n + 1, sizeof *info) : NULL;
    if (code == GM_EXIT_OK && !info) code = GM_EXIT_FAIL;
    if (code == GM_EXIT_OK) {
        qsort(l.path, (size_t)l.n, sizeof *l.path, cmp_path);
        for (int i = 0; i < l.n; i++) read_run(l.path[i], &info[i]);
        if (json) code = print_json(&l, info) == 0 ? GM_EXIT_OK : GM_EXIT_FAIL;
        else if (l.n == 0) fprintf(stderr, "gmorph runs: no run folders (with search.h5) under the given folders\n");
        else print_text(&l, info);
        for (int i = 0; i < l.n; i++)
            if (info[i].error[0]) fprintf(stderr, "gmorph runs: %s: %s\n", l.path[i], info[i].error);
    }
    free(info);
    for (int i = 0; i < l.n; i++) free(l.path[i]);
    free(l.path);
    return code;
}

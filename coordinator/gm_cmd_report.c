/*
 * gmorph report: a search's run folder as a page to read. From the checkpoint
 * (search.h5) alone, and the original models named in its config for the
 * drawing, it writes RUN/report.html (self-contained: inline CSS and SVG, no
 * script, nothing fetched) and RUN/report.md with the same tables beside
 * RUN/report-*.svg:
 *   the search's settings and candidates by status; accuracy per task before
 *   and after; latency of the originals one after the other against the best;
 *   the best speed-up so far against wall time and candidates
 *   trained; every fine-tuned candidate's latency against its worst drop with
 *   the Pareto front; the best fused graph as a tree, and the layers of the
 *   originals it skipped.
 * Both formats are written by the same code (one pass per format), so their
 * numbers agree. Reading only: the run folder gets new files, nothing changes.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gm_ckpt.h"
#include "gm_cli.h"
#include "gm_filter.h"
#include "gm_fgraph.h"
#include "gm_search.h"
#include "gm_search_config.h"
#include "gm_svg.h"

#define CMD "report"

enum { PATH_CAP = 4096, NOTE_CAP = 1536 }; /* notes quote paths up to 1024 bytes */

enum { FIG_PROGRESS, FIG_PARETO, FIG_CURVES, FIG_GRAPH, NFIGS };

typedef struct {
    const char *file, *title;
    gm_svg_buf svg;
    int drawn;                /* 0: caption says why there is no drawing */
    char caption[NOTE_CAP];
} figure;

typedef struct {
    char run[PATH_CAP], ckpt_path[PATH_CAP + 16];
    gm_ckpt ck;
    gm_search_config cfg;
    int nloaded;                        /* original models read (all of them, or the graph is not drawn) */
    gm_mfile models[GM_MF_MAX_TASKS];
    char models_note[NOTE_CAP];         /* "": every model read; else why one could not be */
    gm_fgraph *best;                    /* the best's graph; NULL without models or a best */
    char graph_note[NOTE_CAP];          /* why the best's graph is not drawn */
    double orig_mflops;                 /* the originals' graph; NAN without models */
    long long orig_params;
    char acc_note[NOTE_CAP];            /* where the accuracies come from, or why some are unknown */
    int count[GM_CAND_NSTATUS];
    long epochs;
    figure fig[NFIGS];
} report;

static void usage(FILE *f)
{
    fprintf(f, "usage: gmorph report RUN   (a gmorph-search run folder, or RUN/search.h5)\n"
               "Writes RUN/report.html (self-contained) and RUN/report.md with RUN/report-*.svg: the search's\n"
               "settings, accuracy and latency before and after, progress, every fine-tuned candidate's\n"
               "latency against its accuracy drop, and the best fused graph.\n\n"
               "  -h, --help   this text\n");
}

static int parse(int argc, char **argv, const char **arg)
{
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c, bad = 0;
    optind = 1;
    while (!bad && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            exit(GM_EXIT_OK);
        }
        bad = 1;
    }
    if (!bad && optind == argc - 1) *arg = argv[optind];
    else if (!bad) {
        fprintf(stderr, "gmorph report: %s\n", optind == argc ? "which run folder?" : "one run folder at a time");
        bad = 1;
    }
    if (bad) fprintf(stderr, "Try 'gmorph report --help'.\n");
    return bad ? -1 : 0;
}

/* ---- inputs --------------------------------------------------------------------------- */

/* RUN or RUN/search.h5 into the run folder and the checkpoint's path. */
static gm_status resolve(report *R, const char *arg, gm_error *err)
{
    struct stat s;
    if (strlen(arg) >= PATH_CAP - 16) return gm_error_set(err, GM_EINVAL, "%.64s...: path too long", arg);
    if (stat(arg, &s) != 0)
        return gm_error_set(err, GM_EIO, "%s: %s", arg, errno == ENOENT ? "no such file or folder" : strerror(errno));
    if (S_ISDIR(s.st_mode)) {
        snprintf(R->run, sizeof R->run, "%s", arg);
        for (size_t n = strlen(R->run); n > 1 && R->run[n - 1] == '/'; n--) R->run[n - 1] = '\0';
        snprintf(R->ckpt_path, sizeof R->ckpt_path, "%s/search.h5", R->run);
        if (stat(R->ckpt_path, &s) != 0)
            return gm_error_set(err, GM_EIO, "%s: no search.h5 in this folder (not a gmorph-search run folder?)",
                                R->run);
        return GM_OK;
    }
    snprintf(R->ckpt_path, sizeof R->ckpt_path, "%s", arg);
    const char *slash = strrchr(arg, '/');
    if (!slash) snprintf(R->run, sizeof R->run, ".");
    else snprintf(R->run, sizeof R->run, "%.*s", slash == arg ? 1 : (int)(slash - arg), arg);
    return GM_OK;
}

/* The originals, the best's graph and the originals' size; a model that cannot be read only drops the drawing. */
static gm_status load_models(report *R, gm_error *err)
{
    const gm_mfile *ptr[GM_MF_MAX_TASKS];
    gm_error e;
    R->orig_mflops = NAN;
    for (int t = 0; t < R->cfg.nmodels; t++) {
        if (gm_mfile_load(R->cfg.models[t], &R->models[t], &e) != GM_OK) {
            snprintf(R->models_note, sizeof R->models_note, "%s", e.msg);
            snprintf(R->graph_note, sizeof R->graph_note, "an original model could not be read (%s)", e.msg);
            for (int k = 0; k < t; k++) gm_mfile_free(&R->models[k]);
            R->nloaded = 0;
            return GM_OK;
        }
        ptr[t] = &R->models[t];
        R->nloaded = t + 1;
    }
    gm_fgraph *g = malloc(sizeof *g);
    if (!g) return gm_error_set(err, GM_ENOMEM, "out of memory");
    if (gm_fgraph_from_models(g, ptr, R->nloaded, &e) == GM_OK) {
        R->orig_mflops = (double)gm_fgraph_flops(g) / 1e6;
        R->orig_params = (long long)gm_fgraph_nparams(g);
    }
    if (R->ck.best_id >= 0) {
        const gm_ckpt_cand *b = &R->ck.cand[R->ck.best_id];
        if (gm_fgraph_decode(g, b->enc, b->enc_len, ptr, R->nloaded, &e) == GM_OK) {
            R->best = g;
            return GM_OK;
        }
        snprintf(R->graph_note, sizeof R->graph_note, "candidate %d's graph does not decode: %s", b->id, e.msg);
    }
    free(g);
    return GM_OK;
}

/* Says where the accuracy table's numbers come from, and why some are unknown. */
static void accuracy_note(report *R)
{
    const gm_ckpt_summary *k = &R->ck.summary;
    if (R->ck.version < 2)
        snprintf(R->acc_note, sizeof R->acc_note, "This checkpoint is version %d (from an older gmorph), which kept "
                 "neither the originals' accuracies nor the end's re-timing: they are unknown here. Fused "
                 "validation accuracy from the checkpoint (the best candidate's row).", R->ck.version);
    else if (!k->ended)
        snprintf(R->acc_note, sizeof R->acc_note, "The sweep has not ended: test accuracies and the end's re-timing "
                 "are unknown until it does. Validation accuracies from the checkpoint (the originals' when the "
                 "sweep began, the best candidate's row).");
    else
        snprintf(R->acc_note, sizeof R->acc_note, "From the checkpoint: validation accuracy of the originals when "
                 "the sweep began and of the best candidate when it was fine-tuned; test accuracy of both scored "
                 "when the sweep ended.");
}

static gm_status load_inputs(report *R, const char *arg, gm_error *err)
{
    gm_status st = resolve(R, arg, err);
    if (st == GM_OK) st = gm_ckpt_load(R->ckpt_path, &R->ck, err);
    if (st != GM_OK) return st;
    gm_search_defaults(&R->cfg);
    if (gm_search_config_parse(&R->cfg, R->ck.config, R->ckpt_path, err) != GM_OK) return GM_EFORMAT;
    if (R->cfg.nmodels != R->ck.ntasks)
        return gm_error_set(err, GM_EFORMAT, "%s: its config names %d models for %d tasks", R->ckpt_path,
                            R->cfg.nmodels, R->ck.ntasks);
    for (int i = 0; i < R->ck.ncand; i++) {
        R->count[R->ck.cand[i].status]++;
        R->epochs += R->ck.cand[i].epochs;
    }
    accuracy_note(R);
    return load_models(R, err);
}

/* ---- small helpers -------------------------------------------------------------------- */

static int tuned(const gm_ckpt_cand *r)
{
    return r->status == GM_CAND_PASSED || r->status == GM_CAND_FAILED || r->status == GM_CAND_ABORTED;
}

/* A fine-tuned candidate with a drop and a latency to plot (a worker error leaves them NAN). */
static int plotted(const gm_ckpt_cand *r)
{
    return tuned(r) && isfinite(r->worst_drop) && isfinite(r->latency_ms);
}

/* v with d decimals and a suffix, or "unknown". */
static const char *num(char *s, size_t n, double v, int d, const char *suffix)
{
    if (!isfinite(v)) snprintf(s, n, "unknown");
    else snprintf(s, n, "%.*f%s", d, v, suffix);
    return s;
}

/* Status colours, and a threshold colour none of them uses (tests look for these pixels). */
#define THRESHOLD_COLOUR "#7b4fa0"
static const char *status_colour(gm_cand_status s)
{
    return s == GM_CAND_PASSED ? "#59a14f" : s == GM_CAND_FAILED ? "#e15759" : "#f28e2b";
}

/* ---- the document: one writer for HTML and Markdown ---------------------------------- */

typedef enum { DOC_HTML, DOC_MD } doc_kind;

typedef struct {
    gm_svg_buf *b;
    doc_kind kind;
} doc;

static void md_escape(gm_svg_buf *b, const char *text)
{
    for (const char *p = text; *p; p++) {
        if (strchr("\\`*_[]<>|#", *p)) gm_svg_append(b, "\\", 1);
        gm_svg_append(b, p, 1);
    }
}

static void doc_text(doc *d, const char *text)
{
    if (d->kind == DOC_HTML) gm_svg_escape(d->b, text);
    else md_escape(d->b, text);
}

static void doc_heading(doc *d, int level, const char *text)
{
    if (d->kind == DOC_HTML) gm_svg_printf(d->b, "<h%d>", level);
    else gm_svg_printf(d->b, "%.*s ", level, "######");
    doc_text(d, text);
    if (d->kind == DOC_HTML) gm_svg_printf(d->b, "</h%d>\n", level);
    else gm_svg_printf(d->b, "\n\n");
}

static void doc_para(doc *d, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void doc_para(doc *d, const char *fmt, ...)
{
    char s[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s, sizeof s, fmt, ap);
    va_end(ap);
    if (d->kind == DOC_HTML) gm_svg_printf(d->b, "<p>");
    doc_text(d, s);
    gm_svg_printf(d->b, d->kind == DOC_HTML ? "</p>\n" : "\n\n");
}

static void doc_list(doc *d, int begin)
{
    if (d->kind == DOC_HTML) gm_svg_printf(d->b, begin ? "<ul>\n" : "</ul>\n");
    else if (!begin) gm_svg_printf(d->b, "\n");
}

static void doc_item(doc *d, const char *label, const char *text)
{
    gm_svg_printf(d->b, d->kind == DOC_HTML ? "<li><b>" : "- **");
    doc_text(d, label);
    gm_svg_printf(d->b, d->kind == DOC_HTML ? "</b>: " : "**: ");
    doc_text(d, text);
    gm_svg_printf(d->b, d->kind == DOC_HTML ? "</li>\n" : "\n");
}

enum { TAB_ROWS = GM_MF_MAX_TASKS + 8, TAB_COLS = 8, TAB_CELL = 200 };

typedef struct {
    int ncol, nrow;
    int numeric[TAB_COLS];    /* right-aligned columns */
    char head[TAB_COLS][TAB_CELL];
    char cell[TAB_ROWS][TAB_COLS][TAB_CELL];
} table;

/* Sets cell (r, c) (row -1: the header); grows nrow to cover r. */
static void cellf(table *t, int r, int c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static void cellf(table *t, int r, int c, const char *fmt, ...)
{
    if (r >= TAB_ROWS || c >= TAB_COLS) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r < 0 ? t->head[c] : t->cell[r][c], TAB_CELL, fmt, ap);
    va_end(ap);
    if (r >= t->nrow) t->nrow = r + 1;
    if (c >= t->ncol) t->ncol = c + 1;
}

static void doc_table(doc *d, const table *t)
{
    const int html = d->kind == DOC_HTML;
    gm_svg_printf(d->b, html ? "<table>\n<thead><tr>" : "|");
    for (int c = 0; c < t->ncol; c++) {
        gm_svg_printf(d->b, html ? "<th>" : " ");
        doc_text(d, t->head[c]);
        gm_svg_printf(d->b, html ? "</th>" : " |");
    }
    gm_svg_printf(d->b, html ? "</tr></thead>\n<tbody>\n" : "\n|");
    for (int c = 0; !html && c < t->ncol; c++) gm_svg_printf(d->b, t->numeric[c] ? "---:|" : "---|");
    if (!html) gm_svg_printf(d->b, "\n");
    for (int r = 0; r < t->nrow; r++) {
        gm_svg_printf(d->b, html ? "<tr>" : "|");
        for (int c = 0; c < t->ncol; c++) {
            gm_svg_printf(d->b, html ? (t->numeric[c] ? "<td class=\"num\">" : "<td>") : " ");
            doc_text(d, t->cell[r][c]);
            gm_svg_printf(d->b, html ? "</td>" : " |");
        }
        gm_svg_printf(d->b, html ? "</tr>\n" : "\n");
    }
    gm_svg_printf(d->b, html ? "</tbody>\n</table>\n" : "\n");
}

static void doc_figure(doc *d, const figure *f)
{
    if (!f->drawn) {
        doc_para(d, "%s", f->caption);
        return;
    }
    if (d->kind == DOC_HTML) {
        gm_svg_printf(d->b, "<figure>\n%s<figcaption>", gm_svg_str(&f->svg));
        gm_svg_escape(d->b, f->caption);
        gm_svg_printf(d->b, "</figcaption>\n</figure>\n");
        return;
    }
    gm_svg_printf(d->b, "![");
    md_escape(d->b, f->title);
    gm_svg_printf(d->b, "](%s)\n\n", f->file);
    doc_para(d, "%s", f->caption);
}

/* ---- the figures ---------------------------------------------------------------------- */

typedef struct {
    double t, n, speedup;   /* wall time, candidates trained, the best's speed-up */
    int id;
} best_step;

/* One panel: the best speed-up so far as a step line against x (0: time, 1: candidates trained). */
static void progress_panel(gm_svg_buf *b, const best_step *s, int ns, double xend, double xscale, int which,
                           double left, const char *xlabel, const char *title)
{
    double lo = 1, hi = 1;
    for (int i = 0; i < ns; i++) {
        lo = fmin(lo, s[i].speedup);
        hi = fmax(hi, s[i].speedup);
    }
    gm_svg_frame f = {.left = left, .top = 40, .width = 360, .height = 220};
    gm_svg_frame_fit(&f, 0, xend / xscale, lo, hi);
    gm_svg_text(b, left + 180, 22, "middle", 13, title);
    gm_svg_axes(b, &f, xlabel, "best speed-up (x)");
    double y1 = gm_svg_py(&f, 1);
    gm_svg_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888888\" "
                     "stroke-dasharray=\"5 4\"/>\n", f.left, y1, f.left + f.width, y1);
    if (ns == 0) {
        gm_svg_text(b, left + 180, f.top + 100, "middle", 13, "no candidate passed yet");
        return;
    }
    gm_svg_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2.5\" points=\"", gm_svg_colour(0));
    for (int i = 0; i < ns; i++) {
        double x = (which ? s[i].n : s[i].t) / xscale;
        if (i > 0) gm_svg_printf(b, "%.1f,%.1f ", gm_svg_px(&f, x), gm_svg_py(&f, s[i - 1].speedup));
        gm_svg_printf(b, "%.1f,%.1f ", gm_svg_px(&f, x), gm_svg_py(&f, s[i].speedup));
    }
    gm_svg_printf(b, "%.1f,%.1f\"/>\n", gm_svg_px(&f, xend / xscale), gm_svg_py(&f, s[ns - 1].speedup));
    for (int i = 0; i < ns; i++) { /* squares, not circles: circles are the scatter's candidates */
        double x = gm_svg_px(&f, (which ? s[i].n : s[i].t) / xscale), y = gm_svg_py(&f, s[i].speedup);
        gm_svg_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"7\" height=\"7\" fill=\"%s\"><title>candidate %d: "
                         "%.2fx</title></rect>\n", x - 3.5, y - 3.5, gm_svg_colour(0), s[i].id, s[i].speedup);
    }
}

/* (a, b) pairs of doubles: by a, then b. */
static int by_pair(const void *a, const void *b)
{
    const double *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : x[1] < y[1] ? -1 : x[1] > y[1];
}

/*
 * Plot 1: the best so far by the search's own rule (gm_search's update_best),
 * replayed in the order results were recorded: by finished_s, the sweep's
 * elapsed time when each finished.
 */
static gm_status fig_progress(report *R, figure *F, gm_error *err)
{
    const gm_ckpt *ck = &R->ck;
    best_step *s = malloc(sizeof *s * (size_t)(ck->ncand + 1));
    double *order = malloc(sizeof *order * 2 * (size_t)(ck->ncand + 1));
    if (!s || !order) {
        free(s);
        free(order);
        return gm_error_set(err, GM_ENOMEM, "out of memory");
    }
    int n = 0, ns = 0, trained = 0;
    for (int i = 0; i < ck->ncand; i++) {
        if (ck->cand[i].status == GM_CAND_PENDING) continue;
        order[2 * n] = isfinite(ck->cand[i].finished_s) ? ck->cand[i].finished_s : 0;
        order[2 * n++ + 1] = i;
    }
    qsort(order, (size_t)n, 2 * sizeof *order, by_pair);
    double key = 0, tend = isfinite(ck->elapsed_s) ? ck->elapsed_s : 0;
    for (int j = 0; j < n; j++) {
        const gm_ckpt_cand *r = &ck->cand[(int)order[2 * j + 1]];
        trained += tuned(r);
        tend = fmax(tend, order[2 * j]);
        double k = R->cfg.deterministic ? -r->mflops : r->speedup;
        if (r->status != GM_CAND_PASSED || !isfinite(r->speedup) || (ns > 0 && !(k > key))) continue;
        key = k;
        s[ns++] = (best_step){.t = order[2 * j], .n = trained, .speedup = r->speedup, .id = r->id};
    }
    const double scale = tend > 7200 ? 3600 : tend > 300 ? 60 : 1;
    char xl[96];
    snprintf(xl, sizeof xl, "wall time (%s)", scale == 3600 ? "h" : scale == 60 ? "min" : "s");
    gm_svg_begin(&F->svg, 920, 320, "best speed-up so far");
    progress_panel(&F->svg, s, ns, tend, scale, 0, 80, xl, "against wall time");
    progress_panel(&F->svg, s, ns, trained > 0 ? trained : 1, 1, 1, 540, "candidates trained (passed, failed, aborted)",
                   "against candidates trained");
    gm_svg_end(&F->svg);
    F->drawn = 1;
    snprintf(F->caption, sizeof F->caption,
             "The best candidate's speed-up over the originals run one after the other, each time a better one "
             "passed (%s): %d improvements, replayed in the order results came in. Wall time is the sweep's elapsed "
             "time when each candidate finished (finished_s, across resumes; %.0f s in all). The dashed line is 1x.",
             R->cfg.deterministic ? "deterministic mode: fewest FLOPs" : "highest measured speed-up", ns, tend);
    free(s);
    free(order);
    return GM_OK;
}

enum { LEGEND_X = 670 };

/* The legend of the candidate plots: a swatch (dash NULL) or line per fine-tuned status with its count, and the threshold. */
static void status_legend(const report *R, gm_svg_buf *b, const char *dash)
{
    for (int s = GM_CAND_PASSED; s <= GM_CAND_ABORTED; s++) {
        char l[64];
        snprintf(l, sizeof l, "%s (%d)", gm_cand_status_name((gm_cand_status)s), R->count[s]);
        gm_svg_legend(b, LEGEND_X, 40 + 20 * (s - 1), status_colour((gm_cand_status)s), dash, l);
    }
    gm_svg_legend(b, LEGEND_X, 110, THRESHOLD_COLOUR, "6 4", "threshold");
}

/* The Pareto front (lowest latency at or below each drop) as a step line from the sorted pairs. */
static void pareto_line(gm_svg_buf *b, const gm_svg_frame *f, const double *p, int n)
{
    double best = INFINITY, last_x = 0;
    gm_svg_printf(b, "<polyline fill=\"none\" stroke=\"#333333\" stroke-width=\"1.5\" points=\"");
    for (int i = 0; i < n; i++) {
        if (!(p[2 * i + 1] < best)) continue;
        if (isfinite(best)) gm_svg_printf(b, "%.1f,%.1f ", gm_svg_px(f, p[2 * i]), gm_svg_py(f, best));
        best = p[2 * i + 1];
        last_x = p[2 * i];
        gm_svg_printf(b, "%.1f,%.1f ", gm_svg_px(f, last_x), gm_svg_py(f, best));
    }
    gm_svg_printf(b, "%.1f,%.1f\"/>\n", gm_svg_px(f, f->x1), gm_svg_py(f, best));
}

static void pareto_points(report *R, gm_svg_buf *b, const gm_svg_frame *f)
{
    for (int i = 0; i < R->ck.ncand; i++) {
        const gm_ckpt_cand *r = &R->ck.cand[i];
        if (!plotted(r)) continue;
        gm_svg_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4.5\" fill=\"%s\" stroke=\"#ffffff\" stroke-width=\"0.8\">"
                         "<title>candidate %d: %s, %.3f ms, drop %.2f points, %.2fx</title></circle>\n",
                      gm_svg_px(f, 100 * r->worst_drop), gm_svg_py(f, r->latency_ms), status_colour(r->status), r->id,
                      gm_cand_status_name(r->status), r->latency_ms, 100 * r->worst_drop, r->speedup);
    }
    if (R->ck.best_id < 0) return;
    const gm_ckpt_cand *r = &R->ck.cand[R->ck.best_id];
    double x = gm_svg_px(f, 100 * r->worst_drop), y = gm_svg_py(f, r->latency_ms);
    gm_svg_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"14\" fill=\"none\" stroke=\"#000000\" "
                     "stroke-width=\"1.5\"/>\n", x - 7, y - 7);
    char s[64];
    snprintf(s, sizeof s, "best (%d)", r->id);
    gm_svg_text(b, x + 10, y - 8, "start", 11, s);
}

/* Plot 2: latency against worst drop for every fine-tuned candidate, the threshold, the Pareto front. */
static gm_status fig_pareto(report *R, figure *F, gm_error *err)
{
    const gm_ckpt *ck = &R->ck;
    double *p = malloc(sizeof *p * 2 * (size_t)(ck->ncand + 1));
    if (!p) return gm_error_set(err, GM_ENOMEM, "out of memory");
    int n = 0, unmeasured = 0;
    double thr = 100 * R->cfg.threshold, xlo = fmin(0, thr), xhi = thr, ylo = INFINITY, yhi = -INFINITY;
    for (int i = 0; i < ck->ncand; i++) {
        const gm_ckpt_cand *r = &ck->cand[i];
        unmeasured += tuned(r) && !plotted(r);
        if (!plotted(r)) continue;
        p[2 * n] = 100 * r->worst_drop;
        p[2 * n + 1] = r->latency_ms;
        xlo = fmin(xlo, p[2 * n]);
        xhi = fmax(xhi, p[2 * n]);
        ylo = fmin(ylo, p[2 * n + 1]);
        yhi = fmax(yhi, p[2 * n + 1]);
        n++;
    }
    if (n == 0) ylo = yhi = 1;
    qsort(p, (size_t)n, 2 * sizeof *p, by_pair); /* (drop, latency) */
    gm_svg_buf *b = &F->svg;
    gm_svg_frame f = {.left = 80, .top = 20, .width = 560, .height = 320};
    gm_svg_frame_fit(&f, xlo, xhi, ylo, yhi);
    gm_svg_begin(b, 880, 400, "latency against worst-task accuracy drop");
    gm_svg_axes(b, &f, "worst task's validation accuracy drop (points)", "batch-1 latency (ms)");
    double tx = round(gm_svg_px(&f, thr)); /* on a pixel edge: a crisp line, not a blur */
    gm_svg_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\" "
                     "stroke-dasharray=\"6 4\"/>\n", tx, f.top, tx, f.top + f.height, THRESHOLD_COLOUR);
    if (n > 0) pareto_line(b, &f, p, n);
    pareto_points(R, b, &f);
    status_legend(R, b, NULL);
    gm_svg_legend(b, LEGEND_X, 130, "#333333", "", "Pareto front");
    gm_svg_end(b);
    F->drawn = 1;
    snprintf(F->caption, sizeof F->caption,
             "Every fine-tuned candidate (%d points: passed, failed and aborted by the learning curve; %d without "
             "measurements left out): its batch-1 latency against its worst task's validation accuracy drop. The "
             "dashed vertical line is the threshold (%.2f points); the step line is the Pareto front, the lowest "
             "latency reached at or below each drop; the square marks the best.", n, unmeasured, thr);
    free(p);
    return GM_OK;
}

/*
 * An aborted candidate's verdict, drawn as the rule (gm_search_curve_abort)
 * made it: for each task still short of its target, the geometric fit of its
 * checks, extended to the budget, as a drop (dotted); only where the fit says
 * the target is out of reach, as it did for the abort.
 */
static void curve_extrapolation(const report *R, gm_svg_buf *b, const gm_svg_frame *f, const gm_ckpt_cand *r)
{
    const int nt = R->ck.ntasks, cols = GM_CKPT_CURVE_COLS(nt), n = r->ncurve;
    const double horizon = r->epochs > R->cfg.ft_epochs ? R->cfg.ft_epochs + R->cfg.ft_extra_epochs : R->cfg.ft_epochs;
    double ep[GM_CKPT_MAX_CURVE], acc[GM_CKPT_MAX_CURVE];
    for (int t = 0; t < nt; t++) {
        const double target = R->ck.summary.orig_val[t] - R->cfg.threshold;
        for (int i = 0; i < n; i++) {
            ep[i] = r->curve[(size_t)i * cols];
            acc[i] = r->curve[(size_t)i * cols + 2 + t];
        }
        gm_curve c;
        if (!gm_search_curve_abort(NULL, ep, acc, n, (int)horizon, target) || gm_curve_fit(ep, acc, n, &c) != 0) continue;
        gm_svg_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.2\" stroke-dasharray=\"2 3\" "
                         "points=\"", status_colour(r->status));
        for (int k = 0; k <= 20; k++) {
            const double e = ep[n - 1] + (horizon - ep[n - 1]) * k / 20.0;
            const double drop = 100 * (R->ck.summary.orig_val[t] - gm_curve_at(&c, e));
            gm_svg_printf(b, "%.1f,%.1f ", gm_svg_px(f, e), gm_svg_py(f, fmin(fmax(drop, f->y0), f->y1)));
        }
        gm_svg_printf(b, "\"><title>candidate %d, task %s: the learning-curve fit at epoch %.0f</title></polyline>\n",
                      r->id, R->ck.tasks[t], horizon);
    }
}

/* Plot 3: every fine-tuned candidate's worst drop at each accuracy check; aborts with their extrapolation. */
static gm_status fig_curves(report *R, figure *F, gm_error *err)
{
    (void)err;
    const gm_ckpt *ck = &R->ck;
    const int nt = ck->ntasks, cols = GM_CKPT_CURVE_COLS(nt);
    int ncurves = 0, orig_known = 1;
    double xhi = R->cfg.ft_epochs, ylo = 0, yhi = 100 * R->cfg.threshold;
    for (int t = 0; t < nt; t++) orig_known &= isfinite(ck->summary.orig_val[t]);
    for (int i = 0; orig_known && i < ck->ncand; i++) {
        const gm_ckpt_cand *r = &ck->cand[i];
        if (!tuned(r) || r->ncurve == 0) continue;
        ncurves++;
        for (int k = 0; k < r->ncurve; k++) {
            const double *q = r->curve + (size_t)k * cols;
            double w = -INFINITY;
            for (int t = 0; t < nt; t++) w = fmax(w, ck->summary.orig_val[t] - q[2 + t]);
            xhi = fmax(xhi, q[0]);
            if (isfinite(w)) ylo = fmin(ylo, 100 * w), yhi = fmax(yhi, 100 * w);
        }
    }
    if (ncurves == 0) {
        snprintf(F->caption, sizeof F->caption, "%s",
                 !orig_known ? "No learning curves drawn: the checkpoint predates the originals' accuracies."
                             : "No learning curves: no candidate was fine-tuned, or the checkpoint predates them.");
        return GM_OK;
    }
    gm_svg_buf *b = &F->svg;
    gm_svg_frame f = {.left = 80, .top = 20, .width = 560, .height = 320};
    gm_svg_frame_fit(&f, 0, xhi, ylo, fmin(yhi, 100));
    gm_svg_begin(b, 880, 400, "learning curves: worst drop at each check");
    gm_svg_axes(b, &f, "fine-tune epochs", "worst task's validation accuracy drop (points)");
    const double ty = round(gm_svg_py(&f, 100 * R->cfg.threshold));
    gm_svg_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\" "
                     "stroke-dasharray=\"6 4\"/>\n", f.left, ty, f.left + f.width, ty, THRESHOLD_COLOUR);
    for (int i = 0; i < ck->ncand; i++) {
        const gm_ckpt_cand *r = &ck->cand[i];
        if (!tuned(r) || r->ncurve == 0) continue;
        gm_svg_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" class=\"curve\" "
                         "points=\"", status_colour(r->status));
        for (int k = 0; k < r->ncurve; k++) {
            const double *q = r->curve + (size_t)k * cols;
            double w = -INFINITY;
            for (int t = 0; t < nt; t++) w = fmax(w, ck->summary.orig_val[t] - q[2 + t]);
            gm_svg_printf(b, "%.1f,%.1f ", gm_svg_px(&f, q[0]), gm_svg_py(&f, fmin(100 * w, f.y1)));
        }
        gm_svg_printf(b, "\"><title>candidate %d: %s after %d epochs</title></polyline>\n", r->id,
                      gm_cand_status_name(r->status), r->epochs);
        if (r->status == GM_CAND_ABORTED && R->cfg.filter_curve) curve_extrapolation(R, b, &f, r);
    }
    status_legend(R, b, "");
    gm_svg_legend(b, LEGEND_X, 130, status_colour(GM_CAND_ABORTED), "2 3", "fit behind an abort");
    gm_svg_end(b);
    F->drawn = 1;
    snprintf(F->caption, sizeof F->caption,
             "The learning curves of %d fine-tuned candidates: the worst task's validation accuracy drop at every "
             "check, from the candidate as built (epoch 0) to its last epoch. The dashed line is the threshold "
             "(%.2f points). Dotted: for an aborted candidate, the geometric fit of each task that the learning-curve "
             "rule judged out of reach, extended to the budget it was judged at.", ncurves, 100 * R->cfg.threshold);
    return GM_OK;
}

/* Layout of the best graph: a tree from the input, leaves in depth-first order, parents centred over children. */
typedef struct {
    int n;                       /* nodes; index n is the input */
    int first[GM_FG_MAX_NODES + 1], next[GM_FG_MAX_NODES + 1], depth[GM_FG_MAX_NODES + 1];
    double x[GM_FG_MAX_NODES + 1];
    unsigned mask[GM_FG_MAX_NODES + 1];  /* tasks whose path runs through the node */
    int slots, max_depth;
    unsigned set[GM_FG_MAX_NODES];       /* distinct masks, in order of first appearance */
    int nsets;
} tree;

static void tree_place(tree *T, int v)
{
    if (T->first[v] < 0) {
        T->x[v] = T->slots++;
        return;
    }
    int last = -1;
    for (int c = T->first[v]; c >= 0; c = T->next[c]) {
        tree_place(T, c);
        last = c;
    }
    T->x[v] = (T->x[T->first[v]] + T->x[last]) / 2;
}

static void tree_build(tree *T, const gm_fgraph *g)
{
    T->n = g->nnodes;
    for (int i = 0; i <= T->n; i++) T->first[i] = T->next[i] = -1;
    T->depth[T->n] = 0;
    T->mask[T->n] = (1u << g->ntasks) - 1;
    for (int i = T->n - 1; i >= 0; i--) { /* backwards, so siblings stay in index order */
        int p = g->nodes[i].parent < 0 ? T->n : g->nodes[i].parent;
        T->next[i] = T->first[p];
        T->first[p] = i;
    }
    for (int i = 0; i < T->n; i++) {
        int p = g->nodes[i].parent;
        T->depth[i] = p < 0 ? 1 : T->depth[p] + 1;
        T->max_depth = T->depth[i] > T->max_depth ? T->depth[i] : T->max_depth;
        T->mask[i] = 0;
        for (int t = 0; t < g->ntasks; t++) T->mask[i] |= (unsigned)gm_fgraph_on_path(g, i, t) << t;
        int k = 0;
        while (k < T->nsets && T->set[k] != T->mask[i]) k++;
        if (k == T->nsets) T->set[T->nsets++] = T->mask[i];
    }
    tree_place(T, T->n);
}

/* A task's own colour for its unshared nodes; shared sets take the colours after the tasks'. */
static int set_colour(const tree *T, int ntasks, unsigned mask)
{
    for (int t = 0; t < ntasks; t++)
        if (mask == 1u << t) return t;
    int k = 0;
    for (int s = 0; s < T->nsets && T->set[s] != mask; s++) k += (T->set[s] & (T->set[s] - 1)) != 0;
    return ntasks + k;
}

static void set_label(const report *R, unsigned mask, char *s, size_t n)
{
    int cnt = 0;
    for (int t = 0; t < R->ck.ntasks; t++) cnt += (mask >> t) & 1;
    if (cnt == 1) {
        for (int t = 0; t < R->ck.ntasks; t++)
            if (mask >> t & 1) snprintf(s, n, "%s only", R->ck.tasks[t]);
        return;
    }
    if (cnt == R->ck.ntasks) {
        snprintf(s, n, "shared by all %d tasks", cnt);
        return;
    }
    size_t len = (size_t)snprintf(s, n, "shared by");
    for (int t = 0, k = 0; t < R->ck.ntasks && len < n; t++)
        if (mask >> t & 1) {
            k++;
            len += (size_t)snprintf(s + len, n - len, "%s %s", k == 1 ? "" : k == cnt ? " and" : ",", R->ck.tasks[t]);
        }
}

enum { BOX_W = 156, BOX_H = 34, SLOT_W = 172, LEVEL_H = 56, MARGIN = 20 };

static void graph_box(report *R, const tree *T, gm_svg_buf *b, int v)
{
    const gm_fgraph *g = R->best;
    double cx = MARGIN + SLOT_W * T->x[v] + SLOT_W / 2.0, y = MARGIN + LEVEL_H * T->depth[v];
    char l1[96], l2[96];
    gm_shape in = v < T->n ? gm_fgraph_in_shape(g, v) : g->input, out = v < T->n ? gm_fgraph_out_shape(g, v) : in;
    if (v == T->n) {
        snprintf(l1, sizeof l1, "input");
        snprintf(l2, sizeof l2, "%dx%dx%d", in.c, in.h, in.w);
    } else if (g->nodes[v].model < 0) {
        snprintf(l1, sizeof l1, "adapter");
        snprintf(l2, sizeof l2, "%dx%dx%d -> %dx%dx%d", in.c, in.h, in.w, out.c, out.h, out.w);
    } else {
        const gm_fnode *nd = &g->nodes[v];
        snprintf(l1, sizeof l1, "%.20s L%d", R->ck.tasks[nd->model], nd->layer);
        if (nd->task >= 0) snprintf(l2, sizeof l2, "head: %.20s", R->ck.tasks[nd->task]);
        else snprintf(l2, sizeof l2, "%s %dx%dx%d", gm_block_kind_name(nd->block.kind), out.c, out.h, out.w);
    }
    const char *col = v == T->n ? "#bbbbbb" : gm_svg_colour(set_colour(T, g->ntasks, T->mask[v]));
    gm_svg_printf(b, "<g><title>");
    if (v < T->n) gm_svg_printf(b, "node %d: ", v);
    gm_svg_escape(b, l1);
    gm_svg_printf(b, ", ");
    gm_svg_escape(b, l2);
    gm_svg_printf(b, "</title>\n<rect x=\"%.1f\" y=\"%d\" width=\"%d\" height=\"%d\" rx=\"5\" fill=\"%s\" "
                     "fill-opacity=\"0.3\" stroke=\"%s\" stroke-width=\"2\"/>\n",
                  cx - BOX_W / 2.0, (int)y, BOX_W, BOX_H, col, col);
    gm_svg_text(b, cx, y + 14, "middle", 11, l1);
    gm_svg_text(b, cx, y + 28, "middle", 10, l2);
    gm_svg_printf(b, "</g>\n");
}

/* Plot 3: the best fused graph as a tree, boxes coloured by the set of tasks that share them. */
static gm_status fig_graph(report *R, figure *F, gm_error *err)
{
    if (!R->best) {
        if (R->ck.best_id < 0) snprintf(F->caption, sizeof F->caption, "No candidate passed: no fused graph to draw.");
        else snprintf(F->caption, sizeof F->caption, "The best fused graph is not drawn: %.1400s.", R->graph_note);
        return GM_OK;
    }
    tree *T = calloc(1, sizeof *T);
    if (!T) return gm_error_set(err, GM_ENOMEM, "out of memory");
    tree_build(T, R->best);
    gm_svg_buf *b = &F->svg;
    int w = 2 * MARGIN + SLOT_W * T->slots, h = 2 * MARGIN + LEVEL_H * (T->max_depth + 1) + 18 * (T->nsets + 1);
    gm_svg_begin(b, w > 480 ? w : 480, h, "the best fused graph");
    gm_svg_printf(b, "<g fill=\"none\" stroke=\"#777777\" stroke-width=\"1.5\">\n");
    for (int i = 0; i < T->n; i++) {
        int p = R->best->nodes[i].parent < 0 ? T->n : R->best->nodes[i].parent;
        double px = MARGIN + SLOT_W * T->x[p] + SLOT_W / 2.0, cx = MARGIN + SLOT_W * T->x[i] + SLOT_W / 2.0;
        double py = MARGIN + LEVEL_H * T->depth[p] + BOX_H, cy = MARGIN + LEVEL_H * T->depth[i];
        gm_svg_printf(b, "<path d=\"M%.1f %.1f V%.1f H%.1f V%.1f\"/>\n", px, py, (py + cy) / 2, cx, cy);
    }
    gm_svg_printf(b, "</g>\n");
    for (int v = 0; v <= T->n; v++) graph_box(R, T, b, v);
    double ly = MARGIN + LEVEL_H * (T->max_depth + 1) + 14;
    for (int s = 0; s < T->nsets; s++) {
        char l[256];
        set_label(R, T->set[s], l, sizeof l);
        gm_svg_legend(b, MARGIN, ly + 18 * s, gm_svg_colour(set_colour(T, R->best->ntasks, T->set[s])), NULL, l);
    }
    gm_svg_end(b);
    F->drawn = 1;
    const gm_ckpt_cand *r = &R->ck.cand[R->ck.best_id];
    snprintf(F->caption, sizeof F->caption,
             "Candidate %d: %d nodes from the input (top) to each task's head. A box names the original model (by "
             "its task) and the layer it was copied from (blocks counted from 0), or an adapter a relaxed merge "
             "inserted; its colour says which tasks run through it.", r->id, R->best->nnodes);
    free(T);
    return GM_OK;
}

/* ---- the sections --------------------------------------------------------------------- */

static void fmt_duration(char *s, size_t n, double sec)
{
    long v = isfinite(sec) && sec > 0 ? (long)(sec + 0.5) : 0;
    snprintf(s, n, "%.0f s (%ld:%02ld:%02ld)", isfinite(sec) ? sec : 0.0, v / 3600, v / 60 % 60, v % 60);
}

static void sec_search(report *R, doc *d, table *t)
{
    const gm_search_config *c = &R->cfg;
    char s[96];
    doc_heading(d, 2, "Search");
    memset(t, 0, sizeof *t);
    cellf(t, -1, 0, "setting");
    cellf(t, -1, 1, "value");
    int r = 0;
    cellf(t, r, 0, "threshold");
    cellf(t, r++, 1, "%.4f (%.2f points of accuracy per task)", c->threshold, 100 * c->threshold);
    cellf(t, r, 0, "policy");
    if (c->policy == GM_POLICY_SA)
        cellf(t, r++, 1, "sa (simulated annealing: T0 %g, alpha %g, up to %d elites)", c->t0, c->alpha, c->max_elites);
    else cellf(t, r++, 1, "random");
    cellf(t, r, 0, "iterations");
    cellf(t, r++, 1, "%d proposed of %d", R->ck.iteration, c->iterations);
    cellf(t, r, 0, "mode");
    if (c->deterministic) cellf(t, r++, 1, "deterministic (rounds of %d; best = fewest FLOPs)", c->round);
    else cellf(t, r++, 1, "asynchronous (best = highest measured speed-up)");
    cellf(t, r, 0, "seed");
    cellf(t, r++, 1, "%llu", (unsigned long long)c->seed);
    cellf(t, r, 0, "fine-tune epochs");
    cellf(t, r++, 1, "%d per candidate at most; %ld in all", c->ft_epochs, R->epochs);
    fmt_duration(s, sizeof s, R->ck.elapsed_s);
    cellf(t, r, 0, "wall time");
    cellf(t, r++, 1, "%s", s);
    cellf(t, r, 0, "best");
    if (R->ck.best_id >= 0 && isfinite(R->ck.summary.final_speedup))
        cellf(t, r++, 1, "candidate %d, speed-up %.2fx timed again at the end (%.2fx when the search timed it)",
              R->ck.best_id, R->ck.summary.final_speedup, R->ck.cand[R->ck.best_id].speedup);
    else if (R->ck.best_id >= 0)
        cellf(t, r++, 1, "candidate %d, speed-up %.2fx", R->ck.best_id, R->ck.cand[R->ck.best_id].speedup);
    else cellf(t, r++, 1, "none passed");
    doc_table(d, t);

    doc_heading(d, 3, "Candidates by status");
    memset(t, 0, sizeof *t);
    cellf(t, -1, 0, "status");
    cellf(t, -1, 1, "candidates");
    t->numeric[1] = 1;
    for (int k = 0; k < GM_CAND_NSTATUS; k++) {
        cellf(t, k, 0, "%s", gm_cand_status_name((gm_cand_status)k));
        cellf(t, k, 1, "%d", R->count[k]);
    }
    cellf(t, GM_CAND_NSTATUS, 0, "all");
    cellf(t, GM_CAND_NSTATUS, 1, "%d", R->ck.ncand);
    doc_table(d, t);

    doc_heading(d, 3, "Original models");
    doc_list(d, 1);
    for (int k = 0; k < c->nmodels; k++) doc_item(d, R->ck.tasks[k], c->models[k]);
    doc_list(d, 0);
    if (R->models_note[0])
        doc_para(d, "Not every model could be read, so the fused graph is not drawn and the originals' size is "
                 "unknown: %s.", R->models_note);
}

static void sec_accuracy(report *R, doc *d, table *t)
{
    const gm_ckpt_summary *S = &R->ck.summary;
    const gm_ckpt_cand *b = R->ck.best_id >= 0 ? &R->ck.cand[R->ck.best_id] : NULL;
    static const char *const head[] = {"task", "original val %", "fused val %", "val drop (points)",
                                       "original test %", "fused test %", "test drop (points)"};
    doc_heading(d, 2, "Accuracy per task");
    doc_para(d, "%s%s", R->acc_note, b ? "" : " No candidate passed: there is no fused model yet.");
    memset(t, 0, sizeof *t);
    for (int c = 0; c < 7; c++) {
        cellf(t, -1, c, "%s", head[c]);
        t->numeric[c] = c > 0;
    }
    for (int k = 0; k < R->ck.ntasks; k++) {
        char s[6][32];
        double ov = S->orig_val[k], fv = b ? b->val[k] : NAN;
        double ot = S->orig_test[k], ft = b ? S->best_test[k] : NAN;
        cellf(t, k, 0, "%s", R->ck.tasks[k]);
        cellf(t, k, 1, "%s", num(s[0], 32, 100 * ov, 2, ""));
        cellf(t, k, 2, "%s", num(s[1], 32, 100 * fv, 2, ""));
        cellf(t, k, 3, "%s", num(s[2], 32, 100 * (ov - fv), 2, ""));
        cellf(t, k, 4, "%s", num(s[3], 32, 100 * ot, 2, ""));
        cellf(t, k, 5, "%s", num(s[4], 32, 100 * ft, 2, ""));
        cellf(t, k, 6, "%s", num(s[5], 32, 100 * (ot - ft), 2, ""));
    }
    doc_table(d, t);
}

static void sec_latency(report *R, doc *d, table *t)
{
    const gm_ckpt_cand *b = R->ck.best_id >= 0 ? &R->ck.cand[R->ck.best_id] : NULL;
    char s[8][32];
    doc_heading(d, 2, "Latency");
    doc_para(d, "Batch-1 latency, median of %d runs after %d warm-up, %d thread%s; the originals run one after "
             "the other, timed alternately with the best in the same run.", R->cfg.lat_runs, R->cfg.lat_warmup,
             R->cfg.threads, R->cfg.threads == 1 ? "" : "s");
    memset(t, 0, sizeof *t);
    cellf(t, -1, 0, "model");
    cellf(t, -1, 1, "latency (ms)");
    cellf(t, -1, 2, "MFLOPs");
    cellf(t, -1, 3, "parameters");
    t->numeric[1] = t->numeric[2] = t->numeric[3] = 1;
    double bl = b ? b->base_latency_ms : NAN, fl = b ? b->latency_ms : NAN, fm = b ? b->mflops : NAN;
    double fp = b ? (double)b->params : NAN, op = isfinite(R->orig_mflops) ? (double)R->orig_params : NAN;
    cellf(t, 0, 0, "originals, one after the other");
    cellf(t, 0, 1, "%s", num(s[0], 32, bl, 3, ""));
    cellf(t, 0, 2, "%s", num(s[1], 32, R->orig_mflops, 3, ""));
    cellf(t, 0, 3, "%s", num(s[2], 32, op, 0, ""));
    if (b) cellf(t, 1, 0, "best fused (candidate %d)", b->id);
    else cellf(t, 1, 0, "best fused (none yet)");
    cellf(t, 1, 1, "%s", num(s[3], 32, fl, 3, ""));
    cellf(t, 1, 2, "%s", num(s[4], 32, fm, 3, ""));
    cellf(t, 1, 3, "%s", num(s[5], 32, fp, 0, ""));
    cellf(t, 2, 0, "ratio (originals / fused)");
    cellf(t, 2, 1, "%s", num(s[6], 32, b ? b->speedup : NAN, 2, "x"));
    cellf(t, 2, 2, "%s", num(s[7], 32, R->orig_mflops / fm, 2, "x"));
    cellf(t, 2, 3, "%s", num(s[0], 32, op / fp, 2, "x"));
    const gm_ckpt_summary *k = &R->ck.summary;
    if (b && isfinite(k->final_speedup)) {
        /* The search's own timing of the best is the max of noisy ratios; the end's is not. */
        cellf(t, 3, 0, "timed again at the end: originals");
        cellf(t, 3, 1, "%s", num(s[1], 32, k->final_base_latency_ms, 3, ""));
        cellf(t, 4, 0, "timed again at the end: best fused");
        cellf(t, 4, 1, "%s", num(s[2], 32, k->final_latency_ms, 3, ""));
        cellf(t, 5, 0, "ratio at the end (originals / fused)");
        cellf(t, 5, 1, "%s", num(s[3], 32, k->final_speedup, 2, "x"));
    }
    doc_table(d, t);
}

/* Task t's original layers that no node of the best graph copies, as "L3 conv, L4 pool". */
static int skipped_layers(const report *R, int t, char *s, size_t n)
{
    const gm_mfile *m = &R->models[t];
    size_t len = 0;
    int skipped = 0;
    s[0] = '\0';
    for (int l = 0; l < m->nblocks; l++) {
        int kept = 0;
        for (int i = 0; i < R->best->nnodes && !kept; i++)
            kept = R->best->nodes[i].model == t && R->best->nodes[i].layer == l;
        if (kept) continue;
        if (len < n)
            len += (size_t)snprintf(s + len, n - len, "%sL%d %s", skipped ? ", " : "", l,
                                    gm_block_kind_name(m->blocks[l].kind));
        skipped++;
    }
    return skipped;
}

static void sec_graph(report *R, doc *d)
{
    doc_heading(d, 2, "Best fused graph");
    doc_figure(d, &R->fig[FIG_GRAPH]);
    if (!R->best) return;
    doc_heading(d, 3, "Layers skipped");
    doc_para(d, "Layers of each original model that no node of the fused graph was copied from.");
    doc_list(d, 1);
    for (int t = 0; t < R->ck.ntasks; t++) {
        char s[1024], line[1200];
        int k = skipped_layers(R, t, s, sizeof s);
        snprintf(line, sizeof line, "%d of %d layers skipped%s%s", k, R->models[t].nblocks, k ? ": " : "", s);
        doc_item(d, R->ck.tasks[t], line);
    }
    doc_list(d, 0);
}

static const char CSS[] =
    "body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;margin:24px auto;max-width:1000px;color:#222;"
    "padding:0 16px}\n"
    "h1{font-size:24px}h2{font-size:19px;margin-top:32px;border-bottom:1px solid #ccc}h3{font-size:15px}\n"
    "table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #ccc;padding:3px 9px;"
    "text-align:left}th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}\n"
    "figure{margin:8px 0 24px}figure svg{max-width:100%;height:auto}figcaption{font-size:13px;color:#444;"
    "max-width:900px}\n";

static void write_doc(report *R, doc *d, table *t)
{
    if (d->kind == DOC_HTML) {
        gm_svg_printf(d->b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>gmorph "
                            "report: ");
        gm_svg_escape(d->b, R->run);
        gm_svg_printf(d->b, "</title>\n<style>\n%s</style>\n</head>\n<body>\n", CSS);
    }
    doc_heading(d, 1, "gmorph search report");
    doc_para(d, "Run folder %s; checkpoint %s (%d candidates).", R->run, R->ckpt_path, R->ck.ncand);
    sec_search(R, d, t);
    sec_accuracy(R, d, t);
    sec_latency(R, d, t);
    doc_heading(d, 2, "Best speed-up so far");
    doc_figure(d, &R->fig[FIG_PROGRESS]);
    doc_heading(d, 2, "Latency against accuracy drop");
    doc_figure(d, &R->fig[FIG_PARETO]);
    doc_heading(d, 2, "Learning curves");
    doc_figure(d, &R->fig[FIG_CURVES]);
    sec_graph(R, d);
    if (d->kind == DOC_HTML) gm_svg_printf(d->b, "</body>\n</html>\n");
}

/* ---- output ---------------------------------------------------------------------------- */

/* Writes text to dir/name atomically (temporary file, then rename). */
static gm_status write_file(const char *dir, const char *name, const char *prefix, const gm_svg_buf *b,
                            gm_error *err)
{
    char path[PATH_CAP + 64], tmp[PATH_CAP + 80];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (b->failed) return gm_error_set(err, GM_ENOMEM, "out of memory writing %s", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return gm_error_set(err, GM_EIO, "%s: %s", tmp, strerror(errno));
    int bad = fputs(prefix, f) < 0 || fwrite(gm_svg_str(b), 1, b->len, f) != b->len;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        remove(tmp);
        return gm_error_set(err, GM_EIO, "%s: cannot write: %s", path, strerror(errno));
    }
    return GM_OK;
}

static gm_status write_outputs(report *R, gm_error *err)
{
    static const char *const files[NFIGS] = {"report-progress.svg", "report-pareto.svg", "report-curves.svg",
                                             "report-graph.svg"};
    static const char *const titles[NFIGS] = {"best speed-up so far", "latency against accuracy drop",
                                              "learning curves", "best fused graph"};
    for (int k = 0; k < NFIGS; k++) R->fig[k] = (figure){.file = files[k], .title = titles[k]};
    gm_status st = fig_progress(R, &R->fig[FIG_PROGRESS], err);
    if (st == GM_OK) st = fig_pareto(R, &R->fig[FIG_PARETO], err);
    if (st == GM_OK) st = fig_curves(R, &R->fig[FIG_CURVES], err);
    if (st == GM_OK) st = fig_graph(R, &R->fig[FIG_GRAPH], err);
    for (int k = 0; st == GM_OK && k < NFIGS; k++) {
        char old[PATH_CAP + 64];
        snprintf(old, sizeof old, "%s/%s", R->run, files[k]);
        if (R->fig[k].drawn)
            st = write_file(R->run, files[k], "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", &R->fig[k].svg, err);
        else remove(old); /* an earlier report's drawing would contradict this one */
    }
    table *t = malloc(sizeof *t);
    gm_svg_buf html = {0}, md = {0};
    if (st == GM_OK && !t) st = gm_error_set(err, GM_ENOMEM, "out of memory");
    if (st == GM_OK) {
        write_doc(R, &(doc){&html, DOC_HTML}, t);
        write_doc(R, &(doc){&md, DOC_MD}, t);
        st = write_file(R->run, "report.html", "", &html, err);
    }
    if (st == GM_OK) st = write_file(R->run, "report.md", "", &md, err);
    free(t);
    gm_svg_buf_free(&html);
    gm_svg_buf_free(&md);
    return st;
}

static void report_free(report *R)
{
    for (int k = 0; k < NFIGS; k++) gm_svg_buf_free(&R->fig[k].svg);
    for (int t = 0; t < R->nloaded; t++) gm_mfile_free(&R->models[t]);
    free(R->best);
    gm_ckpt_free(&R->ck);
    free(R);
}

int gm_cmd_report(int argc, char **argv)
{
    const char *arg = NULL;
    if (parse(argc, argv, &arg)) return GM_EXIT_USAGE;
    report *R = calloc(1, sizeof *R);
    if (!R) {
        fprintf(stderr, "gmorph report: out of memory\n");
        return GM_EXIT_FAIL;
    }
    R->ck.best_id = -1;
    gm_error err;
    gm_status st = load_inputs(R, arg, &err);
    if (st == GM_OK) st = write_outputs(R, &err);
    int rc = st == GM_OK ? GM_EXIT_OK : gm_cli_fail(CMD, NULL, &err);
    if (st == GM_OK) {
        printf("gmorph report: wrote %s/report.html\n", R->run);
        printf("gmorph report: wrote %s/report.md (figures %s/report-*.svg)\n", R->run, R->run);
        if (!R->fig[FIG_GRAPH].drawn) printf("gmorph report: %s\n", R->fig[FIG_GRAPH].caption);
    }
    report_free(R);
    return rc;
}

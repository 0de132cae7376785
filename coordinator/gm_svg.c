#include "gm_svg.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the buffer ------------------------------------------------------------------- */

static int reserve(gm_svg_buf *b, size_t more)
{
    if (b->failed) return -1;
    if (b->len + more + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1) cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
        b->failed = 1;
        return -1;
    }
    b->s = s;
    b->cap = cap;
    return 0;
}

void gm_svg_append(gm_svg_buf *b, const char *text, size_t n)
{
    if (reserve(b, n)) return;
    memcpy(b->s + b->len, text, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void gm_svg_printf(gm_svg_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void gm_svg_escape(gm_svg_buf *b, const char *text)
{
    for (const char *p = text; *p; p++) {
        switch (*p) {
        case '&': gm_svg_append(b, "&amp;", 5); break;
        case '<': gm_svg_append(b, "&lt;", 4); break;
        case '>': gm_svg_append(b, "&gt;", 4); break;
        case '"': gm_svg_append(b, "&quot;", 6); break;
        case '\'': gm_svg_append(b, "&#39;", 5); break;
        default: gm_svg_append(b, p, 1);
        }
    }
}

const char *gm_svg_str(const gm_svg_buf *b)
{
    return b->s ? b->s : "";
}

void gm_svg_buf_free(gm_svg_buf *b)
{
    free(b->s);
    *b = (gm_svg_buf){0};
}

/* ---- the frame ---------------------------------------------------------------------- */

/* A round step (1, 2 or 5 times a power of ten) near range / n. */
static double nice_step(double range, int n)
{
    double raw = range / n, mag = pow(10.0, floor(log10(raw))), norm = raw / mag;
    return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
}

static void fit_axis(double lo, double hi, double *a, double *b, double *step)
{
    if (!isfinite(lo) || !isfinite(hi)) lo = hi = 0;
    if (hi < lo) {
        double t = lo;
        lo = hi;
        hi = t;
    }
    if (lo == 0 && hi == 0) hi = 1;
    if (hi - lo < 1e-12 * (fabs(lo) + fabs(hi)) || hi - lo < 1e-300) {
        double pad = 0.1 * fabs(lo);
        lo -= pad;
        hi += pad;
    }
    *step = nice_step(hi - lo, 5);
    *a = floor(lo / *step + 1e-9) * *step;
    *b = ceil(hi / *step - 1e-9) * *step;
}

void gm_svg_frame_fit(gm_svg_frame *f, double xlo, double xhi, double ylo, double yhi)
{
    fit_axis(xlo, xhi, &f->x0, &f->x1, &f->xstep);
    fit_axis(ylo, yhi, &f->y0, &f->y1, &f->ystep);
}

double gm_svg_px(const gm_svg_frame *f, double x)
{
    return f->left + (x - f->x0) / (f->x1 - f->x0) * f->width;
}

double gm_svg_py(const gm_svg_frame *f, double y)
{
    return f->top + f->height - (y - f->y0) / (f->y1 - f->y0) * f->height;
}

int gm_svg_decimals(double step)
{
    if (!(step > 0) || step >= 1) return 0;
    int d = (int)ceil(-log10(step) - 1e-9);
    return d > 9 ? 9 : d;
}

/* ---- drawing ------------------------------------------------------------------------ */

void gm_svg_begin(gm_svg_buf *b, int width, int height, const char *title)
{
    gm_svg_printf(b,
                  "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                  "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\" role=\"img\">\n<title>",
                  width, height, width, height);
    gm_svg_escape(b, title);
    gm_svg_printf(b, "</title>\n<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n", width, height);
}

void gm_svg_end(gm_svg_buf *b)
{
    gm_svg_printf(b, "</svg>\n");
}

void gm_svg_text(gm_svg_buf *b, double x, double y, const char *anchor, int size, const char *text)
{
    gm_svg_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" font-size=\"%d\" fill=\"#222222\">", x, y, anchor,
                  size);
    gm_svg_escape(b, text);
    gm_svg_printf(b, "</text>\n");
}

/* A tick label: the value with the step's decimals, never "-0". */
static void tick_label(char *s, size_t n, double v, double step)
{
    if (fabs(v) < 1e-9 * step) v = 0;
    snprintf(s, n, "%.*f", gm_svg_decimals(step), v);
}

void gm_svg_axes(gm_svg_buf *b, const gm_svg_frame *f, const char *xlabel, const char *ylabel)
{
    const double bottom = f->top + f->height, right = f->left + f->width;
    char s[64];
    gm_svg_printf(b, "<g stroke=\"#e3e3e3\" stroke-width=\"1\">\n");
    for (int i = 0; f->x0 + i * f->xstep <= f->x1 + 1e-9 * f->xstep; i++) {
        double x = gm_svg_px(f, f->x0 + i * f->xstep);
        gm_svg_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", x, f->top, x, bottom);
    }
    for (int i = 0; f->y0 + i * f->ystep <= f->y1 + 1e-9 * f->ystep; i++) {
        double y = gm_svg_py(f, f->y0 + i * f->ystep);
        gm_svg_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", f->left, y, right, y);
    }
    gm_svg_printf(b, "</g>\n<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                     "stroke=\"#555555\"/>\n", f->left, f->top, f->width, f->height);
    for (int i = 0; f->x0 + i * f->xstep <= f->x1 + 1e-9 * f->xstep; i++) {
        tick_label(s, sizeof s, f->x0 + i * f->xstep, f->xstep);
        gm_svg_text(b, gm_svg_px(f, f->x0 + i * f->xstep), bottom + 15, "middle", 11, s);
    }
    for (int i = 0; f->y0 + i * f->ystep <= f->y1 + 1e-9 * f->ystep; i++) {
        tick_label(s, sizeof s, f->y0 + i * f->ystep, f->ystep);
        gm_svg_text(b, f->left - 6, gm_svg_py(f, f->y0 + i * f->ystep) + 4, "end", 11, s);
    }
    gm_svg_text(b, f->left + f->width / 2, bottom + 34, "middle", 12, xlabel);
    double yx = f->left - 48, yy = f->top + f->height / 2;
    gm_svg_printf(b, "<g transform=\"rotate(-90 %.1f %.1f)\">\n", yx, yy);
    gm_svg_text(b, yx, yy, "middle", 12, ylabel);
    gm_svg_printf(b, "</g>\n");
}

void gm_svg_legend(gm_svg_buf *b, double x, double y, const char *colour, const char *dash, const char *label)
{
    if (dash)
        gm_svg_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"%s%s%s/>\n",
                      x, y - 4, x + 18, y - 4, colour, *dash ? " stroke-dasharray=\"" : "", dash, *dash ? "\"" : "");
    else
        gm_svg_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"11\" height=\"11\" fill=\"%s\" stroke=\"#555555\" "
                         "stroke-width=\"0.5\"/>\n", x + 3, y - 10, colour);
    gm_svg_text(b, x + 24, y, "start", 11, label);
}

const char *gm_svg_colour(int i)
{
    /* Tableau 10: distinct hues that stay apart for most colour-blind readers */
    static const char *const palette[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                          "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
    enum { N = sizeof palette / sizeof palette[0] };
    return palette[((i % N) + N) % N];
}

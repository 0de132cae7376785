/*
 * gm_svg: the little that `gmorph report` needs to draw plots as SVG text by
 * hand: a growing text buffer, XML escaping, a plot frame that maps data to
 * pixels with round tick steps, axes, text and a colour palette.
 *
 * No layout engine, no fonts measured: callers place things in pixels. The
 * output is plain SVG 1.1 that a browser shows inline in HTML or as a file.
 *
 * Memory: a failed allocation marks the buffer failed and drops later text;
 * check gm_svg_buf.failed once at the end instead of after every call.
 */
#ifndef GM_SVG_H
#define GM_SVG_H

#include <stddef.h>

/* A growing NUL-terminated text buffer; zero-initialise it, gm_svg_buf_free releases it. */
typedef struct {
    char *s;       /* the text ("" never allocated: NULL until the first append) */
    size_t len, cap;
    int failed;    /* 1 after an allocation failed: the text is incomplete */
} gm_svg_buf;

void gm_svg_printf(gm_svg_buf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Appends text with &, <, >, " and ' escaped: safe in XML/HTML text and attribute values. */
void gm_svg_escape(gm_svg_buf *b, const char *text);
/* Appends n bytes as they are (n may be 0). */
void gm_svg_append(gm_svg_buf *b, const char *text, size_t n);
/* The text so far ("" when empty). */
const char *gm_svg_str(const gm_svg_buf *b);
void gm_svg_buf_free(gm_svg_buf *b);

/*
 * A plot: the data range [x0, x1] x [y0, y1] drawn in the pixel rectangle at
 * (left, top) of size width x height; y grows upwards. xstep and ystep are
 * the tick spacings (gm_svg_frame_fit picks round ones).
 */
typedef struct {
    double x0, x1, y0, y1, xstep, ystep;
    double left, top, width, height;
} gm_svg_frame;

/*
 * Sets the ranges to cover [xlo, xhi] x [ylo, yhi], widened outwards to
 * multiples of round tick steps (1, 2 or 5 times a power of ten, about five
 * ticks per axis). An empty range becomes its value +-10% ([0, 1] for 0, or
 * for a non-finite range).
 */
void gm_svg_frame_fit(gm_svg_frame *f, double xlo, double xhi, double ylo, double yhi);
/* Pixel coordinates of data x and y. */
double gm_svg_px(const gm_svg_frame *f, double x);
double gm_svg_py(const gm_svg_frame *f, double y);
/* Decimals that print every multiple of step exactly enough (0 for steps >= 1). */
int gm_svg_decimals(double step);

/* "<svg ...>" with the size, a viewBox, a font and an accessible title (escaped). */
void gm_svg_begin(gm_svg_buf *b, int width, int height, const char *title);
void gm_svg_end(gm_svg_buf *b);
/* Grid lines, the frame, tick labels at every step and the axis labels (escaped). */
void gm_svg_axes(gm_svg_buf *b, const gm_svg_frame *f, const char *xlabel, const char *ylabel);
/* Text at (x, y); anchor "start", "middle" or "end"; size in pixels; text escaped. */
void gm_svg_text(gm_svg_buf *b, double x, double y, const char *anchor, int size, const char *text);
/* A legend entry at (x, y): a swatch (a filled square, or a line when dash is not NULL: "" solid) and a label. */
void gm_svg_legend(gm_svg_buf *b, double x, double y, const char *colour, const char *dash, const char *label);

/* A categorical colour (#rrggbb), distinguishable up to 10, cycling after. */
const char *gm_svg_colour(int i);

#endif

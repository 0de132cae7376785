#define _POSIX_C_SOURCE 200809L /* newlocale/uselocale: strtod with the C locale's '.' */

#include "gm_json.h"

#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Beyond RFC 8259, on purpose: "\u0000" is rejected (values are C strings, and a
 * NUL would cut them silently), a leading UTF-8 byte order mark is skipped
 * (RFC 8259 section 8.1 allows that), and numbers that overflow a double are
 * errors rather than infinities.
 */
enum { MAX_DEPTH = 64, SHOW_CHARS = 40, PATH_CAP = 256 };

/*
 * A plain malloc'd tree: each node owns its key, its string or number text and
 * its children. Config files are small, and separate blocks let ASan see any
 * overrun that an arena would hide.
 */
struct gm_json {
    gm_json_type type;
    gm_json *parent;
    size_t index; /* position in the parent */
    char *key;    /* member name when the parent is an object */
    char *name;   /* root only: the label for messages */
    int b;
    double num;
    long long inum;
    int is_int;   /* the token is an integer that fits a long long: inum is exact */
    char *text;   /* string value (UTF-8, no NUL inside) or the number as written */
    gm_json **kids;
    size_t n, cap;
};

typedef struct {
    const char *s;
    size_t len, pos;
    const char *name;
    gm_error *err;
    locale_t c_locale; /* created on the first number; freed by gm_json_parse */
    int depth;
} parser;

/* ---- messages ---------------------------------------------------------------- */

/* Writes s (len bytes) quoted and escaped; past SHOW_CHARS characters it keeps the start and "...". */
static void quote(char *dst, size_t cap, const char *s, size_t len)
{
    if (cap < 24) {
        if (cap) dst[0] = '\0';
        return;
    }
    size_t total = 0, chars = 0, i = 0, o = 0;
    for (size_t j = 0; j < len; j++) total += ((unsigned char)s[j] & 0xC0) != 0x80;
    size_t keep = total > SHOW_CHARS ? SHOW_CHARS - 3 : total;
    dst[o++] = '"';
    /* each step writes at most 6 bytes (an escape) or 4 (a UTF-8 character); 5 stay for `..."` and NUL */
    while (i < len && chars < keep && o + 6 + 5 < cap) {
        unsigned char c = (unsigned char)s[i++];
        if (c == '"' || c == '\\') {
            dst[o++] = '\\';
            dst[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7F) {
            o += (size_t)snprintf(dst + o, cap - o, "\\u%04X", c);
        } else {
            dst[o++] = (char)c;
            for (int k = 0; k < 3 && i < len && ((unsigned char)s[i] & 0xC0) == 0x80; k++) dst[o++] = s[i++];
        }
        chars++;
    }
    if (i < len) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o++] = '"';
    dst[o] = '\0';
}

/* How a byte reads in a syntax error: 'x', a word like 'NaN', or "end of input". */
static void describe_at(const parser *p, size_t at, char *buf, size_t cap)
{
    if (at >= p->len) {
        snprintf(buf, cap, "end of input");
        return;
    }
    unsigned char c = (unsigned char)p->s[at];
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
        size_t n = 0;
        while (at + n < p->len && n < 20) {
            unsigned char d = (unsigned char)p->s[at + n];
            if (!((d >= 'a' && d <= 'z') || (d >= 'A' && d <= 'Z') || (d >= '0' && d <= '9') || d == '_')) break;
            n++;
        }
        snprintf(buf, cap, "'%.*s'", (int)n, p->s + at);
    } else if (c == '\'') {
        snprintf(buf, cap, "a single quote");
    } else if (c >= 0x20 && c < 0x7F) {
        snprintf(buf, cap, "'%c'", c);
    } else {
        snprintf(buf, cap, "byte 0x%02X", c);
    }
}

/* A syntax error at byte offset at: "<name>:<line>:<col>: <what>". */
static gm_status fail(parser *p, size_t at, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static gm_status fail(parser *p, size_t at, const char *fmt, ...)
{
    /* Columns count characters (UTF-8 lead bytes), so they match what an editor shows. */
    long line = 1, col = 1;
    size_t i = p->len >= 3 && memcmp(p->s, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0; /* a BOM takes no column */
    for (; i < at && i < p->len; i++) {
        unsigned char c = (unsigned char)p->s[i];
        if (c == '\n') {
            line++;
            col = 1;
        } else if ((c & 0xC0) != 0x80) {
            col++;
        }
    }
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return gm_error_set(p->err, GM_EINVAL, "%s:%ld:%ld: %s", p->name, line, col, what);
}

static gm_status oom(parser *p) { return gm_error_set(p->err, GM_ENOMEM, "%s: out of memory while parsing", p->name); }

/* ---- the tree ------------------------------------------------------------------ */

static void node_free(gm_json *v)
{
    if (!v) return;
    for (size_t i = 0; i < v->n; i++) node_free(v->kids[i]);
    free(v->kids);
    free(v->key);
    free(v->name);
    free(v->text);
    free(v);
}

void gm_json_free(gm_json *root) { node_free(root); }

/* A new node, attached to parent at once so that an error frees it with the root. Takes key. */
static gm_json *node_new(parser *p, gm_json *parent, char *key)
{
    gm_json *v = calloc(1, sizeof *v);
    if (!v) {
        free(key);
        oom(p);
        return NULL;
    }
    v->key = key;
    if (parent) {
        if (parent->n == parent->cap) {
            size_t cap = parent->cap ? 2 * parent->cap : 4;
            gm_json **k = realloc(parent->kids, cap * sizeof *k);
            if (!k) {
                node_free(v);
                oom(p);
                return NULL;
            }
            parent->kids = k;
            parent->cap = cap;
        }
        v->parent = parent;
        v->index = parent->n;
        parent->kids[parent->n++] = v;
    }
    return v;
}

/* ---- the parser ---------------------------------------------------------------- */

static void skip_ws(parser *p)
{
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static int hex4(const parser *p, size_t at, unsigned *out)
{
    unsigned v = 0;
    if (at + 4 > p->len) return 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s[at + (size_t)i];
        unsigned d;
        if (c >= '0' && c <= '9') d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') d = (unsigned)(c - 'A' + 10);
        else return 0;
        v = v * 16 + d;
    }
    *out = v;
    return 1;
}

/* Length of the well-formed UTF-8 sequence at s[0..n), or 0 (overlong, surrogate, > U+10FFFF). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return len;
}

static size_t put_utf8(char *o, unsigned long cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Parses the string at p->pos (a '"') into a malloc'd, NUL-terminated *out. */
static gm_status parse_string(parser *p, char **out, size_t *out_len)
{
    size_t start = p->pos++;
    /* The decoded text is never longer than the source, so one allocation suffices. */
    size_t end = p->pos;
    while (end < p->len && p->s[end] != '"') end += (p->s[end] == '\\') ? 2 : 1;
    size_t cap = (end < p->len ? end : p->len) - start + 1;
    char *buf = malloc(cap);
    if (!buf) return oom(p);
    size_t o = 0;
    gm_status st = GM_OK;
    for (;;) {
        if (p->pos >= p->len) {
            st = fail(p, start, "unterminated string");
            break;
        }
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c < 0x20) {
            st = c == '\n' ? fail(p, p->pos, "newline in a string (unterminated string?)")
                           : fail(p, p->pos, "control character U+%04X in a string (escape it)", c);
            break;
        }
        if (c >= 0x80) {
            size_t n = utf8_len((const unsigned char *)p->s + p->pos, p->len - p->pos);
            if (!n) {
                st = fail(p, p->pos, "invalid UTF-8 in a string");
                break;
            }
            memcpy(buf + o, p->s + p->pos, n);
            o += n;
            p->pos += n;
            continue;
        }
        if (c != '\\') {
            buf[o++] = (char)c;
            p->pos++;
            continue;
        }
        size_t esc = p->pos;
        if (esc + 1 >= p->len) {
            st = fail(p, start, "unterminated string");
            break;
        }
        char e = p->s[esc + 1];
        const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
        const char *hit = e ? strchr(from, e) : NULL;
        if (hit) {
            buf[o++] = to[hit - from];
            p->pos += 2;
            continue;
        }
        if (e != 'u') {
            st = e > 0x20 && e < 0x7F ? fail(p, esc, "bad escape '\\%c'", e)
                                      : fail(p, esc, "bad escape: '\\' followed by byte 0x%02X", (unsigned char)e);
            break;
        }
        unsigned u, lo;
        if (!hex4(p, esc + 2, &u)) {
            st = fail(p, esc, "bad \\u escape: expected 4 hex digits");
            break;
        }
        unsigned long cp = u;
        p->pos = esc + 6;
        if (u >= 0xDC00 && u <= 0xDFFF) {
            st = fail(p, esc, "lone surrogate \\u%04X", u);
            break;
        }
        if (u >= 0xD800 && u <= 0xDBFF) {
            if (p->pos + 1 < p->len && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u' && hex4(p, p->pos + 2, &lo) &&
                lo >= 0xDC00 && lo <= 0xDFFF) {
                cp = 0x10000 + (((unsigned long)u - 0xD800) << 10) + (lo - 0xDC00);
                p->pos += 6;
            } else {
                st = fail(p, esc, "lone surrogate \\u%04X", u);
                break;
            }
        }
        if (cp == 0) { /* strings are C strings: a NUL would silently cut them */
            st = fail(p, esc, "\\u0000 is not supported in strings");
            break;
        }
        o += put_utf8(buf + o, cp);
    }
    if (st != GM_OK) {
        free(buf);
        return st;
    }
    buf[o] = '\0';
    *out = buf;
    if (out_len) *out_len = o;
    return GM_OK;
}

static int is_digit(const parser *p, size_t at) { return at < p->len && p->s[at] >= '0' && p->s[at] <= '9'; }

/*
 * The exact value of a checked number token when it is an integer that fits a
 * long long. Decided on the decimal digits, not on the double: 2.0000000000000000001
 * is not an integer and -9223372036854775809 does not fit, though both round to
 * doubles that would pass.
 */
static int token_int(const char *t, long long *out)
{
    int neg = *t == '-';
    t += neg;
    const char *ip = t, *fp = NULL;
    size_t ilen = 0, flen = 0;
    while (t[ilen] >= '0' && t[ilen] <= '9') ilen++;
    t += ilen;
    if (*t == '.') {
        fp = ++t;
        while (t[flen] >= '0' && t[flen] <= '9') flen++;
        t += flen;
    }
    long long e = 0;
    if (*t == 'e' || *t == 'E') {
        int eneg = *++t == '-';
        t += *t == '-' || *t == '+';
        for (; *t; t++) e = e < 1000000 ? e * 10 + (*t - '0') : e; /* past 10^6 only the sign matters */
        if (eneg) e = -e;
    }
    /* the digits ip ++ fp times 10^(e - flen); drop leading and trailing zeros */
    size_t n = ilen + flen, first = 0, last = n;
#define DIGIT(k) ((k) < ilen ? ip[k] : fp[(k) - ilen])
    while (first < n && DIGIT(first) == '0') first++;
    if (first == n) {
        *out = 0;
        return 1;
    }
    while (DIGIT(last - 1) == '0') last--;
    long long e10 = e - (long long)flen + (long long)(n - last);
    if (e10 < 0 || (long long)(last - first) + e10 > 19) return 0; /* a fraction, or more digits than fit */
    unsigned long long mag = 0, limit = neg ? (unsigned long long)LLONG_MAX + 1 : (unsigned long long)LLONG_MAX;
    for (size_t k = first; k < last + (size_t)e10; k++) {
        unsigned d = k < last ? (unsigned)(DIGIT(k) - '0') : 0;
        if (mag > (limit - d) / 10) return 0;
        mag = mag * 10 + d;
    }
#undef DIGIT
    *out = neg ? (mag ? -(long long)(mag - 1) - 1 : 0) : (long long)mag; /* no overflow at LLONG_MIN */
    return 1;
}

static gm_status parse_number(parser *p, gm_json *v)
{
    size_t start = p->pos, i = p->pos;
    if (i < p->len && p->s[i] == '-') i++;
    if (!is_digit(p, i)) {
        char what[32];
        describe_at(p, i, what, sizeof what);
        return fail(p, i, "expected a digit after '-', got %s", what);
    }
    if (p->s[i] == '0' && is_digit(p, i + 1)) return fail(p, i, "leading zero in a number");
    while (is_digit(p, i)) i++;
    if (i < p->len && p->s[i] == '.') {
        if (!is_digit(p, ++i)) {
            char what[32];
            describe_at(p, i, what, sizeof what);
            return fail(p, i, "expected a digit after '.', got %s", what);
        }
        while (is_digit(p, i)) i++;
    }
    if (i < p->len && (p->s[i] == 'e' || p->s[i] == 'E')) {
        i++;
        if (i < p->len && (p->s[i] == '+' || p->s[i] == '-')) i++;
        if (!is_digit(p, i)) {
            char what[32];
            describe_at(p, i, what, sizeof what);
            return fail(p, i, "expected a digit in the exponent, got %s", what);
        }
        while (is_digit(p, i)) i++;
    }
    size_t n = i - start;
    v->text = malloc(n + 1);
    if (!v->text) return oom(p);
    memcpy(v->text, p->s + start, n);
    v->text[n] = '\0';
    p->pos = i;

    if (!p->c_locale) {
        p->c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
        if (!p->c_locale) return oom(p);
    }
    /* The grammar is checked above; strtod only converts, with '.' whatever the process locale. */
    locale_t old = uselocale(p->c_locale);
    v->num = strtod(v->text, NULL);
    uselocale(old);
    if (isinf(v->num)) return fail(p, start, "number out of range: %.40s", v->text);

    v->is_int = token_int(v->text, &v->inum);
    return GM_OK;
}

static gm_status parse_value(parser *p, gm_json *v);

static gm_status parse_array(parser *p, gm_json *v)
{
    p->pos++; /* '[' */
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ']') {
        p->pos++;
        return GM_OK;
    }
    for (;;) {
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ']' && v->n > 0) return fail(p, p->pos, "trailing comma before ']'");
        gm_json *e = node_new(p, v, NULL);
        if (!e) return GM_ENOMEM;
        gm_status st = parse_value(p, e);
        if (st != GM_OK) return st;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == ']') {
            p->pos++;
            return GM_OK;
        }
        char what[32];
        describe_at(p, p->pos, what, sizeof what);
        return fail(p, p->pos, "expected ',' or ']' after an element, got %s", what);
    }
}

static gm_status parse_object(parser *p, gm_json *v)
{
    p->pos++; /* '{' */
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == '}') {
        p->pos++;
        return GM_OK;
    }
    for (;;) {
        skip_ws(p);
        if (p->pos >= p->len || p->s[p->pos] != '"') {
            if (p->pos < p->len && p->s[p->pos] == '}' && v->n > 0) return fail(p, p->pos, "trailing comma before '}'");
            char what[32];
            describe_at(p, p->pos, what, sizeof what);
            return fail(p, p->pos, "expected a \"quoted\" key, got %s", what);
        }
        size_t key_at = p->pos, klen;
        char *key;
        gm_status st = parse_string(p, &key, &klen);
        if (st != GM_OK) return st;
        for (size_t i = 0; i < v->n; i++) { /* quadratic, but config objects are small */
            if (strcmp(v->kids[i]->key, key) == 0) {
                char q[256];
                quote(q, sizeof q, key, klen);
                free(key);
                return fail(p, key_at, "duplicate key %s", q);
            }
        }
        skip_ws(p);
        if (p->pos >= p->len || p->s[p->pos] != ':') {
            char what[32];
            describe_at(p, p->pos, what, sizeof what);
            free(key);
            return fail(p, p->pos, "expected ':' after a key, got %s", what);
        }
        p->pos++;
        gm_json *m = node_new(p, v, key);
        if (!m) return GM_ENOMEM;
        st = parse_value(p, m);
        if (st != GM_OK) return st;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == '}') {
            p->pos++;
            return GM_OK;
        }
        char what[32];
        describe_at(p, p->pos, what, sizeof what);
        return fail(p, p->pos, "expected ',' or '}' after a member, got %s", what);
    }
}

static int literal(parser *p, const char *word)
{
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0) return 0;
    p->pos += n;
    return 1;
}

/* Fills v (already attached) from the value at p->pos. */
static gm_status parse_value(parser *p, gm_json *v)
{
    skip_ws(p);
    if (p->pos >= p->len) return fail(p, p->pos, "expected a value, got end of input");
    char c = p->s[p->pos];
    if (c == '{' || c == '[') {
        if (p->depth >= MAX_DEPTH) return fail(p, p->pos, "nesting deeper than %d", MAX_DEPTH);
        p->depth++;
        v->type = c == '{' ? GM_JSON_OBJECT : GM_JSON_ARRAY;
        gm_status st = c == '{' ? parse_object(p, v) : parse_array(p, v);
        p->depth--;
        return st;
    }
    if (c == '"') {
        v->type = GM_JSON_STRING;
        return parse_string(p, &v->text, NULL);
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        v->type = GM_JSON_NUMBER;
        return parse_number(p, v);
    }
    if (literal(p, "true") || literal(p, "false")) {
        v->type = GM_JSON_BOOL;
        v->b = c == 't';
        return GM_OK;
    }
    if (literal(p, "null")) {
        v->type = GM_JSON_NULL;
        return GM_OK;
    }
    char what[32];
    describe_at(p, p->pos, what, sizeof what);
    return fail(p, p->pos, "expected a value, got %s", what);
}

gm_status gm_json_parse(gm_json **root, const char *text, size_t len, const char *name, gm_error *err)
{
    *root = NULL;
    parser p = {text ? text : "", text ? len : 0, 0, name ? name : "(json)", err, (locale_t)0, 0};
    gm_json *r = node_new(&p, NULL, NULL);
    if (!r) return GM_ENOMEM;
    gm_status st = GM_OK;
    r->name = malloc(strlen(p.name) + 1);
    if (!r->name) st = oom(&p);
    else strcpy(r->name, p.name);
    if (st == GM_OK && p.len >= 3 && memcmp(p.s, "\xEF\xBB\xBF", 3) == 0) p.pos = 3; /* a BOM */
    skip_ws(&p);
    if (st == GM_OK && p.pos >= p.len) st = fail(&p, p.pos, "empty input");
    if (st == GM_OK) st = parse_value(&p, r);
    skip_ws(&p);
    if (st == GM_OK && p.pos < p.len) {
        char what[32];
        describe_at(&p, p.pos, what, sizeof what);
        st = fail(&p, p.pos, "expected the end after the root value, got %s", what);
    }
    if (p.c_locale) freelocale(p.c_locale);
    if (st != GM_OK) {
        node_free(r);
        return st;
    }
    gm_error_clear(err);
    *root = r;
    return GM_OK;
}

gm_status gm_json_parse_file(gm_json **root, const char *path, gm_error *err)
{
    *root = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return gm_error_set(err, GM_EIO, "%s: cannot read: %s", path, strerror(errno));
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return gm_error_set(err, GM_ENOMEM, "%s: out of memory while reading", path);
    }
    for (;;) {
        if (len == cap) {
            char *b = realloc(buf, cap * 2);
            if (!b) {
                free(buf);
                fclose(f);
                return gm_error_set(err, GM_ENOMEM, "%s: out of memory while reading", path);
            }
            buf = b;
            cap *= 2;
        }
        errno = 0;
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    if (ferror(f)) { /* a directory, say: fopen works, reading gives EISDIR */
        int e = errno ? errno : EIO;
        free(buf);
        fclose(f);
        return gm_error_set(err, GM_EIO, "%s: cannot read: %s", path, strerror(e));
    }
    fclose(f);
    gm_status st = gm_json_parse(root, buf, len, path, err);
    free(buf);
    return st;
}

/* ---- reading the tree -------------------------------------------------------- */

gm_json_type gm_json_type_of(const gm_json *v) { return v ? v->type : GM_JSON_NULL; }

const char *gm_json_type_name(gm_json_type t)
{
    switch (t) {
    case GM_JSON_NULL: return "null";
    case GM_JSON_BOOL: return "boolean";
    case GM_JSON_NUMBER: return "number";
    case GM_JSON_STRING: return "string";
    case GM_JSON_ARRAY: return "array";
    case GM_JSON_OBJECT: return "object";
    }
    return "unknown";
}

/* A key prints bare when it reads as a name, else as ["..."], so paths stay unambiguous. */
static int bare_key(const char *k)
{
    if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') || *k == '_')) return 0;
    for (; *k; k++)
        if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') || (*k >= '0' && *k <= '9') || *k == '_' ||
              *k == '-'))
            return 0;
    return 1;
}

const char *gm_json_path(const gm_json *v, char *buf, size_t cap)
{
    if (!cap) return buf;
    buf[0] = '\0';
    const gm_json *chain[MAX_DEPTH + 1];
    int n = 0;
    for (const gm_json *u = v; u && u->parent && n < MAX_DEPTH + 1; u = u->parent) chain[n++] = u;
    size_t o = 0;
    for (int i = n - 1; i >= 0 && o < cap; i--) {
        const gm_json *u = chain[i];
        int w;
        if (u->parent->type == GM_JSON_ARRAY) {
            w = snprintf(buf + o, cap - o, "[%zu]", u->index);
        } else if (bare_key(u->key)) {
            w = snprintf(buf + o, cap - o, "%s%s", o ? "." : "", u->key);
        } else {
            char q[256];
            quote(q, sizeof q, u->key, strlen(u->key));
            w = snprintf(buf + o, cap - o, "[%s]", q);
        }
        if (w < 0) break;
        o += (size_t)w;
    }
    return buf;
}

const gm_json *gm_json_get(const gm_json *obj, const char *key)
{
    if (!obj || obj->type != GM_JSON_OBJECT || !key) return NULL;
    for (size_t i = 0; i < obj->n; i++)
        if (strcmp(obj->kids[i]->key, key) == 0) return obj->kids[i];
    return NULL;
}

size_t gm_json_len(const gm_json *v)
{
    return v && (v->type == GM_JSON_ARRAY || v->type == GM_JSON_OBJECT) ? v->n : 0;
}

const gm_json *gm_json_at(const gm_json *v, size_t i) { return i < gm_json_len(v) ? v->kids[i] : NULL; }

const char *gm_json_key_at(const gm_json *obj, size_t i)
{
    return obj && obj->type == GM_JSON_OBJECT && i < obj->n ? obj->kids[i]->key : NULL;
}

double gm_json_number(const gm_json *v) { return v && v->type == GM_JSON_NUMBER ? v->num : 0.0; }

const char *gm_json_string(const gm_json *v) { return v && v->type == GM_JSON_STRING ? v->text : NULL; }

int gm_json_bool(const gm_json *v) { return v && v->type == GM_JSON_BOOL ? v->b : 0; }

/* ---- typed getters ------------------------------------------------------------- */

static const char *name_of(const gm_json *v)
{
    while (v->parent) v = v->parent;
    return v->name;
}

/* "<name>: <path>: <what>", leaving out an empty path (the root). */
static gm_status bad(const gm_json *v, gm_error *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static gm_status bad(const gm_json *v, gm_error *err, const char *fmt, ...)
{
    char path[PATH_CAP], what[400];
    gm_json_path(v, path, sizeof path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return gm_error_set(err, GM_EINVAL, "%s: %s%s%s", name_of(v), path, path[0] ? ": " : "", what);
}

/* What was found, for "got ...": a quoted string, the number as written, or the type. */
static const char *found(const gm_json *v, char *buf, size_t cap)
{
    switch (v->type) {
    case GM_JSON_STRING: quote(buf, cap, v->text, strlen(v->text)); break;
    case GM_JSON_NUMBER:
        snprintf(buf, cap, "%.*s%s", SHOW_CHARS, v->text, strlen(v->text) > SHOW_CHARS ? "..." : "");
        break;
    case GM_JSON_BOOL: snprintf(buf, cap, "%s", v->b ? "true" : "false"); break;
    case GM_JSON_NULL: snprintf(buf, cap, "null"); break;
    case GM_JSON_ARRAY: snprintf(buf, cap, "an array"); break;
    case GM_JSON_OBJECT: snprintf(buf, cap, "an object"); break;
    }
    return buf;
}

/*
 * Finds obj[key]: *v is NULL when absent and not required (keep the default).
 * A NULL obj reads as an absent object, so optional settings of an optional
 * section need no extra check.
 */
static gm_status lookup(const gm_json *obj, const char *key, int required, const gm_json **v, gm_error *err)
{
    *v = NULL;
    if (!obj) {
        if (required) return gm_error_set(err, GM_EINVAL, "missing \"%s\" (its object is absent)", key);
        return GM_OK;
    }
    if (obj->type != GM_JSON_OBJECT) {
        char f[160];
        return bad(obj, err, "expected an object with \"%s\", got %s", key, found(obj, f, sizeof f));
    }
    *v = gm_json_get(obj, key);
    if (!*v && required) return bad(obj, err, "missing \"%s\"", key);
    return GM_OK;
}

static void int_range(char *buf, size_t cap, long long lo, long long hi)
{
    if (lo == LLONG_MIN && hi == LLONG_MAX) snprintf(buf, cap, "an integer");
    else snprintf(buf, cap, "an integer in [%lld, %lld]", lo, hi);
}

/* v as an exact long long, or 0 when it is not an integer that fits (see token_int). */
static int as_int(const gm_json *v, long long *out)
{
    if (v->type != GM_JSON_NUMBER || !v->is_int) return 0;
    *out = v->inum;
    return 1;
}

static gm_status check_int(const gm_json *v, long long lo, long long hi, long long *out, gm_error *err)
{
    long long x;
    if (!as_int(v, &x) || x < lo || x > hi) {
        char want[96], f[160];
        int_range(want, sizeof want, lo, hi);
        return bad(v, err, "expected %s, got %s", want, found(v, f, sizeof f));
    }
    *out = x;
    return GM_OK;
}

gm_status gm_json_get_int(const gm_json *obj, const char *key, int required, long long lo, long long hi,
                          long long *out, gm_error *err)
{
    const gm_json *v;
    gm_status st = lookup(obj, key, required, &v, err);
    if (st != GM_OK || !v) return st;
    return check_int(v, lo, hi, out, err);
}

gm_status gm_json_get_double(const gm_json *obj, const char *key, int required, double lo, double hi,
                             double *out, gm_error *err)
{
    const gm_json *v;
    gm_status st = lookup(obj, key, required, &v, err);
    if (st != GM_OK || !v) return st;
    if (v->type != GM_JSON_NUMBER || !(v->num >= lo && v->num <= hi)) {
        char want[96], f[160];
        if (isinf(lo) && lo < 0 && isinf(hi) && hi > 0) snprintf(want, sizeof want, "a number");
        else snprintf(want, sizeof want, "a number in [%g, %g]", lo, hi);
        return bad(v, err, "expected %s, got %s", want, found(v, f, sizeof f));
    }
    *out = v->num;
    return GM_OK;
}

gm_status gm_json_get_bool(const gm_json *obj, const char *key, int required, int *out, gm_error *err)
{
    const gm_json *v;
    gm_status st = lookup(obj, key, required, &v, err);
    if (st != GM_OK || !v) return st;
    if (v->type != GM_JSON_BOOL) {
        char f[160];
        return bad(v, err, "expected true or false, got %s", found(v, f, sizeof f));
    }
    *out = v->b;
    return GM_OK;
}

gm_status gm_json_get_string(const gm_json *obj, const char *key, int required, char *buf, size_t cap,
                             gm_error *err)
{
    const gm_json *v;
    gm_status st = lookup(obj, key, required, &v, err);
    if (st != GM_OK || !v) return st;
    char f[160];
    if (v->type != GM_JSON_STRING) return bad(v, err, "expected a string, got %s", found(v, f, sizeof f));
    size_t n = strlen(v->text);
    if (n >= cap)
        return bad(v, err, "expected a string of at most %zu bytes, got %s (%zu bytes)", cap ? cap - 1 : 0,
                   found(v, f, sizeof f), n);
    memcpy(buf, v->text, n + 1);
    return GM_OK;
}

gm_status gm_json_get_ints(const gm_json *obj, const char *key, int required, long long lo, long long hi,
                           long long *out, int cap, int *n, gm_error *err)
{
    const gm_json *v;
    gm_status st = lookup(obj, key, required, &v, err);
    if (st != GM_OK || !v) return st;
    char f[160];
    if (cap < 0) cap = 0;
    if (v->type != GM_JSON_ARRAY) {
        if (lo == LLONG_MIN && hi == LLONG_MAX)
            return bad(v, err, "expected an array of at most %d integers, got %s", cap, found(v, f, sizeof f));
        return bad(v, err, "expected an array of at most %d integers in [%lld, %lld], got %s", cap, lo, hi,
                   found(v, f, sizeof f));
    }
    if (v->n > (size_t)cap) return bad(v, err, "expected at most %d elements, got %zu", cap, v->n);
    long long x;
    for (size_t i = 0; i < v->n; i++) /* check all before writing any: out is untouched on error */
        if ((st = check_int(v->kids[i], lo, hi, &x, err)) != GM_OK) return st;
    for (size_t i = 0; i < v->n; i++) check_int(v->kids[i], lo, hi, &out[i], err);
    *n = (int)v->n;
    return GM_OK;
}

gm_status gm_json_check_keys(const gm_json *obj, const char *const *allowed, gm_error *err)
{
    if (!obj) return GM_OK;
    if (obj->type != GM_JSON_OBJECT) {
        char f[160];
        return bad(obj, err, "expected an object, got %s", found(obj, f, sizeof f));
    }
    for (size_t i = 0; i < obj->n; i++) {
        const char *k = obj->kids[i]->key;
        size_t a = 0;
        while (allowed && allowed[a] && strcmp(allowed[a], k) != 0) a++;
        if (allowed && allowed[a]) continue;
        char known[200], q[256];
        size_t o = 0;
        known[0] = '\0';
        for (a = 0; allowed && allowed[a]; a++) {
            int w = snprintf(known + o, sizeof known - o, "%s%s", a ? ", " : "", allowed[a]);
            if (w < 0 || o + (size_t)w + 6 >= sizeof known) { /* keep room for ", ..." */
                known[o] = '\0';
                snprintf(known + o, sizeof known - o, ", ...");
                break;
            }
            o += (size_t)w;
        }
        quote(q, sizeof q, k, strlen(k));
        return bad(obj, err, "unknown key %s (known: %s)", q, known[0] ? known : "none");
    }
    return GM_OK;
}

#include "gm_json.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * cJSON does the parsing: the grammar, escapes and surrogate pairs, the tree and
 * the numbers' values. It is laxer than a config reader should be, so a lexical
 * pass over the same text (scan_text) rejects what cJSON 1.7.15 lets through:
 *   - numbers like 01, -007 or 1. (cJSON reads them) and 1e400 (an infinity);
 *   - raw control characters and invalid UTF-8 inside strings;
 *   - "\u0000" and "\u00zz" (cJSON silently cuts the string there: values are C strings);
 *   - bytes below 0x20 other than tab, LF and CR between tokens (cJSON skips them as space);
 *   - nesting deeper than MAX_DEPTH (cJSON's own limit is 1000).
 * The pass checks tokens only; the structure is cJSON's (the pass follows the
 * brackets just far enough to put cJSON's error positions right). It also
 * records where each string and number token starts, in file order, which cJSON
 * cannot tell: that gives a duplicated key (cJSON keeps both) its line:col, and
 * lets the integer getters decide on the number as written, not on the double.
 * Duplicated keys are looked for in cJSON's tree, so a document that also has a
 * syntax error reports the syntax error, wherever the duplicate is.
 * A leading UTF-8 byte order mark is skipped (RFC 8259 section 8.1 allows it).
 * cJSON converts numbers with the locale's decimal point, so '.' works in any
 * locale; it also records each failure in a global of its own, which we never read.
 */
enum { MAX_DEPTH = 64, SHOW_CHARS = 40, PATH_CAP = 256 };

/*
 * A node wraps one cJSON item, which owns the key and the string value. The
 * children of a node are contiguous in the document's node array.
 */
struct gm_json {
    gm_json_type type;
    const cJSON *item;
    gm_json *parent;
    size_t index; /* position in the parent */
    gm_json *kids;
    size_t n;
    const char *text; /* numbers: the token as written (in json_doc.texts) */
    long long inum;
    int is_int; /* the token is an integer that fits a long long: inum is exact */
};

/* What gm_json_parse hands out: nodes[0] is the root, and gm_json_free frees it all. */
typedef struct {
    cJSON *doc;
    char *name;  /* the label for messages */
    char *texts; /* the number tokens as written, each NUL-terminated */
    gm_json nodes[];
} json_doc;

static json_doc *doc_of(const gm_json *v)
{
    while (v->parent) v = v->parent;
    return (json_doc *)(void *)((char *)(gm_json *)v - offsetof(json_doc, nodes));
}

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

/* How the byte at s[at] reads in a message: 'x', a word like 'NaN', or "end of input". */
static void describe_at(const char *s, size_t n, size_t at, char *buf, size_t cap)
{
    if (at >= n) {
        snprintf(buf, cap, "end of input");
        return;
    }
    unsigned char c = (unsigned char)s[at];
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
        size_t k = 0;
        while (at + k < n && k < 20) {
            unsigned char d = (unsigned char)s[at + k];
            if (!((d >= 'a' && d <= 'z') || (d >= 'A' && d <= 'Z') || (d >= '0' && d <= '9') || d == '_')) break;
            k++;
        }
        snprintf(buf, cap, "'%.*s'", (int)k, s + at);
    } else if (c == '\'') {
        snprintf(buf, cap, "a single quote");
    } else if (c >= 0x20 && c < 0x7F) {
        snprintf(buf, cap, "'%c'", c);
    } else {
        snprintf(buf, cap, "byte 0x%02X", c);
    }
}

/* The text being parsed, for messages: s = full + bom is what cJSON and the scan see. */
typedef struct {
    const char *full;
    size_t full_len, bom;
    const char *s;
    size_t n;
    const char *name;
    gm_error *err;
} source;

/* "<name>:<line>:<col>: <what>" for byte offset at of s. Columns count characters, as an editor does. */
static gm_status syntax_error(const source *src, size_t at, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static gm_status syntax_error(const source *src, size_t at, const char *fmt, ...)
{
    long line = 1, col = 1;
    for (size_t i = 0; i < at && i < src->n; i++) { /* from s: the BOM takes no column */
        unsigned char c = (unsigned char)src->s[i];
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
    return gm_error_set(src->err, GM_EINVAL, "%s:%ld:%ld: %s", src->name, line, col, what);
}

static gm_status oom(const source *src)
{
    return gm_error_set(src->err, GM_ENOMEM, "%s: out of memory while parsing", src->name);
}

/* ---- the lexical pass ------------------------------------------------------------ */

enum { TOK_STRING, TOK_NUMBER };
typedef struct {
    size_t at, len; /* a string token includes its quotes */
    int kind;
} token;

/* Kinds of fault, by how they relate to where cJSON stopped (see explain_failure). */
enum { FAULT_NONE, FAULT_AT, FAULT_IN_NUMBER, FAULT_IN_OPEN_STRING };

typedef struct {
    const char *s;
    size_t n;
    token *tok; /* string and number tokens in file order */
    size_t ntok, cap;
    size_t key_probe, value_probe; /* offsets to ask about (explain_failure), or SIZE_MAX */
    int at_key;   /* whether key_probe is where an object's next key must start */
    int at_value; /* whether value_probe is where a value may start */
    int fault;     /* the first fault found, FAULT_* */
    size_t fault_at, fault_tok; /* its offset, and where the token holding it starts */
    char what[200];
} scan;

static void set_fault(scan *sc, int kind, size_t at, size_t tok_at, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;
static void set_fault(scan *sc, int kind, size_t at, size_t tok_at, const char *fmt, ...)
{
    sc->fault = kind;
    sc->fault_at = at;
    sc->fault_tok = tok_at;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sc->what, sizeof sc->what, fmt, ap);
    va_end(ap);
}

static int add_token(scan *sc, size_t at, size_t len, int kind)
{
    if (sc->ntok == sc->cap) {
        size_t cap = sc->cap ? 2 * sc->cap : 64;
        token *t = realloc(sc->tok, cap * sizeof *t);
        if (!t) return 0;
        sc->tok = t;
        sc->cap = cap;
    }
    sc->tok[sc->ntok++] = (token){at, len, kind};
    return 1;
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static int hex4(const char *s, size_t lim, size_t at, unsigned *out)
{
    unsigned v = 0;
    if (at + 4 > lim) return 0;
    for (int i = 0; i < 4; i++) {
        char c = s[at + (size_t)i];
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

/*
 * The string token at s[start] (a '"'); *next gets the offset past it. Its end is
 * found the way cJSON finds it, then its content is checked for what cJSON
 * accepts but should not. Returns 0 when out of memory.
 */
static int scan_string(scan *sc, size_t start, size_t *next)
{
    const char *s = sc->s;
    size_t n = sc->n, end = start + 1;
    while (end < n && s[end] != '"') end += s[end] == '\\' ? 2 : 1;
    int open = end >= n;
    if (!open && !add_token(sc, start, end + 1 - start, TOK_STRING)) return 0;
    int kind = open ? FAULT_IN_OPEN_STRING : FAULT_AT;
    size_t lim = open ? n : end;
    for (size_t i = start + 1; i < lim;) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20) {
            if (c == '\n') set_fault(sc, kind, i, start, "newline in a string (unterminated string?)");
            else set_fault(sc, kind, i, start, "control character U+%04X in a string (escape it)", c);
            return 1;
        }
        if (c >= 0x80) {
            size_t k = utf8_len((const unsigned char *)s + i, lim - i);
            if (!k) {
                set_fault(sc, kind, i, start, "invalid UTF-8 in a string");
                return 1;
            }
            i += k;
        } else if (c == '\\' && i + 1 < lim && s[i + 1] == 'u') {
            unsigned u;
            if (!hex4(s, lim, i + 2, &u)) {
                set_fault(sc, kind, i, start, "bad \\u escape: expected 4 hex digits");
                return 1;
            }
            if (u == 0) {
                set_fault(sc, kind, i, start, "\\u0000 is not supported in strings");
                return 1;
            }
            i += 6;
        } else if (c == '\\' && i + 1 < lim && !strchr("\"\\/bfnrt", s[i + 1])) {
            /* cJSON checks this too, but not inside a string that never ends */
            unsigned char e = (unsigned char)s[i + 1];
            if (e > 0x20 && e < 0x7F) set_fault(sc, kind, i, start, "bad escape '\\%c'", e);
            else set_fault(sc, kind, i, start, "bad escape: '\\' followed by byte 0x%02X", e);
            return 1;
        } else {
            i += c == '\\' ? 2 : 1; /* surrogate pairs are cJSON's to check */
        }
    }
    if (open) set_fault(sc, FAULT_IN_OPEN_STRING, start, start, "unterminated string");
    *next = end + 1;
    return 1;
}

static int is_digit(const scan *sc, size_t at) { return at < sc->n && sc->s[at] >= '0' && sc->s[at] <= '9'; }

/* The number token at s[start] ('-' or a digit), by RFC 8259's grammar. Returns 0 when out of memory. */
static int scan_number(scan *sc, size_t start, size_t *next)
{
    size_t i = start;
    char what[32];
    if (sc->s[i] == '-') i++;
    if (!is_digit(sc, i)) {
        describe_at(sc->s, sc->n, i, what, sizeof what);
        set_fault(sc, FAULT_IN_NUMBER, i, start, "expected a digit after '-', got %s", what);
        return 1;
    }
    if (sc->s[i] == '0' && is_digit(sc, i + 1)) {
        set_fault(sc, FAULT_IN_NUMBER, i, start, "leading zero in a number");
        return 1;
    }
    while (is_digit(sc, i)) i++;
    if (i < sc->n && sc->s[i] == '.') {
        if (!is_digit(sc, ++i)) {
            describe_at(sc->s, sc->n, i, what, sizeof what);
            set_fault(sc, FAULT_IN_NUMBER, i, start, "expected a digit after '.', got %s", what);
            return 1;
        }
        while (is_digit(sc, i)) i++;
    }
    if (i < sc->n && (sc->s[i] == 'e' || sc->s[i] == 'E')) {
        i++;
        if (i < sc->n && (sc->s[i] == '+' || sc->s[i] == '-')) i++;
        if (!is_digit(sc, i)) {
            describe_at(sc->s, sc->n, i, what, sizeof what);
            set_fault(sc, FAULT_IN_NUMBER, i, start, "expected a digit in the exponent, got %s", what);
            return 1;
        }
        while (is_digit(sc, i)) i++;
    }
    *next = i;
    return add_token(sc, start, i - start, TOK_NUMBER);
}

/*
 * Scans s[0..end) up to the first fault (sc->fault), recording tokens. Bytes it
 * does not know (letters, ':', ',', stray characters) are left to cJSON.
 * Returns 0 when out of memory.
 */
static int scan_text(scan *sc, size_t end)
{
    int depth = 0;
    uint64_t objects = 0; /* bit k: the container at depth k + 1 is an object */
    char last = '\0';     /* the last byte outside strings and space, '"' after a string */
    size_t save = sc->n;
    sc->n = end; /* tokens must not run past the root value cJSON read */
    int ok = 1;
    for (size_t i = 0; ok && !sc->fault && i < end;) {
        unsigned char c = (unsigned char)sc->s[i];
        int in_object = depth > 0 && (objects >> (depth - 1) & 1);
        if (i == sc->key_probe) sc->at_key = in_object && (last == ',' || (last == '{' && c != '}'));
        if (i == sc->value_probe)
            sc->at_value = depth == 0 ? last == '\0' : in_object ? last == ':' : last == '[' || last == ',';
        if (c == '"') {
            ok = scan_string(sc, i, &i);
            last = '"';
            continue;
        }
        if (c == '-' || (c >= '0' && c <= '9')) {
            ok = scan_number(sc, i, &i);
            last = '0';
            continue;
        }
        if (c == '{' || c == '[') {
            if (++depth > MAX_DEPTH) set_fault(sc, FAULT_AT, i, i, "nesting deeper than %d", MAX_DEPTH);
            else if (c == '{') objects |= (uint64_t)1 << (depth - 1);
            else objects &= ~((uint64_t)1 << (depth - 1));
        } else if (c == '}' || c == ']') {
            depth -= depth > 0;
        } else if (c < 0x20 && !is_ws((char)c)) {
            set_fault(sc, FAULT_AT, i, i, "syntax error at byte 0x%02X", c);
        }
        if (!is_ws((char)c)) last = (char)c;
        i++;
    }
    sc->n = save;
    return ok;
}

/* ---- explaining cJSON's failures ----------------------------------------------- */

/*
 * Where cJSON stopped, given what it reported (q). It reports the last byte when
 * it ran out of input, so a stop there is told apart by parsing once more with a
 * byte that is never valid there ('#'): a fault at the last byte stays put,
 * running out moves on.
 */
static size_t past_end(const char *s, size_t n, size_t q)
{
    if (q + 1 != n) return q;
    char *more = malloc(n + 1);
    if (!more) return q;
    memcpy(more, s, n);
    more[n] = '#';
    const char *stop = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts(more, n + 1, &stop, 0);
    size_t q2 = doc || !stop ? n : (size_t)(stop - more);
    cJSON_Delete(doc);
    free(more);
    return q2 >= n ? n : q;
}

/*
 * The message for text cJSON rejected, q being where it said it stopped. The
 * first fault in the text wins, the scan's or cJSON's, once cJSON's stop is put
 * right: it reports running out of input at the last byte (past_end) and a key
 * that does not start with '"' one byte late. A fault of the scan inside a token
 * that cJSON stopped in also wins, since cJSON stops just after the quote of a
 * string that never ends, and at the start of a number it cannot read at all
 * ("-" alone) where a value may start (elsewhere a stop there is cJSON's fault).
 */
static gm_status explain_failure(const source *src, scan *sc, size_t q)
{
    q = past_end(src->s, src->n, q);
    sc->key_probe = q > 0 ? q - 1 : SIZE_MAX;
    sc->value_probe = q;
    if (!scan_text(sc, src->n)) return oom(src);
    int key_late = sc->at_key && src->s[q - 1] != '"' && !is_ws(src->s[q - 1]);
    if (key_late) q--;
    int scan_first = sc->fault_at <= q;
    if (sc->fault == FAULT_IN_OPEN_STRING) scan_first |= sc->fault_tok < q;
    if (sc->fault == FAULT_IN_NUMBER)
        scan_first |= sc->fault_tok < q || (sc->fault_tok == q && !key_late && sc->at_value);
    if (sc->fault && scan_first) return syntax_error(src, sc->fault_at, "%s", sc->what);

    const char *s = src->s;
    char what[32];
    if (q >= src->n) return syntax_error(src, q, "syntax error at end of input");
    if (s[q] == ']' || s[q] == '}') {
        size_t b = q;
        while (b > 0 && is_ws(s[b - 1])) b--;
        if (b > 0 && s[b - 1] == ',') return syntax_error(src, q, "trailing comma before '%c'", s[q]);
    }
    for (size_t t = 0; t < sc->ntok; t++) { /* in a string the scan leaves cJSON only surrogates to reject */
        const token *k = &sc->tok[t];
        if (k->kind != TOK_STRING || q <= k->at || q >= k->at + k->len) continue;
        unsigned u;
        if (s[q] == '\\' && s[q + 1] == 'u' && hex4(s, k->at + k->len, q + 2, &u) && u >= 0xD800 && u <= 0xDFFF)
            return syntax_error(src, q, "lone surrogate \\u%04X", u);
        return syntax_error(src, q, "syntax error in a string");
    }
    describe_at(s, src->n, q, what, sizeof what);
    return syntax_error(src, q, "syntax error at %s", what);
}

/* ---- the tree ------------------------------------------------------------------ */

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

static size_t count_items(const cJSON *it)
{
    size_t n = 1;
    for (const cJSON *c = it->child; c; c = c->next) n += count_items(c); /* depth is checked: at most 64 */
    return n;
}

/* Fills the node array from cJSON's tree, walking it in file order to pair nodes with tokens. */
typedef struct {
    const source *src;
    const scan *sc;
    json_doc *d;
    size_t next_node, next_tok;
    char *texts_end; /* where the next number text goes */
} builder;

static gm_status take_token(builder *b, int kind, const token **t)
{
    if (b->next_tok >= b->sc->ntok || b->sc->tok[b->next_tok].kind != kind) /* a bug, not bad input */
        return gm_error_set(b->src->err, GM_EINVAL, "%s: internal error: cJSON's tree does not match the tokens",
                            b->src->name);
    *t = &b->sc->tok[b->next_tok++];
    return GM_OK;
}

static gm_status build(builder *b, gm_json *v)
{
    const cJSON *it = v->item;
    const token *t = NULL;
    gm_status st;
    switch (it->type & 0xFF) {
    case cJSON_NULL: v->type = GM_JSON_NULL; return GM_OK;
    case cJSON_False:
    case cJSON_True: v->type = GM_JSON_BOOL; return GM_OK;
    case cJSON_String: v->type = GM_JSON_STRING; return take_token(b, TOK_STRING, &t);
    case cJSON_Number:
        v->type = GM_JSON_NUMBER;
        if ((st = take_token(b, TOK_NUMBER, &t)) != GM_OK) return st;
        memcpy(b->texts_end, b->src->s + t->at, t->len);
        b->texts_end[t->len] = '\0';
        v->text = b->texts_end;
        b->texts_end += t->len + 1;
        if (isinf(it->valuedouble)) return syntax_error(b->src, t->at, "number out of range: %.40s", v->text);
        v->is_int = token_int(v->text, &v->inum);
        return GM_OK;
    case cJSON_Array:
    case cJSON_Object: break;
    default:
        return gm_error_set(b->src->err, GM_EINVAL, "%s: internal error: cJSON item of type %d", b->src->name,
                            it->type);
    }
    int obj = (it->type & 0xFF) == cJSON_Object;
    v->type = obj ? GM_JSON_OBJECT : GM_JSON_ARRAY;
    for (const cJSON *c = it->child; c; c = c->next) v->n++;
    v->kids = &b->d->nodes[b->next_node];
    b->next_node += v->n;
    size_t i = 0;
    for (const cJSON *c = it->child; c; c = c->next, i++) {
        gm_json *u = &v->kids[i];
        *u = (gm_json){.item = c, .parent = v, .index = i};
        if (obj) {
            if ((st = take_token(b, TOK_STRING, &t)) != GM_OK) return st;
            for (size_t j = 0; j < i; j++) { /* quadratic, but config objects are small */
                if (strcmp(v->kids[j].item->string, c->string) != 0) continue;
                char q[256], path[PATH_CAP];
                quote(q, sizeof q, c->string, strlen(c->string));
                gm_json_path(v, path, sizeof path);
                return syntax_error(b->src, t->at, "duplicate key %s%s%s", q, path[0] ? " in " : "", path);
            }
        }
        if ((st = build(b, u)) != GM_OK) return st;
    }
    return GM_OK;
}

void gm_json_free(gm_json *root)
{
    if (!root) return;
    json_doc *d = doc_of(root);
    cJSON_Delete(d->doc);
    free(d->name);
    free(d->texts);
    free(d);
}

/* Checks a tree cJSON accepted, then wraps it. Takes doc. */
static gm_status wrap(const source *src, scan *sc, cJSON *doc, size_t end, gm_json **root)
{
    if (!scan_text(sc, end)) {
        cJSON_Delete(doc);
        return oom(src);
    }
    gm_status st = GM_OK;
    size_t after = end;
    while (after < src->n && is_ws(src->s[after])) after++;
    char what[32];
    if (sc->fault) {
        st = syntax_error(src, sc->fault_at, "%s", sc->what);
    } else if (after < src->n) {
        describe_at(src->s, src->n, after, what, sizeof what);
        st = syntax_error(src, after, "expected the end after the root value, got %s", what);
    }
    if (st != GM_OK) {
        cJSON_Delete(doc);
        return st;
    }
    size_t nodes = count_items(doc), texts = 1;
    for (size_t t = 0; t < sc->ntok; t++) texts += sc->tok[t].kind == TOK_NUMBER ? sc->tok[t].len + 1 : 0;
    json_doc *d = malloc(sizeof *d + nodes * sizeof d->nodes[0]);
    char *name = malloc(strlen(src->name) + 1), *tx = malloc(texts);
    if (!d || !name || !tx) {
        free(d);
        free(name);
        free(tx);
        cJSON_Delete(doc);
        return oom(src);
    }
    strcpy(name, src->name);
    d->doc = doc;
    d->name = name;
    d->texts = tx;
    d->nodes[0] = (gm_json){.item = doc};
    builder b = {src, sc, d, 1, 0, tx};
    st = build(&b, &d->nodes[0]);
    if (st != GM_OK) {
        gm_json_free(&d->nodes[0]);
        return st;
    }
    *root = &d->nodes[0];
    return GM_OK;
}

gm_status gm_json_parse(gm_json **root, const char *text, size_t len, const char *name, gm_error *err)
{
    *root = NULL;
    source src = {text ? text : "", text ? len : 0, 0, NULL, 0, name ? name : "(json)", err};
    if (src.full_len >= 3 && memcmp(src.full, "\xEF\xBB\xBF", 3) == 0) src.bom = 3;
    src.s = src.full + src.bom;
    src.n = src.full_len - src.bom;
    size_t first = 0;
    while (first < src.n && is_ws(src.s[first])) first++;
    if (first == src.n) return syntax_error(&src, src.n, "empty input");

    scan sc = {src.s, src.n, NULL, 0, 0, SIZE_MAX, SIZE_MAX, 0, 0, FAULT_NONE, 0, 0, ""};
    const char *stop = NULL;
    /* Not NUL-terminated: the root value's end comes back in stop, and the rest is checked here. */
    cJSON *doc = cJSON_ParseWithLengthOpts(src.s, src.n, &stop, 0);
    size_t at = stop ? (size_t)(stop - src.s) : src.n;
    gm_status st = doc ? wrap(&src, &sc, doc, at, root) : explain_failure(&src, &sc, at);
    free(sc.tok);
    if (st == GM_OK) gm_error_clear(err);
    return st;
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
        const char *key = u->item->string;
        int w;
        if (u->parent->type == GM_JSON_ARRAY) {
            w = snprintf(buf + o, cap - o, "[%zu]", u->index);
        } else if (bare_key(key)) {
            w = snprintf(buf + o, cap - o, "%s%s", o ? "." : "", key);
        } else {
            char q[256];
            quote(q, sizeof q, key, strlen(key));
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
        if (strcmp(obj->kids[i].item->string, key) == 0) return &obj->kids[i];
    return NULL;
}

size_t gm_json_len(const gm_json *v)
{
    return v && (v->type == GM_JSON_ARRAY || v->type == GM_JSON_OBJECT) ? v->n : 0;
}

const gm_json *gm_json_at(const gm_json *v, size_t i) { return i < gm_json_len(v) ? &v->kids[i] : NULL; }

const char *gm_json_key_at(const gm_json *obj, size_t i)
{
    return obj && obj->type == GM_JSON_OBJECT && i < obj->n ? obj->kids[i].item->string : NULL;
}

double gm_json_number(const gm_json *v) { return v && v->type == GM_JSON_NUMBER ? v->item->valuedouble : 0.0; }

const char *gm_json_string(const gm_json *v) { return v && v->type == GM_JSON_STRING ? v->item->valuestring : NULL; }

int gm_json_bool(const gm_json *v) { return v && v->type == GM_JSON_BOOL ? cJSON_IsTrue(v->item) != 0 : 0; }

/* ---- typed getters ------------------------------------------------------------- */

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
    return gm_error_set(err, GM_EINVAL, "%s: %s%s%s", doc_of(v)->name, path, path[0] ? ": " : "", what);
}

/* What was found, for "got ...": a quoted string, the number as written, or the type. */
static const char *found(const gm_json *v, char *buf, size_t cap)
{
    switch (v->type) {
    case GM_JSON_STRING: quote(buf, cap, v->item->valuestring, strlen(v->item->valuestring)); break;
    case GM_JSON_NUMBER:
        snprintf(buf, cap, "%.*s%s", SHOW_CHARS, v->text, strlen(v->text) > SHOW_CHARS ? "..." : "");
        break;
    case GM_JSON_BOOL: snprintf(buf, cap, "%s", gm_json_bool(v) ? "true" : "false"); break;
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

static gm_status check_int(const gm_json *v, long long lo, long long hi, long long *out, gm_error *err)
{
    if (v->type != GM_JSON_NUMBER || !v->is_int || v->inum < lo || v->inum > hi) {
        char want[96], f[160];
        int_range(want, sizeof want, lo, hi);
        return bad(v, err, "expected %s, got %s", want, found(v, f, sizeof f));
    }
    *out = v->inum;
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
    double x = gm_json_number(v);
    if (v->type != GM_JSON_NUMBER || !(x >= lo && x <= hi)) {
        char want[96], f[160];
        if (isinf(lo) && lo < 0 && isinf(hi) && hi > 0) snprintf(want, sizeof want, "a number");
        else snprintf(want, sizeof want, "a number in [%g, %g]", lo, hi);
        return bad(v, err, "expected %s, got %s", want, found(v, f, sizeof f));
    }
    *out = x;
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
    *out = gm_json_bool(v);
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
    const char *s = v->item->valuestring;
    size_t n = strlen(s);
    if (n >= cap)
        return bad(v, err, "expected a string of at most %zu bytes, got %s (%zu bytes)", cap ? cap - 1 : 0,
                   found(v, f, sizeof f), n);
    memcpy(buf, s, n + 1);
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
        if ((st = check_int(&v->kids[i], lo, hi, &x, err)) != GM_OK) return st;
    for (size_t i = 0; i < v->n; i++) check_int(&v->kids[i], lo, hi, &out[i], err);
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
        const char *k = obj->kids[i].item->string;
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

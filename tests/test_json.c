/*
 * gm_json (cJSON underneath): a realistic config reads back through the
 * accessors; escapes and surrogate pairs decode to the right UTF-8; numbers
 * parse exactly, integers on the digits as written; malformed
 * input fails with the line:col of the fault; the typed getters and check_keys
 * name the path, what was expected and what was found; what cJSON lets through
 * (duplicate keys, "01", raw control characters, "\u0000", deep nesting) is
 * rejected; random mutations of a valid document never crash and always explain
 * a failure.
 */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */

#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gm_json.h"
#include "test_util.h"

static gm_json *parse_ok(const char *text, const char *name)
{
    gm_json *root = NULL;
    gm_error err;
    gm_status st = gm_json_parse(&root, text, strlen(text), name, &err);
    if (st != GM_OK) fail_msg("parse failed: %s", err.msg);
    assert_non_null(root);
    return root;
}

/* text must fail to parse as "t.json" with exactly this message. */
static void check_bad(const char *text, size_t len, const char *want, const char *file, int line)
{
    gm_json *root = (gm_json *)&root; /* a parse failure must reset it to NULL */
    gm_error err;
    gm_status st = gm_json_parse(&root, text, len, "t.json", &err);
    if (st != GM_EINVAL || root != NULL || strcmp(err.msg, want) != 0) {
        print_error("input %.*s\n  status %d, message \"%s\"\n  want   \"%s\"\n", (int)len, text, (int)st,
                    st == GM_OK ? "" : err.msg, want);
        if (st == GM_OK) gm_json_free(root);
        _fail(file, line);
    }
}
#define assert_bad(text, want) check_bad((text), strlen(text), (want), __FILE__, __LINE__)

static const char CONFIG[] =
    "{\n"
    "  \"name\": \"zoo-b1\",\n"
    "  \"seed\": 42,\n"
    "  \"lr\": 0.001,\n"
    "  \"verbose\": true,\n"
    "  \"out\": null,\n"
    "  \"models\": [\n"
    "    {\"task\": \"fashion\", \"arch\": \"vgg13\", \"epochs\": 30, \"widths\": [8, 16, 32, 64]},\n"
    "    {\"task\": \"mnist\", \"arch\": \"resnet18\", \"epochs\": 5, \"widths\": [4, 8]},\n"
    "    {\"task\": \"kmnist\", \"arch\": \"resnet34\", \"epochs\": 2.5}\n"
    "  ],\n"
    "  \"train\": {\"batch\": 128, \"optim\": {\"kind\": \"adam\", \"betas\": [0.9, 0.999]}}\n"
    "}\n";

static void test_config_round_trip(void **state)
{
    (void)state;
    gm_json *root = parse_ok(CONFIG, "zoo/b1.json");
    gm_error err;
    assert_int_equal(gm_json_type_of(root), GM_JSON_OBJECT);
    assert_int_equal(gm_json_len(root), 7);
    const char *keys[] = {"name", "seed", "lr", "verbose", "out", "models", "train"};
    for (size_t i = 0; i < 7; i++) assert_string_equal(gm_json_key_at(root, i), keys[i]); /* file order */
    assert_null(gm_json_key_at(root, 7));
    assert_string_equal(gm_json_string(gm_json_get(root, "name")), "zoo-b1");
    assert_true(gm_json_number(gm_json_get(root, "lr")) == 0.001);
    assert_int_equal(gm_json_bool(gm_json_get(root, "verbose")), 1);
    assert_int_equal(gm_json_type_of(gm_json_get(root, "out")), GM_JSON_NULL);
    assert_null(gm_json_get(root, "absent"));

    const gm_json *models = gm_json_get(root, "models");
    assert_int_equal(gm_json_type_of(models), GM_JSON_ARRAY);
    assert_int_equal(gm_json_len(models), 3);
    assert_null(gm_json_at(models, 3));
    assert_null(gm_json_key_at(models, 0)); /* an array has no keys */

    long long epochs[2], widths[8];
    int nw;
    const char *archs[] = {"vgg13", "resnet18"};
    const long long want_epochs[] = {30, 5}, want_w0[] = {8, 16, 32, 64};
    for (size_t i = 0; i < 2; i++) {
        const gm_json *m = gm_json_at(models, i);
        char arch[16];
        assert_int_equal(gm_json_get_string(m, "arch", 1, arch, sizeof arch, &err), GM_OK);
        assert_string_equal(arch, archs[i]);
        assert_int_equal(gm_json_get_int(m, "epochs", 1, 1, 10000, &epochs[i], &err), GM_OK);
        assert_int_equal(epochs[i], want_epochs[i]);
    }
    assert_int_equal(gm_json_get_ints(gm_json_at(models, 0), "widths", 1, 1, 4096, widths, 8, &nw, &err), GM_OK);
    assert_int_equal(nw, 4);
    assert_memory_equal(widths, want_w0, sizeof want_w0);

    /* the third model's epochs is 2.5: the message names the file and the path */
    long long e = -1;
    assert_int_equal(gm_json_get_int(gm_json_at(models, 2), "epochs", 1, 1, 10000, &e, &err), GM_EINVAL);
    assert_string_equal(err.msg, "zoo/b1.json: models[2].epochs: expected an integer in [1, 10000], got 2.5");
    assert_int_equal(e, -1);
    /* an optional key that is absent keeps the caller's default; a required one is named */
    long long batch = 64;
    assert_int_equal(gm_json_get_int(gm_json_at(models, 2), "batch", 0, 1, 4096, &batch, &err), GM_OK);
    assert_int_equal(batch, 64);
    assert_int_equal(gm_json_get_int(gm_json_at(models, 2), "widths", 1, 1, 4096, &batch, &err), GM_EINVAL);
    assert_string_equal(err.msg, "zoo/b1.json: models[2]: missing \"widths\"");

    const gm_json *train = gm_json_get(root, "train");
    assert_int_equal(gm_json_get_int(train, "batch", 0, 1, 4096, &batch, &err), GM_OK);
    assert_int_equal(batch, 128);
    const gm_json *betas = gm_json_get(gm_json_get(train, "optim"), "betas");
    assert_true(gm_json_number(gm_json_at(betas, 0)) == 0.9);
    assert_true(gm_json_number(gm_json_at(betas, 1)) == 0.999);
    char path[64];
    assert_string_equal(gm_json_path(gm_json_at(betas, 1), path, sizeof path), "train.optim.betas[1]");
    assert_string_equal(gm_json_path(root, path, sizeof path), "");
    gm_json_free(root);
}

static void test_escapes_decode_to_utf8(void **state)
{
    (void)state;
    gm_json *root = parse_ok("[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\","
                             " \"\\u0041\\u007F\\u0080\\u00e9\\u07FF\\u0800\\u20AC\\uFFFF\","
                             " \"\\ud83d\\ude00\\uD834\\uDD1E\\udbff\\udfff\","
                             " \"raw \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80\","
                             " {\"k\\u0065y\": 1}]",
                             "esc.json");
    assert_string_equal(gm_json_string(gm_json_at(root, 0)), "\"\\/\b\f\n\r\t");
    assert_string_equal(gm_json_string(gm_json_at(root, 1)),
                        "A\x7F\xC2\x80\xC3\xA9\xDF\xBF\xE0\xA0\x80\xE2\x82\xAC\xEF\xBF\xBF");
    /* U+1F600, U+1D11E and U+10FFFF, the last code point */
    assert_string_equal(gm_json_string(gm_json_at(root, 2)), "\xF0\x9F\x98\x80\xF0\x9D\x84\x9E\xF4\x8F\xBF\xBF");
    assert_string_equal(gm_json_string(gm_json_at(root, 3)), "raw \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
    assert_non_null(gm_json_get(gm_json_at(root, 4), "key")); /* keys are decoded too */
    assert_null(gm_json_string(gm_json_at(root, 4)));          /* wrong type: NULL */
    gm_json_free(root);
}

static void test_numbers_are_exact(void **state)
{
    (void)state;
    gm_json *root = parse_ok("[0, -0, -0.5, 1e3, 1E-2, 0.1, 2.5E+2, 0e0, 1.7976931348623157e308, 4.9e-324, 1e-400,"
                             " 9007199254740993]",
                             "num.json");
    const double want[] = {0.0, -0.0, -0.5, 1000.0, 0.01, 0.1, 250.0, 0.0, 1.7976931348623157e308, 4.9e-324, 0.0,
                           9007199254740992.0 /* nearest double */};
    assert_int_equal(gm_json_len(root), 12);
    for (size_t i = 0; i < 12; i++) {
        double got = gm_json_number(gm_json_at(root, i));
        if (memcmp(&got, &want[i], sizeof got) != 0) fail_msg("element %zu: got %.17g, want %.17g", i, got, want[i]);
    }
    assert_true(signbit(gm_json_number(gm_json_at(root, 1)))); /* -0 keeps its sign */
    gm_json_free(root);

    /* integers come out exact even where a double would round */
    root = parse_ok("{\"big\": [123456789012345678, 9007199254740993, 9223372036854775807, -9223372036854775808,"
                    " 1e3, 2.0, -0, 1.5e1],"
                    " \"over\": 9223372036854775808, \"under\": -9223372036854775809, \"huge\": 1e19,"
                    " \"tiny\": 2.0000000000000000001, \"exp\": [9.223372036854775807e18, -92233720368547758.08e2,"
                    " 100e-2, 0.00e999999999999999999, 12300000e-5]}",
                    "int.json");
    long long v[8];
    int n = 0;
    gm_error err;
    assert_int_equal(gm_json_get_ints(root, "big", 1, LLONG_MIN, LLONG_MAX, v, 8, &n, &err), GM_OK);
    const long long want_i[] = {123456789012345678LL, 9007199254740993LL, LLONG_MAX, LLONG_MIN, 1000, 2, 0, 15};
    assert_int_equal(n, 8);
    assert_memory_equal(v, want_i, sizeof want_i);
    long long x = 7;
    assert_int_equal(gm_json_get_int(root, "over", 1, LLONG_MIN, LLONG_MAX, &x, &err), GM_EINVAL);
    assert_string_equal(err.msg, "int.json: over: expected an integer, got 9223372036854775808");
    assert_int_equal(gm_json_get_int(root, "under", 1, LLONG_MIN, LLONG_MAX, &x, &err), GM_EINVAL);
    assert_string_equal(err.msg, "int.json: under: expected an integer, got -9223372036854775809");
    assert_int_equal(gm_json_get_int(root, "huge", 1, LLONG_MIN, LLONG_MAX, &x, &err), GM_EINVAL);
    assert_string_equal(err.msg, "int.json: huge: expected an integer, got 1e19");
    /* the double is exactly 2.0, but the number written is not an integer */
    assert_int_equal(gm_json_get_int(root, "tiny", 1, LLONG_MIN, LLONG_MAX, &x, &err), GM_EINVAL);
    assert_string_equal(err.msg, "int.json: tiny: expected an integer, got 2.0000000000000000001");
    assert_int_equal(x, 7);
    /* integers written with a fraction or an exponent are exact too */
    assert_int_equal(gm_json_get_ints(root, "exp", 1, LLONG_MIN, LLONG_MAX, v, 8, &n, &err), GM_OK);
    const long long want_e[] = {LLONG_MAX, LLONG_MIN, 1, 0};
    assert_int_equal(n, 5);
    assert_memory_equal(v, want_e, sizeof want_e);
    assert_int_equal(v[4], 123); /* 12300000e-5 */
    gm_json_free(root);
}

/* The decimal point is '.' whatever the process locale says. */
static void test_numbers_ignore_locale(void **state)
{
    (void)state;
    const char *comma_locales[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8", "de_DE", NULL};
    const char *used = NULL;
    for (int i = 0; comma_locales[i] && !used; i++)
        if (setlocale(LC_NUMERIC, comma_locales[i])) used = comma_locales[i];
    if (!used) {
        print_message("  no locale with a decimal comma is installed: only the C locale is checked\n");
    } else {
        assert_true(strtod("0.5", NULL) != 0.5); /* the locale really does change strtod */
    }
    gm_json *root = parse_ok("[0.5, 1.25e1]", "loc.json");
    double a = gm_json_number(gm_json_at(root, 0)), b = gm_json_number(gm_json_at(root, 1));
    gm_json_free(root);
    setlocale(LC_NUMERIC, "C");
    assert_true(a == 0.5);
    assert_true(b == 12.5);
}

static void test_malformed_inputs(void **state)
{
    (void)state;
    /* the dozen the brief names, each at the byte that is wrong */
    assert_bad("[1, 2,]", "t.json:1:7: trailing comma before ']'");
    assert_bad("{\"a\": 1,\n }", "t.json:2:2: trailing comma before '}'");
    assert_bad("{\"n\": 01}", "t.json:1:7: leading zero in a number");
    assert_bad("[-007]", "t.json:1:3: leading zero in a number");
    assert_bad("{\"s\": \"abc", "t.json:1:7: unterminated string");
    assert_bad("[\"abc\\", "t.json:1:2: unterminated string");
    assert_bad("[\"a\\qb\"]", "t.json:1:4: bad escape '\\q'");
    assert_bad("[\"\\ud800\"]", "t.json:1:3: lone surrogate \\uD800");
    assert_bad("[\"x\\udc00\"]", "t.json:1:4: lone surrogate \\uDC00");
    assert_bad("[\"\\ud800\\u0041\"]", "t.json:1:3: lone surrogate \\uD800");
    assert_bad("[\"\\ud800\\ud800\"]", "t.json:1:3: lone surrogate \\uD800");
    assert_bad("[\"\\ud800", "t.json:1:2: unterminated string"); /* the first fault: the string never ends */
    assert_bad("[\"a\tb\"]", "t.json:1:4: control character U+0009 in a string (escape it)");
    assert_bad("{\"a\": \"open\n}", "t.json:1:12: newline in a string (unterminated string?)");
    assert_bad("{\n  \"a\": 1,\n  \"b\": 2,\n  \"a\": 3\n}", "t.json:4:3: duplicate key \"a\"");
    assert_bad("{\"\\u0061\": 1, \"a\": 2}", "t.json:1:15: duplicate key \"a\""); /* equal once decoded */
    assert_bad("{\"a\": 1} x", "t.json:1:10: expected the end after the root value, got 'x'");
    assert_bad("[1]\n[2]", "t.json:2:1: expected the end after the root value, got '['");
    assert_bad("", "t.json:1:1: empty input");
    assert_bad("  \n\t", "t.json:2:2: empty input");
    assert_bad("{'a': 1}", "t.json:1:2: syntax error at a single quote");
    assert_bad("['a']", "t.json:1:2: syntax error at a single quote");
    assert_bad("[1, NaN]", "t.json:1:5: syntax error at 'NaN'");
    assert_bad("[Infinity]", "t.json:1:2: syntax error at 'Infinity'");
    assert_bad("[-Infinity]", "t.json:1:3: expected a digit after '-', got 'Infinity'");
    assert_bad("[+1]", "t.json:1:2: syntax error at '+'");

    /* the rest of the grammar */
    assert_bad("{\n  \"models\": [\n    {\"epochs\": 3 \"task\": 1}\n  ]\n}",
               "t.json:3:18: syntax error at '\"'");
    assert_bad("[1 2]", "t.json:1:4: syntax error at '2'");
    assert_bad("[1, 2", "t.json:1:6: syntax error at end of input");
    assert_bad("{\"a\" 1}", "t.json:1:6: syntax error at '1'");
    assert_bad("{\"a\":}", "t.json:1:6: syntax error at '}'");
    assert_bad("{1: 2}", "t.json:1:2: syntax error at '1'");
    assert_bad("[1.]", "t.json:1:4: expected a digit after '.', got ']'");
    assert_bad("[.5]", "t.json:1:2: syntax error at '.'");
    assert_bad("[1e]", "t.json:1:4: expected a digit in the exponent, got ']'");
    assert_bad("[1e+]", "t.json:1:5: expected a digit in the exponent, got ']'");
    assert_bad("-", "t.json:1:2: expected a digit after '-', got end of input");
    assert_bad("[1e400]", "t.json:1:2: number out of range: 1e400");
    assert_bad("[tru]", "t.json:1:2: syntax error at 'tru'");
    assert_bad("[true1]", "t.json:1:6: syntax error at '1'");
    assert_bad("[\"\\u12\"]", "t.json:1:3: bad \\u escape: expected 4 hex digits");
    assert_bad("[\"\\u0000\"]", "t.json:1:3: \\u0000 is not supported in strings");
    assert_bad("[\"\xFF\"]", "t.json:1:3: invalid UTF-8 in a string");
    assert_bad("[\"\xC0\x80\"]", "t.json:1:3: invalid UTF-8 in a string");     /* overlong NUL */
    assert_bad("[\"\xED\xA0\x80\"]", "t.json:1:3: invalid UTF-8 in a string"); /* an encoded surrogate */
    assert_bad("[\"\xC3\"]", "t.json:1:3: invalid UTF-8 in a string");         /* cut short */
    assert_bad("[\xC3\xA9]", "t.json:1:2: syntax error at byte 0xC3");
    /* a byte order mark is skipped and takes no column */
    gm_json *bom = parse_ok("\xEF\xBB\xBF[1]", "t.json");
    assert_int_equal(gm_json_len(bom), 1);
    gm_json_free(bom);
    assert_bad("\xEF\xBB\xBF[1,]", "t.json:1:4: trailing comma before ']'");
    assert_bad("[\xEF\xBB\xBF" "1]", "t.json:1:2: syntax error at byte 0xEF");
    /* columns count characters, not bytes: x follows a two-byte é */
    assert_bad("[\"\xC3\xA9\", x]", "t.json:1:7: syntax error at 'x'");
    /* an embedded NUL byte, which strlen would hide */
    check_bad("[1]\0", 4, "t.json:1:4: expected the end after the root value, got byte 0x00", __FILE__, __LINE__);
    check_bad("[\"a\0\"]", 5, "t.json:1:4: control character U+0000 in a string (escape it)", __FILE__, __LINE__);
    /* the text need not be NUL-terminated: parsing stops at len */
    check_bad("[1, 2]", 5, "t.json:1:6: syntax error at end of input", __FILE__, __LINE__);

    /* a NULL error pointer is allowed */
    gm_json *root;
    assert_int_equal(gm_json_parse(&root, "[", 1, "t.json", NULL), GM_EINVAL);
    assert_null(root);
}

static void test_nesting_limit(void **state)
{
    (void)state;
    char text[2 * 65 + 8];
    for (int depth = 64; depth <= 65; depth++) {
        memset(text, '[', (size_t)depth);
        memset(text + depth, ']', (size_t)depth);
        text[2 * depth] = '\0';
        if (depth == 64) {
            gm_json *root = parse_ok(text, "t.json");
            const gm_json *v = root;
            for (int i = 1; i < 64; i++) v = gm_json_at(v, 0);
            assert_int_equal(gm_json_type_of(v), GM_JSON_ARRAY);
            assert_int_equal(gm_json_len(v), 0);
            gm_json_free(root);
        } else {
            assert_bad(text, "t.json:1:65: nesting deeper than 64");
        }
    }
    /* mixed objects and arrays count the same */
    char mixed[400];
    size_t o = 0;
    for (int i = 0; i < 65; i++) o += (size_t)snprintf(mixed + o, sizeof mixed - o, i % 2 ? "[" : "{\"k\":");
    mixed[o] = '\0';
    /* the 65th container, a '{', follows 32 of {"k": (5 characters each) and 32 of [ */
    assert_bad(mixed, "t.json:1:193: nesting deeper than 64");
}

/*
 * What cJSON 1.7.15 accepts but gm_json must not: each of these parses with
 * cJSON_Parse. The deep document is past cJSON's own nesting limit (1000).
 */
static void test_stricter_than_cjson(void **state)
{
    (void)state;
    assert_bad("[\"\\u00zz\"]", "t.json:1:3: bad \\u escape: expected 4 hex digits"); /* cJSON: "" */
    assert_bad("{\"\\u0000\": 1}", "t.json:1:3: \\u0000 is not supported in strings"); /* cJSON: key "" */
    assert_bad("[1,\x01 2]", "t.json:1:4: syntax error at byte 0x01"); /* cJSON: space */
    assert_bad("[1,\f2]", "t.json:1:4: syntax error at byte 0x0C");
    assert_bad("\v[1]", "t.json:1:1: syntax error at byte 0x0B");
    assert_bad("[1] \x01", "t.json:1:5: expected the end after the root value, got byte 0x01");
    assert_bad("[-1e999]", "t.json:1:2: number out of range: -1e999"); /* cJSON: -inf */
    assert_bad("{\"m\": [{\"a\": 1, \"a\": 2}]}", "t.json:1:17: duplicate key \"a\" in m[0]");
    assert_bad("{\"a\": [1], \"b\": {\"x y\": {\"c\": {}, \"c\": []}}}",
               "t.json:1:35: duplicate key \"c\" in b[\"x y\"]");
    /* cJSON reports a bad key one byte late; the column is still the key's */
    assert_bad("{\"a\": 1, 2: 3}", "t.json:1:10: syntax error at '2'");
    assert_bad("{\"a\":1,  }  ", "t.json:1:10: trailing comma before '}'");
    char deep[3001];
    memset(deep, '[', 1500);
    memset(deep + 1500, ']', 1500);
    deep[3000] = '\0';
    assert_bad(deep, "t.json:1:65: nesting deeper than 64");

    /* tokens pair with nodes in file order: found() shows each number as written */
    gm_json *root = parse_ok("{\"s\": \"1\", \"x\": [10, \"20\", 3e1], \"y\": {\"k\": \"v\", \"z\": 30.0}, \"w\": 1E2,"
                             " \"n\": 1234567890123456789012345678901234567890"
                             "1234567890123456789012345678901234567890}",
                             "t.json");
    gm_error err;
    long long x;
    assert_int_equal(gm_json_get_int(gm_json_get(root, "y"), "z", 1, 0, 5, &x, &err), GM_EINVAL);
    assert_string_equal(err.msg, "t.json: y.z: expected an integer in [0, 5], got 30.0");
    assert_int_equal(gm_json_get_int(root, "w", 1, 0, 5, &x, &err), GM_EINVAL);
    assert_string_equal(err.msg, "t.json: w: expected an integer in [0, 5], got 1E2");
    assert_int_equal(gm_json_get_int(gm_json_get(root, "y"), "z", 1, 0, 100, &x, &err), GM_OK);
    assert_int_equal(x, 30);
    const gm_json *xs = gm_json_get(root, "x");
    assert_string_equal(gm_json_string(gm_json_at(xs, 1)), "20");
    assert_true(gm_json_number(gm_json_at(xs, 2)) == 30.0);
    /* 80 digits: longer than the 63-character number buffer of upstream cJSON 1.7.15 */
    assert_true(gm_json_number(gm_json_get(root, "n")) == 1.2345678901234568e79);
    assert_int_equal(gm_json_get_int(root, "n", 1, LLONG_MIN, LLONG_MAX, &x, &err), GM_EINVAL);
    assert_string_equal(err.msg, "t.json: n: expected an integer, got 1234567890123456789012345678901234567890...");
    gm_json_free(root);
}

static void test_getters(void **state)
{
    (void)state;
    gm_json *root = parse_ok("{\"i\": 5, \"f\": 2.5, \"s\": \"hello\", \"b\": true, \"n\": null, \"a\": [1, 2],"
                             " \"o\": {}, \"big\": 1e300, \"neg\": -3, \"widths\": [1, 2, 3, 2.5],"
                             " \"long\": \"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\","
                             " \"q\": \"say \\\"hi\\\"\\n\"}",
                             "g.json");
    gm_error err;
    long long i = -1;
    double d = -1;
    int b = -1;
    char s[16];

    /* required, optional and defaults */
    assert_int_equal(gm_json_get_int(root, "i", 1, 1, 10, &i, &err), GM_OK);
    assert_int_equal(i, 5);
    i = 99;
    assert_int_equal(gm_json_get_int(root, "zzz", 0, 1, 10, &i, &err), GM_OK);
    assert_int_equal(i, 99);
    assert_int_equal(gm_json_get_int(root, "zzz", 1, 1, 10, &i, &err), GM_EINVAL);
    assert_string_equal(err.msg, "g.json: missing \"zzz\"");
    assert_int_equal(gm_json_get_int(root, "neg", 1, -3, -3, &i, &err), GM_OK);
    assert_int_equal(i, -3);

    /* wrong types and ranges: what was expected and what was found */
    const struct {
        const char *key, *msg;
    } bad_int[] = {
        {"f", "g.json: f: expected an integer in [1, 10], got 2.5"},
        {"s", "g.json: s: expected an integer in [1, 10], got \"hello\""},
        {"b", "g.json: b: expected an integer in [1, 10], got true"},
        {"n", "g.json: n: expected an integer in [1, 10], got null"},
        {"a", "g.json: a: expected an integer in [1, 10], got an array"},
        {"o", "g.json: o: expected an integer in [1, 10], got an object"},
        {"neg", "g.json: neg: expected an integer in [1, 10], got -3"},
        {"big", "g.json: big: expected an integer in [1, 10], got 1e300"},
        {"long", "g.json: long: expected an integer in [1, 10], got \"abcdefghijklmnopqrstuvwxyzABCDEFGHIJK...\""},
        {"q", "g.json: q: expected an integer in [1, 10], got \"say \\\"hi\\\"\\u000A\""},
    };
    for (size_t k = 0; k < sizeof bad_int / sizeof bad_int[0]; k++) {
        i = 77;
        assert_int_equal(gm_json_get_int(root, bad_int[k].key, 1, 1, 10, &i, &err), GM_EINVAL);
        assert_int_equal(err.code, GM_EINVAL);
        assert_string_equal(err.msg, bad_int[k].msg);
        assert_int_equal(i, 77); /* untouched on error */
    }
    assert_int_equal(gm_json_get_int(root, "i", 1, 6, 10, &i, &err), GM_EINVAL);
    assert_string_equal(err.msg, "g.json: i: expected an integer in [6, 10], got 5");

    assert_int_equal(gm_json_get_double(root, "f", 1, 0, 10, &d, &err), GM_OK);
    assert_true(d == 2.5);
    assert_int_equal(gm_json_get_double(root, "i", 1, 0, 10, &d, &err), GM_OK);
    assert_true(d == 5.0);
    assert_int_equal(gm_json_get_double(root, "f", 1, 0, 1, &d, &err), GM_EINVAL);
    assert_string_equal(err.msg, "g.json: f: expected a number in [0, 1], got 2.5");
    assert_int_equal(gm_json_get_double(root, "s", 1, -INFINITY, INFINITY, &d, &err), GM_EINVAL);
    assert_string_equal(err.msg, "g.json: s: expected a number, got \"hello\"");
    d = 0.25;
    assert_int_equal(gm_json_get_double(root, "zzz", 0, 0, 1, &d, &err), GM_OK);
    assert_true(d == 0.25);

    assert_int_equal(gm_json_get_bool(root, "b", 1, &b, &err), GM_OK);
    assert_int_equal(b, 1);
    assert_int_equal(gm_json_get_bool(root, "i", 1, &b, &err), GM_EINVAL);
    assert_string_equal(err.msg, "g.json: i: expected true or false, got 5");

    assert_int_equal(gm_json_get_string(root, "s", 1, s, sizeof s, &err), GM_OK);
    assert_string_equal(s, "hello");
    assert_int_equal(gm_json_get_string(root, "s", 1, s, 6, &err), GM_OK); /* exactly fits */
    strcpy(s, "dflt");
    assert_int_equal(gm_json_get_string(root, "s", 1, s, 5, &err), GM_EINVAL);
    assert_string_equal(err.msg, "g.json: s: expected a string of at most 4 bytes, got \"hello\" (5 bytes)");
    assert_string_equal(s, "dflt");
    assert_int_equal(gm_json_get_string(root, "zzz", 0, s, sizeof s, &err), GM_OK);
    assert_string_equal(s, "dflt");
    assert_int_equal(gm_json_get_string(root, "a", 1, s, sizeof s, &err), GM_EINVAL);
    assert_string_equal(err.msg, "g.json: a: expected a string, got an array");

    /* arrays of integers: the bad element is named */
    long long w[4] = {-1, -1, -1, -1};
    int n = -1;
    assert_int_equal(gm_json_get_ints(root, "widths", 1, 1, 10, w, 4, &n, &err), GM_EINVAL);
    assert_string_equal(err.msg, "g.json: widths[3]: expected an integer in [1, 10], got 2.5");
    assert_int_equal(n, -1);
    assert_int_equal(w[0], -1); /* nothing written before the bad element was found */
    assert_int_equal(gm_json_get_ints(root, "widths", 1, 1, 10, w, 2, &n, &err), GM_EINVAL);
    assert_string_equal(err.msg, "g.json: widths: expected at most 2 elements, got 4");
    assert_int_equal(gm_json_get_ints(root, "i", 1, 1, 10, w, 4, &n, &err), GM_EINVAL);
    assert_string_equal(err.msg, "g.json: i: expected an array of at most 4 integers in [1, 10], got 5");
    assert_int_equal(gm_json_get_ints(root, "a", 1, 1, 10, w, 4, &n, &err), GM_OK);
    assert_int_equal(n, 2);
    assert_int_equal(w[0], 1);
    assert_int_equal(w[1], 2);
    assert_int_equal(gm_json_get_ints(root, "zzz", 0, 1, 10, w, 4, &n, &err), GM_OK);
    assert_int_equal(n, 2); /* absent and optional: count untouched */

    /* the object itself of the wrong type, or absent */
    assert_int_equal(gm_json_get_int(gm_json_get(root, "a"), "x", 0, 1, 10, &i, &err), GM_EINVAL);
    assert_string_equal(err.msg, "g.json: a: expected an object with \"x\", got an array");
    i = 3;
    assert_int_equal(gm_json_get_int(gm_json_get(root, "absent"), "x", 0, 1, 10, &i, &err), GM_OK);
    assert_int_equal(i, 3);
    assert_int_equal(gm_json_get_int(gm_json_get(root, "absent"), "x", 1, 1, 10, &i, &err), GM_EINVAL);
    assert_true(strstr(err.msg, "missing \"x\"") != NULL);

    /* raw accessors on the wrong type */
    assert_true(gm_json_number(gm_json_get(root, "s")) == 0.0);
    assert_null(gm_json_string(gm_json_get(root, "i")));
    assert_int_equal(gm_json_bool(gm_json_get(root, "i")), 0);
    assert_int_equal(gm_json_len(gm_json_get(root, "s")), 0);
    assert_null(gm_json_get(gm_json_get(root, "a"), "x"));
    assert_string_equal(gm_json_type_name(gm_json_type_of(gm_json_get(root, "o"))), "object");
    assert_string_equal(gm_json_type_name(GM_JSON_NUMBER), "number");
    gm_json_free(root);
}

static void test_paths(void **state)
{
    (void)state;
    gm_json *root = parse_ok("{\"models\": [{}, {}, {\"epochs\": 3, \"widths\": [1, [2, {\"deep\": true}]]}],"
                             " \"a.b\": {\"x y\": [0, {\"k\": 1}]}, \"\": 0}",
                             "p.json");
    char buf[128];
    const gm_json *m2 = gm_json_at(gm_json_get(root, "models"), 2);
    assert_string_equal(gm_json_path(m2, buf, sizeof buf), "models[2]");
    assert_string_equal(gm_json_path(gm_json_get(m2, "epochs"), buf, sizeof buf), "models[2].epochs");
    const gm_json *deep = gm_json_get(gm_json_at(gm_json_at(gm_json_get(m2, "widths"), 1), 1), "deep");
    assert_string_equal(gm_json_path(deep, buf, sizeof buf), "models[2].widths[1][1].deep");
    /* keys that are not plain names are quoted, so the path stays unambiguous */
    const gm_json *k = gm_json_get(gm_json_at(gm_json_get(gm_json_get(root, "a.b"), "x y"), 1), "k");
    assert_string_equal(gm_json_path(k, buf, sizeof buf), "[\"a.b\"][\"x y\"][1].k");
    assert_string_equal(gm_json_path(gm_json_get(root, ""), buf, sizeof buf), "[\"\"]");
    /* a short buffer truncates but stays a string */
    assert_string_equal(gm_json_path(deep, buf, 8), "models[");
    gm_error err;
    long long x;
    assert_int_equal(gm_json_get_int(gm_json_get(gm_json_get(root, "a.b"), "x y"), "k", 1, 0, 1, &x, &err),
                     GM_EINVAL);
    assert_string_equal(err.msg, "p.json: [\"a.b\"][\"x y\"]: expected an object with \"k\", got an array");
    gm_json_free(root);
}

static void test_check_keys(void **state)
{
    (void)state;
    gm_json *root =
        parse_ok("{\"models\": [{\"task\": \"a\", \"arch\": \"b\", \"epochs\": 1}, {\"task\": \"a\", \"epoch\": 2}]}",
                 "c.json");
    const char *const model_keys[] = {"task", "arch", "epochs", "widths", NULL};
    const char *const root_keys[] = {"models", NULL};
    const char *const none[] = {NULL};
    gm_error err;
    const gm_json *models = gm_json_get(root, "models");
    assert_int_equal(gm_json_check_keys(root, root_keys, &err), GM_OK);
    assert_int_equal(gm_json_check_keys(gm_json_at(models, 0), model_keys, &err), GM_OK);
    assert_int_equal(gm_json_check_keys(gm_json_at(models, 1), model_keys, &err), GM_EINVAL);
    assert_string_equal(err.msg, "c.json: models[1]: unknown key \"epoch\" (known: task, arch, epochs, widths)");
    assert_int_equal(gm_json_check_keys(root, none, &err), GM_EINVAL);
    assert_string_equal(err.msg, "c.json: unknown key \"models\" (known: none)");
    assert_int_equal(gm_json_check_keys(models, root_keys, &err), GM_EINVAL);
    assert_string_equal(err.msg, "c.json: models: expected an object, got an array");
    /* a long list of known keys is cut, not overflowed */
    const char *const many[] = {"aaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbb", "cccccccccccccccccccc",
                                "dddddddddddddddddddd", "eeeeeeeeeeeeeeeeeeee", "ffffffffffffffffffff",
                                "gggggggggggggggggggg", "hhhhhhhhhhhhhhhhhhhh", "iiiiiiiiiiiiiiiiiiii",
                                "jjjjjjjjjjjjjjjjjjjj", "kkkkkkkkkkkkkkkkkkkk", NULL};
    assert_int_equal(gm_json_check_keys(root, many, &err), GM_EINVAL);
    assert_true(strncmp(err.msg, "c.json: unknown key \"models\" (known: aaaaaaaaaaaaaaaaaaaa, bbbb", 60) == 0);
    size_t len = strlen(err.msg);
    assert_true(len > 6 && strcmp(err.msg + len - 6, ", ...)") == 0);
    gm_json_free(root);
}

static void test_parse_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/gm_json_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char good[128], bad[128], missing[128];
    snprintf(good, sizeof good, "%s/b1.json", dir);
    snprintf(bad, sizeof bad, "%s/bad.json", dir);
    snprintf(missing, sizeof missing, "%s/none.json", dir);
    FILE *f = fopen(good, "wb");
    assert_non_null(f);
    fputs(CONFIG, f);
    fclose(f);
    f = fopen(bad, "wb");
    assert_non_null(f);
    fputs("{\n  \"a\": [1,\n         2 3]\n}\n", f);
    fclose(f);

    gm_json *root = NULL;
    gm_error err;
    char want[512];
    assert_int_equal(gm_json_parse_file(&root, good, &err), GM_OK);
    long long e;
    assert_int_equal(gm_json_get_int(gm_json_at(gm_json_get(root, "models"), 2), "epochs", 1, 1, 10000, &e, &err),
                     GM_EINVAL);
    snprintf(want, sizeof want, "%s: models[2].epochs: expected an integer in [1, 10000], got 2.5", good);
    assert_string_equal(err.msg, want);
    gm_json_free(root);

    assert_int_equal(gm_json_parse_file(&root, bad, &err), GM_EINVAL);
    assert_null(root);
    snprintf(want, sizeof want, "%s:3:12: syntax error at '3'", bad);
    assert_string_equal(err.msg, want);

    assert_int_equal(gm_json_parse_file(&root, missing, &err), GM_EIO);
    snprintf(want, sizeof want, "%s: cannot read: No such file or directory", missing);
    assert_string_equal(err.msg, want);
    assert_int_equal(gm_json_parse_file(&root, dir, &err), GM_EIO);
    snprintf(want, sizeof want, "%s: cannot read: Is a directory", dir);
    assert_string_equal(err.msg, want);
    assert_null(root);

    assert_int_equal(unlink(good), 0);
    assert_int_equal(unlink(bad), 0);
    assert_int_equal(rmdir(dir), 0);
}

/* Visits every node: paths and getters must work on whatever a mutation produced. */
static void walk(const gm_json *v, int depth)
{
    char path[256];
    gm_json_path(v, path, sizeof path);
    assert_true(depth <= 64);
    for (size_t i = 0; i < gm_json_len(v); i++) {
        const gm_json *c = gm_json_at(v, i);
        if (gm_json_type_of(v) == GM_JSON_OBJECT) {
            const char *key = gm_json_key_at(v, i);
            gm_error err;
            long long x = 0;
            gm_status st = gm_json_get_int(v, key, 1, 0, 100, &x, &err);
            if (st != GM_OK) assert_true(strncmp(err.msg, "fz.json: ", 9) == 0);
            assert_true(gm_json_get(v, key) == c); /* keys are unique */
        }
        walk(c, depth + 1);
    }
}

static void test_fuzz_mutations(void **state)
{
    (void)state;
    const char *base = CONFIG;
    size_t base_len = strlen(base);
    static const char alphabet[] = "{}[]\",:\\/0123456789-+.eEtrufalsnu \n\t'\x01\x7f\xc3\xa9\xff";
    gm_rng rng;
    gm_rng_seed(&rng, 20240611);
    int ok = 0, failed = 0;
    for (int iter = 0; iter < 2000; iter++) {
        size_t cap = 2 * base_len + 64, len = base_len;
        char *buf = malloc(cap);
        memcpy(buf, base, base_len);
        int edits = 1 + (int)gm_rng_below(&rng, 4);
        for (int e = 0; e < edits; e++) {
            size_t at = len ? gm_rng_below(&rng, (uint32_t)len) : 0;
            switch (gm_rng_below(&rng, 5)) {
            case 0: /* replace a byte */
                if (len) buf[at] = alphabet[gm_rng_below(&rng, sizeof alphabet - 1)];
                break;
            case 1: /* delete a byte */
                if (len) {
                    memmove(buf + at, buf + at + 1, len - at - 1);
                    len--;
                }
                break;
            case 2: /* insert a byte */
                if (len < cap) {
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = alphabet[gm_rng_below(&rng, sizeof alphabet - 1)];
                    len++;
                }
                break;
            case 3: { /* repeat a short span */
                size_t n = 1 + gm_rng_below(&rng, 12);
                if (at + n <= len && len + n <= cap) {
                    memmove(buf + at + n, buf + at, len - at);
                    len += n;
                }
                break;
            }
            default: /* cut the end off */
                len = at;
                break;
            }
        }
        /* an exact-size copy, so reading one byte past len is an ASan error */
        char *text = malloc(len ? len : 1);
        memcpy(text, buf, len);
        free(buf);
        gm_json *root = (gm_json *)&root;
        gm_error err = {GM_OK, ""};
        gm_status st = gm_json_parse(&root, text, len, "fz.json", &err);
        if (st == GM_OK) {
            ok++;
            assert_non_null(root);
            walk(root, 0);
            gm_json_free(root);
        } else {
            failed++;
            assert_int_equal(st, GM_EINVAL);
            assert_null(root);
            int line = 0, col = 0, used = 0;
            if (sscanf(err.msg, "fz.json:%d:%d: %n", &line, &col, &used) != 2 || used == 0 || err.msg[used] == '\0')
                fail_msg("iteration %d: no position or no reason in \"%s\"", iter, err.msg);
            int lines = 1;
            for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
            assert_true(line >= 1 && line <= lines);
            assert_true(col >= 1 && (size_t)col <= len + 1);
        }
        free(text);
    }
    print_message("  2000 mutations: %d parsed, %d rejected with a message\n", ok, failed);
    assert_true(ok >= 50);     /* some edits keep the document valid: the walk is exercised */
    assert_true(failed >= 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_round_trip), cmocka_unit_test(test_escapes_decode_to_utf8),
        cmocka_unit_test(test_numbers_are_exact), cmocka_unit_test(test_numbers_ignore_locale),
        cmocka_unit_test(test_malformed_inputs),  cmocka_unit_test(test_stricter_than_cjson),
        cmocka_unit_test(test_nesting_limit),
        cmocka_unit_test(test_getters),           cmocka_unit_test(test_paths),
        cmocka_unit_test(test_check_keys),        cmocka_unit_test(test_parse_file),
        cmocka_unit_test(test_fuzz_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

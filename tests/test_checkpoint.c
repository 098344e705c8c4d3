/* Checkpoints and their parts: the JSON parser, safetensors reading/writing (and refusing every kind
 * of broken file with a message naming the tensor or header), config <-> JSON, model checkpoints,
 * training state, and the dump subcommand. */
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "core/strbuf.h"
#include "experiments/dump.h"
#include "models/checkpoint.h"
#include "models/json.h"
#include "models/safetensors.h"
#include "tests/testutil.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ---- */

/* A per-process scratch path /tmp/hybrid-ckpt-<pid>-<name>. */
static const char *tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "/tmp/hybrid-ckpt-%d-%s", (int)getpid(), name);
    return buf;
}

/* Writes 8-byte length + header + data (a hand-made safetensors file). */
static void write_raw(const char *path, const char *header, size_t hlen, const void *data, size_t dlen) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    unsigned char len8[8];
    for (int k = 0; k < 8; k++) len8[k] = (unsigned char)((uint64_t)hlen >> (8 * k));
    ck_assert_int_eq(fwrite(len8, 1, 8, f), 8);
    if (hlen) ck_assert_int_eq(fwrite(header, 1, hlen, f), hlen);
    if (dlen) ck_assert_int_eq(fwrite(data, 1, dlen, f), dlen);
    fclose(f);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    if (n) ck_assert_int_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

/* Asserts rc < 0 and that the last error contains every non-NULL needle. */
static void expect_error(int rc, const char *what, const char *a, const char *b, const char *c) {
    const char *e = hy_last_error();
    ck_assert_msg(rc < 0, "%s: accepted, expected an error containing '%s'", what, a);
    const char *needles[] = {a, b, c};
    for (int k = 0; k < 3; k++)
        ck_assert_msg(!needles[k] || strstr(e, needles[k]), "%s: error '%s' lacks '%s'", what, e, needles[k]);
}

/* The tiny model of the tests: d 16, 2 x (attention 2 heads + swiglu 32), vocab 256. The variant
 * has an untied head and no ffn in layer 1. */
static void tiny_config_variant(hy_model_config *c, bool variant) {
    memset(c, 0, sizeof *c);
    c->d_model = 16, c->vocab_size = 256, c->n_layers = 2, c->tie_embeddings = !variant, c->router_aux_coef = 0.001f;
    c->layers = calloc(2, sizeof(hy_layer_cfg));
    const char *att[] = {"n_heads=2"}, *ffn[] = {"d_ff=32"};
    for (int i = 0; i < 2; i++) {
        c->layers[i].mixer.ops = hy_block_find("attention");
        c->layers[i].ffn.ops = hy_block_find("swiglu");
        ck_assert_ptr_nonnull(c->layers[i].mixer.ops);
        ck_assert_ptr_nonnull(c->layers[i].ffn.ops);
        ck_assert_msg(hy_block_opts_from_pairs(c->layers[i].mixer.ops, 16, att, 1, &c->layers[i].mixer.opts) == 0, "%s",
                      hy_last_error());
        ck_assert_msg(hy_block_opts_from_pairs(c->layers[i].ffn.ops, 16, ffn, 1, &c->layers[i].ffn.opts) == 0, "%s",
                      hy_last_error());
    }
    if (variant) c->layers[1].ffn.ops = NULL;
    ck_assert_msg(hy_model_config_resolve(c) == 0, "%s", hy_last_error());
}

static void tiny_config(hy_model_config *c) { tiny_config_variant(c, false); }

static hy_model *tiny_model_variant(uint64_t seed, bool variant) {
    hy_model_config c;
    tiny_config_variant(&c, variant);
    hy_model *m;
    ck_assert_msg(hy_model_create(&c, seed, &m) == 0, "%s", hy_last_error());
    hy_model_config_free(&c);
    return m;
}

static hy_model *tiny_model(uint64_t seed) { return tiny_model_variant(seed, false); }

static void random_tokens(int32_t *t, size_t n, uint64_t seed) {
    hy_rng r;
    hy_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) t[i] = (int32_t)hy_rng_below(&r, 256);
}

/* Replaces the first occurrence of `from` in s (malloc'd) by `to`; returns a new malloc'd string. */
static char *replace(const char *s, const char *from, const char *to) {
    const char *at = strstr(s, from);
    ck_assert_msg(at != NULL, "'%s' not in '%s'", from, s);
    size_t n = strlen(s) - strlen(from) + strlen(to);
    char *out = malloc(n + 1);
    size_t pre = (size_t)(at - s);
    memcpy(out, s, pre);
    strcpy(out + pre, to);
    strcat(out, at + strlen(from));
    return out;
}

/* ---- JSON ---- */

START_TEST(json_parses_nested_values_escapes_and_numbers) {
    const char *text = " {\"a\": [1, -2.5e2, 0, true, false, null, {\"b\": \"x\\\"y\\\\z\\n\\u00e9\\ud83d\\ude00\\/\"}],\n"
                       "  \"empty\": {}, \"list\": [], \"big\": 12345678901234} ";
    json_t *j;
    ck_assert_msg(hy_json_parse(text, strlen(text), &j) == 0, "%s", hy_last_error());
    ck_assert(json_is_object(j));
    ck_assert_int_eq(json_object_size(j), 4);
    const json_t *a = json_object_get(j, "a");
    ck_assert(json_is_array(a));
    ck_assert_int_eq(json_array_size(a), 7);
    ck_assert(json_is_integer(json_array_get(a, 0)) && json_integer_value(json_array_get(a, 0)) == 1);
    ck_assert(json_is_real(json_array_get(a, 1)));   /* written with an exponent: not an integer */
    ck_assert_double_eq(json_real_value(json_array_get(a, 1)), -250.0);
    char num[48];
    ck_assert_str_eq(hy_json_number_text(json_array_get(a, 1), num, sizeof num), "-2.5e+02");
    ck_assert_str_eq(hy_json_number_text(json_array_get(a, 0), num, sizeof num), "1");
    ck_assert(json_is_true(json_array_get(a, 3)) && json_is_false(json_array_get(a, 4)));
    ck_assert(json_is_null(json_array_get(a, 5)));
    ck_assert_str_eq(hy_json_type_name(json_array_get(a, 5)), "null");
    ck_assert_str_eq(hy_json_type_name(a), "an array");
    const json_t *b = json_object_get(json_array_get(a, 6), "b");
    ck_assert_str_eq(json_string_value(b), "x\"y\\z\n\xc3\xa9\xf0\x9f\x98\x80/");
    ck_assert(json_is_object(json_object_get(j, "empty")));
    ck_assert_int_eq(json_array_size(json_object_get(j, "list")), 0);
    ck_assert(json_integer_value(json_object_get(j, "big")) == 12345678901234LL);
    ck_assert_ptr_null(json_object_get(j, "nope"));
    /* keys come back in file order (safetensors tensors are listed as written) */
    const char *order[] = {"a", "empty", "list", "big"}, *key;
    json_t *v;
    int k = 0;
    json_object_foreach(j, key, v) ck_assert_str_eq(key, order[k++]);
    json_decref(j);
    /* the shortest text of a real, never mistaken for an integer */
    json_t *r = json_real(0.1);
    ck_assert_str_eq(hy_json_number_text(r, num, sizeof num), "0.1");
    json_real_set(r, 1e300);
    ck_assert_str_eq(hy_json_number_text(r, num, sizeof num), "1e+300");
    json_decref(r);
}
END_TEST

START_TEST(json_errors_say_where_and_what) {
    static const struct { const char *text, *needle; } bad[] = {
        {"", "end of file"},
        {"{\"a\": 1,}", "string or '}' expected"},   /* a trailing comma */
        {"[1, 2", "']' expected"},
        {"{\"a\" 1}", "':' expected"},
        {"{\"a\": 1, \"a\": 2}", "duplicate object key"},
        {"\"abc", "premature end of input"},
        {"\"a\\qb\"", "invalid escape"},
        {"\"a\\u00zz\"", "invalid escape"},
        {"\"\\ud800x\"", "invalid Unicode"},
        {"\"\\u0000\"", "\\u0000"},
        {"\"tab\there\"", "control character"},
        {"\"\xff\"", "unable to decode byte 0xff"},   /* not UTF-8 */
        {"01", "invalid token"},                        /* a leading zero */
        {"-", "invalid token"},
        {"1.", "invalid token"},
        {"1e", "invalid token"},
        {"tru", "invalid token"},
        {"{} x", "end of file expected"},
        {"{1: 2}", "string or '}' expected"},
        {"99999999999999999999", "too big integer"},
        {"1e999", "real number overflow"},
        {"[1]\n  ]", "line 2, column 3 (byte 7)"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        json_t *j = (json_t *)&j;
        int rc = hy_json_parse(bad[k].text, strlen(bad[k].text), &j);
        expect_error(rc, bad[k].text, bad[k].needle, "line ", NULL);
        ck_assert_ptr_null(j);
    }
    /* deep nesting is refused at the level one too deep, before any tree is built; brackets
     * inside strings do not count */
    size_t n = 100000;
    char *deep = malloc(n);
    memset(deep, '[', n);
    json_t *j;
    expect_error(hy_json_parse(deep, n, &j), "deep", "line 1, column 129 (byte 128): nesting deeper than 128 levels", NULL, NULL);
    memset(deep, '{', n);
    expect_error(hy_json_parse(deep, n, &j), "deep", "nesting deeper than 128 levels", NULL, NULL);
    hy_strbuf at = {0};
    for (int d = 0; d < HY_JSON_MAX_DEPTH; d++) hy_sb_add(&at, "[");
    hy_sb_add(&at, "\"[[[[\\\"{{\"");
    for (int d = 0; d < HY_JSON_MAX_DEPTH; d++) hy_sb_add(&at, "]");
    ck_assert_msg(hy_json_parse(at.p, at.len, &j) == 0, "%s", hy_last_error());   /* exactly at the limit */
    json_decref(j);
    hy_sb_free(&at);
    /* a NUL inside the text is an error, not the end */
    expect_error(hy_json_parse("[1]\0xx", 6, &j), "nul", "end of file expected", NULL, NULL);
    free(deep);
    /* large objects: every key found, a duplicate anywhere refused with its position, lookalike
     * keys kept apart */
    for (int dup = -1; dup < 3; dup++) {
        enum { KEYS = 5000 };
        hy_strbuf b = {0};
        hy_sb_add(&b, "{");
        for (int k = 0; k < KEYS; k++) hy_sb_printf(&b, "%s\"k%d\": %d", k ? ", " : "", k, k);
        static const int again[3] = {0, 15, 4321};
        if (dup >= 0) hy_sb_printf(&b, ", \"k%d\": 0", again[dup]);
        hy_sb_add(&b, ", \"k\": -1}");
        char want[64];
        snprintf(want, sizeof want, "duplicate object key near '\"k%d\"'", dup >= 0 ? again[dup] : 0);
        int rc = hy_json_parse(b.p, b.len, &j);
        if (dup >= 0) {
            expect_error(rc, "large duplicate", want, "line 1, column", NULL);
        } else {
            ck_assert_msg(rc == 0, "%s", hy_last_error());
            ck_assert_int_eq(json_object_size(j), KEYS + 1);
            for (int k = 0; k < KEYS; k += 7) {
                char key[16];
                snprintf(key, sizeof key, "k%d", k);
                ck_assert(json_integer_value(json_object_get(j, key)) == k);
            }
            json_decref(j);
        }
        hy_sb_free(&b);
    }
}
END_TEST

START_TEST(json_string_escaping_round_trips) {
    const char *s = "quote\" back\\slash\n\t\r\b\f \x01\x1f caf\xc3\xa9 /";
    hy_strbuf b = {0};
    hy_sb_json_string(&b, s);
    hy_sb_printf(&b, "%s", "");
    char *q = hy_sb_take(&b);
    ck_assert_ptr_null(strchr(q, '\n'));
    ck_assert_ptr_nonnull(strstr(q, "\\u0001"));
    json_t *j;
    ck_assert_msg(hy_json_parse(q, strlen(q), &j) == 0, "%s", hy_last_error());
    ck_assert_str_eq(json_string_value(j), s);
    json_decref(j);
    free(q);
    char *e = hy_sb_take(&b);   /* empty builder gives "" */
    ck_assert_str_eq(e, "");
    free(e);
}
END_TEST

/* ---- safetensors ---- */

START_TEST(safetensors_write_then_read) {
    char path[256];
    tmp_path(path, sizeof path, "rw.safetensors");
    float a[6] = {1, 2, 3, 4, 5, 6.5f}, s0 = 3.25f;
    int32_t ids[4] = {7, -1, 0, 255};
    hy_st_entry e[] = {
        {.name = "a.weight", .dtype = HY_DT_F32, .ndim = 2, .shape = {2, 3}, .data = a},
        {.name = "ids", .dtype = HY_DT_I32, .ndim = 1, .shape = {4}, .data = ids},
        {.name = "scalar", .dtype = HY_DT_F32, .ndim = 0, .data = &s0},
        {.name = "empty \"odd\" name", .dtype = HY_DT_F32, .ndim = 2, .shape = {0, 5}, .data = a},
    };
    const char *keys[] = {"format", "note"}, *vals[] = {"test", "multi\nline \"text\""};
    ck_assert_msg(hy_st_write(path, 2, keys, vals, 4, e) == 0, "%s", hy_last_error());
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    ck_assert_int_ne(access(tmp, F_OK), 0);
    FILE *fp = fopen(path, "rb");
    unsigned char len8[8];
    ck_assert_int_eq(fread(len8, 1, 8, fp), 8);
    fclose(fp);
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--) hlen = hlen << 8 | len8[k];
    ck_assert_uint_eq(hlen % 8, 0);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq((uint64_t)st.st_size, 8 + hlen + 24 + 16 + 4);

    hy_st_file f;
    ck_assert_msg(hy_st_open(path, &f) == 0, "%s", hy_last_error());
    ck_assert_int_eq(f.n_tensors, 4);
    ck_assert_str_eq(hy_st_meta(&f, "note"), vals[1]);
    ck_assert_ptr_null(hy_st_meta(&f, "missing"));
    const hy_st_tensor *t = hy_st_find(&f, "a.weight");
    int64_t want[2] = {2, 3};
    ck_assert_msg(hy_st_check(&f, t, HY_DT_F32, 2, want, NULL) == 0, "%s", hy_last_error());
    ck_assert_int_eq(memcmp(t->data, a, sizeof a), 0);
    t = hy_st_find(&f, "ids");
    ck_assert_int_eq(t->dtype, HY_DT_I32);
    ck_assert_int_eq(memcmp(t->data, ids, sizeof ids), 0);
    t = hy_st_find(&f, "scalar");
    ck_assert_int_eq(t->ndim, 0);
    ck_assert_uint_eq(t->numel, 1);
    ck_assert_int_eq(memcmp(t->data, &s0, 4), 0);
    t = hy_st_find(&f, "empty \"odd\" name");
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(t->numel, 0);
    int64_t other[2] = {3, 2};
    expect_error(hy_st_check(&f, hy_st_find(&f, "a.weight"), HY_DT_F32, 2, other, "the model's"), "shape",
                 "tensor 'a.weight': shape (2, 3) does not match the model's (3, 2)", NULL, NULL);
    expect_error(hy_st_check(&f, hy_st_find(&f, "ids"), HY_DT_F32, 1, (int64_t[]){4}, NULL), "dtype",
                 "tensor 'ids': dtype I32, expected F32", NULL, NULL);
    hy_st_close(&f);
    ck_assert_uint_eq(hy_dtype_size(HY_DT_BF16), 2);
    ck_assert_uint_eq(hy_dtype_size(HY_DT_I64), 8);
    ck_assert_int_eq(hy_dtype_parse("BOOL"), HY_DT_BOOL);
    ck_assert_int_eq(hy_dtype_parse("F31"), -1);
    expect_error(hy_st_open("/nonexistent/x.safetensors", &f), "missing file", "/nonexistent/x.safetensors", "cannot open",
                 NULL);
    unlink(path);
}
END_TEST

/* What PyTorch's save_file may produce: sorted keys, metadata last, other padding, holes. */
START_TEST(safetensors_reads_any_order_and_padding) {
    char path[256];
    tmp_path(path, sizeof path, "order.safetensors");
    const char *h = "{ \"b\" : {\"shape\": [2], \"dtype\": \"F32\", \"data_offsets\": [0, 8]},\n"
                    "  \"a\": {\"dtype\": \"BF16\", \"shape\": [3], \"data_offsets\": [8, 14]},\n"
                    "  \"__metadata__\": {\"format\": \"pt\"}}\n\t   ";
    unsigned char data[14] = {0};
    float two[2] = {1.5f, -2};
    memcpy(data, two, 8);
    write_raw(path, h, strlen(h), data, sizeof data);
    hy_st_file f;
    ck_assert_msg(hy_st_open(path, &f) == 0, "%s", hy_last_error());
    ck_assert_int_eq(f.n_tensors, 2);
    ck_assert_str_eq(f.tensors[0].name, "b");
    ck_assert_int_eq(memcmp(hy_st_find(&f, "b")->data, two, 8), 0);
    ck_assert_int_eq(hy_st_find(&f, "a")->dtype, HY_DT_BF16);
    ck_assert_str_eq(hy_st_meta(&f, "format"), "pt");
    hy_st_close(&f);
    unlink(path);
}
END_TEST

START_TEST(safetensors_refuses_broken_headers) {
    char path[256];
    tmp_path(path, sizeof path, "bad.safetensors");
    static const struct { const char *header; size_t data; const char *a, *b; } cases[] = {
        {"[1, 2]   ", 0, "header is an array, expected a JSON object", NULL},
        {"{\"x\": {\"dtype\": \"F32\", \"shape\": [2]", 0, "header is not valid JSON", "line 1"},
        {"{\"x\": {\"shape\": [2], \"data_offsets\": [0, 8]}}", 8, "tensor 'x'", "missing 'dtype'"},
        {"{\"x\": {\"dtype\": \"F32\", \"data_offsets\": [0, 8]}}", 8, "tensor 'x'", "missing 'shape'"},
        {"{\"x\": {\"dtype\": \"F32\", \"shape\": [2]}}", 8, "tensor 'x'", "missing 'data_offsets'"},
        {"{\"x\": {\"dtype\": \"F33\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 8, "tensor 'x'", "unknown dtype 'F33'"},
        {"{\"x\": {\"dtype\": 32, \"shape\": [2], \"data_offsets\": [0, 8]}}", 8, "tensor 'x'", "dtype is a number"},
        {"{\"x\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}", 8, "tensor 'x'", "shape[0] = -2"},
        {"{\"x\": {\"dtype\": \"F32\", \"shape\": [2.5], \"data_offsets\": [0, 8]}}", 8, "tensor 'x'", "shape[0] = 2.5"},
        {"{\"x\": {\"dtype\": \"F32\", \"shape\": [2.0], \"data_offsets\": [0, 8]}}", 8, "tensor 'x'",
         "shape[0] = 2.0 is not a non-negative integer"},
        {"{\"x\": {\"dtype\": \"F32\", \"shape\": [2e0], \"data_offsets\": [0, 8]}}", 8, "tensor 'x'",
         "shape[0] = 2.0 is not"},
        {"{\"x\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 8]}}", 8, "tensor 'x'", "shape[0] = -1 is not"},
        {"{\"x\": {\"dtype\": \"F32\", \"shape\": 2, \"data_offsets\": [0, 8]}}", 8, "tensor 'x'", "shape is a number"},
        {"{\"x\": {\"dtype\": \"F32\", \"shape\": [99999999999, 99999999999, 99999999999], \"data_offsets\": [0, 8]}}", 8,
         "tensor 'x'", "too large"},
        {"{\"layers.0.mixer.q_proj.weight\": {\"dtype\": \"F32\", \"shape\": [32, 64], \"data_offsets\": [0, 4096]}}", 4096,
         "tensor 'layers.0.mixer.q_proj.weight': data_offsets [0, 4096] do not match F32 shape (32, 64) = 8192 bytes", NULL},
        {"{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 0]}}", 8, "tensor 'x'", "0 <= begin <= end"},
        {"{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0]}}", 8, "tensor 'x'", "data_offsets must be"},
        {"{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 8, "tensor 'x'",
         "beyond the data section (8 bytes)"},
        {"{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, \"y\": {\"dtype\": \"I32\", \"shape\": [1], "
         "\"data_offsets\": [4, 8]}}", 8, "overlap tensor", "'x'"},
        {"{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, \"x\": {\"dtype\": \"F32\", \"shape\": [2], "
         "\"data_offsets\": [0, 8]}}", 8, "duplicate object key near '\"x\"'", NULL},
        {"{\"x\": [1, 2]}", 0, "tensor 'x'", "entry is an array"},
        {"{\"__metadata__\": {\"format\": 1}}", 0, "__metadata__ 'format' is a number", "map of strings"},
        {"{\"__metadata__\": [\"a\"]}", 0, "__metadata__ is an array", NULL},
    };
    unsigned char zeros[8192] = {0};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        write_raw(path, cases[k].header, strlen(cases[k].header), zeros, cases[k].data);
        hy_st_file f;
        expect_error(hy_st_open(path, &f), cases[k].header, path, cases[k].a, cases[k].b);
        ck_assert_ptr_null(f.map);
    }
    unlink(path);
}
END_TEST

START_TEST(safetensors_refuses_truncated_and_bad_lengths) {
    char path[256], cut[256];
    tmp_path(path, sizeof path, "good.safetensors");
    tmp_path(cut, sizeof cut, "cut.safetensors");
    float a[64];
    tu_fill_normal(a, 64, 1, 3);
    hy_st_entry e[] = {{.name = "w", .dtype = HY_DT_F32, .ndim = 2, .shape = {8, 4}, .data = a},
                       {.name = "v", .dtype = HY_DT_F32, .ndim = 1, .shape = {32}, .data = a + 32}};
    const char *k[] = {"format"}, *v[] = {"hybrid"};
    ck_assert_int_eq(hy_st_write(path, 1, k, v, 2, e), 0);
    size_t n;
    char *d = tu_slurp(NULL, path, &n);
    uint64_t hlen = 0;
    for (int b = 7; b >= 0; b--) hlen = hlen << 8 | (unsigned char)d[b];
    size_t cuts[] = {0, 1, 7, 8, 9, 8 + hlen / 2, 8 + hlen - 1, 8 + hlen, 8 + hlen + 100, n - 1};
    const char *needle[] = {"shorter than", "shorter than", "shorter than", "larger than the rest", "larger than the rest",
                            "larger than the rest", "larger than the rest", "beyond the data section",
                            "beyond the data section", "tensor 'v'"};
    for (size_t c = 0; c < sizeof cuts / sizeof *cuts; c++) {
        write_bytes(cut, d, cuts[c]);
        hy_st_file f;
        char what[64];
        snprintf(what, sizeof what, "cut at %zu", cuts[c]);
        expect_error(hy_st_open(cut, &f), what, cut, needle[c], NULL);
    }
    /* flipped header length: huge, one more, one less */
    char *copy = malloc(n);
    memcpy(copy, d, n);
    copy[7] = (char)0x7f;
    write_bytes(cut, copy, n);
    hy_st_file f;
    expect_error(hy_st_open(cut, &f), "huge length", "header length", "larger than the rest", NULL);
    uint64_t lens[] = {hlen + 1, hlen - 1, HY_ST_MAX_HEADER + 1ull};
    for (int i = 0; i < 3; i++) {
        memcpy(copy, d, n);
        for (int b = 0; b < 8; b++) copy[b] = (char)(lens[i] >> (8 * b));
        write_bytes(cut, copy, n);
        expect_error(hy_st_open(cut, &f), "length off by one", cut, NULL, NULL);
    }
    /* a (sparse) file big enough for an absurd-but-fitting header length */
    char len8[8];
    uint64_t hl = HY_ST_MAX_HEADER + 8;
    for (int b = 0; b < 8; b++) len8[b] = (char)(hl >> (8 * b));
    write_bytes(cut, len8, 8);
    ck_assert_int_eq(truncate(cut, (off_t)HY_ST_MAX_HEADER + 64), 0);
    expect_error(hy_st_open(cut, &f), "absurd", "absurd", NULL, NULL);
    free(copy);
    hy_free(d);
    unlink(path);
    unlink(cut);
}
END_TEST

/* ---- config JSON ---- */

START_TEST(config_json_round_trip) {
    hy_model_config c, back;
    tiny_config(&c);
    char *a, *b;
    ck_assert_int_eq(hy_model_config_to_json(&c, &a), 0);
    ck_assert_msg(strstr(a, "\"d_model\": 16") && strstr(a, "\"router_aux_coef\": 0.001,") &&
                  strstr(a, "{\"mixer\": {\"type\": \"attention\", \"n_heads\": 2") &&
                  strstr(a, "\"ffn\": {\"type\": \"swiglu\", \"d_ff\": 32}") && strstr(a, "\"tie_embeddings\": true"),
                  "%s", a);
    ck_assert_msg(hy_model_config_from_json(a, &back) == 0, "%s", hy_last_error());
    ck_assert_int_eq(hy_model_config_to_json(&back, &b), 0);
    ck_assert_str_eq(a, b);
    ck_assert_int_eq(back.n_layers, 2);
    ck_assert_ptr_eq(back.layers[1].mixer.ops, hy_block_find("attention"));
    hy_model_config_free(&back);
    free(b);
    /* ffn none and a missing option (rope_theta defaults to null) */
    char *none = replace(a, "\"ffn\": {\"type\": \"swiglu\", \"d_ff\": 32}", "\"ffn\": {\"type\": \"none\"}");
    ck_assert_msg(hy_model_config_from_json(none, &back) == 0, "%s", hy_last_error());
    ck_assert_ptr_null(back.layers[0].ffn.ops);
    ck_assert_ptr_nonnull(back.layers[1].ffn.ops);
    ck_assert_int_eq(hy_model_config_to_json(&back, &b), 0);
    ck_assert_str_eq(none, b);
    hy_model_config_free(&back);
    free(b);
    if (strstr(a, ", \"rope_theta\": null")) {
        char *no_rope = replace(a, ", \"rope_theta\": null", "");
        ck_assert_msg(hy_model_config_from_json(no_rope, &back) == 0, "%s", hy_last_error());
        ck_assert_int_eq(hy_model_config_to_json(&back, &b), 0);
        ck_assert_str_eq(a, b);
        hy_model_config_free(&back);
        free(b);
        free(no_rope);
    }
    free(none);
    free(a);
    hy_model_config_free(&c);
}
END_TEST

START_TEST(config_json_refuses_bad_configs) {
    hy_model_config c, back;
    tiny_config(&c);
    char *a;
    ck_assert_int_eq(hy_model_config_to_json(&c, &a), 0);
    static const struct { const char *from, *to, *e1, *e2; } edits[] = {
        {"\"d_model\": 16", "\"d_model\": 16, \"colour\": 1", "config: unknown key 'colour'", "expected d_model"},
        {"\"type\": \"attention\"", "\"type\": \"lstm\"", "config.layers[0].mixer: unknown block type 'lstm'",
         "registered: attention"},
        {"\"type\": \"attention\"", "\"type\": \"swiglu\"", "config.layers[0].mixer: block 'swiglu' is not a mixer", "mixers: attention"},
        {"\"type\": \"swiglu\"", "\"type\": \"attention\"", "config.layers[0].ffn: block 'attention' is not an ffn", "swiglu"},
        {"\"vocab_size\": 256, ", "", "config: missing key 'vocab_size'", NULL},
        {"\"tie_embeddings\": true", "\"tie_embeddings\": 1", "config.tie_embeddings: expected a boolean, got a number", NULL},
        {"\"d_model\": 16", "\"d_model\": 16.5", "config.d_model: expected a positive integer, got 16.5", NULL},
        {"\"d_model\": 16", "\"d_model\": 16.0", "config.d_model: expected a positive integer, got 16.0", NULL},
        {"\"d_model\": 16", "\"d_model\": 99999999999999999999", "config: invalid JSON", "too big integer"},
        {"\"n_layers\": 2", "\"n_layers\": 3", "config.layers: 2 entries, but n_layers is 3", NULL},
        {"\"n_heads\": 2", "\"n_heads\": 2.5", "config.layers[0].mixer", "n_heads"},
        {"\"n_heads\": 2", "\"n_heads\": 3", "config.layers[0].mixer.n_heads: ", "does not divide d_model"},
        {"\"n_heads\": 2", "\"n_heads\": \"two\"", "config.layers[0].mixer.n_heads: expected a number", "got a string"},
        {"\"d_ff\": 32}", "\"d_ff\": 32, \"bogus\": 1}", "config.layers[0].ffn: unknown option 'bogus' for swiglu",
         "options: d_ff"},
        {"{\"mixer\": {", "{\"extra\": 1, \"mixer\": {", "config.layers[0]: unknown key 'extra'", NULL},
        {"{\"mixer\": {\"type\": \"attention\"", "{\"mixer\": {\"kind\": \"attention\"", "config.layers[0].mixer: missing key 'type'",
         NULL},
        {"]}", "]", "config: invalid JSON", "line 1"},
        {"\"layers\": [", "\"layers\": 7, \"x\": [", "config", "unknown key 'x'"},
    };
    for (size_t k = 0; k < sizeof edits / sizeof *edits; k++) {
        char *bad = replace(a, edits[k].from, edits[k].to);
        expect_error(hy_model_config_from_json(bad, &back), bad, edits[k].e1, edits[k].e2, NULL);
        ck_assert_ptr_null(back.layers);
        free(bad);
    }
    expect_error(hy_model_config_from_json("[]", &back), "array", "config: expected an object", NULL, NULL);
    free(a);
    hy_model_config_free(&c);
}
END_TEST

/* ---- checkpoints ---- */

/* Rewrites src into dst through hy_st_write after `edit` changes the entries / metadata. */
typedef struct {
    int n;
    hy_st_entry e[64];
    int n_meta;
    const char *keys[8], *vals[8];
} st_copy;

static void copy_open(hy_st_file *f, const char *src, st_copy *c) {
    ck_assert_msg(hy_st_open(src, f) == 0, "%s", hy_last_error());
    memset(c, 0, sizeof *c);
    ck_assert_int_lt(f->n_tensors, 60);
    for (int i = 0; i < f->n_tensors; i++) {
        const hy_st_tensor *t = &f->tensors[i];
        c->e[i] = (hy_st_entry){.name = t->name, .dtype = t->dtype, .ndim = t->ndim, .data = t->data};
        memcpy(c->e[i].shape, t->shape, sizeof t->shape);
    }
    c->n = f->n_tensors;
    for (int i = 0; i < f->n_meta; i++) c->keys[i] = f->meta_keys[i], c->vals[i] = f->meta_values[i];
    c->n_meta = f->n_meta;
}

static int find_entry(const st_copy *c, const char *name) {
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->e[i].name, name)) return i;
    ck_abort_msg("no entry %s", name);
    return -1;
}

START_TEST(checkpoint_round_trip_is_bit_identical) {
    char path[256];
    tmp_path(path, sizeof path, "model.safetensors");
    bool variant = _i == 1;   /* loop test: 0 = tied, 1 = untied head, no ffn in layer 1 */
    hy_model *m = tiny_model_variant(42, variant), *l;
    ck_assert_msg(hy_checkpoint_save(m, path, 17) == 0, "%s", hy_last_error());
    long step = -1;
    ck_assert_msg(hy_checkpoint_load(path, &l, &step) == 0, "%s", hy_last_error());
    ck_assert_int_eq(step, 17);
    ck_assert_int_eq(l->n_params, m->n_params);
    for (int i = 0; i < m->n_params; i++) {
        ck_assert_str_eq(l->params[i].name, m->params[i].name);
        ck_assert_int_eq(memcmp(l->params[i].data, m->params[i].data, m->params[i].numel * 4), 0);
    }
    enum { B = 2, T = 7 };
    int32_t in[B * T], tg[B * T];
    random_tokens(in, B * T, 5);
    random_tokens(tg, B * T, 6);
    hy_loss la, lb;
    ck_assert_int_eq(hy_model_forward(m, in, tg, B, T, false, &la), 0);
    ck_assert_int_eq(hy_model_forward(l, in, tg, B, T, false, &lb), 0);
    ck_assert_int_eq(memcmp(hy_model_logits(m), hy_model_logits(l), (size_t)B * T * 256 * 4), 0);
    ck_assert_float_eq(la.loss, lb.loss);
    /* the metadata is what SPEC §4 says */
    hy_st_file f;
    ck_assert_int_eq(hy_st_open(path, &f), 0);
    ck_assert_str_eq(hy_st_meta(&f, "format"), "hybrid");
    ck_assert_str_eq(hy_st_meta(&f, "step"), "17");
    char *json;
    ck_assert_int_eq(hy_model_config_to_json(&m->cfg, &json), 0);
    ck_assert_str_eq(hy_st_meta(&f, "config"), json);
    ck_assert_int_eq(f.n_tensors, m->n_params);
    ck_assert(!hy_st_find(&f, "lm_head.weight") == !variant);
    ck_assert(!hy_st_find(&f, "layers.1.ffn.down_proj.weight") == variant);
    ck_assert(!hy_st_find(&f, "layers.1.ffn_norm.weight") == variant);
    ck_assert_ptr_nonnull(hy_st_find(&f, "layers.1.mixer.q_proj.weight"));
    ck_assert_ptr_nonnull(hy_st_find(&f, "layers.0.ffn.down_proj.weight"));
    free(json);
    hy_st_close(&f);
    hy_model_free(m);
    hy_model_free(l);
    unlink(path);
}
END_TEST

/* A file rewritten PyTorch-style (sorted keys, metadata last, unpadded header) loads. */
START_TEST(checkpoint_loads_pytorch_style_rewrite) {
    char path[256], py[256];
    tmp_path(path, sizeof path, "model.safetensors");
    tmp_path(py, sizeof py, "py.safetensors");
    hy_model *m = tiny_model(3), *l;
    ck_assert_int_eq(hy_checkpoint_save(m, path, 5), 0);
    hy_st_file f;
    st_copy c;
    copy_open(&f, path, &c);
    /* sort entries by name (selection sort is plenty) */
    for (int i = 0; i < c.n; i++)
        for (int j = i + 1; j < c.n; j++)
            if (strcmp(c.e[j].name, c.e[i].name) < 0) {
                hy_st_entry t = c.e[i];
                c.e[i] = c.e[j], c.e[j] = t;
            }
    hy_strbuf h = {0}, data = {0};
    hy_sb_add(&h, "{");
    for (int i = 0; i < c.n; i++) {
        size_t bytes = 4;
        for (int d = 0; d < c.e[i].ndim; d++) bytes *= (size_t)c.e[i].shape[d];
        hy_sb_printf(&h, "%s\"%s\": {\"dtype\": \"F32\", \"shape\": [", i ? ", " : "", c.e[i].name);
        for (int d = 0; d < c.e[i].ndim; d++) hy_sb_printf(&h, "%s%lld", d ? ", " : "", (long long)c.e[i].shape[d]);
        hy_sb_printf(&h, "], \"data_offsets\": [%zu, %zu]}", data.len, data.len + bytes);
        hy_sb_addn(&data, c.e[i].data, bytes);
    }
    hy_sb_add(&h, ", \"__metadata__\": {");
    for (int i = c.n_meta - 1; i >= 0; i--) {
        hy_sb_printf(&h, "%s\"%s\": ", i == c.n_meta - 1 ? "" : ", ", c.keys[i]);
        hy_sb_json_string(&h, c.vals[i]);
    }
    hy_sb_add(&h, "}}");
    if (h.len % 8 == 0) hy_sb_add(&h, " ");   /* deliberately unaligned */
    write_raw(py, h.p, h.len, data.p, data.len);
    hy_sb_free(&h);
    hy_sb_free(&data);
    hy_st_close(&f);
    long step;
    ck_assert_msg(hy_checkpoint_load(py, &l, &step) == 0, "%s", hy_last_error());
    ck_assert_int_eq(step, 5);
    ck_assert_int_eq(memcmp(l->data, m->data, m->numel * 4), 0);
    hy_model_free(m);
    hy_model_free(l);
    unlink(path);
    unlink(py);
}
END_TEST

START_TEST(checkpoint_refuses_mismatched_files) {
    char path[256], bad[256];
    tmp_path(path, sizeof path, "model.safetensors");
    tmp_path(bad, sizeof bad, "bad.safetensors");
    hy_model *m = tiny_model(1), *l = NULL;
    ck_assert_int_eq(hy_checkpoint_save(m, path, 0), 0);
    char *json;
    ck_assert_int_eq(hy_model_config_to_json(&m->cfg, &json), 0);
    char *unknown_key = replace(json, "\"d_model\": 16", "\"d_model\": 16, \"dropout\": 0.1");
    char *unknown_type = replace(json, "\"type\": \"swiglu\"", "\"type\": \"lstm\"");
    float extra[3] = {0};
    char *huge_vocab = replace(json, "\"vocab_size\": 256", "\"vocab_size\": 1000000000");
    enum { DROP, EXTRA, DTYPE, SHAPE, FORMAT, NO_FORMAT, NO_CONFIG, BAD_KEY, BAD_TYPE, BAD_STEP, HUGE, N_CASES };
    const char *needles[N_CASES][2] = {
        [DROP] = {"tensor 'layers.1.mixer.o_proj.weight' is missing", NULL},
        [EXTRA] = {"unexpected tensor 'layers.0.mixer.bias'", NULL},
        [DTYPE] = {"tensor 'norm_f.weight': dtype I32, expected F32", NULL},
        [SHAPE] = {"tensor 'layers.0.ffn.up_proj.weight': shape (16, 32) does not match the model's (32, 16)", NULL},
        [FORMAT] = {"format is \"pytorch\", expected \"hybrid\"", NULL},
        [NO_FORMAT] = {"no 'format'", NULL},
        [NO_CONFIG] = {"no 'config'", NULL},
        [BAD_KEY] = {"config: unknown key 'dropout'", NULL},
        [BAD_TYPE] = {"config.layers[0].ffn: unknown block type 'lstm'", "registered: "},
        [BAD_STEP] = {"step 'ten'", NULL},
        [HUGE] = {"the config describes a model of 16000", "parameters but the file holds only"},
    };
    for (int k = 0; k < N_CASES; k++) {
        hy_st_file f;
        st_copy c;
        copy_open(&f, path, &c);
        int i;
        switch (k) {
        case DROP:
            i = find_entry(&c, "layers.1.mixer.o_proj.weight");
            c.e[i] = c.e[--c.n];
            break;
        case EXTRA: c.e[c.n++] = (hy_st_entry){.name = "layers.0.mixer.bias", .dtype = HY_DT_F32, .ndim = 1,
                                               .shape = {3}, .data = extra};
            break;
        case DTYPE: c.e[find_entry(&c, "norm_f.weight")].dtype = HY_DT_I32; break;
        case SHAPE:
            i = find_entry(&c, "layers.0.ffn.up_proj.weight");
            c.e[i].shape[0] = 16, c.e[i].shape[1] = 32;
            break;
        case FORMAT: c.vals[0] = "pytorch"; break;
        case NO_FORMAT: c.keys[0] = "fmt"; break;
        case NO_CONFIG: c.n_meta = 2; break;
        case BAD_KEY: c.vals[2] = unknown_key; break;
        case BAD_TYPE: c.vals[2] = unknown_type; break;
        case BAD_STEP: c.vals[1] = "ten"; break;
        case HUGE: c.vals[2] = huge_vocab; break;
        }
        ck_assert_str_eq(c.keys[2], "config");
        ck_assert_msg(hy_st_write(bad, c.n_meta, c.keys, c.vals, c.n, c.e) == 0, "%s", hy_last_error());
        hy_st_close(&f);
        expect_error(hy_checkpoint_load(bad, &l, NULL), needles[k][0], bad, needles[k][0], needles[k][1]);
        ck_assert_ptr_null(l);
    }
    /* truncated checkpoints: an error naming the file, never a crash */
    size_t n;
    char *d = tu_slurp(NULL, path, &n);
    for (size_t cut = 0; cut < n; cut += n / 37 + 1) {
        write_bytes(bad, d, cut);
        expect_error(hy_checkpoint_load(bad, &l, NULL), "truncated", bad, NULL, NULL);
    }
    hy_free(d);
    free(json), free(unknown_key), free(unknown_type), free(huge_vocab);
    hy_model_free(m);
    unlink(path);
    unlink(bad);
}
END_TEST

/* A config that asks for more parameters than the file holds (beyond a small slack) is refused
 * before the model is allocated; before, up to 4 x the file's values + 1M were allocated first. */
START_TEST(checkpoint_config_checked_before_allocation) {
    char path[256], bad[256];
    tmp_path(path, sizeof path, "wide.safetensors");
    tmp_path(bad, sizeof bad, "wide-bad.safetensors");
    hy_model_config c;
    tiny_config(&c);
    c.vocab_size = 65536;   /* a 4 MB embedding: 1M values */
    hy_model *m, *l = NULL;
    ck_assert_msg(hy_model_create(&c, 1, &m) == 0, "%s", hy_last_error());
    hy_model_config_free(&c);
    ck_assert_int_eq(hy_checkpoint_save(m, path, 3), 0);
    hy_st_file f;
    st_copy cp;
    copy_open(&f, path, &cp);
    ck_assert_str_eq(cp.keys[2], "config");
    char *wide = replace(cp.vals[2], "\"vocab_size\": 65536", "\"vocab_size\": 200000");
    cp.vals[2] = wide;
    ck_assert_int_eq(hy_st_write(bad, cp.n_meta, cp.keys, cp.vals, cp.n, cp.e), 0);
    hy_st_close(&f);
    size_t before = hy_mem_current();
    hy_mem_reset_peak();
    expect_error(hy_checkpoint_load(bad, &l, NULL), "wide", "the config describes a model of 3205200 parameters", "but the file holds only 1053776 values",
                 bad);
    ck_assert_ptr_null(l);
    ck_assert_msg(hy_mem_peak() - before < (1u << 20), "allocated %zu bytes before refusing", hy_mem_peak() - before);
    ck_assert_msg(hy_checkpoint_load(path, &l, NULL) == 0, "%s", hy_last_error());
    hy_model_free(l), hy_model_free(m);
    free(wide);
    unlink(path), unlink(bad);
}
END_TEST

/* ---- training state ---- */

START_TEST(train_state_round_trip_and_errors) {
    char path[256], ckpt[256];
    tmp_path(path, sizeof path, "state.safetensors");
    tmp_path(ckpt, sizeof ckpt, "model.safetensors");
    hy_model *m = tiny_model(9);
    float *s1 = hy_calloc(m->numel * 4), *s2 = hy_calloc(m->numel * 4), *r1 = hy_calloc(m->numel * 4),
          *r2 = hy_calloc(m->numel * 4);
    tu_fill_normal(s1, m->numel, 1, 10);
    tu_fill_normal(s2, m->numel, 1, 11);
    const char *slots_n[] = {"adam_m", "adam_v"};
    float *slots[] = {s1, s2}, *back[] = {r1, r2};
    const char *keys[] = {"step", "rng"}, *vals[] = {"123", "00ff"};
    ck_assert_msg(hy_train_state_save(path, m, 2, slots_n, slots, 2, keys, vals) == 0, "%s", hy_last_error());
    hy_kv_list meta;
    ck_assert_msg(hy_train_state_load(path, m, 2, slots_n, back, &meta) == 0, "%s", hy_last_error());
    for (int i = 0; i < m->n_params; i++) {
        size_t off = (size_t)(m->params[i].data - m->data);
        ck_assert_int_eq(memcmp(r1 + off, s1 + off, m->params[i].numel * 4), 0);
        ck_assert_int_eq(memcmp(r2 + off, s2 + off, m->params[i].numel * 4), 0);
    }
    ck_assert_str_eq(hy_kv_get(&meta, "step"), "123");
    ck_assert_str_eq(hy_kv_get(&meta, "rng"), "00ff");
    ck_assert_str_eq(hy_kv_get(&meta, "format"), "hybrid-train-state");
    ck_assert_ptr_null(hy_kv_get(&meta, "nope"));
    hy_kv_free(&meta);
    hy_st_file f;
    ck_assert_int_eq(hy_st_open(path, &f), 0);
    ck_assert_ptr_nonnull(hy_st_find(&f, "adam_m.embedding.weight"));
    ck_assert_ptr_nonnull(hy_st_find(&f, "adam_v.layers.1.ffn.gate_proj.weight"));
    hy_st_close(&f);
    /* one slot saved, two expected: names the missing tensor; the reverse: an extra one */
    ck_assert_int_eq(hy_train_state_save(path, m, 1, slots_n, slots, 0, NULL, NULL), 0);
    expect_error(hy_train_state_load(path, m, 2, slots_n, back, &meta), "missing slot", path,
                 "tensor 'adam_v.embedding.weight' is missing", NULL);
    ck_assert_int_eq(meta.n, 0);
    ck_assert_int_eq(hy_train_state_save(path, m, 2, slots_n, slots, 0, NULL, NULL), 0);
    expect_error(hy_train_state_load(path, m, 1, slots_n, back, &meta), "extra slot", "unexpected tensor 'adam_v.", NULL,
                 NULL);
    const char *reserved[] = {"format"};
    expect_error(hy_train_state_save(path, m, 1, slots_n, slots, 1, reserved, vals), "reserved", "reserved", NULL, NULL);
    /* a model checkpoint is not a training state, nor the reverse */
    ck_assert_int_eq(hy_checkpoint_save(m, ckpt, 0), 0);
    expect_error(hy_train_state_load(ckpt, m, 1, slots_n, back, &meta), "ckpt as state",
                 "format is \"hybrid\", expected \"hybrid-train-state\"", NULL, NULL);
    hy_model *l = NULL;
    expect_error(hy_checkpoint_load(path, &l, NULL), "state as ckpt", "expected \"hybrid\"", NULL, NULL);
    hy_free(s1), hy_free(s2), hy_free(r1), hy_free(r2);
    hy_model_free(m);
    unlink(path);
    unlink(ckpt);
}
END_TEST

/* ---- dump ---- */

START_TEST(dump_writes_logits_losses_and_gradients) {
    char ckpt[256], batch[256], out[256];
    tmp_path(ckpt, sizeof ckpt, "model.safetensors");
    tmp_path(batch, sizeof batch, "batch.safetensors");
    tmp_path(out, sizeof out, "out.safetensors");
    hy_model *m = tiny_model(21);
    ck_assert_int_eq(hy_checkpoint_save(m, ckpt, 0), 0);
    enum { B = 2, T = 5 };
    int32_t tokens[B * (T + 1)], in[B * T], tg[B * T];
    random_tokens(tokens, B * (T + 1), 8);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) in[b * T + t] = tokens[b * (T + 1) + t], tg[b * T + t] = tokens[b * (T + 1) + t + 1];
    hy_st_entry e = {.name = "tokens", .dtype = HY_DT_I32, .ndim = 2, .shape = {B, T + 1}, .data = tokens};
    ck_assert_int_eq(hy_st_write(batch, 0, NULL, NULL, 1, &e), 0);
    ck_assert_msg(hy_dump(ckpt, batch, out) == 0, "%s", hy_last_error());
    /* the reference: the same forward/backward here */
    hy_loss loss;
    ck_assert_int_eq(hy_model_forward(m, in, tg, B, T, true, &loss), 0);
    hy_model_zero_grad(m);
    ck_assert_int_eq(hy_model_backward(m), 0);
    hy_st_file f;
    ck_assert_msg(hy_st_open(out, &f) == 0, "%s", hy_last_error());
    ck_assert_int_eq(f.n_tensors, 4 + m->n_params);
    const hy_st_tensor *t = hy_st_find(&f, "logits");
    ck_assert_int_eq(hy_st_check(&f, t, HY_DT_F32, 3, (int64_t[]){B, T, 256}, NULL), 0);
    ck_assert_int_eq(memcmp(t->data, hy_model_logits(m), (size_t)B * T * 256 * 4), 0);
    const char *ln[] = {"loss", "ce_loss", "aux_loss"};
    float want[] = {loss.loss, loss.ce_loss, loss.aux_loss};
    for (int k = 0; k < 3; k++) {
        t = hy_st_find(&f, ln[k]);
        ck_assert_msg(t && hy_st_check(&f, t, HY_DT_F32, 0, NULL, NULL) == 0, "%s", ln[k]);
        float v;
        memcpy(&v, t->data, 4);
        ck_assert_float_eq(v, want[k]);
    }
    ck_assert_float_eq(want[2], 0.0f);
    for (int i = 0; i < m->n_params; i++) {
        char name[256];
        snprintf(name, sizeof name, "grad.%s", m->params[i].name);
        t = hy_st_find(&f, name);
        ck_assert_msg(t != NULL, "%s missing", name);
        int64_t shape[4];
        for (int d = 0; d < m->params[i].ndim; d++) shape[d] = m->params[i].shape[d];
        ck_assert_int_eq(hy_st_check(&f, t, HY_DT_F32, m->params[i].ndim, shape, NULL), 0);
        ck_assert_msg(memcmp(t->data, m->params[i].grad, m->params[i].numel * 4) == 0, "%s differs", name);
    }
    hy_st_close(&f);
    /* batch errors */
    float ftok[B * (T + 1)] = {0};
    int32_t big[2] = {3, 256}, one[2] = {1, 2};
    hy_st_entry bad[] = {
        {.name = "ids", .dtype = HY_DT_I32, .ndim = 2, .shape = {B, T + 1}, .data = tokens},
        {.name = "tokens", .dtype = HY_DT_F32, .ndim = 2, .shape = {B, T + 1}, .data = ftok},
        {.name = "tokens", .dtype = HY_DT_I32, .ndim = 2, .shape = {1, 2}, .data = big},
        {.name = "tokens", .dtype = HY_DT_I32, .ndim = 2, .shape = {2, 1}, .data = one},
        {.name = "tokens", .dtype = HY_DT_I32, .ndim = 1, .shape = {2}, .data = one},
    };
    const char *needle[] = {"no tensor 'tokens'", "tensor 'tokens': dtype F32, expected I32",
                            "token [0, 1] = 256 is outside the vocabulary [0, 256)", "shape (2, 1), expected (B, T+1)",
                            "shape (2,), expected"};
    for (int k = 0; k < 5; k++) {
        ck_assert_int_eq(hy_st_write(batch, 0, NULL, NULL, 1, &bad[k]), 0);
        expect_error(hy_dump(ckpt, batch, out), needle[k], batch, needle[k], NULL);
    }
    expect_error(hy_dump(batch, batch, out), "batch as model", batch, "format", NULL);
    hy_model_free(m);
    unlink(ckpt), unlink(batch), unlink(out);
}
END_TEST

static Suite *make_checkpoint_suite(void) {
    Suite *s = suite_create("checkpoint");
    TCase *tc = tcase_create("json");
    tcase_add_test(tc, json_parses_nested_values_escapes_and_numbers);
    tcase_add_test(tc, json_errors_say_where_and_what);
    tcase_add_test(tc, json_string_escaping_round_trips);
    suite_add_tcase(s, tc);
    tc = tcase_create("safetensors");
    tcase_add_test(tc, safetensors_write_then_read);
    tcase_add_test(tc, safetensors_reads_any_order_and_padding);
    tcase_add_test(tc, safetensors_refuses_broken_headers);
    tcase_add_test(tc, safetensors_refuses_truncated_and_bad_lengths);
    suite_add_tcase(s, tc);
    tc = tcase_create("config");
    tcase_add_test(tc, config_json_round_trip);
    tcase_add_test(tc, config_json_refuses_bad_configs);
    suite_add_tcase(s, tc);
    tc = tcase_create("checkpoint");
    tcase_add_loop_test(tc, checkpoint_round_trip_is_bit_identical, 0, 2);
    tcase_add_test(tc, checkpoint_loads_pytorch_style_rewrite);
    tcase_add_test(tc, checkpoint_refuses_mismatched_files);
    tcase_add_test(tc, checkpoint_config_checked_before_allocation);
    tcase_add_test(tc, train_state_round_trip_and_errors);
    tcase_add_test(tc, dump_writes_logits_losses_and_gradients);
    suite_add_tcase(s, tc);
    return s;
}
HY_TEST_SUITE(make_checkpoint_suite)

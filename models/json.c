/* Strict recursive-descent JSON parser producing a small DOM. */
#include "models/json.h"
#include "core/error.h"
#include "core/strbuf.h"
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 128

typedef struct {
    const char *s;
    size_t len, i;
    int depth;
} parser;

/* Records "line L, column C: message" for the byte at `at`. */
static int perr(const parser *p, size_t at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int perr(const parser *p, size_t at, const char *fmt, ...) {
    int line = 1, col = 1;
    for (size_t k = 0; k < at && k < p->len; k++) {
        if (p->s[k] == '\n') line++, col = 1;
        else col++;
    }
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return hy_fail("line %d, column %d: %s", line, col, msg);
}

/* What is at position i, for messages: "'x'" or "the end of the text". */
static const char *what_at(const parser *p, char *buf, size_t n) {
    if (p->i >= p->len) return "the end of the text";
    unsigned char c = (unsigned char)p->s[p->i];
    if (c >= 0x20 && c < 0x7f) snprintf(buf, n, "'%c'", c);
    else snprintf(buf, n, "byte 0x%02x", c);
    return buf;
}

static void skip_ws(parser *p) {
    while (p->i < p->len && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int parse_value(parser *p, hy_json *out);

/* Four hex digits at p->i into *v. */
static int hex4(parser *p, unsigned *v) {
    if (p->len - p->i < 4) return perr(p, p->i, "truncated \\u escape");
    *v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p->s[p->i + k];
        unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0')
                   : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                   : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10) : 99;
        if (d == 99) return perr(p, p->i + k, "bad hex digit in \\u escape");
        *v = *v * 16 + d;
    }
    p->i += 4;
    return 0;
}

/* A string starting at the opening quote; decoded into a malloc'd buffer. */
static int parse_string(parser *p, char **out, size_t *out_len) {
    size_t start = p->i++;
    hy_strbuf b = {0};
    while (1) {
        if (p->i >= p->len) {
            hy_sb_free(&b);
            return perr(p, start, "unterminated string");
        }
        unsigned char c = (unsigned char)p->s[p->i];
        if (c == '"') break;
        if (c < 0x20) {
            hy_sb_free(&b);
            return perr(p, p->i, "control character 0x%02x inside a string (escape it)", c);
        }
        if (c != '\\') {
            size_t run = p->i;
            while (run < p->len && p->s[run] != '"' && p->s[run] != '\\' && (unsigned char)p->s[run] >= 0x20) run++;
            hy_sb_addn(&b, p->s + p->i, run - p->i);
            p->i = run;
            continue;
        }
        if (++p->i >= p->len) continue;   /* reported as unterminated */
        char e = p->s[p->i++], one = 0;
        switch (e) {
        case '"': one = '"'; break;
        case '\\': one = '\\'; break;
        case '/': one = '/'; break;
        case 'b': one = '\b'; break;
        case 'f': one = '\f'; break;
        case 'n': one = '\n'; break;
        case 'r': one = '\r'; break;
        case 't': one = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (hex4(p, &cp) < 0) goto fail;
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                perr(p, p->i - 6, "lone low surrogate \\u%04X", cp);
                goto fail;
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (p->len - p->i < 2 || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u') {
                    perr(p, p->i - 6, "high surrogate \\u%04X not followed by a low one", cp);
                    goto fail;
                }
                p->i += 2;
                if (hex4(p, &lo) < 0) goto fail;
                if (lo < 0xDC00 || lo > 0xDFFF) {
                    perr(p, p->i - 6, "high surrogate \\u%04X not followed by a low one", cp);
                    goto fail;
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp == 0) {
                perr(p, p->i - 6, "\\u0000 is not allowed in strings");
                goto fail;
            }
            char u[4];
            size_t n;
            if (cp < 0x80) u[0] = (char)cp, n = 1;
            else if (cp < 0x800) u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 63)), n = 2;
            else if (cp < 0x10000)
                u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | ((cp >> 6) & 63)), u[2] = (char)(0x80 | (cp & 63)), n = 3;
            else
                u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | ((cp >> 12) & 63)),
                u[2] = (char)(0x80 | ((cp >> 6) & 63)), u[3] = (char)(0x80 | (cp & 63)), n = 4;
            hy_sb_addn(&b, u, n);
            continue;
        }
        default:
            perr(p, p->i - 2, "unknown escape '\\%c'", e >= 0x20 && e < 0x7f ? e : '?');
            goto fail;
        }
        hy_sb_addn(&b, &one, 1);
    }
    p->i++;   /* closing quote */
    size_t n = b.len;
    if (!b.p) hy_sb_addn(&b, "", 0);
    *out = hy_sb_take(&b);
    *out_len = n;
    return *out ? 0 : -1;
fail:
    hy_sb_free(&b);
    return -1;
}

/* A number per the JSON grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int parse_number(parser *p, hy_json *out) {
    size_t start = p->i, i = p->i;
    const char *s = p->s;
#define DIGIT(k) ((k) < p->len && s[k] >= '0' && s[k] <= '9')
    if (i < p->len && s[i] == '-') i++;
    if (!DIGIT(i)) return perr(p, i, "expected a digit in number");
    if (s[i] == '0') {
        i++;
        if (DIGIT(i)) return perr(p, start, "leading zero in number");
    } else
        while (DIGIT(i)) i++;
    if (i < p->len && s[i] == '.') {
        i++;
        if (!DIGIT(i)) return perr(p, i, "expected a digit after '.' in number");
        while (DIGIT(i)) i++;
    }
    if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < p->len && (s[i] == '+' || s[i] == '-')) i++;
        if (!DIGIT(i)) return perr(p, i, "expected a digit in exponent");
        while (DIGIT(i)) i++;
    }
#undef DIGIT
    size_t n = i - start;
    out->text = malloc(n + 1);
    if (!out->text) return hy_fail_code(HY_ERR_NOMEM, "out of memory parsing JSON");
    memcpy(out->text, s + start, n);
    out->text[n] = 0;
    out->text_len = n;
    out->number = strtod(out->text, NULL);   /* overflow gives ±HUGE_VAL; callers range-check */
    out->type = HY_JSON_NUMBER;
    p->i = i;
    return 0;
}

/* Appends one parsed item (and its key) to an array or object. */
static int push_item(hy_json *c, char *key, const hy_json *v, int *cap) {
    if (c->n == *cap) {
        int nc = *cap ? *cap * 2 : 8;
        hy_json *ni = realloc(c->items, sizeof *ni * (size_t)nc);
        if (!ni) return hy_fail_code(HY_ERR_NOMEM, "out of memory parsing JSON");
        c->items = ni;
        if (c->type == HY_JSON_OBJECT) {
            char **nk = realloc(c->keys, sizeof *nk * (size_t)nc);
            if (!nk) return hy_fail_code(HY_ERR_NOMEM, "out of memory parsing JSON");
            c->keys = nk;
        }
        *cap = nc;
    }
    c->items[c->n] = *v;
    if (c->type == HY_JSON_OBJECT) c->keys[c->n] = key;
    c->n++;
    return 0;
}

/* The keys of the object being parsed, hashed once it has KEYS_LINEAR of them, so the duplicate
 * check stays linear in the object's size (comparing each key with all before it would take hours
 * on a header of a million keys). slot[i] = key index + 1, 0 = empty; cap is a power of two. */
#define KEYS_LINEAR 16
typedef struct {
    int *slot;
    size_t cap;
} key_index;

static size_t key_hash(const char *s) {   /* FNV-1a */
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return (size_t)h;
}

/* Index of `key` among o->keys[0..o->n), or -1. */
static int key_find(const key_index *x, const hy_json *o, const char *key) {
    if (!x->cap) {
        for (int k = 0; k < o->n; k++)
            if (strcmp(o->keys[k], key) == 0) return k;
        return -1;
    }
    for (size_t i = key_hash(key) & (x->cap - 1);; i = (i + 1) & (x->cap - 1)) {
        if (!x->slot[i]) return -1;
        if (strcmp(o->keys[x->slot[i] - 1], key) == 0) return x->slot[i] - 1;
    }
}

static void key_insert(key_index *x, const hy_json *o, int k) {
    size_t i = key_hash(o->keys[k]) & (x->cap - 1);
    while (x->slot[i]) i = (i + 1) & (x->cap - 1);
    x->slot[i] = k + 1;
}

/* Records o->keys[o->n - 1], just appended: from KEYS_LINEAR keys on, in a table at most half full. */
static int key_add(key_index *x, const hy_json *o) {
    if (o->n < KEYS_LINEAR) return 0;
    if ((size_t)o->n * 2 <= x->cap) {
        key_insert(x, o, o->n - 1);
        return 0;
    }
    size_t cap = 4 * KEYS_LINEAR;
    while (cap < (size_t)o->n * 2) cap *= 2;
    int *slot = calloc(cap, sizeof *slot);
    if (!slot) return hy_fail_code(HY_ERR_NOMEM, "out of memory parsing JSON");
    free(x->slot);
    x->slot = slot, x->cap = cap;
    for (int k = 0; k < o->n; k++) key_insert(x, o, k);
    return 0;
}

static int parse_items(parser *p, hy_json *out, key_index *keys);

/* An array or an object, starting at its opening bracket. */
static int parse_container(parser *p, hy_json *out) {
    key_index keys = {0};
    int rc = parse_items(p, out, &keys);
    free(keys.slot);
    return rc;
}

/* The body of parse_container; keys indexes an object's keys for the duplicate check. */
static int parse_items(parser *p, hy_json *out, key_index *keys) {
    bool obj = p->s[p->i] == '{';
    char close = obj ? '}' : ']', buf[32];
    out->type = obj ? HY_JSON_OBJECT : HY_JSON_ARRAY;
    if (++p->depth > MAX_DEPTH) return perr(p, p->i, "nesting deeper than %d levels", MAX_DEPTH);
    p->i++;
    int cap = 0;
    skip_ws(p);
    if (p->i < p->len && p->s[p->i] == close) {
        p->i++;
        p->depth--;
        return 0;
    }
    while (1) {
        char *key = NULL;
        size_t key_len;
        skip_ws(p);
        if (obj) {
            if (p->i >= p->len || p->s[p->i] != '"')
                return perr(p, p->i, "expected a key (a string), found %s", what_at(p, buf, sizeof buf));
            size_t kpos = p->i;
            if (parse_string(p, &key, &key_len) < 0) return -1;
            if (key_find(keys, out, key) >= 0) {
                int rc = perr(p, kpos, "duplicate key \"%.200s\"", key);
                free(key);
                return rc;
            }
            skip_ws(p);
            if (p->i >= p->len || p->s[p->i] != ':') {
                free(key);
                return perr(p, p->i, "expected ':' after a key, found %s", what_at(p, buf, sizeof buf));
            }
            p->i++;
            skip_ws(p);
        }
        hy_json v;
        if (parse_value(p, &v) < 0 || push_item(out, key, &v, &cap) < 0) {
            free(key);
            hy_json_free(&v);
            return -1;
        }
        if (obj && key_add(keys, out) < 0) return -1;
        skip_ws(p);
        if (p->i < p->len && p->s[p->i] == ',') {
            p->i++;
            skip_ws(p);
            if (p->i < p->len && p->s[p->i] == close) return perr(p, p->i, "trailing comma");
            continue;
        }
        if (p->i < p->len && p->s[p->i] == close) {
            p->i++;
            p->depth--;
            return 0;
        }
        return perr(p, p->i, "expected ',' or '%c', found %s", close, what_at(p, buf, sizeof buf));
    }
}

/* Any value at p->i (whitespace already skipped). *out is always left freeable. */
static int parse_value(parser *p, hy_json *out) {
    memset(out, 0, sizeof *out);
    out->pos = p->i;
    char buf[32];
    if (p->i >= p->len) return perr(p, p->i, "expected a value, found the end of the text");
    char c = p->s[p->i];
    if (c == '{' || c == '[') return parse_container(p, out);
    if (c == '"') {
        out->type = HY_JSON_STRING;
        return parse_string(p, &out->text, &out->text_len);
    }
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, out);
    static const struct { const char *word; hy_json_type t; bool b; } lits[] = {
        {"true", HY_JSON_BOOL, true}, {"false", HY_JSON_BOOL, false}, {"null", HY_JSON_NULL, false}};
    for (int k = 0; k < 3; k++) {
        size_t n = strlen(lits[k].word);
        if (p->len - p->i >= n && memcmp(p->s + p->i, lits[k].word, n) == 0) {
            out->type = lits[k].t;
            out->boolean = lits[k].b;
            p->i += n;
            return 0;
        }
    }
    return perr(p, p->i, "expected a value, found %s", what_at(p, buf, sizeof buf));
}

int hy_json_parse(const char *text, size_t len, hy_json *out) {
    parser p = {.s = text, .len = len};
    skip_ws(&p);
    int rc = parse_value(&p, out);
    if (rc == 0) {
        skip_ws(&p);
        if (p.i < p.len) {
            char buf[32];
            rc = perr(&p, p.i, "unexpected %s after the value", what_at(&p, buf, sizeof buf));
        }
    }
    if (rc < 0) {
        hy_json_free(out);
        return rc;
    }
    return 0;
}

void hy_json_free(hy_json *j) {
    if (!j) return;
    for (int k = 0; k < j->n; k++) {
        hy_json_free(&j->items[k]);
        if (j->keys) free(j->keys[k]);
    }
    free(j->items);
    free(j->keys);
    free(j->text);
    memset(j, 0, sizeof *j);
}

const hy_json *hy_json_get(const hy_json *j, const char *key) {
    if (!j || j->type != HY_JSON_OBJECT) return NULL;
    for (int k = 0; k < j->n; k++)
        if (strcmp(j->keys[k], key) == 0) return &j->items[k];
    return NULL;
}

bool hy_json_int(const hy_json *j, int64_t *out) {
    if (!j || j->type != HY_JSON_NUMBER || strpbrk(j->text, ".eE")) return false;
    errno = 0;
    char *end;
    long long v = strtoll(j->text, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

const char *hy_json_type_name(hy_json_type t) {
    switch (t) {
    case HY_JSON_NULL: return "null";
    case HY_JSON_BOOL: return "a boolean";
    case HY_JSON_NUMBER: return "a number";
    case HY_JSON_STRING: return "a string";
    case HY_JSON_ARRAY: return "an array";
    case HY_JSON_OBJECT: return "an object";
    }
    return "?";
}

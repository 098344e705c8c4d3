/* The growable string builder (core/strbuf.h): every append grows the buffer by doubling, and a
 * failed allocation is remembered rather than crashing, so callers check once, at hy_sb_take. */
#include "core/strbuf.h"
#include "core/error.h"
#include "core/fileio.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Makes room for n more bytes plus the terminating NUL. */
static bool sb_grow(hy_strbuf *b, size_t n) {
    if (b->failed) return false;
    if (b->len + n + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void hy_sb_addn(hy_strbuf *b, const char *s, size_t n) {
    if (!sb_grow(b, n)) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void hy_sb_add(hy_strbuf *b, const char *s) { hy_sb_addn(b, s, strlen(s)); }

void hy_sb_printf(hy_strbuf *b, const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n >= 0 && sb_grow(b, (size_t)n)) {
        vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    }
    va_end(ap2);
}

void hy_sb_json_string(hy_strbuf *b, const char *s) {
    hy_sb_addn(b, "\"", 1);
    for (const char *run = s; *s; s = run) {
        while (*run && *run != '"' && *run != '\\' && (unsigned char)*run >= 0x20) run++;
        hy_sb_addn(b, s, (size_t)(run - s));
        if (!*run) break;
        unsigned char c = (unsigned char)*run++;
        const char *e = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\t' ? "\\t"
                      : c == '\r' ? "\\r" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
        if (e) hy_sb_add(b, e);
        else hy_sb_printf(b, "\\u%04x", c);
    }
    hy_sb_addn(b, "\"", 1);
}

/* Sets the length to 0 without freeing, so a buffer reused per line or per evaluation keeps its
 * capacity. */
void hy_sb_clear(hy_strbuf *b) {
    b->len = 0;
    if (b->p) b->p[0] = 0;
}

char *hy_sb_take(hy_strbuf *b) {
    char *p = b->p;
    if (b->failed) {
        free(p);
        p = NULL;
        hy_fail_code(HY_ERR_NOMEM, "out of memory building a string");
    } else if (!p)
        p = calloc(1, 1);
    memset(b, 0, sizeof *b);
    return p;
}

void hy_sb_free(hy_strbuf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* The one check of a builder's allocation at the point where its text is written out. */
int hy_sb_write_file(const hy_strbuf *b, const char *path) {
    if (b->failed) return hy_fail_code(HY_ERR_NOMEM, "%s: out of memory building the text", path);
    return hy_write_file_atomic(path, b->p ? b->p : "", b->len);
}

/* Config numbers: one policy for every writer (see core/strbuf.h). */
void hy_format_float(float v, char *buf, size_t n) {
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, n, "%.*g", digits, (double)v);
        if (strtof(buf, NULL) == v && (float)strtod(buf, NULL) == v) return;
    }
}

/* Doubles in configs: the shortest exact text, integers in plain digits. */
void hy_format_double(double v, char *buf, size_t n) {
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, n, "%.0f", v);
        return;
    }
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(buf, n, "%.*g", digits, v);
        if (strtod(buf, NULL) == v) return;
    }
}

/* The strict JSON parse on top of jansson, with the project's nesting limit and located messages. */
#include "models/json.h"
#include "core/error.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Line and column (1-based, in bytes) of byte `at` of text, for messages. */
static void locate(const char *text, size_t at, int *line, int *col) {
    *line = 1, *col = 1;
    for (size_t k = 0; k < at; k++) {
        if (text[k] == '\n') ++*line, *col = 1;
        else ++*col;
    }
}

/* Refuses nesting deeper than HY_JSON_MAX_DEPTH, at the bracket that goes one level too deep: one
 * pass over the bytes that skips strings, so that jansson (whose own limit is 2048 levels) never
 * builds a tree deeper than the project allows. Brackets in malformed text are left to jansson. */
static int check_depth(const char *text, size_t len) {
    int depth = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '"') {   /* skip the string, escapes included */
            for (i++; i < len && text[i] != '"'; i++)
                if (text[i] == '\\') i++;
        } else if (c == '[' || c == '{') {
            if (++depth > HY_JSON_MAX_DEPTH) {
                int line, col;
                locate(text, i, &line, &col);
                return hy_fail("line %d, column %d (byte %zu): nesting deeper than %d levels", line, col, i,
                               HY_JSON_MAX_DEPTH);
            }
        } else if ((c == ']' || c == '}') && depth > 0)
            depth--;
    }
    return 0;
}

int hy_json_parse(const char *text, size_t len, json_t **out) {
    *out = NULL;
    int rc = check_depth(text, len);
    if (rc < 0) return rc;
    json_error_t e;
    /* jansson rejects trailing data unless told otherwise (JSON_DISABLE_EOF_CHECK), \u0000 unless
     * JSON_ALLOW_NUL, and a top-level scalar unless JSON_DECODE_ANY */
    *out = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e);
    if (*out) return 0;
    if (json_error_code(&e) == json_error_out_of_memory)
        return hy_fail_code(HY_ERR_NOMEM, "out of memory parsing JSON (%s)", e.text);
    return hy_fail("line %d, column %d (byte %d): %s", e.line, e.column, e.position, e.text);
}

const char *hy_json_type_name(const json_t *j) {
    switch (j ? json_typeof(j) : JSON_NULL) {
    case JSON_NULL: return "null";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_STRING: return "a string";
    case JSON_ARRAY: return "an array";
    case JSON_OBJECT: return "an object";
    }
    return "?";
}

const char *hy_json_number_text(const json_t *j, char *buf, size_t n) {
    if (json_is_integer(j)) {
        snprintf(buf, n, "%" PRId64, (int64_t)json_integer_value(j));
        return buf;
    }
    if (!json_is_real(j)) return hy_json_type_name(j);
    double v = json_real_value(j);
    for (int digits = 1; digits <= 17; digits++) {   /* the shortest text that reads back exactly */
        snprintf(buf, n, "%.*g", digits, v);
        if (strtod(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".eEni") && strlen(buf) + 2 < n) strcat(buf, ".0");   /* "2" -> "2.0"; not inf/nan */
    return buf;
}

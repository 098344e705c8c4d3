/* A small JSON reader (a DOM: parse once, then walk the tree), for safetensors headers and the
 * model config inside checkpoints (JSON is written with core/strbuf.h). The parser is strict
 * (RFC 8259: no trailing commas, no comments, no duplicate keys, no NUL in strings) and never
 * crashes on bad input: it returns a negative code with a message giving line, column and problem. */
#ifndef HY_MODELS_JSON_H
#define HY_MODELS_JSON_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { HY_JSON_NULL, HY_JSON_BOOL, HY_JSON_NUMBER, HY_JSON_STRING, HY_JSON_ARRAY, HY_JSON_OBJECT } hy_json_type;

typedef struct hy_json {
    hy_json_type type;
    bool boolean;            /* BOOL */
    double number;           /* NUMBER */
    char *text;              /* STRING: the decoded value (UTF-8); NUMBER: the literal as written */
    size_t text_len;
    int n;                   /* ARRAY / OBJECT: number of items */
    struct hy_json *items;   /* ARRAY / OBJECT: the values, in file order */
    char **keys;             /* OBJECT: keys[i] names items[i] */
    size_t pos;              /* byte offset of the value in the source text */
} hy_json;

/* Parses text[0..len) (one value, surrounded by optional whitespace) into *out. On error: *out is
 * empty (type NULL), the message is "line L, column C: PROBLEM", the return value negative. */
int hy_json_parse(const char *text, size_t len, hy_json *out);
void hy_json_free(hy_json *j);
/* The value of `key` in an OBJECT, or NULL (also when j is not an object). */
const hy_json *hy_json_get(const hy_json *j, const char *key);
/* True for a NUMBER written as an integer (no fraction or exponent) that fits int64. */
bool hy_json_int(const hy_json *j, int64_t *out);
const char *hy_json_type_name(hy_json_type t);   /* "a string", "an object", ... for messages */

#endif

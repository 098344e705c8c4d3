/* A small JSON reader (a DOM: parse once, then walk the tree) and a string builder with JSON
 * escaping, for safetensors headers and the model config inside checkpoints. The parser is strict
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

/* A growable, NUL-terminated string (malloc'd). A failed allocation sets `failed`; later appends
 * do nothing and hy_sb_take returns NULL. Zero-initialised struct = empty. */
typedef struct {
    char *p;
    size_t len, cap;
    bool failed;
} hy_strbuf;

void hy_sb_addn(hy_strbuf *b, const char *s, size_t n);
void hy_sb_add(hy_strbuf *b, const char *s);
void hy_sb_printf(hy_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a quoted JSON string ("a\"b\n" etc.; bytes >= 0x80 are copied as they are). */
void hy_sb_json_string(hy_strbuf *b, const char *s);
/* The string (malloc'd, caller frees with free()), or NULL after a failed allocation (hy_fail set).
 * The builder is left empty. */
char *hy_sb_take(hy_strbuf *b);
void hy_sb_free(hy_strbuf *b);

#endif

/* The project's one growable string builder (hy_strbuf), with JSON string quoting, used for every
 * text the program assembles in memory before writing it (CSVs, YAML and JSON configs, safetensors
 * headers, reports, gnuplot scripts); and the one policy for writing a float or double into a
 * config (the resolved YAML, the JSON inside checkpoints) so that it reads back exactly. */
#ifndef HY_CORE_STRBUF_H
#define HY_CORE_STRBUF_H
#include <stdbool.h>
#include <stddef.h>

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
/* Appends s as a quoted JSON string ("a\"b\n" etc.; bytes >= 0x80 are copied as they are). The
 * same text is a valid YAML double-quoted scalar. */
void hy_sb_json_string(hy_strbuf *b, const char *s);
/* Empties the string but keeps its memory (and a failed allocation stays failed). */
void hy_sb_clear(hy_strbuf *b);
/* The string (malloc'd, caller frees with free()), or NULL after a failed allocation (hy_fail set).
 * The builder is left empty. */
char *hy_sb_take(hy_strbuf *b);
void hy_sb_free(hy_strbuf *b);
/* Writes the text to `path` with hy_write_file_atomic (core/fileio.h), or returns HY_ERR_NOMEM
 * without writing when an append failed, so a short text never replaces a good file. */
int hy_sb_write_file(const hy_strbuf *b, const char *path);

/* Shortest "%.Ng" text (N = 1..9) of a float that reads back as exactly v both through strtof (the
 * checkpoint JSON reader) and through strtod and a cast to float (the YAML reader):
 * 0.001f -> "0.001", 10 -> "1e+01". n >= 16 is enough. */
void hy_format_float(float v, char *buf, size_t n);
/* Shortest text of a double that reads back (strtod) as exactly v; an integer below 1e15 is
 * written without exponent (4096 -> "4096", 0.1 -> "0.1"). n >= 32 is enough. */
void hy_format_double(double v, char *buf, size_t n);

#endif

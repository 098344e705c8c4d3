/* Reading JSON: safetensors headers and the model config inside checkpoints and states, parsed by
 * Debian's jansson (libjansson-dev) into its json_t tree; callers walk that tree with jansson's own
 * calls. This header adds only what every caller would otherwise repeat: the strict parse with the
 * project's limits and located messages, and the words and number text used in messages. JSON is
 * written with core/strbuf.h. */
#ifndef HY_MODELS_JSON_H
#define HY_MODELS_JSON_H
#include <jansson.h>
#include <stddef.h>

/* Arrays and objects nest at most this deep (the outermost is level 1). */
#define HY_JSON_MAX_DEPTH 128

/* Parses text[0..len) as one JSON value of any type, strictly (RFC 8259 and UTF-8: no trailing
 * commas, comments, leading zeros, lone surrogates, control characters, \u0000, integers beyond
 * int64 or numbers beyond double; duplicate keys refused; nothing but whitespace after the value;
 * a NUL byte is an error, not the end; nesting at most HY_JSON_MAX_DEPTH, checked before the tree
 * is built). Returns 0 with *out (release with json_decref), or a negative code with *out NULL
 * and the message "line L, column C (byte B): PROBLEM". */
int hy_json_parse(const char *text, size_t len, json_t **out);
/* "null", "a boolean", "a number", "a string", "an array", "an object", for messages. */
const char *hy_json_type_name(const json_t *j);
/* A number as text for messages and option values: an integer as written, a real in the fewest
 * digits that read back to the same double, with ".0" when they would look like an integer (so a
 * real 2.0 never passes for the integer 2). Anything else: its type name. */
const char *hy_json_number_text(const json_t *j, char *buf, size_t n);

#endif

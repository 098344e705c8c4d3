/* A small YAML node tree for the config loader (experiments/config*.c), built with libyaml.
 * Every node remembers where it came from: the 1-based line and column of its value and of its
 * key in the file, or the --set override that created it, and its key path
 * ("model.layers[3].mixer.n_heads") so every error can name both. Anchors, aliases, tags and
 * duplicate keys are refused while parsing. Also the typed scalar readers shared by the loader:
 * each reports `FILE:LINE:COL: KEY.PATH: problem` (or `--set KEY.PATH=VALUE: problem`). */
#ifndef HY_EXPERIMENTS_YAML_TREE_H
#define HY_EXPERIMENTS_YAML_TREE_H
#include "models/model.h"
#include <stdbool.h>
#include <stddef.h>

typedef enum { YT_SCALAR, YT_MAP, YT_SEQ } yt_kind;

/* Maps and lists nest at most this deep in a file (the root map is level 1); deeper is a located
 * error, as models/json.c refuses JSON nested deeper than its limit. Parsing recurses per level. */
#define YT_MAX_DEPTH 64

typedef struct yt_node {
    yt_kind kind;
    char *key;                 /* key in the parent map (NULL for list items and the root) */
    int kline, kcol;           /* where the key is (map children), else = line, col */
    int line, col;             /* where the value starts */
    int set;                   /* -1: from the file; else index of the --set override that made it */
    bool plain;                /* scalar written without quotes (overrides are plain) */
    char *text;                /* scalar text */
    struct yt_node **kids;     /* map values (with key) or list items, in file order */
    int n, cap;
    char *path;                /* key path, "" for the root */
    const char *file;          /* the file it came from when not the doc's (yt_clone), else NULL */
} yt_node;

typedef struct {
    const char *file;          /* for messages */
    const char *const *sets;   /* the overrides, for messages */
    int n_sets;
    yt_node *root;             /* a map, after yt_parse_file */
} yt_doc;

/* Parse `file` into d->root (an empty file gives an empty map). */
int yt_parse_file(yt_doc *d, const char *file);
/* The same from YAML text in memory (hy_model_config_from_yaml); messages name d->file. */
int yt_parse_string(yt_doc *d, const char *text);
/* Apply override d->sets[i] ("a.b[2].c=value"): replaces or creates a plain scalar, or a list of
 * plain scalars when the value is a flow list ("sweep.lr=[0.003, 0.006]"). */
int yt_apply_set(yt_doc *d, int i);
void yt_free(yt_doc *d);

/* Child of a map by key, NULL when absent (or when m is not a map). */
const yt_node *yt_get(const yt_node *m, const char *key);
/* Records `WHERE: PATH: problem` and returns HY_ERR_CONFIG. WHERE is the override or
 * FILE:LINE:COL of n's key (at_key) or value; path NULL = n's own path. */
int yt_fail(const yt_doc *d, const yt_node *n, bool at_key, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* "'four'", "\"4\" (quoted)", "a map", "a list", "null": what a node holds, for messages. */
const char *yt_describe(const yt_node *n, char *buf, size_t len);
bool yt_is_null(const yt_node *n);   /* plain "", "~", "null" */

/* Errors unless n is a map whose keys are all in `allowed` (NULL-terminated). */
int yt_check_map(const yt_doc *d, const yt_node *n, const char *const *allowed);
int yt_read_int(const yt_doc *d, const yt_node *n, long long min, long long max, long long *out);
int yt_read_u64(const yt_doc *d, const yt_node *n, unsigned long long *out);
/* A finite number in [min, max]; open_min / open_max make that end exclusive. */
int yt_read_num(const yt_doc *d, const yt_node *n, double min, double max, bool open_min, bool open_max,
                double *out);
int yt_read_bool(const yt_doc *d, const yt_node *n, bool *out);
/* A non-empty string that fits in `len` bytes. */
int yt_read_str(const yt_doc *d, const yt_node *n, char *out, size_t len);
/* One of `words` (NULL-terminated); *out = its index. */
int yt_read_enum(const yt_doc *d, const yt_node *n, const char *const *words, int *out);
/* Parse option `idx` of ops from scalar n into o (hy_opt_parse), message located at n. */
int yt_read_opt(const yt_doc *d, const yt_node *n, const hy_block_ops *ops, hy_opts *o, int idx);

/* ---- building trees (experiment configs compose one run's tree from several files) ---- */
/* Deep copy of n; nodes without a file get `file` (NULL: keep the doc's). Key path of the copy:
 * n's path with its first `strip` characters replaced by `prefix` (NULL: unchanged). */
yt_node *yt_clone(const yt_node *n, const char *file, size_t strip, const char *prefix);
/* A new empty map / plain scalar, located where `at` is (at may be NULL: no location). */
yt_node *yt_new_map(const char *key, const char *path, const yt_node *at);
yt_node *yt_new_scalar(const char *key, const char *text, const char *path, const yt_node *at);
/* Puts kid into map m under kid->key, replacing (and freeing) an entry with that key. */
int yt_put(yt_node *m, yt_node *kid);
void yt_node_free(yt_node *n);

/* The model part of the schema (experiments/config_layers.c): `model.blocks` and `model.layers`
 * of the map `model` into m (d_model, n_layers already set); options resolved, kinds checked. */
int hy_config_layers(const yt_doc *d, const yt_node *model, hy_model_config *m);

#endif

/* The YAML node tree of the config loader: libyaml events -> yt_node, --set overrides, and the
 * typed scalar readers that turn a node into a value or a located error message. */
#include "experiments/yaml_tree.h"
#include "core/error.h"
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

/* ---- nodes ---- */

/* A new node of `kind` at (line, col) with key path `path` (copied); NULL when out of memory. */
static yt_node *node_new(yt_kind kind, int line, int col, int set, const char *path) {
    yt_node *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->kind = kind;
    n->line = n->kline = line;
    n->col = n->kcol = col;
    n->set = set;
    n->plain = true;
    n->path = strdup(path);
    if (!n->path) {
        free(n);
        return NULL;
    }
    return n;
}

/* Frees n and everything below it. */
static void node_free(yt_node *n) {
    if (!n) return;
    for (int i = 0; i < n->n; i++) node_free(n->kids[i]);
    free(n->kids);
    free(n->key);
    free(n->text);
    free(n->path);
    free(n);
}

/* Appends child k to the map or list n. */
static int node_add(yt_node *n, yt_node *k) {
    if (n->n == n->cap) {
        int cap = n->cap ? 2 * n->cap : 8;
        yt_node **kids = realloc(n->kids, (size_t)cap * sizeof *kids);
        if (!kids) return hy_fail_code(HY_ERR_NOMEM, "config: out of memory");
        n->kids = kids;
        n->cap = cap;
    }
    n->kids[n->n++] = k;
    return 0;
}

/* "parent.key" (or "key" at the root) into out. */
static void child_path(char *out, size_t len, const char *parent, const char *key) {
    snprintf(out, len, "%s%s%s", parent, *parent ? "." : "", key);
}

const yt_node *yt_get(const yt_node *m, const char *key) {
    if (!m || m->kind != YT_MAP) return NULL;
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->kids[i]->key, key) == 0) return m->kids[i];
    return NULL;
}

/* ---- messages ---- */

int yt_fail(const yt_doc *d, const yt_node *n, bool at_key, const char *path, const char *fmt, ...) {
    char problem[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(problem, sizeof problem, fmt, ap);
    va_end(ap);
    if (!path) path = n->path;
    if (n->set >= 0 && n->set < d->n_sets) return hy_fail_code(HY_ERR_CONFIG, "--set %s: %s", d->sets[n->set], problem);
    int line = at_key ? n->kline : n->line, col = at_key ? n->kcol : n->col;
    const char *file = n->file ? n->file : d->file;
    if (line <= 0) return hy_fail_code(HY_ERR_CONFIG, "%s: %s: %s", file, path, problem);
    if (!*path) return hy_fail_code(HY_ERR_CONFIG, "%s:%d:%d: %s", file, line, col, problem);
    return hy_fail_code(HY_ERR_CONFIG, "%s:%d:%d: %s: %s", file, line, col, path, problem);
}

bool yt_is_null(const yt_node *n) {
    if (n->kind != YT_SCALAR || !n->plain) return false;
    const char *t = n->text;
    return !*t || !strcmp(t, "~") || !strcmp(t, "null") || !strcmp(t, "Null") || !strcmp(t, "NULL");
}

const char *yt_describe(const yt_node *n, char *buf, size_t len) {
    if (n->kind == YT_MAP) snprintf(buf, len, "a map");
    else if (n->kind == YT_SEQ) snprintf(buf, len, "a list");
    else if (yt_is_null(n)) snprintf(buf, len, "null");
    else if (n->plain) snprintf(buf, len, "'%.80s'", n->text);
    else snprintf(buf, len, "the quoted string \"%.80s\"", n->text);
    return buf;
}

/* ---- parsing ---- */

typedef struct {
    yt_doc *d;
    yaml_parser_t p;
    int depth;   /* maps and lists open around the node being parsed */
} parse_ctx;

/* Next event, or a located syntax error from libyaml. */
static int next_event(parse_ctx *c, yaml_event_t *ev) {
    if (yaml_parser_parse(&c->p, ev)) return 0;
    const yaml_mark_t *m = &c->p.problem_mark;
    if (c->p.error == YAML_READER_ERROR)   /* unreadable file, bad UTF-8: no line/column */
        return hy_fail_code(HY_ERR_CONFIG, "%s: cannot read the config: %s (at byte %zu)", c->d->file,
                            c->p.problem ? c->p.problem : "read error", c->p.problem_offset);
    if (c->p.context)
        return hy_fail_code(HY_ERR_CONFIG, "%s:%zu:%zu: YAML syntax error: %s (%s at line %zu, column %zu)", c->d->file,
                            m->line + 1, m->column + 1, c->p.problem ? c->p.problem : "invalid YAML", c->p.context,
                            c->p.context_mark.line + 1, c->p.context_mark.column + 1);
    return hy_fail_code(HY_ERR_CONFIG, "%s:%zu:%zu: YAML syntax error: %s", c->d->file, m->line + 1, m->column + 1,
                        c->p.problem ? c->p.problem : "invalid YAML");
}

/* Refuses anchors and tags (this loader keeps YAML to plain maps, lists and scalars). */
static int check_plain_yaml(parse_ctx *c, const yaml_event_t *ev, const char *path) {
    const yaml_char_t *anchor = NULL, *tag = NULL;
    if (ev->type == YAML_SCALAR_EVENT) anchor = ev->data.scalar.anchor, tag = ev->data.scalar.tag;
    if (ev->type == YAML_MAPPING_START_EVENT) anchor = ev->data.mapping_start.anchor, tag = ev->data.mapping_start.tag;
    if (ev->type == YAML_SEQUENCE_START_EVENT)
        anchor = ev->data.sequence_start.anchor, tag = ev->data.sequence_start.tag;
    const char *what = ev->type == YAML_ALIAS_EVENT ? "aliases (*name) are not supported"
                       : anchor                     ? "anchors (&name) are not supported"
                       : tag                        ? "tags (!name) are not supported"
                                                    : NULL;
    if (!what) return 0;
    return hy_fail_code(HY_ERR_CONFIG, "%s:%zu:%zu: %s%s%s", c->d->file, ev->start_mark.line + 1,
                        ev->start_mark.column + 1, path, *path ? ": " : "", what);
}

static int parse_node(parse_ctx *c, yaml_event_t *ev, const char *path, yt_node **out);

/* The entries of a map whose MAPPING_START was just read, until MAPPING_END. */
static int parse_map(parse_ctx *c, yt_node *m) {
    for (;;) {
        yaml_event_t kev, vev;
        int rc = next_event(c, &kev);
        if (rc < 0) return rc;
        if (kev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&kev);
            return 0;
        }
        if ((rc = check_plain_yaml(c, &kev, m->path)) < 0) {
            yaml_event_delete(&kev);
            return rc;
        }
        int kline = (int)kev.start_mark.line + 1, kcol = (int)kev.start_mark.column + 1;
        if (kev.type != YAML_SCALAR_EVENT) {
            yaml_event_delete(&kev);
            return hy_fail_code(HY_ERR_CONFIG, "%s:%d:%d: %s%sa key must be a plain word, not a map or a list",
                                c->d->file, kline, kcol, m->path, *m->path ? ": " : "");
        }
        char *key = strdup((const char *)kev.data.scalar.value);
        yaml_event_delete(&kev);
        if (!key) return hy_fail_code(HY_ERR_NOMEM, "config: out of memory");
        char path[1024];
        child_path(path, sizeof path, m->path, key);
        const yt_node *dup = yt_get(m, key);
        if (dup) {
            free(key);
            return hy_fail_code(HY_ERR_CONFIG, "%s:%d:%d: %s: duplicate key (first given at line %d, column %d)",
                                c->d->file, kline, kcol, path, dup->kline, dup->kcol);
        }
        yt_node *v = NULL;
        if ((rc = next_event(c, &vev)) < 0 || (rc = parse_node(c, &vev, path, &v)) < 0 || (rc = node_add(m, v)) < 0) {
            free(key);
            node_free(v);
            return rc;
        }
        v->key = key;
        v->kline = kline;
        v->kcol = kcol;
    }
}

/* The items of a list whose SEQUENCE_START was just read, until SEQUENCE_END. */
static int parse_seq(parse_ctx *c, yt_node *s) {
    for (;;) {
        yaml_event_t ev;
        int rc = next_event(c, &ev);
        if (rc < 0) return rc;
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            return 0;
        }
        char path[1024];
        snprintf(path, sizeof path, "%s[%d]", s->path, s->n);
        yt_node *v = NULL;
        if ((rc = parse_node(c, &ev, path, &v)) < 0 || (rc = node_add(s, v)) < 0) {
            node_free(v);
            return rc;
        }
    }
}

/* The node starting with event *ev (consumed and deleted here) and everything below it. */
static int parse_node(parse_ctx *c, yaml_event_t *ev, const char *path, yt_node **out) {
    *out = NULL;
    int rc = check_plain_yaml(c, ev, path);
    int line = (int)ev->start_mark.line + 1, col = (int)ev->start_mark.column + 1;
    yaml_event_type_t type = ev->type;
    yt_node *n = NULL;
    if (rc == 0) {
        yt_kind kind = type == YAML_MAPPING_START_EVENT ? YT_MAP : type == YAML_SEQUENCE_START_EVENT ? YT_SEQ : YT_SCALAR;
        if (type != YAML_SCALAR_EVENT && kind == YT_SCALAR)
            rc = hy_fail_code(HY_ERR_CONFIG, "%s:%d:%d: unexpected YAML event %d", c->d->file, line, col, (int)type);
        else if (!(n = node_new(kind, line, col, -1, path)))
            rc = hy_fail_code(HY_ERR_NOMEM, "config: out of memory");
        else if (kind == YT_SCALAR) {
            n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
            n->text = strdup((const char *)ev->data.scalar.value);
            if (!n->text) rc = hy_fail_code(HY_ERR_NOMEM, "config: out of memory");
        }
    }
    yaml_event_delete(ev);
    bool nests = type == YAML_MAPPING_START_EVENT || type == YAML_SEQUENCE_START_EVENT;
    if (rc == 0 && nests && c->depth >= YT_MAX_DEPTH)
        rc = hy_fail_code(HY_ERR_CONFIG, "%s:%d:%d: %s%smaps and lists nested deeper than %d levels", c->d->file, line,
                          col, path, *path ? ": " : "", YT_MAX_DEPTH);
    else if (rc == 0 && nests) {
        c->depth++;
        rc = type == YAML_MAPPING_START_EVENT ? parse_map(c, n) : parse_seq(c, n);
        c->depth--;
    }
    if (rc < 0) {
        node_free(n);
        return rc;
    }
    *out = n;
    return 0;
}

/* Reads the one document of the stream into d->root. */
static int parse_stream(parse_ctx *c) {
    yaml_event_t ev;
    int rc = next_event(c, &ev);   /* STREAM_START */
    if (rc < 0) return rc;
    yaml_event_delete(&ev);
    if ((rc = next_event(c, &ev)) < 0) return rc;
    if (ev.type == YAML_STREAM_END_EVENT) {   /* empty file */
        yaml_event_delete(&ev);
        c->d->root = node_new(YT_MAP, 1, 1, -1, "");
        return c->d->root ? 0 : hy_fail_code(HY_ERR_NOMEM, "config: out of memory");
    }
    yaml_event_delete(&ev);   /* DOCUMENT_START */
    if ((rc = next_event(c, &ev)) < 0 || (rc = parse_node(c, &ev, "", &c->d->root)) < 0) return rc;
    yt_node *r = c->d->root;
    if (r->kind == YT_SCALAR && yt_is_null(r)) {   /* a document of comments only */
        r->kind = YT_MAP;
        free(r->text);
        r->text = NULL;
    }
    if (r->kind != YT_MAP) {
        char what[128];
        return hy_fail_code(HY_ERR_CONFIG, "%s:%d:%d: the top level must be a map of keys, got %s", c->d->file, r->line,
                            r->col, yt_describe(r, what, sizeof what));
    }
    if ((rc = next_event(c, &ev)) < 0) return rc;   /* DOCUMENT_END */
    yaml_event_delete(&ev);
    if ((rc = next_event(c, &ev)) < 0) return rc;
    int line = (int)ev.start_mark.line + 1, col = (int)ev.start_mark.column + 1;
    bool more = ev.type != YAML_STREAM_END_EVENT;
    yaml_event_delete(&ev);
    if (more)
        return hy_fail_code(HY_ERR_CONFIG, "%s:%d:%d: a config file holds one YAML document, found a second", c->d->file,
                            line, col);
    return 0;
}

/* Runs the parser over the input already set on c->p (a file or a string) into d->root. */
static int parse_input(parse_ctx *c) {
    int rc = parse_stream(c);
    yaml_parser_delete(&c->p);
    if (rc < 0) {
        node_free(c->d->root);
        c->d->root = NULL;
    }
    return rc;
}

int yt_parse_file(yt_doc *d, const char *file) {
    d->root = NULL;
    FILE *f = fopen(file, "rb");
    if (!f) return hy_fail_code(HY_ERR_CONFIG, "%s: cannot open config: %s", file, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        return hy_fail_code(HY_ERR_CONFIG, "%s: is a folder, not a config file", file);
    }
    parse_ctx c = {.d = d};
    if (!yaml_parser_initialize(&c.p)) {
        fclose(f);
        return hy_fail_code(HY_ERR_NOMEM, "config: cannot initialise the YAML parser");
    }
    yaml_parser_set_input_file(&c.p, f);
    int rc = parse_input(&c);
    fclose(f);
    return rc;
}

int yt_parse_string(yt_doc *d, const char *text) {
    d->root = NULL;
    parse_ctx c = {.d = d};
    if (!yaml_parser_initialize(&c.p)) return hy_fail_code(HY_ERR_NOMEM, "config: cannot initialise the YAML parser");
    yaml_parser_set_input_string(&c.p, (const unsigned char *)text, strlen(text));
    return parse_input(&c);
}

void yt_free(yt_doc *d) {
    node_free(d->root);
    d->root = NULL;
}

/* ---- overrides ---- */

/* Fills the sequence node `seq` with the items of a flow list "[a, b, c]" given to --set `s` (index i):
 * plain scalars separated by commas, spaces around them dropped; "[]" and empty items are errors. */
static int set_list_items(yt_node *seq, const char *value, int i, const char *s) {
    const char *p = value + 1, *end = value + strlen(value) - 1;   /* between the brackets */
    if (p == end) return hy_fail_code(HY_ERR_CONFIG, "--set %s: an empty list (give at least one value)", s);
    for (;;) {
        while (p < end && (*p == ' ' || *p == '\t')) p++;
        const char *q = p;
        while (q < end && *q != ',') q++;
        const char *e = q;
        while (e > p && (e[-1] == ' ' || e[-1] == '\t')) e--;
        if (e == p) return hy_fail_code(HY_ERR_CONFIG, "--set %s: empty item in the list (write [a, b, c])", s);
        for (const char *c = p; c < e; c++)
            if (*c == '[' || *c == ']' || *c == '{' || *c == '}')
                return hy_fail_code(HY_ERR_CONFIG, "--set %s: a list given to --set holds plain values only", s);
        char path[1100];
        snprintf(path, sizeof path, "%s[%d]", seq->path, seq->n);
        yt_node *k = node_new(YT_SCALAR, 0, 0, i, path);
        if (!k || !(k->text = strndup(p, (size_t)(e - p)))) {
            node_free(k);
            return hy_fail_code(HY_ERR_NOMEM, "config: out of memory");
        }
        if (node_add(seq, k) < 0) {
            node_free(k);
            return HY_ERR_NOMEM;
        }
        if (q == end) return 0;
        p = q + 1;
    }
}

int yt_apply_set(yt_doc *d, int i) {
    const char *s = d->sets[i], *eq = strchr(s, '=');
    if (!eq || eq == s) return hy_fail_code(HY_ERR_CONFIG, "--set %s: expected KEY.PATH=VALUE", s);
    char keys[512];
    size_t klen = 0;
    for (const char *p = s; p < eq; p++) {   /* a[2].b -> a.2.b */
        if (*p == ']') continue;
        if (klen + 1 >= sizeof keys) return hy_fail_code(HY_ERR_CONFIG, "--set %s: key path too long", s);
        keys[klen++] = *p == '[' ? '.' : *p;
    }
    keys[klen] = 0;
    yt_node *cur = d->root;
    for (char *seg = keys, *dot; seg; seg = dot ? dot + 1 : NULL) {
        dot = strchr(seg, '.');
        if (dot) *dot = 0;
        bool last = dot == NULL;
        if (!*seg) return hy_fail_code(HY_ERR_CONFIG, "--set %s: empty key in the key path", s);
        int pos = -1;
        char path[1024];
        if (cur->kind == YT_MAP) {
            for (int k = 0; k < cur->n && pos < 0; k++)
                if (strcmp(cur->kids[k]->key, seg) == 0) pos = k;
            child_path(path, sizeof path, cur->path, seg);
        } else if (cur->kind == YT_SEQ) {
            char *end;
            long idx = strtol(seg, &end, 10);
            if (*end || idx < 0 || idx >= cur->n)
                return hy_fail_code(HY_ERR_CONFIG, "--set %s: %s is a list of %d entries; '%s' is not an index 0..%d", s,
                                    cur->path, cur->n, seg, cur->n - 1);
            pos = (int)idx;
            snprintf(path, sizeof path, "%s[%d]", cur->path, pos);
        } else {
            char what[160];
            if (cur->set >= 0)
                return hy_fail_code(HY_ERR_CONFIG, "--set %s: %s was set to a value by an earlier --set, not a map", s,
                                    cur->path);
            return hy_fail_code(HY_ERR_CONFIG, "--set %s: %s is %s at %s:%d:%d, not a map", s, cur->path,
                                yt_describe(cur, what, sizeof what), d->file, cur->line, cur->col);
        }
        yt_node *next = pos >= 0 ? cur->kids[pos] : NULL;
        if (!last && next) {
            cur = next;
            continue;
        }
        const char *value = eq + 1;
        size_t vlen = strlen(value);
        bool list = last && vlen >= 2 && value[0] == '[' && value[vlen - 1] == ']';
        yt_node *n = node_new(!last ? YT_MAP : list ? YT_SEQ : YT_SCALAR, 0, 0, i, path);
        if (!n || (last && !list && !(n->text = strdup(value)))) {
            node_free(n);
            return hy_fail_code(HY_ERR_NOMEM, "config: out of memory");
        }
        if (list) {
            int rc = set_list_items(n, value, i, s);
            if (rc < 0) {
                node_free(n);
                return rc;
            }
        }
        if (cur->kind == YT_MAP && !(n->key = strdup(seg))) {
            node_free(n);
            return hy_fail_code(HY_ERR_NOMEM, "config: out of memory");
        }
        if (next) {   /* replace what the file (or an earlier override) said */
            cur->kids[pos] = n;
            node_free(next);
        } else if (node_add(cur, n) < 0) {
            node_free(n);
            return HY_ERR_NOMEM;
        }
        cur = n;
    }
    if (cur == d->root) return hy_fail_code(HY_ERR_CONFIG, "--set %s: expected KEY.PATH=VALUE", s);
    return 0;
}

/* ---- building trees ---- */

void yt_node_free(yt_node *n) { node_free(n); }

yt_node *yt_clone(const yt_node *n, const char *file, size_t strip, const char *prefix) {
    char path[1024];
    if (prefix) snprintf(path, sizeof path, "%s%s", prefix, strlen(n->path) >= strip ? n->path + strip : "");
    else snprintf(path, sizeof path, "%s", n->path);
    yt_node *c = node_new(n->kind, n->line, n->col, n->set, path);
    if (!c) return NULL;
    c->kline = n->kline, c->kcol = n->kcol, c->plain = n->plain;
    c->file = n->file ? n->file : file;
    if ((n->key && !(c->key = strdup(n->key))) || (n->text && !(c->text = strdup(n->text)))) {
        node_free(c);
        return NULL;
    }
    for (int i = 0; i < n->n; i++) {
        yt_node *k = yt_clone(n->kids[i], file, strip, prefix);
        if (!k || node_add(c, k) < 0) {
            node_free(k);
            node_free(c);
            return NULL;
        }
    }
    return c;
}

/* A node of `kind` placed where `at` is (or nowhere). */
static yt_node *new_at(yt_kind kind, const char *key, const char *path, const yt_node *at) {
    yt_node *n = node_new(kind, at ? at->line : 0, at ? at->col : 0, at ? at->set : -1, path);
    if (!n) return NULL;
    if (at) n->kline = at->kline, n->kcol = at->kcol, n->file = at->file;
    if (key && !(n->key = strdup(key))) {
        node_free(n);
        return NULL;
    }
    return n;
}

yt_node *yt_new_map(const char *key, const char *path, const yt_node *at) { return new_at(YT_MAP, key, path, at); }

yt_node *yt_new_scalar(const char *key, const char *text, const char *path, const yt_node *at) {
    yt_node *n = new_at(YT_SCALAR, key, path, at);
    if (n && !(n->text = strdup(text))) {
        node_free(n);
        return NULL;
    }
    return n;
}

int yt_put(yt_node *m, yt_node *kid) {
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->kids[i]->key, kid->key) == 0) {
            node_free(m->kids[i]);
            m->kids[i] = kid;
            return 0;
        }
    return node_add(m, kid);
}

/* ---- typed readers ---- */

int yt_check_map(const yt_doc *d, const yt_node *n, const char *const *allowed) {
    char what[160];
    if (n->kind != YT_MAP) return yt_fail(d, n, false, NULL, "must be a map, got %s", yt_describe(n, what, sizeof what));
    for (int i = 0; i < n->n; i++) {
        bool ok = false;
        for (int k = 0; allowed[k] && !ok; k++) ok = strcmp(n->kids[i]->key, allowed[k]) == 0;
        if (ok) continue;
        char list[512] = "";
        for (int k = 0; allowed[k]; k++) {
            strncat(list, k ? ", " : "", sizeof list - strlen(list) - 1);
            strncat(list, allowed[k], sizeof list - strlen(list) - 1);
        }
        return yt_fail(d, n->kids[i], true, NULL, "unknown key '%.100s' (allowed: %s)", n->kids[i]->key, list);
    }
    return 0;
}

/* The scalar text of a plain (unquoted) scalar, or NULL. */
static const char *plain_text(const yt_node *n) {
    return n->kind == YT_SCALAR && n->plain && !yt_is_null(n) ? n->text : NULL;
}

/* Integral value of the text: decimal, or a number such as 2e6 that is exactly an integer. */
static bool parse_integer(const char *t, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(t, &end, 10);
    if (end != t && !*end && !errno) {
        *out = v;
        return true;
    }
    errno = 0;
    double x = strtod(t, &end);
    if (end == t || *end || errno || !isfinite(x) || x != floor(x) || fabs(x) > 9007199254740992.0) return false;
    *out = (long long)x;
    return true;
}

int yt_read_int(const yt_doc *d, const yt_node *n, long long min, long long max, long long *out) {
    char what[160], range[96];
    if (max == LLONG_MAX) snprintf(range, sizeof range, "an integer >= %lld", min);
    else snprintf(range, sizeof range, "an integer in [%lld, %lld]", min, max);
    const char *t = plain_text(n);
    long long v;
    if (!t || !parse_integer(t, &v))
        return yt_fail(d, n, false, NULL, "must be %s, got %s", range, yt_describe(n, what, sizeof what));
    if (v < min || v > max) return yt_fail(d, n, false, NULL, "must be %s, got %s", range, t);
    *out = v;
    return 0;
}

int yt_read_u64(const yt_doc *d, const yt_node *n, unsigned long long *out) {
    char what[160];
    const char *t = plain_text(n);
    char *end = NULL;
    errno = 0;
    unsigned long long v = t && *t != '-' ? strtoull(t, &end, 10) : 0;
    if (!t || *t == '-' || end == t || *end || errno)
        return yt_fail(d, n, false, NULL, "must be an integer in [0, %llu], got %s", ULLONG_MAX,
                       yt_describe(n, what, sizeof what));
    *out = v;
    return 0;
}

int yt_read_num(const yt_doc *d, const yt_node *n, double min, double max, bool open_min, bool open_max,
                double *out) {
    char what[160], range[96];
    if (isinf(max)) snprintf(range, sizeof range, "a number %s %g", open_min ? ">" : ">=", min);
    else
        snprintf(range, sizeof range, "a number in %c%g, %g%c", open_min ? '(' : '[', min, max, open_max ? ')' : ']');
    const char *t = plain_text(n);
    char *end = NULL;
    errno = 0;
    double v = t ? strtod(t, &end) : 0;
    if (!t || end == t || *end || errno || !isfinite(v))
        return yt_fail(d, n, false, NULL, "must be %s, got %s", range, yt_describe(n, what, sizeof what));
    if (v < min || v > max || (open_min && v == min) || (open_max && v == max))
        return yt_fail(d, n, false, NULL, "must be %s, got %s", range, t);
    *out = v;
    return 0;
}

int yt_read_bool(const yt_doc *d, const yt_node *n, bool *out) {
    char what[160];
    const char *t = plain_text(n);
    if (t && (!strcmp(t, "true") || !strcmp(t, "True") || !strcmp(t, "TRUE"))) *out = true;
    else if (t && (!strcmp(t, "false") || !strcmp(t, "False") || !strcmp(t, "FALSE"))) *out = false;
    else return yt_fail(d, n, false, NULL, "must be true or false, got %s", yt_describe(n, what, sizeof what));
    return 0;
}

int yt_read_str(const yt_doc *d, const yt_node *n, char *out, size_t len) {
    char what[160];
    if (n->kind != YT_SCALAR || yt_is_null(n))
        return yt_fail(d, n, false, NULL, "must be a string, got %s", yt_describe(n, what, sizeof what));
    if (!*n->text) return yt_fail(d, n, false, NULL, "must not be empty");
    if (strlen(n->text) >= len) return yt_fail(d, n, false, NULL, "is longer than %zu characters", len - 1);
    snprintf(out, len, "%s", n->text);
    return 0;
}

int yt_read_enum(const yt_doc *d, const yt_node *n, const char *const *words, int *out) {
    char what[160], list[256] = "";
    for (int k = 0; words[k]; k++) {
        if (n->kind == YT_SCALAR && strcmp(n->text, words[k]) == 0) {
            *out = k;
            return 0;
        }
        strncat(list, k ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, words[k], sizeof list - strlen(list) - 1);
    }
    return yt_fail(d, n, false, NULL, "must be one of %s; got %s", list, yt_describe(n, what, sizeof what));
}

int yt_read_opt(const yt_doc *d, const yt_node *n, const hy_block_ops *ops, hy_opts *o, int idx) {
    char what[160], msg[512];
    if (n->kind != YT_SCALAR || (!n->plain && strcmp(n->text, "auto") != 0))
        return yt_fail(d, n, false, NULL, "must be a number, true, false, null or auto, got %s",
                       yt_describe(n, what, sizeof what));
    if (hy_block_option_parse(ops, o, idx, yt_is_null(n) ? "null" : n->text, msg, sizeof msg) == 0) return 0;
    return yt_fail(d, n, false, NULL, "%s", msg);
}

/* Training data (see data.h): which files, what they hold, the two splits as streams of spans,
 * random windows, the vocabulary check, and the llm.c shard writer. */
#include "experiments/data.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

const char *const hy_data_format_words[] = {"auto", "bytes", "tokens", "llmc", "nanogpt", NULL};

const char *hy_data_format_name(hy_data_format f) {
    return f >= HY_DATA_AUTO && f <= HY_DATA_NANOGPT ? hy_data_format_words[f] : "?";
}

/* ---- which files ---- */

typedef struct {
    char **paths;
    int n, cap;
} path_list;

static int path_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Appends a copy of `path` to pl. */
static int add_path(path_list *pl, const char *path) {
    if (pl->n == pl->cap) {
        pl->cap = pl->cap ? 2 * pl->cap : 64;
        char **np = realloc(pl->paths, sizeof(char *) * (size_t)pl->cap);
        if (!np) return HY_ERR_NOMEM;
        pl->paths = np;
    }
    return (pl->paths[pl->n++] = strdup(path)) ? 0 : HY_ERR_NOMEM;
}

static void free_paths(path_list *pl) {
    for (int i = 0; i < pl->n; i++) free(pl->paths[i]);
    free(pl->paths);
    memset(pl, 0, sizeof *pl);
}

/* Collects regular files below `dir` (recursively; symlinks and names starting with '.' skipped). */
static int collect(path_list *pl, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return hy_fail_code(HY_ERR_IO, "%s: cannot open folder: %s", dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(path, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) rc = collect(pl, path);
        else if (S_ISREG(st.st_mode)) rc = add_path(pl, path);
    }
    closedir(d);
    return rc;
}

/* The N of a dpkg list file name ".../libpython3.N-...", or -1. */
static int py_minor(const char *list) {
    const char *p = strstr(list, "libpython3.");
    return p ? atoi(p + strlen("libpython3.")) : -1;
}

/* The default corpus: the Python standard library's source, i.e. the .py files below /usr/lib
 * that dpkg lists for Debian's libpython3.N-minimal and libpython3.N-stdlib (the newest N
 * installed), sorted by path. Long files with long-range structure (imports, names and
 * indentation reused far apart), and the same bytes on every machine with that Python. */
static int default_corpus_files(path_list *pl) {
    glob_t g;
    if (glob("/var/lib/dpkg/info/libpython3.*-stdlib*.list", 0, NULL, &g) != 0)
        return hy_fail_code(HY_ERR_IO, "the default corpus (the Python standard library's source, Debian package "
                                       "libpython3-stdlib) is not installed: run `make deps` as root, or set data.corpus");
    int best = -1;
    for (size_t i = 0; i < g.gl_pathc; i++) best = py_minor(g.gl_pathv[i]) > best ? py_minor(g.gl_pathv[i]) : best;
    globfree(&g);
    int rc = 0;
    static const char *const parts[] = {"minimal", "stdlib"};
    for (int k = 0; k < 2 && rc == 0; k++) {
        char pattern[128];
        snprintf(pattern, sizeof pattern, "/var/lib/dpkg/info/libpython3.%d-%s*.list", best, parts[k]);
        if (glob(pattern, 0, NULL, &g) != 0) continue;
        for (size_t i = 0; i < g.gl_pathc && rc == 0; i++) {
            FILE *f = fopen(g.gl_pathv[i], "r");
            char line[4096];
            while (f && rc == 0 && fgets(line, sizeof line, f)) {
                line[strcspn(line, "\n")] = 0;
                size_t len = strlen(line);
                struct stat st;
                if (strncmp(line, "/usr/lib/", 9) == 0 && len > 3 && !strcmp(line + len - 3, ".py") &&
                    lstat(line, &st) == 0 && S_ISREG(st.st_mode))
                    rc = add_path(pl, line);
            }
            if (f) fclose(f);
        }
        globfree(&g);
    }
    if (rc == 0 && pl->n == 0)
        return hy_fail_code(HY_ERR_IO, "the default corpus: dpkg lists no .py files for libpython3.%d: set data.corpus", best);
    return rc;
}

/* The files of one source: "default", a folder (recursively), a glob pattern (each match a file
 * or folder), or a file; sorted by path except a single file. *explicit_file: the source is one
 * file named by the user (it is then never skipped silently). */
static int source_files(const char *src, path_list *pl, bool *explicit_file) {
    *explicit_file = false;
    if (!src || !*src || !strcmp(src, "default")) {
        int rc = default_corpus_files(pl);
        if (rc == 0) qsort(pl->paths, (size_t)pl->n, sizeof(char *), path_cmp);
        return rc;
    }
    struct stat st;
    if (stat(src, &st) != 0 && strpbrk(src, "*?[")) {
        glob_t g;
        int grc = glob(src, 0, NULL, &g), rc = 0;
        if (grc == GLOB_NOMATCH) return hy_fail_code(HY_ERR_IO, "%s: no file matches the pattern", src);
        if (grc != 0) return hy_fail_code(HY_ERR_IO, "%s: cannot expand the pattern", src);
        for (size_t i = 0; i < g.gl_pathc && rc == 0; i++) {
            if (lstat(g.gl_pathv[i], &st) != 0) continue;
            if (S_ISDIR(st.st_mode)) rc = collect(pl, g.gl_pathv[i]);
            else if (S_ISREG(st.st_mode)) rc = add_path(pl, g.gl_pathv[i]);
        }
        globfree(&g);
        if (rc == 0) qsort(pl->paths, (size_t)pl->n, sizeof(char *), path_cmp);
        return rc;
    }
    if (stat(src, &st) != 0) return hy_fail_code(HY_ERR_IO, "corpus %s: %s", src, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        int rc = collect(pl, src);
        if (rc == 0) qsort(pl->paths, (size_t)pl->n, sizeof(char *), path_cmp);
        return rc;
    }
    *explicit_file = true;
    return add_path(pl, src);
}

/* ---- what a file holds ---- */

typedef enum { KIND_SKIP, KIND_TEXT, KIND_LLMC, KIND_RAW16 } file_kind;

struct hy_data_file {
    char *path;
    file_kind kind;
    int width;                 /* bytes per token */
    size_t n;                  /* tokens */
    size_t offset;             /* byte offset of the first token (the header's size) */
    size_t text_at;            /* text: where its bytes start in the corpus' text buffer */
    const uint8_t *tokens;
    void *map;
    size_t map_size;
    int max_token;
};

static int32_t le32(const uint8_t *p) { return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24); }

/* Whether the first bytes are an llm.c header's magic (either kind). */
static bool has_llmc_magic(const uint8_t *head, size_t got) {
    return got >= 4 && (le32(head) == HY_LLMC_MAGIC || le32(head) == HY_LLMC32_MAGIC);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* The kind of file f under format fmt, from its name and first bytes; explicit: named by the user. */
static int classify(hy_data_file *f, hy_data_format fmt, bool explicit_file, const uint8_t *head, size_t got) {
    bool magic = has_llmc_magic(head, got), bin = ends_with(f->path, ".bin"), binary = memchr(head, 0, got) != NULL;
    switch (fmt) {
    case HY_DATA_AUTO: f->kind = magic ? KIND_LLMC : bin ? KIND_RAW16 : binary ? KIND_SKIP : KIND_TEXT; break;
    case HY_DATA_BYTES: f->kind = binary ? KIND_SKIP : KIND_TEXT; break;
    case HY_DATA_TOKENS: f->kind = magic ? KIND_LLMC : bin || explicit_file ? KIND_RAW16 : KIND_SKIP; break;
    case HY_DATA_NANOGPT: f->kind = bin || explicit_file ? KIND_RAW16 : KIND_SKIP; break;
    case HY_DATA_LLMC:
        if (!bin && !explicit_file) f->kind = KIND_SKIP;
        else if (!magic) {
            if (got < 4) return hy_fail("%s: %zu bytes, too short for an llm.c shard header (1024 bytes)", f->path, got);
            return hy_fail("%s: bad magic %d (an llm.c shard starts with %d, or %d for uint32 tokens); data.format: "
                           "nanogpt reads headerless uint16 tokens",
                           f->path, le32(head), HY_LLMC_MAGIC, HY_LLMC32_MAGIC);
        } else f->kind = KIND_LLMC;
        break;
    }
    return 0;
}

/* Checks an llm.c header against the file's size; sets width, n, offset. */
static int parse_llmc(hy_data_file *f, int fd, size_t size) {
    uint8_t h[12];
    if (size < HY_LLMC_HEADER_BYTES)
        return hy_fail("%s: truncated llm.c shard: %zu bytes, shorter than its 1024-byte header", f->path, size);
    if (pread(fd, h, sizeof h, 0) != (ssize_t)sizeof h) return hy_fail_code(HY_ERR_IO, "%s: cannot read the header", f->path);
    int32_t magic = le32(h), version = le32(h + 4), count = le32(h + 8);
    int want = magic == HY_LLMC_MAGIC ? HY_LLMC_VERSION : HY_LLMC32_VERSION;
    if (version != want)
        return hy_fail("%s: llm.c shard version %d is not supported (magic %d goes with version %d: %s tokens)", f->path,
                       version, magic, want, magic == HY_LLMC_MAGIC ? "uint16" : "uint32");
    if (count < 0) return hy_fail("%s: llm.c header announces %d tokens", f->path, count);
    f->width = magic == HY_LLMC_MAGIC ? 2 : 4;
    f->offset = HY_LLMC_HEADER_BYTES;
    f->n = (size_t)count;
    size_t want_size = HY_LLMC_HEADER_BYTES + f->n * (size_t)f->width;
    if (size < want_size)
        return hy_fail("%s: truncated llm.c shard: the header announces %zu tokens (%zu bytes) but the file has %zu bytes",
                       f->path, f->n, want_size, size);
    if (size > want_size)
        return hy_fail("%s: %zu bytes follow the %zu tokens the llm.c header announces", f->path, size - want_size, f->n);
    return 0;
}

/* The token at index i of a buffer of width-byte little-endian tokens (larger than INT_MAX: INT_MAX). */
static int token_at(const uint8_t *p, int width, size_t i) {
    if (width == 1) return p[i];
    if (width == 2) return p[2 * i] | p[2 * i + 1] << 8;
    uint32_t v = (uint32_t)le32(p + 4 * i);
    return v > INT_MAX ? INT_MAX : (int)v;
}

/* Reads f's tokens in pieces (never mapping them) to find the largest, or with `limit` >= 0 the
 * first token >= limit: *at = its index (SIZE_MAX when none), *found = its value. */
static int scan_tokens(const hy_data_file *f, int limit, int *max, size_t *at, int *found) {
    *max = -1, *at = SIZE_MAX, *found = -1;
    if (f->kind == KIND_TEXT) {
        for (size_t i = 0; i < f->n; i++) {
            int t = f->tokens[i];
            if (t > *max) *max = t;
            if (limit >= 0 && t >= limit) {
                *at = i, *found = t;
                return 0;
            }
        }
        return 0;
    }
    int fd = open(f->path, O_RDONLY);
    if (fd < 0) return hy_fail_code(HY_ERR_IO, "%s: cannot open: %s", f->path, strerror(errno));
    enum { CHUNK = 1 << 20 };
    uint8_t *buf = malloc(CHUNK);
    int rc = buf ? 0 : HY_ERR_NOMEM;
    size_t per = CHUNK / (size_t)f->width;
    for (size_t i0 = 0; rc == 0 && i0 < f->n && *at == SIZE_MAX; i0 += per) {
        size_t k = f->n - i0 < per ? f->n - i0 : per, bytes = k * (size_t)f->width, got = 0;
        while (got < bytes) {
            ssize_t r = pread(fd, buf + got, bytes - got, (off_t)(f->offset + i0 * (size_t)f->width + got));
            if (r <= 0) {
                rc = hy_fail_code(HY_ERR_IO, "%s: read error at byte %zu", f->path, f->offset + i0 * (size_t)f->width + got);
                break;
            }
            got += (size_t)r;
        }
        for (size_t i = 0; rc == 0 && i < k; i++) {
            int t = token_at(buf, f->width, i);
            if (t > *max) *max = t;
            if (limit >= 0 && t >= limit) {
                *at = i0 + i, *found = t;
                break;
            }
        }
    }
    free(buf);
    close(fd);
    return rc;
}

/* Opens a token file: checks its header and size, scans its largest token, maps it. */
static int open_token_file(hy_data_file *f) {
    int fd = open(f->path, O_RDONLY);
    if (fd < 0) return hy_fail_code(HY_ERR_IO, "%s: cannot open: %s", f->path, strerror(errno));
    struct stat st;
    int rc = fstat(fd, &st) == 0 ? 0 : hy_fail_code(HY_ERR_IO, "%s: cannot stat", f->path);
    size_t size = rc == 0 ? (size_t)st.st_size : 0;
    if (rc == 0 && f->kind == KIND_LLMC) rc = parse_llmc(f, fd, size);
    else if (rc == 0) {
        f->width = 2, f->offset = 0, f->n = size / 2;
        if (size % 2)
            rc = hy_fail("%s: %zu bytes is not a whole number of uint16 tokens (nanoGPT .bin): truncated?", f->path, size);
    }
    size_t at;
    int none;
    if (rc == 0 && f->n > 0) rc = scan_tokens(f, -1, &f->max_token, &at, &none);
    if (rc == 0 && f->n > 0) {
        f->map_size = size;
        f->map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (f->map == MAP_FAILED) {
            f->map = NULL;
            rc = hy_fail_code(HY_ERR_IO, "%s: cannot map: %s", f->path, strerror(errno));
        } else {
            madvise(f->map, size, MADV_RANDOM);   /* windows: no read-ahead into resident memory */
            f->tokens = (const uint8_t *)f->map + f->offset;
        }
    }
    close(fd);
    return rc;
}

/* ---- opening ---- */

static bool has(const char *s) { return s && *s; }

/* Adds the files of source `src` to c->files (source index k: 0 train or corpus, 1 validation). */
static int add_source(hy_corpus *c, const char *src, hy_data_format fmt, int *n_alloc, int *first, int *count) {
    path_list pl = {0};
    bool explicit_file;
    int rc = source_files(src, &pl, &explicit_file);
    *first = c->n_entries, *count = 0;
    for (int i = 0; rc == 0 && i < pl.n; i++) {
        if (c->n_entries == *n_alloc) {
            int na = *n_alloc ? 2 * *n_alloc : 64;
            hy_data_file *nf = realloc(c->files, sizeof *nf * (size_t)na);
            if (!nf) {
                rc = HY_ERR_NOMEM;
                break;
            }
            c->files = nf, *n_alloc = na;
        }
        hy_data_file *f = &c->files[c->n_entries];
        memset(f, 0, sizeof *f);
        f->path = pl.paths[i];
        pl.paths[i] = NULL;
        c->n_entries++;
        uint8_t head[4096];
        int fd = open(f->path, O_RDONLY);
        if (fd < 0) {
            rc = hy_fail_code(HY_ERR_IO, "%s: cannot open: %s", f->path, strerror(errno));
            break;
        }
        ssize_t got = pread(fd, head, sizeof head, 0);
        close(fd);
        if (got < 0) {
            rc = hy_fail_code(HY_ERR_IO, "%s: cannot read: %s", f->path, strerror(errno));
            break;
        }
        if ((rc = classify(f, fmt, explicit_file, head, (size_t)got)) < 0) break;
        if (f->kind == KIND_SKIP) {   /* dropped from the list */
            free(f->path);
            c->n_entries--;
            continue;
        }
        (*count)++;
    }
    free_paths(&pl);
    return rc;
}

/* Reads every text file into one buffer (file order) and points their tokens into it. */
static int read_text(hy_corpus *c) {
    size_t total = 0;
    for (int i = 0; i < c->n_entries; i++) {
        struct stat st;
        if (stat(c->files[i].path, &st) != 0) return hy_fail_code(HY_ERR_IO, "%s: %s", c->files[i].path, strerror(errno));
        total += (size_t)st.st_size;
    }
    c->text = hy_malloc(total ? total : 1);
    if (!c->text) return HY_ERR_NOMEM;
    size_t at = 0;
    for (int i = 0; i < c->n_entries; i++) {
        hy_data_file *f = &c->files[i];
        char *data;
        size_t len;
        int rc = hy_read_file(f->path, &data, &len);
        if (rc < 0) return rc;
        if (at + len > total) len = total - at;   /* grew since stat: keep what was counted */
        memcpy(c->text + at, data, len);
        hy_free(data);
        f->width = 1, f->n = len, f->text_at = at;
        at += len;
    }
    for (int i = 0; i < c->n_entries; i++) {
        hy_data_file *f = &c->files[i];
        f->tokens = c->text + f->text_at;
        size_t where;
        int none;
        scan_tokens(f, -1, &f->max_token, &where, &none);
    }
    return 0;
}

/* Appends the part [from, to) of file f (token indices) to stream s. */
static int add_span(hy_token_stream *s, const hy_data_file *f, size_t from, size_t to) {
    if (to <= from) return 0;
    hy_token_span *ns = realloc(s->spans, sizeof *ns * (size_t)(s->n_spans + 1));
    if (!ns) return HY_ERR_NOMEM;
    s->spans = ns;
    ns[s->n_spans++] = (hy_token_span){.path = f->path, .data = f->tokens + from * (size_t)f->width, .n = to - from,
                                       .start = s->len, .offset = f->offset + from * (size_t)f->width, .width = f->width};
    s->len += to - from;
    return 0;
}

/* The two splits: files [0, n_first) are train and the rest validation (two sources), or with
 * n_first < 0 one stream cut so that the last val_fraction is validation. */
static int build_splits(hy_corpus *c, int n_first, double val_fraction) {
    size_t total = 0;
    for (int i = 0; i < c->n_entries; i++) total += c->files[i].n;
    size_t cut = n_first >= 0 ? SIZE_MAX : total - (size_t)((double)total * val_fraction), at = 0;
    int rc = 0;
    for (int i = 0; rc == 0 && i < c->n_entries; i++) {
        const hy_data_file *f = &c->files[i];
        if (n_first >= 0) rc = add_span(&c->split[i < n_first ? 0 : 1], f, 0, f->n);
        else {
            size_t in_train = cut > at ? (cut - at < f->n ? cut - at : f->n) : 0;
            rc = add_span(&c->split[0], f, 0, in_train);
            if (rc == 0) rc = add_span(&c->split[1], f, in_train, f->n);
        }
        at += f->n;
        c->n_files += f->n > 0;
        if (f->max_token > c->max_token) c->max_token = f->max_token;
    }
    c->len = total;
    c->n_train = c->split[0].len;
    return rc;
}

/* Loads the tokenizer table of `path` into c and checks the tokens fit its vocabulary. */
static int attach_tokenizer(hy_corpus *c, const char *path) {
    int vocab;
    int rc = hy_tokenizer_table(path, &c->token_bytes, &vocab, c->tokenizer_sha256);
    if (rc < 0) return rc;
    snprintf(c->tokenizer, sizeof c->tokenizer, "%s", path);
    c->tokenizer_vocab = vocab;
    rc = hy_corpus_check_vocab(c, vocab);
    if (rc < 0) hy_error_prefix("the tokens do not come from data.tokenizer %s (%d pieces)", path, vocab);
    return rc;
}

/* Files, kinds, text or maps, splits: everything up to tokenizing and the vocabulary check. */
static int open_files(hy_corpus *c, const hy_data_spec *s) {
    int n_alloc = 0, first[2], count[2] = {0, 0}, rc;
    bool two = has(s->train) || has(s->val);
    if (two && !(has(s->train) && has(s->val))) return hy_fail("data: give both data.train and data.val");
    if ((rc = add_source(c, two ? s->train : s->corpus, s->format, &n_alloc, &first[0], &count[0])) < 0) return rc;
    if (two && (rc = add_source(c, s->val, s->format, &n_alloc, &first[1], &count[1])) < 0) return rc;
    const char *names[2] = {two ? s->train : has(s->corpus) ? s->corpus : "default", s->val};
    const hy_data_file *text = NULL, *tok = NULL;
    for (int i = 0; i < c->n_entries; i++) {
        if (c->files[i].kind == KIND_TEXT && !text) text = &c->files[i];
        if (c->files[i].kind != KIND_TEXT && !tok) tok = &c->files[i];
    }
    if (text && tok)
        return hy_fail_code(HY_ERR_CONFIG, "data: %s is text but %s holds tokens; a corpus is all text or all token files (set data.format, "
                       "or point data.train / data.val at the files)",
                       text->path, tok->path);
    for (int k = 0; k < (two ? 2 : 1); k++)
        if (count[k] == 0)
            return hy_fail_code(HY_ERR_IO, "corpus %s: no %s found", names[k],
                                s->format == HY_DATA_BYTES ? "text" : s->format == HY_DATA_AUTO ? "text or token files" : "token files");
    c->tokens = tok != NULL;
    if (!c->tokens) rc = read_text(c);
    for (int i = 0; rc == 0 && c->tokens && i < c->n_entries; i++) rc = open_token_file(&c->files[i]);
    if (rc < 0) return rc;
    if ((rc = build_splits(c, two ? count[0] : -1, s->val_fraction)) < 0) return rc;
    if (c->len == 0) return hy_fail_code(HY_ERR_IO, "corpus %s: no %s found", names[0], c->tokens ? "tokens" : "text");
    return 0;
}

/* Each split holds at least s->min_tokens tokens (the validation split alone when val_fraction is 1). */
static int check_lengths(const hy_corpus *c, const hy_data_spec *s) {
    bool two = has(s->train);
    for (int k = s->val_fraction >= 1 ? 1 : 0; k < 2 && s->min_tokens > 0; k++)
        if (c->split[k].len < (size_t)s->min_tokens) {
            char where[HY_DATA_PATH_MAX + 64];
            if (two) snprintf(where, sizeof where, "data.%s %s", k ? "val" : "train", k ? s->val : s->train);
            else snprintf(where, sizeof where, "the %s split of %s (val_fraction %g)", k ? "validation" : "train",
                          has(s->corpus) ? s->corpus : "default", s->val_fraction);
            return hy_fail_code(HY_ERR_CONFIG, "%s has %zu %s, fewer than seq_len + 1 = %ld", where, c->split[k].len,
                           c->tokens ? "tokens" : "bytes", s->min_tokens);
        }
    return 0;
}

int hy_corpus_open(hy_corpus *c, const hy_data_spec *s) {
    memset(c, 0, sizeof *c);
    int rc = open_files(c, s);
    bool tokenize = rc == 0 && !c->tokens && (has(s->tokenizer) || s->tokenizer_vocab > 0);
    if (rc == 0 && c->tokens && s->tokenizer_vocab > 0)
        rc = hy_fail_code(HY_ERR_CONFIG, "data.tokenizer: a tokenizer is trained on text, but %s holds tokens",
                          c->files[0].path);
    if (rc == 0 && tokenize) {
        char tok[HY_DATA_PATH_MAX], tr[HY_DATA_PATH_MAX], va[HY_DATA_PATH_MAX];
        if (!has(s->cache_dir)) rc = hy_fail("data.tokenizer: no folder to keep the tokenized text in");
        else if (has(s->tokenizer)) snprintf(tok, sizeof tok, "%s", s->tokenizer);
        else rc = hy_train_corpus_tokenizer(c, s->tokenizer_type, s->tokenizer_vocab, s->cache_dir, s->progress, tok);
        if (rc == 0) rc = hy_tokenize_corpus(c, tok, s->cache_dir, s->progress, tr, va);
        hy_corpus_free(c);
        if (rc < 0) return rc;
        hy_data_spec t = {.train = tr, .val = va, .format = HY_DATA_LLMC, .tokenizer = tok, .vocab_size = s->vocab_size,
                          .min_tokens = s->min_tokens, .val_fraction = s->val_fraction};
        return hy_corpus_open(c, &t);
    }
    if (rc == 0 && c->tokens && has(s->tokenizer)) rc = attach_tokenizer(c, s->tokenizer);
    if (rc == 0 && s->vocab_size > 0) rc = hy_corpus_check_vocab(c, s->vocab_size);
    if (rc == 0) rc = check_lengths(c, s);
    if (rc < 0) hy_corpus_free(c);
    return rc;
}

int hy_corpus_load(hy_corpus *c, const char *path, double val_fraction) {
    hy_data_spec s = {.corpus = path, .val_fraction = val_fraction, .format = HY_DATA_AUTO};
    return hy_corpus_open(c, &s);
}

void hy_corpus_free(hy_corpus *c) {
    for (int i = 0; i < c->n_entries; i++) {
        if (c->files[i].map) munmap(c->files[i].map, c->files[i].map_size);
        free(c->files[i].path);
    }
    free(c->files);
    free(c->split[0].spans), free(c->split[1].spans);
    hy_free(c->text);
    free(c->token_bytes);
    memset(c, 0, sizeof *c);
}

int hy_data_check(const hy_data_spec *s) {
    hy_data_spec t = *s;
    bool tokenize = has(s->tokenizer) || s->tokenizer_vocab > 0;
    hy_corpus c;
    memset(&c, 0, sizeof c);
    int rc = open_files(&c, &t);
    if (rc == 0 && c.tokens && s->tokenizer_vocab > 0)
        rc = hy_fail_code(HY_ERR_CONFIG, "data.tokenizer: a tokenizer is trained on text, but %s holds tokens",
                          c.files[0].path);
    if (rc == 0 && c.tokens && has(s->tokenizer)) rc = attach_tokenizer(&c, s->tokenizer);
    if (rc == 0 && !(tokenize && !c.tokens) && s->vocab_size > 0) rc = hy_corpus_check_vocab(&c, s->vocab_size);
    if (rc == 0 && !(tokenize && !c.tokens)) rc = check_lengths(&c, s);
    hy_corpus_free(&c);
    return rc;
}

int hy_corpus_find_token(const hy_corpus *c, int limit, const char **path, size_t *offset, size_t *index, int *value) {
    if (c->max_token < limit) return 1;
    for (int k = 0; k < 2; k++)   /* the first offending token, in stream order */
        for (int i = 0; i < c->split[k].n_spans; i++) {
            const hy_token_span *sp = &c->split[k].spans[i];
            const hy_data_file *f = NULL;
            for (int j = 0; j < c->n_entries && !f; j++) f = c->files[j].path == sp->path ? &c->files[j] : NULL;
            if (!f || f->max_token < limit) continue;
            int max, tok;
            size_t at;
            int rc = scan_tokens(f, limit, &max, &at, &tok);
            if (rc < 0) return rc;
            size_t first = (sp->offset - f->offset) / (size_t)f->width;
            if (at == SIZE_MAX || at < first || at >= first + sp->n) continue;
            *path = f->path, *offset = f->offset + at * (size_t)f->width, *index = at, *value = tok;
            return 0;
        }
    return 1;
}

int hy_corpus_check_vocab(const hy_corpus *c, int vocab_size) {
    const char *path;
    size_t offset, index;
    int tok, rc = hy_corpus_find_token(c, vocab_size, &path, &offset, &index, &tok);
    if (rc < 0) return rc;
    if (rc == 1 && c->max_token < vocab_size) return 0;
    if (rc == 1)
        return hy_fail_code(HY_ERR_CONFIG, "the data hold token %d, not below model.vocab_size %d", c->max_token, vocab_size);
    if (!c->tokens)
        return hy_fail_code(HY_ERR_CONFIG, "%s: byte %d (0x%02x) at byte offset %zu is not below model.vocab_size %d: a "
                                           "byte-level model of this corpus needs vocab_size >= %d (256 covers every byte)",
                            path, tok, (unsigned)tok, offset, vocab_size, c->max_token + 1);
    return hy_fail_code(HY_ERR_CONFIG, "%s: token %d at byte offset %zu (token %zu of the file) is not below "
                                       "model.vocab_size %d (the largest token in the data is %d)",
                        path, tok, offset, index, vocab_size, c->max_token);
}

/* ---- reading ---- */

/* Drops the pages of a mapped range from this process (the page cache keeps them): a mapped file
 * is read a window at a time, and a fault may map a whole large folio (MiB) around the window,
 * so without this the resident set grows with every window read. */
static void release(const uint8_t *p, size_t len) {
    static long page;
    if (!page) page = sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p / (uintptr_t)page * (uintptr_t)page;
    uintptr_t b = ((uintptr_t)p + len + (uintptr_t)page - 1) / (uintptr_t)page * (uintptr_t)page;
    madvise((void *)a, b - a, MADV_DONTNEED);
}

void hy_stream_read(const hy_token_stream *s, size_t start, size_t n, int32_t *out) {
    int lo = 0, hi = s->n_spans - 1;   /* the span holding `start` */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (s->spans[mid].start <= start) lo = mid;
        else hi = mid - 1;
    }
    for (int i = lo; n > 0 && i < s->n_spans; i++) {
        const hy_token_span *sp = &s->spans[i];
        size_t from = start - sp->start, take = sp->n - from < n ? sp->n - from : n;
        if (sp->width == 1)
            for (size_t k = 0; k < take; k++) out[k] = sp->data[from + k];
        else {
            for (size_t k = 0; k < take; k++) out[k] = token_at(sp->data, sp->width, from + k);
            release(sp->data + from * (size_t)sp->width, take * (size_t)sp->width);
        }
        out += take, start += take, n -= take;
    }
}

double hy_corpus_token_bytes(const hy_corpus *c, int32_t tok) {
    if (!c->tokens) return 1.0;
    if (!c->token_bytes || tok < 0 || tok >= c->tokenizer_vocab) return NAN;
    return c->token_bytes[tok];
}

int hy_corpus_batch(const hy_corpus *c, int validation, hy_rng *rng, int B, int T, int32_t *inputs,
                    int32_t *targets) {
    const hy_token_stream *s = &c->split[validation ? 1 : 0];
    if (s->len < (size_t)T + 1)
        return hy_fail("the %s split has %zu %s, fewer than seq_len + 1 = %d", validation ? "validation" : "train", s->len,
                       c->tokens ? "tokens" : "bytes", T + 1);
    int32_t *w = hy_malloc(((size_t)T + 1) * sizeof(int32_t));
    if (!w) return HY_ERR_NOMEM;
    for (int b = 0; b < B; b++) {
        size_t start = hy_rng_below(rng, s->len - (size_t)T);
        hy_stream_read(s, start, (size_t)T + 1, w);
        memcpy(inputs + (size_t)b * T, w, (size_t)T * sizeof(int32_t));
        memcpy(targets + (size_t)b * T, w + 1, (size_t)T * sizeof(int32_t));
    }
    hy_free(w);
    return 0;
}

void hy_corpus_describe(const hy_corpus *c, char *out, size_t len) {
    if (!c->tokens) snprintf(out, len, "corpus %zu bytes (%d files)", c->len, c->n_files);
    else if (c->tokenizer_vocab > 0) {
        const char *base = strrchr(c->tokenizer, '/');
        snprintf(out, len, "tokens %zu (%d files; %s, %d pieces)", c->len, c->n_files, base ? base + 1 : c->tokenizer,
                 c->tokenizer_vocab);
    } else snprintf(out, len, "tokens %zu (%d files, largest id %d)", c->len, c->n_files, c->max_token);
}

/* ---- writing llm.c shards ---- */

int hy_shard_open(hy_shard_writer *w, const char *path, int vocab) {
    memset(w, 0, sizeof *w);
    if (snprintf(w->path, sizeof w->path, "%s", path) >= (int)sizeof w->path) return hy_fail("%s: path too long", path);
    snprintf(w->tmp, sizeof w->tmp, "%s.tmp.%d", path, (int)getpid());
    w->width = vocab <= 65536 ? 2 : 4;
    w->f = fopen(w->tmp, "wb");
    if (!w->f) return hy_fail_code(HY_ERR_IO, "%s: cannot create: %s", w->tmp, strerror(errno));
    uint8_t header[HY_LLMC_HEADER_BYTES] = {0};
    if (fwrite(header, 1, sizeof header, w->f) != sizeof header) {
        hy_shard_abort(w);
        return hy_fail_code(HY_ERR_IO, "%s: write failed", path);
    }
    return 0;
}

int hy_shard_add(hy_shard_writer *w, const int32_t *ids, size_t n) {
    uint8_t buf[4096];
    size_t per = sizeof buf / (size_t)w->width;
    for (size_t i0 = 0; i0 < n; i0 += per) {
        size_t k = n - i0 < per ? n - i0 : per;
        for (size_t i = 0; i < k; i++) {
            uint32_t v = (uint32_t)ids[i0 + i];
            if (ids[i0 + i] < 0 || (w->width == 2 && v > 65535))
                return hy_fail("%s: token %d does not fit a uint16 shard", w->path, ids[i0 + i]);
            for (int b = 0; b < w->width; b++) buf[i * (size_t)w->width + (size_t)b] = (uint8_t)(v >> (8 * b));
        }
        if (fwrite(buf, (size_t)w->width, k, w->f) != k) return hy_fail_code(HY_ERR_IO, "%s: write failed", w->path);
    }
    w->n += n;
    if (w->n > INT32_MAX) return hy_fail("%s: more than %d tokens in one llm.c shard", w->path, INT32_MAX);
    return 0;
}

int hy_shard_close(hy_shard_writer *w) {
    int32_t h[3] = {w->width == 2 ? HY_LLMC_MAGIC : HY_LLMC32_MAGIC, w->width == 2 ? HY_LLMC_VERSION : HY_LLMC32_VERSION,
                    (int32_t)w->n};
    uint8_t le[12];
    for (int i = 0; i < 3; i++)
        for (int b = 0; b < 4; b++) le[4 * i + b] = (uint8_t)((uint32_t)h[i] >> (8 * b));
    int ok = fflush(w->f) == 0 && pwrite(fileno(w->f), le, sizeof le, 0) == (ssize_t)sizeof le && fsync(fileno(w->f)) == 0;
    ok &= fclose(w->f) == 0;
    w->f = NULL;
    if (!ok || rename(w->tmp, w->path) != 0) {
        int e = errno;
        unlink(w->tmp);
        return hy_fail_code(HY_ERR_IO, "%s: cannot write: %s", w->path, strerror(e));
    }
    return 0;
}

void hy_shard_abort(hy_shard_writer *w) {
    if (w->f) fclose(w->f);
    w->f = NULL;
    unlink(w->tmp);
}

#include "experiments/data.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

/* Collects regular files below `dir` (recursively, symlinks skipped). */
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

/* A file is text when its first 4 KiB hold no NUL byte (this drops fortune's .dat indexes). */
static int is_text(const char *data, size_t len) { return memchr(data, 0, len < 4096 ? len : 4096) == NULL; }

int hy_corpus_load(hy_corpus *c, const char *path, double val_fraction) {
    memset(c, 0, sizeof *c);
    bool is_default = !path || !*path || !strcmp(path, "default");
    if (is_default) path = "default";
    struct stat st;
    if (!is_default && stat(path, &st) != 0) return hy_fail_code(HY_ERR_IO, "corpus %s: %s", path, strerror(errno));
    path_list pl = {0};
    int rc = 0;
    if (is_default) {
        rc = default_corpus_files(&pl);
        if (rc == 0) qsort(pl.paths, (size_t)pl.n, sizeof(char *), path_cmp);
    } else if (S_ISDIR(st.st_mode)) {
        rc = collect(&pl, path);
        if (rc == 0) qsort(pl.paths, (size_t)pl.n, sizeof(char *), path_cmp);
    } else {
        pl.paths = malloc(sizeof(char *));
        pl.paths[0] = strdup(path);
        pl.n = 1;
    }
    size_t cap = 0;
    for (int i = 0; rc == 0 && i < pl.n; i++) {
        char *data;
        size_t len;
        rc = hy_read_file(pl.paths[i], &data, &len);
        if (rc < 0) break;
        if (is_text(data, len) && len > 0) {
            if (c->len + len > cap) {
                size_t ncap = (c->len + len) * 2;
                uint8_t *nb = hy_malloc(ncap);
                if (!nb) rc = HY_ERR_NOMEM;
                else {
                    if (c->bytes) memcpy(nb, c->bytes, c->len);
                    hy_free(c->bytes);
                    c->bytes = nb, cap = ncap;
                }
            }
            if (rc == 0) {
                memcpy(c->bytes + c->len, data, len);
                c->len += len;
                c->n_files++;
            }
        }
        hy_free(data);
    }
    for (int i = 0; i < pl.n; i++) free(pl.paths[i]);
    free(pl.paths);
    if (rc == 0 && c->len == 0) rc = hy_fail_code(HY_ERR_IO, "corpus %s: no text found", path);
    if (rc < 0) {
        hy_corpus_free(c);
        return rc;
    }
    c->n_train = c->len - (size_t)((double)c->len * val_fraction);
    return 0;
}

void hy_corpus_free(hy_corpus *c) {
    hy_free(c->bytes);
    memset(c, 0, sizeof *c);
}

int hy_corpus_batch(const hy_corpus *c, int validation, hy_rng *rng, int B, int T, int32_t *inputs,
                    int32_t *targets) {
    const uint8_t *base = validation ? c->bytes + c->n_train : c->bytes;
    size_t len = validation ? c->len - c->n_train : c->n_train;
    if (len < (size_t)T + 1)
        return hy_fail("the %s split has %zu bytes, fewer than seq_len + 1 = %d", validation ? "validation" : "train",
                       len, T + 1);
    for (int b = 0; b < B; b++) {
        size_t start = hy_rng_below(rng, len - (size_t)T);
        for (int t = 0; t < T; t++) {
            inputs[(size_t)b * T + t] = base[start + t];
            targets[(size_t)b * T + t] = base[start + t + 1];
        }
    }
    return 0;
}

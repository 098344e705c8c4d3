/* safetensors reader (mmap + full validation) and atomic writer. */
#include "models/safetensors.h"
#include "core/error.h"
#include "core/strbuf.h"
#include "models/json.h"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct { const char *name; size_t size; } dtypes[HY_DT_COUNT] = {
    [HY_DT_F32] = {"F32", 4},  [HY_DT_I32] = {"I32", 4},         [HY_DT_F16] = {"F16", 2},
    [HY_DT_BF16] = {"BF16", 2}, [HY_DT_F64] = {"F64", 8},         [HY_DT_I64] = {"I64", 8},
    [HY_DT_U64] = {"U64", 8},  [HY_DT_U32] = {"U32", 4},         [HY_DT_I16] = {"I16", 2},
    [HY_DT_U16] = {"U16", 2},  [HY_DT_I8] = {"I8", 1},           [HY_DT_U8] = {"U8", 1},
    [HY_DT_BOOL] = {"BOOL", 1}, [HY_DT_F8_E5M2] = {"F8_E5M2", 1}, [HY_DT_F8_E4M3] = {"F8_E4M3", 1},
};

const char *hy_dtype_name(hy_dtype t) { return (unsigned)t < HY_DT_COUNT ? dtypes[t].name : "?"; }
size_t hy_dtype_size(hy_dtype t) { return (unsigned)t < HY_DT_COUNT ? dtypes[t].size : 0; }

int hy_dtype_parse(const char *name) {
    for (int t = 0; t < HY_DT_COUNT; t++)
        if (strcmp(dtypes[t].name, name) == 0) return t;
    return -1;
}

const char *hy_st_shape_str(int ndim, const int64_t *shape, char *buf, size_t n) {
    size_t used = (size_t)snprintf(buf, n, "(");
    for (int d = 0; d < ndim && used < n; d++)
        used += (size_t)snprintf(buf + used, n - used, "%s%" PRId64, d ? ", " : "", shape[d]);
    if (used < n) snprintf(buf + used, n - used, ndim == 1 ? ",)" : ")");
    return buf;
}

/* ---- reading ---- */

void hy_st_close(hy_st_file *f) {
    for (int i = 0; f->tensors && i < f->n_tensors; i++) free(f->tensors[i].name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->tensors);
    free(f->meta_keys);
    free(f->meta_values);
    if (f->map) munmap(f->map, f->size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

/* Copies the string-valued `__metadata__` object into f. */
static int read_metadata(hy_st_file *f, const json_t *m) {
    if (!json_is_object(m))
        return hy_fail("%s: __metadata__ is %s, expected a map of strings", f->path, hy_json_type_name(m));
    size_t n = json_object_size(m);
    f->meta_keys = calloc(n + 1, sizeof(char *));
    f->meta_values = calloc(n + 1, sizeof(char *));
    if (!f->meta_keys || !f->meta_values) return hy_fail_code(HY_ERR_NOMEM, "%s: out of memory", f->path);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)m, key, v) {
        if (!json_is_string(v))
            return hy_fail("%s: __metadata__ '%.200s' is %s, expected a string (metadata is a map of strings)", f->path,
                           key, hy_json_type_name(v));
        int i = f->n_meta;
        f->meta_keys[i] = strdup(key);
        f->meta_values[i] = strdup(json_string_value(v));
        f->n_meta = i + 1;
        if (!f->meta_keys[i] || !f->meta_values[i]) return hy_fail_code(HY_ERR_NOMEM, "%s: out of memory", f->path);
    }
    return 0;
}

/* Validates one tensor entry {"dtype", "shape", "data_offsets"} against the data section size. */
static int read_tensor(hy_st_file *f, const char *name, const json_t *e, size_t data_size, hy_st_tensor *t) {
    const char *P = f->path;
    char sh[256], num[48];
    if (!json_is_object(e))
        return hy_fail("%s: tensor '%.200s': entry is %s, expected an object with dtype, shape, data_offsets", P, name,
                       hy_json_type_name(e));
    const json_t *dt = json_object_get(e, "dtype"), *shape = json_object_get(e, "shape"),
                 *off = json_object_get(e, "data_offsets");
    if (!dt || !shape || !off)
        return hy_fail("%s: tensor '%.200s': missing '%s'", P, name, !dt ? "dtype" : !shape ? "shape" : "data_offsets");
    if (!json_is_string(dt))
        return hy_fail("%s: tensor '%.200s': dtype is %s, expected a string", P, name, hy_json_type_name(dt));
    int code = hy_dtype_parse(json_string_value(dt));
    if (code < 0) return hy_fail("%s: tensor '%.200s': unknown dtype '%.40s'", P, name, json_string_value(dt));
    t->dtype = (hy_dtype)code;
    if (!json_is_array(shape))
        return hy_fail("%s: tensor '%.200s': shape is %s, expected an array of integers", P, name, hy_json_type_name(shape));
    size_t ndim = json_array_size(shape);
    if (ndim > HY_ST_MAX_DIMS)
        return hy_fail("%s: tensor '%.200s': shape has %zu dimensions (at most %d)", P, name, ndim, HY_ST_MAX_DIMS);
    t->ndim = (int)ndim;
    t->numel = 1;
    bool overflow = false;
    for (int d = 0; d < t->ndim; d++) {
        const json_t *x = json_array_get(shape, (size_t)d);
        if (!json_is_integer(x) || json_integer_value(x) < 0)
            return hy_fail("%s: tensor '%.200s': shape[%d] = %.40s is not a non-negative integer", P, name, d,
                           hy_json_number_text(x, num, sizeof num));
        t->shape[d] = json_integer_value(x);
        overflow |= __builtin_mul_overflow(t->numel, (size_t)t->shape[d], &t->numel);
    }
    size_t bytes;
    overflow |= __builtin_mul_overflow(t->numel, hy_dtype_size(t->dtype), &bytes);
    if (overflow)
        return hy_fail("%s: tensor '%.200s': shape %s is too large", P, name, hy_st_shape_str(t->ndim, t->shape, sh, sizeof sh));
    const json_t *jb = json_array_get(off, 0), *je = json_array_get(off, 1);
    if (!json_is_array(off) || json_array_size(off) != 2 || !json_is_integer(jb) || !json_is_integer(je) ||
        json_integer_value(jb) < 0 || json_integer_value(je) < json_integer_value(jb))
        return hy_fail("%s: tensor '%.200s': data_offsets must be [begin, end] with 0 <= begin <= end", P, name);
    int64_t b = json_integer_value(jb), en = json_integer_value(je);
    if ((uint64_t)(en - b) != bytes)
        return hy_fail("%s: tensor '%.200s': data_offsets [%" PRId64 ", %" PRId64 "] do not match %s shape %s = %zu bytes", P,
                       name, b, en, hy_dtype_name(t->dtype), hy_st_shape_str(t->ndim, t->shape, sh, sizeof sh), bytes);
    if ((uint64_t)en > data_size)
        return hy_fail("%s: tensor '%.200s': data_offsets [%" PRId64 ", %" PRId64 "] go beyond the data section (%zu bytes); "
                       "is the file truncated?", P, name, b, en, data_size);
    t->begin = (size_t)b;
    t->end = (size_t)en;
    return 0;
}

/* qsort_r order of tensor indices: by begin, then by end. */
static int by_begin(const void *a, const void *b, void *file) {
    const hy_st_file *f = file;
    const hy_st_tensor *x = &f->tensors[*(const int *)a], *y = &f->tensors[*(const int *)b];
    return x->begin != y->begin ? (x->begin < y->begin ? -1 : 1) : (x->end > y->end) - (x->end < y->end);
}

/* As upstream: sorted by offset, the tensors tile the data section exactly (no overlap, no gap, no
 * trailing bytes), which also catches a header length that is off by a few bytes. */
static int check_layout(hy_st_file *f, size_t data_size) {
    int *order = malloc(sizeof(int) * (size_t)(f->n_tensors + 1));
    if (!order) return hy_fail_code(HY_ERR_NOMEM, "%s: out of memory", f->path);
    for (int i = 0; i < f->n_tensors; i++) order[i] = i;
    qsort_r(order, (size_t)f->n_tensors, sizeof(int), by_begin, f);
    int rc = 0;
    size_t expect = 0;
    const hy_st_tensor *prev = NULL;
    for (int k = 0; k < f->n_tensors && rc == 0; k++) {
        const hy_st_tensor *t = &f->tensors[order[k]];
        if (t->begin < expect)
            rc = hy_fail("%s: tensor '%.200s': data_offsets [%zu, %zu] overlap tensor '%.200s' [%zu, %zu]", f->path, t->name,
                         t->begin, t->end, prev->name, prev->begin, prev->end);
        else if (t->begin > expect)
            rc = hy_fail("%s: tensor '%.200s': data_offsets [%zu, %zu] leave a gap of %zu bytes before it", f->path, t->name,
                         t->begin, t->end, t->begin - expect);
        expect = t->end;
        prev = t;
    }
    if (rc == 0 && expect != data_size)
        rc = hy_fail("%s: the tensors end at byte %zu of the data section but it has %zu bytes (bad header length or "
                     "trailing garbage)", f->path, expect, data_size);
    free(order);
    return rc;
}

/* Checks the length prefix and parses the header into f. */
static int parse_header(hy_st_file *f) {
    const unsigned char *u = f->map;
    uint64_t n = 0;
    for (int k = 7; k >= 0; k--) n = n << 8 | u[k];
    if (n > f->size - 8)
        return hy_fail("%s: header length %" PRIu64 " is larger than the rest of the file (%zu bytes): truncated, or not "
                       "a safetensors file", f->path, n, f->size - 8);
    if (n > HY_ST_MAX_HEADER)
        return hy_fail("%s: header length %" PRIu64 " is absurd (limit %u bytes)", f->path, n, HY_ST_MAX_HEADER);
    if (n < 2) return hy_fail("%s: header length %" PRIu64 " is too small for a JSON object", f->path, n);
    const char *text = (const char *)u + 8;
    json_t *root;
    if (hy_json_parse(text, (size_t)n, &root) < 0) {
        hy_error_prefix("%s: header is not valid JSON", f->path);
        return HY_ERR;
    }
    int rc = 0;
    if (!json_is_object(root)) rc = hy_fail("%s: header is %s, expected a JSON object", f->path, hy_json_type_name(root));
    size_t data_size = f->size - 8 - (size_t)n;
    if (rc == 0) f->tensors = calloc(json_object_size(root) + 1, sizeof(hy_st_tensor));
    if (rc == 0 && !f->tensors) rc = hy_fail_code(HY_ERR_NOMEM, "%s: out of memory", f->path);
    const char *key;
    json_t *v;
    json_object_foreach(rc == 0 ? root : NULL, key, v) {   /* in file order */
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_null(v)) rc = read_metadata(f, v);   /* null: none */
        } else {
            hy_st_tensor *t = &f->tensors[f->n_tensors];
            rc = read_tensor(f, key, v, data_size, t);
            if (rc == 0 && !(t->name = strdup(key))) rc = hy_fail_code(HY_ERR_NOMEM, "%s: out of memory", f->path);
            if (rc == 0) {
                t->data = (const char *)text + n + t->begin;
                f->n_tensors++;
            }
        }
        if (rc < 0) break;
    }
    json_decref(root);
    if (rc == 0) rc = check_layout(f, data_size);
    return rc;
}

int hy_st_open(const char *path, hy_st_file *f) {
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path) return hy_fail_code(HY_ERR_NOMEM, "out of memory");
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        int rc = hy_fail_code(HY_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        hy_st_close(f);
        return rc;
    }
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) rc = hy_fail_code(HY_ERR_IO, "%s: not a regular file", path);
    else if (st.st_size < 8)
        rc = hy_fail("%s: file is %lld bytes, shorter than the 8-byte header length of a safetensors file", path,
                     (long long)st.st_size);
    else {
        f->size = (size_t)st.st_size;
        f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (f->map == MAP_FAILED) {
            f->map = NULL;
            rc = hy_fail_code(HY_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
        }
    }
    close(fd);
    if (rc == 0) rc = parse_header(f);
    if (rc < 0) hy_st_close(f);
    return rc;
}

const hy_st_tensor *hy_st_find(const hy_st_file *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *hy_st_meta(const hy_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

int hy_st_check(const hy_st_file *f, const hy_st_tensor *t, hy_dtype dtype, int ndim, const int64_t *shape,
                const char *whose) {
    if (t->dtype != dtype)
        return hy_fail("%s: tensor '%.200s': dtype %s, expected %s", f->path, t->name, hy_dtype_name(t->dtype),
                       hy_dtype_name(dtype));
    bool same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (!same) {
        char a[256], b[256];
        return hy_fail("%s: tensor '%.200s': shape %s does not match %s %s", f->path, t->name,
                       hy_st_shape_str(t->ndim, t->shape, a, sizeof a), whose ? whose : "the expected",
                       hy_st_shape_str(ndim, shape, b, sizeof b));
    }
    return 0;
}

/* ---- writing ---- */

static int write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len > (1u << 30) ? (1u << 30) : len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w, len -= (size_t)w;
    }
    return 0;
}

/* Builds the header JSON, padded with spaces to a multiple of 8; *sizes gets each tensor's bytes. */
static char *build_header(const char *path, int n_meta, const char *const *mk, const char *const *mv, int n,
                          const hy_st_entry *t, size_t *sizes, size_t *hlen) {
    hy_strbuf b = {0};
    hy_sb_add(&b, "{");
    if (n_meta > 0) {
        hy_sb_add(&b, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            for (int j = 0; j < i; j++)
                if (strcmp(mk[i], mk[j]) == 0) {
                    hy_sb_free(&b);
                    hy_fail("%s: metadata key '%.200s' given twice", path, mk[i]);
                    return NULL;
                }
            if (i) hy_sb_add(&b, ",");
            hy_sb_json_string(&b, mk[i]);
            hy_sb_add(&b, ":");
            hy_sb_json_string(&b, mv[i]);
        }
        hy_sb_add(&b, "}");
    }
    size_t offset = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(t[i].name, "__metadata__") == 0 || t[i].ndim < 0 || t[i].ndim > HY_ST_MAX_DIMS ||
            (unsigned)t[i].dtype >= HY_DT_COUNT) {
            hy_sb_free(&b);
            hy_fail("%s: cannot write tensor '%.200s' (bad name, rank or dtype)", path, t[i].name);
            return NULL;
        }
        size_t bytes = hy_dtype_size(t[i].dtype);
        for (int d = 0; d < t[i].ndim; d++) bytes *= (size_t)t[i].shape[d];
        sizes[i] = bytes;
        hy_sb_add(&b, n_meta > 0 || i > 0 ? "," : "");
        hy_sb_json_string(&b, t[i].name);
        hy_sb_printf(&b, ":{\"dtype\":\"%s\",\"shape\":[", hy_dtype_name(t[i].dtype));
        for (int d = 0; d < t[i].ndim; d++) hy_sb_printf(&b, "%s%" PRId64, d ? "," : "", t[i].shape[d]);
        hy_sb_printf(&b, "],\"data_offsets\":[%zu,%zu]}", offset, offset + bytes);
        offset += bytes;
    }
    hy_sb_add(&b, "}");
    while (b.len % 8) hy_sb_add(&b, " ");
    *hlen = b.len;
    return hy_sb_take(&b);
}

int hy_st_write(const char *path, int n_meta, const char *const *meta_keys, const char *const *meta_values,
                int n, const hy_st_entry *tensors) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(tensors[i].name, tensors[j].name) == 0)
                return hy_fail("%s: tensor '%.200s' given twice", path, tensors[i].name);
    size_t *sizes = malloc(sizeof(size_t) * (size_t)(n + 1)), hlen = 0;
    if (!sizes) return hy_fail_code(HY_ERR_NOMEM, "%s: out of memory", path);
    char *header = build_header(path, n_meta, meta_keys, meta_values, n, tensors, sizes, &hlen);
    if (!header) {
        free(sizes);
        return HY_ERR;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int rc = 0, fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) rc = hy_fail_code(HY_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    else {
        unsigned char len8[8];
        for (int k = 0; k < 8; k++) len8[k] = (unsigned char)((uint64_t)hlen >> (8 * k));
        bool ok = write_all(fd, len8, 8) == 0 && write_all(fd, header, hlen) == 0;
        for (int i = 0; ok && i < n; i++) ok = write_all(fd, tensors[i].data, sizes[i]) == 0;
        if (!ok) rc = hy_fail_code(HY_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
        else if (fsync(fd) != 0) rc = hy_fail_code(HY_ERR_IO, "%s: cannot flush: %s", tmp, strerror(errno));
        if (close(fd) != 0 && rc == 0) rc = hy_fail_code(HY_ERR_IO, "%s: cannot close: %s", tmp, strerror(errno));
        if (rc == 0 && rename(tmp, path) != 0)
            rc = hy_fail_code(HY_ERR_IO, "%s: cannot rename from %s: %s", path, tmp, strerror(errno));
        if (rc < 0) unlink(tmp);
    }
    if (rc == 0) {   /* make the rename itself durable (best effort) */
        char dir[4200];
        snprintf(dir, sizeof dir, "%s", path);
        int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    free(header);
    free(sizes);
    return rc;
}

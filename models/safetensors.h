/* safetensors files (SPEC §4): an 8-byte little-endian header length N, N bytes of JSON header
 * {"__metadata__": {string: string}, "name": {"dtype", "shape", "data_offsets": [begin, end]}, ...},
 * then the data section. The reader validates everything before anyone touches the data, so a
 * truncated or edited file gives an error naming the file, the tensor and the problem, never a
 * crash. The writer pads the header with spaces to a multiple of 8, packs tensors in the order
 * given, and writes PATH.tmp.<pid>, fsyncs and renames (never a half-written file at PATH).
 * Like upstream, the reader requires the tensors to tile the data section exactly; keys and
 * __metadata__ may come in any order and the header may be padded any way (JSON whitespace). */
#ifndef HY_MODELS_SAFETENSORS_H
#define HY_MODELS_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>

#define HY_ST_MAX_DIMS 8
#define HY_ST_MAX_HEADER (100u << 20)   /* larger headers are refused (as upstream does) */

/* Every dtype upstream knows, so any safetensors file can be read (and refused where F32 is needed). */
typedef enum { HY_DT_F32, HY_DT_I32, HY_DT_F16, HY_DT_BF16, HY_DT_F64, HY_DT_I64, HY_DT_U64, HY_DT_U32, HY_DT_I16,
               HY_DT_U16, HY_DT_I8, HY_DT_U8, HY_DT_BOOL, HY_DT_F8_E5M2, HY_DT_F8_E4M3, HY_DT_COUNT } hy_dtype;

const char *hy_dtype_name(hy_dtype t);      /* "F32" ... */
size_t hy_dtype_size(hy_dtype t);           /* bytes per element */
int hy_dtype_parse(const char *name);       /* the hy_dtype, or -1 if unknown */

typedef struct {
    char *name;
    hy_dtype dtype;
    int ndim;
    int64_t shape[HY_ST_MAX_DIMS];
    size_t numel;
    size_t begin, end;       /* byte range in the data section */
    const void *data;        /* begin's address in the mapped file (may be unaligned: memcpy it) */
} hy_st_tensor;

typedef struct {
    char *path;
    void *map;               /* the whole file, read-only */
    size_t size;
    int n_tensors;
    hy_st_tensor *tensors;   /* in header order */
    int n_meta;
    char **meta_keys, **meta_values;
} hy_st_file;

/* Maps and validates `path`. On error (HY_ERR_IO for an unreadable file, HY_ERR for a malformed
 * one) the message starts with the path, *f is left closed. */
int hy_st_open(const char *path, hy_st_file *f);
void hy_st_close(hy_st_file *f);
const hy_st_tensor *hy_st_find(const hy_st_file *f, const char *name);
const char *hy_st_meta(const hy_st_file *f, const char *key);   /* NULL if absent */
/* Checks dtype and shape ("(B, T+1)"-style expectations are the caller's); the error names the
 * file and tensor: "F: tensor 'x': shape (64, 32) does not match the model's (32, 64)". `whose`
 * fills "the model's" (NULL = "the expected"). */
int hy_st_check(const hy_st_file *f, const hy_st_tensor *t, hy_dtype dtype, int ndim, const int64_t *shape,
                const char *whose);
/* "(32, 64)", "(16,)", "()" into buf. */
const char *hy_st_shape_str(int ndim, const int64_t *shape, char *buf, size_t n);

/* One tensor to write: numel(shape) * size(dtype) bytes at data. */
typedef struct {
    const char *name;
    hy_dtype dtype;
    int ndim;
    int64_t shape[HY_ST_MAX_DIMS];
    const void *data;
} hy_st_entry;

/* Writes the file (see the top of this header). Metadata keys must be distinct, as must names. */
int hy_st_write(const char *path, int n_meta, const char *const *meta_keys, const char *const *meta_values,
                int n, const hy_st_entry *tensors);

#endif

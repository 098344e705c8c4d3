/* Tracked, 64-byte aligned allocations. Every large buffer of the library goes through here so
 * that peak memory of a block or a model can be measured (the peak_bytes column of layers.csv). */
#ifndef HY_CORE_MEM_H
#define HY_CORE_MEM_H
#include <stddef.h>

void *hy_malloc(size_t bytes);          /* NULL (and hy_fail) on failure; bytes may be 0 */
void *hy_calloc(size_t bytes);          /* zero-filled */
void hy_free(void *p);                  /* NULL is fine */
size_t hy_mem_current(void);            /* bytes live now */
size_t hy_mem_peak(void);               /* highest hy_mem_current() since the last reset */
void hy_mem_reset_peak(void);           /* peak := current */
/* The memory a new run can use, in bytes: MemAvailable of /proc/meminfo, or less when the process's
 * cgroup (v2 memory.max, v1 memory.limit_in_bytes) leaves less; the environment variable
 * HYBRID_MEM_AVAILABLE (bytes, or with a K, M, G or T suffix: powers of 1024) replaces both.
 * `source` (n bytes) says where the figure came from; *bytes < 0 when nothing tells. Returns 0, or
 * negative for a malformed HYBRID_MEM_AVAILABLE. */
int hy_mem_available(double *bytes, char *source, size_t n);

/* A growable float scratch buffer: reserve(n) keeps the contents' first min(old,n) only when
 * grown by hy_buf_reserve; the pointer changes when it grows. Zero-initialised struct = empty. */
typedef struct {
    float *p;
    size_t cap;    /* floats */
} hy_buf;
float *hy_buf_reserve(hy_buf *b, size_t n);   /* NULL on failure */
/* A workspace of at least n floats, contents dropped: frees before it grows (no copy, no double peak). */
float *hy_buf_grab(hy_buf *b, size_t n);
void hy_buf_free(hy_buf *b);

#endif

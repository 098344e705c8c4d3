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

/* Arrays that one loop reads and writes together, row by row, are placed at distinct offsets within
 * a 4 KiB page. Separate large allocations all start at the same page offset, and when such
 * arrays are walked with a row stride that is a multiple of 4 KiB (or of 1 or 2 KiB), the rows of
 * every array fall into the same few sets of the L1 cache (64 sets of 64-byte lines span 4 KiB),
 * which then holds 12 lines per set at most; a store and a later load 4 KiB apart are also taken for
 * the same address by the load/store unit for a while. HY_SKEW_SLOTS slots of HY_SKEW_BYTES (4
 * cache lines, one row of a 64-float head) cover the 4 KiB. */
#define HY_SKEW_BYTES 256
#define HY_SKEW_SLOTS 16
/* Floats a workspace needs for `count` arrays of n floats placed by hy_buf_grab_skewed (the same
 * for every first_slot): each array in its own whole number of pages plus one page, plus one page
 * to align the first: for memory estimates. */
size_t hy_skewed_floats(size_t n, int count);
/* Points arr[0..count) at count arrays of n floats each inside the workspace b (grown as
 * hy_buf_grab: contents dropped), array i starting ((first_slot + i) mod HY_SKEW_SLOTS)·HY_SKEW_BYTES
 * bytes past a 4 KiB boundary, so two workspaces laid out by this with different slots do not
 * share offsets either. Returns b->p, or NULL (and hy_fail) when it cannot grow. */
float *hy_buf_grab_skewed(hy_buf *b, size_t n, int count, int first_slot, float **arr);

#endif

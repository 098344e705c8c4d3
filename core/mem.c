#include "core/mem.h"
#include "core/error.h"
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define HEADER 64   /* keeps the user pointer 64-byte aligned and stores the size */

static atomic_size_t mem_current, mem_peak;

void *hy_malloc(size_t bytes) {
    char *raw = aligned_alloc(HEADER, HEADER + ((bytes + HEADER - 1) / HEADER) * HEADER);
    if (!raw) {
        hy_fail_code(HY_ERR_NOMEM, "out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    memcpy(raw, &bytes, sizeof bytes);
    size_t now = atomic_fetch_add(&mem_current, bytes) + bytes;
    size_t peak = atomic_load(&mem_peak);
    while (now > peak && !atomic_compare_exchange_weak(&mem_peak, &peak, now)) {
    }
    return raw + HEADER;
}

void *hy_calloc(size_t bytes) {
    void *p = hy_malloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void hy_free(void *p) {
    if (!p) return;
    char *raw = (char *)p - HEADER;
    size_t bytes;
    memcpy(&bytes, raw, sizeof bytes);
    atomic_fetch_sub(&mem_current, bytes);
    free(raw);
}

size_t hy_mem_current(void) { return atomic_load(&mem_current); }
size_t hy_mem_peak(void) { return atomic_load(&mem_peak); }
void hy_mem_reset_peak(void) { atomic_store(&mem_peak, atomic_load(&mem_current)); }

float *hy_buf_reserve(hy_buf *b, size_t n) {
    if (n <= b->cap && b->p) return b->p;
    float *p = hy_malloc(n * sizeof(float));
    if (!p) return NULL;
    if (b->p) {
        memcpy(p, b->p, b->cap * sizeof(float));
        hy_free(b->p);
    }
    b->p = p;
    b->cap = n;
    return p;
}

float *hy_buf_grab(hy_buf *b, size_t n) {
    if (n > b->cap) hy_buf_free(b);
    return hy_buf_reserve(b, n ? n : 1);
}

void hy_buf_free(hy_buf *b) {
    hy_free(b->p);
    b->p = NULL;
    b->cap = 0;
}

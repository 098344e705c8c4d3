#include "core/mem.h"
#include "core/error.h"
#include <ctype.h>
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
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

/* The number in file `path` (first line), or -1 when it cannot be read or is not a number ("max"). */
static double file_number(const char *path) {
    FILE *f = fopen(path, "r");
    char line[64] = "";
    if (!f) return -1;
    bool got = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    char *end;
    double v = got ? strtod(line, &end) : -1;
    return got && end != line && isfinite(v) ? v : -1;
}

/* MemAvailable of /proc/meminfo in bytes, or -1. */
static double meminfo_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    double kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb >= 0 ? kb * 1024 : -1;
}

/* The cgroup's limit less its usage (v2, then v1), or -1 when there is no limit. */
static double cgroup_available(const char **which) {
    double max = file_number("/sys/fs/cgroup/memory.max"), cur = file_number("/sys/fs/cgroup/memory.current");
    *which = "the cgroup's memory.max less memory.current";
    if (max >= 0 && cur >= 0) return max - cur;
    max = file_number("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    cur = file_number("/sys/fs/cgroup/memory/memory.usage_in_bytes");
    *which = "the cgroup's memory.limit_in_bytes less memory.usage_in_bytes";
    if (max >= 0 && max < 0x1p60 && cur >= 0) return max - cur;   /* v1 says "no limit" with a huge number */
    return -1;
}

int hy_mem_available(double *bytes, char *source, size_t n) {
    const char *env = getenv("HYBRID_MEM_AVAILABLE");
    *bytes = -1;
    if (env && *env) {
        char *end;
        double v = strtod(env, &end);
        const char *units = "KMGT", *u = *end ? strchr(units, toupper((unsigned char)*end)) : NULL;
        if (u && end[1] == 0) v *= pow(1024, (double)(u - units + 1));
        else if (*end) v = -1;
        if (!(v >= 0) || !isfinite(v))
            return hy_fail("HYBRID_MEM_AVAILABLE: '%s' is not a number of bytes (e.g. 8G)", env);
        *bytes = v;
        snprintf(source, n, "HYBRID_MEM_AVAILABLE=%s", env);
        return 0;
    }
    const char *which = NULL;
    double mem = meminfo_available(), cg = cgroup_available(&which);
    if (mem < 0 && cg < 0) snprintf(source, n, "unknown: no MemAvailable in /proc/meminfo");
    else if (cg >= 0 && (mem < 0 || cg < mem)) {
        *bytes = cg > 0 ? cg : 0;
        snprintf(source, n, "%s", which);
    } else {
        *bytes = mem;
        snprintf(source, n, "MemAvailable in /proc/meminfo");
    }
    return 0;
}

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

#define SKEW_PAGE 4096

/* Bytes of one array's place in a skewed workspace: its pages, rounded up, and one page for its offset. */
static size_t skewed_stride(size_t n) {
    return (n * sizeof(float) + SKEW_PAGE - 1) / SKEW_PAGE * SKEW_PAGE + SKEW_PAGE;
}

size_t hy_skewed_floats(size_t n, int count) {
    return (SKEW_PAGE + (size_t)(count > 0 ? count : 0) * skewed_stride(n)) / sizeof(float);
}

float *hy_buf_grab_skewed(hy_buf *b, size_t n, int count, int first_slot, float **arr) {
    float *p = hy_buf_grab(b, hy_skewed_floats(n, count));
    if (!p) return NULL;
    char *page = (char *)(((uintptr_t)p + SKEW_PAGE - 1) / SKEW_PAGE * SKEW_PAGE);
    for (int i = 0; i < count; i++) {
        const int slot = ((first_slot + i) % HY_SKEW_SLOTS + HY_SKEW_SLOTS) % HY_SKEW_SLOTS;
        arr[i] = (float *)(page + (size_t)i * skewed_stride(n) + (size_t)slot * HY_SKEW_BYTES);
    }
    return p;
}

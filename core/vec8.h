/* 8-float vectors (one AVX2 ymm register) as gcc's generic vector extension, for the hand-blocked
 * kernels (the Mamba scan, the RWKV-7 state update). The compiler maps them to whatever the target
 * has; loads and stores go through memcpy, so no alignment is assumed. */
#ifndef HY_CORE_VEC8_H
#define HY_CORE_VEC8_H
#include <stdint.h>
#include <string.h>

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));

static inline v8 v8_load(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void v8_store(float *p, v8 v) { memcpy(p, &v, sizeof v); }
static inline v8 v8_splat(float x) { return (v8){x, x, x, x, x, x, x, x}; }

#endif

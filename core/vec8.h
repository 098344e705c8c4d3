/* 8-float vectors (one AVX2 ymm register) and the target's widest float vector (vw), as gcc's
 * generic vector extension, for the hand-blocked kernels (the Mamba scan, the RWKV-7 state update).
 * The compiler maps them to whatever the target has; loads and stores go through memcpy, so no
 * alignment is assumed. */
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

/* The target's widest float vector, HY_VW floats: 16 (one zmm) where AVX-512 is there, else 8.
 * For kernels whose blocking only needs "a register's worth" of floats (the RWKV-7 state update);
 * vw_fold8 adds its halves down to 8 floats for horizontal sums. On AVX2 it is v8 itself. */
#if defined(__AVX512F__)
#define HY_VW 16
typedef float vw __attribute__((vector_size(64)));
static inline v8 vw_fold8(vw a) {
    v8 lo, hi;
    memcpy(&lo, &a, sizeof lo);
    memcpy(&hi, (char *)&a + sizeof lo, sizeof hi);
    return lo + hi;
}
#else
#define HY_VW 8
typedef v8 vw;
static inline v8 vw_fold8(vw a) { return a; }
#endif
/* A two-source shuffle of vectors a and b with constant lane indices (0 .. n-1 pick from a, n .. 2n-1
 * from b): gcc's __builtin_shuffle with a mask of type M (an int vector as wide as a), clang's
 * __builtin_shufflevector with the indices as arguments. Gcc compiles exactly what it compiled
 * before the macro. */
#if defined(__clang__)
#define HY_SHUFFLE(M, a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define HY_SHUFFLE(M, a, b, ...) __builtin_shuffle(a, b, (M){__VA_ARGS__})
#endif

static inline vw vw_load(const float *p) {
    vw v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void vw_store(float *p, vw v) { memcpy(p, &v, sizeof v); }

#endif

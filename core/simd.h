/* simd — the one vector layer of the hand-written kernels (the attention tiles and softmax rows, the
 * Mamba scan, the RWKV-7 state update): vw is the target's widest float vector, HY_VW floats, 16
 * (one zmm) where the build has AVX-512, else 8 (one ymm). Kernels are written once over vw (GCC
 * vector extensions for arithmetic: +, -, *, compares) and the few operations below, so an
 * AVX-512 build runs them 16 floats wide and an AVX2 build 8 wide from the same source (make test
 * builds and runs the kernel suites both ways). Loads and stores assume no alignment.
 *
 * Besides vw: a broadcast load (vw_bcast), fused multiply-add, square root, max, horizontal max and
 * sum, the sums of HY_VW rows at once (a transpose-and-add tree), lane masks (vw_mask: the lanes
 * below a count, for tails shorter than a vector), non-temporal stores, v8 (8 floats) for code
 * whose blocking is fixed at 8 lanes whatever the width (the RWKV-7 state transposes), and vwd
 * (HY_VW/2 doubles) for sums of floats kept in double (the gradient norm). With AVX2 and FMA, or AVX-512, each operation is one or a few
 * instructions; without AVX2 (not built or tested here) lane loops keep the code compiling. */
#ifndef HY_CORE_SIMD_H
#define HY_CORE_SIMD_H
#include <stdint.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define HY_SIMD_X86 1
#endif

/* A two-source shuffle of vectors a and b with constant lane indices (0 .. n-1 pick from a, n .. 2n-1
 * from b): gcc's __builtin_shuffle with a mask of type M (an int vector as wide as a), clang's
 * __builtin_shufflevector with the indices as arguments. */
#if defined(__clang__)
#define HY_SHUFFLE(M, a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define HY_SHUFFLE(M, a, b, ...) __builtin_shuffle(a, b, (M){__VA_ARGS__})
#endif

#if defined(__AVX512F__)
#define HY_VW 16
#else
#define HY_VW 8
#endif
typedef float vw __attribute__((vector_size(4 * HY_VW)));
typedef int32_t vwi __attribute__((vector_size(4 * HY_VW)));
typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef double vwd __attribute__((vector_size(4 * HY_VW)));   /* HY_VW/2 doubles (as wide as a vw) */
typedef float vwh __attribute__((vector_size(2 * HY_VW)));    /* HY_VW/2 floats */


static inline vw vw_load(const float *p) {
    vw v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void vw_store(float *p, vw v) { memcpy(p, &v, sizeof v); }
static inline vw vw_splat(float x) { return (vw){0} + x; }
/* The float at p in every lane: one broadcast load (vw_splat of a value read from memory is an
 * add of zero, which keeps x = -0 apart from +0, and a register broadcast: two more instructions). */
static inline vw vw_bcast(const float *p) {
#if defined(__AVX512F__)
    return _mm512_set1_ps(*p);
#elif defined(HY_SIMD_X86)
    return _mm256_broadcast_ss(p);
#else
    vw v;
    for (int i = 0; i < HY_VW; i++) v[i] = *p;
    return v;
#endif
}
static inline v8 v8_load(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void v8_store(float *p, v8 v) { memcpy(p, &v, sizeof v); }
static inline v8 v8_splat(float x) { return (v8){0} + x; }
/* HY_VW/2 floats at p widened to double (sums of floats kept in double). */
static inline vwd vwd_load_floats(const float *p) {
    vwh h;
    memcpy(&h, p, sizeof h);
    return __builtin_convertvector(h, vwd);
}

/* a·b + c rounded once. */
static inline vw vw_fma(vw a, vw b, vw c) {
#if defined(__AVX512F__)
    return _mm512_fmadd_ps(a, b, c);
#elif defined(HY_SIMD_X86)
    return _mm256_fmadd_ps(a, b, c);
#else
    vw r;
    for (int i = 0; i < HY_VW; i++) r[i] = __builtin_fmaf(a[i], b[i], c[i]);
    return r;
#endif
}

/* Lane-wise square root, correctly rounded (as sqrtf: the same bits). */
static inline vw vw_sqrt(vw a) {
#if defined(__AVX512F__)
    return _mm512_sqrt_ps(a);
#elif defined(HY_SIMD_X86)
    return _mm256_sqrt_ps(a);
#else
    vw r;
    for (int i = 0; i < HY_VW; i++) r[i] = __builtin_sqrtf(a[i]);
    return r;
#endif
}

/* Lane-wise max (as maxps: b where either is NaN). */
static inline vw vw_max(vw a, vw b) {
#if defined(__AVX512F__)
    return _mm512_max_ps(a, b);
#elif defined(HY_SIMD_X86)
    return _mm256_max_ps(a, b);
#else
    vw r;
    for (int i = 0; i < HY_VW; i++) r[i] = a[i] > b[i] ? a[i] : b[i];
    return r;
#endif
}

/* The lower and upper 8 lanes added (vw itself on AVX2). */
static inline v8 vw_fold8(vw a) {
#if HY_VW == 16
    v8 lo, hi;
    memcpy(&lo, &a, sizeof lo);
    memcpy(&hi, (char *)&a + sizeof lo, sizeof hi);
    return lo + hi;
#else
    return a;
#endif
}

/* Sum of the 8 lanes of v: (0+4, 1+5, 2+6, 3+7), then pairs, then the last two. */
static inline float v8_hsum(v8 v) {
    float a0 = v[0] + v[4], a1 = v[1] + v[5], a2 = v[2] + v[6], a3 = v[3] + v[7];
    return (a0 + a2) + (a1 + a3);
}

/* Horizontal sum and max of the lanes of v. */
static inline float vw_hsum(vw v) {
#if defined(__AVX512F__)
    return _mm512_reduce_add_ps(v);
#else
    return v8_hsum(v);
#endif
}
static inline float vw_hmax(vw v) {
#if defined(__AVX512F__)
    return _mm512_reduce_max_ps(v);
#else
    float a0 = v[0] > v[4] ? v[0] : v[4], a1 = v[1] > v[5] ? v[1] : v[5], a2 = v[2] > v[6] ? v[2] : v[6],
          a3 = v[3] > v[7] ? v[3] : v[7];
    a0 = a0 > a2 ? a0 : a2, a1 = a1 > a3 ? a1 : a3;
    return a0 > a1 ? a0 : a1;
#endif
}

/* Lane masks: vw_mask_first(n) selects lanes 0 .. n-1 (n clamped to 0 .. HY_VW). Masked loads
 * read nothing outside the mask (no fault past the end of an array) and give 0 there; masked
 * stores write only the masked lanes. vw_keep zeroes the lanes outside the mask; vw_select
 * takes a where the mask is set, b elsewhere. */
#if defined(__AVX512F__)
typedef __mmask16 vw_mask;
static inline vw_mask vw_mask_first(int n) {
    return n >= 16 ? (vw_mask)0xffff : n <= 0 ? (vw_mask)0 : (vw_mask)((1u << n) - 1);
}
static inline vw vw_load_masked(const float *p, vw_mask m) { return _mm512_maskz_loadu_ps(m, p); }
static inline void vw_store_masked(float *p, vw_mask m, vw v) { _mm512_mask_storeu_ps(p, m, v); }
static inline vw vw_keep(vw v, vw_mask m) { return _mm512_maskz_mov_ps(m, v); }
static inline vw vw_select(vw_mask m, vw a, vw b) { return _mm512_mask_blend_ps(m, b, a); }
#else
typedef vwi vw_mask;
static inline vw_mask vw_mask_first(int n) { return (vwi){0, 1, 2, 3, 4, 5, 6, 7} < n; }
#if defined(HY_SIMD_X86)
static inline vw vw_load_masked(const float *p, vw_mask m) { return _mm256_maskload_ps(p, (__m256i)m); }
static inline void vw_store_masked(float *p, vw_mask m, vw v) { _mm256_maskstore_ps(p, (__m256i)m, v); }
static inline vw vw_select(vw_mask m, vw a, vw b) { return _mm256_blendv_ps(b, a, (__m256)m); }
#else
static inline vw vw_load_masked(const float *p, vw_mask m) {
    vw v = {0};
    for (int i = 0; i < HY_VW; i++)
        if (m[i]) v[i] = p[i];
    return v;
}
static inline void vw_store_masked(float *p, vw_mask m, vw v) {
    for (int i = 0; i < HY_VW; i++)
        if (m[i]) p[i] = v[i];
}
static inline vw vw_select(vw_mask m, vw a, vw b) { return (vw)(((vwi)a & m) | ((vwi)b & ~m)); }
#endif
static inline vw vw_keep(vw v, vw_mask m) { return (vw)((vwi)v & m); }
#endif

/* Whether any lane of m is not zero. */
static inline int vwi_any(vwi m) {
    uint64_t part[sizeof m / 8], any = 0;
    memcpy(part, &m, sizeof m);
    for (size_t i = 0; i < sizeof m / 8; i++) any |= part[i];
    return any != 0;
}

/* Horizontal sums of HY_VW rows at once, as a transpose-and-add tree that adds neighbours first:
 *   vw_rows_pair(a, b)  within each 4-lane chunk: (a0+a1, a2+a3, b0+b1, b2+b3), i.e. two rows'
 *                       pairs side by side (haddps);
 *   vw_rows_finish(y)   from HY_VW/2 such vectors: pairs again (each 4-lane chunk then holds four
 *                       rows' sums over that chunk), then the chunks of two vectors added pairwise
 *                       until lane r holds the sum of row r.
 * Every step is two shuffles and an add; the shuffles stay within 4-lane chunks (cheap shufps)
 * except the last log2(HY_VW/4) levels, which move whole chunks. HY_VW − 1 steps for HY_VW rows,
 * against a dependent chain of several operations per row for separate horizontal sums. A row of
 * lanes x0 .. x(HY_VW-1) sums as the pairwise tree ((x0+x1)+(x2+x3)) + ((x4+x5)+(x6+x7)) ...;
 * vw_tree_sum is that order for one row of n floats (n a power of two), for tails. */
#define HY_PAIR_LANE(L, o) ((L) % 4 < 2 ? 4 * ((L) / 4) + 2 * ((L) % 4) : HY_VW + 4 * ((L) / 4) + 2 * ((L) % 4 - 2)) + (o)
#define HY_CHUNK_LANE(L, o) \
    (((L) / 4 < HY_VW / 8 ? 8 * ((L) / 4) : HY_VW + 8 * ((L) / 4 - HY_VW / 8)) + (L) % 4 + 4 * (o))
#if HY_VW == 16
#define HY_LANES(F, o) \
    F(0, o), F(1, o), F(2, o), F(3, o), F(4, o), F(5, o), F(6, o), F(7, o), F(8, o), F(9, o), F(10, o), F(11, o), \
        F(12, o), F(13, o), F(14, o), F(15, o)
#else
#define HY_LANES(F, o) F(0, o), F(1, o), F(2, o), F(3, o), F(4, o), F(5, o), F(6, o), F(7, o)
#endif
static inline __attribute__((always_inline)) vw vw_rows_pair(vw a, vw b) {
    return HY_SHUFFLE(vwi, a, b, HY_LANES(HY_PAIR_LANE, 0)) + HY_SHUFFLE(vwi, a, b, HY_LANES(HY_PAIR_LANE, 1));
}
static inline __attribute__((always_inline)) vw vw_chunks_pair(vw a, vw b) {
    return HY_SHUFFLE(vwi, a, b, HY_LANES(HY_CHUNK_LANE, 0)) + HY_SHUFFLE(vwi, a, b, HY_LANES(HY_CHUNK_LANE, 1));
}
/* y: HY_VW / 2 vectors of vw_rows_pair (rows 2p, 2p+1 in y[p]); returns the HY_VW row sums (y is
 * overwritten). */
static inline __attribute__((always_inline)) vw vw_rows_finish(vw *y) {
    for (int p = 0; p < HY_VW / 4; p++) y[p] = vw_rows_pair(y[2 * p], y[2 * p + 1]);
    for (int n = HY_VW / 4; n > 1; n /= 2)
        for (int p = 0; p < n / 2; p++) y[p] = vw_chunks_pair(y[2 * p], y[2 * p + 1]);
    return y[0];
}
/* The sums of the HY_VW rows x[0..HY_VW) (x is overwritten). */
static inline __attribute__((always_inline)) vw vw_rows_sum(vw *x) {
    for (int p = 0; p < HY_VW / 2; p++) x[p] = vw_rows_pair(x[2 * p], x[2 * p + 1]);
    return vw_rows_finish(x);
}
/* Σ x[0..n) in the order of the trees above: neighbours, then pairs of pairs... (x overwritten). */
static inline float vw_tree_sum(float *x, int n) {
    for (; n > 1; n /= 2)
        for (int i = 0; i < n / 2; i++) x[i] = x[2 * i] + x[2 * i + 1];
    return x[0];
}

/* Stores v at p without keeping the line in the caches when p is aligned to a whole vector (a
 * plain store otherwise); hy_stream_fence orders such stores before later ones (for the data to
 * be read by other threads). */
static inline void vw_stream(float *p, vw v) {
#if defined(__AVX512F__)
    if (((uintptr_t)p & 63) == 0) {
        _mm512_stream_ps(p, v);
        return;
    }
#elif defined(HY_SIMD_X86)
    if (((uintptr_t)p & 31) == 0) {
        _mm256_stream_ps(p, v);
        return;
    }
#endif
    vw_store(p, v);
}
static inline void hy_stream_fence(void) {
#if defined(HY_SIMD_X86)
    _mm_sfence();
#else
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

/* The 8×8 transpose of the rows r[0..7] in registers (unpack, shuffle, 128-bit-lane stages):
 * afterwards r[m] holds column m of the tile. */
static inline void v8_transpose(v8 r[8]) {
#define HY_T_LO 0, 8, 1, 9, 4, 12, 5, 13
#define HY_T_HI 2, 10, 3, 11, 6, 14, 7, 15
#define HY_T_LO2 0, 1, 8, 9, 4, 5, 12, 13
#define HY_T_HI2 2, 3, 10, 11, 6, 7, 14, 15
#define HY_T_LO4 0, 1, 2, 3, 8, 9, 10, 11
#define HY_T_HI4 4, 5, 6, 7, 12, 13, 14, 15
    v8 a[8], b[8];
    for (int m = 0; m < 8; m += 2)
        a[m] = HY_SHUFFLE(v8i, r[m], r[m + 1], HY_T_LO), a[m + 1] = HY_SHUFFLE(v8i, r[m], r[m + 1], HY_T_HI);
    for (int m = 0; m < 8; m += 4)
        for (int e = 0; e < 2; e++)
            b[m + e] = HY_SHUFFLE(v8i, a[m + e], a[m + e + 2], HY_T_LO2),
                  b[m + e + 2] = HY_SHUFFLE(v8i, a[m + e], a[m + e + 2], HY_T_HI2);
    /* the stages leave columns in the order 0 2 1 3 4 6 5 7 */
    static const int col[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    for (int e = 0; e < 4; e++)
        r[col[e]] = HY_SHUFFLE(v8i, b[e], b[e + 4], HY_T_LO4), r[col[e + 4]] = HY_SHUFFLE(v8i, b[e], b[e + 4], HY_T_HI4);
#undef HY_T_LO
#undef HY_T_HI
#undef HY_T_LO2
#undef HY_T_HI2
#undef HY_T_LO4
#undef HY_T_HI4
}

/* dst = srcᵀ: src rows × cols (row stride ld_src), dst cols × rows (row stride ld_dst); whole 8×8
 * tiles in registers (v8_transpose), the edges element by element. */
static inline void hy_transpose(float *restrict dst, size_t ld_dst, const float *restrict src, size_t ld_src, int rows,
                                int cols) {
    const int r8 = rows / 8 * 8, c8 = cols / 8 * 8;
    for (int rb = 0; rb < r8; rb += 8)
        for (int cb = 0; cb < c8; cb += 8) {
            v8 t[8];
            for (int m = 0; m < 8; m++) t[m] = v8_load(src + (size_t)(rb + m) * ld_src + cb);
            v8_transpose(t);
            for (int m = 0; m < 8; m++) v8_store(dst + (size_t)(cb + m) * ld_dst + rb, t[m]);
        }
    for (int r = 0; r < rows; r++)
        for (int c = r < r8 ? c8 : 0; c < cols; c++) dst[(size_t)c * ld_dst + r] = src[(size_t)r * ld_src + c];
}

#endif

/* bf16 conversions and the bf16 tile product (see bf16.h). The native path is compiled only
 * where the compiler targets AVX512_BF16 (with AVX512BW/VL for the masked tails); everything
 * else, and a forced fallback, runs the portable code, which rounds to the same bits. */
#include "core/bf16.h"
#include "core/error.h"
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512BF16__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define HY_BF16_NATIVE 1
#else
#define HY_BF16_NATIVE 0
#endif

static bool force_portable;

void hy_bf16_force_portable(bool on) { force_portable = on; }
bool hy_bf16_native(void) { return HY_BF16_NATIVE && !force_portable; }

/* Round to nearest even on the top 16 bits; denormals to signed zero and NaN to a quiet NaN, as
 * vcvtne2ps2bf16 does. */
hy_bf16 hy_bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (hy_bf16)((u >> 16) | 0x40u);
    if ((u & 0x7f800000u) == 0) u &= 0x80000000u;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (hy_bf16)(u >> 16);
}

static void from_f32_portable(hy_bf16 *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = hy_bf16_round(src[i]);
}

#if HY_BF16_NATIVE
/* 32 floats per vcvtne2ps2bf16, the tail (< 32) under masks. */
static void from_f32_native(hy_bf16 *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
        _mm512_storeu_si512((void *)(dst + i), (__m512i)v);
    }
    for (; i < n; i += 16) {
        size_t r = n - i < 16 ? n - i : 16;
        __mmask16 m = (__mmask16)((1u << r) - 1u);
        __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
        _mm256_mask_storeu_epi16((void *)(dst + i), m, (__m256i)v);
    }
}
#endif

void hy_bf16_from_f32(hy_bf16 *dst, const float *src, size_t n) {
#if HY_BF16_NATIVE
    if (!force_portable) {
        from_f32_native(dst, src, n);
        return;
    }
#endif
    from_f32_portable(dst, src, n);
}

void hy_bf16_from_f32_2d(hy_bf16 *dst, size_t ldd, const float *src, size_t lds, size_t rows, size_t cols) {
    if (ldd == cols && lds == cols) {   /* one contiguous run: split it in even blocks */
        size_t n = rows * cols, block = 1 << 16, nb = (n + block - 1) / block;
        #pragma omp parallel for schedule(static) if (nb > 1 && !omp_in_parallel())
        for (size_t b = 0; b < nb; b++) {
            size_t lo = b * block, len = n - lo < block ? n - lo : block;
            hy_bf16_from_f32(dst + lo, src + lo, len);
        }
        return;
    }
    #pragma omp parallel for schedule(static) if (rows * cols > 65536 && !omp_in_parallel())
    for (size_t r = 0; r < rows; r++) hy_bf16_from_f32(dst + r * ldd, src + r * lds, cols);
}

void hy_bf16_to_f32(float *dst, const hy_bf16 *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = hy_bf16_value(src[i]);
}

/* ---------------------------------------------------------------- tile product ---- */

/* Per-thread packing buffers: A as bf16 pairs along k, B as pairs interleaved by column. Every
 * thread's buffers are listed so that hy_bf16_shutdown can free them from the main thread. */
typedef struct pack_bufs {
    hy_bf16 *a, *b;
    size_t cap_a, cap_b;   /* in bf16 values */
    struct pack_bufs *next;
} pack_bufs;

static _Thread_local pack_bufs *my_bufs;
static atomic_llong pack_bytes;   /* outside hy_malloc's accounting, as gemm.c's buffers */
static pack_bufs *all_bufs;
static pthread_mutex_t bufs_lock = PTHREAD_MUTEX_INITIALIZER;

static pack_bufs *thread_bufs(void) {
    if (!my_bufs) {
        pack_bufs *p = calloc(1, sizeof *p);
        if (!p) return NULL;
        pthread_mutex_lock(&bufs_lock);
        p->next = all_bufs;
        all_bufs = p;
        pthread_mutex_unlock(&bufs_lock);
        my_bufs = p;
    }
    return my_bufs;
}

static hy_bf16 *grow(hy_bf16 **p, size_t *cap, size_t n) {
    if (n <= *cap && *p) return *p;
    free(*p);
    atomic_fetch_sub(&pack_bytes, (long long)(*cap * sizeof(hy_bf16)));
    *p = aligned_alloc(64, (n * sizeof(hy_bf16) + 64) & ~(size_t)63);
    *cap = *p ? n : 0;
    atomic_fetch_add(&pack_bytes, (long long)(*cap * sizeof(hy_bf16)));
    return *p;
}

double hy_bf16_buffer_bytes(void) { return (double)atomic_load(&pack_bytes); }

void hy_bf16_shutdown(void) {
    pthread_mutex_lock(&bufs_lock);
    for (pack_bufs *p = all_bufs, *next; p; p = next) {
        next = p->next;
        free(p->a), free(p->b), free(p);
    }
    all_bufs = NULL;
    atomic_store(&pack_bytes, 0);
    my_bufs = NULL;   /* only this thread's pointer: the others are not used after shutdown */
    pthread_mutex_unlock(&bufs_lock);
}

/* Packed operands: the pair (A(i, 2p), A(i, 2p+1)) is the 32-bit word a[i*sai + p*sap]; the pair
 * (B(2p, j), B(2p+1, j)) is the word b[p*NP + j]; K is padded to KP pairs with zeros and the
 * columns to NP (a multiple of 32) with zeros. */
typedef struct {
    const uint32_t *a, *b;
    ptrdiff_t sai, sap;
    int KP, NP;
} packed;

/* A element (i, k), or 0 past K. */
static inline float a_at(const float *A, ptrdiff_t sam, ptrdiff_t sak, int K, int i, int k) {
    return k < K ? A[i * sam + k * sak] : 0.0f;
}

/* Portable packing of A, row-major pairs (sai = KP, sap = 1), any strides. */
static void pack_a_portable(int M, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak, hy_bf16 *pa, packed *p) {
    for (int i = 0; i < M; i++)
        for (int q = 0; q < p->KP; q++) {
            hy_bf16 *w = pa + 2 * ((size_t)i * p->KP + q);
            w[0] = hy_bf16_round(a_at(A, sam, sak, K, i, 2 * q));
            w[1] = hy_bf16_round(a_at(A, sam, sak, K, i, 2 * q + 1));
        }
    p->sai = p->KP, p->sap = 1;
}

/* Portable packing of B (the layout of `packed`: word (q, j) at q*NP + j, columns j < width). */
static void pack_b_portable(int N, int K, const float *B, ptrdiff_t ldb, hy_bf16 *pb, const packed *p, int width) {
    for (int q = 0; q < p->KP; q++)
        for (int j = 0; j < width; j++) {
            hy_bf16 *w = pb + 2 * ((size_t)q * p->NP + j);
            w[0] = j < N ? hy_bf16_round(B[(ptrdiff_t)(2 * q) * ldb + j]) : 0;
            w[1] = j < N && 2 * q + 1 < K ? hy_bf16_round(B[(ptrdiff_t)(2 * q + 1) * ldb + j]) : 0;
        }
}

/* Portable product on the packed operands: per element, the pairs in order, each product added
 * with one rounding (as vdpbf16ps: bf16 x bf16 is exact in f32). */
static void product_portable(int M, int N, const packed *p, float *C, ptrdiff_t ldc, bool acc, const float *rs) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = 0.0f;
            for (int q = 0; q < p->KP; q++) {
                uint32_t a = p->a[i * p->sai + q * p->sap], b = p->b[(size_t)q * p->NP + j];
                s += hy_bf16_value((hy_bf16)(a >> 16)) * hy_bf16_value((hy_bf16)(b >> 16));
                s += hy_bf16_value((hy_bf16)a) * hy_bf16_value((hy_bf16)b);
            }
            float *c = C + i * ldc + j;
            *c = !acc ? s : rs ? fmaf(*c, rs[i], s) : *c + s;   /* as the vector path: one rounding */
        }
}

#if HY_BF16_NATIVE
#define INLINE static inline __attribute__((always_inline))
enum { MR = 8 };   /* register block: 8 rows x 32 columns = 16 zmm accumulators */

/* Two rows r0, r1 (16 floats each, lanes past n zero) as 16 interleaved pairs (r0[j], r1[j]). */
INLINE __m512i pair_rows(const float *r0, const float *r1, __mmask16 m) {
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    __m512 x0 = _mm512_maskz_loadu_ps(m, r0), x1 = r1 ? _mm512_maskz_loadu_ps(m, r1) : _mm512_setzero_ps();
    return _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
}

/* Vector packing of A: rows contiguous in k (sak = 1) convert straight into row-major pairs;
 * columns contiguous in i (sam = 1, a transposed A) are packed pair-major (sai = 1, sap = MP) by
 * interleaving k-rows 2q and 2q+1; other strides take the portable packing. The words are the
 * portable packing's, bit for bit. */
static void pack_a_native(int M, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak, hy_bf16 *pa, packed *p) {
    const int KP = p->KP;
    if (sak == 1) {
        for (int i = 0; i < M; i++) {
            hy_bf16 *dst = pa + (size_t)i * 2 * KP;
            from_f32_native(dst, A + i * sam, (size_t)K);
            if (K % 2) dst[K] = 0;
        }
        p->sai = KP, p->sap = 1;
    } else if (sam == 1) {
        int MP = (M + 15) & ~15;
        uint32_t *w = (uint32_t *)(void *)pa;
        for (int q = 0; q < KP; q++)
            for (int i = 0; i < M; i += 16) {
                __mmask16 m = (__mmask16)(M - i >= 16 ? 0xffffu : (1u << (M - i)) - 1u);
                const float *r0 = A + (ptrdiff_t)(2 * q) * sak + i;
                const float *r1 = 2 * q + 1 < K ? r0 + sak : NULL;
                _mm512_storeu_si512((void *)(w + (size_t)q * MP + i), pair_rows(r0, r1, m));
            }
        p->sai = 1, p->sap = MP;
    } else {
        pack_a_portable(M, K, A, sam, sak, pa, p);
    }
}

/* Vector packing of B: k-rows 2q and 2q+1 interleaved, 16 columns at a time, columns j < width. */
static void pack_b_native(int N, int K, const float *B, ptrdiff_t ldb, hy_bf16 *pb, const packed *p, int width) {
    uint32_t *w = (uint32_t *)(void *)pb;
    for (int q = 0; q < p->KP; q++)
        for (int j = 0; j < width; j += 16) {
            int left = N - j;
            __mmask16 m = (__mmask16)(left >= 16 ? 0xffffu : left > 0 ? (1u << left) - 1u : 0u);
            const float *r0 = B + (ptrdiff_t)(2 * q) * ldb + (j < N ? j : 0);
            const float *r1 = 2 * q + 1 < K ? r0 + ldb : NULL;
            _mm512_storeu_si512((void *)(w + (size_t)q * p->NP + j), pair_rows(r0, r1, m));
        }
}

/* C rows [0, mr) x 32 columns (the second 16 only when nv == 2; lanes masked by m0/m1) from the
 * packed operands starting at row block a and column block b. */
INLINE void block(const int mr, const int nv, int KP, const uint32_t *a, ptrdiff_t sai, ptrdiff_t sap,
                  const uint32_t *b, int NP, float *C, ptrdiff_t ldc, __mmask16 m0, __mmask16 m1, bool acc,
                  const float *rs) {
    __m512 c[MR][2];
    _Pragma("GCC unroll 8") for (int i = 0; i < mr; i++) c[i][0] = c[i][1] = _mm512_setzero_ps();
    for (int q = 0; q < KP; q++) {
        const uint32_t *bq = b + (size_t)q * NP, *aq = a + q * sap;
        __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)bq);
        __m512bh b1 = nv == 2 ? (__m512bh)_mm512_loadu_si512((const void *)(bq + 16)) : b0;
        _Pragma("GCC unroll 8") for (int i = 0; i < mr; i++) {
            __m512bh ai = (__m512bh)_mm512_set1_epi32((int)aq[i * sai]);
            c[i][0] = _mm512_dpbf16_ps(c[i][0], ai, b0);
            if (nv == 2) c[i][1] = _mm512_dpbf16_ps(c[i][1], ai, b1);
        }
    }
    _Pragma("GCC unroll 8") for (int i = 0; i < mr; i++) {
        _Pragma("GCC unroll 2") for (int v = 0; v < nv; v++) {
            float *p = C + i * ldc + 16 * v;
            __mmask16 m = v ? m1 : m0;
            if (acc) {
                __m512 old = _mm512_maskz_loadu_ps(m, p);
                c[i][v] = rs ? _mm512_fmadd_ps(old, _mm512_set1_ps(rs[i]), c[i][v]) : _mm512_add_ps(c[i][v], old);
            }
            _mm512_mask_storeu_ps(p, m, c[i][v]);
        }
    }
}

typedef void block_fn(int, const uint32_t *, ptrdiff_t, ptrdiff_t, const uint32_t *, int, float *, ptrdiff_t, __mmask16,
                      __mmask16, bool, const float *);
#define BLOCK(R, NV)                                                                                             \
    static void block_##R##_##NV(int KP, const uint32_t *a, ptrdiff_t sai, ptrdiff_t sap, const uint32_t *b,     \
                                 int NP, float *C, ptrdiff_t ldc, __mmask16 m0, __mmask16 m1, bool acc,           \
                                 const float *rs) {                                                             \
        block(R, NV, KP, a, sai, sap, b, NP, C, ldc, m0, m1, acc, rs);                                           \
    }
#define BLOCKS(R) BLOCK(R, 1) BLOCK(R, 2)
BLOCKS(1) BLOCKS(2) BLOCKS(3) BLOCKS(4) BLOCKS(5) BLOCKS(6) BLOCKS(7) BLOCKS(8)
static block_fn *const blocks[MR][2] = {{block_1_1, block_1_2}, {block_2_1, block_2_2}, {block_3_1, block_3_2},
                                        {block_4_1, block_4_2}, {block_5_1, block_5_2}, {block_6_1, block_6_2},
                                        {block_7_1, block_7_2}, {block_8_1, block_8_2}};

/* The product over register blocks: for each block of MR rows, every 32-column strip of B. */
static void product_native(int M, int N, const packed *p, float *C, ptrdiff_t ldc, bool acc, const float *rs) {
    for (int i = 0; i < M; i += MR) {
        int mr = M - i < MR ? M - i : MR;
        for (int j = 0; j < N; j += 32) {
            int left = N - j, nv = left > 16 ? 2 : 1;
            __mmask16 m0 = (__mmask16)(left >= 16 ? 0xffffu : (1u << left) - 1u);
            __mmask16 m1 = (__mmask16)(left >= 32 ? 0xffffu : left > 16 ? (1u << (left - 16)) - 1u : 0u);
            blocks[mr - 1][nv - 1](p->KP, p->a + i * p->sai, p->sai, p->sap, p->b + j, p->NP, C + i * ldc + j, ldc, m0,
                                   m1, acc, rs ? rs + i : NULL);
        }
    }
}
#endif

int hy_bf16_tile_mm(int M, int N, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak, const float *B, ptrdiff_t ldb,
                    float *C, ptrdiff_t ldc, bool acc, const float *rs) {
    if (M <= 0 || N <= 0) return 0;
    if (K <= 0) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[i * ldc + j] = !acc ? 0.0f : rs ? C[i * ldc + j] * rs[i] : C[i * ldc + j];
        return 0;
    }
    pack_bufs *t = thread_bufs();
    packed p = {.KP = (K + 1) / 2, .NP = (N + 31) & ~31};
    size_t MP = (size_t)((M + 15) & ~15);
    if (!t || !grow(&t->a, &t->cap_a, MP * 2 * (size_t)p.KP) || !grow(&t->b, &t->cap_b, (size_t)p.NP * 2 * (size_t)p.KP))
        return hy_fail_code(HY_ERR_NOMEM, "bf16 tile product %d x %d x %d: no memory for the packed tiles", M, N, K);
    p.a = (const uint32_t *)(const void *)t->a, p.b = (const uint32_t *)(const void *)t->b;
#if HY_BF16_NATIVE
    if (!force_portable) {
        pack_a_native(M, K, A, sam, sak, t->a, &p);
        pack_b_native(N, K, B, ldb, t->b, &p, p.NP);
        product_native(M, N, &p, C, ldc, acc, rs);
        return 0;
    }
#endif
    pack_a_portable(M, K, A, sam, sak, t->a, &p);
    pack_b_portable(N, K, B, ldb, t->b, &p, p.NP);
    product_portable(M, N, &p, C, ldc, acc, rs);
    return 0;
}

/* Columns rounded up to 16: the product reads B's words 16 at a time. */
int hy_bf16_packed_width(int N) { return (N + 15) & ~15; }

void hy_bf16_pack_b(int K, int N, const float *B, ptrdiff_t ldb, uint32_t *dst, int ldw) {
    if (K <= 0 || N <= 0) return;
    packed p = {.KP = (K + 1) / 2, .NP = ldw};
#if HY_BF16_NATIVE
    if (!force_portable) {
        pack_b_native(N, K, B, ldb, (hy_bf16 *)(void *)dst, &p, hy_bf16_packed_width(N));
        return;
    }
#endif
    pack_b_portable(N, K, B, ldb, (hy_bf16 *)(void *)dst, &p, hy_bf16_packed_width(N));
}

int hy_bf16_tile_mm_packed(int M, int N, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak, const uint32_t *Bw,
                           int ldw, float *C, ptrdiff_t ldc, bool acc, const float *rs) {
    if (M <= 0 || N <= 0) return 0;
    if (K <= 0) return hy_bf16_tile_mm(M, N, K, A, sam, sak, NULL, 0, C, ldc, acc, rs);
    pack_bufs *t = thread_bufs();
    packed p = {.KP = (K + 1) / 2, .NP = ldw, .b = Bw};
    size_t MP = (size_t)((M + 15) & ~15);
    if (!t || !grow(&t->a, &t->cap_a, MP * 2 * (size_t)p.KP))
        return hy_fail_code(HY_ERR_NOMEM, "bf16 tile product %d x %d x %d: no memory for the packed tile", M, N, K);
    p.a = (const uint32_t *)(const void *)t->a;
#if HY_BF16_NATIVE
    if (!force_portable) {
        pack_a_native(M, K, A, sam, sak, t->a, &p);
        product_native(M, N, &p, C, ldc, acc, rs);
        return 0;
    }
#endif
    pack_a_portable(M, K, A, sam, sak, t->a, &p);
    product_portable(M, N, &p, C, ldc, acc, rs);
    return 0;
}

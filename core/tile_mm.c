/* The register-blocked small matrix product of core/tile_mm.h: blocks of MR rows × up to NV vectors
 * of C held in registers (4 × 4 = 16 accumulators) while k runs over the whole inner dimension,
 * each step one vector load per column vector of B and one broadcast per row of A. The last vector
 * of a row is masked when N is not a multiple of the vector width. */
#include "core/tile_mm.h"
#include "core/simd.h"

#define INLINE static inline __attribute__((always_inline))
enum { MR = HY_TILE_MR, NV = 4 };   /* rows and vectors of the register block */

/* One register block: rows [0, mr) × vectors [0, nv) of C (the last one masked to `mask` when
 * `masked`) from k in [0, K). mr, nv and masked are compile-time constants after inlining. */
INLINE void block(const int mr, const int nv, const bool masked, vw_mask mask, int K, const float *A, ptrdiff_t sam,
                  ptrdiff_t sak, const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, float cs, const float *rs) {
    vw c[MR][NV];
    _Pragma("GCC unroll 4") for (int i = 0; i < mr; i++)
        _Pragma("GCC unroll 4") for (int v = 0; v < nv; v++) c[i][v] = (vw){0};
    _Pragma("GCC unroll 2") for (int k = 0; k < K; k++) {
        const float *b = B + k * ldb, *a = A + k * sak;
        vw bv[NV];
        _Pragma("GCC unroll 4") for (int v = 0; v < nv; v++)
            bv[v] = masked && v == nv - 1 ? vw_load_masked(b + v * HY_VW, mask) : vw_load(b + v * HY_VW);
        _Pragma("GCC unroll 4") for (int i = 0; i < mr; i++) {
            const vw ai = vw_bcast(a + i * sam);   /* one broadcast load (vw_splat: an add and a shuffle) */
            _Pragma("GCC unroll 4") for (int v = 0; v < nv; v++) c[i][v] = vw_fma(ai, bv[v], c[i][v]);
        }
    }
    _Pragma("GCC unroll 4") for (int i = 0; i < mr; i++) {
        const float s = rs ? rs[i] : cs;
        _Pragma("GCC unroll 4") for (int v = 0; v < nv; v++) {
            float *p = C + i * ldc + v * HY_VW;
            const bool part = masked && v == nv - 1;
            vw r = c[i][v];
            if (s != 0.0f || rs) r = vw_fma(part ? vw_load_masked(p, mask) : vw_load(p), vw_splat(s), r);
            if (part) vw_store_masked(p, mask, r);
            else vw_store(p, r);
        }
    }
}

typedef void block_fn(vw_mask, int, const float *, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t, float *, ptrdiff_t,
                      float, const float *);
#define BLOCK(R, V, MS)                                                                                               \
    static void block_##R##_##V##_##MS(vw_mask m, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak,              \
                                       const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, float cs,             \
                                       const float *rs) {                                                            \
        block(R, V, MS, m, K, A, sam, sak, B, ldb, C, ldc, cs, rs);                                                  \
    }
#define BLOCKS_V(R, V) BLOCK(R, V, 0) BLOCK(R, V, 1)
#define BLOCKS(R) BLOCKS_V(R, 1) BLOCKS_V(R, 2) BLOCKS_V(R, 3) BLOCKS_V(R, 4)
BLOCKS(1) BLOCKS(2) BLOCKS(3) BLOCKS(4)
#define ROW_V(R, V) {block_##R##_##V##_0, block_##R##_##V##_1}
#define ROW(R) {ROW_V(R, 1), ROW_V(R, 2), ROW_V(R, 3), ROW_V(R, 4)}
static block_fn *const blocks[MR][NV][2] = {ROW(1), ROW(2), ROW(3), ROW(4)};

void hy_tile_mm(int M, int N, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak, const float *B, ptrdiff_t ldb,
                float *C, ptrdiff_t ldc, float cs, const float *rs, bool lower) {
    for (int i = 0; i < M; i += MR) {
        const int mr = M - i < MR ? M - i : MR, kend = lower && i + mr < K ? i + mr : K;
        for (int j = 0; j < N; j += NV * HY_VW) {
            const int n = N - j < NV * HY_VW ? N - j : NV * HY_VW, nv = (n + HY_VW - 1) / HY_VW;
            const int last = n - (nv - 1) * HY_VW;
            blocks[mr - 1][nv - 1][last != HY_VW](vw_mask_first(last), kend, A + i * sam, sam, sak, B + j, ldb,
                                                  C + i * ldc + j, ldc, cs, rs ? rs + i : NULL);
        }
    }
}

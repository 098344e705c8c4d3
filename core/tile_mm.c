/* The register-blocked small matrix product of core/tile_mm.h: blocks of MR rows × up to NV vectors
 * of C held in registers (4 × 4 = 16 accumulators) while k runs over the whole inner dimension,
 * each step one vector load per column vector of B and one broadcast per row of A. The last vector
 * of a row is masked when N is not a multiple of the vector width. */
#include "core/tile_mm.h"
#include "core/simd.h"

#define INLINE static inline __attribute__((always_inline))
/* rows and vectors of the register block, rows of the narrow one (at most two vectors wide) */
enum { MR = HY_TILE_MR, NV = 4, MRN = HY_TILE_MR_NARROW };

/* One register block: rows [0, mr) × vectors [0, nv) of C (the last one masked to `mask` when
 * `masked`) from k in [0, K). mr, nv and masked are compile-time constants after inlining. */
INLINE void block(const int mr, const int nv, const bool masked, vw_mask mask, int K, const float *A, ptrdiff_t sam,
                  ptrdiff_t sak, const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, float cs, const float *rs) {
    vw c[MRN > MR ? MRN : MR][NV];
    _Pragma("GCC unroll 8") for (int i = 0; i < mr; i++)
        _Pragma("GCC unroll 4") for (int v = 0; v < nv; v++) c[i][v] = (vw){0};
    _Pragma("GCC unroll 2") for (int k = 0; k < K; k++) {
        const float *b = B + k * ldb, *a = A + k * sak;
        vw bv[NV];
        _Pragma("GCC unroll 4") for (int v = 0; v < nv; v++)
            bv[v] = masked && v == nv - 1 ? vw_load_masked(b + v * HY_VW, mask) : vw_load(b + v * HY_VW);
        _Pragma("GCC unroll 8") for (int i = 0; i < mr; i++) {
            const vw ai = vw_bcast(a + i * sam);   /* one broadcast load (vw_splat: an add and a shuffle) */
            _Pragma("GCC unroll 4") for (int v = 0; v < nv; v++) c[i][v] = vw_fma(ai, bv[v], c[i][v]);
        }
    }
    _Pragma("GCC unroll 8") for (int i = 0; i < mr; i++) {
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
#define NROW(R) {ROW_V(R, 1), ROW_V(R, 2), {NULL, NULL}, {NULL, NULL}}
/* Rows 1 .. MR at up to NV vectors; rows MR+1 .. MRN (the narrow blocks) at one or two vectors. */
#if HY_TILE_MR_NARROW == 8
BLOCKS_V(5, 1) BLOCKS_V(5, 2) BLOCKS_V(6, 1) BLOCKS_V(6, 2) BLOCKS_V(7, 1) BLOCKS_V(7, 2) BLOCKS_V(8, 1) BLOCKS_V(8, 2)
static block_fn *const blocks[MRN][NV][2] = {ROW(1), ROW(2), ROW(3), ROW(4), NROW(5), NROW(6), NROW(7), NROW(8)};
#elif HY_TILE_MR_NARROW == 6
BLOCKS_V(5, 1) BLOCKS_V(5, 2) BLOCKS_V(6, 1) BLOCKS_V(6, 2)
static block_fn *const blocks[MRN][NV][2] = {ROW(1), ROW(2), ROW(3), ROW(4), NROW(5), NROW(6)};
#else
#error "HY_TILE_MR_NARROW: 6 or 8"
#endif

static inline int clamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* The product in row blocks of at most rows_per rows (MR, or MRN for a product at most two vectors
 * wide); a lower C in column strips of two vectors, each in blocks of MRN rows from the first row
 * that sees one of its columns (16 accumulators, where row blocks along the diagonal would hold
 * a few vectors each). */
static void run(int rows_per, int M, int N, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak, const float *B,
                ptrdiff_t ldb, float *C, ptrdiff_t ldc, float cs, const float *rs, hy_tile_part part, int lim) {
    if (part == HY_TILE_LOWER_C) {   /* strips of two vectors, each for the rows that see one of its columns */
        for (int j = 0; j < N; j += 2 * HY_VW) {
            const int n = N - j < 2 * HY_VW ? N - j : 2 * HY_VW, nv = (n + HY_VW - 1) / HY_VW;
            const int last = n - (nv - 1) * HY_VW;
            for (int i = clamp(j - lim + 1, 0, M); i < M; i += MRN) {
                const int mr = M - i < MRN ? M - i : MRN;
                blocks[mr - 1][nv - 1][last != HY_VW](vw_mask_first(last), K, A + i * sam, sam, sak, B + j, ldb,
                                                      C + i * ldc + j, ldc, cs, rs ? rs + i : NULL);
            }
        }
        return;
    }
    for (int i = 0; i < M; i += rows_per) {
        const int mr = M - i < rows_per ? M - i : rows_per;
        int k0 = 0, k1 = K;   /* this row block's inner range */
        if (part == HY_TILE_LOWER_A) k1 = clamp(i + mr - 1 + lim, 0, K);
        else if (part == HY_TILE_UPPER_A) k0 = clamp(i - lim + 1, 0, K);
        for (int j = 0; j < N; j += NV * HY_VW) {
            const int n = N - j < NV * HY_VW ? N - j : NV * HY_VW, nv = (n + HY_VW - 1) / HY_VW;
            const int last = n - (nv - 1) * HY_VW;
            blocks[mr - 1][nv - 1][last != HY_VW](vw_mask_first(last), k1 - k0, A + i * sam + k0 * sak, sam, sak,
                                                  B + k0 * ldb + j, ldb, C + i * ldc + j, ldc, cs, rs ? rs + i : NULL);
        }
    }
}

int hy_tile_mm_rows(int N) { return N <= 2 * HY_VW ? MRN : MR; }

void hy_tile_mm_part(int M, int N, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak, const float *B, ptrdiff_t ldb,
                     float *C, ptrdiff_t ldc, float cs, const float *rs, hy_tile_part part, int lim) {
    run(hy_tile_mm_rows(N), M, N, K, A, sam, sak, B, ldb, C, ldc, cs, rs, part, lim);
}

void hy_tile_mm(int M, int N, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak, const float *B, ptrdiff_t ldb,
                float *C, ptrdiff_t ldc, float cs, const float *rs, bool lower) {
    run(MR, M, N, K, A, sam, sak, B, ldb, C, ldc, cs, rs, lower ? HY_TILE_LOWER_A : HY_TILE_FULL, 1);
}

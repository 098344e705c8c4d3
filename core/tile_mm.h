/* tile_mm — a register-blocked matrix product for the small products that recurrent kernels make
 * per chunk (32 × 128 × 32, 64 × 160 × 64 and alike) and that the attention kernels make per tile
 * (64 × 64 × head_dim, 64 × head_dim × 64), run on the calling thread. At these sizes a library GEMM
 * spends as long setting up the call (oneDNN: argument maps, scratchpad, stream) as multiplying;
 * this kernel has no set-up, reads A through strides (so a transposed A costs nothing), scales C by
 * a per-row or uniform factor on the way (C = s ⊙ C + A·B, for the decays and the online-softmax
 * rescale the kernels apply anyway) and skips the zero part of a triangular A, or the unwanted part
 * of a causal C. Written over core/simd.h's vw: 16 floats per vector in an AVX-512 build, 8 in an
 * AVX2 one. */
#ifndef HY_CORE_TILE_MM_H
#define HY_CORE_TILE_MM_H
#include <stdbool.h>
#include <stddef.h>

/* Rows of the register block: with a triangular part, a block's sum starts or stops at its own
 * first or last row's limit, so the zeros of A inside the block's rows are read. */
#define HY_TILE_MR 4
/* Rows of hy_tile_mm_part's register block for a product at most two vectors wide (N <= 2·HY_VW,
 * e.g. head_dim 32 with AVX-512): 8 × 2 = 16 accumulators where the target has 32 vector
 * registers (AVX-512), 6 × 2 = 12 with AVX2's 16; the 4 × 2 block would leave half of them idle. */
#if defined(__AVX512F__)
#define HY_TILE_MR_NARROW 8
#else
#define HY_TILE_MR_NARROW 6
#endif

/* Which part of the product a causal tile needs, for a diagonal offset lim: row m "sees" the
 * columns (or, for A, the inner indices) c < m + lim; with lim = 1, row m sees 0 .. m. For the
 * triangular A the rows go in blocks of R = hy_tile_mm_rows(N) (the last one shorter), and each
 * block's limit is that of its first or last row:
 *   HY_TILE_FULL     the whole product;
 *   HY_TILE_LOWER_A  A[m][k] = 0 for k >= m + lim (rows are queries, the sum runs over keys: P V,
 *                    dS K): a block of rows [i, i + R) sums k < i + R - 1 + lim, reading the zeros
 *                    of its rows up to there;
 *   HY_TILE_UPPER_A  A[m][k] = 0 for k <= m - lim (rows are keys, the sum runs over the queries
 *                    that see them: Pᵀ dO, dSᵀ Q): a block of rows starting at i sums
 *                    k >= i - lim + 1, reading the zeros of its rows from there;
 *   HY_TILE_LOWER_C  only C[m][j] for j < m + lim is wanted (S = Q Kᵀ, dP = dO Vᵀ): C goes in
 *                    strips of 2·HY_VW columns, and the strip of columns [j, j + 2·HY_VW) is
 *                    written for the rows m >= j - lim + 1 (those that see one of its columns), so
 *                    a row gets every column it sees and up to 2·HY_VW - 1 past them; the rest of
 *                    C is left as it was.
 * The limits are clamped to 0 .. K (0 .. N); a block with an empty sum writes s_i·C. */
typedef enum { HY_TILE_FULL, HY_TILE_LOWER_A, HY_TILE_UPPER_A, HY_TILE_LOWER_C } hy_tile_part;

/* Rows of hy_tile_mm_part's register block for a product N columns wide: HY_TILE_MR_NARROW when
 * N <= 2·HY_VW, else HY_TILE_MR. */
int hy_tile_mm_rows(int N);

/* C[M × N] = s_i·C + A·B, on one thread, over the part `part` with diagonal offset lim (above).
 *   A: element (m, k) at A[m·sam + k·sak] (sak = 1: row-major; sam = 1: a transposed A, no copy);
 *   B: row-major K × N, row stride ldb;  C: row-major M × N, row stride ldc;
 *   s_i = rs[i] for row i when rs is non-NULL, else cs; with s_i = 0 (cs = 0, rs NULL) C is not read
 *   (overwritten, whatever it held).
 * Products are summed in k order per output (no reassociation beyond the FMA; the zero terms a
 * triangular part skips would add nothing), so the result is independent of M, N, the row block
 * and the part. M, N, K >= 0; K = 0 gives C = s_i·C. */
void hy_tile_mm_part(int M, int N, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak, const float *B, ptrdiff_t ldb,
                     float *C, ptrdiff_t ldc, float cs, const float *rs, hy_tile_part part, int lim);

/* The product over the whole of C, or with lower A lower-triangular (A[m][k] = 0 for k > m), always
 * in blocks of HY_TILE_MR rows whatever N: a block of rows [i, i + HY_TILE_MR) sums
 * k < i + HY_TILE_MR only (the zeros above the diagonal inside the block are read, the rest never;
 * callers rely on that bound). Otherwise as hy_tile_mm_part. */
void hy_tile_mm(int M, int N, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak, const float *B, ptrdiff_t ldb,
                float *C, ptrdiff_t ldc, float cs, const float *rs, bool lower);

#endif

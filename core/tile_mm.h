/* tile_mm — a register-blocked matrix product for the small products that recurrent kernels make
 * per chunk (32 × 128 × 32, 64 × 160 × 64 and alike), run on the calling thread. At these sizes a
 * library GEMM spends as long setting up the call (oneDNN: argument maps, scratchpad, stream) as
 * multiplying; this kernel has no set-up, reads A through strides (so a transposed A costs
 * nothing), scales C by a per-row or uniform factor on the way (C = s ⊙ C + A·B, for the decays the
 * kernels apply anyway) and skips the zero upper part of a lower-triangular A. Written over
 * core/simd.h's vw: 16 floats per vector in an AVX-512 build, 8 in an AVX2 one. */
#ifndef HY_CORE_TILE_MM_H
#define HY_CORE_TILE_MM_H
#include <stdbool.h>
#include <stddef.h>

/* Rows of the register block: with lower, a block's sum stops at its own last row. */
#define HY_TILE_MR 4

/* C[M × N] = s_i·C + A·B, on one thread.
 *   A: element (m, k) at A[m·sam + k·sak] (sak = 1: row-major; sam = 1: a transposed A, no copy);
 *   B: row-major K × N, row stride ldb;  C: row-major M × N, row stride ldc;
 *   s_i = rs[i] for row i when rs is non-NULL, else cs; with s_i = 0 (cs = 0, rs NULL) C is not read
 *   (overwritten, whatever it held);
 *   lower: A is lower-triangular (A[m][k] = 0 for k > m): a block of rows [i, i + HY_TILE_MR) sums
 *   k < i + HY_TILE_MR only (the zeros above the diagonal inside the block are read, the rest never).
 * Products are summed in k order per output (no reassociation beyond the FMA), so the result is
 * independent of M, N and the row block. M, N, K >= 0; K = 0 gives C = s_i·C. */
void hy_tile_mm(int M, int N, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak, const float *B, ptrdiff_t ldb,
                float *C, ptrdiff_t ldc, float cs, const float *rs, bool lower);

#endif

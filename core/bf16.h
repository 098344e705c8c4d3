/* bfloat16: the 16-bit float that compute.precision bf16 feeds to matrix products (8 bits of
 * mantissa, the exponent range of f32). Conversions from f32 round to nearest even, as the
 * AVX-512 BF16 instructions do: with them (compiled for a CPU that has AVX512_BF16) 32 floats per
 * vcvtne2ps2bf16; without them, or after hy_bf16_force_portable(true), a portable loop that gives
 * the same bits. Both paths treat an f32 denormal as a signed zero (as the instruction does) and
 * turn a NaN into a quiet NaN.
 *
 * hy_bf16_tile_mm is a single-threaded tile product on bf16 inputs with f32 accumulation, for
 * kernels that multiply small tiles inside their own OpenMP regions (the attention core's tiles),
 * where a call to oneDNN would cost more than the product. */
#ifndef HY_CORE_BF16_H
#define HY_CORE_BF16_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One bf16 value: the top 16 bits of the f32 it was rounded from. */
typedef uint16_t hy_bf16;

/* dst[i] = bf16(src[i]) for i < n. */
void hy_bf16_from_f32(hy_bf16 *dst, const float *src, size_t n);
/* The same over a rows x cols block with row strides ldd (dst) and lds (src); split over threads
 * when large and not already inside an OpenMP parallel region. */
void hy_bf16_from_f32_2d(hy_bf16 *dst, size_t ldd, const float *src, size_t lds, size_t rows, size_t cols);
/* dst[i] = src[i] widened to f32 (exact). */
void hy_bf16_to_f32(float *dst, const hy_bf16 *src, size_t n);
/* One value, the portable way (the reference the vector path is tested against). */
hy_bf16 hy_bf16_round(float x);
static inline float hy_bf16_value(hy_bf16 h) {
    union {
        uint32_t u;
        float f;
    } v = {(uint32_t)h << 16};
    return v.f;
}

/* True when conversions and hy_bf16_tile_mm use the AVX-512 BF16 instructions: the build targets a
 * CPU with AVX512_BF16 (-march=native on one) and the portable path is not forced. */
bool hy_bf16_native(void);
/* Force the portable path (true) or allow the native one again (false): process-wide, for tests
 * that check the fallback on a machine that has the instructions. Not to be changed while other
 * threads convert. */
void hy_bf16_force_portable(bool on);

/* C[M x N] (+)= A[M x K] B[K x N] with A and B rounded to bf16, products and sums in f32.
 * A element (m, k) at A[m*sam + k*sak] (sam = 1: a transposed A, no copy needed), B and C
 * row-major with row strides ldb and ldc. acc false: C = A B. acc true: C = rs ⊙ C + A B, row i of C
 * scaled by rs[i] first (rs NULL: no scaling). Single-threaded and thread-safe (per-thread packing
 * buffers): meant to be called from inside a parallel region, on tiles of up to a few hundred rows
 * and columns. Returns 0, or HY_ERR_NOMEM when its packing buffer cannot grow (C untouched). */
int hy_bf16_tile_mm(int M, int N, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak, const float *B, ptrdiff_t ldb,
                    float *C, ptrdiff_t ldc, bool acc, const float *rs);

/* B operands packed once and multiplied many times (a kernel's key and value tiles): the K x N
 * block B (row stride ldb) as (K+1)/2 rows of 32-bit words, word (p, j) = the bf16 pair
 * (B(2p, j), B(2p+1, j)) at dst[p*ldw + j] (the half past an odd K zero). ldw must be at least
 * hy_bf16_packed_width(N); the words from N up to that width are written as zeros. */
int hy_bf16_packed_width(int N);
void hy_bf16_pack_b(int K, int N, const float *B, ptrdiff_t ldb, uint32_t *dst, int ldw);
/* hy_bf16_tile_mm with B already packed by hy_bf16_pack_b (same K, N and ldw): only A is packed
 * here. Same rounding, order of sums and contract otherwise. */
int hy_bf16_tile_mm_packed(int M, int N, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak, const uint32_t *Bw,
                           int ldw, float *C, ptrdiff_t ldc, bool acc, const float *rs);

/* Frees this process's per-thread packing buffers (at exit, with hy_gemm_shutdown). */
void hy_bf16_shutdown(void);
/* Bytes those buffers hold now (outside hy_malloc's accounting; hy_gemm_stats reports them). */
double hy_bf16_buffer_bytes(void);

#endif

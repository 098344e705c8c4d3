/* compute.precision bf16: the conversions (vector path against the portable one, bit for bit), the
 * bf16 tile product, bf16 GEMMs on odd shapes against f32 (also from inside OpenMP parallel
 * regions), the weights' bf16 copy, and a training step of every registered block in bf16 against
 * f32, with the AVX-512 BF16 path and with the portable fallback forced. */
#include "core/bf16.h"
#include "core/gemm.h"
#include "core/mem.h"
#include "core/rng.h"
#include "experiments/config.h"
#include "experiments/validate.h"
#include "models/model.h"
#include "models/optim.h"
#include "tests/testutil.h"
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

static uint32_t bits_of(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}
static float float_of(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* Values that exercise every branch of the rounding: ties to even both ways, carries into the
 * exponent and into infinity, denormals, zeros, infinities and NaNs, then random normals. */
static size_t special_values(float *x, size_t n) {
    const uint32_t fixed[] = {0x3f800000u, 0x3f808000u, 0x3f818000u, 0x3f80ffffu, 0x3f817fffu, 0x3fffffffu,
                              0x7f7fffffu, 0x7f7f8000u, 0x7f7f7fffu, 0x00000001u, 0x807fffffu, 0x00800000u,
                              0x80000000u, 0x00000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u,
                              0xffbfffffu, 0xbf808000u, 0x4049fdb0u, 0xc7ffff80u};
    size_t k = sizeof fixed / sizeof *fixed;
    for (size_t i = 0; i < k && i < n; i++) x[i] = float_of(fixed[i]);
    tu_fill_normal(x + k, n - k, 3.0f, 11);
    return k;
}

/* The portable rounding on known cases (this holds on every machine). */
START_TEST(round_known_values) {
    struct {
        uint32_t in;
        uint16_t out;
    } cases[] = {
        {0x3f800000u, 0x3f80}, /* 1 */
        {0x3f808000u, 0x3f80}, /* 1 + 2^-8: a tie, to even (down) */
        {0x3f818000u, 0x3f82}, /* 1 + 3 2^-8: a tie, to even (up) */
        {0x3f808001u, 0x3f81}, /* just above the tie */
        {0x3f80ffffu, 0x3f81}, /* rounds up */
        {0x7f7fffffu, 0x7f80}, /* largest float: rounds to infinity */
        {0x00000001u, 0x0000}, /* denormal: zero */
        {0x807fffffu, 0x8000}, /* negative denormal: -0 */
        {0xff800000u, 0xff80}, /* -inf */
        {0x7f800001u, 0x7fc0}, /* signalling NaN: quiet */
        {0xffc00001u, 0xffc0}, /* quiet NaN keeps its sign */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        ck_assert_msg(hy_bf16_round(float_of(cases[i].in)) == cases[i].out, "0x%08x -> 0x%04x, want 0x%04x",
                      cases[i].in, hy_bf16_round(float_of(cases[i].in)), cases[i].out);
    ck_assert_float_eq(hy_bf16_value(0x3f81), 1.0078125f);
}
END_TEST

/* The vector conversion (every length 0..70 for the tails, and a long run) gives the portable bits;
 * forcing the fallback switches the path, and the bf16 -> f32 widening is exact. */
START_TEST(vector_conversion_matches_portable) {
    enum { N = 4099 };
    float *x = hy_malloc(N * sizeof(float)), *back = hy_malloc(N * sizeof(float));
    hy_bf16 *fast = hy_malloc(N * sizeof(hy_bf16)), *slow = hy_malloc(N * sizeof(hy_bf16));
    size_t k = special_values(x, N);
    for (size_t n = 0; n <= 70; n++) {
        memset(fast, 0xAB, sizeof(hy_bf16) * 72);
        hy_bf16_from_f32(fast, x + (n % 7), n);
        for (size_t i = 0; i < n; i++)
            ck_assert_msg(fast[i] == hy_bf16_round(x[i + n % 7]), "n %zu at %zu: 0x%04x vs 0x%04x (input 0x%08x)", n, i,
                          fast[i], hy_bf16_round(x[i + n % 7]), bits_of(x[i + n % 7]));
        ck_assert_msg(fast[n] == 0xABAB, "n %zu: wrote past the end", n);
    }
    hy_bf16_from_f32(fast, x, N);
    hy_bf16_force_portable(true);
    ck_assert(!hy_bf16_native());
    hy_bf16_from_f32(slow, x, N);
    hy_bf16_force_portable(false);
    for (size_t i = 0; i < N; i++)
        ck_assert_msg(fast[i] == slow[i], "at %zu (input 0x%08x): native 0x%04x, portable 0x%04x", i, bits_of(x[i]),
                      fast[i], slow[i]);
    hy_bf16_to_f32(back, fast, N);
    for (size_t i = k; i < N; i++) {
        ck_assert_uint_eq(bits_of(back[i]) & 0xffffu, 0);
        ck_assert_msg(fabsf(back[i] - x[i]) <= fabsf(x[i]) * 0x1p-8f, "at %zu: %g -> %g", i, x[i], back[i]);
    }
    /* a strided block: rows of 37 out of 41, the gaps untouched */
    hy_bf16 *blk = hy_calloc(sizeof(hy_bf16) * 41 * 50);
    hy_bf16_from_f32_2d(blk, 41, x, 43, 50, 37);
    for (int r = 0; r < 50; r++)
        for (int c = 0; c < 41; c++)
            ck_assert_uint_eq(blk[r * 41 + c], c < 37 ? hy_bf16_round(x[r * 43 + c]) : 0);
    hy_free(x), hy_free(back), hy_free(fast), hy_free(slow), hy_free(blk);
}
END_TEST

/* ---- the tile product ---- */

/* Σ_k bf16(A(i,k)) bf16(B(k,j)) in double, plus the optional scaled C. */
static double tile_ref(int i, int j, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak, const float *B, ptrdiff_t ldb,
                       double c_old, bool acc, const float *rs, double *mag) {
    double s = 0, m = 0;
    for (int k = 0; k < K; k++) {
        double p = (double)hy_bf16_value(hy_bf16_round(A[i * sam + k * sak])) *
                   hy_bf16_value(hy_bf16_round(B[(ptrdiff_t)k * ldb + j]));
        s += p, m += fabs(p);
    }
    double old = !acc ? 0 : rs ? c_old * rs[i] : c_old;
    *mag = m + fabs(old);
    return s + old;
}

/* Odd shapes, both layouts of A (rows contiguous, transposed) and a general stride, C overwritten,
 * accumulated, and accumulated after a row scale: every entry within f32 summation error of the
 * product of the rounded inputs (so the inputs were rounded, and nothing else was lost). */
static void check_tile(bool portable) {
    static const int shapes[][3] = {{1, 1, 1}, {7, 5, 3}, {8, 32, 64}, {13, 37, 29}, {64, 64, 64}, {64, 17, 64},
                                    {33, 64, 1}, {9, 100, 130}};
    hy_bf16_force_portable(portable);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int layout = 0; layout < 3; layout++)
            for (int mode = 0; mode < 3; mode++) {
                int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                ptrdiff_t sam = layout == 0 ? K + 3 : layout == 1 ? 1 : 2 * K + 1;
                ptrdiff_t sak = layout == 0 ? 1 : layout == 1 ? M + 5 : 2;
                ptrdiff_t ldb = N + 7, ldc = N + 2;
                size_t na = (size_t)(layout == 1 ? K * sak : M * sam), nb = (size_t)K * ldb, nc = (size_t)M * ldc;
                float *A = hy_malloc(na * 4), *Bm = hy_malloc(nb * 4), *C = hy_malloc(nc * 4), *C0 = hy_malloc(nc * 4),
                      *rs = hy_malloc((size_t)M * 4);
                tu_fill_normal(A, na, 1, 5 + s), tu_fill_normal(Bm, nb, 1, 6 + s), tu_fill_normal(C, nc, 1, 7 + s);
                tu_fill_normal(rs, (size_t)M, 1, 8 + s);
                memcpy(C0, C, nc * 4);
                bool acc = mode > 0;
                const float *r = mode == 2 ? rs : NULL;
                ck_assert_int_eq(hy_bf16_tile_mm(M, N, K, A, sam, sak, Bm, ldb, C, ldc, acc, r), 0);
                for (int i = 0; i < M; i++) {
                    for (int j = 0; j < N; j++) {
                        double mag, want = tile_ref(i, j, K, A, sam, sak, Bm, ldb, C0[i * ldc + j], acc, r, &mag);
                        double err = fabs(C[i * ldc + j] - want);
                        ck_assert_msg(err <= 1e-6 * (K + 2) * mag + 1e-30,
                                      "%s M%d N%d K%d layout %d mode %d (%d,%d): %.9g vs %.9g", portable ? "portable" : "native",
                                      M, N, K, layout, mode, i, j, C[i * ldc + j], want);
                    }
                    for (ptrdiff_t j = N; j < ldc; j++) ck_assert(bits_of(C[i * ldc + j]) == bits_of(C0[i * ldc + j]));
                }
                hy_free(A), hy_free(Bm), hy_free(C), hy_free(C0), hy_free(rs);
            }
    hy_bf16_force_portable(false);
}

START_TEST(tile_product_native) { check_tile(false); }
END_TEST
START_TEST(tile_product_portable) { check_tile(true); }
END_TEST

/* Tiles multiplied by every thread of a parallel region at once (each its own packing buffers)
 * equal the same tiles multiplied one at a time, bit for bit. */
START_TEST(tile_product_in_parallel) {
    enum { M = 64, N = 64, K = 64, TILES = 16 };
    float *A = hy_malloc(sizeof(float) * TILES * M * K), *Bm = hy_malloc(sizeof(float) * TILES * K * N);
    float *C1 = hy_calloc(sizeof(float) * TILES * M * N), *C2 = hy_calloc(sizeof(float) * TILES * M * N);
    tu_fill_normal(A, (size_t)TILES * M * K, 1, 1), tu_fill_normal(Bm, (size_t)TILES * K * N, 1, 2);
    for (int t = 0; t < TILES; t++)
        hy_bf16_tile_mm(M, N, K, A + (size_t)t * M * K, K, 1, Bm + (size_t)t * K * N, N, C1 + (size_t)t * M * N, N, false, NULL);
    int failed = 0;
    #pragma omp parallel for schedule(dynamic, 1) num_threads(4) reduction(+ : failed)
    for (int t = 0; t < TILES; t++)
        failed += hy_bf16_tile_mm(M, N, K, A + (size_t)t * M * K, K, 1, Bm + (size_t)t * K * N, N, C2 + (size_t)t * M * N,
                                  N, false, NULL) != 0;
    ck_assert_int_eq(failed, 0);
    ck_assert(memcmp(C1, C2, sizeof(float) * TILES * M * N) == 0);
    hy_free(A), hy_free(Bm), hy_free(C1), hy_free(C2);
}
END_TEST

/* A B operand packed once (hy_bf16_pack_b) and multiplied by hy_bf16_tile_mm_packed gives the bits
 * of hy_bf16_tile_mm on the same operands, for odd shapes, both layouts of A and every mode; the
 * packed words past N up to the packed width are zero and nothing past it is written. */
static void check_packed(bool portable) {
    static const int shapes[][3] = {{1, 1, 1}, {7, 5, 3}, {13, 37, 29}, {64, 64, 64}, {64, 17, 63}, {9, 100, 130}};
    hy_bf16_force_portable(portable);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int layout = 0; layout < 2; layout++)
            for (int mode = 0; mode < 3; mode++) {
                int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2], ldw = hy_bf16_packed_width(N) + 3;
                ptrdiff_t sam = layout == 0 ? K + 3 : 1, sak = layout == 0 ? 1 : M + 5, ldb = N + 7, ldc = N + 2;
                size_t na = (size_t)(layout == 1 ? K * sak : M * sam), nb = (size_t)K * ldb, nc = (size_t)M * ldc;
                size_t nw = (size_t)((K + 1) / 2) * ldw;
                float *A = hy_malloc(na * 4), *Bm = hy_malloc(nb * 4), *C1 = hy_malloc(nc * 4), *C2 = hy_malloc(nc * 4),
                      *rs = hy_malloc((size_t)M * 4);
                uint32_t *w = hy_malloc((nw + 1) * 4);
                tu_fill_normal(A, na, 1, 15 + s), tu_fill_normal(Bm, nb, 1, 16 + s), tu_fill_normal(C1, nc, 1, 17 + s);
                tu_fill_normal(rs, (size_t)M, 1, 18 + s);
                memcpy(C2, C1, nc * 4);
                memset(w, 0xAB, (nw + 1) * 4);
                hy_bf16_pack_b(K, N, Bm, ldb, w, ldw);
                for (int p = 0; p < (K + 1) / 2; p++) {
                    for (int j = N; j < hy_bf16_packed_width(N); j++) ck_assert_uint_eq(w[(size_t)p * ldw + j], 0);
                    for (int j = hy_bf16_packed_width(N); j < ldw; j++) ck_assert_uint_eq(w[(size_t)p * ldw + j], 0xABABABABu);
                }
                bool acc = mode > 0;
                const float *r = mode == 2 ? rs : NULL;
                ck_assert_int_eq(hy_bf16_tile_mm(M, N, K, A, sam, sak, Bm, ldb, C1, ldc, acc, r), 0);
                ck_assert_int_eq(hy_bf16_tile_mm_packed(M, N, K, A, sam, sak, w, ldw, C2, ldc, acc, r), 0);
                ck_assert_msg(memcmp(C1, C2, nc * 4) == 0, "%s M%d N%d K%d layout %d mode %d: packed B gives other bits",
                              portable ? "portable" : "native", M, N, K, layout, mode);
                hy_free(A), hy_free(Bm), hy_free(C1), hy_free(C2), hy_free(rs), hy_free(w);
            }
    hy_bf16_force_portable(false);
}

START_TEST(tile_product_packed_b) {
    check_packed(false);
    check_packed(true);
}
END_TEST

/* The portable tile product gives the bits of the AVX-512 BF16 one (the same pairs in the same
 * order, each bf16 product exact in f32, the row scale in one rounding), in every mode. */
START_TEST(tile_product_portable_matches_native) {
    enum { M = 37, N = 70, K = 91 };
    float *A = hy_malloc(M * K * 4), *Bm = hy_malloc(K * N * 4), *C1 = hy_malloc(M * N * 4), *C2 = hy_malloc(M * N * 4),
          *rs = hy_malloc(M * 4);
    tu_fill_normal(A, M * K, 1, 71), tu_fill_normal(Bm, K * N, 1, 72), tu_fill_normal(rs, M, 1, 73);
    for (int mode = 0; mode < 3; mode++) {
        tu_fill_normal(C1, M * N, 1, 74);
        memcpy(C2, C1, M * N * 4);
        const float *r = mode == 2 ? rs : NULL;
        hy_bf16_tile_mm(M, N, K, A, K, 1, Bm, N, C1, N, mode > 0, r);
        hy_bf16_force_portable(true);
        hy_bf16_tile_mm(M, N, K, A, K, 1, Bm, N, C2, N, mode > 0, r);
        hy_bf16_force_portable(false);
        ck_assert_msg(memcmp(C1, C2, M * N * 4) == 0, "mode %d: portable and native tile products differ", mode);
    }
    hy_free(A), hy_free(Bm), hy_free(C1), hy_free(C2), hy_free(rs);
}
END_TEST

/* ---- GEMM ---- */

/* One product C = alpha op(A) op(B) + beta C at shape s, checked against double references: with
 * the inputs rounded to bf16 (tight: f32 summation only) and with the exact f32 inputs (within
 * bf16 input rounding: each operand is off by at most 2^-8 of itself, so a product by 2^-7). */
static void check_bf16_gemm(int M, int N, int K, int ta, int tb, uint64_t seed) {
    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
    size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, nc = (size_t)M * ldc;
    float *A = hy_malloc(na * 4), *B = hy_malloc(nb * 4), *C = hy_malloc(nc * 4), *C0 = hy_malloc(nc * 4);
    tu_fill_normal(A, na, 1, seed), tu_fill_normal(B, nb, 1, seed + 1), tu_fill_normal(C, nc, 1, seed + 2);
    memcpy(C0, C, nc * 4);
    float alpha = 0.75f, beta = seed % 2 ? 1.0f : 0.0f;
    hy_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double sr = 0, sx = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                float a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                float b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                sr += (double)hy_bf16_value(hy_bf16_round(a)) * hy_bf16_value(hy_bf16_round(b));
                sx += (double)a * b, mag += fabs((double)a * b);
            }
            double old = beta * C0[(size_t)i * ldc + j], got = C[(size_t)i * ldc + j];
            double tight = 1e-6 * (K + 4) * (alpha * mag + fabs(old)) + 1e-30;
            double loose = alpha * mag * 0x1.01p-7 + tight;
            ck_assert_msg(fabs(got - (alpha * sr + old)) <= tight,
                          "M%d N%d K%d ta%d tb%d (%d,%d): %.9g vs bf16-input reference %.9g", M, N, K, ta, tb, i, j, got,
                          alpha * sr + old);
            ck_assert_msg(fabs(got - (alpha * sx + old)) <= loose, "M%d N%d K%d ta%d tb%d (%d,%d): %.9g vs f32 %.9g", M,
                          N, K, ta, tb, i, j, got, alpha * sx + old);
        }
    hy_free(A), hy_free(B), hy_free(C), hy_free(C0);
}

static const int odd_shapes[][3] = {{1, 1, 1},  {7, 5, 3},   {130, 70, 33}, {300, 257, 129},
                                    {1, 70, 33}, {130, 1, 33}, {17, 129, 300}, {1, 1, 513}};

/* Odd shapes and every transpose under bf16: the products took bf16 inputs (the tight reference)
 * and stay within bf16 rounding of f32; all went to oneDNN bf16, none fell back. */
static void check_bf16_gemms(bool portable) {
    hy_gemm_set_precision(HY_PREC_BF16);
    hy_bf16_force_portable(portable);
    hy_gemm_stats_reset();
    int n = 0;
    for (size_t s = 0; s < sizeof odd_shapes / sizeof *odd_shapes; s++)
        for (int t = 0; t < 4; t++, n++) check_bf16_gemm(odd_shapes[s][0], odd_shapes[s][1], odd_shapes[s][2], t & 1, t >> 1, 10 * s + t);
    hy_gemm_stats st;
    hy_gemm_stats_get(&st);
    ck_assert_int_eq(st.products, n);
    ck_assert_int_eq(st.bf16, n);
    ck_assert_int_eq(st.bf16_fallbacks, 0);
    ck_assert_int_eq(st.f32, 0);
    hy_bf16_force_portable(false);
    hy_gemm_set_precision(HY_PREC_F32);
}

START_TEST(bf16_gemm_odd_shapes) { check_bf16_gemms(false); }
END_TEST
START_TEST(bf16_gemm_odd_shapes_portable) { check_bf16_gemms(true); }
END_TEST

/* Products issued from inside a parallel region, several threads at once, each with its own shapes
 * and outputs: every one in oneDNN bf16 (none falls back to f32 as they once did), each equal to
 * the same product made outside the region up to f32 summation order, all counted as in_parallel. */
START_TEST(bf16_gemm_inside_parallel_region) {
    enum { JOBS = 12 };
    hy_gemm_set_precision(HY_PREC_BF16);
    int M[JOBS], N[JOBS], K[JOBS];
    float *A[JOBS], *B[JOBS], *Cin[JOBS], *Cout[JOBS];
    for (int j = 0; j < JOBS; j++) {
        M[j] = 20 + 13 * j, N[j] = 64 + 7 * (j % 4), K[j] = 33 + 11 * (j % 3);
        A[j] = hy_malloc(sizeof(float) * M[j] * K[j]), B[j] = hy_malloc(sizeof(float) * K[j] * N[j]);
        Cin[j] = hy_malloc(sizeof(float) * M[j] * N[j]), Cout[j] = hy_malloc(sizeof(float) * M[j] * N[j]);
        tu_fill_normal(A[j], (size_t)M[j] * K[j], 1, 100 + j), tu_fill_normal(B[j], (size_t)K[j] * N[j], 1, 200 + j);
        hy_gemm(false, true, M[j], N[j], K[j], 1.0f, A[j], K[j], B[j], K[j], 0.0f, Cout[j], N[j]);
    }
    hy_gemm_stats_reset();
    #pragma omp parallel for schedule(dynamic, 1) num_threads(3)
    for (int j = 0; j < JOBS; j++)
        hy_gemm(false, true, M[j], N[j], K[j], 1.0f, A[j], K[j], B[j], K[j], 0.0f, Cin[j], N[j]);
    hy_gemm_stats st;
    hy_gemm_stats_get(&st);
    ck_assert_int_eq(st.products, JOBS);
    ck_assert_int_eq(st.bf16, JOBS);
    ck_assert_int_eq(st.in_parallel, JOBS);
    ck_assert_int_eq(st.bf16_fallbacks, 0);
    for (int j = 0; j < JOBS; j++) {
        double e = tu_scaled_err(Cin[j], Cout[j], (size_t)M[j] * N[j], 1e-3);
        ck_assert_msg(e < 1e-5, "job %d (%d x %d x %d): in the region vs outside: %g", j, M[j], N[j], K[j], e);
        hy_free(A[j]), hy_free(B[j]), hy_free(Cin[j]), hy_free(Cout[j]);
    }
    /* and the odd shapes, every transpose, each from a different thread of one region */
    hy_gemm_stats_reset();
    #pragma omp parallel for schedule(dynamic, 1) num_threads(2)
    for (int s = 0; s < (int)(sizeof odd_shapes / sizeof *odd_shapes) * 4; s++)
        check_bf16_gemm(odd_shapes[s / 4][0], odd_shapes[s / 4][1], odd_shapes[s / 4][2], s & 1, (s >> 1) & 1, 300 + s);
    hy_gemm_stats_get(&st);
    ck_assert_int_eq(st.bf16, st.products);
    ck_assert_int_eq(st.in_parallel, st.products);
    hy_gemm_set_precision(HY_PREC_F32);
}
END_TEST

/* A registered bf16 copy is what the products read: registering a copy of 2W makes X Wᵀ come out
 * doubled, with W's values counted as read from the copy and not converted; removing it restores
 * the conversion. */
START_TEST(registered_copy_is_read) {
    enum { R = 40, I = 24, O = 36 };
    float *X = hy_malloc(sizeof(float) * R * I), *W = hy_malloc(sizeof(float) * (O * I + 8));
    float *Y1 = hy_malloc(sizeof(float) * R * O), *Y2 = hy_malloc(sizeof(float) * R * O), *W2 = hy_malloc(sizeof(float) * (O * I + 8));
    hy_bf16 *copy = hy_malloc(sizeof(hy_bf16) * (O * I + 8));
    tu_fill_normal(X, R * I, 1, 1), tu_fill_normal(W, O * I + 8, 1, 2);
    for (int i = 0; i < O * I + 8; i++) W2[i] = 2 * W[i];
    hy_bf16_from_f32(copy, W2, O * I + 8);
    hy_gemm_set_precision(HY_PREC_BF16);
    hy_linear_forward(Y1, X, W + 8, NULL, R, I, O);   /* the weight sits at offset 8 of the range */
    ck_assert_int_eq(hy_gemm_bf16_shadow(W, O * I + 8, copy), 0);
    hy_gemm_stats_reset();
    hy_linear_forward(Y2, X, W + 8, NULL, R, I, O);
    hy_gemm_stats st;
    hy_gemm_stats_get(&st);
    ck_assert_int_eq(st.shadowed, O * I);
    ck_assert_int_eq(st.converted, R * I);
    for (int i = 0; i < R * O; i++) ck_assert_float_eq(Y2[i], 2 * Y1[i]);
    ck_assert_int_eq(hy_gemm_bf16_shadow(W, 0, NULL), 0);
    hy_gemm_stats_reset();
    hy_linear_forward(Y2, X, W + 8, NULL, R, I, O);
    hy_gemm_stats_get(&st);
    ck_assert_int_eq(st.shadowed, 0);
    ck_assert_int_eq(st.converted, R * I + O * I);
    for (int i = 0; i < R * O; i++) ck_assert_float_eq(Y2[i], Y1[i]);
    hy_gemm_set_precision(HY_PREC_F32);
    hy_free(X), hy_free(W), hy_free(Y1), hy_free(Y2), hy_free(W2), hy_free(copy);
}
END_TEST

/* A held operand (hy_gemm_bf16_hold) is converted once for every product that reads it until it
 * is released, and the products give the bits they give when each converts it; after the release
 * they convert again; under f32 holding does nothing; a fifth hold finds no buffer and changes
 * nothing. */
START_TEST(held_operand_converted_once) {
    enum { R = 50, I = 40, O1 = 24, O2 = 36 };
    float *X = hy_malloc(sizeof(float) * R * I), *W1 = hy_malloc(sizeof(float) * O1 * I), *W2 = hy_malloc(sizeof(float) * O2 * I);
    float *Y[2][2];
    for (int a = 0; a < 2; a++) Y[a][0] = hy_malloc(sizeof(float) * R * O1), Y[a][1] = hy_malloc(sizeof(float) * R * O2);
    tu_fill_normal(X, R * I, 1, 81), tu_fill_normal(W1, O1 * I, 1, 82), tu_fill_normal(W2, O2 * I, 1, 83);
    hy_gemm_set_precision(HY_PREC_BF16);
    hy_gemm_stats st;
    for (int held = 0; held < 2; held++) {
        hy_gemm_stats_reset();
        if (held) ck_assert_int_eq(hy_gemm_bf16_hold(X, R * I), 0);
        hy_linear_forward(Y[held][0], X, W1, NULL, R, I, O1);
        hy_linear_forward(Y[held][1], X, W2, NULL, R, I, O2);
        if (held) hy_gemm_bf16_release(X);
        hy_gemm_stats_get(&st);
        long long want = (long long)(held ? 1 : 2) * R * I + (long long)(O1 + O2) * I;
        ck_assert_int_eq(st.converted, want);
        ck_assert_int_eq(st.shadowed, held ? 2 * R * I : 0);
    }
    ck_assert(memcmp(Y[0][0], Y[1][0], sizeof(float) * R * O1) == 0);
    ck_assert(memcmp(Y[0][1], Y[1][1], sizeof(float) * R * O2) == 0);
    hy_gemm_stats_reset();
    hy_linear_forward(Y[1][0], X, W1, NULL, R, I, O1);   /* released: converted again */
    hy_gemm_stats_get(&st);
    ck_assert_int_eq(st.converted, (long long)(R + O1) * I);
    ck_assert_int_eq(st.shadowed, 0);
    /* every buffer held: one more hold is a no-op, its products convert as usual */
    float *Z[HY_GEMM_HOLDS];
    for (int i = 0; i < HY_GEMM_HOLDS; i++) {
        Z[i] = hy_malloc(sizeof(float) * 16);
        tu_fill_normal(Z[i], 16, 1, 90 + i);
        ck_assert_int_eq(hy_gemm_bf16_hold(Z[i], 16), 0);
    }
    ck_assert_int_eq(hy_gemm_bf16_hold(X, R * I), 0);
    hy_gemm_stats_reset();
    hy_linear_forward(Y[1][0], X, W1, NULL, R, I, O1);
    hy_gemm_stats_get(&st);
    ck_assert_int_eq(st.shadowed, 0);
    ck_assert(memcmp(Y[0][0], Y[1][0], sizeof(float) * R * O1) == 0);
    hy_gemm_bf16_release(X);   /* not held: nothing to do */
    for (int i = 0; i < HY_GEMM_HOLDS; i++) hy_gemm_bf16_release(Z[i]), hy_free(Z[i]);
    /* f32: nothing held */
    hy_gemm_set_precision(HY_PREC_F32);
    ck_assert_int_eq(hy_gemm_bf16_hold(X, R * I), 0);
    hy_gemm_set_precision(HY_PREC_BF16);
    hy_gemm_stats_reset();
    hy_linear_forward(Y[1][0], X, W1, NULL, R, I, O1);
    hy_gemm_stats_get(&st);
    ck_assert_int_eq(st.shadowed, 0);
    hy_gemm_bf16_release(X);
    hy_gemm_set_precision(HY_PREC_F32);
    hy_free(X), hy_free(W1), hy_free(W2);
    for (int a = 0; a < 2; a++) hy_free(Y[a][0]), hy_free(Y[a][1]);
}
END_TEST

/* Operands given in bf16 (hy_gemm_bf16_given, hy_linear_backward_bf16) are read as they are:
 * under bf16 the products give the bits they give when they convert the f32 operand themselves,
 * with the given values counted as given and not converted, and the f32 form may be absent;
 * under f32 the bf16 forms are ignored (here: garbage) and nothing is counted. */
START_TEST(given_operand_read_as_is) {
    enum { R = 50, I = 40, O = 24 };
    float *X = hy_malloc(sizeof(float) * R * I), *W = hy_malloc(sizeof(float) * O * I), *dY = hy_malloc(sizeof(float) * R * O);
    float *Y[2], *dX[2], *dW[2];
    for (int k = 0; k < 2; k++) {
        Y[k] = hy_malloc(sizeof(float) * R * O), dX[k] = hy_malloc(sizeof(float) * R * I);
        dW[k] = hy_calloc(sizeof(float) * O * I);
    }
    hy_bf16 *Xh = hy_malloc(sizeof(hy_bf16) * R * I), *dYh = hy_malloc(sizeof(hy_bf16) * R * O);
    tu_fill_normal(X, R * I, 1, 91), tu_fill_normal(W, O * I, 1, 92), tu_fill_normal(dY, R * O, 1, 93);
    hy_bf16_from_f32(Xh, X, R * I), hy_bf16_from_f32(dYh, dY, R * O);
    hy_gemm_set_precision(HY_PREC_BF16);
    hy_linear_forward(Y[0], X, W, NULL, R, I, O);
    hy_linear_backward(dX[0], dW[0], NULL, dY, X, W, R, I, O, false);
    hy_gemm_stats_reset();
    hy_gemm_bf16_given(false, true, R, O, I, 1.0f, NULL, Xh, I, W, NULL, I, 0.0f, Y[1], O);
    hy_linear_backward_bf16(dX[1], dW[1], NULL, NULL, dYh, NULL, Xh, W, R, I, O, false);
    hy_gemm_stats st;
    hy_gemm_stats_get(&st);
    ck_assert_int_eq(st.given, (long long)R * I * 2 + (long long)R * O * 2);
    ck_assert_int_eq(st.converted, (long long)O * I * 2);   /* W in the forward and in dX */
    ck_assert_int_eq(st.bf16, 3);
    ck_assert(memcmp(Y[0], Y[1], sizeof(float) * R * O) == 0);
    ck_assert(memcmp(dX[0], dX[1], sizeof(float) * R * I) == 0);
    ck_assert(memcmp(dW[0], dW[1], sizeof(float) * O * I) == 0);
    /* f32: the given bf16 forms are not read */
    hy_gemm_set_precision(HY_PREC_F32);
    memset(Xh, 0xff, sizeof(hy_bf16) * R * I), memset(dYh, 0xff, sizeof(hy_bf16) * R * O);   /* NaNs */
    hy_linear_forward(Y[0], X, W, NULL, R, I, O);
    memset(dW[0], 0, sizeof(float) * O * I), memset(dW[1], 0, sizeof(float) * O * I);
    hy_linear_backward(dX[0], dW[0], NULL, dY, X, W, R, I, O, false);
    hy_gemm_stats_reset();
    hy_gemm_bf16_given(false, true, R, O, I, 1.0f, X, Xh, I, W, NULL, I, 0.0f, Y[1], O);
    hy_linear_backward_bf16(dX[1], dW[1], NULL, dY, dYh, X, Xh, W, R, I, O, false);
    hy_gemm_stats_get(&st);
    ck_assert_int_eq(st.given, 0);
    ck_assert(memcmp(Y[0], Y[1], sizeof(float) * R * O) == 0);
    ck_assert(memcmp(dX[0], dX[1], sizeof(float) * R * I) == 0);
    ck_assert(memcmp(dW[0], dW[1], sizeof(float) * O * I) == 0);
    hy_free(X), hy_free(W), hy_free(dY), hy_free(Xh), hy_free(dYh);
    for (int k = 0; k < 2; k++) hy_free(Y[k]), hy_free(dX[k]), hy_free(dW[k]);
}
END_TEST

/* ---- a training step ---- */

/* A 2-layer stack of `mixer` and `ffn` (NULL: none) at d 64, built with the public config calls. */
static hy_model *small_model(const char *mixer, const char *ffn) {
    hy_model_config *c;
    ck_assert_int_eq(hy_model_config_new(64, 2, 64, &c), 0);
    for (int i = 0; i < 2; i++) ck_assert_msg(hy_model_config_set_layer(c, i, mixer, ffn) == 0, "%s", hy_last_error());
    ck_assert_msg(hy_model_config_resolve(c) == 0, "%s/%s: %s", mixer, ffn ? ffn : "none", hy_last_error());
    hy_model *m;
    ck_assert_msg(hy_model_create(c, 7, &m) == 0, "%s", hy_last_error());
    hy_model_config_destroy(c);
    return m;
}

/* Gradients of one batch (every parameter, as one vector) and the loss, at precision p. */
static float *gradients(hy_model *m, hy_precision p, const int32_t *in, const int32_t *tg, int B, int T, float *loss) {
    hy_gemm_set_precision(p);
    hy_loss l;
    ck_assert_msg(hy_model_forward(m, in, tg, B, T, true, &l) == 0, "%s", hy_last_error());
    hy_model_zero_grad(m);
    ck_assert_msg(hy_model_backward(m) == 0, "%s", hy_last_error());
    float *g = hy_malloc(m->numel * sizeof(float));
    memcpy(g, m->grad, m->numel * sizeof(float));
    *loss = l.loss;
    hy_gemm_set_precision(HY_PREC_F32);
    return g;
}

/* ‖a - b‖ / ‖b‖ over the n entries. */
static double norm_err(const float *a, const float *b, size_t n) {
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), r += (double)b[i] * b[i];
    return sqrt(d / fmax(r, 1e-30));
}

/* Every registered block in a stack (a mixer over swiglu, an ffn under attention): the bf16 step's
 * loss within 0.1% and its gradient within 2% (norm-wise, over all parameters) of the f32 step's
 * (measured: loss 0.0001-0.002%, gradient 0.4-0.8%),
 * every product of the step in oneDNN bf16 with the weights read from the model's bf16 copy; the
 * forced portable path gives the same gradients bit for bit (its conversions give the same bits). */
START_TEST(training_step_bf16_close_to_f32) {
    enum { B = 2, T = 40 };
    int32_t in[B * T], tg[B * T];
    hy_rng r;
    hy_rng_seed(&r, 3);
    for (int i = 0; i < B * T; i++) in[i] = (int32_t)hy_rng_below(&r, 64), tg[i] = (int32_t)hy_rng_below(&r, 64);
    for (int i = 0; i < hy_block_count(); i++) {
        const hy_block_ops *ops = hy_block_at(i);
        const char *mixer = ops->kinds & HY_KIND_MIXER ? ops->name : "attention";
        const char *ffn = ops->kinds & HY_KIND_MIXER ? "swiglu" : ops->name;
        hy_model *m = small_model(mixer, ffn);
        float l32, l16, l16p;
        float *g32 = gradients(m, HY_PREC_F32, in, tg, B, T, &l32);
        hy_gemm_stats_reset();
        float *g16 = gradients(m, HY_PREC_BF16, in, tg, B, T, &l16);
        hy_gemm_stats st;
        hy_gemm_stats_get(&st);
        hy_bf16_force_portable(true);
        float *g16p = gradients(m, HY_PREC_BF16, in, tg, B, T, &l16p);
        hy_bf16_force_portable(false);
        double ge = norm_err(g16, g32, m->numel);
        ck_assert_msg(fabs(l16 - l32) <= 0.001 * fabs(l32), "%s/%s: loss bf16 %g vs f32 %g", mixer, ffn, l16, l32);
        ck_assert_msg(ge < 0.02, "%s/%s: gradient off by %.4f (norm-wise) in bf16", mixer, ffn, ge);
        ck_assert_msg(st.products > 0 && st.bf16 == st.products && st.f32 == 0 && st.bf16_fallbacks == 0,
                      "%s/%s: %ld products, %ld in bf16, %ld in f32, %ld fallbacks", mixer, ffn, st.products, st.bf16,
                      st.f32, st.bf16_fallbacks);
        ck_assert_msg(st.shadowed > 0, "%s/%s: no weight read from the bf16 copy", mixer, ffn);
        ck_assert_msg(st.seconds > 0 && st.seconds >= st.convert_seconds, "%s/%s: %g s in products, %g converting",
                      mixer, ffn, st.seconds, st.convert_seconds);
        ck_assert_msg(memcmp(g16, g16p, m->numel * sizeof(float)) == 0 && l16 == l16p,
                      "%s/%s: the portable bf16 path gives other gradients", mixer, ffn);
        hy_free(g32), hy_free(g16), hy_free(g16p);
        hy_model_free(m);
    }
}
END_TEST

/* Mamba under bf16 writes the activations its products read in bf16 itself (xc's copy, yg, d raw,
 * dxz: 10 · rows · E values given per layer and step) and converts none of them; under f32 it
 * gives none. A mamba stack over swiglu, 2 layers at d 64 (E 128). */
START_TEST(mamba_gives_its_activations_in_bf16) {
    enum { B = 2, T = 40, E = 128 };
    int32_t in[B * T], tg[B * T];
    for (int i = 0; i < B * T; i++) in[i] = (i * 5) % 64, tg[i] = (i * 3 + 1) % 64;
    hy_model *m = small_model("mamba", "swiglu");
    for (int p = 0; p < 2; p++) {
        float loss;
        hy_gemm_stats_reset();
        float *g = gradients(m, p ? HY_PREC_BF16 : HY_PREC_F32, in, tg, B, T, &loss);
        hy_gemm_stats st;
        hy_gemm_stats_get(&st);
        ck_assert_int_eq(st.given, p ? 2LL * 10 * B * T * E : 0);
        hy_free(g);
    }
    hy_model_free(m);
}
END_TEST

/* A mamba backward under another precision than its forward (whose bf16 activations exist only in
 * bf16) is refused with a message naming the change, not run on the wrong buffers. */
START_TEST(mamba_refuses_precision_change_before_backward) {
    enum { B = 1, T = 12 };
    int32_t in[B * T], tg[B * T];
    for (int i = 0; i < B * T; i++) in[i] = (i * 5) % 64, tg[i] = (i * 3 + 1) % 64;
    hy_model *m = small_model("mamba", "swiglu");
    hy_gemm_set_precision(HY_PREC_BF16);
    hy_loss l;
    ck_assert_int_eq(hy_model_forward(m, in, tg, B, T, true, &l), 0);
    hy_gemm_set_precision(HY_PREC_F32);
    hy_model_zero_grad(m);
    ck_assert_int_lt(hy_model_backward(m), 0);
    ck_assert_msg(strstr(hy_last_error(), "precision changed") != NULL, "%s", hy_last_error());
    hy_model_free(m);
}
END_TEST

/* The bf16 copy follows the weights: after an optimizer update a streaming step reads the new
 * weights (the copy is refreshed once, not per product), and it equals bf16 of the f32 arena. */
START_TEST(weight_copy_follows_updates) {
    hy_model *m = small_model("attention", "swiglu");
    enum { B = 1, T = 8 };
    int32_t in[B * T], tg[B * T];
    for (int i = 0; i < B * T; i++) in[i] = (i * 7) % 64, tg[i] = (i * 7 + 7) % 64;
    hy_optim opt = {.beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.0};
    ck_assert_int_eq(hy_optim_init(&opt, m, HY_OPTIM_ADAMW), 0);
    hy_gemm_set_precision(HY_PREC_BF16);
    hy_loss l;
    ck_assert_int_eq(hy_model_forward(m, in, tg, B, T, true, &l), 0);
    ck_assert(m->bf16_valid);
    hy_model_zero_grad(m);
    ck_assert_int_eq(hy_model_backward(m), 0);
    hy_optim_step(&opt, m, 1e-2);
    ck_assert(!m->bf16_valid);
    hy_model_state *st;
    ck_assert_int_eq(hy_model_state_new(m, 1, &st), 0);
    float logits[64];
    hy_gemm_stats_reset();
    ck_assert_int_eq(hy_model_step(m, st, in, logits), 0);
    ck_assert(m->bf16_valid);
    hy_gemm_stats s1;
    hy_gemm_stats_get(&s1);
    ck_assert_int_eq(hy_model_step(m, st, in + 1, logits), 0);
    hy_gemm_stats s2;
    hy_gemm_stats_get(&s2);
    ck_assert_int_eq(s2.bf16 - s1.bf16, s1.bf16);          /* same products per token ... */
    ck_assert_int_eq(s2.shadowed - s1.shadowed, s1.shadowed);   /* ... every weight from the copy */
    for (size_t i = 0; i < m->numel; i++) ck_assert_uint_eq(m->data_bf16[i], hy_bf16_round(m->data[i]));
    hy_model_state_free(m, st);
    hy_gemm_set_precision(HY_PREC_F32);
    hy_optim_free(&opt);
    hy_model_free(m);
}
END_TEST

/* The norms' bf16 copy under bf16: after a forward every slot of m->normed has its bf16 value in the
 * copy, and a product reading a layer's input there reads the copy (counted as shadowed, nothing of
 * it converted), also after a longer batch moved the buffer; after an f32 forward (which writes no
 * copy) no copy is registered, so a bf16 product converts the input instead of reading stale values.
 * For a mamba stack and for attention, each over swiglu (training_step_bf16_close_to_f32 checks
 * their bf16 steps against f32). */
START_TEST(norm_outputs_read_from_their_copy) {
    static const char *const mixers[] = {"mamba", "attention"};
    for (int k = 0; k < 2; k++) {
        hy_model *m = small_model(mixers[k], "swiglu");
        const int d = 64, S = 4;
        for (int T = 8; T <= 40; T += 32) {   /* the second forward grows (moves) the buffers */
            enum { B = 2 };
            int32_t in[B * 40], tg[B * 40];
            for (int i = 0; i < B * T; i++) in[i] = (i * 7) % 64, tg[i] = (i * 5 + 3) % 64;
            float loss;
            hy_free(gradients(m, HY_PREC_BF16, in, tg, B, T, &loss));
            const size_t n = (size_t)B * T * d;
            ck_assert_ptr_eq(m->normed_shadow, m->normed.p);
            for (size_t i = 0; i < n * (S + 1); i++) ck_assert_uint_eq(m->normed_bf16[i], hy_bf16_round(m->normed.p[i]));
            float W[8 * 64], out[2 * 40 * 8];
            for (int i = 0; i < 8 * d; i++) W[i] = sinf((float)i);
            hy_gemm_set_precision(HY_PREC_BF16);
            hy_gemm_stats_reset();
            hy_linear_forward(out, m->normed.p + 2 * n, W, NULL, B * T, d, 8);   /* the second layer's input */
            hy_gemm_stats st;
            hy_gemm_stats_get(&st);
            ck_assert_int_eq(st.shadowed, (long long)n);
            ck_assert_int_eq(st.converted, 8LL * d);   /* W alone */
            hy_gemm_set_precision(HY_PREC_F32);
        }
        float loss;
        int32_t in[16], tg[16];
        for (int i = 0; i < 16; i++) in[i] = i % 64, tg[i] = (i + 1) % 64;
        hy_free(gradients(m, HY_PREC_F32, in, tg, 2, 8, &loss));
        ck_assert_ptr_null(m->normed_shadow);
        float W[8 * 64], out[16 * 8];
        for (int i = 0; i < 8 * 64; i++) W[i] = cosf((float)i);
        hy_gemm_set_precision(HY_PREC_BF16);
        hy_gemm_stats_reset();
        hy_linear_forward(out, m->normed.p, W, NULL, 16, d, 8);
        hy_gemm_stats st;
        hy_gemm_stats_get(&st);
        ck_assert_int_eq(st.shadowed, 0);
        ck_assert_int_eq(st.converted, 16LL * d + 8LL * d);
        hy_gemm_set_precision(HY_PREC_F32);
        hy_model_free(m);
    }
}
END_TEST

/* What bf16 adds to a training step's memory (the weights' copy, a tracked allocation, and the
 * growth of the per-thread conversion buffers and oneDNN scratchpads, hy_gemm_stats.buffer_bytes)
 * is at least the weights' copy and at most the run estimate's "bf16 copies" part
 * (hy_run_validate), for the transformer and the mamba config. */
START_TEST(bf16_memory_within_estimate) {
    static const char *const cfgs[] = {"configs/transformer.yaml", "configs/mamba.yaml"};
    for (int i = 0; i < 2; i++) {
        hy_run_config c;
        const char *sets[] = {"data.corpus=tests/data/tiny-corpus.txt", "compute.precision=bf16", "train.batch_size=2",
                              "train.seq_len=96"};
        ck_assert_msg(hy_run_config_load(cfgs[i], sets, 4, &c) == 0, "%s", hy_last_error());
        hy_run_check k;
        ck_assert_msg(hy_run_validate(&c, NULL, &k) == 0, "%s", hy_last_error());
        hy_model *m;
        ck_assert_int_eq(hy_model_create(&c.model, 1, &m), 0);
        enum { B = 2, T = 96 };
        int32_t in[B * T], tg[B * T];
        for (int j = 0; j < B * T; j++) in[j] = (j * 7) % 256, tg[j] = (j * 11) % 256;
        double peak[2], buffers[2];
        for (int p = -1; p < 2; p++) {   /* an f32 step that allocates the activations, then f32 and bf16 measured */
            hy_gemm_set_precision(p > 0 ? HY_PREC_BF16 : HY_PREC_F32);
            size_t base = hy_mem_current();
            hy_mem_reset_peak();
            hy_loss l;
            ck_assert_int_eq(hy_model_forward(m, in, tg, B, T, true, &l), 0);
            hy_model_zero_grad(m);
            ck_assert_int_eq(hy_model_backward(m), 0);
            hy_gemm_stats st;
            hy_gemm_stats_get(&st);
            if (p >= 0) peak[p] = (double)(hy_mem_peak() - base), buffers[p] = st.buffer_bytes;
        }
        hy_gemm_set_precision(HY_PREC_F32);
        double extra = peak[1] - peak[0] + buffers[1] - buffers[0], copy = (double)m->numel * sizeof(hy_bf16);
        ck_assert_msg(extra >= copy && extra <= k.gemm, "%s: bf16 adds %.0f bytes; the copy is %.0f, the estimate %.0f",
                      cfgs[i], extra, copy, k.gemm);
        hy_model_free(m);
        hy_run_config_free(&c);
    }
}
END_TEST

static Suite *bf16_suite(void) {
    Suite *s = suite_create("bf16");
    TCase *tc = tcase_create("bf16");
    tcase_add_test(tc, round_known_values);
    tcase_add_test(tc, vector_conversion_matches_portable);
    tcase_add_test(tc, tile_product_native);
    tcase_add_test(tc, tile_product_portable);
    tcase_add_test(tc, tile_product_in_parallel);
    tcase_add_test(tc, tile_product_packed_b);
    tcase_add_test(tc, tile_product_portable_matches_native);
    tcase_add_test(tc, bf16_gemm_odd_shapes);
    tcase_add_test(tc, bf16_gemm_odd_shapes_portable);
    tcase_add_test(tc, bf16_gemm_inside_parallel_region);
    tcase_add_test(tc, registered_copy_is_read);
    tcase_add_test(tc, norm_outputs_read_from_their_copy);
    tcase_add_test(tc, held_operand_converted_once);
    tcase_add_test(tc, given_operand_read_as_is);
    tcase_add_test(tc, training_step_bf16_close_to_f32);
    tcase_add_test(tc, mamba_gives_its_activations_in_bf16);
    tcase_add_test(tc, mamba_refuses_precision_change_before_backward);
    tcase_add_test(tc, weight_copy_follows_updates);
    tcase_add_test(tc, bf16_memory_within_estimate);
    suite_add_tcase(s, tc);
    return s;
}
HY_TEST_SUITE(bf16_suite)

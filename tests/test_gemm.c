/* GEMM dispatch: every backend and transpose combination against a plain triple loop; the small
 * register-blocked product (core/tile_mm.h) against the same loop, and core/simd.h's transpose. */
#include "core/gemm.h"
#include "core/mem.h"
#include "core/simd.h"
#include "core/tile_mm.h"
#include "tests/testutil.h"
#include <math.h>
#include <omp.h>
#include <string.h>

static void reference(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                      int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++)
                s += (double)(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                     (tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
            C[(size_t)i * ldc + j] = (float)(alpha * s + beta * C[(size_t)i * ldc + j]);
        }
}

static void check_backend(hy_gemm_backend be, hy_precision prec, double tol) {
    static const int shapes[][3] = {{1, 1, 1},   {7, 5, 3},   {64, 48, 80}, {130, 70, 33}, {300, 257, 129},
                                    {1, 70, 33}, {1, 64, 48}, {130, 1, 33}, {64, 1, 80}};   /* matrix-vector: sgemv */
    hy_gemm_set_backend(be);
    hy_gemm_set_precision(prec);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
                size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, nc = (size_t)M * ldc;
                float *A = hy_malloc(na * 4), *B = hy_malloc(nb * 4), *C = hy_malloc(nc * 4), *R = hy_malloc(nc * 4);
                tu_fill_normal(A, na, 1, 1 + s), tu_fill_normal(B, nb, 1, 2 + s), tu_fill_normal(C, nc, 1, 3 + s);
                memcpy(R, C, nc * 4);
                float alpha = 0.5f, beta = (s % 2) ? 1.0f : 0.0f;
                hy_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
                reference(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, R, ldc);
                double worst = 0;
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        double e = fabs(C[(size_t)i * ldc + j] - R[(size_t)i * ldc + j]) / (1 + sqrt(K));
                        worst = fmax(worst, e);
                    }
                ck_assert_msg(worst < tol, "%s %s M%d N%d K%d ta%d tb%d: error %g", hy_gemm_backend_name(be),
                              prec ? "bf16" : "f32", M, N, K, ta, tb, worst);
                hy_free(A), hy_free(B), hy_free(C), hy_free(R);
            }
    hy_gemm_set_backend(HY_GEMM_AUTO);
    hy_gemm_set_precision(HY_PREC_F32);
}

START_TEST(openblas_matches_reference) { check_backend(HY_GEMM_OPENBLAS, HY_PREC_F32, 1e-5); }
END_TEST
START_TEST(onednn_matches_reference) { check_backend(HY_GEMM_ONEDNN, HY_PREC_F32, 1e-5); }
END_TEST
START_TEST(auto_matches_reference) { check_backend(HY_GEMM_AUTO, HY_PREC_F32, 1e-5); }
END_TEST
/* bf16 inputs carry 8 bits of mantissa: errors of ~2^-8 relative per product are expected. */
START_TEST(bf16_close_to_reference) { check_backend(HY_GEMM_ONEDNN, HY_PREC_BF16, 3e-2); }
END_TEST

START_TEST(linear_backward_matches_definition) {
    int rows = 9, in = 6, out = 5;
    float X[54], W[30], b[5], Y[45], dY[45], dX[54], dW[30] = {0}, db[5] = {0};
    tu_fill_normal(X, 54, 1, 1), tu_fill_normal(W, 30, 1, 2), tu_fill_normal(b, 5, 1, 3), tu_fill_normal(dY, 45, 1, 4);
    hy_linear_forward(Y, X, W, b, rows, in, out);
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
            double s = b[o];
            for (int i = 0; i < in; i++) s += (double)X[r * in + i] * W[o * in + i];
            ck_assert_double_eq_tol(Y[r * out + o], s, 1e-5);
        }
    hy_linear_backward(dX, dW, db, dY, X, W, rows, in, out, false);
    for (int o = 0; o < out; o++) {
        double sb = 0;
        for (int r = 0; r < rows; r++) sb += dY[r * out + o];
        ck_assert_double_eq_tol(db[o], sb, 1e-5);
        for (int i = 0; i < in; i++) {
            double s = 0;
            for (int r = 0; r < rows; r++) s += (double)dY[r * out + o] * X[r * in + i];
            ck_assert_double_eq_tol(dW[o * in + i], s, 1e-5);
        }
    }
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < in; i++) {
            double s = 0;
            for (int o = 0; o < out; o++) s += (double)dY[r * out + o] * W[o * in + i];
            ck_assert_double_eq_tol(dX[r * in + i], s, 1e-5);
        }
}
END_TEST

/* Calls from inside a parallel region (per-thread blocks, as the chunked SSD makes them): every
 * thread its own shapes and operands at once, forced oneDNN (each thread's own primitives) and
 * auto, against the reference; again after hy_gemm_shutdown freed every thread's primitives. */
START_TEST(parallel_region_calls) {
    enum { NT = 4, M = 64, N = 48, K = 40 };
    static const hy_gemm_backend bes[] = {HY_GEMM_ONEDNN, HY_GEMM_AUTO, HY_GEMM_ONEDNN};
    int threads = omp_get_max_threads();
    omp_set_num_threads(NT);
    for (int round = 0; round < 3; round++) {
        hy_gemm_set_backend(bes[round]);
        double worst[NT] = {0};
        #pragma omp parallel for schedule(static, 1) num_threads(NT)
        for (int t = 0; t < NT; t++) {
            int m = M + 8 * t, ta = t & 1, tb = (t >> 1) & 1, lda = ta ? m : K, ldb = tb ? K : N;
            float *A = hy_malloc((size_t)m * K * 4), *B = hy_malloc((size_t)K * N * 4), *C = hy_malloc((size_t)m * N * 4),
                  *R = hy_malloc((size_t)m * N * 4);
            for (int rep = 0; rep < 20; rep++) {
                tu_fill_normal(A, (size_t)m * K, 1, 10 * t + rep), tu_fill_normal(B, (size_t)K * N, 1, 5 + t + rep);
                hy_gemm(ta, tb, m, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, N);
                reference(ta, tb, m, N, K, 1.0f, A, lda, B, ldb, 0.0f, R, N);
                for (int i = 0; i < m * N; i++) worst[t] = fmax(worst[t], fabs(C[i] - R[i]) / (1 + sqrt(K)));
            }
            hy_free(A), hy_free(B), hy_free(C), hy_free(R);
        }
        for (int t = 0; t < NT; t++)
            ck_assert_msg(worst[t] < 1e-5, "round %d thread %d: error %g", round, t, worst[t]);
        if (round == 1) hy_gemm_shutdown();
    }
    hy_gemm_set_backend(HY_GEMM_AUTO);
    omp_set_num_threads(threads);
}
END_TEST

/* More distinct shapes than the oneDNN cache holds (1024), from two threads at once: every product
 * still runs in oneDNN and is right (the cache evicts instead of sending new shapes to OpenBLAS,
 * also a shape a thread comes back to after others evicted it), and the cache stays bounded. */
START_TEST(cache_evicts_past_capacity) {
    enum { NT = 2, SHAPES = 1300, K = 8, N = 8, MAXM = 24 + SHAPES };
    int threads = omp_get_max_threads();
    omp_set_num_threads(NT);
    hy_gemm_set_backend(HY_GEMM_ONEDNN);
    hy_gemm_shutdown();   /* an empty cache */
    hy_gemm_stats_reset();
    double worst[NT] = {0};
    #pragma omp parallel for schedule(static, 1) num_threads(NT)
    for (int t = 0; t < NT; t++) {
        float *A = hy_malloc((size_t)MAXM * (K + 1) * 4), *B = hy_malloc((size_t)K * N * 4), *C = hy_malloc((size_t)MAXM * N * 4),
              *R = hy_malloc((size_t)MAXM * N * 4);
        tu_fill_normal(A, (size_t)MAXM * (K + 1), 1, 40 + t), tu_fill_normal(B, (size_t)K * N, 1, 50 + t);
        for (int s = 0; s < SHAPES / NT; s++) {
            /* a distinct M (and ld) per shape and thread; the kept shape (M = 16 + t) every 50th */
            const int m = s % 50 == 0 ? 16 + t : 18 + NT * s + t, lda = K + t;
            hy_gemm(false, false, m, N, K, 1.0f, A, lda, B, N, 0.0f, C, N);
            if (s % 97 == 0 || s % 50 == 0) {
                reference(false, false, m, N, K, 1.0f, A, lda, B, N, 0.0f, R, N);
                for (int i = 0; i < m * N; i++) worst[t] = fmax(worst[t], fabs(C[i] - R[i]) / (1 + sqrt(K)));
            }
        }
        hy_free(A), hy_free(B), hy_free(C), hy_free(R);
    }
    hy_gemm_stats st;
    hy_gemm_stats_get(&st);
    for (int t = 0; t < NT; t++) ck_assert_msg(worst[t] < 1e-5, "thread %d: error %g", t, worst[t]);
    ck_assert_msg(st.onednn_fallbacks == 0, "%ld products went to OpenBLAS", st.onednn_fallbacks);
    ck_assert_int_eq(st.f32, st.products);
    ck_assert_msg(st.primitives_cached <= 1024 && st.primitives_cached >= 1000, "%ld cached", st.primitives_cached);
    const long distinct = NT * (SHAPES / NT - (SHAPES / NT + 49) / 50 + 1);   /* the kept shape counts once */
    ck_assert_msg(st.primitives_evicted >= distinct - 1024, "%ld evicted of %ld shapes", st.primitives_evicted, distinct);
    hy_gemm_set_backend(HY_GEMM_AUTO);
    hy_gemm_shutdown();
    omp_set_num_threads(threads);
}
END_TEST

/* hy_tile_mm against the plain loop in double: every register-block remainder (M not a multiple
 * of 4, N not a multiple of the vector width, fewer than 4 vectors), transposed and row-major A,
 * padded strides, C overwritten (with NaN in it: not read), scaled uniformly and per row, and
 * lower-triangular A (zeros above the diagonal, NaN far above it: never read). */
START_TEST(tile_mm_matches_reference) {
    static const int shapes[][3] = {{1, 1, 1},   {32, 128, 32}, {64, 160, 64}, {64, 128, 32}, {5, 17, 3},
                                    {7, 9, 13},  {13, 100, 7},  {3, 70, 40},   {32, 8, 32},   {45, 33, 45},
                                    {16, 64, 0}, {0, 5, 5}};
    for (size_t sh = 0; sh < sizeof shapes / sizeof *shapes; sh++)
        for (int mode = 0; mode < 8; mode++) {
            const int M = shapes[sh][0], N = shapes[sh][1], K = shapes[sh][2];
            const bool ta = mode & 1, lower = (mode & 4) && M == K;
            const int scale = (mode >> 1) & 3;   /* 0: overwrite, 1: uniform, 2: per row, 3: per row (lower) */
            const ptrdiff_t lda = (ta ? M : K) + 3, ldb = N + 5, ldc = N + 2;
            const ptrdiff_t sam = ta ? 1 : lda, sak = ta ? lda : 1;
            const size_t na = (size_t)(ta ? K : M) * lda + 1, nb = (size_t)K * ldb + 1, nc = (size_t)M * ldc + 1;
            float *A = hy_malloc(na * 4), *B = hy_malloc(nb * 4), *C = hy_malloc(nc * 4), *rs = hy_malloc((M + 1) * 4);
            double *R = hy_malloc(nc * sizeof(double));
            tu_fill_normal(A, na, 1, 11 + sh), tu_fill_normal(B, nb, 1, 12 + sh), tu_fill_normal(C, nc, 1, 13 + sh);
            tu_fill_normal(rs, M + 1, 1, 14 + sh);
            if (lower)
                for (int m = 0; m < M; m++)
                    for (int k = m + 1; k < K; k++) A[m * sam + k * sak] = k >= (m / 4 + 1) * 4 ? NAN : 0.0f;
            if (scale == 0)
                for (int i = 0; i < M; i++) C[i * ldc] = NAN;
            const float cs = scale == 1 ? -0.75f : 0.0f;
            const float *rsp = scale >= 2 ? rs : NULL;
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    double s = 0;
                    for (int k = 0; k < (lower ? i + 1 : K); k++) s += (double)A[i * sam + k * sak] * B[k * ldb + j];
                    const double f = rsp ? rsp[i] : cs;
                    R[i * ldc + j] = s + (f != 0.0 ? f * C[i * ldc + j] : 0.0);
                }
            hy_tile_mm(M, N, K, A, sam, sak, B, ldb, C, ldc, cs, rsp, lower);
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++)
                    ck_assert_msg(fabs(C[i * ldc + j] - R[i * ldc + j]) <= 1e-5 * (1 + fabs(R[i * ldc + j])),
                                  "%dx%dx%d mode %d at (%d, %d): %g, want %g", M, N, K, mode, i, j, C[i * ldc + j],
                                  R[i * ldc + j]);
            hy_free(A), hy_free(B), hy_free(C), hy_free(rs), hy_free(R);
        }
}
END_TEST

/* hy_tile_mm_part's causal parts against the plain loop in double, for diagonal offsets that cut
 * inside a tile, sit on its corner or leave it whole (lim 1, 0, -3, 5, N or K and past it), the
 * attention tile shapes and odd ones (narrow ones in the taller row blocks of hy_tile_mm_rows), both
 * layouts of A, overwritten and scaled C:
 *   LOWER_A: A zero where k >= m + lim inside what a row block reads, NaN beyond (never read);
 *   UPPER_A: A zero where k <= m - lim inside what a row block reads, NaN before (never read);
 *   LOWER_C: every C[m][j] with j < m + lim equals the product, and the column strips a row does
 *            not see keep what they held. */
START_TEST(tile_mm_parts_match_reference) {
    static const int shapes[][3] = {{64, 64, 32}, {64, 32, 64}, {64, 16, 64}, {13, 37, 9}, {5, 70, 20}, {20, 20, 20}, {1, 3, 2}};
    static const int lims[] = {1, 0, -3, 5, 40, 70};
    for (size_t sh = 0; sh < sizeof shapes / sizeof *shapes; sh++)
        for (size_t li = 0; li < sizeof lims / sizeof *lims; li++)
            for (int mode = 0; mode < 12; mode++) {
                const int M = shapes[sh][0], N = shapes[sh][1], K = shapes[sh][2], lim = lims[li], MRr = hy_tile_mm_rows(N);
                const hy_tile_part part = (hy_tile_part)(1 + mode % 3);
                const bool ta = (mode / 3) & 1, scaled = mode / 6;
                const ptrdiff_t lda = (ta ? M : K) + 3, ldb = N + 5, ldc = N + 2;
                const ptrdiff_t sam = ta ? 1 : lda, sak = ta ? lda : 1;
                const size_t na = (size_t)(ta ? K : M) * lda + 1, nb = (size_t)K * ldb + 1, nc = (size_t)M * ldc + 1;
                float *A = hy_malloc(na * 4), *B = hy_malloc(nb * 4), *C = hy_malloc(nc * 4), *C0 = hy_malloc(nc * 4),
                      *rs = hy_malloc((M + 1) * 4);
                double *R = hy_malloc(nc * sizeof(double));
                tu_fill_normal(A, na, 1, 21 + sh), tu_fill_normal(B, nb, 1, 22 + sh), tu_fill_normal(C, nc, 1, 23 + sh);
                tu_fill_normal(rs, M + 1, 1, 24 + sh);
                for (int m = 0; m < M; m++) {
                    const int i = m / MRr * MRr, mr = M - i < MRr ? M - i : MRr;
                    for (int k = 0; k < K; k++) {
                        float *a = &A[m * sam + k * sak];
                        if (part == HY_TILE_LOWER_A && k >= m + lim) *a = k >= i + mr - 1 + lim ? NAN : 0.0f;
                        if (part == HY_TILE_UPPER_A && k <= m - lim) *a = k < i - lim + 1 ? NAN : 0.0f;
                    }
                }
                if (!scaled && part != HY_TILE_LOWER_C)
                    for (int i = 0; i < M; i++) C[i * ldc] = NAN;
                memcpy(C0, C, nc * 4);
                const float *rsp = scaled ? rs : NULL;
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        double sum = 0;
                        for (int k = 0; k < K; k++) {
                            const bool zero = (part == HY_TILE_LOWER_A && k >= i + lim) || (part == HY_TILE_UPPER_A && k <= i - lim);
                            if (!zero) sum += (double)A[i * sam + k * sak] * B[k * ldb + j];
                        }
                        R[i * ldc + j] = sum + (rsp ? rsp[i] * (double)C[i * ldc + j] : 0.0);
                    }
                hy_tile_mm_part(M, N, K, A, sam, sak, B, ldb, C, ldc, 0.0f, rsp, part, lim);
                for (int i = 0; i < M; i++) {
                    for (int j = 0; j < N; j++) {
                        const double got = C[i * ldc + j];
                        const int strip = j / (2 * HY_VW) * (2 * HY_VW);   /* LOWER_C's strip of column j */
                        if (part == HY_TILE_LOWER_C && i < strip - lim + 1)
                            ck_assert_msg(memcmp(&C[i * ldc + j], &C0[i * ldc + j], 4) == 0,
                                          "%dx%dx%d lim %d mode %d: C(%d, %d) past the block's limit was written", M,
                                          N, K, lim, mode, i, j);
                        else if (part != HY_TILE_LOWER_C || j < i + lim)
                            ck_assert_msg(fabs(got - R[i * ldc + j]) <= 1e-5 * (1 + fabs(R[i * ldc + j])),
                                          "%dx%dx%d part %d lim %d mode %d at (%d, %d): %g, want %g", M, N, K, (int)part,
                                          lim, mode, i, j, got, R[i * ldc + j]);
                    }
                }
                hy_free(A), hy_free(B), hy_free(C), hy_free(C0), hy_free(rs), hy_free(R);
            }
}
END_TEST

/* hy_transpose (core/simd.h) against the element loop: whole 8 × 8 tiles, edges in both directions,
 * padded strides. */
START_TEST(transpose_matches_loop) {
    static const int shapes[][2] = {{1, 1}, {8, 8}, {32, 64}, {64, 128}, {5, 13}, {13, 5}, {17, 40}, {0, 3}};
    for (size_t sh = 0; sh < sizeof shapes / sizeof *shapes; sh++) {
        const int rows = shapes[sh][0], cols = shapes[sh][1];
        const size_t ld_src = cols + 3, ld_dst = rows + 8;
        float *src = hy_malloc(((size_t)rows * ld_src + 1) * 4), *dst = hy_malloc(((size_t)cols * ld_dst + 1) * 4);
        tu_fill_normal(src, (size_t)rows * ld_src + 1, 1, 21 + sh);
        for (size_t i = 0; i < (size_t)cols * ld_dst + 1; i++) dst[i] = -1.0f;
        hy_transpose(dst, ld_dst, src, ld_src, rows, cols);
        for (int c = 0; c < cols; c++)
            for (size_t r = 0; r < ld_dst; r++)
                ck_assert_msg(dst[c * ld_dst + r] == ((int)r < rows ? src[r * ld_src + c] : -1.0f), "%dx%d at (%d, %zu)",
                              rows, cols, c, r);
        hy_free(src), hy_free(dst);
    }
}
END_TEST

static Suite *gemm_suite(void) {
    Suite *s = suite_create("gemm");
    TCase *tc = tcase_create("backends");
    tcase_add_test(tc, openblas_matches_reference);
    tcase_add_test(tc, onednn_matches_reference);
    tcase_add_test(tc, auto_matches_reference);
    tcase_add_test(tc, bf16_close_to_reference);
    tcase_add_test(tc, linear_backward_matches_definition);
    tcase_add_test(tc, parallel_region_calls);
    tcase_add_test(tc, cache_evicts_past_capacity);
    tcase_add_test(tc, tile_mm_matches_reference);
    tcase_add_test(tc, tile_mm_parts_match_reference);
    tcase_add_test(tc, transpose_matches_loop);
    suite_add_tcase(s, tc);
    return s;
}
HY_TEST_SUITE(gemm_suite)

/* The modal long convolution shared by s4d and hyena (layers/ssm_conv/modal_conv.c, modal_scan.c):
 * the kernel generator against SPEC's formula in double and its backward against finite
 * differences of that formula; the FFT convolution and its backward against direct O(T²) loops (T
 * not a power of two among them); the FFT path against the recurrent one at T = 4096; the scan
 * path (the blocks' training path) and its backward against the kernel and FFT path, at widths and
 * mode counts that leave partial vectors and padded mode blocks, and independent of the thread
 * count; concurrent use from several threads. */
#include "core/error.h"
#include "core/mem.h"
#include "core/rng.h"
#include "layers/ssm_conv/modal_conv.h"
#include "tests/testutil.h"
#include <complex.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Parameters of H channels × M modes, drawn around the S4D-Lin init (log_dt over [ln 1e-3, ln 0.1],
 * log_A_real around ln 0.5, A_imag around π·m) with enough spread that every term matters. */
typedef struct {
    int H, M;
    float *buf;
    hy_modal_params p;
} params;

static void params_new(params *P, int H, int M, uint64_t seed) {
    hy_rng r;
    hy_rng_seed(&r, seed);
    size_t hm = (size_t)H * M;
    P->H = H, P->M = M;
    P->buf = hy_calloc((H + 4 * hm) * sizeof(float));
    P->p = (hy_modal_params){P->buf, P->buf + H, P->buf + H + 2 * hm, P->buf + H + 3 * hm};
    for (int h = 0; h < H; h++) P->p.log_dt[h] = (float)(log(1e-3) + (log(0.1) - log(1e-3)) * hy_rng_uniform(&r));
    for (size_t i = 0; i < 2 * hm; i++) P->p.C[i] = hy_rng_normal(&r);
    for (size_t i = 0; i < hm; i++) {
        P->p.log_A_real[i] = logf(0.5f) + 0.5f * hy_rng_normal(&r);
        P->p.A_imag[i] = (float)(M_PI * (double)(i % M)) + 0.3f * hy_rng_normal(&r);
    }
}

static params params_zero_like(const params *P) {
    params G;
    size_t hm = (size_t)P->H * P->M;
    G.H = P->H, G.M = P->M;
    G.buf = hy_calloc((P->H + 4 * hm) * sizeof(float));
    G.p = (hy_modal_params){G.buf, G.buf + P->H, G.buf + P->H + 2 * hm, G.buf + P->H + 3 * hm};
    return G;
}

/* SPEC's kernel in double straight from the formula, for the parameters given as doubles
 * v = [log_dt (H), C (H, M, 2), log_A_real (H, M), A_imag (H, M)]. */
static void kernel_ref(const double *v, int H, int M, int T, double *K) {
    size_t hm = (size_t)H * M;
    const double *ldt = v, *C = v + H, *lar = v + H + 2 * hm, *ai = v + H + 3 * hm;
    for (int h = 0; h < H; h++) {
        double dt = exp(ldt[h]);
        for (int l = 0; l < T; l++) K[(size_t)h * T + l] = 0;
        for (int m = 0; m < M; m++) {
            size_t i = (size_t)h * M + m;
            double complex A = CMPLX(-exp(lar[i]), ai[i]), dtA = A * dt;
            double complex Ct = CMPLX(C[2 * i], C[2 * i + 1]) * (cexp(dtA) - 1) / A;
            for (int l = 0; l < T; l++) K[(size_t)h * T + l] += 2 * creal(Ct * cexp(dtA * (double)l));
        }
    }
}

static double *as_doubles(const params *P) {
    size_t n = P->H + 4 * (size_t)P->H * P->M;
    double *v = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) v[i] = P->buf[i];
    return v;
}

/* max |a - b| / max |b|. */
static double nerr_d(const float *a, const double *b, size_t n) {
    double diff = 0, scale = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(a[i] - b[i]);
        diff = isnan(e) ? INFINITY : fmax(diff, e);
        scale = fmax(scale, fabs(b[i]));
    }
    return diff / scale;
}

/* the error relative to the reference tensor's scale (testutil). */
static double nerr_f(const float *a, const float *ref, size_t n) { return tu_scaled_err(a, ref, n, 1e-30); }

/* T = 1, 63, 64, 65 (block edges of the generator), 1000 and 5000. */
START_TEST(kernel_matches_formula) {
    static const int Ts[] = {1, 63, 64, 65, 1000, 5000};
    for (size_t k = 0; k < sizeof Ts / sizeof *Ts; k++) {
        int H = 3, M = 7, T = Ts[k];
        params P;
        params_new(&P, H, M, 10 + k);
        float *K = hy_malloc((size_t)H * T * 4);
        double *Kr = malloc((size_t)H * T * 8), *v = as_doubles(&P);
        ck_assert_int_eq(hy_modal_kernel(&P.p, H, M, T, K), 0);
        kernel_ref(v, H, M, T, Kr);
        double e = nerr_d(K, Kr, (size_t)H * T);
        ck_assert_msg(e < 2e-6, "kernel T %d: error %g", T, e);
        hy_free(K), free(Kr), free(v), hy_free(P.buf);
    }
}
END_TEST

/* L = Σ Kern·R: the generator's backward against central differences (double, step 1e-5) of the
 * double formula, for every parameter entry. */
START_TEST(kernel_gradients_match_finite_differences) {
    static const int Ts[] = {37, 200};
    for (size_t k = 0; k < 2; k++) {
        int H = 2, M = 3, T = Ts[k];
        params P;
        params_new(&P, H, M, 30 + k);
        params G = params_zero_like(&P);
        float *R = hy_malloc((size_t)H * T * 4);
        tu_fill_normal(R, (size_t)H * T, 1, 40 + k);
        ck_assert_int_eq(hy_modal_kernel_backward(&P.p, H, M, T, R, &G.p), 0);
        size_t n = H + 4 * (size_t)H * M;
        double *v = as_doubles(&P), *K = malloc((size_t)H * T * 8), worst = 0;
        for (size_t i = 0; i < n; i++) {
            double keep = v[i], f[2];
            for (int s = 0; s < 2; s++) {
                v[i] = keep + (s ? -1e-5 : 1e-5);
                kernel_ref(v, H, M, T, K);
                f[s] = 0;
                for (size_t j = 0; j < (size_t)H * T; j++) f[s] += K[j] * R[j];
            }
            v[i] = keep;
            double num = (f[0] - f[1]) / 2e-5, e = fabs(G.buf[i] - num) / fmax(fabs(num) + fabs(G.buf[i]), 1e-3);
            worst = fmax(worst, e);
        }
        ck_assert_msg(worst < 1e-4, "kernel gradient T %d: error %g", T, worst);
        hy_free(R), free(v), free(K), hy_free(P.buf), hy_free(G.buf);
    }
}
END_TEST

/* The convolution's backward by direct loops in double: du[s] = Σ_{t≥s} K[t-s] dy[t],
 * dK[l] = Σ_b Σ_t dy[t] u[t-l]. */
static void conv_backward_direct(const float *K, const float *u, const float *dy, double *du, double *dk, int B, int T,
                                 int H) {
    memset(dk, 0, (size_t)H * T * 8);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int s = 0; s < T; s++) {
                double a = 0;
                for (int t = s; t < T; t++) {
                    double g = dy[((size_t)b * T + t) * H + h];
                    a += (double)K[(size_t)h * T + t - s] * g;
                    dk[(size_t)h * T + t - s] += g * u[((size_t)b * T + s) * H + h];
                }
                du[((size_t)b * T + s) * H + h] = a;
            }
}

/* FFT path vs O(T²) loops: H = 5 (fewer than a gather group) and 21 (one full group and a partial
 * one), T from 1 to 700 including primes and non-powers of two (FFT lengths 2, 75, 200, ...). */
START_TEST(fft_convolution_matches_direct) {
    static const struct { int B, H, T; } cs[] = {{1, 5, 1}, {2, 5, 37}, {3, 21, 100}, {1, 21, 128}, {2, 16, 701}};
    for (size_t k = 0; k < sizeof cs / sizeof *cs; k++) {
        int B = cs[k].B, H = cs[k].H, T = cs[k].T;
        size_t n = (size_t)B * T * H;
        float *K = hy_malloc((size_t)H * T * 4), *u = hy_malloc(n * 4), *y = hy_malloc(n * 4), *yr = hy_malloc(n * 4),
              *dy = hy_malloc(n * 4), *du = hy_malloc(n * 4), *dk = hy_malloc((size_t)H * T * 4);
        double *dur = malloc(n * 8), *dkr = malloc((size_t)H * T * 8);
        tu_fill_normal(K, (size_t)H * T, 1, 50 + k), tu_fill_normal(u, n, 1, 60 + k), tu_fill_normal(dy, n, 1, 70 + k);
        hy_fftconv w = {0};
        ck_assert_msg(hy_fftconv_forward(&w, K, u, y, B, T, H) == 0, "%s", hy_last_error());
        hy_causal_conv_direct(K, u, yr, B, T, H);
        double e = nerr_f(y, yr, n);
        ck_assert_msg(e < 1e-5, "B %d H %d T %d (n %d): forward error %g", B, H, T, hy_fftconv_len(T), e);
        ck_assert_msg(hy_fftconv_backward(&w, u, dy, du, dk, B, T, H) == 0, "%s", hy_last_error());
        conv_backward_direct(K, u, dy, dur, dkr, B, T, H);
        e = nerr_d(du, dur, n);
        ck_assert_msg(e < 1e-5, "B %d H %d T %d: du error %g", B, H, T, e);
        e = nerr_d(dk, dkr, (size_t)H * T);
        ck_assert_msg(e < 1e-5, "B %d H %d T %d: dkern error %g", B, H, T, e);
        /* a backward for another shape is refused */
        ck_assert_int_lt(hy_fftconv_backward(&w, u, dy, du, dk, B, T + 1, H), 0);
        hy_fftconv_free(&w);
        hy_free(K), hy_free(u), hy_free(y), hy_free(yr), hy_free(dy), hy_free(du), hy_free(dk), free(dur), free(dkr);
    }
    /* every T from 1 to 200: 83 distinct FFT lengths (the plan table grows past its first 16), all
     * planned and cached in one process */
    for (int T = 1; T <= 200; T++) {
        enum { H2 = 2 };
        float K[H2 * 200], u[H2 * 200], y[H2 * 200], yr[H2 * 200];
        tu_fill_normal(K, (size_t)H2 * T, 1, 100 + T), tu_fill_normal(u, (size_t)H2 * T, 1, 300 + T);
        hy_fftconv w = {0};
        ck_assert_msg(hy_fftconv_forward(&w, K, u, y, 1, T, H2) == 0, "T %d: %s", T, hy_last_error());
        hy_causal_conv_direct(K, u, yr, 1, T, H2);
        double e = nerr_f(y, yr, (size_t)H2 * T);
        ck_assert_msg(e < 1e-5, "T %d (n %d): forward error %g", T, hy_fftconv_len(T), e);
        hy_fftconv_free(&w);
    }
    ck_assert_int_eq(hy_fftconv_len(1), 2);
    ck_assert_int_eq(hy_fftconv_len(37), 75);
    ck_assert_int_eq(hy_fftconv_len(4096), 8192);
    ck_assert_int_eq(hy_fftconv_len(1000), 2000);
}
END_TEST

/* Kernel + FFT convolution against the modal recurrence from a zero state, T = 4096 (the SPEC's
 * "both must agree"), split into two chunks to exercise the carried state. */
START_TEST(fft_path_matches_recurrence_T4096) {
    int B = 2, H = 6, M = 16, T = tu_quick() ? 1024 : 4096, T1 = T / 3;
    params P;
    params_new(&P, H, M, 80);
    size_t n = (size_t)B * T * H, hm = (size_t)H * M;
    float *K = hy_malloc((size_t)H * T * 4), *u = hy_malloc(n * 4), *y = hy_malloc(n * 4), *yr = hy_malloc(n * 4),
          *c = hy_malloc(4 * hm * 4), *s = hy_calloc((size_t)B * H * 2 * M * 4), *uc = hy_malloc(n * 4),
          *yc = hy_malloc(n * 4);
    tu_fill_normal(u, n, 1, 81);
    hy_fftconv w = {0};
    ck_assert_int_eq(hy_modal_kernel(&P.p, H, M, T, K), 0);
    ck_assert_int_eq(hy_fftconv_forward(&w, K, u, y, B, T, H), 0);
    hy_modal_coeffs(&P.p, H, M, c, c + hm, c + 2 * hm, c + 3 * hm);
    int chunks[2][2] = {{0, T1}, {T1, T - T1}};
    for (int k = 0; k < 2; k++) {
        int t0 = chunks[k][0], len = chunks[k][1];
        for (int b = 0; b < B; b++)
            memcpy(uc + (size_t)b * len * H, u + ((size_t)b * T + t0) * H, (size_t)len * H * 4);
        hy_modal_scan(H, M, c, c + hm, c + 2 * hm, c + 3 * hm, s, uc, yc, B, len);
        for (int b = 0; b < B; b++)
            memcpy(yr + ((size_t)b * T + t0) * H, yc + (size_t)b * len * H, (size_t)len * H * 4);
    }
    double e = nerr_f(yr, y, n);
    ck_assert_msg(e < 1e-5, "T %d: recurrence vs FFT convolution error %g", T, e);
    hy_fftconv_free(&w);
    hy_free(K), hy_free(u), hy_free(y), hy_free(yr), hy_free(c), hy_free(s), hy_free(uc), hy_free(yc), hy_free(P.buf);
}
END_TEST

/* The scan path (hy_modal_conv, the blocks' training path) against the kernel + FFT path: the
 * forward, du and the four parameter gradients. H = 5, 21 and 40 leave a partial vector (16 or 8
 * lanes); M = 1, 3, 9 and 17 pad the last block of 8 modes; T up to 4096 (the gradient sums run
 * over many flush spans of 64 steps); B up to 3 (the sums add over the batch). */
START_TEST(scan_path_matches_fft_path) {
    static const struct { int B, H, M, T; } cs[] = {{1, 5, 1, 1},    {2, 21, 3, 37}, {3, 40, 9, 200},
                                                   {1, 16, 17, 701}, {2, 6, 8, 4096}};
    for (size_t k = 0; k < sizeof cs / sizeof *cs; k++) {
        int B = cs[k].B, H = cs[k].H, M = cs[k].M, T = cs[k].T;
        if (tu_quick() && T > 1024) T = 1024;
        size_t n = (size_t)B * T * H, np = H + 4 * (size_t)H * M;
        params P;
        params_new(&P, H, M, 110 + k);
        params Gs = params_zero_like(&P), Gf = params_zero_like(&P);
        float *u = hy_malloc(n * 4), *dy = hy_malloc(n * 4), *ys = hy_malloc(n * 4), *yf = hy_malloc(n * 4),
              *dus = hy_malloc(n * 4), *duf = hy_malloc(n * 4), *K = hy_malloc((size_t)H * T * 4),
              *dk = hy_malloc((size_t)H * T * 4);
        tu_fill_normal(u, n, 1, 120 + k), tu_fill_normal(dy, n, 1, 130 + k);
        hy_modal_conv c = {0};
        ck_assert_msg(hy_modal_conv_forward(&c, &P.p, H, M, u, ys, B, T) == 0, "%s", hy_last_error());
        ck_assert_msg(hy_modal_conv_backward(&c, &P.p, &Gs.p, u, dy, dus, B, T) == 0, "%s", hy_last_error());
        hy_fftconv w = {0};
        ck_assert_int_eq(hy_modal_kernel(&P.p, H, M, T, K), 0);
        ck_assert_int_eq(hy_fftconv_forward(&w, K, u, yf, B, T, H), 0);
        ck_assert_int_eq(hy_fftconv_backward(&w, u, dy, duf, dk, B, T, H), 0);
        ck_assert_int_eq(hy_modal_kernel_backward(&P.p, H, M, T, dk, &Gf.p), 0);
        double e = nerr_f(ys, yf, n);
        ck_assert_msg(e < 1e-5, "B %d H %d M %d T %d: forward error %g", B, H, M, T, e);
        e = nerr_f(dus, duf, n);
        ck_assert_msg(e < 1e-5, "B %d H %d M %d T %d: du error %g", B, H, M, T, e);
        /* each parameter tensor against its own scale */
        size_t off[5] = {0, (size_t)H, H + 2 * (size_t)H * M, H + 3 * (size_t)H * M, np};
        for (int a = 0; a < 4; a++) {
            e = nerr_f(Gs.buf + off[a], Gf.buf + off[a], off[a + 1] - off[a]);
            ck_assert_msg(e < 1e-4, "B %d H %d M %d T %d: gradient of parameter %d error %g", B, H, M, T, a, e);
        }
        /* a backward for another length is refused */
        ck_assert_int_lt(hy_modal_conv_backward(&c, &P.p, &Gs.p, u, dy, dus, B, T + 1), 0);
        ck_assert_double_eq(hy_modal_conv_flop(H, M, T), 11.0 * H * M * T);
        hy_modal_conv_free(&c), hy_fftconv_free(&w);
        hy_free(u), hy_free(dy), hy_free(ys), hy_free(yf), hy_free(dus), hy_free(duf), hy_free(K), hy_free(dk);
        hy_free(P.buf), hy_free(Gs.buf), hy_free(Gf.buf);
    }
}
END_TEST

/* The scan path gives the same bits on 1 and on 2 threads (each group of channels is one thread's,
 * the batch runs inside it). */
START_TEST(scan_path_is_thread_count_independent) {
    int B = 2, H = 70, M = 12, T = 600;
    size_t n = (size_t)B * T * H, np = H + 4 * (size_t)H * M;
    params P;
    params_new(&P, H, M, 140);
    params G[2] = {params_zero_like(&P), params_zero_like(&P)};
    float *u = hy_malloc(n * 4), *dy = hy_malloc(n * 4), *y[2] = {hy_malloc(n * 4), hy_malloc(n * 4)},
          *du[2] = {hy_malloc(n * 4), hy_malloc(n * 4)};
    tu_fill_normal(u, n, 1, 141), tu_fill_normal(dy, n, 1, 142);
    int keep = omp_get_max_threads();
    for (int r = 0; r < 2; r++) {
        omp_set_num_threads(r + 1);
        hy_modal_conv c = {0};
        ck_assert_int_eq(hy_modal_conv_forward(&c, &P.p, H, M, u, y[r], B, T), 0);
        ck_assert_int_eq(hy_modal_conv_backward(&c, &P.p, &G[r].p, u, dy, du[r], B, T), 0);
        hy_modal_conv_free(&c);
    }
    omp_set_num_threads(keep);
    ck_assert(memcmp(y[0], y[1], n * 4) == 0);
    ck_assert(memcmp(du[0], du[1], n * 4) == 0);
    ck_assert(memcmp(G[0].buf, G[1].buf, np * 4) == 0);
    hy_free(u), hy_free(dy), hy_free(y[0]), hy_free(y[1]), hy_free(du[0]), hy_free(du[1]);
    hy_free(P.buf), hy_free(G[0].buf), hy_free(G[1].buf);
}
END_TEST

/* Several threads at once, each planning and running its own lengths (the planner lock, the
 * shared plans, new-array execution): every result equals the single-threaded one. */
START_TEST(concurrent_use_is_safe) {
    enum { NT = 4, B = 1, H = 3 };
    static const int Ts[NT] = {50, 77, 50, 129};
    float *ref[NT], *got[NT], *u[NT], *K[NT];
    for (int i = 0; i < NT; i++) {
        size_t n = (size_t)B * Ts[i] * H;
        u[i] = hy_malloc(n * 4), K[i] = hy_malloc((size_t)H * Ts[i] * 4), ref[i] = hy_malloc(n * 4), got[i] = hy_malloc(n * 4);
        tu_fill_normal(u[i], n, 1, 90 + i), tu_fill_normal(K[i], (size_t)H * Ts[i], 1, 95 + i);
        hy_causal_conv_direct(K[i], u[i], ref[i], B, Ts[i], H);
    }
    hy_fftconv_shutdown();   /* start with no plans: the threads race to create them */
    int fails = 0;
    #pragma omp parallel for num_threads(NT) reduction(+ : fails) schedule(static, 1)
    for (int i = 0; i < NT; i++) {
        hy_fftconv w = {0};
        for (int rep = 0; rep < 20; rep++) fails += hy_fftconv_forward(&w, K[i], u[i], got[i], B, Ts[i], H) != 0;
        hy_fftconv_free(&w);
    }
    ck_assert_int_eq(fails, 0);
    for (int i = 0; i < NT; i++) {
        double e = nerr_f(got[i], ref[i], (size_t)B * Ts[i] * H);
        ck_assert_msg(e < 1e-5, "thread %d T %d: error %g", i, Ts[i], e);
        hy_free(u[i]), hy_free(K[i]), hy_free(ref[i]), hy_free(got[i]);
    }
}
END_TEST

static Suite *modal_conv_suite(void) {
    Suite *s = suite_create("modal_conv");
    TCase *k = tcase_create("kernel");
    tcase_add_test(k, kernel_matches_formula);
    tcase_add_test(k, kernel_gradients_match_finite_differences);
    suite_add_tcase(s, k);
    TCase *c = tcase_create("convolution");
    tcase_add_test(c, fft_convolution_matches_direct);
    tcase_add_test(c, fft_path_matches_recurrence_T4096);
    tcase_add_test(c, scan_path_matches_fft_path);
    tcase_add_test(c, scan_path_is_thread_count_independent);
    tcase_add_test(c, concurrent_use_is_safe);
    suite_add_tcase(s, c);
    return s;
}
HY_TEST_SUITE(modal_conv_suite)

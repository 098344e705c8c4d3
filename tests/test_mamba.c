/* The mamba block: the selective scan against a plain double-precision loop (outputs, final and
 * chunk-boundary states, tail channel blocks), the scan's backward against finite differences of
 * that loop and across chunk lengths (T not a multiple of the chunk), the whole block against a
 * double transcription of SPEC §2 and against finite differences, streaming (step, prefill from a
 * mid-sequence state) against the parallel forward, memory that does not hold the (T, E, N)
 * history, the vector math, init, options and accounting. */
#include "core/error.h"
#include "core/mem.h"
#include "core/rng.h"
#include "core/vmath.h"
#include "layers/mamba/scan.h"
#include "tests/testutil.h"
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { P_IN, P_CONV_W, P_CONV_B, P_XPROJ, P_DT_W, P_DT_B, P_A_LOG, P_D, P_OUT, N_P };

/* ---------------------------------------------------------------- scan alone ---- */

/* Inputs of one scan problem, float (what the kernel sees) and the same values in double. */
typedef struct {
    int B, T, E, N, ld;
    float *delta, *x, *bc, *A, *D, *s0;   /* bc: rows of ld floats, B_t at column 3, C_t at 3 + N */
} scan_case;

static void scan_case_new(scan_case *s, int B, int T, int E, int N, uint64_t seed) {
    memset(s, 0, sizeof *s);
    s->B = B, s->T = T, s->E = E, s->N = N, s->ld = 2 * N + 5;
    size_t nE = (size_t)B * T * E;
    s->delta = hy_malloc(nE * 4), s->x = hy_malloc(nE * 4), s->bc = hy_malloc((size_t)B * T * s->ld * 4);
    s->A = hy_malloc((size_t)E * N * 4), s->D = hy_malloc((size_t)E * 4), s->s0 = hy_malloc((size_t)B * E * N * 4);
    tu_fill_normal(s->delta, nE, 1, seed);
    for (size_t i = 0; i < nE; i++) s->delta[i] = log1pf(expf(s->delta[i] - 0.5f));   /* Δ in (0, ~3) */
    tu_fill_normal(s->x, nE, 1, seed + 1);
    tu_fill_normal(s->bc, (size_t)B * T * s->ld, 1, seed + 2);
    tu_fill_normal(s->A, (size_t)E * N, 0.7f, seed + 3);
    for (size_t i = 0; i < (size_t)E * N; i++) s->A[i] = -expf(s->A[i]);
    tu_fill_normal(s->D, E, 1, seed + 4);
    tu_fill_normal(s->s0, (size_t)B * E * N, 0.5f, seed + 5);
}

static void scan_case_free(scan_case *s) {
    hy_free(s->delta), hy_free(s->x), hy_free(s->bc), hy_free(s->A), hy_free(s->D), hy_free(s->s0);
}

static hy_mamba_scan_args scan_args(const scan_case *s, bool with_s0) {
    return (hy_mamba_scan_args){s->B, s->T, s->E, s->N, s->delta, s->x, s->bc + 3, s->bc + 3 + s->N, s->ld,
                                s->A, s->D, with_s0 ? s->s0 : NULL, NULL, 0, NULL, false};
}

/* The recurrence exactly as SPEC §2 writes it, in double, one (b, t, c, n) at a time. The inputs
 * come as doubles (so finite differences can perturb them); hist, if given, receives the state
 * before every step (B, T, E, N). Returns Σ y·R when R is given. */
static double ref_scan(const scan_case *s, const double *delta, const double *x, const double *bc, const double *A,
                       const double *D, const double *s0, double *y, double *s_out, double *hist, const double *R) {
    int B = s->B, T = s->T, E = s->E, N = s->N;
    double *st = malloc(sizeof(double) * N), loss = 0;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < E; c++) {
            for (int n = 0; n < N; n++) st[n] = s0 ? s0[((size_t)b * E + c) * N + n] : 0.0;
            for (int t = 0; t < T; t++) {
                size_t row = (size_t)b * T + t;
                double dl = delta[row * E + c], xv = x[row * E + c], acc = D[c] * xv;
                for (int n = 0; n < N; n++) {
                    if (hist) hist[((row * E) + c) * N + n] = st[n];
                    st[n] = exp(dl * A[(size_t)c * N + n]) * st[n] + dl * bc[row * s->ld + 3 + n] * xv;
                    acc += st[n] * bc[row * s->ld + 3 + N + n];
                }
                if (y) y[row * E + c] = acc;
                if (R) loss += acc * R[row * E + c];
            }
            if (s_out)
                for (int n = 0; n < N; n++) s_out[((size_t)b * E + c) * N + n] = st[n];
        }
    free(st);
    return loss;
}

static double *to_double(const float *p, size_t n) {
    double *d = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) d[i] = p[i];
    return d;
}

/* max |a - ref| / max(max |ref|, floor) */
static double nerr_d(const float *a, const double *ref, size_t n, double floor) {
    double diff = 0, scale = floor;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(a[i] - ref[i]);
        diff = isnan(e) ? INFINITY : fmax(diff, e);
        scale = fmax(scale, fabs(ref[i]));
    }
    return diff / scale;
}

/* Kernel forward (with and without an initial state, chunk states kept) against ref_scan, to tol
 * (the coarse exp's forward, coarse: looser). */
static void check_scan_forward_exp(int B, int T, int E, int N, int chunk, bool coarse, double tol) {
    scan_case s;
    scan_case_new(&s, B, T, E, N, 100 + E + N);
    size_t nE = (size_t)B * T * E, nS = (size_t)B * E * N;
    double *dl = to_double(s.delta, nE), *dx = to_double(s.x, nE), *dbc = to_double(s.bc, (size_t)B * T * s.ld),
           *dA = to_double(s.A, (size_t)E * N), *dD = to_double(s.D, E), *ds0 = to_double(s.s0, nS);
    double *ry = malloc(sizeof(double) * nE), *rs = malloc(sizeof(double) * nS), *hist = malloc(sizeof(double) * nE * N);
    float *y = hy_malloc(nE * 4), *so = hy_malloc(nS * 4), *cs = hy_malloc(hy_mamba_chunk_floats(B, T, E, N, chunk) * 4);
    for (int with_s0 = 0; with_s0 < 2; with_s0++) {
        hy_mamba_scan_args a = scan_args(&s, with_s0);
        a.s_out = so, a.chunk = chunk, a.chunk_states = cs, a.coarse_exp = coarse;
        ck_assert_msg(hy_mamba_scan_forward(&a, y) == 0, "%s", hy_last_error());
        ref_scan(&s, dl, dx, dbc, dA, dD, with_s0 ? ds0 : NULL, ry, rs, hist, NULL);
        const char *what = "B %d T %d E %d N %d chunk %d s0 %d coarse %d: %s error %g";
        double e = nerr_d(y, ry, nE, 1);
        ck_assert_msg(e < tol, what, B, T, E, N, chunk, with_s0, coarse, "y", e);
        e = nerr_d(so, rs, nS, 1);
        ck_assert_msg(e < tol, what, B, T, E, N, chunk, with_s0, coarse, "final state", e);
        /* chunk states: (B, nch, N, E), the state before step k·chunk */
        int nch = (T + chunk - 1) / chunk;
        double worst = 0;
        for (int b = 0; b < B; b++)
            for (int k = 0; k < nch; k++)
                for (int n = 0; n < N; n++)
                    for (int c = 0; c < E; c++) {
                        double r = hist[((((size_t)b * T + (size_t)k * chunk) * E) + c) * N + n];
                        worst = fmax(worst, fabs(cs[(((size_t)b * nch + k) * N + n) * E + c] - r));
                    }
        ck_assert_msg(worst < tol, what, B, T, E, N, chunk, with_s0, coarse, "chunk state", worst);
    }
    free(dl), free(dx), free(dbc), free(dA), free(dD), free(ds0), free(ry), free(rs), free(hist);
    hy_free(y), hy_free(so), hy_free(cs);
    scan_case_free(&s);
}

static void check_scan_forward(int B, int T, int E, int N, int chunk) {
    check_scan_forward_exp(B, T, E, N, chunk, false, 2e-5);
}

START_TEST(scan_matches_reference) {
    check_scan_forward(2, 77, 40, 5, 16);    /* E = 16 + 16 + 8: a tail block */
    check_scan_forward(1, 64, 16, 16, 64);
    check_scan_forward(3, 33, 7, 3, 10);     /* one partial block only */
    check_scan_forward(1, 130, 64, 16, 64);  /* T not a multiple of the chunk */
}
END_TEST

/* The kernel's backward against central differences of ref_scan, every entry of every input, to
 * tol (the coarse exp's scan, coarse: looser). */
static void check_scan_gradients_exp(int B, int T, int E, int N, int CHUNK, bool coarse, double tol) {
    scan_case s;
    scan_case_new(&s, B, T, E, N, 7);
    size_t nE = (size_t)B * T * E, nBC = (size_t)B * T * s.ld;
    float *R = hy_malloc(nE * 4), *y = hy_malloc(nE * 4), *cs = hy_malloc(hy_mamba_chunk_floats(B, T, E, N, CHUNK) * 4);
    float *gdl = hy_malloc(nE * 4), *gx = hy_malloc(nE * 4), *gbc = hy_calloc(nBC * 4), *gA = hy_calloc(E * N * 4),
          *gD = hy_calloc(E * 4);
    tu_fill_normal(R, nE, 1, 8);
    hy_mamba_scan_args a = scan_args(&s, false);
    a.chunk = CHUNK, a.chunk_states = cs, a.coarse_exp = coarse;
    ck_assert_int_eq(hy_mamba_scan_forward(&a, y), 0);
    ck_assert_msg(hy_mamba_scan_backward(&a, R, gdl, gx, gbc + 3, gbc + 3 + N, s.ld, gA, gD, NULL) == 0, "%s", hy_last_error());
    double *in[5] = {to_double(s.delta, nE), to_double(s.x, nE), to_double(s.bc, nBC), to_double(s.A, E * N),
                     to_double(s.D, E)};
    double *dR = to_double(R, nE);
    const float *an[5] = {gdl, gx, gbc, gA, gD};
    const size_t len[5] = {nE, nE, nBC, E * N, E};
    const char *names[5] = {"delta", "x", "B|C", "A", "D"};
    for (int k = 0; k < 5; k++) {
        double worst = 0, scale = 1e-3;
        for (size_t i = 0; i < len[k]; i++) {
            if (k == 2 && (i % s.ld < 3 || i % s.ld >= 3 + 2 * (size_t)N)) continue;   /* not B or C */
            double keep = in[k][i], h = 1e-6 * fmax(1, fabs(keep));
            in[k][i] = keep + h;
            double up = ref_scan(&s, in[0], in[1], in[2], in[3], in[4], NULL, NULL, NULL, NULL, dR);
            in[k][i] = keep - h;
            double down = ref_scan(&s, in[0], in[1], in[2], in[3], in[4], NULL, NULL, NULL, NULL, dR);
            in[k][i] = keep;
            double num = (up - down) / (2 * h);
            worst = fmax(worst, fabs(num - an[k][i]));
            scale = fmax(scale, fabs(num));
        }
        ck_assert_msg(worst / scale < tol, "B %d T %d E %d N %d chunk %d coarse %d: scan gradient of %s: error %g (scale %g)",
                      B, T, E, N, CHUNK, coarse, names[k], worst / scale, scale);
    }
    for (int k = 0; k < 5; k++) free(in[k]);
    free(dR);
    hy_free(R), hy_free(y), hy_free(cs), hy_free(gdl), hy_free(gx), hy_free(gbc), hy_free(gA), hy_free(gD);
    scan_case_free(&s);
}

static void check_scan_gradients(int B, int T, int E, int N, int CHUNK) {
    check_scan_gradients_exp(B, T, E, N, CHUNK, false, 1e-4);
}

/* Every state count path of the backward: N below one vector (the per-row sums), N = 20 (whole
 * groups of vector-width states summed in registers, then a tail: one group + 4 with AVX-512, two
 * + 4 with AVX2), N = 16 (whole groups only, the block's default). */
START_TEST(scan_gradients) {
    check_scan_gradients(2, 23, 20, 4, 5);   /* 23 = 4 full chunks + 3; E: a tail block */
    check_scan_gradients(1, 13, 20, 20, 5);
    check_scan_gradients(2, 9, 18, 16, 4);
}
END_TEST

/* The scan with the coarse exp (the block under bf16): forward and backward against the exact
 * double reference, on the shapes of the exact tests (tail blocks, partial chunks, every state
 * count path of the backward). Measured: y 9.5e-6 (normalized), chunk states 6.8e-5 (absolute),
 * gradients 1.1e-5 of their scale, against 2e-5 and 1e-4 for the exact exp's tests. */
START_TEST(scan_coarse_exp_close_to_reference) {
    check_scan_forward_exp(2, 77, 40, 5, 16, true, 2e-4);
    check_scan_forward_exp(1, 130, 64, 16, 64, true, 2e-4);
    check_scan_gradients_exp(2, 23, 20, 4, 5, true, 1e-4);
    check_scan_gradients_exp(1, 13, 20, 20, 5, true, 1e-4);
    check_scan_gradients_exp(2, 9, 18, 16, 4, true, 1e-4);
}
END_TEST

/* The chunked backward does not depend on the chunk length: 1, 7, 64 (T = 150 is a multiple of
 * none) and one chunk longer than T. */
START_TEST(scan_backward_chunk_lengths) {
    enum { B = 2, T = 150, E = 24, N = 6 };
    static const int chunks[] = {1, 7, 64, 400};
    scan_case s;
    scan_case_new(&s, B, T, E, N, 11);
    size_t nE = (size_t)B * T * E, nBC = (size_t)B * T * s.ld;
    float *dy = hy_malloc(nE * 4), *y = hy_malloc(nE * 4), *out[4][5];
    hy_buf ws = {0};   /* one workspace reused across the calls (as the block does) */
    tu_fill_normal(dy, nE, 1, 12);
    for (int k = 0; k < 4; k++) {
        float *cs = hy_malloc(hy_mamba_chunk_floats(B, T, E, N, chunks[k]) * 4);
        out[k][0] = hy_malloc(nE * 4), out[k][1] = hy_malloc(nE * 4), out[k][2] = hy_calloc(nBC * 4);
        out[k][3] = hy_calloc(E * N * 4), out[k][4] = hy_calloc(E * 4);
        hy_mamba_scan_args a = scan_args(&s, false);
        a.chunk = chunks[k], a.chunk_states = cs;
        ck_assert_int_eq(hy_mamba_scan_forward(&a, y), 0);
        ck_assert_int_eq(hy_mamba_scan_backward(&a, dy, out[k][0], out[k][1], out[k][2] + 3, out[k][2] + 3 + N, s.ld,
                                                out[k][3], out[k][4], &ws),
                         0);
        hy_free(cs);
    }
    const size_t len[5] = {nE, nE, nBC, E * N, E};
    for (int k = 1; k < 4; k++)
        for (int j = 0; j < 5; j++) {
            double e = tu_rel_err(out[k][j], out[0][j], len[j], 1e-3);
            ck_assert_msg(e < 1e-5, "chunk %d vs chunk 1: output %d differs by %g", chunks[k], j, e);
        }
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 5; j++) hy_free(out[k][j]);
    hy_free(dy), hy_free(y);
    hy_buf_free(&ws);
    scan_case_free(&s);
}
END_TEST

START_TEST(scan_refuses_bad_input) {
    scan_case s;
    scan_case_new(&s, 1, 4, 4, 2, 1);
    float y[16], g[16], d[16], bc[4 * 9] = {0}, dA[8] = {0};
    hy_mamba_scan_args a = scan_args(&s, false);
    ck_assert_int_lt(hy_mamba_scan_backward(&a, y, g, d, bc, bc + 2, 9, dA, NULL, NULL), 0);   /* no chunk states */
    ck_assert_msg(strstr(hy_last_error(), "chunk") != NULL, "%s", hy_last_error());
    a.N = HY_MAMBA_MAX_STATE + 1;
    ck_assert_int_lt(hy_mamba_scan_forward(&a, y), 0);
    scan_case_free(&s);
}
END_TEST

/* ---------------------------------------------------------------- vector math ---- */

START_TEST(vector_math) {
    double worst = 0;
    for (int i = 0; i <= 200000; i++) {
        float x = -87.0f + 175.0f * (float)i / 200000;
        worst = fmax(worst, fabs(hy_expf(x) - exp(x)) / exp(x));
        if (x <= 0) worst = fmax(worst, fabs(hy_expf_neg(x) - exp(x)) / exp(x));
    }
    ck_assert_msg(worst < 3e-7, "exp relative error %g", worst);
    ck_assert(hy_expf(-1000.0f) < 1e-37f && hy_expf(-1000.0f) >= 0);
    ck_assert(hy_expf_neg(-INFINITY) < 1e-37f && hy_expf(1000.0f) > 1e38f);
    ck_assert_float_eq(hy_expf_neg(-0.0f), 1.0f);
    enum { N = 100001 };
    float *in = hy_malloc(N * 4), *out = hy_malloc(N * 4);
    for (int i = 0; i < N; i++) in[i] = -80.0f + 110.0f * (float)i / (N - 1);
    hy_softplus_array(out, in, N);
    worst = 0;
    for (int i = 0; i < N; i++) {
        double ref = in[i] > 20 ? in[i] : log1p(exp((double)in[i]));
        worst = fmax(worst, fabs(out[i] - ref) / ref);
    }
    ck_assert_msg(worst < 5e-7, "softplus relative error %g", worst);
    hy_free(in), hy_free(out);
}
END_TEST

/* hy_expf_neg_vw (the scan's exp(Δ·A); with AVX-512 its last step is one scalef) gives in every
 * lane the bits of the scalar hy_expf_neg: a sweep of [-100, 0] in steps finer than the polynomial's
 * intervals, the clamp at -87 and below, -0, -infinity, the smallest results and NaN (NaN out). */
START_TEST(vector_exp_matches_scalar) {
    enum { STEPS = 400000 };
    float lanes_in[HY_VW], lanes_out[HY_VW];
    int k = 0, checked = 0;
    for (int i = 0; i <= STEPS + 6; i++) {
        const float special[7] = {-0.0f, -INFINITY, -87.0f, -87.33654f, -86.99999f, -1e-30f, -1e-45f};
        lanes_in[k++] = i <= STEPS ? -100.0f * (float)i / STEPS : special[i - STEPS - 1];
        if (k < HY_VW && i < STEPS + 6) continue;
        vw_store(lanes_out, hy_expf_neg_vw(vw_load(lanes_in)));
        for (int c = 0; c < k; c++, checked++) {
            float want = hy_expf_neg(lanes_in[c]);
            ck_assert_msg(memcmp(&lanes_out[c], &want, sizeof want) == 0, "exp(%.9g): vector %.9g, scalar %.9g",
                          lanes_in[c], lanes_out[c], want);
        }
        k = 0;
    }
    ck_assert_int_eq(checked, STEPS + 7);
    for (int c = 0; c < HY_VW; c++) lanes_in[c] = c % 2 ? NAN : -1.0f;
    vw_store(lanes_out, hy_expf_neg_vw(vw_load(lanes_in)));
    for (int c = 0; c < HY_VW; c++)
        ck_assert_msg(c % 2 ? isnan(lanes_out[c]) : lanes_out[c] == hy_expf_neg(-1.0f), "lane %d: %g", c, lanes_out[c]);
}
END_TEST

/* hy_exp2f_coarse_neg_vw (the scan's exp under bf16): relative error below 3e-6 against exp2 in
 * double over [-125, 0] (a sweep finer than the polynomial's intervals); near 0 the error shrinks
 * with x (within 2 float ulps of 1 plus 5e-5·|x|: a decay close to 1 keeps its rate, where 3e-6 of
 * 1 would be a large part of 1 - 2^x); 1 at -0 and 0, 2^-125 at the clamp and below (-infinity
 * included). */
START_TEST(coarse_exp2) {
    enum { STEPS = 400000 };
    float in[HY_VW], out[HY_VW];
    double worst = 0, worst_near0 = 0;
    for (int i = 0; i <= STEPS; i += HY_VW) {
        for (int c = 0; c < HY_VW; c++) in[c] = -125.0f * (float)(i + c) / STEPS;
        vw_store(out, hy_exp2f_coarse_neg_vw(vw_load(in)));
        for (int c = 0; c < HY_VW && i + c <= STEPS; c++) worst = fmax(worst, fabs(out[c] / exp2((double)in[c]) - 1));
    }
    ck_assert_msg(worst < 3e-6, "coarse exp2 relative error %g", worst);
    for (int i = 0; i < 200; i++) {   /* x from -1e-7 to -0.5 */
        for (int c = 0; c < HY_VW; c++) in[c] = -1e-7f * powf(1.08f, (float)i + 0.1f * (float)c);
        vw_store(out, hy_exp2f_coarse_neg_vw(vw_load(in)));
        for (int c = 0; c < HY_VW; c++)
            worst_near0 = fmax(worst_near0, fabs(out[c] - exp2((double)in[c])) / (2 * FLT_EPSILON + 5e-5 * fabs(in[c])));
    }
    ck_assert_msg(worst_near0 <= 1, "coarse exp2 near 0: error %g of its bound", worst_near0);
    const float special[4] = {-0.0f, 0.0f, -125.0f, -INFINITY};
    for (int k = 0; k < 4; k++) {
        vw_store(out, hy_exp2f_coarse_neg_vw(vw_splat(special[k])));
        double want = k < 2 ? 1.0 : exp2(-125.0);
        ck_assert_msg(fabs(out[0] / want - 1) < 3e-6, "coarse exp2(%g) = %g", special[k], out[0]);
    }
    vw_store(out, hy_exp2f_coarse_neg_vw(vw_splat(-1000.0f)));
    ck_assert_float_eq(out[HY_VW - 1], out[0]);
    ck_assert_msg(fabs(out[0] / exp2(-125.0) - 1) < 3e-6, "coarse exp2(-1000) = %g", out[0]);
}
END_TEST

/* hy_softplus_bias_rows (Mamba's Δ = softplus(dt_proj dt + bias)) leaves raw as it was and
 * writes the bits of hy_softplus_array of raw + bias, below and above the parallel threshold,
 * values on both sides of the cut-off at 20 included. */
START_TEST(softplus_bias_rows_as_two_steps) {
    const int shapes[2][2] = {{3, 37}, {300, 70}};
    for (int k = 0; k < 2; k++) {
        const int rows = shapes[k][0], cols = shapes[k][1];
        const size_t n = (size_t)rows * cols;
        float *raw = hy_malloc(n * 4), *want_raw = hy_malloc(n * 4), *out = hy_malloc(n * 4), *want = hy_malloc(n * 4),
              *bias = hy_malloc((size_t)cols * 4);
        for (int c = 0; c < cols; c++) bias[c] = 0.25f * (float)(c % 9) - 1.0f;
        for (size_t i = 0; i < n; i++) raw[i] = 30.0f * sinf(0.7f * (float)i) - 3.0f;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) want_raw[(size_t)r * cols + c] = raw[(size_t)r * cols + c] + bias[c];
        hy_softplus_array(want, want_raw, n);
        float *raw0 = hy_malloc(n * 4);
        memcpy(raw0, raw, n * 4);
        hy_softplus_bias_rows(out, raw, bias, (size_t)rows, cols);
        ck_assert(memcmp(raw, raw0, n * 4) == 0);
        hy_free(raw0);
        ck_assert(memcmp(out, want, n * 4) == 0);
        hy_free(raw), hy_free(want_raw), hy_free(out), hy_free(want), hy_free(bias);
    }
}
END_TEST

/* core/simd.h's vw_bcast (the scan's B_t[n], C_t[n]): every lane holds the loaded float bit for bit,
 * -0 (which vw_splat's add of zero turns into +0), a subnormal, infinity and NaN included. */
START_TEST(broadcast_load) {
    const float vals[6] = {1.5f, -0.0f, 1e-40f, -INFINITY, NAN, -3.25e7f};
    for (int k = 0; k < 6; k++) {
        float lanes_out[HY_VW];
        vw_store(lanes_out, vw_bcast(vals + k));
        for (int c = 0; c < HY_VW; c++)
            ck_assert_msg(memcmp(&lanes_out[c], &vals[k], sizeof(float)) == 0, "value %d lane %d: %g", k, c, lanes_out[c]);
    }
}
END_TEST

/* hy_colsum_add over a strided matrix: each of 70 columns (one full block of 64 and a partial one)
 * gets exactly the row-order sum of its column added, the columns past cols and the padding of
 * each row untouched; and the same bits with one thread as with the parallel loop (rows · cols
 * above its threshold). */
START_TEST(column_sums) {
    enum { ROWS = 1200, COLS = 70, LD = 75 };
    float *X = hy_malloc(sizeof(float) * ROWS * LD), g[COLS + 1], g1[COLS + 1];
    for (int i = 0; i < ROWS * LD; i++) X[i] = (float)((i * 37) % 101) / 7.0f - 5.0f;
    for (int c = 0; c <= COLS; c++) g[c] = g1[c] = (float)c;
    hy_colsum_add(g, X, ROWS, COLS, LD);
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    hy_colsum_add(g1, X, ROWS, COLS, LD);
    omp_set_num_threads(threads);
    for (int c = 0; c < COLS; c++) {
        float ref = 0;
        for (int r = 0; r < ROWS; r++) ref += X[r * LD + c];
        ck_assert_msg(g[c] == (float)c + ref, "column %d: %.9g, expected %.9g", c, g[c], (float)c + ref);
        ck_assert_msg(g1[c] == g[c], "column %d: one thread %.9g, several %.9g", c, g1[c], g[c]);
    }
    ck_assert_float_eq(g[COLS], (float)COLS);
    hy_free(X);
}
END_TEST

/* ---------------------------------------------------------------- the block ---- */

static size_t numel(hy_layer *L, int p) {
    hy_param_spec s[N_P];
    L->ops->param_specs(&L->opts, L->d_model, s);
    size_t n = 1;
    for (int k = 0; k < s[p].ndim; k++) n *= (size_t)s[p].shape[k];
    return n;
}

/* A mamba layer with the given options, parameters re-drawn so that every path matters: Δ around
 * 0.3..1 (state decays within a few steps but carries), random A_log, D, conv. */
static void make_layer(hy_layer *L, int d, const char *const *pairs, int n_pairs, uint64_t seed) {
    tu_layer(L, "mamba", d, pairs, n_pairs, seed);
    static const float scale[N_P] = {1, 0.5f, 0.3f, 1, 0.5f, 0.5f, 0.5f, 1, 1};
    for (int p = 0; p < N_P; p++) {
        float sc = scale[p];
        if (p == P_IN) sc = 1.0f / sqrtf((float)d);
        if (p == P_XPROJ || p == P_OUT) sc = 1.0f / sqrtf((float)numel(L, P_D));
        tu_fill_normal(L->p[p], numel(L, p), sc, seed * 16 + p);
    }
    for (size_t i = 0; i < numel(L, P_DT_B); i++) L->p[P_DT_B][i] -= 0.5f;
}

/* SPEC §2 in double, straight loops: in_proj, conv, silu, x_proj, dt_proj, softplus, the scan,
 * D, gate, out_proj. */
static void spec_forward(hy_layer *L, const float *u, double *out, int B, int T) {
    int d = L->d_model, E = (int)numel(L, P_D), K = (int)(numel(L, P_CONV_W) / E), N = (int)(numel(L, P_A_LOG) / E);
    int R = (int)(numel(L, P_DT_W) / E), W = R + 2 * N;
    float **p = L->p;
    double *xz = malloc(sizeof(double) * T * 2 * E), *xc = malloc(sizeof(double) * T * E),
           *dbc = malloc(sizeof(double) * T * W), *dl = malloc(sizeof(double) * T * E), *y = malloc(sizeof(double) * E),
           *s = malloc(sizeof(double) * E * N);
    for (int b = 0; b < B; b++) {
        const float *ub = u + (size_t)b * T * d;
        for (int t = 0; t < T; t++)
            for (int o = 0; o < 2 * E; o++) {
                double a = 0;
                for (int i = 0; i < d; i++) a += (double)p[P_IN][(size_t)o * d + i] * ub[(size_t)t * d + i];
                xz[(size_t)t * 2 * E + o] = a;
            }
        for (int t = 0; t < T; t++)
            for (int c = 0; c < E; c++) {
                double a = p[P_CONV_B][c];
                for (int k = 0; k < K; k++) {
                    int j = t - K + 1 + k;
                    if (j >= 0) a += (double)p[P_CONV_W][(size_t)c * K + k] * xz[(size_t)j * 2 * E + c];
                }
                xc[(size_t)t * E + c] = a / (1 + exp(-a));
            }
        for (int t = 0; t < T; t++) {
            for (int o = 0; o < W; o++) {
                double a = 0;
                for (int c = 0; c < E; c++) a += (double)p[P_XPROJ][(size_t)o * E + c] * xc[(size_t)t * E + c];
                dbc[(size_t)t * W + o] = a;
            }
            for (int c = 0; c < E; c++) {
                double a = p[P_DT_B][c];
                for (int r = 0; r < R; r++) a += (double)p[P_DT_W][(size_t)c * R + r] * dbc[(size_t)t * W + r];
                dl[(size_t)t * E + c] = a > 20 ? a : log1p(exp(a));
            }
        }
        memset(s, 0, sizeof(double) * E * N);
        for (int t = 0; t < T; t++) {
            for (int c = 0; c < E; c++) {
                double acc = 0, D = dl[(size_t)t * E + c], xv = xc[(size_t)t * E + c];
                for (int n = 0; n < N; n++) {
                    double A = -exp((double)p[P_A_LOG][(size_t)c * N + n]);
                    s[c * N + n] = exp(D * A) * s[c * N + n] + D * dbc[(size_t)t * W + R + n] * xv;
                    acc += s[c * N + n] * dbc[(size_t)t * W + R + N + n];
                }
                double z = xz[(size_t)t * 2 * E + E + c];
                y[c] = (acc + p[P_D][c] * xv) * z / (1 + exp(-z));
            }
            for (int o = 0; o < d; o++) {
                double a = 0;
                for (int c = 0; c < E; c++) a += (double)p[P_OUT][(size_t)o * E + c] * y[c];
                out[((size_t)b * T + t) * d + o] = a;
            }
        }
    }
    free(xz), free(xc), free(dbc), free(dl), free(y), free(s);
}

START_TEST(forward_follows_spec) {
    static const char *opts[][2] = {{"d_state=16", "d_conv=4"}, {"d_state=3", "d_conv=2"}, {"d_state=8", "d_conv=1"}};
    static const int dims[] = {32, 24, 16};
    for (int k = 0; k < 3; k++) {
        enum { B = 2, T = 70 };
        int D = dims[k];
        hy_layer L;
        make_layer(&L, D, opts[k], 2, 3 + k);
        float *x = hy_malloc(B * T * D * 4), *y = hy_malloc(B * T * D * 4);
        double *ref = malloc(sizeof(double) * B * T * D);
        tu_fill_normal(x, B * T * D, 1, 9);
        ck_assert_int_eq(L.ops->forward(&L, x, y, B, T), 0);
        spec_forward(&L, x, ref, B, T);
        double e = nerr_d(y, ref, (size_t)B * T * D, 1e-3);
        ck_assert_msg(e < 2e-5, "d %d %s %s: error against the SPEC transcription %g", D, opts[k][0], opts[k][1], e);
        hy_free(x), hy_free(y), free(ref);
        hy_layer_standalone_free(&L);
    }
}
END_TEST

/* tu_grad_check (float finite differences) on short sequences, where their rounding noise stays
 * well below the tolerance. */
START_TEST(block_gradients) {
    static const char *o1[] = {"d_state=4"}, *o2[] = {"d_state=6", "d_conv=3", "expand=1", "dt_rank=3"};
    hy_layer L;
    make_layer(&L, 16, o1, 1, 5);
    double e = tu_grad_check(&L, 2, 9, 3e-2f, 8, 21);
    ck_assert_msg(e < 1e-2, "gradient error %g (d 16, d_state 4)", e);
    hy_layer_standalone_free(&L);
    make_layer(&L, 20, o2, 4, 6);
    for (int p = 0; p < N_P; p++)   /* softer: float differences of sharper weights are too noisy */
        if (p != P_DT_B && p != P_A_LOG)
            for (size_t i = 0; i < numel(&L, p); i++) L.p[p][i] *= 0.6f;
    e = tu_grad_check(&L, 1, 9, 1e-2f, 8, 22);
    ck_assert_msg(e < 1e-2, "gradient error %g (d 20, d_state 6, d_conv 3, expand 1, dt_rank 3)", e);
    hy_layer_standalone_free(&L);
}
END_TEST

static double spec_loss(hy_layer *L, const float *u, const double *R, int B, int T, double *buf) {
    spec_forward(L, u, buf, B, T);
    double s = 0;
    for (size_t i = 0; i < (size_t)B * T * L->d_model; i++) s += buf[i] * R[i];
    return s;
}

/* The block's backward at T = 70 (a full 64-step chunk of the scan + 6) against central
 * differences of the double-precision SPEC transcription: free of float rounding noise, so the
 * tolerance is tight. Every parameter tensor and the input, 6 entries each. */
static void check_gradients_vs_spec(int D, const char *const *o, int n_o, uint64_t seed) {
    enum { B = 2, T = 70 };
    hy_layer L;
    make_layer(&L, D, o, n_o, seed);
    size_t n = (size_t)B * T * D;
    float *x = hy_malloc(n * 4), *y = hy_malloc(n * 4), *R = hy_malloc(n * 4), *dx = hy_malloc(n * 4);
    double *buf = malloc(sizeof(double) * n);
    tu_fill_normal(x, n, 1, 30), tu_fill_normal(R, n, 1, 31);
    double *Rd = to_double(R, n);
    for (int p = 0; p < N_P; p++) memset(L.g[p], 0, numel(&L, p) * 4);
    ck_assert_int_eq(L.ops->forward(&L, x, y, B, T), 0);
    ck_assert_int_eq(L.ops->backward(&L, R, dx, B, T), 0);
    hy_rng rng;
    hy_rng_seed(&rng, 32);
    for (int p = -1; p < N_P; p++) {
        float *v = p < 0 ? x : L.p[p];
        const float *an = p < 0 ? dx : L.g[p];
        size_t len = p < 0 ? n : numel(&L, p);
        double scale = 1e-3, worst = 0;
        for (size_t i = 0; i < len; i++) scale = fmax(scale, fabs(an[i]));
        for (int k = 0; k < 6; k++) {
            size_t i = hy_rng_below(&rng, len);
            float keep = v[i];
            float h = 1e-3f * fmaxf(1.0f, fabsf(keep));
            v[i] = keep + h;
            double hu = (double)v[i] - keep, up = spec_loss(&L, x, Rd, B, T, buf);
            v[i] = keep - h;
            double hd = keep - (double)v[i], down = spec_loss(&L, x, Rd, B, T, buf);
            v[i] = keep;
            worst = fmax(worst, fabs((up - down) / (hu + hd) - an[i]));
        }
        ck_assert_msg(worst / scale < 1e-4, "d %d %s: tensor %d (-1 = input): gradient error %g against the SPEC "
                      "transcription (scale %g)", D, o[0], p, worst / scale, scale);
    }
    hy_free(x), hy_free(y), hy_free(R), hy_free(dx), free(buf), free(Rd);
    hy_layer_standalone_free(&L);
}

START_TEST(block_gradients_vs_spec) {
    static const char *o1[] = {"d_state=4", "d_conv=4"}, *o2[] = {"d_state=6", "d_conv=3", "expand=1", "dt_rank=3"};
    check_gradients_vs_spec(16, o1, 2, 8);
    check_gradients_vs_spec(20, o2, 4, 9);
}
END_TEST

/* Backward accumulates parameter gradients (+=) and overwrites dx. */
START_TEST(backward_accumulates) {
    enum { B = 1, T = 20, D = 16 };
    hy_layer L;
    make_layer(&L, D, NULL, 0, 7);
    float x[B * T * D], y[B * T * D], dy[B * T * D], dx1[B * T * D], dx2[B * T * D];
    tu_fill_normal(x, B * T * D, 1, 1), tu_fill_normal(dy, B * T * D, 1, 2);
    for (int p = 0; p < N_P; p++) memset(L.g[p], 0, numel(&L, p) * 4);
    ck_assert_int_eq(L.ops->forward(&L, x, y, B, T), 0);
    ck_assert_int_eq(L.ops->backward(&L, dy, dx1, B, T), 0);
    float *once[N_P];
    for (int p = 0; p < N_P; p++) once[p] = hy_malloc(numel(&L, p) * 4), memcpy(once[p], L.g[p], numel(&L, p) * 4);
    memset(dx2, 0x7f, sizeof dx2);
    ck_assert_int_eq(L.ops->backward(&L, dy, dx2, B, T), 0);
    ck_assert(tu_rel_err(dx1, dx2, B * T * D, 1e-6) == 0);
    for (int p = 0; p < N_P; p++) {
        for (size_t i = 0; i < numel(&L, p); i++) once[p][i] *= 2;
        double e = tu_rel_err(L.g[p], once[p], numel(&L, p), 1e-6);
        ck_assert_msg(e < 1e-6, "param %d not accumulated: %g", p, e);
        hy_free(once[p]);
    }
    L.keep_for_backward = false;
    ck_assert_int_eq(L.ops->forward(&L, x, y, B, T), 0);
    ck_assert_int_lt(L.ops->backward(&L, dy, dx1, B, T), 0);
    hy_layer_standalone_free(&L);
}
END_TEST

START_TEST(step_matches_forward) {
    static const char *o[] = {"d_state=8"};
    hy_layer L;
    make_layer(&L, 24, o, 1, 4);
    double e = tu_step_check(&L, 2, 100, 12);
    ck_assert_msg(e < 1e-5, "step vs forward error %g", e);
    hy_layer_standalone_free(&L);
}
END_TEST

/* prefill 70, prefill 2 (fewer tokens than the conv history), steps, prefill 50 from that
 * mid-sequence state, steps: the same outputs as one forward over all 130. */
START_TEST(prefill_then_steps_match_forward) {
    enum { B = 2, D = 32, T = 130 };
    hy_layer L;
    make_layer(&L, D, NULL, 0, 5);
    float *x = hy_malloc(B * T * D * 4), *y = hy_malloc(B * T * D * 4), *ys = hy_malloc(B * T * D * 4),
          *xc = hy_malloc(B * T * D * 4), *yc = hy_malloc(B * T * D * 4);
    tu_fill_normal(x, B * T * D, 1, 13);
    ck_assert_int_eq(L.ops->forward(&L, x, y, B, T), 0);
    void *st;
    ck_assert_int_eq(L.ops->state_new(&L, B, &st), 0);
    static const int chunk[] = {70, 2, 1, 1, 50, 1, 1, 1, 1, 1, 1};
    int t0 = 0;
    for (size_t c = 0; c < sizeof chunk / sizeof *chunk; t0 += chunk[c], c++) {
        int n = chunk[c];
        for (int b = 0; b < B; b++) memcpy(xc + (size_t)b * n * D, x + ((size_t)b * T + t0) * D, (size_t)n * D * 4);
        int rc = n == 1 ? L.ops->step(&L, st, xc, yc, B) : L.ops->prefill(&L, st, xc, yc, B, n);
        ck_assert_msg(rc == 0, "%s", hy_last_error());
        for (int b = 0; b < B; b++) memcpy(ys + ((size_t)b * T + t0) * D, yc + (size_t)b * n * D, (size_t)n * D * 4);
    }
    ck_assert_int_eq(t0, T);
    double scale = 1e-6, diff = 0;
    for (int i = 0; i < B * T * D; i++) scale = fmax(scale, fabs(y[i])), diff = fmax(diff, fabs(y[i] - ys[i]));
    ck_assert_msg(diff / scale < 1e-5, "prefill/step vs forward error %g", diff / scale);
    ck_assert_int_lt(L.ops->prefill(&L, st, xc, yc, B + 1, 3), 0);   /* a state of B sequences only */
    L.ops->state_free(&L, st);
    hy_free(x), hy_free(y), hy_free(ys), hy_free(xc), hy_free(yc);
    hy_layer_standalone_free(&L);
}
END_TEST

/* Training forward + backward at T = 2048 with d_state 128 never holds the (T, E, N) state history
 * (67 MB here): the chunked scan keeps T/64 states. Two threads (the per-thread dB/dC sums scale
 * with the thread count). */
START_TEST(memory_without_state_history) {
    int T = tu_quick() ? 1024 : 2048, D = 32, threads = omp_get_max_threads();
    static const char *o[] = {"d_state=128"};
    hy_layer L;
    tu_layer(&L, "mamba", D, o, 1, 3);
    omp_set_num_threads(2);
    size_t n = (size_t)T * D, E = 2 * D, history = (size_t)T * E * 128 * 4;
    float *x = hy_malloc(n * 4), *y = hy_malloc(n * 4), *dx = hy_malloc(n * 4);
    tu_fill_normal(x, n, 1, 1);
    size_t base = hy_mem_current();
    hy_mem_reset_peak();
    ck_assert_int_eq(L.ops->forward(&L, x, y, 1, T), 0);
    ck_assert_int_eq(L.ops->backward(&L, x, dx, 1, T), 0);
    size_t peak = hy_mem_peak() - base;
    omp_set_num_threads(threads);
    ck_assert_msg(peak < history / 3, "peak %zu bytes, the state history would be %zu", peak, history);
    hy_free(x), hy_free(y), hy_free(dx);
    hy_layer_standalone_free(&L);
}
END_TEST

/* ---------------------------------------------------------------- init, options, accounting ---- */

START_TEST(init_as_upstream) {
    enum { D = 64 };
    hy_layer L;
    tu_layer(&L, "mamba", D, NULL, 0, 9);
    int E = 128, N = 16, R = 4;
    ck_assert_int_eq((int)numel(&L, P_DT_W), E * R);
    for (int c = 0; c < E; c++) {
        ck_assert_float_eq(L.p[P_D][c], 1.0f);
        for (int n = 0; n < N; n++) ck_assert_float_eq_tol(L.p[P_A_LOG][c * N + n], logf((float)(n + 1)), 1e-7);
        double b = L.p[P_DT_B][c], dt = b > 20 ? b : log1p(exp(b));   /* softplus(bias) = the drawn Δ */
        ck_assert_msg(dt >= 0.001 * (1 - 1e-5) && dt <= 0.1 * (1 + 1e-5), "initial dt %g outside [0.001, 0.1]", dt);
    }
    double mx = 0;
    for (size_t i = 0; i < numel(&L, P_DT_W); i++) mx = fmax(mx, fabs(L.p[P_DT_W][i]));
    ck_assert(mx <= 1 / sqrt(R) && mx > 0.8 / sqrt(R));
    mx = 0;
    for (size_t i = 0; i < numel(&L, P_IN); i++) mx = fmax(mx, fabs(L.p[P_IN][i]));
    ck_assert(mx <= 1 / sqrt(D) && mx > 0.9 / sqrt(D));
    mx = 0;
    for (size_t i = 0; i < numel(&L, P_CONV_W); i++) mx = fmax(mx, fabs(L.p[P_CONV_W][i]));
    ck_assert(mx <= 0.5 && mx > 0.4);   /* U(±1/sqrt(K)), K = 4 */
    hy_layer_standalone_free(&L);
    /* the floor: dt_min = dt_max = 1e-5 below dt_init_floor 1e-4 */
    static const char *fl[] = {"dt_min=0.00001", "dt_max=0.00001"};
    tu_layer(&L, "mamba", 16, fl, 2, 1);
    double b = L.p[P_DT_B][0];
    ck_assert_double_eq_tol(log1p(exp(b)), 1e-4, 1e-8);
    hy_layer_standalone_free(&L);
}
END_TEST

START_TEST(accounting_and_names) {
    const hy_block_ops *ops = hy_block_find("mamba");
    ck_assert_ptr_nonnull(ops);
    hy_opts o;
    ck_assert_int_eq(hy_block_opts_from_pairs(ops, 64, NULL, 0, &o), 0);
    /* d 64: E 128, N 16, K 4, R = ceil(64/16) = 4, x_proj width 36 */
    ck_assert_uint_eq(ops->state_bytes(&o, 64, 1), (3 * 128 + 128 * 16) * 4);
    ck_assert_uint_eq(ops->state_bytes(&o, 64, 100000), 9728);
    /* per token: in_proj 2·64·256 + conv 2·4·128 + x_proj 2·128·36 + dt_proj 2·4·128 + scan 6·128·16
     * + per channel 4·128 + out_proj 2·128·64 */
    double tok = 32768 + 1024 + 9216 + 1024 + 12288 + 512 + 16384;
    ck_assert_double_eq_tol(ops->flop(&o, 64, 10), 10 * tok, 1e-6);
    hy_param_spec s[N_P];
    ck_assert_int_eq(ops->param_specs(&o, 64, s), N_P);
    static const char *names[N_P] = {"in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
                                     "dt_proj.bias", "A_log", "D", "out_proj.weight"};
    static const int shapes[N_P][3] = {{256, 64}, {128, 1, 4}, {128}, {36, 128}, {128, 4}, {128}, {128, 16}, {128}, {64, 128}};
    for (int p = 0; p < N_P; p++) {
        ck_assert_str_eq(s[p].name, names[p]);
        for (int k = 0; k < s[p].ndim; k++) ck_assert_int_eq(s[p].shape[k], shapes[p][k]);
        ck_assert_int_eq((s[p].flags & HY_PARAM_NO_DECAY) != 0, p == P_A_LOG || p == P_D);
    }
    ck_assert_int_eq(s[P_CONV_W].ndim, 3);
    /* dt_rank auto = ceil(d/16) */
    ck_assert_int_eq(hy_block_opts_from_pairs(ops, 40, NULL, 0, &o), 0);
    ck_assert_int_eq(hy_opt_int(&o, hy_opt_index(ops, "dt_rank")), 3);
    static const char *bad1[] = {"dt_min=0"}, *bad2[] = {"dt_min=0.01", "dt_max=0.001"}, *bad3[] = {"d_state=0"},
                      *bad4[] = {"expand=1.5"};
    ck_assert_int_lt(hy_block_opts_from_pairs(ops, 40, bad1, 1, &o), 0);
    ck_assert_msg(strstr(hy_last_error(), "dt_min") != NULL, "%s", hy_last_error());
    ck_assert_int_lt(hy_block_opts_from_pairs(ops, 40, bad2, 2, &o), 0);
    ck_assert_msg(strstr(hy_last_error(), "dt_max") != NULL, "%s", hy_last_error());
    ck_assert_int_lt(hy_block_opts_from_pairs(ops, 40, bad3, 1, &o), 0);
    ck_assert_int_lt(hy_block_opts_from_pairs(ops, 40, bad4, 1, &o), 0);
}
END_TEST

static Suite *make_mamba_suite(void) {
    Suite *s = suite_create("mamba");
    TCase *k = tcase_create("scan");
    tcase_add_test(k, scan_matches_reference);
    tcase_add_test(k, scan_gradients);
    tcase_add_test(k, scan_coarse_exp_close_to_reference);
    tcase_add_test(k, scan_backward_chunk_lengths);
    tcase_add_test(k, scan_refuses_bad_input);
    tcase_add_test(k, vector_math);
    tcase_add_test(k, vector_exp_matches_scalar);
    tcase_add_test(k, coarse_exp2);
    tcase_add_test(k, softplus_bias_rows_as_two_steps);
    tcase_add_test(k, broadcast_load);
    tcase_add_test(k, column_sums);
    suite_add_tcase(s, k);
    TCase *b = tcase_create("block");
    tcase_add_test(b, forward_follows_spec);
    tcase_add_test(b, block_gradients);
    tcase_add_test(b, block_gradients_vs_spec);
    tcase_add_test(b, backward_accumulates);
    tcase_add_test(b, memory_without_state_history);
    suite_add_tcase(s, b);
    TCase *st = tcase_create("streaming");
    tcase_add_test(st, step_matches_forward);
    tcase_add_test(st, prefill_then_steps_match_forward);
    suite_add_tcase(s, st);
    TCase *o = tcase_create("options");
    tcase_add_test(o, init_as_upstream);
    tcase_add_test(o, accounting_and_names);
    suite_add_tcase(s, o);
    return s;
}
HY_TEST_SUITE(make_mamba_suite)

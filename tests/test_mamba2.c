/* The mamba2 block: the chunked SSD against a plain double-precision token-by-token recurrence
 * (outputs, final and chunk-boundary states, at lengths that are and are not multiples of the
 * chunk, T = 1, a state carried in, ngroups > 1, strided inputs), its backward against central
 * differences of that recurrence (every entry of every input, the carried-in state included) and
 * across chunk lengths, strong decays (log-decay near −1000 per step) staying finite and exact;
 * the whole block against a double transcription of SPEC §2 and its central differences (every
 * parameter and the input), tu_grad_check, streaming (step, prefill in pieces across chunk
 * boundaries, state export/import) against the parallel forward, memory without the state
 * history, option validation (from pairs and located in a YAML file), init and accounting. */
#include "core/error.h"
#include "core/mem.h"
#include "core/rng.h"
#include "experiments/config.h"
#include "layers/mamba2/mamba2.h"
#include "layers/mamba2/ssd.h"
#include "tests/testutil.h"
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { P_IN, P_CONV_W, P_CONV_B, P_DT_BIAS, P_A_LOG, P_D, P_NORM, P_OUT, N_P };

/* ---------------------------------------------------------------- the SSD alone ---- */

/* One SSD problem with strided inputs: x rows of ldx = H·P + 3, Δ rows of lddt = H + 1, B and C in
 * one row of ldbc = 2GN + 1 (B at column 0, C at column GN); float (what the kernels see). */
typedef struct {
    int B, T, H, P, N, G, ldx, lddt, ldbc;
    float *x, *dt, *bc, *A, *s0;
} ssd_case;

static size_t nrows(const ssd_case *s) { return (size_t)s->B * s->T; }
static size_t nstate(const ssd_case *s) { return (size_t)s->B * s->H * s->P * s->N; }

/* Random inputs: Δ = softplus(N(-0.5, 1)) in (0, ~3), A = -exp(N(0, 0.7)), x, B, C ~ N(0, 1),
 * s0 ~ N(0, 0.5²). */
static void ssd_case_new(ssd_case *s, int B, int T, int H, int P, int N, int G, uint64_t seed) {
    memset(s, 0, sizeof *s);
    *s = (ssd_case){B, T, H, P, N, G, H * P + 3, H + 1, 2 * G * N + 1, NULL, NULL, NULL, NULL, NULL};
    size_t rows = nrows(s) ? nrows(s) : 1;
    s->x = hy_malloc(rows * s->ldx * 4), s->dt = hy_malloc(rows * s->lddt * 4), s->bc = hy_malloc(rows * s->ldbc * 4);
    s->A = hy_malloc((size_t)H * 4), s->s0 = hy_malloc(nstate(s) * 4);
    tu_fill_normal(s->x, rows * s->ldx, 1, seed);
    tu_fill_normal(s->dt, rows * s->lddt, 1, seed + 1);
    for (size_t i = 0; i < rows * s->lddt; i++) s->dt[i] = log1pf(expf(s->dt[i] - 0.5f));
    tu_fill_normal(s->bc, rows * s->ldbc, 1, seed + 2);
    tu_fill_normal(s->A, H, 0.7f, seed + 3);
    for (int h = 0; h < H; h++) s->A[h] = -expf(s->A[h]);
    tu_fill_normal(s->s0, nstate(s), 0.5f, seed + 4);
}

static void ssd_case_free(ssd_case *s) { hy_free(s->x), hy_free(s->dt), hy_free(s->bc), hy_free(s->A), hy_free(s->s0); }

static hy_ssd_args ssd_args_of(const ssd_case *s, bool with_s0, int chunk, float *states) {
    return (hy_ssd_args){.B = s->B, .T = s->T, .H = s->H, .P = s->P, .N = s->N, .G = s->G, .x = s->x, .ldx = s->ldx,
                         .dt = s->dt, .lddt = s->lddt, .Bm = s->bc, .Cm = s->bc + s->G * s->N, .ldbc = s->ldbc,
                         .A = s->A, .s0 = with_s0 ? s->s0 : NULL, .chunk = chunk, .states = states};
}

static double *to_double(const float *p, size_t n) {
    double *d = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) d[i] = p[i];
    return d;
}

/* The recurrence exactly as SPEC §2 writes it, in double, one (b, h, t) at a time, on inputs laid
 * out as the case's (so finite differences can perturb any entry). y: (rows, H·P) or NULL;
 * s_out: the final state or NULL; hist: the state entering every step (B, T, H, P, N) or NULL.
 * Returns Σ y·R when R (rows, H·P) is given. */
static double ref_ssd(const ssd_case *s, const double *x, const double *dt, const double *bc, const double *A,
                      const double *s0, double *y, double *s_out, double *hist, const double *R) {
    const int H = s->H, P = s->P, N = s->N, Hg = H / s->G;
    double *S = malloc(sizeof(double) * P * N), loss = 0;
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < H; h++) {
            const int g = h / Hg;
            const size_t st = ((size_t)b * H + h) * P * N;
            for (int i = 0; i < P * N; i++) S[i] = s0 ? s0[st + i] : 0.0;
            for (int t = 0; t < s->T; t++) {
                const size_t row = (size_t)b * s->T + t;
                if (hist) memcpy(hist + ((row * H) + h) * P * N, S, sizeof(double) * P * N);
                const double dl = dt[row * s->lddt + h], e = exp(dl * A[h]);
                const double *Bt = bc + row * s->ldbc + (size_t)g * N, *Ct = Bt + (size_t)s->G * N;
                for (int p = 0; p < P; p++) {
                    const double u = dl * x[row * s->ldx + (size_t)h * P + p];
                    double acc = 0;
                    for (int n = 0; n < N; n++) {
                        S[p * N + n] = e * S[p * N + n] + u * Bt[n];
                        acc += S[p * N + n] * Ct[n];
                    }
                    const size_t o = row * H * P + (size_t)h * P + p;
                    if (y) y[o] = acc;
                    if (R) loss += acc * R[o];
                }
            }
            if (s_out) memcpy(s_out + st, S, sizeof(double) * P * N);
        }
    free(S);
    return loss;
}

/* max |a - ref| / max(max |ref|, floor), NaN -> inf */
static double nerr_d(const float *a, const double *ref, size_t n, double floor) {
    double diff = 0, scale = floor;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(a[i] - ref[i]);
        diff = isnan(e) ? INFINITY : fmax(diff, e);
        scale = fmax(scale, fabs(ref[i]));
    }
    return diff / scale;
}

static bool all_finite(const float *a, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i])) return false;
    return true;
}

/* The chunked forward (with and without a carried-in state) against ref_ssd: y, the final state,
 * every chunk's entering state; and the step-by-step hy_ssd_scan against the same. */
static void check_ssd_forward_threads(int B, int T, int H, int P, int N, int G, int chunk, int threads) {
    const int threads_before = omp_get_max_threads();
    omp_set_num_threads(threads);   /* the head blocks per group follow the thread count */
    ssd_case s;
    ssd_case_new(&s, B, T, H, P, N, G, 100 + T + H + N + chunk);
    const size_t rows = nrows(&s), nY = rows * H * P, nS = nstate(&s), PN = (size_t)P * N;
    double *dx = to_double(s.x, rows * s.ldx), *ddt = to_double(s.dt, rows * s.lddt), *dbc = to_double(s.bc, rows * s.ldbc),
           *dA = to_double(s.A, H), *ds0 = to_double(s.s0, nS);
    double *ry = malloc(sizeof(double) * (nY + 1)), *rs = malloc(sizeof(double) * nS),
           *hist = malloc(sizeof(double) * (rows * H * PN + 1));
    const int ldy = H * P + 2;
    float *y = hy_malloc((rows * ldy + 1) * 4), *so = hy_malloc(nS * 4),
          *st = hy_malloc((hy_ssd_state_floats(B, T, H, P, N, chunk) + 1) * 4), *yd = hy_malloc((nY + 1) * 4);
    hy_buf ws = {0};
    for (int with_s0 = 0; with_s0 < 2; with_s0++) {
        hy_ssd_args a = ssd_args_of(&s, with_s0, chunk, st);
        a.s_out = so;
        ck_assert_msg(hy_ssd_forward(&a, y, ldy, &ws) == 0, "%s", hy_last_error());
        ref_ssd(&s, dx, ddt, dbc, dA, with_s0 ? ds0 : NULL, ry, rs, hist, NULL);
        for (size_t r = 0; r < rows; r++) memcpy(yd + r * H * P, y + r * ldy, (size_t)H * P * 4);
        const char *what = "B %d T %d H %d P %d N %d G %d chunk %d s0 %d: %s error %g (threads %d)";
        double e = nerr_d(yd, ry, nY, 1);
        ck_assert_msg(e < 2e-5, what, B, T, H, P, N, G, chunk, with_s0, "y", e, threads);
        e = nerr_d(so, rs, nS, 1);
        ck_assert_msg(e < 2e-5, what, B, T, H, P, N, G, chunk, with_s0, "final state", e, threads);
        /* slot c of (B, nch+1, N, H·P) = the state entering step c·chunk (the final one at c = nch),
         * transposed: S[h][p][n] at row n, column h·P + p */
        int nch = (T + chunk - 1) / chunk;
        double worst = 0;
        for (int b = 0; b < B; b++)
            for (int c = 0; c <= nch; c++)
                for (int h = 0; h < H; h++)
                    for (size_t i = 0; i < PN; i++) {
                        const size_t p = i / N, n = i % N;
                        double want = c < nch ? hist[(((size_t)b * T + (size_t)c * chunk) * H + h) * PN + i]
                                              : rs[((size_t)b * H + h) * PN + i];
                        double got = st[(((size_t)b * (nch + 1) + c) * N + n) * H * P + (size_t)h * P + p];
                        worst = fmax(worst, fabs(got - want));
                    }
        ck_assert_msg(worst < 2e-5, what, B, T, H, P, N, G, chunk, with_s0, "chunk state", worst, threads);
        /* the plain recurrence, in place on a copy of s0 */
        if (with_s0) memcpy(so, s.s0, nS * 4);
        a.s0 = with_s0 ? so : NULL;
        ck_assert_msg(hy_ssd_scan(&a, yd, H * P) == 0, "%s", hy_last_error());
        e = nerr_d(yd, ry, nY, 1);
        ck_assert_msg(e < 2e-5, what, B, T, H, P, N, G, chunk, with_s0, "scan y", e, threads);
        e = nerr_d(so, rs, nS, 1);
        ck_assert_msg(e < 2e-5, what, B, T, H, P, N, G, chunk, with_s0, "scan final state", e, threads);
    }
    free(dx), free(ddt), free(dbc), free(dA), free(ds0), free(ry), free(rs), free(hist);
    hy_free(y), hy_free(so), hy_free(st), hy_free(yd);
    hy_buf_free(&ws);
    ssd_case_free(&s);
    omp_set_num_threads(threads_before);
}

/* One task per (sequence, group) with one thread; with three, head blocks when B·G < 3. */
static void check_ssd_forward(int B, int T, int H, int P, int N, int G, int chunk) {
    check_ssd_forward_threads(B, T, H, P, N, G, chunk, 1);
    check_ssd_forward_threads(B, T, H, P, N, G, chunk, 3);
}

START_TEST(ssd_matches_recurrence) {
    check_ssd_forward(2, 77, 4, 8, 6, 2, 16);    /* 4 full chunks + 13, two groups */
    check_ssd_forward(1, 64, 2, 16, 8, 1, 16);   /* a multiple of the chunk */
    check_ssd_forward(2, 1, 4, 8, 6, 2, 16);     /* T = 1 */
    check_ssd_forward(1, 130, 3, 5, 7, 1, 64);   /* 2 chunks + 2, odd sizes */
    check_ssd_forward(1, 33, 4, 4, 4, 4, 1);     /* chunk 1: every step its own chunk */
    check_ssd_forward(2, 20, 2, 4, 3, 1, 400);   /* one chunk longer than T */
    check_ssd_forward(1, 128, 2, 64, 64, 1, HY_MAMBA2_CHUNK);   /* the block's shapes and chunk */
    check_ssd_forward(1, 70, 4, 64, 64, 2, HY_MAMBA2_CHUNK);
    /* 8 threads, B·G = 4 tasks: two head blocks per group, so the chunks' C Bᵀ are shared, here
     * across two sequences and two groups (5 full chunks + 5) */
    check_ssd_forward_threads(2, 45, 4, 4, 5, 2, 8, 8);
}
END_TEST

/* The chunked backward against central differences of ref_ssd, every entry of x, Δ, B, C, A and
 * the carried-in state. */
static void check_ssd_gradients(int B, int T, int H, int P, int N, int G, int chunk, int threads, uint64_t seed) {
    const int threads_before = omp_get_max_threads();
    omp_set_num_threads(threads);   /* the head blocks per group follow the thread count */
    ssd_case s;
    ssd_case_new(&s, B, T, H, P, N, G, seed);
    const size_t rows = nrows(&s), nY = rows * H * P, nS = nstate(&s);
    float *R = hy_malloc(nY * 4), *y = hy_malloc(nY * 4), *st = hy_malloc(hy_ssd_state_floats(B, T, H, P, N, chunk) * 4);
    float *gx = hy_malloc(rows * s.ldx * 4), *gdt = hy_malloc(rows * s.lddt * 4), *gbc = hy_malloc(rows * s.ldbc * 4),
          *gA = hy_calloc((size_t)H * 4), *gs0 = hy_malloc(nS * 4);
    /* entries of the gradient buffers that are not inputs stay at a marker */
    for (size_t i = 0; i < rows * s.ldx; i++) gx[i] = 12345;
    for (size_t i = 0; i < rows * s.lddt; i++) gdt[i] = 12345;
    for (size_t i = 0; i < rows * s.ldbc; i++) gbc[i] = 12345;
    tu_fill_normal(R, nY, 1, seed + 10);
    hy_ssd_args a = ssd_args_of(&s, true, chunk, st);
    hy_buf ws = {0}, ws2 = {0};
    ck_assert_int_eq(hy_ssd_forward(&a, y, H * P, &ws), 0);
    ck_assert_msg(hy_ssd_backward(&a, R, H * P, gx, s.ldx, gdt, s.lddt, gbc, gbc + G * N, s.ldbc, gA, gs0, &ws2) == 0,
                  "%s", hy_last_error());
    double *in[6] = {to_double(s.x, rows * s.ldx), to_double(s.dt, rows * s.lddt), to_double(s.bc, rows * s.ldbc),
                     to_double(s.A, H), to_double(s.s0, nS), NULL};
    double *dR = to_double(R, nY);
    const float *an[5] = {gx, gdt, gbc, gA, gs0};
    const size_t len[5] = {rows * s.ldx, rows * s.lddt, rows * s.ldbc, (size_t)H, nS};
    const size_t ld[5] = {(size_t)s.ldx, (size_t)s.lddt, (size_t)s.ldbc, 0, 0}, used[5] = {(size_t)H * P, (size_t)H,
                                                                                           2 * (size_t)G * N, 0, 0};
    const char *names[5] = {"x", "dt", "B|C", "A", "s0"};
    for (int k = 0; k < 5; k++) {
        double worst = 0, scale = 1e-3;
        for (size_t i = 0; i < len[k]; i++) {
            if (ld[k] && i % ld[k] >= used[k]) {
                ck_assert_msg(an[k][i] == 12345, "%s: a padding entry was written", names[k]);
                continue;
            }
            double keep = in[k][i], h = 1e-6 * fmax(1, fabs(keep));
            in[k][i] = keep + h;
            double up = ref_ssd(&s, in[0], in[1], in[2], in[3], in[4], NULL, NULL, NULL, dR);
            in[k][i] = keep - h;
            double down = ref_ssd(&s, in[0], in[1], in[2], in[3], in[4], NULL, NULL, NULL, dR);
            in[k][i] = keep;
            double num = (up - down) / (2 * h);
            worst = fmax(worst, fabs(num - an[k][i]));
            scale = fmax(scale, fabs(num));
        }
        ck_assert_msg(worst / scale < 1e-4, "B %d T %d G %d chunk %d threads %d: SSD gradient of %s: error %g (scale %g)",
                      B, T, G, chunk, threads, names[k], worst / scale, scale);
    }
    omp_set_num_threads(threads_before);
    for (int k = 0; k < 5; k++) free(in[k]);
    free(dR);
    hy_free(R), hy_free(y), hy_free(st), hy_free(gx), hy_free(gdt), hy_free(gbc), hy_free(gA), hy_free(gs0);
    hy_buf_free(&ws), hy_buf_free(&ws2);
    ssd_case_free(&s);
}

START_TEST(ssd_gradients) {
    /* threads: 1 block of heads per group when B·G >= threads, else up to one block per thread */
    check_ssd_gradients(2, 23, 4, 3, 4, 2, 5, 2, 7);    /* 4 full chunks + 3, two groups of two heads */
    check_ssd_gradients(1, 20, 2, 4, 3, 1, 5, 1, 8);    /* a multiple of the chunk, one task */
    check_ssd_gradients(2, 1, 2, 3, 2, 2, 5, 2, 9);     /* T = 1 */
    check_ssd_gradients(1, 12, 3, 2, 5, 1, 16, 2, 10);  /* one partial chunk; blocks of 2 and 1 heads */
    check_ssd_gradients(1, 23, 5, 2, 3, 1, 5, 4, 11);   /* 4 blocks (2, 1, 1, 1 heads) */
    check_ssd_gradients(2, 13, 4, 2, 3, 2, 5, 8, 12);   /* 2 blocks per group, shared C Bᵀ over 2 sequences, 2 groups */
}
END_TEST

/* The backward does not depend on the chunk length: 1, 7, 64 (T = 150 is a multiple of none) and
 * one chunk longer than T. */
START_TEST(ssd_backward_chunk_lengths) {
    enum { B = 2, T = 150, H = 4, P = 8, N = 6, G = 2 };
    static const int chunks[] = {1, 7, 64, 400};
    ssd_case s;
    ssd_case_new(&s, B, T, H, P, N, G, 11);
    const size_t rows = nrows(&s), nY = rows * H * P;
    float *dy = hy_malloc(nY * 4), *y = hy_malloc(nY * 4), *out[4][5];
    hy_buf ws = {0}, ws2 = {0};
    tu_fill_normal(dy, nY, 1, 12);
    for (int k = 0; k < 4; k++) {
        float *st = hy_malloc(hy_ssd_state_floats(B, T, H, P, N, chunks[k]) * 4);
        out[k][0] = hy_calloc(rows * s.ldx * 4), out[k][1] = hy_calloc(rows * s.lddt * 4);
        out[k][2] = hy_calloc(rows * s.ldbc * 4), out[k][3] = hy_calloc(H * 4), out[k][4] = hy_calloc(nstate(&s) * 4);
        hy_ssd_args a = ssd_args_of(&s, true, chunks[k], st);
        ck_assert_int_eq(hy_ssd_forward(&a, y, H * P, &ws), 0);
        ck_assert_int_eq(hy_ssd_backward(&a, dy, H * P, out[k][0], s.ldx, out[k][1], s.lddt, out[k][2],
                                         out[k][2] + G * N, s.ldbc, out[k][3], out[k][4], &ws2),
                         0);
        hy_free(st);
    }
    const size_t len[5] = {rows * s.ldx, rows * s.lddt, rows * s.ldbc, H, nstate(&s)};
    for (int k = 1; k < 4; k++)
        for (int j = 0; j < 5; j++) {
            double e = tu_scaled_err(out[k][j], out[0][j], len[j], 1e-3);
            ck_assert_msg(e < 1e-5, "chunk %d vs chunk 1: output %d differs by %g of its scale", chunks[k], j, e);
        }
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 5; j++) hy_free(out[k][j]);
    hy_free(dy), hy_free(y);
    hy_buf_free(&ws), hy_buf_free(&ws2);
    ssd_case_free(&s);
}
END_TEST

/* Per-step log-decays near −1000: on every step of one head, on isolated steps of the others
 * (a strong decay amid mild ones, where a difference of prefix sums would lose the mild ones'
 * precision). Forward and backward stay finite and agree with the double recurrence and its
 * central differences. */
START_TEST(ssd_strong_decays) {
    enum { B = 1, T = 45, H = 3, P = 4, N = 3, G = 1, Q = 16 };
    ssd_case s;
    ssd_case_new(&s, B, T, H, P, N, G, 21);
    s.A[0] = -1000.0f;   /* a ≈ −1000·Δ, Δ in (0, 3) */
    s.A[1] = -0.05f, s.A[2] = -0.3f;
    for (int t = 3; t < T; t += 7) s.dt[(size_t)t * s.lddt + 1] = 20000.0f, s.dt[(size_t)t * s.lddt + 2] = 3300.0f;
    const size_t rows = nrows(&s), nY = rows * H * P, nS = nstate(&s);
    float *y = hy_malloc(nY * 4), *so = hy_malloc(nS * 4), *st = hy_malloc(hy_ssd_state_floats(B, T, H, P, N, Q) * 4);
    float *gx = hy_calloc(rows * s.ldx * 4), *gdt = hy_calloc(rows * s.lddt * 4), *gbc = hy_calloc(rows * s.ldbc * 4),
          *gA = hy_calloc(H * 4), *gs0 = hy_calloc(nS * 4), *R = hy_malloc(nY * 4);
    tu_fill_normal(R, nY, 1, 22);
    hy_ssd_args a = ssd_args_of(&s, true, Q, st);
    a.s_out = so;
    hy_buf ws = {0}, ws2 = {0};
    ck_assert_int_eq(hy_ssd_forward(&a, y, H * P, &ws), 0);
    ck_assert_int_eq(hy_ssd_backward(&a, R, H * P, gx, s.ldx, gdt, s.lddt, gbc, gbc + N, s.ldbc, gA, gs0, &ws2), 0);
    ck_assert(all_finite(y, nY) && all_finite(so, nS) && all_finite(gx, rows * s.ldx) && all_finite(gdt, rows * s.lddt) &&
              all_finite(gbc, rows * s.ldbc) && all_finite(gA, H) && all_finite(gs0, nS));
    double *in[5] = {to_double(s.x, rows * s.ldx), to_double(s.dt, rows * s.lddt), to_double(s.bc, rows * s.ldbc),
                     to_double(s.A, H), to_double(s.s0, nS)};
    double *ry = malloc(sizeof(double) * nY), *dR = to_double(R, nY);
    ref_ssd(&s, in[0], in[1], in[2], in[3], in[4], ry, NULL, NULL, NULL);
    double e = nerr_d(y, ry, nY, 1);
    ck_assert_msg(e < 2e-5, "strong decays: y error %g", e);
    /* a few gradient entries against central differences: x and Δ right after a strong step, A */
    const float *an[3] = {gx, gdt, gA};
    const size_t idx[3][3] = {{4 * s.ldx + P + 1, 10 * s.ldx + 2 * P, 0}, {4 * s.lddt + 1, 11 * s.lddt + 2, 1},
                              {0, 1, 2}};
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 3; j++) {
            int w = k == 2 ? 3 : k;
            size_t i = idx[k][j];
            double keep = in[w][i], h = 1e-6 * fmax(1, fabs(keep));
            in[w][i] = keep + h;
            double up = ref_ssd(&s, in[0], in[1], in[2], in[3], in[4], NULL, NULL, NULL, dR);
            in[w][i] = keep - h;
            double down = ref_ssd(&s, in[0], in[1], in[2], in[3], in[4], NULL, NULL, NULL, dR);
            in[w][i] = keep;
            double num = (up - down) / (2 * h);
            ck_assert_msg(fabs(num - an[k][i]) <= 1e-4 * fmax(1, fabs(num)), "strong decays: gradient %d/%d: %g vs %g",
                          k, j, an[k][i], num);
        }
    for (int k = 0; k < 5; k++) free(in[k]);
    free(ry), free(dR);
    hy_free(y), hy_free(so), hy_free(st), hy_free(gx), hy_free(gdt), hy_free(gbc), hy_free(gA), hy_free(gs0), hy_free(R);
    hy_buf_free(&ws), hy_buf_free(&ws2);
    ssd_case_free(&s);
}
END_TEST

START_TEST(ssd_refuses_bad_input) {
    ssd_case s;
    ssd_case_new(&s, 1, 4, 4, 2, 2, 3, 1);   /* 3 groups do not divide 4 heads */
    float y[64];
    hy_buf ws = {0};
    float st[1024];
    hy_ssd_args a = ssd_args_of(&s, false, 4, st);
    ck_assert_int_lt(hy_ssd_forward(&a, y, 8, &ws), 0);
    a.G = 2, a.chunk = 0;
    ck_assert_int_lt(hy_ssd_forward(&a, y, 8, &ws), 0);
    a.chunk = 4, a.states = NULL;
    ck_assert_int_eq(hy_ssd_forward(&a, y, 8, &ws), 0);   /* states are kept only when asked for */
    float g[64], gB[64], dA[4] = {0};
    ck_assert_int_lt(hy_ssd_backward(&a, y, 8, g, 8, g, 4, gB, gB, 8, dA, NULL, &ws), 0);
    ck_assert_msg(strstr(hy_last_error(), "chunk states") != NULL, "%s", hy_last_error());
    ck_assert_int_lt(hy_ssd_scan(&a, y, 8), 0);   /* no s_out */
    hy_buf_free(&ws);
    ssd_case_free(&s);
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

/* A mamba2 layer with the given options, parameters re-drawn so that every path matters: Δ around
 * 0.1..1, A = -exp(A_log) around -0.4..-2.7 (the state decays within a few steps but carries),
 * random D, conv and norm weights. */
static void make_layer(hy_layer *L, int d, const char *const *pairs, int n_pairs, uint64_t seed) {
    tu_layer(L, "mamba2", d, pairs, n_pairs, seed);
    static const float scale[N_P] = {1, 0.5f, 0.3f, 0.5f, 0.5f, 1, 0.2f, 1};
    for (int p = 0; p < N_P; p++) {
        float sc = scale[p];
        if (p == P_IN) sc = 1.0f / sqrtf((float)d);
        if (p == P_OUT) sc = 1.0f / sqrtf((float)numel(L, P_NORM));
        tu_fill_normal(L->p[p], numel(L, p), sc, seed * 16 + p);
    }
    for (size_t i = 0; i < numel(L, P_DT_BIAS); i++) L->p[P_DT_BIAS][i] -= 1.0f;
    for (size_t i = 0; i < numel(L, P_NORM); i++) L->p[P_NORM][i] += 1.0f;
}

static int opt(hy_layer *L, const char *key) { return hy_opt_int(&L->opts, hy_opt_index(L->ops, key)); }

/* SPEC §2 in double, straight loops: in_proj, conv, silu, softplus, the recurrence, D, gate, the
 * group rmsnorm, out_proj. */
static void spec_forward(hy_layer *L, const float *u, double *out, int B, int T) {
    const int d = L->d_model, E = opt(L, "expand") * d, N = opt(L, "d_state"), K = opt(L, "d_conv"),
              P = opt(L, "headdim"), G = opt(L, "ngroups"), H = E / P, Cx = E + 2 * G * N, W = E + Cx + H, Eg = E / G;
    float **p = L->p;
    double *zx = malloc(sizeof(double) * T * W), *xc = malloc(sizeof(double) * T * Cx), *dl = malloc(sizeof(double) * T * H),
           *y = malloc(sizeof(double) * E), *S = malloc(sizeof(double) * H * P * N);
    for (int b = 0; b < B; b++) {
        const float *ub = u + (size_t)b * T * d;
        for (int t = 0; t < T; t++)
            for (int o = 0; o < W; o++) {
                double a = 0;
                for (int i = 0; i < d; i++) a += (double)p[P_IN][(size_t)o * d + i] * ub[(size_t)t * d + i];
                zx[(size_t)t * W + o] = a;
            }
        for (int t = 0; t < T; t++) {
            for (int c = 0; c < Cx; c++) {
                double a = p[P_CONV_B][c];
                for (int k = 0; k < K; k++) {
                    int j = t - K + 1 + k;
                    if (j >= 0) a += (double)p[P_CONV_W][(size_t)c * K + k] * zx[(size_t)j * W + E + c];
                }
                xc[(size_t)t * Cx + c] = a / (1 + exp(-a));
            }
            for (int h = 0; h < H; h++) {
                double a = zx[(size_t)t * W + E + Cx + h] + p[P_DT_BIAS][h];
                dl[(size_t)t * H + h] = a > 20 ? a : log1p(exp(a));
            }
        }
        memset(S, 0, sizeof(double) * H * P * N);
        for (int t = 0; t < T; t++) {
            const double *x = xc + (size_t)t * Cx, *z = zx + (size_t)t * W;
            for (int h = 0; h < H; h++) {
                const int g = h / (H / G);
                const double *Bt = x + E + (size_t)g * N, *Ct = x + E + (size_t)G * N + (size_t)g * N;
                double D = dl[(size_t)t * H + h], A = -exp((double)p[P_A_LOG][h]);
                for (int q = 0; q < P; q++) {
                    double acc = 0, xv = x[h * P + q];
                    for (int n = 0; n < N; n++) {
                        double *s = &S[((size_t)h * P + q) * N + n];
                        *s = exp(D * A) * *s + D * xv * Bt[n];
                        acc += *s * Ct[n];
                    }
                    y[h * P + q] = acc + p[P_D][h] * xv;
                }
            }
            for (int c = 0; c < E; c++) y[c] *= z[c] / (1 + exp(-z[c]));
            for (int g = 0; g < G; g++) {
                double ss = 0;
                for (int c = g * Eg; c < (g + 1) * Eg; c++) ss += y[c] * y[c];
                double r = 1 / sqrt(ss / Eg + 1e-5);
                for (int c = g * Eg; c < (g + 1) * Eg; c++) y[c] *= r * p[P_NORM][c];
            }
            for (int o = 0; o < d; o++) {
                double a = 0;
                for (int c = 0; c < E; c++) a += (double)p[P_OUT][(size_t)o * E + c] * y[c];
                out[((size_t)b * T + t) * d + o] = a;
            }
        }
    }
    free(zx), free(xc), free(dl), free(y), free(S);
}

/* The layer options used by the block tests: the block's chunk in full and with a tail, two
 * groups, a short conv, expand 1 with four groups of one head each. */
static const char *const o_plain[] = {"d_state=8", "headdim=16"};
static const char *const o_groups[] = {"d_state=6", "headdim=8", "ngroups=2", "d_conv=3"};
static const char *const o_narrow[] = {"d_state=5", "expand=1", "headdim=6", "ngroups=4", "d_conv=2"};

START_TEST(forward_follows_spec) {
    static const struct {
        int d;
        const char *const *o;
        int n;
    } cases[] = {{32, o_plain, 2}, {32, o_groups, 4}, {24, o_narrow, 5}};
    static const int Ts[] = {HY_MAMBA2_CHUNK, HY_MAMBA2_CHUNK + 6, 1, 2 * HY_MAMBA2_CHUNK + 2};
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 4; j++) {
            const int B = 2, T = Ts[j], D = cases[k].d;
            hy_layer L;
            make_layer(&L, D, cases[k].o, cases[k].n, 3 + k);
            float *x = hy_malloc((size_t)B * T * D * 4), *y = hy_malloc((size_t)B * T * D * 4);
            double *ref = malloc(sizeof(double) * B * T * D);
            tu_fill_normal(x, (size_t)B * T * D, 1, 9);
            ck_assert_int_eq(L.ops->forward(&L, x, y, B, T), 0);
            spec_forward(&L, x, ref, B, T);
            double e = nerr_d(y, ref, (size_t)B * T * D, 1e-3);
            ck_assert_msg(e < 3e-5, "d %d %s %s T %d: error against the SPEC transcription %g", D, cases[k].o[0],
                          cases[k].o[1], T, e);
            hy_free(x), hy_free(y), free(ref);
            hy_layer_standalone_free(&L);
        }
}
END_TEST

/* tu_grad_check (float finite differences) on short sequences, where their rounding noise stays
 * well below the tolerance. */
START_TEST(block_gradients) {
    hy_layer L;
    make_layer(&L, 16, o_plain, 2, 5);
    for (int p = 0; p < N_P; p++)   /* softer: float differences of sharper weights are too noisy */
        if (p != P_DT_BIAS && p != P_A_LOG && p != P_NORM)
            for (size_t i = 0; i < numel(&L, p); i++) L.p[p][i] *= 0.6f;
    double e = tu_grad_check(&L, 2, 9, 1e-2f, 8, 21);
    ck_assert_msg(e < 1e-2, "gradient error %g (d 16, d_state 8, headdim 16)", e);
    hy_layer_standalone_free(&L);
    make_layer(&L, 16, o_groups, 4, 6);
    for (int p = 0; p < N_P; p++)
        if (p != P_DT_BIAS && p != P_A_LOG && p != P_NORM)
            for (size_t i = 0; i < numel(&L, p); i++) L.p[p][i] *= 0.6f;
    e = tu_grad_check(&L, 1, 9, 1e-2f, 8, 22);
    ck_assert_msg(e < 1e-2, "gradient error %g (d 16, ngroups 2)", e);
    hy_layer_standalone_free(&L);
}
END_TEST

static double spec_loss(hy_layer *L, const float *u, const double *R, int B, int T, double *buf) {
    spec_forward(L, u, buf, B, T);
    double s = 0;
    for (size_t i = 0; i < (size_t)B * T * L->d_model; i++) s += buf[i] * R[i];
    return s;
}

/* The block's backward at T = chunk + 6 against central differences of the double SPEC
 * transcription: free of float rounding noise, so the tolerance is tight (steps of 1e-4: the
 * group norm over a few channels is curved enough that 1e-3 steps miss D's gradient by 4e-4). Every parameter tensor
 * and the input, 6 entries each, and every entry of the small per-head tensors. */
static void check_gradients_vs_spec(int D, const char *const *o, int n_o, uint64_t seed) {
    const int B = 2, T = HY_MAMBA2_CHUNK + 6;
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
        bool every = p == P_DT_BIAS || p == P_A_LOG || p == P_D;
        double scale = 1e-3, worst = 0;
        for (size_t i = 0; i < len; i++) scale = fmax(scale, fabs(an[i]));
        for (size_t k = 0; k < (every ? len : 6); k++) {
            size_t i = every ? k : hy_rng_below(&rng, len);
            float keep = v[i];
            float h = 1e-4f * fmaxf(1.0f, fabsf(keep));
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
    check_gradients_vs_spec(16, o_plain, 2, 8);
    check_gradients_vs_spec(16, o_groups, 4, 9);
    check_gradients_vs_spec(24, o_narrow, 5, 10);
}
END_TEST

/* Backward accumulates parameter gradients (+=) and overwrites dx; without kept activations it
 * refuses. */
START_TEST(backward_accumulates) {
    enum { B = 1, T = 20, D = 16 };
    hy_layer L;
    make_layer(&L, D, o_plain, 2, 7);
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
    ck_assert_msg(strstr(hy_last_error(), "mamba2") != NULL, "%s", hy_last_error());
    hy_layer_standalone_free(&L);
}
END_TEST

/* Strong decays through the whole block: A_log = log 1000 and Δ ≈ 1 make every per-step
 * log-decay ≈ −1000. Forward matches the SPEC transcription, forward and backward stay finite. */
START_TEST(block_strong_decays) {
    enum { B = 2, T = 70, D = 16 };
    hy_layer L;
    make_layer(&L, D, o_plain, 2, 12);
    for (size_t h = 0; h < numel(&L, P_A_LOG); h++) L.p[P_A_LOG][h] = logf(1000.0f), L.p[P_DT_BIAS][h] = 0.55f;
    float *x = hy_malloc(B * T * D * 4), *y = hy_malloc(B * T * D * 4), *dx = hy_malloc(B * T * D * 4);
    double *ref = malloc(sizeof(double) * B * T * D);
    tu_fill_normal(x, B * T * D, 1, 13);
    for (int p = 0; p < N_P; p++) memset(L.g[p], 0, numel(&L, p) * 4);
    ck_assert_int_eq(L.ops->forward(&L, x, y, B, T), 0);
    spec_forward(&L, x, ref, B, T);
    double e = nerr_d(y, ref, (size_t)B * T * D, 1e-3);
    ck_assert_msg(e < 3e-5, "strong decays: error against the SPEC transcription %g", e);
    ck_assert_int_eq(L.ops->backward(&L, x, dx, B, T), 0);
    ck_assert(all_finite(y, B * T * D) && all_finite(dx, B * T * D));
    for (int p = 0; p < N_P; p++) ck_assert_msg(all_finite(L.g[p], numel(&L, p)), "gradient of parameter %d", p);
    hy_free(x), hy_free(y), hy_free(dx), free(ref);
    hy_layer_standalone_free(&L);
}
END_TEST

START_TEST(step_matches_forward) {
    hy_layer L;
    make_layer(&L, 24, o_narrow, 5, 4);
    double e = tu_step_check(&L, 2, 100, 12);
    ck_assert_msg(e < 1e-5, "step vs forward error %g (ngroups 4)", e);
    hy_layer_standalone_free(&L);
    make_layer(&L, 32, o_plain, 2, 4);
    e = tu_step_check(&L, 1, 70, 13);
    ck_assert_msg(e < 1e-5, "step vs forward error %g", e);
    hy_layer_standalone_free(&L);
}
END_TEST

/* Runs x (B, T, D) through state st in the given pieces (1 = step, else prefill) into ys. */
static void stream_pieces(hy_layer *L, void *st, const float *x, float *ys, int B, int T, const int *pieces, int np) {
    const int D = L->d_model;
    float *xc = hy_malloc((size_t)B * T * D * 4), *yc = hy_malloc((size_t)B * T * D * 4);
    int t0 = 0;
    for (int c = 0; c < np; t0 += pieces[c], c++) {
        int n = pieces[c];
        for (int b = 0; b < B; b++) memcpy(xc + (size_t)b * n * D, x + ((size_t)b * T + t0) * D, (size_t)n * D * 4);
        int rc = n == 1 ? L->ops->step(L, st, xc, yc, B) : L->ops->prefill(L, st, xc, yc, B, n);
        ck_assert_msg(rc == 0, "%s", hy_last_error());
        for (int b = 0; b < B; b++) memcpy(ys + ((size_t)b * T + t0) * D, yc + (size_t)b * n * D, (size_t)n * D * 4);
    }
    ck_assert_int_eq(t0, T);
    hy_free(xc), hy_free(yc);
}

/* prefill 70 (a chunk and a tail), prefill 2 (fewer tokens than the conv history), steps, prefill
 * 130 from that mid-sequence state (crossing chunk boundaries away from multiples of the chunk),
 * steps: the same outputs as one forward over all 210; ngroups 2. */
START_TEST(prefill_then_steps_match_forward) {
    enum { B = 2, D = 32, T = 210 };
    hy_layer L;
    make_layer(&L, D, o_groups, 4, 5);
    float *x = hy_malloc(B * T * D * 4), *y = hy_malloc(B * T * D * 4), *ys = hy_malloc(B * T * D * 4);
    tu_fill_normal(x, B * T * D, 1, 13);
    ck_assert_int_eq(L.ops->forward(&L, x, y, B, T), 0);
    void *st;
    ck_assert_int_eq(L.ops->state_new(&L, B, &st), 0);
    static const int pieces[] = {70, 2, 1, 1, 130, 1, 1, 1, 1, 1, 1};
    stream_pieces(&L, st, x, ys, B, T, pieces, sizeof pieces / sizeof *pieces);
    double e = tu_scaled_err(ys, y, (size_t)B * T * D, 1e-6);
    ck_assert_msg(e < 1e-5, "prefill/step vs forward error %g", e);
    ck_assert_int_lt(L.ops->prefill(&L, st, x, ys, B + 1, 3), 0);   /* a state of B sequences only */
    L.ops->state_free(&L, st);
    hy_free(x), hy_free(y), hy_free(ys);
    hy_layer_standalone_free(&L);
}
END_TEST

/* A state exported after 75 tokens and imported into a fresh state continues exactly like the
 * original (bit for bit); shapes are mamba_ssm's; bad tensors are refused by name. */
START_TEST(state_export_import) {
    enum { B = 2, D = 32, T = 90 };
    hy_layer L;
    make_layer(&L, D, o_groups, 4, 6);
    float *x = hy_malloc(B * T * D * 4), *y1 = hy_malloc(B * T * D * 4), *y2 = hy_malloc(B * T * D * 4);
    tu_fill_normal(x, B * T * D, 1, 14);
    void *a, *b;
    ck_assert_int_eq(L.ops->state_new(&L, B, &a), 0);
    ck_assert_int_eq(L.ops->state_new(&L, B, &b), 0);
    static const int first[] = {75};
    float *xs = hy_malloc(B * 75 * D * 4), *ys = hy_malloc(B * 75 * D * 4);
    for (int i = 0; i < B; i++) memcpy(xs + (size_t)i * 75 * D, x + (size_t)i * T * D, 75 * D * 4);
    stream_pieces(&L, a, xs, ys, B, 75, first, 1);
    hy_state_tensor t[2];
    ck_assert_int_eq(L.ops->state_tensors(&L, a, t), 2);
    /* d 32: E 64, headdim 8 -> H 8, G 2, N 6, K 3: Cx = 64 + 24 = 88 */
    ck_assert_str_eq(t[0].name, "conv");
    ck_assert(t[0].ndim == 3 && t[0].shape[0] == B && t[0].shape[1] == 88 && t[0].shape[2] == 2);
    ck_assert_str_eq(t[1].name, "ssm");
    ck_assert(t[1].ndim == 4 && t[1].shape[0] == B && t[1].shape[1] == 8 && t[1].shape[2] == 8 && t[1].shape[3] == 6);
    float *data[2];
    for (int i = 0; i < 2; i++) {
        data[i] = hy_malloc(hy_state_tensor_numel(&t[i]) * 4);
        ck_assert_int_eq(L.ops->state_export(&L, a, i, data[i]), 0);
    }
    ck_assert_int_eq(L.ops->state_import(&L, b, 2, t, (const float *const *)data), 0);
    static const int rest[] = {1, 10, 1, 3};
    float *xr = hy_malloc(B * 15 * D * 4);
    for (int i = 0; i < B; i++) memcpy(xr + (size_t)i * 15 * D, x + ((size_t)i * T + 75) * D, 15 * D * 4);
    stream_pieces(&L, a, xr, y1, B, 15, rest, 4);
    stream_pieces(&L, b, xr, y2, B, 15, rest, 4);
    ck_assert_msg(memcmp(y1, y2, (size_t)B * 15 * D * 4) == 0, "an imported state continues differently");
    hy_state_tensor badt[2] = {t[0], t[1]};
    badt[1].shape[3] = 5;
    ck_assert_int_lt(L.ops->state_import(&L, b, 2, badt, (const float *const *)data), 0);
    ck_assert_msg(strstr(hy_last_error(), "mamba2") && strstr(hy_last_error(), "'ssm'"), "%s", hy_last_error());
    L.ops->state_free(&L, a), L.ops->state_free(&L, b);
    for (int i = 0; i < 2; i++) hy_free(data[i]);
    hy_free(x), hy_free(y1), hy_free(y2), hy_free(xs), hy_free(ys), hy_free(xr);
    hy_layer_standalone_free(&L);
}
END_TEST

/* Training forward + backward at T = 2048 with upstream's state size (N 128, headdim 64) never
 * holds the (T, H, P, N) state history (134 MB here): the chunked form keeps T/chunk states. Two threads
 * (the per-thread scratch scales with the thread count). */
START_TEST(memory_without_state_history) {
    int T = tu_quick() ? 1024 : 2048, D = 64, threads = omp_get_max_threads();
    hy_layer L;
    static const char *o[] = {"d_state=128"};   /* upstream's default */
    tu_layer(&L, "mamba2", D, o, 1, 3);
    omp_set_num_threads(2);
    size_t n = (size_t)T * D, history = (size_t)T * 2 * 64 * 128 * 4;
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

/* train_bytes is what a training forward + backward keeps, also where the SSD splits a group's heads
 * into blocks (one sequence, one group, 1 to 3 threads: 1, 2 and 3 blocks of the 4 heads). */
START_TEST(train_bytes_with_head_blocks) {
    enum { D = 64, T = 100 };
    static const char *o[] = {"headdim=32", "d_state=16"};
    const int threads_before = omp_get_max_threads();
    for (int th = 1; th <= 3; th++) {
        omp_set_num_threads(th);
        hy_layer L;
        tu_layer(&L, "mamba2", D, o, 2, 3);
        float *x = hy_malloc(T * D * 4), *y = hy_malloc(T * D * 4), *dx = hy_malloc(T * D * 4);
        tu_fill_normal(x, T * D, 1, 4);
        size_t base = hy_mem_current();
        ck_assert_int_eq(L.ops->forward(&L, x, y, 1, T), 0);
        ck_assert_int_eq(L.ops->backward(&L, y, dx, 1, T), 0);
        double kept = (double)(hy_mem_current() - base);
        hy_train_bytes e = L.ops->train_bytes(&L.opts, D, 1, T, th, true);
        ck_assert_msg(e.kept == kept && e.scratch == 0, "threads %d: %.0f bytes kept, estimated %.0f", th, kept, e.kept);
        hy_free(x), hy_free(y), hy_free(dx);
        hy_layer_standalone_free(&L);
    }
    omp_set_num_threads(threads_before);
}
END_TEST

/* ---------------------------------------------------------------- init, options, accounting ---- */

START_TEST(init_as_upstream) {
    enum { D = 128 };
    hy_layer L;
    tu_layer(&L, "mamba2", D, NULL, 0, 9);
    const int H = 4, E = 256;   /* expand 2, headdim 64 */
    ck_assert_int_eq((int)numel(&L, P_A_LOG), H);
    for (int h = 0; h < H; h++) {
        ck_assert_float_eq(L.p[P_D][h], 1.0f);
        double A = exp(L.p[P_A_LOG][h]);
        ck_assert_msg(A >= 1 - 1e-5 && A <= 16 * (1 + 1e-5), "initial A %g outside [1, 16]", A);
        double b = L.p[P_DT_BIAS][h], dt = b > 20 ? b : log1p(exp(b));   /* softplus(bias) = the drawn Δ */
        ck_assert_msg(dt >= 0.001 * (1 - 1e-5) && dt <= 0.1 * (1 + 1e-5), "initial dt %g outside [0.001, 0.1]", dt);
    }
    for (int c = 0; c < E; c++) ck_assert_float_eq(L.p[P_NORM][c], 1.0f);
    double mx = 0;
    for (size_t i = 0; i < numel(&L, P_CONV_W); i++) mx = fmax(mx, fabs(L.p[P_CONV_W][i]));
    ck_assert(mx <= 0.5 && mx > 0.45);   /* U(±1/sqrt(K)), K = 4 */
    hy_layer_standalone_free(&L);
    /* the floor and a degenerate A range: dt_min = dt_max = 1e-5 below dt_init_floor 1e-4, A = 3 */
    static const char *fl[] = {"dt_min=0.00001", "dt_max=0.00001", "A_init_min=3", "A_init_max=3"};
    tu_layer(&L, "mamba2", 64, fl, 4, 1);
    double b = L.p[P_DT_BIAS][0];
    ck_assert_double_eq_tol(log1p(exp(b)), 1e-4, 1e-8);
    ck_assert_double_eq_tol(L.p[P_A_LOG][1], log(3.0), 1e-6);
    hy_layer_standalone_free(&L);
}
END_TEST

START_TEST(accounting_and_names) {
    const hy_block_ops *ops = hy_block_find("mamba2");
    ck_assert_ptr_nonnull(ops);
    hy_opts o;
    ck_assert_int_eq(hy_block_opts_from_pairs(ops, 64, NULL, 0, &o), 0);
    /* d 64: E 128, P 64 -> H 2, G 1, N 64, K 4: Cx = 128 + 128 = 256, in_proj out 128 + 256 + 2 = 386 */
    ck_assert_uint_eq(ops->state_bytes(&o, 64, 1), (3 * 256 + 2 * 64 * 64) * 4);
    ck_assert_uint_eq(ops->state_bytes(&o, 64, 100000), (3 * 256 + 2 * 64 * 64) * 4);
    /* per token: in_proj 2·64·386 + conv 2·4·256 + out_proj 2·64·128 + 6·128; per chunk of q: the
     * group's C Bᵀ 2q²·64, per head 2q²·64 + 4q·64·64 */
    const int Q = HY_MAMBA2_CHUNK;
    double tok = 2.0 * 64 * 386 + 2.0 * 4 * 256 + 2.0 * 64 * 128 + 6.0 * 128;
    double chunk = 2.0 * Q * Q * 64 + 2 * (2.0 * Q * Q * 64 + 4.0 * Q * 64 * 64), tail = 2.0 * 100 * 64 + 2 * (2.0 * 100 * 64 + 4.0 * 10 * 64 * 64);
    ck_assert_double_eq_tol(ops->flop(&o, 64, 10), 10 * tok + tail, 1e-3);
    ck_assert_double_eq_tol(ops->flop(&o, 64, 2 * Q), 2 * Q * tok + 2 * chunk, 1e-3);
    ck_assert_double_eq_tol(hy_ssd_flop(2 * Q + 10, 2, 64, 64, 1, Q), 2 * chunk + tail, 1e-3);
    hy_param_spec s[N_P];
    ck_assert_int_eq(ops->param_specs(&o, 64, s), N_P);
    static const char *names[N_P] = {"in_proj.weight", "conv1d.weight", "conv1d.bias", "dt_bias",
                                     "A_log", "D", "norm.weight", "out_proj.weight"};
    static const int shapes[N_P][3] = {{386, 64}, {256, 1, 4}, {256}, {2}, {2}, {2}, {128}, {64, 128}};
    for (int p = 0; p < N_P; p++) {
        ck_assert_str_eq(s[p].name, names[p]);
        for (int k = 0; k < s[p].ndim; k++) ck_assert_int_eq(s[p].shape[k], shapes[p][k]);
        ck_assert_int_eq((s[p].flags & HY_PARAM_NO_DECAY) != 0, p == P_A_LOG || p == P_D || p == P_DT_BIAS);
        ck_assert_int_eq(s[p].flags & HY_PARAM_SSM_LR, 0);
    }
    ck_assert_int_eq(s[P_CONV_W].ndim, 3);
    /* ngroups 2 widens B and C: Cx = 128 + 2·2·64 */
    static const char *g2[] = {"ngroups=2", "headdim=32"};
    ck_assert_int_eq(hy_block_opts_from_pairs(ops, 64, g2, 2, &o), 0);
    ops->param_specs(&o, 64, s);
    ck_assert_int_eq(s[P_IN].shape[0], 128 + 384 + 4);
    ck_assert_int_eq(s[P_CONV_B].shape[0], 384);
}
END_TEST

/* Every invalid option is refused with the option named (from key=value pairs: the same resolve()
 * YAML, --set and checkpoints go through). */
START_TEST(options_validated) {
    const hy_block_ops *ops = hy_block_find("mamba2");
    static const struct {
        const char *pairs[2];
        int d;
        const char *want;
    } cases[] = {
        {{"headdim=48", NULL}, 64, "headdim = 48 must divide the inner width expand * d_model = 128"},
        {{"headdim=32", "ngroups=3"}, 64, "ngroups = 3 must divide the number of heads expand * d_model / headdim = 4"},
        {{"dt_min=0", NULL}, 64, "dt_min = 0 must be > 0"},
        {{"dt_min=0.01", "dt_max=0.001"}, 64, "dt_max = 0.001 must be >= dt_min = 0.01"},
        {{"A_init_min=0", NULL}, 64, "A_init_min = 0 must be > 0"},
        {{"A_init_min=4", "A_init_max=2"}, 64, "A_init_max = 2 must be >= A_init_min = 4"},
        {{"d_state=0", NULL}, 64, "d_state = 0 is out of range"},
        {{"headdim=0", NULL}, 64, "headdim = 0 is out of range"},
        {{"ngroups=0", NULL}, 64, "ngroups = 0 is out of range"},
        {{"expand=1.5", NULL}, 64, "expand must be an integer"},
        {{"headdim=64", NULL}, 16, "headdim = 64 must divide the inner width expand * d_model = 32"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        hy_opts o;
        int n = cases[k].pairs[1] ? 2 : 1;
        ck_assert_int_lt(hy_block_opts_from_pairs(ops, cases[k].d, cases[k].pairs, n, &o), 0);
        ck_assert_msg(strstr(hy_last_error(), cases[k].want), "case %zu: '%s' lacks '%s'", k, hy_last_error(),
                      cases[k].want);
    }
    /* a YAML config locates the error at the option's line and column */
    hy_run_config c;
    const char *path = "tests/configs/bad/mamba2-headdim.yaml";
    ck_assert_int_eq(hy_run_config_load(path, NULL, 0, &c), HY_ERR_CONFIG);
    ck_assert_msg(strstr(hy_last_error(), "tests/configs/bad/mamba2-headdim.yaml:7:16: model.blocks.mamba2.headdim: "
                                          "headdim = 48 must divide"),
                  "%s", hy_last_error());
    path = "tests/configs/bad/mamba2-ngroups.yaml";
    ck_assert_int_eq(hy_run_config_load(path, NULL, 0, &c), HY_ERR_CONFIG);
    ck_assert_msg(strstr(hy_last_error(), "tests/configs/bad/mamba2-ngroups.yaml:6:39: model.layers[1].mixer.ngroups: "
                                          "ngroups = 3 must divide"),
                  "%s", hy_last_error());
}
END_TEST

static Suite *make_mamba2_suite(void) {
    Suite *s = suite_create("mamba2");
    TCase *k = tcase_create("ssd");
    tcase_add_test(k, ssd_matches_recurrence);
    tcase_add_test(k, ssd_gradients);
    tcase_add_test(k, ssd_backward_chunk_lengths);
    tcase_add_test(k, ssd_strong_decays);
    tcase_add_test(k, ssd_refuses_bad_input);
    suite_add_tcase(s, k);
    TCase *b = tcase_create("block");
    tcase_add_test(b, forward_follows_spec);
    tcase_add_test(b, block_gradients);
    tcase_add_test(b, block_gradients_vs_spec);
    tcase_add_test(b, backward_accumulates);
    tcase_add_test(b, block_strong_decays);
    tcase_add_test(b, memory_without_state_history);
    tcase_add_test(b, train_bytes_with_head_blocks);
    suite_add_tcase(s, b);
    TCase *st = tcase_create("streaming");
    tcase_add_test(st, step_matches_forward);
    tcase_add_test(st, prefill_then_steps_match_forward);
    tcase_add_test(st, state_export_import);
    suite_add_tcase(s, st);
    TCase *o = tcase_create("options");
    tcase_add_test(o, init_as_upstream);
    tcase_add_test(o, accounting_and_names);
    tcase_add_test(o, options_validated);
    suite_add_tcase(s, o);
    return s;
}
HY_TEST_SUITE(make_mamba2_suite)

/* gated_deltanet: the chunked gated delta rule against the plain token-by-token recurrence in double
 * (lengths that are and are not multiples of the chunk, T = 1, a state carried in, n_v_heads > n_heads,
 * decays down to e^-1000 per step), its backward against central differences of that recurrence,
 * the single-token step, a batch against each of its sequences alone; then
 * the block against a double transcription of SPEC §2 (forward and every parameter's gradient),
 * float finite differences, strong decays through the whole block, step and prefill against the
 * parallel forward, state export/import, options and their errors, init, state_bytes and flop. */
#include "core/error.h"
#include "core/mem.h"
#include "core/rng.h"
#include "core/timer.h"
#include "core/fileio.h"
#include "experiments/config.h"
#include "layers/gated_deltanet/delta.h"
#include "tests/testutil.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- the recurrence alone ---- */

/* One problem for the kernel: q and k interleaved per row ([q | k], ld_qk = 2·H·dk), v rows padded
 * (ld_v = HV·dv + 3), β and g interleaved ([β | g], ld_bg = 2·HV), as the block lays them out. */
typedef struct {
    hy_gdn_in in;
    float *qk, *v, *bg, *S0;
    size_t rows;
} gdn_case;

/* Random inputs in the block's ranges: q, k unit vectors per head (q × dk^-0.5), β in (0, 1), g in
 * (−1.5, 0); with `strong`, every third token of every head has g ≈ −1000. */
static void case_new(gdn_case *c, int B, int T, int H, int HV, int dk, int dv, int chunk, bool strong, uint64_t seed) {
    memset(c, 0, sizeof *c);
    c->rows = (size_t)B * T;
    int ldqk = 2 * H * dk, ldv = HV * dv + 3, ldbg = 2 * HV;
    c->qk = hy_malloc(c->rows * ldqk * 4 + 4), c->v = hy_malloc(c->rows * ldv * 4 + 4);
    c->bg = hy_malloc(c->rows * ldbg * 4 + 4), c->S0 = hy_malloc((size_t)B * HV * dv * dk * 4);
    tu_fill_normal(c->qk, c->rows * ldqk, 1, seed);
    tu_fill_normal(c->v, c->rows * ldv, 1, seed + 1);
    tu_fill_normal(c->bg, c->rows * ldbg, 1, seed + 2);
    tu_fill_normal(c->S0, (size_t)B * HV * dv * dk, 0.3f, seed + 3);
    for (size_t r = 0; r < c->rows; r++) {
        for (int h = 0; h < 2 * H; h++) {
            float *x = c->qk + r * ldqk + (size_t)h * dk, s = 0;
            for (int i = 0; i < dk; i++) s += x[i] * x[i];
            float f = 1.0f / sqrtf(s) * (h < H ? 1.0f / sqrtf((float)dk) : 1.0f);
            for (int i = 0; i < dk; i++) x[i] *= f;
        }
        for (int j = 0; j < HV; j++) {
            float *b = c->bg + r * ldbg + j, *g = c->bg + r * ldbg + HV + j;
            *b = 1.0f / (1.0f + expf(-*b));
            *g = -1.5f / (1.0f + expf(-*g));
            if (strong && (r + (size_t)j) % 3 == 1) *g = -1000.0f + *g;
        }
    }
    c->in = (hy_gdn_in){B, T, H, HV, dk, dv, chunk, c->qk, c->qk + (size_t)H * dk, c->v, c->bg, c->bg + HV, ldqk, ldv, ldbg};
}

static void case_free(gdn_case *c) { hy_free(c->qk), hy_free(c->v), hy_free(c->bg), hy_free(c->S0); }

/* The recurrence as SPEC §2 writes it, in double: per (b, j) S ← α S; S += β (v − S k) kᵀ; o = S q.
 * Inputs are read from the case (as doubles) with one entry moved by delta: array `which` (0 q,
 * 1 k, 2 v, 3 β, 4 g; −1 none) at offset idx of its buffer. S0 (NULL = zeros); o (rows × HV·dv)
 * and S_out (B, HV, dv, dk) optional. Returns Σ o·R when R is given. */
static double ref_recurrence(const gdn_case *c, const float *S0, int which, size_t idx, double delta, double *o,
                             double *S_out, const float *R) {
    const hy_gdn_in *in = &c->in;
    int dk = in->dk, dv = in->dv, G = in->HV / in->H;
    double *S = malloc(sizeof(double) * dv * dk), *sk = malloc(sizeof(double) * dv), loss = 0;
#define QK(off) ((double)c->qk[off] + (((which == 0 || which == 1) && (off) == idx) ? delta : 0.0))
#define VV(off) ((double)c->v[off] + (which == 2 && (off) == idx ? delta : 0.0))
#define BG(off) ((double)c->bg[off] + ((which == 3 || which == 4) && (off) == idx ? delta : 0.0))
    for (int b = 0; b < in->B; b++)
        for (int j = 0; j < in->HV; j++) {
            int i = j / G;
            for (int x = 0; x < dv * dk; x++) S[x] = S0 ? S0[((size_t)b * in->HV + j) * dv * dk + x] : 0.0;
            for (int t = 0; t < in->T; t++) {
                size_t r = (size_t)b * in->T + t, oq = r * in->ld_qk + (size_t)i * dk, ok = oq + (size_t)in->H * dk;
                double be = BG(r * in->ld_bg + j), a = exp(BG(r * in->ld_bg + in->HV + j));
                for (int y = 0; y < dv; y++) {
                    sk[y] = 0;
                    for (int x = 0; x < dk; x++) sk[y] += a * S[y * dk + x] * QK(ok + x);
                }
                for (int y = 0; y < dv; y++) {
                    double u = be * (VV(r * in->ld_v + (size_t)j * dv + y) - sk[y]), acc = 0;
                    for (int x = 0; x < dk; x++) {
                        S[y * dk + x] = a * S[y * dk + x] + u * QK(ok + x);
                        acc += S[y * dk + x] * QK(oq + x);
                    }
                    size_t oo = r * in->HV * dv + (size_t)j * dv + y;
                    if (o) o[oo] = acc;
                    if (R) loss += acc * R[oo];
                }
            }
            if (S_out) memcpy(S_out + ((size_t)b * in->HV + j) * dv * dk, S, sizeof(double) * dv * dk);
        }
#undef QK
#undef VV
#undef BG
    free(S), free(sk);
    return loss;
}

/* max |a − ref| / max(max |ref|, floor), a float against a double array (NaN -> inf). */
static double err_d(const float *a, const double *ref, size_t n, double floor) {
    double e = 0, m = floor;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        e = isnan(d) ? INFINITY : fmax(e, d);
        m = fmax(m, fabs(ref[i]));
    }
    return e / m;
}

/* The chunked forward of one case against the recurrence: o and the final state, from zeros or S0. */
static void forward_case(int B, int T, int H, int HV, int dk, int dv, int chunk, bool with_s0, bool strong,
                         uint64_t seed) {
    gdn_case c;
    case_new(&c, B, T, H, HV, dk, dv, chunk, strong, seed);
    size_t no = c.rows * HV * dv, ns = (size_t)B * HV * dv * dk;
    float *o = hy_malloc(no * 4), *S = hy_malloc(ns * 4);
    double *ro = malloc(no * sizeof(double)), *rS = malloc(ns * sizeof(double));
    memcpy(S, c.S0, ns * 4);
    hy_buf ws = {0};
    ck_assert_msg(hy_gdn_forward(&c.in, with_s0 ? S : NULL, o, HV * dv, NULL, &ws) == 0, "%s", hy_last_error());
    ref_recurrence(&c, with_s0 ? c.S0 : NULL, -1, 0, 0, ro, rS, NULL);
    double e = err_d(o, ro, no, 1e-3);
    ck_assert_msg(e < 2e-5, "B %d T %d H %d HV %d dk %d dv %d chunk %d%s%s: o vs recurrence %g", B, T, H, HV, dk, dv,
                  chunk, with_s0 ? " state in" : "", strong ? " strong decays" : "", e);
    if (with_s0) {
        e = err_d(S, rS, ns, 1e-3);
        ck_assert_msg(e < 2e-5, "T %d chunk %d: final state vs recurrence %g", T, chunk, e);
    }
    hy_buf_free(&ws);
    hy_free(o), hy_free(S), free(ro), free(rS);
    case_free(&c);
}

/* Lengths that are and are not multiples of the chunk, T = 1, a state carried in, HV > H, the
 * block's chunk length and short ones (many chunks), odd head sizes. */
START_TEST(chunked_matches_recurrence) {
    const int L = HY_GDN_CHUNK;
    forward_case(2, L, 2, 2, 16, 32, L, false, false, 1);         /* exactly one chunk */
    forward_case(2, 2 * L + 5, 2, 2, 16, 32, L, false, false, 2); /* two and a bit */
    forward_case(1, 1, 2, 2, 16, 32, L, false, false, 3);         /* T = 1 */
    forward_case(1, 1, 2, 2, 16, 32, L, true, false, 4);          /* T = 1 from a state */
    forward_case(2, L + 7, 1, 3, 8, 12, L, true, false, 5);       /* a state carried in; HV = 3 H */
    forward_case(2, 45, 2, 4, 6, 10, 16, true, false, 6);         /* short chunks, 45 = 2·16 + 13 */
    forward_case(1, 48, 2, 4, 6, 10, 16, false, false, 7);        /* a multiple of the short chunk */
    forward_case(1, 37, 3, 3, 5, 7, 1, true, false, 8);           /* chunk 1: the recurrence itself */
    forward_case(2, 2 * L + 3, 2, 4, 16, 32, L, true, true, 9);   /* decays near e^-1000 per step */
    forward_case(1, 50, 1, 2, 8, 16, 16, true, true, 10);
}
END_TEST

/* The single-token step against the recurrence, token after token from a state. */
START_TEST(step_matches_recurrence) {
    const int B = 2, T = 9, H = 2, HV = 4, dk = 8, dv = 12;
    gdn_case c;
    case_new(&c, B, T, H, HV, dk, dv, 1, true, 20);
    size_t no = c.rows * HV * dv, ns = (size_t)B * HV * dv * dk;
    double *ro = malloc(no * sizeof(double)), *rS = malloc(ns * sizeof(double));
    ref_recurrence(&c, c.S0, -1, 0, 0, ro, rS, NULL);
    float *S = hy_malloc(ns * 4), *o = hy_malloc(no * 4), *ot = hy_malloc((size_t)B * HV * dv * 4);
    memcpy(S, c.S0, ns * 4);
    /* one token for both sequences: rows b·T + t gathered into a B-row problem */
    int ldqk = c.in.ld_qk, ldv = c.in.ld_v, ldbg = c.in.ld_bg;
    float *qk = hy_malloc((size_t)B * ldqk * 4), *v = hy_malloc((size_t)B * ldv * 4), *bg = hy_malloc((size_t)B * ldbg * 4);
    for (int t = 0; t < T; t++) {
        for (int b = 0; b < B; b++) {
            size_t r = (size_t)b * T + t;
            memcpy(qk + (size_t)b * ldqk, c.qk + r * ldqk, (size_t)ldqk * 4);
            memcpy(v + (size_t)b * ldv, c.v + r * ldv, (size_t)ldv * 4);
            memcpy(bg + (size_t)b * ldbg, c.bg + r * ldbg, (size_t)ldbg * 4);
        }
        hy_gdn_in in = c.in;
        in.T = 1, in.q = qk, in.k = qk + H * dk, in.v = v, in.beta = bg, in.g = bg + HV;
        ck_assert_int_eq(hy_gdn_step(&in, S, ot, HV * dv), 0);
        for (int b = 0; b < B; b++) memcpy(o + ((size_t)b * T + t) * HV * dv, ot + (size_t)b * HV * dv, (size_t)HV * dv * 4);
    }
    double e = err_d(o, ro, no, 1e-3), es = err_d(S, rS, ns, 1e-3);
    ck_assert_msg(e < 1e-5 && es < 1e-5, "step vs recurrence: o %g, state %g", e, es);
    hy_gdn_in in = c.in;
    ck_assert_int_lt(hy_gdn_step(&in, S, ot, HV * dv), 0);   /* T = 9: refused */
    hy_free(qk), hy_free(v), hy_free(bg), hy_free(S), hy_free(o), hy_free(ot);
    free(ro), free(rS);
    case_free(&c);
}
END_TEST

/* Backward against central differences of the double recurrence for every input (q, k, v, β, g),
 * 10 entries each, half of them from the first chunk (whose gradient crosses every later chunk). */
static void backward_case(int B, int T, int H, int HV, int dk, int dv, int chunk, bool with_s0, bool strong,
                          uint64_t seed) {
    gdn_case c;
    case_new(&c, B, T, H, HV, dk, dv, chunk, strong, seed);
    const hy_gdn_in *in = &c.in;
    int nck = hy_gdn_nckpt(T, chunk);
    size_t no = c.rows * HV * dv, ns = (size_t)B * HV * dv * dk;
    float *o = hy_malloc(no * 4), *R = hy_malloc(no * 4), *S = hy_malloc(ns * 4);
    float *u = hy_malloc(no * 4), *ck = hy_malloc((size_t)B * HV * nck * dv * dk * 4);
    float *dqk = hy_malloc(c.rows * in->ld_qk * 4), *dvv = hy_malloc(c.rows * in->ld_v * 4),
          *dbg = hy_malloc(c.rows * in->ld_bg * 4);
    tu_fill_normal(R, no, 1, seed + 50);
    memcpy(S, c.S0, ns * 4);
    hy_gdn_keep keep = {u, ck};
    hy_buf ws = {0};
    ck_assert_int_eq(hy_gdn_forward(in, with_s0 ? S : NULL, o, HV * dv, &keep, &ws), 0);
    ck_assert_msg(hy_gdn_backward(in, &keep, R, HV * dv, dqk, dqk + (size_t)H * dk, dvv, dbg, dbg + HV, &ws) == 0, "%s",
                  hy_last_error());
    hy_rng rng;
    hy_rng_seed(&rng, seed + 60);
    const char *names[] = {"q", "k", "v", "beta", "g"};
    for (int p = 0; p < 5; p++) {
        double worst = 0, scale = 1e-3;
        for (size_t r = 0; r < c.rows; r++)   /* the scale of this gradient */
            for (int x = 0; x < (p < 2 ? H * dk : p == 2 ? HV * dv : HV); x++) {
                size_t off = p < 2 ? r * in->ld_qk + (size_t)p * H * dk + x : p == 2 ? r * in->ld_v + x : r * in->ld_bg + (size_t)(p - 3) * HV + x;
                const float *gbuf = p < 2 ? dqk : p == 2 ? dvv : dbg;
                ck_assert_msg(isfinite(gbuf[off]), "d%s[%zu] not finite", names[p], off);
                scale = fmax(scale, fabs(gbuf[off]));
            }
        for (int s = 0; s < 10; s++) {
            size_t r = s % 2 ? hy_rng_below(&rng, c.rows) : hy_rng_below(&rng, (size_t)(T < chunk ? T : chunk));
            int width = p < 2 ? H * dk : p == 2 ? HV * dv : HV, x = (int)hy_rng_below(&rng, (size_t)width);
            size_t off = p < 2 ? r * in->ld_qk + (size_t)p * H * dk + x : p == 2 ? r * in->ld_v + x : r * in->ld_bg + (size_t)(p - 3) * HV + x;
            const float *gbuf = p < 2 ? dqk : p == 2 ? dvv : dbg;
            if (p == 4 && strong && c.bg[off] < -500) continue;   /* a step of 1e-4 on −1000: no signal either way */
            double h = 1e-4;
            double up = ref_recurrence(&c, with_s0 ? c.S0 : NULL, p, off, h, NULL, NULL, R);
            double down = ref_recurrence(&c, with_s0 ? c.S0 : NULL, p, off, -h, NULL, NULL, R);
            double num = (up - down) / (2 * h);
            worst = fmax(worst, fabs(num - gbuf[off]));
            ck_assert_msg(fabs(num - gbuf[off]) < 1e-4 * scale + 1e-6,
                          "T %d chunk %d HV %d%s%s: d%s at row %zu col %d: analytic %g, numeric %g (scale %g)", T, chunk,
                          HV, with_s0 ? " state in" : "", strong ? " strong decays" : "", names[p], r, x, gbuf[off], num,
                          scale);
        }
    }
    hy_buf_free(&ws);
    hy_free(o), hy_free(R), hy_free(S), hy_free(u), hy_free(ck), hy_free(dqk), hy_free(dvv), hy_free(dbg);
    case_free(&c);
}

START_TEST(backward_finite_differences) {
    const int L = HY_GDN_CHUNK;
    backward_case(2, 2 * L + 5, 2, 2, 8, 12, L, false, false, 30);   /* the block's chunk, two and a bit */
    backward_case(1, 45, 2, 4, 6, 10, 16, false, false, 31);         /* short chunks, HV = 2 H */
    backward_case(2, 33, 1, 3, 5, 7, 8, true, false, 32);            /* a state carried in; HV = 3 H */
    backward_case(1, 32, 2, 2, 8, 8, 16, false, false, 33);          /* an exact multiple */
    backward_case(1, 1, 2, 2, 8, 8, 16, true, false, 34);            /* T = 1 */
    backward_case(1, 40, 2, 4, 8, 8, 16, true, true, 35);            /* decays near e^-1000 */
    backward_case(1, 29, 2, 2, 8, 8, 16, true, false, 36);           /* the last chunk odd (its state not kept) and short */
}
END_TEST

/* Strong decays at the block's sizes: forward and backward finite, every gradient. */
START_TEST(strong_decays_stay_finite) {
    const int B = 1, T = 2 * HY_GDN_CHUNK + 9, H = 2, HV = 2, dk = 64, dv = 128, L = HY_GDN_CHUNK;
    gdn_case c;
    case_new(&c, B, T, H, HV, dk, dv, L, true, 40);
    for (size_t r = 0; r < c.rows; r++)   /* every step of one head at −1000, the other alternating */
        for (int j = 0; j < HV; j++) c.bg[r * c.in.ld_bg + HV + j] = j == 0 || r % 2 ? -1000.0f : -1e-3f;
    int nck = hy_gdn_nckpt(T, L);
    size_t no = c.rows * HV * dv;
    float *o = hy_malloc(no * 4), *u = hy_malloc(no * 4), *ck = hy_malloc((size_t)B * HV * nck * dv * dk * 4),
          *R = hy_malloc(no * 4);
    float *dqk = hy_malloc(c.rows * c.in.ld_qk * 4), *dvv = hy_malloc(c.rows * c.in.ld_v * 4),
          *dbg = hy_malloc(c.rows * c.in.ld_bg * 4);
    tu_fill_normal(R, no, 1, 41);
    hy_gdn_keep keep = {u, ck};
    hy_buf ws = {0};
    ck_assert_int_eq(hy_gdn_forward(&c.in, NULL, o, HV * dv, &keep, &ws), 0);
    ck_assert_int_eq(hy_gdn_backward(&c.in, &keep, R, HV * dv, dqk, dqk + H * dk, dvv, dbg, dbg + HV, &ws), 0);
    for (size_t i = 0; i < no; i++) ck_assert_msg(isfinite(o[i]), "o[%zu] = %g", i, o[i]);
    for (size_t r = 0; r < c.rows; r++) {
        for (int x = 0; x < 2 * H * dk; x++) ck_assert(isfinite(dqk[r * c.in.ld_qk + x]));
        for (int x = 0; x < HV * dv; x++) ck_assert(isfinite(dvv[r * c.in.ld_v + x]));
        for (int x = 0; x < 2 * HV; x++) ck_assert(isfinite(dbg[r * c.in.ld_bg + x]));
    }
    /* and the outputs are the recurrence's: head 0 forgets everything at every step */
    double *ro = malloc(no * sizeof(double));
    ref_recurrence(&c, NULL, -1, 0, 0, ro, NULL, NULL);
    ck_assert_msg(err_d(o, ro, no, 1e-3) < 2e-5, "strong decays: o vs recurrence %g", err_d(o, ro, no, 1e-3));
    free(ro);
    hy_buf_free(&ws);
    hy_free(o), hy_free(u), hy_free(ck), hy_free(R), hy_free(dqk), hy_free(dvv), hy_free(dbg);
    case_free(&c);
}
END_TEST

/* hy_gdn_flop against the per-token formula for whole chunks, and the kernel's size checks. */
START_TEST(flop_and_size_checks) {
    double L = 64, dk = 64, dv = 128, T = 4096;
    double per_chunk = L * (L + 1) * dk + L * (L - 1) * dk + (L - 1) * L * (L + 1) / 3 + L * (L - 1) * dv +
                       6 * L * dk * dv + L * (L + 1) * dv;
    ck_assert_double_eq_tol(hy_gdn_flop(4096, 64, 128, 64), per_chunk * T / L, 1);
    ck_assert_double_eq_tol(hy_gdn_flop(1, 64, 128, 64), 2 * 64 + 6.0 * 64 * 128 + 2 * 128, 1e-9);
    ck_assert_double_eq_tol(hy_gdn_flop(100, 8, 8, 64), hy_gdn_flop(64, 8, 8, 64) + hy_gdn_flop(36, 8, 8, 64), 1e-6);
    gdn_case c;
    case_new(&c, 1, 5, 2, 4, 4, 4, 4, false, 50);
    hy_buf ws = {0};
    float o[5 * 16];
    c.in.HV = 3;   /* not a multiple of H */
    ck_assert_int_lt(hy_gdn_forward(&c.in, NULL, o, 16, NULL, &ws), 0);
    ck_assert_msg(strstr(hy_last_error(), "HV 3") != NULL, "%s", hy_last_error());
    c.in.HV = 4, c.in.chunk = 0;
    ck_assert_int_lt(hy_gdn_forward(&c.in, NULL, o, 16, NULL, &ws), 0);
    hy_buf_free(&ws);
    case_free(&c);
}
END_TEST

/* A batch (from a state, with a shorter last chunk) against each of its sequences on its own, bit for
 * bit in o, the final state and the kept U and checkpoints, and the batch's backward from that keep
 * matches the per-sequence one: the heads of a batch are split over the threads differently, and
 * each sequence's rows, kept blocks and state sit at their own offsets. */
START_TEST(batch_matches_each_sequence) {
    const int T = 2 * HY_GDN_CHUNK + 5, H = 2, HV = 2, dk = 16, dv = 32, L = HY_GDN_CHUNK, nckpt = hy_gdn_nckpt(T, L);
    const size_t one = (size_t)T * HV * dv, per_s = (size_t)HV * dv * dk;
    const int B = 5;
    gdn_case c;
    case_new(&c, B, T, H, HV, dk, dv, L, false, 70);
    const size_t nu = (size_t)B * one, nck = (size_t)B * HV * nckpt * dv * dk;
    float *o[2], *S[2], *u[2], *ck[2], *dqk[2], *dvv[2], *dbg[2], *R = hy_malloc(nu * 4);
    tu_fill_normal(R, nu, 1, 71);
    for (int a = 0; a < 2; a++) {
        o[a] = hy_malloc(nu * 4), S[a] = hy_malloc((size_t)B * per_s * 4), u[a] = hy_malloc(nu * 4);
        ck[a] = hy_malloc(nck * 4);
        dqk[a] = hy_malloc(c.rows * c.in.ld_qk * 4), dvv[a] = hy_malloc(c.rows * c.in.ld_v * 4);
        dbg[a] = hy_malloc(c.rows * c.in.ld_bg * 4);
        memcpy(S[a], c.S0, (size_t)B * per_s * 4);
    }
    hy_buf ws = {0};
    hy_gdn_keep keep0 = {u[0], ck[0]};
    ck_assert_int_eq(hy_gdn_forward(&c.in, S[0], o[0], HV * dv, &keep0, &ws), 0);
    ck_assert_int_eq(hy_gdn_backward(&c.in, &keep0, R, HV * dv, dqk[0], dqk[0] + H * dk, dvv[0], dbg[0], dbg[0] + HV, &ws), 0);
    for (int b = 0; b < B; b++) {   /* sequence b alone: its rows, state and kept blocks */
        const size_t r0 = (size_t)b * T;
        hy_gdn_in in1 = c.in;
        in1.B = 1, in1.q += r0 * c.in.ld_qk, in1.k += r0 * c.in.ld_qk, in1.v += r0 * c.in.ld_v;
        in1.beta += r0 * c.in.ld_bg, in1.g += r0 * c.in.ld_bg;
        hy_gdn_keep keep1 = {u[1] + b * one, ck[1] + (size_t)b * HV * nckpt * dv * dk};
        ck_assert_int_eq(hy_gdn_forward(&in1, S[1] + b * per_s, o[1] + b * one, HV * dv, &keep1, &ws), 0);
        ck_assert_int_eq(hy_gdn_backward(&in1, &keep1, R + b * one, HV * dv, dqk[1] + r0 * c.in.ld_qk,
                                         dqk[1] + r0 * c.in.ld_qk + H * dk, dvv[1] + r0 * c.in.ld_v, dbg[1] + r0 * c.in.ld_bg,
                                         dbg[1] + r0 * c.in.ld_bg + HV, &ws), 0);
    }
    ck_assert_msg(memcmp(o[0], o[1], nu * 4) == 0, "o: batch differs from each sequence");
    ck_assert_msg(memcmp(S[0], S[1], (size_t)B * per_s * 4) == 0, "final state: batch differs from each sequence");
    ck_assert_msg(memcmp(u[0], u[1], nu * 4) == 0, "kept U: batch differs from each sequence");
    ck_assert_msg(memcmp(ck[0], ck[1], nck * 4) == 0, "checkpoints: batch differ from each sequence");
    for (size_t r = 0; r < c.rows; r++) {
        ck_assert(memcmp(dqk[0] + r * c.in.ld_qk, dqk[1] + r * c.in.ld_qk, (size_t)2 * H * dk * 4) == 0);
        ck_assert(memcmp(dvv[0] + r * c.in.ld_v, dvv[1] + r * c.in.ld_v, (size_t)HV * dv * 4) == 0);
        ck_assert(memcmp(dbg[0] + r * c.in.ld_bg, dbg[1] + r * c.in.ld_bg, (size_t)2 * HV * 4) == 0);
    }
    hy_buf_free(&ws);
    for (int a = 0; a < 2; a++)
        hy_free(o[a]), hy_free(S[a]), hy_free(u[a]), hy_free(ck[a]), hy_free(dqk[a]), hy_free(dvv[a]),
            hy_free(dbg[a]);
    hy_free(R);
    case_free(&c);
}
END_TEST

/* ---------------------------------------------------------------- the block ---- */

enum { P_Q, P_K, P_V, P_G, P_A, P_B, P_QCONV, P_KCONV, P_VCONV, P_A_LOG, P_DT_BIAS, P_ONORM, P_O, N_P };

static size_t numel(const hy_layer *L, int p) {
    hy_param_spec s[N_P];
    L->ops->param_specs(&L->opts, L->d_model, s);
    size_t n = 1;
    for (int k = 0; k < s[p].ndim; k++) n *= (size_t)s[p].shape[k];
    return n;
}

static int opt(const hy_layer *L, const char *key) { return (int)L->opts.v[hy_opt_index(L->ops, key)]; }

/* A layer whose weights are moved off their init: o_norm.weight non-uniform, decays in a range where
 * they matter (α ≈ 0.5-0.99), the output projection at full scale. */
static void make_layer(hy_layer *L, int d, const char *const *o, int n_o, uint64_t seed) {
    tu_layer(L, "gated_deltanet", d, o, n_o, seed);
    hy_rng r;
    hy_rng_seed(&r, seed + 100);
    for (size_t i = 0; i < numel(L, P_ONORM); i++) L->p[P_ONORM][i] = 1.0f + 0.3f * hy_rng_normal(&r);
    for (size_t i = 0; i < numel(L, P_A_LOG); i++) L->p[P_A_LOG][i] = -1.0f + 0.5f * hy_rng_normal(&r);
    for (size_t i = 0; i < numel(L, P_DT_BIAS); i++) L->p[P_DT_BIAS][i] = 0.3f * hy_rng_normal(&r);
    for (size_t i = 0; i < numel(L, P_O); i++) L->p[P_O][i] *= 2.0f * hy_stack_depth(L);
    for (int p = P_QCONV; p <= P_VCONV; p++)   /* a stronger current tap: q, k not all alike */
        for (size_t c = 0; c < numel(L, p); c += (size_t)opt(L, "conv_size")) L->p[p][c + (size_t)opt(L, "conv_size") - 1] += 0.8f;
}

static double silu_d(double x) { return x / (1 + exp(-x)); }

/* SPEC §2 in double, straight loops: projections, convs, silu, L2 norms, β, α, the recurrence per
 * value head, o_norm, gate, o_proj. */
static void spec_forward(hy_layer *L, const float *u, double *out, int B, int T) {
    const int d = L->d_model, H = opt(L, "n_heads"), HV = opt(L, "n_v_heads"), dk = opt(L, "head_k_dim"),
              K = opt(L, "conv_size"), dv = (int)numel(L, P_ONORM), G = HV / H, nqk = H * dk, nv = HV * dv;
    float **p = L->p;
    const int Cx = 2 * nqk + nv;
    double *pj = malloc(sizeof(double) * T * (Cx + nv + 2 * HV)), *xc = malloc(sizeof(double) * T * Cx),
           *S = malloc(sizeof(double) * dv * dk), *o = malloc(sizeof(double) * nv);
    const int W = Cx + nv + 2 * HV;
    for (int b = 0; b < B; b++) {
        const float *ub = u + (size_t)b * T * d;
        const float *Ws[6] = {p[P_Q], p[P_K], p[P_V], p[P_G], p[P_A], p[P_B]};
        const int ns[6] = {nqk, nqk, nv, nv, HV, HV};
        for (int t = 0; t < T; t++)
            for (int m = 0, col = 0; m < 6; col += ns[m], m++)
                for (int r = 0; r < ns[m]; r++) {
                    double a = 0;
                    for (int i = 0; i < d; i++) a += (double)Ws[m][(size_t)r * d + i] * ub[(size_t)t * d + i];
                    pj[(size_t)t * W + col + r] = a;
                }
        for (int t = 0; t < T; t++)
            for (int c = 0; c < Cx; c++) {
                const float *w = c < nqk ? p[P_QCONV] + (size_t)c * K : c < 2 * nqk ? p[P_KCONV] + (size_t)(c - nqk) * K
                                                                                : p[P_VCONV] + (size_t)(c - 2 * nqk) * K;
                double a = 0;
                for (int k = 0; k < K; k++) {
                    int j = t - K + 1 + k;
                    if (j >= 0) a += (double)w[k] * pj[(size_t)j * W + c];
                }
                xc[(size_t)t * Cx + c] = silu_d(a);
            }
        for (int t = 0; t < T; t++)
            for (int h = 0; h < 2 * H; h++) {
                double *x = xc + (size_t)t * Cx + (size_t)h * dk, ss = 0;
                for (int c = 0; c < dk; c++) ss += x[c] * x[c];
                double f = 1 / sqrt(ss + 1e-6) * (h < H ? 1 / sqrt((double)dk) : 1);
                for (int c = 0; c < dk; c++) x[c] *= f;
            }
        for (int j = 0; j < HV; j++) {
            int i = j / G;
            memset(S, 0, sizeof(double) * dv * dk);
            for (int t = 0; t < T; t++) {
                const double *q = xc + (size_t)t * Cx + (size_t)i * dk, *k = q + nqk, *v = xc + (size_t)t * Cx + 2 * nqk + (size_t)j * dv;
                double araw = pj[(size_t)t * W + Cx + nv + j] + p[P_DT_BIAS][j];
                double sp = araw > 20 ? araw : log1p(exp(araw));
                double alpha = exp(-exp((double)p[P_A_LOG][j]) * sp), beta = 1 / (1 + exp(-pj[(size_t)t * W + Cx + nv + HV + j]));
                for (int y = 0; y < dv; y++)
                    for (int x = 0; x < dk; x++) S[y * dk + x] *= alpha;
                for (int y = 0; y < dv; y++) {
                    double sk = 0;
                    for (int x = 0; x < dk; x++) sk += S[y * dk + x] * k[x];
                    double uu = beta * (v[y] - sk);
                    for (int x = 0; x < dk; x++) S[y * dk + x] += uu * k[x];
                }
                double ms = 0;
                for (int y = 0; y < dv; y++) {
                    double a = 0;
                    for (int x = 0; x < dk; x++) a += S[y * dk + x] * q[x];
                    o[y] = a, ms += a * a;
                }
                double rs = 1 / sqrt(ms / dv + 1e-5);
                for (int y = 0; y < dv; y++)   /* into the pj row's v columns, no longer needed there */
                    pj[(size_t)t * W + 2 * nqk + (size_t)j * dv + y] =
                        o[y] * rs * p[P_ONORM][y] * silu_d(pj[(size_t)t * W + Cx + (size_t)j * dv + y]);
            }
        }
        for (int t = 0; t < T; t++)
            for (int r = 0; r < d; r++) {
                double a = 0;
                for (int c = 0; c < nv; c++) a += (double)p[P_O][(size_t)r * nv + c] * pj[(size_t)t * W + 2 * nqk + c];
                out[((size_t)b * T + t) * d + r] = a;
            }
    }
    free(pj), free(xc), free(S), free(o);
}

static double spec_loss(hy_layer *L, const float *u, const float *R, int B, int T, double *buf) {
    spec_forward(L, u, buf, B, T);
    double s = 0;
    for (size_t i = 0; i < (size_t)B * T * L->d_model; i++) s += buf[i] * R[i];
    return s;
}

/* The block's forward against the SPEC transcription. */
static void check_forward(int d, const char *const *o, int n_o, int B, int T, uint64_t seed) {
    hy_layer L;
    make_layer(&L, d, o, n_o, seed);
    size_t n = (size_t)B * T * d;
    float *x = hy_malloc(n * 4), *y = hy_malloc(n * 4);
    double *ref = malloc(n * sizeof(double));
    tu_fill_normal(x, n, 1, seed + 1);
    ck_assert_msg(L.ops->forward(&L, x, y, B, T) == 0, "%s", hy_last_error());
    spec_forward(&L, x, ref, B, T);
    double e = err_d(y, ref, n, 1e-3);
    ck_assert_msg(e < 3e-5, "d %d T %d %s: forward vs SPEC transcription %g", d, T, n_o ? o[0] : "", e);
    hy_free(x), hy_free(y), free(ref);
    hy_layer_standalone_free(&L);
}

static const char *const small_o[] = {"n_heads=2", "n_v_heads=4", "head_k_dim=8", "expand_v=1.5", "conv_size=3"};

START_TEST(forward_follows_spec) {
    check_forward(24, small_o, 5, 2, HY_GDN_CHUNK + 6, 1);   /* HV = 2 H, dv = 12, one chunk and a bit */
    static const char *o2[] = {"head_k_dim=16"};            /* auto: H = HV = 3·32/64 = 1, dv = 32, K = 4 */
    check_forward(32, o2, 1, 1, 2 * HY_GDN_CHUNK + 1, 2);
    static const char *o3[] = {"n_heads=3", "head_k_dim=6", "expand_v=1", "conv_size=1"};   /* no history */
    check_forward(20, o3, 4, 2, 9, 3);
}
END_TEST

/* The backward at T = 70 (a full chunk and part of one) against central differences of the double
 * SPEC transcription: every parameter tensor and the input, 5 entries each. */
static void check_gradients(int d, const char *const *o, int n_o, int B, int T, uint64_t seed) {
    hy_layer L;
    make_layer(&L, d, o, n_o, seed);
    size_t n = (size_t)B * T * d;
    float *x = hy_malloc(n * 4), *y = hy_malloc(n * 4), *R = hy_malloc(n * 4), *dx = hy_malloc(n * 4);
    double *buf = malloc(sizeof(double) * n);
    tu_fill_normal(x, n, 1, seed + 1), tu_fill_normal(R, n, 1, seed + 2);
    for (int p = 0; p < N_P; p++) memset(L.g[p], 0, numel(&L, p) * 4);
    L.keep_for_backward = true;
    ck_assert_int_eq(L.ops->forward(&L, x, y, B, T), 0);
    ck_assert_msg(L.ops->backward(&L, R, dx, B, T) == 0, "%s", hy_last_error());
    hy_param_spec specs[N_P];
    L.ops->param_specs(&L.opts, d, specs);
    hy_rng rng;
    hy_rng_seed(&rng, seed + 3);
    for (int p = -1; p < N_P; p++) {
        float *v = p < 0 ? x : L.p[p];
        const float *an = p < 0 ? dx : L.g[p];
        size_t len = p < 0 ? n : numel(&L, p);
        double scale = 1e-3, worst = 0;
        for (size_t i = 0; i < len; i++) scale = fmax(scale, fabs(an[i]));
        for (int k = 0; k < 5; k++) {
            size_t i = hy_rng_below(&rng, len);
            float keep = v[i], h = 1e-3f * fmaxf(1.0f, fabsf(keep));
            v[i] = keep + h;
            double hu = (double)v[i] - keep, up = spec_loss(&L, x, R, B, T, buf);
            v[i] = keep - h;
            double hd = keep - (double)v[i], down = spec_loss(&L, x, R, B, T, buf);
            v[i] = keep;
            worst = fmax(worst, fabs((up - down) / (hu + hd) - an[i]));
        }
        ck_assert_msg(worst / scale < 2e-4, "d %d: %s: gradient error %g against the SPEC transcription (scale %g)", d,
                      p < 0 ? "input" : specs[p].name, worst / scale, scale);
    }
    hy_free(x), hy_free(y), hy_free(R), hy_free(dx), free(buf);
    hy_layer_standalone_free(&L);
}

START_TEST(gradients_vs_spec) {
    check_gradients(24, small_o, 5, 2, HY_GDN_CHUNK + 6, 11);
    static const char *o3[] = {"n_heads=3", "n_v_heads=3", "head_k_dim=6", "expand_v=1", "conv_size=1"};
    check_gradients(20, o3, 5, 1, 9, 12);
}
END_TEST

/* tu_grad_check (float finite differences of the block itself), and accumulation: a second
 * backward adds the same parameter gradients again and overwrites dx. */
START_TEST(float_gradients_and_accumulation) {
    hy_layer L;
    make_layer(&L, 16, small_o, 5, 21);
    double e = tu_grad_check(&L, 2, 11, 1e-2f, 6, 22);
    ck_assert_msg(e < 2e-2, "float finite differences: %g", e);
    enum { B = 1, T = 13, D = 16 };
    float x[B * T * D], y[B * T * D], dy[B * T * D], dx1[B * T * D], dx2[B * T * D];
    tu_fill_normal(x, B * T * D, 1, 1), tu_fill_normal(dy, B * T * D, 1, 2);
    for (int p = 0; p < N_P; p++) memset(L.g[p], 0, numel(&L, p) * 4);
    L.keep_for_backward = true;
    ck_assert_int_eq(L.ops->forward(&L, x, y, B, T), 0);
    ck_assert_int_eq(L.ops->backward(&L, dy, dx1, B, T), 0);
    float *once[N_P];
    for (int p = 0; p < N_P; p++) once[p] = hy_malloc(numel(&L, p) * 4), memcpy(once[p], L.g[p], numel(&L, p) * 4);
    memset(dx2, 0x7f, sizeof dx2);
    ck_assert_int_eq(L.ops->backward(&L, dy, dx2, B, T), 0);
    ck_assert(tu_rel_err(dx1, dx2, B * T * D, 1e-6) == 0);
    for (int p = 0; p < N_P; p++) {
        for (size_t i = 0; i < numel(&L, p); i++) once[p][i] *= 2;
        ck_assert_msg(tu_rel_err(L.g[p], once[p], numel(&L, p), 1e-6) < 1e-6, "param %d not accumulated", p);
        hy_free(once[p]);
    }
    L.keep_for_backward = false;
    ck_assert_int_eq(L.ops->forward(&L, x, y, B, T), 0);
    ck_assert_int_lt(L.ops->backward(&L, dy, dx1, B, T), 0);   /* nothing kept */
    hy_layer_standalone_free(&L);
}
END_TEST

/* Per-step log-decay near −1000 through the whole block (A_log = log 1000 − log softplus(dt_bias),
 * a ≈ 0): forward, backward and every gradient finite, and the forward still the SPEC's. */
START_TEST(strong_decays_through_the_block) {
    hy_layer L;
    make_layer(&L, 24, small_o, 5, 31);
    for (int j = 0; j < 4; j++) {
        double b = L.p[P_DT_BIAS][j], sp = log1p(exp(b));
        L.p[P_A_LOG][j] = (float)(log(1000.0) - log(sp));
    }
    for (size_t i = 0; i < numel(&L, P_A); i++) L.p[P_A][i] *= 0.01f;
    const int B = 2, T = 2 * HY_GDN_CHUNK + 3, d = 24;
    size_t n = (size_t)B * T * d;
    float *x = hy_malloc(n * 4), *y = hy_malloc(n * 4), *R = hy_malloc(n * 4), *dx = hy_malloc(n * 4);
    double *ref = malloc(n * sizeof(double));
    tu_fill_normal(x, n, 1, 32), tu_fill_normal(R, n, 1, 33);
    for (int p = 0; p < N_P; p++) memset(L.g[p], 0, numel(&L, p) * 4);
    L.keep_for_backward = true;
    ck_assert_int_eq(L.ops->forward(&L, x, y, B, T), 0);
    ck_assert_int_eq(L.ops->backward(&L, R, dx, B, T), 0);
    spec_forward(&L, x, ref, B, T);
    ck_assert_msg(err_d(y, ref, n, 1e-3) < 3e-5, "strong decays: forward vs SPEC %g", err_d(y, ref, n, 1e-3));
    for (size_t i = 0; i < n; i++) ck_assert_msg(isfinite(dx[i]), "dx[%zu] = %g", i, dx[i]);
    for (int p = 0; p < N_P; p++)
        for (size_t i = 0; i < numel(&L, p); i++) ck_assert_msg(isfinite(L.g[p][i]), "param %d [%zu]: %g", p, i, L.g[p][i]);
    hy_free(x), hy_free(y), hy_free(R), hy_free(dx), free(ref);
    hy_layer_standalone_free(&L);
}
END_TEST

/* Streaming against the parallel forward: token by token (tu_step_check), and prefill in pieces
 * (longer than a chunk, shorter than the conv history, single tokens) mixed with steps. */
START_TEST(step_and_prefill_match_forward) {
    hy_layer L;
    make_layer(&L, 24, small_o, 5, 41);
    double e = tu_step_check(&L, 2, 40, 42);
    ck_assert_msg(e < 1e-5, "step vs forward %g", e);
    enum { B = 2, D = 24, T = 2 * HY_GDN_CHUNK + 20 };
    float *x = hy_malloc(B * T * D * 4), *y = hy_malloc(B * T * D * 4), *ys = hy_malloc(B * T * D * 4),
          *xc = hy_malloc(B * T * D * 4), *yc = hy_malloc(B * T * D * 4);
    tu_fill_normal(x, B * T * D, 1, 43);
    ck_assert_int_eq(L.ops->forward(&L, x, y, B, T), 0);
    void *st;
    ck_assert_int_eq(L.ops->state_new(&L, B, &st), 0);
    const int pieces[] = {HY_GDN_CHUNK + 5, 2, 1, 1, HY_GDN_CHUNK - 24, 1, 26, 1, 1, 4, 1, 1};   /* 2·L + 20 */
    int t0 = 0;
    for (size_t c = 0; c < sizeof pieces / sizeof *pieces; t0 += pieces[c], c++) {
        int m = pieces[c];
        for (int b = 0; b < B; b++) memcpy(xc + (size_t)b * m * D, x + ((size_t)b * T + t0) * D, (size_t)m * D * 4);
        int rc = m == 1 ? L.ops->step(&L, st, xc, yc, B) : L.ops->prefill(&L, st, xc, yc, B, m);
        ck_assert_msg(rc == 0, "%s", hy_last_error());
        for (int b = 0; b < B; b++) memcpy(ys + ((size_t)b * T + t0) * D, yc + (size_t)b * m * D, (size_t)m * D * 4);
    }
    ck_assert_int_eq(t0, T);
    e = tu_scaled_err(ys, y, (size_t)B * T * D, 1e-6);
    ck_assert_msg(e < 1e-5, "prefill/step vs forward %g", e);
    ck_assert_int_lt(L.ops->prefill(&L, st, xc, yc, B + 1, 3), 0);   /* a state of B sequences only */
    L.ops->state_free(&L, st);
    hy_free(x), hy_free(y), hy_free(ys), hy_free(xc), hy_free(yc);
    hy_layer_standalone_free(&L);
}
END_TEST

/* A state exported after a prefill and imported into a fresh state continues exactly as the
 * original; the tensors have fla's layouts (conv histories per channel, oldest first). */
START_TEST(state_export_import) {
    hy_layer L;
    make_layer(&L, 24, small_o, 5, 51);
    enum { B = 2, D = 24, T1 = 10, T2 = 7 };
    float x[B * (T1 + T2) * D], y1[B * T2 * D], y2[B * T2 * D], xa[B * T1 * D], xb[B * T2 * D];
    tu_fill_normal(x, sizeof x / 4, 1, 52);
    for (int b = 0; b < B; b++) {
        memcpy(xa + b * T1 * D, x + b * (T1 + T2) * D, T1 * D * 4);
        memcpy(xb + b * T2 * D, x + (b * (T1 + T2) + T1) * D, T2 * D * 4);
    }
    void *s1, *s2;
    ck_assert_int_eq(L.ops->state_new(&L, B, &s1), 0);
    ck_assert_int_eq(L.ops->state_new(&L, B, &s2), 0);
    float ya[B * T1 * D];
    ck_assert_int_eq(L.ops->prefill(&L, s1, xa, ya, B, T1), 0);
    hy_state_tensor t[4];
    ck_assert_int_eq(L.ops->state_tensors(&L, s1, t), 4);
    const char *names[4] = {"q_conv", "k_conv", "v_conv", "recurrent"};
    const int shapes[4][4] = {{B, 16, 2}, {B, 16, 2}, {B, 48, 2}, {B, 4, 12, 8}};
    float *data[4];
    for (int i = 0; i < 4; i++) {
        ck_assert_str_eq(t[i].name, names[i]);
        for (int k = 0; k < t[i].ndim; k++) ck_assert_int_eq(t[i].shape[k], shapes[i][k]);
        data[i] = hy_malloc(hy_state_tensor_numel(&t[i]) * 4);
        ck_assert_int_eq(L.ops->state_export(&L, s1, i, data[i]), 0);
    }
    /* v_conv's last entry of channel c is the newest v-projection input of the last token: row T1-1 */
    float pv[D * 48];
    const float *xl = xa + (T1 - 1) * D;   /* sequence 0, last token */
    for (int c = 0; c < 48; c++) {
        double a = 0;
        for (int i = 0; i < D; i++) a += (double)L.p[P_V][c * D + i] * xl[i];
        pv[c] = (float)a;
    }
    for (int c = 0; c < 48; c++) ck_assert_float_eq_tol(data[2][c * 2 + 1], pv[c], 1e-5);
    ck_assert_int_eq(L.ops->state_import(&L, s2, 4, t, (const float *const *)data), 0);
    ck_assert_int_eq(L.ops->prefill(&L, s1, xb, y1, B, T2), 0);
    ck_assert_int_eq(L.ops->prefill(&L, s2, xb, y2, B, T2), 0);
    ck_assert(memcmp(y1, y2, sizeof y1) == 0);
    /* a wrong shape is refused, naming the tensor */
    t[3].shape[2] = 11;
    void *s3;
    ck_assert_int_eq(L.ops->state_new(&L, B, &s3), 0);
    ck_assert_int_lt(L.ops->state_import(&L, s3, 4, t, (const float *const *)data), 0);
    ck_assert_msg(strstr(hy_last_error(), "recurrent") != NULL, "%s", hy_last_error());
    for (int i = 0; i < 4; i++) hy_free(data[i]);
    L.ops->state_free(&L, s1), L.ops->state_free(&L, s2), L.ops->state_free(&L, s3);
    hy_layer_standalone_free(&L);
}
END_TEST

/* Options: auto sizes, resolved values, every constraint's error naming its key; and a YAML config
 * whose error is located at the file, line and column of the offending key. */
START_TEST(options_and_errors) {
    const hy_block_ops *ops = hy_block_find("gated_deltanet");
    ck_assert_ptr_nonnull(ops);
    hy_opts o;
    ck_assert_int_eq(hy_block_opts_from_pairs(ops, 1024, NULL, 0, &o), 0);   /* 3·1024/256 = 12 heads of 64 */
    ck_assert_int_eq(hy_opt_int(&o, hy_opt_index(ops, "n_heads")), 12);
    ck_assert_int_eq(hy_opt_int(&o, hy_opt_index(ops, "n_v_heads")), 12);
    ck_assert_int_eq(hy_block_opts_from_pairs(ops, 64, NULL, 0, &o), 0);     /* floor 0 -> 1 */
    ck_assert_int_eq(hy_opt_int(&o, hy_opt_index(ops, "n_heads")), 1);
    static const char *ok[] = {"n_heads=2", "n_v_heads=6", "expand_v=0.75", "head_k_dim=32"};
    ck_assert_int_eq(hy_block_opts_from_pairs(ops, 64, ok, 4, &o), 0);
    static const struct {
        const char *pairs[3];
        const char *key, *text;
    } bad[] = {
        {{"n_heads=4", "n_v_heads=6"}, "n_v_heads", "multiple of n_heads = 4"},
        {{"n_v_heads=3", "n_heads=2"}, "n_v_heads", "n_v_heads = 3"},
        {{"expand_v=1.3"}, "expand_v", "not a whole number"},
        {{"expand_v=0.001"}, "expand_v", "not a whole number"},
        {{"head_k_dim=0"}, "head_k_dim", "out of range"},
        {{"conv_size=0"}, "conv_size", "out of range"},
        {{"n_heads=auto", "n_v_heads=0"}, "n_v_heads", "out of range"},
        {{"n_v_heads=4096", "head_k_dim=4096", "expand_v=64"}, "n_v_heads", "projections"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        int np = 0;
        while (np < 3 && bad[k].pairs[np]) np++;
        ck_assert_int_lt(hy_block_opts_from_pairs(ops, 64, bad[k].pairs, np, &o), 0);
        const char *e = hy_last_error();
        ck_assert_msg(strstr(e, bad[k].key) && strstr(e, bad[k].text), "case %zu: %s", k, e);
    }
    char path[128];
    snprintf(path, sizeof path, "/tmp/hybrid-test-gdn-%d.yaml", (int)getpid());
    const char *text = "model:\n  d_model: 64\n  n_layers: 2\n  blocks:\n    gated_deltanet:\n"
                       "      n_heads: 2\n      n_v_heads: 5\n  layers: {mixer: gated_deltanet, ffn: none}\n";
    ck_assert_int_eq(hy_write_file_atomic(path, text, strlen(text)), 0);
    hy_run_config c;
    ck_assert_int_lt(hy_run_config_load(path, NULL, 0, &c), 0);
    char want[256];
    snprintf(want, sizeof want, "%s:7:18: model.blocks.gated_deltanet.n_v_heads: ", path);
    ck_assert_msg(strncmp(hy_last_error(), want, strlen(want)) == 0 && strstr(hy_last_error(), "multiple of n_heads"),
                  "\nexpected %s...\n     got %s", want, hy_last_error());
    unlink(path);
}
END_TEST

/* train_bytes against what a training forward + backward really keeps, with n_v_heads > n_heads
 * (the backward's per-value-head q/k gradients; tests/test_memory.c covers the defaults). */
START_TEST(train_bytes_with_more_value_heads) {
    hy_layer L;
    make_layer(&L, 24, small_o, 5, 71);
    enum { B = 2, T = 2 * HY_GDN_CHUNK + 9, D = 24 };
    float *x = hy_malloc(B * T * D * 4), *y = hy_malloc(B * T * D * 4), *dx = hy_malloc(B * T * D * 4);
    tu_fill_normal(x, B * T * D, 1, 72);
    size_t base = hy_mem_current();
    L.keep_for_backward = true;
    ck_assert_int_eq(L.ops->forward(&L, x, y, B, T), 0);
    ck_assert_int_eq(L.ops->backward(&L, y, dx, B, T), 0);
    double kept = (double)(hy_mem_current() - base);
    hy_train_bytes e = L.ops->train_bytes(&L.opts, D, B, T, hy_threads(), true);
    ck_assert_msg(e.kept >= kept * 0.99 && e.kept <= kept * 1.01, "%.0f bytes kept, estimated %.0f", kept, e.kept);
    hy_free(x), hy_free(y), hy_free(dx);
    hy_layer_standalone_free(&L);
}
END_TEST

/* Names, shapes and flags as SPEC §2; init as fla's; state_bytes and flop by hand. */
START_TEST(params_init_and_accounting) {
    hy_layer L;
    static const char *o[] = {"n_heads=2", "n_v_heads=4", "head_k_dim=16"};
    tu_layer(&L, "gated_deltanet", 48, o, 3, 61);
    hy_param_spec s[N_P];
    ck_assert_int_eq(L.ops->param_specs(&L.opts, 48, s), N_P);
    static const char *names[N_P] = {"q_proj.weight", "k_proj.weight", "v_proj.weight", "g_proj.weight", "a_proj.weight",
                                     "b_proj.weight", "q_conv1d.weight", "k_conv1d.weight", "v_conv1d.weight", "A_log",
                                     "dt_bias", "o_norm.weight", "o_proj.weight"};
    static const int shapes[N_P][3] = {{32, 48}, {32, 48}, {128, 48}, {128, 48}, {4, 48}, {4, 48}, {32, 1, 4},
                                       {32, 1, 4}, {128, 1, 4}, {4}, {4}, {32}, {48, 128}};
    for (int p = 0; p < N_P; p++) {
        ck_assert_str_eq(s[p].name, names[p]);
        for (int k = 0; k < s[p].ndim; k++) ck_assert_int_eq(s[p].shape[k], shapes[p][k]);
        ck_assert_int_eq((s[p].flags & HY_PARAM_NO_DECAY) != 0, p == P_A_LOG || p == P_DT_BIAS);
        ck_assert_int_eq(s[p].flags & HY_PARAM_SSM_LR, 0);
    }
    for (int j = 0; j < 4; j++) {
        float A = expf(L.p[P_A_LOG][j]), dt = log1pf(expf(L.p[P_DT_BIAS][j]));
        ck_assert_msg(A > 0 && A <= 16.0f * (1 + 1e-6f), "A = %g", A);
        ck_assert_msg(dt >= 0.001f * (1 - 1e-4f) && dt <= 0.1f * (1 + 1e-4f), "dt = %g", dt);
    }
    for (int c = 0; c < 32; c++) ck_assert_float_eq(L.p[P_ONORM][c], 1.0f);
    double mx = 0;
    for (size_t i = 0; i < numel(&L, P_VCONV); i++) mx = fmax(mx, fabs(L.p[P_VCONV][i]));
    ck_assert(mx <= 0.5 && mx > 0.45);   /* U(±1/sqrt(4)) */
    /* state: (K-1)·(2·32 + 128) conv inputs + 4·32·16 */
    ck_assert_uint_eq(L.ops->state_bytes(&L.opts, 48, 1), (3 * 192 + 4 * 32 * 16) * 4);
    ck_assert_uint_eq(L.ops->state_bytes(&L.opts, 48, 1 << 20), (3 * 192 + 4 * 32 * 16) * 4);
    /* per token: projections 2·48·(64 + 256 + 8), o_proj 2·128·48, convs 2·4·192; + 4 heads of the chunked form */
    double tok = 2.0 * 48 * 328 + 2.0 * 128 * 48 + 2.0 * 4 * 192;
    for (int T = 1; T <= 200; T += 199)
        ck_assert_double_eq_tol(L.ops->flop(&L.opts, 48, T), T * tok + 4 * hy_gdn_flop(T, 16, 32, HY_GDN_CHUNK), 1e-6);
    hy_layer_standalone_free(&L);
}
END_TEST

static Suite *gated_deltanet_suite(void) {
    Suite *s = suite_create("gated_deltanet");
    TCase *k = tcase_create("delta rule");
    tcase_add_test(k, chunked_matches_recurrence);
    tcase_add_test(k, step_matches_recurrence);
    tcase_add_test(k, backward_finite_differences);
    tcase_add_test(k, strong_decays_stay_finite);
    tcase_add_test(k, flop_and_size_checks);
    tcase_add_test(k, batch_matches_each_sequence);
    tcase_set_timeout(k, 120);
    suite_add_tcase(s, k);
    TCase *b = tcase_create("block");
    tcase_add_test(b, forward_follows_spec);
    tcase_add_test(b, gradients_vs_spec);
    tcase_add_test(b, float_gradients_and_accumulation);
    tcase_add_test(b, strong_decays_through_the_block);
    tcase_add_test(b, step_and_prefill_match_forward);
    tcase_add_test(b, state_export_import);
    tcase_add_test(b, options_and_errors);
    tcase_add_test(b, params_init_and_accounting);
    tcase_add_test(b, train_bytes_with_more_value_heads);
    tcase_set_timeout(b, 120);
    suite_add_tcase(s, b);
    return s;
}
HY_TEST_SUITE(gated_deltanet_suite)

/* rwkv7 and cmix: the state recurrence against a plain loop and finite differences (chunked
 * backward with T not a multiple of the chunk), each block's gradients, parallel vs step and
 * prefill, options, init, state_bytes, flop, and a 3-layer stack where v_first crosses an
 * attention layer (whole-model gradients, streaming). */
#include "core/error.h"
#include "core/mem.h"
#include "layers/rwkv7/rwkv7.h"
#include "models/model.h"
#include "tests/testutil.h"
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the recurrence ---- */

typedef struct {
    hy_wkv7_in in;
    float *buf[6];
} wkv_case;

/* When set, every 3rd decay is 1e-8: running products of decays then fall below the 1e-20 at which
 * the forward stops column-scaling the state and takes a fold step. */
static bool wkv_tiny_decays;

/* Random inputs in the ranges the block produces: decay in (0.6, 1), q a unit vector per head,
 * b = q ⊙ a with a in (0, 1). */
static void wkv_make(wkv_case *c, int B, int T, int H, int N, uint64_t seed) {
    size_t n = (size_t)B * T * H * N;
    for (int i = 0; i < 6; i++) c->buf[i] = hy_malloc(n * 4), tu_fill_normal(c->buf[i], n, 0.5f, seed + (uint64_t)i);
    float *w = c->buf[1], *q = c->buf[4], *b = c->buf[5];
    for (size_t i = 0; i < n; i++) w[i] = wkv_tiny_decays && i % 3 == 0 ? 1e-8f : 0.6f + 0.4f / (1.0f + expf(-4 * w[i]));
    for (size_t r = 0; r < n / N; r++) {
        double s = 0;
        for (int j = 0; j < N; j++) s += (double)q[r * N + j] * q[r * N + j];
        for (int j = 0; j < N; j++) {
            q[r * N + j] /= (float)sqrt(s);
            b[r * N + j] = q[r * N + j] / (1.0f + expf(-2 * b[r * N + j]));
        }
    }
    c->in = (hy_wkv7_in){B, T, H, N, c->buf[0], c->buf[1], c->buf[2], c->buf[3], c->buf[4], c->buf[5]};
}
static void wkv_free(wkv_case *c) {
    for (int i = 0; i < 6; i++) hy_free(c->buf[i]);
}

/* The fast forward (every code path: N = 64 and 32 blocked, 48 one vector per block, 24 that too
 * with 8-float vectors and plain loops with 16-float ones, 6 plain) against the entry-wise
 * reference written in the formulas' layout. */
START_TEST(wkv_forward_matches_reference) {
    const int Ns[] = {64, 32, 48, 24, 6, 64, 16};
    for (int ni = 0; ni < 7; ni++) {
        wkv_tiny_decays = ni >= 5;   /* the last two: fold steps forced by small running decays */
        int N = Ns[ni], B = 2, T = tu_quick() ? 20 : 2 * HY_WKV7_CHUNK + 5, H = 2;
        wkv_case c;
        wkv_make(&c, B, T, H, N, 10 + ni);
        size_t n = (size_t)B * T * H * N;
        float *y = hy_malloc(n * 4), *yr = hy_malloc(n * 4), *sq = hy_malloc(n * 4);
        float *ck = hy_malloc((size_t)B * H * hy_wkv7_nchunks(T) * N * N * 4);
        hy_wkv7_forward(&c.in, NULL, y, sq, ck, NULL);
        hy_wkv7_forward_ref(&c.in, yr);
        double e = 0, mx = 1e-6;
        for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(yr[i]));
        for (size_t i = 0; i < n; i++) e = isfinite(y[i]) ? fmax(e, fabs((double)y[i] - yr[i]) / mx) : INFINITY;
        ck_assert_msg(e < 1e-5, "N=%d: forward vs reference %g (of max |y|)", N, e);
        hy_free(y), hy_free(yr), hy_free(sq), hy_free(ck);
        wkv_free(&c);
    }
    wkv_tiny_decays = false;
}
END_TEST

/* Forward from a state in two pieces equals one forward: the final state carries everything. */
START_TEST(wkv_state_carries_over) {
    int B = 1, T = 29, H = 2, N = 16, T1 = 11;
    wkv_case c;
    wkv_make(&c, B, T, H, N, 40);
    size_t C = (size_t)H * N, n = (size_t)T * C;
    float *y = hy_malloc(n * 4), *sq = hy_malloc(n * 4), *y2 = hy_malloc(n * 4), *sq2 = hy_malloc(n * 4);
    float *S = hy_calloc((size_t)H * N * N * 4);
    hy_wkv7_forward(&c.in, NULL, y, sq, NULL, NULL);
    hy_wkv7_in a = c.in, b = c.in;
    a.T = T1, b.T = T - T1;
    b.r += T1 * C, b.w += T1 * C, b.k += T1 * C, b.v += T1 * C, b.q += T1 * C, b.b += T1 * C;
    hy_wkv7_forward(&a, S, y2, sq2, NULL, NULL);
    hy_wkv7_forward(&b, S, y2 + T1 * C, sq2 + T1 * C, NULL, NULL);
    /* Not bit-identical: the kernel restarts its column scaling (see fwd_vec) at the start of each
     * call, so the two runs round differently; a lost or stale state would be O(1) off. */
    double e = 0, mx = 1e-6;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(y[i]));
    for (size_t i = 0; i < n; i++) e = fmax(e, fabs((double)y[i] - y2[i]) / mx);
    ck_assert_msg(e < 1e-6, "two pieces differ from one forward: %g of max |y|", e);
    hy_free(y), hy_free(sq), hy_free(y2), hy_free(sq2), hy_free(S);
    wkv_free(&c);
}
END_TEST

/* Σ y·R of the recurrence in double precision, with input p entry idx moved by delta: the finite
 * differences then measure the float kernel's backward, not float rounding. */
static double wkv_loss_d(const wkv_case *c, const float *R, int p, size_t idx, double delta) {
    const hy_wkv7_in *in = &c->in;
    int N = in->N;
    size_t C = (size_t)in->H * N;
    double *S = calloc((size_t)N * N, sizeof(double)), *sq = calloc((size_t)N, sizeof(double)), loss = 0;
#define IN(q, o) ((double)c->buf[q][o] + ((q) == p && (o) == idx ? delta : 0.0))
    for (int bi = 0; bi < in->B; bi++)
        for (int h = 0; h < in->H; h++) {
            memset(S, 0, sizeof(double) * (size_t)N * N);
            for (int t = 0; t < in->T; t++) {
                size_t o = ((size_t)bi * in->T + t) * C + (size_t)h * N;
                for (int i = 0; i < N; i++) {
                    sq[i] = 0;
                    for (int j = 0; j < N; j++) sq[i] += S[i * N + j] * IN(4, o + j);
                }
                for (int i = 0; i < N; i++)
                    for (int j = 0; j < N; j++)
                        S[i * N + j] = S[i * N + j] * IN(1, o + j) - sq[i] * IN(5, o + j) + IN(3, o + i) * IN(2, o + j);
                for (int i = 0; i < N; i++) {
                    double y = 0;
                    for (int j = 0; j < N; j++) y += S[i * N + j] * IN(0, o + j);
                    loss += y * R[o + i];
                }
            }
        }
#undef IN
    free(S), free(sq);
    return loss;
}

/* Backward against central differences for every input; T = 2·CHUNK + 5 is two full chunks and a
 * partial one, so states are recomputed from checkpoints across chunk boundaries. */
static void wkv_grad_case(int N, int T, uint64_t seed) {
    int B = 2, H = 2;
    wkv_case c;
    wkv_make(&c, B, T, H, N, seed);
    size_t n = (size_t)B * T * H * N;
    float *y = hy_malloc(n * 4), *sq = hy_malloc(n * 4), *R = hy_malloc(n * 4), *d[6];
    float *ck = hy_malloc((size_t)B * H * hy_wkv7_nchunks(T) * N * N * 4);
    for (int i = 0; i < 6; i++) d[i] = hy_malloc(n * 4);
    tu_fill_normal(R, n, 1, seed + 99);
    hy_wkv7_forward(&c.in, NULL, y, sq, ck, NULL);
    ck_assert_int_eq(hy_wkv7_backward(&c.in, sq, ck, R, d[0], d[1], d[2], d[3], d[4], d[5], NULL), 0);
    hy_rng rng;
    hy_rng_seed(&rng, seed + 7);
    const char *names[] = {"r", "w", "k", "v", "q", "b"};
    double worst = 0;
    for (int p = 0; p < 6; p++)
        for (int s = 0; s < 12; s++) {
            /* half the samples from the first steps, whose gradient crosses every chunk */
            size_t i = s % 2 ? hy_rng_below(&rng, n) : hy_rng_below(&rng, (size_t)H * N * 3);
            double eps = 1e-4, up = wkv_loss_d(&c, R, p, i, eps), down = wkv_loss_d(&c, R, p, i, -eps);
            double num = (up - down) / (2 * eps), an = d[p][i];
            double e = fabs(num - an) / fmax(fabs(num) + fabs(an), 1e-3);
            ck_assert_msg(e < 1e-3, "N=%d T=%d d%s[%zu]: analytic %g numeric %g", N, T, names[p], i, an, num);
            worst = fmax(worst, e);
        }
    (void)worst;
    hy_free(y), hy_free(sq), hy_free(R), hy_free(ck);
    for (int i = 0; i < 6; i++) hy_free(d[i]);
    wkv_free(&c);
}

START_TEST(wkv_backward_finite_differences) {
    const int two_and_a_bit = 2 * HY_WKV7_CHUNK + 5;
    wkv_grad_case(16, two_and_a_bit, 50);   /* blocked vector path (one vector per block with 16-float vectors) */
    wkv_grad_case(48, HY_WKV7_CHUNK + 5, 65);   /* one vector per block; one full chunk and a partial one */
    wkv_grad_case(8, 21, 60);    /* one vector per block with 8-float vectors, else plain loops; one partial chunk */
    wkv_grad_case(6, two_and_a_bit, 70);    /* plain loops */
    wkv_grad_case(32, HY_WKV7_CHUNK, 80);   /* exactly one chunk */
    wkv_tiny_decays = true;   /* fold steps (forward, recompute and dS) forced by small decays */
    wkv_grad_case(64, two_and_a_bit, 90);
    wkv_grad_case(16, two_and_a_bit, 91);
    wkv_tiny_decays = false;
}
END_TEST

/* ---- blocks ---- */

/* Moves every parameter away from its init (the LoRA down-matrices start at zero, which would hide
 * the gradients of the up-matrices behind them) by noise of the given scale. */
static void perturb(hy_layer *L, float scale, uint64_t seed) {
    hy_param_spec specs[64];
    L->ops->param_specs(&L->opts, L->d_model, specs);
    hy_rng r;
    hy_rng_seed(&r, seed);
    for (int i = 0; i < L->n_params; i++) {
        size_t n = 1;
        for (int d = 0; d < specs[i].ndim; d++) n *= (size_t)specs[i].shape[d];
        for (size_t k = 0; k < n; k++) L->p[i][k] += scale * hy_rng_normal(&r);
    }
}

/* w0 near 0 (decays around 0.5-0.8, as after training) so the decay path carries gradient that
 * float finite differences can resolve; init's w0 goes down to -8 (decay ≈ 1, flat). */
static void mid_decay(float *w0, int C, uint64_t seed) {
    tu_fill_normal(w0, (size_t)C, 0.5f, seed);
}

static const char *const small_rw[] = {"head_size=8", "d_decay_lora=4", "d_aaa_lora=6", "d_mv_lora=5",
                                       "d_gate_lora=7"};

/* Directional finite differences of loss = Σ y·R (double) for the input and every parameter tensor
 * of a layer, each along a random direction scaled to that tensor's rms: robust to the float
 * rounding that makes entry-wise differences of the small LoRA gradients meaningless. */
static void layer_dir_check(hy_layer *L, int B, int T, uint64_t seed) {
    size_t n = (size_t)B * T * L->d_model;
    float *x = hy_malloc(n * 4), *y = hy_malloc(n * 4), *R = hy_malloc(n * 4), *dx = hy_malloc(n * 4);
    tu_fill_normal(x, n, 1, seed), tu_fill_normal(R, n, 1, seed + 1);
    hy_param_spec specs[64];
    L->ops->param_specs(&L->opts, L->d_model, specs);
    size_t numel[64];
    for (int i = 0; i < L->n_params; i++) {
        numel[i] = 1;
        for (int d = 0; d < specs[i].ndim; d++) numel[i] *= (size_t)specs[i].shape[d];
        memset(L->g[i], 0, numel[i] * 4);
    }
    L->keep_for_backward = true;
    ck_assert_int_eq(L->ops->forward(L, x, y, B, T), 0);
    ck_assert_msg(L->ops->backward(L, R, dx, B, T) == 0, "%s", hy_last_error());
    L->keep_for_backward = false;
    for (int p = -1; p < L->n_params; p++) {
        float *t = p < 0 ? x : L->p[p], *g = p < 0 ? dx : L->g[p];
        size_t m = p < 0 ? n : numel[p];
        float *dir = hy_malloc(m * 4), *keep = hy_malloc(m * 4);
        tu_fill_normal(dir, m, 1, seed + 10 + (uint64_t)p);
        double rms = 0, gd = 0, f[2], eps = 2e-3;
        for (size_t i = 0; i < m; i++) rms += (double)t[i] * t[i];
        rms = fmax(sqrt(rms / m), 1e-2);
        for (size_t i = 0; i < m; i++) dir[i] *= (float)rms, gd += (double)g[i] * dir[i];
        memcpy(keep, t, m * 4);
        for (int s = 0; s < 2; s++) {
            for (size_t i = 0; i < m; i++) t[i] = keep[i] + (s ? -1 : 1) * (float)eps * dir[i];
            ck_assert_int_eq(L->ops->forward(L, x, y, B, T), 0);
            f[s] = 0;
            for (size_t i = 0; i < n; i++) f[s] += (double)y[i] * R[i];
        }
        memcpy(t, keep, m * 4);
        double num = (f[0] - f[1]) / (2 * eps);
        const char *name = p < 0 ? "x" : specs[p].name;
        if (getenv("HY_DEBUG")) fprintf(stderr, "%-20s analytic %12.6g numeric %12.6g\n", name, gd, num);
        ck_assert_msg(fabs(num - gd) <= 1e-2 * fabs(gd) + 3e-4, "%s %s: directional derivative %g vs analytic %g",
                      L->ops->name, name, num, gd);
        hy_free(dir), hy_free(keep);
    }
    hy_free(x), hy_free(y), hy_free(R), hy_free(dx);
}

START_TEST(rwkv7_first_layer_gradients) {
    hy_layer L;
    tu_layer(&L, "rwkv7", 16, small_rw, 5, 3);
    perturb(&L, 0.15f, 4);
    mid_decay(L.p[6], 16, 40);
    const int T = HY_WKV7_CHUNK + 3;   /* one full chunk and a partial one */
    layer_dir_check(&L, 2, T, 5);
    double e = tu_grad_check(&L, 2, T, 1e-2f, 8, 5);   /* entry-wise, float: loose */
    ck_assert_msg(e < 1e-1, "rwkv7 (first layer) entry-wise gradient error %g", e);
    hy_layer_standalone_free(&L);
}
END_TEST

/* Two backward calls after one forward give the same bits (the first one overwrites what the
 * forward left in its buffers, such as the output projection's input). */
START_TEST(rwkv7_backward_twice_same) {
    hy_layer L;
    tu_layer(&L, "rwkv7", 16, small_rw, 5, 3);
    perturb(&L, 0.15f, 6);
    const int B = 2, T = HY_WKV7_CHUNK + 3;
    size_t n = (size_t)B * T * 16, numel[64];
    hy_param_spec specs[64];
    L.ops->param_specs(&L.opts, L.d_model, specs);
    float *x = hy_malloc(n * 4), *y = hy_malloc(n * 4), *R = hy_malloc(n * 4), *dx[2] = {hy_malloc(n * 4), hy_malloc(n * 4)};
    float *g0[64];
    tu_fill_normal(x, n, 1, 7), tu_fill_normal(R, n, 1, 8);
    L.keep_for_backward = true;
    ck_assert_int_eq(L.ops->forward(&L, x, y, B, T), 0);
    for (int a = 0; a < 2; a++) {
        for (int i = 0; i < L.n_params; i++) {
            numel[i] = 1;
            for (int d = 0; d < specs[i].ndim; d++) numel[i] *= (size_t)specs[i].shape[d];
            memset(L.g[i], 0, numel[i] * 4);
        }
        ck_assert_msg(L.ops->backward(&L, R, dx[a], B, T) == 0, "%s", hy_last_error());
        for (int i = 0; i < L.n_params && a == 0; i++) g0[i] = hy_malloc(numel[i] * 4), memcpy(g0[i], L.g[i], numel[i] * 4);
    }
    ck_assert(!memcmp(dx[0], dx[1], n * 4));
    for (int i = 0; i < L.n_params; i++) {
        ck_assert_msg(!memcmp(g0[i], L.g[i], numel[i] * 4), "gradient of %s differs", specs[i].name);
        hy_free(g0[i]);
    }
    hy_free(x), hy_free(y), hy_free(R), hy_free(dx[0]), hy_free(dx[1]);
    hy_layer_standalone_free(&L);
}
END_TEST

/* A later rwkv7 layer alone (index 1, v_first given): the value-residual LoRA and gate included. */
START_TEST(rwkv7_later_layer_gradients) {
    hy_layer L;
    tu_layer(&L, "rwkv7", 16, small_rw, 5, 6);
    L.index = 1;
    perturb(&L, 0.15f, 7);
    mid_decay(L.p[6], 16, 70);
    int B = 2, T = 18;
    size_t n = (size_t)B * T * 16;
    hy_first_slot *vf1 = L.first;   /* v_first, as the first rwkv7 layer (layer 0) would leave it */
    ck_assert_ptr_nonnull(vf1);
    ck_assert(!hy_first_writes(&L));
    ck_assert_ptr_nonnull(hy_buf_reserve(&vf1->value, n));
    ck_assert_ptr_nonnull(hy_buf_reserve(&vf1->grad, n));
    tu_fill_normal(vf1->value.p, n, 1, 8);
    memset(vf1->grad.p, 0, n * 4);
    vf1->rows = (size_t)B * T;
    layer_dir_check(&L, B, T, 9);
    /* its v0, v1, v2 do get gradient, and dv_first received something */
    double gv = 0, gf = 0;
    for (int c = 0; c < 16; c++) gv += fabs(L.g[12][c]);
    for (size_t i = 0; i < n; i++) gf += fabs(vf1->grad.p[i]);
    ck_assert_msg(gv > 0 && gf > 0, "value residual gradients missing (%g, %g)", gv, gf);
    hy_layer_standalone_free(&L);
}
END_TEST

START_TEST(cmix_gradients) {
    hy_layer L;
    const char *o[] = {"d_ff=24"};
    tu_layer(&L, "cmix", 10, o, 1, 11);
    perturb(&L, 0.3f, 12);
    double e = tu_grad_check(&L, 2, 7, 1e-2f, 8, 13);
    ck_assert_msg(e < 1e-2, "cmix gradient error %g", e);
    hy_layer_standalone_free(&L);
}
END_TEST

/* Parallel forward vs one token at a time, and vs prefill in pieces followed by steps. */
static void prefill_check(hy_layer *L, int B, int T) {
    int d = L->d_model, T1 = T / 3, T2 = T / 2;
    size_t n = (size_t)B * T * d;
    float *x = hy_malloc(n * 4), *y = hy_malloc(n * 4), *xs = hy_malloc(n * 4), *ys = hy_malloc(n * 4);
    tu_fill_normal(x, n, 1, 31);
    L->keep_for_backward = false;
    ck_assert_int_eq(L->ops->forward(L, x, y, B, T), 0);
    void *st;
    ck_assert_int_eq(L->ops->state_new(L, B, &st), 0);
    const int pieces[3][2] = {{0, T1}, {T1, T2}, {T2, T}};
    double worst = 0, scale = 1e-6;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(y[i]));
    for (int p = 0; p < 3; p++) {
        int a = pieces[p][0], len = pieces[p][1] - a;
        for (int b = 0; b < B; b++) memcpy(xs + (size_t)b * len * d, x + ((size_t)b * T + a) * d, (size_t)len * d * 4);
        if (p < 2) ck_assert_msg(L->ops->prefill(L, st, xs, ys, B, len) == 0, "%s", hy_last_error());
        for (int t = 0; p == 2 && t < len; t++) {   /* the rest by step */
            float xt[8 * 64], yt[8 * 64];
            for (int b = 0; b < B; b++) memcpy(xt + b * d, xs + ((size_t)b * len + t) * d, (size_t)d * 4);
            ck_assert_int_eq(L->ops->step(L, st, xt, yt, B), 0);
            for (int b = 0; b < B; b++) memcpy(ys + ((size_t)b * len + t) * d, yt + b * d, (size_t)d * 4);
        }
        for (int b = 0; b < B; b++)
            for (size_t i = 0; i < (size_t)len * d; i++)
                worst = fmax(worst, fabs(ys[(size_t)b * len * d + i] - y[((size_t)b * T + a) * d + i]) / scale);
    }
    ck_assert_msg(worst < 1e-5, "%s: prefill + step vs forward %g", L->ops->name, worst);
    L->ops->state_free(L, st);
    hy_free(x), hy_free(y), hy_free(xs), hy_free(ys);
}

START_TEST(rwkv7_and_cmix_step_and_prefill) {
    hy_layer L;
    const char *o[] = {"head_size=16"};
    tu_layer(&L, "rwkv7", 32, o, 1, 21);
    perturb(&L, 0.1f, 22);
    double e = tu_step_check(&L, 2, 40, 23);
    ck_assert_msg(e < 1e-5, "rwkv7 step vs forward %g", e);
    prefill_check(&L, 2, 40);
    hy_layer_standalone_free(&L);
    const char *f[] = {"d_ff=40"};
    tu_layer(&L, "cmix", 24, f, 1, 24);
    perturb(&L, 0.2f, 25);
    e = tu_step_check(&L, 3, 9, 26);
    ck_assert_msg(e < 1e-6, "cmix step vs forward %g", e);
    prefill_check(&L, 3, 9);
    hy_layer_standalone_free(&L);
}
END_TEST

START_TEST(options_state_bytes_flop) {
    const hy_block_ops *rw = hy_block_find("rwkv7"), *cm = hy_block_find("cmix");
    ck_assert_ptr_nonnull(rw);
    ck_assert_ptr_nonnull(cm);
    hy_opts o;
    /* LoRA sizes: max(32, round(f·sqrt(C)/32)·32) with Python's round half to even:
     * C = 1024: 2.5·32/32 = 2.5 -> 2 -> 64; 1.7 -> 2 -> 64; 5 -> 160. C = 4096: 5 -> 160, 3.4 -> 96, 10 -> 320 */
    ck_assert_int_eq(hy_block_opts_from_pairs(rw, 1024, NULL, 0, &o), 0);
    ck_assert_int_eq(hy_opt_int(&o, 0), 64);
    ck_assert_int_eq(hy_opt_int(&o, 1), 64); ck_assert_int_eq(hy_opt_int(&o, 2), 64);
    ck_assert_int_eq(hy_opt_int(&o, 3), 64); ck_assert_int_eq(hy_opt_int(&o, 4), 160);
    ck_assert_int_eq(hy_block_opts_from_pairs(rw, 4096, NULL, 0, &o), 0);
    ck_assert_int_eq(hy_opt_int(&o, 1), 160); ck_assert_int_eq(hy_opt_int(&o, 3), 96);
    ck_assert_int_eq(hy_opt_int(&o, 4), 320);
    ck_assert_int_eq(hy_block_opts_from_pairs(rw, 64, NULL, 0, &o), 0);
    ck_assert_int_eq(hy_opt_int(&o, 1), 32); ck_assert_int_eq(hy_opt_int(&o, 4), 32);
    /* state: H·N² + C floats, independent of T */
    ck_assert_uint_eq(rw->state_bytes(&o, 64, 1), (64 * 64 + 64) * 4);
    ck_assert_uint_eq(rw->state_bytes(&o, 64, 100000), (64 * 64 + 64) * 4);
    ck_assert_double_eq(rw->flop(&o, 64, 10), 10.0 * (8.0 * 64 * 64 + 4.0 * 64 * 128 + 9.0 * 64 * 64));
    const char *bad[] = {"head_size=48"};
    ck_assert_int_lt(hy_block_opts_from_pairs(rw, 64, bad, 1, &o), 0);
    ck_assert_msg(strstr(hy_last_error(), "head_size") != NULL, "error names the key: %s", hy_last_error());
    ck_assert_int_eq(hy_block_opts_from_pairs(cm, 48, NULL, 0, &o), 0);
    ck_assert_int_eq(hy_opt_int(&o, 0), 192);   /* auto d_ff = 4·d */
    ck_assert_uint_eq(cm->state_bytes(&o, 48, 7), 48 * 4);
    ck_assert_double_eq(cm->flop(&o, 48, 5), 5.0 * (4.0 * 48 * 192 + 192));
}
END_TEST

/* Upstream x070 init of a lone layer (layer 0 of 1): spot values of the formulas, orthonormal LoRA
 * up-matrices (× 0.1), the projections' bound (tests/test_init.c checks every tensor). */
START_TEST(rwkv7_init_as_upstream) {
    hy_layer L;
    const char *o[] = {"head_size=16"};
    tu_layer(&L, "rwkv7", 64, o, 1, 1);
    /* c = 0: zigzag = -1, linear = -0.5 -> w0 = -6 + 0.5 - 2.5, a0 = -0.19 - 0.3 - 0.2 */
    ck_assert_float_eq_tol(L.p[6][0], -8.0f, 1e-6);
    ck_assert_float_eq_tol(L.p[9][0], -0.69f, 1e-6);
    ck_assert_float_eq_tol(L.p[12][63], 0.73f - 0.2f, 1e-6);   /* v0 at linear = +0.5 */
    ck_assert_float_eq_tol(L.p[0][32], (float)(1 - pow(0.5, 0.2)), 1e-6);   /* x_r */
    ck_assert_float_eq_tol(L.p[18][5], 1.02f, 1e-7);            /* k_a */
    ck_assert_float_eq_tol(L.p[19][17], -0.04f, 1e-7);          /* r_k */
    for (int i = 0; i < 64 * 32; i++) ck_assert_float_eq(L.p[7][i], 0.0f);   /* w1 */
    float *w2 = L.p[8];                                         /* (32, 64): orthonormal rows × 0.1 */
    for (int a = 0; a < 32; a++)
        for (int b = 0; b <= a; b++) {
            double dot = 0;
            for (int i = 0; i < 64; i++) dot += (double)w2[a * 64 + i] * w2[b * 64 + i];
            ck_assert_msg(fabs(dot - (a == b ? 0.01 : 0.0)) < 1e-6, "w2 rows %d, %d: %g", a, b, dot);
        }
    for (int i = 0; i < 64 * 64; i++) ck_assert(fabsf(L.p[21][i]) <= 1.0f / 8.0f);   /* key: U(±1/√C) */
    hy_layer_standalone_free(&L);
}
END_TEST

/* ---- a 3-layer stack: two rwkv7 layers and an attention layer ---- */

/* The 3-layer stack with attention at layer `att` and rwkv7 at the other two. ffns are swiglu:
 * cmix's relu² has kinks that make float finite differences of the whole model erratic at any
 * usable step (cmix's gradients are checked alone and in `make crosscheck`). */
static hy_model *stack_model_att_at(int att) {
    const hy_block_ops *rw = hy_block_find("rwkv7"), *at = hy_block_find("attention"), *cm = hy_block_find("swiglu");
    static hy_layer_cfg layers[3];
    hy_model_config c = {.d_model = 16, .vocab_size = 20, .n_layers = 3, .tie_embeddings = true,
                         .router_aux_coef = 0.001f, .layers = layers};
    const char *ap[] = {"n_heads=2"}, *cp[] = {"d_ff=24"};
    for (int i = 0; i < 3; i++) {
        layers[i].mixer.ops = i == att ? at : rw;
        if (i == att) ck_assert_int_eq(hy_block_opts_from_pairs(at, 16, ap, 1, &layers[i].mixer.opts), 0);
        else ck_assert_int_eq(hy_block_opts_from_pairs(rw, 16, small_rw, 5, &layers[i].mixer.opts), 0);
        layers[i].ffn.ops = i == 2 ? NULL : cm;
        if (i < 2) ck_assert_int_eq(hy_block_opts_from_pairs(cm, 16, cp, 1, &layers[i].ffn.opts), 0);
    }
    hy_model *m;
    ck_assert_msg(hy_model_create(&c, 3, &m) == 0, "%s", hy_last_error());
    int r1 = att == 0 ? 1 : 0, r2 = att == 2 ? 1 : 2;   /* the two rwkv7 layers */
    ck_assert_int_eq(m->shared.n_first, 1);   /* one slot, v_first, written by the first rwkv7 layer */
    ck_assert_int_eq(m->mixers[r1].first->layer, r1);
    ck_assert_ptr_eq(m->mixers[r1].first, m->mixers[r2].first);
    ck_assert_ptr_null(m->mixers[att].first);
    ck_assert(hy_first_writes(&m->mixers[r1]) && !hy_first_writes(&m->mixers[r2]));
    hy_rng r;
    hy_rng_seed(&r, 17);
    for (int p = 0; p < m->n_params; p++)
        if (strstr(m->params[p].name, "mixer") || strstr(m->params[p].name, ".ffn."))
            for (size_t i = 0; i < m->params[p].numel; i++) m->params[p].data[i] += 0.1f * hy_rng_normal(&r);
    char w0[2][40];
    snprintf(w0[0], sizeof w0[0], "layers.%d.mixer.w0", r1);
    snprintf(w0[1], sizeof w0[1], "layers.%d.mixer.w0", r2);
    mid_decay(hy_model_param(m, w0[0])->data, 16, 71);
    mid_decay(hy_model_param(m, w0[1])->data, 16, 72);
    return m;
}

/* rwkv7 / attention / rwkv7: v_first crosses the attention layer. */
static hy_model *stack_model(void) { return stack_model_att_at(1); }

/* Mean cross-entropy of the last forward's logits in double precision (the model reports a float,
 * whose rounding would swamp the small directional derivatives of the LoRA tensors). */
static double ce_double(hy_model *m, const int32_t *tg, int rows, int V) {
    const float *z = hy_model_logits(m);
    double s = 0;
    for (int r = 0; r < rows; r++) {
        double mx = z[r * V], e = 0;
        for (int v = 1; v < V; v++) mx = fmax(mx, z[r * V + v]);
        for (int v = 0; v < V; v++) e += exp(z[r * V + v] - mx);
        s += log(e) + mx - z[r * V + tg[r]];
    }
    return s / rows;
}

/* Whole-model gradients against directional finite differences, tensor by tensor (as test_model):
 * layer 2's value residual reads layer 0's v, across the attention layer. The central differences
 * at steps eps and eps/2 are combined by Richardson extrapolation, (4 D(eps/2) - D(eps)) / 3, which
 * cancels their eps² error (a plain central difference at eps/2 is up to 4% off for k_a, x_k and
 * the embedding; a smaller step drowns the flat decay-path derivatives in rounding noise). */
START_TEST(stack_gradients_v_first_across_attention) {
    hy_model *m = stack_model();
    enum { B = 2, T = 18 };
    int32_t in[B * T], tg[B * T];
    hy_rng r;
    hy_rng_seed(&r, 5);
    for (int i = 0; i < B * T; i++) in[i] = (int32_t)hy_rng_below(&r, 20), tg[i] = (int32_t)hy_rng_below(&r, 20);
    hy_loss l;
    ck_assert_int_eq(hy_model_forward(m, in, tg, B, T, true, &l), 0);
    hy_model_zero_grad(m);
    ck_assert_msg(hy_model_backward(m) == 0, "%s", hy_last_error());
    float *dir = hy_malloc(m->numel * 4), *keep = hy_malloc(m->numel * 4);
    tu_fill_normal(dir, m->numel, 1, 9);
    memcpy(keep, m->data, m->numel * 4);
    double eps = 4e-3;
    for (int p = 0; p < m->n_params; p++) {
        hy_param *q = &m->params[p];
        size_t off = (size_t)(q->data - m->data);
        double rms = 0, gq = 0, f[4];
        for (size_t i = 0; i < q->numel; i++) rms += (double)q->data[i] * q->data[i];
        rms = fmax(sqrt(rms / q->numel), 1e-2);
        for (size_t i = 0; i < q->numel; i++) dir[off + i] *= (float)rms, gq += (double)q->grad[i] * dir[off + i];
        for (int s = 0; s < 4; s++) {   /* +eps, -eps, +eps/2, -eps/2 */
            float h = (float)(s < 2 ? eps : eps / 2) * (s % 2 ? -1 : 1);
            for (size_t i = 0; i < q->numel; i++) q->data[i] = keep[off + i] + h * dir[off + i];
            hy_model_forward(m, in, tg, B, T, false, &l);
            f[s] = ce_double(m, tg, B * T, 20);
            memcpy(q->data, keep + off, q->numel * 4);
        }
        double d1 = (f[0] - f[1]) / (2 * eps), d2 = (f[2] - f[3]) / eps, num = (4 * d2 - d1) / 3;
        if (getenv("HY_DEBUG")) fprintf(stderr, "%-34s analytic %12.6g numeric %12.6g\n", q->name, gq, num);
        ck_assert_msg(fabs(num - gq) <= 1e-2 * fabs(gq) + 5e-6, "%s: directional derivative %g vs analytic %g",
                      q->name, num, gq);
    }
    /* layer 0's value-residual parameters are unused, layer 2's are not */
    const char *zero[] = {"layers.0.mixer.v0", "layers.0.mixer.v1", "layers.0.mixer.v2"};
    for (int z = 0; z < 3; z++) {
        hy_param *q = hy_model_param(m, zero[z]);
        for (size_t i = 0; i < q->numel; i++) ck_assert_float_eq(q->grad[i], 0.0f);
    }
    hy_param *v0 = hy_model_param(m, "layers.2.mixer.v0");
    double g2 = 0;
    for (size_t i = 0; i < v0->numel; i++) g2 += fabs(v0->grad[i]);
    ck_assert_msg(g2 > 0, "layer 2 v0 has no gradient");
    hy_free(dir), hy_free(keep);
    hy_model_free(m);
}
END_TEST

/* Largest |logit| difference between the parallel forward of the stack (vocabulary 20) over in
 * (B, T) and streaming the same tokens one step at a time from a fresh state. */
static double stack_step_error(hy_model *m, const int32_t *in, int B, int T) {
    ck_assert_int_eq(hy_model_forward(m, in, NULL, B, T, false, NULL), 0);
    float *full = hy_malloc((size_t)B * T * 20 * 4), *logits = hy_malloc((size_t)B * 20 * 4);
    int32_t *tok = hy_malloc((size_t)B * 4);
    memcpy(full, hy_model_logits(m), (size_t)B * T * 20 * 4);
    hy_model_state *st;
    ck_assert_int_eq(hy_model_state_new(m, B, &st), 0);
    double worst = 0;
    for (int t = 0; t < T; t++) {
        for (int b = 0; b < B; b++) tok[b] = in[(size_t)b * T + t];
        ck_assert_msg(hy_model_step(m, st, tok, logits) == 0, "%s", hy_last_error());
        for (int b = 0; b < B; b++)
            for (int v = 0; v < 20; v++) worst = fmax(worst, fabs(logits[b * 20 + v] - full[((size_t)b * T + t) * 20 + v]));
    }
    hy_model_state_free(m, st);
    hy_free(full), hy_free(logits), hy_free(tok);
    return worst;
}

/* Streaming the stack token by token (v_first handed from layer 0 to layer 2 at every step)
 * equals the parallel forward. */
START_TEST(stack_step_matches_forward) {
    hy_model *m = stack_model();
    enum { B = 2, T = 40 };
    int32_t in[B * T];
    for (int i = 0; i < B * T; i++) in[i] = (i * 7 + i / 5) % 20;
    double worst = stack_step_error(m, in, B, T);
    ck_assert_msg(worst < 1e-4, "step vs forward: %g", worst);
    ck_assert_uint_eq(hy_model_state_bytes(m, T), 2 * (2 * 8 * 8 + 16) * 4 + 2 * (size_t)T * 16 * 4);
    hy_model_free(m);
}
END_TEST

/* v_first's slot follows the first rwkv7 layer wherever it is (attention at layer 0, rwkv7 at 1
 * and 2): layer 1 writes it, layer 2 reads it; streaming equals the forward, and backward gives
 * layer 2's value-residual parameters a gradient and layer 1's none. */
START_TEST(stack_v_first_from_a_later_layer) {
    hy_model *m = stack_model_att_at(0);
    enum { B = 2, T = 12 };
    int32_t in[B * T], tg[B * T];
    for (int i = 0; i < B * T; i++) in[i] = (i * 7 + i / 5) % 20, tg[i] = (i * 3 + 1) % 20;
    hy_loss l;
    ck_assert_int_eq(hy_model_forward(m, in, tg, B, T, true, &l), 0);
    hy_model_zero_grad(m);
    ck_assert_msg(hy_model_backward(m) == 0, "%s", hy_last_error());
    double g1 = 0, g2 = 0;
    hy_param *v1 = hy_model_param(m, "layers.1.mixer.v0"), *v2 = hy_model_param(m, "layers.2.mixer.v0");
    for (size_t i = 0; i < v1->numel; i++) g1 += fabs(v1->grad[i]), g2 += fabs(v2->grad[i]);
    ck_assert_msg(g1 == 0 && g2 > 0, "v0 gradients: layer 1 %g (want 0), layer 2 %g", g1, g2);
    double worst = stack_step_error(m, in, B, T);
    ck_assert_msg(worst < 1e-4, "step vs forward: %g", worst);
    hy_model_free(m);
}
END_TEST

/* Outputs of HY_WKV7_STREAM_BYTES or more per array take non-temporal stores (forward y, the six
 * gradients): a batch that large against each of its entries on its own (below the size, plain
 * stores), bit for bit. */
START_TEST(wkv_streamed_outputs_match_plain) {
    const int N = 64, H = 4, T = 2 * HY_WKV7_CHUNK + 5, nch = hy_wkv7_nchunks(T);
    const size_t one = (size_t)T * H * N, NN = (size_t)N * N;
    const int B = (int)(HY_WKV7_STREAM_BYTES / (one * 4)) + 1;
    ck_assert(one * 4 < HY_WKV7_STREAM_BYTES && B * one * 4 >= HY_WKV7_STREAM_BYTES);
    wkv_case c;
    wkv_make(&c, B, T, H, N, 123);
    const size_t n = (size_t)B * one;
    float *out[2][8], *ck[2], *R = hy_malloc(n * 4);   /* [whole batch, entry by entry][y, sq, 6 gradients] */
    tu_fill_normal(R, n, 1, 124);
    for (int a = 0; a < 2; a++) {
        for (int i = 0; i < 8; i++) out[a][i] = hy_malloc(n * 4);
        ck[a] = hy_malloc((size_t)B * H * nch * NN * 4);
    }
    float **o = out[0];
    hy_wkv7_forward(&c.in, NULL, o[0], o[1], ck[0], NULL);
    ck_assert_int_eq(hy_wkv7_backward(&c.in, o[1], ck[0], R, o[2], o[3], o[4], o[5], o[6], o[7], NULL), 0);
    for (int bi = 0; bi < B; bi++) {
        const size_t e = (size_t)bi * one;
        hy_wkv7_in in1 = {1, T, H, N, c.in.r + e, c.in.w + e, c.in.k + e, c.in.v + e, c.in.q + e, c.in.b + e};
        float **p = out[1], *ck1 = ck[1] + (size_t)bi * H * nch * NN;
        hy_wkv7_forward(&in1, NULL, p[0] + e, p[1] + e, ck1, NULL);
        ck_assert_int_eq(hy_wkv7_backward(&in1, p[1] + e, ck1, R + e, p[2] + e, p[3] + e, p[4] + e, p[5] + e, p[6] + e, p[7] + e, NULL), 0);
    }
    const char *names[] = {"y", "sq", "dr", "dw", "dk", "dv", "dq", "db"};
    for (int i = 0; i < 8; i++) ck_assert_msg(!memcmp(out[0][i], out[1][i], n * 4), "%s differs", names[i]);
    ck_assert(!memcmp(ck[0], ck[1], (size_t)B * H * nch * NN * 4));
    for (int a = 0; a < 2; a++) {
        for (int i = 0; i < 8; i++) hy_free(out[a][i]);
        hy_free(ck[a]);
    }
    hy_free(R);
    wkv_free(&c);
}
END_TEST

/* Called from inside an OpenMP parallel region (where the kernels' own regions get a team of one
 * thread, smaller than the team their workspaces were sized for), the forward and backward give
 * the same bits as when called from outside. */
START_TEST(wkv_inside_parallel_region_matches) {
    const int B = 1, T = 2 * HY_WKV7_CHUNK + 5, H = 3, N = 64, nch = hy_wkv7_nchunks(T);
    const size_t n = (size_t)B * T * H * N, nck = (size_t)B * H * nch * N * N;
    wkv_case c;
    wkv_make(&c, B, T, H, N, 321);
    float *out[2][8], *ck[2], *R = hy_malloc(n * 4);
    tu_fill_normal(R, n, 1, 322);
    for (int a = 0; a < 2; a++) {
        for (int i = 0; i < 8; i++) out[a][i] = hy_malloc(n * 4);
        ck[a] = hy_malloc(nck * 4);
    }
    int rc[2][2];
    for (int a = 0; a < 2; a++) {
        float **o = out[a];
        #pragma omp parallel num_threads(2) if (a == 1)
        {
            #pragma omp single
            {
                rc[a][0] = hy_wkv7_forward(&c.in, NULL, o[0], o[1], ck[a], NULL);
                rc[a][1] = hy_wkv7_backward(&c.in, o[1], ck[a], R, o[2], o[3], o[4], o[5], o[6], o[7], NULL);
            }
        }
    }
    const char *names[] = {"y", "sq", "dr", "dw", "dk", "dv", "dq", "db"};
    for (int a = 0; a < 2; a++) ck_assert(rc[a][0] == 0 && rc[a][1] == 0);
    for (int i = 0; i < 8; i++) ck_assert_msg(!memcmp(out[0][i], out[1][i], n * 4), "%s differs", names[i]);
    ck_assert(!memcmp(ck[0], ck[1], nck * 4));
    for (int a = 0; a < 2; a++) {
        for (int i = 0; i < 8; i++) hy_free(out[a][i]);
        hy_free(ck[a]);
    }
    hy_free(R);
    wkv_free(&c);
}
END_TEST

/* A caller's workspace (`work`): the forward and backward give the same bits as with the
 * per-call allocation, grow it to hy_wkv7_work_floats and reuse it (no new allocation) on the
 * next calls; one that already holds garbage (a larger earlier problem's) changes nothing. */
START_TEST(wkv_caller_workspace_reused) {
    const int B = 2, T = 2 * HY_WKV7_CHUNK + 5, H = 3, N = 64, nch = hy_wkv7_nchunks(T);
    const size_t n = (size_t)B * T * H * N, nck = (size_t)B * H * nch * N * N;
    wkv_case c;
    wkv_make(&c, B, T, H, N, 451);
    float *out[3][8], *ck[3], *R = hy_malloc(n * 4);   /* [no workspace, fresh one, second call][y, sq, 6 grads] */
    tu_fill_normal(R, n, 1, 452);
    for (int a = 0; a < 3; a++) {
        for (int i = 0; i < 8; i++) out[a][i] = hy_malloc(n * 4);
        ck[a] = hy_malloc(nck * 4);
    }
    hy_buf work = {0};
    float *first = NULL;
    for (int a = 0; a < 3; a++) {
        float **o = out[a];
        hy_buf *w = a == 0 ? NULL : &work;
        ck_assert_int_eq(hy_wkv7_forward(&c.in, NULL, o[0], o[1], ck[a], w), 0);
        ck_assert_int_eq(hy_wkv7_backward(&c.in, o[1], ck[a], R, o[2], o[3], o[4], o[5], o[6], o[7], w), 0);
        if (a == 1) {
            ck_assert_msg(work.cap == (size_t)hy_wkv7_work_floats(B, H, N, omp_get_max_threads()),
                          "workspace %zu floats, hy_wkv7_work_floats says %.0f", work.cap,
                          hy_wkv7_work_floats(B, H, N, omp_get_max_threads()));
            first = work.p;
            for (size_t e = 0; e < work.cap; e++) work.p[e] = NAN;   /* what a call leaves must not matter */
        }
        if (a == 2) ck_assert_msg(work.p == first, "the workspace was allocated again");
    }
    const char *names[] = {"y", "sq", "dr", "dw", "dk", "dv", "dq", "db"};
    for (int a = 1; a < 3; a++) {
        for (int i = 0; i < 8; i++) ck_assert_msg(!memcmp(out[0][i], out[a][i], n * 4), "call %d: %s differs", a, names[i]);
        ck_assert(!memcmp(ck[0], ck[a], nck * 4));
    }
    hy_buf_free(&work);
    for (int a = 0; a < 3; a++) {
        for (int i = 0; i < 8; i++) hy_free(out[a][i]);
        hy_free(ck[a]);
    }
    hy_free(R);
    wkv_free(&c);
}
END_TEST

static Suite *rwkv7_suite(void) {
    Suite *s = suite_create("rwkv7");
    TCase *k = tcase_create("wkv");
    tcase_add_test(k, wkv_forward_matches_reference);
    tcase_add_test(k, wkv_state_carries_over);
    tcase_add_test(k, wkv_backward_finite_differences);
    tcase_add_test(k, wkv_streamed_outputs_match_plain);
    tcase_add_test(k, wkv_inside_parallel_region_matches);
    tcase_add_test(k, wkv_caller_workspace_reused);
    tcase_set_timeout(k, 60);
    suite_add_tcase(s, k);
    TCase *b = tcase_create("blocks");
    tcase_add_test(b, rwkv7_first_layer_gradients);
    tcase_add_test(b, rwkv7_later_layer_gradients);
    tcase_add_test(b, rwkv7_backward_twice_same);
    tcase_add_test(b, cmix_gradients);
    tcase_add_test(b, rwkv7_and_cmix_step_and_prefill);
    tcase_add_test(b, options_state_bytes_flop);
    tcase_add_test(b, rwkv7_init_as_upstream);
    tcase_set_timeout(b, 60);
    suite_add_tcase(s, b);
    TCase *m = tcase_create("stack");
    tcase_add_test(m, stack_gradients_v_first_across_attention);
    tcase_add_test(m, stack_step_matches_forward);
    tcase_add_test(m, stack_v_first_from_a_later_layer);
    tcase_set_timeout(m, 60);
    suite_add_tcase(s, m);
    return s;
}
HY_TEST_SUITE(rwkv7_suite)

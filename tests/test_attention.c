/* The attention block: tiled (FlashAttention-2 style) kernels against the naive T×T reference and
 * against a direct double-precision transcription of SPEC §2; the bf16 tile products against f32;
 * finite-difference gradients;
 * streaming (step, prefill) against the parallel forward; accounting; option errors; memory that
 * grows linearly with T. */
#include "core/bf16.h"
#include "core/error.h"
#include "core/gemm.h"
#include "core/mem.h"
#include "core/timer.h"
#include "layers/attention/attention.h"
#include "tests/testutil.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { P_Q, P_K, P_V, P_O };

/* An attention layer with the given options (NULL = default); weights re-drawn (q, k larger than
 * the init) so that the softmax is far from uniform and every term of the gradient matters. */
static void make_layer(hy_layer *L, int d, const char *heads, const char *kv, const char *rope, uint64_t seed) {
    char b[3][48];
    const char *pairs[3];
    int n = 0;
    if (heads) snprintf(b[n], sizeof b[n], "n_heads=%s", heads), pairs[n] = b[n], n++;
    if (kv) snprintf(b[n], sizeof b[n], "n_kv_heads=%s", kv), pairs[n] = b[n], n++;
    if (rope) snprintf(b[n], sizeof b[n], "rope_theta=%s", rope), pairs[n] = b[n], n++;
    tu_layer(L, "attention", d, pairs, n, seed);
    hy_param_spec s[4];
    L->ops->param_specs(&L->opts, d, s);
    for (int p = 0; p < 4; p++)
        tu_fill_normal(L->p[p], (size_t)s[p].shape[0] * s[p].shape[1], (p <= P_K ? 2.0f : 1.0f) / sqrtf((float)d),
                       seed * 10 + p);
}

static size_t numel(hy_layer *L, int p) {
    hy_param_spec s[4];
    L->ops->param_specs(&L->opts, L->d_model, s);
    return (size_t)s[p].shape[0] * s[p].shape[1];
}

/* Halves every weight: softer scores keep float finite differences (eps 1e-2) accurate to ~1e-3;
 * with the sharper default of make_layer their rounding noise alone reaches ~1.5%. */
static void soften(hy_layer *L) {
    for (int p = 0; p < 4; p++)
        for (size_t i = 0; i < numel(L, p); i++) L->p[p][i] *= 0.5f;
}

/* the error relative to the reference tensor's scale, floored at 1 for gradients that vanish (dq and
 * dk at T = 1, where only rounding noise is left). */
static double nerr(const float *a, const float *ref, size_t n) { return tu_scaled_err(a, ref, n, 1); }

static void zero_grads(hy_layer *L) {
    for (int p = 0; p < 4; p++) memset(L->g[p], 0, numel(L, p) * sizeof(float));
}

/* Tiled forward + backward against the naive path on the same layer and data. */
static void compare_paths(int d, const char *heads, const char *kv, const char *rope, int B, int T) {
    hy_layer L;
    make_layer(&L, d, heads, kv, rope, 7 + T);
    size_t n = (size_t)B * T * d;
    float *x = hy_malloc(n * 4), *dy = hy_malloc(n * 4), *y1 = hy_malloc(n * 4), *y2 = hy_malloc(n * 4),
          *dx1 = hy_malloc(n * 4), *dx2 = hy_malloc(n * 4), *g1[4];
    tu_fill_normal(x, n, 1, 1), tu_fill_normal(dy, n, 1, 2);
    zero_grads(&L);
    ck_assert_msg(L.ops->forward(&L, x, y1, B, T) == 0, "%s", hy_last_error());
    ck_assert_msg(L.ops->backward(&L, dy, dx1, B, T) == 0, "%s", hy_last_error());
    for (int p = 0; p < 4; p++) {
        g1[p] = hy_malloc(numel(&L, p) * 4);
        memcpy(g1[p], L.g[p], numel(&L, p) * 4);
    }
    zero_grads(&L);
    ck_assert_msg(hy_attention_forward_naive(&L, x, y2, B, T) == 0, "%s", hy_last_error());
    ck_assert_msg(hy_attention_backward_naive(&L, dy, dx2, B, T) == 0, "%s", hy_last_error());
    const char *what = "d %d heads %s kv %s rope %s B %d T %d: %s error %g";
    double e = nerr(y1, y2, n);
    ck_assert_msg(e < 1e-5, what, d, heads, kv, rope, B, T, "y", e);
    e = nerr(dx1, dx2, n);
    ck_assert_msg(e < 1e-4, what, d, heads, kv, rope, B, T, "dx", e);
    static const char *names[] = {"dq_proj", "dk_proj", "dv_proj", "do_proj"};
    for (int p = 0; p < 4; p++) {
        e = nerr(g1[p], L.g[p], numel(&L, p));
        ck_assert_msg(e < 1e-4, what, d, heads, kv, rope, B, T, names[p], e);
        hy_free(g1[p]);
    }
    hy_free(x), hy_free(dy), hy_free(y1), hy_free(y2), hy_free(dx1), hy_free(dx2);
    hy_layer_standalone_free(&L);
}

START_TEST(tiled_matches_naive) {
    static const struct { int d; const char *h, *kv, *rope; } cfg[] = {
        {64, "4", "4", NULL},      {64, "4", "4", "10000"}, {64, "4", "2", "10000"}, {64, "4", "1", NULL},
        {32, "4", "2", NULL},      {128, "2", "1", "500000"}, {256, "2", "2", "10000"},
    };
    static const int Ts[] = {1, 7, 40, 70, 130};   /* 40: one key tile, transposed in the kernel's tasks */
    for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++)
        for (size_t t = 0; t < sizeof Ts / sizeof *Ts; t++)
            compare_paths(cfg[c].d, cfg[c].h, cfg[c].kv, cfg[c].rope, 1 + (int)((t + c) % 3), Ts[t]);
    compare_paths(64, "4", "2", "10000", 2, 200);
}
END_TEST

/* Both schedules of the tiled backward (by (batch, kv head) group, each task owning its dq rows;
 * by key-tile slots with dQ copies) against the naive path, at 1 and 2 threads, over one key tile
 * (T 64, the training shape's) and several (T 130, 200). */
START_TEST(backward_schedules_match_naive) {
    static const int Ts[] = {5, 64, 130, 200};
    for (int th = 1; th <= 2; th++) {
        hy_set_threads(th);
        ck_assert(!hy_flash_backward_by_group(1, 2, th));    /* 2 pairs: slots */
        ck_assert(hy_flash_backward_by_group(2 * th, 4, th)); /* 8·th pairs: groups */
        for (size_t t = 0; t < sizeof Ts / sizeof *Ts; t++) {
            compare_paths(64, "4", "2", "10000", 1, Ts[t]);       /* slots */
            compare_paths(64, "4", "4", NULL, 2 * th, Ts[t]);     /* groups */
            compare_paths(64, "4", "2", "10000", 4 * th, Ts[t]);  /* groups, GQA */
        }
    }
    hy_set_threads(0);
}
END_TEST

/* SPEC §2 written out in double precision: projections, RoPE (rotate_half, Llama), GQA head
 * mapping, causal softmax, o_proj. */
static void spec_forward(hy_layer *L, const float *x, double *y, int B, int T, int H, int Hkv, double theta) {
    int d = L->d_model, hd = d / H, half = hd / 2;
    double *q = calloc((size_t)T * H * hd, 8), *k = calloc((size_t)T * Hkv * hd, 8), *v = calloc((size_t)T * Hkv * hd, 8),
           *o = calloc((size_t)T * H * hd, 8), *s = calloc((size_t)T, 8);
    for (int b = 0; b < B; b++) {
        const float *xb = x + (size_t)b * T * d;
        for (int t = 0; t < T; t++) {
            for (int r = 0; r < H * hd; r++) {
                double a = 0;
                for (int c = 0; c < d; c++) a += (double)L->p[P_Q][r * d + c] * xb[t * d + c];
                q[t * H * hd + r] = a;
            }
            for (int r = 0; r < Hkv * hd; r++) {
                double a = 0, e = 0;
                for (int c = 0; c < d; c++) a += (double)L->p[P_K][r * d + c] * xb[t * d + c];
                for (int c = 0; c < d; c++) e += (double)L->p[P_V][r * d + c] * xb[t * d + c];
                k[t * Hkv * hd + r] = a, v[t * Hkv * hd + r] = e;
            }
            if (theta > 0)
                for (int which = 0; which < 2; which++) {
                    int nh = which ? Hkv : H;
                    double *m = which ? k : q;
                    for (int h = 0; h < nh; h++) {
                        double *p = m + (size_t)t * nh * hd + h * hd, rot[512];
                        for (int i = 0; i < hd; i++) rot[i] = i < half ? -p[i + half] : p[i - half];
                        for (int i = 0; i < hd; i++) {
                            double ang = t * pow(theta, -2.0 * (i % half) / hd);
                            p[i] = p[i] * cos(ang) + rot[i] * sin(ang);
                        }
                    }
                }
        }
        for (int h = 0; h < H; h++) {
            int g = h / (H / Hkv);
            for (int t = 0; t < T; t++) {
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= t; j++) {
                    double a = 0;
                    for (int c = 0; c < hd; c++) a += q[t * H * hd + h * hd + c] * k[j * Hkv * hd + g * hd + c];
                    s[j] = a / sqrt(hd);
                    mx = fmax(mx, s[j]);
                }
                for (int j = 0; j <= t; j++) sum += s[j] = exp(s[j] - mx);
                for (int c = 0; c < hd; c++) {
                    double a = 0;
                    for (int j = 0; j <= t; j++) a += s[j] / sum * v[j * Hkv * hd + g * hd + c];
                    o[t * H * hd + h * hd + c] = a;
                }
            }
        }
        for (int t = 0; t < T; t++)
            for (int r = 0; r < d; r++) {
                double a = 0;
                for (int c = 0; c < H * hd; c++) a += (double)L->p[P_O][r * H * hd + c] * o[t * H * hd + c];
                y[((size_t)b * T + t) * d + r] = a;
            }
    }
    free(q), free(k), free(v), free(o), free(s);
}

START_TEST(forward_follows_spec) {
    for (int rope = 0; rope < 2; rope++) {
        enum { B = 2, T = 75, D = 32 };
        hy_layer L;
        make_layer(&L, D, "4", "2", rope ? "100" : NULL, 3);
        float *x = hy_malloc(B * T * D * 4), *y = hy_malloc(B * T * D * 4), *yd = hy_malloc(B * T * D * 4);
        double *ref = malloc(sizeof(double) * B * T * D);
        tu_fill_normal(x, B * T * D, 1, 9);
        ck_assert_int_eq(L.ops->forward(&L, x, y, B, T), 0);
        spec_forward(&L, x, ref, B, T, 4, 2, rope ? 100.0 : 0.0);
        for (int i = 0; i < B * T * D; i++) yd[i] = (float)ref[i];
        double e = nerr(y, yd, B * T * D);
        ck_assert_msg(e < 2e-5, "rope %d: error against the SPEC transcription %g", rope, e);
        hy_free(x), hy_free(y), hy_free(yd), free(ref);
        hy_layer_standalone_free(&L);
    }
}
END_TEST

START_TEST(gradients_mha_rope) {
    hy_layer L;
    make_layer(&L, 16, "2", NULL, "10000", 5);
    soften(&L);
    double e = tu_grad_check(&L, 2, 9, 1e-2f, 10, 21);
    ck_assert_msg(e < 1e-2, "MHA + RoPE gradient error %g", e);
    hy_layer_standalone_free(&L);
}
END_TEST

START_TEST(gradients_gqa) {
    hy_layer L;
    make_layer(&L, 32, "4", "2", NULL, 6);
    soften(&L);
    double e = tu_grad_check(&L, 2, 9, 1e-2f, 10, 22);
    ck_assert_msg(e < 1e-2, "GQA gradient error %g", e);
    hy_layer_standalone_free(&L);
    make_layer(&L, 32, "4", "1", "10000", 8);
    soften(&L);
    e = tu_grad_check(&L, 1, 9, 1e-2f, 10, 23);
    ck_assert_msg(e < 1e-2, "MQA + RoPE gradient error %g", e);
    hy_layer_standalone_free(&L);
}
END_TEST

/* 300 tokens: the KV cache grows past its first 256-token block during the steps. */
/* Inside a model q_proj, k_proj and v_proj lie back to back and run as one stacked product
 * (forward 2 products instead of 4, backward 4 instead of 8); the results match the separate
 * products', with and without RoPE and grouped-query heads, at a partial and a whole key tile. */
START_TEST(stacked_qkv_matches_separate) {
    static const char *cfg[][3] = {{"4", NULL, NULL}, {"4", "2", "10000"}, {"2", "1", "500"}};
    for (int c = 0; c < 3; c++)
        for (int T = 37; T <= 64; T += 27) {
            hy_layer L;
            make_layer(&L, 32, cfg[c][0], cfg[c][1], cfg[c][2], 3 + c);
            long products[2];
            double e = tu_arena_check(&L, 2, T, 17 + c, products);
            ck_assert_msg(e < 1e-5, "heads %s kv %s rope %s T %d: stacked q/k/v error %g", cfg[c][0], cfg[c][1],
                          cfg[c][2], T, e);
            ck_assert_int_eq(products[0], 4 + 8);
            ck_assert_int_eq(products[1], 2 + 4);
            hy_layer_standalone_free(&L);
        }
}
END_TEST

START_TEST(step_matches_forward) {
    hy_layer L;
    make_layer(&L, 32, "4", "2", "10000", 4);
    double e = tu_step_check(&L, 2, 300, 12);
    ck_assert_msg(e < 1e-5, "step vs forward error %g", e);
    hy_layer_standalone_free(&L);
}
END_TEST

/* prefill(T1), prefill(T2) (crossing the cache growth), then single steps == one forward. */
START_TEST(prefill_then_steps_match_forward) {
    enum { B = 2, D = 64, T1 = 200, T2 = 90, T3 = 5, T = T1 + T2 + T3 };
    hy_layer L;
    make_layer(&L, D, "4", "2", "10000", 5);
    float *x = hy_malloc(B * T * D * 4), *y = hy_malloc(B * T * D * 4), *ys = hy_malloc(B * T * D * 4),
          *xc = hy_malloc(B * T * D * 4), *yc = hy_malloc(B * T * D * 4);
    tu_fill_normal(x, B * T * D, 1, 13);
    ck_assert_int_eq(L.ops->forward(&L, x, y, B, T), 0);
    void *st;
    ck_assert_int_eq(L.ops->state_new(&L, B, &st), 0);
    static const int chunk[] = {T1, T2, 1, 1, 1, 1, 1};
    for (int c = 0, t0 = 0; c < 7; t0 += chunk[c], c++) {   /* gather (B, n, D) of tokens t0.. */
        int n = chunk[c];
        for (int b = 0; b < B; b++) memcpy(xc + (size_t)b * n * D, x + ((size_t)b * T + t0) * D, (size_t)n * D * 4);
        int rc = n == 1 ? L.ops->step(&L, st, xc, yc, B) : L.ops->prefill(&L, st, xc, yc, B, n);
        ck_assert_msg(rc == 0, "%s", hy_last_error());
        for (int b = 0; b < B; b++) memcpy(ys + ((size_t)b * T + t0) * D, yc + (size_t)b * n * D, (size_t)n * D * 4);
    }
    double e = nerr(ys, y, B * T * D);
    ck_assert_msg(e < 1e-5, "prefill/step vs forward error %g", e);
    L.ops->state_free(&L, st);
    hy_free(x), hy_free(y), hy_free(ys), hy_free(xc), hy_free(yc);
    hy_layer_standalone_free(&L);
}
END_TEST

START_TEST(accounting_and_names) {
    const hy_block_ops *ops = hy_block_find("attention");
    hy_opts o;
    const char *p[] = {"n_kv_heads=2"};
    ck_assert_int_eq(hy_block_opts_from_pairs(ops, 256, p, 1, &o), 0);
    ck_assert_int_eq(hy_opt_int(&o, 0), 4);   /* auto: 256 / 64 */
    ck_assert(o.is_null[2]);
    /* KV cache: 2 tensors × 100 tokens × 2 kv heads × 64 × 4 bytes */
    ck_assert_uint_eq(ops->state_bytes(&o, 256, 100), 2u * 100 * 2 * 64 * 4);
    /* projections 2·10·256·(2·256 + 2·128) + core 4·4·64·(10·11/2) */
    ck_assert_double_eq(ops->flop(&o, 256, 10), 2.0 * 10 * 256 * 768 + 4.0 * 4 * 64 * 55);
    hy_param_spec s[4];
    ck_assert_int_eq(ops->param_specs(&o, 256, s), 4);
    static const char *names[] = {"q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"};
    static const int shapes[4][2] = {{256, 256}, {128, 256}, {128, 256}, {256, 256}};
    for (int i = 0; i < 4; i++) {
        ck_assert_str_eq(s[i].name, names[i]);
        ck_assert_int_eq(s[i].ndim, 2);
        ck_assert_int_eq(s[i].shape[0], shapes[i][0]);
        ck_assert_int_eq(s[i].shape[1], shapes[i][1]);
        ck_assert_uint_eq(s[i].flags & HY_PARAM_NO_DECAY, 0);
    }
    static const int autos[][2] = {{64, 1}, {96, 1}, {320, 5}, {200, 2}, {16, 1}, {1024, 16}};
    for (size_t i = 0; i < sizeof autos / sizeof *autos; i++) {
        ck_assert_int_eq(hy_block_opts_from_pairs(ops, autos[i][0], NULL, 0, &o), 0);
        ck_assert_int_eq(hy_opt_int(&o, 0), autos[i][1]);
        ck_assert_int_eq(hy_opt_int(&o, 1), autos[i][1]);
    }
}
END_TEST

static void expect_error(int d, const char *a, const char *b, const char *needle, int bad_index) {
    const hy_block_ops *ops = hy_block_find("attention");
    const char *pairs[] = {a, b};
    hy_opts o;
    ck_assert_int_lt(hy_block_opts_from_pairs(ops, d, pairs, b ? 2 : 1, &o), 0);
    ck_assert_msg(strstr(hy_last_error(), needle), "'%s' does not mention '%s'", hy_last_error(), needle);
    if (bad_index < 0) return;   /* rejected by the option parser, before resolve() */
    hy_opts_defaults(ops, &o);
    char msg[256];
    for (int i = 0; i < (b ? 2 : 1); i++) {
        const char *eq = strchr(pairs[i], '=');
        char key[32];
        snprintf(key, sizeof key, "%.*s", (int)(eq - pairs[i]), pairs[i]);
        ck_assert_int_eq(hy_opt_parse(ops, &o, hy_opt_index(ops, key), eq + 1, msg, sizeof msg), 0);
    }
    int bad = -2;
    ck_assert_int_lt(ops->resolve(&o, d, &bad, msg, sizeof msg), 0);
    ck_assert_int_eq(bad, bad_index);
    ck_assert_msg(strstr(msg, needle), "'%s' does not mention '%s'", msg, needle);
}

START_TEST(resolve_rejects_bad_options) {
    expect_error(128, "n_heads=3", NULL, "n_heads = 3 does not divide d_model = 128", 0);
    expect_error(128, "n_heads=4", "n_kv_heads=3", "n_kv_heads = 3 does not divide n_heads = 4", 1);
    expect_error(128, "n_heads=2", "n_kv_heads=4", "n_kv_heads", 1);
    expect_error(128, "rope_theta=0", NULL, "rope_theta", 2);
    expect_error(128, "rope_theta=-5", NULL, "rope_theta", -1);
    expect_error(12, "n_heads=4", "rope_theta=10000", "rope_theta", 0);   /* head size 3 is odd */
}
END_TEST

/* Peak bytes of one forward (keep_for_backward) on a fresh layer, above what was live before.
 * Measured (d 128, 2 heads): tiled 2.97 / 5.86 MB at T = 1024 / 2048, naive 10.8 / 38.3 MB. */
static size_t forward_peak(int T, bool naive) {
    enum { D = 128 };
    hy_layer L;
    make_layer(&L, D, "2", NULL, "10000", 1);
    float *x = hy_malloc((size_t)T * D * 4), *y = hy_malloc((size_t)T * D * 4);
    tu_fill_normal(x, (size_t)T * D, 1, 2);
    size_t base = hy_mem_current();
    hy_mem_reset_peak();
    int rc = naive ? hy_attention_forward_naive(&L, x, y, 1, T) : L.ops->forward(&L, x, y, 1, T);
    ck_assert_msg(rc == 0, "%s", hy_last_error());
    size_t peak = hy_mem_peak() - base;
    hy_free(x), hy_free(y);
    hy_layer_standalone_free(&L);
    return peak;
}

START_TEST(tiled_memory_is_linear) {
    size_t t1 = forward_peak(1024, false), t2 = forward_peak(2048, false);
    size_t n1 = forward_peak(1024, true), n2 = forward_peak(2048, true);
    ck_assert_msg(t2 < 2.5 * t1, "tiled peak %zu at T=1024, %zu at T=2048", t1, t2);
    ck_assert_msg(n2 > 3.2 * n1, "naive peak %zu at T=1024, %zu at T=2048", n1, n2);
    ck_assert_msg(t2 * 4 < n2, "tiled %zu vs naive %zu at T=2048", t2, n2);
}
END_TEST

/* Same inputs, same thread count: bit-identical output and gradients. */
START_TEST(tiled_is_deterministic) {
    enum { B = 2, T = 333, D = 64 };
    hy_layer L;
    make_layer(&L, D, "4", "2", "10000", 2);
    float *x = hy_malloc(B * T * D * 4), *dy = hy_malloc(B * T * D * 4), *y[2], *dx[2], *g[2];
    tu_fill_normal(x, B * T * D, 1, 3), tu_fill_normal(dy, B * T * D, 1, 4);
    for (int r = 0; r < 2; r++) {
        y[r] = hy_malloc(B * T * D * 4), dx[r] = hy_malloc(B * T * D * 4), g[r] = hy_malloc(numel(&L, P_Q) * 4);
        zero_grads(&L);
        ck_assert_int_eq(L.ops->forward(&L, x, y[r], B, T), 0);
        ck_assert_int_eq(L.ops->backward(&L, dy, dx[r], B, T), 0);
        memcpy(g[r], L.g[P_Q], numel(&L, P_Q) * 4);
    }
    ck_assert(memcmp(y[0], y[1], B * T * D * 4) == 0);
    ck_assert(memcmp(dx[0], dx[1], B * T * D * 4) == 0);
    ck_assert(memcmp(g[0], g[1], numel(&L, P_Q) * 4) == 0);
    /* backward of a forward that was not kept is an error, not a crash */
    L.keep_for_backward = false;
    ck_assert_int_eq(L.ops->forward(&L, x, y[0], B, T), 0);
    ck_assert_int_lt(L.ops->backward(&L, dy, dx[0], B, T), 0);
    for (int r = 0; r < 2; r++) hy_free(y[r]), hy_free(dx[r]), hy_free(g[r]);
    hy_free(x), hy_free(dy);
    hy_layer_standalone_free(&L);
}
END_TEST

/* One kernel problem in the streaming layout: q, o (B, Tq, H·hd); v (B, cap, Hkv·hd); kt either in
 * key blocks (the KV cache's layout) or plain (B, Hkv, hd, Tk); lse (B, H, Tq). */
typedef struct {
    hy_flash_args a;
    float *q, *kt, *v, *o, *lse;
} kernel_case;

static kernel_case kernel_case_new(int B, int H, int Hkv, int hd, int Tq, int Tk, bool blocked, uint64_t seed) {
    kernel_case c = {0};
    int cap = Tk + 70;   /* room past Tk, as in a grown cache */
    size_t qn = (size_t)B * Tq * H * hd, vn = (size_t)B * cap * Hkv * hd, kblk = (size_t)hd * HY_FLASH_BC,
           khs = blocked ? (size_t)(cap + HY_FLASH_BC - 1) / HY_FLASH_BC * kblk : (size_t)hd * Tk;
    c.q = hy_malloc(qn * 4), c.o = hy_malloc(qn * 4), c.v = hy_malloc(vn * 4), c.kt = hy_malloc((size_t)B * Hkv * khs * 4);
    c.lse = hy_malloc((size_t)B * H * Tq * 4);
    tu_fill_normal(c.q, qn, 1.5f, seed), tu_fill_normal(c.v, vn, 1, seed + 1);
    tu_fill_normal(c.kt, (size_t)B * Hkv * khs, 1, seed + 2);
    c.a = (hy_flash_args){B, H, Hkv, hd, Tq, Tk, 1.0f / sqrtf((float)hd),
                          .q = {c.q, (size_t)Tq * H * hd, hd, H * hd, 0},
                          .kt = {c.kt, Hkv * khs, khs, blocked ? HY_FLASH_BC : Tk, blocked ? kblk : 0},
                          .v = {c.v, (size_t)cap * Hkv * hd, hd, Hkv * hd, 0},
                          .o = {c.o, (size_t)Tq * H * hd, hd, H * hd, 0}, .lse = c.lse};
    return c;
}

static void kernel_case_free(kernel_case *c) { hy_free(c->q), hy_free(c->kt), hy_free(c->v), hy_free(c->o), hy_free(c->lse); }

/* Element (b, g, c, key) of the kt view. */
static float kt_at(const hy_flash_view *v, int b, int g, int c, int j) {
    const float *p = v->p + b * v->bs + g * v->hs;
    return v->tile ? p[(size_t)(j / HY_FLASH_BC) * v->tile + (size_t)c * v->ld + j % HY_FLASH_BC] : p[(size_t)c * v->ld + j];
}

/* The attention of the case in double precision, straight from the definition: o into ref (B, Tq,
 * H·hd), the log-sum-exp into lref (B, H, Tq). */
static void kernel_reference(const kernel_case *c, double *ref, double *lref) {
    const hy_flash_args *a = &c->a;
    double *s = malloc(sizeof(double) * (size_t)a->Tk);
    for (int b = 0; b < a->n_batch; b++)
        for (int h = 0; h < a->H; h++)
            for (int i = 0; i < a->Tq; i++) {
                int g = h / (a->H / a->Hkv), last = a->Tk - a->Tq + i;
                const float *q = a->q.p + b * a->q.bs + h * a->q.hs + (size_t)i * a->q.ld;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= last; j++) {
                    double d = 0;
                    for (int x = 0; x < a->hd; x++) d += (double)q[x] * kt_at(&a->kt, b, g, x, j);
                    s[j] = d * a->scale, mx = fmax(mx, s[j]);
                }
                for (int j = 0; j <= last; j++) sum += s[j] = exp(s[j] - mx);
                double *o = ref + ((size_t)(b * a->Tq + i) * a->H + h) * a->hd;
                for (int x = 0; x < a->hd; x++) {
                    double acc = 0;
                    for (int j = 0; j <= last; j++) acc += s[j] * a->v.p[b * a->v.bs + g * a->v.hs + (size_t)j * a->v.ld + x];
                    o[x] = acc / sum;
                }
                lref[((size_t)b * a->H + h) * a->Tq + i] = mx + log(sum);
            }
    free(s);
}

/* Largest |x - ref| / max |ref| over n, and the largest |x - ref| of the lse rows. */
static double err_vs(const float *x, const double *ref, size_t n) {
    double e = 0, mx = 1e-30;
    for (size_t i = 0; i < n; i++) e = fmax(e, fabs(x[i] - ref[i])), mx = fmax(mx, fabs(ref[i]));
    return e / mx;
}

/* The split-key decode kernel against the query-tile kernel and a double-precision reference, over
 * contexts (one key, partial and whole key blocks, many chunks), head sizes (masked tile columns
 * included), grouped-query heads, several sequences and query counts up to HY_FLASH_DECODE_TQ, with
 * the keys in the KV cache's blocked layout and plain; and its result bit-identical with 1 and 2
 * threads (the chunking depends only on the shape). */
START_TEST(decode_matches_tiled_and_reference) {
    static const struct { int B, H, Hkv, hd, Tq, Tk; } cs[] = {
        {1, 4, 4, 64, 1, 1},     {1, 4, 4, 64, 1, 63},    {2, 4, 2, 64, 1, 64},     {1, 4, 1, 32, 1, 65},
        {3, 2, 2, 16, 1, 300},   {1, 8, 2, 128, 1, 1000}, {2, 4, 4, 80, 1, 4133},   {1, 4, 2, 64, 2, 129},
        {2, 4, 4, 24, 5, 777},   {1, 2, 1, 64, 16, 16},   {2, 8, 4, 32, 16, 2049},  {1, 4, 4, 64, 1, 9000},
        {2, 4, 4, 64, 3, 5},
    };
    for (size_t k = 0; k < sizeof cs / sizeof *cs; k++)
        for (int blocked = 0; blocked < 2; blocked++) {
            kernel_case c = kernel_case_new(cs[k].B, cs[k].H, cs[k].Hkv, cs[k].hd, cs[k].Tq, cs[k].Tk, blocked, 40 + k);
            size_t no = (size_t)cs[k].B * cs[k].Tq * cs[k].H * cs[k].hd, nl = (size_t)cs[k].B * cs[k].H * cs[k].Tq;
            double *ref = malloc(no * 8), *lref = malloc(nl * 8);
            float *tiled = hy_malloc(no * 4), *ltiled = hy_malloc(nl * 4), *one = hy_malloc(no * 4);
            kernel_reference(&c, ref, lref);
            ck_assert_int_eq(hy_flash_tiled(&c.a), 0);
            memcpy(tiled, c.o, no * 4), memcpy(ltiled, c.lse, nl * 4);
            hy_set_threads(1);
            ck_assert_int_eq(hy_flash_decode(&c.a), 0);
            memcpy(one, c.o, no * 4);
            hy_set_threads(2);
            ck_assert_int_eq(hy_flash_decode(&c.a), 0);
            hy_set_threads(0);
            const char *what = "B %d H %d Hkv %d hd %d Tq %d Tk %d %s: %s %g";
            const char *lay = blocked ? "blocked" : "plain";
#define CASE cs[k].B, cs[k].H, cs[k].Hkv, cs[k].hd, cs[k].Tq, cs[k].Tk, lay
            double e = err_vs(c.o, ref, no);
            ck_assert_msg(e < 1e-5, what, CASE, "decode vs reference", e);
            e = err_vs(tiled, ref, no);
            ck_assert_msg(e < 1e-5, what, CASE, "tiled vs reference", e);
            e = tu_scaled_err(c.o, tiled, no, 1e-30);
            ck_assert_msg(e < 1e-5, what, CASE, "decode vs tiled", e);
            ck_assert_msg(memcmp(one, c.o, no * 4) == 0, what, CASE, "1 vs 2 threads differ", 1.0);
            double el = 0;
            for (size_t i = 0; i < nl; i++) el = fmax(el, fabs(c.lse[i] - lref[i]) + fabs(ltiled[i] - lref[i]));
            ck_assert_msg(el < 1e-5, what, CASE, "lse", el);
#undef CASE
            free(ref), free(lref), hy_free(tiled), hy_free(ltiled), hy_free(one);
            kernel_case_free(&c);
        }
}
END_TEST

/* Within one key tile the kernels may be given no transposed keys (kt empty): each task then
 * transposes its tile itself, with the same bits as from the given kt, for GQA, Tq < Tk, head sizes
 * with masked columns and partial tiles (and hy_flash_forward takes the query tiles for few queries
 * then); past one key tile (or under bf16) such a call fails. */
START_TEST(tiled_transposes_its_own_tile) {
    static const struct { int B, H, Hkv, hd, Tq, Tk; } cs[] = {
        {2, 4, 4, 32, 50, 50}, {1, 4, 2, 24, 30, 64}, {3, 2, 1, 64, 64, 64}, {1, 4, 4, 32, 17, 17}, {2, 4, 2, 32, 8, 40},
    };
    for (size_t k = 0; k < sizeof cs / sizeof *cs; k++) {
        kernel_case c = kernel_case_new(cs[k].B, cs[k].H, cs[k].Hkv, cs[k].hd, cs[k].Tq, cs[k].Tk, k % 2, 60 + k);
        const int B = cs[k].B, Hkv = cs[k].Hkv, hd = cs[k].hd, Tk = cs[k].Tk;
        size_t no = (size_t)B * cs[k].Tq * cs[k].H * hd, nl = (size_t)B * cs[k].H * cs[k].Tq;
        float *kr = hy_malloc((size_t)B * Hkv * Tk * hd * 4), *o1 = hy_malloc(no * 4), *l1 = hy_malloc(nl * 4);
        for (int b = 0; b < B; b++)   /* k in rows (b, g, key, c) from the kt view */
            for (int g = 0; g < Hkv; g++)
                for (int j = 0; j < Tk; j++)
                    for (int x = 0; x < hd; x++) kr[(((size_t)b * Hkv + g) * Tk + j) * hd + x] = kt_at(&c.a.kt, b, g, x, j);
        c.a.k = (hy_flash_view){kr, (size_t)Hkv * Tk * hd, (size_t)Tk * hd, hd, 0};
        ck_assert_int_eq(hy_flash_tiled(&c.a), 0);
        memcpy(o1, c.o, no * 4), memcpy(l1, c.lse, nl * 4);
        hy_flash_view kt = c.a.kt;
        c.a.kt = (hy_flash_view){0};
        ck_assert_int_eq(hy_flash_forward(&c.a), 0);
        ck_assert_msg(memcmp(o1, c.o, no * 4) == 0 && memcmp(l1, c.lse, nl * 4) == 0, "case %zu: o or lse differ", k);
        c.a.bf16 = true;
        ck_assert_int_lt(hy_flash_tiled(&c.a), 0);
        c.a.kt = kt;
        hy_free(kr), hy_free(o1), hy_free(l1);
        kernel_case_free(&c);
    }
    kernel_case c = kernel_case_new(1, 2, 2, 32, 65, 65, false, 70);
    c.a.k = (hy_flash_view){c.v, c.a.v.bs, c.a.v.hs, c.a.v.ld, 0};   /* any rows: the call must refuse first */
    c.a.kt = (hy_flash_view){0};
    ck_assert_int_lt(hy_flash_tiled(&c.a), 0);
    ck_assert_msg(strstr(hy_last_error(), "no transposed keys for 65 keys"), "%s", hy_last_error());
    kernel_case_free(&c);
}
END_TEST

/* Forward and backward of the tiled path at precision p: y, dx and the four weight gradients
 * (one vector), with the portable bf16 code forced when `portable`. */
static float *tiled_run(hy_layer *L, hy_precision p, bool portable, const float *x, const float *dy, int B, int T,
                        size_t *n_out) {
    size_t n = (size_t)B * T * L->d_model, ng = 0;
    for (int q = 0; q < 4; q++) ng += numel(L, q);
    float *out = hy_malloc((2 * n + ng) * sizeof(float));
    hy_gemm_set_precision(p);
    hy_bf16_force_portable(portable);
    zero_grads(L);
    ck_assert_msg(L->ops->forward(L, x, out, B, T) == 0, "%s", hy_last_error());
    ck_assert_msg(L->ops->backward(L, dy, out + n, B, T) == 0, "%s", hy_last_error());
    hy_bf16_force_portable(false);
    hy_gemm_set_precision(HY_PREC_F32);
    float *g = out + 2 * n;
    for (int q = 0; q < 4; q++) memcpy(g, L->g[q], numel(L, q) * sizeof(float)), g += numel(L, q);
    *n_out = 2 * n + ng;
    return out;
}

/* compute.precision bf16: the tiled kernels' tile products (Q Kᵀ, P V and the five of backward)
 * take bf16 inputs (and so do the projections, through hy_gemm). y, dx and the weight gradients
 * stay within bf16 rounding of the f32 run (norm-wise 3e-2; measured 0.4% to 1.3% with make_layer's
 * sharp scores; the kernel alone on unit-normal q, k, v: 0.29%, of which 0.26% is the rounding of
 * q, k, v) on odd lengths, GQA, head sizes 24 to 64 and partial tiles; they differ from it (the
 * bf16 path ran); the portable fallback gives the same bits as the AVX-512 BF16 path. */
START_TEST(tiled_bf16_close_to_f32) {
    static const struct { int d; const char *h, *kv; int B, T; } cfg[] = {
        {64, "4", "4", 1, 70}, {64, "4", "2", 2, 130}, {128, "2", "1", 1, 200}, {96, "4", "2", 2, 65}, {64, "4", "1", 1, 1},
    };
    for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++) {
        hy_layer L;
        make_layer(&L, cfg[c].d, cfg[c].h, cfg[c].kv, "10000", 30 + c);
        int B = cfg[c].B, T = cfg[c].T;
        size_t n = (size_t)B * T * cfg[c].d, nt;
        float *x = hy_malloc(n * 4), *dy = hy_malloc(n * 4);
        tu_fill_normal(x, n, 1, 40 + c), tu_fill_normal(dy, n, 1, 50 + c);
        float *r32 = tiled_run(&L, HY_PREC_F32, false, x, dy, B, T, &nt);
        float *r16 = tiled_run(&L, HY_PREC_BF16, false, x, dy, B, T, &nt);
        float *r16p = tiled_run(&L, HY_PREC_BF16, true, x, dy, B, T, &nt);
        static const char *part[] = {"y", "dx", "weight gradients"};
        size_t off[4] = {0, n, 2 * n, nt};
        for (int k = 0; k < 3; k++) {
            double d = 0, r = 0;
            for (size_t i = off[k]; i < off[k + 1]; i++)
                d += ((double)r16[i] - r32[i]) * ((double)r16[i] - r32[i]), r += (double)r32[i] * r32[i];
            double e = sqrt(d / fmax(r, 1e-30));
            ck_assert_msg(e < 3e-2, "d %d H %s kv %s B %d T %d: %s off by %g in bf16", cfg[c].d, cfg[c].h, cfg[c].kv, B,
                          T, part[k], e);
            ck_assert_msg(e > 0, "d %d T %d: %s identical to f32: the bf16 path did not run", cfg[c].d, T, part[k]);
        }
        ck_assert_msg(memcmp(r16, r16p, nt * sizeof(float)) == 0, "d %d T %d: the portable bf16 path gives other bits",
                      cfg[c].d, T);
        hy_free(x), hy_free(dy), hy_free(r32), hy_free(r16), hy_free(r16p);
        hy_layer_standalone_free(&L);
    }
}
END_TEST

static Suite *attention_suite(void) {
    Suite *s = suite_create("attention");
    TCase *k = tcase_create("kernels");
    tcase_add_test(k, tiled_matches_naive);
    tcase_add_test(k, stacked_qkv_matches_separate);
    tcase_add_test(k, backward_schedules_match_naive);
    tcase_add_test(k, decode_matches_tiled_and_reference);
    tcase_add_test(k, tiled_transposes_its_own_tile);
    tcase_add_test(k, forward_follows_spec);
    tcase_add_test(k, tiled_is_deterministic);
    tcase_add_test(k, tiled_memory_is_linear);
    tcase_add_test(k, tiled_bf16_close_to_f32);
    suite_add_tcase(s, k);
    TCase *gr = tcase_create("gradients");
    tcase_add_test(gr, gradients_mha_rope);
    tcase_add_test(gr, gradients_gqa);
    suite_add_tcase(s, gr);
    TCase *st = tcase_create("streaming");
    tcase_add_test(st, step_matches_forward);
    tcase_add_test(st, prefill_then_steps_match_forward);
    suite_add_tcase(s, st);
    TCase *o = tcase_create("options");
    tcase_add_test(o, accounting_and_names);
    tcase_add_test(o, resolve_rejects_bad_options);
    suite_add_tcase(s, o);
    return s;
}
HY_TEST_SUITE(attention_suite)

/* The s4d and hyena mixers: finite-difference gradients of every parameter and the input; the
 * parallel (scan) forward against the streaming recurrence, token by token and by prefill chunks
 * up to T = 4096; a direct transcription of SPEC §2 (O(T²) convolution, double) against the
 * forward; names, shapes, flags, state_bytes, flop and option errors. */
#include "core/error.h"
#include "core/mem.h"
#include "core/vmath.h"
#include "layers/ssm_conv/modal_conv.h"
#include "models/model.h"
#include "models/optim.h"
#include "tests/testutil.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A layer of `name` with d_state given (NULL = default). */
static void make_layer(hy_layer *L, const char *name, int d, const char *d_state, uint64_t seed) {
    char b[48];
    const char *pairs[1] = {b};
    if (d_state) snprintf(b, sizeof b, "d_state=%s", d_state);
    tu_layer(L, name, d, pairs, d_state ? 1 : 0, seed);
}

/* the error relative to the reference tensor's scale (testutil). */
static double nerr(const float *a, const float *ref, size_t n) { return tu_scaled_err(a, ref, n, 1e-30); }

/* Finite differences in float (eps 1e-2): their rounding noise is ~1e-5 absolute on gradients of
 * ~1e-4 (the tu_grad_check floor is 1e-3), so entries this small reach ~1-2% relative error while
 * the O(1) ones agree to ~1e-3; the tolerance is 3e-2. The exact pieces are checked tightly in
 * double elsewhere: the kernel generator's gradient (tests/test_modal_conv.c, 1e-4 with eps 1e-5),
 * the convolution's backward against loops (1e-5), and whole models against PyTorch float64
 * (make crosscheck, 1e-4). dt in [0.01, 0.1] keeps the truncation error of the kernel's
 * log_dt / A_imag differences (which grows as (|A|·dt·T)³·eps²) below the noise. */
static const char *grad_opts[] = {"d_state=4", "dt_min=0.01", "dt_max=0.1"};

START_TEST(gradients_s4d) {
    hy_layer L;
    tu_layer(&L, "s4d", 8, grad_opts, 3, 3);
    double e = tu_grad_check(&L, 2, 19, 1e-2f, 12, 31);
    ck_assert_msg(e < 3e-2, "s4d gradient error %g", e);
    hy_layer_standalone_free(&L);
    tu_layer(&L, "s4d", 5, grad_opts, 3, 4);   /* T = 1: only Kern[0] and D */
    e = tu_grad_check(&L, 3, 1, 1e-2f, 12, 32);
    ck_assert_msg(e < 3e-2, "s4d gradient error at T = 1: %g", e);
    hy_layer_standalone_free(&L);
}
END_TEST

START_TEST(gradients_hyena) {
    hy_layer L;
    tu_layer(&L, "hyena", 8, grad_opts, 3, 4);
    double e = tu_grad_check(&L, 2, 19, 1e-2f, 12, 32);
    ck_assert_msg(e < 3e-2, "hyena gradient error %g", e);
    hy_layer_standalone_free(&L);
    /* T = 1 and T = 2: the short filter sees only zeros before the start */
    tu_layer(&L, "hyena", 5, grad_opts, 3, 5);
    e = tu_grad_check(&L, 3, 2, 1e-2f, 12, 33);
    ck_assert_msg(e < 3e-2, "hyena gradient error at T = 2: %g", e);
    e = tu_grad_check(&L, 2, 1, 1e-2f, 12, 34);
    ck_assert_msg(e < 3e-2, "hyena gradient error at T = 1: %g", e);
    hy_layer_standalone_free(&L);
}
END_TEST

START_TEST(step_matches_forward) {
    static const char *names[] = {"s4d", "hyena"};
    for (int i = 0; i < 2; i++) {
        hy_layer L;
        make_layer(&L, names[i], 24, NULL, 6 + i);
        double e = tu_step_check(&L, 2, 300, 40 + i);
        ck_assert_msg(e < 1e-5, "%s: step vs forward error %g", names[i], e);
        /* changed SSM parameters (as after an optimizer step) reach the cached step coefficients */
        for (int h = 0; h < 24; h++) L.p[0][h] += 0.3f, L.p[3][h * hy_opt_int(&L.opts, 0) / 2] += 0.5f;
        e = tu_step_check(&L, 2, 50, 60 + i);
        ck_assert_msg(e < 1e-5, "%s: step vs forward error after a parameter change %g", names[i], e);
        hy_layer_standalone_free(&L);
    }
}
END_TEST

/* prefill chunks (odd lengths), then single steps, over T = 4096 == one parallel forward. */
START_TEST(prefill_then_steps_match_forward_T4096) {
    static const char *names[] = {"s4d", "hyena"};
    int T = tu_quick() ? 1031 : 4096;
    int chunk[] = {1, T / 3, 1, T / 2, 0, 1, 1, 1};
    chunk[4] = T - (chunk[0] + chunk[1] + chunk[2] + chunk[3] + 3);
    for (int i = 0; i < 2; i++) {
        enum { B = 2, D = 16 };
        hy_layer L;
        make_layer(&L, names[i], D, NULL, 8 + i);
        size_t n = (size_t)B * T * D;
        float *x = hy_malloc(n * 4), *y = hy_malloc(n * 4), *ys = hy_malloc(n * 4), *xc = hy_malloc(n * 4),
              *yc = hy_malloc(n * 4);
        tu_fill_normal(x, n, 1, 50 + i);
        ck_assert_int_eq(L.ops->forward(&L, x, y, B, T), 0);
        void *st;
        ck_assert_int_eq(L.ops->state_new(&L, B, &st), 0);
        for (int c = 0, t0 = 0; c < 8; t0 += chunk[c], c++) {
            int len = chunk[c];
            for (int b = 0; b < B; b++) memcpy(xc + (size_t)b * len * D, x + ((size_t)b * T + t0) * D, (size_t)len * D * 4);
            int rc = len == 1 ? L.ops->step(&L, st, xc, yc, B) : L.ops->prefill(&L, st, xc, yc, B, len);
            ck_assert_msg(rc == 0, "%s", hy_last_error());
            for (int b = 0; b < B; b++) memcpy(ys + ((size_t)b * T + t0) * D, yc + (size_t)b * len * D, (size_t)len * D * 4);
        }
        double e = nerr(ys, y, n);
        ck_assert_msg(e < 1e-5, "%s T %d: recurrent (prefill/step) vs parallel forward error %g", names[i], T, e);
        ck_assert_int_lt(L.ops->prefill(&L, st, xc, yc, B + 1, 1), 0);   /* wrong batch: refused */
        L.ops->state_free(&L, st);
        hy_free(x), hy_free(y), hy_free(ys), hy_free(xc), hy_free(yc);
        hy_layer_standalone_free(&L);
    }
}
END_TEST

/* ---- SPEC §2 transcribed in double with the O(T²) convolution ---- */

static double gelu_d(double x) { return 0.5 * x * (1 + erf(x / sqrt(2.0))); }
static double sigmoid_d(double x) { return 1 / (1 + exp(-x)); }

/* Kern (H, T) in double from the layer's parameters 0..3 (the same order in both blocks). */
static double *kern_d(hy_layer *L, int H, int M, int T) {
    double *K = calloc((size_t)H * T, 8);
    for (int h = 0; h < H; h++) {
        double dt = exp(L->p[0][h]);
        for (int m = 0; m < M; m++) {
            size_t i = (size_t)h * M + m;
            double ar = -exp(L->p[2][i]) * dt, ai = L->p[3][i] * dt, Ar = -exp(L->p[2][i]), Ai = L->p[3][i];
            double er = exp(ar) * cos(ai) - 1, ei = exp(ar) * sin(ai), den = Ar * Ar + Ai * Ai;
            double qr = (er * Ar + ei * Ai) / den, qi = (ei * Ar - er * Ai) / den;   /* (e^{dtA} - 1) / A */
            double cr = L->p[1][2 * i] * qr - L->p[1][2 * i + 1] * qi, ci = L->p[1][2 * i] * qi + L->p[1][2 * i + 1] * qr;
            for (int l = 0; l < T; l++) {
                double mag = exp(ar * l);
                K[(size_t)h * T + l] += 2 * mag * (cr * cos(ai * l) - ci * sin(ai * l));
            }
        }
    }
    return K;
}

static double conv_d(const double *K, const double *u, int T, int H, int t, int h) {
    double a = 0;
    for (int l = 0; l <= t; l++) a += K[(size_t)h * T + l] * u[(size_t)(t - l) * H + h];
    return a;
}

START_TEST(s4d_forward_follows_spec) {
    enum { B = 2, T = 45, H = 6, M = 5 };
    hy_layer L;
    make_layer(&L, "s4d", H, "10", 11);
    float *x = hy_malloc(B * T * H * 4), *y = hy_malloc(B * T * H * 4);
    tu_fill_normal(x, B * T * H, 1, 12);
    ck_assert_int_eq(L.ops->forward(&L, x, y, B, T), 0);
    double *K = kern_d(&L, H, M, T), *u = malloc(T * H * 8), *g = malloc(H * 8), *ref = malloc(B * T * H * 8);
    const float *D = L.p[4], *W = L.p[5], *bias = L.p[6];
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < T * H; i++) u[i] = x[b * T * H + i];
        for (int t = 0; t < T; t++) {
            for (int h = 0; h < H; h++) g[h] = gelu_d(conv_d(K, u, T, H, t, h) + D[h] * u[t * H + h]);
            for (int h = 0; h < H; h++) {
                double a = bias[h], c = bias[H + h];
                for (int k = 0; k < H; k++) a += W[h * H + k] * g[k], c += W[(H + h) * H + k] * g[k];
                ref[(b * T + t) * H + h] = a * sigmoid_d(c);
            }
        }
    }
    double diff = 0, scale = 0;
    for (int i = 0; i < B * T * H; i++) diff = fmax(diff, fabs(y[i] - ref[i])), scale = fmax(scale, fabs(ref[i]));
    ck_assert_msg(diff / scale < 1e-5, "s4d vs SPEC: error %g", diff / scale);
    free(K), free(u), free(g), free(ref), hy_free(x), hy_free(y);
    hy_layer_standalone_free(&L);
}
END_TEST

START_TEST(hyena_forward_follows_spec) {
    enum { B = 2, T = 33, d = 5, M = 3 };
    hy_layer L;
    make_layer(&L, "hyena", d, "6", 13);
    float *x = hy_malloc(B * T * d * 4), *y = hy_malloc(B * T * d * 4);
    tu_fill_normal(x, B * T * d, 1, 14);
    ck_assert_int_eq(L.ops->forward(&L, x, y, B, T), 0);
    /* params: 4 projections.weight, 5 .bias, 6 short_filter_weight, 7 short_filter_bias, 8 D, 9/10 dense */
    double *K = kern_d(&L, d, M, T), *zp = malloc(T * 3 * d * 8), *z = malloc(T * 3 * d * 8), *p = malloc(T * d * 8);
    double diff = 0, scale = 0;
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++)
            for (int r = 0; r < 3 * d; r++) {
                double a = L.p[5][r];
                for (int c = 0; c < d; c++) a += (double)L.p[4][r * d + c] * x[(b * T + t) * d + c];
                zp[t * 3 * d + r] = a;
            }
        for (int t = 0; t < T; t++)
            for (int r = 0; r < 3 * d; r++) {
                double a = L.p[7][r];
                for (int k = 0; k < 3; k++)
                    if (t - 2 + k >= 0) a += L.p[6][r * 3 + k] * zp[(t - 2 + k) * 3 * d + r];
                z[t * 3 * d + r] = a;
            }
        for (int t = 0; t < T; t++)
            for (int c = 0; c < d; c++) p[t * d + c] = z[t * 3 * d + d + c] * z[t * 3 * d + 2 * d + c];
        for (int t = 0; t < T; t++) {
            double yy[d];
            for (int c = 0; c < d; c++) yy[c] = z[t * 3 * d + c] * (conv_d(K, p, T, d, t, c) + L.p[8][c] * p[t * d + c]);
            for (int o = 0; o < d; o++) {
                double a = L.p[10][o];
                for (int c = 0; c < d; c++) a += L.p[9][o * d + c] * yy[c];
                diff = fmax(diff, fabs(a - y[(b * T + t) * d + o]));
                scale = fmax(scale, fabs(a));
            }
        }
    }
    ck_assert_msg(diff / scale < 1e-5, "hyena vs SPEC: error %g", diff / scale);
    free(K), free(zp), free(z), free(p), hy_free(x), hy_free(y);
    hy_layer_standalone_free(&L);
}
END_TEST

/* ---- names, shapes, flags, accounting, options ---- */

static void check_specs(const char *block, int d, const char *const *names, const int (*shapes)[4],
                        const unsigned *flags, int n) {
    const hy_block_ops *ops = hy_block_find(block);
    ck_assert_ptr_nonnull(ops);
    hy_opts o;
    ck_assert_int_eq(hy_block_opts_from_pairs(ops, d, NULL, 0, &o), 0);
    hy_param_spec s[16];
    ck_assert_int_eq(ops->param_specs(&o, d, s), n);
    for (int i = 0; i < n; i++) {
        ck_assert_str_eq(s[i].name, names[i]);
        for (int k = 0; k < s[i].ndim; k++) ck_assert_int_eq(s[i].shape[k], shapes[i][k]);
        ck_assert_int_eq(s[i].ndim, shapes[i][3] ? 4 : shapes[i][2] ? 3 : shapes[i][1] ? 2 : 1);
        ck_assert_msg(s[i].flags == flags[i], "%s %s flags %u", block, names[i], s[i].flags);
    }
}

START_TEST(names_shapes_flags) {
    enum { SSM = HY_PARAM_SSM_LR | HY_PARAM_NO_DECAY, ND = HY_PARAM_NO_DECAY };
    static const char *sn[] = {"kernel.log_dt", "kernel.C", "kernel.log_A_real", "kernel.A_imag", "D",
                               "output_linear.weight", "output_linear.bias"};
    static const int ss[][4] = {{64}, {64, 32, 2}, {64, 32}, {64, 32}, {64}, {128, 64, 1}, {128}};
    static const unsigned sf[] = {SSM, SSM, SSM, SSM, ND, 0, 0};
    check_specs("s4d", 64, sn, ss, sf, 7);
    static const char *hn[] = {"filter.log_dt", "filter.C", "filter.log_A_real", "filter.A_imag",
                               "projections.weight", "projections.bias", "short_filter_weight",
                               "short_filter_bias", "D", "out_filter_dense.weight", "out_filter_dense.bias"};
    static const int hs[][4] = {{48}, {48, 8, 2}, {48, 8}, {48, 8}, {144, 48}, {144}, {144, 1, 3}, {144}, {48}, {48, 48}, {48}};
    static const unsigned hf[] = {SSM, SSM, SSM, SSM, 0, 0, 0, 0, ND, 0, 0};
    check_specs("hyena", 48, hn, hs, hf, 11);
}
END_TEST

/* The S4D-Lin init: log_dt within [ln dt_min, ln dt_max], log_A_real = ln 0.5, A_imag = π·m. */
START_TEST(init_follows_s4d_lin) {
    hy_layer L;
    const char *pairs[] = {"dt_min=0.01", "dt_max=0.02", "d_state=8"};
    tu_layer(&L, "s4d", 32, pairs, 3, 1);
    for (int h = 0; h < 32; h++) {
        ck_assert(L.p[0][h] >= logf(0.01f) - 1e-6f && L.p[0][h] <= logf(0.02f) + 1e-6f);
        for (int m = 0; m < 4; m++) {
            ck_assert_float_eq_tol(L.p[2][h * 4 + m], logf(0.5f), 1e-7);
            ck_assert_float_eq_tol(L.p[3][h * 4 + m], (float)M_PI * m, 1e-6);
        }
    }
    double ss = 0;
    for (int i = 0; i < 32 * 4 * 2; i++) ss += (double)L.p[1][i] * L.p[1][i];
    ck_assert_double_eq_tol(ss / (32 * 4 * 2), 0.5, 0.15);   /* complex normal: each part N(0, 1/2) */
    hy_layer_standalone_free(&L);
}
END_TEST

START_TEST(accounting) {
    const hy_block_ops *s4d = hy_block_find("s4d"), *hy = hy_block_find("hyena");
    hy_opts o;
    ck_assert_int_eq(hy_block_opts_from_pairs(s4d, 64, NULL, 0, &o), 0);
    ck_assert_int_eq(hy_opt_int(&o, 0), 64);
    ck_assert_uint_eq(s4d->state_bytes(&o, 64, 10), 64u * 32 * 2 * 4);          /* M complex per channel */
    ck_assert_uint_eq(s4d->state_bytes(&o, 64, 100000), 64u * 32 * 2 * 4);     /* constant in T */
    /* the long convolution counts the scan it runs: 11 FLOPs per token, channel and mode */
    ck_assert_double_eq_tol(s4d->flop(&o, 64, 1000), 11.0 * 64 * 32 * 1000 + 4.0 * 1000 * 64 * 64 + 5.0 * 1000 * 64, 1);
    ck_assert_int_eq(hy_block_opts_from_pairs(hy, 48, NULL, 0, &o), 0);
    ck_assert_int_eq(hy_opt_int(&o, 0), 16);
    ck_assert_uint_eq(hy->state_bytes(&o, 48, 7), (2u * 3 * 48 + 48u * 16) * 4);
    ck_assert_double_eq_tol(hy->flop(&o, 48, 1000), 8.0 * 1000 * 48 * 48 + 27.0 * 1000 * 48 + 11.0 * 48 * 8 * 1000, 1);
    /* linear in T */
    double r = s4d->flop(&o, 256, 16384) / s4d->flop(&o, 256, 8192);
    ck_assert_double_eq_tol(r, 2.0, 1e-12);
}
END_TEST

/* hy_normal_cdff (s4d's exact-erf GELU) against double erfc over [-14, 14] on a fine grid: Φ within
 * 1.5e-7 absolute everywhere, 3e-6 relative down to 1e-30, the density within 5e-7 relative; the
 * GELU and its derivative built from them against double. */
START_TEST(normal_cdf_is_accurate) {
    double worst_abs = 0, worst_rel = 0, worst_pdf = 0, worst_gelu = 0;
    for (int i = -1400000; i <= 1400000; i++) {
        float x = (float)i * 1e-5f, pdf, c = hy_normal_cdff(x, &pdf);
        double ref = 0.5 * erfc(-(double)x / sqrt(2.0)), pref = exp(-0.5 * (double)x * x) / sqrt(2 * M_PI);
        worst_abs = fmax(worst_abs, fabs(c - ref));
        if (ref > 1e-30) worst_rel = fmax(worst_rel, fabs(c - ref) / ref);
        if (pref > 1e-30) worst_pdf = fmax(worst_pdf, fabs(pdf - pref) / pref);
        double g = x * ref, dg = ref + x * pref;
        worst_gelu = fmax(worst_gelu, fabs(x * c - g) / fmax(fabs(g), 1.0));
        worst_gelu = fmax(worst_gelu, fabs(x * pdf + c - dg) / fmax(fabs(dg), 1.0));
    }
    ck_assert_msg(worst_abs < 1.5e-7, "normal cdf: absolute error %g", worst_abs);
    ck_assert_msg(worst_rel < 3e-6, "normal cdf: relative error %g", worst_rel);
    ck_assert_msg(worst_pdf < 5e-7, "normal pdf: relative error %g", worst_pdf);
    ck_assert_msg(worst_gelu < 1e-6, "gelu: error %g", worst_gelu);
    float pdf;
    ck_assert_float_eq(hy_normal_cdff(0.0f, &pdf), 0.5f);
    ck_assert(hy_normal_cdff(40.0f, &pdf) == 1.0f && pdf < 1e-37f);
    ck_assert(hy_normal_cdff(-40.0f, &pdf) < 1e-37f && pdf < 1e-37f);
    ck_assert(hy_normal_cdff(-INFINITY, &pdf) < 1e-37f && pdf < 1e-37f);
    ck_assert(hy_normal_cdff(1e30f, &pdf) == 1.0f && pdf < 1e-37f);
}
END_TEST

START_TEST(options_are_checked) {
    const hy_block_ops *ops = hy_block_find("s4d");
    hy_opts o;
    const char *odd[] = {"d_state=7"}, *dt[] = {"dt_min=0.5", "dt_max=0.1"}, *neg[] = {"dt_min=-1"};
    ck_assert_int_lt(hy_block_opts_from_pairs(ops, 16, odd, 1, &o), 0);
    ck_assert_msg(strstr(hy_last_error(), "d_state = 7 must be even"), "%s", hy_last_error());
    ck_assert_int_lt(hy_block_opts_from_pairs(hy_block_find("hyena"), 16, dt, 2, &o), 0);
    ck_assert_msg(strstr(hy_last_error(), "dt_min"), "%s", hy_last_error());
    ck_assert_int_lt(hy_block_opts_from_pairs(ops, 16, neg, 1, &o), 0);
    ck_assert_msg(strstr(hy_last_error(), "dt_min"), "%s", hy_last_error());
    /* backward without a kept forward is an error, not a crash */
    hy_layer L;
    make_layer(&L, "hyena", 8, "4", 1);
    float x[8 * 3], y[8 * 3], dx[8 * 3];
    tu_fill_normal(x, 24, 1, 2);
    L.keep_for_backward = false;
    ck_assert_int_eq(L.ops->forward(&L, x, y, 1, 3), 0);
    ck_assert_int_lt(L.ops->backward(&L, y, dx, 1, 3), 0);
    hy_layer_standalone_free(&L);
}
END_TEST


/* The optimizer honours the flags in a model: one SGD step (no momentum) with lr 0.01, ssm_lr
 * 0.001, weight decay 0.1 and every gradient 1 moves the kernel parameters by exactly ssm_lr
 * (capped, not decayed, although C is 3-D), D by lr, output_linear.weight by lr·(1 + 0.1·w). */
START_TEST(optimizer_caps_ssm_parameters) {
    const hy_block_ops *ops = hy_block_find("s4d");
    hy_layer_cfg layer = {.mixer.ops = ops, .ffn.ops = NULL};
    const char *pairs[] = {"d_state=4"};
    ck_assert_int_eq(hy_block_opts_from_pairs(ops, 8, pairs, 1, &layer.mixer.opts), 0);
    hy_model_config c = {.d_model = 8, .vocab_size = 16, .n_layers = 1, .tie_embeddings = true,
                         .router_aux_coef = 0.001f, .layers = &layer};
    hy_model *m;
    ck_assert_msg(hy_model_create(&c, 3, &m) == 0, "%s", hy_last_error());
    float *before = hy_malloc(m->numel * 4);
    memcpy(before, m->data, m->numel * 4);
    for (size_t i = 0; i < m->numel; i++) m->grad[i] = 1.0f;
    hy_optim opt = {.weight_decay = 0.1, .momentum = 0, .ssm_lr = 0.001};
    ck_assert_int_eq(hy_optim_init(&opt, m, HY_OPTIM_SGD), 0);
    opt.weight_decay = 0.1, opt.momentum = 0, opt.ssm_lr = 0.001;
    hy_optim_step(&opt, m, 0.01);
    static const struct { const char *name; double lr; bool decay; } want[] = {
        {"layers.0.mixer.kernel.log_dt", 0.001, false}, {"layers.0.mixer.kernel.C", 0.001, false},
        {"layers.0.mixer.kernel.log_A_real", 0.001, false}, {"layers.0.mixer.kernel.A_imag", 0.001, false},
        {"layers.0.mixer.D", 0.01, false}, {"layers.0.mixer.output_linear.weight", 0.01, true},
        {"layers.0.mixer.output_linear.bias", 0.01, false}};
    for (size_t k = 0; k < sizeof want / sizeof *want; k++) {
        hy_param *p = hy_model_param(m, want[k].name);
        ck_assert_msg(p != NULL, "no parameter %s", want[k].name);
        const float *w0 = before + (p->data - m->data);
        for (size_t i = 0; i < p->numel; i++) {
            double expect = w0[i] - want[k].lr * (1.0 + (want[k].decay ? 0.1 * w0[i] : 0.0));
            ck_assert_msg(fabs(p->data[i] - expect) < 1e-6, "%s[%zu]: %g, expected %g", want[k].name, i,
                          p->data[i], expect);
        }
    }
    hy_optim_free(&opt);
    hy_free(before);
    hy_model_free(m);
}
END_TEST

static Suite *s4d_hyena_suite(void) {
    Suite *s = suite_create("s4d_hyena");
    TCase *g = tcase_create("gradients");
    tcase_add_test(g, gradients_s4d);
    tcase_add_test(g, gradients_hyena);
    suite_add_tcase(s, g);
    TCase *f = tcase_create("forward");
    tcase_add_test(f, s4d_forward_follows_spec);
    tcase_add_test(f, hyena_forward_follows_spec);
    suite_add_tcase(s, f);
    TCase *st = tcase_create("streaming");
    tcase_add_test(st, step_matches_forward);
    tcase_add_test(st, prefill_then_steps_match_forward_T4096);
    suite_add_tcase(s, st);
    TCase *o = tcase_create("options");
    tcase_add_test(o, names_shapes_flags);
    tcase_add_test(o, init_follows_s4d_lin);
    tcase_add_test(o, accounting);
    tcase_add_test(o, normal_cdf_is_accurate);
    tcase_add_test(o, options_are_checked);
    tcase_add_test(o, optimizer_caps_ssm_parameters);
    suite_add_tcase(s, o);
    return s;
}
HY_TEST_SUITE(s4d_hyena_suite)

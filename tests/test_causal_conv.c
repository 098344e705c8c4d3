/* The causal depthwise convolution shared by the short-conv mixers (layers/common/causal_conv.c):
 * forward (with and without bias and the fused silu, from zeros and from a history) against the
 * formula in double; backward against the exact gradients of that formula in double; a weight
 * split over several tensors against the same weight in one; the forms that do not keep pre
 * (recomputed in the backward) against the kept-pre forms, bit for bit; prefill in pieces (including pieces
 * shorter than the history) against one pass; the history's export and import. */
#include "core/mem.h"
#include "layers/common/causal_conv.h"
#include "tests/testutil.h"
#include <math.h>
#include <string.h>

/* A test problem: input x (rows, C) read with stride ldx, history (B, K-1, C), weight (C, K),
 * bias (C), and the gradient g (rows, C) of a loss with respect to the output. */
typedef struct {
    int B, T, C, K;
    size_t ldx;
    float *x, *hist, *w, *bias, *g;
} problem;

static problem problem_new(int B, int T, int C, int K, size_t ldx, uint64_t seed) {
    problem p = {B, T, C, K, ldx, NULL, NULL, NULL, NULL, NULL};
    size_t rows = (size_t)B * T;
    p.x = hy_calloc(rows * ldx * sizeof(float));
    p.hist = hy_calloc(((size_t)B * (K - 1) * C + 1) * sizeof(float));
    p.w = hy_calloc((size_t)C * K * sizeof(float));
    p.bias = hy_calloc((size_t)C * sizeof(float));
    p.g = hy_calloc(rows * C * sizeof(float));
    tu_fill_normal(p.x, rows * ldx, 1.0f, seed);
    tu_fill_normal(p.hist, (size_t)B * (K - 1) * C, 1.0f, seed + 1);
    tu_fill_normal(p.w, (size_t)C * K, 0.5f, seed + 2);
    tu_fill_normal(p.bias, (size_t)C, 0.5f, seed + 3);
    tu_fill_normal(p.g, rows * C, 1.0f, seed + 4);
    return p;
}

static void problem_free(problem *p) { hy_free(p->x), hy_free(p->hist), hy_free(p->w), hy_free(p->bias), hy_free(p->g); }

/* Input of sequence b at token t (t < 0: the history, or zeros without one), in double. */
static double input_at(const problem *p, int b, int t, int c, bool hist) {
    if (t >= 0) return p->x[((size_t)b * p->T + t) * p->ldx + c];
    return hist ? p->hist[((size_t)b * (p->K - 1) + (p->K - 1 + t)) * p->C + c] : 0.0;
}

/* The formula in double: pre, and with silu its activation. */
static double ref_pre(const problem *p, int b, int t, int c, bool bias, bool hist) {
    double s = bias ? p->bias[c] : 0.0;
    for (int k = 0; k < p->K; k++) s += (double)p->w[(size_t)c * p->K + k] * input_at(p, b, t - (p->K - 1) + k, c, hist);
    return s;
}

static double silu_d(double v) { return v / (1.0 + exp(-v)); }

/* Runs the helper's forward on p into pre/act (act NULL = no silu); the caller frees xpad, wT. */
static hy_cconv run_forward(const problem *p, bool bias, bool hist, float *pre, float *act) {
    hy_cconv cv = {p->B, p->T, p->C, p->K, hy_calloc(hy_cconv_pad_floats(p->B, p->T, p->C, p->K) * sizeof(float)),
                   hy_calloc((size_t)p->K * p->C * sizeof(float))};
    hy_cconv_pad(&cv, p->x, p->ldx, hist ? p->hist : NULL);
    hy_cconv_set_weight(&cv, &(hy_cconv_weight){1, {p->C}, {p->w}});
    hy_cconv_forward(&cv, bias ? p->bias : NULL, pre, act);
    return cv;
}

START_TEST(forward_matches_formula) {
    const int shapes[][4] = {{2, 7, 5, 4}, {1, 1, 70, 4}, {3, 2, 3, 5}, {2, 9, 130, 1}, {1, 4, 6, 3}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int mode = 0; mode < 4; mode++) {
            const bool bias = mode & 1, hist = mode & 2;
            const int B = shapes[s][0], T = shapes[s][1], C = shapes[s][2], K = shapes[s][3];
            problem p = problem_new(B, T, C, K, (size_t)C + 3, 100 + s);
            size_t n = (size_t)B * T * C;
            float *pre = hy_calloc(n * sizeof(float)), *act = hy_calloc(n * sizeof(float));
            hy_cconv cv = run_forward(&p, bias, hist, pre, act);
            double e_pre = 0, e_act = 0;
            for (int b = 0; b < B; b++)
                for (int t = 0; t < T; t++)
                    for (int c = 0; c < C; c++) {
                        size_t i = ((size_t)b * T + t) * C + c;
                        double r = ref_pre(&p, b, t, c, bias, hist);
                        e_pre = fmax(e_pre, fabs(pre[i] - r));
                        e_act = fmax(e_act, fabs(act[i] - silu_d(r)));
                    }
            ck_assert_msg(e_pre < 1e-5 && e_act < 1e-5, "B %d T %d C %d K %d mode %d: errors %g %g", B, T, C, K, mode,
                          e_pre, e_act);
            hy_free(cv.xpad), hy_free(cv.wT), hy_free(pre), hy_free(act);
            problem_free(&p);
        }
}
END_TEST

/* Loss = Σ g ⊙ out (out = act with silu, else pre): the exact gradients in double for the input,
 * the weight and the bias, against the helper's backward (which must also leave the columns of dx
 * outside its C channels alone). */
START_TEST(backward_matches_exact_gradients) {
    const int shapes[][4] = {{2, 7, 5, 4}, {1, 1, 70, 4}, {3, 2, 3, 5}, {2, 9, 130, 2}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int silu = 0; silu < 2; silu++) {
            const int B = shapes[s][0], T = shapes[s][1], C = shapes[s][2], K = shapes[s][3];
            const size_t rows = (size_t)B * T, n = rows * C, lddx = (size_t)C + 2;
            problem p = problem_new(B, T, C, K, (size_t)C, 200 + s);
            float *pre = hy_calloc(n * sizeof(float)), *act = hy_calloc(n * sizeof(float));
            hy_cconv cv = run_forward(&p, true, false, pre, silu ? act : NULL);
            float *d = hy_calloc(n * sizeof(float)), *dx = hy_calloc(rows * lddx * sizeof(float));
            float *gw = hy_calloc((size_t)C * K * sizeof(float)), *gb = hy_calloc((size_t)C * sizeof(float));
            for (size_t i = 0; i < rows * lddx; i++) dx[i] = 7.0f;
            memcpy(d, p.g, n * sizeof(float));
            gw[0] = 1.0f, gb[0] = 2.0f;   /* accumulated into, not overwritten */
            hy_cconv_backward(&cv, d, silu ? pre : NULL, gb, &(hy_cconv_weight){1, {C}, {gw}}, dx, lddx);
            double *dpre = hy_calloc(n * sizeof(double));
            for (int b = 0; b < B; b++)
                for (int t = 0; t < T; t++)
                    for (int c = 0; c < C; c++) {
                        size_t i = ((size_t)b * T + t) * C + c;
                        double v = ref_pre(&p, b, t, c, true, false), sg = 1.0 / (1.0 + exp(-v));
                        dpre[i] = p.g[i] * (silu ? sg * (1.0 + v * (1.0 - sg)) : 1.0);
                    }
            double e = 0;
            for (int c = 0; c < C; c++) {
                double rb = c == 0 ? 2.0 : 0.0;
                for (size_t r = 0; r < rows; r++) rb += dpre[r * C + c];
                e = fmax(e, fabs(gb[c] - rb) / (1.0 + fabs(rb)));
                for (int k = 0; k < K; k++) {
                    double rw = c == 0 && k == 0 ? 1.0 : 0.0;
                    for (int b = 0; b < B; b++)
                        for (int t = 0; t < T; t++)
                            rw += dpre[((size_t)b * T + t) * C + c] * input_at(&p, b, t - (K - 1) + k, c, false);
                    e = fmax(e, fabs(gw[(size_t)c * K + k] - rw) / (1.0 + fabs(rw)));
                }
            }
            for (int b = 0; b < B; b++)
                for (int j = 0; j < T; j++) {
                    for (int c = 0; c < C; c++) {
                        double rx = 0;
                        for (int k = 0; k < K; k++) {
                            int t = j + (K - 1) - k;
                            if (t < T) rx += (double)p.w[(size_t)c * K + k] * dpre[((size_t)b * T + t) * C + c];
                        }
                        e = fmax(e, fabs(dx[((size_t)b * T + j) * lddx + c] - rx) / (1.0 + fabs(rx)));
                    }
                    for (size_t c = C; c < lddx; c++) ck_assert_float_eq(dx[((size_t)b * T + j) * lddx + c], 7.0f);
                }
            for (size_t i = 0; silu && i < n; i++) e = fmax(e, fabs(d[i] - dpre[i]) / (1.0 + fabs(dpre[i])));
            ck_assert_msg(e < 1e-5, "B %d T %d C %d K %d silu %d: error %g", B, T, C, K, silu, e);
            hy_free(cv.xpad), hy_free(cv.wT), hy_free(pre), hy_free(act), hy_free(d), hy_free(dx), hy_free(gw);
            hy_free(gb), hy_free(dpre);
            problem_free(&p);
        }
}
END_TEST

/* Channels split over three tensors (sizes 5, 1, 7) give the same forward and the same gradients,
 * tensor by tensor, as one tensor of 13 channels. */
START_TEST(split_weight_matches_one_tensor) {
    const int B = 2, T = 6, C = 13, K = 3, parts[3] = {5, 1, 7};
    const size_t n = (size_t)B * T * C;
    problem p = problem_new(B, T, C, K, (size_t)C, 300);
    float *w3[3], *g3[3], *g1 = hy_calloc((size_t)C * K * sizeof(float));
    for (int i = 0, c0 = 0; i < 3; c0 += parts[i++]) {
        w3[i] = hy_calloc((size_t)parts[i] * K * sizeof(float));
        g3[i] = hy_calloc((size_t)parts[i] * K * sizeof(float));
        memcpy(w3[i], p.w + (size_t)c0 * K, (size_t)parts[i] * K * sizeof(float));
    }
    const hy_cconv_weight w_split = {3, {5, 1, 7}, {w3[0], w3[1], w3[2]}}, g_split = {3, {5, 1, 7}, {g3[0], g3[1], g3[2]}};
    float *pre1 = hy_calloc(n * sizeof(float)), *pre3 = hy_calloc(n * sizeof(float));
    float *dx1 = hy_calloc(n * sizeof(float)), *dx3 = hy_calloc(n * sizeof(float));
    hy_cconv cv = run_forward(&p, false, true, pre1, NULL);
    hy_cconv_backward(&cv, p.g, NULL, NULL, &(hy_cconv_weight){1, {C}, {g1}}, dx1, C);
    hy_cconv_set_weight(&cv, &w_split);
    hy_cconv_forward(&cv, NULL, pre3, NULL);
    hy_cconv_backward(&cv, p.g, NULL, NULL, &g_split, dx3, C);
    ck_assert_mem_eq(pre1, pre3, n * sizeof(float));
    ck_assert_mem_eq(dx1, dx3, n * sizeof(float));
    for (int i = 0, c0 = 0; i < 3; c0 += parts[i++]) {
        ck_assert_mem_eq(g3[i], g1 + (size_t)c0 * K, (size_t)parts[i] * K * sizeof(float));
        hy_free(w3[i]), hy_free(g3[i]);
    }
    hy_free(cv.xpad), hy_free(cv.wT), hy_free(g1), hy_free(pre1), hy_free(pre3), hy_free(dx1), hy_free(dx3);
    problem_free(&p);
}
END_TEST

/* The forward that does not keep pre and hy_cconv_backward_silu, which recomputes it, give bit for
 * bit what the kept-pre forms give: act and its bf16 rounding, the bias and weight gradients and dx
 * in f32 and in bf16 (rows strided wider than C, the columns past C left alone), with and without
 * bias; hy_cconv_backward_silu leaves d as it was. Shapes: several sequences, T below K-1, T = K-1
 * and T that divides nothing, C with a tail block (70, 130 over blocks of 64), one full block and C
 * wider than the forward's piece of 256, K = 1, 3 and 4. */
START_TEST(recomputed_pre_same_bits) {
    const int shapes[][4] = {{2, 9, 70, 4}, {1, 5, 300, 3}, {3, 2, 130, 4}, {2, 3, 64, 4}, {2, 7, 70, 1}, {3, 1, 5, 4}};
    const int ns = (int)(sizeof shapes / sizeof *shapes);
    for (int v = 0; v < 2 * ns; v++) {
        const int B = shapes[v % ns][0], T = shapes[v % ns][1], C = shapes[v % ns][2], K = shapes[v % ns][3];
        const bool bias = v < ns;
        const size_t n = (size_t)B * T * C, lddx = (size_t)C + 3, ndx = (size_t)B * T * lddx;
        problem p = problem_new(B, T, C, K, (size_t)C, 500 + v);
        float *pre = hy_calloc(n * 4), *act[2], *d[2], *gb[2], *gw[2], *dx[2];
        hy_bf16 *acth[2], *dxh[2];
        for (int k = 0; k < 2; k++) {
            act[k] = hy_calloc(n * 4), d[k] = hy_calloc(n * 4), gb[k] = hy_calloc((size_t)C * 4);
            gw[k] = hy_calloc((size_t)C * K * 4), dx[k] = hy_calloc(ndx * 4);
            acth[k] = hy_calloc(n * sizeof(hy_bf16)), dxh[k] = hy_calloc(ndx * sizeof(hy_bf16));
        }
        hy_cconv cv = run_forward(&p, bias, true, pre, act[0]);
        hy_cconv_forward_bf16(&cv, bias ? p.bias : NULL, pre, act[0], acth[0]);
        hy_cconv_forward_bf16(&cv, bias ? p.bias : NULL, NULL, act[1], acth[1]);
        ck_assert_mem_eq(act[0], act[1], n * 4);
        ck_assert_mem_eq(acth[0], acth[1], n * sizeof(hy_bf16));
        for (int bf = 0; bf < 2; bf++) {   /* dx in f32, then in bf16 */
            for (int k = 0; k < 2; k++) {
                memcpy(d[k], p.g, n * 4);
                memset(gb[k], 0, (size_t)C * 4), memset(gw[k], 0, (size_t)C * K * 4);
                for (size_t i = 0; i < ndx; i++) dx[k][i] = 7.0f, dxh[k][i] = 0x4321;
            }
            gb[0][0] = gb[1][0] = 2.0f, gw[0][0] = gw[1][0] = 1.0f;   /* accumulated into, not overwritten */
            const hy_cconv_weight w0 = {1, {C}, {gw[0]}}, w1 = {1, {C}, {gw[1]}};
            if (bf) hy_cconv_backward_bf16(&cv, d[0], pre, bias ? gb[0] : NULL, &w0, dxh[0], lddx);
            else hy_cconv_backward(&cv, d[0], pre, bias ? gb[0] : NULL, &w0, dx[0], lddx);
            hy_cconv_backward_silu(&cv, d[1], bias ? p.bias : NULL, bias ? gb[1] : NULL, &w1, bf ? NULL : dx[1],
                                   bf ? dxh[1] : NULL, lddx);
            ck_assert_mem_eq(d[1], p.g, n * 4);   /* read only */
            ck_assert_mem_eq(gb[0], gb[1], (size_t)C * 4);
            ck_assert_mem_eq(gw[0], gw[1], (size_t)C * K * 4);
            if (bf) ck_assert_mem_eq(dxh[0], dxh[1], ndx * sizeof(hy_bf16));   /* the columns past C too */
            else ck_assert_mem_eq(dx[0], dx[1], ndx * 4);
            for (size_t r = 0; r < (size_t)B * T; r++)
                for (size_t c = C; c < lddx; c++) {
                    ck_assert_float_eq(dx[1][r * lddx + c], 7.0f);
                    ck_assert_uint_eq(dxh[1][r * lddx + c], 0x4321);
                }
        }
        if (bias) {   /* and the bias gradient is the sum of the gradient of pre */
            double s = 2.0;
            for (size_t r = 0; r < (size_t)B * T; r++) s += d[0][r * C];
            ck_assert_msg(fabs(s - gb[1][0]) <= 1e-4 * (1 + fabs(s)), "bias grad %g vs %g", gb[1][0], s);
        }
        for (int k = 0; k < 2; k++) {
            hy_free(act[k]), hy_free(d[k]), hy_free(gb[k]), hy_free(gw[k]), hy_free(dx[k]), hy_free(acth[k]);
            hy_free(dxh[k]);
        }
        hy_free(pre), hy_free(cv.xpad), hy_free(cv.wT);
        problem_free(&p);
    }
}
END_TEST

/* Streaming: T tokens fed in pieces of 1, 2 and 4 tokens (pieces shorter than the K-1 = 3 history
 * rows among them), each continuing from the history the last one kept, give exactly the outputs
 * of one pass over all T tokens, and the same final history as one pass. */
START_TEST(pieces_continue_exactly) {
    const int B = 2, T = 11, C = 9, K = 4, pieces[] = {1, 2, 1, 4, 3};
    const size_t n = (size_t)B * T * C;
    problem p = problem_new(B, T, C, K, (size_t)C, 400);
    float *whole = hy_calloc(n * sizeof(float)), *act = hy_calloc(n * sizeof(float));
    hy_cconv cv = run_forward(&p, true, true, whole, act);
    float *hist_whole = hy_calloc((size_t)B * (K - 1) * C * sizeof(float));
    hy_cconv_keep_history(&cv, hist_whole);
    float *hist = hy_calloc((size_t)B * (K - 1) * C * sizeof(float)), *x = hy_calloc(n * sizeof(float));
    float *out = hy_calloc(n * sizeof(float)), *o_act = hy_calloc(n * sizeof(float));
    memcpy(hist, p.hist, (size_t)B * (K - 1) * C * sizeof(float));
    for (int i = 0, t0 = 0; i < 5; t0 += pieces[i++]) {
        const int Tn = pieces[i];
        hy_cconv c = {B, Tn, C, K, cv.xpad, cv.wT};
        for (int b = 0; b < B; b++)
            memcpy(x + (size_t)b * Tn * C, p.x + ((size_t)b * T + t0) * C, (size_t)Tn * C * sizeof(float));
        hy_cconv_pad(&c, x, C, hist);
        hy_cconv_forward(&c, p.bias, out, o_act);
        hy_cconv_keep_history(&c, hist);
        for (int b = 0; b < B; b++) {
            ck_assert_mem_eq(out + (size_t)b * Tn * C, whole + ((size_t)b * T + t0) * C, (size_t)Tn * C * sizeof(float));
            ck_assert_mem_eq(o_act + (size_t)b * Tn * C, act + ((size_t)b * T + t0) * C, (size_t)Tn * C * sizeof(float));
        }
    }
    ck_assert_mem_eq(hist, hist_whole, (size_t)B * (K - 1) * C * sizeof(float));
    hy_free(cv.xpad), hy_free(cv.wT), hy_free(whole), hy_free(act), hy_free(hist_whole), hy_free(hist), hy_free(x);
    hy_free(out), hy_free(o_act);
    problem_free(&p);
}
END_TEST

/* Export of channels 2..6 lays each channel's K-1 inputs out oldest first; importing the parts
 * (2..6 and the rest) into a zeroed history restores it exactly. */
START_TEST(history_export_import_round_trip) {
    const int B = 2, C = 8, K = 4, H = K - 1, c0 = 2, w = 5;
    float hist[2 * 3 * 8], back[2 * 3 * 8] = {0}, part[2 * 5 * 3], rest[2 * 3 * 3];
    for (int i = 0; i < B * H * C; i++) hist[i] = (float)i;
    hy_cconv_history_export(part, hist, B, C, K, c0, w);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < w; c++)
            for (int j = 0; j < H; j++)
                ck_assert_float_eq(part[((size_t)b * w + c) * H + j], hist[((size_t)b * H + j) * C + c0 + c]);
    hy_cconv_history_import(back, part, B, C, K, c0, w);
    hy_cconv_history_export(rest, hist, B, C, K, 0, c0);
    hy_cconv_history_import(back, rest, B, C, K, 0, c0);
    hy_cconv_history_export(rest, hist, B, C, K, c0 + w, C - c0 - w);
    hy_cconv_history_import(back, rest, B, C, K, c0 + w, C - c0 - w);
    ck_assert_mem_eq(back, hist, sizeof hist);
}
END_TEST

static Suite *causal_conv_suite(void) {
    Suite *s = suite_create("causal_conv");
    TCase *t = tcase_create("causal_conv");
    tcase_add_test(t, forward_matches_formula);
    tcase_add_test(t, backward_matches_exact_gradients);
    tcase_add_test(t, split_weight_matches_one_tensor);
    tcase_add_test(t, recomputed_pre_same_bits);
    tcase_add_test(t, pieces_continue_exactly);
    tcase_add_test(t, history_export_import_round_trip);
    suite_add_tcase(s, t);
    return s;
}
HY_TEST_SUITE(causal_conv_suite)

/* The causal depthwise convolution shared by the mixers with a short conv (causal_conv.h). */
#include "layers/common/causal_conv.h"
#include "core/vmath.h"
#include <stdbool.h>
#include <string.h>

enum { PAR_MIN = 16384, COLS = 64 };   /* OpenMP from this many floats; channel block width */
enum { PIECE = 256 };                   /* channels a row's bf16 output is rounded at a time (on the stack) */

size_t hy_cconv_pad_floats(int B, int T, int C, int K) { return (size_t)B * (T + K - 1) * C; }

/* Copies the history rows (or zeros) and the input rows into xpad, one padded row per iteration. */
void hy_cconv_pad(const hy_cconv *cv, const float *x, size_t ldx, const float *hist) {
    const int T = cv->T, C = cv->C, K = cv->K, Tp = T + K - 1;
    float *xpad = cv->xpad;
    #pragma omp parallel for schedule(static) if ((size_t)cv->B * Tp * C > PAR_MIN)
    for (long r = 0; r < (long)cv->B * Tp; r++) {
        int b = (int)(r / Tp), t = (int)(r % Tp) - (K - 1);
        float *dst = xpad + (size_t)r * C;
        if (t >= 0) memcpy(dst, x + ((size_t)b * T + t) * ldx, (size_t)C * sizeof(float));
        else if (hist) memcpy(dst, hist + ((size_t)b * (K - 1) + (t + K - 1)) * C, (size_t)C * sizeof(float));
        else memset(dst, 0, (size_t)C * sizeof(float));
    }
}

/* Row of channel c (K floats) in the weight split over w's tensors. */
static float *weight_row(const hy_cconv_weight *w, int c, int K) {
    int i = 0;
    while (i < w->n - 1 && c >= w->channels[i]) c -= w->channels[i++];
    return w->t[i] + (size_t)c * K;
}

/* wT[k, c] = w[c, 0, k], channel by channel through the tensors. */
void hy_cconv_set_weight(const hy_cconv *cv, const hy_cconv_weight *w) {
    const int C = cv->C, K = cv->K;
    for (int c = 0; c < C; c++) {
        const float *wc = weight_row(w, c, K);
        for (int k = 0; k < K; k++) cv->wT[(size_t)k * C + c] = wc[k];
    }
}

/* pre[t] = bias + Σ_k wT[k] ⊙ xpad[t + k], then silu (and its bf16 rounding when act_bf16 is set);
 * rows in parallel. Without pre, a piece of a row at a time is summed on the stack. */
void hy_cconv_forward_bf16(const hy_cconv *cv, const float *bias, float *pre, float *act, hy_bf16 *act_bf16) {
    const int T = cv->T, C = cv->C, K = cv->K, Tp = T + K - 1;
    const size_t rows = (size_t)cv->B * T;
    const float *xpad = cv->xpad, *wT = cv->wT;
    #pragma omp parallel for schedule(static) if (rows * C > PAR_MIN)
    for (long r = 0; r < (long)rows; r++) {
        int b = (int)(r / T), t = (int)(r % T);
        float piece[PIECE];
        for (int c0 = 0; c0 < C; c0 += pre ? C : PIECE) {
            const int w = !pre && C - c0 > PIECE ? PIECE : C - c0;
            float *restrict p = pre ? pre + (size_t)r * C : piece;
            const float *xp = xpad + ((size_t)b * Tp + t) * C + c0;
            for (int c = 0; c < w; c++) p[c] = bias ? bias[c0 + c] : 0.0f;
            for (int k = 0; k < K; k++) {
                const float *restrict xk = xp + (size_t)k * C, *restrict wk = wT + (size_t)k * C + c0;
                for (int c = 0; c < w; c++) p[c] += wk[c] * xk[c];
            }
            if (act) {
                float *restrict o = act + (size_t)r * C + c0;
                for (int c = 0; c < w; c++) o[c] = hy_siluf(p[c]);
                if (act_bf16) hy_bf16_from_f32(act_bf16 + (size_t)r * C + c0, o, (size_t)w);   /* the row is in L1 */
            }
        }
    }
}

void hy_cconv_forward(const hy_cconv *cv, const float *bias, float *pre, float *act) {
    hy_cconv_forward_bf16(cv, bias, pre, act, NULL);
}

/* gb[c] += Σ_rows d[row, c]; parallel over channel blocks, each summed in row order. */
static void bias_grad(float *gb, const float *d, size_t rows, int C) {
    int nb = (C + COLS - 1) / COLS;
    #pragma omp parallel for schedule(static) if (rows * C > 65536)
    for (int blk = 0; blk < nb; blk++) {
        int c0 = blk * COLS, c1 = c0 + COLS < C ? c0 + COLS : C;
        float acc[COLS] = {0};
        for (size_t r = 0; r < rows; r++)
            for (int c = c0; c < c1; c++) acc[c - c0] += d[r * C + c];
        for (int c = c0; c < c1; c++) gb[c] += acc[c - c0];
    }
}

/* One pass per channel block for the silu whose pre the forward did not keep: pre recomputed
 * from xpad, wT and the bias (the forward's sum, in its order), d *= silu'(pre) in place, and the
 * bias and weight gradients summed over the rows in order, as the separate passes of
 * cconv_backward sum them. */
static void silu_bias_weight_grads(const hy_cconv *cv, float *d, const float *bias, float *gb,
                                   const hy_cconv_weight *gw) {
    const int T = cv->T, C = cv->C, K = cv->K, Tp = T + K - 1;
    const size_t rows = (size_t)cv->B * T;
    const float *xpad = cv->xpad, *wT = cv->wT;
    const int nb = (C + COLS - 1) / COLS;
    #pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nb; blk++) {
        const int c0 = blk * COLS, w = c0 + COLS < C ? COLS : C - c0;
        float acc[HY_CCONV_MAX_K][COLS], accb[COLS], p[COLS];
        for (int k = 0; k < K; k++)
            for (int c = 0; c < COLS; c++) acc[k][c] = 0.0f;
        for (int c = 0; c < COLS; c++) accb[c] = 0.0f;
        for (size_t r = 0; r < rows; r++) {
            const int b = (int)(r / T), t = (int)(r % T);
            float *restrict dp = d + r * C + c0;
            const float *restrict xp = xpad + ((size_t)b * Tp + t) * C + c0;
            if (bias) memcpy(p, bias + c0, (size_t)w * sizeof(float));
            else memset(p, 0, (size_t)w * sizeof(float));
            for (int k = 0; k < K; k++) {
                const float *restrict wk = wT + (size_t)k * C + c0;
                #pragma omp simd
                for (int c = 0; c < w; c++) p[c] += wk[c] * xp[(size_t)k * C + c];
            }
            #pragma omp simd
            for (int c = 0; c < w; c++) {
                float s = hy_sigmoidf(p[c]);
                dp[c] *= s * (1.0f + p[c] * (1.0f - s));
                accb[c] += dp[c];
            }
            for (int k = 0; k < K; k++)
                #pragma omp simd
                for (int c = 0; c < w; c++) acc[k][c] += dp[c] * xp[(size_t)k * C + c];
        }
        for (int c = 0; c < w; c++) {
            float *g = weight_row(gw, c0 + c, K);
            for (int k = 0; k < K; k++) g[k] += acc[k][c];
            if (gb) gb[c0 + c] += accb[c];
        }
    }
}

/* silu' in place (pre kept, or recomputed: silu_bias_weight_grads), then the bias and weight
 * gradients per channel block (rows in order) and the input gradient dx[j] = Σ_k w[k] d[j + K-1-k]
 * per row, into dx, or (dx NULL) rounded into dxh. */
static void cconv_backward(const hy_cconv *cv, float *d, const float *pre, bool recompute, const float *bias, float *gb,
                           const hy_cconv_weight *gw, float *dx, hy_bf16 *dxh, size_t lddx) {
    const int T = cv->T, C = cv->C, K = cv->K, Tp = T + K - 1;
    const size_t rows = (size_t)cv->B * T, n = rows * C;
    if (recompute) silu_bias_weight_grads(cv, d, bias, gb, gw);
    else if (pre) {
        #pragma omp parallel for schedule(static) if (n > PAR_MIN)
        for (long i = 0; i < (long)n; i++) {
            float s = hy_sigmoidf(pre[i]);
            d[i] *= s * (1.0f + pre[i] * (1.0f - s));
        }
    }
    if (gb && !recompute) bias_grad(gb, d, rows, C);
    const float *xpad = cv->xpad, *wT = cv->wT;
    int nb = recompute ? 0 : (C + COLS - 1) / COLS;   /* the weight gradient, unless summed above */
    #pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nb; blk++) {
        int c0 = blk * COLS, c1 = c0 + COLS < C ? c0 + COLS : C;
        float acc[HY_CCONV_MAX_K][COLS];   /* [k][c] */
        for (int k = 0; k < K; k++)
            for (int c = 0; c < COLS; c++) acc[k][c] = 0.0f;
        for (size_t r = 0; r < rows; r++) {
            int b = (int)(r / T), t = (int)(r % T);
            const float *dp = d + r * C, *xp = xpad + ((size_t)b * Tp + t) * C;
            for (int k = 0; k < K; k++)
                for (int c = c0; c < c1; c++) acc[k][c - c0] += dp[c] * xp[(size_t)k * C + c];
        }
        for (int c = c0; c < c1; c++) {
            float *g = weight_row(gw, c, K);
            for (int k = 0; k < K; k++) g[k] += acc[k][c - c0];
        }
    }
    #pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (long r = 0; r < (long)rows; r++) {
        int t = (int)(r % T);
        float piece[PIECE];
        /* channels c0.. of the row: straight into dx, or through `piece` when it goes out in bf16 */
        for (int c0 = 0; c0 < C; c0 += dxh ? PIECE : C) {
            const int w = dxh && C - c0 > PIECE ? PIECE : C - c0;
            float *restrict o = dxh ? piece : dx + (size_t)r * lddx + c0;
            for (int c = 0; c < w; c++) o[c] = 0.0f;
            for (int k = 0; k < K; k++) {
                int j = t + K - 1 - k;
                if (j >= T) continue;
                const float *restrict dp = d + (size_t)(r - t + j) * C + c0, *restrict wk = wT + (size_t)k * C + c0;
                for (int c = 0; c < w; c++) o[c] += wk[c] * dp[c];
            }
            if (dxh) hy_bf16_from_f32(dxh + (size_t)r * lddx + c0, piece, (size_t)w);
        }
    }
}

void hy_cconv_backward(const hy_cconv *cv, float *d, const float *pre, float *gb, const hy_cconv_weight *gw,
                       float *dx, size_t lddx) {
    cconv_backward(cv, d, pre, false, NULL, gb, gw, dx, NULL, lddx);
}

void hy_cconv_backward_bf16(const hy_cconv *cv, float *d, const float *pre, float *gb, const hy_cconv_weight *gw,
                            hy_bf16 *dx, size_t lddx) {
    cconv_backward(cv, d, pre, false, NULL, gb, gw, NULL, dx, lddx);
}

void hy_cconv_backward_silu(const hy_cconv *cv, float *d, const float *bias, float *gb, const hy_cconv_weight *gw,
                            float *dx, hy_bf16 *dxh, size_t lddx) {
    cconv_backward(cv, d, NULL, true, bias, gb, gw, dx, dxh, lddx);
}

/* Rows T..T+K-2 of each sequence's padded input are its last K-1 inputs. */
void hy_cconv_keep_history(const hy_cconv *cv, float *hist) {
    const int H = cv->K - 1, Tp = cv->T + H, C = cv->C;
    for (int b = 0; b < cv->B; b++)
        memcpy(hist + (size_t)b * H * C, cv->xpad + ((size_t)b * Tp + cv->T) * C, (size_t)H * C * sizeof(float));
}

/* (B, K-1, C) rows -> (B, n, K-1) for channels c0.. */
void hy_cconv_history_export(float *dst, const float *hist, int B, int C, int K, int c0, int n) {
    const int H = K - 1;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < H; j++)
            for (int c = 0; c < n; c++) dst[((size_t)b * n + c) * H + j] = hist[((size_t)b * H + j) * C + c0 + c];
}

/* (B, n, K-1) -> channels c0.. of the (B, K-1, C) rows. */
void hy_cconv_history_import(float *hist, const float *src, int B, int C, int K, int c0, int n) {
    const int H = K - 1;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < H; j++)
            for (int c = 0; c < n; c++) hist[((size_t)b * H + j) * C + c0 + c] = src[((size_t)b * n + c) * H + j];
}

/* The causal depthwise convolution shared by the mixers with a short conv (causal_conv.h). */
#include "layers/common/causal_conv.h"
#include "core/simd.h"
#include "core/vmath.h"
#include <string.h>

enum { PAR_MIN = 16384, COLS = 64 };   /* OpenMP from this many floats; channel block width */
enum { PIECE = 256 };                   /* channels a row's bf16 output is rounded at a time (on the stack) */
/* Rows ahead silu_backward prefetches: its block's rows are C floats apart (4 KiB at E = 1024), a
 * stride the hardware prefetchers do not follow (with it the function took about a third less time
 * in a mamba training step). */
enum { PF = 8 };

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

/* Row j of one sequence's input gradient in a channel block (w channels from c0) from the ring of
 * its gradients of pre (row i in slot i % K; top = (j + K-1) % K, passed in to keep divisions out of
 * the loop): dx[j] = Σ_k wT[k] ⊙ d[j + K-1-k], rows past the sequence's last (T) skipped, in the
 * order and with the bits of cconv_backward's dx pass; into dx, or (dx NULL) rounded into dxh.
 * HY_VW channels at a time, each vector's sum kept in a register over k (core/simd.h; lanes past w
 * masked). */
static inline void dx_row(const hy_cconv *cv, float ring[][COLS], int top, int c0, int w, size_t row, int j,
                          float *dx, hy_bf16 *dxh, size_t lddx) {
    const int T = cv->T, C = cv->C, K = cv->K;
    const float *dk[HY_CCONV_MAX_K], *wk[HY_CCONV_MAX_K];
    int n = 0;
    for (int k = 0, s = top; k < K; k++, s = s == 0 ? K - 1 : s - 1)
        if (j + K - 1 - k < T) dk[n] = ring[s], wk[n++] = cv->wT + (size_t)k * C + c0;
    float piece[COLS];
    for (int c = 0; c < w; c += HY_VW) {
        const vw_mask m = vw_mask_first(w - c);
        vw o = vw_splat(0.0f);
        for (int q = 0; q < n; q++) o += vw_load_masked(wk[q] + c, m) * vw_load_masked(dk[q] + c, m);
        if (dxh) vw_store(piece + c, o);
        else vw_store_masked(dx + row * lddx + c0 + c, m, o);
    }
    if (dxh) hy_bf16_from_f32(dxh + row * lddx + c0, piece, (size_t)w);
}

/* The whole backward for the silu whose pre the forward did not keep, in one pass per channel block
 * over d and xpad (d read only): pre recomputed from xpad, wT and the bias (the forward's sum, in
 * its order), g = d ⊙ silu'(pre) kept in a ring of the block's last K rows, the bias and weight
 * gradients summed over the rows in order (as cconv_backward's separate passes sum them), and row
 * t-(K-1)'s input gradient emitted as soon as row t's g is known (the sequence's last K-1 rows at
 * its end). One read of d and xpad and one write of dx, where the kept-pre form makes four passes
 * and writes d back. */
static void silu_backward(const hy_cconv *cv, const float *d, const float *bias, float *gb,
                          const hy_cconv_weight *gw, float *dx, hy_bf16 *dxh, size_t lddx) {
    const int B = cv->B, T = cv->T, C = cv->C, K = cv->K, Tp = T + K - 1;
    const float *xpad = cv->xpad, *wT = cv->wT;
    const int nb = (C + COLS - 1) / COLS;
    #pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nb; blk++) {
        const int c0 = blk * COLS, w = c0 + COLS < C ? COLS : C - c0;
        float acc[HY_CCONV_MAX_K][COLS], ring[HY_CCONV_MAX_K][COLS], accb[COLS], p[COLS];
        for (int k = 0; k < K; k++)
            for (int c = 0; c < COLS; c++) acc[k][c] = 0.0f;
        for (int c = 0; c < COLS; c++) accb[c] = 0.0f;
        for (int b = 0; b < B; b++) {
            const size_t r0 = (size_t)b * T;   /* the sequence's first row */
            for (int t = 0, slot = 0; t < T; t++, slot = slot == K - 1 ? 0 : slot + 1) {   /* slot = t % K */
                const float *restrict dp = d + (r0 + t) * C + c0;
                const float *restrict xp = xpad + ((size_t)b * Tp + t) * C + c0;
                float *restrict g = ring[slot];
                if (t + PF < T)   /* the lines of row t + PF's d, newest xpad row and dx, 64 bytes apart */
                    for (int c = 0; c < w; c += 16) {
                        __builtin_prefetch(dp + (size_t)PF * C + c);
                        __builtin_prefetch(xp + (size_t)(PF + K - 1) * C + c);
                        if (!dxh) __builtin_prefetch(dx + (r0 + t + PF) * lddx + c0 + c, 1);
                        else if (c % 32 == 0) __builtin_prefetch(dxh + (r0 + t + PF) * lddx + c0 + c, 1);
                    }
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
                    g[c] = dp[c] * (s * (1.0f + p[c] * (1.0f - s)));
                    accb[c] += g[c];
                }
                for (int k = 0; k < K; k++)
                    #pragma omp simd
                    for (int c = 0; c < w; c++) acc[k][c] += g[c] * xp[(size_t)k * C + c];
                if (t >= K - 1) dx_row(cv, ring, slot, c0, w, r0 + t - (K - 1), t - (K - 1), dx, dxh, lddx);
            }
            for (int j = T - (K - 1) > 0 ? T - (K - 1) : 0; j < T; j++)   /* the rows whose later rows are past T */
                dx_row(cv, ring, (j + K - 1) % K, c0, w, r0 + j, j, dx, dxh, lddx);
        }
        for (int c = 0; c < w; c++) {
            float *gr = weight_row(gw, c0 + c, K);
            for (int k = 0; k < K; k++) gr[k] += acc[k][c];
            if (gb) gb[c0 + c] += accb[c];
        }
    }
}

/* silu' in place (pre kept), then the bias and weight gradients per channel block (rows in order)
 * and the input gradient dx[j] = Σ_k w[k] d[j + K-1-k] per row, into dx, or (dx NULL) rounded into
 * dxh. */
static void cconv_backward(const hy_cconv *cv, float *d, const float *pre, float *gb, const hy_cconv_weight *gw,
                           float *dx, hy_bf16 *dxh, size_t lddx) {
    const int T = cv->T, C = cv->C, K = cv->K, Tp = T + K - 1;
    const size_t rows = (size_t)cv->B * T, n = rows * C;
    if (pre) {
        #pragma omp parallel for schedule(static) if (n > PAR_MIN)
        for (long i = 0; i < (long)n; i++) {
            float s = hy_sigmoidf(pre[i]);
            d[i] *= s * (1.0f + pre[i] * (1.0f - s));
        }
    }
    if (gb) bias_grad(gb, d, rows, C);
    const float *xpad = cv->xpad, *wT = cv->wT;
    int nb = (C + COLS - 1) / COLS;
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
    cconv_backward(cv, d, pre, gb, gw, dx, NULL, lddx);
}

void hy_cconv_backward_bf16(const hy_cconv *cv, float *d, const float *pre, float *gb, const hy_cconv_weight *gw,
                            hy_bf16 *dx, size_t lddx) {
    cconv_backward(cv, d, pre, gb, gw, NULL, dx, lddx);
}

void hy_cconv_backward_silu(const hy_cconv *cv, const float *d, const float *bias, float *gb,
                            const hy_cconv_weight *gw, float *dx, hy_bf16 *dxh, size_t lddx) {
    silu_backward(cv, d, bias, gb, gw, dx, dxh, lddx);
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

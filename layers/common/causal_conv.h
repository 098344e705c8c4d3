/* The causal depthwise convolution of the mixers with a short conv in front of their recurrence
 * (PyTorch's Conv1d with groups = channels, left-padded by K-1):
 *   pre[t, c] = bias[c] + Σ_{k<K} w[c, k] · x[t - (K-1) + k, c],   act = silu(pre) when fused,
 * where x before t = 0 is the streaming history (the last K-1 inputs of the previous call) or zeros.
 *
 * Layout: rows = b·T + t. The input is packed once into xpad (B, K-1+T, C): per sequence the K-1
 * history rows, then the T input rows, so forward, backward and the new history all read one
 * buffer; the weight is transposed once into wT (K, C) so every inner loop runs over channels.
 * A weight may be split over several tensors of consecutive channels (one conv per projection).
 * The loops are fixed-order sums (OpenMP over rows or channel blocks only), so results do not
 * depend on the thread count. */
#ifndef HY_LAYERS_COMMON_CAUSAL_CONV_H
#define HY_LAYERS_COMMON_CAUSAL_CONV_H
#include "core/bf16.h"
#include <stddef.h>

enum {
    HY_CCONV_MAX_K = 64,      /* widest kernel (the weight gradient's per-block accumulator) */
    HY_CCONV_MAX_PARTS = 4,   /* most tensors one weight may be split over */
};

/* One convolution's sizes and its two work buffers (owned by the caller, sized by
 * hy_cconv_pad_floats and K·C). */
typedef struct {
    int B, T, C, K;   /* sequences, tokens per sequence, channels, width (1..HY_CCONV_MAX_K) */
    float *xpad;      /* (B, K-1+T, C) */
    float *wT;        /* (K, C) */
} hy_cconv;

/* The weight, or its gradient, as n tensors of shape (channels[i], 1, K) over consecutive channels
 * (channels summing to C); one tensor is {1, {C}, {w}}. */
typedef struct {
    int n;
    int channels[HY_CCONV_MAX_PARTS];
    float *t[HY_CCONV_MAX_PARTS];
} hy_cconv_weight;

/* Floats of xpad: B·(K-1+T)·C. */
size_t hy_cconv_pad_floats(int B, int T, int C, int K);

/* xpad = per sequence hist's K-1 rows (hist (B, K-1, C); NULL = zeros), then row b·T+t of x
 * (C floats at x + (b·T+t)·ldx, so x may be a column slice of a wider projection). */
void hy_cconv_pad(const hy_cconv *cv, const float *x, size_t ldx, const float *hist);

/* wT (K, C) from the weight tensors. */
void hy_cconv_set_weight(const hy_cconv *cv, const hy_cconv_weight *w);

/* pre (rows, C) = bias (NULL = none) + the convolution of xpad; act (rows, C) = silu(pre) when
 * act is not NULL. pre may be NULL when act is given (not kept: hy_cconv_backward_silu recomputes
 * it). */
void hy_cconv_forward(const hy_cconv *cv, const float *bias, float *pre, float *act);
/* hy_cconv_forward that also writes act rounded to bf16 into act_bf16 (rows, C), in the same pass
 * (for a block whose matrix products read act in bf16). */
void hy_cconv_forward_bf16(const hy_cconv *cv, const float *bias, float *pre, float *act, hy_bf16 *act_bf16);

/* Backward of hy_cconv_forward over the kept xpad and wT. d (rows, C): the gradient of act when
 * pre is given (the fused silu; d becomes the gradient of pre, in place), else the gradient of
 * pre (read only). Accumulates the bias gradient into gb (NULL = no bias) and the weight gradient
 * into gw's tensors; writes the input gradient to dx (C floats at dx + row·lddx, overwritten). */
void hy_cconv_backward(const hy_cconv *cv, float *d, const float *pre, float *gb, const hy_cconv_weight *gw,
                       float *dx, size_t lddx);
/* hy_cconv_backward that writes the input gradient rounded to bf16 (C values at dx + row·lddx), for
 * a block whose matrix products read it in bf16; the same f32 values before the rounding. */
void hy_cconv_backward_bf16(const hy_cconv *cv, float *d, const float *pre, float *gb, const hy_cconv_weight *gw,
                            hy_bf16 *dx, size_t lddx);

/* The backward of hy_cconv_forward with the fused silu whose pre the forward did not keep: d
 * (rows, C), the gradient of act, is read only (unlike hy_cconv_backward's, it is not turned into
 * the gradient of pre); pre is recomputed from xpad, wT and bias (the forward's bias, NULL = none)
 * in one pass over d and xpad that also sums the bias gradient (into gb, NULL = none) and the
 * weight gradient (into gw) and writes the input gradient to dx (f32) or, dx NULL, to dxh rounded
 * to bf16 (C values at row·lddx, overwritten); bit for bit what hy_cconv_backward gives with the
 * kept pre. One pass where the kept-pre form makes four and writes d back, and no pre buffer:
 * (rows, C) floats less to write, keep and read. */
void hy_cconv_backward_silu(const hy_cconv *cv, const float *d, const float *bias, float *gb,
                            const hy_cconv_weight *gw, float *dx, hy_bf16 *dxh, size_t lddx);

/* The new streaming history hist (B, K-1, C): the last K-1 rows of xpad per sequence (older
 * history rows included when T < K-1). */
void hy_cconv_keep_history(const hy_cconv *cv, float *hist);

/* Channels c0..c0+n-1 of the history (B, K-1, C) to or from a state tensor (B, n, K-1): per
 * channel its K-1 inputs oldest first (channels first, time last: a Conv1d input window). */
void hy_cconv_history_export(float *dst, const float *hist, int B, int C, int K, int c0, int n);
void hy_cconv_history_import(float *hist, const float *src, int B, int C, int K, int c0, int n);

#endif

#include "core/vmath.h"
#include <math.h>

float hy_softplusf(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

/* a if m else b, as a bitwise blend of the bits: a ternary whose arms hold float arithmetic is
 * not if-converted under -ftrapping-math, and the loop would stay scalar. */
static inline float select_f(int m, float a, float b) {
    int32_t ia, ib, mk = -(int32_t)(m != 0), r;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    r = (ia & mk) | (ib & ~mk);
    memcpy(&a, &r, sizeof a);
    return a;
}

/* log1p(e) for e in [0, 1], branch-free (cephes logf's polynomial): for e <= sqrt2 - 1 the
 * polynomial runs on e itself (no rounding of 1 + e), above on (1 + e)/2 - 1 plus log 2.
 * 0.5·(1 + e) is exact, so (1 + e)/2 - 1 rounds the same with or without contraction. */
static inline float log1p_unit(float e) {
    const int big = hy_float_ordered(e) > 0x3ed413cd;   /* e > sqrt2 - 1 = 0.41421356 */
    const float x = select_f(big, 0.5f * (1.0f + e) - 1.0f, e), k = (float)big, z = x * x;
    float y = 7.0376836292e-2f;
    y = HY_FMAF(y, x, -1.1514610310e-1f);
    y = HY_FMAF(y, x, 1.1676998740e-1f);
    y = HY_FMAF(y, x, -1.2420140846e-1f);
    y = HY_FMAF(y, x, 1.4249322787e-1f);
    y = HY_FMAF(y, x, -1.6668057665e-1f);
    y = HY_FMAF(y, x, 2.0000714765e-1f);
    y = HY_FMAF(y, x, -2.4999993993e-1f);
    y = HY_FMAF(y, x, 3.3333331174e-1f);
    y = y * x * z;
    y = HY_FMAF(-2.12194440e-4f, k, y);
    y = HY_FMAF(-0.5f, z, y);
    return HY_FMAF(0.693359375f, k, x + y);
}

/* SPEC softplus of one float: max(v, 0) + log1p(exp(-|v|)) for v <= 20 (the same function, no
 * overflow), v itself above. */
static inline float softplus_cut(float v) {
    int32_t b;
    memcpy(&b, &v, sizeof b);
    int32_t pos = b & ~(b >> 31), neg = b & 0x7fffffff;     /* max(v, 0) and |v| */
    float vp, va;
    memcpy(&vp, &pos, sizeof vp);
    memcpy(&va, &neg, sizeof va);
    return select_f(hy_float_ordered(v) > 0x41a00000, v, vp + log1p_unit(hy_expf_neg(-va)));   /* v > 20 */
}

void hy_softplus_array(float *restrict out, const float *restrict in, size_t n) {
    #pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) out[i] = softplus_cut(in[i]);
}

void hy_softplus_bias_rows(float *restrict out, const float *restrict raw, const float *restrict bias, size_t rows,
                           int cols) {
    #pragma omp parallel for schedule(static) if (rows * cols > 16384)
    for (size_t r = 0; r < rows; r++) {
        const float *restrict x = raw + r * cols;
        float *restrict o = out + r * cols;
        #pragma omp simd
        for (int c = 0; c < cols; c++) o[c] = softplus_cut(x[c] + bias[c]);
    }
}

void hy_colsum_add(float *g, const float *X, size_t rows, int cols, size_t ld) {
    int nb = (cols + 63) / 64;
    #pragma omp parallel for schedule(static) if (rows * cols > 65536)
    for (int k = 0; k < nb; k++) {
        int c0 = k * 64, c1 = c0 + 64 < cols ? c0 + 64 : cols;
        float acc[64] = {0};
        for (size_t r = 0; r < rows; r++) {
            const float *x = X + r * ld;
            for (int c = c0; c < c1; c++) acc[c - c0] += x[c];
        }
        for (int c = c0; c < c1; c++) g[c] += acc[c - c0];
    }
}

/* Elementwise math in forms the compiler vectorizes (-O3 -march=native): branch-free, no libm
 * calls, so loops over these run at SIMD speed (~0.3 ns per expf on AVX-512 instead of ~3 ns).
 * Accuracy: hy_expf within 2 ulp of expf over [-87, 88]; below -87 it returns ~1e-38, not 0.
 * The library's exp, softplus and log1p variants all live here and in vmath.c: one Cephes exp
 * polynomial (hy_expf_core) behind every exp, scalar or vector (hy_expf_neg_vw), and the attention
 * kernels' vector exp2 (hy_exp2f_vw, its own minimax polynomial). Files compiled with fp-contract=fast (the Mamba scan, the
 * RWKV-7 state kernels) may fuse an inlined product with a following add, so the same call can
 * round differently there than elsewhere. */
#ifndef HY_CORE_VMATH_H
#define HY_CORE_VMATH_H
#include "core/simd.h"
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* a·b + c as one fused instruction where the target has FMA (C17 mode does not contract a*b + c). */
#ifdef __FMA__
#define HY_FMAF(a, b, c) __builtin_fmaf((a), (b), (c))
#else
#define HY_FMAF(a, b, c) ((a) * (b) + (c))
#endif

/* 1.5·2^23: adding it to a float of magnitude below 2^22 rounds it to an integer (to nearest, ties
 * to even), held in the low mantissa bits; subtracting it again gives that integer as a float. */
#define HY_ROUND_MAGIC 12582912.0f

/* exp's polynomial (Cephes) for x already in [-87, 88]: x = n·ln2 + r with n an integer (as a
 * float, exactly), returns p = exp(r) and sets *t = x·log2(e) + 1.5·2^23, whose low mantissa bits
 * hold n. exp(x) = p·2^n (hy_expf_core builds 2^n from t's bits, hy_expf_neg_vw scales by n). */
static inline float hy_expf_poly(float x, float *t_out) {
    const float t = HY_FMAF(x, 1.44269504088896341f, HY_ROUND_MAGIC), n = t - HY_ROUND_MAGIC;
    float r = HY_FMAF(n, -0.693359375f, x);
    r = HY_FMAF(n, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = HY_FMAF(p, r, 1.3981999507e-3f);
    p = HY_FMAF(p, r, 8.3334519073e-3f);
    p = HY_FMAF(p, r, 4.1665795894e-2f);
    p = HY_FMAF(p, r, 1.6666665459e-1f);
    p = HY_FMAF(p, r, 5.0000001201e-1f);
    *t_out = t;
    return HY_FMAF(p, r * r, r) + 1.0f;
}

/* exp(x) for x already in [-87, 88]: hy_expf_poly times 2^n, built from the bits of t in unsigned
 * integer arithmetic (exactly n's value there): a float-to-int conversion would be undefined for
 * the NaN that a NaN input carries through. */
static inline float hy_expf_core(float x) {
    float t;
    const float p = hy_expf_poly(x, &t);
    uint32_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits - 0x4B400000u + 127u) << 23;   /* 0x4B400000: the bits of HY_ROUND_MAGIC */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* The float's bits as an int32 whose signed order is the float order. Compares in the integer
 * domain keep loops branch-free: gcc 12 under the default -ftrapping-math turns float compares
 * feeding a select into branches ("control flow in loop"), which stops vectorization. */
static inline int32_t hy_float_ordered(float x) {
    int32_t k;
    memcpy(&k, &x, sizeof k);
    return k ^ ((k >> 31) & 0x7fffffff);
}

/* exp(x), clamped to [-87, 88] with integer compares on the ordered bits so that loops calling it
 * vectorize. NaN comes out as exp(-87) or exp(88). */
static inline float hy_expf(float x) {
    int32_t k = hy_float_ordered(x), lo = hy_float_ordered(-87.0f), hi = hy_float_ordered(88.0f);
    k = k < lo ? lo : k;
    k = k > hi ? hi : k;
    k ^= (k >> 31) & 0x7fffffff;   /* back to float bits */
    memcpy(&x, &k, sizeof x);
    return hy_expf_core(x);
}

/* x clamped below at -87 for x <= 0: for negative floats the bits grow with |x|, so one
 * unsigned min clamps. */
static inline float hy_clamp_neg87(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u = u > 0xc2ae0000u ? 0xc2ae0000u : u;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* exp(x) for x <= 0 (the Mamba scan's Δ·A, softplus's exp(-|v|)), clamped at -87. Not for x > 88. */
static inline float hy_expf_neg(float x) { return hy_expf_core(hy_clamp_neg87(x)); }

/* hy_expf_neg on the lanes of a vw (the Mamba scan's register blocks): the scalar code per lane,
 * which gcc turns into one vector instruction per step, so there is no second polynomial. With
 * AVX-512 the last step, p·2^n, is one scalef (p·2^floor(n), rounded once as the product is: the
 * same bits, NaN in gives NaN out) instead of building 2^n in the exponent bits and multiplying. */
static inline vw hy_expf_neg_vw(vw x) {
    vw r;
#if defined(__AVX512F__)
    vw n;
    for (int i = 0; i < HY_VW; i++) {
        float t;
        r[i] = hy_expf_poly(hy_clamp_neg87(x[i]), &t);
        n[i] = t - HY_ROUND_MAGIC;
    }
    return _mm512_scalef_ps(r, n);
#else
    for (int i = 0; i < HY_VW; i++) r[i] = hy_expf_neg(x[i]);
    return r;
#endif
}

/* 2^x on the lanes of a vw for x <= 0 (the attention kernels' softmax, in base 2, once the max
 * is subtracted): x = n + f with |f| <= 1/2 (n rounded to nearest, ties to even, by the 1.5·2^23
 * trick), 2^f by a degree-5 minimax polynomial (relative error 7.7e-8 before rounding), times 2^n
 * built in the exponent bits. Clamped at -125 so the result stays a normal float (>= 2^-125.5, as
 * hy_expf bottoms out near 1e-38 instead of 0; denormals would be slow). Not hy_expf_core's
 * polynomial: the attention results were made with this one. */
static inline __attribute__((always_inline)) vw hy_exp2f_vw(vw x) {
    const vw magic = vw_splat(HY_ROUND_MAGIC);
    x = vw_max(x, vw_splat(-125.0f));
    vw n = (x + magic) - magic, f = x - n;
    vw p = vw_splat(1.327793890e-3f);
    p = vw_fma(p, f, vw_splat(9.675757641e-3f));
    p = vw_fma(p, f, vw_splat(5.550709598e-2f));
    p = vw_fma(p, f, vw_splat(2.402211434e-1f));
    p = vw_fma(p, f, vw_splat(6.931469682e-1f));
    p = vw_fma(p, f, vw_splat(1.000000073f));
    vwi e = (__builtin_convertvector(n, vwi) + 127) << 23;
    return p * (vw)e;
}

/* 2^x on the lanes of a vw for x <= 0 to a relative error of 2.9e-6 (hy_exp2f_vw: 7.7e-8), for
 * kernels running under bf16 precision, whose inputs carry bf16's 3.9e-3: x = n + f with n the
 * nearest integer, 2^f = 1 + f·q(f) on [-1/2, 1/2] (q of degree 3, near-minimax in the relative
 * error, fitted by reweighted least squares: its error is 2.9e-6; the 1 + f·q form keeps 2^x - 1
 * relatively accurate for x near 0, a decay's rate), times 2^n. x is clamped at -125 on the bits
 * (one unsigned min, as hy_clamp_neg87; a NaN of either sign comes out as a number). With AVX-512
 * (DQ) f is one vreduceps and the scaling one vscalefps: 8 vector operations against hy_expf_neg_vw's 14. */
static inline __attribute__((always_inline)) vw hy_exp2f_coarse_neg_vw(vw x) {
    /* 0xc2fa0000: -125.0f. The unsigned min as its instruction: written as a compare and a bitwise
     * select, gcc 12 made it a compare, a masked move and a ternary-logic op (two operations more in
     * the scan's hottest loops). */
#if defined(__AVX512F__)
    x = (vw)_mm512_min_epu32((__m512i)x, _mm512_set1_epi32((int32_t)0xc2fa0000u));
#elif defined(HY_SIMD_X86)
    x = (vw)_mm256_min_epu32((__m256i)x, _mm256_set1_epi32((int32_t)0xc2fa0000u));
#else
    typedef uint32_t vwu __attribute__((vector_size(4 * HY_VW)));
    const vwu u = (vwu)x, lim = (vwu){0} + 0xc2fa0000u, above = (vwu)(u > lim);
    x = (vw)((u & ~above) | (lim & above));
#endif
#if defined(__AVX512DQ__)
    const vw f = _mm512_reduce_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), n = x - f;   /* n exact */
#else
    const vw magic = vw_splat(HY_ROUND_MAGIC), n = (x + magic) - magic, f = x - n;
#endif
    vw q = vw_fma(vw_splat(9.582873255e-3f), f, vw_splat(5.590648133e-2f));
    q = vw_fma(q, f, vw_splat(2.402409861e-1f));
    q = vw_fma(q, f, vw_splat(6.931241870e-1f));
    const vw p = vw_fma(q, f, vw_splat(1.0f));
#if defined(__AVX512F__)
    return _mm512_scalef_ps(p, n);
#else
    return p * (vw)((__builtin_convertvector(n, vwi) + 127) << 23);
#endif
}

/* g[c] += Σ_rows X[row·ld + c] for c < cols (a bias's or a per-channel parameter's gradient):
 * parallel over blocks of 64 columns, each column summed in row order, so the result does not
 * depend on the thread count. */
void hy_colsum_add(float *g, const float *X, size_t rows, int cols, size_t ld);

/* The standard normal CDF Φ(x) = (1 + erf(x/√2))/2, with the density φ(x) = exp(-x²/2)/√(2π) in
 * *pdf (exact-erf GELU x·Φ(x) and its derivative Φ + x·φ), branch-free for vectorized loops (libm's
 * erff is a call per element, ~10 ns). With t = |x|/√2: for t < 1.25, erf(t) = t·P(t²) (degree 6,
 * relative error 2.3e-8); beyond, erfc(t) = exp(-t²)·R(1/t²)/t (R degree 11 in a variable centred
 * on [0, 0.64], relative error 2.7e-8), so Φ keeps its relative accuracy far into the lower tail;
 * x² is split exactly (x·x + its FMA remainder) so exp(-x²/2) loses nothing to rounding x².
 * Coefficients: weighted least squares in double against mpmath's erf/erfc, refined to the minimax
 * error. Measured against double erfc over [-14, 14]: |error| <= 1.3e-7 (Φ near its 0.5..1 range),
 * relative <= 2.4e-6 (just left of the t = 1.25 switch, where 1/2 + erf/2 cancels); φ relative
 * <= 2.5e-7. Far in the lower tail Φ bottoms out near 1e-38 (hy_expf), not 0; x is clamped to
 * [-20, 20] (a NaN comes out as a number there, as in hy_expf). */
static inline float hy_normal_cdff(float x, float *pdf) {
    /* x clamped to [-20, 20] (Φ is 0 or 1 in float beyond, and x² stays finite), on the ordered
     * bits as in hy_expf so the loop stays branch-free */
    int32_t k = hy_float_ordered(x), kmin = hy_float_ordered(-20.0f), kmax = hy_float_ordered(20.0f);
    k = k < kmin ? kmin : k;
    k = k > kmax ? kmax : k;
    k ^= (k >> 31) & 0x7fffffff;
    memcpy(&x, &k, sizeof x);
    float xx = x * x, lo = HY_FMAF(x, x, -xx);   /* x² = xx + lo exactly (lo = 0 without FMA) */
    float g = hy_expf(-0.5f * xx) * HY_FMAF(-0.5f, lo, 1.0f);
    *pdf = 0.398942280401432678f * g;
    float s = xx * 0.32f;   /* t²/1.25² */
    float p = 0.0009025761133205697f;
    p = HY_FMAF(p, s, -0.006916094901135682f);
    p = HY_FMAF(p, s, 0.03045795520937658f);
    p = HY_FMAF(p, s, -0.10225264729770728f);
    p = HY_FMAF(p, s, 0.2754441911008359f);
    p = HY_FMAF(p, s, -0.5876950012597796f);
    p = HY_FMAF(p, s, 1.1283791408409942f);
    float near = HY_FMAF(x * 0.353553390593273762f, p, 0.5f);   /* 1/2 + erf(x/√2)/2 */
    float inv_a = 1.0f / fabsf(x), w = HY_FMAF(6.25f * inv_a, inv_a, -1.0f);   /* 2·(1/t²)/0.64 - 1 */
    float r = -3.96511807565401e-05f;
    r = HY_FMAF(r, w, 5.3377235376772056e-05f);
    r = HY_FMAF(r, w, 2.7153781798715134e-05f);
    r = HY_FMAF(r, w, -1.7318821342353054e-06f);
    r = HY_FMAF(r, w, -0.00014795819921177098f);
    r = HY_FMAF(r, w, 0.00025570585329728706f);
    r = HY_FMAF(r, w, -0.0004831676524483887f);
    r = HY_FMAF(r, w, 0.0012009963133962855f);
    r = HY_FMAF(r, w, -0.003308168476536718f);
    r = HY_FMAF(r, w, 0.010794050373662763f);
    r = HY_FMAF(r, w, -0.04825367586005515f);
    r = HY_FMAF(r, w, 0.4996817028962847f);
    float tail = 0.707106781186547524f * g * r * inv_a;   /* erfc(t)/2 = exp(-t²)·R/(2t), 1/(2t) = 1/(√2·|x|) */
    float far = hy_float_ordered(x) < 0 ? tail : 1.0f - tail;
    return hy_float_ordered(xx) < hy_float_ordered(3.125f) ? near : far;   /* t < 1.25 */
}

/* Σ a[i]·b[i] over n floats in vw lanes (two accumulators, the tail masked), then the lanes
 * added: a fixed order for a given vector width. For rows of a few hundred floats (norms), where
 * a scalar sum is a chain of dependent adds. */
static inline float hy_dotf(const float *a, const float *b, int n) {
    vw s0 = {0}, s1 = {0};
    int i = 0;
    for (; i + 2 * HY_VW <= n; i += 2 * HY_VW) {
        s0 = vw_fma(vw_load(a + i), vw_load(b + i), s0);
        s1 = vw_fma(vw_load(a + i + HY_VW), vw_load(b + i + HY_VW), s1);
    }
    for (; i < n; i += HY_VW) {
        vw_mask m = vw_mask_first(n - i);
        s0 = vw_fma(vw_load_masked(a + i, m), vw_load_masked(b + i, m), s0);
    }
    return vw_hsum(s0 + s1);
}

static inline float hy_sigmoidf(float x) { return 1.0f / (1.0f + hy_expf(-x)); }
static inline float hy_siluf(float x) { return x / (1.0f + hy_expf(-x)); }

/* softplus(x) = log(1 + exp(x)) three ways, which differ in the last bits (a block keeps the one
 * its results were made with):
 *   hy_softplusf        libm, SPEC's cut-off (x > 20 returns x): the reference, not for hot loops;
 *   hy_softplus_array   SPEC's cut-off, over an array, vectorized, within ~2 ulp of libm (Mamba's Δ);
 *   hy_softplusf_atanh  inline for vectorized loops, no cut-off, relative error ~1e-7 (RWKV-7's decay). */
float hy_softplusf(float x);

/* out[i] = SPEC softplus(in[i]) for n floats: max(v, 0) + log1p(exp(-|v|)) below the cut-off, with
 * hy_expf_neg and a Cephes log1p, branch-free so the loop vectorizes; OpenMP above 32768 floats. */
void hy_softplus_array(float *restrict out, const float *restrict in, size_t n);

/* out[r·cols + c] = hy_softplus_array(raw + bias[c]) row by row in one pass (a projection's bias
 * and softplus: Mamba's Δ), the same bits as adding the bias and then hy_softplus_array; raw is
 * only read (a reader of raw + bias adds the bias again, with the same bits, instead of a second
 * (rows, cols) array being written). OpenMP over rows above 16384 floats. */
void hy_softplus_bias_rows(float *restrict out, const float *restrict raw, const float *restrict bias, size_t rows,
                           int cols);

/* log(1 + exp(u)), branch-free for vectorized loops: max(u,0) + log1p(e^-|u|) with log1p(t), t in
 * (0, 1], as 2·atanh(t/(2+t)) by its series (relative error ~1e-7). Its a·b + c are plain, not
 * HY_FMAF: the rwkv7 block's results were made with them unfused (rwkv7.c has no fp-contract). */
static inline float hy_softplusf_atanh(float u) {
    float t = hy_expf(-fabsf(u)), s = t / (2.0f + t), s2 = s * s;
    float p = 1.0f / 13.0f;
    p = p * s2 + 1.0f / 11.0f;
    p = p * s2 + 1.0f / 9.0f;
    p = p * s2 + 1.0f / 7.0f;
    p = p * s2 + 1.0f / 5.0f;
    p = p * s2 + 1.0f / 3.0f;
    p = p * s2 + 1.0f;
    return (u > 0 ? u : 0.0f) + 2.0f * s * p;
}

#endif

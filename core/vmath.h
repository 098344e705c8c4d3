/* Elementwise math in forms the compiler vectorizes (-O3 -march=native): branch-free, no libm
 * calls, so loops over these run at SIMD speed (~0.3 ns per expf on AVX-512 instead of ~3 ns).
 * Accuracy: hy_expf within 2 ulp of expf over [-87, 88]; below -87 it returns ~1e-38, not 0. */
#ifndef HY_CORE_VMATH_H
#define HY_CORE_VMATH_H
#include <stdint.h>
#include <string.h>

static inline float hy_expf(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float n = (x * 1.44269504088896341f + magic) - magic;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float hy_sigmoidf(float x) { return 1.0f / (1.0f + hy_expf(-x)); }
static inline float hy_siluf(float x) { return x / (1.0f + hy_expf(-x)); }

/* log(1 + exp(x)) with the SPEC's cut-off: x > 20 returns x. Uses libm log1pf: not for hot loops. */
float hy_softplusf(float x);

#endif

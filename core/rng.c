#include "core/rng.h"
#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void hy_rng_seed(hy_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t hy_rng_u64(hy_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float hy_rng_uniform(hy_rng *r) { return (float)(hy_rng_u64(r) >> 40) * 0x1.0p-24f; }

float hy_rng_normal(hy_rng *r) {
    double u1 = ((hy_rng_u64(r) >> 11) + 1.0) * 0x1.0p-53, u2 = (hy_rng_u64(r) >> 11) * 0x1.0p-53;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

uint64_t hy_rng_below(hy_rng *r, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;
    do x = hy_rng_u64(r);
    while (x >= limit);
    return x % n;
}

/* n draws of U(-bound, bound), in order (the layers' weight inits). */
void hy_rng_fill_uniform(hy_rng *r, float *x, size_t n, float bound) {
    for (size_t i = 0; i < n; i++) x[i] = bound * (2 * hy_rng_uniform(r) - 1);
}

/* n draws of N(0, std²), in order. */
void hy_rng_fill_normal(hy_rng *r, float *x, size_t n, float std) {
    for (size_t i = 0; i < n; i++) x[i] = std * hy_rng_normal(r);
}

/* Seeded, portable random numbers (xoshiro256**): same seed, same numbers on every machine. */
#ifndef HY_CORE_RNG_H
#define HY_CORE_RNG_H
#include <stddef.h>
#include <stdint.h>

typedef struct { uint64_t s[4]; } hy_rng;

void hy_rng_seed(hy_rng *r, uint64_t seed);
uint64_t hy_rng_u64(hy_rng *r);
float hy_rng_uniform(hy_rng *r);                 /* [0, 1) */
float hy_rng_normal(hy_rng *r);                  /* N(0, 1), Box-Muller */
uint64_t hy_rng_below(hy_rng *r, uint64_t n);    /* uniform integer in [0, n), n > 0 */
void hy_rng_fill_uniform(hy_rng *r, float *x, size_t n, float bound);   /* x[i] ~ U(-bound, bound) */
void hy_rng_fill_normal(hy_rng *r, float *x, size_t n, float std);      /* x[i] ~ N(0, std²) */

#endif

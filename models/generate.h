/* Sampling and generation (the public part is in hybrid.h: hy_sample_opts, hy_generate). */
#ifndef HY_MODELS_GENERATE_H
#define HY_MODELS_GENERATE_H
#include "core/rng.h"
#include "hybrid.h"

/* Checks temperature >= 0 (finite), top_k >= 0, 0 < top_p <= 1; the message names the option. */
int hy_sample_opts_check(const hy_sample_opts *o);
/* One (logit, token) pair of the sampler's work array. */
typedef struct {
    float z;
    int32_t id;
} hy_sample_pair;
/* Draws one token from logits[0..V) under o (see hy_sample_opts), using rng (untouched when
 * greedy); work holds V pairs. Returns the token, or a negative error (a NaN logit). */
int32_t hy_sample(const float *logits, int V, const hy_sample_opts *o, hy_rng *rng, hy_sample_pair *work);
/* The tokens that can be drawn under o, most likely first (the support of the distribution hy_sample
 * draws from): writes them into ids (V entries), returns how many. */
int hy_sample_support(const float *logits, int V, const hy_sample_opts *o, hy_sample_pair *work, int32_t *ids);

#endif

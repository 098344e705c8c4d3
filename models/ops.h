/* The model's own operations around the blocks: rmsnorm, embedding lookup and cross-entropy.
 * Each is a forward/backward pair over `rows` independent rows; backward accumulates parameter
 * gradients deterministically (fixed-order reduction, for a fixed thread count). */
#ifndef HY_MODELS_OPS_H
#define HY_MODELS_OPS_H
#include "core/bf16.h"
#include <stddef.h>
#include <stdint.h>

#define HY_RMSNORM_EPS 1e-5f

/* y = w ⊙ x / sqrt(mean(x²) + eps); rstd[r] = 1/sqrt(...) saved for backward. */
void hy_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, size_t rows, int d);
/* The residual add and the next rmsnorm in one pass: sum = x + r, then y and rstd as
 * hy_rmsnorm_forward(y, rstd, sum, w, rows, d) gives them, bit for bit. sum may be x (in place). */
void hy_add_rmsnorm_forward(float *sum, float *y, float *rstd, const float *x, const float *r, const float *w,
                            size_t rows, int d);
/* The same two, also writing bf16(y) into yh (when not NULL) while each row is in L1: the copy a
 * model registers for its products under bf16 precision (hy_gemm_bf16_shadow), so that they read
 * the layers' inputs without converting them. y's values are the same bits as without yh. */
void hy_rmsnorm_forward_bf16(float *y, hy_bf16 *yh, float *rstd, const float *x, const float *w, size_t rows, int d);
void hy_add_rmsnorm_forward_bf16(float *sum, float *y, hy_bf16 *yh, float *rstd, const float *x, const float *r,
                                 const float *w, size_t rows, int d);
/* dx (+)= ...; dw += Σ_rows dy ⊙ x ⊙ rstd. accumulate_dx: add into dx instead of overwriting. */
int hy_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd,
                        size_t rows, int d, int accumulate_dx);

void hy_embedding_forward(float *h, const float *table, const int32_t *tokens, size_t rows, int d);
void hy_embedding_backward(float *dtable, const float *dh, const int32_t *tokens, size_t rows, int d);

/* Mean cross-entropy of logits (rows, V) against targets (target < 0: ignored). Returns the mean
 * loss in nats; *n_targets gets the number of rows that had a target. */
double hy_cross_entropy_forward(const float *logits, const int32_t *targets, size_t rows, int V, long *n_targets);
/* dlogits = scale * (softmax(logits) - onehot(target)) for rows with a target, 0 elsewhere. */
void hy_cross_entropy_backward(float *dlogits, const float *logits, const int32_t *targets, size_t rows, int V,
                               float scale);

#endif

/* moe — the mixture-of-experts feed-forward's own API (layers/ffn/moe.c) for its tests: parameter
 * indices, routing counts, the last aux loss. (The trainer reads the counts through the block's
 * generic stats hook, hy_block_stats, and never includes this header.) */
#ifndef HY_LAYERS_MOE_H
#define HY_LAYERS_MOE_H
#include "layers/registry.h"
#include <stdint.h>

extern const hy_block_ops hy_block_moe;

#define HY_MOE_MAX_EXPERTS 64

/* Parameter index of expert e's projections (router.weight is parameter 0). */
enum { HY_MOE_P_ROUTER = 0 };
static inline int hy_moe_param_gate(int e) { return 1 + 3 * e; }
static inline int hy_moe_param_up(int e) { return 2 + 3 * e; }
static inline int hy_moe_param_down(int e) { return 3 + 3 * e; }

/* Token-slot assignments routed to each expert by forward() since the last reset (streaming step()
 * is not counted). Writes min(E, max) counts into out and returns E (the layer's n_experts). */
int hy_moe_expert_counts(const hy_layer *L, int64_t *out, int max);
void hy_moe_reset_counts(hy_layer *L);
/* Aux loss E·Σ f_e·P_e of the most recent forward() of this layer (0 before any). */
double hy_moe_last_aux(const hy_layer *L);

#endif

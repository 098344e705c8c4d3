/* hybrid: attention / state-space hybrid language models in C. The public API.
 * Functions return 0 on success and a negative code on failure; hy_last_error() says why.
 * Nothing in the library exits or prints (except the trainer's progress, on request). */
#ifndef HYBRID_H
#define HYBRID_H
#include <stdbool.h>
#include <stdint.h>

#define HYBRID_VERSION "0.1.0"

typedef struct hy_model_config hy_model_config;
typedef struct hy_model hy_model;

typedef struct {
    float loss;        /* ce_loss + router_aux_coef * aux_loss */
    float ce_loss;     /* mean cross-entropy over positions with a target (nats) */
    float aux_loss;    /* mean MoE load-balancing loss over MoE layers (0 without MoE) */
    long n_targets;    /* positions that had a target (target >= 0) */
} hy_loss;

const char *hy_last_error(void);
void hy_set_threads(int n);   /* <= 0: all cores */

/* Build a model from a resolved config (copied) and initialise it from `seed`. */
int hy_model_create(const hy_model_config *cfg, uint64_t seed, hy_model **out);
void hy_model_free(hy_model *m);
const hy_model_config *hy_model_get_config(const hy_model *m);
/* inputs, targets: (B, T) token ids; a target < 0 is ignored. targets may be NULL (no loss).
 * keep_for_backward: save activations so hy_model_backward can follow. */
int hy_model_forward(hy_model *m, const int32_t *inputs, const int32_t *targets, int B, int T,
                     bool keep_for_backward, hy_loss *loss);
/* Gradient of the last forward's loss, accumulated into the gradients. */
int hy_model_backward(hy_model *m);
void hy_model_zero_grad(hy_model *m);

/* Checkpoints (safetensors, SPEC §4). */
int hy_checkpoint_save(const hy_model *m, const char *path, long step);
int hy_checkpoint_load(const char *path, hy_model **out, long *step);

#endif

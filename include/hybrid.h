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

/* ---- streaming inference ----
 * A state holds what B sequences have consumed so far (KV caches, recurrent states) and the logits
 * that predict each sequence's next token. tokens: (B, T) rows, one sequence per row. */
typedef struct hy_model_state hy_model_state;
int hy_model_state_new(hy_model *m, int B, hy_model_state **out);
/* One token per sequence; writes the (B, V) logits that follow it (logits may be NULL). */
int hy_model_step(hy_model *m, hy_model_state *s, const int32_t *tokens, float *logits);
/* T tokens per sequence through each block's multi-token prefill (the parallel kernels starting
 * from the state), in chunks of at most 2048 tokens; a stack with a block that has no prefill is
 * stepped token by token instead. On error the state is left undefined. logits:
 * NULL, or (B, T, V) for every position when all_positions, else the (B, V) after the last token. */
int hy_model_prefill(hy_model *m, hy_model_state *s, const int32_t *tokens, int T, float *logits,
                     bool all_positions);
void hy_model_state_free(hy_model *m, hy_model_state *s);
long hy_model_state_position(const hy_model_state *s);   /* tokens consumed per sequence */
/* State files (safetensors, format "hybrid-state"): every block's state as named F32 tensors
 * "layers.{i}.mixer.<name>" / "layers.{i}.ffn.<name>", the last logits, and __metadata__ (model
 * config, weights fingerprint, position, batch). Loading refuses a state made by another model
 * or other weights. Written to a temporary name, then renamed. */
int hy_model_state_save(hy_model *m, const hy_model_state *s, const char *path);
int hy_model_state_load(hy_model *m, const char *path, hy_model_state **out);

/* Sampling: temperature 0 = greedy (argmax); otherwise softmax(logits / temperature) restricted
 * to the top_k most likely tokens (0 = all) and then to the smallest set whose probability
 * reaches top_p (1 = all), drawn with the project's seeded RNG (same seed, same text). */
typedef struct {
    float temperature;
    int top_k;
    float top_p;
    uint64_t seed;
} hy_sample_opts;
/* Called for each produced token, as soon as it is sampled; return nonzero to stop early. */
typedef int (*hy_token_fn)(int32_t token, void *user);
/* Prefills prompt[0..n_prompt) into s (B = 1), then samples up to n_new tokens, each consumed
 * into s before the next is drawn (so s ends holding all the text). With n_prompt = 0 it
 * continues from the logits s holds (e.g. a loaded state). out (n_new entries) may be NULL.
 * Returns the number of tokens produced, or a negative error. */
int hy_generate(hy_model *m, hy_model_state *s, const int32_t *prompt, int n_prompt, int n_new,
                const hy_sample_opts *o, hy_token_fn on_token, void *user, int32_t *out);

/* Checkpoints (safetensors, SPEC §4). */
int hy_checkpoint_save(const hy_model *m, const char *path, long step);
int hy_checkpoint_load(const char *path, hy_model **out, long *step);

#endif

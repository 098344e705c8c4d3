/* hybrid: attention / state-space hybrid language models in C. The public API (docs/api.md).
 * Functions return 0 on success and a negative code on failure; hy_last_error() says why.
 * Nothing in the library exits or prints (except the trainer's progress, on request).
 * Handles (configs, models, optimizers, states) are opaque: made by a *_new / *_create / *_load
 * function, released by its *_free (hy_model_config_destroy for configs). */
#ifndef HYBRID_H
#define HYBRID_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HYBRID_VERSION "0.1.0"

typedef struct hy_model_config hy_model_config;
typedef struct hy_model hy_model;

/* The negative codes functions return; hy_last_error() holds the message (this thread's). */
enum {
    HY_OK = 0,
    HY_ERR = -1,          /* any other failure (bad argument, non-finite loss, ...) */
    HY_ERR_CONFIG = -2,   /* an invalid config: the message names the key */
    HY_ERR_IO = -3,       /* a file could not be read or written */
    HY_ERR_NOMEM = -4,    /* out of memory */
};

typedef struct {
    float loss;        /* ce_loss + router_aux_coef * aux_loss */
    float ce_loss;     /* mean cross-entropy over positions with a target (nats) */
    float aux_loss;    /* mean MoE load-balancing loss over MoE layers (0 without MoE) */
    long n_targets;    /* positions that had a target (target >= 0) */
} hy_loss;

const char *hy_last_error(void);
void hy_set_threads(int n);   /* <= 0: all cores */

/* ---- model configs ----
 * A config holds d_model, vocab_size, n_layers and, for every layer, a mixer block and an
 * optional feed-forward (ffn) block with their options (docs/blocks.md; `hybrid-exp blocks` lists
 * them). Build it from YAML, the same schema as the program's configs (docs/configs.md), or with
 * the C calls below; both end in the same resolved config. hy_model_create copies it, so a config
 * may be destroyed as soon as its model exists. */

/* From YAML text: a run config or a model file, i.e. a map with a `model:` section (the other
 * run-config sections are checked like the program checks them, but only the model is kept).
 * name_for_errors names the text in messages, "NAME:LINE:COL: model.blocks.attention.n_heads:
 * must be an integer, got 'four'" (NULL: "<yaml>"). *out is resolved; NULL on error. */
int hy_model_config_from_yaml(const char *yaml_text, const char *name_for_errors, hy_model_config **out);
/* The same from a YAML file (a file of configs/ or configs/models/); messages name the file. */
int hy_model_config_load(const char *path, hy_model_config **out);
/* A config to fill from C: the sizes, tied embeddings, router_aux_coef 0.001 (the YAML defaults)
 * and no blocks yet: give every layer a mixer with hy_model_config_set_layer. */
int hy_model_config_new(int d_model, int n_layers, int vocab_size, hy_model_config **out);
/* Puts block `mixer` and block `ffn` (NULL or "none": no feed-forward) in layer `layer` (0-based;
 * -1: every layer), each with its default options. An unknown block, or one that cannot go in that
 * slot, is HY_ERR_CONFIG naming the slot and listing the blocks that can ("layers[2].mixer:
 * unknown mixer block 'mamba2' (registered mixers: attention, mamba, ...)"); nothing changes then. */
int hy_model_config_set_layer(hy_model_config *cfg, int layer, const char *mixer, const char *ffn);
/* Sets option `key` of block `block` on every layer that has that block now (like YAML's
 * model.blocks.BLOCK.KEY): place the blocks first, a layer given the block later starts from its
 * defaults. value is written as in YAML: "4", "0.5", "true", "null", "auto". Errors (unknown block
 * or key, a value of the wrong type or out of range, a block no layer has) name the block and key
 * ("attention.n_heads: must be an integer, got 'four'") and change nothing. */
int hy_model_config_set_option(hy_model_config *cfg, const char *block, const char *key, const char *value);
/* The same for one slot: slot "mixer" or "ffn" of layer `layer` (YAML's per-layer options). */
int hy_model_config_set_layer_option(hy_model_config *cfg, int layer, const char *slot, const char *key,
                                     const char *value);
/* Whether the output head shares the embedding matrix (default true). */
void hy_model_config_set_tie_embeddings(hy_model_config *cfg, bool tie);
/* Weight of the MoE load-balancing loss in hy_loss.loss (default 0.001; checked when resolved). */
void hy_model_config_set_router_aux_coef(hy_model_config *cfg, float coef);
/* Fills `auto` options (e.g. swiglu's d_ff) and checks every constraint, in place. hy_model_create
 * does it too; call it to get a built config's errors before creating a model, or before
 * comparing configs. Errors name the layer and key ("layers[0].mixer.n_heads: ..."). */
int hy_model_config_resolve(hy_model_config *cfg);
/* The config as the JSON that checkpoints store (SPEC §4, every option explicit): a stable text to
 * compare or log. *out is malloc'd: release it with free(). */
int hy_model_config_to_json(const hy_model_config *cfg, char **out);
/* Releases a config made by hy_model_config_from_yaml / _load / _new (NULL is fine). Not for the
 * config hy_model_get_config returns, which belongs to its model. */
void hy_model_config_destroy(hy_model_config *cfg);

/* ---- models ---- */
/* Build a model from a config (copied and resolved) and initialise it from `seed`. */
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
size_t hy_model_param_count(const hy_model *m);   /* trainable scalars */

/* ---- training ----
 * The trainer's update, usable in your own loop: hy_train_step (forward with targets, backward,
 * gradient clipping, one optimizer update) with a learning rate from hy_lr_schedule, as
 * `hybrid-exp` trains (docs/api.md shows the loop). */
typedef enum { HY_OPTIM_ADAMW, HY_OPTIM_SGD } hy_optim_kind;
typedef struct {
    hy_optim_kind kind;
    double weight_decay;   /* decoupled (AdamW) / L2 (SGD), on 2-D and larger tensors only, never on
                            * those a block marks no-decay (e.g. Mamba's A_log, the SSM kernels) */
    double beta1, beta2, eps;   /* AdamW */
    double momentum;       /* SGD */
    double ssm_lr;         /* the SSM kernels of s4d and hyena use min(lr, ssm_lr), as S4 does */
    double grad_clip;      /* clip the global gradient norm to this before each update; 0 = never */
} hy_optim_opts;
/* The trainer's defaults (train.* in docs/configs.md): AdamW, weight_decay 0.1, betas 0.9/0.95,
 * eps 1e-8, momentum 0.9, ssm_lr 1e-3, grad_clip 1.0. */
void hy_optim_opts_defaults(hy_optim_opts *o);

typedef struct hy_optimizer hy_optimizer;
/* An optimizer over every parameter of m (opts NULL: the defaults). Holds m: free the optimizer
 * before the model. Invalid options are HY_ERR_CONFIG naming the field. */
int hy_optimizer_new(hy_model *m, const hy_optim_opts *opts, hy_optimizer **out);
/* One update from the gradients the model holds (after hy_model_backward): clips them to
 * grad_clip, then steps with learning rate lr (>= 0). Refuses a non-finite gradient norm and then
 * leaves the weights as they were. */
int hy_optimizer_step(hy_optimizer *opt, double lr);
double hy_optimizer_grad_norm(const hy_optimizer *opt);   /* of the last step, before clipping */
long hy_optimizer_steps(const hy_optimizer *opt);          /* updates made so far */
void hy_optimizer_free(hy_optimizer *opt);
/* One training step of opt's model on a batch: forward (inputs, targets: (B, T) token ids, a
 * target < 0 ignored), zero the gradients, backward, hy_optimizer_step(opt, lr). *loss (may be NULL)
 * gets the batch's loss before the update. A non-finite loss is an error and leaves the weights. */
int hy_train_step(hy_optimizer *opt, const int32_t *inputs, const int32_t *targets, int B, int T, double lr,
                  hy_loss *loss);
/* The trainer's learning rate at `step` (0-based): linear warmup to lr over `warmup` steps, then
 * cosine decay to min_lr as `progress` goes 0 -> 1; the trainer uses
 * progress = (step - warmup) / (total_steps - warmup). */
double hy_lr_schedule(long step, long warmup, double progress, double lr, double min_lr);

/* ---- streaming inference ----
 * A state holds what B sequences have consumed so far (KV caches, recurrent states) and the logits
 * that predict each sequence's next token. tokens: (B, T) rows, one sequence per row. A state
 * holds at most 2^30 tokens per sequence: step and prefill refuse to go past that. */
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
 * or other weights, and checks every size (batch, position, each block's tensors) against the
 * file and the model before it allocates the state. Written to a temporary name, then renamed. */
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

/* Checkpoints (safetensors, SPEC §4): every parameter under its SPEC name, the config and `step`
 * in the metadata; written to a temporary name, then renamed. Loading builds the model the file
 * describes (*step may be NULL). The optimizer's moments are not in it. */
int hy_checkpoint_save(const hy_model *m, const char *path, long step);
int hy_checkpoint_load(const char *path, hy_model **out, long *step);

#endif

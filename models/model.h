/* The language model: embedding -> n_layers x (rmsnorm -> mixer, rmsnorm -> ffn, residuals)
 * -> rmsnorm -> lm_head (SPEC §1). Owns one arena of parameters and one of gradients; every
 * parameter has its SPEC name. Forward keeps what backward needs; any B and T per call. */
#ifndef HY_MODELS_MODEL_H
#define HY_MODELS_MODEL_H
#include "hybrid.h"
#include "core/bf16.h"
#include "core/mem.h"
#include "layers/registry.h"
#include <stdint.h>

typedef struct {
    const hy_block_ops *ops;   /* NULL = none (ffn only) */
    hy_opts opts;
} hy_block_cfg;

typedef struct {
    hy_block_cfg mixer, ffn;
} hy_layer_cfg;

struct hy_model_config {
    int d_model, vocab_size, n_layers;
    bool tie_embeddings;
    float router_aux_coef;
    hy_layer_cfg *layers;      /* n_layers entries, malloc'd, owned */
};

typedef struct {
    char name[HY_MAX_NAME];
    int ndim;
    int shape[4];
    size_t numel;
    float *data, *grad;        /* views into the model's arenas */
    unsigned flags;            /* HY_PARAM_* */
} hy_param;

/* Called by backward as soon as the gradients of arena elements [offset, offset + count) are
 * final for this backward: ranges come from the end of the arena to its start, each adjacent to
 * the one before, and together cover [0, numel) once per backward (data-parallel training starts
 * averaging a range while backward computes the rest). */
typedef void (*hy_grad_ready_fn)(void *ctx, size_t offset, size_t count);

struct hy_model {
    hy_model_config cfg;
    int n_params;
    hy_param *params;
    float *data, *grad;        /* arenas: every parameter / gradient, contiguous */
    size_t numel;
    hy_bf16 *data_bf16;        /* under compute.precision bf16: bf16(data), what matrix products read */
    bool bf16_valid;           /* data_bf16 matches data (cleared by hy_model_params_changed) */
    hy_layer *mixers, *ffns;   /* ffns[i].ops == NULL when layer i has no ffn */
    hy_param *embedding, *lm_head, *norm_f, **norm, **ffn_norm;
    hy_shared shared;
    /* caches of the last forward */
    int B, T;
    int32_t *tokens, *targets;
    hy_buf h;                  /* residual stream before each sub-block: (2*n_layers+1) x B*T*d */
    hy_buf normed;             /* rmsnorm outputs, same layout */
    hy_bf16 *normed_bf16;      /* under bf16: bf16(normed), written by the norms, registered as normed's
                                  copy (hy_gemm_bf16_shadow) for the products that read the norms' outputs */
    size_t normed_bf16_cap;    /* values normed_bf16 holds */
    const float *normed_shadow; /* the base registered with it (normed.p at the last bf16 forward), or NULL */
    hy_buf rstd;               /* 1/rms per row, same layout with one float per row */
    hy_buf logits, work, dwork, dh;
    hy_loss loss;
    /* a batch split over processes (hy_model_set_batch_share); 0 = this process holds all of it */
    long batch_targets;
    /* the gradients-ready hook (hy_model_set_grad_ready) */
    hy_grad_ready_fn grad_ready;
    void *grad_ready_ctx;
};

/* Sets the gradients-ready hook (NULL = none). */
void hy_model_set_grad_ready(hy_model *m, hy_grad_ready_fn fn, void *ctx);
/* This process computes a part of a batch that is split over processes: backward divides the
 * cross-entropy gradient by batch_targets, the labelled positions of the whole batch, instead of
 * those of its own part, and weights the auxiliary losses' gradient by aux_weight (its part's
 * share of the batch), so that the sum of every part's gradient is the whole batch's.
 * batch_targets = 0 restores the default (this process holds the whole batch). */
void hy_model_set_batch_share(hy_model *m, long batch_targets, double aux_weight);
/* Under bf16 precision: converts the parameter arena to its bf16 copy and registers the copy with
 * hy_gemm (hy_gemm_bf16_shadow), so the step's products read the weights converted once; nothing
 * under f32. hy_model_forward and hy_model_prefill call it on every call, hy_model_step when the
 * copy is stale. */
int hy_model_bf16_refresh(hy_model *m);
/* Marks the bf16 copy stale: whoever writes parameters (the optimizer, a checkpoint load) calls it. */
void hy_model_params_changed(hy_model *m);

/* Resolve and validate a config in place (auto options, block constraints). */
int hy_model_config_resolve(hy_model_config *cfg);
/* The defaults every config source starts from: vocab_size 256, tied embeddings, router_aux_coef
 * 0.001, no layers (the YAML loader's defaults and hy_model_config_new's). */
void hy_model_config_defaults(hy_model_config *cfg);
/* The block called `name` for a slot of `kind` (HY_KIND_MIXER or HY_KIND_FFN; 0 = any block);
 * *ops = NULL for an ffn called "none". On error returns -1 and writes the problem, without
 * location, into msg: "unknown mixer block 'x' (registered mixers: ...)", "block 'swiglu' cannot be
 * used as a mixer (mixers: ...)", for kind 0 "unknown block 'x' (registered: ...)". The YAML loader
 * and the C config builder both use it, so both say the same. */
int hy_block_lookup(const char *name, unsigned kind, const hy_block_ops **ops, char *msg, size_t len);
/* Index of option `key` of ops, or -1 with "unknown option 'k' for mamba (options: ...)" in msg. */
int hy_block_option_lookup(const hy_block_ops *ops, const char *key, char *msg, size_t len);
/* hy_opt_parse of `text` into option idx, its message without the leading option name ("must be
 * an integer, got 'four'"), for callers that put the key path in front (YAML and C builder alike). */
int hy_block_option_parse(const hy_block_ops *ops, hy_opts *o, int idx, const char *text, char *msg, size_t len);
int hy_model_config_copy(hy_model_config *dst, const hy_model_config *src);
void hy_model_config_free(hy_model_config *cfg);
/* The one walk over a block's option table for the config writers (the JSON inside checkpoints,
 * models/checkpoint.c; the resolved YAML, experiments/config.c): calls fn(ctx, name, value) for
 * every option of b in table order (none for an empty ffn), value as hy_opt_format writes it
 * (null, "auto", true/false, an integer, %.9g). With exact_floats, a float option that %.9g does
 * not carry exactly is written in its shortest exact form (hy_format_double) instead: the YAML
 * does so; the checkpoint JSON keeps %.9g, the bytes that existing checkpoints and state files hold. */
typedef void (*hy_opt_visit_fn)(void *ctx, const char *name, const char *value);
void hy_block_cfg_each_opt(const hy_block_cfg *b, bool exact_floats, hy_opt_visit_fn fn, void *ctx);
/* Every option explicit, the SPEC §4 JSON shape; *out is malloc'd. */
int hy_model_config_to_json(const hy_model_config *cfg, char **out);
hy_param *hy_model_param(hy_model *m, const char *name);
size_t hy_model_param_count(const hy_model *m);   /* scalars */
/* The parameter scalars of the model a resolved config describes, before building it (INFINITY
 * when a block reports more tensors than HY_MAX_BLOCK_PARAMS). */
double hy_model_config_scalars(const hy_model_config *cfg);
/* A 64-bit fingerprint of every parameter as 16 hex digits (FNV-1a over the F32 bit patterns as
 * 32-bit words, in the arena's order: the config's parameter order, each tensor padded to 16
 * floats with zeros). Streaming states and training states record it to refuse other weights. */
void hy_model_weights_fingerprint(const hy_model *m, char *out, size_t n);
/* Analytic forward FLOPs per token at sequence length T (blocks + head). */
double hy_model_flop_per_token(const hy_model *m, int T);
size_t hy_model_state_bytes(const hy_model *m, int T);

/* The memory a training step of a model of config cfg takes on B sequences of T tokens with
 * `threads` threads and an optimizer with `slots` moments per parameter (AdamW 2, SGD 1), in bytes,
 * from the sizes of the buffers the model, its blocks (hy_block_ops.train_bytes) and the
 * optimizer allocate: what the trainer compares with the machine's memory before a run. */
typedef struct {
    double scalars;       /* parameters (hy_model_param_count) */
    double params;        /* the parameter arena (each tensor padded to 16 floats), bytes */
    double grads;         /* the gradient arena */
    double optimizer;     /* the moments */
    double activations;   /* kept from forward through backward and after: the residual streams, norm
                             outputs, logits and their gradients, the blocks' caches and workspaces */
    double scratch;       /* the largest buffer one block allocates and frees within a call */
    double total;         /* the sum: the peak of a training step */
} hy_train_memory;
int hy_model_train_memory(const hy_model_config *cfg, int B, int T, int threads, int slots, hy_train_memory *out);
/* Logits of the last forward, (B, T, V). */
const float *hy_model_logits(const hy_model *m);

/* Streaming (declared in hybrid.h: hy_model_state_new/step/prefill/free, state save/load). The
 * state of B sequences: one state per sub-block (2*i = mixer of layer i, 2*i+1 = its ffn; NULL
 * for a missing ffn or a stateless block), the logits after the last consumed token, and scratch. */
struct hy_model_state {
    int B;
    long pos;                  /* tokens consumed per sequence */
    void **block_state;        /* 2*n_layers entries */
    float *h, *xn, *y, *rstd;  /* (B, d) scratch of step */
    float *logits;             /* (B, V): logits after the last consumed token */
    bool have_logits;          /* false until a token was consumed (or a saved state had them) */
    hy_buf ph, pxn, py, prstd, px, plog;   /* prefill scratch, one chunk */
};
/* The layer of sub-block s (see above); its ops are NULL for a missing ffn. */
hy_layer *hy_model_sub_block(hy_model *m, int s);
/* Tokens per call of a block's prefill inside hy_model_prefill (bounds its scratch memory). */
#define HY_PREFILL_CHUNK 2048

#endif

/* The layer registry: every block (mixer or feed-forward) is a table of operations registered by
 * name. Adding a block = one new file in layers/ defining a `const hy_block_ops hy_block_NAME` plus
 * one line in registry.c. The model (models/model.c) owns parameters, gradients and the residual
 * stream; a block only sees (B, T, d_model) activations in and out.
 *
 * Conventions every block follows:
 *  - x and y are row-major (B, T, d_model); rows are independent sequences.
 *  - forward() may be called with any B and T on the same layer; it keeps what backward() needs
 *    (in L->priv, grown with hy_buf_reserve) when L->keep_for_backward is set.
 *  - backward() gets dy for the most recent forward(), OVERWRITES dx and ACCUMULATES (+=) into the
 *    parameter gradients L->g[i].
 *  - Parameter i of the layer is L->p[i] (data) / L->g[i] (gradient), in the order of param_specs().
 *  - Errors: return a negative code after hy_fail(); never exit or print. */
#ifndef HY_LAYERS_REGISTRY_H
#define HY_LAYERS_REGISTRY_H
#include "core/rng.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HY_MAX_OPTS 16
#define HY_MAX_NAME 96
#define HY_MAX_BLOCK_PARAMS 256   /* parameter tensors of one block (moe: 1 + 3 * n_experts) */

/* ---- options ---- */
typedef enum { HY_OPT_INT, HY_OPT_FLOAT, HY_OPT_BOOL } hy_opt_type;
enum {
    HY_OPT_NULLABLE = 1,      /* accepts null (YAML ~/null, JSON null) */
    HY_OPT_AUTO = 2,          /* accepts the word auto: the block's resolve() fills the value */
    HY_OPT_DEFAULT_NULL = 4,  /* default is null (implies NULLABLE) */
    HY_OPT_DEFAULT_AUTO = 8,  /* default is auto (implies AUTO) */
};
typedef struct {
    const char *name;
    hy_opt_type type;
    double def, min, max;   /* inclusive range, checked after parsing */
    unsigned flags;
    const char *help;       /* one line for docs and `hybrid-exp blocks` */
} hy_opt_spec;

typedef struct {
    double v[HY_MAX_OPTS];
    bool is_null[HY_MAX_OPTS];
    bool is_auto[HY_MAX_OPTS];   /* false for every option after resolve() */
} hy_opts;

/* ---- parameters ---- */
enum {
    HY_PARAM_NO_DECAY = 1,   /* never weight-decayed (otherwise 2-D+ tensors are decayed) */
    HY_PARAM_SSM_LR = 2,     /* lr = min(lr, ssm_lr), as upstream S4/Mamba do for SSM parameters */
};
typedef struct {
    const char *name;        /* suffix after "layers.{i}.mixer." or "layers.{i}.ffn." (SPEC name) */
    int ndim;
    int shape[4];
    unsigned flags;
} hy_param_spec;

typedef struct hy_block_ops hy_block_ops;

/* Cross-layer context owned by the model and shared by all its layers (one per model). Blocks that
 * need information from other layers (RWKV-7's v_first, MoE's aux loss) keep it here. */
typedef struct hy_shared {
    double aux_loss;          /* sum of MoE aux losses of the last forward */
    int n_aux;                /* number of layers that added to aux_loss */
    float aux_coef;           /* router_aux_coef, for backward */
} hy_shared;

typedef struct hy_layer {
    const hy_block_ops *ops;
    hy_opts opts;             /* resolved */
    int d_model;
    int index;                /* layer number in the stack */
    int n_params;
    float **p, **g;           /* parameter i data / gradient (views into the model's arenas) */
    bool keep_for_backward;   /* forward must save what backward needs */
    hy_shared *shared;
    void *priv;               /* block-owned caches and workspaces; freed by destroy() */
} hy_layer;

enum { HY_KIND_MIXER = 1, HY_KIND_FFN = 2 };

struct hy_block_ops {
    const char *name;
    unsigned kinds;           /* HY_KIND_MIXER and/or HY_KIND_FFN: where it may be placed */
    const char *summary;      /* one line */
    const hy_opt_spec *opts;
    int n_opts;
    /* Fill auto values and check constraints that involve d_model or several options. On error:
     * set *bad_opt to the offending option's index (or -1), write a message naming the key into
     * msg, return negative. */
    int (*resolve)(hy_opts *o, int d_model, int *bad_opt, char *msg, size_t msg_len);
    /* Number of parameter tensors; fills out[] when out != NULL. */
    int (*param_specs)(const hy_opts *o, int d_model, hy_param_spec *out);
    /* Initialise L->p[] (the SPEC's/upstream init). */
    void (*init)(hy_layer *L, hy_rng *rng);
    int (*forward)(hy_layer *L, const float *x, float *y, int B, int T);
    int (*backward)(hy_layer *L, const float *dy, float *dx, int B, int T);
    /* Streaming: a state for B sequences; step consumes one token per sequence (x, y: (B, d)).
     * prefill (optional, NULL = the model loops step) consumes T tokens from the state. */
    int (*state_new)(hy_layer *L, int B, void **state);
    int (*step)(hy_layer *L, void *state, const float *x, float *y, int B);
    int (*prefill)(hy_layer *L, void *state, const float *x, float *y, int B, int T);
    void (*state_free)(hy_layer *L, void *state);
    /* Bytes of streaming state per sequence after T tokens (KV cache, recurrent state). */
    size_t (*state_bytes)(const hy_opts *o, int d_model, int T);
    /* Forward FLOPs for one sequence of T tokens (multiply-add = 2). */
    double (*flop)(const hy_opts *o, int d_model, int T);
    void (*destroy)(hy_layer *L);   /* free L->priv; may be NULL */
};

/* ---- registry ---- */
const hy_block_ops *hy_block_find(const char *name);
int hy_block_count(void);
const hy_block_ops *hy_block_at(int i);
/* "attention, swiglu, ..." of the blocks allowed for `kind` (0 = all), for error messages. */
void hy_block_names(unsigned kind, char *out, size_t out_len);

/* ---- options: one parser shared by YAML configs, --set overrides and checkpoint JSON ---- */
int hy_opt_index(const hy_block_ops *ops, const char *key);          /* -1 if unknown */
void hy_opts_defaults(const hy_block_ops *ops, hy_opts *o);
/* Parse `text` (a YAML/JSON scalar: number, true/false, null/~, auto) into option `idx`.
 * On error writes a message (without the key's location) into msg and returns negative. */
int hy_opt_parse(const hy_block_ops *ops, hy_opts *o, int idx, const char *text, char *msg, size_t msg_len);
/* JSON text of option idx's value ("16", "0.001", "true", "null"). */
void hy_opt_format(const hy_block_ops *ops, const hy_opts *o, int idx, char *out, size_t out_len);
/* Convenience getters for block code. */
static inline int hy_opt_int(const hy_opts *o, int idx) { return (int)o->v[idx]; }
static inline float hy_opt_float(const hy_opts *o, int idx) { return (float)o->v[idx]; }

#endif

#ifndef HY_LAYERS_REGISTRY_STANDALONE
#define HY_LAYERS_REGISTRY_STANDALONE
/* A layer outside any model (tests, benchmarks): owns its parameter and gradient buffers.
 * opts must be resolved already (see hy_block_resolve). Initialised from `seed`. */
int hy_layer_standalone(hy_layer *L, const hy_block_ops *ops, const hy_opts *opts, int d_model, uint64_t seed);
void hy_layer_standalone_free(hy_layer *L);
/* Defaults + the given "key=value" pairs + resolve(); errors name the key. */
int hy_block_opts_from_pairs(const hy_block_ops *ops, int d_model, const char *const *pairs, int n_pairs,
                             hy_opts *out);
#endif

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
#include "core/mem.h"
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

/* ---- cross-layer hooks (docs/architecture.md, "Cross-layer hooks") ----
 * Generic places where a block meets the other layers of its stack. A block declares which it uses
 * in hy_block_ops.flags (and .stats); the model and the trainer never look at a block's name. */
enum {
    /* The layers of this block take a value from the first layer of the same block in the stack
     * (a value residual): each gets L->first, the one hy_first_slot of its block. "First" is by
     * layer index: give such a block one kind (mixer or ffn), or a layer's two would both write. */
    HY_BLOCK_FIRST_VALUE = 1,
    /* The block adds an auxiliary loss in forward (hy_aux_add); the model averages it over the
     * layers that added one and adds router_aux_coef times the mean to the loss. */
    HY_BLOCK_AUX_LOSS = 2,
};

/* The value the first layer of a block (flag HY_BLOCK_FIRST_VALUE) hands to the later layers of
 * the same block. The first layer (hy_first_writes) writes `value` (rows x d_model) in forward,
 * prefill and step, and zeroes `grad` in a forward that keeps activations; later layers read
 * `value` and ADD their gradient into `grad` in backward. Layers run backward in reverse, so the
 * first one sees the full sum, consumes it and zeroes it. The model (or a standalone layer) owns
 * the buffers: hy_shared_free frees them. */
typedef struct hy_first_slot {
    const hy_block_ops *ops;  /* the block whose layers share this slot */
    int layer;                /* index of its first layer in the stack; 0 for a standalone layer */
    hy_buf value, grad;
    size_t rows;              /* rows of value: B·T of the last forward or prefill, B of a step */
} hy_first_slot;

#define HY_MAX_FIRST_SLOTS 8   /* blocks with HY_BLOCK_FIRST_VALUE in one stack */

/* The auxiliary losses of one forward (blocks with HY_BLOCK_AUX_LOSS): summed by hy_aux_add,
 * averaged by hy_aux_mean, their gradient scale given to backward by hy_aux_grad_scale. */
typedef struct hy_aux_loss {
    double sum;               /* sum of the aux losses added since hy_aux_reset */
    int n;                    /* number of layers that added one */
    float coef;               /* the model's router_aux_coef: weight of the mean in the loss */
    double weight;            /* this process's share of a batch split over processes (1 = all of it):
                               * scales the aux losses' gradient (hy_model_set_batch_share) */
} hy_aux_loss;

/* Cross-layer context owned by the model and shared by all its layers (one per model; a
 * standalone layer has its own). Only generic areas: what a block shares goes through a hook. */
typedef struct hy_shared {
    int n_layers;             /* layers in the stack, for depth-dependent inits; 0 = standalone */
    hy_aux_loss aux;
    hy_first_slot first[HY_MAX_FIRST_SLOTS];   /* one per block with HY_BLOCK_FIRST_VALUE */
    int n_first;
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
    hy_first_slot *first;     /* HY_BLOCK_FIRST_VALUE: its block's slot in shared (set by the model); else NULL */
    void *priv;               /* block-owned caches and workspaces; freed by destroy() */
} hy_layer;

enum { HY_KIND_MIXER = 1, HY_KIND_FFN = 2 };

/* A streaming state holds at most this many tokens per sequence: hy_model_step / hy_model_prefill
 * refuse to go further and hy_model_state_load refuses a larger position, so a block's step and
 * prefill may count positions in an int (attention's KV cache doubles up to exactly this). */
#define HY_MAX_POSITION (1 << 30)

/* One tensor of a serialised streaming state (the optional state_* ops of hy_block_ops). A block's
 * state has at most HY_STATE_MAX_TENSORS of them (state files with more are refused). */
#define HY_STATE_NAME 32
#define HY_STATE_MAX_TENSORS 16
typedef struct hy_state_tensor {
    char name[HY_STATE_NAME];
    int ndim;                 /* 0..4 */
    int shape[4];
} hy_state_tensor;
/* Index of the tensor called `name` in t[0..n), or -1: for state_import implementations. */
int hy_state_tensor_find(int n, const hy_state_tensor *t, const char *name);
/* Scalars of a state tensor (product of its shape). */
size_t hy_state_tensor_numel(const hy_state_tensor *t);
/* Matches the tensors t[0..n) given to state_import against the n_want expected ones (names and
 * shapes): every name known, none missing, none twice, shapes equal. Fills idx[k] = index in t of
 * want[k]. On a mismatch: hy_fail naming `block` and the tensor (with the expected shape). */
int hy_state_match(const char *block, int n, const hy_state_tensor *t, int n_want, const hy_state_tensor *want,
                   int *idx);

/* Telemetry of a block (hy_block_ops.stats, optional): a vector of counts the block accumulates
 * over forward() calls (not step or prefill) between two resets. The trainer resets them before
 * each validation, reads them after it, writes one CSV row per count into `file` in the run folder
 * (columns variant,seq_len,step,layer, then `columns`) and prints one line per layer:
 * "[variant] step S  layer L NAME: % of val LABEL: p0 p1 ...  (max/mean r)". */
typedef struct hy_block_stats {
    const char *file;         /* CSV file name, e.g. "counts.csv"; layers of one file share `columns` */
    const char *columns;      /* the two CSV columns after `layer`: "ITEM,COUNT" (item index, count) */
    const char *label;        /* what the printed shares are, e.g. "token slots per item" */
    void (*reset)(hy_layer *L);
    /* Writes min(n, max) counts into out (out may be NULL when max is 0); returns n. */
    int (*get)(const hy_layer *L, int64_t *out, int max);
} hy_block_stats;

/* Bytes a block allocates to train on B sequences of T tokens with `threads` OpenMP threads, its
 * parameters and their gradients excluded (the model counts those): for the trainer's memory
 * estimate before a run (hy_model_train_memory), checked against the bytes the block really
 * allocates (hy_mem_current, hy_mem_peak) by tests/test_memory.c. Where the size depends on the
 * data (moe's routing), an upper bound. `first`: the layer writes its block's first-value slot
 * (hy_first_writes; HY_BLOCK_FIRST_VALUE blocks), whose buffers (value and gradient, rows x
 * d_model each) the model counts. */
typedef struct hy_train_bytes {
    double kept;      /* held from a training forward through its backward and still allocated afterwards
                         (L->priv's caches and workspaces: one set per layer) */
    double scratch;   /* allocated and freed inside one forward or backward call: the larger of the two */
} hy_train_bytes;

struct hy_block_ops {
    const char *name;
    unsigned kinds;           /* HY_KIND_MIXER and/or HY_KIND_FFN: where it may be placed */
    const char *summary;      /* one line */
    unsigned flags;           /* cross-layer hooks it uses: HY_BLOCK_FIRST_VALUE, HY_BLOCK_AUX_LOSS */
    const hy_block_stats *stats;   /* telemetry for the trainer's logs; NULL = none */
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
    /* (prefill must match T calls of step exactly, and leave L->shared as forward would: the model
     *  runs the blocks one after the other over a chunk. If any block of a stack lacks prefill,
     *  hy_model_prefill steps the whole stack token by token.) */
    int (*state_new)(hy_layer *L, int B, void **state);
    int (*step)(hy_layer *L, void *state, const float *x, float *y, int B);
    int (*prefill)(hy_layer *L, void *state, const float *x, float *y, int B, int T);
    void (*state_free)(hy_layer *L, void *state);
    /* Bytes of streaming state per sequence after T tokens (KV cache, recurrent state). For a
     * block with the state ops below: exactly the bytes of the tensors state_tensors lists for one
     * sequence after T tokens (hy_model_state_load checks a file's sizes against it before it
     * allocates anything). */
    size_t (*state_bytes)(const hy_opts *o, int d_model, int T);
    /* Forward FLOPs for one sequence of T tokens (multiply-add = 2). */
    double (*flop)(const hy_opts *o, int d_model, int T);
    /* Memory of a training step on (B, T) with `threads` threads (hy_train_bytes, above). */
    hy_train_bytes (*train_bytes)(const hy_opts *o, int d_model, int B, int T, int threads, bool first);
    void (*destroy)(hy_layer *L);   /* free L->priv; may be NULL */
    /* ---- optional: saving and restoring a streaming state (hy_model_state_save/load) ----
     * A state is serialised as a list of named F32 tensors (hy_state_tensor, above). All three
     * are NULL = this block's state cannot be saved (saving a model state that holds one fails
     * with an error naming the block), or all three are set. A block whose state_new() sets
     * *state = NULL is stateless and is saved as no tensors without needing them.
     *
     * state_tensors: the number of tensors `state` consists of NOW (shapes may depend on how many
     *   tokens it has consumed, e.g. a KV cache); fills out[0..n) when out != NULL. Names are short
     *   ("k", "conv", "ssm"), unique within the block, at most HY_STATE_NAME-1 characters; the
     *   file stores them as "layers.{i}.mixer.<name>" / "layers.{i}.ffn.<name>". Shapes are row-
     *   major with the batch first, e.g. (B, pos, Hkv*hd); a dimension may be 0.
     * state_export: copies tensor i (as listed by state_tensors on the same state) into dst,
     *   numel(shape) floats, row-major. Must not change the state.
     * state_import: `state` is fresh from state_new(L, B) with the B of the saved state; t[0..n)
     *   and data[0..n) are every tensor the file holds for this block (names without the prefix,
     *   in any order; data is aligned, numel floats each). Restores the state so that continuing
     *   from it gives exactly the outputs the saved state would give. Checks names, count and
     *   shapes (against the options and B) and fails with hy_fail naming the tensor on any
     *   mismatch; never trusts a shape it did not check.
     * (`bench decode --fill tile` builds long-context states by repeating a "position axis": an
     *  axis that is 0 in a fresh state and p after p tokens, like attention's k/v; a state with a
     *  shape that changes any other way is prefilled instead.) */
    int (*state_tensors)(hy_layer *L, const void *state, hy_state_tensor *out);
    int (*state_export)(hy_layer *L, const void *state, int i, float *dst);
    int (*state_import)(hy_layer *L, void *state, int n, const hy_state_tensor *t, const float *const *data);
};

/* ---- init ---- */
/* The one init of every block's plain linear layers (docs/blocks.md, "Initialization"): weight w
 * (out, in), then bias b (out entries; NULL = none), each entry ~ U(±1/sqrt(in)), PyTorch's
 * nn.Linear default. A block's other parameters keep the init its upstream defines. */
void hy_init_linear(float *w, float *b, int out, int in, hy_rng *rng);

/* The depth of the stack layer L belongs to: the model's n_layers, or index + 1 for a lone layer. */
int hy_stack_depth(const hy_layer *L);

/* The scale of a block's output projection (the linear that writes into the residual stream):
 * 1/(2·hy_stack_depth(L)). */
float hy_output_init_scale(const hy_layer *L);

/* A block's output projection: hy_init_linear, then weight and bias × hy_output_init_scale(L), so
 * each residual branch starts small next to the embedding (docs/blocks.md, "Initialization"). */
void hy_init_output_linear(const hy_layer *L, float *w, float *b, int out, int in, hy_rng *rng);

/* ---- cross-layer hooks: the generic code behind hy_shared ---- */
/* Points L->first at the slot of L's block in sh, creating it with L as the block's first layer
 * (the model calls it for its layers in stack order). Fails when sh has no free slot. */
int hy_shared_claim_first(hy_shared *sh, hy_layer *L);
/* Frees the buffers of every slot (the model's and standalone layers' teardown). */
void hy_shared_free(hy_shared *sh);
/* Whether L writes its block's slot (it is the first layer of its block, or has no slot) rather
 * than reading it: the one test a HY_BLOCK_FIRST_VALUE block needs. */
static inline bool hy_first_writes(const hy_layer *L) { return !L->first || L->index <= L->first->layer; }
/* Starts a forward: no aux loss added yet. */
void hy_aux_reset(hy_shared *sh);
/* Adds layer L's aux loss of this forward (forward only: streaming is no part of any loss). */
void hy_aux_add(hy_layer *L, double loss);
/* The mean aux loss over the layers that added one (0 when none), as the model reports it. */
float hy_aux_mean(const hy_shared *sh);
/* d(model loss)/d(one layer's aux loss) = coef / (layers that added one), for backward. */
double hy_aux_grad_scale(const hy_layer *L);

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

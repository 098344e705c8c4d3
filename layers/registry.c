/* The table of registered blocks, and the option parsing shared by every config source. */
#include "layers/registry.h"
#include "core/error.h"
#include "core/mem.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const hy_block_ops hy_block_attention;
extern const hy_block_ops hy_block_swiglu;
extern const hy_block_ops hy_block_mamba;
extern const hy_block_ops hy_block_mamba2;
extern const hy_block_ops hy_block_s4d;
extern const hy_block_ops hy_block_hyena;
extern const hy_block_ops hy_block_rwkv7;
extern const hy_block_ops hy_block_cmix;
extern const hy_block_ops hy_block_moe;

/* One line per block. */
static const hy_block_ops *const blocks[] = {
    /* mixers */
    &hy_block_attention,
    &hy_block_mamba,
    &hy_block_mamba2,
    &hy_block_s4d,
    &hy_block_hyena,
    &hy_block_rwkv7,
    /* feed-forward blocks */
    &hy_block_swiglu,
    &hy_block_cmix,
    &hy_block_moe,
};

int hy_block_count(void) { return (int)(sizeof blocks / sizeof *blocks); }
const hy_block_ops *hy_block_at(int i) { return i >= 0 && i < hy_block_count() ? blocks[i] : NULL; }

const hy_block_ops *hy_block_find(const char *name) {
    for (int i = 0; i < hy_block_count(); i++)
        if (strcmp(blocks[i]->name, name) == 0) return blocks[i];
    return NULL;
}

int hy_state_tensor_find(int n, const hy_state_tensor *t, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0) return i;
    return -1;
}

size_t hy_state_tensor_numel(const hy_state_tensor *t) {
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    return n;
}

/* "(2, 16, 8, 2)" into buf. */
static const char *shape_str(const hy_state_tensor *t, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int d = 0; d < t->ndim && k < n; d++) k += (size_t)snprintf(buf + k, n - k, d ? ", %d" : "%d", t->shape[d]);
    if (k < n) snprintf(buf + k, n - k, t->ndim == 1 ? ",)" : ")");
    return buf;
}

int hy_state_match(const char *block, int n, const hy_state_tensor *t, int n_want, const hy_state_tensor *want,
                   int *idx) {
    char a[96], b[96];
    for (int i = 0; i < n; i++) {
        if (hy_state_tensor_find(n_want, want, t[i].name) < 0) {
            size_t k = 0;
            for (int w = 0; w < n_want && k < sizeof b; w++)
                k += (size_t)snprintf(b + k, sizeof b - k, w ? ", '%s'" : "'%s'", want[w].name);
            return hy_fail("%s: unexpected state tensor '%s' (the state is %s)", block, t[i].name, b);
        }
        if (hy_state_tensor_find(i, t, t[i].name) >= 0)
            return hy_fail("%s: state tensor '%s' is given twice", block, t[i].name);
    }
    for (int k = 0; k < n_want; k++)
        if ((idx[k] = hy_state_tensor_find(n, t, want[k].name)) < 0)
            return hy_fail("%s: state tensor '%s' is missing", block, want[k].name);
    if (n != n_want) return hy_fail("%s: the state has %d tensors, expected %d", block, n, n_want);
    for (int k = 0; k < n_want; k++) {
        const hy_state_tensor *x = &t[idx[k]], *w = &want[k];
        bool same = x->ndim == w->ndim;
        for (int d = 0; same && d < w->ndim; d++) same = x->shape[d] == w->shape[d];
        if (!same)
            return hy_fail("%s: state tensor '%s' has shape %s, expected %s", block, w->name, shape_str(x, a, sizeof a),
                           shape_str(w, b, sizeof b));
    }
    return 0;
}

void hy_block_names(unsigned kind, char *out, size_t out_len) {
    size_t used = 0;
    out[0] = 0;
    for (int i = 0; i < hy_block_count(); i++) {
        if (kind && !(blocks[i]->kinds & kind)) continue;
        int n = snprintf(out + used, out_len - used, "%s%s", used ? ", " : "", blocks[i]->name);
        if (n < 0 || (size_t)n >= out_len - used) break;
        used += (size_t)n;
    }
}

int hy_opt_index(const hy_block_ops *ops, const char *key) {
    for (int i = 0; i < ops->n_opts; i++)
        if (strcmp(ops->opts[i].name, key) == 0) return i;
    return -1;
}

void hy_opts_defaults(const hy_block_ops *ops, hy_opts *o) {
    memset(o, 0, sizeof *o);
    for (int i = 0; i < ops->n_opts; i++) {
        o->v[i] = ops->opts[i].def;
        o->is_null[i] = (ops->opts[i].flags & HY_OPT_DEFAULT_NULL) != 0;
        o->is_auto[i] = (ops->opts[i].flags & HY_OPT_DEFAULT_AUTO) != 0;
    }
}

static const char *type_name(hy_opt_type t) {
    return t == HY_OPT_INT ? "an integer" : t == HY_OPT_FLOAT ? "a number" : "true or false";
}

int hy_opt_parse(const hy_block_ops *ops, hy_opts *o, int idx, const char *text, char *msg, size_t msg_len) {
    const hy_opt_spec *s = &ops->opts[idx];
    unsigned f = s->flags;
    bool nullable = f & (HY_OPT_NULLABLE | HY_OPT_DEFAULT_NULL), autook = f & (HY_OPT_AUTO | HY_OPT_DEFAULT_AUTO);
    if (!strcmp(text, "null") || !strcmp(text, "~") || !strcmp(text, "")) {
        if (!nullable) {
            snprintf(msg, msg_len, "%s may not be null (expected %s)", s->name, type_name(s->type));
            return -1;
        }
        o->is_null[idx] = true;
        o->is_auto[idx] = false;
        return 0;
    }
    if (!strcmp(text, "auto")) {
        if (!autook) {
            snprintf(msg, msg_len, "%s does not accept auto (expected %s)", s->name, type_name(s->type));
            return -1;
        }
        o->is_auto[idx] = true;
        o->is_null[idx] = false;
        return 0;
    }
    double v;
    if (s->type == HY_OPT_BOOL) {
        if (!strcmp(text, "true")) v = 1;
        else if (!strcmp(text, "false")) v = 0;
        else {
            snprintf(msg, msg_len, "%s must be true or false, got '%s'", s->name, text);
            return -1;
        }
    } else {
        char *end;
        errno = 0;
        v = strtod(text, &end);
        if (end == text || *end || errno || !isfinite(v)) {
            snprintf(msg, msg_len, "%s must be %s, got '%s'", s->name, type_name(s->type), text);
            return -1;
        }
        if (s->type == HY_OPT_INT && v != floor(v)) {
            snprintf(msg, msg_len, "%s must be an integer, got '%s'", s->name, text);
            return -1;
        }
        if (v < s->min || v > s->max) {
            snprintf(msg, msg_len, "%s = %s is out of range [%g, %g]", s->name, text, s->min, s->max);
            return -1;
        }
    }
    o->v[idx] = v;
    o->is_null[idx] = o->is_auto[idx] = false;
    return 0;
}

void hy_opt_format(const hy_block_ops *ops, const hy_opts *o, int idx, char *out, size_t out_len) {
    const hy_opt_spec *s = &ops->opts[idx];
    if (o->is_null[idx]) snprintf(out, out_len, "null");
    else if (o->is_auto[idx]) snprintf(out, out_len, "\"auto\"");
    else if (s->type == HY_OPT_BOOL) snprintf(out, out_len, "%s", o->v[idx] != 0 ? "true" : "false");
    else if (s->type == HY_OPT_INT) snprintf(out, out_len, "%lld", (long long)o->v[idx]);
    else snprintf(out, out_len, "%.9g", o->v[idx]);
}

int hy_block_opts_from_pairs(const hy_block_ops *ops, int d_model, const char *const *pairs, int n_pairs,
                             hy_opts *out) {
    char msg[512];
    hy_opts_defaults(ops, out);
    for (int i = 0; i < n_pairs; i++) {
        char key[64];
        const char *eq = strchr(pairs[i], '=');
        if (!eq || (size_t)(eq - pairs[i]) >= sizeof key) return hy_fail("%s: bad option '%s'", ops->name, pairs[i]);
        memcpy(key, pairs[i], (size_t)(eq - pairs[i]));
        key[eq - pairs[i]] = 0;
        int idx = hy_opt_index(ops, key);
        if (idx < 0) return hy_fail("%s: unknown option '%s'", ops->name, key);
        if (hy_opt_parse(ops, out, idx, eq + 1, msg, sizeof msg) < 0) return hy_fail("%s: %s", ops->name, msg);
    }
    int bad = -1;
    if (ops->resolve && ops->resolve(out, d_model, &bad, msg, sizeof msg) < 0) return hy_fail("%s: %s", ops->name, msg);
    return 0;
}

int hy_layer_standalone(hy_layer *L, const hy_block_ops *ops, const hy_opts *opts, int d_model, uint64_t seed) {
    memset(L, 0, sizeof *L);
    L->ops = ops;
    L->opts = *opts;
    L->d_model = d_model;
    L->keep_for_backward = true;
    L->shared = hy_calloc(sizeof(hy_shared));
    int rc = L->shared && (ops->flags & HY_BLOCK_FIRST_VALUE) ? hy_shared_claim_first(L->shared, L) : 0;
    if (rc < 0) return rc;
    int n = ops->param_specs(opts, d_model, NULL);
    hy_param_spec specs[HY_MAX_BLOCK_PARAMS];
    if (n > HY_MAX_BLOCK_PARAMS) return hy_fail("%s: too many parameter tensors (%d)", ops->name, n);
    ops->param_specs(opts, d_model, specs);
    L->n_params = n;
    L->p = hy_calloc(sizeof(float *) * (size_t)(n + 1));
    L->g = hy_calloc(sizeof(float *) * (size_t)(n + 1));
    if (!L->shared || !L->p || !L->g) return HY_ERR_NOMEM;
    for (int i = 0; i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < specs[i].ndim; d++) numel *= (size_t)specs[i].shape[d];
        L->p[i] = hy_calloc(numel * sizeof(float));
        L->g[i] = hy_calloc(numel * sizeof(float));
        if (!L->p[i] || !L->g[i]) return HY_ERR_NOMEM;
    }
    hy_rng rng;
    hy_rng_seed(&rng, seed);
    ops->init(L, &rng);
    return 0;
}

void hy_layer_standalone_free(hy_layer *L) {
    if (L->ops && L->ops->destroy) L->ops->destroy(L);
    for (int i = 0; L->p && i < L->n_params; i++) {
        hy_free(L->p[i]);
        hy_free(L->g[i]);
    }
    hy_free(L->p);
    hy_free(L->g);
    if (L->shared) hy_shared_free(L->shared);
    hy_free(L->shared);
    memset(L, 0, sizeof *L);
}

/* The slot of L's block, found by its ops; a new one records L's index as the block's first layer. */
int hy_shared_claim_first(hy_shared *sh, hy_layer *L) {
    for (int i = 0; i < sh->n_first; i++)
        if (sh->first[i].ops == L->ops) {
            L->first = &sh->first[i];
            return 0;
        }
    if (sh->n_first == HY_MAX_FIRST_SLOTS)
        return hy_fail("layer %d %s: more than %d blocks take a value from their first layer", L->index, L->ops->name,
                       HY_MAX_FIRST_SLOTS);
    hy_first_slot *f = &sh->first[sh->n_first++];
    *f = (hy_first_slot){.ops = L->ops, .layer = L->index};
    L->first = f;
    return 0;
}

/* The slots' buffers belong to the context, not to a layer: freed once, whatever the order of the
 * layers' destroy calls. */
void hy_shared_free(hy_shared *sh) {
    for (int i = 0; i < sh->n_first; i++) {
        hy_buf_free(&sh->first[i].value), hy_buf_free(&sh->first[i].grad);
        sh->first[i].rows = 0;
    }
}

/* Zeroes the sum and the count before the layers of a forward add their aux losses. */
void hy_aux_reset(hy_shared *sh) { sh->aux.sum = 0, sh->aux.n = 0; }

/* One layer's aux loss into the sum, counted once. */
void hy_aux_add(hy_layer *L, double loss) {
    L->shared->aux.sum += loss;
    L->shared->aux.n++;
}

/* sum / n in double, then rounded to float once. */
float hy_aux_mean(const hy_shared *sh) { return sh->aux.n ? (float)(sh->aux.sum / sh->aux.n) : 0.0f; }

/* The loss holds coef · sum / n, so each layer's aux loss has weight coef / n (n = 1 before any),
 * times the process's share of the batch when one batch is split over processes. A standalone
 * layer (weight never set, 0) holds the whole batch. */
double hy_aux_grad_scale(const hy_layer *L) {
    const hy_aux_loss *a = &L->shared->aux;
    return (double)a->coef * (a->weight > 0 ? a->weight : 1.0) / (a->n > 0 ? a->n : 1);
}

/* U(±1/sqrt(in)) for the weight, then the bias, in that order of draws. */
void hy_init_linear(float *w, float *b, int out, int in, hy_rng *rng) {
    float bound = 1.0f / sqrtf((float)in);
    hy_rng_fill_uniform(rng, w, (size_t)out * (size_t)in, bound);
    if (b) hy_rng_fill_uniform(rng, b, (size_t)out, bound);
}

/* n_layers from the model's shared context, or the layer's own depth (index + 1) when it stands
 * alone: what depth-dependent inits scale by. */
int hy_stack_depth(const hy_layer *L) {
    return L->shared && L->shared->n_layers > L->index ? L->shared->n_layers : L->index + 1;
}

/* 1/(2·n_layers): two residual branches per layer (mixer and ffn). */
float hy_output_init_scale(const hy_layer *L) { return 1.0f / (2.0f * (float)hy_stack_depth(L)); }

/* The plain-linear draws, then scaled, so the random stream is the same as hy_init_linear's. */
void hy_init_output_linear(const hy_layer *L, float *w, float *b, int out, int in, hy_rng *rng) {
    hy_init_linear(w, b, out, in, rng);
    float s = hy_output_init_scale(L);
    for (size_t i = 0; i < (size_t)out * (size_t)in; i++) w[i] *= s;
    if (b)
        for (int i = 0; i < out; i++) b[i] *= s;
}

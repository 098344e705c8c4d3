/* The stack (SPEC §1): builds parameters with SPEC names, runs forward/backward over any (B, T),
 * and streams one token at a time through every block's step(). */
#include "models/model.h"
#include "core/error.h"
#include "core/gemm.h"
#include "models/ops.h"
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

/* Sub-block s = 2*i (mixer of layer i) or 2*i+1 (ffn of layer i); the residual stream before
 * sub-block s is slot s of m->h, the final stream is slot 2*n_layers. */
static hy_layer *sub_block(hy_model *m, int s) { return s % 2 ? &m->ffns[s / 2] : &m->mixers[s / 2]; }
static float *sub_norm(hy_model *m, int s) { return s % 2 ? m->ffn_norm[s / 2]->data : m->norm[s / 2]->data; }
static float *sub_norm_grad(hy_model *m, int s) { return s % 2 ? m->ffn_norm[s / 2]->grad : m->norm[s / 2]->grad; }

static hy_param *add_param(hy_model *m, const char *name, int ndim, const int *shape, unsigned flags) {
    hy_param *p = &m->params[m->n_params++];
    size_t len = strlen(name);
    memcpy(p->name, name, len < HY_MAX_NAME ? len + 1 : HY_MAX_NAME);
    p->name[HY_MAX_NAME - 1] = 0;
    p->ndim = ndim;
    p->numel = 1;
    for (int d = 0; d < ndim; d++) p->shape[d] = shape[d], p->numel *= (size_t)shape[d];
    p->flags = flags;
    p->data = (float *)(uintptr_t)m->numel;   /* offset for now; pointers fixed after allocation */
    m->numel += (p->numel + 15) & ~(size_t)15; /* keep every tensor 64-byte aligned */
    return p;
}

/* Declares every parameter in SPEC order, then allocates both arenas and points the views. */
static int build_params(hy_model *m) {
    const hy_model_config *c = &m->cfg;
    int d = c->d_model, max_params = 4;
    for (int i = 0; i < c->n_layers; i++) {
        max_params += 2 + c->layers[i].mixer.ops->param_specs(&c->layers[i].mixer.opts, d, NULL);
        if (c->layers[i].ffn.ops) max_params += c->layers[i].ffn.ops->param_specs(&c->layers[i].ffn.opts, d, NULL);
    }
    m->params = hy_calloc(sizeof(hy_param) * (size_t)max_params);
    m->norm = hy_calloc(sizeof(hy_param *) * (size_t)c->n_layers);
    m->ffn_norm = hy_calloc(sizeof(hy_param *) * (size_t)c->n_layers);
    m->mixers = hy_calloc(sizeof(hy_layer) * (size_t)c->n_layers);
    m->ffns = hy_calloc(sizeof(hy_layer) * (size_t)c->n_layers);
    if (!m->params || !m->norm || !m->ffn_norm || !m->mixers || !m->ffns) return HY_ERR_NOMEM;
    int vd[2] = {c->vocab_size, d}, dd[1] = {d};
    char name[HY_MAX_NAME * 2];
    int first_of[2 * 1024 + 1];   /* index of each sub-block's first parameter */
    m->embedding = add_param(m, "embedding.weight", 2, vd, 0);
    for (int i = 0; i < c->n_layers; i++) {
        for (int part = 0; part < 2; part++) {
            const hy_block_cfg *b = part ? &c->layers[i].ffn : &c->layers[i].mixer;
            hy_layer *L = part ? &m->ffns[i] : &m->mixers[i];
            if (!b->ops) continue;
            snprintf(name, sizeof name, "layers.%d.%s.weight", i, part ? "ffn_norm" : "norm");
            hy_param *np = add_param(m, name, 1, dd, HY_PARAM_NO_DECAY);
            if (part) m->ffn_norm[i] = np;
            else m->norm[i] = np;
            hy_param_spec specs[HY_MAX_BLOCK_PARAMS];
            if (b->ops->param_specs(&b->opts, d, NULL) > HY_MAX_BLOCK_PARAMS)
                return hy_fail("layer %d: %s has more than %d parameter tensors", i, b->ops->name, HY_MAX_BLOCK_PARAMS);
            int n = b->ops->param_specs(&b->opts, d, specs);
            first_of[2 * i + part] = m->n_params;
            for (int k = 0; k < n; k++) {
                snprintf(name, sizeof name, "layers.%d.%s.%s", i, part ? "ffn" : "mixer", specs[k].name);
                if (strlen(name) >= HY_MAX_NAME) return hy_fail("parameter name too long: %s", name);
                add_param(m, name, specs[k].ndim, specs[k].shape, specs[k].flags);
            }
            *L = (hy_layer){.ops = b->ops, .opts = b->opts, .d_model = d, .index = i, .n_params = n,
                            .shared = &m->shared};
            L->p = hy_calloc(sizeof(float *) * (size_t)(n + 1));
            L->g = hy_calloc(sizeof(float *) * (size_t)(n + 1));
            if (!L->p || !L->g) return HY_ERR_NOMEM;
        }
    }
    m->norm_f = add_param(m, "norm_f.weight", 1, dd, HY_PARAM_NO_DECAY);
    if (!c->tie_embeddings) m->lm_head = add_param(m, "lm_head.weight", 2, vd, 0);
    m->data = hy_calloc(m->numel * sizeof(float));
    m->grad = hy_calloc(m->numel * sizeof(float));
    if (!m->data || !m->grad) return HY_ERR_NOMEM;
    for (int k = 0; k < m->n_params; k++) {
        size_t off = (size_t)(uintptr_t)m->params[k].data;
        m->params[k].data = m->data + off;
        m->params[k].grad = m->grad + off;
    }
    for (int s = 0; s < 2 * c->n_layers; s++) {
        hy_layer *L = sub_block(m, s);
        for (int k = 0; L->ops && k < L->n_params; k++) {
            L->p[k] = m->params[first_of[s] + k].data;
            L->g[k] = m->params[first_of[s] + k].grad;
        }
    }
    return 0;
}

/* Embedding and head ~ N(0, 0.02), norms = 1; each block's init draws from its own stream
 * (seed, layer, part) so changing one layer leaves the others' initial weights unchanged. */
static void init_params(hy_model *m, uint64_t seed) {
    hy_rng rng;
    hy_rng_seed(&rng, seed);
    hy_rng_fill_normal(&rng, m->embedding->data, m->embedding->numel, 0.02f);
    if (m->lm_head) hy_rng_fill_normal(&rng, m->lm_head->data, m->lm_head->numel, 0.02f);
    for (int k = 0; k < m->n_params; k++)
        if (m->params[k].ndim == 1 && strstr(m->params[k].name, "norm"))
            for (size_t j = 0; j < m->params[k].numel; j++) m->params[k].data[j] = 1.0f;
    for (int s = 0; s < 2 * m->cfg.n_layers; s++) {
        hy_layer *L = sub_block(m, s);
        if (!L->ops) continue;
        hy_rng_seed(&rng, seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(s + 1)));
        L->ops->init(L, &rng);
    }
}

/* Every layer of a block that takes a value from its first layer (HY_BLOCK_FIRST_VALUE) gets its
 * block's slot in m->shared; claimed in stack order, so the lowest layer of the block writes it. */
static int claim_first_slots(hy_model *m) {
    for (int s = 0; s < 2 * m->cfg.n_layers; s++) {
        hy_layer *L = sub_block(m, s);
        if (!L->ops || !(L->ops->flags & HY_BLOCK_FIRST_VALUE)) continue;
        int rc = hy_shared_claim_first(&m->shared, L);
        if (rc < 0) return rc;
    }
    return 0;
}

int hy_model_create(const hy_model_config *cfg, uint64_t seed, hy_model **out) {
    *out = NULL;
    if (cfg->n_layers > 1024) return hy_fail("n_layers = %d is more than 1024", cfg->n_layers);
    hy_model *m = hy_calloc(sizeof *m);
    if (!m) return HY_ERR_NOMEM;
    int rc = hy_model_config_copy(&m->cfg, cfg);
    if (rc == 0) rc = hy_model_config_resolve(&m->cfg);
    if (rc == 0) rc = build_params(m);
    if (rc < 0) {
        hy_model_free(m);
        return rc;
    }
    m->shared.aux.coef = m->cfg.router_aux_coef;
    m->shared.aux.weight = 1.0;
    m->shared.n_layers = m->cfg.n_layers;
    if ((rc = claim_first_slots(m)) < 0) {
        hy_model_free(m);
        return rc;
    }
    init_params(m, seed);
    *out = m;
    return 0;
}

void hy_model_free(hy_model *m) {
    if (!m) return;
    for (int i = 0; m->mixers && m->ffns && i < m->cfg.n_layers; i++) {
        for (int part = 0; part < 2; part++) {
            hy_layer *L = part ? &m->ffns[i] : &m->mixers[i];
            if (L->ops && L->ops->destroy) L->ops->destroy(L);
            hy_free(L->p);
            hy_free(L->g);
        }
    }
    hy_shared_free(&m->shared);
    if (m->data_bf16) hy_gemm_bf16_shadow(m->data, 0, NULL);
    if (m->normed_shadow) hy_gemm_bf16_shadow(m->normed_shadow, 0, NULL);
    hy_free(m->data_bf16), hy_free(m->normed_bf16);
    hy_free(m->mixers), hy_free(m->ffns), hy_free(m->norm), hy_free(m->ffn_norm);
    hy_free(m->params), hy_free(m->data), hy_free(m->grad);
    hy_free(m->tokens), hy_free(m->targets);
    hy_buf_free(&m->h), hy_buf_free(&m->normed), hy_buf_free(&m->rstd);
    hy_buf_free(&m->logits), hy_buf_free(&m->work), hy_buf_free(&m->dwork), hy_buf_free(&m->dh);
    hy_model_config_free(&m->cfg);
    hy_free(m);
}

const hy_model_config *hy_model_get_config(const hy_model *m) { return &m->cfg; }
const float *hy_model_logits(const hy_model *m) { return m->logits.p; }

hy_param *hy_model_param(hy_model *m, const char *name) {
    for (int k = 0; k < m->n_params; k++)
        if (strcmp(m->params[k].name, name) == 0) return &m->params[k];
    return NULL;
}

size_t hy_model_param_count(const hy_model *m) {
    size_t n = 0;
    for (int k = 0; k < m->n_params; k++) n += m->params[k].numel;
    return n;
}

void hy_model_set_grad_ready(hy_model *m, hy_grad_ready_fn fn, void *ctx) {
    m->grad_ready = fn, m->grad_ready_ctx = ctx;
}

void hy_model_set_batch_share(hy_model *m, long batch_targets, double aux_weight) {
    m->batch_targets = batch_targets > 0 ? batch_targets : 0;
    m->shared.aux.weight = batch_targets > 0 ? aux_weight : 1.0;
}

/* Arena offset of parameter k's first element. */
static size_t param_offset(const hy_model *m, int k) { return (size_t)(m->params[k].grad - m->grad); }

/* Tells the gradients-ready hook that [lo, hi) is final (nothing when no hook or an empty range). */
static void grads_ready(hy_model *m, size_t lo, size_t hi) {
    if (m->grad_ready && hi > lo) m->grad_ready(m->grad_ready_ctx, lo, hi - lo);
}

/* Arena offset where sub-block s's tensors (its norm, then its block's parameters) begin; they
 * end where the next present sub-block's (or norm_f's) begin. */
static size_t sub_block_offset(hy_model *m, int s) {
    return (size_t)((s % 2 ? m->ffn_norm[s / 2] : m->norm[s / 2])->grad - m->grad);
}

/* FNV-1a over the parameters' 32-bit words, arena order: what ties a streaming state or a training
 * state to the weights that made it (the config alone cannot tell two checkpoints apart). */
void hy_model_weights_fingerprint(const hy_model *m, char *out, size_t n) {
    const uint32_t *w = (const uint32_t *)(const void *)m->data;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < m->numel; i++) h = (h ^ w[i]) * 0x100000001b3ull;
    snprintf(out, n, "%016llx", (unsigned long long)h);
}

/* One memset per thread over its part of the arena (a serial memset of a few MB was a serial
 * stretch of every 2-thread training step). */
void hy_model_zero_grad(hy_model *m) {
    size_t n = m->numel;
    float *g = m->grad;
    #pragma omp parallel if (n > 65536)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        size_t a = n * t / nt, b = n * (t + 1) / nt;
        memset(g + a, 0, (b - a) * sizeof(float));
    }
}

static const float *head_weight(const hy_model *m) { return m->lm_head ? m->lm_head->data : m->embedding->data; }
static float *head_grad(const hy_model *m) { return m->lm_head ? m->lm_head->grad : m->embedding->grad; }

int hy_model_bf16_refresh(hy_model *m) {
    if (hy_gemm_get_precision() != HY_PREC_BF16) return 0;
    if (!m->data_bf16 && !(m->data_bf16 = hy_malloc(m->numel * sizeof(hy_bf16)))) return HY_ERR_NOMEM;
    hy_bf16_from_f32_2d(m->data_bf16, m->numel, m->data, m->numel, 1, m->numel);
    m->bf16_valid = true;
    return hy_gemm_bf16_shadow(m->data, m->numel, m->data_bf16);
}

void hy_model_params_changed(hy_model *m) { m->bf16_valid = false; }

/* After normed is reserved for a forward: under bf16 the norms' bf16 copy, as large as normed, is
 * registered for normed's current address and *nh set to it; under f32 (*nh NULL) no copy is
 * registered, as none is written. A registration of an earlier address is always removed first:
 * normed may have moved, and memory once freed must never be read through a stale copy. */
static int normed_copy(hy_model *m, hy_bf16 **nh) {
    *nh = NULL;
    const bool bf16 = hy_gemm_get_precision() == HY_PREC_BF16;
    if (m->normed_shadow && (!bf16 || m->normed_shadow != m->normed.p || m->normed_bf16_cap < m->normed.cap)) {
        hy_gemm_bf16_shadow(m->normed_shadow, 0, NULL);
        m->normed_shadow = NULL;
    }
    if (!bf16) return 0;
    if (m->normed_bf16_cap < m->normed.cap) {
        hy_free(m->normed_bf16);
        m->normed_bf16_cap = 0;
        if (!(m->normed_bf16 = hy_malloc(m->normed.cap * sizeof(hy_bf16)))) return HY_ERR_NOMEM;
        m->normed_bf16_cap = m->normed.cap;
    }
    if (!m->normed_shadow) {
        int rc = hy_gemm_bf16_shadow(m->normed.p, m->normed.cap, m->normed_bf16);
        if (rc < 0) return rc;
        m->normed_shadow = m->normed.p;
    }
    *nh = m->normed_bf16;
    return 0;
}

int hy_model_forward(hy_model *m, const int32_t *inputs, const int32_t *targets, int B, int T, bool keep,
                     hy_loss *loss) {
    const int d = m->cfg.d_model, V = m->cfg.vocab_size, S = 2 * m->cfg.n_layers;
    if (B < 1 || T < 1) return hy_fail("forward: batch %d and length %d must be >= 1", B, T);
    size_t rows = (size_t)B * T, n = rows * d;
    for (size_t r = 0; r < rows; r++) {
        if (inputs[r] < 0 || inputs[r] >= V)
            return hy_fail("forward: token %d at position %zu is outside the vocabulary [0, %d)", inputs[r], r, V);
        if (targets && targets[r] >= V)
            return hy_fail("forward: target %d at position %zu is outside the vocabulary [0, %d)", targets[r], r, V);
    }
    int slots = keep ? S + 1 : 1;
    if (!hy_buf_reserve(&m->h, n * slots) || !hy_buf_reserve(&m->normed, n * slots) ||
        !hy_buf_reserve(&m->rstd, rows * slots) || !hy_buf_reserve(&m->work, n) ||
        !hy_buf_reserve(&m->logits, rows * V))
        return HY_ERR_NOMEM;
    hy_free(m->tokens), hy_free(m->targets);
    m->tokens = hy_malloc(rows * sizeof(int32_t));
    m->targets = targets ? hy_malloc(rows * sizeof(int32_t)) : NULL;
    if (!m->tokens || (targets && !m->targets)) return HY_ERR_NOMEM;
    memcpy(m->tokens, inputs, rows * sizeof(int32_t));
    if (targets) memcpy(m->targets, targets, rows * sizeof(int32_t));
    m->B = B, m->T = T;
    hy_aux_reset(&m->shared);
    int brc = hy_model_bf16_refresh(m);
    hy_bf16 *nh = NULL;   /* under bf16: the norms' outputs also in bf16 (normed_copy) */
    if (brc == 0) brc = normed_copy(m, &nh);
    if (brc < 0) return brc;

    hy_embedding_forward(m->h.p, m->embedding->data, inputs, rows, d);
    int cur = 0, fslot = keep ? S : 0;
    bool normed = false;   /* the next sub-block's (or the final) rmsnorm was done with the residual add */
    for (int s = 0; s < S; s++) {
        hy_layer *L = sub_block(m, s);
        if (!L->ops) {
            if (keep) {
                memcpy(m->h.p + (size_t)(s + 1) * n, m->h.p + (size_t)s * n, n * sizeof(float));
                cur = s + 1;
            }
            continue;
        }
        int slot = keep ? s : 0;
        float *x = m->h.p + (size_t)cur * n, *xn = m->normed.p + (size_t)slot * n;
        if (!normed)
            hy_rmsnorm_forward_bf16(xn, nh ? nh + (size_t)slot * n : NULL, m->rstd.p + (size_t)slot * rows, x,
                                    sub_norm(m, s), rows, d);
        L->keep_for_backward = keep;
        int rc = L->ops->forward(L, xn, m->work.p, B, T);
        if (rc < 0) {
            hy_error_prefix("layer %d %s %s forward", s / 2, s % 2 ? "ffn" : "mixer", L->ops->name);
            return rc;
        }
        int next = keep ? s + 1 : 0;
        float *y = m->h.p + (size_t)next * n, *w = m->work.p;
        /* y = x + w, with the rmsnorm of whatever reads y next (sub-block s + 1 or the final norm) */
        int nslot = keep ? s + 1 : 0;
        normed = s + 1 == S || sub_block(m, s + 1)->ops;
        if (normed)
            hy_add_rmsnorm_forward_bf16(y, m->normed.p + (size_t)nslot * n, nh ? nh + (size_t)nslot * n : NULL,
                                        m->rstd.p + (size_t)nslot * rows, x, w,
                                        s + 1 == S ? m->norm_f->data : sub_norm(m, s + 1), rows, d);
        else {
            #pragma omp parallel for schedule(static)
            for (size_t k = 0; k < n; k++) y[k] = x[k] + w[k];
        }
        cur = next;
    }
    float *hf = m->normed.p + (size_t)fslot * n;
    if (!normed)
        hy_rmsnorm_forward_bf16(hf, nh ? nh + (size_t)fslot * n : NULL, m->rstd.p + (size_t)fslot * rows,
                                m->h.p + (size_t)cur * n, m->norm_f->data, rows, d);
    hy_linear_forward(m->logits.p, hf, head_weight(m), NULL, (int)rows, d, V);

    hy_loss l = {0};
    if (targets) {
        l.ce_loss = (float)hy_cross_entropy_forward(m->logits.p, targets, rows, V, &l.n_targets);
        l.aux_loss = hy_aux_mean(&m->shared);
        l.loss = l.ce_loss + m->cfg.router_aux_coef * l.aux_loss;
    }
    m->loss = l;
    if (loss) *loss = l;
    return 0;
}

int hy_model_backward(hy_model *m) {
    const int d = m->cfg.d_model, V = m->cfg.vocab_size, S = 2 * m->cfg.n_layers;
    const int B = m->B, T = m->T;
    size_t rows = (size_t)B * T, n = rows * d;
    if (!m->targets) return hy_fail("backward: the last forward had no targets");
    if (m->h.cap < n * (S + 1)) return hy_fail("backward: the last forward did not keep activations");
    if (!hy_buf_reserve(&m->dwork, rows * (V > d ? V : d)) || !hy_buf_reserve(&m->dh, n) ||
        !hy_buf_reserve(&m->work, n))
        return HY_ERR_NOMEM;
    float *dlogits = m->dwork.p;
    long targets = m->batch_targets > 0 ? m->batch_targets : m->loss.n_targets;
    float scale = targets ? 1.0f / (float)targets : 0.0f;
    hy_cross_entropy_backward(dlogits, m->logits.p, m->targets, rows, V, scale);
    float *hf = m->normed.p + (size_t)S * n, *dhf = m->work.p;
    hy_linear_backward(dhf, head_grad(m), NULL, dlogits, hf, head_weight(m), (int)rows, d, V, false);
    int rc = hy_rmsnorm_backward(m->dh.p, m->norm_f->grad, dhf, m->h.p + (size_t)S * n, m->norm_f->data,
                                 m->rstd.p + (size_t)S * rows, rows, d, 0);
    if (rc < 0) return rc;
    /* final now: norm_f and an untied head, which lie after every layer in the arena */
    size_t ready = param_offset(m, (int)(m->norm_f - m->params));
    grads_ready(m, ready, m->numel);
    for (int s = S - 1; s >= 0; s--) {
        hy_layer *L = sub_block(m, s);
        if (!L->ops) continue;
        /* dh is the gradient w.r.t. the stream after sub-block s; the block's output gets dh, and
         * its input gets dh + norm_backward(block_backward(dh)). */
        float *dxn = m->dwork.p;
        rc = L->ops->backward(L, m->dh.p, dxn, B, T);
        if (rc < 0) {
            hy_error_prefix("layer %d %s %s backward", s / 2, s % 2 ? "ffn" : "mixer", L->ops->name);
            return rc;
        }
        rc = hy_rmsnorm_backward(m->dh.p, sub_norm_grad(m, s), dxn, m->h.p + (size_t)s * n, sub_norm(m, s),
                                 m->rstd.p + (size_t)s * rows, rows, d, 1);
        if (rc < 0) return rc;
        size_t start = sub_block_offset(m, s);   /* its norm and parameters: no later pass adds to them */
        grads_ready(m, start, ready);
        ready = start;
    }
    hy_embedding_backward(m->embedding->grad, m->dh.p, m->tokens, rows, d);
    grads_ready(m, 0, ready);   /* the embedding (also the tied head) */
    return 0;
}

/* e scalars as the arena holds them: padded to a multiple of 16 floats (add_param) when pad. */
static double padded16(double e, bool pad) { return pad ? ceil(e / 16) * 16 : e; }

/* Floats of the parameter arena of cfg, laid out as build_params does (each tensor padded to a
 * multiple of 16 floats), or with pad false the parameters' scalars. */
static double arena_floats(const hy_model_config *c, bool pad) {
    double d = c->d_model;
    double n = (c->tie_embeddings ? 1.0 : 2.0) * padded16(c->vocab_size * d, pad) + padded16(d, pad);
    for (int i = 0; i < c->n_layers; i++) {
        const hy_block_cfg *b[2] = {&c->layers[i].mixer, &c->layers[i].ffn};
        for (int k = 0; k < 2; k++) {
            if (!b[k]->ops) continue;
            hy_param_spec specs[HY_MAX_BLOCK_PARAMS];
            int np = b[k]->ops->param_specs(&b[k]->opts, c->d_model, NULL);
            if (np > HY_MAX_BLOCK_PARAMS) return INFINITY;
            b[k]->ops->param_specs(&b[k]->opts, c->d_model, specs);
            n += padded16(d, pad);   /* the sub-block's norm */
            for (int j = 0; j < np; j++) {
                double e = 1;
                for (int q = 0; q < specs[j].ndim; q++) e *= specs[j].shape[q];
                n += padded16(e, pad);
            }
        }
    }
    return n;
}

double hy_model_config_scalars(const hy_model_config *cfg) { return arena_floats(cfg, false); }

/* The model's own buffers of a training step mirror hy_model_forward (keep) and hy_model_backward:
 * h and normed (2·n_layers + 1 slots of rows × d), rstd (as many slots of rows), work, logits
 * (rows × V), dwork (rows × max(V, d)), dh, tokens and targets; each block adds its
 * hy_train_bytes, and every block with HY_BLOCK_FIRST_VALUE its slot's value and gradient. */
int hy_model_train_memory(const hy_model_config *cfg, int B, int T, int threads, int slots, hy_train_memory *out) {
    memset(out, 0, sizeof *out);
    if (B < 1 || T < 1 || threads < 1) return hy_fail("training memory: batch %d, length %d and threads %d must be >= 1", B, T, threads);
    const double d = cfg->d_model, V = cfg->vocab_size, rows = (double)B * T, n = rows * d, S = 2.0 * cfg->n_layers;
    double arena = arena_floats(cfg, true) * sizeof(float), act = 0, scratch = 0;
    act += (2 * n * (S + 1) + rows * (S + 1) + n + rows * V + rows * fmax(V, d) + n + 2 * rows) * sizeof(float);
    const hy_block_ops *first[HY_MAX_FIRST_SLOTS];
    int n_first = 0;
    for (int i = 0; i < cfg->n_layers; i++) {
        const hy_block_cfg *b[2] = {&cfg->layers[i].mixer, &cfg->layers[i].ffn};
        for (int k = 0; k < 2; k++) {
            const hy_block_ops *ops = b[k]->ops;
            if (!ops) continue;
            if (!ops->train_bytes) return hy_fail("training memory: block %s has no train_bytes", ops->name);
            bool writes = true;   /* the lowest layer of a HY_BLOCK_FIRST_VALUE block writes its slot */
            if (ops->flags & HY_BLOCK_FIRST_VALUE) {
                for (int f = 0; f < n_first; f++) writes &= first[f] != ops;
                if (writes && n_first < HY_MAX_FIRST_SLOTS) first[n_first++] = ops, act += 2 * n * sizeof(float);
            }
            hy_train_bytes tb = ops->train_bytes(&b[k]->opts, cfg->d_model, B, T, threads, writes);
            act += tb.kept, scratch = fmax(scratch, tb.scratch);
        }
    }
    *out = (hy_train_memory){.scalars = arena_floats(cfg, false), .params = arena, .grads = arena,
                             .optimizer = slots * arena, .activations = act, .scratch = scratch};
    out->total = out->params + out->grads + out->optimizer + out->activations + out->scratch;
    return 0;
}

double hy_model_flop_per_token(const hy_model *m, int T) {
    const hy_model_config *c = &m->cfg;
    double f = 2.0 * c->d_model * c->vocab_size;
    for (int i = 0; i < c->n_layers; i++) {
        f += c->layers[i].mixer.ops->flop(&c->layers[i].mixer.opts, c->d_model, T) / T;
        if (c->layers[i].ffn.ops) f += c->layers[i].ffn.ops->flop(&c->layers[i].ffn.opts, c->d_model, T) / T;
    }
    return f;
}

size_t hy_model_state_bytes(const hy_model *m, int T) {
    const hy_model_config *c = &m->cfg;
    size_t b = 0;
    for (int i = 0; i < c->n_layers; i++) {
        b += c->layers[i].mixer.ops->state_bytes(&c->layers[i].mixer.opts, c->d_model, T);
        if (c->layers[i].ffn.ops) b += c->layers[i].ffn.ops->state_bytes(&c->layers[i].ffn.opts, c->d_model, T);
    }
    return b;
}

/* ---- streaming ---- */
hy_layer *hy_model_sub_block(hy_model *m, int s) { return sub_block(m, s); }
long hy_model_state_position(const hy_model_state *s) { return s->pos; }

int hy_model_state_new(hy_model *m, int B, hy_model_state **out) {
    int S = 2 * m->cfg.n_layers, d = m->cfg.d_model;
    *out = NULL;
    if (B < 1) return hy_fail("state: batch %d must be >= 1", B);
    hy_model_state *st = hy_calloc(sizeof *st);
    if (!st) return HY_ERR_NOMEM;
    st->B = B;
    st->block_state = hy_calloc(sizeof(void *) * (size_t)S);
    st->h = hy_malloc(sizeof(float) * (size_t)B * d);
    st->xn = hy_malloc(sizeof(float) * (size_t)B * d);
    st->y = hy_malloc(sizeof(float) * (size_t)B * d);
    st->rstd = hy_malloc(sizeof(float) * (size_t)B);
    st->logits = hy_calloc(sizeof(float) * (size_t)B * m->cfg.vocab_size);
    if (!st->block_state || !st->h || !st->xn || !st->y || !st->rstd || !st->logits) {
        hy_model_state_free(m, st);
        return HY_ERR_NOMEM;
    }
    for (int s = 0; s < S; s++) {
        hy_layer *L = sub_block(m, s);
        int rc = L->ops ? L->ops->state_new(L, B, &st->block_state[s]) : 0;
        if (rc < 0) {
            hy_error_prefix("layer %d %s %s state", s / 2, s % 2 ? "ffn" : "mixer", L->ops->name);
            hy_model_state_free(m, st);
            return rc;
        }
    }
    *out = st;
    return 0;
}

/* Refuses token ids outside the vocabulary before any state changes. */
static int check_tokens(const hy_model *m, const int32_t *tokens, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab_size)
            return hy_fail("%s: token %d at %zu is outside [0, %d)", what, tokens[i], i, m->cfg.vocab_size);
    return 0;
}

int hy_model_step(hy_model *m, hy_model_state *st, const int32_t *tokens, float *logits) {
    int S = 2 * m->cfg.n_layers, d = m->cfg.d_model, V = m->cfg.vocab_size, B = st->B;
    if (st->pos >= HY_MAX_POSITION)
        return hy_fail("step: the state holds %ld tokens per sequence, the most a state can hold", st->pos);
    int rc = check_tokens(m, tokens, (size_t)B, "step");
    if (rc == 0 && !m->bf16_valid) rc = hy_model_bf16_refresh(m);
    if (rc < 0) return rc;
    hy_embedding_forward(st->h, m->embedding->data, tokens, (size_t)B, d);
    for (int s = 0; s < S; s++) {
        hy_layer *L = sub_block(m, s);
        if (!L->ops) continue;
        hy_rmsnorm_forward(st->xn, st->rstd, st->h, sub_norm(m, s), (size_t)B, d);
        L->keep_for_backward = false;
        rc = L->ops->step(L, st->block_state[s], st->xn, st->y, B);
        if (rc < 0) {
            hy_error_prefix("layer %d %s %s step", s / 2, s % 2 ? "ffn" : "mixer", L->ops->name);
            return rc;
        }
        for (size_t k = 0; k < (size_t)B * d; k++) st->h[k] += st->y[k];
    }
    hy_rmsnorm_forward(st->xn, st->rstd, st->h, m->norm_f->data, (size_t)B, d);
    hy_linear_forward(st->logits, st->xn, head_weight(m), NULL, B, d, V);
    if (logits) memcpy(logits, st->logits, sizeof(float) * (size_t)B * V);
    st->have_logits = true;
    st->pos++;
    return 0;
}

/* Whether every block of the stack has a multi-token prefill. If one does not, the stack is
 * prefilled token by token through hy_model_step: stepping that block alone over the chunk
 * would be wrong for blocks that pass per-token data between layers (HY_BLOCK_FIRST_VALUE). */
static bool can_prefill(const hy_model *m) {
    for (int s = 0; s < 2 * m->cfg.n_layers; s++) {
        const hy_layer *L = s % 2 ? &m->ffns[s / 2] : &m->mixers[s / 2];
        if (L->ops && !L->ops->prefill) return false;
    }
    return true;
}

/* C tokens per sequence (tok: (B, C)) through the stack, every block's prefill in turn; the
 * final normed stream stays in pxn. */
static int prefill_chunk(hy_model *m, hy_model_state *st, const int32_t *tok, int C) {
    int S = 2 * m->cfg.n_layers, d = m->cfg.d_model, B = st->B;
    size_t rows = (size_t)B * C, n = rows * d;
    if (!hy_buf_reserve(&st->ph, n) || !hy_buf_reserve(&st->pxn, n) || !hy_buf_reserve(&st->py, n) ||
        !hy_buf_reserve(&st->prstd, rows))
        return HY_ERR_NOMEM;
    float *h = st->ph.p, *xn = st->pxn.p, *y = st->py.p;
    hy_embedding_forward(h, m->embedding->data, tok, rows, d);
    for (int s = 0; s < S; s++) {
        hy_layer *L = sub_block(m, s);
        if (!L->ops) continue;
        hy_rmsnorm_forward(xn, st->prstd.p, h, sub_norm(m, s), rows, d);
        L->keep_for_backward = false;
        int rc = L->ops->prefill(L, st->block_state[s], xn, y, B, C);
        if (rc < 0) {
            hy_error_prefix("layer %d %s %s prefill", s / 2, s % 2 ? "ffn" : "mixer", L->ops->name);
            return rc;
        }
        #pragma omp parallel for schedule(static)
        for (size_t k = 0; k < n; k++) h[k] += y[k];
    }
    hy_rmsnorm_forward(xn, st->prstd.p, h, m->norm_f->data, rows, d);
    return 0;
}

int hy_model_prefill(hy_model *m, hy_model_state *st, const int32_t *tokens, int T, float *logits, bool all) {
    int d = m->cfg.d_model, V = m->cfg.vocab_size, B = st->B;
    if (T < 0) return hy_fail("prefill: length %d must be >= 0", T);
    if (T > HY_MAX_POSITION - st->pos)
        return hy_fail("prefill: %d more tokens would take the state past %d tokens per sequence (it holds %ld)", T,
                       HY_MAX_POSITION, st->pos);
    if (T == 0) {
        if (logits && !all) memcpy(logits, st->logits, sizeof(float) * (size_t)B * V);
        return 0;
    }
    int rc = check_tokens(m, tokens, (size_t)B * T, "prefill");
    if (rc == 0) rc = hy_model_bf16_refresh(m);
    if (rc < 0) return rc;
    if (!can_prefill(m)) {   /* token by token through the whole stack */
        int32_t *tok = hy_malloc(sizeof(int32_t) * (size_t)B);
        if (!tok) return HY_ERR_NOMEM;
        for (int t = 0; t < T && rc == 0; t++) {
            for (int b = 0; b < B; b++) tok[b] = tokens[(size_t)b * T + t];
            rc = hy_model_step(m, st, tok, NULL);
            for (int b = 0; rc == 0 && all && logits && b < B; b++)
                memcpy(logits + ((size_t)b * T + t) * V, st->logits + (size_t)b * V, sizeof(float) * V);
        }
        hy_free(tok);
        if (rc == 0 && logits && !all) memcpy(logits, st->logits, sizeof(float) * (size_t)B * V);
        return rc;
    }
    int Cmax = T < HY_PREFILL_CHUNK ? T : HY_PREFILL_CHUNK;
    if (!hy_buf_reserve(&st->px, (size_t)B * Cmax) || (all && !hy_buf_reserve(&st->plog, (size_t)B * Cmax * V)))
        return HY_ERR_NOMEM;
    int32_t *tok = (int32_t *)(void *)st->px.p;   /* int32 and float have the same size */
    for (int t0 = 0; t0 < T; t0 += Cmax) {
        int C = T - t0 < Cmax ? T - t0 : Cmax;
        for (int b = 0; b < B; b++) memcpy(tok + (size_t)b * C, tokens + (size_t)b * T + t0, sizeof(int32_t) * C);
        if ((rc = prefill_chunk(m, st, tok, C)) < 0) return rc;
        st->pos += C;
        const float *hf = st->pxn.p;
        if (all && logits) {
            hy_linear_forward(st->plog.p, hf, head_weight(m), NULL, B * C, d, V);
            for (int b = 0; b < B; b++)
                memcpy(logits + ((size_t)b * T + t0) * V, st->plog.p + (size_t)b * C * V, sizeof(float) * C * V);
        }
        if (t0 + C == T) {   /* the logits after the last token of each sequence */
            for (int b = 0; b < B; b++)
                memcpy(st->xn + (size_t)b * d, hf + ((size_t)b * C + C - 1) * d, sizeof(float) * d);
            hy_linear_forward(st->logits, st->xn, head_weight(m), NULL, B, d, V);
            st->have_logits = true;
        }
    }
    if (logits && !all) memcpy(logits, st->logits, sizeof(float) * (size_t)B * V);
    return 0;
}

void hy_model_state_free(hy_model *m, hy_model_state *st) {
    if (!st) return;
    for (int s = 0; st->block_state && s < 2 * m->cfg.n_layers; s++) {
        hy_layer *L = sub_block(m, s);
        if (L->ops && st->block_state[s]) L->ops->state_free(L, st->block_state[s]);
    }
    hy_free(st->block_state), hy_free(st->h), hy_free(st->xn), hy_free(st->y), hy_free(st->rstd);
    hy_free(st->logits);
    hy_buf *bufs[] = {&st->ph, &st->pxn, &st->py, &st->prstd, &st->px, &st->plog};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) hy_buf_free(bufs[i]);
    hy_free(st);
}

/* swiglu — the SwiGLU feed-forward block (SPEC §3):
 *   out = down_proj( silu(gate_proj u) ⊙ up_proj u )
 * gate_proj, up_proj: (F, d); down_proj: (d, F). Inside a model, whose parameter arena lays
 * gate_proj and up_proj back to back, they are one (2F, d) weight: two GEMMs forward, four backward
 * (a standalone layer, whose tensors are separate allocations: three and six, into the same
 * columns). */
#include "core/error.h"
#include "core/gemm.h"
#include "core/mem.h"
#include "core/vmath.h"
#include "layers/registry.h"
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

enum { OPT_D_FF };
static const hy_opt_spec swiglu_opts[] = {
    {"d_ff", HY_OPT_INT, 0, 1, 1 << 20, HY_OPT_DEFAULT_AUTO,
     "hidden width F; auto = 8/3 d rounded up to a multiple of 32 (LLaMA's rule)"},
};

enum { P_GATE, P_UP, P_DOWN };

typedef struct {
    const float *x;  /* input of the last forward (owned by the caller, alive until backward) */
    hy_buf gu;       /* (rows, 2F): the pre-activations, gate in columns [0, F), up in [F, 2F) */
    hy_buf act;      /* (rows, F): silu(gate) ⊙ up */
    hy_buf dact;     /* (rows, F) */
    hy_buf dgu;      /* (rows, 2F): the gradients of gate and up, laid out as gu */
} swiglu_cache;

static int swiglu_resolve(hy_opts *o, int d_model, int *bad_opt, char *msg, size_t msg_len) {
    (void)bad_opt, (void)msg, (void)msg_len;
    if (o->is_auto[OPT_D_FF]) {
        o->v[OPT_D_FF] = ceil(8.0 * d_model / 3.0 / 32.0) * 32.0;
        o->is_auto[OPT_D_FF] = false;
    }
    return 0;
}

static int swiglu_param_specs(const hy_opts *o, int d, hy_param_spec *out) {
    int F = hy_opt_int(o, OPT_D_FF);
    if (out) {
        out[P_GATE] = (hy_param_spec){"gate_proj.weight", 2, {F, d}, 0};
        out[P_UP] = (hy_param_spec){"up_proj.weight", 2, {F, d}, 0};
        out[P_DOWN] = (hy_param_spec){"down_proj.weight", 2, {d, F}, 0};
    }
    return 3;
}

/* The three projections are plain linears (docs/blocks.md, "Initialization"); down_proj is the
 * output projection (hy_init_output_linear). */
static void swiglu_init(hy_layer *L, hy_rng *rng) {
    int d = L->d_model, F = hy_opt_int(&L->opts, OPT_D_FF);
    hy_init_linear(L->p[P_GATE], NULL, F, d, rng);
    hy_init_linear(L->p[P_UP], NULL, F, d, rng);
    hy_init_output_linear(L, L->p[P_DOWN], NULL, d, F, rng);
}

static swiglu_cache *cache_of(hy_layer *L) {
    if (!L->priv) L->priv = hy_calloc(sizeof(swiglu_cache));
    return L->priv;
}

/* Whether up_proj follows gate_proj in memory (w: the layer's weights or gradients), so that the
 * two are one (2F, d) matrix. */
static bool gate_up_stacked(float *const *w, int F, int d) {
    return w[P_GATE] && w[P_UP] == w[P_GATE] + (size_t)F * d;
}

static int swiglu_forward(hy_layer *L, const float *x, float *y, int B, int T) {
    swiglu_cache *c = cache_of(L);
    int d = L->d_model, F = hy_opt_int(&L->opts, OPT_D_FF);
    size_t rows = (size_t)B * T, n = rows * F;
    if (!c || !hy_buf_reserve(&c->gu, 2 * n) || !hy_buf_reserve(&c->act, n)) return HY_ERR_NOMEM;
    float *gu = c->gu.p, *a = c->act.p;
    if (gate_up_stacked(L->p, F, d)) hy_linear_forward(gu, x, L->p[P_GATE], NULL, (int)rows, d, 2 * F);
    else {
        int rc = hy_gemm_bf16_hold(x, rows * d);   /* bf16: x converted once for both products */
        if (rc < 0) return rc;
        hy_gemm(false, true, (int)rows, F, d, 1.0f, x, d, L->p[P_GATE], d, 0.0f, gu, 2 * F);
        hy_gemm(false, true, (int)rows, F, d, 1.0f, x, d, L->p[P_UP], d, 0.0f, gu + F, 2 * F);
        hy_gemm_bf16_release(x);
    }
    #pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) {
        const float *g = gu + r * 2 * F, *u = g + F;
        float *ar = a + r * F;
        #pragma omp simd
        for (int f = 0; f < F; f++) ar[f] = hy_siluf(g[f]) * u[f];
    }
    hy_linear_forward(y, a, L->p[P_DOWN], NULL, (int)rows, F, d);
    c->x = x;
    return 0;
}

static int swiglu_backward(hy_layer *L, const float *dy, float *dx, int B, int T) {
    swiglu_cache *c = L->priv;
    int d = L->d_model, F = hy_opt_int(&L->opts, OPT_D_FF);
    size_t rows = (size_t)B * T, n = rows * F;
    if (!c || !c->x) return hy_fail("swiglu: backward without a forward");
    if (!hy_buf_reserve(&c->dact, n) || !hy_buf_reserve(&c->dgu, 2 * n)) return HY_ERR_NOMEM;
    hy_linear_backward(c->dact.p, L->g[P_DOWN], NULL, dy, c->act.p, L->p[P_DOWN], (int)rows, F, d, false);
    const float *gu = c->gu.p, *da = c->dact.p;
    float *dgu = c->dgu.p;
    #pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) {
        const float *g = gu + r * 2 * F, *u = g + F, *dar = da + r * F;
        float *dg = dgu + r * 2 * F, *du = dg + F;
        #pragma omp simd
        for (int f = 0; f < F; f++) {
            float s = hy_sigmoidf(g[f]);
            du[f] = dar[f] * g[f] * s;
            dg[f] = dar[f] * u[f] * s * (1.0f + g[f] * (1.0f - s));
        }
    }
    int rc = hy_gemm_bf16_hold(c->x, rows * d);   /* bf16: x converted once for the weight gradients */
    if (rc < 0) return rc;
    if (gate_up_stacked(L->p, F, d) && gate_up_stacked(L->g, F, d))   /* dx = dGU W_gu; dW_gu += dGUᵀ x */
        hy_linear_backward(dx, L->g[P_GATE], NULL, dgu, c->x, L->p[P_GATE], (int)rows, d, 2 * F, false);
    else
        for (int j = P_GATE; j <= P_UP; j++) {   /* dx (+)= dY_j W_j; dW_j += dY_jᵀ x */
            const float *dyj = dgu + (j == P_GATE ? 0 : F);
            hy_gemm(false, false, (int)rows, d, F, 1.0f, dyj, 2 * F, L->p[j], d, j == P_GATE ? 0.0f : 1.0f, dx, d);
            hy_gemm(true, false, F, d, (int)rows, 1.0f, dyj, 2 * F, c->x, d, 1.0f, L->g[j], d);
        }
    hy_gemm_bf16_release(c->x);
    return 0;
}

/* A feed-forward block is stateless: streaming is the forward on one token. */
static int swiglu_state_new(hy_layer *L, int B, void **state) {
    (void)L, (void)B;
    *state = NULL;
    return 0;
}
static int swiglu_step(hy_layer *L, void *state, const float *x, float *y, int B) {
    (void)state;
    return swiglu_forward(L, x, y, B, 1);
}
static void swiglu_state_free(hy_layer *L, void *state) { (void)L, (void)state; }
/* Position-wise: a multi-token prefill is the forward over the tokens. */
static int swiglu_prefill(hy_layer *L, void *state, const float *x, float *y, int B, int T) {
    (void)state;
    return swiglu_forward(L, x, y, B, T);
}
/* Nothing to save: the state is empty. */
static int swiglu_state_tensors(hy_layer *L, const void *state, hy_state_tensor *out) {
    (void)L, (void)state, (void)out;
    return 0;
}
static int swiglu_state_export(hy_layer *L, const void *state, int i, float *dst) {
    (void)L, (void)state, (void)dst;
    return hy_fail("swiglu: no state tensor %d (the block is stateless)", i);
}
static int swiglu_state_import(hy_layer *L, void *state, int n, const hy_state_tensor *t, const float *const *data) {
    (void)L, (void)state, (void)data;
    if (n) return hy_fail("swiglu: unexpected state tensor '%s' (the block is stateless)", t[0].name);
    return 0;
}
static size_t swiglu_state_bytes(const hy_opts *o, int d, int T) { (void)o, (void)d, (void)T; return 0; }

/* Three (d x F) products per token. */
static double swiglu_flop(const hy_opts *o, int d, int T) {
    return (double)T * (6.0 * d * hy_opt_int(o, OPT_D_FF) + 4.0 * hy_opt_int(o, OPT_D_FF));
}

/* Training memory: forward keeps gate, up and act, backward adds dact and the gradients of gate and
 * up: six (rows, F). */
static hy_train_bytes swiglu_train_bytes(const hy_opts *o, int d, int B, int T, int threads, bool first) {
    (void)d, (void)threads, (void)first;
    return (hy_train_bytes){6.0 * B * T * hy_opt_int(o, OPT_D_FF) * sizeof(float), 0};
}

static void swiglu_destroy(hy_layer *L) {
    swiglu_cache *c = L->priv;
    if (!c) return;
    hy_buf_free(&c->gu), hy_buf_free(&c->act), hy_buf_free(&c->dact), hy_buf_free(&c->dgu);
    hy_free(c);
    L->priv = NULL;
}

const hy_block_ops hy_block_swiglu = {
    .name = "swiglu",
    .kinds = HY_KIND_FFN,
    .summary = "SwiGLU feed-forward: down(silu(gate u) * up u)",
    .opts = swiglu_opts,
    .n_opts = 1,
    .resolve = swiglu_resolve,
    .param_specs = swiglu_param_specs,
    .init = swiglu_init,
    .forward = swiglu_forward,
    .backward = swiglu_backward,
    .state_new = swiglu_state_new,
    .step = swiglu_step,
    .prefill = swiglu_prefill,
    .state_free = swiglu_state_free,
    .state_bytes = swiglu_state_bytes,
    .flop = swiglu_flop,
    .train_bytes = swiglu_train_bytes,
    .destroy = swiglu_destroy,
    .state_tensors = swiglu_state_tensors,
    .state_export = swiglu_state_export,
    .state_import = swiglu_state_import,
};

/* cmix — RWKV-7 channel mix (SPEC §3, RWKV-LM x070 RWKV_CMix_x070), a feed-forward block with a
 * token shift:
 *   k = u + (shift(u) - u) ⊙ x_k;   out = value · relu(key · k)²
 * x_k (1, 1, d), key.weight (F, d), value.weight (d, F). Streaming state: the last input. */
#include "core/error.h"
#include "core/gemm.h"
#include "core/mem.h"
#include "layers/rwkv7/rwkv7.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

/* Elementwise loops smaller than this run on one thread (fork/join costs more than they do). */
#define PAR_MIN 65536

enum { OPT_D_FF };
static const hy_opt_spec cmix_opts[] = {
    {"d_ff", HY_OPT_INT, 0, 1, 1 << 20, HY_OPT_DEFAULT_AUTO, "hidden width F; auto = 4·d_model (upstream x070)"},
};

enum { P_XK, P_KEY, P_VALUE };

typedef struct {
    const float *x;
    int B, T;
    bool have_fwd;
    hy_buf xx, xk, h, act, dact, dxk, ones;
} cmix_priv;

typedef struct {
    int B;
    float *xprev;   /* (B, d) */
} cmix_state;

static int cmix_resolve(hy_opts *o, int d, int *bad_opt, char *msg, size_t msg_len) {
    (void)bad_opt, (void)msg, (void)msg_len;
    if (o->is_auto[OPT_D_FF]) o->v[OPT_D_FF] = 4.0 * d, o->is_auto[OPT_D_FF] = false;
    return 0;
}

static int cmix_param_specs(const hy_opts *o, int d, hy_param_spec *out) {
    int F = hy_opt_int(o, OPT_D_FF);
    if (out) {
        out[P_XK] = (hy_param_spec){"x_k", 3, {1, 1, d}, HY_PARAM_NO_DECAY};
        out[P_KEY] = (hy_param_spec){"key.weight", 2, {F, d}, 0};
        out[P_VALUE] = (hy_param_spec){"value.weight", 2, {d, F}, 0};
    }
    return 3;
}

/* x_k as upstream x070: 1 - (c/d)^(ratio_1_to_almost0⁴) with ratio = 1 - layer/n_layers; key and
 * value are plain linears, value the output projection (hy_init_output_linear; upstream has key
 * U(±0.5/√d), value 0). */
static void cmix_init(hy_layer *L, hy_rng *rng) {
    int d = L->d_model, F = hy_opt_int(&L->opts, OPT_D_FF), id = L->index;
    int nl = hy_stack_depth(L);
    double r10 = 1.0 - (double)id / nl;
    for (int c = 0; c < d; c++) L->p[P_XK][c] = (float)(1.0 - pow((double)c / d, r10 * r10 * r10 * r10));
    hy_init_linear(L->p[P_KEY], NULL, F, d, rng);
    hy_init_output_linear(L, L->p[P_VALUE], NULL, d, F, rng);
}

static cmix_priv *priv_of(hy_layer *L) {
    if (!L->priv) L->priv = hy_calloc(sizeof(cmix_priv));
    return L->priv;
}

/* Forward from an optional shift state xprev (B, d), updated to the last input when given. */
static int cmix_forward_core(hy_layer *L, const float *x, float *y, int B, int T, float *xprev, bool keep) {
    cmix_priv *P = priv_of(L);
    if (!P) return HY_ERR_NOMEM;
    int d = L->d_model, F = hy_opt_int(&L->opts, OPT_D_FF);
    size_t rows = (size_t)B * T;
    P->have_fwd = false;
    if (rows == 0) return 0;
    if (!hy_buf_grab(&P->xx, rows * d) || !hy_buf_grab(&P->xk, rows * d) || !hy_buf_grab(&P->h, rows * F) ||
        !hy_buf_grab(&P->act, rows * F))
        return HY_ERR_NOMEM;
    float *xx = P->xx.p, *xk = P->xk.p, *mu = L->p[P_XK];
    #pragma omp parallel for schedule(static) if (rows * (size_t)d >= PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        int t = (int)(r % T), b = (int)(r / T);
        const float *prev = t ? x + (r - 1) * d : xprev ? xprev + (size_t)b * d : NULL;
        for (int c = 0; c < d; c++) {
            float dd = (prev ? prev[c] : 0.0f) - x[r * d + c];
            xx[r * d + c] = dd;
            xk[r * d + c] = x[r * d + c] + dd * mu[c];
        }
    }
    hy_linear_forward(P->h.p, xk, L->p[P_KEY], NULL, (int)rows, d, F);
    float *h = P->h.p, *act = P->act.p;
    size_t nf = rows * F;
    #pragma omp parallel for schedule(static) if (nf >= PAR_MIN)
    for (size_t i = 0; i < nf; i++) {
        float z = h[i] > 0 ? h[i] : 0.0f;
        act[i] = z * z;
    }
    hy_linear_forward(y, act, L->p[P_VALUE], NULL, (int)rows, F, d);
    if (xprev)
        for (int b = 0; b < B; b++) memcpy(xprev + (size_t)b * d, x + ((size_t)b * T + T - 1) * d, d * sizeof(float));
    P->x = x, P->B = B, P->T = T, P->have_fwd = keep;
    return 0;
}

static int cmix_forward(hy_layer *L, const float *x, float *y, int B, int T) {
    return cmix_forward_core(L, x, y, B, T, NULL, L->keep_for_backward);
}

static int cmix_backward(hy_layer *L, const float *dy, float *dx, int B, int T) {
    cmix_priv *P = L->priv;
    int d = L->d_model, F = hy_opt_int(&L->opts, OPT_D_FF);
    size_t rows = (size_t)B * T, nf = rows * F;
    if (rows == 0) return 0;
    if (!P || !P->have_fwd || P->B != B || P->T != T) return hy_fail("cmix: backward without a matching forward");
    if (!hy_buf_grab(&P->dact, nf) || !hy_buf_grab(&P->dxk, rows * d)) return HY_ERR_NOMEM;
    if (P->ones.cap < rows) {
        if (!hy_buf_grab(&P->ones, rows)) return HY_ERR_NOMEM;
        for (size_t i = 0; i < P->ones.cap; i++) P->ones.p[i] = 1.0f;
    }
    hy_linear_backward(P->dact.p, L->g[P_VALUE], NULL, dy, P->act.p, L->p[P_VALUE], (int)rows, F, d, false);
    float *h = P->h.p, *da = P->dact.p;
    #pragma omp parallel for schedule(static) if (nf >= PAR_MIN)
    for (size_t i = 0; i < nf; i++) da[i] *= h[i] > 0 ? 2.0f * h[i] : 0.0f;
    hy_linear_backward(P->dxk.p, L->g[P_KEY], NULL, da, P->xk.p, L->p[P_KEY], (int)rows, d, F, false);
    /* xk = x + xx ⊙ mu, xx_t = x_{t-1} - x_t: dx_t = dxk_t (1 - mu) + dxk_{t+1} mu; dmu = Σ dxk ⊙ xx */
    float *dxk = P->dxk.p, *xx = P->xx.p, *mu = L->p[P_XK];
    #pragma omp parallel for schedule(static) if (rows * (size_t)d >= PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        int t = (int)(r % T);
        for (int c = 0; c < d; c++) {
            float v = dxk[r * d + c] * (1.0f - mu[c]);
            if (t + 1 < T) v += dxk[(r + 1) * d + c] * mu[c];
            dx[r * d + c] = v;
        }
    }
    #pragma omp parallel for schedule(static) if (rows * d >= PAR_MIN)
    for (size_t i = 0; i < rows * d; i++) dxk[i] *= xx[i];
    hy_gemm(false, false, 1, d, (int)rows, 1.0f, P->ones.p, (int)rows, dxk, d, 1.0f, L->g[P_XK], d);
    return 0;
}

static int cmix_state_new(hy_layer *L, int B, void **state) {
    cmix_state *s = hy_calloc(sizeof *s);
    if (!s) return HY_ERR_NOMEM;
    s->B = B;
    s->xprev = hy_calloc(sizeof(float) * (size_t)B * L->d_model);
    *state = s;
    if (!s->xprev) {
        hy_free(s);
        *state = NULL;
        return HY_ERR_NOMEM;
    }
    return 0;
}

static void cmix_state_free(hy_layer *L, void *state) {
    (void)L;
    cmix_state *s = state;
    if (!s) return;
    hy_free(s->xprev), hy_free(s);
}

static int cmix_prefill(hy_layer *L, void *state, const float *x, float *y, int B, int T) {
    cmix_state *s = state;
    if (B != s->B) return hy_fail("cmix: state holds %d sequences, got %d", s->B, B);
    return cmix_forward_core(L, x, y, B, T, s->xprev, false);
}

static int cmix_step(hy_layer *L, void *state, const float *x, float *y, int B) {
    return cmix_prefill(L, state, x, y, B, 1);
}

/* State files (registry.h's state_* ops): one tensor "shift" (B, d), the last input of the token
 * shift (upstream's ffn x_prev); zeros before the first token. */
static int cmix_state_tensors(hy_layer *L, const void *state, hy_state_tensor *out) {
    if (out) out[0] = (hy_state_tensor){"shift", 2, {((const cmix_state *)state)->B, L->d_model}};
    return 1;
}

static int cmix_state_export(hy_layer *L, const void *state, int i, float *dst) {
    const cmix_state *s = state;
    if (i != 0) return hy_fail("cmix: no state tensor %d", i);
    memcpy(dst, s->xprev, sizeof(float) * (size_t)s->B * L->d_model);
    return 0;
}

/* Checks "shift" (B, d) and copies it in. */
static int cmix_state_import(hy_layer *L, void *state, int n, const hy_state_tensor *t, const float *const *data) {
    cmix_state *s = state;
    hy_state_tensor want = {"shift", 2, {s->B, L->d_model}};
    int idx;
    int rc = hy_state_match("cmix", n, t, 1, &want, &idx);
    if (rc < 0) return rc;
    memcpy(s->xprev, data[idx], sizeof(float) * (size_t)s->B * L->d_model);
    return 0;
}

/* The last input: d floats. */
static size_t cmix_state_bytes(const hy_opts *o, int d, int T) {
    (void)o, (void)T;
    return (size_t)d * sizeof(float);
}

/* Two (d × F) products per token (multiply-add = 2) plus the square: 4·d·F + F. */
static double cmix_flop(const hy_opts *o, int d, int T) {
    double F = hy_opt_int(o, OPT_D_FF);
    return (double)T * (4.0 * d * F + F);
}

/* Training memory: forward keeps xx, xk (rows, d) and h, act (rows, F); backward adds dact (rows, F),
 * dxk (rows, d) and a vector of ones (rows). */
static hy_train_bytes cmix_train_bytes(const hy_opts *o, int d, int B, int T, int threads, bool first) {
    (void)threads, (void)first;
    double rows = (double)B * T, F = hy_opt_int(o, OPT_D_FF);
    return (hy_train_bytes){rows * (3.0 * d + 3.0 * F + 1) * sizeof(float), 0};
}

static void cmix_destroy(hy_layer *L) {
    cmix_priv *P = L->priv;
    if (!P) return;
    hy_buf *bufs[] = {&P->xx, &P->xk, &P->h, &P->act, &P->dact, &P->dxk, &P->ones};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) hy_buf_free(bufs[i]);
    hy_free(P);
    L->priv = NULL;
}

const hy_block_ops hy_block_cmix = {
    .name = "cmix",
    .kinds = HY_KIND_FFN,
    .summary = "RWKV-7 channel mix: value(relu(key(token-shifted u))^2)",
    .opts = cmix_opts,
    .n_opts = 1,
    .resolve = cmix_resolve,
    .param_specs = cmix_param_specs,
    .init = cmix_init,
    .forward = cmix_forward,
    .backward = cmix_backward,
    .state_new = cmix_state_new,
    .step = cmix_step,
    .prefill = cmix_prefill,
    .state_free = cmix_state_free,
    .state_bytes = cmix_state_bytes,
    .flop = cmix_flop,
    .train_bytes = cmix_train_bytes,
    .destroy = cmix_destroy,
    .state_tensors = cmix_state_tensors,
    .state_export = cmix_state_export,
    .state_import = cmix_state_import,
};

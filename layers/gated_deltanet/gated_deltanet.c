/* gated_deltanet — Gated DeltaNet (SPEC §2, fla's GatedDeltaNet with use_gate and use_short_conv):
 *   [q | k | v | gate | a | b] = the six projections of u
 *   q, k, v = silu(causal depthwise conv, no bias);  per q/k head q ← q/‖q‖_ε · dk^-0.5, k ← k/‖k‖_ε
 *   β = sigmoid(b);  g = log α = −exp(A_log)·softplus(a + dt_bias)
 *   o = the gated delta rule per value head (layers/gated_deltanet/delta.c, chunked WY/UT form)
 *   o ← rmsnorm_head(o; o_norm.weight, 1e-5) ⊙ silu(gate);  out = o_proj o
 * Every product is a GEMM; the norms and gates are loops over rows (OpenMP), the three convs one
 * causal conv over their channels (layers/common/causal_conv.c, with its silu). One forward core
 * serves training (zero history and state, what backward needs kept), inference, prefill and step
 * (history and state from the streaming state; a single token takes the plain recurrence). The
 * backward is layers/gated_deltanet/gated_deltanet_backward.c. */
#include "core/error.h"
#include "core/gemm.h"
#include "core/mem.h"
#include "core/vmath.h"
#include "layers/gated_deltanet/gated_deltanet_priv.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

static const hy_opt_spec gdn_opts[] = {
    {"n_heads", HY_OPT_INT, 0, 1, 4096, HY_OPT_DEFAULT_AUTO, "q/k heads H; auto = max(1, floor(3·d_model / (4·head_k_dim)))"},
    {"n_v_heads", HY_OPT_INT, 0, 1, 4096, HY_OPT_DEFAULT_AUTO, "value heads HV, a multiple of n_heads; auto = n_heads"},
    {"head_k_dim", HY_OPT_INT, 64, 1, 4096, 0, "q/k head size dk"},
    {"expand_v", HY_OPT_FLOAT, 2, 0, 64, 0, "value head size dv = expand_v · head_k_dim, must be a whole number >= 1"},
    {"conv_size", HY_OPT_INT, 4, 1, 64, 0, "width K of the causal depthwise convolutions on q, k, v"},
};

typedef struct {
    int B;
    float *conv;   /* (B, K-1, Cx): the last K-1 conv inputs (q | k | v channels) */
    float *S;      /* (B, HV, dv, dk) */
    gdn_fwd F;
} gdn_state;

/* ---------------------------------------------------------------- options, params, init ---- */

/* n_heads auto = max(1, ⌊3d/(4·dk)⌋), n_v_heads auto = n_heads; n_v_heads must be a multiple of
 * n_heads and expand_v·head_k_dim a whole number >= 1. */
static int gdn_resolve(hy_opts *o, int d, int *bad_opt, char *msg, size_t msg_len) {
    int dk = hy_opt_int(o, OPT_HEAD_K_DIM);
    if (o->is_auto[OPT_N_HEADS]) {
        int h = 3 * d / (4 * dk);
        o->v[OPT_N_HEADS] = h > 1 ? h : 1;
        o->is_auto[OPT_N_HEADS] = false;
    }
    if (o->is_auto[OPT_N_V_HEADS]) {
        o->v[OPT_N_V_HEADS] = o->v[OPT_N_HEADS];
        o->is_auto[OPT_N_V_HEADS] = false;
    }
    int H = hy_opt_int(o, OPT_N_HEADS), HV = hy_opt_int(o, OPT_N_V_HEADS);
    if (HV % H) {
        *bad_opt = OPT_N_V_HEADS;
        snprintf(msg, msg_len, "n_v_heads = %d must be a multiple of n_heads = %d", HV, H);
        return HY_ERR_CONFIG;
    }
    double dv = o->v[OPT_EXPAND_V] * dk;
    if (fabs(dv - nearbyint(dv)) > 1e-6 * fmax(1.0, dv) || nearbyint(dv) < 1) {
        *bad_opt = OPT_EXPAND_V;
        snprintf(msg, msg_len, "expand_v = %g gives a value head size expand_v·head_k_dim = %g·%d = %g, not a whole number >= 1",
                 o->v[OPT_EXPAND_V], o->v[OPT_EXPAND_V], dk, dv);
        return HY_ERR_CONFIG;
    }
    double width = 2.0 * H * dk + 2.0 * HV * nearbyint(dv) + 2.0 * HV;   /* one row of the projections */
    if (width > (double)(1 << 30)) {
        *bad_opt = OPT_N_V_HEADS;
        snprintf(msg, msg_len, "n_heads = %d, n_v_heads = %d and head sizes %d, %g make the projections %g wide (at most 2^30)",
                 H, HV, dk, dv, width);
        return HY_ERR_CONFIG;
    }
    return 0;
}

/* SPEC §2 names and shapes; A_log and dt_bias are never weight-decayed (fla's _no_weight_decay). */
static int gdn_param_specs(const hy_opts *o, int d, hy_param_spec *out) {
    gdn_geom g = gdn_geom_of(o, d);
    if (out) {
        out[P_Q] = (hy_param_spec){"q_proj.weight", 2, {g.nqk, d}, 0};
        out[P_K] = (hy_param_spec){"k_proj.weight", 2, {g.nqk, d}, 0};
        out[P_V] = (hy_param_spec){"v_proj.weight", 2, {g.nv, d}, 0};
        out[P_G] = (hy_param_spec){"g_proj.weight", 2, {g.nv, d}, 0};
        out[P_A] = (hy_param_spec){"a_proj.weight", 2, {g.HV, d}, 0};
        out[P_B] = (hy_param_spec){"b_proj.weight", 2, {g.HV, d}, 0};
        out[P_QCONV] = (hy_param_spec){"q_conv1d.weight", 3, {g.nqk, 1, g.K}, 0};
        out[P_KCONV] = (hy_param_spec){"k_conv1d.weight", 3, {g.nqk, 1, g.K}, 0};
        out[P_VCONV] = (hy_param_spec){"v_conv1d.weight", 3, {g.nv, 1, g.K}, 0};
        out[P_A_LOG] = (hy_param_spec){"A_log", 1, {g.HV}, HY_PARAM_NO_DECAY};
        out[P_DT_BIAS] = (hy_param_spec){"dt_bias", 1, {g.HV}, HY_PARAM_NO_DECAY};
        out[P_ONORM] = (hy_param_spec){"o_norm.weight", 1, {g.dv}, 0};
        out[P_O] = (hy_param_spec){"o_proj.weight", 2, {d, g.nv}, 0};
    }
    return GDN_N_PARAMS;
}

/* As fla: the projections are plain linears (hy_init_linear), o_proj the output projection
 * (hy_init_output_linear); the convs PyTorch's Conv1d default U(±1/sqrt(K)) (fan_in = K, depthwise);
 * A = U(0, 16] and A_log = log A; dt log-uniform in [0.001, 0.1] floored at 1e-4, stored as
 * dt_bias = dt + log(−expm1(−dt)) (inverse softplus); o_norm.weight = 1. */
static void gdn_init(hy_layer *L, hy_rng *rng) {
    gdn_geom g = gdn_geom_of(&L->opts, L->d_model);
    hy_init_linear(L->p[P_Q], NULL, g.nqk, g.d, rng);
    hy_init_linear(L->p[P_K], NULL, g.nqk, g.d, rng);
    hy_init_linear(L->p[P_V], NULL, g.nv, g.d, rng);
    hy_init_linear(L->p[P_G], NULL, g.nv, g.d, rng);
    hy_init_linear(L->p[P_A], NULL, g.HV, g.d, rng);
    hy_init_linear(L->p[P_B], NULL, g.HV, g.d, rng);
    const float cb = 1.0f / sqrtf((float)g.K);
    hy_rng_fill_uniform(rng, L->p[P_QCONV], (size_t)g.nqk * g.K, cb);
    hy_rng_fill_uniform(rng, L->p[P_KCONV], (size_t)g.nqk * g.K, cb);
    hy_rng_fill_uniform(rng, L->p[P_VCONV], (size_t)g.nv * g.K, cb);
    for (int j = 0; j < g.HV; j++) L->p[P_A_LOG][j] = logf(16.0f * (1.0f - hy_rng_uniform(rng)));
    const double lo = log(0.001), hi = log(0.1);
    for (int j = 0; j < g.HV; j++) {
        double dt = exp(hy_rng_uniform(rng) * (hi - lo) + lo);
        if (dt < 1e-4) dt = 1e-4;
        L->p[P_DT_BIAS][j] = (float)(dt + log(-expm1(-dt)));
    }
    for (int c = 0; c < g.dv; c++) L->p[P_ONORM][c] = 1.0f;
    hy_init_output_linear(L, L->p[P_O], NULL, g.d, g.nv, rng);
}

/* ---------------------------------------------------------------- forward core ---- */

static void free_fwd(gdn_fwd *F) {
    hy_buf *b[] = {&F->proj, &F->xpad, &F->pre, &F->xc, &F->qn, &F->kn, &F->qinv, &F->kinv,
                   &F->araw, &F->bg, &F->o, &F->rstd, &F->yg, &F->wT, &F->ws};
    for (size_t i = 0; i < sizeof b / sizeof *b; i++) hy_buf_free(b[i]);
}

/* y (rows, n) = x (rows, d) Wᵀ written into columns [off, off + n) of rows of ld floats. */
static void proj_into(float *y, int ld, int off, const float *x, const float *W, size_t rows, int d, int n) {
    hy_gemm(false, true, (int)rows, n, d, 1.0f, x, d, W, d, 0.0f, y + off, ld);
}

/* out (B, T, d) of u for sequences that start from conv history `hist` (B, K-1, Cx; NULL = zeros)
 * and state S (B, HV, dv, dk; NULL = zeros; updated in place when given). keep: the recurrence keeps
 * what backward needs (the layer's caches). */
static int core_forward(hy_layer *L, gdn_fwd *F, const float *u, float *out, int B, int T, const float *hist,
                        float *S, gdn_priv *keep) {
    gdn_geom g = gdn_geom_of(&L->opts, L->d_model);
    const int Cx = g.Cx, K = g.K, H = g.H, HV = g.HV, dk = g.dk, dv = g.dv;
    const size_t rows = (size_t)B * T;
    if (!hy_buf_grab(&F->proj, rows * g.W) || !hy_buf_grab(&F->xpad, hy_cconv_pad_floats(B, T, Cx, K)) ||
        !hy_buf_grab(&F->pre, rows * Cx) || !hy_buf_grab(&F->xc, rows * Cx) || !hy_buf_grab(&F->qn, rows * g.nqk) ||
        !hy_buf_grab(&F->kn, rows * g.nqk) || !hy_buf_grab(&F->qinv, rows * H) || !hy_buf_grab(&F->kinv, rows * H) ||
        !hy_buf_grab(&F->araw, rows * HV) || !hy_buf_grab(&F->bg, rows * 2 * HV) || !hy_buf_grab(&F->o, rows * g.nv) ||
        !hy_buf_grab(&F->rstd, rows * HV) || !hy_buf_grab(&F->yg, rows * g.nv) || !hy_buf_grab(&F->wT, (size_t)K * Cx))
        return HY_ERR_NOMEM;
    float *proj = F->proj.p, *pre = F->pre.p, *xc = F->xc.p;
    float *const *p = L->p;
    proj_into(proj, g.W, 0, u, p[P_Q], rows, g.d, g.nqk);
    proj_into(proj, g.W, g.nqk, u, p[P_K], rows, g.d, g.nqk);
    proj_into(proj, g.W, 2 * g.nqk, u, p[P_V], rows, g.d, g.nv);
    proj_into(proj, g.W, g.off_g, u, p[P_G], rows, g.d, g.nv);
    proj_into(proj, g.W, g.off_a, u, p[P_A], rows, g.d, HV);
    proj_into(proj, g.W, g.off_b, u, p[P_B], rows, g.d, HV);
    /* xc = silu(the causal convs of q | k | v, with their K-1 rows of history in front) */
    hy_cconv cv = gdn_conv_of(&g, F, B, T);
    hy_cconv_pad(&cv, proj, g.W, hist);
    const hy_cconv_weight cw = gdn_conv_weight(&g, p);
    hy_cconv_set_weight(&cv, &cw);
    hy_cconv_forward(&cv, NULL, pre, xc);
    /* q, k normalised per head */
    const float qscale = 1.0f / sqrtf((float)dk);
    #pragma omp parallel for schedule(static) if (rows * Cx > GDN_PAR_MIN)
    for (long r = 0; r < (long)rows; r++) {
        const float *o = xc + (size_t)r * Cx;
        for (int h = 0; h < 2 * H; h++) {
            const float *x = o + (size_t)h * dk;
            float ss = 0;
            for (int c = 0; c < dk; c++) ss += x[c] * x[c];
            float inv = 1.0f / sqrtf(ss + 1e-6f);
            bool isq = h < H;
            float *dst = (isq ? F->qn.p : F->kn.p) + (size_t)r * g.nqk + (size_t)(isq ? h : h - H) * dk;
            float f = isq ? inv * qscale : inv;
            for (int c = 0; c < dk; c++) dst[c] = x[c] * f;
            (isq ? F->qinv.p : F->kinv.p)[(size_t)r * H + (isq ? h : h - H)] = inv;
        }
    }
    /* β = sigmoid(b);  g = −exp(A_log)·softplus(a + dt_bias) */
    float *araw = F->araw.p, *bg = F->bg.p;
    for (size_t r = 0; r < rows; r++)
        for (int j = 0; j < HV; j++) araw[r * HV + j] = proj[r * g.W + g.off_a + j] + p[P_DT_BIAS][j];
    hy_softplus_array(F->rstd.p, araw, rows * HV);   /* (rstd as scratch until o_norm) */
    for (size_t r = 0; r < rows; r++)
        for (int j = 0; j < HV; j++) {
            bg[r * 2 * HV + j] = hy_sigmoidf(proj[r * g.W + g.off_b + j]);
            bg[r * 2 * HV + HV + j] = -expf(p[P_A_LOG][j]) * F->rstd.p[r * HV + j];
        }
    /* the gated delta rule */
    hy_gdn_in in = {B, T, H, HV, dk, dv, HY_GDN_CHUNK, F->qn.p, F->kn.p, xc + 2 * g.nqk, bg, bg + HV, g.nqk, Cx, 2 * HV};
    int rc;
    if (T == 1 && S && !keep) rc = hy_gdn_step(&in, S, F->o.p, g.nv);
    else {
        hy_gdn_keep kp = {0};
        if (keep) {
            const size_t heads = (size_t)B * HV, nck = (size_t)hy_gdn_nckpt(T, HY_GDN_CHUNK);
            if (!hy_buf_grab(&keep->u_keep, rows * g.nv) || !hy_buf_grab(&keep->ckpt, heads * nck * dv * dk))
                return HY_ERR_NOMEM;
            kp = (hy_gdn_keep){keep->u_keep.p, keep->ckpt.p};
        }
        rc = hy_gdn_forward(&in, S, F->o.p, g.nv, keep ? &kp : NULL, &F->ws);
    }
    if (rc < 0) return rc;
    /* o_norm per value head, then the gate, then o_proj */
    const float *ow = p[P_ONORM], *o = F->o.p;
    float *rstd = F->rstd.p, *yg = F->yg.p;
    #pragma omp parallel for schedule(static) if (rows * g.nv > GDN_PAR_MIN)
    for (long r = 0; r < (long)rows; r++)
        for (int j = 0; j < HV; j++) {
            const float *x = o + (size_t)r * g.nv + (size_t)j * dv, *z = proj + (size_t)r * g.W + g.off_g + (size_t)j * dv;
            float *y = yg + (size_t)r * g.nv + (size_t)j * dv, ss = 0;
            for (int c = 0; c < dv; c++) ss += x[c] * x[c];
            float rs = 1.0f / sqrtf(ss / dv + 1e-5f);
            rstd[(size_t)r * HV + j] = rs;
            for (int c = 0; c < dv; c++) y[c] = x[c] * rs * ow[c] * hy_siluf(z[c]);
        }
    hy_linear_forward(out, yg, p[P_O], NULL, (int)rows, g.nv, g.d);
    return 0;
}

static gdn_priv *priv_of(hy_layer *L) {
    if (!L->priv) L->priv = hy_calloc(sizeof(gdn_priv));
    return L->priv;
}

/* Training / inference forward from zero state; keeps what backward needs when asked. */
static int gdn_forward(hy_layer *L, const float *x, float *y, int B, int T) {
    gdn_priv *P = priv_of(L);
    if (!P) return HY_ERR_NOMEM;
    P->have_fwd = false;
    if (B <= 0 || T <= 0) return 0;
    int rc = core_forward(L, &P->F, x, y, B, T, NULL, NULL, L->keep_for_backward ? P : NULL);
    if (rc < 0) return rc;
    P->x = x, P->B = B, P->T = T, P->have_fwd = L->keep_for_backward;
    return 0;
}

/* ---------------------------------------------------------------- streaming ---- */

/* Zero state for B sequences: conv history (B, K-1, Cx) and S (B, HV, dv, dk). */
static int gdn_state_new(hy_layer *L, int B, void **state) {
    gdn_geom g = gdn_geom_of(&L->opts, L->d_model);
    gdn_state *s = hy_calloc(sizeof *s);
    if (!s) return HY_ERR_NOMEM;
    s->B = B;
    s->conv = hy_calloc((size_t)B * (g.K - 1) * g.Cx * sizeof(float) + sizeof(float));
    s->S = hy_calloc((size_t)B * g.HV * g.dv * g.dk * sizeof(float));
    if (!s->conv || !s->S) {
        hy_free(s->conv), hy_free(s->S), hy_free(s);
        return HY_ERR_NOMEM;
    }
    *state = s;
    return 0;
}

static void gdn_state_free(hy_layer *L, void *state) {
    (void)L;
    gdn_state *s = state;
    if (!s) return;
    hy_free(s->conv), hy_free(s->S);
    free_fwd(&s->F);
    hy_free(s);
}

/* T tokens per sequence from the state: the forward core with the state's conv history and S
 * (updated in place), then the last K-1 conv inputs become the new history. */
static int gdn_prefill(hy_layer *L, void *state, const float *x, float *y, int B, int T) {
    gdn_state *s = state;
    if (B != s->B) return hy_fail("gated_deltanet: state holds %d sequences, got %d", s->B, B);
    if (T <= 0) return 0;
    gdn_geom g = gdn_geom_of(&L->opts, L->d_model);
    int rc = core_forward(L, &s->F, x, y, B, T, s->conv, s->S, NULL);
    if (rc < 0) return rc;
    hy_cconv cv = gdn_conv_of(&g, &s->F, B, T);
    hy_cconv_keep_history(&cv, s->conv);
    return 0;
}

static int gdn_step(hy_layer *L, void *state, const float *x, float *y, int B) {
    return gdn_prefill(L, state, x, y, B, 1);
}

/* ---------------------------------------------------------------- saving a state ---- */

/* Four tensors in fla's layouts: "q_conv", "k_conv" (B, H·dk, K-1) and "v_conv" (B, HV·dv, K-1), the
 * last K-1 inputs of each conv per channel, oldest first; "recurrent" (B, HV, dv, dk), S per value
 * head in the SPEC's layout (row = value index). One list for state_tensors and state_import. */
static void gdn_tensors_of(hy_layer *L, int B, hy_state_tensor *out) {
    gdn_geom g = gdn_geom_of(&L->opts, L->d_model);
    out[0] = (hy_state_tensor){"q_conv", 3, {B, g.nqk, g.K - 1}};
    out[1] = (hy_state_tensor){"k_conv", 3, {B, g.nqk, g.K - 1}};
    out[2] = (hy_state_tensor){"v_conv", 3, {B, g.nv, g.K - 1}};
    out[3] = (hy_state_tensor){"recurrent", 4, {B, g.HV, g.dv, g.dk}};
}

static int gdn_state_tensors(hy_layer *L, const void *state, hy_state_tensor *out) {
    if (out) gdn_tensors_of(L, ((const gdn_state *)state)->B, out);
    return 4;
}

/* First channel and width of conv tensor i (0 q, 1 k, 2 v) within the Cx conv channels. */
static void conv_span(const gdn_geom *g, int i, int *c0, int *n) {
    *c0 = i == 0 ? 0 : i == 1 ? g->nqk : 2 * g->nqk;
    *n = i == 2 ? g->nv : g->nqk;
}

/* Copies tensor i out of the state: a conv history transposed from (B, K-1, Cx) to (B, channels,
 * K-1), or S as it is. */
static int gdn_state_export(hy_layer *L, const void *state, int i, float *dst) {
    const gdn_state *s = state;
    gdn_geom g = gdn_geom_of(&L->opts, L->d_model);
    if (i == 3) {
        memcpy(dst, s->S, (size_t)s->B * g.HV * g.dv * g.dk * sizeof(float));
        return 0;
    }
    if (i < 0 || i > 3) return hy_fail("gated_deltanet: no state tensor %d", i);
    int c0, n;
    conv_span(&g, i, &c0, &n);
    hy_cconv_history_export(dst, s->conv, s->B, g.Cx, g.K, c0, n);
    return 0;
}

/* Refills a fresh state from the four tensors, all checked against the options and the state's B
 * (hy_state_match) before anything is copied. */
static int gdn_state_import(hy_layer *L, void *state, int n, const hy_state_tensor *t, const float *const *data) {
    gdn_state *s = state;
    gdn_geom g = gdn_geom_of(&L->opts, L->d_model);
    hy_state_tensor want[4];
    int idx[4];
    gdn_tensors_of(L, s->B, want);
    int rc = hy_state_match("gated_deltanet", n, t, 4, want, idx);
    if (rc < 0) return rc;
    for (int i = 0; i < 3; i++) {
        int c0, w;
        conv_span(&g, i, &c0, &w);
        hy_cconv_history_import(s->conv, data[idx[i]], s->B, g.Cx, g.K, c0, w);
    }
    memcpy(s->S, data[idx[3]], (size_t)s->B * g.HV * g.dv * g.dk * sizeof(float));
    return 0;
}

/* ---------------------------------------------------------------- accounting ---- */

/* Constant in T: (K-1)·Cx conv inputs and HV·dv·dk state, fp32. */
static size_t gdn_state_bytes(const hy_opts *o, int d, int T) {
    (void)T;
    gdn_geom g = gdn_geom_of(o, d);
    return ((size_t)(g.K - 1) * g.Cx + (size_t)g.HV * g.dv * g.dk) * sizeof(float);
}

/* Forward FLOPs of one sequence (multiply-add = 2): per token the projections 2d·(2·H·dk + 2·HV·dv +
 * 2·HV) and o_proj 2·HV·dv·d, the convs 2K·Cx, plus the chunked gated delta rule of HV heads at the
 * block's chunk length (hy_gdn_flop). Norms, gates and exps are not counted. */
static double gdn_flop(const hy_opts *o, int d, int T) {
    gdn_geom g = gdn_geom_of(o, d);
    double per_token = 2.0 * d * (2.0 * g.nqk + 2.0 * g.nv + 2.0 * g.HV) + 2.0 * g.nv * d + 2.0 * g.K * g.Cx;
    return T * per_token + g.HV * hy_gdn_flop(T, g.dk, g.dv, HY_GDN_CHUNK);
}

/* Training memory, all kept in the layer: the forward's buffers (proj, xpad, pre, xc, qn, kn, qinv,
 * kinv, araw, bg, o, rstd, yg, wT), what the recurrence keeps (U and the state entering every other chunk),
 * the backward's buffers (dyg, dout, dproj, dxc, dqn, dkn, dbg, tmp) and the recurrence's workspace,
 * grown to the larger of its forward and backward sizes. */
static hy_train_bytes gdn_train_bytes(const hy_opts *o, int d, int B, int T, int threads, bool first) {
    (void)first;
    gdn_geom g = gdn_geom_of(o, d);
    const int L = HY_GDN_CHUNK, nck = hy_gdn_nckpt(T, L);
    const double rows = (double)B * T, heads = (double)B * g.HV;
    double fwd = rows * g.W + (double)B * (T + g.K - 1) * g.Cx + 2 * rows * g.Cx + 2 * rows * g.nqk + 2 * rows * g.H +
                 4 * rows * g.HV + 2 * rows * g.nv + (double)g.K * g.Cx;
    double keep = rows * g.nv + heads * nck * g.dv * g.dk;
    double bwd = 2 * rows * g.nv + rows * g.W + rows * g.Cx + 2 * rows * g.nqk + 2 * rows * g.HV +
                 rows * (g.nv > 2 * g.HV ? g.nv : 2 * g.HV);
    double wf = (double)hy_gdn_forward_ws_floats(g.dk, g.dv, L, threads),
           wb = (double)hy_gdn_backward_ws_floats(B, T, g.H, g.HV, g.dk, g.dv, L, threads);
    return (hy_train_bytes){(fwd + keep + bwd + (wf > wb ? wf : wb)) * sizeof(float) + sizeof(gdn_priv), 0};
}

static void gdn_destroy(hy_layer *L) {
    gdn_priv *P = L->priv;
    if (!P) return;
    free_fwd(&P->F);
    hy_buf *b[] = {&P->u_keep, &P->ckpt, &P->dyg, &P->dout, &P->dproj, &P->dxc, &P->dqn, &P->dkn, &P->dbg, &P->tmp};
    for (size_t i = 0; i < sizeof b / sizeof *b; i++) hy_buf_free(b[i]);
    hy_free(P);
    L->priv = NULL;
}

const hy_block_ops hy_block_gated_deltanet = {
    .name = "gated_deltanet",
    .kinds = HY_KIND_MIXER,
    .summary = "Gated DeltaNet (fla parameterization): gated delta rule, chunked WY/UT form, short convs, streaming state",
    .opts = gdn_opts,
    .n_opts = GDN_N_OPTS,
    .resolve = gdn_resolve,
    .param_specs = gdn_param_specs,
    .init = gdn_init,
    .forward = gdn_forward,
    .backward = hy_gdn_block_backward,
    .state_new = gdn_state_new,
    .step = gdn_step,
    .prefill = gdn_prefill,
    .state_free = gdn_state_free,
    .state_bytes = gdn_state_bytes,
    .flop = gdn_flop,
    .train_bytes = gdn_train_bytes,
    .destroy = gdn_destroy,
    .state_tensors = gdn_state_tensors,
    .state_export = gdn_state_export,
    .state_import = gdn_state_import,
};

/* mamba2 — the Mamba-2 / SSD mixer (SPEC §2, mamba_ssm's `Mamba2` parameterization):
 *   [z ; xBC ; dt] = in_proj u;  xBC = silu(causal depthwise conv1d(xBC) + bias);  [x ; B ; C] = xBC
 *   Δ = softplus(dt + dt_bias);  y = SSD(x, Δ, A = -exp(A_log), B, C) + D ⊙ x   (per head)
 *   y = y ⊙ silu(z);  y = groupwise rmsnorm(y) ⊙ norm.weight;  out = out_proj y
 * Every projection is a GEMM over all B·T rows; the gates, softplus and norm are loops over
 * contiguous channels; the conv (with its silu) is layers/common/causal_conv.c, the SSD
 * layers/mamba2/ssd.c (chunked, GEMMs per chunk).
 *
 * Layouts (rows = b·T + t): zx (rows, W) as in_proj writes it, W = 2E + 2GN + H: z = columns
 * 0..E-1, xBC = E..E+Cx-1 (Cx = E + 2GN), dt = the last H; xpad (B, K-1+T, Cx): per sequence the
 * K-1 conv inputs before t = 0 (zeros, or the streaming state) then xBC; pre, xbc (rows, Cx);
 * draw, delta (rows, H); ys (SSD output + D skip), yg (gated), yn (normalised) (rows, E); rstd
 * (rows, G). One forward core serves training (zero history, chunk states kept for backward),
 * inference and prefill/step (history and SSM state from the streaming state). */
#include "layers/mamba2/mamba2.h"
#include "core/error.h"
#include "core/gemm.h"
#include "core/mem.h"
#include "core/vmath.h"
#include "layers/common/causal_conv.h"
#include "layers/mamba2/ssd.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

enum {
    OPT_D_STATE, OPT_D_CONV, OPT_EXPAND, OPT_HEADDIM, OPT_NGROUPS, OPT_DT_MIN, OPT_DT_MAX, OPT_DT_FLOOR, OPT_A_MIN,
    OPT_A_MAX, N_OPTS
};
static const hy_opt_spec mamba2_opts[] = {
    {"d_state", HY_OPT_INT, 64, 1, 1024, 0, "SSM state size N per head (upstream's default is 128)"},
    {"d_conv", HY_OPT_INT, 4, 1, 64, 0, "width K of the causal depthwise convolution over x, B and C"},
    {"expand", HY_OPT_INT, 2, 1, 64, 0, "inner width E = expand * d_model"},
    {"headdim", HY_OPT_INT, 64, 1, 1 << 16, 0, "head size P; must divide E; H = E / P heads"},
    {"ngroups", HY_OPT_INT, 1, 1, 1 << 16, 0, "groups G of B and C (and of the output norm); must divide H"},
    {"dt_min", HY_OPT_FLOAT, 0.001, 0, 1e3, 0, "init: smallest step size Δ (log-uniform in [dt_min, dt_max]); > 0"},
    {"dt_max", HY_OPT_FLOAT, 0.1, 0, 1e3, 0, "init: largest step size Δ; >= dt_min"},
    {"dt_init_floor", HY_OPT_FLOAT, 1e-4, 0, 1e3, 0, "init: Δ is floored at this value"},
    {"A_init_min", HY_OPT_FLOAT, 1, 0, 1e6, 0, "init: A_log = log U(A_init_min, A_init_max); > 0"},
    {"A_init_max", HY_OPT_FLOAT, 16, 0, 1e6, 0, "init: upper end of A's uniform range; >= A_init_min"},
};

enum { P_IN, P_CONV_W, P_CONV_B, P_DT_BIAS, P_A_LOG, P_D, P_NORM, P_OUT, N_PARAMS };

typedef struct {
    int d, E, N, K, P, H, G, GN, Cx, W;   /* W = 2E + 2GN + H, in_proj's output width */
} geom;

static geom geom_of(const hy_opts *o, int d) {
    geom g = {.d = d, .E = hy_opt_int(o, OPT_EXPAND) * d, .N = hy_opt_int(o, OPT_D_STATE), .K = hy_opt_int(o, OPT_D_CONV),
              .P = hy_opt_int(o, OPT_HEADDIM), .G = hy_opt_int(o, OPT_NGROUPS)};
    g.H = g.E / g.P;
    g.GN = g.G * g.N;
    g.Cx = g.E + 2 * g.GN;
    g.W = g.E + g.Cx + g.H;
    return g;
}

/* The forward's buffers (one set for training in the layer, one per streaming state). */
typedef struct {
    hy_buf zx, xpad, pre, xbc, draw, delta, ys, yg, rstd, yn, A, wT, states, ssd_ws;
} fwd_bufs;

typedef struct {
    fwd_bufs F;
    const float *u;            /* input of the kept forward (owned by the caller) */
    int B, T;
    bool have_fwd;
    hy_buf dyn, dzx, dxbc, ddelta, dA, ssd_ws;
} mamba2_priv;

typedef struct {
    int B;
    float *conv;   /* (B, K-1, Cx): the last K-1 conv inputs */
    float *ssm;    /* (B, H, P, N) */
    fwd_bufs F;
} mamba2_state;

/* ---------------------------------------------------------------- options, params, init ---- */

/* Writes the message, names the option, returns HY_ERR_CONFIG. */
static int bad(int *bad_opt, int which, char *msg, size_t msg_len, const char *fmt, double a, double b, double c) {
    *bad_opt = which;
    snprintf(msg, msg_len, fmt, a, b, c);
    return HY_ERR_CONFIG;
}

/* headdim divides E = expand·d; ngroups divides H; dt and A init ranges ordered and positive. */
static int mamba2_resolve(hy_opts *o, int d, int *bad_opt, char *msg, size_t msg_len) {
    const int E = hy_opt_int(o, OPT_EXPAND) * d, P = hy_opt_int(o, OPT_HEADDIM), G = hy_opt_int(o, OPT_NGROUPS);
    if (E % P)
        return bad(bad_opt, OPT_HEADDIM, msg, msg_len,
                   "headdim = %g must divide the inner width expand * d_model = %g (d_model %g)", P, E, d);
    if ((E / P) % G)
        return bad(bad_opt, OPT_NGROUPS, msg, msg_len,
                   "ngroups = %g must divide the number of heads expand * d_model / headdim = %g (headdim %g)", G, E / P,
                   P);
    if (!(o->v[OPT_DT_MIN] > 0))
        return bad(bad_opt, OPT_DT_MIN, msg, msg_len, "dt_min = %g must be > 0", o->v[OPT_DT_MIN], 0, 0);
    if (o->v[OPT_DT_MAX] < o->v[OPT_DT_MIN])
        return bad(bad_opt, OPT_DT_MAX, msg, msg_len, "dt_max = %g must be >= dt_min = %g", o->v[OPT_DT_MAX],
                   o->v[OPT_DT_MIN], 0);
    if (!(o->v[OPT_A_MIN] > 0))
        return bad(bad_opt, OPT_A_MIN, msg, msg_len, "A_init_min = %g must be > 0 (A_log = log A)", o->v[OPT_A_MIN], 0, 0);
    if (o->v[OPT_A_MAX] < o->v[OPT_A_MIN])
        return bad(bad_opt, OPT_A_MAX, msg, msg_len, "A_init_max = %g must be >= A_init_min = %g", o->v[OPT_A_MAX],
                   o->v[OPT_A_MIN], 0);
    return 0;
}

/* SPEC §2 names and shapes; A_log, D and dt_bias are never weight-decayed (upstream's
 * _no_weight_decay). */
static int mamba2_param_specs(const hy_opts *o, int d, hy_param_spec *out) {
    geom g = geom_of(o, d);
    if (out) {
        out[P_IN] = (hy_param_spec){"in_proj.weight", 2, {g.W, d}, 0};
        out[P_CONV_W] = (hy_param_spec){"conv1d.weight", 3, {g.Cx, 1, g.K}, 0};
        out[P_CONV_B] = (hy_param_spec){"conv1d.bias", 1, {g.Cx}, 0};
        out[P_DT_BIAS] = (hy_param_spec){"dt_bias", 1, {g.H}, HY_PARAM_NO_DECAY};
        out[P_A_LOG] = (hy_param_spec){"A_log", 1, {g.H}, HY_PARAM_NO_DECAY};
        out[P_D] = (hy_param_spec){"D", 1, {g.H}, HY_PARAM_NO_DECAY};
        out[P_NORM] = (hy_param_spec){"norm.weight", 1, {g.E}, 0};
        out[P_OUT] = (hy_param_spec){"out_proj.weight", 2, {d, g.E}, 0};
    }
    return N_PARAMS;
}

/* in_proj a plain linear, out_proj the output projection (hy_init_output_linear); as mamba_ssm's
 * Mamba2: the depthwise conv weight and bias U(±1/sqrt(K)) (PyTorch's Conv1d default, fan_in = K);
 * Δ log-uniform in [dt_min, dt_max] floored at dt_init_floor, stored as dt_bias = Δ +
 * log(-expm1(-Δ)) (inverse softplus); A_log = log U(A_init_min, A_init_max); D = 1; norm = 1. */
static void mamba2_init(hy_layer *L, hy_rng *rng) {
    geom g = geom_of(&L->opts, L->d_model);
    const hy_opts *o = &L->opts;
    hy_init_linear(L->p[P_IN], NULL, g.W, g.d, rng);
    hy_rng_fill_uniform(rng, L->p[P_CONV_W], (size_t)g.Cx * g.K, 1.0f / sqrtf((float)g.K));
    hy_rng_fill_uniform(rng, L->p[P_CONV_B], (size_t)g.Cx, 1.0f / sqrtf((float)g.K));
    double lo = log(o->v[OPT_DT_MIN]), hi = log(o->v[OPT_DT_MAX]);
    for (int h = 0; h < g.H; h++) {
        double dt = exp(hy_rng_uniform(rng) * (hi - lo) + lo);
        if (dt < o->v[OPT_DT_FLOOR]) dt = o->v[OPT_DT_FLOOR];
        L->p[P_DT_BIAS][h] = (float)(dt + log(-expm1(-dt)));
    }
    double amin = o->v[OPT_A_MIN], amax = o->v[OPT_A_MAX];
    for (int h = 0; h < g.H; h++) L->p[P_A_LOG][h] = (float)log(amin + hy_rng_uniform(rng) * (amax - amin));
    for (int h = 0; h < g.H; h++) L->p[P_D][h] = 1.0f;
    for (int c = 0; c < g.E; c++) L->p[P_NORM][c] = 1.0f;
    hy_init_output_linear(L, L->p[P_OUT], NULL, g.d, g.E, rng);
}

/* ---------------------------------------------------------------- helpers ---- */

static void free_fwd(fwd_bufs *F) {
    hy_buf *b[] = {&F->zx, &F->xpad, &F->pre, &F->xbc, &F->draw, &F->delta, &F->ys, &F->yg,
                   &F->rstd, &F->yn, &F->A, &F->wT, &F->states, &F->ssd_ws};
    for (size_t i = 0; i < sizeof b / sizeof *b; i++) hy_buf_free(b[i]);
}


/* The SSD's arguments over the conv output xbc (x, B, C column slices) and Δ. */
static hy_ssd_args ssd_args(const geom *g, const fwd_bufs *F, int B, int T, float *ssm) {
    const float *xbc = F->xbc.p;
    return (hy_ssd_args){.B = B, .T = T, .H = g->H, .P = g->P, .N = g->N, .G = g->G, .x = xbc, .ldx = g->Cx,
                         .dt = F->delta.p, .lddt = g->H, .Bm = xbc + g->E, .Cm = xbc + g->E + g->GN, .ldbc = g->Cx,
                         .A = F->A.p, .s0 = ssm, .s_out = ssm, .chunk = HY_MAMBA2_CHUNK, .states = F->states.p};
}

/* The conv over xBC (Cx channels) on the forward's xpad and wT. */
static hy_cconv conv_of(const geom *g, fwd_bufs *F, int B, int T) {
    return (hy_cconv){B, T, g->Cx, g->K, F->xpad.p, F->wT.p};
}

/* ---------------------------------------------------------------- forward core ---- */

/* out (B, T, d) of u for sequences that start from conv history `hist` (B, K-1, Cx; NULL = zeros)
 * and SSM state `ssm` (B, H, P, N; NULL = zeros; updated in place when given). keep: the kept
 * activations and chunk states are those backward reads. A single token from a state (a decode
 * step) runs the recurrence itself (hy_ssd_scan); everything else the chunked SSD. */
static int core_forward(hy_layer *L, fwd_bufs *F, const float *u, float *out, int B, int T, const float *hist,
                        float *ssm, bool keep) {
    geom g = geom_of(&L->opts, L->d_model);
    const int E = g.E, K = g.K, Cx = g.Cx, H = g.H, P = g.P, Eg = E / g.G;
    const size_t rows = (size_t)B * T, nE = rows * E;
    const bool scan = !keep && T == 1 && ssm;
    if (!hy_buf_grab(&F->zx, rows * g.W) || !hy_buf_grab(&F->xpad, hy_cconv_pad_floats(B, T, Cx, K)) ||
        !hy_buf_grab(&F->pre, rows * Cx) || !hy_buf_grab(&F->xbc, rows * Cx) || !hy_buf_grab(&F->draw, rows * H) ||
        !hy_buf_grab(&F->delta, rows * H) || !hy_buf_grab(&F->ys, nE) || !hy_buf_grab(&F->yg, nE) ||
        !hy_buf_grab(&F->rstd, rows * g.G) || !hy_buf_grab(&F->yn, nE) || !hy_buf_grab(&F->A, (size_t)H) ||
        !hy_buf_grab(&F->wT, (size_t)K * Cx) ||
        (keep && !hy_buf_grab(&F->states, hy_ssd_state_floats(B, T, H, P, g.N, HY_MAMBA2_CHUNK))))
        return HY_ERR_NOMEM;
    float *zx = F->zx.p, *xbc = F->xbc.p;
    hy_linear_forward(zx, u, L->p[P_IN], NULL, (int)rows, g.d, g.W);
    /* xbc = silu(causal conv of xBC with its K-1 rows of history in front) */
    hy_cconv cv = conv_of(&g, F, B, T);
    hy_cconv_pad(&cv, zx + E, g.W, hist);
    hy_cconv_set_weight(&cv, &(hy_cconv_weight){1, {Cx}, {L->p[P_CONV_W]}});
    hy_cconv_forward(&cv, L->p[P_CONV_B], F->pre.p, xbc);
    /* Δ = softplus(dt + dt_bias); A = -exp(A_log) */
    float *draw = F->draw.p;
    const float *dtb = L->p[P_DT_BIAS];
    for (size_t r = 0; r < rows; r++)
        for (int h = 0; h < H; h++) draw[r * H + h] = zx[r * g.W + E + Cx + h] + dtb[h];
    hy_softplus_array(F->delta.p, draw, rows * H);
    for (int h = 0; h < H; h++) F->A.p[h] = -expf(L->p[P_A_LOG][h]);
    hy_ssd_args a = ssd_args(&g, F, B, T, ssm);
    if (!keep) a.states = NULL;
    int rc = scan ? hy_ssd_scan(&a, F->ys.p, E) : hy_ssd_forward(&a, F->ys.p, E, &F->ssd_ws);
    if (rc < 0) return rc;
    /* + D x, gate with silu(z), then the group rmsnorm */
    float *ys = F->ys.p, *yg = F->yg.p, *yn = F->yn.p, *rstd = F->rstd.p;
    const float *Dp = L->p[P_D], *nw = L->p[P_NORM];
    #pragma omp parallel for schedule(static) if (nE > 16384)
    for (long r = 0; r < (long)rows; r++) {
        const float *restrict z = zx + (size_t)r * g.W, *restrict x = xbc + (size_t)r * Cx;
        float *restrict y = ys + (size_t)r * E, *restrict o = yg + (size_t)r * E, *restrict n = yn + (size_t)r * E;
        for (int h = 0; h < H; h++)
            for (int p = 0; p < P; p++) y[h * P + p] += Dp[h] * x[h * P + p];
        for (int c = 0; c < E; c++) o[c] = y[c] * hy_siluf(z[c]);
        for (int gi = 0; gi < g.G; gi++) {
            const float *og = o + (size_t)gi * Eg;
            float ss = 0;
            for (int c = 0; c < Eg; c++) ss += og[c] * og[c];
            float rs = 1.0f / sqrtf(ss / Eg + 1e-5f);
            rstd[(size_t)r * g.G + gi] = rs;
            for (int c = gi * Eg; c < (gi + 1) * Eg; c++) n[c] = o[c] * rs * nw[c];
        }
    }
    hy_linear_forward(out, yn, L->p[P_OUT], NULL, (int)rows, E, g.d);
    return 0;
}

static mamba2_priv *priv_of(hy_layer *L) {
    if (!L->priv) L->priv = hy_calloc(sizeof(mamba2_priv));
    return L->priv;
}

/* Training / inference forward from zero state; keeps what backward needs when asked. */
static int mamba2_forward(hy_layer *L, const float *x, float *y, int B, int T) {
    mamba2_priv *P = priv_of(L);
    if (!P) return HY_ERR_NOMEM;
    P->have_fwd = false;
    if (B <= 0 || T <= 0) return 0;
    int rc = core_forward(L, &P->F, x, y, B, T, NULL, NULL, L->keep_for_backward);
    if (rc < 0) return rc;
    P->u = x, P->B = B, P->T = T, P->have_fwd = L->keep_for_backward;
    return 0;
}

/* ---------------------------------------------------------------- backward ---- */

/* Backward of mamba2_forward: out_proj, norm, gate, D, the SSD (chunked), softplus, silu, conv,
 * in_proj, in that order; parameter gradients accumulated. */
static int mamba2_backward(hy_layer *L, const float *dy, float *dx, int B, int T) {
    mamba2_priv *P = L->priv;
    if (B <= 0 || T <= 0) return 0;
    if (!P || !P->have_fwd || P->B != B || P->T != T)
        return hy_fail("mamba2: backward without a matching forward (keep_for_backward)");
    geom g = geom_of(&L->opts, L->d_model);
    fwd_bufs *F = &P->F;
    const int E = g.E, Cx = g.Cx, H = g.H, Hp = g.P, Eg = E / g.G;
    const size_t rows = (size_t)B * T, nE = rows * E;
    if (!hy_buf_grab(&P->dyn, nE) || !hy_buf_grab(&P->dzx, rows * g.W) || !hy_buf_grab(&P->dxbc, rows * Cx) ||
        !hy_buf_grab(&P->ddelta, rows * H) || !hy_buf_grab(&P->dA, (size_t)H))
        return HY_ERR_NOMEM;
    float *dyn = P->dyn.p, *dzx = P->dzx.p, *dxbc = P->dxbc.p, *ddelta = P->ddelta.p;
    const float *zx = F->zx.p, *ys = F->ys.p, *yg = F->yg.p, *rstd = F->rstd.p, *xbc = F->xbc.p, *nw = L->p[P_NORM];
    /* out_proj: dyn = dy W_out, dW_out += dyᵀ yn */
    hy_linear_backward(dyn, L->g[P_OUT], NULL, dy, F->yn.p, L->p[P_OUT], (int)rows, E, g.d, false);
    /* norm weight: Σ_rows dyn · yg · rstd, column blocks in row order */
    {
        int nb = (E + 63) / 64;
        float *gw = L->g[P_NORM];
        #pragma omp parallel for schedule(static) if (nE > 65536)
        for (int k = 0; k < nb; k++) {
            int c0 = k * 64, c1 = c0 + 64 < E ? c0 + 64 : E;
            float acc[64] = {0};
            for (size_t r = 0; r < rows; r++) {
                /* a group's columns at a time with its rstd as a scalar, the columns independent (each
                 * acc in row order): gcc 12 vectorizes this inside the parallel region only so */
                const float *restrict gr = dyn + r * E, *restrict yr = yg + r * E;
                for (int gi = c0 / Eg; gi * Eg < c1; gi++) {
                    const float rs = rstd[r * g.G + gi];
                    const int a0 = gi * Eg > c0 ? gi * Eg : c0, a1 = (gi + 1) * Eg < c1 ? (gi + 1) * Eg : c1;
                    #pragma omp simd
                    for (int c = a0; c < a1; c++) acc[c - c0] += gr[c] * yr[c] * rs;
                }
            }
            for (int c = c0; c < c1; c++) gw[c] += acc[c - c0];
        }
    }
    /* norm, then gate: d yg = r·(w·dyn) - r³·yg·Σ(w·dyn·yg)/n per group; dz = dyg · y · silu'(z)
     * into dzx's z columns; dyn becomes d(y + D x) = dyg · silu(z) */
    #pragma omp parallel for schedule(static) if (nE > 16384)
    for (long r = 0; r < (long)rows; r++) {
        const float *restrict z = zx + (size_t)r * g.W, *restrict y = ys + (size_t)r * E, *restrict o = yg + (size_t)r * E;
        float *restrict gy = dyn + (size_t)r * E, *restrict dz = dzx + (size_t)r * g.W;
        for (int gi = 0; gi < g.G; gi++) {
            const int c0 = gi * Eg;
            const float rs = rstd[(size_t)r * g.G + gi];
            float s = 0;
            for (int c = c0; c < c0 + Eg; c++) s += nw[c] * gy[c] * o[c];
            const float k3 = rs * rs * rs * s / Eg;
            for (int c = c0; c < c0 + Eg; c++) gy[c] = rs * nw[c] * gy[c] - k3 * o[c];
        }
        for (int c = 0; c < E; c++) {
            float sg = hy_sigmoidf(z[c]);
            dz[c] = gy[c] * y[c] * sg * (1.0f + z[c] * (1.0f - sg));
            gy[c] *= z[c] * sg;
        }
    }
    /* D: dD[h] += Σ dy·x over the head's columns, each head in row order */
    float *gD = L->g[P_D];
    #pragma omp parallel for schedule(static) if (nE > 65536)
    for (int h = 0; h < H; h++) {
        double s = 0;
        for (size_t r = 0; r < rows; r++) {
            const float *restrict gy = dyn + r * E + (size_t)h * Hp, *restrict x = xbc + r * Cx + (size_t)h * Hp;
            float t = 0;
            for (int p = 0; p < Hp; p++) t += gy[p] * x[p];
            s += t;
        }
        gD[h] += (float)s;
    }
    /* the SSD: dx, dB, dC into dxbc, dΔ; dA → dA_log = dA ⊙ A; then + D dy into dx */
    memset(P->dA.p, 0, (size_t)H * sizeof(float));
    hy_ssd_args a = ssd_args(&g, F, B, T, NULL);
    int rc = hy_ssd_backward(&a, dyn, E, dxbc, Cx, ddelta, H, dxbc + E, dxbc + E + g.GN, Cx, P->dA.p, NULL, &P->ssd_ws);
    if (rc < 0) return rc;
    for (int h = 0; h < H; h++) L->g[P_A_LOG][h] += P->dA.p[h] * F->A.p[h];
    const float *Dp = L->p[P_D], *draw = F->draw.p;
    #pragma omp parallel for schedule(static) if (nE > 16384)
    for (long r = 0; r < (long)rows; r++) {
        float *restrict o = dxbc + (size_t)r * Cx;
        const float *restrict gy = dyn + (size_t)r * E;
        for (int h = 0; h < H; h++)
            for (int p = 0; p < Hp; p++) o[h * Hp + p] += Dp[h] * gy[h * Hp + p];
        /* softplus: d raw = dΔ · sigmoid(raw), into dzx's dt columns */
        float *restrict ddt = dzx + (size_t)r * g.W + E + Cx;
        for (int h = 0; h < H; h++) ddt[h] = ddelta[(size_t)r * H + h] * hy_sigmoidf(draw[(size_t)r * H + h]);
    }
    hy_colsum_add(L->g[P_DT_BIAS], dzx + E + Cx, rows, H, g.W);
    /* silu and the conv: bias and weight gradients, d xBC into dzx's xBC columns */
    hy_cconv cv = conv_of(&g, F, B, T);
    hy_cconv_backward(&cv, dxbc, F->pre.p, L->g[P_CONV_B], &(hy_cconv_weight){1, {Cx}, {L->g[P_CONV_W]}}, dzx + E,
                      g.W);
    /* in_proj: du = dzx W_in; dW_in += dzxᵀ u */
    hy_linear_backward(dx, L->g[P_IN], NULL, dzx, P->u, L->p[P_IN], (int)rows, g.d, g.W, false);
    return 0;
}

/* ---------------------------------------------------------------- streaming ---- */

/* Zero state for B sequences: conv history (B, K-1, Cx) and SSM state (B, H, P, N). */
static int mamba2_state_new(hy_layer *L, int B, void **state) {
    geom g = geom_of(&L->opts, L->d_model);
    mamba2_state *s = hy_calloc(sizeof *s);
    if (!s) return HY_ERR_NOMEM;
    s->B = B;
    s->conv = hy_calloc(((size_t)B * (g.K - 1) * g.Cx + 1) * sizeof(float));
    s->ssm = hy_calloc((size_t)B * g.H * g.P * g.N * sizeof(float));
    if (!s->conv || !s->ssm) {
        hy_free(s->conv), hy_free(s->ssm), hy_free(s);
        return HY_ERR_NOMEM;
    }
    *state = s;
    return 0;
}

static void mamba2_state_free(hy_layer *L, void *state) {
    (void)L;
    mamba2_state *s = state;
    if (!s) return;
    hy_free(s->conv), hy_free(s->ssm);
    free_fwd(&s->F);
    hy_free(s);
}

/* T tokens per sequence from the state: the forward core with the state's conv history and SSM
 * state (updated in place), then the last K-1 conv inputs become the new history. */
static int mamba2_prefill(hy_layer *L, void *state, const float *x, float *y, int B, int T) {
    mamba2_state *s = state;
    if (B != s->B) return hy_fail("mamba2: state holds %d sequences, got %d", s->B, B);
    if (T <= 0) return 0;
    geom g = geom_of(&L->opts, L->d_model);
    int rc = core_forward(L, &s->F, x, y, B, T, s->conv, s->ssm, false);
    if (rc < 0) return rc;
    hy_cconv cv = conv_of(&g, &s->F, B, T);
    hy_cconv_keep_history(&cv, s->conv);
    return 0;
}

static int mamba2_step(hy_layer *L, void *state, const float *x, float *y, int B) {
    return mamba2_prefill(L, state, x, y, B, 1);
}

/* ---------------------------------------------------------------- saving a state ---- */

/* Two tensors in mamba_ssm's layouts: "conv" (B, Cx, K-1), the last K-1 conv inputs per channel
 * oldest first (conv_state[:, :, 1:] of mamba_ssm's (B, Cx, K) after a step), and "ssm" (B, H, P,
 * N). One list for state_tensors and for the checks of state_import. */
static void mamba2_tensors_of(hy_layer *L, int B, hy_state_tensor *out) {
    geom g = geom_of(&L->opts, L->d_model);
    out[0] = (hy_state_tensor){"conv", 3, {B, g.Cx, g.K - 1}};
    out[1] = (hy_state_tensor){"ssm", 4, {B, g.H, g.P, g.N}};
}

static int mamba2_state_tensors(hy_layer *L, const void *state, hy_state_tensor *out) {
    if (out) mamba2_tensors_of(L, ((const mamba2_state *)state)->B, out);
    return 2;
}

/* Copies "conv" (transposing the (B, K-1, Cx) history to (B, Cx, K-1)) or "ssm" out of the state. */
static int mamba2_state_export(hy_layer *L, const void *state, int i, float *dst) {
    const mamba2_state *s = state;
    geom g = geom_of(&L->opts, L->d_model);
    if (i == 1) {
        memcpy(dst, s->ssm, (size_t)s->B * g.H * g.P * g.N * sizeof(float));
        return 0;
    }
    if (i != 0) return hy_fail("mamba2: no state tensor %d", i);
    hy_cconv_history_export(dst, s->conv, s->B, g.Cx, g.K, 0, g.Cx);
    return 0;
}

/* Refills a fresh state from "conv" (B, Cx, K-1) and "ssm" (B, H, P, N), both checked against the
 * options and the state's B (hy_state_match) before anything is copied. */
static int mamba2_state_import(hy_layer *L, void *state, int n, const hy_state_tensor *t, const float *const *data) {
    mamba2_state *s = state;
    geom g = geom_of(&L->opts, L->d_model);
    hy_state_tensor want[2];
    int idx[2];
    mamba2_tensors_of(L, s->B, want);
    int rc = hy_state_match("mamba2", n, t, 2, want, idx);
    if (rc < 0) return rc;
    hy_cconv_history_import(s->conv, data[idx[0]], s->B, g.Cx, g.K, 0, g.Cx);
    memcpy(s->ssm, data[idx[1]], (size_t)s->B * g.H * g.P * g.N * sizeof(float));
    return 0;
}

/* ---------------------------------------------------------------- accounting ---- */

/* Constant in T: (K-1)·Cx conv inputs and H·P·N SSM states, fp32. */
static size_t mamba2_state_bytes(const hy_opts *o, int d, int T) {
    (void)T;
    geom g = geom_of(o, d);
    return ((size_t)(g.K - 1) * g.Cx + (size_t)g.H * g.P * g.N) * sizeof(float);
}

/* Forward FLOPs of one sequence (multiply-add = 2): per token in_proj 2dW, conv 2K·Cx, out_proj
 * 2dE and 6E elementwise (D skip 2E, gate E, norm 3E), plus the chunked SSD's matrix products
 * (hy_ssd_flop, with the block's chunk). exp, softplus, silu and rsqrt are not counted. */
static double mamba2_flop(const hy_opts *o, int d, int T) {
    geom g = geom_of(o, d);
    double tok = 2.0 * d * g.W + 2.0 * g.K * g.Cx + 2.0 * d * g.E + 6.0 * g.E;
    return (double)T * tok + hy_ssd_flop(T, g.H, g.P, g.N, g.G, HY_MAMBA2_CHUNK);
}

/* Training memory, all kept in the layer: its private struct, the forward's buffers (zx, xpad, pre,
 * xbc, draw, delta, ys, yg, yn, rstd, A, wT, the chunk states and the SSD forward's workspace) and
 * the backward's (dyn, dzx, dxbc, ddelta, dA and the SSD backward's workspace). */
static hy_train_bytes mamba2_train_bytes(const hy_opts *o, int d, int B, int T, int threads, bool first) {
    (void)first;
    geom g = geom_of(o, d);
    const int Q = HY_MAMBA2_CHUNK;
    double rows = (double)B * T;
    double fwd = rows * (g.W + 2.0 * g.Cx + 2.0 * g.H + 3.0 * g.E + g.G) + (double)B * (T + g.K - 1) * g.Cx + g.H +
                 (double)g.K * g.Cx + (double)hy_ssd_state_floats(B, T, g.H, g.P, g.N, Q) +
                 (double)hy_ssd_forward_work_floats(B, T, g.H, g.P, g.N, g.G, Q, threads);
    double bwd = rows * (g.E + g.W + g.Cx + g.H) + g.H +
                 (double)hy_ssd_backward_work_floats(B, T, g.H, g.P, g.N, g.G, Q, threads);
    return (hy_train_bytes){(fwd + bwd) * sizeof(float) + sizeof(mamba2_priv), 0};
}

static void mamba2_destroy(hy_layer *L) {
    mamba2_priv *P = L->priv;
    if (!P) return;
    free_fwd(&P->F);
    hy_buf *b[] = {&P->dyn, &P->dzx, &P->dxbc, &P->ddelta, &P->dA, &P->ssd_ws};
    for (size_t i = 0; i < sizeof b / sizeof *b; i++) hy_buf_free(b[i]);
    hy_free(P);
    L->priv = NULL;
}

const hy_block_ops hy_block_mamba2 = {
    .name = "mamba2",
    .kinds = HY_KIND_MIXER,
    .summary = "Mamba-2 / SSD (mamba_ssm Mamba2 parameterization), chunked SSD forward and backward as GEMMs, streaming state",
    .opts = mamba2_opts,
    .n_opts = N_OPTS,
    .resolve = mamba2_resolve,
    .param_specs = mamba2_param_specs,
    .init = mamba2_init,
    .forward = mamba2_forward,
    .backward = mamba2_backward,
    .state_new = mamba2_state_new,
    .step = mamba2_step,
    .prefill = mamba2_prefill,
    .state_free = mamba2_state_free,
    .state_bytes = mamba2_state_bytes,
    .flop = mamba2_flop,
    .train_bytes = mamba2_train_bytes,
    .destroy = mamba2_destroy,
    .state_tensors = mamba2_state_tensors,
    .state_export = mamba2_state_export,
    .state_import = mamba2_state_import,
};

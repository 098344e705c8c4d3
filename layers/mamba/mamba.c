/* mamba — the Mamba-1 selective SSM mixer (SPEC §2, mamba_ssm's `Mamba` parameterization):
 *   [x ; z] = in_proj u;  xc = silu(causal depthwise conv1d(x) + bias);  [dt ; B ; C] = x_proj xc
 *   Δ = softplus(dt_proj dt + bias);  y = scan(Δ, A = -exp(A_log), B, C, xc) + D ⊙ xc
 *   out = out_proj (y ⊙ silu(z))
 * Every product is a GEMM over all B·T rows (hy_linear_* / hy_gemm); the gates and softplus are
 * vectorized loops over channels; the conv (with its silu) is layers/common/causal_conv.c, the scan
 * layers/mamba/scan.c.
 *
 * Layouts (rows = b·T + t): xz (rows, 2E) as in_proj writes it (x = columns 0..E-1, z = E..2E-1);
 * xpad (B, K-1+T, E): per sequence the K-1 conv inputs before t = 0 (zeros, or the streaming
 * state) then x; xc, draw (dt_proj's output without its bias), delta, ys, yg (rows, E); dbc (rows, R+2N)
 * = [dt | B | C]. The conv's output before its silu is not kept (its backward recomputes it).
 * The same forward core serves training (zero history, chunk states kept for the scan backward),
 * inference and prefill/step (history and SSM state from the streaming state).
 *
 * Under bf16 precision the activations that only matrix products read are written in bf16 by the
 * pass that computes them, and the products take them as they are (hy_gemm_bf16_given): no
 * conversion pass, half the bytes. They live in the f32 buffers the f32 path fills instead, so
 * memory is the same in both precisions: the yg buffer holds yg (what out_proj reads, forward and
 * weight gradient) and a bf16 copy of xc (x_proj's input and weight gradient; the scan reads the
 * f32 xc), nE bf16 values each; the dxz buffer holds dxz (in_proj's backward) and d raw (dt_proj's
 * backward) in bf16, 2nE and nE values. */
#include "core/error.h"
#include "core/gemm.h"
#include "core/mem.h"
#include "core/vmath.h"
#include "layers/common/causal_conv.h"
#include "layers/mamba/mamba.h"
#include "layers/mamba/scan.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

enum { OPT_D_STATE, OPT_D_CONV, OPT_EXPAND, OPT_DT_RANK, OPT_DT_MIN, OPT_DT_MAX, OPT_DT_FLOOR, N_OPTS };
static const hy_opt_spec mamba_opts[] = {
    {"d_state", HY_OPT_INT, 16, 1, HY_MAMBA_MAX_STATE, 0, "SSM state size N per channel"},
    {"d_conv", HY_OPT_INT, 4, 1, 64, 0, "width K of the causal depthwise convolution"},
    {"expand", HY_OPT_INT, 2, 1, 64, 0, "inner width E = expand * d_model"},
    {"dt_rank", HY_OPT_INT, 0, 1, 1 << 20, HY_OPT_DEFAULT_AUTO, "rank R of the step-size projection; auto = ceil(d_model/16)"},
    {"dt_min", HY_OPT_FLOAT, 0.001, 0, 1e3, 0, "init: smallest step size Δ (log-uniform in [dt_min, dt_max]); > 0"},
    {"dt_max", HY_OPT_FLOAT, 0.1, 0, 1e3, 0, "init: largest step size Δ; >= dt_min"},
    {"dt_init_floor", HY_OPT_FLOAT, 1e-4, 0, 1e3, 0, "init: Δ is floored at this value"},
};

enum { P_IN, P_CONV_W, P_CONV_B, P_XPROJ, P_DT_W, P_DT_B, P_A_LOG, P_D, P_OUT, N_PARAMS };

typedef struct {
    int d, E, N, K, R, nbc;   /* nbc = R + 2N, the width of x_proj's output */
} geom;

static geom geom_of(const hy_opts *o, int d) {
    geom g = {d, hy_opt_int(o, OPT_EXPAND) * d, hy_opt_int(o, OPT_D_STATE), hy_opt_int(o, OPT_D_CONV),
              hy_opt_int(o, OPT_DT_RANK), 0};
    g.nbc = g.R + 2 * g.N;
    return g;
}

/* The forward's buffers (one set for training in the layer, one per streaming state). */
typedef struct {
    hy_buf xz, xpad, xc, dbc, draw, delta, ys, yg, A, wT, cs;
} fwd_bufs;

typedef struct {
    fwd_bufs F;
    const float *u;            /* input of the kept forward (owned by the caller) */
    int B, T;
    bool have_fwd;
    bool fwd_bf16;             /* the kept forward ran under bf16 (yg and xc's copy are in bf16) */
    hy_buf dyg, dxz, ddelta, dxc, ddbc, dA, scan_ws;
} mamba_priv;

typedef struct {
    int B;
    float *conv;   /* (B, K-1, E): the last K-1 conv inputs x */
    float *ssm;    /* (B, E, N) */
    fwd_bufs F;
} mamba_state;

/* ---------------------------------------------------------------- options, params, init ---- */

/* dt_rank auto = ceil(d/16); dt_min > 0, dt_max >= dt_min. */
static int mamba_resolve(hy_opts *o, int d, int *bad_opt, char *msg, size_t msg_len) {
    if (o->is_auto[OPT_DT_RANK]) {
        o->v[OPT_DT_RANK] = (d + 15) / 16;
        o->is_auto[OPT_DT_RANK] = false;
    }
    if (!(o->v[OPT_DT_MIN] > 0)) {
        *bad_opt = OPT_DT_MIN;
        snprintf(msg, msg_len, "dt_min = %g must be > 0", o->v[OPT_DT_MIN]);
        return HY_ERR_CONFIG;
    }
    if (o->v[OPT_DT_MAX] < o->v[OPT_DT_MIN]) {
        *bad_opt = OPT_DT_MAX;
        snprintf(msg, msg_len, "dt_max = %g must be >= dt_min = %g", o->v[OPT_DT_MAX], o->v[OPT_DT_MIN]);
        return HY_ERR_CONFIG;
    }
    return 0;
}

/* SPEC §2 names and shapes; A_log and D are never weight-decayed (as upstream's _no_weight_decay). */
static int mamba_param_specs(const hy_opts *o, int d, hy_param_spec *out) {
    geom g = geom_of(o, d);
    if (out) {
        out[P_IN] = (hy_param_spec){"in_proj.weight", 2, {2 * g.E, d}, 0};
        out[P_CONV_W] = (hy_param_spec){"conv1d.weight", 3, {g.E, 1, g.K}, 0};
        out[P_CONV_B] = (hy_param_spec){"conv1d.bias", 1, {g.E}, 0};
        out[P_XPROJ] = (hy_param_spec){"x_proj.weight", 2, {g.nbc, g.E}, 0};
        out[P_DT_W] = (hy_param_spec){"dt_proj.weight", 2, {g.E, g.R}, 0};
        out[P_DT_B] = (hy_param_spec){"dt_proj.bias", 1, {g.E}, 0};
        out[P_A_LOG] = (hy_param_spec){"A_log", 2, {g.E, g.N}, HY_PARAM_NO_DECAY};
        out[P_D] = (hy_param_spec){"D", 1, {g.E}, HY_PARAM_NO_DECAY};
        out[P_OUT] = (hy_param_spec){"out_proj.weight", 2, {d, g.E}, 0};
    }
    return N_PARAMS;
}

/* in_proj, x_proj, out_proj are plain linears, out_proj the output projection
 * (hy_init_output_linear); as mamba_ssm: the depthwise conv
 * weight and bias U(±1/sqrt(K)) (PyTorch's Conv1d default, fan_in = K); dt_proj.weight U(±R^-0.5);
 * Δ log-uniform in [dt_min, dt_max] floored at dt_init_floor, stored as dt_proj.bias = Δ +
 * log(-expm1(-Δ)) (inverse softplus); A_log[c, n] = log(n + 1); D = 1. */
static void mamba_init(hy_layer *L, hy_rng *rng) {
    geom g = geom_of(&L->opts, L->d_model);
    const hy_opts *o = &L->opts;
    hy_init_linear(L->p[P_IN], NULL, 2 * g.E, g.d, rng);
    hy_rng_fill_uniform(rng, L->p[P_CONV_W], (size_t)g.E * g.K, 1.0f / sqrtf((float)g.K));
    hy_rng_fill_uniform(rng, L->p[P_CONV_B], (size_t)g.E, 1.0f / sqrtf((float)g.K));
    hy_init_linear(L->p[P_XPROJ], NULL, g.nbc, g.E, rng);
    hy_rng_fill_uniform(rng, L->p[P_DT_W], (size_t)g.E * g.R, 1.0f / sqrtf((float)g.R));
    double lo = log(o->v[OPT_DT_MIN]), hi = log(o->v[OPT_DT_MAX]);
    for (int c = 0; c < g.E; c++) {
        double dt = exp(hy_rng_uniform(rng) * (hi - lo) + lo);
        if (dt < o->v[OPT_DT_FLOOR]) dt = o->v[OPT_DT_FLOOR];
        L->p[P_DT_B][c] = (float)(dt + log(-expm1(-dt)));
    }
    for (int c = 0; c < g.E; c++)
        for (int n = 0; n < g.N; n++) L->p[P_A_LOG][(size_t)c * g.N + n] = logf((float)(n + 1));
    for (int c = 0; c < g.E; c++) L->p[P_D][c] = 1.0f;
    hy_init_output_linear(L, L->p[P_OUT], NULL, g.d, g.E, rng);
}

/* ---------------------------------------------------------------- helpers ---- */

static void free_fwd(fwd_bufs *F) {
    hy_buf *b[] = {&F->xz, &F->xpad, &F->xc, &F->dbc, &F->draw, &F->delta, &F->ys, &F->yg, &F->A, &F->wT, &F->cs};
    for (size_t i = 0; i < sizeof b / sizeof *b; i++) hy_buf_free(b[i]);
}


/* The conv over x (E channels) on the forward's xpad and wT. */
static hy_cconv conv_of(const geom *g, fwd_bufs *F, int B, int T) {
    return (hy_cconv){B, T, g->E, g->K, F->xpad.p, F->wT.p};
}

/* Under bf16: yg and xc's copy in the yg buffer (see the top of the file). */
static hy_bf16 *yg_bf16(fwd_bufs *F) { return (hy_bf16 *)F->yg.p; }
static hy_bf16 *xc_bf16(fwd_bufs *F, size_t nE) { return (hy_bf16 *)F->yg.p + nE; }

enum { PIECE = 256 };   /* channels of a row rounded to bf16 at a time (on the stack) */

/* yg = ys ⊙ silu(z) (z: columns E.. of xz), rows in parallel; under bf16 (ygh set) written only
 * in bf16, a piece of a row at a time through the stack. */
static void gate_forward(const float *xz, const float *ys, float *yg, hy_bf16 *ygh, size_t rows, int E) {
    #pragma omp parallel for schedule(static) if (rows * E > 16384)
    for (long r = 0; r < (long)rows; r++) {
        float piece[PIECE];
        for (int c0 = 0; c0 < E; c0 += ygh ? PIECE : E) {
            const int w = ygh && E - c0 > PIECE ? PIECE : E - c0;
            const float *restrict z = xz + (size_t)r * 2 * E + E + c0, *restrict y = ys + (size_t)r * E + c0;
            float *restrict o = ygh ? piece : yg + (size_t)r * E + c0;
            for (int c = 0; c < w; c++) o[c] = y[c] * hy_siluf(z[c]);
            if (ygh) hy_bf16_from_f32(ygh + (size_t)r * E + c0, piece, (size_t)w);
        }
    }
}

/* ---------------------------------------------------------------- forward core ---- */

/* out (B, T, d) of u for sequences that start from conv history `hist` (B, K-1, E; NULL = zeros)
 * and SSM state `ssm` (B, E, N; NULL = zeros; updated in place when given). keep: store the
 * scan's chunk states in F->cs for backward. */
static int core_forward(hy_layer *L, fwd_bufs *F, const float *u, float *out, int B, int T, const float *hist,
                        float *ssm, bool keep) {
    geom g = geom_of(&L->opts, L->d_model);
    const int E = g.E, K = g.K;
    const size_t rows = (size_t)B * T, nE = rows * E;
    if (!hy_buf_grab(&F->xz, 2 * nE) || !hy_buf_grab(&F->xpad, hy_cconv_pad_floats(B, T, E, K)) ||
        !hy_buf_grab(&F->xc, nE) || !hy_buf_grab(&F->dbc, rows * g.nbc) || !hy_buf_grab(&F->draw, nE) ||
        !hy_buf_grab(&F->delta, nE) || !hy_buf_grab(&F->ys, nE) || !hy_buf_grab(&F->yg, nE) ||
        !hy_buf_grab(&F->A, (size_t)E * g.N) || !hy_buf_grab(&F->wT, (size_t)K * E))
        return HY_ERR_NOMEM;
    size_t ncs = keep ? hy_mamba_chunk_floats(B, T, E, g.N, HY_MAMBA_CHUNK) : 0;
    if (keep && !hy_buf_grab(&F->cs, ncs)) return HY_ERR_NOMEM;
    float *xz = F->xz.p, *xc = F->xc.p;
    const bool bf16 = hy_gemm_get_precision() == HY_PREC_BF16;
    hy_bf16 *xch = bf16 ? xc_bf16(F, nE) : NULL, *ygh = bf16 ? yg_bf16(F) : NULL;
    hy_linear_forward(xz, u, L->p[P_IN], NULL, (int)rows, g.d, 2 * E);
    /* xc = silu(causal conv of x with its K-1 rows of history in front); the conv's output before
     * the silu is not kept (the backward recomputes it in its pass over xpad) */
    hy_cconv cv = conv_of(&g, F, B, T);
    hy_cconv_pad(&cv, xz, 2 * (size_t)E, hist);
    hy_cconv_set_weight(&cv, &(hy_cconv_weight){1, {E}, {L->p[P_CONV_W]}});
    hy_cconv_forward_bf16(&cv, L->p[P_CONV_B], NULL, xc, xch);
    /* [dt | B | C] = xc x_projᵀ;  Δ = softplus(dt dt_projᵀ + bias) */
    hy_gemm_bf16_given(false, true, (int)rows, g.nbc, E, 1.0f, xc, xch, E, L->p[P_XPROJ], NULL, E, 0.0f, F->dbc.p,
                       g.nbc);
    hy_gemm(false, true, (int)rows, E, g.R, 1.0f, F->dbc.p, g.nbc, L->p[P_DT_W], g.R, 0.0f, F->draw.p, E);
    hy_softplus_bias_rows(F->delta.p, F->draw.p, L->p[P_DT_B], rows, E);
    for (size_t i = 0; i < (size_t)E * g.N; i++) F->A.p[i] = -expf(L->p[P_A_LOG][i]);
    hy_mamba_scan_args a = {B, T, E, g.N, F->delta.p, xc, F->dbc.p + g.R, F->dbc.p + g.R + g.N, g.nbc, F->A.p,
                            L->p[P_D], ssm, ssm, HY_MAMBA_CHUNK, keep ? F->cs.p : NULL, bf16};
    int rc = hy_mamba_scan_forward(&a, F->ys.p);
    if (rc < 0) return rc;
    /* y ⊙ silu(z), then out_proj */
    gate_forward(xz, F->ys.p, F->yg.p, ygh, rows, E);
    hy_gemm_bf16_given(false, true, (int)rows, g.d, E, 1.0f, bf16 ? NULL : F->yg.p, ygh, E, L->p[P_OUT], NULL, E, 0.0f,
                       out, g.d);
    return 0;
}

static mamba_priv *priv_of(hy_layer *L) {
    if (!L->priv) L->priv = hy_calloc(sizeof(mamba_priv));
    return L->priv;
}

/* Training / inference forward from zero state; keeps what backward needs when asked. */
static int mamba_forward(hy_layer *L, const float *x, float *y, int B, int T) {
    mamba_priv *P = priv_of(L);
    if (!P) return HY_ERR_NOMEM;
    P->have_fwd = false;
    if (B <= 0 || T <= 0) return 0;
    int rc = core_forward(L, &P->F, x, y, B, T, NULL, NULL, L->keep_for_backward);
    if (rc < 0) return rc;
    P->u = x, P->B = B, P->T = T, P->have_fwd = L->keep_for_backward;
    P->fwd_bf16 = hy_gemm_get_precision() == HY_PREC_BF16;
    return 0;
}

/* ---------------------------------------------------------------- backward ---- */

/* Backward of mamba_forward: out_proj, gate, scan (chunked), softplus, dt_proj, x_proj, silu,
 * conv, in_proj, in that order; parameter gradients accumulated. */
static int mamba_backward(hy_layer *L, const float *dy, float *dx, int B, int T) {
    mamba_priv *P = L->priv;
    if (B <= 0 || T <= 0) return 0;
    if (!P || !P->have_fwd || P->B != B || P->T != T)
        return hy_fail("mamba: backward without a matching forward (keep_for_backward)");
    const bool bf16 = P->fwd_bf16;
    if (bf16 != (hy_gemm_get_precision() == HY_PREC_BF16))
        return hy_fail("mamba: backward under %s after a forward under %s (compute.precision changed in between)",
                       bf16 ? "f32" : "bf16", bf16 ? "bf16" : "f32");
    geom g = geom_of(&L->opts, L->d_model);
    fwd_bufs *F = &P->F;
    const int E = g.E, N = g.N, R = g.R;
    const size_t rows = (size_t)B * T, nE = rows * E;
    if (!hy_buf_grab(&P->dyg, nE) || !hy_buf_grab(&P->dxz, 2 * nE) || !hy_buf_grab(&P->ddelta, nE) ||
        !hy_buf_grab(&P->dxc, nE) || !hy_buf_grab(&P->ddbc, rows * g.nbc) || !hy_buf_grab(&P->dA, (size_t)E * N))
        return HY_ERR_NOMEM;
    float *dyg = P->dyg.p, *dxz = P->dxz.p, *ddelta = P->ddelta.p, *dxc = P->dxc.p, *ddbc = P->ddbc.p;
    const float *xz = F->xz.p, *ys = F->ys.p;
    /* under bf16: dxz and d raw in bf16 in the dxz buffer (see the top of the file) */
    hy_bf16 *dxzh = bf16 ? (hy_bf16 *)dxz : NULL, *ddeltah = bf16 ? (hy_bf16 *)dxz + 2 * nE : NULL;
    /* out_proj: dyg = dy W_out, dW_out += dyᵀ yg */
    hy_linear_backward_bf16(dyg, L->g[P_OUT], NULL, dy, NULL, bf16 ? NULL : F->yg.p, bf16 ? yg_bf16(F) : NULL,
                            L->p[P_OUT], (int)rows, E, g.d, false);
    /* gate: dz = dyg · y · silu'(z) into dxz's z half (in bf16 under bf16, a piece of a row at a
     * time through the stack); g = dyg · silu(z) in place */
    #pragma omp parallel for schedule(static) if (nE > 16384)
    for (long r = 0; r < (long)rows; r++) {
        float piece[PIECE];
        for (int c0 = 0; c0 < E; c0 += bf16 ? PIECE : E) {
            const int w = bf16 && E - c0 > PIECE ? PIECE : E - c0;
            const float *restrict z = xz + (size_t)r * 2 * E + E + c0, *restrict y = ys + (size_t)r * E + c0;
            float *restrict gy = dyg + (size_t)r * E + c0, *restrict dz = bf16 ? piece : dxz + (size_t)r * 2 * E + E + c0;
            for (int c = 0; c < w; c++) {
                float s = hy_sigmoidf(z[c]);
                dz[c] = gy[c] * y[c] * s * (1.0f + z[c] * (1.0f - s));
                gy[c] *= z[c] * s;
            }
            if (bf16) hy_bf16_from_f32(dxzh + (size_t)r * 2 * E + E + c0, piece, (size_t)w);
        }
    }
    /* the scan: dΔ, dxc, dB, dC; dA → dA_log = dA ⊙ A; dD */
    memset(P->dA.p, 0, (size_t)E * N * sizeof(float));
    hy_mamba_scan_args a = {B, T, E, N, F->delta.p, F->xc.p, F->dbc.p + R, F->dbc.p + R + N, g.nbc, F->A.p,
                            L->p[P_D], NULL, NULL, HY_MAMBA_CHUNK, F->cs.p, bf16};
    int rc = hy_mamba_scan_backward(&a, dyg, ddelta, dxc, ddbc + R, ddbc + R + N, g.nbc, P->dA.p, L->g[P_D], &P->scan_ws);
    if (rc < 0) return rc;
    for (size_t i = 0; i < (size_t)E * N; i++) L->g[P_A_LOG][i] += P->dA.p[i] * F->A.p[i];
    /* softplus: d raw = dΔ · sigmoid(raw + bias) (1 above the cut-off, as SPEC's x > 20 branch), also in
     * bf16 under bf16 (row by row while the row is in L1) */
    const float *draw = F->draw.p, *dt_bias = L->p[P_DT_B];
    #pragma omp parallel for schedule(static) if (nE > 16384)
    for (long r = 0; r < (long)rows; r++) {
        float *restrict dd = ddelta + (size_t)r * E;
        const float *restrict dr = draw + (size_t)r * E;
        #pragma omp simd
        for (int c = 0; c < E; c++) dd[c] *= hy_sigmoidf(dr[c] + dt_bias[c]);   /* exactly 1.0f above 20 too (1 - 2e-9 rounds to 1) */
        if (bf16) hy_bf16_from_f32(ddeltah + (size_t)r * E, dd, (size_t)E);
    }
    hy_colsum_add(L->g[P_DT_B], ddelta, rows, E, E);
    /* dt_proj: d dt = d raw W_dt into ddbc[:, :R]; dW_dt += d rawᵀ dt */
    hy_gemm_bf16_given(false, false, (int)rows, R, E, 1.0f, ddelta, ddeltah, E, L->p[P_DT_W], NULL, R, 0.0f, ddbc,
                       g.nbc);
    hy_gemm_bf16_given(true, false, E, R, (int)rows, 1.0f, ddelta, ddeltah, E, F->dbc.p, NULL, g.nbc, 1.0f,
                       L->g[P_DT_W], R);
    /* x_proj: dxc += ddbc W_x; dW_x += ddbcᵀ xc */
    hy_linear_backward_bf16(dxc, L->g[P_XPROJ], NULL, ddbc, NULL, F->xc.p, bf16 ? xc_bf16(F, nE) : NULL,
                            L->p[P_XPROJ], (int)rows, E, g.nbc, true);
    /* silu and the conv: bias and weight gradients, d x into dxz's x half (bf16 under bf16) */
    hy_cconv cv = conv_of(&g, F, B, T);
    hy_cconv_backward_silu(&cv, dxc, L->p[P_CONV_B], L->g[P_CONV_B], &(hy_cconv_weight){1, {E}, {L->g[P_CONV_W]}},
                           bf16 ? NULL : dxz, dxzh, 2 * (size_t)E);
    /* in_proj: du = dxz W_in; dW_in += dxzᵀ u */
    hy_linear_backward_bf16(dx, L->g[P_IN], NULL, bf16 ? NULL : dxz, dxzh, P->u, NULL, L->p[P_IN], (int)rows, g.d,
                            2 * E, false);
    return 0;
}

/* ---------------------------------------------------------------- streaming ---- */

/* Zero state for B sequences: conv history (B, K-1, E) and SSM state (B, E, N). */
static int mamba_state_new(hy_layer *L, int B, void **state) {
    geom g = geom_of(&L->opts, L->d_model);
    mamba_state *s = hy_calloc(sizeof *s);
    if (!s) return HY_ERR_NOMEM;
    s->B = B;
    s->conv = hy_calloc((size_t)B * (g.K - 1) * g.E * sizeof(float));
    s->ssm = hy_calloc((size_t)B * g.E * g.N * sizeof(float));
    if (!s->conv || !s->ssm) {
        hy_free(s->conv), hy_free(s->ssm), hy_free(s);
        return HY_ERR_NOMEM;
    }
    *state = s;
    return 0;
}

static void mamba_state_free(hy_layer *L, void *state) {
    (void)L;
    mamba_state *s = state;
    if (!s) return;
    hy_free(s->conv), hy_free(s->ssm);
    free_fwd(&s->F);
    hy_free(s);
}

/* T tokens per sequence from the state: the forward core with the state's conv history and SSM
 * state (updated in place), then the last K-1 conv inputs become the new history. */
static int mamba_prefill(hy_layer *L, void *state, const float *x, float *y, int B, int T) {
    mamba_state *s = state;
    if (B != s->B) return hy_fail("mamba: state holds %d sequences, got %d", s->B, B);
    if (T <= 0) return 0;
    geom g = geom_of(&L->opts, L->d_model);
    int rc = core_forward(L, &s->F, x, y, B, T, s->conv, s->ssm, false);
    if (rc < 0) return rc;
    hy_cconv cv = conv_of(&g, &s->F, B, T);
    hy_cconv_keep_history(&cv, s->conv);
    return 0;
}

static int mamba_step(hy_layer *L, void *state, const float *x, float *y, int B) {
    return mamba_prefill(L, state, x, y, B, 1);
}

/* ---------------------------------------------------------------- saving a state ---- */

/* Two tensors in mamba_ssm's layouts: "conv" (B, E, K-1), the last K-1 conv inputs per channel
 * oldest first (conv_state[:, :, 1:] of mamba_ssm's (B, E, K) after a step; (B, E, 0) when
 * K = 1), and "ssm" (B, E, N). No position counter: the block's output does not depend on one.
 * One list for state_tensors and for the checks of state_import. */
static void mamba_tensors_of(hy_layer *L, int B, hy_state_tensor *out) {
    geom g = geom_of(&L->opts, L->d_model);
    out[0] = (hy_state_tensor){"conv", 3, {B, g.E, g.K - 1}};
    out[1] = (hy_state_tensor){"ssm", 3, {B, g.E, g.N}};
}

static int mamba_state_tensors(hy_layer *L, const void *state, hy_state_tensor *out) {
    if (out) mamba_tensors_of(L, ((const mamba_state *)state)->B, out);
    return 2;
}

/* Copies "conv" (transposing the (B, K-1, E) history to (B, E, K-1)) or "ssm" out of the state. */
static int mamba_state_export(hy_layer *L, const void *state, int i, float *dst) {
    const mamba_state *s = state;
    geom g = geom_of(&L->opts, L->d_model);
    const int E = g.E;
    if (i == 1) {
        memcpy(dst, s->ssm, (size_t)s->B * E * g.N * sizeof(float));
        return 0;
    }
    if (i != 0) return hy_fail("mamba: no state tensor %d", i);
    hy_cconv_history_export(dst, s->conv, s->B, E, g.K, 0, E);
    return 0;
}

/* Refills a fresh state from "conv" (B, E, K-1) and "ssm" (B, E, N), both checked against the
 * options and the state's B (hy_state_match) before anything is copied. */
static int mamba_state_import(hy_layer *L, void *state, int n, const hy_state_tensor *t, const float *const *data) {
    mamba_state *s = state;
    geom g = geom_of(&L->opts, L->d_model);
    const int E = g.E;
    hy_state_tensor want[2];
    int idx[2];
    mamba_tensors_of(L, s->B, want);
    int rc = hy_state_match("mamba", n, t, 2, want, idx);
    if (rc < 0) return rc;
    hy_cconv_history_import(s->conv, data[idx[0]], s->B, E, g.K, 0, E);
    memcpy(s->ssm, data[idx[1]], (size_t)s->B * E * g.N * sizeof(float));
    return 0;
}

/* ---------------------------------------------------------------- accounting ---- */

/* Constant in T: (K-1)·E conv inputs and E·N SSM states, fp32. */
static size_t mamba_state_bytes(const hy_opts *o, int d, int T) {
    (void)T;
    geom g = geom_of(o, d);
    return ((size_t)(g.K - 1) * g.E + (size_t)g.E * g.N) * sizeof(float);
}

/* Forward FLOPs of one sequence (multiply-add = 2) per token: in_proj 4dE, conv 2KE, x_proj
 * 2E(R+2N), dt_proj 2RE, scan 6EN (Δ·A, a·s + Δx·B, s·C), per channel 4E (Δ·x, D·x + y, gate),
 * out_proj 2dE. exp, softplus and silu are not counted. */
static double mamba_flop(const hy_opts *o, int d, int T) {
    geom g = geom_of(o, d);
    double E = g.E;
    return (double)T * (6.0 * d * E + 2.0 * g.K * E + 2.0 * E * g.nbc + 2.0 * g.R * E + 6.0 * E * g.N + 4.0 * E);
}

/* Training memory, all kept in the layer: the forward's buffers (xz, xpad, xc, dbc, draw,
 * delta, ys, yg, A, wT and the scan's chunk states), the backward's (dyg, dxz, ddelta, dxc, ddbc,
 * dA) and the scan backward's workspace. */
static hy_train_bytes mamba_train_bytes(const hy_opts *o, int d, int B, int T, int threads, bool first) {
    (void)first;
    geom g = geom_of(o, d);
    double rows = (double)B * T, nE = rows * g.E, EN = (double)g.E * g.N;
    double fwd = 7 * nE + (double)B * (T + g.K - 1) * g.E + rows * g.nbc + EN + (double)g.K * g.E +
                 (double)hy_mamba_chunk_floats(B, T, g.E, g.N, HY_MAMBA_CHUNK);
    double bwd = 5 * nE + rows * g.nbc + EN + (double)hy_mamba_scan_backward_floats(B, T, g.E, g.N, HY_MAMBA_CHUNK, threads);
    return (hy_train_bytes){(fwd + bwd) * sizeof(float), 0};
}

static void mamba_destroy(hy_layer *L) {
    mamba_priv *P = L->priv;
    if (!P) return;
    free_fwd(&P->F);
    hy_buf *b[] = {&P->dyg, &P->dxz, &P->ddelta, &P->dxc, &P->ddbc, &P->dA, &P->scan_ws};
    for (size_t i = 0; i < sizeof b / sizeof *b; i++) hy_buf_free(b[i]);
    hy_free(P);
    L->priv = NULL;
}

const hy_block_ops hy_block_mamba = {
    .name = "mamba",
    .kinds = HY_KIND_MIXER,
    .summary = "Mamba-1 selective SSM (mamba_ssm parameterization), chunked scan backward, streaming state",
    .opts = mamba_opts,
    .n_opts = N_OPTS,
    .resolve = mamba_resolve,
    .param_specs = mamba_param_specs,
    .init = mamba_init,
    .forward = mamba_forward,
    .backward = mamba_backward,
    .state_new = mamba_state_new,
    .step = mamba_step,
    .prefill = mamba_prefill,
    .state_free = mamba_state_free,
    .state_bytes = mamba_state_bytes,
    .flop = mamba_flop,
    .train_bytes = mamba_train_bytes,
    .destroy = mamba_destroy,
    .state_tensors = mamba_state_tensors,
    .state_export = mamba_state_export,
    .state_import = mamba_state_import,
};

/* hyena — StripedHyena gated convolution, order 2, with the modal long filter (SPEC §2):
 *   zp = projections·u + bias                                  (3d)
 *   z_t = short_filter_bias + Σ_{k<3} short_filter_weight[:,0,k] ⊙ zp_{t-2+k}   (causal, zeros before 0)
 *   x2, x1, v = z[0:d], z[d:2d], z[2d:3d];  p = x1 ⊙ v
 *   hc = Kern(filter.*) ∗ p + D ⊙ p;  y = x2 ⊙ hc;  out = out_filter_dense·y + bias
 * The short filter is a causal depthwise conv (layers/common/causal_conv.c); the long convolution
 * and its backward are hy_modal_conv (layers/ssm_conv/modal_scan.c: the vectorized scan for
 * training; modal_conv.c: the per-channel recurrence for streaming). The streaming state is the last 2 projected inputs zp of the short
 * filter and the complex modal state (d, M) of the long filter. */
#include "core/error.h"
#include "core/gemm.h"
#include "core/mem.h"
#include "layers/common/causal_conv.h"
#include "layers/ssm_conv/modal_conv.h"
#include "layers/registry.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

enum { OPT_D_STATE, OPT_DT_MIN, OPT_DT_MAX };
static const hy_opt_spec hyena_opts[] = {
    {"d_state", HY_OPT_INT, 16, 2, 2048, 0, "state size of the long filter (even): d_state/2 complex modes"},
    {"dt_min", HY_OPT_FLOAT, 0.001, 1e-8, 10, 0, "smallest initial step dt of the long filter"},
    {"dt_max", HY_OPT_FLOAT, 0.1, 1e-8, 10, 0, "largest initial step dt of the long filter (>= dt_min)"},
};

enum { P_LOG_DT, P_C, P_LOG_A_REAL, P_A_IMAG, P_PROJ_W, P_PROJ_B, P_SF_W, P_SF_B, P_D, P_OUT_W, P_OUT_B, N_P };
enum { KS = 3 };   /* short filter width */

typedef struct {
    int B, T;
    bool have_fwd;
    const float *x;
    hy_modal_conv conv;             /* the long convolution's training path */
    hy_buf zp, z, p, hc, y;         /* (rows, 3d) ×2, (rows, d) ×3 */
    hy_buf xpad, wT;                /* the short filter's padded input (B, T+2, 3d) and weight (3, 3d) */
    hy_buf dy, dz, dzp, dp, dhc;
    hy_modal_cache mc;
} hyena_priv;

/* Streaming state: zp of the last 2 tokens (B, 2, 3d), oldest first; modal state (B, d, 2, M). */
typedef struct {
    int B;
    float *hist, *s;
    hy_buf zp, z, p, hc, y, xpad, wT;
} hyena_state;

/* ---------------------------------------------------------------- options, params ---- */

/* The long-filter parameters first (they share hy_modal_params' order), then SPEC's others. */
static int hyena_param_specs(const hy_opts *o, int d, hy_param_spec *out) {
    int M = hy_opt_int(o, OPT_D_STATE) / 2;
    unsigned ssm = HY_PARAM_SSM_LR | HY_PARAM_NO_DECAY;
    if (out) {
        out[P_LOG_DT] = (hy_param_spec){"filter.log_dt", 1, {d}, ssm};
        out[P_C] = (hy_param_spec){"filter.C", 3, {d, M, 2}, ssm};
        out[P_LOG_A_REAL] = (hy_param_spec){"filter.log_A_real", 2, {d, M}, ssm};
        out[P_A_IMAG] = (hy_param_spec){"filter.A_imag", 2, {d, M}, ssm};
        out[P_PROJ_W] = (hy_param_spec){"projections.weight", 2, {3 * d, d}, 0};
        out[P_PROJ_B] = (hy_param_spec){"projections.bias", 1, {3 * d}, 0};
        out[P_SF_W] = (hy_param_spec){"short_filter_weight", 3, {3 * d, 1, KS}, 0};
        out[P_SF_B] = (hy_param_spec){"short_filter_bias", 1, {3 * d}, 0};
        out[P_D] = (hy_param_spec){"D", 1, {d}, HY_PARAM_NO_DECAY};
        out[P_OUT_W] = (hy_param_spec){"out_filter_dense.weight", 2, {d, d}, 0};
        out[P_OUT_B] = (hy_param_spec){"out_filter_dense.bias", 1, {d}, 0};
    }
    return N_P;
}

/* Long filter: the S4D-Lin init (hy_modal_init); D ~ N(0, 1); projections and out_filter_dense
 * (weights and biases) are plain linears, out_filter_dense the output projection
 * (hy_init_output_linear); the short filter as PyTorch's depthwise
 * nn.Conv1d default, weight and bias U(±1/sqrt(3)) (fan_in = the filter width). */
static void hyena_init(hy_layer *L, hy_rng *rng) {
    int d = L->d_model, M = hy_opt_int(&L->opts, OPT_D_STATE) / 2;
    hy_modal_init(L->p, d, M, L->opts.v[OPT_DT_MIN], L->opts.v[OPT_DT_MAX], rng);
    float bk = 1.0f / sqrtf((float)KS);
    hy_init_linear(L->p[P_PROJ_W], L->p[P_PROJ_B], 3 * d, d, rng);
    hy_rng_fill_uniform(rng, L->p[P_SF_W], (size_t)3 * d * KS, bk);
    hy_rng_fill_uniform(rng, L->p[P_SF_B], (size_t)3 * d, bk);
    hy_rng_fill_normal(rng, L->p[P_D], (size_t)d, 1.0f);
    hy_init_output_linear(L, L->p[P_OUT_W], L->p[P_OUT_B], d, d, rng);
}

/* ---------------------------------------------------------------- helpers ---- */

static hyena_priv *priv_of(hy_layer *L) {
    if (!L->priv) L->priv = hy_calloc(sizeof(hyena_priv));
    return L->priv;
}

static hy_modal_params modal_view(float **p) { return (hy_modal_params){p[P_LOG_DT], p[P_C], p[P_LOG_A_REAL], p[P_A_IMAG]}; }

/* The short filter of B·T rows of zp (3d channels, width 3) into z, continuing from hist (the last
 * 2 zp rows per sequence; NULL = zeros); xpad and wT (grabbed here) are kept for backward and for
 * the new history. */
static int short_filter(hy_layer *L, hy_buf *xpad, hy_buf *wT, const float *zp, const float *hist, float *z, int B,
                        int T, hy_cconv *cv) {
    const int W = 3 * L->d_model;
    if (!hy_buf_grab(xpad, hy_cconv_pad_floats(B, T, W, KS)) || !hy_buf_grab(wT, (size_t)KS * W)) return HY_ERR_NOMEM;
    *cv = (hy_cconv){B, T, W, KS, xpad->p, wT->p};
    hy_cconv_pad(cv, zp, W, hist);
    hy_cconv_set_weight(cv, &(hy_cconv_weight){1, {W}, {L->p[P_SF_W]}});
    hy_cconv_forward(cv, L->p[P_SF_B], z, NULL);
    return 0;
}

/* p = x1 ⊙ v for B·T rows of z (width 3d). */
static void gate_in(const float *z, float *p, size_t rows, int d) {
    #pragma omp parallel for schedule(static) if (rows * d > HY_PAR_MIN)
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < d; c++) p[r * d + c] = z[r * 3 * d + d + c] * z[r * 3 * d + 2 * d + c];
}

/* hc += D ⊙ p; y = x2 ⊙ hc. */
static void gate_out(const float *z, const float *p, const float *D, float *hc, float *y, size_t rows, int d) {
    #pragma omp parallel for schedule(static) if (rows * d > HY_PAR_MIN)
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < d; c++) {
            size_t i = r * d + c;
            hc[i] += D[c] * p[i];
            y[i] = z[r * 3 * d + c] * hc[i];
        }
}

/* ---------------------------------------------------------------- training ---- */

static int hyena_forward(hy_layer *L, const float *x, float *out, int B, int T) {
    hyena_priv *P = priv_of(L);
    int d = L->d_model, M = hy_opt_int(&L->opts, OPT_D_STATE) / 2;
    if (!P) return HY_ERR_NOMEM;
    P->have_fwd = false;
    if (B <= 0 || T <= 0) return 0;
    size_t rows = (size_t)B * T;
    if (!hy_buf_grab(&P->zp, rows * 3 * d) ||
        !hy_buf_grab(&P->z, rows * 3 * d) || !hy_buf_grab(&P->p, rows * d) || !hy_buf_grab(&P->hc, rows * d) ||
        !hy_buf_grab(&P->y, rows * d))
        return HY_ERR_NOMEM;
    hy_linear_forward(P->zp.p, x, L->p[P_PROJ_W], L->p[P_PROJ_B], (int)rows, d, 3 * d);
    hy_cconv cv;
    int rc = short_filter(L, &P->xpad, &P->wT, P->zp.p, NULL, P->z.p, B, T, &cv);
    if (rc < 0) return rc;
    gate_in(P->z.p, P->p.p, rows, d);
    hy_modal_params mp = modal_view(L->p);
    if ((rc = hy_modal_conv_forward(&P->conv, &mp, d, M, P->p.p, P->hc.p, B, T)) < 0) return rc;
    gate_out(P->z.p, P->p.p, L->p[P_D], P->hc.p, P->y.p, rows, d);
    hy_linear_forward(out, P->y.p, L->p[P_OUT_W], L->p[P_OUT_B], (int)rows, d, d);
    P->x = x, P->B = B, P->T = T, P->have_fwd = L->keep_for_backward;
    return 0;
}

static int hyena_backward(hy_layer *L, const float *dout, float *dx, int B, int T) {
    hyena_priv *P = L->priv;
    int d = L->d_model;
    if (B <= 0 || T <= 0) return 0;
    if (!P || !P->have_fwd || P->B != B || P->T != T)
        return hy_fail("hyena: backward without a matching kept forward");
    size_t rows = (size_t)B * T;
    if (!hy_buf_grab(&P->dy, rows * d) || !hy_buf_grab(&P->dz, rows * 3 * d) || !hy_buf_grab(&P->dzp, rows * 3 * d) ||
        !hy_buf_grab(&P->dp, rows * d) || !hy_buf_grab(&P->dhc, rows * d))
        return HY_ERR_NOMEM;
    hy_linear_backward(P->dy.p, L->g[P_OUT_W], L->g[P_OUT_B], dout, P->y.p, L->p[P_OUT_W], (int)rows, d, d, false);
    const float *z = P->z.p, *hc = P->hc.p, *dy = P->dy.p;
    float *dz = P->dz.p, *dhc = P->dhc.p;
    #pragma omp parallel for schedule(static) if (rows * d > HY_PAR_MIN)
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < d; c++) {
            size_t i = r * d + c;
            dz[r * 3 * d + c] = dy[i] * hc[i];   /* dx2 */
            dhc[i] = dy[i] * z[r * 3 * d + c];
        }
    hy_modal_params mp = modal_view(L->p), mg = modal_view(L->g);
    int rc = hy_modal_conv_backward(&P->conv, &mp, &mg, P->p.p, dhc, P->dp.p, B, T);
    if (rc < 0) return rc;
    const float *D = L->p[P_D], *p = P->p.p;
    float *dp = P->dp.p, *gD = L->g[P_D];
    #pragma omp parallel for schedule(static) if (rows * d > HY_PAR_MIN)
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < d; c++) {
            size_t i = r * d + c;
            float g = dp[i] + D[c] * dhc[i];
            dz[r * 3 * d + d + c] = g * z[r * 3 * d + 2 * d + c];    /* dx1 */
            dz[r * 3 * d + 2 * d + c] = g * z[r * 3 * d + d + c];    /* dv */
        }
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < d; c++) gD[c] += dhc[r * d + c] * p[r * d + c];
    /* the short filter: bias and weight gradients, dzp */
    hy_cconv cv = {B, T, 3 * d, KS, P->xpad.p, P->wT.p};
    hy_cconv_backward(&cv, dz, NULL, L->g[P_SF_B], &(hy_cconv_weight){1, {3 * d}, {L->g[P_SF_W]}}, P->dzp.p,
                      3 * (size_t)d);
    hy_linear_backward(dx, L->g[P_PROJ_W], L->g[P_PROJ_B], P->dzp.p, P->x, L->p[P_PROJ_W], (int)rows, d, 3 * d,
                       false);
    return 0;
}

/* ---------------------------------------------------------------- streaming ---- */

static int hyena_state_new(hy_layer *L, int B, void **state) {
    int d = L->d_model, M = hy_opt_int(&L->opts, OPT_D_STATE) / 2;
    hyena_state *s = hy_calloc(sizeof *s);
    if (!s) return HY_ERR_NOMEM;
    s->B = B;
    s->hist = hy_calloc((size_t)B * 2 * 3 * d * sizeof(float) + 1);
    s->s = hy_calloc((size_t)B * d * 2 * M * sizeof(float) + 1);
    if (!s->hist || !s->s) {
        hy_free(s->hist), hy_free(s->s), hy_free(s);
        return HY_ERR_NOMEM;
    }
    *state = s;
    return 0;
}

/* T tokens from the state: the short filter continues from the kept zp rows, the long filter runs
 * the modal recurrence; then the kept rows become the last 2 zp of this chunk (with older rows
 * from the state when T < 2). */
static int hyena_prefill(hy_layer *L, void *state, const float *x, float *out, int B, int T) {
    hyena_state *s = state;
    hyena_priv *P = priv_of(L);
    int d = L->d_model, M = hy_opt_int(&L->opts, OPT_D_STATE) / 2, W = 3 * d;
    if (!P) return HY_ERR_NOMEM;
    if (B != s->B) return hy_fail("hyena: state holds %d sequences, got %d", s->B, B);
    if (T <= 0) return 0;
    size_t rows = (size_t)B * T;
    hy_modal_params mp = modal_view(L->p);
    int rc = hy_modal_cache_update(&P->mc, &mp, d, M);
    if (rc < 0) return rc;
    if (!hy_buf_grab(&s->zp, rows * W) || !hy_buf_grab(&s->z, rows * W) || !hy_buf_grab(&s->p, rows * d) ||
        !hy_buf_grab(&s->hc, rows * d) || !hy_buf_grab(&s->y, rows * d))
        return HY_ERR_NOMEM;
    hy_linear_forward(s->zp.p, x, L->p[P_PROJ_W], L->p[P_PROJ_B], (int)rows, d, W);
    hy_cconv cv;
    if ((rc = short_filter(L, &s->xpad, &s->wT, s->zp.p, s->hist, s->z.p, B, T, &cv)) < 0) return rc;
    hy_cconv_keep_history(&cv, s->hist);   /* the last 2 rows of [old history; zp] */
    gate_in(s->z.p, s->p.p, rows, d);
    hy_modal_scan(d, M, P->mc.zr.p, P->mc.zi.p, P->mc.ctr.p, P->mc.cti.p, s->s, s->p.p, s->hc.p, B, T);
    gate_out(s->z.p, s->p.p, L->p[P_D], s->hc.p, s->y.p, rows, d);
    hy_linear_forward(out, s->y.p, L->p[P_OUT_W], L->p[P_OUT_B], (int)rows, d, d);
    return 0;
}

static int hyena_step(hy_layer *L, void *state, const float *x, float *y, int B) {
    return hyena_prefill(L, state, x, y, B, 1);
}

static void hyena_state_free(hy_layer *L, void *state) {
    (void)L;
    hyena_state *s = state;
    if (!s) return;
    hy_free(s->hist), hy_free(s->s);
    hy_buf_free(&s->zp), hy_buf_free(&s->z), hy_buf_free(&s->p), hy_buf_free(&s->hc), hy_buf_free(&s->y);
    hy_buf_free(&s->xpad), hy_buf_free(&s->wT);
    hy_free(s);
}

/* ---------------------------------------------------------------- state files ---- */

/* Two tensors: "short_filter" (B, 3d, 2), the projected inputs zp (projections·u + bias, before the
 * short filter) of the last 2 tokens per channel, oldest first (channels-first with time last, as a
 * depthwise conv1d's input and StripedHyena's fir_state; zeros before the first token), and "ssm"
 * (B, d, M, 2), the long filter's complex modal state as (re, im) pairs (the layout of filter.C).
 * No position counter: the recurrence does not depend on it. */
static void hyena_tensors_of(hy_layer *L, int B, hy_state_tensor *out) {
    int d = L->d_model;
    out[0] = (hy_state_tensor){"short_filter", 3, {B, 3 * d, 2}};
    out[1] = (hy_state_tensor){"ssm", 4, {B, d, hy_opt_int(&L->opts, OPT_D_STATE) / 2, 2}};
}

static int hyena_state_tensors(hy_layer *L, const void *state, hy_state_tensor *out) {
    if (out) hyena_tensors_of(L, ((const hyena_state *)state)->B, out);
    return 2;
}

/* The history is kept as (B, 2, 3d) rows; the tensor is its per-sequence transpose. */
static int hyena_state_export(hy_layer *L, const void *state, int i, float *dst) {
    const hyena_state *s = state;
    int d = L->d_model, W = 3 * d;
    if (i < 0 || i > 1) return hy_fail("hyena: no state tensor %d", i);
    if (i == 1) {
        hy_modal_state_to_pairs(s->s, dst, (size_t)s->B * d, hy_opt_int(&L->opts, OPT_D_STATE) / 2);
        return 0;
    }
    hy_cconv_history_export(dst, s->hist, s->B, W, KS, 0, W);
    return 0;
}

/* Checks "short_filter" (B, 3d, 2) and "ssm" (B, d, M, 2) and copies them in. */
static int hyena_state_import(hy_layer *L, void *state, int n, const hy_state_tensor *t, const float *const *data) {
    hyena_state *s = state;
    int d = L->d_model, W = 3 * d, idx[2];
    hy_state_tensor want[2];
    hyena_tensors_of(L, s->B, want);
    int rc = hy_state_match("hyena", n, t, 2, want, idx);
    if (rc < 0) return rc;
    hy_cconv_history_import(s->hist, data[idx[0]], s->B, W, KS, 0, W);
    hy_modal_state_from_pairs(s->s, data[idx[1]], (size_t)s->B * d, want[1].shape[2]);
    return 0;
}

/* ---------------------------------------------------------------- accounting ---- */

/* The short filter's last 2 projected inputs (2·3d) and the modal state (d·d_state). */
static size_t hyena_state_bytes(const hy_opts *o, int d, int T) {
    (void)T;
    return ((size_t)2 * 3 * d + (size_t)d * hy_opt_int(o, OPT_D_STATE)) * sizeof(float);
}

/* Projections 2·T·d·3d (+ bias), short filter 2·3·3d·T, the gates (3·T·d), the long convolution
 * (hy_modal_conv_flop: the scan), D skip (2·T·d), output dense 2·T·d²
 * (+ bias). */
static double hyena_flop(const hy_opts *o, int d, int T) {
    int M = hy_opt_int(o, OPT_D_STATE) / 2;
    double t = T;
    return 6.0 * t * d * d + 3.0 * t * d + 18.0 * t * d + 3.0 * t * d + hy_modal_conv_flop(d, M, T) + 2.0 * t * d +
           2.0 * t * d * d + t * d;
}

/* Training memory: forward keeps zp, z (rows, 3d), p, hc, y (rows, d), the short filter's xpad
 * (B, T+2, 3d) and wT (3, 3d); backward adds dy, dp, dhc (rows, d), dz, dzp (rows, 3d); plus the
 * convolution's (hy_modal_conv_train_bytes). */
static hy_train_bytes hyena_train_bytes(const hy_opts *o, int d, int B, int T, int threads, bool first) {
    (void)first;
    hy_train_bytes c = hy_modal_conv_train_bytes(d, hy_opt_int(o, OPT_D_STATE) / 2, T, threads);
    c.kept += (18.0 * B * T * d + 3.0 * d * B * (T + KS - 1) + 3.0 * KS * d) * sizeof(float);
    return c;
}

static void hyena_destroy(hy_layer *L) {
    hyena_priv *P = L->priv;
    if (!P) return;
    hy_modal_conv_free(&P->conv);
    hy_buf *bufs[] = {&P->zp, &P->z, &P->p, &P->hc, &P->y, &P->xpad, &P->wT, &P->dy, &P->dz, &P->dzp, &P->dp, &P->dhc};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) hy_buf_free(bufs[i]);
    hy_modal_cache_free(&P->mc);
    hy_free(P);
    L->priv = NULL;
}

const hy_block_ops hy_block_hyena = {
    .name = "hyena",
    .kinds = HY_KIND_MIXER,
    .summary = "StripedHyena gated convolution (order 2): short filter, modal long filter by a scan, dense out",
    .opts = hyena_opts,
    .n_opts = 3,
    .resolve = hy_modal_resolve,
    .param_specs = hyena_param_specs,
    .init = hyena_init,
    .forward = hyena_forward,
    .backward = hyena_backward,
    .state_new = hyena_state_new,
    .step = hyena_step,
    .prefill = hyena_prefill,
    .state_free = hyena_state_free,
    .state_bytes = hyena_state_bytes,
    .flop = hyena_flop,
    .train_bytes = hyena_train_bytes,
    .destroy = hyena_destroy,
    .state_tensors = hyena_state_tensors,
    .state_export = hyena_state_export,
    .state_import = hyena_state_import,
};

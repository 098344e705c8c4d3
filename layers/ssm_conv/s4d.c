/* s4d — diagonal S4 mixer (SPEC §2, as state-spaces/s4 models/s4/s4d.py):
 *   yc = Kern ∗ u + D ⊙ u          (modal kernel, causal convolution: layers/ssm_conv/modal_conv.c)
 *   g = gelu(yc)                   (exact erf)
 *   o = output_linear(g) (2H);  out = o[:H] ⊙ sigmoid(o[H:])   (GLU)
 * H = d_model channels, M = d_state/2 complex modes each. Training runs the convolution by the
 * vectorized scan (hy_modal_conv); streaming (step, prefill) the recurrent form with a
 * complex state of M modes per channel. */
#include "core/error.h"
#include "core/gemm.h"
#include "core/mem.h"
#include "core/vmath.h"
#include "layers/ssm_conv/modal_conv.h"
#include "layers/registry.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

enum { OPT_D_STATE, OPT_DT_MIN, OPT_DT_MAX };
static const hy_opt_spec s4d_opts[] = {
    {"d_state", HY_OPT_INT, 64, 2, 2048, 0, "state size N (even): N/2 complex modes per channel"},
    {"dt_min", HY_OPT_FLOAT, 0.001, 1e-8, 10, 0, "smallest initial step dt (log_dt ~ U(ln dt_min, ln dt_max))"},
    {"dt_max", HY_OPT_FLOAT, 0.1, 1e-8, 10, 0, "largest initial step dt (>= dt_min)"},
};

enum { P_LOG_DT, P_C, P_LOG_A_REAL, P_A_IMAG, P_D, P_W, P_B, N_P };

typedef struct {
    const float *x;          /* input of the last kept forward (owned by the caller) */
    int B, T;
    bool have_fwd;
    hy_modal_conv conv;      /* the long convolution's training path */
    hy_buf yc, g, o;         /* (rows, H), (rows, H), (rows, 2H) */
    hy_buf dg, dyc, du, dout;
    hy_modal_cache mc;       /* recurrent coefficients for step / prefill */
} s4d_priv;

/* Streaming state: the modal state (B, H, 2, M) and workspaces. */
typedef struct {
    int B;
    float *s;
    hy_buf yc, g, o;
} s4d_state;

/* ---------------------------------------------------------------- options, params ---- */

static int s4d_param_specs(const hy_opts *o, int H, hy_param_spec *out) {
    int M = hy_opt_int(o, OPT_D_STATE) / 2;
    unsigned ssm = HY_PARAM_SSM_LR | HY_PARAM_NO_DECAY;
    if (out) {
        out[P_LOG_DT] = (hy_param_spec){"kernel.log_dt", 1, {H}, ssm};
        out[P_C] = (hy_param_spec){"kernel.C", 3, {H, M, 2}, ssm};
        out[P_LOG_A_REAL] = (hy_param_spec){"kernel.log_A_real", 2, {H, M}, ssm};
        out[P_A_IMAG] = (hy_param_spec){"kernel.A_imag", 2, {H, M}, ssm};
        out[P_D] = (hy_param_spec){"D", 1, {H}, HY_PARAM_NO_DECAY};
        out[P_W] = (hy_param_spec){"output_linear.weight", 3, {2 * H, H, 1}, 0};
        out[P_B] = (hy_param_spec){"output_linear.bias", 1, {2 * H}, 0};
    }
    return N_P;
}

/* SSM part as above; D ~ N(0, 1); output_linear (nn.Conv1d(H, 2H, 1), weight and bias) is a plain
 * linear and the output projection (hy_init_output_linear). */
static void s4d_init(hy_layer *L, hy_rng *rng) {
    int H = L->d_model, M = hy_opt_int(&L->opts, OPT_D_STATE) / 2;
    hy_modal_init(L->p, H, M, L->opts.v[OPT_DT_MIN], L->opts.v[OPT_DT_MAX], rng);
    hy_rng_fill_normal(rng, L->p[P_D], (size_t)H, 1.0f);
    hy_init_output_linear(L, L->p[P_W], L->p[P_B], 2 * H, H, rng);
}

/* ---------------------------------------------------------------- helpers ---- */

static s4d_priv *priv_of(hy_layer *L) {
    if (!L->priv) L->priv = hy_calloc(sizeof(s4d_priv));
    return L->priv;
}

static hy_modal_params modal_view(float **p) { return (hy_modal_params){p[P_LOG_DT], p[P_C], p[P_LOG_A_REAL], p[P_A_IMAG]}; }

/* Exact GELU x·Φ(x) and its derivative Φ(x) + x·φ(x) (hy_normal_cdff: vectorizes). */
static inline float gelu(float x) {
    float pdf;
    return x * hy_normal_cdff(x, &pdf);
}
static inline float gelu_grad(float x) {
    float pdf, cdf = hy_normal_cdff(x, &pdf);
    return HY_FMAF(x, pdf, cdf);
}

/* From yc (the convolution part, rows × H) and u: yc += D ⊙ u, g = gelu(yc), o = W g + b,
 * out = o[:H] ⊙ sigmoid(o[H:]). Shared by forward and prefill. */
static void s4d_tail(hy_layer *L, const float *u, float *yc, float *g, float *o, float *out, size_t rows) {
    int H = L->d_model;
    const float *D = L->p[P_D];
    #pragma omp parallel for schedule(static) if (rows * H > HY_PAR_MIN)
    for (size_t r = 0; r < rows; r++)
        for (int h = 0; h < H; h++) {
            size_t i = r * H + h;
            yc[i] += D[h] * u[i];
            g[i] = gelu(yc[i]);
        }
    hy_linear_forward(o, g, L->p[P_W], L->p[P_B], (int)rows, H, 2 * H);
    #pragma omp parallel for schedule(static) if (rows * H > HY_PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *a = o + r * 2 * H, *b = a + H;
        for (int h = 0; h < H; h++) out[r * H + h] = a[h] * hy_sigmoidf(b[h]);
    }
}

/* ---------------------------------------------------------------- training ---- */

static int s4d_forward(hy_layer *L, const float *x, float *y, int B, int T) {
    s4d_priv *P = priv_of(L);
    int H = L->d_model, M = hy_opt_int(&L->opts, OPT_D_STATE) / 2;
    if (!P) return HY_ERR_NOMEM;
    P->have_fwd = false;
    if (B <= 0 || T <= 0) return 0;
    size_t rows = (size_t)B * T;
    if (!hy_buf_grab(&P->yc, rows * H) || !hy_buf_grab(&P->g, rows * H) || !hy_buf_grab(&P->o, rows * 2 * H))
        return HY_ERR_NOMEM;
    hy_modal_params mp = modal_view(L->p);
    int rc = hy_modal_conv_forward(&P->conv, &mp, H, M, x, P->yc.p, B, T);
    if (rc < 0) return rc;
    s4d_tail(L, x, P->yc.p, P->g.p, P->o.p, y, rows);
    P->x = x, P->B = B, P->T = T, P->have_fwd = L->keep_for_backward;
    return 0;
}

static int s4d_backward(hy_layer *L, const float *dy, float *dx, int B, int T) {
    s4d_priv *P = L->priv;
    int H = L->d_model;
    if (B <= 0 || T <= 0) return 0;
    if (!P || !P->have_fwd || P->B != B || P->T != T) return hy_fail("s4d: backward without a matching kept forward");
    size_t rows = (size_t)B * T;
    if (!hy_buf_grab(&P->dout, rows * 2 * H) || !hy_buf_grab(&P->dg, rows * H) || !hy_buf_grab(&P->dyc, rows * H) ||
        !hy_buf_grab(&P->du, rows * H))
        return HY_ERR_NOMEM;
    float *o = P->o.p, *dout = P->dout.p;
    /* GLU: d a = dy ⊙ σ(b), d b = dy ⊙ a ⊙ σ(b)(1 - σ(b)) */
    #pragma omp parallel for schedule(static) if (rows * H > HY_PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *a = o + r * 2 * H, *b = a + H, *d = dy + r * H;
        float *da = dout + r * 2 * H, *db = da + H;
        for (int h = 0; h < H; h++) {
            float s = hy_sigmoidf(b[h]);
            da[h] = d[h] * s;
            db[h] = d[h] * a[h] * s * (1.0f - s);
        }
    }
    hy_linear_backward(P->dg.p, L->g[P_W], L->g[P_B], dout, P->g.p, L->p[P_W], (int)rows, H, 2 * H, false);
    const float *yc = P->yc.p, *dg = P->dg.p, *x = P->x, *D = L->p[P_D];
    float *dyc = P->dyc.p;
    #pragma omp parallel for schedule(static) if (rows * H > HY_PAR_MIN)
    for (size_t i = 0; i < rows * H; i++) dyc[i] = dg[i] * gelu_grad(yc[i]);
    hy_modal_params mp = modal_view(L->p), mg = modal_view(L->g);
    int rc = hy_modal_conv_backward(&P->conv, &mp, &mg, x, dyc, P->du.p, B, T);
    if (rc < 0) return rc;
    const float *du = P->du.p;
    #pragma omp parallel for schedule(static) if (rows * H > HY_PAR_MIN)
    for (size_t r = 0; r < rows; r++)
        for (int h = 0; h < H; h++) dx[r * H + h] = du[r * H + h] + D[h] * dyc[r * H + h];
    float *gD = L->g[P_D];
    for (size_t r = 0; r < rows; r++)
        for (int h = 0; h < H; h++) gD[h] += dyc[r * H + h] * x[r * H + h];
    return 0;
}

/* ---------------------------------------------------------------- streaming ---- */

static int s4d_state_new(hy_layer *L, int B, void **state) {
    int H = L->d_model, M = hy_opt_int(&L->opts, OPT_D_STATE) / 2;
    s4d_state *s = hy_calloc(sizeof *s);
    if (!s) return HY_ERR_NOMEM;
    s->B = B;
    s->s = hy_calloc((size_t)B * H * 2 * M * sizeof(float) + 1);
    if (!s->s) {
        hy_free(s);
        return HY_ERR_NOMEM;
    }
    *state = s;
    return 0;
}

/* T tokens from the state by the recurrence x_t = z·x_{t-1} + u_t, then the same tail. */
static int s4d_prefill(hy_layer *L, void *state, const float *x, float *y, int B, int T) {
    s4d_state *s = state;
    s4d_priv *P = priv_of(L);
    int H = L->d_model, M = hy_opt_int(&L->opts, OPT_D_STATE) / 2;
    if (!P) return HY_ERR_NOMEM;
    if (B != s->B) return hy_fail("s4d: state holds %d sequences, got %d", s->B, B);
    if (T <= 0) return 0;
    size_t rows = (size_t)B * T;
    hy_modal_params mp = modal_view(L->p);
    int rc = hy_modal_cache_update(&P->mc, &mp, H, M);
    if (rc < 0) return rc;
    if (!hy_buf_grab(&s->yc, rows * H) || !hy_buf_grab(&s->g, rows * H) || !hy_buf_grab(&s->o, rows * 2 * H))
        return HY_ERR_NOMEM;
    hy_modal_scan(H, M, P->mc.zr.p, P->mc.zi.p, P->mc.ctr.p, P->mc.cti.p, s->s, x, s->yc.p, B, T);
    s4d_tail(L, x, s->yc.p, s->g.p, s->o.p, y, rows);
    return 0;
}

static int s4d_step(hy_layer *L, void *state, const float *x, float *y, int B) {
    return s4d_prefill(L, state, x, y, B, 1);
}

static void s4d_state_free(hy_layer *L, void *state) {
    (void)L;
    s4d_state *s = state;
    if (!s) return;
    hy_free(s->s);
    hy_buf_free(&s->yc), hy_buf_free(&s->g), hy_buf_free(&s->o);
    hy_free(s);
}

/* ---------------------------------------------------------------- state files ---- */

/* The state is one tensor "ssm" (B, H, M, 2): the complex modal state x[m] of every channel as
 * (re, im) pairs, the layout of kernel.C. Nothing else: the recurrence does not depend on the
 * position (the model keeps that). */
static hy_state_tensor s4d_ssm_tensor(hy_layer *L, int B) {
    return (hy_state_tensor){"ssm", 4, {B, L->d_model, hy_opt_int(&L->opts, OPT_D_STATE) / 2, 2}};
}

static int s4d_state_tensors(hy_layer *L, const void *state, hy_state_tensor *out) {
    if (out) out[0] = s4d_ssm_tensor(L, ((const s4d_state *)state)->B);
    return 1;
}

static int s4d_state_export(hy_layer *L, const void *state, int i, float *dst) {
    const s4d_state *s = state;
    if (i != 0) return hy_fail("s4d: no state tensor %d", i);
    hy_modal_state_to_pairs(s->s, dst, (size_t)s->B * L->d_model, hy_opt_int(&L->opts, OPT_D_STATE) / 2);
    return 0;
}

/* Checks the one tensor "ssm" against (B, H, M, 2) and copies it in. */
static int s4d_state_import(hy_layer *L, void *state, int n, const hy_state_tensor *t, const float *const *data) {
    s4d_state *s = state;
    hy_state_tensor want = s4d_ssm_tensor(L, s->B);
    int idx;
    int rc = hy_state_match("s4d", n, t, 1, &want, &idx);
    if (rc < 0) return rc;
    hy_modal_state_from_pairs(s->s, data[idx], (size_t)s->B * L->d_model, want.shape[2]);
    return 0;
}

/* ---------------------------------------------------------------- accounting ---- */

/* M complex numbers per channel, whatever T. */
static size_t s4d_state_bytes(const hy_opts *o, int d, int T) {
    (void)T;
    return (size_t)d * (size_t)hy_opt_int(o, OPT_D_STATE) * sizeof(float);
}

/* The long convolution (hy_modal_conv_flop: the scan), D skip (2·T·H), output linear (2·T·H·2H +
 * bias 2·T·H) and GLU (T·H); the GELU's Φ and the sigmoids are not counted. */
static double s4d_flop(const hy_opts *o, int d, int T) {
    int M = hy_opt_int(o, OPT_D_STATE) / 2;
    return hy_modal_conv_flop(d, M, T) + 2.0 * T * d + 4.0 * T * d * d + 2.0 * T * d +
           (double)T * d;
}

/* Training memory: forward keeps yc, g (rows, H), o (rows, 2H); backward adds dout (rows, 2H),
 * dg, dyc, du (rows, H); plus the convolution's (hy_modal_conv_train_bytes). */
static hy_train_bytes s4d_train_bytes(const hy_opts *o, int H, int B, int T, int threads, bool first) {
    (void)first;
    hy_train_bytes c = hy_modal_conv_train_bytes(H, hy_opt_int(o, OPT_D_STATE) / 2, T, threads);
    c.kept += 9.0 * B * T * H * sizeof(float);
    return c;
}

static void s4d_destroy(hy_layer *L) {
    s4d_priv *P = L->priv;
    if (!P) return;
    hy_modal_conv_free(&P->conv);
    hy_buf *bufs[] = {&P->yc, &P->g, &P->o, &P->dg, &P->dyc, &P->du, &P->dout};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) hy_buf_free(bufs[i]);
    hy_modal_cache_free(&P->mc);
    hy_free(P);
    L->priv = NULL;
}

const hy_block_ops hy_block_s4d = {
    .name = "s4d",
    .kinds = HY_KIND_MIXER,
    .summary = "diagonal S4 (S4D-Lin): modal long convolution by a vectorized scan, D skip, GELU, GLU output",
    .opts = s4d_opts,
    .n_opts = 3,
    .resolve = hy_modal_resolve,
    .param_specs = s4d_param_specs,
    .init = s4d_init,
    .forward = s4d_forward,
    .backward = s4d_backward,
    .state_new = s4d_state_new,
    .step = s4d_step,
    .prefill = s4d_prefill,
    .state_free = s4d_state_free,
    .state_bytes = s4d_state_bytes,
    .flop = s4d_flop,
    .train_bytes = s4d_train_bytes,
    .destroy = s4d_destroy,
    .state_tensors = s4d_state_tensors,
    .state_export = s4d_state_export,
    .state_import = s4d_state_import,
};

/* rwkv7 — RWKV-7 "Goose" time mixing (SPEC §2, RWKV-LM RWKV-v7 x070), C = d_model, H = C/N heads.
 *
 *   xx = shift(x) - x;  x∗ = x + xx ⊙ x_∗                         (∗ = r, w, k, v, a, g)
 *   r = receptance·xr; k0 = key·xk; v = value·xv
 *   w = -softplus(-(w0 + tanh(xw@w1)@w2)) - 0.5;  decay = exp(-exp(w))
 *   v = v + (v_first - v) ⊙ sigmoid(v0 + (xv@v1)@v2)              (not in the first rwkv7 layer)
 *   a = sigmoid(a0 + (xa@a1)@a2);  g = sigmoid(xg@g1)@g2
 *   kk = L2-normalise per head(k0 ⊙ k_k);  k = k0 ⊙ (1 + (a-1) ⊙ k_a)
 *   y = WKV7(r, decay, k, v, q = kk, b = kk ⊙ a)                  (layers/rwkv7/wkv.c)
 *   o = groupnorm_head(y; ln_x, eps 64e-5) + (Σ_j r_j k_j r_k[h,j]) v;  out = output·(o ⊙ g)
 *
 * All products go through hy_gemm / hy_linear_*; the per-channel parameter gradients are column
 * sums, done as a ones-vector product (hy_gemm) over a per-row buffer. Forward keeps what backward
 * needs (about 20 (B·T, C) buffers, the LoRA hiddens, sq and the chunk states of the recurrence);
 * the six mixed inputs are recomputed in backward (layers/rwkv7/rwkv7_backward.c). Streaming (step, prefill) runs the same forward
 * from a state: S per head (key-major) and the last input for the token shift. */
#include "layers/rwkv7/rwkv7_priv.h"
#include "core/error.h"
#include "core/gemm.h"
#include "core/mem.h"
#include "core/vmath.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

static const hy_opt_spec rw_opts[] = {
    {"head_size", HY_OPT_INT, 64, 1, 4096, 0, "head size N (state N×N per head); must divide d_model"},
    {"d_decay_lora", HY_OPT_INT, 0, 1, 1 << 16, HY_OPT_DEFAULT_AUTO,
     "decay LoRA rank; auto = max(32, round(2.5·sqrt(d)/32)·32)"},
    {"d_aaa_lora", HY_OPT_INT, 0, 1, 1 << 16, HY_OPT_DEFAULT_AUTO,
     "in-context learning rate LoRA rank; auto = max(32, round(2.5·sqrt(d)/32)·32)"},
    {"d_mv_lora", HY_OPT_INT, 0, 1, 1 << 16, HY_OPT_DEFAULT_AUTO,
     "value residual LoRA rank; auto = max(32, round(1.7·sqrt(d)/32)·32)"},
    {"d_gate_lora", HY_OPT_INT, 0, 1, 1 << 16, HY_OPT_DEFAULT_AUTO,
     "gate LoRA rank; auto = max(32, round(5·sqrt(d)/32)·32)"},
};

typedef struct {
    int B;
    float *S, *xprev;   /* (B, H, N, N) key-major; (B, C) */
} rw_state;

/* ---------------------------------------------------------------- options, params ---- */

/* SPEC's LoRA size: max(32, round(f·sqrt(C)/32)·32), round half to even as Python's round(). */
static int lora_size(double f, int C) {
    double v = nearbyint(f * sqrt((double)C) / 32.0) * 32.0;
    return v > 32 ? (int)v : 32;
}

static int rw_resolve(hy_opts *o, int d, int *bad_opt, char *msg, size_t msg_len) {
    int N = hy_opt_int(o, OPT_HEAD);
    if (N > d || d % N) {
        *bad_opt = OPT_HEAD;
        snprintf(msg, msg_len, "head_size = %d does not divide d_model = %d", N, d);
        return HY_ERR_CONFIG;
    }
    const double f[5] = {0, 2.5, 2.5, 1.7, 5.0};
    for (int i = OPT_DW; i <= OPT_DG; i++)
        if (o->is_auto[i]) o->v[i] = lora_size(f[i], d), o->is_auto[i] = false;
    return 0;
}

static int rw_param_specs(const hy_opts *o, int d, hy_param_spec *out) {
    geom g = geom_of(o, d);
    int C = g.C;
    if (out) {
        const char *vec[] = {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"};
        for (int i = 0; i < 6; i++) out[P_XR + i] = (hy_param_spec){vec[i], 3, {1, 1, C}, HY_PARAM_NO_DECAY};
        /* Upstream decays only the 2-D ".weight" tensors: LoRA matrices and r_k are not decayed. */
        out[P_W0] = (hy_param_spec){"w0", 3, {1, 1, C}, HY_PARAM_NO_DECAY};
        out[P_W1] = (hy_param_spec){"w1", 2, {C, g.Dw}, HY_PARAM_NO_DECAY};
        out[P_W2] = (hy_param_spec){"w2", 2, {g.Dw, C}, HY_PARAM_NO_DECAY};
        out[P_A0] = (hy_param_spec){"a0", 3, {1, 1, C}, HY_PARAM_NO_DECAY};
        out[P_A1] = (hy_param_spec){"a1", 2, {C, g.Da}, HY_PARAM_NO_DECAY};
        out[P_A2] = (hy_param_spec){"a2", 2, {g.Da, C}, HY_PARAM_NO_DECAY};
        out[P_V0] = (hy_param_spec){"v0", 3, {1, 1, C}, HY_PARAM_NO_DECAY};
        out[P_V1] = (hy_param_spec){"v1", 2, {C, g.Dv}, HY_PARAM_NO_DECAY};
        out[P_V2] = (hy_param_spec){"v2", 2, {g.Dv, C}, HY_PARAM_NO_DECAY};
        out[P_G1] = (hy_param_spec){"g1", 2, {C, g.Dg}, HY_PARAM_NO_DECAY};
        out[P_G2] = (hy_param_spec){"g2", 2, {g.Dg, C}, HY_PARAM_NO_DECAY};
        out[P_KK] = (hy_param_spec){"k_k", 3, {1, 1, C}, HY_PARAM_NO_DECAY};
        out[P_KA] = (hy_param_spec){"k_a", 3, {1, 1, C}, HY_PARAM_NO_DECAY};
        out[P_RK] = (hy_param_spec){"r_k", 2, {g.H, g.N}, HY_PARAM_NO_DECAY};
        out[P_WR] = (hy_param_spec){"receptance.weight", 2, {C, C}, 0};
        out[P_WK] = (hy_param_spec){"key.weight", 2, {C, C}, 0};
        out[P_WV] = (hy_param_spec){"value.weight", 2, {C, C}, 0};
        out[P_WO] = (hy_param_spec){"output.weight", 2, {C, C}, 0};
        out[P_LNW] = (hy_param_spec){"ln_x.weight", 1, {C}, HY_PARAM_NO_DECAY};
        out[P_LNB] = (hy_param_spec){"ln_x.bias", 1, {C}, HY_PARAM_NO_DECAY};
    }
    return P_COUNT;
}

/* torch.nn.init.orthogonal_ on a (rows, cols) matrix times `gain`: orthonormal rows (rows <= cols)
 * or columns, from a Gaussian matrix by modified Gram-Schmidt (the same Haar distribution as QR). */
static void ortho_init(float *W, int rows, int cols, float gain, hy_rng *rng) {
    int n = rows <= cols ? rows : cols, m = rows <= cols ? cols : rows;
    double *V = hy_malloc(sizeof(double) * (size_t)n * m);
    if (!V) return;
    for (size_t i = 0; i < (size_t)n * m; i++) V[i] = hy_rng_normal(rng);
    for (int a = 0; a < n; a++) {
        double *va = V + (size_t)a * m;
        for (int b = 0; b < a; b++) {
            double *vb = V + (size_t)b * m, dot = 0;
            for (int i = 0; i < m; i++) dot += va[i] * vb[i];
            for (int i = 0; i < m; i++) va[i] -= dot * vb[i];
        }
        double nrm = 0;
        for (int i = 0; i < m; i++) nrm += va[i] * va[i];
        nrm = nrm > 0 ? 1.0 / sqrt(nrm) : 0;
        for (int i = 0; i < m; i++) va[i] *= nrm;
    }
    for (int a = 0; a < n; a++)   /* vector a = row a (rows <= cols) or column a */
        for (int i = 0; i < m; i++) {
            float v = (float)(gain * V[(size_t)a * m + i]);
            if (rows <= cols) W[(size_t)a * cols + i] = v;
            else W[(size_t)i * cols + a] = v;
        }
    hy_free(V);
}

/* Upstream RWKV-LM RWKV-v7/train_temp/src/model.py RWKV_Tmix_x070.__init__ (see docs/blocks.md):
 * depth ratios from the layer index and the stack's n_layers, per-channel curves for the mixing
 * vectors and w0, a0, v0, k_k; LoRA down-matrices zero, up-matrices orthogonal × 0.1; ln_x = (1, 0).
 * receptance, key, value, output are plain linears, output the output projection
 * (hy_init_output_linear; upstream has U(±0.5/√C),
 * U(±0.05/√C), U(±0.5/√C) and zero). */
static void rw_init(hy_layer *L, hy_rng *rng) {
    geom g = geom_of(&L->opts, L->d_model);
    int C = g.C, N = g.N, id = L->index, nl = hy_stack_depth(L);
    double r01 = nl > 1 ? (double)id / (nl - 1) : 0.0, r10 = 1.0 - (double)id / nl;
    const double xp[6] = {0.2, 0.9, 0.7, 0.7, 0.9, 0.2};   /* x_r, x_w, x_k, x_v, x_a, x_g */
    for (int c = 0; c < C; c++) {
        double ddd = (double)c / C, lin = C > 1 ? (double)c / (C - 1) - 0.5 : 0.0;
        double zz = N > 1 ? ((c % N) - (N - 1) / 2.0) / ((N - 1) / 2.0) : 0.0;
        zz = zz * fabs(zz);
        for (int i = 0; i < 6; i++) L->p[P_XR + i][c] = (float)(1.0 - pow(ddd, xp[i] * r10));
        double www = -6.0 + 6.0 * pow(C > 1 ? (double)c / (C - 1) : 0.0, 1.0 + pow(r01, 0.3));
        L->p[P_W0][c] = (float)(www + 0.5 + zz * 2.5);
        L->p[P_A0][c] = (float)(-0.19 + zz * 0.3 + lin * 0.4);
        L->p[P_V0][c] = (float)(0.73 - lin * 0.4);
        L->p[P_KK][c] = (float)(0.71 - lin * 0.1);
        L->p[P_KA][c] = 1.02f;
        L->p[P_LNW][c] = 1.0f, L->p[P_LNB][c] = 0.0f;
        L->p[P_RK][c] = -0.04f;   /* (H, N) flattened */
    }
    const int lo[4] = {P_W1, P_A1, P_V1, P_G1}, D[4] = {g.Dw, g.Da, g.Dv, g.Dg};
    for (int i = 0; i < 4; i++) {
        memset(L->p[lo[i]], 0, sizeof(float) * (size_t)C * D[i]);
        float gain = D[i] > C ? sqrtf((float)D[i] / C) : 1.0f;
        ortho_init(L->p[lo[i] + 1], D[i], C, 0.1f * gain, rng);
    }
    hy_init_linear(L->p[P_WR], NULL, C, C, rng);
    hy_init_linear(L->p[P_WK], NULL, C, C, rng);
    hy_init_linear(L->p[P_WV], NULL, C, C, rng);
    hy_init_output_linear(L, L->p[P_WO], NULL, C, C, rng);
}

/* ---------------------------------------------------------------- helpers ---- */

static rw_priv *priv_of(hy_layer *L) {
    if (!L->priv) L->priv = hy_calloc(sizeof(rw_priv));
    return L->priv;
}


/* ---------------------------------------------------------------- forward ---- */

/* The forward's working set: the layer, its caches, its parameters and the batch geometry. */
typedef struct {
    hy_layer *L;
    rw_priv *P;
    geom g;
    int B, T;
    size_t rows, n;
    float *const *p;
    const float *x;
    bool first;   /* this layer writes v_first (the first rwkv7 layer) */
} rw_fwd;

/* Grows the caches to this batch (the chunk checkpoints of the state only when keeping for backward). */
static int fwd_prepare(rw_fwd *c, bool keep) {
    rw_priv *P = c->P;
    const geom g = c->g;
    const size_t rows = c->rows, n = c->n;
    float **big[] = {&P->r, &P->dec, &P->k, &P->v, &P->kk, &P->b, &P->sq, &P->y,   /* HY_WKV7_SLOT_R .. Y */
                     &P->xx, &P->xm, &P->k0, &P->w, &P->a, &P->g, &P->op};
    enum { NBIG = sizeof big / sizeof *big };
    float *at[NBIG];
    if (!hy_buf_grab_skewed(&P->fwd_arrays, n, NBIG, HY_WKV7_SLOT_R, at)) return HY_ERR_NOMEM;
    for (int i = 0; i < NBIG; i++) *big[i] = at[i];
    if (!hy_buf_grab(&P->hw, rows * g.Dw) || !hy_buf_grab(&P->ha, rows * g.Da) || !hy_buf_grab(&P->hg, rows * g.Dg) ||
        !hy_buf_grab(&P->kinv, rows * g.H) || !hy_buf_grab(&P->mean, rows * g.H) || !hy_buf_grab(&P->rstd, rows * g.H))
        return HY_ERR_NOMEM;
    if (!c->first && (!hy_buf_grab(&P->hv, rows * g.Dv) || !hy_buf_grab(&P->vg, n) || !hy_buf_grab(&P->vdiff, n)))
        return HY_ERR_NOMEM;
    if (keep && !hy_buf_grab(&P->ckpt, (size_t)c->B * g.H * hy_wkv7_nchunks(c->T) * g.N * g.N))
        return HY_ERR_NOMEM;
    return 0;
}

/* Token shift xx_t = x_{t-1} - x_t, with xprev (B, C) as the token before each sequence (NULL = zeros). */
static void fwd_token_shift(rw_fwd *c, const float *xprev) {
    const int C = c->g.C, T = c->T;
    const float *x = c->x;
    float *xx = c->P->xx;
    #pragma omp parallel for schedule(static) if (c->rows * (size_t)C >= PAR_MIN)
    for (size_t r = 0; r < c->rows; r++) {
        int t = (int)(r % T), b = (int)(r / T);
        const float *prev = t ? x + (r - 1) * C : xprev ? xprev + (size_t)b * C : NULL;
        #pragma omp simd
        for (int ch = 0; ch < C; ch++) xx[r * C + ch] = (prev ? prev[ch] : 0.0f) - x[r * C + ch];
    }
}

/* r, k0 and v; the first layer publishes v as v_first (and zeroes its gradient when keeping),
 * later layers mix v toward v_first through the value-residual gate. */
static int fwd_projections(rw_fwd *c, bool keep) {
    rw_priv *P = c->P;
    float *const *p = c->p;
    const int C = c->g.C;
    const size_t rows = c->rows, n = c->n;
    const float *x = c->x;
    float *xx = P->xx, *xm = P->xm, *v = P->v;
    hy_first_slot *vf1 = c->L->first;   /* v_first: written by the first rwkv7 layer, read by the later ones */
    mix(xm, x, xx, p[P_XR], rows, C);
    hy_linear_forward(P->r, xm, p[P_WR], NULL, (int)rows, C, C);
    mix(xm, x, xx, p[P_XK], rows, C);
    hy_linear_forward(P->k0, xm, p[P_WK], NULL, (int)rows, C, C);
    mix(xm, x, xx, p[P_XV], rows, C);
    hy_linear_forward(v, xm, p[P_WV], NULL, (int)rows, C, C);
    if (c->first) {
        if (vf1) {
            if (!hy_buf_grab(&vf1->value, n)) return HY_ERR_NOMEM;
            memcpy(vf1->value.p, v, n * sizeof(float));
            vf1->rows = rows;
            if (keep) {
                if (!hy_buf_grab(&vf1->grad, n)) return HY_ERR_NOMEM;
                memset(vf1->grad.p, 0, n * sizeof(float));
            }
        }
        return 0;
    }
    if (!vf1->value.p || vf1->rows != rows)
        return hy_fail("rwkv7: layer %d needs v_first of the same batch from the first rwkv7 layer (layer %d)",
                       c->L->index, vf1->layer);
    xw(P->hv.p, xm, p[P_V1], rows, C, c->g.Dv);
    xw(P->vg.p, P->hv.p, p[P_V2], rows, c->g.Dv, C);
    float *vg = P->vg.p, *vd = P->vdiff.p, *vf = vf1->value.p, *v0 = p[P_V0];
    #pragma omp parallel for schedule(static) if (rows * (size_t)C >= PAR_MIN)
    for (size_t r = 0; r < rows; r++)
        #pragma omp simd
        for (int ch = 0; ch < C; ch++) {
            size_t i = r * C + ch;
            float s = hy_sigmoidf(v0[ch] + vg[i]);
            vg[i] = s;
            vd[i] = vf[i] - v[i];
            v[i] += vd[i] * s;
        }
    return 0;
}

/* The data-dependent decay: w = -softplus(-(w0 + tanh(xw@w1)@w2)) - 0.5, decay = exp(-exp(w)). */
static void fwd_decay(rw_fwd *c) {
    rw_priv *P = c->P;
    float *const *p = c->p;
    const int C = c->g.C;
    const size_t rows = c->rows;
    mix(P->xm, c->x, P->xx, p[P_XW], rows, C);
    xw(P->hw.p, P->xm, p[P_W1], rows, C, c->g.Dw);
    float *h = P->hw.p;
    size_t nh = rows * c->g.Dw;
    #pragma omp parallel for schedule(static) if (nh >= PAR_MIN)
    for (size_t i = 0; i < nh; i++) h[i] = 1.0f - 2.0f / (hy_expf(2.0f * h[i]) + 1.0f);   /* tanh */
    xw(P->w, P->hw.p, p[P_W2], rows, c->g.Dw, C);
    float *w = P->w, *dec = P->dec, *w0 = p[P_W0];
    #pragma omp parallel for schedule(static) if (rows * (size_t)C >= PAR_MIN)
    for (size_t r = 0; r < rows; r++)
        #pragma omp simd
        for (int ch = 0; ch < C; ch++) {
            size_t i = r * C + ch;
            float wv = -hy_softplusf_atanh(-(w0[ch] + w[i])) - 0.5f;
            w[i] = wv;
            dec[i] = hy_expf(-hy_expf(wv));
        }
}

/* The in-context learning rate a = sigmoid(a0 + (xa@a1)@a2) and the gate g = sigmoid(xg@g1)@g2. */
static void fwd_rate_gate(rw_fwd *c) {
    rw_priv *P = c->P;
    float *const *p = c->p;
    const int C = c->g.C;
    const size_t rows = c->rows;
    mix(P->xm, c->x, P->xx, p[P_XA], rows, C);
    xw(P->ha.p, P->xm, p[P_A1], rows, C, c->g.Da);
    xw(P->a, P->ha.p, p[P_A2], rows, c->g.Da, C);
    float *a = P->a, *a0 = p[P_A0];
    #pragma omp parallel for schedule(static) if (rows * (size_t)C >= PAR_MIN)
    for (size_t r = 0; r < rows; r++)
        #pragma omp simd
        for (int ch = 0; ch < C; ch++) a[r * C + ch] = hy_sigmoidf(a0[ch] + a[r * C + ch]);
    mix(P->xm, c->x, P->xx, p[P_XG], rows, C);
    xw(P->hg.p, P->xm, p[P_G1], rows, C, c->g.Dg);
    float *h = P->hg.p;
    size_t nh = rows * c->g.Dg;
    #pragma omp parallel for schedule(static) if (nh >= PAR_MIN)
    for (size_t i = 0; i < nh; i++) h[i] = hy_sigmoidf(h[i]);
    xw(P->g, P->hg.p, p[P_G2], rows, c->g.Dg, C);
}

/* kk = normalise(k0 ⊙ k_k) per head, b = kk ⊙ a, k = k0 ⊙ (1 + (a-1) ⊙ k_a). */
static void fwd_keys(rw_fwd *c) {
    rw_priv *P = c->P;
    const int C = c->g.C, H = c->g.H, N = c->g.N;
    const size_t rows = c->rows;
    float *k0 = P->k0, *k = P->k, *kk = P->kk, *kinv = P->kinv.p, *b = P->b, *a = P->a;
    const float *kkw = c->p[P_KK], *ka = c->p[P_KA];
    #pragma omp parallel for schedule(static) if (rows * (size_t)C >= PAR_MIN)
    for (size_t r = 0; r < rows; r++)
        for (int h = 0; h < H; h++) {
            size_t o = r * C + (size_t)h * N;
            vw acc = {0};
            for (int j = 0; j < N; j += HY_VW) {
                const vw u = rw_load(k0 + o, j, N) * rw_load(kkw + (size_t)h * N, j, N);
                acc += u * u;
            }
            float ss = vw_hsum(acc), nrm = sqrtf(ss), inv = 1.0f / (nrm > 1e-12f ? nrm : 1e-12f);
            kinv[r * H + h] = inv;
            #pragma omp simd
            for (int j = 0; j < N; j++) {
                int ch = h * N + j;
                float q = k0[o + j] * kkw[ch] * inv;
                kk[o + j] = q;
                b[o + j] = q * a[o + j];
                k[o + j] = k0[o + j] * (1.0f + (a[o + j] - 1.0f) * ka[ch]);
            }
        }
}

/* Group norm per head plus the r_k bonus, the gate (in the same pass), and the output projection
 * into out. */
static void fwd_output(rw_fwd *c, float *out) {
    rw_priv *P = c->P;
    float *const *p = c->p;
    const int C = c->g.C, H = c->g.H, N = c->g.N;
    const size_t rows = c->rows;
    float *y = P->y, *op = P->op, *mean = P->mean.p, *rstd = P->rstd.p, *r = P->r, *k = P->k, *v = P->v;
    float *gg = P->g, *xm = P->xm;
    const float *lnw = p[P_LNW], *lnb = p[P_LNB], *rk = p[P_RK];
    #pragma omp parallel for schedule(static) if (rows * (size_t)C >= PAR_MIN)
    for (size_t row = 0; row < rows; row++)
        for (int h = 0; h < H; h++) {
            size_t o = row * C + (size_t)h * N;
            const float mu = rw_sum(y + o, N) / N, bonus = rw_dot3(r + o, k + o, rk + (size_t)h * N, N);
            vw acc = {0};
            for (int j = 0; j < N; j += HY_VW) {   /* Σ (y − mu)², the tail's lanes kept at 0 */
                const vw d = vw_keep(rw_load(y + o, j, N) - mu, vw_mask_first(N - j));
                acc += d * d;
            }
            float var = vw_hsum(acc), rs = 1.0f / sqrtf(var / N + 64e-5f);
            mean[row * H + h] = mu, rstd[row * H + h] = rs;
            #pragma omp simd
            for (int j = 0; j < N; j++) {
                int ch = h * N + j;
                const float u = (y[o + j] - mu) * rs * lnw[ch] + lnb[ch] + bonus * v[o + j];
                op[o + j] = u, xm[o + j] = u * gg[o + j];   /* the output projection's input, op ⊙ g */
            }
        }
    P->xm_gated = true;   /* the backward's output projection reads it from here */
    hy_linear_forward(out, xm, p[P_WO], NULL, (int)rows, C, C);
}

/* The forward of B sequences of T tokens from an optional state: xprev (B, C) is the token before
 * each sequence (NULL = zeros) and S (B, H, N, N) the recurrent state (NULL = zeros), both
 * updated when given. Keeps caches for backward when keep (training: xprev = S = NULL). */
static int rw_forward_core(hy_layer *L, const float *x, float *out, int B, int T, float *xprev, float *S, bool keep) {
    rw_priv *P = priv_of(L);
    if (!P) return HY_ERR_NOMEM;
    P->have_fwd = false;
    if (B <= 0 || T <= 0) return 0;
    rw_fwd c = {L, P, geom_of(&L->opts, L->d_model), B, T, 0, 0, L->p, x, hy_first_writes(L)};
    c.rows = (size_t)B * T, c.n = c.rows * c.g.C;
    int rc = fwd_prepare(&c, keep);
    if (rc < 0) return rc;
    fwd_token_shift(&c, xprev);
    if ((rc = fwd_projections(&c, keep)) < 0) return rc;
    fwd_decay(&c);
    fwd_rate_gate(&c);
    fwd_keys(&c);
    hy_wkv7_in in = {B, T, c.g.H, c.g.N, P->r, P->dec, P->k, P->v, P->kk, P->b};
    if ((rc = hy_wkv7_forward(&in, S, P->y, P->sq, keep ? P->ckpt.p : NULL, &P->wkv_work)) < 0) return rc;
    fwd_output(&c, out);
    const int C = c.g.C;
    if (xprev)
        for (int b = 0; b < B; b++) memcpy(xprev + (size_t)b * C, x + ((size_t)b * T + T - 1) * C, C * sizeof(float));
    P->x = x, P->B = B, P->T = T, P->first = c.first, P->have_fwd = keep;
    return 0;
}

static int rw_forward(hy_layer *L, const float *x, float *y, int B, int T) {
    return rw_forward_core(L, x, y, B, T, NULL, NULL, L->keep_for_backward);
}

/* ---------------------------------------------------------------- streaming ---- */

static int rw_state_new(hy_layer *L, int B, void **state) {
    geom g = geom_of(&L->opts, L->d_model);
    rw_state *s = hy_calloc(sizeof *s);
    if (!s) return HY_ERR_NOMEM;
    s->B = B;
    s->S = hy_calloc(sizeof(float) * (size_t)B * g.H * g.N * g.N);
    s->xprev = hy_calloc(sizeof(float) * (size_t)B * g.C);
    *state = s;
    if (!s->S || !s->xprev) {
        hy_free(s->S), hy_free(s->xprev), hy_free(s);
        *state = NULL;
        return HY_ERR_NOMEM;
    }
    return 0;
}

static void rw_state_free(hy_layer *L, void *state) {
    (void)L;
    rw_state *s = state;
    if (!s) return;
    hy_free(s->S), hy_free(s->xprev), hy_free(s);
}

/* T tokens per sequence from the state (x: (B, T, d)); v_first goes through L->first, the model's slot. */
static int rw_prefill(hy_layer *L, void *state, const float *x, float *y, int B, int T) {
    rw_state *s = state;
    if (B != s->B) return hy_fail("rwkv7: state holds %d sequences, got %d", s->B, B);
    return rw_forward_core(L, x, y, B, T, s->xprev, s->S, false);
}

static int rw_step(hy_layer *L, void *state, const float *x, float *y, int B) {
    return rw_prefill(L, state, x, y, B, 1);
}

/* State files (registry.h's state_* ops): "shift" (B, C), the last input of the token shift, and
 * "wkv" (B, H, N, N), S per head in the SPEC's layout (row i = value index, col j = key index, as
 * upstream's (H, N, N) state); internally S is key-major, so export/import transpose each head.
 * v_first needs nothing: the first rwkv7 layer recomputes it for every token it consumes. */
static void rw_tensors_of(hy_layer *L, int B, hy_state_tensor *out) {
    geom g = geom_of(&L->opts, L->d_model);
    out[0] = (hy_state_tensor){"shift", 2, {B, g.C}};
    out[1] = (hy_state_tensor){"wkv", 4, {B, g.H, g.N, g.N}};
}

static int rw_state_tensors(hy_layer *L, const void *state, hy_state_tensor *out) {
    if (out) rw_tensors_of(L, ((const rw_state *)state)->B, out);
    return 2;
}

/* Per head: dst[i][j] = src[j][i] (N×N), for BH heads; its own inverse. */
static void transpose_heads(float *restrict dst, const float *restrict src, size_t BH, int N) {
    size_t NN = (size_t)N * N;
    for (size_t h = 0; h < BH; h++)
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) dst[h * NN + (size_t)i * N + j] = src[h * NN + (size_t)j * N + i];
}

static int rw_state_export(hy_layer *L, const void *state, int i, float *dst) {
    const rw_state *s = state;
    geom g = geom_of(&L->opts, L->d_model);
    if (i == 0) memcpy(dst, s->xprev, sizeof(float) * (size_t)s->B * g.C);
    else if (i == 1) transpose_heads(dst, s->S, (size_t)s->B * g.H, g.N);
    else return hy_fail("rwkv7: no state tensor %d", i);
    return 0;
}

/* Checks "shift" (B, C) and "wkv" (B, H, N, N) and copies them in. */
static int rw_state_import(hy_layer *L, void *state, int n, const hy_state_tensor *t, const float *const *data) {
    rw_state *s = state;
    geom g = geom_of(&L->opts, L->d_model);
    hy_state_tensor want[2];
    int idx[2];
    rw_tensors_of(L, s->B, want);
    int rc = hy_state_match("rwkv7", n, t, 2, want, idx);
    if (rc < 0) return rc;
    memcpy(s->xprev, data[idx[0]], sizeof(float) * (size_t)s->B * g.C);
    transpose_heads(s->S, data[idx[1]], (size_t)s->B * g.H, g.N);
    return 0;
}

/* ---------------------------------------------------------------- accounting ---- */

/* S (H·N² floats) and the shift input (C floats), whatever T. */
static size_t rw_state_bytes(const hy_opts *o, int d, int T) {
    (void)T;
    geom g = geom_of(o, d);
    return ((size_t)g.H * g.N * g.N + (size_t)g.C) * sizeof(float);
}

/* Per token (multiply-add = 2): four C×C projections 8C², the LoRAs 4C·(Dw + Da + Dv + Dg) (the
 * value-residual one counted although the first rwkv7 layer skips it), the recurrence 9·C·N (sq
 * 2N², update 5N², y 2N² per head). Elementwise work (shift, norms, gates) is not counted. */
static double rw_flop(const hy_opts *o, int d, int T) {
    geom g = geom_of(o, d);
    return (double)T * (8.0 * g.C * g.C + 4.0 * g.C * (g.Dw + g.Da + g.Dv + g.Dg) + 9.0 * g.C * g.N);
}

/* Training memory. Forward keeps 15 (rows, C) arrays (one skewed workspace: hy_skewed_floats), the LoRA hiddens hw, ha, hg (and hv, with vg
 * and vdiff (rows, C), in every layer but the block's first), kinv, mean, rstd (rows, H), the
 * recurrence's checkpoints (B, H, chunks, N, N) and its workspace (kept between calls); backward
 * adds 11 (rows, C) arrays (another), dhw (rows, largest LoRA width) and ones (rows). No scratch. */
static hy_train_bytes rw_train_bytes(const hy_opts *o, int d, int B, int T, int threads, bool first) {
    geom g = geom_of(o, d);
    double rows = (double)B * T, n = rows * g.C;
    int Dmax = g.Dw > g.Da ? g.Dw : g.Da;
    Dmax = Dmax > g.Dv ? Dmax : g.Dv;
    Dmax = Dmax > g.Dg ? Dmax : g.Dg;
    double fwd = (double)hy_skewed_floats((size_t)n, 15) + rows * (g.Dw + g.Da + g.Dg + 3.0 * g.H) + (double)B * g.H * hy_wkv7_nchunks(T) * g.N * g.N +
                 (first ? 0 : 2 * n + rows * g.Dv);
    double bwd = (double)hy_skewed_floats((size_t)n, 11) + rows * Dmax + rows, work = hy_wkv7_work_floats(B, g.H, g.N, threads);
    return (hy_train_bytes){(fwd + bwd + work) * sizeof(float), 0};
}

static void rw_destroy(hy_layer *L) {
    rw_priv *P = L->priv;   /* (v_first's buffers belong to the model's slot: hy_shared_free) */
    if (!P) return;
    hy_buf *bufs[] = {&P->fwd_arrays, &P->bwd_arrays, &P->hw, &P->hv, &P->vg, &P->vdiff, &P->ha, &P->hg, &P->kinv,
                      &P->ckpt, &P->mean, &P->rstd, &P->ones, &P->dhw, &P->wkv_work};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) hy_buf_free(bufs[i]);
    hy_free(P);
    L->priv = NULL;
}

const hy_block_ops hy_block_rwkv7 = {
    .name = "rwkv7",
    .kinds = HY_KIND_MIXER,
    .flags = HY_BLOCK_FIRST_VALUE,   /* v_first, the value residual: L->first */
    .summary = "RWKV-7 Goose time mixing (x070): generalized delta rule state, value residual, LoRA gates",
    .opts = rw_opts,
    .n_opts = 5,
    .resolve = rw_resolve,
    .param_specs = rw_param_specs,
    .init = rw_init,
    .forward = rw_forward,
    .backward = hy_rwkv7_backward,
    .state_new = rw_state_new,
    .step = rw_step,
    .prefill = rw_prefill,
    .state_free = rw_state_free,
    .state_bytes = rw_state_bytes,
    .flop = rw_flop,
    .train_bytes = rw_train_bytes,
    .destroy = rw_destroy,
    .state_tensors = rw_state_tensors,
    .state_export = rw_state_export,
    .state_import = rw_state_import,
};

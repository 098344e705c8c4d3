/* rwkv7 — backward of the RWKV-7 time mix (the forward and the formulas are in layers/rwkv7/rwkv7.c).
 * Reverse order of the forward: output projection and gate, group norm and the r_k bonus, the state
 * recurrence (hy_wkv7_backward), kk / k / a, the decay LoRA, the value residual (or, in the first
 * rwkv7 layer, the v_first gradient gathered from later layers), the projections, the token shift.
 * Parameter gradients accumulate; per-channel ones are column sums (ones-vector hy_gemm). */
#include "core/error.h"
#include "core/vmath.h"
#include "layers/rwkv7/rwkv7_priv.h"
#include <string.h>

/* The backward's working set: the layer, its caches and parameter / gradient arrays, and the
 * three scratch rows d1..d3 that each stage hands to the next (their meaning is named per stage). */
typedef struct {
    hy_layer *L;
    rw_priv *P;
    geom g;
    int B, T;
    size_t rows, n;
    float *const *p, *const *gr;
    const float *x, *ones;
    float *dx;
} rw_bwd;

/* Grows the gradient workspaces to this batch, fills the ones vector used for column sums, and
 * checks that a first-layer v_first gradient buffer exists when this layer reads v_first. */
static int bwd_prepare(rw_bwd *c) {
    rw_priv *P = c->P;
    float **big[] = {&P->dy, &P->dr, &P->ddec, &P->dk, &P->dv, &P->dq, &P->db,   /* HY_WKV7_SLOT_DY .. DB */
                     &P->d1, &P->d2, &P->d3, &P->dxx};
    enum { NBIG = sizeof big / sizeof *big };
    float *at[NBIG];
    if (!hy_buf_grab_skewed(&P->bwd_arrays, c->n, NBIG, HY_WKV7_SLOT_DY, at)) return HY_ERR_NOMEM;
    for (int i = 0; i < NBIG; i++) *big[i] = at[i];
    int Dmax = c->g.Dw > c->g.Da ? c->g.Dw : c->g.Da;
    Dmax = Dmax > c->g.Dv ? Dmax : c->g.Dv;
    Dmax = Dmax > c->g.Dg ? Dmax : c->g.Dg;
    if (!hy_buf_grab(&P->dhw, c->rows * Dmax)) return HY_ERR_NOMEM;
    if (P->ones.cap < c->rows) {
        if (!hy_buf_grab(&P->ones, c->rows)) return HY_ERR_NOMEM;
        for (size_t i = 0; i < P->ones.cap; i++) P->ones.p[i] = 1.0f;
    }
    hy_first_slot *vf1 = c->L->first;
    if (!P->first && (!vf1->grad.p || vf1->rows != c->rows))
        return hy_fail("rwkv7: layer %d backward: no v_first gradient buffer of this batch", c->L->index);
    c->ones = P->ones.p;   /* dx and dxx: written first by the gate's mix_backward (bwd_output_gate) */
    return 0;
}

/* Output projection and gate: leaves d1 = d(op), the gradient of the normed recurrence output;
 * the gate's LoRA path adds into dx / dxx. */
static void bwd_output_gate(rw_bwd *c, const float *dyo) {
    rw_priv *P = c->P;
    float *const *p = c->p, *const *gr = c->gr;
    const size_t rows = c->rows, n = c->n;
    const int C = c->g.C;
    float *xm = P->xm, *op = P->op, *gg = P->g, *d1 = P->d1, *d2 = P->d2, *d3 = P->d3, *dh = P->dhw.p;
    /* output projection: d1 = dz; then d2 = dg, d1 = d(op). Its input op ⊙ g is still in xm when
     * nothing has overwritten it since the forward (a second backward of the same forward has) */
    if (!P->xm_gated) {
        #pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (size_t i = 0; i < n; i++) xm[i] = op[i] * gg[i];
    }
    hy_linear_backward(d1, gr[P_WO], NULL, dyo, xm, p[P_WO], (int)rows, C, C, false);
    #pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) d2[i] = d1[i] * op[i], d1[i] *= gg[i];
    /* gate: g = sigmoid(xg@g1)@g2 */
    xw_backward(NULL, gr[P_G2], d2, P->hg.p, p[P_G2], rows, c->g.Dg, C, false);
    hy_gemm(false, true, (int)rows, c->g.Dg, C, 1.0f, d2, C, p[P_G2], C, 0.0f, dh, c->g.Dg);
    float *hg = P->hg.p;
    size_t nh = rows * c->g.Dg;
    #pragma omp parallel for schedule(static) if (nh >= PAR_MIN)
    for (size_t i = 0; i < nh; i++) dh[i] *= hg[i] * (1.0f - hg[i]);
    mix(xm, c->x, P->xx, p[P_XG], rows, C);
    P->xm_gated = false;
    xw_backward(d3, gr[P_G1], dh, xm, p[P_G1], rows, C, c->g.Dg, false);
    mix_backward(d3, c->dx, P->dxx, P->xx, p[P_XG], gr[P_XG], c->ones, rows, C, true);
}

/* Group norm per head and the r_k bonus: from d1 = d(op), seeds dy (the recurrence output's
 * gradient), dr, dk, dv, and accumulates r_k and ln_x weight / bias gradients. */
static void bwd_group_norm(rw_bwd *c) {
    rw_priv *P = c->P;
    const int C = c->g.C, H = c->g.H, N = c->g.N;
    const size_t rows = c->rows;
    const float *restrict y = P->y, *restrict mean = P->mean.p, *restrict rstd = P->rstd.p, *restrict d1 = P->d1;
    float *restrict dy = P->dy, *restrict d2 = P->d2, *restrict d3 = P->d3, *restrict dr = P->dr,
          *restrict dk = P->dk, *restrict dv = P->dv;
    const float *restrict r = P->r, *restrict k = P->k, *restrict v = P->v, *restrict lnw = c->p[P_LNW],
                *restrict rk = c->p[P_RK];
    #pragma omp parallel for schedule(static) if (rows * (size_t)C >= PAR_MIN)
    for (size_t row = 0; row < rows; row++)
        for (int h = 0; h < H; h++) {
            size_t o = row * C + (size_t)h * N;
            const float *lw = lnw + (size_t)h * N;
            const float mu = mean[row * H + h], rs = rstd[row * H + h];
            vw abonus = {0}, adbonus = {0}, am1 = {0}, am2 = {0};
            for (int j = 0; j < N; j += HY_VW) {   /* the tail's lanes load as 0: yh there is −mu·rs, times dn = 0 */
                const vw yh = (rw_load(y + o, j, N) - mu) * rs, dj = rw_load(d1 + o, j, N), dn = dj * rw_load(lw, j, N);
                abonus += rw_load(r + o, j, N) * rw_load(k + o, j, N) * rw_load(rk + (size_t)h * N, j, N);
                adbonus += dj * rw_load(v + o, j, N);
                am1 += dn, am2 += dn * yh;
                if (j + HY_VW <= N) vw_store(d3 + o + j, dj * yh);
                else vw_store_masked(d3 + o + j, vw_mask_first(N - j), dj * yh);
            }
            const float bonus = vw_hsum(abonus), dbonus = vw_hsum(adbonus), m1 = vw_hsum(am1) / N,
                        m2 = vw_hsum(am2) / N;
            #pragma omp simd
            for (int j = 0; j < N; j++) {
                int ch = h * N + j;
                float yh = (y[o + j] - mu) * rs, dn = d1[o + j] * lnw[ch];
                dy[o + j] = rs * (dn - m1 - yh * m2);
                dv[o + j] = bonus * d1[o + j];
                dr[o + j] = dbonus * k[o + j] * rk[ch];
                dk[o + j] = dbonus * r[o + j] * rk[ch];
                d2[o + j] = dbonus * r[o + j] * k[o + j];
            }
        }
    colsum_add(c->gr[P_RK], d2, c->ones, rows, C);
    colsum_add(c->gr[P_LNW], d3, c->ones, rows, C);
    colsum_add(c->gr[P_LNB], d1, c->ones, rows, C);
}

/* The state recurrence (hy_wkv7_backward): into d1 (dr), d2 (dk), d3 (dv), ddec, dq (d kk) and
 * db (d(kk ⊙ a)). */
static int bwd_recurrence(rw_bwd *c) {
    rw_priv *P = c->P;
    hy_wkv7_in in = {c->B, c->T, c->g.H, c->g.N, P->r, P->dec, P->k, P->v, P->kk, P->b};
    int rc = hy_wkv7_backward(&in, P->sq, P->ckpt.p, P->dy, P->d1, P->ddec, P->d2, P->d3, P->dq,
                              P->db, &P->wkv_work);
    return rc < 0 ? rc : 0;
}

/* One pass per (row, head) over what follows the recurrence: its paths summed into dr, dk, dv;
 * b = kk ⊙ a and k = k0 ⊙ (1 + (a-1) ⊙ k_a) (dk becomes d k0, the k_a gradient's terms go to d3);
 * kk = normalise(k0 ⊙ k_k) (d k0 += du ⊙ k_k, the k_k gradient's terms go to db once it is read);
 * and a = sigmoid(·)'s derivative, so that d2 leaves as the gradient of a's pre-activation. One
 * pass instead of three over these (B·T, C) arrays. */
static void bwd_keys(rw_bwd *c) {
    rw_priv *P = c->P;
    const int C = c->g.C, H = c->g.H, N = c->g.N;
    const size_t rows = c->rows;
    float *restrict dr = P->dr, *restrict dk = P->dk, *restrict dv = P->dv, *restrict dq = P->dq,
          *restrict db = P->db, *restrict t1 = P->d1, *restrict t2 = P->d2, *restrict t3 = P->d3;
    const float *restrict a = P->a, *restrict kk = P->kk, *restrict k0 = P->k0, *restrict kinv = P->kinv.p,
                *restrict ka = c->p[P_KA], *restrict kkw = c->p[P_KK];
    #pragma omp parallel for schedule(static) if (rows * (size_t)C >= PAR_MIN)
    for (size_t row = 0; row < rows; row++)
        for (int h = 0; h < H; h++) {
            const size_t o = row * C + (size_t)h * N;
            for (int j = 0; j < N; j++) dq[o + j] += db[o + j] * a[o + j];
            const float inv = kinv[row * H + h], dot = rw_dot(kk + o, dq + o, N);
            const bool clamped = inv >= 1e12f;
            #pragma omp simd
            for (int j = 0; j < N; j++) {
                const size_t i = o + j;
                const int ch = h * N + j;
                dr[i] += t1[i];
                float dkt = dk[i] + t2[i];
                dv[i] += t3[i];
                float da = db[i] * kk[i] + dkt * k0[i] * ka[ch];
                t3[i] = dkt * k0[i] * (a[i] - 1.0f);
                float du = clamped ? dq[i] * inv : (dq[i] - kk[i] * dot) * inv;
                dk[i] = dkt * (1.0f + (a[i] - 1.0f) * ka[ch]) + du * kkw[ch];   /* now d k0 */
                db[i] = du * k0[i];
                t2[i] = da * (a[i] * (1.0f - a[i]));
            }
        }
    colsum_add(c->gr[P_KA], t3, c->ones, rows, C);
    colsum_add(c->gr[P_KK], db, c->ones, rows, C);
}

/* a = sigmoid(a0 + (xa@a1)@a2), from the pre-activation's gradient in d2 (bwd_keys). */
static void bwd_in_context_rate(rw_bwd *c) {
    rw_priv *P = c->P;
    float *const *p = c->p, *const *gr = c->gr;
    const size_t rows = c->rows;
    const int C = c->g.C;
    float *d2 = P->d2, *d3 = P->d3, *dh = P->dhw.p, *xm = P->xm;
    colsum_add(gr[P_A0], d2, c->ones, rows, C);
    xw_backward(dh, gr[P_A2], d2, P->ha.p, p[P_A2], rows, c->g.Da, C, false);
    mix(xm, c->x, P->xx, p[P_XA], rows, C);
    xw_backward(d3, gr[P_A1], dh, xm, p[P_A1], rows, C, c->g.Da, false);
    mix_backward(d3, c->dx, P->dxx, P->xx, p[P_XA], gr[P_XA], c->ones, rows, C, false);
}

/* decay = exp(-exp(w)), w = -softplus(-z) - 0.5, z = w0 + tanh(xw@w1)@w2:
 * dz = ddecay · (-decay·e^w) · sigmoid(-z), sigmoid(-z) = 1 - e^(w + 0.5) */
static void bwd_decay(rw_bwd *c) {
    rw_priv *P = c->P;
    float *const *p = c->p, *const *gr = c->gr;
    const size_t rows = c->rows, n = c->n;
    const int C = c->g.C;
    float *d2 = P->d2, *d3 = P->d3, *dh = P->dhw.p, *xm = P->xm;
    float *ddec = P->ddec, *w = P->w, *dec = P->dec, *hw = P->hw.p;
    #pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float ew = hy_expf(w[i]);
        d2[i] = -ddec[i] * dec[i] * ew * (1.0f - hy_expf(w[i] + 0.5f));
    }
    colsum_add(gr[P_W0], d2, c->ones, rows, C);
    xw_backward(dh, gr[P_W2], d2, hw, p[P_W2], rows, c->g.Dw, C, false);
    size_t nh = rows * c->g.Dw;
    #pragma omp parallel for schedule(static) if (nh >= PAR_MIN)
    for (size_t i = 0; i < nh; i++) dh[i] *= 1.0f - hw[i] * hw[i];
    mix(xm, c->x, P->xx, p[P_XW], rows, C);
    xw_backward(d3, gr[P_W1], dh, xm, p[P_W1], rows, C, c->g.Dw, false);
    mix_backward(d3, c->dx, P->dxx, P->xx, p[P_XW], gr[P_XW], c->ones, rows, C, false);
}

/* v: the value residual toward v_first (later layers), or, in the first layer, the v_first
 * gradient that the later layers gathered; then the value projection. */
static void bwd_value(rw_bwd *c) {
    rw_priv *P = c->P;
    float *const *p = c->p, *const *gr = c->gr;
    const size_t rows = c->rows, n = c->n;
    const int C = c->g.C;
    hy_first_slot *vf1 = c->L->first;
    float *dv = P->dv, *d2 = P->d2, *d3 = P->d3, *dh = P->dhw.p, *xm = P->xm;
    mix(xm, c->x, P->xx, p[P_XV], rows, C);
    if (!P->first) {
        float *vg = P->vg.p, *vd = P->vdiff.p, *dvf = vf1->grad.p;
        #pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            float s = vg[i];
            dvf[i] += dv[i] * s;
            d2[i] = dv[i] * vd[i] * s * (1.0f - s);
            dv[i] *= 1.0f - s;
        }
        colsum_add(gr[P_V0], d2, c->ones, rows, C);
        xw_backward(dh, gr[P_V2], d2, P->hv.p, p[P_V2], rows, c->g.Dv, C, false);
        xw_backward(d3, gr[P_V1], dh, xm, p[P_V1], rows, C, c->g.Dv, false);
        hy_linear_backward(d3, gr[P_WV], NULL, dv, xm, p[P_WV], (int)rows, C, C, true);
    } else {
        if (vf1 && vf1->grad.p && vf1->rows == rows) {
            float *dvf = vf1->grad.p;
            #pragma omp parallel for schedule(static) if (n >= PAR_MIN)
            for (size_t i = 0; i < n; i++) dv[i] += dvf[i], dvf[i] = 0.0f;
        }
        hy_linear_backward(d3, gr[P_WV], NULL, dv, xm, p[P_WV], (int)rows, C, C, false);
    }
    mix_backward(d3, c->dx, P->dxx, P->xx, p[P_XV], gr[P_XV], c->ones, rows, C, false);
}

/* The receptance and key projections, then, in one pass, their mix backwards (mix_backward's sums
 * in the same order) and the token shift xx_t = x_{t-1} - x_t into dx: dxx is complete only once
 * both are in, and the shift reads row t + 1's, which this pass forms again where it needs it.
 * The x_r and x_k gradients' terms go to d2 and ddec (the gradients of r and k, d3 and d1, are
 * read across rows: not overwritten). */
static void bwd_projections_shift(rw_bwd *c) {
    rw_priv *P = c->P;
    float *const *p = c->p, *const *gr = c->gr;
    const size_t rows = c->rows;
    const int C = c->g.C, T = c->T;
    float *restrict dmr = P->d3, *restrict dmk = P->d1, *restrict gmr = P->d2, *restrict gmk = P->ddec,
          *restrict dxx = P->dxx, *restrict dx = c->dx, *xm = P->xm;
    const float *restrict xx = P->xx, *restrict mur = p[P_XR], *restrict muk = p[P_XK];
    mix(xm, c->x, xx, mur, rows, C);
    hy_linear_backward(dmr, gr[P_WR], NULL, P->dr, xm, p[P_WR], (int)rows, C, C, false);
    mix(xm, c->x, xx, muk, rows, C);
    hy_linear_backward(dmk, gr[P_WK], NULL, P->dk, xm, p[P_WK], (int)rows, C, C, false);
    #pragma omp parallel for schedule(static) if (rows * (size_t)C >= PAR_MIN)
    for (size_t row = 0; row < rows; row++) {
        const size_t o = row * C;
        if ((int)(row % T) + 1 < T)   /* dxx of the next row too */
            #pragma omp simd
            for (int ch = 0; ch < C; ch++) {
                const size_t i = o + ch, i1 = i + C;
                const float xxi = (dxx[i] + dmr[i] * mur[ch]) + dmk[i] * muk[ch];
                const float nxx = (dxx[i1] + dmr[i1] * mur[ch]) + dmk[i1] * muk[ch];
                dx[i] = ((dx[i] + dmr[i]) + dmk[i]) + (-xxi + nxx);
                gmr[i] = dmr[i] * xx[i], gmk[i] = dmk[i] * xx[i];
            }
        else
            #pragma omp simd
            for (int ch = 0; ch < C; ch++) {
                const size_t i = o + ch;
                const float xxi = (dxx[i] + dmr[i] * mur[ch]) + dmk[i] * muk[ch];
                dx[i] = ((dx[i] + dmr[i]) + dmk[i]) + -xxi;
                gmr[i] = dmr[i] * xx[i], gmk[i] = dmk[i] * xx[i];
            }
    }
    colsum_add(gr[P_XR], gmr, c->ones, rows, C);
    colsum_add(gr[P_XK], gmk, c->ones, rows, C);
}

/* The block's backward: the stages above in reverse order of the forward. */
int hy_rwkv7_backward(hy_layer *L, const float *dyo, float *dx, int B, int T) {
    rw_priv *P = L->priv;
    if (B <= 0 || T <= 0) return 0;
    if (!P || !P->have_fwd || P->B != B || P->T != T)
        return hy_fail("rwkv7: backward without a matching forward (keep_for_backward)");
    rw_bwd c = {L, P, geom_of(&L->opts, L->d_model), B, T, 0, 0, L->p, L->g, P->x, NULL, dx};
    c.rows = (size_t)B * T, c.n = c.rows * c.g.C;
    int rc = bwd_prepare(&c);
    if (rc < 0) return rc;
    bwd_output_gate(&c, dyo);
    bwd_group_norm(&c);
    if ((rc = bwd_recurrence(&c)) < 0) return rc;
    bwd_keys(&c);
    bwd_in_context_rate(&c);
    bwd_decay(&c);
    bwd_value(&c);
    bwd_projections_shift(&c);
    return 0;
}

/* rwkv7 — backward of the RWKV-7 time mix (the forward and the formulas are in layers/rwkv7/rwkv7.c).
 * Reverse order of the forward: output projection and gate, group norm and the r_k bonus, the state
 * recurrence (hy_wkv7_backward), kk / k / a, the decay LoRA, the value residual (or, in the first
 * rwkv7 layer, the v_first gradient gathered from later layers), the projections, the token shift.
 * Parameter gradients accumulate; per-channel ones are column sums (ones-vector hy_gemm). */
#include "core/error.h"
#include "core/vmath.h"
#include "layers/rwkv7/rwkv7_priv.h"
#include <string.h>

int hy_rwkv7_backward(hy_layer *L, const float *dyo, float *dx, int B, int T) {
    rw_priv *P = L->priv;
    if (B <= 0 || T <= 0) return 0;
    if (!P || !P->have_fwd || P->B != B || P->T != T)
        return hy_fail("rwkv7: backward without a matching forward (keep_for_backward)");
    geom g = geom_of(&L->opts, L->d_model);
    const int C = g.C, H = g.H, N = g.N;
    const size_t rows = (size_t)B * T, n = rows * C;
    hy_first_slot *vf1 = L->first;   /* v_first and its gradient (see rw_forward_core) */
    hy_buf *big[] = {&P->d1, &P->d2, &P->d3, &P->dr, &P->dk, &P->dv, &P->ddec, &P->dq, &P->db, &P->dy, &P->dxx};
    for (size_t i = 0; i < sizeof big / sizeof *big; i++)
        if (!hy_buf_grab(big[i], n)) return HY_ERR_NOMEM;
    int Dmax = g.Dw > g.Da ? g.Dw : g.Da;
    Dmax = Dmax > g.Dv ? Dmax : g.Dv;
    Dmax = Dmax > g.Dg ? Dmax : g.Dg;
    if (!hy_buf_grab(&P->dhw, rows * Dmax)) return HY_ERR_NOMEM;
    if (P->ones.cap < rows) {
        if (!hy_buf_grab(&P->ones, rows)) return HY_ERR_NOMEM;
        for (size_t i = 0; i < P->ones.cap; i++) P->ones.p[i] = 1.0f;
    }
    if (!P->first && (!vf1->grad.p || vf1->rows != rows))
        return hy_fail("rwkv7: layer %d backward: no v_first gradient buffer of this batch", L->index);
    float *const *p = L->p, *const *gr = L->g;
    const float *x = P->x, *ones = P->ones.p;
    float *xx = P->xx.p, *xm = P->xm.p, *d1 = P->d1.p, *d2 = P->d2.p, *d3 = P->d3.p, *dh = P->dhw.p;
    float *dr = P->dr.p, *dk = P->dk.p, *dv = P->dv.p, *dxx = P->dxx.p;
    float *r = P->r.p, *k = P->k.p, *k0 = P->k0.p, *v = P->v.p, *a = P->a.p, *kk = P->kk.p, *op = P->op.p;
    float *gg = P->g.p;
    memset(dx, 0, n * sizeof(float));
    memset(dxx, 0, n * sizeof(float));
    /* output projection: d1 = dz; then d2 = dg, d1 = d(op) */
    #pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) xm[i] = op[i] * gg[i];
    hy_linear_backward(d1, gr[P_WO], NULL, dyo, xm, p[P_WO], (int)rows, C, C, false);
    #pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) d2[i] = d1[i] * op[i], d1[i] *= gg[i];
    /* gate: g = sigmoid(xg@g1)@g2 */
    {
        xw_backward(NULL, gr[P_G2], d2, P->hg.p, p[P_G2], rows, g.Dg, C, false);
        hy_gemm(false, true, (int)rows, g.Dg, C, 1.0f, d2, C, p[P_G2], C, 0.0f, dh, g.Dg);
        float *hg = P->hg.p;
        size_t nh = rows * g.Dg;
        #pragma omp parallel for schedule(static) if (nh >= PAR_MIN)
        for (size_t i = 0; i < nh; i++) dh[i] *= hg[i] * (1.0f - hg[i]);
        mix(xm, x, xx, p[P_XG], rows, C);
        xw_backward(d3, gr[P_G1], dh, xm, p[P_G1], rows, C, g.Dg, false);
        mix_backward(d3, dx, dxx, xx, p[P_XG], gr[P_XG], ones, rows, C);
    }
    /* group norm + bonus: d1 = d(op) -> dy (recurrence output), dr, dk, dv seeded; d2 = r_k terms,
     * d3 = ln_x.weight terms */
    {
        float *y = P->y.p, *dy = P->dy.p, *mean = P->mean.p, *rstd = P->rstd.p;
        const float *lnw = p[P_LNW], *rk = p[P_RK];
        #pragma omp parallel for schedule(static) if (rows * (size_t)C >= PAR_MIN)
        for (size_t row = 0; row < rows; row++)
            for (int h = 0; h < H; h++) {
                size_t o = row * C + (size_t)h * N;
                float mu = mean[row * H + h], rs = rstd[row * H + h], bonus = 0, dbonus = 0, m1 = 0, m2 = 0;
                for (int j = 0; j < N; j++) {
                    int c = h * N + j;
                    float yh = (y[o + j] - mu) * rs, dn = d1[o + j] * lnw[c];
                    bonus += r[o + j] * k[o + j] * rk[c];
                    dbonus += d1[o + j] * v[o + j];
                    m1 += dn, m2 += dn * yh;
                    d3[o + j] = d1[o + j] * yh;
                }
                m1 /= N, m2 /= N;
                for (int j = 0; j < N; j++) {
                    int c = h * N + j;
                    float yh = (y[o + j] - mu) * rs, dn = d1[o + j] * lnw[c];
                    dy[o + j] = rs * (dn - m1 - yh * m2);
                    dv[o + j] = bonus * d1[o + j];
                    dr[o + j] = dbonus * k[o + j] * rk[c];
                    dk[o + j] = dbonus * r[o + j] * rk[c];
                    d2[o + j] = dbonus * r[o + j] * k[o + j];
                }
            }
        colsum_add(gr[P_RK], d2, ones, rows, C);
        colsum_add(gr[P_LNW], d3, ones, rows, C);
        colsum_add(gr[P_LNB], d1, ones, rows, C);
    }
    /* the recurrence: into d1 (dr), d2 (dk), d3 (dv), ddec, dq (d kk), db (d(kk ⊙ a)) */
    {
        hy_wkv7_in in = {B, T, H, N, r, P->dec.p, k, v, kk, P->b.p};
        int rc = hy_wkv7_backward(&in, P->sq.p, P->ckpt.p, P->dy.p, d1, P->ddec.p, d2, d3, P->dq.p, P->db.p);
        if (rc < 0) return rc;
    }
    /* sum the paths; b = kk ⊙ a; k = k0 ⊙ (1 + (a-1) ⊙ k_a): d1 <- dk0 part, d2 = da, d3 = k_a terms */
    {
        float *dq = P->dq.p, *db = P->db.p;
        const float *ka = p[P_KA];
        float *t1 = d1, *t2 = d2, *t3 = d3;
        #pragma omp parallel for schedule(static) if (rows * (size_t)C >= PAR_MIN)
        for (size_t row = 0; row < rows; row++)
            for (int c = 0; c < C; c++) {
                size_t i = row * C + c;
                dr[i] += t1[i];
                float dkt = dk[i] + t2[i];
                dv[i] += t3[i];
                dq[i] += db[i] * a[i];
                float da = db[i] * kk[i] + dkt * k0[i] * ka[c];
                t3[i] = dkt * k0[i] * (a[i] - 1.0f);
                dk[i] = dkt * (1.0f + (a[i] - 1.0f) * ka[c]);   /* now d k0 */
                t2[i] = da;
            }
        colsum_add(gr[P_KA], d3, ones, rows, C);
    }
    /* kk = normalise(k0 ⊙ k_k): dk0 += du ⊙ k_k, d3 = k_k terms */
    {
        float *dq = P->dq.p, *kinv = P->kinv.p;
        const float *kkw = p[P_KK];
        #pragma omp parallel for schedule(static) if (rows * (size_t)C >= PAR_MIN)
        for (size_t row = 0; row < rows; row++)
            for (int h = 0; h < H; h++) {
                size_t o = row * C + (size_t)h * N;
                float inv = kinv[row * H + h], dot = 0;
                bool clamped = inv >= 1e12f;
                for (int j = 0; j < N; j++) dot += kk[o + j] * dq[o + j];
                for (int j = 0; j < N; j++) {
                    int c = h * N + j;
                    float du = clamped ? dq[o + j] * inv : (dq[o + j] - kk[o + j] * dot) * inv;
                    dk[o + j] += du * kkw[c];
                    d3[o + j] = du * k0[o + j];
                }
            }
        colsum_add(gr[P_KK], d3, ones, rows, C);
    }
    /* a = sigmoid(a0 + (xa@a1)@a2), da in d2 */
    {
        #pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (size_t i = 0; i < n; i++) d2[i] *= a[i] * (1.0f - a[i]);
        colsum_add(gr[P_A0], d2, ones, rows, C);
        xw_backward(dh, gr[P_A2], d2, P->ha.p, p[P_A2], rows, g.Da, C, false);
        mix(xm, x, xx, p[P_XA], rows, C);
        xw_backward(d3, gr[P_A1], dh, xm, p[P_A1], rows, C, g.Da, false);
        mix_backward(d3, dx, dxx, xx, p[P_XA], gr[P_XA], ones, rows, C);
    }
    /* decay = exp(-exp(w)), w = -softplus(-z) - 0.5, z = w0 + tanh(xw@w1)@w2:
     * dz = ddecay · (-decay·e^w) · sigmoid(-z), sigmoid(-z) = 1 - e^(w + 0.5) */
    {
        float *ddec = P->ddec.p, *w = P->w.p, *dec = P->dec.p, *hw = P->hw.p;
        #pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            float ew = hy_expf(w[i]);
            d2[i] = -ddec[i] * dec[i] * ew * (1.0f - hy_expf(w[i] + 0.5f));
        }
        colsum_add(gr[P_W0], d2, ones, rows, C);
        xw_backward(dh, gr[P_W2], d2, hw, p[P_W2], rows, g.Dw, C, false);
        size_t nh = rows * g.Dw;
        #pragma omp parallel for schedule(static) if (nh >= PAR_MIN)
        for (size_t i = 0; i < nh; i++) dh[i] *= 1.0f - hw[i] * hw[i];
        mix(xm, x, xx, p[P_XW], rows, C);
        xw_backward(d3, gr[P_W1], dh, xm, p[P_W1], rows, C, g.Dw, false);
        mix_backward(d3, dx, dxx, xx, p[P_XW], gr[P_XW], ones, rows, C);
    }
    /* v: the value residual (later layers) or the v_first gradient of the others (first layer) */
    mix(xm, x, xx, p[P_XV], rows, C);
    if (!P->first) {
        float *vg = P->vg.p, *vd = P->vdiff.p, *dvf = vf1->grad.p;
        #pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            float s = vg[i];
            dvf[i] += dv[i] * s;
            d2[i] = dv[i] * vd[i] * s * (1.0f - s);
            dv[i] *= 1.0f - s;
        }
        colsum_add(gr[P_V0], d2, ones, rows, C);
        xw_backward(dh, gr[P_V2], d2, P->hv.p, p[P_V2], rows, g.Dv, C, false);
        xw_backward(d3, gr[P_V1], dh, xm, p[P_V1], rows, C, g.Dv, false);
        hy_linear_backward(d3, gr[P_WV], NULL, dv, xm, p[P_WV], (int)rows, C, C, true);
    } else {
        if (vf1 && vf1->grad.p && vf1->rows == rows) {
            float *dvf = vf1->grad.p;
            #pragma omp parallel for schedule(static) if (n >= PAR_MIN)
            for (size_t i = 0; i < n; i++) dv[i] += dvf[i], dvf[i] = 0.0f;
        }
        hy_linear_backward(d3, gr[P_WV], NULL, dv, xm, p[P_WV], (int)rows, C, C, false);
    }
    mix_backward(d3, dx, dxx, xx, p[P_XV], gr[P_XV], ones, rows, C);
    /* r and k0 */
    mix(xm, x, xx, p[P_XR], rows, C);
    hy_linear_backward(d3, gr[P_WR], NULL, dr, xm, p[P_WR], (int)rows, C, C, false);
    mix_backward(d3, dx, dxx, xx, p[P_XR], gr[P_XR], ones, rows, C);
    mix(xm, x, xx, p[P_XK], rows, C);
    hy_linear_backward(d3, gr[P_WK], NULL, dk, xm, p[P_WK], (int)rows, C, C, false);
    mix_backward(d3, dx, dxx, xx, p[P_XK], gr[P_XK], ones, rows, C);
    /* token shift: xx_t = x_{t-1} - x_t */
    #pragma omp parallel for schedule(static) if (rows * (size_t)C >= PAR_MIN)
    for (size_t row = 0; row < rows; row++) {
        int t = (int)(row % T);
        for (int c = 0; c < C; c++) {
            float d = -dxx[row * C + c];
            if (t + 1 < T) d += dxx[(row + 1) * C + c];
            dx[row * C + c] += d;
        }
    }
    return 0;
}

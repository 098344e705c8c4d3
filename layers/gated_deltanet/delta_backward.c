/* Backward of the chunked gated delta rule (layers/gated_deltanet/delta.h). One (sequence, value
 * head) per OpenMP iteration walks its chunks from last to first carrying dS, the gradient of the
 * state leaving the chunk. Per chunk, with S = S_in and U (kept), T (recomputed), Q̃ = diag(e^γ) Q,
 * K̃ = diag(e^{γ_L − γ}) K, Kₑ = diag(e^γ) K, X = [dO; dR] stacked:
 *     dU = Pᵀ dO + K̃ dSᵀ;   dR = Tᵀ dU;   dV = diag(β) dR
 *     [dP; −dA] = X Uᵀ (masked: dP on and below the diagonal, dA strictly below)
 *     [dO S; dR S] = X S;   dK̃ = U dS
 *     dQ = diag(e^γ) dO S + (dP ⊙ D) K
 *     dK = diag(e^{γ_L−γ}) dK̃ − diag(β e^γ) dR S + (dP ⊙ D)ᵀ Q + (M + Mᵀ) K,  M = diag(β)(dA ⊙ D)
 *     dβ_t = dR_t·v_t − e^{γ_t} k_t·(dR S)_t + Σ_s dA_ts KD_ts
 *     dS_in = e^{γ_L} dS + Xᵀ [Q̃; −diag(β) Kₑ]
 * and dγ collects every term through e^γ, e^{γ_L−γ}, e^{γ_L} and D (row sums minus column sums of
 * dP ⊙ P and dA ⊙ A); dg is its reverse cumulative sum within the chunk. Eleven products per
 * chunk (one recomputes [Q; K] Kᵀ), each by hy_tile_mm (core/tile_mm.h: the per-chunk products are
 * too small for a library call's set-up); it takes B row-major, so Kᵀ, Uᵀ and dSᵀ are transposed
 * into the scratch first (hy_transpose) for the three products that read them. */
#include "core/error.h"
#include "core/tile_mm.h"
#include "layers/gated_deltanet/delta_common.h"
#include <omp.h>
#include <stdbool.h>

int hy_gdn_check(const hy_gdn_in *in);

/* Scratch floats of one thread of the backward. */
static size_t bwd_floats(int L, int dk, int dv) {
    return gdn_chunk_floats(L, dk, true) + gdn_round((size_t)2 * L * dv) + gdn_round((size_t)L * dv) +
           2 * gdn_round((size_t)2 * L * L) + gdn_round((size_t)2 * L * dk) * 2 + gdn_round((size_t)L * dk) * 4 +
           gdn_round((size_t)L * L) + gdn_round((size_t)dv * dk) + 2 * gdn_round((size_t)2 * L) + gdn_round((size_t)L * L) +
           gdn_round((size_t)gdn_inv_stride(L) * gdn_inv_stride(L)) + gdn_round((size_t)dv * dk) +
           gdn_round((size_t)dk * L) + gdn_round((size_t)dv * L) + gdn_round((size_t)dk * dv);
}

size_t hy_gdn_backward_ws_floats(int B, int T, int H, int HV, int dk, int dv, int L, int threads) {
    size_t split = HV > H ? 2 * (size_t)B * T * HV * dk : 0;
    return bwd_floats(L, dk, dv) * (size_t)threads + split;
}

/* The state leaving chunk c of (sequence b, value head j), S_out = e^{γ_L} S_in + Uᵀ diag(e^{γ_L − γ}) K,
 * into Sout from the state entering it (S_in) and its kept U, with the forward's operations in its
 * order (so it is the state the forward carried); Kt: scratch of L × dk. */
static void state_after(const hy_gdn_in *in, int b, int j, int c, const float *S_in, const float *U, float *Kt,
                        float *Sout) {
    const int L = in->chunk, dk = in->dk, dv = in->dv, t0 = c * L, Lc = in->T - t0 < L ? in->T - t0 : L;
    const int i = j / (in->HV / in->H);
    const size_t row0 = (size_t)b * in->T + t0;
    double gL = 0, s = 0;   /* γ summed as gdn_chunk_gather sums it: γ_L first, then γ_t again */
    for (int t = 0; t < Lc; t++) gL += in->g[(row0 + t) * in->ld_bg + j];
    for (int t = 0; t < Lc; t++) {
        s += in->g[(row0 + t) * in->ld_bg + j];
        const float f = gdn_decay((float)(gL - s));
        const float *k = in->k + (row0 + t) * in->ld_qk + (size_t)i * dk;
        for (int x = 0; x < dk; x++) Kt[(size_t)t * dk + x] = k[x] * f;
    }
    memcpy(Sout, S_in, (size_t)dv * dk * sizeof(float));
    hy_tile_mm(dv, dk, Lc, U, 1, dv, Kt, dk, Sout, dk, gdn_decay((float)gL), NULL, false);
}

/* Prefetches into L2 what the backward of chunk c reads and writes in its rows [r0, r1) besides q, k
 * and v (gdn_prefetch_rows): the rows of dout, and (for writing) those of dq, dk and dv, which are
 * far apart as the inputs are; asked for the chunk before the current one, in parts between the
 * products. */
static inline __attribute__((always_inline)) void prefetch_grad_rows(const hy_gdn_in *in, int b, int j, int c, int r0,
                                                                     int r1, const float *dout, int ld_o,
                                                                     const float *dq, const float *dk_, int ld_dqk,
                                                                     const float *dv_) {
    gdn_prefetch_rows(in, b, j, c, r0, r1);
    const int L = in->chunk, t0 = c * L;
    if (c < 0 || t0 >= in->T) return;
    if (r1 > in->T - t0) r1 = in->T - t0;
    for (int t = r0; t < r1; t++) {
        const size_t r = (size_t)b * in->T + t0 + t;
        const float *o = dout + r * ld_o + (size_t)j * in->dv, *dvr = dv_ + r * in->ld_v + (size_t)j * in->dv;
        const float *dqr = dq + r * ld_dqk, *dkr = dk_ + r * ld_dqk;
        for (int x = 0; x < in->dv; x += 16) __builtin_prefetch(o + x, 0, 2), __builtin_prefetch(dvr + x, 1, 2);
        for (int x = 0; x < in->dk; x += 16) __builtin_prefetch(dqr + x, 1, 2), __builtin_prefetch(dkr + x, 1, 2);
    }
}

/* All chunks of (sequence b, value head j), last to first. dq, dk: this head's destinations (rows of
 * stride ld_dqk, the head's columns already offset). */
static void head_backward(const hy_gdn_in *in, int b, int j, const hy_gdn_keep *keep, const float *dout, int ld_o,
                          float *dq, float *dk_, int ld_dqk, float *dv_, float *dbeta, float *dg, float *w) {
    const int L = in->chunk, dk = in->dk, dv = in->dv, nch = hy_gdn_nchunks(in->T, L), nck = hy_gdn_nckpt(in->T, L);
    gdn_chunk ch;
    gdn_chunk_alloc(&ch, &w, L, dk, true);
    float *X = gdn_take(&w, (size_t)2 * L * dv), *dU = gdn_take(&w, (size_t)L * dv);
    float *Y2 = gdn_take(&w, (size_t)2 * L * L), *Mcat = gdn_take(&w, (size_t)2 * L * L);
    float *Y3 = gdn_take(&w, (size_t)2 * L * dk), *Z = gdn_take(&w, (size_t)2 * L * dk);
    float *Kt = gdn_take(&w, (size_t)L * dk), *dKt = gdn_take(&w, (size_t)L * dk);
    float *dQl = gdn_take(&w, (size_t)L * dk), *dKl = gdn_take(&w, (size_t)L * dk);
    float *M1 = gdn_take(&w, (size_t)L * L), *dS = gdn_take(&w, (size_t)dv * dk);
    double *dgam = (double *)gdn_take(&w, (size_t)2 * L);
    float *dbl = gdn_take(&w, (size_t)2 * L);
    float *Tm = gdn_take(&w, (size_t)L * L), *Tp = gdn_take(&w, (size_t)gdn_inv_stride(L) * gdn_inv_stride(L));
    float *Sodd = gdn_take(&w, (size_t)dv * dk);
    float *KT = gdn_take(&w, (size_t)dk * L), *UT = gdn_take(&w, (size_t)dv * L), *dST = gdn_take(&w, (size_t)dk * dv);
    memset(dS, 0, (size_t)dv * dk * sizeof(float));
    const size_t head = (size_t)b * in->HV + j;
    for (int c = nch - 1; c >= 0; c--) {
        const float *S = keep->ckpt + (head * nck + c / 2) * (size_t)dv * dk;   /* the state entering chunk c */
        if (c % 2) {   /* not kept: from the one entering chunk c − 1, as the forward made it */
            state_after(in, b, j, c - 1, S, keep->u + (head * in->T + (size_t)(c - 1) * L) * dv, Kt, Sodd);
            S = Sodd;
        }
        gdn_chunk_load(in, b, j, c, &ch, KT);
        const int Lc = ch.Lc;
        gdn_unit_lower_inverse(Tm, ch.KD, ch.beta, Lc, Tp);   /* T again (cheaper than keeping it) */
        const float *U = keep->u + (head * in->T + (size_t)c * L) * dv;
        const float *Q = ch.qk, *K = ch.qk + (size_t)Lc * dk;
        float *dR = X + (size_t)Lc * dv;
        for (int t = 0; t < Lc; t++)
            memcpy(X + (size_t)t * dv, dout + (ch.row0 + t) * ld_o + (size_t)j * dv, (size_t)dv * sizeof(float));
        for (int t = 0; t < Lc; t++)
            for (int x = 0; x < dk; x++) Kt[(size_t)t * dk + x] = ch.et[t] * K[(size_t)t * dk + x];
        /* dU = Pᵀ dO + K̃ dSᵀ;  dR = Tᵀ dU */
        hy_transpose(dST, (size_t)dv, dS, (size_t)dk, dv, dk);
        hy_tile_mm(Lc, dv, Lc, ch.P, 1, Lc, X, dv, dU, dv, 0.0f, NULL, false);
        hy_tile_mm(Lc, dv, dk, Kt, dk, 1, dST, dv, dU, dv, 1.0f, NULL, false);
        hy_tile_mm(Lc, dv, Lc, Tm, 1, Lc, dU, dv, dR, dv, 0.0f, NULL, false);
        /* [dP; −dA] = X Uᵀ;  [dO S; dR S] = X S;  dK̃ = U dS */
        prefetch_grad_rows(in, b, j, c - 1, 0, L / 4, dout, ld_o, dq, dk_, ld_dqk, dv_);
        hy_transpose(UT, (size_t)Lc, U, (size_t)dv, Lc, dv);
        hy_tile_mm(2 * Lc, Lc, dv, X, dv, 1, UT, Lc, Y2, Lc, 0.0f, NULL, false);
        hy_tile_mm(2 * Lc, dk, dv, X, dv, 1, S, dk, Y3, dk, 0.0f, NULL, false);
        hy_tile_mm(Lc, dk, dv, U, dv, 1, dS, dk, dKt, dk, 0.0f, NULL, false);
        prefetch_grad_rows(in, b, j, c - 1, L / 4, L / 2, dout, ld_o, dq, dk_, ld_dqk, dv_);
        double dgL = (double)ch.eL * hy_dotf(S, dS, dv * dk);
        /* per token: dQ, dK from the e^γ, e^{γ_L−γ} scalings and R; dβ from R; dV */
        for (int t = 0; t < Lc; t++) {
            const float *q = Q + (size_t)t * dk, *k = K + (size_t)t * dk, *dos = Y3 + (size_t)t * dk,
                        *drs = Y3 + (size_t)(Lc + t) * dk, *dkt = dKt + (size_t)t * dk, *dr = dR + (size_t)t * dv;
            const float *v = in->v + (ch.row0 + t) * in->ld_v + (size_t)j * dv;
            const float e = ch.e[t], et = ch.et[t], bt = ch.beta[t], be = bt * e;
            float *dql = dQl + (size_t)t * dk, *dkl = dKl + (size_t)t * dk;
            /* the element-wise stores apart from the sums (same order): gcc 12 vectorizes
             * neither inside the parallel region without the split and the hint */
            #pragma omp simd
            for (int x = 0; x < dk; x++) {
                dql[x] = e * dos[x];
                dkl[x] = et * dkt[x] - be * drs[x];
            }
            const float qdos = hy_dotf(q, dos, dk), kdkt = hy_dotf(k, dkt, dk), kdrs = hy_dotf(k, drs, dk);
            float *dvo = dv_ + (ch.row0 + t) * in->ld_v + (size_t)j * dv;
            #pragma omp simd
            for (int x = 0; x < dv; x++) dvo[x] = bt * dr[x];
            const float drv = hy_dotf(dr, v, dv);
            dgam[t] = (double)e * qdos - (double)et * kdkt - (double)be * kdrs;
            dgL += (double)et * kdkt;
            dbl[t] = drv - e * kdrs;
        }
        /* the intra-chunk matrices: M1 = dP ⊙ D, M = diag(β)(dA ⊙ D); dγ and dβ through P and A */
        const float *dPf = Y2, *dAf = Y2 + (size_t)Lc * Lc;
        for (int t = 0; t < Lc; t++) {
            const float *dp = dPf + (size_t)t * Lc, *da = dAf + (size_t)t * Lc, *D = ch.D + (size_t)t * Lc,
                        *P = ch.P + (size_t)t * Lc, *KD = ch.KD + (size_t)t * Lc;
            float *m1 = M1 + (size_t)t * Lc, *mc = Mcat + (size_t)t * 2 * Lc;
            const float bt = ch.beta[t];
            double rowp = 0, rowa = 0;
            float db = 0;
            /* stores (vectorized with the hint) apart from the row sums (same order) */
            #pragma omp simd
            for (int s = 0; s <= t; s++) {
                m1[s] = dp[s] * D[s];
                dgam[s] -= dp[s] * P[s];
            }
            for (int s = 0; s <= t; s++) rowp += dp[s] * P[s];
            for (int s = t + 1; s < Lc; s++) m1[s] = 0.0f;
            #pragma omp simd
            for (int s = 0; s < t; s++) {
                float a = -da[s];   /* dA_ts */
                dgam[s] -= a * bt * KD[s];
                mc[Lc + s] = bt * a * D[s];   /* M_ts; symmetrised below */
            }
            for (int s = 0; s < t; s++) {
                float a = -da[s];
                db += a * KD[s];
                rowa += a * bt * KD[s];
            }
            for (int s = t; s < Lc; s++) mc[Lc + s] = 0.0f;
            dgam[t] += rowp + rowa;
            dbl[t] += db;
        }
        for (int t = 0; t < Lc; t++) {   /* Mcat = [M1ᵀ | M + Mᵀ]: the upper part of row t is column t of M */
            float *mc = Mcat + (size_t)t * 2 * Lc;
            for (int s = 0; s < Lc; s++) mc[s] = M1[(size_t)s * Lc + t];
            for (int s = t + 1; s < Lc; s++) mc[Lc + s] = Mcat[(size_t)s * 2 * Lc + Lc + t];
        }
        /* dQ += M1 K;  dK += [M1ᵀ | M + Mᵀ] [Q; K] */
        prefetch_grad_rows(in, b, j, c - 1, L / 2, 3 * L / 4, dout, ld_o, dq, dk_, ld_dqk, dv_);
        hy_tile_mm(Lc, dk, Lc, M1, Lc, 1, K, dk, dQl, dk, 1.0f, NULL, true);
        hy_tile_mm(Lc, dk, 2 * Lc, Mcat, 2 * Lc, 1, ch.qk, dk, dKl, dk, 1.0f, NULL, false);
        /* dS_in = e^{γ_L} dS + [dO; dR]ᵀ [Q̃; −diag(β e^γ) K] */
        for (int t = 0; t < Lc; t++) {
            const float e = ch.e[t], nbe = -ch.beta[t] * e;
            const float *q = Q + (size_t)t * dk, *k = K + (size_t)t * dk;
            float *zq = Z + (size_t)t * dk, *zk = Z + (size_t)(Lc + t) * dk;
            for (int x = 0; x < dk; x++) zq[x] = e * q[x], zk[x] = nbe * k[x];
        }
        hy_tile_mm(dv, dk, 2 * Lc, X, 1, dv, Z, dk, dS, dk, ch.eL, NULL, false);
        prefetch_grad_rows(in, b, j, c - 1, 3 * L / 4, L, dout, ld_o, dq, dk_, ld_dqk, dv_);
        /* dg: reverse cumulative sum of dγ (γ_L's terms enter at the last token) */
        dgam[Lc - 1] += dgL;
        double acc = 0;
        for (int t = Lc - 1; t >= 0; t--) {
            acc += dgam[t];
            size_t r = (ch.row0 + t) * in->ld_bg + j;
            dg[r] = (float)acc;
            dbeta[r] = dbl[t];
        }
        for (int t = 0; t < Lc; t++) {
            memcpy(dq + (ch.row0 + t) * ld_dqk, dQl + (size_t)t * dk, (size_t)dk * sizeof(float));
            memcpy(dk_ + (ch.row0 + t) * ld_dqk, dKl + (size_t)t * dk, (size_t)dk * sizeof(float));
        }
    }
}

int hy_gdn_backward(const hy_gdn_in *in, const hy_gdn_keep *keep, const float *dout, int ld_o, float *dq, float *dk,
                    float *dv, float *dbeta, float *dg, hy_buf *ws) {
    int rc = hy_gdn_check(in);
    if (rc < 0 || in->B == 0 || in->T == 0) return rc;
    const int nh = in->B * in->HV, nth = omp_get_max_threads(), G = in->HV / in->H, DK = in->dk;
    const size_t rows = (size_t)in->B * in->T, per = bwd_floats(in->chunk, DK, in->dv);
    /* with HV > H each value head writes its own q/k gradients, summed per q/k head afterwards */
    if (!hy_buf_grab(ws, hy_gdn_backward_ws_floats(in->B, in->T, in->H, in->HV, DK, in->dv, in->chunk, nth)))
        return HY_ERR_NOMEM;
    float *dqv = ws->p + per * (size_t)nth, *dkv = dqv + rows * in->HV * DK;
    #pragma omp parallel for schedule(static)
    for (int p = 0; p < nh; p++) {
        const int b = p / in->HV, j = p % in->HV;
        float *w = ws->p + per * (size_t)omp_get_thread_num();
        if (G > 1)
            head_backward(in, b, j, keep, dout, ld_o, dqv + (size_t)j * DK, dkv + (size_t)j * DK, in->HV * DK, dv,
                          dbeta, dg, w);
        else head_backward(in, b, j, keep, dout, ld_o, dq + (size_t)j * DK, dk + (size_t)j * DK, in->ld_qk, dv, dbeta, dg, w);
    }
    if (G > 1) {
        #pragma omp parallel for schedule(static) if (rows * in->HV * DK > 65536)
        for (size_t r = 0; r < rows; r++)
            for (int i = 0; i < in->H; i++) {
                float *oq = dq + r * in->ld_qk + (size_t)i * DK, *ok = dk + r * in->ld_qk + (size_t)i * DK;
                const float *sq = dqv + (r * in->HV + (size_t)i * G) * DK, *sk = dkv + (r * in->HV + (size_t)i * G) * DK;
                for (int x = 0; x < DK; x++) oq[x] = sq[x], ok[x] = sk[x];
                for (int m = 1; m < G; m++)
                    for (int x = 0; x < DK; x++) oq[x] += sq[(size_t)m * DK + x], ok[x] += sk[(size_t)m * DK + x];
            }
    }
    return 0;
}

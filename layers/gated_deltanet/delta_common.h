/* What the forward (layers/gated_deltanet/delta.c) and the backward (delta_backward.c) of the
 * chunked gated delta rule share: the decay factor, scratch sizes and the per-chunk preparation
 * (Q and K gathered, γ, the decay matrix D, and the masked products P = D ⊙ Q Kᵀ, KD = D ⊙ K Kᵀ).
 * Internal to those two files. */
#ifndef HY_LAYERS_GATED_DELTANET_DELTA_COMMON_H
#define HY_LAYERS_GATED_DELTANET_DELTA_COMMON_H
#include "core/simd.h"
#include "core/tile_mm.h"
#include "core/vmath.h"
#include "layers/gated_deltanet/delta.h"
#include <string.h>

/* n floats rounded up to a whole cache line, so that scratch arrays start aligned. */
static inline size_t gdn_round(size_t n) { return (n + 15) & ~(size_t)15; }

/* Takes n floats from the scratch cursor *w. */
static inline float *gdn_take(float **w, size_t n) {
    float *p = *w;
    *w += gdn_round(n);
    return p;
}

/* The decay factor e^x for x <= 0, exactly 0 below -87 (where hy_expf_neg gives ~1e-38, whose
 * products would be denormals); branch-free (integer compare on the ordered bits) so loops vectorize. */
static inline float gdn_decay(float x) {
    float e = hy_expf_neg(x);
    return hy_float_ordered(x) < hy_float_ordered(-87.0f) ? 0.0f : e;
}

/* One chunk of one (sequence, value head) as both directions see it. */
typedef struct {
    int Lc;           /* tokens in this chunk */
    size_t row0;      /* row b·T + t0 of its first token */
    int i;            /* the q/k head value head j reads */
    float *qk;        /* (2·Lc, dk): Q rows, then K rows (as given, not decayed); backward only */
    float *P;         /* (Lc, Lc): D ⊙ Q Kᵀ on and below the diagonal, 0 above */
    float *KD;        /* (Lc, Lc), directly after P: D ⊙ K Kᵀ strictly below the diagonal, 0 elsewhere */
    float *D;         /* (Lc, Lc): D_ts = e^{γ_t − γ_s} for s <= t, 0 above */
    double *gam;      /* γ_t, summed in double */
    float *e, *et;    /* e^{γ_t} and e^{γ_L − γ_t} */
    float *beta;      /* β_t */
    float eL;         /* e^{γ_L}, γ_L the last token's γ */
} gdn_chunk;

/* Scratch floats of gdn_chunk_alloc for chunk length L (rows: with room for the Q and K rows). */
static inline size_t gdn_chunk_floats(int L, int dk, bool rows) {
    return (rows ? gdn_round((size_t)2 * L * dk) : 0) + gdn_round((size_t)2 * L * L) + gdn_round((size_t)L * L) +
           gdn_round((size_t)2 * L) + 3 * gdn_round((size_t)L);
}

/* Points the arrays of ch into the scratch cursor *w (sized for chunk length L); ch->qk only with
 * rows (the forward reads Q and K where they are, NULL there). */
static inline void gdn_chunk_alloc(gdn_chunk *ch, float **w, int L, int dk, bool rows) {
    ch->qk = rows ? gdn_take(w, (size_t)2 * L * dk) : NULL;
    ch->P = gdn_take(w, (size_t)2 * L * L);
    ch->D = gdn_take(w, (size_t)L * L);
    ch->gam = (double *)gdn_take(w, (size_t)2 * L);
    ch->e = gdn_take(w, (size_t)L);
    ch->et = gdn_take(w, (size_t)L);
    ch->beta = gdn_take(w, (size_t)L);
}

/* Row stride of the padded inverse scratch: Lc rounded up to whole vectors. */
static inline int gdn_inv_stride(int Lc) { return (Lc + HY_VW - 1) / HY_VW * HY_VW; }

/* T = (I + A)^{-1} for A_ts = β_t·KD_ts (strictly lower): row t = e_t − β_t Σ_{r<t} KD_tr·(row r of T),
 * computed one vector of columns at a time in Tp (rows padded to gdn_inv_stride(Lc), so every load is a
 * whole vector): row r of T is zero beyond column r, so column block cb takes only the rows r >= cb·HY_VW,
 * summed in four independent accumulators (the FMAs of one row do not wait on each other). Lc³/6
 * multiply-adds; the result goes to Tm (Lc × Lc, row stride Lc, zeros above the diagonal) unless Tm
 * is NULL (the caller then reads Tp: exact zeros above the diagonal within each row's vectors up to
 * the one holding column t, nothing defined beyond). */
static inline void gdn_unit_lower_inverse(float *restrict Tm, const float *restrict KD, const float *restrict beta, int Lc,
                               float *restrict Tp) {
    const int Lp = gdn_inv_stride(Lc);
    for (int t = 0; t < Lc; t++) {
        const float *restrict kd = KD + (size_t)t * Lc;
        float *restrict row = Tp + (size_t)t * Lp;
        const int nb = t / HY_VW + 1;   /* column blocks holding columns 0..t */
        for (int cb = 0; cb < nb; cb++) {
            const float *col = Tp + cb * HY_VW;
            vw a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            int r = cb * HY_VW;
            for (; r + 4 <= t; r += 4) {
                a0 = vw_fma(vw_splat(kd[r]), vw_load(col + (size_t)r * Lp), a0);
                a1 = vw_fma(vw_splat(kd[r + 1]), vw_load(col + (size_t)(r + 1) * Lp), a1);
                a2 = vw_fma(vw_splat(kd[r + 2]), vw_load(col + (size_t)(r + 2) * Lp), a2);
                a3 = vw_fma(vw_splat(kd[r + 3]), vw_load(col + (size_t)(r + 3) * Lp), a3);
            }
            for (; r < t; r++) a0 = vw_fma(vw_splat(kd[r]), vw_load(col + (size_t)r * Lp), a0);
            vw v = vw_splat(-beta[t]) * ((a0 + a1) + (a2 + a3));
            if (t / HY_VW == cb) v[t % HY_VW] = 1.0f;
            vw_store(row + cb * HY_VW, v);
        }
        if (!Tm) continue;
        float *restrict out = Tm + (size_t)t * Lc;
        const int done = nb * HY_VW < Lc ? nb * HY_VW : Lc;
        memcpy(out, row, (size_t)done * sizeof(float));
        memset(out + done, 0, (size_t)(Lc - done) * sizeof(float));
    }
}

/* Copies n floats a vector at a time (the rows gathered per chunk are short: a libc call per row
 * cost more than the copy). */
static inline void gdn_copy(float *restrict dst, const float *restrict src, int n) {
    int x = 0;
    for (; x + HY_VW <= n; x += HY_VW) vw_store(dst + x, vw_load(src + x));
    for (; x < n; x++) dst[x] = src[x];
}

/* Gathers chunk c of (sequence b, value head j) into ch: Lc, its rows, with `rows` its Q and K rows
 * (into ch->qk), β, γ (double), e^{γ}, e^{γ_L − γ} and e^{γ_L}. */
static inline void gdn_chunk_gather(const hy_gdn_in *in, int b, int j, int c, gdn_chunk *ch, bool rows) {
    const int L = in->chunk, dk = in->dk, t0 = c * L, Lc = in->T - t0 < L ? in->T - t0 : L;
    ch->Lc = Lc;
    ch->row0 = (size_t)b * in->T + t0;
    ch->i = j / (in->HV / in->H);
    for (int t = 0; rows && t < Lc; t++) {
        size_t r = ch->row0 + t;
        gdn_copy(ch->qk + (size_t)t * dk, in->q + r * in->ld_qk + (size_t)ch->i * dk, dk);
        gdn_copy(ch->qk + (size_t)(Lc + t) * dk, in->k + r * in->ld_qk + (size_t)ch->i * dk, dk);
    }
    double s = 0;
    for (int t = 0; t < Lc; t++) {
        size_t r = (ch->row0 + t) * in->ld_bg + j;
        s += in->g[r];
        ch->gam[t] = s;
        ch->beta[t] = in->beta[r];
    }
    const double gL = ch->gam[Lc - 1];
    for (int t = 0; t < Lc; t++) {
        ch->e[t] = gdn_decay((float)ch->gam[t]);
        ch->et[t] = gdn_decay((float)(gL - ch->gam[t]));
    }
    ch->eL = ch->e[Lc - 1];
    ch->KD = ch->P + (size_t)Lc * Lc;
}

/* The chunk's masks from the raw products [Q; K] Kᵀ (2·Lc rows of Lc at row stride ld, Q Kᵀ first;
 * they may be ch->P itself with ld = Lc): P = D ⊙ Q Kᵀ (s <= t), KD = D ⊙ K Kᵀ (s < t) and D, computed
 * only for s <= t (γ_t − γ_s <= 0 there: nothing above the diagonal is exponentiated), up to the
 * vector holding s = t, zeros beyond; the exponent is clamped to <= 0 and masked above the diagonal.
 * When Lc is a whole number of vectors each block of a row is one pass (its factors in a register
 * block, then the three masked stores); otherwise branch-free passes per row (they vectorize). */
static inline void gdn_chunk_masks(gdn_chunk *ch, const float *raw, int ld) {
    const int Lc = ch->Lc;
    for (int t = 0; t < Lc; t++) {
        float *D = ch->D + (size_t)t * Lc, *P = ch->P + (size_t)t * Lc, *KD = ch->KD + (size_t)t * Lc;
        const float *rp = raw + (size_t)t * ld, *rk = raw + (size_t)(Lc + t) * ld;
        const double gt = ch->gam[t];
        const int n = (t / HY_VW + 1) * HY_VW < Lc ? (t / HY_VW + 1) * HY_VW : Lc;   /* whole vectors to s = t */
        if (Lc % HY_VW == 0) {
            for (int s0 = 0; s0 < n; s0 += HY_VW) {
                float f[HY_VW];
                for (int l = 0; l < HY_VW; l++) {
                    const float x = (float)(gt - ch->gam[s0 + l]);
                    f[l] = gdn_decay(x < 0.0f ? x : 0.0f);
                }
                const vw d = vw_load(f);
                const vw_mask upto = vw_mask_first(t - s0 + 1), below = vw_mask_first(t - s0);
                vw_store(D + s0, vw_keep(d, upto));
                vw_store(P + s0, vw_keep(vw_load(rp + s0) * d, upto));
                vw_store(KD + s0, vw_keep(vw_load(rk + s0) * d, below));
            }
        } else {
            for (int s2 = 0; s2 < n; s2++) D[s2] = (float)(gt - ch->gam[s2]);
            for (int s2 = 0; s2 < n; s2++) D[s2] = gdn_decay(D[s2] < 0.0f ? D[s2] : 0.0f);
            for (int s2 = 0; s2 < n; s2++) {
                const float d = D[s2], p = rp[s2], kd = rk[s2];
                D[s2] = s2 <= t ? d : 0.0f;
                P[s2] = s2 <= t ? p * d : 0.0f;
                KD[s2] = s2 < t ? kd * d : 0.0f;
            }
        }
        for (int s2 = n; s2 < Lc; s2++) D[s2] = P[s2] = KD[s2] = 0.0f;
    }
}

/* Prefetches into L2 the q, k and v rows [r0, r1) of chunk c of (sequence b, value head j), when that
 * chunk exists (the forward asks for chunk c + 1, the backward for c − 1). One head reads 256 or 512 bytes of rows a kilobyte or more apart; the forward asks
 * for the next chunk's rows in parts between its GEMMs (on the shared machine, two threads, the bench
 * shape: 1-2.5% off the forward in three alternated runs; inputs always in the cache would save about
 * 7%). Always inlined: gcc drops a call to a function made of prefetches alone, which has no effect
 * it must keep. */
static inline __attribute__((always_inline)) void gdn_prefetch_rows(const hy_gdn_in *in, int b, int j, int c, int r0,
                                                                    int r1) {
    const int L = in->chunk, t0 = c * L;
    if (c < 0 || t0 >= in->T) return;
    if (r1 > in->T - t0) r1 = in->T - t0;
    const int i = j / (in->HV / in->H);
    for (int t = r0; t < r1; t++) {
        const size_t r = (size_t)b * in->T + t0 + t;
        const float *q = in->q + r * in->ld_qk + (size_t)i * in->dk, *k = in->k + r * in->ld_qk + (size_t)i * in->dk,
                    *v = in->v + r * in->ld_v + (size_t)j * in->dv;
        for (int x = 0; x < in->dk; x += 16) __builtin_prefetch(q + x, 0, 2), __builtin_prefetch(k + x, 0, 2);
        for (int x = 0; x < in->dv; x += 16) __builtin_prefetch(v + x, 0, 2);
    }
}

/* Loads chunk c of (sequence b, value head j) as the backward needs it: gdn_chunk_gather, Kᵀ into KT
 * (dk × Lc, row stride Lc), then [Q; K] Kᵀ by one product into P and KD, and gdn_chunk_masks in place. */
static inline void gdn_chunk_load(const hy_gdn_in *in, int b, int j, int c, gdn_chunk *ch, float *KT) {
    gdn_chunk_gather(in, b, j, c, ch, true);
    const int Lc = ch->Lc, dk = in->dk;
    hy_transpose(KT, (size_t)Lc, ch->qk + (size_t)Lc * dk, (size_t)dk, Lc, dk);
    hy_tile_mm(2 * Lc, Lc, dk, ch->qk, dk, 1, KT, Lc, ch->P, Lc, 0.0f, NULL, false);
    gdn_chunk_masks(ch, ch->P, Lc);
}

#endif

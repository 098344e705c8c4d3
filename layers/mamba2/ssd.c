/* The SSD kernels of the Mamba-2 block (formulas, layouts and the chunked form: layers/mamba2/ssd.h).
 *
 * Forward, three passes over (sequence b, group g, chunk c) "tasks" and (b, head h) "lanes":
 *   A (tasks)  per head the decays of the chunk, then the chunk's own state (Δ·x·W)ᵀ B for all Hg
 *              heads of the group in one GEMM, into states slot c+1; e_c = exp(Σ a) per head;
 *   B (lanes)  slot 0 = s0, slot c+1 += e_c · slot c, in chunk order: the state entering each chunk;
 *   C (tasks)  CB = C Bᵀ, Z = C S_inᵀ for all heads of the group (two GEMMs), then per head the masked
 *              product (L ⊙ CB)(Δ·x) (one GEMM) plus E ⊙ Z.
 * Backward, with dS_out(c) the gradient of the state leaving chunk c:
 *   1 (tasks)  each chunk's direct part of dS_in: (E ⊙ dy)ᵀ C for the group's heads (one GEMM);
 *   2 (lanes)  from the last chunk back, dS_out(c) = dS_in(c+1) = direct(c+1) + e_{c+1}·dS_out(c+1)
 *              (0 for the last chunk), and de_c = <dS_out(c), S_in(c)>;
 *   3 (tasks)  per group Z = C S_inᵀ, V = B dS_outᵀ, dC = (E⊙dy) S_in, dB = (W⊙Δx) dS_out (four GEMMs
 *              over all heads), per head d(Δx) = Mᵀ dy + W⊙V and dM = dy (Δx)ᵀ (two GEMMs), then
 *              dC += dCB B, dB += dCBᵀ C with dCB = Σ_h dM ⊙ L (two GEMMs).
 * The log-decays' gradients are collected without differences of prefix sums: with F = dM ⊙ M,
 * da_r = Σ_{j>=r} Σ_{i<r} F[j][i] (the mask) + Σ_{j>=r} dE_j E_j + Σ_{i<r} dW_i W_i + de·e.
 * Every output entry is written by one task or lane; dA goes through per-(b, c, h) partial sums
 * added in a fixed order, so results do not depend on the schedule. */
#include "layers/mamba2/ssd.h"
#include "core/error.h"
#include "core/gemm.h"
#include "core/mem.h"
#include "core/vec8.h"
#include "core/vmath.h"
#include <omp.h>
#include <stdbool.h>
#include <string.h>

/* -std=c17 turns off floating-point contraction; the elementwise loops here are FMA chains. */
#pragma GCC optimize("fp-contract=fast")

#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* Σ x[i]·y[i] over n floats, in two 8-lane accumulators (a fixed order for any target). */
static inline float vdot(const float *restrict x, const float *restrict y, int n) {
    v8 a0 = {0}, a1 = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16) a0 += v8_load(x + i) * v8_load(y + i), a1 += v8_load(x + i + 8) * v8_load(y + i + 8);
    for (; i + 8 <= n; i += 8) a0 += v8_load(x + i) * v8_load(y + i);
    v8 f = a0 + a1;
    float s = ((f[0] + f[4]) + (f[1] + f[5])) + ((f[2] + f[6]) + (f[3] + f[7]));
    for (; i < n; i++) s += x[i] * y[i];
    return s;
}

/* Σ x[i] over n floats, as vdot. */
static inline float vsum(const float *restrict x, int n) {
    v8 a0 = {0}, a1 = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16) a0 += v8_load(x + i), a1 += v8_load(x + i + 8);
    for (; i + 8 <= n; i += 8) a0 += v8_load(x + i);
    v8 f = a0 + a1;
    float s = ((f[0] + f[4]) + (f[1] + f[5])) + ((f[2] + f[6]) + (f[3] + f[7]));
    for (; i < n; i++) s += x[i];
    return s;
}

/* Sizes shared by the passes. */
typedef struct {
    int Q, nch, Hg, HgP;
    size_t PN;
} ssd_dims;

static ssd_dims dims_of(const hy_ssd_args *a) {
    ssd_dims d = {a->chunk, (a->T + a->chunk - 1) / a->chunk, a->H / a->G, a->H / a->G * a->P, (size_t)a->P * a->N};
    return d;
}

/* Floats rounded up to a whole cache line, so per-thread scratch areas never share one. */
static size_t line_up(size_t n) { return (n + 15) & ~(size_t)15; }

size_t hy_ssd_state_floats(int B, int T, int H, int P, int N, int chunk) {
    if (B <= 0 || T <= 0 || chunk <= 0) return 0;
    return (size_t)B * ((T + chunk - 1) / chunk + 1) * H * P * N;
}

double hy_ssd_flop(int T, int H, int P, int N, int G, int chunk) {
    double f = 0;
    for (int t0 = 0; t0 < T; t0 += chunk) {
        double q = MIN(chunk, T - t0);
        f += G * 2.0 * q * q * N + H * (2.0 * q * q * P + 4.0 * q * P * N);
    }
    return f;
}

/* Slot c of head h of sequence b in a (B, nch+1, H, P, N) state array. */
static inline float *slot(float *s, const hy_ssd_args *a, const ssd_dims *d, int b, int c, int h) {
    return s + (((size_t)b * (d->nch + 1) + c) * a->H + h) * d->PN;
}

static int check_args(const hy_ssd_args *a, bool need_states) {
    if (a->B < 0 || a->T < 0 || a->H < 1 || a->P < 1 || a->N < 1 || a->G < 1 || a->H % a->G || a->chunk < 1)
        return hy_fail("ssd: bad sizes B %d T %d H %d P %d N %d G %d chunk %d", a->B, a->T, a->H, a->P, a->N, a->G,
                       a->chunk);
    if (need_states && !a->states && a->B > 0 && a->T > 0) return hy_fail("ssd: no chunk state array given");
    return 0;
}

/* The decays of head h over the q steps of a chunk starting at row row0: av[j] = Δ_j·A[h];
 * E[j] = exp(Σ_{r<=j} a_r) and W[j] = exp(Σ_{r>j} a_r) when not NULL; returns e = exp(Σ a). */
static float head_decays(const hy_ssd_args *a, size_t row0, int q, int h, float *av, float *E, float *W) {
    const float Ah = a->A[h];
    for (int j = 0; j < q; j++) av[j] = a->dt[(row0 + j) * a->lddt + h] * Ah;
    float p = 0;
    if (E) {
        for (int j = 0; j < q; j++) p += av[j], E[j] = p;
        for (int j = 0; j < q; j++) E[j] = hy_expf_neg(E[j]);
    } else
        for (int j = 0; j < q; j++) p += av[j];
    if (W) {
        float s = 0;
        for (int j = q - 1; j >= 0; j--) W[j] = s, s += av[j];
        for (int j = 0; j < q; j++) W[j] = hy_expf_neg(W[j]);
    }
    return hy_expf_neg(p);
}

/* Row j of the causal mask: seg[i] = Σ_{i<r<=j} a_r for i <= j, updated from row j-1 (seg holds
 * row j-1 on entry); L[i] = exp(seg[i]) · (scale ? scale[i] : 1) for i <= j, 0 for j < i < q. */
static inline void mask_row(int j, int q, const float *av, float *seg, float *Lrow, const float *scale) {
    const float aj = av[j];
    for (int i = 0; i < j; i++) seg[i] += aj;
    seg[j] = 0;
    if (scale)
        for (int i = 0; i <= j; i++) Lrow[i] = scale[i] * hy_expf_neg(seg[i]);
    else
        for (int i = 0; i <= j; i++) Lrow[i] = hy_expf_neg(seg[i]);
    for (int i = j + 1; i < q; i++) Lrow[i] = 0.0f;
}

/* The task (b, g, c) of index k in b-major, then group, then chunk order. */
static inline void task_of(long k, const hy_ssd_args *a, const ssd_dims *d, int *b, int *g, int *c) {
    *c = (int)(k % d->nch);
    *g = (int)(k / d->nch % a->G);
    *b = (int)(k / ((long)d->nch * a->G));
}

/* ---------------------------------------------------------------- forward ---- */

int hy_ssd_forward(const hy_ssd_args *a, float *y, int ldy, hy_buf *work) {
    int rc = check_args(a, true);
    if (rc < 0) return rc;
    if (a->B == 0) return 0;
    if (a->T == 0) {
        if (a->s_out && a->s_out != a->s0) {
            size_t n = (size_t)a->B * a->H * a->P * a->N * sizeof(float);
            if (a->s0) memcpy(a->s_out, a->s0, n);
            else memset(a->s_out, 0, n);
        }
        return 0;
    }
    const ssd_dims d = dims_of(a);
    const int Q = d.Q, P = a->P, N = a->N, H = a->H, Hg = d.Hg, HgP = d.HgP, nth = omp_get_max_threads();
    const size_t thr = line_up(2 * (size_t)Q * Q + (size_t)Q * HgP + (size_t)Q * P + 4 * (size_t)Q);
    const size_t nech = line_up((size_t)a->B * d.nch * H);
    if (!hy_buf_grab(work, nech + thr * nth)) return HY_ERR_NOMEM;
    float *ech = work->p, *scratch = work->p + nech;
    const long ntask = (long)a->B * a->G * d.nch;

    /* A: each chunk's own state, into slot c + 1 */
    #pragma omp parallel for schedule(static) if (ntask > 1)
    for (long k = 0; k < ntask; k++) {
        int b, g, c;
        task_of(k, a, &d, &b, &g, &c);
        float *XW = scratch + thr * omp_get_thread_num(), *av = XW + (size_t)Q * HgP, *W = av + Q;
        const int t0 = c * Q, q = MIN(Q, a->T - t0);
        const size_t row0 = (size_t)b * a->T + t0;
        for (int hl = 0; hl < Hg; hl++) {
            const int h = g * Hg + hl;
            ech[((size_t)b * d.nch + c) * H + h] = head_decays(a, row0, q, h, av, NULL, W);
            for (int j = 0; j < q; j++) {
                const float s = a->dt[(row0 + j) * a->lddt + h] * W[j];
                const float *restrict xj = a->x + (row0 + j) * a->ldx + (size_t)h * P;
                float *restrict o = XW + (size_t)j * HgP + (size_t)hl * P;
                for (int p = 0; p < P; p++) o[p] = xj[p] * s;
            }
        }
        hy_gemm(true, false, HgP, N, q, 1.0f, XW, HgP, a->Bm + row0 * a->ldbc + (size_t)g * N, a->ldbc, 0.0f,
                slot(a->states, a, &d, b, c + 1, g * Hg), N);
    }

    /* B: the carry, chunk after chunk */
    #pragma omp parallel for schedule(static) if ((long)a->B * H > 1)
    for (long bh = 0; bh < (long)a->B * H; bh++) {
        const int b = (int)(bh / H), h = (int)(bh % H);
        float *S = slot(a->states, a, &d, b, 0, h);
        if (a->s0) memcpy(S, a->s0 + (size_t)bh * d.PN, d.PN * sizeof(float));
        else memset(S, 0, d.PN * sizeof(float));
        for (int c = 0; c < d.nch; c++) {
            const float e = ech[((size_t)b * d.nch + c) * H + h];
            const float *restrict cur = slot(a->states, a, &d, b, c, h);
            float *restrict nxt = slot(a->states, a, &d, b, c + 1, h);
            for (size_t i = 0; i < d.PN; i++) nxt[i] += e * cur[i];
        }
        if (a->s_out) memcpy(a->s_out + (size_t)bh * d.PN, slot(a->states, a, &d, b, d.nch, h), d.PN * sizeof(float));
    }

    /* C: outputs */
    #pragma omp parallel for schedule(static) if (ntask > 1)
    for (long k = 0; k < ntask; k++) {
        int b, g, c;
        task_of(k, a, &d, &b, &g, &c);
        float *CB = scratch + thr * omp_get_thread_num(), *M = CB + (size_t)Q * Q, *Z = M + (size_t)Q * Q,
              *Xt = Z + (size_t)Q * HgP, *av = Xt + (size_t)Q * P, *E = av + Q, *seg = E + Q;
        const int t0 = c * Q, q = MIN(Q, a->T - t0);
        const size_t row0 = (size_t)b * a->T + t0;
        const float *Bc = a->Bm + row0 * a->ldbc + (size_t)g * N, *Cc = a->Cm + row0 * a->ldbc + (size_t)g * N;
        hy_gemm(false, true, q, q, N, 1.0f, Cc, a->ldbc, Bc, a->ldbc, 0.0f, CB, Q);
        hy_gemm(false, true, q, HgP, N, 1.0f, Cc, a->ldbc, slot(a->states, a, &d, b, c, g * Hg), N, 0.0f, Z, HgP);
        for (int hl = 0; hl < Hg; hl++) {
            const int h = g * Hg + hl;
            head_decays(a, row0, q, h, av, E, NULL);
            for (int j = 0; j < q; j++) mask_row(j, q, av, seg, M + (size_t)j * Q, CB + (size_t)j * Q);
            for (int j = 0; j < q; j++) {
                const float s = a->dt[(row0 + j) * a->lddt + h];
                const float *restrict xj = a->x + (row0 + j) * a->ldx + (size_t)h * P;
                float *restrict o = Xt + (size_t)j * P;
                for (int p = 0; p < P; p++) o[p] = xj[p] * s;
            }
            float *yh = y + row0 * ldy + (size_t)h * P;
            hy_gemm(false, false, q, P, q, 1.0f, M, Q, Xt, P, 0.0f, yh, ldy);
            for (int j = 0; j < q; j++) {
                const float ej = E[j];
                const float *restrict z = Z + (size_t)j * HgP + (size_t)hl * P;
                float *restrict o = yh + (size_t)j * ldy;
                for (int p = 0; p < P; p++) o[p] += ej * z[p];
            }
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- backward ---- */

int hy_ssd_backward(const hy_ssd_args *a, const float *dy, int lddy, float *dx, int lddx, float *ddt, int ldddt,
                    float *dB, float *dC, int lddbc, float *dA, float *ds0, hy_buf *work) {
    int rc = check_args(a, true);
    if (rc < 0) return rc;
    if (a->B == 0) return 0;
    if (a->T == 0) {
        if (ds0) memset(ds0, 0, (size_t)a->B * a->H * a->P * a->N * sizeof(float));
        return 0;
    }
    const ssd_dims d = dims_of(a);
    const int Q = d.Q, P = a->P, N = a->N, H = a->H, Hg = d.Hg, HgP = d.HgP, nth = omp_get_max_threads();
    const size_t QQ = (size_t)Q * Q, QH = (size_t)Q * HgP;
    const size_t thr = line_up(4 * QQ + 5 * QH + (size_t)Q * P + 3 * (size_t)Q * Hg + 4 * (size_t)Q);
    const size_t nst = hy_ssd_state_floats(a->B, a->T, H, P, N, Q), nsm = line_up((size_t)a->B * d.nch * H);
    if (!hy_buf_grab(work, nst + 3 * nsm + thr * nth)) return HY_ERR_NOMEM;
    float *dst = work->p, *ech = dst + nst, *de = ech + nsm, *dAp = de + nsm, *scratch = dAp + nsm;
    const long ntask = (long)a->B * a->G * d.nch;

    /* 1: the direct part of each chunk's dS_in, into dst slot c */
    #pragma omp parallel for schedule(static) if (ntask > 1)
    for (long k = 0; k < ntask; k++) {
        int b, g, c;
        task_of(k, a, &d, &b, &g, &c);
        float *dYE = scratch + thr * omp_get_thread_num(), *av = dYE + QH, *E = av + Q;
        const int t0 = c * Q, q = MIN(Q, a->T - t0);
        const size_t row0 = (size_t)b * a->T + t0;
        for (int hl = 0; hl < Hg; hl++) {
            const int h = g * Hg + hl;
            ech[((size_t)b * d.nch + c) * H + h] = head_decays(a, row0, q, h, av, E, NULL);
            for (int j = 0; j < q; j++) {
                const float *restrict g_ = dy + (row0 + j) * lddy + (size_t)h * P;
                float *restrict o = dYE + (size_t)j * HgP + (size_t)hl * P;
                const float ej = E[j];
                for (int p = 0; p < P; p++) o[p] = g_[p] * ej;
            }
        }
        hy_gemm(true, false, HgP, N, q, 1.0f, dYE, HgP, a->Cm + row0 * a->ldbc + (size_t)g * N, a->ldbc, 0.0f,
                slot(dst, a, &d, b, c, g * Hg), N);
    }

    /* 2: the carry backwards; afterwards dst slot c + 1 holds dS_out(c), slot 0 dS_in(0) */
    #pragma omp parallel for schedule(static) if ((long)a->B * H > 1)
    for (long bh = 0; bh < (long)a->B * H; bh++) {
        const int b = (int)(bh / H), h = (int)(bh % H);
        memset(slot(dst, a, &d, b, d.nch, h), 0, d.PN * sizeof(float));
        for (int c = d.nch - 1; c >= 0; c--) {
            float *restrict cur = slot(dst, a, &d, b, c, h);
            const float *restrict nxt = slot(dst, a, &d, b, c + 1, h), *restrict S = slot(a->states, a, &d, b, c, h);
            const float e = ech[((size_t)b * d.nch + c) * H + h];
            de[((size_t)b * d.nch + c) * H + h] = vdot(nxt, S, (int)d.PN);
            for (size_t i = 0; i < d.PN; i++) cur[i] += e * nxt[i];
        }
        if (ds0) memcpy(ds0 + (size_t)bh * d.PN, slot(dst, a, &d, b, 0, h), d.PN * sizeof(float));
    }

    /* 3: the gradients of every input, chunk by chunk */
    #pragma omp parallel for schedule(static) if (ntask > 1)
    for (long k = 0; k < ntask; k++) {
        int b, g, c;
        task_of(k, a, &d, &b, &g, &c);
        float *CB = scratch + thr * omp_get_thread_num(), *Lm = CB + QQ, *dM = Lm + QQ, *dG = dM + QQ,
              *Xt = dG + QQ, *XW = Xt + QH, *Z = XW + QH, *V = Z + QH, *dYE = V + QH, *dXt = dYE + QH,
              *avs = dXt + (size_t)Q * P, *Es = avs + (size_t)Q * Hg, *Ws = Es + (size_t)Q * Hg, *seg = Ws + (size_t)Q * Hg,
              *U = seg + Q, *da = U + Q;
        const int t0 = c * Q, q = MIN(Q, a->T - t0);
        const size_t row0 = (size_t)b * a->T + t0;
        const float *Bc = a->Bm + row0 * a->ldbc + (size_t)g * N, *Cc = a->Cm + row0 * a->ldbc + (size_t)g * N;
        const float *Sg = slot(a->states, a, &d, b, c, g * Hg), *dSo = slot(dst, a, &d, b, c + 1, g * Hg);
        float *dBc = dB + row0 * lddbc + (size_t)g * N, *dCc = dC + row0 * lddbc + (size_t)g * N;
        hy_gemm(false, true, q, q, N, 1.0f, Cc, a->ldbc, Bc, a->ldbc, 0.0f, CB, Q);
        hy_gemm(false, true, q, HgP, N, 1.0f, Cc, a->ldbc, Sg, N, 0.0f, Z, HgP);
        hy_gemm(false, true, q, HgP, N, 1.0f, Bc, a->ldbc, dSo, N, 0.0f, V, HgP);
        for (int hl = 0; hl < Hg; hl++) {
            const int h = g * Hg + hl;
            float *av = avs + (size_t)hl * Q, *E = Es + (size_t)hl * Q, *W = Ws + (size_t)hl * Q;
            head_decays(a, row0, q, h, av, E, W);
            for (int j = 0; j < q; j++) {
                const float s = a->dt[(row0 + j) * a->lddt + h], sw = s * W[j], ej = E[j];
                const float *restrict xj = a->x + (row0 + j) * a->ldx + (size_t)h * P;
                const float *restrict gj = dy + (row0 + j) * lddy + (size_t)h * P;
                float *restrict xt = Xt + (size_t)j * HgP + (size_t)hl * P, *restrict xw = XW + (size_t)j * HgP + (size_t)hl * P,
                                *restrict ge = dYE + (size_t)j * HgP + (size_t)hl * P;
                for (int p = 0; p < P; p++) xt[p] = xj[p] * s;
                for (int p = 0; p < P; p++) xw[p] = xj[p] * sw;
                for (int p = 0; p < P; p++) ge[p] = gj[p] * ej;
            }
        }
        /* the carried-in state's and the chunk state's parts of dC and dB */
        hy_gemm(false, false, q, N, HgP, 1.0f, dYE, HgP, Sg, N, 0.0f, dCc, lddbc);
        hy_gemm(false, false, q, N, HgP, 1.0f, XW, HgP, dSo, N, 0.0f, dBc, lddbc);
        memset(dG, 0, QQ * sizeof(float));
        for (int hl = 0; hl < Hg; hl++) {
            const int h = g * Hg + hl;
            const float *av = avs + (size_t)hl * Q, *E = Es + (size_t)hl * Q, *W = Ws + (size_t)hl * Q;
            const float *dyh = dy + row0 * lddy + (size_t)h * P;
            for (int j = 0; j < q; j++) mask_row(j, q, av, seg, Lm + (size_t)j * Q, NULL);
            /* M = L ⊙ CB into dM's space first: d(Δx) = Mᵀ dy */
            for (int j = 0; j < q; j++)
                for (int i = 0; i < q; i++) dM[(size_t)j * Q + i] = Lm[(size_t)j * Q + i] * CB[(size_t)j * Q + i];
            hy_gemm(true, false, q, P, q, 1.0f, dM, Q, dyh, lddy, 0.0f, dXt, P);
            hy_gemm(false, true, q, q, P, 1.0f, dyh, lddy, Xt + (size_t)hl * P, HgP, 0.0f, dM, Q);
            /* the mask: dCB += dM ⊙ L; F = dM ⊙ L ⊙ CB below the diagonal -> da */
            for (int i = 0; i < q; i++) U[i] = 0.0f, da[i] = 0.0f;
            for (int j = 0; j < q; j++) {
                float *restrict dm = dM + (size_t)j * Q, *restrict dg = dG + (size_t)j * Q;
                const float *restrict l = Lm + (size_t)j * Q, *restrict cb = CB + (size_t)j * Q;
                for (int i = 0; i <= j; i++) {
                    const float t = dm[i] * l[i];
                    dg[i] += t;
                    dm[i] = t * cb[i];
                }
            }
            for (int r = q - 1; r >= 1; r--) {
                const float *restrict f = dM + (size_t)r * Q;
                for (int i = 0; i < r; i++) U[i] += f[i];
                da[r] += vsum(U, r);
            }
            /* E: dE_j = dy_j · Z_j; W: dW_i = Δx_i · V_i; d(Δx) += W ⊙ V */
            float acc = 0;
            for (int j = q - 1; j >= 0; j--) {
                acc += vdot(dyh + (size_t)j * lddy, Z + (size_t)j * HgP + (size_t)hl * P, P) * E[j];
                da[j] += acc;
            }
            acc = 0;
            for (int i = 0; i < q; i++) {
                da[i] += acc;
                const float *restrict v = V + (size_t)i * HgP + (size_t)hl * P;
                float *restrict o = dXt + (size_t)i * P;
                const float wi = W[i];
                acc += vdot(Xt + (size_t)i * HgP + (size_t)hl * P, v, P) * wi;
                for (int p = 0; p < P; p++) o[p] += wi * v[p];
            }
            /* e = exp(Σ a): every a of the chunk */
            const size_t ci = ((size_t)b * d.nch + c) * H + h;
            const float dee = de[ci] * ech[ci], Ah = a->A[h];
            float dAsum = 0;
            for (int j = 0; j < q; j++) {
                const float s = a->dt[(row0 + j) * a->lddt + h], daj = da[j] + dee;
                const float *restrict xj = a->x + (row0 + j) * a->ldx + (size_t)h * P, *restrict gx = dXt + (size_t)j * P;
                float *restrict o = dx + (row0 + j) * lddx + (size_t)h * P;
                for (int p = 0; p < P; p++) o[p] = s * gx[p];
                ddt[(row0 + j) * ldddt + h] = vdot(xj, gx, P) + Ah * daj;
                dAsum += s * daj;
            }
            dAp[ci] = dAsum;
        }
        hy_gemm(false, false, q, N, q, 1.0f, dG, Q, Bc, a->ldbc, 1.0f, dCc, lddbc);
        hy_gemm(true, false, q, N, q, 1.0f, dG, Q, Cc, a->ldbc, 1.0f, dBc, lddbc);
    }
    for (int h = 0; h < H; h++) {
        double s = 0;
        for (int b = 0; b < a->B; b++)
            for (int c = 0; c < d.nch; c++) s += dAp[((size_t)b * d.nch + c) * H + h];
        dA[h] += (float)s;
    }
    return 0;
}

/* ---------------------------------------------------------------- the plain recurrence ---- */

int hy_ssd_scan(const hy_ssd_args *a, float *y, int ldy) {
    int rc = check_args(a, false);
    if (rc < 0) return rc;
    if (!a->s_out) return hy_fail("ssd: the step-by-step scan needs a state to write (s_out)");
    const int P = a->P, N = a->N, H = a->H, Hg = H / a->G;
    const size_t PN = (size_t)P * N;
    const long lanes = (long)a->B * H;
    #pragma omp parallel for schedule(static) if (lanes > 1 && (size_t)a->T * PN * lanes > 65536)
    for (long bh = 0; bh < lanes; bh++) {
        const int b = (int)(bh / H), h = (int)(bh % H), g = h / Hg;
        float *S = a->s_out + (size_t)bh * PN;
        if (a->s0 && a->s0 != a->s_out) memcpy(S, a->s0 + (size_t)bh * PN, PN * sizeof(float));
        else if (!a->s0) memset(S, 0, PN * sizeof(float));
        for (int t = 0; t < a->T; t++) {
            const size_t row = (size_t)b * a->T + t;
            const float dl = a->dt[row * a->lddt + h], e = hy_expf_neg(dl * a->A[h]);
            const float *restrict xt = a->x + row * a->ldx + (size_t)h * P;
            const float *restrict Bt = a->Bm + row * a->ldbc + (size_t)g * N, *restrict Ct = a->Cm + row * a->ldbc + (size_t)g * N;
            float *restrict yt = y + row * ldy + (size_t)h * P;
            for (int p = 0; p < P; p++) {
                float *restrict s = S + (size_t)p * N;
                const float u = dl * xt[p];
                for (int n = 0; n < N; n++) s[n] = e * s[n] + u * Bt[n];
                yt[p] = vdot(s, Ct, N);
            }
        }
    }
    return 0;
}

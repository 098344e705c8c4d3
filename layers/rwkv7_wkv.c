/* The RWKV-7 state recurrence (see layers/rwkv7.h for the formulas and layouts).
 *
 * Forward, per (batch, head) and step: with S kept key-major (row j = key index), sq = S q is a sum
 * of rows scaled by q_j and the update of row j is  S_j ← S_j·w_j − b_j·sq + k_j·v,  y += r_j·S_j:
 * every inner loop runs over the value index, contiguous, and vectorizes without horizontal sums.
 * About 5 flops per state entry and step; the N×N state (16 KiB at N = 64) stays in L1.
 *
 * Backward: per chunk of HY_WKV7_CHUNK steps, from the last chunk to the first, the chunk's states
 * are recomputed from its checkpoint (using the forward's sq, so no dot products) into a VALUE-major
 * buffer (row i = value index), then the steps are walked in reverse. In value-major layout one
 * pass over the rows does a whole step: with dS' = dS + dy rᵀ,
 *     dr += dy_i·S_t[i]        dv_i = dS'[i]·k       dk += v_i·dS'[i]     dw += dS'[i] ⊙ S_{t-1}[i]
 *     db -= sq_i·dS'[i]        dsq_i = -dS'[i]·b     dq += dsq_i·S_{t-1}[i]
 *     dS_{t-1}[i] = dS'[i] ⊙ w + dsq_i·q
 * (two dot products per row, the rest vector updates over the key index). Memory: the checkpoints
 * (T/CHUNK·N² per head) and (CHUNK+1)·N² + N² floats of workspace per thread. */
#include "layers/rwkv7.h"
#include "core/error.h"
#include "core/mem.h"
#include <omp.h>
#include <string.h>

/* One (batch, head) of the forward; N is a compile-time constant in the specialised calls. */
static inline __attribute__((always_inline)) void fwd_bh(const hy_wkv7_in *in, int bi, int h, float *restrict S,
                                                         float *restrict y, float *restrict sq, float *restrict ckpt,
                                                         const int N) {
    const int T = in->T, H = in->H, nch = hy_wkv7_nchunks(T);
    const size_t C = (size_t)H * N, base = (size_t)bi * T * C + (size_t)h * N, NN = (size_t)N * N;
    for (int t = 0; t < T; t++) {
        if (ckpt && t % HY_WKV7_CHUNK == 0)
            memcpy(ckpt + (((size_t)bi * H + h) * nch + t / HY_WKV7_CHUNK) * NN, S, NN * sizeof(float));
        const size_t o = base + (size_t)t * C;
        const float *restrict r = in->r + o, *restrict w = in->w + o, *restrict k = in->k + o,
                              *restrict v = in->v + o, *restrict q = in->q + o, *restrict b = in->b + o;
        float sv[N], yv[N];
        for (int i = 0; i < N; i++) sv[i] = 0.0f, yv[i] = 0.0f;
        for (int j = 0; j < N; j++) {
            const float qj = q[j], *restrict row = S + (size_t)j * N;
            for (int i = 0; i < N; i++) sv[i] += row[i] * qj;
        }
        for (int j = 0; j < N; j++) {
            const float wj = w[j], bj = b[j], kj = k[j], rj = r[j];
            float *restrict row = S + (size_t)j * N;
            for (int i = 0; i < N; i++) {
                float s = row[i] * wj - bj * sv[i] + kj * v[i];
                row[i] = s;
                yv[i] += rj * s;
            }
        }
        for (int i = 0; i < N; i++) y[o + i] = yv[i], sq[o + i] = sv[i];
    }
}

static void fwd_any(const hy_wkv7_in *in, int bi, int h, float *S, float *y, float *sq, float *ckpt) {
    switch (in->N) {
    case 64: fwd_bh(in, bi, h, S, y, sq, ckpt, 64); break;
    case 32: fwd_bh(in, bi, h, S, y, sq, ckpt, 32); break;
    case 16: fwd_bh(in, bi, h, S, y, sq, ckpt, 16); break;
    case 128: fwd_bh(in, bi, h, S, y, sq, ckpt, 128); break;
    default: fwd_bh(in, bi, h, S, y, sq, ckpt, in->N); break;
    }
}

void hy_wkv7_forward(const hy_wkv7_in *in, float *S, float *y, float *sq, float *ckpt) {
    const int BH = in->B * in->H, N = in->N;
    const size_t NN = (size_t)N * N;
    #pragma omp parallel
    {
        float *zero = S ? NULL : hy_malloc(NN * sizeof(float));
        #pragma omp for schedule(static)
        for (int bh = 0; bh < BH; bh++) {
            float *st = S ? S + (size_t)bh * NN : zero;
            if (!st) continue;   /* out of memory: hy_fail already recorded */
            if (!S) memset(st, 0, NN * sizeof(float));
            fwd_any(in, bh / in->H, bh % in->H, st, y, sq, ckpt);
        }
        hy_free(zero);
    }
}

/* One (batch, head) of the backward. P: (CHUNK+1, N, N) and dS: (N, N) workspace. */
static inline __attribute__((always_inline)) void bwd_bh(const hy_wkv7_in *in, int bi, int h, const float *sqa,
                                                         const float *ckpt, const float *dya, float *dra, float *dwa,
                                                         float *dka, float *dva, float *dqa, float *dba,
                                                         float *restrict P, float *restrict dS, const int N) {
    const int T = in->T, H = in->H, nch = hy_wkv7_nchunks(T);
    const size_t C = (size_t)H * N, base = (size_t)bi * T * C + (size_t)h * N, NN = (size_t)N * N;
    memset(dS, 0, NN * sizeof(float));
    for (int c = nch - 1; c >= 0; c--) {
        const int t0 = c * HY_WKV7_CHUNK, len = T - t0 < HY_WKV7_CHUNK ? T - t0 : HY_WKV7_CHUNK;
        const float *restrict cp = ckpt + (((size_t)bi * H + h) * nch + c) * NN;
        for (int i = 0; i < N; i++)      /* key-major checkpoint -> value-major P[0] */
            for (int j = 0; j < N; j++) P[(size_t)i * N + j] = cp[(size_t)j * N + i];
        for (int s = 0; s < len; s++) {  /* recompute the chunk's states */
            const size_t o = base + (size_t)(t0 + s) * C;
            const float *restrict w = in->w + o, *restrict k = in->k + o, *restrict v = in->v + o,
                                  *restrict b = in->b + o, *restrict sq = sqa + o;
            const float *restrict Sp = P + (size_t)s * NN;
            float *restrict Sn = P + (size_t)(s + 1) * NN;
            for (int i = 0; i < N; i++) {
                const float sqi = sq[i], vi = v[i];
                for (int j = 0; j < N; j++) Sn[(size_t)i * N + j] = Sp[(size_t)i * N + j] * w[j] - b[j] * sqi + k[j] * vi;
            }
        }
        for (int s = len - 1; s >= 0; s--) {
            const size_t o = base + (size_t)(t0 + s) * C;
            const float *restrict r = in->r + o, *restrict w = in->w + o, *restrict k = in->k + o,
                                  *restrict v = in->v + o, *restrict q = in->q + o, *restrict b = in->b + o,
                                  *restrict sq = sqa + o, *restrict dy = dya + o;
            const float *restrict Sp = P + (size_t)s * NN, *restrict Sc = P + (size_t)(s + 1) * NN;
            float dr[N], dk[N], dw[N], db[N], dq[N], dv[N], dsr[N];
            for (int j = 0; j < N; j++) dr[j] = dk[j] = dw[j] = db[j] = dq[j] = 0.0f;
            for (int i = 0; i < N; i++) {
                const float dyi = dy[i], vi = v[i], sqi = sq[i];
                float *restrict dSi = dS + (size_t)i * N;
                const float *restrict Spi = Sp + (size_t)i * N, *restrict Sci = Sc + (size_t)i * N;
                float dvi = 0.0f, dsq = 0.0f;
                #pragma omp simd reduction(+ : dvi, dsq)
                for (int j = 0; j < N; j++) {
                    float d = dSi[j] + dyi * r[j];
                    dsr[j] = d;
                    dvi += d * k[j];
                    dsq -= d * b[j];
                }
                dv[i] = dvi;
                for (int j = 0; j < N; j++) {
                    float d = dsr[j];
                    dr[j] += dyi * Sci[j];
                    dk[j] += vi * d;
                    dw[j] += d * Spi[j];
                    db[j] -= sqi * d;
                    dq[j] += dsq * Spi[j];
                    dSi[j] = d * w[j] + dsq * q[j];
                }
            }
            for (int j = 0; j < N; j++) {
                dra[o + j] = dr[j], dka[o + j] = dk[j], dwa[o + j] = dw[j];
                dba[o + j] = db[j], dqa[o + j] = dq[j], dva[o + j] = dv[j];
            }
        }
    }
}

static void bwd_any(const hy_wkv7_in *in, int bi, int h, const float *sq, const float *ckpt, const float *dy,
                    float *dr, float *dw, float *dk, float *dv, float *dq, float *db, float *P, float *dS) {
    switch (in->N) {
    case 64: bwd_bh(in, bi, h, sq, ckpt, dy, dr, dw, dk, dv, dq, db, P, dS, 64); break;
    case 32: bwd_bh(in, bi, h, sq, ckpt, dy, dr, dw, dk, dv, dq, db, P, dS, 32); break;
    case 16: bwd_bh(in, bi, h, sq, ckpt, dy, dr, dw, dk, dv, dq, db, P, dS, 16); break;
    case 128: bwd_bh(in, bi, h, sq, ckpt, dy, dr, dw, dk, dv, dq, db, P, dS, 128); break;
    default: bwd_bh(in, bi, h, sq, ckpt, dy, dr, dw, dk, dv, dq, db, P, dS, in->N); break;
    }
}

int hy_wkv7_backward(const hy_wkv7_in *in, const float *sq, const float *ckpt, const float *dy, float *dr,
                     float *dw, float *dk, float *dv, float *dq, float *db) {
    const int BH = in->B * in->H;
    const size_t NN = (size_t)in->N * in->N;
    int failed = 0;
    #pragma omp parallel reduction(| : failed)
    {
        float *P = hy_malloc((HY_WKV7_CHUNK + 2) * NN * sizeof(float));
        if (!P) failed = 1;
        #pragma omp for schedule(static)
        for (int bh = 0; bh < BH; bh++)
            if (P) bwd_any(in, bh / in->H, bh % in->H, sq, ckpt, dy, dr, dw, dk, dv, dq, db, P,
                           P + (HY_WKV7_CHUNK + 1) * NN);
        hy_free(P);
    }
    return failed ? HY_ERR_NOMEM : 0;
}

void hy_wkv7_forward_ref(const hy_wkv7_in *in, float *y) {
    const int B = in->B, T = in->T, H = in->H, N = in->N;
    const size_t C = (size_t)H * N;
    float *S = hy_calloc((size_t)N * N * sizeof(float)), *sq = hy_malloc((size_t)N * sizeof(float));
    for (int bi = 0; bi < B; bi++)
        for (int h = 0; h < H; h++) {
            memset(S, 0, (size_t)N * N * sizeof(float));
            for (int t = 0; t < T; t++) {
                size_t o = ((size_t)bi * T + t) * C + (size_t)h * N;
                for (int i = 0; i < N; i++) {   /* S[i][j]: row i = value index */
                    double a = 0;
                    for (int j = 0; j < N; j++) a += (double)S[i * N + j] * in->q[o + j];
                    sq[i] = (float)a;
                }
                for (int i = 0; i < N; i++)
                    for (int j = 0; j < N; j++)
                        S[i * N + j] = S[i * N + j] * in->w[o + j] - sq[i] * in->b[o + j] + in->v[o + i] * in->k[o + j];
                for (int i = 0; i < N; i++) {
                    double a = 0;
                    for (int j = 0; j < N; j++) a += (double)S[i * N + j] * in->r[o + j];
                    y[o + i] = (float)a;
                }
            }
        }
    hy_free(S), hy_free(sq);
}

/* mamba_scan — the selective scan of the Mamba block, forward and chunked backward (see
 * layers/mamba.h for the math and layouts).
 *
 * Work unit: one sequence × a block of CB = 16 channels. Its N states live in a [N][CB] array, so
 * the inner loops run over 16 contiguous channels (one AVX-512 or two AVX2 vectors; hy_mamba_expf);
 * B_t[n] and C_t[n] are scalars broadcast over the block. A tail block (E not a multiple of 16) is
 * padded with zero channels (Δ = x = 0 keeps their state at 0), so every loop has the full width.
 *
 * Backward, per block, chunks of `chunk` steps from the last to the first: recompute the chunk's
 * states from the one stored at its start (keeping exp(Δ·A) too), then walk it backwards with the
 * adjoint r = exp(Δ_{t+1}·A) ⊙ ds_{t+1} carried across chunks. dB_t, dC_t are sums over channels:
 * each thread adds its blocks' sums into its own (B·T, 2N) buffer, and the buffers are added in
 * thread order afterwards (deterministic for a given thread count, no atomics, memory independent
 * of E); dA and dD are kept per sequence and added in sequence order. */
#include "core/error.h"
#include "core/mem.h"
#include "layers/mamba.h"
#include <math.h>
#include <omp.h>
#include <string.h>

#define CB 16

size_t hy_mamba_chunk_floats(int B, int T, int E, int N, int chunk) {
    if (chunk <= 0 || T <= 0) return 0;
    return (size_t)B * (size_t)((T + chunk - 1) / chunk) * N * E;
}

/* The CB floats of one row starting at p: p itself when the block is full, else a zero-padded
 * copy in buf. */
static inline const float *lanes(const float *p, int cb, float *restrict buf) {
    if (cb == CB) return p;
    for (int c = 0; c < CB; c++) buf[c] = c < cb ? p[c] : 0.0f;
    return buf;
}

/* Stores the cb live lanes of v at p. */
static inline void store_lanes(float *p, const float *v, int cb) { memcpy(p, v, (size_t)cb * sizeof(float)); }

/* A (E, N) of channels c0.. as At[n][c], padded lanes 0; D likewise. */
static void load_params(const hy_mamba_scan_args *a, int c0, int cb, float (*At)[CB], float *Dv) {
    for (int n = 0; n < a->N; n++)
        for (int c = 0; c < CB; c++) At[n][c] = c < cb ? a->A[(size_t)(c0 + c) * a->N + n] : 0.0f;
    for (int c = 0; c < CB; c++) Dv[c] = a->D && c < cb ? a->D[c0 + c] : 0.0f;
}

/* The forward of one (sequence b, channel block c0). */
static void forward_block(const hy_mamba_scan_args *a, float *y, int b, int c0) {
    const int T = a->T, E = a->E, N = a->N, cb = E - c0 < CB ? E - c0 : CB;
    const int nch = a->chunk_states ? (T + a->chunk - 1) / a->chunk : 0;
    float s[HY_MAMBA_MAX_STATE][CB] __attribute__((aligned(64)));
    float At[HY_MAMBA_MAX_STATE][CB] __attribute__((aligned(64)));
    float Dv[CB] __attribute__((aligned(64)));
    load_params(a, c0, cb, At, Dv);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < CB; c++) s[n][c] = a->s0 && c < cb ? a->s0[((size_t)b * E + c0 + c) * N + n] : 0.0f;
    for (int t = 0; t < T; t++) {
        if (nch && t % a->chunk == 0) {
            float *cs = a->chunk_states + ((size_t)b * nch + t / a->chunk) * N * E + c0;
            for (int n = 0; n < N; n++) store_lanes(cs + (size_t)n * E, s[n], cb);
        }
        size_t row = (size_t)b * T + t;
        float pd[CB], px[CB], dx[CB] __attribute__((aligned(64))), acc[CB] __attribute__((aligned(64)));
        const float *restrict d = lanes(a->delta + row * E + c0, cb, pd);
        const float *restrict xv = lanes(a->x + row * E + c0, cb, px);
        const float *bt = a->Bm + row * a->ld_bc, *ct = a->Cm + row * a->ld_bc;
        for (int c = 0; c < CB; c++) dx[c] = d[c] * xv[c], acc[c] = Dv[c] * xv[c];
        for (int n = 0; n < N; n++) {
            const float bn = bt[n], cn = ct[n];
            #pragma omp simd
            for (int c = 0; c < CB; c++) {
                float sv = HY_MB_FMA(hy_mamba_expf_neg(d[c] * At[n][c]), s[n][c], dx[c] * bn);
                s[n][c] = sv;
                acc[c] = HY_MB_FMA(sv, cn, acc[c]);
            }
        }
        store_lanes(y + row * E + c0, acc, cb);
    }
    if (a->s_out)
        for (int n = 0; n < N; n++)
            for (int c = 0; c < cb; c++) a->s_out[((size_t)b * E + c0 + c) * N + n] = s[n][c];
}

static int check_args(const hy_mamba_scan_args *a) {
    if (a->N < 1 || a->N > HY_MAMBA_MAX_STATE) return hy_fail("mamba scan: d_state %d outside 1..%d", a->N, HY_MAMBA_MAX_STATE);
    if (a->chunk_states && a->chunk <= 0) return hy_fail("mamba scan: chunk_states need chunk > 0");
    return 0;
}

int hy_mamba_scan_forward(const hy_mamba_scan_args *a, float *y) {
    int rc = check_args(a);
    if (rc < 0) return rc;
    if (a->B <= 0 || a->T <= 0 || a->E <= 0) return 0;
    const int nblk = (a->E + CB - 1) / CB, tasks = a->B * nblk;
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < tasks; i++) forward_block(a, y, i / nblk, (i % nblk) * CB);
    return 0;
}

/* The backward of one (sequence b, channel block c0). ws: (2·chunk + 1)·N·CB floats. part: the
 * (T, 2N) rows of sequence b in this thread's dB | dC sums (added to); dA_b (E, N) and dD_b (E):
 * this sequence's partials (the block's channels written). */
static void backward_block(const hy_mamba_scan_args *a, const float *dy, float *ddelta, float *dxo, float *part,
                           float *dA_b, float *dD_b, int b, int c0, float *ws) {
    const int T = a->T, E = a->E, N = a->N, K = a->chunk, cb = E - c0 < CB ? E - c0 : CB;
    const int nch = (T + K - 1) / K;
    float (*S)[CB] = (float (*)[CB])ws;    /* (K+1) × N rows: S[i·N + n] */
    float (*Ex)[CB] = (float (*)[CB])(ws + (size_t)(K + 1) * N * CB);  /* K × N rows */
    float At[HY_MAMBA_MAX_STATE][CB] __attribute__((aligned(64)));
    float r[HY_MAMBA_MAX_STATE][CB] __attribute__((aligned(64)));
    float gA[HY_MAMBA_MAX_STATE][CB] __attribute__((aligned(64)));
    float Dv[CB] __attribute__((aligned(64))), gD[CB] = {0};
    load_params(a, c0, cb, At, Dv);
    memset(r, 0, sizeof(float) * CB * N);
    memset(gA, 0, sizeof(float) * CB * N);
    for (int k = nch - 1; k >= 0; k--) {
        const int t0 = k * K, t1 = t0 + K < T ? t0 + K : T;
        const float *cs = a->chunk_states + ((size_t)b * nch + k) * N * E + c0;
        for (int n = 0; n < N; n++)
            for (int c = 0; c < CB; c++) S[n][c] = c < cb ? cs[(size_t)n * E + c] : 0.0f;
        /* recompute the chunk: S[(i+1)·N + n] = state after step t0 + i, Ex[i·N + n] = exp(Δ·A) */
        for (int t = t0; t < t1; t++) {
            size_t row = (size_t)b * T + t, i = (size_t)(t - t0);
            float pd[CB], px[CB], dx[CB] __attribute__((aligned(64)));
            const float *restrict d = lanes(a->delta + row * E + c0, cb, pd);
            const float *restrict xv = lanes(a->x + row * E + c0, cb, px);
            const float *bt = a->Bm + row * a->ld_bc;
            for (int c = 0; c < CB; c++) dx[c] = d[c] * xv[c];
            float (*restrict sp)[CB] = S + i * N, (*restrict sn)[CB] = S + (i + 1) * N, (*restrict ex)[CB] = Ex + i * N;
            for (int n = 0; n < N; n++) {
                const float bn = bt[n];
                #pragma omp simd
                for (int c = 0; c < CB; c++) {
                    float e = hy_mamba_expf_neg(d[c] * At[n][c]);
                    ex[n][c] = e;
                    sn[n][c] = HY_MB_FMA(e, sp[n][c], dx[c] * bn);
                }
            }
        }
        /* walk the chunk backwards */
        for (int t = t1 - 1; t >= t0; t--) {
            size_t row = (size_t)b * T + t, i = (size_t)(t - t0);
            float pd[CB], px[CB], pg[CB], dxv[CB] __attribute__((aligned(64)));
            float gd[CB] __attribute__((aligned(64))), gx[CB] __attribute__((aligned(64)));
            const float *restrict d = lanes(a->delta + row * E + c0, cb, pd);
            const float *restrict xv = lanes(a->x + row * E + c0, cb, px);
            const float *restrict g = lanes(dy + row * E + c0, cb, pg);
            const float *bt = a->Bm + row * a->ld_bc, *ct = a->Cm + row * a->ld_bc;
            float *pr = part + (size_t)t * 2 * N;
            for (int c = 0; c < CB; c++) {
                dxv[c] = d[c] * xv[c];
                gx[c] = Dv[c] * g[c];
                gd[c] = 0.0f;
                gD[c] += g[c] * xv[c];
            }
            float (*restrict sp)[CB] = S + i * N, (*restrict sn)[CB] = S + (i + 1) * N, (*restrict ex)[CB] = Ex + i * N;
            for (int n = 0; n < N; n++) {
                const float bn = bt[n], cn = ct[n];
                float sB = 0.0f, sC = 0.0f;
                #pragma omp simd reduction(+ : sB, sC)
                for (int c = 0; c < CB; c++) {
                    float h = HY_MB_FMA(g[c], cn, r[n][c]);   /* dL/ds_t */
                    sC = HY_MB_FMA(g[c], sn[n][c], sC);
                    sB = HY_MB_FMA(h, dxv[c], sB);
                    float hb = h * bn;
                    gx[c] = HY_MB_FMA(hb, d[c], gx[c]);
                    float e = ex[n][c], q = h * sp[n][c] * e;   /* dL/d(Δ·A) */
                    gd[c] = HY_MB_FMA(q, At[n][c], HY_MB_FMA(hb, xv[c], gd[c]));
                    gA[n][c] = HY_MB_FMA(q, d[c], gA[n][c]);
                    r[n][c] = e * h;
                }
                pr[n] += sB;
                pr[N + n] += sC;
            }
            store_lanes(ddelta + row * E + c0, gd, cb);
            store_lanes(dxo + row * E + c0, gx, cb);
        }
    }
    for (int c = 0; c < cb; c++) {
        for (int n = 0; n < N; n++) dA_b[(size_t)(c0 + c) * N + n] = gA[n][c];
        dD_b[c0 + c] = gD[c];
    }
}

int hy_mamba_scan_backward(const hy_mamba_scan_args *a, const float *dy, float *ddelta, float *dx, float *dB,
                           float *dC, int ld_dbc, float *dA, float *dD) {
    int rc = check_args(a);
    if (rc < 0) return rc;
    if (!a->chunk_states || a->s0) return hy_fail("mamba scan backward: needs the forward's chunk states and a zero initial state");
    const int B = a->B, T = a->T, E = a->E, N = a->N, nblk = (E + CB - 1) / CB, tasks = B * nblk;
    if (B <= 0 || T <= 0 || E <= 0) return 0;
    const size_t ws_floats = (size_t)(2 * a->chunk + 1) * N * CB, rowsN = (size_t)B * T * 2 * N;
    const int nth = omp_get_max_threads();
    float *part = hy_calloc((size_t)nth * rowsN * sizeof(float));
    float *dA_p = hy_malloc((size_t)B * E * N * sizeof(float)), *dD_p = hy_malloc((size_t)B * E * sizeof(float));
    int fail = !part || !dA_p || !dD_p, used = 1;
    if (fail) {
        hy_free(part), hy_free(dA_p), hy_free(dD_p);
        return HY_ERR_NOMEM;
    }
    #pragma omp parallel num_threads(nth)
    {
        float *ws = hy_malloc(ws_floats * sizeof(float));
        if (!ws) {
            #pragma omp atomic write
            fail = 1;
        }
        #pragma omp single
        used = omp_get_num_threads();
        float *mine = part + (size_t)omp_get_thread_num() * rowsN;
        #pragma omp for schedule(static)
        for (int i = 0; i < tasks; i++)
            if (ws) {
                int b = i / nblk;
                backward_block(a, dy, ddelta, dx, mine + (size_t)b * T * 2 * N, dA_p + (size_t)b * E * N,
                               dD_p + (size_t)b * E, b, (i % nblk) * CB, ws);
            }
        hy_free(ws);
    }
    if (fail) {
        hy_free(part), hy_free(dA_p), hy_free(dD_p);
        return HY_ERR_NOMEM;
    }
    /* fixed-order sums over threads (dB, dC) and over sequences (dA, dD) */
    #pragma omp parallel for schedule(static)
    for (long rw = 0; rw < (long)B * T; rw++) {
        float sB[HY_MAMBA_MAX_STATE], sC[HY_MAMBA_MAX_STATE];
        for (int n = 0; n < N; n++) sB[n] = sC[n] = 0.0f;
        for (int k = 0; k < used; k++) {
            const float *p = part + (size_t)k * rowsN + (size_t)rw * 2 * N;
            for (int n = 0; n < N; n++) sB[n] += p[n], sC[n] += p[N + n];
        }
        memcpy(dB + (size_t)rw * ld_dbc, sB, (size_t)N * sizeof(float));
        memcpy(dC + (size_t)rw * ld_dbc, sC, (size_t)N * sizeof(float));
    }
    #pragma omp parallel for schedule(static)
    for (long i = 0; i < (long)E * N; i++) {
        float s = 0.0f;
        for (int b = 0; b < B; b++) s += dA_p[(size_t)b * E * N + i];
        dA[i] += s;
    }
    if (dD)
        for (int c = 0; c < E; c++) {
            float s = 0.0f;
            for (int b = 0; b < B; b++) s += dD_p[(size_t)b * E + c];
            dD[c] += s;
        }
    hy_free(part), hy_free(dA_p), hy_free(dD_p);
    return 0;
}

/* log1p(e) for e in [0, 1], branch-free (cephes logf's polynomial): for e <= sqrt2 - 1 the
 * polynomial runs on e itself (no rounding of 1 + e), above on (1 + e)/2 - 1 plus log 2. */
static inline float log1p_unit(float e) {
    const int big = e > 0.41421356f;
    const float x = big ? 0.5f * (1.0f + e) - 1.0f : e, k = big ? 1.0f : 0.0f, z = x * x;
    float y = 7.0376836292e-2f;
    y = y * x - 1.1514610310e-1f;
    y = y * x + 1.1676998740e-1f;
    y = y * x - 1.2420140846e-1f;
    y = y * x + 1.4249322787e-1f;
    y = y * x - 1.6668057665e-1f;
    y = y * x + 2.0000714765e-1f;
    y = y * x - 2.4999993993e-1f;
    y = y * x + 3.3333331174e-1f;
    y = y * x * z;
    y += -2.12194440e-4f * k;
    y += -0.5f * z;
    return x + y + 0.693359375f * k;
}

/* softplus(v) = max(v, 0) + log1p(exp(-|v|)) for v <= 20 (the same function, no overflow). */
void hy_mamba_softplus(float *restrict out, const float *restrict in, size_t n) {
    #pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) {
        float v = in[i];
        float s = (v > 0.0f ? v : 0.0f) + log1p_unit(hy_mamba_expf(-fabsf(v)));
        out[i] = v > 20.0f ? v : s;
    }
}

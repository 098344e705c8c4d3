/* mamba_scan — the selective scan of the Mamba block, forward and chunked backward (see
 * layers/mamba/scan.h for the math and layouts).
 *
 * Work unit: one sequence × a block of CB = 16 channels. Its N states live in a [N][CB] array, so
 * the inner loops run over 16 contiguous channels (one AVX-512 or two AVX2 vectors; hy_expf_neg_v8);
 * B_t[n] and C_t[n] are scalars broadcast over the block. A tail block (E not a multiple of 16) is
 * padded with zero channels (Δ = x = 0 keeps their state at 0), so every loop has the full width.
 *
 * Backward, per block, chunks of `chunk` steps from the last to the first: recompute the chunk's
 * states from the one stored at its start (keeping exp(Δ·A) too), then walk it backwards with the
 * adjoint r = exp(Δ_{t+1}·A) ⊙ ds_{t+1} carried across chunks. dB_t, dC_t are sums over channels:
 * each thread adds its blocks' sums into its own (B·T, 2N) buffer, and the buffers are added in
 * thread order afterwards (deterministic for a given thread count, no atomics, memory independent
 * of E); dA and dD are kept per sequence and added in sequence order.
 *
 * The hot loops are written with GCC vector extensions (v8: 8 floats, two per block), so the
 * per-step accumulators (y, dΔ, dx) stay in registers: written as loops over float arrays, gcc
 * kept them in memory across the n loop, a store-to-load chain that bounded the scan. This file
 * is compiled with fp-contract=fast (a·b + c as one FMA; C17 mode otherwise contracts nothing). */
#if defined(__clang__)   /* within expressions: clang's `fast` fuses the streamed and plain twins of a loop differently */
#pragma clang fp contract(on)
#else
#pragma GCC optimize("fp-contract=fast")
#endif
#include "core/error.h"
#include "core/mem.h"
#include "core/vmath.h"
#include "layers/mamba/scan.h"
#include <math.h>
#include <omp.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#include "core/vec8.h"
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
        float pd[CB], px[CB], out[CB];
        const float *d = lanes(a->delta + row * E + c0, cb, pd), *xv = lanes(a->x + row * E + c0, cb, px);
        const float *bt = a->Bm + row * a->ld_bc, *ct = a->Cm + row * a->ld_bc;
        const v8 d0 = v8_load(d), d1 = v8_load(d + 8), x0 = v8_load(xv), x1 = v8_load(xv + 8), dx0 = d0 * x0, dx1 = d1 * x1;
        v8 acc0 = v8_load(Dv) * x0, acc1 = v8_load(Dv + 8) * x1;
        for (int n = 0; n < N; n++) {
            const v8 bn = v8_splat(bt[n]), cn = v8_splat(ct[n]);
            v8 s0 = hy_expf_neg_v8(d0 * v8_load(At[n])) * v8_load(s[n]) + dx0 * bn;
            v8 s1 = hy_expf_neg_v8(d1 * v8_load(At[n] + 8)) * v8_load(s[n] + 8) + dx1 * bn;
            v8_store(s[n], s0), v8_store(s[n] + 8, s1);
            acc0 = s0 * cn + acc0, acc1 = s1 * cn + acc1;
        }
        v8_store(out, acc0), v8_store(out + 8, acc1);
        store_lanes(y + row * E + c0, out, cb);
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

/* out[n] = Σ_c p[n][c] for the N rows of a [N][CB] block: the sums over channels of dB_t and
 * dC_t. With AVX2, 8 rows at a time by a horizontal-add tree (9 instructions for 8 sums instead of
 * a chain of 16 scalar adds per sum, which dominated the backward); plain loops otherwise. */
static inline void row_sums(const float (*restrict p)[CB], float *restrict out, int N) {
    int n = 0;
#if defined(__AVX2__)
    for (; n + 8 <= N; n += 8) {
        __m256 v[8];
        for (int j = 0; j < 8; j++) v[j] = _mm256_add_ps(_mm256_loadu_ps(p[n + j]), _mm256_loadu_ps(p[n + j] + 8));
        __m256 t0 = _mm256_hadd_ps(v[0], v[1]), t1 = _mm256_hadd_ps(v[2], v[3]);
        __m256 t2 = _mm256_hadd_ps(v[4], v[5]), t3 = _mm256_hadd_ps(v[6], v[7]);
        __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);   /* rows 0-3 | 4-7, per 128-bit half */
        __m256 lo = _mm256_permute2f128_ps(u0, u1, 0x20), hi = _mm256_permute2f128_ps(u0, u1, 0x31);
        _mm256_storeu_ps(out + n, _mm256_add_ps(lo, hi));
    }
#endif
    for (; n < N; n++) {
        float a = 0.0f;
        for (int c = 0; c < CB; c++) a += p[n][c];
        out[n] = a;
    }
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
    float pB[HY_MAMBA_MAX_STATE][CB] __attribute__((aligned(64))), pC[HY_MAMBA_MAX_STATE][CB] __attribute__((aligned(64)));
    float Dv[CB] __attribute__((aligned(64)));
    v8 gD0 = v8_splat(0), gD1 = v8_splat(0);
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
            float pd[CB], px[CB];
            const float *d = lanes(a->delta + row * E + c0, cb, pd), *xv = lanes(a->x + row * E + c0, cb, px);
            const float *bt = a->Bm + row * a->ld_bc;
            const v8 d0 = v8_load(d), d1 = v8_load(d + 8), dx0 = d0 * v8_load(xv), dx1 = d1 * v8_load(xv + 8);
            float (*restrict sp)[CB] = S + i * N, (*restrict sn)[CB] = S + (i + 1) * N, (*restrict ex)[CB] = Ex + i * N;
            for (int n = 0; n < N; n++) {
                const v8 bn = v8_splat(bt[n]);
                v8 e0 = hy_expf_neg_v8(d0 * v8_load(At[n])), e1 = hy_expf_neg_v8(d1 * v8_load(At[n] + 8));
                v8_store(ex[n], e0), v8_store(ex[n] + 8, e1);
                v8_store(sn[n], e0 * v8_load(sp[n]) + dx0 * bn), v8_store(sn[n] + 8, e1 * v8_load(sp[n] + 8) + dx1 * bn);
            }
        }
        /* walk the chunk backwards */
        for (int t = t1 - 1; t >= t0; t--) {
            size_t row = (size_t)b * T + t, i = (size_t)(t - t0);
            float pd[CB], px[CB], pg[CB], out[CB];
            const float *d = lanes(a->delta + row * E + c0, cb, pd), *xv = lanes(a->x + row * E + c0, cb, px);
            const float *g = lanes(dy + row * E + c0, cb, pg);
            const float *bt = a->Bm + row * a->ld_bc, *ct = a->Cm + row * a->ld_bc;
            float *pr = part + (size_t)t * 2 * N;
            const v8 d0 = v8_load(d), d1 = v8_load(d + 8), x0 = v8_load(xv), x1 = v8_load(xv + 8), g0 = v8_load(g), g1 = v8_load(g + 8);
            const v8 dx0 = d0 * x0, dx1 = d1 * x1;
            gD0 = g0 * x0 + gD0, gD1 = g1 * x1 + gD1;
            v8 hb0 = v8_splat(0), hb1 = v8_splat(0), qa0 = v8_splat(0), qa1 = v8_splat(0);   /* Σ_n h·B_n, Σ_n q·A_n */
            float (*restrict sp)[CB] = S + i * N, (*restrict sn)[CB] = S + (i + 1) * N, (*restrict ex)[CB] = Ex + i * N;
            for (int n = 0; n < N; n++) {
                const v8 bn = v8_splat(bt[n]), cn = v8_splat(ct[n]);
                v8 h0 = g0 * cn + v8_load(r[n]), h1 = g1 * cn + v8_load(r[n] + 8);   /* dL/ds_t */
                v8_store(pC[n], g0 * v8_load(sn[n])), v8_store(pC[n] + 8, g1 * v8_load(sn[n] + 8));
                v8_store(pB[n], h0 * dx0), v8_store(pB[n] + 8, h1 * dx1);
                hb0 = h0 * bn + hb0, hb1 = h1 * bn + hb1;
                v8 eh0 = v8_load(ex[n]) * h0, eh1 = v8_load(ex[n] + 8) * h1;
                v8 q0 = eh0 * v8_load(sp[n]), q1 = eh1 * v8_load(sp[n] + 8);   /* dL/d(Δ·A) */
                qa0 = q0 * v8_load(At[n]) + qa0, qa1 = q1 * v8_load(At[n] + 8) + qa1;
                v8_store(gA[n], q0 * d0 + v8_load(gA[n])), v8_store(gA[n] + 8, q1 * d1 + v8_load(gA[n] + 8));
                v8_store(r[n], eh0), v8_store(r[n] + 8, eh1);
            }
            float sB[HY_MAMBA_MAX_STATE], sC[HY_MAMBA_MAX_STATE];
            row_sums(pB, sB, N);
            row_sums(pC, sC, N);
            for (int n = 0; n < N; n++) pr[n] += sB[n], pr[N + n] += sC[n];
            v8_store(out, qa0 + x0 * hb0), v8_store(out + 8, qa1 + x1 * hb1);          /* dΔ */
            store_lanes(ddelta + row * E + c0, out, cb);
            v8_store(out, d0 * hb0 + v8_load(Dv) * g0), v8_store(out + 8, d1 * hb1 + v8_load(Dv + 8) * g1);   /* dx */
            store_lanes(dxo + row * E + c0, out, cb);
        }
    }
    float gD[CB];
    v8_store(gD, gD0), v8_store(gD + 8, gD1);
    for (int c = 0; c < cb; c++) {
        for (int n = 0; n < N; n++) dA_b[(size_t)(c0 + c) * N + n] = gA[n][c];
        dD_b[c0 + c] = gD[c];
    }
}

size_t hy_mamba_scan_backward_floats(int B, int T, int E, int N, int chunk, int threads) {
    size_t ws_floats = (size_t)(2 * chunk + 1) * N * CB, rowsN = (size_t)B * T * 2 * N;
    return (size_t)threads * rowsN + (size_t)B * E * N + (size_t)B * E + (size_t)threads * ws_floats;
}

int hy_mamba_scan_backward(const hy_mamba_scan_args *a, const float *dy, float *ddelta, float *dx, float *dB,
                           float *dC, int ld_dbc, float *dA, float *dD, hy_buf *work) {
    int rc = check_args(a);
    if (rc < 0) return rc;
    if (!a->chunk_states || a->s0) return hy_fail("mamba scan backward: needs the forward's chunk states and a zero initial state");
    const int B = a->B, T = a->T, E = a->E, N = a->N, nblk = (E + CB - 1) / CB, tasks = B * nblk;
    if (B <= 0 || T <= 0 || E <= 0) return 0;
    /* workspace: per-thread dB|dC sums, per-sequence dA and dD, per-thread chunk buffers */
    const size_t ws_floats = (size_t)(2 * a->chunk + 1) * N * CB, rowsN = (size_t)B * T * 2 * N;
    const int nth = omp_get_max_threads();
    const size_t need = hy_mamba_scan_backward_floats(B, T, E, N, a->chunk, nth);
    float *mem;
    if (work) mem = hy_buf_grab(work, need);
    else mem = hy_malloc(need * sizeof(float));
    if (!mem) return HY_ERR_NOMEM;
    float *part = mem, *dA_p = part + (size_t)nth * rowsN, *dD_p = dA_p + (size_t)B * E * N, *wsb = dD_p + (size_t)B * E;
    memset(part, 0, (size_t)nth * rowsN * sizeof(float));
    int used = 1;
    #pragma omp parallel num_threads(nth)
    {
        #pragma omp single
        used = omp_get_num_threads();
        float *mine = part + (size_t)omp_get_thread_num() * rowsN, *ws = wsb + (size_t)omp_get_thread_num() * ws_floats;
        #pragma omp for schedule(static)
        for (int i = 0; i < tasks; i++) {
            int b = i / nblk;
            backward_block(a, dy, ddelta, dx, mine + (size_t)b * T * 2 * N, dA_p + (size_t)b * E * N, dD_p + (size_t)b * E,
                           b, (i % nblk) * CB, ws);
        }
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
    if (!work) hy_free(mem);
    return 0;
}

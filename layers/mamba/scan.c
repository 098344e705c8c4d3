/* mamba_scan — the selective scan of the Mamba block, forward and chunked backward (see
 * layers/mamba/scan.h for the math and layouts).
 *
 * Work unit: one sequence × a block of CB = 16 channels. Its N states live in a [N][CB] array, so
 * the inner loops run over 16 contiguous channels (NV = CB / HY_VW vectors of core/simd.h: one in an
 * AVX-512 build, two in an AVX2 one; hy_expf_neg_vw); B_t[n] and C_t[n] are scalars broadcast
 * over the block straight from memory (vw_bcast). A tail block (E not a multiple of 16) is
 * padded with zero channels (Δ = x = 0 keeps their state at 0), so every loop has the full width.
 *
 * Backward, per block, chunks of `chunk` steps from the last to the first: recompute the chunk's
 * states from the one stored at its start (keeping exp(Δ·A) too), then walk it backwards with the
 * adjoint r = exp(Δ_{t+1}·A) ⊙ ds_{t+1} carried across chunks. dB_t, dC_t are sums over channels:
 * each thread adds its blocks' sums into its own (B·T, 2N) buffer, and the buffers are added in
 * thread order afterwards, in the same parallel region (deterministic for a given thread count, no
 * atomics, memory independent of E); dA and dD are kept per sequence and added in sequence order.
 *
 * The hot loops are written over vw vectors (arrays of NV, indexed by unrolled constant loops), so
 * the per-step accumulators (y, dΔ, dx) stay in registers: written as loops over float arrays, gcc
 * kept them in memory across the n loop, a store-to-load chain that bounded the scan. This file
 * is compiled with fp-contract=fast (a·b + c as one FMA; C17 mode otherwise contracts nothing). */
#if defined(__clang__)   /* within expressions: clang's `fast` fuses the streamed and plain twins of a loop differently */
#pragma clang fp contract(on)
#else
#pragma GCC optimize("fp-contract=fast")
#endif
#include "core/error.h"
#include "core/mem.h"
#include "core/simd.h"
#include "core/vmath.h"
#include "layers/mamba/scan.h"
#include <math.h>
#include <omp.h>
#include <string.h>

#define CB 16
/* Rows ahead the backward prefetches its inputs (Δ, x, B in the recompute, dy in the walk) and its
 * outputs (dΔ, dx). A block's rows are E floats apart (4 KiB at E = 1024), a stride the hardware
 * prefetchers do not follow: with 4 rows ahead the backward took 11-14% less time at the
 * precision.yaml shape (one process, both versions by turns; 8 and 16 rows ahead gained less, 2
 * about as much; the same prefetching in the forward made no difference). */
enum { PF = 4 };
enum { NV = CB / HY_VW };   /* vectors per channel block */
#define UNROLL _Pragma("GCC unroll 2")

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

/* Stores the cb live lanes of v at p: whole vectors for a full block (a memcpy of a variable
 * length is a library call, which cost ~6% of the scan), memcpy for a tail block. */
static inline void store_lanes(float *p, const float *v, int cb) {
    if (cb == CB)
        for (int u = 0; u < NV; u++) vw_store(p + HY_VW * u, vw_load(v + HY_VW * u));
    else memcpy(p, v, (size_t)cb * sizeof(float));
}

/* A (E, N) of channels c0.. as At[n][c], padded lanes 0; D likewise. */
static void load_params(const hy_mamba_scan_args *a, int c0, int cb, float (*At)[CB], float *Dv) {
    for (int n = 0; n < a->N; n++)
        for (int c = 0; c < CB; c++) At[n][c] = c < cb ? a->A[(size_t)(c0 + c) * a->N + n] : 0.0f;
    for (int c = 0; c < CB; c++) Dv[c] = a->D && c < cb ? a->D[c0 + c] : 0.0f;
}

/* The exponent the scan's exp reads for A: A itself, or A·log2 e for the coarse exp (base 2). */
static void exp_scale(float (*Ae)[CB], const float (*At)[CB], int N, bool coarse) {
    for (int n = 0; n < N; n++)
        for (int c = 0; c < CB; c++) Ae[n][c] = coarse ? At[n][c] * 1.44269504088896341f : At[n][c];
}

/* exp(Δ·A) from dv·Ae (exp_scale): the exp the scan was asked for. */
static inline __attribute__((always_inline)) vw decay(vw dA, bool coarse) {
    return coarse ? hy_exp2f_coarse_neg_vw(dA) : hy_expf_neg_vw(dA);
}

/* The forward of one (sequence b, channel block c0); `coarse` a constant in each caller, so each
 * gets its own loops. */
static inline __attribute__((always_inline)) void forward_block_exp(const hy_mamba_scan_args *a, float *y, int b,
                                                                    int c0, const bool coarse) {
    const int T = a->T, E = a->E, N = a->N, cb = E - c0 < CB ? E - c0 : CB;
    const int nch = a->chunk_states ? (T + a->chunk - 1) / a->chunk : 0;
    float s[HY_MAMBA_MAX_STATE][CB] __attribute__((aligned(64)));
    float At[HY_MAMBA_MAX_STATE][CB] __attribute__((aligned(64)));
    float Dv[CB] __attribute__((aligned(64)));
    load_params(a, c0, cb, At, Dv);
    exp_scale(At, At, N, coarse);
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
        vw dv[NV], dx[NV], acc[NV];
        UNROLL for (int u = 0; u < NV; u++) {
            const vw xu = vw_load(xv + HY_VW * u);
            dv[u] = vw_load(d + HY_VW * u), dx[u] = dv[u] * xu, acc[u] = vw_load(Dv + HY_VW * u) * xu;
        }
        for (int n = 0; n < N; n++) {
            const vw bn = vw_bcast(bt + n), cn = vw_bcast(ct + n);
            UNROLL for (int u = 0; u < NV; u++) {
                vw su = decay(dv[u] * vw_load(At[n] + HY_VW * u), coarse) * vw_load(s[n] + HY_VW * u) + dx[u] * bn;
                vw_store(s[n] + HY_VW * u, su);
                acc[u] = su * cn + acc[u];
            }
        }
        UNROLL for (int u = 0; u < NV; u++) vw_store(out + HY_VW * u, acc[u]);
        store_lanes(y + row * E + c0, out, cb);
    }
    if (a->s_out)
        for (int n = 0; n < N; n++)
            for (int c = 0; c < cb; c++) a->s_out[((size_t)b * E + c0 + c) * N + n] = s[n][c];
}

/* The four hot kernels start on 64-byte lines, so their loops keep one placement whatever is
 * linked before them: in the program as it was linked at 65b3fd5 backward_block started 48 bytes
 * into a line and ran about twice as slow as at 32 or 0 bytes in (bench --precision: the f32 step
 * of the mamba stack 534-598 against 488-497 ms). */
static __attribute__((noinline, aligned(64))) void forward_block(const hy_mamba_scan_args *a, float *y, int b, int c0) {
    forward_block_exp(a, y, b, c0, false);
}
static __attribute__((noinline, aligned(64))) void forward_block_coarse(const hy_mamba_scan_args *a, float *y, int b, int c0) {
    forward_block_exp(a, y, b, c0, true);
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
    for (int i = 0; i < tasks; i++) {
        if (a->coarse_exp) forward_block_coarse(a, y, i / nblk, (i % nblk) * CB);
        else forward_block(a, y, i / nblk, (i % nblk) * CB);
    }
    return 0;
}

/* out[n] += Σ_c p[n][c] for N rows already folded to HY_VW lanes (the first HY_VW floats of
 * each [CB] row): the sums over channels of dB_t and dC_t for the states past the backward's
 * whole groups of HY_VW (those are summed in registers, by the same tree). HY_VW rows at a time
 * go through vw_rows_sum (a transpose-and-add tree: HY_VW − 1 shuffle-add steps for HY_VW sums;
 * separate horizontal sums cost a dependent chain per row), the rest one by one in the same order
 * (vw_tree_sum), so every row is summed alike. */
static inline void row_sums_add(const float (*restrict p)[CB], float *restrict out, int N) {
    int n = 0;
    for (; n + HY_VW <= N; n += HY_VW) {
        vw x[HY_VW];
        for (int j = 0; j < HY_VW; j++) x[j] = vw_load(p[n + j]);
        vw_store(out + n, vw_load(out + n) + vw_rows_sum(x));
    }
    for (; n < N; n++) {
        float x[HY_VW];
        for (int c = 0; c < HY_VW; c++) x[c] = p[n][c];
        out[n] += vw_tree_sum(x, HY_VW);
    }
}

/* One state n of the backward walk at one step, for the block's CB channels: the adjoint
 * h = g·C_n + r (dL/ds_t), q = exp(Δ·A)·h·s_{t-1} (dL/d(Δ·A)); adds h·B_n to hb, q·A_n to qa and
 * q·Δ to gA[n], sets r[n] = exp(Δ·A)·h for the step before. *fb, *fc: the products whose sums over
 * channels are dB_t[n] (h·Δ·x) and dC_t[n] (g·s_t), folded to HY_VW lanes (lane c plus lane
 * c + HY_VW when CB is wider than a vector). */
static inline __attribute__((always_inline)) void walk_state(int n, const float *bt, const float *ct, const vw *gv,
                                                             const vw *dx, const vw *dv, vw *hb, vw *qa,
                                                             const float (*At)[CB], const float (*sp)[CB],
                                                             const float (*sn)[CB], const float (*ex)[CB],
                                                             float (*r)[CB], float (*gA)[CB], vw *fb, vw *fc) {
    const vw bn = vw_bcast(bt + n), cn = vw_bcast(ct + n);
    vw sb = {0}, sc = {0};
    UNROLL for (int u = 0; u < NV; u++) {
        const int o = HY_VW * u;
        vw h = gv[u] * cn + vw_load(r[n] + o);   /* dL/ds_t */
        vw pc = gv[u] * vw_load(sn[n] + o), pb = h * dx[u];
        sc = u ? sc + pc : pc, sb = u ? sb + pb : pb;
        hb[u] = h * bn + hb[u];
        vw eh = vw_load(ex[n] + o) * h;
        vw q = eh * vw_load(sp[n] + o);   /* dL/d(Δ·A) */
        qa[u] = q * vw_load(At[n] + o) + qa[u];
        vw_store(gA[n] + o, q * dv[u] + vw_load(gA[n] + o));
        vw_store(r[n] + o, eh);
    }
    *fb = sb, *fc = sc;
}

/* Four states n .. n+3 of the walk (walk_state), their channel products summed by the first two
 * levels of the transpose-and-add tree (vw_rows_pair of pairs): *qb, *qc hold the four states'
 * sums over each 4-lane chunk. */
static inline __attribute__((always_inline)) void walk_quad(int n, const float *bt, const float *ct, const vw *gv,
                                                            const vw *dx, const vw *dv, vw *hb, vw *qa,
                                                            const float (*At)[CB], const float (*sp)[CB],
                                                            const float (*sn)[CB], const float (*ex)[CB],
                                                            float (*r)[CB], float (*gA)[CB], vw *qb, vw *qc) {
    vw fB[4], fC[4];
    for (int e = 0; e < 4; e++)
        walk_state(n + e, bt, ct, gv, dx, dv, hb, qa, At, sp, sn, ex, r, gA, &fB[e], &fC[e]);
    *qb = vw_rows_pair(vw_rows_pair(fB[0], fB[1]), vw_rows_pair(fB[2], fB[3]));
    *qc = vw_rows_pair(vw_rows_pair(fC[0], fC[1]), vw_rows_pair(fC[2], fC[3]));
}

/* The backward of one (sequence b, channel block c0). ws: (2·chunk + 1)·N·CB floats. part: the
 * (T, 2N) rows of sequence b in this thread's dB | dC sums (added to); dA_b (E, N) and dD_b (E):
 * this sequence's partials (the block's channels written). `coarse`: the forward's exp, a
 * constant in each caller. */
static inline __attribute__((always_inline)) void backward_block_exp(const hy_mamba_scan_args *a, const float *dy,
                                                                     float *ddelta, float *dxo, float *part, float *dA_b,
                                                                     float *dD_b, int b, int c0, float *ws,
                                                                     const bool coarse) {
    const int T = a->T, E = a->E, N = a->N, K = a->chunk, cb = E - c0 < CB ? E - c0 : CB;
    const int nch = (T + K - 1) / K;
    float (*S)[CB] = (float (*)[CB])ws;    /* (K+1) × N rows: S[i·N + n] */
    float (*Ex)[CB] = (float (*)[CB])(ws + (size_t)(K + 1) * N * CB);  /* K × N rows */
    float At[HY_MAMBA_MAX_STATE][CB] __attribute__((aligned(64)));
    float Ae[HY_MAMBA_MAX_STATE][CB] __attribute__((aligned(64)));   /* the exp's A (exp_scale) */
    float r[HY_MAMBA_MAX_STATE][CB] __attribute__((aligned(64)));
    float gA[HY_MAMBA_MAX_STATE][CB] __attribute__((aligned(64)));
    float pB[HY_MAMBA_MAX_STATE][CB] __attribute__((aligned(64))), pC[HY_MAMBA_MAX_STATE][CB] __attribute__((aligned(64)));
    float Dv[CB] __attribute__((aligned(64)));
    vw gD[NV];
    UNROLL for (int u = 0; u < NV; u++) gD[u] = (vw){0};
    load_params(a, c0, cb, At, Dv);
    exp_scale(Ae, At, N, coarse);
    memset(r, 0, sizeof(float) * CB * N);
    memset(gA, 0, sizeof(float) * CB * N);
    for (int k = nch - 1; k >= 0; k--) {
        const int t0 = k * K, t1 = t0 + K < T ? t0 + K : T;
        const float *cs = a->chunk_states + ((size_t)b * nch + k) * N * E + c0;
        for (int n = 0; n < N; n++) {
            float pad[CB];
            const float *row = lanes(cs + (size_t)n * E, cb, pad);
            UNROLL for (int u = 0; u < NV; u++) vw_store(S[n] + HY_VW * u, vw_load(row + HY_VW * u));
        }
        if (k > 0)   /* the previous chunk's stored state (N rows E floats apart, long out of cache) */
            for (int n = 0; n < N; n++) __builtin_prefetch(cs - (size_t)N * E + (size_t)n * E);
        /* recompute the chunk: S[(i+1)·N + n] = state after step t0 + i, Ex[i·N + n] = exp(Δ·A) */
        for (int t = t0; t < t1; t++) {
            size_t row = (size_t)b * T + t, i = (size_t)(t - t0);
            if (t + PF < t1) {
                __builtin_prefetch(a->delta + (row + PF) * E + c0);
                __builtin_prefetch(a->x + (row + PF) * E + c0);
                __builtin_prefetch(a->Bm + (row + PF) * a->ld_bc);
            }
            float pd[CB], px[CB];
            const float *d = lanes(a->delta + row * E + c0, cb, pd), *xv = lanes(a->x + row * E + c0, cb, px);
            const float *bt = a->Bm + row * a->ld_bc;
            vw dv[NV], dx[NV];
            UNROLL for (int u = 0; u < NV; u++) dv[u] = vw_load(d + HY_VW * u), dx[u] = dv[u] * vw_load(xv + HY_VW * u);
            float (*restrict sp)[CB] = S + i * N, (*restrict sn)[CB] = S + (i + 1) * N, (*restrict ex)[CB] = Ex + i * N;
            for (int n = 0; n < N; n++) {
                const vw bn = vw_bcast(bt + n);
                UNROLL for (int u = 0; u < NV; u++) {
                    const int o = HY_VW * u;
                    vw e = decay(dv[u] * vw_load(Ae[n] + o), coarse);
                    vw_store(ex[n] + o, e);
                    vw_store(sn[n] + o, e * vw_load(sp[n] + o) + dx[u] * bn);
                }
            }
        }
        /* walk the chunk backwards */
        for (int t = t1 - 1; t >= t0; t--) {
            size_t row = (size_t)b * T + t, i = (size_t)(t - t0);
            if (t - PF >= t0) {
                __builtin_prefetch(dy + (row - PF) * E + c0);
                __builtin_prefetch(ddelta + (row - PF) * E + c0, 1);
                __builtin_prefetch(dxo + (row - PF) * E + c0, 1);
            }
            float pd[CB], px[CB], pg[CB], out[CB];
            const float *d = lanes(a->delta + row * E + c0, cb, pd), *xv = lanes(a->x + row * E + c0, cb, px);
            const float *g = lanes(dy + row * E + c0, cb, pg);
            const float *bt = a->Bm + row * a->ld_bc, *ct = a->Cm + row * a->ld_bc;
            float *pr = part + (size_t)t * 2 * N;
            vw dv[NV], xw[NV], gv[NV], dx[NV], hb[NV], qa[NV];   /* hb = Σ_n h·B_n, qa = Σ_n q·A_n */
            UNROLL for (int u = 0; u < NV; u++) {
                const int o = HY_VW * u;
                dv[u] = vw_load(d + o), xw[u] = vw_load(xv + o), gv[u] = vw_load(g + o), dx[u] = dv[u] * xw[u];
                gD[u] = gv[u] * xw[u] + gD[u], hb[u] = qa[u] = (vw){0};
            }
            float (*restrict sp)[CB] = S + i * N, (*restrict sn)[CB] = S + (i + 1) * N, (*restrict ex)[CB] = Ex + i * N;
            /* whole groups of HY_VW states: the channel sums of every four states go through the
             * first two levels of the transpose-and-add tree (walk_quad), and the group's
             * HY_VW / 4 results through the rest (vw_chunks_pair) as soon as two of a level
             * exist (the same tree as vw_rows_finish), so at most one partial sum per level and
             * per dB / dC stays live, all in registers; the states past the last whole group
             * store their products for row_sums_add. */
            const int nfull = N / HY_VW * HY_VW;
            for (int n0 = 0; n0 < nfull; n0 += HY_VW) {
                vw lvB[3], lvC[3];   /* a pending partial sum per tree level; the group's sums end in level log2(HY_VW / 4) */
                _Pragma("GCC unroll 4") for (int k = 0; k < HY_VW / 4; k++) {
                    vw qB, qC;
                    walk_quad(n0 + 4 * k, bt, ct, gv, dx, dv, hb, qa, At, sp, sn, ex, r, gA, &qB, &qC);
                    int lev = 0;
                    for (int m = k; m & 1; m >>= 1, lev++)
                        qB = vw_chunks_pair(lvB[lev], qB), qC = vw_chunks_pair(lvC[lev], qC);
                    lvB[lev] = qB, lvC[lev] = qC;
                }
                const int top = __builtin_ctz(HY_VW / 4);
                vw_store(pr + n0, vw_load(pr + n0) + lvB[top]);
                vw_store(pr + N + n0, vw_load(pr + N + n0) + lvC[top]);
            }
            for (int n = nfull; n < N; n++) {
                vw fB, fC;
                walk_state(n, bt, ct, gv, dx, dv, hb, qa, At, sp, sn, ex, r, gA, &fB, &fC);
                vw_store(pB[n], fB), vw_store(pC[n], fC);
            }
            if (nfull < N) {
                row_sums_add(pB + nfull, pr + nfull, N - nfull);
                row_sums_add(pC + nfull, pr + N + nfull, N - nfull);
            }
            UNROLL for (int u = 0; u < NV; u++) vw_store(out + HY_VW * u, qa[u] + xw[u] * hb[u]);   /* dΔ */
            store_lanes(ddelta + row * E + c0, out, cb);
            UNROLL for (int u = 0; u < NV; u++)   /* dx */
                vw_store(out + HY_VW * u, dv[u] * hb[u] + vw_load(Dv + HY_VW * u) * gv[u]);
            store_lanes(dxo + row * E + c0, out, cb);
        }
    }
    float gDs[CB];
    UNROLL for (int u = 0; u < NV; u++) vw_store(gDs + HY_VW * u, gD[u]);
    for (int c = 0; c < cb; c++) {
        for (int n = 0; n < N; n++) dA_b[(size_t)(c0 + c) * N + n] = gA[n][c];
        dD_b[c0 + c] = gDs[c];
    }
}

static __attribute__((noinline, aligned(64))) void backward_block(const hy_mamba_scan_args *a, const float *dy, float *ddelta,
                                                     float *dxo, float *part, float *dA_b, float *dD_b, int b, int c0,
                                                     float *ws) {
    backward_block_exp(a, dy, ddelta, dxo, part, dA_b, dD_b, b, c0, ws, false);
}
static __attribute__((noinline, aligned(64))) void backward_block_coarse(const hy_mamba_scan_args *a, const float *dy,
                                                            float *ddelta, float *dxo, float *part, float *dA_b,
                                                            float *dD_b, int b, int c0, float *ws) {
    backward_block_exp(a, dy, ddelta, dxo, part, dA_b, dD_b, b, c0, ws, true);
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
    /* One parallel region for the blocks and the sums after them: with passive waiting every
     * region start wakes the sleeping threads again, which cost more than the barrier. */
    #pragma omp parallel num_threads(nth)
    {
        const int used = omp_get_num_threads(), me = omp_get_thread_num();
        float *mine = part + (size_t)me * rowsN, *ws = wsb + (size_t)me * ws_floats;
        memset(mine, 0, rowsN * sizeof(float));
        #pragma omp for schedule(static)
        for (int i = 0; i < tasks; i++) {
            int b = i / nblk;
            (a->coarse_exp ? backward_block_coarse : backward_block)(a, dy, ddelta, dx, mine + (size_t)b * T * 2 * N,
                                                                     dA_p + (size_t)b * E * N, dD_p + (size_t)b * E, b,
                                                                     (i % nblk) * CB, ws);
        }
        /* fixed-order sums over threads (dB, dC) and over sequences (dA, dD) */
        #pragma omp for schedule(static) nowait
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
        #pragma omp for schedule(static) nowait
        for (long i = 0; i < (long)E * N; i++) {
            float s = 0.0f;
            for (int b = 0; b < B; b++) s += dA_p[(size_t)b * E * N + i];
            dA[i] += s;
        }
        if (dD) {
            #pragma omp for schedule(static) nowait
            for (int c = 0; c < E; c++) {
                float s = 0.0f;
                for (int b = 0; b < B; b++) s += dD_p[(size_t)b * E + c];
                dD[c] += s;
            }
        }
    }
    if (!work) hy_free(mem);
    return 0;
}

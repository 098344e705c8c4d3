/* The RWKV-7 state recurrence (see layers/rwkv7.h for the formulas and layouts).
 *
 * States are KEY-major: row j (key index) holds S[:, j] over the value index i, contiguous.
 *
 * Forward, per (batch, head) and step: sq = S q is a sum of rows scaled by q_j; row j is updated as
 * S_j ← S_j·w_j − b_j·sq + k_j·v and y += r_j·S_j. Every inner loop runs over i and vectorizes
 * without horizontal sums; the value range is cut into blocks of 32 (four 8-wide vectors) so that
 * sq, y and v of a block stay in registers (AVX2 has 16). 5 vector ops (a multiply, 4 FMAs) per
 * state entry and step, 4 (FMAs only) in the column-scaled passes that most steps take (fwd_vec);
 * the N×N state (16 KiB at N = 64) stays in L1; the strided input rows are prefetched.
 *
 * Backward, per chunk of HY_WKV7_CHUNK steps from the last to the first: the chunk's states are
 * recomputed from its checkpoint with the forward's sq (no dot products), then the steps are walked
 * in reverse. With dS the gradient of S_t (key-major rows dS_j) and d_j = dS_j + r_j·dy:
 *   phase A (vectors over i):  dv = Σ_j k_j·dS_j + (r·k)·dy,   dsq = −Σ_j b_j·dS_j − (r·b)·dy
 *   phase B (row j, dots over i):  dr_j = S_t[j]·dy, dk_j = d_j·v, dw_j = d_j·S_{t-1}[j],
 *                                  db_j = −d_j·sq, dq_j = S_{t-1}[j]·dsq;   dS_j ← d_j·w_j + q_j·dsq
 * Memory: the checkpoints (T/CHUNK·N² per head) and (CHUNK+1)·N² + N² floats per thread. */
#include "layers/rwkv7.h"
#include "core/error.h"
#include "core/mem.h"
#include <omp.h>
#include <stdbool.h>
#include "core/vec8.h"
#include <string.h>

/* -std=c17 turns off floating-point contraction; these kernels are FMA chains by design. */
#pragma GCC optimize("fp-contract=fast")

/* 4-float halves for the horizontal sums (v8 and its loads/stores: core/vec8.h). */
typedef float v4 __attribute__((vector_size(16)));
typedef int v4i __attribute__((vector_size(16)));
static inline v4 fold8(v8 a) {
    v4 lo, hi;
    memcpy(&lo, &a, sizeof lo);
    memcpy(&hi, (char *)&a + sizeof lo, sizeof hi);
    return lo + hi;
}
/* The four horizontal sums of a, b, c, d as one vector. */
static inline v4 hsum4(v8 a, v8 b, v8 c, v8 d) {
    v4 A = fold8(a), B = fold8(b), C = fold8(c), D = fold8(d);
    v4 ab = __builtin_shuffle(A, B, (v4i){0, 4, 1, 5}) + __builtin_shuffle(A, B, (v4i){2, 6, 3, 7});
    v4 cd = __builtin_shuffle(C, D, (v4i){0, 4, 1, 5}) + __builtin_shuffle(C, D, (v4i){2, 6, 3, 7});
    /* ab = (a0+a2, b0+b2, a1+a3, b1+b3) */
    v4 lo = __builtin_shuffle(ab, cd, (v4i){0, 1, 4, 5}), hi = __builtin_shuffle(ab, cd, (v4i){2, 3, 6, 7});
    return lo + hi;
}
static inline float hsum1(v8 a) {
    v4 s = fold8(a);
    s += __builtin_shuffle(s, (v4i){2, 3, 0, 1});
    s += __builtin_shuffle(s, (v4i){1, 0, 3, 2});
    return s[0];
}

/* Offsets of (batch bi, head h): vectors at base + t·C, checkpoint c at ck0 + c·N². */
#define WKV_OFFSETS                                                                                    \
    const int T = in->T, H = in->H, nch = hy_wkv7_nchunks(T);                                          \
    const size_t C = (size_t)H * N, base = (size_t)bi * T * C + (size_t)h * N, NN = (size_t)N * N,      \
                 ck0 = ((size_t)bi * H + h) * nch * NN;                                                  \
    (void)ck0

/* How many steps ahead the kernels prefetch their input vectors: the rows of one step are C floats
 * apart, so the hardware's stream prefetcher does not see them coming (4 cache lines per vector, then
 * a jump of C floats); one step of one head is a few thousand cycles, well over a DRAM latency. */
#define HY_WKV7_PF 2
/* Steps of one head between switching heads in the forward (a multiple of the chunk). */
#define HY_WKV7_SPAN (4 * HY_WKV7_CHUNK)

/* Prefetches the N floats at offset o of each input vector (and of extra, when not NULL). */
static inline void prefetch_step(const hy_wkv7_in *in, const float *extra, size_t o, int N) {
    for (int i = 0; i < N; i += 16) {
        __builtin_prefetch(in->r + o + i), __builtin_prefetch(in->w + o + i), __builtin_prefetch(in->k + o + i);
        __builtin_prefetch(in->v + o + i), __builtin_prefetch(in->q + o + i), __builtin_prefetch(in->b + o + i);
        if (extra) __builtin_prefetch(extra + o + i);
    }
}

/* One step's pass over the rows of S (key-major, N a multiple of 8·NB): row j ← row j·cw_j (only
 * when MUL) − cb_j·sq + ck_j·v, y = Σ_j cr_j·row j and, when sqn is not NULL, sqn = Σ_j cq_j·row j.
 * The value range is cut into blocks of 8·NB so that sq, v, y and sqn of a block stay in registers. */
static inline __attribute__((always_inline)) void fwd_pass(float *restrict S, const float *restrict sq,
                                                           const float *restrict v, const float *restrict cw,
                                                           const float *restrict cb, const float *restrict ck,
                                                           const float *restrict cr, const float *restrict cq,
                                                           float *restrict y, float *restrict sqn, const int N,
                                                           const int NB, const bool MUL) {
    for (int i0 = 0; i0 < N; i0 += 8 * NB) {
        v8 sv[NB], yv[NB], vv[NB], nv[NB];
        for (int m = 0; m < NB; m++)
            sv[m] = v8_load(sq + i0 + 8 * m), yv[m] = nv[m] = (v8){0}, vv[m] = v8_load(v + i0 + 8 * m);
        for (int j = 0; j < N; j++) {
            float *row = S + (size_t)j * N + i0;
            const float bj = cb[j], kj = ck[j], rj = cr[j], qj = cq[j], wj = MUL ? cw[j] : 1.0f;
            for (int m = 0; m < NB; m++) {
                v8 x = v8_load(row + 8 * m);
                if (MUL) x *= wj;
                x = x - sv[m] * bj + vv[m] * kj;
                v8_store(row + 8 * m, x);
                yv[m] += x * rj;
                nv[m] += x * qj;
            }
        }
        for (int m = 0; m < NB; m++) {
            v8_store(y + i0 + 8 * m, yv[m]);
            if (sqn) v8_store(sqn + i0 + 8 * m, nv[m]);
        }
    }
}

/* Steps ta..tb-1 of one (batch, head) of the forward, N a multiple of 8·NB (NB a compile-time
 * constant). The sq of the next step is accumulated while the rows are updated (sq_{t+1} =
 * S_t q_{t+1}), so every step is one pass over S (and step 0 one more for its sq); ranges must be
 * called in order, each one's sq_ta written by the range before.
 * The decay multiply is taken out of most passes by keeping the state column-scaled: between two
 * "fold" steps the rows hold S'_t = S_t·diag(1/W_t), W_t the running product of the decays since
 * the last fold, so S'_t = S'_{t-1} − sq (b/W_t)ᵀ + v (k/W_t)ᵀ (two FMAs per entry, no multiply),
 * y = S' (W_t⊙r) and sq_{t+1} = S' (W_t⊙q_{t+1}). A fold step multiplies the rows by W_{t-1}⊙w_t
 * and leaves the true state; it is taken at the end of every chunk (checkpoints and the state
 * handed back are true states) and whenever some W would fall below 1e-20 (no overflow of 1/W). */
static inline __attribute__((always_inline)) void fwd_vec(const hy_wkv7_in *in, int bi, int h, int ta, int tb,
                                                          float *restrict S, float *restrict y, float *restrict sq,
                                                          float *restrict ckpt, const int N, const int NB) {
    WKV_OFFSETS;
    float W[N], cw[N], cb[N], ck[N], cr[N], cq[N];
    for (int i0 = 0; i0 < N && ta == 0; i0 += 8 * NB) {   /* sq of step 0 (later ranges: from their last step) */
        const float *q = in->q + base + (size_t)ta * C;
        v8 sv[NB];
        for (int m = 0; m < NB; m++) sv[m] = (v8){0};
        for (int j = 0; j < N; j++)
            for (int m = 0; m < NB; m++) sv[m] += v8_load(S + (size_t)j * N + i0 + 8 * m) * q[j];
        for (int m = 0; m < NB; m++) v8_store(sq + base + (size_t)ta * C + i0 + 8 * m, sv[m]);
    }
    for (int j = 0; j < N; j++) W[j] = 1.0f;
    for (int t = ta; t < tb; t++) {
        if (ckpt && t % HY_WKV7_CHUNK == 0) memcpy(ckpt + ck0 + (size_t)(t / HY_WKV7_CHUNK) * NN, S, NN * sizeof(float));
        const size_t o = base + (size_t)t * C;
        const bool more = t + 1 < T;   /* the step writes sq_{t+1} (also across the end of the range) */
        const float *restrict r = in->r + o, *restrict w = in->w + o, *restrict k = in->k + o,
                              *restrict b = in->b + o, *restrict qn = in->q + o + (more ? C : 0);
        if (t + HY_WKV7_PF < T) {   /* the inputs, and the y and sq rows it writes (saves the stores' misses) */
            prefetch_step(in, NULL, o + HY_WKV7_PF * C, N);
            for (int i = 0; i < N; i += 16)
                __builtin_prefetch(y + o + HY_WKV7_PF * C + i, 1), __builtin_prefetch(sq + o + HY_WKV7_PF * C + i, 1);
        }
        int small = 0;
        for (int j = 0; j < N; j++) cw[j] = W[j] * w[j], small |= !(cw[j] >= 1e-20f);
        float *sqn = more ? sq + o + C : NULL;
        if (small || t + 1 == tb || (t + 1) % HY_WKV7_CHUNK == 0) {   /* fold: the true S_t */
            fwd_pass(S, sq + o, in->v + o, cw, b, k, r, qn, y + o, sqn, N, NB, true);
            for (int j = 0; j < N; j++) W[j] = 1.0f;
        } else {
            for (int j = 0; j < N; j++) {
                const float Wj = cw[j], inv = 1.0f / Wj;
                cb[j] = b[j] * inv, ck[j] = k[j] * inv, cr[j] = r[j] * Wj, cq[j] = qn[j] * Wj, W[j] = Wj;
            }
            fwd_pass(S, sq + o, in->v + o, NULL, cb, ck, cr, cq, y + o, sqn, N, NB, false);
        }
    }
}

/* One (batch, head) of the forward, any N (plain loops, same arithmetic). */
static void fwd_any(const hy_wkv7_in *in, int bi, int h, int ta, int tb, float *restrict S, float *restrict y,
                    float *restrict sq, float *restrict ckpt) {
    const int N = in->N;
    WKV_OFFSETS;
    for (int t = ta; t < tb; t++) {
        if (ckpt && t % HY_WKV7_CHUNK == 0) memcpy(ckpt + ck0 + (size_t)(t / HY_WKV7_CHUNK) * NN, S, NN * sizeof(float));
        const size_t o = base + (size_t)t * C;
        const float *r = in->r + o, *w = in->w + o, *k = in->k + o, *v = in->v + o, *q = in->q + o, *b = in->b + o;
        float *sv = sq + o, *yv = y + o;
        for (int i = 0; i < N; i++) sv[i] = 0.0f, yv[i] = 0.0f;
        for (int j = 0; j < N; j++)
            for (int i = 0; i < N; i++) sv[i] += S[(size_t)j * N + i] * q[j];
        for (int j = 0; j < N; j++)
            for (int i = 0; i < N; i++) {
                float s = S[(size_t)j * N + i] * w[j] - sv[i] * b[j] + v[i] * k[j];
                S[(size_t)j * N + i] = s;
                yv[i] += s * r[j];
            }
    }
}

static void fwd_bh(const hy_wkv7_in *in, int bi, int h, int ta, int tb, float *S, float *y, float *sq, float *ckpt) {
    switch (in->N) {
    case 64: fwd_vec(in, bi, h, ta, tb, S, y, sq, ckpt, 64, 4); break;
    case 32: fwd_vec(in, bi, h, ta, tb, S, y, sq, ckpt, 32, 4); break;
    case 128: fwd_vec(in, bi, h, ta, tb, S, y, sq, ckpt, 128, 4); break;
    case 16: fwd_vec(in, bi, h, ta, tb, S, y, sq, ckpt, 16, 2); break;
    default:
        if (in->N % 8 == 0) fwd_vec(in, bi, h, ta, tb, S, y, sq, ckpt, in->N, 1);
        else fwd_any(in, bi, h, ta, tb, S, y, sq, ckpt);
    }
}

/* Each thread takes a contiguous range of (batch, head) pairs and walks time in chunks, all its
 * heads within a chunk: the heads of one time step share the same rows of the (B, T, C) inputs,
 * so a chunk touches 16 rows per input (TLB and cache reuse across heads) instead of every head
 * striding through all T rows C floats apart. */
void hy_wkv7_forward(const hy_wkv7_in *in, float *S, float *y, float *sq, float *ckpt) {
    const int BH = in->B * in->H, T = in->T;
    const size_t NN = (size_t)in->N * in->N;
    float *zero = S ? NULL : hy_calloc((size_t)BH * NN * sizeof(float));
    float *st = S ? S : zero;
    if (!st) return;   /* out of memory: hy_fail already recorded */
    #pragma omp parallel
    {
        int nt = omp_get_num_threads(), id = omp_get_thread_num();
        int lo = (int)((long)BH * id / nt), hi = (int)((long)BH * (id + 1) / nt);
        for (int t0 = 0; t0 < T; t0 += HY_WKV7_SPAN) {
            int t1 = t0 + HY_WKV7_SPAN < T ? t0 + HY_WKV7_SPAN : T;
            for (int bh = lo; bh < hi; bh++) fwd_bh(in, bh / in->H, bh % in->H, t0, t1, st + (size_t)bh * NN, y, sq, ckpt);
        }
    }
    hy_free(zero);
}

/* Prefetches everything the backward touches at offset o: its six inputs, sq and dy, and the six
 * gradient rows it will write. */
static inline void prefetch_bwd(const hy_wkv7_in *in, const float *sq, const float *dy, float *const g[6], size_t o,
                                int N) {
    prefetch_step(in, sq, o, N);
    for (int i = 0; i < N; i += 16) {
        __builtin_prefetch(dy + o + i);
        for (int m = 0; m < 6; m++) __builtin_prefetch(g[m] + o + i, 1);
    }
}

/* Recomputes the states of chunk c into P[0..len] (P[0] = its checkpoint, P[s+1] = after step
 * t0 + s) with the forward's sq: key-major, the same arithmetic as the forward's update. */
static inline __attribute__((always_inline)) void recompute(const hy_wkv7_in *in, size_t base, size_t C,
                                                            const float *sqa, const float *cp, float *restrict P,
                                                            int t0, int len, const int N, const float *dy,
                                                            float *const g[6]) {
    const size_t NN = (size_t)N * N;
    for (int s = 0; s < HY_WKV7_PF && s < len; s++) prefetch_bwd(in, sqa, dy, g, base + (size_t)(t0 + s) * C, N);
    memcpy(P, cp, NN * sizeof(float));
    for (int s = 0; s < len; s++) {
        const size_t o = base + (size_t)(t0 + s) * C;
        if (s + HY_WKV7_PF < len) prefetch_bwd(in, sqa, dy, g, o + HY_WKV7_PF * C, N);
        const float *restrict w = in->w + o, *restrict k = in->k + o, *restrict v = in->v + o, *restrict b = in->b + o,
                              *restrict sq = sqa + o;
        const float *restrict Sp = P + (size_t)s * NN;
        float *restrict Sn = P + (size_t)(s + 1) * NN;
        for (int j = 0; j < N; j++) {
            const float wj = w[j], bj = b[j], kj = k[j];
            for (int i = 0; i < N; i++) Sn[(size_t)j * N + i] = Sp[(size_t)j * N + i] * wj - sq[i] * bj + v[i] * kj;
        }
    }
}

/* Chunk c of one (batch, head) of the backward, N a multiple of 8·NB. P: (CHUNK+1, N, N) workspace;
 * dS: (N, N), the gradient of the state after the chunk on entry, before it on return. */
static inline __attribute__((always_inline)) void bwd_vec(const hy_wkv7_in *in, int bi, int h, int c, const float *sqa,
                                                          const float *ckpt, const float *dya, float *dra, float *dwa,
                                                          float *dka, float *dva, float *dqa, float *dba,
                                                          float *restrict P, float *restrict dS, const int N,
                                                          const int NB) {
    WKV_OFFSETS;
    (void)nch;
    float dsqv[N];
    {
        const int t0 = c * HY_WKV7_CHUNK, len = T - t0 < HY_WKV7_CHUNK ? T - t0 : HY_WKV7_CHUNK;
        float *const g[6] = {dra, dwa, dka, dva, dqa, dba};
        recompute(in, base, C, sqa, ckpt + ck0 + (size_t)c * NN, P, t0, len, N, dya, g);
        for (int s = len - 1; s >= 0; s--) {
            const size_t o = base + (size_t)(t0 + s) * C;
            const float *restrict r = in->r + o, *restrict w = in->w + o, *restrict k = in->k + o,
                                  *restrict v = in->v + o, *restrict q = in->q + o, *restrict b = in->b + o,
                                  *restrict sq = sqa + o, *restrict dy = dya + o;
            const float *restrict Sp = P + (size_t)s * NN, *restrict Sc = P + (size_t)(s + 1) * NN;
            float rk = 0, rb = 0;
            for (int j = 0; j < N; j++) rk += r[j] * k[j], rb += r[j] * b[j];
            /* phase A: dv and dsq, vectors over i */
            for (int i0 = 0; i0 < N; i0 += 8 * NB) {
                v8 av[NB], as[NB];
                for (int m = 0; m < NB; m++) av[m] = (v8){0}, as[m] = (v8){0};
                for (int j = 0; j < N; j++) {
                    const float *row = dS + (size_t)j * N + i0;
                    const float kj = k[j], bj = b[j];
                    for (int m = 0; m < NB; m++) {
                        v8 x = v8_load(row + 8 * m);
                        av[m] += x * kj;
                        as[m] += x * bj;
                    }
                }
                for (int m = 0; m < NB; m++) {
                    v8 dyv = v8_load(dy + i0 + 8 * m);
                    v8_store(dva + o + i0 + 8 * m, av[m] + dyv * rk);
                    v8_store(dsqv + i0 + 8 * m, -(as[m] + dyv * rb));
                }
            }
            /* phase B: per row j, dots over i, and dS_{t-1} */
            for (int j = 0; j < N; j += 1) {
                const float rj = r[j], wj = w[j], qj = q[j];
                const float *Spj = Sp + (size_t)j * N, *Scj = Sc + (size_t)j * N;
                float *dSj = dS + (size_t)j * N;
                v8 adr = {0}, adk = {0}, adw = {0}, adb = {0}, adq = {0};
                for (int i = 0; i < N; i += 8) {
                    v8 dyv = v8_load(dy + i), spv = v8_load(Spj + i), dsq = v8_load(dsqv + i);
                    v8 d = v8_load(dSj + i) + dyv * rj;
                    adr += v8_load(Scj + i) * dyv;
                    adk += d * v8_load(v + i);
                    adw += d * spv;
                    adb += d * v8_load(sq + i);
                    adq += spv * dsq;
                    v8_store(dSj + i, d * wj + dsq * qj);
                }
                v4 s4 = hsum4(adr, adk, adw, adb);
                dra[o + j] = s4[0], dka[o + j] = s4[1], dwa[o + j] = s4[2], dba[o + j] = -s4[3];
                dqa[o + j] = hsum1(adq);
            }
        }
    }
}

/* Chunk c of one (batch, head) of the backward, any N (plain loops). */
static void bwd_any(const hy_wkv7_in *in, int bi, int h, int c, const float *sqa, const float *ckpt, const float *dya,
                    float *dra, float *dwa, float *dka, float *dva, float *dqa, float *dba, float *P, float *dS) {
    const int N = in->N;
    WKV_OFFSETS;
    (void)nch;
    float dsq[N];
    {
        const int t0 = c * HY_WKV7_CHUNK, len = T - t0 < HY_WKV7_CHUNK ? T - t0 : HY_WKV7_CHUNK;
        float *const g[6] = {dra, dwa, dka, dva, dqa, dba};
        recompute(in, base, C, sqa, ckpt + ck0 + (size_t)c * NN, P, t0, len, N, dya, g);
        for (int s = len - 1; s >= 0; s--) {
            const size_t o = base + (size_t)(t0 + s) * C;
            const float *r = in->r + o, *w = in->w + o, *k = in->k + o, *v = in->v + o, *q = in->q + o,
                        *b = in->b + o, *sq = sqa + o, *dy = dya + o;
            const float *Sp = P + (size_t)s * NN, *Sc = P + (size_t)(s + 1) * NN;
            for (int i = 0; i < N; i++) {
                float av = 0, as = 0;
                for (int j = 0; j < N; j++) {
                    float d = dS[(size_t)j * N + i] + r[j] * dy[i];
                    av += d * k[j], as += d * b[j];
                }
                dva[o + i] = av, dsq[i] = -as;
            }
            for (int j = 0; j < N; j++) {
                float adr = 0, adk = 0, adw = 0, adb = 0, adq = 0;
                for (int i = 0; i < N; i++) {
                    size_t e = (size_t)j * N + i;
                    float d = dS[e] + r[j] * dy[i];
                    adr += Sc[e] * dy[i], adk += d * v[i], adw += d * Sp[e], adb += d * sq[i], adq += Sp[e] * dsq[i];
                    dS[e] = d * w[j] + dsq[i] * q[j];
                }
                dra[o + j] = adr, dka[o + j] = adk, dwa[o + j] = adw, dba[o + j] = -adb, dqa[o + j] = adq;
            }
        }
    }
}

static void bwd_bh(const hy_wkv7_in *in, int bi, int h, int c, const float *sq, const float *ckpt, const float *dy,
                   float *dr, float *dw, float *dk, float *dv, float *dq, float *db, float *P, float *dS) {
    switch (in->N) {
    case 64: bwd_vec(in, bi, h, c, sq, ckpt, dy, dr, dw, dk, dv, dq, db, P, dS, 64, 4); break;
    case 32: bwd_vec(in, bi, h, c, sq, ckpt, dy, dr, dw, dk, dv, dq, db, P, dS, 32, 4); break;
    case 128: bwd_vec(in, bi, h, c, sq, ckpt, dy, dr, dw, dk, dv, dq, db, P, dS, 128, 4); break;
    case 16: bwd_vec(in, bi, h, c, sq, ckpt, dy, dr, dw, dk, dv, dq, db, P, dS, 16, 2); break;
    default:
        if (in->N % 8 == 0) bwd_vec(in, bi, h, c, sq, ckpt, dy, dr, dw, dk, dv, dq, db, P, dS, in->N, 1);
        else bwd_any(in, bi, h, c, sq, ckpt, dy, dr, dw, dk, dv, dq, db, P, dS);
    }
}

/* As the forward: a contiguous range of (batch, head) pairs per thread, chunks from last to first,
 * all the thread's heads within a chunk (each head's dS kept between chunks). */
int hy_wkv7_backward(const hy_wkv7_in *in, const float *sq, const float *ckpt, const float *dy, float *dr,
                     float *dw, float *dk, float *dv, float *dq, float *db) {
    const int BH = in->B * in->H, nch = hy_wkv7_nchunks(in->T);
    const size_t NN = (size_t)in->N * in->N;
    int failed = 0;
    #pragma omp parallel reduction(| : failed)
    {
        int nt = omp_get_num_threads(), id = omp_get_thread_num();
        int lo = (int)((long)BH * id / nt), hi = (int)((long)BH * (id + 1) / nt);
        float *P = hy_malloc(((HY_WKV7_CHUNK + 1) + (size_t)(hi - lo)) * NN * sizeof(float));
        if (!P) failed = 1;
        else {
            float *dS = P + (HY_WKV7_CHUNK + 1) * NN;
            memset(dS, 0, (size_t)(hi - lo) * NN * sizeof(float));
            for (int c = nch - 1; c >= 0; c--)
                for (int bh = lo; bh < hi; bh++)
                    bwd_bh(in, bh / in->H, bh % in->H, c, sq, ckpt, dy, dr, dw, dk, dv, dq, db, P,
                           dS + (size_t)(bh - lo) * NN);
        }
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
                for (int i = 0; i < N; i++) {   /* S[i][j]: row i = value index, as in the formulas */
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

/* The backward of the RWKV-7 state recurrence (see layers/rwkv7/rwkv7.h for the formulas and layouts;
 * the forward, which writes the checkpoints and sq this reads: layers/rwkv7/wkv.c).
 *
 * Work comes in (batch, head, chunk of HY_WKV7_CHUNK steps) units, chunks from the last to the
 * first. States are VALUE-major here (row i holds S[i, :] over the key index j): in this layout
 * five of the seven gradients (dr, dk, dw, db, dq) are sums of rows, vectors over j, and only dv
 * and dsq need dot products, which pass 1 reduces HY_VW rows at a time (16 with AVX-512, 8 with
 * AVX2) with one transpose-and-add tree. A work's states are recomputed from its (transposed) checkpoint with
 * the forward's sq (no dot products) and then walked in reverse (bwd_walk). Both the recomputed
 * states and dS are kept column-scaled by running products of the decays, as in the forward,
 * which takes the multiplies out: 2 (recompute) + 4 (pass 1: dv and dsq's dots, the dk and db
 * sums) + 5 (pass 2: the dr, dw and dq sums, the update of dS) = 11 FMAs per state entry and step
 * against the forward's 4.
 * The recompute of the next work runs inside the current work's reverse walk: at reverse step
 * k−1 the walk writes the next work's state k, row by row, over the state it has just read. On
 * its own the recompute is bound by its stores' misses to L2 (its 33 states do not fit in L1);
 * inside the walk the stores hit L1 and the FMAs overlap the walk's. Large gradients
 * (HY_WKV7_STREAM_BYTES) are written with non-temporal stores.
 * Memory: the checkpoints (T/CHUNK·N² per head), (CHUNK+1)·N² + 2·(CHUNK+1)·N floats per thread
 * and N² per head (dS). */
#include "layers/rwkv7/rwkv7.h"
#include "core/error.h"
#include "core/mem.h"
#include <omp.h>

/* -std=c17 turns off floating-point contraction; these kernels are FMA chains by design. */
#if defined(__clang__)   /* within expressions: clang's `fast` fuses the streamed and plain twins of a loop differently */
#pragma clang fp contract(on)
#else
#pragma GCC optimize("fp-contract=fast")
#endif
#include "layers/rwkv7/wkv_common.h"

/* 4-float halves for the horizontal sums (v8 and its loads/stores: core/simd.h). */
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
    v4 ab = HY_SHUFFLE(v4i, A, B, 0, 4, 1, 5) + HY_SHUFFLE(v4i, A, B, 2, 6, 3, 7);
    v4 cd = HY_SHUFFLE(v4i, C, D, 0, 4, 1, 5) + HY_SHUFFLE(v4i, C, D, 2, 6, 3, 7);
    /* ab = (a0+a2, b0+b2, a1+a3, b1+b3) */
    v4 lo = HY_SHUFFLE(v4i, ab, cd, 0, 1, 4, 5), hi = HY_SHUFFLE(v4i, ab, cd, 2, 3, 6, 7);
    return lo + hi;
}


/* Prefetches everything the backward touches at offset o: its six inputs, sq and dy, and the six
 * gradient rows it will write. */
static inline void prefetch_bwd(const hy_wkv7_in *in, const float *sq, const float *dy, float *const g[6], size_t o,
                                int N) {
    const bool nt = wkv_stream(in);   /* streamed gradients are not read first */
    prefetch_step(in, sq, o, N);
    for (int i = 0; i < N; i += 16) {
        __builtin_prefetch(dy + o + i);
        if (!nt)
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
            int i = 0;
            for (; i + HY_VW <= N; i += HY_VW)
                vw_store(Sn + (size_t)j * N + i, vw_load(Sp + (size_t)j * N + i) * wj - vw_load(sq + i) * bj + vw_load(v + i) * kj);
            for (; i < N; i++) Sn[(size_t)j * N + i] = Sp[(size_t)j * N + i] * wj - sq[i] * bj + v[i] * kj;
        }
    }
}

/* One (batch, head, chunk) of the backward: its steps, where its states lie in the workspace P
 * (state s, the one before step t0 + s, in slot[s]) and their column scales (state s is
 * P'·diag(Ws[s]), Ws the running product of the decays since the last fold). */
typedef struct {
    int t0, len;
    size_t base;          /* offset of its (batch, head) at step 0 */
    const float *ckpt;    /* its checkpoint (key-major, the state before step t0) */
    float *dS;            /* its head's state gradient, value-major, kept between chunks */
    float *Ws;            /* (CHUNK + 1)·N */
    int slot[HY_WKV7_CHUNK + 1];
} bwd_work;

/* Work w of a thread that owns (batch, head) pairs lo..lo+nh-1: chunks from the last to the first,
 * all the thread's heads within a chunk (the heads of one step share the rows of the inputs). */
static void bwd_work_at(const hy_wkv7_in *in, const float *ckpt, int w, int lo, int nh, float *dS, float *Ws,
                        bwd_work *x) {
    const int nch = hy_wkv7_nchunks(in->T), c = nch - 1 - w / nh, bh = lo + w % nh;
    const size_t NN = (size_t)in->N * in->N;
    x->t0 = c * HY_WKV7_CHUNK, x->len = in->T - x->t0 < HY_WKV7_CHUNK ? in->T - x->t0 : HY_WKV7_CHUNK;
    x->base = wkv_base(in, bh), x->ckpt = ckpt + ((size_t)bh * nch + c) * NN;
    x->dS = dS + (size_t)(w % nh) * NN, x->Ws = Ws;
}

/* The vectors of recompute step k of work x (state k from state k-1, value-major, column-scaled as
 * in the forward): Ws[k] and, for the row update S'_k[i] = S'_{k-1}[i] − sq_i·cb + v_i·ck, cb = b/W
 * and ck = k/W. Returns whether the step folds (some running product W would fall below 1e-20):
 * then the update is S'_{k-1}[i]⊙rw − sq_i·b + v_i·k, the true state, and Ws[k] = 1. */
static inline bool recompute_prep(const hy_wkv7_in *in, const bwd_work *x, int k, float *restrict rw,
                                 float *restrict cb, float *restrict ck, const int N) {
    const size_t o = x->base + (size_t)(x->t0 + k - 1) * in->H * N;
    const float *restrict w = in->w + o, *restrict b = in->b + o, *restrict kv = in->k + o;
    const float *restrict Wp = x->Ws + (size_t)(k - 1) * N;
    float *restrict Wn = x->Ws + (size_t)k * N;
    vwi bad = (vwi){0};
    for (int j = 0; j < N; j += HY_VW) {
        const vw x = vw_load(Wp + j) * vw_load(w + j);
        vw_store(rw + j, x), bad |= ~(x >= 1e-20f);
    }
    const bool small = vwi_any(bad);
    for (int j = 0; j < N; j += HY_VW) {
        const vw x = vw_load(rw + j), bv = vw_load(b + j), kx = vw_load(kv + j), inv = small ? x : 1.0f / x;
        vw_store(cb + j, small ? bv : bv * inv), vw_store(ck + j, small ? kx : kx * inv);
        vw_store(Wn + j, small ? (vw){0} + 1.0f : x);
    }
    return small;
}

/* Row i, values j0.. j0 + HY_VW·NB of that update, from src into dst. */
static inline __attribute__((always_inline)) void recompute_row(const float *restrict src, float *dst, int i, int j0,
                                                                float sqi, float vi, const float *restrict rw,
                                                                const float *restrict cb, const float *restrict ck,
                                                                bool small, const int N, const int NB) {
    for (int m = 0; m < NB; m++) {
        const size_t e = (size_t)i * N + j0 + HY_VW * m;
        vw x = vw_load(src + e);
        if (small) x *= vw_load(rw + j0 + HY_VW * m);
        vw_store(dst + e, x - vw_load(cb + j0 + HY_VW * m) * sqi + vw_load(ck + j0 + HY_VW * m) * vi);
    }
}

/* Recompute step k of work x on its own (not inside another work's reverse walk), into slot dst. */
static inline __attribute__((always_inline)) void recompute_step(const hy_wkv7_in *in, const float *sqa, bwd_work *x,
                                                                 int k, float *P, int dst, const int N, const int NB) {
    const size_t NN = (size_t)N * N, o = x->base + (size_t)(x->t0 + k - 1) * in->H * N;
    float rw[N], cb[N], ck[N];
    const bool small = recompute_prep(in, x, k, rw, cb, ck, N);
    const float *restrict src = P + (size_t)x->slot[k - 1] * NN, *restrict sq = sqa + o, *restrict v = in->v + o;
    float *restrict out = P + (size_t)dst * NN;
    x->slot[k] = dst;
    for (int j0 = 0; j0 < N; j0 += HY_VW * NB)
        for (int i = 0; i < N; i++) {
            if (j0 == 0)   /* the rows this writes soon: their misses to L2 are what bounds this loop */
                for (int e = 0; e < N; e += 16) __builtin_prefetch(out + (size_t)(i + 4) * N + e, 1, 3);
            recompute_row(src, out, i, j0, sq[i], v[i], rw, cb, ck, small, N, NB);
        }
}

/* Puts work x's checkpoint, transposed to value-major, in slot s0 as its state 0. */
static inline void bwd_work_start(const hy_wkv7_in *in, bwd_work *x, float *P, int s0) {
    const int N = in->N;
    hy_transpose(P + (size_t)s0 * N * N, (size_t)N, x->ckpt, (size_t)N, N, N);
    x->slot[0] = s0;
    for (int j = 0; j < N; j++) x->Ws[j] = 1.0f;
}

/* Pass 2 of one reverse step (see bwd_walk): the sums over rows into the gradients at offset o
 * (streamed when nt; dk and db from pass 1's sums kacc, bacc) and the update of dS'. A holds the state before the step (P', scaled by sc);
 * when FUSE, the next work's recompute row i (from B, with its sq and v at nsq, nv) is written
 * over A's row i right after pass 2 has read it. */
static inline __attribute__((always_inline)) void bwd_pass2(
    const hy_wkv7_in *in, size_t o, float *A, float *restrict dS, float *const g[6], const float *restrict dy,
    const float *restrict dsqv, const float *restrict ru, const float *restrict qu, const float *restrict un,
    const float *restrict U, const float *restrict sc, bool fold, float sqdy, float vdy, const float *restrict kacc,
    const float *restrict bacc, const float *restrict B, const float *restrict nsq, const float *restrict nv,
    const float *restrict rw, const float *restrict cb, const float *restrict ck, bool nsmall, bool nt, const int N,
    const int NB, const bool FUSE) {
    const float *restrict r = in->r + o, *restrict w = in->w + o, *restrict k = in->k + o, *restrict b = in->b + o;
    for (int j0 = 0; j0 < N; j0 += HY_VW * NB) {
        vw adr[NB], adw[NB], adq[NB], rv[NB], qv[NB], uv[NB];
        for (int m = 0; m < NB; m++) {
            adr[m] = adw[m] = adq[m] = (vw){0};
            rv[m] = vw_load(ru + j0 + HY_VW * m), qv[m] = vw_load(qu + j0 + HY_VW * m);
            uv[m] = vw_load(un + j0 + HY_VW * m);
        }
        for (int i = 0; i < N; i++) {
            const float dyi = dy[i], dsqi = dsqv[i];
            for (int m = 0; m < NB; m++) {
                const size_t e = (size_t)i * N + j0 + HY_VW * m;
                vw d = vw_load(dS + e), sp = vw_load(A + e);
                WKV_IN_REGISTER(d);   /* one load each for their FMAs */
                WKV_IN_REGISTER(sp);
                adr[m] += sp * dyi;
                adw[m] += d * sp;
                adq[m] += sp * dsqi;
                vw_store(dS + e, (fold ? d * uv[m] : d) + rv[m] * dyi + qv[m] * dsqi);
            }
            if (FUSE) recompute_row(B, A, i, j0, nsq[i], nv[i], rw, cb, ck, nsmall, N, NB);
        }
        for (int m = 0; m < NB; m++) {
            const size_t e = o + j0 + HY_VW * m;
            const vw bv = vw_load(b + j0 + HY_VW * m), kv = vw_load(k + j0 + HY_VW * m),
                     rr = vw_load(r + j0 + HY_VW * m), wv = vw_load(w + j0 + HY_VW * m),
                     Uv = vw_load(U + j0 + HY_VW * m), scv = vw_load(sc + j0 + HY_VW * m),
                     adk = vw_load(kacc + j0 + HY_VW * m), adb = vw_load(bacc + j0 + HY_VW * m);
            const vw sdr = adr[m] * scv;   /* S_{t-1} = P'·diag(Ws) */
            vw_put(g[0] + e, sdr * wv - bv * sqdy + kv * vdy, nt);
            vw_put(g[2] + e, adk * Uv + rr * vdy, nt);
            vw_put(g[1] + e, adw[m] * (Uv * scv) + rr * sdr, nt);
            vw_put(g[5] + e, -(adb * Uv + rr * sqdy), nt);
            vw_put(g[4] + e, adq[m] * scv, nt);
        }
    }
}

/* The walk's prefetches at reverse step rs beyond its own rows: for the next work nx, its
 * recompute inputs a few steps ahead (into L1) and the rows its own walk reads besides those (into
 * L2); for the work after it, nn, the rows the next walk's recompute reads and its checkpoint,
 * spread over the walk's last 8 steps (into L2). nx and nn may be NULL. */
static inline __attribute__((always_inline)) void walk_prefetch_ahead(const hy_wkv7_in *in, const float *sqa,
                                                                      const float *dya, const bwd_work *nx,
                                                                      const bwd_work *nn, int rs, int nfuse, int len,
                                                                      const int N) {
    const size_t C = (size_t)in->H * N, NN = (size_t)N * N;
    if (nx) {
        if (rs + HY_WKV7_PF < nfuse) {
            const size_t on = nx->base + (size_t)(nx->t0 + rs + HY_WKV7_PF) * C;
            for (int i = 0; i < N; i += 16) {
                __builtin_prefetch(in->w + on + i), __builtin_prefetch(in->k + on + i);
                __builtin_prefetch(in->v + on + i), __builtin_prefetch(in->b + on + i);
                __builtin_prefetch(sqa + on + i);
            }
        }
        if (rs < nx->len) {
            const size_t on = nx->base + (size_t)(nx->t0 + rs) * C;
            for (int i = 0; i < N; i += 16) {
                __builtin_prefetch(in->r + on + i, 0, 2), __builtin_prefetch(in->q + on + i, 0, 2);
                __builtin_prefetch(dya + on + i, 0, 2);
            }
        }
    }
    if (nn) {
        if (rs < nn->len) {
            const size_t on = nn->base + (size_t)(nn->t0 + rs) * C;
            for (int i = 0; i < N; i += 16) {
                __builtin_prefetch(in->w + on + i, 0, 2), __builtin_prefetch(in->k + on + i, 0, 2);
                __builtin_prefetch(in->v + on + i, 0, 2), __builtin_prefetch(in->b + on + i, 0, 2);
                __builtin_prefetch(sqa + on + i, 0, 2);
            }
        }
        /* over the walk's last 8 steps: spread over the whole walk, its first lines were evicted
         * again by the walk's own traffic (~48 KiB a step) before the transpose read them */
        const int late = len < 8 ? len : 8, q = rs - (len - late);
        if (q >= 0)
            for (size_t e = (size_t)q * NN / late; e < (size_t)(q + 1) * NN / late; e += 16)
                __builtin_prefetch(nn->ckpt + e, 0, 2);
    }
}

/* The four dots of the vectors at offset o that the row sums need. */
typedef struct {
    float sqdy, vdy, rk, rb;   /* sq·dy, v·dy, r·k, r·b */
} bwd_dots;

/* Those dots, as vectors (a scalar loop is a chain of dependent adds: no reassociation in C). */
static inline __attribute__((always_inline)) bwd_dots step_dots(const hy_wkv7_in *in, const float *sqa,
                                                                const float *dya, size_t o, const int N) {
    const float *restrict r = in->r + o, *restrict k = in->k + o, *restrict v = in->v + o, *restrict b = in->b + o,
                          *restrict sq = sqa + o, *restrict dy = dya + o;
    vw as = (vw){0}, av = (vw){0}, ak = (vw){0}, ab = (vw){0};
    for (int i = 0; i < N; i += HY_VW) {
        const vw d = vw_load(dy + i), rv = vw_load(r + i);
        as += vw_load(sq + i) * d, av += vw_load(v + i) * d;
        ak += rv * vw_load(k + i), ab += rv * vw_load(b + i);
    }
    v4 hs = hsum4(vw_fold8(as), vw_fold8(av), vw_fold8(ak), vw_fold8(ab));
    return (bwd_dots){hs[0], hs[1], hs[2], hs[3]};
}

/* The vectors at offset o scaled for dS' = dS·diag(1/U): uk = U⊙k, ub = U⊙b for the dots, ru = r/U
 * and qu = q/(U⊙w) for the update, un = U⊙w; iU (1/U) becomes the next step's. Returns whether the
 * step folds (dS' times U⊙w: the true dS): when some U⊙w would fall below 1e-20, and always at the
 * chunk's first step (`first`), so dS between chunks is true. */
static inline __attribute__((always_inline)) bool step_scales(const hy_wkv7_in *in, size_t o, bool first,
                                                              const float *U, float *iU, float *uk, float *ub,
                                                              float *ru, float *qu, float *un, const int N) {
    const float *restrict r = in->r + o, *restrict w = in->w + o, *restrict k = in->k + o, *restrict q = in->q + o,
                          *restrict b = in->b + o;
    vwi bad = (vwi){0};
    for (int j = 0; j < N; j += HY_VW) {
        const vw x = vw_load(U + j) * vw_load(w + j);
        vw_store(un + j, x), bad |= ~(x >= 1e-20f);
    }
    const bool fold = first || vwi_any(bad);
    for (int j = 0; j < N; j += HY_VW) {   /* whole vectors: pass 1 loads them as such (store forwarding) */
        const vw Uv = vw_load(U + j), rv = vw_load(r + j), qv = vw_load(q + j);
        vw_store(uk + j, Uv * vw_load(k + j)), vw_store(ub + j, Uv * vw_load(b + j));
        vw_store(ru + j, fold ? rv * vw_load(w + j) : rv * vw_load(iU + j));
        if (fold) vw_store(qu + j, qv);
        else {   /* one division per entry and step: 1/(U⊙w) is the next step's 1/U */
            const vw inv = 1.0f / vw_load(un + j);
            vw_store(qu + j, qv * inv), vw_store(iU + j, inv);
        }
    }
    return fold;
}

/* Pass 1 of a reverse step: dv_i = D_i·k = dS'_i·uk + dy_i (r·k) into dv, dsq_i = −dS'_i·ub − dy_i (r·b)
 * into dsqv; the dots of HY_VW rows are reduced together (vw_rows_pair, vw_rows_finish: core/simd.h)
 * into one vector of HY_VW rows. dv is streamed when nt. It also forms two of pass 2's sums over
 * rows, Σ v_i dS'_i into kacc and Σ sq_i dS'_i into bacc (vectors over j): they read the same dS'
 * rows as the dots, and pass 2, which holds three sums, the update and the next work's recompute,
 * then keeps all its vectors in registers (with all five it spilled and reloaded them every row). */
static inline __attribute__((always_inline)) void bwd_pass1(const float *dS, const float *uk, const float *ub,
                                                            const float *restrict dy, const float *restrict v,
                                                            const float *restrict sq, bwd_dots dt, float *dv,
                                                            float *dsqv, float *restrict kacc, float *restrict bacc,
                                                            bool nt, const int N) {
    const vw rkv = (vw){0} + dt.rk, rbv = (vw){0} + dt.rb;
    vw ka[N / HY_VW], ba[N / HY_VW];
    for (int m = 0; m < N / HY_VW; m++) ka[m] = ba[m] = (vw){0};
    for (int i0 = 0; i0 < N; i0 += HY_VW) {
        vw sk[HY_VW / 2], sb[HY_VW / 2];   /* level-1 pairs */
        for (int p = 0; p < HY_VW / 2; p++) {
            vw ak[2], ab[2];
            for (int e = 0; e < 2; e++) {
                const int i = i0 + 2 * p + e;
                const float *row = dS + (size_t)i * N, vi = v[i], sqi = sq[i];
                ak[e] = ab[e] = (vw){0};
                for (int j = 0; j < N; j += HY_VW) {
                    vw d = vw_load(row + j);
                    WKV_IN_REGISTER(d);   /* one load for its four FMAs */
                    ak[e] += d * vw_load(uk + j);
                    ab[e] += d * vw_load(ub + j);
                    ka[j / HY_VW] += d * vi;
                    ba[j / HY_VW] += d * sqi;
                }
            }
            sk[p] = vw_rows_pair(ak[0], ak[1]), sb[p] = vw_rows_pair(ab[0], ab[1]);
        }
        const vw dk = vw_rows_finish(sk), db = vw_rows_finish(sb), dyv = vw_load(dy + i0);
        vw_put(dv + i0, dk + dyv * rkv, nt);
        vw_store(dsqv + i0, -(db + dyv * rbv));
    }
    for (int m = 0; m < N / HY_VW; m++) vw_store(kacc + HY_VW * m, ka[m]), vw_store(bacc + HY_VW * m, ba[m]);
}

/* After a step: U becomes U⊙w (un), or 1 (and 1/U too) when the step folded. */
static inline __attribute__((always_inline)) void step_advance(float *U, float *iU, const float *un, bool fold,
                                                               const int N) {
    for (int j = 0; j < N; j += HY_VW) {
        vw_store(U + j, fold ? (vw){0} + 1.0f : vw_load(un + j));
        if (fold) vw_store(iU + j, (vw){0} + 1.0f);
    }
}

/* The reverse walk over work cur's steps, N a multiple of HY_VW·NB (NB a compile-time constant),
 * its states already in P. Value-major: row i of a state holds S[i, :] over the key index j, so
 * that the five gradients that sum over i (dr, dk, dw, db, dq) accumulate as vectors over j and
 * only dv and dsq need dot products (two per row, against five in key-major). cur->dS is the
 * gradient of the state after the chunk on entry, before it on return.
 * Per reverse step, with D = dS + dy rᵀ (the gradient of S_t including y = S_t r):
 *   pass 1 (row i, dots over j):  dv_i = D_i·k;  dsq_i = −D_i·b;  and the sums of dS rows alone,
 *          dk = Σ v_i·D_i, db = −Σ sq_i·D_i (vectors over j)
 *   pass 2 (vectors over j, rows i summed):  dr = Σ dy_i·S_t[i], dw = Σ D_i⊙S_{t-1}[i],
 *          dq = Σ dsq_i·S_{t-1}[i];   dS_i ← D_i⊙w + dsq_i·q
 * D is never formed: the dy rᵀ part enters every sum through dots of N-vectors (r·k, v·dy, ...),
 * and dS is held as dS' = dS·diag(1/U) with U the running product of w since the last fold, so
 * that the update is dS'_i ← dS'_i + dy_i·(r/U) + dsq_i·(q/(U⊙w)), two FMAs (the formulas in
 * the passes).
 * When nx is not NULL (the next work, its state 0 in P), the walk also recomputes nx's states
 * 1, 2, ...: state k at reverse step k−1, row by row into the slot of the state that step has just
 * read (bwd_pass2). The recompute's stores then hit lines already in L1, and its work overlaps
 * the walk's arithmetic instead of following it (on its own it is bound by the stores' misses to
 * L2). Returns how many of nx's states it computed (states 1..that). nn: the work after nx (NULL:
 * none), whose rows and checkpoint the walk prefetches into L2 for the next walk. */
static inline __attribute__((always_inline)) int bwd_walk(const hy_wkv7_in *in, const float *sqa, const float *dya,
                                                          float *const g[6], bwd_work *cur, bwd_work *nx,
                                                          const bwd_work *nn, float *P, const int N, const int NB) {
    const size_t C = (size_t)in->H * N, NN = (size_t)N * N;
    const int t0 = cur->t0, len = cur->len, nfuse = nx ? (len < nx->len - 1 ? len : nx->len - 1) : 0;
    float *restrict dS = cur->dS;
    const bool nt = wkv_stream(in);   /* gradients streamed */
    float dsqv[N], U[N], iU[N], rw[N], cb[N], ck[N];   /* dS holds dS' = dS·diag(1/U) inside the chunk; iU = 1/U */
    float kacc[N], bacc[N];                            /* pass 1's sums for pass 2 */
    for (int j = 0; j < N; j++) U[j] = iU[j] = 1.0f;
    for (int s = len - 1; s >= 0 && s >= len - HY_WKV7_PF; s--) prefetch_bwd(in, sqa, dya, g, cur->base + (size_t)(t0 + s) * C, N);
    for (int kn = 0; kn < HY_WKV7_PF && kn < nfuse; kn++) prefetch_step(in, sqa, nx->base + (size_t)(nx->t0 + kn) * C, N);
    for (int s = len - 1, rs = 0; s >= 0; s--, rs++) {
        const size_t o = cur->base + (size_t)(t0 + s) * C;
        if (s >= HY_WKV7_PF) prefetch_bwd(in, sqa, dya, g, o - HY_WKV7_PF * C, N);
        walk_prefetch_ahead(in, sqa, dya, nx, nn, rs, nfuse, len, N);
        const bwd_dots dt = step_dots(in, sqa, dya, o, N);
        float uk[N], ub[N], ru[N], qu[N], un[N];
        const bool fold = step_scales(in, o, s == 0, U, iU, uk, ub, ru, qu, un, N);
        bwd_pass1(dS, uk, ub, dya + o, in->v + o, sqa + o, dt, g[3] + o, dsqv, kacc, bacc, nt, N);
        /* pass 2: the sums over rows, vectors over j (with P' = S_{t-1}·diag(1/Ws), D_i = U⊙dS'_i + dy_i r;
         * pass 1 has formed Σ v_i dS'_i and Σ sq_i dS'_i in kacc, bacc):
         *   dr = w⊙Ws⊙Σ dy_i P'_i − (sq·dy) b + (v·dy) k   (S_tᵀ dy from S_{t-1}: S_t is never read)
         *   dk = U⊙Σ v_i dS'_i + (v·dy) r,   db = −U⊙Σ sq_i dS'_i − (sq·dy) r,   dq = Ws⊙Σ dsq_i P'_i
         *   dw = U⊙Ws⊙Σ dS'_i⊙P'_i + r⊙Ws⊙Σ dy_i P'_i
         * and dS' of the step before: dS'_i + dy_i·ru + dsq_i·qu (a fold: dS'_i⊙U⊙w + ...); while the
         * next work's states remain to recompute, its state rs + 1 goes over this step's state */
        float *A = P + (size_t)cur->slot[s] * NN;
        const float *sc = cur->Ws + (size_t)s * N, *dy = dya + o;
        if (rs < nfuse) {
            const int kn = rs + 1;
            const size_t on = nx->base + (size_t)(nx->t0 + kn - 1) * C;
            const bool nsmall = recompute_prep(in, nx, kn, rw, cb, ck, N);
            const float *B = P + (size_t)nx->slot[kn - 1] * NN;
            nx->slot[kn] = cur->slot[s];
            bwd_pass2(in, o, A, dS, g, dy, dsqv, ru, qu, un, U, sc, fold, dt.sqdy, dt.vdy, kacc, bacc, B, sqa + on,
                      in->v + on, rw, cb, ck, nsmall, nt, N, NB, true);
        } else {
            bwd_pass2(in, o, A, dS, g, dy, dsqv, ru, qu, un, U, sc, fold, dt.sqdy, dt.vdy, kacc, bacc, NULL, NULL,
                      NULL, NULL, NULL, NULL, false, nt, N, NB, false);
        }
        step_advance(U, iU, un, fold, N);
    }
    return nfuse;
}

/* One thread's share of the backward, N a multiple of HY_VW·NB: works in order (bwd_work_at), each
 * walked in reverse while it recomputes the next one's states (bwd_walk); only the first work's
 * states, and those of a next work longer than the current one, are recomputed on their own. */
static inline __attribute__((always_inline)) void bwd_thread_vec(const hy_wkv7_in *in, const float *sqa,
                                                                 const float *ckpt, const float *dya, float *const g[6],
                                                                 int lo, int nh, float *P, float *dS, float *Ws,
                                                                 const int N, const int NB) {
    const int nw = hy_wkv7_nchunks(in->T) * nh;
    bwd_work wk[2], *cur = &wk[0], *nx = &wk[1];
    bwd_work_at(in, ckpt, 0, lo, nh, dS, Ws, cur);
    bwd_work_start(in, cur, P, 0);
    for (int s = 0; s < HY_WKV7_PF && s < cur->len; s++) prefetch_bwd(in, sqa, dya, g, cur->base + (size_t)(cur->t0 + s) * in->H * N, N);
    for (int k = 1; k < cur->len; k++) {
        if (k - 1 + HY_WKV7_PF < cur->len)
            prefetch_bwd(in, sqa, dya, g, cur->base + (size_t)(cur->t0 + k - 1 + HY_WKV7_PF) * in->H * N, N);
        recompute_step(in, sqa, cur, k, P, k, N, NB);
    }
    for (int w = 0; w < nw; w++) {
        bwd_work *next = NULL;
        bool used[HY_WKV7_CHUNK + 1] = {false};
        if (w + 1 < nw) {   /* the next work's state 0 in a slot this walk does not read */
            next = nx;
            bwd_work_at(in, ckpt, w + 1, lo, nh, dS, Ws + (size_t)((w + 1) % 2) * (HY_WKV7_CHUNK + 1) * N, next);
            for (int s = 0; s < cur->len; s++) used[cur->slot[s]] = true;
            int s0 = 0;
            while (used[s0]) s0++;
            bwd_work_start(in, next, P, s0);
        }
        bwd_work nn;
        if (w + 2 < nw) bwd_work_at(in, ckpt, w + 2, lo, nh, dS, Ws, &nn);
        const int done = bwd_walk(in, sqa, dya, g, cur, next, w + 2 < nw ? &nn : NULL, P, N, NB);
        if (next && done + 1 < next->len) {   /* a next work longer than this one: the rest on its own */
            for (int s = 0; s <= HY_WKV7_CHUNK; s++) used[s] = false;
            for (int k = 0; k <= done; k++) used[next->slot[k]] = true;
            for (int k = done + 1, s = 0; k < next->len; k++) {
                while (used[s]) s++;
                used[s] = true;
                recompute_step(in, sqa, next, k, P, s, N, NB);
            }
        }
        bwd_work *t = cur;
        cur = nx, nx = t;
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

/* Floats of one thread's backward workspace for nh heads: CHUNK + 1 states, nh state gradients and
 * the running decay products (CHUNK + 1 vectors, two sets). */
static size_t bwd_workspace_floats(int N, int nh) {
    const size_t NN = (size_t)N * N, f = ((HY_WKV7_CHUNK + 1) + (size_t)nh) * NN + 2 * (HY_WKV7_CHUNK + 1) * (size_t)N;
    return (f + 15) / 16 * 16;   /* whole cache lines, so the next thread's part starts on one */
}

double hy_wkv7_work_floats(int B, int H, int N, int threads) {
    const int BH = B * H;
    if (threads < 1) threads = 1;
    const double fwd = (double)BH * N * N, bwd = (double)threads * bwd_workspace_floats(N, (BH + threads - 1) / threads);
    return fwd > bwd ? fwd : bwd;
}

/* Each thread takes a contiguous range of (batch, head) pairs, as the forward, and walks the chunks
 * from the last to the first, all its heads within a chunk (each head's dS kept between chunks). */
int hy_wkv7_backward(const hy_wkv7_in *in, const float *sq, const float *ckpt, const float *dy, float *dr,
                     float *dw, float *dk, float *dv, float *dq, float *db, hy_buf *work) {
    const int BH = in->B * in->H, nch = hy_wkv7_nchunks(in->T), N = in->N, team = omp_get_max_threads();
    const size_t NN = (size_t)N * N;
    /* The threads' workspaces, one allocation: the caller's `work` when given, kept between calls
     * (a fresh allocation of this size comes back from the system at every call and faults all
     * its pages in again: 336 faults per call with 2 threads for 16 heads of 64, ~10 us each on
     * the project machine), else allocated on the calling thread and freed at the end (a worker's
     * allocation comes from its own malloc arena, which hands the pages back on free). */
    const size_t per = bwd_workspace_floats(N, (BH + team - 1) / team);
    float *all = work ? hy_buf_grab(work, (size_t)team * per) : hy_malloc((size_t)team * per * sizeof(float));
    if (!all) return hy_fail_code(HY_ERR_NOMEM, "rwkv7 recurrence backward: out of memory for the per-thread workspace");
    int failed = 0;
    #pragma omp parallel num_threads(team) reduction(| : failed)
    {
        int nt = omp_get_num_threads(), id = omp_get_thread_num();
        int lo = (int)((long)BH * id / nt), hi = (int)((long)BH * (id + 1) / nt), nh = hi - lo;
        /* a smaller team than asked for (nested parallelism) has more heads per thread: its own workspace */
        float *P = nt == team ? all + (size_t)id * per : hy_malloc(bwd_workspace_floats(N, nh) * sizeof(float));
        if (!P) failed = 1;
        else if (nh > 0) {
            float *dS = P + (HY_WKV7_CHUNK + 1) * NN, *Ws = dS + (size_t)nh * NN;
            float *const g[6] = {dr, dw, dk, dv, dq, db};
            memset(dS, 0, (size_t)nh * NN * sizeof(float));
            switch (N) {
            case 64: bwd_thread_vec(in, sq, ckpt, dy, g, lo, nh, P, dS, Ws, 64, WKV_NB(64)); break;
            case 32: bwd_thread_vec(in, sq, ckpt, dy, g, lo, nh, P, dS, Ws, 32, WKV_NB(32)); break;
            case 128: bwd_thread_vec(in, sq, ckpt, dy, g, lo, nh, P, dS, Ws, 128, WKV_NB(128)); break;
            case 16: bwd_thread_vec(in, sq, ckpt, dy, g, lo, nh, P, dS, Ws, 16, WKV_NB(16)); break;
            default:
                if (N % HY_VW == 0) bwd_thread_vec(in, sq, ckpt, dy, g, lo, nh, P, dS, Ws, N, 1);
                else
                    for (int c = nch - 1; c >= 0; c--)
                        for (int bh = lo; bh < hi; bh++)
                            bwd_any(in, bh / in->H, bh % in->H, c, sq, ckpt, dy, dr, dw, dk, dv, dq, db, P,
                                    dS + (size_t)(bh - lo) * NN);
            }
            hy_stream_fence();   /* the streamed gradients are visible once the threads join */
        }
        if (nt != team) hy_free(P);
    }
    if (!work) hy_free(all);
    /* a worker's hy_malloc recorded its message on that thread: say it again on the caller's */
    if (failed) return hy_fail_code(HY_ERR_NOMEM, "rwkv7 recurrence backward: out of memory for the per-thread workspace");
    return 0;
}

/* The RWKV-7 state recurrence (see layers/rwkv7/rwkv7.h for the formulas and layouts).
 *
 * Forward: states are KEY-major: row j (key index) holds S[:, j] over the value index i, contiguous.
 * Per (batch, head) and step: sq = S q is a sum of rows scaled by q_j; row j is updated as
 * S_j ← S_j·w_j − b_j·sq + k_j·v and y += r_j·S_j. Every inner loop runs over i and vectorizes
 * without horizontal sums; the value range is cut into blocks of up to four HY_VW-float vectors
 * (core/simd.h: 16 floats with AVX-512, 8 with AVX2) so that sq, y and v of a block stay in
 * registers. 5 vector ops (a multiply, 4 FMAs) per state entry and step, 4 (FMAs only) in the
 * column-scaled passes that most steps take (fwd_vec); the N×N state (16 KiB at N = 64) stays in
 * L1. One head reads 256 bytes of every 4 KiB input row, a pattern the hardware prefetchers do not
 * follow, so each head prefetches its own next rows and, into L2, the next head's rows; the
 * checkpoints, and y when it is large (HY_WKV7_STREAM_BYTES), go out with non-temporal stores.
 * The backward (value-major states, the next chunk recomputed inside the reverse walk):
 * layers/rwkv7/wkv_backward.c. */
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

/* Steps of one head between switching heads in the forward (a multiple of the chunk). */
#define HY_WKV7_SPAN (2 * HY_WKV7_CHUNK)

/* Where the work after the current head starts: the offset of its (batch, head) at step 0, and how
 * many steps later than the current head's step it runs; base SIZE_MAX: none. The forward
 * prefetches that head's inputs into L2 while it computes the current one: the hardware cannot see
 * them coming (one head reads 256 bytes of every 4 KiB row), and from L2 the steps run at the FMA
 * rate (measured: 8.9 ms against 19.6 ms from memory for the bench line). */
typedef struct {
    size_t base;
    int shift;
} wkv_next;

/* Copies a state into the checkpoint array with non-temporal stores where it is aligned: the
 * checkpoints are read again only by the backward, so they should not pass through the cache and
 * evict the inputs the forward streams (measured: the plain copy cost a fifth of the forward). */
static void store_checkpoint(float *restrict dst, const float *restrict src, size_t n) {
    size_t i = 0;
    for (; i + HY_VW <= n; i += HY_VW) vw_put(dst + i, vw_load(src + i), true);
    memcpy(dst + i, src + i, (n - i) * sizeof(float));
}

/* One step's pass over the rows of S (key-major, N a multiple of HY_VW·NB): row j ← row j·cw_j (only
 * when MUL) + nb_j·sq + ck_j·v, y = Σ_j cr_j·row j and, when sqn is not NULL, sqn = Σ_j cq_j·row j.
 * nb holds −b (scaled): with two adds the FMAs accumulate into the loaded row and need no register
 * copies (measured on the pass alone, state in L1: 8.4 against 9.6 cycles per row of 64 with
 * x − sq·b; within the whole forward the difference is below the noise). The value range is cut
 * into blocks of HY_VW·NB so that sq, v, y and sqn of a block stay in registers. */
static inline __attribute__((always_inline)) void fwd_pass(float *restrict S, const float *restrict sq,
                                                           const float *restrict v, const float *restrict cw,
                                                           const float *restrict nb, const float *restrict ck,
                                                           const float *restrict cr, const float *restrict cq,
                                                           float *restrict y, float *restrict sqn, bool nt,
                                                           const int N, const int NB, const bool MUL) {
    for (int i0 = 0; i0 < N; i0 += HY_VW * NB) {
        vw sv[NB], yv[NB], vv[NB], nv[NB];
        for (int m = 0; m < NB; m++)
            sv[m] = vw_load(sq + i0 + HY_VW * m), yv[m] = nv[m] = (vw){0}, vv[m] = vw_load(v + i0 + HY_VW * m);
        for (int j = 0; j < N; j++) {
            float *row = S + (size_t)j * N + i0;
            const float bj = nb[j], kj = ck[j], rj = cr[j], qj = cq[j], wj = MUL ? cw[j] : 1.0f;
            for (int m = 0; m < NB; m++) {
                vw x = vw_load(row + HY_VW * m);
                if (MUL) x *= wj;
                x = sv[m] * bj + x;
                x = vv[m] * kj + x;
                vw_store(row + HY_VW * m, x);
                yv[m] += x * rj;
                nv[m] += x * qj;
            }
        }
        for (int m = 0; m < NB; m++) {
            vw_put(y + i0 + HY_VW * m, yv[m], nt);
            if (sqn) vw_store(sqn + i0 + HY_VW * m, nv[m]);
        }
    }
}

/* Steps ta..tb-1 of one (batch, head) of the forward, N a multiple of HY_VW·NB (NB a compile-time
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
                                                          float *restrict ckpt, const wkv_next *next, const int N,
                                                          const int NB) {
    WKV_OFFSETS;
    const bool nt = wkv_stream(in);   /* y streamed (sq is read again by the next step) */
    float W[N], cw[N], nb[N], ck[N], cr[N], cq[N];
    for (int i0 = 0; i0 < N && ta == 0; i0 += HY_VW * NB) {   /* sq of step 0 (later ranges: from their last step) */
        const float *q = in->q + base + (size_t)ta * C;
        vw sv[NB];
        for (int m = 0; m < NB; m++) sv[m] = (vw){0};
        for (int j = 0; j < N; j++)
            for (int m = 0; m < NB; m++) sv[m] += vw_load(S + (size_t)j * N + i0 + HY_VW * m) * q[j];
        for (int m = 0; m < NB; m++) vw_store(sq + base + (size_t)ta * C + i0 + HY_VW * m, sv[m]);
    }
    for (int j = 0; j < N; j++) W[j] = 1.0f;
    for (int t = ta; t < tb; t++) {
        if (ckpt && t % HY_WKV7_CHUNK == 0) store_checkpoint(ckpt + ck0 + (size_t)(t / HY_WKV7_CHUNK) * NN, S, NN);
        const size_t o = base + (size_t)t * C;
        const bool more = t + 1 < T;   /* the step writes sq_{t+1} (also across the end of the range) */
        const float *restrict r = in->r + o, *restrict w = in->w + o, *restrict k = in->k + o,
                              *restrict b = in->b + o, *restrict qn = in->q + o + (more ? C : 0);
        if (t + HY_WKV7_PF < T) {   /* the inputs, and the rows it writes (saves the stores' misses) */
            prefetch_step(in, NULL, o + HY_WKV7_PF * C, N);
            for (int i = 0; i < N; i += 16) {
                __builtin_prefetch(sq + o + HY_WKV7_PF * C + i, 1);
                if (!nt) __builtin_prefetch(y + o + HY_WKV7_PF * C + i, 1);
            }
        }
        if (next->base != SIZE_MAX && t + next->shift < T) {   /* the next head's step t, into L2 */
            const size_t on = next->base + (size_t)(t + next->shift) * C;
            for (int i = 0; i < N; i += 16) {
                __builtin_prefetch(in->r + on + i, 0, 2), __builtin_prefetch(in->w + on + i, 0, 2);
                __builtin_prefetch(in->k + on + i, 0, 2), __builtin_prefetch(in->v + on + i, 0, 2);
                __builtin_prefetch(in->q + on + i, 0, 2), __builtin_prefetch(in->b + on + i, 0, 2);
            }
        }
        int small = 0;
        for (int j = 0; j < N; j++) cw[j] = W[j] * w[j], small |= !(cw[j] >= 1e-20f);
        float *sqn = more ? sq + o + C : NULL;
        if (small || t + 1 == tb || (t + 1) % HY_WKV7_CHUNK == 0) {   /* fold: the true S_t */
            for (int j = 0; j < N; j++) nb[j] = -b[j];
            fwd_pass(S, sq + o, in->v + o, cw, nb, k, r, qn, y + o, sqn, nt, N, NB, true);
            for (int j = 0; j < N; j++) W[j] = 1.0f;
        } else {
            for (int j = 0; j < N; j++) {
                const float Wj = cw[j], inv = 1.0f / Wj;
                nb[j] = -(b[j] * inv), ck[j] = k[j] * inv, cr[j] = r[j] * Wj, cq[j] = qn[j] * Wj, W[j] = Wj;
            }
            fwd_pass(S, sq + o, in->v + o, NULL, nb, ck, cr, cq, y + o, sqn, nt, N, NB, false);
        }
    }
}

/* One (batch, head) of the forward, any N (plain loops, same arithmetic). */
static void fwd_any(const hy_wkv7_in *in, int bi, int h, int ta, int tb, float *restrict S, float *restrict y,
                    float *restrict sq, float *restrict ckpt) {
    const int N = in->N;
    WKV_OFFSETS;
    for (int t = ta; t < tb; t++) {
        if (ckpt && t % HY_WKV7_CHUNK == 0) store_checkpoint(ckpt + ck0 + (size_t)(t / HY_WKV7_CHUNK) * NN, S, NN);
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

static void fwd_bh(const hy_wkv7_in *in, int bi, int h, int ta, int tb, float *S, float *y, float *sq, float *ckpt,
                   const wkv_next *next) {
    switch (in->N) {
    case 64: fwd_vec(in, bi, h, ta, tb, S, y, sq, ckpt, next, 64, WKV_NB(64)); break;
    case 32: fwd_vec(in, bi, h, ta, tb, S, y, sq, ckpt, next, 32, WKV_NB(32)); break;
    case 128: fwd_vec(in, bi, h, ta, tb, S, y, sq, ckpt, next, 128, WKV_NB(128)); break;
    case 16: fwd_vec(in, bi, h, ta, tb, S, y, sq, ckpt, next, 16, WKV_NB(16)); break;
    default:
        if (in->N % HY_VW == 0) fwd_vec(in, bi, h, ta, tb, S, y, sq, ckpt, next, in->N, 1);
        else fwd_any(in, bi, h, ta, tb, S, y, sq, ckpt);
    }
}

/* Each thread takes a contiguous range of (batch, head) pairs and walks time in chunks, all its
 * heads within a chunk: the heads of one time step share the same rows of the (B, T, C) inputs,
 * so a chunk touches 16 rows per input (TLB and cache reuse across heads) instead of every head
 * striding through all T rows C floats apart. Without S each thread zeroes its own heads' states
 * (allocated together by the calling thread), so they start in its own cache (zeroed by the calling
 * thread, another core's states came over from that core: measured 11% of a small forward, 2 heads
 * at T 256). */
int hy_wkv7_forward(const hy_wkv7_in *in, float *S, float *y, float *sq, float *ckpt, hy_buf *work) {
    const int BH = in->B * in->H, T = in->T;
    const size_t NN = (size_t)in->N * in->N;
    /* Without S, the zero states of all heads: in the caller's workspace when it gives one (kept
     * between calls: a fresh allocation of this size comes back from the system at every call, and
     * each of its pages faults in again, ~10 us apiece on the project machine), else allocated here
     * (by the calling thread: a worker's allocation comes from its own malloc arena, which hands the
     * pages back on free); zeroed by the thread that owns them (below). */
    float *zero = NULL;
    if (!S) zero = work ? hy_buf_grab(work, (size_t)BH * NN) : hy_malloc((size_t)BH * NN * sizeof(float));
    if (!S && BH > 0 && !zero) return hy_fail_code(HY_ERR_NOMEM, "rwkv7 recurrence: out of memory for the zero initial states");
    #pragma omp parallel
    {
        int nt = omp_get_num_threads(), id = omp_get_thread_num();
        int lo = (int)((long)BH * id / nt), hi = (int)((long)BH * (id + 1) / nt);
        float *own = S || hi == lo ? NULL : zero + (size_t)lo * NN;
        if (own) memset(own, 0, (size_t)(hi - lo) * NN * sizeof(float));
        for (int t0 = 0; t0 < T; t0 += HY_WKV7_SPAN) {
            int t1 = t0 + HY_WKV7_SPAN < T ? t0 + HY_WKV7_SPAN : T;
            for (int bh = lo; bh < hi; bh++) {
                /* the work after this one: the next head of the range, else the range's first in the next span */
                wkv_next next = {SIZE_MAX, 0};
                if (bh + 1 < hi) next.base = wkv_base(in, bh + 1);
                else if (t1 < T) next.base = wkv_base(in, lo), next.shift = HY_WKV7_SPAN;
                float *st = S ? S + (size_t)bh * NN : own + (size_t)(bh - lo) * NN;
                fwd_bh(in, bh / in->H, bh % in->H, t0, t1, st, y, sq, ckpt, &next);
            }
        }
        hy_stream_fence();   /* the checkpoints' non-temporal stores are visible before the backward reads them */
    }
    if (!work) hy_free(zero);
    return 0;
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

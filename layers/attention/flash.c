/* attention_flash — FlashAttention-2 style kernels of the attention block (SPEC §2).
 *
 * Forward, per (batch, head, query tile of BR rows): loop over key tiles of BC keys up to the causal
 * limit, S = Q Kᵀ on the tile, online softmax (running max m and sum l per row), O += P V; at the
 * end O /= l and lse = m + log l. Backward, per (batch, kv head, key tile): recompute S and
 * P = exp(scale S - lse) tile by tile, dV += Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP - D) with
 * D = rowsum(dO ∘ O), dK += dSᵀ Q, dQ += dS K. Nothing of size T×T ever exists: only per-thread
 * tiles (BR×BC) and O(T) buffers.
 *
 * Tile products use a register-blocked AVX2 micro-kernel (mm below; hy_gemm when AVX2 is absent),
 * the softmax row operations are AVX2 (exp2 on 8 lanes), with plain-loop fallbacks for other
 * targets. AVX2, not AVX-512: the machine this was measured on is Zen 3 (AVX2 + FMA only), and on
 * Zen 4 the 256-bit path has the same FMA throughput. */
#include "layers/attention/attention.h"
#include "core/error.h"
#include "core/gemm.h"
#include "core/mem.h"
#include "core/vmath.h"
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

enum { BR = 64, BC = HY_FLASH_BC };   /* query and key tile sizes */

#define AT(vw, b, h, r) ((vw).p + (size_t)(b) * (vw).bs + (size_t)(h) * (vw).hs + (size_t)(r) * (vw).ld)
/* Start of the key tile at column j0 (a multiple of BC) of a transposed view (kt, vt). */
static inline const float *tcol(const hy_flash_view *v, int b, int h, int j0) {
    const float *p = AT(*v, b, h, 0);
    return v->tile ? p + (size_t)(j0 / BC) * v->tile : p + j0;
}

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* ---------------------------------------------------------------- tile products ---- */
#if defined(__AVX2__) && defined(__FMA__)
#define INLINE static inline __attribute__((always_inline))
enum { MR = 6 };   /* rows of the register block: 6 rows × 16 columns = 12 ymm accumulators */

/* C[MR' × 8·NV] (+)= A[MR' × K] · B[K × 8·NV] for MR' = mr rows (compile-time constant after
 * inlining), the last vector of each row masked to `mask` when `masked` (N not a multiple of 8). A
 * element (m, k) at A[m·sam + k·sak]: broadcast loads, so a transposed A costs nothing. With acc
 * and rs, row i of C is scaled by rs[i] before the sum (the online softmax's rescale, for free). */
INLINE void strip(const int mr, const int NV, const bool masked, __m256i mask, int K, const float *A, ptrdiff_t sam,
                  ptrdiff_t sak, const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, bool acc, const float *rs) {
    __m256 c[MR][2];
    _Pragma("GCC unroll 8") for (int i = 0; i < mr; i++)
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) c[i][v] = _mm256_setzero_ps();
    _Pragma("GCC unroll 4") for (int k = 0; k < K; k++) {
        const float *b = B + k * ldb, *a = A + k * sak;
        __m256 b0 = masked && NV == 1 ? _mm256_maskload_ps(b, mask) : _mm256_loadu_ps(b);
        __m256 b1 = NV == 2 ? (masked ? _mm256_maskload_ps(b + 8, mask) : _mm256_loadu_ps(b + 8)) : b0;
        _Pragma("GCC unroll 8") for (int i = 0; i < mr; i++) {
            __m256 ai = _mm256_broadcast_ss(a + i * sam);
            c[i][0] = _mm256_fmadd_ps(ai, b0, c[i][0]);
            if (NV == 2) c[i][1] = _mm256_fmadd_ps(ai, b1, c[i][1]);
        }
    }
    _Pragma("GCC unroll 8") for (int i = 0; i < mr; i++)
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) {
            float *p = C + i * ldc + 8 * v;
            bool part = masked && v == NV - 1;
            if (acc) {
                __m256 old = part ? _mm256_maskload_ps(p, mask) : _mm256_loadu_ps(p);
                c[i][v] = rs ? _mm256_fmadd_ps(old, _mm256_broadcast_ss(rs + i), c[i][v]) : _mm256_add_ps(c[i][v], old);
            }
            if (part) _mm256_maskstore_ps(p, mask, c[i][v]);
            else _mm256_storeu_ps(p, c[i][v]);
        }
}

typedef void strip_fn(__m256i, int, const float *, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t, float *, ptrdiff_t,
                      bool, const float *);
#define STRIP(R, NV, MS)                                                                                          \
    static void strip_##R##_##NV##_##MS(__m256i m, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak,          \
                                        const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, bool acc,        \
                                        const float *rs) {                                                       \
        strip(R, NV, MS, m, K, A, sam, sak, B, ldb, C, ldc, acc, rs);                                            \
    }
#define STRIPS(R) STRIP(R, 1, 0) STRIP(R, 2, 0) STRIP(R, 1, 1) STRIP(R, 2, 1)
STRIPS(1) STRIPS(2) STRIPS(3) STRIPS(4) STRIPS(5) STRIPS(6)
#define ROW(R) {{strip_##R##_1_0, strip_##R##_2_0}, {strip_##R##_1_1, strip_##R##_2_1}}
static strip_fn *const strips[MR][2][2] = {ROW(1), ROW(2), ROW(3), ROW(4), ROW(5), ROW(6)};

/* C[M × N] (+)= A[M × K] · B[K × N] on tiles: A element (m, k) at A[m·sam + k·sak] (sam = 1 is a
 * transposed A, so Pᵀ dO and dSᵀ Q need no copy), B and C row-major with strides ldb, ldc; with
 * acc, C's rows are first scaled by rs[0..M) unless rs is NULL.
 * A register-blocked AVX2 micro-kernel (6 × 16 blocks; a block of A rows stays in L1 while it meets
 * every strip of 16 columns of B, measured ~7% faster than strips outside) rather than hy_gemm:
 * measured on this machine (Zen 3, 2 cores, one thread, 64×64×64 tiles as the kernels use them,
 * best of repeated runs on a shared machine): 62-68 GFLOP/s against 50-57 for single-threaded
 * OpenBLAS sgemm through hy_gemm, whose per-call packing dominates at this size; the whole
 * kernel (T = 2048, d 256, 4 heads, one thread, CPU time, best of 3 on a loaded machine) went from
 * 138 to 64 ms forward and from 206 to 131 ms backward with these and the AVX2 softmax rows. In
 * isolation on a quiet moment the 6 × 16 block reaches 86 GFLOP/s (the core's FMA peak measures
 * 90-93); 4 × 24, 4 × 16 and 8 × 8 blocks measured 64-76. */
static void mm(int M, int N, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak, const float *B, ptrdiff_t ldb,
               float *C, ptrdiff_t ldc, bool acc, const float *rs) {
    if (K <= 0) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[i * ldc + j] = !acc ? 0.0f : rs ? C[i * ldc + j] * rs[i] : C[i * ldc + j];
        return;
    }
    for (int i = 0; i < M; i += MR)
        for (int j = 0; j < N; j += 16) {
            int n = MIN(16, N - j), nv = n > 8 ? 2 : 1, last = n - 8 * (nv - 1);
            __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(last), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            strips[MIN(MR, M - i) - 1][last != 8][nv - 1](mask, K, A + i * sam, sam, sak, B + j, ldb, C + i * ldc + j,
                                                        ldc, acc, rs ? rs + i : NULL);
        }
}
#else
/* Without AVX2: the same products through hy_gemm (single-threaded OpenBLAS inside the parallel
 * region). */
static void mm(int M, int N, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak, const float *B, ptrdiff_t ldb,
               float *C, ptrdiff_t ldc, bool acc, const float *rs) {
    if (acc && rs)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[i * ldc + j] *= rs[i];
    if (sam == 1 && sak != 1)
        hy_gemm(true, false, M, N, K, 1.0f, A, (int)sak, B, (int)ldb, acc ? 1.0f : 0.0f, C, (int)ldc);
    else
        hy_gemm(false, false, M, N, K, 1.0f, A, (int)sam, B, (int)ldb, acc ? 1.0f : 0.0f, C, (int)ldc);
}
#endif

/* ---------------------------------------------------------------- softmax rows ---- */
/* Every row function works on a whole scratch row of BC floats; lanes at or past nvalid (masked
 * keys, or columns past the tile's last key, whose contents are stale) come out as 0. */
#if defined(__AVX2__) && defined(__FMA__)

/* All-ones in the lanes j with j < n. */
INLINE __m256 lanes(int n) {
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
}
INLINE float hmax8(__m256 v) {
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_max_ss(x, _mm_movehdup_ps(x)));
}
INLINE float hsum8(__m256 v) {
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)));
}

/* Online-softmax step on the br score rows of a tile (row r sees its first nv[r] keys, possibly
 * none), in base 2 (scale2 = scale·log2 e): updates the running maxima m and sums l, overwrites S
 * with P and sets alpha[r] = 2^(m_old - m_new), the factor row r's accumulated output must be
 * rescaled by. The per-row scalar work (new max, alpha, sum update) is done 8 rows to a vector;
 * m, l, alpha, mx have room for br rounded up to 8. */
static void tile_online(float *S, int br, const int *nv, float scale2, float *m, float *l, float *alpha, float *mx) {
    __m256 lo = _mm256_set1_ps(-FLT_MAX);
    for (int r = 0; r < br; r++) {
        const float *s = S + (size_t)r * BC;
        __m256 vmax = lo;
        if (nv[r] >= BC)
            for (int j = 0; j < BC; j += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(s + j));
        else
            for (int j = 0; j < nv[r]; j += 8) vmax = _mm256_max_ps(vmax, _mm256_blendv_ps(lo, _mm256_loadu_ps(s + j), lanes(nv[r] - j)));
        mx[r] = nv[r] > 0 ? hmax8(vmax) * scale2 : -FLT_MAX;   /* no keys: the max stays, alpha = 1 */
    }
    for (int r = br; r % 8; r++) mx[r] = -FLT_MAX, m[r] = -FLT_MAX, l[r] = 0;
    for (int r = 0; r < br; r += 8) {
        __m256 mo = _mm256_loadu_ps(m + r), mn = _mm256_max_ps(mo, _mm256_loadu_ps(mx + r));
        _mm256_storeu_ps(alpha + r, hy_exp2f_avx2(_mm256_sub_ps(mo, mn)));
        _mm256_storeu_ps(m + r, mn);
    }
    __m256 vs = _mm256_set1_ps(scale2);
    for (int r = 0; r < br; r++) {
        float *s = S + (size_t)r * BC;
        __m256 vm = _mm256_set1_ps(m[r]), sum = _mm256_setzero_ps();
        for (int j = 0; j < BC; j += 8) {
            __m256 p = hy_exp2f_avx2(_mm256_fmsub_ps(_mm256_loadu_ps(s + j), vs, vm));
            if (nv[r] - j < 8) p = _mm256_and_ps(p, lanes(nv[r] - j));
            _mm256_storeu_ps(s + j, p);
            sum = _mm256_add_ps(sum, p);
        }
        mx[r] = hsum8(sum);
    }
    for (int r = 0; r < br; r += 8)
        _mm256_storeu_ps(l + r, _mm256_fmadd_ps(_mm256_loadu_ps(l + r), _mm256_loadu_ps(alpha + r), _mm256_loadu_ps(mx + r)));
}

/* Backward recomputation of one row: s := 2^(scale2·s - lse2) = exp(scale·s - lse) for the first
 * nvalid, 0 after (lse2 = lse·log2 e). */
static void row_p(float *s, int nvalid, float scale2, float lse2) {
    __m256 vs = _mm256_set1_ps(scale2), vl = _mm256_set1_ps(lse2);
    for (int j = 0; j < BC; j += 8) {
        __m256 p = hy_exp2f_avx2(_mm256_fmsub_ps(_mm256_loadu_ps(s + j), vs, vl));
        if (nvalid - j < 8) p = _mm256_and_ps(p, lanes(nvalid - j));
        _mm256_storeu_ps(s + j, p);
    }
}

/* dp := p ∘ (dp - D) on one row (dS, the gradient of the scaled scores). */
static void row_ds(float *dp, const float *p, float D) {
    __m256 vd = _mm256_set1_ps(D);
    for (int j = 0; j < BC; j += 8)
        _mm256_storeu_ps(dp + j, _mm256_mul_ps(_mm256_loadu_ps(p + j), _mm256_sub_ps(_mm256_loadu_ps(dp + j), vd)));
}

#else /* portable fallback: the same operations in plain loops */

static void tile_online(float *S, int br, const int *nv, float scale2, float *m, float *l, float *alpha, float *mx) {
    (void)mx;
    for (int r = 0; r < br; r++) {
        float *s = S + (size_t)r * BC, mr = -FLT_MAX, sum = 0;
        for (int j = 0; j < nv[r]; j++) mr = s[j] > mr ? s[j] : mr;
        float mnew = nv[r] > 0 && mr * scale2 > m[r] ? mr * scale2 : m[r];
        alpha[r] = hy_expf((m[r] - mnew) * 0.693147181f);
        for (int j = 0; j < BC; j++) {
            s[j] = j < nv[r] ? hy_expf((s[j] * scale2 - mnew) * 0.693147181f) : 0.0f;
            sum += s[j];
        }
        l[r] = l[r] * alpha[r] + sum;
        m[r] = mnew;
    }
}

static void row_p(float *s, int nvalid, float scale2, float lse2) {
    for (int j = 0; j < BC; j++) s[j] = j < nvalid ? hy_expf((s[j] * scale2 - lse2) * 0.693147181f) : 0.0f;
}

static void row_ds(float *dp, const float *p, float D) {
    for (int j = 0; j < BC; j++) dp[j] = p[j] * (dp[j] - D);
}
#endif

/* ---------------------------------------------------------------- forward ---- */

#define LOG2E 1.44269504088896341f

/* Floats of per-thread forward scratch: S tile, O accumulator, and per row the running max and
 * sum, alpha and a temporary (each part a multiple of 16 floats, so every thread's block stays
 * 64-byte aligned). */
static size_t fwd_scratch(int hd) { return (size_t)BR * BC + (size_t)BR * ((hd + 15) / 16 * 16) + 4 * BR; }

/* Visible keys of query row i (absolute key limit off + i) in the key tile starting at j0, clamped
 * to 0..bc. */
static inline int nvis(int off, int i, int j0, int bc) { return MAX(0, MIN(bc, off + i - j0 + 1)); }

/* One (batch, head, query tile): the online-softmax sweep over the visible key tiles. */
static void fwd_task(const hy_flash_args *a, int b, int h, int i0, float *S, float *Oacc, float *rowbuf) {
    int hd = a->hd, g = h / (a->H / a->Hkv), off = a->Tk - a->Tq, br = MIN(BR, a->Tq - i0), nv[BR];
    float *m = rowbuf, *l = m + BR, *alpha = l + BR, *tmp = alpha + BR;
    const float *Q = AT(a->q, b, h, i0);
    int qlast = off + i0 + br - 1;   /* the last key any row of the tile sees */
    for (int r = 0; r < br; r++) m[r] = -FLT_MAX, l[r] = 0;
    for (int j0 = 0; j0 <= qlast; j0 += BC) {
        int bc = MIN(BC, qlast + 1 - j0);
        mm(br, bc, hd, Q, a->q.ld, 1, tcol(&a->kt, b, g, j0), a->kt.ld, S, BC, false, NULL);
        for (int r = 0; r < br; r++) nv[r] = nvis(off, i0 + r, j0, bc);
        tile_online(S, br, nv, a->scale * LOG2E, m, l, alpha, tmp);
        /* O = diag(alpha) O + P V; the first tile starts O */
        mm(br, hd, bc, S, BC, 1, AT(a->v, b, g, j0), a->v.ld, Oacc, hd, j0 > 0, alpha);
    }
    for (int r = 0; r < br; r++) {
        float inv = 1.0f / l[r], *o = AT(a->o, b, h, i0 + r);
        for (int c = 0; c < hd; c++) o[c] = Oacc[(size_t)r * hd + c] * inv;
        if (a->lse) a->lse[((size_t)b * a->H + h) * a->Tq + i0 + r] = m[r] * 0.693147181f + logf(l[r]);
    }
}

/* Tasks are (batch, head, query tile), the longest (last) query tiles first, handed out
 * dynamically: this balances the causal triangle, and each task owns its output rows so the
 * result does not depend on the schedule. */
int hy_flash_forward(const hy_flash_args *a) {
    if (a->n_batch <= 0 || a->Tq <= 0) return 0;
    if (a->Tk < a->Tq || a->H % a->Hkv) return hy_fail("attention kernel: bad shape (Tq %d, Tk %d)", a->Tq, a->Tk);
    int nth = omp_get_max_threads(), nqt = (a->Tq + BR - 1) / BR, nbh = a->n_batch * a->H;
    size_t per = fwd_scratch(a->hd);
    float *scratch = hy_malloc((size_t)nth * per * sizeof(float));
    if (!scratch) return HY_ERR_NOMEM;
    long ntask = (long)nbh * nqt;
    #pragma omp parallel
    {
        int tid = omp_get_thread_num();
        float *S = scratch + (size_t)tid * per, *Oacc = S + (size_t)BR * BC,
              *rowbuf = Oacc + (size_t)BR * ((a->hd + 15) / 16 * 16);
        memset(S, 0, (size_t)BR * BC * sizeof *S);   /* columns past a short tile are read, never used */
        #pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < ntask; t++) {
            int it = nqt - 1 - (int)(t / nbh), bh = (int)(t % nbh);
            fwd_task(a, bh / a->H, bh % a->H, it * BR, S, Oacc, rowbuf);
        }
    }
    hy_free(scratch);
    return 0;
}

/* ---------------------------------------------------------------- backward ---- */

/* Per-thread floats of the backward: S and dP tiles, dK and dV accumulators. */
static size_t bwd_scratch(int hd) { return 2 * (size_t)BR * BC + 2 * (size_t)BC * ((hd + 15) / 16 * 16); }

double hy_flash_scratch_floats(int n_batch, int H, int T, int hd, int threads, bool backward) {
    if (!backward) return (double)threads * fwd_scratch(hd);
    double rows = (double)n_batch * H * T;
    return rows + 2.0 * threads * rows * hd + (double)threads * bwd_scratch(hd);
}

/* One (batch, kv head, key tile): dK and dV rows of the tile are owned here (summed over every
 * query head of the group and every query tile that sees the keys) and accumulated in the
 * contiguous per-thread tiles dKa, dVa (BC × hd) before they are stored; dQ goes to this
 * thread's private buffer dqp, laid out (n_batch, H, Tq, hd) so its tiles are contiguous too. */
static void bwd_task(const hy_flash_args *a, const float *delta, int b, int g, int jt, float *S, float *dP,
                     float *dKa, float *dVa, float *dqp) {
    int hd = a->hd, off = a->Tk - a->Tq, grp = a->H / a->Hkv, j0 = jt * BC, bc = MIN(BC, a->Tk - j0);
    const float *KT = tcol(&a->kt, b, g, j0), *VT = tcol(&a->vt, b, g, j0), *K = AT(a->k, b, g, j0);
    memset(dKa, 0, (size_t)bc * hd * sizeof *dKa);
    memset(dVa, 0, (size_t)bc * hd * sizeof *dVa);
    int it0 = MAX(0, j0 - off) / BR, nqt = (a->Tq + BR - 1) / BR;
    for (int h = g * grp; h < (g + 1) * grp; h++)
        for (int it = it0; it < nqt; it++) {
            int i0 = it * BR, br = MIN(BR, a->Tq - i0);
            const float *Q = AT(a->q, b, h, i0), *dO = AT(a->dout, b, h, i0);
            const float *lse = a->lse + ((size_t)b * a->H + h) * a->Tq + i0, *D = delta + (lse - a->lse);
            mm(br, bc, hd, Q, a->q.ld, 1, KT, a->kt.ld, S, BC, false, NULL);
            for (int r = 0; r < br; r++)
                row_p(S + (size_t)r * BC, nvis(off, i0 + r, j0, bc), a->scale * LOG2E, lse[r] * LOG2E);
            mm(bc, hd, br, S, 1, BC, dO, a->dout.ld, dVa, hd, true, NULL);                 /* dV += Pᵀ dO */
            mm(br, bc, hd, dO, a->dout.ld, 1, VT, a->vt.ld, dP, BC, false, NULL);          /* dP = dO Vᵀ */
            for (int r = 0; r < br; r++) row_ds(dP + (size_t)r * BC, S + (size_t)r * BC, D[r]);
            mm(bc, hd, br, dP, 1, BC, Q, a->q.ld, dKa, hd, true, NULL);                    /* dK += dSᵀ Q */
            float *dq = dqp + (((size_t)b * a->H + h) * a->Tq + i0) * hd;
            mm(br, hd, bc, dP, BC, 1, K, a->k.ld, dq, hd, true, NULL);                     /* dQ += dS K */
        }
    for (int j = 0; j < bc; j++) {
        float *dk = AT(a->dk, b, g, j0 + j), *dv = AT(a->dv, b, g, j0 + j);
        for (int c = 0; c < hd; c++) dk[c] = dKa[(size_t)j * hd + c] * a->scale, dv[c] = dVa[(size_t)j * hd + c];
    }
}

/* Key tiles are paired (j, last - j) so every task has the same causal work. The tasks are dealt
 * round-robin to 2·threads fixed slots, each with its own dQ buffer, processed in a fixed order;
 * threads take whole slots dynamically (a thread slowed down by another process on a shared
 * machine then does fewer of them), and the slot buffers are summed in slot order, so the result
 * is bit-reproducible for a given thread count whatever the schedule. */
int hy_flash_backward(const hy_flash_args *a) {
    if (a->n_batch <= 0 || a->Tq <= 0) return 0;
    if (a->Tk < a->Tq || a->H % a->Hkv) return hy_fail("attention kernel: bad shape (Tq %d, Tk %d)", a->Tq, a->Tk);
    int nth = omp_get_max_threads(), nslot = 2 * nth, hd = a->hd, H = a->H;
    size_t nq = (size_t)a->n_batch * a->Tq * H * hd, nrow = (size_t)a->n_batch * H * a->Tq;
    size_t per = bwd_scratch(hd);
    float *delta = hy_malloc(nrow * sizeof(float)), *dqp = hy_malloc((size_t)nslot * nq * sizeof(float)),
          *scratch = hy_malloc((size_t)nth * per * sizeof(float));
    if (!delta || !dqp || !scratch) {
        hy_free(delta), hy_free(dqp), hy_free(scratch);
        return HY_ERR_NOMEM;
    }
    int nkt = (a->Tk + BC - 1) / BC, npair = (nkt + 1) / 2;
    long ntask = (long)a->n_batch * a->Hkv * npair;
    #pragma omp parallel
    {
        int tid = omp_get_thread_num();
        float *S = scratch + (size_t)tid * per, *dP = S + (size_t)BR * BC, *dKa = dP + (size_t)BR * BC,
              *dVa = dKa + (size_t)BC * ((hd + 15) / 16 * 16);
        memset(S, 0, per * sizeof *S);   /* columns past a short tile are read, never used */
        #pragma omp for schedule(static)
        for (int u = 0; u < nslot; u++) memset(dqp + (size_t)u * nq, 0, nq * sizeof(float));
        #pragma omp for schedule(static)
        for (size_t r = 0; r < nrow; r++) {   /* D = rowsum(dO ∘ O), rows ordered (b, h, i) */
            int i = (int)(r % a->Tq), h = (int)(r / a->Tq % H), b = (int)(r / a->Tq / H);
            const float *o = AT(a->o, b, h, i), *dO = AT(a->dout, b, h, i);
            float s = 0;
            for (int c = 0; c < hd; c++) s += o[c] * dO[c];
            delta[r] = s;
        }
        #pragma omp for schedule(dynamic, 1)
        for (int u = 0; u < nslot; u++)
            for (long t = u; t < ntask; t += nslot) {
                int p = (int)(t % npair), bg = (int)(t / npair);
                float *mine = dqp + (size_t)u * nq;
                bwd_task(a, delta, bg / a->Hkv, bg % a->Hkv, p, S, dP, dKa, dVa, mine);
                if (nkt - 1 - p != p) bwd_task(a, delta, bg / a->Hkv, bg % a->Hkv, nkt - 1 - p, S, dP, dKa, dVa, mine);
            }
        #pragma omp for schedule(static)
        for (size_t r = 0; r < nrow; r++) {   /* dQ = scale Σ_slots dQ_u, rows ordered (b, h, i) */
            int i = (int)(r % a->Tq), h = (int)(r / a->Tq % H), b = (int)(r / a->Tq / H);
            float *dq = AT(a->dq, b, h, i);
            const float *src = dqp + r * hd;
            for (int c = 0; c < hd; c++) dq[c] = src[c];
            for (int u = 1; u < nslot; u++)
                for (int c = 0; c < hd; c++) dq[c] += src[(size_t)u * nq + c];
            for (int c = 0; c < hd; c++) dq[c] *= a->scale;
        }
    }
    hy_free(delta), hy_free(dqp), hy_free(scratch);
    return 0;
}

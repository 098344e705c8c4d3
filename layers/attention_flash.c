/* attention_flash — FlashAttention-2 style kernels of the attention block (SPEC §2).
 *
 * Forward, per (batch, head, query tile of BR rows): loop over key tiles of BC keys up to the causal
 * limit, S = Q Kᵀ on the tile, online softmax (running max m and sum l per row), O += P V; at the
 * end O /= l and lse = m + log l. Backward, per (batch, kv head, key tile): recompute S and
 * P = exp(scale S - lse) tile by tile, dV += Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP - D) with
 * D = rowsum(dO ∘ O), dK += dSᵀ Q, dQ += dS K. Nothing of size T×T ever exists: only per-thread
 * tiles (BR×BC) and O(T) buffers.
 *
 * Tile products go through hy_gemm (single-threaded OpenBLAS inside the parallel region). Measured
 * on 2 Zen 4 cores against a register-blocked AVX-512 micro-kernel (6×64, 24 zmm accumulators):
 * the same speed within noise (T = 4096, d 256, 4 heads: core forward 45 ms either way), so the
 * project's one GEMM entry point is kept. The softmax row operations are AVX-512 (exp2 on 16
 * lanes), with a plain-loop fallback for other targets. */
#include "layers/attention.h"
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
#ifdef __AVX512F__
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

/* C[M × N] (+)= A[M × K] · B[K × N] on tiles: A element (m, k) at A[m·sam + k·sak] (sam = 1 is a
 * transposed A, so Pᵀ dO and dSᵀ Q need no copy), B and C row-major with strides ldb, ldc. Called
 * inside the parallel region, hy_gemm runs OpenBLAS single-threaded on the tile. */
static void mm(int M, int N, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak, const float *B, ptrdiff_t ldb,
               float *C, ptrdiff_t ldc, bool acc) {
    if (sam == 1 && sak != 1)
        hy_gemm(true, false, M, N, K, 1.0f, A, (int)sak, B, (int)ldb, acc ? 1.0f : 0.0f, C, (int)ldc);
    else
        hy_gemm(false, false, M, N, K, 1.0f, A, (int)sam, B, (int)ldb, acc ? 1.0f : 0.0f, C, (int)ldc);
}

/* ---------------------------------------------------------------- softmax rows ---- */
#ifdef __AVX512F__
#define INLINE static inline __attribute__((always_inline))

/* Mask of the first n (1..16) lanes, or 0 when n <= 0. */
INLINE __mmask16 lanes(int n) { return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

/* 2^x on 16 lanes for x <= 0 (softmax arguments once the max is subtracted): x = n + f with
 * |f| <= 1/2, 2^f by a degree-5 minimax polynomial (relative error 7.7e-8 before rounding), times
 * 2^n. Below -126 it returns 2^-126, as hy_expf bottoms out near 1e-38 instead of 0. */
INLINE __m512 exp2_16(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-126.0f));
    __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), f = _mm512_sub_ps(x, n);
    __m512 p = _mm512_set1_ps(1.327793890e-3f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.675757641e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550709598e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402211434e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931469682e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.000000073f));
    return _mm512_scalef_ps(p, n);
}

/* Online-softmax step on one score row s[0..bc) of which the first nvalid are visible, in base 2
 * (scale2 = scale·log2 e): updates the running max *m and the 16 partial sums lv[0..16) (reduced
 * once at the end), overwrites s with P (zeros past nvalid) and returns alpha = 2^(m_old - m_new),
 * the factor the row's accumulated output must be rescaled by. Full rows take an unmasked path. */
static float row_online(float *s, int bc, int nvalid, float scale2, float *m, float *lv) {
    if (nvalid <= 0) {
        memset(s, 0, (size_t)bc * sizeof *s);
        return 1.0f;
    }
    __m512 vmax = _mm512_set1_ps(-FLT_MAX), sum = _mm512_setzero_ps();
    bool full = nvalid == BC;
    if (full)
        for (int j = 0; j < BC; j += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(s + j));
    else
        for (int j = 0; j < nvalid; j += 16) vmax = _mm512_mask_max_ps(vmax, lanes(nvalid - j), vmax, _mm512_loadu_ps(s + j));
    float mx = _mm512_reduce_max_ps(vmax) * scale2, mnew = mx > *m ? mx : *m;
    float alpha = mnew > *m ? hy_expf((*m - mnew) * 0.693147181f) : 1.0f;
    __m512 vs = _mm512_set1_ps(scale2), vm = _mm512_set1_ps(mnew);
    if (full)
        for (int j = 0; j < BC; j += 16) {
            __m512 p = exp2_16(_mm512_fmsub_ps(_mm512_loadu_ps(s + j), vs, vm));
            _mm512_storeu_ps(s + j, p);
            sum = _mm512_add_ps(sum, p);
        }
    else
        for (int j = 0; j < bc; j += 16) {
            __m512 p = exp2_16(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(lanes(bc - j), s + j), vs, vm));
            p = _mm512_maskz_mov_ps(lanes(nvalid - j), p);
            _mm512_mask_storeu_ps(s + j, lanes(bc - j), p);
            sum = _mm512_add_ps(sum, p);
        }
    _mm512_store_ps(lv, _mm512_fmadd_ps(_mm512_load_ps(lv), _mm512_set1_ps(alpha), sum));
    *m = mnew;
    return alpha;
}

/* Backward recomputation of one row: s := 2^(scale2·s - lse2) = exp(scale·s - lse) for the first
 * nvalid, 0 after (lse2 = lse·log2 e). */
static void row_p(float *s, int bc, int nvalid, float scale2, float lse2) {
    __m512 vs = _mm512_set1_ps(scale2), vl = _mm512_set1_ps(lse2);
    if (nvalid == BC) {
        for (int j = 0; j < BC; j += 16) _mm512_storeu_ps(s + j, exp2_16(_mm512_fmsub_ps(_mm512_loadu_ps(s + j), vs, vl)));
        return;
    }
    for (int j = 0; j < bc; j += 16) {
        __m512 p = exp2_16(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(lanes(bc - j), s + j), vs, vl));
        _mm512_mask_storeu_ps(s + j, lanes(bc - j), _mm512_maskz_mov_ps(lanes(nvalid - j), p));
    }
}

/* dp := p ∘ (dp - D) on one row (dS, the gradient of the scaled scores). */
static void row_ds(float *dp, const float *p, int bc, float D) {
    __m512 vd = _mm512_set1_ps(D);
    if (bc == BC) {
        for (int j = 0; j < BC; j += 16)
            _mm512_storeu_ps(dp + j, _mm512_mul_ps(_mm512_loadu_ps(p + j), _mm512_sub_ps(_mm512_loadu_ps(dp + j), vd)));
        return;
    }
    for (int j = 0; j < bc; j += 16) {
        __mmask16 k = lanes(bc - j);
        __m512 r = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, p + j), _mm512_sub_ps(_mm512_maskz_loadu_ps(k, dp + j), vd));
        _mm512_mask_storeu_ps(dp + j, k, r);
    }
}

#else /* portable fallback: the same operations in plain loops */

static float row_online(float *s, int bc, int nvalid, float scale2, float *m, float *lv) {
    if (nvalid <= 0) {
        memset(s, 0, (size_t)bc * sizeof *s);
        return 1.0f;
    }
    float mx = -FLT_MAX;
    for (int j = 0; j < nvalid; j++) mx = s[j] > mx ? s[j] : mx;
    mx *= scale2;
    float mnew = mx > *m ? mx : *m, alpha = hy_expf((*m - mnew) * 0.693147181f), sum = 0;
    for (int j = 0; j < bc; j++) {
        s[j] = j < nvalid ? hy_expf((s[j] * scale2 - mnew) * 0.693147181f) : 0.0f;
        sum += s[j];
    }
    lv[0] = lv[0] * alpha + sum;
    *m = mnew;
    return alpha;
}

static void row_p(float *s, int bc, int nvalid, float scale2, float lse2) {
    for (int j = 0; j < bc; j++) s[j] = j < nvalid ? hy_expf((s[j] * scale2 - lse2) * 0.693147181f) : 0.0f;
}

static void row_ds(float *dp, const float *p, int bc, float D) {
    for (int j = 0; j < bc; j++) dp[j] = p[j] * (dp[j] - D);
}
#endif

/* ---------------------------------------------------------------- forward ---- */

#define LOG2E 1.44269504088896341f

/* Floats of per-thread forward scratch: S tile, O accumulator, 16 partial sums and the max per
 * row (a multiple of 16 floats, so every thread's block stays 64-byte aligned). */
static size_t fwd_scratch(int hd) { return (size_t)BR * BC + (size_t)BR * ((hd + 15) / 16 * 16) + 17 * BR; }

/* One (batch, head, query tile): the online-softmax sweep over the visible key tiles. */
static void fwd_task(const hy_flash_args *a, int b, int h, int i0, float *S, float *Oacc, float *lv, float *m) {
    int hd = a->hd, g = h / (a->H / a->Hkv), off = a->Tk - a->Tq, br = MIN(BR, a->Tq - i0);
    const float *Q = AT(a->q, b, h, i0);
    int qlast = off + i0 + br - 1;   /* the last key any row of the tile sees */
    for (int r = 0; r < br; r++) m[r] = -FLT_MAX;
    memset(lv, 0, (size_t)16 * br * sizeof *lv);
    memset(Oacc, 0, (size_t)br * hd * sizeof *Oacc);
    for (int j0 = 0; j0 <= qlast; j0 += BC) {
        int bc = MIN(BC, qlast + 1 - j0);
        mm(br, bc, hd, Q, a->q.ld, 1, tcol(&a->kt, b, g, j0), a->kt.ld, S, BC, false);
        bool full = j0 + bc - 1 <= off + i0;   /* every row sees the whole tile */
        for (int r = 0; r < br; r++) {
            int nvalid = full ? bc : MAX(0, MIN(bc, off + i0 + r - j0 + 1));
            float alpha = row_online(S + (size_t)r * BC, bc, nvalid, a->scale * LOG2E, &m[r], lv + 16 * r);
            if (alpha != 1.0f)
                for (int c = 0; c < hd; c++) Oacc[(size_t)r * hd + c] *= alpha;
        }
        mm(br, hd, bc, S, BC, 1, AT(a->v, b, g, j0), a->v.ld, Oacc, hd, true);
    }
    for (int r = 0; r < br; r++) {
        float l = 0;
        for (int u = 0; u < 16; u++) l += lv[16 * r + u];
        float inv = 1.0f / l, *o = AT(a->o, b, h, i0 + r);
        for (int c = 0; c < hd; c++) o[c] = Oacc[(size_t)r * hd + c] * inv;
        if (a->lse) a->lse[((size_t)b * a->H + h) * a->Tq + i0 + r] = m[r] * 0.693147181f + logf(l);
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
              *lv = Oacc + (size_t)BR * ((a->hd + 15) / 16 * 16), *m = lv + 16 * BR;
        #pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < ntask; t++) {
            int it = nqt - 1 - (int)(t / nbh), bh = (int)(t % nbh);
            fwd_task(a, bh / a->H, bh % a->H, it * BR, S, Oacc, lv, m);
        }
    }
    hy_free(scratch);
    return 0;
}

/* ---------------------------------------------------------------- backward ---- */

/* One (batch, kv head, key tile): dK and dV rows of the tile are owned here (summed over every
 * query head of the group and every query tile that sees the keys); dQ goes to this thread's
 * private buffer dqp, laid out (n_batch, Tq, H, hd). */
static void bwd_task(const hy_flash_args *a, const float *delta, int b, int g, int jt, float *S, float *dP,
                     float *dqp) {
    int hd = a->hd, off = a->Tk - a->Tq, grp = a->H / a->Hkv, j0 = jt * BC, bc = MIN(BC, a->Tk - j0);
    float *dK = AT(a->dk, b, g, j0), *dV = AT(a->dv, b, g, j0);
    const float *KT = tcol(&a->kt, b, g, j0), *VT = tcol(&a->vt, b, g, j0), *K = AT(a->k, b, g, j0);
    for (int j = 0; j < bc; j++) {
        memset(dK + (size_t)j * a->dk.ld, 0, (size_t)hd * sizeof(float));
        memset(dV + (size_t)j * a->dv.ld, 0, (size_t)hd * sizeof(float));
    }
    int it0 = MAX(0, j0 - off) / BR, nqt = (a->Tq + BR - 1) / BR;
    for (int h = g * grp; h < (g + 1) * grp; h++)
        for (int it = it0; it < nqt; it++) {
            int i0 = it * BR, br = MIN(BR, a->Tq - i0);
            const float *Q = AT(a->q, b, h, i0), *dO = AT(a->dout, b, h, i0);
            const float *lse = a->lse + ((size_t)b * a->H + h) * a->Tq + i0, *D = delta + (lse - a->lse);
            mm(br, bc, hd, Q, a->q.ld, 1, KT, a->kt.ld, S, BC, false);
            bool full = j0 + bc - 1 <= off + i0;
            for (int r = 0; r < br; r++)
                row_p(S + (size_t)r * BC, bc, full ? bc : MAX(0, MIN(bc, off + i0 + r - j0 + 1)), a->scale * LOG2E,
                      lse[r] * LOG2E);
            mm(bc, hd, br, S, 1, BC, dO, a->dout.ld, dV, a->dv.ld, true);            /* dV += Pᵀ dO */
            mm(br, bc, hd, dO, a->dout.ld, 1, VT, a->vt.ld, dP, BC, false);          /* dP = dO Vᵀ */
            for (int r = 0; r < br; r++) row_ds(dP + (size_t)r * BC, S + (size_t)r * BC, bc, D[r]);
            mm(bc, hd, br, dP, 1, BC, Q, a->q.ld, dK, a->dk.ld, true);               /* dK += dSᵀ Q */
            float *dq = dqp + (((size_t)b * a->Tq + i0) * a->H + h) * hd;
            mm(br, hd, bc, dP, BC, 1, K, a->k.ld, dq, (ptrdiff_t)a->H * hd, true);   /* dQ += dS K */
        }
    for (int j = 0; j < bc; j++)
        for (int c = 0; c < hd; c++) dK[(size_t)j * a->dk.ld + c] *= a->scale;
}

/* Key tiles are paired (j, last - j) so every task has the same causal work; tasks are dealt to
 * threads round-robin (static schedule: a fixed assignment for a given thread count) and the
 * per-thread dQ buffers are summed in thread order, so the result is bit-reproducible. */
int hy_flash_backward(const hy_flash_args *a) {
    if (a->n_batch <= 0 || a->Tq <= 0) return 0;
    if (a->Tk < a->Tq || a->H % a->Hkv) return hy_fail("attention kernel: bad shape (Tq %d, Tk %d)", a->Tq, a->Tk);
    int nth = omp_get_max_threads(), hd = a->hd, H = a->H;
    size_t nq = (size_t)a->n_batch * a->Tq * H * hd, nrow = (size_t)a->n_batch * H * a->Tq;
    size_t per = 2 * (size_t)BR * BC;
    float *delta = hy_malloc(nrow * sizeof(float)), *dqp = hy_malloc((size_t)nth * nq * sizeof(float)),
          *scratch = hy_malloc((size_t)nth * per * sizeof(float));
    if (!delta || !dqp || !scratch) {
        hy_free(delta), hy_free(dqp), hy_free(scratch);
        return HY_ERR_NOMEM;
    }
    int nkt = (a->Tk + BC - 1) / BC, npair = (nkt + 1) / 2;
    long ntask = (long)a->n_batch * a->Hkv * npair;
    #pragma omp parallel
    {
        int tid = omp_get_thread_num(), nt = omp_get_num_threads();
        float *S = scratch + (size_t)tid * per, *dP = S + (size_t)BR * BC, *mine = dqp + (size_t)tid * nq;
        memset(mine, 0, nq * sizeof(float));   /* each thread zeroes (first-touches) its own dQ */
        #pragma omp for schedule(static)
        for (size_t r = 0; r < nrow; r++) {   /* D = rowsum(dO ∘ O), rows ordered (b, h, i) */
            int i = (int)(r % a->Tq), h = (int)(r / a->Tq % H), b = (int)(r / a->Tq / H);
            const float *o = AT(a->o, b, h, i), *dO = AT(a->dout, b, h, i);
            float s = 0;
            for (int c = 0; c < hd; c++) s += o[c] * dO[c];
            delta[r] = s;
        }
        #pragma omp for schedule(static, 1)
        for (long t = 0; t < ntask; t++) {
            int p = (int)(t % npair), bg = (int)(t / npair);
            bwd_task(a, delta, bg / a->Hkv, bg % a->Hkv, p, S, dP, mine);
            if (nkt - 1 - p != p) bwd_task(a, delta, bg / a->Hkv, bg % a->Hkv, nkt - 1 - p, S, dP, mine);
        }
        #pragma omp for schedule(static)
        for (size_t r = 0; r < (size_t)a->n_batch * a->Tq; r++) {   /* dQ = scale Σ_threads dQ_t */
            int b = (int)(r / a->Tq), i = (int)(r % a->Tq);
            for (int h = 0; h < H; h++) {
                float *dq = AT(a->dq, b, h, i);
                const float *src = dqp + (r * H + h) * hd;
                for (int c = 0; c < hd; c++) dq[c] = src[c];
                for (int u = 1; u < nt; u++)
                    for (int c = 0; c < hd; c++) dq[c] += src[(size_t)u * nq + c];
                for (int c = 0; c < hd; c++) dq[c] *= a->scale;
            }
        }
    }
    hy_free(delta), hy_free(dqp), hy_free(scratch);
    return 0;
}

/* attention_flash — FlashAttention-2 style kernels of the attention block (SPEC §2).
 *
 * Forward, per (batch, head, query tile of BR rows): loop over key tiles of BC keys up to the causal
 * limit, S = Q Kᵀ on the tile, online softmax (running max m and sum l per row), O += P V; at the
 * end O /= l and lse = m + log l. Decode (few queries): the same tile steps over chunks of the key
 * range, each chunk's partial softmax kept and the partials combined (hy_flash_decode). Backward,
 * per (batch, kv head, key tile): recompute S and P = exp(scale S - lse) tile by tile,
 * dV += Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP - D) with D = rowsum(dO ∘ O), dK += dSᵀ Q, dQ += dS K.
 * Nothing of size T×T ever exists: only per-thread tiles (BR×BC) and O(T) buffers.
 *
 * Tile products use a register-blocked micro-kernel (mm below) and the softmax rows a vector exp2,
 * both written over core/simd.h's vw: 16 floats per vector in an AVX-512 build, 8 in an AVX2 one. */
#include "layers/attention/attention.h"
#include "core/error.h"
#include "core/gemm.h"
#include "core/mem.h"
#include "core/simd.h"
#include "core/vmath.h"
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

enum { BR = 64, BC = HY_FLASH_BC };   /* query and key tile sizes */

#define AT(v, b, h, r) ((v).p + (size_t)(b) * (v).bs + (size_t)(h) * (v).hs + (size_t)(r) * (v).ld)
/* Start of the key tile at column j0 (a multiple of BC) of a transposed view (kt, vt). */
static inline const float *tcol(const hy_flash_view *v, int b, int h, int j0) {
    const float *p = AT(*v, b, h, 0);
    return v->tile ? p + (size_t)(j0 / BC) * v->tile : p + j0;
}

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* ---------------------------------------------------------------- tile products ---- */
#define INLINE static inline __attribute__((always_inline))
/* The register block: MR rows × 2 vectors (12 accumulators: 6 × 32 floats with AVX-512, 6 × 16 with
 * AVX2). */
enum { MR = 6, NB = 2 * HY_VW };

/* C[MR' × HY_VW·NV] (+)= A[MR' × K] · B[K × HY_VW·NV] for MR' = mr rows (compile-time constant after
 * inlining), the last vector of each row masked to `mask` when `masked` (N not a multiple of
 * HY_VW). A element (m, k) at A[m·sam + k·sak]: broadcast loads, so a transposed A costs nothing.
 * With acc and rs, row i of C is scaled by rs[i] before the sum (the online softmax's rescale, for
 * free). */
INLINE void strip(const int mr, const int NV, const bool masked, vw_mask mask, int K, const float *A, ptrdiff_t sam,
                  ptrdiff_t sak, const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, bool acc, const float *rs) {
    vw c[MR][2];
    _Pragma("GCC unroll 8") for (int i = 0; i < mr; i++)
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) c[i][v] = (vw){0};
    _Pragma("GCC unroll 4") for (int k = 0; k < K; k++) {
        const float *b = B + k * ldb, *a = A + k * sak;
        vw b0 = masked && NV == 1 ? vw_load_masked(b, mask) : vw_load(b);
        vw b1 = NV == 2 ? (masked ? vw_load_masked(b + HY_VW, mask) : vw_load(b + HY_VW)) : b0;
        _Pragma("GCC unroll 8") for (int i = 0; i < mr; i++) {
            vw ai = vw_splat(a[i * sam]);
            c[i][0] = vw_fma(ai, b0, c[i][0]);
            if (NV == 2) c[i][1] = vw_fma(ai, b1, c[i][1]);
        }
    }
    _Pragma("GCC unroll 8") for (int i = 0; i < mr; i++)
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) {
            float *p = C + i * ldc + HY_VW * v;
            bool part = masked && v == NV - 1;
            if (acc) {
                vw old = part ? vw_load_masked(p, mask) : vw_load(p);
                c[i][v] = rs ? vw_fma(old, vw_splat(rs[i]), c[i][v]) : c[i][v] + old;
            }
            if (part) vw_store_masked(p, mask, c[i][v]);
            else vw_store(p, c[i][v]);
        }
}

typedef void strip_fn(vw_mask, int, const float *, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t, float *, ptrdiff_t,
                      bool, const float *);
#define STRIP(R, NV, MS)                                                                                          \
    static void strip_##R##_##NV##_##MS(vw_mask m, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak,          \
                                        const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, bool acc,        \
                                        const float *rs) {                                                       \
        strip(R, NV, MS, m, K, A, sam, sak, B, ldb, C, ldc, acc, rs);                                            \
    }
#define STRIPS(R) STRIP(R, 1, 0) STRIP(R, 2, 0) STRIP(R, 1, 1) STRIP(R, 2, 1)
STRIPS(1) STRIPS(2) STRIPS(3) STRIPS(4) STRIPS(5) STRIPS(6)
#define ROW(R) {{strip_##R##_1_0, strip_##R##_2_0}, {strip_##R##_1_1, strip_##R##_2_1}}
static strip_fn *const strips[MR][2][2] = {ROW(1), ROW(2), ROW(3), ROW(4), ROW(5), ROW(6)};

/* Where a causal tile's products can stop: query row r of a tile (r from 0) sees its key columns
 * c < lim + r (lim = off + i0 - j0 + 1; lim >= the tile width when every row sees every key), so
 * the blocks of MR rows of a product on the diagonal tile skip what the mask zeroes anyway:
 *   CAUSAL_NONE   the whole product;
 *   CAUSAL_COLS   rows are queries, columns keys (S = Q Kᵀ, dP = dO Vᵀ): a row block stops at the
 *                 last column its last row sees (the columns past a row's own limit keep stale
 *                 values, which the softmax rows mask);
 *   CAUSAL_KEND   rows are queries, the sum runs over keys (O += P V, dQ += dS K): P and dS are 0
 *                 past a row's limit, so the sum stops at the row block's last visible key;
 *   CAUSAL_KSTART rows are keys, the sum runs over queries (dV += Pᵀ dO, dK += dSᵀ Q): key j is
 *                 seen by query rows r >= j - lim + 1 only, so the sum starts there.
 * Adding those zero terms would leave every sum as it is (0·b adds nothing), so the results are the
 * full products' (at T 64 every tile is diagonal, and this halves the work). */
enum { CAUSAL_NONE, CAUSAL_COLS, CAUSAL_KEND, CAUSAL_KSTART };

static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* C[M × N] (+)= A[M × K] · B[K × N] on tiles: A element (m, k) at A[m·sam + k·sak] (sam = 1 is a
 * transposed A, so Pᵀ dO and dSᵀ Q need no copy), B and C row-major with strides ldb, ldc; with
 * acc, C's rows are first scaled by rs[0..M) unless rs is NULL; causal, lim: the part of a causal
 * tile to compute (above).
 * A register-blocked micro-kernel at the vector width (6 rows × 2 vectors; a block of A rows stays
 * in L1 while it meets every strip of B's columns) rather than hy_gemm: at the 64 × 64 × 64 tiles
 * the kernels use, a library GEMM's per-call packing dominates (measured on Zen 3 with the AVX2
 * width, one thread: 62-68 GFLOP/s against 50-57 for single-threaded OpenBLAS through hy_gemm; the
 * 6-row block beat 4 × 24, 4 × 16 and 8 × 8). */
static void mm(int M, int N, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak, const float *B, ptrdiff_t ldb,
               float *C, ptrdiff_t ldc, bool acc, const float *rs, int causal, int lim) {
    if (K <= 0) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[i * ldc + j] = !acc ? 0.0f : rs ? C[i * ldc + j] * rs[i] : C[i * ldc + j];
        return;
    }
    for (int i = 0; i < M; i += MR) {
        int mr = MIN(MR, M - i), n_i = N, k0 = 0, k1 = K;
        if (causal == CAUSAL_COLS) n_i = clampi(lim + i + mr - 1, 0, N);
        else if (causal == CAUSAL_KEND) k1 = clampi(lim + i + mr - 1, 0, K);
        else if (causal == CAUSAL_KSTART) k0 = clampi(i - lim + 1, 0, K);
        for (int j = 0; j < n_i; j += NB) {
            int n = MIN(NB, n_i - j), nv = n > HY_VW ? 2 : 1, last = n - HY_VW * (nv - 1);
            strips[mr - 1][last != HY_VW][nv - 1](vw_mask_first(last), k1 - k0, A + i * sam + k0 * sak, sam, sak,
                                                   B + k0 * ldb + j, ldb, C + i * ldc + j, ldc, acc, rs ? rs + i : NULL);
        }
    }
}

/* ---------------------------------------------------------------- softmax rows ---- */
/* Every row function works on a whole scratch row of BC floats (a multiple of HY_VW); lanes at or
 * past nvalid (masked keys, or columns past the tile's last key, whose contents are stale) come
 * out as 0. */

/* Online-softmax step on the br score rows of a tile (row r sees its first nv[r] keys, possibly
 * none), in base 2 (scale2 = scale·log2 e): updates the running maxima m and sums l, overwrites S
 * with P and sets alpha[r] = 2^(m_old - m_new), the factor row r's accumulated output must be
 * rescaled by. The per-row scalar work (new max, alpha, sum update) is done HY_VW rows to a
 * vector; m, l, alpha, mx have room for br rounded up to HY_VW. */
static void tile_online(float *S, int br, const int *nv, float scale2, float *m, float *l, float *alpha, float *mx) {
    const vw lo = vw_splat(-FLT_MAX);
    for (int r = 0; r < br; r++) {
        const float *s = S + (size_t)r * BC;
        vw vmax = lo;
        if (nv[r] >= BC)
            for (int j = 0; j < BC; j += HY_VW) vmax = vw_max(vmax, vw_load(s + j));
        else
            for (int j = 0; j < nv[r]; j += HY_VW) vmax = vw_max(vmax, vw_select(vw_mask_first(nv[r] - j), vw_load(s + j), lo));
        mx[r] = nv[r] > 0 ? vw_hmax(vmax) * scale2 : -FLT_MAX;   /* no keys: the max stays, alpha = 1 */
    }
    for (int r = br; r % HY_VW; r++) mx[r] = -FLT_MAX, m[r] = -FLT_MAX, l[r] = 0;
    for (int r = 0; r < br; r += HY_VW) {
        vw mo = vw_load(m + r), mn = vw_max(mo, vw_load(mx + r));
        vw_store(alpha + r, hy_exp2f_vw(mo - mn));
        vw_store(m + r, mn);
    }
    const vw vs = vw_splat(scale2);
    for (int r = 0; r < br; r++) {
        float *s = S + (size_t)r * BC;
        vw vm = vw_splat(-m[r]), sum = (vw){0};
        for (int j = 0; j < BC; j += HY_VW) {
            vw p = hy_exp2f_vw(vw_fma(vw_load(s + j), vs, vm));
            if (nv[r] - j < HY_VW) p = vw_keep(p, vw_mask_first(nv[r] - j));
            vw_store(s + j, p);
            sum += p;
        }
        mx[r] = vw_hsum(sum);
    }
    for (int r = 0; r < br; r += HY_VW) vw_store(l + r, vw_fma(vw_load(l + r), vw_load(alpha + r), vw_load(mx + r)));
}

/* Backward recomputation of one row: s := 2^(scale2·s - lse2) = exp(scale·s - lse) for the first
 * nvalid, 0 after (lse2 = lse·log2 e). */
static void row_p(float *s, int nvalid, float scale2, float lse2) {
    const vw vs = vw_splat(scale2), vl = vw_splat(-lse2);
    for (int j = 0; j < BC; j += HY_VW) {
        vw p = hy_exp2f_vw(vw_fma(vw_load(s + j), vs, vl));
        if (nvalid - j < HY_VW) p = vw_keep(p, vw_mask_first(nvalid - j));
        vw_store(s + j, p);
    }
}

/* dp := p ∘ (dp - D) on one row (dS, the gradient of the scaled scores). */
static void row_ds(float *dp, const float *p, float D) {
    const vw vd = vw_splat(D);
    for (int j = 0; j < BC; j += HY_VW) vw_store(dp + j, vw_load(p + j) * (vw_load(dp + j) - vd));
}

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
        int lim = off + i0 - j0 + 1;   /* row r sees the tile's first lim + r keys */
        mm(br, bc, hd, Q, a->q.ld, 1, tcol(&a->kt, b, g, j0), a->kt.ld, S, BC, false, NULL, CAUSAL_COLS, lim);
        for (int r = 0; r < br; r++) nv[r] = nvis(off, i0 + r, j0, bc);
        tile_online(S, br, nv, a->scale * LOG2E, m, l, alpha, tmp);
        /* O = diag(alpha) O + P V; the first tile starts O */
        mm(br, hd, bc, S, BC, 1, AT(a->v, b, g, j0), a->v.ld, Oacc, hd, j0 > 0, alpha, CAUSAL_KEND, lim);
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
int hy_flash_tiled(const hy_flash_args *a) {
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

/* ---------------------------------------------------------------- decode ---- */

/* Key blocks (of BC keys) per decode task: the key range of each sequence is cut into chunks so
 * that there are about DECODE_TASKS tasks in all, whatever the thread count (the chunking, hence
 * the result, depends only on the shape). */
enum { DECODE_TASKS = 64 };
static int decode_chunk_blocks(int n_batch, int nkb) {
    long per = ((long)nkb * n_batch + DECODE_TASKS - 1) / DECODE_TASKS;
    return per < 1 ? 1 : (int)per;
}

/* Rows of one kv head's group (grp query heads × Tq queries), rounded up to a multiple of 16 for
 * the row-vector arrays of tile_online. */
static int decode_rows_padded(int nr) { return (nr + 15) / 16 * 16; }

/* Floats of per-thread decode scratch: the sequence's queries (H·Tq rows, contiguous per group),
 * an S tile of the group's rows, and per kv head the O accumulator and the m, l, alpha, temp rows. */
static size_t decode_scratch(const hy_flash_args *a) {
    int nr = a->H / a->Hkv * a->Tq, nrp = decode_rows_padded(nr);
    return (size_t)a->H * a->Tq * a->hd + (size_t)nr * BC + (size_t)a->Hkv * nr * a->hd + 4 * (size_t)a->Hkv * nrp;
}

/* One decode task: sequence b, key blocks kb0 .. kb1-1. Each key block is read once for all the
 * query rows of every head (block-outer, kv-head-inner, so the V rows, which hold every kv head,
 * are consumed whole), with the tiled path's online softmax and tile products. Writes the chunk's
 * running max pm (base 2), sum pl and unnormalised output pO for each of the H·Tq rows (h, i).
 * scr: decode_scratch floats; nv: room for the group's rows (visible keys per row). */
static void decode_task(const hy_flash_args *a, int b, int kb0, int kb1, float *scr, int *nv, float *pm, float *pl,
                        float *pO) {
    const int hd = a->hd, grp = a->H / a->Hkv, nr = grp * a->Tq, nrp = decode_rows_padded(nr), off = a->Tk - a->Tq;
    float *Qc = scr, *S = Qc + (size_t)a->H * a->Tq * hd, *Oacc = S + (size_t)nr * BC,
          *m = Oacc + (size_t)a->Hkv * nr * hd, *l = m + (size_t)a->Hkv * nrp, *alpha = l + (size_t)a->Hkv * nrp,
          *tmp = alpha + (size_t)a->Hkv * nrp;
    for (int h = 0; h < a->H; h++)
        for (int i = 0; i < a->Tq; i++)
            memcpy(Qc + ((size_t)h * a->Tq + i) * hd, AT(a->q, b, h, i), (size_t)hd * sizeof(float));
    for (size_t r = 0; r < (size_t)a->Hkv * nrp; r++) m[r] = -FLT_MAX, l[r] = 0;
    for (int kb = kb0; kb < kb1; kb++) {
        int j0 = kb * BC, bc = MIN(BC, a->Tk - j0);
        for (int r = 0; r < nr; r++) nv[r] = nvis(off, r % a->Tq, j0, bc);
        for (int g = 0; g < a->Hkv; g++) {
            float *mg = m + (size_t)g * nrp, *lg = l + (size_t)g * nrp, *ag = alpha + (size_t)g * nrp,
                  *Og = Oacc + (size_t)g * nr * hd;
            mm(nr, bc, hd, Qc + (size_t)g * nr * hd, hd, 1, tcol(&a->kt, b, g, j0), a->kt.ld, S, BC, false, NULL,
               CAUSAL_NONE, 0);
            tile_online(S, nr, nv, a->scale * LOG2E, mg, lg, ag, tmp + (size_t)g * nrp);
            mm(nr, hd, bc, S, BC, 1, AT(a->v, b, g, j0), a->v.ld, Og, hd, kb > kb0, ag, CAUSAL_NONE, 0);
        }
    }
    for (int g = 0; g < a->Hkv; g++)
        for (int r = 0; r < nr; r++) {   /* group row r is query head g·grp + r / Tq, query r % Tq */
            size_t row = (size_t)g * nr + r;
            pm[row] = m[(size_t)g * nrp + r], pl[row] = l[(size_t)g * nrp + r];
            memcpy(pO + row * hd, Oacc + row * hd, (size_t)hd * sizeof(float));
        }
}

/* Split-key ("flash-decoding") forward for few queries: tasks are (sequence, chunk of key
 * blocks), so that even one query of one sequence keeps every thread streaming its own
 * contiguous part of the KV cache; each task keeps a partial softmax (max, sum, unnormalised
 * output) per query row, and the partials are combined in chunk order:
 *     M = max_c m_c,  L = Σ_c l_c·2^(m_c - M),  o = Σ_c O_c·2^(m_c - M) / L,  lse = M·ln 2 + ln L.
 * Deterministic and independent of the thread count. */
int hy_flash_decode(const hy_flash_args *a) {
    if (a->n_batch <= 0 || a->Tq <= 0) return 0;
    if (a->Tk < a->Tq || a->H % a->Hkv) return hy_fail("attention kernel: bad shape (Tq %d, Tk %d)", a->Tq, a->Tk);
    const int hd = a->hd, nkb = (a->Tk + BC - 1) / BC, per = decode_chunk_blocks(a->n_batch, nkb),
              nch = (nkb + per - 1) / per, nth = omp_get_max_threads();
    const size_t rows = (size_t)a->H * a->Tq, ntask = (size_t)a->n_batch * nch, scr = decode_scratch(a);
    const int nr = a->H / a->Hkv * a->Tq;
    float *scratch = hy_malloc((size_t)nth * scr * sizeof(float)),
          *part = hy_malloc(ntask * rows * (hd + 2) * sizeof(float));
    int *nvis_rows = hy_malloc((size_t)nth * nr * sizeof(int));
    if (!scratch || !part || !nvis_rows) {
        hy_free(scratch), hy_free(part), hy_free(nvis_rows);
        return HY_ERR_NOMEM;
    }
    float *pm = part, *pl = pm + ntask * rows, *pO = pl + ntask * rows;
    #pragma omp parallel
    {
        float *mine = scratch + (size_t)omp_get_thread_num() * scr;
        memset(mine, 0, scr * sizeof *mine);   /* S columns past a short key block are read, never used */
        #pragma omp for schedule(dynamic, 1)
        for (size_t t = 0; t < ntask; t++) {
            int b = (int)(t / nch), c = (int)(t % nch);
            decode_task(a, b, c * per, MIN(nkb, (c + 1) * per), mine, nvis_rows + (size_t)omp_get_thread_num() * nr,
                        pm + t * rows, pl + t * rows, pO + t * rows * hd);
        }
        #pragma omp for schedule(static)
        for (size_t br = 0; br < (size_t)a->n_batch * rows; br++) {   /* rows (b, h, i) */
            size_t b = br / rows, r = br % rows, t0 = b * nch;
            int h = (int)(r / a->Tq), i = (int)(r % a->Tq);
            float M = -FLT_MAX, L = 0, *o = AT(a->o, b, h, i);
            for (int c = 0; c < nch; c++) M = MAX(M, pm[(t0 + c) * rows + r]);
            for (int x = 0; x < hd; x++) o[x] = 0;
            for (int c = 0; c < nch; c++) {
                size_t pr = (t0 + c) * rows + r;
                if (pl[pr] == 0) continue;   /* no key of this chunk visible to the row */
                float w = exp2f(pm[pr] - M);
                L += pl[pr] * w;
                for (int x = 0; x < hd; x++) o[x] += pO[pr * hd + x] * w;
            }
            float inv = 1.0f / L;
            for (int x = 0; x < hd; x++) o[x] *= inv;
            if (a->lse) a->lse[((size_t)b * a->H + h) * a->Tq + i] = M * 0.693147181f + logf(L);
        }
    }
    hy_free(scratch), hy_free(part), hy_free(nvis_rows);
    return 0;
}

/* Few queries (decode, short prefill chunks): the split-key path; otherwise the query tiles. */
int hy_flash_forward(const hy_flash_args *a) {
    return a->Tq <= HY_FLASH_DECODE_TQ ? hy_flash_decode(a) : hy_flash_tiled(a);
}

/* ---------------------------------------------------------------- backward ---- */

/* Per-thread floats of the backward: S and dP tiles, dK and dV accumulators. */
static size_t bwd_scratch(int hd) { return 2 * (size_t)BR * BC + 2 * (size_t)BC * ((hd + 15) / 16 * 16); }

double hy_flash_scratch_floats(int n_batch, int H, int Hkv, int T, int hd, int threads, bool backward) {
    if (!backward && T <= HY_FLASH_DECODE_TQ) {   /* hy_flash_decode: per-thread scratch, every task's partials */
        const hy_flash_args a = {.n_batch = n_batch, .H = H, .Hkv = Hkv, .hd = hd, .Tq = T, .Tk = T};
        int nkb = (T + BC - 1) / BC, per = decode_chunk_blocks(n_batch, nkb), nch = (nkb + per - 1) / per;
        return (double)threads * (decode_scratch(&a) + (double)H / Hkv * T) + (double)n_batch * nch * H * T * (hd + 2);
    }
    if (!backward) return (double)threads * fwd_scratch(hd);
    double rows = (double)n_batch * H * T, copies = hy_flash_backward_by_group(n_batch, Hkv, threads) ? 0 : 2.0 * threads;
    return rows + copies * rows * hd + (double)threads * bwd_scratch(hd);
}

/* One (batch, kv head, key tile): dK and dV rows of the tile are owned here (summed over every
 * query head of the group and every query tile that sees the keys) and accumulated in the
 * contiguous per-thread tiles dKa, dVa (BC × hd) before they are stored; dS K is added to the
 * query rows of dqv (unscaled; written instead when not dq_acc): a slot's private buffer laid out
 * (n_batch, H, Tq, hd), so its tiles are contiguous too, or dq itself when the task owns those
 * rows (bwd_group). */
static void bwd_task(const hy_flash_args *a, const float *delta, int b, int g, int jt, float *S, float *dP,
                     float *dKa, float *dVa, hy_flash_view dqv, bool dq_acc) {
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
            int lim = off + i0 - j0 + 1;   /* query row r sees the tile's first lim + r keys */
            mm(br, bc, hd, Q, a->q.ld, 1, KT, a->kt.ld, S, BC, false, NULL, CAUSAL_COLS, lim);
            for (int r = 0; r < br; r++)
                row_p(S + (size_t)r * BC, nvis(off, i0 + r, j0, bc), a->scale * LOG2E, lse[r] * LOG2E);
            mm(bc, hd, br, S, 1, BC, dO, a->dout.ld, dVa, hd, true, NULL, CAUSAL_KSTART, lim);      /* dV += Pᵀ dO */
            mm(br, bc, hd, dO, a->dout.ld, 1, VT, a->vt.ld, dP, BC, false, NULL, CAUSAL_COLS, lim); /* dP = dO Vᵀ */
            for (int r = 0; r < br; r++) row_ds(dP + (size_t)r * BC, S + (size_t)r * BC, D[r]);
            mm(bc, hd, br, dP, 1, BC, Q, a->q.ld, dKa, hd, true, NULL, CAUSAL_KSTART, lim);         /* dK += dSᵀ Q */
            mm(br, hd, bc, dP, BC, 1, K, a->k.ld, AT(dqv, b, h, i0), dqv.ld, dq_acc, NULL, CAUSAL_KEND,
               lim);                                                                                 /* dQ += dS K */
        }
    for (int j = 0; j < bc; j++) {
        float *dk = AT(a->dk, b, g, j0 + j), *dv = AT(a->dv, b, g, j0 + j);
        for (int c = 0; c < hd; c++) dk[c] = dKa[(size_t)j * hd + c] * a->scale, dv[c] = dVa[(size_t)j * hd + c];
    }
}

/* One (batch, kv head) whole: every key tile in order, adding dS K straight into the dq rows of
 * the group's query heads (the first key tile, which every query row meets, writes them; scaled
 * at the end). The task owns those rows, so the result is the same whatever the thread count or
 * schedule. */
static void bwd_group(const hy_flash_args *a, const float *delta, int b, int g, float *S, float *dP, float *dKa,
                      float *dVa) {
    int hd = a->hd, grp = a->H / a->Hkv, nkt = (a->Tk + BC - 1) / BC;
    for (int jt = 0; jt < nkt; jt++) bwd_task(a, delta, b, g, jt, S, dP, dKa, dVa, a->dq, jt > 0);
    for (int h = g * grp; h < (g + 1) * grp; h++)
        for (int i = 0; i < a->Tq; i++) {
            float *dq = AT(a->dq, b, h, i);
            for (int c = 0; c < hd; c++) dq[c] *= a->scale;
        }
}

bool hy_flash_backward_by_group(int n_batch, int Hkv, int threads) {
    return (long)n_batch * Hkv >= 4L * threads;
}

/* Two schedules, both bit-reproducible for a given thread count whatever the schedule:
 * - by group (hy_flash_backward_by_group: at least 4 (batch, kv head) pairs per thread, e.g. a
 *   training batch): one task per (batch, kv head), handed out dynamically, owning its dq rows
 *   (bwd_group), so no dQ copies are zeroed and summed;
 * - by key-tile slots (few sequences and heads, long T): key tiles are paired (j, last - j) so
 *   every task has the same causal work. The tasks are dealt round-robin to 2·threads fixed slots,
 *   each with its own dQ buffer, processed in a fixed order; threads take whole slots dynamically
 *   (a thread slowed down by another process on a shared machine then does fewer of them), and the
 *   slot buffers are summed in slot order. */
int hy_flash_backward(const hy_flash_args *a) {
    if (a->n_batch <= 0 || a->Tq <= 0) return 0;
    if (a->Tk < a->Tq || a->H % a->Hkv) return hy_fail("attention kernel: bad shape (Tq %d, Tk %d)", a->Tq, a->Tk);
    int nth = omp_get_max_threads(), hd = a->hd, H = a->H;
    bool by_group = hy_flash_backward_by_group(a->n_batch, a->Hkv, nth);
    int nslot = by_group ? 0 : 2 * nth;
    size_t nq = (size_t)a->n_batch * a->Tq * H * hd, nrow = (size_t)a->n_batch * H * a->Tq;
    size_t per = bwd_scratch(hd);
    float *delta = hy_malloc(nrow * sizeof(float)), *dqp = by_group ? NULL : hy_malloc((size_t)nslot * nq * sizeof(float)),
          *scratch = hy_malloc((size_t)nth * per * sizeof(float));
    if (!delta || (!by_group && !dqp) || !scratch) {
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
            delta[r] = hy_dotf(o, dO, hd);
        }
        if (by_group) {
            #pragma omp for schedule(dynamic, 1)
            for (int bg = 0; bg < a->n_batch * a->Hkv; bg++) bwd_group(a, delta, bg / a->Hkv, bg % a->Hkv, S, dP, dKa, dVa);
        }
        #pragma omp for schedule(dynamic, 1)
        for (int u = 0; u < nslot; u++)
            for (long t = u; t < ntask; t += nslot) {
                int p = (int)(t % npair), bg = (int)(t / npair);
                hy_flash_view mine = {dqp + (size_t)u * nq, (size_t)H * a->Tq * hd, (size_t)a->Tq * hd, hd, 0};
                bwd_task(a, delta, bg / a->Hkv, bg % a->Hkv, p, S, dP, dKa, dVa, mine, true);
                if (nkt - 1 - p != p)
                    bwd_task(a, delta, bg / a->Hkv, bg % a->Hkv, nkt - 1 - p, S, dP, dKa, dVa, mine, true);
            }
        #pragma omp for schedule(static)
        for (size_t r = 0; r < (nslot ? nrow : 0); r++) {   /* dQ = scale Σ_slots dQ_u, rows ordered (b, h, i) */
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

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
 * Tile products run in core/tile_mm.h's register-blocked kernel (mm below) and the softmax rows in a
 * vector exp2, both written over core/simd.h's vw: 16 floats per vector in an AVX-512 build, 8 in an
 * AVX2 one. */
#include "layers/attention/attention.h"
#include "core/bf16.h"
#include "core/error.h"
#include "core/gemm.h"
#include "core/mem.h"
#include "core/simd.h"
#include "core/tile_mm.h"
#include "core/vmath.h"
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

enum { BR = 64, BC = HY_FLASH_BC };   /* query and key tile sizes */
_Static_assert(BR == BC, "the bf16 packing cuts query and key rows into tiles of the same size");

#define AT(v, b, h, r) ((v).p + (size_t)(b) * (v).bs + (size_t)(h) * (v).hs + (size_t)(r) * (v).ld)
/* Start of the key tile at column j0 (a multiple of BC) of a transposed view (kt, vt). */
static inline const float *tcol(const hy_flash_view *v, int b, int h, int j0) {
    const float *p = AT(*v, b, h, 0);
    return v->tile ? p + (size_t)(j0 / BC) * v->tile : p + j0;
}

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* ---------------------------------------------------------------- tile products ---- */
/* Where a causal tile's products can stop: query row r of a tile (r from 0) sees its key columns
 * c < lim + r (lim = off + i0 - j0 + 1; lim >= the tile width when every row sees every key), so
 * the products on the diagonal tile skip what the mask zeroes anyway (core/tile_mm.h's parts):
 *   HY_TILE_LOWER_C  rows are queries, columns keys (S = Q Kᵀ, dP = dO Vᵀ): a strip of key
 *                    columns is made for the rows that see one of its keys only (the columns past a
 *                    row's own limit hold stale or computed values, which the softmax rows mask);
 *   HY_TILE_LOWER_A  rows are queries, the sum runs over keys (O += P V, dQ += dS K): P and dS are
 *                    0 past a row's limit, so the sum stops at the row block's last visible key;
 *   HY_TILE_UPPER_A  rows are keys, the sum runs over queries (dV += Pᵀ dO, dK += dSᵀ Q): key j is
 *                    seen by query rows r >= j - lim + 1 only, so the sum starts there.
 * Adding those zero terms would leave every sum as it is (0·b adds nothing), so the results are the
 * full products' (at T 64 every tile is diagonal, and this halves the work). */

/* C[M × N] (+)= A[M × K] · B[K × N] on tiles, by hy_tile_mm_part (core/tile_mm.h: a register-blocked
 * product at the vector width, no set-up; at the 64 × 64 × head_dim tiles a library GEMM's per-call
 * packing would dominate): A element (m, k) at A[m·sam + k·sak] (sam = 1 is a transposed A, so Pᵀ dO
 * and dSᵀ Q need no copy), B and C row-major with strides ldb, ldc; with acc, C's rows are first
 * scaled by rs[0..M) unless rs is NULL; part, lim: the part of a causal tile to compute (above). */
static void mm(int M, int N, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak, const float *B, ptrdiff_t ldb,
               float *C, ptrdiff_t ldc, bool acc, const float *rs, hy_tile_part part, int lim) {
    hy_tile_mm_part(M, N, K, A, sam, sak, B, ldb, C, ldc, acc ? 1.0f : 0.0f, acc ? rs : NULL, part, lim);
}

/* ---------------------------------------------------------------- bf16 operands ---- */
/* Under compute.precision bf16 (hy_flash_args.bf16) every tile product takes bf16 inputs and
 * accumulates in f32 (core/bf16.h: vdpbf16ps where the build has AVX-512 BF16). The B operands
 * (key and value tiles, and in backward the dO, Q and K tiles) are packed once per call into bf16
 * pairs, one packed block per (batch, head, tile of 64 rows or keys), so a tile reused by every
 * query tile is converted once; the A operand (Q, dO, P or dS) is packed by each product. */
typedef struct {
    uint32_t *w;         /* n_batch * nh * ntile blocks of `block` words */
    size_t block;
    int nh, ntile, ldw;  /* heads, tiles per head, words per packed row */
} packed_set;

/* Room for the blocks of one set: ntile tiles per (batch, head) of a K x N source tile. */
static packed_set packed_set_of(int n_batch, int nh, int ntile, int K, int N) {
    packed_set ps = {NULL, 0, nh, ntile, hy_bf16_packed_width(N)};
    ps.block = (size_t)((K + 1) / 2) * ps.ldw;
    (void)n_batch;
    return ps;
}
static size_t packed_set_words(const packed_set *ps, int n_batch) { return (size_t)n_batch * ps->nh * ps->ntile * ps->block; }
static const uint32_t *packed_at(const packed_set *ps, int b, int h, int t) {
    return ps->w + (((size_t)b * ps->nh + h) * ps->ntile + t) * ps->block;
}

/* Packs tile t of (b, h) of every set in parallel: `kind` 0 = a transposed view (kt, vt; the tile is
 * hd x keys, the B of Q Kᵀ and dO Vᵀ), 1 = rows of a view (the tile is rows x hd, the B of P V,
 * Pᵀ dO, dSᵀ Q and dS K); `len` rows or keys in all. */
static void pack_set(packed_set *ps, const hy_flash_view *v, int kind, int n_batch, int hd, int len) {
    #pragma omp parallel for collapse(2) schedule(static)
    for (int bh = 0; bh < n_batch * ps->nh; bh++)
        for (int t = 0; t < ps->ntile; t++) {
            int b = bh / ps->nh, h = bh % ps->nh, r0 = t * BC, n = MIN(BC, len - r0);
            uint32_t *dst = ps->w + ((size_t)bh * ps->ntile + t) * ps->block;
            if (kind == 0) hy_bf16_pack_b(hd, n, tcol(v, b, h, r0), v->ld, dst, ps->ldw);
            else hy_bf16_pack_b(n, hd, AT(*v, b, h, r0), v->ld, dst, ps->ldw);
        }
}

/* The packed block of tile t of (b, h) in set i of pk, or NULL when pk is NULL (f32). */
static const uint32_t *packed_tile(const packed_set *pk, int i, int b, int h, int t) {
    return pk ? packed_at(&pk[i], b, h, t) : NULL;
}

/* A tile product C = (rs ⊙) C + A B: the f32 kernel (which skips the masked part of a causal
 * tile: part, lim as for mm), or (w non-NULL: bf16) the bf16 product with B packed in w (ldw words
 * per packed row) over the whole tile, whose masked part the softmax rows ignore or which adds zeros.
 * Returns 0, or HY_ERR_NOMEM from a bf16 product. */
static int tile_mm(const uint32_t *w, int ldw, int M, int N, int K, const float *A, ptrdiff_t sam, ptrdiff_t sak,
                   const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, bool acc, const float *rs, hy_tile_part part, int lim) {
    if (w) return hy_bf16_tile_mm_packed(M, N, K, A, sam, sak, w, ldw, C, ldc, acc, rs);
    mm(M, N, K, A, sam, sak, B, ldb, C, ldc, acc, rs, part, lim);
    return 0;
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

/* Floats of per-thread forward scratch: S tile, O accumulator, per row the running max and sum,
 * alpha and a temporary, and a transposed key tile (own_t) (each part a multiple of 16 floats, so
 * every thread's block stays 64-byte aligned). */
static size_t fwd_scratch(int hd) {
    return (size_t)BR * BC + (size_t)BR * ((hd + 15) / 16 * 16) + 4 * BR + (size_t)((hd + 15) / 16 * 16) * BC;
}

/* The B operand of Q Kᵀ (kt) or dO Vᵀ (vt) for key tile j0 of (b, g): from the transposed view tv
 * when the caller made one, else (one key tile: tv->p NULL) the rows of `rows` (k or v) transposed
 * here into own (hd × BC, row stride BC; in L1, no pass over memory, no parallel region of its
 * own). *ld gets the row stride. */
static const float *tile_t(const hy_flash_view *tv, const hy_flash_view *rows, int b, int g, int j0, int n, int hd,
                           float *own, int *ld) {
    if (tv->p) {
        *ld = tv->ld;
        return tcol(tv, b, g, j0);
    }
    hy_transpose(own, BC, AT(*rows, b, g, j0), rows->ld, n, hd);
    *ld = BC;
    return own;
}

/* A kernel call without kt or vt (the tasks transpose the one key tile themselves) is valid only for
 * at most one key tile in f32. Returns 0 or the error. */
static int check_views(const hy_flash_args *a, bool backward) {
    if ((!a->kt.p || (backward && !a->vt.p)) && (a->Tk > BC || a->bf16))
        return hy_fail("attention kernel: no transposed %s for %d keys%s", a->kt.p ? "values" : "keys", a->Tk,
                       a->bf16 ? " under bf16" : "");
    return 0;
}

/* Visible keys of query row i (absolute key limit off + i) in the key tile starting at j0, clamped
 * to 0..bc. */
static inline int nvis(int off, int i, int j0, int bc) { return MAX(0, MIN(bc, off + i - j0 + 1)); }

/* One (batch, head, query tile): the online-softmax sweep over the visible key tiles. Returns 0 or
 * the error of a bf16 tile product. */
static int fwd_task(const hy_flash_args *a, const packed_set *pk, int b, int h, int i0, float *S, float *Oacc,
                    float *rowbuf, float *own_t) {
    int hd = a->hd, g = h / (a->H / a->Hkv), off = a->Tk - a->Tq, br = MIN(BR, a->Tq - i0), nv[BR];
    float *m = rowbuf, *l = m + BR, *alpha = l + BR, *tmp = alpha + BR;
    const float *Q = AT(a->q, b, h, i0);
    int qlast = off + i0 + br - 1;   /* the last key any row of the tile sees */
    for (int r = 0; r < br; r++) m[r] = -FLT_MAX, l[r] = 0;
    for (int j0 = 0; j0 <= qlast; j0 += BC) {
        int bc = MIN(BC, qlast + 1 - j0);
        int jt = j0 / BC, lim = off + i0 - j0 + 1;   /* row r sees the tile's first lim + r keys */
        int ldkt;
        const float *KT = tile_t(&a->kt, &a->k, b, g, j0, bc, hd, own_t, &ldkt);
        int rc = tile_mm(packed_tile(pk, 0, b, g, jt), pk ? pk[0].ldw : 0, br, bc, hd, Q, a->q.ld, 1, KT, ldkt, S, BC,
                         false, NULL, HY_TILE_LOWER_C, lim);
        if (rc < 0) return rc;
        for (int r = 0; r < br; r++) nv[r] = nvis(off, i0 + r, j0, bc);
        tile_online(S, br, nv, a->scale * LOG2E, m, l, alpha, tmp);
        /* O = diag(alpha) O + P V; the first tile starts O */
        if ((rc = tile_mm(packed_tile(pk, 1, b, g, jt), pk ? pk[1].ldw : 0, br, hd, bc, S, BC, 1, AT(a->v, b, g, j0),
                          a->v.ld, Oacc, hd, j0 > 0, alpha, HY_TILE_LOWER_A, lim)) < 0)
            return rc;
    }
    for (int r = 0; r < br; r++) {
        float inv = 1.0f / l[r], *o = AT(a->o, b, h, i0 + r);
        for (int c = 0; c < hd; c++) o[c] = Oacc[(size_t)r * hd + c] * inv;
        if (a->lse) a->lse[((size_t)b * a->H + h) * a->Tq + i0 + r] = m[r] * 0.693147181f + logf(l[r]);
    }
    return 0;
}

/* Tasks are (batch, head, query tile), the longest (last) query tiles first, handed out
 * dynamically: this balances the causal triangle, and each task owns its output rows so the
 * result does not depend on the schedule. */
int hy_flash_tiled(const hy_flash_args *a) {
    if (a->n_batch <= 0 || a->Tq <= 0) return 0;
    if (a->Tk < a->Tq || a->H % a->Hkv) return hy_fail("attention kernel: bad shape (Tq %d, Tk %d)", a->Tq, a->Tk);
    if (check_views(a, false) < 0) return HY_ERR;
    int nth = omp_get_max_threads(), nqt = (a->Tq + BR - 1) / BR, nbh = a->n_batch * a->H;
    size_t per = fwd_scratch(a->hd);
    float *scratch = hy_malloc((size_t)nth * per * sizeof(float));
    if (!scratch) return HY_ERR_NOMEM;
    long ntask = (long)nbh * nqt;
    /* bf16: the key tiles as the B of Q Kᵀ and the value tiles as the B of P V, packed once */
    int nkt = (a->Tk + BC - 1) / BC;
    packed_set pk[2] = {packed_set_of(a->n_batch, a->Hkv, nkt, a->hd, BC), packed_set_of(a->n_batch, a->Hkv, nkt, BC, a->hd)};
    uint32_t *words = NULL;
    if (a->bf16) {
        size_t n0 = packed_set_words(&pk[0], a->n_batch), n1 = packed_set_words(&pk[1], a->n_batch);
        if (!(words = hy_malloc((n0 + n1) * sizeof(uint32_t)))) {
            hy_free(scratch);
            return HY_ERR_NOMEM;
        }
        pk[0].w = words, pk[1].w = words + n0;
        pack_set(&pk[0], &a->kt, 0, a->n_batch, a->hd, a->Tk);
        pack_set(&pk[1], &a->v, 1, a->n_batch, a->hd, a->Tk);
    }
    int err = 0;
    #pragma omp parallel reduction(min : err)
    {
        int tid = omp_get_thread_num();
        float *S = scratch + (size_t)tid * per, *Oacc = S + (size_t)BR * BC,
              *rowbuf = Oacc + (size_t)BR * ((a->hd + 15) / 16 * 16), *own_t = rowbuf + 4 * BR;
        memset(S, 0, (size_t)BR * BC * sizeof *S);   /* columns past a short tile are read, never used */
        #pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < ntask; t++) {
            int it = nqt - 1 - (int)(t / nbh), bh = (int)(t % nbh);
            int rc = fwd_task(a, words ? pk : NULL, bh / a->H, bh % a->H, it * BR, S, Oacc, rowbuf, own_t);
            if (rc < err) err = rc;
        }
    }
    hy_free(scratch), hy_free(words);
    return err;
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
               HY_TILE_FULL, 0);
            tile_online(S, nr, nv, a->scale * LOG2E, mg, lg, ag, tmp + (size_t)g * nrp);
            mm(nr, hd, bc, S, BC, 1, AT(a->v, b, g, j0), a->v.ld, Og, hd, kb > kb0, ag, HY_TILE_FULL, 0);
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
    if (!a->kt.p) return hy_fail("attention kernel: the split-key path needs the transposed keys");
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

/* Few queries (decode, short prefill chunks) with the transposed keys given: the split-key path;
 * otherwise the query tiles. */
int hy_flash_forward(const hy_flash_args *a) {
    return a->Tq <= HY_FLASH_DECODE_TQ && a->kt.p ? hy_flash_decode(a) : hy_flash_tiled(a);
}

/* ---------------------------------------------------------------- backward ---- */

/* Per-thread floats of the backward: S and dP tiles, dK and dV accumulators, the transposed key and
 * value tiles (own_t). */
static size_t bwd_scratch(int hd) { return 2 * (size_t)BR * BC + 4 * (size_t)BC * ((hd + 15) / 16 * 16); }

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
 * rows (bwd_group). pk: the packed bf16 tiles, or NULL (f32). Returns 0 or HY_ERR_NOMEM. */
static int bwd_task(const hy_flash_args *a, const packed_set *pk, const float *delta, int b, int g, int jt, float *S,
                    float *dP, float *dKa, float *dVa, hy_flash_view dqv, bool dq_acc) {
    int hd = a->hd, off = a->Tk - a->Tq, grp = a->H / a->Hkv, j0 = jt * BC, bc = MIN(BC, a->Tk - j0), ldkt, ldvt;
    float *own_t = dVa + (size_t)BC * ((hd + 15) / 16 * 16);   /* bwd_scratch's last two parts */
    const float *KT = tile_t(&a->kt, &a->k, b, g, j0, bc, hd, own_t, &ldkt),
                *VT = tile_t(&a->vt, &a->v, b, g, j0, bc, hd, own_t + (size_t)BC * ((hd + 15) / 16 * 16), &ldvt),
                *K = AT(a->k, b, g, j0);
    memset(dKa, 0, (size_t)bc * hd * sizeof *dKa);
    memset(dVa, 0, (size_t)bc * hd * sizeof *dVa);
    int it0 = MAX(0, j0 - off) / BR, nqt = (a->Tq + BR - 1) / BR;
    for (int h = g * grp; h < (g + 1) * grp; h++)
        for (int it = it0; it < nqt; it++) {
            int i0 = it * BR, br = MIN(BR, a->Tq - i0);
            const float *Q = AT(a->q, b, h, i0), *dO = AT(a->dout, b, h, i0);
            const float *lse = a->lse + ((size_t)b * a->H + h) * a->Tq + i0, *D = delta + (lse - a->lse);
            int lim = off + i0 - j0 + 1;   /* query row r sees the tile's first lim + r keys */
            /* bf16: the packed kt, dO, vt, Q and K tiles of this (b, g or h, tile) */
            const uint32_t *w[5] = {packed_tile(pk, 0, b, g, jt), packed_tile(pk, 1, b, h, it), packed_tile(pk, 2, b, g, jt),
                                    packed_tile(pk, 3, b, h, it), packed_tile(pk, 4, b, g, jt)};
            int ldw[5];
            for (int i = 0; i < 5; i++) ldw[i] = pk ? pk[i].ldw : 0;
            int rc = tile_mm(w[0], ldw[0], br, bc, hd, Q, a->q.ld, 1, KT, ldkt, S, BC, false, NULL, HY_TILE_LOWER_C, lim);
            if (rc < 0) return rc;
            for (int r = 0; r < br; r++)
                row_p(S + (size_t)r * BC, nvis(off, i0 + r, j0, bc), a->scale * LOG2E, lse[r] * LOG2E);
            if ((rc = tile_mm(w[1], ldw[1], bc, hd, br, S, 1, BC, dO, a->dout.ld, dVa, hd, true, NULL, HY_TILE_UPPER_A,
                              lim)) < 0 ||                                                          /* dV += Pᵀ dO */
                (rc = tile_mm(w[2], ldw[2], br, bc, hd, dO, a->dout.ld, 1, VT, ldvt, dP, BC, false, NULL, HY_TILE_LOWER_C,
                              lim)) < 0)                                                            /* dP = dO Vᵀ */
                return rc;
            for (int r = 0; r < br; r++) row_ds(dP + (size_t)r * BC, S + (size_t)r * BC, D[r]);
            if ((rc = tile_mm(w[3], ldw[3], bc, hd, br, dP, 1, BC, Q, a->q.ld, dKa, hd, true, NULL, HY_TILE_UPPER_A,
                              lim)) < 0 ||                                                          /* dK += dSᵀ Q */
                (rc = tile_mm(w[4], ldw[4], br, hd, bc, dP, BC, 1, K, a->k.ld, AT(dqv, b, h, i0), dqv.ld, dq_acc, NULL,
                              HY_TILE_LOWER_A, lim)) < 0)                                               /* dQ += dS K */
                return rc;
        }
    for (int j = 0; j < bc; j++) {
        float *dk = AT(a->dk, b, g, j0 + j), *dv = AT(a->dv, b, g, j0 + j);
        for (int c = 0; c < hd; c++) dk[c] = dKa[(size_t)j * hd + c] * a->scale, dv[c] = dVa[(size_t)j * hd + c];
    }
    return 0;
}

/* One (batch, kv head) whole: D of the group's query rows, then every key tile in order, adding
 * dS K straight into the dq rows of the group's query heads (the first key tile, which every query
 * row meets, writes them; scaled at the end). The task owns those rows, so the result is the same
 * whatever the thread count or schedule. Returns 0 or HY_ERR_NOMEM (from a bf16 product). */
static int bwd_group(const hy_flash_args *a, const packed_set *pk, float *delta, int b, int g, float *S,
                     float *dP, float *dKa, float *dVa) {
    int hd = a->hd, grp = a->H / a->Hkv, nkt = (a->Tk + BC - 1) / BC;
    for (int h = g * grp; h < (g + 1) * grp; h++)   /* D of the group's rows */
        for (int i = 0; i < a->Tq; i++)
            delta[((size_t)b * a->H + h) * a->Tq + i] = hy_dotf(AT(a->o, b, h, i), AT(a->dout, b, h, i), hd);
    for (int jt = 0; jt < nkt; jt++) {
        int rc = bwd_task(a, pk, delta, b, g, jt, S, dP, dKa, dVa, a->dq, jt > 0);
        if (rc < 0) return rc;
    }
    for (int h = g * grp; h < (g + 1) * grp; h++)
        for (int i = 0; i < a->Tq; i++) {
            float *dq = AT(a->dq, b, h, i);
            for (int c = 0; c < hd; c++) dq[c] *= a->scale;
        }
    return 0;
}

bool hy_flash_backward_by_group(int n_batch, int Hkv, int threads) {
    return (long)n_batch * Hkv >= 4L * threads;
}

/* Two schedules, both bit-reproducible for a given thread count whatever the schedule:
 * - by group (hy_flash_backward_by_group: at least 4 (batch, kv head) pairs per thread, e.g. a
 *   training batch): one task per (batch, kv head), handed out dynamically, owning its dq rows
 *   (bwd_group), so no dQ copies are zeroed and summed, and making D of its own rows: the whole
 *   backward is one work-sharing loop (one barrier, where a pass for D would add another);
 * - by key-tile slots (few sequences and heads, long T): key tiles are paired (j, last - j) so
 *   every task has the same causal work. The tasks are dealt round-robin to 2·threads fixed slots,
 *   each with its own dQ buffer, processed in a fixed order; threads take whole slots dynamically
 *   (a thread slowed down by another process on a shared machine then does fewer of them), and the
 *   slot buffers are summed in slot order. */
int hy_flash_backward(const hy_flash_args *a) {
    if (a->n_batch <= 0 || a->Tq <= 0) return 0;
    if (a->Tk < a->Tq || a->H % a->Hkv) return hy_fail("attention kernel: bad shape (Tq %d, Tk %d)", a->Tq, a->Tk);
    if (check_views(a, true) < 0) return HY_ERR;
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
    int nkt = (a->Tk + BC - 1) / BC, npair = (nkt + 1) / 2, nqt = (a->Tq + BR - 1) / BR;
    long ntask = (long)a->n_batch * a->Hkv * npair;
    /* bf16: the B operands packed once: kt (Q Kᵀ), dO (Pᵀ dO), vt (dO Vᵀ), Q (dSᵀ Q), K (dS K) */
    packed_set pk[5] = {packed_set_of(a->n_batch, a->Hkv, nkt, hd, BC), packed_set_of(a->n_batch, H, nqt, BR, hd),
                        packed_set_of(a->n_batch, a->Hkv, nkt, hd, BC), packed_set_of(a->n_batch, H, nqt, BR, hd),
                        packed_set_of(a->n_batch, a->Hkv, nkt, BC, hd)};
    uint32_t *words = NULL;
    if (a->bf16) {
        size_t total = 0;
        for (int i = 0; i < 5; i++) total += packed_set_words(&pk[i], a->n_batch);
        if (!(words = hy_malloc(total * sizeof(uint32_t)))) {
            hy_free(delta), hy_free(dqp), hy_free(scratch);
            return HY_ERR_NOMEM;
        }
        total = 0;
        for (int i = 0; i < 5; i++) pk[i].w = words + total, total += packed_set_words(&pk[i], a->n_batch);
        pack_set(&pk[0], &a->kt, 0, a->n_batch, hd, a->Tk);
        pack_set(&pk[1], &a->dout, 1, a->n_batch, hd, a->Tq);
        pack_set(&pk[2], &a->vt, 0, a->n_batch, hd, a->Tk);
        pack_set(&pk[3], &a->q, 1, a->n_batch, hd, a->Tq);
        pack_set(&pk[4], &a->k, 1, a->n_batch, hd, a->Tk);
    }
    const packed_set *pks = words ? pk : NULL;
    int err = 0;
    #pragma omp parallel reduction(min : err)
    {
        int tid = omp_get_thread_num();
        float *S = scratch + (size_t)tid * per, *dP = S + (size_t)BR * BC, *dKa = dP + (size_t)BR * BC,
              *dVa = dKa + (size_t)BC * ((hd + 15) / 16 * 16);
        memset(S, 0, (size_t)2 * BR * BC * sizeof *S);   /* columns past a short tile are read, never used */
        if (by_group) {   /* one work-sharing loop: each task makes its own rows' D */
            #pragma omp for schedule(dynamic, 1)
            for (int bg = 0; bg < a->n_batch * a->Hkv; bg++) {
                int rc = bwd_group(a, pks, delta, bg / a->Hkv, bg % a->Hkv, S, dP, dKa, dVa);
                if (rc < err) err = rc;
            }
        } else {
            #pragma omp for schedule(static)
            for (int u = 0; u < nslot; u++) memset(dqp + (size_t)u * nq, 0, nq * sizeof(float));
            #pragma omp for schedule(static)
            for (size_t r = 0; r < nrow; r++) {   /* D = rowsum(dO ∘ O), rows ordered (b, h, i) */
                int i = (int)(r % a->Tq), h = (int)(r / a->Tq % H), b = (int)(r / a->Tq / H);
                delta[r] = hy_dotf(AT(a->o, b, h, i), AT(a->dout, b, h, i), hd);
            }
            #pragma omp for schedule(dynamic, 1)
            for (int u = 0; u < nslot; u++)
                for (long t = u; t < ntask; t += nslot) {
                    int p = (int)(t % npair), bg = (int)(t / npair);
                    hy_flash_view mine = {dqp + (size_t)u * nq, (size_t)H * a->Tq * hd, (size_t)a->Tq * hd, hd, 0};
                    int rc = bwd_task(a, pks, delta, bg / a->Hkv, bg % a->Hkv, p, S, dP, dKa, dVa, mine, true);
                    if (rc == 0 && nkt - 1 - p != p)
                        rc = bwd_task(a, pks, delta, bg / a->Hkv, bg % a->Hkv, nkt - 1 - p, S, dP, dKa, dVa, mine, true);
                    if (rc < err) err = rc;
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
    }
    hy_free(delta), hy_free(dqp), hy_free(scratch), hy_free(words);
    return err;
}

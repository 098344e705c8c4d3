/* The gated delta rule, forward (chunked WY/UT form) and single-token step; formulas and layouts in
 * layers/gated_deltanet/delta.h. One (sequence, value head) per OpenMP iteration walks its chunks in
 * order, the state carried transposed (Sᵀ, dk × dv) in the thread's scratch directly after the
 * chunk's Kᵀ; all intra-chunk matrices live in that scratch, so only the inputs, o, and what is kept
 * for backward touch memory. Per chunk six products (core/tile_mm.h): Q Kᵀ, Q S_inᵀ, K [Kᵀ | S_inᵀ]
 * (K Kᵀ and K S_inᵀ), T·R (after the substitution for T), tril(P)·U and K̃ᵀ·U for the next state.
 * O is made where it goes, in o's rows, and with keep U in the kept array (the products read them
 * back from the cache); the state entering every other chunk is kept, transposed back to dv × dk
 * (the backward recomputes T and the other states). */
#include "core/error.h"
#include "core/tile_mm.h"
#include "layers/gated_deltanet/delta_common.h"
#include <omp.h>
#include <stdbool.h>

_Static_assert(HY_VW % HY_TILE_MR == 0, "T is read from the substitution's padded rows by blocks of HY_TILE_MR rows");

int hy_gdn_nchunks(int T, int L) { return T <= 0 ? 0 : (T + L - 1) / L; }
int hy_gdn_nckpt(int T, int L) { return (hy_gdn_nchunks(T, L) + 1) / 2; }

/* Common checks of the sizes (both directions). */
int hy_gdn_check(const hy_gdn_in *in);
int hy_gdn_check(const hy_gdn_in *in) {
    if (in->B < 0 || in->T < 0 || in->chunk < 1 || in->H < 1 || in->HV < in->H || in->HV % in->H || in->dk < 1 ||
        in->dv < 1)
        return hy_fail("gated delta rule: bad sizes B %d T %d chunk %d H %d HV %d dk %d dv %d", in->B, in->T, in->chunk,
                       in->H, in->HV, in->dk, in->dv);
    return 0;
}

/* Scratch floats of one thread of the forward: the chunk (without Q and K rows), T (padded rows), C,
 * R, U (used without keep) and the carried [Kᵀ | S_inᵀ] (dk rows of L + dv). */
static size_t fwd_floats(int L, int dk, int dv) {
    return gdn_chunk_floats(L, dk, false) + gdn_round((size_t)gdn_inv_stride(L) * gdn_inv_stride(L)) +
           gdn_round((size_t)2 * L * (L + dv)) + 2 * gdn_round((size_t)L * dv) + gdn_round((size_t)dk * (L + dv));
}

size_t hy_gdn_forward_ws_floats(int dk, int dv, int L, int threads) { return fwd_floats(L, dk, dv) * (size_t)threads; }

/* All chunks of (sequence b, value head j) in order. S: this head's state (dv × dk), NULL = zeros;
 * updated to the state after the last token. The state is carried transposed, Sᵀ (dk × dv), in the
 * last dv columns of the scratch matrix Bm (dk rows of L + dv), whose Lc columns before it get the
 * chunk's Kᵀ, so that Q Kᵀ, Q S_inᵀ and K [Kᵀ | S_inᵀ] are products with B row-major, as hy_tile_mm
 * takes it, and A the q and k rows where they are (no copy); the state update reads Kᵀ, scaled by
 * e^{γ_L − γ} in place, as its A. The products are small (32 × 128 × 32 at the block's chunk):
 * hy_tile_mm runs them without a library call's set-up, skips the zeros above the diagonal of T and
 * P, and applies e^γ to Q S_inᵀ and e^{γ_L} to S_in as it adds. Q S_inᵀ and then O are made in o's
 * rows, and with keep U in the kept array: plain stores from the products' register blocks, which
 * the core overlaps with the multiply-adds (a separate copy out with non-temporal stores stalled on
 * each burst: about 10% more process time on the bench shape). w: the thread's scratch. */
static void head_forward(const hy_gdn_in *in, int b, int j, float *S, float *o, int ld_o, const hy_gdn_keep *keep,
                         float *w) {
    const int L = in->chunk, dk = in->dk, dv = in->dv, nch = hy_gdn_nchunks(in->T, L), nck = hy_gdn_nckpt(in->T, L);
    const int ldb = L + dv, Lp = gdn_inv_stride(L);
    gdn_chunk ch;
    gdn_chunk_alloc(&ch, &w, L, dk, false);
    float *Tp = gdn_take(&w, (size_t)Lp * Lp), *C = gdn_take(&w, (size_t)2 * L * (L + dv));
    float *R = gdn_take(&w, (size_t)L * dv), *Us = gdn_take(&w, (size_t)L * dv), *Bm = gdn_take(&w, (size_t)dk * ldb);
    float *const St = Bm + L;   /* Sᵀ: dk rows at stride ldb */
    const size_t head = (size_t)b * in->HV + j;
    bool s_zero = S == NULL;   /* the state is known to be zero: its products are skipped */
    if (S) hy_transpose(St, (size_t)ldb, S, (size_t)dk, dv, dk);
    for (int c = 0; c < nch; c++) {
        const int Lc = in->T - c * L < L ? in->T - c * L : L, ldc = Lc + dv;
        gdn_chunk_gather(in, b, j, c, &ch, false);
        const size_t lq = (size_t)in->ld_qk;
        const float *Q = in->q + ch.row0 * lq + (size_t)ch.i * dk, *K = in->k + ch.row0 * lq + (size_t)ch.i * dk;
        float *Bc = Bm + (L - Lc);   /* [Kᵀ | S_inᵀ]: Lc + dv columns */
        float *O = o + ch.row0 * ld_o + (size_t)j * dv;   /* this chunk's rows of o (row stride ld_o) */
        float *U = keep ? keep->u + (head * in->T + (size_t)c * L) * dv : Us;   /* row stride dv */
        hy_transpose(Bc, (size_t)ldb, K, lq, Lc, dk);
        /* Q Kᵀ into C's first Lc rows, Q S_inᵀ into O, [K Kᵀ | K S_inᵀ] into C's next Lc rows (row
         * stride ldc), then the masks */
        hy_tile_mm(Lc, Lc, dk, Q, (ptrdiff_t)lq, 1, Bc, ldb, C, ldc, 0.0f, NULL, false);
        if (!s_zero) hy_tile_mm(Lc, dv, dk, Q, (ptrdiff_t)lq, 1, St, ldb, O, ld_o, 0.0f, NULL, false);
        hy_tile_mm(Lc, s_zero ? Lc : ldc, dk, K, (ptrdiff_t)lq, 1, Bc, ldb, C + (size_t)Lc * ldc, ldc, 0.0f, NULL, false);
        gdn_prefetch_rows(in, b, j, c + 1, 0, L / 4);   /* the next chunk's rows, in four parts */
        gdn_chunk_masks(&ch, C, ldc);
        const float *KS = C + (size_t)Lc * ldc + Lc;
        gdn_prefetch_rows(in, b, j, c + 1, L / 4, L / 2);
        gdn_unit_lower_inverse(NULL, ch.KD, ch.beta, Lc, Tp);
        /* R = diag(β) V − diag(β e^γ) K S_inᵀ;  U = T R */
        for (int t = 0; t < Lc; t++) {
            const float *vt = in->v + (ch.row0 + t) * in->ld_v + (size_t)j * dv, *ks = KS + (size_t)t * ldc;
            float *r = R + (size_t)t * dv, bt = ch.beta[t], be = bt * ch.e[t];
            if (s_zero)
                for (int x = 0; x < dv; x++) r[x] = bt * vt[x];
            else
                for (int x = 0; x < dv; x++) r[x] = bt * vt[x] - be * ks[x];
        }
        gdn_prefetch_rows(in, b, j, c + 1, L / 2, 3 * L / 4);
        /* T straight from the substitution's padded rows: a lower block of 4 rows reads only columns
         * inside the vectors the substitution wrote for its rows (HY_TILE_MR divides the vector
         * width), which hold exact zeros above the diagonal */
        hy_tile_mm(Lc, dv, Lc, Tp, gdn_inv_stride(Lc), 1, R, dv, U, dv, 0.0f, NULL, true);
        /* O = diag(e^γ) Q S_inᵀ + P U, in place */
        gdn_prefetch_rows(in, b, j, c + 1, 3 * L / 4, L);
        hy_tile_mm(Lc, dv, Lc, ch.P, Lc, 1, U, dv, O, ld_o, 0.0f, s_zero ? NULL : ch.e, true);
        /* the state entering chunk c is kept for the even chunks */
        float *ck = keep && c % 2 == 0 ? keep->ckpt + (head * nck + c / 2) * (size_t)dv * dk : NULL;
        if (ck && s_zero) memset(ck, 0, (size_t)dv * dk * sizeof(float));
        else if (ck) hy_transpose(ck, (size_t)dk, St, (size_t)ldb, dk, dv);
        /* S_outᵀ = e^{γ_L} S_inᵀ + K̃ᵀ U with K̃ = diag(e^{γ_L − γ}) K (the product's A is K read by columns) */
        for (int x = 0; x < dk; x++) {
            float *kx = Bc + (size_t)x * ldb;
            for (int t = 0; t < Lc; t++) kx[t] *= ch.et[t];
        }
        hy_tile_mm(dk, dv, Lc, Bc, ldb, 1, U, dv, St, ldb, s_zero ? 0.0f : ch.eL, NULL, false);
        s_zero = false;
    }
    if (S) hy_transpose(S, (size_t)dk, St, (size_t)ldb, dk, dv);
}

int hy_gdn_forward(const hy_gdn_in *in, float *S, float *o, int ld_o, const hy_gdn_keep *keep, hy_buf *ws) {
    int rc = hy_gdn_check(in);
    if (rc < 0 || in->B == 0 || in->T == 0) return rc;
    const int nh = in->B * in->HV, nth = omp_get_max_threads(), dk = in->dk, dv = in->dv;
    const size_t per = fwd_floats(in->chunk, dk, dv);
    if (!hy_buf_grab(ws, per * (size_t)nth)) return HY_ERR_NOMEM;
    #pragma omp parallel for schedule(static)
    for (int p = 0; p < nh; p++) {
        float *w = ws->p + per * (size_t)omp_get_thread_num();
        head_forward(in, p / in->HV, p % in->HV, S ? S + (size_t)p * dv * dk : NULL, o, ld_o, keep, w);
    }
    return 0;
}

/* Σ_x a[x]·b[x] in 16 partial sums (so it vectorizes without reassociation flags). */
static inline float dot(const float *restrict a, const float *restrict b, int n) {
    float acc[16] = {0};
    int x = 0;
    for (; x + 16 <= n; x += 16)
        for (int l = 0; l < 16; l++) acc[l] += a[x + l] * b[x + l];
    float s = 0;
    for (int l = 0; l < 16; l++) s += acc[l];
    for (; x < n; x++) s += a[x] * b[x];
    return s;
}

/* One token: S ← αS, sk = S k, S += β(v − sk) kᵀ, o = S q, as two passes over the rows of S (the
 * dots S k, then the update fused with S q). */
int hy_gdn_step(const hy_gdn_in *in, float *S, float *o, int ld_o) {
    int rc = hy_gdn_check(in);
    if (rc < 0) return rc;
    if (in->T != 1) return hy_fail("gated delta rule: step takes one token, got %d", in->T);
    const int nh = in->B * in->HV, dk = in->dk, dv = in->dv, G = in->HV / in->H;
    #pragma omp parallel for schedule(static) if ((size_t)nh * dv * dk > 65536)
    for (int p = 0; p < nh; p++) {
        const int b = p / in->HV, j = p % in->HV, i = j / G;
        const float *q = in->q + (size_t)b * in->ld_qk + (size_t)i * dk, *k = in->k + (size_t)b * in->ld_qk + (size_t)i * dk;
        const float *v = in->v + (size_t)b * in->ld_v + (size_t)j * dv;
        const float a = gdn_decay(in->g[(size_t)b * in->ld_bg + j]), be = in->beta[(size_t)b * in->ld_bg + j];
        float *Sh = S + (size_t)p * dv * dk, *out = o + (size_t)b * ld_o + (size_t)j * dv;
        for (int r = 0; r < dv; r++) {
            float *row = Sh + (size_t)r * dk;
            const float u = be * (v[r] - a * dot(row, k, dk));
            for (int x = 0; x < dk; x++) row[x] = a * row[x] + u * k[x];
            out[r] = dot(row, q, dk);
        }
    }
    return 0;
}

double hy_gdn_flop(int T, int dk, int dv, int L) {
    double f = 0;
    for (int t0 = 0; t0 < T; t0 += L) {
        double c = T - t0 < L ? T - t0 : L;
        f += c * (c + 1) * dk + c * (c - 1) * dk + (c - 1) * c * (c + 1) / 3 + c * (c - 1) * dv +
             6.0 * c * dk * dv + c * (c + 1) * dv;
    }
    return f;
}

/* Private to the rwkv7 block (layers/rwkv7/rwkv7.c forward, streaming, options; layers/rwkv7/rwkv7_backward.c
 * backward): parameter indices, geometry, the caches kept for backward, and small helpers. */
#ifndef HY_LAYERS_RWKV7_PRIV_H
#define HY_LAYERS_RWKV7_PRIV_H
#include "core/gemm.h"
#include "core/mem.h"
#include "core/simd.h"
#include "layers/rwkv7/rwkv7.h"
#include <stdbool.h>

/* Elementwise loops smaller than this run on one thread (fork/join costs more than they do).
 * The inner loops of the row-parallel passes carry `#pragma omp simd`: inside the functions that
 * OpenMP outlines, gcc 12 left them scalar (-fopt-info-vec: "no vectype for stmt"), the decay's exp
 * and softplus, the sigmoids and the per-head passes included; the pragma vectorizes them with the
 * same arithmetic per element (same bits). */
#define PAR_MIN 65536

enum { OPT_HEAD, OPT_DW, OPT_DA, OPT_DV, OPT_DG };

enum {
    P_XR, P_XW, P_XK, P_XV, P_XA, P_XG, P_W0, P_W1, P_W2, P_A0, P_A1, P_A2, P_V0, P_V1, P_V2, P_G1, P_G2,
    P_KK, P_KA, P_RK, P_WR, P_WK, P_WV, P_WO, P_LNW, P_LNB, P_COUNT
};

typedef struct {
    int C, H, N, Dw, Da, Dv, Dg;
} geom;

static inline geom geom_of(const hy_opts *o, int d) {
    geom g = {d, 0, hy_opt_int(o, OPT_HEAD), hy_opt_int(o, OPT_DW), hy_opt_int(o, OPT_DA), hy_opt_int(o, OPT_DV),
              hy_opt_int(o, OPT_DG)};
    g.H = d / g.N;
    return g;
}

/* Caches of the last forward and workspaces. The (rows, C) arrays of the forward and of the
 * backward are two workspaces each (fwd_arrays, bwd_arrays), laid out by hy_buf_grab_skewed with
 * the recurrence's arrays at rwkv7.h's HY_WKV7_SLOT_* page offsets: separate allocations would all
 * start at the same page offset, and the recurrence walks one head's rows of 8 (forward) or 15
 * (backward) of them together. */
typedef struct {
    const float *x;
    int B, T;
    bool have_fwd, first;
    bool xm_gated;   /* xm holds op ⊙ g, the output projection's input, as the forward leaves it */
    hy_buf fwd_arrays, bwd_arrays;
    float *r, *dec, *k, *v, *kk, *b, *sq, *y, *xx, *xm, *k0, *w, *a, *g, *op;   /* in fwd_arrays, in slot order */
    float *dy, *dr, *ddec, *dk, *dv, *dq, *db, *d1, *d2, *d3, *dxx;             /* in bwd_arrays, in slot order */
    hy_buf hw, hv, vg, vdiff, ha, hg, kinv, ckpt, mean, rstd;
    hy_buf ones, dhw;
    hy_buf wkv_work;   /* the recurrence's workspace (hy_wkv7_forward, hy_wkv7_backward), kept between calls */
} rw_priv;

/* g[0..C) += column sums of M (rows, C), as ones(1, rows) · M through hy_gemm. */
static inline void colsum_add(float *g, const float *M, const float *ones, size_t rows, int C) {
    hy_gemm(false, false, 1, C, (int)rows, 1.0f, ones, (int)rows, M, C, 1.0f, g, C);
}

/* xm = x + xx ⊙ mu over rows of C. */
static inline void mix(float *restrict xm, const float *restrict x, const float *restrict xx, const float *restrict mu,
                size_t rows, int C) {
    #pragma omp parallel for schedule(static) if (rows * (size_t)C >= PAR_MIN)
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < C; c++) xm[r * C + c] = x[r * C + c] + xx[r * C + c] * mu[c];
}

/* Backward of mix(): dx += dm, dxx += dm ⊙ mu (dx = dm, dxx = dm ⊙ mu when first: the block's
 * first write of them, which saves zeroing them), gmu += colsum(dm ⊙ xx) (dm is overwritten). */
static inline void mix_backward(float *restrict dm, float *restrict dx, float *restrict dxx, const float *restrict xx,
                         const float *restrict mu, float *gmu, const float *ones, size_t rows, int C, bool first) {
    #pragma omp parallel for schedule(static) if (rows * (size_t)C >= PAR_MIN)
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < C; c++) {
            size_t i = r * C + c;
            dx[i] = first ? dm[i] : dx[i] + dm[i];
            dxx[i] = first ? dm[i] * mu[c] : dxx[i] + dm[i] * mu[c];
            dm[i] *= xx[i];
        }
    colsum_add(gmu, dm, ones, rows, C);
}

/* Lanes j .. j + HY_VW − 1 of p (core/simd.h), those at or past n read as 0: the per-head loops
 * below run over whole vectors with one masked tail. */
static inline vw rw_load(const float *p, int j, int n) {
    return j + HY_VW <= n ? vw_load(p + j) : vw_load_masked(p + j, vw_mask_first(n - j));
}

/* Σ_j a[j] and Σ_j a[j]·b[j] over a head's n floats, in HY_VW lanes and then one horizontal sum:
 * written as plain loops, these per-head sums are chains of dependent adds (C does not reorder
 * them), a few hundred cycles per head and row. */
static inline float rw_sum(const float *a, int n) {
    vw acc = {0};
    for (int j = 0; j < n; j += HY_VW) acc += rw_load(a, j, n);
    return vw_hsum(acc);
}
static inline float rw_dot(const float *a, const float *b, int n) {
    vw acc = {0};
    for (int j = 0; j < n; j += HY_VW) acc += rw_load(a, j, n) * rw_load(b, j, n);
    return vw_hsum(acc);
}
/* Σ_j a[j]·b[j]·c[j]. */
static inline float rw_dot3(const float *a, const float *b, const float *c, int n) {
    vw acc = {0};
    for (int j = 0; j < n; j += HY_VW) acc += rw_load(a, j, n) * rw_load(b, j, n) * rw_load(c, j, n);
    return vw_hsum(acc);
}

/* Y (rows, n) = X (rows, k) @ W (k, n): the x @ w1 convention of the LoRA matrices. */
static inline void xw(float *Y, const float *X, const float *W, size_t rows, int k, int n) {
    hy_gemm(false, false, (int)rows, n, k, 1.0f, X, k, W, n, 0.0f, Y, n);
}

/* Backward of xw(): dW += Xᵀ dY; dX (+)= dY Wᵀ (dX may be NULL). */
static inline void xw_backward(float *dX, float *dW, const float *dY, const float *X, const float *W, size_t rows, int k,
                        int n, bool acc) {
    hy_gemm(true, false, k, n, (int)rows, 1.0f, X, k, dY, n, 1.0f, dW, n);
    if (dX) hy_gemm(false, true, (int)rows, k, n, 1.0f, dY, n, W, n, acc ? 1.0f : 0.0f, dX, k);
}

/* The block's backward (layers/rwkv7/rwkv7_backward.c). */
int hy_rwkv7_backward(hy_layer *L, const float *dy, float *dx, int B, int T);

#endif

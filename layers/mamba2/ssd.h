/* ssd — the state-space-dual (SSD) kernels of the Mamba-2 block (layers/mamba2/ssd.c): the API that
 * the block (layers/mamba2/mamba2.c), its tests and the benchmark call. The block itself is
 * layers/mamba2/mamba2.h.
 *
 * The recurrence of SPEC §2 (mamba2), for every sequence b and head h of H (group g = h / (H/G)),
 * head size P, state size N:
 *     a_t[h]   = Δ_t[h] · A[h]                                   (A[h] < 0, so a_t <= 0)
 *     S_t[h]   = exp(a_t[h]) · S_{t-1}[h] + Δ_t[h] · x_t[h] B_t[g]ᵀ    S[h]: P × N
 *     y_t[h]   = S_t[h] · C_t[g]                                  (the D skip is the block's)
 *
 * The chunked form computes the same thing in chunks of Q steps. Within a chunk (local steps
 * 0..q-1, q <= Q) with seg[j][i] = Σ_{i<r<=j} a_r (j >= i), E_j = exp(Σ_{r<=j} a_r), W_i =
 * exp(seg[q-1][i]), e = E_{q-1} and S_in the state entering the chunk:
 *     y_j   = Σ_{i<=j} exp(seg[j][i]) (C_j·B_i) Δ_i x_i  +  E_j · S_in C_j
 *     S_out = e · S_in + Σ_i W_i Δ_i x_i B_iᵀ
 * i.e. per group and chunk one product CB = C Bᵀ (q × q) and per head one over N + q,
 * Y = [E ⊙ C | L ⊙ CB ⊙ Δ] [S_inᵀ ; x], with the causal mask L[j][i] = exp(seg[j][i]) for i <= j and
 * 0 above the diagonal (never exponentiated: every exponent here is a sum of a <= 0, so no exp can
 * overflow), and the chunk's own state S_out = e · S_in + (Δ·x·W)ᵀ B. The segment sums are running
 * sums of the a_r themselves, not differences of prefix sums, so a strong decay early in a chunk
 * does not cost the precision of the mild ones after it. A task (sequence, group, block of heads)
 * sweeps the chunks in order with its heads' states in cache (ssd.c). C Bᵀ goes through hy_gemm
 * (core/gemm.h), the small per-chunk products through hy_tile_mm (core/tile_mm.h).
 *
 * Layouts (rows = b·T + t): x_t[h·P + p] = x[row·ldx + h·P + p]; Δ_t[h] = dt[row·lddt + h];
 * B_t[g·N + n] = Bm[row·ldbc + g·N + n], C likewise (the block passes column slices of its conv
 * output); y rows of ldy floats, head h at column h·P. States s0 / s_out (B, H, P, N), the layout
 * of mamba_ssm's ssm_state; the chunk states kept for the backward (a->states) transposed. */
#ifndef HY_LAYERS_MAMBA2_SSD_H
#define HY_LAYERS_MAMBA2_SSD_H
#include "core/mem.h"
#include <stddef.h>

typedef struct {
    int B, T, H, P, N, G;         /* sequences, steps, heads, head size, state size, groups (G divides H) */
    const float *x;               /* (rows, ldx): head h at columns h·P .. h·P+P-1 */
    int ldx;
    const float *dt;              /* Δ (rows, lddt): head h at column h, Δ >= 0 */
    int lddt;
    const float *Bm, *Cm;         /* (rows, ldbc): group g at columns g·N .. g·N+N-1 */
    int ldbc;
    const float *A;               /* (H), A < 0 (the block's -exp(A_log)) */
    const float *s0;              /* state before step 0 (B, H, P, N), or NULL = zeros */
    float *s_out;                 /* state after the last step (B, H, P, N), or NULL; may be s0 */
    int chunk;                    /* Q, steps per chunk (>= 1) */
    float *states;                /* (B, nch+1, N, H·P), hy_ssd_state_floats: slot c = the state
                                   * entering chunk c (slot nch: the final one), transposed (row n
                                   * holds S[h][p][n] at column h·P + p); written by the forward
                                   * (NULL: not kept), read by the backward */
} hy_ssd_args;

/* Floats of a->states for (B, T, H, P, N, chunk). */
size_t hy_ssd_state_floats(int B, int T, int H, int P, int N, int chunk);

/* Floats of the work buffers hy_ssd_forward and hy_ssd_backward grow to for these sizes with
 * `threads` threads (the block's training-memory estimate). */
size_t hy_ssd_forward_work_floats(int B, int T, int H, int P, int N, int G, int chunk, int threads);
size_t hy_ssd_backward_work_floats(int B, int T, int H, int P, int N, int G, int chunk, int threads);

/* FLOPs (multiply-add = 2) of the chunked form's matrix products for one sequence of T steps:
 * per chunk of q steps, per group 2q²N (C Bᵀ), per head 2q²P (the masked q × q product, counted
 * in full, as the product issues it) + 2qPN (the chunk's own state) + 2qPN (the carried-in state's
 * output). The elementwise work (masks, decays, Δ·x) is not counted. */
double hy_ssd_flop(int T, int H, int P, int N, int G, int chunk);

/* y = the recurrence above, in the chunked form. Fills a->states (when given) and s_out. work:
 * scratch kept by the caller between calls (grown as needed). */
int hy_ssd_forward(const hy_ssd_args *a, float *y, int ldy, hy_buf *work);

/* Backward of hy_ssd_forward (same args, a->states as the forward left them; s0 may be set; the
 * final state's gradient is taken as zero). dy: the gradient of y (rows, lddy). OVERWRITES dx
 * (rows, lddx; head columns as x), ddt (rows, ldddt; head columns as dt) and dB, dC (rows, lddbc;
 * group columns as Bm); ACCUMULATES dA (H) (the gradient with respect to A); writes the gradient of
 * s0 into ds0 (B, H, P, N) unless NULL. Deterministic for a given thread count. */
int hy_ssd_backward(const hy_ssd_args *a, const float *dy, int lddy, float *dx, int lddx, float *ddt, int ldddt,
                    float *dB, float *dC, int lddbc, float *dA, float *ds0, hy_buf *work);

/* The recurrence itself, step by step (streaming: the block's step), from s0 (NULL = zeros) into
 * s_out (required; may be s0); a->states and chunk are not used. y as in hy_ssd_forward. */
int hy_ssd_scan(const hy_ssd_args *a, float *y, int ldy);

#endif

/* delta — the gated delta rule of the gated_deltanet block (layers/gated_deltanet/delta.c forward and
 * step, delta_backward.c backward): the API that the block, its tests and the benchmark call. The
 * block itself is layers/gated_deltanet/gated_deltanet.c.
 *
 * The recurrence of SPEC §2, for every sequence b and value head j (reading q/k head i = j / (HV/H)),
 * state S (dv × dk, row = value index, column = key index):
 *     S ← α_t·S;   S ← S + β_t·(v_t − S k_t) k_tᵀ;   o_t = S q_t          α_t = exp(g_t), g_t <= 0
 * computed in the chunked (WY/UT) form: per chunk of L tokens with γ_t = Σ_{r<=t} g_r from the chunk
 * start, D_ts = e^{γ_t − γ_s} (s <= t only; never above the diagonal),
 *     A = strict_tril(β_t·D_ts·k_t·k_s),  T = (I + A)^{-1}   (forward substitution, L³/6 FMAs)
 *     [Q; K] [Kᵀ | S_inᵀ] (Q Kᵀ, K Kᵀ, Q S_inᵀ, K S_inᵀ);   U = T·(diag(β) V − diag(β e^γ) K S_inᵀ)
 *     O = diag(e^γ) Q S_inᵀ + tril(D ⊙ Q Kᵀ) U
 *     S_outᵀ = e^{γ_L} S_inᵀ + Kᵀ diag(e^{γ_L − γ}) U
 * Every product is a matrix product of core/tile_mm.h's register-blocked kernel (f32, on each thread
 * of the OpenMP loop over (sequence, value head): the per-chunk products are too small for a library
 * call's set-up), γ is summed in double so that a weak decay after a strong one keeps its
 * precision, and a decay factor below e^-87 is exactly 0 (no denormals).
 *
 * Layouts: row r = b·T + t. q, k: row stride ld_qk, q/k head i at column i·dk; v and o: strides
 * ld_v / ld_o, value head j at column j·dv; beta, g: stride ld_bg, value head j at column j. The
 * gradients have the strides of what they are the gradient of. States: (B, HV, dv, dk). */
#ifndef HY_LAYERS_GATED_DELTANET_DELTA_H
#define HY_LAYERS_GATED_DELTANET_DELTA_H
#include "core/mem.h"
#include <stddef.h>

/* The block's chunk length, chosen by the time of forward + backward on the bench shape (4 heads, dk 64,
 * dv 128, T 4096): 32 takes 2% less than 16 and 16% less than 64, 128 is slower still (docs/blocks.md);
 * `hybrid-exp bench --blocks gated_deltanet` times it against half and twice it. */
#define HY_GDN_CHUNK 32

typedef struct {
    int B, T, H, HV, dk, dv;
    int chunk;                  /* L > 0: tokens per chunk (the last chunk of a sequence may be shorter) */
    const float *q, *k;         /* (B·T, ld_qk): q already L2-normalised and scaled, k L2-normalised */
    const float *v;             /* (B·T, ld_v) */
    const float *beta, *g;      /* (B·T, ld_bg): β_t and the log-decay g_t = log α_t <= 0 */
    int ld_qk, ld_v, ld_bg;
} hy_gdn_in;

/* What the forward keeps for the backward (both or none); the backward recomputes T, and the state
 * entering each odd chunk from the one before (one GEMM per two chunks, half the checkpoint bytes). */
typedef struct {
    float *u;                   /* (B, HV, T, dv): U of every chunk, each value head's rows contiguous */
    float *ckpt;                /* (B, HV, hy_gdn_nckpt, dv, dk): the state entering chunks 0, 2, 4, … */
} hy_gdn_keep;

/* Chunks of a sequence of T tokens: ceil(T / L). */
int hy_gdn_nchunks(int T, int L);

/* Chunk states kept per (sequence, value head): ceil(nchunks / 2), those entering the even chunks. */
int hy_gdn_nckpt(int T, int L);

/* The chunked forward: o (B·T rows, stride ld_o) for sequences starting from S (B, HV, dv, dk;
 * NULL = zeros), which is updated in place to the state after the last token. keep (NULL = nothing
 * kept) receives what hy_gdn_backward needs. ws: a workspace kept by the caller (grown as needed). */
int hy_gdn_forward(const hy_gdn_in *in, float *S, float *o, int ld_o, const hy_gdn_keep *keep, hy_buf *ws);

/* Backward of hy_gdn_forward (with the same in and the keep it filled; the initial state, when there
 * was one, is in keep->ckpt and gets no gradient). dout: the gradient of o (stride ld_o). OVERWRITES
 * dq, dk (stride ld_qk), dv (ld_v), dbeta, dg (ld_bg). Deterministic: with HV > H the q/k gradients of
 * the value heads sharing a q/k head are summed in a fixed order. */
int hy_gdn_backward(const hy_gdn_in *in, const hy_gdn_keep *keep, const float *dout, int ld_o, float *dq, float *dk,
                    float *dv, float *dbeta, float *dg, hy_buf *ws);

/* Floats hy_gdn_forward / hy_gdn_backward grow their workspace to with `threads` OpenMP threads (for
 * the block's training-memory estimate). */
size_t hy_gdn_forward_ws_floats(int dk, int dv, int L, int threads);
size_t hy_gdn_backward_ws_floats(int B, int T, int H, int HV, int dk, int dv, int L, int threads);

/* One token (in->T must be 1) for B sequences with the plain recurrence: S (B, HV, dv, dk) updated
 * in place, o (B rows, stride ld_o). 6·dv·dk flops per value head. */
int hy_gdn_step(const hy_gdn_in *in, float *S, float *o, int ld_o);

/* Useful forward FLOPs of the chunked form for one value head over T tokens with chunk L
 * (multiply-add = 2): per chunk of Lc tokens Q Kᵀ on and below the diagonal Lc(Lc+1)·dk, K Kᵀ below
 * it Lc(Lc−1)·dk, the substitution (Lc−1)Lc(Lc+1)/3, T·R Lc(Lc−1)·dv, [Q; K] S_inᵀ 4·Lc·dk·dv,
 * tril(P)·U Lc(Lc+1)·dv, Uᵀ K 2·Lc·dk·dv. */
double hy_gdn_flop(int T, int dk, int dv, int L);

#endif

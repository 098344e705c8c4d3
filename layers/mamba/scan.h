/* scan — the selective-scan kernels of the Mamba block (layers/mamba/scan.c): the API that the
 * block (layers/mamba/mamba.c), its tests and the benchmark call. The block itself is
 * layers/mamba/mamba.h.
 *
 * The scan of SPEC §2, for every sequence b and channel c of E, state size N:
 *     s_t[c,n] = exp(Δ_t[c]·A[c,n]) · s_{t-1}[c,n] + Δ_t[c] · B_t[n] · x_t[c]
 *     y_t[c]   = Σ_n s_t[c,n] · C_t[n] + D[c] · x_t[c]
 * Layouts: delta, x, y, dy: (B, T, E) rows; B_t and C_t: row (b·T + t) of Bm / Cm with row stride
 * ld_bc (they are column slices of x_proj's output); A (E, N) (already -exp(A_log)); D (E) or
 * NULL (no skip); states s0 / s_out: (B, E, N), the layout of mamba_ssm's ssm_state.
 *
 * Kernels: 16 channels at a time, the N states of those 16 channels in a [N][16] register-friendly
 * block, so every inner loop runs over 16 contiguous channels (one AVX-512 vector, two AVX2 ones:
 * core/simd.h) with hy_expf_neg_vw (core/vmath.h); OpenMP over (sequence, channel block). Backward is chunked:
 * forward stores the state at the start of every `chunk` steps (B, ceil(T/chunk), N, E floats),
 * backward recomputes the states of one chunk at a time from there (so memory is
 * O(T·E + T/chunk·E·N), never the (T, E, N) history). */
#ifndef HY_LAYERS_MAMBA_SCAN_H
#define HY_LAYERS_MAMBA_SCAN_H
#include "core/mem.h"
#include <stdbool.h>
#include <stddef.h>

#define HY_MAMBA_MAX_STATE 256 /* largest d_state the kernels take */

typedef struct {
    int B, T, E, N;
    const float *delta, *x;      /* (B, T, E) */
    const float *Bm, *Cm;        /* B_t[n] = Bm[(b·T + t)·ld_bc + n], C_t likewise */
    int ld_bc;
    const float *A;              /* (E, N) */
    const float *D;              /* (E) or NULL */
    const float *s0;             /* initial state (B, E, N) or NULL = zeros */
    float *s_out;                /* final state (B, E, N) or NULL; may be s0 (in place) */
    int chunk;                   /* > 0: steps per chunk for chunk_states */
    float *chunk_states;         /* NULL, or (B, ceil(T/chunk), N, E): state before step k·chunk */
    bool coarse_exp;             /* exp(Δ·A) as 2^(Δ·A·log2 e) by hy_exp2f_coarse_neg_vw (relative error
                                  * 2.9e-6 against 1e-7, 8 vector operations against 14): for the
                                  * block under bf16 precision; false: hy_expf_neg_vw */
} hy_mamba_scan_args;

/* Floats of a->chunk_states for (B, T, E, N, chunk). */
size_t hy_mamba_chunk_floats(int B, int T, int E, int N, int chunk);

/* y (B, T, E) = the scan. Fills s_out and chunk_states when given. */
int hy_mamba_scan_forward(const hy_mamba_scan_args *a, float *y);

/* Backward of hy_mamba_scan_forward from zero initial state (s0 must be NULL), given the
 * chunk_states the forward stored with the same chunk. dy is the gradient of y. OVERWRITES
 * ddelta, dx (B, T, E) and dB, dC (rows of stride ld_dbc, N floats each); ACCUMULATES dA (E, N)
 * (gradient with respect to A) and dD (E) (skipped if NULL). Deterministic for a given thread
 * count. work: a workspace kept by the caller between calls (grown as needed; NULL = allocate and
 * free one in the call: the per-call fresh pages cost page faults). */
int hy_mamba_scan_backward(const hy_mamba_scan_args *a, const float *dy, float *ddelta, float *dx, float *dB,
                           float *dC, int ld_dbc, float *dA, float *dD, hy_buf *work);
/* Floats of the backward's workspace (`work`) for (B, T, E, N, chunk) with `threads` threads. */
size_t hy_mamba_scan_backward_floats(int B, int T, int E, int N, int chunk, int threads);

#endif

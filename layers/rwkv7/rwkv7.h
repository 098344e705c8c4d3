/* rwkv7 — the RWKV-7 "Goose" time-mix block (layers/rwkv7/rwkv7.c), its state recurrence kernels
 * (layers/rwkv7/wkv.c), and the cmix channel-mix ffn (layers/ffn/cmix.c). Hooks for tests and bench.
 *
 * The state recurrence ("WKV-7"), per (batch, head), S an N×N matrix (row i = value index, column
 * j = key index), S_{-1} = S0 (zero in training):
 *     sq_t = S_{t-1} q_t                          (q = kk, the normalised key)
 *     S_t  = S_{t-1} diag(w_t) - sq_t b_tᵀ + v_t k_tᵀ          (w = decay, b = kk ⊙ a)
 *     y_t  = S_t r_t
 * Vectors r, w, k, v, q, b, y, sq are (B, T, H·N) row-major, head h at columns h·N (as the
 * projections produce them). States handed in and out (S, ckpt) are stored KEY-MAJOR: element
 * (i, j) of head (b, h) at S[((b·H + h)·N + j)·N + i], so the forward's inner loops run over the
 * value index i, contiguous, with no horizontal sums. */
#ifndef HY_LAYERS_RWKV7_H
#define HY_LAYERS_RWKV7_H
#include "core/mem.h"
#include "layers/registry.h"
#include <stddef.h>

extern const hy_block_ops hy_block_rwkv7;
extern const hy_block_ops hy_block_cmix;

/* The backward keeps one state every HY_WKV7_CHUNK steps and recomputes inside a chunk. */
#define HY_WKV7_CHUNK 32
/* Outputs with at least this many bytes per (B, T, H·N) array (the forward's y, the backward's six
 * gradients) are written with non-temporal stores (see layers/rwkv7/wkv.c): bit for bit the same
 * values, but they are not left in the caches. */
#define HY_WKV7_STREAM_BYTES ((size_t)4 << 20)

/* Where the recurrence's (B, T, H·N) arrays go in a workspace laid out by core/mem.h's
 * hy_buf_grab_skewed (the slot of each, in HY_SKEW_BYTES past a 4 KiB boundary): the forward walks
 * the six inputs, sq and y together and the backward the six inputs, sq, dy and the six gradients,
 * one head's N floats of every row, rows H·N floats apart; with H·N·4 a multiple of 4 KiB (16 heads
 * of 64) arrays at the same page offset put all those rows into the same four L1 sets. The block
 * (layers/rwkv7/rwkv7.c) and the bench line (bench/bench_rwkv7.c) both use these slots: 15
 * distinct ones, fewer than HY_SKEW_SLOTS. */
enum {
    HY_WKV7_SLOT_R, HY_WKV7_SLOT_W, HY_WKV7_SLOT_K, HY_WKV7_SLOT_V, HY_WKV7_SLOT_Q, HY_WKV7_SLOT_B,
    HY_WKV7_SLOT_SQ, HY_WKV7_SLOT_Y, HY_WKV7_SLOT_DY, HY_WKV7_SLOT_DR, HY_WKV7_SLOT_DW, HY_WKV7_SLOT_DK,
    HY_WKV7_SLOT_DV, HY_WKV7_SLOT_DQ, HY_WKV7_SLOT_DB, HY_WKV7_SLOTS
};

typedef struct {
    int B, T, H, N;
    const float *r, *w, *k, *v, *q, *b;
} hy_wkv7_in;

/* Number of checkpoint states per (batch, head) for T steps: ceil(T / HY_WKV7_CHUNK). */
static inline int hy_wkv7_nchunks(int T) { return (T + HY_WKV7_CHUNK - 1) / HY_WKV7_CHUNK; }

/* Forward. S: (B, H, N, N) key-major initial state, overwritten with the final state; NULL = start
 * from zero and drop the final state. Writes y and sq (both (B, T, H·N)). ckpt (optional, NULL =
 * none): (B, H, nchunks, N, N), the state before step c·CHUNK for every chunk c. Parallel over B·H.
 * work: the caller's workspace for the zero states (hy_buf_grab: it is grown when too small and
 * kept), so that repeated calls reuse pages already mapped; NULL = allocated and freed inside the
 * call. Returns 0, or HY_ERR_NOMEM (with hy_fail) when S is NULL and the zero states cannot be
 * allocated. */
int hy_wkv7_forward(const hy_wkv7_in *in, float *S, float *y, float *sq, float *ckpt, hy_buf *work);

/* Backward of hy_wkv7_forward (which must have written sq and ckpt) with no gradient on the final
 * state: from dy OVERWRITES dr, dw, dk, dv, dq, db ((B, T, H·N) each). Walks each chunk in reverse
 * after recomputing its states from the chunk's checkpoint. Parallel over B·H. work: the caller's
 * workspace for the threads' chunk states, as in the forward (NULL = allocated and freed inside
 * the call). Returns 0, or HY_ERR_NOMEM (with hy_fail) when the workspace cannot be allocated. */
int hy_wkv7_backward(const hy_wkv7_in *in, const float *sq, const float *ckpt, const float *dy, float *dr,
                     float *dw, float *dk, float *dv, float *dq, float *db, hy_buf *work);

/* Floats of the recurrence's workspace from a zero state with `threads` threads (what `work` grows
 * to, or what a call without one allocates and frees): the larger of forward (every head's state)
 * and backward (per-thread chunk states). */
double hy_wkv7_work_floats(int B, int H, int N, int threads);

/* Plain reference of the forward (zero initial state), one entry at a time in the layout of the
 * formulas, for tests: y only. */
void hy_wkv7_forward_ref(const hy_wkv7_in *in, float *y);

#endif

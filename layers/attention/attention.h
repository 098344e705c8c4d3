/* attention — hooks of the attention block (layers/attention/attention.c) for tests and benchmarks, and the
 * FlashAttention-2 style tile kernels (layers/attention/flash.c) it is built on. */
#ifndef HY_LAYERS_ATTENTION_H
#define HY_LAYERS_ATTENTION_H
#include "layers/registry.h"
#include <stdbool.h>
#include <stddef.h>

extern const hy_block_ops hy_block_attention;

/* The plain reference path: materialises the full T×T probabilities of every (batch, head) with
 * hy_malloc (so hy_mem_peak shows the quadratic memory), softmax in simple loops, hy_gemm for the
 * products. backward_naive needs forward_naive (with L->keep_for_backward) just before; same
 * contract as the block's forward/backward (dx overwritten, weight gradients accumulated). */
int hy_attention_forward_naive(hy_layer *L, const float *x, float *y, int B, int T);
int hy_attention_backward_naive(hy_layer *L, const float *dy, float *dx, int B, int T);

/* ---- tile kernels ----
 * A strided 4-D view: element (b, h, row, col) is p[b*bs + h*hs + row*ld + col]; for the transposed
 * views (kt, vt) with tile != 0, columns come in blocks of HY_FLASH_BC (key tiles) `tile` floats
 * apart: element (b, h, row, col) is p[b*bs + h*hs + (col / BC)*tile + row*ld + col % BC], so
 * with ld = BC and tile = hd*BC every key tile is one contiguous block. */
#define HY_FLASH_BC 64
typedef struct {
    float *p;
    size_t bs, hs;
    int ld;
    size_t tile;
} hy_flash_view;

/* One attention problem: n_batch sequences, H query heads and Hkv kv heads of size hd; Tq queries
 * and Tk keys per sequence, query i sitting at key position Tk - Tq + i (causal: it sees keys
 * 0 .. Tk-Tq+i). Query head h uses kv head h / (H / Hkv). Scores are scale * q·k.
 *   q, o, dout, dq:  rows = query index, cols = hd        (view per query head)
 *   k, v, dk, dv:    rows = key index,   cols = hd        (view per kv head)
 *   kt, vt:          rows = hd,          cols = key index (K and V transposed); either may be
 *                    empty (p NULL) when Tk <= HY_FLASH_BC and not bf16: each task then transposes
 *                    the one key tile it reads itself (hy_flash_forward then takes the query tiles
 *                    whatever Tq; a call that cannot do so fails);
 *   lse, delta:      (n_batch, H, Tq) contiguous. */
typedef struct {
    int n_batch, H, Hkv, hd, Tq, Tk;
    float scale;
    bool bf16;   /* hy_flash_tiled and hy_flash_backward: tile products on bf16 inputs (f32 accumulation) */
    hy_flash_view q, k, kt, v, vt, o, dout, dq, dk, dv;
    float *lse;
} hy_flash_args;

/* Forward: o = softmax(scale q kᵀ, causal) v, and lse (if non-NULL) = per-row log-sum-exp of the
 * scaled scores. Uses q, kt (or k, when kt is empty), v; writes o, lse. hy_flash_forward takes
 * hy_flash_decode when Tq <= HY_FLASH_DECODE_TQ and kt is given, else hy_flash_tiled; the two agree
 * within float rounding.
 *   hy_flash_tiled:  parallel over (batch, head, query tile of 64 rows).
 *   hy_flash_decode: for few queries: parallel over (batch, chunk of the key range), each task
 *                    reading its keys once for every head and keeping a partial softmax per query
 *                    row; the partials are then combined (split-key, "flash-decoding"). Its
 *                    chunking depends only on the shape, so the result does not depend on the
 *                    thread count. */
#define HY_FLASH_DECODE_TQ 16
int hy_flash_forward(const hy_flash_args *a);
int hy_flash_tiled(const hy_flash_args *a);
int hy_flash_decode(const hy_flash_args *a);
/* Backward: from q, k, kt, v, vt (kt, vt empty: from k, v), o, dout and the forward's lse,
 * OVERWRITES dq, dk, dv (the gradients with respect to q, k, v of the scores/softmax/product, scale
 * included). Deterministic for a given thread count: dk/dv are owned by key-tile tasks, dq by
 * (batch, kv head) tasks or summed in a fixed order from 2·threads slot buffers, each filled by a
 * fixed sequence of tasks. */
int hy_flash_backward(const hy_flash_args *a);
/* Whether hy_flash_backward with `threads` threads runs one task per (batch, kv head), each owning
 * its dq rows (true: n_batch·Hkv >= 4·threads), or pairs of key tiles dealt to 2·threads slots
 * with private dQ copies summed at the end (few sequences and heads). Both give the same result
 * within float rounding. */
bool hy_flash_backward_by_group(int n_batch, int Hkv, int threads);
/* Floats the kernels allocate and free inside one call with `threads` threads, for n_batch
 * sequences of T tokens (Tq = Tk = T), H query heads of size hd, Hkv kv heads: the forward's
 * per-thread tiles (with T <= HY_FLASH_DECODE_TQ, hy_flash_decode's per-thread scratch and the
 * tasks' partial results), or (backward) D, the 2·threads slot copies of dQ (unless the backward
 * goes by group) and the per-thread tiles. */
double hy_flash_scratch_floats(int n_batch, int H, int Hkv, int T, int hd, int threads, bool backward);

#endif

/* What the two halves of the RWKV-7 state recurrence share (layers/rwkv7/wkv.c, the forward, and
 * layers/rwkv7/wkv_backward.c): offsets, prefetches, streamed stores. Internal to those two files. */
#ifndef HY_LAYERS_RWKV7_WKV_COMMON_H
#define HY_LAYERS_RWKV7_WKV_COMMON_H
#include "core/simd.h"
#include "layers/rwkv7/rwkv7.h"
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Offsets of (batch bi, head h): vectors at base + t·C, checkpoint c at ck0 + c·N². */
#define WKV_OFFSETS                                                                                    \
    const int T = in->T, H = in->H, nch = hy_wkv7_nchunks(T);                                          \
    const size_t C = (size_t)H * N, base = (size_t)bi * T * C + (size_t)h * N, NN = (size_t)N * N,      \
                 ck0 = ((size_t)bi * H + h) * nch * NN;                                                  \
    (void)ck0

/* How many steps ahead the kernels prefetch their input vectors: the rows of one step are C floats
 * apart, so the hardware's stream prefetcher does not see them coming (4 cache lines per vector, then
 * a jump of C floats); one step of one head is a few thousand cycles, well over a DRAM latency. */
#define HY_WKV7_PF 2

/* Outputs of at least HY_WKV7_STREAM_BYTES per array are written with non-temporal stores: they
 * do not stay in the caches anyway, and such stores skip reading each line before writing it
 * (measured on the bench line, 16 heads of 64 at T 4096: forward 13.6 → 12.0 ms with y streamed,
 * backward 35.4 → 29.6 ms with the six gradients streamed). sq is re-read by the next step and
 * keeps plain stores. */
static inline bool wkv_stream(const hy_wkv7_in *in) {
    return (size_t)in->B * in->T * in->H * in->N * sizeof(float) >= HY_WKV7_STREAM_BYTES;
}
/* Stores x at p: non-temporally when nt (and p is aligned to a whole vector: core/simd.h's vw_stream). */
static inline void vw_put(float *p, vw x, bool nt) {
    if (nt) vw_stream(p, x);
    else vw_store(p, x);
}

/* Holds the vector x in a register from here on: an empty asm that may have changed it. Without it
 * gcc folds every use of a loaded state row into an FMA's memory operand and loads the same vector
 * again for each of its three or four FMAs, which with the rows' stores keeps the load ports as
 * busy as the FMA pipes (measured on the backward alone, one thread, its states in L2: 7-10% of
 * its time). */
#define WKV_IN_REGISTER(x) __asm__("" : "+v"(x))

/* Vectors of HY_VW floats per value block: up to 4 (as many registers as the passes can keep). */
#define WKV_NB(n) ((n) / HY_VW >= 4 ? 4 : (n) / HY_VW)

/* Offset of (batch, head) pair bh (= batch·H + head) at step 0. */
static inline size_t wkv_base(const hy_wkv7_in *in, int bh) {
    return (size_t)(bh / in->H) * in->T * in->H * in->N + (size_t)(bh % in->H) * in->N;
}

/* Prefetches the N floats at offset o of each input vector (and of extra, when not NULL). */
static inline void prefetch_step(const hy_wkv7_in *in, const float *extra, size_t o, int N) {
    for (int i = 0; i < N; i += 16) {
        __builtin_prefetch(in->r + o + i), __builtin_prefetch(in->w + o + i);
        __builtin_prefetch(in->k + o + i), __builtin_prefetch(in->v + o + i);
        __builtin_prefetch(in->q + o + i), __builtin_prefetch(in->b + o + i);
        if (extra) __builtin_prefetch(extra + o + i);
    }
}

#endif

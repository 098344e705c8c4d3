/* The RWKV-7 state recurrence alone (layers/rwkv7/wkv.c): forward and chunked backward of 16 heads
 * of 64 over T tokens, with the throughput as a ratio to the limit that bounds it. Per token and
 * head the forward does 9·N² flops on an N×N state that stays in L1, and streams 8 vectors of N
 * floats (r, w, k, v, kk, kk·a in; y, sq out): at N = 64 that is 18 flops per streamed byte, far
 * above this machine's GEMM-rate / bandwidth ratio, so the bound is the FMA rate (the best f32 GEMM).
 * The arrays sit at the page offsets the rwkv7 block gives them (rwkv7.h's HY_WKV7_SLOT_*), dy in
 * its own array as in the block, so that the line times the recurrence as the block runs it. */
#include "bench/bench.h"
#include "core/mem.h"
#include "core/timer.h"
#include "layers/rwkv7/rwkv7.h"
#include <math.h>
#include <stdio.h>

void hy_bench_wkv7_line(const hy_machine_limits *m, int quick) {
    int B = 1, H = 16, N = 64, T = quick ? 1024 : 4096;
    size_t n = (size_t)B * T * H * N;
    /* the arrays at the block's page offsets (rwkv7.h's HY_WKV7_SLOT_*), in one workspace */
    float *v[HY_WKV7_SLOTS], *ck = hy_malloc((size_t)B * H * hy_wkv7_nchunks(T) * N * N * 4);
    hy_buf arrays = {0};
    if (!ck || !hy_buf_grab_skewed(&arrays, n, HY_WKV7_SLOTS, 0, v)) {
        hy_free(ck);
        return;
    }
    float *r = v[HY_WKV7_SLOT_R], *w = v[HY_WKV7_SLOT_W], *k = v[HY_WKV7_SLOT_K], *vv = v[HY_WKV7_SLOT_V],
          *q = v[HY_WKV7_SLOT_Q], *b = v[HY_WKV7_SLOT_B], *dy = v[HY_WKV7_SLOT_DY];
    for (size_t i = 0; i < n; i++) {
        r[i] = sinf(0.37f * i), k[i] = cosf(0.11f * i), vv[i] = sinf(0.07f * i);
        w[i] = 0.9f + 0.05f * sinf(0.03f * i), q[i] = 0.125f * cosf(0.19f * i), b[i] = 0.5f * q[i];
        dy[i] = r[i];
    }
    hy_wkv7_in in = {B, T, H, N, r, w, k, vv, q, b};
    double fwd = INFINITY, bwd = INFINITY;
    hy_buf work = {0};   /* the recurrence's workspace, kept across the calls as the block keeps it */
    for (int i = 0; i < 5; i++) {   /* the best of 5: the VM is shared, and the first calls fault pages in */
        double t0 = hy_now();
        hy_wkv7_forward(&in, NULL, v[HY_WKV7_SLOT_Y], v[HY_WKV7_SLOT_SQ], ck, &work);
        fwd = fmin(fwd, hy_now() - t0);
    }
    for (int i = 0; i < 5; i++) {
        double t0 = hy_now();
        hy_wkv7_backward(&in, v[HY_WKV7_SLOT_SQ], ck, dy, v[HY_WKV7_SLOT_DR], v[HY_WKV7_SLOT_DW], v[HY_WKV7_SLOT_DK],
                         v[HY_WKV7_SLOT_DV], v[HY_WKV7_SLOT_DQ], v[HY_WKV7_SLOT_DB], &work);
        bwd = fmin(bwd, hy_now() - t0);
    }
    double flop = 9.0 * N * N * H * (double)T * B, bytes = 8.0 * n * 4;
    double gf = flop / fwd / 1e9, gbs = bytes / fwd / 1e9;
    const char *bound = flop / (m->best_f32 * 1e9) > bytes / (m->copy_gbs * 1e9) ? "FMA rate (best f32 GEMM)" : "memory";
    printf("wkv7 state update (%d heads of %d, T %d, state in L1): fwd %.2f ms = %.1f GFLOP/s = %.3f x best f32 GEMM "
           "(%.1f GB/s streamed = %.3f x memory copy); bwd %.2f ms = %.2f x fwd; bound: %s\n",
           H, N, T, fwd * 1e3, gf, gf / m->best_f32, gbs, gbs / m->copy_gbs, bwd * 1e3, bwd / fwd, bound);
    hy_buf_free(&arrays);
    hy_free(ck);
    hy_buf_free(&work);
}

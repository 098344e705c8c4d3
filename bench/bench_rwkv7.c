/* The RWKV-7 state recurrence alone (layers/rwkv7/wkv.c): forward and chunked backward of 16 heads
 * of 64 over T tokens, with the throughput as a ratio to the limit that bounds it. Per token and
 * head the forward does 9·N² flops on an N×N state that stays in L1, and streams 8 vectors of N
 * floats (r, w, k, v, kk, kk·a in; y, sq out): at N = 64 that is 18 flops per streamed byte, far
 * above this machine's GEMM-rate / bandwidth ratio, so the bound is the FMA rate (the best f32 GEMM). */
#include "bench/bench.h"
#include "core/mem.h"
#include "core/timer.h"
#include "layers/rwkv7/rwkv7.h"
#include <math.h>
#include <stdio.h>

void hy_bench_wkv7_line(const hy_machine_limits *m, int quick) {
    int B = 1, H = 16, N = 64, T = quick ? 1024 : 4096;
    size_t n = (size_t)B * T * H * N;
    float *v[14], *ck = hy_malloc((size_t)B * H * hy_wkv7_nchunks(T) * N * N * 4);
    for (int i = 0; i < 14; i++) v[i] = hy_malloc(n * 4);
    if (!ck) return;
    for (int i = 0; i < 14; i++)
        if (!v[i]) return;
    for (size_t i = 0; i < n; i++) {
        v[0][i] = sinf(0.37f * i), v[2][i] = cosf(0.11f * i), v[3][i] = sinf(0.07f * i);
        v[1][i] = 0.9f + 0.05f * sinf(0.03f * i), v[4][i] = 0.125f * cosf(0.19f * i), v[5][i] = 0.5f * v[4][i];
    }
    hy_wkv7_in in = {B, T, H, N, v[0], v[1], v[2], v[3], v[4], v[5]};
    double fwd = INFINITY, bwd = INFINITY;
    hy_buf work = {0};   /* the recurrence's workspace, kept across the calls as the block keeps it */
    for (int r = 0; r < 5; r++) {   /* the best of 5: the VM is shared, and the first calls fault pages in */
        double t0 = hy_now();
        hy_wkv7_forward(&in, NULL, v[6], v[7], ck, &work);
        fwd = fmin(fwd, hy_now() - t0);
    }
    for (int r = 0; r < 5; r++) {
        double t0 = hy_now();
        hy_wkv7_backward(&in, v[7], ck, v[0], v[8], v[9], v[10], v[11], v[12], v[13], &work);
        bwd = fmin(bwd, hy_now() - t0);
    }
    double flop = 9.0 * N * N * H * (double)T * B, bytes = 8.0 * n * 4;
    double gf = flop / fwd / 1e9, gbs = bytes / fwd / 1e9;
    const char *bound = flop / (m->best_f32 * 1e9) > bytes / (m->copy_gbs * 1e9) ? "FMA rate (best f32 GEMM)" : "memory";
    printf("wkv7 state update (%d heads of %d, T %d, state in L1): fwd %.2f ms = %.1f GFLOP/s = %.3f x best f32 GEMM "
           "(%.1f GB/s streamed = %.3f x memory copy); bwd %.2f ms = %.2f x fwd; bound: %s\n",
           H, N, T, fwd * 1e3, gf, gf / m->best_f32, gbs, gbs / m->copy_gbs, bwd * 1e3, bwd / fwd, bound);
    for (int i = 0; i < 14; i++) hy_free(v[i]);
    hy_free(ck);
    hy_buf_free(&work);
}

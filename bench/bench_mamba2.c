/* The Mamba-2 SSD core alone (layers/mamba2/ssd.c): forward and backward of 8 heads of 64 with a
 * state of 64 (one group) over T tokens in the block's chunks, its rate in the chunked form's useful
 * FLOPs (hy_ssd_flop: the matrix products of the chunked form) as a ratio to the best f32 GEMM rate
 * measured in the same run, and the backward/forward time ratio. */
#include "bench/bench.h"
#include "core/mem.h"
#include "core/timer.h"
#include "layers/mamba2/mamba2.h"
#include "layers/mamba2/ssd.h"
#include <math.h>
#include <stdio.h>

void hy_bench_ssd_line(const hy_machine_limits *m, int quick) {
    const int B = 1, H = 8, P = 64, N = 64, G = 1, T = quick ? 1024 : 4096, Q = HY_MAMBA2_CHUNK;
    const size_t rows = (size_t)B * T, nx = rows * H * P, nbc = rows * 2 * G * N;
    float *x = hy_malloc(nx * 4), *dt = hy_malloc(rows * H * 4), *bc = hy_malloc(nbc * 4), *A = hy_malloc(H * 4),
          *y = hy_malloc(nx * 4), *dy = hy_malloc(nx * 4), *dx = hy_malloc(nx * 4), *ddt = hy_malloc(rows * H * 4),
          *dbc = hy_malloc(nbc * 4), *dA = hy_calloc(H * 4), *st = hy_malloc(hy_ssd_state_floats(B, T, H, P, N, Q) * 4);
    if (!x || !dt || !bc || !A || !y || !dy || !dx || !ddt || !dbc || !dA || !st) return;
    for (size_t i = 0; i < nx; i++) x[i] = sinf(0.37f * i), dy[i] = cosf(0.11f * i);
    for (size_t i = 0; i < rows * H; i++) dt[i] = 0.01f + 0.05f * (1 + sinf(0.13f * i));
    for (size_t i = 0; i < nbc; i++) bc[i] = 0.125f * cosf(0.7f * i);
    for (int h = 0; h < H; h++) A[h] = -(float)(h + 1);
    hy_ssd_args a = {.B = B, .T = T, .H = H, .P = P, .N = N, .G = G, .x = x, .ldx = H * P, .dt = dt, .lddt = H,
                     .Bm = bc, .Cm = bc + G * N, .ldbc = 2 * G * N, .A = A, .chunk = Q, .states = st};
    hy_buf wf = {0}, wb = {0};
    double fwd = INFINITY, bwd = INFINITY;
    for (int r = 0; r < 7; r++) {   /* the best of 7: the VM is shared, and the first calls fault pages in */
        double t0 = hy_now();
        hy_ssd_forward(&a, y, H * P, &wf);
        fwd = fmin(fwd, hy_now() - t0);
    }
    for (int r = 0; r < 7; r++) {
        double t0 = hy_now();
        hy_ssd_backward(&a, dy, H * P, dx, H * P, ddt, H, dbc, dbc + G * N, 2 * G * N, dA, NULL, &wb);
        bwd = fmin(bwd, hy_now() - t0);
    }
    double gf = hy_ssd_flop(T, H, P, N, G, Q) * B / fwd / 1e9;
    printf("mamba2 SSD core (H %d, P %d, N %d, G %d, T %d, chunk %d): fwd %.2f ms = %.1f GFLOP/s of the chunked form "
           "= %.3f x best f32 GEMM (%s %.1f); bwd %.2f ms = %.2f x fwd\n",
           H, P, N, G, T, Q, fwd * 1e3, gf, gf / m->best_f32, m->onednn_f32 > m->openblas_f32 ? "oneDNN" : "OpenBLAS",
           m->best_f32, bwd * 1e3, bwd / fwd);
    hy_buf_free(&wf), hy_buf_free(&wb);
    hy_free(x), hy_free(dt), hy_free(bc), hy_free(A), hy_free(y), hy_free(dy), hy_free(dx), hy_free(ddt);
    hy_free(dbc), hy_free(dA), hy_free(st);
}

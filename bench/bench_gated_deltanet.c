/* The gated delta rule alone (layers/gated_deltanet/delta.c): the chunked forward (keeping what the
 * backward needs, as training does) and the backward of 4 heads with dk 64, dv 128 over T tokens,
 * at the block's chunk length and at half and twice it. The rate is in useful FLOPs of the chunked
 * form (hy_gdn_flop: the triangular products counted by their nonzero halves) as a ratio to the best
 * f32 GEMM rate measured in the same run; each time is the best of several repeats (shared machine). */
#include "bench/bench.h"
#include "core/mem.h"
#include "core/timer.h"
#include "layers/gated_deltanet/delta.h"
#include <math.h>
#include <stdio.h>

/* Best forward and backward seconds of `reps` repeats at chunk length L; 0 on success. */
static int time_chunk(hy_gdn_in in, int L, float *o, const float *dout, float *grads[5], hy_buf *ws, int reps,
                      double *fwd, double *bwd) {
    in.chunk = L;
    const int nck = hy_gdn_nckpt(in.T, L), heads = in.B * in.HV;
    float *u = hy_malloc((size_t)in.B * in.T * in.HV * in.dv * 4), *ck = hy_malloc((size_t)heads * nck * in.dv * in.dk * 4);
    int rc = u && ck ? 0 : -1;
    hy_gdn_keep keep = {u, ck};
    *fwd = *bwd = INFINITY;
    for (int r = 0; rc == 0 && r < reps; r++) {
        double t0 = hy_now();
        rc = hy_gdn_forward(&in, NULL, o, in.HV * in.dv, &keep, ws);
        *fwd = fmin(*fwd, hy_now() - t0);
    }
    for (int r = 0; rc == 0 && r < reps; r++) {
        double t0 = hy_now();
        rc = hy_gdn_backward(&in, &keep, dout, in.HV * in.dv, grads[0], grads[1], grads[2], grads[3], grads[4], ws);
        *bwd = fmin(*bwd, hy_now() - t0);
    }
    hy_free(u), hy_free(ck);
    return rc;
}

void hy_bench_gdn_line(const hy_machine_limits *m, int quick) {
    const double best_gemm_gflops = m->best_f32;
    const int B = 1, H = 4, dk = 64, dv = 128, T = quick ? 1024 : 4096, reps = quick ? 3 : 7;
    const size_t rows = (size_t)B * T, nqk = rows * H * dk, nv = rows * H * dv, nb = rows * H;
    float *q = hy_malloc(nqk * 4), *k = hy_malloc(nqk * 4), *v = hy_malloc(nv * 4), *beta = hy_malloc(nb * 4),
          *g = hy_malloc(nb * 4), *o = hy_malloc(nv * 4), *dout = hy_malloc(nv * 4);
    float *grads[5] = {hy_malloc(nqk * 4), hy_malloc(nqk * 4), hy_malloc(nv * 4), hy_malloc(nb * 4), hy_malloc(nb * 4)};
    bool ok = q && k && v && beta && g && o && dout;
    for (int i = 0; i < 5; i++) ok = ok && grads[i];
    if (ok) {
        for (size_t r = 0; r < rows * H; r++) {   /* unit q (× dk^-0.5) and k rows, as the block gives them */
            for (int x = 0; x < dk; x++) q[r * dk + x] = sinf(0.37f * (r * dk + x)), k[r * dk + x] = cosf(0.11f * (r * dk + x));
            float sq = 0, sk = 0;
            for (int x = 0; x < dk; x++) sq += q[r * dk + x] * q[r * dk + x], sk += k[r * dk + x] * k[r * dk + x];
            for (int x = 0; x < dk; x++) q[r * dk + x] /= sqrtf(sq * dk), k[r * dk + x] /= sqrtf(sk);
            beta[r] = 0.5f + 0.3f * sinf(0.05f * r), g[r] = -0.05f - 0.04f * cosf(0.02f * r);
        }
        for (size_t i = 0; i < nv; i++) v[i] = sinf(0.07f * i), dout[i] = cosf(0.13f * i);
        hy_gdn_in in = {B, T, H, H, dk, dv, HY_GDN_CHUNK, q, k, v, beta, g, H * dk, H * dv, H};
        hy_buf ws = {0};
        const int Ls[3] = {HY_GDN_CHUNK / 2, HY_GDN_CHUNK, HY_GDN_CHUNK * 2};
        double fwd[3], bwd[3];
        for (int c = 0; c < 3 && ok; c++) ok = time_chunk(in, Ls[c], o, dout, grads, &ws, reps, &fwd[c], &bwd[c]) == 0;
        hy_buf_free(&ws);
        if (ok) {
            double flop = H * hy_gdn_flop(T, dk, dv, HY_GDN_CHUNK), gf = flop / fwd[1] / 1e9;
            printf("gated-delta core (%d heads, dk %d, dv %d, T %d, chunk %d): fwd %.2f ms = %.1f GFLOP/s useful = %.3f x "
                   "best f32 GEMM (%.1f); bwd %.2f ms = %.2f x fwd; chunk %d: fwd %.2f bwd %.2f ms, chunk %d: fwd %.2f "
                   "bwd %.2f ms (best of %d)\n",
                   H, dk, dv, T, HY_GDN_CHUNK, fwd[1] * 1e3, gf, gf / best_gemm_gflops, best_gemm_gflops, bwd[1] * 1e3,
                   bwd[1] / fwd[1], Ls[0], fwd[0] * 1e3, bwd[0] * 1e3, Ls[2], fwd[2] * 1e3, bwd[2] * 1e3, reps);
        }
    }
    if (!ok) printf("gated-delta core: out of memory\n");
    hy_free(q), hy_free(k), hy_free(v), hy_free(beta), hy_free(g), hy_free(o), hy_free(dout);
    for (int i = 0; i < 5; i++) hy_free(grads[i]);
}

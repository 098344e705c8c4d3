#include "models/ops.h"
#include "core/error.h"
#include "core/mem.h"
#include "core/simd.h"
#include "core/vmath.h"
#include <float.h>
#include <math.h>
#include <omp.h>
#include <string.h>

void hy_rmsnorm_forward_bf16(float *y, hy_bf16 *yh, float *rstd, const float *x, const float *w, size_t rows, int d) {
    #pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * d;
        float *yr = y + r * d;
        float ss = hy_dotf(xr, xr, d);
        float s = 1.0f / sqrtf(ss / d + HY_RMSNORM_EPS);
        rstd[r] = s;
        for (int j = 0; j < d; j++) yr[j] = w[j] * xr[j] * s;
        if (yh) hy_bf16_from_f32(yh + r * d, yr, (size_t)d);   /* the row is in L1 */
    }
}

void hy_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, size_t rows, int d) {
    hy_rmsnorm_forward_bf16(y, NULL, rstd, x, w, rows, d);
}

void hy_add_rmsnorm_forward_bf16(float *sum, float *y, hy_bf16 *yh, float *rstd, const float *x, const float *r,
                                 const float *w, size_t rows, int d) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < rows; i++) {
        const float *xr = x + i * d, *rr = r + i * d;
        float *sr = sum + i * d, *yr = y + i * d;
        for (int j = 0; j < d; j++) sr[j] = xr[j] + rr[j];
        float ss = hy_dotf(sr, sr, d);
        float s = 1.0f / sqrtf(ss / d + HY_RMSNORM_EPS);
        rstd[i] = s;
        for (int j = 0; j < d; j++) yr[j] = w[j] * sr[j] * s;
        if (yh) hy_bf16_from_f32(yh + i * d, yr, (size_t)d);
    }
}

void hy_add_rmsnorm_forward(float *sum, float *y, float *rstd, const float *x, const float *r, const float *w,
                            size_t rows, int d) {
    hy_add_rmsnorm_forward_bf16(sum, y, NULL, rstd, x, r, w, rows, d);
}

int hy_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd,
                        size_t rows, int d, int accumulate_dx) {
    int nt = omp_get_max_threads();
    float *partial = hy_calloc((size_t)nt * d * sizeof(float));
    if (!partial) return HY_ERR_NOMEM;
    #pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), n = omp_get_num_threads();
        size_t lo = rows * t / n, hi = rows * (t + 1) / n;
        float *pw = partial + (size_t)t * d;
        for (size_t r = lo; r < hi; r++) {
            const float *xr = x + r * d, *dyr = dy + r * d;
            float *dxr = dx + r * d, s = rstd[r];
            vw acc = {0};   /* Σ w·dy·x in vw lanes */
            for (int j = 0; j < d; j += HY_VW) {
                vw_mask m = vw_mask_first(d - j);
                vw wd = vw_load_masked(w + j, m) * vw_load_masked(dyr + j, m);
                acc = vw_fma(wd, vw_load_masked(xr + j, m), acc);
            }
            float dot = vw_hsum(acc);
            for (int j = 0; j < d; j++) pw[j] += dyr[j] * xr[j] * s;
            float c = s * s * s * dot / d;
            if (accumulate_dx)
                for (int j = 0; j < d; j++) dxr[j] += s * w[j] * dyr[j] - c * xr[j];
            else
                for (int j = 0; j < d; j++) dxr[j] = s * w[j] * dyr[j] - c * xr[j];
        }
    }
    for (int t = 0; t < nt; t++)
        for (int j = 0; j < d; j++) dw[j] += partial[(size_t)t * d + j];
    hy_free(partial);
    return 0;
}

void hy_embedding_forward(float *h, const float *table, const int32_t *tokens, size_t rows, int d) {
    #pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) memcpy(h + r * d, table + (size_t)tokens[r] * d, (size_t)d * sizeof(float));
}

/* Serial scatter-add: rows sharing a token must add in a fixed order. */
void hy_embedding_backward(float *dtable, const float *dh, const int32_t *tokens, size_t rows, int d) {
    for (size_t r = 0; r < rows; r++) {
        float *dst = dtable + (size_t)tokens[r] * d;
        const float *src = dh + r * d;
        for (int j = 0; j < d; j++) dst[j] += src[j];
    }
}

/* log Σ exp(row) with the max subtracted: max and sum in vw lanes (the tail masked), the log
 * in double. */
static double row_logsumexp(const float *z, int V) {
    const vw lo = vw_splat(-FLT_MAX);
    vw vm = lo, acc = {0};
    for (int v = 0; v < V; v += HY_VW) vm = vw_max(vm, vw_select(vw_mask_first(V - v), vw_load_masked(z + v, vw_mask_first(V - v)), lo));
    float m = vw_hmax(vm);
    const vw neg_m = vw_splat(-m);
    for (int v = 0; v < V; v += HY_VW) {
        vw_mask k = vw_mask_first(V - v);
        acc += vw_keep(hy_expf_neg_vw(vw_load_masked(z + v, k) + neg_m), k);
    }
    return m + log((double)vw_hsum(acc));
}

double hy_cross_entropy_forward(const float *logits, const int32_t *targets, size_t rows, int V, long *n_targets) {
    enum { MAX_THREADS = 256 };
    double partial[MAX_THREADS] = {0};
    long count[MAX_THREADS] = {0};
    int nt = omp_get_max_threads() < MAX_THREADS ? omp_get_max_threads() : MAX_THREADS;
    #pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), n = omp_get_num_threads();
        for (size_t r = rows * t / n; r < rows * (t + 1) / n; r++) {
            if (targets[r] < 0) continue;
            const float *z = logits + r * V;
            partial[t] += row_logsumexp(z, V) - z[targets[r]];
            count[t]++;
        }
    }
    double total = 0;
    long n = 0;
    for (int t = 0; t < nt; t++) total += partial[t], n += count[t];
    *n_targets = n;
    return n ? total / n : 0.0;
}

void hy_cross_entropy_backward(float *dlogits, const float *logits, const int32_t *targets, size_t rows, int V,
                               float scale) {
    #pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) {
        float *dz = dlogits + r * V;
        if (targets[r] < 0) {
            memset(dz, 0, (size_t)V * sizeof(float));
            continue;
        }
        const float *z = logits + r * V;
        float lse = (float)row_logsumexp(z, V);
        for (int v = 0; v < V; v++) dz[v] = scale * hy_expf(z[v] - lse);
        dz[targets[r]] -= scale;
    }
}

/* The one matrix-product entry point of the project. Every GEMM goes through hy_gemm(), which
 * dispatches to OpenBLAS or to oneDNN (f32, or bf16 inputs with f32 accumulation), from any
 * thread, also from inside OpenMP parallel regions.
 * Row-major: C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C, where op(X) = X or X^T.
 * lda/ldb/ldc are row strides of the matrices as stored (before op). */
#ifndef HY_CORE_GEMM_H
#define HY_CORE_GEMM_H
#include "core/bf16.h"
#include <stdbool.h>
#include <stddef.h>

typedef enum { HY_GEMM_AUTO = 0, HY_GEMM_OPENBLAS, HY_GEMM_ONEDNN } hy_gemm_backend;
typedef enum { HY_PREC_F32 = 0, HY_PREC_BF16 } hy_precision;

void hy_gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc);

/* hy_gemm for a kernel that wrote an operand in bf16 itself, in the pass that computed it (no
 * separate conversion pass): Ah / Bh are A / B as hy_bf16 values in the same layout and row stride
 * (NULL: not given). Under bf16 precision the product reads Ah / Bh where given (A / B may then be
 * NULL: the f32 form need not exist); under f32 it is hy_gemm on A and B, which must be given. */
void hy_gemm_bf16_given(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
                        const hy_bf16 *Ah, int lda, const float *B, const hy_bf16 *Bh, int ldb, float beta,
                        float *C, int ldc);

/* Process-wide settings (set once at start-up, before any threads are busy). */
void hy_gemm_set_backend(hy_gemm_backend b);
hy_gemm_backend hy_gemm_get_backend(void);
void hy_gemm_set_precision(hy_precision p);
hy_precision hy_gemm_get_precision(void);
const char *hy_gemm_backend_name(hy_gemm_backend b);
/* Which backend AUTO picks for this shape (the rule is in gemm.c, derived from bench/). */
hy_gemm_backend hy_gemm_auto_choice(int M, int N, int K);
/* Frees the cached oneDNN primitives and every thread's buffers (optional, at exit, with no
 * product running; keeps leak checkers quiet). */
void hy_gemm_shutdown(void);

/* Under bf16 precision, an operand that lies inside [base, base + n) is read from copy + (its
 * offset) instead of being converted on every call: the owner (a model, for its parameter arena)
 * registers the copy and keeps it equal to bf16(base[i]) while products may read it. copy NULL or
 * n 0 removes base's registration. Call it while no product runs. Returns 0, or HY_ERR when more
 * than 64 copies would be registered at once (the products then convert on every call). */
int hy_gemm_bf16_shadow(const float *base, size_t n, const hy_bf16 *copy);

/* Under bf16 precision, the n floats from X are an operand of several products in a row (a layer's
 * input, read by its q, k and v projections or by their weight gradients) and do not change until
 * hy_gemm_bf16_release(X): they are converted once, into a buffer kept for the purpose, and the
 * products read the copy (as a registered copy, above). Under f32, or with HOLDS buffers already
 * held, it does nothing and the products convert as usual. Call both while no product runs. Returns
 * 0, or HY_ERR_NOMEM when the buffer cannot grow (nothing held then). */
#define HY_GEMM_HOLDS 4
int hy_gemm_bf16_hold(const float *X, size_t n);
void hy_gemm_bf16_release(const float *X);

/* What hy_gemm did since the last reset (process-wide, all threads): for tests and for measuring
 * the cost of bf16 conversions. */
typedef struct {
    long products;          /* products with M, N > 0 */
    long bf16;              /* of them, oneDNN with bf16 inputs */
    long f32;               /* in f32 (OpenBLAS, its sgemv, or oneDNN) */
    long in_parallel;       /* issued from inside an OpenMP parallel region */
    long bf16_fallbacks;    /* asked for bf16 but done in f32 (oneDNN refused; never expected) */
    long long converted;    /* operand values converted to bf16 on the call */
    long long shadowed;     /* operand values read from a registered bf16 copy */
    long long given;        /* operand values the caller gave in bf16 (hy_gemm_bf16_given,
                             * hy_linear_backward_bf16) */
    double convert_seconds; /* wall time spent converting (summed over threads) */
    double seconds;         /* wall time inside the products, conversions included (summed over
                             * threads) */
    double buffer_bytes;    /* held now by every thread's oneDNN scratchpad and conversion and
                             * packing buffers (not reset; outside hy_malloc's accounting) */
    long onednn_fallbacks;  /* f32 products meant for oneDNN (forced or auto) that ran in OpenBLAS
                             * because oneDNN could not make the primitive */
    long primitives_cached; /* oneDNN primitives in the cache now (not reset; at most 1024: past
                             * that a new shape evicts the least recently used one no thread holds) */
    long primitives_evicted; /* primitives evicted from the cache */
} hy_gemm_stats;
void hy_gemm_stats_get(hy_gemm_stats *s);
void hy_gemm_stats_reset(void);

/* Linear layers (PyTorch convention, W is (out, in)), for X of `rows` rows:
 *   forward:  Y[rows,out] = X W^T (+ bias)
 *   backward: dX[rows,in] (+)= dY W ; dW += dY^T X ; db += column sums of dY
 * dX is overwritten when accumulate_dx is false. Any of dX, dW, db may be NULL to skip it. */
void hy_linear_forward(float *Y, const float *X, const float *W, const float *bias, int rows, int in,
                       int out);
void hy_linear_backward(float *dX, float *dW, float *db, const float *dY, const float *X,
                        const float *W, int rows, int in, int out, bool accumulate_dx);
/* hy_linear_backward with dY and / or X also given in bf16 (dYh, Xh; NULL: not given), read by
 * the products as hy_gemm_bf16_given reads them (under bf16 dY or X may then be NULL; db needs
 * dY). */
void hy_linear_backward_bf16(float *dX, float *dW, float *db, const float *dY, const hy_bf16 *dYh,
                             const float *X, const hy_bf16 *Xh, const float *W, int rows, int in, int out,
                             bool accumulate_dx);

#endif

/* GEMM dispatch: OpenBLAS (cblas_sgemm) or oneDNN matmul primitives, created once per shape and
 * cached. bf16 precision converts both inputs to bf16 (round to nearest even) and accumulates in
 * f32 inside oneDNN. Calls made from inside an OpenMP parallel region run single-threaded on the
 * calling thread: f32 products that the rule picks oneDNN for use that thread's own primitives,
 * memory objects and stream (a thread-local cache), the rest OpenBLAS. */
#include "core/gemm.h"
#include "core/mem.h"
#include <cblas.h>
#include <dnnl.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static hy_gemm_backend backend_setting = HY_GEMM_AUTO;
static hy_precision precision_setting = HY_PREC_F32;

void hy_gemm_set_backend(hy_gemm_backend b) { backend_setting = b; }
hy_gemm_backend hy_gemm_get_backend(void) { return backend_setting; }
void hy_gemm_set_precision(hy_precision p) { precision_setting = p; }
hy_precision hy_gemm_get_precision(void) { return precision_setting; }

const char *hy_gemm_backend_name(hy_gemm_backend b) {
    return b == HY_GEMM_OPENBLAS ? "openblas" : b == HY_GEMM_ONEDNN ? "onednn" : "auto";
}

/* Measured on 2 Zen 4 cores (GFLOP/s, OpenBLAS vs oneDNN f32, C = A B^T): 2048^3 210 vs 221;
 * M=4096 tokens with K, N in 128..1024: 178-207 vs 204-231; 64^3: 85 vs 132; but for M <= 2
 * rows (streaming steps) OpenBLAS wins, e.g. M=1 N=K=256: 56 vs 21. Hence: oneDNN except for
 * matrix-vector-like products. `hybrid-exp bench --gemm` prints the table on any machine. */
hy_gemm_backend hy_gemm_auto_choice(int M, int N, int K) {
    if (M < 8 || 2.0 * M * N * K < 2e5) return HY_GEMM_OPENBLAS;
    return HY_GEMM_ONEDNN;
}

/* ---- oneDNN matmul cache ---- */
typedef struct {
    int used;
    int trans_a, trans_b, M, N, K, lda, ldb, ldc, bf16;
    float alpha, beta;
    dnnl_primitive_t prim;
    dnnl_memory_t mem_a, mem_b, mem_c;
} dnnl_entry;

#define CACHE_SIZE 1024
static dnnl_entry cache[CACHE_SIZE];
static dnnl_engine_t engine;
static dnnl_stream_t stream;
static int dnnl_ready = -1; /* -1 unknown, 0 unusable, 1 ready */

static int dnnl_init(void) {
    int ready;
    #pragma omp critical(hy_gemm_dnnl)
    {
        if (dnnl_ready < 0)
            dnnl_ready = dnnl_engine_create(&engine, dnnl_cpu, 0) == dnnl_success &&
                         dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) == dnnl_success;
        ready = dnnl_ready;
    }
    return ready;
}

/* The primitives of one thread for its calls from inside parallel regions (products of per-thread
 * blocks, e.g. chunked scans): a primitive's memory objects get the operands' addresses per call,
 * so threads cannot share them. Registered in `locals` so hy_gemm_shutdown can free every thread's. */
#define LOCAL_CACHE_SIZE 64
#define MAX_LOCALS 256
typedef struct {
    dnnl_entry cache[LOCAL_CACHE_SIZE];
    dnnl_stream_t stream;
} local_dnnl;
static _Thread_local local_dnnl *local_state;
static _Thread_local int local_generation;
static local_dnnl *locals[MAX_LOCALS];
static int n_locals, generation;   /* generation: +1 at each hy_gemm_shutdown, which frees them all */

/* This thread's local primitives, created on first use; NULL when unavailable. */
static local_dnnl *local_get(void) {
    if (local_state && local_generation == generation) return local_state;
    local_generation = generation;
    local_state = NULL;
    if (!dnnl_init()) return NULL;
    local_dnnl *l = NULL;
    #pragma omp critical(hy_gemm_dnnl)
    if (n_locals < MAX_LOCALS && (l = calloc(1, sizeof *l))) {   /* like oneDNN's own memory: not tracked */
        if (dnnl_stream_create(&l->stream, engine, dnnl_stream_default_flags) == dnnl_success) locals[n_locals++] = l;
        else free(l), l = NULL;
    }
    return local_state = l;
}

static void matrix_desc(dnnl_memory_desc_t *md, int rows, int cols, int ld, int trans, int bf16) {
    dnnl_dims_t dims = {rows, cols};
    dnnl_dims_t strides = {trans ? 1 : ld, trans ? ld : 1};
    dnnl_memory_desc_init_by_strides(md, 2, dims, bf16 ? dnnl_bf16 : dnnl_f32, strides);
}

static dnnl_entry *dnnl_lookup(dnnl_entry *cache, int cache_size, const dnnl_entry *key) {
    uint64_t h = 1469598103934665603ull;
    const int fields[] = {key->trans_a, key->trans_b, key->M, key->N, key->K,
                          key->lda,     key->ldb,     key->ldc, key->bf16};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) h = (h ^ (uint32_t)fields[i]) * 1099511628211ull;
    uint32_t ab[2];
    memcpy(&ab[0], &key->alpha, 4);
    memcpy(&ab[1], &key->beta, 4);
    h = ((h ^ ab[0]) * 1099511628211ull ^ ab[1]) * 1099511628211ull;
    for (int probe = 0; probe < cache_size; probe++) {
        dnnl_entry *e = &cache[(h + probe) % cache_size];
        if (!e->used) {
            *e = *key;
            dnnl_memory_desc_t a, b, c;
            matrix_desc(&a, key->M, key->K, key->lda, key->trans_a, key->bf16);
            matrix_desc(&b, key->K, key->N, key->ldb, key->trans_b, key->bf16);
            matrix_desc(&c, key->M, key->N, key->ldc, 0, 0);
            dnnl_matmul_desc_t desc;
            dnnl_primitive_attr_t attr;
            dnnl_post_ops_t post_ops;
            dnnl_primitive_desc_t pd;
            dnnl_primitive_attr_create(&attr);
            if (key->alpha != 1.0f) dnnl_primitive_attr_set_output_scales(attr, 1, 0, &key->alpha);
            dnnl_post_ops_create(&post_ops);
            if (key->beta != 0.0f) dnnl_post_ops_append_sum(post_ops, key->beta);
            dnnl_primitive_attr_set_post_ops(attr, post_ops);
            int ok = dnnl_matmul_desc_init(&desc, &a, &b, NULL, &c) == dnnl_success &&
                     dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL) == dnnl_success;
            dnnl_post_ops_destroy(post_ops);
            dnnl_primitive_attr_destroy(attr);
            if (!ok) {
                e->used = 0;
                return NULL;
            }
            dnnl_primitive_create(&e->prim, pd);
            dnnl_primitive_desc_destroy(pd);
            dnnl_memory_create(&e->mem_a, &a, engine, DNNL_MEMORY_NONE);
            dnnl_memory_create(&e->mem_b, &b, engine, DNNL_MEMORY_NONE);
            dnnl_memory_create(&e->mem_c, &c, engine, DNNL_MEMORY_NONE);
            return e;
        }
        if (e->trans_a == key->trans_a && e->trans_b == key->trans_b && e->M == key->M && e->N == key->N &&
            e->K == key->K && e->lda == key->lda && e->ldb == key->ldb && e->ldc == key->ldc &&
            e->bf16 == key->bf16 && e->alpha == key->alpha && e->beta == key->beta)
            return e;
    }
    return NULL;
}

/* f32 -> bf16 with round-to-nearest-even of a rows x cols strided matrix, kept with the same ld. */
static void to_bf16(uint16_t *dst, const float *src, int rows, int cols, int ld) {
    #pragma omp parallel for schedule(static) if ((size_t)rows * cols > 65536)
    for (int r = 0; r < rows; r++) {
        const float *s = src + (size_t)r * ld;
        uint16_t *d = dst + (size_t)r * ld;
        for (int c = 0; c < cols; c++) {
            uint32_t bits;
            memcpy(&bits, &s[c], 4);
            bits += 0x7fff + ((bits >> 16) & 1);
            d[c] = (uint16_t)(bits >> 16);
        }
    }
}

static uint16_t *bf16_scratch[2];
static size_t bf16_cap[2];

static uint16_t *bf16_copy(int slot, const float *src, int rows, int cols, int ld) {
    size_t n = (size_t)(rows - 1) * ld + cols;
    if (n > bf16_cap[slot]) {
        hy_free(bf16_scratch[slot]);
        bf16_scratch[slot] = hy_malloc(n * sizeof(uint16_t));
        bf16_cap[slot] = bf16_scratch[slot] ? n : 0;
        if (!bf16_scratch[slot]) return NULL;
    }
    to_bf16(bf16_scratch[slot], src, rows, cols, ld);
    return bf16_scratch[slot];
}

/* C = op(A) op(B) through a cached primitive: the shared cache and stream, or with local (inside a
 * parallel region, f32 only) the calling thread's. 0 when oneDNN cannot do it (the caller falls
 * back to OpenBLAS). */
static int gemm_onednn(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                       const float *B, int ldb, float beta, float *C, int ldc, int bf16, bool local) {
    if (!dnnl_init()) return 0;
    local_dnnl *l = local ? local_get() : NULL;
    if (local && (!l || bf16)) return 0;
    dnnl_entry key = {1, ta, tb, M, N, K, lda, ldb, ldc, bf16, alpha, beta, 0, 0, 0, 0};
    dnnl_entry *e = l ? dnnl_lookup(l->cache, LOCAL_CACHE_SIZE, &key) : dnnl_lookup(cache, CACHE_SIZE, &key);
    if (!e) return 0;
    dnnl_stream_t st = l ? l->stream : stream;
    const void *a = A, *b = B;
    if (bf16) {
        a = bf16_copy(0, A, ta ? K : M, ta ? M : K, lda);
        b = bf16_copy(1, B, tb ? N : K, tb ? K : N, ldb);
        if (!a || !b) return 0;
    }
    dnnl_memory_set_data_handle(e->mem_a, (void *)a);
    dnnl_memory_set_data_handle(e->mem_b, (void *)b);
    dnnl_memory_set_data_handle(e->mem_c, C);
    dnnl_exec_arg_t args[3] = {
        {DNNL_ARG_SRC, e->mem_a}, {DNNL_ARG_WEIGHTS, e->mem_b}, {DNNL_ARG_DST, e->mem_c}};
    if (dnnl_primitive_execute(e->prim, st, 3, args) != dnnl_success) return 0;
    dnnl_stream_wait(st);
    return 1;
}

void hy_gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
             int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
        return;
    }
    int bf16 = precision_setting == HY_PREC_BF16;
    /* A matrix-vector product (one row or one column: a streaming step) goes to sgemv: sgemm packs
     * the whole weight matrix on every call, 5-10x slower at M = 1 (measured on the project
     * machine: 1 x 704 x 256 sgemm 576 us, sgemv 123 us, loaded; idle ratios are similar). */
    if (!bf16 && backend_setting != HY_GEMM_ONEDNN && (M == 1 || N == 1)) {
        if (M == 1)   /* C[0, n] = alpha sum_k op(A)[0, k] op(B)[k, n] + beta C[0, n] */
            cblas_sgemv(CblasRowMajor, tb ? CblasNoTrans : CblasTrans, tb ? N : K, tb ? K : N, alpha, B, ldb, A,
                        ta ? lda : 1, beta, C, 1);
        else          /* C[m, 0] = alpha sum_k op(A)[m, k] op(B)[k, 0] + beta C[m, 0] */
            cblas_sgemv(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, ta ? K : M, ta ? M : K, alpha, A, lda, B,
                        tb ? 1 : ldb, beta, C, ldc);
        return;
    }
    hy_gemm_backend b = backend_setting == HY_GEMM_AUTO ? hy_gemm_auto_choice(M, N, K) : backend_setting;
    if (bf16) b = HY_GEMM_ONEDNN;
    if (b == HY_GEMM_ONEDNN && gemm_onednn(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bf16, omp_in_parallel()))
        return;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha,
                A, lda, B, ldb, beta, C, ldc);
}

/* Destroys the used entries of one cache. */
static void cache_clear(dnnl_entry *c, int n) {
    for (int i = 0; i < n; i++) {
        if (!c[i].used) continue;
        dnnl_primitive_destroy(c[i].prim);
        dnnl_memory_destroy(c[i].mem_a);
        dnnl_memory_destroy(c[i].mem_b);
        dnnl_memory_destroy(c[i].mem_c);
        c[i].used = 0;
    }
}

/* Frees the shared cache and every thread's local one (outside parallel regions; a thread that
 * calls hy_gemm later makes new ones: the generation tells it its pointer is stale). */
void hy_gemm_shutdown(void) {
    cache_clear(cache, CACHE_SIZE);
    for (int i = 0; i < n_locals; i++) {
        cache_clear(locals[i]->cache, LOCAL_CACHE_SIZE);
        dnnl_stream_destroy(locals[i]->stream);
        free(locals[i]);
    }
    n_locals = 0;
    generation++;
    for (int s = 0; s < 2; s++) {
        hy_free(bf16_scratch[s]);
        bf16_scratch[s] = NULL;
        bf16_cap[s] = 0;
    }
    if (dnnl_ready == 1) {
        dnnl_stream_destroy(stream);
        dnnl_engine_destroy(engine);
    }
    dnnl_ready = -1;
}

void hy_linear_forward(float *Y, const float *X, const float *W, const float *bias, int rows, int in, int out) {
    hy_gemm(false, true, rows, out, in, 1.0f, X, in, W, in, 0.0f, Y, out);
    if (bias) {
        #pragma omp parallel for schedule(static) if ((size_t)rows * out > 65536)
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < out; o++) Y[(size_t)r * out + o] += bias[o];
    }
}

void hy_linear_backward(float *dX, float *dW, float *db, const float *dY, const float *X, const float *W,
                        int rows, int in, int out, bool accumulate_dx) {
    if (dX) hy_gemm(false, false, rows, in, out, 1.0f, dY, out, W, in, accumulate_dx ? 1.0f : 0.0f, dX, in);
    if (dW) hy_gemm(true, false, out, in, rows, 1.0f, dY, out, X, in, 1.0f, dW, in);
    if (db) {
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < out; o++) db[o] += dY[(size_t)r * out + o];
    }
}

/* GEMM dispatch: OpenBLAS (cblas_sgemm) or oneDNN matmul primitives, created once per shape and
 * cached. bf16 precision gives oneDNN both inputs in bf16 (round to nearest even, core/bf16.c) and
 * it accumulates in f32. An operand inside a registered bf16 copy (a model's weights, converted
 * once per step) is read from the copy; any other operand is converted on the call.
 * Calls from inside an OpenMP parallel region take the same path: each thread has its own oneDNN
 * stream, scratchpad and conversion buffers, and the primitives such a call uses are created for
 * one thread (oneDNN runs sequentially inside a parallel region). */
#include "core/gemm.h"
#include "core/bf16.h"
#include "core/error.h"
#include "core/mem.h"
#include <cblas.h>
#include <math.h>
#include <dnnl.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* ---- counters ---- */
/* The per-thread buffers are outside hy_malloc's accounting (like oneDNN's own memory, they belong
 * to the process, not to a block or a model: a block's kept bytes must not depend on which thread
 * first ran a product); their bytes are counted here and reported in hy_gemm_stats. */
static atomic_llong buffer_bytes;

static atomic_long n_products, n_bf16, n_f32, n_in_parallel, n_bf16_fallbacks, n_onednn_fallbacks, n_evicted;
static void cache_counts(hy_gemm_stats *s);
static atomic_llong n_converted, n_shadowed, n_given, ns_converting, ns_products;

void hy_gemm_stats_get(hy_gemm_stats *s) {
    *s = (hy_gemm_stats){.products = atomic_load(&n_products),
                         .bf16 = atomic_load(&n_bf16),
                         .f32 = atomic_load(&n_f32),
                         .in_parallel = atomic_load(&n_in_parallel),
                         .bf16_fallbacks = atomic_load(&n_bf16_fallbacks),
                         .converted = atomic_load(&n_converted),
                         .shadowed = atomic_load(&n_shadowed),
                         .given = atomic_load(&n_given),
                         .convert_seconds = 1e-9 * (double)atomic_load(&ns_converting),
                         .seconds = 1e-9 * (double)atomic_load(&ns_products),
                         .buffer_bytes = (double)atomic_load(&buffer_bytes) + (double)hy_bf16_buffer_bytes()};
    cache_counts(s);
}

void hy_gemm_stats_reset(void) {
    atomic_store(&n_products, 0), atomic_store(&n_bf16, 0), atomic_store(&n_f32, 0);
    atomic_store(&n_in_parallel, 0), atomic_store(&n_bf16_fallbacks, 0);
    atomic_store(&n_converted, 0), atomic_store(&n_shadowed, 0), atomic_store(&n_given, 0);
    atomic_store(&ns_converting, 0);
    atomic_store(&ns_products, 0), atomic_store(&n_onednn_fallbacks, 0), atomic_store(&n_evicted, 0);
}

/* The clock of the time counters: wall time; a profile at one thread on a shared machine may build
 * with -DHY_STATS_CLOCK=CLOCK_THREAD_CPUTIME_ID to leave out the time another process holds the core. */
#ifndef HY_STATS_CLOCK
#define HY_STATS_CLOCK CLOCK_MONOTONIC
#endif
static long long now_ns(void) {
    struct timespec t;
    clock_gettime(HY_STATS_CLOCK, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* ---- bf16 copies of f32 ranges (a model's parameter arena) ---- */
#define MAX_SHADOWS 64
typedef struct {
    const float *base;
    size_t n;
    const hy_bf16 *copy;
} shadow;
static shadow shadows[MAX_SHADOWS];
static pthread_mutex_t shadow_lock = PTHREAD_MUTEX_INITIALIZER;

/* Registers (copy non-NULL, n > 0) or removes base's copy; -1 when no slot is free. */
static int shadow_set(const float *base, size_t n, const hy_bf16 *copy) {
    int rc = 0;
    pthread_mutex_lock(&shadow_lock);
    int slot = -1;
    for (int i = 0; i < MAX_SHADOWS; i++)
        if (shadows[i].base == base || (slot < 0 && !shadows[i].base)) slot = i;
    if (copy && n) {
        if (slot >= 0) shadows[slot] = (shadow){base, n, copy};
        else rc = -1;
    } else if (slot >= 0 && shadows[slot].base == base) {
        shadows[slot] = (shadow){0};
    }
    pthread_mutex_unlock(&shadow_lock);
    return rc;
}

int hy_gemm_bf16_shadow(const float *base, size_t n, const hy_bf16 *copy) {
    if (shadow_set(base, n, copy) < 0) return hy_fail("gemm: more than %d bf16 copies registered at once", MAX_SHADOWS);
    return 0;
}

/* The registered bf16 copy of the `extent` floats from p, or NULL. */
static const hy_bf16 *shadow_of(const float *p, size_t extent) {
    for (int i = 0; i < MAX_SHADOWS; i++) {
        const shadow *s = &shadows[i];
        if (s->base && p >= s->base && p + extent <= s->base + s->n) return s->copy + (p - s->base);
    }
    return NULL;
}

/* ---- oneDNN matmul cache ----
 * One primitive per (shape, strides, transposes, alpha, beta, bf16, serial): `serial` ones are
 * created and run inside an OpenMP parallel region, one thread each (oneDNN runs a primitive
 * sequentially there). Every primitive uses a user scratchpad: the caller's thread brings its own
 * (below), so any thread may run any primitive, concurrently.
 * The cache holds at most MAX_ENTRIES primitives: a long process meets ever new shapes (every
 * sequence length of a sweep, MoE experts' token counts), and a cache that only fills would send
 * every shape after the first MAX_ENTRIES to OpenBLAS. When full, a new shape evicts the entry
 * looked up least recently among those no thread keeps in a slot. Entries are reference counted
 * (the table holds one reference, each thread slot one), so an evicted primitive lives until the
 * last thread that holds it moves on. */
typedef struct {
    int trans_a, trans_b, M, N, K, lda, ldb, ldc, bf16, serial;
    float alpha, beta;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t md_a, md_b, md_c, md_scratch;
    size_t scratch_bytes;
    uint64_t hash;
    unsigned long last_use;   /* lookup clock at the last lookup that found or made it (under cache_lock) */
    atomic_int refs;
} dnnl_entry;

#define MAX_ENTRIES 1024
#define TABLE_SLOTS (2 * MAX_ENTRIES)   /* open addressing, linear probing, at most half full */
static dnnl_entry *table[TABLE_SLOTS];
static int n_entries;
static unsigned long lookup_clock;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static dnnl_engine_t engine;
static int dnnl_ready = -1; /* -1 unknown, 0 unusable, 1 ready; set under cache_lock */

/* Drops one reference to e; the last one destroys the primitive. */
static void entry_release(dnnl_entry *e) {
    if (e && atomic_fetch_sub(&e->refs, 1) == 1) {
        dnnl_primitive_destroy(e->prim);
        free(e);
    }
}

/* A thread's handle on one cached primitive: the entry and its four memory objects (A, B, C,
 * scratchpad), made once and given the operands' addresses on each call, so that a call of a
 * shape the thread has run before takes no lock and creates nothing. */
#define THREAD_SLOTS 64
#define SLOT_WAYS 4
typedef struct {
    dnnl_entry *e;   /* holds a reference */
    dnnl_memory_t mem[4];
} thread_slot;

/* What each thread keeps: its oneDNN stream, its scratchpad, its bf16 conversion buffers (slot 0:
 * A, 1: B, 2: an operand shared by two products) and its slots. Listed for hy_gemm_shutdown. */
typedef struct thread_ctx {
    dnnl_stream_t stream;
    void *scratch;
    size_t scratch_cap;
    hy_bf16 *buf[3];
    size_t cap[3];
    thread_slot slots[THREAD_SLOTS];
    struct thread_ctx *next;
} thread_ctx;
static _Thread_local thread_ctx *my_ctx;
static _Thread_local long my_generation;
static thread_ctx *all_ctx;
/* +1 at each hy_gemm_shutdown, which frees every thread's context: a thread whose my_generation
 * differs holds a stale pointer and makes a new context. */
static atomic_long generation = 1;

static int engine_ready(void) {
    if (dnnl_ready < 0) dnnl_ready = dnnl_engine_create(&engine, dnnl_cpu, 0) == dnnl_success;
    return dnnl_ready;
}

/* Frees a slot's memory objects, drops its reference and empties it. */
static void slot_clear(thread_slot *sl) {
    for (int i = 0; i < 4; i++)
        if (sl->mem[i]) dnnl_memory_destroy(sl->mem[i]);
    entry_release(sl->e);
    memset(sl, 0, sizeof *sl);
}

static thread_ctx *thread_context(void) {
    long g = atomic_load(&generation);
    if (my_ctx && my_generation == g) return my_ctx;
    my_ctx = NULL, my_generation = g;
    thread_ctx *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    pthread_mutex_lock(&cache_lock);
    int ok = engine_ready() && dnnl_stream_create(&c->stream, engine, dnnl_stream_default_flags) == dnnl_success;
    if (ok) c->next = all_ctx, all_ctx = c;
    pthread_mutex_unlock(&cache_lock);
    if (!ok) {
        free(c);
        return NULL;
    }
    return my_ctx = c;
}

/* *p with room for `bytes` (64-byte aligned; the contents are dropped when it grows). */
static void *grow_bytes(void **p, size_t *cap, size_t bytes) {
    if (bytes <= *cap && *p) return *p;
    free(*p);
    atomic_fetch_sub(&buffer_bytes, (long long)*cap);
    *p = aligned_alloc(64, (bytes + 64) & ~(size_t)63);
    *cap = *p ? bytes : 0;
    atomic_fetch_add(&buffer_bytes, (long long)*cap);
    if (!*p) hy_fail_code(HY_ERR_NOMEM, "gemm: out of memory for a %zu-byte buffer", bytes);
    return *p;
}

/* Held operands (hy_gemm_bf16_hold): each a grown buffer, registered as X's copy while held. */
static struct {
    const float *base;   /* NULL: free */
    hy_bf16 *buf;
    size_t cap;          /* bf16 values */
} holds[HY_GEMM_HOLDS];

int hy_gemm_bf16_hold(const float *X, size_t n) {
    if (precision_setting != HY_PREC_BF16 || !X || !n || shadow_of(X, n)) return 0;   /* (already read from a copy) */
    int h = -1;
    for (int i = 0; i < HY_GEMM_HOLDS && h < 0; i++)
        if (!holds[i].base) h = i;
    if (h < 0) return 0;
    if (holds[h].cap < n) {
        void *p = holds[h].buf;
        size_t cap = holds[h].cap * sizeof(hy_bf16);
        if (!grow_bytes(&p, &cap, n * sizeof(hy_bf16))) {
            holds[h].buf = NULL, holds[h].cap = 0;
            return HY_ERR_NOMEM;
        }
        holds[h].buf = p, holds[h].cap = cap / sizeof(hy_bf16);
    }
    long long t0 = now_ns();
    hy_bf16_from_f32_2d(holds[h].buf, n, X, n, 1, n);
    const long long dt = now_ns() - t0;   /* conversion time, counted in the products' time too */
    atomic_fetch_add_explicit(&ns_converting, dt, memory_order_relaxed);
    atomic_fetch_add_explicit(&ns_products, dt, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_converted, (long long)n, memory_order_relaxed);
    if (shadow_set(X, n, holds[h].buf) < 0) return 0;   /* no registry slot: the products convert as usual */
    holds[h].base = X;
    return 0;
}

void hy_gemm_bf16_release(const float *X) {
    for (int i = 0; i < HY_GEMM_HOLDS; i++)
        if (X && holds[i].base == X) {
            shadow_set(X, 0, NULL);
            holds[i].base = NULL;
            return;
        }
}

static void matrix_desc(dnnl_memory_desc_t *md, int rows, int cols, int ld, int trans, int bf16) {
    dnnl_dims_t dims = {rows, cols};
    dnnl_dims_t strides = {trans ? 1 : ld, trans ? ld : 1};
    dnnl_memory_desc_init_by_strides(md, 2, dims, bf16 ? dnnl_bf16 : dnnl_f32, strides);
}

/* Creates the primitive of entry e (its key filled in). A serial one is created with one OpenMP
 * thread in view (omp_set_num_threads inside a parallel region changes only this thread's task). */
static int create_entry(dnnl_entry *e) {
    matrix_desc(&e->md_a, e->M, e->K, e->lda, e->trans_a, e->bf16);
    matrix_desc(&e->md_b, e->K, e->N, e->ldb, e->trans_b, e->bf16);
    matrix_desc(&e->md_c, e->M, e->N, e->ldc, 0, 0);
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr;
    dnnl_post_ops_t post_ops;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_attr_create(&attr);
    dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (e->alpha != 1.0f) dnnl_primitive_attr_set_output_scales(attr, 1, 0, &e->alpha);
    dnnl_post_ops_create(&post_ops);
    if (e->beta != 0.0f) dnnl_post_ops_append_sum(post_ops, e->beta);
    dnnl_primitive_attr_set_post_ops(attr, post_ops);
    int threads = omp_get_max_threads();
    if (e->serial) omp_set_num_threads(1);
    int ok = dnnl_matmul_desc_init(&desc, &e->md_a, &e->md_b, NULL, &e->md_c) == dnnl_success &&
             dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL) == dnnl_success;
    if (e->serial) omp_set_num_threads(threads);
    dnnl_post_ops_destroy(post_ops);
    dnnl_primitive_attr_destroy(attr);
    if (!ok) return 0;
    ok = dnnl_primitive_create(&e->prim, pd) == dnnl_success;
    dnnl_primitive_desc_destroy(pd);
    /* the scratchpad of the primitive we got: oneDNN's own cache may hand back one made from an
     * equal description under another thread count, whose scratchpad differs from pd's */
    const_dnnl_primitive_desc_t ppd;
    if (ok && dnnl_primitive_get_primitive_desc(e->prim, &ppd) == dnnl_success) {
        e->md_scratch = *dnnl_primitive_desc_query_md(ppd, dnnl_query_scratchpad_md, 0);
        e->scratch_bytes = dnnl_memory_desc_get_size(&e->md_scratch);
    } else if (ok) {
        dnnl_primitive_destroy(e->prim);
        ok = 0;
    }
    return ok;
}

static int same_key(const dnnl_entry *a, const dnnl_entry *b) {
    return a->trans_a == b->trans_a && a->trans_b == b->trans_b && a->M == b->M && a->N == b->N && a->K == b->K &&
           a->lda == b->lda && a->ldb == b->ldb && a->ldc == b->ldc && a->bf16 == b->bf16 && a->serial == b->serial &&
           a->alpha == b->alpha && a->beta == b->beta;
}

/* FNV-1a over the fields of a key, then mixed (splitmix64's finalizer) so that the low bits, which
 * pick the slots, depend on every bit of every field: plain FNV-1a's low bits see only the fields'
 * low bits, and shapes differing in higher bits (64 against 128 rows) shared a slot. */
static uint64_t key_hash(const dnnl_entry *key) {
    uint64_t h = 1469598103934665603ull;
    const int fields[] = {key->trans_a, key->trans_b, key->M,   key->N,   key->K,
                          key->lda,     key->ldb,     key->ldc, key->bf16, key->serial};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) h = (h ^ (uint32_t)fields[i]) * 1099511628211ull;
    uint32_t ab[2];
    memcpy(&ab[0], &key->alpha, 4);
    memcpy(&ab[1], &key->beta, 4);
    h = ((h ^ ab[0]) * 1099511628211ull ^ ab[1]) * 1099511628211ull;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

/* Removes table[i] (linear probing: the entries after it in its run move back so that every
 * entry stays reachable from its home slot) and drops the table's reference. */
static void table_remove(int i) {
    dnnl_entry *gone = table[i];
    table[i] = NULL;
    for (int j = (i + 1) % TABLE_SLOTS; table[j]; j = (j + 1) % TABLE_SLOTS) {
        int home = (int)(table[j]->hash % TABLE_SLOTS);
        /* table[j] may move to the hole i unless its home lies cyclically in (i, j] */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) table[i] = table[j], table[j] = NULL, i = j;
    }
    n_entries--;
    atomic_fetch_add(&n_evicted, 1);
    entry_release(gone);
}

/* Makes room for one entry: evicts the least recently looked-up entry that no thread slot holds
 * (or, when every one is held, the least recently looked-up of all). Under cache_lock. */
static void evict_one(void) {
    int victim = -1, held_victim = -1;
    for (int i = 0; i < TABLE_SLOTS; i++) {
        const dnnl_entry *e = table[i];
        if (!e) continue;
        int *best = atomic_load(&e->refs) == 1 ? &victim : &held_victim;
        if (*best < 0 || e->last_use < table[*best]->last_use) *best = i;
    }
    table_remove(victim >= 0 ? victim : held_victim);
}

/* The cached primitive for key (hash h; created on first use) with one more reference for the
 * caller, or NULL; thread-safe. */
static dnnl_entry *dnnl_lookup(const dnnl_entry *key, uint64_t h) {
    dnnl_entry *found = NULL;
    pthread_mutex_lock(&cache_lock);
    if (engine_ready()) {
        int i = (int)(h % TABLE_SLOTS);
        while (table[i] && !(table[i]->hash == h && same_key(table[i], key))) i = (i + 1) % TABLE_SLOTS;
        if (table[i]) found = table[i];
        else {
            dnnl_entry *e = malloc(sizeof *e);
            if (e) {
                memcpy(e, key, sizeof *e);
                e->hash = h;
                atomic_init(&e->refs, 1);
            }
            if (e && create_entry(e)) {
                if (n_entries >= MAX_ENTRIES) {   /* the removal may move entries: probe again */
                    evict_one();
                    for (i = (int)(h % TABLE_SLOTS); table[i]; i = (i + 1) % TABLE_SLOTS) {
                    }
                }
                table[i] = found = e;
                n_entries++;
            } else
                free(e);
        }
        if (found) {
            found->last_use = ++lookup_clock;
            atomic_fetch_add(&found->refs, 1);
        }
    }
    pthread_mutex_unlock(&cache_lock);
    return found;
}

/* The oneDNN cache's part of hy_gemm_stats. */
static void cache_counts(hy_gemm_stats *s) {
    pthread_mutex_lock(&cache_lock);
    s->primitives_cached = n_entries;
    pthread_mutex_unlock(&cache_lock);
    s->primitives_evicted = atomic_load(&n_evicted);
    s->onednn_fallbacks = atomic_load(&n_onednn_fallbacks);
}

/* The bf16 form of a rows x cols operand with row stride ld: its registered copy, or a fresh
 * conversion into this thread's buffer `slot` (kept with the same ld). */
static const hy_bf16 *bf16_operand(thread_ctx *c, int slot, const float *src, int rows, int cols, int ld) {
    size_t extent = (size_t)(rows - 1) * ld + cols;
    const hy_bf16 *s = shadow_of(src, extent);
    if (s) {
        atomic_fetch_add_explicit(&n_shadowed, (long long)rows * cols, memory_order_relaxed);
        return s;
    }
    void *p = c->buf[slot];
    size_t cap = c->cap[slot] * sizeof(hy_bf16);
    if (!grow_bytes(&p, &cap, extent * sizeof(hy_bf16))) {
        c->buf[slot] = NULL, c->cap[slot] = 0;
        return NULL;
    }
    c->buf[slot] = p, c->cap[slot] = cap / sizeof(hy_bf16);
    long long t0 = now_ns();
    hy_bf16_from_f32_2d(c->buf[slot], (size_t)ld, src, (size_t)ld, (size_t)rows, (size_t)cols);
    atomic_fetch_add_explicit(&ns_converting, now_ns() - t0, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_converted, (long long)rows * cols, memory_order_relaxed);
    return c->buf[slot];
}

/* The slot of c holding key (hash h), else an empty one of its SLOT_WAYS, else the one to reuse:
 * a slot is looked up in SLOT_WAYS consecutive places, so that the few shapes a kernel alternates
 * between do not evict each other's memory objects on every call when their hashes collide. */
static thread_slot *slot_for(thread_ctx *c, const dnnl_entry *key, uint64_t h) {
    thread_slot *empty = NULL;
    for (int w = 0; w < SLOT_WAYS; w++) {
        thread_slot *sl = &c->slots[(h + (uint64_t)w) % THREAD_SLOTS];
        if (sl->e && same_key(sl->e, key)) return sl;
        if (!sl->e && !empty) empty = sl;
    }
    return empty ? empty : &c->slots[(h + (uint64_t)(h >> 32) % SLOT_WAYS) % THREAD_SLOTS];
}

/* C = alpha op(A) op(B) + beta C through oneDNN, from any thread. With bf16, Ah / Bh are the
 * operands already in bf16 (NULL: found or converted here). Returns 0 when oneDNN cannot do it. */
static int gemm_onednn(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, const hy_bf16 *Ah, int lda,
                       const float *B, const hy_bf16 *Bh, int ldb, float beta, float *C, int ldc, int bf16) {
    int serial = omp_in_parallel();
    dnnl_entry key = {.trans_a = ta, .trans_b = tb, .M = M, .N = N, .K = K, .lda = lda, .ldb = ldb,
                      .ldc = ldc, .bf16 = bf16, .serial = serial, .alpha = alpha, .beta = beta};
    thread_ctx *c = thread_context();
    if (!c) return 0;
    uint64_t h = key_hash(&key);
    thread_slot *sl = slot_for(c, &key, h);
    if (!sl->e || !same_key(sl->e, &key)) {   /* this thread's first call of the shape here */
        slot_clear(sl);
        dnnl_entry *e = dnnl_lookup(&key, h);
        if (!e) return 0;
        sl->e = e;
        int ok = dnnl_memory_create(&sl->mem[0], &e->md_a, engine, DNNL_MEMORY_NONE) == dnnl_success &&
                 dnnl_memory_create(&sl->mem[1], &e->md_b, engine, DNNL_MEMORY_NONE) == dnnl_success &&
                 dnnl_memory_create(&sl->mem[2], &e->md_c, engine, DNNL_MEMORY_NONE) == dnnl_success &&
                 dnnl_memory_create(&sl->mem[3], &e->md_scratch, engine, DNNL_MEMORY_NONE) == dnnl_success;
        if (!ok) {
            slot_clear(sl);
            return 0;
        }
    }
    const dnnl_entry *e = sl->e;
    if (!grow_bytes(&c->scratch, &c->scratch_cap, e->scratch_bytes)) return 0;
    const void *a = A, *b = B;
    if (bf16) {
        a = Ah ? Ah : bf16_operand(c, 0, A, ta ? K : M, ta ? M : K, lda);
        b = Bh ? Bh : bf16_operand(c, 1, B, tb ? N : K, tb ? K : N, ldb);
        if (!a || !b) return 0;
    }
    dnnl_memory_t *mem = sl->mem;
    int ok = dnnl_memory_set_data_handle(mem[0], (void *)a) == dnnl_success &&
             dnnl_memory_set_data_handle(mem[1], (void *)b) == dnnl_success &&
             dnnl_memory_set_data_handle(mem[2], C) == dnnl_success &&
             dnnl_memory_set_data_handle(mem[3], c->scratch) == dnnl_success;
    if (ok) {
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, mem[0]},
                                   {DNNL_ARG_WEIGHTS, mem[1]},
                                   {DNNL_ARG_DST, mem[2]},
                                   {DNNL_ARG_SCRATCHPAD, mem[3]}};
        ok = dnnl_primitive_execute(e->prim, c->stream, 4, args) == dnnl_success &&
             dnnl_stream_wait(c->stream) == dnnl_success;
    }
    return ok;
}

/* An f32 copy (malloc'd) of a rows x cols bf16 operand with row stride ld, for the OpenBLAS
 * fallback of a product whose operand exists only in bf16; NULL when out of memory. */
static float *widen_operand(const hy_bf16 *h, int rows, int cols, int ld) {
    size_t extent = (size_t)(rows - 1) * ld + cols;
    float *f = malloc(extent * sizeof(float));
    if (f) hy_bf16_to_f32(f, h, extent);
    return f;
}

/* hy_gemm with optional bf16 forms of A and B (used only under bf16 precision; A or B may be NULL
 * where its bf16 form is given). */
static void gemm_dispatch(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, const hy_bf16 *Ah, int lda,
                     const float *B, const hy_bf16 *Bh, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
        return;
    }
    int bf16 = precision_setting == HY_PREC_BF16;
    atomic_fetch_add_explicit(&n_products, 1, memory_order_relaxed);
    if (omp_in_parallel()) atomic_fetch_add_explicit(&n_in_parallel, 1, memory_order_relaxed);
    /* A matrix-vector product (one row or one column: a streaming step) goes to sgemv: sgemm packs
     * the whole weight matrix on every call, 5-10x slower at M = 1 (measured on the project
     * machine: 1 x 704 x 256 sgemm 576 us, sgemv 123 us, loaded; idle ratios are similar). */
    if (!bf16 && backend_setting != HY_GEMM_ONEDNN && (M == 1 || N == 1)) {
        atomic_fetch_add_explicit(&n_f32, 1, memory_order_relaxed);
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
    if (b == HY_GEMM_ONEDNN && gemm_onednn(ta, tb, M, N, K, alpha, A, Ah, lda, B, Bh, ldb, beta, C, ldc, bf16)) {
        atomic_fetch_add_explicit(bf16 ? &n_bf16 : &n_f32, 1, memory_order_relaxed);
        return;
    }
    if (bf16) atomic_fetch_add_explicit(&n_bf16_fallbacks, 1, memory_order_relaxed);
    else if (b == HY_GEMM_ONEDNN) atomic_fetch_add_explicit(&n_onednn_fallbacks, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_f32, 1, memory_order_relaxed);
    float *wa = NULL, *wb = NULL;   /* operands given only in bf16, widened for OpenBLAS */
    if (!A && !(A = wa = widen_operand(Ah, ta ? K : M, ta ? M : K, lda))) goto nomem;
    if (!B && !(B = wb = widen_operand(Bh, tb ? N : K, tb ? K : N, ldb))) goto nomem;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha,
                A, lda, B, ldb, beta, C, ldc);
    free(wa);
    return;
nomem:   /* no way to report from here: the product's result is NaN, which the loss shows */
    free(wa);
    hy_fail("gemm: out of memory widening a bf16 operand for the f32 fallback");
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = NAN;
}

/* gemm_dispatch, its wall time added to the products' time (hy_gemm_stats.seconds). */
static void gemm_run(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, const hy_bf16 *Ah, int lda,
                     const float *B, const hy_bf16 *Bh, int ldb, float beta, float *C, int ldc) {
    long long t0 = now_ns();
    gemm_dispatch(ta, tb, M, N, K, alpha, A, Ah, lda, B, Bh, ldb, beta, C, ldc);
    atomic_fetch_add_explicit(&ns_products, now_ns() - t0, memory_order_relaxed);
}

void hy_gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
             float beta, float *C, int ldc) {
    gemm_run(ta, tb, M, N, K, alpha, A, NULL, lda, B, NULL, ldb, beta, C, ldc);
}

/* Counts the bf16 operand values a caller gave (hy_gemm_stats.given). */
static void count_given(const hy_bf16 *h, int rows, int cols) {
    if (h) atomic_fetch_add_explicit(&n_given, (long long)rows * cols, memory_order_relaxed);
}

void hy_gemm_bf16_given(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, const hy_bf16 *Ah,
                        int lda, const float *B, const hy_bf16 *Bh, int ldb, float beta, float *C, int ldc) {
    if (precision_setting != HY_PREC_BF16) Ah = Bh = NULL;
    if (M > 0 && N > 0 && K > 0) count_given(Ah, M, K), count_given(Bh, K, N);
    gemm_run(ta, tb, M, N, K, alpha, A, Ah, lda, B, Bh, ldb, beta, C, ldc);
}

void hy_gemm_shutdown(void) {
    pthread_mutex_lock(&cache_lock);
    for (int i = 0; i < TABLE_SLOTS; i++) {
        entry_release(table[i]);
        table[i] = NULL;
    }
    n_entries = 0;
    for (thread_ctx *c = all_ctx, *next; c; c = next) {
        next = c->next;
        for (int i = 0; i < THREAD_SLOTS; i++) slot_clear(&c->slots[i]);
        dnnl_stream_destroy(c->stream);
        free(c->scratch);
        for (int s = 0; s < 3; s++) free(c->buf[s]);
        free(c);
    }
    all_ctx = NULL;
    for (int i = 0; i < HY_GEMM_HOLDS; i++) {
        if (holds[i].base) shadow_set(holds[i].base, 0, NULL);
        free(holds[i].buf);
        holds[i].base = NULL, holds[i].buf = NULL, holds[i].cap = 0;
    }
    atomic_store(&buffer_bytes, 0);
    my_ctx = NULL;
    atomic_fetch_add(&generation, 1);   /* other threads' my_ctx are stale from here */
    if (dnnl_ready == 1) dnnl_engine_destroy(engine);
    dnnl_ready = -1;
    pthread_mutex_unlock(&cache_lock);
    hy_bf16_shutdown();
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
    hy_linear_backward_bf16(dX, dW, db, dY, NULL, X, NULL, W, rows, in, out, accumulate_dx);
}

void hy_linear_backward_bf16(float *dX, float *dW, float *db, const float *dY, const hy_bf16 *dYh, const float *X,
                             const hy_bf16 *Xh, const float *W, int rows, int in, int out, bool accumulate_dx) {
    if (precision_setting != HY_PREC_BF16) dYh = Xh = NULL;
    if (rows > 0 && out > 0 && in > 0) {
        if (dYh) count_given(dYh, rows, out * ((dX != NULL) + (dW != NULL)));
        if (Xh && dW) count_given(Xh, rows, in);
    }
    /* under bf16 both products read dY: convert it once (this thread's shared slot) */
    thread_ctx *c;
    if (!dYh && dX && dW && rows > 1 && precision_setting == HY_PREC_BF16 && (c = thread_context())) {
        long long t0 = now_ns();
        dYh = bf16_operand(c, 2, dY, rows, out, out);
        atomic_fetch_add_explicit(&ns_products, now_ns() - t0, memory_order_relaxed);
    }
    if (dX) gemm_run(false, false, rows, in, out, 1.0f, dY, dYh, out, W, NULL, in, accumulate_dx ? 1.0f : 0.0f, dX, in);
    if (dW) gemm_run(true, false, out, in, rows, 1.0f, dY, dYh, out, X, Xh, in, 1.0f, dW, in);
    if (db) {
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < out; o++) db[o] += dY[(size_t)r * out + o];
    }
}

/* The SSD kernels of the Mamba-2 block (formulas, layouts and the chunked form: layers/mamba2/ssd.h).
 *
 * Work is split into tasks (sequence b, group g, block of heads): a group's Hg heads are cut into
 * nb blocks, nb the smallest count that gives every thread a task (1 when B·G tasks already do).
 * A task sweeps its chunks in order with its heads' state in cache, so the state never goes
 * through memory between chunks and one parallel region does the whole call. The running state is
 * held transposed, Sᵀ (N × hb·P, head h at columns h·P ..), as are the chunk states kept for the
 * backward (ssd.h). With several blocks per group the chunks' C Bᵀ are made once (hy_gemm), shared
 * out among the threads at the start of that region, instead of by every block (the forward and the
 * backward alike). The per-chunk products are small (64 × 64 × 128 at the block's sizes), where a
 * library GEMM spends about as long setting up each call as multiplying: they go through hy_tile_mm
 * (core/tile_mm.h), which has no set-up, reads a transposed left operand through its strides and
 * applies a decay to its output on the way. Per chunk:
 *   forward   CB = C Bᵀ (q × q); per head y = [E ⊙ C | L ⊙ CB ⊙ Δ] [Sᵀ ; x] (one product over
 *             N + q: the carried-in state's output and the chunk's own, y written once; Δ_i scales
 *             the mask's column i; x copied under Sᵀ in the same pass that makes W ⊙ Δx); per head
 *             Sᵀ ← e ⊙ Sᵀ + Bᵀ (W ⊙ Δx) (one product, e applied on the way). With the states kept,
 *             Sᵀ entering the chunk goes into its slot with non-temporal stores a few rows at a time
 *             between the rows of the left operands (so that they drain while the products run), and
 *             the rows of y each head writes and of the next chunk's x are fetched there as well.
 *   backward  from the last chunk back with dS = dS_out(c) (0 after the last, held as dSᵀ): Z = C S_inᵀ,
 *             V = B dSᵀ, dC = (E ⊙ dy) S_in, dB = (W ⊙ Δx) dS over the block's heads (S_in and dS
 *             transposed back with hy_transpose for the last two), per head d(Δx) = Mᵀ dy + W ⊙ V
 *             and dM = dy (Δx)ᵀ ((Δx)ᵀ transposed once per chunk), dC += dCB B (dCB lower-triangular:
 *             its zero part skipped), dB += dCBᵀ C with dCB = Σ_h dM ⊙ L, and per head
 *             dSᵀ ← e ⊙ dSᵀ + Cᵀ (E ⊙ dy). The previous chunk's x, dy, dx and entering state are
 *             fetched a share per mask row.
 * The log-decays' gradients are collected without differences of prefix sums: with F = dM ⊙ M,
 * da_r = Σ_{j>=r} Σ_{i<r} F[j][i] (the mask) + Σ_{j>=r} dE_j E_j + Σ_{i<r} dW_i W_i + de·e with
 * de = <dS_out, S_in>. Every output entry is written by one task, except dB and dC with several head
 * blocks per group (each block writes its own partial rows, added in block order afterwards) and dA
 * (per-(b, c, h) partial sums added in a fixed order): deterministic for a given thread count. */
#include "layers/mamba2/ssd.h"
#include "core/error.h"
#include "core/gemm.h"
#include "core/mem.h"
#include "core/simd.h"
#include "core/tile_mm.h"
#include "core/vmath.h"
#include <omp.h>
#include <stdbool.h>
#include <string.h>

/* -std=c17 turns off floating-point contraction; the elementwise loops here are FMA chains. */
#if defined(__clang__)   /* clang: contraction within expressions, as the other kernels ask of it */
#pragma clang fp contract(on)
#else
#pragma GCC optimize("fp-contract=fast", "no-tree-loop-distribute-patterns")
#endif

#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* Fetches the cache lines of n floats from p (rw 1: to be written). */
#define prefetch_floats(p, n, rw)                                                         \
    do {                                                                                  \
        for (int pf_ = 0; pf_ < (n); pf_ += 16) __builtin_prefetch((p) + pf_, (rw), 3);   \
    } while (0)

/* Share k of K of the rows of a rows × n region (row stride ld) fetched (rw 1: to be written):
 * the fetches for a later chunk spread over the iterations of this one. */
static inline void prefetch_share(const float *base, size_t ld, int rows, int n, int k, int K, int rw) {
    const int r1 = (int)((long)(k + 1) * rows / K);
    for (int r = (int)((long)k * rows / K); r < r1; r++) {
        if (rw) prefetch_floats((float *)base + (size_t)r * ld, n, 1);
        else prefetch_floats(base + (size_t)r * ld, n, 0);
    }
}



/* Σ x[i]·y[i] over n floats, in two 8-lane accumulators (a fixed order for any target). */
static inline float vdot(const float *restrict x, const float *restrict y, int n) {
    v8 a0 = {0}, a1 = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16) a0 += v8_load(x + i) * v8_load(y + i), a1 += v8_load(x + i + 8) * v8_load(y + i + 8);
    for (; i + 8 <= n; i += 8) a0 += v8_load(x + i) * v8_load(y + i);
    v8 f = a0 + a1;
    float s = ((f[0] + f[4]) + (f[1] + f[5])) + ((f[2] + f[6]) + (f[3] + f[7]));
    for (; i < n; i++) s += x[i] * y[i];
    return s;
}

/* Σ x[i] over n floats, as vdot. */
static inline float vsum(const float *restrict x, int n) {
    v8 a0 = {0}, a1 = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16) a0 += v8_load(x + i), a1 += v8_load(x + i + 8);
    for (; i + 8 <= n; i += 8) a0 += v8_load(x + i);
    v8 f = a0 + a1;
    float s = ((f[0] + f[4]) + (f[1] + f[5])) + ((f[2] + f[6]) + (f[3] + f[7]));
    for (; i < n; i++) s += x[i];
    return s;
}

/* Sizes shared by the kernels: chunk Q, chunks nch, heads per group Hg, head blocks per group nb
 * and the largest block hbmax (blocks differ by at most one head). */
typedef struct {
    int Q, nch, Hg, nb, hbmax;
    size_t PN;
} ssd_dims;

/* The sizes for a call on B sequences of T steps with nth threads. */
static ssd_dims dims_for(int B, int T, int H, int P, int N, int G, int chunk, int nth) {
    ssd_dims d = {.Q = chunk, .nch = (T + chunk - 1) / chunk, .Hg = H / G, .PN = (size_t)P * N};
    long groups = (long)B * G;
    d.nb = groups >= nth ? 1 : (int)MIN((nth + groups - 1) / groups, (long)d.Hg);
    d.hbmax = (d.Hg + d.nb - 1) / d.nb;
    return d;
}

static ssd_dims dims_of(const hy_ssd_args *a) {
    return dims_for(a->B, a->T, a->H, a->P, a->N, a->G, a->chunk, omp_get_max_threads());
}

/* Floats rounded up to a whole cache line, so per-thread scratch areas never share one. */
static size_t line_up(size_t n) { return (n + 15) & ~(size_t)15; }

/* The chunks' C Bᵀ products (B, G, nch, Q, Q), made once before the tasks when a group has several
 * head blocks (which would each make them otherwise); 0 floats with one block per group. */
static size_t cb_shared_floats(const ssd_dims *d, int B, int G) {
    return d->nb > 1 ? line_up((size_t)B * G * d->nch * d->Q * d->Q) : 0;
}

/* Per-thread scratch of the forward and the backward (layouts at the top of each task's loop). */
/* The forward's per-thread areas, each starting on a cache line: the chunk's C Bᵀ (Q × Q), a head's
 * left operand [E ⊙ C | M] (Q × (N+Q)), the right operand of every head [Sᵀ ; x] ((N+Q) × hb·P:
 * the carried state transposed, then the chunk's x), (W ⊙ Δx) (Q × hb·P), the per-head step
 * vectors (4 · Q · hb) and seg (Q), e (hb). */
typedef struct {
    float *CB, *A, *Xs, *XW, *avs, *dts, *Es, *Ws, *seg, *e;
} fwd_areas;

static size_t fwd_areas_at(const ssd_dims *d, int P, int N, float *base, fwd_areas *w) {
    const size_t Q = (size_t)d->Q, nP = (size_t)d->hbmax * P, QG = Q * d->hbmax;
    const size_t sz[10] = {Q * Q, Q * (N + Q), (N + Q) * nP, Q * nP, QG, QG, QG, QG, Q, (size_t)d->hbmax};
    float **dst[10] = {&w->CB, &w->A, &w->Xs, &w->XW, &w->avs, &w->dts, &w->Es, &w->Ws, &w->seg, &w->e};
    size_t off = 0;
    for (int i = 0; i < 10; i++) {
        if (base) *dst[i] = base + off;
        off += line_up(sz[i]);
    }
    return off;
}

static size_t fwd_thread_floats(const ssd_dims *d, int P, int N) {
    fwd_areas w;
    return fwd_areas_at(d, P, N, NULL, &w);
}
static size_t bwd_thread_floats(const ssd_dims *d, int P) {
    const size_t QQ = (size_t)d->Q * d->Q, QH = (size_t)d->Q * d->hbmax * P, QG = (size_t)d->Q * d->hbmax;
    return line_up(4 * QQ + 7 * QH + 4 * QG + 2 * (size_t)d->Q + 3 * (size_t)d->hbmax + d->hbmax * d->PN +
                   2 * d->hbmax * d->PN);
}
/* The backward's shared part: the shared C Bᵀ products, dA partial sums, then (several blocks per
 * group) dB and dC rows per block. */
static size_t bwd_shared_floats(const ssd_dims *d, int B, int T, int H, int G, int N) {
    return cb_shared_floats(d, B, G) + line_up((size_t)B * d->nch * H) +
           (d->nb > 1 ? 2 * (size_t)d->nb * B * T * G * N : 0);
}

size_t hy_ssd_forward_work_floats(int B, int T, int H, int P, int N, int G, int chunk, int threads) {
    if (B <= 0 || T <= 0 || chunk <= 0 || G <= 0 || threads <= 0) return 0;
    ssd_dims d = dims_for(B, T, H, P, N, G, chunk, threads);
    return cb_shared_floats(&d, B, G) + fwd_thread_floats(&d, P, N) * threads;
}

size_t hy_ssd_backward_work_floats(int B, int T, int H, int P, int N, int G, int chunk, int threads) {
    if (B <= 0 || T <= 0 || chunk <= 0 || G <= 0 || threads <= 0) return 0;
    ssd_dims d = dims_for(B, T, H, P, N, G, chunk, threads);
    return bwd_shared_floats(&d, B, T, H, G, N) + bwd_thread_floats(&d, P) * threads;
}

size_t hy_ssd_state_floats(int B, int T, int H, int P, int N, int chunk) {
    if (B <= 0 || T <= 0 || chunk <= 0) return 0;
    return (size_t)B * ((T + chunk - 1) / chunk + 1) * H * P * N;
}

double hy_ssd_flop(int T, int H, int P, int N, int G, int chunk) {
    double f = 0;
    for (int t0 = 0; t0 < T; t0 += chunk) {
        double q = MIN(chunk, T - t0);
        f += G * 2.0 * q * q * N + H * (2.0 * q * q * P + 4.0 * q * P * N);
    }
    return f;
}

static int check_args(const hy_ssd_args *a) {
    if (a->B < 0 || a->T < 0 || a->H < 1 || a->P < 1 || a->N < 1 || a->G < 1 || a->H % a->G || a->chunk < 1)
        return hy_fail("ssd: bad sizes B %d T %d H %d P %d N %d G %d chunk %d", a->B, a->T, a->H, a->P, a->N, a->G,
                       a->chunk);
    return 0;
}

/* The decays of head h over the q steps of a chunk starting at row row0: av[j] = Δ_j·A[h];
 * E[j] = exp(Σ_{r<=j} a_r) and W[j] = exp(Σ_{r>j} a_r) when not NULL; returns e = exp(Σ a). */
static float head_decays(const hy_ssd_args *a, size_t row0, int q, int h, float *av, float *E, float *W) {
    const float Ah = a->A[h];
    for (int j = 0; j < q; j++) av[j] = a->dt[(row0 + j) * a->lddt + h] * Ah;
    float p = 0;
    if (E) {
        for (int j = 0; j < q; j++) p += av[j], E[j] = p;
        for (int j = 0; j < q; j++) E[j] = hy_expf_neg(E[j]);
    } else
        for (int j = 0; j < q; j++) p += av[j];
    if (W) {
        float s = 0;
        for (int j = q - 1; j >= 0; j--) W[j] = s, s += av[j];
        for (int j = 0; j < q; j++) W[j] = hy_expf_neg(W[j]);
    }
    return hy_expf_neg(p);
}

/* Row j of the causal mask: seg[i] = Σ_{i<r<=j} a_r for i <= j, updated from row j-1 (seg holds
 * row j-1 on entry); Lrow[i] = exp(seg[i]) · (cb ? cb[i] : 1) · (dv ? dv[i] : 1) for i <= j, 0 for
 * j < i < q. In HY_VW-lane blocks with lane masks: no lane above the diagonal is exponentiated into
 * the row, and nothing at or past q is read or written. */
static inline void mask_row(int j, int q, const float *av, float *seg, float *Lrow, const float *cb, const float *dv) {
    const vw aj = vw_splat(av[j]), zero = vw_splat(0.0f);
    seg[j] = 0;
    int i0 = 0;
    for (; i0 <= j; i0 += HY_VW) {
        const vw_mask upd = vw_mask_first(j - i0), row = vw_mask_first(j + 1 - i0), mem = vw_mask_first(q - i0);
        vw s = vw_load_masked(seg + i0, row) + vw_keep(aj, upd);
        vw_store_masked(seg + i0, row, s);
        vw l = hy_expf_neg_vw(s);
        if (cb) l *= vw_load_masked(cb + i0, row);
        if (dv) l *= vw_load_masked(dv + i0, row);
        vw_store_masked(Lrow + i0, mem, vw_keep(l, row));
    }
    for (; i0 < q; i0 += HY_VW) vw_store_masked(Lrow + i0, vw_mask_first(q - i0), zero);
}

/* One task: sequence b, group g, heads h0 .. h0+nh-1 (blk: the block's index in its group). */
typedef struct {
    int b, g, blk, h0, nh;
} ssd_task;

/* Task k of B·G·nb, in sequence, group, block order; blocks of a group differ by at most one head. */
static ssd_task task_of(long k, const hy_ssd_args *a, const ssd_dims *d) {
    ssd_task t;
    t.blk = (int)(k % d->nb);
    t.g = (int)(k / d->nb % a->G);
    t.b = (int)(k / ((long)d->nb * a->G));
    int base = d->Hg / d->nb, extra = d->Hg % d->nb;
    t.nh = base + (t.blk < extra);
    t.h0 = t.g * d->Hg + t.blk * base + MIN(t.blk, extra);
    return t;
}

/* Rows j < q of the chunk at row0, the task's heads: out[j·nh·P + hl·P + p] = src[(row0 + j)·ld +
 * (h0 + hl)·P + p] · (dt ? Δ_j[h0 + hl] : 1) · (scale ? scale[hl·Q + j] : 1), and with out2 also
 * out2[...] = out[...] · scale2[hl·Q + j] in the same pass. Whole rows in order (the hardware
 * prefetcher follows them; one head's slices of every row, 2 KiB apart at H·P = 512, it does not). */
static void gather_rows(const hy_ssd_args *a, const ssd_dims *d, const ssd_task *t, size_t row0, int q,
                        const float *src, int ld, const float *scale, bool dt, float *restrict out,
                        const float *scale2, float *restrict out2) {
    const int P = a->P, nP = t->nh * P, Q = d->Q;
    for (int j = 0; j < q; j++) {
        const float *restrict sj = src + (row0 + j) * ld + (size_t)t->h0 * P;
        const float *dtj = a->dt + (row0 + j) * a->lddt + t->h0;
        float *restrict o = out + (size_t)j * nP, *restrict o2 = out2 ? out2 + (size_t)j * nP : NULL;
        for (int hl = 0; hl < t->nh; hl++) {
            const float f = (dt ? dtj[hl] : 1.0f) * (scale ? scale[(size_t)hl * Q + j] : 1.0f);
            if (o2) {
                const float f2 = scale2[(size_t)hl * Q + j];
                for (int p = 0; p < P; p++) {
                    const float v = sj[hl * P + p] * f;
                    o[hl * P + p] = v, o2[hl * P + p] = v * f2;
                }
            } else
                for (int p = 0; p < P; p++) o[hl * P + p] = sj[hl * P + p] * f;
        }
    }
}

/* Σ_{n<rows} Σ_{p<P} x[n·ldx + p] · y[n·ldy + p] (one head's block of two transposed states), in
 * HY_VW-lane accumulators summed once at the end (a fixed order for a given build). */
static float dot_block(const float *x, int ldx, const float *y, int ldy, int rows, int P) {
    vw acc = vw_splat(0.0f);
    float tail = 0.0f;
    for (int n = 0; n < rows; n++) {
        const float *restrict xn = x + (size_t)n * ldx, *restrict yn = y + (size_t)n * ldy;
        int p = 0;
        for (; p + HY_VW <= P; p += HY_VW) acc = vw_fma(vw_load(xn + p), vw_load(yn + p), acc);
        for (; p < P; p++) tail += xn[p] * yn[p];
    }
    return vw_hsum(acc) + tail;
}

/* The task's heads' columns of slot c of the (B, nch+1, N, H·P) chunk states: row n (row stride
 * H·P) holds S[h][p][n] at column (h - h0)·P + p, the carried states transposed, as the forward's
 * right operand holds them. */
static inline float *slot_t(float *s, const hy_ssd_args *a, const ssd_dims *d, const ssd_task *t, int c) {
    return s + ((size_t)t->b * (d->nch + 1) + c) * a->N * (size_t)a->H * a->P + (size_t)t->h0 * a->P;
}

/* ST (N rows of nh·P, row stride ld) = the task's heads of S (B, H, P, N) transposed; zeros when S
 * is NULL. Once per call. */
static void state_in_t(float *restrict ST, int ld, const float *S, const hy_ssd_args *a, const ssd_task *t) {
    const int P = a->P, N = a->N;
    for (int n = 0; n < N; n++) {
        float *restrict o = ST + (size_t)n * ld;
        if (!S) {
            memset(o, 0, (size_t)t->nh * P * sizeof(float));
            continue;
        }
        for (int hl = 0; hl < t->nh; hl++) {
            const float *restrict sh = S + ((size_t)t->b * a->H + t->h0 + hl) * P * N + n;
            for (int p = 0; p < P; p++) o[hl * P + p] = sh[(size_t)p * N];
        }
    }
}

/* The reverse of state_in_t: the task's heads of S (B, H, P, N) = ST transposed. */
static void state_out_t(float *S, const float *restrict ST, int ld, const hy_ssd_args *a, const ssd_task *t) {
    const int P = a->P, N = a->N;
    for (int hl = 0; hl < t->nh; hl++)
        for (int p = 0; p < P; p++) {
            float *restrict o = S + (((size_t)t->b * a->H + t->h0 + hl) * P + p) * N;
            for (int n = 0; n < N; n++) o[n] = ST[(size_t)n * ld + hl * P + p];
        }
}

/* ST (N rows, row stride ld) copied into keep (row stride ldk): whole vectors as non-temporal
 * stores where aligned (vw_stream), so that the 4·H·P·N bytes a chunk leaves, read back only by the
 * backward, do not push the working set out of the cache. */
static void keep_state_t(const float *restrict ST, int ld, int N, int nP, float *restrict keep, int ldk) {
    for (int n = 0; n < N; n++) {
        const float *restrict r = ST + (size_t)n * ld;
        float *restrict k = keep + (size_t)n * ldk;
        int p = 0;
        for (; p + HY_VW <= nP; p += HY_VW) vw_stream(k + p, vw_load(r + p));
        for (; p < nP; p++) k[p] = r[p];
    }
}

/* Rows j < q of the chunk at row0, the task's heads' x: into X as they are and into XW scaled by
 * W_j·Δ_j of each head (both with row stride nh·P), one pass over x. */
static void gather_x(const hy_ssd_args *a, const ssd_task *t, size_t row0, int q, int Q, const float *Ws, const float *dts,
                     float *restrict X, float *restrict XW) {
    const int P = a->P, nP = t->nh * P;
    for (int j = 0; j < q; j++) {
        const float *restrict xj = a->x + (row0 + j) * a->ldx + (size_t)t->h0 * P;
        float *restrict o = X + (size_t)j * nP, *restrict ow = XW + (size_t)j * nP;
        for (int hl = 0; hl < t->nh; hl++) {
            const float f = Ws[(size_t)hl * Q + j] * dts[(size_t)hl * Q + j];
            const vw fv = vw_splat(f);
            int p = hl * P;
            for (; p + HY_VW <= hl * P + P; p += HY_VW) {
                const vw v = vw_load(xj + p);
                vw_store(o + p, v);
                vw_store(ow + p, v * fv);
            }
            for (; p < hl * P + P; p++) o[p] = xj[p], ow[p] = xj[p] * f;
        }
    }
}

/* The chunks' C Bᵀ for every (sequence b, group g, chunk c) into CB + ((b·G + g)·nch + c)·Q·Q (row
 * stride Q), shared by the group's head blocks; run by every thread of the enclosing parallel
 * region (a work-shared loop, with its barrier). */
static void shared_cb(const hy_ssd_args *a, const ssd_dims *d, float *CB) {
    const long n = (long)a->B * a->G * d->nch;
    #pragma omp for schedule(static)
    for (long k = 0; k < n; k++) {
        const int c = (int)(k % d->nch), g = (int)(k / d->nch % a->G), b = (int)(k / ((long)d->nch * a->G));
        const int t0 = c * d->Q, q = MIN(d->Q, a->T - t0);
        const size_t row0 = (size_t)b * a->T + t0;
        hy_gemm(false, true, q, q, a->N, 1.0f, a->Cm + row0 * a->ldbc + (size_t)g * a->N, a->ldbc,
                a->Bm + row0 * a->ldbc + (size_t)g * a->N, a->ldbc, 0.0f, CB + (size_t)k * d->Q * d->Q, d->Q);
    }
}

/* The chunk's C Bᵀ (q × q, row stride Q): from the shared products when there are any, else made
 * into own. */
static const float *chunk_cb(const hy_ssd_args *a, const ssd_dims *d, const ssd_task *t, int c, int q, const float *shared,
                             float *own) {
    if (shared) return shared + (((size_t)t->b * a->G + t->g) * d->nch + c) * d->Q * d->Q;
    const size_t row0 = (size_t)t->b * a->T + (size_t)c * d->Q;
    hy_gemm(false, true, q, q, a->N, 1.0f, a->Cm + row0 * a->ldbc + (size_t)t->g * a->N, a->ldbc,
            a->Bm + row0 * a->ldbc + (size_t)t->g * a->N, a->ldbc, 0.0f, own, d->Q);
    return own;
}

/* ---------------------------------------------------------------- forward ---- */

int hy_ssd_forward(const hy_ssd_args *a, float *y, int ldy, hy_buf *work) {
    int rc = check_args(a);
    if (rc < 0) return rc;
    const size_t nS = (size_t)a->B * a->H * a->P * a->N;
    if (a->B == 0) return 0;
    if (a->T == 0) {
        if (a->s_out && a->s_out != a->s0) {
            if (a->s0) memcpy(a->s_out, a->s0, nS * sizeof(float));
            else memset(a->s_out, 0, nS * sizeof(float));
        }
        return 0;
    }
    const ssd_dims d = dims_of(a);
    const int Q = d.Q, P = a->P, N = a->N, HP = a->H * a->P, nth = omp_get_max_threads();
    const size_t thr = fwd_thread_floats(&d, P, N), ncb = cb_shared_floats(&d, a->B, a->G);
    if (!hy_buf_grab(work, ncb + thr * nth)) return HY_ERR_NOMEM;
    float *CBs = ncb ? work->p : NULL, *scratch = work->p + ncb;
    const long ntask = (long)a->B * a->G * d.nb;

    #pragma omp parallel if (ntask > 1)
    {
        if (CBs) shared_cb(a, &d, CBs);
        fwd_areas w;
        fwd_areas_at(&d, P, N, scratch + thr * omp_get_thread_num(), &w);
        #pragma omp for schedule(static)
        for (long k = 0; k < ntask; k++) {
            const ssd_task t = task_of(k, a, &d);
            const int nh = t.nh, nP = nh * P;
            /* Xs = [Sᵀ ; x]: rows 0..N-1 the carried state transposed (N × nP), then the chunk's x */
            float *ST = w.Xs, *Xc = w.Xs + (size_t)N * nP;
            state_in_t(ST, nP, a->s0, a, &t);
            for (int c = 0; c < d.nch; c++) {
                const int t0 = c * Q, q = MIN(Q, a->T - t0);
                const size_t row0 = (size_t)t.b * a->T + t0;
                const float *Bc = a->Bm + row0 * a->ldbc + (size_t)t.g * N, *Cc = a->Cm + row0 * a->ldbc + (size_t)t.g * N;
                float *yc = y + row0 * ldy + (size_t)t.h0 * P;
                const float *xc = a->x + row0 * a->ldx + (size_t)t.h0 * P;
                for (int hl = 0; hl < nh; hl++) {
                    w.e[hl] = head_decays(a, row0, q, t.h0 + hl, w.avs + (size_t)hl * Q, w.Es + (size_t)hl * Q, w.Ws + (size_t)hl * Q);
                    for (int j = 0; j < q; j++) w.dts[(size_t)hl * Q + j] = a->dt[(row0 + j) * a->lddt + t.h0 + hl];
                }
                gather_x(a, &t, row0, q, Q, w.Ws, w.dts, Xc, w.XW);
                /* per head y = [E ⊙ C | L ⊙ CB ⊙ Δ] [Sᵀ ; x]: the carried-in state's part and the chunk's own
                 * in one product (Δ_i scales column i of the mask) */
                const float *CB = chunk_cb(a, &d, &t, c, q, CBs, w.CB);
                const int lda = N + Q;
                const int qn = c + 1 < d.nch ? MIN(Q, a->T - t0 - Q) : 0, rows_built = nh * q;
                /* the state entering the chunk (Sᵀ, unchanged until the products are done) goes into
                 * its slot a few rows at a time between the rows of the left operands, so that the
                 * non-temporal stores drain while the products run */
                float *keep = a->states ? slot_t(a->states, a, &d, &t, c) : NULL;
                int kept = 0;
                for (int hl = 0; hl < nh; hl++) {
                    const float *E = w.Es + (size_t)hl * Q;
                    for (int j = 0; j < q; j++) {
                        float *restrict r = w.A + (size_t)j * lda;
                        const float *restrict cj = Cc + (size_t)j * a->ldbc;
                        const float ej = E[j];
                        /* the lines this head's product writes in row j of y, and those of the next
                         * chunk's x it reads next: fetched while the row is built */
                        prefetch_floats(yc + (size_t)j * ldy + (size_t)hl * P, P, 1);
                        if (j < qn) prefetch_floats(xc + ((size_t)Q + j) * a->ldx + (size_t)hl * P, P, 0);
                        #pragma omp simd
                        for (int n = 0; n < N; n++) r[n] = ej * cj[n];
                        mask_row(j, q, w.avs + (size_t)hl * Q, w.seg, r + N, CB + (size_t)j * Q, w.dts + (size_t)hl * Q);
                        if (keep) {
                            const int upto = (int)(((long)(hl * q + j + 1) * N) / rows_built);
                            keep_state_t(ST + (size_t)kept * nP, nP, upto - kept, nP, keep + (size_t)kept * HP, HP);
                            kept = upto;
                        }
                    }
                    hy_tile_mm(q, P, N + q, w.A, lda, 1, w.Xs + (size_t)hl * P, nP, yc + (size_t)hl * P, ldy, 0.0f, NULL, false);
                }
                /* the state leaving the chunk: Sᵀ = e ⊙ Sᵀ + Bᵀ (W ⊙ Δx) */
                for (int hl = 0; hl < nh; hl++)
                    hy_tile_mm(N, P, q, Bc, 1, a->ldbc, w.XW + (size_t)hl * P, nP, ST + (size_t)hl * P, nP, w.e[hl], NULL, false);
            }
            if (a->states) keep_state_t(ST, nP, N, nP, slot_t(a->states, a, &d, &t, d.nch), HP);
            if (a->s_out) state_out_t(a->s_out, ST, nP, a, &t);
            hy_stream_fence();
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- backward ---- */

int hy_ssd_backward(const hy_ssd_args *a, const float *dy, int lddy, float *dx, int lddx, float *ddt, int ldddt,
                    float *dB, float *dC, int lddbc, float *dA, float *ds0, hy_buf *work) {
    int rc = check_args(a);
    if (rc < 0) return rc;
    if (a->B == 0) return 0;
    if (a->T == 0) {
        if (ds0) memset(ds0, 0, (size_t)a->B * a->H * a->P * a->N * sizeof(float));
        return 0;
    }
    if (!a->states) return hy_fail("ssd: backward without the chunk states of its forward");
    const ssd_dims d = dims_of(a);
    const int Q = d.Q, P = a->P, N = a->N, H = a->H, G = a->G, HP = H * P, nth = omp_get_max_threads();
    const size_t QQ = (size_t)Q * Q, QH = (size_t)Q * d.hbmax * P, QG = (size_t)Q * d.hbmax, rows = (size_t)a->B * a->T;
    const size_t thr = bwd_thread_floats(&d, P), nsm = line_up((size_t)a->B * d.nch * H), ncb = cb_shared_floats(&d, a->B, G);
    if (!hy_buf_grab(work, bwd_shared_floats(&d, a->B, a->T, H, G, N) + thr * nth)) return HY_ERR_NOMEM;
    float *CBs = ncb ? work->p : NULL, *dAp = work->p + ncb, *part = dAp + nsm,
          *scratch = work->p + bwd_shared_floats(&d, a->B, a->T, H, G, N);
    const long ntask = (long)a->B * G * d.nb;

    #pragma omp parallel if (ntask > 1)
    {
        if (CBs) shared_cb(a, &d, CBs);
        #pragma omp for schedule(static)
        for (long k = 0; k < ntask; k++) {
            const ssd_task t = task_of(k, a, &d);
            const int nh = t.nh, nP = nh * P;
            float *CBo = scratch + thr * omp_get_thread_num(), *Lm = CBo + QQ, *dM = Lm + QQ, *dG = dM + QQ, *Xt = dG + QQ,
                  *XW = Xt + QH, *Z = XW + QH, *V = Z + QH, *dYE = V + QH, *dXt = dYE + QH, *avs = dXt + QH, *Es = avs + QG,
                  *Ws = Es + QG, *das = Ws + QG, *seg = das + QG, *U = seg + Q, *e = U + Q, *de = e + d.hbmax,
                  *dAsum = de + d.hbmax, *dS = dAsum + d.hbmax, *Sp = dS + d.hbmax * d.PN, *dSp = Sp + d.hbmax * d.PN, *XtT = dSp + d.hbmax * d.PN;
            /* dB, dC: straight into the outputs with one block per group, else into this block's rows */
            float *dBt = d.nb > 1 ? part + ((size_t)t.blk * 2 * rows) * G * N : dB,
                  *dCt = d.nb > 1 ? part + ((size_t)t.blk * 2 + 1) * rows * G * N : dC;
            const int ldp = d.nb > 1 ? G * N : lddbc;
            memset(dS, 0, nh * d.PN * sizeof(float));
            for (int c = d.nch - 1; c >= 0; c--) {
                const int t0 = c * Q, q = MIN(Q, a->T - t0);
                const size_t row0 = (size_t)t.b * a->T + t0;
                const float *Bc = a->Bm + row0 * a->ldbc + (size_t)t.g * N, *Cc = a->Cm + row0 * a->ldbc + (size_t)t.g * N;
                const float *SinT = slot_t(a->states, a, &d, &t, c), *dyc = dy + row0 * lddy + (size_t)t.h0 * P;
                float *dBc = dBt + row0 * ldp + (size_t)t.g * N, *dCc = dCt + row0 * ldp + (size_t)t.g * N;
                /* the entering state and dS_out of the task's heads untransposed (nP × N), the right
                 * operands of dC's and dB's state parts */
                hy_transpose(Sp, N, SinT, HP, N, nP);
                hy_transpose(dSp, N, dS, nP, N, nP);
                for (int hl = 0; hl < nh; hl++) {
                    e[hl] = head_decays(a, row0, q, t.h0 + hl, avs + (size_t)hl * Q, Es + (size_t)hl * Q, Ws + (size_t)hl * Q);
                    de[hl] = dot_block(dS + (size_t)hl * P, nP, SinT + (size_t)hl * P, HP, N, P);
                }
                gather_rows(a, &d, &t, row0, q, a->x, a->ldx, NULL, true, Xt, Ws, XW);
                hy_transpose(XtT, Q, Xt, nP, q, nP);   /* (Δx)ᵀ: the right operand of dM = dy (Δx)ᵀ */
                gather_rows(a, &d, &t, row0, q, dy, lddy, Es, false, dYE, NULL, NULL);
                const float *CB = chunk_cb(a, &d, &t, c, q, CBs, CBo);
                hy_tile_mm(q, nP, N, Cc, a->ldbc, 1, SinT, HP, Z, nP, 0.0f, NULL, false);
                hy_tile_mm(q, nP, N, Bc, a->ldbc, 1, dS, nP, V, nP, 0.0f, NULL, false);
                /* the carried-in state's and the chunk state's parts of dC and dB */
                hy_tile_mm(q, N, nP, dYE, nP, 1, Sp, N, dCc, ldp, 0.0f, NULL, false);
                hy_tile_mm(q, N, nP, XW, nP, 1, dSp, N, dBc, ldp, 0.0f, NULL, false);
                memset(dG, 0, QQ * sizeof(float));
                for (int hl = 0; hl < nh; hl++) {
                    const float *av = avs + (size_t)hl * Q, *E = Es + (size_t)hl * Q, *W = Ws + (size_t)hl * Q;
                    float *da = das + (size_t)hl * Q, *dXh = dXt + (size_t)hl * P;
                    const float *dyh = dyc + (size_t)hl * P;
                    for (int j = 0; j < q; j++) {
                        mask_row(j, q, av, seg, Lm + (size_t)j * Q, NULL, NULL);
                        /* the previous chunk's rows of x, dy, dx and its entering state, a share
                         * per mask row, fetched while this chunk is worked on */
                        if (c > 0) {
                            const int k = hl * q + j, K = nh * q;
                            prefetch_share(a->x + (row0 - Q) * a->ldx + (size_t)t.h0 * P, a->ldx, Q, nP, k, K, 0);
                            prefetch_share(dy + (row0 - Q) * lddy + (size_t)t.h0 * P, lddy, Q, nP, k, K, 0);
                            prefetch_share(dx + (row0 - Q) * lddx + (size_t)t.h0 * P, lddx, Q, nP, k, K, 1);
                            prefetch_share(slot_t(a->states, a, &d, &t, c - 1), HP, N, nP, k, K, 0);
                        }
                    }
                    /* M = L ⊙ CB into dM's space first: d(Δx) = Mᵀ dy */
                    for (int j = 0; j < q; j++)
                        for (int i = 0; i < q; i++) dM[(size_t)j * Q + i] = Lm[(size_t)j * Q + i] * CB[(size_t)j * Q + i];
                    hy_tile_mm(q, P, q, dM, 1, Q, dyh, lddy, dXh, nP, 0.0f, NULL, false);
                    hy_tile_mm(q, q, P, dyh, lddy, 1, XtT + (size_t)hl * P * Q, Q, dM, Q, 0.0f, NULL, false);
                    /* the mask: dCB += dM ⊙ L; F = dM ⊙ L ⊙ CB below the diagonal -> da */
                    for (int i = 0; i < q; i++) U[i] = 0.0f, da[i] = 0.0f;
                    for (int j = 0; j < q; j++) {
                        float *restrict dm = dM + (size_t)j * Q, *restrict dg = dG + (size_t)j * Q;
                        const float *restrict l = Lm + (size_t)j * Q, *restrict cb = CB + (size_t)j * Q;
                        for (int i = 0; i <= j; i++) {
                            const float v = dm[i] * l[i];
                            dg[i] += v;
                            dm[i] = v * cb[i];
                        }
                    }
                    for (int r = q - 1; r >= 1; r--) {
                        const float *restrict f = dM + (size_t)r * Q;
                        for (int i = 0; i < r; i++) U[i] += f[i];
                        da[r] += vsum(U, r);
                    }
                    /* E: dE_j = dy_j · Z_j; W: dW_i = Δx_i · V_i; d(Δx) += W ⊙ V; e: de·e on every step */
                    float acc = 0;
                    for (int j = q - 1; j >= 0; j--) {
                        acc += vdot(dyh + (size_t)j * lddy, Z + (size_t)j * nP + (size_t)hl * P, P) * E[j];
                        da[j] += acc;
                    }
                    acc = 0;
                    for (int i = 0; i < q; i++) {
                        da[i] += acc;
                        const float *restrict v = V + (size_t)i * nP + (size_t)hl * P;
                        float *restrict o = dXh + (size_t)i * nP;
                        const float wi = W[i];
                        acc += vdot(Xt + (size_t)i * nP + (size_t)hl * P, v, P) * wi;
                        for (int p = 0; p < P; p++) o[p] += wi * v[p];
                    }
                    const float dee = de[hl] * e[hl];
                    for (int j = 0; j < q; j++) da[j] += dee;
                }
                /* dx = Δ d(Δx), dΔ = x · d(Δx) + A da, dA = Σ Δ da: whole rows */
                for (int hl = 0; hl < nh; hl++) dAsum[hl] = 0.0f;
                for (int j = 0; j < q; j++) {
                    const float *restrict xj = a->x + (row0 + j) * a->ldx + (size_t)t.h0 * P, *restrict gx = dXt + (size_t)j * nP;
                    const float *dtj = a->dt + (row0 + j) * a->lddt + t.h0;
                    float *restrict o = dx + (row0 + j) * lddx + (size_t)t.h0 * P, *ddtj = ddt + (row0 + j) * ldddt + t.h0;
                    for (int hl = 0; hl < nh; hl++) {
                        const float s = dtj[hl], daj = das[(size_t)hl * Q + j];
                        for (int p = 0; p < P; p++) o[hl * P + p] = s * gx[hl * P + p];
                        ddtj[hl] = vdot(xj + hl * P, gx + hl * P, P) + a->A[t.h0 + hl] * daj;
                        dAsum[hl] += s * daj;
                    }
                }
                for (int hl = 0; hl < nh; hl++) dAp[((size_t)t.b * d.nch + c) * H + t.h0 + hl] = dAsum[hl];
                hy_tile_mm(q, N, q, dG, Q, 1, Bc, a->ldbc, dCc, ldp, 1.0f, NULL, true);
                hy_tile_mm(q, N, q, dG, 1, Q, Cc, a->ldbc, dBc, ldp, 1.0f, NULL, false);
                /* the state entering the chunk: dSᵀ = e ⊙ dSᵀ + Cᵀ (E ⊙ dy), head by head (the decay
                 * applied on the way) */
                for (int hl = 0; hl < nh; hl++)
                    hy_tile_mm(N, P, q, Cc, 1, a->ldbc, dYE + (size_t)hl * P, nP, dS + (size_t)hl * P, nP, e[hl], NULL, false);
            }
            if (ds0) state_out_t(ds0, dS, nP, a, &t);
        }
    }
    /* several blocks per group: dB, dC = the blocks' rows added in block order */
    if (d.nb > 1) {
        #pragma omp parallel for schedule(static) if (rows * G * N > 16384)
        for (long r = 0; r < (long)rows; r++)
            for (int w = 0; w < 2; w++) {
                float *restrict o = (w ? dC : dB) + (size_t)r * lddbc;
                /* each column summed from 0 in block order, a block's row at a time so that the
                 * column loop vectorizes (gcc 12 does not, inside the parallel region, unhinted) */
                for (int i = 0; i < G * N; i++) o[i] = 0.0f;
                for (int blk = 0; blk < d.nb; blk++) {
                    const float *restrict pb = part + (((size_t)blk * 2 + w) * rows + r) * G * N;
                    #pragma omp simd
                    for (int i = 0; i < G * N; i++) o[i] += pb[i];
                }
            }
    }
    for (int h = 0; h < H; h++) {
        double s = 0;
        for (int b = 0; b < a->B; b++)
            for (int c = 0; c < d.nch; c++) s += dAp[((size_t)b * d.nch + c) * H + h];
        dA[h] += (float)s;
    }
    return 0;
}

/* ---------------------------------------------------------------- the plain recurrence ---- */

int hy_ssd_scan(const hy_ssd_args *a, float *y, int ldy) {
    int rc = check_args(a);
    if (rc < 0) return rc;
    if (!a->s_out) return hy_fail("ssd: the step-by-step scan needs a state to write (s_out)");
    const int P = a->P, N = a->N, H = a->H, Hg = H / a->G;
    const size_t PN = (size_t)P * N;
    const long lanes = (long)a->B * H;
    #pragma omp parallel for schedule(static) if (lanes > 1 && (size_t)a->T * PN * lanes > 65536)
    for (long bh = 0; bh < lanes; bh++) {
        const int b = (int)(bh / H), h = (int)(bh % H), g = h / Hg;
        float *S = a->s_out + (size_t)bh * PN;
        if (a->s0 && a->s0 != a->s_out) memcpy(S, a->s0 + (size_t)bh * PN, PN * sizeof(float));
        else if (!a->s0) memset(S, 0, PN * sizeof(float));
        for (int t = 0; t < a->T; t++) {
            const size_t row = (size_t)b * a->T + t;
            const float dl = a->dt[row * a->lddt + h], e = hy_expf_neg(dl * a->A[h]);
            const float *restrict xt = a->x + row * a->ldx + (size_t)h * P;
            const float *restrict Bt = a->Bm + row * a->ldbc + (size_t)g * N, *restrict Ct = a->Cm + row * a->ldbc + (size_t)g * N;
            float *restrict yt = y + row * ldy + (size_t)h * P;
            for (int p = 0; p < P; p++) {
                float *restrict s = S + (size_t)p * N;
                const float u = dl * xt[p];
                for (int n = 0; n < N; n++) s[n] = e * s[n] + u * Bt[n];
                yt[p] = vdot(s, Ct, N);
            }
        }
    }
    return 0;
}

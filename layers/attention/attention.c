/* attention — causal multi-head softmax attention (SPEC §2), with grouped-query heads and optional
 * RoPE. q_proj (H·hd, d), k_proj and v_proj (Hkv·hd, d), o_proj (d, H·hd), no biases, hd = d/H.
 *
 * Training path: the projections are GEMMs over all B·T rows (hy_linear_*): q, k and v land side by
 * side in one (B·T, H·hd + 2·Hkv·hd) buffer, from one product with the stacked weight when the three
 * weights lie back to back (as the model's parameter arena lays them out), and their gradients go
 * back through one product each for dx and the stacked dW; RoPE rotates q and k in place; the core runs in the FlashAttention-2 style kernels of attention_flash.c, which keep only
 * O and the per-row log-sum-exp for backward. Streaming keeps a KV cache per sequence (keys after
 * RoPE, stored transposed so the same kernels serve prefill and decode). A naive path that
 * materialises every T×T probability matrix is kept as the reference for tests and benchmarks.
 *
 * Layouts: qkv (B, T, H·hd + 2·Hkv·hd): q at column 0, k at H·hd, v at (H + Hkv)·hd, head h of each
 * at columns h·hd from there (dqkv the same for their gradients); o (B, T, H·hd); kt, vt are the
 * per-head transposes the tile kernels read, stored as blocks of HY_FLASH_BC keys, each one
 * contiguous (hd, BC) block: (B, Hkv, ceil(T/BC), hd, BC). When T is longer than one key tile the
 * tiled path also hands the kernels head-major copies (B, nh, T, hd) of q, k, v and dO, so every
 * tile the micro-kernel streams is one contiguous block: with rows H·hd floats apart a 64-row tile
 * maps to only a quarter of the L1 sets and does not stay cached (measured: kernel forward ~15%
 * faster, T = 2048, one thread, CPU time; the copies cost O(T·d), ~1% of the kernel). Within one
 * tile every row is read by one task only and the kernels read the rows where they are. */
#include "layers/attention/attention.h"
#include "core/error.h"
#include "core/gemm.h"
#include "core/mem.h"
#include "core/simd.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum { OPT_N_HEADS, OPT_N_KV_HEADS, OPT_ROPE_THETA };
static const hy_opt_spec attn_opts[] = {
    {"n_heads", HY_OPT_INT, 0, 1, 1 << 16, HY_OPT_DEFAULT_AUTO,
     "query heads H (head size d_model/H); auto = the largest H <= max(1, d_model/64) dividing d_model "
     "(64-wide heads whenever d_model is a multiple of 64)"},
    {"n_kv_heads", HY_OPT_INT, 0, 1, 1 << 16, HY_OPT_DEFAULT_AUTO,
     "key/value heads (grouped-query attention); auto = n_heads; must divide n_heads"},
    {"rope_theta", HY_OPT_FLOAT, 0, 0, 1e12, HY_OPT_DEFAULT_NULL,
     "RoPE base (e.g. 10000), Llama convention; null = no rotary embedding"},
};

enum { P_Q, P_K, P_V, P_O };

typedef struct {
    int d, H, Hkv, hd;
    bool rope;
    float theta;
} geom;

/* Head geometry of resolved options. */
static geom geom_of(const hy_opts *o, int d) {
    geom g = {d, hy_opt_int(o, OPT_N_HEADS), hy_opt_int(o, OPT_N_KV_HEADS), 0, !o->is_null[OPT_ROPE_THETA],
              hy_opt_float(o, OPT_ROPE_THETA)};
    g.hd = d / g.H;
    return g;
}

/* Row stride of the qkv and dqkv buffers: q, k, v side by side. */
static int qkv_width(const geom *g) { return (g->H + 2 * g->Hkv) * g->hd; }

/* Caches of the last forward (kept for backward) and workspaces, grown with hy_buf_grab(). */
typedef struct {
    const float *x;            /* input of the last forward (owned by the caller) */
    int B, T;
    bool have_fwd, naive;      /* a forward was kept for backward; by which path */
    hy_buf qkv, kt, o, lse;    /* qkv: (B·T, qkv_width) */
    hy_buf dout, vt, dqkv;
    hy_buf qh, kh, vh, douth;  /* tiled path: head-major copies (B, nh, T, hd) the kernels read */
    hy_buf probs, dprobs;      /* naive path: (B, H, T, T) probabilities, one T×T gradient */
    hy_buf rcos, rsin;         /* RoPE tables (rope_len, hd/2) */
    int rope_len;
} attn_priv;

/* Streaming state of B sequences: the KV cache, capacity grown by doubling (from 256 tokens). */
typedef struct {
    int B, pos, cap;
    float *kt;                 /* (B, Hkv, cap/BC, hd, BC): keys after RoPE, transposed in key blocks */
    float *v;                  /* (B, cap, Hkv·hd) */
    hy_buf qkv, o;             /* the new tokens' projections (qkv layout) and attention output */
} attn_state;

/* ---------------------------------------------------------------- options, params ---- */

/* Fills auto head counts and checks the shape constraints, naming the offending key. */
static int attn_resolve(hy_opts *o, int d, int *bad_opt, char *msg, size_t msg_len) {
    bool rope = !o->is_null[OPT_ROPE_THETA];
    if (rope && !(o->v[OPT_ROPE_THETA] > 0)) {
        *bad_opt = OPT_ROPE_THETA;
        snprintf(msg, msg_len, "rope_theta = %g must be > 0 (or null for no RoPE)", o->v[OPT_ROPE_THETA]);
        return HY_ERR_CONFIG;
    }
    if (o->is_auto[OPT_N_HEADS]) {
        int H = d / 64 > 1 ? d / 64 : 1;
        while (H > 1 && (d % H || (rope && (d / H) % 2))) H--;
        o->v[OPT_N_HEADS] = H;
        o->is_auto[OPT_N_HEADS] = false;
    }
    int H = hy_opt_int(o, OPT_N_HEADS);
    if (H > d || d % H) {
        *bad_opt = OPT_N_HEADS;
        snprintf(msg, msg_len, "n_heads = %d does not divide d_model = %d", H, d);
        return HY_ERR_CONFIG;
    }
    if (rope && (d / H) % 2) {
        *bad_opt = OPT_N_HEADS;
        snprintf(msg, msg_len, "n_heads = %d gives head size %d, which must be even when rope_theta is set", H,
                 d / H);
        return HY_ERR_CONFIG;
    }
    if (o->is_auto[OPT_N_KV_HEADS]) {
        o->v[OPT_N_KV_HEADS] = H;
        o->is_auto[OPT_N_KV_HEADS] = false;
    }
    int Hkv = hy_opt_int(o, OPT_N_KV_HEADS);
    if (Hkv > H || H % Hkv) {
        *bad_opt = OPT_N_KV_HEADS;
        snprintf(msg, msg_len, "n_kv_heads = %d does not divide n_heads = %d", Hkv, H);
        return HY_ERR_CONFIG;
    }
    return 0;
}

/* The four projection weights, SPEC names and PyTorch (out, in) shapes, all decayed. */
static int attn_param_specs(const hy_opts *o, int d, hy_param_spec *out) {
    geom g = geom_of(o, d);
    if (out) {
        out[P_Q] = (hy_param_spec){"q_proj.weight", 2, {g.H * g.hd, d}, 0};
        out[P_K] = (hy_param_spec){"k_proj.weight", 2, {g.Hkv * g.hd, d}, 0};
        out[P_V] = (hy_param_spec){"v_proj.weight", 2, {g.Hkv * g.hd, d}, 0};
        out[P_O] = (hy_param_spec){"o_proj.weight", 2, {d, g.H * g.hd}, 0};
    }
    return 4;
}

/* The four projections are plain linears (docs/blocks.md, "Initialization"); o_proj writes into the
 * residual stream, so it is an output projection (hy_init_output_linear). */
static void attn_init(hy_layer *L, hy_rng *rng) {
    geom g = geom_of(&L->opts, L->d_model);
    hy_init_linear(L->p[P_Q], NULL, g.H * g.hd, g.d, rng);
    hy_init_linear(L->p[P_K], NULL, g.Hkv * g.hd, g.d, rng);
    hy_init_linear(L->p[P_V], NULL, g.Hkv * g.hd, g.d, rng);
    hy_init_output_linear(L, L->p[P_O], NULL, g.d, g.H * g.hd, rng);
}

/* ---------------------------------------------------------------- helpers ---- */

/* The layer's caches, created on first use. */
static attn_priv *priv_of(hy_layer *L) {
    if (!L->priv) L->priv = hy_calloc(sizeof(attn_priv));
    return L->priv;
}

/* RoPE cos/sin tables for positions 0..n-1, grown geometrically (streaming adds one at a time).
 * inv_freq_i = theta^(-2i/hd), angle = pos·inv_freq_i, in float as PyTorch computes them. */
static int rope_tables(attn_priv *P, const geom *g, int n) {
    if (n <= P->rope_len) return 0;
    int half = g->hd / 2, len = n > 2 * P->rope_len ? n : 2 * P->rope_len;
    if (len < 256) len = 256;
    if (!hy_buf_reserve(&P->rcos, (size_t)len * half) || !hy_buf_reserve(&P->rsin, (size_t)len * half))
        return HY_ERR_NOMEM;
    float inv[half > 0 ? half : 1];
    for (int i = 0; i < half; i++) inv[i] = 1.0f / powf(g->theta, (float)(2 * i) / (float)g->hd);
    float *cs = P->rcos.p, *sn = P->rsin.p;
    #pragma omp parallel for schedule(static)
    for (int pos = P->rope_len; pos < len; pos++)
        for (int i = 0; i < half; i++) {
            float ang = (float)pos * inv[i];
            cs[(size_t)pos * half + i] = cosf(ang);
            sn[(size_t)pos * half + i] = sinf(ang);
        }
    P->rope_len = len;
    return 0;
}

/* Rotates the first nh heads of every row of x (B·T rows, ld floats apart) in place, row t of a
 * sequence at position pos0 + t; inverse = the transpose (rotation by -angle), which is RoPE's
 * backward. q and k lie side by side in the qkv layout, so one pass rotates both (nh = H + Hkv). */
static void rope_apply(const attn_priv *P, const geom *g, float *x, int ld, int B, int T, int nh, int pos0,
                       bool inverse) {
    int hd = g->hd, half = hd / 2;
    float sg = inverse ? -1.0f : 1.0f;
    #pragma omp parallel for schedule(static)
    for (long r = 0; r < (long)B * T; r++) {
        const float *c = P->rcos.p + (size_t)(pos0 + r % T) * half, *s = P->rsin.p + (size_t)(pos0 + r % T) * half;
        for (int h = 0; h < nh; h++) {
            float *p = x + (size_t)r * ld + (size_t)h * hd;
            for (int i = 0; i < half; i++) {
                float a = p[i], b = p[i + half];
                p[i] = a * c[i] - sg * b * s[i];
                p[i + half] = b * c[i] + sg * a * s[i];
            }
        }
    }
}

/* Whether q_proj, k_proj and v_proj lie back to back in `w` (L->p or L->g), i.e. form one stacked
 * (H·hd + 2·Hkv·hd, d) matrix: so in the model's parameter arena, whose tensors are padded to 16
 * floats, whenever H·hd·d and Hkv·hd·d are multiples of 16; not in a standalone layer, whose
 * tensors are separate allocations. Compared as addresses (no pointer arithmetic across objects). */
static bool qkv_stacked(float *const *w, const geom *g) {
    uintptr_t q = (uintptr_t)w[P_Q], nq = (uintptr_t)g->H * g->hd * g->d * sizeof(float),
              nk = (uintptr_t)g->Hkv * g->hd * g->d * sizeof(float);
    return q && (uintptr_t)w[P_K] == q + nq && (uintptr_t)w[P_V] == q + nq + nk;
}

/* q, k, v of B·T rows of x (positions pos0..pos0+T-1) into qkv (B·T rows of qkv_width), RoPE
 * applied to q and k: one product with the stacked weight when the weights allow it, else one per
 * projection into its columns. */
static int project_qkv(hy_layer *L, attn_priv *P, const geom *g, const float *x, int B, int T, int pos0, float *qkv) {
    int rows = B * T, W = qkv_width(g), nq = g->H * g->hd, nk = g->Hkv * g->hd;
    if (qkv_stacked(L->p, g)) hy_linear_forward(qkv, x, L->p[P_Q], NULL, rows, g->d, W);
    else {
        int rc = hy_gemm_bf16_hold(x, (size_t)rows * g->d);   /* bf16: x converted once for the three */
        if (rc < 0) return rc;
        hy_gemm(false, true, rows, nq, g->d, 1.0f, x, g->d, L->p[P_Q], g->d, 0.0f, qkv, W);
        hy_gemm(false, true, rows, nk, g->d, 1.0f, x, g->d, L->p[P_K], g->d, 0.0f, qkv + nq, W);
        hy_gemm(false, true, rows, nk, g->d, 1.0f, x, g->d, L->p[P_V], g->d, 0.0f, qkv + nq + nk, W);
        hy_gemm_bf16_release(x);
    }
    if (g->rope) {
        if (rope_tables(P, g, pos0 + T) < 0) return HY_ERR_NOMEM;
        rope_apply(P, g, qkv, W, B, T, g->H + g->Hkv, pos0, false);
    }
    return 0;
}

/* The transposed view (kt, vt layout) of nh heads of hd over n tokens, blocks of BC keys. */
static hy_flash_view tview(float *p, int nh, int hd, int n) {
    size_t blk = (size_t)hd * HY_FLASH_BC, hs = (size_t)(n + HY_FLASH_BC - 1) / HY_FLASH_BC * blk;
    return (hy_flash_view){p, hs * nh, hs, HY_FLASH_BC, blk};
}

/* Writes the per-head transpose of src (B·T rows of nh heads of hd, ld floats apart) into the tiled
 * view dst, token t of a sequence going to key column t0 + t. Each run of tokens that lands in one
 * key block is written row by row of the block (contiguous stores, the strided reads stay in L1):
 * scattering one token's hd values BC floats apart cost ~1 ns per value at T 64. Work-shared over
 * the calling team (no barrier at the end): call it inside a parallel region. */
static void transpose_heads(const float *src, int ld, int B, int T, int nh, int hd, hy_flash_view dst, int t0) {
    int nblk = (T + 63) / 64;
    size_t st = (size_t)ld;
    #pragma omp for collapse(2) schedule(static) nowait
    for (int bh = 0; bh < B * nh; bh++)
        for (int blk = 0; blk < nblk; blk++) {
            int b = bh / nh, h = bh % nh, ta = blk * 64, tb = ta + 64 < T ? ta + 64 : T;
            float *d = dst.p + b * dst.bs + h * dst.hs;
            const float *s = src + (size_t)b * T * st + (size_t)h * hd;
            for (int t = ta; t < tb;) {
                int u = t0 + t, run = tb - t < HY_FLASH_BC - u % HY_FLASH_BC ? tb - t : HY_FLASH_BC - u % HY_FLASH_BC;
                float *col = d + (size_t)(u / HY_FLASH_BC) * dst.tile + u % HY_FLASH_BC;
                const float *in = s + (size_t)t * st;
                for (int c = 0; c < hd; c++) {
                    float *o = col + (size_t)c * dst.ld;
                    for (int k = 0; k < run; k++) o[k] = in[(size_t)k * st + c];
                }
                t += run;
            }
        }
}

/* Head-major copy of src (B·T rows of nh heads of hd, ld floats apart): dst is (B, nh, T, hd).
 * Vector loops (the tail masked), not memcpy: a library call per hd floats cost more than the copy.
 * Work-shared over the calling team (no barrier at the end), as transpose_heads. */
static void heads_copy(const float *src, int ld, int B, int T, int nh, int hd, float *dst) {
    #pragma omp for schedule(static) nowait
    for (long r = 0; r < (long)B * T; r++) {
        long b = r / T, t = r % T;
        const float *s = src + (size_t)r * ld;
        for (int h = 0; h < nh; h++) {
            float *d = dst + (((size_t)b * nh + h) * T + t) * hd;
            const float *e = s + (size_t)h * hd;
            int c = 0;
            for (; c + HY_VW <= hd; c += HY_VW) vw_store(d + c, vw_load(e + c));
            if (c < hd) vw_store_masked(d + c, vw_mask_first(hd - c), vw_load_masked(e + c, vw_mask_first(hd - c)));
        }
    }
}

/* The head-major view of heads_copy's layout. */
static hy_flash_view hview(float *p, int nh, int hd, int T) {
    return (hy_flash_view){p, (size_t)nh * T * hd, (size_t)T * hd, hd, 0};
}

/* Whether the tiled path hands the kernels head-major copies of q, k, v and dO: not when T fits one
 * key tile, where every row is read by one task only (its head's, or its kv group's), so a copy
 * would move each row once more than the kernel's strided reads do. */
static bool head_copies(int T) { return T > HY_FLASH_BC; }

/* Whether the tiled path hands the kernels the transposed keys and values (kt, vt): not when the
 * sequence fits one key tile and takes the query-tile path in f32 (HY_FLASH_DECODE_TQ < T <= 64),
 * where each kernel task transposes its own tile in L1 (hy_flash_args), which saves a pass over
 * memory and a parallel region in both forward and backward. The bf16 products read tiles packed
 * from the transposes, and the split-key path of T <= HY_FLASH_DECODE_TQ reads kt. */
static bool transposes(int T) {
    return T > HY_FLASH_BC || T <= HY_FLASH_DECODE_TQ || hy_gemm_get_precision() == HY_PREC_BF16;
}

/* The kernel arguments for the training layout of the caches (Tq = Tk = T): q, k, v, dO read
 * from the head-major copies (head_copies) or else from qkv's columns and dout, o in the
 * projections' layout, dq, dk, dv in dqkv's columns; kt and vt empty unless transposes(T). */
static hy_flash_args train_args(const geom *g, attn_priv *P, int B, int T) {
    int qld = g->H * g->hd, W = qkv_width(g);
    size_t qs = (size_t)T * qld, ws = (size_t)T * W;
    float *dq = P->dqkv.p, *dk = dq ? dq + qld : NULL, *dv = dq ? dk + g->Hkv * g->hd : NULL;
    if (!head_copies(T)) {
        float *q = P->qkv.p, *k = q + qld, *v = k + g->Hkv * g->hd;
        bool t = transposes(T);
        return (hy_flash_args){B, g->H, g->Hkv, g->hd, T, T, 1.0f / sqrtf((float)g->hd),
                               hy_gemm_get_precision() == HY_PREC_BF16, .q = {q, ws, g->hd, W, 0},
                               .k = {k, ws, g->hd, W, 0}, .kt = t ? tview(P->kt.p, g->Hkv, g->hd, T) : (hy_flash_view){0},
                               .v = {v, ws, g->hd, W, 0}, .vt = t ? tview(P->vt.p, g->Hkv, g->hd, T) : (hy_flash_view){0},
                               .o = {P->o.p, qs, g->hd, qld, 0}, .dout = {P->dout.p, qs, g->hd, qld, 0},
                               .dq = {dq, ws, g->hd, W, 0}, .dk = {dk, ws, g->hd, W, 0}, .dv = {dv, ws, g->hd, W, 0},
                               .lse = P->lse.p};
    }
    hy_flash_args a = {B, g->H, g->Hkv, g->hd, T, T, 1.0f / sqrtf((float)g->hd), hy_gemm_get_precision() == HY_PREC_BF16,
                       .q = hview(P->qh.p, g->H, g->hd, T), .k = hview(P->kh.p, g->Hkv, g->hd, T),
                       .kt = tview(P->kt.p, g->Hkv, g->hd, T), .v = hview(P->vh.p, g->Hkv, g->hd, T),
                       .vt = tview(P->vt.p, g->Hkv, g->hd, T), .o = {P->o.p, qs, g->hd, qld, 0},
                       .dout = hview(P->douth.p, g->H, g->hd, T), .dq = {dq, ws, g->hd, W, 0},
                       .dk = {dk, ws, g->hd, W, 0}, .dv = {dv, ws, g->hd, W, 0}, .lse = P->lse.p};
    return a;
}

/* Shared by both paths: q, k, v (after RoPE) of x into the caches. */
static int forward_common(hy_layer *L, attn_priv *P, const geom *g, const float *x, int B, int T) {
    size_t rows = (size_t)B * T;
    if (!hy_buf_grab(&P->qkv, rows * qkv_width(g)) || !hy_buf_grab(&P->o, rows * g->H * g->hd)) return HY_ERR_NOMEM;
    P->have_fwd = false;
    return project_qkv(L, P, g, x, B, T, 0, P->qkv.p);
}

/* Backward of RoPE and of the three input projections, from dq, dk, dv in dqkv: with stacked
 * weights and gradients dx = dqkv W_qkv and dW_qkv += dqkvᵀ x, one product each; else per
 * projection, dx summed over the three. */
static int backward_common(hy_layer *L, attn_priv *P, const geom *g, float *dx, int B, int T) {
    int rows = B * T, W = qkv_width(g), d = g->d;
    float *dqkv = P->dqkv.p;
    if (g->rope) rope_apply(P, g, dqkv, W, B, T, g->H + g->Hkv, 0, true);
    int rc = hy_gemm_bf16_hold(P->x, (size_t)rows * d);   /* bf16: x converted once for the dW */
    if (rc < 0) return rc;
    if (qkv_stacked(L->p, g) && qkv_stacked(L->g, g))
        hy_linear_backward(dx, L->g[P_Q], NULL, dqkv, P->x, L->p[P_Q], rows, d, W, false);
    else {
        int col = 0;
        for (int j = P_Q; j <= P_V; j++) {
            int n = (j == P_Q ? g->H : g->Hkv) * g->hd;   /* dx (+)= dY_j W_j; dW_j += dY_jᵀ x */
            hy_gemm(false, false, rows, d, n, 1.0f, dqkv + col, W, L->p[j], d, j == P_Q ? 0.0f : 1.0f, dx, d);
            hy_gemm(true, false, n, d, rows, 1.0f, dqkv + col, W, P->x, d, 1.0f, L->g[j], d);
            col += n;
        }
    }
    hy_gemm_bf16_release(P->x);
    return 0;
}

/* Checks that backward follows a kept forward of the same path and shape; sizes the gradients. */
static int backward_prepare(hy_layer *L, attn_priv *P, const geom *g, const float *dy, int B, int T, bool naive) {
    if (!P || !P->have_fwd || P->naive != naive || P->B != B || P->T != T)
        return hy_fail("attention: backward without a matching %s forward (keep_for_backward)",
                       naive ? "naive" : "tiled");
    size_t rows = (size_t)B * T, nq = rows * g->H * g->hd;
    if (!hy_buf_grab(&P->dout, nq) || !hy_buf_grab(&P->dqkv, rows * qkv_width(g))) return HY_ERR_NOMEM;
    /* dO = dy W_o; dW_o += dyᵀ O */
    hy_linear_backward(P->dout.p, L->g[P_O], NULL, dy, P->o.p, L->p[P_O], (int)rows, g->H * g->hd, g->d, false);
    return 0;
}

/* ---------------------------------------------------------------- tiled path ---- */

/* Training/inference forward: projections, RoPE, transposed keys (transposes(T)), the tiled kernel
 * (O and lse kept), then y = O W_oᵀ. */
static int attn_forward(hy_layer *L, const float *x, float *y, int B, int T) {
    attn_priv *P = priv_of(L);
    geom g = geom_of(&L->opts, L->d_model);
    if (!P) return HY_ERR_NOMEM;
    if (B <= 0 || T <= 0) return 0;
    size_t rows = (size_t)B * T;
    int rc = forward_common(L, P, &g, x, B, T);
    if (rc < 0) return rc;
    bool copies = head_copies(T), trans = transposes(T);
    if ((trans && !hy_buf_grab(&P->kt, B * tview(NULL, g.Hkv, g.hd, T).bs)) || !hy_buf_grab(&P->lse, rows * g.H) ||
        (copies && (!hy_buf_grab(&P->qh, rows * g.H * g.hd) || !hy_buf_grab(&P->vh, rows * g.Hkv * g.hd))))
        return HY_ERR_NOMEM;
    hy_flash_args a = train_args(&g, P, B, T);
    int W = qkv_width(&g), nq = g.H * g.hd, nk = g.Hkv * g.hd;
    #pragma omp parallel if (trans)   /* the transposed keys and the copies in one region */
    if (trans) {
        transpose_heads(P->qkv.p + nq, W, B, T, g.Hkv, g.hd, a.kt, 0);
        if (copies) {
            heads_copy(P->qkv.p, W, B, T, g.H, g.hd, P->qh.p);
            heads_copy(P->qkv.p + nq + nk, W, B, T, g.Hkv, g.hd, P->vh.p);
        }
    }
    if ((rc = hy_flash_forward(&a)) < 0) return rc;
    hy_linear_forward(y, P->o.p, L->p[P_O], NULL, (int)rows, g.H * g.hd, g.d);
    P->x = x, P->B = B, P->T = T, P->naive = false, P->have_fwd = L->keep_for_backward;
    return 0;
}

/* Backward of attn_forward: dO through o_proj, the tiled backward (recomputing P from the kept
 * lse), then RoPE and the input projections. */
static int attn_backward(hy_layer *L, const float *dy, float *dx, int B, int T) {
    attn_priv *P = L->priv;
    geom g = geom_of(&L->opts, L->d_model);
    if (B <= 0 || T <= 0) return 0;
    int rc = backward_prepare(L, P, &g, dy, B, T, false);
    if (rc < 0) return rc;
    size_t rows = (size_t)B * T;
    bool copies = head_copies(T), trans = transposes(T);
    if ((trans && !hy_buf_grab(&P->vt, B * tview(NULL, g.Hkv, g.hd, T).bs)) ||
        (copies && (!hy_buf_grab(&P->kh, rows * g.Hkv * g.hd) || !hy_buf_grab(&P->douth, rows * g.H * g.hd))))
        return HY_ERR_NOMEM;
    hy_flash_args a = train_args(&g, P, B, T);
    int W = qkv_width(&g), nq = g.H * g.hd, nk = g.Hkv * g.hd;
    #pragma omp parallel if (trans)   /* the transposed values and the copies in one region */
    if (trans) {
        transpose_heads(P->qkv.p + nq + nk, W, B, T, g.Hkv, g.hd, a.vt, 0);
        if (copies) {
            heads_copy(P->qkv.p + nq, W, B, T, g.Hkv, g.hd, P->kh.p);
            heads_copy(P->dout.p, g.H * g.hd, B, T, g.H, g.hd, P->douth.p);
        }
    }
    if ((rc = hy_flash_backward(&a)) < 0) return rc;
    return backward_common(L, P, &g, dx, B, T);
}

/* ---------------------------------------------------------------- naive path ---- */

/* Reference forward: per (b, h) S = scale Q Kᵀ over all T×T pairs (hy_gemm), causal mask and
 * softmax with libm expf, O = P V. Keeps every P (B·H·T² floats) for backward. */
int hy_attention_forward_naive(hy_layer *L, const float *x, float *y, int B, int T) {
    attn_priv *P = priv_of(L);
    geom g = geom_of(&L->opts, L->d_model);
    if (!P) return HY_ERR_NOMEM;
    if (B <= 0 || T <= 0) return 0;
    int rc = forward_common(L, P, &g, x, B, T);
    if (rc < 0) return rc;
    size_t TT = (size_t)T * T;
    if (!hy_buf_grab(&P->probs, (size_t)B * g.H * TT)) return HY_ERR_NOMEM;
    int qld = g.H * g.hd, W = qkv_width(&g), grp = g.H / g.Hkv;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < g.H; h++) {
            float *S = P->probs.p + ((size_t)b * g.H + h) * TT;
            const float *Q = P->qkv.p + (size_t)b * T * W + h * g.hd, *K = P->qkv.p + (size_t)b * T * W + qld + (h / grp) * g.hd,
                        *V = K + g.Hkv * g.hd;
            hy_gemm(false, true, T, T, g.hd, 1.0f / sqrtf((float)g.hd), Q, W, K, W, 0.0f, S, T);
            #pragma omp parallel for schedule(static)
            for (int i = 0; i < T; i++) {
                float *s = S + (size_t)i * T, m = s[0], sum = 0;
                for (int j = 1; j <= i; j++) m = s[j] > m ? s[j] : m;
                for (int j = 0; j <= i; j++) sum += s[j] = expf(s[j] - m);
                for (int j = 0; j <= i; j++) s[j] /= sum;
                for (int j = i + 1; j < T; j++) s[j] = 0.0f;
            }
            hy_gemm(false, false, T, g.hd, T, 1.0f, S, T, V, W, 0.0f, P->o.p + (size_t)b * T * qld + h * g.hd, qld);
        }
    hy_linear_forward(y, P->o.p, L->p[P_O], NULL, B * T, qld, g.d);
    P->x = x, P->B = B, P->T = T, P->naive = true, P->have_fwd = L->keep_for_backward;
    return 0;
}

/* Reference backward from the kept P: dV = Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP - rowsum(P ∘ dP)),
 * dQ = scale dS K, dK = scale dSᵀ Q, per (b, h), every product a full T×T hy_gemm. */
int hy_attention_backward_naive(hy_layer *L, const float *dy, float *dx, int B, int T) {
    attn_priv *P = L->priv;
    geom g = geom_of(&L->opts, L->d_model);
    if (B <= 0 || T <= 0) return 0;
    int rc = backward_prepare(L, P, &g, dy, B, T, true);
    if (rc < 0) return rc;
    size_t TT = (size_t)T * T;
    if (!hy_buf_grab(&P->dprobs, TT)) return HY_ERR_NOMEM;
    int qld = g.H * g.hd, W = qkv_width(&g), grp = g.H / g.Hkv;
    size_t vcol = (size_t)qld + g.Hkv * g.hd;   /* k at column qld of qkv and dqkv, v at vcol */
    float scale = 1.0f / sqrtf((float)g.hd), *dS = P->dprobs.p, *qkv = P->qkv.p, *dqkv = P->dqkv.p;
    memset(dqkv, 0, (size_t)B * T * W * sizeof(float));   /* dk, dv are sums over heads (dq is overwritten) */
    for (int b = 0; b < B; b++)
        for (int h = 0; h < g.H; h++) {
            const float *Pm = P->probs.p + ((size_t)b * g.H + h) * TT;
            size_t qo = (size_t)b * T * qld + h * g.hd, wq = (size_t)b * T * W + h * g.hd,
                   wk = (size_t)b * T * W + qld + (h / grp) * g.hd, wv = wk - qld + vcol;
            hy_gemm(true, false, T, g.hd, T, 1.0f, Pm, T, P->dout.p + qo, qld, 1.0f, dqkv + wv, W);
            hy_gemm(false, true, T, T, g.hd, 1.0f, P->dout.p + qo, qld, qkv + wv, W, 0.0f, dS, T);
            #pragma omp parallel for schedule(static)
            for (int i = 0; i < T; i++) {
                const float *p = Pm + (size_t)i * T;
                float *s = dS + (size_t)i * T, D = 0;
                for (int j = 0; j <= i; j++) D += p[j] * s[j];
                for (int j = 0; j < T; j++) s[j] = p[j] * (s[j] - D);
            }
            hy_gemm(false, false, T, g.hd, T, scale, dS, T, qkv + wk, W, 0.0f, dqkv + wq, W);
            hy_gemm(true, false, T, g.hd, T, scale, dS, T, qkv + wq, W, 1.0f, dqkv + wk, W);
        }
    return backward_common(L, P, &g, dx, B, T);
}

/* ---------------------------------------------------------------- streaming ---- */

/* An empty KV cache for B sequences; the cache itself is allocated by the first prefill/step. */
static int attn_state_new(hy_layer *L, int B, void **state) {
    (void)L;
    attn_state *s = hy_calloc(sizeof *s);
    if (!s) return HY_ERR_NOMEM;
    s->B = B;
    *state = s;
    return 0;
}

/* Frees a state of attn_state_new (NULL is fine). */
static void attn_state_free(hy_layer *L, void *state) {
    (void)L;
    attn_state *s = state;
    if (!s) return;
    hy_free(s->kt), hy_free(s->v);
    hy_buf_free(&s->qkv), hy_buf_free(&s->o);
    hy_free(s);
}

/* Makes room for `need` tokens: capacity doubles from 256 tokens; the filled prefix of each
 * (sequence, kv head) is copied over (whole key blocks for the transposed keys). */
static int cache_grow(attn_state *s, const geom *g, int need) {
    if (need <= s->cap) return 0;
    if (need > HY_MAX_POSITION)
        return hy_fail("attention: the KV cache holds at most %d tokens per sequence, asked for %d", HY_MAX_POSITION, need);
    int cap = s->cap ? s->cap : 256;
    while (cap < need) cap *= 2;
    size_t kw = (size_t)g->Hkv * g->hd;
    float *kt = hy_malloc((size_t)s->B * kw * cap * sizeof(float)), *v = hy_malloc((size_t)s->B * cap * kw * sizeof(float));
    if (!kt || !v) {
        hy_free(kt), hy_free(v);
        return HY_ERR_NOMEM;
    }
    size_t used = (size_t)(s->pos + HY_FLASH_BC - 1) / HY_FLASH_BC * HY_FLASH_BC * g->hd;
    for (size_t r = 0; s->pos && r < (size_t)s->B * g->Hkv; r++)   /* (b, g) blocks of the transposed keys */
        memcpy(kt + r * cap * g->hd, s->kt + r * s->cap * g->hd, used * sizeof(float));
    for (int b = 0; s->pos && b < s->B; b++)
        memcpy(v + (size_t)b * cap * kw, s->v + (size_t)b * s->cap * kw, (size_t)s->pos * kw * sizeof(float));
    hy_free(s->kt), hy_free(s->v);
    s->kt = kt, s->v = v, s->cap = cap;
    return 0;
}

/* Appends T tokens per sequence (x: (B, T, d)) to the cache and attends: queries at positions
 * pos..pos+T-1 see every cached key and the causal new ones (the tiled kernel with Tk = pos + T). */
static int attn_prefill(hy_layer *L, void *state, const float *x, float *y, int B, int T) {
    attn_state *s = state;
    attn_priv *P = priv_of(L);
    geom g = geom_of(&L->opts, L->d_model);
    if (!P) return HY_ERR_NOMEM;
    if (B != s->B) return hy_fail("attention: state holds %d sequences, got %d", s->B, B);
    if (T <= 0) return 0;
    if (T > HY_MAX_POSITION - s->pos)
        return hy_fail("attention: the KV cache holds at most %d tokens per sequence (it holds %d, %d more asked)",
                       HY_MAX_POSITION, s->pos, T);
    size_t rows = (size_t)B * T, kw = (size_t)g.Hkv * g.hd, qw = (size_t)g.H * g.hd;
    int W = qkv_width(&g);
    if (!hy_buf_grab(&s->qkv, rows * W) || !hy_buf_grab(&s->o, rows * qw)) return HY_ERR_NOMEM;
    int rc = project_qkv(L, P, &g, x, B, T, s->pos, s->qkv.p);
    if (rc < 0 || (rc = cache_grow(s, &g, s->pos + T)) < 0) return rc;
    hy_flash_view kt = tview(s->kt, g.Hkv, g.hd, s->cap);
    #pragma omp parallel
    transpose_heads(s->qkv.p + qw, W, B, T, g.Hkv, g.hd, kt, s->pos);
    for (size_t r = 0; r < rows; r++)   /* the new values: row t of sequence b to cache row pos + t */
        memcpy(s->v + ((size_t)(r / T) * s->cap + s->pos + r % T) * kw, s->qkv.p + r * W + qw + kw, kw * sizeof(float));
    hy_flash_args a = {B, g.H, g.Hkv, g.hd, T, s->pos + T, 1.0f / sqrtf((float)g.hd), hy_gemm_get_precision() == HY_PREC_BF16,
                       .q = {s->qkv.p, (size_t)T * W, g.hd, W, 0}, .kt = kt,
                       .v = {s->v, (size_t)s->cap * kw, g.hd, (int)kw, 0}, .o = {s->o.p, (size_t)T * qw, g.hd, (int)qw, 0}};
    if ((rc = hy_flash_forward(&a)) < 0) return rc;
    hy_linear_forward(y, s->o.p, L->p[P_O], NULL, (int)rows, (int)qw, g.d);
    s->pos += T;
    return 0;
}

/* One token per sequence: prefill with T = 1. */
static int attn_step(hy_layer *L, void *state, const float *x, float *y, int B) {
    return attn_prefill(L, state, x, y, B, 1);
}

/* ---------------------------------------------------------------- state files ---- */

/* The cache as two tensors: "k" (keys after RoPE) and "v", each (B, pos, Hkv·hd) in the projection
 * layout, so a saved state reads in PyTorch as the k/v a plain implementation would cache. */
static int attn_state_tensors(hy_layer *L, const void *state, hy_state_tensor *out) {
    const attn_state *s = state;
    geom g = geom_of(&L->opts, L->d_model);
    if (out) {
        out[0] = (hy_state_tensor){"k", 3, {s->B, s->pos, g.Hkv * g.hd}};
        out[1] = (hy_state_tensor){"v", 3, {s->B, s->pos, g.Hkv * g.hd}};
    }
    return 2;
}

/* Copies "k" (untransposing the key blocks) or "v" out of the cache. */
static int attn_state_export(hy_layer *L, const void *state, int i, float *dst) {
    const attn_state *s = state;
    geom g = geom_of(&L->opts, L->d_model);
    size_t kw = (size_t)g.Hkv * g.hd;
    if (i < 0 || i > 1) return hy_fail("attention: no state tensor %d", i);
    if (s->pos == 0) return 0;   /* empty cache: nothing allocated yet */
    if (i == 1) {
        for (int b = 0; b < s->B; b++)
            memcpy(dst + (size_t)b * s->pos * kw, s->v + (size_t)b * s->cap * kw, (size_t)s->pos * kw * sizeof(float));
        return 0;
    }
    hy_flash_view kt = tview(s->kt, g.Hkv, g.hd, s->cap);
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < g.Hkv; h++) {
            const float *src = kt.p + b * kt.bs + h * kt.hs;
            for (int t = 0; t < s->pos; t++) {
                const float *col = src + (size_t)(t / HY_FLASH_BC) * kt.tile + t % HY_FLASH_BC;
                float *row = dst + ((size_t)b * s->pos + t) * kw + (size_t)h * g.hd;
                for (int c = 0; c < g.hd; c++) row[c] = col[(size_t)c * kt.ld];
            }
        }
    return 0;
}

/* Refills a fresh cache from "k" and "v" of shape (B, pos, Hkv·hd); pos comes from the shape. */
static int attn_state_import(hy_layer *L, void *state, int n, const hy_state_tensor *t, const float *const *data) {
    attn_state *s = state;
    geom g = geom_of(&L->opts, L->d_model);
    int ik = hy_state_tensor_find(n, t, "k"), iv = hy_state_tensor_find(n, t, "v");
    if (ik < 0 || iv < 0) return hy_fail("attention: state tensor '%s' is missing", ik < 0 ? "k" : "v");
    if (n != 2) return hy_fail("attention: the state has %d tensors, expected 2 (k, v)", n);
    int kw = g.Hkv * g.hd, pos = t[ik].shape[1];
    for (int w = 0; w < 2; w++) {
        const hy_state_tensor *x = &t[w ? iv : ik];
        if (x->ndim != 3 || x->shape[0] != s->B || x->shape[1] != pos || x->shape[2] != kw)
            return hy_fail("attention: state tensor '%s' must have shape (%d, %d, %d) (batch, position, n_kv_heads*head_size)",
                           x->name, s->B, pos, kw);
    }
    if (s->pos != 0) return hy_fail("attention: state import needs a fresh state");
    if (pos == 0) return 0;
    int rc = cache_grow(s, &g, pos);
    if (rc < 0) return rc;
    #pragma omp parallel
    transpose_heads(data[ik], kw, s->B, pos, g.Hkv, g.hd, tview(s->kt, g.Hkv, g.hd, s->cap), 0);
    for (int b = 0; b < s->B; b++)
        memcpy(s->v + (size_t)b * s->cap * kw, data[iv] + (size_t)b * pos * kw, (size_t)pos * kw * sizeof(float));
    s->pos = pos;
    return 0;
}

/* ---------------------------------------------------------------- accounting ---- */

/* The KV cache of T tokens: keys and values, Hkv·hd floats each per token. */
static size_t attn_state_bytes(const hy_opts *o, int d, int T) {
    geom g = geom_of(o, d);
    return 2 * (size_t)T * g.Hkv * g.hd * sizeof(float);
}

/* Forward FLOPs of one sequence (multiply-add = 2): projections 2·T·d·(2·H·hd + 2·Hkv·hd) (q and
 * o are d × H·hd, k and v d × Hkv·hd), plus the causal core 4·H·hd·T(T+1)/2 (query t meets t+1
 * keys: q·k and p·v, 2·hd each). Softmax exponentials are not counted. */
static double attn_flop(const hy_opts *o, int d, int T) {
    geom g = geom_of(o, d);
    return 2.0 * T * d * (2.0 * g.H * g.hd + 2.0 * g.Hkv * g.hd) + 4.0 * g.H * g.hd * ((double)T * (T + 1) / 2.0);
}

/* Frees the layer's caches. */
/* Training memory of the tiled path. Forward keeps qkv (q, k, v side by side), o, qh (rows, H·hd),
 * vh (rows, Hkv·hd), the transposed keys kt, lse (rows, H) and the RoPE tables; backward adds dout,
 * douth, dqkv (dq, dk, dv), kh and the transposed values vt (qh, vh, kh, douth only when
 * head_copies(T), kt and vt only when transposes(T)). Scratch: the kernels' (hy_flash_scratch_floats). */
static hy_train_bytes attn_train_bytes(const hy_opts *o, int d, int B, int T, int threads, bool first) {
    (void)first;
    geom g = geom_of(o, d);
    double rows = (double)B * T, nq = rows * g.H * g.hd, nk = rows * g.Hkv * g.hd, per = head_copies(T) ? 6 : 4;
    double tv = transposes(T) ? (double)B * tview(NULL, g.Hkv, g.hd, T).bs : 0;
    double rope = g.rope ? 2.0 * (T > 256 ? T : 256) * (g.hd / 2) : 0;
    double scratch = fmax(hy_flash_scratch_floats(B, g.H, g.Hkv, T, g.hd, threads, false),
                          hy_flash_scratch_floats(B, g.H, g.Hkv, T, g.hd, threads, true));
    return (hy_train_bytes){(per * (nq + nk) + 2 * tv + rows * g.H + rope) * sizeof(float), scratch * sizeof(float)};
}

static void attn_destroy(hy_layer *L) {
    attn_priv *P = L->priv;
    if (!P) return;
    hy_buf *bufs[] = {&P->qkv, &P->kt, &P->o, &P->lse, &P->dout, &P->vt, &P->dqkv, &P->probs, &P->dprobs, &P->rcos, &P->rsin, &P->qh, &P->kh, &P->vh,
                      &P->douth};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) hy_buf_free(bufs[i]);
    hy_free(P);
    L->priv = NULL;
}

const hy_block_ops hy_block_attention = {
    .name = "attention",
    .kinds = HY_KIND_MIXER,
    .summary = "causal multi-head softmax attention (GQA, optional RoPE), FlashAttention-2 style kernels",
    .opts = attn_opts,
    .n_opts = 3,
    .resolve = attn_resolve,
    .param_specs = attn_param_specs,
    .init = attn_init,
    .forward = attn_forward,
    .backward = attn_backward,
    .state_new = attn_state_new,
    .step = attn_step,
    .prefill = attn_prefill,
    .state_free = attn_state_free,
    .state_bytes = attn_state_bytes,
    .flop = attn_flop,
    .train_bytes = attn_train_bytes,
    .destroy = attn_destroy,
    .state_tensors = attn_state_tensors,
    .state_export = attn_state_export,
    .state_import = attn_state_import,
};

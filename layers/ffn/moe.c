/* moe — Jamba's mixture-of-experts feed-forward (SPEC §3):
 *   p = softmax(router u) over all E experts (fp32);  top-k experts by p (ties: lower index first)
 *   out = Σ_{e in top-k} p_e · swiglu_e(u)            (weights not renormalised, no capacity limit)
 *   aux = E · Σ_e f_e · P_e,  f_e = share of token slots routed to e,  P_e = mean_tok p_e
 * The aux loss goes to the model through hy_aux_add (flag HY_BLOCK_AUX_LOSS: the model averages it
 * over the layers that add one and adds router_aux_coef · the mean to the loss); its gradient flows
 * through P only. The routing counts reach the trainer's experts.csv through the stats hook.
 *
 * Tokens are grouped per expert (a stable counting sort of the token-slot assignments), so every
 * expert runs one GEMM per projection over all its tokens: gather rows -> gate/up GEMMs -> SwiGLU ->
 * down GEMM; each token then sums its k weighted expert outputs in slot order (deterministic, no
 * atomics). Backward mirrors it: per-expert GEMMs over the grouped rows, then a per-token sum.
 *
 * Each expert's group is padded with zero rows up to a size from a fixed ladder (multiples of 8,
 * then 8..16 steps per octave, < 12.5% waste): the GEMM shapes then repeat from batch to batch, so
 * hy_gemm's per-shape oneDNN primitives are created once instead of for every new token count.
 * Zero rows stay zero through SwiGLU and add nothing to any weight gradient. */
#include "layers/ffn/moe.h"
#include "core/error.h"
#include "core/gemm.h"
#include "core/mem.h"
#include "core/vmath.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOE_MAX_EXPERTS HY_MOE_MAX_EXPERTS

enum { OPT_E, OPT_K, OPT_D_FF };
static const hy_opt_spec moe_opts[] = {
    {"n_experts", HY_OPT_INT, 16, 1, MOE_MAX_EXPERTS, 0, "number of experts E (Jamba: 16)"},
    {"top_k", HY_OPT_INT, 2, 1, MOE_MAX_EXPERTS, 0, "experts per token k (Jamba: 2); 1 <= k <= n_experts"},
    {"d_ff", HY_OPT_INT, 0, 1, 1 << 20, HY_OPT_DEFAULT_AUTO,
     "hidden width F of each SwiGLU expert; auto = 8/3 d rounded up to a multiple of 32 (as swiglu)"},
};

/* A growable int buffer (hy_buf holds floats). */
typedef struct {
    int *p;
    size_t cap;
} ibuf;

static int *ibuf_reserve(ibuf *b, size_t n) {
    if (n <= b->cap && b->p) return b->p;
    hy_free(b->p);
    b->p = hy_malloc((n ? n : 1) * sizeof(int));
    b->cap = b->p ? n : 0;
    return b->p;
}

typedef struct {
    const float *x;         /* input of the last forward (owned by the caller, alive until backward) */
    int rows;               /* tokens of the last forward */
    bool kept;              /* the last forward kept what backward needs */
    hy_buf p;               /* (rows, E) router probabilities; in backward: their gradients */
    hy_buf gw;              /* (rows, k) gate weight of each slot = p of its expert */
    ibuf top;               /* (rows, k) expert of each slot, by decreasing p */
    ibuf pos;               /* (rows, k) slot -> its row in the grouped (expert-sorted) order */
    ibuf order;             /* (Ap) grouped row -> slot id (token * k + slot), -1 for padding */
    int cnt[MOE_MAX_EXPERTS];            /* token slots per expert */
    int off[MOE_MAX_EXPERTS + 1];        /* first grouped row of each expert; off[E] = Ap */
    hy_buf xs;              /* (Ap, d) gathered inputs, grouped by expert, zero padding rows */
    hy_buf gate, up, act;   /* (Ap, F) */
    hy_buf eo;              /* (Ap, d) expert outputs (unweighted) */
    hy_buf dp, deo, dact, dgate, dup, dxs;
    int64_t counts[MOE_MAX_EXPERTS];   /* cumulative routing counts, for logging collapse */
    double last_aux;
} moe_cache;

static int moe_resolve(hy_opts *o, int d_model, int *bad_opt, char *msg, size_t msg_len) {
    if (o->v[OPT_K] > o->v[OPT_E]) {
        *bad_opt = OPT_K;
        snprintf(msg, msg_len, "top_k = %d must be <= n_experts = %d", hy_opt_int(o, OPT_K), hy_opt_int(o, OPT_E));
        return -1;
    }
    if (o->is_auto[OPT_D_FF]) {
        o->v[OPT_D_FF] = ceil(8.0 * d_model / 3.0 / 32.0) * 32.0;
        o->is_auto[OPT_D_FF] = false;
    }
    return 0;
}

/* Names "experts.{e}.{gate,up,down}_proj.weight", written once per expert index (same text every
 * time, so concurrent writers agree). */
static char expert_names[MOE_MAX_EXPERTS][3][32];

static int moe_param_specs(const hy_opts *o, int d, hy_param_spec *out) {
    int E = hy_opt_int(o, OPT_E), F = hy_opt_int(o, OPT_D_FF);
    if (out) {
        static const char *const proj[3] = {"gate_proj", "up_proj", "down_proj"};
        out[0] = (hy_param_spec){"router.weight", 2, {E, d}, 0};
        for (int e = 0; e < E; e++)
            for (int j = 0; j < 3; j++) {
                snprintf(expert_names[e][j], sizeof expert_names[e][j], "experts.%d.%s.weight", e, proj[j]);
                out[1 + 3 * e + j] = (hy_param_spec){expert_names[e][j], 2, {j < 2 ? F : d, j < 2 ? d : F}, 0};
            }
    }
    return 1 + 3 * E;
}

/* Every weight is a plain linear (as swiglu): router first, then each expert's gate, up, and down,
 * the output projection (hy_init_output_linear). */
static void moe_init(hy_layer *L, hy_rng *rng) {
    int d = L->d_model, E = hy_opt_int(&L->opts, OPT_E), F = hy_opt_int(&L->opts, OPT_D_FF);
    hy_init_linear(L->p[HY_MOE_P_ROUTER], NULL, E, d, rng);
    for (int e = 0; e < E; e++) {
        hy_init_linear(L->p[hy_moe_param_gate(e)], NULL, F, d, rng);
        hy_init_linear(L->p[hy_moe_param_up(e)], NULL, F, d, rng);
        hy_init_output_linear(L, L->p[hy_moe_param_down(e)], NULL, d, F, rng);
    }
}

static moe_cache *cache_of(hy_layer *L) {
    if (!L->priv) L->priv = hy_calloc(sizeof(moe_cache));
    return L->priv;
}

/* Row-wise softmax in place (fp32, max-subtracted). */
static void softmax_rows(float *p, int rows, int E) {
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        float *z = p + (size_t)r * E, m = z[0], s = 0;
        for (int e = 1; e < E; e++) m = z[e] > m ? z[e] : m;
        for (int e = 0; e < E; e++) z[e] = hy_expf(z[e] - m), s += z[e];
        float inv = 1.0f / s;
        for (int e = 0; e < E; e++) z[e] *= inv;
    }
}

/* Top-k of each row by k passes of an argmax that skips chosen experts; the strict '>' keeps the
 * lower index on ties, so the choice is deterministic. Slots come in decreasing p. */
static void top_k_rows(const float *p, int *top, float *gw, int rows, int E, int k) {
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *z = p + (size_t)r * E;
        int *t = top + (size_t)r * k;
        for (int s = 0; s < k; s++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                bool taken = false;
                for (int q = 0; q < s; q++) taken |= t[q] == e;
                if (!taken && (best < 0 || z[e] > z[best])) best = e;
            }
            t[s] = best;
            gw[(size_t)r * k + s] = z[best];
        }
    }
}

/* Rows of an expert's GEMMs for n tokens: n rounded up to the ladder 8, 16, .., 64, 72, 80, ..,
 * then 8 steps per octave (m·2^s, m = 9..16). */
static int padded_rows(int n) {
    if (n <= 64) return (n + 7) & ~7;
    int s = 0;
    while (((n - 1) >> s) >= 16) s++;
    return (((n - 1) >> s) + 1) << s;
}

/* A bound on the grouped rows Ap of A slots over E experts: padded_rows adds at most 7 rows (n <= 64)
 * or less than 2^s <= (n-1)/8 rows (n > 64) to each expert's n. The grouped buffers are sized to
 * it once, so that they do not grow (and fragment the heap) as the routing changes, and the
 * training-memory estimate (moe_train_bytes) is exact. */
static size_t grouped_rows_bound(size_t A, int E) { return A + A / 8 + 8 * (size_t)E; }

/* Stable counting sort of the A = rows*k slots by expert: cnt and (padded) off per expert, pos
 * (slot -> grouped row) and order (grouped row -> slot, -1 for padding). Returns the padded
 * total Ap, or a negative error. Sequential: O(A), negligible next to the GEMMs. */
static int group_by_expert(moe_cache *c, int A, int E) {
    memset(c->cnt, 0, sizeof c->cnt);
    for (int a = 0; a < A; a++) c->cnt[c->top.p[a]]++;
    c->off[0] = 0;
    for (int e = 0; e < E; e++) c->off[e + 1] = c->off[e] + padded_rows(c->cnt[e]);
    int Ap = c->off[E];
    if (!ibuf_reserve(&c->order, grouped_rows_bound((size_t)A, E))) return HY_ERR_NOMEM;
    for (int q = 0; q < Ap; q++) c->order.p[q] = -1;
    int fill[MOE_MAX_EXPERTS];
    memcpy(fill, c->off, sizeof(int) * (size_t)E);
    for (int a = 0; a < A; a++) {
        int q = fill[c->top.p[a]]++;
        c->pos.p[a] = q;
        c->order.p[q] = a;
    }
    return Ap;
}

/* The forward pass over `rows` tokens. account: add the aux loss (hy_aux_add) and count routing
 * (false for streaming steps, which are not part of any loss). */
static int moe_run(hy_layer *L, const float *x, float *y, int rows, bool account) {
    moe_cache *c = cache_of(L);
    const int d = L->d_model, E = hy_opt_int(&L->opts, OPT_E), k = hy_opt_int(&L->opts, OPT_K),
              F = hy_opt_int(&L->opts, OPT_D_FF);
    const size_t A = (size_t)rows * k;
    if (!c) return HY_ERR_NOMEM;
    c->kept = false;
    if (!hy_buf_reserve(&c->p, (size_t)rows * E) || !hy_buf_reserve(&c->gw, A) || !ibuf_reserve(&c->top, A) ||
        !ibuf_reserve(&c->pos, A))
        return HY_ERR_NOMEM;
    float *p = c->p.p;
    hy_linear_forward(p, x, L->p[HY_MOE_P_ROUTER], NULL, rows, d, E);
    softmax_rows(p, rows, E);
    top_k_rows(p, c->top.p, c->gw.p, rows, E, k);
    int rc = group_by_expert(c, (int)A, E);
    if (rc < 0) return rc;
    const size_t Ap = (size_t)rc, cap = grouped_rows_bound(A, E);
    if (!hy_buf_reserve(&c->xs, cap * d) || !hy_buf_reserve(&c->gate, cap * F) || !hy_buf_reserve(&c->up, cap * F) ||
        !hy_buf_reserve(&c->act, cap * F) || !hy_buf_reserve(&c->eo, cap * d))
        return HY_ERR_NOMEM;

    float *xs = c->xs.p, *g = c->gate.p, *u = c->up.p, *act = c->act.p, *eo = c->eo.p;
    const int *order = c->order.p;
    #pragma omp parallel for schedule(static)
    for (size_t q = 0; q < Ap; q++) {
        if (order[q] >= 0) memcpy(xs + q * d, x + (size_t)(order[q] / k) * d, sizeof(float) * (size_t)d);
        else memset(xs + q * d, 0, sizeof(float) * (size_t)d);
    }
    for (int e = 0; e < E; e++) {
        int n = c->off[e + 1] - c->off[e];
        if (n == 0) continue;
        size_t o = (size_t)c->off[e];
        hy_linear_forward(g + o * F, xs + o * d, L->p[hy_moe_param_gate(e)], NULL, n, d, F);
        hy_linear_forward(u + o * F, xs + o * d, L->p[hy_moe_param_up(e)], NULL, n, d, F);
    }
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < Ap * F; i++) act[i] = hy_siluf(g[i]) * u[i];
    for (int e = 0; e < E; e++) {
        int n = c->off[e + 1] - c->off[e];
        if (n == 0) continue;
        size_t o = (size_t)c->off[e];
        hy_linear_forward(eo + o * d, act + o * F, L->p[hy_moe_param_down(e)], NULL, n, F, d);
    }
    /* each token: y = Σ_slot p_e · expert_e(u), slots in a fixed order */
    const int *pos = c->pos.p;
    const float *gw = c->gw.p;
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        float *yr = y + (size_t)r * d;
        for (int j = 0; j < d; j++) yr[j] = 0;
        for (int s = 0; s < k; s++) {
            const float *er = eo + (size_t)pos[(size_t)r * k + s] * d;
            float w = gw[(size_t)r * k + s];
            for (int j = 0; j < d; j++) yr[j] += w * er[j];
        }
    }
    /* aux = E Σ_e f_e P_e (double sums in a fixed order) */
    double aux = 0;
    for (int e = 0; e < E; e++) {
        double P = 0;
        for (int r = 0; r < rows; r++) P += p[(size_t)r * E + e];
        aux += ((double)c->cnt[e] / rows) * (P / rows);
    }
    aux *= E;
    c->last_aux = aux;
    if (account) {
        hy_aux_add(L, aux);
        for (int e = 0; e < E; e++) c->counts[e] += c->cnt[e];
    }
    c->x = x;
    c->rows = rows;
    c->kept = L->keep_for_backward && account;
    return 0;
}

static int moe_forward(hy_layer *L, const float *x, float *y, int B, int T) {
    return moe_run(L, x, y, B * T, true);
}

static int moe_backward(hy_layer *L, const float *dy, float *dx, int B, int T) {
    moe_cache *c = L->priv;
    const int d = L->d_model, E = hy_opt_int(&L->opts, OPT_E), k = hy_opt_int(&L->opts, OPT_K),
              F = hy_opt_int(&L->opts, OPT_D_FF), rows = B * T;
    if (!c || !c->x || !c->kept) return hy_fail("moe: backward without a forward that kept its activations");
    if (c->rows != rows) return hy_fail("moe: backward over %d tokens after a forward over %d", rows, c->rows);
    const size_t Ap = (size_t)c->off[E], cap = grouped_rows_bound((size_t)rows * k, E);
    if (!hy_buf_reserve(&c->dp, (size_t)rows * E) || !hy_buf_reserve(&c->deo, cap * d) ||
        !hy_buf_reserve(&c->dact, cap * F) || !hy_buf_reserve(&c->dgate, cap * F) || !hy_buf_reserve(&c->dup, cap * F) ||
        !hy_buf_reserve(&c->dxs, cap * d))
        return HY_ERR_NOMEM;
    const float *p = c->p.p, *gw = c->gw.p, *eo = c->eo.p, *xs = c->xs.p, *g = c->gate.p, *u = c->up.p;
    const int *top = c->top.p, *pos = c->pos.p, *order = c->order.p;
    float *dp = c->dp.p, *deo = c->deo.p, *da = c->dact.p, *dg = c->dgate.p, *du = c->dup.p, *dxs = c->dxs.p;

    /* d(expert output) = p_e · dy of its token (0 for padding rows); dp_e (chosen slots) = dy · expert_e(u) */
    #pragma omp parallel for schedule(static)
    for (size_t q = 0; q < Ap; q++) {
        float *o = deo + q * d;
        if (order[q] < 0) {
            memset(o, 0, sizeof(float) * (size_t)d);
            continue;
        }
        const float *dyr = dy + (size_t)(order[q] / k) * d;
        float w = gw[order[q]];
        for (int j = 0; j < d; j++) o[j] = w * dyr[j];
    }
    /* router gradient: chosen slots, plus the aux term d(coef·mean aux)/dp[r,e] = coef/n_aux · E f_e / rows */
    double gaux = hy_aux_grad_scale(L);
    float aux_dp[MOE_MAX_EXPERTS];
    for (int e = 0; e < E; e++) aux_dp[e] = (float)(gaux * E * ((double)c->cnt[e] / rows) / rows);
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        float *dpr = dp + (size_t)r * E;
        const float *dyr = dy + (size_t)r * d;
        for (int e = 0; e < E; e++) dpr[e] = aux_dp[e];
        for (int s = 0; s < k; s++) {
            const float *er = eo + (size_t)pos[(size_t)r * k + s] * d;
            float acc = 0;
            for (int j = 0; j < d; j++) acc += dyr[j] * er[j];
            dpr[top[(size_t)r * k + s]] += acc;
        }
        /* softmax backward: dz = p ⊙ (dp - Σ p·dp), in place */
        const float *pr = p + (size_t)r * E;
        float dot = 0;
        for (int e = 0; e < E; e++) dot += pr[e] * dpr[e];
        for (int e = 0; e < E; e++) dpr[e] = pr[e] * (dpr[e] - dot);
    }
    /* the experts, one GEMM per projection over their grouped rows */
    for (int e = 0; e < E; e++) {
        int n = c->off[e + 1] - c->off[e];
        if (n == 0) continue;
        size_t o = (size_t)c->off[e];
        hy_linear_backward(da + o * F, L->g[hy_moe_param_down(e)], NULL, deo + o * d, c->act.p + o * F,
                           L->p[hy_moe_param_down(e)], n, F, d, false);
    }
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < Ap * F; i++) {
        float s = hy_sigmoidf(g[i]);
        du[i] = da[i] * g[i] * s;
        dg[i] = da[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
    }
    for (int e = 0; e < E; e++) {
        int n = c->off[e + 1] - c->off[e];
        if (n == 0) continue;
        size_t o = (size_t)c->off[e];
        hy_linear_backward(dxs + o * d, L->g[hy_moe_param_gate(e)], NULL, dg + o * F, xs + o * d,
                           L->p[hy_moe_param_gate(e)], n, d, F, false);
        hy_linear_backward(dxs + o * d, L->g[hy_moe_param_up(e)], NULL, du + o * F, xs + o * d,
                           L->p[hy_moe_param_up(e)], n, d, F, true);
    }
    /* each token's dx: its slots' input gradients in slot order, then the router's */
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        float *dxr = dx + (size_t)r * d;
        for (int j = 0; j < d; j++) dxr[j] = 0;
        for (int s = 0; s < k; s++) {
            const float *sr = dxs + (size_t)pos[(size_t)r * k + s] * d;
            for (int j = 0; j < d; j++) dxr[j] += sr[j];
        }
    }
    hy_linear_backward(dx, L->g[HY_MOE_P_ROUTER], NULL, dp, c->x, L->p[HY_MOE_P_ROUTER], rows, d, E, true);
    return 0;
}

/* A feed-forward block is stateless: streaming is the forward on one token (no aux, no counts). */
static int moe_state_new(hy_layer *L, int B, void **state) {
    (void)L, (void)B;
    *state = NULL;
    return 0;
}
static int moe_step(hy_layer *L, void *state, const float *x, float *y, int B) {
    (void)state;
    return moe_run(L, x, y, B, false);
}
static void moe_state_free(hy_layer *L, void *state) { (void)L, (void)state; }
static size_t moe_state_bytes(const hy_opts *o, int d, int T) { (void)o, (void)d, (void)T; return 0; }

/* Active parameters only: the router (d x E), softmax, k SwiGLU experts, the weighted sum. */
static double moe_flop(const hy_opts *o, int d, int T) {
    double E = hy_opt_int(o, OPT_E), k = hy_opt_int(o, OPT_K), F = hy_opt_int(o, OPT_D_FF);
    return (double)T * (2.0 * d * E + 4.0 * E + k * (6.0 * d * F + 4.0 * F) + 2.0 * k * d);
}

/* Training memory, with the grouped buffers at their bound Ap (grouped_rows_bound) of A = rows·k
 * token slots. Forward keeps p (rows, E), gw, top, pos (A), order (Ap), xs and eo (Ap, d), gate, up
 * and act (Ap, F); backward adds dp (rows, E), deo and dxs (Ap, d), dact, dgate and dup (Ap, F). */
static hy_train_bytes moe_train_bytes(const hy_opts *o, int d, int B, int T, int threads, bool first) {
    (void)threads, (void)first;
    int E = hy_opt_int(o, OPT_E);
    double rows = (double)B * T, F = hy_opt_int(o, OPT_D_FF), A = rows * hy_opt_int(o, OPT_K);
    double Ap = (double)grouped_rows_bound((size_t)A, E);
    return (hy_train_bytes){(2.0 * rows * E + 3.0 * A + Ap * (1.0 + 4.0 * d + 6.0 * F)) * sizeof(float), 0};
}

static void moe_destroy(hy_layer *L) {
    moe_cache *c = L->priv;
    if (!c) return;
    hy_buf *bufs[] = {&c->p, &c->gw, &c->xs, &c->gate, &c->up, &c->act, &c->eo,
                      &c->dp, &c->deo, &c->dact, &c->dgate, &c->dup, &c->dxs};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) hy_buf_free(bufs[i]);
    hy_free(c->top.p), hy_free(c->pos.p), hy_free(c->order.p);
    hy_free(c);
    L->priv = NULL;
}

/* The cumulative counts (0 before any forward); also the block's stats hook `get`. */
int hy_moe_expert_counts(const hy_layer *L, int64_t *out, int max) {
    int E = hy_opt_int(&L->opts, OPT_E);
    const moe_cache *c = L->priv;
    for (int e = 0; e < E && e < max; e++) out[e] = c ? c->counts[e] : 0;
    return E;
}

/* Zeroes the cumulative counts; also the block's stats hook `reset`. */
void hy_moe_reset_counts(hy_layer *L) {
    moe_cache *c = L->priv;
    if (c) memset(c->counts, 0, sizeof c->counts);
}

/* For tests: the aux loss the last forward computed, accounted or not. */
double hy_moe_last_aux(const hy_layer *L) {
    const moe_cache *c = L->priv;
    return c ? c->last_aux : 0.0;
}

/* The trainer's routing telemetry: token slots per expert on the validation batches -> experts.csv. */
static const hy_block_stats moe_stats = {
    .file = "experts.csv",
    .columns = "expert,tokens",
    .label = "token slots per expert",
    .reset = hy_moe_reset_counts,
    .get = hy_moe_expert_counts,
};

const hy_block_ops hy_block_moe = {
    .name = "moe",
    .kinds = HY_KIND_FFN,
    .flags = HY_BLOCK_AUX_LOSS,
    .stats = &moe_stats,
    .summary = "Jamba mixture of SwiGLU experts: top-k of softmax(router u), weights not renormalised, aux loss",
    .opts = moe_opts,
    .n_opts = 3,
    .resolve = moe_resolve,
    .param_specs = moe_param_specs,
    .init = moe_init,
    .forward = moe_forward,
    .backward = moe_backward,
    .state_new = moe_state_new,
    .step = moe_step,
    .prefill = NULL,
    .state_free = moe_state_free,
    .state_bytes = moe_state_bytes,
    .flop = moe_flop,
    .train_bytes = moe_train_bytes,
    .destroy = moe_destroy,
};

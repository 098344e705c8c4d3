/* The moe block: the grouped (one GEMM per expert) path against a per-token double-precision
 * reference loop of SPEC §3; the aux loss against a case computed by hand; deterministic top-k on
 * ties; finite-difference gradients of output + aux (inputs drawn away from routing ties);
 * streaming; options and accounting; the model's loss = ce + router_aux_coef · mean aux. */
#include "core/error.h"
#include "core/mem.h"
#include "core/vmath.h"
#include "layers/ffn/moe.h"
#include "models/model.h"
#include "tests/testutil.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int opt_i(const hy_layer *L, const char *name) { return hy_opt_int(&L->opts, hy_opt_index(L->ops, name)); }

static void make_moe(hy_layer *L, int d, int E, int k, int F, uint64_t seed) {
    char b[3][32];
    snprintf(b[0], sizeof b[0], "n_experts=%d", E);
    snprintf(b[1], sizeof b[1], "top_k=%d", k);
    snprintf(b[2], sizeof b[2], "d_ff=%d", F);
    const char *pairs[] = {b[0], b[1], b[2]};
    tu_layer(L, "moe", d, pairs, 3, seed);
}

/* Resets the shared aux accumulator, as the model does before each forward. */
static void fwd(hy_layer *L, const float *x, float *y, int B, int T) {
    hy_aux_reset(L->shared);
    ck_assert_msg(L->ops->forward(L, x, y, B, T) == 0, "%s", hy_last_error());
}

/* SPEC §3 for one token in double, plain loops: p = softmax(router x), top-k by p (ties: lower
 * index), y = Σ p_e swiglu_e(x). Writes y (d), p (E) and chosen[e] (0/1). */
static void reference_token(const hy_layer *L, const float *x, double *y, double *p, int *chosen) {
    int d = L->d_model, E = opt_i(L, "n_experts"), k = opt_i(L, "top_k"), F = opt_i(L, "d_ff");
    double m = -INFINITY, s = 0;
    for (int e = 0; e < E; e++) {
        double z = 0;
        for (int j = 0; j < d; j++) z += (double)L->p[HY_MOE_P_ROUTER][(size_t)e * d + j] * x[j];
        p[e] = z, m = fmax(m, z);
    }
    for (int e = 0; e < E; e++) p[e] = exp(p[e] - m), s += p[e];
    for (int e = 0; e < E; e++) p[e] /= s, chosen[e] = 0;
    for (int j = 0; j < d; j++) y[j] = 0;
    for (int slot = 0; slot < k; slot++) {
        int best = -1;
        for (int e = 0; e < E; e++)
            if (!chosen[e] && (best < 0 || p[e] > p[best])) best = e;
        chosen[best] = 1;
        const float *Wg = L->p[hy_moe_param_gate(best)], *Wu = L->p[hy_moe_param_up(best)],
                    *Wd = L->p[hy_moe_param_down(best)];
        for (int f = 0; f < F; f++) {
            double g = 0, u = 0;
            for (int j = 0; j < d; j++) g += (double)Wg[(size_t)f * d + j] * x[j], u += (double)Wu[(size_t)f * d + j] * x[j];
            double a = g / (1 + exp(-g)) * u;
            for (int j = 0; j < d; j++) y[j] += p[best] * Wd[(size_t)j * F + f] * a;
        }
    }
}

/* The grouped forward against reference_token on every token, and the aux loss against
 * E Σ f_e P_e from the reference routing; several (E, k) including k = 1 and k = E. */
START_TEST(grouped_matches_per_token_reference) {
    static const int cases[][5] = {{16, 6, 2, 40, 0}, {24, 16, 2, 32, 1}, {16, 4, 1, 24, 2}, {8, 3, 3, 16, 3}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int d = cases[c][0], E = cases[c][1], k = cases[c][2], F = cases[c][3], B = 3, T = tu_quick() ? 9 : 23;
        hy_layer L;
        make_moe(&L, d, E, k, F, 100 + c);
        tu_fill_normal(L.p[HY_MOE_P_ROUTER], (size_t)E * d, 1.0f, 7 + c);   /* a non-uniform router */
        size_t n = (size_t)B * T * d;
        float *x = hy_malloc(n * 4), *y = hy_malloc(n * 4);
        tu_fill_normal(x, n, 1.0f, 50 + c);
        L.keep_for_backward = false;
        fwd(&L, x, y, B, T);
        double worst = 0, scale = 1e-6, P[64] = {0}, f[64] = {0};
        double *yr = hy_malloc((size_t)d * 8), p[64];
        int chosen[64];
        for (int r = 0; r < B * T; r++) {
            reference_token(&L, x + (size_t)r * d, yr, p, chosen);
            for (int j = 0; j < d; j++) {
                worst = fmax(worst, fabs(yr[j] - y[(size_t)r * d + j]));
                scale = fmax(scale, fabs(yr[j]));
            }
            for (int e = 0; e < E; e++) P[e] += p[e] / (B * T), f[e] += chosen[e] / (double)(B * T);
        }
        double aux = 0;
        for (int e = 0; e < E; e++) aux += E * f[e] * P[e];
        ck_assert_msg(worst / scale < 1e-5, "E %d k %d: grouped vs per-token error %g", E, k, worst / scale);
        ck_assert_msg(fabs(L.shared->aux.sum - aux) < 1e-5 && L.shared->aux.n == 1, "aux %g, reference %g",
                      L.shared->aux.sum, aux);
        ck_assert_double_eq_tol(hy_moe_last_aux(&L), aux, 1e-5);
        /* the counts the trainer logs: every token's k slots, per expert as the reference routed them */
        int64_t cnt[64];
        ck_assert_int_eq(hy_moe_expert_counts(&L, cnt, 64), E);
        int64_t total = 0;
        for (int e = 0; e < E; e++) {
            ck_assert_int_eq(cnt[e], (int64_t)llround(f[e] * B * T));
            total += cnt[e];
        }
        ck_assert_int_eq(total, (int64_t)B * T * k);
        hy_moe_reset_counts(&L);
        hy_moe_expert_counts(&L, cnt, 64);
        for (int e = 0; e < E; e++) ck_assert_int_eq(cnt[e], 0);
        hy_free(x), hy_free(y), hy_free(yr);
        hy_layer_standalone_free(&L);
    }
}
END_TEST

/* d = 2, E = 3, k = 1, router rows e0 = (1, 0), e1 = (0, 1), e2 = (0, 0); four tokens with logits
 * (ln2, 0, 0), (0, ln3, 0), (0, 0, 0), (-ln2, -ln2, 0):
 *   p = (1/2, 1/4, 1/4), (1/5, 3/5, 1/5), (1/3, 1/3, 1/3), (1/4, 1/4, 1/2) -> top-1 = e0, e1, e0 (tie), e2
 *   f = (2/4, 1/4, 1/4),  P = (77/60, 86/60, 77/60) / 4
 *   aux = 3 · (1/4)(1/60)(0.5·77 + 0.25·86 + 0.25·77) = 3 · 79.25 / 240 = 0.990625 */
START_TEST(aux_loss_hand_computed) {
    hy_layer L;
    make_moe(&L, 2, 3, 1, 4, 5);
    float *W = L.p[HY_MOE_P_ROUTER];
    const float Wr[6] = {1, 0, 0, 1, 0, 0};
    memcpy(W, Wr, sizeof Wr);
    const float x[8] = {logf(2), 0, 0, logf(3), 0, 0, -logf(2), -logf(2)};
    float y[8];
    fwd(&L, x, y, 1, 4);
    ck_assert_double_eq_tol(L.shared->aux.sum, 0.990625, 1e-6);
    int64_t cnt[3];
    hy_moe_expert_counts(&L, cnt, 3);
    ck_assert_int_eq(cnt[0], 2); ck_assert_int_eq(cnt[1], 1); ck_assert_int_eq(cnt[2], 1);
    /* the output weight is p of the chosen expert, not renormalised: token 0 = 1/2 · expert_0(x) */
    hy_layer one;
    make_moe(&one, 2, 3, 1, 4, 5);   /* same seed: same experts */
    memset(one.p[HY_MOE_P_ROUTER], 0, sizeof Wr);
    float y0[2];
    fwd(&one, x, y0, 1, 1);          /* uniform router: expert 0 with weight 1/3 */
    for (int j = 0; j < 2; j++) ck_assert_float_eq_tol(y[j], 1.5f * y0[j], 1e-6f + 1e-5f * fabsf(y0[j]));
    hy_layer_standalone_free(&one);
    hy_layer_standalone_free(&L);
}
END_TEST

/* Ties: a zero router gives every expert p = 1/E, so every token takes experts 0..k-1; a router
 * whose rows 1 and 3 are equal makes those two tie on every token, and 3 is chosen only with 1. */
START_TEST(top_k_ties_are_deterministic) {
    enum { D = 12, E = 5, K = 2, F = 16, B = 2, T = 17 };
    hy_layer L;
    make_moe(&L, D, E, K, F, 9);
    float *W = L.p[HY_MOE_P_ROUTER];
    memset(W, 0, sizeof(float) * E * D);
    size_t n = (size_t)B * T * D;
    float *x = hy_malloc(n * 4), *y = hy_malloc(n * 4), *y2 = hy_malloc(n * 4);
    tu_fill_normal(x, n, 1.0f, 3);
    fwd(&L, x, y, B, T);
    int64_t cnt[E];
    hy_moe_expert_counts(&L, cnt, E);
    ck_assert_int_eq(cnt[0], B * T); ck_assert_int_eq(cnt[1], B * T);
    ck_assert_int_eq(cnt[2] + cnt[3] + cnt[4], 0);
    ck_assert_double_eq_tol(L.shared->aux.sum, E * (1.0 / E + 1.0 / E), 1e-6);   /* f = (1,1,0,0,0), P = 1/E */
    /* rows 1 and 3 equal, the others random */
    tu_fill_normal(W, (size_t)E * D, 1.0f, 4);
    memcpy(W + 3 * D, W + 1 * D, sizeof(float) * D);
    hy_moe_reset_counts(&L);
    double *yr = hy_malloc(D * 8), p[E];
    int chosen[E];
    fwd(&L, x, y, B, T);
    int with3 = 0;
    for (int r = 0; r < B * T; r++) {
        reference_token(&L, x + (size_t)r * D, yr, p, chosen);
        ck_assert_msg(!chosen[3] || chosen[1], "token %d: expert 3 chosen without its twin 1", r);
        with3 += chosen[3];
        for (int j = 0; j < D; j++)
            ck_assert_msg(fabs(yr[j] - y[(size_t)r * D + j]) < 1e-5 * (1 + fabs(yr[j])), "token %d differs", r);
    }
    ck_assert_msg(with3 > 0, "the test never exercised the 1-3 tie (choose another seed)");
    hy_moe_expert_counts(&L, cnt, E);
    ck_assert_int_eq(cnt[3], with3);
    /* and the same input gives the bit-identical output again */
    fwd(&L, x, y2, B, T);
    ck_assert(memcmp(y, y2, n * 4) == 0);
    hy_free(x), hy_free(y), hy_free(y2), hy_free(yr);
    hy_layer_standalone_free(&L);
}
END_TEST

/* Smallest gap log p_k - log p_{k+1} (router logits) over the tokens of x: routing is piecewise
 * constant, so finite differences are only valid away from a change of the top-k set. */
static double routing_margin(const hy_layer *L, const float *x, int rows, int *worst_row) {
    int d = L->d_model, E = opt_i(L, "n_experts"), k = opt_i(L, "top_k");
    double worst = INFINITY;
    for (int r = 0; r < rows; r++) {
        double z[64];
        for (int e = 0; e < E; e++) {
            z[e] = 0;
            for (int j = 0; j < d; j++) z[e] += (double)L->p[HY_MOE_P_ROUTER][(size_t)e * d + j] * x[(size_t)r * d + j];
        }
        for (int a = 1; a < E; a++)   /* insertion sort, descending */
            for (int b = a; b > 0 && z[b] > z[b - 1]; b--) {
                double t = z[b];
                z[b] = z[b - 1], z[b - 1] = t;
            }
        double gap = k < E ? z[k - 1] - z[k] : INFINITY;
        if (gap < worst) worst = gap, *worst_row = r;
    }
    return worst;
}

/* loss = Σ y·R + coef · aux (one MoE layer: n_aux = 1) */
static double moe_loss(hy_layer *L, const float *x, float *y, const float *R, int B, int T) {
    fwd(L, x, y, B, T);
    double s = 0;
    for (size_t i = 0; i < (size_t)B * T * L->d_model; i++) s += (double)y[i] * R[i];
    return s + (double)L->shared->aux.coef * L->shared->aux.sum;
}

/* Finite differences of Σ y·R + coef·aux for dx and samples of every parameter tensor, with a
 * large coef so that the aux term (through P only) is a visible part of the router gradient. */
static double moe_grad_check(int d, int E, int k, int F, float coef, uint64_t seed) {
    enum { B = 2, T = 6 };
    hy_layer L;
    make_moe(&L, d, E, k, F, seed);
    tu_fill_normal(L.p[HY_MOE_P_ROUTER], (size_t)E * d, 1.5f / sqrtf((float)d), seed + 1);
    L.shared->aux.coef = coef;
    size_t n = (size_t)B * T * d;
    float *x = hy_malloc(n * 4), *y = hy_malloc(n * 4), *R = hy_malloc(n * 4), *dx = hy_malloc(n * 4);
    tu_fill_normal(x, n, 1.0f, seed + 2);
    tu_fill_normal(R, n, 1.0f, seed + 3);
    /* redraw tokens that sit near a routing tie */
    for (int tries = 0, r = 0; tries < 2000 && routing_margin(&L, x, B * T, &r) < 0.25; tries++)
        tu_fill_normal(x + (size_t)r * d, (size_t)d, 1.0f, seed + 1000 + tries);
    int r;
    ck_assert_msg(routing_margin(&L, x, B * T, &r) >= 0.25, "could not draw inputs away from routing ties");
    for (int p = 0; p < L.n_params; p++) memset(L.g[p], 0, sizeof(float) * (p ? (size_t)F * d : (size_t)E * d));
    L.keep_for_backward = true;
    moe_loss(&L, x, y, R, B, T);
    ck_assert_msg(L.ops->backward(&L, R, dx, B, T) == 0, "%s", hy_last_error());
    const float eps = 1e-2f;
    double worst = 0;
    hy_rng rng;
    hy_rng_seed(&rng, seed + 4);
    for (int p = -1; p < L.n_params; p++) {
        float *v = p < 0 ? x : L.p[p];
        const float *g = p < 0 ? dx : L.g[p];
        size_t nv = p < 0 ? n : p == 0 ? (size_t)E * d : (size_t)F * d;
        for (int s = 0; s < (p <= 0 ? 12 : 4); s++) {
            size_t i = hy_rng_below(&rng, nv);
            float keep = v[i];
            v[i] = keep + eps;
            double up = moe_loss(&L, x, y, R, B, T);
            v[i] = keep - eps;
            double down = moe_loss(&L, x, y, R, B, T);
            v[i] = keep;
            double num = (up - down) / (2.0 * eps);
            worst = fmax(worst, fabs(num - g[i]) / fmax(fabs(num) + fabs(g[i]), 1e-3));
        }
    }
    hy_free(x), hy_free(y), hy_free(R), hy_free(dx);
    hy_layer_standalone_free(&L);
    return worst;
}

START_TEST(gradients_with_aux) {
    double e1 = moe_grad_check(12, 4, 2, 16, 0.5f, 31);
    ck_assert_msg(e1 < 1e-2, "E 4 k 2: gradient error %g", e1);
    double e2 = moe_grad_check(10, 6, 1, 12, 2.0f, 41);
    ck_assert_msg(e2 < 1e-2, "E 6 k 1: gradient error %g", e2);
    double e3 = moe_grad_check(8, 3, 3, 8, 1.0f, 51);   /* k = E: every expert, routing cannot change */
    ck_assert_msg(e3 < 1e-2, "E 3 k 3: gradient error %g", e3);
}
END_TEST

/* The aux gradient alone (R = 0): the router gradient must equal coef · d aux / d W through P,
 * checked by finite differences of aux itself. */
START_TEST(aux_gradient_flows_through_P_only) {
    enum { D = 8, E = 4, K = 2, F = 8, B = 1, T = 10 };
    hy_layer L;
    make_moe(&L, D, E, K, F, 61);
    tu_fill_normal(L.p[HY_MOE_P_ROUTER], E * D, 0.5f, 62);
    L.shared->aux.coef = 1.0f;
    float x[B * T * D], y[B * T * D], dy[B * T * D] = {0}, dx[B * T * D];
    tu_fill_normal(x, B * T * D, 1.0f, 63);
    int r;
    for (int tries = 0; tries < 2000 && routing_margin(&L, x, B * T, &r) < 0.25; tries++)
        tu_fill_normal(x + r * D, D, 1.0f, 700 + tries);
    ck_assert(routing_margin(&L, x, B * T, &r) >= 0.25);
    L.keep_for_backward = true;
    fwd(&L, x, y, B, T);
    ck_assert_int_eq(L.ops->backward(&L, dy, dx, B, T), 0);
    double worst = 0, gnorm = 0;
    for (int i = 0; i < E * D; i++) {
        float *w = &L.p[HY_MOE_P_ROUTER][i], keep = *w;
        *w = keep + 1e-2f;
        fwd(&L, x, y, B, T);
        double up = L.shared->aux.sum;
        *w = keep - 1e-2f;
        fwd(&L, x, y, B, T);
        double down = L.shared->aux.sum;
        *w = keep;
        double num = (up - down) / 2e-2, an = L.g[HY_MOE_P_ROUTER][i];
        worst = fmax(worst, fabs(num - an) / fmax(fabs(num) + fabs(an), 1e-4));
        gnorm += an * an;
    }
    ck_assert_msg(gnorm > 1e-8, "the aux term gave no router gradient");
    ck_assert_msg(worst < 1e-2, "aux router gradient error %g", worst);
    /* no aux gradient reaches the experts */
    for (int p = 1; p < L.n_params; p++)
        for (int i = 0; i < F * D; i++) ck_assert_float_eq(L.g[p][i], 0.0f);
    hy_layer_standalone_free(&L);
}
END_TEST

START_TEST(step_matches_forward) {
    hy_layer L;
    make_moe(&L, 16, 8, 2, 24, 71);
    tu_fill_normal(L.p[HY_MOE_P_ROUTER], 8 * 16, 1.0f, 72);
    double e = tu_step_check(&L, 3, 11, 73);
    ck_assert_msg(e < 1e-5, "step vs forward %g", e);
    /* streaming adds nothing to the aux loss or the counts */
    hy_aux_reset(L.shared);
    hy_moe_reset_counts(&L);
    float x[16] = {1}, y[16];
    ck_assert_int_eq(L.ops->step(&L, NULL, x, y, 1), 0);
    int64_t cnt[8];
    hy_moe_expert_counts(&L, cnt, 8);
    for (int i = 0; i < 8; i++) ck_assert_int_eq(cnt[i], 0);
    ck_assert_int_eq(L.shared->aux.n, 0);
    hy_layer_standalone_free(&L);
}
END_TEST

START_TEST(options_names_and_accounting) {
    const hy_block_ops *ops = hy_block_find("moe");
    ck_assert_ptr_nonnull(ops);
    ck_assert(ops->kinds == HY_KIND_FFN);
    hy_opts o;
    ck_assert_int_eq(hy_block_opts_from_pairs(ops, 96, NULL, 0, &o), 0);
    ck_assert_int_eq(hy_opt_int(&o, 0), 16);
    ck_assert_int_eq(hy_opt_int(&o, 1), 2);
    ck_assert_int_eq(hy_opt_int(&o, 2), 256);   /* 8/3 · 96 = 256 */
    hy_param_spec s[HY_MAX_BLOCK_PARAMS];
    ck_assert_int_eq(ops->param_specs(&o, 96, s), 49);
    ck_assert_str_eq(s[0].name, "router.weight");
    ck_assert_int_eq(s[0].shape[0], 16); ck_assert_int_eq(s[0].shape[1], 96);
    ck_assert_str_eq(s[1].name, "experts.0.gate_proj.weight");
    ck_assert_str_eq(s[2].name, "experts.0.up_proj.weight");
    ck_assert_str_eq(s[3].name, "experts.0.down_proj.weight");
    ck_assert_int_eq(s[3].shape[0], 96); ck_assert_int_eq(s[3].shape[1], 256);
    ck_assert_str_eq(s[48].name, "experts.15.down_proj.weight");
    ck_assert_uint_eq(ops->state_bytes(&o, 96, 1000), 0);
    /* active parameters only: router + 2 of 16 experts */
    ck_assert_double_eq(ops->flop(&o, 96, 10), 10.0 * (2 * 96 * 16 + 4 * 16 + 2 * (6.0 * 96 * 256 + 4 * 256) + 2 * 2 * 96));
    const char *bad_k[] = {"n_experts=4", "top_k=5"};
    ck_assert_int_lt(hy_block_opts_from_pairs(ops, 32, bad_k, 2, &o), 0);
    ck_assert_ptr_nonnull(strstr(hy_last_error(), "top_k"));
    const char *bad_e[] = {"n_experts=65"};
    ck_assert_int_lt(hy_block_opts_from_pairs(ops, 32, bad_e, 1, &o), 0);
    const char *big[] = {"n_experts=64", "d_ff=4"};
    ck_assert_int_eq(hy_block_opts_from_pairs(ops, 8, big, 2, &o), 0);
    hy_layer L;
    ck_assert_int_eq(hy_layer_standalone(&L, ops, &o, 8, 1), 0);   /* 193 tensors */
    ck_assert_int_eq(L.n_params, 193);
    hy_layer_standalone_free(&L);
}
END_TEST

/* The generic hooks the trainer and the model use: the aux-loss flag, and the stats hook, which
 * gives the routing counts of hy_moe_expert_counts and resets them like hy_moe_reset_counts. */
START_TEST(hooks_aux_flag_and_stats) {
    const hy_block_ops *ops = hy_block_find("moe");
    ck_assert(ops->flags & HY_BLOCK_AUX_LOSS);
    ck_assert(!(ops->flags & HY_BLOCK_FIRST_VALUE));
    const hy_block_stats *st = ops->stats;
    ck_assert_ptr_nonnull(st);
    ck_assert_str_eq(st->file, "experts.csv");     /* the trainer's file and columns, as before the hook */
    ck_assert_str_eq(st->columns, "expert,tokens");
    ck_assert_str_eq(st->label, "token slots per expert");
    hy_layer L;
    make_moe(&L, 8, 5, 2, 8, 91);
    float x[3 * 8], y[3 * 8];
    tu_fill_normal(x, 24, 1.0f, 92);
    fwd(&L, x, y, 1, 3);
    int64_t a[5], b[5], total = 0;
    ck_assert_int_eq(st->get(&L, NULL, 0), 5);
    ck_assert_int_eq(st->get(&L, a, 5), 5);
    hy_moe_expert_counts(&L, b, 5);
    for (int e = 0; e < 5; e++) ck_assert(a[e] == b[e]), total += a[e];
    ck_assert(total == 3 * 2);   /* 3 tokens x top 2 */
    st->reset(&L);
    st->get(&L, a, 5);
    for (int e = 0; e < 5; e++) ck_assert(a[e] == 0);
    hy_layer_standalone_free(&L);
}
END_TEST

/* The stack: loss = ce + router_aux_coef · (mean of the MoE layers' aux), and backward on a model
 * whose backward contains the aux gradient of two MoE layers runs. */
START_TEST(model_loss_combines_aux) {
    const hy_block_ops *att = hy_block_find("attention"), *moe = hy_block_find("moe"), *sw = hy_block_find("swiglu");
    hy_model_config cfg = {.d_model = 16, .vocab_size = 20, .n_layers = 3, .tie_embeddings = true,
                           .router_aux_coef = 0.25f};
    hy_layer_cfg layers[3];
    cfg.layers = layers;
    const char *mp[] = {"n_experts=4", "top_k=2", "d_ff=8"}, *ap[] = {"n_heads=2"};
    for (int i = 0; i < 3; i++) {
        layers[i].mixer.ops = att;
        ck_assert_int_eq(hy_block_opts_from_pairs(att, 16, ap, 1, &layers[i].mixer.opts), 0);
        layers[i].ffn.ops = i == 1 ? sw : moe;
        ck_assert_int_eq(hy_block_opts_from_pairs(layers[i].ffn.ops, 16, i == 1 ? NULL : mp, i == 1 ? 0 : 3,
                                                  &layers[i].ffn.opts), 0);
    }
    hy_model *m;
    ck_assert_msg(hy_model_create(&cfg, 3, &m) == 0, "%s", hy_last_error());
    int32_t in[2 * 9], tg[2 * 9];
    for (int i = 0; i < 18; i++) in[i] = (i * 7) % 20, tg[i] = (i * 5 + 1) % 20;
    hy_loss l;
    ck_assert_int_eq(hy_model_forward(m, in, tg, 2, 9, true, &l), 0);
    double a0 = hy_moe_last_aux(&m->ffns[0]), a2 = hy_moe_last_aux(&m->ffns[2]);
    ck_assert_msg(a0 > 0 && a2 > 0, "aux %g %g", a0, a2);
    ck_assert_double_eq_tol(l.aux_loss, (a0 + a2) / 2, 1e-6);
    ck_assert_double_eq_tol(l.loss, l.ce_loss + 0.25 * l.aux_loss, 1e-6);
    ck_assert_int_eq(m->shared.aux.n, 2);
    hy_model_zero_grad(m);
    ck_assert_msg(hy_model_backward(m) == 0, "%s", hy_last_error());
    hy_param *r = hy_model_param(m, "layers.2.ffn.router.weight");
    ck_assert_ptr_nonnull(r);
    ck_assert_ptr_nonnull(hy_model_param(m, "layers.0.ffn.experts.3.down_proj.weight"));
    double gn = 0;
    for (size_t i = 0; i < r->numel; i++) gn += (double)r->grad[i] * r->grad[i];
    ck_assert(gn > 0 && isfinite(gn));
    hy_model_free(m);
}
END_TEST

static Suite *moe_suite(void) {
    Suite *s = suite_create("moe");
    TCase *k = tcase_create("routing");
    tcase_add_test(k, grouped_matches_per_token_reference);
    tcase_add_test(k, aux_loss_hand_computed);
    tcase_add_test(k, top_k_ties_are_deterministic);
    suite_add_tcase(s, k);
    TCase *g = tcase_create("gradients");
    tcase_add_test(g, gradients_with_aux);
    tcase_add_test(g, aux_gradient_flows_through_P_only);
    suite_add_tcase(s, g);
    TCase *o = tcase_create("block");
    tcase_add_test(o, step_matches_forward);
    tcase_add_test(o, options_names_and_accounting);
    tcase_add_test(o, hooks_aux_flag_and_stats);
    tcase_add_test(o, model_loss_combines_aux);
    suite_add_tcase(s, o);
    return s;
}
HY_TEST_SUITE(moe_suite)

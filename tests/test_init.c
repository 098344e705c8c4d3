/* Initialization (docs/blocks.md, "Initialization"): every plain linear layer of every registered
 * block follows the one convention of hy_init_linear, U(±1/sqrt(fan_in)) for weight and bias, and
 * every other parameter keeps the init its upstream defines (SPEC §2–3). Each parameter of each
 * block must be classified in `rules` below, so a new block or parameter fails here until it is. */
#include "core/mem.h"
#include "layers/registry.h"
#include "tests/testutil.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

/* How a parameter is initialised. */
enum kind {
    LINEAR,    /* plain linear weight (out, in...): the convention with fan_in = numel / out */
    BIAS,      /* bias of the plain linear `ref`: the convention with ref's fan_in */
    OUTPUT,    /* output projection weight: LINEAR × hy_output_init_scale (1/(2·n_layers)) */
    OUTPUT_BIAS, /* bias of the output projection `ref`: BIAS × the same scale */
    UNIFORM,   /* U(±1/sqrt(k)), k = last dim of `ref` (or of itself): conv1d defaults, mamba dt_proj */
    CONST,     /* every entry = v */
    NORMAL,    /* N(0, v²) */
    ORTHO,     /* rows (or, when taller than wide, columns) orthonormal × v · sqrt(max(1, rows/cols)) */
    FORMULA,   /* checked by formula(): deterministic per-channel curves and ranges */
};

typedef struct rule rule;
struct rule {
    const char *block, *name;   /* name: the parameter name or its last components (moe's experts.{e}.) */
    enum kind kind;
    double v;
    const char *ref;
    /* FORMULA: checks x (the tensor `name` of layer L, numel n) and returns a message, or NULL. */
    const char *(*formula)(const hy_layer *L, const char *name, const float *x, size_t n);
};

static const char *mamba_formula(const hy_layer *L, const char *name, const float *x, size_t n);
static const char *mamba2_formula(const hy_layer *L, const char *name, const float *x, size_t n);
static const char *modal_formula(const hy_layer *L, const char *name, const float *x, size_t n);
static const char *rwkv7_formula(const hy_layer *L, const char *name, const float *x, size_t n);
static const char *cmix_formula(const hy_layer *L, const char *name, const float *x, size_t n);

static const rule rules[] = {
    {"attention", "q_proj.weight", LINEAR, 0, NULL, NULL},
    {"attention", "k_proj.weight", LINEAR, 0, NULL, NULL},
    {"attention", "v_proj.weight", LINEAR, 0, NULL, NULL},
    {"attention", "o_proj.weight", OUTPUT, 0, NULL, NULL},

    {"swiglu", "gate_proj.weight", LINEAR, 0, NULL, NULL},
    {"swiglu", "up_proj.weight", LINEAR, 0, NULL, NULL},
    {"swiglu", "down_proj.weight", OUTPUT, 0, NULL, NULL},

    {"moe", "router.weight", LINEAR, 0, NULL, NULL},
    {"moe", "gate_proj.weight", LINEAR, 0, NULL, NULL},
    {"moe", "up_proj.weight", LINEAR, 0, NULL, NULL},
    {"moe", "down_proj.weight", OUTPUT, 0, NULL, NULL},

    {"cmix", "key.weight", LINEAR, 0, NULL, NULL},
    {"cmix", "value.weight", OUTPUT, 0, NULL, NULL},
    {"cmix", "x_k", FORMULA, 0, NULL, cmix_formula},

    {"mamba", "in_proj.weight", LINEAR, 0, NULL, NULL},
    {"mamba", "x_proj.weight", LINEAR, 0, NULL, NULL},
    {"mamba", "out_proj.weight", OUTPUT, 0, NULL, NULL},
    {"mamba", "conv1d.weight", UNIFORM, 0, NULL, NULL},
    {"mamba", "conv1d.bias", UNIFORM, 0, "conv1d.weight", NULL},
    {"mamba", "dt_proj.weight", UNIFORM, 0, NULL, NULL},
    {"mamba", "dt_proj.bias", FORMULA, 0, NULL, mamba_formula},
    {"mamba", "A_log", FORMULA, 0, NULL, mamba_formula},
    {"mamba", "D", CONST, 1, NULL, NULL},

    {"mamba2", "in_proj.weight", LINEAR, 0, NULL, NULL},
    {"mamba2", "out_proj.weight", OUTPUT, 0, NULL, NULL},
    {"mamba2", "conv1d.weight", UNIFORM, 0, NULL, NULL},
    {"mamba2", "conv1d.bias", UNIFORM, 0, "conv1d.weight", NULL},
    {"mamba2", "dt_bias", FORMULA, 0, NULL, mamba2_formula},
    {"mamba2", "A_log", FORMULA, 0, NULL, mamba2_formula},
    {"mamba2", "D", CONST, 1, NULL, NULL},
    {"mamba2", "norm.weight", CONST, 1, NULL, NULL},

    {"s4d", "output_linear.weight", OUTPUT, 0, NULL, NULL},
    {"s4d", "output_linear.bias", OUTPUT_BIAS, 0, "output_linear.weight", NULL},
    {"s4d", "kernel.log_dt", FORMULA, 0, NULL, modal_formula},
    {"s4d", "kernel.C", NORMAL, M_SQRT1_2, NULL, NULL},
    {"s4d", "kernel.log_A_real", CONST, -M_LN2, NULL, NULL},
    {"s4d", "kernel.A_imag", FORMULA, 0, NULL, modal_formula},
    {"s4d", "D", NORMAL, 1, NULL, NULL},

    {"hyena", "projections.weight", LINEAR, 0, NULL, NULL},
    {"hyena", "projections.bias", BIAS, 0, "projections.weight", NULL},
    {"hyena", "out_filter_dense.weight", OUTPUT, 0, NULL, NULL},
    {"hyena", "out_filter_dense.bias", OUTPUT_BIAS, 0, "out_filter_dense.weight", NULL},
    {"hyena", "short_filter_weight", UNIFORM, 0, NULL, NULL},
    {"hyena", "short_filter_bias", UNIFORM, 0, "short_filter_weight", NULL},
    {"hyena", "filter.log_dt", FORMULA, 0, NULL, modal_formula},
    {"hyena", "filter.C", NORMAL, M_SQRT1_2, NULL, NULL},
    {"hyena", "filter.log_A_real", CONST, -M_LN2, NULL, NULL},
    {"hyena", "filter.A_imag", FORMULA, 0, NULL, modal_formula},
    {"hyena", "D", NORMAL, 1, NULL, NULL},

    {"rwkv7", "receptance.weight", LINEAR, 0, NULL, NULL},
    {"rwkv7", "key.weight", LINEAR, 0, NULL, NULL},
    {"rwkv7", "value.weight", LINEAR, 0, NULL, NULL},
    {"rwkv7", "output.weight", OUTPUT, 0, NULL, NULL},
    {"rwkv7", "x_r", FORMULA, 0, NULL, rwkv7_formula},
    {"rwkv7", "x_w", FORMULA, 0, NULL, rwkv7_formula},
    {"rwkv7", "x_k", FORMULA, 0, NULL, rwkv7_formula},
    {"rwkv7", "x_v", FORMULA, 0, NULL, rwkv7_formula},
    {"rwkv7", "x_a", FORMULA, 0, NULL, rwkv7_formula},
    {"rwkv7", "x_g", FORMULA, 0, NULL, rwkv7_formula},
    {"rwkv7", "w0", FORMULA, 0, NULL, rwkv7_formula},
    {"rwkv7", "a0", FORMULA, 0, NULL, rwkv7_formula},
    {"rwkv7", "v0", FORMULA, 0, NULL, rwkv7_formula},
    {"rwkv7", "k_k", FORMULA, 0, NULL, rwkv7_formula},
    {"rwkv7", "k_a", CONST, 1.02, NULL, NULL},
    {"rwkv7", "r_k", CONST, -0.04, NULL, NULL},
    {"rwkv7", "w1", CONST, 0, NULL, NULL},
    {"rwkv7", "a1", CONST, 0, NULL, NULL},
    {"rwkv7", "v1", CONST, 0, NULL, NULL},
    {"rwkv7", "g1", CONST, 0, NULL, NULL},
    {"rwkv7", "w2", ORTHO, 0.1, NULL, NULL},
    {"rwkv7", "a2", ORTHO, 0.1, NULL, NULL},
    {"rwkv7", "v2", ORTHO, 0.1, NULL, NULL},
    {"rwkv7", "g2", ORTHO, 0.1, NULL, NULL},
    {"rwkv7", "ln_x.weight", CONST, 1, NULL, NULL},
    {"rwkv7", "ln_x.bias", CONST, 0, NULL, NULL},
};

/* ---------------------------------------------------------------- helpers ---- */

/* True when `name` is `tail` or ends in ".tail". */
static bool name_is(const char *name, const char *tail) {
    size_t a = strlen(name), b = strlen(tail);
    return a >= b && !strcmp(name + a - b, tail) && (a == b || name[a - b - 1] == '.');
}

/* The rule for parameter `name` of `block`, or NULL when it is not classified. */
static const rule *rule_of(const char *block, const char *name) {
    for (size_t i = 0; i < sizeof rules / sizeof *rules; i++)
        if (!strcmp(rules[i].block, block) && name_is(name, rules[i].name)) return &rules[i];
    return NULL;
}

/* Entries of a parameter tensor. */
static size_t numel_of(const hy_param_spec *s) {
    size_t n = 1;
    for (int d = 0; d < s->ndim; d++) n *= (size_t)s->shape[d];
    return n;
}

/* Index of the parameter called `name` in specs[0..n), or -1. */
static int spec_find(const hy_param_spec *specs, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(specs[i].name, name)) return i;
    return -1;
}

static char msg[512];

/* U(±bound) within statistical tolerance (bounds ~6 standard errors, so a pass is certain and a
 * deviation of a few percent in scale fails at the sizes used here): no entry beyond bound, the
 * largest close to it, mean ~ 0, std ~ bound/sqrt(3). */
static const char *check_uniform(const float *x, size_t n, double bound) {
    double mx = 0, s = 0, ss = 0, sd = bound / sqrt(3.0);
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(x[i])), s += x[i], ss += (double)x[i] * x[i];
    double mean = s / n, std = sqrt(fmax(ss / n - mean * mean, 0));
    if (mx > bound * (1 + 1e-6)) snprintf(msg, sizeof msg, "max |x| %.6g > bound %.6g", mx, bound);
    else if (mx < bound * (1 - 20.0 / n)) snprintf(msg, sizeof msg, "max |x| %.6g well below bound %.6g", mx, bound);
    else if (fabs(mean) > 6 * sd / sqrt((double)n)) snprintf(msg, sizeof msg, "mean %.3g, expected 0 (std %.4g)", mean, sd);
    else if (fabs(std / sd - 1) > 6 * 0.45 / sqrt((double)n))
        snprintf(msg, sizeof msg, "std %.6g, expected %.6g (bound %.6g)", std, sd, bound);
    else return NULL;
    return msg;
}

/* N(0, sd²) within statistical tolerance: mean, std, and tails beyond the uniform's. */
static const char *check_normal(const float *x, size_t n, double sd) {
    double mx = 0, s = 0, ss = 0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(x[i])), s += x[i], ss += (double)x[i] * x[i];
    double mean = s / n, std = sqrt(fmax(ss / n - mean * mean, 0));
    if (fabs(mean) > 6 * sd / sqrt((double)n)) snprintf(msg, sizeof msg, "mean %.3g, expected 0 (std %.4g)", mean, sd);
    else if (fabs(std / sd - 1) > 6 * M_SQRT1_2 / sqrt((double)n))
        snprintf(msg, sizeof msg, "std %.6g, expected %.6g", std, sd);
    else if (n >= 64 && mx < 2 * sd) snprintf(msg, sizeof msg, "no tails: max |x| %.4g < 2 std", mx);
    else return NULL;
    return msg;
}

/* The convention for a plain linear weight or bias with this fan_in, times scale (1 for
 * hy_init_linear, 1/(2·n_layers) for an output projection). */
static const char *check_convention(const float *x, size_t n, int fan_in, double scale) {
    return check_uniform(x, n, scale / sqrt((double)fan_in));
}

/* Every x[i] within tol (relative, floored at 1) of expr, a formula in i; else returns a message
 * naming the first bad entry. */
#define EXPECT_EACH(n, expr, tol)                                                                   \
    for (size_t i = 0; i < (n); i++) {                                                              \
        double want_ = (expr);                                                                      \
        if (!(fabs(x[i] - want_) <= (tol) * fmax(1, fabs(want_)))) {                                \
            snprintf(msg, sizeof msg, "entry %zu is %.9g, expected %.9g", i, (double)x[i], want_); \
            return msg;                                                                             \
        }                                                                                           \
    }

/* The resolved value of option `key` of layer L. */
static double opt_of(const hy_layer *L, const char *key) { return L->opts.v[hy_opt_index(L->ops, key)]; }

/* Mamba: A_log[c, n] = log(n + 1); softplus(dt_proj.bias) in [dt_min, dt_max], log-uniform there. */
static const char *mamba_formula(const hy_layer *L, const char *name, const float *x, size_t n) {
    int N = (int)opt_of(L, "d_state");
    if (!strcmp(name, "A_log")) {
        EXPECT_EACH(n, log((double)(i % N + 1)), 1e-6);
        return NULL;
    }
    double lo = log(opt_of(L, "dt_min")), hi = log(opt_of(L, "dt_max")), s = 0;
    for (size_t i = 0; i < n; i++) {
        double b = x[i], ldt = log(b > 20 ? b : log1p(exp(b)));
        if (ldt < lo - 1e-4 || ldt > hi + 1e-4) {
            snprintf(msg, sizeof msg, "entry %zu: dt = %.6g outside [dt_min, dt_max]", i, exp(ldt));
            return msg;
        }
        s += ldt;
    }
    if (fabs(s / n - (lo + hi) / 2) > 6 * (hi - lo) / sqrt(12.0 * n)) {
        snprintf(msg, sizeof msg, "mean log dt %.4g, expected %.4g (log-uniform)", s / n, (lo + hi) / 2);
        return msg;
    }
    return NULL;
}

/* Mamba-2: exp(A_log) uniform in [A_init_min, A_init_max]; dt_bias as mamba's dt_proj.bias. */
static const char *mamba2_formula(const hy_layer *L, const char *name, const float *x, size_t n) {
    if (strcmp(name, "A_log")) return mamba_formula(L, name, x, n);
    double lo = opt_of(L, "A_init_min"), hi = opt_of(L, "A_init_max"), s = 0;
    for (size_t i = 0; i < n; i++) {
        double A = exp(x[i]);
        if (A < lo * (1 - 1e-6) || A > hi * (1 + 1e-6)) {
            snprintf(msg, sizeof msg, "entry %zu: A = exp(A_log) = %.6g outside [A_init_min, A_init_max]", i, A);
            return msg;
        }
        s += A;
    }
    if (fabs(s / n - (lo + hi) / 2) > 6 * (hi - lo) / sqrt(12.0 * n)) {
        snprintf(msg, sizeof msg, "mean A %.4g, expected %.4g (uniform)", s / n, (lo + hi) / 2);
        return msg;
    }
    return NULL;
}

/* S4D-Lin (s4d's kernel.*, hyena's filter.*): log_dt ~ U(ln dt_min, ln dt_max); A_imag[h, m] = π·m. */
static const char *modal_formula(const hy_layer *L, const char *name, const float *x, size_t n) {
    if (name_is(name, "A_imag")) {
        int M = (int)opt_of(L, "d_state") / 2;
        EXPECT_EACH(n, M_PI * (double)(i % M), 1e-6);
        return NULL;
    }
    double lo = log(opt_of(L, "dt_min")), hi = log(opt_of(L, "dt_max")), mid = (lo + hi) / 2;
    float *c = hy_malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) c[i] = (float)(x[i] - mid);
    const char *e = check_uniform(c, n, (hi - lo) / 2);
    hy_free(c);
    return e;
}

/* RWKV-7 x070 for a lone layer (layer 0 of 1: ratio_0_to_1 = 0, ratio_1_to_almost0 = 1); the
 * curves of docs/blocks.md with c the channel, ddd = c/C, lin = c/(C-1) - 0.5, zigzag z·|z|. */
static const char *rwkv7_formula(const hy_layer *L, const char *name, const float *x, size_t n) {
    int C = L->d_model, N = (int)opt_of(L, "head_size");
    static const char *const mix[6] = {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"};
    static const double p[6] = {0.2, 0.9, 0.7, 0.7, 0.9, 0.2};
#define LIN_(c) ((double)(c) / (C - 1) - 0.5)
#define ZZ_(c) ((((c) % N) - (N - 1) / 2.0) / ((N - 1) / 2.0) * fabs((((c) % N) - (N - 1) / 2.0) / ((N - 1) / 2.0)))
    for (int k = 0; k < 6; k++)
        if (!strcmp(name, mix[k])) {
            EXPECT_EACH(n, 1 - pow((double)i / C, p[k]), 1e-6);
            return NULL;
        }
    if (!strcmp(name, "w0")) EXPECT_EACH(n, -6 + 6 * ((double)i / (C - 1)) + 0.5 + 2.5 * ZZ_(i), 1e-6)
    else if (!strcmp(name, "a0")) EXPECT_EACH(n, -0.19 + 0.3 * ZZ_(i) + 0.4 * LIN_(i), 1e-6)
    else if (!strcmp(name, "v0")) EXPECT_EACH(n, 0.73 - 0.4 * LIN_(i), 1e-6)
    else if (!strcmp(name, "k_k")) EXPECT_EACH(n, 0.71 - 0.1 * LIN_(i), 1e-6)
    else return "no formula";
#undef LIN_
#undef ZZ_
    return NULL;
}

/* cmix x070, layer 0 of 1: x_k = 1 - (c/d)^1. */
static const char *cmix_formula(const hy_layer *L, const char *name, const float *x, size_t n) {
    (void)name;
    EXPECT_EACH(n, 1 - (double)i / L->d_model, 1e-6);
    return NULL;
}

/* Rows (or columns, when taller than wide) orthonormal, times gain · sqrt(max(1, rows/cols)). */
static const char *check_ortho(const float *x, int rows, int cols, double gain) {
    bool by_rows = rows <= cols;
    int nv = by_rows ? rows : cols, len = by_rows ? cols : rows;
    double g2 = gain * gain * (rows > cols ? (double)rows / cols : 1.0);
    for (int a = 0; a < nv; a++)
        for (int b = 0; b <= a; b++) {
            double dot = 0;
            for (int i = 0; i < len; i++)
                dot += by_rows ? (double)x[(size_t)a * cols + i] * x[(size_t)b * cols + i]
                               : (double)x[(size_t)i * cols + a] * x[(size_t)i * cols + b];
            if (fabs(dot - (a == b ? g2 : 0)) > 1e-5 * g2) {
                snprintf(msg, sizeof msg, "vectors %d, %d: dot %.6g, expected %.6g", a, b, dot, a == b ? g2 : 0);
                return msg;
            }
        }
    return NULL;
}

/* Checks every parameter of layer L against its rule; fails the test naming the first deviation.
 * out_scale: the expected scale of its output projection. */
static void check_layer(const hy_layer *L, double out_scale) {
    const char *block = L->ops->name;
    hy_param_spec specs[HY_MAX_BLOCK_PARAMS];
    int np = L->ops->param_specs(&L->opts, L->d_model, specs);
    ck_assert_int_eq(np, L->n_params);
    for (int i = 0; i < np; i++) {
        const hy_param_spec *s = &specs[i];
        const rule *r = rule_of(block, s->name);
        ck_assert_msg(r, "%s.%s: not classified in tests/test_init.c (a plain linear, or which upstream init?)",
                      block, s->name);
        const float *x = L->p[i];
        size_t n = numel_of(s);
        const hy_param_spec *ref = s;
        if (r->ref) {
            int k = spec_find(specs, np, r->ref);
            ck_assert_msg(k >= 0, "%s.%s: no parameter %s", block, s->name, r->ref);
            ref = &specs[k];
        }
        const char *e = NULL;
        switch (r->kind) {
        case LINEAR: e = check_convention(x, n, (int)(n / (size_t)s->shape[0]), 1); break;
        case BIAS: e = check_convention(x, n, (int)(numel_of(ref) / (size_t)ref->shape[0]), 1); break;
        case OUTPUT: e = check_convention(x, n, (int)(n / (size_t)s->shape[0]), out_scale); break;
        case OUTPUT_BIAS:
            e = check_convention(x, n, (int)(numel_of(ref) / (size_t)ref->shape[0]), out_scale);
            break;
        case UNIFORM: e = check_uniform(x, n, 1.0 / sqrt((double)ref->shape[ref->ndim - 1])); break;
        case CONST: {
            for (size_t k = 0; k < n && !e; k++)
                if (x[k] != (float)r->v) {
                    snprintf(msg, sizeof msg, "entry %zu is %.9g, expected %.9g", k, (double)x[k], r->v);
                    e = msg;
                }
            break;
        }
        case NORMAL: e = check_normal(x, n, r->v); break;
        case ORTHO: e = check_ortho(x, s->shape[0], s->shape[1], r->v); break;
        case FORMULA: e = r->formula(L, s->name, x, n); break;
        }
        ck_assert_msg(!e, "%s.%s (%s): %s", block, s->name, r->kind <= OUTPUT_BIAS ? "plain linear" : "upstream init", e);
    }
}

/* ---------------------------------------------------------------- tests ---- */

/* Every registered block at d_model 128 (default options), two seeds. */
START_TEST(every_block_follows_the_convention) {
    const hy_block_ops *ops = hy_block_at(_i / 2);
    hy_layer L;
    tu_layer(&L, ops->name, 128, NULL, 0, 11 + (uint64_t)(_i % 2));
    check_layer(&L, 0.5); /* a lone layer: a stack of 1, two residual branches */
    hy_layer_standalone_free(&L);
}
END_TEST

/* Options that change the fan-ins and shapes: GQA attention, narrow and wide ffns, mamba with
 * another expand and dt_rank, a LoRA taller than wide (orthogonal columns), other state sizes,
 * mamba2 with two groups. */
START_TEST(other_shapes) {
    static const struct {
        const char *block;
        int d;
        const char *pairs[3];
    } cases[] = {
        {"attention", 96, {"n_heads=6", "n_kv_heads=2", NULL}},
        {"swiglu", 64, {"d_ff=512", NULL, NULL}},
        {"moe", 64, {"n_experts=4", "d_ff=96", NULL}},
        {"cmix", 64, {"d_ff=96", NULL, NULL}},
        {"mamba", 64, {"expand=3", "dt_rank=12", NULL}},
        {"rwkv7", 64, {"head_size=16", "d_gate_lora=96", NULL}},
        {"s4d", 96, {"d_state=16", NULL, NULL}},
        {"hyena", 96, {"d_state=8", NULL, NULL}},
        {"mamba2", 64, {"headdim=16", "ngroups=2", "d_state=32"}},   /* last: the seeds above stay */
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int np = 0;
        while (np < 3 && cases[c].pairs[np]) np++;
        hy_layer L;
        tu_layer(&L, cases[c].block, cases[c].d, cases[c].pairs, np, 5 + c);
        check_layer(&L, 0.5);
        hy_layer_standalone_free(&L);
    }
}
END_TEST

/* The helper itself: weight then bias, both U(±1/sqrt(in)); no bias = nothing else written. */
START_TEST(helper) {
    enum { OUT = 300, IN = 200 };
    static float w[OUT * IN], b[OUT + 1];
    hy_rng r;
    hy_rng_seed(&r, 3);
    b[OUT] = 42;
    hy_init_linear(w, b, OUT, IN, &r);
    const char *e = check_convention(w, OUT * IN, IN, 1);
    ck_assert_msg(!e, "weight: %s", e);
    e = check_convention(b, OUT, IN, 1);
    ck_assert_msg(!e, "bias: %s", e);
    ck_assert_float_eq(b[OUT], 42);
    /* a different fan_in must be caught */
    ck_assert_ptr_nonnull(check_convention(w, OUT * IN, IN * 9 / 10, 1));
}
END_TEST

/* Output projections in a stack: in layer `index` of n_layers 1 and 4, every block's output
 * projection (weight, and bias where it has one) is the convention × 1/(2·n_layers); at depth 4 the
 * unscaled and the 1/sqrt(2·n_layers) conventions fail the same check. */
START_TEST(output_projections_scale_with_depth) {
    for (int b = 0; b < hy_block_count(); b++) {
        const hy_block_ops *ops = hy_block_at(b);
        for (int n_layers = 1; n_layers <= 4; n_layers += 3)
            for (int index = 0; index < n_layers; index += n_layers - 1 > 0 ? n_layers - 1 : 1) {
                hy_layer L;
                tu_layer(&L, ops->name, 64, NULL, 0, 21);
                L.shared->n_layers = n_layers; /* re-initialise as layer `index` of the stack */
                L.index = index;
                hy_rng rng;
                hy_rng_seed(&rng, 22 + (uint64_t)index);
                ops->init(&L, &rng);
                double want = 1.0 / (2.0 * n_layers);
                ck_assert_double_eq_tol(hy_output_init_scale(&L), want, 1e-7);
                hy_param_spec specs[HY_MAX_BLOCK_PARAMS];
                int np = ops->param_specs(&L.opts, L.d_model, specs), n_out = 0;
                for (int i = 0; i < np; i++) {
                    const rule *r = rule_of(ops->name, specs[i].name);
                    ck_assert_ptr_nonnull(r);
                    if (r->kind != OUTPUT && r->kind != OUTPUT_BIAS) continue;
                    const hy_param_spec *ref = r->ref ? &specs[spec_find(specs, np, r->ref)] : &specs[i];
                    size_t n = numel_of(&specs[i]);
                    int fan_in = (int)(numel_of(ref) / (size_t)ref->shape[0]);
                    const char *e = check_convention(L.p[i], n, fan_in, want);
                    ck_assert_msg(!e, "%s.%s, layer %d of %d: %s", ops->name, specs[i].name, index, n_layers, e);
                    if (n_layers > 1 && n >= 256) {
                        ck_assert_ptr_nonnull(check_convention(L.p[i], n, fan_in, 1));
                        ck_assert_ptr_nonnull(check_convention(L.p[i], n, fan_in, 1 / sqrt(2.0 * n_layers)));
                    }
                    n_out++;
                }
                ck_assert_msg(n_out > 0, "%s: no output projection classified", ops->name);
                hy_layer_standalone_free(&L);
            }
    }
}
END_TEST

static Suite *init_suite(void) {
    Suite *s = suite_create("init");
    TCase *t = tcase_create("convention");
    tcase_add_loop_test(t, every_block_follows_the_convention, 0, 2 * hy_block_count());
    tcase_add_test(t, other_shapes);
    tcase_add_test(t, helper);
    tcase_add_test(t, output_projections_scale_with_depth);
    suite_add_tcase(s, t);
    return s;
}
HY_TEST_SUITE(init_suite)

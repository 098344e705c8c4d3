/* Streaming inference over every registered block (blocks merged later are covered with no change
 * here): greedy generation equals the argmax of the parallel forward at every position, multi-
 * token prefill equals token-by-token steps, a saved and reloaded state continues with identical
 * logits, sampling is seeded and top-k / top-p restrict the support (the CLI: test_generate_cli.c). */
#include "core/error.h"
#include "core/gemm.h"
#include "core/mem.h"
#include "models/checkpoint.h"
#include "models/generate.h"
#include "models/model.h"
#include "models/ops.h"
#include "models/safetensors.h"
#include "experiments/config.h"
#include "experiments/experiment.h"
#include "tests/testutil.h"
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { D = 64, V = 32, MAX_LAYERS = 64 };

/* A stack description: n layers of (mixer, ffn) block names (ffn NULL = none). */
typedef struct {
    char label[256];
    int n;
    const hy_block_ops *mixer[MAX_LAYERS], *ffn[MAX_LAYERS];
} stack;

static void stack_add(stack *s, const hy_block_ops *mixer, const hy_block_ops *ffn) {
    ck_assert_int_lt(s->n, MAX_LAYERS);
    s->mixer[s->n] = mixer, s->ffn[s->n] = ffn, s->n++;
}

/* The model of a stack at d_model 64 with every block's default options, untied head scaled up so
 * logits are well separated (random-init logits are nearly flat, and argmax of nearly equal
 * values is decided by rounding, not by the model). */
static hy_model *build(const stack *s, uint64_t seed) {
    hy_layer_cfg layers[MAX_LAYERS];
    hy_model_config c = {.d_model = D, .vocab_size = V, .n_layers = s->n, .tie_embeddings = false,
                         .router_aux_coef = 0.001f, .layers = layers};
    for (int i = 0; i < s->n; i++) {
        layers[i].mixer.ops = s->mixer[i], layers[i].ffn.ops = s->ffn[i];
        ck_assert_msg(hy_block_opts_from_pairs(s->mixer[i], D, NULL, 0, &layers[i].mixer.opts) == 0, "%s: %s",
                      s->label, hy_last_error());
        if (s->ffn[i])
            ck_assert_msg(hy_block_opts_from_pairs(s->ffn[i], D, NULL, 0, &layers[i].ffn.opts) == 0, "%s: %s",
                          s->label, hy_last_error());
    }
    hy_model *m;
    ck_assert_msg(hy_model_create(&c, seed, &m) == 0, "%s: %s", s->label, hy_last_error());
    for (size_t i = 0; i < m->lm_head->numel; i++) m->lm_head->data[i] *= 50.0f;
    return m;
}

static void tokens_below(int32_t *x, int n, uint64_t seed, int vocab) {
    hy_rng r;
    hy_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) x[i] = (int32_t)hy_rng_below(&r, vocab);
}
static void tokens(int32_t *x, int n, uint64_t seed) { tokens_below(x, n, seed, V); }

/* Every stack the streaming tests run on: each mixer with a swiglu ffn, each ffn behind an
 * attention mixer (two layers each, so cross-layer state is exercised), and two whole hybrid
 * stacks: every mixer in turn with the ffns cycling (one layer without ffn), and every mixer
 * twice in a row ("striped" pairs, as RWKV-7's first/later layers differ). */
static int all_stacks(stack *out, int max) {
    const hy_block_ops *att = hy_block_find("attention"), *swi = hy_block_find("swiglu");
    ck_assert(att && swi);
    const hy_block_ops *mixers[64], *ffns[64];
    int nm = 0, nf = 0, n = 0;
    for (int i = 0; i < hy_block_count(); i++) {
        const hy_block_ops *b = hy_block_at(i);
        if (b->kinds & HY_KIND_MIXER) mixers[nm++] = b;
        if (b->kinds & HY_KIND_FFN) ffns[nf++] = b;
    }
    for (int i = 0; i < nm && n < max; i++, n++) {
        memset(&out[n], 0, sizeof out[n]);
        snprintf(out[n].label, sizeof out[n].label, "%s+swiglu", mixers[i]->name);
        stack_add(&out[n], mixers[i], swi), stack_add(&out[n], mixers[i], swi);
    }
    for (int i = 0; i < nf && n < max; i++, n++) {
        memset(&out[n], 0, sizeof out[n]);
        snprintf(out[n].label, sizeof out[n].label, "attention+%s", ffns[i]->name);
        stack_add(&out[n], att, ffns[i]), stack_add(&out[n], att, ffns[i]);
    }
    if (n + 2 > max) return n;
    stack *a = &out[n++], *p = &out[n++];
    memset(a, 0, sizeof *a), memset(p, 0, sizeof *p);
    snprintf(a->label, sizeof a->label, "hybrid-all");
    snprintf(p->label, sizeof p->label, "hybrid-striped-pairs");
    for (int i = 0; i < nm; i++) stack_add(a, mixers[i], ffns[i % nf]);
    stack_add(a, mixers[0], NULL);
    for (int i = 0; i < nm; i++) {
        stack_add(p, mixers[i], ffns[(i + 1) % nf]);
        stack_add(p, mixers[i], ffns[i % nf]);
    }
    return n;
}

static float max_abs(const float *x, size_t n) {
    float m = 0;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(x[i]));
    return m;
}

static int32_t argmax_of(const float *z, int Vm) {
    int32_t b = 0;
    for (int v = 1; v < Vm; v++)
        if (z[v] > z[b]) b = v;
    return b;
}

/* ---- greedy generation vs the parallel forward ---- */

/* Greedy generation from a random prompt against the parallel forward over the same text; frees m. */
static void check_greedy_model(hy_model *m, const char *label) {
    enum { P = 13, N = 24 };
    const int V = m->cfg.vocab_size;
    int32_t seq[P + N];
    tokens_below(seq, P, 3, V);
    hy_model_state *st;
    ck_assert_msg(hy_model_state_new(m, 1, &st) == 0, "%s: %s", label, hy_last_error());
    /* the prompt's logits through prefill, at every position */
    float *pre = hy_malloc(sizeof(float) * P * V);
    ck_assert_msg(hy_model_prefill(m, st, seq, P, pre, true) == 0, "%s: %s", label, hy_last_error());
    hy_model_state_free(m, st);
    ck_assert_int_eq(hy_model_state_new(m, 1, &st), 0);
    hy_sample_opts greedy = {.temperature = 0, .top_k = 0, .top_p = 1, .seed = 1};
    int got = hy_generate(m, st, seq, P, N, &greedy, NULL, NULL, seq + P);
    ck_assert_msg(got == N, "%s: generate returned %d: %s", label, got, hy_last_error());
    ck_assert_int_eq(hy_model_state_position(st), P + N);
    /* the parallel forward over the whole text */
    ck_assert_int_eq(hy_model_forward(m, seq, NULL, 1, P + N - 1, false, NULL), 0);
    const float *full = hy_model_logits(m);
    float scale = max_abs(full, (size_t)(P + N - 1) * V);
    ck_assert_msg(scale > 1, "%s: logits too flat (%g) for a meaningful argmax", label, scale);
    for (int t = 0; t < P; t++)
        for (int v = 0; v < V; v++)
            ck_assert_msg(fabsf(pre[t * V + v] - full[t * V + v]) <= 1e-4f * scale, "%s: prefill logit t=%d v=%d: %g vs %g",
                          label, t, v, pre[t * V + v], full[t * V + v]);
    if (getenv("HY_DEBUG")) {
        fprintf(stderr, "%-28s logit scale %6.2f, generated:", label, scale);
        for (int j = 0; j < N; j++) fprintf(stderr, " %d", seq[P + j]);
        fprintf(stderr, "\n");
    }
    for (int j = 0; j < N; j++) {
        const float *z = full + (size_t)(P - 1 + j) * V;
        int32_t want = argmax_of(z, V);
        /* equal, or a tie within rounding (the two top logits closer than 1e-5 of the scale) */
        ck_assert_msg(seq[P + j] == want || z[want] - z[seq[P + j]] <= 1e-5f * scale,
                      "%s: generated token %d is %d, parallel argmax %d (logits %g vs %g)", label, j, seq[P + j], want,
                      z[seq[P + j]], z[want]);
    }
    hy_free(pre);
    hy_model_state_free(m, st);
    hy_model_free(m);
}

static void check_greedy(const stack *s) { check_greedy_model(build(s, 11), s->label); }

/* Greedy decoding of one shipped model, its logits sharpened by the final norm (inputs as they are). */
static void check_greedy_config(const hy_run_config *c, const char *label) {
    hy_model *m;
    ck_assert_msg(hy_model_create(&c->model, c->seed, &m) == 0, "%s: %s", label, hy_last_error());
    for (size_t k = 0; k < m->norm_f->numel; k++) m->norm_f->data[k] *= 50.0f;   /* logits x 50 */
    check_greedy_model(m, label);
}

/* Every shipped config (every .yaml in configs/): a plain run config's model, and for an experiment
 * the model of each of its variants (the transformer, mamba, jamba-like, striped and other stacks of
 * configs/models/), with their own sizes and options. */
START_TEST(greedy_equals_parallel_argmax_shipped_configs) {
    glob_t g;
    int found = glob("configs/*.yaml", 0, NULL, &g) == 0 ? (int)g.gl_pathc : 0;
    ck_assert_msg(found > 0, "no configs/*.yaml (run from the repository root)");
    int checked = 0;
    for (int i = 0; i < found; i++) {
        bool is_exp = false;
        hy_experiment_detect(g.gl_pathv[i], &is_exp);
        if (!is_exp) {
            hy_run_config c;
            ck_assert_msg(hy_run_config_load(g.gl_pathv[i], NULL, 0, &c) == 0, "%s", hy_last_error());
            check_greedy_config(&c, g.gl_pathv[i]);
            hy_run_config_free(&c);
            checked++;
            continue;
        }
        hy_experiment e;
        ck_assert_msg(hy_experiment_load(g.gl_pathv[i], NULL, 0, &e) == 0, "%s", hy_last_error());
        for (int r = 0; r < e.n_runs; r++) {
            bool seen = false;   /* one model per variant: the sweep's first point */
            for (int q = 0; q < r && !seen; q++) seen = !strcmp(e.runs[q].variant, e.runs[r].variant);
            if (seen) continue;
            char label[512];
            snprintf(label, sizeof label, "%s variant %s", g.gl_pathv[i], e.runs[r].variant);
            check_greedy_config(&e.runs[r].cfg, label);
            checked++;
        }
        hy_experiment_free(&e);
    }
    ck_assert_int_gt(checked, 0);
    globfree(&g);
}
END_TEST


START_TEST(greedy_equals_parallel_argmax_every_block_and_stack) {
    stack *s = hy_calloc(sizeof(stack) * 64);
    int n = all_stacks(s, 64);
    ck_assert_int_ge(n, 4);
    for (int i = 0; i < n; i++) check_greedy(&s[i]);
    hy_free(s);
}
END_TEST

/* ---- prefill vs step ---- */

/* B = 2 sequences: prefill in two calls (the second from a non-empty state), then steps, against
 * steps only; logits at every position agree. T crosses the prefill chunk once (outside quick). */
static void check_prefill(const stack *s, int T1, int T2, int T3) {
    enum { B = 2 };
    int T = T1 + T2 + T3;
    hy_model *m = build(s, 5);
    int32_t *tok = hy_malloc(sizeof(int32_t) * B * T), *part = hy_malloc(sizeof(int32_t) * B * T);
    tokens(tok, B * T, 9);
    float *a = hy_malloc(sizeof(float) * B * T * V), *b = hy_malloc(sizeof(float) * B * T * V),
          *tmp = hy_malloc(sizeof(float) * B * (T1 > T2 ? T1 : T2) * V), lg[B * V];
    hy_model_state *sa, *sb;
    ck_assert_int_eq(hy_model_state_new(m, B, &sa), 0);
    ck_assert_int_eq(hy_model_state_new(m, B, &sb), 0);
    int t0 = 0, lens[2] = {T1, T2};
    for (int c = 0; c < 2; t0 += lens[c], c++) {
        for (int r = 0; r < B; r++) memcpy(part + r * lens[c], tok + r * T + t0, sizeof(int32_t) * lens[c]);
        ck_assert_msg(hy_model_prefill(m, sa, part, lens[c], tmp, true) == 0, "%s: %s", s->label, hy_last_error());
        for (int r = 0; r < B; r++)
            memcpy(a + ((size_t)r * T + t0) * V, tmp + (size_t)r * lens[c] * V, sizeof(float) * lens[c] * V);
    }
    for (int t = t0; t < T; t++) {
        int32_t x[B] = {tok[t], tok[T + t]};
        ck_assert_msg(hy_model_step(m, sa, x, lg) == 0, "%s: %s", s->label, hy_last_error());
        for (int r = 0; r < B; r++) memcpy(a + ((size_t)r * T + t) * V, lg + r * V, sizeof(float) * V);
    }
    for (int t = 0; t < T; t++) {
        int32_t x[B] = {tok[t], tok[T + t]};
        ck_assert_msg(hy_model_step(m, sb, x, lg) == 0, "%s: %s", s->label, hy_last_error());
        for (int r = 0; r < B; r++) memcpy(b + ((size_t)r * T + t) * V, lg + r * V, sizeof(float) * V);
    }
    ck_assert_int_eq(hy_model_state_position(sa), T);
    ck_assert_int_eq(hy_model_state_position(sb), T);
    float scale = max_abs(b, (size_t)B * T * V);
    double worst = 0;
    for (size_t i = 0; i < (size_t)B * T * V; i++) worst = fmax(worst, fabs(a[i] - b[i]) / scale);
    ck_assert_msg(worst < 1e-4, "%s: prefill+step vs step only: max diff %g of the logit scale", s->label, worst);
    hy_model_state_free(m, sa), hy_model_state_free(m, sb);
    hy_free(tok), hy_free(part), hy_free(a), hy_free(b), hy_free(tmp);
    hy_model_free(m);
}

START_TEST(prefill_then_step_equals_step_only) {
    stack *s = hy_calloc(sizeof(stack) * 64);
    int n = all_stacks(s, 64);
    for (int i = 0; i < n; i++) check_prefill(&s[i], 37, 70, 9);
    /* one long prefill crossing the 2048-token chunking, on the all-blocks stack */
    check_prefill(&s[n - 2], tu_quick() ? 300 : HY_PREFILL_CHUNK + 41, 5, 3);
    hy_free(s);
}
END_TEST

/* ---- state files ---- */

static void tmp_path(char *buf, size_t n, const char *tag) {
    snprintf(buf, n, "/tmp/hybrid-test-state-%s-%d.safetensors", tag, (int)getpid());
}

/* Whether every sub-block with a state can be saved (the registry ops are optional). */
static const char *unsaveable_block(hy_model *m, hy_model_state *st) {
    for (int s = 0; s < 2 * m->cfg.n_layers; s++) {
        hy_layer *L = hy_model_sub_block(m, s);
        if (L->ops && st->block_state[s] && !L->ops->state_tensors) return L->ops->name;
    }
    return NULL;
}

/* Returns true when the state round-tripped, false when it was (rightly) refused. */
static bool check_state_file(const stack *s) {
    enum { P = 45, K = 12 };
    hy_model *m = build(s, 21);
    int32_t tok[P + K];
    tokens(tok, P + K, 4);
    char path[256];
    tmp_path(path, sizeof path, "rt");
    hy_model_state *a, *b;
    ck_assert_int_eq(hy_model_state_new(m, 1, &a), 0);
    ck_assert_msg(hy_model_prefill(m, a, tok, P, NULL, false) == 0, "%s: %s", s->label, hy_last_error());
    const char *bad = unsaveable_block(m, a);
    if (bad) {   /* the documented refusal: a clear error naming the block, no file */
        unlink(path);
        ck_assert_int_lt(hy_model_state_save(m, a, path), 0);
        ck_assert_msg(strstr(hy_last_error(), bad) && strstr(hy_last_error(), "cannot be saved"), "%s: %s", s->label,
                      hy_last_error());
        ck_assert_int_ne(access(path, F_OK), 0);
        hy_model_state_free(m, a);
        hy_model_free(m);
        return false;
    }
    ck_assert_msg(hy_model_state_save(m, a, path) == 0, "%s: %s", s->label, hy_last_error());
    ck_assert_msg(hy_model_state_load(m, path, &b) == 0, "%s: %s", s->label, hy_last_error());
    ck_assert_int_eq(hy_model_state_position(b), P);
    ck_assert_msg(memcmp(a->logits, b->logits, sizeof(float) * V) == 0, "%s: saved logits differ", s->label);
    float la[V], lb[V];
    for (int k = 0; k < K; k++) {
        ck_assert_int_eq(hy_model_step(m, a, &tok[P + k], la), 0);
        ck_assert_msg(hy_model_step(m, b, &tok[P + k], lb) == 0, "%s: %s", s->label, hy_last_error());
        ck_assert_msg(memcmp(la, lb, sizeof la) == 0, "%s: logits after reload differ at step %d", s->label, k);
    }
    /* save the continued state again, and reload into a continuation that generates the same */
    ck_assert_int_eq(hy_model_state_save(m, b, path), 0);
    hy_model_state *c;
    ck_assert_int_eq(hy_model_state_load(m, path, &c), 0);
    hy_sample_opts so = {.temperature = 0.9f, .top_k = 0, .top_p = 1, .seed = 3};
    int32_t ga[8], gc[8];
    ck_assert_int_eq(hy_generate(m, b, NULL, 0, 8, &so, NULL, NULL, ga), 8);
    ck_assert_int_eq(hy_generate(m, c, NULL, 0, 8, &so, NULL, NULL, gc), 8);
    ck_assert_msg(memcmp(ga, gc, sizeof ga) == 0, "%s: generation from a reloaded state differs", s->label);
    hy_model_state_free(m, a), hy_model_state_free(m, b), hy_model_state_free(m, c);
    unlink(path);
    hy_model_free(m);
    return true;
}

/* Every block that has the state ops must have been round-tripped by at least one stack (its
 * "X+swiglu" / "attention+X" pair, whose other block can be saved), not only refused. */
START_TEST(state_save_load_continue_identical) {
    stack *s = hy_calloc(sizeof(stack) * 64);
    int n = all_stacks(s, 64);
    bool covered[64] = {false};
    for (int i = 0; i < n; i++) {
        if (!check_state_file(&s[i])) continue;
        for (int k = 0; k < hy_block_count(); k++)
            for (int j = 0; j < s[i].n; j++) covered[k] |= s[i].mixer[j] == hy_block_at(k) || s[i].ffn[j] == hy_block_at(k);
    }
    for (int k = 0; k < hy_block_count(); k++)
        if (hy_block_at(k)->state_tensors)
            ck_assert_msg(covered[k], "block '%s' has the state ops but no stack round-tripped its state",
                          hy_block_at(k)->name);
    hy_free(s);
}
END_TEST

/* A fresh (empty) state round-trips; a state is refused by other weights, another config, a
 * model file, and a file whose tensors were edited. */
START_TEST(state_file_refusals) {
    stack s = {.label = "attention+swiglu"};
    stack_add(&s, hy_block_find("attention"), hy_block_find("swiglu"));
    stack_add(&s, hy_block_find("attention"), NULL);
    hy_model *m = build(&s, 1), *other = build(&s, 2);
    char path[256], ck[256];
    tmp_path(path, sizeof path, "ref");
    tmp_path(ck, sizeof ck, "ckpt");
    hy_model_state *a, *b;
    ck_assert_int_eq(hy_model_state_new(m, 1, &a), 0);
    ck_assert_int_eq(hy_model_state_save(m, a, path), 0);   /* empty KV caches: (1, 0, 64) tensors */
    ck_assert_msg(hy_model_state_load(m, path, &b) == 0, "%s", hy_last_error());
    ck_assert_int_eq(hy_model_state_position(b), 0);
    hy_sample_opts g = {.temperature = 0, .top_k = 0, .top_p = 1};
    ck_assert_int_lt(hy_generate(m, b, NULL, 0, 3, &g, NULL, NULL, NULL), 0);   /* nothing to continue from */
    ck_assert_ptr_nonnull(strstr(hy_last_error(), "nothing to continue"));
    hy_model_state_free(m, b);
    int32_t tok[20];
    tokens(tok, 20, 1);
    ck_assert_int_eq(hy_model_prefill(m, a, tok, 20, NULL, false), 0);
    ck_assert_int_eq(hy_model_state_save(m, a, path), 0);
    ck_assert_int_lt(hy_model_state_load(other, path, &b), 0);
    ck_assert_msg(strstr(hy_last_error(), "different weights"), "%s", hy_last_error());
    stack s3 = s;
    s3.n = 1;
    hy_model *small = build(&s3, 1);
    ck_assert_int_lt(hy_model_state_load(small, path, &b), 0);
    ck_assert_msg(strstr(hy_last_error(), "different model"), "%s", hy_last_error());
    ck_assert_int_eq(hy_checkpoint_save(m, ck, 0), 0);
    ck_assert_int_lt(hy_model_state_load(m, ck, &b), 0);
    ck_assert_msg(strstr(hy_last_error(), "not a state file"), "%s", hy_last_error());
    /* a k cache whose length disagrees with v */
    hy_st_file f;
    ck_assert_int_eq(hy_st_open(path, &f), 0);
    hy_st_entry e[8];
    int n = 0;
    const char *keys[8], *vals[8];
    for (int i = 0; i < f.n_meta; i++) keys[i] = f.meta_keys[i], vals[i] = f.meta_values[i];
    float *bufs[8];
    for (int i = 0; i < f.n_tensors; i++) {
        const hy_st_tensor *t = &f.tensors[i];
        bufs[n] = hy_malloc(t->numel * 4);
        memcpy(bufs[n], t->data, t->numel * 4);
        e[n] = (hy_st_entry){.name = t->name, .dtype = HY_DT_F32, .ndim = t->ndim, .data = bufs[n]};
        for (int d = 0; d < t->ndim; d++) e[n].shape[d] = t->shape[d];
        if (!strcmp(t->name, "layers.1.mixer.k")) e[n].shape[1] -= 1;
        n++;
    }
    char edited[256];
    tmp_path(edited, sizeof edited, "edit");
    ck_assert_int_eq(hy_st_write(edited, f.n_meta, keys, vals, n, e), 0);
    hy_st_close(&f);
    ck_assert_int_lt(hy_model_state_load(m, edited, &b), 0);
    ck_assert_msg(strstr(hy_last_error(), "layer 1 mixer") && strstr(hy_last_error(), "shape"), "%s", hy_last_error());
    for (int i = 0; i < n; i++) hy_free(bufs[i]);
    unlink(path), unlink(ck), unlink(edited);
    hy_model_state_free(m, a);
    hy_model_free(m), hy_model_free(other), hy_model_free(small);
}
END_TEST

/* Copies state file src to dst with __metadata__ `key` set to `value` (key NULL: unchanged),
 * every tensor repeated `copies` times along its first (batch) axis, and tensor `drop` (NULL:
 * none) left out. */
static void edit_state(const char *src, const char *dst, const char *key, const char *value, int copies, const char *drop) {
    hy_st_file f;
    ck_assert_msg(hy_st_open(src, &f) == 0, "%s", hy_last_error());
    ck_assert_int_le(f.n_tensors, 64);
    ck_assert_int_le(f.n_meta, 16);
    hy_st_entry e[64];
    float *bufs[64];
    const char *keys[16], *vals[16];
    int n = 0;
    for (int i = 0; i < f.n_meta; i++)
        keys[i] = f.meta_keys[i], vals[i] = key && !strcmp(key, f.meta_keys[i]) ? value : f.meta_values[i];
    for (int i = 0; i < f.n_tensors; i++) {
        const hy_st_tensor *t = &f.tensors[i];
        if (drop && !strcmp(t->name, drop)) continue;
        size_t bytes = t->numel * sizeof(float);
        bufs[n] = hy_malloc(bytes * (size_t)copies + 4);
        for (int c = 0; c < copies; c++)
            for (int64_t b = 0; b < t->shape[0]; b++) {   /* the batch rows of copy c follow those of copy c - 1 */
                size_t row = bytes / (size_t)t->shape[0];
                memcpy((char *)bufs[n] + ((size_t)c * (size_t)t->shape[0] + (size_t)b) * row, (const char *)t->data + (size_t)b * row, row);
            }
        e[n] = (hy_st_entry){.name = t->name, .dtype = t->dtype, .ndim = t->ndim, .data = bufs[n]};
        for (int d = 0; d < t->ndim; d++) e[n].shape[d] = t->shape[d];
        e[n].shape[0] *= copies;
        n++;
    }
    ck_assert_msg(hy_st_write(dst, f.n_meta, keys, vals, n, e) == 0, "%s", hy_last_error());
    for (int i = 0; i < n; i++) hy_free(bufs[i]);
    hy_st_close(&f);
}

/* Loading `path` into m fails with `needle` in the message, allocating at most 1 MB on the way. */
static void refused_small(hy_model *m, const char *path, const char *needle) {
    hy_model_state *st = NULL;
    size_t before = hy_mem_current();
    hy_mem_reset_peak();
    ck_assert_int_lt(hy_model_state_load(m, path, &st), 0);
    ck_assert_ptr_null(st);
    ck_assert_msg(strstr(hy_last_error(), needle), "expected '%s' in: %s", needle, hy_last_error());
    ck_assert_msg(hy_mem_peak() - before < (1u << 20), "refusing %s allocated %zu bytes first", path,
                  hy_mem_peak() - before);
    ck_assert_int_eq(hy_mem_current(), before);
}

/* Every size in a state file is checked against the file and the model before the state is
 * allocated (issue 19: batch = 1048576 in an 11 KB file allocated 8.5 GB), and the position
 * against what the state holds (a KV cache of exactly `position` tokens; at most HY_MAX_POSITION). */
START_TEST(state_file_sizes_checked_before_allocation) {
    char path[256], edited[256];
    tmp_path(path, sizeof path, "size");
    tmp_path(edited, sizeof edited, "size-edit");
    int32_t tok[40];
    tokens(tok, 40, 5);
    /* a recurrent stack: fixed-size state tensors */
    stack r = {.label = "rwkv7+cmix"};
    stack_add(&r, hy_block_find("rwkv7"), hy_block_find("cmix"));
    hy_model *m = build(&r, 3);
    hy_model_state *a, *b;
    ck_assert_int_eq(hy_model_state_new(m, 1, &a), 0);
    ck_assert_int_eq(hy_model_prefill(m, a, tok, 20, NULL, false), 0);
    ck_assert_int_eq(hy_model_state_save(m, a, path), 0);
    edit_state(path, edited, "batch", "1048576", 1, NULL);
    refused_small(m, edited, "has shape (1, 64), but __metadata__ batch is 1048576");
    edit_state(path, edited, "batch", "1048577", 1, NULL);
    refused_small(m, edited, "batch '1048577' is not an integer in [0, 1048576]");
    edit_state(path, edited, "position", "1099511627776", 1, NULL);
    refused_small(m, edited, "position '1099511627776' is not an integer in [0, 1073741824]");
    edit_state(path, edited, NULL, NULL, 1, "logits");
    refused_small(m, edited, "tensor 'logits' is missing (the state has consumed 20 tokens)");
    /* two sequences, every tensor doubled along the batch: consistent, loads */
    edit_state(path, edited, "batch", "2", 2, NULL);
    ck_assert_msg(hy_model_state_load(m, edited, &b) == 0, "%s", hy_last_error());
    ck_assert_int_eq(b->B, 2);
    hy_model_state_free(m, b);
    /* the doubled tensors with batch 1 */
    edit_state(path, edited, NULL, NULL, 2, NULL);
    refused_small(m, edited, "has shape (2, 64), but __metadata__ batch is 1");
    /* a recurrent state at the largest position loads, and refuses to take one token more */
    char most[32];
    snprintf(most, sizeof most, "%d", HY_MAX_POSITION);
    edit_state(path, edited, "position", most, 1, NULL);
    ck_assert_msg(hy_model_state_load(m, edited, &b) == 0, "%s", hy_last_error());
    ck_assert_int_eq(hy_model_state_position(b), HY_MAX_POSITION);
    ck_assert_int_lt(hy_model_step(m, b, tok, NULL), 0);
    ck_assert_msg(strstr(hy_last_error(), "the most a state can hold"), "%s", hy_last_error());
    ck_assert_int_lt(hy_model_prefill(m, b, tok, 3, NULL, false), 0);
    ck_assert_msg(strstr(hy_last_error(), "past 1073741824 tokens"), "%s", hy_last_error());
    hy_sample_opts g = {.temperature = 0, .top_k = 0, .top_p = 1};
    ck_assert_int_lt(hy_generate(m, b, NULL, 0, 3, &g, NULL, NULL, NULL), 0);
    hy_model_state_free(m, b);
    hy_model_state_free(m, a);
    hy_model_free(m);
    /* attention: the KV cache must hold exactly `position` tokens */
    stack s = {.label = "attention+swiglu"};
    stack_add(&s, hy_block_find("attention"), hy_block_find("swiglu"));
    m = build(&s, 3);
    ck_assert_int_eq(hy_model_state_new(m, 1, &a), 0);
    ck_assert_int_eq(hy_model_prefill(m, a, tok, 20, NULL, false), 0);
    ck_assert_int_eq(hy_model_state_save(m, a, path), 0);
    edit_state(path, edited, "position", "25", 1, NULL);
    refused_small(m, edited, "layer 0 mixer 'attention': its state tensors hold 2560 values (shapes: k (1, 20, 64), "
                             "v (1, 20, 64)), but after 25 tokens the block's state holds 3200 values per sequence (batch 1)");
    edit_state(path, edited, "position", "1073741824", 1, NULL);
    refused_small(m, edited, "after 1073741824 tokens the block's state holds");
    hy_model_state_free(m, a);
    /* a fresh state of two sequences is saved with zero logits, so its batch is backed by the file */
    ck_assert_int_eq(hy_model_state_new(m, 2, &a), 0);
    ck_assert_int_eq(hy_model_state_save(m, a, path), 0);
    ck_assert_msg(hy_model_state_load(m, path, &b) == 0, "%s", hy_last_error());
    ck_assert_int_eq(b->B, 2);
    ck_assert_int_eq(hy_model_state_position(b), 0);
    ck_assert(!b->have_logits);
    hy_model_state_free(m, b);
    /* without them nothing in the file vouches for the batch */
    edit_state(path, edited, NULL, NULL, 1, "logits");
    refused_small(m, edited, "batch is 2 but the file holds nothing per sequence");
    edit_state(path, edited, "batch", "1048576", 1, "logits");
    refused_small(m, edited, "has shape (2, 0, 64), but __metadata__ batch is 1048576");
    hy_model_state_free(m, a);
    hy_model_free(m);
    unlink(path), unlink(edited);
}
END_TEST

/* attention's saved k and v are the cached keys and values in the projection layout: for layer 0
 * (no RoPE) k_t = W_k rmsnorm(E[tok_t]), v_t = W_v rmsnorm(E[tok_t]), exactly. */
START_TEST(attention_state_tensors_are_keys_and_values) {
    stack s = {.label = "attention+swiglu"};
    stack_add(&s, hy_block_find("attention"), hy_block_find("swiglu"));
    hy_model *m = build(&s, 4);
    enum { T = 70 };   /* more than one 64-key block of the transposed cache */
    int32_t tok[T];
    tokens(tok, T, 6);
    hy_model_state *st;
    ck_assert_int_eq(hy_model_state_new(m, 1, &st), 0);
    ck_assert_int_eq(hy_model_prefill(m, st, tok, T, NULL, false), 0);
    hy_layer *L = hy_model_sub_block(m, 0);
    hy_state_tensor t[2];
    ck_assert_int_eq(L->ops->state_tensors(L, st->block_state[0], t), 2);
    ck_assert_str_eq(t[0].name, "k");
    ck_assert_str_eq(t[1].name, "v");
    int kw = t[0].shape[2];
    ck_assert(t[0].ndim == 3 && t[0].shape[0] == 1 && t[0].shape[1] == T && kw == D);
    float *got = hy_malloc(sizeof(float) * T * kw), *x = hy_malloc(sizeof(float) * T * D),
          *xn = hy_malloc(sizeof(float) * T * D), *want = hy_malloc(sizeof(float) * T * kw), rstd[T];
    hy_embedding_forward(x, m->embedding->data, tok, T, D);
    hy_rmsnorm_forward(xn, rstd, x, m->norm[0]->data, T, D);
    for (int w = 0; w < 2; w++) {
        ck_assert_int_eq(L->ops->state_export(L, st->block_state[0], w, got), 0);
        hy_linear_forward(want, xn, L->p[1 + w], NULL, T, D, kw);   /* k_proj, v_proj */
        double e = tu_rel_err(got, want, (size_t)T * kw, 1e-3);
        ck_assert_msg(e < 1e-5, "state tensor %s differs from the projection: %g", t[w].name, e);
    }
    hy_free(got), hy_free(x), hy_free(xn), hy_free(want);
    hy_model_state_free(m, st);
    hy_model_free(m);
}
END_TEST

/* The optional ops: a block with a state but no state_* ops is refused by name (and no file is
 * written); a stateless block (NULL state) needs none of them. */
extern const hy_block_ops hy_block_attention, hy_block_swiglu;
START_TEST(optional_state_ops) {
    hy_block_ops nosave = hy_block_attention, plain = hy_block_swiglu;
    nosave.name = "attention_nosave", plain.name = "swiglu_plain";
    nosave.state_tensors = NULL, nosave.state_export = NULL, nosave.state_import = NULL;
    plain.state_tensors = NULL, plain.state_export = NULL, plain.state_import = NULL;
    stack s = {.label = "fake"};
    stack_add(&s, hy_block_find("attention"), &plain);
    hy_model *ok = build(&s, 1);
    stack_add(&s, &nosave, &plain);
    hy_model *bad = build(&s, 1);
    char path[256];
    tmp_path(path, sizeof path, "opt");
    unlink(path);
    int32_t tok[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    hy_model_state *a, *b;
    ck_assert_int_eq(hy_model_state_new(ok, 1, &a), 0);
    ck_assert_int_eq(hy_model_prefill(ok, a, tok, 9, NULL, false), 0);
    ck_assert_msg(hy_model_state_save(ok, a, path) == 0, "%s", hy_last_error());
    ck_assert_msg(hy_model_state_load(ok, path, &b) == 0, "%s", hy_last_error());
    hy_model_state_free(ok, a), hy_model_state_free(ok, b);
    unlink(path);
    ck_assert_int_eq(hy_model_state_new(bad, 1, &a), 0);
    ck_assert_int_eq(hy_model_prefill(bad, a, tok, 9, NULL, false), 0);
    ck_assert_int_lt(hy_model_state_save(bad, a, path), 0);
    ck_assert_msg(strstr(hy_last_error(), "layer 1 mixer 'attention_nosave'") && strstr(hy_last_error(), "cannot be saved"),
                  "%s", hy_last_error());
    ck_assert_int_ne(access(path, F_OK), 0);
    hy_model_state_free(bad, a);
    hy_model_free(ok), hy_model_free(bad);
}
END_TEST

/* Every block with the state ops (a layer alone, B = 2, after 11 tokens): export then import into a
 * fresh state gives a state that exports the same and steps to the same output; import refuses a
 * wrong last dimension, a wrong batch, a missing tensor, an unknown name and an extra tensor, each
 * with an error naming a tensor. */
static void check_import_checks(const hy_block_ops *ops) {
    enum { B = 2, T = 11, NT = 8 };
    hy_opts o;
    hy_layer L;
    ck_assert_int_eq(hy_block_opts_from_pairs(ops, D, NULL, 0, &o), 0);
    ck_assert_int_eq(hy_layer_standalone(&L, ops, &o, D, 3), 0);
    float *x = hy_malloc(sizeof(float) * B * T * D);
    tu_fill_normal(x, (size_t)B * T * D, 1.0f, 17);
    void *st, *st2;
    ck_assert_int_eq(ops->state_new(&L, B, &st), 0);
    if (!st) {   /* stateless */
        hy_free(x);
        hy_layer_standalone_free(&L);
        return;
    }
    for (int t = 0; t < T; t++) {
        float xt[B * D], yt[B * D];
        for (int b = 0; b < B; b++) memcpy(xt + b * D, x + ((size_t)b * T + t) * D, sizeof(float) * D);
        ck_assert_int_eq(ops->step(&L, st, xt, yt, B), 0);
    }
    int n = ops->state_tensors(&L, st, NULL);
    ck_assert(n >= 1 && n < NT - 1);
    hy_state_tensor t[NT], t2[NT];
    float *data[NT], *back[NT];
    ops->state_tensors(&L, st, t);
    size_t total = 0;   /* state_bytes is exactly what the tensors hold (the state loader relies on it) */
    for (int i = 0; i < n; i++) total += hy_state_tensor_numel(&t[i]) * sizeof(float);
    ck_assert_msg(total == B * ops->state_bytes(&o, D, T), "%s: state tensors hold %zu bytes, state_bytes says %zu x %d",
                  ops->name, total, ops->state_bytes(&o, D, T), B);
    for (int i = 0; i < n; i++) {
        size_t k = hy_state_tensor_numel(&t[i]);
        ck_assert_int_eq(t[i].shape[0], B);
        data[i] = hy_malloc(sizeof(float) * k + 4), back[i] = hy_malloc(sizeof(float) * k + 4);
        ck_assert_int_eq(ops->state_export(&L, st, i, data[i]), 0);
        ck_assert_msg(max_abs(data[i], k) > 0, "%s: state tensor '%s' is all zeros after %d tokens", ops->name,
                      t[i].name, T);
    }
    /* the round trip: same tensors, same next output */
    ck_assert_int_eq(ops->state_new(&L, B, &st2), 0);
    ck_assert_msg(ops->state_import(&L, st2, n, t, (const float *const *)data) == 0, "%s: %s", ops->name, hy_last_error());
    ck_assert_int_eq(ops->state_tensors(&L, st2, t2), n);
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(memcmp(&t[i], &t2[i], sizeof t[i]), 0);
        ck_assert_int_eq(ops->state_export(&L, st2, i, back[i]), 0);
        ck_assert_msg(memcmp(data[i], back[i], sizeof(float) * hy_state_tensor_numel(&t[i])) == 0,
                      "%s: state tensor '%s' changed by export/import", ops->name, t[i].name);
    }
    float ya[B * D], yb[B * D];
    ck_assert_int_eq(ops->step(&L, st, x, ya, B), 0);
    ck_assert_int_eq(ops->step(&L, st2, x, yb, B), 0);
    ck_assert_msg(memcmp(ya, yb, sizeof ya) == 0, "%s: step after import differs", ops->name);
    ops->state_free(&L, st2);
    /* refusals, each into a fresh state */
    for (int bad = 0; bad < 5; bad++)
        for (int i = 0; i < n; i++) {
            hy_state_tensor tb[NT];
            const float *db[NT];
            int nb = n;
            memcpy(tb, t, sizeof tb);
            for (int j = 0; j < n; j++) db[j] = data[j];
            const char *want = t[i].name;
            if (bad == 0) tb[i].shape[tb[i].ndim - 1] += 1;
            if (bad == 1) tb[i].shape[0] = B - 1;
            if (bad == 2) tb[i] = tb[n - 1], db[i] = db[n - 1], nb = n - 1;   /* tensor i missing */
            if (bad == 3) snprintf(tb[i].name, HY_STATE_NAME, "bogus"), want = NULL;
            if (bad == 4) tb[n] = (hy_state_tensor){"extra", 1, {1}}, db[n] = data[0], nb = n + 1, want = NULL;
            ck_assert_int_eq(ops->state_new(&L, B, &st2), 0);
            int rc = ops->state_import(&L, st2, nb, tb, db);
            ops->state_free(&L, st2);
            const char *e = hy_last_error();
            ck_assert_msg(rc < 0, "%s: import accepted bad case %d of tensor '%s'", ops->name, bad, t[i].name);
            if (want) ck_assert_msg(strstr(e, want), "%s: case %d: error does not name '%s': %s", ops->name, bad, want, e);
            else if (bad == 3)
                ck_assert_msg(strstr(e, "bogus") || strstr(e, t[i].name), "%s: error names no tensor: %s", ops->name, e);
            else   /* an extra tensor: named, or the count (attention's reference says "has 3 tensors") */
                ck_assert_msg(strstr(e, "extra") || strstr(e, "tensors"), "%s: error on an extra tensor: %s", ops->name, e);
        }
    for (int i = 0; i < n; i++) hy_free(data[i]), hy_free(back[i]);
    ops->state_free(&L, st);
    hy_free(x);
    hy_layer_standalone_free(&L);
}

START_TEST(state_import_checks_every_tensor) {
    for (int k = 0; k < hy_block_count(); k++)
        if (hy_block_at(k)->state_tensors) check_import_checks(hy_block_at(k));
}
END_TEST

/* A block without prefill: the model steps the whole stack token by token; still equal. */
START_TEST(prefill_fallback_without_block_prefill) {
    hy_block_ops stepped = hy_block_attention;
    stepped.name = "attention_stepped", stepped.prefill = NULL;
    stack s = {.label = "attention_stepped+swiglu"};
    stack_add(&s, &stepped, hy_block_find("swiglu"));
    stack_add(&s, hy_block_find("attention"), hy_block_find("swiglu"));
    check_prefill(&s, 21, 30, 4);
    check_greedy(&s);
}
END_TEST

/* ---- sampling ---- */

static void fixed_logits(float *z, uint64_t seed) { tu_fill_normal(z, V, 1.5f, seed); }

START_TEST(sampling_is_seeded_and_matches_softmax) {
    float z[V];
    fixed_logits(z, 8);
    hy_sample_pair work[V];
    hy_sample_opts o = {.temperature = 0.7f, .top_k = 0, .top_p = 1, .seed = 0};
    enum { N = 40000 };
    int count[V] = {0};
    hy_rng r1, r2;
    hy_rng_seed(&r1, 42), hy_rng_seed(&r2, 42);
    for (int i = 0; i < N; i++) {
        int32_t a = hy_sample(z, V, &o, &r1, work), b = hy_sample(z, V, &o, &r2, work);
        ck_assert_int_eq(a, b);
        ck_assert(a >= 0 && a < V);
        count[a]++;
    }
    double mx = -INFINITY, sum = 0, p[V];
    for (int v = 0; v < V; v++) mx = fmax(mx, z[v] / 0.7);
    for (int v = 0; v < V; v++) sum += p[v] = exp(z[v] / 0.7 - mx);
    for (int v = 0; v < V; v++) {
        double want = p[v] / sum, got = (double)count[v] / N, sd = sqrt(want * (1 - want) / N);
        ck_assert_msg(fabs(got - want) <= 5 * sd + 1e-4, "token %d: frequency %g, softmax %g", v, got, want);
    }
    /* generation: same seed same text, another seed other text; greedy ignores the seed */
    stack s = {.label = "attention+swiglu"};
    stack_add(&s, hy_block_find("attention"), hy_block_find("swiglu"));
    hy_model *m = build(&s, 3);
    for (size_t i = 0; i < m->lm_head->numel; i++) m->lm_head->data[i] /= 25.0f;   /* a spread distribution */
    int32_t prompt[5] = {1, 2, 3, 4, 5}, g[3][40];
    hy_sample_opts so[3] = {{1.0f, 0, 1, 7}, {1.0f, 0, 1, 7}, {1.0f, 0, 1, 8}};
    for (int k = 0; k < 3; k++) {
        hy_model_state *st;
        ck_assert_int_eq(hy_model_state_new(m, 1, &st), 0);
        ck_assert_int_eq(hy_generate(m, st, prompt, 5, 40, &so[k], NULL, NULL, g[k]), 40);
        hy_model_state_free(m, st);
    }
    ck_assert(memcmp(g[0], g[1], sizeof g[0]) == 0);
    ck_assert(memcmp(g[0], g[2], sizeof g[0]) != 0);
    int32_t ga[10], gb[10];
    hy_sample_opts gr[2] = {{0, 0, 1, 1}, {0, 5, 0.5f, 99}};
    for (int k = 0; k < 2; k++) {
        hy_model_state *st;
        ck_assert_int_eq(hy_model_state_new(m, 1, &st), 0);
        ck_assert_int_eq(hy_generate(m, st, prompt, 5, 10, &gr[k], NULL, NULL, k ? gb : ga), 10);
        hy_model_state_free(m, st);
    }
    ck_assert(memcmp(ga, gb, sizeof ga) == 0);
    hy_model_free(m);
}
END_TEST

/* Sorted order of token ids by logit, descending. */
static void order_desc(const float *z, int32_t *ids) {
    for (int v = 0; v < V; v++) ids[v] = v;
    for (int i = 0; i < V; i++)
        for (int j = i + 1; j < V; j++)
            if (z[ids[j]] > z[ids[i]]) {
                int32_t t = ids[i];
                ids[i] = ids[j], ids[j] = t;
            }
}

/* Draws many tokens and checks each is in the expected set, and every member of the set shows up. */
static void check_support(const float *z, const hy_sample_opts *o, const int32_t *want, int n_want) {
    hy_sample_pair work[V];
    int32_t sup[V];
    int n = hy_sample_support(z, V, o, work, sup);
    ck_assert_int_eq(n, n_want);
    for (int i = 0; i < n; i++) ck_assert_int_eq(sup[i], want[i]);
    hy_rng r;
    hy_rng_seed(&r, 5);
    int seen[V] = {0};
    for (int i = 0; i < 20000; i++) {
        int32_t t = hy_sample(z, V, o, &r, work);
        bool in = false;
        for (int k = 0; k < n_want; k++) in |= want[k] == t;
        ck_assert_msg(in, "token %d drawn outside the allowed set (top_k %d, top_p %g)", t, o->top_k, (double)o->top_p);
        seen[t]++;
    }
    for (int k = 0; k < n_want; k++)
        ck_assert_msg(seen[want[k]] > 0, "token %d of the allowed set never drawn", want[k]);
}

START_TEST(top_k_and_top_p_restrict_the_support) {
    float z[V];
    fixed_logits(z, 12);
    int32_t ids[V];
    order_desc(z, ids);
    hy_sample_opts k5 = {.temperature = 1, .top_k = 5, .top_p = 1, .seed = 0};
    check_support(z, &k5, ids, 5);
    hy_sample_opts k1 = {.temperature = 1, .top_k = 1, .top_p = 1};
    check_support(z, &k1, ids, 1);
    /* the nucleus at p = 0.6, computed here in double */
    double mx = z[ids[0]], p[V], sum = 0;
    for (int v = 0; v < V; v++) sum += p[v] = exp(z[ids[v]] - mx);
    int nucleus = 0;
    for (double acc = 0; acc < 0.6 * sum;) acc += p[nucleus++];
    ck_assert_int_gt(nucleus, 1);
    ck_assert_int_lt(nucleus, V);
    hy_sample_opts p6 = {.temperature = 1, .top_k = 0, .top_p = 0.6f};
    check_support(z, &p6, ids, nucleus);
    /* top-k first, then top-p within the k kept (renormalised) */
    hy_sample_opts both = {.temperature = 1, .top_k = 3, .top_p = 0.99f};
    double s3 = p[0] + p[1] + p[2];
    int nb = p[0] + p[1] >= 0.99f * s3 ? 2 : 3;
    check_support(z, &both, ids, nb);
    hy_sample_opts tiny_p = {.temperature = 1, .top_k = 0, .top_p = 1e-6f};
    check_support(z, &tiny_p, ids, 1);
    /* greedy: the argmax, whatever top_k/top_p say */
    hy_sample_opts greedy = {.temperature = 0, .top_k = 7, .top_p = 0.3f};
    check_support(z, &greedy, ids, 1);
    /* bad options are refused with the option's name */
    hy_sample_opts bad[3] = {{-1, 0, 1, 0}, {1, -2, 1, 0}, {1, 0, 0, 0}};
    const char *names[3] = {"temperature", "top_k", "top_p"};
    for (int k = 0; k < 3; k++) {
        ck_assert_int_lt(hy_sample_opts_check(&bad[k]), 0);
        ck_assert_ptr_nonnull(strstr(hy_last_error(), names[k]));
    }
}
END_TEST

/* The models here are tiny: with OpenMP threads the fork/join of every small region dominates
 * (and is erratic on a loaded machine), so the streaming cases run on one thread; the kernels'
 * threaded paths are covered by their own suites. Checked fixture: runs in the test's process. */
static void one_thread(void) { hy_set_threads(1); }

static Suite *generate_suite(void) {
    Suite *s = suite_create("generate");
    TCase *stream = tcase_create("streaming");
    tcase_set_timeout(stream, 120);
    tcase_add_checked_fixture(stream, one_thread, NULL);
    tcase_add_test(stream, greedy_equals_parallel_argmax_every_block_and_stack);
    tcase_add_test(stream, greedy_equals_parallel_argmax_shipped_configs);
    tcase_add_test(stream, prefill_then_step_equals_step_only);
    tcase_add_test(stream, state_save_load_continue_identical);
    tcase_add_test(stream, state_file_refusals);
    tcase_add_test(stream, state_file_sizes_checked_before_allocation);
    tcase_add_test(stream, optional_state_ops);
    tcase_add_test(stream, state_import_checks_every_tensor);
    tcase_add_test(stream, attention_state_tensors_are_keys_and_values);
    tcase_add_test(stream, prefill_fallback_without_block_prefill);
    suite_add_tcase(s, stream);
    TCase *sample = tcase_create("sampling");
    tcase_set_timeout(sample, 60);
    tcase_add_checked_fixture(sample, one_thread, NULL);
    tcase_add_test(sample, sampling_is_seeded_and_matches_softmax);
    tcase_add_test(sample, top_k_and_top_p_restrict_the_support);
    suite_add_tcase(s, sample);
    return s;
}
HY_TEST_SUITE(generate_suite)

/* The YAML config loader: the three layer forms (and their equivalence), defaults, --set
 * overrides, the write -> reload round trip, located error messages for bad configs, and the
 * hy_model_config helpers (resolve, copy). Runs from the repository root. */
#include "core/error.h"
#include "core/strbuf.h"
#include "experiments/config.h"
#include "experiments/experiment.h"
#include "experiments/yaml_tree.h"
#include "models/checkpoint.h"
#include "tests/testutil.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GOOD "tests/configs/good/"
#define BAD "tests/configs/bad/"

static void load_ok(const char *path, const char *const *sets, int n, hy_run_config *c) {
    ck_assert_msg(hy_run_config_load(path, sets, n, c) == 0, "%s: %s", path, hy_last_error());
}

/* Asserts that two blocks are the same registered block with the same resolved options. */
static void assert_block_eq(const hy_block_cfg *a, const hy_block_cfg *b, const char *what, int i) {
    ck_assert_msg(a->ops == b->ops, "%s of layer %d: %s vs %s", what, i, a->ops ? a->ops->name : "none",
                  b->ops ? b->ops->name : "none");
    if (!a->ops) return;
    for (int k = 0; k < a->ops->n_opts; k++) {
        ck_assert_msg(a->opts.is_null[k] == b->opts.is_null[k] && a->opts.is_auto[k] == b->opts.is_auto[k] &&
                          (a->opts.is_null[k] || a->opts.v[k] == b->opts.v[k]),
                      "%s of layer %d option %s: %.17g vs %.17g", what, i, a->ops->opts[k].name, a->opts.v[k], b->opts.v[k]);
        ck_assert(!a->opts.is_auto[k]);   /* resolved */
    }
}

static void assert_model_eq(const hy_model_config *a, const hy_model_config *b) {
    ck_assert_int_eq(a->d_model, b->d_model);
    ck_assert_int_eq(a->n_layers, b->n_layers);
    ck_assert_int_eq(a->vocab_size, b->vocab_size);
    ck_assert_int_eq(a->tie_embeddings, b->tie_embeddings);
    ck_assert(a->router_aux_coef == b->router_aux_coef);
    for (int i = 0; i < a->n_layers; i++) {
        assert_block_eq(&a->layers[i].mixer, &b->layers[i].mixer, "mixer", i);
        assert_block_eq(&a->layers[i].ffn, &b->layers[i].ffn, "ffn", i);
    }
}

/* Every field of hy_run_config but `source`. */
static void assert_run_eq(const hy_run_config *a, const hy_run_config *b) {
    ck_assert_str_eq(a->name, b->name);
    ck_assert(a->seed == b->seed);
    ck_assert_int_eq(a->threads, b->threads);
    ck_assert_str_eq(a->out_dir, b->out_dir);
    assert_model_eq(&a->model, &b->model);
    ck_assert_int_eq(a->gemm, b->gemm);
    ck_assert_int_eq(a->precision, b->precision);
    ck_assert_str_eq(a->corpus, b->corpus);
    ck_assert_str_eq(a->train_path, b->train_path);
    ck_assert_str_eq(a->val_path, b->val_path);
    ck_assert_int_eq(a->data_format, b->data_format);
    ck_assert_str_eq(a->tokenizer, b->tokenizer);
    ck_assert_int_eq(a->tokenizer_vocab, b->tokenizer_vocab);
    ck_assert_str_eq(a->tokenizer_type, b->tokenizer_type);
    ck_assert_str_eq(a->optimizer, b->optimizer);
    const double da[] = {a->val_fraction, a->max_tokens, a->max_seconds, a->lr, a->min_lr, a->weight_decay, a->beta1,
                         a->beta2, a->eps, a->momentum, a->grad_clip, a->ssm_lr};
    const double db[] = {b->val_fraction, b->max_tokens, b->max_seconds, b->lr, b->min_lr, b->weight_decay, b->beta1,
                         b->beta2, b->eps, b->momentum, b->grad_clip, b->ssm_lr};
    for (size_t k = 0; k < sizeof da / sizeof *da; k++) ck_assert_msg(da[k] == db[k], "double field %zu: %.17g vs %.17g", k, da[k], db[k]);
    const long la[] = {a->seq_len, a->batch_size, a->steps, a->warmup_steps, a->eval_every, a->eval_batches, a->log_every,
                       a->checkpoint_every};
    const long lb[] = {b->seq_len, b->batch_size, b->steps, b->warmup_steps, b->eval_every, b->eval_batches, b->log_every,
                       b->checkpoint_every};
    for (size_t k = 0; k < sizeof la / sizeof *la; k++) ck_assert_msg(la[k] == lb[k], "integer field %zu: %ld vs %ld", k, la[k], lb[k]);
}

static double opt(const hy_block_cfg *b, const char *name) {
    int k = hy_opt_index(b->ops, name);
    ck_assert_msg(k >= 0, "%s has no option %s", b->ops->name, name);
    return b->opts.v[k];
}

/* ---- the three layer forms ---- */

START_TEST(three_forms_give_the_same_model) {
    hy_run_config a, b, c;
    load_ok(GOOD "explicit.yaml", NULL, 0, &a);
    load_ok(GOOD "names.yaml", NULL, 0, &b);
    load_ok(GOOD "placement.yaml", NULL, 0, &c);
    const hy_block_ops *att = hy_block_find("attention"), *swi = hy_block_find("swiglu");
    ck_assert_int_eq(a.model.n_layers, 4);
    for (int i = 0; i < 4; i++) {
        ck_assert_ptr_eq(a.model.layers[i].mixer.ops, att);
        ck_assert_ptr_eq(a.model.layers[i].ffn.ops, swi);
        ck_assert_int_eq((int)opt(&a.model.layers[i].mixer, "n_heads"), 4);
        ck_assert_int_eq((int)opt(&a.model.layers[i].ffn, "d_ff"), 64);
    }
    assert_run_eq(&a, &b);
    assert_run_eq(&a, &c);
    hy_run_config_free(&a), hy_run_config_free(&b), hy_run_config_free(&c);
}
END_TEST

START_TEST(alternating_ffn_in_three_forms) {
    hy_run_config a, b, c;
    load_ok(GOOD "alternate-list.yaml", NULL, 0, &a);
    load_ok(GOOD "alternate-every.yaml", NULL, 0, &b);
    load_ok(GOOD "alternate-at.yaml", NULL, 0, &c);
    for (int i = 0; i < 4; i++) {
        ck_assert_ptr_nonnull(a.model.layers[i].mixer.ops);
        if (i % 2 == 0) ck_assert_ptr_null(a.model.layers[i].ffn.ops);
        else ck_assert_int_eq((int)opt(&a.model.layers[i].ffn, "d_ff"), 96);
    }
    assert_model_eq(&a.model, &b.model);
    assert_model_eq(&a.model, &c.model);
    hy_run_config_free(&a), hy_run_config_free(&b), hy_run_config_free(&c);
}
END_TEST

START_TEST(per_layer_options_override_blocks) {
    hy_run_config c;
    const char *sets[] = {"model.layers[3].mixer.n_heads=8", "model.layers.1.ffn=none"};
    load_ok(GOOD "explicit.yaml", sets, 2, &c);
    ck_assert_int_eq((int)opt(&c.model.layers[0].mixer, "n_heads"), 4);
    ck_assert_int_eq((int)opt(&c.model.layers[3].mixer, "n_heads"), 8);
    ck_assert_ptr_null(c.model.layers[1].ffn.ops);
    hy_run_config_free(&c);
    /* an option for a layer whose block is written as a plain name is refused, naming the override */
    const char *bad[] = {"model.layers[0].mixer.n_heads=8"};
    ck_assert_int_eq(hy_run_config_load(GOOD "explicit.yaml", bad, 1, &c), HY_ERR_CONFIG);
    ck_assert_msg(strstr(hy_last_error(), "--set model.layers[0].mixer.n_heads=8: ") == hy_last_error(), "%s",
                  hy_last_error());
    /* a layer map {type, option} on layer 2 */
    const char *map[] = {"model.layers[1].mixer.n_heads=2"};
    load_ok(GOOD "explicit.yaml", map, 1, &c);
    ck_assert_int_eq((int)opt(&c.model.layers[1].mixer, "n_heads"), 2);
    ck_assert_int_eq((int)opt(&c.model.layers[0].mixer, "n_heads"), 4);
    hy_run_config_free(&c);
}
END_TEST

/* ---- defaults and every key ---- */

START_TEST(defaults) {
    hy_run_config c;
    load_ok(GOOD "minimal.yaml", NULL, 0, &c);
    ck_assert_str_eq(c.name, "minimal");
    ck_assert_str_eq(c.out_dir, "results/minimal");
    ck_assert_str_eq(c.source, GOOD "minimal.yaml");
    ck_assert(c.seed == 1234);
    ck_assert_int_eq(c.threads, 0);
    ck_assert_int_eq(c.model.d_model, 32);
    ck_assert_int_eq(c.model.vocab_size, 256);
    ck_assert(c.model.tie_embeddings);
    ck_assert(c.model.router_aux_coef == 0.001f);
    for (int i = 0; i < 2; i++) ck_assert_ptr_null(c.model.layers[i].ffn.ops);   /* ffn omitted: none */
    ck_assert_int_eq(c.gemm, HY_GEMM_AUTO);
    ck_assert_int_eq(c.precision, HY_PREC_F32);
    ck_assert_str_eq(c.corpus, "default");
    ck_assert(c.val_fraction == 0.1);
    ck_assert_int_eq(c.seq_len, 256);
    ck_assert_int_eq(c.batch_size, 16);
    ck_assert_int_eq(c.steps, 1000);
    ck_assert(c.max_tokens == 0 && c.max_seconds == 0);
    ck_assert_str_eq(c.optimizer, "adamw");
    ck_assert(c.lr == 3e-3 && c.min_lr == 3e-3 / 10);
    ck_assert_int_eq(c.warmup_steps, 100);
    ck_assert(c.weight_decay == 0.1 && c.beta1 == 0.9 && c.beta2 == 0.95 && c.eps == 1e-8 && c.momentum == 0.9);
    ck_assert(c.grad_clip == 1.0 && c.ssm_lr == 1e-3);
    ck_assert_int_eq(c.eval_every, 200);
    ck_assert_int_eq(c.eval_batches, 20);
    ck_assert_int_eq(c.log_every, 10);
    ck_assert_int_eq(c.checkpoint_every, 0);
    hy_run_config_free(&c);
    /* a token budget alone: no step limit; min_lr follows an overridden lr */
    const char *sets[] = {"train.tokens=2e6", "train.lr=0.01"};
    load_ok(GOOD "minimal.yaml", sets, 2, &c);
    ck_assert_int_eq(c.steps, 0);
    ck_assert(c.max_tokens == 2e6);
    ck_assert(c.min_lr == 0.001);
    hy_run_config_free(&c);
    /* min_lr_ratio: the floor follows the (overridden) lr; 1 holds the peak */
    const char *ratio_sets[] = {"train.lr=0.02", "train.min_lr_ratio=1"};
    load_ok(GOOD "minimal.yaml", ratio_sets, 2, &c);
    ck_assert(c.min_lr == 0.02);
    hy_run_config_free(&c);
}
END_TEST

START_TEST(every_key) {
    hy_run_config c;
    load_ok(GOOD "full.yaml", NULL, 0, &c);
    ck_assert_str_eq(c.name, "full-run");
    ck_assert(c.seed == 99);
    ck_assert_int_eq(c.threads, 2);
    ck_assert_str_eq(c.out_dir, "/tmp/hybrid-full");
    ck_assert_int_eq(c.model.d_model, 64);
    ck_assert_int_eq(c.model.vocab_size, 300);
    ck_assert(!c.model.tie_embeddings);
    ck_assert(c.model.router_aux_coef == 0.01f);
    ck_assert_int_eq((int)opt(&c.model.layers[1].mixer, "n_heads"), 8);
    ck_assert_int_eq((int)opt(&c.model.layers[1].mixer, "n_kv_heads"), 2);
    ck_assert(opt(&c.model.layers[1].mixer, "rope_theta") == 500000);
    ck_assert_int_eq((int)opt(&c.model.layers[0].ffn, "d_ff"), 160);
    ck_assert_int_eq(c.gemm, HY_GEMM_OPENBLAS);
    ck_assert_int_eq(c.precision, HY_PREC_BF16);
    ck_assert_str_eq(c.corpus, "tests/data/tiny-corpus.txt");
    ck_assert(c.val_fraction == 0.25);
    ck_assert_int_eq(c.seq_len, 64);
    ck_assert_int_eq(c.batch_size, 8);
    ck_assert_int_eq(c.steps, 50);
    ck_assert(c.max_tokens == 2e6 && c.max_seconds == 30.5);
    ck_assert_str_eq(c.optimizer, "sgd");
    ck_assert(c.lr == 0.02 && c.min_lr == 0.001);
    ck_assert_int_eq(c.warmup_steps, 5);
    ck_assert(c.weight_decay == 0.05 && c.beta1 == 0.8 && c.beta2 == 0.99 && c.eps == 1e-6 && c.momentum == 0.5);
    ck_assert(c.grad_clip == 0 && c.ssm_lr == 0.0005);
    ck_assert_int_eq(c.eval_every, 25);
    ck_assert_int_eq(c.eval_batches, 3);
    ck_assert_int_eq(c.log_every, 5);
    ck_assert_int_eq(c.checkpoint_every, 10);
    hy_run_config_free(&c);
}
END_TEST

START_TEST(shipped_configs_load) {
    const char *files[] = {"configs/transformer.yaml", "tests/configs/tiny-train.yaml"};
    for (int i = 0; i < 2; i++) {
        if (access(files[i], R_OK) != 0) continue;
        hy_run_config c;
        load_ok(files[i], NULL, 0, &c);
        ck_assert_int_ge(c.model.n_layers, 1);
        hy_run_config_free(&c);
    }
}
END_TEST

/* ---- --set ---- */

START_TEST(overrides) {
    hy_run_config c;
    const char *sets[] = {"train.lr=1e-3",       "model.blocks.attention.n_heads=8", "model.n_layers=3",
                          "compute.gemm=onednn", "name=other",                       "seed=18446744073709551615",
                          "model.layers.ffn=none", "train.steps=7"};
    load_ok(GOOD "names.yaml", sets, 8, &c);
    ck_assert(c.lr == 1e-3);
    ck_assert_int_eq(c.model.n_layers, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq((int)opt(&c.model.layers[i].mixer, "n_heads"), 8);
        ck_assert_ptr_null(c.model.layers[i].ffn.ops);
    }
    ck_assert_int_eq(c.gemm, HY_GEMM_ONEDNN);
    ck_assert_str_eq(c.name, "other");
    ck_assert_str_eq(c.out_dir, "results/other");
    ck_assert(c.seed == UINT64_MAX);
    ck_assert_int_eq(c.steps, 7);
    hy_run_config_free(&c);
    /* a later override wins; a placement map may replace a block name */
    const char *again[] = {"train.steps=7", "train.steps=9", "model.layers.mixer.default=attention"};
    ck_assert_int_eq(hy_run_config_load(GOOD "names.yaml", again, 3, &c), HY_ERR_CONFIG);
    ck_assert_msg(strncmp(hy_last_error(), "--set model.layers.mixer.default=attention: ", 44) == 0, "%s", hy_last_error());
    load_ok(GOOD "names.yaml", again, 2, &c);
    ck_assert_int_eq(c.steps, 9);
    hy_run_config_free(&c);
}
END_TEST

/* Loading with one override fails with a message that starts with "--set OVERRIDE: " and has `part`. */
static void expect_set_error(const char *set, const char *part) {
    hy_run_config c;
    const char *sets[] = {set};
    ck_assert_int_eq(hy_run_config_load(GOOD "names.yaml", sets, 1, &c), HY_ERR_CONFIG);
    char prefix[256];
    snprintf(prefix, sizeof prefix, "--set %s: ", set);
    const char *e = hy_last_error();
    ck_assert_msg(strncmp(e, prefix, strlen(prefix)) == 0, "expected '%s...', got '%s'", prefix, e);
    ck_assert_msg(strstr(e, part) != NULL, "expected '%s' in '%s'", part, e);
    ck_assert_ptr_null(c.model.layers);
}

START_TEST(override_errors) {
    expect_set_error("train.lr=abc", "must be a number > 0, got 'abc'");
    expect_set_error("train.lr=0", "must be a number > 0, got 0");
    expect_set_error("train.lerning_rate=1", "unknown key 'lerning_rate'");
    expect_set_error("traim.lr=1", "unknown key 'traim'");
    expect_set_error("model.blocks.attention.n_heads=four", "must be an integer, got 'four'");
    expect_set_error("model.blocks.attention.n_heads=5", "n_heads");   /* 5 does not divide 32: resolve */
    expect_set_error("model.blocks.attention.n_hedas=4", "unknown option 'n_hedas' for attention");
    expect_set_error("model.blocks.nosuchblock.x=1", "unknown block 'nosuchblock'");
    expect_set_error("model.layers.ffn=attention", "cannot be used as an ffn");
    expect_set_error("model.d_model.x=1", "not a map");
    expect_set_error("model.n_layers=0", "must be an integer in [1, 1024], got 0");
    expect_set_error("data.val_fraction=", "must be a number in (0, 0.5], got null");
    expect_set_error("compute.precision=f16", "must be one of f32, bf16; got 'f16'");
    expect_set_error("train.lr", "expected KEY.PATH=VALUE");
    expect_set_error("=3", "expected KEY.PATH=VALUE");
    expect_set_error("train..lr=3", "empty key");
    expect_set_error("model.layers[7].mixer=x", "unknown key '7'");
    /* the data keys */
    expect_set_error("data.train=a.bin", "needs data.val too");
    expect_set_error("data.val=a.bin", "needs data.train too");
    expect_set_error("data.format=csv", "must be one of auto, bytes, tokens, llmc, nanogpt; got 'csv'");
    expect_set_error("data.tokenizer=/nonexistent/t.model", "/nonexistent/t.model: cannot open");
    expect_set_error("data.tokenizer.vocab=4096", "a tokenizer of 4096 pieces needs model.vocab_size >= 4096, got 256");
    expect_set_error("data.tokenizer.vocab=100", "must be an integer in [260, 1048576], got 100");
    expect_set_error("data.tokenizer.type=bpe", "missing required key (the number of pieces");
}
END_TEST


/* ---- write -> reload ---- */

static void round_trip(const char *path, const char *const *sets, int n) {
    hy_run_config a, b;
    load_ok(path, sets, n, &a);
    char out[256];
    snprintf(out, sizeof out, "/tmp/hybrid-test-config-%d.yaml", (int)getpid());
    ck_assert_msg(hy_run_config_write(&a, out) == 0, "%s", hy_last_error());
    load_ok(out, NULL, 0, &b);
    assert_run_eq(&a, &b);
    ck_assert_str_eq(b.source, out);
    /* writing the reloaded config gives the same text (a fixed point) */
    char out2[300], cmd[2048];
    snprintf(out2, sizeof out2, "%s.2", out);
    ck_assert_int_eq(hy_run_config_write(&b, out2), 0);
    snprintf(cmd, sizeof cmd, "tail -n +2 %s > %s.a && tail -n +2 %s > %s.b && cmp -s %s.a %s.b", out, out, out2, out2,
             out, out2);
    ck_assert_msg(system(cmd) == 0, "rewritten config differs: %s vs %s", out, out2);
    snprintf(cmd, sizeof cmd, "rm -f %s %s %s.a %s.b", out, out2, out, out2);
    ck_assert_int_eq(system(cmd), 0);
    hy_run_config_free(&a), hy_run_config_free(&b);
}

START_TEST(write_reload_round_trip) {
    round_trip(GOOD "full.yaml", NULL, 0);
    round_trip(GOOD "minimal.yaml", NULL, 0);
    round_trip(GOOD "alternate-at.yaml", NULL, 0);
    const char *odd[] = {"train.lr=0.0012345678901234567", "model.router_aux_coef=0.3", "train.tokens=123456789012",
                         "name=we.ird+name", "data.corpus=/tmp/a path with \"quotes\" and \\ # : {x}",
                         "train.seconds=1e-300"};
    round_trip(GOOD "names.yaml", odd, 6);
}
END_TEST

/* data.train + data.val replace data.corpus and val_fraction; a task leaves no room for them. */
START_TEST(data_key_rules) {
    hy_run_config c;
    const char *both[] = {"data.train=a.bin", "data.val=b.bin", "data.corpus=c.txt"};
    ck_assert_int_eq(hy_run_config_load(GOOD "names.yaml", both, 3, &c), HY_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(hy_last_error(), "data.corpus (split by val_fraction) or data.train + data.val, not both"));
    const char *frac[] = {"data.train=a.bin", "data.val=b.bin", "data.val_fraction=0.2"};
    ck_assert_int_eq(hy_run_config_load(GOOD "names.yaml", frac, 3, &c), HY_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(hy_last_error(), "has no effect with data.val"));
    const char *task[] = {"data.task.type=induction", "data.format=tokens"};
    ck_assert_int_eq(hy_run_config_load(GOOD "names.yaml", task, 2, &c), HY_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(hy_last_error(), "has no effect with data.task"));
    const char *ok[] = {"data.train=a.bin", "data.val=b.bin", "data.format=llmc", "model.vocab_size=50304",
                        "data.tokenizer.vocab=4096", "data.tokenizer.type=unigram"};
    load_ok(GOOD "names.yaml", ok, 6, &c);
    ck_assert_str_eq(c.train_path, "a.bin");
    ck_assert_str_eq(c.val_path, "b.bin");
    ck_assert_str_eq(c.corpus, "");
    ck_assert_int_eq(c.data_format, HY_DATA_LLMC);
    ck_assert_int_eq(c.tokenizer_vocab, 4096);
    ck_assert_str_eq(c.tokenizer_type, "unigram");
    char *text = hy_run_config_text(&c);
    ck_assert_ptr_nonnull(strstr(text, "data:\n  train: \"a.bin\"\n  val: \"b.bin\"\n  format: llmc\n"
                                       "  tokenizer: {vocab: 4096, type: unigram}\ntrain:"));
    free(text);
    hy_run_config_free(&c);
    round_trip(GOOD "names.yaml", ok, 6);
}
END_TEST


START_TEST(written_form) {
    hy_run_config c;
    load_ok(GOOD "placement.yaml", NULL, 0, &c);
    char out[256];
    snprintf(out, sizeof out, "/tmp/hybrid-test-form-%d.yaml", (int)getpid());
    ck_assert_int_eq(hy_run_config_write(&c, out), 0);
    FILE *f = fopen(out, "r");
    ck_assert_ptr_nonnull(f);
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    unlink(out);
    /* every layer explicit, with every option of every block */
    int layers = 0;
    for (const char *p = text; (p = strstr(p, "    - mixer: {type: attention, ")); p++) layers++;
    ck_assert_int_eq(layers, 4);
    const hy_block_ops *att = hy_block_find("attention");
    for (int k = 0; k < att->n_opts; k++) {
        char key[128];
        snprintf(key, sizeof key, ", %s: ", att->opts[k].name);
        ck_assert_msg(strstr(text, key), "option %s not written:\n%s", att->opts[k].name, text);
    }
    const char *keys[] = {"\nname: ", "\nseed: ", "\nthreads: ", "\nout_dir: ", "\n  vocab_size: ", "\n  tie_embeddings: ",
                          "\n  router_aux_coef: ", "\n  gemm: ", "\n  precision: ", "\n  corpus: ", "\n  val_fraction: ",
                          "\n  tokens: ", "\n  seconds: ", "\n  min_lr: ", "\n  checkpoint_every: ", "\n  ssm_lr: "};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) ck_assert_msg(strstr(text, keys[k]), "missing%s", keys[k]);
    hy_run_config_free(&c);
}
END_TEST

/* The two config writers share one option walk and one float policy: the resolved YAML keeps a
 * float option that %.9g cannot carry in its shortest exact form, the checkpoint JSON keeps %.9g
 * (the bytes existing checkpoints hold); router_aux_coef is written alike in both. */
START_TEST(writers_share_option_walk_and_float_policy) {
    hy_run_config c;
    load_ok(GOOD "placement.yaml", NULL, 0, &c);
    hy_block_cfg *att = &c.model.layers[0].mixer;
    int k = hy_opt_index(att->ops, "rope_theta");
    ck_assert_int_ge(k, 0);
    att->opts.is_null[k] = false, att->opts.v[k] = 10000.123456789;
    c.model.router_aux_coef = 0.3f;
    char *yaml = hy_run_config_text(&c), *json = NULL;
    ck_assert_ptr_nonnull(yaml);
    ck_assert_int_eq(hy_model_config_to_json(&c.model, &json), 0);
    ck_assert_msg(strstr(yaml, ", rope_theta: 10000.123456789}") && strstr(yaml, "router_aux_coef: 0.3\n"), "%s", yaml);
    ck_assert_msg(strstr(json, ", \"rope_theta\": 10000.1235") && strstr(json, "\"router_aux_coef\": 0.3,"), "%s",
                  json);
    free(yaml), free(json);
    char buf[32];
    static const struct { float v; const char *text; } floats[] = {{0.001f, "0.001"}, {0.3f, "0.3"}, {0, "0"},
                                                                   {1.0f / 3, "0.33333334"}, {10, "1e+01"}};
    for (size_t i = 0; i < sizeof floats / sizeof *floats; i++) {
        hy_format_float(floats[i].v, buf, sizeof buf);
        ck_assert_str_eq(buf, floats[i].text);
    }
    hy_format_double(4096, buf, sizeof buf);
    ck_assert_str_eq(buf, "4096");
    hy_format_double(0.1, buf, sizeof buf);
    ck_assert_str_eq(buf, "0.1");
    hy_run_config_free(&c);
}
END_TEST

/* ---- bad configs ---- */

typedef struct {
    const char *file;     /* under tests/configs/bad/ */
    const char *where;    /* LINE:COL */
    const char *path;     /* key path ("" = none) */
    const char *problem;  /* part of the message after the path */
} bad_case;

static const bad_case bad_cases[] = {
    {"unknown-top.yaml", "2:1", "sed", "unknown key 'sed' (allowed: name, seed, threads, out_dir, model, compute, data, train)"},
    {"unknown-nested.yaml", "7:3", "train.lerning_rate", "unknown key 'lerning_rate' (allowed: seq_len,"},
    {"wrong-type.yaml", "6:16", "model.blocks.attention.n_heads", "must be an integer, got 'four'"},
    {"out-of-range.yaml", "6:17", "data.val_fraction", "must be a number in (0, 0.5], got 0.7"},
    {"syntax.yaml", "4:9", "", "YAML syntax error: did not find expected ',' or ']'"},
    {"unknown-block.yaml", "5:12", "model.layers.mixer", "unknown mixer block 'mamba-9000' (registered mixers: "},
    {"mixer-as-ffn.yaml", "6:10", "model.layers.ffn", "block 'attention' cannot be used as an ffn (ffns: "},
    {"list-length.yaml", "5:5", "model.layers", "has 3 entries, but model.n_layers is 4"},
    {"offset.yaml", "6:46", "model.layers.mixer.every.attention.offset", "must be smaller than period (2), got 2"},
    {"period.yaml", "7:29", "model.layers.mixer.every.attention.period", "must be an integer in [1, "},
    {"duplicate-index.yaml", "7:30", "model.layers.mixer.at.attention[3]",
     "duplicate layer index 1 (already at model.layers.mixer.at.attention[1])"},
    {"index-range.yaml", "8:24", "model.layers.ffn.at.swiglu[1]", "layer index 4 is out of range: model.n_layers is 4"},
    {"conflict.yaml", "9:19", "model.layers.ffn.at.none[1]", "layer 2 is already given to swiglu by model.layers.ffn.every.swiglu"},
    {"unassigned.yaml", "7:7", "model.layers.ffn", "layers 2, 3 have no ffn: no rule claims them and there is no default"},
    {"missing-required.yaml", "3:3", "model.d_model", "missing required key"},
    {"bad-option.yaml", "5:17", "model.blocks.attention.n_head", "unknown option 'n_head' for attention (options: n_heads"},
    {"heads-divide.yaml", "6:16", "model.blocks.attention.n_heads", ""},   /* text: the block's resolve() */
    {"duplicate-key.yaml", "6:1", "seed", "duplicate key (first given at line 1, column 1)"},
    {"alias.yaml", "1:8", "model", "anchors (&name) are not supported"},
    {"min-lr.yaml", "7:11", "train.min_lr", "must be <= train.lr (0.001), got 0.01"},
    {"min-lr-both.yaml", "8:17", "train.min_lr_ratio", "give train.min_lr or train.min_lr_ratio, not both"},
    {"min-lr-ratio-range.yaml", "6:17", "train.min_lr_ratio", "must be"},
    {"bad-enum.yaml", "6:9", "compute.gemm", "must be one of auto, openblas, onednn; got 'cublas'"},
    {"no-budget.yaml", "6:10", "train.steps", "0 means no step limit"},
    {"layer-option.yaml", "6:41", "model.layers[1].mixer.n_heads", "must be an integer, got 'x'"},
    {"layer-key.yaml", "6:8", "model.layers[1].mixr", "unknown key 'mixr' (allowed: mixer, ffn)"},
    {"quoted-number.yaml", "2:12", "model.d_model", "must be an integer in [1, 65536], got the quoted string \"32\""},
    {"unused-block-option.yaml", "6:20", "model.blocks.swiglu.d_ff", "d_ff = 0 is out of range"},
    {"negative-index.yaml", "5:33", "model.layers.mixer.at.attention[1]", "must be an integer >= 0, got -1"},
    {"seq-layout-type.yaml", "4:11", "model.layers", "must be a list of {mixer, ffn} or a map with mixer and ffn"},
};

START_TEST(bad_config) {
    const bad_case *b = &bad_cases[_i];
    char path[256], want[1024];
    snprintf(path, sizeof path, BAD "%s", b->file);
    snprintf(want, sizeof want, "%s:%s: %s%s%s", path, b->where, b->path, *b->path ? ": " : "", b->problem);
    hy_run_config c;
    memset(&c, 0x55, sizeof c);
    ck_assert_int_eq(hy_run_config_load(path, NULL, 0, &c), HY_ERR_CONFIG);
    const char *e = hy_last_error();
    ck_assert_msg(strncmp(e, want, strlen(want)) == 0, "\nexpected: %s...\n     got: %s", want, e);
    ck_assert_ptr_null(c.model.layers);
    /* the registered names are listed from the registry */
    char names[512];
    if (strstr(b->problem, "registered mixers")) {
        hy_block_names(HY_KIND_MIXER, names, sizeof names);
        ck_assert_msg(strstr(e, names), "%s does not list %s", e, names);
    }
    if (strstr(b->problem, "(ffns: ")) {
        hy_block_names(HY_KIND_FFN, names, sizeof names);
        ck_assert_msg(strstr(e, names) && strstr(e, "none"), "%s does not list %s", e, names);
    }
}
END_TEST

START_TEST(missing_file) {
    hy_run_config c;
    ck_assert_int_eq(hy_run_config_load(BAD "no-such-file.yaml", NULL, 0, &c), HY_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(hy_last_error(), "no-such-file.yaml"));
}
END_TEST

/* ---- hy_model_config helpers ---- */

START_TEST(model_config_resolve_and_copy) {
    hy_run_config c;
    load_ok(GOOD "alternate-list.yaml", NULL, 0, &c);
    hy_model_config m;
    ck_assert_int_eq(hy_model_config_copy(&m, &c.model), 0);
    ck_assert_ptr_ne(m.layers, c.model.layers);
    assert_model_eq(&m, &c.model);
    ck_assert_int_eq(hy_model_config_resolve(&m), 0);   /* idempotent on a resolved config */
    assert_model_eq(&m, &c.model);
    /* errors name the layer and the key */
    int k = hy_opt_index(m.layers[3].mixer.ops, "n_heads");
    m.layers[3].mixer.opts.v[k] = 5;
    ck_assert_int_eq(hy_model_config_resolve(&m), HY_ERR_CONFIG);
    ck_assert_msg(strncmp(hy_last_error(), "layers[3].mixer.n_heads: ", 25) == 0, "%s", hy_last_error());
    m.layers[3].mixer = c.model.layers[3].mixer;
    m.layers[2].ffn.ops = m.layers[2].mixer.ops;   /* a mixer in an ffn slot */
    ck_assert_int_eq(hy_model_config_resolve(&m), HY_ERR_CONFIG);
    ck_assert_msg(strncmp(hy_last_error(), "layers[2].ffn: ", 15) == 0, "%s", hy_last_error());
    m.layers[2].ffn = c.model.layers[2].ffn;
    m.layers[0].mixer.ops = NULL;
    ck_assert_int_eq(hy_model_config_resolve(&m), HY_ERR_CONFIG);
    ck_assert_msg(strncmp(hy_last_error(), "layers[0].mixer: ", 17) == 0, "%s", hy_last_error());
    hy_model_config_free(&m);
    ck_assert_ptr_null(m.layers);
    hy_run_config_free(&c);
    ck_assert_ptr_null(c.model.layers);
}
END_TEST

/* ---- nesting depth ---- */

/* `prefix` then `opener` n times, then `closer` n times when closed (else the file just ends). */
static char *nested_text(const char *prefix, const char *opener, const char *closer, int n, bool closed) {
    hy_strbuf b = {0};
    hy_sb_add(&b, prefix);
    for (int i = 0; i < n; i++) hy_sb_add(&b, opener);
    for (int i = 0; closed && i < n; i++) hy_sb_add(&b, closer);
    hy_sb_add(&b, "\n");
    return hy_sb_take(&b);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fputs(text, f) >= 0, 1);
    ck_assert_int_eq(fclose(f), 0);
}

/* Maps or lists nested deeper than YT_MAX_DEPTH: a located error from every YAML entry point (run
 * configs, experiments, model files, text), never a stack overflow (8000 levels crashed before). */
START_TEST(deep_nesting_is_refused) {
    char path[256], want[512];
    snprintf(path, sizeof path, "/tmp/hybrid-test-deep-%d.yaml", (int)getpid());
    static const char *const open_close[][2] = {{"[", "]"}, {"{a: ", "}"}};
    for (int form = 0; form < 2; form++) {
        /* 8000 levels, never closed (the reproduction of the crash) */
        char *text = nested_text("a: ", open_close[form][0], open_close[form][1], 8000, false);
        write_text(path, text);
        /* the root map is level 1; the opener of level YT_MAX_DEPTH + 1 is refused, at its column */
        int col = 4 + (YT_MAX_DEPTH - 1) * (int)strlen(open_close[form][0]);
        snprintf(want, sizeof want, "%s:1:%d: a%s", path, col, form ? ".a" : "[0]");
        hy_run_config c;
        ck_assert_int_eq(hy_run_config_load(path, NULL, 0, &c), HY_ERR_CONFIG);
        const char *e = hy_last_error();
        ck_assert_msg(strncmp(e, want, strlen(want)) == 0, "\nexpected: %s...\n     got: %s", want, e);
        char limit[96];
        snprintf(limit, sizeof limit, ": maps and lists nested deeper than %d levels", YT_MAX_DEPTH);
        ck_assert_msg(strstr(e, limit), "%s", e);
        hy_experiment x;
        ck_assert_int_eq(hy_experiment_load(path, NULL, 0, &x), HY_ERR_CONFIG);
        ck_assert_msg(strstr(hy_last_error(), limit), "%s", hy_last_error());
        hy_model_config *m = NULL;
        ck_assert_int_eq(hy_model_config_load(path, &m), HY_ERR_CONFIG);
        ck_assert_msg(strstr(hy_last_error(), limit), "%s", hy_last_error());
        ck_assert_int_eq(hy_model_config_from_yaml(text, "deep.yaml", &m), HY_ERR_CONFIG);
        ck_assert_msg(strncmp(hy_last_error(), "deep.yaml:1:", 12) == 0 && strstr(hy_last_error(), limit), "%s",
                      hy_last_error());
        ck_assert_ptr_null(m);
        free(text);
        /* at the limit the file parses: the error is the schema's (no key 'a'), not the depth */
        text = nested_text("a: ", open_close[form][0], open_close[form][1], YT_MAX_DEPTH - 1, true);
        write_text(path, text);
        ck_assert_int_eq(hy_run_config_load(path, NULL, 0, &c), HY_ERR_CONFIG);
        ck_assert_msg(!strstr(hy_last_error(), "nested deeper") && strstr(hy_last_error(), "unknown key 'a'"), "%s",
                      hy_last_error());
        free(text);
        /* one level more is refused */
        text = nested_text("a: ", open_close[form][0], open_close[form][1], YT_MAX_DEPTH, true);
        write_text(path, text);
        ck_assert_int_eq(hy_run_config_load(path, NULL, 0, &c), HY_ERR_CONFIG);
        ck_assert_msg(strstr(hy_last_error(), limit), "%s", hy_last_error());
        free(text);
    }
    unlink(path);
}
END_TEST

static Suite *make_config_suite(void) {
    Suite *s = suite_create("config");
    TCase *t = tcase_create("forms");
    tcase_add_test(t, three_forms_give_the_same_model);
    tcase_add_test(t, alternating_ffn_in_three_forms);
    tcase_add_test(t, per_layer_options_override_blocks);
    suite_add_tcase(s, t);
    t = tcase_create("values");
    tcase_add_test(t, defaults);
    tcase_add_test(t, every_key);
    tcase_add_test(t, shipped_configs_load);
    tcase_add_test(t, overrides);
    tcase_add_test(t, override_errors);
    suite_add_tcase(s, t);
    t = tcase_create("write");
    tcase_add_test(t, write_reload_round_trip);
    tcase_add_test(t, data_key_rules);
    tcase_add_test(t, written_form);
    tcase_add_test(t, writers_share_option_walk_and_float_policy);
    suite_add_tcase(s, t);
    t = tcase_create("errors");
    tcase_add_loop_test(t, bad_config, 0, (int)(sizeof bad_cases / sizeof *bad_cases));
    tcase_add_test(t, missing_file);
    tcase_add_test(t, deep_nesting_is_refused);
    suite_add_tcase(s, t);
    t = tcase_create("model");
    tcase_add_test(t, model_config_resolve_and_copy);
    suite_add_tcase(s, t);
    return s;
}
HY_TEST_SUITE(make_config_suite)

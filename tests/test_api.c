/* The public API of include/hybrid.h beyond the model itself: the config builder (C calls and
 * YAML text) and its errors, the optimizer's options, and hy_train_step + hy_lr_schedule giving
 * the trainer's exact weights. (examples/train_tiny.c uses the same API from the header alone.) */
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "experiments/data.h"
#include "experiments/train.h"
#include "models/model.h"
#include "models/optim.h"
#include "tests/testutil.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The JSON of cfg (freed by the caller). */
static char *json_of(const hy_model_config *cfg) {
    char *j = NULL;
    ck_assert_msg(hy_model_config_to_json(cfg, &j) == 0, "%s", hy_last_error());
    return j;
}

/* Asserts that the last call failed with HY_ERR_CONFIG and a message holding each of the words. */
static void assert_error(int rc, const char *w1, const char *w2) {
    ck_assert_msg(rc == HY_ERR_CONFIG, "expected HY_ERR_CONFIG, got %d (%s)", rc, hy_last_error());
    ck_assert_msg(strstr(hy_last_error(), w1), "'%s' not in: %s", w1, hy_last_error());
    if (w2) ck_assert_msg(strstr(hy_last_error(), w2), "'%s' not in: %s", w2, hy_last_error());
}

START_TEST(builder_matches_yaml) {
    /* every layer form of the YAML: blocks defaults, placement, a per-layer option */
    const char *yaml = "model:\n"
                       "  d_model: 64\n"
                       "  n_layers: 4\n"
                       "  tie_embeddings: false\n"
                       "  blocks:\n"
                       "    attention: {n_heads: 4, rope_theta: 10000}\n"
                       "    mamba: {d_state: 8}\n"
                       "  layers:\n"
                       "    - {mixer: mamba, ffn: swiglu}\n"
                       "    - {mixer: attention, ffn: {type: moe, n_experts: 4}}\n"
                       "    - {mixer: {type: mamba, expand: 1}, ffn: none}\n"
                       "    - {mixer: mamba, ffn: swiglu}\n";
    hy_model_config *y, *c;
    ck_assert_msg(hy_model_config_from_yaml(yaml, "t.yaml", &y) == 0, "%s", hy_last_error());
    ck_assert_msg(hy_model_config_new(64, 4, 256, &c) == 0, "%s", hy_last_error());
    hy_model_config_set_tie_embeddings(c, false);
    ck_assert(hy_model_config_set_layer(c, -1, "mamba", "swiglu") == 0);
    ck_assert(hy_model_config_set_layer(c, 1, "attention", "moe") == 0);
    ck_assert(hy_model_config_set_layer(c, 2, "mamba", NULL) == 0);
    ck_assert(hy_model_config_set_option(c, "attention", "n_heads", "4") == 0);
    ck_assert(hy_model_config_set_option(c, "attention", "rope_theta", "10000") == 0);
    ck_assert(hy_model_config_set_option(c, "mamba", "d_state", "8") == 0);
    ck_assert(hy_model_config_set_layer_option(c, 1, "ffn", "n_experts", "4") == 0);
    ck_assert(hy_model_config_set_layer_option(c, 2, "mixer", "expand", "1") == 0);
    ck_assert_msg(hy_model_config_resolve(c) == 0, "%s", hy_last_error());
    char *jy = json_of(y), *jc = json_of(c);
    ck_assert_str_eq(jy, jc);
    free(jy), free(jc);
    hy_model *my, *mc;
    ck_assert(hy_model_create(y, 3, &my) == 0 && hy_model_create(c, 3, &mc) == 0);
    ck_assert_int_eq(hy_model_param_count(my), hy_model_param_count(mc));
    ck_assert_int_eq(memcmp(my->data, mc->data, my->numel * sizeof(float)), 0);
    hy_model_free(my), hy_model_free(mc);
    hy_model_config_destroy(y);
    hy_model_config_destroy(c);
    hy_model_config_destroy(NULL);
}
END_TEST

START_TEST(builder_errors_name_the_key) {
    hy_model_config *c;
    assert_error(hy_model_config_new(0, 2, 256, &c), "d_model", NULL);
    ck_assert(c == NULL);
    assert_error(hy_model_config_new(32, 0, 256, &c), "n_layers", NULL);
    ck_assert_msg(hy_model_config_new(32, 3, 256, &c) == 0, "%s", hy_last_error());
    /* a config without mixers cannot be resolved or made into a model */
    assert_error(hy_model_config_resolve(c), "layers[0].mixer", "every layer needs a mixer");
    hy_model *m;
    ck_assert(hy_model_create(c, 1, &m) < 0);
    ck_assert(hy_model_config_set_layer(c, -1, "attention", "swiglu") == 0);
    char *before = json_of(c);
    assert_error(hy_model_config_set_layer(c, 2, "lstm", "swiglu"), "layers[2].mixer", "unknown mixer block 'lstm'");
    ck_assert_msg(strstr(hy_last_error(), "attention") && strstr(hy_last_error(), "mamba"), "lists the mixers: %s",
                  hy_last_error());
    assert_error(hy_model_config_set_layer(c, 0, "swiglu", NULL), "layers[0].mixer",
                 "block 'swiglu' cannot be used as a mixer");
    assert_error(hy_model_config_set_layer(c, -1, "attention", "mamba"), "layers[*].ffn", "cannot be used as an ffn");
    assert_error(hy_model_config_set_layer(c, 3, "attention", NULL), "layer 3", "n_layers is 3");
    assert_error(hy_model_config_set_layer(c, 0, NULL, NULL), "layers[0].mixer", "needs a mixer");
    assert_error(hy_model_config_set_option(c, "attenton", "n_heads", "2"), "unknown block 'attenton'", "registered");
    assert_error(hy_model_config_set_option(c, "attention", "n_head", "2"), "attention.n_head",
                 "unknown option 'n_head' for attention (options: n_heads, n_kv_heads, rope_theta)");
    assert_error(hy_model_config_set_option(c, "attention", "n_heads", "four"), "attention.n_heads",
                 "must be an integer, got 'four'");
    assert_error(hy_model_config_set_option(c, "attention", "n_heads", "0"), "attention.n_heads", "out of range");
    assert_error(hy_model_config_set_option(c, "attention", "n_heads", NULL), "attention.n_heads", "NULL");
    assert_error(hy_model_config_set_option(c, "mamba", "d_state", "8"), "mamba.d_state", "no layer has block 'mamba'");
    assert_error(hy_model_config_set_layer_option(c, 1, "ffn", "d_ff", "auto?"), "layers[1].ffn.d_ff", "got 'auto?'");
    assert_error(hy_model_config_set_layer_option(c, 1, "norm", "d_ff", "8"), "layers[1]", "\"mixer\" or \"ffn\"");
    assert_error(hy_model_config_set_layer_option(c, -1, "ffn", "d_ff", "8"), "layer -1", "out of range");
    char *after = json_of(c);
    ck_assert_str_eq(before, after);   /* no failed call changed anything */
    free(before), free(after);
    /* constraints that involve d_model are checked when resolving, named by layer and key */
    ck_assert(hy_model_config_set_option(c, "attention", "n_heads", "3") == 0);
    assert_error(hy_model_config_resolve(c), "layers[0].mixer.n_heads", NULL);
    ck_assert(hy_model_config_set_option(c, "attention", "n_heads", "auto") == 0);
    hy_model_config_set_router_aux_coef(c, -1.0f);
    assert_error(hy_model_config_resolve(c), "router_aux_coef", NULL);
    hy_model_config_set_router_aux_coef(c, 0.01f);
    ck_assert_msg(hy_model_config_resolve(c) == 0, "%s", hy_last_error());
    hy_model_config_destroy(c);
}
END_TEST

START_TEST(yaml_text_and_file) {
    /* the text of a shipped run config and of a model file gives the config the file gives */
    const char *paths[] = {"configs/transformer.yaml", "configs/models/hybrid-1-3-d64.yaml"};
    hy_model_config *a, *b;
    for (int i = 0; i < 2; i++) {
        char *text;
        size_t len;
        ck_assert_msg(hy_read_file(paths[i], &text, &len) == 0, "%s", hy_last_error());
        ck_assert_msg(hy_model_config_from_yaml(text, paths[i], &a) == 0, "%s", hy_last_error());
        ck_assert_msg(hy_model_config_load(paths[i], &b) == 0, "%s", hy_last_error());
        char *ja = json_of(a), *jb = json_of(b);
        ck_assert_str_eq(ja, jb);
        free(ja), free(jb);
        hy_free(text);
        hy_model_config_destroy(a), hy_model_config_destroy(b);
    }

    /* errors: located in the text, with the key path */
    assert_error(hy_model_config_from_yaml("model:\n  d_model: 32\n  n_layers: 1\n  blocks:\n    attention: {n_heads: four}\n"
                                           "  layers: {mixer: attention}\n",
                                           "inline", &a),
                 "inline:5:", "model.blocks.attention.n_heads: must be an integer, got 'four'");
    ck_assert(a == NULL);
    assert_error(hy_model_config_from_yaml("model:\n  d_model: 32\n  n_layers: 1\n  layers: {mixer: lstm}\n", NULL, &a),
                 "<yaml>:4:", "unknown mixer block 'lstm'");
    assert_error(hy_model_config_from_yaml("model: [1, 2\n", "bad", &a), "bad:", "YAML syntax error");
    assert_error(hy_model_config_from_yaml("train: {steps: 3}\n", "nomodel", &a), "nomodel", "model");
    assert_error(hy_model_config_load("/nonexistent/x.yaml", &a), "/nonexistent/x.yaml", NULL);
}
END_TEST

START_TEST(optimizer_options) {
    hy_optim_opts o, d;
    hy_optim_opts_defaults(&d);
    hy_run_config rc;   /* the trainer's defaults are the API's */
    hy_run_config_defaults(&rc);
    ck_assert(d.kind == HY_OPTIM_ADAMW && !strcmp(rc.optimizer, "adamw"));
    ck_assert(d.weight_decay == rc.weight_decay && d.beta1 == rc.beta1 && d.beta2 == rc.beta2 && d.eps == rc.eps);
    ck_assert(d.momentum == rc.momentum && d.grad_clip == rc.grad_clip && d.ssm_lr == rc.ssm_lr);
    hy_model_config *c;
    hy_model *m;
    hy_optimizer *opt;
    ck_assert(hy_model_config_new(16, 1, 32, &c) == 0 && hy_model_config_set_layer(c, 0, "attention", NULL) == 0);
    ck_assert_msg(hy_model_create(c, 1, &m) == 0, "%s", hy_last_error());
    hy_model_config_destroy(c);
    o = d, o.beta1 = 1.0;
    assert_error(hy_optimizer_new(m, &o, &opt), "beta1", "[0, 1)");
    ck_assert(opt == NULL);
    o = d, o.eps = 0;
    assert_error(hy_optimizer_new(m, &o, &opt), "eps", NULL);
    o = d, o.grad_clip = -1;
    assert_error(hy_optimizer_new(m, &o, &opt), "grad_clip", NULL);
    o = d, o.kind = (hy_optim_kind)7;
    assert_error(hy_optimizer_new(m, &o, &opt), "kind", NULL);
    o = d, o.kind = HY_OPTIM_SGD;
    ck_assert_msg(hy_optimizer_new(m, &o, &opt) == 0, "%s", hy_last_error());
    int32_t in[8] = {1, 2, 3, 4, 5, 6, 7, 8}, tg[8] = {2, 3, 4, 5, 6, 7, 8, 9};
    hy_loss l;
    ck_assert(hy_optimizer_step(opt, -1) < 0);
    ck_assert(hy_train_step(opt, in, NULL, 2, 4, 0.1, &l) < 0);
    ck_assert_msg(hy_train_step(opt, in, tg, 2, 4, 0.1, &l) == 0, "%s", hy_last_error());
    ck_assert(l.n_targets == 8 && l.loss > 0 && hy_optimizer_steps(opt) == 1 && hy_optimizer_grad_norm(opt) > 0);
    hy_optimizer_free(opt);
    hy_optimizer_free(NULL);
    ck_assert_msg(hy_optimizer_new(m, NULL, &opt) == 0, "%s", hy_last_error());   /* NULL: the defaults */
    hy_optimizer_free(opt);
    hy_model_free(m);
}
END_TEST

/* hy_train_step in a loop with hy_lr_schedule, on the trainer's batches, ends with the weights
 * hy_train writes: the public step is the trainer's step (AdamW, decay rules, ssm_lr, clipping). */
START_TEST(train_step_is_the_trainers_step) {
    char dir[256], out[300], ckpt[400];
    snprintf(dir, sizeof dir, "/tmp/hybrid-test-api-%d", (int)getpid());
    snprintf(out, sizeof out, "out_dir=%s", dir);
    const char *sets[] = {out, "threads=1", "model.layers.mixer=s4d"};   /* s4d: ssm_lr and no-decay groups */
    hy_run_config c;
    ck_assert_msg(hy_run_config_load("tests/configs/tiny-train.yaml", sets, 3, &c) == 0, "%s", hy_last_error());
    hy_train_opts to = {0};
    hy_train_result r;
    ck_assert_msg(hy_train(&c, &to, &r) == 0, "%s", hy_last_error());
    hy_model *trained;
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", dir);
    ck_assert_msg(hy_checkpoint_load(ckpt, &trained, NULL) == 0, "%s", hy_last_error());

    hy_set_threads(c.threads);
    hy_model *m;
    hy_optimizer *opt;
    ck_assert(hy_model_create(&c.model, c.seed, &m) == 0);
    hy_optim_opts o = {.kind = HY_OPTIM_ADAMW, .weight_decay = c.weight_decay, .beta1 = c.beta1, .beta2 = c.beta2,
                       .eps = c.eps, .momentum = c.momentum, .ssm_lr = c.ssm_lr, .grad_clip = c.grad_clip};
    ck_assert_msg(hy_optimizer_new(m, &o, &opt) == 0, "%s", hy_last_error());
    hy_data d;
    hy_data_spec spec;
    hy_run_data_spec(&c, &spec);
    ck_assert(hy_data_open(&d, &spec, &c.task, c.seed) == 0);
    hy_rng rng;
    hy_rng_seed(&rng, c.seed);
    size_t n = (size_t)c.batch_size * c.seq_len;
    int32_t *in = malloc(n * sizeof *in), *tg = malloc(n * sizeof *tg);
    for (long step = 0; step < c.steps; step++) {
        double progress = (double)(step - c.warmup_steps) / (double)(c.steps - c.warmup_steps);
        double lr = hy_lr_schedule(step, c.warmup_steps, progress, c.lr, c.min_lr);
        ck_assert(hy_data_batch(&d, 0, &rng, c.batch_size, c.seq_len, in, tg) == 0);
        ck_assert_msg(hy_train_step(opt, in, tg, c.batch_size, c.seq_len, lr, NULL) == 0, "%s", hy_last_error());
    }
    ck_assert_int_eq(m->numel, trained->numel);
    ck_assert_msg(memcmp(m->data, trained->data, m->numel * sizeof(float)) == 0,
                  "the API's weights differ from the trainer's after %ld steps", c.steps);
    free(in), free(tg);
    hy_data_free(&d);
    hy_optimizer_free(opt);
    hy_model_free(m), hy_model_free(trained);
    hy_run_config_free(&c);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

static Suite *make_api_suite(void) {
    Suite *s = suite_create("api");
    TCase *t = tcase_create("config");
    tcase_add_test(t, builder_matches_yaml);
    tcase_add_test(t, builder_errors_name_the_key);
    tcase_add_test(t, yaml_text_and_file);
    suite_add_tcase(s, t);
    t = tcase_create("train");
    tcase_add_test(t, optimizer_options);
    tcase_add_test(t, train_step_is_the_trainers_step);
    suite_add_tcase(s, t);
    return s;
}
HY_TEST_SUITE(make_api_suite)

/* Hybrid layouts: the Jamba layout (attention at i % 8 == 4, mamba elsewhere, moe at odd layers,
 * swiglu at even layers) written with period/offset rules, as an explicit per-layer list and as
 * index lists gives the identical model: the same resolved config, the same parameters (names,
 * shapes, values) and the same logits and losses for one seed; a shifted layout does not. And the
 * jamba-like variant of the shipped configs/jamba-like.yaml experiment has that layout. */
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "experiments/config.h"
#include "models/model.h"
#include "experiments/experiment.h"
#include "tests/testutil.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LAYOUTS "tests/configs/layouts/"

typedef struct {
    hy_run_config c;
    hy_model *m;
    char *json;
    float *logits;
    hy_loss loss;
} built;

enum { B = 2, T = 24 };

/* Loads a config, builds its model from the config's seed and runs one forward on a fixed batch. */
static void build(built *b, const char *path) {
    ck_assert_msg(hy_run_config_load(path, NULL, 0, &b->c) == 0, "%s: %s", path, hy_last_error());
    ck_assert_msg(hy_model_create(&b->c.model, b->c.seed, &b->m) == 0, "%s: %s", path, hy_last_error());
    ck_assert_int_eq(hy_model_config_to_json(&b->m->cfg, &b->json), 0);
    int V = b->m->cfg.vocab_size;
    int32_t in[B * T], tg[B * T];
    for (int i = 0; i < B * T; i++) in[i] = (i * 13 + 5) % V, tg[i] = (i * 7 + 3) % V;
    ck_assert_msg(hy_model_forward(b->m, in, tg, B, T, false, &b->loss) == 0, "%s", hy_last_error());
    size_t n = (size_t)B * T * V;
    b->logits = hy_malloc(n * sizeof(float));
    memcpy(b->logits, hy_model_logits(b->m), n * sizeof(float));
}

static void unbuild(built *b) {
    hy_free(b->logits);
    free(b->json);
    hy_model_free(b->m);
    hy_run_config_free(&b->c);
}

/* The two models are the same: config JSON, every parameter (name, shape, bits), logits, losses. */
static void assert_same(const built *a, const built *b, const char *what) {
    ck_assert_msg(strcmp(a->json, b->json) == 0, "%s: resolved configs differ:\n%s\n%s", what, a->json, b->json);
    ck_assert_int_eq(a->m->n_params, b->m->n_params);
    for (int k = 0; k < a->m->n_params; k++) {
        const hy_param *p = &a->m->params[k], *q = &b->m->params[k];
        ck_assert_str_eq(p->name, q->name);
        ck_assert_int_eq(p->ndim, q->ndim);
        for (int d = 0; d < p->ndim; d++) ck_assert_int_eq(p->shape[d], q->shape[d]);
        ck_assert_msg(memcmp(p->data, q->data, p->numel * sizeof(float)) == 0, "%s: %s differs", what, p->name);
    }
    size_t n = (size_t)B * T * a->m->cfg.vocab_size;
    ck_assert_msg(memcmp(a->logits, b->logits, n * sizeof(float)) == 0, "%s: logits differ", what);
    ck_assert(a->loss.loss == b->loss.loss && a->loss.aux_loss == b->loss.aux_loss);
}

/* Layer i of the Jamba layout: attention iff i % 8 == 4, moe iff i odd. */
static void assert_jamba_layout(const hy_model *m) {
    for (int i = 0; i < m->cfg.n_layers; i++) {
        const char *mixer = m->cfg.layers[i].mixer.ops->name, *ffn = m->cfg.layers[i].ffn.ops->name;
        ck_assert_msg(strcmp(mixer, i % 8 == 4 ? "attention" : "mamba") == 0, "layer %d mixer %s", i, mixer);
        ck_assert_msg(strcmp(ffn, i % 2 ? "moe" : "swiglu") == 0, "layer %d ffn %s", i, ffn);
    }
}

START_TEST(jamba_layout_three_spellings_one_model) {
    built every, list, at, shifted;
    build(&every, LAYOUTS "jamba-every.yaml");
    build(&list, LAYOUTS "jamba-list.yaml");
    build(&at, LAYOUTS "jamba-at.yaml");
    assert_jamba_layout(every.m);
    ck_assert_ptr_nonnull(hy_model_param(every.m, "layers.4.mixer.q_proj.weight"));
    ck_assert_ptr_nonnull(hy_model_param(every.m, "layers.3.mixer.A_log"));
    ck_assert_ptr_nonnull(hy_model_param(every.m, "layers.7.ffn.experts.3.down_proj.weight"));
    ck_assert_ptr_nonnull(hy_model_param(every.m, "layers.6.ffn.gate_proj.weight"));
    ck_assert_msg(every.loss.aux_loss > 0, "the four MoE layers report an aux loss");
    assert_same(&every, &list, "period/offset vs explicit list");
    assert_same(&every, &at, "period/offset vs index lists");
    /* negative control: attention one layer earlier is another model */
    build(&shifted, LAYOUTS "jamba-shifted.yaml");
    ck_assert(strcmp(every.json, shifted.json) != 0);
    size_t n = (size_t)B * T * every.m->cfg.vocab_size;
    ck_assert(memcmp(every.logits, shifted.logits, n * sizeof(float)) != 0);
    unbuild(&every), unbuild(&list), unbuild(&at), unbuild(&shifted);
}
END_TEST

/* The shipped Jamba block (configs/models/jamba-like.yaml) read as an experiment's variant. */
START_TEST(jamba_like_config_has_the_jamba_layout) {
    char path[256], cwd[256], text[512];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    snprintf(path, sizeof path, "/tmp/hybrid-test-jamba-%d.yaml", (int)getpid());
    snprintf(text, sizeof text, "variants:\n  - {name: jamba-like, model: %s/configs/models/jamba-like.yaml}\n"
                                "sweep: {seq_len: [64, 256, 1024]}\n", cwd);
    ck_assert_int_eq(hy_write_file_atomic(path, text, strlen(text)), 0);
    hy_experiment e;
    ck_assert_msg(hy_experiment_load(path, NULL, 0, &e) == 0, "%s", hy_last_error());
    unlink(path);
    int found = 0;
    for (int r = 0; r < e.n_runs; r++) {
        if (strcmp(e.runs[r].variant, "jamba-like")) continue;
        found++;
        hy_model *m;
        ck_assert_msg(hy_model_create(&e.runs[r].cfg.model, e.runs[r].cfg.seed, &m) == 0, "%s", hy_last_error());
        ck_assert_int_eq(m->cfg.n_layers % 8, 0);
        assert_jamba_layout(m);
        for (int i = 0; i < m->cfg.n_layers; i++)
            if (i % 8 == 4) {
                const hy_block_cfg *a = &m->cfg.layers[i].mixer;
                ck_assert_msg(a->opts.is_null[hy_opt_index(a->ops, "rope_theta")], "attention without RoPE (as Jamba)");
            }
        ck_assert(m->cfg.router_aux_coef > 0);
        hy_model_free(m);
    }
    ck_assert_int_eq(found, 3);   /* one run per swept seq_len */
    hy_experiment_free(&e);
}
END_TEST

static Suite *layouts_suite(void) {
    Suite *s = suite_create("layouts");
    TCase *k = tcase_create("jamba");
    tcase_add_test(k, jamba_layout_three_spellings_one_model);
    tcase_add_test(k, jamba_like_config_has_the_jamba_layout);
    suite_add_tcase(s, k);
    return s;
}
HY_TEST_SUITE(layouts_suite)

/* train_tiny: the public C API end to end, using nothing but "hybrid.h".
 *
 *   1. the same small Mamba + attention hybrid built twice, from YAML text and from C calls, and
 *      checked to be the same model (same JSON config, parameter count and loss at the same seed);
 *   2. 50 training steps (hy_train_step, hy_lr_schedule) on a repeating byte text made here,
 *      checked to lower the loss clearly;
 *   3. a checkpoint saved, loaded back, and checked to give exactly the same loss.
 *
 * Usage: train_tiny [CHECKPOINT_PATH]   (default: train_tiny.safetensors)
 * Exits 0 when every check passes, 1 with a message naming the failed check otherwise.
 * `make test` builds it against build/libhybrid.a and runs it. */
#include "hybrid.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { B = 8, T = 32, STEPS = 50, WARMUP = 5, SEED = 7 };
static const double LR = 1e-2, MIN_LR = 1e-3;

/* The model as YAML: the `model:` section of a run config (docs/configs.md). */
static const char *const MODEL_YAML =
    "model:\n"
    "  d_model: 32\n"
    "  n_layers: 2\n"
    "  vocab_size: 256\n"
    "  blocks:\n"
    "    attention: {n_heads: 2, rope_theta: 10000}\n"
    "    mamba: {d_state: 8}\n"
    "    swiglu: {d_ff: 64}\n"
    "  layers:\n"
    "    mixer: {default: mamba, at: {attention: [1]}}\n"
    "    ffn: swiglu\n";

/* Stops the program with the failed step and the library's message. */
static void fail(const char *what) {
    fprintf(stderr, "train_tiny: FAILED: %s: %s\n", what, hy_last_error());
    exit(1);
}
#define CHECK(call) \
    do { \
        if ((call) < 0) fail(#call); \
    } while (0)
/* Stops the program when a check of this example does not hold. */
static void expect(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "train_tiny: FAILED: %s\n", what);
        exit(1);
    }
}

/* The same model from C calls: every layer Mamba + SwiGLU, then attention in layer 1, then the
 * options (set after the blocks are placed: an option applies to the layers that have the block). */
static hy_model_config *config_from_c(void) {
    hy_model_config *c;
    CHECK(hy_model_config_new(32, 2, 256, &c));
    CHECK(hy_model_config_set_layer(c, -1, "mamba", "swiglu"));
    CHECK(hy_model_config_set_layer(c, 1, "attention", "swiglu"));
    CHECK(hy_model_config_set_option(c, "attention", "n_heads", "2"));
    CHECK(hy_model_config_set_option(c, "attention", "rope_theta", "10000"));
    CHECK(hy_model_config_set_option(c, "mamba", "d_state", "8"));
    CHECK(hy_model_config_set_option(c, "swiglu", "d_ff", "64"));
    /* a mistake is an error naming the key, and changes nothing */
    expect(hy_model_config_set_option(c, "attention", "n_heads", "four") == HY_ERR_CONFIG,
           "a bad option value is refused");
    expect(strstr(hy_last_error(), "attention.n_heads") != NULL, "the error names the key");
    CHECK(hy_model_config_resolve(c));   /* fills swiglu's auto options etc.; checks everything */
    return c;
}

/* A text the model can learn fast: one sentence repeated. */
static unsigned char text[4096];
static void make_text(void) {
    const char *s = "the quick brown fox jumps over the lazy dog. ";
    size_t n = strlen(s);
    for (size_t i = 0; i < sizeof text; i++) text[i] = (unsigned char)s[i % n];
}

/* B random windows of T+1 bytes: inputs are the first T, targets the next byte of each. */
static void batch(uint64_t *rng, int32_t *in, int32_t *tg) {
    for (int b = 0; b < B; b++) {
        *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
        size_t off = (size_t)(*rng >> 33) % (sizeof text - T - 1);
        for (int t = 0; t < T; t++) {
            in[b * T + t] = text[off + t];
            tg[b * T + t] = text[off + t + 1];
        }
    }
}

/* Mean cross-entropy of m on the fixed evaluation batch (no gradients kept). */
static float eval_loss(hy_model *m, const int32_t *in, const int32_t *tg) {
    hy_loss l;
    CHECK(hy_model_forward(m, in, tg, B, T, false, &l));
    return l.loss;
}

int main(int argc, char **argv) {
    const char *ckpt = argc > 1 ? argv[1] : "train_tiny.safetensors";
    hy_set_threads(1);   /* a model this small runs fastest on one core */
    make_text();
    int32_t ev_in[B * T], ev_tg[B * T], in[B * T], tg[B * T];
    uint64_t ev_rng = 99, rng = SEED;
    batch(&ev_rng, ev_in, ev_tg);

    /* 1. one model, two ways */
    hy_model_config *cy, *cc = config_from_c();
    CHECK(hy_model_config_from_yaml(MODEL_YAML, "MODEL_YAML", &cy));
    char *jy, *jc;
    CHECK(hy_model_config_to_json(cy, &jy));
    CHECK(hy_model_config_to_json(cc, &jc));
    expect(strcmp(jy, jc) == 0, "the YAML and the C config are the same config");
    hy_model *m, *mc;
    CHECK(hy_model_create(cy, SEED, &m));
    CHECK(hy_model_create(cc, SEED, &mc));
    hy_model_config_destroy(cy);   /* the models hold their own copies */
    hy_model_config_destroy(cc);
    expect(hy_model_param_count(m) == hy_model_param_count(mc), "same parameter count");
    float l0 = eval_loss(m, ev_in, ev_tg);
    expect(l0 == eval_loss(mc, ev_in, ev_tg), "same loss at the same seed");
    hy_model_free(mc);
    printf("train_tiny: config %s\ntrain_tiny: %zu parameters, from YAML and from C alike; loss %.4f\n", jy,
           hy_model_param_count(m), l0);
    free(jy);
    free(jc);

    /* 2. train: the trainer's step and schedule in a loop of our own */
    hy_optim_opts oo;
    hy_optim_opts_defaults(&oo);   /* AdamW, weight decay 0.1, grad_clip 1 */
    hy_optimizer *opt;
    CHECK(hy_optimizer_new(m, &oo, &opt));
    for (long step = 0; step < STEPS; step++) {
        double progress = (double)(step - WARMUP) / (STEPS - WARMUP);
        double lr = hy_lr_schedule(step, WARMUP, progress, LR, MIN_LR);
        hy_loss loss;
        batch(&rng, in, tg);
        CHECK(hy_train_step(opt, in, tg, B, T, lr, &loss));
        if ((step + 1) % 10 == 0)
            printf("train_tiny: step %ld  loss %.4f  lr %.2e  grad norm %.3f\n", step + 1, loss.loss, lr,
                   hy_optimizer_grad_norm(opt));
    }
    expect(hy_optimizer_steps(opt) == STEPS, "one optimizer update per step");
    hy_optimizer_free(opt);
    float l1 = eval_loss(m, ev_in, ev_tg);
    printf("train_tiny: loss on the evaluation batch %.4f -> %.4f after %d steps\n", l0, l1, STEPS);
    expect(l1 < 0.5f * l0, "training lowers the loss clearly (to under half)");

    /* 3. save, load, same model */
    CHECK(hy_checkpoint_save(m, ckpt, STEPS));
    hy_model *back;
    long step = -1;
    CHECK(hy_checkpoint_load(ckpt, &back, &step));
    expect(step == STEPS, "the checkpoint keeps the step");
    float l2 = eval_loss(back, ev_in, ev_tg);
    expect(l2 == l1, "the reloaded model gives the same loss");
    printf("train_tiny: saved %s and loaded it back: loss %.4f, the same\ntrain_tiny: OK\n", ckpt, l2);
    hy_model_free(back);
    hy_model_free(m);
    return 0;
}

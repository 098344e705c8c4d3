/* `bench --precision`: what bf16 training gains, measured inside one process. The two models of
 * configs/precision.yaml (the mamba stack and the transformer at d_model 512, 8 layers, T 1024,
 * batch 2) take training steps in f32 and in bf16 by turns, so both precisions run in the same
 * process, with the same buffers, in the same minutes of the machine: the ratio does not depend
 * on which mode a process happened to start in (docs/performance.md), as two separate runs'
 * ratio does. */
#include "bench/bench.h"
#include "core/error.h"
#include "core/gemm.h"
#include "core/timer.h"
#include "models/optim.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum { D = 512, LAYERS = 8, T = 1024, BATCH = 2, VOCAB = 256 };

/* A model of configs/precision.yaml: mamba = 8 Mamba mixers without feed-forward (d_state 16,
 * d_conv 4, expand 2); otherwise 8 × (attention, 8 heads, RoPE 10000; SwiGLU, d_ff auto). */
static int precision_model(bool mamba, hy_model **out) {
    const hy_block_ops *mix = hy_block_find(mamba ? "mamba" : "attention"), *ffn = mamba ? NULL : hy_block_find("swiglu");
    const char *mamba_opts[] = {"d_state=16", "d_conv=4", "expand=2"}, *att_opts[] = {"n_heads=8", "rope_theta=10000"};
    hy_layer_cfg layers[LAYERS] = {0};
    hy_model_config cfg = {.d_model = D, .vocab_size = VOCAB, .n_layers = LAYERS, .tie_embeddings = true, .layers = layers};
    for (int i = 0; i < LAYERS; i++) {
        layers[i].mixer.ops = mix, layers[i].ffn.ops = ffn;
        int rc = hy_block_opts_from_pairs(mix, D, mamba ? mamba_opts : att_opts, mamba ? 3 : 2, &layers[i].mixer.opts);
        if (rc == 0 && ffn) rc = hy_block_opts_from_pairs(ffn, D, NULL, 0, &layers[i].ffn.opts);
        if (rc < 0) return rc;
    }
    return hy_model_create(&cfg, 1234, out);
}

/* One trainer step (forward, zero, backward, clip to 1, AdamW) under `prec`; its wall time in s,
 * or a negative error code. *products: the time inside the matrix products (hy_gemm_stats.seconds:
 * these models issue every product from one thread, so it is wall time), *convert: the part of it
 * spent converting operands to bf16. */
static double timed_step(hy_optim *opt, hy_model *m, hy_precision prec, const int32_t *in, const int32_t *tg,
                         double *products, double *convert) {
    hy_gemm_set_precision(prec);
    hy_gemm_stats_reset();
    hy_loss l;
    double norm, t0 = hy_now();
    int rc = hy_optim_train_step(opt, m, 1.0, in, tg, BATCH, T, 1e-4, &l, &norm);
    double dt = hy_now() - t0;
    hy_gemm_stats st;
    hy_gemm_stats_get(&st);
    *products = st.seconds, *convert = st.convert_seconds;
    hy_gemm_set_precision(HY_PREC_F32);
    return rc < 0 ? rc : dt;
}

/* One model: a step in each precision to allocate, then `rounds` rounds of an f32 step and a bf16
 * step; prints the best step of each precision (tokens/s) and the bf16 / f32 speed-up of the bests,
 * with the median and the range of the rounds' own ratios as the spread, and where each best step's
 * time went: the products that go through hy_gemm (bf16: with their operand conversions) and the
 * rest, mostly f32 work in both precisions (attention's own tile products, in the rest, take bf16
 * inputs too): by Amdahl's law the rest bounds the speed-up. */
static int precision_line(const hy_machine_limits *lim, bool mamba, int rounds) {
    hy_model *m;
    int rc = precision_model(mamba, &m);
    if (rc < 0) return rc;
    hy_optim opt = {.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
    if ((rc = hy_optim_init(&opt, m, HY_OPTIM_ADAMW)) < 0) {
        hy_model_free(m);
        return rc;
    }
    int32_t *in = malloc(sizeof(int32_t) * BATCH * T), *tg = malloc(sizeof(int32_t) * BATCH * T);
    double *ratio = malloc(sizeof(double) * (size_t)rounds), best[2] = {INFINITY, INFINITY}, prod[2] = {0, 0},
           conv[2] = {0, 0};
    if (!in || !tg || !ratio) rc = hy_fail_code(HY_ERR_NOMEM, "bench --precision: out of memory");
    unsigned state = 12345;
    for (int i = 0; rc == 0 && i < BATCH * T; i++) {   /* bytes of a fixed pseudo-random stream */
        state = state * 1103515245u + 12345u;
        in[i] = (int32_t)((state >> 16) % VOCAB), tg[i] = (int32_t)((state >> 8) % VOCAB);
    }
    const hy_precision precs[2] = {HY_PREC_F32, HY_PREC_BF16};
    for (int p = 0; rc == 0 && p < 2; p++) {
        double pr, cv, dt = timed_step(&opt, m, precs[p], in, tg, &pr, &cv);   /* first steps: allocation, not timed */
        if (dt < 0) rc = (int)dt;
    }
    for (int r = 0; rc == 0 && r < rounds; r++) {
        double dt[2];
        for (int p = 0; rc == 0 && p < 2; p++) {
            double pr, cv;
            dt[p] = timed_step(&opt, m, precs[p], in, tg, &pr, &cv);
            if (dt[p] < 0) rc = (int)dt[p];
            else if (dt[p] < best[p]) best[p] = dt[p], prod[p] = pr, conv[p] = cv;
        }
        if (rc == 0) ratio[r] = dt[0] / dt[1];
    }
    if (rc == 0) {
        qsort(ratio, (size_t)rounds, sizeof *ratio, hy_bench_cmp_double);
        double tok = (double)BATCH * T;
        printf("bf16 training step, %s (d_model %d, %d layers, T %d, batch %d; %d rounds of an f32 and a bf16 step, one "
               "process): best f32 %.1f ms (%.0f tokens/s), best bf16 %.1f ms (%.0f tokens/s): bf16 = %.2f x f32 "
               "tokens/s (rounds' own ratios: median %.2f, range %.2f-%.2f; bf16 GEMM %.2f x f32 GEMM)\n",
               mamba ? "mamba stack" : "transformer", D, LAYERS, T, BATCH, rounds, best[0] * 1e3, tok / best[0],
               best[1] * 1e3, tok / best[1], best[0] / best[1], rounds % 2 ? ratio[rounds / 2] : 0.5 * (ratio[rounds / 2 - 1] + ratio[rounds / 2]),
               ratio[0], ratio[rounds - 1], lim->best_bf16 / lim->best_f32);
        printf("  where the best steps' time went: f32 products %.1f ms + rest %.1f ms; bf16 products %.1f ms (%.1f of "
               "them converting) + rest %.1f ms; products %.2f x faster in bf16\n",
               prod[0] * 1e3, (best[0] - prod[0]) * 1e3, prod[1] * 1e3, conv[1] * 1e3, (best[1] - prod[1]) * 1e3,
               prod[0] / prod[1]);
    }
    free(in), free(tg), free(ratio);
    hy_optim_free(&opt);
    hy_model_free(m);
    return rc;
}

int hy_bench_precision_lines(const hy_machine_limits *lim, const char *blocks, int rounds) {
    int rc = 0;
    if (hy_bench_selected(blocks, "mamba")) rc = precision_line(lim, true, rounds);
    if (rc == 0 && hy_bench_selected(blocks, "attention")) rc = precision_line(lim, false, rounds);
    return rc;
}

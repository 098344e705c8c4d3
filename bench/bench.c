/* Benchmarks: the machine's limits (OpenBLAS and oneDNN GEMM rates in f32 and bf16, memory
 * bandwidth), then every block's fwd / fwd_bwd / step time and memory against T, written to
 * layers.csv (docs/spec.md §5) with each row's throughput as a ratio to the best f32 GEMM of the
 * same run (the faster of OpenBLAS and oneDNN on a 2048³ product). */
#include "bench/bench.h"
#include "core/args.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/gemm.h"
#include "core/mem.h"
#include "core/strbuf.h"
#include "core/timer.h"
#include "experiments/config.h"
#include "experiments/csv_schema.h"
#include "layers/attention/attention.h"
#include "layers/mamba/mamba.h"
#include "layers/mamba/scan.h"
#include "models/optim.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Runs fn until at least min_s seconds and 2 repetitions have passed; returns the fastest time. */
#define TIME_BEST(best, min_s, body)                                          \
    do {                                                                      \
        double t_total_ = 0;                                                  \
        best = INFINITY;                                                      \
        for (int rep_ = 0; rep_ < 2 || (t_total_ < (min_s) && rep_ < 50); rep_++) { \
            double t0_ = hy_now();                                            \
            body;                                                             \
            double dt_ = hy_now() - t0_;                                      \
            t_total_ += dt_;                                                  \
            if (dt_ < best) best = dt_;                                       \
        }                                                                     \
    } while (0)

static double gemm_gflops(hy_gemm_backend be, hy_precision prec, int M, int N, int K) {
    float *A = hy_malloc((size_t)M * K * 4), *B = hy_malloc((size_t)K * N * 4), *C = hy_malloc((size_t)M * N * 4);
    for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)K * N; i++) B[i] = (float)(i % 5) * 0.1f;
    hy_gemm_set_backend(be);
    hy_gemm_set_precision(prec);
    double best;
    TIME_BEST(best, 0.3, hy_gemm(false, true, M, N, K, 1.0f, A, K, B, K, 0.0f, C, N));
    hy_gemm_set_backend(HY_GEMM_AUTO);
    hy_gemm_set_precision(HY_PREC_F32);
    hy_free(A), hy_free(B), hy_free(C);
    return 2.0 * M * N * K / best / 1e9;
}

static void scaled_copy(float *restrict b, const float *restrict a, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) b[i] = a[i] * 1.0001f;
}

/* Copy bandwidth over 2 x 256 MiB, counting read + write bytes, with the threads in use; 0 when
 * the buffers cannot be allocated. */
double hy_bench_copy_gbs(void) {
    size_t n = (size_t)64 << 20;
    float *a = hy_malloc(n * 4), *b = hy_malloc(n * 4);
    if (!a || !b) {
        hy_free(a), hy_free(b);
        return 0;
    }
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = (float)i, b[i] = 0;
    double best;
    TIME_BEST(best, 0.5, scaled_copy(b, a, n));
    hy_free(a), hy_free(b);
    return 2.0 * n * 4 / best / 1e9;
}

void hy_bench_machine_limits(hy_machine_limits *m) {
    m->openblas_f32 = gemm_gflops(HY_GEMM_OPENBLAS, HY_PREC_F32, 2048, 2048, 2048);
    m->onednn_f32 = gemm_gflops(HY_GEMM_ONEDNN, HY_PREC_F32, 2048, 2048, 2048);
    m->onednn_bf16 = gemm_gflops(HY_GEMM_ONEDNN, HY_PREC_BF16, 2048, 2048, 2048);
    m->best_f32 = fmax(m->openblas_f32, m->onednn_f32);
    m->best_bf16 = m->onednn_bf16;   /* OpenBLAS has no bf16 GEMM here: oneDNN is the only bf16 backend */
    m->copy_gbs = hy_bench_copy_gbs();
    printf("machine: GEMM 2048^3 GFLOP/s: OpenBLAS f32 %.1f, oneDNN f32 %.1f, oneDNN bf16 %.1f; memory copy %.1f GB/s\n"
           "yardsticks: best f32 GEMM %.1f GFLOP/s (%s), best bf16 GEMM %.1f GFLOP/s\n",
           m->openblas_f32, m->onednn_f32, m->onednn_bf16, m->copy_gbs, m->best_f32,
           m->onednn_f32 > m->openblas_f32 ? "oneDNN" : "OpenBLAS", m->best_bf16);
    fflush(stdout);
}

/* --blocks for both benchmarks (layers.csv here, decode.csv in decode.c): a whole name between
 * commas, so that a name never matches part of another ("s4d" is not "s4d2"). */
bool hy_bench_selected(const char *blocks, const char *name) {
    if (!blocks) return true;
    size_t n = strlen(name);
    for (const char *p = blocks; (p = strstr(p, name)); p += n)
        if ((p == blocks || p[-1] == ',') && (p[n] == 0 || p[n] == ',')) return true;
    return false;
}

/* One layers.csv row (the columns of HY_LAYERS_CSV, experiments/csv_schema.h, in order) and its
 * progress line: the rate as a ratio to the best f32 GEMM of this run. */
static void row(hy_strbuf *csv, const char *block, int d, int B, int T, const char *pass, double s, double flop,
                size_t peak, size_t state, const hy_machine_limits *m) {
    double gf = flop / 1e9, rate = gf / s;
    hy_sb_printf(csv, "%s,%d,%d,%d,%s,%.4f,%.6f,%.3f,%zu,%zu,%d,%.3f,%.5f\n", block, d, B, T, pass, s * 1e3, gf, rate,
                 peak, state, hy_threads(), m->best_f32, rate / m->best_f32);
    printf("%-16s T=%-6d %-8s %10.3f ms %9.2f GFLOP/s  %6.3f x best f32 GEMM  peak %8.2f MiB  state %8.2f KiB\n",
           block, T, pass, s * 1e3, rate, rate / m->best_f32, peak / 1048576.0, state / 1024.0);
    fflush(stdout);
}

/* fwd, fwd_bwd and step rows of one block with options `pairs` at one T (B = 1), named `label`
 * in layers.csv. */
static int bench_block_as(hy_strbuf *csv, const hy_block_ops *ops, const char *label, const char *const *pairs,
                          int n_pairs, const hy_bench_options *a, int T, const hy_machine_limits *lim, double secs[2]) {
    int d = a->d_model, B = 1;
    hy_opts o;
    if (hy_block_opts_from_pairs(ops, d, pairs, n_pairs, &o) < 0) return -1;
    hy_layer L;
    if (hy_layer_standalone(&L, ops, &o, d, 1) < 0) return -1;
    size_t n = (size_t)B * T * d;
    float *x = hy_malloc(n * 4), *y = hy_malloc(n * 4), *dy = hy_malloc(n * 4), *dx = hy_malloc(n * 4);
    if (!x || !y || !dy || !dx) return HY_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) x[i] = sinf((float)i * 0.37f), dy[i] = cosf((float)i * 0.11f) * 0.01f;
    double flop = ops->flop(&o, d, T) * B, best;
    size_t state = ops->state_bytes(&o, d, T);
    double min_s = a->quick ? 0.05 : 0.3;
    /* fwd: inference-style, nothing kept for backward */
    L.keep_for_backward = false;
    ops->forward(&L, x, y, B, T);
    size_t base = hy_mem_current();
    hy_mem_reset_peak();
    TIME_BEST(best, min_s, ops->forward(&L, x, y, B, T));
    row(csv, label, d, B, T, "fwd", best, flop, hy_mem_peak() - base, state, lim);
    if (secs) secs[0] = best;
    L.keep_for_backward = true;
    ops->forward(&L, x, y, B, T);
    ops->backward(&L, dy, dx, B, T);
    hy_mem_reset_peak();
    TIME_BEST(best, min_s, {
        ops->forward(&L, x, y, B, T);
        ops->backward(&L, dy, dx, B, T);
    });
    row(csv, label, d, B, T, "fwd_bwd", best, 3 * flop, hy_mem_peak() - base, state, lim);
    if (secs) secs[1] = best;
    /* step: cost of one token at context T (state filled by prefill, or by steps) */
    void *st = NULL;
    int rc = ops->state_new(&L, B, &st);
    if (rc == 0) {
        L.keep_for_backward = false;
        if (ops->prefill) rc = ops->prefill(&L, st, x, y, B, T);
        else
            for (int t = 0; t < T && rc == 0; t++) rc = ops->step(&L, st, x + (size_t)t * d, y, B);
        int steps = 8;
        double t0 = hy_now();
        for (int s = 0; s < steps && rc == 0; s++) rc = ops->step(&L, st, x + (size_t)s * d, y, B);
        double per = (hy_now() - t0) / steps;
        double step_flop = ops->flop(&o, d, T + 1) - ops->flop(&o, d, T);
        if (rc == 0) row(csv, label, d, B, T, "step", per, step_flop, 0, ops->state_bytes(&o, d, T + steps), lim);
        ops->state_free(&L, st);
    }
    hy_free(x), hy_free(y), hy_free(dy), hy_free(dx);
    hy_layer_standalone_free(&L);
    return rc;
}

static int bench_block(hy_strbuf *csv, const hy_block_ops *ops, const hy_bench_options *a, int T,
                       const hy_machine_limits *lim) {
    return bench_block_as(csv, ops, ops->name, NULL, 0, a, T, lim, NULL);
}

/* The moe block (its defaults: 16 experts, top-2) against a dense swiglu with the same ACTIVE
 * parameters per token (d_ff = top_k · the experts' d_ff): the dense rows go to layers.csv as
 * `swiglu_moe_active` (the moe rows come from the loop over all blocks; moe is timed again here
 * for the side-by-side line). The gap is the cost of routing, grouping and smaller GEMMs. */
static void bench_moe_vs_dense(hy_strbuf *csv, const hy_bench_options *a, int T, const hy_machine_limits *lim) {
    const hy_block_ops *moe = hy_block_find("moe"), *sw = hy_block_find("swiglu");
    hy_opts o;
    if (!moe || !sw || hy_block_opts_from_pairs(moe, a->d_model, NULL, 0, &o) < 0) return;
    char ff[48];
    snprintf(ff, sizeof ff, "d_ff=%d", hy_opt_int(&o, 1) * hy_opt_int(&o, 2));   /* top_k · d_ff */
    const char *pairs[] = {ff};
    double tm[2], td[2];
    hy_strbuf scratch = {0};
    int rc = bench_block_as(&scratch, moe, "moe", NULL, 0, a, T, lim, tm);
    hy_sb_free(&scratch);
    if (rc < 0 || bench_block_as(csv, sw, "swiglu_moe_active", pairs, 1, a, T, lim, td) < 0) return;
    printf("moe vs dense T=%-6d moe (E %d, top_k %d, d_ff %d) fwd %.0f tok/s, fwd_bwd %.0f tok/s; swiglu %s "
           "fwd %.0f tok/s, fwd_bwd %.0f tok/s; moe/dense %.2f, %.2f\n", T, hy_opt_int(&o, 0), hy_opt_int(&o, 1),
           hy_opt_int(&o, 2), T / tm[0], T / tm[1], ff, T / td[0], T / td[1], td[0] / tm[0], td[1] / tm[1]);
}

/* The naive attention path's forward memory (materialised T x T scores), up to where it fits. */
static void bench_naive_attention(hy_strbuf *csv, const hy_bench_options *a, int T, const hy_machine_limits *lim) {
    const hy_block_ops *ops = hy_block_find("attention");
    int d = a->d_model;
    hy_opts o;
    if (hy_block_opts_from_pairs(ops, d, NULL, 0, &o) < 0) return;
    double scores = 4.0 * T * (double)T * hy_opt_int(&o, 0);
    if (scores > 4.0 * (1u << 30)) {
        printf("%-16s T=%-6d skipped: %.1f GiB of scores would not fit comfortably\n", "attention_naive", T,
               scores / (1u << 30));
        return;
    }
    hy_layer L;
    if (hy_layer_standalone(&L, ops, &o, d, 1) < 0) return;
    size_t n = (size_t)T * d;
    float *x = hy_malloc(n * 4), *y = hy_malloc(n * 4);
    for (size_t i = 0; i < n; i++) x[i] = sinf((float)i * 0.37f);
    L.keep_for_backward = false;
    size_t base = hy_mem_current();
    hy_mem_reset_peak();
    double best;
    TIME_BEST(best, a->quick ? 0.02 : 0.1, hy_attention_forward_naive(&L, x, y, 1, T));
    row(csv, "attention_naive", d, 1, T, "fwd", best, ops->flop(&o, d, T), hy_mem_peak() - base, 0, lim);
    hy_free(x), hy_free(y);
    hy_layer_standalone_free(&L);
}

/* One training step of the nanoGPT CPU shape: 4 layers, d 128, 4 heads, T 64, batch 12, with its
 * model FLOPs (3 x the forward's, backward counted as twice the forward) as a ratio to the best
 * f32 GEMM. */
static void bench_nanogpt_step(const hy_machine_limits *lim) {
    const hy_block_ops *att = hy_block_find("attention"), *mlp = hy_block_find("swiglu");
    const char *ap[] = {"n_heads=4"};
    hy_model_config cfg = {.d_model = 128, .vocab_size = 256, .n_layers = 4, .tie_embeddings = true};
    hy_layer_cfg layers[4];
    cfg.layers = layers;
    for (int i = 0; i < 4; i++) {
        layers[i].mixer.ops = att, layers[i].ffn.ops = mlp;
        hy_block_opts_from_pairs(att, 128, ap, 1, &layers[i].mixer.opts);
        hy_block_opts_from_pairs(mlp, 128, NULL, 0, &layers[i].ffn.opts);
    }
    hy_model *m;
    if (hy_model_create(&cfg, 1, &m) < 0) return;
    hy_optim opt = {.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
    hy_optim_init(&opt, m, HY_OPTIM_ADAMW);
    int B = 12, T = 64;
    int32_t in[12 * 64], tg[12 * 64];
    for (int i = 0; i < B * T; i++) in[i] = (i * 7) % 256, tg[i] = (i * 7 + 3) % 256;
    double best;
    TIME_BEST(best, 1.0, {   /* the trainer's step: forward, zero, backward, clip to 1, AdamW */
        hy_loss l;
        double norm;
        hy_optim_train_step(&opt, m, 1.0, in, tg, B, T, 1e-3, &l, &norm);
    });
    double gflops = 3.0 * hy_model_flop_per_token(m, T) * B * T / best / 1e9;
    printf("training step, nanoGPT CPU shape (4 layers, d 128, 4 heads, swiglu, T 64, batch 12): %.2f ms, %.0f tokens/s, "
           "%.1f GFLOP/s in model FLOPs = %.3f x best f32 GEMM\n", best * 1e3, B * T / best, gflops, gflops / lim->best_f32);
    hy_optim_free(&opt);
    hy_model_free(m);
}

/* The Mamba selective scan alone (E 512, N 16, T 1024, B 1, the reference shape): forward,
 * forward keeping the chunk states, chunked backward; its streamed bytes (Δ, x, y, dy... once each)
 * as a ratio to the copy bandwidth measured above: the scan is exp/latency-bound, not GEMM-bound. */
static void bench_mamba_scan(const hy_machine_limits *lim, int quick) {
    double bw = lim->copy_gbs;
    enum { E = 512, N = 16, T = 1024 };
    size_t nE = (size_t)T * E;
    float *delta = hy_malloc(nE * 4), *x = hy_malloc(nE * 4), *bc = hy_malloc((size_t)T * 2 * N * 4),
          *A = hy_malloc((size_t)E * N * 4), *D = hy_malloc(E * 4), *y = hy_malloc(nE * 4), *dy = hy_malloc(nE * 4),
          *dd = hy_malloc(nE * 4), *dx = hy_malloc(nE * 4), *dbc = hy_malloc((size_t)T * 2 * N * 4),
          *dA = hy_calloc((size_t)E * N * 4), *dD = hy_calloc(E * 4),
          *cs = hy_malloc(hy_mamba_chunk_floats(1, T, E, N, HY_MAMBA_CHUNK) * 4);
    if (!delta || !x || !bc || !A || !D || !y || !dy || !dd || !dx || !dbc || !dA || !dD || !cs) return;
    for (size_t i = 0; i < nE; i++)
        delta[i] = 0.01f + 0.05f * (1 + sinf((float)i * 0.13f)), x[i] = sinf((float)i * 0.37f), dy[i] = cosf((float)i * 0.11f);
    for (int i = 0; i < T * 2 * N; i++) bc[i] = cosf((float)i * 0.7f);
    for (int i = 0; i < E * N; i++) A[i] = -(float)(i % N + 1);
    for (int i = 0; i < E; i++) D[i] = 1;
    hy_mamba_scan_args a = {1, T, E, N, delta, x, bc, bc + N, 2 * N, A, D, NULL, NULL, HY_MAMBA_CHUNK, NULL, false};
    double fwd, fwd_keep, bwd, min_s = quick ? 0.05 : 0.3;
    TIME_BEST(fwd, min_s, hy_mamba_scan_forward(&a, y));
    a.chunk_states = cs;
    TIME_BEST(fwd_keep, min_s, hy_mamba_scan_forward(&a, y));
    hy_buf ws = {0};
    TIME_BEST(bwd, min_s, hy_mamba_scan_backward(&a, dy, dd, dx, dbc, dbc + N, 2 * N, dA, dD, &ws));
    hy_buf_free(&ws);
    double upd = (double)T * E * N, fbytes = 3.0 * nE * 4, bbytes = 6.0 * nE * 4;   /* fwd: Δ, x, y; bwd: Δ, x, dy, dΔ, dx, again Δ, x */
    printf("mamba scan E %d N %d T %d: fwd %.3f ms (%.2f ns/update, %.1f GB/s = %.3f x memory copy), "
           "fwd+chunk states %.3f ms, bwd %.3f ms (%.2f x fwd, %.1f GB/s = %.3f x memory copy)\n",
           E, N, T, fwd * 1e3, fwd / upd * 1e9, fbytes / fwd / 1e9, fbytes / fwd / 1e9 / bw, fwd_keep * 1e3, bwd * 1e3,
           bwd / fwd, bbytes / bwd / 1e9, bbytes / bwd / 1e9 / bw);
    /* the same scan as the block runs it under bf16 precision (the coarse exp) */
    a.coarse_exp = true, a.chunk_states = NULL;
    double cfwd, cbwd;
    TIME_BEST(cfwd, min_s, hy_mamba_scan_forward(&a, y));
    a.chunk_states = cs;
    hy_mamba_scan_forward(&a, y);
    hy_buf wc = {0};
    TIME_BEST(cbwd, min_s, hy_mamba_scan_backward(&a, dy, dd, dx, dbc, dbc + N, 2 * N, dA, dD, &wc));
    hy_buf_free(&wc);
    printf("mamba scan E %d N %d T %d under bf16 (coarse exp): fwd %.3f ms (%.2f x the f32 scan's), bwd %.3f ms "
           "(%.2f x; %.2f x its fwd)\n",
           E, N, T, cfwd * 1e3, cfwd / fwd, cbwd * 1e3, cbwd / bwd, cbwd / cfwd);
    hy_free(delta), hy_free(x), hy_free(bc), hy_free(A), hy_free(D), hy_free(y), hy_free(dy), hy_free(dd);
    hy_free(dx), hy_free(dbc), hy_free(dA), hy_free(dD), hy_free(cs);
}

int hy_bench_cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static const char *BENCH_HELP =
    "usage: hybrid-exp bench [--out DIR] [--quick] [--threads N] [--blocks a,b] [--d-model D] [--min-T T] [--max-T T] [--gemm]\n"
    "                        [--precision]\n"
    "Measures the machine's GEMM rates (OpenBLAS and oneDNN, f32 and bf16, 2048^3) and memory bandwidth, then\n"
    "every block's fwd, fwd_bwd and step time and memory at T = 64, 128, ... (--min-T, doubling; default up to\n"
    "16384; --quick: up to 1024), d_model 256, batch 1. Every rate is printed as a ratio to the best f32 GEMM\n"
    "of the same run.\n"
    "Writes DIR/layers.csv (default DIR: results/bench). --gemm also prints OpenBLAS vs oneDNN on LM shapes.\n"
    "--precision also times training steps of configs/precision.yaml's models (the mamba stack when mamba is\n"
    "selected, the transformer when attention is), f32 and bf16 steps by turns in this process, and prints the\n"
    "bf16 speed-up and where each precision's step time went (--quick: 3 rounds, else 7; about 20 s for both).\n"
    "A benchmark, not a test: nothing here fails on a time.\n"
    "`hybrid-exp bench decode --help`: decode latency and state size against context (decode.csv).\n"
    "`hybrid-exp bench allreduce --help`: allreduce time against message size under mpirun (allreduce.csv).\n";

/* Prints a usage error of `bench` (the recorded message, then help if given) and returns 2. */
static int bench_usage(const char *help) {
    fprintf(stderr, "hybrid-exp bench: %s\n%s%s", hy_last_error(), help ? "\n" : "", help ? help : "");
    return 2;
}

int hy_bench_main(int argc, char **argv) {
    hy_bench_options a = {.out_dir = "results/bench", .d_model = 256, .min_T = 64, .max_T = 16384};
    if (argc > 1 && !strcmp(argv[1], "decode")) return hy_bench_decode_main(argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "allreduce")) return hy_bench_allreduce_main(argc - 1, argv + 1);
    enum { B_OUT = 256, B_QUICK, B_THREADS, B_BLOCKS, B_D_MODEL, B_MAX_T, B_MIN_T, B_GEMM, B_PRECISION };
    static const struct option opts[] = {
        {"out", required_argument, NULL, B_OUT},         {"quick", no_argument, NULL, B_QUICK},
        {"threads", required_argument, NULL, B_THREADS}, {"blocks", required_argument, NULL, B_BLOCKS},
        {"d-model", required_argument, NULL, B_D_MODEL}, {"max-T", required_argument, NULL, B_MAX_T},
        {"min-T", required_argument, NULL, B_MIN_T},     {"gemm", no_argument, NULL, B_GEMM},
        {"precision", no_argument, NULL, B_PRECISION},
        {"help", no_argument, NULL, 'h'},                {NULL, 0, NULL, 0}};
    hy_args w;
    hy_args_init(&w, argc, argv, "h", opts);
    const char *v;
    bool max_set = false;
    for (int c; (c = hy_args_next(&w, &v)) != HY_ARG_END;) {
        long x = 0;
        int rc = 0;
        switch (c) {
        case 'h': fputs(BENCH_HELP, stdout); return 0;
        case B_OUT: a.out_dir = v; break;
        case B_QUICK: a.quick = true; break;
        case B_GEMM: a.gemm_table = true; break;
        case B_PRECISION: a.precision_step = true; break;
        case B_BLOCKS: a.blocks = v; break;
        case B_THREADS: rc = hy_arg_long("--threads", v, 0, 4096, &x), a.threads = (int)x; break;
        case B_D_MODEL: rc = hy_arg_long("--d-model", v, 1, 65536, &x), a.d_model = (int)x; break;
        case B_MIN_T: rc = hy_arg_long("--min-T", v, 1, 1 << 24, &x), a.min_T = (int)x; break;
        case B_MAX_T: rc = hy_arg_long("--max-T", v, 1, 1 << 24, &x), a.max_T = (int)x, max_set = true; break;
        case HY_ARG_POSITIONAL: hy_fail_code(HY_ERR_CONFIG, "unexpected argument '%s'", v); return bench_usage(BENCH_HELP);
        default: return bench_usage(BENCH_HELP);
        }
        if (rc < 0) return bench_usage(NULL);
    }
    if (a.quick && !max_set) a.max_T = 1024;
    if (a.min_T > a.max_T) {
        hy_fail_code(HY_ERR_CONFIG, "--min-T %d is above --max-T %d", a.min_T, a.max_T);
        return bench_usage(NULL);
    }
    return hy_bench_run(&a);
}

/* Runs the benchmark from typed options: the CLI (hy_bench_main) and the experiment runner
 * (sweep.c, through hy_exp_opts.bench) both end here. */
int hy_bench_run(const hy_bench_options *o) {
    hy_set_threads(o->threads);
    printf("threads %d\n", hy_threads());
    hy_machine_limits lim;
    hy_bench_machine_limits(&lim);
    if (o->gemm_table) {
        printf("GEMM on LM shapes, GFLOP/s (C[M,N] = A[M,K] B[N,K]^T):\n%6s %6s %6s %10s %10s %10s  auto\n", "M", "N",
               "K", "openblas", "onednn", "bf16");
        static const int shapes[][3] = {{4096, 256, 256}, {4096, 768, 256}, {4096, 256, 768}, {4096, 1024, 1024},
                                        {4096, 256, 1024}, {4096, 1024, 256}, {768, 64, 64},  {64, 64, 64},
                                        {256, 256, 4096}, {12, 256, 128},   {768, 128, 128}, {768, 384, 128}};
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
            int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            printf("%6d %6d %6d %10.1f %10.1f %10.1f  %s\n", M, N, K, gemm_gflops(HY_GEMM_OPENBLAS, HY_PREC_F32, M, N, K),
                   gemm_gflops(HY_GEMM_ONEDNN, HY_PREC_F32, M, N, K), gemm_gflops(HY_GEMM_ONEDNN, HY_PREC_BF16, M, N, K),
                   hy_gemm_backend_name(hy_gemm_auto_choice(M, N, K)));
        }
    }
    hy_strbuf csv = {0};
    hy_sb_add(&csv, hy_csv_LAYERS.header);
    for (int i = 0; i < hy_block_count(); i++) {
        const hy_block_ops *ops = hy_block_at(i);
        if (!hy_bench_selected(o->blocks, ops->name)) continue;
        hy_opts probe;   /* default options that do not fit this d_model: say so, bench the others */
        if (hy_block_opts_from_pairs(ops, o->d_model, NULL, 0, &probe) < 0) {
            printf("%-16s skipped at d_model %d: %s\n", ops->name, o->d_model, hy_last_error());
            continue;
        }
        for (int T = o->min_T; T <= o->max_T; T *= 2)
            if (bench_block(&csv, ops, o, T, &lim) < 0) {
                fprintf(stderr, "hybrid-exp bench: %s at T=%d: %s\n", ops->name, T, hy_last_error());
                hy_sb_free(&csv);
                return 1;
            }
    }
    if (hy_bench_selected(o->blocks, "mamba")) bench_mamba_scan(&lim, o->quick);
    if (hy_bench_selected(o->blocks, "attention"))
        for (int T = o->min_T; T <= o->max_T; T *= 2) bench_naive_attention(&csv, o, T, &lim);
    if (hy_bench_selected(o->blocks, "rwkv7")) hy_bench_wkv7_line(&lim, o->quick);
    if (hy_bench_selected(o->blocks, "mamba2")) hy_bench_ssd_line(&lim, o->quick);
    if (hy_bench_selected(o->blocks, "gated_deltanet")) hy_bench_gdn_line(&lim, o->quick);
    if (hy_bench_selected(o->blocks, "moe"))
        for (int T = o->min_T; T <= o->max_T; T *= 2) bench_moe_vs_dense(&csv, o, T, &lim);
    bench_nanogpt_step(&lim);
    if (o->precision_step && hy_bench_precision_lines(&lim, o->blocks, o->quick ? 3 : 7) < 0) {
        fprintf(stderr, "hybrid-exp bench --precision: %s\n", hy_last_error());
        hy_sb_free(&csv);
        return 1;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", o->out_dir, hy_csv_LAYERS.file);
    int rc = hy_mkdirs(o->out_dir);
    if (rc == 0) rc = hy_sb_write_file(&csv, path);
    hy_sb_free(&csv);
    if (rc < 0) {
        fprintf(stderr, "hybrid-exp bench: %s\n", hy_last_error());
        return 1;
    }
    printf("wrote %s\n", path);
    return 0;
}

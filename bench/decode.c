/* `hybrid-exp bench decode`: per-token decode latency and state size against context length, for
 * every registered mixer (in a small fixed stack with swiglu ffns), every other ffn (behind an
 * attention mixer), and any model configs or checkpoints given. The context is reached by the
 * multi-token prefill (the parallel kernels, in chunks), growing one state through 256, 512, ...
 * so the longest context costs one prefill in total; at each length a few decode steps are timed.
 * Each time is also given as a ratio to the time the machine takes to read the state once at its
 * memory copy rate (measured at the start, bench.c's hy_bench_copy_gbs): a decode step that reads
 * a KV cache at the memory rate is near 1. Per variant, the last context's time over the first's
 * says how flat the per-token cost is. Writes decode.csv (variant, context, ms_per_token,
 * state_bytes, state_read_ratio), decode.md and a log-log plot (decode.png, decode.svg, via gnuplot)
 * into the output folder. A benchmark: nothing fails on a time. */
#include "bench/bench.h"
#include "core/args.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "core/rng.h"
#include "core/strbuf.h"
#include "core/timer.h"
#include "experiments/config.h"
#include "experiments/csv_schema.h"
#include "experiments/experiment.h"
#include "models/checkpoint.h"
#include "models/model.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *out_dir, *blocks;
    int quick, threads, d_model, n_layers, steps, plot, tile, rounds;   /* rounds: 0 = the default of --fill */
    long min_ctx, max_ctx;
    double budget_s;   /* per variant: no longer context once this much time was spent (0 = none) */
    double copy_gbs;   /* the machine's copy bandwidth, measured at the start */
    const char *configs[32], *checkpoints[32];
    int n_configs, n_checkpoints;
} decode_args;

/* n_layers x (mixer, ffn) at d_model, every option at its default, vocabulary of bytes. */
static int generic_config(const decode_args *a, const hy_block_ops *mixer, const hy_block_ops *ffn, hy_model_config *c) {
    hy_layer_cfg *layers = calloc((size_t)a->n_layers, sizeof *layers);
    if (!layers) return HY_ERR_NOMEM;
    *c = (hy_model_config){.d_model = a->d_model, .vocab_size = 256, .n_layers = a->n_layers, .tie_embeddings = true,
                           .router_aux_coef = 0.001f, .layers = layers};
    for (int i = 0; i < a->n_layers; i++) {
        layers[i].mixer.ops = mixer, layers[i].ffn.ops = ffn;
        if (hy_block_opts_from_pairs(mixer, a->d_model, NULL, 0, &layers[i].mixer.opts) < 0 ||
            hy_block_opts_from_pairs(ffn, a->d_model, NULL, 0, &layers[i].ffn.opts) < 0) {
            free(layers);
            c->layers = NULL;
            return HY_ERR_CONFIG;
        }
    }
    return 0;
}

/* --fill tile: a state at position ctx made from `base` (position p0) by repeating each state
 * tensor's position axis (the axis that is 0 in a fresh state and p0 in base, e.g. attention's
 * k/v) up to ctx, through the registry's state_export/state_import. The content repeats, the cost
 * of a decode step is the same as after a real context (attention reads every cached key either
 * way; recurrent states have no position axis and are copied as they are). Returns HY_ERR (no
 * message) when a block cannot be tiled: the caller then prefills. */
static int tiled_state(hy_model *m, hy_model_state *base, long ctx, hy_model_state **out) {
    long p0 = hy_model_state_position(base);
    hy_model_state *st;
    int rc = hy_model_state_new(m, base->B, &st);
    if (rc < 0) return rc;
    for (int s = 0; rc == 0 && s < 2 * m->cfg.n_layers; s++) {
        hy_layer *L = hy_model_sub_block(m, s);
        if (!L->ops || !base->block_state[s]) continue;
        if (!L->ops->state_tensors || !L->ops->state_import) {
            rc = HY_ERR;
            break;
        }
        int n = L->ops->state_tensors(L, base->block_state[s], NULL);
        if (n < 0 || n > 16 || L->ops->state_tensors(L, st->block_state[s], NULL) != n) {
            rc = HY_ERR;
            break;
        }
        hy_state_tensor t0[16], t1[16], tn[16];
        float *old[16] = {0}, *data[16] = {0};
        L->ops->state_tensors(L, st->block_state[s], t0);
        L->ops->state_tensors(L, base->block_state[s], t1);
        for (int i = 0; rc == 0 && i < n; i++) {
            int axis = -1;
            tn[i] = t1[i];
            for (int d = 0; d < t1[i].ndim; d++)
                if (t1[i].shape[d] != t0[i].shape[d]) {
                    if (axis >= 0 || t0[i].shape[d] != 0 || t1[i].shape[d] != p0) rc = HY_ERR;
                    axis = d;
                }
            if (rc < 0) break;
            if (axis >= 0) tn[i].shape[axis] = (int)ctx;
            old[i] = hy_malloc(hy_state_tensor_numel(&t1[i]) * sizeof(float) + 4);
            data[i] = hy_malloc(hy_state_tensor_numel(&tn[i]) * sizeof(float) + 4);
            if (!old[i] || !data[i] || (rc = L->ops->state_export(L, base->block_state[s], i, old[i])) < 0) {
                rc = rc < 0 ? rc : HY_ERR_NOMEM;
                break;
            }
            size_t outer = 1, inner = 1;
            for (int d = 0; d < tn[i].ndim; d++)
                if (axis >= 0 && d < axis) outer *= (size_t)tn[i].shape[d];
                else if (axis >= 0 && d > axis) inner *= (size_t)tn[i].shape[d];
            if (axis < 0) memcpy(data[i], old[i], hy_state_tensor_numel(&t1[i]) * sizeof(float));
            else
                for (size_t o = 0; o < outer; o++)
                    for (long j = 0; j < ctx; j++)
                        memcpy(data[i] + (o * ctx + j) * inner, old[i] + (o * p0 + j % p0) * inner, inner * sizeof(float));
        }
        if (rc == 0) rc = L->ops->state_import(L, st->block_state[s], n, tn, (const float *const *)data);
        for (int i = 0; i < n; i++) hy_free(old[i]), hy_free(data[i]);
    }
    if (rc < 0) {
        hy_model_state_free(m, st);
        return rc;
    }
    memcpy(st->logits, base->logits, sizeof(float) * (size_t)base->B * m->cfg.vocab_size);
    st->have_logits = base->have_logits;
    st->pos = ctx;
    *out = st;
    return 0;
}

/* Time of one step over the time of reading `state` bytes at the copy bandwidth. */
static double state_read_ratio(const decode_args *a, double ms, size_t state) {
    return a->copy_gbs > 0 ? ms * 1e-3 / ((double)state / (a->copy_gbs * 1e9)) : NAN;
}

/* Times `a->steps` decode steps of `run` (after one untimed step, which may grow a KV cache) and
 * stores the fastest in *ms: robust to a shared machine, as bench.c's TIME_BEST. */
static int time_steps(const decode_args *a, hy_model *m, hy_model_state *run, hy_rng *rng, double *dt, double *ms) {
    int V = hy_model_get_config(m)->vocab_size, rc = 0;
    for (int s = -1; s < a->steps && rc == 0; s++) {
        int32_t x = (int32_t)hy_rng_below(rng, (uint64_t)V);
        double s0 = hy_now();
        rc = hy_model_step(m, run, &x, NULL);
        if (s >= 0) dt[s] = hy_now() - s0;
    }
    if (rc < 0) return rc;
    qsort(dt, (size_t)a->steps, sizeof *dt, hy_bench_cmp_double);
    *ms = 1e3 * dt[0];
    return 0;
}

enum { MAX_CONTEXTS = 40 };   /* doublings from 1 to 2^30 and more */

/* One variant: grows a state through the contexts, timing `steps` decode steps at each and keeping
 * the fastest. With --fill tile and --rounds R > 1 the whole sweep is measured R times (rounds after
 * the first tile every context's state from the first context's again) and each context keeps its
 * fastest step over all rounds, so that a slow spell of the machine during one context's steps does
 * not decide its time. Rows go to csv, the variant's line (first and last context) to summary (a
 * decode.md table row). */
static int bench_variant(const decode_args *a, const char *variant, hy_model *m, hy_strbuf *csv, hy_strbuf *summary) {
    int V = hy_model_get_config(m)->vocab_size;
    hy_model_state *st;
    int rc = hy_model_state_new(m, 1, &st);
    if (rc < 0) return rc;
    size_t chunk = (size_t)a->max_ctx;
    int32_t *tok = hy_malloc(sizeof(int32_t) * chunk);
    double *dt = hy_malloc(sizeof(double) * (size_t)a->steps);
    if (!tok || !dt) rc = HY_ERR_NOMEM;
    hy_rng rng;
    hy_rng_seed(&rng, 7);
    double start = hy_now();
    hy_model_state *base = NULL;   /* --fill tile: the state of the first context */
    long ctxs[MAX_CONTEXTS];       /* the contexts measured, their fastest step and state bytes */
    double best[MAX_CONTEXTS];
    size_t states[MAX_CONTEXTS];
    int n = 0;
    for (long ctx = a->min_ctx; rc == 0 && ctx <= a->max_ctx && n < MAX_CONTEXTS; ctx *= 2) {
        if (a->budget_s > 0 && hy_now() - start > a->budget_s) {
            printf("%-28s stopped before context %ld: --budget %g s spent\n", variant, ctx, a->budget_s);
            break;
        }
        hy_model_state *run = st;
        long need = ctx - hy_model_state_position(st);
        double t0 = hy_now();
        if (base) {
            int trc = tiled_state(m, base, ctx, &run);
            if (trc == HY_ERR_NOMEM) {
                rc = trc;
                break;
            }
            if (trc < 0) {   /* a block without state ops: prefill from here on */
                printf("%-28s cannot tile this state (a block lacks the state ops): prefilling\n", variant);
                hy_model_state_free(m, base);
                base = NULL, run = st, need = ctx - hy_model_state_position(st);
            } else need = 0;
        }
        if (need > 0) {
            for (long i = 0; i < need; i++) tok[i] = (int32_t)hy_rng_below(&rng, (uint64_t)V);
            if ((rc = hy_model_prefill(m, st, tok, (int)need, NULL, false)) < 0) break;
        }
        if (a->tile && !base && ctx == a->min_ctx) {   /* keep the first state to tile from */
            if ((rc = tiled_state(m, st, ctx, &base)) == HY_ERR_NOMEM) break;
            rc = 0;
        }
        double prefill_s = hy_now() - t0, ms = 0;
        size_t state = hy_model_state_bytes(m, (int)hy_model_state_position(run));
        rc = time_steps(a, m, run, &rng, dt, &ms);
        if (run != st) hy_model_state_free(m, run);
        if (rc < 0) break;
        ctxs[n] = ctx, best[n] = ms, states[n] = state, n++;
        double ratio = state_read_ratio(a, ms, state);
        if (need > 0 || !base)
            printf("%-28s context %6ld  %9.4f ms/token  state %10.1f KiB  %7.2f x state/copy  (prefill of %ld tokens: "
                   "%.0f tokens/s)\n", variant, ctx, ms, state / 1024.0, ratio, need,
                   need > 0 ? need / fmax(prefill_s, 1e-9) : 0.0);
        else
            printf("%-28s context %6ld  %9.4f ms/token  state %10.1f KiB  %7.2f x state/copy  (tiled state built in "
                   "%.2f s)\n", variant, ctx, ms, state / 1024.0, ratio, prefill_s);
        fflush(stdout);
    }
    /* Later rounds: every context again from a tiled state (the first round's budget bounds them). */
    for (int round = 2; rc == 0 && base && round <= a->rounds; round++)
        for (int i = 0; rc == 0 && i < n; i++) {
            hy_model_state *run;
            double ms = 0;
            if ((rc = tiled_state(m, base, ctxs[i], &run)) < 0) break;
            rc = time_steps(a, m, run, &rng, dt, &ms);
            hy_model_state_free(m, run);
            if (rc < 0) break;
            printf("%-28s context %6ld  %9.4f ms/token  (round %d; fastest so far %.4f)\n", variant, ctxs[i], ms, round,
                   fmin(ms, best[i]));
            fflush(stdout);
            best[i] = fmin(best[i], ms);
        }
    if (rc == 0 && n > 0) {
        for (int i = 0; i < n; i++)
            hy_sb_printf(csv, "%s,%ld,%.6f,%zu,%.6g\n", variant, ctxs[i], best[i], states[i],
                         state_read_ratio(a, best[i], states[i]));
        double ratio1 = state_read_ratio(a, best[n - 1], states[n - 1]);
        printf("%-28s context %ld -> %ld: ms/token x %.2f (flat = 1); at %ld: %.2f x (state bytes / memory copy)\n",
               variant, ctxs[0], ctxs[n - 1], best[n - 1] / best[0], ctxs[n - 1], ratio1);
        hy_sb_printf(summary, "| %s | %ld | %.4f | %ld | %.4f | %.2f | %.2f |\n", variant, ctxs[0], best[0], ctxs[n - 1],
                     best[n - 1], best[n - 1] / best[0], ratio1);
    }
    hy_free(tok), hy_free(dt);
    hy_model_state_free(m, base);
    hy_model_state_free(m, st);
    return rc;
}

/* Variant names are CSV values: no spaces or commas (anything else becomes '_'). */
static void clean_name(char *s) {
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || strchr("+-_.", *s)))
            *s = '_';
}

/* decode.gp: two log-log panels (ms per token, state bytes) with one line per variant; gnuplot
 * renders it to PNG and SVG. Missing gnuplot is a warning, not a failure (the CSV is the result). */
static int write_plot(const decode_args *a, char names[][128], int n) {
    hy_strbuf gp = {0};
    hy_sb_printf(&gp, "# written by hybrid-exp bench decode; run: gnuplot decode.gp\n"
                 "set datafile separator ','\nset logscale xy 2\nset logscale y 10\nset grid\n"
                 "set key left top\nset xlabel 'context (tokens)'\nVARIANTS = \"");
    for (int i = 0; i < n; i++) hy_sb_printf(&gp, "%s%s", i ? " " : "", names[i]);
    hy_sb_printf(&gp, "\"\n");
    const char *terms[2][2] = {{"pngcairo size 1400,520 font ',10'", "decode.png"}, {"svg size 1400,520", "decode.svg"}};
    /* gnuplot's 1-based columns of decode.csv: x = context, y = ms_per_token or state_bytes */
    const int cv = HY_DECODE_variant + 1, cx = HY_DECODE_context + 1, cms = HY_DECODE_ms_per_token + 1,
              cst = HY_DECODE_state_bytes + 1;
    for (int k = 0; k < 2; k++)
        hy_sb_printf(&gp,
                "set terminal %s\nset output '%s'\nset multiplot layout 1,2 title 'decode: one token at a given context "
                "(batch 1, threads: %d)'\n"
                "set ylabel 'ms per token'\nplot for [v in VARIANTS] '%s' using (strcol(%d) eq v ? $%d : NaN):%d "
                "with linespoints title v\n"
                "set ylabel 'state / KV cache bytes'\nplot for [v in VARIANTS] '%s' using (strcol(%d) eq v ? $%d : "
                "NaN):%d with linespoints title v\nunset multiplot\nset output\n",
                terms[k][0], terms[k][1], hy_threads(), hy_csv_DECODE.file, cv, cx, cms, hy_csv_DECODE.file, cv, cx,
                cst);
    char path[4200];
    snprintf(path, sizeof path, "%s/decode.gp", a->out_dir);
    int rc = hy_sb_write_file(&gp, path);
    hy_sb_free(&gp);
    if (rc < 0 || !a->plot) return rc;
    if (strchr(a->out_dir, '\'')) return hy_fail("output folder '%s' contains a quote: not running gnuplot", a->out_dir);
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "cd '%s' && gnuplot decode.gp 2>&1", a->out_dir);
    if (system(cmd) != 0) fprintf(stderr, "hybrid-exp bench decode: warning: gnuplot failed (is gnuplot installed?); "
                                          "decode.csv is complete\n");
    else printf("wrote %s/decode.png and decode.svg\n", a->out_dir);
    return 0;
}

static const char *DECODE_HELP =
    "usage: hybrid-exp bench decode [--out DIR] [--quick] [--config F.yaml]... [--checkpoint M.safetensors]...\n"
    "                               [--blocks a,b] [--min-context N] [--max-context N] [--steps N]\n"
    "                               [--d-model D] [--n-layers L] [--threads N] [--budget S] [--fill prefill|tile]\n"
    "                               [--rounds R] [--no-plot]\n"
    "Per-token decode latency and state / KV-cache bytes at contexts 256, 512, ... 65536 (batch 1) for every\n"
    "registered mixer (L layers of mixer + swiglu at d_model D, defaults 2 and 256), every other ffn (behind\n"
    "attention), and each given config or checkpoint. Each context is reached by prefill through the\n"
    "parallel kernels (one growing state), then --steps decode steps are timed (the fastest is reported; default 8).\n"
    "Each time is also given as state/copy: ms/token over the time to read the state once at the memory copy\n"
    "rate measured at the start (a step that reads its KV cache at the memory rate is near 1); each variant\n"
    "ends with its last context's time over its first's (flat = 1).\n"
    "Writes DIR/decode.csv (variant, context, ms_per_token, state_bytes, state_read_ratio), DIR/decode.md,\n"
    "DIR/decode.gp and DIR/decode.png, DIR/decode.svg (log-log, gnuplot). Default DIR: results/bench.\n"
    "--quick: contexts 256 ... 2048, d_model 64, 4 steps (CI-sized). --blocks selects generic variants by\n"
    "block name. --budget S: a variant stops growing its context once S seconds were spent on it (attention's\n"
    "prefill to 65536 is quadratic: minutes on 2 cores). --fill tile: prefill the first context only and\n"
    "build the longer ones by repeating each state tensor's position axis (attention's k/v) through the\n"
    "registry's state ops: the same step cost, no quadratic prefill (blocks without state ops: prefill).\n"
    "--rounds R (--fill tile only; default 2 there): measure the whole sweep R times, rebuilding every context\n"
    "by tiling, and report each context's fastest step over all rounds (a slow spell of the machine during one\n"
    "context's steps then does not decide its time).\n"
    "A benchmark, not a test: nothing here fails on a time.\n";

/* Prints a usage error of `bench decode` (the recorded message, then help if given) and returns 2. */
static int decode_usage(const char *help) {
    fprintf(stderr, "hybrid-exp bench decode: %s\n%s%s", hy_last_error(), help ? "\n" : "", help ? help : "");
    return 2;
}

enum { D_OUT = 256, D_BLOCKS, D_CONFIG, D_CHECKPOINT, D_MIN_CONTEXT, D_MAX_CONTEXT, D_STEPS, D_D_MODEL, D_N_LAYERS,
       D_THREADS, D_BUDGET, D_FILL, D_ROUNDS, D_QUICK, D_NO_PLOT };
static const struct option DECODE_OPTS[] = {
    {"out", required_argument, NULL, D_OUT},                 {"blocks", required_argument, NULL, D_BLOCKS},
    {"config", required_argument, NULL, D_CONFIG},           {"checkpoint", required_argument, NULL, D_CHECKPOINT},
    {"min-context", required_argument, NULL, D_MIN_CONTEXT}, {"max-context", required_argument, NULL, D_MAX_CONTEXT},
    {"steps", required_argument, NULL, D_STEPS},             {"d-model", required_argument, NULL, D_D_MODEL},
    {"n-layers", required_argument, NULL, D_N_LAYERS},       {"threads", required_argument, NULL, D_THREADS},
    {"budget", required_argument, NULL, D_BUDGET},           {"fill", required_argument, NULL, D_FILL},
    {"rounds", required_argument, NULL, D_ROUNDS},
    {"quick", no_argument, NULL, D_QUICK},                   {"no-plot", no_argument, NULL, D_NO_PLOT},
    {"help", no_argument, NULL, 'h'},                        {NULL, 0, NULL, 0}};

/* Parses the argv of `bench decode` (argv[0]: "decode") into a. Returns 0 to go on, 1 after
 * --help (printed), 2 after a usage error (printed). */
static int parse_args(int argc, char **argv, decode_args *a) {
    int d_set = 0, max_set = 0, steps_set = 0;
    hy_args w;
    hy_args_init(&w, argc, argv, "h", DECODE_OPTS);
    const char *v;
    for (int c; (c = hy_args_next(&w, &v)) != HY_ARG_END;) {
        long x = 0;
        int rc = 0;
        switch (c) {
        case 'h': fputs(DECODE_HELP, stdout); return 1;
        case D_QUICK: a->quick = 1; break;
        case D_NO_PLOT: a->plot = 0; break;
        case D_OUT: a->out_dir = v; break;
        case D_BLOCKS: a->blocks = v; break;
        case D_FILL:
            if (strcmp(v, "prefill") && strcmp(v, "tile"))
                rc = hy_fail_code(HY_ERR_CONFIG, "--fill: expected prefill or tile, got '%s'", v);
            a->tile = !strcmp(v, "tile");
            break;
        case D_CONFIG:
        case D_CHECKPOINT: {
            bool cfg = c == D_CONFIG;
            int *n = cfg ? &a->n_configs : &a->n_checkpoints;
            if (*n == 32) rc = hy_fail_code(HY_ERR_CONFIG, "%s: at most 32", cfg ? "--config" : "--checkpoint");
            else (cfg ? a->configs : a->checkpoints)[(*n)++] = v;
            break;
        }
        case D_MIN_CONTEXT: rc = hy_arg_long("--min-context", v, 1, 1L << 30, &a->min_ctx); break;
        case D_MAX_CONTEXT: rc = hy_arg_long("--max-context", v, 1, 1L << 30, &a->max_ctx), max_set = 1; break;
        case D_STEPS: rc = hy_arg_long("--steps", v, 1, INT_MAX, &x), a->steps = (int)x, steps_set = 1; break;
        case D_D_MODEL: rc = hy_arg_long("--d-model", v, 1, 65536, &x), a->d_model = (int)x, d_set = 1; break;
        case D_N_LAYERS: rc = hy_arg_long("--n-layers", v, 1, 1024, &x), a->n_layers = (int)x; break;
        case D_THREADS: rc = hy_arg_long("--threads", v, 0, 4096, &x), a->threads = (int)x; break;
        case D_BUDGET: rc = hy_arg_double("--budget", v, 0, INFINITY, HY_ARG_OPEN_LO, &a->budget_s); break;
        case D_ROUNDS: rc = hy_arg_long("--rounds", v, 1, 100, &x), a->rounds = (int)x; break;
        case HY_ARG_POSITIONAL: hy_fail_code(HY_ERR_CONFIG, "unexpected argument '%s'", v); return decode_usage(DECODE_HELP);
        default: return decode_usage(DECODE_HELP);
        }
        if (rc < 0) return decode_usage(NULL);
    }
    if (a->quick) {
        if (!max_set) a->max_ctx = 2048;
        if (!d_set) a->d_model = 64;
        if (!steps_set) a->steps = 4;
    }
    if (a->rounds > 1 && !a->tile) {
        hy_fail_code(HY_ERR_CONFIG, "--rounds %d needs --fill tile (later rounds rebuild each context by tiling)",
                     a->rounds);
        return decode_usage(NULL);
    }
    if (!a->rounds) a->rounds = a->tile ? 2 : 1;
    if (a->min_ctx > a->max_ctx) {
        hy_fail_code(HY_ERR_CONFIG, "--min-context %ld is above --max-context %ld", a->min_ctx, a->max_ctx);
        return decode_usage(NULL);
    }
    return 0;
}

/* What the variants of one benchmark run add up to: decode.csv's rows, decode.md's summary rows and
 * the variants' names (for the plot), in the order they were measured. */
typedef struct {
    hy_strbuf csv, summary;
    char (*names)[128];
    int n, max;
} decode_results;

/* Runs one model (a generic stack, a config or a checkpoint) as the next variant, named `name`. */
static int run_model(const decode_args *a, const char *name, hy_model *m, decode_results *d) {
    char *own = d->names[d->n++];
    snprintf(own, sizeof d->names[0], "%s", name);
    clean_name(own);
    printf("%s: %zu parameters, d_model %d, %d layers\n", own, hy_model_param_count(m), hy_model_get_config(m)->d_model,
           hy_model_get_config(m)->n_layers);
    int rc = bench_variant(a, own, m, &d->csv, &d->summary);
    if (rc < 0) hy_error_prefix("%s", own);
    return rc;
}

/* Every selected registered block in a generic stack: a mixer with swiglu ffns, an ffn (swiglu
 * aside) behind attention mixers. */
static int bench_registered(const decode_args *a, decode_results *d) {
    const hy_block_ops *att = hy_block_find("attention"), *swi = hy_block_find("swiglu");
    int rc = 0;
    for (int i = 0; rc == 0 && i < hy_block_count() && d->n < 200; i++) {
        const hy_block_ops *b = hy_block_at(i), *mixer = NULL, *ffn = NULL;
        if ((b->kinds & HY_KIND_MIXER) && hy_bench_selected(a->blocks, b->name)) mixer = b, ffn = swi;
        else if ((b->kinds & HY_KIND_FFN) && b != swi && hy_bench_selected(a->blocks, b->name)) mixer = att, ffn = b;
        if (!mixer) continue;
        hy_model_config c = {0};
        hy_model *m = NULL;
        char name[128];
        snprintf(name, sizeof name, "%s+%s", mixer->name, ffn->name);
        rc = generic_config(a, mixer, ffn, &c);
        if (rc == 0) rc = hy_model_create(&c, 1, &m);
        if (rc == 0) rc = run_model(a, name, m, d);
        hy_model_free(m);
        free(c.layers);
    }
    return rc;
}

/* The model of every variant of experiment file `path` not already measured under its name. */
static int bench_experiment(const decode_args *a, const char *path, decode_results *d) {
    hy_experiment e;
    int rc = hy_experiment_load(path, NULL, 0, &e);
    if (rc < 0) return rc;
    for (int r = 0; rc == 0 && r < e.n_runs && d->n < d->max; r++) {
        bool seen = false;
        for (int q = 0; q < d->n && !seen; q++) seen = !strncmp(d->names[q], e.runs[r].variant, 127);
        if (seen) continue;
        hy_model *m = NULL;
        char name[128];
        snprintf(name, sizeof name, "%.127s", e.runs[r].variant);
        rc = hy_model_create(&e.runs[r].cfg.model, e.runs[r].cfg.seed, &m);
        if (rc == 0) rc = run_model(a, name, m, d);
        hy_model_free(m);
    }
    hy_experiment_free(&e);
    return rc;
}

/* Each --config: a run config's model under the config's name, or an experiment's variants. */
static int bench_configs(const decode_args *a, decode_results *d) {
    int rc = 0;
    for (int i = 0; rc == 0 && i < a->n_configs && d->n < d->max; i++) {
        bool is_exp = false;
        hy_experiment_detect(a->configs[i], &is_exp);
        if (is_exp) {
            rc = bench_experiment(a, a->configs[i], d);
            continue;
        }
        hy_run_config c;
        hy_model *m = NULL;
        if ((rc = hy_run_config_load(a->configs[i], NULL, 0, &c)) < 0) break;
        rc = hy_model_create(&c.model, c.seed, &m);
        if (rc == 0) rc = run_model(a, c.name, m, d);
        hy_model_free(m);
        hy_run_config_free(&c);
    }
    return rc;
}

/* Each --checkpoint, named by its file name without .safetensors. */
static int bench_checkpoints(const decode_args *a, decode_results *d) {
    int rc = 0;
    for (int i = 0; rc == 0 && i < a->n_checkpoints && d->n < d->max; i++) {
        hy_model *m = NULL;
        if ((rc = hy_checkpoint_load(a->checkpoints[i], &m, NULL)) < 0) break;
        const char *base = strrchr(a->checkpoints[i], '/');
        char name[128];
        snprintf(name, sizeof name, "%s", base ? base + 1 : a->checkpoints[i]);
        char *dot = strstr(name, ".safetensors");
        if (dot) *dot = 0;
        rc = run_model(a, name, m, d);
        hy_model_free(m);
    }
    return rc;
}

/* decode.md: the per-variant summary, then every row of decode.csv, and the plot. */
static int write_markdown(const decode_args *a, const decode_results *d) {
    hy_strbuf md = {0};
    hy_sb_printf(&md, "# Decode cost against context\n\nWritten by `hybrid-exp bench decode` (%d threads, batch 1). "
                 "One token decoded after the given context (fastest of %d steps in each of %d round%s); state = KV cache or recurrent "
                 "state bytes of the whole model; state/copy = ms/token over the time to read the state once at "
                 "the memory copy rate measured in the same run (%.1f GB/s).\n\n![decode](decode.png)\n\n"
                 "| variant | first context | ms/token | last context | ms/token | last / first | state/copy at last |\n"
                 "|---|---:|---:|---:|---:|---:|---:|\n%s\n"
                 "| variant | context | ms/token | state bytes | state/copy |\n|---|---:|---:|---:|---:|\n",
                 hy_threads(), a->steps, a->rounds, a->rounds > 1 ? "s" : "", a->copy_gbs, d->summary.p ? d->summary.p : "");
    for (char *line = strchr(d->csv.p, '\n') + 1; *line; line = strchr(line, '\n') + 1) {
        char v[128];
        long ctx;
        double ms, ratio;
        size_t sb;
        if (sscanf(line, "%127[^,],%ld,%lf,%zu,%lf", v, &ctx, &ms, &sb, &ratio) == 5)
            hy_sb_printf(&md, "| %s | %ld | %.4f | %zu | %.2f |\n", v, ctx, ms, sb, ratio);
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/decode.md", a->out_dir);
    int rc = hy_sb_write_file(&md, path);
    hy_sb_free(&md);
    return rc;
}

/* decode.csv and decode.md into the output folder, then decode.gp and the plot. */
static int write_results(const decode_args *a, const decode_results *d) {
    char path[4200];
    int rc = hy_mkdirs(a->out_dir);
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/%s", a->out_dir, hy_csv_DECODE.file);
        rc = hy_sb_write_file(&d->csv, path);
    }
    if (rc == 0) rc = write_markdown(a, d);
    if (rc == 0) {
        printf("wrote %s/decode.csv, decode.md\n", a->out_dir);
        rc = write_plot(a, d->names, d->n);
    }
    return rc;
}

/* The options, the machine's copy bandwidth, then every variant (registered blocks, configs,
 * checkpoints) and the files. */
int hy_bench_decode_main(int argc, char **argv) {
    decode_args a = {.out_dir = "results/bench", .d_model = 256, .n_layers = 2, .steps = 8, .plot = 1,
                     .min_ctx = 256, .max_ctx = 65536};
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc == 1 ? 0 : rc;
    hy_set_threads(a.threads);
    a.copy_gbs = hy_bench_copy_gbs();
    printf("bench decode: threads %d, contexts %ld .. %ld, %d timed steps each in %d round%s; memory copy %.1f GB/s "
           "(state/copy: ms/token over the time to read the state at that rate)\n", hy_threads(), a.min_ctx, a.max_ctx,
           a.steps, a.rounds, a.rounds > 1 ? "s" : "", a.copy_gbs);
    static char names[256][128];
    decode_results d = {.names = names, .max = 256};
    hy_sb_add(&d.csv, hy_csv_DECODE.header);
    rc = bench_registered(&a, &d);
    if (rc == 0) rc = bench_configs(&a, &d);
    if (rc == 0) rc = bench_checkpoints(&a, &d);
    if (rc == 0) rc = write_results(&a, &d);
    hy_sb_free(&d.csv), hy_sb_free(&d.summary);
    if (rc < 0) {
        fprintf(stderr, "hybrid-exp bench decode: %s\n", hy_last_error());
        return rc == HY_ERR_CONFIG ? 2 : 1;
    }
    return 0;
}

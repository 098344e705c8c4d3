/* hybrid-exp: the command-line program. Parses arguments, prints errors and progress, and maps
 * failures to exit codes: 0 ok, 1 runtime error, 2 bad config or usage, 130 interrupted. */
#include "bench/bench.h"
#include "cli/cli.h"
#include "core/dist.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/gemm.h"
#include "core/timer.h"
#include "experiments/config.h"
#include "experiments/dump.h"
#include "experiments/experiment.h"
#include "experiments/train.h"
#include "experiments/validate.h"
#include "hybrid.h"
#include "models/checkpoint.h"
#include "models/generate.h"
#include "core/mem.h"
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t stop_requested;
static hy_dist *world;        /* the job's ranks under mpirun/srun, else NULL */
static char rank_tag[32];     /* "rank R: " in front of errors when there are several ranks */

/* Whether this process prints progress and summaries: the only one, or rank 0. */
static bool is_rank0(void) { return hy_dist_rank(world) == 0; }

static void on_sigint(int sig) {
    (void)sig;
    if (stop_requested) _exit(130);   /* a second Ctrl-C stops at once */
    stop_requested = 1;
}

static const char *USAGE =
    "usage: hybrid-exp [train] CONFIG.yaml [--set KEY=VALUE]... [--out DIR] [--resume] [--quiet] [--stop-after N]\n"
    "                  [--check] [--force]\n"
    "       hybrid-exp EXPERIMENT.yaml [--set KEY=VALUE]... [--out DIR] [--quiet] [--check] [--force]\n"
    "                  [--ranks-per-run R]\n"
    "       hybrid-exp plot RESULTS_DIR\n"
    "       hybrid-exp init CONFIG.yaml --out MODEL.safetensors [--set KEY=VALUE]...\n"
    "       hybrid-exp dump --checkpoint MODEL.safetensors --batch IN.safetensors --out OUT.safetensors\n"
    "       hybrid-exp generate --checkpoint M.safetensors [--prompt TEXT | --prompt-file F] -n N [options]\n"
    "       hybrid-exp eval --checkpoint M.safetensors --data FILE [--seq-len T]... [--tokenizer T.model] [options]\n"
    "       hybrid-exp tokenizer train --data CORPUS --vocab N --out T.model [options]\n"
    "       hybrid-exp tokenize --tokenizer T.model IN --out OUT.bin\n"
    "       hybrid-exp bench [--out DIR] [--quick] [--threads N] [--blocks a,b] [--gemm]\n"
    "       hybrid-exp bench decode [--out DIR] [--quick] [--config F.yaml]...\n"
    "       mpirun -np N hybrid-exp bench allreduce [--out DIR] [--max-mb M] [--repeats K]\n"
    "       hybrid-exp blocks\n"
    "       hybrid-exp --version | --help | SUBCOMMAND --help\n"
    "\n"
    "Trains, evaluates and benchmarks attention / state-space hybrid language models.\n"
    "Under mpirun -np N, training and experiments use every rank (docs/scaling.md).\n"
    "See docs/cli.md and docs/configs.md.\n";

static const char *TRAIN_HELP =
    "usage: hybrid-exp [train] CONFIG.yaml [options]\n"
    "Trains the model described by CONFIG.yaml on its corpus and writes into out_dir:\n"
    "  train.csv, config.yaml (resolved), checkpoint.safetensors, checkpoint.state.safetensors\n"
    "options:\n"
    "  --set KEY=VALUE   override a config key, e.g. --set train.lr=1e-3 --set model.n_layers=2\n"
    "  --out DIR         same as --set out_dir=DIR\n"
    "  --resume          continue from DIR/checkpoint.* (identical loss curve)\n"
    "  --quiet           no progress output\n"
    "  --stop-after N    stop as an interrupt would after N steps of this run (resume with --resume)\n"
    "  --check           validate only (config, data, memory estimate), print what was checked, write nothing\n"
    "  --force           train even when the memory estimate is above the memory available\n"
    "Before anything is written the corpus is checked against the model, and the estimated peak memory\n"
    "against the machine's available memory (refused above it, unless --force).\n"
    "Ctrl-C saves a checkpoint and flushes train.csv; a second Ctrl-C stops at once.\n"
    "mpirun -np N hybrid-exp CONFIG.yaml trains one model on N ranks, each on its share of the batch\n"
    "(batch_size stays the global batch); --resume may use another N (docs/scaling.md).\n";

static const char *INIT_HELP =
    "usage: hybrid-exp init CONFIG.yaml --out MODEL.safetensors [--set KEY=VALUE]...\n"
    "Writes the freshly initialised model of CONFIG.yaml (seeded by its `seed`) as a checkpoint.\n";

static const char *DUMP_HELP =
    "usage: hybrid-exp dump --checkpoint MODEL.safetensors --batch IN.safetensors --out OUT.safetensors\n"
    "IN holds `tokens` (I32, shape (B, T+1)). OUT gets logits (B, T, V), loss, ce_loss, aux_loss and\n"
    "grad.<name> for every parameter: the exact gradient of loss on that batch (SPEC section 4).\n";

int is_help(const char *a) { return !strcmp(a, "--help") || !strcmp(a, "-h"); }

int fail(int code, const char *what) {
    fprintf(stderr, "hybrid-exp: %s%s%s%s\n", rank_tag, what ? what : "", what ? ": " : "", hy_last_error());
    return code;
}

/* Strict number parsing for the commands' options; false on junk or out of range. */
bool parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}
static bool parse_float(const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

/* Collects --set / --out / flags shared by train and init. */
typedef struct {
    const char *config, *out;
    const char *sets[256];
    int n_sets;
    int resume, quiet, check, force;
    long stop_after;
    long ranks_per_run;          /* 0 = not given */
} run_args;

static int parse_run_args(int argc, char **argv, run_args *a, const char *help) {
    memset(a, 0, sizeof *a);
    for (int i = 0; i < argc; i++) {
        if (is_help(argv[i])) {
            fputs(help, stdout);
            exit(0);
        } else if (!strcmp(argv[i], "--set") && i + 1 < argc && a->n_sets < 255) a->sets[a->n_sets++] = argv[++i];
        else if (!strncmp(argv[i], "--set=", 6) && a->n_sets < 255) a->sets[a->n_sets++] = argv[i] + 6;
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) a->out = argv[++i];
        else if (!strcmp(argv[i], "--resume")) a->resume = 1;
        else if (!strcmp(argv[i], "--quiet")) a->quiet = 1;
        else if (!strcmp(argv[i], "--check")) a->check = 1;
        else if (!strcmp(argv[i], "--force")) a->force = 1;
        else if (!strcmp(argv[i], "--stop-after") && i + 1 < argc) {
            if (!parse_long(argv[++i], 1, LONG_MAX, &a->stop_after)) {
                fprintf(stderr, "hybrid-exp: --stop-after: must be a whole number of steps >= 1, got '%s'\n", argv[i]);
                return 2;
            }
        }
        else if (!strcmp(argv[i], "--ranks-per-run") && i + 1 < argc) {
            if (!parse_long(argv[++i], 1, INT_MAX, &a->ranks_per_run)) {
                fprintf(stderr, "hybrid-exp: --ranks-per-run: must be a whole number of ranks >= 1, got '%s'\n", argv[i]);
                return 2;
            }
        }
        else if (argv[i][0] != '-' && !a->config) a->config = argv[i];
        else {
            fprintf(stderr, "hybrid-exp: unknown or incomplete argument '%s'\n\n%s", argv[i], help);
            return 2;
        }
    }
    if (!a->config) {
        fprintf(stderr, "hybrid-exp: missing CONFIG.yaml\n\n%s", help);
        return 2;
    }
    return 0;
}

static int load_config(run_args *a, hy_run_config *c, int out_is_dir) {
    static char out_set[HY_PATH_MAX + 16];
    if (a->out && out_is_dir) {
        snprintf(out_set, sizeof out_set, "out_dir=%s", a->out);
        a->sets[a->n_sets++] = out_set;
    }
    if (hy_run_config_load(a->config, a->sets, a->n_sets, c) < 0) {
        fprintf(stderr, "hybrid-exp: %s%s\n", rank_tag, hy_last_error());
        return 2;
    }
    return 0;
}

static const char *EXPERIMENT_HELP =
    "usage: hybrid-exp EXPERIMENT.yaml [--set KEY=VALUE]... [--out DIR] [--quiet]\n"
    "Runs every variant x sweep point of an experiment (a config with variants / sweep / budget / bench),\n"
    "skipping runs already complete in its out_dir and resuming an interrupted one, then writes\n"
    "sweep.csv, train.csv, eval.csv, layers.csv, plots (PNG + SVG) and report.md (docs/experiments.md).\n"
    "  --set KEY=VALUE   override a key of the experiment file, e.g. --set budget.steps=20\n"
    "  --out DIR         same as --set out_dir=DIR\n"
    "  --quiet           no progress output\n"
    "  --check           validate every run (config, data, memory estimate), print them, write nothing\n"
    "  --force           run even when a run's memory estimate is above the memory available\n"
    "  --ranks-per-run R under mpirun -np N: runs go to groups of R ranks (default 1), each group\n"
    "                    taking the next pending run; R > 1 trains each run data-parallel on R ranks\n"
    "Ctrl-C saves the current run's checkpoint; running the same command again continues.\n";

static const char *PLOT_HELP =
    "usage: hybrid-exp plot RESULTS_DIR\n"
    "Redraws every plot (gnuplot, PNG + SVG) and report.md of an experiment from the CSV files in\n"
    "RESULTS_DIR alone (layers.csv, sweep.csv, eval.csv, train.csv: those that exist).\n";

/* The experiment's one progress display: runs done / total, the current run's step, loss and
 * tokens/s, and the whole experiment's ETA (one line, redrawn in place on a terminal). */
static void on_exp_progress(void *ctx, const hy_exp_progress *p) {
    (void)ctx;
    static int open_line;
    fflush(stdout);   /* the benchmark prints its rows to stdout */
    int tty = isatty(fileno(stderr));
    const char *id = p->cur ? p->cur->id : "";
    char eta[32], el[32];
    if (p->groups > 1) fprintf(stderr, "(group %d/%d) ", p->group + 1, p->groups);
    hy_format_duration(eta, sizeof eta, p->eta_s);
    hy_format_duration(el, sizeof el, p->elapsed_s);
    if (!strcmp(p->event, "tick")) {
        const hy_train_tick *t = p->tick;
        if (!tty && !isfinite(t->val_loss)) return;
        fprintf(stderr, "%s[%d/%d runs done] %s  step %ld  loss %.4f", tty ? "\r\033[K" : "", p->done + p->skipped,
                p->n_runs, id, t->step, t->train_loss);
        if (isfinite(t->val_loss)) fprintf(stderr, "  val %.4f", t->val_loss);
        fprintf(stderr, "  %.0f tok/s  run %3.0f%%  elapsed %s  ETA %s%s", t->tokens_per_s, 100 * t->fraction, el, eta,
                tty ? "" : "\n");
        open_line = tty;
        fflush(stderr);
        return;
    }
    if (open_line) fputc('\n', stderr), open_line = 0;
    if (!strcmp(p->event, "bench")) fprintf(stderr, "[experiment] benchmarking single blocks for layers.csv\n");
    else if (!strcmp(p->event, "bench-skip")) fprintf(stderr, "[experiment] layers.csv is there with the same settings: skipped\n");
    else if (!strcmp(p->event, "skip")) fprintf(stderr, "[%d/%d] %s: complete, skipped\n", p->run + 1, p->n_runs, id);
    else if (!strcmp(p->event, "start") || !strcmp(p->event, "resume"))
        fprintf(stderr, "[%d/%d] %s: %s\n", p->run + 1, p->n_runs, id,
                !strcmp(p->event, "resume") ? "resuming from its checkpoint" : "training");
    else if (!strcmp(p->event, "eval")) {
        const hy_run_config *c = &p->cur->cfg;
        fprintf(stderr, "[%d/%d] %s: final evaluation at T = %d", p->run + 1, p->n_runs, id, c->seq_len);
        for (int i = 0; i < c->task.n_eval; i++)
            if (c->task.eval_seq_len[i] != c->seq_len) fprintf(stderr, ", %d", c->task.eval_seq_len[i]);
        fputc('\n', stderr);
    } else if (!strcmp(p->event, "done"))
        fprintf(stderr, "[%d/%d] %s: done (elapsed %s, ETA %s)\n", p->run + 1, p->n_runs, id, el, eta);
    fflush(stderr);
}

static int cmd_experiment(run_args *a) {
    static char out_set[HY_PATH_MAX + 16];
    if (a->out) {
        snprintf(out_set, sizeof out_set, "out_dir=%s", a->out);
        a->sets[a->n_sets++] = out_set;
    }
    if (a->resume || a->stop_after) {
        fprintf(stderr, "hybrid-exp: an experiment always resumes; --resume and --stop-after are for single runs\n");
        return 2;
    }
    int size = hy_dist_size(world), per_run = a->ranks_per_run ? (int)a->ranks_per_run : 1;
    if (size % per_run != 0) {
        fprintf(stderr, "hybrid-exp: %s--ranks-per-run %d does not divide the %d ranks of this launch\n", rank_tag, per_run,
                size);
        return 2;
    }
    hy_experiment e;
    if (hy_experiment_load(a->config, a->sets, a->n_sets, &e) < 0) {
        fprintf(stderr, "hybrid-exp: %s%s\n", rank_tag, hy_last_error());
        return 2;
    }
    hy_strbuf report = {0};
    if (hy_experiment_validate(&e, a->force, a->check ? &report : NULL) < 0) {   /* before anything is written */
        fprintf(stderr, "hybrid-exp: %s\n", hy_last_error());
        hy_sb_free(&report);
        hy_experiment_free(&e);
        return 2;
    }
    if (a->check) {
        printf("hybrid-exp: %s: experiment %s, %d runs, all valid (nothing written; out_dir %s)\n%s", a->config, e.name,
               e.n_runs, e.out_dir, report.p ? report.p : "");
        hy_sb_free(&report);
        hy_experiment_free(&e);
        return 0;
    }
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    signal(SIGUSR1, on_sigint);
    if (!a->quiet && is_rank0()) {
        fprintf(stderr, "[experiment] %s: %d runs%s -> %s", e.name, e.n_runs, e.bench.enabled ? " + block benchmark" : "",
                e.out_dir);
        if (size > 1) fprintf(stderr, " (%d ranks: %d groups of %d)", size, size / per_run, per_run);
        fputc('\n', stderr);
    }
    hy_exp_opts o = {.log = a->quiet || !is_rank0() ? NULL : stderr, .on_progress = a->quiet ? NULL : on_exp_progress,
                     .stop = &stop_requested, .bench = hy_bench_run, .force = a->force, .dist = world,
                     .ranks_per_run = per_run};
    hy_exp_result r;
    int rc = hy_experiment_run(&e, &o, &r);
    if (rc < 0) {
        hy_experiment_free(&e);
        return rc == HY_ERR_CONFIG ? fail(2, "the data do not fit the experiment") : fail(1, "experiment failed");
    }
    if (!a->quiet && is_rank0())
        fprintf(stderr, "[experiment] %s: %d trained, %d skipped of %d%s\n%s\n", e.name, r.trained, r.skipped, r.total,
                r.interrupted ? " (interrupted: run the same command again to continue)" : "", r.summary);
    hy_experiment_free(&e);
    return r.interrupted ? 130 : 0;
}

static int cmd_plot(int argc, char **argv) {
    if (argc != 1 || is_help(argv[0]) || argv[0][0] == '-') {
        fputs(PLOT_HELP, argc == 1 && is_help(argv[0]) ? stdout : stderr);
        return argc == 1 && is_help(argv[0]) ? 0 : 2;
    }
    char summary[4096];
    if (hy_experiment_plot(argv[0], summary, sizeof summary) < 0) return fail(1, "plot failed");
    printf("%s\n", summary);
    return 0;
}

/* The checks of a single run before anything is written (experiments/validate.h): its data, and
 * its memory estimate against the machine's (skipped with --force). With --check, prints what was
 * checked to stdout. Returns -1 to go on, or the exit code (0 after --check, 2 when refused). */
static int train_validate(const run_args *a, const hy_run_config *c) {
    hy_run_check k;
    double avail;
    char src[200], av[32];
    if (hy_run_validate(c, NULL, &k) < 0 || hy_mem_available(&avail, src, sizeof src) < 0 ||
        (!a->force && avail >= 0 && hy_run_check_memory(c, &k, avail, src) < 0)) {
        fprintf(stderr, "hybrid-exp: %s\n", hy_last_error());
        return 2;
    }
    if (!a->check) return -1;
    hy_strbuf b = {0};
    hy_sb_printf(&b, "hybrid-exp: %s: valid (nothing written; out_dir %s)\n", a->config, c->out_dir);
    hy_run_check_report(c, &k, &b);
    if (avail < 0) hy_sb_printf(&b, "  available: %s (memory not checked)\n", src);
    else hy_sb_printf(&b, "  available: %s (%s)%s\n", hy_format_bytes(avail, av, sizeof av), src,
                      k.total <= avail ? ": the estimate fits" : ": the estimate is above it, --force given");
    fputs(b.p ? b.p : "", stdout);
    hy_sb_free(&b);
    return 0;
}

static int cmd_train(int argc, char **argv) {
    run_args a;
    hy_run_config c;
    for (int i = 0; i < argc; i++)   /* an experiment file has its own help */
        if (!strcmp(argv[i], "--set") || !strcmp(argv[i], "--out") || !strcmp(argv[i], "--stop-after")) i++;
        else if (argv[i][0] != '-') {
            bool is_exp;
            hy_experiment_detect(argv[i], &is_exp);
            if (is_exp) {
                int rc = parse_run_args(argc, argv, &a, EXPERIMENT_HELP);
                return rc ? rc : cmd_experiment(&a);
            }
            break;
        }
    int rc = parse_run_args(argc, argv, &a, TRAIN_HELP);
    if (rc) return rc;
    if (a.ranks_per_run) {
        fprintf(stderr, "hybrid-exp: --ranks-per-run is for experiments; one model trains on every rank of the launch\n");
        return 2;
    }
    if ((rc = load_config(&a, &c, 1))) return rc;
    if ((rc = train_validate(&a, &c)) >= 0) {
        hy_run_config_free(&c);
        return rc;
    }
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    signal(SIGUSR1, on_sigint);
    bool quiet = a.quiet || !is_rank0();
    hy_train_opts o = {.progress = quiet ? NULL : stderr, .resume = a.resume, .stop = &stop_requested,
                       .stop_after = a.stop_after, .dist = world};
    hy_train_result r;
    rc = hy_train(&c, &o, &r);
    if (rc < 0) {   /* data that do not fit the config (HY_ERR_CONFIG) are found before anything is written */
        hy_run_config_free(&c);
        return rc == HY_ERR_CONFIG ? fail(2, "the data do not fit the config") : fail(1, "training failed");
    }
    char mem[96];
    if (r.ranks > 1)
        snprintf(mem, sizeof mem, "%d ranks, peak memory %.1f MiB per rank (rank 0: %.1f MiB)", r.ranks,
                 r.peak_bytes_max / 1048576.0, r.peak_bytes / 1048576.0);
    else snprintf(mem, sizeof mem, "peak memory %.1f MiB", r.peak_bytes / 1048576.0);
    if (!quiet)
        fprintf(stderr,
                "[%s] %s after %ld steps, %.0f tokens, %.1f s (%.0f tok/s): val loss %.4f nats, ppl %.3f, "
                "%.4f bits/byte, %s\n"
                "[%s] wrote %s/{train.csv,config.yaml,checkpoint.safetensors,checkpoint.state.safetensors}\n",
                c.name, r.interrupted ? "interrupted" : "done", r.steps, r.tokens, r.seconds, r.tokens / r.seconds,
                r.val_loss, r.val_ppl, r.val_bits_per_byte, mem, c.name, c.out_dir);
    if (!quiet && isfinite(r.val_accuracy))
        fprintf(stderr, "[%s] task %s: accuracy %.4f on the answer positions\n", c.name, hy_task_name(c.task.type),
                r.val_accuracy);
    hy_run_config_free(&c);
    return r.interrupted ? 130 : 0;
}

static int cmd_init(int argc, char **argv) {
    run_args a;
    hy_run_config c;
    int rc = parse_run_args(argc, argv, &a, INIT_HELP);
    if (rc) return rc;
    if (!a.out) {
        fprintf(stderr, "hybrid-exp init: --out MODEL.safetensors is required\n");
        return 2;
    }
    if (a.check || a.force) {   /* shared parsing: these belong to training */
        fprintf(stderr, "hybrid-exp init: %s is for training runs and experiments\n", a.check ? "--check" : "--force");
        return 2;
    }
    if ((rc = load_config(&a, &c, 0))) return rc;
    hy_model *m;
    rc = hy_model_create(&c.model, c.seed, &m);
    if (rc == 0) rc = hy_checkpoint_save(m, a.out, 0);
    hy_model_free(rc == 0 ? m : NULL);
    hy_run_config_free(&c);
    return rc < 0 ? fail(1, "init failed") : 0;
}

static int cmd_dump(int argc, char **argv) {
    const char *ckpt = NULL, *batch = NULL, *out = NULL;
    for (int i = 0; i < argc; i++) {
        if (is_help(argv[i])) {
            fputs(DUMP_HELP, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--checkpoint") && i + 1 < argc) ckpt = argv[++i];
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else {
            fprintf(stderr, "hybrid-exp dump: unknown or incomplete argument '%s'\n\n%s", argv[i], DUMP_HELP);
            return 2;
        }
    }
    if (!ckpt || !batch || !out) {
        fprintf(stderr, "hybrid-exp dump: --checkpoint, --batch and --out are required\n\n%s", DUMP_HELP);
        return 2;
    }
    return hy_dump(ckpt, batch, out) < 0 ? fail(1, "dump failed") : 0;
}

static const char *GENERATE_HELP =
    "usage: hybrid-exp generate --checkpoint M.safetensors [--prompt TEXT | --prompt-file F] -n N\n"
    "                           [--temperature T] [--top-k K] [--top-p P] [--seed S]\n"
    "                           [--state-in F] [--state-out F] [--threads N] [--decode-threads N]\n"
    "                           [--tokenizer T.model] [--quiet]\n"
    "Encodes the prompt with the multi-token prefill, then samples N tokens, writing the text of each\n"
    "to stdout as soon as it is produced. Statistics go to stderr.\n"
    "  --tokenizer T    the SentencePiece model that turns text into tokens and back; default: the one\n"
    "                   the checkpoint records (refused if its SHA-256 differs), or bytes for a byte model\n"
    "  --temperature T  softmax temperature (default 1); 0 = greedy (argmax)\n"
    "  --top-k K        sample among the K most likely tokens only (default 0 = all)\n"
    "  --top-p P        then among the smallest set of probability >= P (default 1 = all)\n"
    "  --seed S         sampling seed (default 1): same seed, same text\n"
    "  --state-in F     start from a saved state (the prompt, if any, continues it)\n"
    "  --state-out F    save the state after the prompt and the generated text (safetensors)\n"
    "  --threads N      threads of the prompt's prefill (default 0 = all cores)\n"
    "  --decode-threads N  threads while decoding (default 1: a batch-1 step is a chain of small\n"
    "                   matrix-vector products, fastest on one core, and unaffected by a busy machine)\n"
    "  -n 0 with --state-out encodes a long context once, to be continued many times with --state-in.\n"
    "Ctrl-C stops after the current token (the state is still saved).\n";


/* Writes the text of each produced token at once; stops on Ctrl-C. */
static int emit_token(int32_t tok, void *user) {
    cli_codec_emit(user, tok, stdout);
    fflush(stdout);
    return stop_requested != 0;
}

static int generate_usage(const char *msg, const char *arg) {
    fprintf(stderr, "hybrid-exp generate: %s%s%s\n\n%s", msg, arg ? " " : "", arg ? arg : "", GENERATE_HELP);
    return 2;
}

/* The options of `generate`, as parsed from argv. */
typedef struct {
    const char *ckpt, *prompt, *prompt_file, *state_in, *state_out, *tokenizer;
    long n, threads, decode_threads;
    hy_sample_opts so;
    int quiet;
} generate_args;

/* Parses and checks generate's argv into g. Returns -1 to go on, or the exit code to return now
 * (0 after --help, 2 after a usage error, which it has printed). */
static int generate_parse(int argc, char **argv, generate_args *g) {
    long top_k = 0, seed = 1;
    float temp = 1.0f, top_p = 1.0f;
    *g = (generate_args){.n = -1, .threads = 0, .decode_threads = 1};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        if (is_help(a)) {
            fputs(GENERATE_HELP, stdout);
            return 0;
        } else if (!strcmp(a, "--quiet")) {
            g->quiet = 1;
            continue;
        } else if (!v) return generate_usage("missing value after", a);
        else if (!strcmp(a, "--checkpoint")) g->ckpt = v;
        else if (!strcmp(a, "--prompt")) g->prompt = v;
        else if (!strcmp(a, "--prompt-file")) g->prompt_file = v;
        else if (!strcmp(a, "--state-in")) g->state_in = v;
        else if (!strcmp(a, "--state-out")) g->state_out = v;
        else if (!strcmp(a, "--tokenizer")) g->tokenizer = v;
        else if (!strcmp(a, "-n")) ok = parse_long(v, 0, 1L << 30, &g->n);
        else if (!strcmp(a, "--top-k")) ok = parse_long(v, 0, 1L << 30, &top_k);
        else if (!strcmp(a, "--seed")) ok = parse_long(v, 0, LONG_MAX, &seed);
        else if (!strcmp(a, "--threads")) ok = parse_long(v, 0, 4096, &g->threads);
        else if (!strcmp(a, "--decode-threads")) ok = parse_long(v, 0, 4096, &g->decode_threads);
        else if (!strcmp(a, "--temperature")) ok = parse_float(v, &temp);
        else if (!strcmp(a, "--top-p")) ok = parse_float(v, &top_p);
        else return generate_usage("unknown argument", a);
        if (!ok) {
            fprintf(stderr, "hybrid-exp generate: bad value '%s' for %s\n", v, a);
            return 2;
        }
        i++;
    }
    if (!g->ckpt) return generate_usage("--checkpoint M.safetensors is required", NULL);
    if (g->n < 0) return generate_usage("-n N (tokens to generate) is required", NULL);
    if (g->prompt && g->prompt_file) return generate_usage("give --prompt or --prompt-file, not both", NULL);
    if (!g->prompt && !g->prompt_file && !g->state_in)
        return generate_usage("nothing to start from: give --prompt, --prompt-file or --state-in", NULL);
    g->so = (hy_sample_opts){.temperature = temp, .top_k = (int)top_k, .top_p = top_p, .seed = (uint64_t)seed};
    if (hy_sample_opts_check(&g->so) < 0) {
        fprintf(stderr, "hybrid-exp generate: %s\n", hy_last_error());
        return 2;
    }
    return -1;
}

/* Prefills the prompt into st, samples g->n tokens (printed as they come), reports the timing
 * and saves the state when asked. Returns the exit code. */
static int generate_run(const generate_args *g, hy_model *m, hy_model_state *st, const int32_t *tok, size_t len,
                        cli_codec *codec) {
    if (st->B != 1) {   /* the prompt is one sequence: prefill would read B rows of it */
        fprintf(stderr, "hybrid-exp generate: %s holds %d sequences; generate continues one\n", g->state_in, st->B);
        return 1;
    }
    signal(SIGINT, on_sigint);
    double t0 = hy_now();
    if (hy_model_prefill(m, st, tok, (int)len, NULL, false) < 0) return fail(1, "prefill failed");
    double t1 = hy_now();
    hy_set_threads((int)g->decode_threads);
    int got = hy_generate(m, st, NULL, 0, (int)g->n, &g->so, emit_token, codec, NULL);
    double t2 = hy_now();
    if (got < 0) return fail(1, "generation failed");
    if (!g->quiet)
        fprintf(stderr, "\n[generate] prompt %zu tokens in %.1f ms (%.0f tokens/s), %d tokens in %.1f ms (%.2f ms/token), "
                        "context %ld tokens\n",
                len, (t1 - t0) * 1e3, len / fmax(t1 - t0, 1e-9), got, (t2 - t1) * 1e3, (t2 - t1) * 1e3 / (got ? got : 1),
                hy_model_state_position(st));
    if (g->state_out) {
        if (hy_model_state_save(m, st, g->state_out) < 0) return fail(1, "cannot save the state");
        if (!g->quiet) fprintf(stderr, "[generate] wrote %s\n", g->state_out);
    }
    return stop_requested ? 130 : 0;
}

/* `hybrid-exp generate`: options, prompt, model and state, then the generation. */
static int cmd_generate(int argc, char **argv) {
    generate_args g;
    int rc = generate_parse(argc, argv, &g);
    if (rc >= 0) return rc;
    hy_set_threads((int)g.threads);
    char *text = NULL;
    size_t len = g.prompt ? strlen(g.prompt) : 0;
    if (g.prompt_file && hy_read_file(g.prompt_file, &text, &len) < 0) return fail(1, "cannot read the prompt");
    const char *bytes = g.prompt ? g.prompt : text ? text : "";
    if (len > (size_t)INT_MAX) {
        fprintf(stderr, "hybrid-exp generate: the prompt has %zu bytes (at most %d)\n", len, INT_MAX);
        hy_free(text);
        return 2;
    }
    hy_model *m = NULL;
    hy_model_state *st = NULL;
    int32_t *tok = NULL;
    size_t n_tok = 0;
    cli_codec codec = {0};
    rc = 0;
    int V = 0;
    if (hy_checkpoint_load(g.ckpt, &m, NULL) < 0) rc = fail(1, "cannot load the checkpoint");
    else if ((rc = cli_codec_open(&codec, "generate", g.ckpt, g.tokenizer, V = hy_model_get_config(m)->vocab_size)) == 0 &&
             (rc = cli_codec_encode(&codec, "generate", bytes, len, V, &tok, &n_tok)) == 0) {
        if ((g.state_in ? hy_model_state_load(m, g.state_in, &st) : hy_model_state_new(m, 1, &st)) < 0)
            rc = fail(1, g.state_in ? "cannot load the state" : "cannot create the state");
        else rc = generate_run(&g, m, st, tok, n_tok, &codec);
    }
    hy_model_state_free(m, st);
    hy_model_free(m);
    cli_codec_free(&codec);
    hy_free(text);
    free(tok);
    return rc;
}

/* Lists every registered block with its options: the registry as a user sees it. */
/* An option's accepted values for `blocks`: its inclusive range, plus "auto" / "null" where allowed. */
static void opt_range(const hy_opt_spec *sp, char *out, size_t n) {
    char lo[32], hi[32];
    if (sp->type == HY_OPT_BOOL) snprintf(out, n, "true|false");
    else {
        if (isinf(sp->min)) snprintf(lo, sizeof lo, "-inf");
        else snprintf(lo, sizeof lo, sp->type == HY_OPT_INT ? "%.0f" : "%g", sp->min);
        if (isinf(sp->max)) snprintf(hi, sizeof hi, "inf");
        else snprintf(hi, sizeof hi, sp->type == HY_OPT_INT ? "%.0f" : "%g", sp->max);
        snprintf(out, n, "[%s, %s]", lo, hi);
    }
    size_t len = strlen(out);
    if (sp->flags & (HY_OPT_AUTO | HY_OPT_DEFAULT_AUTO)) len += (size_t)snprintf(out + len, n - len, "|auto");
    if (len < n && sp->flags & (HY_OPT_NULLABLE | HY_OPT_DEFAULT_NULL)) snprintf(out + len, n - len, "|null");
}

static int cmd_blocks(int argc, char **argv) {
    if (argc > 0 && is_help(argv[0])) {
        puts("usage: hybrid-exp blocks\nLists the registered blocks, where they go, and their options: name, type, accepted\n"
             "values (inclusive range, and auto / null where allowed), default, meaning.");
        return 0;
    }
    for (int i = 0; i < hy_block_count(); i++) {
        const hy_block_ops *b = hy_block_at(i);
        printf("%s (%s%s%s): %s\n", b->name, b->kinds & HY_KIND_MIXER ? "mixer" : "",
               b->kinds == (HY_KIND_MIXER | HY_KIND_FFN) ? ", " : "", b->kinds & HY_KIND_FFN ? "ffn" : "", b->summary);
        hy_opts o;
        hy_opts_defaults(b, &o);
        for (int k = 0; k < b->n_opts; k++) {
            const hy_opt_spec *sp = &b->opts[k];
            char def[64], range[96];
            hy_opt_format(b, &o, k, def, sizeof def);
            opt_range(sp, range, sizeof range);
            printf("    %-16s %-5s %-22s default %-10s %s\n", sp->name, sp->type == HY_OPT_INT ? "int" : sp->type == HY_OPT_FLOAT ? "float" : "bool",
                   range, def, sp->help);
        }
    }
    return 0;
}

/* Whether `cmd ARGS` is work for several ranks: training (a config or an experiment) and the
 * allreduce benchmark; every other command runs in one process. */
static bool uses_ranks(const char *cmd, int argc, char **argv) {
    static const char *const alone[] = {"init", "dump", "generate", "blocks", "plot"};
    if (!strcmp(cmd, "bench")) return argc > 2 && !strcmp(argv[2], "allreduce");
    if (cmd[0] == '-') return false;   /* --version */
    for (size_t i = 0; i < sizeof alone / sizeof *alone; i++)
        if (!strcmp(cmd, alone[i])) return false;
    return true;                       /* train: a config or an experiment */
}

/* Runs the command; under mpirun with several ranks a failure on any rank stops them all. */
static int run_command(int argc, char **argv);

int main(int argc, char **argv) {
    if (hy_dist_init(&argc, &argv, &world) < 0) {
        fprintf(stderr, "hybrid-exp: %s\n", hy_last_error());
        return 1;
    }
    if (hy_dist_size(world) > 1) snprintf(rank_tag, sizeof rank_tag, "rank %d: ", hy_dist_rank(world));
    int rc;
    if (hy_dist_size(world) > 1 && argc >= 2 && !is_help(argv[1]) && !uses_ranks(argv[1], argc, argv)) {
        fprintf(stderr, "hybrid-exp: %s'%s' runs in one process: launch it without mpirun\n", rank_tag, argv[1]);
        rc = 2;
    } else rc = run_command(argc, argv);
    if (rc != 0 && rc != 130 && hy_dist_size(world) > 1) {
        fflush(stderr), fflush(stdout);
        hy_dist_abort(world, rc);   /* the other ranks may wait on this one: stop every rank */
    }
    hy_dist_finalize(world);
    return rc;
}

static int run_command(int argc, char **argv) {
    if (argc < 2 || is_help(argv[1])) {
        if (is_rank0()) fputs(USAGE, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    int rc;
    if (!strcmp(cmd, "--version")) {
        printf("hybrid-exp %s\n", HYBRID_VERSION);
        rc = 0;
    } else if (!strcmp(cmd, "train")) rc = cmd_train(argc - 2, argv + 2);
    else if (!strcmp(cmd, "init")) rc = cmd_init(argc - 2, argv + 2);
    else if (!strcmp(cmd, "dump")) rc = cmd_dump(argc - 2, argv + 2);
    else if (!strcmp(cmd, "generate")) rc = cmd_generate(argc - 2, argv + 2);
    else if (!strcmp(cmd, "eval")) rc = cmd_eval(argc - 2, argv + 2);
    else if (!strcmp(cmd, "tokenizer")) rc = cmd_tokenizer(argc - 2, argv + 2);
    else if (!strcmp(cmd, "tokenize")) rc = cmd_tokenize(argc - 2, argv + 2);
    else if (!strcmp(cmd, "bench")) rc = hy_bench_main(argc - 2, argv + 2);
    else if (!strcmp(cmd, "blocks")) rc = cmd_blocks(argc - 2, argv + 2);
    else if (!strcmp(cmd, "plot")) rc = cmd_plot(argc - 2, argv + 2);
    else if (cmd[0] != '-') rc = cmd_train(argc - 1, argv + 1);
    else {
        fprintf(stderr, "hybrid-exp: unknown option '%s'\n\n%s", cmd, USAGE);
        rc = 2;
    }
    hy_gemm_shutdown();
    return rc;
}

/* hybrid-exp: the command-line program. Parses arguments, prints errors and progress, and maps
 * failures to exit codes: 0 ok, 1 runtime error, 2 bad config or usage, 130 interrupted. */
#include "bench/bench.h"
#include "cli/cli.h"
#include "core/args.h"
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
#include "core/strbuf.h"
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

/* Whether a top-level argument asks for the usage. */
static int is_help(const char *a) { return !strcmp(a, "--help") || !strcmp(a, "-h"); }

int fail(int code, const char *what) {
    fprintf(stderr, "hybrid-exp: %s%s%s%s\n", rank_tag, what ? what : "", what ? ": " : "", hy_last_error());
    return code;
}

int cli_usage(const char *cmd, const char *help) {
    fprintf(stderr, "hybrid-exp%s%s: %s%s\n%s%s", cmd ? " " : "", cmd ? cmd : "", rank_tag, hy_last_error(), help ? "\n" : "",
            help ? help : "");
    return 2;
}

/* The options of a run (train, an experiment) and of init, as parsed from argv. */
#define RUN_MAX_SETS 255   /* one more slot is --out's */
typedef struct {
    const char *config, *out;
    const char *sets[RUN_MAX_SETS + 1];
    int n_sets;
    int resume, quiet, check, force;
    long stop_after;
    long ranks_per_run;          /* 0 = not given */
} run_args;

enum { OPT_SET = 256, OPT_OUT, OPT_RESUME, OPT_QUIET, OPT_CHECK, OPT_FORCE, OPT_STOP_AFTER, OPT_RANKS_PER_RUN };
static const struct option RUN_OPTS[] = {
    {"set", required_argument, NULL, OPT_SET},       {"out", required_argument, NULL, OPT_OUT},
    {"resume", no_argument, NULL, OPT_RESUME},       {"quiet", no_argument, NULL, OPT_QUIET},
    {"check", no_argument, NULL, OPT_CHECK},         {"force", no_argument, NULL, OPT_FORCE},
    {"stop-after", required_argument, NULL, OPT_STOP_AFTER},
    {"ranks-per-run", required_argument, NULL, OPT_RANKS_PER_RUN},
    {"help", no_argument, NULL, 'h'},                {NULL, 0, NULL, 0}};

/* Parses the argv of a run or of init (argv[0]: the command) into a; cmd names the command in
 * messages (NULL: training). Returns -1 to go on, or the exit code: 0 after --help (printed),
 * 2 after a usage error (printed, with help). */
static int parse_run_args(int argc, char **argv, run_args *a, const char *cmd, const char *help) {
    memset(a, 0, sizeof *a);
    hy_args w;
    hy_args_init(&w, argc, argv, "h", RUN_OPTS);
    const char *v;
    for (int c; (c = hy_args_next(&w, &v)) != HY_ARG_END;) {
        switch (c) {
        case 'h': fputs(help, stdout); return 0;
        case OPT_SET:
            if (a->n_sets == RUN_MAX_SETS) {
                hy_fail_code(HY_ERR_CONFIG, "--set: at most %d overrides", RUN_MAX_SETS);
                return cli_usage(cmd, NULL);
            }
            a->sets[a->n_sets++] = v;
            break;
        case OPT_OUT: a->out = v; break;
        case OPT_RESUME: a->resume = 1; break;
        case OPT_QUIET: a->quiet = 1; break;
        case OPT_CHECK: a->check = 1; break;
        case OPT_FORCE: a->force = 1; break;
        case OPT_STOP_AFTER:
            if (hy_arg_long("--stop-after", v, 1, LONG_MAX, &a->stop_after) < 0) return cli_usage(cmd, NULL);
            break;
        case OPT_RANKS_PER_RUN:
            if (hy_arg_long("--ranks-per-run", v, 1, INT_MAX, &a->ranks_per_run) < 0) return cli_usage(cmd, NULL);
            break;
        case HY_ARG_POSITIONAL:
            if (!a->config) {
                a->config = v;
                break;
            }
            hy_fail_code(HY_ERR_CONFIG, "unexpected argument '%s' (one CONFIG.yaml)", v);
            return cli_usage(cmd, help);
        default: return cli_usage(cmd, help);   /* HY_ARG_BAD */
        }
    }
    if (!a->config) {
        hy_fail_code(HY_ERR_CONFIG, "missing CONFIG.yaml");
        return cli_usage(cmd, help);
    }
    return -1;
}

/* The config argument of a run's argv (its first positional argument), found without reporting
 * anything: it decides which help and which command (a run or an experiment) apply. */
static const char *run_config_arg(int argc, char **argv) {
    hy_args w;
    hy_args_init(&w, argc, argv, "h", RUN_OPTS);
    const char *v;
    for (int c; (c = hy_args_next(&w, &v)) != HY_ARG_END;)
        if (c == HY_ARG_POSITIONAL) return v;
    return NULL;
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
 * tokens/s, and the whole experiment's ETA (one line, redrawn in place on a terminal). Each line is
 * formed first and written with one call: under mpirun several groups share the log, and a line
 * written in pieces interleaves with another rank's (each line starts with its group's tag). */
static void on_exp_progress(void *ctx, const hy_exp_progress *p) {
    (void)ctx;
    static int open_line;
    fflush(stdout);   /* the benchmark prints its rows to stdout */
    int tty = isatty(fileno(stderr));
    const char *id = p->cur ? p->cur->id : "";
    char eta[32], el[32];
    hy_format_duration(eta, sizeof eta, p->eta_s);
    hy_format_duration(el, sizeof el, p->elapsed_s);
    hy_strbuf line = {0};
    int tick = !strcmp(p->event, "tick");
    if (tick && !tty && !isfinite(p->tick->val_loss)) return;
    if (tick && tty) hy_sb_add(&line, "\r\033[K");
    else if (open_line) hy_sb_add(&line, "\n");
    open_line = 0;
    if (p->groups > 1) hy_sb_printf(&line, "(group %d/%d) ", p->group + 1, p->groups);
    if (tick) {
        const hy_train_tick *t = p->tick;
        hy_sb_printf(&line, "[%d/%d runs done] %s  step %ld  loss %.4f", p->done + p->skipped, p->n_runs, id, t->step,
                     t->train_loss);
        if (isfinite(t->val_loss)) hy_sb_printf(&line, "  val %.4f", t->val_loss);
        hy_sb_printf(&line, "  %.0f tok/s  run %3.0f%%  elapsed %s  ETA %s%s", t->tokens_per_s, 100 * t->fraction, el, eta,
                     tty ? "" : "\n");
        open_line = tty;
    } else if (!strcmp(p->event, "bench")) hy_sb_add(&line, "[experiment] benchmarking single blocks for layers.csv\n");
    else if (!strcmp(p->event, "bench-skip"))
        hy_sb_add(&line, "[experiment] layers.csv is there with the same settings: skipped\n");
    else if (!strcmp(p->event, "skip")) hy_sb_printf(&line, "[%d/%d] %s: complete, skipped\n", p->run + 1, p->n_runs, id);
    else if (!strcmp(p->event, "start") || !strcmp(p->event, "resume"))
        hy_sb_printf(&line, "[%d/%d] %s: %s\n", p->run + 1, p->n_runs, id,
                     !strcmp(p->event, "resume") ? "resuming from its checkpoint" : "training");
    else if (!strcmp(p->event, "eval")) {
        const hy_run_config *c = &p->cur->cfg;
        hy_sb_printf(&line, "[%d/%d] %s: final evaluation at T = %d", p->run + 1, p->n_runs, id, c->seq_len);
        for (int i = 0; i < c->task.n_eval; i++)
            if (c->task.eval_seq_len[i] != c->seq_len) hy_sb_printf(&line, ", %d", c->task.eval_seq_len[i]);
        hy_sb_add(&line, "\n");
    } else if (!strcmp(p->event, "done"))
        hy_sb_printf(&line, "[%d/%d] %s: done (elapsed %s, ETA %s)\n", p->run + 1, p->n_runs, id, el, eta);
    if (line.p) fputs(line.p, stderr);
    fflush(stderr);
    hy_sb_free(&line);
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

/* The options of commands that take only --help: `plot`, `blocks`. */
static const struct option HELP_OPTS[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};

/* Parses the argv of a command with --help and at most n_max positional arguments (into pos).
 * Returns how many were given, or -1 - the exit code (0 after --help, 2 after a usage error). */
static int parse_positional(int argc, char **argv, const char *cmd, const char *help, const char **pos, int n_max) {
    hy_args w;
    hy_args_init(&w, argc, argv, "h", HELP_OPTS);
    const char *v;
    int n = 0;
    for (int c; (c = hy_args_next(&w, &v)) != HY_ARG_END;) {
        if (c == 'h') return fputs(help, stdout), -1;
        if (c == HY_ARG_POSITIONAL && n < n_max) pos[n++] = v;
        else {
            if (c == HY_ARG_POSITIONAL) hy_fail_code(HY_ERR_CONFIG, "unexpected argument '%s'", v);
            return cli_usage(cmd, help), -3;
        }
    }
    return n;
}

static int cmd_plot(int argc, char **argv) {
    const char *dir = NULL;
    int n = parse_positional(argc, argv, "plot", PLOT_HELP, &dir, 1);
    if (n < 0) return -1 - n;
    if (n == 0) {
        hy_fail_code(HY_ERR_CONFIG, "missing RESULTS_DIR");
        return cli_usage("plot", PLOT_HELP);
    }
    char summary[4096];
    if (hy_experiment_plot(dir, summary, sizeof summary) < 0) return fail(1, "plot failed");
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
    const char *config = run_config_arg(argc, argv);   /* an experiment file has its own help */
    bool is_exp = false;
    if (config) hy_experiment_detect(config, &is_exp);
    if (is_exp) {
        int rc = parse_run_args(argc, argv, &a, NULL, EXPERIMENT_HELP);
        return rc >= 0 ? rc : cmd_experiment(&a);
    }
    int rc = parse_run_args(argc, argv, &a, NULL, TRAIN_HELP);
    if (rc >= 0) return rc;
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
    int rc = parse_run_args(argc, argv, &a, "init", INIT_HELP);
    if (rc >= 0) return rc;
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
    enum { OPT_CHECKPOINT = 256, OPT_BATCH, OPT_DUMP_OUT };
    static const struct option opts[] = {{"checkpoint", required_argument, NULL, OPT_CHECKPOINT},
                                         {"batch", required_argument, NULL, OPT_BATCH},
                                         {"out", required_argument, NULL, OPT_DUMP_OUT},
                                         {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    const char *ckpt = NULL, *batch = NULL, *out = NULL, *v;
    hy_args w;
    hy_args_init(&w, argc, argv, "h", opts);
    for (int c; (c = hy_args_next(&w, &v)) != HY_ARG_END;) {
        switch (c) {
        case 'h': fputs(DUMP_HELP, stdout); return 0;
        case OPT_CHECKPOINT: ckpt = v; break;
        case OPT_BATCH: batch = v; break;
        case OPT_DUMP_OUT: out = v; break;
        case HY_ARG_POSITIONAL: hy_fail_code(HY_ERR_CONFIG, "unexpected argument '%s'", v); return cli_usage("dump", DUMP_HELP);
        default: return cli_usage("dump", DUMP_HELP);
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

/* Prints a usage error of generate (msg, with the help) and returns 2. */
static int generate_usage(const char *msg) {
    hy_fail_code(HY_ERR_CONFIG, "%s", msg);
    return cli_usage("generate", GENERATE_HELP);
}

/* The options of `generate`, as parsed from argv. */
typedef struct {
    const char *ckpt, *prompt, *prompt_file, *state_in, *state_out, *tokenizer;
    long n, threads, decode_threads;
    hy_sample_opts so;
    int quiet;
} generate_args;

enum { GEN_CHECKPOINT = 256, GEN_PROMPT, GEN_PROMPT_FILE, GEN_STATE_IN, GEN_STATE_OUT, GEN_TOKENIZER, GEN_TOP_K,
       GEN_SEED, GEN_THREADS, GEN_DECODE_THREADS, GEN_TEMPERATURE, GEN_TOP_P, GEN_QUIET };
static const struct option GENERATE_OPTS[] = {
    {"checkpoint", required_argument, NULL, GEN_CHECKPOINT},   {"prompt", required_argument, NULL, GEN_PROMPT},
    {"prompt-file", required_argument, NULL, GEN_PROMPT_FILE}, {"state-in", required_argument, NULL, GEN_STATE_IN},
    {"state-out", required_argument, NULL, GEN_STATE_OUT},     {"tokenizer", required_argument, NULL, GEN_TOKENIZER},
    {"top-k", required_argument, NULL, GEN_TOP_K},             {"seed", required_argument, NULL, GEN_SEED},
    {"threads", required_argument, NULL, GEN_THREADS},
    {"decode-threads", required_argument, NULL, GEN_DECODE_THREADS},
    {"temperature", required_argument, NULL, GEN_TEMPERATURE}, {"top-p", required_argument, NULL, GEN_TOP_P},
    {"quiet", no_argument, NULL, GEN_QUIET},                   {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}};

/* Parses and checks generate's argv into g. Returns -1 to go on, or the exit code to return now
 * (0 after --help, 2 after a usage error, which it has printed). */
static int generate_parse(int argc, char **argv, generate_args *g) {
    long top_k = 0, seed = 1;
    double temp = 1.0, top_p = 1.0;
    *g = (generate_args){.n = -1, .threads = 0, .decode_threads = 1};
    hy_args w;
    hy_args_init(&w, argc, argv, "hn:", GENERATE_OPTS);
    const char *v;
    for (int c; (c = hy_args_next(&w, &v)) != HY_ARG_END;) {
        int rc = 0;
        switch (c) {
        case 'h': fputs(GENERATE_HELP, stdout); return 0;
        case GEN_QUIET: g->quiet = 1; break;
        case GEN_CHECKPOINT: g->ckpt = v; break;
        case GEN_PROMPT: g->prompt = v; break;
        case GEN_PROMPT_FILE: g->prompt_file = v; break;
        case GEN_STATE_IN: g->state_in = v; break;
        case GEN_STATE_OUT: g->state_out = v; break;
        case GEN_TOKENIZER: g->tokenizer = v; break;
        case 'n': rc = hy_arg_long("-n", v, 0, 1L << 30, &g->n); break;
        case GEN_TOP_K: rc = hy_arg_long("--top-k", v, 0, 1L << 30, &top_k); break;
        case GEN_SEED: rc = hy_arg_long("--seed", v, 0, LONG_MAX, &seed); break;
        case GEN_THREADS: rc = hy_arg_long("--threads", v, 0, 4096, &g->threads); break;
        case GEN_DECODE_THREADS: rc = hy_arg_long("--decode-threads", v, 0, 4096, &g->decode_threads); break;
        case GEN_TEMPERATURE: rc = hy_arg_double("--temperature", v, 0, INFINITY, 0, &temp); break;
        case GEN_TOP_P: rc = hy_arg_double("--top-p", v, 0, 1, HY_ARG_OPEN_LO, &top_p); break;
        case HY_ARG_POSITIONAL: hy_fail_code(HY_ERR_CONFIG, "unexpected argument '%s'", v); return cli_usage("generate", GENERATE_HELP);
        default: return cli_usage("generate", GENERATE_HELP);
        }
        if (rc < 0) return cli_usage("generate", NULL);
    }
    if (!g->ckpt) return generate_usage("--checkpoint M.safetensors is required");
    if (g->n < 0) return generate_usage("-n N (tokens to generate) is required");
    if (g->prompt && g->prompt_file) return generate_usage("give --prompt or --prompt-file, not both");
    if (!g->prompt && !g->prompt_file && !g->state_in)
        return generate_usage("nothing to start from: give --prompt, --prompt-file or --state-in");
    g->so = (hy_sample_opts){.temperature = (float)temp, .top_k = (int)top_k, .top_p = (float)top_p, .seed = (uint64_t)seed};
    if (hy_sample_opts_check(&g->so) < 0) return cli_usage("generate", NULL);
    return -1;
}

/* What `generate` works on, gathered stage by stage: the prompt's bytes and tokens, the model,
 * its text codec and the state it continues. */
typedef struct {
    char *file_text;              /* the bytes of --prompt-file (NULL otherwise) */
    const char *prompt;           /* the prompt's bytes: --prompt, the file's, or "" */
    size_t prompt_len;
    hy_model *m;
    int vocab;
    cli_codec codec;
    int32_t *tok;                 /* the prompt's tokens */
    size_t n_tok;
    hy_model_state *st;
} generate_job;

/* Stage 1: the prompt's bytes, from --prompt or --prompt-file (none: ""). Returns 0 or the exit code. */
static int generate_read_prompt(const generate_args *g, generate_job *j) {
    j->prompt = g->prompt ? g->prompt : "";
    j->prompt_len = strlen(j->prompt);
    if (g->prompt_file) {
        if (hy_read_file(g->prompt_file, &j->file_text, &j->prompt_len) < 0) return fail(1, "cannot read the prompt");
        j->prompt = j->file_text ? j->file_text : "";
    }
    if (j->prompt_len > (size_t)INT_MAX) {
        fprintf(stderr, "hybrid-exp generate: the prompt has %zu bytes (at most %d)\n", j->prompt_len, INT_MAX);
        return 2;
    }
    return 0;
}

/* Stage 2: the checkpoint's model and the codec its tokens are read and written through. */
static int generate_load_model(const generate_args *g, generate_job *j) {
    if (hy_checkpoint_load(g->ckpt, &j->m, NULL) < 0) return fail(1, "cannot load the checkpoint");
    j->vocab = hy_model_get_config(j->m)->vocab_size;
    return cli_codec_open(&j->codec, "generate", g->ckpt, g->tokenizer, j->vocab);
}

/* Stage 3: the prompt as tokens of the model's vocabulary. */
static int generate_encode_prompt(generate_job *j) {
    return cli_codec_encode(&j->codec, "generate", j->prompt, j->prompt_len, j->vocab, &j->tok, &j->n_tok);
}

/* Stage 4: the state to continue: --state-in's, or a fresh one of one sequence. */
static int generate_open_state(const generate_args *g, generate_job *j) {
    if (g->state_in) {
        if (hy_model_state_load(j->m, g->state_in, &j->st) < 0) return fail(1, "cannot load the state");
        if (j->st->B != 1) {   /* the prompt is one sequence: prefill would read B rows of it */
            fprintf(stderr, "hybrid-exp generate: %s holds %d sequences; generate continues one\n", g->state_in, j->st->B);
            return 1;
        }
        return 0;
    }
    return hy_model_state_new(j->m, 1, &j->st) < 0 ? fail(1, "cannot create the state") : 0;
}

/* Stage 5: prefills the prompt, samples g->n tokens (printed as they come), reports the timing
 * and saves the state when asked. Returns the exit code. */
static int generate_run(const generate_args *g, generate_job *j) {
    signal(SIGINT, on_sigint);
    double t0 = hy_now();
    if (hy_model_prefill(j->m, j->st, j->tok, (int)j->n_tok, NULL, false) < 0) return fail(1, "prefill failed");
    double t1 = hy_now();
    hy_set_threads((int)g->decode_threads);
    int got = hy_generate(j->m, j->st, NULL, 0, (int)g->n, &g->so, emit_token, &j->codec, NULL);
    double t2 = hy_now();
    if (got < 0) return fail(1, "generation failed");
    if (!g->quiet)
        fprintf(stderr, "\n[generate] prompt %zu tokens in %.1f ms (%.0f tokens/s), %d tokens in %.1f ms (%.2f ms/token), "
                        "context %ld tokens\n",
                j->n_tok, (t1 - t0) * 1e3, j->n_tok / fmax(t1 - t0, 1e-9), got, (t2 - t1) * 1e3,
                (t2 - t1) * 1e3 / (got ? got : 1), hy_model_state_position(j->st));
    if (g->state_out) {
        if (hy_model_state_save(j->m, j->st, g->state_out) < 0) return fail(1, "cannot save the state");
        if (!g->quiet) fprintf(stderr, "[generate] wrote %s\n", g->state_out);
    }
    return stop_requested ? 130 : 0;
}

static void generate_job_free(generate_job *j) {
    hy_model_state_free(j->m, j->st);
    hy_model_free(j->m);
    cli_codec_free(&j->codec);
    hy_free(j->file_text);
    free(j->tok);
}

/* `hybrid-exp generate`: options, prompt, model and codec, tokens, state, then the generation. */
static int cmd_generate(int argc, char **argv) {
    generate_args g;
    int rc = generate_parse(argc, argv, &g);
    if (rc >= 0) return rc;
    hy_set_threads((int)g.threads);
    generate_job j = {0};
    if ((rc = generate_read_prompt(&g, &j)) == 0 && (rc = generate_load_model(&g, &j)) == 0 &&
        (rc = generate_encode_prompt(&j)) == 0 && (rc = generate_open_state(&g, &j)) == 0)
        rc = generate_run(&g, &j);
    generate_job_free(&j);
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
    static const char *BLOCKS_HELP =
        "usage: hybrid-exp blocks\nLists the registered blocks, where they go, and their options: name, type, accepted\n"
        "values (inclusive range, and auto / null where allowed), default, meaning.\n";
    int n = parse_positional(argc, argv, "blocks", BLOCKS_HELP, NULL, 0);
    if (n < 0) return -1 - n;
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
    } else if (!strcmp(cmd, "train")) rc = cmd_train(argc - 1, argv + 1);
    else if (!strcmp(cmd, "init")) rc = cmd_init(argc - 1, argv + 1);
    else if (!strcmp(cmd, "dump")) rc = cmd_dump(argc - 1, argv + 1);
    else if (!strcmp(cmd, "generate")) rc = cmd_generate(argc - 1, argv + 1);
    else if (!strcmp(cmd, "eval")) rc = cmd_eval(argc - 1, argv + 1);
    else if (!strcmp(cmd, "tokenizer")) rc = cmd_tokenizer(argc - 1, argv + 1);
    else if (!strcmp(cmd, "tokenize")) rc = cmd_tokenize(argc - 1, argv + 1);
    else if (!strcmp(cmd, "bench")) rc = hy_bench_main(argc - 1, argv + 1);
    else if (!strcmp(cmd, "blocks")) rc = cmd_blocks(argc - 1, argv + 1);
    else if (!strcmp(cmd, "plot")) rc = cmd_plot(argc - 1, argv + 1);
    else if (cmd[0] != '-') rc = cmd_train(argc, argv);
    else {
        fprintf(stderr, "hybrid-exp: unknown option '%s'\n\n%s", cmd, USAGE);
        rc = 2;
    }
    hy_gemm_shutdown();
    return rc;
}

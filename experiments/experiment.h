/* Experiments: a set of variants (models) x a sweep (seq_len, and optionally d_model, d_state,
 * lr), one budget per run, and an optional single-block benchmark, run as one resumable job that
 * writes results/<experiment>/ (sweep.csv, train.csv, eval.csv, layers.csv, plots, report.md).
 * The config (config_exp.c) composes, for every run, the tree of a plain run config from the
 * experiment file and the variant's model file, and reads it with the run-config schema, so a run
 * of an experiment is validated exactly like a plain config and every error names its file,
 * line, column and key. */
#ifndef HY_EXPERIMENTS_EXPERIMENT_H
#define HY_EXPERIMENTS_EXPERIMENT_H
#include "core/strbuf.h"
#include "experiments/config.h"
#include "experiments/train.h"
#include "experiments/yaml_tree.h"
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#define HY_EXP_MAX_EVAL 16
/* Runs of one experiment (variants x sweep points), at most: each holds a resolved run config of
 * about 7 KB, and loading composes and checks every one of them. */
#define HY_EXP_MAX_RUNS 10000

typedef struct {
    char variant[160];        /* the `variant` column: name, plus ":key=value" per swept d_model/d_state */
    char id[200];             /* folder under runs/: <variant>-T<seq_len>[-lr<lr>][-s<seed>] (lr, seed when swept) */
    int seq_len;
    hy_run_config cfg;        /* resolved; cfg.out_dir = <out_dir>/runs/<id> */
} hy_exp_run;

typedef struct {
    bool enabled;
    char blocks[1024];        /* comma list of block names; "" = every registered block */
    int min_T, max_T, d_model;
    bool quick;
} hy_exp_bench;

typedef struct {
    char source[HY_PATH_MAX];
    char name[128];
    char out_dir[HY_PATH_MAX];
    int threads;
    int n_runs;
    hy_exp_run *runs;         /* variant-major, then d_model, d_state, lr, seed, seq_len */
    /* the common evaluation of corpus runs (eval:): at the run's seq_len and each of these lengths,
     * over the first eval_tokens tokens of the validation split, or (eval_bytes > 0) over the tokens
     * of its first eval_bytes bytes of text, the same text whatever the tokenizer; task runs use
     * their task's lengths */
    int n_eval, eval_seq_len[HY_EXP_MAX_EVAL];
    long eval_tokens, eval_bytes;
    char reference[HY_PATH_MAX];   /* reference: another results folder whose runs the report lists ("" = none) */
    uint64_t eval_seed;       /* the data seed of every final evaluation: the first (or only) seed */
    hy_exp_bench bench;
} hy_experiment;

/* Whether the YAML file at `path` is an experiment (has variants, sweep, budget or bench at the
 * top level) rather than a plain run config. *is_exp = false when it cannot be parsed (the run
 * loader then reports the problem). */
void hy_experiment_detect(const char *path, bool *is_exp);
/* Loads and validates the whole experiment (every run resolved) with `n_sets` --set overrides
 * applied to the experiment file. HY_ERR_CONFIG with a located message on error. */
int hy_experiment_load(const char *path, const char *const *sets, int n_sets, hy_experiment *e);
void hy_experiment_free(hy_experiment *e);

/* The run-config schema over an already composed tree d->root (config.c). */
int hy_run_config_from_tree(const yt_doc *d, hy_run_config *c);

/* ---- running (sweep.c) ---- */

typedef struct {
    int run, n_runs, done, skipped;   /* index of the current run; runs finished or skipped so far */
    const hy_exp_run *cur;
    const hy_train_tick *tick;        /* NULL at the start / end of a run */
    double elapsed_s, eta_s;          /* whole experiment; eta NAN when unknown */
    const char *event;                /* "bench", "bench-skip", "skip", "start", "resume", "tick", "eval", "done" */
    int group, groups;                /* under mpirun: this rank's group of ranks and how many there are (else 0, 1) */
} hy_exp_progress;

/* The settings of the single-block benchmark that writes layers.csv (hy_bench_run, bench/bench.c):
 * filled from `hybrid-exp bench` arguments by the program, or from an experiment's bench: section
 * by the runner (sweep.c). Declared here because the library calls the benchmark through
 * hy_exp_opts.bench but does not link bench/. */
typedef struct {
    const char *out_dir;      /* writes out_dir/layers.csv */
    bool quick;               /* shorter timings (the CLI's --quick also sets max_T to 1024) */
    int threads;              /* <= 0: every core */
    const char *blocks;       /* comma list of block names; NULL = every registered block */
    int d_model;
    int min_T, max_T;         /* T = min_T, 2·min_T, ... up to max_T */
    bool gemm_table;          /* also print OpenBLAS vs oneDNN GFLOP/s on LM shapes */
    bool precision_step;      /* also time configs/precision.yaml's training steps, f32 and bf16 by turns */
} hy_bench_options;

typedef struct {
    FILE *log;                        /* data preparation lines (tokenizing, training a tokenizer); NULL = silent */
    void (*on_progress)(void *ctx, const hy_exp_progress *p);
    void *ctx;
    volatile sig_atomic_t *stop;
    /* the single-block benchmark (hy_bench_run of bench/, given by the program): 0 = done;
     * NULL = skip */
    int (*bench)(const hy_bench_options *o);
    long stop_after_runs;             /* > 0: stop after training this many runs (tests; per group of ranks) */
    bool no_plots;
    /* the ranks of an mpirun launch (NULL = this process alone): groups of ranks_per_run ranks (0 =
     * 1) each take the next pending run from rank 0 until none is left; rank 0 then merges the
     * CSVs, plots and reports. Every rank calls hy_experiment_run with the same experiment. */
    hy_dist *dist;
    int ranks_per_run;
    bool force;                       /* run even when a run's memory estimate is above what is available */
} hy_exp_opts;

typedef struct {
    int trained, skipped, total;
    bool interrupted;
    char summary[4096];               /* crossover points and where the report is, for printing */
} hy_exp_result;

/* Checks every run before anything is written (experiments/validate.h): its data (each corpus
 * loaded once; for a corpus, the validation split also holds the experiment's longest evaluation
 * window) and, unless force, its memory estimate against the machine's available memory.
 * HY_ERR_CONFIG naming the run on the first problem. report (may be NULL) gets, for --check, a
 * line per run, the data checked and the memory available. */
int hy_experiment_validate(const hy_experiment *e, bool force, hy_strbuf *report);

/* Validates the experiment (hy_experiment_validate, o->force), then runs every run not already
 * complete in e->out_dir (a run is complete when runs/<id>/result.csv exists and
 * runs/<id>/config.yaml is the run's resolved config), resumes an interrupted one from its
 * checkpoint, then writes the experiment's CSVs, plots and report. With o->dist the runs are
 * spread over groups of ranks (above); the files are the same as the serial runner's, and r
 * counts the runs of every group (on rank 0). */
int hy_experiment_run(const hy_experiment *e, const hy_exp_opts *o, hy_exp_result *r);

/* ---- results (plot.c, report.c) ---- */

/* Redraws every plot and report.md in `dir` from its CSV files alone (those that exist).
 * summary (may be NULL) gets the crossover points and the files written. */
int hy_experiment_plot(const char *dir, char *summary, size_t summary_len);

#endif

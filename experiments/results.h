/* Reading an experiment's tidy CSV files back (results.c), shared by plot.c and report.c: a table of
 * text cells with named columns, and the quantities the plots and the report share. */
#ifndef HY_EXPERIMENTS_RESULTS_H
#define HY_EXPERIMENTS_RESULTS_H
#include <stdbool.h>
#include <stddef.h>
#include "experiments/csv_schema.h"

typedef struct {
    int n_cols, n_rows;
    char **head;      /* n_cols names */
    char ***rows;     /* n_rows x n_cols cells ("" when missing) */
    char *text;
} hy_csv;

/* Loads `path`; returns 1 (and an empty table) when the file does not exist, 0 when read,
 * negative on a malformed file. */
int hy_csv_load(const char *path, hy_csv *t);
void hy_csv_free(hy_csv *t);
int hy_csv_col(const hy_csv *t, const char *name);                /* -1 if absent */
/* hy_csv_col of column `col` of file P's schema (experiments/csv_schema.h), checked at compile
 * time: HY_CSV_FIND(&train, TRAIN, tokens). */
#define HY_CSV_FIND(t, P, col) hy_csv_col(t, HY_CSV_COL(P, col))
const char *hy_csv_str(const hy_csv *t, int row, int col);         /* "" if col < 0 */
double hy_csv_num(const hy_csv *t, int row, int col);              /* NAN when empty or col < 0 */

/* Distinct values of column `col` in first-seen order (pointers into t); returns the count. */
int hy_csv_distinct(const hy_csv *t, int col, const char **out, int max);

/* Whether eval.csv comes from a synthetic task (a task name other than `corpus`/`none`): the
 * quality metric is then accuracy at the training length, not bits per byte. */
bool hy_results_are_task(const hy_csv *eval);

/* One block's crossover against attention for one pass of layers.csv. */
typedef struct {
    char block[96], pass[16];
    int kind;            /* 0: crosses at t_star; 1: faster at every measured T; 2: slower at every measured T up to t_max */
    double t_star, ms;   /* where, and attention's (interpolated) time there */
    int t_min, t_max;
} hy_crossover;

/* Every mixer block (not attention, attention_naive, or a registered ffn) x {fwd, fwd_bwd} of layers.csv with rows at common
 * T of attention: where the block becomes and stays faster, interpolated in log-log. */
int hy_crossovers(const hy_csv *layers, hy_crossover *out, int max);
void hy_crossover_text(const hy_crossover *c, char *out, size_t len);

/* ---- seeds and learning rates ----
 * A run is one row of sweep.csv: (variant, seq_len, seed, lr). A group is the runs of one
 * (variant, seq_len) -- and, where said, one lr or one evaluation length -- over their seeds.
 * Older CSVs without the columns seed, lr, stopped_by, lr_selected are read as one seed, one lr,
 * complete runs, every row selected. */

/* Chooses the best-of learning rate of every (variant, seq_len) of sweep.csv and writes it into
 * the lr_selected column ("1" for the rows at the chosen lr, else "0"; the column is appended when
 * absent): the lr with the lowest mean val_loss over its seeds; for a task (hy_results_are_task
 * (eval)) the highest mean accuracy at the training length (eval.csv), ties going to the lower
 * mean val_loss. Remaining ties, and lrs whose metric is missing, go to the smaller lr. Without
 * an lr column every row is "1". eval may be NULL. Returns 0, or a negative code (out of memory,
 * no variant or seq_len column). */
int hy_select_lr(hy_csv *sweep, const hy_csv *eval);

/* Reads dir/sweep_rows.csv (the runner's per-run rows, without lr_selected) and dir/eval.csv when
 * present, writes dir/sweep.csv with the lr_selected column (hy_select_lr) atomically, then
 * removes sweep_rows.csv. Without sweep_rows.csv it returns 0 and leaves sweep.csv as it is. */
int hy_sweep_finalize(const char *dir);

/* One quantity over the runs of a group: n finite values, their mean, sample standard deviation
 * (n - 1 in the denominator; NAN when n < 2), min and max (NAN when n = 0). */
typedef struct {
    int n;
    double mean, sd, min, max;
} hy_stat;

/* The hy_stat of the finite values among x[0..n). */
void hy_stat_of(const double *x, int n, hy_stat *out);

typedef struct {
    char variant[160];
    int seq_len;          /* training length */
    int eval_seq_len;     /* evaluation length (eval.csv groups); = seq_len for sweep.csv groups */
    char lr[32];          /* the group's lr as written ("" when the CSV has no lr column) */
    bool selected;        /* its lr is the selected one (lr_selected = 1) */
    int runs;             /* rows in the group: its seeds */
    bool cut;             /* some run of it was stopped by the wall clock (stopped_by = seconds) */
    hy_stat loss;         /* val_loss, nats per token */
    hy_stat bits;         /* val_bits_per_byte (val_loss / ln 2 where the column is absent) */
    hy_stat accuracy;     /* sweep groups: eval.csv accuracy at the training length; eval groups: accuracy */
    hy_stat flops;        /* training FLOPs 3 x flop_per_token x tokens (sweep groups only) */
    hy_stat bytes_per_token;   /* text bytes per evaluated token (1 for bytes; 1 where the column is absent) */
} hy_group;

/* Groups sweep.csv by (variant, seq_len) at the selected lr, or, with every_lr, by (variant,
 * seq_len, lr) for every lr. *out (malloc'd, the caller frees; NULL when none) lists the groups in
 * first-seen order. Returns their count or a negative code. eval may be NULL. */
int hy_group_sweep(const hy_csv *sweep, const hy_csv *eval, bool every_lr, hy_group **out);

/* Groups eval.csv by (variant, seq_len, eval_seq_len), runs at the selected lr of their (variant,
 * seq_len) in sweep.csv only (sweep may be NULL: every run). As hy_group_sweep otherwise. */
int hy_group_eval(const hy_csv *sweep, const hy_csv *eval, hy_group **out);

/* Whether lr is the selected lr of (variant, seq_len) in sweep.csv: true when that cannot be told
 * (no sweep.csv rows of the pair, no lr or lr_selected column, lr ""). */
bool hy_lr_selected(const hy_csv *sweep, const char *variant, const char *seq_len, const char *lr);

/* Whether a run of (variant, seq_len, seed, lr) of sweep.csv was stopped by the wall clock
 * (stopped_by = seconds); seed or lr "" matches any. */
bool hy_run_cut(const hy_csv *sweep, const char *variant, const char *seq_len, const char *seed, const char *lr);

/* The spread rule for comparing two groups A and B on one quantity: the difference is larger than
 * the spread when |mean_A - mean_B| > sd_A + sd_B, that is when their mean +- 1 sd error bars do
 * not overlap. A descriptive rule over the seeds, not a significance test. */
typedef enum { HY_SPREAD_UNKNOWN = -1, HY_SPREAD_WITHIN = 0, HY_SPREAD_LARGER = 1 } hy_spread;

/* The rule above; HY_SPREAD_UNKNOWN when either has fewer than 2 values (no sd) or no mean. */
hy_spread hy_spread_compare(const hy_stat *a, const hy_stat *b);

/* ---- loss against position (position.csv) ---- */

typedef struct {
    char variant[160];
    int seq_len;          /* training length */
    int eval_seq_len;     /* L: positions 0 .. L-1 */
    char lr[32];
    int n_seeds;
    bool cut;             /* some run stopped by the wall clock */
    double *loss;         /* n_seeds x L: loss of seed s at position p in loss[s * L + p]; NAN where absent */
} hy_position_curve;

/* One curve per variant (first-seen order) of position.csv at the longest training seq_len in
 * it, at the selected lr (sweep.csv; may be NULL) and at the longest eval_seq_len of those rows.
 * *out is freed with hy_position_curves_free. Returns the count or a negative code. */
int hy_position_curves(const hy_csv *position, const hy_csv *sweep, hy_position_curve **out);
void hy_position_curves_free(hy_position_curve *c, int n);

/* Per seed, the mean loss over positions lo..hi (0-based, inclusive, clipped to the curve; NAN
 * when no position of it is in range): out[0 .. n_seeds). */
void hy_position_seed_means(const hy_position_curve *c, int lo, int hi, double *out);
/* The hy_stat over seeds of those per-seed means. */
void hy_position_range(const hy_position_curve *c, int lo, int hi, hy_stat *out);

/* A log-spaced bin of positions: 0-based lo..hi, x = the geometric mean of the 1-based positions
 * lo+1 and hi+1 (its place on a log axis), loss = over seeds of each seed's mean over the bin. */
typedef struct {
    int lo, hi;
    double x;
    hy_stat loss;
} hy_position_bin;

/* Bins positions by floor(per_octave x log2(position + 1)): per_octave bins per doubling of the
 * 1-based position, empty ones dropped. Returns the number of bins (at most max). */
int hy_position_bins(const hy_position_curve *c, int per_octave, hy_position_bin *out, int max);

/* ---- one results folder ---- */

/* The CSV files of a results folder (a missing file is an empty table). */
typedef struct {
    hy_csv layers, sweep, eval, train, position;
    hy_csv reference;     /* reference.csv: another experiment's sweep.csv rows with an `experiment` column */
    int found;            /* how many of the five files (reference.csv aside) exist */
} hy_results;

/* Loads dir's layers.csv, sweep.csv, eval.csv, train.csv, position.csv and reference.csv; when
 * sweep.csv has rows but no lr_selected column (an older runner), selects the lr here
 * (hy_select_lr) so every reader sees one. Returns 0 or a negative code (a malformed file); free
 * with hy_results_free either way. */
int hy_results_load(const char *dir, hy_results *r);
void hy_results_free(hy_results *r);

/* Writes report.md in dir from its CSVs (report.c). plots[] = the figures drawn (names without
 * extension). */
int hy_write_report(const char *dir, const char *const *plots, int n_plots, const char *crossover_text);

#endif

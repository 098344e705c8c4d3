/* Reading an experiment's tidy CSV files back (results.c), shared by plot.c and report.c: a table of
 * text cells with named columns, and the quantities the plots and the report share. */
#ifndef HY_EXPERIMENTS_RESULTS_H
#define HY_EXPERIMENTS_RESULTS_H
#include <stdbool.h>
#include <stddef.h>

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

/* Writes report.md in dir from its CSVs (report.c). plots[] = the figures drawn (names without
 * extension). */
int hy_write_report(const char *dir, const char *const *plots, int n_plots, const char *crossover_text);

#endif

/* Reading an experiment's CSV files back, and the numbers that plot.c and report.c share: the
 * crossover points of layers.csv, the learning-rate selection of sweep.csv, the aggregation of
 * runs over seeds, the spread rule, and the loss-against-position curves. */
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "experiments/experiment.h"
#include "experiments/results.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- CSV ---- */

/* Splits the file in place: the header row names the columns, each later line is a row; short
 * rows are padded with "" so every row has n_cols cells. */
int hy_csv_load(const char *path, hy_csv *t) {
    memset(t, 0, sizeof *t);
    if (access(path, F_OK) != 0) return 1;
    size_t len;
    int rc = hy_read_file(path, &t->text, &len);
    if (rc < 0) return rc;
    int lines = 1;
    for (char *p = t->text; *p; p++) lines += *p == '\n';
    char **cells = NULL;
    int row_cap = lines;
    t->rows = calloc((size_t)row_cap, sizeof *t->rows);
    if (!t->rows) return HY_ERR_NOMEM;
    char *save = NULL;
    for (char *line = strtok_r(t->text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        int n = 1;
        for (char *p = line; *p; p++) n += *p == ',';
        cells = calloc((size_t)(n > t->n_cols ? n : t->n_cols) + 1, sizeof *cells);
        if (!cells) return HY_ERR_NOMEM;
        int k = 0;
        for (char *p = line;; k++) {
            cells[k] = p;
            char *c = strchr(p, ',');
            if (!c) break;
            *c = 0;
            p = c + 1;
        }
        if (!t->head) {
            t->head = cells, t->n_cols = n;
            continue;
        }
        for (int j = k + 1; j < t->n_cols; j++) cells[j] = "";
        t->rows[t->n_rows++] = cells;
    }
    if (!t->head) return hy_fail_code(HY_ERR_IO, "%s: empty CSV file (no header row)", path);
    return 0;
}

/* Frees the table (the cells point into t->text) and leaves it empty. */
void hy_csv_free(hy_csv *t) {
    for (int i = 0; i < t->n_rows; i++) free(t->rows[i]);
    free(t->rows);
    free(t->head);
    hy_free(t->text);
    memset(t, 0, sizeof *t);
}

/* Index of the column named `name`, -1 when absent (older CSVs lack newer columns). */
int hy_csv_col(const hy_csv *t, const char *name) {
    for (int j = 0; j < t->n_cols; j++)
        if (!strcmp(t->head[j], name)) return j;
    return -1;
}

/* The cell as text; "" for an absent column, so callers need not test for one. */
const char *hy_csv_str(const hy_csv *t, int row, int col) { return col < 0 ? "" : t->rows[row][col]; }

/* The cell as a number; NAN when empty, absent or not entirely a number. */
double hy_csv_num(const hy_csv *t, int row, int col) {
    const char *s = hy_csv_str(t, row, col);
    char *end;
    double v = strtod(s, &end);
    return *s && !*end ? v : NAN;
}

/* Distinct values of a column in first-seen order (the order the runner wrote them). */
int hy_csv_distinct(const hy_csv *t, int col, const char **out, int max) {
    int n = 0;
    for (int i = 0; i < t->n_rows && col >= 0; i++) {
        const char *s = t->rows[i][col];
        int seen = 0;
        for (int k = 0; k < n && !seen; k++) seen = !strcmp(out[k], s);
        if (!seen && n < max) out[n++] = s;
    }
    return n;
}

/* ---- crossovers ---- */

/* ms of `block` for `pass` at T, or NAN. */
static double ms_at(const hy_csv *L, const char *block, const char *pass, int T) {
    int cb = hy_csv_col(L, "block"), cp = hy_csv_col(L, "pass"), ct = hy_csv_col(L, "seq_len"), cm = hy_csv_col(L, "ms");
    for (int i = 0; i < L->n_rows; i++)
        if (!strcmp(L->rows[i][cb], block) && !strcmp(L->rows[i][cp], pass) && (int)hy_csv_num(L, i, ct) == T)
            return hy_csv_num(L, i, cm);
    return NAN;
}

/* qsort order of ints. */
static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

/* Crossover of every mixer against attention per pass: see results.h. */
int hy_crossovers(const hy_csv *L, hy_crossover *out, int max) {
    static const char *const passes[] = {"fwd", "fwd_bwd"};
    const char *blocks[64];
    int cb = hy_csv_col(L, "block"), ct = hy_csv_col(L, "seq_len"), n = 0;
    if (cb < 0 || ct < 0 || hy_csv_col(L, "pass") < 0 || hy_csv_col(L, "ms") < 0) return 0;
    int nb = hy_csv_distinct(L, cb, blocks, 64);
    int Ts[256], nT = 0;
    for (int i = 0; i < L->n_rows; i++) {
        int T = (int)hy_csv_num(L, i, ct), seen = 0;
        for (int k = 0; k < nT && !seen; k++) seen = Ts[k] == T;
        if (!seen && nT < 256) Ts[nT++] = T;
    }
    qsort(Ts, (size_t)nT, sizeof *Ts, cmp_int);
    for (int b = 0; b < nb; b++) {
        if (!strcmp(blocks[b], "attention") || !strcmp(blocks[b], "attention_naive")) continue;
        /* only registered mixers are alternatives to attention: not feed-forward blocks, nor bench
         * reference rows such as swiglu_moe_active */
        const hy_block_ops *ops = hy_block_find(blocks[b]);
        if (!ops || !(ops->kinds & HY_KIND_MIXER)) continue;
        for (int p = 0; p < 2 && n < max; p++) {
            double lr[256], la[256];
            int T[256], m = 0;
            for (int k = 0; k < nT; k++) {
                double a = ms_at(L, "attention", passes[p], Ts[k]), x = ms_at(L, blocks[b], passes[p], Ts[k]);
                if (a > 0 && x > 0) T[m] = Ts[k], lr[m] = log(x / a), la[m] = log(a), m++;
            }
            if (m == 0) continue;
            hy_crossover *c = &out[n++];
            memset(c, 0, sizeof *c);
            snprintf(c->block, sizeof c->block, "%s", blocks[b]);
            snprintf(c->pass, sizeof c->pass, "%s", passes[p]);
            c->t_min = T[0], c->t_max = T[m - 1];
            if (lr[m - 1] >= 0) {
                c->kind = 2;
                continue;
            }
            int last = -1;   /* the largest T where the block is not faster */
            for (int k = 0; k < m; k++)
                if (lr[k] >= 0) last = k;
            if (last < 0) {
                c->kind = 1;
                continue;
            }
            double f = lr[last] / (lr[last] - lr[last + 1]);
            double lt = log((double)T[last]) + f * (log((double)T[last + 1]) - log((double)T[last]));
            c->t_star = exp(lt);
            c->ms = exp(la[last] + f * (la[last + 1] - la[last]));
        }
    }
    return n;
}

/* One line of text for a crossover (printed after a run and listed in report.md). */
void hy_crossover_text(const hy_crossover *c, char *out, size_t len) {
    if (c->kind == 0) snprintf(out, len, "%.90s vs attention (%.15s): T* = %.0f", c->block, c->pass, c->t_star);
    else if (c->kind == 1)
        snprintf(out, len, "%.90s vs attention (%.15s): faster at every measured T (from %d)", c->block, c->pass, c->t_min);
    else snprintf(out, len, "%.90s vs attention (%.15s): slower at every measured T (up to %d)", c->block, c->pass, c->t_max);
}

/* ---- shared predicates ---- */

/* Whether eval.csv comes from a synthetic task (some row's task is neither the byte corpus,
 * written `corpus` or, by older runners, `none`, nor empty). */
bool hy_results_are_task(const hy_csv *E) {
    int c = E ? hy_csv_col(E, "task") : -1;
    for (int i = 0; c >= 0 && i < E->n_rows; i++) {
        const char *t = hy_csv_str(E, i, c);
        if (*t && strcmp(t, "none") && strcmp(t, "corpus")) return true;
    }
    return false;
}

/* Reading an experiment's CSV files back, and the numbers that plot.c and report.c share: the
 * crossover points of layers.csv, the learning-rate selection of sweep.csv, the aggregation of
 * runs over seeds, the spread rule, and the loss-against-position curves. */
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "core/strbuf.h"
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
    int cb = HY_CSV_FIND(L, LAYERS, block), cp = HY_CSV_FIND(L, LAYERS, pass), ct = HY_CSV_FIND(L, LAYERS, seq_len),
        cm = HY_CSV_FIND(L, LAYERS, ms);
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
    int cb = HY_CSV_FIND(L, LAYERS, block), ct = HY_CSV_FIND(L, LAYERS, seq_len), n = 0;
    if (cb < 0 || ct < 0 || HY_CSV_FIND(L, LAYERS, pass) < 0 || HY_CSV_FIND(L, LAYERS, ms) < 0) return 0;
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
    int c = E ? HY_CSV_FIND(E, EVAL, task) : -1;
    for (int i = 0; c >= 0 && i < E->n_rows; i++) {
        const char *t = hy_csv_str(E, i, c);
        if (*t && strcmp(t, "none") && strcmp(t, "corpus")) return true;
    }
    return false;
}

/* Two cells name the same value: equal text, or both numbers and equal (so "0.01" = "1e-02"). */
static bool same(const char *a, const char *b) {
    if (!strcmp(a, b)) return true;
    char *ea, *eb;
    double x = strtod(a, &ea), y = strtod(b, &eb);
    return *a && *b && !*ea && !*eb && x == y;
}

/* The column `name` of t, or -1 when t is NULL or lacks it. */
static int col_of(const hy_csv *t, const char *name) { return t ? hy_csv_col(t, name) : -1; }

/* Whether row i of sweep.csv is at the selected lr: lr_selected = 1, or no such column. */
static bool row_selected(const hy_csv *S, int i) {
    int c = HY_CSV_FIND(S, SWEEP, lr_selected);
    return c < 0 || hy_csv_num(S, i, c) == 1;
}

/* The eval.csv row of the sweep.csv run in row i at evaluation length len, or -1; seed and lr
 * are matched only where both tables have them. */
static int eval_row_of(const hy_csv *S, int i, const hy_csv *E, double len) {
    if (!E) return -1;
    int sv = HY_CSV_FIND(S, SWEEP, variant), st = HY_CSV_FIND(S, SWEEP, seq_len), ss = HY_CSV_FIND(S, SWEEP, seed),
        sl = HY_CSV_FIND(S, SWEEP, lr);
    int ev = HY_CSV_FIND(E, EVAL, variant), et = HY_CSV_FIND(E, EVAL, seq_len), ee = HY_CSV_FIND(E, EVAL, eval_seq_len),
        es = HY_CSV_FIND(E, EVAL, seed), el = HY_CSV_FIND(E, EVAL, lr);
    if (ev < 0 || et < 0 || ee < 0) return -1;
    for (int j = 0; j < E->n_rows; j++)
        if (!strcmp(hy_csv_str(E, j, ev), hy_csv_str(S, i, sv)) && same(hy_csv_str(E, j, et), hy_csv_str(S, i, st)) &&
            hy_csv_num(E, j, ee) == len && (ss < 0 || es < 0 || same(hy_csv_str(E, j, es), hy_csv_str(S, i, ss))) &&
            (sl < 0 || el < 0 || same(hy_csv_str(E, j, el), hy_csv_str(S, i, sl))))
            return j;
    return -1;
}

/* Accuracy at the training length of the sweep.csv run in row i (eval.csv), NAN if absent. */
static double run_accuracy(const hy_csv *S, int i, const hy_csv *E) {
    int j = eval_row_of(S, i, E, hy_csv_num(S, i, HY_CSV_FIND(S, SWEEP, seq_len)));
    return j < 0 ? NAN : hy_csv_num(E, j, HY_CSV_FIND(E, EVAL, accuracy));
}

/* ---- lr selection ---- */

/* Whether a is (almost exactly) b: means of the same numbers summed in another order tie. */
static bool tie(double a, double b) {
    return a == b || (isfinite(a) && isfinite(b) && fabs(a - b) <= 1e-12 * fmax(fabs(a), fabs(b)));
}

/* 1 when x is better than y (higher, or lower, is better; NAN is worst), -1 when worse, 0 on a tie. */
static int cmp_metric(double x, double y, bool higher) {
    if (!isfinite(x) || !isfinite(y)) return isfinite(x) - isfinite(y);
    if (tie(x, y)) return 0;
    return (higher ? x > y : x < y) ? 1 : -1;
}

/* Mean of the finite values of v over the rows r[0..n) that have flag set in `on`. */
static double mean_over(const double *v, const int *r, const bool *on, int n) {
    double s = 0;
    int k = 0;
    for (int j = 0; j < n; j++)
        if (on[j] && isfinite(v[r[j]])) s += v[r[j]], k++;
    return k ? s / k : NAN;
}

/* Best-of lr per (variant, seq_len) into the lr_selected column (rule: results.h); the runner and
 * older sweep.csv files both go through it, so the report and the CSV never disagree. */
int hy_select_lr(hy_csv *S, const hy_csv *E) {
    if (!S->head) return 0;
    int cv = HY_CSV_FIND(S, SWEEP, variant), ct = HY_CSV_FIND(S, SWEEP, seq_len), cl = HY_CSV_FIND(S, SWEEP, lr),
        closs = HY_CSV_FIND(S, SWEEP, val_loss);
    if (cv < 0 || ct < 0) return hy_fail_code(HY_ERR_IO, "sweep.csv: no variant or seq_len column to select the lr by");
    int csel = HY_CSV_FIND(S, SWEEP, lr_selected);
    if (csel < 0) {   /* append the column */
        char **h = realloc(S->head, ((size_t)S->n_cols + 1) * sizeof *h);
        if (!h) return HY_ERR_NOMEM;
        S->head = h;
        for (int i = 0; i < S->n_rows; i++) {
            char **r = realloc(S->rows[i], ((size_t)S->n_cols + 1) * sizeof *r);
            if (!r) return HY_ERR_NOMEM;
            S->rows[i] = r;
            r[S->n_cols] = "1";
        }
        h[S->n_cols] = (char *)HY_CSV_COL(SWEEP, lr_selected);
        csel = S->n_cols++;
    }
    bool task = hy_results_are_task(E);
    int n = S->n_rows;
    double *loss = malloc(((size_t)n + 1) * 2 * sizeof *loss), *acc = loss + n + 1;
    int *grp = malloc(((size_t)n + 1) * sizeof *grp);
    bool *done = calloc((size_t)n + 1, sizeof *done), *on = calloc((size_t)n + 1, sizeof *on);
    if (!loss || !grp || !done || !on) {
        free(loss), free(grp), free(done), free(on);
        return HY_ERR_NOMEM;
    }
    for (int i = 0; i < n; i++) loss[i] = hy_csv_num(S, i, closs), acc[i] = task ? run_accuracy(S, i, E) : NAN;
    for (int i = 0; i < n; i++) {
        if (done[i]) continue;
        int m = 0;   /* the rows of (variant, seq_len) of row i */
        for (int j = i; j < n; j++)
            if (!done[j] && !strcmp(S->rows[j][cv], S->rows[i][cv]) && same(S->rows[j][ct], S->rows[i][ct]))
                grp[m++] = j, done[j] = true;
        int best = -1;   /* a row at the best lr so far */
        double bl = NAN, ba = NAN;
        for (int a = 0; a < m; a++) {
            bool first = true;   /* the first row of its lr within the group */
            for (int b = 0; b < a && first; b++) first = !same(hy_csv_str(S, grp[b], cl), hy_csv_str(S, grp[a], cl));
            if (!first) continue;
            for (int b = 0; b < m; b++) on[b] = same(hy_csv_str(S, grp[b], cl), hy_csv_str(S, grp[a], cl));
            double ml = mean_over(loss, grp, on, m), ma = mean_over(acc, grp, on, m);
            int c = task ? cmp_metric(ma, ba, true) : 0;
            if (c == 0) c = cmp_metric(ml, bl, false);
            if (c == 0 && best >= 0) {
                double x = hy_csv_num(S, grp[a], cl), y = hy_csv_num(S, best, cl);
                c = x < y ? 1 : -1;
            }
            if (best < 0 || c > 0) best = grp[a], bl = ml, ba = ma;
        }
        for (int b = 0; b < m; b++) S->rows[grp[b]][csel] = same(hy_csv_str(S, grp[b], cl), hy_csv_str(S, best, cl)) ? "1" : "0";
    }
    free(loss), free(grp), free(done), free(on);
    return 0;
}

/* sweep_rows.csv -> sweep.csv with lr_selected, written atomically; sweep_rows.csv is removed
 * only once sweep.csv is in place, so an interruption loses nothing. */
int hy_sweep_finalize(const char *dir) {
    char rows_path[HY_PATH_MAX + 64], path[HY_PATH_MAX + 64];
    snprintf(rows_path, sizeof rows_path, "%s/sweep_rows.csv", dir);
    hy_csv S, E;
    int rc = hy_csv_load(rows_path, &S);
    if (rc != 0) {
        hy_csv_free(&S);
        return rc < 0 ? rc : 0;   /* 1: no sweep_rows.csv, nothing to do */
    }
    snprintf(path, sizeof path, "%s/eval.csv", dir);
    if ((rc = hy_csv_load(path, &E)) < 0) {
        hy_csv_free(&S), hy_csv_free(&E);
        return rc;
    }
    if ((rc = hy_select_lr(&S, &E)) == 0) {
        hy_strbuf b = {0};
        for (int i = -1; i < S.n_rows; i++)
            for (int j = 0; j < S.n_cols; j++) {
                hy_sb_add(&b, i < 0 ? S.head[j] : S.rows[i][j]);
                hy_sb_add(&b, j + 1 < S.n_cols ? "," : "\n");
            }
        size_t len = b.len;
        char *text = hy_sb_take(&b);
        snprintf(path, sizeof path, "%s/sweep.csv", dir);
        rc = text ? hy_write_file_atomic(path, text, len) : HY_ERR_NOMEM;
        free(text);
        if (rc == 0 && unlink(rows_path) != 0) rc = hy_fail_code(HY_ERR_IO, "%s: cannot remove", rows_path);
    }
    hy_csv_free(&S), hy_csv_free(&E);
    return rc;
}

/* ---- groups over seeds ---- */

/* n, mean, sample sd (n - 1), min, max of the finite values (two passes: the sd is not a
 * difference of large sums). */
void hy_stat_of(const double *x, int n, hy_stat *s) {
    double sum = 0;
    s->n = 0, s->min = s->max = NAN;
    for (int i = 0; i < n; i++) {
        if (!isfinite(x[i])) continue;
        sum += x[i];
        s->min = s->n ? fmin(s->min, x[i]) : x[i];
        s->max = s->n ? fmax(s->max, x[i]) : x[i];
        s->n++;
    }
    s->mean = s->n ? sum / s->n : NAN;
    double ss = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(x[i])) ss += (x[i] - s->mean) * (x[i] - s->mean);
    s->sd = s->n >= 2 ? sqrt(ss / (s->n - 1)) : NAN;
}

/* Whether rows of eval.csv, train.csv, position.csv at this lr belong to the reported group. */
bool hy_lr_selected(const hy_csv *S, const char *variant, const char *seq_len, const char *lr) {
    int cv = col_of(S, HY_CSV_COL(SWEEP, variant)), ct = col_of(S, HY_CSV_COL(SWEEP, seq_len)),
        cl = col_of(S, HY_CSV_COL(SWEEP, lr)), cs = col_of(S, HY_CSV_COL(SWEEP, lr_selected));
    if (cv < 0 || ct < 0 || cl < 0 || cs < 0 || !*lr) return true;
    bool any = false;
    for (int i = 0; i < S->n_rows; i++) {
        if (strcmp(hy_csv_str(S, i, cv), variant) || !same(hy_csv_str(S, i, ct), seq_len)) continue;
        any = true;
        if (same(hy_csv_str(S, i, cl), lr)) return hy_csv_num(S, i, cs) == 1;
    }
    return !any;
}

/* Whether a run was stopped by the wall clock, for the dagger on eval.csv and position.csv groups. */
bool hy_run_cut(const hy_csv *S, const char *variant, const char *seq_len, const char *seed, const char *lr) {
    int cv = col_of(S, HY_CSV_COL(SWEEP, variant)), ct = col_of(S, HY_CSV_COL(SWEEP, seq_len)),
        cs = col_of(S, HY_CSV_COL(SWEEP, seed)), cl = col_of(S, HY_CSV_COL(SWEEP, lr)),
        cb = col_of(S, HY_CSV_COL(SWEEP, stopped_by));
    if (cv < 0 || ct < 0 || cb < 0) return false;
    for (int i = 0; i < S->n_rows; i++)
        if (!strcmp(hy_csv_str(S, i, cv), variant) && same(hy_csv_str(S, i, ct), seq_len) &&
            (cs < 0 || !*seed || same(hy_csv_str(S, i, cs), seed)) && (cl < 0 || !*lr || same(hy_csv_str(S, i, cl), lr)) &&
            !strcmp(hy_csv_str(S, i, cb), "seconds"))
            return true;
    return false;
}

/* The spread rule: error bars of mean +- 1 sd that do not overlap (results.h). */
hy_spread hy_spread_compare(const hy_stat *a, const hy_stat *b) {
    if (a->n < 2 || b->n < 2 || !isfinite(a->sd) || !isfinite(b->sd)) return HY_SPREAD_UNKNOWN;
    return fabs(a->mean - b->mean) > a->sd + b->sd ? HY_SPREAD_LARGER : HY_SPREAD_WITHIN;
}

/* Finds or appends the group (variant, seq_len, eval_seq_len, lr: "" = any) among g[0..*n);
 * returns its index, or -1 when out of memory. */
static int group_at(hy_group **g, int *n, int *cap, const char *variant, int T, int eval_T, const char *lr) {
    for (int k = 0; k < *n; k++)
        if (!strcmp((*g)[k].variant, variant) && (*g)[k].seq_len == T && (*g)[k].eval_seq_len == eval_T &&
            (!*lr || same((*g)[k].lr, lr)))
            return k;
    if (*n == *cap) {
        int c = *cap ? 2 * *cap : 16;
        hy_group *p = realloc(*g, (size_t)c * sizeof *p);
        if (!p) return -1;
        *g = p, *cap = c;
    }
    hy_group *x = &(*g)[*n];
    memset(x, 0, sizeof *x);
    snprintf(x->variant, sizeof x->variant, "%s", variant);
    x->seq_len = T, x->eval_seq_len = eval_T;
    return (*n)++;
}

/* Fills the statistics of every group from per-row values: row i belongs to group of[i] (-1:
 * none); v[q][i] is quantity q (loss, bits, accuracy, flops) of row i. */
static int fill_stats(hy_group *g, int ng, const int *of, double *const v[5], int rows) {
    double *x = malloc(((size_t)rows + 1) * sizeof *x);
    if (!x) return HY_ERR_NOMEM;
    for (int k = 0; k < ng; k++) {
        hy_stat *st[5] = {&g[k].loss, &g[k].bits, &g[k].accuracy, &g[k].flops, &g[k].bytes_per_token};
        for (int q = 0; q < 5; q++) {
            int m = 0;
            for (int i = 0; i < rows; i++)
                if (of[i] == k) x[m++] = v[q][i];
            hy_stat_of(x, m, st[q]);
            g[k].runs = m;
        }
    }
    free(x);
    return 0;
}

/* Shared by hy_group_sweep and hy_group_eval: t is sweep.csv (eval = false) or eval.csv. */
static int group_rows(const hy_csv *S, const hy_csv *E, bool eval, bool every_lr, hy_group **out) {
    *out = NULL;
    const hy_csv *t = eval ? E : S;
#define BOTH(col) col_of(t, eval ? HY_CSV_COL(EVAL, col) : HY_CSV_COL(SWEEP, col))   /* a column of both files */
    int cv = BOTH(variant), ct = BOTH(seq_len), ce = eval ? col_of(t, HY_CSV_COL(EVAL, eval_seq_len)) : ct,
        cs = BOTH(seed), cl = BOTH(lr), closs = BOTH(val_loss), cb = BOTH(val_bits_per_byte),
        cbt = BOTH(bytes_per_token);
#undef BOTH
    if (cv < 0 || ct < 0 || ce < 0) return 0;
    int n = t->n_rows, ng = 0, cap = 0, rc = 0;
    int *of = malloc(((size_t)n + 1) * sizeof *of);
    double *v = malloc(((size_t)n + 1) * 5 * sizeof *v);
    hy_group *g = NULL;
    if (!of || !v) {
        rc = HY_ERR_NOMEM;
        goto done;
    }
    double *vq[5] = {v, v + n + 1, v + 2 * (n + 1), v + 3 * (n + 1), v + 4 * (n + 1)};
    for (int i = 0; i < n; i++) {
        const char *var = hy_csv_str(t, i, cv), *T = hy_csv_str(t, i, ct), *lr = hy_csv_str(t, i, cl),
                   *seed = hy_csv_str(t, i, cs);
        bool sel = eval ? hy_lr_selected(S, var, T, lr) : row_selected(t, i);
        of[i] = -1;
        if (!sel && !every_lr) continue;
        int k = group_at(&g, &ng, &cap, var, (int)hy_csv_num(t, i, ct), (int)hy_csv_num(t, i, ce), every_lr ? lr : "");
        if (k < 0) {
            rc = HY_ERR_NOMEM;
            goto done;
        }
        if (!g[k].runs++) snprintf(g[k].lr, sizeof g[k].lr, "%s", lr), g[k].selected = sel;
        g[k].cut |= eval ? hy_run_cut(S, var, T, seed, lr)
                         : !strcmp(hy_csv_str(t, i, col_of(t, HY_CSV_COL(SWEEP, stopped_by))), "seconds");
        of[i] = k;
        double loss = hy_csv_num(t, i, closs);
        vq[0][i] = loss;
        vq[1][i] = cb >= 0 ? hy_csv_num(t, i, cb) : loss / log(2.0);
        vq[2][i] = eval ? hy_csv_num(t, i, col_of(t, HY_CSV_COL(EVAL, accuracy))) : run_accuracy(t, i, E);
        vq[3][i] = eval ? NAN
                        : 3 * hy_csv_num(t, i, col_of(t, HY_CSV_COL(SWEEP, flop_per_token))) *
                              hy_csv_num(t, i, col_of(t, HY_CSV_COL(SWEEP, tokens)));
        /* without the column (an older runner: byte corpora only): 1 byte per token where there are bits per byte */
        vq[4][i] = cbt >= 0 ? hy_csv_num(t, i, cbt) : isfinite(vq[1][i]) ? 1.0 : NAN;
    }
    rc = fill_stats(g, ng, of, vq, n);
done:
    free(of), free(v);
    if (rc < 0) {
        free(g);
        return rc;
    }
    *out = g;
    return ng;
}

/* sweep.csv groups over seeds, at the selected lr or at every lr (the lr table). */
int hy_group_sweep(const hy_csv *S, const hy_csv *E, bool every_lr, hy_group **out) {
    return group_rows(S, E, false, every_lr, out);
}

/* eval.csv groups over seeds per evaluation length, at the selected lr. */
int hy_group_eval(const hy_csv *S, const hy_csv *E, hy_group **out) { return group_rows(S, E, true, false, out); }

/* ---- loss against position ---- */

/* Whether row i of position.csv (columns c[0..2]: variant, seq_len, eval_seq_len) belongs to
 * variant v at training length T and evaluation length L. */
static bool position_row(const hy_csv *P, int i, const int *c, const char *v, double T, double L) {
    return !strcmp(hy_csv_str(P, i, c[0]), v) && hy_csv_num(P, i, c[1]) == T && hy_csv_num(P, i, c[2]) == L;
}

/* Fills curve x of variant v from position.csv: the lr is the selected one (the first such seen),
 * seeds in first-seen order. Returns 0, 1 when v has no row at the selected lr, or a negative code. */
static int position_curve(const hy_csv *P, const hy_csv *S, const char *v, double T, double L, const char **seeds,
                          hy_position_curve *x) {
    const int c[3] = {HY_CSV_FIND(P, POSITION, variant), HY_CSV_FIND(P, POSITION, seq_len),
                      HY_CSV_FIND(P, POSITION, eval_seq_len)};
    int cs = HY_CSV_FIND(P, POSITION, seed), cl = HY_CSV_FIND(P, POSITION, lr), cp = HY_CSV_FIND(P, POSITION, position),
        closs = HY_CSV_FIND(P, POSITION, loss);
    const char *lr = NULL;
    int ns = 0;
    for (int i = 0; i < P->n_rows; i++) {
        if (!position_row(P, i, c, v, T, L)) continue;
        const char *r_lr = hy_csv_str(P, i, cl), *seed = hy_csv_str(P, i, cs), *Ttext = hy_csv_str(P, i, c[1]);
        if (!lr && hy_lr_selected(S, v, Ttext, r_lr)) lr = r_lr;
        if (!lr || !same(r_lr, lr)) continue;
        int s = 0;
        while (s < ns && !same(seeds[s], seed)) s++;
        if (s < ns) continue;
        seeds[ns++] = seed;   /* a new run */
        x->cut |= hy_run_cut(S, v, Ttext, seed, lr);
    }
    if (!lr) return 1;
    snprintf(x->variant, sizeof x->variant, "%s", v);
    snprintf(x->lr, sizeof x->lr, "%s", lr);
    x->seq_len = (int)T, x->eval_seq_len = (int)L, x->n_seeds = ns;
    size_t cells = (size_t)ns * (size_t)L;
    x->loss = malloc(cells * sizeof *x->loss);
    if (!x->loss) return HY_ERR_NOMEM;
    for (size_t k = 0; k < cells; k++) x->loss[k] = NAN;
    for (int i = 0, s = 0; i < P->n_rows; i++) {
        if (!position_row(P, i, c, v, T, L) || !same(hy_csv_str(P, i, cl), lr)) continue;
        if (!same(seeds[s], hy_csv_str(P, i, cs)))   /* rows of one run are usually together */
            for (s = 0; s < ns && !same(seeds[s], hy_csv_str(P, i, cs)); s++) {}
        double p = hy_csv_num(P, i, cp);
        if (s < ns && p >= 0 && p < L) x->loss[(size_t)s * (size_t)L + (size_t)p] = hy_csv_num(P, i, closs);
        if (s == ns) s = 0;
    }
    return 0;
}

/* The curves of the position plot and table: one per variant at the longest training T. */
int hy_position_curves(const hy_csv *P, const hy_csv *S, hy_position_curve **out) {
    *out = NULL;
    int cv = col_of(P, HY_CSV_COL(POSITION, variant)), ct = col_of(P, HY_CSV_COL(POSITION, seq_len)),
        ce = col_of(P, HY_CSV_COL(POSITION, eval_seq_len));
    if (cv < 0 || ct < 0 || ce < 0 || col_of(P, HY_CSV_COL(POSITION, position)) < 0 ||
        col_of(P, HY_CSV_COL(POSITION, loss)) < 0 || !P->n_rows)
        return 0;
    double T = -1, L = -1;   /* the longest training length, then its longest evaluation */
    for (int i = 0; i < P->n_rows; i++) T = fmax(T, hy_csv_num(P, i, ct));
    for (int i = 0; i < P->n_rows; i++)
        if (hy_csv_num(P, i, ct) == T) L = fmax(L, hy_csv_num(P, i, ce));
    if (!(T > 0 && L > 0 && L <= 1 << 24)) return 0;
    const char *vars[256];
    int nv = 0;
    for (int i = 0; i < P->n_rows && nv < 256; i++) {   /* variants with rows at (T, L) */
        if (hy_csv_num(P, i, ct) != T || hy_csv_num(P, i, ce) != L) continue;
        bool seen = false;
        for (int k = 0; k < nv && !seen; k++) seen = !strcmp(vars[k], hy_csv_str(P, i, cv));
        if (!seen) vars[nv++] = hy_csv_str(P, i, cv);
    }
    hy_position_curve *c = calloc((size_t)nv + 1, sizeof *c);
    const char **seeds = malloc(((size_t)P->n_rows + 1) * sizeof *seeds);
    int n = 0, rc = c && seeds ? 0 : HY_ERR_NOMEM;
    for (int k = 0; k < nv && rc >= 0; k++) {
        rc = position_curve(P, S, vars[k], T, L, seeds, &c[n]);
        n += rc == 0;
    }
    free(seeds);
    if (rc < 0) {
        hy_position_curves_free(c, n + 1);
        return rc;
    }
    *out = c;
    return n;
}

/* Frees the curves and their loss arrays. */
void hy_position_curves_free(hy_position_curve *c, int n) {
    for (int k = 0; c && k < n; k++) free(c[k].loss);
    free(c);
}

/* Per seed, the mean loss over a range of positions (the report takes differences per seed). */
void hy_position_seed_means(const hy_position_curve *c, int lo, int hi, double *out) {
    int L = c->eval_seq_len;
    lo = lo < 0 ? 0 : lo, hi = hi >= L ? L - 1 : hi;
    for (int s = 0; s < c->n_seeds; s++) {
        double sum = 0;
        int m = 0;
        for (int p = lo; p <= hi; p++) {
            double v = c->loss[(size_t)s * (size_t)L + (size_t)p];
            if (isfinite(v)) sum += v, m++;
        }
        out[s] = m ? sum / m : NAN;
    }
}

/* Mean +- sd over seeds of the loss over a range of positions (the report's position table). */
void hy_position_range(const hy_position_curve *c, int lo, int hi, hy_stat *out) {
    double *m = malloc(((size_t)c->n_seeds + 1) * sizeof *m);
    if (!m) {
        hy_stat_of(NULL, 0, out);
        return;
    }
    hy_position_seed_means(c, lo, hi, m);
    hy_stat_of(m, c->n_seeds, out);
    free(m);
}

/* The log bin of 0-based position p: floor(per_octave * log2(p + 1)), nudged so exact powers of
 * two land in their own bin. */
static int bin_of(int p, int per_octave) { return (int)floor(per_octave * log2((double)p + 1) + 1e-9); }

/* Log-spaced bins, so the plot is readable on a log axis from position 1 to L. */
int hy_position_bins(const hy_position_curve *c, int per_octave, hy_position_bin *out, int max) {
    int n = 0, L = c->eval_seq_len;
    if (per_octave < 1) per_octave = 1;
    for (int lo = 0; lo < L && n < max;) {
        int hi = lo, b = bin_of(lo, per_octave);
        while (hi + 1 < L && bin_of(hi + 1, per_octave) == b) hi++;
        hy_position_bin *x = &out[n++];
        x->lo = lo, x->hi = hi, x->x = sqrt(((double)lo + 1) * ((double)hi + 1));
        hy_position_range(c, lo, hi, &x->loss);
        lo = hi + 1;
    }
    return n;
}

/* ---- one results folder ---- */

/* Every CSV of a results folder, with lr_selected present on sweep.csv (selected here if absent). */
int hy_results_load(const char *dir, hy_results *r) {
    const char *const files[] = {hy_csv_LAYERS.file, hy_csv_SWEEP.file, hy_csv_EVAL.file, hy_csv_TRAIN.file,
                                 hy_csv_POSITION.file};
    hy_csv *tabs[] = {&r->layers, &r->sweep, &r->eval, &r->train, &r->position};
    char path[HY_PATH_MAX + 64];
    int rc = 0;
    memset(r, 0, sizeof *r);
    for (int k = 0; k < 5; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[k]);
        int st = hy_csv_load(path, tabs[k]);
        if (st < 0 && rc == 0) rc = st;
        r->found += st == 0;
    }
    if (rc == 0 && r->sweep.n_rows && HY_CSV_FIND(&r->sweep, SWEEP, lr_selected) < 0)
        rc = hy_select_lr(&r->sweep, &r->eval);
    snprintf(path, sizeof path, "%s/%s", dir, hy_csv_REFERENCE.file);   /* not counted in found: nothing to plot alone */
    int st = hy_csv_load(path, &r->reference);
    if (st < 0 && rc == 0) rc = st;
    if (rc == 0 && r->reference.n_rows && HY_CSV_FIND(&r->reference, REFERENCE, lr_selected) < 0)
        rc = hy_select_lr(&r->reference, NULL);
    return rc;
}

/* Frees the tables. */
void hy_results_free(hy_results *r) {
    hy_csv *tabs[] = {&r->layers, &r->sweep, &r->eval, &r->train, &r->position, &r->reference};
    for (int k = 0; k < 6; k++) hy_csv_free(tabs[k]);
    r->found = 0;
}

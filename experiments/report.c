/* report.md of an experiment: one table per plot (from the same CSV files), the crossover
 * points, the best variant per sequence length, and the figures embedded. */
#include "core/error.h"
#include "core/fileio.h"
#include "experiments/experiment.h"
#include "experiments/results.h"
#include "models/json.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static bool has(const char *const *plots, int n, const char *name) {
    for (int k = 0; k < n; k++)
        if (!strcmp(plots[k], name)) return true;
    return false;
}

static void figure(hy_strbuf *b, const char *const *plots, int n, const char *name) {
    if (has(plots, n, name)) hy_sb_printf(b, "![%s](%s.svg)\n\n(PNG: [%s.png](%s.png); script: `%s.gp`)\n\n", name, name, name, name, name);
}

/* The value of `col` in the layers.csv row (block, pass, T), as text, or "". */
static const char *layer_cell(const hy_csv *L, const char *block, const char *pass, const char *T, const char *col) {
    int cb = hy_csv_col(L, "block"), cp = hy_csv_col(L, "pass"), ct = hy_csv_col(L, "seq_len"), cv = hy_csv_col(L, col);
    for (int i = 0; i < L->n_rows; i++)
        if (!strcmp(L->rows[i][cb], block) && !strcmp(L->rows[i][cp], pass) && !strcmp(L->rows[i][ct], T))
            return hy_csv_str(L, i, cv);
    return "";
}

/* Whether layers.csv has a row of (block, pass) with a value in `col`. */
static bool has_cells(const hy_csv *L, const char *block, const char *pass, const char *col) {
    int cb = hy_csv_col(L, "block"), cp = hy_csv_col(L, "pass"), cv = hy_csv_col(L, col);
    for (int i = 0; i < L->n_rows; i++)
        if (!strcmp(L->rows[i][cb], block) && !strcmp(L->rows[i][cp], pass) && *hy_csv_str(L, i, cv)) return true;
    return false;
}

/* | T | <block> <pass> <unit> | ... with `col` scaled (scale 0: as written); only the (block, pass)
 * pairs that have rows. */
static void layer_table(hy_strbuf *b, const hy_csv *L, const char *const *passes, int np, const char *col, double scale,
                        const char *unit) {
    const char *blocks[64], *Ts[64];
    int nb = hy_csv_distinct(L, hy_csv_col(L, "block"), blocks, 64), nT = hy_csv_distinct(L, hy_csv_col(L, "seq_len"), Ts, 64);
    hy_sb_add(b, "| T |");
    for (int k = 0; k < nb; k++)
        for (int p = 0; p < np; p++)
            if (has_cells(L, blocks[k], passes[p], col)) hy_sb_printf(b, " %s %s %s |", blocks[k], passes[p], unit);
    hy_sb_add(b, "\n|---|");
    for (int k = 0; k < nb; k++)
        for (int p = 0; p < np; p++)
            if (has_cells(L, blocks[k], passes[p], col)) hy_sb_add(b, "---:|");
    hy_sb_add(b, "\n");
    for (int t = 0; t < nT; t++) {
        hy_sb_printf(b, "| %s |", Ts[t]);
        for (int k = 0; k < nb; k++)
            for (int p = 0; p < np; p++) {
                if (!has_cells(L, blocks[k], passes[p], col)) continue;
                const char *v = layer_cell(L, blocks[k], passes[p], Ts[t], col);
                if (!*v) hy_sb_add(b, " |");
                else if (scale > 0) hy_sb_printf(b, " %.4g |", strtod(v, NULL) * scale);
                else hy_sb_printf(b, " %s |", v);
            }
        hy_sb_add(b, "\n");
    }
    hy_sb_add(b, "\n");
}

/* Accuracy at the training length of (variant, T) in eval.csv, NAN if absent. */
static double accuracy(const hy_csv *E, const char *v, const char *T) {
    int cv = hy_csv_col(E, "variant"), ct = hy_csv_col(E, "seq_len"), ce = hy_csv_col(E, "eval_seq_len");
    for (int i = 0; i < E->n_rows; i++)
        if (!strcmp(hy_csv_str(E, i, cv), v) && !strcmp(hy_csv_str(E, i, ct), T) && !strcmp(hy_csv_str(E, i, ce), T))
            return hy_csv_num(E, i, hy_csv_col(E, "accuracy"));
    return NAN;
}

static void quality_tables(hy_strbuf *b, const hy_csv *S, const hy_csv *E) {
    bool task = hy_results_are_task(E);
    int cv = hy_csv_col(S, "variant"), ct = hy_csv_col(S, "seq_len");
    hy_sb_printf(b, "| variant | T | params | flop/token | tokens | train s | tokens/s | peak MiB | state KiB | val loss | %s |\n"
                    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n", task ? "accuracy" : "val bits/byte");
    for (int i = 0; i < S->n_rows; i++) {
        double q = task ? accuracy(E, hy_csv_str(S, i, cv), hy_csv_str(S, i, ct))
                        : hy_csv_num(S, i, hy_csv_col(S, "val_bits_per_byte"));
        hy_sb_printf(b, "| %s | %s | %s | %.3g | %s | %s | %s | %.2f | %.1f | %s | %.4f |\n", hy_csv_str(S, i, cv),
                     hy_csv_str(S, i, ct), hy_csv_str(S, i, hy_csv_col(S, "params")),
                     hy_csv_num(S, i, hy_csv_col(S, "flop_per_token")), hy_csv_str(S, i, hy_csv_col(S, "tokens")),
                     hy_csv_str(S, i, hy_csv_col(S, "train_s")), hy_csv_str(S, i, hy_csv_col(S, "tokens_per_s")),
                     hy_csv_num(S, i, hy_csv_col(S, "peak_bytes")) / 1048576, hy_csv_num(S, i, hy_csv_col(S, "state_bytes")) / 1024,
                     hy_csv_str(S, i, hy_csv_col(S, "val_loss")), q);
    }
    const char *Ts[64];
    int nT = hy_csv_distinct(S, ct, Ts, 64);
    hy_sb_printf(b, "\n### Best variant per T\n\n%s\n\n| T | best variant | %s | runner-up | %s |\n|---:|---|---:|---|---:|\n",
                 task ? "Highest accuracy on the answer positions." : "Lowest validation bits per byte.",
                 task ? "accuracy" : "bits/byte", task ? "accuracy" : "bits/byte");
    for (int t = 0; t < nT; t++) {
        int best = -1, second = -1;
        double bq = NAN, sq = NAN;
        for (int i = 0; i < S->n_rows; i++) {
            if (strcmp(hy_csv_str(S, i, ct), Ts[t])) continue;
            double q = task ? accuracy(E, hy_csv_str(S, i, cv), Ts[t]) : hy_csv_num(S, i, hy_csv_col(S, "val_bits_per_byte"));
            if (!isfinite(q)) continue;
            bool better = best < 0 || (task ? q > bq : q < bq);
            if (better) second = best, sq = bq, best = i, bq = q;
            else if (second < 0 || (task ? q > sq : q < sq)) second = i, sq = q;
        }
        if (best < 0) continue;
        hy_sb_printf(b, "| %s | %s | %.4f | %s | ", Ts[t], hy_csv_str(S, best, cv), bq, second >= 0 ? hy_csv_str(S, second, cv) : "");
        if (second >= 0) hy_sb_printf(b, "%.4f |\n", sq);
        else hy_sb_add(b, " |\n");
    }
    hy_sb_add(b, "\n");
}

static void eval_table(hy_strbuf *b, const hy_csv *E) {
    hy_sb_add(b, "| variant | trained at T | evaluated at T | val loss | accuracy | answers |\n|---|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < E->n_rows; i++)
        hy_sb_printf(b, "| %s | %s | %s | %s | %s | %s |\n", hy_csv_str(E, i, hy_csv_col(E, "variant")),
                     hy_csv_str(E, i, hy_csv_col(E, "seq_len")), hy_csv_str(E, i, hy_csv_col(E, "eval_seq_len")),
                     hy_csv_str(E, i, hy_csv_col(E, "val_loss")), hy_csv_str(E, i, hy_csv_col(E, "accuracy")),
                     hy_csv_str(E, i, hy_csv_col(E, "labels")));
    hy_sb_add(b, "\n");
}

/* The last row of each (variant, T) run of train.csv: steps, tokens, last train and val loss. */
static void learning_table(hy_strbuf *b, const hy_csv *R) {
    int cv = hy_csv_col(R, "variant"), ct = hy_csv_col(R, "seq_len"), cl = hy_csv_col(R, "train_loss"),
        cval = hy_csv_col(R, "val_loss");
    hy_sb_add(b, "| variant | T | steps | tokens | elapsed s | last train loss | last val loss |\n|---|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < R->n_rows; i++) {
        bool last = i + 1 == R->n_rows || strcmp(hy_csv_str(R, i + 1, cv), hy_csv_str(R, i, cv)) ||
                    strcmp(hy_csv_str(R, i + 1, ct), hy_csv_str(R, i, ct));
        if (!last) continue;
        const char *tl = "", *vl = "";
        for (int j = i; j >= 0 && !strcmp(hy_csv_str(R, j, cv), hy_csv_str(R, i, cv)) &&
                        !strcmp(hy_csv_str(R, j, ct), hy_csv_str(R, i, ct)); j--) {
            if (!*tl && *hy_csv_str(R, j, cl)) tl = hy_csv_str(R, j, cl);
            if (!*vl && *hy_csv_str(R, j, cval)) vl = hy_csv_str(R, j, cval);
        }
        hy_sb_printf(b, "| %s | %s | %s | %s | %s | %s | %s |\n", hy_csv_str(R, i, cv), hy_csv_str(R, i, ct),
                     hy_csv_str(R, i, hy_csv_col(R, "step")), hy_csv_str(R, i, hy_csv_col(R, "tokens")),
                     hy_csv_str(R, i, hy_csv_col(R, "elapsed_s")), tl, vl);
    }
    hy_sb_add(b, "\n");
}

int hy_write_report(const char *dir, const char *const *plots, int np, const char *crossover_text) {
    hy_csv L, S, E, R;
    static const char *const files[] = {"layers.csv", "sweep.csv", "eval.csv", "train.csv"};
    hy_csv *tabs[] = {&L, &S, &E, &R};
    char path[HY_PATH_MAX + 64];
    int rc = 0;
    for (int k = 0; k < 4; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[k]);
        if (hy_csv_load(path, tabs[k]) < 0) rc = -1;
    }
    const char *name = strrchr(dir, '/');
    name = name && name[1] ? name + 1 : dir;
    hy_strbuf b = {0};
    hy_sb_printf(&b, "# Experiment `%s`\n\nWritten by `hybrid-exp plot %s` from the CSV files beside it (columns: "
                     "docs/experiments.md). Times were measured on the machine that ran the experiment; on a shared "
                     "machine they are noisy.\n\n", name, dir);
    if (L.n_rows) {
        static const char *const cost[] = {"fwd", "fwd_bwd", "step"};
        hy_sb_add(&b, "## Complexity (layers.csv)\n\nOne block, batch 1: time per call in ms (`step`: per token at context T).\n\n");
        figure(&b, plots, np, "complexity");
        layer_table(&b, &L, cost, 3, "ms", 0, "ms");
        hy_sb_add(&b, "### Crossover points against attention\n\nT* is where a block becomes, and stays, faster than attention "
                      "(log-log interpolation between the measured T).\n\n");
        if (*crossover_text) {
            for (const char *p = crossover_text; *p;) {
                const char *e = strchr(p, '\n');
                size_t n = e ? (size_t)(e - p) : strlen(p);
                hy_sb_add(&b, "- ");
                hy_sb_addn(&b, p + strlen("crossover: "), n - strlen("crossover: "));
                hy_sb_add(&b, "\n");
                p += n + (e != NULL);
            }
        } else hy_sb_add(&b, "- none: layers.csv has no mixer block besides attention to compare\n");
        hy_sb_add(&b, "\n## Memory (layers.csv)\n\n");
        figure(&b, plots, np, "memory");
        static const char *const pk[] = {"fwd_bwd"}, *const stp[] = {"step"};
        layer_table(&b, &L, pk, 1, "peak_bytes", 1.0 / 1048576, "peak MiB");
        layer_table(&b, &L, stp, 1, "state_bytes", 1.0 / 1024, "state KiB");
    }
    if (S.n_rows) {
        hy_sb_add(&b, "## Quality (sweep.csv)\n\nEvery variant at every sequence length with the same budget. Training FLOPs = "
                      "3 x flop_per_token x tokens.\n\n");
        figure(&b, plots, np, "quality");
        quality_tables(&b, &S, &E);
    }
    if (E.n_rows) {
        hy_sb_add(&b, "## Evaluation lengths (eval.csv)\n\n");
        figure(&b, plots, np, "generalization");
        eval_table(&b, &E);
    }
    if (R.n_rows) {
        hy_sb_add(&b, "## Learning curves (train.csv)\n\n");
        figure(&b, plots, np, "learning");
        learning_table(&b, &R);
    }
    for (int k = 0; k < 4; k++) hy_csv_free(tabs[k]);
    size_t len = b.len;
    char *text = hy_sb_take(&b);
    if (!text) return HY_ERR_NOMEM;
    snprintf(path, sizeof path, "%s/report.md", dir);
    if (rc == 0) rc = hy_write_file_atomic(path, text, len);
    else rc = hy_fail_code(HY_ERR_IO, "%s: a CSV file could not be read", dir);
    free(text);
    return rc;
}

/* report.md of an experiment: one table per plot (from the same CSV files), the crossover
 * points, per sequence length the variants' mean +- sd over seeds at the selected learning rate,
 * the best variant and every pairwise difference against the spread, the learning-rate table, the
 * loss against position, and the figures embedded. Groups that include a run cut by the wall
 * clock are marked with a dagger and never ranked against complete ones without saying so. */
#include "core/error.h"
#include "core/fileio.h"
#include "core/strbuf.h"
#include "experiments/experiment.h"
#include "experiments/results.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* Whether `name` is among the figures drawn. */
static bool has(const char *const *plots, int n, const char *name) {
    for (int k = 0; k < n; k++)
        if (!strcmp(plots[k], name)) return true;
    return false;
}

/* Embeds the figure `name` (SVG, with the PNG and the script named) when it was drawn. */
static void figure(hy_strbuf *b, const char *const *plots, int n, const char *name) {
    if (has(plots, n, name)) hy_sb_printf(b, "![%s](%s.svg)\n\n(PNG: [%s.png](%s.png); script: `%s.gp`)\n\n", name, name, name, name, name);
}

/* The value of `col` in the layers.csv row (block, pass, T), as text, or "". */
static const char *layer_cell(const hy_csv *L, const char *block, const char *pass, const char *T, const char *col) {
    int cb = HY_CSV_FIND(L, LAYERS, block), cp = HY_CSV_FIND(L, LAYERS, pass), ct = HY_CSV_FIND(L, LAYERS, seq_len),
        cv = hy_csv_col(L, col);
    for (int i = 0; i < L->n_rows; i++)
        if (!strcmp(L->rows[i][cb], block) && !strcmp(L->rows[i][cp], pass) && !strcmp(L->rows[i][ct], T))
            return hy_csv_str(L, i, cv);
    return "";
}

/* Whether layers.csv has a row of (block, pass) with a value in `col`. */
static bool has_cells(const hy_csv *L, const char *block, const char *pass, const char *col) {
    int cb = HY_CSV_FIND(L, LAYERS, block), cp = HY_CSV_FIND(L, LAYERS, pass), cv = hy_csv_col(L, col);
    for (int i = 0; i < L->n_rows; i++)
        if (!strcmp(L->rows[i][cb], block) && !strcmp(L->rows[i][cp], pass) && *hy_csv_str(L, i, cv)) return true;
    return false;
}

/* | T | <block> <pass> <unit> | ... with `col` scaled (scale 0: as written); only the (block, pass)
 * pairs that have rows. */
static void layer_table(hy_strbuf *b, const hy_csv *L, const char *const *passes, int np, const char *col, double scale,
                        const char *unit) {
    const char *blocks[64], *Ts[64];
    int nb = hy_csv_distinct(L, HY_CSV_FIND(L, LAYERS, block), blocks, 64),
        nT = hy_csv_distinct(L, HY_CSV_FIND(L, LAYERS, seq_len), Ts, 64);
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

static const char *const DAGGER = " †";

/* A statistic as text: "–" without a value, the value alone for one seed, else "mean ± sd". */
static void stat_text(char *out, size_t n, const hy_stat *s) {
    if (s->n == 0) snprintf(out, n, "–");
    else if (s->n == 1) snprintf(out, n, "%.4f", s->mean);
    else snprintf(out, n, "%.4f ± %.4f", s->mean, s->sd);
}

/* min – max of a statistic over at least two seeds, "–" otherwise. */
static void range_text(char *out, size_t n, const hy_stat *s) {
    if (s->n < 2) snprintf(out, n, "–");
    else snprintf(out, n, "%.4f – %.4f", s->min, s->max);
}

/* qsort order of ints. */
static int cmp_int(const void *a, const void *b) { return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b); }

/* The distinct training lengths of the groups, ascending; returns the count. */
static int group_lengths(const hy_group *g, int ng, int *Ts, int max) {
    int n = 0;
    for (int k = 0; k < ng; k++) {
        bool seen = false;
        for (int j = 0; j < n && !seen; j++) seen = Ts[j] == g[k].seq_len;
        if (!seen && n < max) Ts[n++] = g[k].seq_len;
    }
    qsort(Ts, (size_t)n, sizeof *Ts, cmp_int);
    return n;
}

/* The quality statistic of a group: accuracy (tasks, higher is better) or bits per byte. */
static const hy_stat *quality_of(const hy_group *g, bool task) { return task ? &g->accuracy : &g->bits; }

/* Whether group a ranks above group b (a finite metric above none; ties keep the order). */
static bool ranks_above(const hy_group *a, const hy_group *b, bool task) {
    double x = quality_of(a, task)->mean, y = quality_of(b, task)->mean;
    if (!isfinite(y)) return isfinite(x);
    return isfinite(x) && (task ? x > y : x < y);
}

/* The spread rule's verdict on groups a and b, as table text. */
static void spread_text(char *out, size_t n, const hy_group *a, const hy_group *b, bool task) {
    const hy_stat *x = quality_of(a, task), *y = quality_of(b, task);
    hy_spread s = hy_spread_compare(x, y);
    const char *v = s == HY_SPREAD_LARGER  ? "larger than the spread"
                    : s == HY_SPREAD_WITHIN ? "within the spread"
                                            : "spread unknown (n < 2)";
    snprintf(out, n, "%s%s", v, a->cut || b->cut ? "; † a group cut by the wall clock: not like for like" : "");
}

/* Per T: the variants' mean ± sd table, then the best variant per T, then every pair of
 * variants against the spread. */
static void quality_tables(hy_strbuf *b, const hy_group *g, int ng, bool task, bool *cut_any) {
    int Ts[64], nT = group_lengths(g, ng, Ts, 64);
    const char *q = task ? "accuracy" : "bits/byte";
    for (int t = 0; t < nT; t++) {
        hy_sb_printf(b, "### T = %d\n\n| variant | lr | n | %s (mean ± sd) | %s min – max | val loss (mean ± sd) |\n"
                        "|---|---:|---:|---:|---:|---:|\n", Ts[t], q, q);
        for (int k = 0; k < ng; k++) {
            if (g[k].seq_len != Ts[t]) continue;
            char m[64], r[64], l[64];
            stat_text(m, sizeof m, quality_of(&g[k], task));
            range_text(r, sizeof r, quality_of(&g[k], task));
            stat_text(l, sizeof l, &g[k].loss);
            hy_sb_printf(b, "| %s%s | %s | %d | %s | %s | %s |\n", g[k].variant, g[k].cut ? DAGGER : "", *g[k].lr ? g[k].lr : "–",
                         g[k].runs, m, r, l);
            *cut_any |= g[k].cut;
        }
        hy_sb_add(b, "\n");
    }
    hy_sb_printf(b, "### Best variant per T\n\n%s, mean over seeds at the selected lr.%s\n\n"
                    "| T | best variant | %s | runner-up | %s | difference vs spread |\n|---:|---|---:|---|---:|---|\n",
                 task ? "Highest accuracy on the answer positions" : "Lowest validation bits per byte",
                 *cut_any ? " A group marked † is not ranked against complete groups: the last column lists it instead; "
                            "only where every group at a T is marked are they ranked, among themselves, and the last column "
                            "says so."
                          : "",
                 q, q);
    for (int t = 0; t < nT; t++) {
        bool complete = false;   /* whether T has a complete group with a value: then only those are ranked */
        for (int k = 0; k < ng; k++)
            complete |= g[k].seq_len == Ts[t] && !g[k].cut && isfinite(quality_of(&g[k], task)->mean);
        int best = -1, second = -1;
        hy_strbuf unranked = {0};
        for (int k = 0; k < ng; k++) {
            if (g[k].seq_len != Ts[t] || !isfinite(quality_of(&g[k], task)->mean)) continue;
            if (complete && g[k].cut) {
                hy_sb_printf(&unranked, "%s%s%s", unranked.len ? ", " : "", g[k].variant, DAGGER);
                continue;
            }
            if (best < 0 || ranks_above(&g[k], &g[best], task)) second = best, best = k;
            else if (second < 0 || ranks_above(&g[k], &g[second], task)) second = k;
        }
        if (best < 0) {
            hy_sb_free(&unranked);
            continue;
        }
        char note[400] = "";
        if (second >= 0) spread_text(note, sizeof note, &g[best], &g[second], task);
        hy_sb_printf(b, "| %d | %s%s | %.4f | %s%s | ", Ts[t], g[best].variant, g[best].cut ? DAGGER : "",
                     quality_of(&g[best], task)->mean, second >= 0 ? g[second].variant : "",
                     second >= 0 && g[second].cut ? DAGGER : "");
        if (second >= 0) hy_sb_printf(b, "%.4f | %s", quality_of(&g[second], task)->mean, note);
        else hy_sb_add(b, " | no runner-up");
        if (unranked.len) hy_sb_printf(b, "; not ranked (cut by the wall clock): %s", unranked.p);
        if (!complete && g[best].cut) hy_sb_add(b, "; every group at this T was cut by the wall clock");
        hy_sb_add(b, " |\n");
        hy_sb_free(&unranked);
    }
    hy_sb_printf(b, "\n### Differences against the spread\n\nFor two variants A and B at the same T, the difference of their "
                    "means is called larger than the spread when |mean A − mean B| > sd A + sd B: their mean ± 1 sd error "
                    "bars do not overlap. It describes the seeds run here; it is not a significance test. With one seed in "
                    "either group there is no sd and the spread is unknown. Quantity: %s.\n\n"
                    "| T | A | B | mean A − mean B | sd A + sd B | verdict |\n|---:|---|---|---:|---:|---|\n",
                 task ? "accuracy at the training length" : "validation bits per byte");
    for (int t = 0; t < nT; t++)
        for (int i = 0; i < ng; i++)
            for (int j = i + 1; j < ng && g[i].seq_len == Ts[t]; j++) {
                if (g[j].seq_len != Ts[t]) continue;
                const hy_stat *x = quality_of(&g[i], task), *y = quality_of(&g[j], task);
                if (!isfinite(x->mean) || !isfinite(y->mean)) continue;
                char note[400], sd[64] = "–";
                spread_text(note, sizeof note, &g[i], &g[j], task);
                if (x->n >= 2 && y->n >= 2) snprintf(sd, sizeof sd, "%.4f", x->sd + y->sd);
                hy_sb_printf(b, "| %d | %s%s | %s%s | %+.4f | %s | %s |\n", Ts[t], g[i].variant, g[i].cut ? DAGGER : "",
                             g[j].variant, g[j].cut ? DAGGER : "", x->mean - y->mean, sd, note);
            }
    hy_sb_add(b, "\n");
}

/* Every lr of every (variant, T): n, mean val loss (and accuracy), which one was selected. */
static void lr_table(hy_strbuf *b, const hy_group *g, int ng, bool task, bool *cut_any) {
    bool cut = false;
    for (int k = 0; k < ng; k++) cut |= g[k].cut;
    hy_sb_printf(b, "### Learning rates\n\nEach (variant, T) is reported at its selected learning rate: the lr with the lowest "
                    "mean validation loss over its seeds%s; remaining ties go to the smaller lr.%s Every lr tried:\n\n| variant | T | lr | n | val loss (mean ± sd) |%s selected |\n"
                    "|---|---:|---:|---:|---:|%s---|\n",
                 task ? " — for a task the highest mean accuracy at the training length, ties to the lower mean validation loss"
                      : "",
                 cut ? " Runs cut by the wall clock take part (marked †)." : "", task ? " accuracy (mean ± sd) |" : "",
                 task ? "---:|" : "");
    int Ts[64], nT = group_lengths(g, ng, Ts, 64);
    for (int t = 0; t < nT; t++)
        for (int k = 0; k < ng; k++) {
            if (g[k].seq_len != Ts[t]) continue;
            char l[64], a[64];
            stat_text(l, sizeof l, &g[k].loss);
            stat_text(a, sizeof a, &g[k].accuracy);
            hy_sb_printf(b, "| %s%s | %d | %s | %d | %s |", g[k].variant, g[k].cut ? DAGGER : "", g[k].seq_len,
                         *g[k].lr ? g[k].lr : "–", g[k].runs, l);
            if (task) hy_sb_printf(b, " %s |", a);
            hy_sb_printf(b, " %s |\n", g[k].selected ? "**yes**" : "");
            *cut_any |= g[k].cut;
        }
    hy_sb_add(b, "\n");
}

/* Every run of sweep.csv: its seed, lr, how it stopped, costs, and its quality. */
static void runs_table(hy_strbuf *b, const hy_results *r, bool task) {
    const hy_csv *S = &r->sweep;
    int cv = HY_CSV_FIND(S, SWEEP, variant), ct = HY_CSV_FIND(S, SWEEP, seq_len), cs = HY_CSV_FIND(S, SWEEP, seed),
        cl = HY_CSV_FIND(S, SWEEP, lr), cstop = HY_CSV_FIND(S, SWEEP, stopped_by), cp = HY_CSV_FIND(S, SWEEP, params),
        cf = HY_CSV_FIND(S, SWEEP, flop_per_token), ctok = HY_CSV_FIND(S, SWEEP, tokens),
        cts = HY_CSV_FIND(S, SWEEP, train_s), ctps = HY_CSV_FIND(S, SWEEP, tokens_per_s),
        cpeak = HY_CSV_FIND(S, SWEEP, peak_bytes), cstate = HY_CSV_FIND(S, SWEEP, state_bytes),
        closs = HY_CSV_FIND(S, SWEEP, val_loss), cbits = HY_CSV_FIND(S, SWEEP, val_bits_per_byte),
        cbpt = HY_CSV_FIND(S, SWEEP, bytes_per_token);
    hy_sb_printf(b, "### Runs\n\n| variant | T | seed | lr | stopped by | params | flop/token | tokens | train s | tokens/s | "
                    "peak MiB | state KiB | val loss | %s |\n|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|%s\n",
                 task ? "accuracy" : "val bits/byte | bytes/token", task ? "" : "---:|");
    for (int i = 0; i < S->n_rows; i++) {
        const char *stop = hy_csv_str(S, i, cstop);
        double q = NAN;
        if (!task) q = hy_csv_num(S, i, cbits);
        else {   /* this run's accuracy at its training length */
            const hy_csv *E = &r->eval;
            int ev = HY_CSV_FIND(E, EVAL, variant), et = HY_CSV_FIND(E, EVAL, seq_len),
                ee = HY_CSV_FIND(E, EVAL, eval_seq_len), es = HY_CSV_FIND(E, EVAL, seed), el = HY_CSV_FIND(E, EVAL, lr);
            for (int j = 0; j < E->n_rows && !isfinite(q); j++)
                if (!strcmp(hy_csv_str(E, j, ev), hy_csv_str(S, i, cv)) && !strcmp(hy_csv_str(E, j, et), hy_csv_str(S, i, ct)) &&
                    !strcmp(hy_csv_str(E, j, ee), hy_csv_str(S, i, ct)) &&
                    (es < 0 || !strcmp(hy_csv_str(E, j, es), hy_csv_str(S, i, cs))) &&
                    (el < 0 || !strcmp(hy_csv_str(E, j, el), hy_csv_str(S, i, cl))))
                    q = hy_csv_num(E, j, HY_CSV_FIND(E, EVAL, accuracy));
        }
        char qs[32] = "–";
        if (isfinite(q)) snprintf(qs, sizeof qs, "%.4f", q);
        if (!task) {   /* and the text bytes per evaluated token (1 for bytes; "–" where unknown) */
            double bpt = cbpt >= 0 ? hy_csv_num(S, i, cbpt) : 1.0;
            size_t n = strlen(qs);
            if (isfinite(bpt)) snprintf(qs + n, sizeof qs - n, " | %.3f", bpt);
            else snprintf(qs + n, sizeof qs - n, " | –");
        }
        hy_sb_printf(b, "| %s | %s | %s | %s | %s%s | %s | %.3g | %s | %s | %s | %.2f | %.1f | %s | %s |\n", hy_csv_str(S, i, cv),
                     hy_csv_str(S, i, ct), hy_csv_str(S, i, cs), hy_csv_str(S, i, cl), stop,
                     !strcmp(stop, "seconds") ? DAGGER : "", hy_csv_str(S, i, cp), hy_csv_num(S, i, cf),
                     hy_csv_str(S, i, ctok), hy_csv_str(S, i, cts), hy_csv_str(S, i, ctps),
                     hy_csv_num(S, i, cpeak) / 1048576, hy_csv_num(S, i, cstate) / 1024, hy_csv_str(S, i, closs), qs);
    }
    hy_sb_add(b, "\n");
}

/* eval.csv as matrices: a row per (variant, training T), a column per evaluation length, the
 * cells mean ± sd over seeds at the selected lr of `what` (accuracy, bits per byte or loss). */
static void eval_matrix(hy_strbuf *b, const hy_group *g, int ng, int what, bool *cut_any) {
    int Ls[64], nL = 0;
    for (int k = 0; k < ng; k++) {
        bool seen = false;
        for (int j = 0; j < nL && !seen; j++) seen = Ls[j] == g[k].eval_seq_len;
        if (!seen && nL < 64) Ls[nL++] = g[k].eval_seq_len;
    }
    qsort(Ls, (size_t)nL, sizeof *Ls, cmp_int);
    static const char *const names[] = {"accuracy", "validation bits per byte", "validation loss (nats per token)"};
    hy_sb_printf(b, "%s, mean ± sd over seeds (n: seeds at the training length):\n\n| variant | trained at T | n |", names[what]);
    for (int j = 0; j < nL; j++) hy_sb_printf(b, " at %d |", Ls[j]);
    hy_sb_add(b, "\n|---|---:|---:|");
    for (int j = 0; j < nL; j++) hy_sb_add(b, "---:|");
    hy_sb_add(b, "\n");
    for (int k = 0; k < ng; k++) {
        bool first = true, cut = false;   /* a row at the first group of each (variant, T) */
        for (int j = 0; j < k && first; j++) first = strcmp(g[j].variant, g[k].variant) || g[j].seq_len != g[k].seq_len;
        if (!first) continue;
        int n = 0;
        for (int j = k; j < ng; j++)
            if (!strcmp(g[j].variant, g[k].variant) && g[j].seq_len == g[k].seq_len) {
                cut |= g[j].cut;
                if (g[j].eval_seq_len == g[j].seq_len || !n) n = g[j].runs;
            }
        hy_sb_printf(b, "| %s%s | %d | %d |", g[k].variant, cut ? DAGGER : "", g[k].seq_len, n);
        *cut_any |= cut;
        for (int l = 0; l < nL; l++) {
            char cell[64] = "";
            for (int j = k; j < ng; j++)
                if (!strcmp(g[j].variant, g[k].variant) && g[j].seq_len == g[k].seq_len && g[j].eval_seq_len == Ls[l])
                    stat_text(cell, sizeof cell, what == 0 ? &g[j].accuracy : what == 1 ? &g[j].bits : &g[j].loss);
            hy_sb_printf(b, " %s |", cell);
        }
        hy_sb_add(b, "\n");
    }
    hy_sb_add(b, "\n");
}

/* The loss-against-position table: per variant the mean loss at positions 16–31, 128–255 and the
 * last half of the window, and last half minus 16–31 (per seed, then mean ± sd). */
static int position_table(hy_strbuf *b, const hy_results *r, const char *const *plots, int np, bool *cut_any) {
    hy_position_curve *c;
    int nc = hy_position_curves(&r->position, &r->sweep, &c);
    if (nc <= 0) return nc;
    int L = c[0].eval_seq_len;
    hy_sb_printf(b, "## Loss against position (position.csv)\n\nThe loss of each prediction against its position in the "
                    "context window (0-based: position p predicts token p + 1 after seeing p + 1 tokens, bytes for a byte "
                    "corpus), for the runs trained at the longest T (%d), at the selected lr, on the held-out windows of "
                    "the longest evaluation (L = %d). The figure averages log-spaced bins of positions (4 per doubling) "
                    "over seeds. A loss that keeps falling with the position means the model uses distant context; in the "
                    "table, last half − 16–31 is negative when it does.\n\n",
                 c[0].seq_len, L);
    figure(b, plots, np, "position");
    hy_sb_printf(b, "| variant | lr | n | loss at 16–31 | loss at 128–255 | loss at %d–%d (last half) | last half − 16–31 |\n"
                    "|---|---:|---:|---:|---:|---:|---:|\n", L / 2, L - 1);
    for (int k = 0; k < nc; k++) {
        const hy_position_curve *x = &c[k];
        hy_stat s[4];
        char t[4][64];
        double *a = malloc(2 * ((size_t)x->n_seeds + 1) * sizeof *a), *z = a ? a + x->n_seeds + 1 : NULL;
        if (!a) {
            hy_position_curves_free(c, nc);
            return HY_ERR_NOMEM;
        }
        static const int lo[3] = {16, 128, -1}, hi[3] = {31, 255, -1};
        for (int q = 0; q < 3; q++) {
            int l = q == 2 ? L / 2 : lo[q], h = q == 2 ? L - 1 : hi[q];
            if (h >= L) s[q].n = 0;   /* the window does not reach the whole range */
            else hy_position_range(x, l, h, &s[q]);
        }
        hy_position_seed_means(x, L / 2, L - 1, a);
        hy_position_seed_means(x, 16, 31, z);
        for (int i = 0; i < x->n_seeds; i++) a[i] -= z[i];
        if (L > 32) hy_stat_of(a, x->n_seeds, &s[3]);
        else s[3].n = 0;
        free(a);
        for (int q = 0; q < 4; q++) stat_text(t[q], sizeof t[q], &s[q]);
        hy_sb_printf(b, "| %s%s | %s | %d | %s | %s | %s | %s |\n", x->variant, x->cut ? DAGGER : "", *x->lr ? x->lr : "–",
                     x->n_seeds, t[0], t[1], t[2], t[3]);
        *cut_any |= x->cut;
    }
    hy_sb_add(b, "\n");
    hy_position_curves_free(c, nc);
    return 0;
}

/* One run's change of the validation loss over its last 20% of steps, for the summary by group. */
typedef struct {
    const char *variant, *seq_len, *lr;
    double change;   /* percent; NAN when the run has no evaluation at or before 80% */
} run_change;

/* Whether two runs belong to one group of the summary: the same variant, T and lr. */
static bool same_group(const run_change *a, const run_change *b) {
    return !strcmp(a->variant, b->variant) && !strcmp(a->seq_len, b->seq_len) && !strcmp(a->lr, b->lr);
}

/* Mean ± sd over the seeds of each (variant, T, lr) of the runs' last-20% changes, in the order
 * the groups first appear, and whether the mean passes the flattening test (improves by < 2%):
 * seeds of one group differ by more than the test's margin at any budget worth running, so a
 * study's curves are judged by their mean over seeds, and each run's own change is in the table
 * above. */
static void flattening_by_group(hy_strbuf *b, const run_change *rc, int n) {
    hy_sb_add(b, "By group, the mean over seeds of that change (the flattening test on the study's curves):\n\n"
                 "| variant | T | lr | n | val change, last 20% (mean ± sd) | min – max | flattened (mean improves by < 2%) |\n"
                 "|---|---:|---:|---:|---:|---:|---|\n");
    for (int i = 0; i < n; i++) {
        bool first = true;
        for (int j = 0; j < i && first; j++) first = !same_group(&rc[j], &rc[i]);
        if (!first) continue;
        double x[n];
        int m = 0;
        for (int j = i; j < n; j++)
            if (same_group(&rc[j], &rc[i])) x[m++] = rc[j].change;
        hy_stat st;
        hy_stat_of(x, m, &st);
        char mean[48] = "–", range[48] = "–";
        if (st.n == 1) snprintf(mean, sizeof mean, "%+.2f%%", st.mean);
        else if (st.n > 1) snprintf(mean, sizeof mean, "%+.2f%% ± %.2f", st.mean, st.sd);
        if (st.n > 1) snprintf(range, sizeof range, "%+.2f%% – %+.2f%%", st.min, st.max);
        hy_sb_printf(b, "| %s | %s | %s | %d | %s | %s | %s |\n", rc[i].variant, rc[i].seq_len, *rc[i].lr ? rc[i].lr : "–",
                     st.n, mean, range, st.n ? (st.mean > -2.0 ? "yes" : "no") : "–");
    }
    hy_sb_add(b, "\n");
}

/* The last row of each run of train.csv (contiguous rows of one variant, T, seed, peak lr):
 * steps, tokens, last train and val loss, and the relative change of the val loss over the last 20%
 * of the steps (from the last evaluation at or before 80% of the final step to the last one): the
 * flattening test of docs/experiments.md (a curve has flattened when it improves by < 2% there);
 * then the same change by group (flattening_by_group). */
static void learning_table(hy_strbuf *b, const hy_csv *R) {
    const char *const key[] = {HY_CSV_COL(TRAIN, variant), HY_CSV_COL(TRAIN, seq_len), HY_CSV_COL(TRAIN, seed),
                               HY_CSV_COL(TRAIN, peak_lr)};
    int cv = HY_CSV_FIND(R, TRAIN, variant), ct = HY_CSV_FIND(R, TRAIN, seq_len),
        cl = HY_CSV_FIND(R, TRAIN, train_loss), cval = HY_CSV_FIND(R, TRAIN, val_loss),
        cs = HY_CSV_FIND(R, TRAIN, seed), clr = HY_CSV_FIND(R, TRAIN, peak_lr), cstep = HY_CSV_FIND(R, TRAIN, step);
    hy_sb_add(b, "The last column is the change of the validation loss over the last 20% of the steps (from the last "
                 "evaluation at or before 80% of the final step); a curve has flattened when it improves by less than 2% "
                 "there.\n\n"
                 "| variant | T | seed | lr | steps | tokens | elapsed s | last train loss | last val loss | val change, last 20% |\n"
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    run_change *rc = malloc(sizeof *rc * (size_t)(R->n_rows > 0 ? R->n_rows : 1));
    int n_runs = 0;
    for (int i = 0, start = 0; i < R->n_rows; i++) {
        bool last = i + 1 == R->n_rows;
        for (int k = 0; k < 4 && !last; k++)
            last = strcmp(hy_csv_str(R, i + 1, hy_csv_col(R, key[k])), hy_csv_str(R, i, hy_csv_col(R, key[k]))) != 0;
        if (!last) continue;
        const char *tl = "", *vl = "";
        double final_step = hy_csv_num(R, i, cstep), final_val = NAN, val80 = NAN;
        for (int j = i; j >= start; j--) {
            if (!*tl && *hy_csv_str(R, j, cl)) tl = hy_csv_str(R, j, cl);
            if (!*vl && *hy_csv_str(R, j, cval)) vl = hy_csv_str(R, j, cval), final_val = hy_csv_num(R, j, cval);
            if (*hy_csv_str(R, j, cval) && isnan(val80) && hy_csv_num(R, j, cstep) <= 0.8 * final_step)
                val80 = hy_csv_num(R, j, cval);
        }
        char change[32] = "–";
        double pct = NAN;
        if (!isnan(val80) && !isnan(final_val) && val80 > 0) {
            pct = 100.0 * (final_val - val80) / val80;
            snprintf(change, sizeof change, "%+.1f%%", pct);
        }
        if (rc) rc[n_runs++] = (run_change){hy_csv_str(R, i, cv), hy_csv_str(R, i, ct), hy_csv_str(R, i, clr), pct};
        hy_sb_printf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", hy_csv_str(R, i, cv),
                     hy_csv_str(R, i, ct), hy_csv_str(R, i, cs), hy_csv_str(R, i, clr), hy_csv_str(R, i, cstep),
                     hy_csv_str(R, i, HY_CSV_FIND(R, TRAIN, tokens)),
                     hy_csv_str(R, i, HY_CSV_FIND(R, TRAIN, elapsed_s)), tl, vl, change);
        start = i + 1;
    }
    hy_sb_add(b, "\n");
    if (rc) flattening_by_group(b, rc, n_runs);
    free(rc);
}

/* qsort order of groups by mean bits per byte (no value last). */
static int cmp_bits(const void *a, const void *b) {
    double x = ((const hy_group *)a)->bits.mean, y = ((const hy_group *)b)->bits.mean;
    if (!isfinite(x) || !isfinite(y)) return isfinite(x) ? -1 : isfinite(y);
    return (x > y) - (x < y);
}

/* The groups of this experiment and of the reference experiment (reference.csv) in one table,
 * ordered by bits per byte: the axis on which a byte model and a subword model compare. */
static int reference_section(hy_strbuf *b, const hy_results *r, const char *name) {
    hy_group *g = NULL, *h = NULL;
    int ng = hy_group_sweep(&r->sweep, &r->eval, false, &g), nh = ng < 0 ? 0 : hy_group_sweep(&r->reference, NULL, false, &h);
    if (ng < 0 || nh < 0) {
        free(g), free(h);
        return ng < 0 ? ng : nh;
    }
    const char *ref = hy_csv_str(&r->reference, 0, HY_CSV_FIND(&r->reference, REFERENCE, experiment));
    hy_group *all = malloc(sizeof *all * (size_t)(ng + nh + 1));
    if (!all) {
        free(g), free(h);
        return HY_ERR_NOMEM;
    }
    for (int k = 0; k < ng + nh; k++) {   /* `selected` marks this experiment's groups from here on */
        all[k] = k < ng ? g[k] : h[k - ng];
        all[k].selected = k < ng;
    }
    qsort(all, (size_t)(ng + nh), sizeof *all, cmp_bits);
    hy_sb_printf(b, "## Against the reference (reference.csv)\n\nThis experiment's groups and those of `%s` (its sweep.csv, "
                    "copied when this experiment finished), each at its selected lr, ordered by validation bits per byte: "
                    "each experiment's common evaluation loss in bits divided by the bytes of text its tokens stand for, so "
                    "models of different tokenizers (or of bytes) compare on one axis. A window of T tokens holds T x bytes "
                    "per token bytes of text.\n\n"
                    "| experiment | variant | T (tokens) | bytes per token | context (bytes) | n | val loss (nats/token) | "
                    "bits/byte (mean ± sd) |\n|---|---|---:|---:|---:|---:|---:|---:|\n",
                 ref);
    for (int k = 0; k < ng + nh; k++) {
        char bits[64], loss[64], bpt[32] = "–", ctx[32] = "–";
        stat_text(bits, sizeof bits, &all[k].bits);
        stat_text(loss, sizeof loss, &all[k].loss);
        if (all[k].bytes_per_token.n) {
            snprintf(bpt, sizeof bpt, "%.3f", all[k].bytes_per_token.mean);
            snprintf(ctx, sizeof ctx, "%.0f", all[k].seq_len * all[k].bytes_per_token.mean);
        }
        hy_sb_printf(b, "| %s | %s%s | %d | %s | %s | %d | %s | %s |\n", all[k].selected ? name : ref, all[k].variant,
                     all[k].cut ? DAGGER : "", all[k].seq_len, bpt, ctx, all[k].runs, loss, bits);
    }
    hy_sb_add(b, "\n");
    free(g), free(h), free(all);
    return 0;
}

/* The quality sections (sweep.csv and eval.csv). */
static int quality_sections(hy_strbuf *b, const hy_results *r, const char *const *plots, int np, bool *cut_any) {
    bool task = hy_results_are_task(&r->eval);
    hy_group *g = NULL, *all = NULL;
    int ng = 0, na = 0;
    if (r->sweep.n_rows) {
        if ((ng = hy_group_sweep(&r->sweep, &r->eval, false, &g)) < 0) return ng;
        if ((na = hy_group_sweep(&r->sweep, &r->eval, true, &all)) < 0) {
            free(g);
            return na;
        }
        int most = 0, least = ng ? g[0].runs : 0;
        for (int k = 0; k < ng; k++) most = g[k].runs > most ? g[k].runs : most, least = g[k].runs < least ? g[k].runs : least;
        char seeds[64];
        if (least == most) snprintf(seeds, sizeof seeds, "%d", most);
        else snprintf(seeds, sizeof seeds, "%d to %d", least, most);
        hy_sb_printf(b, "## Quality (sweep.csv)\n\nEvery variant at every sequence length with the same budget. A group is one "
                        "(variant, T) at its selected learning rate (below); its numbers are the mean ± sample standard "
                        "deviation (n − 1) over its n seeds (here n = %s), min – max over the seeds beside; with one seed "
                        "there is no sd. Training FLOPs = 3 x flop_per_token x tokens.\n\n", seeds);
        figure(b, plots, np, "quality");
        quality_tables(b, g, ng, task, cut_any);
        lr_table(b, all, na, task, cut_any);
        runs_table(b, r, task);
        free(g), free(all);
    }
    if (r->eval.n_rows) {
        if ((ng = hy_group_eval(&r->sweep, &r->eval, &g)) < 0) return ng;
        hy_sb_add(b, "## Evaluation lengths (eval.csv)\n\nEvery run evaluated at its training length and at each length of the "
                     "experiment's evaluation list, on the same held-out data; runs at their selected lr.\n\n");
        figure(b, plots, np, "generalization");
        if (task) eval_matrix(b, g, ng, 0, cut_any);
        else eval_matrix(b, g, ng, 1, cut_any);
        if (task) eval_matrix(b, g, ng, 2, cut_any);
        free(g);
    }
    return 0;
}

/* report.md from the CSVs of dir (read again here, so `plot` and the runner give the same report). */
int hy_write_report(const char *dir, const char *const *plots, int np, const char *crossover_text) {
    hy_results r;
    int rc = hy_results_load(dir, &r);
    const char *name = strrchr(dir, '/');
    name = name && name[1] ? name + 1 : dir;
    hy_strbuf b = {0};
    bool cut_any = false;
    hy_sb_printf(&b, "# Experiment `%s`\n\nWritten by `hybrid-exp plot %s` from the CSV files beside it (columns: "
                     "docs/experiments.md; how to read this report: its section \"Reading the report\"). Times were "
                     "measured on the machine that ran the experiment; on a shared machine they are noisy.\n\n", name, dir);
    const hy_csv *L = &r.layers;
    if (rc == 0 && L->n_rows) {
        static const char *const cost[] = {"fwd", "fwd_bwd", "step"};
        hy_sb_add(&b, "## Complexity (layers.csv)\n\nOne block, batch 1: time per call in ms (`step`: per token at context T).\n\n");
        figure(&b, plots, np, "complexity");
        layer_table(&b, L, cost, 3, HY_CSV_COL(LAYERS, ms), 0, "ms");
        int cy = HY_CSV_FIND(L, LAYERS, best_f32_gemm_gflops_per_s);
        if (cy >= 0 && HY_CSV_FIND(L, LAYERS, ratio_to_best_f32_gemm) >= 0) {
            hy_sb_printf(&b, "Throughput as a ratio to the best f32 GEMM of the same benchmark run (%s GFLOP/s, the faster "
                             "of OpenBLAS and oneDNN on a 2048³ product; 1.0 = the machine's GEMM rate):\n\n",
                         hy_csv_str(L, 0, cy));
            static const char *const trained[] = {"fwd", "fwd_bwd"};
            layer_table(&b, L, trained, 2, "ratio_to_best_f32_gemm", 0, "× GEMM");
        }
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
        layer_table(&b, L, pk, 1, HY_CSV_COL(LAYERS, peak_bytes), 1.0 / 1048576, "peak MiB");
        layer_table(&b, L, stp, 1, HY_CSV_COL(LAYERS, state_bytes), 1.0 / 1024, "state KiB");
    }
    if (rc == 0) rc = quality_sections(&b, &r, plots, np, &cut_any);
    if (rc == 0 && r.sweep.n_rows && r.reference.n_rows) rc = reference_section(&b, &r, name);
    if (rc == 0 && r.position.n_rows) rc = position_table(&b, &r, plots, np, &cut_any);
    if (rc == 0 && r.train.n_rows) {
        hy_sb_add(&b, "## Learning curves (train.csv)\n\n");
        figure(&b, plots, np, "learning");
        learning_table(&b, &r.train);
    }
    if (cut_any)
        hy_sb_add(&b, "---\n\n† A run of this group was stopped by the wall-clock cap (`stopped_by = seconds` in sweep.csv): it "
                      "trained on fewer tokens than its budget, so it is not a complete run. Such groups are not ranked "
                      "against complete groups, and every comparison involving one says so.\n");
    hy_results_free(&r);
    size_t len = b.len;
    char *text = hy_sb_take(&b);
    if (!text) return HY_ERR_NOMEM;
    char path[HY_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/report.md", dir);
    if (rc == 0) rc = hy_write_file_atomic(path, text, len);
    else hy_error_prefix("%s: report.md", dir);
    free(text);
    return rc;
}

/* Plots of an experiment, drawn by gnuplot from the CSV files alone: complexity (layers.csv),
 * memory (layers.csv), quality and generalisation (sweep.csv, eval.csv), learning curves
 * (train.csv). Each plot's gnuplot script is kept beside its PNG and SVG (the data inline), so
 * it can be edited and redrawn with `gnuplot NAME.gp`. gnuplot's exit status is checked; the
 * figures are written to temporary names and renamed. */
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "experiments/experiment.h"
#include "experiments/results.h"
#include "models/json.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- gnuplot ---- */

typedef struct {
    hy_strbuf data;   /* datablocks */
    int n;            /* datablocks so far */
} gp;

/* Starts datablock $dN; returns N. */
static int block_begin(gp *g) {
    hy_sb_printf(&g->data, "$d%d << EOD\n", g->n);
    return g->n++;
}
static void block_end(gp *g) { hy_sb_add(&g->data, "EOD\n"); }

/* A title (the terminals are noenhanced, so it prints literally; quotes are dropped). */
static void title(hy_strbuf *b, const char *s) {
    hy_sb_add(b, "title \"");
    for (; *s; s++) {
        if (*s != '"' && *s != '\\') hy_sb_addn(b, s, 1);
    }
    hy_sb_add(b, "\"");
}

/* Writes dir/name.gp and runs gnuplot on it (PNG and SVG), checking its exit status. */
static int draw(const char *dir, const char *name, gp *g, const char *body, int w, int h) {
    hy_strbuf s = {0};
    hy_sb_printf(&s, "# %s: drawn by hybrid-exp plot from the experiment's CSV files; redraw with `gnuplot %s.gp`\n"
                     "if (!exists(\"suffix\")) suffix = \"\"\nset datafile separator whitespace\n", name, name);
    hy_sb_addn(&s, g->data.p ? g->data.p : "", g->data.len);
    hy_sb_printf(&s, "set terminal pngcairo size %d,%d font \",10\" noenhanced\nset output \"%s.png\".suffix\n%s"
                     "unset output\nset terminal svg size %d,%d dynamic font \"sans,10\" noenhanced\n"
                     "set output \"%s.svg\".suffix\n%sunset output\n", w, h, name, body, w, h, name, body);
    size_t len = s.len;
    char *text = hy_sb_take(&s), path[HY_PATH_MAX + 64], cmd[3 * HY_PATH_MAX];
    if (!text) return HY_ERR_NOMEM;
    snprintf(path, sizeof path, "%s/%s.gp", dir, name);
    int rc = hy_write_file_atomic(path, text, len);
    free(text);
    if (rc < 0) return rc;
    if (strchr(dir, '\'')) return hy_fail("%s: a folder name with a quote cannot be passed to gnuplot", dir);
    snprintf(cmd, sizeof cmd, "cd '%s' && gnuplot -e 'suffix=\".tmp\"' %s.gp > %s.gp.log 2>&1", dir, name, name);
    int st = system(cmd);
    snprintf(path, sizeof path, "%s/%s.gp.log", dir, name);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char *log = NULL;
        size_t n = 0;
        hy_read_file(path, &log, &n);
        rc = hy_fail("gnuplot failed on %s/%s.gp (exit status %d): %.400s", dir, name,
                     st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st), log ? log : "");
        hy_free(log);
        return rc;
    }
    unlink(path);
    static const char *const ext[] = {"png", "svg"};
    for (int k = 0; k < 2; k++) {
        char a[HY_PATH_MAX + 64], b[HY_PATH_MAX + 64];
        snprintf(a, sizeof a, "%s/%s.%s.tmp", dir, name, ext[k]);
        snprintf(b, sizeof b, "%s/%s.%s", dir, name, ext[k]);
        if (rename(a, b) != 0) return hy_fail_code(HY_ERR_IO, "gnuplot wrote no %s", b);
    }
    return 0;
}

/* One series of layers.csv: (T, column) of block/pass rows with a positive value, scaled. */
static int layer_series(gp *g, const hy_csv *L, const char *block, const char *pass, const char *col, double scale) {
    int cb = hy_csv_col(L, "block"), cp = hy_csv_col(L, "pass"), ct = hy_csv_col(L, "seq_len"), cv = hy_csv_col(L, col);
    int count = 0;
    for (int i = 0; i < L->n_rows; i++)
        count += !strcmp(L->rows[i][cb], block) && !strcmp(L->rows[i][cp], pass) && hy_csv_num(L, i, cv) > 0;
    if (!count) return -1;
    int id = block_begin(g);
    for (int i = 0; i < L->n_rows; i++)
        if (!strcmp(L->rows[i][cb], block) && !strcmp(L->rows[i][cp], pass) && hy_csv_num(L, i, cv) > 0)
            hy_sb_printf(&g->data, "%g %g\n", hy_csv_num(L, i, ct), hy_csv_num(L, i, cv) * scale);
    block_end(g);
    return id;
}

static const char *const AXES_LOGLOG = "set logscale xy\nset grid\nset key left top\nset xlabel \"T (tokens)\"\n";

/* complexity: fwd and fwd_bwd ms vs T per block, log-log, with crossover points marked. */
static int plot_complexity(const char *dir, const hy_csv *L, const hy_crossover *x, int nx, int *drawn) {
    static const char *const passes[] = {"fwd", "fwd_bwd"};
    const char *blocks[64];
    int nb = hy_csv_distinct(L, hy_csv_col(L, "block"), blocks, 64);
    gp g = {0};
    hy_strbuf body = {0};
    int panels = 0;
    for (int p = 0; p < 2; p++) {
        hy_strbuf plot = {0};
        int series = 0;
        for (int b = 0; b < nb; b++) {
            int id = layer_series(&g, L, blocks[b], passes[p], "ms", 1.0);
            if (id < 0) continue;
            hy_sb_printf(&plot, "%s$d%d using 1:2 with linespoints lw 2 ", series++ ? ", " : "", id);
            title(&plot, blocks[b]);
        }
        int id = -1;
        for (int k = 0; k < nx; k++)
            if (x[k].kind == 0 && !strcmp(x[k].pass, passes[p])) {
                if (id < 0) id = block_begin(&g);
                hy_sb_printf(&g.data, "%g %g \"%s:T*=%.0f\"\n", x[k].t_star, x[k].ms, x[k].block, x[k].t_star);
            }
        if (id >= 0) {
            block_end(&g);
            hy_sb_printf(&plot, ", $d%d using 1:2 with points pt 7 ps 1.6 lc rgb \"black\" title \"crossover T* vs attention\""
                                ", $d%d using 1:2:3 with labels offset 0,1.2 notitle", id, id);
        }
        if (!series) {
            hy_sb_free(&plot);
            continue;
        }
        hy_sb_printf(&body, "set title \"%s\"\nplot ", passes[p]);
        hy_sb_addn(&body, plot.p, plot.len);
        hy_sb_add(&body, "\n");
        hy_sb_free(&plot);
        panels++;
    }
    hy_strbuf all = {0};
    hy_sb_printf(&all, "set multiplot layout 1,%d title \"Cost of one block vs sequence length (layers.csv)\"\n%s"
                       "set ylabel \"ms per call\"\n", panels ? panels : 1, AXES_LOGLOG);
    hy_sb_addn(&all, body.p ? body.p : "", body.len);
    hy_sb_add(&all, "unset multiplot\n");
    hy_sb_free(&body);
    int rc = 0;
    char *bt = hy_sb_take(&all);
    if (panels && bt) rc = draw(dir, "complexity", &g, bt, panels * 700, 560), *drawn += rc == 0;
    free(bt);
    hy_sb_free(&g.data);
    return rc;
}

/* memory: peak bytes (fwd_bwd) and streaming state bytes vs T per block. */
static int plot_memory(const char *dir, const hy_csv *L, int *drawn) {
    const char *blocks[64];
    int nb = hy_csv_distinct(L, hy_csv_col(L, "block"), blocks, 64);
    gp g = {0};
    hy_strbuf body = {0};
    static const char *const what[][4] = {{"fwd_bwd", "peak_bytes", "peak memory of fwd+bwd", "MiB"},
                                          {"step", "state_bytes", "streaming state per sequence", "KiB"}};
    int panels = 0;
    for (int p = 0; p < 2; p++) {
        hy_strbuf plot = {0};
        int series = 0;
        for (int b = 0; b < nb; b++) {
            int id = layer_series(&g, L, blocks[b], what[p][0], what[p][1], p == 0 ? 1.0 / 1048576 : 1.0 / 1024);
            if (id < 0 && p == 1) id = layer_series(&g, L, blocks[b], "fwd", what[p][1], 1.0 / 1024);
            if (id < 0) continue;
            hy_sb_printf(&plot, "%s$d%d using 1:2 with linespoints lw 2 ", series++ ? ", " : "", id);
            title(&plot, blocks[b]);
        }
        if (!series) {
            hy_sb_free(&plot);
            continue;
        }
        hy_sb_printf(&body, "set title \"%s\"\nset ylabel \"%s\"\nplot ", what[p][2], what[p][3]);
        hy_sb_addn(&body, plot.p, plot.len);
        hy_sb_add(&body, "\n");
        hy_sb_free(&plot);
        panels++;
    }
    hy_strbuf all = {0};
    hy_sb_printf(&all, "set multiplot layout 1,%d title \"Memory of one block vs sequence length (layers.csv)\"\n%s",
                 panels ? panels : 1, AXES_LOGLOG);
    hy_sb_addn(&all, body.p ? body.p : "", body.len);
    hy_sb_add(&all, "unset multiplot\n");
    hy_sb_free(&body);
    int rc = 0;
    char *bt = hy_sb_take(&all);
    if (panels && bt) rc = draw(dir, "memory", &g, bt, panels * 700, 560), *drawn += rc == 0;
    free(bt);
    hy_sb_free(&g.data);
    return rc;
}

/* The quality metric of a sweep row: task accuracy at the training length (from eval.csv) when
 * the runs are a synthetic task, else validation bits per byte. */
static double quality(const hy_csv *S, const hy_csv *E, int row, bool task) {
    if (!task) return hy_csv_num(S, row, hy_csv_col(S, "val_bits_per_byte"));
    const char *v = hy_csv_str(S, row, hy_csv_col(S, "variant"));
    double T = hy_csv_num(S, row, hy_csv_col(S, "seq_len"));
    int cv = hy_csv_col(E, "variant"), ct = hy_csv_col(E, "seq_len"), ce = hy_csv_col(E, "eval_seq_len"),
        ca = hy_csv_col(E, "accuracy");
    for (int i = 0; i < E->n_rows; i++)
        if (!strcmp(hy_csv_str(E, i, cv), v) && hy_csv_num(E, i, ct) == T && hy_csv_num(E, i, ce) == T)
            return hy_csv_num(E, i, ca);
    return NAN;
}

/* quality: metric vs T per variant, and vs training FLOPs (3 x flop_per_token x tokens). */
static int plot_quality(const char *dir, const hy_csv *S, const hy_csv *E, int *drawn) {
    const char *vars[256];
    int cv = hy_csv_col(S, "variant"), nv = hy_csv_distinct(S, cv, vars, 256);
    bool task = hy_results_are_task(E);
    const char *ylabel = task ? "accuracy on answer positions" : "validation bits per byte";
    gp g = {0};
    hy_strbuf body = {0}, p1 = {0}, p2 = {0};
    int series = 0;
    for (int v = 0; v < nv; v++) {
        int id = block_begin(&g), pts = 0;
        for (int i = 0; i < S->n_rows; i++) {
            if (strcmp(hy_csv_str(S, i, cv), vars[v])) continue;
            double q = quality(S, E, i, task), T = hy_csv_num(S, i, hy_csv_col(S, "seq_len"));
            double fl = 3 * hy_csv_num(S, i, hy_csv_col(S, "flop_per_token")) * hy_csv_num(S, i, hy_csv_col(S, "tokens"));
            if (!isfinite(q)) continue;
            hy_sb_printf(&g.data, "%g %g %g\n", T, q, fl);
            pts++;
        }
        block_end(&g);
        if (!pts) continue;
        hy_sb_printf(&p1, "%s$d%d using 1:2 with linespoints lw 2 pt 7 ", series ? ", " : "", id);
        title(&p1, vars[v]);
        hy_sb_printf(&p2, "%s$d%d using 3:2 with linespoints lw 2 pt 7 ", series ? ", " : "", id);
        title(&p2, vars[v]);
        series++;
    }
    int rc = 0;
    if (series) {
        hy_sb_printf(&body, "set multiplot layout 1,2 title \"Quality at equal budget (sweep.csv%s)\"\nset grid\n"
                            "set key outside right\nset ylabel \"%s\"\nset logscale x 2\nset xlabel \"training T (tokens)\"\n"
                            "set title \"vs sequence length\"\nplot ", task ? ", eval.csv" : "", ylabel);
        hy_sb_addn(&body, p1.p, p1.len);
        hy_sb_add(&body, "\nset logscale x 10\nset format x \"%.0e\"\nset xlabel \"training FLOPs (3 x flop_per_token x tokens)\"\n"
                         "set title \"vs training compute\"\nplot ");
        hy_sb_addn(&body, p2.p, p2.len);
        hy_sb_add(&body, "\nunset multiplot\n");
        char *bt = hy_sb_take(&body);
        rc = bt ? draw(dir, "quality", &g, bt, 1400, 560) : HY_ERR_NOMEM;
        *drawn += rc == 0;
        free(bt);
    }
    hy_sb_free(&body), hy_sb_free(&p1), hy_sb_free(&p2), hy_sb_free(&g.data);
    return rc;
}

/* generalisation: accuracy vs evaluation length per (variant, training T), when runs were
 * evaluated beyond their training length (induction). */
static int plot_generalization(const char *dir, const hy_csv *E, int *drawn) {
    int cv = hy_csv_col(E, "variant"), ct = hy_csv_col(E, "seq_len"), ce = hy_csv_col(E, "eval_seq_len"),
        ca = hy_csv_col(E, "accuracy");
    bool longer = false;
    for (int i = 0; i < E->n_rows; i++) longer |= hy_csv_num(E, i, ce) != hy_csv_num(E, i, ct);
    if (!longer) return 0;
    gp g = {0};
    hy_strbuf plot = {0};
    int series = 0;
    for (int i = 0; i < E->n_rows; i++) {   /* a series starts at each new (variant, seq_len) */
        if (i > 0 && !strcmp(hy_csv_str(E, i, cv), hy_csv_str(E, i - 1, cv)) && hy_csv_num(E, i, ct) == hy_csv_num(E, i - 1, ct))
            continue;
        int id = block_begin(&g);
        for (int j = i; j < E->n_rows && !strcmp(hy_csv_str(E, j, cv), hy_csv_str(E, i, cv)) &&
                        hy_csv_num(E, j, ct) == hy_csv_num(E, i, ct); j++)
            hy_sb_printf(&g.data, "%g %g\n", hy_csv_num(E, j, ce), hy_csv_num(E, j, ca));
        block_end(&g);
        char name[300];
        snprintf(name, sizeof name, "%s (trained at T=%s)", hy_csv_str(E, i, cv), hy_csv_str(E, i, ct));
        hy_sb_printf(&plot, "%s$d%d using 1:2 with linespoints lw 2 pt 7 ", series++ ? ", " : "", id);
        title(&plot, name);
    }
    hy_strbuf body = {0};
    hy_sb_add(&body, "set title \"Accuracy beyond the training length (eval.csv)\"\nset grid\nset logscale x 2\n"
                     "set key outside right\nset xlabel \"evaluation T (tokens)\"\nset ylabel \"accuracy on answer positions\"\n"
                     "set yrange [0:1.05]\nplot ");
    hy_sb_addn(&body, plot.p, plot.len);
    hy_sb_add(&body, "\n");
    char *bt = hy_sb_take(&body);
    int rc = bt ? draw(dir, "generalization", &g, bt, 1000, 560) : HY_ERR_NOMEM;
    *drawn += rc == 0;
    free(bt);
    hy_sb_free(&plot), hy_sb_free(&g.data);
    return rc;
}

/* learning curves: train loss (lines) and validation loss (points) vs tokens, one panel per T. */
static int plot_learning(const char *dir, const hy_csv *R, int *drawn) {
    int cv = hy_csv_col(R, "variant"), ct = hy_csv_col(R, "seq_len"), ck = hy_csv_col(R, "tokens"),
        cl = hy_csv_col(R, "train_loss"), cval = hy_csv_col(R, "val_loss");
    const char *Ts[64], *vars[256];
    int nT = hy_csv_distinct(R, ct, Ts, 64), nv = hy_csv_distinct(R, cv, vars, 256);
    if (!nT || cl < 0) return 0;
    int cols = nT < 3 ? nT : 3, rows = (nT + cols - 1) / cols;
    gp g = {0};
    hy_strbuf body = {0};
    hy_sb_printf(&body, "set multiplot layout %d,%d title \"Learning curves (train.csv): lines train loss, points "
                        "validation loss\"\nset grid\nset key right top\nset xlabel \"training tokens\"\n"
                        "set ylabel \"loss (nats per labelled token)\"\n", rows, cols);
    for (int t = 0; t < nT; t++) {
        hy_strbuf plot = {0};
        int series = 0;
        for (int v = 0; v < nv; v++) {
            int id = -1, ntr = 0, nval = 0;
            for (int i = 0; i < R->n_rows; i++)
                if (!strcmp(hy_csv_str(R, i, cv), vars[v]) && !strcmp(hy_csv_str(R, i, ct), Ts[t])) {
                    if (id < 0) id = block_begin(&g);
                    double tl = hy_csv_num(R, i, cl), vl = hy_csv_num(R, i, cval);
                    hy_sb_printf(&g.data, "%g %s %s\n", hy_csv_num(R, i, ck), isfinite(tl) ? hy_csv_str(R, i, cl) : "NaN",
                                 isfinite(vl) ? hy_csv_str(R, i, cval) : "NaN");
                    ntr += isfinite(tl), nval += isfinite(vl);
                }
            if (id < 0) continue;
            block_end(&g);
            if (ntr) {
                hy_sb_printf(&plot, "%s$d%d using 1:2 with lines lw 2 lc %d ", series++ ? ", " : "", id, v + 1);
                title(&plot, vars[v]);
            }
            if (nval)
                hy_sb_printf(&plot, "%s$d%d using 1:3 with points pt 7 lc %d notitle", series++ ? ", " : "", id, v + 1);
        }
        hy_sb_printf(&body, "set title \"T = %s\"\n", Ts[t]);
        if (series) {
            hy_sb_add(&body, "plot ");
            hy_sb_addn(&body, plot.p, plot.len);
        } else hy_sb_add(&body, "plot NaN notitle");
        hy_sb_add(&body, "\n");
        hy_sb_free(&plot);
    }
    hy_sb_add(&body, "unset multiplot\n");
    char *bt = hy_sb_take(&body);
    int rc = bt ? draw(dir, "learning", &g, bt, cols * 600, rows * 450) : HY_ERR_NOMEM;
    *drawn += rc == 0;
    free(bt);
    hy_sb_free(&g.data);
    return rc;
}

int hy_experiment_plot(const char *dir, char *summary, size_t summary_len) {
    hy_csv L, S, E, R;
    char path[HY_PATH_MAX + 64];
    int rc, have = 0;
    static const char *const files[] = {"layers.csv", "sweep.csv", "eval.csv", "train.csv"};
    hy_csv *tabs[] = {&L, &S, &E, &R};
    for (int k = 0; k < 4; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[k]);
        if ((rc = hy_csv_load(path, tabs[k])) < 0) {
            for (int j = 0; j <= k; j++) hy_csv_free(tabs[j]);
            return rc;
        }
        have += rc == 0;
    }
    if (!have) {
        rc = hy_fail_code(HY_ERR_IO, "%s: no layers.csv, sweep.csv, eval.csv or train.csv to plot", dir);
        goto out;
    }
    hy_crossover x[128];
    int nx = hy_crossovers(&L, x, 128), drawn = 0;
    hy_strbuf cross = {0};
    for (int k = 0; k < nx; k++) {
        char line[300];
        hy_crossover_text(&x[k], line, sizeof line);
        hy_sb_printf(&cross, "crossover: %s\n", line);
    }
    rc = 0;
    const char *plots[6];
    int np = 0;
    if (L.n_rows) {
        int before = drawn;
        if ((rc = plot_complexity(dir, &L, x, nx, &drawn)) < 0) goto done;
        if (drawn > before) plots[np++] = "complexity";
        before = drawn;
        if ((rc = plot_memory(dir, &L, &drawn)) < 0) goto done;
        if (drawn > before) plots[np++] = "memory";
    }
    if (S.n_rows) {
        int before = drawn;
        if ((rc = plot_quality(dir, &S, &E, &drawn)) < 0) goto done;
        if (drawn > before) plots[np++] = "quality";
    }
    if (E.n_rows) {
        int before = drawn;
        if ((rc = plot_generalization(dir, &E, &drawn)) < 0) goto done;
        if (drawn > before) plots[np++] = "generalization";
    }
    if (R.n_rows) {
        int before = drawn;
        if ((rc = plot_learning(dir, &R, &drawn)) < 0) goto done;
        if (drawn > before) plots[np++] = "learning";
    }
    char *ct = hy_sb_take(&cross);
    rc = hy_write_report(dir, plots, np, ct ? ct : "");
    if (summary) {
        size_t used = (size_t)snprintf(summary, summary_len, "%s", ct ? ct : "");
        if (used < summary_len) {
            used += (size_t)snprintf(summary + used, summary_len - used, "wrote %s/report.md", dir);
            for (int k = 0; k < np && used < summary_len; k++)
                used += (size_t)snprintf(summary + used, summary_len - used, "%s %s.{png,svg}", k ? "," : " and", plots[k]);
        }
    }
    free(ct);
done:
    hy_sb_free(&cross);
out:
    for (int k = 0; k < 4; k++) hy_csv_free(tabs[k]);
    return rc;
}

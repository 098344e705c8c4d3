/* Plots of an experiment, drawn by gnuplot from the CSV files alone: complexity (layers.csv),
 * memory (layers.csv), quality and generalisation (sweep.csv, eval.csv: mean +- 1 sd over seeds at
 * the selected lr), loss against position (position.csv), learning curves (train.csv). Each plot's
 * gnuplot script is kept beside its PNG and SVG (the data inline), so it can be edited and redrawn
 * with `gnuplot NAME.gp`. gnuplot's exit status is checked; the figures are written to temporary
 * names and renamed. The numbers come from results.c, shared with report.c. */
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
    int cb = HY_CSV_FIND(L, LAYERS, block), cp = HY_CSV_FIND(L, LAYERS, pass), ct = HY_CSV_FIND(L, LAYERS, seq_len),
        cv = hy_csv_col(L, col);
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
    int nb = hy_csv_distinct(L, HY_CSV_FIND(L, LAYERS, block), blocks, 64);
    gp g = {0};
    hy_strbuf body = {0};
    int panels = 0;
    for (int p = 0; p < 2; p++) {
        hy_strbuf plot = {0};
        int series = 0;
        for (int b = 0; b < nb; b++) {
            int id = layer_series(&g, L, blocks[b], passes[p], HY_CSV_COL(LAYERS, ms), 1.0);
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
    int nb = hy_csv_distinct(L, HY_CSV_FIND(L, LAYERS, block), blocks, 64);
    gp g = {0};
    hy_strbuf body = {0};
    const char *const what[][4] = {{"fwd_bwd", HY_CSV_COL(LAYERS, peak_bytes), "peak memory of fwd+bwd", "MiB"},
                                   {"step", HY_CSV_COL(LAYERS, state_bytes), "streaming state per sequence", "KiB"}};
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

/* Error-bar half-width of a statistic for gnuplot: its sd, 0 when undefined (one seed). */
static double bar(const hy_stat *s) { return isfinite(s->sd) ? s->sd : 0; }

/* qsort order of groups by evaluation length. */
static int cmp_eval_len(const void *a, const void *b) {
    const hy_group *x = a, *y = b;
    return (x->eval_seq_len > y->eval_seq_len) - (x->eval_seq_len < y->eval_seq_len);
}

/* The quality statistic of a group: accuracy (tasks) or bits per byte. */
static const hy_stat *metric(const hy_group *g, bool task) { return task ? &g->accuracy : &g->bits; }

/* quality: mean +- sd over seeds (selected lr) of the metric vs T per variant, and vs training
 * FLOPs (3 x flop_per_token x tokens). */
static int plot_quality(const char *dir, const hy_results *r, int *drawn) {
    hy_group *g;
    int ng = hy_group_sweep(&r->sweep, &r->eval, false, &g);
    if (ng <= 0) return ng;
    const char *vars[256];
    int nv = hy_csv_distinct(&r->sweep, HY_CSV_FIND(&r->sweep, SWEEP, variant), vars, 256);
    bool task = hy_results_are_task(&r->eval);
    gp d = {0};
    hy_strbuf body = {0}, p1 = {0}, p2 = {0};
    int series = 0;
    bool any_flops = false;
    for (int v = 0; v < nv; v++) {
        int m = 0;
        bool cut = false;
        for (int k = 0; k < ng; k++) {   /* this variant's groups */
            if (strcmp(g[k].variant, vars[v]) || !isfinite(metric(&g[k], task)->mean)) continue;
            m++, cut |= g[k].cut;
        }
        if (!m) continue;
        hy_group *mine = malloc((size_t)m * sizeof *mine);
        if (!mine) {
            free(g);
            return HY_ERR_NOMEM;
        }
        m = 0;
        for (int k = 0; k < ng; k++)
            if (!strcmp(g[k].variant, vars[v]) && isfinite(metric(&g[k], task)->mean)) mine[m++] = g[k];
        qsort(mine, (size_t)m, sizeof *mine, cmp_eval_len);   /* by T: eval_seq_len = seq_len here */
        int id = block_begin(&d);
        for (int k = 0; k < m; k++) {
            const hy_stat *q = metric(&mine[k], task);
            double f = mine[k].flops.mean;   /* no training (0 FLOPs) has no place on a log axis */
            any_flops |= f > 0;
            hy_sb_printf(&d.data, "%d %.9g %.9g %.9g\n", mine[k].seq_len, q->mean, bar(q), f > 0 ? f : NAN);
        }
        block_end(&d);
        free(mine);
        char name[220];
        snprintf(name, sizeof name, "%s%s", vars[v], cut ? " († some runs cut by the wall clock)" : "");
        hy_sb_printf(&p1, "%s$d%d using 1:2:3 with yerrorlines lw 2 pt 7 lc %d ", series ? ", " : "", id, v + 1);
        title(&p1, name);
        hy_sb_printf(&p2, "%s$d%d using 4:2:3 with yerrorlines lw 2 pt 7 lc %d ", series ? ", " : "", id, v + 1);
        title(&p2, name);
        series++;
    }
    free(g);
    int rc = 0;
    if (series) {
        hy_sb_printf(&body, "set multiplot layout 1,%d title \"Quality at equal budget (sweep.csv%s): mean +/- 1 sd over "
                            "seeds, selected lr\"\nset grid\nset key below height 1\nset offsets graph 0.04, graph 0.04, 0, 0\nset ylabel \"%s\"\nset logscale x 2\n"
                            "set xlabel \"training T (tokens)\"\nset title \"vs sequence length\"\nplot ",
                     any_flops ? 2 : 1, task ? ", eval.csv" : "", task ? "accuracy on answer positions" : "validation bits per byte");
        hy_sb_addn(&body, p1.p, p1.len);
        if (any_flops) hy_sb_add(&body, "\nset logscale x 10\nset format x \"%.0e\"\nset xlabel \"training FLOPs (3 x flop_per_token x tokens)\"\n"
                         "set title \"vs training compute\"\nplot ");
        if (any_flops) hy_sb_addn(&body, p2.p, p2.len);
        hy_sb_add(&body, "\nunset multiplot\n");
        char *bt = hy_sb_take(&body);
        rc = bt ? draw(dir, "quality", &d, bt, 1400, 560) : HY_ERR_NOMEM;
        *drawn += rc == 0;
        free(bt);
    }
    hy_sb_free(&body), hy_sb_free(&p1), hy_sb_free(&p2), hy_sb_free(&d.data);
    return rc;
}

/* generalisation: the metric (accuracy for tasks, bits per byte for the corpus) vs evaluation
 * length per (variant, training T), mean +- sd over seeds; drawn when some run was evaluated at
 * a length other than its training length. */
static int plot_generalization(const char *dir, const hy_results *r, int *drawn) {
    hy_group *g;
    int ng = hy_group_eval(&r->sweep, &r->eval, &g);
    if (ng <= 0) return ng;
    bool task = hy_results_are_task(&r->eval), other = false;
    for (int k = 0; k < ng; k++) other |= g[k].eval_seq_len != g[k].seq_len;
    if (!other) {
        free(g);
        return 0;
    }
    gp d = {0};
    hy_strbuf plot = {0};
    int series = 0;
    bool *done = calloc((size_t)ng, sizeof *done);
    hy_group *mine = malloc((size_t)ng * sizeof *mine);
    if (!done || !mine) {
        free(g), free(done), free(mine);
        return HY_ERR_NOMEM;
    }
    for (int k = 0; k < ng; k++) {   /* a series per (variant, training T) */
        if (done[k]) continue;
        int m = 0;
        bool cut = false;
        for (int j = k; j < ng; j++)
            if (!done[j] && !strcmp(g[j].variant, g[k].variant) && g[j].seq_len == g[k].seq_len) {
                done[j] = true;
                if (isfinite(metric(&g[j], task)->mean)) mine[m++] = g[j], cut |= g[j].cut;
            }
        if (!m) continue;
        qsort(mine, (size_t)m, sizeof *mine, cmp_eval_len);
        int id = block_begin(&d);
        for (int j = 0; j < m; j++)
            hy_sb_printf(&d.data, "%d %.9g %.9g\n", mine[j].eval_seq_len, metric(&mine[j], task)->mean, bar(metric(&mine[j], task)));
        block_end(&d);
        char name[300];
        snprintf(name, sizeof name, "%s (trained at T=%d)%s", g[k].variant, g[k].seq_len, cut ? " † cut by the wall clock" : "");
        hy_sb_printf(&plot, "%s$d%d using 1:2:3 with yerrorlines lw 2 pt 7 ", series++ ? ", " : "", id);
        title(&plot, name);
    }
    free(g), free(done), free(mine);
    int rc = 0;
    if (series) {
        hy_strbuf body = {0};
        hy_sb_printf(&body, "set title \"%s at each evaluation length (eval.csv): mean +/- 1 sd over seeds, selected lr\"\n"
                            "set grid\nset logscale x 2\nset key below height 1\nset offsets graph 0.04, graph 0.04, 0, 0\nset xlabel \"evaluation T (tokens)\"\n"
                            "set ylabel \"%s\"\n%splot ", task ? "Accuracy" : "Bits per byte",
                     task ? "accuracy on answer positions" : "validation bits per byte", task ? "set yrange [0:1.05]\n" : "");
        hy_sb_addn(&body, plot.p, plot.len);
        hy_sb_add(&body, "\n");
        char *bt = hy_sb_take(&body);
        rc = bt ? draw(dir, "generalization", &d, bt, 1000, 560) : HY_ERR_NOMEM;
        *drawn += rc == 0;
        free(bt);
    }
    hy_sb_free(&plot), hy_sb_free(&d.data);
    return rc;
}

/* position: mean loss per log-spaced bin of positions (4 per doubling) against the 1-based
 * position, log x, one curve per variant at the longest training T, with +- 1 sd over seeds. */
static int plot_position(const char *dir, const hy_results *r, int *drawn) {
    hy_position_curve *c;
    int nc = hy_position_curves(&r->position, &r->sweep, &c);
    if (nc <= 0) return nc;
    gp d = {0};
    hy_strbuf plot = {0};
    hy_position_bin bins[256];
    int series = 0;
    for (int k = 0; k < nc; k++) {
        int nb = hy_position_bins(&c[k], 4, bins, 256), id = block_begin(&d);
        bool bars = false;
        for (int b = 0; b < nb; b++) {
            hy_sb_printf(&d.data, "%.6g %.9g %.9g %d %d\n", bins[b].x, bins[b].loss.mean, bar(&bins[b].loss), bins[b].lo + 1,
                         bins[b].hi + 1);
            bars |= bins[b].loss.n >= 2;
        }
        block_end(&d);
        char name[300];
        snprintf(name, sizeof name, "%s (n=%d)%s", c[k].variant, c[k].n_seeds, c[k].cut ? " † cut by the wall clock" : "");
        hy_sb_printf(&plot, "%s$d%d using 1:2%s lw 2 pt 7 ps 0.6 lc %d ", series++ ? ", " : "", id,
                     bars ? ":3 with yerrorlines" : " with linespoints", k + 1);
        title(&plot, name);
    }
    hy_strbuf body = {0};
    hy_sb_printf(&body, "set title \"Loss against position (position.csv): trained at T=%d, evaluated at L=%d, selected lr, "
                        "mean per log-spaced bin +/- 1 sd over seeds\"\nset grid\nset logscale x 2\nset key below height 1\nset offsets graph 0.04, graph 0.04, 0, 0\n"
                        "set xlabel \"position in the context (1 ... L, log scale)\"\nset ylabel \"loss (nats per token)\"\nplot ",
                 c[0].seq_len, c[0].eval_seq_len);
    hy_sb_addn(&body, plot.p, plot.len);
    hy_sb_add(&body, "\n");
    hy_position_curves_free(c, nc);
    char *bt = hy_sb_take(&body);
    int rc = bt ? draw(dir, "position", &d, bt, 1000, 560) : HY_ERR_NOMEM;
    *drawn += rc == 0;
    free(bt);
    hy_sb_free(&plot), hy_sb_free(&d.data);
    return rc;
}

/* Whether train.csv rows i and j belong to the same run (variant, seq_len, seed, peak_lr). */
static bool same_run(const hy_csv *R, int i, int j) {
    const char *const key[] = {HY_CSV_COL(TRAIN, variant), HY_CSV_COL(TRAIN, seq_len), HY_CSV_COL(TRAIN, seed),
                               HY_CSV_COL(TRAIN, peak_lr)};
    for (int k = 0; k < 4; k++)
        if (strcmp(hy_csv_str(R, i, hy_csv_col(R, key[k])), hy_csv_str(R, j, hy_csv_col(R, key[k])))) return false;
    return true;
}

/* learning curves: train loss (lines) and validation loss (points) vs tokens, one panel per T, one
 * colour per variant, one curve per seed at the selected lr (runs are contiguous in train.csv). */
static int plot_learning(const char *dir, const hy_results *r, int *drawn) {
    const hy_csv *R = &r->train;
    int cv = HY_CSV_FIND(R, TRAIN, variant), ct = HY_CSV_FIND(R, TRAIN, seq_len), ck = HY_CSV_FIND(R, TRAIN, tokens),
        cl = HY_CSV_FIND(R, TRAIN, train_loss), cval = HY_CSV_FIND(R, TRAIN, val_loss),
        clr = HY_CSV_FIND(R, TRAIN, peak_lr);
    const char *Ts[64], *vars[256];
    int nT = hy_csv_distinct(R, ct, Ts, 64), nv = hy_csv_distinct(R, cv, vars, 256);
    if (!nT || cl < 0) return 0;
    int cols = nT < 3 ? nT : 3, rows = (nT + cols - 1) / cols;
    gp g = {0};
    hy_strbuf body = {0};
    hy_sb_printf(&body, "set multiplot layout %d,%d title \"Learning curves (train.csv), selected lr, a curve per seed: lines "
                        "train loss, points validation loss\"\nset grid\nset key right top\nset xlabel \"training tokens\"\n"
                        "set ylabel \"loss (nats per labelled token)\"\n", rows, cols);
    for (int t = 0; t < nT; t++) {
        hy_strbuf plot = {0};
        int series = 0;
        for (int v = 0; v < nv; v++) {
            bool titled = false;
            for (int i = 0; i < R->n_rows; i++) {   /* i: the first row of a run */
                if (i > 0 && same_run(R, i, i - 1)) continue;
                if (strcmp(hy_csv_str(R, i, cv), vars[v]) || strcmp(hy_csv_str(R, i, ct), Ts[t]) ||
                    !hy_lr_selected(&r->sweep, vars[v], Ts[t], hy_csv_str(R, i, clr)))
                    continue;
                int id = block_begin(&g), ntr = 0, nval = 0;
                for (int j = i; j < R->n_rows && (j == i || same_run(R, j, i)); j++) {
                    double tl = hy_csv_num(R, j, cl), vl = hy_csv_num(R, j, cval);
                    hy_sb_printf(&g.data, "%g %s %s\n", hy_csv_num(R, j, ck), isfinite(tl) ? hy_csv_str(R, j, cl) : "NaN",
                                 isfinite(vl) ? hy_csv_str(R, j, cval) : "NaN");
                    ntr += isfinite(tl), nval += isfinite(vl);
                }
                block_end(&g);
                if (ntr) {
                    hy_sb_printf(&plot, "%s$d%d using 1:2 with lines lw 2 lc %d ", series++ ? ", " : "", id, v + 1);
                    if (!titled) title(&plot, vars[v]);
                    else hy_sb_add(&plot, "notitle");
                    titled = true;
                }
                if (nval)
                    hy_sb_printf(&plot, "%s$d%d using 1:3 with points pt 7 lc %d notitle", series++ ? ", " : "", id, v + 1);
            }
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

/* Loads the folder's CSVs once, draws every plot that has data, then writes report.md. */
int hy_experiment_plot(const char *dir, char *summary, size_t summary_len) {
    hy_results r;
    int rc = hy_results_load(dir, &r);
    if (rc < 0) goto out;
    if (!r.found) {
        rc = hy_fail_code(HY_ERR_IO, "%s: no layers.csv, sweep.csv, eval.csv, train.csv or position.csv to plot", dir);
        goto out;
    }
    hy_crossover x[128];
    int nx = hy_crossovers(&r.layers, x, 128), drawn = 0;
    hy_strbuf cross = {0};
    for (int k = 0; k < nx; k++) {
        char line[300];
        hy_crossover_text(&x[k], line, sizeof line);
        hy_sb_printf(&cross, "crossover: %s\n", line);
    }
    const char *plots[8];
    int np = 0, before = 0;
    /* each plot in turn; a plot with nothing to draw draws nothing and is not listed */
#define PLOT(call, name)                      \
    do {                                      \
        before = drawn;                       \
        if ((rc = (call)) < 0) goto done;     \
        if (drawn > before) plots[np++] = name; \
    } while (0)
    if (r.layers.n_rows) {
        PLOT(plot_complexity(dir, &r.layers, x, nx, &drawn), "complexity");
        PLOT(plot_memory(dir, &r.layers, &drawn), "memory");
    }
    if (r.sweep.n_rows) PLOT(plot_quality(dir, &r, &drawn), "quality");
    if (r.eval.n_rows) PLOT(plot_generalization(dir, &r, &drawn), "generalization");
    if (r.position.n_rows) PLOT(plot_position(dir, &r, &drawn), "position");
    if (r.train.n_rows) PLOT(plot_learning(dir, &r, &drawn), "learning");
#undef PLOT
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
    hy_results_free(&r);
    return rc;
}

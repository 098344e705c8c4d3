/* Results side of the experiment harness on known CSV input: the lr selection and sweep.csv's
 * lr_selected column, groups over seeds (mean, sd, min, max, n by hand), the spread rule, the
 * dagger on groups cut by the wall clock in report.md, the loss-against-position bins, and
 * plotting of CSVs written by older runners (no seed, lr, stopped_by, lr_selected). */
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "core/strbuf.h"
#include "experiments/experiment.h"
#include "experiments/results.h"
#include "tests/testutil.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SWEEP_HEAD                                                                                                   \
    "variant,seq_len,seed,lr,batch_size,batch_tokens,steps,tokens,stopped_by,params,flop_per_token,train_s,"       \
    "tokens_per_s,peak_bytes,state_bytes,val_loss,val_ppl,val_bits_per_byte"
#define EVAL_HEAD "variant,seq_len,seed,lr,task,eval_seq_len,val_loss,val_bits_per_byte,accuracy,labels\n"
#define POS_HEAD "variant,seq_len,seed,lr,eval_seq_len,position,loss\n"

/* Writes dir/name. */
static void put_file(const char *dir, const char *name, const char *text) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ck_assert_int_eq(hy_write_file_atomic(path, text, strlen(text)), 0);
}

/* Whether dir/name exists with some content. */
static bool exists(const char *dir, const char *name) {
    char path[700];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0 && st.st_size > 0;
}

/* Loads dir/name into t (written just before from `text`). */
static void table(const char *dir, const char *name, const char *text, hy_csv *t) {
    char path[700];
    put_file(dir, name, text);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ck_assert_int_eq(hy_csv_load(path, t), 0);
}

/* Appends one sweep.csv row (run-side columns the results side does not read are fixed). */
static void sweep_row(char *buf, size_t n, const char *variant, int T, int seed, const char *lr, const char *stop,
                      double val_loss) {
    size_t used = strlen(buf);
    snprintf(buf + used, n - used, "%s,%d,%d,%s,4,%d,10,%d,%s,1000,5000,1,100,1048576,4096,%.4f,%.4f,%.4f\n", variant, T, seed,
             lr, 4 * T, 40 * T, stop, val_loss, exp(val_loss), val_loss / log(2.0));
}

/* x as written with %.4f, read back. */
static double r4(double x) {
    char t[64];
    snprintf(t, sizeof t, "%.4f", x);
    return atof(t);
}

/* The lr_selected cell of each row of t, as a string of '0'/'1'. */
static void selected_of(const hy_csv *t, char *out) {
    int c = hy_csv_col(t, "lr_selected");
    ck_assert_int_ge(c, 0);
    for (int i = 0; i < t->n_rows; i++) out[i] = hy_csv_str(t, i, c)[0];
    out[t->n_rows] = 0;
}

/* ---- lr selection ---- */

/* a: lr 0.001 has the lower mean (2.1 vs 2.2) although 0.003 has the single best run (1.9);
 * b: 0.003 wins (2.1 vs 2.5); c: a tie (2.0 = 2.0) goes to the smaller lr, listed second. */
START_TEST(select_lr_per_variant) {
    char dir[256], csv[4096] = SWEEP_HEAD "\n";
    tu_fresh_dir(dir, sizeof dir, "results-select", true);
    sweep_row(csv, sizeof csv, "a", 64, 1, "0.001", "steps", 2.0);
    sweep_row(csv, sizeof csv, "a", 64, 2, "0.001", "steps", 2.2);
    sweep_row(csv, sizeof csv, "a", 64, 1, "0.003", "steps", 1.9);
    sweep_row(csv, sizeof csv, "a", 64, 2, "0.003", "steps", 2.5);
    sweep_row(csv, sizeof csv, "b", 64, 1, "0.001", "steps", 2.4);
    sweep_row(csv, sizeof csv, "b", 64, 2, "0.001", "steps", 2.6);
    sweep_row(csv, sizeof csv, "b", 64, 1, "0.003", "steps", 2.0);
    sweep_row(csv, sizeof csv, "b", 64, 2, "0.003", "seconds", 2.2);
    sweep_row(csv, sizeof csv, "c", 64, 1, "0.003", "steps", 2.0);
    sweep_row(csv, sizeof csv, "c", 64, 1, "0.001", "steps", 2.0);
    sweep_row(csv, sizeof csv, "a", 128, 1, "0.001", "steps", 1.8);   /* another T: its own group */
    sweep_row(csv, sizeof csv, "a", 128, 1, "0.003", "steps", 1.7);
    hy_csv S;
    table(dir, "sweep.csv", csv, &S);
    int cols = S.n_cols;
    ck_assert_int_eq(hy_select_lr(&S, NULL), 0);
    ck_assert_int_eq(S.n_cols, cols + 1);
    ck_assert_str_eq(S.head[cols], "lr_selected");
    char sel[64];
    selected_of(&S, sel);
    ck_assert_str_eq(sel, "110000110101");
    /* selecting again (the column now present) overwrites it with the same answer */
    ck_assert_int_eq(hy_select_lr(&S, NULL), 0);
    ck_assert_int_eq(S.n_cols, cols + 1);
    selected_of(&S, sel);
    ck_assert_str_eq(sel, "110000110101");
    ck_assert(hy_lr_selected(&S, "b", "64", "0.003") && !hy_lr_selected(&S, "b", "64", "0.001"));
    ck_assert(hy_lr_selected(&S, "b", "64", "3e-3"));   /* the same number written otherwise */
    ck_assert(hy_lr_selected(&S, "z", "64", "0.001"));   /* no such group: nothing to tell */
    ck_assert(hy_run_cut(&S, "b", "64", "2", "0.003") && !hy_run_cut(&S, "b", "64", "1", "0.003"));
    ck_assert(hy_run_cut(&S, "b", "64", "", "") && !hy_run_cut(&S, "a", "64", "", ""));
    hy_csv_free(&S);
    tu_remove_dir(dir);
}
END_TEST

/* A task: the highest mean accuracy at the training length wins even at a higher loss; equal
 * accuracy goes to the lower mean val_loss. Evaluations at other lengths do not count. */
START_TEST(select_lr_task) {
    char dir[256], csv[4096] = SWEEP_HEAD "\n";
    tu_fresh_dir(dir, sizeof dir, "results-select-task", true);
    sweep_row(csv, sizeof csv, "a", 32, 1, "0.01", "steps", 1.5);
    sweep_row(csv, sizeof csv, "a", 32, 2, "0.01", "steps", 1.5);
    sweep_row(csv, sizeof csv, "a", 32, 1, "0.03", "steps", 2.5);
    sweep_row(csv, sizeof csv, "a", 32, 2, "0.03", "steps", 2.5);
    sweep_row(csv, sizeof csv, "b", 32, 1, "0.01", "steps", 1.2);
    sweep_row(csv, sizeof csv, "b", 32, 1, "0.03", "steps", 1.1);
    hy_csv S, E;
    table(dir, "sweep.csv", csv, &S);
    table(dir, "eval.csv",
          EVAL_HEAD "a,32,1,0.01,mqar,32,1.5,,0.5,16\na,32,2,0.01,mqar,32,1.5,,0.7,16\n"
                    "a,32,1,0.03,mqar,32,2.5,,0.8,16\na,32,2,0.03,mqar,32,2.5,,0.6,16\n"
                    "a,32,1,0.01,mqar,64,1.5,,1.0,16\n" /* another length: ignored */
                    "b,32,1,0.01,mqar,32,1.2,,0.9,16\nb,32,1,0.03,mqar,32,1.1,,0.9,16\n",
          &E);
    ck_assert(hy_results_are_task(&E));
    ck_assert_int_eq(hy_select_lr(&S, &E), 0);
    char sel[16];
    selected_of(&S, sel);
    /* a: 0.03 has mean accuracy 0.7 > 0.6 despite loss 2.5; b: 0.9 = 0.9, 0.03 has the lower loss */
    ck_assert_str_eq(sel, "001101");
    hy_csv_free(&S), hy_csv_free(&E);
    /* older CSVs: no lr column, so one lr and every row selected */
    table(dir, "old.csv", "variant,seq_len,val_loss\nx,64,2.0\nx,64,2.5\ny,64,1.0\n", &S);
    ck_assert_int_eq(hy_select_lr(&S, NULL), 0);
    selected_of(&S, sel);
    ck_assert_str_eq(sel, "111");
    hy_csv_free(&S);
    /* a corpus eval.csv, old (`none`) or new (`corpus`), is no task */
    table(dir, "e.csv", EVAL_HEAD "x,64,1,0.1,corpus,64,2,2.9,,64\n", &E);
    ck_assert(!hy_results_are_task(&E));
    hy_csv_free(&E);
    table(dir, "e.csv", "variant,seq_len,task,eval_seq_len,val_loss,accuracy,labels\nx,64,none,64,2,0.4,64\n", &E);
    ck_assert(!hy_results_are_task(&E));
    hy_csv_free(&E);
    tu_remove_dir(dir);
}
END_TEST

/* hy_sweep_finalize: sweep_rows.csv -> sweep.csv with lr_selected, exact text; sweep_rows.csv
 * removed; without it, nothing changes. */
START_TEST(sweep_finalize_text) {
    char dir[256];
    tu_fresh_dir(dir, sizeof dir, "results-finalize", true);
    put_file(dir, "sweep_rows.csv", SWEEP_HEAD "\n"
                                    "a,64,1,0.001,4,256,10,2560,steps,1000,5000,1,100,1048576,4096,2.1000,8.1662,3.0297\n"
                                    "a,64,1,0.003,4,256,10,2560,tokens,1000,5000,1,100,1048576,4096,2.0000,7.3891,2.8854\n"
                                    "a,128,1,0.001,4,512,10,5120,seconds,1000,5000,1,100,1048576,4096,1.9000,6.6859,2.7411\n"
                                    "a,128,1,0.003,4,512,10,5120,steps,1000,5000,1,100,1048576,4096,1.9500,7.0287,2.8132\n");
    ck_assert_int_eq(hy_sweep_finalize(dir), 0);
    char *got = tu_slurp(dir, "sweep.csv", NULL);
    ck_assert_str_eq(got, SWEEP_HEAD ",lr_selected\n"
                          "a,64,1,0.001,4,256,10,2560,steps,1000,5000,1,100,1048576,4096,2.1000,8.1662,3.0297,0\n"
                          "a,64,1,0.003,4,256,10,2560,tokens,1000,5000,1,100,1048576,4096,2.0000,7.3891,2.8854,1\n"
                          "a,128,1,0.001,4,512,10,5120,seconds,1000,5000,1,100,1048576,4096,1.9000,6.6859,2.7411,1\n"
                          "a,128,1,0.003,4,512,10,5120,steps,1000,5000,1,100,1048576,4096,1.9500,7.0287,2.8132,0\n");
    ck_assert(!exists(dir, "sweep_rows.csv"));
    /* again: no sweep_rows.csv, sweep.csv stays as it is */
    put_file(dir, "sweep.csv", "variant,seq_len\nkept,1\n");
    ck_assert_int_eq(hy_sweep_finalize(dir), 0);
    char *kept = tu_slurp(dir, "sweep.csv", NULL);
    ck_assert_str_eq(kept, "variant,seq_len\nkept,1\n");
    hy_free(got), hy_free(kept);
    /* with eval.csv of a task beside it, the selection follows accuracy */
    put_file(dir, "sweep_rows.csv", "variant,seq_len,seed,lr,val_loss\nq,32,1,0.1,1.0\nq,32,1,0.2,3.0\n");
    put_file(dir, "eval.csv", EVAL_HEAD "q,32,1,0.1,mqar,32,1.0,,0.2,8\nq,32,1,0.2,mqar,32,3.0,,0.4,8\n");
    ck_assert_int_eq(hy_sweep_finalize(dir), 0);
    got = tu_slurp(dir, "sweep.csv", NULL);
    ck_assert_str_eq(got, "variant,seq_len,seed,lr,val_loss,lr_selected\nq,32,1,0.1,1.0,0\nq,32,1,0.2,3.0,1\n");
    hy_free(got);
    tu_remove_dir(dir);
}
END_TEST

/* ---- groups over seeds ---- */

START_TEST(aggregate_over_seeds) {
    char dir[256], csv[4096] = SWEEP_HEAD ",lr_selected\n";
    tu_fresh_dir(dir, sizeof dir, "results-groups", true);
    /* a at T 64, lr 0.001 (selected): val_loss 2.0, 2.2, 2.7 -> mean 2.3, sd sqrt(0.13), min 2.0, max 2.7 */
    strcat(csv, "a,64,1,0.001,4,256,10,2560,steps,1000,5000,1,100,1,1,2.0,7.39,2.8854,1\n"
                "a,64,2,0.001,4,256,10,2560,steps,1000,5000,1,100,1,1,2.2,9.03,3.1739,1\n"
                "a,64,3,0.001,4,256,10,5120,seconds,1000,5000,1,100,1,1,2.7,14.9,3.8953,1\n"
                "a,64,1,0.003,4,256,10,2560,steps,1000,5000,1,100,1,1,2.4,11.0,3.4625,0\n"
                "a,64,2,0.003,4,256,10,2560,steps,1000,5000,1,100,1,1,2.6,13.5,3.7510,0\n"
                "b,64,1,0.003,4,256,10,2560,steps,1000,6000,1,100,1,1,1.5,4.48,2.1640,1\n");
    hy_csv S, E;
    table(dir, "sweep.csv", csv, &S);
    table(dir, "eval.csv",
          EVAL_HEAD "a,64,1,0.001,corpus,64,2.0,2.8854,,64\na,64,2,0.001,corpus,64,2.2,3.1739,,64\n"
                    "a,64,3,0.001,corpus,64,2.7,3.8953,,64\n"
                    "a,64,1,0.001,corpus,256,3.0,4.3281,,64\na,64,2,0.001,corpus,256,3.5,5.0494,,64\n"
                    "a,64,3,0.001,corpus,256,4.0,5.7708,,64\n"
                    "a,64,1,0.003,corpus,256,9.0,12.98,,64\n" /* not the selected lr */
                    "b,64,1,0.003,corpus,256,2.5,3.6067,,64\n",
          &E);
    hy_group *g;
    int n = hy_group_sweep(&S, &E, false, &g);
    ck_assert_int_eq(n, 2);
    ck_assert_str_eq(g[0].variant, "a");
    ck_assert_int_eq(g[0].seq_len, 64);
    ck_assert_str_eq(g[0].lr, "0.001");
    ck_assert_int_eq(g[0].runs, 3);
    ck_assert_int_eq(g[0].loss.n, 3);
    ck_assert_double_eq_tol(g[0].loss.mean, 2.3, 1e-12);
    ck_assert_double_eq_tol(g[0].loss.sd, sqrt(0.13), 1e-12);
    ck_assert_double_eq(g[0].loss.min, 2.0);
    ck_assert_double_eq(g[0].loss.max, 2.7);
    ck_assert_double_eq_tol(g[0].bits.mean, (2.8854 + 3.1739 + 3.8953) / 3, 1e-12);
    ck_assert_double_eq_tol(g[0].flops.mean, 3 * 5000 * (2560 + 2560 + 5120) / 3.0, 1e-6);
    ck_assert_int_eq(g[0].accuracy.n, 0);   /* corpus: no accuracy */
    ck_assert(isnan(g[0].accuracy.mean));
    ck_assert(g[0].cut);                    /* seed 3 stopped by seconds */
    ck_assert(!g[1].cut);
    ck_assert_int_eq(g[1].runs, 1);         /* one seed: no sd */
    ck_assert_double_eq(g[1].loss.mean, 1.5);
    ck_assert(isnan(g[1].loss.sd));
    free(g);
    /* every lr: a has two groups */
    n = hy_group_sweep(&S, &E, true, &g);
    ck_assert_int_eq(n, 3);
    ck_assert_str_eq(g[1].lr, "0.003");
    ck_assert(!g[1].selected && g[0].selected);
    ck_assert_double_eq_tol(g[1].loss.mean, 2.5, 1e-12);
    ck_assert_double_eq_tol(g[1].loss.sd, sqrt(0.02), 1e-12);
    free(g);
    /* eval.csv groups: (variant, seq_len, eval_seq_len) at the selected lr */
    n = hy_group_eval(&S, &E, &g);
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(g[1].eval_seq_len, 256);
    ck_assert_int_eq(g[1].runs, 3);   /* the 0.003 row is left out */
    ck_assert_double_eq_tol(g[1].loss.mean, 3.5, 1e-12);
    ck_assert_double_eq_tol(g[1].loss.sd, 0.5, 1e-12);
    ck_assert_double_eq(g[1].loss.min, 3.0);
    ck_assert_double_eq(g[1].loss.max, 4.0);
    ck_assert(g[1].cut);              /* its seed 3 was cut (sweep.csv) */
    ck_assert_str_eq(g[2].variant, "b");
    ck_assert(!g[2].cut);
    free(g);
    hy_csv_free(&S), hy_csv_free(&E);
    /* a task: the sweep group's accuracy comes from eval.csv at the training length */
    table(dir, "sweep.csv", "variant,seq_len,seed,lr,val_loss,lr_selected\nt,32,1,0.1,1.0,1\nt,32,2,0.1,1.2,1\n", &S);
    table(dir, "eval.csv", EVAL_HEAD "t,32,1,0.1,mqar,32,1.0,,0.25,8\nt,32,2,0.1,mqar,32,1.2,,0.75,8\n"
                                     "t,32,1,0.1,mqar,64,1.5,,0.1,8\n", &E);
    ck_assert_int_eq(hy_group_sweep(&S, &E, false, &g), 1);
    ck_assert_int_eq(g[0].accuracy.n, 2);
    ck_assert_double_eq_tol(g[0].accuracy.mean, 0.5, 1e-12);
    ck_assert_double_eq_tol(g[0].accuracy.sd, sqrt(0.125), 1e-12);
    ck_assert_double_eq_tol(g[0].bits.mean, 1.1 / log(2.0), 1e-12);   /* no val_bits_per_byte column */
    free(g);
    hy_csv_free(&S), hy_csv_free(&E);
    tu_remove_dir(dir);
}
END_TEST

/* |mean_A - mean_B| > sd_A + sd_B: larger; otherwise within; fewer than 2 values: unknown. */
START_TEST(spread_rule) {
    hy_stat a, b, c, one;
    const double xa[] = {1.0, 1.2, 1.4}, xb[] = {2.0, 2.2, 2.4, NAN}, xc[] = {1.5, 1.7, 1.9}, x1[] = {0.0};
    hy_stat_of(xa, 3, &a);   /* mean 1.2, sd 0.2 */
    hy_stat_of(xb, 4, &b);   /* mean 2.2, sd 0.2; NAN skipped */
    hy_stat_of(xc, 3, &c);   /* mean 1.7, sd 0.2 */
    hy_stat_of(x1, 1, &one);
    ck_assert_int_eq(b.n, 3);
    ck_assert_double_eq_tol(a.sd, 0.2, 1e-12);
    ck_assert_double_eq_tol(b.mean, 2.2, 1e-12);
    ck_assert_int_eq(hy_spread_compare(&a, &b), HY_SPREAD_LARGER);   /* 1.0 > 0.4 */
    ck_assert_int_eq(hy_spread_compare(&b, &a), HY_SPREAD_LARGER);
    ck_assert_int_eq(hy_spread_compare(&a, &c), HY_SPREAD_LARGER);   /* 0.5 > 0.4 */
    const double xd[] = {1.3, 1.5, 1.7};                              /* mean 1.5: 0.3 < 0.4 */
    hy_stat d;
    hy_stat_of(xd, 3, &d);
    ck_assert_int_eq(hy_spread_compare(&a, &d), HY_SPREAD_WITHIN);
    ck_assert_int_eq(hy_spread_compare(&a, &a), HY_SPREAD_WITHIN);
    ck_assert_int_eq(hy_spread_compare(&a, &one), HY_SPREAD_UNKNOWN);   /* n = 1: no sd */
    ck_assert_int_eq(hy_spread_compare(&one, &b), HY_SPREAD_UNKNOWN);
    ck_assert(isnan(one.sd));
    ck_assert_double_eq(one.min, 0.0);
    hy_stat none;
    hy_stat_of(NULL, 0, &none);
    ck_assert_int_eq(none.n, 0);
    ck_assert(isnan(none.mean) && isnan(none.min));
}
END_TEST

/* report.md: per-T mean ± sd (n), the selected lr and the lr table, the spread verdicts, and a
 * dagger with its footnote on a group with a run stopped by seconds, which is not ranked. */
START_TEST(report_marks_cut_group) {
    char dir[256];
    tu_fresh_dir(dir, sizeof dir, "results-report", true);
    /* no lr_selected column: the report selects (one lr: every row) */
    put_file(dir, "sweep.csv", "variant,seq_len,seed,lr,stopped_by,tokens,val_loss,val_bits_per_byte\n"
                               "a,64,1,0.001,steps,100,2.0,3.0\na,64,2,0.001,steps,100,2.2,3.2\n"
                               "b,64,1,0.001,steps,100,1.0,1.4\nb,64,2,0.001,seconds,50,1.2,1.6\n"
                               "c,64,1,0.001,tokens,100,2.1,3.1\nc,64,2,0.001,tokens,100,2.3,3.3\n"
                               "d,64,1,0.001,steps,100,3.0,4.0\n");
    ck_assert_int_eq(hy_write_report(dir, NULL, 0, ""), 0);
    char *rep = tu_slurp(dir, "report.md", NULL);
    /* the per-T table: mean ± sd (n), min – max, and the dagger on b */
    ck_assert_ptr_nonnull(strstr(rep, "| a | 0.001 | 2 | 3.1000 ± 0.1414 | 3.0000 – 3.2000 | 2.1000 ± 0.1414 |"));
    ck_assert_ptr_nonnull(strstr(rep, "| b † | 0.001 | 2 | 1.5000 ± 0.1414 |"));
    ck_assert_ptr_nonnull(strstr(rep, "| d | 0.001 | 1 | 4.0000 | – | 3.0000 |"));
    /* best per T: b has the lowest bits/byte but is cut, so a ranks first and b is named as not ranked */
    ck_assert_ptr_nonnull(strstr(rep, "| 64 | a | 3.1000 | c | 3.2000 | within the spread; not ranked (cut by the wall "
                                      "clock): b † |"));
    /* pairs: 1.6 > 0.2828 larger; 0.1 < 0.2828 within; d has one seed; b's comparisons say they are not like for like */
    ck_assert_ptr_nonnull(strstr(rep, "| 64 | a | b † | +1.6000 | 0.2828 | larger than the spread; † a group cut by the "
                                      "wall clock: not like for like |"));
    ck_assert_ptr_nonnull(strstr(rep, "| 64 | a | c | -0.1000 | 0.2828 | within the spread |"));
    ck_assert_ptr_nonnull(strstr(rep, "| 64 | a | d | -0.9000 | – | spread unknown (n < 2) |"));
    ck_assert_ptr_nonnull(strstr(rep, "| 64 | b † | c | -1.7000 | 0.2828 | larger than the spread; † a group cut"));
    ck_assert_ptr_nonnull(strstr(rep, "| b † | 64 | 0.001 | 2 | 1.1000 ± 0.1414 | **yes** |"));   /* lr table */
    ck_assert_ptr_nonnull(strstr(rep, "| b | 64 | 2 | 0.001 | seconds † |"));                   /* runs table */
    ck_assert_ptr_nonnull(strstr(rep, "† A run of this group was stopped by the wall-clock cap (`stopped_by = seconds`"));
    hy_free(rep);
    /* when every group at a T is cut, they are ranked among themselves and the table says so */
    put_file(dir, "sweep.csv", "variant,seq_len,seed,lr,stopped_by,val_loss,val_bits_per_byte,lr_selected\n"
                               "a,64,1,0.1,seconds,2,2.8,1\nb,64,1,0.1,seconds,1,1.4,1\n");
    ck_assert_int_eq(hy_write_report(dir, NULL, 0, ""), 0);
    rep = tu_slurp(dir, "report.md", NULL);
    ck_assert_ptr_nonnull(strstr(rep, "| 64 | b † | 1.4000 | a † | 2.8000 | spread unknown (n < 2); † a group cut by the wall "
                                      "clock: not like for like; every group at this T was cut by the wall clock |"));
    hy_free(rep);
    /* no cut run: no footnote */
    put_file(dir, "sweep.csv", "variant,seq_len,seed,lr,stopped_by,val_loss,val_bits_per_byte,lr_selected\n"
                               "a,64,1,0.1,steps,2,2.8,1\nb,64,1,0.1,tokens,1,1.4,1\n");
    ck_assert_int_eq(hy_write_report(dir, NULL, 0, ""), 0);
    rep = tu_slurp(dir, "report.md", NULL);
    ck_assert_ptr_null(strstr(rep, "†"));
    hy_free(rep);
    tu_remove_dir(dir);
}
END_TEST

/* ---- loss against position ---- */

/* Two seeds at L = 8, bins of one per doubling of the 1-based position: {1}, {2, 3}, {4 .. 7}, {8}. */
START_TEST(position_bins) {
    char dir[256], csv[8192] = POS_HEAD;
    tu_fresh_dir(dir, sizeof dir, "results-position", true);
    for (int s = 1; s <= 2; s++)
        for (int p = 0; p < 8; p++) {   /* seed 1: loss 1 + 2p; seed 2: 3 + 2p */
            size_t used = strlen(csv);
            snprintf(csv + used, sizeof csv - used, "m,16,%d,0.01,8,%d,%d\n", s, p, 2 * s - 1 + 2 * p);
        }
    strcat(csv, "m,16,1,0.03,8,0,100\n"       /* an lr not selected */
                "m,8,1,0.01,8,0,100\n"        /* a shorter training length */
                "m,16,1,0.01,4,0,100\n");     /* a shorter evaluation */
    hy_csv P, S;
    table(dir, "position.csv", csv, &P);
    table(dir, "sweep.csv", "variant,seq_len,seed,lr,stopped_by,val_loss,lr_selected\nm,16,1,0.01,steps,1,1\n"
                            "m,16,2,0.01,seconds,1,1\nm,16,1,0.03,steps,2,0\n", &S);
    hy_position_curve *c;
    ck_assert_int_eq(hy_position_curves(&P, &S, &c), 1);
    ck_assert_str_eq(c[0].variant, "m");
    ck_assert_str_eq(c[0].lr, "0.01");
    ck_assert_int_eq(c[0].seq_len, 16);
    ck_assert_int_eq(c[0].eval_seq_len, 8);
    ck_assert_int_eq(c[0].n_seeds, 2);
    ck_assert(c[0].cut);
    ck_assert_double_eq(c[0].loss[0], 1);        /* the 0.03 row did not overwrite it */
    ck_assert_double_eq(c[0].loss[8 + 7], 17);
    hy_position_bin b[16];
    ck_assert_int_eq(hy_position_bins(&c[0], 1, b, 16), 4);
    static const int lo[] = {0, 1, 3, 7}, hi[] = {0, 2, 6, 7};
    for (int k = 0; k < 4; k++) ck_assert(b[k].lo == lo[k] && b[k].hi == hi[k]);
    /* bin {2, 3} (positions 1, 2): seed 1 mean (3 + 5) / 2 = 4, seed 2 (5 + 7) / 2 = 6 -> 5 ± sqrt 2 */
    ck_assert_int_eq(b[1].loss.n, 2);
    ck_assert_double_eq_tol(b[1].loss.mean, 5, 1e-12);
    ck_assert_double_eq_tol(b[1].loss.sd, sqrt(2.0), 1e-12);
    ck_assert_double_eq_tol(b[1].x, sqrt(2.0 * 3.0), 1e-12);
    /* bin {4 .. 7} (positions 3 .. 6): seed 1 mean 10, seed 2 mean 12 */
    ck_assert_double_eq_tol(b[2].loss.mean, 11, 1e-12);
    ck_assert_double_eq(b[2].loss.min, 10);
    hy_stat r;
    hy_position_range(&c[0], 4, 7, &r);   /* the last half: seed 1 (9+11+13+15)/4 = 12, seed 2 14 */
    ck_assert_double_eq_tol(r.mean, 13, 1e-12);
    hy_position_range(&c[0], 16, 31, &r);   /* beyond the window */
    ck_assert_int_eq(r.n, 0);
    /* 2 per doubling: floor(2 log2 x) for x = 1 .. 8 is 0 2 3 4 4 5 5 6: {1} {2} {3} {4, 5} {6, 7} {8} */
    ck_assert_int_eq(hy_position_bins(&c[0], 2, b, 16), 6);
    ck_assert(b[3].lo == 3 && b[3].hi == 4 && b[4].lo == 5 && b[4].hi == 6 && b[5].lo == 7 && b[5].hi == 7);
    hy_position_curves_free(c, 1);
    hy_csv_free(&P), hy_csv_free(&S);
    tu_remove_dir(dir);
}
END_TEST

/* A whole new-format folder plots: quality with error bars, evaluation lengths, the position plot
 * with binned data only, learning curves; report.md's position table has the hand-made values. */
START_TEST(new_format_plots) {
    char dir[256];
    tu_fresh_dir(dir, sizeof dir, "results-newplot", true);
    hy_strbuf s = {0}, e = {0}, p = {0}, t = {0};
    hy_sb_add(&s, SWEEP_HEAD ",lr_selected\n");
    hy_sb_add(&e, EVAL_HEAD);
    hy_sb_add(&p, POS_HEAD);
    hy_sb_add(&t, "variant,seq_len,seed,peak_lr,step,tokens,train_loss,val_loss,lr,grad_norm,tokens_per_s,elapsed_s,aux_loss\n");
    static const char *const vars[] = {"x", "y"};
    for (int v = 0; v < 2; v++)
        for (int T = 32; T <= 64; T *= 2)
            for (int seed = 1; seed <= 2; seed++) {
                double loss = 2 + v * 0.5 + seed * 0.1 + T / 640.0;
                hy_sb_printf(&s, "%s,%d,%d,0.01,4,%d,10,%d,steps,1000,5000,1,100,1048576,4096,%.4f,%.4f,%.4f,1\n", vars[v], T,
                             seed, 4 * T, 40 * T, loss, exp(loss), loss / log(2.0));
                for (int L = 32; L <= 128; L *= 2)
                    hy_sb_printf(&e, "%s,%d,%d,0.01,corpus,%d,%.4f,%.4f,,%d\n", vars[v], T, seed, L, loss + L / 1000.0,
                                 (loss + L / 1000.0) / log(2.0), 8 * L);
                if (T == 64)   /* loss 3 + v before position 32, 2 + v from there (seed 2: +0.5 everywhere) */
                    for (int q = 0; q < 128; q++)
                        hy_sb_printf(&p, "%s,64,%d,0.01,128,%d,%.4f\n", vars[v], seed, q, (q < 32 ? 3 : 2) + v + (seed - 1) * 0.5);
                for (int step = 0; step <= 10; step += 5)
                    hy_sb_printf(&t, "%s,%d,%d,0.01,%d,%d,%s,%.4f,0.01,1,100,%d,\n", vars[v], T, seed, step, step * 4 * T,
                                 step ? "2.5" : "", loss + 1.0 / (step + 1), step);
            }
    char *st = hy_sb_take(&s), *et = hy_sb_take(&e), *pt = hy_sb_take(&p), *tt = hy_sb_take(&t);
    put_file(dir, "sweep.csv", st), put_file(dir, "eval.csv", et), put_file(dir, "position.csv", pt), put_file(dir, "train.csv", tt);
    free(st), free(et), free(pt), free(tt);
    char summary[4096];
    ck_assert_msg(hy_experiment_plot(dir, summary, sizeof summary) == 0, "%s", hy_last_error());
    static const char *const plots[] = {"quality", "generalization", "position", "learning"};
    tu_assert_plots(dir, plots, 4);
    ck_assert_ptr_nonnull(strstr(summary, "position.{png,svg}"));
    /* quality: x at T 32 over its two seeds (val_loss 2.15, 2.25; bits as written, 4 decimals), with error bars */
    hy_stat q;
    double bx[2] = {r4(2.15 / log(2.0)), r4(2.25 / log(2.0))};
    hy_stat_of(bx, 2, &q);
    ck_assert_double_eq_tol(q.mean, 2.2 / log(2.0), 1e-4);
    char *gp = tu_slurp(dir, "quality.gp", NULL), want[200];
    snprintf(want, sizeof want, "\n32 %.9g %.9g ", q.mean, q.sd);
    ck_assert_msg(strstr(gp, want), "quality.gp lacks '%s'", want);
    ck_assert_ptr_nonnull(strstr(gp, "yerrorlines"));
    hy_free(gp);
    /* position: the binned data only, not 128 rows per curve: 4 bins per doubling of the 1-based position
     * (floor(4 log2 x)) leaves 1, 2, 3 alone and fills every quarter octave from 4 to 128: 3 + 21 bins */
    gp = tu_slurp(dir, "position.gp", NULL);
    ck_assert_ptr_nonnull(strstr(gp, "set logscale x"));
    int lines = 0;
    for (char *q = strstr(gp, "$d0 << EOD\n"); q && strncmp(q, "EOD\n", 4); q = strchr(q, '\n') + 1) lines++;
    ck_assert_int_eq(lines - 1, 24);
    /* bin {1}: positions 0 only; seeds 3 and 3.5 -> 3.25 ± sqrt(0.125) */
    snprintf(want, sizeof want, "$d0 << EOD\n1 3.25 %.9g 1 1\n", sqrt(0.125));
    ck_assert_msg(strstr(gp, want), "position.gp lacks '%s'", want);
    hy_free(gp);
    char *rep = tu_slurp(dir, "report.md", NULL);
    ck_assert_ptr_nonnull(strstr(rep, "![position](position.svg)"));
    ck_assert_ptr_nonnull(strstr(rep, "| loss at 64–127 (last half) |"));
    ck_assert_ptr_nonnull(strstr(rep, "| x | 0.01 | 2 | 3.2500 ± 0.3536 | – | 2.2500 ± 0.3536 | -1.0000 ± 0.0000 |"));
    ck_assert_ptr_nonnull(strstr(rep, "| y | 0.01 | 2 | 4.2500 ± 0.3536 | – | 3.2500 ± 0.3536 | -1.0000 ± 0.0000 |"));
    /* eval.csv as a matrix: x trained at 32, bits/byte at 32 (val_loss + 0.032) */
    double be[2] = {r4(r4(2.15 + 0.032) / log(2.0)), r4(r4(2.25 + 0.032) / log(2.0))};
    hy_stat_of(be, 2, &q);
    snprintf(want, sizeof want, "| x | 32 | 2 | %.4f ± %.4f |", q.mean, q.sd);
    ck_assert_msg(strstr(rep, want), "report.md lacks '%s'", want);
    ck_assert_ptr_nonnull(strstr(rep, "| variant | trained at T | n | at 32 | at 64 | at 128 |"));
    /* learning: the last row per run; val 2.3 + 1/(step+1) changes from 2.4667 (step 5, the last at or before
     * 8 = 80% of 10) to 2.3909: -3.07% */
    ck_assert_ptr_nonnull(strstr(rep, "| x | 64 | 2 | 0.01 | 10 | 2560 | 10 | 2.5 | 2.3909 | -3.1% |"));
    /* the same change by group, mean ± sd over the two seeds of the values as written (seed s: loss
     * 2.1 + 0.1 s at T 64), and the flattening verdict on the mean (-3.1% improves by more than 2%) */
    double ch[2];
    for (int seed = 1; seed <= 2; seed++) {
        double v80 = r4(2.1 + 0.1 * seed + 1.0 / 6), v10 = r4(2.1 + 0.1 * seed + 1.0 / 11);
        ch[seed - 1] = 100.0 * (v10 - v80) / v80;
    }
    hy_stat_of(ch, 2, &q);
    ck_assert(q.mean < -3.0 && q.mean > -3.3);
    snprintf(want, sizeof want, "| x | 64 | 0.01 | 2 | %+.2f%% ± %.2f | %+.2f%% – %+.2f%% | no |", q.mean, q.sd, q.min, q.max);
    ck_assert_msg(strstr(rep, want), "report.md lacks '%s'", want);
    ck_assert_ptr_nonnull(strstr(rep, "| variant | T | lr | n | val change, last 20% (mean ± sd) | min – max | flattened"));
    hy_free(rep);
    tu_remove_dir(dir);
}
END_TEST

/* CSVs of an older runner (no seed, lr, stopped_by, lr_selected; eval.csv task `none`, train.csv
 * without seed and peak_lr) still plot: one seed per group, every row selected, complete runs. */
START_TEST(old_format_plots) {
    char dir[256];
    tu_fresh_dir(dir, sizeof dir, "results-oldplot", true);
    put_file(dir, "sweep.csv",
             "variant,seq_len,params,flop_per_token,tokens,train_s,tokens_per_s,peak_bytes,state_bytes,val_loss,val_ppl,"
             "val_bits_per_byte\nx,64,100,1000,500,1,500,10,10,2.0,7.39,2.885\nx,128,100,1100,500,1,500,10,10,1.9,6.69,2.741\n"
             "y,64,100,900,500,1,500,10,10,2.1,8.17,3.030\ny,128,100,950,500,1,500,10,10,1.8,6.05,2.597\n");
    put_file(dir, "eval.csv", "variant,seq_len,task,eval_seq_len,val_loss,accuracy,labels\nx,64,none,64,2.0,0.4,64\n"
                              "x,128,none,128,1.9,0.41,64\ny,64,none,64,2.1,0.39,64\ny,128,none,128,1.8,0.42,64\n");
    put_file(dir, "train.csv", "variant,seq_len,step,tokens,train_loss,val_loss,lr,grad_norm,tokens_per_s,elapsed_s\n"
                               "x,64,0,0,,5.5,,,,0\nx,64,1,64,5.0,,0.01,1,64,1\nx,64,2,128,4.0,4.1,0.01,1,64,2\n"
                               "y,128,1,128,5.0,4.9,0.01,1,64,1\n");
    char summary[4096];
    ck_assert_msg(hy_experiment_plot(dir, summary, sizeof summary) == 0, "%s", hy_last_error());
    ck_assert(exists(dir, "quality.png") && exists(dir, "quality.svg") && exists(dir, "learning.svg"));
    ck_assert(!exists(dir, "generalization.png"));   /* evaluated at the training length only */
    ck_assert(!exists(dir, "position.png"));          /* no position.csv */
    char *gp = tu_slurp(dir, "quality.gp", NULL);
    ck_assert_ptr_nonnull(strstr(gp, "64 2.885 0 1500000\n128 2.741 0 1650000\n"));   /* one seed: zero error bar */
    hy_free(gp);
    char *rep = tu_slurp(dir, "report.md", NULL);
    ck_assert_ptr_nonnull(strstr(rep, "| x | – | 1 | 2.8850 | – | 2.0000 |"));
    ck_assert_ptr_nonnull(strstr(rep, "| 64 | x | 2.8850 | y | 3.0300 | spread unknown (n < 2) |"));
    ck_assert_ptr_nonnull(strstr(rep, "| x | 64 | – | 1 | 2.0000 | **yes** |"));
    ck_assert_ptr_null(strstr(rep, "†"));
    hy_free(rep);
    /* an older task experiment evaluated beyond its training length draws the generalization plot */
    put_file(dir, "sweep.csv", "variant,seq_len,params,flop_per_token,tokens,train_s,tokens_per_s,peak_bytes,state_bytes,"
                               "val_loss,val_ppl,val_bits_per_byte\nm,32,100,1000,500,1,500,10,10,1.0,2.7,1.44\n");
    put_file(dir, "eval.csv", "variant,seq_len,task,eval_seq_len,val_loss,accuracy,labels\nm,32,induction,32,1.0,0.9,64\n"
                              "m,32,induction,64,1.5,0.6,64\n");
    ck_assert_msg(hy_experiment_plot(dir, NULL, 0) == 0, "%s", hy_last_error());
    gp = tu_slurp(dir, "generalization.gp", NULL);
    ck_assert_ptr_nonnull(strstr(gp, "32 0.9 0\n64 0.6 0\n"));
    hy_free(gp);
    rep = tu_slurp(dir, "report.md", NULL);
    ck_assert_ptr_nonnull(strstr(rep, "| m | 32 | 1 | 0.9000 | 0.6000 |"));   /* accuracy matrix */
    ck_assert_ptr_nonnull(strstr(rep, "| m | 32 | 1 | 1.0000 | 1.5000 |"));   /* loss matrix */
    hy_free(rep);
    tu_remove_dir(dir);
}
END_TEST

/* The suite: table tests (no gnuplot) and plot tests (gnuplot). */
static Suite *make_results_suite(void) {
    Suite *s = suite_create("results");
    TCase *t = tcase_create("tables");
    tcase_add_test(t, select_lr_per_variant);
    tcase_add_test(t, select_lr_task);
    tcase_add_test(t, sweep_finalize_text);
    tcase_add_test(t, aggregate_over_seeds);
    tcase_add_test(t, spread_rule);
    tcase_add_test(t, report_marks_cut_group);
    tcase_add_test(t, position_bins);
    suite_add_tcase(s, t);
    t = tcase_create("plots");
    tcase_set_timeout(t, getenv("CK_DEFAULT_TIMEOUT") ? atof(getenv("CK_DEFAULT_TIMEOUT")) : 120);   /* runs gnuplot */
    tcase_add_test(t, new_format_plots);
    tcase_add_test(t, old_format_plots);
    suite_add_tcase(s, t);
    return s;
}
HY_TEST_SUITE(make_results_suite)

/* The trainer end to end on a tiny config: train.csv schema, loss falls, determinism, resume
 * continues the identical loss curve, and an interrupt saves a checkpoint. */
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "experiments/data.h"
#include "experiments/train.h"
#include "tests/testutil.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void load(hy_run_config *c, const char *out_dir, const char *extra) {
    char set_out[512];
    snprintf(set_out, sizeof set_out, "out_dir=%s", out_dir);
    const char *sets[] = {set_out, extra};
    ck_assert_msg(hy_run_config_load("tests/configs/tiny-train.yaml", sets, extra ? 2 : 1, c) == 0, "%s",
                  hy_last_error());
}

/* The first six columns of every row (variant .. val_loss): what must be reproducible. */
static void loss_columns(const char *csv, char *out, size_t n) {
    size_t used = 0;
    for (const char *line = strchr(csv, '\n') + 1; *line; line = strchr(line, '\n') + 1) {
        const char *f = line;
        for (int k = 0; k < 6; k++) f = strchr(f, ',') + 1;
        size_t want = (size_t)(f - line);
        ck_assert(used + want + 1 < n);
        memcpy(out + used, line, want);
        used += want;
        out[used++] = '\n';
    }
    out[used] = 0;
}

/* Field k (0-based) of a CSV line, as a number; NAN when empty. */
static double csv_field(const char *line, int k) {
    for (int i = 0; i < k; i++) line = strchr(line, ',') + 1;
    return *line == ',' || *line == '\n' || !*line ? NAN : atof(line);
}

START_TEST(train_writes_csv_config_and_checkpoints) {
    char dir[256];
    tu_fresh_dir(dir, sizeof dir, "train-csv", false);
    hy_run_config c;
    load(&c, dir, NULL);
    hy_train_opts o = {0};
    hy_train_result r;
    ck_assert_msg(hy_train(&c, &o, &r) == 0, "%s", hy_last_error());
    ck_assert_int_eq(r.steps, 40);
    ck_assert_double_eq(r.tokens, 40.0 * 4 * 32);
    char *csv = tu_slurp(dir, "train.csv", NULL);
    const char *header =
        "variant,seq_len,seed,peak_lr,step,tokens,train_loss,val_loss,lr,grad_norm,tokens_per_s,elapsed_s,aux_loss,"
        "comm_s,val_bits_per_byte,val_accuracy\n";
    ck_assert_msg(strncmp(csv, header, strlen(header)) == 0, "header: %.100s", csv);
    int rows = 0;
    for (const char *p = strchr(csv, '\n') + 1; *p; p = strchr(p, '\n') + 1) {
        int commas = 0;
        for (const char *q = p; *q != '\n'; q++) {
            commas += *q == ',';
            ck_assert_msg(*q != ' ', "space in a CSV value");
        }
        ck_assert_int_eq(commas, 15);
        ck_assert_msg(isnan(csv_field(p, 12)), "aux_loss not empty without MoE: %.80s", p);
        double comm = csv_field(p, 13);   /* comm_s: 0 in one process, empty in row 0 */
        ck_assert_msg(rows == 0 ? isnan(comm) : comm == 0, "comm_s: %.120s", p);
        /* bits per byte of a byte corpus: the validation loss / ln 2, where there is a validation loss */
        double val = csv_field(p, 7), bpb = csv_field(p, 14);
        ck_assert_msg(isnan(val) ? isnan(bpb) : fabs(bpb - val / log(2.0)) < 2e-6, "val %g, bits/byte %g", val, bpb);
        char key[64];   /* variant, seq_len, seed, peak_lr */
        snprintf(key, sizeof key, "tiny-train,32,%llu,%g,", (unsigned long long)c.seed, c.lr);
        ck_assert_msg(strncmp(p, key, strlen(key)) == 0, "row: %.60s", p);
        rows++;
    }
    ck_assert_int_eq(rows, 9);   /* step 0 (val only) + every 5 steps */
    /* the first validation loss is near ln(256) = 5.55; the last must be clearly lower */
    ck_assert_msg(r.val_loss < 4.0, "val loss after training %g", r.val_loss);
    hy_free(csv);
    char *cfg = tu_slurp(dir, "config.yaml", NULL);
    ck_assert_ptr_nonnull(strstr(cfg, "d_model: 32"));
    hy_free(cfg);
    char path[400];
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", dir);
    ck_assert_int_eq(access(path, R_OK), 0);
    snprintf(path, sizeof path, "%s/checkpoint.state.safetensors", dir);
    ck_assert_int_eq(access(path, R_OK), 0);
    snprintf(path, sizeof path, "%s/experts.csv", dir);
    ck_assert_int_ne(access(path, F_OK), 0);   /* only models with MoE layers route tokens */
    hy_run_config_free(&c);
    tu_remove_dir(dir);
}
END_TEST

START_TEST(same_seed_same_loss_curve) {
    char d1[256], d2[256];
    tu_fresh_dir(d1, sizeof d1, "train-det1", false);
    tu_fresh_dir(d2, sizeof d2, "train-det2", false);
    hy_run_config c;
    hy_train_opts o = {0};
    hy_train_result r;
    load(&c, d1, NULL);
    ck_assert_int_eq(hy_train(&c, &o, &r), 0);
    hy_run_config_free(&c);
    load(&c, d2, NULL);
    ck_assert_int_eq(hy_train(&c, &o, &r), 0);
    hy_run_config_free(&c);
    char *a = tu_slurp(d1, "train.csv", NULL), *b = tu_slurp(d2, "train.csv", NULL);
    static char la[8192], lb[8192];
    loss_columns(a, la, sizeof la);
    loss_columns(b, lb, sizeof lb);
    ck_assert_str_eq(la, lb);
    hy_free(a), hy_free(b);
    tu_remove_dir(d1), tu_remove_dir(d2);
}
END_TEST

START_TEST(resume_continues_identical_curve) {
    char full[256], part[256];
    tu_fresh_dir(full, sizeof full, "train-full", false);
    tu_fresh_dir(part, sizeof part, "train-part", false);
    hy_run_config c;
    hy_train_opts o = {0};
    hy_train_result r;
    load(&c, full, NULL);
    ck_assert_int_eq(hy_train(&c, &o, &r), 0);
    hy_run_config_free(&c);
    /* stop after 15 steps as an interrupt would (same schedule as the full run), then resume */
    load(&c, part, NULL);
    o.stop_after = 15;
    ck_assert_int_eq(hy_train(&c, &o, &r), 0);
    ck_assert(r.interrupted);
    ck_assert_int_eq(r.steps, 15);
    o.stop_after = 0;
    o.resume = true;
    ck_assert_msg(hy_train(&c, &o, &r) == 0, "%s", hy_last_error());
    ck_assert_int_eq(r.steps, 40);
    hy_run_config_free(&c);
    char *a = tu_slurp(full, "train.csv", NULL), *b = tu_slurp(part, "train.csv", NULL);
    static char la[8192], lb[8192];
    loss_columns(a, la, sizeof la);
    loss_columns(b, lb, sizeof lb);
    ck_assert_str_eq(la, lb);
    hy_free(a), hy_free(b);
    tu_remove_dir(full), tu_remove_dir(part);
}
END_TEST

/* A train.csv whose rows lack the last column (val_accuracy) is read back on resume with an empty cell
 * there, so every row keeps the header's column count. */
START_TEST(resume_pads_rows_without_the_last_column) {
    char dir[256], cmd[800];
    tu_fresh_dir(dir, sizeof dir, "train-pad", false);
    hy_run_config c;
    hy_train_opts o = {.stop_after = 15};
    hy_train_result r;
    load(&c, dir, NULL);
    ck_assert_int_eq(hy_train(&c, &o, &r), 0);
    snprintf(cmd, sizeof cmd, "sed -i -e '1s/,val_accuracy$//' -e '2,$s/,[^,]*$//' %s/train.csv", dir);
    ck_assert_int_eq(system(cmd), 0);
    char *old = tu_slurp(dir, "train.csv", NULL);
    ck_assert_ptr_null(strstr(old, "val_accuracy"));
    hy_free(old);
    o.stop_after = 0, o.resume = true;
    ck_assert_msg(hy_train(&c, &o, &r) == 0, "%s", hy_last_error());
    hy_run_config_free(&c);
    char *csv = tu_slurp(dir, "train.csv", NULL);
    int rows = 0;
    for (const char *p = csv; *p; p = strchr(p, '\n') + 1, rows++) {
        int commas = 0;
        for (const char *q = p; *q != '\n'; q++) commas += *q == ',';
        ck_assert_msg(commas == 15, "row %d: %.150s", rows, p);
    }
    ck_assert_int_eq(rows, 10);   /* the header, step 0 and every 5 steps to 40 */
    hy_free(csv);
    tu_remove_dir(dir);
}
END_TEST

START_TEST(corpus_folder_skips_binary_and_symlinks) {
    char dir[256], path[400];
    tu_fresh_dir(dir, sizeof dir, "train-corpus", false);
    ck_assert_int_eq(hy_mkdirs(dir), 0);
    snprintf(path, sizeof path, "%s/b.txt", dir);
    ck_assert_int_eq(hy_write_file_atomic(path, "world", 5), 0);
    snprintf(path, sizeof path, "%s/a.txt", dir);
    ck_assert_int_eq(hy_write_file_atomic(path, "hello ", 6), 0);
    snprintf(path, sizeof path, "%s/a.dat", dir);
    ck_assert_int_eq(hy_write_file_atomic(path, "\0\1\2", 3), 0);
    char link[400];
    snprintf(link, sizeof link, "%s/a.u8", dir);
    snprintf(path, sizeof path, "%s/a.txt", dir);
    ck_assert_int_eq(symlink(path, link), 0);
    hy_corpus c;
    ck_assert_msg(hy_corpus_load(&c, dir, 0.1) == 0, "%s", hy_last_error());
    ck_assert_int_eq(c.n_files, 2);
    ck_assert_int_eq((int)c.len, 11);
    ck_assert(memcmp(c.text, "hello world", 11) == 0);   /* sorted by path: a.txt, b.txt */
    ck_assert_int_eq((int)c.n_train, 10);                 /* the last 10% (1 byte) is validation */
    hy_rng r;
    hy_rng_seed(&r, 1);
    int32_t in[8], tg[8];
    ck_assert_int_eq(hy_corpus_batch(&c, 0, &r, 2, 4, in, tg), 0);
    for (int b = 0; b < 2; b++) {   /* targets are the inputs shifted by one, inside the train split */
        for (int t = 0; t < 3; t++) ck_assert_int_eq(tg[b * 4 + t], in[b * 4 + t + 1]);
        const uint8_t *at = memchr(c.text, in[b * 4], 10);
        ck_assert_ptr_nonnull(at);
    }
    ck_assert_int_ne(hy_corpus_batch(&c, 1, &r, 1, 4, in, tg), 0);   /* 1 validation byte < 5 */
    ck_assert_ptr_nonnull(strstr(hy_last_error(), "validation"));
    hy_corpus_free(&c);
    ck_assert_int_ne(hy_corpus_load(&c, "/nonexistent/corpus", 0.1), 0);
    ck_assert_ptr_nonnull(strstr(hy_last_error(), "/nonexistent/corpus"));
    tu_remove_dir(dir);
}
END_TEST

/* The default corpus (installed by the Makefile): the .py files of Python's standard library
 * as dpkg lists them, sorted, the same bytes on every load, with no binary file among them. */
START_TEST(default_corpus_is_python_source) {
    hy_corpus a, b;
    ck_assert_msg(hy_corpus_load(&a, "default", 0.1) == 0, "%s", hy_last_error());
    ck_assert_msg(hy_corpus_load(&b, NULL, 0.1) == 0, "%s", hy_last_error());
    ck_assert_int_gt(a.n_files, 300);
    ck_assert_msg(a.len > 5000000, "%zu bytes", a.len);
    ck_assert_int_eq(a.n_files, b.n_files);
    ck_assert(a.len == b.len && memcmp(a.text, b.text, a.len) == 0);
    ck_assert_ptr_null(memchr(a.text, 0, a.len));
    ck_assert_ptr_nonnull(memmem(a.text, a.len, "\ndef ", 5));   /* Python source */
    ck_assert(a.len - a.n_train > 500000);   /* room for the common evaluation's 262144 bytes */
    hy_corpus_free(&a), hy_corpus_free(&b);
}
END_TEST

/* The tiny config with a 4-expert MoE in every layer, 20 steps. */
static void load_moe(hy_run_config *c, const char *out_dir) {
    char set_out[512];
    snprintf(set_out, sizeof set_out, "out_dir=%s", out_dir);
    const char *sets[] = {set_out, "model.layers.ffn=moe", "model.blocks.moe.n_experts=4", "model.blocks.moe.d_ff=32",
                          "train.steps=20"};
    ck_assert_msg(hy_run_config_load("tests/configs/tiny-train.yaml", sets, 5, c) == 0, "%s", hy_last_error());
}


/* A MoE model: train.csv's aux_loss column is filled (0 < aux <= E·k), experts.csv has every
 * expert of every MoE layer at each evaluation (k slots per validation token), and an interrupted
 * run resumed gives the identical aux column and routing log. */
START_TEST(moe_run_logs_aux_and_routing) {
    char full[256], part[256];
    tu_fresh_dir(full, sizeof full, "train-moefull", false);
    tu_fresh_dir(part, sizeof part, "train-moepart", false);
    hy_run_config c;
    hy_train_opts o = {0};
    hy_train_result r;
    load_moe(&c, full);
    ck_assert_msg(hy_train(&c, &o, &r) == 0, "%s", hy_last_error());
    hy_run_config_free(&c);
    load_moe(&c, part);
    o.stop_after = 10;
    ck_assert_int_eq(hy_train(&c, &o, &r), 0);
    o.stop_after = 0, o.resume = true;
    ck_assert_msg(hy_train(&c, &o, &r) == 0, "%s", hy_last_error());
    hy_run_config_free(&c);
    char *csv = tu_slurp(full, "train.csv", NULL), *csv2 = tu_slurp(part, "train.csv", NULL);
    int rows = 0;
    for (const char *p = strchr(csv, '\n') + 1; *p; p = strchr(p, '\n') + 1, rows++) {
        double step = csv_field(p, 4), aux = csv_field(p, 12);
        if (step == 0) ck_assert_msg(isnan(aux), "row 0 has no training step: %.80s", p);
        else ck_assert_msg(aux > 0 && aux <= 4 * 2, "aux_loss %g: %.80s", aux, p);
    }
    ck_assert_int_eq(rows, 5);   /* steps 0, 5, 10, 15, 20 */
    /* the resumed run: same rows, aux and bits-per-byte columns included (everything but throughput
     * and time) */
    for (const char *a = strchr(csv, '\n') + 1, *b = strchr(csv2, '\n') + 1; *a; a = strchr(a, '\n') + 1,
                    b = strchr(b, '\n') + 1) {
        for (int k = 0; k < 15; k++)
            if (k != 10 && k != 11 && k != 13) {   /* tokens_per_s, elapsed_s, comm_s */
                double x = csv_field(a, k), y = csv_field(b, k);
                ck_assert_msg((isnan(x) && isnan(y)) || x == y, "column %d differs after resume: %.90s / %.90s", k, a, b);
            }
    }
    char *ex = tu_slurp(full, "experts.csv", NULL), *ex2 = tu_slurp(part, "experts.csv", NULL);
    ck_assert_str_eq(ex, ex2);
    ck_assert_msg(strncmp(ex, "variant,seq_len,step,layer,expert,tokens\n", 41) == 0, "header %.60s", ex);
    long total[3][2] = {{0}};
    int n = 0;
    for (const char *p = strchr(ex, '\n') + 1; *p; p = strchr(p, '\n') + 1, n++) {
        int step = (int)csv_field(p, 2), layer = (int)csv_field(p, 3), expert = (int)csv_field(p, 4);
        ck_assert_msg(step % 10 == 0 && step <= 20 && layer >= 0 && layer < 2 && expert >= 0 && expert < 4, "%.60s", p);
        total[step / 10][layer] += (long)csv_field(p, 5);
    }
    ck_assert_int_eq(n, 3 * 2 * 4);   /* 3 evaluations x 2 layers x 4 experts */
    for (int e = 0; e < 3; e++)
        for (int l = 0; l < 2; l++) ck_assert_int_eq(total[e][l], 4L * 4 * 32 * 2);   /* eval_batches·B·T·k */
    hy_free(csv), hy_free(csv2), hy_free(ex), hy_free(ex2);
    tu_remove_dir(full), tu_remove_dir(part);
}
END_TEST

static Suite *train_suite(void) {
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("trainer");
    tcase_add_test(tc, corpus_folder_skips_binary_and_symlinks);
    tcase_add_test(tc, default_corpus_is_python_source);
    tcase_add_test(tc, train_writes_csv_config_and_checkpoints);
    tcase_add_test(tc, same_seed_same_loss_curve);
    tcase_add_test(tc, resume_continues_identical_curve);
    tcase_add_test(tc, resume_pads_rows_without_the_last_column);
    tcase_add_test(tc, moe_run_logs_aux_and_routing);
    suite_add_tcase(s, tc);
    return s;
}
HY_TEST_SUITE(train_suite)

/* Validation before anything is written (experiments/validate.h): the corpus exists and fits the
 * vocabulary and seq_len, the memory estimate is compared with the machine's (refused above it,
 * --force overrides), and `--check` validates alone, for run configs and experiments, on the
 * library and on the program (HY_EXE). */
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "experiments/experiment.h"
#include "experiments/train.h"
#include "experiments/validate.h"
#include "tests/testutil.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Writes text to dir/name; returns the path in out. */
static const char *write_file(char *out, size_t n, const char *dir, const char *name, const char *text) {
    ck_assert_int_eq(hy_write_file_atomic(tu_path(out, n, dir, name), text, strlen(text)), 0);
    return out;
}

/* Whether dir exists at all. */
static bool exists(const char *path) { return access(path, F_OK) == 0; }

/* The tiny trainer config of the tests, with `model` (a YAML map body at 2 spaces) and `data`. */
static const char *tiny_config(char *out, size_t n, const char *dir, const char *vocab, const char *corpus) {
    char text[2048];
    snprintf(text, sizeof text,
             "name: tiny\nseed: 7\nthreads: 2\nout_dir: %s/out\n"
             "model:\n  d_model: 32\n  n_layers: 2\n  vocab_size: %s\n  blocks: {attention: {n_heads: 2}, swiglu: {d_ff: 64}}\n"
             "  layers: {mixer: attention, ffn: swiglu}\n"
             "data:\n  corpus: %s\n"
             "train: {seq_len: 32, batch_size: 4, steps: 4, lr: 0.01, warmup_steps: 1, eval_every: 2, eval_batches: 2, log_every: 1}\n",
             dir, vocab, corpus);
    return write_file(out, n, dir, "run.yaml", text);
}

/* vocab_size 100 on a byte corpus: refused by the validation with the key's file, line and column,
 * by the trainer before it writes anything, and by the program (exit 2, no out_dir). */
START_TEST(byte_corpus_must_fit_vocab) {
    char dir[256], cfg[400], out[400], cmd[1500], *msg;
    tu_fresh_dir(dir, sizeof dir, "validate-vocab", true);
    tiny_config(cfg, sizeof cfg, dir, "100", "tests/data/tiny-corpus.txt");
    hy_run_config c;
    ck_assert_msg(hy_run_config_load(cfg, NULL, 0, &c) == 0, "%s", hy_last_error());   /* the schema alone accepts it */
    hy_run_check k;
    ck_assert_int_eq(hy_run_validate(&c, NULL, &k), HY_ERR_CONFIG);
    char where[500];
    snprintf(where, sizeof where, "%s:8:15: model.vocab_size: 100 is too small for the byte corpus", cfg);
    ck_assert_msg(strstr(hy_last_error(), where) && strstr(hy_last_error(), "bytes go up to 122"), "%s", hy_last_error());
    hy_train_opts o = {0};
    hy_train_result r;
    ck_assert_int_eq(hy_train(&c, &o, &r), HY_ERR_CONFIG);
    ck_assert_msg(strstr(hy_last_error(), where), "%s", hy_last_error());
    snprintf(out, sizeof out, "%s/out", dir);
    ck_assert_msg(!exists(out), "the trainer wrote %s before refusing", out);
    hy_run_config_free(&c);
    snprintf(cmd, sizeof cmd, "%s %s --quiet", tu_exe(), cfg);
    ck_assert_int_eq(tu_run(cmd, true, &msg, NULL), 2);
    ck_assert_msg(strstr(msg, where), "%s", msg);
    free(msg);
    ck_assert(!exists(out));
    /* 128 holds every byte of the tiny corpus (ASCII): accepted */
    tiny_config(cfg, sizeof cfg, dir, "128", "tests/data/tiny-corpus.txt");
    ck_assert_int_eq(hy_run_config_load(cfg, NULL, 0, &c), 0);
    ck_assert_msg(hy_run_validate(&c, NULL, &k) == 0, "%s", hy_last_error());
    ck_assert_ptr_nonnull(strstr(k.data_desc, "largest byte 122 < vocab_size 128"));
    hy_run_config_free(&c);
    tu_remove_dir(dir);
}
END_TEST

/* A missing corpus and a corpus too short for seq_len are refused before config.yaml is written,
 * located at data.corpus and train.seq_len. */
START_TEST(missing_or_short_corpus_refused_before_writing) {
    char dir[256], cfg[400], out[400], cmd[1500], short_corpus[400], *msg;
    tu_fresh_dir(dir, sizeof dir, "validate-nocorpus", true);
    snprintf(out, sizeof out, "%s/out", dir);
    tiny_config(cfg, sizeof cfg, dir, "256", "/nonexistent/corpus");
    snprintf(cmd, sizeof cmd, "%s %s --quiet", tu_exe(), cfg);
    ck_assert_int_eq(tu_run(cmd, true, &msg, NULL), 2);
    char where[600];
    snprintf(where, sizeof where, "%s:12:11: data.corpus: corpus /nonexistent/corpus: No such file", cfg);
    ck_assert_msg(strstr(msg, where), "%s", msg);
    free(msg);
    ck_assert_msg(!exists(out), "%s written for a missing corpus", out);
    write_file(short_corpus, sizeof short_corpus, dir, "short.txt", "0123456789012345678901234567890123456789");
    tiny_config(cfg, sizeof cfg, dir, "256", short_corpus);
    hy_run_config c;
    ck_assert_int_eq(hy_run_config_load(cfg, NULL, 0, &c), 0);
    hy_run_check k;
    ck_assert_int_eq(hy_run_validate(&c, NULL, &k), HY_ERR_CONFIG);
    ck_assert_msg(strstr(hy_last_error(), "train.seq_len: 32 needs windows of 33 bytes, but the validation split") &&
                      strstr(hy_last_error(), "has 4 (40 bytes, data.val_fraction 0.1)"),
                  "%s", hy_last_error());
    hy_run_config_free(&c);
    tu_remove_dir(dir);
}
END_TEST

/* The memory estimate against what is available: the d_model 65536 x 1024 layers is
 * refused on this machine with the estimate in the message; a tiny run is refused when
 * HYBRID_MEM_AVAILABLE says 1 MiB, and trains with --force. */
START_TEST(memory_estimate_refuses_and_force_overrides) {
    hy_run_config c;
    const char *huge[] = {"model.d_model=65536", "model.n_layers=1024", "data.corpus=tests/data/tiny-corpus.txt"};
    ck_assert_msg(hy_run_config_load("configs/transformer.yaml", huge, 3, &c) == 0, "%s", hy_last_error());
    hy_run_check k;
    ck_assert_msg(hy_run_validate(&c, NULL, &k) == 0, "%s", hy_last_error());
    ck_assert_msg(k.total > 1e14, "estimate %g bytes", k.total);   /* 4 x 4 bytes x 12 d² x 1024 layers alone */
    double avail;
    char src[200];
    ck_assert_int_eq(hy_mem_available(&avail, src, sizeof src), 0);
    ck_assert_msg(avail > 0, "%s", src);
    ck_assert_int_eq(hy_run_check_memory(&c, &k, avail, src), HY_ERR_CONFIG);
    ck_assert_msg(strstr(hy_last_error(), "configs/transformer.yaml: the run needs about") &&
                      strstr(hy_last_error(), "TiB") && strstr(hy_last_error(), "--force"),
                  "%s", hy_last_error());
    hy_run_config_free(&c);

    char dir[256], cmd[1500], out[400], *msg;
    tu_fresh_dir(dir, sizeof dir, "validate-mem", true);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(cmd, sizeof cmd, "HYBRID_MEM_AVAILABLE=1M %s tests/configs/tiny-train.yaml --out %s --quiet --set train.steps=3",
             tu_exe(), out);
    ck_assert_int_eq(tu_run(cmd, true, &msg, NULL), 2);
    ck_assert_msg(strstr(msg, "the run needs about") && strstr(msg, "but 1.00 MiB is available (HYBRID_MEM_AVAILABLE=1M)"),
                  "%s", msg);
    free(msg);
    ck_assert(!exists(out));
    strcat(cmd, " --force");
    ck_assert_int_eq(tu_run(cmd, true, &msg, NULL), 0);
    free(msg);
    char csv[500];
    snprintf(csv, sizeof csv, "%s/train.csv", out);
    ck_assert(exists(csv));
    snprintf(cmd, sizeof cmd, "HYBRID_MEM_AVAILABLE=lots %s tests/configs/tiny-train.yaml --out %s --check", tu_exe(), out);
    ck_assert_int_eq(tu_run(cmd, true, &msg, NULL), 2);
    ck_assert_msg(strstr(msg, "HYBRID_MEM_AVAILABLE: 'lots' is not a number of bytes"), "%s", msg);
    free(msg);
    tu_remove_dir(dir);
}
END_TEST

/* --check on a run config: exit 0, what was checked on stdout (model, data, memory, available),
 * nothing written; on a bad one, exit 2 with the located error; `init --check` is refused. */
START_TEST(cli_check_validates_a_run_alone) {
    char dir[256], cmd[1500], out[400], cfg[400], *msg;
    tu_fresh_dir(dir, sizeof dir, "validate-check", true);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(cmd, sizeof cmd, "%s tests/configs/tiny-train.yaml --out %s --check", tu_exe(), out);
    ck_assert_int_eq(tu_run(cmd, true, &msg, NULL), 0);
    ck_assert_msg(strstr(msg, "tests/configs/tiny-train.yaml: valid (nothing written") &&
                      strstr(msg, "model: 28832 parameters") &&
                      strstr(msg, "data: corpus tests/data/tiny-corpus.txt: 27026 bytes in 1 files, largest byte 122") &&
                      strstr(msg, "memory: about ") && strstr(msg, "at batch 4 x 32 with 2 threads (parameters 113 KiB") &&
                      strstr(msg, "available: "),
                  "%s", msg);
    free(msg);
    ck_assert_msg(!exists(out), "--check wrote %s", out);
    tiny_config(cfg, sizeof cfg, dir, "64", "tests/data/tiny-corpus.txt");
    snprintf(cmd, sizeof cmd, "%s %s --check", tu_exe(), cfg);
    ck_assert_int_eq(tu_run(cmd, true, &msg, NULL), 2);
    ck_assert_msg(strstr(msg, "model.vocab_size: 64 is too small"), "%s", msg);
    free(msg);
    snprintf(cmd, sizeof cmd, "%s init tests/configs/tiny-train.yaml --out %s --check", tu_exe(), out);
    ck_assert_int_eq(tu_run(cmd, true, &msg, NULL), 2);   /* init has no --check: refused, not ignored */
    ck_assert_msg(strstr(msg, "--check is for training runs"), "%s", msg);
    free(msg);
    snprintf(cmd, sizeof cmd, "%s tests/configs/tiny-train.yaml --out %s --check --set train.lr=-1", tu_exe(), out);
    ck_assert_int_eq(tu_run(cmd, true, &msg, NULL), 2);
    ck_assert_msg(strstr(msg, "--set train.lr=-1"), "%s", msg);
    free(msg);
    ck_assert(!exists(out));
    tu_remove_dir(dir);
}
END_TEST

/* An experiment: --check lists every run with its estimate and writes nothing; a run whose corpus
 * is missing, or whose evaluation does not fit the validation split, stops the experiment before
 * experiment.yaml (or anything) is written, naming the run. */
START_TEST(experiment_validated_before_writing) {
    char dir[256], cmd[1500], out[400], *msg;
    tu_fresh_dir(dir, sizeof dir, "validate-expcheck", true);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(cmd, sizeof cmd, "%s tests/configs/exp/tiny-exp.yaml --out %s --check", tu_exe(), out);
    ck_assert_int_eq(tu_run(cmd, true, &msg, NULL), 0);
    ck_assert_msg(strstr(msg, "experiment tiny-exp, 4 runs, all valid (nothing written") &&
                      strstr(msg, "run a-T8: ") && strstr(msg, "run b-T16: ") && strstr(msg, "largest: run ") &&
                      strstr(msg, "data: corpus tests/data/tiny-corpus.txt"),
                  "%s", msg);
    free(msg);
    ck_assert(!exists(out));
    snprintf(cmd, sizeof cmd, "%s tests/configs/exp/tiny-exp.yaml --out %s --quiet --set data.corpus=/nonexistent", tu_exe(), out);
    ck_assert_int_eq(tu_run(cmd, true, &msg, NULL), 2);
    ck_assert_msg(strstr(msg, "run a-T8: --set data.corpus=/nonexistent: corpus /nonexistent"), "%s", msg);
    free(msg);
    ck_assert_msg(!exists(out), "%s written before the corpus was checked", out);
    /* the library runner checks too, before experiment.yaml: an evaluation longer than the split */
    char exp[400];
    write_file(exp, sizeof exp, dir, "exp.yaml",
               "name: long-eval\nthreads: 2\ndata: {corpus: tests/data/tiny-corpus.txt}\n"
               "train: {batch_size: 2, lr: 0.01, warmup_steps: 1, eval_every: 2, eval_batches: 2}\n"
               "budget: {steps: 2}\nsweep: {seq_len: [8]}\neval: {seq_len: [4000]}\n"
               "variants:\n  - name: a\n    model: {d_model: 16, n_layers: 1, blocks: {attention: {n_heads: 4}},\n"
               "            layers: {mixer: attention, ffn: none}}\n");
    hy_experiment e;
    char set_out[500];
    snprintf(set_out, sizeof set_out, "out_dir=%s", out);
    const char *sets[] = {set_out};
    ck_assert_msg(hy_experiment_load(exp, sets, 1, &e) == 0, "%s", hy_last_error());
    hy_exp_opts o = {.no_plots = true};
    hy_exp_result r;
    ck_assert_int_eq(hy_experiment_run(&e, &o, &r), HY_ERR_CONFIG);
    char want[600];
    snprintf(want, sizeof want, "run a-T8: %s: eval.seq_len: the evaluation of run a-T8 at length 4000 needs 4001 bytes", exp);
    ck_assert_msg(strstr(hy_last_error(), want), "%s", hy_last_error());
    ck_assert(!exists(out));
    hy_experiment_free(&e);
    tu_remove_dir(dir);
}
END_TEST

static Suite *validate_suite(void) {
    Suite *s = suite_create("validate");
    TCase *tc = tcase_create("before-writing");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, byte_corpus_must_fit_vocab);
    tcase_add_test(tc, missing_or_short_corpus_refused_before_writing);
    tcase_add_test(tc, memory_estimate_refuses_and_force_overrides);
    tcase_add_test(tc, cli_check_validates_a_run_alone);
    tcase_add_test(tc, experiment_validated_before_writing);
    suite_add_tcase(s, tc);
    return s;
}
HY_TEST_SUITE(validate_suite)

/* The fuzz targets (tests/fuzz/targets.c) built like the library: every input kept under
 * tests/fuzz/regress/<target>/ (what a fuzzer crashed on, kept after the fix, and the issues'
 * reproductions) is accepted or refused with a message, never crashes (a crash, or a target's
 * abort on a refusal without a message, is a test error); and each target accepts a valid file
 * of its kind, so the replay runs the same code the fuzzers do. */
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "models/checkpoint.h"
#include "models/safetensors.h"
#include "tests/fuzz/targets.h"
#include "tests/testutil.h"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct {
    const char *name;
    int (*run)(const uint8_t *data, size_t size);
} targets[] = {
    {"yaml", hy_fuzz_yaml},   {"safetensors", hy_fuzz_safetensors}, {"checkpoint", hy_fuzz_checkpoint},
    {"state", hy_fuzz_state}, {"dump", hy_fuzz_dump},
};
enum { N_TARGETS = sizeof targets / sizeof *targets };

static void model_up(void) {
    hy_set_threads(1);
    ck_assert_msg(hy_fuzz_model_init("tests/fuzz/model.yaml") == 0, "%s", hy_last_error());
}
static void model_down(void) { hy_fuzz_model_free(); }

/* Feeds file `path` to target k; returns its result. */
static int feed(int k, const char *path) {
    char *data;
    size_t n;
    ck_assert_msg(hy_read_file(path, &data, &n) == 0, "%s", hy_last_error());
    int rc = targets[k].run((const uint8_t *)data, n);
    hy_free(data);
    return rc;
}

START_TEST(regress_inputs_load_cleanly) {
    int k = _i, count = 0;
    char dir[256];
    snprintf(dir, sizeof dir, "tests/fuzz/regress/%s", targets[k].name);
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "%s: missing (every target keeps at least one input)", dir);
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t before = hy_mem_current();
        int rc = feed(k, path);
        ck_assert_msg(rc <= 0, "%s: target returned %d", path, rc);
        if (strcmp(targets[k].name, "state") != 0)   /* (the state target's steps grow the fuzz model's caches) */
            ck_assert_msg(hy_mem_current() == before, "%s: %zu bytes left allocated", path, hy_mem_current() - before);
        count++;
    }
    closedir(d);
    ck_assert_msg(count > 0, "%s holds no input", dir);
}
END_TEST

/* Feeds `size` bytes to target k. */
static int feed_bytes(int k, const void *data, size_t size) { return targets[k].run(data, size); }

/* Feeds file `path` to target k, then removes the file. */
static int feed_file_of(int k, const char *path) {
    int rc = feed(k, path);
    unlink(path);
    return rc;
}

START_TEST(targets_accept_valid_files) {
    enum { YAML, ST, CKPT, STATE, DUMP };
    hy_model *m = hy_fuzz_model();
    char path[256];
    snprintf(path, sizeof path, "/tmp/hybrid-test-fuzz-%d.safetensors", (int)getpid());
    /* a shipped config, with an override line */
    const char *yaml = "name: x\nmodel:\n  d_model: 32\n  n_layers: 1\n  layers:\n    mixer: attention\n#set train.lr=0.5\n";
    ck_assert_msg(feed_bytes(YAML, yaml, strlen(yaml)) == 0, "%s", hy_last_error());
    ck_assert_int_lt(feed_bytes(YAML, "a: [", 4), 0);
    /* the fuzz model's checkpoint: a checkpoint and a safetensors file */
    ck_assert_int_eq(hy_checkpoint_save(m, path, 0), 0);
    ck_assert_msg(feed(CKPT, path) == 0, "%s", hy_last_error());
    ck_assert_msg(feed(ST, path) == 0, "%s", hy_last_error());
    /* a training state of it */
    const char *names[] = {"optim_m", "optim_v"};
    float *slots[] = {m->data, m->data};
    ck_assert_int_eq(hy_train_state_save(path, m, 2, names, slots, 0, NULL, NULL), 0);
    ck_assert_msg(feed_file_of(CKPT, path) == 0, "%s", hy_last_error());
    /* a state after a few tokens */
    hy_model_state *st;
    int32_t tok[5] = {1, 2, 3, 4, 5};
    ck_assert_int_eq(hy_model_state_new(m, 1, &st), 0);
    ck_assert_int_eq(hy_model_prefill(m, st, tok, 5, NULL, false), 0);
    ck_assert_int_eq(hy_model_state_save(m, st, path), 0);
    hy_model_state_free(m, st);
    ck_assert_msg(feed_file_of(STATE, path) == 0, "%s", hy_last_error());
    /* a batch of tokens */
    int32_t batch[2 * 6];
    for (int i = 0; i < 12; i++) batch[i] = (i * 5) % m->cfg.vocab_size;
    hy_st_entry e = {.name = "tokens", .dtype = HY_DT_I32, .ndim = 2, .shape = {2, 6}, .data = batch};
    ck_assert_int_eq(hy_st_write(path, 0, NULL, NULL, 1, &e), 0);
    ck_assert_msg(feed_file_of(DUMP, path) == 0, "%s", hy_last_error());
}
END_TEST

static Suite *fuzz_regress_suite(void) {
    Suite *s = suite_create("fuzz_regress");
    TCase *t = tcase_create("replay");
    tcase_set_timeout(t, 300);
    tcase_add_checked_fixture(t, model_up, model_down);
    tcase_add_loop_test(t, regress_inputs_load_cleanly, 0, N_TARGETS);
    tcase_add_test(t, targets_accept_valid_files);
    suite_add_tcase(s, t);
    return s;
}
HY_TEST_SUITE(fuzz_regress_suite)

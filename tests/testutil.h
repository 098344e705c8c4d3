/* Shared test machinery: suite self-registration, the generic checks every block gets
 * (finite-difference gradients, parallel forward vs streaming step), and the scaffolding of the
 * tests that write files or run the program (scratch folders, whole-file reads, shell commands). */
#ifndef HY_TESTS_TESTUTIL_H
#define HY_TESTS_TESTUTIL_H
#include "layers/registry.h"
#include <check.h>
#include <stdbool.h>
#include <stddef.h>

/* Register a suite factory from any test file: HY_TEST_SUITE(make_attention_suite). */
void hy_test_register(Suite *(*factory)(void));
#define HY_TEST_SUITE(factory) \
    __attribute__((constructor)) static void register_##factory(void) { hy_test_register(factory); }

/* True when HY_QUICK is set (sanitizer runs): tests may shrink sizes, never skip assertions. */
int tu_quick(void);

/* A standalone layer of block `name` with "key=value" options; fails the test on error. */
void tu_layer(hy_layer *L, const char *name, int d_model, const char *const *pairs, int n_pairs, uint64_t seed);
void tu_fill_normal(float *x, size_t n, float scale, uint64_t seed);
/* Largest |a-b| / max(|a|+|b|, floor) over n entries. */
double tu_rel_err(const float *a, const float *b, size_t n, double floor);
/* max |a - ref| / max(max |ref|, floor): the error relative to the tensor's scale (NaN -> inf). */
double tu_scaled_err(const float *a, const float *ref, size_t n, double floor);

/* Finite-difference check of a layer: loss = sum(y * R) for random R; compares backward's dx and
 * every parameter gradient with central differences (step eps) at `samples` random entries per
 * tensor. Returns the largest relative error (|a-n| / max(|a|+|n|, 1e-3)). */
double tu_grad_check(hy_layer *L, int B, int T, float eps, int samples, uint64_t seed);
/* Runs forward over (B, T) and the step() path token by token; returns the largest abs diff
 * relative to the output's max abs value. */
double tu_step_check(hy_layer *L, int B, int T, uint64_t seed);

/* The layer L as it runs inside a model: a copy (same block, options and weights, zero gradients,
 * caches of its own) whose tensors lie in one parameter arena and one gradient arena laid out as
 * the model's (each tensor padded to a multiple of 16 floats), so that a block that stacks tensors
 * lying back to back into one product does so. Runs forward and backward (loss = sum(y * R),
 * random x, R) on L and on the copy, and returns the largest error of the copy's y, dx and every
 * parameter gradient relative to L's (tu_scaled_err, floor 1e-6). *products gets the hy_gemm
 * products of the pass on L and on the copy (two entries). */
double tu_arena_check(hy_layer *L, int B, int T, uint64_t seed, long products[2]);

/* Asserts that dir holds NAME.png, NAME.svg and NAME.gp, non-empty, for each of the n plot names. */
void tu_assert_plots(const char *dir, const char *const *names, int n);

/* ---- files, folders and the program under test ---- */

/* The program under test: $HY_EXE, or ./build/hybrid-exp (make test builds it). */
const char *tu_exe(void);
/* Runs cmd through the shell, with its stderr merged into the output when with_stderr
 * (`cmd 2>&1`). Returns the exit status (-1 when it did not exit normally); *out gets the output,
 * NUL-terminated (free() it), and *len its length when len is not NULL. */
int tu_run(const char *cmd, bool with_stderr, char **out, size_t *len);
/* A scratch folder /tmp/hybrid-test-TAG-PID into dir (returned): anything of that name is removed,
 * and the folder is created empty when `create` (else left for the code under test to create).
 * Tags start with the test file's name ("train-csv") so that files and runs never share one. */
const char *tu_fresh_dir(char *dir, size_t n, const char *tag, bool create);
/* Removes dir and dir.log (where the CLI tests send a run's stderr), once a test has passed. */
void tu_remove_dir(const char *dir);
/* dir/name into out (returned); fails the test when it does not fit. */
const char *tu_path(char *out, size_t n, const char *dir, const char *name);
/* The whole of dir/name (of name alone when dir is NULL), NUL-terminated (hy_free it), and its
 * length in *len when len is not NULL; fails the test, naming the file, when it cannot be read. */
char *tu_slurp(const char *dir, const char *name, size_t *len);

#endif

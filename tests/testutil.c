#include "tests/testutil.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/gemm.h"
#include "core/mem.h"
#include "core/rng.h"
#include "core/strbuf.h"
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_SUITES 64
static Suite *(*factories[MAX_SUITES])(void);
static int n_factories;

void hy_test_register(Suite *(*factory)(void)) {
    if (n_factories < MAX_SUITES) factories[n_factories++] = factory;
}

int tu_quick(void) { return getenv("HY_QUICK") != NULL; }

/* Runs every registered suite. Select with Check's own variables: CK_RUN_SUITE=attention,
 * CK_RUN_CASE=gradients. */
int main(void) {
    if (n_factories == 0) return 1;
    SRunner *sr = srunner_create(factories[0]());
    for (int i = 1; i < n_factories; i++) srunner_add_suite(sr, factories[i]());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

void tu_layer(hy_layer *L, const char *name, int d_model, const char *const *pairs, int n_pairs, uint64_t seed) {
    const hy_block_ops *ops = hy_block_find(name);
    ck_assert_msg(ops != NULL, "block %s not registered", name);
    hy_opts o;
    ck_assert_msg(hy_block_opts_from_pairs(ops, d_model, pairs, n_pairs, &o) == 0, "%s", hy_last_error());
    ck_assert_msg(hy_layer_standalone(L, ops, &o, d_model, seed) == 0, "%s", hy_last_error());
}

void tu_fill_normal(float *x, size_t n, float scale, uint64_t seed) {
    hy_rng r;
    hy_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = scale * hy_rng_normal(&r);
}

double tu_scaled_err(const float *a, const float *ref, size_t n, double floor) {
    double diff = 0, scale = floor;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - ref[i]);
        diff = isnan(e) ? INFINITY : fmax(diff, e);
        scale = fmax(scale, fabs(ref[i]));
    }
    return diff / scale;
}

double tu_rel_err(const float *a, const float *b, size_t n, double floor) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(fabs((double)a[i]) + fabs((double)b[i]), floor);
        if (d > worst || isnan(d)) worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}

static double weighted_sum(hy_layer *L, const float *x, float *y, const float *R, int B, int T) {
    ck_assert_msg(L->ops->forward(L, x, y, B, T) == 0, "%s", hy_last_error());
    double s = 0;
    for (size_t i = 0; i < (size_t)B * T * L->d_model; i++) s += (double)y[i] * R[i];
    return s;
}

/* Scalars of parameter tensor i of L. */
static size_t param_numel(const hy_layer *L, int i) {
    hy_param_spec specs[HY_MAX_BLOCK_PARAMS];
    L->ops->param_specs(&L->opts, L->d_model, specs);
    size_t n = 1;
    for (int d = 0; d < specs[i].ndim; d++) n *= (size_t)specs[i].shape[d];
    return n;
}

static double compare(double analytic, double numeric) {
    return fabs(analytic - numeric) / fmax(fabs(analytic) + fabs(numeric), 1e-3);
}

/* Forward and backward of L on x, dy with zeroed gradients; y, dx out; returns the products run. */
static long arena_pass(hy_layer *L, const float *x, const float *dy, float *y, float *dx, int B, int T) {
    for (int k = 0; k < L->n_params; k++) memset(L->g[k], 0, param_numel(L, k) * sizeof(float));
    hy_gemm_stats_reset();
    L->keep_for_backward = true;
    ck_assert_msg(L->ops->forward(L, x, y, B, T) == 0, "%s", hy_last_error());
    ck_assert_msg(L->ops->backward(L, dy, dx, B, T) == 0, "%s", hy_last_error());
    hy_gemm_stats st;
    hy_gemm_stats_get(&st);
    return st.products;
}

double tu_arena_check(hy_layer *L, int B, int T, uint64_t seed, long products[2]) {
    ck_assert_int_le(L->n_params, HY_MAX_BLOCK_PARAMS);
    size_t off[HY_MAX_BLOCK_PARAMS + 1] = {0};
    for (int k = 0; k < L->n_params; k++) off[k + 1] = off[k] + ((param_numel(L, k) + 15) & ~(size_t)15);
    hy_layer A = *L;
    A.priv = NULL;
    float *data = hy_calloc(off[L->n_params] * sizeof(float)), *grad = hy_calloc(off[L->n_params] * sizeof(float));
    A.p = hy_calloc(sizeof(float *) * (size_t)(L->n_params + 1));
    A.g = hy_calloc(sizeof(float *) * (size_t)(L->n_params + 1));
    ck_assert(data && grad && A.p && A.g);
    for (int k = 0; k < L->n_params; k++) {
        A.p[k] = data + off[k], A.g[k] = grad + off[k];
        memcpy(A.p[k], L->p[k], param_numel(L, k) * sizeof(float));
    }
    size_t n = (size_t)B * T * L->d_model;
    float *x = hy_malloc(n * 4), *dy = hy_malloc(n * 4), *y[2] = {hy_malloc(n * 4), hy_malloc(n * 4)},
          *dx[2] = {hy_malloc(n * 4), hy_malloc(n * 4)};
    tu_fill_normal(x, n, 1, seed), tu_fill_normal(dy, n, 1, seed + 1);
    products[0] = arena_pass(L, x, dy, y[0], dx[0], B, T);
    products[1] = arena_pass(&A, x, dy, y[1], dx[1], B, T);
    double e = fmax(tu_scaled_err(y[1], y[0], n, 1e-6), tu_scaled_err(dx[1], dx[0], n, 1e-6));
    for (int k = 0; k < L->n_params; k++) e = fmax(e, tu_scaled_err(A.g[k], L->g[k], param_numel(L, k), 1e-6));
    if (A.ops->destroy) A.ops->destroy(&A);
    hy_free(A.p), hy_free(A.g), hy_free(data), hy_free(grad);
    hy_free(x), hy_free(dy), hy_free(y[0]), hy_free(y[1]), hy_free(dx[0]), hy_free(dx[1]);
    return e;
}

double tu_grad_check(hy_layer *L, int B, int T, float eps, int samples, uint64_t seed) {
    size_t n = (size_t)B * T * L->d_model;
    float *x = hy_malloc(n * 4), *y = hy_malloc(n * 4), *R = hy_malloc(n * 4), *dx = hy_malloc(n * 4);
    tu_fill_normal(x, n, 1.0f, seed);
    tu_fill_normal(R, n, 1.0f, seed + 1);
    for (int i = 0; i < L->n_params; i++) memset(L->g[i], 0, param_numel(L, i) * 4);
    L->keep_for_backward = true;
    weighted_sum(L, x, y, R, B, T);
    ck_assert_msg(L->ops->backward(L, R, dx, B, T) == 0, "%s", hy_last_error());
    hy_rng rng;
    hy_rng_seed(&rng, seed + 2);
    double worst = 0;
    for (int s = 0; s < samples; s++) {
        size_t i = hy_rng_below(&rng, n);
        float keep = x[i];
        x[i] = keep + eps;
        double up = weighted_sum(L, x, y, R, B, T);
        x[i] = keep - eps;
        double down = weighted_sum(L, x, y, R, B, T);
        x[i] = keep;
        double e = compare(dx[i], (up - down) / (2.0 * eps));
        if (e > worst) worst = e;
    }
    for (int p = 0; p < L->n_params; p++) {
        size_t np = param_numel(L, p);
        for (int s = 0; s < samples; s++) {
            size_t i = hy_rng_below(&rng, np);
            float keep = L->p[p][i];
            L->p[p][i] = keep + eps;
            double up = weighted_sum(L, x, y, R, B, T);
            L->p[p][i] = keep - eps;
            double down = weighted_sum(L, x, y, R, B, T);
            L->p[p][i] = keep;
            double e = compare(L->g[p][i], (up - down) / (2.0 * eps));
            if (e > worst) worst = e;
        }
    }
    hy_free(x);
    hy_free(y);
    hy_free(R);
    hy_free(dx);
    return worst;
}

double tu_step_check(hy_layer *L, int B, int T, uint64_t seed) {
    int d = L->d_model;
    size_t n = (size_t)B * T * d;
    float *x = hy_malloc(n * 4), *y = hy_malloc(n * 4), *xs = hy_malloc((size_t)B * d * 4),
          *ys = hy_malloc((size_t)B * d * 4);
    tu_fill_normal(x, n, 1.0f, seed);
    ck_assert_msg(L->ops->forward(L, x, y, B, T) == 0, "%s", hy_last_error());
    void *state = NULL;
    ck_assert_msg(L->ops->state_new(L, B, &state) == 0, "%s", hy_last_error());
    double worst = 0, scale = 1e-6;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(y[i]));
    for (int t = 0; t < T; t++) {
        for (int b = 0; b < B; b++) memcpy(xs + (size_t)b * d, x + ((size_t)b * T + t) * d, (size_t)d * 4);
        ck_assert_msg(L->ops->step(L, state, xs, ys, B) == 0, "%s", hy_last_error());
        for (int b = 0; b < B; b++)
            for (int c = 0; c < d; c++) {
                double e = fabs((double)ys[(size_t)b * d + c] - y[((size_t)b * T + t) * d + c]) / scale;
                if (e > worst || isnan(e)) worst = isnan(e) ? INFINITY : e;
            }
    }
    L->ops->state_free(L, state);
    hy_free(x);
    hy_free(y);
    hy_free(xs);
    hy_free(ys);
    return worst;
}

void tu_assert_plots(const char *dir, const char *const *names, int n) {
    static const char *const ext[] = {"png", "svg", "gp"};
    for (int k = 0; k < n; k++)
        for (int e = 0; e < 3; e++) {
            char path[1024];
            struct stat st;
            snprintf(path, sizeof path, "%s/%s.%s", dir, names[k], ext[e]);
            ck_assert_msg(stat(path, &st) == 0 && st.st_size > 0, "%s missing", path);
        }
}

const char *tu_exe(void) {
    const char *exe = getenv("HY_EXE");
    return exe ? exe : "./build/hybrid-exp";
}

int tu_run(const char *cmd, bool with_stderr, char **out, size_t *len) {
    hy_strbuf full = {0}, text = {0};
    hy_sb_printf(&full, "%s%s", cmd, with_stderr ? " 2>&1" : "");
    ck_assert_msg(!full.failed, "out of memory for the command %s", cmd);
    FILE *p = popen(full.p, "r");
    ck_assert_msg(p != NULL, "cannot run %s", full.p);
    char chunk[1 << 16];
    for (size_t got; (got = fread(chunk, 1, sizeof chunk, p)) > 0;) hy_sb_addn(&text, chunk, got);
    int st = pclose(p);
    hy_sb_free(&full);
    if (len) *len = text.len;
    *out = hy_sb_take(&text);
    ck_assert_msg(*out != NULL, "out of memory for the output of %s", cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* `rm -rf` of the test's folder dir (and of dir.log when with_log), asserting that it succeeded. */
static void remove_paths(const char *dir, bool with_log) {
    char cmd[1200];
    int n = with_log ? snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s.log'", dir, dir) : snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_msg((size_t)n < sizeof cmd, "folder name too long: %s", dir);
    ck_assert_msg(system(cmd) == 0, "%s failed", cmd);
}

const char *tu_fresh_dir(char *dir, size_t n, const char *tag, bool create) {
    ck_assert_msg((size_t)snprintf(dir, n, "/tmp/hybrid-test-%s-%d", tag, (int)getpid()) < n, "tag too long: %s", tag);
    remove_paths(dir, false);
    if (create) ck_assert_msg(hy_mkdirs(dir) == 0, "%s", hy_last_error());
    return dir;
}

void tu_remove_dir(const char *dir) { remove_paths(dir, true); }

const char *tu_path(char *out, size_t n, const char *dir, const char *name) {
    ck_assert_msg((size_t)snprintf(out, n, "%s/%s", dir, name) < n, "path too long: %s/%s", dir, name);
    return out;
}

char *tu_slurp(const char *dir, const char *name, size_t *len) {
    char path[1024], *data = NULL;
    size_t got;
    if (dir) tu_path(path, sizeof path, dir, name);
    else ck_assert_msg((size_t)snprintf(path, sizeof path, "%s", name) < sizeof path, "path too long: %s", name);
    ck_assert_msg(hy_read_file(path, &data, &got) == 0, "cannot read %s: %s", path, hy_last_error());
    if (len) *len = got;
    return data;
}

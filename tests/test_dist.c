/* Several processes (issue 16): the single-process side of core/dist.h, the model's gradients-ready
 * hook and batch share, sharded optimizers and split evaluation in this process; then data-parallel
 * training, ZeRO-1, resume with another rank count, an error on one rank, Ctrl-C, the allreduce
 * benchmark and the distributed sweep through `mpirun --oversubscribe` (as root: Open MPI's
 * allow-run-as-root setting), every launch bounded by `timeout`, one OpenMP thread per rank. */
#include "core/dist.h"
#include "core/error.h"
#include "core/mem.h"
#include "experiments/config.h"
#include "experiments/experiment.h"
#include "experiments/train.h"
#include "models/model.h"
#include "models/optim.h"
#include "tests/testutil.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The tiny trainer config with overrides. */
static void tiny(hy_run_config *c, const char *const *sets, int n) {
    ck_assert_msg(hy_run_config_load("tests/configs/tiny-train.yaml", sets, n, c) == 0, "%s", hy_last_error());
}

/* ---- in this process ---- */

START_TEST(dist_one_process_does_what_one_process_would) {
    ck_assert_int_eq(hy_dist_rank(NULL), 0);
    ck_assert_int_eq(hy_dist_size(NULL), 1);
    double x[3] = {1.5, -2, 7};
    ck_assert_int_eq(hy_dist_allreduce(NULL, x, 3, HY_DIST_F64, HY_DIST_SUM), 0);
    ck_assert(x[0] == 1.5 && x[1] == -2 && x[2] == 7);
    ck_assert_int_eq(hy_dist_bcast(NULL, x, sizeof x, 0), 0);
    ck_assert_int_eq(hy_dist_barrier(NULL), 0);
    hy_dist *g = (hy_dist *)1;
    ck_assert_int_eq(hy_dist_split(NULL, 3, &g), 0);
    ck_assert_ptr_null(g);
    float own[4] = {1, 2, 3, 4}, full[4] = {0}, back[4] = {0};
    size_t off[2] = {0, 4};
    ck_assert_int_eq(hy_dist_gatherv_f32(NULL, own, full, off, 0), 0);
    ck_assert_int_eq(hy_dist_scatterv_f32(NULL, full, back, off, 0), 0);
    ck_assert_int_eq(hy_dist_allgatherv_f32(NULL, back, off), 0);
    for (int i = 0; i < 4; i++) ck_assert(full[i] == own[i] && back[i] == own[i]);
    hy_dist_pending *p;
    ck_assert_int_eq(hy_dist_pending_new(&p), 0);
    float recv[4] = {0};
    size_t counts[1] = {4};
    ck_assert_int_eq(hy_dist_iallreduce_sum_f32(NULL, own, 4, p), 0);
    ck_assert_int_eq(hy_dist_ireduce_scatter_sum_f32(NULL, own, recv, counts, p), 0);
    hy_dist_progress(p);
    ck_assert_int_eq(hy_dist_wait(p), 0);
    for (int i = 0; i < 4; i++) ck_assert(own[i] == i + 1 && recv[i] == own[i]);
    hy_dist_pending_free(p);
    hy_dist_queue *q;   /* the work queue hands out 0, 1, 2, then nothing */
    ck_assert_int_eq(hy_dist_queue_open(NULL, 3, true, &q), 0);
    for (int want = 0; want <= 3; want++) {
        int item;
        ck_assert_int_eq(hy_dist_queue_next(q, &item), 0);
        ck_assert_int_eq(item, want < 3 ? want : -1);
    }
    ck_assert_int_eq(hy_dist_queue_close(q), 0);
    ck_assert_str_eq(hy_dist_library(), "none");   /* MPI untouched without a launcher */
    hy_dist_abort(NULL, 3);                         /* one process: returns, the caller exits */
}
END_TEST

/* A hook that records each range and a copy of the arena's gradients at that moment. */
typedef struct {
    const hy_model *m;
    int n;
    size_t off[64], count[64];
    float *snap;   /* the gradients as they were when each range was reported (numel floats) */
} ready_log;

static void record(void *ctx, size_t offset, size_t count) {
    ready_log *r = ctx;
    ck_assert_int_lt(r->n, 64);
    r->off[r->n] = offset, r->count[r->n] = count, r->n++;
    memcpy(r->snap + offset, r->m->grad + offset, count * sizeof(float));
}

/* Backward of a model built from the tiny config with `sets`, with the hook recording. */
static void check_ready_ranges(const char *const *sets, int n_sets) {
    hy_run_config c;
    tiny(&c, sets, n_sets);
    hy_model *m;
    ck_assert_int_eq(hy_model_create(&c.model, 5, &m), 0);
    int B = 3, T = 16;
    int32_t in[48], tg[48];
    for (int i = 0; i < B * T; i++) in[i] = (i * 37 + 11) % 256, tg[i] = (i * 53 + 7) % 256;
    ready_log r = {.m = m, .snap = hy_calloc(m->numel * sizeof(float))};
    hy_model_set_grad_ready(m, record, &r);
    hy_loss l;
    ck_assert_int_eq(hy_model_forward(m, in, tg, B, T, true, &l), 0);
    hy_model_zero_grad(m);
    ck_assert_int_eq(hy_model_backward(m), 0);
    /* from the arena's end to its start, adjacent, covering it once */
    ck_assert_int_ge(r.n, 2 + c.model.n_layers);
    ck_assert_uint_eq(r.off[0] + r.count[0], m->numel);
    for (int k = 1; k < r.n; k++) ck_assert_uint_eq(r.off[k] + r.count[k], r.off[k - 1]);
    ck_assert_uint_eq(r.off[r.n - 1], 0);
    /* what was reported ready did not change afterwards */
    ck_assert(memcmp(r.snap, m->grad, m->numel * sizeof(float)) == 0);
    hy_model_set_grad_ready(m, NULL, NULL);
    hy_free(r.snap);
    hy_model_free(m);
    hy_run_config_free(&c);
}

START_TEST(grad_ready_ranges_cover_the_arena_once_and_are_final) {
    check_ready_ranges(NULL, 0);   /* tied head: the embedding is final last */
    const char *untied[] = {"model.tie_embeddings=false", "model.n_layers=3"};
    check_ready_ranges(untied, 2);
    const char *no_ffn[] = {"model.layers.ffn=none"};   /* sub-blocks without an ffn in between */
    check_ready_ranges(no_ffn, 1);
}
END_TEST

/* The gradient of rows [lo, hi) of a batch with the batch share set, added into acc. */
static void part_grad(hy_model *m, const int32_t *in, const int32_t *tg, int lo, int hi, int T, long all_targets,
                      double share, float *acc) {
    hy_loss l;
    ck_assert_int_eq(hy_model_forward(m, in + lo * T, tg + lo * T, hi - lo, T, true, &l), 0);
    hy_model_set_batch_share(m, all_targets, share);
    hy_model_zero_grad(m);
    ck_assert_int_eq(hy_model_backward(m), 0);
    for (size_t i = 0; i < m->numel; i++) acc[i] += m->grad[i];
}

START_TEST(batch_share_parts_add_up_to_the_whole_batch) {
    hy_run_config c;
    tiny(&c, NULL, 0);
    hy_model *m;
    ck_assert_int_eq(hy_model_create(&c.model, 9, &m), 0);
    enum { B = 5, T = 16 };
    int32_t in[B * T], tg[B * T];
    for (int i = 0; i < B * T; i++) in[i] = (i * 31 + 3) % 256, tg[i] = i % 7 == 0 ? -1 : (i * 17 + 5) % 256;
    hy_loss whole;
    ck_assert_int_eq(hy_model_forward(m, in, tg, B, T, true, &whole), 0);
    hy_model_zero_grad(m);
    ck_assert_int_eq(hy_model_backward(m), 0);
    float *ref = hy_malloc(m->numel * sizeof(float)), *sum = hy_calloc(m->numel * sizeof(float));
    memcpy(ref, m->grad, m->numel * sizeof(float));
    part_grad(m, in, tg, 0, 2, T, whole.n_targets, 2.0 / B, sum);   /* uneven parts: 2 + 3 rows */
    part_grad(m, in, tg, 2, 5, T, whole.n_targets, 3.0 / B, sum);
    ck_assert_double_lt(tu_scaled_err(sum, ref, m->numel, 1e-6), 1e-5);
    /* share 0 restores the whole-batch divisor: the same gradient, bit for bit */
    hy_model_set_batch_share(m, 0, 1);
    hy_loss again;
    ck_assert_int_eq(hy_model_forward(m, in, tg, B, T, true, &again), 0);
    hy_model_zero_grad(m);
    ck_assert_int_eq(hy_model_backward(m), 0);
    ck_assert(memcmp(ref, m->grad, m->numel * sizeof(float)) == 0);
    hy_free(ref), hy_free(sum);
    hy_model_free(m);
    hy_run_config_free(&c);
}
END_TEST

START_TEST(sharded_optimizers_update_like_one) {
    hy_run_config c;
    tiny(&c, NULL, 0);
    hy_model *a, *b;
    ck_assert_int_eq(hy_model_create(&c.model, 2, &a), 0);
    ck_assert_int_eq(hy_model_create(&c.model, 2, &b), 0);
    for (int kind = 0; kind < 2; kind++) {
        hy_optim_kind k = kind ? HY_OPTIM_SGD : HY_OPTIM_ADAMW;
        hy_optim whole = {.weight_decay = 0.1, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .momentum = 0.9, .ssm_lr = 1e-3};
        hy_optim parts[3] = {whole, whole, whole};
        size_t cut[4] = {0, a->numel / 3 + 5, 2 * a->numel / 3 + 1, a->numel};   /* cuts inside tensors */
        ck_assert_int_eq(hy_optim_init(&whole, a, k), 0);
        for (int p = 0; p < 3; p++) ck_assert_int_eq(hy_optim_init_range(&parts[p], b, k, cut[p], cut[p + 1]), 0);
        for (int step = 0; step < 3; step++) {
            tu_fill_normal(a->grad, a->numel, 0.1f, 100 + step);
            memcpy(b->grad, a->grad, a->numel * sizeof(float));
            hy_optim_step(&whole, a, 1e-2);
            for (int p = 0; p < 3; p++) hy_optim_step(&parts[p], b, 1e-2);
        }
        ck_assert(memcmp(a->data, b->data, a->numel * sizeof(float)) == 0);
        hy_optim_free(&whole);
        for (int p = 0; p < 3; p++) hy_optim_free(&parts[p]);
    }
    hy_optim bad;
    ck_assert_int_lt(hy_optim_init_range(&bad, a, HY_OPTIM_ADAMW, 10, a->numel + 1), 0);
    /* the clip's sum of squares splits into parts */
    double s = hy_grad_sum_squares(a->grad, a->numel);
    double parts = hy_grad_sum_squares(a->grad, 1000) + hy_grad_sum_squares(a->grad + 1000, a->numel - 1000);
    ck_assert_double_lt(fabs(s - parts) / s, 1e-12);
    ck_assert(hy_clip_scale(0.5, 1.0) == 1.0f && hy_clip_scale(4.0, 1.0) < 0.26f && hy_clip_scale(4.0, 0) == 1.0f);
    hy_model_free(a), hy_model_free(b);
    hy_run_config_free(&c);
}
END_TEST

START_TEST(evaluation_rows_add_up_to_the_whole_batch) {
    hy_run_config c;
    tiny(&c, NULL, 0);
    hy_model *m;
    ck_assert_int_eq(hy_model_create(&c.model, 4, &m), 0);
    hy_data d;
    hy_data_spec spec;
    hy_run_data_spec(&c, &spec);
    ck_assert_int_eq(hy_data_open(&d, &spec, &c.task, c.seed), 0);
    hy_eval_result whole;
    hy_eval_sums a, b;
    ck_assert_int_eq(hy_evaluate_data(m, &d, 5, 16, 3, 11, false, &whole), 0);
    ck_assert_int_eq(hy_evaluate_data_rows(m, &d, 5, 16, 3, 11, false, 0, 2, &a), 0);
    ck_assert_int_eq(hy_evaluate_data_rows(m, &d, 5, 16, 3, 11, false, 2, 5, &b), 0);
    ck_assert_int_eq(a.labels + b.labels, whole.labels);
    ck_assert_double_lt(fabs((a.loss_sum + b.loss_sum) / whole.labels - whole.loss) / whole.loss, 1e-6);
    ck_assert_double_eq_tol((double)(a.right + b.right) / whole.labels, whole.accuracy, 1e-12);
    ck_assert_double_eq(a.bytes + b.bytes, whole.bytes);   /* a byte corpus: one byte per scored token */
    ck_assert_int_lt(hy_evaluate_data_rows(m, &d, 5, 16, 3, 11, false, 3, 3, &a), 0);   /* no rows */
    hy_data_free(&d);
    hy_model_free(m);
    hy_run_config_free(&c);
}
END_TEST

/* ---- through mpirun ---- */

/* Open MPI as root, one OpenMP thread per rank. */
static void mpi_env(void) {
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    setenv("OMP_NUM_THREADS", "1", 1);
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
}

/* `sh -c cmd`'s exit status (-1 when it did not exit). */
static int sh(const char *cmd) {
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The tiny config as every multi-rank test trains it: 7 rows (uneven over 2 and 3 ranks), 20
 * steps, a train.csv row per step. */
#define DP_ARGS \
    "tests/configs/tiny-train.yaml --quiet --set threads=1 --set train.batch_size=7 --set train.steps=20 " \
    "--set train.log_every=1 --set train.bucket_mb=0.01"

/* Trains with `ranks` ranks (0: without mpirun) into dir with extra arguments; returns the status. */
static int train_ranks(int ranks, const char *dir, const char *extra) {
    char cmd[2048];
    if (ranks == 0) snprintf(cmd, sizeof cmd, "timeout 300 %s " DP_ARGS " --out %s %s 2>%s.log", tu_exe(), dir, extra, dir);
    else
        snprintf(cmd, sizeof cmd, "timeout 300 mpirun --oversubscribe -np %d %s " DP_ARGS " --out %s %s >%s.log 2>&1",
                 ranks, tu_exe(), dir, extra, dir);
    return sh(cmd);
}

/* Column `name` of every row of a CSV (NAN for an empty cell); returns the row count. */
/* Opens a CSV file past its header and gives the index of column `name`. */
static FILE *csv_open(const char *path, const char *name, int *col) {
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    char line[4096];
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    int k = 0;
    *col = -1;
    for (char *save = NULL, *t = strtok_r(line, ",\n", &save); t; t = strtok_r(NULL, ",\n", &save), k++)
        if (!strcmp(t, name)) *col = k;
    ck_assert_msg(*col >= 0, "%s has no column %s", path, name);
    return f;
}

/* The value in column `col` of one CSV row, NaN where the cell is empty. */
static double csv_cell(const char *line, int col) {
    const char *p = line;
    for (int j = 0; j < col && p; j++) p = strchr(p, ',') + 1;
    return p && *p != ',' && *p != '\n' ? atof(p) : NAN;
}

/* Reads up to `max` values of column `name`; returns how many. */
static int csv_column(const char *path, const char *name, double *out, int max) {
    int col, n = 0;
    FILE *f = csv_open(path, name, &col);
    char line[4096];
    while (n < max && fgets(line, sizeof line, f)) out[n++] = csv_cell(line, col);
    fclose(f);
    return n;
}

/* The number of data rows and column `name`'s value in the last row: a run stopped by a signal may
 * have logged any number of steps (thousands on a fast machine), so no fixed buffer. */
static int csv_last(const char *path, const char *name, double *last) {
    int col, n = 0;
    FILE *f = csv_open(path, name, &col);
    char line[4096];
    for (; fgets(line, sizeof line, f); n++) *last = csv_cell(line, col);
    fclose(f);
    return n;
}

/* Asserts that two runs' train.csv have the same rows and losses within `rel` (relative). */
static void same_curve(const char *a, const char *b, double rel) {
    char pa[600], pb[600];
    snprintf(pa, sizeof pa, "%s/train.csv", a);
    snprintf(pb, sizeof pb, "%s/train.csv", b);
    static const char *const cols[] = {"step", "train_loss", "val_loss", "grad_norm"};
    for (int c = 0; c < 4; c++) {
        double x[64], y[64];
        int n = csv_column(pa, cols[c], x, 64), m = csv_column(pb, cols[c], y, 64);
        ck_assert_int_eq(n, 21);   /* row 0 and one row per step */
        ck_assert_int_eq(n, m);
        for (int i = 0; i < n; i++) {
            ck_assert_msg(isnan(x[i]) == isnan(y[i]), "%s row %d: %g vs %g", cols[c], i, x[i], y[i]);
            if (!isnan(x[i]))
                ck_assert_msg(fabs(x[i] - y[i]) <= rel * fabs(x[i]) + 1e-6 * (c == 3), "%s row %d: %.7g vs %.7g (%s vs %s)",
                              cols[c], i, x[i], y[i], a, b);
        }
    }
}

START_TEST(data_parallel_curve_matches_one_process) {
    mpi_env();
    char dir[300], one[400], two[400], three[400];
    tu_fresh_dir(dir, sizeof dir, "dist-dp", true);
    snprintf(one, sizeof one, "%s/n1", dir);
    snprintf(two, sizeof two, "%s/n2", dir);
    snprintf(three, sizeof three, "%s/n3", dir);
    ck_assert_int_eq(train_ranks(0, one, ""), 0);
    ck_assert_msg(train_ranks(2, two, "") == 0, "see %s.log", two);
    ck_assert_msg(train_ranks(3, three, "") == 0, "see %s.log", three);
    /* train.csv's losses carry 6 decimals: 1e-5 relative is well above their rounding */
    same_curve(one, two, 1e-5);
    same_curve(one, three, 1e-5);
    double comm[64];   /* comm_s: 0 in one process, measured over ranks */
    char p[600];
    snprintf(p, sizeof p, "%s/train.csv", one);
    ck_assert_int_eq(csv_column(p, "comm_s", comm, 64), 21);
    ck_assert(isnan(comm[0]) && comm[1] == 0 && comm[20] == 0);
    snprintf(p, sizeof p, "%s/train.csv", three);
    ck_assert_int_eq(csv_column(p, "comm_s", comm, 64), 21);
    ck_assert(comm[1] > 0 && comm[20] > 0);
    tu_remove_dir(dir);   /* only a passing test gets here: a failure leaves its logs */
}
END_TEST

START_TEST(sharded_optimizer_and_resume_with_other_rank_count) {
    mpi_env();
    char dir[300], one[400], shard[400], resumed[400];
    tu_fresh_dir(dir, sizeof dir, "dist-zero", true);
    snprintf(one, sizeof one, "%s/n1", dir);
    snprintf(shard, sizeof shard, "%s/s3", dir);
    snprintf(resumed, sizeof resumed, "%s/r", dir);
    ck_assert_int_eq(train_ranks(0, one, ""), 0);
    ck_assert_msg(train_ranks(3, shard, "--set train.shard_optimizer=true") == 0, "see %s.log", shard);
    same_curve(one, shard, 1e-5);
    /* 8 steps on 2 ranks with sharded moments, the rest on 3 ranks without: the same curve */
    ck_assert_msg(train_ranks(2, resumed, "--set train.shard_optimizer=true --stop-after 8") == 130, "see %s.log", resumed);
    ck_assert_msg(train_ranks(3, resumed, "--resume") == 0, "see %s.log", resumed);
    same_curve(one, resumed, 1e-5);
    /* and back to one process */
    ck_assert_msg(train_ranks(0, resumed, "--resume --set train.steps=24") == 0, "see %s.log", resumed);
    tu_remove_dir(dir);
}
END_TEST

START_TEST(an_error_on_one_rank_stops_every_rank) {
    mpi_env();
    char dir[300], cmd[2048], log[400];
    tu_fresh_dir(dir, sizeof dir, "dist-fault", true);
    snprintf(log, sizeof log, "%s/run.log", dir);
    snprintf(cmd, sizeof cmd,
             "HY_FAULT_RANK_STEP=1:3 timeout 120 mpirun --oversubscribe -np 3 %s " DP_ARGS " --out %s/run >%s 2>&1", tu_exe(),
             dir, log);
    int st = sh(cmd);
    ck_assert_msg(st != 0 && st != 124, "status %d (124: the ranks hung until the timeout)", st);
    snprintf(cmd, sizeof cmd, "grep -q 'rank 1: training failed: step 3: failing as HY_FAULT_RANK_STEP asks' %s", log);
    ck_assert_msg(sh(cmd) == 0, "rank 1's message is missing from %s", log);
    tu_remove_dir(dir);
}
END_TEST

START_TEST(ctrl_c_under_mpirun_saves_a_checkpoint) {
    mpi_env();
    char dir[300], cmd[2048];
    tu_fresh_dir(dir, sizeof dir, "dist-sigint", true);
    /* Ctrl-C reaches mpirun, which sends the ranks SIGTERM after odls_base_sigkill_timeout seconds
     * (and SIGKILL as long after that); they agree on the step to stop at, and rank 0 writes the
     * checkpoint. A train.csv row marks progress (mpirun holds the ranks' output back once it has
     * been signalled). */
    snprintf(cmd, sizeof cmd,
             "timeout 200 sh -c 'mpirun --oversubscribe --mca odls_base_sigkill_timeout 5 -np 2 %s "
             "tests/configs/tiny-train.yaml --quiet --set threads=1 --set train.batch_size=7 --set train.steps=1000000 "
             "--set train.log_every=1 --set train.eval_every=5 --out %s/run >%s/run.log 2>&1 & p=$!; "
             "for i in $(seq 1500); do grep -q \"^tiny-train,32,7,0.01,5,\" %s/run/train.csv 2>/dev/null && break; "
             "sleep 0.1; done; kill -INT $p; wait $p'",
             tu_exe(), dir, dir, dir);
    sh(cmd);   /* mpirun's own status after a signal is its business: the files tell */
    snprintf(cmd, sizeof cmd, "test -s %s/run/checkpoint.state.safetensors", dir);
    ck_assert_msg(sh(cmd) == 0, "no checkpoint after Ctrl-C (see %s/run.log)", dir);
    char p[600];
    double step = NAN;
    snprintf(p, sizeof p, "%s/run/train.csv", dir);
    int n = csv_last(p, "step", &step);
    ck_assert_int_ge(n, 2);
    long last = (long)step;
    ck_assert_int_ge(last, 5);
    /* it continues from there */
    snprintf(cmd, sizeof cmd,
             "timeout 200 mpirun --oversubscribe -np 2 %s tests/configs/tiny-train.yaml --quiet --set threads=1 "
             "--set train.batch_size=7 --set train.steps=1000000 --set train.log_every=1 --set train.eval_every=5 "
             "--out %s/run --resume --stop-after 2 >%s/resume.log 2>&1",
             tu_exe(), dir, dir);
    ck_assert_int_eq(sh(cmd), 130);
    n = csv_last(p, "step", &step);
    ck_assert_int_eq((long)step, last + 2);
    /* SIGUSR1 to mpirun reaches the ranks at once (mpirun forwards it): the same clean stop */
    snprintf(cmd, sizeof cmd,
             "timeout 200 sh -c 'mpirun --oversubscribe -np 2 %s tests/configs/tiny-train.yaml --quiet --set threads=1 "
             "--set train.batch_size=7 --set train.steps=1000000 --set train.log_every=100 --set train.eval_every=5 "
             "--out %s/usr1 >%s/usr1.log 2>&1 & p=$!; "
             "for i in $(seq 1500); do grep -q \"^tiny-train,32,7,0.01,5,\" %s/usr1/train.csv 2>/dev/null && break; "
             "sleep 0.1; done; kill -USR1 $p; wait $p'",
             tu_exe(), dir, dir, dir);
    ck_assert_msg(sh(cmd) == 130, "see %s/usr1.log", dir);
    snprintf(cmd, sizeof cmd, "test -s %s/usr1/checkpoint.state.safetensors", dir);
    ck_assert_int_eq(sh(cmd), 0);
    tu_remove_dir(dir);
}
END_TEST

START_TEST(bench_allreduce_writes_its_csv) {
    mpi_env();
    char dir[300], cmd[1024];
    tu_fresh_dir(dir, sizeof dir, "dist-bench", true);
    snprintf(cmd, sizeof cmd,
             "timeout 120 mpirun --oversubscribe -np 2 %s bench allreduce --max-mb 0.0625 --repeats 1 --out %s >%s/log 2>&1",
             tu_exe(), dir, dir);
    ck_assert_int_eq(sh(cmd), 0);
    char p[600];
    double bytes[32], busbw[32];
    snprintf(p, sizeof p, "%s/allreduce.csv", dir);
    int n = csv_column(p, "bytes", bytes, 32);
    ck_assert_int_eq(csv_column(p, "busbw_gb_s", busbw, 32), n);
    ck_assert_int_eq(n, 8);   /* 4 B, 16 B, ... 64 KiB */
    for (int i = 0; i < n; i++) ck_assert(bytes[i] == 4 * pow(4, i) && busbw[i] > 0);
    /* one process has nothing to reduce: a usage error */
    snprintf(cmd, sizeof cmd, "%s bench allreduce --out %s 2>/dev/null", tu_exe(), dir);
    ck_assert_int_eq(sh(cmd), 2);
    tu_remove_dir(dir);
}
END_TEST

/* The experiment's CSV `name` without the columns that are timings (or depend on them); free() it. */
static char *strip_timings(const char *dir, const char *name) {
    char cmd[1200], *out;
    size_t got;
    snprintf(cmd, sizeof cmd,
             "awk -F, 'NR==1{for(i=1;i<=NF;i++) if($i ~ /(_s|_per_s)$/ || $i==\"comm_s\") skip[i]=1} "
             "{s=\"\"; for(i=1;i<=NF;i++) if(!skip[i]) s=s $i \",\"; print s}' %s/%s",
             dir, name);
    ck_assert_int_eq(tu_run(cmd, false, &out, &got), 0);
    ck_assert(got > 0);
    return out;
}

START_TEST(distributed_sweep_matches_the_serial_run) {
    mpi_env();
    char dir[300], serial[400], dist[400], grouped[400], cmd[2048];
    tu_fresh_dir(dir, sizeof dir, "dist-sweep", true);
    snprintf(serial, sizeof serial, "%s/serial", dir);
    snprintf(dist, sizeof dist, "%s/dist", dir);
    snprintf(grouped, sizeof grouped, "%s/grouped", dir);
    const char *args = "tests/configs/exp/tiny-exp.yaml --quiet --set threads=1";
    snprintf(cmd, sizeof cmd, "timeout 300 %s %s --out %s 2>%s.log", tu_exe(), args, serial, serial);
    ck_assert_int_eq(sh(cmd), 0);
    /* the distributed run starts from an interrupted state: run 0 complete, run 1 with a checkpoint */
    char set_out[500];
    snprintf(set_out, sizeof set_out, "out_dir=%s", dist);
    const char *sets[] = {"threads=1", set_out};
    hy_experiment e;
    ck_assert_msg(hy_experiment_load("tests/configs/exp/tiny-exp.yaml", sets, 2, &e) == 0, "%s", hy_last_error());
    hy_exp_opts o = {.stop_after_runs = 1, .no_plots = true};
    hy_exp_result r;
    ck_assert_msg(hy_experiment_run(&e, &o, &r) == 0, "%s", hy_last_error());
    ck_assert_int_eq(r.trained, 1);
    hy_train_opts to = {.variant = e.runs[1].variant, .stop_after = 1};
    hy_train_result tr;
    ck_assert_msg(hy_train(&e.runs[1].cfg, &to, &tr) == 0 && tr.interrupted, "%s", hy_last_error());
    hy_experiment_free(&e);
    snprintf(cmd, sizeof cmd, "timeout 300 mpirun --oversubscribe -np 3 %s tests/configs/exp/tiny-exp.yaml --set threads=1 "
             "--out %s >%s.log 2>&1", tu_exe(), dist, dist);
    ck_assert_msg(sh(cmd) == 0, "see %s.log", dist);
    snprintf(cmd, sizeof cmd, "grep -q 'resuming from its checkpoint' %s.log", dist);
    ck_assert_msg(sh(cmd) == 0, "run 1 was not resumed (%s.log)", dist);
    /* the progress of 3 groups in a log: each line starts with its group's tag, once */
    snprintf(cmd, sizeof cmd, "grep -q '^(group [123]/3) \\[[0-9]*/4 runs done\\] .* val ' %s.log", dist);
    ck_assert_msg(sh(cmd) == 0, "no tagged progress line with a validation loss (%s.log)", dist);
    snprintf(cmd, sizeof cmd, "grep -q '(group.*(group' %s.log", dist);
    ck_assert_msg(sh(cmd) != 0, "a line with two group tags (%s.log)", dist);
    static const char *const files[] = {"sweep.csv", "train.csv", "eval.csv", "position.csv"};
    for (int k = 0; k < 4; k++) {
        char *a = strip_timings(serial, files[k]), *b = strip_timings(dist, files[k]);
        ck_assert_msg(!strcmp(a, b), "%s differs from the serial run's:\n%s\n---\n%s", files[k], a, b);
        free(a), free(b);
    }
    /* two ranks per run: data parallel inside each run, the same rows within reduction error */
    snprintf(cmd, sizeof cmd, "timeout 300 mpirun --oversubscribe -np 2 %s %s --ranks-per-run 2 --out %s >%s.log 2>&1",
             tu_exe(), args, grouped, grouped);
    ck_assert_msg(sh(cmd) == 0, "see %s.log", grouped);
    char ps[600], pg[600];
    double vs[8], vg[8];
    snprintf(ps, sizeof ps, "%s/sweep.csv", serial);
    snprintf(pg, sizeof pg, "%s/sweep.csv", grouped);
    int n = csv_column(ps, "val_loss", vs, 8);
    ck_assert_int_eq(n, 4);
    ck_assert_int_eq(csv_column(pg, "val_loss", vg, 8), n);
    for (int i = 0; i < n; i++) ck_assert_double_lt(fabs(vs[i] - vg[i]) / vs[i], 1e-5);
    /* a group size that does not divide the ranks is a usage error on every rank */
    snprintf(cmd, sizeof cmd, "timeout 120 mpirun --oversubscribe -np 3 %s %s --ranks-per-run 2 --out %s/x >/dev/null 2>&1",
             tu_exe(), args, dir);
    int st = sh(cmd);
    ck_assert(st != 0 && st != 124);
    tu_remove_dir(dir);
}
END_TEST

static Suite *dist_suite(void) {
    Suite *s = suite_create("dist");
    TCase *one = tcase_create("one process");
    tcase_add_test(one, dist_one_process_does_what_one_process_would);
    tcase_add_test(one, grad_ready_ranges_cover_the_arena_once_and_are_final);
    tcase_add_test(one, batch_share_parts_add_up_to_the_whole_batch);
    tcase_add_test(one, sharded_optimizers_update_like_one);
    tcase_add_test(one, evaluation_rows_add_up_to_the_whole_batch);
    suite_add_tcase(s, one);
    TCase *mpi = tcase_create("mpirun");
    tcase_add_test(mpi, data_parallel_curve_matches_one_process);
    tcase_add_test(mpi, sharded_optimizer_and_resume_with_other_rank_count);
    tcase_add_test(mpi, an_error_on_one_rank_stops_every_rank);
    tcase_add_test(mpi, ctrl_c_under_mpirun_saves_a_checkpoint);
    tcase_add_test(mpi, bench_allreduce_writes_its_csv);
    tcase_add_test(mpi, distributed_sweep_matches_the_serial_run);
    suite_add_tcase(s, mpi);
    return s;
}
HY_TEST_SUITE(dist_suite)

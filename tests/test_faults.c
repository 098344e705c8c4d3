/* Faults during training (docs/reliability.md): a diverging run never saves a non-finite
 * checkpoint and keeps its learning curve; train.csv and the telemetry CSVs survive SIGKILL and are
 * trimmed on resume; a checkpoint and a training state that were not saved together (a state put
 * back from another save, a crash between writing the two, a state from before the identity) are
 * refused on resume with both files named. The CLI cases run the real program (HY_EXE). */
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "experiments/train.h"
#include "models/checkpoint.h"
#include "models/safetensors.h"
#include "tests/testutil.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* The tiny trainer config with out_dir and the extra overrides. */
static void load(hy_run_config *c, const char *out_dir, const char *const *extra, int n_extra) {
    char set_out[512];
    const char *sets[16] = {set_out};
    snprintf(set_out, sizeof set_out, "out_dir=%s", out_dir);
    for (int i = 0; i < n_extra; i++) sets[1 + i] = extra[i];
    ck_assert_msg(hy_run_config_load("tests/configs/tiny-train.yaml", sets, 1 + n_extra, c) == 0, "%s", hy_last_error());
}

/* Non-finite F32 values in every tensor of a safetensors file, and its metadata step. */
static size_t nonfinite_in(const char *path, long *step) {
    hy_st_file f;
    ck_assert_msg(hy_st_open(path, &f) == 0, "%s", hy_last_error());
    size_t bad = 0, total = 0;
    for (int t = 0; t < f.n_tensors; t++) {
        const hy_st_tensor *x = &f.tensors[t];
        ck_assert_int_eq(x->dtype, HY_DT_F32);
        for (size_t i = 0; i < x->numel; i++) {
            float v;
            memcpy(&v, (const char *)x->data + 4 * i, 4);
            bad += !isfinite(v);
        }
        total += x->numel;
    }
    ck_assert(total > 0);
    const char *s = hy_st_meta(&f, "step");
    ck_assert_ptr_nonnull(s);
    *step = atol(s);
    hy_st_close(&f);
    return bad;
}

/* The reproduction (lr 1e4, no warmup, a checkpoint every step): training stops with the
 * divergence message, the checkpoint and training state on disk are the last good ones (every
 * value finite, the same step), and train.csv holds every step up to that checkpoint. */
START_TEST(divergence_keeps_last_good_checkpoint) {
    char dir[256], path[400];
    tu_fresh_dir(dir, sizeof dir, "faults-nan", false);
    hy_run_config c;
    const char *sets[] = {"train.lr=1e4", "train.warmup_steps=0", "train.checkpoint_every=1", "train.log_every=1"};
    load(&c, dir, sets, 4);
    hy_train_opts o = {0};
    hy_train_result r;
    ck_assert_int_lt(hy_train(&c, &o, &r), 0);
    const char *msg = hy_last_error();
    ck_assert_msg(strstr(msg, "lower the learning rate (train.lr) or warm up longer (train.warmup_steps)") && strstr(msg, "step "), "%s", msg);
    long fail_step = atol(strstr(msg, "step ") + 5), ck_step, st_step;
    ck_assert_int_eq(nonfinite_in(tu_path(path, sizeof path, dir, "checkpoint.safetensors"), &ck_step), 0);
    ck_assert_int_eq(nonfinite_in(tu_path(path, sizeof path, dir, "checkpoint.state.safetensors"), &st_step), 0);
    ck_assert_int_eq(ck_step, st_step);
    ck_assert_int_eq(ck_step, fail_step - 1);   /* a checkpoint every step: the one before the failure */
    ck_assert_int_ge(ck_step, 1);
    char *csv = tu_slurp(dir, "train.csv", NULL);
    ck_assert_msg(csv != NULL, "no train.csv after a diverged run");
    int rows = 0;
    for (const char *p = strchr(csv, '\n') + 1; *p; p = strchr(p, '\n') + 1) rows++;
    ck_assert_int_eq(rows, (int)ck_step + 1);   /* step 0, then one row per completed step */
    hy_free(csv);
    /* the last good pair resumes (and diverges again at the same step) */
    o.resume = true;
    ck_assert_int_lt(hy_train(&c, &o, &r), 0);
    ck_assert_msg(strstr(hy_last_error(), "(train.lr)"), "%s", hy_last_error());
    hy_run_config_free(&c);
    tu_remove_dir(dir);
}
END_TEST

/* Starts the program with `args` (space-separated, no quoting) in the background, its stderr into
 * err_path, files limited to max_file bytes when > 0 (RLIMIT_FSIZE with SIGXFSZ ignored: a write
 * past it fails with EFBIG, as on a full disk). Returns the child's pid. */
static pid_t spawn_limited(const char *args, const char *err_path, long max_file) {
    char line[2048];
    snprintf(line, sizeof line, "%s %s", tu_exe(), args);
    char *argv[64];
    int argc = 0;
    for (char *tok = strtok(line, " "); tok && argc < 63; tok = strtok(NULL, " ")) argv[argc++] = tok;
    argv[argc] = NULL;
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || dup2(fd, 2) < 0) _exit(127);
        struct rlimit lim = {(rlim_t)max_file, (rlim_t)max_file};
        if (max_file > 0 && (signal(SIGXFSZ, SIG_IGN) == SIG_ERR || setrlimit(RLIMIT_FSIZE, &lim) != 0)) _exit(127);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static pid_t spawn(const char *args, const char *err_path) { return spawn_limited(args, err_path, 0); }

/* Waits until the file at path contains `needle` (polling) and sends the child `sig`; returns its
 * wait status, and whether the text appeared before it exited on its own in *reached. */
static int signal_at_text(pid_t child, const char *path, const char *needle, int sig, bool *reached) {
    int st;
    for (*reached = false;;) {
        char *text;   /* not tu_slurp: the file may not exist yet */
        size_t len;
        *reached = hy_read_file(path, &text, &len) == 0 && strstr(text, needle);
        hy_free(text);
        if (*reached) break;
        if (waitpid(child, &st, WNOHANG) == child) return st;
        usleep(2000);
    }
    kill(child, sig);
    ck_assert_int_eq(waitpid(child, &st, 0), child);
    return st;
}

/* Runs the program with `args`; returns its exit status, and its stderr (written to err_path) in
 * *err (hy_free). err_path NULL: stderr goes to /dev/null and err is not set. */
static int run_cli(const char *args, const char *err_path, char **err) {
    pid_t pid = spawn(args, err_path ? err_path : "/dev/null");
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    if (err_path) *err = tu_slurp(NULL, err_path, NULL);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Every line of a CSV with its timing columns (tokens_per_s, elapsed_s: 10 and 11 of train.csv)
 * blanked when `timing`, so that two runs can be compared. */
static char *without_timing(const char *csv, bool timing) {
    size_t n = strlen(csv);
    char *out = malloc(n + 1), *w = out;
    int col = 0;
    bool header = true;
    for (const char *p = csv; *p; p++) {
        if (*p == '\n') col = 0, header = false;
        else if (*p == ',') col++;
        else if (timing && !header && (col == 10 || col == 11)) continue;
        *w++ = *p;
    }
    *w = 0;
    return out;
}

/* SIGKILL while training (a MoE model: train.csv and experts.csv): once the program has reported
 * step 25 (not an evaluation step), train.csv already holds that row and experts.csv the routing
 * of the evaluation at step 20, every line complete; resuming from the checkpoint trims what came
 * after it, and the files end up identical (timing columns aside) to those of an uninterrupted run. */
START_TEST(csv_survives_sigkill_and_resume_trims) {
    char dir[256], ref[256], err[400], path[400], args[1500], *msg;
    tu_fresh_dir(dir, sizeof dir, "faults-kill", false);
    tu_fresh_dir(ref, sizeof ref, "faults-killref", false);
    ck_assert_int_eq(hy_mkdirs(dir), 0);
    const char *common = "tests/configs/tiny-train.yaml --set model.layers.ffn=moe --set model.blocks.moe.n_experts=4 "
                         "--set model.blocks.moe.d_ff=32 --set train.steps=100000 --set train.log_every=1 "
                         "--set train.eval_every=10 --set train.checkpoint_every=10";
    tu_path(err, sizeof err, dir, "stderr.txt");
    snprintf(args, sizeof args, "%s --out %s", common, dir);
    bool reached;
    int st = signal_at_text(spawn(args, err), err, "] step 25 ", SIGKILL, &reached);
    ck_assert_msg(reached, "the run ended before step 25: %s", tu_slurp(NULL, err, NULL));
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    char *csv = tu_slurp(dir, "train.csv", NULL);
    ck_assert_msg(csv != NULL, "no train.csv after SIGKILL");
    ck_assert_msg(strstr(csv, "tiny-train,32,7,0.01,25,3200,"), "no row for step 25 in:\n%s", csv);
    ck_assert(csv[strlen(csv) - 1] == '\n');
    char *ex = tu_slurp(dir, "experts.csv", NULL);
    ck_assert_msg(ex && strstr(ex, "tiny-train,32,20,1,3,"), "no routing of step 20 in experts.csv:\n%s", ex);
    hy_free(csv), hy_free(ex);
    /* resume from the checkpoint (step 20, or 30 when the kill came late) and stop at step 32; the
     * reference runs to 32 */
    hy_model *m;
    long ck;
    ck_assert_msg(hy_checkpoint_load(tu_path(path, sizeof path, dir, "checkpoint.safetensors"), &m, &ck) == 0, "%s",
                  hy_last_error());
    hy_model_free(m);
    ck_assert_msg(ck >= 20 && ck < 32 && ck % 10 == 0, "checkpoint at step %ld", ck);
    snprintf(args, sizeof args, "%s --out %s --resume --quiet --stop-after %ld", common, dir, 32 - ck);
    ck_assert_int_eq(run_cli(args, err, &msg), 130);
    hy_free(msg);
    snprintf(args, sizeof args, "%s --out %s --quiet --stop-after 32", common, ref);
    ck_assert_int_eq(run_cli(args, NULL, NULL), 130);
    static const char *const files[] = {"train.csv", "experts.csv"};
    for (int k = 0; k < 2; k++) {
        char *a = tu_slurp(dir, files[k], NULL), *b = tu_slurp(ref, files[k], NULL);
        ck_assert_ptr_nonnull(a);
        ck_assert_ptr_nonnull(b);
        char *ma = without_timing(a, k == 0), *mb = without_timing(b, k == 0);
        ck_assert_msg(strcmp(ma, mb) == 0, "%s after kill + resume differs from the uninterrupted run:\n%s\n---\n%s",
                      files[k], ma, mb);
        free(ma), free(mb), hy_free(a), hy_free(b);
    }
    tu_remove_dir(dir), tu_remove_dir(ref);
}
END_TEST

/* SIGINT, then SIGTERM, while training (the tiny config, 40 steps, with an evaluation every step so
 * that a step takes milliseconds even on a fast machine and the 2 ms poll sees the awaited step
 * before the run ends): each stops the program with exit 130 after saving the checkpoint and state
 * at the current step with train.csv up to it; resumed twice, the run ends with the train.csv
 * (timing columns aside) of an uninterrupted run. */
START_TEST(sigint_and_sigterm_save_and_resume_exactly) {
    char dir[256], ref[256], err[400], path[400], args[1024], *msg;
    const char *slow = "--set train.log_every=1 --set train.eval_every=1 --set train.eval_batches=16";
    tu_fresh_dir(dir, sizeof dir, "faults-sig", false);
    tu_fresh_dir(ref, sizeof ref, "faults-sigref", false);
    ck_assert_int_eq(hy_mkdirs(dir), 0);
    tu_path(err, sizeof err, dir, "stderr.txt");
    const int sigs[2] = {SIGINT, SIGTERM};
    const char *const at[2] = {"] step 12 ", "] step 27 "};
    long last = 0;
    for (int k = 0; k < 2; k++) {
        snprintf(args, sizeof args, "tests/configs/tiny-train.yaml --out %s %s%s", dir, slow,
                 k ? " --resume" : "");
        bool reached;
        int st = signal_at_text(spawn(args, err), err, at[k], sigs[k], &reached);
        msg = tu_slurp(NULL, err, NULL);
        ck_assert_msg(reached && WIFEXITED(st) && WEXITSTATUS(st) == 130, "signal %d, status %d: %s", sigs[k], st, msg);
        ck_assert_msg(strstr(msg, "] interrupted after "), "%s", msg);
        hy_free(msg);
        hy_model *m;
        long step;
        ck_assert_int_eq(hy_checkpoint_load(tu_path(path, sizeof path, dir, "checkpoint.safetensors"), &m, &step), 0);
        hy_model_free(m);
        ck_assert_msg(step > last && step < 40, "checkpoint at step %ld", step);
        char *csv = tu_slurp(dir, "train.csv", NULL), row[64];
        snprintf(row, sizeof row, "tiny-train,32,7,0.01,%ld,%ld,", step, step * 128);
        ck_assert_msg(strstr(csv, row), "no row for step %ld:\n%s", step, csv);
        hy_free(csv);
        last = step;
    }
    snprintf(args, sizeof args, "tests/configs/tiny-train.yaml --out %s %s --resume --quiet", dir, slow);
    ck_assert_int_eq(run_cli(args, err, &msg), 0);
    hy_free(msg);
    snprintf(args, sizeof args, "tests/configs/tiny-train.yaml --out %s %s --quiet", ref, slow);
    ck_assert_int_eq(run_cli(args, NULL, NULL), 0);
    char *a = tu_slurp(dir, "train.csv", NULL), *b = tu_slurp(ref, "train.csv", NULL);
    char *ma = without_timing(a, true), *mb = without_timing(b, true);
    ck_assert_msg(strcmp(ma, mb) == 0, "train.csv after two interrupts differs:\n%s\n---\n%s", ma, mb);
    free(ma), free(mb), hy_free(a), hy_free(b);
    tu_remove_dir(dir), tu_remove_dir(ref);
}
END_TEST

/* SIGKILL with a checkpoint every step, so that a kill lands in or near the writing of the two
 * files: twice, the files at their final names always load (never half-written), and
 * resume either continues or, when the kill fell between the two renames, refuses the pair; never
 * a silent mix. */
START_TEST(sigkill_during_checkpoint_writes) {
    char dir[256], err[400], path[400], args[1024], *msg;
    tu_fresh_dir(dir, sizeof dir, "faults-killck", false);
    ck_assert_int_eq(hy_mkdirs(dir), 0);
    tu_path(err, sizeof err, dir, "stderr.txt");
    const char *const at[2] = {"] step 6 ", "] step 13 "};
    bool torn = false;
    for (int k = 0; k < 2 && !torn; k++) {
        snprintf(args, sizeof args, "tests/configs/tiny-train.yaml --out %s --set train.log_every=1 "
                 "--set train.checkpoint_every=1 --set train.steps=100000%s", dir, k ? " --resume" : "");
        bool reached;
        int st = signal_at_text(spawn(args, err), err, at[k], SIGKILL, &reached);
        msg = tu_slurp(NULL, err, NULL);
        torn = !reached && WIFEXITED(st) && WEXITSTATUS(st) == 1 && strstr(msg, "does not belong to");
        ck_assert_msg(reached || torn, "status %d: %s", st, msg);   /* it ran on, or refused a torn pair */
        hy_free(msg);
        hy_st_file f;
        ck_assert_msg(hy_st_open(tu_path(path, sizeof path, dir, "checkpoint.safetensors"), &f) == 0, "%s", hy_last_error());
        hy_st_close(&f);
        ck_assert_msg(hy_st_open(tu_path(path, sizeof path, dir, "checkpoint.state.safetensors"), &f) == 0, "%s",
                      hy_last_error());
        hy_st_close(&f);
    }
    if (!torn) {
        snprintf(args, sizeof args, "tests/configs/tiny-train.yaml --out %s --set train.log_every=1 "
                 "--set train.checkpoint_every=1 --set train.steps=100000 --resume --quiet --stop-after 2", dir);
        int rc = run_cli(args, err, &msg);
        ck_assert_msg(rc == 130 || (rc == 1 && strstr(msg, "does not belong to")), "exit %d: %s", rc, msg);
        hy_free(msg);
    }
    tu_remove_dir(dir);
}
END_TEST

/* The scenario on the program: stop at step 10 and keep that state file, resume to step
 * 20, put the step-10 state back: --resume refuses, naming both files; with the step-20 state back
 * it continues. */
START_TEST(cli_resume_refuses_mixed_checkpoint_and_state) {
    char dir[256], err[400], args[1024], state[400], kept[400], *msg;
    tu_fresh_dir(dir, sizeof dir, "faults-mixed", false);
    ck_assert_int_eq(hy_mkdirs(dir), 0);
    tu_path(err, sizeof err, dir, "stderr.txt");
    tu_path(state, sizeof state, dir, "checkpoint.state.safetensors");
    snprintf(args, sizeof args, "tests/configs/tiny-train.yaml --quiet --out %s --stop-after 10", dir);
    ck_assert_int_eq(run_cli(args, err, &msg), 130);
    hy_free(msg);
    tu_path(kept, sizeof kept, dir, "state-10.safetensors");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cp %s %s", state, kept);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(args, sizeof args, "tests/configs/tiny-train.yaml --quiet --out %s --resume --stop-after 10", dir);
    ck_assert_int_eq(run_cli(args, err, &msg), 130);
    hy_free(msg);
    snprintf(cmd, sizeof cmd, "cp %s %s.20 && cp %s %s", state, state, kept, state);
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_int_eq(run_cli(args, err, &msg), 1);
    char ckpt[400];
    tu_path(ckpt, sizeof ckpt, dir, "checkpoint.safetensors");
    ck_assert_msg(strstr(msg, state) && strstr(msg, ckpt) && strstr(msg, "step 10") && strstr(msg, "step 20") &&
                      strstr(msg, "does not belong to"),
                  "%s", msg);
    hy_free(msg);
    snprintf(cmd, sizeof cmd, "cp %s.20 %s", state, state);
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_int_eq(run_cli(args, err, &msg), 130);   /* the matching pair resumes, to step 30 */
    hy_free(msg);
    tu_remove_dir(dir);
}
END_TEST

/* A crash between writing the checkpoint and writing its training state (simulated by making the
 * state's temporary file impossible to create, so the save fails after the checkpoint was renamed
 * into place): the files on disk are a step-15 checkpoint and a step-10 state, and resume refuses
 * them. */
START_TEST(crash_between_checkpoint_and_state_is_detected) {
    char dir[256], block[600], path[400];
    tu_fresh_dir(dir, sizeof dir, "faults-crash", false);
    hy_run_config c;
    const char *sets[] = {"train.checkpoint_every=5"};
    load(&c, dir, sets, 1);
    hy_train_opts o = {.stop_after = 10};
    hy_train_result r;
    ck_assert_msg(hy_train(&c, &o, &r) == 0, "%s", hy_last_error());
    snprintf(block, sizeof block, "%s/checkpoint.state.safetensors.tmp.%d", dir, (int)getpid());
    ck_assert_int_eq(mkdir(block, 0755), 0);
    o.resume = true, o.stop_after = 5;
    ck_assert_int_lt(hy_train(&c, &o, &r), 0);   /* the step-15 checkpoint is written, its state is not */
    ck_assert_msg(strstr(hy_last_error(), "checkpoint.state.safetensors"), "%s", hy_last_error());
    ck_assert_int_eq(rmdir(block), 0);
    long ck_step, st_step;
    nonfinite_in(tu_path(path, sizeof path, dir, "checkpoint.safetensors"), &ck_step);
    nonfinite_in(tu_path(path, sizeof path, dir, "checkpoint.state.safetensors"), &st_step);
    ck_assert_int_eq(ck_step, 15);
    ck_assert_int_eq(st_step, 10);
    ck_assert_int_lt(hy_train(&c, &o, &r), 0);
    ck_assert_msg(strstr(hy_last_error(), "does not belong to") && strstr(hy_last_error(), "step 15"), "%s",
                  hy_last_error());
    hy_run_config_free(&c);
    tu_remove_dir(dir);
}
END_TEST

/* A training state without the `weights` fingerprint (as written before the identity existed) is
 * refused with an explanation, not trusted. */
START_TEST(state_without_identity_is_refused) {
    char dir[256], path[400];
    tu_fresh_dir(dir, sizeof dir, "faults-oldstate", false);
    hy_run_config c;
    load(&c, dir, NULL, 0);
    hy_train_opts o = {.stop_after = 5};
    hy_train_result r;
    ck_assert_msg(hy_train(&c, &o, &r) == 0, "%s", hy_last_error());
    /* rewrite the state without its `weights` key */
    hy_model *m;
    ck_assert_int_eq(hy_checkpoint_load(tu_path(path, sizeof path, dir, "checkpoint.safetensors"), &m, NULL), 0);
    float *mo = hy_calloc(m->numel * sizeof(float)), *vo = hy_calloc(m->numel * sizeof(float));
    float *slots[] = {mo, vo};
    const char *names[] = {"optim_m", "optim_v"};
    hy_kv_list meta;
    tu_path(path, sizeof path, dir, "checkpoint.state.safetensors");
    ck_assert_msg(hy_train_state_load(path, m, 2, names, slots, &meta) == 0, "%s", hy_last_error());
    const char *keys[32], *vals[32];
    int n = 0;
    for (int i = 0; i < meta.n; i++)
        if (strcmp(meta.keys[i], "weights") && strcmp(meta.keys[i], "format")) keys[n] = meta.keys[i], vals[n++] = meta.values[i];
    ck_assert_int_eq(n, meta.n - 2);
    ck_assert_int_eq(hy_train_state_save(path, m, 2, names, slots, n, keys, vals), 0);
    hy_kv_free(&meta);
    hy_free(mo), hy_free(vo);
    hy_model_free(m);
    o.resume = true;
    ck_assert_int_lt(hy_train(&c, &o, &r), 0);
    ck_assert_msg(strstr(hy_last_error(), "no 'weights' fingerprint") && strstr(hy_last_error(), "without --resume"), "%s",
                  hy_last_error());
    hy_run_config_free(&c);
    tu_remove_dir(dir);
}
END_TEST

/* A disk that fills up while the training state is written (files limited to 160 KiB: the tiny
 * model's checkpoint, 115 KiB, fits; its state, 230 KiB, does not): a clear error naming the file
 * and exit 1; no temporary or half-written file is left; train.csv keeps its rows; and resume
 * refuses the checkpoint that has no state, naming both files. */
START_TEST(full_disk_while_saving_is_a_clear_error) {
    char dir[256], err[400], args[1024], path[400], *msg;
    tu_fresh_dir(dir, sizeof dir, "faults-full", false);
    ck_assert_int_eq(hy_mkdirs(dir), 0);
    tu_path(err, sizeof err, dir, "stderr.txt");
    snprintf(args, sizeof args, "tests/configs/tiny-train.yaml --quiet --out %s --set train.checkpoint_every=5", dir);
    pid_t pid = spawn_limited(args, err, 160 << 10);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    msg = tu_slurp(NULL, err, NULL);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "status %d: %s", st, msg);
    ck_assert_msg(strstr(msg, "checkpoint.state.safetensors") && strstr(msg, "File too large"), "%s", msg);
    hy_free(msg);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ls %s | grep -q tmp", dir);
    ck_assert_int_ne(system(cmd), 0);   /* grep found no temporary file */
    ck_assert_int_ne(access(tu_path(path, sizeof path, dir, "checkpoint.state.safetensors"), F_OK), 0);
    long step;
    ck_assert_int_eq(nonfinite_in(tu_path(path, sizeof path, dir, "checkpoint.safetensors"), &step), 0);
    ck_assert_int_eq(step, 5);
    char *csv = tu_slurp(dir, "train.csv", NULL);
    ck_assert_msg(csv && strstr(csv, "tiny-train,32,7,0.01,5,640,"), "%s", csv);
    hy_free(csv);
    snprintf(args, sizeof args, "tests/configs/tiny-train.yaml --quiet --out %s --resume", dir);
    ck_assert_int_eq(run_cli(args, err, &msg), 1);
    ck_assert_msg(strstr(msg, "has no training state beside it") && strstr(msg, "checkpoint.safetensors") &&
                      strstr(msg, "without --resume"),
                  "%s", msg);
    hy_free(msg);
    tu_remove_dir(dir);
}
END_TEST

static Suite *faults_suite(void) {
    Suite *s = suite_create("faults");
    TCase *tc = tcase_create("training");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, divergence_keeps_last_good_checkpoint);
    tcase_add_test(tc, csv_survives_sigkill_and_resume_trims);
    tcase_add_test(tc, sigint_and_sigterm_save_and_resume_exactly);
    tcase_add_test(tc, sigkill_during_checkpoint_writes);
    tcase_add_test(tc, cli_resume_refuses_mixed_checkpoint_and_state);
    tcase_add_test(tc, crash_between_checkpoint_and_state_is_detected);
    tcase_add_test(tc, state_without_identity_is_refused);
    tcase_add_test(tc, full_disk_while_saving_is_a_clear_error);
    suite_add_tcase(s, tc);
    return s;
}
HY_TEST_SUITE(faults_suite)

/* Running an experiment: the single-block benchmark (the program's hy_bench_run), then every
 * variant x sweep point as a plain training run in runs/<id>/, skipping complete runs and resuming
 * interrupted ones, then the experiment's CSVs (concatenated from the runs, in run order), plots
 * and report. Every file is written to a temporary name and renamed. */
#include "core/dist.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "core/strbuf.h"
#include "core/timer.h"
#include "experiments/csv_schema.h"
#include "experiments/experiment.h"
#include "experiments/results.h"
#include "experiments/validate.h"
#include "models/checkpoint.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* dir/name into out. */
static void join(char *out, size_t n, const char *dir, const char *name) { snprintf(out, n, "%s/%s", dir, name); }

/* Whether file `path` holds exactly `text`. */
static bool file_is(const char *path, const char *text) {
    char *data;
    size_t len;
    if (hy_read_file(path, &data, &len) < 0) return false;
    bool same = len == strlen(text) && memcmp(data, text, len) == 0;
    hy_free(data);
    return same;
}

/* Keys of a run's config.yaml that say how a run is kept, not what it computes: changing them keeps a
 * complete run complete and lets an interrupted one resume (a long sweep may gain checkpoints midway). */
static const char *const KEEPING_KEYS[] = {"  checkpoint_every:"};

/* Moves *p past any KEEPING_KEYS lines and returns the length of the line there (with its newline),
 * 0 at the end. */
static size_t next_identity_line(const char **p, const char *end) {
    while (*p < end) {
        const char *nl = memchr(*p, '\n', (size_t)(end - *p));
        size_t n = nl ? (size_t)(nl - *p) + 1 : (size_t)(end - *p);
        bool keeping = false;
        for (size_t k = 0; k < sizeof KEEPING_KEYS / sizeof *KEEPING_KEYS; k++)
            keeping |= n >= strlen(KEEPING_KEYS[k]) && !memcmp(*p, KEEPING_KEYS[k], strlen(KEEPING_KEYS[k]));
        if (!keeping) return n;
        *p += n;
    }
    return 0;
}

/* Whether file `path` holds `text`, line for line, apart from the KEEPING_KEYS lines. */
static bool same_run_config(const char *path, const char *text) {
    char *data;
    size_t len;
    if (hy_read_file(path, &data, &len) < 0) return false;
    const char *a = data, *a_end = data + len, *b = text, *b_end = text + strlen(text);
    bool same;
    for (;;) {
        size_t na = next_identity_line(&a, a_end), nb = next_identity_line(&b, b_end);
        same = na == nb && !memcmp(a, b, na);
        if (!same || na == 0) break;
        a += na, b += nb;
    }
    hy_free(data);
    return same;
}

typedef enum { RUN_NEW, RUN_PARTIAL, RUN_COMPLETE } run_status;

/* What is in runs/<id>/ already: a finished run with this exact resolved config, an interrupted
 * one to resume, or nothing usable (a run with another config is cleared). */
static run_status status_of(const hy_exp_run *run, bool clear_stale) {
    char cfg[HY_PATH_MAX + 64], res[HY_PATH_MAX + 64], ck[HY_PATH_MAX + 64];
    const char *dir = run->cfg.out_dir;
    join(cfg, sizeof cfg, dir, "config.yaml");
    join(res, sizeof res, dir, hy_csv_RUN.file);
    join(ck, sizeof ck, dir, "checkpoint.safetensors");
    char *text = hy_run_config_text(&run->cfg);
    bool same = text && same_run_config(cfg, text);
    free(text);
    if (same && access(res, F_OK) == 0) return RUN_COMPLETE;
    if (same && access(ck, F_OK) == 0) return RUN_PARTIAL;
    if (clear_stale) {
        const char *const files[] = {hy_csv_RUN.file, hy_csv_EVAL.file, hy_csv_POSITION.file, hy_csv_TRAIN.file,
                                     "checkpoint.safetensors", "checkpoint.state.safetensors"};
        for (int k = 0; k < 6; k++) {
            char p[HY_PATH_MAX + 64];
            join(p, sizeof p, dir, files[k]);
            unlink(p);
        }
    }
    return RUN_NEW;
}

typedef struct {
    const hy_experiment *e;
    const hy_exp_opts *o;
    hy_exp_progress p;
    double t0, todo, finished;   /* runs to train in this call, and how many are done */
} tick_ctx;

static void report(tick_ctx *t, const char *event, const hy_train_tick *tk) {
    if (!t->o->on_progress) return;
    t->p.event = event;
    t->p.tick = tk;
    t->p.elapsed_s = hy_now() - t->t0;
    double units = t->finished + (tk ? tk->fraction : 0);
    t->p.eta_s = units > 0 ? t->p.elapsed_s * (t->todo - units) / units : NAN;
    t->o->on_progress(t->o->ctx, &t->p);
}

static void on_tick(void *ctx, const hy_train_tick *tk) { report(ctx, "tick", tk); }

/* The evaluation lengths of a run: its own seq_len first, then the experiment's common lengths
 * (corpus) or the task's extra lengths, each once. Returns the count. */
static int eval_lengths(const hy_experiment *e, const hy_run_config *c, int *lens) {
    int n = 0;
    lens[n++] = c->seq_len;
    bool task = c->task.type != HY_TASK_NONE;
    int m = task ? c->task.n_eval : e->n_eval;
    for (int i = 0; i < m; i++) {
        int L = task ? c->task.eval_seq_len[i] : e->eval_seq_len[i];
        bool dup = false;
        for (int j = 0; j < n; j++) dup |= lens[j] == L;
        if (!dup) lens[n++] = L;
    }
    return n;
}

/* After training: the run's rows of sweep.csv (result.csv, without lr_selected), eval.csv and,
 * for a corpus, position.csv, from its final checkpoint. Every evaluation uses the experiment's
 * evaluation seed, so every variant and seed is scored on the same held-out data. Returns 1 when
 * stopped (Ctrl-C) between two lengths: nothing is written, the next call evaluates again. */
static int finish_run(const hy_experiment *e, const hy_exp_run *run, const hy_train_result *tr,
                      volatile sig_atomic_t *stop) {
    const hy_run_config *c = &run->cfg;
    char ck[HY_PATH_MAX + 64], path[HY_PATH_MAX + 64], key[300], a[32], b[32], bt[32];
    join(ck, sizeof ck, c->out_dir, "checkpoint.safetensors");
    hy_model *m;
    long step;
    int rc = hy_checkpoint_load(ck, &m, &step);
    if (rc < 0) return rc;
    hy_data data;
    hy_data_spec spec;
    hy_run_data_spec(c, &spec);
    if ((rc = hy_data_open(&data, &spec, &c->task, e->eval_seed)) < 0) {
        hy_model_free(m);
        return rc;
    }
    bool task = c->task.type != HY_TASK_NONE;
    snprintf(key, sizeof key, "%s,%d,%llu,%g", run->variant, c->seq_len, (unsigned long long)c->seed, c->lr);
    hy_strbuf ev = {0}, sw = {0}, po = {0};
    hy_sb_add(&ev, hy_csv_EVAL.header);
    hy_sb_add(&po, hy_csv_POSITION.header);
    int lens[HY_EXP_MAX_EVAL + HY_TASK_MAX_EVAL + 1], n = eval_lengths(e, c, lens), longest = 0;
    /* the common evaluation's extent: eval.tokens tokens, or the tokens of the first eval.bytes bytes of text */
    long n_tokens = !task && e->eval_bytes > 0 ? hy_corpus_tokens_for_bytes(&data.corpus, e->eval_bytes) : e->eval_tokens;
    for (int i = 0; i < n; i++) longest = lens[i] > longest ? lens[i] : longest;
    double *pos = task ? NULL : hy_malloc((size_t)longest * sizeof(double));
    hy_eval_result own = {.loss = NAN, .accuracy = NAN, .bits_per_byte = NAN};
    if (!task && !pos) rc = HY_ERR_NOMEM;
    for (int i = 0; i < n && rc == 0; i++) {
        hy_eval_result er;
        if (stop && *stop) {
            rc = 1;
            break;
        }
        if (task) rc = hy_evaluate_data(m, &data, c->batch_size, lens[i], c->eval_batches, e->eval_seed,
                                        c->task.eval_streaming, &er);
        else rc = hy_evaluate_corpus_windows(m, &data.corpus, lens[i], n_tokens, lens[i] == longest ? pos : NULL, &er);
        if (rc < 0) break;
        if (i == 0) own = er;
        hy_csv_cell(a, sizeof a, "%.6f", task ? NAN : er.bits_per_byte);
        hy_csv_cell(b, sizeof b, "%.6f", er.accuracy);
        hy_csv_cell(bt, sizeof bt, "%.6f", task ? NAN : er.bytes / er.labels);
        hy_sb_printf(&ev, "%s,%s,%d,%.6f,%s,%s,%ld,%s\n", key, task ? hy_task_name(c->task.type) : "corpus", lens[i], er.loss,
                     a, b, er.labels, bt);
        for (int p = 0; !task && lens[i] == longest && p < longest; p++)
            hy_sb_printf(&po, "%s,%d,%d,%.6f\n", key, longest, p, pos[p]);
    }
    hy_free(pos);
    hy_csv_cell(a, sizeof a, "%.6f", task ? NAN : own.bits_per_byte);
    hy_csv_cell(bt, sizeof bt, "%.6f", task ? NAN : own.bytes / own.labels);
    hy_sb_add(&sw, hy_csv_RUN.header);
    hy_sb_printf(&sw, "%s,%d,%ld,%ld,%.0f,%s,%zu,%.6g,%.3f,%.1f,%zu,%zu,%.6f,%.6f,%s,%s\n", key, c->batch_size,
                 (long)c->batch_size * c->seq_len, tr->steps, tr->tokens, hy_stop_reason_name(tr->stopped_by),
                 hy_model_param_count(m), hy_model_flop_per_token(m, c->seq_len), tr->seconds,
                 tr->tokens / fmax(tr->seconds, 1e-9), tr->peak_bytes, hy_model_state_bytes(m, c->seq_len), own.loss,
                 exp(own.loss), a, bt);
    hy_data_free(&data);
    hy_model_free(m);
    char *evt = hy_sb_take(&ev), *swt = hy_sb_take(&sw), *pot = hy_sb_take(&po);
    if (rc == 0 && (!evt || !swt || !pot)) rc = HY_ERR_NOMEM;
    if (rc == 0) {
        join(path, sizeof path, c->out_dir, hy_csv_EVAL.file);
        rc = hy_write_file_atomic(path, evt, strlen(evt));
    }
    if (rc == 0 && !task) {
        join(path, sizeof path, c->out_dir, hy_csv_POSITION.file);
        rc = hy_write_file_atomic(path, pot, strlen(pot));
    }
    if (rc == 0) {   /* last: the run's completion marker */
        join(path, sizeof path, c->out_dir, hy_csv_RUN.file);
        rc = hy_write_file_atomic(path, swt, strlen(swt));
    }
    free(evt), free(swt), free(pot);
    return rc;
}

/* out/<s's file> = the header of the first run file found (s's header when none is) + every run
 * file's rows, in run order. */
static int concat(const hy_experiment *e, const hy_csv_schema *s) {
    const char *name = s->file;
    hy_strbuf b = {0};
    bool header = false;
    for (int i = 0; i < e->n_runs; i++) {
        char path[HY_PATH_MAX + 64], *data;
        size_t len;
        join(path, sizeof path, e->runs[i].cfg.out_dir, name);
        if (access(path, F_OK) != 0 || hy_read_file(path, &data, &len) < 0) continue;
        char *body = strchr(data, '\n');
        if (body) {
            if (!header) hy_sb_addn(&b, data, (size_t)(body - data) + 1);
            header = true;
            hy_sb_add(&b, body + 1);
        }
        hy_free(data);
    }
    if (!header) hy_sb_add(&b, s->header);
    size_t len = b.len;
    char *text = hy_sb_take(&b), path[HY_PATH_MAX + 64];
    if (!text) return HY_ERR_NOMEM;
    join(path, sizeof path, e->out_dir, name);
    int rc = hy_write_file_atomic(path, text, len);
    free(text);
    return rc;
}

/* The experiment's evaluation of a corpus run needs a validation split that holds a window of its
 * longest evaluation length (finish_run); d is the run's open corpus. */
static int check_eval_lengths(const hy_experiment *e, const hy_exp_run *run, const hy_corpus *d) {
    int lens[HY_EXP_MAX_EVAL + HY_TASK_MAX_EVAL + 1], n = eval_lengths(e, &run->cfg, lens);
    size_t val = d->len - d->n_train;
    for (int i = 0; i < n; i++)
        if (val < (size_t)lens[i] + 1)
            return hy_fail_code(HY_ERR_CONFIG, "%s: eval.seq_len: the evaluation of run %s at length %d needs %d %s, but "
                                               "the validation split of %s has %zu",
                                e->source, run->id, lens[i], lens[i] + 1, d->tokens ? "tokens" : "bytes",
                                run->cfg.val_path[0] ? run->cfg.val_path : run->cfg.corpus, val);
    return 0;
}

int hy_experiment_validate(const hy_experiment *e, bool force, hy_strbuf *report) {
    double avail;
    char src[200], a[32], t[32], prev[HY_PATH_MAX + 32] = "";
    int rc = hy_mem_available(&avail, src, sizeof src), worst = -1;
    double most = 0;
    hy_check_cache cache = {0};
    for (int i = 0; rc == 0 && i < e->n_runs; i++) {
        const hy_exp_run *run = &e->runs[i];
        hy_run_check k;
        if ((rc = hy_run_validate(&run->cfg, &cache, &k)) == 0 && run->cfg.task.type == HY_TASK_NONE)
            rc = check_eval_lengths(e, run, &cache.data.corpus);
        if (rc == 0 && !force && avail >= 0) rc = hy_run_check_memory(&run->cfg, &k, avail, src);
        if (rc < 0) {
            hy_error_prefix("run %s", run->id);
            break;
        }
        if (k.total > most) most = k.total, worst = i;
        if (!report) continue;
        char key[HY_PATH_MAX + 32];
        snprintf(key, sizeof key, "%s|%g|%d|%d", run->cfg.corpus, run->cfg.val_fraction, (int)run->cfg.task.type,
                 run->cfg.model.vocab_size);
        if (strcmp(key, prev)) hy_sb_printf(report, "  data: %s\n", k.data_desc);
        snprintf(prev, sizeof prev, "%s", key);
        hy_sb_printf(report, "  run %s: %zu parameters, memory about %s (activations %s)\n", run->id, k.params,
                     hy_format_bytes(k.total, t, sizeof t), hy_format_bytes(k.model.activations, a, sizeof a));
    }
    hy_check_cache_free(&cache);
    if (rc == 0 && report) {
        if (worst >= 0) hy_sb_printf(report, "  largest: run %s, about %s\n", e->runs[worst].id, hy_format_bytes(most, t, sizeof t));
        if (avail < 0) hy_sb_printf(report, "  available: %s (memory not checked)\n", src);
        else hy_sb_printf(report, "  available: %s (%s)%s\n", hy_format_bytes(avail, a, sizeof a), src,
                          most <= avail ? ": every run fits" : ": above it, --force given");
    }
    return rc;
}

/* layers.csv through the program's benchmark, unless one with the same settings is there. */
static int run_bench(const hy_experiment *e, const hy_exp_opts *o, tick_ctx *t) {
    const hy_exp_bench *b = &e->bench;
    char spec[1400], marker[HY_PATH_MAX + 64], layers[HY_PATH_MAX + 64];
    snprintf(spec, sizeof spec, "blocks=%s min_T=%d max_T=%d d_model=%d quick=%d threads=%d\n",
             b->blocks[0] ? b->blocks : "all", b->min_T, b->max_T, b->d_model, b->quick, e->threads);
    join(marker, sizeof marker, e->out_dir, "layers.spec");
    join(layers, sizeof layers, e->out_dir, hy_csv_LAYERS.file);
    if (access(layers, F_OK) == 0 && file_is(marker, spec)) {
        report(t, "bench-skip", NULL);
        return 0;
    }
    if (!o->bench) return 0;
    report(t, "bench", NULL);
    hy_bench_options bo = {.out_dir = e->out_dir, .quick = b->quick, .threads = e->threads,
                           .blocks = b->blocks[0] ? b->blocks : NULL, .d_model = b->d_model, .min_T = b->min_T,
                           .max_T = b->max_T};
    if (o->bench(&bo) != 0) return hy_fail("the block benchmark failed (see its output above)");
    return hy_write_file_atomic(marker, spec, strlen(spec));
}

/* The data of run i as a key: runs with the same key share one check and one tokenization. */
static void data_key(const hy_exp_run *run, char *out, size_t n) {
    const hy_run_config *c = &run->cfg;
    snprintf(out, n, "%s|%s|%s|%.17g|%d|%s|%d|%s|%d|%d", c->corpus, c->train_path, c->val_path, c->val_fraction,
             (int)c->data_format, c->tokenizer, c->tokenizer_vocab, c->tokenizer_type, c->model.vocab_size, c->seq_len);
}

/* After validation (hy_experiment_validate) and before the first run: the text that runs tokenize is
 * tokenized (and a data.tokenizer: {vocab} tokenizer trained) once, into the experiment's folder,
 * so that no run starts with minutes of it and every run finds it there. Returns 0 or negative,
 * the run named. */
static int prepare_data(const hy_experiment *e, const hy_exp_opts *o) {
    char key[5 * HY_PATH_MAX], prev[5 * HY_PATH_MAX];
    int rc = 0;
    for (int i = 0; i < e->n_runs && rc == 0; i++) {
        const hy_run_config *c = &e->runs[i].cfg;
        if (c->task.type != HY_TASK_NONE) continue;
        data_key(&e->runs[i], key, sizeof key);
        bool seen = false;
        for (int j = 0; j < i && !seen; j++) {
            data_key(&e->runs[j], prev, sizeof prev);
            seen = !strcmp(key, prev);
        }
        if (seen || (!c->tokenizer[0] && c->tokenizer_vocab == 0)) continue;
        hy_data_spec s;
        hy_run_data_spec(c, &s);
        s.progress = o->log;
        hy_corpus corpus;
        if ((rc = hy_corpus_open(&corpus, &s)) == 0) hy_corpus_free(&corpus);
        else hy_error_prefix("run %s: data", e->runs[i].id);
    }
    return rc;
}

/* reference.csv: the sweep.csv of the reference results folder, with its path as a first column
 * `experiment`, for the report's comparison (nothing when the folder has no sweep.csv yet). */
static int copy_reference(const hy_experiment *e, FILE *log) {
    char path[HY_PATH_MAX + 64], *data;
    size_t len;
    join(path, sizeof path, e->reference, hy_csv_SWEEP.file);
    if (access(path, R_OK) != 0) {
        if (log) fprintf(log, "[experiment] reference %s has no sweep.csv (yet): the report lists no reference runs\n", path);
        join(path, sizeof path, e->out_dir, hy_csv_REFERENCE.file);
        unlink(path);
        return 0;
    }
    int rc = hy_read_file(path, &data, &len);
    if (rc < 0) return rc;
    hy_strbuf b = {0};
    char cell[HY_PATH_MAX];
    snprintf(cell, sizeof cell, "%s", e->reference);
    for (char *p = cell; *p; p++)
        if (strchr(", \t\"", *p)) *p = '_';
    for (char *line = data, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        hy_sb_printf(&b, "%s,%s\n", line == data ? HY_CSV_COL(REFERENCE, experiment) : cell, line);
    }
    hy_free(data);
    join(path, sizeof path, e->out_dir, hy_csv_REFERENCE.file);
    return hy_sb_write_file(&b, path);
}

/* The experiment's folder and its copy of the experiment file as given. */
static int start_folder(const hy_experiment *e) {
    char path[HY_PATH_MAX + 64], *src;
    size_t len;
    int rc = hy_mkdirs(e->out_dir);
    if (rc < 0) return rc;
    if ((rc = hy_read_file(e->source, &src, &len)) < 0) return rc;
    join(path, sizeof path, e->out_dir, "experiment.yaml");
    rc = hy_write_file_atomic(path, src, len);
    hy_free(src);
    return rc;
}

/* The experiment's CSVs, each the concatenation of its runs' files in run order, then sweep.csv,
 * the plots and the report. */
static int merge_results(const hy_experiment *e, const hy_exp_opts *o, hy_exp_result *r) {
    int rc;
    if ((rc = concat(e, &hy_csv_RUN)) < 0) return rc;
    char a[HY_PATH_MAX + 64], b[HY_PATH_MAX + 64];
    join(a, sizeof a, e->out_dir, hy_csv_RUN.file);
    join(b, sizeof b, e->out_dir, "sweep_rows.csv");
    if (rename(a, b) != 0) return hy_fail_code(HY_ERR_IO, "cannot rename %s to %s", a, b);
    if ((rc = concat(e, &hy_csv_TRAIN)) < 0 || (rc = concat(e, &hy_csv_EVAL)) < 0 ||
        (rc = concat(e, &hy_csv_POSITION)) < 0)
        return rc;
    if ((rc = hy_sweep_finalize(e->out_dir)) < 0) return rc;   /* sweep.csv: the rows + lr_selected */
    if (e->reference[0] && (rc = copy_reference(e, o->log)) < 0) return rc;
    if (!o->no_plots) return hy_experiment_plot(e->out_dir, r->summary, sizeof r->summary);
    return 0;
}

/* Rank 0's queue between two steps of its own run: the other groups ask it for their next run. */
static void serve_queue(void *ctx) { hy_dist_queue_serve(ctx); }

/* One run of the distributed runner on the ranks of `grp`, whose leader found it not complete
 * (resume: it has a checkpoint). Returns 1 when interrupted, 0 when done, or an error. */
static int run_in_group(const hy_experiment *e, const hy_exp_opts *o, tick_ctx *t, hy_dist *grp, hy_dist_queue *q,
                        const hy_exp_run *run, bool resume) {
    bool leader = hy_dist_rank(grp) == 0;
    if (leader) report(t, resume ? "resume" : "start", NULL);
    hy_train_opts to = {.resume = resume, .variant = run->variant, .stop = o->stop, .dist = grp,
                        .on_step = hy_dist_rank(o->dist) == 0 ? serve_queue : NULL, .step_ctx = q};
    if (leader) to.on_tick = on_tick, to.tick_ctx = t;
    hy_train_result tr;
    int rc = hy_train(&run->cfg, &to, &tr);
    if (rc < 0) {
        hy_error_prefix("run %s", run->id);
        return rc;
    }
    int fin = tr.interrupted ? 1 : 0;
    if (leader && !fin) {   /* the final evaluation runs on the leader alone */
        report(t, "eval", NULL);
        if ((rc = finish_run(e, run, &tr, o->stop)) < 0) {
            hy_error_prefix("run %s", run->id);
            return rc;
        }
        fin = rc;
        if (fin == 0) t->p.done++, t->finished++, report(t, "done", NULL);
    }
    hy_dist_bcast(grp, &fin, sizeof fin, 0);
    return fin;
}

/* The runner under mpirun: ranks form groups of o->ranks_per_run; each group's leader takes the
 * next run from rank 0's queue (a complete run is skipped at once), the group trains it (data
 * parallel when it has several ranks), and the leader evaluates it into runs/<id>/ exactly as the
 * serial runner does. Rank 0 runs the benchmark first and merges everything at the end. */
static int run_distributed(const hy_experiment *e, const hy_exp_opts *o, hy_exp_result *r) {
    hy_dist *world = o->dist, *grp = NULL;
    int size = hy_dist_size(world), per = o->ranks_per_run > 0 ? o->ranks_per_run : 1, rc = 0;
    if (size % per)
        return hy_fail_code(HY_ERR_CONFIG, "%d ranks per run do not divide the %d ranks of this launch", per, size);
    bool rank0 = hy_dist_rank(world) == 0;
    tick_ctx t = {.e = e, .o = o, .t0 = hy_now()};
    t.p.n_runs = e->n_runs, t.p.group = hy_dist_rank(world) / per, t.p.groups = size / per;
    if ((rc = hy_experiment_validate(e, o->force, NULL)) < 0) return rc;   /* every rank, its own machine */
    if (rank0 && (rc = start_folder(e)) == 0 && (rc = prepare_data(e, o)) == 0 && e->bench.enabled)
        rc = run_bench(e, o, &t);
    if (rc < 0) return rc;
    hy_dist_barrier(world);   /* the others sleep through rank 0's tokenizing and benchmark */
    if ((rc = hy_dist_split(world, t.p.group, &grp)) < 0) return rc;
    bool leader = hy_dist_rank(grp) == 0;
    for (int i = 0; leader && i < e->n_runs; i++) t.todo += status_of(&e->runs[i], false) != RUN_COMPLETE;
    hy_dist_queue *q;
    if ((rc = hy_dist_queue_open(world, e->n_runs, leader, &q)) < 0) {
        hy_dist_free(grp);
        return rc;
    }
    int64_t counts[3] = {0};   /* trained, skipped, interrupted: summed over the leaders below */
    for (;;) {
        int item = -1, st = RUN_NEW;
        if (leader && ((o->stop && *o->stop) || (o->stop_after_runs > 0 && counts[0] >= o->stop_after_runs)))
            counts[2] = 1;
        else if (leader) hy_dist_queue_next(q, &item);
        if (leader && item >= 0 && (rc = hy_mkdirs(e->runs[item].cfg.out_dir)) == 0)
            st = status_of(&e->runs[item], true);
        if (rc < 0) break;
        int msg[2] = {item, st};   /* the leader's decision, to the whole group */
        hy_dist_bcast(grp, msg, sizeof msg, 0);
        if (msg[0] < 0) break;
        const hy_exp_run *run = &e->runs[msg[0]];
        t.p.run = msg[0], t.p.cur = run;
        if (msg[1] == RUN_COMPLETE) {
            if (leader) counts[1]++, t.p.skipped++, report(&t, "skip", NULL);
            continue;
        }
        if ((rc = run_in_group(e, o, &t, grp, q, run, msg[1] == RUN_PARTIAL)) < 0) break;
        if (rc == 1) {
            counts[2] = leader, rc = 0;
            break;
        }
        counts[0] += leader;
    }
    if (rc < 0) {   /* the program stops every rank (hy_dist_abort): nothing to tidy for the others */
        hy_dist_free(grp);
        return rc;
    }
    if (leader) hy_dist_queue_quit(q);
    hy_dist_queue_close(q);
    hy_dist_allreduce(world, counts, 3, HY_DIST_I64, HY_DIST_SUM);
    r->trained = (int)counts[0], r->skipped = (int)counts[1];
    r->interrupted = counts[2] > 0 || r->trained + r->skipped < r->total;
    hy_dist_free(grp);
    return rank0 ? merge_results(e, o, r) : 0;
}

int hy_experiment_run(const hy_experiment *e, const hy_exp_opts *o, hy_exp_result *r) {
    memset(r, 0, sizeof *r);
    r->total = e->n_runs;
    if (hy_dist_size(o->dist) > 1) return run_distributed(e, o, r);
    int rc = hy_experiment_validate(e, o->force, NULL);
    if (rc < 0 || (rc = start_folder(e)) < 0 || (rc = prepare_data(e, o)) < 0) return rc;
    tick_ctx t = {.e = e, .o = o, .t0 = hy_now()};
    t.p.n_runs = e->n_runs, t.p.groups = 1;
    for (int i = 0; i < e->n_runs; i++) t.todo += status_of(&e->runs[i], false) != RUN_COMPLETE;
    if (e->bench.enabled && (rc = run_bench(e, o, &t)) < 0) return rc;
    for (int i = 0; i < e->n_runs; i++) {
        const hy_exp_run *run = &e->runs[i];
        t.p.run = i, t.p.cur = run;
        if ((rc = hy_mkdirs(run->cfg.out_dir)) < 0) return rc;
        run_status st = status_of(run, true);
        if (st == RUN_COMPLETE) {
            r->skipped++, t.p.skipped++;
            report(&t, "skip", NULL);
            continue;
        }
        if (o->stop && *o->stop) {
            r->interrupted = true;
            break;
        }
        report(&t, st == RUN_PARTIAL ? "resume" : "start", NULL);
        hy_train_opts to = {.resume = st == RUN_PARTIAL, .variant = run->variant, .stop = o->stop,
                            .on_tick = on_tick, .tick_ctx = &t};
        hy_train_result tr;
        if ((rc = hy_train(&run->cfg, &to, &tr)) < 0) {
            hy_error_prefix("run %s", run->id);
            return rc;
        }
        if (tr.interrupted) {
            r->interrupted = true;
            break;
        }
        report(&t, "eval", NULL);
        if ((rc = finish_run(e, run, &tr, o->stop)) < 0) {
            hy_error_prefix("run %s", run->id);
            return rc;
        }
        if (rc == 1) {
            r->interrupted = true;
            rc = 0;
            break;
        }
        r->trained++, t.p.done++, t.finished++;
        report(&t, "done", NULL);
        if (o->stop_after_runs > 0 && r->trained >= o->stop_after_runs) {
            r->interrupted = r->trained + r->skipped < r->total;
            break;
        }
    }
    return merge_results(e, o, r);
}

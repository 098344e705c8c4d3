/* The training loop. Determinism: the data stream comes from one RNG seeded by the config (saved
 * in the training state), validation uses fixed windows, and every reduction has a fixed order,
 * so the same config, seed and thread count give a bit-identical loss curve, also across resume. */
#include "experiments/train.h"
#include "experiments/csv_schema.h"
#include "experiments/dp.h"
#include "experiments/validate.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "core/strbuf.h"
#include "core/timer.h"
#include "models/checkpoint.h"
#include "models/optim.h"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


/* Validation loss, bits per byte (NAN when unknown) and, for a task, accuracy on the answer
 * positions of the run's model; split over the ranks when dp is set. */
static double validate(hy_model *m, const hy_data *d, const hy_run_config *c, hy_dp *dp, double *acc, double *bpb) {
    hy_eval_result e;
    if ((dp ? hy_dp_evaluate(dp, m, d, c->batch_size, c->seq_len, c->eval_batches, c->seed, &e)
            : hy_evaluate_data(m, d, c->batch_size, c->seq_len, c->eval_batches, c->seed, false, &e)) < 0)
        return NAN;
    *acc = e.accuracy, *bpb = e.bits_per_byte;
    return e.loss;
}

/* train.csv and the telemetry CSVs grow by appending each row (one write() per row or per
 * evaluation) as soon as it is produced, so a run that stops on an error or is killed keeps every
 * row it logged. A log is first made to hold its header and, on resume, the existing rows whose
 * step (0-based column step_col) is at most the checkpoint's (rewritten atomically: a kill leaves
 * either the old file or the trimmed one); a last line cut short by a kill is dropped, and a row
 * with fewer columns than the header (train.csv before comm_s) gets empty cells at its end. A log
 * that is not open (fd -1: ranks other than 0 of a data-parallel run) drops what it is given. */
typedef struct {
    int fd;                     /* open for appending; -1 when closed */
    char path[HY_PATH_MAX + 64];
} csv_log;

/* Commas in [s, end). */
static int count_commas(const char *s, const char *end) {
    int n = 0;
    for (; s < end; s++) n += *s == ',';
    return n;
}

/* Starts the log at path: header, plus (resumed) the existing rows up to and including `step`. */
static int csv_open(csv_log *f, const char *path, const char *header, bool resumed, int step_col, long step) {
    hy_strbuf t = {0};
    char *data = NULL;
    size_t len;
    f->fd = -1;
    snprintf(f->path, sizeof f->path, "%s", path);
    hy_sb_add(&t, header);
    if (resumed && access(path, F_OK) == 0) {
        int rc = hy_read_file(path, &data, &len);
        if (rc < 0) {
            hy_sb_free(&t);
            return rc;
        }
        const char *line = strchr(data, '\n');   /* skip the header */
        while (line && *++line) {
            const char *end = strchr(line, '\n'), *p = line;
            if (!end) break;                        /* cut short by a kill */
            for (int k = 0; k < step_col && p && p < end; k++) p = strchr(p + (k > 0), ',');
            if (p && p < end && atol(p + 1) <= step) {
                hy_sb_addn(&t, line, (size_t)(end - line));
                for (int k = count_commas(line, end); k < count_commas(header, header + strlen(header)); k++)
                    hy_sb_add(&t, ",");
                hy_sb_add(&t, "\n");
            }
            line = end;
        }
        hy_free(data);
    }
    int rc = hy_sb_write_file(&t, path);
    hy_sb_free(&t);
    if (rc < 0) return rc;
    if ((f->fd = open(path, O_WRONLY | O_APPEND)) < 0)
        return hy_fail_code(HY_ERR_IO, "%s: cannot open for appending: %s", path, strerror(errno));
    return 0;
}

/* Appends the text of b (whole rows) to the log and empties b. */
static int csv_append(csv_log *f, hy_strbuf *b) {
    if (f->fd < 0) {   /* not this process's file */
        hy_sb_clear(b);
        return 0;
    }
    if (b->failed) return hy_fail_code(HY_ERR_NOMEM, "%s: out of memory for a row", f->path);
    const char *p = b->p;
    size_t left = b->len;
    while (left > 0) {
        ssize_t w = write(f->fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return hy_fail_code(HY_ERR_IO, "%s: write failed: %s", f->path, w < 0 ? strerror(errno) : "no space");
        p += w, left -= (size_t)w;
    }
    hy_sb_clear(b);
    return 0;
}

/* Makes the rows written so far durable (beside a checkpoint, and at the end). */
static int csv_sync(csv_log *f) {
    if (f->fd >= 0 && fsync(f->fd) != 0) return hy_fail_code(HY_ERR_IO, "%s: cannot flush: %s", f->path, strerror(errno));
    return 0;
}

static void csv_close(csv_log *f) {
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
}

/* Fraction of the budget used: the largest over the budgets that are set. */
static double budget_fraction(const hy_run_config *c, long step, double tokens, double seconds) {
    double f = 0;
    if (c->steps > 0) f = fmax(f, (double)step / c->steps);
    if (c->max_tokens > 0) f = fmax(f, tokens / c->max_tokens);
    if (c->max_seconds > 0) f = fmax(f, seconds / c->max_seconds);
    return f;
}

/* Which budget ended a finished run: steps or tokens (complete), else the wall-clock cap. */
static hy_stop_reason budget_that_ended(const hy_run_config *c, long step, double tokens) {
    if (c->steps > 0 && step >= c->steps) return HY_STOP_STEPS;
    if (c->max_tokens > 0 && tokens >= c->max_tokens) return HY_STOP_TOKENS;
    return HY_STOP_SECONDS;
}

const char *hy_stop_reason_name(hy_stop_reason r) {
    static const char *const names[] = {"steps", "tokens", "seconds", "interrupt"};
    return names[r];
}

/* Cosine progress measured after warmup, in the units of the dominant budget. */
static double schedule_progress(const hy_run_config *c, long step, double frac) {
    if (c->steps > 0 && c->max_tokens <= 0 && c->max_seconds <= 0)
        return c->steps > c->warmup_steps ? (double)(step - c->warmup_steps) / (c->steps - c->warmup_steps) : 1.0;
    return frac;
}

typedef struct {
    const hy_run_config *c;
    char ckpt[HY_PATH_MAX + 64], state[HY_PATH_MAX + 64], csv[HY_PATH_MAX + 64];
} run_paths;

/* Whether any block of the model adds an auxiliary loss: the aux_loss column is empty otherwise. */
static bool has_aux_loss(hy_model *m) {
    for (int s = 0; s < 2 * m->cfg.n_layers; s++) {
        const hy_layer *L = hy_model_sub_block(m, s);
        if (L->ops && (L->ops->flags & HY_BLOCK_AUX_LOSS)) return true;
    }
    return false;
}

/* ---- block telemetry (hy_block_stats): one CSV per file name the model's blocks declare ---- */
#define MAX_STATS_FILES 8
typedef struct {
    const hy_block_stats *st;   /* the first block that named the file: its columns head it */
    const char *block;          /* that block's name, for errors */
    csv_log log;                /* the file, appended like train.csv */
    hy_strbuf rows;             /* the rows of the current evaluation, not yet appended */
} stats_csv;
typedef struct {
    int n;
    stats_csv f[MAX_STATS_FILES];
} telemetry;

/* The CSV of st's file, or NULL when no block named it yet. */
static stats_csv *telemetry_file(telemetry *tm, const hy_block_stats *st) {
    for (int i = 0; i < tm->n; i++)
        if (!strcmp(tm->f[i].st->file, st->file)) return &tm->f[i];
    return NULL;
}

/* One CSV per file the model's blocks declare, started with its header (or, resumed, with its
 * rows up to `step`); blocks that share a file must declare the same columns. Without `write` (a
 * rank other than 0) no file is touched and rows are dropped. */
static int telemetry_open(telemetry *tm, hy_model *m, const char *out_dir, bool write, bool resumed, long step) {
    for (int s = 0; s < 2 * m->cfg.n_layers; s++) {
        const hy_layer *L = hy_model_sub_block(m, s);
        const hy_block_stats *st = L->ops ? L->ops->stats : NULL;
        if (!st) continue;
        stats_csv *f = telemetry_file(tm, st);
        if (f && strcmp(f->st->columns, st->columns))
            return hy_fail("%s: blocks %s and %s declare different columns (%s, %s)", st->file, f->block,
                           L->ops->name, f->st->columns, st->columns);
        if (f) continue;
        if (tm->n == MAX_STATS_FILES) return hy_fail("more than %d telemetry files", MAX_STATS_FILES);
        f = &tm->f[tm->n++];
        f->st = st, f->block = L->ops->name;
        f->log.fd = -1;
        char header[256], path[HY_PATH_MAX + 64];
        const char *head = hy_csv_STATS.header;   /* its columns, then the block's */
        snprintf(header, sizeof header, "%.*s,%s\n", (int)strlen(head) - 1, head, st->columns);
        snprintf(path, sizeof path, "%s/%s", out_dir, st->file);
        int rc = write ? csv_open(&f->log, path, header, resumed, HY_STATS_step, step) : 0;
        if (rc < 0) return rc;
    }
    return 0;
}

/* Appends the rows of the last evaluation to every telemetry CSV. */
static int telemetry_flush(telemetry *tm) {
    for (int i = 0; i < tm->n; i++) {
        int rc = csv_append(&tm->f[i].log, &tm->f[i].rows);
        if (rc < 0) return rc;
    }
    return 0;
}

/* Makes every telemetry CSV durable (fsync). */
static int telemetry_sync(telemetry *tm) {
    for (int i = 0; i < tm->n; i++) {
        int rc = csv_sync(&tm->f[i].log);
        if (rc < 0) return rc;
    }
    return 0;
}

/* Closes the telemetry CSVs and frees their pending rows. */
static void telemetry_free(telemetry *tm) {
    for (int i = 0; i < tm->n; i++) {
        csv_close(&tm->f[i].log);
        hy_sb_free(&tm->f[i].rows);
    }
}

/* One layer's counts since its reset: rows of its CSV, and one line into `lines` (each count's
 * share in %, and max/mean: 1 = balanced, n = everything on one item). */
static int telemetry_layer(telemetry *tm, const hy_layer *L, const char *variant, int seq_len, long step,
                           hy_dp *dp, hy_strbuf *lines) {
    const hy_block_stats *st = L->ops->stats;
    stats_csv *f = telemetry_file(tm, st);
    int n = st->get(L, NULL, 0);
    int64_t *cnt = hy_malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1)), total = 0, most = 0;
    if (!f || !cnt) {
        hy_free(cnt);
        return f ? HY_ERR_NOMEM : hy_fail("%s: no telemetry file %s", L->ops->name, st->file);
    }
    st->get(L, cnt, n);
    if (dp) hy_dist_allreduce(dp->d, cnt, (size_t)n, HY_DIST_I64, HY_DIST_SUM);   /* every rank's rows */
    for (int e = 0; e < n; e++) {
        total += cnt[e], most = cnt[e] > most ? cnt[e] : most;
        hy_sb_printf(&f->rows, "%s,%d,%ld,%d,%d,%" PRId64 "\n", variant, seq_len, step, L->index, e, cnt[e]);
    }
    hy_sb_printf(lines, "[%s] step %ld  layer %d %s: %% of val %s:", variant, step, L->index, L->ops->name, st->label);
    for (int e = 0; e < n; e++) hy_sb_printf(lines, " %.1f", total ? 100.0 * cnt[e] / total : 0.0);
    hy_sb_printf(lines, "  (max/mean %.2f)\n", total ? (double)most * n / total : 0.0);
    hy_free(cnt);
    return 0;
}

/* The validation loss (validate) into *val (bits per byte into *bpb) and, for every block with telemetry, its counts over
 * the validation batches: rows appended to its CSV and a line per layer into `lines`. With dp,
 * every rank takes part (its rows of each batch) and the results are the sums over ranks. */
static int evaluate(hy_model *m, const hy_data *d, const hy_run_config *c, const char *variant, long step,
                    hy_dp *dp, double *val, double *acc, double *bpb, telemetry *tm, hy_strbuf *lines) {
    const int S = 2 * m->cfg.n_layers;
    for (int s = 0; s < S; s++) {
        hy_layer *L = hy_model_sub_block(m, s);
        if (L->ops && L->ops->stats) L->ops->stats->reset(L);
    }
    *val = validate(m, d, c, dp, acc, bpb);
    for (int s = 0; s < S; s++) {
        const hy_layer *L = hy_model_sub_block(m, s);
        int rc = L->ops && L->ops->stats ? telemetry_layer(tm, L, variant, c->seq_len, step, dp, lines) : 0;
        if (rc < 0) return rc;
    }
    return telemetry_flush(tm);
}

/* Prints and empties the telemetry lines of the last evaluation. */
static void flush_lines(hy_strbuf *lines, FILE *progress) {
    if (progress && lines->len) {
        fputs(lines->p, progress);
        fflush(progress);
    }
    hy_sb_clear(lines);
}

/* What a resumed run needs to continue the identical curve, beyond weights and moments. */
typedef struct {
    long step;
    double tokens, elapsed;
    double window_loss;   /* sum of train losses since the last train.csv row */
    double window_aux;    /* sum of the aux losses (hy_loss.aux_loss) over the same steps */
    long window_steps;
} run_progress;

/* Non-finite values among the n floats of x (NaN or infinite). */
static size_t count_nonfinite(const float *x, size_t n) {
    size_t bad = 0;
    #pragma omp parallel for schedule(static) reduction(+ : bad) if (n > 65536)
    for (size_t i = 0; i < n; i++) bad += !isfinite(x[i]);
    return bad;
}

/* Refuses weights or optimizer moments that are not all finite, naming the first tensor that holds
 * such a value: checked after every update, and again before anything is saved, so a checkpoint
 * or training state never holds one and the last one saved stays the last good one. */
static int check_finite(hy_model *m, const hy_optim *opt, long step) {
    const float *arena[3] = {m->data, opt->m, opt->v};
    size_t lo[3] = {0, opt->lo, opt->lo}, hi[3] = {m->numel, opt->hi, opt->hi};   /* moments: o's slice */
    static const char *const what[3] = {"parameter", "first moment of", "second moment of"};
    for (int a = 0; a < 3; a++) {
        if (!arena[a] || count_nonfinite(arena[a], hi[a] - lo[a]) == 0) continue;
        for (int i = 0; i < m->n_params; i++) {
            const hy_param *p = &m->params[i];
            size_t s = (size_t)(p->data - m->data), e = s + p->numel;
            s = s > lo[a] ? s : lo[a], e = e < hi[a] ? e : hi[a];
            size_t bad = s < e ? count_nonfinite(arena[a] + (s - lo[a]), e - s) : 0;
            if (bad)
                return hy_fail("step %ld: the update made the %s '%s' non-finite (%zu of %zu values); " HY_DIVERGED_HINT,
                               step, what[a], p->name, bad, p->numel);
        }
    }
    return 0;
}

/* What the checkpoint records about the data (generation and eval check a tokenizer against it):
 * data = bytes | tokens | task:NAME, the training seq_len (eval's default length), and the
 * tokenizer's file, SHA-256 and vocabulary when there is one. buf: 3 x 64 bytes of scratch. */
static int data_meta(const hy_data *d, int seq_len, const char **keys, const char **vals, char buf[3][64]) {
    const hy_corpus *c = &d->corpus;
    int n = 0;
    keys[n] = "data";
    if (d->task.type != HY_TASK_NONE) snprintf(buf[0], 64, "task:%s", hy_task_name(d->task.type)), vals[n++] = buf[0];
    else vals[n++] = c->tokens ? "tokens" : "bytes";
    snprintf(buf[1], 64, "%d", seq_len);
    keys[n] = "seq_len", vals[n++] = buf[1];
    if (d->task.type == HY_TASK_NONE && c->tokenizer_vocab > 0) {
        snprintf(buf[2], 64, "%d", c->tokenizer_vocab);
        keys[n] = "tokenizer", vals[n++] = c->tokenizer;
        keys[n] = "tokenizer_sha256", vals[n++] = c->tokenizer_sha256;
        keys[n] = "tokenizer_vocab", vals[n++] = buf[2];
    }
    return n;
}

/* The checkpoint, then its training state: the whole optimizer moments mom[0] (and mom[1] when
 * two), RNG, progress, and the identity of the checkpoint it belongs to (its step and the
 * fingerprint of its weights), which resume checks. */
static int write_state(const run_paths *P, hy_model *m, float *const *mom, bool two, const hy_rng *rng,
                       const run_progress *pr, const hy_data *d) {
    long step = pr->step;
    hy_optim whole = {.m = mom[0], .v = two ? mom[1] : NULL, .lo = 0, .hi = m->numel};
    int rc = check_finite(m, &whole, step);
    if (rc < 0) return rc;
    const char *mk[5], *mv[5];
    char mbuf[3][64];
    int n_meta = data_meta(d, P->c->seq_len, mk, mv, mbuf);
    if ((rc = hy_checkpoint_save_meta(m, P->ckpt, step, n_meta, mk, mv)) < 0) return rc;
    char rng_s[80], step_s[32], tok_s[32], el_s[32], seed_s[32], wl_s[40], ws_s[32], wa_s[40], fp_s[32];
    snprintf(rng_s, sizeof rng_s, "%016" PRIx64 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64, rng->s[0], rng->s[1],
             rng->s[2], rng->s[3]);
    snprintf(step_s, sizeof step_s, "%ld", step);
    snprintf(tok_s, sizeof tok_s, "%.0f", pr->tokens);
    snprintf(el_s, sizeof el_s, "%.3f", pr->elapsed);
    snprintf(wl_s, sizeof wl_s, "%.17g", pr->window_loss);
    snprintf(ws_s, sizeof ws_s, "%ld", pr->window_steps);
    snprintf(wa_s, sizeof wa_s, "%.17g", pr->window_aux);
    snprintf(seed_s, sizeof seed_s, "%" PRIu64, P->c->seed);
    hy_model_weights_fingerprint(m, fp_s, sizeof fp_s);
    const char *keys[] = {"step", "optimizer", "rng", "tokens", "elapsed_s", "seed", "window_loss", "window_steps",
                          "window_aux", "weights"};
    const char *vals[] = {step_s, P->c->optimizer, rng_s, tok_s, el_s, seed_s, wl_s, ws_s, wa_s, fp_s};
    const char *slot_names[] = {"optim_m", "optim_v"};
    return hy_train_state_save(P->state, m, two ? 2 : 1, slot_names, mom, 10, keys, vals);
}

/* Saves the checkpoint and training state (write_state). With dp it is collective: a sharded
 * optimizer's moments are gathered on rank 0, which alone writes. */
static int save_all(const run_paths *P, hy_model *m, hy_optim *opt, hy_dp *dp, const hy_rng *rng,
                    const run_progress *pr, const hy_data *d) {
    float *mom[2] = {opt->m, opt->v};
    bool owned = false;
    int rc = dp ? hy_dp_gather_moments(dp, opt, &mom[0], &mom[1], &owned) : 0;
    if (rc == 0 && (!dp || dp->rank == 0)) rc = write_state(P, m, mom, opt->v != NULL, rng, pr, d);
    if (owned) hy_free(mom[0]), hy_free(mom[1]);
    return rc;
}

/* Refuses a training state that was not saved with this checkpoint: its recorded step and weights
 * fingerprint must be the checkpoint's (ckpt_step, and the fingerprint of the loaded weights m).
 * Catches a state file put back from another save and a crash between the two files' writes. */
static int check_pair(const run_paths *P, const hy_model *m, long ckpt_step, const char *s_step, const char *s_fp) {
    char fp[32];
    hy_model_weights_fingerprint(m, fp, sizeof fp);
    if (!s_fp)
        return hy_fail("%s has no 'weights' fingerprint (a training state written before states recorded their "
                       "checkpoint), so nothing shows it belongs to %s; resume refused: start the run again without "
                       "--resume (or remove both files)", P->state, P->ckpt);
    if (atol(s_step) != ckpt_step || strcmp(s_fp, fp) != 0)
        return hy_fail("%s (step %.20s, weights %.20s) does not belong to %s (step %ld, weights %s): a state file "
                       "from another save, or a crash between writing the two; put back the state saved with this "
                       "checkpoint, or start the run again without --resume", P->state, s_step, s_fp, P->ckpt,
                       ckpt_step, fp);
    return 0;
}

/* The training state saved with the checkpoint that m was loaded from (at step pr->step): refused
 * unless it is that checkpoint's (check_pair) and was saved with the config's optimizer. The whole
 * moments go into mom[0] (and mom[1] when the optimizer has two). */
static int load_state(const run_paths *P, hy_model *m, hy_optim *opt, float *const *mom, hy_rng *rng,
                      run_progress *pr) {
    const char *slot_names[] = {"optim_m", "optim_v"};
    hy_kv_list meta;
    if (access(P->state, F_OK) != 0)
        return hy_fail("%s has no training state beside it (%s is missing: a crash or a failed write between the two "
                       "files); resume refused: start the run again without --resume", P->ckpt, P->state);
    int rc = hy_train_state_load(P->state, m, opt->v ? 2 : 1, slot_names, mom, &meta);
    if (rc < 0) return rc;
    const char *s_step = hy_kv_get(&meta, "step"), *s_rng = hy_kv_get(&meta, "rng"),
               *s_tok = hy_kv_get(&meta, "tokens"), *s_el = hy_kv_get(&meta, "elapsed_s"),
               *s_opt = hy_kv_get(&meta, "optimizer"), *s_wl = hy_kv_get(&meta, "window_loss"),
               *s_ws = hy_kv_get(&meta, "window_steps"), *s_wa = hy_kv_get(&meta, "window_aux");
    if (!s_step || !s_rng || strlen(s_rng) != 64 || !s_tok || !s_el || !s_opt || !s_wl || !s_ws) rc = hy_fail("%s: incomplete training state", P->state);
    if (rc == 0) rc = check_pair(P, m, pr->step, s_step, hy_kv_get(&meta, "weights"));
    if (rc == 0 && strcmp(s_opt, P->c->optimizer) != 0)
        rc = hy_fail("%s: saved with optimizer %s, config says %s", P->state, s_opt, P->c->optimizer);
    if (rc == 0) {
        pr->step = atol(s_step);
        pr->tokens = atof(s_tok);
        pr->elapsed = atof(s_el);
        pr->window_loss = strtod(s_wl, NULL);
        pr->window_steps = atol(s_ws);
        pr->window_aux = s_wa ? strtod(s_wa, NULL) : 0;   /* absent in states written before the aux column */
        for (int i = 0; i < 4; i++) {
            char part[17];
            memcpy(part, s_rng + 16 * i, 16);
            part[16] = 0;
            rng->s[i] = strtoull(part, NULL, 16);
        }
        opt->step = pr->step;
    }
    hy_kv_free(&meta);
    return rc;
}

/* Loads model + state from out_dir if present and the config matches, else builds a fresh model. */
static int open_model(const hy_run_config *c, const run_paths *P, bool resume, hy_model **model, long *step) {
    *step = 0;
    if (resume && access(P->ckpt, F_OK) == 0) {
        int rc = hy_checkpoint_load(P->ckpt, model, step);
        if (rc < 0) return rc;
        char *a = NULL, *b = NULL;
        hy_model_config_to_json(&(*model)->cfg, &a);
        hy_model_config_to_json(&c->model, &b);
        int same = a && b && strcmp(a, b) == 0;
        free(a), free(b);
        if (!same) {
            hy_model_free(*model);
            *model = NULL;
            return hy_fail("%s: the checkpoint's model differs from the config's; use another out_dir or drop --resume",
                           P->ckpt);
        }
        return 0;
    }
    return hy_model_create(&c->model, c->seed, model);
}

/* Everything one training run holds, so that its stages below can read top to bottom. */
typedef struct {
    const hy_run_config *c;
    const hy_train_opts *o;
    const char *variant;
    run_paths P;
    hy_data corpus;             /* a byte corpus or a synthetic task */
    bool corpus_open;
    hy_model *m;
    hy_optim opt;
    csv_log csv;                /* train.csv */
    hy_strbuf row, lines;       /* the train.csv row being built, and the telemetry lines still to print */
    telemetry tm;
    int32_t *in, *tg;           /* one batch: inputs and targets, B x T */
    int B, T;
    size_t n;                   /* tokens per step */
    run_progress pr;
    hy_rng rng;
    size_t mem_base;
    bool resumed, aux, tty;
    double t_start, t_window;   /* wall clock at the start (minus resumed time), at the window's start */
    long window_tokens, first_step;
    char run_key[80];           /* the seed and peak_lr columns */
    double val, lr, gnorm, acc; /* the last validation loss and accuracy, learning rate, gradient norm */
    double bpb;                 /* the last validation bits per byte (NAN when unknown) */
    /* data parallel (o->dist with more than one rank): dp set up, else NULL and nothing below is used */
    hy_dp dp_state, *dp;
    bool writer;                /* rank 0 (or the only process): prints and writes files */
    bool stop_agreed;           /* the ranks agreed to stop after this step */
    double clock;               /* the run's clock as the ranks agreed on it at the last step */
    double window_comm;         /* seconds waiting on communication since the last train.csv row */
} train_run;

/* The run's elapsed seconds: this process's clock, or with several ranks rank 0's as of the last
 * step (every rank must take the same budget decisions). */
static double run_clock(const train_run *R) { return R->dp ? R->clock : hy_now() - R->t_start; }

/* Paths, process-wide settings (threads, GEMM backend and precision), the data (opened and
 * checked against the model first: nothing is written for a missing corpus or one that does not
 * fit the vocabulary), then the output folder and the resolved config.yaml. */
static int run_prepare(train_run *R) {
    const hy_run_config *c = R->c;
    R->P.c = c;
    snprintf(R->P.ckpt, sizeof R->P.ckpt, "%s/checkpoint.safetensors", c->out_dir);
    snprintf(R->P.state, sizeof R->P.state, "%s/checkpoint.state.safetensors", c->out_dir);
    snprintf(R->P.csv, sizeof R->P.csv, "%s/%s", c->out_dir, hy_csv_TRAIN.file);
    hy_set_threads(c->threads);
    hy_gemm_set_backend(c->gemm);
    hy_gemm_set_precision(c->precision);
    hy_data_spec spec;   /* the vocabulary and lengths are checked below, where errors are located */
    hy_run_data_spec(c, &spec);
    spec.vocab_size = 0, spec.min_tokens = 0;
    spec.progress = R->o->on_tick || hy_dist_rank(R->o->dist) != 0 ? NULL : R->o->progress;
    int rc = hy_data_open(&R->corpus, &spec, &c->task, c->seed);
    if (rc < 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", hy_last_error());
        return hy_fail_code(HY_ERR_CONFIG, "%s: %s", c->at_corpus, msg);
    }
    R->corpus_open = true;
    if ((rc = hy_run_check_data(c, &R->corpus, NULL, 0)) < 0) return rc;
    R->writer = hy_dist_rank(R->o->dist) == 0;
    if (!R->writer) return 0;   /* rank 0 writes the folder */
    if ((rc = hy_mkdirs(c->out_dir)) < 0) return rc;
    if (rc < 0) return rc;
    char cfg_path[HY_PATH_MAX + 64];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.yaml", c->out_dir);
    return hy_run_config_write(c, cfg_path);
}

/* The optimizer's settings from the config. */
static void optim_settings(hy_optim *opt, const hy_run_config *c) {
    opt->weight_decay = c->weight_decay, opt->beta1 = c->beta1, opt->beta2 = c->beta2, opt->eps = c->eps;
    opt->momentum = c->momentum, opt->ssm_lr = c->ssm_lr;
}

static hy_optim_kind optim_kind(const hy_run_config *c) {
    return strcmp(c->optimizer, "sgd") ? HY_OPTIM_ADAMW : HY_OPTIM_SGD;
}

/* The model, optimizer and progress of one process training alone: fresh, or restored with the
 * RNG and progress when resuming. */
static int open_alone(train_run *R) {
    const hy_run_config *c = R->c;
    int rc;
    if ((rc = open_model(c, &R->P, R->o->resume, &R->m, &R->pr.step)) < 0) return rc;
    hy_optim *opt = &R->opt;
    optim_settings(opt, c);
    if ((rc = hy_optim_init(opt, R->m, optim_kind(c))) < 0) return rc;
    R->resumed = R->pr.step > 0;
    float *mom[2] = {opt->m, opt->v};
    if (R->resumed && (rc = load_state(&R->P, R->m, opt, mom, &R->rng, &R->pr)) < 0) return rc;
    return 0;
}

/* The same for a run over several ranks: rank 0 opens the model (fresh, or the checkpoint, which
 * any number of ranks may continue) and reads the training state; its parameters, moments (whole,
 * or scattered to the shards), RNG and progress then go to every rank. */
static int open_ranks(train_run *R) {
    const hy_run_config *c = R->c;
    hy_dist *d = R->o->dist;
    int rc = R->writer ? open_model(c, &R->P, R->o->resume, &R->m, &R->pr.step) : hy_model_create(&c->model, c->seed, &R->m);
    if (rc < 0) return rc;
    hy_dist_bcast(d, &R->pr.step, sizeof R->pr.step, 0);
    R->dp = &R->dp_state;
    if ((rc = hy_dp_open(R->dp, d, R->m, c->batch_size, c->seq_len, c->shard_optimizer, c->bucket_mb)) < 0) return rc;
    hy_optim *opt = &R->opt;
    optim_settings(opt, c);
    if ((rc = hy_dp_optim_init(R->dp, opt, optim_kind(c))) < 0) return rc;
    R->resumed = R->pr.step > 0;
    float *mom[2] = {opt->m, opt->v};
    bool full = R->resumed && R->writer && c->shard_optimizer;   /* the file holds every moment */
    if (full) {
        mom[0] = hy_malloc(R->m->numel * sizeof(float));
        mom[1] = opt->v ? hy_malloc(R->m->numel * sizeof(float)) : NULL;
        if (!mom[0] || (opt->v && !mom[1])) rc = HY_ERR_NOMEM;
    }
    if (rc == 0 && R->resumed && R->writer) rc = load_state(&R->P, R->m, opt, mom, &R->rng, &R->pr);
    if (rc == 0 && R->resumed) rc = hy_dp_scatter_moments(R->dp, opt, mom[0], mom[1]);
    if (full) hy_free(mom[0]), hy_free(mom[1]);
    if (rc < 0) return rc;
    struct {
        run_progress pr;
        hy_rng rng;
    } extra = {R->pr, R->rng};
    if ((rc = hy_dp_share_state(R->dp, opt, &extra, sizeof extra)) < 0) return rc;
    R->pr = extra.pr, R->rng = extra.rng;
    R->clock = R->pr.elapsed;
    return 0;
}

/* The model and optimizer, train.csv and the telemetry files so far (rank 0's), the batch
 * buffers, and the run's first progress line. */
static int run_open(train_run *R, hy_train_result *r) {
    const hy_run_config *c = R->c;
    int rc;
    hy_rng_seed(&R->rng, c->seed);
    R->mem_base = hy_mem_current();
    hy_mem_reset_peak();
    if ((rc = hy_dist_size(R->o->dist) > 1 ? open_ranks(R) : open_alone(R)) < 0) return rc;
    if (R->writer &&
        (rc = csv_open(&R->csv, R->P.csv, hy_csv_TRAIN.header, R->resumed, HY_TRAIN_step, R->pr.step)) < 0)
        return rc;
    R->aux = has_aux_loss(R->m);
    if ((rc = telemetry_open(&R->tm, R->m, c->out_dir, R->writer, R->resumed, R->pr.step)) < 0) return rc;
    R->B = c->batch_size, R->T = c->seq_len;
    R->n = (size_t)R->B * R->T;
    size_t local = (size_t)(R->dp ? hy_dp_rows(R->dp) : R->B) * R->T;   /* this process's rows */
    R->in = hy_malloc(local * sizeof(int32_t)), R->tg = hy_malloc(local * sizeof(int32_t));
    if (!R->in || !R->tg) return HY_ERR_NOMEM;
    r->params = hy_model_param_count(R->m);
    char data_desc[160], ranks[96] = "";
    hy_data_describe(&R->corpus, data_desc, sizeof data_desc);
    if (R->dp) snprintf(ranks, sizeof ranks, " over %d ranks", R->dp->size);
    if (R->writer && R->o->progress && !R->o->on_tick)
        fprintf(R->o->progress, "[%s] %zu parameters, %s, batch %d x %d%s, %s%s%s\n", R->variant, r->params, data_desc,
                R->B, R->T, ranks, c->optimizer, R->dp && c->shard_optimizer ? " (sharded)" : "",
                R->resumed ? ", resumed" : "");
    R->t_start = hy_now() - R->pr.elapsed, R->t_window = hy_now();
    R->val = NAN, R->lr = c->lr, R->gnorm = 0, R->acc = NAN, R->bpb = NAN;
    R->first_step = R->pr.step;
    snprintf(R->run_key, sizeof R->run_key, "%llu,%g", (unsigned long long)c->seed, c->lr);
    R->tty = R->writer && R->o->progress && !R->o->on_tick && isatty(fileno(R->o->progress));
    if (!R->resumed) {   /* row 0: the untrained model's validation loss */
        if ((rc = evaluate(R->m, &R->corpus, c, R->variant, 0, R->dp, &R->val, &R->acc, &R->bpb, &R->tm, &R->lines)) < 0)
            return rc;
        char bs[32], acs[32];
        hy_csv_cell(bs, sizeof bs, "%.6f", R->bpb);
        hy_csv_cell(acs, sizeof acs, "%.6f", c->task.type != HY_TASK_NONE ? R->acc : NAN);
        hy_sb_printf(&R->row, "%s,%d,%s,0,0,,%.6f,,,,0.000,,,%s,%s\n", R->variant, R->T, R->run_key, R->val, bs, acs);
        if ((rc = csv_append(&R->csv, &R->row)) < 0) return rc;
        flush_lines(&R->lines, R->writer ? R->o->progress : NULL);
    }
    return 0;
}

/* Counts a finished step and adds its loss to the logging window. */
static int step_done(train_run *R, const hy_loss *loss) {
    R->pr.step++;
    R->pr.tokens += (double)R->n;
    R->pr.window_loss += loss->loss, R->pr.window_aux += loss->aux_loss, R->pr.window_steps++;
    R->window_tokens += (long)R->n;
    return 0;
}

/* The step of a run over several ranks (experiments/dp.h): this rank's rows of the global batch,
 * the agreed global loss, backward with the gradient buckets going out as layers finish, then
 * the same clipped update on every rank. Sets *loss to the global batch's loss. The same
 * non-finite checks as one process; the loss and the norm are the same on every rank. */
static int train_step_ranks(train_run *R, double frac, hy_loss *loss) {
    const hy_run_config *c = R->c;
    hy_dp *dp = R->dp;
    int rc;
    if ((rc = hy_dp_batch(dp, &R->corpus, &R->rng, R->in, R->tg)) < 0) return rc;
    hy_loss local;
    if ((rc = hy_model_forward(R->m, R->in, R->tg, hy_dp_rows(dp), R->T, true, &local)) < 0) return rc;
    hy_dp_agreed a;
    bool stop = R->o->stop && *R->o->stop;
    if ((rc = hy_dp_agree(dp, &local, stop, hy_now() - R->t_start, R->pr.step + 1, &a)) < 0) return rc;
    hy_model_zero_grad(R->m);
    if ((rc = hy_model_backward(R->m)) < 0) return rc;
    if ((rc = hy_dp_sync_grads(dp)) < 0) return rc;
    *loss = a.loss;
    R->stop_agreed = a.stop, R->clock = a.elapsed;
    if (!isfinite(loss->loss))
        return hy_fail("step %ld: the loss is %f; " HY_DIVERGED_HINT, R->pr.step + 1, loss->loss);
    R->gnorm = hy_dp_clip(dp, c->grad_clip);
    if (!isfinite(R->gnorm))
        return hy_fail("step %ld: the gradient norm is %f; " HY_DIVERGED_HINT, R->pr.step + 1,
                       R->gnorm);
    R->lr = hy_lr_schedule(R->pr.step, c->warmup_steps, schedule_progress(c, R->pr.step, frac), c->lr, c->min_lr);
    if ((rc = hy_dp_step(dp, &R->opt, R->lr)) < 0) return rc;
    return check_finite(R->m, &R->opt, R->pr.step + 1);
}

/* One optimizer step on the next training batch (frac: the budget used so far, for the lr
 * schedule); adds its loss to the logging window. A non-finite loss, gradient norm or update stops
 * the run before anything non-finite can be saved. */
static int train_step(train_run *R, double frac) {
    const hy_run_config *c = R->c;
    int rc;
    hy_loss loss;
    if (R->dp) {
        if ((rc = train_step_ranks(R, frac, &loss)) < 0) return rc;
        R->window_comm += hy_dp_take_comm(R->dp);
        return step_done(R, &loss);
    }
    if ((rc = hy_data_batch(&R->corpus, 0, &R->rng, R->B, R->T, R->in, R->tg)) < 0) return rc;
    R->lr = hy_lr_schedule(R->pr.step, c->warmup_steps, schedule_progress(c, R->pr.step, frac), c->lr, c->min_lr);
    if ((rc = hy_optim_train_step(&R->opt, R->m, c->grad_clip, R->in, R->tg, R->B, R->T, R->lr, &loss, &R->gnorm)) < 0)
        return rc;
    /* the update tested its own output (hy_optim.maybe_nonfinite): the pass over the weights and
     * moments that names the tensor runs only when that test saw a value that may not be finite */
    if (R->opt.maybe_nonfinite && (rc = check_finite(R->m, &R->opt, R->pr.step + 1)) < 0) return rc;
    return step_done(R, &loss);
}

/* A logging point: evaluates when `eval` (appending the telemetry rows), appends the train.csv
 * row, reports progress (the caller's tick or the progress line), prints the telemetry lines and
 * starts a new window. */
static int log_point(train_run *R, hy_train_result *r, bool eval, double frac, double now) {
    const hy_run_config *c = R->c;
    const hy_train_opts *o = R->o;
    int rc;
    double tps = R->window_tokens / fmax(now - R->t_window, 1e-9);
    R->val = NAN, R->bpb = NAN;
    char vs[32] = "", bs[32] = "", acs[32] = "";   /* acs: val_accuracy, for a task only */
    if (eval) {
        if ((rc = evaluate(R->m, &R->corpus, c, R->variant, R->pr.step, R->dp, &R->val, &R->acc, &R->bpb, &R->tm,
                           &R->lines)) < 0)
            return rc;
        snprintf(vs, sizeof vs, "%.6f", R->val);
        hy_csv_cell(bs, sizeof bs, "%.6f", R->bpb);
        hy_csv_cell(acs, sizeof acs, "%.6f", c->task.type != HY_TASK_NONE ? R->acc : NAN);
        if (R->dp) R->window_comm += hy_dp_take_comm(R->dp);
    }
    double comm = R->window_comm / R->pr.window_steps;   /* seconds per step waiting on the other ranks */
    r->train_loss = R->pr.window_loss / R->pr.window_steps;
    r->tokens_per_s = tps;
    char as[32] = "";   /* aux_loss: empty for a model without a block that adds one */
    if (R->aux) snprintf(as, sizeof as, "%.6f", R->pr.window_aux / R->pr.window_steps);
    hy_sb_printf(&R->row, "%s,%d,%s,%ld,%.0f,%.6f,%s,%.6g,%.6g,%.1f,%.3f,%s,%.6f,%s,%s\n", R->variant, R->T,
                 R->run_key, R->pr.step, R->pr.tokens, r->train_loss, vs, R->lr, R->gnorm, tps, now - R->t_start, as,
                 comm, bs, acs);
    if ((rc = csv_append(&R->csv, &R->row)) < 0) return rc;
    char cs[48] = "";   /* the progress line names the communication only when there is some */
    if (R->dp) snprintf(cs, sizeof cs, "  comm %.1f ms/step", 1e3 * comm);
    if (!R->writer) {
    } else if (o->on_tick) {
        hy_train_tick tk = {R->pr.step, R->pr.tokens, r->train_loss, R->val, R->lr, tps, now - R->t_start, fmin(frac, 1.0)};
        o->on_tick(o->tick_ctx, &tk);
    } else if (o->progress) {
        char eta[32];
        hy_format_duration(eta, sizeof eta, (now - R->t_start) * (1.0 - frac) / fmax(frac, 1e-9));
        fprintf(o->progress, "%s[%s] step %ld  loss %.4f%s%s  lr %.2e  %.0f tok/s%s  %3.0f%%  ETA %s%s",
                R->tty ? "\r\033[K" : "", R->variant, R->pr.step, r->train_loss, eval ? "  val " : "", vs, R->lr, tps,
                cs, 100 * frac, eta, R->tty && !eval ? "" : "\n");
        fflush(o->progress);
    }
    flush_lines(&R->lines, R->writer ? o->progress : NULL);
    R->pr.window_loss = 0, R->pr.window_aux = 0, R->pr.window_steps = 0, R->window_tokens = 0, R->window_comm = 0;
    R->t_window = hy_now();
    return 0;
}

/* After the last step: the final evaluation (unless the last step had one), the result, the
 * checkpoint and training state, and train.csv and the telemetry files made durable. */
static int run_finish(train_run *R, hy_train_result *r, bool stopped) {
    const hy_run_config *c = R->c;
    int rc = 0;
    R->pr.elapsed = hy_now() - R->t_start;
    if (isnan(R->val))
        rc = evaluate(R->m, &R->corpus, c, R->variant, R->pr.step, R->dp, &R->val, &R->acc, &R->bpb, &R->tm, &R->lines);
    flush_lines(&R->lines, R->writer ? R->o->progress : NULL);
    r->steps = R->pr.step, r->tokens = R->pr.tokens, r->seconds = R->pr.elapsed;
    r->val_loss = R->val, r->val_ppl = exp(R->val), r->val_bits_per_byte = R->bpb;
    r->val_accuracy = c->task.type != HY_TASK_NONE ? R->acc : NAN;
    r->interrupted = stopped;
    r->stopped_by = stopped ? HY_STOP_INTERRUPT : budget_that_ended(c, R->pr.step, R->pr.tokens);
    r->peak_bytes = hy_mem_peak() - R->mem_base;
    int64_t peak = (int64_t)r->peak_bytes;
    if (R->dp) hy_dist_allreduce(R->dp->d, &peak, 1, HY_DIST_I64, HY_DIST_MAX);
    r->peak_bytes_max = (size_t)peak, r->ranks = R->dp ? R->dp->size : 1;
    if (rc == 0 && R->dp) rc = hy_dp_check_same_params(R->dp);   /* what every step relies on */
    if (rc == 0) rc = save_all(&R->P, R->m, &R->opt, R->dp, &R->rng, &R->pr, &R->corpus);
    if (rc == 0) rc = csv_sync(&R->csv);
    if (rc == 0) rc = telemetry_sync(&R->tm);
    return rc;
}

/* Frees what run_open made. */
static void run_close(train_run *R) {
    hy_free(R->in), hy_free(R->tg);
    csv_close(&R->csv);
    hy_sb_free(&R->row), hy_sb_free(&R->lines);
    telemetry_free(&R->tm);
    hy_optim_free(&R->opt);
    if (R->dp) hy_dp_close(R->dp);
    hy_model_free(R->m);
    if (R->corpus_open) hy_data_free(&R->corpus);
}

int hy_train(const hy_run_config *c, const hy_train_opts *o, hy_train_result *r) {
    memset(r, 0, sizeof *r);
    train_run R = {.c = c, .o = o, .variant = o->variant ? o->variant : c->name, .csv.fd = -1};
    int rc = run_prepare(&R);
    if (rc < 0 || (rc = run_open(&R, r)) < 0) {
        run_close(&R);
        return rc;
    }
    bool stopped = false;
    for (;;) {
        double frac = budget_fraction(c, R.pr.step, R.pr.tokens, run_clock(&R));
        if (frac >= 1.0 || stopped) break;
        if ((rc = train_step(&R, frac)) < 0) break;
        if (o->on_step) o->on_step(o->step_ctx);
        double now = hy_now();
        frac = budget_fraction(c, R.pr.step, R.pr.tokens, R.dp ? R.clock : now - R.t_start);
        stopped = (R.dp ? R.stop_agreed : o->stop && *o->stop) ||
                  (o->stop_after > 0 && R.pr.step - R.first_step >= o->stop_after);
        bool eval = R.pr.step % c->eval_every == 0 || frac >= 1.0;   /* not at an interrupt: keeps resume exact */
        if ((R.pr.step % c->log_every == 0 || eval) && (rc = log_point(&R, r, eval, frac, now)) < 0) break;
        R.pr.elapsed = hy_now() - R.t_start;
        if (c->checkpoint_every > 0 && R.pr.step % c->checkpoint_every == 0 &&
            ((rc = save_all(&R.P, R.m, &R.opt, R.dp, &R.rng, &R.pr, &R.corpus)) < 0 || (rc = csv_sync(&R.csv)) < 0 ||
             (rc = telemetry_sync(&R.tm)) < 0))
            break;
    }
    if (R.tty) fputc('\n', o->progress);
    if (rc == 0) rc = run_finish(&R, r, stopped);
    run_close(&R);
    return rc;
}

/* The training loop. Determinism: the data stream comes from one RNG seeded by the config (saved
 * in the training state), validation uses fixed windows, and every reduction has a fixed order,
 * so the same config, seed and thread count give a bit-identical loss curve, also across resume. */
#include "experiments/train.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "core/strbuf.h"
#include "core/timer.h"
#include "models/checkpoint.h"
#include "models/optim.h"
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


/* Validation loss, bits per byte (NAN when unknown) and, for a task, accuracy on the answer
 * positions of the run's model. */
static double validate(hy_model *m, const hy_data *d, const hy_run_config *c, double *acc, double *bpb) {
    hy_eval_result e;
    if (hy_evaluate_data(m, d, c->batch_size, c->seq_len, c->eval_batches, c->seed, false, &e) < 0) return NAN;
    *acc = e.accuracy, *bpb = e.bits_per_byte;
    return e.loss;
}

const char *const HY_TRAIN_CSV_HEADER = "variant,seq_len,seed,peak_lr,step,tokens,train_loss,val_loss,lr,grad_norm,"
                                        "tokens_per_s,elapsed_s,aux_loss,val_bits_per_byte\n";
#define TRAIN_CSV_STEP_COL 4   /* 0-based column of `step` in train.csv */
#define STATS_CSV_STEP_COL 2   /* ... and in a telemetry CSV (variant,seq_len,step,layer,...) */

/* train.csv and the telemetry CSVs are kept in memory (hy_strbuf) and rewritten atomically, so they are
 * never half-written. On resume: the header, then the existing rows (step in 0-based column
 * step_col) up to and including `step`. */
static void csv_reload(hy_strbuf *t, const char *header, const char *path, int step_col, long step) {
    char *data;
    size_t len;
    hy_sb_add(t, header);
    if (hy_read_file(path, &data, &len) < 0) return;
    char *save = NULL, *line = strtok_r(data, "\n", &save);
    for (line = strtok_r(NULL, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        const char *p = line;
        for (int k = 0; k < step_col && p; k++) p = strchr(p + (k > 0), ',');
        if (!p || atol(p + 1) > step) continue;
        hy_sb_add(t, line);
        hy_sb_add(t, "\n");
    }
    hy_free(data);
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
    char path[HY_PATH_MAX + 64];
    hy_strbuf rows;             /* header and rows, rewritten atomically like train.csv */
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
 * rows up to `step`); blocks that share a file must declare the same columns. */
static int telemetry_open(telemetry *tm, hy_model *m, const char *out_dir, bool resumed, long step) {
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
        snprintf(f->path, sizeof f->path, "%s/%s", out_dir, st->file);
        char header[256];
        snprintf(header, sizeof header, "variant,seq_len,step,layer,%s\n", st->columns);
        if (resumed) csv_reload(&f->rows, header, f->path, STATS_CSV_STEP_COL, step);
        else hy_sb_add(&f->rows, header);
    }
    return 0;
}

/* Rewrites every telemetry CSV (after an evaluation and at the end). */
static int telemetry_write(telemetry *tm) {
    for (int i = 0; i < tm->n; i++) {
        int rc = hy_sb_write_file(&tm->f[i].rows, tm->f[i].path);
        if (rc < 0) return rc;
    }
    return 0;
}

/* Frees the rows of every telemetry CSV. */
static void telemetry_free(telemetry *tm) {
    for (int i = 0; i < tm->n; i++) hy_sb_free(&tm->f[i].rows);
}

/* One layer's counts since its reset: rows of its CSV, and one line into `lines` (each count's
 * share in %, and max/mean: 1 = balanced, n = everything on one item). */
static int telemetry_layer(telemetry *tm, const hy_layer *L, const char *variant, int seq_len, long step,
                           hy_strbuf *lines) {
    const hy_block_stats *st = L->ops->stats;
    stats_csv *f = telemetry_file(tm, st);
    int n = st->get(L, NULL, 0);
    int64_t *cnt = hy_malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1)), total = 0, most = 0;
    if (!f || !cnt) {
        hy_free(cnt);
        return f ? HY_ERR_NOMEM : hy_fail("%s: no telemetry file %s", L->ops->name, st->file);
    }
    st->get(L, cnt, n);
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

/* The validation loss (validate) into *val (bits per byte into *bpb) and, for every block with
 * telemetry, its counts over the validation batches: rows of its CSV and a line per layer into `lines`. */
static int evaluate(hy_model *m, const hy_data *d, const hy_run_config *c, const char *variant, long step,
                    double *val, double *acc, double *bpb, telemetry *tm, hy_strbuf *lines) {
    const int S = 2 * m->cfg.n_layers;
    for (int s = 0; s < S; s++) {
        hy_layer *L = hy_model_sub_block(m, s);
        if (L->ops && L->ops->stats) L->ops->stats->reset(L);
    }
    *val = validate(m, d, c, acc, bpb);
    for (int s = 0; s < S; s++) {
        const hy_layer *L = hy_model_sub_block(m, s);
        int rc = L->ops && L->ops->stats ? telemetry_layer(tm, L, variant, c->seq_len, step, lines) : 0;
        if (rc < 0) return rc;
    }
    return 0;
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

static int save_all(const run_paths *P, hy_model *m, hy_optim *opt, const hy_rng *rng, const run_progress *pr,
                    const hy_data *d) {
    long step = pr->step;
    const char *mk[5], *mv[5];
    char mbuf[3][64];
    int n_meta = data_meta(d, P->c->seq_len, mk, mv, mbuf);
    int rc = hy_checkpoint_save_meta(m, P->ckpt, step, n_meta, mk, mv);
    if (rc < 0) return rc;
    char rng_s[80], step_s[32], tok_s[32], el_s[32], seed_s[32], wl_s[40], ws_s[32], wa_s[40];
    snprintf(rng_s, sizeof rng_s, "%016" PRIx64 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64, rng->s[0], rng->s[1],
             rng->s[2], rng->s[3]);
    snprintf(step_s, sizeof step_s, "%ld", step);
    snprintf(tok_s, sizeof tok_s, "%.0f", pr->tokens);
    snprintf(el_s, sizeof el_s, "%.3f", pr->elapsed);
    snprintf(wl_s, sizeof wl_s, "%.17g", pr->window_loss);
    snprintf(ws_s, sizeof ws_s, "%ld", pr->window_steps);
    snprintf(wa_s, sizeof wa_s, "%.17g", pr->window_aux);
    snprintf(seed_s, sizeof seed_s, "%" PRIu64, P->c->seed);
    const char *keys[] = {"step", "optimizer", "rng", "tokens", "elapsed_s", "seed", "window_loss", "window_steps",
                          "window_aux"};
    const char *vals[] = {step_s, P->c->optimizer, rng_s, tok_s, el_s, seed_s, wl_s, ws_s, wa_s};
    const char *slot_names[] = {"optim_m", "optim_v"};
    float *slots[] = {opt->m, opt->v};
    return hy_train_state_save(P->state, m, opt->v ? 2 : 1, slot_names, slots, 9, keys, vals);
}

static int load_state(const run_paths *P, hy_model *m, hy_optim *opt, hy_rng *rng, run_progress *pr) {
    const char *slot_names[] = {"optim_m", "optim_v"};
    float *slots[] = {opt->m, opt->v};
    hy_kv_list meta;
    int rc = hy_train_state_load(P->state, m, opt->v ? 2 : 1, slot_names, slots, &meta);
    if (rc < 0) return rc;
    const char *s_step = hy_kv_get(&meta, "step"), *s_rng = hy_kv_get(&meta, "rng"),
               *s_tok = hy_kv_get(&meta, "tokens"), *s_el = hy_kv_get(&meta, "elapsed_s"),
               *s_opt = hy_kv_get(&meta, "optimizer"), *s_wl = hy_kv_get(&meta, "window_loss"),
               *s_ws = hy_kv_get(&meta, "window_steps"), *s_wa = hy_kv_get(&meta, "window_aux");
    if (!s_step || !s_rng || strlen(s_rng) != 64 || !s_tok || !s_el || !s_opt || !s_wl || !s_ws) rc = hy_fail("%s: incomplete training state", P->state);
    else if (strcmp(s_opt, P->c->optimizer) != 0)
        rc = hy_fail("%s: saved with optimizer %s, config says %s", P->state, s_opt, P->c->optimizer);
    else {
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
    hy_strbuf csv, lines;       /* train.csv, and the telemetry lines still to print */
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
} train_run;

/* Paths, process-wide settings (threads, GEMM backend and precision), the data (checked against the
 * model's vocabulary before anything is written; text is tokenized here when the config has a
 * tokenizer), then the output folder and the resolved config.yaml. */
static int run_prepare(train_run *R) {
    const hy_run_config *c = R->c;
    R->P.c = c;
    snprintf(R->P.ckpt, sizeof R->P.ckpt, "%s/checkpoint.safetensors", c->out_dir);
    snprintf(R->P.state, sizeof R->P.state, "%s/checkpoint.state.safetensors", c->out_dir);
    snprintf(R->P.csv, sizeof R->P.csv, "%s/train.csv", c->out_dir);
    hy_set_threads(c->threads);
    hy_gemm_set_backend(c->gemm);
    hy_gemm_set_precision(c->precision);
    hy_data_spec spec;
    hy_run_data_spec(c, &spec);
    spec.progress = R->o->on_tick ? NULL : R->o->progress;
    int rc = hy_data_open(&R->corpus, &spec, &c->task, c->seed);
    if (rc < 0) return rc;
    R->corpus_open = true;
    rc = hy_mkdirs(c->out_dir);
    if (rc < 0) return rc;
    char cfg_path[HY_PATH_MAX + 64];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.yaml", c->out_dir);
    return hy_run_config_write(c, cfg_path);
}

/* The data, the model and optimizer (fresh, or restored with the RNG and progress when resuming),
 * train.csv and the telemetry files so far, the batch buffers, and the run's first progress line. */
static int run_open(train_run *R, hy_train_result *r) {
    const hy_run_config *c = R->c;
    int rc;
    hy_rng_seed(&R->rng, c->seed);
    R->mem_base = hy_mem_current();
    hy_mem_reset_peak();
    if ((rc = open_model(c, &R->P, R->o->resume, &R->m, &R->pr.step)) < 0) return rc;
    hy_optim *opt = &R->opt;
    opt->weight_decay = c->weight_decay, opt->beta1 = c->beta1, opt->beta2 = c->beta2, opt->eps = c->eps;
    opt->momentum = c->momentum, opt->ssm_lr = c->ssm_lr;
    if ((rc = hy_optim_init(opt, R->m, strcmp(c->optimizer, "sgd") ? HY_OPTIM_ADAMW : HY_OPTIM_SGD)) < 0) return rc;
    R->resumed = R->pr.step > 0;
    if (R->resumed && (rc = load_state(&R->P, R->m, opt, &R->rng, &R->pr)) < 0) return rc;
    if (R->resumed) csv_reload(&R->csv, HY_TRAIN_CSV_HEADER, R->P.csv, TRAIN_CSV_STEP_COL, R->pr.step);
    else hy_sb_add(&R->csv, HY_TRAIN_CSV_HEADER);
    R->aux = has_aux_loss(R->m);
    if ((rc = telemetry_open(&R->tm, R->m, c->out_dir, R->resumed, R->pr.step)) < 0) return rc;
    R->B = c->batch_size, R->T = c->seq_len;
    R->n = (size_t)R->B * R->T;
    R->in = hy_malloc(R->n * sizeof(int32_t)), R->tg = hy_malloc(R->n * sizeof(int32_t));
    if (!R->in || !R->tg) return HY_ERR_NOMEM;
    r->params = hy_model_param_count(R->m);
    char data_desc[160];
    hy_data_describe(&R->corpus, data_desc, sizeof data_desc);
    if (R->o->progress && !R->o->on_tick)
        fprintf(R->o->progress, "[%s] %zu parameters, %s, batch %d x %d, %s%s\n", R->variant, r->params, data_desc,
                R->B, R->T, c->optimizer, R->resumed ? ", resumed" : "");
    R->t_start = hy_now() - R->pr.elapsed, R->t_window = hy_now();
    R->val = NAN, R->lr = c->lr, R->gnorm = 0, R->acc = NAN, R->bpb = NAN;
    R->first_step = R->pr.step;
    snprintf(R->run_key, sizeof R->run_key, "%llu,%g", (unsigned long long)c->seed, c->lr);
    R->tty = R->o->progress && !R->o->on_tick && isatty(fileno(R->o->progress));
    if (!R->resumed) {   /* row 0: the untrained model's validation loss */
        if ((rc = evaluate(R->m, &R->corpus, c, R->variant, 0, &R->val, &R->acc, &R->bpb, &R->tm, &R->lines)) < 0)
            return rc;
        char bs[32] = "";
        if (isfinite(R->bpb)) snprintf(bs, sizeof bs, "%.6f", R->bpb);
        hy_sb_printf(&R->csv, "%s,%d,%s,0,0,,%.6f,,,,0.000,,%s\n", R->variant, R->T, R->run_key, R->val, bs);
        flush_lines(&R->lines, R->o->progress);
    }
    return 0;
}

/* One optimizer step on the next training batch (frac: the budget used so far, for the lr
 * schedule); adds its loss to the logging window. A non-finite loss stops the run. */
static int train_step(train_run *R, double frac) {
    const hy_run_config *c = R->c;
    int rc;
    if ((rc = hy_data_batch(&R->corpus, 0, &R->rng, R->B, R->T, R->in, R->tg)) < 0) return rc;
    hy_loss loss;
    if ((rc = hy_model_forward(R->m, R->in, R->tg, R->B, R->T, true, &loss)) < 0) return rc;
    hy_model_zero_grad(R->m);
    if ((rc = hy_model_backward(R->m)) < 0) return rc;
    if (!isfinite(loss.loss))
        return hy_fail("step %ld: the loss is %f; lower train.lr or raise train.warmup_steps", R->pr.step + 1, loss.loss);
    R->gnorm = hy_clip_grad_norm(R->m, c->grad_clip);
    R->lr = hy_lr_schedule(R->pr.step, c->warmup_steps, schedule_progress(c, R->pr.step, frac), c->lr, c->min_lr);
    hy_optim_step(&R->opt, R->m, R->lr);
    R->pr.step++;
    R->pr.tokens += (double)R->n;
    R->pr.window_loss += loss.loss, R->pr.window_aux += loss.aux_loss, R->pr.window_steps++;
    R->window_tokens += (long)R->n;
    return 0;
}

/* A logging point: evaluates when `eval`, appends the train.csv row, reports progress (the
 * caller's tick or the progress line), prints the telemetry lines, starts a new window, and at an
 * evaluation rewrites train.csv and the telemetry files. */
static int log_point(train_run *R, hy_train_result *r, bool eval, double frac, double now) {
    const hy_run_config *c = R->c;
    const hy_train_opts *o = R->o;
    int rc;
    double tps = R->window_tokens / fmax(now - R->t_window, 1e-9);
    R->val = NAN, R->bpb = NAN;
    char vs[32] = "", bs[32] = "";
    if (eval) {
        if ((rc = evaluate(R->m, &R->corpus, c, R->variant, R->pr.step, &R->val, &R->acc, &R->bpb, &R->tm, &R->lines)) < 0)
            return rc;
        snprintf(vs, sizeof vs, "%.6f", R->val);
        if (isfinite(R->bpb)) snprintf(bs, sizeof bs, "%.6f", R->bpb);
    }
    r->train_loss = R->pr.window_loss / R->pr.window_steps;
    r->tokens_per_s = tps;
    char as[32] = "";   /* aux_loss: empty for a model without a block that adds one */
    if (R->aux) snprintf(as, sizeof as, "%.6f", R->pr.window_aux / R->pr.window_steps);
    hy_sb_printf(&R->csv, "%s,%d,%s,%ld,%.0f,%.6f,%s,%.6g,%.6g,%.1f,%.3f,%s,%s\n", R->variant, R->T, R->run_key,
                 R->pr.step, R->pr.tokens, r->train_loss, vs, R->lr, R->gnorm, tps, now - R->t_start, as, bs);
    if (o->on_tick) {
        hy_train_tick tk = {R->pr.step, R->pr.tokens, r->train_loss, R->val, R->lr, tps, now - R->t_start, fmin(frac, 1.0)};
        o->on_tick(o->tick_ctx, &tk);
    } else if (o->progress) {
        char eta[32];
        hy_format_duration(eta, sizeof eta, (now - R->t_start) * (1.0 - frac) / fmax(frac, 1e-9));
        fprintf(o->progress, "%s[%s] step %ld  loss %.4f%s%s  lr %.2e  %.0f tok/s  %3.0f%%  ETA %s%s",
                R->tty ? "\r\033[K" : "", R->variant, R->pr.step, r->train_loss, eval ? "  val " : "", vs, R->lr, tps,
                100 * frac, eta, R->tty && !eval ? "" : "\n");
        fflush(o->progress);
    }
    flush_lines(&R->lines, o->progress);
    R->pr.window_loss = 0, R->pr.window_aux = 0, R->pr.window_steps = 0, R->window_tokens = 0;
    R->t_window = hy_now();
    if (eval && (rc = hy_sb_write_file(&R->csv, R->P.csv)) < 0) return rc;
    if (eval && (rc = telemetry_write(&R->tm)) < 0) return rc;
    return 0;
}

/* After the last step: the final evaluation (unless the last step had one), the result, and the
 * checkpoint, training state, train.csv and telemetry files. */
static int run_finish(train_run *R, hy_train_result *r, bool stopped) {
    const hy_run_config *c = R->c;
    int rc = 0;
    R->pr.elapsed = hy_now() - R->t_start;
    if (isnan(R->val))
        rc = evaluate(R->m, &R->corpus, c, R->variant, R->pr.step, &R->val, &R->acc, &R->bpb, &R->tm, &R->lines);
    flush_lines(&R->lines, R->o->progress);
    r->steps = R->pr.step, r->tokens = R->pr.tokens, r->seconds = R->pr.elapsed;
    r->val_loss = R->val, r->val_ppl = exp(R->val), r->val_bits_per_byte = R->bpb;
    r->val_accuracy = c->task.type != HY_TASK_NONE ? R->acc : NAN;
    r->interrupted = stopped;
    r->stopped_by = stopped ? HY_STOP_INTERRUPT : budget_that_ended(c, R->pr.step, R->pr.tokens);
    r->peak_bytes = hy_mem_peak() - R->mem_base;
    if (rc == 0) rc = save_all(&R->P, R->m, &R->opt, &R->rng, &R->pr, &R->corpus);
    if (rc == 0) rc = hy_sb_write_file(&R->csv, R->P.csv);
    if (rc == 0) rc = telemetry_write(&R->tm);
    return rc;
}

/* Frees what run_open made. */
static void run_close(train_run *R) {
    hy_free(R->in), hy_free(R->tg);
    hy_sb_free(&R->csv), hy_sb_free(&R->lines);
    telemetry_free(&R->tm);
    hy_optim_free(&R->opt);
    hy_model_free(R->m);
    if (R->corpus_open) hy_data_free(&R->corpus);
}

int hy_train(const hy_run_config *c, const hy_train_opts *o, hy_train_result *r) {
    memset(r, 0, sizeof *r);
    train_run R = {.c = c, .o = o, .variant = o->variant ? o->variant : c->name};
    int rc = run_prepare(&R);
    if (rc < 0 || (rc = run_open(&R, r)) < 0) {
        run_close(&R);
        return rc;
    }
    bool stopped = false;
    for (;;) {
        double frac = budget_fraction(c, R.pr.step, R.pr.tokens, hy_now() - R.t_start);
        if (frac >= 1.0 || stopped) break;
        if ((rc = train_step(&R, frac)) < 0) break;
        double now = hy_now();
        frac = budget_fraction(c, R.pr.step, R.pr.tokens, now - R.t_start);
        stopped = (o->stop && *o->stop) || (o->stop_after > 0 && R.pr.step - R.first_step >= o->stop_after);
        bool eval = R.pr.step % c->eval_every == 0 || frac >= 1.0;   /* not at an interrupt: keeps resume exact */
        if ((R.pr.step % c->log_every == 0 || eval) && (rc = log_point(&R, r, eval, frac, now)) < 0) break;
        R.pr.elapsed = hy_now() - R.t_start;
        if (c->checkpoint_every > 0 && R.pr.step % c->checkpoint_every == 0 &&
            (rc = save_all(&R.P, R.m, &R.opt, &R.rng, &R.pr, &R.corpus)) < 0)
            break;
    }
    if (R.tty) fputc('\n', o->progress);
    if (rc == 0) rc = run_finish(&R, r, stopped);
    run_close(&R);
    return rc;
}

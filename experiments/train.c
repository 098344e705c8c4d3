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


/* Validation loss (and, for a task, accuracy on the answer positions) of the run's model. */
static double validate(hy_model *m, const hy_data *d, const hy_run_config *c, double *acc) {
    hy_eval_result e;
    if (hy_evaluate_data(m, d, c->batch_size, c->seq_len, c->eval_batches, c->seed, false, &e) < 0) return NAN;
    *acc = e.accuracy;
    return e.loss;
}

const char *const HY_TRAIN_CSV_HEADER =
    "variant,seq_len,seed,peak_lr,step,tokens,train_loss,val_loss,lr,grad_norm,tokens_per_s,elapsed_s,aux_loss\n";
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

/* The validation loss (validate) into *val and, for every block with telemetry, its counts over
 * the validation batches: rows of its CSV and a line per layer into `lines`. */
static int evaluate(hy_model *m, const hy_data *d, const hy_run_config *c, const char *variant, long step,
                    double *val, double *acc, telemetry *tm, hy_strbuf *lines) {
    const int S = 2 * m->cfg.n_layers;
    for (int s = 0; s < S; s++) {
        hy_layer *L = hy_model_sub_block(m, s);
        if (L->ops && L->ops->stats) L->ops->stats->reset(L);
    }
    *val = validate(m, d, c, acc);
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

static int save_all(const run_paths *P, hy_model *m, hy_optim *opt, const hy_rng *rng, const run_progress *pr) {
    long step = pr->step;
    int rc = hy_checkpoint_save(m, P->ckpt, step);
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

int hy_train(const hy_run_config *c, const hy_train_opts *o, hy_train_result *r) {
    memset(r, 0, sizeof *r);
    run_paths P = {.c = c};
    snprintf(P.ckpt, sizeof P.ckpt, "%s/checkpoint.safetensors", c->out_dir);
    snprintf(P.state, sizeof P.state, "%s/checkpoint.state.safetensors", c->out_dir);
    snprintf(P.csv, sizeof P.csv, "%s/train.csv", c->out_dir);
    const char *variant = o->variant ? o->variant : c->name;
    hy_set_threads(c->threads);
    hy_gemm_set_backend(c->gemm);
    hy_gemm_set_precision(c->precision);
    int rc = hy_mkdirs(c->out_dir);
    if (rc < 0) return rc;
    char cfg_path[HY_PATH_MAX + 64];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.yaml", c->out_dir);
    if ((rc = hy_run_config_write(c, cfg_path)) < 0) return rc;

    hy_data corpus;   /* a byte corpus or a synthetic task */
    if ((rc = hy_data_open(&corpus, c->corpus, c->val_fraction, &c->task, c->seed)) < 0) return rc;
    hy_model *m = NULL;
    hy_optim opt = {0};
    hy_strbuf csv = {0}, lines = {0};
    telemetry tm = {0};
    int32_t *in = NULL, *tg = NULL;
    run_progress pr = {0};
    hy_rng rng;
    hy_rng_seed(&rng, c->seed);
    size_t mem_base = hy_mem_current();
    hy_mem_reset_peak();
    if ((rc = open_model(c, &P, o->resume, &m, &pr.step)) < 0) goto done;
    opt.weight_decay = c->weight_decay, opt.beta1 = c->beta1, opt.beta2 = c->beta2, opt.eps = c->eps;
    opt.momentum = c->momentum, opt.ssm_lr = c->ssm_lr;
    if ((rc = hy_optim_init(&opt, m, strcmp(c->optimizer, "sgd") ? HY_OPTIM_ADAMW : HY_OPTIM_SGD)) < 0) goto done;
    bool resumed = pr.step > 0;
    if (resumed && (rc = load_state(&P, m, &opt, &rng, &pr)) < 0) goto done;
    if (resumed) csv_reload(&csv, HY_TRAIN_CSV_HEADER, P.csv, TRAIN_CSV_STEP_COL, pr.step);
    else hy_sb_add(&csv, HY_TRAIN_CSV_HEADER);
    bool aux = has_aux_loss(m);
    if ((rc = telemetry_open(&tm, m, c->out_dir, resumed, pr.step)) < 0) goto done;

    int B = c->batch_size, T = c->seq_len;
    size_t n = (size_t)B * T;
    in = hy_malloc(n * sizeof(int32_t)), tg = hy_malloc(n * sizeof(int32_t));
    if (!in || !tg) {
        rc = HY_ERR_NOMEM;
        goto done;
    }
    r->params = hy_model_param_count(m);
    char data_desc[160];
    hy_data_describe(&corpus, data_desc, sizeof data_desc);
    if (o->progress && !o->on_tick)
        fprintf(o->progress, "[%s] %zu parameters, %s, batch %d x %d, %s%s\n", variant, r->params, data_desc, B, T,
                c->optimizer, resumed ? ", resumed" : "");
    double t_start = hy_now() - pr.elapsed, t_window = hy_now(), val = NAN, lr = c->lr, gnorm = 0, acc = NAN;
    long window_tokens = 0, first_step = pr.step;
    char run_key[80];   /* the seed and peak_lr columns */
    snprintf(run_key, sizeof run_key, "%llu,%g", (unsigned long long)c->seed, c->lr);
    if (!resumed) {
        if ((rc = evaluate(m, &corpus, c, variant, 0, &val, &acc, &tm, &lines)) < 0) goto done;
        hy_sb_printf(&csv, "%s,%d,%s,0,0,,%.6f,,,,0.000,\n", variant, T, run_key, val);
        flush_lines(&lines, o->progress);
    }
    int tty = o->progress && !o->on_tick && isatty(fileno(o->progress));
    bool stopped = false;
    for (;;) {
        double frac = budget_fraction(c, pr.step, pr.tokens, hy_now() - t_start);
        if (frac >= 1.0 || stopped) break;
        if ((rc = hy_data_batch(&corpus, 0, &rng, B, T, in, tg)) < 0) break;
        hy_loss loss;
        if ((rc = hy_model_forward(m, in, tg, B, T, true, &loss)) < 0) break;
        hy_model_zero_grad(m);
        if ((rc = hy_model_backward(m)) < 0) break;
        if (!isfinite(loss.loss)) {
            rc = hy_fail("step %ld: the loss is %f; lower train.lr or raise train.warmup_steps", pr.step + 1,
                         loss.loss);
            break;
        }
        gnorm = hy_clip_grad_norm(m, c->grad_clip);
        lr = hy_lr_schedule(pr.step, c->warmup_steps, schedule_progress(c, pr.step, frac), c->lr, c->min_lr);
        hy_optim_step(&opt, m, lr);
        pr.step++;
        pr.tokens += (double)n;
        pr.window_loss += loss.loss, pr.window_aux += loss.aux_loss, pr.window_steps++, window_tokens += (long)n;
        double now = hy_now();
        frac = budget_fraction(c, pr.step, pr.tokens, now - t_start);
        stopped = (o->stop && *o->stop) || (o->stop_after > 0 && pr.step - first_step >= o->stop_after);
        bool eval = pr.step % c->eval_every == 0 || frac >= 1.0;   /* not at an interrupt: keeps resume exact */
        if (pr.step % c->log_every == 0 || eval) {
            double tps = window_tokens / fmax(now - t_window, 1e-9);
            val = NAN;
            char vs[32] = "";
            if (eval) {
                if ((rc = evaluate(m, &corpus, c, variant, pr.step, &val, &acc, &tm, &lines)) < 0) break;
                snprintf(vs, sizeof vs, "%.6f", val);
            }
            r->train_loss = pr.window_loss / pr.window_steps;
            r->tokens_per_s = tps;
            char as[32] = "";   /* aux_loss: empty for a model without a block that adds one */
            if (aux) snprintf(as, sizeof as, "%.6f", pr.window_aux / pr.window_steps);
            hy_sb_printf(&csv, "%s,%d,%s,%ld,%.0f,%.6f,%s,%.6g,%.6g,%.1f,%.3f,%s\n", variant, T, run_key, pr.step,
                         pr.tokens, r->train_loss, vs, lr, gnorm, tps, now - t_start, as);
            if (o->on_tick) {
                hy_train_tick tk = {pr.step, pr.tokens, r->train_loss, val, lr, tps, now - t_start, fmin(frac, 1.0)};
                o->on_tick(o->tick_ctx, &tk);
            } else if (o->progress) {
                char eta[32];
                hy_format_duration(eta, sizeof eta, (now - t_start) * (1.0 - frac) / fmax(frac, 1e-9));
                fprintf(o->progress, "%s[%s] step %ld  loss %.4f%s%s  lr %.2e  %.0f tok/s  %3.0f%%  ETA %s%s",
                        tty ? "\r\033[K" : "", variant, pr.step, r->train_loss, eval ? "  val " : "", vs, lr, tps,
                        100 * frac, eta, tty && !eval ? "" : "\n");
                fflush(o->progress);
            }
            flush_lines(&lines, o->progress);
            pr.window_loss = 0, pr.window_aux = 0, pr.window_steps = 0, window_tokens = 0;
            t_window = hy_now();
            if (eval && (rc = hy_sb_write_file(&csv, P.csv)) < 0) break;
            if (eval && (rc = telemetry_write(&tm)) < 0) break;
        }
        pr.elapsed = hy_now() - t_start;
        if (c->checkpoint_every > 0 && pr.step % c->checkpoint_every == 0 &&
            (rc = save_all(&P, m, &opt, &rng, &pr)) < 0)
            break;
    }
    if (tty) fputc('\n', o->progress);
    if (rc == 0) {
        pr.elapsed = hy_now() - t_start;
        if (isnan(val)) rc = evaluate(m, &corpus, c, variant, pr.step, &val, &acc, &tm, &lines);
        flush_lines(&lines, o->progress);
        r->steps = pr.step, r->tokens = pr.tokens, r->seconds = pr.elapsed;
        r->val_loss = val, r->val_ppl = exp(val), r->val_bits_per_byte = val / log(2.0);
        r->val_accuracy = c->task.type != HY_TASK_NONE ? acc : NAN;
        r->interrupted = stopped;
        r->stopped_by = stopped ? HY_STOP_INTERRUPT : budget_that_ended(c, pr.step, pr.tokens);
        r->peak_bytes = hy_mem_peak() - mem_base;
        if (rc == 0) rc = save_all(&P, m, &opt, &rng, &pr);
        if (rc == 0) rc = hy_sb_write_file(&csv, P.csv);
        if (rc == 0) rc = telemetry_write(&tm);
    }
done:
    hy_free(in), hy_free(tg);
    hy_sb_free(&csv), hy_sb_free(&lines);
    telemetry_free(&tm);
    hy_optim_free(&opt);
    hy_model_free(m);
    hy_data_free(&corpus);
    return rc;
}

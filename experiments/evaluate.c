/* Evaluation of a model on data (declared in tasks.h): the trainer's validation on random
 * windows, the experiments' common evaluation on windows laid end to end, and the scoring of a
 * whole stream (`hybrid-exp eval`), each through the parallel forward or the streaming step,
 * with the text bytes of the scored targets counted for bits per byte. */
#include "core/error.h"
#include "core/mem.h"
#include "core/timer.h"
#include "experiments/tasks.h"
#include "models/model.h"
#include <math.h>
#include <string.h>

#define EVAL_SEED_SALT 0x5eed5eed5eedull   /* validation windows: the same for every call with one seed */

/* The cross-entropy of one row of logits against label (log-sum-exp minus the label's logit, in
 * double), and whether the argmax is the label. */
static double row_loss(const float *z, int V, int32_t label, bool *right) {
    int best = 0;
    for (int v = 1; v < V; v++) best = z[v] > z[best] ? v : best;
    float mx = z[best];
    double s = 0;
    for (int v = 0; v < V; v++) s += exp((double)(z[v] - mx));
    if (right) *right = best == label;
    return mx + log(s) - z[label];
}

/* Bits per byte from the summed loss (nats) and the bytes of the targets: exactly loss / ln 2 per
 * token for text bytes. */
static void finish(hy_eval_result *r, const hy_corpus *c, double total) {
    r->loss = r->labels ? total / (double)r->labels : NAN;
    if (c && !c->tokens) r->bytes = (double)r->labels, r->bits_per_byte = r->loss / log(2.0);
    else r->bits_per_byte = c && r->bytes > 0 ? total / log(2.0) / r->bytes : NAN;
    if (!c) r->bytes = NAN;
}

/* One batch through the streaming path: B sequences, one token per step. On one thread: a step is
 * too small to share, and a parallel region per step costs more than the step on a busy machine
 * (measured: 50x slower with 2 threads on 2 loaded cores). loss[b*T+t] gets each position's
 * cross-entropy (labels < 0: 0), right[] whether its argmax was the label. */
static int stream_batch(hy_model *m, const int32_t *in, const int32_t *tg, int B, int T, double *loss, bool *right) {
    int V = m->cfg.vocab_size, threads = hy_threads();
    hy_set_threads(1);
    hy_model_state *st = NULL;
    int32_t *tok = hy_malloc((size_t)B * sizeof(int32_t));
    float *z = hy_malloc((size_t)B * V * sizeof(float));
    int rc = tok && z ? hy_model_state_new(m, B, &st) : HY_ERR_NOMEM;
    for (int t = 0; t < T && rc == 0; t++) {
        for (int b = 0; b < B; b++) tok[b] = in[(size_t)b * T + t];
        if ((rc = hy_model_step(m, st, tok, z)) < 0) break;
        for (int b = 0; b < B; b++) {
            size_t p = (size_t)b * T + t;
            loss[p] = tg[p] < 0 ? 0 : row_loss(z + (size_t)b * V, V, tg[p], &right[p]);
        }
    }
    if (st) hy_model_state_free(m, st);
    hy_free(tok), hy_free(z);
    hy_set_threads(threads);
    return rc;
}

/* Scores B x T positions (inputs in, labels tg; label < 0 not scored) through the parallel
 * forward or the streaming step into loss[] and right[] (rows in parallel; the caller sums them
 * in order, so the result does not depend on the thread count). */
static int score_batch(hy_model *m, const int32_t *in, const int32_t *tg, int B, int T, bool streaming, double *loss,
                       bool *right) {
    if (streaming) return stream_batch(m, in, tg, B, T, loss, right);
    hy_loss l;
    int rc = hy_model_forward(m, in, tg, B, T, false, &l);
    if (rc < 0) return rc;
    const float *z = hy_model_logits(m);
    const int V = m->cfg.vocab_size;
    const long n = (long)B * T;
#pragma omp parallel for schedule(static)
    for (long p = 0; p < n; p++) loss[p] = tg[p] < 0 ? 0 : row_loss(z + (size_t)p * V, V, tg[p], &right[p]);
    return 0;
}

int hy_evaluate_data_rows(hy_model *m, const hy_data *d, int B, int T, long n_batches, uint64_t seed, bool streaming,
                          int row_lo, int row_hi, hy_eval_sums *s) {
    int rows = row_hi - row_lo;
    memset(s, 0, sizeof *s);
    if (row_lo < 0 || row_hi > B || rows < 1) return hy_fail("evaluation rows [%d, %d) of a batch of %d", row_lo, row_hi, B);
    size_t n = (size_t)B * T, rn = (size_t)rows * T;
    int32_t *in = hy_malloc(n * sizeof(int32_t)), *tg = hy_malloc(n * sizeof(int32_t));
    double *loss = hy_malloc(rn * sizeof(double));
    bool *right = hy_malloc(rn * sizeof(bool));
    const hy_corpus *c = d->task.type == HY_TASK_NONE ? &d->corpus : NULL;
    int rc = in && tg && loss && right ? 0 : HY_ERR_NOMEM;
    hy_rng rng;
    hy_rng_seed(&rng, seed ^ EVAL_SEED_SALT);
    const int32_t *rin = in + (size_t)row_lo * T, *rtg = tg + (size_t)row_lo * T;
    for (long i = 0; i < n_batches && rc == 0; i++) {   /* every rank draws the whole batch: the same windows */
        if ((rc = hy_data_batch(d, 1, &rng, B, T, in, tg)) < 0) break;
        if ((rc = score_batch(m, rin, rtg, rows, T, streaming, loss, right)) < 0) break;
        for (size_t p = 0; p < rn; p++) {
            if (rtg[p] < 0) continue;
            s->loss_sum += loss[p], s->right += right[p], s->labels++;
            s->bytes += c ? hy_corpus_token_bytes(c, rtg[p]) : NAN;
        }
    }
    hy_free(in), hy_free(tg), hy_free(loss), hy_free(right);
    return rc;
}

void hy_eval_from_sums(const hy_data *d, const hy_eval_sums *s, hy_eval_result *r) {
    memset(r, 0, sizeof *r);
    r->labels = s->labels, r->bytes = s->bytes;
    finish(r, d->task.type == HY_TASK_NONE ? &d->corpus : NULL, s->loss_sum);
    r->accuracy = s->labels ? (double)s->right / s->labels : NAN;
}

int hy_evaluate_data(hy_model *m, const hy_data *d, int B, int T, long n_batches, uint64_t seed, bool streaming,
                     hy_eval_result *r) {
    hy_eval_sums s;
    int rc = hy_evaluate_data_rows(m, d, B, T, n_batches, seed, streaming, 0, B, &s);
    if (rc < 0) {
        memset(r, 0, sizeof *r);
        return rc;
    }
    hy_eval_from_sums(d, &s, r);
    return 0;
}

/* Scores windows of stream s laid end to end from position 0: n_windows of T+1 tokens (window w
 * predicts tokens wT+1 .. wT+T), then with tail > 0 one window of tail+1 tokens after them. Sums
 * the loss into *total, the positions and target bytes into r, and per position into pos_sum /
 * pos_n (NULL or T values). */
static int score_windows(hy_model *m, const hy_corpus *c, const hy_token_stream *s, int T, long n_windows, int tail,
                         bool streaming, double *total, hy_eval_result *r, double *pos_sum, long *pos_n) {
    int B = (int)fmin((double)(n_windows > 0 ? n_windows : 1), fmax(1.0, 16384.0 / T));
    size_t n = (size_t)B * T;
    int32_t *w = hy_malloc(((size_t)T + 1) * sizeof(int32_t));
    int32_t *in = hy_malloc(n * sizeof(int32_t)), *tg = hy_malloc(n * sizeof(int32_t));
    double *loss = hy_malloc(n * sizeof(double));
    bool *right = hy_malloc(n * sizeof(bool));
    int rc = w && in && tg && loss && right ? 0 : HY_ERR_NOMEM;
    for (long w0 = 0; rc == 0 && w0 < n_windows + (tail > 0);) {
        bool last = w0 >= n_windows;   /* the tail window, alone, after the full ones */
        int b_now = last ? 1 : (int)fmin(B, (double)(n_windows - w0)), len = last ? tail : T;
        for (int b = 0; b < b_now; b++) {
            hy_stream_read(s, (size_t)(w0 + b) * T, (size_t)len + 1, w);
            memcpy(in + (size_t)b * len, w, (size_t)len * sizeof(int32_t));
            memcpy(tg + (size_t)b * len, w + 1, (size_t)len * sizeof(int32_t));
        }
        if ((rc = score_batch(m, in, tg, b_now, len, streaming, loss, right)) < 0) break;
        for (int b = 0; b < b_now; b++)
            for (int t = 0; t < len; t++) {
                size_t p = (size_t)b * len + t;
                *total += loss[p];
                r->bytes += hy_corpus_token_bytes(c, tg[p]);
                if (pos_sum) pos_sum[t] += loss[p];
                if (pos_n) pos_n[t]++;
            }
        r->labels += (long)b_now * len;
        w0 += b_now;
    }
    hy_free(w), hy_free(in), hy_free(tg), hy_free(loss), hy_free(right);
    return rc;
}

int hy_evaluate_corpus_windows(hy_model *m, const hy_corpus *c, int T, long n_tokens, double *pos_loss,
                               hy_eval_result *r) {
    memset(r, 0, sizeof *r);
    const hy_token_stream *s = &c->split[1];
    if (s->len < (size_t)T + 1)
        return hy_fail("evaluation at length %d: the validation split has %zu %s, fewer than %d", T, s->len,
                       c->tokens ? "tokens" : "bytes", T + 1);
    long n_windows = n_tokens / T;
    if ((size_t)n_windows > (s->len - 1) / (size_t)T) n_windows = (long)((s->len - 1) / (size_t)T);
    if (n_windows < 1) n_windows = 1;
    double *sum = pos_loss ? hy_calloc((size_t)T * sizeof(double)) : NULL, total = 0;
    int rc = pos_loss && !sum ? HY_ERR_NOMEM : score_windows(m, c, s, T, n_windows, 0, false, &total, r, sum, NULL);
    if (rc == 0) {
        for (int t = 0; pos_loss && t < T; t++) pos_loss[t] = sum[t] / (double)n_windows;
        finish(r, c, total);
        r->accuracy = NAN;
    }
    hy_free(sum);
    return rc;
}

int hy_evaluate_stream(hy_model *m, const hy_corpus *c, int split, int T, bool streaming, double *pos_loss,
                       long *pos_count, hy_eval_result *r) {
    memset(r, 0, sizeof *r);
    const hy_token_stream *s = &c->split[split];
    if (s->len < 2) return hy_fail("evaluation: %zu %s, nothing to predict", s->len, c->tokens ? "tokens" : "bytes");
    long n_windows = (long)((s->len - 1) / (size_t)T);
    int tail = (int)((s->len - 1) % (size_t)T);
    double *sum = pos_loss ? hy_calloc((size_t)T * sizeof(double)) : NULL, total = 0;
    long *cnt = hy_calloc((size_t)T * sizeof(long));
    int rc = (pos_loss && !sum) || !cnt ? HY_ERR_NOMEM
                                        : score_windows(m, c, s, T, n_windows, tail, streaming, &total, r, sum, cnt);
    if (rc == 0) {
        for (int t = 0; t < T; t++) {
            if (pos_loss) pos_loss[t] = cnt[t] ? sum[t] / (double)cnt[t] : NAN;
            if (pos_count) pos_count[t] = cnt[t];
        }
        finish(r, c, total);
        r->accuracy = NAN;
    }
    hy_free(sum), hy_free(cnt);
    return rc;
}

long hy_corpus_tokens_for_bytes(const hy_corpus *c, long bytes) {
    const hy_token_stream *s = &c->split[1];
    if (!c->tokens || !c->token_bytes) return bytes;
    enum { PIECE = 4096 };
    int32_t buf[PIECE];
    double covered = 0;
    for (size_t at = 0; at < s->len; at += PIECE) {
        size_t k = s->len - at < PIECE ? s->len - at : PIECE;
        hy_stream_read(s, at, k, buf);
        for (size_t i = 0; i < k; i++) {
            covered += hy_corpus_token_bytes(c, buf[i]);
            if (covered >= (double)bytes) return (long)(at + i + 1);
        }
    }
    return (long)s->len;
}

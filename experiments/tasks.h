/* Synthetic tasks, generated in C from a seed (no files): multi-query associative recall (Zoology's
 * MQAR), selective copying (Mamba) and induction heads (Mamba). Each example is one sequence of
 * T inputs and T targets where only the answer positions carry a label (target >= 0); every
 * other target is -1, which the model's cross-entropy ignores, so loss and accuracy count only
 * the answers. Also the data source the trainer draws from: a byte corpus or a task. */
#ifndef HY_EXPERIMENTS_TASKS_H
#define HY_EXPERIMENTS_TASKS_H
#include "core/rng.h"
#include "experiments/data.h"
#include "hybrid.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { HY_TASK_NONE = 0, HY_TASK_MQAR, HY_TASK_SELECTIVE_COPY, HY_TASK_INDUCTION } hy_task_type;

#define HY_TASK_MAX_EVAL 16

typedef struct {
    hy_task_type type;
    int vocab;             /* token ids 0..vocab-1 (mqar 64, selective_copy 16, induction 16) */
    int num_kv_pairs;      /* mqar: K key-value pairs (8); 0 = auto: seq_len / 16, Zoology's pairing */
    double power_a;        /* mqar: query gaps ~ a * g^(a-1) (0.01, as Zoology) */
    int n_tokens;          /* selective_copy: tokens to copy (16) */
    long examples;         /* distinct training examples (0 = a fresh example every time) */
    int n_eval;            /* extra evaluation lengths (induction: longer than training) */
    bool eval_streaming;   /* final evaluation token by token through the streaming step */
    int eval_seq_len[HY_TASK_MAX_EVAL];
} hy_task_config;

/* Defaults of `type` (vocab etc.); n_eval = 0. */
void hy_task_defaults(hy_task_type type, hy_task_config *t);
const char *hy_task_name(hy_task_type type);
/* Whether the task can make sequences of T tokens for a model of vocab_size: 0, or negative with
 * a message (without location) in msg. */
int hy_task_check(const hy_task_config *t, int T, int vocab_size, char *msg, size_t len);

/* mqar's K at sequence length T: num_kv_pairs, or T / 16 (at least 1) when it is auto (0). */
int hy_task_kv_pairs(const hy_task_config *t, int T);
/* One example of T positions from `seed`: in[t] the input, tg[t] the label for position t
 * (the token that must follow in[t]) or -1. Deterministic in (config, seed, T). */
int hy_task_example(const hy_task_config *t, uint64_t seed, int T, int32_t *in, int32_t *tg);
/* B examples. Training (split 0) draws one of `examples` fixed examples (or a fresh one);
 * validation (split 1) draws fresh examples from another seed stream. */
int hy_task_batch(const hy_task_config *t, uint64_t seed, int split, hy_rng *rng, int B, int T, int32_t *in,
                  int32_t *tg);

/* What the trainer reads: a corpus (text bytes or tokens), or a task. */
typedef struct {
    hy_task_config task;   /* type NONE = corpus */
    hy_corpus corpus;
    uint64_t seed;
} hy_data;

/* The task, or the corpus of spec (hy_corpus_open). */
int hy_data_open(hy_data *d, const hy_data_spec *spec, const hy_task_config *task, uint64_t seed);
void hy_data_free(hy_data *d);
int hy_data_batch(const hy_data *d, int split, hy_rng *rng, int B, int T, int32_t *in, int32_t *tg);
/* One line for the progress header: "corpus N bytes (F files)", "tokens N (...)" or "task mqar (vocab 64, ...)". */
void hy_data_describe(const hy_data *d, char *out, size_t len);

/* ---- evaluation (evaluate.c) ----
 * loss: mean cross-entropy over the scored positions (nats per token); bytes: the text bytes of
 * their targets (the corpus' count per token: 1 for text bytes, the tokenizer's for tokens; NAN
 * for a task or tokens without a tokenizer); bits_per_byte = loss x positions / ln 2 / bytes
 * (= loss / ln 2 for text bytes exactly); accuracy: the fraction whose argmax is the label. */
typedef struct {
    double loss, accuracy;
    long labels;
    double bytes, bits_per_byte;
} hy_eval_result;

/* Validation of a model over n_batches fixed batches of the validation split (random windows,
 * the same for every call with one seed). streaming: through hy_model_step one token at a time
 * (the recurrent form: constant memory in T for SSMs) instead of the parallel forward. */
int hy_evaluate_data(hy_model *m, const hy_data *d, int B, int T, long n_batches, uint64_t seed, bool streaming,
                     hy_eval_result *r);
/* The same batches, scored on rows [row_lo, row_hi) of each only, as sums (a batch split over
 * processes adds every part's sums; hy_evaluate_data is rows [0, B)). */
typedef struct {
    double loss_sum;   /* cross-entropy summed over the labelled positions */
    long labels, right;
    double bytes;      /* the text bytes of their targets (NAN when unknown) */
} hy_eval_sums;
int hy_evaluate_data_rows(hy_model *m, const hy_data *d, int B, int T, long n_batches, uint64_t seed, bool streaming,
                          int row_lo, int row_hi, hy_eval_sums *s);
/* loss, accuracy and bits per byte of summed scores (the parts of a batch added up), for the
 * data d they were scored on. */
void hy_eval_from_sums(const hy_data *d, const hy_eval_sums *s, hy_eval_result *r);
/* The common evaluation of a corpus model: windows of T+1 tokens laid end to end from the start of
 * the validation split, over its first n_tokens tokens (n_tokens / T windows, at least one; fewer
 * when the split is shorter), so that every model, seed and length is scored on the same text.
 * accuracy NAN; pos_loss (NULL or T values) = the mean cross-entropy at each position of the
 * window, whose mean over positions is r->loss. */
int hy_evaluate_corpus_windows(hy_model *m, const hy_corpus *c, int T, long n_tokens, double *pos_loss,
                               hy_eval_result *r);
/* Every token of split `split` of c scored once: windows of T+1 tokens laid end to end from its
 * start (window k predicts tokens kT+1 .. kT+T), then one shorter window for the remainder, in
 * batches (constant memory). streaming: token by token
 * through hy_model_step, same windows. pos_loss / pos_count (NULL or T values): the mean loss at
 * each position and how many windows reached it. accuracy NAN. */
int hy_evaluate_stream(hy_model *m, const hy_corpus *c, int split, int T, bool streaming, double *pos_loss,
                       long *pos_count, hy_eval_result *r);
/* How many tokens from the start of the validation split of c cover its first `bytes` bytes of
 * text (all of them when shorter; bytes itself for text bytes or without a tokenizer). */
long hy_corpus_tokens_for_bytes(const hy_corpus *c, long bytes);

#endif

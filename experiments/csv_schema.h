/* The CSV files the project writes: one schema per file, its columns in order with a unit and a
 * short meaning (docs/experiments.md has the long one; tests/test_results.c checks that the docs
 * list the same columns and units). Writers take the header from here and readers find columns by
 * the names here, so each column name is typed once.
 *
 * Each file is an X-macro list X(P, column, unit, meaning) in column order; P is the file's prefix.
 * From a list this header makes, for every column, the index HY_<P>_<column> (an enum constant);
 * csv_schema.c makes the table hy_csv_<P> (names, units, meanings and the header line). A reader
 * names a column with HY_CSV_COL(P, column), which is the name string from the table and fails to
 * compile when the file has no such column:
 *     int ct = hy_csv_col(&train, HY_CSV_COL(TRAIN, tokens));   (results.h: HY_CSV_FIND(&train, TRAIN, tokens))
 * The column names are C identifiers (the list's entries are stringified). A writer's row format
 * follows its list's order. */
#ifndef HY_EXPERIMENTS_CSV_SCHEMA_H
#define HY_EXPERIMENTS_CSV_SCHEMA_H
#include <math.h>
#include <stddef.h>
#include <stdio.h>

typedef struct {
    const char *name;   /* the header's name of the column */
    const char *unit;   /* "" when it has none (a name, an index, a count, a ratio) */
    const char *about;  /* what it holds, one line */
} hy_csv_column;

typedef struct {
    const char *file;           /* the file's name, e.g. "train.csv" */
    const char *header;         /* the header line: the names joined by commas, and "\n" */
    const hy_csv_column *cols;
    int n_cols;
    const char *about;          /* who writes it, one row per what */
} hy_csv_schema;

/* ---- written by every training run (experiments/train.c) ---- */

/* train.csv: a row every log_every steps and at every evaluation. */
#define HY_TRAIN_CSV(X, P)                                                                                   \
    X(P, variant, "", "the run's name (config name; in an experiment the variant label)")                   \
    X(P, seq_len, "tokens", "training sequence length")                                                      \
    X(P, seed, "", "the run's seed")                                                                          \
    X(P, peak_lr, "", "the configured (peak) learning rate, train.lr")                                       \
    X(P, step, "", "optimizer steps done (row 0: the untrained model)")                                      \
    X(P, tokens, "tokens", "training tokens seen")                                                           \
    X(P, train_loss, "nats/token", "mean training loss since the previous row")                              \
    X(P, val_loss, "nats/token", "validation loss; empty when not evaluated at this row")                    \
    X(P, lr, "", "learning rate of the last step")                                                           \
    X(P, grad_norm, "", "gradient L2 norm of the last step, before clipping")                                \
    X(P, tokens_per_s, "tokens/s", "training throughput since the previous row")                             \
    X(P, elapsed_s, "s", "wall time since the start of training")                                            \
    X(P, aux_loss, "", "mean auxiliary loss since the previous row; empty without a block that adds one")    \
    X(P, comm_s, "s/step", "time per step waiting on the other ranks (0 in one process)")                    \
    X(P, val_bits_per_byte, "bits/byte", "validation loss per byte of text; empty where unknown")             \
    X(P, val_accuracy, "", "accuracy on the answer positions of the validation batches (synthetic tasks); empty for a corpus and when not evaluated at this row")

/* The telemetry CSVs of blocks with a stats hook (layers/registry.h hy_block_stats; e.g.
 * experts.csv): these columns, then the two the block declares (`columns`: item index, count). */
#define HY_STATS_CSV(X, P)                                                                                   \
    X(P, variant, "", "the run's name")                                                                       \
    X(P, seq_len, "tokens", "training sequence length")                                                      \
    X(P, step, "", "optimizer steps done at this evaluation")                                                \
    X(P, layer, "", "layer index of the block")

/* ---- an experiment's results folder (experiments/sweep.c) ---- */

/* runs/<id>/result.csv, and the runner's sweep_rows.csv: a run's row of sweep.csv without
 * lr_selected, which needs every run. */
#define HY_RUN_CSV(X, P)                                                                                     \
    X(P, variant, "", "variant label")                                                                        \
    X(P, seq_len, "tokens", "training sequence length T")                                                    \
    X(P, seed, "", "the run's seed (model init and data order)")                                             \
    X(P, lr, "", "the run's peak learning rate")                                                             \
    X(P, batch_size, "sequences", "sequences per optimizer step")                                            \
    X(P, batch_tokens, "tokens", "tokens per optimizer step")                                                \
    X(P, steps, "", "optimizer steps taken")                                                                  \
    X(P, tokens, "tokens", "training tokens seen")                                                           \
    X(P, stopped_by, "", "the budget that ended training: steps, tokens or seconds (cut)")                   \
    X(P, params, "", "scalar parameters of the model")                                                       \
    X(P, flop_per_token, "FLOP", "analytic forward FLOPs per token at T")                                    \
    X(P, train_s, "s", "wall time of the run, evaluations included")                                         \
    X(P, tokens_per_s, "tokens/s", "tokens / train_s")                                                       \
    X(P, peak_bytes, "bytes", "peak tracked memory of the training run")                                     \
    X(P, state_bytes, "bytes", "streaming state of the whole model per sequence at context T")              \
    X(P, val_loss, "nats/token", "the final model on the held-out windows at its own T")                     \
    X(P, val_ppl, "", "exp(val_loss)")                                                                        \
    X(P, val_bits_per_byte, "bits", "the same evaluation per byte of text; empty where unknown")             \
    X(P, bytes_per_token, "bytes", "text bytes per scored token; empty where val_bits_per_byte is")

/* sweep.csv: one row per run, with the learning-rate selection. */
#define HY_SWEEP_CSV(X, P)                                                                                   \
    HY_RUN_CSV(X, P)                                                                                         \
    X(P, lr_selected, "", "1 when lr is the selected lr of this (variant, seq_len), else 0")

/* eval.csv: one row per run and evaluation length. */
#define HY_EVAL_CSV(X, P)                                                                                    \
    X(P, variant, "", "variant label (as in sweep.csv)")                                                     \
    X(P, seq_len, "tokens", "training sequence length")                                                      \
    X(P, seed, "", "the run's seed")                                                                          \
    X(P, lr, "", "the run's peak learning rate")                                                             \
    X(P, task, "", "corpus, or the synthetic task's name")                                                   \
    X(P, eval_seq_len, "tokens", "length evaluated")                                                         \
    X(P, val_loss, "nats/token", "mean cross-entropy over the scored positions")                             \
    X(P, val_bits_per_byte, "bits", "per byte of text; empty for a task or without a tokenizer")             \
    X(P, accuracy, "", "task: fraction of labelled positions predicted; empty for a corpus")                 \
    X(P, labels, "", "positions scored")                                                                      \
    X(P, bytes_per_token, "bytes", "text bytes per scored position; empty where val_bits_per_byte is")

/* position.csv: corpus runs, one row per run and position of the longest evaluation. */
#define HY_POSITION_CSV(X, P)                                                                                \
    X(P, variant, "", "variant label (as in sweep.csv)")                                                     \
    X(P, seq_len, "tokens", "training sequence length")                                                      \
    X(P, seed, "", "the run's seed")                                                                          \
    X(P, lr, "", "the run's peak learning rate")                                                             \
    X(P, eval_seq_len, "tokens", "the longest evaluation length")                                            \
    X(P, position, "", "0-based position in the window")                                                     \
    X(P, loss, "nats", "mean cross-entropy at that position")

/* reference.csv: the reference experiment's sweep.csv, its folder first. The columns after
 * `experiment` are copied from that sweep.csv as they are (an older runner's may lack some). */
#define HY_REFERENCE_CSV(X, P)                                                                               \
    X(P, experiment, "", "the reference results folder (commas, quotes and whitespace as _)")                \
    HY_SWEEP_CSV(X, P)

/* ---- `hybrid-exp bench` (bench/) ---- */

/* layers.csv: the cost of single blocks, one row per block, T and pass. */
#define HY_LAYERS_CSV(X, P)                                                                                  \
    X(P, block, "", "registry name (or a reference path such as attention_naive)")                           \
    X(P, d_model, "", "model width")                                                                          \
    X(P, batch, "sequences", "batch size of the call")                                                        \
    X(P, seq_len, "tokens", "T")                                                                              \
    X(P, pass, "", "fwd, fwd_bwd or step (one streaming token at context T)")                                \
    X(P, ms, "ms", "fastest of repeated runs; for step, per token")                                          \
    X(P, gflop, "GFLOP", "analytic FLOPs of the pass")                                                       \
    X(P, gflops_per_s, "GFLOP/s", "gflop / (ms / 1000)")                                                     \
    X(P, peak_bytes, "bytes", "peak of tracked allocations during the pass")                                 \
    X(P, state_bytes, "bytes", "streaming state per sequence at context T")                                  \
    X(P, threads, "", "threads used")                                                                         \
    X(P, best_f32_gemm_gflops_per_s, "GFLOP/s", "the best f32 GEMM of the same run (the yardstick)")         \
    X(P, ratio_to_best_f32_gemm, "", "gflops_per_s / best_f32_gemm_gflops_per_s")

/* decode.csv (`bench decode`): one row per variant and context. */
#define HY_DECODE_CSV(X, P)                                                                                  \
    X(P, variant, "", "mixer+ffn of a generic stack, a config's name or a checkpoint's file name")           \
    X(P, context, "tokens", "tokens before the decoded one")                                                 \
    X(P, ms_per_token, "ms", "fastest of the timed decode steps")                                            \
    X(P, state_bytes, "bytes", "the whole model's state at that context")                                    \
    X(P, state_read_ratio, "", "ms_per_token over the time to read the state once at the copy rate")

/* allreduce.csv (`bench allreduce`): one row per message size. */
#define HY_ALLREDUCE_CSV(X, P)                                                                               \
    X(P, ranks, "", "N, the ranks of the launch")                                                            \
    X(P, bytes, "bytes", "message size")                                                                      \
    X(P, seconds, "s", "time of one allreduce")                                                               \
    X(P, algbw_gb_s, "GB/s", "bytes / seconds")                                                               \
    X(P, busbw_gb_s, "GB/s", "algbw x 2(N-1)/N: what a ring moves through each rank per second")

/* ---- `hybrid-exp eval --out DIR` (cli/data_cmds.c): its own eval.csv and position.csv ---- */

/* DIR/eval.csv: one row per evaluation length. */
#define HY_EVAL_CMD_CSV(X, P)                                                                                \
    X(P, checkpoint, "", "the checkpoint's path (commas, quotes and whitespace as _)")                       \
    X(P, data, "", "the data's path (the same)")                                                              \
    X(P, eval_seq_len, "tokens", "window length T")                                                           \
    X(P, windows, "", "windows scored")                                                                       \
    X(P, tokens, "", "positions scored")                                                                      \
    X(P, bytes, "bytes", "their text bytes; empty without a tokenizer")                                      \
    X(P, val_loss, "nats/token", "mean cross-entropy")                                                       \
    X(P, val_ppl, "", "exp(val_loss)")                                                                        \
    X(P, val_bits_per_byte, "bits", "per byte of text; empty where bytes is")                                 \
    X(P, streaming, "", "1 when scored through the recurrent step")

/* DIR/position.csv: one row per length and position. */
#define HY_EVAL_CMD_POSITION_CSV(X, P)                                                                       \
    X(P, eval_seq_len, "tokens", "T")                                                                         \
    X(P, position, "", "0-based position in the window")                                                     \
    X(P, loss, "nats", "mean cross-entropy at that position")                                                \
    X(P, windows, "", "windows that reach the position")

/* ---- the indices HY_<P>_<column> and the tables hy_csv_<P> ---- */

#define HY_CSV_INDEX_(P, name, unit, about) HY_##P##_##name,
enum { HY_TRAIN_CSV(HY_CSV_INDEX_, TRAIN) HY_TRAIN_NCOLS };
enum { HY_STATS_CSV(HY_CSV_INDEX_, STATS) HY_STATS_NCOLS };
enum { HY_RUN_CSV(HY_CSV_INDEX_, RUN) HY_RUN_NCOLS };
enum { HY_SWEEP_CSV(HY_CSV_INDEX_, SWEEP) HY_SWEEP_NCOLS };
enum { HY_EVAL_CSV(HY_CSV_INDEX_, EVAL) HY_EVAL_NCOLS };
enum { HY_POSITION_CSV(HY_CSV_INDEX_, POSITION) HY_POSITION_NCOLS };
enum { HY_REFERENCE_CSV(HY_CSV_INDEX_, REFERENCE) HY_REFERENCE_NCOLS };
enum { HY_LAYERS_CSV(HY_CSV_INDEX_, LAYERS) HY_LAYERS_NCOLS };
enum { HY_DECODE_CSV(HY_CSV_INDEX_, DECODE) HY_DECODE_NCOLS };
enum { HY_ALLREDUCE_CSV(HY_CSV_INDEX_, ALLREDUCE) HY_ALLREDUCE_NCOLS };
enum { HY_EVAL_CMD_CSV(HY_CSV_INDEX_, EVAL_CMD) HY_EVAL_CMD_NCOLS };
enum { HY_EVAL_CMD_POSITION_CSV(HY_CSV_INDEX_, EVAL_CMD_POSITION) HY_EVAL_CMD_POSITION_NCOLS };

extern const hy_csv_schema hy_csv_TRAIN, hy_csv_STATS, hy_csv_RUN, hy_csv_SWEEP, hy_csv_EVAL, hy_csv_POSITION,
    hy_csv_REFERENCE, hy_csv_LAYERS, hy_csv_DECODE, hy_csv_ALLREDUCE, hy_csv_EVAL_CMD, hy_csv_EVAL_CMD_POSITION;

/* Every schema above, for tests and docs. */
extern const hy_csv_schema *const hy_csv_schemas[];
extern const int hy_csv_n_schemas;

/* The name of column `col` of file P from its table; does not compile when P has no such column. */
#define HY_CSV_COL(P, col) (hy_csv_##P.cols[HY_##P##_##col].name)

/* A CSV cell for a number that may be undefined (NaN: an empty cell), printed with fmt. */
static inline void hy_csv_cell(char *out, size_t n, const char *fmt, double x) {
    if (isfinite(x)) snprintf(out, n, fmt, x);
    else out[0] = 0;
}

#endif

/* The training loop: budgeted training with periodic validation, train.csv, the resolved config,
 * checkpoints (model + training state) and resume with an identical loss curve. */
#ifndef HY_EXPERIMENTS_TRAIN_H
#define HY_EXPERIMENTS_TRAIN_H
#include "core/dist.h"
#include "experiments/config.h"
#include "experiments/data.h"
#include "experiments/tasks.h"
#include <signal.h>
#include <stdio.h>

/* What the trainer reports at every train.csv row (for a caller's own progress display). */
typedef struct {
    long step;
    double tokens, train_loss, val_loss, lr, tokens_per_s, elapsed_s;   /* val_loss NAN when not evaluated */
    double fraction;         /* of the budget, 0..1 */
} hy_train_tick;

typedef struct {
    FILE *progress;          /* live progress line (NULL = silent) */
    /* when set, called at every train.csv row instead of printing to `progress` */
    void (*on_tick)(void *ctx, const hy_train_tick *t);
    void *tick_ctx;
    bool resume;             /* continue from out_dir/checkpoint.* if present */
    const char *variant;     /* the `variant` column of train.csv (default: config name) */
    volatile sig_atomic_t *stop;   /* set asynchronously (Ctrl-C): save, flush and return */
    long stop_after;         /* > 0: stop like an interrupt after this many steps of this call */
    /* the processes that train this one model together (data parallel, experiments/dp.h); NULL =
     * this process alone. Every rank calls hy_train with the same config; rank 0 alone prints,
     * writes train.csv, the telemetry CSVs, config.yaml and the checkpoints. */
    hy_dist *dist;
    /* when set, called after every optimizer step (the distributed sweep answers its queue there) */
    void (*on_step)(void *ctx);
    void *step_ctx;
} hy_train_opts;

/* Which budget ended training: a run ended by steps or tokens is complete; one ended by the
 * wall-clock cap (train.seconds) is not comparable with complete runs and is marked as such. */
typedef enum { HY_STOP_STEPS, HY_STOP_TOKENS, HY_STOP_SECONDS, HY_STOP_INTERRUPT } hy_stop_reason;
const char *hy_stop_reason_name(hy_stop_reason r);   /* "steps", "tokens", "seconds", "interrupt" */

typedef struct {
    long steps;
    hy_stop_reason stopped_by;
    double tokens, seconds, tokens_per_s;
    double train_loss, val_loss, val_ppl;
    double val_bits_per_byte;   /* of the text the validation tokens stand for; NAN without a tokenizer or for a task */
    double val_accuracy;     /* fraction of labelled positions predicted right (tasks; NAN for a corpus) */
    size_t params, peak_bytes;   /* peak_bytes: of this process */
    int ranks;                   /* processes that trained it (1 without hy_train_opts.dist) */
    size_t peak_bytes_max;       /* the largest peak_bytes over those processes */
    bool interrupted;
} hy_train_result;

int hy_train(const hy_run_config *c, const hy_train_opts *o, hy_train_result *r);


#endif

/* Data-parallel training: one model trained by the processes of a hy_dist (core/dist.h), each on
 * its rows of the global batch, with identical parameters on every rank.
 *
 * Per step: every rank draws the whole global batch from the run's one data stream (a function of
 * the seed and the step) and keeps its rows [row_lo, row_hi); after the forward one small
 * allreduce agrees on the global loss, the number of labelled positions (the gradient's divisor),
 * the stop request and the clock; backward hands each layer's finished gradients to a bucket that
 * starts its MPI_Iallreduce (or, with a sharded optimizer, MPI_Ireduce_scatter) at once; the
 * optimizer waits for all of them. With train.shard_optimizer each rank keeps the AdamW moments
 * of one slice of the parameter arena, updates that slice, and all-gathers the parameters.
 *
 * With one process (hy_dist NULL) nothing here communicates and the trainer takes its own,
 * unchanged path. */
#ifndef HY_EXPERIMENTS_DP_H
#define HY_EXPERIMENTS_DP_H
#include "core/dist.h"
#include "core/rng.h"
#include "experiments/tasks.h"
#include "models/optim.h"

typedef struct {
    hy_dist *d;
    int rank, size;
    int B, T;                    /* the global batch */
    int row_lo, row_hi;          /* this rank's rows of it */
    bool shard;                  /* the optimizer state is sharded (ZeRO stage 1) */
    size_t *part;                /* size + 1 offsets: rank r's slice of the arena is [part[r], part[r+1]) */
    hy_model *m;
    hy_dist_pending *pending;
    size_t bucket;               /* floats per bucket */
    size_t ready_lo, ready_hi;   /* gradients final but not yet handed to a collective */
    float *shard_grad;           /* shard: this rank's slice of the summed gradients */
    int32_t *all_in, *all_tg;    /* the global batch, drawn by every rank */
    double comm_s;               /* seconds spent waiting on communication since the last take */
    long fail_step;              /* fault injection for tests (HY_FAULT_RANK_STEP): fail at this step */
} hy_dp;

/* What the ranks agree on after each forward. */
typedef struct {
    hy_loss loss;                     /* of the global batch, as one process would report it */
    bool stop;                        /* some rank was asked to stop */
    double elapsed;                   /* rank 0's clock */
} hy_dp_agreed;

/* Sets dp up for model m (every rank holds the same config) and a global batch of B x T: the row
 * split, the arena partition when `shard`, buckets of bucket_mb MiB, and the gradients-ready hook
 * on m. Errors when the batch has fewer rows than there are ranks. */
int hy_dp_open(hy_dp *dp, hy_dist *d, hy_model *m, int B, int T, bool shard, double bucket_mb);
void hy_dp_close(hy_dp *dp);
int hy_dp_rows(const hy_dp *dp);   /* this rank's rows */

/* Creates the rank's optimizer: the whole arena, or its slice when sharded. */
int hy_dp_optim_init(hy_dp *dp, hy_optim *o, hy_optim_kind kind);
/* Rank 0's parameters, optimizer state (moments scattered to the shards), `step` and `bytes` of
 * extra state (progress, RNG) to every rank. */
int hy_dp_share_state(hy_dp *dp, hy_optim *o, void *extra, size_t bytes);
/* The full moments for a checkpoint, on rank 0 (*m, *v: hy_malloc'd, free with hy_free; NULL on
 * other ranks, v NULL without a second moment); collective. Unsharded: o's own arrays, not copies
 * (*owned = false). */
int hy_dp_gather_moments(hy_dp *dp, hy_optim *o, float **m, float **v, bool *owned);
/* Full moments read from a checkpoint on rank 0 (NULL elsewhere) into every rank's o. */
int hy_dp_scatter_moments(hy_dp *dp, hy_optim *o, const float *m, const float *v);

/* This rank's rows of the next global batch (in, tg: row_hi - row_lo rows of T). */
int hy_dp_batch(hy_dp *dp, const hy_data *data, hy_rng *rng, int32_t *in, int32_t *tg);
/* After the forward on this rank's rows: agrees on the global loss, the stop request (`stop`:
 * this rank's) and rank 0's clock, and sets the model's batch share for backward. `step` is the
 * step being taken (for fault injection). */
int hy_dp_agree(hy_dp *dp, const hy_loss *local, bool stop, double elapsed, long step, hy_dp_agreed *a);
/* After backward: starts what is left, waits for every collective. */
int hy_dp_sync_grads(hy_dp *dp);
/* Clips the averaged gradients like hy_clip_grad_norm and returns the norm before clipping. */
double hy_dp_clip(hy_dp *dp, double max_norm);
/* The optimizer update (of this rank's slice when sharded, then the all-gather). */
int hy_dp_step(hy_dp *dp, hy_optim *o, double lr);
/* Checks that every rank holds the same parameters, bit for bit (a hash of the arena compared
 * over the ranks); an error says which hash differs. Collective. */
int hy_dp_check_same_params(hy_dp *dp);
/* Seconds spent waiting on communication since the last call. */
double hy_dp_take_comm(hy_dp *dp);

/* Validation over the global batch split like training: every rank scores its rows of each
 * validation batch, the sums are added up. */
int hy_dp_evaluate(hy_dp *dp, hy_model *m, const hy_data *data, int B, int T, long n_batches, uint64_t seed,
                   hy_eval_result *r);

#endif

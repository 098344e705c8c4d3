/* Data-parallel training over core/dist.h (see dp.h for the step's shape). */
#include "experiments/dp.h"
#include "core/error.h"
#include "core/mem.h"
#include "core/timer.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The first row of rank r when B rows are split over N ranks as evenly as they go. */
static int first_row(int B, int r, int N) { return (int)((long)B * r / N); }

/* Starts the collective of arena range [lo, hi): an in-place allreduce, or, sharded, a
 * reduce-scatter whose block r is the part of the range in rank r's slice. */
static int start_range(hy_dp *dp, size_t lo, size_t hi) {
    if (hi <= lo) return 0;
    float *g = dp->m->grad;
    if (!dp->shard) return hy_dist_iallreduce_sum_f32(dp->d, g + lo, hi - lo, dp->pending);
    size_t counts[dp->size];
    for (int r = 0; r < dp->size; r++) {
        size_t a = dp->part[r] > lo ? dp->part[r] : lo, b = dp->part[r + 1] < hi ? dp->part[r + 1] : hi;
        counts[r] = b > a ? b - a : 0;
    }
    size_t own = dp->part[dp->rank] > lo ? dp->part[dp->rank] : lo;
    float *recv = dp->shard_grad + (own - dp->part[dp->rank]);
    if (counts[dp->rank] == 0) recv = dp->shard_grad;   /* receives nothing; any valid address */
    return hy_dist_ireduce_scatter_sum_f32(dp->d, g + lo, recv, counts, dp->pending);
}

/* The model's gradients-ready hook: ranges arrive from the arena's end to its start; once the
 * ranges not yet started reach a bucket's size they go out as one collective. */
static void grad_ready(void *ctx, size_t offset, size_t count) {
    hy_dp *dp = ctx;
    if (dp->ready_lo != offset + count) {   /* not adjacent (never, by the hook's contract): flush */
        if (start_range(dp, dp->ready_lo, dp->ready_hi) < 0) dp->fail_step = -2;
        dp->ready_hi = offset + count;
    }
    dp->ready_lo = offset;
    if (dp->ready_hi - dp->ready_lo >= dp->bucket) {
        if (start_range(dp, dp->ready_lo, dp->ready_hi) < 0) dp->fail_step = -2;
        dp->ready_hi = dp->ready_lo;
    }
    hy_dist_progress(dp->pending);   /* MPI moves started collectives on only inside its calls */
}

int hy_dp_open(hy_dp *dp, hy_dist *d, hy_model *m, int B, int T, bool shard, double bucket_mb) {
    memset(dp, 0, sizeof *dp);
    dp->d = d, dp->m = m, dp->B = B, dp->T = T, dp->shard = shard;
    dp->rank = hy_dist_rank(d), dp->size = hy_dist_size(d);
    dp->fail_step = -1;
    if (B < dp->size)
        return hy_fail_code(HY_ERR_CONFIG, "train.batch_size %d: fewer rows than the %d ranks that share it", B, dp->size);
    dp->row_lo = first_row(B, dp->rank, dp->size), dp->row_hi = first_row(B, dp->rank + 1, dp->size);
    double floats = bucket_mb * 1048576.0 / sizeof(float);
    dp->bucket = floats < 1 ? 1 : (size_t)floats;
    dp->part = calloc((size_t)dp->size + 1, sizeof(size_t));
    size_t n = (size_t)B * T;
    dp->all_in = hy_malloc(n * sizeof(int32_t)), dp->all_tg = hy_malloc(n * sizeof(int32_t));
    int rc = dp->part && dp->all_in && dp->all_tg && hy_dist_pending_new(&dp->pending) == 0 ? 0 : HY_ERR_NOMEM;
    for (int r = 0; rc == 0 && r <= dp->size; r++) dp->part[r] = (size_t)((double)m->numel * r / dp->size);
    if (rc == 0) dp->part[dp->size] = m->numel;
    if (rc == 0 && shard && !(dp->shard_grad = hy_malloc((dp->part[dp->rank + 1] - dp->part[dp->rank]) * sizeof(float) + 64)))
        rc = HY_ERR_NOMEM;
    const char *fault = getenv("HY_FAULT_RANK_STEP");   /* "RANK:STEP": that rank fails at that step (tests) */
    int fr;
    long fs;
    if (fault && sscanf(fault, "%d:%ld", &fr, &fs) == 2 && fr == dp->rank) dp->fail_step = fs;
    if (rc < 0) return rc == HY_ERR_NOMEM ? hy_fail_code(rc, "out of memory for data-parallel buffers") : rc;
    dp->ready_lo = dp->ready_hi = m->numel;
    hy_model_set_grad_ready(m, grad_ready, dp);
    return 0;
}

void hy_dp_close(hy_dp *dp) {
    if (dp->m) hy_model_set_grad_ready(dp->m, NULL, NULL), hy_model_set_batch_share(dp->m, 0, 1);
    hy_dist_pending_free(dp->pending);
    free(dp->part);
    hy_free(dp->shard_grad), hy_free(dp->all_in), hy_free(dp->all_tg);
    memset(dp, 0, sizeof *dp);
}

int hy_dp_rows(const hy_dp *dp) { return dp->row_hi - dp->row_lo; }

int hy_dp_optim_init(hy_dp *dp, hy_optim *o, hy_optim_kind kind) {
    if (!dp->shard) return hy_optim_init(o, dp->m, kind);
    return hy_optim_init_range(o, dp->m, kind, dp->part[dp->rank], dp->part[dp->rank + 1]);
}

int hy_dp_share_state(hy_dp *dp, hy_optim *o, void *extra, size_t bytes) {
    hy_dist_bcast(dp->d, dp->m->data, dp->m->numel * sizeof(float), 0);
    hy_dist_bcast(dp->d, &o->step, sizeof o->step, 0);
    hy_dist_bcast(dp->d, extra, bytes, 0);
    if (dp->shard) return 0;   /* a sharded optimizer's moments came by hy_dp_scatter_moments */
    hy_dist_bcast(dp->d, o->m, dp->m->numel * sizeof(float), 0);
    if (o->v) hy_dist_bcast(dp->d, o->v, dp->m->numel * sizeof(float), 0);
    return 0;
}

int hy_dp_gather_moments(hy_dp *dp, hy_optim *o, float **m, float **v, bool *owned) {
    *m = *v = NULL, *owned = false;
    if (!dp->shard) {
        if (dp->rank == 0) *m = o->m, *v = o->v;
        return 0;
    }
    size_t n = dp->m->numel;
    if (dp->rank == 0) {
        *owned = true;
        *m = hy_malloc(n * sizeof(float));
        *v = o->v ? hy_malloc(n * sizeof(float)) : NULL;
    }
    /* a rank that fails to allocate must still take part: the gather goes on into nothing */
    int ok = dp->rank != 0 || (*m && (!o->v || *v));
    hy_dist_gatherv_f32(dp->d, o->m, ok ? *m : NULL, dp->part, 0);
    if (o->v) hy_dist_gatherv_f32(dp->d, o->v, ok ? *v : NULL, dp->part, 0);
    if (!ok) {
        hy_free(*m), hy_free(*v);
        *m = *v = NULL;
        return hy_fail_code(HY_ERR_NOMEM, "out of memory for the full optimizer moments of the checkpoint");
    }
    return 0;
}

int hy_dp_scatter_moments(hy_dp *dp, hy_optim *o, const float *m, const float *v) {
    if (!dp->shard) return 0;   /* hy_dp_share_state broadcasts whole moments */
    hy_dist_scatterv_f32(dp->d, m, o->m, dp->part, 0);
    if (o->v) hy_dist_scatterv_f32(dp->d, v, o->v, dp->part, 0);
    return 0;
}

int hy_dp_batch(hy_dp *dp, const hy_data *data, hy_rng *rng, int32_t *in, int32_t *tg) {
    int rc = hy_data_batch(data, 0, rng, dp->B, dp->T, dp->all_in, dp->all_tg);
    if (rc < 0) return rc;
    size_t off = (size_t)dp->row_lo * dp->T, n = (size_t)hy_dp_rows(dp) * dp->T;
    memcpy(in, dp->all_in + off, n * sizeof(int32_t));
    memcpy(tg, dp->all_tg + off, n * sizeof(int32_t));
    return 0;
}

int hy_dp_agree(hy_dp *dp, const hy_loss *local, bool stop, double elapsed, long step, hy_dp_agreed *a) {
    if (dp->fail_step == step || dp->fail_step == -2)
        return hy_fail("step %ld: failing as HY_FAULT_RANK_STEP asks (fault injection)", step);
    double share = (double)hy_dp_rows(dp) / dp->B;
    /* sums over ranks: cross-entropy x positions, positions, share-weighted aux loss, stop votes,
     * and the clock (rank 0's alone) */
    double v[5] = {(double)local->ce_loss * local->n_targets, (double)local->n_targets, share * local->aux_loss,
                   stop ? 1.0 : 0.0, dp->rank == 0 ? elapsed : 0.0};
    double t0 = hy_now();
    hy_dist_allreduce(dp->d, v, 5, HY_DIST_F64, HY_DIST_SUM);
    dp->comm_s += hy_now() - t0;
    hy_loss *l = &a->loss;
    l->n_targets = (long)v[1];
    l->ce_loss = v[1] > 0 ? (float)(v[0] / v[1]) : 0.0f;
    l->aux_loss = (float)v[2];
    l->loss = l->ce_loss + dp->m->cfg.router_aux_coef * l->aux_loss;
    a->stop = v[3] > 0;
    a->elapsed = v[4];
    hy_model_set_batch_share(dp->m, l->n_targets > 0 ? l->n_targets : 1, share);
    return 0;
}

int hy_dp_sync_grads(hy_dp *dp) {
    double t0 = hy_now();
    int rc = start_range(dp, dp->ready_lo, dp->ready_hi);   /* whatever no full bucket took */
    dp->ready_lo = dp->ready_hi = dp->m->numel;
    if (rc == 0) rc = hy_dist_wait(dp->pending);
    if (rc == 0 && dp->fail_step == -2) rc = hy_fail("a gradient bucket could not be started");
    if (rc == 0 && dp->shard) {   /* this rank's slice of the sum goes where the optimizer reads it */
        size_t lo = dp->part[dp->rank], hi = dp->part[dp->rank + 1];
        memcpy(dp->m->grad + lo, dp->shard_grad, (hi - lo) * sizeof(float));
    }
    dp->comm_s += hy_now() - t0;
    return rc;
}

double hy_dp_clip(hy_dp *dp, double max_norm) {
    if (!dp->shard) return hy_clip_grad_norm(dp->m, max_norm);
    size_t lo = dp->part[dp->rank], hi = dp->part[dp->rank + 1];
    double sq = hy_grad_sum_squares(dp->m->grad + lo, hi - lo), t0 = hy_now();
    hy_dist_allreduce(dp->d, &sq, 1, HY_DIST_F64, HY_DIST_SUM);
    dp->comm_s += hy_now() - t0;
    double norm = sqrt(sq);
    float scale = hy_clip_scale(norm, max_norm);
    if (scale != 1.0f)
        for (size_t i = lo; i < hi; i++) dp->m->grad[i] *= scale;
    return norm;
}

int hy_dp_step(hy_dp *dp, hy_optim *o, double lr) {
    hy_optim_step(o, dp->m, lr);
    if (!dp->shard) return 0;
    double t0 = hy_now();
    int rc = hy_dist_allgatherv_f32(dp->d, dp->m->data, dp->part);
    dp->comm_s += hy_now() - t0;
    return rc;
}

int hy_dp_check_same_params(hy_dp *dp) {
    const unsigned char *b = (const unsigned char *)dp->m->data;
    uint64_t h = 1469598103934665603ull;   /* FNV-1a over the arena's bytes */
    for (size_t i = 0; i < dp->m->numel * sizeof(float); i++) h = (h ^ b[i]) * 1099511628211ull;
    int64_t v[2] = {(int64_t)(h >> 1), -(int64_t)(h >> 1)};   /* max of both = max and -min */
    hy_dist_allreduce(dp->d, v, 2, HY_DIST_I64, HY_DIST_MAX);
    if (v[0] != -v[1])
        return hy_fail("the ranks hold different parameters (hash %016llx here): the data-parallel update diverged",
                       (unsigned long long)h);
    return 0;
}

double hy_dp_take_comm(hy_dp *dp) {
    double s = dp->comm_s;
    dp->comm_s = 0;
    return s;
}

int hy_dp_evaluate(hy_dp *dp, hy_model *m, const hy_data *data, int B, int T, long n_batches, uint64_t seed,
                   hy_eval_result *r) {
    hy_eval_sums s;
    memset(r, 0, sizeof *r);
    int lo = first_row(B, dp->rank, dp->size), hi = first_row(B, dp->rank + 1, dp->size);
    int rc = hy_evaluate_data_rows(m, data, B, T, n_batches, seed, false, lo, hi, &s);
    if (rc < 0) return rc;
    double v[4] = {s.loss_sum, (double)s.labels, (double)s.right, s.bytes}, t0 = hy_now();
    hy_dist_allreduce(dp->d, v, 4, HY_DIST_F64, HY_DIST_SUM);
    dp->comm_s += hy_now() - t0;
    hy_eval_sums all = {.loss_sum = v[0], .labels = (long)v[1], .right = (long)v[2], .bytes = v[3]};
    hy_eval_from_sums(data, &all, r);
    return 0;
}

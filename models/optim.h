/* Optimizers over the model's parameter arena: AdamW (decoupled weight decay on 2-D+ tensors
 * only) and SGD with momentum; global-norm gradient clipping; warmup + cosine schedule.
 * Per-parameter flags: HY_PARAM_NO_DECAY, HY_PARAM_SSM_LR (lr = min(lr, ssm_lr)).
 * hy_optim_kind, hy_optim_opts and the public handle hy_optimizer (this plus clipping, and
 * hy_train_step) are declared in include/hybrid.h. */
#ifndef HY_MODELS_OPTIM_H
#define HY_MODELS_OPTIM_H
#include "models/model.h"

typedef struct {
    hy_optim_kind kind;
    double weight_decay, beta1, beta2, eps, momentum, ssm_lr;
    long step;              /* optimizer steps taken */
    size_t lo, hi;          /* the arena elements this optimizer updates: all, or one shard */
    float *m, *v;           /* AdamW moments / SGD momentum (m only) of elements [lo, hi) */
    bool maybe_nonfinite;   /* the last update may have written a NaN or ±inf into [lo, hi): false
                               proves every new weight and moment finite (checked while the update
                               had them in registers); true only says to look (checks that name
                               the tensor: experiments/train.c) */
} hy_optim;

int hy_optim_init(hy_optim *o, const hy_model *model, hy_optim_kind kind);
/* An optimizer of arena elements [lo, hi) only, with moments for those alone (a shard of the
 * optimizer state: data-parallel training with train.shard_optimizer). */
int hy_optim_init_range(hy_optim *o, const hy_model *model, hy_optim_kind kind, size_t lo, size_t hi);
void hy_optim_free(hy_optim *o);
/* One update with learning rate lr of elements [o->lo, o->hi) from the gradients in model->grad:
 * one parallel pass over those elements. Sets o->maybe_nonfinite. */
void hy_optim_step(hy_optim *o, hy_model *model, double lr);
/* hy_optim_step after multiplying the gradients of [o->lo, o->hi) by grad_scale, in the same pass
 * (the gradients are left scaled, bit for bit as a separate pass leaves them): clipping and
 * update in one sweep of the arena. grad_scale 1 = hy_optim_step. */
void hy_optim_step_scaled(hy_optim *o, hy_model *model, double lr, float grad_scale);
/* Global L2 norm of the gradients; if max_norm > 0 and the norm exceeds it, scales them down.
 * Returns the norm before clipping. */
double hy_clip_grad_norm(hy_model *model, double max_norm);
/* The sum of squares of g[0..n) in double, in the clip's fixed order for a given thread count
 * (per-thread parts, each in HY_VW/2 double lanes added in a fixed order, the parts in order). */
double hy_grad_sum_squares(const float *g, size_t n);
/* The factor by which clipping to max_norm scales gradients of norm `norm` (1 = unchanged). */
float hy_clip_scale(double norm, double max_norm);
/* hy_lr_schedule (warmup + cosine) is declared in include/hybrid.h. */

/* What every divergence error (non-finite loss, gradient norm or update) tells the user to do. */
#define HY_DIVERGED_HINT "lower the learning rate (train.lr) or warm up longer (train.warmup_steps)"

/* The one training update of a process holding the whole batch, shared by hy_train_step and the
 * trainer (experiments/train.c): forward with targets, zero the gradients, backward, clip to
 * grad_clip (0: never), one update of `o` with learning rate lr. Sets *loss (may be NULL) to the
 * batch's loss from before the update and *grad_norm (may be NULL) to the norm before clipping. A
 * non-finite loss or gradient norm is an error (naming step o->step + 1) and leaves the weights
 * as they were. */
int hy_optim_train_step(hy_optim *o, hy_model *m, double grad_clip, const int32_t *inputs, const int32_t *targets,
                        int B, int T, double lr, hy_loss *loss, double *grad_norm);

#endif

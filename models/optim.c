#include "models/optim.h"
#include "core/error.h"
#include "core/mem.h"
#include <math.h>
#include <omp.h>
#include <string.h>

int hy_optim_init(hy_optim *o, const hy_model *model, hy_optim_kind kind) {
    o->kind = kind;
    o->step = 0;
    o->m = hy_calloc(model->numel * sizeof(float));
    o->v = kind == HY_OPTIM_ADAMW ? hy_calloc(model->numel * sizeof(float)) : NULL;
    if (!o->m || (kind == HY_OPTIM_ADAMW && !o->v)) {
        hy_optim_free(o);
        return HY_ERR_NOMEM;
    }
    return 0;
}

void hy_optim_free(hy_optim *o) {
    hy_free(o->m);
    hy_free(o->v);
    o->m = o->v = NULL;
}

void hy_optim_step(hy_optim *o, hy_model *model, double lr) {
    o->step++;
    double bc1 = 1.0 - pow(o->beta1, (double)o->step), bc2 = 1.0 - pow(o->beta2, (double)o->step);
    for (int k = 0; k < model->n_params; k++) {
        hy_param *p = &model->params[k];
        float plr = (float)((p->flags & HY_PARAM_SSM_LR) && o->ssm_lr < lr ? o->ssm_lr : lr);
        float wd = (p->ndim >= 2 && !(p->flags & HY_PARAM_NO_DECAY)) ? (float)o->weight_decay : 0.0f;
        size_t off = (size_t)(p->data - model->data), n = p->numel;
        float *w = p->data, *g = p->grad, *m = o->m + off;
        if (o->kind == HY_OPTIM_ADAMW) {
            float *v = o->v + off, b1 = (float)o->beta1, b2 = (float)o->beta2, eps = (float)o->eps;
            float step_size = plr / (float)bc1, inv_bc2 = 1.0f / (float)sqrt(bc2);
            #pragma omp parallel for schedule(static) if (n > 32768)
            for (size_t i = 0; i < n; i++) {
                m[i] = b1 * m[i] + (1 - b1) * g[i];
                v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
                w[i] -= plr * wd * w[i];
                w[i] -= step_size * m[i] / (sqrtf(v[i]) * inv_bc2 + eps);
            }
        } else {
            float mu = (float)o->momentum;
            #pragma omp parallel for schedule(static) if (n > 32768)
            for (size_t i = 0; i < n; i++) {
                m[i] = mu * m[i] + g[i] + wd * w[i];
                w[i] -= plr * m[i];
            }
        }
    }
}

double hy_clip_grad_norm(hy_model *model, double max_norm) {
    enum { MAX_THREADS = 256 };
    double partial[MAX_THREADS] = {0};
    int nt = omp_get_max_threads() < MAX_THREADS ? omp_get_max_threads() : MAX_THREADS;
    const float *g = model->grad;
    size_t n = model->numel;
    #pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), nth = omp_get_num_threads();
        double s = 0;
        for (size_t i = n * t / nth; i < n * (t + 1) / nth; i++) s += (double)g[i] * g[i];
        partial[t] = s;
    }
    double total = 0;
    for (int t = 0; t < nt; t++) total += partial[t];
    double norm = sqrt(total);
    if (max_norm > 0 && norm > max_norm) {
        float scale = (float)(max_norm / (norm + 1e-6));
        for (size_t i = 0; i < n; i++) model->grad[i] *= scale;
    }
    return norm;
}

double hy_lr_schedule(long step, long warmup, double progress, double lr, double min_lr) {
    if (step < warmup) return lr * (double)(step + 1) / (double)warmup;
    if (progress > 1) progress = 1;
    if (progress < 0) progress = 0;
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + cos(M_PI * progress));
}

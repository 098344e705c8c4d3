#include "models/optim.h"
#include "core/error.h"
#include "core/mem.h"
#include "core/simd.h"
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

int hy_optim_init(hy_optim *o, const hy_model *model, hy_optim_kind kind) {
    return hy_optim_init_range(o, model, kind, 0, model->numel);
}

int hy_optim_init_range(hy_optim *o, const hy_model *model, hy_optim_kind kind, size_t lo, size_t hi) {
    if (lo > hi || hi > model->numel) return hy_fail("optimizer: range [%zu, %zu) outside the %zu parameters", lo, hi, model->numel);
    o->kind = kind;
    o->step = 0;
    o->lo = lo, o->hi = hi;
    o->m = hy_calloc((hi - lo) * sizeof(float));
    o->v = kind == HY_OPTIM_ADAMW ? hy_calloc((hi - lo) * sizeof(float)) : NULL;
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

/* AdamW on n elements: HY_VW at a time (core/simd.h; the loop with sqrtf stays scalar, as sqrtf
 * may set errno), the tail one by one. Every lane does the scalar expression's operations in its
 * order, so the bits do not depend on the vector width or on where a thread's span starts. */
static bool adamw_update(size_t n, float *w, const float *g, float *m, float *v, float b1, float b2, float eps,
                         float plr, float wd, float step_size, float inv_bc2) {
    size_t i = 0;
    vw bad = {0};   /* (w + m + v)·0 summed: NaN when any new value is not finite (or the sum overflows) */
    const vw vb1 = vw_splat(b1), vb2 = vw_splat(b2), c1 = vw_splat(1 - b1), c2 = vw_splat(1 - b2),
             vdec = vw_splat(plr * wd), vstep = vw_splat(step_size), vbc = vw_splat(inv_bc2), veps = vw_splat(eps);
    for (; i + HY_VW <= n; i += HY_VW) {
        vw gi = vw_load(g + i), mi = vb1 * vw_load(m + i) + c1 * gi, vi = vb2 * vw_load(v + i) + c2 * gi * gi;
        vw wi = vw_load(w + i);
        wi -= vdec * wi;
        wi -= vstep * mi / (vw_sqrt(vi) * vbc + veps);
        vw_store(m + i, mi), vw_store(v + i, vi), vw_store(w + i, wi);
        bad += (wi + mi + vi) * 0.0f;
    }
    bool nonfinite = false;
    for (; i < n; i++) {
        m[i] = b1 * m[i] + (1 - b1) * g[i];
        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
        w[i] -= plr * wd * w[i];
        w[i] -= step_size * m[i] / (sqrtf(v[i]) * inv_bc2 + eps);
        nonfinite |= !isfinite(w[i]) || !isfinite(m[i]) || !isfinite(v[i]);
    }
    for (int l = 0; l < HY_VW; l++) nonfinite |= bad[l] != 0.0f;   /* finite values leave every lane ±0 */
    return nonfinite;
}

/* The update of elements [off, end) of the arena, all inside parameter p and [o->lo, o->hi),
 * from the gradients times gscale (written back when gscale != 1, as clipping in place would).
 * The arithmetic per element is that of a separate clip pass followed by the update. Returns
 * whether a new weight or moment may be non-finite (true for every NaN or ±inf written; rarely
 * also for finite values, whose sum overflowed), read while the values are in registers. */
static bool update_span(hy_optim *o, hy_model *model, const hy_param *p, size_t off, size_t end, double lr,
                        float gscale, double bc1, double bc2) {
    float plr = (float)((p->flags & HY_PARAM_SSM_LR) && o->ssm_lr < lr ? o->ssm_lr : lr);
    float wd = (p->ndim >= 2 && !(p->flags & HY_PARAM_NO_DECAY)) ? (float)o->weight_decay : 0.0f;
    size_t n = end - off;
    float *restrict w = model->data + off, *restrict g = model->grad + off, *restrict m = o->m + (off - o->lo);
    if (o->kind == HY_OPTIM_ADAMW) {
        float *restrict v = o->v + (off - o->lo), b1 = (float)o->beta1, b2 = (float)o->beta2, eps = (float)o->eps;
        float step_size = plr / (float)bc1, inv_bc2 = 1.0f / (float)sqrt(bc2);
        if (gscale != 1.0f)
            for (size_t i = 0; i < n; i++) g[i] *= gscale;
        return adamw_update(n, w, g, m, v, b1, b2, eps, plr, wd, step_size, inv_bc2);
    }
    float mu = (float)o->momentum;
    if (gscale != 1.0f)
        for (size_t i = 0; i < n; i++) g[i] *= gscale;
    float bad = 0.0f;
    for (size_t i = 0; i < n; i++) {
        m[i] = mu * m[i] + g[i] + wd * w[i];
        w[i] -= plr * m[i];
        bad += (w[i] + m[i]) * 0.0f;
    }
    return bad != 0.0f;
}

/* Elements [lo, hi) of the arena are cut into one contiguous part per thread (boundaries on
 * 16-float lines), each thread updating the pieces of every tensor inside its part: one parallel
 * pass over the whole arena, small tensors included, instead of a loop per tensor. Pieces of at
 * most 4096 floats keep the clip's in-place scaling of a piece in L1 for the update that follows.
 * The result does not depend on the thread count (every element is updated alike). */
void hy_optim_step_scaled(hy_optim *o, hy_model *model, double lr, float grad_scale) {
    o->step++;
    double bc1 = 1.0 - pow(o->beta1, (double)o->step), bc2 = 1.0 - pow(o->beta2, (double)o->step);
    size_t lo = o->lo, span = o->hi - o->lo;
    bool nonfinite = false;
    #pragma omp parallel if (span > 32768) reduction(|| : nonfinite)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        size_t a = t == 0 ? lo : lo + ((span * t / nt) & ~(size_t)15),
               b = t == nt - 1 ? o->hi : lo + ((span * (t + 1) / nt) & ~(size_t)15);
        for (int k = 0; k < model->n_params && a < b; k++) {
            const hy_param *p = &model->params[k];
            size_t off = (size_t)(p->data - model->data), end = off + p->numel;
            if (off < a) off = a;   /* the part of this tensor in [a, b) */
            if (end > b) end = b;
            for (size_t s = off; s < end; s += 4096)
                nonfinite |= update_span(o, model, p, s, end - s > 4096 ? s + 4096 : end, lr, grad_scale, bc1, bc2);
        }
    }
    o->maybe_nonfinite = nonfinite;
    hy_model_params_changed(model);   /* the bf16 copy of the weights is stale now */
}

void hy_optim_step(hy_optim *o, hy_model *model, double lr) { hy_optim_step_scaled(o, model, lr, 1.0f); }

/* Per-thread parts, each summed in HY_VW/2 double lanes (4 independent vectors, so the adds
 * pipeline) and the lanes then added in a fixed order; the parts added in thread order. */
double hy_grad_sum_squares(const float *g, size_t n) {
    enum { MAX_THREADS = 256 };
    double partial[MAX_THREADS] = {0};
    int nt = omp_get_max_threads() < MAX_THREADS ? omp_get_max_threads() : MAX_THREADS;
    #pragma omp parallel num_threads(nt) if (n > 32768)
    {
        int t = omp_get_thread_num(), nth = omp_get_num_threads();
        size_t i = n * t / nth, e = n * (t + 1) / nth;
        enum { L = HY_VW / 2 };
        vwd acc[4] = {{0}, {0}, {0}, {0}};
        for (; i + 4 * L <= e; i += 4 * L)
            for (int u = 0; u < 4; u++) {
                vwd x = vwd_load_floats(g + i + L * u);
                acc[u] += x * x;
            }
        vwd sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        double s = 0;
        for (int l = 0; l < L; l++) s += sum[l];
        for (; i < e; i++) s += (double)g[i] * g[i];
        partial[t] = s;
    }
    double total = 0;
    for (int t = 0; t < nt; t++) total += partial[t];
    return total;
}

float hy_clip_scale(double norm, double max_norm) {
    return max_norm > 0 && norm > max_norm ? (float)(max_norm / (norm + 1e-6)) : 1.0f;
}

double hy_clip_grad_norm(hy_model *model, double max_norm) {
    size_t n = model->numel;
    double norm = sqrt(hy_grad_sum_squares(model->grad, n));
    if (max_norm > 0 && norm > max_norm) {
        float scale = hy_clip_scale(norm, max_norm), *g = model->grad;
        #pragma omp parallel for schedule(static) if (n > 32768)
        for (size_t i = 0; i < n; i++) g[i] *= scale;
    }
    return norm;
}

double hy_lr_schedule(long step, long warmup, double progress, double lr, double min_lr) {
    if (step < warmup) return lr * (double)(step + 1) / (double)warmup;
    if (progress > 1) progress = 1;
    if (progress < 0) progress = 0;
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + cos(M_PI * progress));
}

/* ---- the public optimizer (include/hybrid.h) ---- */

struct hy_optimizer {
    hy_model *model;
    hy_optim o;
    double grad_clip;
    double grad_norm;       /* of the last step, before clipping */
};

void hy_optim_opts_defaults(hy_optim_opts *o) {
    *o = (hy_optim_opts){.kind = HY_OPTIM_ADAMW, .weight_decay = 0.1, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8,
                         .momentum = 0.9, .ssm_lr = 1e-3, .grad_clip = 1.0};
}

/* The ranges the run-config schema gives the same keys (train.*), so that the API refuses what
 * a config file would. */
static int check_opts(const hy_optim_opts *o) {
    static const struct {
        const char *name;
        size_t off;
        double min, max;
        bool open_min, open_max;
    } f[] = {
        {"weight_decay", offsetof(hy_optim_opts, weight_decay), 0, INFINITY, false, false},
        {"beta1", offsetof(hy_optim_opts, beta1), 0, 1, false, true},
        {"beta2", offsetof(hy_optim_opts, beta2), 0, 1, false, true},
        {"eps", offsetof(hy_optim_opts, eps), 0, INFINITY, true, false},
        {"momentum", offsetof(hy_optim_opts, momentum), 0, 1, false, true},
        {"ssm_lr", offsetof(hy_optim_opts, ssm_lr), 0, INFINITY, true, false},
        {"grad_clip", offsetof(hy_optim_opts, grad_clip), 0, INFINITY, false, false},
    };
    if (o->kind != HY_OPTIM_ADAMW && o->kind != HY_OPTIM_SGD)
        return hy_fail_code(HY_ERR_CONFIG, "optimizer kind: must be HY_OPTIM_ADAMW or HY_OPTIM_SGD, got %d", (int)o->kind);
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) {
        double v = *(const double *)((const char *)o + f[i].off);
        if (isnan(v) || (isinf(v) && f[i].max < INFINITY) || v < f[i].min || v > f[i].max ||
            (f[i].open_min && v == f[i].min) || (f[i].open_max && v == f[i].max))
            return hy_fail_code(HY_ERR_CONFIG, "optimizer %s: must be in %s%g, %g%s, got %g", f[i].name,
                                f[i].open_min ? "(" : "[", f[i].min, f[i].max, f[i].open_max ? ")" : "]", v);
    }
    return 0;
}

int hy_optimizer_new(hy_model *m, const hy_optim_opts *opts, hy_optimizer **out) {
    *out = NULL;
    hy_optim_opts d;
    if (!opts) hy_optim_opts_defaults(&d), opts = &d;
    if (!m) return hy_fail("hy_optimizer_new: no model");
    int rc = check_opts(opts);
    if (rc < 0) return rc;
    hy_optimizer *o = calloc(1, sizeof *o);
    if (!o) return hy_fail_code(HY_ERR_NOMEM, "optimizer: out of memory");
    o->model = m;
    o->grad_clip = opts->grad_clip;
    o->o.weight_decay = opts->weight_decay, o->o.beta1 = opts->beta1, o->o.beta2 = opts->beta2, o->o.eps = opts->eps;
    o->o.momentum = opts->momentum, o->o.ssm_lr = opts->ssm_lr;
    if ((rc = hy_optim_init(&o->o, m, opts->kind)) < 0) {
        free(o);
        return hy_fail_code(rc, "optimizer: out of memory for the moments of %zu parameters", m->numel);
    }
    *out = o;
    return 0;
}

/* Refuses a learning rate that is not a finite number >= 0 (`who`: the public call that got it). */
static int check_lr(const char *who, double lr) {
    if (!(lr >= 0) || !isfinite(lr)) return hy_fail("%s: lr must be a finite number >= 0, got %g", who, lr);
    return 0;
}

/* Clips the gradients and makes one update; a non-finite norm is an error before any change.
 * An optimizer of the whole arena scales the gradients inside its update pass (one pass over
 * the arena fewer); a shard's scales them all first, as the norm is over the whole arena. */
static int clip_and_update(hy_optim *o, hy_model *m, double grad_clip, double lr, double *grad_norm) {
    double norm = sqrt(hy_grad_sum_squares(m->grad, m->numel));
    if (grad_norm) *grad_norm = norm;
    if (!isfinite(norm)) return hy_fail("step %ld: the gradient norm is %g; " HY_DIVERGED_HINT, o->step + 1, norm);
    if (o->lo == 0 && o->hi == m->numel) {
        hy_optim_step_scaled(o, m, lr, hy_clip_scale(norm, grad_clip));
        return 0;
    }
    hy_clip_grad_norm(m, grad_clip);
    hy_optim_step(o, m, lr);
    return 0;
}

int hy_optimizer_step(hy_optimizer *opt, double lr) {
    int rc = check_lr("hy_optimizer_step", lr);
    if (rc < 0) return rc;
    return clip_and_update(&opt->o, opt->model, opt->grad_clip, lr, &opt->grad_norm);
}

double hy_optimizer_grad_norm(const hy_optimizer *opt) { return opt->grad_norm; }
long hy_optimizer_steps(const hy_optimizer *opt) { return opt->o.step; }

void hy_optimizer_free(hy_optimizer *opt) {
    if (!opt) return;
    hy_optim_free(&opt->o);
    free(opt);
}

int hy_optim_train_step(hy_optim *o, hy_model *m, double grad_clip, const int32_t *inputs, const int32_t *targets,
                        int B, int T, double lr, hy_loss *loss, double *grad_norm) {
    hy_loss l;
    int rc = hy_model_forward(m, inputs, targets, B, T, true, &l);
    if (rc < 0) return rc;
    if (loss) *loss = l;
    if (!isfinite(l.loss)) return hy_fail("step %ld: the loss is %f; " HY_DIVERGED_HINT, o->step + 1, l.loss);
    hy_model_zero_grad(m);
    if ((rc = hy_model_backward(m)) < 0) return rc;
    return clip_and_update(o, m, grad_clip, lr, grad_norm);
}

int hy_train_step(hy_optimizer *opt, const int32_t *inputs, const int32_t *targets, int B, int T, double lr,
                  hy_loss *loss) {
    if (!targets) return hy_fail("hy_train_step: targets are required (the loss to train on)");
    int rc = check_lr("hy_train_step", lr);
    if (rc < 0) return rc;
    return hy_optim_train_step(&opt->o, opt->model, opt->grad_clip, inputs, targets, B, T, lr, loss, &opt->grad_norm);
}

/* The dump subcommand's work: load, read the batch, forward + backward, write everything. */
#include "experiments/dump.h"
#include "core/error.h"
#include "core/mem.h"
#include "models/checkpoint.h"
#include "models/safetensors.h"
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads `tokens` of the batch file into inputs/targets (hy_malloc'd, (B, T) each). Its shape is
 * checked against the file by hy_st_open, and every token against the vocabulary before anything
 * is allocated (the copies are then bounded by the file's length). */
static int read_batch(const char *path, int vocab, int32_t **in, int32_t **tg, int *B, int *T) {
    hy_st_file f;
    int rc = hy_st_open(path, &f);
    if (rc < 0) return rc;
    const hy_st_tensor *t = hy_st_find(&f, "tokens");
    char sh[128];
    if (!t) rc = hy_fail("%s: no tensor 'tokens' (expected I32 of shape (B, T+1))", path);
    else if (t->dtype != HY_DT_I32)
        rc = hy_fail("%s: tensor 'tokens': dtype %s, expected I32", path, hy_dtype_name(t->dtype));
    else if (t->ndim != 2 || t->shape[0] < 1 || t->shape[1] < 2 || t->shape[0] > INT_MAX || t->shape[1] > INT_MAX ||
             (size_t)t->shape[0] * (size_t)t->shape[1] > INT_MAX)
        rc = hy_fail("%s: tensor 'tokens': shape %s, expected (B, T+1) with B >= 1 and T >= 1", path,
                     hy_st_shape_str(t->ndim, t->shape, sh, sizeof sh));
    if (rc < 0) {
        hy_st_close(&f);
        return rc;
    }
    int b_ = (int)t->shape[0], t1 = (int)t->shape[1], T_ = t1 - 1;
    for (size_t k = 0; k < t->numel && rc == 0; k++) {   /* every token against the model, before allocating */
        int32_t x;
        memcpy(&x, (const char *)t->data + k * sizeof x, sizeof x);   /* the mapped data may be unaligned */
        if (x < 0 || x >= vocab)
            rc = hy_fail("%s: tensor 'tokens': token [%zu, %zu] = %d is outside the vocabulary [0, %d)", path,
                         k / (size_t)t1, k % (size_t)t1, x, vocab);
    }
    if (rc < 0) {
        hy_st_close(&f);
        return rc;
    }
    int32_t *all = hy_malloc(t->numel * sizeof(int32_t));
    *in = hy_malloc((size_t)b_ * T_ * sizeof(int32_t));
    *tg = hy_malloc((size_t)b_ * T_ * sizeof(int32_t));
    if (!all || !*in || !*tg) rc = HY_ERR_NOMEM;
    else {
        memcpy(all, t->data, t->numel * sizeof(int32_t));
        for (int b = 0; rc == 0 && b < b_; b++) {
            memcpy(*in + (size_t)b * T_, all + (size_t)b * t1, (size_t)T_ * sizeof(int32_t));
            memcpy(*tg + (size_t)b * T_, all + (size_t)b * t1 + 1, (size_t)T_ * sizeof(int32_t));
        }
    }
    hy_free(all);
    hy_st_close(&f);
    if (rc < 0) {
        hy_free(*in), hy_free(*tg);
        *in = *tg = NULL;
        return rc;
    }
    *B = b_, *T = T_;
    return 0;
}

/* Writes logits, the three losses and grad.<name> of every parameter. */
static int write_out(const char *path, const hy_model *m, const hy_loss *l, int B, int T) {
    int n = m->n_params + 4;
    hy_st_entry *e = calloc((size_t)n, sizeof *e);
    char *names = malloc((size_t)m->n_params * 2 * HY_MAX_NAME + 1);
    if (!e || !names) {
        free(e), free(names);
        return HY_ERR_NOMEM;
    }
    static const char *const loss_names[] = {"loss", "ce_loss", "aux_loss"};
    const float losses[3] = {l->loss, l->ce_loss, l->aux_loss};
    e[0] = (hy_st_entry){.name = "logits", .dtype = HY_DT_F32, .ndim = 3, .shape = {B, T, m->cfg.vocab_size},
                         .data = hy_model_logits(m)};
    for (int k = 0; k < 3; k++) e[1 + k] = (hy_st_entry){.name = loss_names[k], .dtype = HY_DT_F32, .data = &losses[k]};
    for (int i = 0; i < m->n_params; i++) {
        const hy_param *p = &m->params[i];
        char *name = names + (size_t)i * 2 * HY_MAX_NAME;
        snprintf(name, 2 * HY_MAX_NAME, "grad.%s", p->name);
        e[4 + i] = (hy_st_entry){.name = name, .dtype = HY_DT_F32, .ndim = p->ndim, .data = p->grad};
        for (int d = 0; d < p->ndim; d++) e[4 + i].shape[d] = p->shape[d];
    }
    const char *keys[] = {"format"}, *vals[] = {"hybrid-dump"};
    int rc = hy_st_write(path, 1, keys, vals, n, e);
    free(e), free(names);
    return rc;
}

int hy_dump(const char *checkpoint, const char *batch, const char *out) {
    hy_model *m;
    int rc = hy_checkpoint_load(checkpoint, &m, NULL);
    if (rc < 0) return rc;
    int32_t *in = NULL, *tg = NULL;
    int B = 0, T = 0;
    hy_loss loss;
    rc = read_batch(batch, m->cfg.vocab_size, &in, &tg, &B, &T);
    if (rc == 0) rc = hy_model_forward(m, in, tg, B, T, true, &loss);
    if (rc == 0) {
        hy_model_zero_grad(m);
        rc = hy_model_backward(m);
    }
    if (rc == 0) rc = write_out(out, m, &loss, B, T);
    hy_free(in), hy_free(tg);
    hy_model_free(m);
    return rc;
}

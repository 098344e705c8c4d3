/* State files: a hy_model_state saved as safetensors (format "hybrid-state") and loaded back, so a
 * long context is encoded once and continued many times. Each block describes its own state as
 * named F32 tensors through the optional state_tensors/state_export/state_import ops of the
 * registry; this file only names, checks and moves them:
 *   layers.{i}.mixer.<name>, layers.{i}.ffn.<name>   every block's state tensors
 *   logits (B, V)                                      after the last consumed token (zeros before the first)
 *   __metadata__: format, config (the model's JSON), weights (fingerprint of the parameters),
 *                 position (tokens consumed), batch.
 * Loading checks every size against the file and the model (check_state_sizes) before it
 * allocates the state, so a crafted file cannot make it allocate more than its own length times
 * the model's per-sequence constants. */
#include "core/error.h"
#include "core/mem.h"
#include "models/checkpoint.h"
#include "models/model.h"
#include "models/safetensors.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATE_FORMAT "hybrid-state"
#define HY_STATE_MAX_BATCH (1 << 20)   /* sequences in one state file */

static const char *part_name(int s) { return s % 2 ? "ffn" : "mixer"; }

/* The block of sub-block s cannot be saved: the message names it. */
static int not_saveable(hy_layer *L, int s) {
    return hy_fail("layer %d %s '%s': this block's state cannot be saved or loaded (it does not implement the "
                   "registry's state_tensors/state_export/state_import ops)",
                   s / 2, part_name(s), L->ops->name);
}

int hy_model_state_save(hy_model *m, const hy_model_state *st, const char *path) {
    int S = 2 * m->cfg.n_layers, V = m->cfg.vocab_size, rc = 0, n = 0, cap = 16;
    hy_st_entry *e = calloc((size_t)cap, sizeof *e);
    char **names = calloc((size_t)cap, sizeof *names);
    float **bufs = calloc((size_t)cap, sizeof *bufs);
    char *config = NULL;
    if (!e || !names || !bufs) {
        rc = hy_fail_code(HY_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (int s = 0; s < S && rc == 0; s++) {
        hy_layer *L = hy_model_sub_block(m, s);
        void *bs = st->block_state[s];
        if (!L->ops || !bs) continue;   /* no block, or a stateless one */
        if (!L->ops->state_tensors || !L->ops->state_export) {
            rc = not_saveable(L, s);
            break;
        }
        int k = L->ops->state_tensors(L, bs, NULL);
        if (k < 0) {
            rc = k;
            break;
        }
        hy_state_tensor t[k > 0 ? k : 1];
        L->ops->state_tensors(L, bs, t);
        for (int i = 0; i < k && rc == 0; i++) {
            if (n + 1 >= cap) {   /* keep one slot for the logits */
                cap *= 2;
                void *ne = realloc(e, sizeof *e * cap), *nn = realloc(names, sizeof *names * cap),
                     *nb = realloc(bufs, sizeof *bufs * cap);
                if (ne) e = ne;
                if (nn) names = nn;
                if (nb) bufs = nb;
                if (!ne || !nn || !nb) {
                    rc = hy_fail_code(HY_ERR_NOMEM, "%s: out of memory", path);
                    break;
                }
            }
            if (t[i].ndim < 0 || t[i].ndim > 4) {
                rc = hy_fail("layer %d %s '%s': state tensor '%s' has %d dimensions (0..4 allowed)", s / 2, part_name(s),
                             L->ops->name, t[i].name, t[i].ndim);
                break;
            }
            names[n] = malloc(HY_MAX_NAME + HY_STATE_NAME);
            bufs[n] = hy_malloc(hy_state_tensor_numel(&t[i]) * sizeof(float));
            if (!names[n] || !bufs[n]) {
                rc = hy_fail_code(HY_ERR_NOMEM, "%s: out of memory", path);
                n++;
                break;
            }
            snprintf(names[n], HY_MAX_NAME + HY_STATE_NAME, "layers.%d.%s.%s", s / 2, part_name(s), t[i].name);
            e[n] = (hy_st_entry){.name = names[n], .dtype = HY_DT_F32, .ndim = t[i].ndim, .data = bufs[n]};
            for (int d = 0; d < t[i].ndim; d++) e[n].shape[d] = t[i].shape[d];
            n++;
            if ((rc = L->ops->state_export(L, bs, i, bufs[n - 1])) < 0)
                hy_error_prefix("layer %d %s '%s' state_export", s / 2, part_name(s), L->ops->name);
        }
    }
    if (rc < 0) goto done;
    /* always written (zeros before the first token), so every file holds data per sequence */
    e[n++] = (hy_st_entry){.name = "logits", .dtype = HY_DT_F32, .ndim = 2, .shape = {st->B, V}, .data = st->logits};
    if ((rc = hy_model_config_to_json(&m->cfg, &config)) < 0) goto done;
    char fp[32], pos[32], batch[32];
    hy_model_weights_fingerprint(m, fp, sizeof fp);
    snprintf(pos, sizeof pos, "%ld", st->pos);
    snprintf(batch, sizeof batch, "%d", st->B);
    const char *keys[] = {"format", "config", "weights", "position", "batch"};
    const char *vals[] = {STATE_FORMAT, config, fp, pos, batch};
    rc = hy_st_write(path, 5, keys, vals, n, e);
done:
    for (int i = 0; i < n; i++)
        if (e[i].data != st->logits) free(names[i]), hy_free(bufs[i]);
    free(e), free(names), free(bufs), free(config);
    return rc;
}

/* A non-negative integer of __metadata__ key, at most max. */
static int meta_long(const hy_st_file *f, const char *key, long max, long *out) {
    const char *v = hy_st_meta(f, key);
    if (!v) return hy_fail("%s: no '%s' in __metadata__ (not a state file written by hybrid?)", f->path, key);
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < 0 || x > max)
        return hy_fail("%s: __metadata__ %s '%.40s' is not an integer in [0, %ld]", f->path, key, v, max);
    *out = x;
    return 0;
}

/* Parses "layers.{i}.{mixer|ffn}.<name>" into the sub-block index and the name; -1 if not. */
static int parse_state_name(const char *full, int n_layers, const char **name) {
    int i, used = 0;
    if (sscanf(full, "layers.%d.%n", &i, &used) != 1 || used == 0 || i < 0 || i >= n_layers) return -1;
    const char *p = full + used;
    int part = !strncmp(p, "mixer.", 6) ? 0 : !strncmp(p, "ffn.", 4) ? 1 : -1;
    if (part < 0) return -1;
    *name = p + (part ? 4 : 6);
    return **name && strlen(*name) < HY_STATE_NAME ? 2 * i + part : -1;
}

/* "k (1, 19, 64), v (1, 20, 64)": the tensors of f for sub-block s (owner[k] = sub-block of
 * tensor k), for messages. */
static const char *block_shapes(const hy_st_file *f, const int *owner, int n_layers, int s, char *buf, size_t len) {
    size_t used = 0;
    const char *nm;
    buf[0] = 0;
    for (int k = 0; k < f->n_tensors && used < len; k++) {
        if (owner[k] != s) continue;
        char sh[96];
        parse_state_name(f->tensors[k].name, n_layers, &nm);
        used += (size_t)snprintf(buf + used, len - used, "%s%s %s", used ? ", " : "", nm,
                                 hy_st_shape_str(f->tensors[k].ndim, f->tensors[k].shape, sh, sizeof sh));
    }
    if (!buf[0]) snprintf(buf, len, "none");
    return buf;
}

/* owner[k] = the sub-block tensor k of f belongs to (-1 for the logits), from its name; refuses a
 * name that is neither, a block the model does not have, and more than HY_STATE_MAX_TENSORS
 * tensors for one block (so the per-block loops below stay linear in the model's size). */
static int tensor_owners(hy_model *m, const hy_st_file *f, int *owner) {
    int S = 2 * m->cfg.n_layers, *count = calloc((size_t)S, sizeof *count);
    const char *nm;
    if (!count) return hy_fail_code(HY_ERR_NOMEM, "%s: out of memory", f->path);
    int rc = 0;
    for (int k = 0; k < f->n_tensors && rc == 0; k++) {
        const char *name = f->tensors[k].name;
        owner[k] = -1;
        if (!strcmp(name, "logits")) continue;
        int s = owner[k] = parse_state_name(name, m->cfg.n_layers, &nm);
        if (s < 0) rc = hy_fail("%s: unexpected tensor '%.200s' (expected logits or layers.{i}.mixer|ffn.<name>)", f->path, name);
        else if (!hy_model_sub_block(m, s)->ops)
            rc = hy_fail("%s: tensor '%.200s' belongs to a block this model does not have", f->path, name);
        else if (++count[s] > HY_STATE_MAX_TENSORS)
            rc = hy_fail("%s: more than %d tensors for layer %d %s (a block's state has at most %d)", f->path,
                         HY_STATE_MAX_TENSORS, s / 2, part_name(s), HY_STATE_MAX_TENSORS);
    }
    free(count);
    return rc;
}

/* Checks every size in f against the state m would build for `batch` sequences at `pos` tokens,
 * before anything is allocated: each state tensor is F32 with the batch first; each block's
 * tensors hold exactly batch x its state_bytes(pos) (so a KV cache holds `pos` tokens); the
 * logits are (batch, V), and there once a token was consumed; and a batch above 1 is backed by
 * data in the file (so the memory the state takes is bounded by the file's length times the
 * model's per-sequence constants). */
static int check_state_sizes(hy_model *m, const hy_st_file *f, const int *owner, long batch, long pos) {
    const char *P = f->path;
    int S = 2 * m->cfg.n_layers, V = m->cfg.vocab_size;
    char sh[256];
    size_t *held = calloc((size_t)S, sizeof *held);   /* values in the file per sub-block */
    if (!held) return hy_fail_code(HY_ERR_NOMEM, "%s: out of memory", P);
    int rc = 0;
    for (int k = 0; k < f->n_tensors && rc == 0; k++) {
        const hy_st_tensor *t = &f->tensors[k];
        if (owner[k] < 0) continue;
        if (t->dtype != HY_DT_F32 || t->ndim < 1 || t->ndim > 4)
            rc = hy_fail("%s: tensor '%.200s' is %s with %d dimensions; a state tensor is F32 with 1 to 4 (the batch "
                         "first)", P, t->name, hy_dtype_name(t->dtype), t->ndim);
        else if (t->shape[0] != batch)
            rc = hy_fail("%s: tensor '%.200s' has shape %s, but __metadata__ batch is %ld (state tensors are (batch, ...))",
                         P, t->name, hy_st_shape_str(t->ndim, t->shape, sh, sizeof sh), batch);
        held[owner[k]] += t->numel;
    }
    size_t per_sequence = 0;   /* floats the file holds per sequence */
    for (int s = 0; s < S && rc == 0; s++) {
        hy_layer *L = hy_model_sub_block(m, s);
        if (!L->ops) continue;
        size_t want_seq = L->ops->state_bytes(&L->opts, m->cfg.d_model, (int)pos) / sizeof(float), want;
        if (want_seq > 0 && !L->ops->state_import) {
            rc = not_saveable(L, s);
            hy_error_prefix("%s", P);
        } else if (__builtin_mul_overflow(want_seq, (size_t)batch, &want) || held[s] != want)
            rc = hy_fail("%s: layer %d %s '%s': its state tensors hold %zu values (shapes: %s), but after %ld tokens "
                         "the block's state holds %zu values per sequence (batch %ld)", P, s / 2, part_name(s),
                         L->ops->name, held[s], block_shapes(f, owner, m->cfg.n_layers, s, sh, sizeof sh), pos, want_seq, batch);
        per_sequence += want_seq;
    }
    free(held);
    if (rc < 0) return rc;
    const hy_st_tensor *lg = hy_st_find(f, "logits");
    if (!lg && pos > 0) return hy_fail("%s: tensor 'logits' is missing (the state has consumed %ld tokens)", P, pos);
    if (lg) {
        int64_t shape[2] = {batch, V};
        if ((rc = hy_st_check(f, lg, HY_DT_F32, 2, shape, "the model's")) < 0) return rc;
        per_sequence += (size_t)V;
    }
    if (per_sequence == 0 && batch > 1)
        return hy_fail("%s: __metadata__ batch is %ld but the file holds nothing per sequence (no logits, and position 0 "
                       "in a model whose only state is a KV cache), so the batch cannot be checked against it", P, batch);
    return 0;
}

/* Hands sub-block s every tensor of f that belongs to it (owner[k] == s; copied to aligned buffers). */
static int import_block(hy_model *m, hy_model_state *st, const hy_st_file *f, const int *owner, int s) {
    hy_layer *L = hy_model_sub_block(m, s);
    int n = 0, rc = 0;
    const char *nm;
    for (int k = 0; k < f->n_tensors; k++) n += owner[k] == s;
    if (!st->block_state[s]) {
        if (n == 0) return 0;
        return hy_fail("%s: layer %d %s '%s' is stateless but the file holds state tensors for it", f->path, s / 2,
                       part_name(s), L->ops->name);
    }
    if (!L->ops->state_import) return not_saveable(L, s);
    hy_state_tensor *t = calloc((size_t)n + 1, sizeof *t);
    float **data = calloc((size_t)n + 1, sizeof *data);
    if (!t || !data) rc = HY_ERR_NOMEM;
    for (int k = 0, j = 0; rc == 0 && k < f->n_tensors; k++) {
        const hy_st_tensor *x = &f->tensors[k];
        if (owner[k] != s) continue;
        parse_state_name(x->name, m->cfg.n_layers, &nm);
        if (x->dtype != HY_DT_F32 || x->ndim > 4) {
            rc = hy_fail("%s: tensor '%s' must be F32 with at most 4 dimensions", f->path, x->name);
            break;
        }
        snprintf(t[j].name, HY_STATE_NAME, "%s", nm);
        t[j].ndim = x->ndim;
        for (int d = 0; d < x->ndim; d++) {
            if (x->shape[d] > (1 << 30)) {
                rc = hy_fail("%s: tensor '%s' is too large", f->path, x->name);
                break;
            }
            t[j].shape[d] = (int)x->shape[d];
        }
        if (rc < 0 || !(data[j] = hy_malloc(x->numel * sizeof(float) + 1))) {
            rc = rc < 0 ? rc : HY_ERR_NOMEM;
            break;
        }
        memcpy(data[j], x->data, x->numel * sizeof(float));
        j++;
    }
    if (rc == 0 && (rc = L->ops->state_import(L, st->block_state[s], n, t, (const float *const *)data)) < 0)
        hy_error_prefix("%s: layer %d %s", f->path, s / 2, part_name(s));
    for (int j = 0; data && j < n; j++) hy_free(data[j]);
    free(t), free(data);
    return rc;
}

int hy_model_state_load(hy_model *m, const char *path, hy_model_state **out) {
    *out = NULL;
    hy_st_file f;
    int rc = hy_st_open(path, &f);
    if (rc < 0) return rc;
    hy_model_state *st = NULL;
    char *config = NULL, fp[32];
    int *owner = NULL;   /* the sub-block of each tensor (-1: logits) */
    long pos = 0, batch = 0;
    const char *fmt = hy_st_meta(&f, "format"), *cfg = hy_st_meta(&f, "config"), *w = hy_st_meta(&f, "weights");
    if (!fmt || strcmp(fmt, STATE_FORMAT)) {
        rc = hy_fail("%s: not a state file (__metadata__ format is \"%.60s\", expected \"" STATE_FORMAT "\")", path,
                     fmt ? fmt : "");
        goto done;
    }
    if ((rc = hy_model_config_to_json(&m->cfg, &config)) < 0) goto done;
    if (!cfg || strcmp(cfg, config)) {
        rc = hy_fail("%s: the state was made by a different model (its config differs from the checkpoint's)", path);
        goto done;
    }
    hy_model_weights_fingerprint(m, fp, sizeof fp);
    if (!w || strcmp(w, fp)) {
        rc = hy_fail("%s: the state was made with different weights (fingerprint %.20s, this checkpoint's is %s)", path,
                     w ? w : "missing", fp);
        goto done;
    }
    if ((rc = meta_long(&f, "position", HY_MAX_POSITION, &pos)) < 0 ||
        (rc = meta_long(&f, "batch", HY_STATE_MAX_BATCH, &batch)) < 0)
        goto done;
    if (batch < 1) {
        rc = hy_fail("%s: __metadata__ batch must be >= 1", path);
        goto done;
    }
    if (!(owner = malloc(sizeof *owner * ((size_t)f.n_tensors + 1)))) {
        rc = hy_fail_code(HY_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    if ((rc = tensor_owners(m, &f, owner)) < 0 || (rc = check_state_sizes(m, &f, owner, batch, pos)) < 0) goto done;
    if ((rc = hy_model_state_new(m, (int)batch, &st)) < 0) goto done;
    for (int s = 0; s < 2 * m->cfg.n_layers && rc == 0; s++)
        if (hy_model_sub_block(m, s)->ops) rc = import_block(m, st, &f, owner, s);
    if (rc < 0) goto done;
    const hy_st_tensor *lg = hy_st_find(&f, "logits");   /* (batch, V), checked above; zeros at position 0 */
    if (lg && pos > 0) {
        memcpy(st->logits, lg->data, (size_t)batch * m->cfg.vocab_size * sizeof(float));
        st->have_logits = true;
    }
    st->pos = pos;
done:
    if (rc < 0) hy_model_state_free(m, st);
    else *out = st;
    free(config), free(owner);
    hy_st_close(&f);
    return rc;
}

/* Validation of a run's data and memory before anything is written (experiments/validate.h). */
#include "experiments/validate.h"
#include "core/error.h"
#include "core/gemm.h"
#include "core/mem.h"
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

const char *hy_format_bytes(double bytes, char *buf, size_t n) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    int u = 0;
    while (bytes >= 1024 && u < 6) bytes /= 1024, u++;
    if (u == 0) snprintf(buf, n, "%.0f B", bytes);
    else snprintf(buf, n, "%.*f %s", bytes < 10 ? 2 : bytes < 100 ? 1 : 0, bytes, units[u]);
    return buf;
}

void hy_check_cache_free(hy_check_cache *cache) {
    if (cache->open) hy_data_free(&cache->data);
    memset(cache, 0, sizeof *cache);
}

/* Whether run c tokenizes its text (data.tokenizer on a text corpus): its tokens are only known
 * after tokenizing, so validation checks the text and the tokenizer's size (the config did). */
static bool tokenizes(const hy_run_config *c, const hy_corpus *k) {
    return !k->tokens && (c->tokenizer[0] || c->tokenizer_vocab > 0);
}

int hy_run_check_data(const hy_run_config *c, const hy_data *d, char *desc, size_t desc_len) {
    char scratch[8];
    if (!desc) desc = scratch, desc_len = sizeof scratch;
    if (d->task.type != HY_TASK_NONE) {   /* the task's fit to vocab_size and seq_len: checked with the config */
        hy_data_describe(d, desc, desc_len);
        return 0;
    }
    const hy_corpus *k = &d->corpus;
    const char *unit = k->tokens ? "tokens" : "bytes", *what = c->train_path[0] ? c->train_path : c->corpus;
    const char *path;
    size_t offset, index;
    int tok, found = tokenizes(c, k) ? 1 : hy_corpus_find_token(k, c->model.vocab_size, &path, &offset, &index, &tok);
    if (found < 0) return found;
    if (found == 0 && !k->tokens)
        return hy_fail_code(HY_ERR_CONFIG, "%s: %d is too small for the byte corpus %s, whose bytes go up to %d (0x%02x): "
                                           "every byte must be a token below vocab_size (256 holds any byte); the first "
                                           "not below it is byte %d (0x%02x) at byte offset %zu of %s",
                            c->at_vocab_size, c->model.vocab_size, what, k->max_token, (unsigned)k->max_token, tok,
                            (unsigned)tok, offset, path);
    if (found == 0)
        return hy_fail_code(HY_ERR_CONFIG, "%s: %d is too small for the tokens of %s, which go up to %d; the first not "
                                           "below it is token %d at byte offset %zu (token %zu of the file) of %s",
                            c->at_vocab_size, c->model.vocab_size, what, k->max_token, tok, offset, index, path);
    size_t split[2] = {k->n_train, k->len - k->n_train};
    static const char *const names[2] = {"training", "validation"};
    for (int s = 0; s < 2; s++) {   /* text to tokenize: its bytes bound its tokens from above */
        if (split[s] >= (size_t)c->seq_len + 1) continue;
        if (c->train_path[0])
            return hy_fail_code(HY_ERR_CONFIG, "%s: %d needs windows of %d %s, but data.%s %s has %zu",
                                c->at_seq_len, c->seq_len, c->seq_len + 1, unit, s ? "val" : "train",
                                s ? c->val_path : c->train_path, split[s]);
        return hy_fail_code(HY_ERR_CONFIG, "%s: %d needs windows of %d %s, but the %s split of the corpus %s has %zu (%zu %s, "
                                           "data.val_fraction %g)",
                            c->at_seq_len, c->seq_len, c->seq_len + 1, unit, names[s], c->corpus, split[s], k->len, unit,
                            c->val_fraction);
    }
    const char *kind = c->train_path[0] ? "data.train" : "corpus";
    if (tokenizes(c, k))
        snprintf(desc, desc_len, "%s %s: %zu bytes in %d files, to be tokenized with %s; training split %zu and validation "
                                 "split %zu bytes",
                 kind, what, k->len, k->n_files, c->tokenizer[0] ? c->tokenizer : "a tokenizer trained on it", split[0],
                 split[1]);
    else
        snprintf(desc, desc_len, "%s %s: %zu %s in %d files%s%s%s, largest %s %d < vocab_size %d; training split %zu and "
                                 "validation split %zu %s, each holding a window of seq_len + 1",
                 kind, what, k->len, unit, k->n_files, k->tokenizer_vocab ? " (tokenizer " : "",
                 k->tokenizer_vocab ? k->tokenizer : "", k->tokenizer_vocab ? ")" : "", k->tokens ? "token" : "byte",
                 k->max_token, c->model.vocab_size, split[0], split[1], unit);
    return 0;
}

/* The run's data key for the cache: runs that read the same files the same way share one open. */
static void cache_key(const hy_run_config *c, char *out, size_t n) {
    snprintf(out, n, "%s|%s|%s|%.17g|%d", c->corpus, c->train_path, c->val_path, c->val_fraction, (int)c->data_format);
}

/* The run's data, from the cache when it holds the same corpus, else opened (into the cache when
 * given) without tokenizing anything (validation writes nothing). *d points at it; *own says the
 * caller must free it. */
static int open_data(const hy_run_config *c, hy_check_cache *cache, hy_data *mine, const hy_data **d, bool *own) {
    *own = false;
    bool corpus = c->task.type == HY_TASK_NONE;
    char key[sizeof cache->corpus];
    cache_key(c, key, sizeof key);
    if (corpus && cache && cache->open && !strcmp(cache->corpus, key)) {
        *d = &cache->data;
        return 0;
    }
    hy_data *dst = corpus && cache ? &cache->data : mine;
    if (corpus && cache) hy_check_cache_free(cache);
    hy_data_spec s;
    hy_run_data_spec(c, &s);
    s.tokenizer = NULL, s.tokenizer_vocab = 0, s.vocab_size = 0, s.min_tokens = 0;   /* checked by hy_run_check_data */
    int rc = hy_data_open(dst, &s, &c->task, c->seed);
    if (rc < 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", hy_last_error());
        return hy_fail_code(HY_ERR_CONFIG, "%s: %s", c->at_corpus, msg);
    }
    if (corpus && cache) {
        snprintf(cache->corpus, sizeof cache->corpus, "%s", key);
        cache->val_fraction = c->val_fraction, cache->open = true;
    } else *own = true;
    *d = dst;
    return 0;
}

int hy_run_validate(const hy_run_config *c, hy_check_cache *cache, hy_run_check *k) {
    memset(k, 0, sizeof *k);
    hy_data mine;
    const hy_data *d = NULL;
    bool own = false;
    int rc = open_data(c, cache, &mine, &d, &own);
    if (rc < 0) return rc;
    rc = hy_run_check_data(c, d, k->data_desc, sizeof k->data_desc);
    /* text is held in memory; token files are mapped (their windows' pages released), and text that is
     * tokenized is freed once its tokens are written */
    k->data = d->task.type == HY_TASK_NONE && !d->corpus.tokens && !tokenizes(c, &d->corpus) ? (double)d->corpus.len : 0;
    if (own) hy_data_free(&mine);
    if (rc < 0) return rc;
    k->threads = c->threads > 0 ? c->threads : omp_get_num_procs();
    int slots = strcmp(c->optimizer, "sgd") ? 2 : 1;
    if ((rc = hy_model_train_memory(&c->model, c->batch_size, c->seq_len, k->threads, slots, &k->model)) < 0) return rc;
    const hy_model_config *m = &c->model;
    k->params = (size_t)k->model.scalars;
    k->program = HY_PROGRAM_BYTES + HY_PROGRAM_BYTES_PER_THREAD * k->threads;
    /* bf16: the weights' bf16 copy, the calling thread's three conversion buffers (a product's
     * two inputs and a linear backward's output gradient) and a held operand (hy_gemm_bf16_hold:
     * a layer's input read by several products), each about the widest activation:
     * the logits (B·T × V) or a block's inner width (up to 4 d_model: Mamba's [x ; z]), and the
     * tile operands a kernel packs in bf16 for one call (attention's backward: five B·T × d_model
     * tensors at 2 bytes a value, 10 bytes per row and column; 16 leaves room for the rows padded
     * to tiles of 64 and the head columns to 16), and the rmsnorm outputs' bf16 copy (2·n_layers + 1
     * slots of B·T × d_model, 2 bytes a value: the layers' inputs the products read) */
    double rows = (double)c->batch_size * c->seq_len, tile_rows = (double)c->batch_size * (c->seq_len + 64);
    k->gemm = c->precision == HY_PREC_BF16 ? k->model.params / 2 + 8.0 * rows * fmax(m->vocab_size, 4.0 * m->d_model) +
                                                 16.0 * tile_rows * m->d_model +
                                                 2.0 * rows * m->d_model * (2.0 * m->n_layers + 1)
                                           : 0;
    k->total = k->model.total + k->data + k->program + k->gemm + 2 * rows * sizeof(int32_t);
    return 0;
}

/* The estimate and its parts, for messages and --check: "about X (parameters A, ...)". */
static void describe_memory(const hy_run_config *c, const hy_run_check *k, char *out, size_t n) {
    char t[32], p[32], g[32], o[32], a[32], s[32], d[32], r[32];
    int len = snprintf(out, n, "about %s at batch %d x %d with %d threads (parameters %s, gradients %s, %s moments %s, "
                       "activations %s, scratch %s, data %s, program %s",
                       hy_format_bytes(k->total, t, sizeof t), c->batch_size, c->seq_len, k->threads,
                       hy_format_bytes(k->model.params, p, sizeof p), hy_format_bytes(k->model.grads, g, sizeof g),
                       c->optimizer, hy_format_bytes(k->model.optimizer, o, sizeof o),
                       hy_format_bytes(k->model.activations, a, sizeof a), hy_format_bytes(k->model.scratch, s, sizeof s),
                       hy_format_bytes(k->data, d, sizeof d), hy_format_bytes(k->program, r, sizeof r));
    if (len > 0 && (size_t)len < n && k->gemm > 0)
        len += snprintf(out + len, n - (size_t)len, ", bf16 copies %s", hy_format_bytes(k->gemm, t, sizeof t));
    if (len > 0 && (size_t)len < n) snprintf(out + len, n - (size_t)len, ")");
}

int hy_run_check_memory(const hy_run_config *c, const hy_run_check *k, double available, const char *source) {
    if (k->total <= available) return 0;
    char est[600], av[32];
    describe_memory(c, k, est, sizeof est);
    return hy_fail_code(HY_ERR_CONFIG, "%s: the run needs %s, but %s is available (%s): lower train.batch_size, "
                                       "train.seq_len or the model, or pass --force to run anyway",
                        c->source, est, hy_format_bytes(available, av, sizeof av), source);
}

void hy_run_check_report(const hy_run_config *c, const hy_run_check *k, hy_strbuf *out) {
    char est[600];
    describe_memory(c, k, est, sizeof est);
    const hy_model_config *m = &c->model;
    hy_sb_printf(out, "  model: %zu parameters, d_model %d, %d layers, vocab_size %d\n", k->params, m->d_model, m->n_layers,
                 m->vocab_size);
    hy_sb_printf(out, "  data: %s\n", k->data_desc);
    hy_sb_printf(out, "  memory: %s\n", est);
}

/* Text to tokens, once: a corpus' text tokenized by a SentencePiece model into two llm.c shards,
 * and tokenizers trained on a corpus' training text, both kept in a cache folder under names
 * made of SHA-256 digests, so a second run (or every run of an experiment) reuses them. */
#include "core/error.h"
#include "core/fileio.h"
#include "core/sha256.h"
#include "core/timer.h"
#include "experiments/data.h"
#include "experiments/tokenizer.h"
#include "models/checkpoint.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int hy_tokenizer_table(const char *path, uint16_t **bytes, int *vocab, char sha256[65]) {
    *bytes = NULL, *vocab = 0;
    hy_tokenizer *t;
    int rc = hy_tokenizer_load(path, &t);
    if (rc < 0) return rc;
    int V = hy_tokenizer_vocab(t);
    uint16_t *b = malloc(sizeof *b * (size_t)(V > 0 ? V : 1));
    if (!b) rc = HY_ERR_NOMEM;
    for (int id = 0; rc == 0 && id < V; id++) {
        char piece[1];
        int n = hy_tokenizer_piece(t, id, piece, 0);
        if (n < 0) rc = n;
        else b[id] = (uint16_t)(n < 65535 ? n : 65535);
    }
    if (rc == 0) {
        memcpy(sha256, hy_tokenizer_sha256(t), 65);
        *bytes = b, *vocab = V;
    } else free(b);
    hy_tokenizer_free(t);
    return rc;
}

/* Adds split k of text corpus c to a digest: its length, then per span the file name, length
 * and bytes. */
static void hash_split(hy_sha256 *h, const hy_corpus *c, int k) {
    char tag[96];
    const hy_token_stream *s = &c->split[k];
    snprintf(tag, sizeof tag, "split %d: %zu bytes\n", k, s->len);
    hy_sha256_add(h, tag, strlen(tag));
    for (int i = 0; i < s->n_spans; i++) {
        const hy_token_span *sp = &s->spans[i];
        snprintf(tag, sizeof tag, "\n%zu %zu ", sp->offset, sp->n);
        hy_sha256_add(h, sp->path, strlen(sp->path));
        hy_sha256_add(h, tag, strlen(tag));
        hy_sha256_add(h, sp->data, sp->n);
    }
}

/* Whether a regular file exists at path. */
static bool exists(const char *path) { return access(path, R_OK) == 0; }

/* A piece of text to encode: at most CHUNK bytes, cut after a newline where there is one. */
typedef struct {
    const char *p;
    size_t n;
    int32_t *ids;
    size_t n_ids;
    int rc;
} chunk;
enum { CHUNK = 1 << 20, GROUP = 64 };

/* Cuts span sp into chunks appended to *ch (grown as needed). */
static int cut_span(const hy_token_span *sp, chunk **ch, int *n, int *cap) {
    const char *p = (const char *)sp->data, *end = p + sp->n;
    while (p < end) {
        size_t take = (size_t)(end - p) <= CHUNK ? (size_t)(end - p) : CHUNK;
        if (p + take < end) {
            const char *nl = memrchr(p, '\n', take);
            if (nl) take = (size_t)(nl - p) + 1;
        }
        if (*n == *cap) {
            *cap = *cap ? 2 * *cap : 256;
            chunk *nc = realloc(*ch, sizeof *nc * (size_t)*cap);
            if (!nc) return HY_ERR_NOMEM;
            *ch = nc;
        }
        (*ch)[(*n)++] = (chunk){.p = p, .n = take};
        p += take;
    }
    return 0;
}

/* Encodes split k of c into the shard at path: chunks in groups, each group encoded in parallel
 * and written in order. *tokens = how many. */
static int tokenize_split(const hy_corpus *c, int k, hy_tokenizer *t, const char *path, size_t *tokens) {
    chunk *ch = NULL;
    int n = 0, cap = 0, rc = 0;
    for (int i = 0; rc == 0 && i < c->split[k].n_spans; i++) rc = cut_span(&c->split[k].spans[i], &ch, &n, &cap);
    hy_shard_writer w;
    if (rc == 0) rc = hy_shard_open(&w, path, hy_tokenizer_vocab(t));
    for (int g = 0; rc == 0 && g < n; g += GROUP) {
        int m = n - g < GROUP ? n - g : GROUP;
#pragma omp parallel for schedule(dynamic)
        for (int i = g; i < g + m; i++) ch[i].rc = hy_tokenizer_encode(t, ch[i].p, ch[i].n, &ch[i].ids, &ch[i].n_ids);
        for (int i = g; i < g + m; i++) {
            if (rc == 0 && ch[i].rc < 0)   /* again on this thread, for the message */
                rc = hy_tokenizer_encode(t, ch[i].p, ch[i].n, &ch[i].ids, &ch[i].n_ids);
            if (rc == 0) rc = hy_shard_add(&w, ch[i].ids, ch[i].n_ids);
            free(ch[i].ids);
        }
    }
    if (rc == 0) {
        *tokens = w.n;
        rc = hy_shard_close(&w);
    } else if (w.f)
        hy_shard_abort(&w);
    free(ch);
    return rc;
}

int hy_tokenize_to_shard(const hy_corpus *c, int split, const char *tokenizer, const char *out, size_t *tokens) {
    hy_tokenizer *t;
    int rc = hy_tokenizer_load(tokenizer, &t);
    if (rc < 0) return rc;
    if (c->tokens) rc = hy_fail("%s: the input holds tokens already, not text", c->split[split].n_spans ? c->split[split].spans[0].path : "?");
    else rc = tokenize_split(c, split, t, out, tokens);
    hy_tokenizer_free(t);
    return rc;
}

int hy_tokenize_corpus(const hy_corpus *c, const char *tokenizer, const char *cache_dir, FILE *progress,
                       char train_path[HY_DATA_PATH_MAX], char val_path[HY_DATA_PATH_MAX]) {
    hy_tokenizer *t;
    int rc = hy_tokenizer_load(tokenizer, &t);
    if (rc < 0) return rc;
    hy_sha256 h;
    char text_hash[65];
    hy_sha256_init(&h);
    hash_split(&h, c, 0);
    hash_split(&h, c, 1);
    hy_sha256_hex(&h, text_hash);
    const char *tok_hash = hy_tokenizer_sha256(t);
    snprintf(train_path, HY_DATA_PATH_MAX, "%s/tokens-%.16s-%.16s.train.bin", cache_dir, tok_hash, text_hash);
    snprintf(val_path, HY_DATA_PATH_MAX, "%s/tokens-%.16s-%.16s.val.bin", cache_dir, tok_hash, text_hash);
    if (exists(train_path) && exists(val_path)) {
        hy_tokenizer_free(t);
        return 0;
    }
    if ((rc = hy_mkdirs(cache_dir)) < 0) {
        hy_tokenizer_free(t);
        return rc;
    }
    if (progress) {
        fprintf(progress, "[data] tokenizing %zu bytes of text (%d files) with %s ...\n", c->len, c->n_files, tokenizer);
        fflush(progress);
    }
    double t0 = hy_now();
    size_t n[2] = {0, 0};
    rc = tokenize_split(c, 0, t, train_path, &n[0]);
    if (rc == 0) rc = tokenize_split(c, 1, t, val_path, &n[1]);
    if (rc == 0 && progress) {
        fprintf(progress, "[data] %zu train + %zu validation tokens (%.2f bytes per token) in %.1f s: %s, %s\n", n[0], n[1],
                (double)c->len / (double)(n[0] + n[1] ? n[0] + n[1] : 1), hy_now() - t0, train_path, val_path);
        fflush(progress);
    }
    if (rc < 0) unlink(train_path);
    hy_tokenizer_free(t);
    return rc;
}

int hy_train_corpus_tokenizer(const hy_corpus *c, const char *type, int vocab, const char *cache_dir, FILE *progress,
                              char path[HY_DATA_PATH_MAX]) {
    if (!type || !*type) type = "bpe";
    hy_sha256 h;
    char text_hash[65];
    hy_sha256_init(&h);
    hash_split(&h, c, 0);
    hy_sha256_hex(&h, text_hash);
    snprintf(path, HY_DATA_PATH_MAX, "%s/tokenizer-%s%d-%.16s.model", cache_dir, type, vocab, text_hash);
    if (exists(path)) return 0;
    const hy_token_stream *s = &c->split[0];
    if (s->len == 0) return hy_fail("data.tokenizer: no training text to train a tokenizer on");
    int rc = hy_mkdirs(cache_dir);
    if (rc < 0) return rc;
    const char **text = malloc(sizeof *text * (size_t)s->n_spans);
    size_t *len = malloc(sizeof *len * (size_t)s->n_spans);
    if (!text || !len) rc = HY_ERR_NOMEM;
    for (int i = 0; rc == 0 && i < s->n_spans; i++) text[i] = (const char *)s->spans[i].data, len[i] = s->spans[i].n;
    if (rc == 0 && progress) {
        fprintf(progress, "[data] training a %s tokenizer of %d pieces on %zu bytes of training text ...\n", type, vocab,
                s->len);
        fflush(progress);
    }
    double t0 = hy_now();
    hy_tokenizer_train_opts o = {.type = type, .vocab = vocab, .threads = hy_threads()};
    if (rc == 0) rc = hy_tokenizer_train(text, len, s->n_spans, &o, path);
    if (rc == 0 && progress) {
        fprintf(progress, "[data] wrote %s in %.1f s\n", path, hy_now() - t0);
        fflush(progress);
    }
    free(text), free(len);
    return rc;
}

int hy_checkpoint_tokenizer(const char *ckpt, const char *given, int vocab_size, char path[HY_DATA_PATH_MAX], char *note,
                            size_t note_len) {
    path[0] = 0;
    if (note && note_len) note[0] = 0;
    hy_kv_list meta;
    int rc = hy_checkpoint_meta(ckpt, &meta);
    if (rc < 0) return rc;
    const char *data = hy_kv_get(&meta, "data"), *rec = hy_kv_get(&meta, "tokenizer"),
               *rec_sha = hy_kv_get(&meta, "tokenizer_sha256"), *rec_vocab = hy_kv_get(&meta, "tokenizer_vocab");
    bool has_given = given && *given;
    if (rec_sha) {   /* trained through a tokenizer: use that one, or one with the same SHA-256 */
        const char *use = has_given ? given : rec;
        char sha[65];
        if (!has_given && (!rec || access(rec, R_OK) != 0))
            rc = hy_fail_code(HY_ERR_CONFIG, "%s was trained with the tokenizer %s (sha256 %.16s…, %s pieces), which is "
                                             "not there: pass --tokenizer T.model",
                              ckpt, rec ? rec : "?", rec_sha, rec_vocab ? rec_vocab : "?");
        else if ((rc = hy_sha256_file(use, sha)) == 0 && strcmp(sha, rec_sha) != 0) {
            hy_tokenizer *t = NULL;
            int pieces = hy_tokenizer_load(use, &t) == 0 ? hy_tokenizer_vocab(t) : -1;
            hy_tokenizer_free(t);
            rc = hy_fail_code(HY_ERR_CONFIG, "%s (sha256 %.16s…, %d pieces) is not the tokenizer %s was trained with (%s, "
                                             "sha256 %.16s…, %s pieces)",
                              use, sha, pieces, ckpt, rec ? rec : "?", rec_sha, rec_vocab ? rec_vocab : "?");
        } else if (rc == 0)
            snprintf(path, HY_DATA_PATH_MAX, "%s", use);
    } else if (data && !strcmp(data, "bytes")) {
        if (has_given)
            rc = hy_fail_code(HY_ERR_CONFIG, "%s was trained on bytes (vocab_size %d), not on the tokens of a tokenizer: "
                                             "drop --tokenizer %s",
                              ckpt, vocab_size, given);
    } else if (has_given) {   /* tokens of an unknown tokenizer, or an older checkpoint: trusted, said so */
        hy_tokenizer *t;
        if ((rc = hy_tokenizer_load(given, &t)) == 0) {
            int V = hy_tokenizer_vocab(t);
            hy_tokenizer_free(t);
            if (V > vocab_size)
                rc = hy_fail_code(HY_ERR_CONFIG, "%s has %d pieces, more than the vocab_size %d of %s", given, V, vocab_size,
                                  ckpt);
            else {
                snprintf(path, HY_DATA_PATH_MAX, "%s", given);
                if (note)
                    snprintf(note, note_len, "%s records no tokenizer: %s is used without a check that it is the one the "
                                             "model was trained with",
                             ckpt, given);
            }
        }
    } else if (vocab_size > 256)
        rc = hy_fail_code(HY_ERR_CONFIG, "%s has vocab_size %d and records no tokenizer (%s): pass --tokenizer T.model",
                          ckpt, vocab_size, data ? data : "no data recorded");
    hy_kv_free(&meta);
    return rc;
}

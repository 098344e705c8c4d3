/* SentencePiece through the shim: train / encode / decode round trip on a small corpus; text
 * tokenized once into cached llm.c shards with the text bytes of every token accounted; bits per
 * byte (= loss / ln 2 for bytes, loss per byte of text for tokens); a run through a tokenizer
 * records it in the checkpoint; `eval` gives the training run's validation loss on the same
 * window; a checkpoint and a tokenizer that do not match are refused (library and `generate`). */
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "core/sha256.h"
#include "core/strbuf.h"
#include "experiments/data.h"
#include "experiments/tokenizer.h"
#include "experiments/train.h"
#include "models/checkpoint.h"
#include "models/generate.h"
#include "tests/testutil.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define CORPUS "tests/data/tiny-corpus.txt"

static char dir[256];

/* A tokenizer of `vocab` pieces of `type` trained on the tiny corpus, at dir/name. */
static void train_tokenizer(const char *name, const char *type, int vocab, char *path, size_t n) {
    size_t len;
    char *text = tu_slurp(NULL, CORPUS, &len);
    const char *texts[] = {text};
    hy_tokenizer_train_opts o = {.type = type, .vocab = vocab, .threads = 1};
    ck_assert_msg(hy_tokenizer_train(texts, &len, 1, &o, tu_path(path, n, dir, name)) == 0, "%s", hy_last_error());
    hy_free(text);
}

START_TEST(train_encode_decode_round_trip) {
    tu_fresh_dir(dir, sizeof dir, "tok-round", true);
    size_t len;
    char *text = tu_slurp(NULL, CORPUS, &len);
    static const char *const types[] = {"bpe", "unigram"};
    for (int k = 0; k < 2; k++) {
        char path[512];
        const int vocab = k ? 300 : 400;   /* unigram: at most 322 pieces on this small text */
        train_tokenizer(types[k], types[k], vocab, path, sizeof path);
        hy_tokenizer *t;
        ck_assert_msg(hy_tokenizer_load(path, &t) == 0, "%s", hy_last_error());
        ck_assert_int_eq(hy_tokenizer_vocab(t), vocab);
        char sha[65];
        ck_assert_int_eq(hy_sha256_file(path, sha), 0);
        ck_assert_str_eq(hy_tokenizer_sha256(t), sha);
        int32_t *ids;
        size_t n;
        ck_assert_int_eq(hy_tokenizer_encode(t, text, len, &ids, &n), 0);
        ck_assert_msg(n > 0 && n < len / 2, "%zu tokens for %zu bytes", n, len);   /* subwords, not bytes */
        char *back;
        size_t blen;
        ck_assert_int_eq(hy_tokenizer_decode(t, ids, n, &back, &blen), 0);
        ck_assert_uint_eq(blen, len);
        ck_assert(memcmp(back, text, len) == 0);   /* the text exactly: whitespace, newlines, every byte */
        /* the pieces, back to back, are the text too: what bits per byte counts */
        hy_strbuf pieces = {0};
        for (size_t i = 0; i < n; i++) {
            char p[256];
            int m = hy_tokenizer_piece(t, ids[i], p, sizeof p);
            ck_assert_int_ge(m, 0);
            hy_sb_addn(&pieces, p, (size_t)m);
        }
        ck_assert_uint_eq(pieces.len, len);
        ck_assert(memcmp(pieces.p, text, len) == 0);
        hy_sb_free(&pieces);
        /* a byte the training text never had falls back to a byte token */
        const char odd[] = "\x01\xe2\x82\xac\n";   /* a control byte and a euro sign */
        free(ids);
        ck_assert_int_eq(hy_tokenizer_encode(t, odd, 5, &ids, &n), 0);
        free(back);
        ck_assert_int_eq(hy_tokenizer_decode(t, ids, n, &back, &blen), 0);
        ck_assert(blen == 5 && memcmp(back, odd, 5) == 0);
        ck_assert_int_lt(hy_tokenizer_piece(t, vocab, NULL, 0), 0);   /* outside the vocabulary */
        free(ids), free(back);
        hy_tokenizer_free(t);
    }
    /* not a model: refused, named */
    char bad[512];
    hy_tokenizer *t;
    ck_assert_int_eq(hy_write_file_atomic(tu_path(bad, sizeof bad, dir, "bad.model"), "hello", 5), 0);
    ck_assert_int_ne(hy_tokenizer_load(bad, &t), 0);
    ck_assert_ptr_nonnull(strstr(hy_last_error(), "bad.model: not a SentencePiece model"));
    hy_free(text);
    tu_remove_dir(dir);
}
END_TEST

/* The sum of the text bytes of the tokens of split k. */
static double split_bytes(const hy_corpus *c, int k) {
    size_t n = c->split[k].len;
    int32_t *ids = malloc(sizeof *ids * (n + 1));
    hy_stream_read(&c->split[k], 0, n, ids);
    double b = 0;
    for (size_t i = 0; i < n; i++) b += hy_corpus_token_bytes(c, ids[i]);
    free(ids);
    return b;
}

START_TEST(text_tokenized_once_and_accounted) {
    tu_fresh_dir(dir, sizeof dir, "tok-cache", true);
    char model[512], cache[512];
    train_tokenizer("t.model", "bpe", 400, model, sizeof model);
    tu_path(cache, sizeof cache, dir, "cache");
    hy_data_spec s = {.corpus = CORPUS, .val_fraction = 0.25, .tokenizer = model, .cache_dir = cache, .vocab_size = 512,
                      .min_tokens = 33};
    hy_corpus c;
    ck_assert_msg(hy_corpus_open(&c, &s) == 0, "%s", hy_last_error());
    ck_assert(c.tokens);
    ck_assert_int_eq(c.tokenizer_vocab, 400);
    char sha[65];
    ck_assert_int_eq(hy_sha256_file(model, sha), 0);
    ck_assert_str_eq(c.tokenizer_sha256, sha);
    /* the splits are the byte corpus' splits, tokenized: every byte of text is in exactly one token */
    hy_corpus b;
    ck_assert_int_eq(hy_corpus_load(&b, CORPUS, 0.25), 0);
    ck_assert_double_eq(split_bytes(&c, 0), (double)b.n_train);
    ck_assert_double_eq(split_bytes(&c, 1), (double)(b.len - b.n_train));
    /* a byte corpus counts one byte per token */
    ck_assert_double_eq(split_bytes(&b, 1), (double)(b.len - b.n_train));
    hy_corpus_free(&b);
    /* the shards are in the cache under the tokenizer's and the text's hashes; a second open reuses them */
    const char *shard = c.split[0].spans[0].path;
    ck_assert_ptr_nonnull(strstr(shard, cache));
    char want[40];
    snprintf(want, sizeof want, "tokens-%.16s-", sha);
    ck_assert_ptr_nonnull(strstr(shard, want));
    struct stat st1, st2;
    ck_assert_int_eq(stat(shard, &st1), 0);
    char keep[1024];
    snprintf(keep, sizeof keep, "%s", shard);
    hy_corpus_free(&c);
    ck_assert_msg(hy_corpus_open(&c, &s) == 0, "%s", hy_last_error());
    ck_assert_str_eq(c.split[0].spans[0].path, keep);
    ck_assert_int_eq(stat(keep, &st2), 0);
    ck_assert(st1.st_ino == st2.st_ino && st1.st_mtime == st2.st_mtime);
    hy_corpus_free(&c);
    /* another split point is another text: other shards */
    s.val_fraction = 0.2;
    ck_assert_msg(hy_corpus_open(&c, &s) == 0, "%s", hy_last_error());
    ck_assert_str_ne(c.split[0].spans[0].path, keep);
    hy_corpus_free(&c);
    /* a model smaller than the tokenizer is refused */
    s.vocab_size = 300;
    ck_assert_int_ne(hy_corpus_open(&c, &s), 0);
    ck_assert_msg(strstr(hy_last_error(), "model.vocab_size 300"), "%s", hy_last_error());
    tu_remove_dir(dir);
}
END_TEST

/* The tiny config with overrides, trained; `data` (NULL: the tiny corpus) replaces its data
 * section (a YAML flow map). */
static void train_tiny_data(const char *out, const char *data, const char *const *extra, int n_extra, hy_train_result *r) {
    char set_out[600], cfg[600];
    snprintf(set_out, sizeof set_out, "out_dir=%s", out);
    const char *sets[16] = {set_out}, *src = "tests/configs/tiny-train.yaml";
    for (int i = 0; i < n_extra; i++) sets[1 + i] = extra[i];
    if (data) {   /* the tiny config's text with another data section */
        size_t len;
        char *text = tu_slurp(NULL, src, &len);
        const char *d = strstr(text, "data:\n"), *t = strstr(text, "train:\n");
        ck_assert(d && t && d < t);
        hy_strbuf b = {0};
        hy_sb_addn(&b, text, (size_t)(d - text));
        hy_sb_printf(&b, "data: %s\n%s", data, t);
        ck_assert_int_eq(hy_sb_write_file(&b, tu_path(cfg, sizeof cfg, dir, "cfg.yaml")), 0);
        hy_sb_free(&b);
        hy_free(text);
        src = cfg;
    }
    hy_run_config c;
    ck_assert_msg(hy_run_config_load(src, sets, 1 + n_extra, &c) == 0, "%s", hy_last_error());
    hy_train_opts o = {0};
    ck_assert_msg(hy_train(&c, &o, r) == 0, "%s", hy_last_error());
    hy_run_config_free(&c);
}

static void train_tiny(const char *out, const char *const *extra, int n_extra, hy_train_result *r) {
    train_tiny_data(out, NULL, extra, n_extra, r);
}

START_TEST(bits_per_byte_of_bytes_and_tokens) {
    tu_fresh_dir(dir, sizeof dir, "tok-bpb", true);
    char model[512], cache[512];
    train_tokenizer("t.model", "bpe", 400, model, sizeof model);
    hy_run_config rc;
    const char *sets[] = {"model.vocab_size=400"};
    ck_assert_int_eq(hy_run_config_load("tests/configs/tiny-train.yaml", sets, 1, &rc), 0);
    hy_model *m;
    ck_assert_int_eq(hy_model_create(&rc.model, 3, &m), 0);
    /* bytes: exactly loss / ln 2 */
    hy_corpus b;
    ck_assert_int_eq(hy_corpus_load(&b, CORPUS, 0.25), 0);
    hy_eval_result r;
    ck_assert_int_eq(hy_evaluate_corpus_windows(m, &b, 32, 4096, NULL, &r), 0);
    ck_assert_double_eq(r.bits_per_byte, r.loss / log(2.0));
    ck_assert_double_eq(r.bytes, (double)r.labels);
    hy_data d = {.corpus = b};
    ck_assert_int_eq(hy_evaluate_data(m, &d, 4, 32, 3, 1, false, &r), 0);
    ck_assert_double_eq(r.bits_per_byte, r.loss / log(2.0));
    hy_corpus_free(&b);
    /* a whole file scored once: more windows than one batch holds, then the tail window */
    ck_assert_int_eq(hy_corpus_load(&b, CORPUS, 1.0), 0);
    long pos_n[7];   /* 27025 targets: 3860 windows of 7 (two batches of at most 2340), a tail of 5 */
    ck_assert_int_eq(hy_evaluate_stream(m, &b, 1, 7, false, NULL, pos_n, &r), 0);
    ck_assert_uint_eq((size_t)r.labels, b.len - 1);   /* every byte after the first, once */
    ck_assert_int_eq(pos_n[0], 3861);
    ck_assert_int_eq(pos_n[4], 3861);
    ck_assert_int_eq(pos_n[5], 3860);
    ck_assert_double_eq(r.bits_per_byte, r.loss / log(2.0));
    hy_corpus_free(&b);
    /* tokens: the summed loss in bits over the text bytes of the targets */
    hy_data_spec s = {.corpus = CORPUS, .val_fraction = 0.25, .tokenizer = model, .cache_dir = tu_path(cache, sizeof cache, dir, "c")};
    hy_corpus c;
    ck_assert_msg(hy_corpus_open(&c, &s) == 0, "%s", hy_last_error());
    ck_assert_int_eq(hy_evaluate_stream(m, &c, 1, 32, false, NULL, NULL, &r), 0);
    int32_t first;
    hy_stream_read(&c.split[1], 0, 1, &first);
    ck_assert_double_eq(r.bytes, split_bytes(&c, 1) - hy_corpus_token_bytes(&c, first));   /* every target */
    ck_assert_uint_eq((size_t)r.labels, c.split[1].len - 1);
    ck_assert_double_eq_tol(r.bits_per_byte, r.loss * r.labels / log(2.0) / r.bytes, 1e-12);
    ck_assert(r.bits_per_byte < r.loss / log(2.0));   /* more than one byte per token */
    /* token files without a tokenizer: no bits per byte */
    hy_data_spec t = {.corpus = c.split[1].spans[0].path, .val_fraction = 1.0};
    hy_corpus u;
    ck_assert_msg(hy_corpus_open(&u, &t) == 0, "%s", hy_last_error());
    hy_eval_result ru;
    ck_assert_int_eq(hy_evaluate_stream(m, &u, 1, 32, false, NULL, NULL, &ru), 0);
    ck_assert_double_eq(ru.loss, r.loss);
    ck_assert(isnan(ru.bits_per_byte));
    hy_corpus_free(&u);
    hy_corpus_free(&c);
    hy_model_free(m);
    hy_run_config_free(&rc);
    tu_remove_dir(dir);
}
END_TEST

/* The last val_loss and val_bits_per_byte of train.csv in out. */
static void last_val(const char *out, double *loss, double *bpb) {
    char path[600];
    snprintf(path, sizeof path, "%s/train.csv", out);
    size_t len;
    char *csv = tu_slurp(NULL, path, &len), *line = csv, *last = NULL;
    for (; (line = strchr(line, '\n')) && line[1]; line++) last = line + 1;
    ck_assert_ptr_nonnull(last);
    const char *f = last;
    for (int k = 0; k < 7; k++) f = strchr(f, ',') + 1;
    *loss = atof(f);
    for (int k = 7; k < 14; k++) f = strchr(f, ',') + 1;   /* val_bits_per_byte: column 14 */
    *bpb = *f == '\n' || *f == ',' ? NAN : atof(f);
    hy_free(csv);
}

/* A validation file of exactly seq_len + 1 tokens has one window: the trainer's random validation
 * windows are all that window, so `eval` on the file gives the run's validation loss; the same
 * through the streaming step; and for tokens through a tokenizer the same bits per byte. */
START_TEST(eval_equals_training_validation) {
    tu_fresh_dir(dir, sizeof dir, "tok-eval", true);
    char train[512], val[512], out[512], cmd[3000], data[1800];
    size_t len;
    char *text = tu_slurp(NULL, CORPUS, &len);
    ck_assert_int_eq(hy_write_file_atomic(tu_path(train, sizeof train, dir, "train.txt"), text, 20000), 0);
    ck_assert_int_eq(hy_write_file_atomic(tu_path(val, sizeof val, dir, "val.txt"), text + 20000, 33), 0);
    snprintf(data, sizeof data, "{train: %s, val: %s}", train, val);
    const char *bytes_run[] = {"train.steps=10", "train.eval_batches=1"};
    hy_train_result r;
    train_tiny_data(tu_path(out, sizeof out, dir, "bytes"), data, bytes_run, 2, &r);
    double loss, bpb;
    last_val(out, &loss, &bpb);
    ck_assert_double_eq_tol(loss, r.val_loss, 1e-6);
    ck_assert_double_eq_tol(bpb, loss / log(2.0), 2e-6);
    char *o;
    for (int streaming = 0; streaming < 2; streaming++) {
        snprintf(cmd, sizeof cmd, "%s eval --checkpoint %s/checkpoint.safetensors --data %s --quiet%s --out %s/ev", tu_exe(), out,
                 val, streaming ? " --streaming" : "", out);
        ck_assert_int_eq(tu_run(cmd, false, &o, NULL), 0);
        /* "      32          1           32             32   LOSS   PPL   BPB" */
        const char *row = strstr(o, "\n      32 ");
        ck_assert_msg(row != NULL, "%s", o);
        int T;
        long w, n;
        double bytes, l, ppl, bits;
        ck_assert_int_eq(sscanf(row, "%d %ld %ld %lf %lf %lf %lf", &T, &w, &n, &bytes, &l, &ppl, &bits), 7);
        ck_assert(T == 32 && w == 1 && n == 32 && bytes == 32);   /* the default T: the training seq_len */
        ck_assert_msg(fabs(l - r.val_loss) < (streaming ? 1e-4 : 2e-6), "eval %f, training %f", l, r.val_loss);
        ck_assert_double_eq_tol(bits, l / log(2.0), 2e-6);
        free(o);
    }
    char path[600];
    size_t plen;
    snprintf(path, sizeof path, "%s/ev/position.csv", out);
    char *pos = tu_slurp(NULL, path, &plen);
    ck_assert_msg(!strncmp(pos, "eval_seq_len,position,loss,windows\n32,0,", 40), "%s", pos);
    hy_free(pos);
    /* tokens: train on shards through a tokenizer, validate on a shard of exactly 33 tokens */
    char model[512], tshard[512], vshard[512];
    train_tokenizer("t.model", "bpe", 400, model, sizeof model);
    hy_tokenizer *t;
    ck_assert_int_eq(hy_tokenizer_load(model, &t), 0);
    int32_t *ids;
    size_t n;
    ck_assert_int_eq(hy_tokenizer_encode(t, text, len, &ids, &n), 0);
    hy_tokenizer_free(t);
    hy_shard_writer w;
    ck_assert_int_eq(hy_shard_open(&w, tu_path(tshard, sizeof tshard, dir, "train.bin"), 400), 0);
    ck_assert_int_eq(hy_shard_add(&w, ids, n - 100), 0);
    ck_assert_int_eq(hy_shard_close(&w), 0);
    ck_assert_int_eq(hy_shard_open(&w, tu_path(vshard, sizeof vshard, dir, "val.bin"), 400), 0);
    ck_assert_int_eq(hy_shard_add(&w, ids + n - 100, 33), 0);
    ck_assert_int_eq(hy_shard_close(&w), 0);
    free(ids);
    snprintf(data, sizeof data, "{train: %s, val: %s, tokenizer: %s}", tshard, vshard, model);
    const char *tok_run[] = {"model.vocab_size=400", "train.steps=10", "train.eval_batches=1"};
    train_tiny_data(tu_path(out, sizeof out, dir, "tokens"), data, tok_run, 3, &r);
    last_val(out, &loss, &bpb);
    ck_assert(isfinite(bpb) && bpb < loss / log(2.0));
    snprintf(cmd, sizeof cmd, "%s eval --checkpoint %s/checkpoint.safetensors --data %s --seq-len 32 --quiet", tu_exe(), out,
             vshard);
    ck_assert_int_eq(tu_run(cmd, false, &o, NULL), 0);
    const char *row = strstr(o, "\n      32 ");
    ck_assert_msg(row != NULL, "%s", o);
    int T;
    long nw, nt;
    double bytes, l, ppl, bits;
    ck_assert_int_eq(sscanf(row, "%d %ld %ld %lf %lf %lf %lf", &T, &nw, &nt, &bytes, &l, &ppl, &bits), 7);
    ck_assert_msg(fabs(l - loss) < 2e-6 && fabs(bits - bpb) < 2e-6, "eval %f %f, training %f %f", l, bits, loss, bpb);
    free(o);
    hy_free(text);
    tu_remove_dir(dir);
}
END_TEST

/* data.tokenizer: {vocab}: the run trains a tokenizer on its training text, tokenizes, and its
 * checkpoint records the tokenizer; another tokenizer is refused by the library and by `generate`,
 * the recorded one decodes what the library generates. */
START_TEST(checkpoint_records_tokenizer_and_refuses_another) {
    tu_fresh_dir(dir, sizeof dir, "tok-ckpt", true);
    char out[512], other[512], ckpt[600], cmd[3000];
    hy_train_result r;
    const char *run_tok[] = {"data.tokenizer.vocab=300", "model.vocab_size=320", "train.steps=10"};
    train_tiny(tu_path(out, sizeof out, dir, "run"), run_tok, 3, &r);
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", out);
    hy_kv_list meta;
    ck_assert_int_eq(hy_checkpoint_meta(ckpt, &meta), 0);
    const char *tok = hy_kv_get(&meta, "tokenizer");
    ck_assert_ptr_nonnull(tok);
    ck_assert_msg(strstr(tok, "/run/tokenizer-bpe300-") && strstr(tok, ".model"), "%s", tok);
    char sha[65];
    ck_assert_int_eq(hy_sha256_file(tok, sha), 0);
    ck_assert_str_eq(hy_kv_get(&meta, "tokenizer_sha256"), sha);
    ck_assert_str_eq(hy_kv_get(&meta, "tokenizer_vocab"), "300");
    ck_assert_str_eq(hy_kv_get(&meta, "data"), "tokens");
    ck_assert_str_eq(hy_kv_get(&meta, "seq_len"), "32");
    char recorded[1024];
    snprintf(recorded, sizeof recorded, "%s", tok);
    hy_kv_free(&meta);
    /* the library: the recorded one by default, a copy of it by content, another one refused */
    char path[HY_DATA_PATH_MAX], note[512], copy[512];
    ck_assert_int_eq(hy_checkpoint_tokenizer(ckpt, NULL, 320, path, note, sizeof note), 0);
    ck_assert_str_eq(path, recorded);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", recorded, tu_path(copy, sizeof copy, dir, "copy.model"));
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_int_eq(hy_checkpoint_tokenizer(ckpt, copy, 320, path, note, sizeof note), 0);
    ck_assert_str_eq(path, copy);
    train_tokenizer("other.model", "unigram", 300, other, sizeof other);
    ck_assert_int_eq(hy_checkpoint_tokenizer(ckpt, other, 320, path, note, sizeof note), HY_ERR_CONFIG);
    const char *e = hy_last_error();
    ck_assert_msg(strstr(e, "other.model") && strstr(e, "is not the tokenizer") && strstr(e, recorded), "%s", e);
    /* a byte model takes no tokenizer */
    hy_train_result rb;
    char bytes_out[512], bytes_ckpt[600];
    const char *run_bytes[] = {"train.steps=2"};
    train_tiny(tu_path(bytes_out, sizeof bytes_out, dir, "bytes"), run_bytes, 1, &rb);
    snprintf(bytes_ckpt, sizeof bytes_ckpt, "%s/checkpoint.safetensors", bytes_out);
    ck_assert_int_eq(hy_checkpoint_tokenizer(bytes_ckpt, NULL, 256, path, note, sizeof note), 0);
    ck_assert_str_eq(path, "");
    ck_assert_int_eq(hy_checkpoint_tokenizer(bytes_ckpt, other, 256, path, note, sizeof note), HY_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(hy_last_error(), "was trained on bytes"));
    /* generate: another tokenizer is a usage error (exit 2, both named), the recorded one decodes */
    char *o;
    snprintf(cmd, sizeof cmd, "%s generate --checkpoint %s --tokenizer %s --prompt 'def ' -n 5", tu_exe(), ckpt, other);
    ck_assert_int_eq(tu_run(cmd, true, &o, NULL), 2);
    ck_assert_msg(strstr(o, "is not the tokenizer") && strstr(o, "other.model"), "%s", o);
    free(o);
    hy_model *m;
    ck_assert_int_eq(hy_checkpoint_load(ckpt, &m, NULL), 0);
    hy_tokenizer *t;
    ck_assert_int_eq(hy_tokenizer_load(recorded, &t), 0);
    int32_t *pt, gen[20];
    size_t np;
    ck_assert_int_eq(hy_tokenizer_encode(t, "def ", 4, &pt, &np), 0);
    hy_model_state *st;
    ck_assert_int_eq(hy_model_state_new(m, 1, &st), 0);
    hy_sample_opts g = {.temperature = 0, .top_k = 0, .top_p = 1};
    ck_assert_int_eq(hy_generate(m, st, pt, (int)np, 20, &g, NULL, NULL, gen), 20);
    hy_strbuf want = {0};
    for (int i = 0; i < 20; i++) {
        char p[256];
        int k = hy_tokenizer_piece(t, gen[i], p, sizeof p);
        hy_sb_addn(&want, p, (size_t)(k > 0 ? k : 0));
    }
    snprintf(cmd, sizeof cmd, "%s generate --checkpoint %s --prompt 'def ' -n 20 --temperature 0 --quiet", tu_exe(), ckpt);
    ck_assert_int_eq(tu_run(cmd, false, &o, NULL), 0);
    ck_assert_uint_eq(strlen(o), want.len);
    ck_assert(memcmp(o, want.p, want.len) == 0);
    free(o);
    hy_sb_free(&want);
    free(pt);
    hy_model_state_free(m, st);
    hy_model_free(m);
    hy_tokenizer_free(t);
    /* a vocabulary over 256 without any tokenizer: refused with the way out named */
    snprintf(cmd, sizeof cmd, "mv '%s' '%s.away' && %s generate --checkpoint %s --prompt x -n 1", recorded, recorded,
             tu_exe(), ckpt);
    ck_assert_int_eq(tu_run(cmd, true, &o, NULL), 2);
    ck_assert_msg(strstr(o, "which is not there: pass --tokenizer"), "%s", o);
    free(o);
    tu_remove_dir(dir);
}
END_TEST

/* `tokenizer train` writes a model; `tokenize` writes an llm.c shard whose tokens decode to the text. */
START_TEST(cli_tokenizer_train_and_tokenize) {
    tu_fresh_dir(dir, sizeof dir, "tok-cli", true);
    char model[512], shard[512], cmd[2048], *o;
    tu_path(model, sizeof model, dir, "t.model");
    tu_path(shard, sizeof shard, dir, "t.bin");
    snprintf(cmd, sizeof cmd, "%s tokenizer train --data %s --vocab 350 --val-fraction 0.1 --threads 1 --out %s", tu_exe(),
             CORPUS, model);
    ck_assert_int_eq(tu_run(cmd, true, &o, NULL), 0);
    ck_assert_msg(strstr(o, "350 pieces, trained on 24324 bytes of text (1 files)"), "%s", o);   /* the first 90% */
    free(o);
    snprintf(cmd, sizeof cmd, "%s tokenize --tokenizer %s %s --out %s", tu_exe(), model, CORPUS, shard);
    ck_assert_int_eq(tu_run(cmd, true, &o, NULL), 0);
    free(o);
    hy_data_spec s = {.corpus = shard, .val_fraction = 1.0, .format = HY_DATA_LLMC, .tokenizer = model, .vocab_size = 350};
    hy_corpus c;
    ck_assert_msg(hy_corpus_open(&c, &s) == 0, "%s", hy_last_error());
    size_t n = c.split[1].len, len;
    int32_t *ids = malloc(sizeof *ids * n);
    hy_stream_read(&c.split[1], 0, n, ids);
    hy_tokenizer *t;
    ck_assert_int_eq(hy_tokenizer_load(model, &t), 0);
    char *back, *text = tu_slurp(NULL, CORPUS, &len);
    size_t blen;
    ck_assert_int_eq(hy_tokenizer_decode(t, ids, n, &back, &blen), 0);
    ck_assert(blen == len && memcmp(back, text, len) == 0);
    free(back), free(ids), hy_free(text);
    hy_tokenizer_free(t);
    hy_corpus_free(&c);
    /* usage errors exit 2 */
    const char *bad[] = {"tokenizer train --data x --vocab 100 --out y", "tokenizer train --data x --out y",
                         "tokenizer fit", "tokenize x.txt --out y.bin", "tokenizer train --data x --vocab 400 --out y --type wordpiece"};
    for (int k = 0; k < 5; k++) {
        snprintf(cmd, sizeof cmd, "%s %s 2>/dev/null", tu_exe(), bad[k]);
        ck_assert_int_eq(tu_run(cmd, false, &o, NULL), 2);
        free(o);
    }
    tu_remove_dir(dir);
}
END_TEST

static Suite *tokenizer_suite(void) {
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("tokenizer");
    tcase_add_test(tc, train_encode_decode_round_trip);
    tcase_add_test(tc, text_tokenized_once_and_accounted);
    tcase_add_test(tc, bits_per_byte_of_bytes_and_tokens);
    tcase_add_test(tc, eval_equals_training_validation);
    tcase_add_test(tc, checkpoint_records_tokenizer_and_refuses_another);
    tcase_add_test(tc, cli_tokenizer_train_and_tokenize);
    suite_add_tcase(s, tc);
    return s;
}
HY_TEST_SUITE(tokenizer_suite)

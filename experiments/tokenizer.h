/* Subword tokenizers: SentencePiece models (BPE or unigram, the .model format Llama-family models
 * ship) through a thin C++ shim (tokenizer_sp.cc); everything else in the project calls this C
 * API. Errors are recorded with hy_fail and name the model file. */
#ifndef HY_EXPERIMENTS_TOKENIZER_H
#define HY_EXPERIMENTS_TOKENIZER_H
#include <stddef.h>
#include <stdint.h>

typedef struct hy_tokenizer hy_tokenizer;

/* Loads a SentencePiece model file; also takes its SHA-256 (hy_tokenizer_sha256). */
int hy_tokenizer_load(const char *path, hy_tokenizer **out);
void hy_tokenizer_free(hy_tokenizer *t);
int hy_tokenizer_vocab(const hy_tokenizer *t);            /* pieces: ids 0 .. vocab-1 */
const char *hy_tokenizer_sha256(const hy_tokenizer *t);   /* of the model file, 64 hex digits */
const char *hy_tokenizer_path(const hy_tokenizer *t);

/* Encodes len bytes of text into *ids (malloc'd, free()), *n tokens. */
int hy_tokenizer_encode(const hy_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n);
/* The text bytes token `id` stands for, written to out (at most cap bytes); returns their count
 * (which may exceed cap: then only cap were written) or negative for an id outside the
 * vocabulary. A normal piece is its text with U+2581 as a space, a byte-fallback piece <0xNN> is
 * that byte, a control or unknown token is empty. */
int hy_tokenizer_piece(const hy_tokenizer *t, int id, char *out, size_t cap);
/* The decoded text of n ids (SentencePiece's own decoder), malloc'd with a NUL appended. */
int hy_tokenizer_decode(const hy_tokenizer *t, const int32_t *ids, size_t n, char **text, size_t *len);

/* Training: the model type ("bpe" or "unigram"), its vocabulary size, and how many input lines
 * (sentences) to sample at most (0 = all). The trainer reads every line of the texts given. */
typedef struct {
    const char *type;
    int vocab;
    long max_sentences;
    int threads;             /* 0 = all cores */
} hy_tokenizer_train_opts;

/* Trains a model on n texts (text[i] of len[i] bytes, each cut into lines) and writes it to
 * out_path atomically. The model keeps text exactly: no normalization, no added or removed
 * whitespace, bytes outside the vocabulary fall back to byte tokens, so decode(encode(s)) = s. */
int hy_tokenizer_train(const char *const *text, const size_t *len, int n, const hy_tokenizer_train_opts *o,
                       const char *out_path);

#endif

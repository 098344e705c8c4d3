/* Training data: text read as bytes, or token files memory-mapped (nanoGPT's raw uint16 .bin,
 * llm.c's shards), or text tokenized once by a SentencePiece model and cached as llm.c shards.
 * A corpus has a train and a validation split, each a stream of tokens made of spans of its
 * files, and is sampled as random windows of seq_len+1 tokens. Token files are never read whole:
 * they are scanned once in pieces (header, length, largest token) and then mapped. */
#ifndef HY_EXPERIMENTS_DATA_H
#define HY_EXPERIMENTS_DATA_H
#include "core/rng.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define HY_DATA_PATH_MAX 1024

/* llm.c's shard header: 256 little-endian int32, [0] magic, [1] version, [2] token count, then the
 * tokens. GPT-2 shards: uint16 tokens; Llama-3 shards: uint32 tokens. */
#define HY_LLMC_HEADER_BYTES 1024
#define HY_LLMC_MAGIC 20240520
#define HY_LLMC_VERSION 1
#define HY_LLMC32_MAGIC 20240801
#define HY_LLMC32_VERSION 7

/* data.format: how files are read. auto: a file that starts with an llm.c magic is a shard, a
 * *.bin file is nanoGPT's raw uint16, a file with a NUL byte in its first 4 KiB is skipped, any
 * other file is text. bytes: text only (bytes are the tokens). tokens: shards and raw uint16 by
 * the same header test, no text. llmc / nanogpt: only that format (a file without the magic is an
 * error for llmc). */
typedef enum { HY_DATA_AUTO, HY_DATA_BYTES, HY_DATA_TOKENS, HY_DATA_LLMC, HY_DATA_NANOGPT } hy_data_format;
const char *hy_data_format_name(hy_data_format f);
extern const char *const hy_data_format_words[];   /* the names, indexed by hy_data_format, NULL-ended */

/* Where the data comes from and what it must satisfy. */
typedef struct {
    const char *corpus;          /* one file, folder or glob, or "default" (NULL/""): split by val_fraction */
    const char *train, *val;     /* or a training and a validation source (both set; corpus then unused) */
    double val_fraction;         /* the last fraction of corpus (file order) is validation; 1 = all of it */
    hy_data_format format;
    const char *tokenizer;       /* a SentencePiece model: text is tokenized with it; token files are
                                    scored with it (bits per byte); NULL/"" = none */
    int tokenizer_vocab;         /* > 0 without tokenizer: train a model of this many pieces on the
                                    training text, once, kept in cache_dir */
    const char *tokenizer_type;  /* "bpe" (default) or "unigram", for tokenizer_vocab */
    const char *cache_dir;       /* where tokenized text and trained tokenizers are kept */
    int vocab_size;              /* > 0: every token must be below it (the model's vocabulary) */
    long min_tokens;             /* > 0: each split must hold at least this many tokens (seq_len + 1) */
    FILE *progress;              /* a line per tokenization or tokenizer training; NULL = silent */
} hy_data_spec;

/* A run of consecutive tokens of one file. */
typedef struct {
    const char *path;
    const uint8_t *data;   /* the first token */
    size_t n, start;       /* tokens; index of data[0] in the stream */
    size_t offset;         /* byte offset of data[0] in its file */
    int width;             /* bytes per token: 1 (text), 2 (uint16), 4 (uint32) */
} hy_token_span;

typedef struct {
    hy_token_span *spans;
    int n_spans;
    size_t len;            /* tokens */
} hy_token_stream;

typedef struct hy_data_file hy_data_file;

typedef struct {
    hy_token_stream split[2];   /* 0: train, 1: validation */
    size_t len, n_train;        /* tokens in both splits, in the train split */
    int n_files;                /* files with at least one token */
    bool tokens;                /* token ids (token files or tokenized text), not text bytes */
    int max_token;              /* the largest token of either split */
    /* the tokenizer, when the tokens came from one (or were declared to): its file, SHA-256 and
     * vocabulary, and the text bytes each token id stands for (bits per byte); NULL without one */
    char tokenizer[HY_DATA_PATH_MAX], tokenizer_sha256[65];
    int tokenizer_vocab;
    uint16_t *token_bytes;
    /* private */
    hy_data_file *files;
    int n_entries;              /* files[] (empty files included) */
    uint8_t *text;              /* text files' bytes, which text spans point into */
} hy_corpus;

/* Opens the data of s: collects the files (a folder recursively, sorted by path, names starting
 * with '.' and symlinks skipped; a path with * ? [ is a glob), reads text, maps and checks token
 * files, tokenizes text when a tokenizer is given (cached in cache_dir under the tokenizer's and
 * the text's SHA-256), and checks every token against vocab_size. Errors name the file and, for a
 * bad token, its byte offset. */
int hy_corpus_open(hy_corpus *c, const hy_data_spec *s);
/* The byte corpus at path (a file, folder, glob or "default"), split by val_fraction. */
int hy_corpus_load(hy_corpus *c, const char *path, double val_fraction);
void hy_corpus_free(hy_corpus *c);

/* The validation a config gets before anything is written: the files exist and parse, text is
 * there to tokenize, and every token (byte, for text without a tokenizer) is below
 * s->vocab_size; tokenizes and trains nothing. 0, or negative with the file and offset named. */
int hy_data_check(const hy_data_spec *s);
/* Whether every token of c is below vocab_size; the error (HY_ERR_CONFIG) names the file and byte
 * offset of the first token that is not. */
int hy_corpus_check_vocab(const hy_corpus *c, int vocab_size);
/* The first token of c (train split, then validation) that is not below limit: its file, byte
 * offset and index in the file, and its value. 0 when found, 1 when none, negative on a read error. */
int hy_corpus_find_token(const hy_corpus *c, int limit, const char **path, size_t *offset, size_t *index, int *value);

/* Tokens [start, start+n) of stream s as int32 (across file boundaries). The pages of a mapped
 * file are released from the process once copied, so reading keeps the resident memory constant
 * however much of a file is read. */
void hy_stream_read(const hy_token_stream *s, size_t start, size_t n, int32_t *out);
/* The text bytes token `tok` stands for: 1 for text bytes, the tokenizer's count for tokens, NAN
 * when tokens have no tokenizer (bits per byte unknown). */
double hy_corpus_token_bytes(const hy_corpus *c, int32_t tok);

/* B windows of T+1 tokens from the train or validation split: inputs = window[0..T),
 * targets = window[1..T]. Each window's start is drawn from rng. */
int hy_corpus_batch(const hy_corpus *c, int validation, hy_rng *rng, int B, int T, int32_t *inputs,
                    int32_t *targets);
/* "corpus N bytes (F files)", "tokens N (F files, max id M)", "tokens N (F files; T.model, V pieces)". */
void hy_corpus_describe(const hy_corpus *c, char *out, size_t len);

/* ---- writing llm.c shards ---- */

/* Tokens appended to PATH.tmp.<pid>; close writes the count into the header, fsyncs and renames:
 * a reader never sees a half-written shard. uint16 tokens (GPT-2 header) when vocab <= 65536,
 * else uint32 (Llama-3 header). */
typedef struct {
    FILE *f;
    char path[HY_DATA_PATH_MAX], tmp[HY_DATA_PATH_MAX + 32];
    size_t n;
    int width;
} hy_shard_writer;
int hy_shard_open(hy_shard_writer *w, const char *path, int vocab);
int hy_shard_add(hy_shard_writer *w, const int32_t *ids, size_t n);
int hy_shard_close(hy_shard_writer *w);
void hy_shard_abort(hy_shard_writer *w);   /* removes the temporary file */

/* ---- tokenizers (data_tokenize.c) ---- */

/* The text bytes of every token id of the SentencePiece model at path (malloc'd, *vocab ids),
 * with its SHA-256. */
int hy_tokenizer_table(const char *path, uint16_t **bytes, int *vocab, char sha256[65]);
/* Text c (a byte corpus) tokenized into two shards (train, validation) in cache_dir, named by
 * the SHA-256 of the tokenizer and of the text (file names, lengths, bytes, split point): the
 * second call with the same text and tokenizer reuses them. Fills the paths. */
int hy_tokenize_corpus(const hy_corpus *c, const char *tokenizer, const char *cache_dir, FILE *progress,
                       char train_path[HY_DATA_PATH_MAX], char val_path[HY_DATA_PATH_MAX]);
/* Split `split` of text corpus c tokenized into one llm.c shard at out (*tokens of them). */
int hy_tokenize_to_shard(const hy_corpus *c, int split, const char *tokenizer, const char *out, size_t *tokens);
/* A tokenizer of `vocab` pieces of `type` trained on the train split of text corpus c, kept as
 * cache_dir/tokenizer-<type><vocab>-<text hash>.model (reused when there). Fills path. */
int hy_train_corpus_tokenizer(const hy_corpus *c, const char *type, int vocab, const char *cache_dir, FILE *progress,
                              char path[HY_DATA_PATH_MAX]);
/* The tokenizer to read and write text for the checkpoint at ckpt (of vocab_size tokens): a
 * checkpoint records the one it was trained through (file, SHA-256, pieces); `given` (NULL: that
 * recorded file) must have the same SHA-256. path = "" when the model reads bytes. A checkpoint of
 * tokens without a recorded tokenizer takes `given` unchecked (note says so), or none when it has
 * at most 256 tokens. A mismatch, a tokenizer given to a byte model, or a missing one:
 * HY_ERR_CONFIG with both files named. */
int hy_checkpoint_tokenizer(const char *ckpt, const char *given, int vocab_size, char path[HY_DATA_PATH_MAX], char *note,
                            size_t note_len);

#endif

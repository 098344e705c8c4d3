/* Validation of a run beyond its config file, done before anything is written: the data (the
 * corpus exists, holds text, fits the vocabulary and is long enough for seq_len; a task fits the
 * model), and the memory a training step needs (hy_model_train_memory, plus the data and the
 * program) against what the machine has available. `hybrid-exp CONFIG --check` runs it alone. */
#ifndef HY_EXPERIMENTS_VALIDATE_H
#define HY_EXPERIMENTS_VALIDATE_H
#include "core/strbuf.h"
#include "experiments/config.h"
#include "experiments/tasks.h"

/* The program itself (code, libraries, thread stacks and library buffers), outside the tracked
 * allocations: measured peak resident size of a tiny run less its tracked bytes (docs/cli.md). */
#define HY_PROGRAM_BYTES (16.0 * 1048576)
#define HY_PROGRAM_BYTES_PER_THREAD (1.0 * 1048576)

/* What hy_run_validate found out about a run. */
typedef struct {
    size_t params;             /* scalars */
    int threads;               /* the run's thread count (0 in the config = every core) */
    hy_train_memory model;     /* a training step on (batch_size, seq_len) */
    double data;               /* the corpus held in memory (0 for a task) */
    double program;            /* HY_PROGRAM_BYTES + per thread */
    double gemm;               /* compute.precision bf16: the weights' bf16 copy and the conversion buffers */
    double total;              /* the estimated peak: the sum of the above */
    char data_desc[600];       /* what was checked about the data, for --check */
} hy_run_check;

/* Corpora loaded by earlier checks, so that runs of an experiment that share a corpus load it once.
 * Zero-initialised = empty; free with hy_check_cache_free. */
typedef struct {
    hy_data data;
    char corpus[3 * HY_PATH_MAX + 64];   /* which data: corpus, train, val, val_fraction, format */
    double val_fraction;
    bool open;
} hy_check_cache;
void hy_check_cache_free(hy_check_cache *cache);

/* The data check of a run whose data d is open (not tokenized): every token (every byte of text)
 * < vocab_size, the error naming the file and offset, and both splits must hold a window of
 * seq_len + 1 tokens. Text that the run tokenizes is checked for its bytes only (the tokenizer's
 * size against vocab_size is the config's check). HY_ERR_CONFIG with the config key's location
 * otherwise. desc (may be NULL) gets what was checked. */
int hy_run_check_data(const hy_run_config *c, const hy_data *d, char *desc, size_t desc_len);
/* Opens the run's data (through cache when given; tokenizing nothing), checks it (hy_run_check_data)
 * and estimates the memory of its training into *k. Missing, empty or malformed data are
 * HY_ERR_CONFIG located at data.corpus (or data.train). */
int hy_run_validate(const hy_run_config *c, hy_check_cache *cache, hy_run_check *k);
/* Refuses (HY_ERR_CONFIG) a run whose estimate k->total is above `available` bytes (from `source`),
 * with the estimate and its parts in the message. */
int hy_run_check_memory(const hy_run_config *c, const hy_run_check *k, double available, const char *source);
/* The lines `--check` prints about a run: model, data, memory. */
void hy_run_check_report(const hy_run_config *c, const hy_run_check *k, hy_strbuf *out);
/* "512 B", "3.0 KiB", "1.25 GiB": bytes for messages. */
const char *hy_format_bytes(double bytes, char *buf, size_t n);

#endif

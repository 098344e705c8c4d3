/* Byte corpora: a file or a folder of text files, split in file order into train (first part)
 * and validation (last val_fraction), sampled as random windows of seq_len+1 bytes. */
#ifndef HY_EXPERIMENTS_DATA_H
#define HY_EXPERIMENTS_DATA_H
#include "core/rng.h"
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t *bytes;
    size_t len, n_train;      /* train = bytes[0, n_train), validation = bytes[n_train, len) */
    int n_files;
} hy_corpus;

/* path: a file, a folder (every regular, non-binary file below it, sorted by path; symlinks are
 * skipped; a file is binary when its first 4 KiB hold a NUL byte), or "default" (also NULL or ""):
 * the Python standard library's source, the .py files that dpkg lists for Debian's
 * libpython3.N-minimal and libpython3.N-stdlib (newest N), sorted by path. */
int hy_corpus_load(hy_corpus *c, const char *path, double val_fraction);
void hy_corpus_free(hy_corpus *c);
/* B windows of T+1 bytes from the train or validation split: inputs = window[0..T),
 * targets = window[1..T]. Each window's start is drawn from rng. */
int hy_corpus_batch(const hy_corpus *c, int validation, hy_rng *rng, int B, int T, int32_t *inputs,
                    int32_t *targets);

#endif

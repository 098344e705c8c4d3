/* SHA-256 (nettle's): the digest that names a tokenizer in checkpoints and keys the caches of
 * tokenized text, printed as 64 lowercase hex digits so that `sha256sum FILE` shows the same. */
#ifndef HY_CORE_SHA256_H
#define HY_CORE_SHA256_H
#include <nettle/sha2.h>
#include <stddef.h>

typedef struct sha256_ctx hy_sha256;

void hy_sha256_init(hy_sha256 *s);
void hy_sha256_add(hy_sha256 *s, const void *data, size_t len);
/* Finishes the digest into hex (65 chars with the NUL). */
void hy_sha256_hex(hy_sha256 *s, char hex[65]);
/* The digest of a whole file, read in pieces (never whole into memory). */
int hy_sha256_file(const char *path, char hex[65]);

#endif

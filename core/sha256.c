/* SHA-256 through nettle: the project adds only the hex form and the digest of a file. */
#include "core/sha256.h"
#include "core/error.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>

void hy_sha256_init(hy_sha256 *s) { sha256_init(s); }

void hy_sha256_add(hy_sha256 *s, const void *data, size_t len) { sha256_update(s, len, data); }

void hy_sha256_hex(hy_sha256 *s, char hex[65]) {
    uint8_t d[SHA256_DIGEST_SIZE];
    sha256_digest(s, sizeof d, d);
    for (int i = 0; i < SHA256_DIGEST_SIZE; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

int hy_sha256_file(const char *path, char hex[65]) {
    FILE *f = fopen(path, "rb");
    if (!f) return hy_fail_code(HY_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    hy_sha256 s;
    hy_sha256_init(&s);
    static _Thread_local uint8_t buf[1 << 16];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) hy_sha256_add(&s, buf, got);
    int bad = ferror(f);
    fclose(f);
    if (bad) return hy_fail_code(HY_ERR_IO, "%s: read error", path);
    hy_sha256_hex(&s, hex);
    return 0;
}

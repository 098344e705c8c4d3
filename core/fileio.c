#include "core/fileio.h"
#include "core/error.h"
#include "core/mem.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int hy_write_file_atomic(const char *path, const void *data, size_t len) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return hy_fail_code(HY_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return hy_fail_code(HY_ERR_IO, "%s: write failed: %s", path, strerror(e));
        }
        p += w, left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        unlink(tmp);
        return hy_fail_code(HY_ERR_IO, "%s: cannot flush: %s", path, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return hy_fail_code(HY_ERR_IO, "%s: cannot rename from %s: %s", path, tmp, strerror(e));
    }
    return 0;
}

int hy_read_file(const char *path, char **data, size_t *len) {
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return hy_fail_code(HY_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return hy_fail_code(HY_ERR_IO, "%s: not a regular file", path);
    }
    char *buf = hy_malloc((size_t)st.st_size + 1);
    if (!buf) {
        fclose(f);
        return HY_ERR_NOMEM;
    }
    size_t got = fread(buf, 1, (size_t)st.st_size, f);
    fclose(f);
    if (got != (size_t)st.st_size) {
        hy_free(buf);
        return hy_fail_code(HY_ERR_IO, "%s: short read (%zu of %lld bytes)", path, got, (long long)st.st_size);
    }
    buf[got] = 0;
    *data = buf;
    *len = got;
    return 0;
}

int hy_mkdirs(const char *path) {
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return hy_fail_code(HY_ERR_IO, "bad folder name '%s'", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != 0) continue;
        char c = buf[i];
        buf[i] = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return hy_fail_code(HY_ERR_IO, "%s: cannot create folder: %s", buf, strerror(errno));
        buf[i] = c;
    }
    return 0;
}

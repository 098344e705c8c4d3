/* Whole-file I/O with the project's rule for outputs: write to a temporary name in the same
 * folder, fsync, then rename, so a reader never sees a half-written file. */
#ifndef HY_CORE_FILEIO_H
#define HY_CORE_FILEIO_H
#include <stddef.h>

int hy_write_file_atomic(const char *path, const void *data, size_t len);
/* Reads the whole file into a hy_malloc'd buffer with a NUL appended (not counted in *len). */
int hy_read_file(const char *path, char **data, size_t *len);
/* mkdir -p */
int hy_mkdirs(const char *path);

#endif

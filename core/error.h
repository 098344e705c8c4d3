/* Error reporting for the library: no exit(), no printing. A failing function records a message
 * with hy_fail() and returns a negative code; the caller decides what to do with hy_last_error(). */
#ifndef HY_CORE_ERROR_H
#define HY_CORE_ERROR_H

#include "hybrid.h"   /* the codes: HY_OK, HY_ERR, HY_ERR_CONFIG, HY_ERR_IO, HY_ERR_NOMEM */

/* Record a printf-style message for this thread and return `code` (so `return hy_fail(...)` works). */
int hy_fail_code(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define hy_fail(...) hy_fail_code(HY_ERR, __VA_ARGS__)
/* The last message recorded on this thread ("" if none). */
const char *hy_last_error(void);
/* Prefix the recorded message with more context ("while loading X: <old message>"). */
void hy_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif

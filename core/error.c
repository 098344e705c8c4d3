#include "core/error.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_error[1024];

int hy_fail_code(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return code;
}

const char *hy_last_error(void) { return last_error; }

void hy_error_prefix(const char *fmt, ...) {
    char prefix[512], old[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof old);
    size_t lp = strlen(prefix), lo = strlen(old);
    if (lp > sizeof last_error / 2) lp = sizeof last_error / 2;
    if (lp + 2 + lo >= sizeof last_error) lo = sizeof last_error - lp - 3;   /* truncate the old tail */
    memcpy(last_error, prefix, lp);
    memcpy(last_error + lp, ": ", 2);
    memcpy(last_error + lp + 2, old, lo);
    last_error[lp + 2 + lo] = 0;
}

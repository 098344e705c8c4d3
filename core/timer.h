/* Wall-clock timing and thread control shared by the trainer and the benchmarks. */
#ifndef HY_CORE_TIMER_H
#define HY_CORE_TIMER_H
#include <stddef.h>

double hy_now(void);            /* monotonic seconds */
void hy_set_threads(int n);     /* OpenMP and OpenBLAS threads; n <= 0 means all cores */
int hy_threads(void);           /* threads in use */
/* A duration for progress lines: "42s", "3m07s", "2h05m", or "?" when unknown (NaN, negative). */
void hy_format_duration(char *out, size_t n, double seconds);

#endif

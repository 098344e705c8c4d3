/* Wall-clock timing and thread control shared by the trainer and the benchmarks. */
#ifndef HY_CORE_TIMER_H
#define HY_CORE_TIMER_H

double hy_now(void);            /* monotonic seconds */
void hy_set_threads(int n);     /* OpenMP and OpenBLAS threads; n <= 0 means all cores */
int hy_threads(void);           /* threads in use */

#endif

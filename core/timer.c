#include "core/timer.h"
#include <omp.h>
#include <time.h>

void openblas_set_num_threads(int num_threads);

double hy_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

void hy_set_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int hy_threads(void) { return omp_get_max_threads(); }

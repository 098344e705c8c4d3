/* `hybrid-exp bench allreduce`: the time of a float-sum allreduce against message size on the
 * ranks of the current launch (mpirun -np N), the figure behind gradient averaging. */
#include "bench/bench.h"
#include "core/args.h"
#include "core/dist.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "core/strbuf.h"
#include "core/timer.h"
#include "experiments/csv_schema.h"
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *ALLREDUCE_HELP =
    "usage: mpirun -np N hybrid-exp bench allreduce [--out DIR] [--max-mb M] [--repeats K]\n"
    "Times an in-place allreduce (sum of floats, as gradient averaging does) on the N ranks of this launch\n"
    "for messages of 4 bytes to M MiB (default 64), x4 per row: each row's time is the slowest rank's\n"
    "mean over a batch of calls, best of K batches (default 5). Prints a table on rank 0 and writes\n"
    "DIR/allreduce.csv (default DIR: results/bench): ranks,bytes,seconds,algbw_gb_s,busbw_gb_s\n"
    "(algbw = bytes / seconds; busbw = algbw x 2(N-1)/N, what a ring moves per rank).\n"
    "A benchmark, not a test: nothing here fails on a time.\n";


/* Seconds per allreduce of n floats: the slowest rank's mean over `calls` calls, best of `repeats`. */
static double time_allreduce(hy_dist *d, float *buf, size_t n, int calls, int repeats) {
    double best = INFINITY;
    for (int r = 0; r < repeats; r++) {
        hy_dist_barrier(d);
        double t0 = hy_now();
        for (int c = 0; c < calls; c++) hy_dist_allreduce(d, buf, n, HY_DIST_F32, HY_DIST_SUM);
        double t = (hy_now() - t0) / calls;
        hy_dist_allreduce(d, &t, 1, HY_DIST_F64, HY_DIST_MAX);
        best = fmin(best, t);
    }
    return best;
}

int hy_bench_allreduce_main(int argc, char **argv) {
    enum { AR_OUT = 256, AR_MAX_MB, AR_REPEATS };
    static const struct option opts[] = {{"out", required_argument, NULL, AR_OUT},
                                         {"max-mb", required_argument, NULL, AR_MAX_MB},
                                         {"repeats", required_argument, NULL, AR_REPEATS},
                                         {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    const char *out = "results/bench", *v;
    double max_mb = 64;
    long repeats = 5;
    hy_args w;
    hy_args_init(&w, argc, argv, "h", opts);
    for (int c; (c = hy_args_next(&w, &v)) != HY_ARG_END;) {
        int rc = 0;
        switch (c) {
        case 'h': fputs(ALLREDUCE_HELP, stdout); return 0;
        case AR_OUT: out = v; break;
        case AR_MAX_MB: rc = hy_arg_double("--max-mb", v, 0, 1 << 20, HY_ARG_OPEN_LO, &max_mb); break;
        case AR_REPEATS: rc = hy_arg_long("--repeats", v, 1, 1 << 20, &repeats); break;
        case HY_ARG_POSITIONAL: rc = hy_fail_code(HY_ERR_CONFIG, "unexpected argument '%s'", v); break;
        default: rc = HY_ERR_CONFIG;
        }
        if (rc < 0) {
            fprintf(stderr, "hybrid-exp bench allreduce: %s\n%s%s", hy_last_error(), c < 256 ? "\n" : "",
                    c < 256 ? ALLREDUCE_HELP : "");
            return 2;
        }
    }
    hy_dist *d = hy_dist_world();
    int N = hy_dist_size(d), rank = hy_dist_rank(d);
    if (N < 2) {
        fprintf(stderr, "hybrid-exp bench allreduce: one process has nothing to reduce; launch it as "
                        "mpirun -np N hybrid-exp bench allreduce (N >= 2)\n");
        return 2;
    }
    size_t max_floats = (size_t)(max_mb * 1048576.0 / sizeof(float));
    if (max_floats < 1) max_floats = 1;
    float *buf = hy_malloc(max_floats * sizeof(float));
    if (!buf) {
        fprintf(stderr, "hybrid-exp bench allreduce: rank %d: %s\n", rank, hy_last_error());
        return 1;
    }
    for (size_t i = 0; i < max_floats; i++) buf[i] = 1e-3f * (float)(i % 1000);
    hy_strbuf csv = {0};
    hy_sb_add(&csv, hy_csv_ALLREDUCE.header);
    if (rank == 0)
        printf("allreduce (float sum, in place) on %d ranks, %s\n%12s %12s %12s %12s\n", N, hy_dist_library(), "bytes",
               "us", "algbw GB/s", "busbw GB/s");
    for (size_t n = 1;; n = n * 4 > max_floats && n < max_floats ? max_floats : n * 4) {
        size_t bytes = n * sizeof(float);
        int calls = bytes <= 65536 ? 200 : bytes <= 4194304 ? 20 : 3;   /* batches of a few ms at least */
        double t = time_allreduce(d, buf, n, calls, (int)repeats);
        double alg = bytes / t / 1e9, bus = alg * 2.0 * (N - 1) / N;
        hy_sb_printf(&csv, "%d,%zu,%.6g,%.6g,%.6g\n", N, bytes, t, alg, bus);   /* no value rounds to 0 */
        if (rank == 0) printf("%12zu %12.1f %12.3f %12.3f\n", bytes, t * 1e6, alg, bus), fflush(stdout);
        if (n >= max_floats) break;
    }
    hy_free(buf);
    int rc = 0;
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", out, hy_csv_ALLREDUCE.file);
    if (rank == 0 && ((rc = hy_mkdirs(out)) < 0 || (rc = hy_sb_write_file(&csv, path)) < 0))
        fprintf(stderr, "hybrid-exp bench allreduce: %s\n", hy_last_error());
    else if (rank == 0) printf("wrote %s\n", path);
    hy_sb_free(&csv);
    return rc < 0 ? 1 : 0;
}

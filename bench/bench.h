/* `hybrid-exp bench`: layers.csv (SPEC §5) for every block, with each row's throughput as a
 * ratio to the machine's own limits measured in the same run. */
#ifndef HY_BENCH_BENCH_H
#define HY_BENCH_BENCH_H
#include "experiments/experiment.h"   /* hy_bench_options */

/* `hybrid-exp bench ARGS`: parses the arguments into hy_bench_options (or runs `bench decode`)
 * and runs hy_bench_run. Exit status: 0, 1 (the benchmark failed), 2 (bad arguments). */
int hy_bench_main(int argc, char **argv);
/* The machine's limits, then every selected block's rows into o->out_dir/layers.csv, with progress
 * lines on stdout. 0 on success, 1 after printing the error to stderr. */
int hy_bench_run(const hy_bench_options *o);
/* Whether block `name` is in the comma list `blocks` (--blocks of either benchmark); NULL = all. */
bool hy_bench_selected(const char *blocks, const char *name);
/* `hybrid-exp bench decode` (bench/decode.c): decode.csv, decode latency and state size vs context. */
int hy_bench_decode_main(int argc, char **argv);
/* The RWKV-7 state recurrence line (bench/bench_rwkv7.c). */
void hy_bench_wkv7_line(double sgemm_gflops, double mem_gbs, int quick);
/* The gated delta rule line (bench/bench_gated_deltanet.c), against the best f32 GEMM rate. */
void hy_bench_gdn_line(double best_gemm_gflops, int quick);

#endif

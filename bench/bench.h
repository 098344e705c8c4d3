/* `hybrid-exp bench`: layers.csv (SPEC §5) for every block, with each row's throughput as a
 * ratio to the machine's own limits measured in the same run. */
#ifndef HY_BENCH_BENCH_H
#define HY_BENCH_BENCH_H
#include "experiments/experiment.h"   /* hy_bench_options */

/* The machine's own limits, measured at the start of every benchmark run: GEMM rates on a 2048³
 * product (GFLOP/s) and the copy bandwidth (GB/s). Every rate the benchmark reports is divided by
 * the best GEMM of its precision from the same run, never by a fixed or remembered number. */
typedef struct {
    double openblas_f32, onednn_f32, onednn_bf16;
    double best_f32, best_bf16;   /* the faster backend of each precision */
    double copy_gbs;
} hy_machine_limits;

/* Measures *m (a few seconds) and prints one `machine:` line naming the yardsticks. */
void hy_bench_machine_limits(hy_machine_limits *m);
/* The copy bandwidth alone (GB/s, read + write bytes of a 256 MiB scaled copy, best of repeats,
 * with the threads in use): hy_machine_limits.copy_gbs, and the yardstick of `bench decode`. */
double hy_bench_copy_gbs(void);

/* `hybrid-exp bench ARGS`: parses the arguments into hy_bench_options (or runs `bench decode`)
 * and runs hy_bench_run. Exit status: 0, 1 (the benchmark failed), 2 (bad arguments). */
int hy_bench_main(int argc, char **argv);
/* The machine's limits, then every selected block's rows into o->out_dir/layers.csv, with progress
 * lines on stdout. 0 on success, 1 after printing the error to stderr. */
int hy_bench_run(const hy_bench_options *o);
/* qsort order of doubles, ascending (the benchmarks' medians and fastest repeats). */
int hy_bench_cmp_double(const void *x, const void *y);
/* Whether block `name` is in the comma list `blocks` (--blocks of either benchmark); NULL = all. */
bool hy_bench_selected(const char *blocks, const char *name);
/* `hybrid-exp bench decode` (bench/decode.c): decode.csv, decode latency and state size vs context. */
int hy_bench_decode_main(int argc, char **argv);
/* `hybrid-exp bench allreduce` (bench/allreduce.c): allreduce time against message size on the
 * ranks of the current launch -> allreduce.csv (experiments/csv_schema.h: HY_ALLREDUCE_CSV). */
int hy_bench_allreduce_main(int argc, char **argv);
/* The RWKV-7 state recurrence line (bench/bench_rwkv7.c). */
void hy_bench_wkv7_line(const hy_machine_limits *m, int quick);
/* The Mamba-2 SSD core line (bench/bench_mamba2.c), against the best f32 GEMM of the run. */
void hy_bench_ssd_line(const hy_machine_limits *m, int quick);
/* The gated delta rule line (bench/bench_gated_deltanet.c), against m->best_f32. */
void hy_bench_gdn_line(const hy_machine_limits *m, int quick);
/* `--precision` (bench/bench_precision.c): the bf16 / f32 training-step speed-up of
 * configs/precision.yaml's models whose mixer is in `blocks` (mamba: the mamba stack; attention:
 * the transformer), f32 and bf16 steps by turns in this process, `rounds` of each. 0 or an error. */
int hy_bench_precision_lines(const hy_machine_limits *m, const char *blocks, int rounds);

#endif

/* `hybrid-exp bench`: layers.csv (SPEC §5) for every block, with each row's throughput as a
 * ratio to the machine's own limits measured in the same run. */
#ifndef HY_BENCH_BENCH_H
#define HY_BENCH_BENCH_H

int hy_bench_main(int argc, char **argv);
/* `hybrid-exp bench decode` (bench/decode.c): decode.csv, decode latency and state size vs context. */
int hy_bench_decode_main(int argc, char **argv);
/* The RWKV-7 state recurrence line (bench/bench_rwkv7.c). */
void hy_bench_wkv7_line(double sgemm_gflops, double mem_gbs, int quick);

#endif

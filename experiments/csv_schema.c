/* The tables of the CSV schemas (csv_schema.h), made from the X-macro lists: each column's name,
 * unit and meaning, and the header line, which is built at compile time (",a" ",b" ... then the
 * leading comma skipped) so that writers need no code to make it. */
#include "experiments/csv_schema.h"

#define HY_CSV_ROW_(P, name, unit, about) {#name, unit, about},
#define HY_CSV_HEAD_(P, name, unit, about) "," #name

/* The table hy_csv_<P> of list LIST, for file FILE. */
#define HY_CSV_SCHEMA_(P, LIST, FILE, ABOUT)                                                                 \
    static const hy_csv_column cols_##P[] = {LIST(HY_CSV_ROW_, P)};                                          \
    const hy_csv_schema hy_csv_##P = {FILE, &(LIST(HY_CSV_HEAD_, P) "\n")[1], cols_##P, HY_##P##_NCOLS, ABOUT};

HY_CSV_SCHEMA_(TRAIN, HY_TRAIN_CSV, "train.csv", "every training run (experiments/train.c): a row every log_every "
               "steps and at every evaluation")
HY_CSV_SCHEMA_(STATS, HY_STATS_CSV, "(the file hy_block_stats names)", "telemetry of blocks with a stats hook (experiments/train.c): "
               "these columns, then the block's item and count, one row per item at every evaluation")
HY_CSV_SCHEMA_(RUN, HY_RUN_CSV, "result.csv", "a run's row of sweep.csv without lr_selected (experiments/sweep.c): "
               "runs/<id>/result.csv and the runner's sweep_rows.csv")
HY_CSV_SCHEMA_(SWEEP, HY_SWEEP_CSV, "sweep.csv", "an experiment (experiments/results.c): one row per run, with "
               "the learning-rate selection")
HY_CSV_SCHEMA_(EVAL, HY_EVAL_CSV, "eval.csv", "an experiment (experiments/sweep.c): one row per run and "
               "evaluation length")
HY_CSV_SCHEMA_(POSITION, HY_POSITION_CSV, "position.csv", "an experiment on a corpus (experiments/sweep.c): one "
               "row per run and position of its longest evaluation")
HY_CSV_SCHEMA_(REFERENCE, HY_REFERENCE_CSV, "reference.csv", "an experiment with a reference (experiments/sweep.c): "
               "the reference's sweep.csv, its folder first")
HY_CSV_SCHEMA_(LAYERS, HY_LAYERS_CSV, "layers.csv", "hybrid-exp bench (bench/bench.c): one row per block, T and "
               "pass")
HY_CSV_SCHEMA_(DECODE, HY_DECODE_CSV, "decode.csv", "hybrid-exp bench decode (bench/decode.c): one row per "
               "variant and context")
HY_CSV_SCHEMA_(ALLREDUCE, HY_ALLREDUCE_CSV, "allreduce.csv", "hybrid-exp bench allreduce (bench/allreduce.c): one "
               "row per message size")
HY_CSV_SCHEMA_(EVAL_CMD, HY_EVAL_CMD_CSV, "eval.csv", "hybrid-exp eval --out DIR (cli/data_cmds.c): one row per "
               "evaluation length")
HY_CSV_SCHEMA_(EVAL_CMD_POSITION, HY_EVAL_CMD_POSITION_CSV, "position.csv", "hybrid-exp eval --out DIR "
               "(cli/data_cmds.c): one row per length and position")

const hy_csv_schema *const hy_csv_schemas[] = {&hy_csv_TRAIN, &hy_csv_STATS, &hy_csv_RUN, &hy_csv_SWEEP,
                                               &hy_csv_EVAL, &hy_csv_POSITION, &hy_csv_REFERENCE, &hy_csv_LAYERS,
                                               &hy_csv_DECODE, &hy_csv_ALLREDUCE, &hy_csv_EVAL_CMD,
                                               &hy_csv_EVAL_CMD_POSITION};
const int hy_csv_n_schemas = (int)(sizeof hy_csv_schemas / sizeof *hy_csv_schemas);

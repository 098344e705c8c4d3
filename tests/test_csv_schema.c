/* The CSV schemas (experiments/csv_schema.h): each table's header is its names in order, the files
 * that share columns share them by construction, the headers are the contract's (docs/spec.md §5),
 * and the docs list every file's columns in the schema's order with the schema's units:
 * docs/experiments.md's column tables, docs/spec.md §5's lists, docs/cli.md and docs/generation.md
 * for the benchmarks. */
#include "core/fileio.h"
#include "core/mem.h"
#include "experiments/csv_schema.h"
#include "experiments/results.h"
#include "layers/registry.h"
#include "tests/testutil.h"
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_COLS 64

/* A file's columns as the docs list them: names and (where the table has a unit column) units. */
typedef struct {
    int n;
    char name[MAX_COLS][64], unit[MAX_COLS][32];
    int names_in_row[MAX_COLS];   /* how many names the row of this column lists */
} doc_cols;

/* [s, e) with the blanks at both ends cut, into out. */
static void trimmed(const char *s, const char *e, char *out, size_t n) {
    while (s < e && isspace((unsigned char)*s)) s++;
    while (e > s && isspace((unsigned char)e[-1])) e--;
    snprintf(out, n, "%.*s", (int)(e - s), s);
}

/* The `quoted` names in cell [s, e) appended to d, each with `unit`. */
static void add_names(doc_cols *d, const char *s, const char *e, const char *unit) {
    int first = d->n;
    for (const char *p = s; p < e && (p = memchr(p, '`', (size_t)(e - p)));) {
        const char *q = memchr(p + 1, '`', (size_t)(e - p - 1));
        ck_assert_ptr_nonnull(q);
        ck_assert_int_lt(d->n, MAX_COLS);
        trimmed(p + 1, q, d->name[d->n], sizeof d->name[0]);
        snprintf(d->unit[d->n], sizeof d->unit[0], "%s", unit ? unit : "");
        d->n++;
        p = q + 1;
    }
    for (int k = first; k < d->n; k++) d->names_in_row[k] = d->n - first;
}

/* The columns of the first table after the heading that contains `heading` (up to the next
 * heading). Each row is "| `a`, `b` | unit | meaning |" (units: whether the table has the unit
 * cell). With `file`, rows are "| `file` | `a` | unit | meaning |", a row with an empty first cell
 * belonging to the file above, and only the rows of `file` count. */
static doc_cols doc_table(const char *text, const char *heading, const char *file, bool units) {
    doc_cols d = {0};
    const char *h = strstr(text, heading);
    ck_assert_msg(h != NULL, "no heading %s", heading);
    const char *line = strchr(h, '\n');
    bool in_table = false;
    char cur[64] = "";
    for (; line && *++line; line = strchr(line, '\n')) {
        const char *end = strchr(line, '\n');
        if (!end) end = line + strlen(line);
        if (*line == '#') break;
        if (*line != '|') {
            if (in_table) break;
            continue;
        }
        in_table = true;
        const char *cell[5] = {line + 1};
        int nc = 1;
        for (const char *p = line + 1; nc < 5 && (p = memchr(p, '|', (size_t)(end - p))); p++) cell[nc++] = p + 1;
        const int c = file ? 1 : 0;   /* the cell of the column names */
        if (nc < c + (units ? 4 : 3)) continue;
        if (file) {
            char f[64];
            trimmed(cell[0], cell[1] - 1, f, sizeof f);
            if (*f) snprintf(cur, sizeof cur, "%s", f);
            if (strcmp(cur, file)) continue;
        }
        if (!memchr(cell[c], '`', (size_t)(cell[c + 1] - 1 - cell[c]))) continue;   /* the header row, the rule */
        char unit[32] = "";
        if (units) trimmed(cell[c + 1], cell[c + 2] - 1, unit, sizeof unit);
        add_names(&d, cell[c], cell[c + 1] - 1, units ? unit : NULL);
    }
    return d;
}

/* The names between the backticks after `marker` (spanning lines), split at commas, each without a
 * parenthesised note: "`a, b (x|y),\n  c`" gives a, b, c. */
static doc_cols doc_list(const char *text, const char *marker) {
    doc_cols d = {0};
    const char *m = strstr(text, marker);
    ck_assert_msg(m != NULL, "no %s", marker);
    const char *s = strchr(m + strlen(marker), '`');
    ck_assert_ptr_nonnull(s);
    const char *e = strchr(++s, '`');
    ck_assert_ptr_nonnull(e);
    while (s < e) {
        const char *c = memchr(s, ',', (size_t)(e - s));
        if (!c) c = e;
        const char *paren = memchr(s, '(', (size_t)(c - s));
        ck_assert_int_lt(d.n, MAX_COLS);
        trimmed(s, paren ? paren : c, d.name[d.n], sizeof d.name[0]);
        d.names_in_row[d.n++] = 1;
        s = c + 1;
    }
    return d;
}

/* d lists exactly the columns of s (after the n_pre columns of pre, when given), in order; with
 * units, each single-column row's unit is the schema's. */
static void expect_columns(const doc_cols *d, const hy_csv_schema *pre, const hy_csv_schema *s, bool units,
                           const char *where) {
    int n_pre = pre ? pre->n_cols : 0;
    ck_assert_msg(d->n == n_pre + s->n_cols, "%s: %d columns listed for %s, the schema has %d", where, d->n, s->file,
                  n_pre + s->n_cols);
    for (int i = 0; i < d->n; i++) {
        const hy_csv_column *c = i < n_pre ? &pre->cols[i] : &s->cols[i - n_pre];
        ck_assert_msg(!strcmp(d->name[i], c->name), "%s: column %d of %s is `%s` in the docs, `%s` in the schema", where,
                      i, s->file, d->name[i], c->name);
        if (units && d->names_in_row[i] == 1)
            ck_assert_msg(!strcmp(d->unit[i], c->unit), "%s: %s `%s` has unit '%s' in the docs, '%s' in the schema",
                          where, s->file, c->name, d->unit[i], c->unit);
    }
}

/* The tables are consistent: header = names joined, names unique, every column explained; files
 * built from others share their columns; the reader's macros name the table's entries. */
START_TEST(schema_tables) {
    ck_assert_int_eq(hy_csv_n_schemas, 12);
    for (int k = 0; k < hy_csv_n_schemas; k++) {
        const hy_csv_schema *s = hy_csv_schemas[k];
        char head[2048] = "";
        ck_assert_int_gt(s->n_cols, 0);
        ck_assert_msg(s->about && *s->about, "%s: no description", s->file);
        for (int i = 0; i < s->n_cols; i++) {
            ck_assert_msg(*s->cols[i].about, "%s: column %s unexplained", s->file, s->cols[i].name);
            for (int j = 0; j < i; j++) ck_assert_str_ne(s->cols[i].name, s->cols[j].name);
            strcat(head, i ? "," : ""), strcat(head, s->cols[i].name);
        }
        strcat(head, "\n");
        ck_assert_str_eq(s->header, head);
    }
    /* result.csv = sweep.csv without lr_selected; reference.csv = experiment + sweep.csv */
    ck_assert_int_eq(hy_csv_SWEEP.n_cols, hy_csv_RUN.n_cols + 1);
    ck_assert_int_eq(hy_csv_REFERENCE.n_cols, hy_csv_SWEEP.n_cols + 1);
    for (int i = 0; i < hy_csv_SWEEP.n_cols; i++) {
        if (i < hy_csv_RUN.n_cols) ck_assert_str_eq(hy_csv_RUN.cols[i].name, hy_csv_SWEEP.cols[i].name);
        ck_assert_str_eq(hy_csv_REFERENCE.cols[i + 1].name, hy_csv_SWEEP.cols[i].name);
    }
    ck_assert_str_eq(HY_CSV_COL(SWEEP, lr_selected), "lr_selected");
    ck_assert_str_eq(HY_CSV_COL(REFERENCE, experiment), "experiment");
    /* the run's key columns that group_rows reads from sweep.csv and eval.csv alike */
    static const char *const key[] = {"variant", "seq_len", "seed", "lr"};
    for (int i = 0; i < 4; i++) {
        ck_assert_str_eq(hy_csv_EVAL.cols[i].name, key[i]);
        ck_assert_str_eq(hy_csv_POSITION.cols[i].name, key[i]);
        ck_assert_str_eq(hy_csv_SWEEP.cols[i].name, key[i]);
    }
    ck_assert_int_eq(HY_TRAIN_step, 4);
    ck_assert_str_eq(HY_CSV_COL(TRAIN, step), "step");
    ck_assert_int_eq(HY_STATS_step, 2);
    /* the contract's headers, written out (the written files are checked by test_train, test_experiment) */
    ck_assert_str_eq(hy_csv_ALLREDUCE.header, "ranks,bytes,seconds,algbw_gb_s,busbw_gb_s\n");
    ck_assert_str_eq(hy_csv_EVAL_CMD.header,
                     "checkpoint,data,eval_seq_len,windows,tokens,bytes,val_loss,val_ppl,val_bits_per_byte,streaming\n");
    ck_assert_str_eq(hy_csv_LAYERS.header, "block,d_model,batch,seq_len,pass,ms,gflop,gflops_per_s,peak_bytes,"
                                           "state_bytes,threads,best_f32_gemm_gflops_per_s,ratio_to_best_f32_gemm\n");
}
END_TEST

/* A reader finds a column of a table by the schema's name, and -1 for one the file lacks. */
START_TEST(find_by_schema) {
    char path[] = "/tmp/hybrid-test-csv-schema-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "w");
    fputs("variant,seq_len,val_loss\nx,64,2.5\n", f);
    fclose(f);
    hy_csv t;
    ck_assert_int_eq(hy_csv_load(path, &t), 0);
    ck_assert_int_eq(HY_CSV_FIND(&t, SWEEP, val_loss), 2);
    ck_assert_int_eq(HY_CSV_FIND(&t, SWEEP, variant), 0);
    ck_assert_int_eq(HY_CSV_FIND(&t, SWEEP, lr_selected), -1);
    ck_assert(hy_csv_num(&t, 0, HY_CSV_FIND(&t, EVAL, val_loss)) == 2.5);
    hy_csv_free(&t);
    unlink(path);
}
END_TEST

/* docs/experiments.md's column tables list each file's columns in order, with the schema's units. */
START_TEST(docs_experiments_tables) {
    char *text;
    text = tu_slurp(NULL, "docs/experiments.md", NULL);
    static const struct {
        const char *heading;
        const hy_csv_schema *s;
    } tables[] = {{"## `train.csv`", &hy_csv_TRAIN},  {"## `sweep.csv`", &hy_csv_SWEEP},
                  {"## `eval.csv`", &hy_csv_EVAL},    {"## `position.csv`", &hy_csv_POSITION},
                  {"## `layers.csv`", &hy_csv_LAYERS}};
    for (size_t k = 0; k < sizeof tables / sizeof *tables; k++) {
        doc_cols d = doc_table(text, tables[k].heading, NULL, true);
        expect_columns(&d, NULL, tables[k].s, true, "docs/experiments.md");
    }
    /* experts.csv: the telemetry columns, then the moe block's two */
    const hy_block_ops *moe = hy_block_find("moe");
    ck_assert_ptr_nonnull(moe);
    ck_assert_str_eq(moe->stats->file, "experts.csv");
    doc_cols d = doc_table(text, "## `experts.csv`", NULL, true);
    ck_assert_int_eq(d.n, hy_csv_STATS.n_cols + 2);
    d.n = hy_csv_STATS.n_cols;
    expect_columns(&d, NULL, &hy_csv_STATS, true, "docs/experiments.md experts.csv");
    char block_cols[128];
    snprintf(block_cols, sizeof block_cols, "%s,%s", d.name[hy_csv_STATS.n_cols], d.name[hy_csv_STATS.n_cols + 1]);
    ck_assert_str_eq(block_cols, moe->stats->columns);
    /* hybrid-exp eval's two files, in one table with a file column */
    d = doc_table(text, "## `hybrid-exp eval`", "`eval.csv`", true);
    expect_columns(&d, NULL, &hy_csv_EVAL_CMD, true, "docs/experiments.md hybrid-exp eval");
    d = doc_table(text, "## `hybrid-exp eval`", "`position.csv`", true);
    expect_columns(&d, NULL, &hy_csv_EVAL_CMD_POSITION, true, "docs/experiments.md hybrid-exp eval");
    /* reference.csv: sweep.csv's columns after `experiment` */
    ck_assert_ptr_nonnull(strstr(text, "| `reference.csv` | with `reference: DIR`: DIR's sweep.csv with a first column "
                                       "`experiment`"));
    hy_free(text);
}
END_TEST

/* docs/spec.md §5 lists the columns of every experiment file in order. */
START_TEST(docs_spec_lists) {
    char *text;
    text = tu_slurp(NULL, "docs/spec.md", NULL);
    const char *sec = strstr(text, "## 5. Results (CSV)");   /* the lists below it */
    ck_assert_ptr_nonnull(sec);
    const hy_csv_schema *files[] = {&hy_csv_LAYERS, &hy_csv_TRAIN, &hy_csv_SWEEP, &hy_csv_EVAL, &hy_csv_POSITION};
    for (size_t k = 0; k < sizeof files / sizeof *files; k++) {
        char marker[64];
        snprintf(marker, sizeof marker, "- `%s` (", files[k]->file);
        doc_cols d = doc_list(sec, marker);
        expect_columns(&d, NULL, files[k], false, "docs/spec.md");
    }
    hy_free(text);
}
END_TEST

/* The benchmarks' files: allreduce.csv's table in docs/cli.md, decode.csv's list in docs/cli.md and
 * docs/generation.md. */
START_TEST(docs_bench_files) {
    char *cli, *gen;
    cli = tu_slurp(NULL, "docs/cli.md", NULL), gen = tu_slurp(NULL, "docs/generation.md", NULL);
    doc_cols d = doc_table(cli, "## `mpirun -np N hybrid-exp bench allreduce", NULL, false);
    expect_columns(&d, NULL, &hy_csv_ALLREDUCE, false, "docs/cli.md");
    d = doc_list(cli, "Writes `decode.csv` (");
    expect_columns(&d, NULL, &hy_csv_DECODE, false, "docs/cli.md");
    d = doc_list(gen, "`decode.csv` with columns");
    expect_columns(&d, NULL, &hy_csv_DECODE, false, "docs/generation.md");
    hy_free(cli), hy_free(gen);
}
END_TEST

static Suite *make_csv_schema_suite(void) {
    Suite *s = suite_create("csv_schema");
    TCase *t = tcase_create("schemas");
    tcase_add_test(t, schema_tables);
    tcase_add_test(t, find_by_schema);
    tcase_add_test(t, docs_experiments_tables);
    tcase_add_test(t, docs_spec_lists);
    tcase_add_test(t, docs_bench_files);
    suite_add_tcase(s, t);
    return s;
}
HY_TEST_SUITE(make_csv_schema_suite)

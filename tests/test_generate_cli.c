/* The `generate` command (streams the library's tokens, continues from a state file, seeded
 * sampling, exit codes), `bench decode --quick` (decode.csv rows for every registered block), and
 * the program's option parsing: usage errors (exit 2, naming flag and value) and valid spellings. */
#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "models/checkpoint.h"
#include "models/generate.h"
#include "models/model.h"
#include "tests/testutil.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

START_TEST(cli_generate_streams_and_continues_from_state) {
    char dir[256], cmd[2048];
    tu_fresh_dir(dir, sizeof dir, "gencli-gen", true);
    snprintf(cmd, sizeof cmd, "%s init tests/configs/tiny-train.yaml --out %s/m.safetensors", tu_exe(), dir);
    ck_assert_int_eq(system(cmd), 0);
    char ckpt[300];
    snprintf(ckpt, sizeof ckpt, "%s/m.safetensors", dir);
    hy_model *m;
    ck_assert_msg(hy_checkpoint_load(ckpt, &m, NULL) == 0, "%s", hy_last_error());
    /* the library's greedy continuation of "Hello" (12 + 6 tokens) */
    const char *prompt = "Hello";
    int32_t pt[5], lib[18];
    for (int i = 0; i < 5; i++) pt[i] = (unsigned char)prompt[i];
    hy_model_state *st;
    ck_assert_int_eq(hy_model_state_new(m, 1, &st), 0);
    hy_sample_opts g = {.temperature = 0, .top_k = 0, .top_p = 1};
    ck_assert_int_eq(hy_generate(m, st, pt, 5, 18, &g, NULL, NULL, lib), 18);
    hy_model_state_free(m, st);
    /* a state of two sequences: generate continues one, and says so (its prompt is one row) */
    char two[320];
    snprintf(two, sizeof two, "%s/two.st", dir);
    int32_t pt2[10];
    for (int i = 0; i < 10; i++) pt2[i] = pt[i % 5];
    ck_assert_int_eq(hy_model_state_new(m, 2, &st), 0);
    ck_assert_int_eq(hy_model_prefill(m, st, pt2, 5, NULL, false), 0);
    ck_assert_int_eq(hy_model_state_save(m, st, two), 0);
    hy_model_state_free(m, st);
    hy_model_free(m);
    char *out;
    size_t len;
    snprintf(cmd, sizeof cmd, "%s generate --checkpoint %s --prompt Hello -n 12 --temperature 0 --state-out %s/s.st --quiet",
             tu_exe(), ckpt, dir);
    ck_assert_int_eq(tu_run(cmd, false, &out, &len), 0);
    ck_assert_int_eq((int)len, 12);
    for (int i = 0; i < 12; i++) ck_assert_int_eq((unsigned char)out[i], lib[i]);
    free(out);
    snprintf(cmd, sizeof cmd, "%s generate --checkpoint %s --state-in %s/s.st -n 6 --temperature 0 --quiet", tu_exe(), ckpt,
             dir);
    ck_assert_int_eq(tu_run(cmd, false, &out, &len), 0);
    ck_assert_int_eq((int)len, 6);
    for (int i = 0; i < 6; i++) ck_assert_int_eq((unsigned char)out[i], lib[12 + i]);
    free(out);
    /* same seed, same sampled text */
    char *o1, *o2;
    size_t l1, l2;
    snprintf(cmd, sizeof cmd, "%s generate --checkpoint %s --prompt Hi -n 20 --temperature 1.2 --top-k 40 --top-p 0.9 --seed 4 --quiet",
             tu_exe(), ckpt);
    ck_assert_int_eq(tu_run(cmd, false, &o1, &l1), 0);
    ck_assert_int_eq(tu_run(cmd, false, &o2, &l2), 0);
    ck_assert(l1 == 20 && l2 == 20 && memcmp(o1, o2, 20) == 0);
    free(o1), free(o2);
    /* usage errors: exit 2 with a message; runtime errors: exit 1 */
    const char *bad[] = {"-n 5", "--prompt x -n -3", "--prompt x -n 3 --top-p 0", "--prompt x --prompt-file y -n 1",
                         "--prompt x -n 3 --bogus"};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        snprintf(cmd, sizeof cmd, "%s generate --checkpoint %s %s 2>/dev/null", tu_exe(), ckpt, bad[k]);
        ck_assert_int_eq(tu_run(cmd, false, &out, &len), 2);
        free(out);
    }
    snprintf(cmd, sizeof cmd, "%s generate --checkpoint %s --state-in %s/missing.st -n 3 2>/dev/null", tu_exe(), ckpt, dir);
    ck_assert_int_eq(tu_run(cmd, false, &out, &len), 1);
    free(out);
    snprintf(cmd, sizeof cmd, "%s generate --checkpoint %s --state-in %s --prompt Hello -n 3", tu_exe(), ckpt, two);
    ck_assert_int_eq(tu_run(cmd, true, &out, &len), 1);
    ck_assert_msg(strstr(out, "two.st holds 2 sequences; generate continues one"), "%s", out);
    free(out);
    tu_remove_dir(dir);
}
END_TEST

/* bench decode --quick: one row per (variant, context), the CSV columns of the issue, every
 * registered mixer and non-swiglu ffn present, and the KV cache doubling with the context. */
START_TEST(cli_bench_decode_quick_writes_csv) {
    char dir[256], cmd[1024];
    tu_fresh_dir(dir, sizeof dir, "gencli-decode", false);
    snprintf(cmd, sizeof cmd, "%s bench decode --quick --max-context 512 --steps 2 --threads 1 --no-plot --out %s > /dev/null",
             tu_exe(), dir);
    ck_assert_int_eq(system(cmd), 0);
    char path[300];
    snprintf(path, sizeof path, "%s/decode.csv", dir);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char line[512];
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    ck_assert_str_eq(line, "variant,context,ms_per_token,state_bytes,state_read_ratio\n");
    int rows = 0, want = 0;
    double att[2] = {0, 0}, gbs0 = 0;
    while (fgets(line, sizeof line, f)) {
        char v[128];
        long ctx;
        double ms, sb, ratio;
        ck_assert_msg(sscanf(line, "%127[^,],%ld,%lf,%lf,%lf", v, &ctx, &ms, &sb, &ratio) == 5, "bad row: %s", line);
        ck_assert(ctx == 256 || ctx == 512);
        ck_assert(ms > 0);
        /* state_read_ratio = (ms/1e3) / (state bytes / bandwidth): every row implies the same bandwidth */
        ck_assert_msg(ratio > 0, "bad ratio: %s", line);
        double gbs = ratio * sb / (ms * 1e-3) / 1e9;
        if (!gbs0) gbs0 = gbs;
        ck_assert_msg(fabs(gbs / gbs0 - 1) < 1e-3, "row implies %g GB/s, the first %g: %s", gbs, gbs0, line);
        if (!strcmp(v, "attention+swiglu")) att[ctx == 512] = sb;
        rows++;
    }
    fclose(f);
    for (int i = 0; i < hy_block_count(); i++) {
        const hy_block_ops *b = hy_block_at(i);
        want += (b->kinds & HY_KIND_MIXER) || ((b->kinds & HY_KIND_FFN) && strcmp(b->name, "swiglu"));
    }
    ck_assert_int_eq(rows, 2 * want);
    ck_assert_msg(att[0] > 0 && att[1] == 2 * att[0], "attention KV bytes %g at 256, %g at 512", att[0], att[1]);
    snprintf(path, sizeof path, "%s/decode.gp", dir);
    ck_assert_int_eq(access(path, F_OK), 0);
    char *md = tu_slurp(dir, "decode.md", NULL);   /* the per-variant summary: 256 -> 512 */
    ck_assert_msg(strstr(md, "| variant | first context | ms/token | last context | ms/token | last / first |"), "%s", md);
    ck_assert_msg(strstr(md, "| attention+swiglu | 256 | "), "%s", md);
    hy_free(md);
    /* --fill tile reaches the same contexts from one prefilled state, with the same state sizes */
    snprintf(cmd, sizeof cmd, "%s bench decode --quick --fill tile --max-context 1024 --steps 2 --threads 1 --no-plot --out %s > /dev/null",
             tu_exe(), dir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(path, sizeof path, "%s/decode.csv", dir);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    rows = 0;
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    while (fgets(line, sizeof line, f)) {
        char v[128];
        long ctx;
        double ms, sb;
        ck_assert(sscanf(line, "%127[^,],%ld,%lf,%lf,%*f", v, &ctx, &ms, &sb) == 4);
        if (!strcmp(v, "attention+swiglu")) ck_assert_double_eq(sb, att[0] * ctx / 256);
        rows++;
    }
    fclose(f);
    ck_assert_int_eq(rows, 3 * want);
    /* --rounds 3: still one row per (variant, context), each the fastest of that context's three rounds as
     * printed on stdout (round 1's line, then "(round r; ...)" lines) */
    snprintf(cmd, sizeof cmd, "%s bench decode --quick --fill tile --rounds 3 --blocks mamba,attention --max-context 512 "
             "--steps 2 --threads 1 --no-plot --out %s", tu_exe(), dir);
    char *out;
    size_t out_len;
    ck_assert_int_eq(tu_run(cmd, false, &out, &out_len), 0);
    snprintf(path, sizeof path, "%s/decode.csv", dir);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    rows = 0;
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    while (fgets(line, sizeof line, f)) {
        char v[128], key[192];
        long ctx;
        double ms;
        ck_assert(sscanf(line, "%127[^,],%ld,%lf,", v, &ctx, &ms) == 3);
        double fastest = INFINITY;
        int seen = 0;
        snprintf(key, sizeof key, "%-28s context %6ld ", v, ctx);
        for (char *p = strstr(out, key); p; p = strstr(p + 1, key), seen++) fastest = fmin(fastest, strtod(p + strlen(key), NULL));
        ck_assert_msg(seen == 3, "%s context %ld: %d timed rounds printed\n%s", v, ctx, seen, out);
        ck_assert_msg(fabs(ms - fastest) <= 0.51e-4, "%s context %ld: csv %g, fastest printed %g (4 decimals)", v, ctx, ms, fastest);
        rows++;
    }
    fclose(f);
    free(out);
    ck_assert_int_eq(rows, 2 * 2);
    snprintf(cmd, sizeof cmd, "%s bench decode --max-context 100 --no-plot --out %s 2>/dev/null", tu_exe(), dir);
    ck_assert_int_eq(system(cmd) >> 8, 2);   /* min-context 256 > max-context: usage error */
    tu_remove_dir(dir);
}
END_TEST

/* A bad number for --stop-after is a usage error naming the flag and the value, not a silent 0. */
START_TEST(cli_stop_after_rejects_junk) {
    static const char *const bad[] = {"abc", "0", "-3", "12x", "''", "99999999999999999999"};
    static const char *const shown[] = {"'abc'", "'0'", "'-3'", "'12x'", "''", "'99999999999999999999'"};
    for (int k = 0; k < 6; k++) {
        char cmd[512], want[128], *out;
        size_t len;
        snprintf(cmd, sizeof cmd, "%s tests/configs/tiny-train.yaml --out /tmp/hybrid-test-stop-after-%d --stop-after %s",
                 tu_exe(), (int)getpid(), bad[k]);
        ck_assert_int_eq(tu_run(cmd, true, &out, &len), 2);
        snprintf(want, sizeof want, "hybrid-exp: --stop-after: expected an integer >= 1, got %s\n", shown[k]);
        ck_assert_str_eq(out, want);
        free(out);
    }
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/hybrid-test-stop-after-%d", (int)getpid());
    ck_assert_int_ne(access(dir, F_OK), 0);   /* nothing written */
}
END_TEST

/* Usage errors of every kind, in several commands: exit status 2 and a first line naming the
 * command, the flag and the bad value. */
START_TEST(cli_usage_errors_name_flag_and_value) {
    static const struct {
        const char *args, *first_line;
    } cases[] = {
        /* a float flag with garbage */
        {"generate --checkpoint m.safetensors --prompt a -n 3 --top-p 0.5x",
         "hybrid-exp generate: --top-p: expected a number in (0, 1], got '0.5x'"},
        {"generate --checkpoint m.safetensors --prompt a -n 3 --temperature=-1",
         "hybrid-exp generate: --temperature: expected a number >= 0, got '-1'"},
        {"tokenizer train --data x --vocab 300 --out t.model --val-fraction nan",
         "hybrid-exp tokenizer train: --val-fraction: expected a number in [0, 1), got 'nan'"},
        {"bench decode --budget 1e999", "hybrid-exp bench decode: --budget: expected a number > 0, got '1e999'"},
        {"bench allreduce --max-mb x", "hybrid-exp bench allreduce: --max-mb: expected a number in (0, 1.04858e+06], got 'x'"},
        /* integer flags */
        {"generate --checkpoint m.safetensors --prompt a -n 3x", "hybrid-exp generate: -n: expected an integer in [0, 1073741824], got '3x'"},
        {"eval --checkpoint m --data d --seq-len 0", "hybrid-exp eval: --seq-len: expected an integer in [1, 16777216], got '0'"},
        {"bench --threads four", "hybrid-exp bench: --threads: expected an integer in [0, 4096], got 'four'"},
        {"tests/configs/tiny-train.yaml --ranks-per-run 0", "hybrid-exp: --ranks-per-run: expected an integer in [1, 2147483647], got '0'"},
        /* unknown flags */
        {"tests/configs/tiny-train.yaml --bogus", "hybrid-exp: unknown option '--bogus'"},
        {"generate --checkpoint m.safetensors -x", "hybrid-exp generate: unknown option '-x'"},
        {"bench --nope", "hybrid-exp bench: unknown option '--nope'"},
        {"tests/configs/tiny-train.yaml --quiet=yes", "hybrid-exp: option '--quiet' takes no value"},
        {"tests/configs/tiny-train.yaml --s x", "hybrid-exp: ambiguous option '--s' (--set, --stop-after)"},
        /* a missing value */
        {"tests/configs/tiny-train.yaml --out", "hybrid-exp: option '--out' needs a value"},
        {"dump --checkpoint", "hybrid-exp dump: option '--checkpoint' needs a value"},
        {"generate --checkpoint m.safetensors --prompt a -n", "hybrid-exp generate: option '-n' needs a value"},
        /* words and positional arguments */
        {"eval --checkpoint m --data d --format text", "hybrid-exp eval: --format: expected one of auto, bytes, tokens, llmc, nanogpt, got 'text'"},
        {"bench decode --fill copy", "hybrid-exp bench decode: --fill: expected prefill or tile, got 'copy'"},
        {"bench decode --fill tile --rounds 0", "hybrid-exp bench decode: --rounds: expected an integer in [1, 100], got '0'"},
        {"bench decode --rounds 2", "hybrid-exp bench decode: --rounds 2 needs --fill tile (later rounds rebuild each context by tiling)"},
        {"tests/configs/tiny-train.yaml other.yaml", "hybrid-exp: unexpected argument 'other.yaml' (one CONFIG.yaml)"},
        {"blocks extra", "hybrid-exp blocks: unexpected argument 'extra'"},
        {"tokenizer fit", "hybrid-exp tokenizer: unknown subcommand 'fit' (train)"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        char cmd[512], *out;
        size_t len;
        snprintf(cmd, sizeof cmd, "%s %s 2>&1 >/dev/null", tu_exe(), cases[k].args);
        ck_assert_int_eq(tu_run(cmd, false, &out, &len), 2);
        char *nl = strchr(out, '\n');
        ck_assert_msg(nl, "%s: %s", cases[k].args, out);
        *nl = 0;
        ck_assert_str_eq(out, cases[k].first_line);
        free(out);
    }
}
END_TEST

/* The accepted spellings: --set K=V and --set=K=V (both applied), --opt=V, -h / --help,
 * --version, options before the config. */
START_TEST(cli_valid_forms_still_work) {
    char cmd[512], *out;
    size_t len;
    snprintf(cmd, sizeof cmd, "%s train --set=model.d_model=48 --stop-after=5 tests/configs/tiny-train.yaml "
             "--set model.n_layers=3 --out=/tmp/hybrid-test-forms-%d --check", tu_exe(), (int)getpid());
    ck_assert_int_eq(tu_run(cmd, false, &out, &len), 0);
    ck_assert_msg(strstr(out, "d_model 48, 3 layers"), "%s", out);
    char want[96];
    snprintf(want, sizeof want, "out_dir /tmp/hybrid-test-forms-%d", (int)getpid());
    ck_assert_msg(strstr(out, want), "%s", out);
    free(out);
    static const char *const helps[] = {"-h", "--help", "train -h", "generate --help", "eval -h", "bench --help",
                                        "bench decode -h", "bench allreduce --help", "tokenizer train -h",
                                        "tokenize --help", "dump -h", "init --help", "plot -h", "blocks --help",
                                        "tests/configs/tiny-train.yaml --help"};
    for (size_t k = 0; k < sizeof helps / sizeof *helps; k++) {
        snprintf(cmd, sizeof cmd, "%s %s", tu_exe(), helps[k]);
        ck_assert_int_eq(tu_run(cmd, false, &out, &len), 0);
        ck_assert_msg(!strncmp(out, "usage: ", 7), "%s: %s", helps[k], out);
        free(out);
    }
    snprintf(cmd, sizeof cmd, "%s --version", tu_exe());
    ck_assert_int_eq(tu_run(cmd, false, &out, &len), 0);
    ck_assert_msg(!strncmp(out, "hybrid-exp ", 11), "%s", out);
    free(out);
}
END_TEST

/* `blocks` prints each option's type and accepted values beside its default. */
START_TEST(cli_blocks_prints_ranges) {
    char cmd[512], *out;
    size_t len;
    snprintf(cmd, sizeof cmd, "%s blocks", tu_exe());
    ck_assert_int_eq(tu_run(cmd, false, &out, &len), 0);
    ck_assert_msg(strstr(out, "d_state          int   [1, 256]               default 16"), "%s", out);
    ck_assert_msg(strstr(out, "rope_theta       float [0, 1e+12]|null        default null"), "%s", out);
    ck_assert_msg(strstr(out, "[1, 65536]|auto"), "%s", out);
    free(out);
}
END_TEST

static Suite *generate_cli_suite(void) {
    Suite *s = suite_create("generate_cli");
    TCase *cli = tcase_create("cli");
    tcase_set_timeout(cli, 120);
    tcase_add_test(cli, cli_generate_streams_and_continues_from_state);
    tcase_add_test(cli, cli_bench_decode_quick_writes_csv);
    tcase_add_test(cli, cli_stop_after_rejects_junk);
    tcase_add_test(cli, cli_usage_errors_name_flag_and_value);
    tcase_add_test(cli, cli_valid_forms_still_work);
    tcase_add_test(cli, cli_blocks_prints_ranges);
    suite_add_tcase(s, cli);
    return s;
}
HY_TEST_SUITE(generate_cli_suite)

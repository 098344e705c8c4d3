/* core/args: the validated number parser (whole string, range, overflow, messages naming the flag
 * and the value) and the getopt_long walk (both --opt V and --opt=V, positional arguments in
 * order, "--", and the messages for unknown, ambiguous, valueless and value-less options). */
#include "core/args.h"
#include "core/error.h"
#include "tests/testutil.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

/* Asserts that parsing s fails with exactly message msg and leaves *out alone. */
static void long_rejects(const char *s, long lo, long hi, const char *msg) {
    long out = 77;
    ck_assert_int_eq(hy_arg_long("--n", s, lo, hi, &out), HY_ERR_CONFIG);
    ck_assert_int_eq(out, 77);
    ck_assert_str_eq(hy_last_error(), msg);
}

START_TEST(arg_long_whole_string_in_range) {
    long v = 0;
    ck_assert_int_eq(hy_arg_long("--n", "42", 1, LONG_MAX, &v), 0);
    ck_assert_int_eq(v, 42);
    ck_assert_int_eq(hy_arg_long("--n", "+7", 0, 10, &v), 0);
    ck_assert_int_eq(v, 7);
    ck_assert_int_eq(hy_arg_long("--n", "-3", LONG_MIN, 0, &v), 0);
    ck_assert_int_eq(v, -3);
    long_rejects("abc", 1, LONG_MAX, "--n: expected an integer >= 1, got 'abc'");
    long_rejects("", 1, LONG_MAX, "--n: expected an integer >= 1, got ''");
    long_rejects("12x", 1, LONG_MAX, "--n: expected an integer >= 1, got '12x'");
    long_rejects(" 5", 1, LONG_MAX, "--n: expected an integer >= 1, got ' 5'");
    long_rejects("1.5", 1, LONG_MAX, "--n: expected an integer >= 1, got '1.5'");
    long_rejects("0x10", 1, LONG_MAX, "--n: expected an integer >= 1, got '0x10'");
    long_rejects("0", 1, LONG_MAX, "--n: expected an integer >= 1, got '0'");
    long_rejects("99999999999999999999", 1, LONG_MAX, "--n: expected an integer >= 1, got '99999999999999999999'");
    long_rejects("4097", 0, 4096, "--n: expected an integer in [0, 4096], got '4097'");
    long_rejects("1", LONG_MIN, 0, "--n: expected an integer <= 0, got '1'");
}
END_TEST

/* Asserts that parsing s fails with exactly message msg and leaves *out alone. */
static void double_rejects(const char *s, double lo, double hi, int open, const char *msg) {
    double out = 77;
    ck_assert_int_eq(hy_arg_double("--x", s, lo, hi, open, &out), HY_ERR_CONFIG);
    ck_assert(out == 77);
    ck_assert_str_eq(hy_last_error(), msg);
}

START_TEST(arg_double_whole_string_finite_in_range) {
    double v = 0;
    ck_assert_int_eq(hy_arg_double("--x", "0.25", 0, 1, 0, &v), 0);
    ck_assert(v == 0.25);
    ck_assert_int_eq(hy_arg_double("--x", "1e-3", 0, INFINITY, HY_ARG_OPEN_LO, &v), 0);
    ck_assert(v == 1e-3);
    ck_assert_int_eq(hy_arg_double("--x", "1", 0, 1, HY_ARG_OPEN_LO, &v), 0);   /* a closed upper bound */
    ck_assert(v == 1);
    double_rejects("0.5x", 0, 1, HY_ARG_OPEN_LO, "--x: expected a number in (0, 1], got '0.5x'");
    double_rejects("", 0, 1, 0, "--x: expected a number in [0, 1], got ''");
    double_rejects("0", 0, 1, HY_ARG_OPEN_LO, "--x: expected a number in (0, 1], got '0'");
    double_rejects("1", 0, 1, HY_ARG_OPEN_HI, "--x: expected a number in [0, 1), got '1'");
    double_rejects("nan", -INFINITY, INFINITY, 0, "--x: expected a finite number, got 'nan'");
    double_rejects("inf", 0, INFINITY, 0, "--x: expected a number >= 0, got 'inf'");
    double_rejects("1e999", 0, INFINITY, HY_ARG_OPEN_LO, "--x: expected a number > 0, got '1e999'");
    double_rejects("-1", 0, INFINITY, 0, "--x: expected a number >= 0, got '-1'");
    double_rejects(" 1", 0, INFINITY, 0, "--x: expected a number >= 0, got ' 1'");
    double_rejects("2", -INFINITY, 1, HY_ARG_OPEN_HI, "--x: expected a number < 1, got '2'");
}
END_TEST

enum { O_SET = 256, O_STOP, O_QUIET };
static const struct option OPTS[] = {{"set", required_argument, NULL, O_SET},
                                     {"stop-after", required_argument, NULL, O_STOP},
                                     {"quiet", no_argument, NULL, O_QUIET},
                                     {"help", no_argument, NULL, 'h'},
                                     {NULL, 0, NULL, 0}};

/* Walks argv and writes "code:value" per argument into out, "BAD(message)" for a refused one. */
static void walk(int argc, char **argv, char *out, size_t n) {
    hy_args w;
    hy_args_init(&w, argc, argv, "hn:", OPTS);
    const char *v;
    out[0] = 0;
    for (int c; (c = hy_args_next(&w, &v)) != HY_ARG_END;) {
        size_t len = strlen(out);
        if (c == HY_ARG_BAD) snprintf(out + len, n - len, "BAD(%s) ", hy_last_error());
        else snprintf(out + len, n - len, "%d:%s ", c, v ? v : "-");
    }
}

START_TEST(args_walk_in_order_with_both_value_forms) {
    char out[1024];
    char *a[] = {"cmd", "config.yaml", "--set", "a=1", "--set=b=2", "--quiet", "-n", "5", "-n7", "--stop=3", "--",
                 "--set", NULL};
    walk(12, a, out, sizeof out);
    ck_assert_str_eq(out, "1:config.yaml 256:a=1 256:b=2 258:- 110:5 110:7 257:3 1:--set ");
    /* the walk restarts: a second argument list is read from its start */
    char *b[] = {"cmd", "-h", "x", NULL};
    walk(3, b, out, sizeof out);
    ck_assert_str_eq(out, "104:- 1:x ");
}
END_TEST

START_TEST(args_walk_names_each_problem) {
    char out[1024];
    char *a[] = {"cmd", "--bogus=1", "--s", "v", "--quiet=yes", "-x", "--set", NULL};
    walk(7, a, out, sizeof out);
    ck_assert_str_eq(out, "BAD(unknown option '--bogus') BAD(ambiguous option '--s' (--set, --stop-after)) 1:v "
                          "BAD(option '--quiet' takes no value) BAD(unknown option '-x') BAD(option '--set' needs a value) ");
    char *b[] = {"cmd", "-n", NULL};
    walk(2, b, out, sizeof out);
    ck_assert_str_eq(out, "BAD(option '-n' needs a value) ");
}
END_TEST

static Suite *args_suite(void) {
    Suite *s = suite_create("args");
    TCase *t = tcase_create("args");
    tcase_add_test(t, arg_long_whole_string_in_range);
    tcase_add_test(t, arg_double_whole_string_finite_in_range);
    tcase_add_test(t, args_walk_in_order_with_both_value_forms);
    tcase_add_test(t, args_walk_names_each_problem);
    suite_add_tcase(s, t);
    return s;
}
HY_TEST_SUITE(args_suite)

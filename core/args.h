/* Command-line arguments for the programs (hybrid-exp and its benchmarks): one getopt_long loop
 * step with the messages every command shares, and the one validated number parser behind every
 * numeric flag. Nothing here prints or exits: a problem is recorded for hy_last_error() and the
 * program prints it (as usage errors, exit status 2). */
#ifndef HY_CORE_ARGS_H
#define HY_CORE_ARGS_H
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>

/* A walk over argv[1..argc) with getopt_long (argv[0] names the command and is skipped). Options
 * and positional arguments come back in the order given; after "--" every argument is positional.
 * Long options may be abbreviated to a unique prefix and take their value as `--opt V` or
 * `--opt=V` (getopt_long's conventions). Uses getopt's global state: one walk at a time. */
typedef struct {
    int argc;
    char **argv;
    char shorts[64];                 /* "-:" then the command's short options */
    const struct option *longs;      /* each option's val is its short letter or a code > 255 */
    bool rest;                       /* past "--": the arguments left are positional */
} hy_args;

enum { HY_ARG_END = -1, HY_ARG_BAD = 0, HY_ARG_POSITIONAL = 1 };

/* Starts a walk (resets getopt). shorts: getopt's letters, e.g. "hn:" (at most 60 characters). */
void hy_args_init(hy_args *a, int argc, char **argv, const char *shorts, const struct option *longs);
/* The next argument: an option's val (its value, if it takes one, in *value), HY_ARG_POSITIONAL
 * (the argument in *value), HY_ARG_END, or HY_ARG_BAD after recording why ("unknown option '--x'",
 * "option '--out' needs a value", "option '--quiet' takes no value"). */
int hy_args_next(hy_args *a, const char **value);
/* The option as the user typed its name, for messages: "--top-p" or "-n", from its val. */
const char *hy_args_name(const hy_args *a, int val, char *buf, int n);

/* Parses the whole of s as a base-10 integer in [lo, hi] into *out. On anything else (empty,
 * trailing characters, leading space, overflow, out of range) records "FLAG: expected an integer
 * >= LO, got 'S'" (or "<= HI", "in [LO, HI]") and returns HY_ERR_CONFIG; *out is left alone. */
int hy_arg_long(const char *flag, const char *s, long lo, long hi, long *out);

/* Bounds of hy_arg_double: closed unless these bits say otherwise. */
enum { HY_ARG_OPEN_LO = 1, HY_ARG_OPEN_HI = 2 };
/* Parses the whole of s as a finite decimal number within lo..hi (each bound included unless
 * `open` excludes it; -INFINITY / INFINITY for none) into *out. On anything else records
 * "FLAG: expected a number in (LO, HI], got 'S'" (or "> LO", ">= LO", ...) and returns
 * HY_ERR_CONFIG; *out is left alone. */
int hy_arg_double(const char *flag, const char *s, double lo, double hi, int open, double *out);

#endif

#include "core/args.h"
#include "core/error.h"
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void hy_args_init(hy_args *a, int argc, char **argv, const char *shorts, const struct option *longs) {
    a->argc = argc, a->argv = argv, a->longs = longs, a->rest = false;
    /* '-': positional arguments come back in order (code 1), never permuted; ':': a missing value
     * is told apart from an unknown option, and getopt prints nothing itself */
    snprintf(a->shorts, sizeof a->shorts, "-:%s", shorts ? shorts : "");
    optind = 0;   /* glibc: a full reset, so that a program may walk several argument lists */
    opterr = 0;
}

const char *hy_args_name(const hy_args *a, int val, char *buf, int n) {
    for (const struct option *o = a->longs; o && o->name; o++)
        if (o->val == val) {
            snprintf(buf, (size_t)n, "--%s", o->name);
            return buf;
        }
    snprintf(buf, (size_t)n, "-%c", val > 32 && val < 127 ? val : '?');
    return buf;
}

/* Records why argument `arg` was refused: an unknown or ambiguous long option, a value given to
 * a flag (optopt != 0, long form), or an unknown short option. */
static int bad_option(const hy_args *a, const char *arg) {
    if (strncmp(arg, "--", 2) != 0)
        return hy_fail_code(HY_ERR_CONFIG, "unknown option '-%c'", optopt > 32 && optopt < 127 ? optopt : '?');
    size_t len = strcspn(arg + 2, "=");
    if (optopt != 0) return hy_fail_code(HY_ERR_CONFIG, "option '--%.*s' takes no value", (int)len, arg + 2);
    char matches[256] = "";
    int n = 0;
    for (const struct option *o = a->longs; o && o->name; o++)
        if (!strncmp(o->name, arg + 2, len) && strlen(matches) + strlen(o->name) + 5 < sizeof matches)
            n++, strcat(strcat(strcat(matches, n > 1 ? ", " : ""), "--"), o->name);
    if (n > 1) return hy_fail_code(HY_ERR_CONFIG, "ambiguous option '--%.*s' (%s)", (int)len, arg + 2, matches);
    return hy_fail_code(HY_ERR_CONFIG, "unknown option '--%.*s'", (int)len, arg + 2);
}

int hy_args_next(hy_args *a, const char **value) {
    *value = NULL;
    if (a->rest) {
        if (optind >= a->argc) return HY_ARG_END;
        *value = a->argv[optind++];
        return HY_ARG_POSITIONAL;
    }
    int c = getopt_long(a->argc, a->argv, a->shorts, a->longs, NULL);
    if (c == -1) {   /* the end, or "--" with optind at the arguments after it */
        a->rest = true;
        return hy_args_next(a, value);
    }
    if (c == ':') {
        hy_fail_code(HY_ERR_CONFIG, "option '%s' needs a value", a->argv[optind - 1]);
        return HY_ARG_BAD;
    }
    if (c == '?') {
        bad_option(a, a->argv[optind - 1]);
        return HY_ARG_BAD;
    }
    *value = optarg;
    return c;
}

/* Whether s starts as a number should: a digit, a sign, or a point (no space, not empty). */
static bool starts_number(const char *s) { return *s && (isdigit((unsigned char)*s) || strchr("+-.", *s)); }

int hy_arg_long(const char *flag, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = starts_number(s) ? strtol(s, &end, 10) : 0;
    if (starts_number(s) && !errno && end != s && !*end && v >= lo && v <= hi) {
        *out = v;
        return 0;
    }
    if (hi == LONG_MAX) return hy_fail_code(HY_ERR_CONFIG, "%s: expected an integer >= %ld, got '%s'", flag, lo, s);
    if (lo == LONG_MIN) return hy_fail_code(HY_ERR_CONFIG, "%s: expected an integer <= %ld, got '%s'", flag, hi, s);
    return hy_fail_code(HY_ERR_CONFIG, "%s: expected an integer in [%ld, %ld], got '%s'", flag, lo, hi, s);
}

int hy_arg_double(const char *flag, const char *s, double lo, double hi, int open, double *out) {
    char *end;
    errno = 0;
    double v = starts_number(s) ? strtod(s, &end) : NAN;
    bool above = open & HY_ARG_OPEN_LO ? v > lo : v >= lo, below = open & HY_ARG_OPEN_HI ? v < hi : v <= hi;
    if (starts_number(s) && !errno && end != s && !*end && isfinite(v) && above && below) {
        *out = v;
        return 0;
    }
    char range[96];
    if (isinf(lo) && isinf(hi)) snprintf(range, sizeof range, "a finite number");
    else if (isinf(hi)) snprintf(range, sizeof range, "a number %s %g", open & HY_ARG_OPEN_LO ? ">" : ">=", lo);
    else if (isinf(lo)) snprintf(range, sizeof range, "a number %s %g", open & HY_ARG_OPEN_HI ? "<" : "<=", hi);
    else snprintf(range, sizeof range, "a number in %c%g, %g%c", open & HY_ARG_OPEN_LO ? '(' : '[', lo, hi,
                  open & HY_ARG_OPEN_HI ? ')' : ']');
    return hy_fail_code(HY_ERR_CONFIG, "%s: expected %s, got '%s'", flag, range, s);
}

#!/bin/bash
# Runs each fuzz target (BUILD/fuzz-NAME, libFuzzer + ASan + UBSan) for SECONDS on its corpus
# BUILD/corpus/NAME (kept between runs), seeded with BUILD/seeds/NAME (tests/fuzz/seeds.sh) and the
# kept regression inputs tests/fuzz/regress/NAME. A crash, a sanitizer report, a leak, an
# allocation over 512 MB or an input that runs over 10 s stops that target and leaves the input in
# BUILD/crashes/NAME/; the log is BUILD/logs/NAME.log. Prints executions and crashes per target and
# exits non-zero if any target found one. Run from the repository root.
# usage: tests/fuzz/run.sh BUILD SECONDS NAME...
set -uo pipefail
build=$1 secs=$2
shift 2
mkdir -p "$build/logs"
status=0
printf '%-12s %12s %10s %8s\n' target executions exec/s crashes
for name in "$@"; do
    mkdir -p "$build/corpus/$name" "$build/crashes/$name" "tests/fuzz/regress/$name"
    log=$build/logs/$name.log
    before=$(ls "$build/crashes/$name" | wc -l)
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
        "$build/fuzz-$name" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
        -print_final_stats=1 -artifact_prefix="$build/crashes/$name/" \
        "$build/corpus/$name" "$build/seeds/$name" "tests/fuzz/regress/$name" > "$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    found=$(($(ls "$build/crashes/$name" | wc -l) - before))
    printf '%-12s %12s %10s %8d\n' "$name" "${execs:-?}" "${rate:-?}" "$found"
    if [ "$rc" -ne 0 ] || [ "$found" -ne 0 ]; then
        status=1
        echo "  $name: exit $rc; see $log and $build/crashes/$name/" >&2
        grep -m 3 -E "ERROR|SUMMARY|runtime error" "$log" | sed 's/^/  /' >&2
    fi
done
exit $status

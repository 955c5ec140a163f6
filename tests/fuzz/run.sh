#!/bin/sh
# Runs the libFuzzer targets built by `make fuzz-build` (see tests/README.md).
#
#   tests/fuzz/run.sh regress BIN...        replay each target's committed
#                                           corpus once (tests/fuzz/corpus/NAME)
#   tests/fuzz/run.sh run SECONDS BIN...    fuzz each target for SECONDS,
#                                           seeded by its committed corpus
#
# New inputs go to build/fuzz/corpus/NAME, never into the committed corpus
# (minimise and copy by hand: see tests/README.md). A crash leaves its input
# in build/fuzz/artifacts/NAME/ and makes the script exit 1 after the other
# targets ran. Each run prints one summary line per target:
#   fuzz NAME (MODE): N execs in S s (R exec/s), corpus C, OK|FAILED
# FUZZ_JOBS (default 2, the CI machine's cores) targets run at a time.
set -u
mode=${1:?usage: run.sh regress BIN... | run.sh run SECONDS BIN...}
shift
secs=0
if [ "$mode" = run ]; then
    secs=${1:?run needs SECONDS}
    shift
fi
root=$(cd "$(dirname "$0")/../.." && pwd)
: "${ASAN_OPTIONS:=detect_leaks=1:abort_on_error=0:halt_on_error=1:allocator_may_return_null=0}"
: "${UBSAN_OPTIONS:=halt_on_error=1:print_stacktrace=1}"
export ASAN_OPTIONS UBSAN_OPTIONS
status="$root/build/fuzz/run-status.$$"
mkdir -p "$root/build/fuzz"
: >"$status"

one() { # BIN: run one target, print its line, note a failure in $status
    bin=$1
    name=$(basename "$bin")
    name=${name#fuzz_}
    seeds="$root/tests/fuzz/corpus/$name"
    dict="$root/tests/fuzz/$name.dict"
    work="$root/build/fuzz/corpus/$name"
    art="$root/build/fuzz/artifacts/$name"
    log="$root/build/fuzz/$name.log"
    mkdir -p "$work" "$art"
    if [ ! -d "$seeds" ] || [ -z "$(ls -A "$seeds" 2>/dev/null)" ]; then
        echo "fuzz $name: no seed corpus in tests/fuzz/corpus/$name" >&2
        echo "$name" >>"$status"
        return
    fi
    set -- -rss_limit_mb=2048 -timeout=20 -artifact_prefix="$art/" -print_final_stats=1
    [ -f "$dict" ] && set -- "$@" -dict="$dict"
    start=$(date +%s)
    if [ "$mode" = regress ]; then
        # -runs=0: execute every seed once, mutate nothing
        "$bin" "$@" -runs=0 "$seeds" >"$log" 2>&1
    else
        "$bin" "$@" -max_total_time="$secs" "$work" "$seeds" >"$log" 2>&1
    fi
    rc=$?
    took=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    corp=$(grep -o 'corp: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    if [ "$rc" = 0 ]; then st=OK; else st=FAILED; echo "$name" >>"$status"; fi
    echo "fuzz $name ($mode): ${execs:-?} execs in ${took} s (${rate:-?} exec/s), corpus ${corp:-?}, $st"
    if [ "$rc" != 0 ]; then
        tail -n 60 "$log"
        echo "fuzz $name: full log in $log; reproducer in $art/" >&2
    fi
}

jobs=${FUZZ_JOBS:-2}
n=0
for bin in "$@"; do
    one "$bin" &
    n=$((n + 1))
    if [ "$n" -ge "$jobs" ]; then
        wait
        n=0
    fi
done
wait
failed=$(tr '\n' ' ' <"$status")
rm -f "$status"
if [ -n "$failed" ]; then
    echo "fuzz: FAILED: $failed" >&2
    exit 1
fi
exit 0

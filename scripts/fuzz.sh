#!/usr/bin/env bash
# `make fuzz`: every cargo-fuzz target in fuzz/, one after the other (the
# machine has 2 cores), each for FUZZ_SECONDS (default 600). Needs a nightly
# toolchain (rustup) and cargo-fuzz; installs them when missing. Prints one
# line per target (runs, crashes) and writes fuzz/RESULTS.md. A crash leaves
# its input under fuzz/artifacts/<target>/ and fails the run: turn it into a
# unit test next to the parser, then fix the parser.
#
#   FUZZ_SECONDS   seconds per target (600)
#   FUZZ_TARGETS   space-separated subset (default: all)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/fuzz"
SECONDS_EACH="${FUZZ_SECONDS:-600}"
say() { printf 'fuzz: %s\n' "$*" >&2; }
die() { printf 'fuzz: ERROR: %s\n' "$*" >&2; exit 1; }

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

targets="${FUZZ_TARGETS:-$(cargo +nightly fuzz list | tr '\n' ' ')}"
say "building the targets"
cargo +nightly fuzz build -O >/dev/null 2>&1 || cargo +nightly fuzz build -O

mkdir -p logs
report="$ROOT/fuzz/RESULTS.md"
{
    echo "# Fuzzing results"
    echo
    echo "\`make fuzz\` on $(date -u '+%Y-%m-%d %H:%M UTC'), ${SECONDS_EACH} s per target, one target at a time."
    echo
    echo "| target | runs | crashes, panics, timeouts |"
    echo "|---|---:|---:|"
} > "$report"
failed=0
for t in $targets; do
    say "$t: ${SECONDS_EACH}s"
    log="logs/$t.log"
    set +e
    cargo +nightly fuzz run -O "$t" -- -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1
    code=$?
    set -e
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)"
    crashes=0
    if [ "$code" != 0 ]; then
        crashes=1
        failed=1
        say "$t FAILED (exit $code): see fuzz/$log and fuzz/artifacts/$t/"
    fi
    echo "| \`$t\` | ${runs:-?} | $crashes |" >> "$report"
    say "$t: ${runs:-?} runs, exit $code"
done
cat "$report"
[ "$failed" = 0 ] || die "a target failed"

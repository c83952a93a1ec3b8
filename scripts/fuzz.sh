#!/usr/bin/env bash
# Runs every fuzz target under libFuzzer (cargo-fuzz) for a fixed time each.
#   scripts/fuzz.sh [SECONDS]   (default 30; CI uses the default, by hand run longer)
# A target fails on a panic, an abort, or any single allocation above the limit below.
# Prints each target's executions; a crash leaves its input in fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-30}"
# The largest single allocation the decoders may make: decompression stops at 64 MiB,
# and one batch's records decode to at most ~16 times their bytes (src/kafka/unpack.rs).
malloc_limit_mb=1280
# cargo-fuzz keeps its build apart from the main one: nightly, with sanitizer flags.
target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
corpus_root="${WANMIRROR_FUZZ_CORPUS:-$target_dir/corpus}"

# On its own line: a failure inside `for t in $(...)` would not stop the script.
targets=$(cargo +nightly fuzz list --fuzz-dir fuzz)
[ -n "$targets" ] || { echo "fuzz: no targets found" >&2; exit 1; }
summary=()
for t in $targets; do
  mkdir -p "$corpus_root/$t"
  log=$(mktemp)
  echo "fuzz: $t for ${secs} s"
  if ! cargo +nightly fuzz run --fuzz-dir fuzz --target-dir "$target_dir" "$t" "$corpus_root/$t" -- \
      -max_total_time="$secs" -malloc_limit_mb="$malloc_limit_mb" -rss_limit_mb=4096 \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz: $t failed" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  summary+=("$t: $runs executions in ${secs} s")
  rm -f "$log"
done
printf 'fuzz: %s\n' "${summary[@]}"

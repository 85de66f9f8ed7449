#!/usr/bin/env bash
# Fuzzing the station wire decoders (proto/fuzz: HJ 212, Circular 10, JSON
# lines, and the head of an oversized MQTT PUBLISH, which ingest's MQTT
# listener parses with a std-only file the target includes by path) with
# cargo-fuzz (libFuzzer), outside CI, then ingest's TCP framing
# against its model (the property test framing_matches_the_model_whatever_
# _the_reads, FUZZ_RUNS cases in a release build; the framing is async code
# inside the ingest crate, which libFuzzer's sanitizer build of librdkafka
# would make slow to build). Installs the nightly
# toolchain and cargo-fuzz when missing. Each target runs FUZZ_RUNS
# executions (10 million by default) from its corpus in
# proto/fuzz/corpus/<target> (kept between runs, not committed); the
# libFuzzer summary of each run goes to target/fuzz/<target>-<time>.log.
# A crash leaves its input in proto/fuzz/artifacts/<target>/: turn it into
# a unit test of the decoder, then fix.
#
#   scripts/fuzz.sh                      # every target and the framing, 10 million runs each
#   FUZZ_RUNS=100000 scripts/fuzz.sh json_decode   # one target (no framing run)
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${FUZZ_RUNS:-10000000}
targets=("$@")
framing=0
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(sed -n 's/^name = "\(.*_decode\)"$/\1/p' proto/fuzz/Cargo.toml)
  framing=1
fi

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

mkdir -p target/fuzz
stamp=$(date -u +%Y%m%dT%H%M%SZ)
for t in "${targets[@]}"; do
  mkdir -p "proto/fuzz/corpus/$t"
  log="target/fuzz/$t-$stamp.log"
  printf '\n==> %s: %s runs (log %s)\n' "$t" "$runs" "$log"
  started=$(date +%s)
  (cd proto && cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- \
    -runs="$runs" -print_final_stats=1) >"$log" 2>&1 || {
    tail -n 40 "$log"
    echo "$t: crashed or failed; input in proto/fuzz/artifacts/$t/" >&2
    exit 1
  }
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
  printf '%s: %s runs in %ss, no crash\n' "$t" "$runs" "$(($(date +%s) - started))"
done

if ((framing)); then
  log="target/fuzz/tcp_framing-$stamp.log"
  printf '\n==> TCP framing: %s cases (log %s)\n' "$runs" "$log"
  started=$(date +%s)
  PROPTEST_CASES=$runs cargo test --locked --release -p quantrac-ingest --lib \
    framing_matches_the_model_whatever_the_reads >"$log" 2>&1 || {
    tail -n 40 "$log"
    exit 1
  }
  grep -E '^test result' "$log" || true
  printf 'tcp framing: %s cases in %ss, no failure\n' "$runs" "$(($(date +%s) - started))"
fi

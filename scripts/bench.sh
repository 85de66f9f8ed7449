#!/usr/bin/env bash
# The end-to-end benchmarks, from a fresh clone: starts Kafka, Mosquitto and
# PostgreSQL, builds the benchmark binaries in release mode and runs both
# with their defaults (see benches/README.md for what they measure):
#
#   ingest-rate   simulated stations -> ingest -> Kafka, per protocol
#   store-rate    readings topic -> PostgreSQL: processor (copy, unnest)
#                 vs psql \copy of the same rows
#   e2e           the whole pipeline at once, each service its own process:
#                 stepped rates, publish->commit and publish->alert latency,
#                 CPU and memory of every process, the machine's limits
#                 (report in benches/results/)
#
#   scripts/bench.sh                      # ingest-rate and store-rate (~3-4 minutes)
#   scripts/bench.sh e2e                  # the end-to-end run (~5 minutes)
#   scripts/bench.sh store-rate           # only one
#   INGEST_RATE_ARGS="--samples 500 --repeat 1" scripts/bench.sh ingest-rate
#
# Each run's output is also written to target/bench/<name>-<UTC time>.txt.
# The figures are only as good as the machine is quiet: the binaries print
# how busy it was before and during each run.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

benches=("$@")
if [ ${#benches[@]} -eq 0 ]; then
  benches=(ingest-rate store-rate)
fi
for b in "${benches[@]}"; do
  case "$b" in
  ingest-rate | store-rate | e2e) ;;
  *)
    echo "unknown benchmark '$b' (expected ingest-rate, store-rate or e2e)" >&2
    exit 2
    ;;
  esac
done

step "services (deploy/services.sh start)"
# Only the services the benchmarks use (not the TimescaleDB/PGlite one).
deploy/services.sh start kafka mosquitto postgres
eval "$(deploy/services.sh env)"
# What earlier test runs left costs the services CPU and disk the
# benchmarks would count as the pipeline's: databases (an idle PostgreSQL at
# 0.32 cores with 602 of them), topics, and MQTT sessions queueing every
# reading (a 285 MB broker store rewritten every 10 s).
deploy/services.sh prune postgres kafka mosquitto
command -v psql >/dev/null || {
  echo "psql not found: store-rate compares with psql \\copy" >&2
  exit 1
}

step "build (release)"
cargo build --release -p quantrac-benches --bins
# e2e runs the services as their own processes.
cargo build --release -p quantrac-ingest -p quantrac-processor -p quantrac-alerting --bins

target_dir=${CARGO_TARGET_DIR:-target}
out_dir="$target_dir/bench"
mkdir -p "$out_dir"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
status=0
for b in "${benches[@]}"; do
  case "$b" in
  ingest-rate) read -r -a extra <<<"${INGEST_RATE_ARGS:-}" ;;
  store-rate) read -r -a extra <<<"${STORE_RATE_ARGS:-}" ;;
  e2e) read -r -a extra <<<"${E2E_ARGS:-}" ;;
  esac
  out="$out_dir/$b-$stamp.txt"
  step "$b ${extra[*]:-} (output also in $out)"
  # The built binary directly: no cargo lock to wait on mid-benchmark.
  if ! "$target_dir/release/$b" "${extra[@]}" 2>&1 | tee "$out"; then
    echo "$b failed" >&2
    status=1
  fi
done
exit $status

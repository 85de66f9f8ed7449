#!/usr/bin/env bash
# The fault-injection suite (benches/src/bin/faults.rs), from a fresh clone:
# starts Kafka, Mosquitto and PostgreSQL, builds the services and the suite,
# and runs it. Simulated stations send over TCP and MQTT while each phase
# injects one fault (kill -9 of every service and of PostgreSQL, Kafka/PostgreSQL/Mosquitto
# restarts, poison records, oversized MQTT messages, 1,100 idle connections,
# a 10x burst); the report (readings lost and duplicated, alerts missing or
# doubled, recovery per fault, peak memory) goes to benches/results/.
#
#   scripts/faults.sh                  # the full run: ~3 million readings, ~12 minutes (release build)
#   scripts/faults.sh --short          # the CI version: ~3.5 minutes (debug build)
#   scripts/faults.sh --fault kill-ingest --fault restart-kafka --phase 60s
#
# Exit status 1 when a promise was broken. It restarts the services it
# tests: do not run it beside a test run on the same services.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=(--release)
dir=target/release
for a in "$@"; do
  if [[ $a == --short ]]; then
    profile=()
    dir=target/debug
  fi
done

printf '\n==> services (deploy/services.sh start kafka mosquitto postgres smtp)\n'
deploy/services.sh start tls kafka mosquitto postgres smtp
eval "$(deploy/services.sh env)"

printf '\n==> build (%s)\n' "${profile[*]:-debug}"
# One build of every binary: the services and the suite with the same
# features as the rest of the workspace (a subset would rebuild the deps).
cargo build --locked "${profile[@]}" --workspace --bins

printf '\n==> faults %s\n' "$*"
exec "$dir/faults" "$@"

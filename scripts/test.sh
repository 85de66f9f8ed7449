#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs and starts the real
# services (Kafka, Mosquitto, PostgreSQL) on loopback, then runs the format
# check, clippy, every test against them, and the short fault-injection run.
#
#   scripts/test.sh            # everything
#   scripts/test.sh -p quantrac-ingest   # extra args go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
started=$(date +%s)

step "toolchain"
if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
cargo --version

# On any failure after the services are up: what the machine and the
# services looked like, so a CI failure can be diagnosed from its log.
diagnose() {
  local rc=$?
  ((rc == 0)) && return 0
  printf '\n==> failed (exit %s): machine and services at the end\n' "$rc"
  df -h / . 2>/dev/null || true
  free -m 2>/dev/null || true
  deploy/services.sh status || true
  QUANTRAC_LOG_LINES=60 deploy/services.sh logs || true
  return "$rc"
}

step "services (deploy/services.sh start)"
trap diagnose EXIT
deploy/services.sh start
eval "$(deploy/services.sh env)"
# What earlier runs left (hundreds of databases and topics, MQTT sessions
# queueing every reading) keeps the services busy; nothing of this run
# exists yet.
deploy/services.sh prune postgres kafka mosquitto

step "crate layers (scripts/check-layers.sh)"
scripts/check-layers.sh

step "deployment files (scripts/check-deploy.sh)"
scripts/check-deploy.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test --workspace"
cargo test --workspace --locked "$@"

step "fault injection, short (scripts/faults.sh --short)"
# Every service killed or restarted under load; fails when a reading is
# lost or duplicated, an alert missing or doubled, or a station waits over
# 20 s. The report stays in target/faults.
scripts/faults.sh --short --out target/faults

step "fuzz targets compile"
cargo check --manifest-path proto/fuzz/Cargo.toml --bins --quiet

printf '\nall checks passed in %ss\n' "$(( $(date +%s) - started ))"

#!/usr/bin/env bash
# Flame graphs of the whole pipeline under load: runs `e2e` at one rate and,
# while it runs, samples the three services, Kafka and PostgreSQL with
# `perf record` (DWARF call graphs), then folds each with inferno into
# benches/results/flame-<tag>-<process>.svg. Kafka's JIT-compiled frames show
# as one unnamed [perf-<pid>.map] frame: only its native share is resolved.
# The samples, folded stacks and e2e output stay in target/profile/<tag>.
#
#   scripts/profile.sh                         # 20,000 readings/s, tag "now"
#   RATE=40000 TAG=after scripts/profile.sh
#
# Needs Debian's linux-perf and `cargo install inferno` (the script says
# so when either is missing). The e2e report of the run is written as usual.
set -euo pipefail
cd "$(dirname "$0")/.."

rate=${RATE:-20000}
tag=${TAG:-now}
secs=${SECONDS_SAMPLED:-15}
out=benches/results
for tool in perf inferno-collapse-perf inferno-flamegraph; do
  command -v "$tool" >/dev/null || {
    echo "$tool not found (apt-get install linux-perf; cargo install inferno)" >&2
    exit 1
  }
done

deploy/services.sh start kafka mosquitto postgres
eval "$(deploy/services.sh env)"
cargo build --release --workspace --bins

work=target/profile/$tag
rm -rf "$work" && mkdir -p "$work"
# One step long enough to settle, then be sampled.
target/release/e2e --rate "$rate" --step "$((secs + 25))s" --settle 10s >"$work/e2e.txt" 2>&1 &
e2e=$!
sleep 25
declare -A pids
for name in quantrac-ingest quantrac-processor quantrac-alerting; do
  # -f: these names are longer than the 15 characters -x compares.
  pids[$name]=$(pgrep -n -f "target/release/$name" || true)
done
pids[kafka]=$(pgrep -n -f 'kafka.Kafka' || true)
# The postmaster's children do the work: sample them all.
pids[postgres]=$(pgrep -d, -x postgres || true)
for name in "${!pids[@]}"; do
  [ -n "${pids[$name]}" ] || {
    echo "no $name process found" >&2
    continue
  }
  perf record -q -F 199 --call-graph dwarf,16384 -p "${pids[$name]}" \
    -o "$work/$name.data" -- sleep "$secs" >/dev/null 2>&1 &
done
wait_for_perf() { while pgrep -x perf >/dev/null; do sleep 1; done; }
sleep "$secs"
wait_for_perf
for name in "${!pids[@]}"; do
  [ -f "$work/$name.data" ] || continue
  perf script -i "$work/$name.data" 2>/dev/null | inferno-collapse-perf >"$work/$name.folded" || {
    echo "no samples for $name" >&2
    continue
  }
  inferno-flamegraph --title "$name at $rate readings/s ($tag)" \
    <"$work/$name.folded" >"$out/flame-$tag-$name.svg"
  # The heaviest frames by own time, for the report.
  echo "== $name: top own-time frames"
  awk '{n=$NF; $NF=""; k=split($0,f,";"); own[f[k]]+=n; t+=n} END {for (x in own) printf "%5.1f%% %s\n", 100*own[x]/t, x}' \
    "$work/$name.folded" | sort -rn | head -15
done
wait "$e2e" || true
tail -40 "$work/e2e.txt"
echo "flame graphs: $out/flame-$tag-*.svg"

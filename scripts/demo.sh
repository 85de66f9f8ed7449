#!/usr/bin/env bash
# The pipeline with simulated stations, from a fresh clone: starts Kafka,
# Mosquitto and PostgreSQL, builds and starts ingest, the processor,
# alerting, the query service and the officers' page, runs simulated stations against them and shows readings
# arriving in the database and the alerts they raise. Ctrl-C stops everything
# it started (the services keep running; `deploy/services.sh stop` stops them).
#
#   scripts/demo.sh                         # 10 stations, 60x speed, ~10 minutes
#   STATIONS=10 SPEEDUP=120 SAMPLES=240 scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

STATIONS=${STATIONS:-10}     # the sample registry knows the first 12
SPEEDUP=${SPEEDUP:-60}       # simulated seconds per wall-clock second
SAMPLES=${SAMPLES:-120}      # 5-minute slots per station (120 = 10 h simulated)
ANOMALY_SCALE=${ANOMALY_SCALE:-30}  # anomalies this many times as often as by default
GAP_MIN=${GAP_MIN:-5m}       # silent this long (wall clock) raises a data-gap alert
REFRESH=${REFRESH:-5}        # seconds between status screens
logs=.local/demo
mkdir -p "$logs"

step() { printf '\n==> %s\n' "$*"; }

step "services"
deploy/services.sh start kafka mosquitto postgres
eval "$(deploy/services.sh env)"

step "build"
cargo build --bins -p quantrac-ingest -p quantrac-processor -p quantrac-alerting -p quantrac-query -p quantrac-console -p quantrac-simulators

pids=()
cleanup() {
  trap - INT TERM EXIT
  printf '\n==> stopping the demo processes\n'
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "logs: $logs/  (services still running: deploy/services.sh stop)"
}
trap cleanup INT TERM EXIT

step "ingest, processor and alerting (logs in $logs/)"
target/debug/quantrac-ingest --config deploy/ingest.toml >"$logs/ingest.log" 2>&1 &
pids+=($!)
target/debug/quantrac-processor --config deploy/processor.toml >"$logs/processor.log" 2>&1 &
pids+=($!)
# The demo's rules: deploy/rules.toml with a data-gap threshold short enough
# to be seen within the demo (the two registry stations the simulator does
# not play stay silent from the start).
sed -e 's/^gap\.factor = .*/gap.factor = 1/' -e "s/^gap\.min = .*/gap.min = \"$GAP_MIN\"/" \
  deploy/rules.toml >"$logs/rules.toml"
QUANTRAC_ALERTING__RULES="$logs/rules.toml" \
  target/debug/quantrac-alerting --config deploy/alerting.toml >"$logs/alerting.log" 2>&1 &
pids+=($!)
for url in http://127.0.0.1:9464/health http://127.0.0.1:9465/health http://127.0.0.1:9466/health; do
  for _ in $(seq 1 60); do
    curl -fsS "$url" >/dev/null 2>&1 && break
    sleep 1
  done
  curl -fsS "$url" >/dev/null || { echo "not healthy: $url"; tail -20 "$logs"/*.log; exit 1; }
done

# The query service reads the schema the processor applied (it is healthy
# by now), and an analyst's and an officer's token for the client.
target/debug/quantrac-query --config deploy/query.toml >"$logs/query.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 30); do curl -fsS http://127.0.0.1:9467/health >/dev/null 2>&1 && break; sleep 1; done
curl -fsS http://127.0.0.1:9467/health >/dev/null || { echo "not healthy: query"; tail -20 "$logs/query.log"; exit 1; }
target/debug/quantrac token issue --identity analyst@demo --role analyst --expires 1d >"$logs/analyst.token"
target/debug/quantrac token issue --identity officer@demo --role officer --expires 1d >"$logs/officer.token"
# The officers' page, over the alerting and query services.
target/debug/quantrac-console --config deploy/console.toml >"$logs/console.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 30); do curl -fsS http://127.0.0.1:9468/health >/dev/null 2>&1 && break; sleep 1; done
curl -fsS http://127.0.0.1:9468/health >/dev/null || { echo "not healthy: console"; tail -20 "$logs/console.log"; exit 1; }
echo "officers' page: http://127.0.0.1:8080/  (log in with the token in $logs/officer.token,"
echo "  or $logs/analyst.token to look without acting)"
echo "metrics: ingest :9464, processor :9465, alerting :9466, query :9467, console :9468 (/metrics)"
echo "gRPC: alerts on 127.0.0.1:50051, queries on 127.0.0.1:50052; try, in another shell:"
echo "  export QUANTRAC_TOKEN=\$(cat $logs/analyst.token)"
echo "  target/debug/quantrac latest; target/debug/quantrac alerts --state open"

step "simulated stations: $STATIONS stations, ${SPEEDUP}x, $SAMPLES samples each"
# The stations prove who they are with the demo secrets whose hashes are in
# deploy/registry.toml (README, Security).
NO_COLOR=1 target/debug/quantrac-sim --stations "$STATIONS" --speedup "$SPEEDUP" --samples "$SAMPLES" \
  --anomaly-scale "$ANOMALY_SCALE" --tcp-addr 127.0.0.1:9212 --secrets deploy/demo-secrets.toml >"$logs/sim.log" 2>&1 &
sim=$!
pids+=("$sim")

started=$(date +%s)
psql_q() { psql "$QUANTRAC_DATABASE_URL" -X -q -P pager=off "$@"; }
while kill -0 "$sim" 2>/dev/null; do
  sleep "$REFRESH"
  printf '\n--- %s ---\n' "$(date +%T)"
  tail -n 1 "$logs/sim.log" | sed 's/^/simulator: /'
  curl -fsS http://127.0.0.1:9464/health | sed 's/^/ingest:    /'; echo
  curl -fsS http://127.0.0.1:9465/health | sed 's/^/processor: /'; echo
  psql_q -c "
    SELECT r.station_id AS station, count(*) AS readings,
           to_char(max(r.measured_at) AT TIME ZONE 'Asia/Ho_Chi_Minh', 'YYYY-MM-DD HH24:MI') AS latest_local,
           string_agg(DISTINCT r.qc_flag, ',') AS qc_flags
    FROM readings r JOIN stations s ON s.id = r.station_id
    WHERE r.stored_at > now() - interval '1 hour'
    GROUP BY r.station_id ORDER BY r.station_id;" || true
  psql_q -At -c "SELECT 'rejected readings since the demo started: ' || count(*) FROM rejected_readings
    WHERE rejected_at >= to_timestamp($started)" || true
  psql_q -c "
    SELECT a.rule, count(*) FILTER (WHERE a.state = 'open') AS open,
           count(*) FILTER (WHERE a.state = 'acknowledged') AS acknowledged,
           count(*) FILTER (WHERE a.state = 'resolved') AS resolved
    FROM alerts a WHERE a.updated_at >= to_timestamp($started)
    GROUP BY a.rule ORDER BY a.rule;" || true
  psql_q -c "
    SELECT a.state, a.severity, a.rule, a.station_id AS station, a.parameter,
           round(a.observed_value::numeric, 1) AS value, round(a.limit_value::numeric, 1) AS limit,
           to_char(a.window_start AT TIME ZONE 'Asia/Ho_Chi_Minh', 'MM-DD HH24:MI') AS since_local
    FROM alerts a WHERE a.updated_at > now() - interval '1 hour'
    ORDER BY a.updated_at DESC LIMIT 12;" || true
done
step "simulator finished"
tail -n 5 "$logs/sim.log"
step "what an analyst sees: the latest values and the open alerts (quantrac latest / alerts)"
QUANTRAC_TOKEN=$(cat "$logs/analyst.token") target/debug/quantrac latest | head -20 || true
QUANTRAC_TOKEN=$(cat "$logs/analyst.token") target/debug/quantrac alerts --state open --limit 10 || true

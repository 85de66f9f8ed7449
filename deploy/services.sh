#!/usr/bin/env bash
# Install, start, stop and inspect the services quantrac's tests run against, on loopback:
#   tls        a test CA and certificates (openssl), made once; the services below
#              open TLS listeners with them
#   kafka      Apache Kafka (KRaft, single node) from Maven Central jars
#   mosquitto  Mosquitto MQTT broker (Debian package), password auth
#   postgres   PostgreSQL (Debian packages), private cluster in the state dir
#   timescale  TimescaleDB 2.23 on PGlite (PostgreSQL 17 in WebAssembly, Node.js, npm),
#              in memory, ONE session shared by all connections (see deploy/README.md)
#   smtp       a local SMTP server (Debian's python3-aiosmtpd) keeping messages in a Maildir
#   ftp        an upstream FTP(S) server (Debian's pure-ftpd), standing in for the Ministry's
#              national system the forwarder delivers Circular 10 files to
#   browser    headless Chromium and ChromeDriver (Debian packages) for the page tests;
#              installed only, each test starts its own chromedriver
#
# Usage: deploy/services.sh COMMAND [SERVICE...]      (default: all services)
#   install   install packages / download jars (idempotent)
#   start     install if needed, then start; already-running services are left alone
#   stop      stop what these scripts started (SIGTERM / graceful, then SIGKILL)
#   restart   stop then start
#   status    one line per service; exit 0 only if all are up
#   env       print 'export ...' lines for clients: eval "$(deploy/services.sh env)"
#   logs      the last lines of each service's log (QUANTRAC_LOG_LINES, default 40)
#   clean     stop and delete the service's state (data, logs, config; Kafka jars and
#             deploy/timescale/node_modules are kept)
#   prune     delete what earlier test and benchmark runs left in the running services:
#             their databases in PostgreSQL, their topics in Kafka (names only tests
#             make, <prefix>_<10 hex> and <prefix>-<10 hex>[.kind]; the sample
#             database and topics stay), Mosquitto's saved sessions and queued
#             messages (all of them: a restart, only once its store is over 1 MB).
#             Run it only while no tests are running.
#
# See deploy/README.md for ports and environment variables.
set -euo pipefail

QUANTRAC_DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/lib/common.sh
source "$QUANTRAC_DEPLOY_DIR/lib/common.sh"
# shellcheck source=deploy/lib/tls.sh
source "$QUANTRAC_DEPLOY_DIR/lib/tls.sh"
# shellcheck source=deploy/lib/kafka.sh
source "$QUANTRAC_DEPLOY_DIR/lib/kafka.sh"
# shellcheck source=deploy/lib/mosquitto.sh
source "$QUANTRAC_DEPLOY_DIR/lib/mosquitto.sh"
# shellcheck source=deploy/lib/postgres.sh
source "$QUANTRAC_DEPLOY_DIR/lib/postgres.sh"
# shellcheck source=deploy/lib/timescale.sh
source "$QUANTRAC_DEPLOY_DIR/lib/timescale.sh"
# shellcheck source=deploy/lib/smtp.sh
source "$QUANTRAC_DEPLOY_DIR/lib/smtp.sh"
# shellcheck source=deploy/lib/ftp.sh
source "$QUANTRAC_DEPLOY_DIR/lib/ftp.sh"
# shellcheck source=deploy/lib/browser.sh
source "$QUANTRAC_DEPLOY_DIR/lib/browser.sh"

ALL_SERVICES=(tls kafka mosquitto postgres timescale smtp ftp browser)

usage() {
  sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

main() {
  local cmd=${1:-}
  [[ -n $cmd ]] || {
    usage >&2
    exit 2
  }
  shift
  case $cmd in
  -h | --help | help)
    usage
    return 0
    ;;
  install | start | stop | restart | status | env | logs | clean | prune) ;;
  *)
    usage >&2
    die "unknown command '$cmd'"
    ;;
  esac

  local services=() s
  if (($#)); then
    for s in "$@"; do
      case $s in
      tls | kafka | mosquitto | postgres | timescale | smtp | ftp | browser) services+=("$s") ;;
      mail) services+=(smtp) ;;
      chromium) services+=(browser) ;;
      pg | postgresql) services+=(postgres) ;;
      mqtt) services+=(mosquitto) ;;
      timescaledb | tsdb) services+=(timescale) ;;
      *) die "unknown service '$s' (expected: ${ALL_SERVICES[*]})" ;;
      esac
    done
  else
    services=("${ALL_SERVICES[@]}")
  fi

  case $cmd in
  env)
    for s in "${services[@]}"; do "${s}_env"; done
    return 0
    ;;
  status)
    local rc=0
    for s in "${services[@]}"; do "${s}_status" || rc=3; done
    return "$rc"
    ;;
  logs)
    # The end of each service's own log, for a failed run's diagnosis.
    local s f
    for s in "${services[@]}"; do
      case $s in
      postgres) f=$(pg_log) ;;
      kafka) f=$KAFKA_SERVER_LOG ;;
      mosquitto) f=$MOSQ_LOG ;;
      timescale) f=$TS_LOG ;;
      smtp) f=$SMTP_LOG ;;
      ftp) f=$FTP_LOG ;;
      *) continue ;;
      esac
      printf '\n--- %s: %s (last %s lines)\n' "$s" "$f" "${QUANTRAC_LOG_LINES:-40}"
      if [[ -f $f ]]; then tail -n "${QUANTRAC_LOG_LINES:-40}" "$f"; else echo "(no log)"; fi
    done
    return 0
    ;;
  esac

  # Mutating commands: serialize concurrent invocations on the same state dir.
  mkdir -p "$STATE_DIR"
  exec 9>"$STATE_DIR/.lock"
  if ! flock -n 9; then
    log "another services.sh is running on $STATE_DIR; waiting for it"
    flock -w 600 9 || die "timed out waiting for the lock on $STATE_DIR/.lock"
  fi

  local t0 t
  t0=$(now_ms)
  case $cmd in
  install)
    for s in "${services[@]}"; do "${s}_install"; done
    log "installed: ${services[*]} ($(elapsed_since "$t0"))"
    ;;
  start)
    for s in "${services[@]}"; do
      t=$(now_ms)
      "${s}_start"
      log "$s: ready in $(elapsed_since "$t")"
    done
    log "all started: ${services[*]} ($(elapsed_since "$t0")); state in $STATE_DIR"
    ;;
  stop)
    for s in "${services[@]}"; do "${s}_stop"; done
    ;;
  restart)
    for s in "${services[@]}"; do "${s}_stop"; done
    for s in "${services[@]}"; do "${s}_start"; done
    log "restarted: ${services[*]} ($(elapsed_since "$t0"))"
    ;;
  clean)
    for s in "${services[@]}"; do "${s}_clean"; done
    ;;
  prune)
    # Each test run leaves hundreds of databases and topics behind; idle,
    # they cost PostgreSQL's autovacuum launcher and Kafka's scheduler a
    # third of a core each (measured: 0.32 cores with 602 databases), which
    # a benchmark would count as the pipeline's.
    for s in "${services[@]}"; do
      if declare -F "${s}_prune" >/dev/null; then "${s}_prune"; fi
    done
    ;;
  esac
}

main "$@"

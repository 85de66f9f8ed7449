# shellcheck shell=bash
# TimescaleDB without a TimescaleDB package: PGlite (PostgreSQL 17 in WebAssembly, a fork
# bundling TimescaleDB 2.23) served over the Postgres wire protocol by pglite-socket,
# run with Node.js from deploy/timescale/ (server.mjs, package.json, package-lock.json).
#
# ONE backend session for all clients: one TCP connection is served at a time, others
# wait in a queue until it closes; the session is reset between connections. The data is
# in memory by default, so every start (and restart) begins with an empty database.

TS_HOST=${QUANTRAC_TIMESCALE_HOST:-127.0.0.1}
TS_PORT=${QUANTRAC_TIMESCALE_PORT:-15433}
# Empty: in memory (default). A path: PGlite keeps its data dir there across restarts.
TS_DATA_DIR=${QUANTRAC_TIMESCALE_DATA_DIR:-}
[[ -z $TS_DATA_DIR || $TS_DATA_DIR == /* ]] || TS_DATA_DIR=$PWD/$TS_DATA_DIR
# In-memory mode: 1 = load a snapshot of the freshly initialised data dir (written by the
# first start, kept in the state dir per package-lock.json) instead of running initdb.
TS_SNAPSHOT_ON=${QUANTRAC_TIMESCALE_SNAPSHOT:-1}
# How long a connection may wait for the single session before the server closes it (ms).
TS_QUEUE_MS=${QUANTRAC_TIMESCALE_QUEUE_MS:-60000}
# PGlite ignores the user name, database name and password (any password is accepted, but
# one must be sent: it asks for md5). The session is always postgres@template1.
TS_USER=postgres
TS_PASSWORD=postgres
TS_DB=template1

TS_SRC=$QUANTRAC_DEPLOY_DIR/timescale
TS_SERVER=$TS_SRC/server.mjs
TS_MODULES=$TS_SRC/node_modules
TS_STAMP=$TS_MODULES/.quantrac-lock.md5
TS_DIR=$STATE_DIR/timescale
TS_LOG=$TS_DIR/server.log
TS_NPM_LOG=$TS_DIR/npm.log
TS_PIDFILE=$TS_DIR/timescale.pid
TS_NODE_MIN_MAJOR=18

ts_url() { printf 'postgres://%s:%s@%s:%s/%s' "$TS_USER" "$TS_PASSWORD" "$TS_HOST" "$TS_PORT" "$TS_DB"; }

ts_lock_hash() { md5sum <"$TS_SRC/package-lock.json" | cut -c1-32; }

# The snapshot file for the current package-lock.json (empty when not used).
ts_snapshot() {
  [[ -z $TS_DATA_DIR && $TS_SNAPSHOT_ON == 1 ]] || return 0
  printf '%s/initdb-%s.tar.gz' "$TS_DIR" "$(ts_lock_hash | cut -c1-12)"
}

# For the start message (the snapshot is used when it exists before the server starts).
ts_mode() {
  if [[ -n $TS_DATA_DIR ]]; then
    printf 'data %s' "$TS_DATA_DIR"
  elif [[ -n $(ts_snapshot) && -s $(ts_snapshot) ]]; then
    printf 'in memory, from snapshot'
  else
    printf 'in memory'
  fi
}

ts_modules_current() {
  [[ -f $TS_STAMP && -d $TS_MODULES/@electric-sql/pglite && -d $TS_MODULES/@electric-sql/pglite-socket ]] &&
    [[ $(cat "$TS_STAMP") == "$(ts_lock_hash)" ]]
}

timescale_install() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
  fi
  local major
  major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  ((major >= TS_NODE_MIN_MAJOR)) || die "timescale: needs Node.js >= $TS_NODE_MIN_MAJOR (found $(node --version 2>/dev/null || echo none))"
  command -v psql >/dev/null 2>&1 || apt_install postgresql-client
  ts_modules_current && return 0
  mkdir -p "$TS_DIR"
  log "timescale: npm ci in $TS_SRC (PGlite + TimescaleDB WASM, ~25 MB)"
  # npm ci removes node_modules first, so a stale or partial install is replaced whole.
  if ! (cd "$TS_SRC" && npm ci --no-audit --no-fund --loglevel=warn) >"$TS_NPM_LOG" 2>&1 </dev/null 9>&-; then
    show_log_tail "$TS_NPM_LOG"
    die "timescale: npm ci failed (log $TS_NPM_LOG)"
  fi
  ts_lock_hash >"$TS_STAMP"
}

timescale_pid() {
  local pid
  pid=$(read_pid "$TS_PIDFILE")
  if pid_matches "$pid" "$TS_SERVER"; then printf '%s' "$pid"; fi
}

timescale_running() { [[ -n $(timescale_pid) ]]; }

# A real query through the wire protocol: proves the listener, PGlite and the extension.
# Connecting takes the single session, so keep the connect timeout short.
timescale_probe() {
  local v
  v=$(PGCONNECT_TIMEOUT=3 timeout 10 psql -X -A -t -w "$(ts_url)" \
    -c "select extversion from pg_extension where extname = 'timescaledb'" 2>/dev/null) || return 1
  [[ -n $v ]]
}

timescale_start() {
  if timescale_running; then
    log "timescale: already running (pid $(timescale_pid), $TS_HOST:$TS_PORT)"
    return 0
  fi
  timescale_install
  tcp_open "$TS_HOST" "$TS_PORT" && die "timescale: $TS_HOST:$TS_PORT is already in use by a process we did not start"
  mkdir -p "$TS_DIR"
  [[ -z $TS_DATA_DIR ]] || mkdir -p "$TS_DATA_DIR"
  # Keep the previous run's log (an in-memory server that died leaves nothing else behind).
  if [[ -s $TS_LOG ]]; then mv -f "$TS_LOG" "$TS_LOG.prev"; fi
  : >"$TS_LOG"
  local snap f
  snap=$(ts_snapshot)
  for f in "$TS_DIR"/initdb-*.tar.gz*; do
    if [[ -e $f && $f != "$snap" ]]; then rm -f "$f"; fi
  done
  log "timescale: starting PGlite + TimescaleDB on $TS_HOST:$TS_PORT ($(ts_mode))"
  QUANTRAC_TIMESCALE_HOST=$TS_HOST QUANTRAC_TIMESCALE_PORT=$TS_PORT \
    QUANTRAC_TIMESCALE_DATA_DIR=$TS_DATA_DIR QUANTRAC_TIMESCALE_QUEUE_MS=$TS_QUEUE_MS \
    QUANTRAC_TIMESCALE_SNAPSHOT=$snap \
    setsid nohup node "$TS_SERVER" >>"$TS_LOG" 2>&1 </dev/null 9>&- &
  local pid=$!
  printf '%s\n' "$pid" >"$TS_PIDFILE"
  local deadline=$((SECONDS + START_TIMEOUT))
  # Wait for the "listening" line first: probing earlier would only queue psql connections.
  until file_has_since "$TS_LOG" 0 "listening on" && timescale_probe; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$TS_PIDFILE"
      fail_start timescale "$TS_LOG"
    fi
    if ((SECONDS >= deadline)); then
      stop_pid "$pid" timescale
      rm -f "$TS_PIDFILE"
      fail_start timescale "$TS_LOG"
    fi
    sleep 0.2
  done
  log "timescale: up (pid $pid, $TS_HOST:$TS_PORT, $(grep -o 'timescaledb [^ ,]*' "$TS_LOG" | head -n1))"
}

timescale_stop() {
  local pid
  pid=$(timescale_pid)
  if [[ -z $pid ]]; then
    rm -f "$TS_PIDFILE"
    log "timescale: not running"
    return 0
  fi
  log "timescale: stopping (pid $pid)"
  stop_pid "$pid" timescale
  rm -f "$TS_PIDFILE"
  log "timescale: stopped"
}

timescale_status() {
  local pid
  pid=$(timescale_pid)
  if [[ -n $pid ]]; then
    # Only a TCP check: a psql probe would wait behind a client holding the session.
    if tcp_open "$TS_HOST" "$TS_PORT"; then
      printf '%-10s up       pid %-8s %s:%s   (%s, log %s)\n' timescale "$pid" "$TS_HOST" "$TS_PORT" \
        "$([[ -n $TS_DATA_DIR ]] && echo "data $TS_DATA_DIR" || echo 'in memory')" "$TS_LOG"
    else
      printf '%-10s starting pid %-8s %s:%s   (port not open)\n' timescale "$pid" "$TS_HOST" "$TS_PORT"
      return 1
    fi
  else
    printf '%-10s down\n' timescale
    return 1
  fi
}

timescale_env() {
  printf 'export QUANTRAC_TIMESCALE_HOST=%q\n' "$TS_HOST"
  printf 'export QUANTRAC_TIMESCALE_PORT=%q\n' "$TS_PORT"
  printf 'export QUANTRAC_TIMESCALE_URL=%q\n' "$(ts_url)"
}

timescale_clean() {
  timescale_stop
  log "timescale: removing $TS_DIR${TS_DATA_DIR:+ and $TS_DATA_DIR}"
  rm -rf "$TS_DIR"
  [[ -z $TS_DATA_DIR ]] || rm -rf "$TS_DATA_DIR"
}

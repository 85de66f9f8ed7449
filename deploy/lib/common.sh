# shellcheck shell=bash
# Shared helpers for deploy/services.sh. Sourced, never executed.

QUANTRAC_DEPLOY_DIR=${QUANTRAC_DEPLOY_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
QUANTRAC_REPO_DIR=$(cd "$QUANTRAC_DEPLOY_DIR/.." && pwd)
STATE_DIR=${QUANTRAC_STATE_DIR:-$QUANTRAC_REPO_DIR/.local/services}
[[ $STATE_DIR == /* ]] || STATE_DIR=$PWD/$STATE_DIR
# shellcheck disable=SC2034 # used by the per-service files
# How long to wait for a service to come up / go down (seconds).
START_TIMEOUT=${QUANTRAC_START_TIMEOUT:-120}
STOP_TIMEOUT=${QUANTRAC_STOP_TIMEOUT:-30}

log() { printf '[services] %s\n' "$*" >&2; }
warn() { printf '[services] WARNING: %s\n' "$*" >&2; }
die() {
  printf '[services] ERROR: %s\n' "$*" >&2
  exit 1
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# Run a command as root (directly, or through sudo when available).
as_root() {
  if is_root; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

_APT_UPDATED=0
# apt_install PKG... : installs the packages that are not installed yet.
# 'apt-get update' runs at most once per invocation, and only when needed.
apt_install() {
  local missing=() p
  for p in "$@"; do
    if [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) != *'install ok installed'* ]]; then
      missing+=("$p")
    fi
  done
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null 2>&1 || die "missing packages (${missing[*]}) and no apt-get to install them"
  log "apt-get install ${missing[*]}"
  local apt_opts=(-o DPkg::Lock::Timeout=300 -q)
  if ((!_APT_UPDATED)); then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update >&2 ||
      die "apt-get update failed"
    _APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y --no-install-recommends \
    "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
}

# tcp_open HOST PORT : true when something accepts TCP connections there.
tcp_open() {
  # shellcheck disable=SC2016 # expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# read_pid FILE : prints the pid stored in FILE (empty if none).
read_pid() {
  [[ -f $1 ]] || return 0
  local pid
  pid=$(head -n1 "$1" 2>/dev/null | tr -dc '0-9')
  printf '%s' "$pid"
}

# pid_matches PID PATTERN : the process is alive and its command line contains PATTERN
# (guards against a stale pid file whose pid was reused by another process).
pid_matches() {
  local pid=$1 pattern=$2 cmdline
  [[ -n $pid ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$pattern"* ]]
}

# stop_pid PID NAME : SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL.
stop_pid() {
  local pid=$1 name=$2 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < STOP_TIMEOUT * 5; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  warn "$name (pid $pid) did not exit within ${STOP_TIMEOUT}s after SIGTERM; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  die "$name (pid $pid) survived SIGKILL"
}

# show_log_tail FILE [LINES]
show_log_tail() {
  local f=$1 n=${2:-40}
  if [[ -s $f ]]; then
    printf '[services] ---- last %s lines of %s ----\n' "$n" "$f" >&2
    tail -n "$n" "$f" >&2 || true
    printf '[services] ---- end of %s ----\n' "$f" >&2
  else
    printf '[services] (log %s is empty or missing)\n' "$f" >&2
  fi
}

# fail_start NAME LOGFILE... : print log tails and exit.
fail_start() {
  local name=$1 f
  shift
  for f in "$@"; do show_log_tail "$f"; done
  die "$name failed to start (logs: $*)"
}

# elapsed SECONDS_START : prints "N.Ns"
now_ms() { date +%s%3N; }
elapsed_since() {
  local ms=$(($(now_ms) - $1))
  printf '%d.%ds' $((ms / 1000)) $(((ms % 1000) / 100))
}

# short_hash STRING : 8 hex chars, stable.
short_hash() { printf '%s' "$1" | md5sum | cut -c1-8; }

# file_has_since FILE OFFSET PATTERN : PATTERN occurs in FILE after byte OFFSET.
# (grep -c reads all input, so no SIGPIPE/pipefail surprise as with grep -q.)
file_has_since() {
  [[ -f $1 ]] || return 1
  tail -c "+$(($2 + 1))" "$1" | grep -cF -- "$3" >/dev/null
}

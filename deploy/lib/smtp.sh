# shellcheck shell=bash
# A local SMTP server for the mail tests: aiosmtpd (Debian's
# python3-aiosmtpd) storing every message it accepts in a Maildir, where the
# tests read what alerting sent. Not a relay: nothing leaves the machine.

SMTP_HOST=${QUANTRAC_SMTP_HOST:-127.0.0.1}
SMTP_PORT=${QUANTRAC_SMTP_PORT:-12525}
SMTP_DIR=$STATE_DIR/smtp
SMTP_MAILDIR=$SMTP_DIR/maildir
SMTP_LOG=$SMTP_DIR/smtp.log
SMTP_PIDFILE=$SMTP_DIR/smtp.pid
# Debian's interpreter: the one python3-aiosmtpd is installed for (a pyenv
# python3 earlier on PATH does not see it).
SMTP_PYTHON=/usr/bin/python3

smtp_install() {
  if [[ -x $SMTP_PYTHON ]] && "$SMTP_PYTHON" -c 'import aiosmtpd' 2>/dev/null; then
    return 0
  fi
  apt_install python3 python3-aiosmtpd
  "$SMTP_PYTHON" -c 'import aiosmtpd' 2>/dev/null || die "smtp: aiosmtpd not importable after install"
}

smtp_pid() {
  local pid
  pid=$(read_pid "$SMTP_PIDFILE")
  if pid_matches "$pid" "$SMTP_MAILDIR"; then printf '%s' "$pid"; fi
}

smtp_start() {
  if [[ -n $(smtp_pid) ]]; then
    log "smtp: already running (pid $(smtp_pid), $SMTP_HOST:$SMTP_PORT)"
    return 0
  fi
  smtp_install
  tcp_open "$SMTP_HOST" "$SMTP_PORT" && die "smtp: $SMTP_HOST:$SMTP_PORT is already in use by a process we did not start"
  mkdir -p "$SMTP_DIR"
  : >"$SMTP_LOG"
  # The Maildir handler creates the directory; it must not exist half-made.
  [[ -d $SMTP_MAILDIR/new ]] || rm -rf "$SMTP_MAILDIR"
  log "smtp: starting on $SMTP_HOST:$SMTP_PORT (messages in $SMTP_MAILDIR)"
  setsid nohup "$SMTP_PYTHON" -m aiosmtpd -n -c aiosmtpd.handlers.Mailbox "$SMTP_MAILDIR" \
    -l "$SMTP_HOST:$SMTP_PORT" >>"$SMTP_LOG" 2>&1 </dev/null 9>&- &
  local pid=$!
  printf '%s\n' "$pid" >"$SMTP_PIDFILE"
  local deadline=$((SECONDS + START_TIMEOUT))
  until tcp_open "$SMTP_HOST" "$SMTP_PORT"; do
    if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
      stop_pid "$pid" smtp
      rm -f "$SMTP_PIDFILE"
      fail_start smtp "$SMTP_LOG"
    fi
    sleep 0.2
  done
  log "smtp: up (pid $pid, $SMTP_HOST:$SMTP_PORT)"
}

smtp_stop() {
  local pid
  pid=$(smtp_pid)
  if [[ -z $pid ]]; then
    rm -f "$SMTP_PIDFILE"
    log "smtp: not running"
    return 0
  fi
  stop_pid "$pid" smtp
  rm -f "$SMTP_PIDFILE"
  log "smtp: stopped"
}

smtp_status() {
  local pid
  pid=$(smtp_pid)
  if [[ -n $pid ]] && tcp_open "$SMTP_HOST" "$SMTP_PORT"; then
    printf '%-10s up       pid %-8s %s:%s   (maildir %s)\n' smtp "$pid" "$SMTP_HOST" "$SMTP_PORT" "$SMTP_MAILDIR"
  else
    printf '%-10s down\n' smtp
    return 1
  fi
}

smtp_env() {
  printf 'export QUANTRAC_SMTP_URL=%q\n' "smtp://$SMTP_HOST:$SMTP_PORT"
  printf 'export QUANTRAC_SMTP_MAILDIR=%q\n' "$SMTP_MAILDIR"
}

smtp_clean() {
  smtp_stop
  rm -rf "$SMTP_DIR"
}

# shellcheck shell=bash
# The upstream FTP(S) server the forwarder delivers Circular 10 files to, a
# stand-in for the Ministry's national system: Debian's pure-ftpd with one
# virtual user (password generated once, kept in the state dir), its files
# under $FTP_HOME where tests read them, and explicit TLS (AUTH TLS) with the
# test CA's server certificate.

FTP_HOST=${QUANTRAC_FTP_HOST:-127.0.0.1}
FTP_PORT=${QUANTRAC_FTP_PORT:-12121}
# Passive data ports: below Linux's ephemeral range, so no client port
# takes one.
FTP_PASV=${QUANTRAC_FTP_PASSIVE_PORTS:-30000:30099}
FTP_USER=ministry
FTP_DIR=$STATE_DIR/ftp
FTP_HOME=$FTP_DIR/home
FTP_LOG=$FTP_DIR/ftp.log
FTP_PIDFILE=$FTP_DIR/ftp.pid
FTP_PASSWORD_FILE=$FTP_DIR/password
# One line per transfer (Common Log Format): tests count uploads in it.
FTP_TRANSFERS=$FTP_DIR/transfers.log
# The unprivileged uid files are written as (pure-ftpd refuses root).
FTP_UID=65534

ftp_install() {
  apt_install pure-ftpd
  [[ -x /usr/sbin/pure-ftpd ]] || die "ftp: /usr/sbin/pure-ftpd missing after install"
}

ftp_pid() {
  local pid
  pid=$(read_pid "$FTP_PIDFILE")
  if pid_matches "$pid" "$FTP_DIR"; then printf '%s' "$pid"; fi
}

# The virtual user's password database, made once.
ftp_account() {
  mkdir -p "$FTP_HOME"
  as_root chown "$FTP_UID:$FTP_UID" "$FTP_HOME"
  [[ -s $FTP_DIR/users.pdb && -s $FTP_PASSWORD_FILE ]] && return 0
  local password
  password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  rm -f "$FTP_DIR/users.passwd" "$FTP_DIR/users.pdb"
  printf '%s\n%s\n' "$password" "$password" |
    pure-pw useradd "$FTP_USER" -u "$FTP_UID" -g "$FTP_UID" -d "$FTP_HOME" \
      -f "$FTP_DIR/users.passwd" -m -F "$FTP_DIR/users.pdb" >/dev/null ||
    die "ftp: pure-pw could not create the account"
  (umask 077 && printf '%s\n' "$password" >"$FTP_PASSWORD_FILE")
}

ftp_start() {
  if [[ -n $(ftp_pid) ]]; then
    log "ftp: already running (pid $(ftp_pid), $FTP_HOST:$FTP_PORT)"
    return 0
  fi
  ftp_install
  tls_start
  tcp_open "$FTP_HOST" "$FTP_PORT" && die "ftp: $FTP_HOST:$FTP_PORT is already in use by a process we did not start"
  mkdir -p "$FTP_DIR"
  ftp_account
  : >"$FTP_LOG"
  log "ftp: starting pure-ftpd on $FTP_HOST:$FTP_PORT (files in $FTP_HOME)"
  # -E no anonymous, -A chroot, -H no DNS, -Y 1 TLS offered (the client
  # decides), -u 1 no root logins, -j home made if missing, -O the
  # transfer log.
  setsid nohup /usr/sbin/pure-ftpd -S "$FTP_HOST,$FTP_PORT" -l "puredb:$FTP_DIR/users.pdb" \
    -E -A -H -4 -j -u 1 -p "$FTP_PASV" -Y 1 -2 "$TLS_CERT,$TLS_KEY" \
    -O "clf:$FTP_TRANSFERS" -g "$FTP_DIR/pure-ftpd.pid" >>"$FTP_LOG" 2>&1 </dev/null 9>&- &
  local pid=$!
  printf '%s\n' "$pid" >"$FTP_PIDFILE"
  local deadline=$((SECONDS + START_TIMEOUT))
  until tcp_open "$FTP_HOST" "$FTP_PORT"; do
    if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
      stop_pid "$pid" ftp
      rm -f "$FTP_PIDFILE"
      fail_start ftp "$FTP_LOG"
    fi
    sleep 0.2
  done
  log "ftp: up (pid $pid, $FTP_HOST:$FTP_PORT)"
}

ftp_stop() {
  local pid
  pid=$(ftp_pid)
  if [[ -z $pid ]]; then
    rm -f "$FTP_PIDFILE"
    log "ftp: not running"
    return 0
  fi
  stop_pid "$pid" ftp
  rm -f "$FTP_PIDFILE"
  log "ftp: stopped"
}

ftp_status() {
  local pid
  pid=$(ftp_pid)
  if [[ -n $pid ]] && tcp_open "$FTP_HOST" "$FTP_PORT"; then
    printf '%-10s up       pid %-8s %s:%s   (files %s)\n' ftp "$pid" "$FTP_HOST" "$FTP_PORT" "$FTP_HOME"
  else
    printf '%-10s down\n' ftp
    return 1
  fi
}

ftp_env() {
  local password=''
  [[ -f $FTP_PASSWORD_FILE ]] && password=$(<"$FTP_PASSWORD_FILE")
  printf 'export QUANTRAC_UPSTREAM_FTP_URL=%q\n' "ftp://$FTP_USER:$password@$FTP_HOST:$FTP_PORT"
  printf 'export QUANTRAC_UPSTREAM_FTP_HOME=%q\n' "$FTP_HOME"
  printf 'export QUANTRAC_UPSTREAM_FTP_TRANSFERS=%q\n' "$FTP_TRANSFERS"
}

ftp_clean() {
  ftp_stop
  rm -rf "$FTP_DIR"
}

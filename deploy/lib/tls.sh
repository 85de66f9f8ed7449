# shellcheck shell=bash
# A test certificate authority and the certificates signed by it, so that
# the tests run with TLS on: Mosquitto's 8883-style listener, PostgreSQL,
# Kafka's SSL listener, ingest's TLS port and the gRPC services all present
# server.pem; clients trust ca.pem. Made once with openssl and kept; `clean`
# deletes them. For tests only: a deployment brings its own CA.

TLS_DIR=$STATE_DIR/tls
TLS_CA=$TLS_DIR/ca.pem
TLS_CA_KEY=$TLS_DIR/ca.key
TLS_CERT=$TLS_DIR/server.pem
TLS_KEY=$TLS_DIR/server.key
# A station's client certificate: its subject CN is the station id, the
# credential a logger can present on ingest's TLS port instead of an auth
# frame.
TLS_STATION_ID=${QUANTRAC_TLS_STATION_ID:-TLS-TEST-01}
TLS_STATION_CERT=$TLS_DIR/station.pem
TLS_STATION_KEY=$TLS_DIR/station.key
# The same keys in PKCS#12 for Kafka's keystore (it reads PEM only inline).
TLS_P12=$TLS_DIR/server.p12
TLS_P12_PASSWORD=quantrac-test

# openssl makes the certificates; libssl-dev and pkg-config are what
# librdkafka's TLS (the rdkafka crate's ssl feature) builds against, so the
# scripts that start services before building get them here too.
tls_install() {
  apt_install openssl libssl-dev pkg-config
}

# tls_sign NAME SUBJECT EXTFILE : a P-256 key and a certificate signed by the CA.
tls_sign() {
  local name=$1 subject=$2 ext=$3
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$TLS_DIR/$name.key" -subj "$subject" -out "$TLS_DIR/$name.csr" 2>/dev/null ||
    die "tls: could not make the key of $name"
  openssl x509 -req -in "$TLS_DIR/$name.csr" -CA "$TLS_CA" -CAkey "$TLS_CA_KEY" -CAcreateserial \
    -days 3650 -sha256 -extfile "$ext" -out "$TLS_DIR/$name.pem" 2>/dev/null ||
    die "tls: could not sign $name"
  rm -f "$TLS_DIR/$name.csr"
}

tls_ready() {
  [[ -s $TLS_CA && -s $TLS_CERT && -s $TLS_KEY && -s $TLS_STATION_CERT && -s $TLS_P12 ]]
}

tls_start() {
  tls_install
  if tls_ready; then
    log "tls: test CA and certificates present ($TLS_DIR)"
    return 0
  fi
  rm -rf "$TLS_DIR"
  mkdir -p "$TLS_DIR"
  (
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -keyout "$TLS_CA_KEY" -subj "/O=quantrac tests/CN=quantrac test CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out "$TLS_CA" 2>/dev/null || die "tls: could not make the test CA"
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
      >"$TLS_DIR/server.ext"
    tls_sign server "/O=quantrac tests/CN=localhost" "$TLS_DIR/server.ext"
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=clientAuth" >"$TLS_DIR/client.ext"
    tls_sign station "/O=quantrac tests/CN=$TLS_STATION_ID" "$TLS_DIR/client.ext"
    openssl pkcs12 -export -in "$TLS_CERT" -inkey "$TLS_KEY" -certfile "$TLS_CA" -name server \
      -passout "pass:$TLS_P12_PASSWORD" -out "$TLS_P12" 2>/dev/null || die "tls: could not write $TLS_P12"
  )
  # Services that drop privileges (PostgreSQL) read their own copy; the
  # directory itself must be traversable.
  chmod 755 "$TLS_DIR"
  chmod 644 "$TLS_CA" "$TLS_CERT" "$TLS_STATION_CERT"
  log "tls: made a test CA and certificates in $TLS_DIR (server: localhost, 127.0.0.1; station: $TLS_STATION_ID)"
}

tls_stop() { :; }

tls_status() {
  if tls_ready; then
    printf '%-10s ready    %s\n' tls "$TLS_DIR"
  else
    printf '%-10s absent\n' tls
    return 1
  fi
}

tls_env() {
  printf 'export QUANTRAC_TLS_CA=%q\n' "$TLS_CA"
  printf 'export QUANTRAC_TLS_CERT=%q\n' "$TLS_CERT"
  printf 'export QUANTRAC_TLS_KEY=%q\n' "$TLS_KEY"
  printf 'export QUANTRAC_TLS_STATION_ID=%q\n' "$TLS_STATION_ID"
  printf 'export QUANTRAC_TLS_STATION_CERT=%q\n' "$TLS_STATION_CERT"
  printf 'export QUANTRAC_TLS_STATION_KEY=%q\n' "$TLS_STATION_KEY"
}

tls_clean() {
  log "tls: removing $TLS_DIR"
  rm -rf "$TLS_DIR"
}

# shellcheck shell=bash
# Headless Chromium and ChromeDriver (Debian packages) for the officers'
# page tests. Nothing runs in the background: each test starts its own
# chromedriver on a free port. No browser is downloaded at test time.

CHROMIUM_BIN=${QUANTRAC_CHROMIUM:-/usr/bin/chromium}
CHROMEDRIVER_BIN=${QUANTRAC_CHROMEDRIVER:-/usr/bin/chromedriver}

browser_install() {
  if [[ -x $CHROMIUM_BIN && -x $CHROMEDRIVER_BIN ]]; then
    return 0
  fi
  apt_install chromium chromium-driver
  [[ -x $CHROMIUM_BIN && -x $CHROMEDRIVER_BIN ]] ||
    die "browser: $CHROMIUM_BIN or $CHROMEDRIVER_BIN missing after install"
}

browser_start() { browser_install; }
browser_stop() { :; }
browser_clean() { :; }

browser_status() {
  if [[ -x $CHROMIUM_BIN && -x $CHROMEDRIVER_BIN ]]; then
    printf 'browser    installed (%s, %s)\n' "$CHROMIUM_BIN" "$CHROMEDRIVER_BIN"
  else
    printf 'browser    not installed\n'
    return 1
  fi
}

browser_env() {
  printf 'export QUANTRAC_CHROMIUM=%q\n' "$CHROMIUM_BIN"
  printf 'export QUANTRAC_CHROMEDRIVER=%q\n' "$CHROMEDRIVER_BIN"
}

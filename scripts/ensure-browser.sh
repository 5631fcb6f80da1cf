#!/usr/bin/env bash
# Makes sure the console's browser tests have a browser: Debian's chromium and
# chromium-driver (the tests start chromedriver themselves, one per test, on a
# free port). Installs them with apt-get when missing and this runs as root;
# otherwise says what to install. CHROMIUM and CHROMEDRIVER name other binaries.
set -euo pipefail

chromium="${CHROMIUM:-/usr/bin/chromium}"
driver="${CHROMEDRIVER:-chromedriver}"
if [ -x "$chromium" ] && command -v "$driver" >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium and chromium-driver for the console's browser tests" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  exit 0
fi
echo "the console's browser tests need chromium and chromedriver: apt-get install chromium chromium-driver" >&2
exit 1

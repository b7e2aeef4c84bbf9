#!/usr/bin/env bash
# Install what a fresh Debian machine lacks for building, running and testing BTP.
# Idempotent: installs only what is missing. Usage: scripts/setup.sh [run|test]
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-test}"

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have cmake || need_pkgs+=(cmake)
have cc || need_pkgs+=(build-essential)
if [ "$what" = test ]; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql)
  have chromium || need_pkgs+=(chromium)
  have promtool || need_pkgs+=(prometheus)
  # An RFC 8555 test certificate authority and its DNS, for the ACME tests.
  have pebble && have pebble-challtestsrv || need_pkgs+=(pebble)
  # The system's own Python, which an unprivileged test user can run (not a user's pyenv).
  [ -x /usr/bin/python3 ] || need_pkgs+=(python3)
  have node || need_pkgs+=(nodejs npm)
fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
scripts/patch-crates.sh
if [ "$what" = test ] && [ -f tests/js/package-lock.json ]; then
  if [ ! -d tests/js/node_modules ] || [ tests/js/package-lock.json -nt tests/js/node_modules/.package-lock.json ]; then
    echo "setup: npm ci in tests/js"
    (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi

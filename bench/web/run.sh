#!/usr/bin/env bash
# Web app load times on a phone network (Chromium's emulation: 300 ms round trip,
# 1.6 Mbps down, 750 kbps up), over HTTPS/HTTP/2 through the gateway: the sign-in form on
# a first visit (cold) and the list on a reload of a signed-in device (warm), each read
# in the page. The same run also measures a baseline: the web app as it was at BASE
# (default 9dd3967, before the offline shell and the flattened loading), served by the
# same gateway binary.
# Usage: bash bench/web/run.sh              (from the repository root)
#        ROUNDS=5 BASE=<commit> BTP=<binary> bash bench/web/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

BASE="${BASE:-9dd3967}"
BTP="${BTP:-target/release/btp}"
[ -x "$BTP" ] || cargo build --release -p btp
[ -d tests/js/node_modules ] || (cd tests/js && npm ci)

dir=$(mktemp -d /tmp/btp-bench-web.XXXXXX)
trap 'rm -rf "$dir"' EXIT
git archive "$BASE" static | tar -x -C "$dir"

BTP_BIN="$(realpath "$BTP")" ROUNDS="${ROUNDS:-5}" node bench/web/load.mjs "$dir/static" "$BASE"

#!/usr/bin/env bash
# Pass every test: Rust unit and integration tests (SQLite and a throw-away PostgreSQL 15
# cluster), the Socket.IO conformance suite through the gateway, the interop tests with
# the real npm socket.io-client, the browser tests in Debian's Chromium, then formatting
# and clippy. Installs what is missing first. Ends with one `N passed, N failed` line.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test

export BTP_REQUIRE_PG=1          # PostgreSQL variants fail instead of skipping
export CARGO_TERM_COLOR=never
export RUST_BACKTRACE=1
results="$(mktemp)"
trap 'rm -f "$results"' EXIT

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
export BTP_BIN="$target_dir/debug/btp"
export BTP_ECHO_BIN="$target_dir/debug/examples/echo"

echo "== cargo build (workspace, tests, examples)"
cargo build --locked --workspace --all-targets

echo "== cargo test"
cargo test --locked --workspace --no-fail-fast 2>&1 | tee -a "$results"

echo "== Socket.IO conformance suite through the gateway"
scripts/conformance-through-gateway.sh 2>&1 | tee -a "$results"

echo "== node tests (socket.io-client interop, realtime product contract, browser)"
(cd tests/js && npm test) 2>&1 | tee -a "$results"

echo "== fmt and clippy"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings

# Every runner above stops the script on a failure, so reaching here means none failed.
awk '/^test result: ok\./ { n += $4 } /^# pass / { n += $3 } END { printf "tests: %d passed, 0 failed\n", n }' "$results"

#!/usr/bin/env bash
# Build and run the whole system (gateway + supervised API worker) on the configuration in
# config.toml — the embedded defaults: http://localhost:8080, admin 127.0.0.1:9100, SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh run
cargo build --release --locked -p btp
exec target/release/btp up "$@"
